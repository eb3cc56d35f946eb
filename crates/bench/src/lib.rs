//! Benchmarks for klb, as libraries behind `klb bench`. `api` drives any Octavia-compatible
//! Load Balancer v2 endpoint (klb or Octavia itself) with bounded concurrent clients and reports
//! ops/s, p50/p99 and errors per operation, next to a same-run baseline (`GET /`) so results
//! from a shared, noisy machine can still be compared as ratios. `rss` samples the server's
//! memory from `/proc`. `reliability` is the reliability suite (concurrent mixed workload,
//! fuzzing, PostgreSQL outage) against servers it starts itself. Results are plain serde types written as JSON by the CLI.

#![warn(missing_docs)]
pub mod api;
pub mod reliability;
pub mod rss;
pub mod stats;

pub use api::{ApiBenchConfig, ApiBenchReport, ConcurrencyRun, FailedLevel};
pub use rss::{RssPeak, RssSampler};
pub use stats::OpStats;

/// Why a benchmark could not run (a failed single operation is counted, not an error).
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A bad option.
    #[error("invalid benchmark configuration: {0}")]
    Config(String),
    /// The HTTP client could not be built.
    #[error("could not build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    /// Preparing the run failed (the message says what).
    #[error("benchmark setup failed: {0}")]
    Setup(String),
}
