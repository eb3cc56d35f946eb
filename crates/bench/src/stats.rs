//! Latency samples -> throughput and percentiles.

use std::time::Duration;

use serde::Serialize;

/// The result of one measured operation (one phase at one concurrency).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct OpStats {
    /// Operations that completed successfully.
    pub ok: u64,
    /// Operations that failed (transport error or unexpected HTTP status).
    pub errors: u64,
    /// Wall-clock time of the phase, seconds.
    pub elapsed_s: f64,
    /// Successful operations per second of wall-clock time.
    pub ops_per_s: f64,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 99th percentile latency, ms.
    pub p99_ms: f64,
    /// Slowest request, ms.
    pub max_ms: f64,
    /// Mean latency, ms.
    pub mean_ms: f64,
    /// Up to a few error descriptions (status and start of the body), for diagnosis.
    pub error_samples: Vec<String>,
    /// True when the phase stopped on its time limit before `count` operations.
    pub hit_time_limit: bool,
}

/// Nearest-rank percentile (q in 0..=1) of sorted samples; 0 for no samples.
pub fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

impl OpStats {
    /// Builds the stats of a phase from its successful latencies, error count and wall time.
    pub fn from_samples(
        mut latencies: Vec<Duration>,
        errors: u64,
        error_samples: Vec<String>,
        elapsed: Duration,
        hit_time_limit: bool,
    ) -> OpStats {
        latencies.sort_unstable();
        let ok = latencies.len() as u64;
        let total: Duration = latencies.iter().sum();
        let elapsed_s = elapsed.as_secs_f64();
        OpStats {
            ok,
            errors,
            elapsed_s: (elapsed_s * 1000.0).round() / 1000.0,
            ops_per_s: if elapsed_s > 0.0 {
                (ok as f64 / elapsed_s * 100.0).round() / 100.0
            } else {
                0.0
            },
            p50_ms: ms(percentile(&latencies, 0.50)),
            p99_ms: ms(percentile(&latencies, 0.99)),
            max_ms: ms(latencies.last().copied().unwrap_or_default()),
            mean_ms: if ok > 0 { ms(total / ok as u32) } else { 0.0 },
            error_samples,
            hit_time_limit,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    #[test]
    fn percentile_nearest_rank() {
        let v: Vec<Duration> = (1..=100).map(d).collect();
        assert_eq!(percentile(&v, 0.50), d(50));
        assert_eq!(percentile(&v, 0.99), d(99));
        assert_eq!(percentile(&v, 1.0), d(100));
        assert_eq!(percentile(&v, 0.0), d(1));
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
        assert_eq!(percentile(&[d(7)], 0.99), d(7));
    }

    #[test]
    fn stats_from_unsorted_samples() {
        let s = OpStats::from_samples(
            vec![d(30), d(10), d(20), d(40)],
            2,
            vec!["HTTP 409".into()],
            Duration::from_secs(2),
            false,
        );
        assert_eq!(s.ok, 4);
        assert_eq!(s.errors, 2);
        assert_eq!(s.ops_per_s, 2.0);
        assert_eq!(s.p50_ms, 20.0);
        assert_eq!(s.p99_ms, 40.0);
        assert_eq!(s.max_ms, 40.0);
        assert_eq!(s.mean_ms, 25.0);
    }

    #[test]
    fn stats_without_samples_are_zero() {
        let s = OpStats::from_samples(vec![], 3, vec![], Duration::ZERO, true);
        assert_eq!(s.ok, 0);
        assert_eq!(s.ops_per_s, 0.0);
        assert_eq!(s.p99_ms, 0.0);
        assert!(s.hit_time_limit);
    }
}
