//! `klb bench flows`: create-LB flows per second on the fake cloud, end to end through the
//! engine (SQLite store in a temporary directory, leases, per-step commits).

use std::sync::Arc;
use std::time::{Duration, Instant};

use klb_cloud::fake::FakeCloud;

use crate::lb::{self, LbConfig, LbEnv, LbInput, ListenerPort, VipSpec, fake::FakeBackend};
use crate::{Db, Engine, EngineConfig, FlowError, RunState};

/// One bench configuration.
#[derive(Debug, Clone, Copy)]
pub struct FlowBench {
    /// Create-LB flows to run.
    pub flows: u32,
    /// Flows in flight at once (worker concurrency).
    pub concurrency: usize,
    /// Latency of every fake cloud call.
    pub cloud_latency: Duration,
    /// VMs per load balancer.
    pub vms: u32,
}

/// What one bench run measured.
#[derive(Debug, Clone)]
pub struct FlowBenchResult {
    /// What was run.
    pub config: FlowBench,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Flows that completed.
    pub completed: u32,
    /// Flows that failed.
    pub failed: u32,
    /// Cloud calls made in total.
    pub cloud_calls: u64,
}

impl FlowBenchResult {
    /// Completed flows per second.
    pub fn flows_per_sec(&self) -> f64 {
        self.completed as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Run create-LB flows on the fake cloud and measure throughput. `database_url` `None` uses a
/// fresh SQLite file in a temporary directory.
pub async fn run_flow_bench(
    bench: FlowBench,
    database_url: Option<&str>,
) -> Result<FlowBenchResult, FlowError> {
    let dir = tempfile::tempdir().map_err(|source| FlowError::Io {
        what: "temp dir",
        source,
    })?;
    let url = match database_url {
        Some(u) => u.to_string(),
        None => format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("bench.db").display()
        ),
    };
    let db = Db::connect(&url).await?;
    db.migrate().await?;
    let fake = FakeCloud::new();
    fake.add_network("lb-mgmt-net", "198.18.0.0/16".parse().expect("valid CIDR"))
        .await;
    fake.add_network("lb-l3-net", "198.19.0.0/17".parse().expect("valid CIDR"))
        .await;
    let (vip_net, _) = fake
        .add_network("vip-net", "198.19.128.0/17".parse().expect("valid CIDR"))
        .await;
    fake.set_latency(bench.cloud_latency).await;
    let env = LbEnv {
        cloud: fake.cloud(),
        config: LbConfig::example("lb-mgmt-net", "lb-l3-net"),
        backend: Arc::new(FakeBackend::new()),
    };
    let config = EngineConfig {
        poll_interval: Duration::from_millis(50),
        ..EngineConfig::default()
    };
    let engine = Engine::new(
        db,
        Arc::new(env),
        lb::flows_with(lb::FlowTiming::fast()),
        config,
    );
    let run_tag = uuid::Uuid::new_v4().simple().to_string();
    let start = Instant::now();
    let mut ids = Vec::with_capacity(bench.flows as usize);
    for i in 0..bench.flows {
        let input = LbInput::create(
            &format!("bench-{run_tag}-{i}"),
            VipSpec {
                network_id: vip_net.clone(),
                subnet_id: None,
                address: None,
            },
            vec![ListenerPort::tcp(80)],
            bench.vms,
        );
        ids.push(engine.submit(input.request(lb::FlowKind::CreateLb)).await?);
    }
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let worker = engine.worker(bench.concurrency);
    let handle = tokio::spawn(worker.run(async {
        let _ = stop_rx.await;
    }));
    let (mut completed, mut failed) = (0, 0);
    for id in &ids {
        match engine.wait(id, Duration::from_secs(600)).await?.state {
            RunState::Completed => completed += 1,
            _ => failed += 1,
        }
    }
    let elapsed = start.elapsed();
    let _ = stop_tx.send(());
    let _ = handle.await;
    Ok(FlowBenchResult {
        config: bench,
        elapsed,
        completed,
        failed,
        cloud_calls: fake.total_calls().await,
    })
}
