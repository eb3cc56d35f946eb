//! `klb bench reliability` (issue 11): what a busy or hostile client and a failing database do
//! to `klb serve`. The suite starts its own servers (noauth, noop provider, free loopback
//! ports): one on SQLite and, when PostgreSQL's binaries are installed, one on a throwaway
//! cluster it `initdb`s in its work directory. Against each: the mixed workload ([`mix`]) and
//! the fuzzer ([`fuzz`]), with the server's RSS and log (panics) watched; on PostgreSQL also
//! the outage ([`outage`]). Everything is bounded by count and time; processes are stopped by
//! PID. The report lists every failed expectation in `failures` (empty: passed).

pub mod client;
pub mod fuzz;
pub mod mix;
pub mod outage;
pub mod procs;
mod rng;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde::Serialize;
use serde_json::{Value, json};

use crate::BenchError;
use crate::rss::{RssPeak, RssSampler, parse_status};
use client::Client;
use fuzz::{Fixture, FuzzConfig, FuzzReport};
use mix::{MixConfig, MixReport};
use outage::{OutageConfig, OutageReport};
use procs::{Postgres, Server};

/// Whether the PostgreSQL part runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PostgresMode {
    /// Never.
    Off,
    /// When `initdb` and `postgres` are found (otherwise the report says why not).
    Auto,
    /// Always; missing binaries are an error.
    Required,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct ReliabilityConfig {
    /// The `klb` binary started as `klb serve`.
    pub klb_bin: PathBuf,
    /// Databases, logs and the PostgreSQL cluster go here (must exist).
    pub work_dir: PathBuf,
    /// Concurrent clients.
    pub clients: usize,
    /// How long clients run.
    pub duration: Duration,
    /// How long objects may stay `PENDING_*` after the load stops.
    pub settle_timeout: Duration,
    /// Fuzz cases per database.
    pub fuzz_cases: u64,
    /// Fuzz time limit per database.
    pub fuzz_time: Duration,
    /// Whether and how to run on PostgreSQL.
    pub postgres: PostgresMode,
    /// Clients during the PostgreSQL outage.
    pub outage_clients: usize,
    /// Load before PostgreSQL stops.
    pub outage_before: Duration,
    /// How long PostgreSQL stays down.
    pub outage_down: Duration,
    /// Load after PostgreSQL is back.
    pub outage_after: Duration,
    /// Longest acceptable answer while PostgreSQL is down.
    pub response_bound: Duration,
    /// From PostgreSQL's restart until every request must succeed.
    pub recovery_bound: Duration,
    /// Allowed RSS growth of the server over the fuzz run, KiB.
    pub fuzz_rss_growth_kib: u64,
    /// Random seed (a run is reproducible from it).
    pub seed: u64,
}

impl ReliabilityConfig {
    /// The full suite's defaults (200 clients for 60 s).
    pub fn new(klb_bin: PathBuf, work_dir: PathBuf) -> ReliabilityConfig {
        ReliabilityConfig {
            klb_bin,
            work_dir,
            clients: 200,
            duration: Duration::from_secs(60),
            settle_timeout: Duration::from_secs(30),
            fuzz_cases: 20_000,
            fuzz_time: Duration::from_secs(120),
            postgres: PostgresMode::Auto,
            outage_clients: 50,
            outage_before: Duration::from_secs(5),
            outage_down: Duration::from_secs(20),
            outage_after: Duration::from_secs(15),
            response_bound: Duration::from_secs(15),
            recovery_bound: Duration::from_secs(5),
            fuzz_rss_growth_kib: 32 * 1024,
            seed: 1,
        }
    }

    fn validate(&self) -> Result<(), BenchError> {
        let bad = |m: &str| Err(BenchError::Config(m.to_string()));
        if self.clients == 0 || self.clients > 1000 {
            return bad("clients must be between 1 and 1000");
        }
        if self.outage_clients == 0 || self.outage_clients > 1000 {
            return bad("outage clients must be between 1 and 1000");
        }
        if self.duration > Duration::from_secs(3600) || self.fuzz_time > Duration::from_secs(3600) {
            return bad("durations must be at most an hour");
        }
        if self.fuzz_cases > 10_000_000 {
            return bad("fuzz cases must be at most 10000000");
        }
        Ok(())
    }
}

/// The JSON result file.
#[derive(Debug, Clone, Serialize)]
pub struct ReliabilityReport {
    /// Which tool wrote the file.
    pub tool: &'static str,
    /// Start time (RFC 3339).
    pub started_at: String,
    /// End time (RFC 3339).
    pub finished_at: String,
    /// Random seed (a run is reproducible from it).
    pub seed: u64,
    /// One entry per database.
    pub runs: Vec<DatabaseRun>,
    /// The PostgreSQL outage, if run.
    pub outage: Option<OutageReport>,
    /// Why the PostgreSQL part did not run.
    pub postgres_skipped: Option<String>,
    /// Every failed expectation (empty: the suite passed).
    pub failures: Vec<String>,
}

/// Mix and fuzz against one server.
#[derive(Debug, Clone, Serialize)]
pub struct DatabaseRun {
    /// `sqlite` or `postgresql`.
    pub database: String,
    /// The mixed-client phase.
    pub mix: MixReport,
    /// The fuzz phase.
    pub fuzz: FuzzReport,
    /// Server memory figures.
    pub rss: RssFigures,
    /// Log lines of the server that report a panic.
    pub panics: Vec<String>,
    /// The server still answered at the end.
    pub server_alive: bool,
}

/// The server's memory (KiB) at the phase boundaries, and its peaks.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RssFigures {
    /// RSS before the load, KiB.
    pub start_kib: u64,
    /// Peak RSS during the mixed clients.
    pub mix_peak: RssPeak,
    /// RSS after the mixed clients, KiB.
    pub after_mix_kib: u64,
    /// Peak RSS during fuzzing.
    pub fuzz_peak: RssPeak,
    /// RSS after fuzzing, KiB.
    pub after_fuzz_kib: u64,
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map(|t| parse_status(&t).0.unwrap_or(0))
        .unwrap_or(0)
}

impl ReliabilityReport {
    /// A short plain-text summary.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        for r in &self.runs {
            let m = &r.mix;
            out.push_str(&format!(
                "{}: mix {} clients {:.0} s: {} requests ({:.0}/s, p50 {:.1} ms, p99 {:.1} ms), \
                 {} LBs created, {} deleted, {} updates, {} children; settled in {:?} s; \
                 {} verified, {} lost, {} not deleted, {} stale reads\n",
                r.database,
                m.clients,
                m.duration_s,
                m.requests,
                m.requests_per_s,
                m.p50_ms,
                m.p99_ms,
                m.lbs_created,
                m.lbs_deleted,
                m.updates_acked,
                m.children_created,
                m.settle_s,
                m.verified,
                m.lost_writes,
                m.not_deleted,
                m.stale_reads
            ));
            let f = &r.fuzz;
            out.push_str(&format!(
                "{}: fuzz {} cases in {:.1} s, statuses {:?}; RSS {} -> {} KiB (mix peak {}), fuzz {} -> {} KiB (peak {}); {} panics\n",
                r.database, f.cases, f.elapsed_s, f.statuses, r.rss.start_kib,
                r.rss.after_mix_kib, r.rss.mix_peak.peak_rss_kib, r.rss.after_mix_kib,
                r.rss.after_fuzz_kib, r.rss.fuzz_peak.peak_rss_kib, r.panics.len()
            ));
        }
        if let Some(o) = &self.outage {
            out.push_str(&format!(
                "outage: {} clients, PostgreSQL down {:.1} s (stop took {:.2} s): while down {:?} \
                 (slowest {:.0} ms); first success {:?} s after the restart; {} failures later; \
                 read-back: {} verified, {} lost, {} stuck\n",
                o.clients,
                o.down_s,
                o.stop_s,
                o.during_statuses,
                o.during_max_ms,
                o.recovered_after_s,
                o.failures_after_recovery,
                o.mix.verified,
                o.mix.lost_writes,
                o.mix.stuck_pending
            ));
        }
        if let Some(why) = &self.postgres_skipped {
            out.push_str(&format!("postgresql: skipped ({why})\n"));
        }
        if self.failures.is_empty() {
            out.push_str("PASS\n");
        } else {
            for f in &self.failures {
                out.push_str(&format!("FAIL: {f}\n"));
            }
        }
        out
    }
}

/// Runs the suite.
pub async fn run(config: ReliabilityConfig) -> Result<ReliabilityReport, BenchError> {
    config.validate()?;
    let started_at = chrono::Utc::now().to_rfc3339();
    let mut report = ReliabilityReport {
        tool: "klb bench reliability",
        started_at,
        finished_at: String::new(),
        seed: config.seed,
        runs: Vec::new(),
        outage: None,
        postgres_skipped: None,
        failures: Vec::new(),
    };

    let sqlite_dir = config.work_dir.join("sqlite");
    std::fs::create_dir_all(&sqlite_dir)
        .map_err(|e| BenchError::Setup(format!("creating {}: {e}", sqlite_dir.display())))?;
    let url = format!("sqlite://{}/klb.db?mode=rwc", sqlite_dir.display());
    let mut server = Server::start(&config.klb_bin, &url, sqlite_dir.join("serve.log")).await?;
    let run = database_run(&config, &mut server, "sqlite").await?;
    drop(server);
    report.failures.extend(run_failures(&config, &run));
    report.runs.push(run);

    let bin_dir = match config.postgres {
        PostgresMode::Off => {
            report.postgres_skipped = Some("--postgres off".into());
            None
        }
        mode => match procs::find_postgres_bin_dir() {
            Some(d) => Some(d),
            None if mode == PostgresMode::Required => {
                return Err(BenchError::Setup(
                    "PostgreSQL's initdb/postgres not found (set KLB_POSTGRES_BIN_DIR)".into(),
                ));
            }
            None => {
                report.postgres_skipped =
                    Some("initdb/postgres not found (set KLB_POSTGRES_BIN_DIR)".into());
                None
            }
        },
    };
    if let Some(bin_dir) = bin_dir {
        let mut pg = Postgres::init(&bin_dir, &config.work_dir.join("postgresql"))?;
        let log = config.work_dir.join("postgresql-serve.log");
        let mut server = Server::start(&config.klb_bin, &pg.url(), log).await?;
        let run = database_run(&config, &mut server, "postgresql").await?;
        report.failures.extend(run_failures(&config, &run));
        report.runs.push(run);

        let outage_config = OutageConfig {
            clients: config.outage_clients,
            before: config.outage_before,
            down: config.outage_down,
            after: config.outage_after,
            response_bound: config.response_bound,
            recovery_bound: config.recovery_bound,
            settle_timeout: config.settle_timeout,
            seed: config.seed ^ 0xdead,
        };
        let client = client(&server.url)?;
        tracing::info!(
            clients = config.outage_clients,
            "PostgreSQL outage under load"
        );
        let outage = outage::run(&client, &mut pg, &outage_config).await;
        report.failures.extend(outage.failures(&outage_config));
        let panics = server.panics();
        if !panics.is_empty() {
            report
                .failures
                .push(format!("outage: {} panics in the server log", panics.len()));
        }
        if !server.is_running() {
            report.failures.push("outage: klb serve exited".into());
        }
        report.outage = Some(outage);
        drop(server);
        drop(pg);
    }
    report.finished_at = chrono::Utc::now().to_rfc3339();
    Ok(report)
}

fn client(url: &str) -> Result<Client, BenchError> {
    Client::new(url, Duration::from_secs(30)).map_err(BenchError::Client)
}

fn run_failures(config: &ReliabilityConfig, run: &DatabaseRun) -> Vec<String> {
    let db = &run.database;
    let mut out = run.mix.failures(&format!("{db} mix"));
    out.extend(run.fuzz.failures(&format!("{db} fuzz")));
    if !run.panics.is_empty() {
        out.push(format!(
            "{db}: {} panics in the server log",
            run.panics.len()
        ));
    }
    if !run.server_alive {
        out.push(format!("{db}: klb serve exited"));
    }
    let growth = run.rss.after_fuzz_kib.saturating_sub(run.rss.after_mix_kib);
    if growth > config.fuzz_rss_growth_kib {
        out.push(format!(
            "{db} fuzz: server RSS grew by {growth} KiB (budget {} KiB)",
            config.fuzz_rss_growth_kib
        ));
    }
    out
}

async fn database_run(
    config: &ReliabilityConfig,
    server: &mut Server,
    database: &str,
) -> Result<DatabaseRun, BenchError> {
    let client = client(&server.url)?;
    let pid = server.pid();
    let mut rss = RssFigures {
        start_kib: rss_kib(pid),
        ..RssFigures::default()
    };
    tracing::info!(database, clients = config.clients, "mixed workload");
    let sampler = RssSampler::start(pid, Duration::from_millis(100));
    let mix = mix::run(
        &client,
        &MixConfig {
            clients: config.clients,
            duration: config.duration,
            settle_timeout: config.settle_timeout,
            projects: 10,
            max_lbs_per_client: 5,
            seed: config.seed,
        },
    )
    .await;
    rss.mix_peak = sampler.stop().await;
    rss.after_mix_kib = rss_kib(pid);

    tracing::info!(database, cases = config.fuzz_cases, "fuzz");
    let fixture = fixture(&client, config.seed).await?;
    let sampler = RssSampler::start(pid, Duration::from_millis(100));
    let fuzz = fuzz::run(
        &client,
        &fixture,
        &FuzzConfig {
            cases: config.fuzz_cases,
            time_limit: config.fuzz_time,
            workers: 8,
            seed: config.seed,
        },
    )
    .await;
    rss.fuzz_peak = sampler.stop().await;
    // Memory the fuzz cases took must come back (bounded wait).
    let deadline = Instant::now() + Duration::from_secs(10);
    rss.after_fuzz_kib = rss_kib(pid);
    while rss.after_fuzz_kib > rss.after_mix_kib + config.fuzz_rss_growth_kib
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
        rss.after_fuzz_kib = rss_kib(pid);
    }
    let alive = server.is_running()
        && client
            .call(Method::GET, "/", None, &fixture.project, false)
            .await
            .status()
            == Some(200);
    Ok(DatabaseRun {
        database: database.to_string(),
        mix,
        fuzz,
        rss,
        panics: server.panics(),
        server_alive: alive,
    })
}

/// Creates `body` at `path` and waits (up to 30 s) until the fixture's LB is ACTIVE again.
async fn create(
    client: &Client,
    project: &str,
    lb: Option<&str>,
    path: &str,
    body: Value,
    key: &str,
) -> Result<String, BenchError> {
    let r = client
        .call(Method::POST, path, Some(&body), project, false)
        .await;
    let id = match (r.status(), r.json()[key]["id"].as_str()) {
        (Some(201), Some(id)) => id.to_string(),
        _ => {
            return Err(BenchError::Setup(format!(
                "fuzz fixture: POST {path}: {}",
                r.describe()
            )));
        }
    };
    let lb = lb.unwrap_or(&id).to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = client
            .call(
                Method::GET,
                &format!("/v2/lbaas/loadbalancers/{lb}"),
                None,
                project,
                false,
            )
            .await;
        if r.json()["loadbalancer"]["provisioning_status"] == "ACTIVE" {
            return Ok(id);
        }
        if Instant::now() > deadline {
            return Err(BenchError::Setup(format!(
                "fuzz fixture: LB {lb} not ACTIVE: {}",
                r.describe()
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One LB with a listener, pool, member, health monitor, L7 policy and rule.
async fn fixture(client: &Client, seed: u64) -> Result<Fixture, BenchError> {
    let project = format!("fuzz{:08x}", seed as u32);
    let p = project.as_str();
    let lb = create(
        client,
        p,
        None,
        "/v2/lbaas/loadbalancers",
        json!({"loadbalancer": {"name": "fuzz", "vip_subnet_id": "7c4cbf3e-4f2a-4c8d-9a51-3a2a3b0c0d01"}}),
        "loadbalancer",
    )
    .await?;
    let l = Some(lb.as_str());
    let listener = create(
        client,
        p,
        l,
        "/v2/lbaas/listeners",
        json!({"listener": {"loadbalancer_id": lb, "protocol": "HTTP", "protocol_port": 80}}),
        "listener",
    )
    .await?;
    let pool = create(
        client,
        p,
        l,
        "/v2/lbaas/pools",
        json!({"pool": {"listener_id": listener, "protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN"}}),
        "pool",
    )
    .await?;
    let member = create(
        client,
        p,
        l,
        &format!("/v2/lbaas/pools/{pool}/members"),
        json!({"member": {"address": "198.18.0.10", "protocol_port": 80}}),
        "member",
    )
    .await?;
    let health_monitor = create(
        client,
        p,
        l,
        "/v2/lbaas/healthmonitors",
        json!({"healthmonitor": {"pool_id": pool, "type": "HTTP", "delay": 5, "timeout": 3, "max_retries": 3}}),
        "healthmonitor",
    )
    .await?;
    let l7policy = create(
        client,
        p,
        l,
        "/v2/lbaas/l7policies",
        json!({"l7policy": {"listener_id": listener, "action": "REJECT"}}),
        "l7policy",
    )
    .await?;
    let l7rule = create(
        client,
        p,
        l,
        &format!("/v2/lbaas/l7policies/{l7policy}/rules"),
        json!({"rule": {"type": "PATH", "compare_type": "STARTS_WITH", "value": "/x"}}),
        "rule",
    )
    .await?;
    Ok(Fixture {
        project,
        lb,
        listener,
        pool,
        member,
        health_monitor,
        l7policy,
        l7rule,
    })
}
