//! Behaviour of the LB flows beyond faults: what each leaves in the cloud and pushes to agents.

use std::time::Duration;

use klb_cloud::fake::{Fault, Kind, Op};
use klb_cloud::{Alarms, Compute, Direction, Network, ServerFilter, ServerStatus, names};
use klb_flow::RunState;
use klb_flow::lb::{FlowKind, LbInput, ListenerPort};

use crate::support::{Harness, LB, LiveLb, diff, expected};

async fn create(h: &Harness, lb: &str, ports: &[u16], vms: u32) {
    let run = h
        .run(h.create_input(lb, ports, vms).request(FlowKind::CreateLb))
        .await;
    assert_eq!(run.state, RunState::Completed, "{:?}", run.reason);
}

async fn listener_ports(h: &Harness, lb: &str) -> Vec<u16> {
    let sg = h
        .fake
        .find_security_group(&names::security_group(lb))
        .await
        .unwrap()
        .unwrap();
    let mut ports: Vec<u16> = h
        .fake
        .list_security_group_rules(&sg.id)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.spec.direction == Direction::Ingress && r.spec.remote_cidr.is_none())
        .filter_map(|r| r.spec.ports.map(|p| p.0))
        .collect();
    ports.sort();
    ports
}

#[tokio::test]
async fn create_builds_everything_and_configures_every_vm() {
    let h = Harness::new().await;
    create(&h, LB, &[80, 443], 2).await;
    assert_eq!(
        diff(
            &h.ledger_names().await,
            &expected(&[LiveLb {
                lb_id: LB,
                vms: 2,
                listeners: 2
            }])
        ),
        None
    );
    let servers = h.fake.find_servers(&ServerFilter::lb(LB)).await.unwrap();
    let vip_port = &h.fake.find_ports(&names::vip_port(LB)).await.unwrap()[0];
    let vip = vip_port.fixed_ips[0];
    for s in &servers {
        assert_eq!(s.status, ServerStatus::Active);
        let state = h
            .fake
            .pushed_state(&s.id)
            .await
            .expect("state pushed to every VM");
        assert_eq!(state.peers.len(), 2, "peers list all VMs");
        // The L3 port carries the VIP.
        let l3 = &s.addresses[1];
        let port = h.fake.get_port(&l3.port_id).await.unwrap().unwrap();
        assert_eq!(port.allowed_address_pairs, vec![vip]);
    }
    let rec = h.backend.record_of(LB).await.expect("recorded");
    assert_eq!(rec.vms.len(), 2);
    assert!(rec.alarm_id.is_some());
    assert_eq!(listener_ports(&h, LB).await, vec![80, 443]);
}

#[tokio::test]
async fn update_opens_and_closes_listener_ports_and_pushes() {
    let h = Harness::new().await;
    create(&h, LB, &[80], 2).await;
    let servers = h.fake.find_servers(&ServerFilter::lb(LB)).await.unwrap();
    let before = h.fake.pushed_state(&servers[0].id).await.unwrap().version;
    let run = h
        .run(
            LbInput::update(LB, vec![ListenerPort::tcp(443), ListenerPort::tcp(8080)])
                .request(FlowKind::UpdateLb),
        )
        .await;
    assert_eq!(run.state, RunState::Completed);
    assert_eq!(listener_ports(&h, LB).await, vec![443, 8080]);
    for s in &servers {
        let after = h.fake.pushed_state(&s.id).await.unwrap().version;
        assert!(after > before, "every VM got a newer state");
    }
}

#[tokio::test]
async fn failover_replaces_the_dead_vm_in_place() {
    let h = Harness::new().await;
    create(&h, LB, &[80], 2).await;
    let dead = h
        .fake
        .find_servers(&ServerFilter::name(names::server(LB, 1)))
        .await
        .unwrap()[0]
        .clone();
    h.fake
        .set_server_status(&dead.id, ServerStatus::Error)
        .await;
    let run = h
        .run(LbInput::failover(LB, 1).request(FlowKind::FailoverVm))
        .await;
    assert_eq!(run.state, RunState::Completed, "{:?}", run.reason);
    let new = h
        .fake
        .find_servers(&ServerFilter::name(names::server(LB, 1)))
        .await
        .unwrap();
    assert_eq!(new.len(), 1);
    assert_ne!(new[0].id, dead.id);
    assert!(h.fake.pushed_state(&new[0].id).await.is_some());
    let group = h
        .fake
        .find_server_group(&names::server_group(LB))
        .await
        .unwrap()
        .unwrap();
    assert!(
        group.members.contains(&new[0].id),
        "same anti-affinity group"
    );
    assert_eq!(
        diff(
            &h.ledger_names().await,
            &expected(&[LiveLb {
                lb_id: LB,
                vms: 2,
                listeners: 1
            }])
        ),
        None
    );
}

#[tokio::test]
async fn scale_out_then_in_changes_the_vm_set_and_peers() {
    let h = Harness::new().await;
    create(&h, LB, &[80], 2).await;
    let run = h
        .run(LbInput::scale_out(LB, 2, 4).request(FlowKind::ScaleOutLb))
        .await;
    assert_eq!(run.state, RunState::Completed, "{:?}", run.reason);
    assert_eq!(
        diff(
            &h.ledger_names().await,
            &expected(&[LiveLb {
                lb_id: LB,
                vms: 4,
                listeners: 1
            }])
        ),
        None
    );
    let vm0 = h
        .fake
        .find_servers(&ServerFilter::name(names::server(LB, 0)))
        .await
        .unwrap()[0]
        .clone();
    assert_eq!(h.fake.pushed_state(&vm0.id).await.unwrap().peers.len(), 4);
    let alarm = h.fake.find_alarm(&names::alarm(LB)).await.unwrap().unwrap();
    assert_eq!(alarm.server_ids.len(), 4, "the alarm covers the new VMs");

    let run = h
        .run(LbInput::scale_in(LB, 4, 2).request(FlowKind::ScaleInLb))
        .await;
    assert_eq!(run.state, RunState::Completed, "{:?}", run.reason);
    assert_eq!(
        diff(
            &h.ledger_names().await,
            &expected(&[LiveLb {
                lb_id: LB,
                vms: 2,
                listeners: 1
            }])
        ),
        None
    );
    assert_eq!(h.fake.pushed_state(&vm0.id).await.unwrap().peers.len(), 2);
}

#[tokio::test]
async fn delete_removes_everything() {
    let h = Harness::new().await;
    create(&h, LB, &[80], 2).await;
    create(&h, "lb-2", &[80], 2).await;
    let run = h.run(LbInput::delete(LB).request(FlowKind::DeleteLb)).await;
    assert_eq!(run.state, RunState::Completed);
    assert_eq!(
        diff(
            &h.ledger_names().await,
            &expected(&[LiveLb {
                lb_id: "lb-2",
                vms: 2,
                listeners: 1
            }])
        ),
        None
    );
    assert!(h.backend.record_of(LB).await.is_none());
}

/// An ERROR load balancer whose create failed and whose revert could not finish (the cloud
/// kept refusing deletes) is still fully removed by delete.
#[tokio::test]
async fn delete_cleans_up_a_half_failed_create() {
    let h = Harness::new().await;
    h.fake
        .inject(Op::AgentPush, 1, Fault::Error { retryable: false })
        .await;
    for n in 1..=20 {
        h.fake
            .inject(Op::DeleteServer, n, Fault::Error { retryable: false })
            .await;
    }
    let run = h
        .run(h.create_input(LB, &[80], 2).request(FlowKind::CreateLb))
        .await;
    assert_eq!(run.state, RunState::Failed);
    let reason = run.reason.unwrap();
    assert!(
        reason.contains("revert of step create_vms incomplete"),
        "{reason}"
    );
    assert!(
        !h.fake.live(Kind::Server).await.is_empty(),
        "the failed revert left VMs behind"
    );
    h.fake.clear_faults().await;
    let run = h.run(LbInput::delete(LB).request(FlowKind::DeleteLb)).await;
    assert_eq!(run.state, RunState::Completed, "{:?}", run.reason);
    assert!(
        h.fake.ledger().await.is_empty(),
        "{:?}",
        h.fake.ledger().await
    );
}

/// A delete submitted while the create runs cancels it: the create reverts and ends failed
/// ("cancelled"), then the delete runs; nothing is left.
#[tokio::test]
async fn delete_cancels_a_running_create() {
    let h = Harness::new().await;
    // Slow the create down inside its VM step so the delete arrives mid-flow.
    h.fake
        .inject(
            Op::CreateServer,
            1,
            Fault::Delay(Duration::from_millis(150)),
        )
        .await;
    let create = h
        .submit(h.create_input(LB, &[80], 2).request(FlowKind::CreateLb))
        .await;
    let w = h.start_worker(4);
    assert!(h.wait_calls(Op::CreateServer, 1).await);
    let delete = h
        .submit(LbInput::delete(LB).request(FlowKind::DeleteLb))
        .await;
    let c = h.wait(&create).await;
    let d = h.wait(&delete).await;
    w.stop().await;
    assert_eq!(c.state, RunState::Failed);
    assert!(c.reason.unwrap().contains("cancelled"));
    assert_eq!(d.state, RunState::Completed);
    assert!(
        h.fake.ledger().await.is_empty(),
        "{:?}",
        h.fake.ledger().await
    );
    // The delete started only after the create had settled.
    let c = h.db.run(&create).await.unwrap().unwrap();
    let d_steps = h.db.steps(&delete).await.unwrap();
    assert!(!d_steps.is_empty());
    assert!(c.updated_ms <= h.db.run(&delete).await.unwrap().unwrap().updated_ms);
}

#[tokio::test]
async fn many_load_balancers_in_parallel_leave_exactly_their_resources() {
    let h = Harness::new().await;
    let w = h.start_worker(16);
    let mut ids = Vec::new();
    let lbs: Vec<String> = (0..12).map(|i| format!("lb-{i}")).collect();
    for lb in &lbs {
        ids.push(
            h.submit(h.create_input(lb, &[80], 2).request(FlowKind::CreateLb))
                .await,
        );
    }
    // Delete every third one right after its create was submitted.
    for lb in lbs.iter().step_by(3) {
        ids.push(
            h.submit(LbInput::delete(lb).request(FlowKind::DeleteLb))
                .await,
        );
    }
    for id in &ids {
        let r = h.wait(id).await;
        assert!(r.state.is_final());
    }
    w.stop().await;
    let live: Vec<LiveLb<'_>> = lbs
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 3 != 0)
        .map(|(_, lb)| LiveLb {
            lb_id: lb,
            vms: 2,
            listeners: 1,
        })
        .collect();
    assert_eq!(diff(&h.ledger_names().await, &expected(&live)), None);
}

#[tokio::test]
async fn boot_failure_reverts_the_create() {
    let h = Harness::new().await;
    h.fake.inject(Op::CreateServer, 2, Fault::BootError).await;
    let run = h
        .run(h.create_input(LB, &[80], 2).request(FlowKind::CreateLb))
        .await;
    assert_eq!(run.state, RunState::Failed);
    assert!(
        run.reason.as_deref().unwrap().contains("ERROR"),
        "{:?}",
        run.reason
    );
    assert!(h.fake.ledger().await.is_empty());
    let history = h.db.steps(&run.id).await.unwrap();
    let reverted: Vec<_> = history
        .iter()
        .filter(|s| s.phase == "revert")
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(
        reverted,
        vec![
            "wait_vms_active",
            "record_vms",
            "create_vms",
            "ensure_server_group",
            "allocate_vip",
            "ensure_security_group",
            "resolve_networks"
        ],
        "reverts run in reverse order, the failed step first"
    );
}
