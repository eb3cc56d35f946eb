//! The local cloud driver through klb-cloud's traits, with real namespaces (root needed; skipped
//! with a printed reason otherwise). A stand-in agent (`sh`) checks how the agent is launched.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use klb_cloud::{
    Alarms, CloudErrorKind, Compute, Network, NicSpec, PortSpec, PpsAlarmSpec, RuleSpec,
    SecurityGroupSpec, ServerFilter, ServerGroupPolicy, ServerGroupSpec, ServerSpec, ServerStatus,
};
use klb_local::driver::{
    AgentLaunch, BootInfo, LocalCloud, LocalCloudConfig, PpsSource, VmBootstrap,
};
use klb_local::lab::LabConfig;
use klb_local::{frr, netns, plan};

fn skip_reason() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let root = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        == Some("0");
    if !root {
        return Some("not root".into());
    }
    if !frr::available(Path::new(frr::FRR_BIN_DIR)) {
        return Some("FRR missing".into());
    }
    None
}

/// Removes every namespace of the prefix on drop (panic safety across detach/re-open).
struct PrefixGuard(String);
impl Drop for PrefixGuard {
    fn drop(&mut self) {
        let out = std::process::Command::new("ip")
            .args(["netns", "list"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        for ns in out.lines().filter_map(|l| l.split_whitespace().next()) {
            if !ns.starts_with(&self.0) {
                continue;
            }
            let pids = std::process::Command::new("ip")
                .args(["netns", "pids", ns])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            for pid in pids.split_whitespace().filter_map(|p| p.parse().ok()) {
                let _ = netns::send_signal(pid, netns::Signal::KILL);
            }
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", ns])
                .status();
        }
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &format!("{}mgmt", self.0)])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// Writes an `agent.toml` naming the VM's management address; refuses a server named `bad`
/// by returning a path that escapes the VM directory (which the driver must reject).
struct Bootstrap;
#[async_trait]
impl VmBootstrap for Bootstrap {
    async fn files(&self, boot: &BootInfo) -> Result<Vec<(String, Vec<u8>)>, String> {
        if boot.server_name == "bad" {
            return Ok(vec![("../escape".into(), b"x".to_vec())]);
        }
        Ok(vec![(
            "agent.toml".into(),
            format!("listen={}", boot.mgmt_addr).into_bytes(),
        )])
    }
}

struct FixedPps(u64);
#[async_trait]
impl PpsSource for FixedPps {
    async fn pps(&self, _lb: &str, _servers: &[String]) -> Option<u64> {
        Some(self.0)
    }
}

fn server_spec(name: &str, lb: &str, nics: Vec<NicSpec>, sg: &str, group: &str) -> ServerSpec {
    let mut metadata = std::collections::BTreeMap::new();
    metadata.insert(klb_cloud::META_LB_ID.to_string(), lb.to_string());
    ServerSpec {
        name: name.into(),
        image_id: "local".into(),
        flavor_id: "local".into(),
        server_group_id: Some(group.into()),
        nics,
        security_group_ids: vec![sg.into()],
        user_data: Some("secret-bootstrap".into()),
        boot_volume_gib: None,
        availability_zone: None,
        metadata,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_cloud_servers_ports_alarms_and_adoption() {
    if let Some(why) = skip_reason() {
        println!("skipped: {why}");
        return;
    }
    let pid = std::process::id();
    let prefix = format!("kl{}3-", pid % 100_000);
    let _guard = PrefixGuard(prefix.clone());
    let tmp = tempfile::tempdir().unwrap();
    let mut lab = LabConfig {
        prefix: prefix.clone(),
        runtime_dir: tmp.path().join("run"),
        stop_grace: Duration::from_secs(1),
        ..LabConfig::default()
    };
    lab.plan.mgmt_subnet = format!("198.19.{}.0/24", 128 + (pid * 4 + 3) % 120)
        .parse()
        .unwrap();
    let cfg = LocalCloudConfig {
        lab,
        state_file: Some(tmp.path().join("state.json")),
        // Stand-in agent: records how it was started, then waits.
        agent: Some(AgentLaunch {
            program: "/bin/sh".into(),
            args: vec![
                "-c".into(),
                "echo {server_id} {mgmt_addr} {l3_addr} $KLB_LOCAL_GATEWAYS $KLB_LOCAL_HOST_MGMT_ADDR $(cat {user_data}) $(cat {dir}/agent.toml) > {dir}/launched; exec sleep 600".into(),
            ],
            env: vec![],
        }),
        bootstrap: Some(Arc::new(Bootstrap)),
        alarm_period_override: Some(Duration::from_millis(100)),
        teardown_on_drop: true,
    };
    let (cloud, report) = LocalCloud::open(cfg.clone())
        .await
        .expect("local cloud opens");
    assert!(report.adopted_vms.is_empty() && report.lost_vms.is_empty());

    // Stable networks.
    let vip_net = cloud.find_network("klb-vip-net").await.unwrap().unwrap();
    assert_eq!(vip_net.id, plan::VIP_NETWORK_ID.to_string());
    let sub = cloud
        .find_subnet(&plan::MEMBER_SUBNET_ID.to_string())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(sub.cidr.to_string(), "198.18.16.0/20");
    assert!(cloud.find_network("nope").await.unwrap().is_none());

    // Security group + rules (recorded), duplicate rule is a conflict.
    let sg = cloud
        .create_security_group(&SecurityGroupSpec {
            name: "klb-lb1-sg".into(),
            description: "t".into(),
        })
        .await
        .unwrap();
    cloud
        .add_security_group_rule(&sg.id, &RuleSpec::tcp_in(80, None))
        .await
        .unwrap();
    let dup = cloud
        .add_security_group_rule(&sg.id, &RuleSpec::tcp_in(80, None))
        .await
        .unwrap_err();
    assert_eq!(dup.kind, CloudErrorKind::Conflict);
    assert_eq!(
        cloud.list_security_group_rules(&sg.id).await.unwrap().len(),
        1
    );
    let group = cloud
        .create_server_group(&ServerGroupSpec {
            name: "klb-lb1-sg-group".into(),
            policy: ServerGroupPolicy::AntiAffinity,
        })
        .await
        .unwrap();

    // VIP port: first address of the VIP pool.
    let vip_port = cloud
        .create_port(&PortSpec {
            name: "klb-lb1-vip".into(),
            network_id: vip_net.id.clone(),
            subnet_id: None,
            fixed_ip: None,
            security_group_ids: vec![sg.id.clone()],
            device_owner: Some("klb:vip".into()),
        })
        .await
        .unwrap();
    let vip: IpAddr = "198.19.0.10".parse().unwrap();
    assert_eq!(vip_port.fixed_ips, vec![vip]);
    let l3_port_err = cloud
        .create_port(&PortSpec {
            name: "x".into(),
            network_id: plan::L3_NETWORK_ID.to_string(),
            subnet_id: None,
            fixed_ip: None,
            security_group_ids: vec![],
            device_owner: None,
        })
        .await
        .unwrap_err();
    assert_eq!(l3_port_err.kind, CloudErrorKind::Invalid);

    // Two servers with management + L3 NICs.
    let nics = || {
        vec![
            NicSpec::Network {
                network_id: plan::MGMT_NETWORK_ID.to_string(),
                fixed_ip: None,
            },
            NicSpec::Network {
                network_id: plan::L3_NETWORK_ID.to_string(),
                fixed_ip: None,
            },
        ]
    };
    let t_boot = std::time::Instant::now();
    let s1 = cloud
        .create_server(&server_spec(
            "klb-lb1-vm-0",
            "lb1",
            nics(),
            &sg.id,
            &group.id,
        ))
        .await
        .unwrap();
    println!(
        "create_server (namespace, links, agent start): {:?}",
        t_boot.elapsed()
    );
    let s2 = cloud
        .create_server(&server_spec(
            "klb-lb1-vm-1",
            "lb1",
            nics(),
            &sg.id,
            &group.id,
        ))
        .await
        .unwrap();
    assert_eq!(s1.status, ServerStatus::Active);
    let plan_ = cloud.plan().clone();
    assert_eq!(
        s1.addresses[0].ip,
        IpAddr::V4(plan_.vm_mgmt_addr(1).unwrap())
    );
    assert_eq!(s1.addresses[1].ip, IpAddr::V4(plan_.vm_l3_addr(1).unwrap()));
    assert_eq!(s2.addresses[1].ip, IpAddr::V4(plan_.vm_l3_addr(2).unwrap()));
    assert_eq!(
        cloud
            .find_servers(&ServerFilter::lb("lb1"))
            .await
            .unwrap()
            .len(),
        2
    );
    let vm1 = cloud.vm_of(&s1.id).await.unwrap();
    assert!(netns::ns_exists(&vm1.ns).await.unwrap());

    // Security groups are enforced in the VM: TCP 80 (the group's rule) is reachable from the
    // L3 network, 8081 only while a rule allows it.
    let gw_ns = cloud.lab().await.gateways()[0].ns.clone();
    let mut listeners = Vec::new();
    for port in [80u16, 8081] {
        let listen = format!("TCP-LISTEN:{port},fork,reuseaddr");
        let pid = cloud
            .lab()
            .await
            .spawn_in_vm(
                &vm1.short_id,
                &format!("listen-{port}"),
                Path::new("/usr/bin/socat"),
                &[listen, "SYSTEM:echo open".into()],
                &[],
            )
            .await
            .unwrap();
        listeners.push(pid);
    }
    let reach = |port: u16| {
        let (ns, addr) = (gw_ns.clone(), vm1.l3_addr);
        async move {
            // Bounded: one connection attempt of at most 1 s.
            let out = netns::exec_in(
                &ns,
                "socat",
                &["-T1", "-", &format!("TCP:{addr}:{port},connect-timeout=1")],
            )
            .await;
            out.is_ok_and(|o| o.contains("open"))
        }
    };
    let wait_reach = |port: u16, want: bool| async move {
        for _ in 0..20 {
            if reach(port).await == want {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    };
    assert!(
        wait_reach(80, true).await,
        "port 80 is allowed by the group"
    );
    assert!(!reach(8081).await, "port 8081 has no rule: dropped");
    let rule = cloud
        .add_security_group_rule(&sg.id, &RuleSpec::tcp_in(8081, None))
        .await
        .unwrap();
    assert!(wait_reach(8081, true).await, "the new rule opens 8081");
    cloud.delete_security_group_rule(&rule.id).await.unwrap();
    assert!(
        wait_reach(8081, false).await,
        "deleting the rule closes 8081"
    );
    // The agent got its placeholders, environment and user data.
    let launched = vm1.dir.join("launched");
    frr::wait_for(&launched, Duration::from_secs(5))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let line = std::fs::read_to_string(&launched).unwrap();
    assert_eq!(
        line.trim(),
        format!(
            "{} {} {} {},{} {} secret-bootstrap listen={}",
            s1.id,
            plan_.vm_mgmt_addr(1).unwrap(),
            plan_.vm_l3_addr(1).unwrap(),
            plan_.gw_l3_addr(1),
            plan_.gw_l3_addr(2),
            plan_.host_mgmt_addr(),
            plan_.vm_mgmt_addr(1).unwrap(),
        )
    );
    // A bootstrap file escaping the VM directory fails the create and leaves no namespace.
    let ours = || async {
        netns::list_ns()
            .await
            .unwrap()
            .into_iter()
            .filter(|n| n.starts_with(&prefix))
            .count()
    };
    let before = ours().await;
    let bad = cloud
        .create_server(&server_spec("bad", "lb1", nics(), &sg.id, &group.id))
        .await
        .unwrap_err();
    assert_eq!(bad.kind, CloudErrorKind::Invalid, "{bad}");
    assert_eq!(ours().await, before);
    assert!(
        cloud
            .find_servers(&ServerFilter::name("bad"))
            .await
            .unwrap()
            .is_empty()
    );
    // The control plane reaches the VM over the management network.
    let host_ping = netns::exec_in(
        &vm1.ns,
        "bash",
        &[
            "-c",
            &format!("exec 3<>/dev/tcp/{}/9", plan_.host_mgmt_addr()),
        ],
    )
    .await
    .unwrap_err();
    assert!(host_ping.to_string().contains("refused"), "{host_ping}");

    // ... and the host reaches the VM's management address (where the agent API listens) on
    // a port its security group allows (the test's listener on 80 answers there too).
    std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::new(s1.addresses[0].ip, 80),
        Duration::from_secs(2),
    )
    .expect("the management address is reachable on an allowed port");
    // The test's listeners go (by PID); only the agent is left in the VM.
    for pid in listeners {
        let _ = netns::send_signal(pid, netns::Signal::TERM);
    }
    for _ in 0..50 {
        if netns::ns_pids(&vm1.ns).await.unwrap().len() <= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Allowed-address pair on the L3 port puts the VIP on lo; removing it takes it away.
    let l3_port = s1.addresses[1].port_id.clone();
    let p = cloud
        .set_allowed_address_pairs(&l3_port, &[vip])
        .await
        .unwrap();
    assert_eq!(p.allowed_address_pairs, vec![vip]);
    let lo = netns::ip_in(&vm1.ns, &["-o", "addr", "show", "dev", "lo"])
        .await
        .unwrap();
    assert!(lo.contains("198.19.0.10/32"), "{lo}");
    cloud
        .set_allowed_address_pairs(&l3_port, &[])
        .await
        .unwrap();
    let lo = netns::ip_in(&vm1.ns, &["-o", "addr", "show", "dev", "lo"])
        .await
        .unwrap();
    assert!(!lo.contains("198.19.0.10/32"), "{lo}");
    // A server-owned port cannot be deleted on its own.
    assert_eq!(
        cloud.delete_port(&l3_port).await.unwrap_err().kind,
        CloudErrorKind::Conflict
    );

    // The agent of s1 dies: the server turns ERROR with a fault.
    let agent_pid = netns::ns_pids(&vm1.ns).await.unwrap();
    assert_eq!(agent_pid.len(), 1, "only the agent runs in the VM");
    netns::send_signal(agent_pid[0], netns::Signal::KILL).unwrap();
    let mut st = ServerStatus::Active;
    for _ in 0..50 {
        st = cloud.get_server(&s1.id).await.unwrap().unwrap().status;
        if st == ServerStatus::Error {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(st, ServerStatus::Error);

    // PPS alarm: above threshold for 2 periods -> exactly one webhook call.
    let hits = Arc::new(AtomicU32::new(0));
    let h2 = hits.clone();
    let app = axum::Router::new().route(
        "/alarm/{token}",
        axum::routing::post(move |body: axum::Json<serde_json::Value>| {
            let h = h2.clone();
            async move {
                assert_eq!(body["current"], "alarm");
                h.fetch_add(1, Ordering::SeqCst);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    cloud.set_pps_source(Arc::new(FixedPps(5000))).await;
    let alarm = cloud
        .create_pps_alarm(&PpsAlarmSpec {
            name: "klb-lb1-pps".into(),
            lb_id: "lb1".into(),
            server_ids: vec![s1.id.clone(), s2.id.clone()],
            threshold_pps: 1000,
            period_secs: 60,
            evaluation_periods: 2,
            webhook_url: format!("http://{hook}/alarm/tok"),
        })
        .await
        .unwrap();
    for _ in 0..100 {
        if hits.load(Ordering::SeqCst) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(hits.load(Ordering::SeqCst), 1, "fires once per transition");
    assert!(cloud.find_alarm("klb-lb1-pps").await.unwrap().is_some());

    // Crash-restart: detach (VMs keep running), add a stray namespace, re-open.
    let vm2 = cloud.vm_of(&s2.id).await.unwrap();
    cloud.clone().detach().await;
    drop(cloud);
    let stray = format!("{prefix}stray");
    netns::add_ns(&stray).await.unwrap();
    // An unrecorded process in the client namespace (detached: not our child).
    netns::run(
        "ip",
        &[
            "netns",
            "exec",
            &format!("{prefix}client"),
            "sh",
            "-c",
            "sleep 600 >/dev/null 2>&1 &",
        ],
    )
    .await
    .unwrap();
    let stray_pids = netns::ns_pids(&format!("{prefix}client")).await.unwrap();
    assert_eq!(stray_pids.len(), 1);
    let (cloud, report) = LocalCloud::open(cfg.clone()).await.expect("re-open adopts");
    println!("adoption report: {report:?}");
    assert_eq!(report.adopted_vms, vec![vm2.short_id.clone()]);
    assert_eq!(report.lost_vms, vec![vm1.short_id.clone()]);
    assert_eq!(report.removed_namespaces, vec![stray.clone()]);
    assert_eq!(report.stray_processes, 1);
    assert!(!netns::pid_alive(stray_pids[0]));
    let s2b = cloud.get_server(&s2.id).await.unwrap().unwrap();
    assert_eq!(s2b.status, ServerStatus::Active);
    let s1b = cloud.get_server(&s1.id).await.unwrap().unwrap();
    assert_eq!(s1b.status, ServerStatus::Error);
    assert!(s1b.fault.unwrap().contains("lost"));
    assert!(cloud.find_alarm("klb-lb1-pps").await.unwrap().is_some());
    cloud.delete_alarm(&alarm.id).await.unwrap();
    cloud.delete_alarm(&alarm.id).await.unwrap();

    // Deletes are idempotent and remove the namespace and the adopted process.
    let vm2_pids = netns::ns_pids(&vm2.ns).await.unwrap();
    assert_eq!(vm2_pids.len(), 1);
    cloud.delete_server(&s2.id).await.unwrap();
    cloud.delete_server(&s2.id).await.unwrap();
    cloud.delete_server(&s1.id).await.unwrap();
    assert!(!netns::ns_exists(&vm2.ns).await.unwrap());
    assert!(!netns::pid_alive(vm2_pids[0]));
    assert!(cloud.get_server(&s2.id).await.unwrap().is_none());
    cloud.delete_port(&vip_port.id).await.unwrap();
    cloud.delete_security_group(&sg.id).await.unwrap();
    cloud.delete_server_group(&group.id).await.unwrap();

    cloud.shutdown().await.unwrap();
    server.abort();
    let left: Vec<String> = netns::list_ns()
        .await
        .unwrap()
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    assert!(!tmp.path().join("state.json").exists());
}
