//! The real `klb agent` in local-cloud VMs: `create_server` writes agent.toml and a server
//! certificate for the VM's management address (the [`VmBootstrap`] hook), starts
//! `klb agent` inside the namespace, then the control-plane side PUTs a desired state over
//! mTLS; the agent starts HAProxy and FRR, the gateways get ECMP over both VMs and client
//! traffic is split between them (per-VM listener counters from the agent's stats).
//! Needs root, FRR, HAProxy and a built `target/debug/klb` with the agent; otherwise prints why
//! and passes.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use klb_agent_client::client::{AgentClient, AgentClientConfig};
use klb_cloud::{Compute, Network, NicSpec, PortSpec, ServerSpec};
use klb_local::driver::{AgentLaunch, BootInfo, LocalCloud, LocalCloudConfig, VmBootstrap};
use klb_local::lab::LabConfig;
use klb_local::{frr, netns, plan};
use klb_tls::{Ca, CertKind};

const AGENT_PORT: u16 = 62000;

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
    if !Path::new("/usr/sbin/haproxy").exists() {
        return Some("HAProxy missing".into());
    }
    let Some(klb) = klb_binary() else {
        return Some("target/debug/klb not built (cargo build -p klb)".into());
    };
    let help = std::process::Command::new(klb)
        .args(["agent", "--help"])
        .output()
        .ok()?;
    if !String::from_utf8_lossy(&help.stdout).contains("--config") {
        return Some("target/debug/klb has no agent yet".into());
    }
    None
}

/// The local cloud-init: CA certificate, a server certificate for the VM's management
/// address, and agent.toml naming them.
struct Bootstrap {
    ca: Arc<Ca>,
}

#[async_trait]
impl VmBootstrap for Bootstrap {
    async fn files(&self, boot: &BootInfo) -> Result<Vec<(String, Vec<u8>)>, String> {
        let issued = self
            .ca
            .issue(
                &boot.server_name,
                CertKind::Server,
                &[IpAddr::V4(boot.mgmt_addr)],
            )
            .map_err(|e| e.to_string())?;
        let dir = boot.dir.display();
        let toml = format!(
            "listen_addr = \"{mgmt}\"\nport = {AGENT_PORT}\nruntime_dir = \"{dir}/agent\"\n\
             drain_wait_ms = 0\n\n[tls]\nca_cert = \"{dir}/ca.crt\"\ncert = \"{dir}/agent.crt\"\nkey = \"{dir}/agent.key\"\n",
            mgmt = boot.mgmt_addr
        );
        Ok(vec![
            ("ca.crt".into(), self.ca.cert_pem().as_bytes().to_vec()),
            ("agent.crt".into(), issued.cert_pem.into_bytes()),
            (
                "agent.key".into(),
                issued.key_pem.expose().as_bytes().to_vec(),
            ),
            ("agent.toml".into(), toml.into_bytes()),
        ])
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_agents_in_local_vms_serve_the_vip_with_ecmp() {
    if let Some(why) = skip_reason() {
        println!("skipped: {why}");
        return;
    }
    let klb = klb_binary().unwrap();
    let pid = std::process::id();
    let prefix = format!("kl{}5-", pid % 100_000);
    let tmp = tempfile::tempdir().unwrap();
    let mut lab = LabConfig {
        prefix: prefix.clone(),
        runtime_dir: tmp.path().join("run"),
        stop_grace: Duration::from_secs(3),
        ..LabConfig::default()
    };
    lab.plan.mgmt_subnet = format!("198.19.{}.0/24", 128 + (pid * 4 + 5) % 120)
        .parse()
        .unwrap();
    let ca = Arc::new(Ca::generate("klb test CA").unwrap());
    let client_cert = ca.issue("klb-control", CertKind::Client, &[]).unwrap();
    let (cloud, _) = LocalCloud::open(LocalCloudConfig {
        lab,
        agent: Some(AgentLaunch {
            program: klb.clone(),
            args: vec!["agent".into(), "--config".into(), "{dir}/agent.toml".into()],
            env: vec![("RUST_LOG".into(), "info".into())],
        }),
        bootstrap: Some(Arc::new(Bootstrap { ca: ca.clone() })),
        teardown_on_drop: true,
        ..LocalCloudConfig::default()
    })
    .await
    .expect("local cloud opens");
    let client = AgentClient::new(AgentClientConfig {
        ca_pem: ca.cert_pem().to_owned(),
        cert_pem: client_cert.cert_pem.clone(),
        key_pem: client_cert.key_pem.clone(),
        auth: None,
        timeout: Duration::from_secs(10),
        connect_timeout: Duration::from_secs(2),
    })
    .unwrap();

    let mut members = Vec::new();
    for i in 1..=2 {
        members.push(cloud.add_member(i, &klb, 8080).await.unwrap().addr);
    }
    let vip_port = cloud
        .create_port(&PortSpec {
            name: "klb-lb1-vip".into(),
            network_id: plan::VIP_NETWORK_ID.to_string(),
            subnet_id: None,
            fixed_ip: None,
            security_group_ids: vec![],
            device_owner: Some("klb:vip".into()),
        })
        .await
        .unwrap();
    let vip = vip_port.fixed_ips[0];
    let plan_ = cloud.plan().clone();

    let t0 = Instant::now();
    let mut agents = Vec::new();
    for i in 0..2u32 {
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
        // As the create-LB flow does before configuring the agent: allow the VIP on the L3
        // port (the local cloud also puts it on the VM's lo, so HAProxy can bind it).
        cloud
            .set_allowed_address_pairs(&s.addresses[1].port_id, &[vip])
            .await
            .unwrap();
        let agent = SocketAddr::new(s.addresses[0].ip, AGENT_PORT);
        let IpAddr::V4(l3) = s.addresses[1].ip else {
            panic!("IPv4 L3 address expected")
        };
        let member_json: Vec<serde_json::Value> = members
            .iter()
            .enumerate()
            .map(|(k, m)| serde_json::json!({"id": format!("m{}", k + 1), "address": m, "protocol_port": 8080}))
            .collect();
        let state: klb_proto::DesiredState = serde_json::from_value(serde_json::json!({
            "version": 1,
            "load_balancer_id": "lb1",
            "vip": vip,
            // HAProxy needs ~2 x maxconn file descriptors; this sandbox's hard limit is 20000.
            "global": {"maxconn": 2000},
            "vm": {"id": s.id, "index": i, "name": format!("lb1-{i}")},
            "listeners": [{"id": "l1", "protocol": "HTTP", "protocol_port": 80, "default_pool_id": "p1"}],
            "pools": [{
                "id": "p1", "protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN",
                "health_monitor": {"id": "hm1", "type": "HTTP", "delay": 1, "timeout": 1,
                                   "max_retries": 2, "url_path": "/health"},
                "members": member_json,
            }],
            "bgp": {
                "local_as": 10001 + i, "router_id": l3, "bfd": true,
                "neighbors": [
                    {"address": plan_.gw_l3_addr(1), "remote_as": 60201},
                    {"address": plan_.gw_l3_addr(2), "remote_as": 60201},
                ],
                "announce": [format!("{vip}/32")],
            },
        }))
        .unwrap();
        // The agent needs a moment to bind its API after the process starts.
        let t_put = Instant::now();
        let mut applied = None;
        let deadline = Instant::now() + Duration::from_secs(40);
        while Instant::now() < deadline {
            match client.put_state(agent, &state).await {
                Ok(r) => {
                    applied = Some(r);
                    break;
                }
                Err(e) if e.is_retryable() => {
                    println!("put_state: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await
                }
                Err(e) => panic!("agent refused the state: {e}"),
            }
        }
        let applied = applied.unwrap_or_else(|| {
            let log = std::fs::read_to_string(cloud_vm_dir(&tmp, &s.id, &prefix).join("agent.log"))
                .unwrap_or_default();
            panic!("agent at {agent} never answered; log:\n{log}")
        });
        assert_eq!(applied.version, 1);
        println!(
            "VM {i}: agent up and state applied {:?} after create_server returned",
            t_put.elapsed()
        );
        agents.push(agent);
    }
    let IpAddr::V4(vip4) = vip else { panic!() };
    cloud
        .lab()
        .await
        .wait_paths(vip4, 2, Duration::from_secs(30))
        .await
        .expect("ECMP over both agent-run VMs");
    let to_ecmp = t0.elapsed();

    let out = netns::exec_in(
        &cloud.lab().await.client_ns(),
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
            "%header{x-backend} %{http_code}\n",
            &format!("http://{vip}/?[1-100]"),
        ],
    )
    .await
    .unwrap();
    let ok = out.lines().filter(|l| l.ends_with(" 200")).count();
    let mut per_vm = Vec::new();
    for a in &agents {
        let st = client.stats(*a).await.unwrap();
        per_vm.push(
            st.listeners
                .first()
                .map_or(0, |l| l.counters.total_connections),
        );
    }
    println!(
        "2 x create_server (agent start) + PUT state -> ECMP {to_ecmp:?}; 100 requests ok={ok}; \
         connections per VM {per_vm:?}"
    );
    assert_eq!(ok, 100, "{out}");
    assert!(per_vm.iter().all(|&n| n > 20), "split {per_vm:?}");

    // KLB_TEST_LOGS=DIR keeps a copy of every config and log (agent, HAProxy, FRR) for study.
    if let Some(dir) = std::env::var_os("KLB_TEST_LOGS") {
        let _ = std::process::Command::new("cp")
            .arg("-r")
            .arg(tmp.path().join("run"))
            .arg(dir)
            .status();
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

/// The VM directory of a server (for printing the agent log on failure).
fn cloud_vm_dir(tmp: &tempfile::TempDir, server_id: &str, _prefix: &str) -> PathBuf {
    tmp.path()
        .join("run")
        .join(format!("vm-{}", &server_id[..8]))
}
