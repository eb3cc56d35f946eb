use std::collections::BTreeMap;

use super::*;
use crate::{ServerGroupPolicy, names};

fn state(version: u64) -> DesiredState {
    DesiredState {
        protocol: klb_proto::PROTOCOL_VERSION,
        version,
        load_balancer_id: "lb".into(),
        admin_state_up: true,
        vip: "198.18.1.1".parse().unwrap(),
        additional_vips: vec![],
        vm: klb_proto::VmIdentity {
            id: "vm".into(),
            index: 0,
            name: "vm".into(),
        },
        peers: vec![],
        listeners: vec![],
        pools: vec![],
        bgp: None,
        global: Default::default(),
        certificates: vec![],
        heartbeat_key: None,
    }
}

async fn net(fake: &FakeCloud) -> (String, String) {
    fake.add_network("lb-mgmt-net", "198.18.0.0/24".parse().unwrap())
        .await
}

fn server_spec(name: &str, network_id: &str, group: Option<String>) -> ServerSpec {
    ServerSpec {
        name: name.into(),
        image_id: "img".into(),
        flavor_id: "flv".into(),
        server_group_id: group,
        nics: vec![NicSpec::Network {
            network_id: network_id.into(),
            fixed_ip: None,
        }],
        security_group_ids: vec![],
        user_data: Some("secret-bootstrap".into()),
        boot_volume_gib: Some(50),
        availability_zone: None,
        metadata: BTreeMap::new(),
    }
}

#[tokio::test]
async fn server_lifecycle_and_ledger() {
    let fake = FakeCloud::new();
    let (net_id, _) = net(&fake).await;
    let group = fake
        .create_server_group(&ServerGroupSpec {
            name: names::server_group("lb1"),
            policy: ServerGroupPolicy::AntiAffinity,
        })
        .await
        .unwrap();
    let s = fake
        .create_server(&server_spec(
            "klb-lb1-vm-0",
            &net_id,
            Some(group.id.clone()),
        ))
        .await
        .unwrap();
    assert_eq!(s.status, ServerStatus::Build);
    assert_eq!(
        fake.get_server(&s.id).await.unwrap().unwrap().status,
        ServerStatus::Active
    );
    assert_eq!(fake.live(Kind::Server).await, vec![s.id.clone()]);
    assert_eq!(
        fake.live(Kind::Port).await.len(),
        1,
        "nova-made port is in the ledger"
    );
    fake.delete_server(&s.id).await.unwrap();
    fake.delete_server(&s.id).await.unwrap();
    fake.delete_server_group(&group.id).await.unwrap();
    assert!(fake.ledger().await.is_empty(), "{:?}", fake.ledger().await);
}

#[tokio::test]
async fn faults_fire_on_the_nth_call_only() {
    let fake = FakeCloud::new();
    fake.inject(Op::FindAlarm, 2, Fault::Error { retryable: true })
        .await;
    assert!(fake.find_alarm("a").await.is_ok());
    let err = fake.find_alarm("a").await.unwrap_err();
    assert!(err.retryable);
    assert_eq!(err.operation, "find_alarm");
    assert!(fake.find_alarm("a").await.is_ok());
    assert_eq!(fake.calls(Op::FindAlarm).await, 3);
}

#[tokio::test]
async fn lost_reply_creates_but_errors() {
    let fake = FakeCloud::new();
    fake.inject_next(Op::CreateSecurityGroup, Fault::LostReply)
        .await;
    let spec = SecurityGroupSpec {
        name: "klb-x-sg".into(),
        description: String::new(),
    };
    assert!(
        fake.create_security_group(&spec)
            .await
            .unwrap_err()
            .retryable
    );
    assert!(
        fake.find_security_group("klb-x-sg")
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test]
async fn hang_never_returns() {
    let fake = FakeCloud::new();
    fake.inject_next(Op::FindNetwork, Fault::Hang).await;
    let r = tokio::time::timeout(Duration::from_millis(50), fake.find_network("x")).await;
    assert!(r.is_err(), "hang must outlive the timeout");
}

#[tokio::test]
async fn security_group_in_use_cannot_be_deleted() {
    let fake = FakeCloud::new();
    let (net_id, _) = net(&fake).await;
    let sg = fake
        .create_security_group(&SecurityGroupSpec {
            name: "g".into(),
            description: String::new(),
        })
        .await
        .unwrap();
    fake.add_security_group_rule(&sg.id, &RuleSpec::tcp_in(80, None))
        .await
        .unwrap();
    let dup = fake
        .add_security_group_rule(&sg.id, &RuleSpec::tcp_in(80, None))
        .await;
    assert_eq!(dup.unwrap_err().kind, CloudErrorKind::Conflict);
    let port = fake
        .create_port(&PortSpec {
            name: "vip".into(),
            network_id: net_id,
            subnet_id: None,
            fixed_ip: None,
            security_group_ids: vec![sg.id.clone()],
            device_owner: Some("klb:vip".into()),
        })
        .await
        .unwrap();
    assert_eq!(
        fake.delete_security_group(&sg.id).await.unwrap_err().kind,
        CloudErrorKind::Conflict
    );
    fake.delete_port(&port.id).await.unwrap();
    fake.delete_security_group(&sg.id).await.unwrap();
    assert!(fake.ledger().await.is_empty());
}

#[tokio::test]
async fn boot_error_and_agent_push() {
    let fake = FakeCloud::new();
    let (net_id, _) = net(&fake).await;
    fake.inject(Op::CreateServer, 1, Fault::BootError).await;
    let bad = fake
        .create_server(&server_spec("bad", &net_id, None))
        .await
        .unwrap();
    assert_eq!(
        fake.get_server(&bad.id).await.unwrap().unwrap().status,
        ServerStatus::Error
    );
    let good = fake
        .create_server(&server_spec("good", &net_id, None))
        .await
        .unwrap();
    let target = agent_target(&good, 62000).unwrap();
    // Still building: the agent is not reachable yet.
    assert!(fake.push(&target, &state(3)).await.is_err());
    fake.get_server(&good.id).await.unwrap();
    let st = fake.push(&target, &state(3)).await.unwrap();
    assert_eq!(st.applied_version, Some(3));
    assert!(fake.drain(&target).await.unwrap().drained);
}

#[test]
fn user_data_is_not_in_debug_output() {
    let spec = server_spec("s", "n", None);
    assert!(!format!("{spec:?}").contains("secret-bootstrap"));
}

// ---------------------------------------------------------------------------------------------
// Shared state file: two `FakeCloud::shared` on one file stand for two processes (each has its
// own in-process mutex, so only the file lock keeps them apart).
// ---------------------------------------------------------------------------------------------

fn two_shared() -> (tempfile::TempDir, FakeCloud, FakeCloud) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cloud.json");
    let a = FakeCloud::shared(&path).unwrap();
    let b = FakeCloud::shared(&path).unwrap();
    (dir, a, b)
}

#[tokio::test]
async fn shared_clouds_see_one_ledger_and_agree_on_networks() {
    let (_dir, a, b) = two_shared();
    let cidr: IpNet = "198.18.0.0/24".parse().unwrap();
    let net_a = a.ensure_network("lb-mgmt-net", cidr).await.unwrap();
    let net_b = b.ensure_network("lb-mgmt-net", cidr).await.unwrap();
    assert_eq!(
        net_a, net_b,
        "the second process adopts the first one's network"
    );

    let group = a
        .create_server_group(&ServerGroupSpec {
            name: names::server_group("lb1"),
            policy: ServerGroupPolicy::AntiAffinity,
        })
        .await
        .unwrap();
    // b creates a server in a's group and boots it; a sees the group member and the status.
    let server = b
        .create_server(&server_spec("vm-0", &net_a.0, Some(group.id.clone())))
        .await
        .unwrap();
    assert_eq!(
        a.find_server_group(&group.name)
            .await
            .unwrap()
            .unwrap()
            .members,
        vec![server.id.clone()]
    );
    assert_eq!(
        b.get_server(&server.id).await.unwrap().unwrap().status,
        ServerStatus::Active
    );
    let target = agent_target(&server, 62000).unwrap();
    assert_eq!(
        a.push(&target, &state(7)).await.unwrap().applied_version,
        Some(7)
    );
    assert_eq!(b.pushed_state(&server.id).await.unwrap().version, 7);
    assert_eq!(a.ledger().await, b.try_ledger().await.unwrap());
    assert_eq!(a.live(Kind::Server).await, vec![server.id.clone()]);

    // What one deletes is gone for the other, and the file starts a third process empty too.
    a.delete_server(&server.id).await.unwrap();
    b.delete_server_group(&group.id).await.unwrap();
    assert!(a.try_ledger().await.unwrap().is_empty());
    let c = FakeCloud::shared(b.state_file().unwrap()).unwrap();
    assert!(c.try_ledger().await.unwrap().is_empty());
    assert_eq!(
        c.find_network("lb-mgmt-net").await.unwrap().unwrap().id,
        net_a.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_through_two_shared_clouds_never_collide() {
    let (_dir, a, b) = two_shared();
    let cidr: IpNet = "198.18.0.0/24".parse().unwrap();
    let (net_id, _) = a.ensure_network("vip-net", cidr).await.unwrap();
    let spawn = |fake: FakeCloud, who: &'static str| {
        let net_id = net_id.clone();
        tokio::spawn(async move {
            let mut ports = Vec::new();
            for i in 0..100 {
                let port = fake
                    .create_port(&PortSpec {
                        name: format!("{who}-{i}"),
                        network_id: net_id.clone(),
                        subnet_id: None,
                        fixed_ip: None,
                        security_group_ids: vec![],
                        device_owner: Some("klb:vip".into()),
                    })
                    .await
                    .unwrap();
                ports.push(port);
            }
            ports
        })
    };
    let (pa, pb) = (spawn(a.clone(), "a"), spawn(b.clone(), "b"));
    let mut all = pa.await.unwrap();
    all.extend(pb.await.unwrap());
    let mut ips: Vec<IpAddr> = all.iter().map(|p| p.fixed_ips[0]).collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 200, "every address handed out once");
    // No lost update: every port of both writers is in the file.
    assert_eq!(b.live(Kind::Port).await.len(), 200);
}

#[tokio::test]
async fn faults_stay_in_their_process() {
    let (_dir, a, b) = two_shared();
    a.inject_next(Op::FindAlarm, Fault::Error { retryable: true })
        .await;
    assert!(b.find_alarm("x").await.unwrap().is_none());
    assert!(a.find_alarm("x").await.is_err());
    assert_eq!(
        (a.calls(Op::FindAlarm).await, b.calls(Op::FindAlarm).await),
        (1, 1)
    );
}

#[tokio::test]
async fn a_broken_state_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cloud.json");
    std::fs::write(&path, b"{ not json").unwrap();
    let err = FakeCloud::shared(&path).unwrap_err();
    assert!(matches!(err, SharedStateError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("cloud.json"), "{err}");

    let missing_dir = dir.path().join("missing").join("cloud.json");
    assert!(matches!(
        FakeCloud::shared(&missing_dir).unwrap_err(),
        SharedStateError::Io { .. }
    ));

    // Broken after the start: each call fails (retryable, with the path), nothing panics.
    std::fs::remove_file(&path).unwrap();
    let fake = FakeCloud::shared(&path).unwrap();
    std::fs::write(&path, b"[]").unwrap();
    let err = fake
        .create_security_group(&SecurityGroupSpec {
            name: "sg".into(),
            description: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.kind, CloudErrorKind::Unavailable);
    assert!(err.retryable);
    assert!(err.message.contains("cloud.json"), "{err}");
    assert!(fake.try_ledger().await.is_err());
}

#[tokio::test]
async fn the_state_file_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let (dir, a, _b) = two_shared();
    a.add_network("n", "198.18.0.0/24".parse().unwrap()).await;
    let mode = std::fs::metadata(dir.path().join("cloud.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "pushed states may hold TLS keys");
}
