//! How often one job reads the load balancer's graph, stage by stage: the pump (claim →
//! run submitted), the run (its steps, up to the agent push) and the settlement (the finish
//! hook). Counted from sqlx's own statement events, so every read of the `resources` table
//! counts whoever makes it. Alone in its test binary: the subscriber is process-wide (the
//! SQLite driver runs statements on its own thread, outside any task's subscriber).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use klb_certs::NoopCertManager;
use klb_control::desired::DataPlane;
use klb_control::store_backend::StoreBackend;
use klb_flow::jobs::{JobPump, SettleJobs};
use klb_flow::lb::{self, LbConfig, LbEnv};
use klb_flow::{Db, Engine, EngineConfig, FinishHook, FlowError, RunRecord};
use klb_model::*;
use klb_store::{JobOp, JobState, NewJob, Store};
use klb_test_support::fixtures;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};

/// SELECTs on `resources` seen so far.
static READS: AtomicUsize = AtomicUsize::new(0);

/// Counts sqlx's statement events that read documents.
struct CountReads;

#[derive(Default)]
struct Sql(String);

impl Visit for Sql {
    fn record_str(&mut self, field: &Field, value: &str) {
        if matches!(field.name(), "summary" | "db.statement") {
            self.0.push_str(value);
            self.0.push(' ');
        }
    }

    fn record_debug(&mut self, _: &Field, _: &dyn std::fmt::Debug) {}
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for CountReads {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        if event.metadata().target() != "sqlx::query" {
            return;
        }
        let mut sql = Sql::default();
        event.record(&mut sql);
        let sql = sql.0.to_ascii_lowercase();
        if sql.trim_start().starts_with("select") && sql.contains("from resources") {
            READS.fetch_add(1, Ordering::SeqCst);
        }
    }
}

fn reads() -> usize {
    READS.load(Ordering::SeqCst)
}

/// The job settlement, marking where it starts.
struct MarkSettle {
    inner: SettleJobs,
    /// [`reads`] when the last settlement started.
    mark: Arc<AtomicUsize>,
}

#[async_trait]
impl FinishHook<LbEnv> for MarkSettle {
    async fn finished(&self, env: &LbEnv, run: &RunRecord) -> Result<(), FlowError> {
        self.mark.store(reads(), Ordering::SeqCst);
        self.inner.finished(env, run).await
    }
}

fn load_balancer(vip_net: &str) -> LoadBalancer {
    LoadBalancer {
        vip_network_id: Some(vip_net.parse().unwrap()),
        ..fixtures::load_balancer("p1", ProvisioningStatus::PendingCreate)
    }
}

fn listener(lb: &LoadBalancer, port: u16) -> Listener {
    Listener {
        protocol_port: port,
        ..fixtures::listener(lb, ProvisioningStatus::PendingCreate)
    }
}

/// Reads of one job, by stage.
#[derive(Debug, PartialEq, Eq)]
struct Stages {
    pump: usize,
    run: usize,
    settle: usize,
}

struct Setup {
    _dir: tempfile::TempDir,
    store: Store,
    pump: JobPump,
    mark: Arc<AtomicUsize>,
    fake: klb_cloud::fake::FakeCloud,
    vip_net: String,
}

impl Setup {
    async fn new() -> Setup {
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
        let data_plane = DataPlane {
            base_as_number: 64_600,
            l3_router_as_number: 64_512,
            gateways: vec!["198.18.8.250".parse().unwrap()],
            bfd: true,
            default_maxconn: 10_000,
            peer_port: 1025,
            heartbeat_keys: None,
        };
        let env = LbEnv {
            cloud: fake.cloud(),
            config: LbConfig::example("lb-mgmt-net", "lb-l3-net"),
            backend: Arc::new(StoreBackend::new(
                store.clone(),
                data_plane,
                Arc::new(NoopCertManager),
            )),
            graphs: Default::default(),
        };
        let mark = Arc::new(AtomicUsize::new(usize::MAX));
        let engine = Engine::new(
            db,
            Arc::new(env),
            lb::flows_with(lb::FlowTiming::fast()),
            EngineConfig::for_tests(),
        )
        .with_finish_hook(Arc::new(MarkSettle {
            inner: SettleJobs {
                store: store.clone(),
            },
            mark: mark.clone(),
        }));
        let worker = engine.worker(2);
        tokio::spawn(worker.run(std::future::pending()));
        Setup {
            _dir: dir,
            pump: JobPump::new(store.clone(), engine, 2),
            store,
            mark,
            fake,
            vip_net,
        }
    }

    /// Claims and submits the one waiting job, waits until it settled; its reads by stage.
    async fn job(&self, lb: &LoadBalancer) -> Stages {
        let start = reads();
        assert!(self.pump.pump_once().await.unwrap(), "a job was waiting");
        let submitted = reads();
        let settled = loop {
            let jobs = self.store.jobs_of(&lb.id.to_string()).await.unwrap();
            if jobs.iter().all(|j| j.state == JobState::Failed) {
                assert!(jobs.is_empty(), "the job succeeded: {jobs:?}");
                break reads();
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let settle_start = self.mark.swap(usize::MAX, Ordering::SeqCst);
        assert_ne!(settle_start, usize::MAX, "settled by the hook");
        // The polling above reads `jobs`, never `resources`.
        Stages {
            pump: submitted - start,
            run: settle_start - submitted,
            settle: settled - settle_start,
        }
    }
}

#[tokio::test(flavor = "current_thread")]
async fn graph_reads_per_job_stage() {
    let subscriber = tracing_subscriber::registry().with(CountReads);
    tracing::subscriber::set_global_default(subscriber).unwrap();
    let s = Setup::new().await;

    // The LB: created by its flow (2 VMs, pushed an empty configuration).
    let mut lb = load_balancer(&s.vip_net);
    let mut tx = s.store.begin().await.unwrap();
    tx.put_resource(&lb).await.unwrap();
    tx.enqueue_job(NewJob {
        loadbalancer_id: lb.id.to_string(),
        op: JobOp::Create,
        target_kind: Kind::LoadBalancer,
        target_id: lb.id.to_string(),
        payload: None,
    })
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let create = s.job(&lb).await;

    // A listener create as the API writes it: the listener, the LB locked, one job.
    lb = s.store.get_resource(lb.id).await.unwrap().unwrap();
    assert_eq!(lb.provisioning_status, ProvisioningStatus::Active);
    lb.provisioning_status = ProvisioningStatus::PendingUpdate;
    let l = listener(&lb, 80);
    let mut tx = s.store.begin().await.unwrap();
    tx.put_resource(&lb).await.unwrap();
    tx.insert_resource(&l).await.unwrap();
    tx.enqueue_job(NewJob {
        loadbalancer_id: lb.id.to_string(),
        op: JobOp::Create,
        target_kind: Kind::Listener,
        target_id: l.id.to_string(),
        payload: None,
    })
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let listener_create = s.job(&lb).await;
    let stored: Listener = s.store.get_resource(l.id).await.unwrap().unwrap();
    assert_eq!(stored.provisioning_status, ProvisioningStatus::Active);
    // The handed-over graph is the one rendered: every VM serves the new listener.
    let servers = s
        .fake
        .cloud()
        .compute
        .find_servers(&klb_cloud::ServerFilter::lb(&lb.id.to_string()))
        .await
        .unwrap();
    assert_eq!(servers.len(), 2);
    for server in &servers {
        let state = s.fake.pushed_state(&server.id).await.expect("pushed");
        let ports: Vec<u16> = state.listeners.iter().map(|l| l.protocol_port).collect();
        assert_eq!(ports, [80], "{}", server.name);
    }

    eprintln!("reads per job: create {create:?}, listener create {listener_create:?}");
    // The pump reads the graph once and hands it to the push (the LB is locked), so the run
    // renders it without reading it again; the create run still reads the LB VM records it
    // rewrites (`record_vms`, `record_alarm`: two reads each). The settlement reads the
    // pending objects it writes, in its transaction.
    assert_eq!(
        create,
        Stages {
            pump: 1,
            run: 4,
            settle: 1
        }
    );
    assert_eq!(
        listener_create,
        Stages {
            pump: 1,
            run: 0,
            settle: 1
        }
    );
}
