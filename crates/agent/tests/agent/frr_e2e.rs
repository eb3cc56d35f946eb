//! The agent with real HAProxy and FRR in a VM namespace, peering with a router namespace
//! running FRR like the lab's gateway (ECMP settings, BFD). Asserts that the router learns the
//! VIP /32 after a state PUT, that drain withdraws it and stops HAProxy from accepting, and
//! that undrain brings both back. Needs root, `ip`, HAProxy and FRR; skips with a reason
//! otherwise. Namespaces are `ka-router` and `ka-vm1`; everything is removed by a guard.

use std::path::{Path, PathBuf};
use std::process::Command as StdCommand;
use std::sync::Arc;
use std::time::{Duration, Instant};

use klb_agent::dataplane::HaproxyProxy;
use klb_agent::frr::{Frr, FrrConfig};
use klb_agent::haproxy::{Haproxy, HaproxyConfig};
use klb_proto::DesiredState;
use tokio::process::Command;

use crate::util::{Pki, serve};

const ROUTER_NS: &str = "ka-router";
const VM_NS: &str = "ka-vm1";
const ROUTER_ADDR: &str = "198.18.200.1";
const VM_ADDR: &str = "198.18.200.2";
const VIP: &str = "198.19.200.10";
const ROUTER_AS: u32 = 60201;
const VM_AS: u32 = 10001;

fn skip_reason() -> Option<String> {
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
        });
    if uid.as_deref() != Some("0") {
        return Some("not root".into());
    }
    for bin in [
        "/usr/lib/frr/zebra",
        "/usr/lib/frr/bgpd",
        "/usr/lib/frr/bfdd",
        "/usr/lib/frr/frr-reload.py",
        "/usr/bin/vtysh",
        "/usr/sbin/haproxy",
        "/usr/bin/curl",
    ] {
        if !Path::new(bin).exists() {
            return Some(format!("{bin} missing"));
        }
    }
    None
}

fn sh(argv: &[&str]) {
    let out = StdCommand::new(argv[0]).args(&argv[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{argv:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Removes namespaces and stops every process it knows of (by PID, from the pid files of its
/// own run directories, checked against /proc cmdline), also when the test fails.
struct Lab {
    dir: tempfile::TempDir,
}

impl Lab {
    fn new() -> Lab {
        for ns in [ROUTER_NS, VM_NS] {
            // Left over from a crashed run of this very test (the prefix is ours).
            let _ = StdCommand::new("ip").args(["netns", "del", ns]).status();
        }
        let dir = tempfile::tempdir().unwrap();
        // FRR daemons run as frr: they must traverse the temporary directory.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let lab = Lab { dir };
        for ns in [ROUTER_NS, VM_NS] {
            sh(&["ip", "netns", "add", ns]);
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        sh(&[
            "ip", "link", "add", "eth0", "netns", VM_NS, "type", "veth", "peer", "name", "r-vm1",
            "netns", ROUTER_NS,
        ]);
        sh(&[
            "ip",
            "-n",
            VM_NS,
            "addr",
            "add",
            &format!("{VM_ADDR}/30"),
            "dev",
            "eth0",
        ]);
        sh(&[
            "ip",
            "-n",
            ROUTER_NS,
            "addr",
            "add",
            &format!("{ROUTER_ADDR}/30"),
            "dev",
            "r-vm1",
        ]);
        sh(&["ip", "-n", VM_NS, "link", "set", "eth0", "up"]);
        sh(&["ip", "-n", ROUTER_NS, "link", "set", "r-vm1", "up"]);
        sh(&[
            "ip",
            "-n",
            VM_NS,
            "route",
            "add",
            "default",
            "via",
            ROUTER_ADDR,
        ]);
        sh(&[
            "ip",
            "netns",
            "exec",
            ROUTER_NS,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ]);
        lab
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let mut pids = Vec::new();
        for sub in ["router", "vm-frr", "vm-haproxy"] {
            let dir = self.path(sub);
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                let p = e.path();
                if p.extension().is_some_and(|x| x == "pid")
                    && let Some(pid) = std::fs::read_to_string(&p)
                        .ok()
                        .and_then(|t| t.trim().parse::<u32>().ok())
                {
                    pids.push((pid, dir.display().to_string()));
                }
            }
        }
        let alive = |pid: u32, dir: &str| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(dir))
                .unwrap_or(false)
        };
        for sig in ["-TERM", "-KILL"] {
            let targets: Vec<String> = pids
                .iter()
                .filter(|(p, d)| alive(*p, d))
                .map(|(p, _)| p.to_string())
                .collect();
            if targets.is_empty() {
                break;
            }
            let _ = StdCommand::new("kill").arg(sig).args(&targets).status();
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline && pids.iter().any(|(p, d)| alive(*p, d)) {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        for ns in [ROUTER_NS, VM_NS] {
            let _ = StdCommand::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn netns_exec(ns: &str) -> Vec<String> {
    ["ip", "netns", "exec", ns].map(String::from).to_vec()
}

fn router_config() -> String {
    format!(
        "ip forwarding\n\
         no zebra nexthop kernel enable\n\
         !\n\
         bfd\n profile fast\n  detect-multiplier 3\n  receive-interval 100\n  transmit-interval 100\n exit\nexit\n\
         !\n\
         router bgp {ROUTER_AS}\n\
         \x20bgp router-id {ROUTER_ADDR}\n\
         \x20no bgp ebgp-requires-policy\n\
         \x20bgp bestpath as-path multipath-relax\n\
         \x20timers bgp 3 9\n\
         \x20neighbor {VM_ADDR} remote-as {VM_AS}\n\
         \x20neighbor {VM_ADDR} timers connect 2\n\
         \x20neighbor {VM_ADDR} bfd\n\
         \x20neighbor {VM_ADDR} bfd profile fast\n\
         \x20address-family ipv4 unicast\n  maximum-paths 8\n exit-address-family\n\
         exit\n"
    )
}

fn desired_state(version: u64) -> DesiredState {
    serde_json::from_value(serde_json::json!({
        "version": version, "load_balancer_id": "lb-ka", "vip": VIP,
        "vm": {"id": "vm-ka-1", "index": 1, "name": "ka-vm1"},
        // This machine's hard FD limit (20000) is below what maxconn 12000 needs.
        "global": {"maxconn": 2000},
        "listeners": [{"id": "l1", "protocol": "HTTP", "protocol_port": 80,
                       "default_pool_id": "p1"}],
        // Nothing listens on the member: HAProxy answers 503 (after its retries), which proves
        // the data path router -> VIP -> HAProxy.
        "pools": [{"id": "p1", "protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN",
                   "members": [{"id": "m1", "address": ROUTER_ADDR, "protocol_port": 8080}]}],
        "bgp": {"local_as": VM_AS, "router_id": VM_ADDR,
                "neighbors": [{"address": ROUTER_ADDR, "remote_as": ROUTER_AS}],
                "bfd": true, "announce": [format!("{VIP}/32")]}
    }))
    .unwrap()
}

async fn router_has(prefix: &str) -> bool {
    let out = Command::new("ip")
        .args(["-n", ROUTER_NS, "route", "show", &format!("{prefix}/32")])
        .output()
        .await
        .unwrap();
    String::from_utf8_lossy(&out.stdout).contains(&format!("via {VM_ADDR}"))
}

async fn router_has_route() -> bool {
    router_has(VIP).await
}

async fn wait_prefix(
    prefix: &str,
    present: bool,
    since: Instant,
    max: Duration,
) -> Option<Duration> {
    while since.elapsed() < max {
        if router_has(prefix).await == present {
            return Some(since.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// Polls the router's FIB every 20 ms until the route is `present` (or not); returns the time
/// it took, or None after `max`.
async fn wait_route(present: bool, since: Instant, max: Duration) -> Option<Duration> {
    wait_prefix(VIP, present, since, max).await
}

/// HTTP status of GET http://VIP/ from inside `ns` ("000" when no connection).
async fn http_code(ns: &str) -> String {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ])
        // HAProxy retries the dead member 3 times, 1 s apart, before answering 503.
        .args([
            "--connect-timeout",
            "1",
            "-m",
            "8",
            &format!("http://{VIP}/"),
        ])
        .output()
        .await
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_announces_drains_and_undrains_the_vip() {
    if let Some(reason) = skip_reason() {
        eprintln!("SKIP agent_announces_drains_and_undrains_the_vip: {reason}");
        return;
    }
    let lab = Lab::new();

    let mut router_cfg = FrrConfig::with_run_dir(lab.path("router"));
    router_cfg.netns_exec = netns_exec(ROUTER_NS);
    let router = Frr::new(router_cfg);
    router.apply_config(&router_config()).await.unwrap();

    let mut vm_frr = FrrConfig::with_run_dir(lab.path("vm-frr"));
    vm_frr.netns_exec = netns_exec(VM_NS);
    let mut hc = HaproxyConfig::new(&lab.path("vm-haproxy"));
    hc.command_prefix = netns_exec(VM_NS);
    let proxy = Arc::new(HaproxyProxy::new(Haproxy::new(hc)));
    let pki = Pki::new();
    let drain_wait = Duration::from_millis(1000);
    let served = serve(
        &pki,
        proxy.clone(),
        Some(Frr::new(vm_frr)),
        None,
        drain_wait,
    );
    let client = pki.client(None);

    // PUT the state: HAProxy starts, FRR starts and announces the VIP.
    let t0 = Instant::now();
    let reply = match client.put_state(served.addr, &desired_state(1)).await {
        Ok(r) => r,
        Err(e) => {
            let cfg = std::fs::read_to_string(lab.path("vm-haproxy/haproxy.cfg"));
            panic!("first PUT failed: {e}\nhaproxy.cfg: {cfg:?}");
        }
    };
    let put_ms = t0.elapsed().as_millis();
    assert_eq!(reply.version, 1);
    let mut established = None;
    while t0.elapsed() < Duration::from_secs(30) && established.is_none() {
        let st = client.status(served.addr).await.unwrap();
        if st.bgp_sessions.iter().any(|s| s.state == "Established") {
            established = Some(t0.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("MEASURE session_established_after={:?}", established);
    let learned = wait_route(true, t0, Duration::from_secs(30)).await;
    assert!(learned.is_some(), "router never learned {VIP}/32");
    eprintln!(
        "MEASURE put_state(first, starts haproxy+frr)={put_ms}ms route_learned_after={}ms",
        learned.unwrap().as_millis()
    );
    let status = client.status(served.addr).await.unwrap();
    assert!(status.status.haproxy_up);
    assert!(
        status
            .bgp_sessions
            .iter()
            .any(|s| s.peer == ROUTER_ADDR && s.state == "Established"),
        "{:?}",
        status.bgp_sessions
    );
    // Traffic from the router reaches HAProxy on the VIP (503: the member is down).
    let code = http_code(ROUTER_NS).await;
    if code != "503" {
        let out = StdCommand::new("sh").arg("-c").arg(format!("ip netns exec {VM_NS} ss -ltnp; ip -n {VM_NS} addr; ip -n {ROUTER_NS} route; ip netns exec {VM_NS} curl -sv -m 2 http://{VIP}/ 2>&1 | tail -5; ip netns exec {ROUTER_NS} curl -sv -m 2 http://{VIP}/ 2>&1 | tail -5")).output().unwrap();
        panic!("code {code}\n{}", String::from_utf8_lossy(&out.stdout));
    }
    // The router's BFD session with the VM is up.
    let bfd = router
        .vtysh(&["show bfd peers brief".into()])
        .await
        .unwrap();
    assert!(bfd.contains(VM_ADDR) && bfd.contains("up"), "{bfd}");

    // ARP is suppressed in the VM namespace (the VIP sits on every VM's `lo`).
    let arp = StdCommand::new("ip")
        .args([
            "netns",
            "exec",
            VM_NS,
            "sysctl",
            "-n",
            "net.ipv4.conf.all.arp_ignore",
        ])
        .args(["net.ipv4.conf.all.arp_announce"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&arp.stdout)
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["1", "2"]
    );

    // Same version again: no-op.
    let again = client
        .put_state(served.addr, &desired_state(1))
        .await
        .unwrap();
    assert_eq!(again.method, klb_proto::ApplyMethod::Unchanged);

    // Drain: route withdrawn first, then HAProxy stops accepting.
    let t1 = Instant::now();
    let drain = tokio::spawn({
        let client = client.clone();
        let addr = served.addr;
        async move { client.drain(addr).await }
    });
    let withdrawn = wait_route(false, t1, Duration::from_secs(30)).await;
    let drain_reply = drain.await.unwrap().unwrap();
    assert!(withdrawn.is_some(), "route not withdrawn after drain");
    assert!(drain_reply.drained && drain_reply.changed);
    eprintln!(
        "MEASURE drain: route_withdrawn_after={}ms drain_call={}ms (drain_wait {}ms)",
        withdrawn.unwrap().as_millis(),
        drain_reply.took_ms,
        drain_wait.as_millis()
    );
    assert!(withdrawn.unwrap() < Duration::from_millis(drain_reply.took_ms + 1000));
    // Inside the VM the VIP no longer accepts connections.
    assert_eq!(http_code(VM_NS).await, "000");
    let status = client.status(served.addr).await.unwrap();
    assert!(status.drained);

    // A new version while drained stays drained (no announcement, frontends closed).
    let mut v2 = desired_state(2);
    v2.pools[0].members[0].weight = 7;
    client.put_state(served.addr, &v2).await.unwrap();
    // An older version is refused with 409 and changes nothing.
    let err = client
        .put_state(served.addr, &desired_state(1))
        .await
        .unwrap_err();
    assert_eq!(err.status().map(|s| s.as_u16()), Some(409), "{err}");
    assert_eq!(
        client.status(served.addr).await.unwrap().status.version,
        Some(2)
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !router_has_route().await,
        "a drained VM re-announced after an apply"
    );
    assert_eq!(http_code(VM_NS).await, "000");

    // Undrain: accepting again, route back.
    let t2 = Instant::now();
    let undrain = client.undrain(served.addr).await.unwrap();
    assert!(!undrain.drained && undrain.changed);
    let back = wait_route(true, t2, Duration::from_secs(30)).await;
    assert!(back.is_some(), "route not back after undrain");
    eprintln!(
        "MEASURE undrain: call={}ms route_back_after={}ms",
        undrain.took_ms,
        back.unwrap().as_millis()
    );
    assert_eq!(http_code(ROUTER_NS).await, "503");

    // A BGP change on running daemons goes through frr-reload: announce a second VIP, then
    // remove it again (the diff must withdraw it and the address must leave `lo`).
    let extra = "198.19.200.11";
    let mut v3 = v2.clone();
    v3.version = 3;
    v3.bgp
        .as_mut()
        .unwrap()
        .announce
        .push(format!("{extra}/32").parse().unwrap());
    let t3 = Instant::now();
    client.put_state(served.addr, &v3).await.unwrap();
    let reload_ms = t3.elapsed().as_millis();
    let learned = wait_prefix(extra, true, t3, Duration::from_secs(30)).await;
    assert!(learned.is_some(), "second VIP not learned after frr-reload");
    eprintln!(
        "MEASURE put_state(bgp change, frr-reload)={reload_ms}ms second_vip_learned_after={}ms",
        learned.unwrap().as_millis()
    );
    let mut v4 = v3.clone();
    v4.version = 4;
    v4.bgp.as_mut().unwrap().announce.pop();
    let t4 = Instant::now();
    client.put_state(served.addr, &v4).await.unwrap();
    assert!(
        wait_prefix(extra, false, t4, Duration::from_secs(30))
            .await
            .is_some(),
        "second VIP still announced"
    );
    let lo = StdCommand::new("ip")
        .args(["-n", VM_NS, "addr", "show", "dev", "lo"])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&lo.stdout).contains(extra));
    assert!(
        router_has_route().await,
        "the first VIP must stay announced"
    );

    // A state without BGP settings stops the announcement altogether.
    let mut v5 = v4.clone();
    v5.version = 5;
    v5.bgp = None;
    let t5 = Instant::now();
    client.put_state(served.addr, &v5).await.unwrap();
    assert!(
        wait_route(false, t5, Duration::from_secs(30))
            .await
            .is_some(),
        "VIP still announced after BGP was removed from the state"
    );
    assert!(served.agent.frr().unwrap().pids().await.is_empty());

    // Stop HAProxy and FRR of the VM like the agent does at shutdown.
    if let Some(frr) = served.agent.frr() {
        frr.stop().await;
        assert!(frr.pids().await.is_empty());
    }
    proxy.stop().await.unwrap();
    router.stop().await;
    drop(served);
    drop(lab);
    let left = StdCommand::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    let left = String::from_utf8_lossy(&left.stdout);
    assert!(!left.contains(ROUTER_NS) && !left.contains(VM_NS), "{left}");
}
