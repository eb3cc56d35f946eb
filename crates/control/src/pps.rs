//! The local alarm evaluator's packet-rate source: klb's own heartbeat statistics. Agents report
//! cumulative connection counters; the rate between two reads is the LB's new connections per
//! second, which stands in for Ceilometer's packet rate on the local cloud (one request per
//! connection in the demo's load, so the two move together).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use klb_health::Reports;
use klb_local::PpsSource;
use tokio::sync::Mutex;

/// Connection rate per load balancer from the latest heartbeats.
#[derive(Debug, Clone)]
pub struct HeartbeatRate {
    reports: Reports,
    last: Arc<Mutex<HashMap<String, (Instant, u64)>>>,
}

impl HeartbeatRate {
    /// A source over `reports`.
    pub fn new(reports: Reports) -> Self {
        HeartbeatRate {
            reports,
            last: Arc::default(),
        }
    }

    /// Total connections the LB's VMs reported so far.
    pub async fn total_connections(&self, lb_id: &str) -> Option<u64> {
        let snapshot = self.reports.snapshot().await;
        let vms = snapshot.get(lb_id)?;
        Some(
            vms.values()
                .flat_map(|r| r.heartbeat.stats.listeners.iter())
                .map(|l| l.counters.total_connections)
                .sum(),
        )
    }
}

#[async_trait]
impl PpsSource for HeartbeatRate {
    async fn pps(&self, lb_id: &str, _server_ids: &[String]) -> Option<u64> {
        let total = self.total_connections(lb_id).await?;
        let now = Instant::now();
        let mut last = self.last.lock().await;
        let previous = last.insert(lb_id.to_owned(), (now, total));
        let (then, before) = previous?;
        let secs = now.duration_since(then).as_secs_f64();
        if secs <= 0.0 {
            return None;
        }
        Some((total.saturating_sub(before) as f64 / secs) as u64)
    }
}
