//! The store's jobs table driving the LB flows: a job written with a `PENDING_*` change is
//! claimed, run and settled; the graph leaves `PENDING_*` (ACTIVE, ERROR or DELETED).

use std::sync::Arc;
use std::time::Duration;

use klb_cloud::fake::{Fault, Op};
use klb_flow::jobs::{JobPump, SettleJobs};
use klb_flow::lb::{self, LbConfig, LbEnv, fake::FakeBackend};
use klb_flow::{Db, Engine, EngineConfig};
use klb_model::{LoadBalancer, ProvisioningStatus};
use klb_store::{JobOp, JobState, NewJob, Store};
use klb_test_support::fixtures;

use crate::support::{LiveLb, diff, expected};

struct Setup {
    _dir: tempfile::TempDir,
    store: Store,
    fake: klb_cloud::fake::FakeCloud,
    vip_net: String,
    engine: Engine<LbEnv>,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("klb.db");
    let store = Store::open(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    let db = Db::connect(&format!("sqlite://{}?mode=rwc", path.display()))
        .await
        .unwrap();
    db.migrate().await.unwrap();
    let fake = klb_cloud::fake::FakeCloud::new();
    fake.add_network("lb-mgmt-net", "198.18.4.0/22".parse().unwrap())
        .await;
    fake.add_network("lb-l3-net", "198.18.8.0/22".parse().unwrap())
        .await;
    let (vip_net, _) = fake
        .add_network("vip-net", "198.18.16.0/22".parse().unwrap())
        .await;
    let env = LbEnv {
        cloud: fake.cloud(),
        config: LbConfig::example("lb-mgmt-net", "lb-l3-net"),
        backend: Arc::new(FakeBackend::new()),
        graphs: Default::default(),
    };
    let engine = Engine::new(
        db,
        Arc::new(env),
        lb::flows_with(lb::FlowTiming::fast()),
        EngineConfig::for_tests(),
    )
    .with_finish_hook(Arc::new(SettleJobs {
        store: store.clone(),
    }));
    Setup {
        _dir: dir,
        store,
        fake,
        vip_net,
        engine,
    }
}

fn load_balancer(vip_net: &str) -> LoadBalancer {
    LoadBalancer {
        name: Some("lb".into()),
        vip_network_id: Some(vip_net.parse().unwrap()),
        ..fixtures::load_balancer("p1", ProvisioningStatus::PendingCreate)
    }
}

/// Write the LB with `status` and a job for `op`, as the API does (one transaction).
async fn api_write(s: &Setup, lb: &mut LoadBalancer, status: ProvisioningStatus, op: JobOp) {
    lb.provisioning_status = status;
    let mut tx = s.store.begin().await.unwrap();
    tx.put_resource(lb).await.unwrap();
    tx.enqueue_job(NewJob {
        loadbalancer_id: lb.id.to_string(),
        op,
        target_kind: klb_model::Kind::LoadBalancer,
        target_id: lb.id.to_string(),
        payload: None,
    })
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

/// Wait until the LB has no open job; return its stored status.
async fn settled(s: &Setup, lb: &LoadBalancer) -> Option<ProvisioningStatus> {
    for _ in 0..3000 {
        let jobs = s.store.jobs_of(&lb.id.to_string()).await.unwrap();
        if jobs.iter().all(|j| j.state == JobState::Failed) {
            let doc = s
                .store
                .get(klb_model::Kind::LoadBalancer, &lb.id.to_string())
                .await
                .unwrap()?;
            return doc.status();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("job never settled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_become_flows_and_are_settled() {
    let s = setup().await;
    let pump = JobPump::new(s.store.clone(), s.engine.clone(), 2);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut rx1 = stop_rx.clone();
    let mut rx2 = stop_rx.clone();
    let p = tokio::spawn(pump.run(async move {
        let _ = rx1.changed().await;
    }));
    let w = tokio::spawn(s.engine.worker(4).run(async move {
        let _ = rx2.changed().await;
    }));

    // Create: ACTIVE, and the cloud holds the LB's resources.
    let mut lb = load_balancer(&s.vip_net);
    api_write(
        &s,
        &mut lb,
        ProvisioningStatus::PendingCreate,
        JobOp::Create,
    )
    .await;
    assert_eq!(settled(&s, &lb).await, Some(ProvisioningStatus::Active));
    let id = lb.id.to_string();
    let live = [LiveLb {
        lb_id: &id,
        vms: 2,
        listeners: 0,
    }];
    assert_eq!(
        diff(
            &crate::support::count_ledger(&s.fake).await,
            &expected(&live)
        ),
        None
    );

    // A create the cloud refuses: ERROR with the reason on the job, nothing left behind.
    let mut bad = load_balancer(&s.vip_net);
    s.fake
        .inject(Op::CreatePpsAlarm, 2, Fault::Error { retryable: false })
        .await;
    api_write(
        &s,
        &mut bad,
        ProvisioningStatus::PendingCreate,
        JobOp::Create,
    )
    .await;
    assert_eq!(settled(&s, &bad).await, Some(ProvisioningStatus::Error));
    let jobs = s.store.jobs_of(&bad.id.to_string()).await.unwrap();
    assert!(
        jobs[0]
            .last_error
            .as_deref()
            .unwrap()
            .contains("ensure_alarm"),
        "{jobs:?}"
    );
    assert_eq!(
        diff(
            &crate::support::count_ledger(&s.fake).await,
            &expected(&live)
        ),
        None
    );

    // Failover of the whole LB: every VM rebuilt (one at a time), the job settles once.
    let before = s.fake.live(klb_cloud::fake::Kind::Server).await;
    api_write(
        &s,
        &mut lb,
        ProvisioningStatus::PendingUpdate,
        JobOp::Failover,
    )
    .await;
    assert_eq!(settled(&s, &lb).await, Some(ProvisioningStatus::Active));
    let after = s.fake.live(klb_cloud::fake::Kind::Server).await;
    assert_eq!(after.len(), 2);
    assert!(
        after.iter().all(|id| !before.contains(id)),
        "every VM replaced"
    );
    assert_eq!(
        diff(
            &crate::support::count_ledger(&s.fake).await,
            &expected(&live)
        ),
        None
    );

    // A failed LB VM whose server is already gone (a failover that failed after deleting
    // it): the health manager's job rebuilds the free index instead of failing forever.
    let victim = after[0].clone();
    klb_cloud::Compute::delete_server(&*s.fake.cloud().compute, &victim)
        .await
        .unwrap();
    let record = klb_model::LbVm {
        compute_id: Some(victim.clone()),
        ..fixtures::lb_vm(Some(lb.id), klb_model::LbVmStatus::Allocated)
    };
    lb.provisioning_status = ProvisioningStatus::PendingUpdate;
    let mut tx = s.store.begin().await.unwrap();
    tx.insert_resource(&record).await.unwrap();
    tx.put_resource(&lb).await.unwrap();
    tx.enqueue_job(NewJob {
        loadbalancer_id: lb.id.to_string(),
        op: JobOp::Failover,
        target_kind: klb_model::Kind::LbVm,
        target_id: record.id.to_string(),
        payload: None,
    })
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(settled(&s, &lb).await, Some(ProvisioningStatus::Active));
    let rebuilt = s.fake.live(klb_cloud::fake::Kind::Server).await;
    assert_eq!(rebuilt.len(), 2, "the missing VM is rebuilt: {rebuilt:?}");
    assert!(!rebuilt.contains(&victim));
    assert_eq!(
        diff(
            &crate::support::count_ledger(&s.fake).await,
            &expected(&live)
        ),
        None
    );

    // A PPS scale-out the cloud refuses (Nova: no host left under anti-affinity) is reverted
    // and leaves the LB ACTIVE on its VMs, the reason on the job.
    s.fake
        .inject_next(Op::CreateServer, Fault::Error { retryable: false })
        .await;
    lb.provisioning_status = ProvisioningStatus::PendingUpdate;
    let mut tx = s.store.begin().await.unwrap();
    tx.put_resource(&lb).await.unwrap();
    tx.enqueue_job(NewJob {
        loadbalancer_id: lb.id.to_string(),
        op: JobOp::Update,
        target_kind: klb_model::Kind::LoadBalancer,
        target_id: lb.id.to_string(),
        payload: Some(r#"{"action":"scale_out"}"#.into()),
    })
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(settled(&s, &lb).await, Some(ProvisioningStatus::Active));
    let jobs = s.store.jobs_of(&lb.id.to_string()).await.unwrap();
    assert!(
        jobs.iter().any(|j| j
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("create_vms"))),
        "the reason stays on the job: {jobs:?}"
    );
    assert_eq!(
        diff(
            &crate::support::count_ledger(&s.fake).await,
            &expected(&live)
        ),
        None,
        "the partial VM is reverted"
    );

    // Delete both (the ERROR one too).
    api_write(
        &s,
        &mut lb,
        ProvisioningStatus::PendingDelete,
        JobOp::Delete,
    )
    .await;
    api_write(
        &s,
        &mut bad,
        ProvisioningStatus::PendingDelete,
        JobOp::Delete,
    )
    .await;
    for l in [&lb, &bad] {
        let st = settled(&s, l).await;
        assert!(
            matches!(st, None | Some(ProvisioningStatus::Deleted)),
            "{st:?}"
        );
    }
    assert!(
        s.fake.ledger().await.is_empty(),
        "{:?}",
        s.fake.ledger().await
    );

    let _ = stop_tx.send(true);
    p.await.unwrap().unwrap();
    w.await.unwrap().unwrap();
}
