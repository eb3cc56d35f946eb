//! Prints create-LB flows/s on the fake cloud at 0 and 50 ms per cloud call, concurrency 1 and
//! 50 (what `klb bench flows` runs). Usage: `cargo run --release -p klb-flow --example flow_bench [flows]`.

use std::time::Duration;

use klb_flow::bench::{FlowBench, run_flow_bench};

#[tokio::main]
async fn main() -> Result<(), klb_flow::FlowError> {
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
            let r = run_flow_bench(
                FlowBench {
                    flows: n,
                    concurrency,
                    cloud_latency: Duration::from_millis(latency_ms),
                    vms: 2,
                },
                None,
            )
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
