//! `klb load`: a bounded HTTP load generator used by `klb demo` and the end-to-end tests from
//! inside the client namespace. Each request uses a new TCP connection, so ECMP hashes every
//! request afresh. Prints one JSON report on stdout.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use serde::Serialize;

/// Arguments of `klb load`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// URL to request (GET).
    #[arg(long)]
    pub url: String,
    /// Number of requests (bounded).
    #[arg(long, default_value_t = 200)]
    pub count: u32,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 4)]
    pub concurrency: u32,
    /// Start one request every this many milliseconds instead of back-to-back (probe mode).
    #[arg(long)]
    pub interval_ms: Option<u64>,
    /// Per-request timeout.
    #[arg(long, default_value_t = 2000)]
    pub timeout_ms: u64,
    /// Hard bound on the whole run.
    #[arg(long, default_value_t = 60)]
    pub max_seconds: u64,
    /// Response header whose values are counted (which member answered).
    #[arg(long, default_value = "x-backend")]
    pub count_header: String,
}

/// The JSON report.
#[derive(Debug, Serialize)]
pub struct Report {
    pub requests: u32,
    pub ok: u32,
    pub failed: u32,
    /// Requests per value of `count_header`.
    pub by_header: BTreeMap<String, u32>,
    /// Failure kinds (status code or error class) and their counts.
    pub errors: BTreeMap<String, u32>,
    /// Start times (Unix ms) of failed requests, for failover timelines.
    pub failed_at_ms: Vec<u64>,
    pub started_at_ms: u64,
    pub finished_at_ms: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

struct Outcome {
    started_at_ms: u64,
    latency: Duration,
    result: Result<Option<String>, String>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let report = runtime.block_on(drive(args))?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

async fn drive(args: Args) -> anyhow::Result<Report> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_millis(args.timeout_ms))
        .build()
        .context("building HTTP client")?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.max_seconds);
    let semaphore =
        std::sync::Arc::new(tokio::sync::Semaphore::new(args.concurrency.max(1) as usize));
    let mut tasks = tokio::task::JoinSet::new();
    let started_at_ms = now_ms();
    let schedule_start = tokio::time::Instant::now();
    for i in 0..args.count {
        if tokio::time::Instant::now() >= deadline {
            break;
        }
        if let Some(interval) = args.interval_ms {
            // On a fixed schedule from the start (request i at i × interval), so timer
            // slack on a busy machine does not lower the average rate.
            let at = schedule_start + Duration::from_millis(interval.saturating_mul(u64::from(i)));
            tokio::time::sleep_until(at).await;
        }
        let permit = semaphore.clone().acquire_owned().await?;
        let client = client.clone();
        let url = args.url.clone();
        let header = args.count_header.clone();
        tasks.spawn(async move {
            let started_at_ms = now_ms();
            let start = std::time::Instant::now();
            let result = request(&client, &url, &header).await;
            drop(permit);
            Outcome {
                started_at_ms,
                latency: start.elapsed(),
                result,
            }
        });
    }
    let mut report = Report {
        requests: 0,
        ok: 0,
        failed: 0,
        by_header: BTreeMap::new(),
        errors: BTreeMap::new(),
        failed_at_ms: Vec::new(),
        started_at_ms,
        finished_at_ms: 0,
        p50_ms: 0.0,
        p99_ms: 0.0,
    };
    let mut latencies = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let outcome = joined?;
        report.requests += 1;
        latencies.push(outcome.latency.as_secs_f64() * 1000.0);
        match outcome.result {
            Ok(value) => {
                report.ok += 1;
                let key = value.unwrap_or_else(|| "-".to_owned());
                *report.by_header.entry(key).or_default() += 1;
            }
            Err(kind) => {
                report.failed += 1;
                report.failed_at_ms.push(outcome.started_at_ms);
                *report.errors.entry(kind).or_default() += 1;
            }
        }
    }
    report.failed_at_ms.sort_unstable();
    latencies.sort_by(f64::total_cmp);
    report.p50_ms = percentile(&latencies, 0.50);
    report.p99_ms = percentile(&latencies, 0.99);
    report.finished_at_ms = now_ms();
    Ok(report)
}

async fn request(
    client: &reqwest::Client,
    url: &str,
    header: &str,
) -> Result<Option<String>, String> {
    let response = client.get(url).send().await.map_err(|e| {
        if e.is_timeout() {
            "timeout".to_owned()
        } else if e.is_connect() {
            "connect".to_owned()
        } else {
            "transport".to_owned()
        }
    })?;
    let status = response.status();
    let value = response
        .headers()
        .get(header)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    // Read the body so a reset mid-body counts as a failure.
    response.bytes().await.map_err(|_| "body".to_owned())?;
    if status.is_success() {
        Ok(value)
    } else {
        Err(status.as_u16().to_string())
    }
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[idx]
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
