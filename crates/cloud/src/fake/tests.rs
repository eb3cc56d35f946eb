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
