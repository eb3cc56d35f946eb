//! `klb bench api`: concurrent clients against any Octavia-compatible Load Balancer v2 endpoint.
//!
//! Per concurrency level C, in this order (each phase bounded by `count` and a time limit):
//! 1. `baseline_version_get`: `GET /` (the version document). Measured in the same run so every
//!    operation can also be reported relative to it: on a shared, noisy machine the ratio between
//!    two servers' relative figures is steadier than their absolute ones.
//! 2. `lb_create`: `count` POSTs of load balancers by C clients, back to back (Octavia's burst
//!    figure). One poller (a single extra client) watches the created LBs and records
//!    `lb_create_to_active` per LB and `lb_all_active_s` for the whole burst.
//! 3. `lb_show`: `count` GETs of those LBs.
//! 4. `lb_list`: with at least `list_size` LBs present (topped up, unmeasured), `count` GETs of the
//!    LB collection.
//! 5. `lb_create_to_active_isolated`: one client creates up to 20 LBs one at a time, each
//!    polled (GET) until ACTIVE: create -> ACTIVE without queueing behind a burst.
//! 6. `listener_create`: each client on its own LB, POST a listener, then wait until the LB is
//!    ACTIVE again before its next create (as Octavia requires: a PENDING LB answers 409).
//! 7. `member_create`: each client on its own pool (created unmeasured) on another LB than in
//!    the listener phase when enough LBs exist, same pattern.
//! 8. Child writes on distinct ACTIVE LBs, back to back (no waiting between POSTs):
//!    `listener_create_burst`, then `pool_create_burst`, then `member_create_burst` (a member of
//!    each of those pools). Op i goes to LB i mod n, n = min(`count`, LBs not used by phases
//!    6 and 7); with `count` ≤ n every op of a sub-phase writes to its own ACTIVE LB, so none
//!    meets a `PENDING_UPDATE` LB. All LBs are waited for (unmeasured) between the sub-phases.
//!    With `count` > n an op may meet its LB still pending: Octavia's 409 is then counted in
//!    `conflicts` (and among the op's errors).
//! 9. `lb_delete`: cascade-delete every LB this level created, then wait until they are gone.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use std::time::{Duration, Instant};
use tokio::sync::Mutex;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde_json::{Value, json};

use crate::BenchError;
use crate::rss::{RssPeak, RssSampler};
use crate::stats::OpStats;

/// What to run; see the module documentation for the phases.
#[derive(Debug, Clone)]
pub struct ApiBenchConfig {
    /// Root of the endpoint (the URL that serves the version document), e.g. `http://127.0.0.1:9876`.
    pub url: String,
    /// Concurrency levels, run one after the other.
    pub concurrency: Vec<usize>,
    /// Operations per measured phase.
    pub count: usize,
    /// Operations of the baseline phase (`GET /`).
    pub baseline_count: usize,
    /// LBs present during the list phase (topped up before it if fewer were created).
    pub list_size: usize,
    /// `X-Project-Id` header (klb and Octavia in noauth mode take the project from it).
    pub project_id: Option<String>,
    /// `X-Auth-Token` header (Keystone). Never logged nor written to the report.
    pub token: Option<String>,
    /// `vip_subnet_id` of the created LBs (noop/local clouds accept any UUID).
    pub vip_subnet_id: String,
    /// Server process whose memory is sampled (`/proc/<pid>/status`).
    pub server_pid: Option<u32>,
    /// Upper bound on the wall time of each measured phase.
    pub phase_time_limit: Duration,
    /// Upper bound on waiting for one LB to become ACTIVE (or gone).
    pub active_timeout: Duration,
    /// Per-request timeout.
    pub request_timeout: Duration,
    /// Interval between status polls while waiting for ACTIVE.
    pub poll_interval: Duration,
}

impl ApiBenchConfig {
    /// Defaults for everything but the URL.
    pub fn new(url: impl Into<String>) -> ApiBenchConfig {
        ApiBenchConfig {
            url: url.into(),
            concurrency: vec![8],
            count: 200,
            baseline_count: 2000,
            list_size: 200,
            project_id: None,
            token: None,
            vip_subnet_id: uuid::Uuid::new_v4().to_string(),
            server_pid: None,
            phase_time_limit: Duration::from_secs(120),
            active_timeout: Duration::from_secs(300),
            request_timeout: Duration::from_secs(60),
            poll_interval: Duration::from_millis(10),
        }
    }

    fn validate(&self) -> Result<(), BenchError> {
        let bad = |m: &str| Err(BenchError::Config(m.to_string()));
        if self.concurrency.is_empty() || self.concurrency.contains(&0) {
            return bad("concurrency must be one or more positive numbers");
        }
        if self.concurrency.iter().any(|&c| c > 1000) {
            return bad("concurrency above 1000 is not supported");
        }
        if self.count == 0 || self.count > 100_000 {
            return bad("count must be between 1 and 100000");
        }
        if self.list_size > 10_000 {
            return bad("list size must be at most 10000");
        }
        // Listener ports are 1000 + op index, member addresses 198.18.0.0/15 + op index.
        if self.count > 60_000 {
            return bad("count must be at most 60000 (listener ports)");
        }
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            return bad("url must start with http:// or https://");
        }
        Ok(())
    }
}

/// The JSON result file.
#[derive(Debug, Clone, Serialize)]
pub struct ApiBenchReport {
    /// Which tool wrote the file.
    pub tool: &'static str,
    /// The measured endpoint.
    pub url: String,
    /// Start time (RFC 3339).
    pub started_at: String,
    /// End time (RFC 3339).
    pub finished_at: String,
    /// Operations per measured phase.
    pub count: usize,
    /// Operations of the baseline phase (`GET /`).
    pub baseline_count: usize,
    /// LBs present during the list phase.
    pub list_size: usize,
    /// One entry per concurrency level.
    pub runs: Vec<ConcurrencyRun>,
    /// Levels that failed; the other levels still ran.
    pub failed_levels: Vec<FailedLevel>,
    /// Peak memory of `--server-pid` over the whole run.
    pub server_memory: Option<RssPeak>,
}

/// Results at one concurrency level.
#[derive(Debug, Clone, Serialize)]
pub struct ConcurrencyRun {
    /// Concurrent clients.
    pub concurrency: usize,
    /// `GET /` (the versions document): the same-run baseline every ratio divides by.
    pub baseline_version_get: OpStats,
    /// Keyed by operation: `lb_create`, `lb_create_to_active`,
    /// `lb_create_to_active_isolated` (one client, one LB at a time), `lb_show`, `lb_list`,
    /// `listener_create`, `listener_create_to_active`, `member_create`,
    /// `member_create_to_active`, `lb_delete`. `*_to_active` latencies run from the POST to the
    /// first poll that saw the LB ACTIVE (their ops_per_s is not a throughput).
    pub ops: BTreeMap<String, OpStats>,
    /// ops_per_s of each throughput operation divided by the baseline's ops_per_s.
    pub relative_to_baseline: BTreeMap<String, f64>,
    /// From the first LB POST until every created LB was seen ACTIVE.
    pub lb_all_active_s: Option<f64>,
    /// Items returned by one `GET /loadbalancers` during the list phase.
    pub list_items: usize,
    /// LBs of the list/top-up set that went to ERROR (not used for listener/member phases).
    pub lbs_in_error: usize,
    /// Distinct LBs the `*_create_burst` phases wrote to.
    pub burst_lbs: usize,
    /// HTTP 409 answers per operation (an LB still `PENDING_UPDATE`); also among its errors.
    pub conflicts: BTreeMap<String, u64>,
}

/// A concurrency level that could not complete (its LBs were removed).
#[derive(Debug, Clone, Serialize)]
pub struct FailedLevel {
    /// Concurrent clients.
    pub concurrency: usize,
    /// Why it failed.
    pub error: String,
}

/// LBs created one at a time for the isolated create -> ACTIVE latency.
pub const ISOLATED_CREATES: usize = 20;

/// Operations whose ops_per_s is a throughput (the `*_to_active` ones are latencies only).
pub const THROUGHPUT_OPS: [&str; 9] = [
    "lb_create",
    "lb_show",
    "lb_list",
    "listener_create",
    "member_create",
    "listener_create_burst",
    "pool_create_burst",
    "member_create_burst",
    "lb_delete",
];

impl ApiBenchReport {
    /// A plain-text table of the results (one line per operation and concurrency).
    pub fn summary_table(&self) -> String {
        let mut out = format!(
            "{:>5}  {:<26} {:>9} {:>6} {:>10} {:>10} {:>10} {:>9}\n",
            "conc", "operation", "ok", "errors", "ops/s", "p50 ms", "p99 ms", "x GET /"
        );
        for run in &self.runs {
            let mut line = |name: &str, s: &OpStats, rel: Option<f64>| {
                // A *_to_active row is a latency distribution, not a throughput.
                let rate = if name.contains("_to_active") {
                    "-".to_string()
                } else {
                    format!("{:.1}", s.ops_per_s)
                };
                out.push_str(&format!(
                    "{:>5}  {:<26} {:>9} {:>6} {:>10} {:>10.2} {:>10.2} {:>9}\n",
                    run.concurrency,
                    name,
                    s.ok,
                    s.errors,
                    rate,
                    s.p50_ms,
                    s.p99_ms,
                    rel.map(|r| format!("{r:.4}")).unwrap_or_default()
                ));
            };
            line("baseline GET /", &run.baseline_version_get, None);
            for (name, s) in &run.ops {
                line(name, s, run.relative_to_baseline.get(name).copied());
            }
            for (name, n) in run.conflicts.iter().filter(|(_, n)| **n > 0) {
                out.push_str(&format!(
                    "{:>5}  {name}: {n} HTTP 409 (LB still pending; among its errors)\n",
                    run.concurrency
                ));
            }
            if let Some(all) = run.lb_all_active_s {
                out.push_str(&format!(
                    "{:>5}  all {} LBs ACTIVE after {:.2} s\n",
                    run.concurrency,
                    run.ops.get("lb_create").map(|s| s.ok).unwrap_or(0),
                    all
                ));
            }
        }
        for f in &self.failed_levels {
            out.push_str(&format!("{:>5}  FAILED: {}\n", f.concurrency, f.error));
        }
        if let Some(m) = &self.server_memory {
            out.push_str(&format!(
                "server pid {}: peak RSS {:.1} MiB (VmHWM {:.1} MiB, {} samples)\n",
                m.pid,
                m.peak_rss_kib as f64 / 1024.0,
                m.vm_hwm_kib as f64 / 1024.0,
                m.samples
            ));
        }
        out
    }
}

/// Runs the whole benchmark. LBs it created are cascade-deleted also when a phase fails.
pub async fn run(config: ApiBenchConfig) -> Result<ApiBenchReport, BenchError> {
    config.validate()?;
    let api = Api::new(&config)?;
    let started_at = chrono::Utc::now().to_rfc3339();
    // Fail early (and clearly) when the endpoint is not there.
    api.request(Method::GET, "/", None, &[StatusCode::OK])
        .await
        .map_err(|e| BenchError::Setup(format!("GET {}/ failed: {e}", api.base)))?;

    let sampler = config
        .server_pid
        .map(|pid| RssSampler::start(pid, Duration::from_millis(100)));
    let mut runs = Vec::new();
    let mut failed_levels = Vec::new();
    for &c in &config.concurrency {
        let mut created = Created::default();
        let outcome = run_level(&api, &config, c, &mut created).await;
        match outcome {
            Ok(run) => {
                tracing::info!(concurrency = c, "level done");
                runs.push(run);
            }
            Err(err) => {
                tracing::warn!(concurrency = c, %err, "level failed; removing what it created");
                cleanup(&api, &config, &created).await;
                failed_levels.push(FailedLevel {
                    concurrency: c,
                    error: err.to_string(),
                });
            }
        }
    }
    let server_memory = match sampler {
        Some(s) => Some(s.stop().await),
        None => None,
    };
    Ok(ApiBenchReport {
        tool: "klb bench api",
        url: config.url.clone(),
        started_at,
        finished_at: chrono::Utc::now().to_rfc3339(),
        count: config.count,
        baseline_count: config.baseline_count,
        list_size: config.list_size,
        runs,
        failed_levels,
        server_memory,
    })
}

/// LBs created at one level (deleted at its end, or on failure).
#[derive(Default)]
struct Created {
    lbs: Vec<String>,
}

async fn cleanup(api: &Api, config: &ApiBenchConfig, created: &Created) {
    for id in &created.lbs {
        // Best effort: an LB still PENDING gets a 409; wait for it first.
        let _ = wait_lb_settled(api, config, id).await;
        if let Err(err) = api
            .request(
                Method::DELETE,
                &format!("/v2/lbaas/loadbalancers/{id}?cascade=true"),
                None,
                &[StatusCode::NO_CONTENT, StatusCode::NOT_FOUND],
            )
            .await
        {
            tracing::warn!(lb = %id, %err, "could not delete a benchmark LB");
        }
    }
}

async fn run_level(
    api: &Api,
    config: &ApiBenchConfig,
    c: usize,
    created: &mut Created,
) -> Result<ConcurrencyRun, BenchError> {
    let limit = config.phase_time_limit;
    let mut ops = BTreeMap::new();
    let run_tag = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();

    // 1. Baseline.
    tracing::info!(concurrency = c, "baseline GET /");
    let a = api.clone();
    let baseline = run_phase(c, config.baseline_count, limit, move |_, _| {
        let a = a.clone();
        async move { a.timed(Method::GET, "/", None, &[StatusCode::OK]).await }
    })
    .await
    .stats;

    // 2. LB create burst, with one poller recording create -> ACTIVE.
    tracing::info!(concurrency = c, count = config.count, "lb create");
    let watch = Arc::new(Watch::default());
    let poller = tokio::spawn(poll_until_active(
        api.clone(),
        watch.clone(),
        config.poll_interval.max(Duration::from_millis(5)),
        config.active_timeout,
    ));
    let burst_start = Instant::now();
    let (a, w, subnet, tag) = (
        api.clone(),
        watch.clone(),
        config.vip_subnet_id.clone(),
        run_tag.clone(),
    );
    let create = run_phase(c, config.count, limit, move |i, _| {
        let (a, w, subnet, tag) = (a.clone(), w.clone(), subnet.clone(), tag.clone());
        async move {
            let body = json!({"loadbalancer": {
                "name": format!("bench-{tag}-{i}"), "vip_subnet_id": subnet, "admin_state_up": true}});
            let start = Instant::now();
            let v = a
                .request(
                    Method::POST,
                    "/v2/lbaas/loadbalancers",
                    Some(&body),
                    &[StatusCode::CREATED],
                )
                .await?;
            let latency = start.elapsed();
            let id = id_of(&v, "loadbalancer")?;
            w.add(id.clone(), start).await;
            Ok(Sample {
                latency,
                to_active: None,
                id: Some(id),
            })
        }
    })
    .await;
    watch.burst_done.store(true, Ordering::Relaxed);
    created.lbs.extend(create.ids.iter().cloned());
    ops.insert("lb_create".to_string(), create.stats);
    let polled = poller
        .await
        .map_err(|e| BenchError::Setup(format!("poller task: {e}")))?;
    let lb_all_active_s = if polled.errors == 0 && polled.latencies.len() == create.ids.len() {
        polled
            .last_active
            .map(|t| (t - burst_start).as_secs_f64())
            .map(|s| (s * 1000.0).round() / 1000.0)
    } else {
        None
    };
    ops.insert(
        "lb_create_to_active".to_string(),
        OpStats::from_samples(
            polled.latencies,
            polled.errors,
            polled.error_samples,
            burst_start.elapsed(),
            false,
        ),
    );
    if created.lbs.is_empty() {
        return Err(BenchError::Setup(format!(
            "no load balancer could be created: {:?}",
            ops["lb_create"].error_samples
        )));
    }

    // 3. Show.
    tracing::info!(concurrency = c, "lb show");
    let ids = Arc::new(created.lbs.clone());
    let (a, ids2) = (api.clone(), ids.clone());
    let show = run_phase(c, config.count, limit, move |i, _| {
        let (a, ids) = (a.clone(), ids2.clone());
        async move {
            let id = &ids[i % ids.len()];
            a.timed(
                Method::GET,
                &format!("/v2/lbaas/loadbalancers/{id}"),
                None,
                &[StatusCode::OK],
            )
            .await
        }
    })
    .await;
    ops.insert("lb_show".to_string(), show.stats);

    // 4. List with at least list_size (and one per client) LBs present. Top-up is unmeasured.
    let want = config.list_size.max(c);
    let mut topped = 0usize;
    let mut usable: Vec<String> = Vec::new();
    let mut lbs_in_error = 0usize;
    // An LB that went to ERROR (Octavia does this under load) is kept for deletion, not used;
    // a few bounded rounds replace it.
    for _round in 0..3 {
        while created.lbs.len() < want + lbs_in_error {
            let body = json!({"loadbalancer": {
            "name": format!("bench-{run_tag}-fill-{topped}"), "vip_subnet_id": config.vip_subnet_id}});
            let v = api
                .request(
                    Method::POST,
                    "/v2/lbaas/loadbalancers",
                    Some(&body),
                    &[StatusCode::CREATED],
                )
                .await
                .map_err(|e| BenchError::Setup(format!("top-up LB create: {e}")))?;
            created
                .lbs
                .push(id_of(&v, "loadbalancer").map_err(BenchError::Setup)?);
            topped += 1;
        }
        usable.clear();
        lbs_in_error = 0;
        for id in &created.lbs {
            if wait_lb_settled(api, config, id)
                .await
                .map_err(BenchError::Setup)?
            {
                usable.push(id.clone());
            } else {
                lbs_in_error += 1;
            }
        }
        if usable.len() >= want {
            break;
        }
    }
    if usable.len() < c {
        return Err(BenchError::Setup(format!(
            "only {} of {} load balancers became ACTIVE ({lbs_in_error} in ERROR)",
            usable.len(),
            created.lbs.len()
        )));
    }
    tracing::info!(concurrency = c, lbs = created.lbs.len(), "lb list");
    let first = api
        .request(
            Method::GET,
            "/v2/lbaas/loadbalancers",
            None,
            &[StatusCode::OK],
        )
        .await
        .map_err(BenchError::Setup)?;
    let list_items = first
        .get("loadbalancers")
        .and_then(Value::as_array)
        .map(Vec::len)
        .unwrap_or(0);
    let a = api.clone();
    let list = run_phase(c, config.count, limit, move |_, _| {
        let a = a.clone();
        async move {
            a.timed(
                Method::GET,
                "/v2/lbaas/loadbalancers",
                None,
                &[StatusCode::OK],
            )
            .await
        }
    })
    .await;
    ops.insert("lb_list".to_string(), list.stats);

    // 4b. Isolated create -> ACTIVE: one client, one LB at a time, polling its show (Octavia's
    // "isolated create->ACTIVE" figure; the burst's figure above includes queueing).
    let isolated = config.count.min(ISOLATED_CREATES);
    tracing::info!(concurrency = c, isolated, "isolated lb create -> ACTIVE");
    let (a, cfg1, subnet, tag) = (
        api.clone(),
        Arc::new(config.clone()),
        config.vip_subnet_id.clone(),
        run_tag.clone(),
    );
    let iso = run_phase(1, isolated, limit, move |i, _| {
        let (a, cfg, subnet, tag) = (a.clone(), cfg1.clone(), subnet.clone(), tag.clone());
        async move {
            let body = json!({"loadbalancer": {
                "name": format!("bench-{tag}-iso-{i}"), "vip_subnet_id": subnet}});
            let start = Instant::now();
            let v = a
                .request(
                    Method::POST,
                    "/v2/lbaas/loadbalancers",
                    Some(&body),
                    &[StatusCode::CREATED],
                )
                .await?;
            let latency = start.elapsed();
            let id = id_of(&v, "loadbalancer")?;
            let waited = wait_lb_active(&a, &cfg, &id).await;
            match waited {
                Ok(()) => Ok(Sample {
                    latency,
                    to_active: Some(start.elapsed()),
                    id: Some(id),
                }),
                Err(e) => {
                    // Not ACTIVE (ERROR or timed out): remove it now, best effort.
                    let _ = a
                        .request(
                            Method::DELETE,
                            &format!("/v2/lbaas/loadbalancers/{id}?cascade=true"),
                            None,
                            &[StatusCode::NO_CONTENT],
                        )
                        .await;
                    Err(format!("{e} (id {id})"))
                }
            }
        }
    })
    .await;
    created.lbs.extend(iso.ids.iter().cloned());
    ops.insert(
        "lb_create_to_active_isolated".to_string(),
        iso.to_active_stats,
    );

    // 5. Listener create: client w works on LB w only, waiting for ACTIVE between its ops.
    tracing::info!(concurrency = c, "listener create");
    let own: Arc<Vec<String>> = Arc::new(usable[..c].to_vec());
    let (a, own2, cfg) = (api.clone(), own.clone(), Arc::new(config.clone()));
    let cfg2 = cfg.clone();
    let listener = run_phase(c, config.count, limit, move |i, worker| {
        let (a, own, cfg) = (a.clone(), own2.clone(), cfg2.clone());
        async move {
            let lb = &own[worker];
            let body = json!({"listener": {
                "loadbalancer_id": lb, "protocol": "HTTP", "protocol_port": 1000 + i}});
            let start = Instant::now();
            a.request(
                Method::POST,
                "/v2/lbaas/listeners",
                Some(&body),
                &[StatusCode::CREATED],
            )
            .await?;
            let latency = start.elapsed();
            wait_lb_active(&a, &cfg, lb).await?;
            Ok(Sample {
                latency,
                to_active: Some(start.elapsed()),
                id: None,
            })
        }
    })
    .await;
    ops.insert("listener_create".to_string(), listener.stats);
    ops.insert(
        "listener_create_to_active".to_string(),
        listener.to_active_stats,
    );

    // 6. Member create: client w on its own pool (on LB w), waiting for ACTIVE between ops.
    tracing::info!(concurrency = c, "member create");
    // Other LBs than the listener phase's when there are enough: an LB carrying count/C
    // listeners makes every member change slower on Octavia, which would skew the comparison.
    let own: Arc<Vec<String>> = if usable.len() >= 2 * c {
        Arc::new(usable[c..2 * c].to_vec())
    } else {
        own
    };
    let mut pools = Vec::with_capacity(c);
    for lb in own.iter() {
        let body = json!({"pool": {"loadbalancer_id": lb, "protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN"}});
        let v = api
            .request(
                Method::POST,
                "/v2/lbaas/pools",
                Some(&body),
                &[StatusCode::CREATED],
            )
            .await
            .map_err(|e| BenchError::Setup(format!("pool create: {e}")))?;
        pools.push(id_of(&v, "pool").map_err(BenchError::Setup)?);
        wait_lb_active(api, config, lb)
            .await
            .map_err(BenchError::Setup)?;
    }
    let pools = Arc::new(pools);
    let (a, own2, cfg2) = (api.clone(), own.clone(), cfg.clone());
    let member = run_phase(c, config.count, limit, move |i, worker| {
        let (a, own, pools, cfg) = (a.clone(), own2.clone(), pools.clone(), cfg2.clone());
        async move {
            let body = json!({"member": {"address": member_address(i), "protocol_port": 80}});
            let start = Instant::now();
            a.request(
                Method::POST,
                &format!("/v2/lbaas/pools/{}/members", pools[worker]),
                Some(&body),
                &[StatusCode::CREATED],
            )
            .await?;
            let latency = start.elapsed();
            wait_lb_active(&a, &cfg, &own[worker]).await?;
            Ok(Sample {
                latency,
                to_active: Some(start.elapsed()),
                id: None,
            })
        }
    })
    .await;
    ops.insert("member_create".to_string(), member.stats);
    ops.insert(
        "member_create_to_active".to_string(),
        member.to_active_stats,
    );

    // 7. Child writes back to back, each op on its own ACTIVE LB (those phases 5 and 6 left
    // alone: the isolated phase's LBs are ACTIVE too and make up for them).
    let mut spare: Vec<String> = usable
        .iter()
        .skip(2 * c)
        .chain(iso.ids.iter())
        .cloned()
        .collect();
    if spare.len() < config.count.min(usable.len()) {
        spare = usable.clone();
    }
    spare.truncate(config.count);
    let burst = child_burst(api, config, c, Arc::new(spare), &mut ops).await?;

    // 8. Delete everything this level created (cascade), then wait until it is gone.
    tracing::info!(concurrency = c, lbs = created.lbs.len(), "lb delete");
    for id in &created.lbs {
        wait_lb_settled(api, config, id)
            .await
            .map_err(BenchError::Setup)?;
    }
    let all = Arc::new(created.lbs.clone());
    let (a, all2) = (api.clone(), all.clone());
    let delete = run_phase(c, all.len(), limit, move |i, _| {
        let (a, all) = (a.clone(), all2.clone());
        async move {
            a.timed(
                Method::DELETE,
                &format!("/v2/lbaas/loadbalancers/{}?cascade=true", all[i]),
                None,
                &[StatusCode::NO_CONTENT],
            )
            .await
        }
    })
    .await;
    ops.insert("lb_delete".to_string(), delete.stats);
    for id in all.iter() {
        wait_lb_gone(api, config, id)
            .await
            .map_err(BenchError::Setup)?;
    }
    created.lbs.clear();

    let base = baseline.ops_per_s;
    let relative_to_baseline = THROUGHPUT_OPS
        .iter()
        .filter_map(|name| {
            let s = ops.get(*name)?;
            (base > 0.0).then(|| {
                (
                    name.to_string(),
                    (s.ops_per_s / base * 10_000.0).round() / 10_000.0,
                )
            })
        })
        .collect();
    Ok(ConcurrencyRun {
        concurrency: c,
        baseline_version_get: baseline,
        ops,
        relative_to_baseline,
        lb_all_active_s,
        list_items,
        lbs_in_error,
        burst_lbs: burst.lbs,
        conflicts: burst.conflicts,
    })
}

struct BurstOutcome {
    lbs: usize,
    conflicts: BTreeMap<String, u64>,
}

/// Phase 7: listener, pool and member POSTs back to back on `lbs` (op i on LB i mod n), every
/// LB waited for ACTIVE (unmeasured) between the three.
async fn child_burst(
    api: &Api,
    config: &ApiBenchConfig,
    c: usize,
    lbs: Arc<Vec<String>>,
    ops: &mut BTreeMap<String, OpStats>,
) -> Result<BurstOutcome, BenchError> {
    let limit = config.phase_time_limit;
    let n = lbs.len();
    if n == 0 {
        return Err(BenchError::Setup(
            "no ACTIVE LB for the child write burst".into(),
        ));
    }
    let mut conflicts = BTreeMap::new();
    let settle_all = |what: &'static str| {
        let lbs = lbs.clone();
        async move {
            for id in lbs.iter() {
                wait_lb_active(api, config, id)
                    .await
                    .map_err(|e| BenchError::Setup(format!("after {what}: {e}")))?;
            }
            Ok::<(), BenchError>(())
        }
    };

    tracing::info!(concurrency = c, lbs = n, "listener create burst");
    let conflicted = Arc::new(AtomicU64::new(0));
    let (a, l2, k) = (api.clone(), lbs.clone(), conflicted.clone());
    let out = run_phase(c, config.count, limit, move |i, _| {
        let (a, lbs, k) = (a.clone(), l2.clone(), k.clone());
        async move {
            let body = json!({"listener": {
                "loadbalancer_id": lbs[i % lbs.len()], "protocol": "HTTP", "protocol_port": 1000 + i}});
            count_conflict(
                &k,
                a.timed(Method::POST, "/v2/lbaas/listeners", Some(&body), &[StatusCode::CREATED])
                    .await,
            )
        }
    })
    .await;
    ops.insert("listener_create_burst".into(), out.stats);
    conflicts.insert(
        "listener_create_burst".into(),
        conflicted.load(Ordering::Relaxed),
    );
    settle_all("the listener burst").await?;

    tracing::info!(concurrency = c, lbs = n, "pool create burst");
    // pools[j]: the pool made on LB j (the member burst adds to it).
    let pools: Arc<Mutex<Vec<Option<String>>>> = Arc::new(Mutex::new(vec![None; n]));
    let conflicted = Arc::new(AtomicU64::new(0));
    let (a, l2, k, p2) = (api.clone(), lbs.clone(), conflicted.clone(), pools.clone());
    let out = run_phase(c, config.count, limit, move |i, _| {
        let (a, lbs, k, pools) = (a.clone(), l2.clone(), k.clone(), p2.clone());
        async move {
            let j = i % lbs.len();
            let body = json!({"pool": {
                "loadbalancer_id": lbs[j], "protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN"}});
            let start = Instant::now();
            let v = a
                .request(
                    Method::POST,
                    "/v2/lbaas/pools",
                    Some(&body),
                    &[StatusCode::CREATED],
                )
                .await;
            let latency = start.elapsed();
            let id = id_of(&count_conflict(&k, v)?, "pool")?;
            pools.lock().await[j].get_or_insert(id);
            Ok(Sample {
                latency,
                to_active: None,
                id: None,
            })
        }
    })
    .await;
    ops.insert("pool_create_burst".into(), out.stats);
    conflicts.insert(
        "pool_create_burst".into(),
        conflicted.load(Ordering::Relaxed),
    );
    settle_all("the pool burst").await?;

    tracing::info!(concurrency = c, lbs = n, "member create burst");
    let pools = Arc::new(pools.lock().await.clone());
    let conflicted = Arc::new(AtomicU64::new(0));
    let (a, k) = (api.clone(), conflicted.clone());
    let out = run_phase(c, config.count, limit, move |i, _| {
        let (a, k, pools) = (a.clone(), k.clone(), pools.clone());
        async move {
            let Some(pool) = &pools[i % pools.len()] else {
                return Err(format!(
                    "no pool on LB {} (its pool create failed)",
                    i % pools.len()
                ));
            };
            let body = json!({"member": {"address": member_address(i), "protocol_port": 80}});
            count_conflict(
                &k,
                a.timed(
                    Method::POST,
                    &format!("/v2/lbaas/pools/{pool}/members"),
                    Some(&body),
                    &[StatusCode::CREATED],
                )
                .await,
            )
        }
    })
    .await;
    ops.insert("member_create_burst".into(), out.stats);
    conflicts.insert(
        "member_create_burst".into(),
        conflicted.load(Ordering::Relaxed),
    );
    settle_all("the member burst").await?;
    Ok(BurstOutcome { lbs: n, conflicts })
}

/// Counts an HTTP 409 answer in `conflicts` (the result is passed on unchanged).
fn count_conflict<T>(conflicts: &AtomicU64, r: Result<T, String>) -> Result<T, String> {
    if let Err(e) = &r
        && e.contains(": HTTP 409")
    {
        conflicts.fetch_add(1, Ordering::Relaxed);
    }
    r
}

/// Member address for op `i`: 198.18.0.1 + i (198.18.0.0/15, benchmark range; never contacted).
fn member_address(i: usize) -> String {
    let base = u32::from(Ipv4Addr::new(198, 18, 0, 1));
    Ipv4Addr::from(base + (i as u32 % 131_000)).to_string()
}

fn id_of(v: &Value, key: &str) -> Result<String, String> {
    v.get(key)
        .and_then(|o| o.get("id"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| format!("response has no {key}.id: {}", snippet(&v.to_string())))
}

fn snippet(s: &str) -> String {
    let s = s.trim();
    if s.len() <= 200 {
        s.to_string()
    } else {
        let mut end = 200;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}...", &s[..end])
    }
}

/// HTTP client with the endpoint's base URL and auth headers.
#[derive(Clone)]
struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    fn new(config: &ApiBenchConfig) -> Result<Api, BenchError> {
        let mut headers = HeaderMap::new();
        headers.insert(
            reqwest::header::ACCEPT,
            HeaderValue::from_static("application/json"),
        );
        if let Some(p) = &config.project_id {
            let v = HeaderValue::from_str(p)
                .map_err(|_| BenchError::Config("project id is not a valid header value".into()))?;
            headers.insert(HeaderName::from_static("x-project-id"), v);
        }
        if let Some(t) = &config.token {
            let mut v = HeaderValue::from_str(t)
                .map_err(|_| BenchError::Config("token is not a valid header value".into()))?;
            v.set_sensitive(true);
            headers.insert(HeaderName::from_static("x-auth-token"), v);
        }
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(config.request_timeout)
            .connect_timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(1024)
            .tcp_nodelay(true)
            .no_proxy()
            .build()
            .map_err(BenchError::Client)?;
        Ok(Api {
            http,
            base: config.url.trim_end_matches('/').to_string(),
        })
    }

    /// One request; Ok(parsed body or Null) when the status is one of `expect`, otherwise a
    /// short description (status and start of the body, or the transport error).
    async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        expect: &[StatusCode],
    ) -> Result<Value, String> {
        let bytes = self.send(method.clone(), path, body, expect).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes).map_err(|e| format!("{method} {path}: bad JSON: {e}"))
    }

    /// One request whose body is only checked (status, well-formed JSON when not empty), not
    /// kept: the measured phases. Building a `serde_json::Value` of a 200-LB list (~120 kB)
    /// costs the client about as much CPU as the server spends answering it, and client and
    /// server share the machine's cores.
    async fn check(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        expect: &[StatusCode],
    ) -> Result<(), String> {
        let bytes = self.send(method.clone(), path, body, expect).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        serde_json::from_slice::<serde::de::IgnoredAny>(&bytes)
            .map(|_| ())
            .map_err(|e| format!("{method} {path}: bad JSON: {e}"))
    }

    /// Sends one request; the body when the status is one of `expect`.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        expect: &[StatusCode],
    ) -> Result<bytes::Bytes, String> {
        let url = format!("{}{}", self.base, path);
        let mut req = self.http.request(method.clone(), &url);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| format!("{method} {path}: {e}"))?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| format!("{method} {path}: reading body: {e}"))?;
        if !expect.contains(&status) {
            return Err(format!(
                "{method} {path}: HTTP {status}: {}",
                snippet(&String::from_utf8_lossy(&bytes))
            ));
        }
        Ok(bytes)
    }

    async fn timed(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        expect: &[StatusCode],
    ) -> Result<Sample, String> {
        let start = Instant::now();
        self.check(method, path, body, expect).await?;
        Ok(Sample {
            latency: start.elapsed(),
            to_active: None,
            id: None,
        })
    }
}

/// Polls one LB until ACTIVE (bounded by `active_timeout`).
async fn wait_lb_active(api: &Api, config: &ApiBenchConfig, id: &str) -> Result<(), String> {
    let deadline = Instant::now() + config.active_timeout;
    loop {
        let v = api
            .request(
                Method::GET,
                &format!("/v2/lbaas/loadbalancers/{id}"),
                None,
                &[StatusCode::OK],
            )
            .await?;
        match v["loadbalancer"]["provisioning_status"].as_str() {
            Some("ACTIVE") => return Ok(()),
            Some("ERROR") => return Err(format!("load balancer {id} went to ERROR")),
            _ => {}
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "load balancer {id} not ACTIVE after {:?}",
                config.active_timeout
            ));
        }
        tokio::time::sleep(config.poll_interval).await;
    }
}

/// Polls one LB until it is ACTIVE (Ok(true)) or ERROR (Ok(false)), bounded.
async fn wait_lb_settled(api: &Api, config: &ApiBenchConfig, id: &str) -> Result<bool, String> {
    match wait_lb_active(api, config, id).await {
        Ok(()) => Ok(true),
        Err(e) if e.ends_with("went to ERROR") => Ok(false),
        Err(e) => Err(e),
    }
}

/// Polls one LB until GET answers 404 (bounded by `active_timeout`).
async fn wait_lb_gone(api: &Api, config: &ApiBenchConfig, id: &str) -> Result<(), String> {
    let deadline = Instant::now() + config.active_timeout;
    loop {
        let v = api
            .request(
                Method::GET,
                &format!("/v2/lbaas/loadbalancers/{id}"),
                None,
                &[StatusCode::OK, StatusCode::NOT_FOUND],
            )
            .await?;
        if v.is_null() || v.get("loadbalancer").is_none() {
            return Ok(());
        }
        if v["loadbalancer"]["provisioning_status"].as_str() == Some("DELETED") {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "load balancer {id} still present after {:?}",
                config.active_timeout
            ));
        }
        tokio::time::sleep(config.poll_interval).await;
    }
}

/// LBs created in the burst and not yet seen ACTIVE (id -> POST start).
#[derive(Default)]
struct Watch {
    pending: Mutex<HashMap<String, Instant>>,
    burst_done: AtomicBool,
}

impl Watch {
    async fn add(&self, id: String, start: Instant) {
        self.pending.lock().await.insert(id, start);
    }
}

struct Polled {
    latencies: Vec<Duration>,
    errors: u64,
    error_samples: Vec<String>,
    last_active: Option<Instant>,
}

/// The single poller of the create burst: lists the LBs (following `next` links, bounded) and
/// records the first time each pending one is seen ACTIVE. One list per round keeps the added
/// load to one client whatever the number of pending LBs.
async fn poll_until_active(
    api: Api,
    watch: Arc<Watch>,
    interval: Duration,
    timeout: Duration,
) -> Polled {
    let mut out = Polled {
        latencies: Vec::new(),
        errors: 0,
        error_samples: Vec::new(),
        last_active: None,
    };
    let mut deadline: Option<Instant> = None;
    loop {
        let done = watch.burst_done.load(Ordering::Relaxed);
        let empty = watch.pending.lock().await.is_empty();
        if done && empty {
            break;
        }
        if done {
            let d = *deadline.get_or_insert_with(|| Instant::now() + timeout);
            if Instant::now() >= d {
                let mut p = watch.pending.lock().await;
                out.errors += p.len() as u64;
                out.error_samples
                    .push(format!("{} LBs not ACTIVE after {timeout:?}", p.len()));
                p.clear();
                break;
            }
        }
        if !empty {
            let mut path = "/v2/lbaas/loadbalancers".to_string();
            for _page in 0..100 {
                let v = match api
                    .request(Method::GET, &path, None, &[StatusCode::OK])
                    .await
                {
                    Ok(v) => v,
                    Err(e) => {
                        tracing::debug!(err = %e, "poll list failed");
                        break;
                    }
                };
                let now = Instant::now();
                let items = v["loadbalancers"].as_array().cloned().unwrap_or_default();
                {
                    let mut p = watch.pending.lock().await;
                    for lb in &items {
                        let (Some(id), Some(st)) =
                            (lb["id"].as_str(), lb["provisioning_status"].as_str())
                        else {
                            continue;
                        };
                        if st != "ACTIVE" && st != "ERROR" {
                            continue;
                        }
                        if let Some(start) = p.remove(id) {
                            if st == "ACTIVE" {
                                out.latencies.push(now - start);
                                out.last_active = Some(now);
                            } else {
                                out.errors += 1;
                                if out.error_samples.len() < 5 {
                                    out.error_samples.push(format!("LB {id} went to ERROR"));
                                }
                            }
                        }
                    }
                }
                let next = v["loadbalancers_links"].as_array().and_then(|links| {
                    links
                        .iter()
                        .find(|l| l["rel"] == "next")
                        .and_then(|l| l["href"].as_str())
                        .map(str::to_string)
                });
                match next {
                    Some(href) if !items.is_empty() => {
                        // hrefs are absolute; keep the path and query only.
                        path = match href.find("/v2") {
                            Some(pos) => href[pos..].to_string(),
                            None => break,
                        }
                    }
                    _ => break,
                }
            }
        }
        tokio::time::sleep(interval).await;
    }
    out
}

/// One successful operation.
struct Sample {
    /// Latency of the measured request.
    latency: Duration,
    /// From the request until the LB was ACTIVE again (ops that wait).
    to_active: Option<Duration>,
    /// Id of a created object.
    id: Option<String>,
}

struct PhaseOutcome {
    stats: OpStats,
    to_active_stats: OpStats,
    ids: Vec<String>,
}

/// Runs `count` operations on `concurrency` workers (op index, worker index), stopping early at
/// the time limit. Each worker runs its operations one after the other.
async fn run_phase<F, Fut>(
    concurrency: usize,
    count: usize,
    time_limit: Duration,
    op: F,
) -> PhaseOutcome
where
    F: Fn(usize, usize) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Sample, String>> + Send + 'static,
{
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let deadline = start + time_limit;
    let mut tasks = Vec::with_capacity(concurrency);
    for worker in 0..concurrency {
        let (next, op) = (next.clone(), op.clone());
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut errors = Vec::new();
            let mut timed_out = false;
            loop {
                if Instant::now() >= deadline {
                    timed_out = true;
                    break;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    break;
                }
                let remaining = deadline.saturating_duration_since(Instant::now());
                match tokio::time::timeout(remaining, op(i, worker)).await {
                    Ok(Ok(s)) => samples.push(s),
                    Ok(Err(e)) => errors.push(e),
                    Err(_) => {
                        errors.push("time limit of the phase reached".to_string());
                        timed_out = true;
                        break;
                    }
                }
            }
            (samples, errors, timed_out)
        }));
    }
    let mut samples = Vec::new();
    let mut errors = Vec::new();
    let mut hit_limit = false;
    for t in tasks {
        match t.await {
            Ok((s, e, timed_out)) => {
                samples.extend(s);
                errors.extend(e);
                hit_limit |= timed_out;
            }
            Err(e) => errors.push(format!("worker task failed: {e}")),
        }
    }
    let elapsed = start.elapsed();
    let error_count = errors.len() as u64;
    errors.truncate(5);
    let latencies: Vec<Duration> = samples.iter().map(|s| s.latency).collect();
    let to_active: Vec<Duration> = samples.iter().filter_map(|s| s.to_active).collect();
    let ids = samples.iter().filter_map(|s| s.id.clone()).collect();
    PhaseOutcome {
        stats: OpStats::from_samples(latencies, error_count, errors.clone(), elapsed, hit_limit),
        to_active_stats: OpStats::from_samples(to_active, error_count, errors, elapsed, hit_limit),
        ids,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_addresses_are_distinct_and_in_range() {
        assert_eq!(member_address(0), "198.18.0.1");
        assert_eq!(member_address(255), "198.18.1.0");
        let a: std::collections::HashSet<String> = (0..5000).map(member_address).collect();
        assert_eq!(a.len(), 5000);
        assert!(member_address(130_000).starts_with("198.19."));
    }

    #[test]
    fn config_validation() {
        let mut c = ApiBenchConfig::new("http://127.0.0.1:9876");
        assert!(c.validate().is_ok());
        c.concurrency = vec![8, 0];
        assert!(c.validate().is_err());
        c.concurrency = vec![8];
        c.count = 0;
        assert!(c.validate().is_err());
        c.count = 10;
        c.url = "127.0.0.1:9876".into();
        assert!(c.validate().is_err());
    }

    #[test]
    fn only_409_answers_count_as_conflicts() {
        let k = AtomicU64::new(0);
        let conflict: Result<(), String> =
            Err("POST /v2/lbaas/pools: HTTP 409 Conflict: {}".into());
        let other: Result<(), String> = Err("POST /v2/lbaas/pools: HTTP 400 Bad Request".into());
        assert!(count_conflict(&k, conflict).is_err());
        assert!(count_conflict(&k, other).is_err());
        assert!(count_conflict(&k, Ok::<(), String>(())).is_ok());
        assert_eq!(k.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn snippet_cuts_on_char_boundary() {
        let s = "é".repeat(150);
        let out = snippet(&s);
        assert!(out.ends_with("..."));
        assert!(out.len() <= 203);
    }

    #[tokio::test]
    async fn phase_runs_count_ops_and_counts_errors() {
        let out = run_phase(4, 10, Duration::from_secs(10), |i, _| async move {
            if i % 5 == 0 {
                Err(format!("op {i} failed"))
            } else {
                Ok(Sample {
                    latency: Duration::from_millis(1),
                    to_active: None,
                    id: Some(i.to_string()),
                })
            }
        })
        .await;
        assert_eq!(out.stats.ok, 8);
        assert_eq!(out.stats.errors, 2);
        assert_eq!(out.ids.len(), 8);
        assert!(!out.stats.hit_time_limit);
    }

    #[tokio::test]
    async fn phase_stops_at_time_limit() {
        let out = run_phase(2, 1_000_000, Duration::from_millis(50), |_, _| async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            Ok(Sample {
                latency: Duration::from_millis(5),
                to_active: None,
                id: None,
            })
        })
        .await;
        assert!(out.stats.hit_time_limit);
        assert!(out.stats.ok < 1_000_000);
    }
}
