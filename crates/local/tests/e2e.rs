//! The local cloud driven through klb-cloud's traits, as the control plane will: two LB VMs
//! created with `create_server`, the VIP given by `set_allowed_address_pairs`, members running
//! `klb backend`, then traffic from the client namespace. Until the real agent exists, the test
//! starts in each VM what the agent will run (HAProxy + FRR announcing the VIP).
//! Needs root, FRR, HAProxy and a built `target/debug/klb`; otherwise prints why and passes.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use klb_cloud::{Compute, Network, NicSpec, PortSpec, ServerSpec, ServerStatus};
use klb_local::driver::{LocalCloud, LocalCloudConfig};
use klb_local::frr::{self, FrrInstance};
use klb_local::lab::LabConfig;
use klb_local::{netns, plan};

const HAPROXY: &str = "/usr/sbin/haproxy";

fn klb_binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let p = exe.parent()?.parent()?.join("klb");
    p.exists().then_some(p)
}

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
    if !Path::new(HAPROXY).exists() {
        return Some("HAProxy missing".into());
    }
    if klb_binary().is_none() {
        return Some("target/debug/klb not built (cargo build -p klb)".into());
    }
    None
}

fn haproxy_cfg(vip: Ipv4Addr, name: &str, members: &[Ipv4Addr]) -> String {
    let mut s = format!(
        "global\n  maxconn 2000\ndefaults\n  mode http\n  timeout connect 1s\n  timeout client 5s\n  timeout server 5s\n\
         frontend vip\n  bind {vip}:80\n  http-response set-header X-LB {name}\n  default_backend members\n\
         backend members\n  balance roundrobin\n  option httpchk GET /health\n"
    );
    for (i, m) in members.iter().enumerate() {
        s += &format!(
            "  server m{} {m}:8080 check inter 1s fall 2 rise 2\n",
            i + 1
        );
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_created_through_the_traits_serve_the_vip_with_ecmp() {
    if let Some(why) = skip_reason() {
        println!("skipped: {why}");
        return;
    }
    let klb = klb_binary().unwrap();
    let pid = std::process::id();
    let prefix = format!("kl{}4-", pid % 100_000);
    let tmp = tempfile::tempdir().unwrap();
    let mut lab = LabConfig {
        prefix: prefix.clone(),
        runtime_dir: tmp.path().join("run"),
        stop_grace: Duration::from_secs(1),
        ..LabConfig::default()
    };
    lab.plan.mgmt_subnet = format!("198.19.{}.0/24", 128 + (pid * 4 + 4) % 120)
        .parse()
        .unwrap();
    let t0 = Instant::now();
    let (cloud, _) = LocalCloud::open(LocalCloudConfig {
        lab,
        agent: None,
        teardown_on_drop: true,
        ..LocalCloudConfig::default()
    })
    .await
    .expect("local cloud opens");
    let open_time = t0.elapsed();

    let mut members = Vec::new();
    for i in 1..=2 {
        members.push(cloud.add_member(i, &klb, 8080).await.unwrap().addr);
    }

    // VIP port, then two servers with mgmt + L3 NICs, VIP allowed on their L3 ports.
    let vip_port = cloud
        .create_port(&PortSpec {
            name: "klb-lb1-vip".into(),
            network_id: plan::VIP_NETWORK_ID.to_string(),
            subnet_id: Some(plan::VIP_SUBNET_ID.to_string()),
            fixed_ip: None,
            security_group_ids: vec![],
            device_owner: Some("klb:vip".into()),
        })
        .await
        .unwrap();
    let IpAddr::V4(vip) = vip_port.fixed_ips[0] else {
        panic!("IPv4 VIP expected")
    };
    let t_create = Instant::now();
    let mut servers = Vec::new();
    for i in 0..2 {
        let s = cloud
            .create_server(&ServerSpec {
                name: format!("klb-lb1-vm-{i}"),
                image_id: "local".into(),
                flavor_id: "local".into(),
                server_group_id: None,
                nics: vec![
                    NicSpec::Network {
                        network_id: plan::MGMT_NETWORK_ID.to_string(),
                        fixed_ip: None,
                    },
                    NicSpec::Network {
                        network_id: plan::L3_NETWORK_ID.to_string(),
                        fixed_ip: None,
                    },
                ],
                security_group_ids: vec![],
                user_data: None,
                boot_volume_gib: None,
                availability_zone: None,
                metadata: Default::default(),
            })
            .await
            .unwrap();
        assert_eq!(s.status, ServerStatus::Active);
        cloud
            .set_allowed_address_pairs(&s.addresses[1].port_id, &[IpAddr::V4(vip)])
            .await
            .unwrap();
        servers.push(s);
    }
    // What the agent will do: HAProxy + FRR announcing the VIP.
    let plan_ = cloud.plan().clone();
    for (i, s) in servers.iter().enumerate() {
        let vm = cloud.vm_of(&s.id).await.unwrap();
        let name = format!("vm{}", i + 1);
        let cfg = vm.dir.join("haproxy.cfg");
        std::fs::write(&cfg, haproxy_cfg(vip, &name, &members)).unwrap();
        let mut lab = cloud.lab().await;
        lab.spawn_in_vm(
            &vm.short_id,
            "haproxy",
            Path::new(HAPROXY),
            &["-db".into(), "-f".into(), cfg.display().to_string()],
            &[],
        )
        .await
        .unwrap();
        let inst = FrrInstance {
            ns: vm.ns.clone(),
            dir: vm.dir.join("frr"),
            bin_dir: frr::FRR_BIN_DIR.into(),
        };
        let gws = [plan_.gw_l3_addr(1), plan_.gw_l3_addr(2)];
        inst.start(
            lab.owned_mut(),
            &frr::render_zebra(&name),
            &frr::render_bfdd(&name),
            &frr::render_speaker_bgpd(&name, 10001 + i as u32, vm.l3_addr, 60201, &gws, vip),
        )
        .await
        .unwrap();
    }
    cloud
        .lab()
        .await
        .wait_paths(vip, 2, Duration::from_secs(30))
        .await
        .expect("ECMP over both VMs");
    let to_ecmp = t_create.elapsed();

    // 100 requests, new connection each, from the client namespace.
    let client = cloud.lab().await.client_ns();
    let out = netns::exec_in(
        &client,
        "curl",
        &[
            "-s",
            "-o",
            "/dev/null",
            "-H",
            "Connection: close",
            "--connect-timeout",
            "1",
            "-m",
            "2",
            "-w",
            "%header{x-lb} %header{x-backend} %{http_code}\n",
            &format!("http://{vip}/?[1-100]"),
        ],
    )
    .await
    .unwrap();
    let lines: Vec<&str> = out.lines().collect();
    let vm1 = lines.iter().filter(|l| l.starts_with("vm1 ")).count();
    let vm2 = lines.iter().filter(|l| l.starts_with("vm2 ")).count();
    let ok = lines.iter().filter(|l| l.ends_with(" 200")).count();
    println!(
        "open {open_time:?}; 2 x create_server + VIP pair + HAProxy/FRR start -> ECMP {to_ecmp:?}; \
         100 requests ok={ok} vm1={vm1} vm2={vm2}"
    );
    assert_eq!(ok, 100, "{lines:?}");
    assert!(vm1 > 20 && vm2 > 20, "vm1={vm1} vm2={vm2}");
    assert!(lines.iter().any(|l| l.contains(" m1 ")) && lines.iter().any(|l| l.contains(" m2 ")));

    for s in &servers {
        cloud.delete_server(&s.id).await.unwrap();
    }
    cloud.shutdown().await.unwrap();
    let left: Vec<String> = netns::list_ns()
        .await
        .unwrap()
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
