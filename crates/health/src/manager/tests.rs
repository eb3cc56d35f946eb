//! Receiver + manager against a real SQLite store.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use klb_agent_client::heartbeat::HeartbeatKeys;
use klb_model::{
    Kind, LbVm, LbVmStatus, LoadBalancer, Member, OperatingStatus, ProvisioningStatus,
};
use klb_proto::signature::{HmacKey, SIGNATURE_HEADER, sign, unix_ms};
use klb_proto::{Heartbeat, MemberStatus};
use klb_store::{JobOp, Store};
use tower::ServiceExt;
use uuid::Uuid;

use super::*;
use crate::router;
use crate::testutil::{Lab, lab};

fn config(failover: bool) -> Arc<HealthConfig> {
    Arc::new(HealthConfig {
        heartbeat_keys: HeartbeatKeys::new(b"test-key-0123456789"),
        max_age: Duration::from_secs(10),
        silent_after: Duration::from_millis(300),
        boot_grace: Duration::from_millis(0),
        tick: Duration::from_millis(100),
        failover,
    })
}

async fn store_with(lab: &Lab, vm_ids: &[Uuid]) -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("klb.db").display());
    let store = Store::open(&url).await.unwrap();
    let mut tx = store.begin().await.unwrap();
    tx.insert_resource(&lab.lb).await.unwrap();
    tx.insert_resource(&lab.listener).await.unwrap();
    tx.insert_resource(&lab.pool).await.unwrap();
    for m in &lab.members {
        tx.insert_resource(m).await.unwrap();
    }
    for hm in &lab.hm {
        tx.insert_resource(hm).await.unwrap();
    }
    for id in vm_ids {
        tx.insert_resource(&vm(*id, lab.lb.id)).await.unwrap();
    }
    tx.commit().await.unwrap();
    (store, dir)
}

fn vm(id: Uuid, lb_id: Uuid) -> LbVm {
    LbVm {
        id,
        ..klb_test_support::fixtures::lb_vm(Some(lb_id), LbVmStatus::Allocated)
    }
}

/// The key of the VM `hb` claims to come from.
fn own_key(cfg: &HealthConfig, hb: &Heartbeat) -> HmacKey {
    HmacKey::from(&cfg.heartbeat_keys.for_vm(&hb.load_balancer_id, &hb.vm_id))
}

/// Posts `hb` signed by the VM it claims to come from.
async fn post(app: &axum::Router, cfg: &HealthConfig, hb: Heartbeat, seq: u64) -> StatusCode {
    let key = own_key(cfg, &hb);
    post_signed(app, &key, hb, seq).await
}

/// Posts `hb` signed with `key`.
async fn post_signed(app: &axum::Router, key: &HmacKey, mut hb: Heartbeat, seq: u64) -> StatusCode {
    hb.seq = seq;
    hb.sent_at = unix_ms(SystemTime::now());
    let body = serde_json::to_vec(&hb).unwrap();
    let signature = sign(key, &body);
    let req = Request::post("/v1/heartbeat")
        .header(SIGNATURE_HEADER, signature)
        .body(Body::from(body))
        .unwrap();
    app.clone().oneshot(req).await.unwrap().status()
}

#[tokio::test]
async fn receiver_rejects_forged_replayed_and_stale_reports() {
    let lab = lab(1, true);
    let cfg = config(false);
    let app = router(Reports::default(), cfg.clone());
    let hb = lab.heartbeat("vm-a", &[MemberStatus::Up], 1);

    assert_eq!(
        post(&app, &cfg, hb.clone(), 10).await,
        StatusCode::NO_CONTENT
    );
    // Same sequence number again: replay.
    assert_eq!(post(&app, &cfg, hb.clone(), 10).await, StatusCode::CONFLICT);
    // Signed with another key.
    let other = HmacKey::new(b"not-the-key");
    assert_eq!(
        post_signed(&app, &other, hb.clone(), 11).await,
        StatusCode::UNAUTHORIZED
    );
    // Stale: sent a minute ago.
    let mut old = hb.clone();
    old.seq = 12;
    old.sent_at = unix_ms(SystemTime::now()) - 60_000;
    let body = serde_json::to_vec(&old).unwrap();
    let req = Request::post("/v1/heartbeat")
        .header(SIGNATURE_HEADER, sign(&own_key(&cfg, &old), &body))
        .body(Body::from(body))
        .unwrap();
    assert_eq!(
        app.clone().oneshot(req).await.unwrap().status(),
        StatusCode::CONFLICT
    );
    // No signature at all.
    let req = Request::post("/v1/heartbeat")
        .body(Body::from("{}"))
        .unwrap();
    assert_eq!(
        app.clone().oneshot(req).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
}

/// Issue 11 §7: each VM signs with its own key, so a VM cannot report for another VM (of its
/// load balancer or another one), nor move another VM's sequence number.
#[tokio::test]
async fn a_vm_cannot_forge_or_poison_another_vms_heartbeats() {
    let (lab, other_lab) = (lab(1, true), lab(1, true));
    let cfg = config(false);
    let reports = Reports::default();
    let app = router(reports.clone(), cfg.clone());
    let up = [MemberStatus::Up];
    let hb_a = lab.heartbeat("vm-a", &up, 1);
    let hb_b = lab.heartbeat("vm-b", &up, 2);
    let hb_c = other_lab.heartbeat("vm-c", &up, 3);
    assert_eq!(
        post(&app, &cfg, hb_b.clone(), 5).await,
        StatusCode::NO_CONTENT
    );
    let b_seq = || async {
        reports.snapshot().await[&hb_b.load_balancer_id]["vm-b"]
            .heartbeat
            .seq
    };
    assert_eq!(b_seq().await, 5);

    // A's key (same LB), C's key (another LB), and the master secret itself, each signing a
    // report that claims to be B with a huge sequence number: all refused as forged.
    let mut forged = hb_b.clone();
    forged.stats = Default::default();
    for key in [
        own_key(&cfg, &hb_a),
        own_key(&cfg, &hb_c),
        HmacKey::new(b"test-key-0123456789"),
    ] {
        assert_eq!(
            post_signed(&app, &key, forged.clone(), u64::MAX - 1).await,
            StatusCode::UNAUTHORIZED
        );
    }
    // B's report and sequence state are untouched ...
    let snapshot = reports.snapshot().await;
    let b = &snapshot[&hb_b.load_balancer_id]["vm-b"].heartbeat;
    assert_eq!((b.seq, &b.stats), (5, &hb_b.stats));
    // ... so B's next real report is accepted, and A and C still report for themselves.
    assert_eq!(
        post(&app, &cfg, hb_b.clone(), 6).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(b_seq().await, 6);
    assert_eq!(post(&app, &cfg, hb_a, 1).await, StatusCode::NO_CONTENT);
    assert_eq!(post(&app, &cfg, hb_c, 1).await, StatusCode::NO_CONTENT);
    // A report claiming B under another load balancer id is B's key's no more.
    let mut moved = hb_b.clone();
    moved.load_balancer_id = other_lab.lb.id.to_string();
    let key = own_key(&cfg, &hb_b);
    assert_eq!(
        post_signed(&app, &key, moved, 7).await,
        StatusCode::UNAUTHORIZED
    );
}

async fn status_of<T: klb_model::Resource>(store: &Store, id: Uuid) -> String {
    let doc = store.get(T::KIND, &id.to_string()).await.unwrap().unwrap();
    let body: serde_json::Value = serde_json::from_str(&doc.body).unwrap();
    body["operating_status"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn manager_stores_statuses_and_stats_from_heartbeats() {
    let lab = lab(2, true);
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let (store, _dir) = store_with(&lab, &[a, b]).await;
    let cfg = config(false);
    let reports = Reports::default();
    let app = router(reports.clone(), cfg.clone());
    let manager = HealthManager::new(store.clone(), reports.clone(), cfg.clone());

    let up_down = [MemberStatus::Up, MemberStatus::Down];
    let hb_a = lab.heartbeat(&a.to_string(), &up_down, 30);
    let hb_b = lab.heartbeat(&b.to_string(), &up_down, 12);
    assert_eq!(post(&app, &cfg, hb_a, 1).await, StatusCode::NO_CONTENT);
    assert_eq!(post(&app, &cfg, hb_b, 1).await, StatusCode::NO_CONTENT);
    manager.tick().await.unwrap();

    assert_eq!(
        status_of::<LoadBalancer>(&store, lab.lb.id).await,
        "DEGRADED"
    );
    assert_eq!(
        status_of::<Member>(&store, lab.members[0].id).await,
        "ONLINE"
    );
    assert_eq!(
        status_of::<Member>(&store, lab.members[1].id).await,
        "ERROR"
    );
    // Octavia moves `updated_at` with an operating-status change too.
    let member = store
        .get(Kind::Member, &lab.members[1].id.to_string())
        .await
        .unwrap()
        .unwrap();
    let member: serde_json::Value = serde_json::from_str(&member.body).unwrap();
    assert!(
        member["updated_at"].is_string(),
        "updated_at after a status change: {member}"
    );
    let stats = store
        .get(STATS_KIND, &lab.lb.id.to_string())
        .await
        .unwrap()
        .unwrap();
    let stats: serde_json::Value = serde_json::from_str(&stats.body).unwrap();
    assert_eq!(stats["loadbalancer"]["requests"], 42);
    // Each VM's own counters, for the amphora stats endpoint.
    let listener = lab.listener.id.to_string();
    assert_eq!(stats["amphorae"][a.to_string()][&listener]["requests"], 30);
    assert_eq!(stats["amphorae"][b.to_string()][&listener]["requests"], 12);

    // The member recovers on both VMs: everything ONLINE.
    let up_up = [MemberStatus::Up, MemberStatus::Up];
    let hb_a = lab.heartbeat(&a.to_string(), &up_up, 31);
    let hb_b = lab.heartbeat(&b.to_string(), &up_up, 13);
    assert_eq!(post(&app, &cfg, hb_a, 2).await, StatusCode::NO_CONTENT);
    assert_eq!(post(&app, &cfg, hb_b, 2).await, StatusCode::NO_CONTENT);
    manager.tick().await.unwrap();
    assert_eq!(status_of::<LoadBalancer>(&store, lab.lb.id).await, "ONLINE");
    assert_eq!(
        status_of::<Member>(&store, lab.members[1].id).await,
        "ONLINE"
    );
    let _ = OperatingStatus::Online;
}

#[tokio::test]
async fn silent_vm_gets_a_failover_job_once() {
    let lab = lab(1, true);
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let (store, _dir) = store_with(&lab, &[a, b]).await;
    let cfg = config(true);
    let reports = Reports::default();
    let app = router(reports.clone(), cfg.clone());
    let manager = HealthManager::new(store.clone(), reports.clone(), cfg.clone());
    let up = [MemberStatus::Up];
    for seq in 1..=2 {
        let hb_a = lab.heartbeat(&a.to_string(), &up, 0);
        let hb_b = lab.heartbeat(&b.to_string(), &up, 0);
        assert_eq!(post(&app, &cfg, hb_a, seq).await, StatusCode::NO_CONTENT);
        assert_eq!(post(&app, &cfg, hb_b, seq).await, StatusCode::NO_CONTENT);
        manager.tick().await.unwrap();
    }
    assert!(
        store
            .jobs_of(&lab.lb.id.to_string())
            .await
            .unwrap()
            .is_empty()
    );

    // VM b goes silent; a keeps reporting.
    tokio::time::sleep(cfg.silent_after + Duration::from_millis(100)).await;
    let hb_a = lab.heartbeat(&a.to_string(), &up, 0);
    assert_eq!(post(&app, &cfg, hb_a, 3).await, StatusCode::NO_CONTENT);
    manager.tick().await.unwrap();
    manager.tick().await.unwrap();

    let jobs = store.jobs_of(&lab.lb.id.to_string()).await.unwrap();
    assert_eq!(jobs.len(), 1, "exactly one failover job: {jobs:?}");
    assert_eq!(jobs[0].op, JobOp::Failover);
    assert_eq!(jobs[0].target_kind, Kind::LbVm);
    assert_eq!(jobs[0].target_id, b.to_string());
    let lb: LoadBalancer = store.get_resource(lab.lb.id).await.unwrap().unwrap();
    assert_eq!(lb.provisioning_status, ProvisioningStatus::PendingUpdate);
}

#[tokio::test]
async fn a_booting_vm_gets_its_grace_before_failover() {
    let lab = lab(1, true);
    let (a, booting) = (Uuid::new_v4(), Uuid::new_v4());
    let (store, _dir) = store_with(&lab, &[a, booting]).await;
    let mut cfg = (*config(true)).clone();
    cfg.boot_grace = Duration::from_millis(400);
    let cfg = Arc::new(cfg);
    let reports = Reports::default();
    let app = router(reports.clone(), cfg.clone());
    let manager = HealthManager::new(store.clone(), reports.clone(), cfg.clone());
    let up = [MemberStatus::Up];
    let lb_id = lab.lb.id.to_string();
    // Within silent_after + boot_grace the VM that never reported is left alone.
    for seq in 1..=4 {
        let hb = lab.heartbeat(&a.to_string(), &up, 0);
        assert_eq!(post(&app, &cfg, hb, seq).await, StatusCode::NO_CONTENT);
        manager.tick().await.unwrap();
        assert!(
            store.jobs_of(&lb_id).await.unwrap().is_empty(),
            "tick {seq}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Past it, the booting VM is failed over.
    tokio::time::sleep(cfg.silent_after + cfg.boot_grace).await;
    let hb = lab.heartbeat(&a.to_string(), &up, 0);
    assert_eq!(post(&app, &cfg, hb, 5).await, StatusCode::NO_CONTENT);
    manager.tick().await.unwrap();
    let jobs = store.jobs_of(&lb_id).await.unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].target_id, booting.to_string());
}
