//! PostgreSQL stopped and restarted under load: the mixed workload runs against `klb serve`
//! on the suite's own cluster; the cluster gets a fast shutdown (SIGINT to the postmaster,
//! which ends every session) after `before`, stays down for `down`, is started again and the
//! load goes on for `after`. Every request that overlaps the outage must be answered within
//! `response_bound`, with a 503 or (the database came back while it waited) success, never a
//! 500 or no answer; an outage longer than the bound must show 503s; from `recovery_bound`
//! after the restart every request must succeed again; then nothing may be stuck or lost.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::client::{Client, Counts, sample};
use super::mix::{self, Event, MixConfig, MixReport, round3};
use super::procs::Postgres;

/// Timeline and bounds of the outage.
#[derive(Debug, Clone)]
pub struct OutageConfig {
    /// Concurrent clients.
    pub clients: usize,
    /// Load before PostgreSQL stops.
    pub before: Duration,
    /// How long PostgreSQL stays down.
    pub down: Duration,
    /// Load after PostgreSQL is back.
    pub after: Duration,
    /// Longest acceptable wait for an answer while the database is down.
    pub response_bound: Duration,
    /// From the restart until every request must succeed again.
    pub recovery_bound: Duration,
    /// How long objects may stay `PENDING_*` after the load stops.
    pub settle_timeout: Duration,
    /// Random seed (a run is reproducible from it).
    pub seed: u64,
}

/// What the outage did to the API.
#[derive(Debug, Clone, Default, Serialize)]
pub struct OutageReport {
    /// Concurrent clients.
    pub clients: usize,
    /// Seconds the postmaster took to stop, and was down (stopped until accepting again).
    pub stop_s: f64,
    /// How long PostgreSQL was down, seconds.
    pub down_s: f64,
    /// Answers of requests that ended before the stop, that overlapped the outage (from the
    /// stop to the restart), that started after the restart.
    pub before: Counts,
    /// Answers while PostgreSQL was down.
    pub during: Counts,
    /// Answers after PostgreSQL came back.
    pub after: Counts,
    /// Statuses of requests that overlapped the outage (0: no answer).
    pub during_statuses: BTreeMap<u16, u64>,
    /// Slowest answer to a request that overlapped the outage.
    pub during_max_ms: f64,
    /// 5xx other than 503 anywhere in the run.
    pub non_503_server_errors: u64,
    /// From accepting connections again to the end of the first successful request.
    pub recovered_after_s: Option<f64>,
    /// Failed requests started later than `recovery_bound` after the restart.
    pub failures_after_recovery: u64,
    /// The read-back after the load (settle, lost writes, deletes).
    pub mix: MixReport,
}

impl OutageReport {
    /// What breaks the suite's rules, as messages prefixed with `what` (empty: passed).
    pub fn failures(&self, config: &OutageConfig) -> Vec<String> {
        let mut out = Vec::new();
        if self.non_503_server_errors > 0 {
            out.push(format!(
                "outage: {} 5xx answers other than 503",
                self.non_503_server_errors
            ));
        }
        let transport = self.before.transport + self.during.transport + self.after.transport;
        if transport > 0 {
            out.push(format!("outage: {transport} requests got no answer"));
        }
        if self.during.total() == 0 {
            out.push("outage: no request overlapped the outage".into());
        } else if self.during.server_error == 0 && self.down_s > config.response_bound.as_secs_f64()
        {
            // Shorter outages may be bridged: requests wait for a connection and succeed.
            out.push("outage: no 503 while PostgreSQL was down".into());
        }
        if self.during_max_ms > config.response_bound.as_secs_f64() * 1000.0 {
            out.push(format!(
                "outage: an answer took {} ms while PostgreSQL was down (bound {} ms)",
                self.during_max_ms,
                config.response_bound.as_millis()
            ));
        }
        if self.recovered_after_s.is_none() {
            out.push("outage: no request succeeded after the restart".into());
        }
        if self.failures_after_recovery > 0 {
            out.push(format!(
                "outage: {} requests failed later than {} s after the restart",
                self.failures_after_recovery,
                config.recovery_bound.as_secs()
            ));
        }
        // The load's own 5xx are the outage's 503s: only the read-back and statuses count.
        let mut verify = self.mix.clone();
        verify.ops.clear();
        out.extend(verify.failures("outage read-back"));
        out
    }
}

/// Runs the outage against a server on `pg`.
pub async fn run(client: &Client, pg: &mut Postgres, config: &OutageConfig) -> OutageReport {
    let mix_config = MixConfig {
        clients: config.clients,
        duration: config.before + config.down + config.after,
        settle_timeout: config.settle_timeout,
        projects: 4,
        max_lbs_per_client: 4,
        seed: config.seed,
    };
    let projects = mix::project_ids(mix_config.projects, config.seed ^ 0x0a7a);
    let load = {
        let (client, mix_config, projects) = (client.clone(), mix_config.clone(), projects.clone());
        tokio::spawn(async move { mix::load(&client, &mix_config, &projects).await })
    };
    tokio::time::sleep(config.before).await;
    let stop_begin = Instant::now();
    tokio::task::block_in_place(|| pg.stop());
    let stopped = Instant::now();
    tokio::time::sleep(config.down).await;
    let restart = tokio::task::block_in_place(|| pg.start());
    let up = Instant::now();
    let mut report = OutageReport {
        clients: config.clients,
        stop_s: round3((stopped - stop_begin).as_secs_f64()),
        down_s: round3((up - stopped).as_secs_f64()),
        ..OutageReport::default()
    };
    let (mut mix_report, ledger, events) = match load.await {
        Ok(x) => x,
        Err(e) => {
            report.mix.failure_samples.push(format!("load task: {e}"));
            report.mix.lost_writes = 1;
            return report;
        }
    };
    if let Err(e) = restart {
        sample(&mut mix_report.failure_samples, format!("restart: {e}"));
    }
    classify(&mut report, &events, stop_begin, up, config.recovery_bound);
    mix::settle_and_verify(client, &mix_config, &projects[0], &ledger, &mut mix_report).await;
    report.mix = mix_report;
    report
}

fn classify(
    report: &mut OutageReport,
    events: &[Event],
    stop_begin: Instant,
    up: Instant,
    recovery_bound: Duration,
) {
    let as_reply = |e: &Event| match e.status {
        Some(status) => super::client::Reply::Http {
            status,
            body: bytes::Bytes::new(),
            latency: e.latency,
        },
        None => super::client::Reply::Transport {
            error: String::new(),
            latency: e.latency,
        },
    };
    let mut first_ok: Option<Instant> = None;
    for e in events {
        let end = e.start + e.latency;
        if e.status.is_some_and(|s| s >= 500 && s != 503 && s != 501) {
            report.non_503_server_errors += 1;
        }
        if end <= stop_begin {
            report.before.add(&as_reply(e));
        } else if e.start < up {
            // Overlaps the outage: waited for the database, then 503 or (it came back in
            // time) success.
            report.during.add(&as_reply(e));
            *report
                .during_statuses
                .entry(e.status.unwrap_or(0))
                .or_default() += 1;
            report.during_max_ms = report
                .during_max_ms
                .max(round3(e.latency.as_secs_f64() * 1000.0));
        } else {
            report.after.add(&as_reply(e));
            if e.status.is_some_and(|s| (200..300).contains(&s)) {
                first_ok = Some(first_ok.map_or(end, |f| f.min(end)));
            }
            if e.start >= up + recovery_bound && e.status.is_none_or(|s| s >= 500 && s != 501) {
                report.failures_after_recovery += 1;
            }
        }
    }
    report.recovered_after_s =
        first_ok.map(|t| round3(t.saturating_duration_since(up).as_secs_f64()));
}
