//! Shared test harness: a temporary SQLite database, the fake cloud with three networks, the
//! LB engine, workers that can be crashed, and the ledger check.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use klb_cloud::fake::{FakeCloud, Kind, LedgerEntry};
use klb_cloud::names;
use klb_flow::lb::{self, LbConfig, LbEnv, LbInput, ListenerPort, VipSpec, fake::FakeBackend};
use klb_flow::{Db, Engine, EngineConfig, RunRecord, RunRequest, RunState};
use klb_test_support::db::TestDb;
use tokio::task::JoinHandle;

pub struct Harness {
    _dir: Option<tempfile::TempDir>,
    pub db: Db,
    pub fake: FakeCloud,
    pub backend: Arc<FakeBackend>,
    pub engine: Engine<LbEnv>,
    pub vip_net: String,
}

/// A running worker; `crash` aborts it without any cleanup (like kill -9).
pub struct RunningWorker {
    handle: Option<JoinHandle<()>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl RunningWorker {
    pub fn crash(mut self) {
        if let Some(h) = self.handle.take() {
            h.abort();
        }
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(h) = self.handle.take() {
            let _ = h.await;
        }
    }
}

impl Drop for RunningWorker {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.abort();
        }
    }
}

impl Harness {
    /// On PostgreSQL in a fresh schema (when `KLB_TEST_POSTGRES_URL` is set), dropped with the
    /// returned [`TestDb`].
    pub async fn new_pg() -> Option<(Harness, TestDb)> {
        let schema = TestDb::postgres().await?;
        let db = Db::connect(schema.url())
            .await
            .expect("connect to PostgreSQL");
        Some((
            Self::with_db(db, None, EngineConfig::for_tests()).await,
            schema,
        ))
    }

    pub async fn new() -> Harness {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("flow.db").display());
        let db = Db::connect(&url).await.expect("open sqlite");
        Self::with_db(db, Some(dir), EngineConfig::for_tests()).await
    }

    pub async fn with_db(db: Db, dir: Option<tempfile::TempDir>, config: EngineConfig) -> Harness {
        db.migrate().await.expect("migrate");
        let fake = FakeCloud::new();
        fake.add_network("lb-mgmt-net", "198.18.4.0/22".parse().unwrap())
            .await;
        fake.add_network("lb-l3-net", "198.18.8.0/22".parse().unwrap())
            .await;
        let (vip_net, _) = fake
            .add_network("vip-net", "198.18.16.0/22".parse().unwrap())
            .await;
        let backend = Arc::new(FakeBackend::new());
        let env = LbEnv {
            cloud: fake.cloud(),
            config: LbConfig::example("lb-mgmt-net", "lb-l3-net"),
            backend: backend.clone(),
            graphs: Default::default(),
        };
        let engine = Engine::new(
            db.clone(),
            Arc::new(env),
            lb::flows_with(lb::FlowTiming::fast()),
            config,
        );
        Harness {
            _dir: dir,
            db,
            fake,
            backend,
            engine,
            vip_net,
        }
    }

    pub fn start_worker(&self, concurrency: usize) -> RunningWorker {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let worker = self.engine.worker(concurrency);
        let handle = tokio::spawn(async move {
            let _ = worker
                .run(async {
                    let _ = rx.await;
                })
                .await;
        });
        RunningWorker {
            handle: Some(handle),
            stop: Some(tx),
        }
    }

    pub fn create_input(&self, lb_id: &str, ports: &[u16], vms: u32) -> LbInput {
        LbInput::create(
            lb_id,
            VipSpec {
                network_id: self.vip_net.clone(),
                subnet_id: None,
                address: None,
            },
            ports.iter().map(|&p| ListenerPort::tcp(p)).collect(),
            vms,
        )
    }

    pub async fn submit(&self, req: RunRequest) -> String {
        self.engine.submit(req).await.expect("submit")
    }

    /// Submit, run one worker until the run is final, stop the worker.
    pub async fn run(&self, req: RunRequest) -> RunRecord {
        let id = self.submit(req).await;
        let w = self.start_worker(4);
        let run = self.wait(&id).await;
        w.stop().await;
        run
    }

    pub async fn wait(&self, id: &str) -> RunRecord {
        self.engine
            .wait(id, Duration::from_secs(30))
            .await
            .expect("run finishes (never stuck)")
    }

    /// Wait until `op` was called at least `n` times (bounded by 30 s: generous, because the
    /// machine is shared and this is a liveness bound, not a timing assertion).
    pub async fn wait_calls(&self, op: klb_cloud::fake::Op, n: u32) -> bool {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while tokio::time::Instant::now() < deadline {
            if self.fake.calls(op).await >= n {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        false
    }

    /// The ledger, as (kind, name) pairs with their counts.
    pub async fn ledger_names(&self) -> BTreeMap<(Kind, String), usize> {
        count(self.fake.ledger().await)
    }
}

/// The ledger of a fake cloud as (kind, name) counts.
pub async fn count_ledger(fake: &FakeCloud) -> BTreeMap<(Kind, String), usize> {
    count(fake.ledger().await)
}

fn count(entries: Vec<LedgerEntry>) -> BTreeMap<(Kind, String), usize> {
    let mut m = BTreeMap::new();
    for e in entries {
        *m.entry((e.kind, e.name)).or_insert(0) += 1;
    }
    m
}

/// A live LB as the ledger must show it.
#[derive(Debug, Clone, Copy)]
pub struct LiveLb<'a> {
    pub lb_id: &'a str,
    pub vms: u32,
    pub listeners: usize,
}

/// Exactly the resources of these live LBs, each once.
pub fn expected(lbs: &[LiveLb<'_>]) -> BTreeMap<(Kind, String), usize> {
    let mut m = BTreeMap::new();
    for lb in lbs {
        let sg = names::security_group(lb.lb_id);
        m.insert((Kind::SecurityGroup, sg.clone()), 1);
        // listeners + agent port from mgmt + BGP + BFD + HAProxy peers + SSH and agent from
        // the office + all egress.
        m.insert(
            (Kind::SecurityGroupRule, format!("{sg}/rule")),
            lb.listeners + 7,
        );
        m.insert((Kind::Port, names::vip_port(lb.lb_id)), 1);
        m.insert((Kind::ServerGroup, names::server_group(lb.lb_id)), 1);
        m.insert((Kind::Alarm, names::alarm(lb.lb_id)), 1);
        for i in 0..lb.vms {
            let s = names::server(lb.lb_id, i);
            m.insert((Kind::Server, s.clone()), 1);
            m.insert((Kind::Port, format!("{s}/nic0")), 1);
            m.insert((Kind::Port, format!("{s}/nic1")), 1);
        }
    }
    m
}

/// Expected end of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    Completed,
    Failed,
}

impl End {
    pub fn of(run: &RunRecord) -> Option<End> {
        match run.state {
            RunState::Completed => Some(End::Completed),
            RunState::Failed => Some(End::Failed),
            _ => None,
        }
    }
}

/// Compare the ledger with the expectation; a readable diff on mismatch.
pub fn diff(
    got: &BTreeMap<(Kind, String), usize>,
    want: &BTreeMap<(Kind, String), usize>,
) -> Option<String> {
    if got == want {
        return None;
    }
    let mut out = Vec::new();
    for (k, n) in got {
        if want.get(k) != Some(n) {
            out.push(format!("extra/wrong {k:?} x{n} (want {:?})", want.get(k)));
        }
    }
    for (k, n) in want {
        if !got.contains_key(k) {
            out.push(format!("missing {k:?} x{n}"));
        }
    }
    Some(out.join("; "))
}

pub const LB: &str = "lb-1";
