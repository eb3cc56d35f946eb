//! The mixed workload: C concurrent clients for a bounded time, each owning the load balancers
//! it created (so what it expects to read back is known without coordination), choosing among
//! LB create, LB update (name), listener/pool/member create, show, list and cascade delete.
//! Afterwards: wait (bounded) until nothing is `PENDING_*`, then read back every acknowledged
//! write: every 201 is there (with the name of the last acknowledged update), every 204'd
//! cascade delete is gone with its children.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use super::client::{Client, Counts, sample};
use super::rng::Rng;
use crate::stats::percentile;

/// What one mix run does.
#[derive(Debug, Clone)]
pub struct MixConfig {
    /// Concurrent clients.
    pub clients: usize,
    /// How long clients run.
    pub duration: Duration,
    /// Upper bound on waiting for every object to leave `PENDING_*`.
    pub settle_timeout: Duration,
    /// Projects the clients are spread over.
    pub projects: usize,
    /// Live LBs a client keeps at most (it deletes beyond that).
    pub max_lbs_per_client: usize,
    /// Random seed (a run is reproducible from it).
    pub seed: u64,
}

/// Results of one mix run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MixReport {
    /// Concurrent clients.
    pub clients: usize,
    /// Wall time, seconds.
    pub duration_s: f64,
    /// Requests answered or failed.
    pub requests: u64,
    /// Requests per second.
    pub requests_per_s: f64,
    /// Answers per operation during the load.
    pub ops: BTreeMap<String, Counts>,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 99th percentile latency, ms.
    pub p99_ms: f64,
    /// Slowest request, ms.
    pub max_ms: f64,
    /// Load balancers created (201).
    pub lbs_created: u64,
    /// Load balancers deleted (cascade).
    pub lbs_deleted: u64,
    /// Updates answered 200.
    pub updates_acked: u64,
    /// Listeners, pools and members created (201).
    pub children_created: u64,
    /// A show or a list-by-name right after an acknowledged write that did not reflect it.
    pub stale_reads: u64,
    /// Seconds from the end of the load until nothing was `PENDING_*` (None: not within the
    /// settle timeout).
    pub settle_s: Option<f64>,
    /// Objects still `PENDING_*` after the settle time (must be 0).
    pub stuck_pending: u64,
    /// Acknowledged objects read back as expected.
    pub verified: u64,
    /// Acknowledged creates or updates not read back (missing, other name, ERROR).
    pub lost_writes: u64,
    /// Acknowledged deletes whose object (or a child) is still there.
    pub not_deleted: u64,
    /// Answers of the read-back requests.
    pub verify_ops: Counts,
    /// Up to ten descriptions of each kind of failure.
    pub failure_samples: Vec<String>,
}

impl MixReport {
    /// Everything that makes the run fail, as sentences (empty: passed).
    pub fn failures(&self, what: &str) -> Vec<String> {
        let mut out = Vec::new();
        let load: Counts = self.ops.values().fold(Counts::default(), |mut a, c| {
            a.merge(c);
            a
        });
        if load.server_error > 0 {
            out.push(format!("{what}: {} 5xx answers", load.server_error));
        }
        if load.transport > 0 {
            out.push(format!(
                "{what}: {} requests without answer",
                load.transport
            ));
        }
        if self.verify_ops.failures() > 0 {
            out.push(format!(
                "{what}: {} read-back requests failed",
                self.verify_ops.failures()
            ));
        }
        if self.settle_s.is_none() || self.stuck_pending > 0 {
            out.push(format!(
                "{what}: {} objects stuck in PENDING_* after the settle time",
                self.stuck_pending
            ));
        }
        if self.lost_writes > 0 {
            out.push(format!("{what}: {} lost writes", self.lost_writes));
        }
        if self.not_deleted > 0 {
            out.push(format!(
                "{what}: {} acknowledged deletes not done",
                self.not_deleted
            ));
        }
        if self.stale_reads > 0 {
            out.push(format!("{what}: {} stale reads", self.stale_reads));
        }
        if self.lbs_created == 0 {
            out.push(format!("{what}: no load balancer was created"));
        }
        out
    }
}

/// An LB a client created, and what it expects of it.
#[derive(Debug, Clone, Default)]
pub(crate) struct TrackedLb {
    pub id: String,
    pub project: String,
    /// The name of the last acknowledged create/update; None once a write's outcome is
    /// unknown (no answer).
    pub name: Option<String>,
    pub listeners: Vec<String>,
    pub pools: Vec<String>,
    /// (pool id, member id).
    pub members: Vec<(String, String)>,
    next_port: u16,
    next_member: u32,
}

/// What all clients of a run created and deleted.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    pub live: Vec<TrackedLb>,
    pub deleted: Vec<TrackedLb>,
}

/// One request of the load: when it started, its status (None: no answer), its latency.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Event {
    pub start: Instant,
    pub status: Option<u16>,
    pub latency: Duration,
}

/// Per-client result.
#[derive(Default)]
pub(crate) struct ClientOutcome {
    pub ops: BTreeMap<String, Counts>,
    pub events: Vec<Event>,
    latencies: Vec<Duration>,
    pub samples: Vec<String>,
    pub stale_reads: u64,
    pub updates_acked: u64,
    pub children_created: u64,
    pub lbs_created: u64,
    pub ledger: Ledger,
}

/// Project ids of a run: plain ids noauth accepts.
pub(crate) fn project_ids(n: usize, seed: u64) -> Vec<String> {
    (0..n.max(1))
        .map(|i| format!("rel{:08x}p{i}", seed as u32))
        .collect()
}

/// Runs the load, then the settle wait and the read-back.
pub async fn run(client: &Client, config: &MixConfig) -> MixReport {
    let projects = project_ids(config.projects, config.seed);
    let (mut report, ledger, _) = load(client, config, &projects).await;
    settle_and_verify(client, config, &projects[0], &ledger, &mut report).await;
    report
}

/// Waits until nothing is `PENDING_*`, then reads every tracked object back.
pub(crate) async fn settle_and_verify(
    client: &Client,
    config: &MixConfig,
    project: &str,
    ledger: &Ledger,
    report: &mut MixReport,
) {
    let settle_start = Instant::now();
    let (settled, stuck, samples) = wait_settled(client, project, config.settle_timeout).await;
    report.settle_s = settled.then(|| round3(settle_start.elapsed().as_secs_f64()));
    report.stuck_pending = stuck;
    for s in samples {
        sample(&mut report.failure_samples, s);
    }
    verify(client, ledger, report).await;
}

/// The load alone: the report's load fields, what was created/deleted, every request.
pub(crate) async fn load(
    client: &Client,
    config: &MixConfig,
    projects: &[String],
) -> (MixReport, Ledger, Vec<Event>) {
    let started = Instant::now();
    let deadline = started + config.duration;
    let mut tasks = Vec::new();
    for c in 0..config.clients {
        let client = client.clone();
        let project = projects[c % projects.len()].clone();
        let max_lbs = config.max_lbs_per_client.max(1);
        let seed = config.seed ^ (c as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        tasks.push(tokio::spawn(async move {
            run_client(client, project, c, max_lbs, seed, deadline).await
        }));
    }
    let mut report = MixReport {
        clients: config.clients,
        ..MixReport::default()
    };
    let mut latencies = Vec::new();
    let mut events = Vec::new();
    let mut ledger = Ledger::default();
    for t in tasks {
        let Ok(out) = t.await else {
            sample(&mut report.failure_samples, "a client task panicked".into());
            report.lost_writes += 1;
            continue;
        };
        super::client::merge_ops(&mut report.ops, &out.ops);
        latencies.extend(out.latencies);
        events.extend(out.events);
        for s in out.samples {
            sample(&mut report.failure_samples, s);
        }
        report.stale_reads += out.stale_reads;
        report.updates_acked += out.updates_acked;
        report.children_created += out.children_created;
        report.lbs_created += out.lbs_created;
        ledger.live.extend(out.ledger.live);
        ledger.deleted.extend(out.ledger.deleted);
    }
    let elapsed = started.elapsed();
    report.duration_s = round3(elapsed.as_secs_f64());
    report.requests = latencies.len() as u64;
    report.requests_per_s = round3(report.requests as f64 / elapsed.as_secs_f64().max(1e-9));
    latencies.sort_unstable();
    report.p50_ms = ms(percentile(&latencies, 0.5));
    report.p99_ms = ms(percentile(&latencies, 0.99));
    report.max_ms = ms(latencies.last().copied().unwrap_or_default());
    report.lbs_deleted = ledger.deleted.len() as u64;
    (report, ledger, events)
}

pub(crate) fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn ms(d: Duration) -> f64 {
    round3(d.as_secs_f64() * 1000.0)
}

#[derive(Clone, Copy)]
enum Op {
    CreateLb,
    UpdateLb,
    CreateListener,
    CreatePool,
    CreateMember,
    Show,
    List,
    Delete,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::CreateLb => "lb_create",
            Op::UpdateLb => "lb_update",
            Op::CreateListener => "listener_create",
            Op::CreatePool => "pool_create",
            Op::CreateMember => "member_create",
            Op::Show => "lb_show",
            Op::List => "lb_list",
            Op::Delete => "lb_cascade_delete",
        }
    }
}

fn pick(rng: &mut Rng, n_lbs: usize, max_lbs: usize) -> Op {
    if n_lbs == 0 {
        return Op::CreateLb;
    }
    if n_lbs >= max_lbs && rng.below(2) == 0 {
        return Op::Delete;
    }
    // Weights: writes ~60 %, reads ~30 %, deletes ~10 %.
    match rng.below(100) {
        0..15 => Op::CreateLb,
        15..30 => Op::UpdateLb,
        30..40 => Op::CreateListener,
        40..50 => Op::CreatePool,
        50..60 => Op::CreateMember,
        60..75 => Op::Show,
        75..90 => Op::List,
        _ => Op::Delete,
    }
}

async fn run_client(
    client: Client,
    project: String,
    idx: usize,
    max_lbs: usize,
    seed: u64,
    deadline: Instant,
) -> ClientOutcome {
    let mut rng = Rng::new(seed);
    let mut out = ClientOutcome::default();
    let mut n = 0u64;
    // Bounded by time, and by count in case the server answers instantly.
    while Instant::now() < deadline && n < 1_000_000 {
        n += 1;
        let op = pick(&mut rng, out.ledger.live.len(), max_lbs);
        let k = if out.ledger.live.is_empty() {
            0
        } else {
            rng.below(out.ledger.live.len() as u64) as usize
        };
        let start = Instant::now();
        let reply = match op {
            Op::CreateLb => {
                let name = format!("rel-{idx}-{n}");
                let body = json!({"loadbalancer": {"name": name,
                    "vip_subnet_id": "7c4cbf3e-4f2a-4c8d-9a51-3a2a3b0c0d01", "admin_state_up": true}});
                let r = client
                    .call(
                        Method::POST,
                        "/v2/lbaas/loadbalancers",
                        Some(&body),
                        &project,
                        false,
                    )
                    .await;
                if r.status() == Some(201) {
                    match r.json()["loadbalancer"]["id"].as_str() {
                        Some(id) => {
                            out.lbs_created += 1;
                            out.ledger.live.push(TrackedLb {
                                id: id.to_string(),
                                project: project.clone(),
                                name: Some(name),
                                next_port: 1000,
                                ..TrackedLb::default()
                            });
                        }
                        None => sample(
                            &mut out.samples,
                            format!("201 without id: {}", r.describe()),
                        ),
                    }
                }
                r
            }
            Op::UpdateLb => {
                let name = format!("rel-{idx}-{n}-u");
                let lb = &mut out.ledger.live[k];
                let body =
                    json!({"loadbalancer": {"name": name, "description": format!("update {n}")}});
                let r = client
                    .call(
                        Method::PUT,
                        &format!("/v2/lbaas/loadbalancers/{}", lb.id),
                        Some(&body),
                        &project,
                        false,
                    )
                    .await;
                match r.status() {
                    Some(200) => {
                        out.updates_acked += 1;
                        lb.name = Some(name);
                    }
                    Some(409) => {}
                    // Unknown outcome: do not expect a name any more.
                    Some(s) if s >= 500 => lb.name = None,
                    None => lb.name = None,
                    _ => {}
                }
                r
            }
            Op::CreateListener => {
                let lb = &mut out.ledger.live[k];
                let port = lb.next_port;
                let body = json!({"listener": {"loadbalancer_id": lb.id, "protocol": "HTTP",
                    "protocol_port": port, "name": format!("l{n}")}});
                let r = client
                    .call(
                        Method::POST,
                        "/v2/lbaas/listeners",
                        Some(&body),
                        &project,
                        false,
                    )
                    .await;
                if r.status() == Some(201) {
                    lb.next_port = lb.next_port.wrapping_add(1).max(1000);
                    if let Some(id) = r.json()["listener"]["id"].as_str() {
                        lb.listeners.push(id.to_string());
                        out.children_created += 1;
                    }
                }
                r
            }
            Op::CreatePool => {
                let lb = &mut out.ledger.live[k];
                let body = json!({"pool": {"loadbalancer_id": lb.id, "protocol": "HTTP",
                    "lb_algorithm": "ROUND_ROBIN", "name": format!("p{n}")}});
                let r = client
                    .call(
                        Method::POST,
                        "/v2/lbaas/pools",
                        Some(&body),
                        &project,
                        false,
                    )
                    .await;
                if r.status() == Some(201)
                    && let Some(id) = r.json()["pool"]["id"].as_str()
                {
                    lb.pools.push(id.to_string());
                    out.children_created += 1;
                }
                r
            }
            Op::CreateMember => {
                let lb = &mut out.ledger.live[k];
                if lb.pools.is_empty() {
                    continue;
                }
                let pool = lb.pools[rng.below(lb.pools.len() as u64) as usize].clone();
                let m = lb.next_member;
                let address = format!("198.18.{}.{}", (m / 250) % 256, m % 250 + 1);
                let body = json!({"member": {"address": address, "protocol_port": 80}});
                let r = client
                    .call(
                        Method::POST,
                        &format!("/v2/lbaas/pools/{pool}/members"),
                        Some(&body),
                        &project,
                        false,
                    )
                    .await;
                if r.status() == Some(201) {
                    lb.next_member += 1;
                    if let Some(id) = r.json()["member"]["id"].as_str() {
                        lb.members.push((pool, id.to_string()));
                        out.children_created += 1;
                    }
                }
                r
            }
            Op::Show => {
                let lb = &out.ledger.live[k];
                let r = client
                    .call(
                        Method::GET,
                        &format!("/v2/lbaas/loadbalancers/{}", lb.id),
                        None,
                        &project,
                        false,
                    )
                    .await;
                if r.status() == Some(200) {
                    let v = r.json();
                    if let Some(expected) = &lb.name
                        && v["loadbalancer"]["name"].as_str() != Some(expected)
                    {
                        out.stale_reads += 1;
                        sample(
                            &mut out.samples,
                            format!(
                                "show {}: name {} expected {expected}",
                                lb.id, v["loadbalancer"]["name"]
                            ),
                        );
                    }
                } else if r.status() == Some(404) {
                    out.stale_reads += 1;
                    sample(
                        &mut out.samples,
                        format!("show {}: 404 for a live LB", lb.id),
                    );
                }
                r
            }
            Op::List => {
                let lb = &out.ledger.live[k];
                // Half the lists filter by one of our names: the LB must be in the answer.
                let by_name = lb.name.clone().filter(|_| rng.below(2) == 0);
                let path = match &by_name {
                    Some(name) => format!("/v2/lbaas/loadbalancers?name={name}"),
                    None => "/v2/lbaas/loadbalancers?limit=50".to_string(),
                };
                let r = client.call(Method::GET, &path, None, &project, false).await;
                if r.status() == Some(200) {
                    let v = r.json();
                    let items = v["loadbalancers"].as_array();
                    if items.is_none() {
                        sample(
                            &mut out.samples,
                            format!("list without items: {}", r.describe()),
                        );
                    }
                    if by_name.is_some()
                        && !items
                            .into_iter()
                            .flatten()
                            .any(|i| i["id"].as_str() == Some(lb.id.as_str()))
                    {
                        out.stale_reads += 1;
                        sample(&mut out.samples, format!("list {path}: {} missing", lb.id));
                    }
                }
                r
            }
            Op::Delete => {
                let id = out.ledger.live[k].id.clone();
                let r = client
                    .call(
                        Method::DELETE,
                        &format!("/v2/lbaas/loadbalancers/{id}?cascade=true"),
                        None,
                        &project,
                        false,
                    )
                    .await;
                match r.status() {
                    Some(204) => {
                        let lb = out.ledger.live.swap_remove(k);
                        out.ledger.deleted.push(lb);
                    }
                    Some(409) => {}
                    // Unknown outcome: expect neither presence nor absence.
                    Some(s) if s >= 500 => {
                        out.ledger.live.swap_remove(k);
                    }
                    None => {
                        out.ledger.live.swap_remove(k);
                    }
                    _ => {}
                }
                r
            }
        };
        if reply.status().is_none_or(|s| s >= 500 && s != 501) {
            sample(
                &mut out.samples,
                format!("{}: {}", op.name(), reply.describe()),
            );
        }
        out.ops
            .entry(op.name().to_string())
            .or_default()
            .add(&reply);
        out.latencies.push(reply.latency());
        out.events.push(Event {
            start,
            status: reply.status(),
            latency: reply.latency(),
        });
    }
    out
}

/// The provisioning statuses of every LB, listener and pool (admin lists, all pages).
async fn pending_objects(client: &Client, project: &str) -> Result<Vec<String>, String> {
    let mut pending = Vec::new();
    for (path, key) in [
        ("/v2/lbaas/loadbalancers", "loadbalancers"),
        ("/v2/lbaas/listeners", "listeners"),
        ("/v2/lbaas/pools", "pools"),
    ] {
        let mut marker: Option<String> = None;
        // Bounded: at most 1,000 pages of 1,000.
        for _ in 0..1000 {
            let url = match &marker {
                Some(m) => format!("{path}?limit=1000&marker={m}"),
                None => format!("{path}?limit=1000"),
            };
            let r = client.call(Method::GET, &url, None, project, true).await;
            if r.status() != Some(200) {
                return Err(format!("GET {url}: {}", r.describe()));
            }
            let v = r.json();
            let items = v[key].as_array().cloned().unwrap_or_default();
            for i in &items {
                let status = i["provisioning_status"].as_str().unwrap_or("");
                if status.starts_with("PENDING_") {
                    pending.push(format!("{key} {} {status}", i["id"]));
                }
            }
            if items.len() < 1000 {
                break;
            }
            marker = items
                .last()
                .and_then(|i| i["id"].as_str())
                .map(str::to_owned);
        }
    }
    Ok(pending)
}

/// Polls until nothing is `PENDING_*` (bounded): (settled, stuck count, samples).
pub(crate) async fn wait_settled(
    client: &Client,
    project: &str,
    timeout: Duration,
) -> (bool, u64, Vec<String>) {
    let deadline = Instant::now() + timeout;
    let mut last = (0u64, Vec::new());
    loop {
        match pending_objects(client, project).await {
            Ok(p) if p.is_empty() => return (true, 0, Vec::new()),
            Ok(p) => last = (p.len() as u64, p.into_iter().take(5).collect()),
            Err(e) => last.1 = vec![e],
        }
        if Instant::now() >= deadline {
            return (false, last.0, last.1);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What reading one object back found.
enum Found {
    /// 200 with this body.
    Present(Value),
    /// 404, or shown as DELETED.
    Gone,
    /// Anything else (5xx, no answer).
    Failed(String),
}

async fn read(
    client: &Client,
    path: &str,
    key: &str,
    project: &str,
    counts: &Mutex<Counts>,
) -> Found {
    let r = client.call(Method::GET, path, None, project, false).await;
    counts.lock().await.add(&r);
    match r.status() {
        Some(200) => {
            let v = r.json();
            if v[key]["provisioning_status"].as_str() == Some("DELETED") {
                Found::Gone
            } else {
                Found::Present(v[key].clone())
            }
        }
        Some(404) => Found::Gone,
        _ => Found::Failed(format!("GET {path}: {}", r.describe())),
    }
}

/// Reads back every tracked object (32 at a time).
pub(crate) async fn verify(client: &Client, ledger: &Ledger, report: &mut MixReport) {
    #[derive(Default)]
    struct Tally {
        verified: u64,
        lost: u64,
        not_deleted: u64,
        samples: Vec<String>,
    }
    let tally = Arc::new(Mutex::new(Tally::default()));
    let counts = Arc::new(Mutex::new(Counts::default()));
    let mut work: Vec<(TrackedLb, bool)> = ledger.live.iter().map(|l| (l.clone(), true)).collect();
    work.extend(ledger.deleted.iter().map(|l| (l.clone(), false)));
    let work = Arc::new(Mutex::new(work));
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let (client, tally, counts, work) =
            (client.clone(), tally.clone(), counts.clone(), work.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let Some((lb, live)) = work.lock().await.pop() else {
                    return;
                };
                let mut paths =
                    vec![(format!("/v2/lbaas/loadbalancers/{}", lb.id), "loadbalancer")];
                paths.extend(
                    lb.listeners
                        .iter()
                        .map(|id| (format!("/v2/lbaas/listeners/{id}"), "listener")),
                );
                paths.extend(
                    lb.pools
                        .iter()
                        .map(|id| (format!("/v2/lbaas/pools/{id}"), "pool")),
                );
                paths.extend(
                    lb.members
                        .iter()
                        .map(|(p, m)| (format!("/v2/lbaas/pools/{p}/members/{m}"), "member")),
                );
                for (i, (path, key)) in paths.iter().enumerate() {
                    let found = read(&client, path, key, &lb.project, &counts).await;
                    let mut t = tally.lock().await;
                    match (found, live) {
                        (Found::Failed(e), _) => {
                            t.lost += 1;
                            sample(&mut t.samples, e);
                        }
                        (Found::Present(v), true) => {
                            let status = v["provisioning_status"].as_str().unwrap_or("");
                            let name_ok = i > 0
                                || lb.name.is_none()
                                || v["name"].as_str() == lb.name.as_deref();
                            if status == "ACTIVE" && name_ok {
                                t.verified += 1;
                            } else {
                                t.lost += 1;
                                sample(
                                    &mut t.samples,
                                    format!(
                                        "{path}: {status}, name {} (expected {:?})",
                                        v["name"], lb.name
                                    ),
                                );
                            }
                        }
                        (Found::Gone, true) => {
                            t.lost += 1;
                            sample(&mut t.samples, format!("{path}: acknowledged but gone"));
                        }
                        (Found::Gone, false) => t.verified += 1,
                        (Found::Present(v), false) => {
                            t.not_deleted += 1;
                            sample(
                                &mut t.samples,
                                format!("{path}: deleted (204) but {}", v["provisioning_status"]),
                            );
                        }
                    }
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let t = tally.lock().await;
    report.verified = t.verified;
    report.lost_writes = t.lost;
    report.not_deleted = t.not_deleted;
    report.verify_ops = counts.lock().await.clone();
    for s in &t.samples {
        sample(&mut report.failure_samples, s.clone());
    }
}
