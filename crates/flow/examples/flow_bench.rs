//! Prints create-LB flows/s on the fake cloud at 0 and 50 ms per cloud call, concurrency 1 and
//! 50, end to end through the engine (SQLite store in a temporary directory, leases, per-step
//! commits). Usage: `cargo run --release -p klb-flow --example flow_bench [flows]`.
//!
//! The bench lives here, not in the library, so `tempfile` stays a dev-dependency of klb-flow.

use std::sync::Arc;
use std::time::{Duration, Instant};

use klb_cloud::fake::FakeCloud;
use klb_flow::lb::{self, LbConfig, LbEnv, LbInput, ListenerPort, VipSpec, fake::FakeBackend};
use klb_flow::{Db, Engine, EngineConfig, RunState};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let flows: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200);
    for latency_ms in [0u64, 50] {
        for concurrency in [1usize, 50] {
            // At 50 ms per call a serial create takes ~2 s: keep that case short.
            let n = if latency_ms > 0 && concurrency == 1 {
                flows.min(10)
            } else {
                flows
            };
            let r = run_flow_bench(FlowBench {
                flows: n,
                concurrency,
                cloud_latency: Duration::from_millis(latency_ms),
                vms: 2,
            })
            .await?;
            println!(
                "latency {latency_ms:>2} ms  concurrency {concurrency:>2}  flows {n:>4}  completed {:>4}  failed {}  {:>8.1} flows/s  ({} cloud calls, {:.2} s)",
                r.completed,
                r.failed,
                r.flows_per_sec(),
                r.cloud_calls,
                r.elapsed.as_secs_f64()
            );
        }
    }
    Ok(())
}

/// One bench configuration.
#[derive(Debug, Clone, Copy)]
struct FlowBench {
    /// Create-LB flows to run.
    flows: u32,
    /// Flows in flight at once (worker concurrency).
    concurrency: usize,
    /// Latency of every fake cloud call.
    cloud_latency: Duration,
    /// VMs per load balancer.
    vms: u32,
}

/// What one bench run measured.
#[derive(Debug, Clone)]
struct FlowBenchResult {
    /// Wall time of the run.
    elapsed: Duration,
    /// Flows that completed.
    completed: u32,
    /// Flows that failed.
    failed: u32,
    /// Cloud calls made in total.
    cloud_calls: u64,
}

impl FlowBenchResult {
    /// Completed flows per second.
    fn flows_per_sec(&self) -> f64 {
        self.completed as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Run create-LB flows on the fake cloud and measure throughput, on a fresh SQLite file in a
/// temporary directory.
async fn run_flow_bench(bench: FlowBench) -> Result<FlowBenchResult, Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("bench.db").display()
    );
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
        graphs: Default::default(),
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
        elapsed,
        completed,
        failed,
        cloud_calls: fake.total_calls().await,
    })
}
