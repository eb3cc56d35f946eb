//! `klb demo`: a whole real active-active load balancer on the local cloud, driven through the
//! public API like a tenant would, with traffic from the client namespace, a failover and a
//! PPS-driven scale-out, then removed. Progress goes to stdout; the summary table at the end.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use klb_flow::lb::LbResources;
use klb_local::plan;
use serde_json::{Value, json};

mod tls;

use crate::octavia_client::{ClientError, OctaviaClient};
use crate::plane::ControlPlane;
use crate::pps::HeartbeatRate;
use crate::store_backend::{RESOURCES_KIND, vm_record_id};

/// Demo settings.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// The klb executable (runs `klb load` in the client namespace and `klb backend` members).
    pub klb_exe: PathBuf,
    /// Requests of each bounded load phase.
    pub requests: u32,
    /// Member port.
    pub member_port: u16,
}

/// Why the demo stopped.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// A call to klb's API failed.
    #[error("API: {0}")]
    Api(#[from] ClientError),
    /// The local cloud failed.
    #[error("local cloud: {0}")]
    Local(#[from] klb_local::LocalError),
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] klb_store::StoreError),
    /// A step's check failed (the message says which).
    #[error("{0}")]
    Step(String),
}

/// One measured row of the summary.
#[derive(Debug, Clone)]
pub struct Row {
    /// What was measured.
    pub what: String,
    /// The figure.
    pub value: String,
}

/// The final report.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    /// The rows, in measurement order.
    pub rows: Vec<Row>,
    /// Where each row is echoed as it is measured (`None`: stdout directly).
    console: Option<Console>,
}

impl Summary {
    fn add(&mut self, what: &str, value: impl Into<String>) {
        let value = value.into();
        let line = format!("        {what}: {value}");
        match &self.console {
            Some(c) => c.line(line),
            None => println!("{line}"),
        }
        self.rows.push(Row {
            what: what.to_owned(),
            value,
        });
    }

    /// The table as text.
    pub fn table(&self) -> String {
        let width = self.rows.iter().map(|r| r.what.len()).max().unwrap_or(10);
        let mut out = format!("{:width$}  {}\n", "measurement", "value");
        out.push_str(&format!("{}  {}\n", "-".repeat(width), "-".repeat(40)));
        for r in &self.rows {
            out.push_str(&format!("{:width$}  {}\n", r.what, r.value));
        }
        out
    }
}

/// What the console thread prints.
enum ConsoleMsg {
    Line(String),
    Begin(String),
    /// Close an open line, flush, then answer.
    Finish(std::sync::mpsc::Sender<()>),
}

/// The demo's terminal output, printed by one thread that owns stdout (no lock shared with
/// the async code): whole lines, except that on a terminal the current step's line stays open
/// and gets an elapsed-seconds ticker (`  (12s)`) until the next line. Off a terminal (tests,
/// pipes) every line is printed whole, without ticker.
#[derive(Debug, Clone)]
struct Console {
    tx: std::sync::mpsc::Sender<ConsoleMsg>,
}

impl Console {
    /// Starts the printing thread on stdout; live if it is a terminal.
    fn stdout() -> Console {
        let live = std::io::IsTerminal::is_terminal(&std::io::stdout());
        let mut screen = Screen::new(Box::new(std::io::stdout()), live);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::sync::mpsc::RecvTimeoutError;
            loop {
                match rx.recv_timeout(Duration::from_secs(1)) {
                    Ok(ConsoleMsg::Line(t)) => screen.line(&t),
                    Ok(ConsoleMsg::Begin(t)) => screen.begin(&t),
                    Ok(ConsoleMsg::Finish(ack)) => {
                        screen.close();
                        let _ = ack.send(());
                    }
                    Err(RecvTimeoutError::Timeout) => screen.tick(),
                    Err(RecvTimeoutError::Disconnected) => {
                        screen.close();
                        return;
                    }
                }
            }
        });
        Console { tx }
    }

    fn line(&self, text: String) {
        let _ = self.tx.send(ConsoleMsg::Line(text));
    }

    fn begin(&self, text: String) {
        let _ = self.tx.send(ConsoleMsg::Begin(text));
    }

    /// Closes an open line and waits (at most 1 s) until everything sent is printed, so that
    /// what the caller prints next comes after it.
    fn finish(&self) {
        let (ack, done) = std::sync::mpsc::channel();
        if self.tx.send(ConsoleMsg::Finish(ack)).is_ok() {
            let _ = done.recv_timeout(Duration::from_secs(1));
        }
    }
}

/// The console's state: an output and the open step line, if any.
struct Screen {
    out: Box<dyn std::io::Write + Send>,
    /// A terminal: keep the step line open and tick.
    live: bool,
    /// The open step line: when it began and how many ticker bytes follow it.
    open: Option<(Instant, usize)>,
}

impl Screen {
    fn new(out: Box<dyn std::io::Write + Send>, live: bool) -> Screen {
        Screen {
            out,
            live,
            open: None,
        }
    }

    /// A whole line (closing an open step line first).
    fn line(&mut self, text: &str) {
        self.close();
        let _ = writeln!(self.out, "{text}");
        let _ = self.out.flush();
    }

    /// A step line, left open for the ticker on a terminal.
    fn begin(&mut self, text: &str) {
        self.close();
        if self.live {
            let _ = write!(self.out, "{text}");
            self.open = Some((Instant::now(), 0));
        } else {
            let _ = writeln!(self.out, "{text}");
        }
        let _ = self.out.flush();
    }

    /// Updates the open line's ticker to the seconds since it began.
    fn tick(&mut self) {
        if let Some((since, _)) = self.open {
            self.tick_to(since.elapsed().as_secs());
        }
    }

    /// Backspaces over the previous ticker (they stay on the line even when a long step line
    /// wrapped, unlike `\r`), then the new one; it never gets shorter, so nothing is left over.
    fn tick_to(&mut self, secs: u64) {
        if let Some((since, len)) = self.open {
            let text = format!("  ({secs}s)");
            let _ = write!(self.out, "{}{text}", "\x08".repeat(len));
            let _ = self.out.flush();
            self.open = Some((since, text.len()));
        }
    }

    /// Ends an open step line.
    fn close(&mut self) {
        if self.open.take().is_some() {
            let _ = writeln!(self.out);
        }
        let _ = self.out.flush();
    }
}

struct Progress {
    step: u32,
    total: u32,
    start: Instant,
    console: Console,
}

impl Progress {
    fn step(&mut self, text: &str) {
        self.step += 1;
        self.console.begin(format!(
            "[{:>2}/{}] {:>6.1}s  {text}",
            self.step,
            self.total,
            self.start.elapsed().as_secs_f64()
        ));
    }
}

impl Drop for Progress {
    /// On every way out of the demo (also errors), end the open line before others print.
    fn drop(&mut self) {
        self.console.finish();
    }
}

fn ms(d: Duration) -> String {
    format!("{} ms", d.as_millis())
}

/// Runs the demo on a started control plane (local cloud provider).
pub async fn run(plane: &ControlPlane, opts: &DemoOptions) -> Result<Summary, DemoError> {
    let console = Console::stdout();
    let mut summary = Summary {
        rows: Vec::new(),
        console: Some(console.clone()),
    };
    let mut progress = Progress {
        step: 0,
        total: 13,
        start: Instant::now(),
        console,
    };
    let local = plane
        .local_cloud()
        .ok_or_else(|| DemoError::Step("the demo needs the local cloud provider".into()))?
        .clone();
    let reports = plane
        .reports()
        .ok_or_else(|| DemoError::Step("no heartbeat receiver".into()))?
        .clone();
    let rate = HeartbeatRate::new(reports.clone());
    local.set_pps_source(Arc::new(rate.clone())).await;
    let api = OctaviaClient::new(format!("http://{}", plane.api_addr()), "demo");

    progress.step("starting two member namespaces running `klb backend`");
    let mut members = Vec::new();
    for index in 1..=2 {
        let m = local
            .add_member(index, &opts.klb_exe, opts.member_port)
            .await?;
        members.push(m);
    }

    progress.step("creating the load balancer (security group, server group, 2 LB VMs, alarm, VIP, HAProxy, FRR)");
    let lb = api
        .create(
            "/v2/lbaas/loadbalancers",
            "loadbalancer",
            json!({"loadbalancer": {"name": "demo", "vip_subnet_id": plan::VIP_SUBNET_ID}}),
        )
        .await?;
    let lb_id = lb["id"].as_str().unwrap_or_default().to_owned();
    let lb_path = format!("/v2/lbaas/loadbalancers/{lb_id}");
    let vip: IpAddr = lb["vip_address"]
        .as_str()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| DemoError::Step(format!("no VIP in {lb}")))?;
    let created = api
        .wait_for(
            &lb_path,
            "loadbalancer",
            "provisioning_status",
            "ACTIVE",
            Duration::from_secs(120),
        )
        .await?;
    summary.add("LB create -> ACTIVE (2 LB VMs)", ms(created));
    summary.add("VIP", vip.to_string());

    progress.step("listener HTTP:80, pool ROUND_ROBIN, 2 members, HTTP health monitor");
    let t = Instant::now();
    let listener = api
        .create(
            "/v2/lbaas/listeners",
            "listener",
            json!({"listener": {"name": "web", "loadbalancer_id": lb_id, "protocol": "HTTP", "protocol_port": 80}}),
        )
        .await?;
    wait_active(&api, &lb_path).await?;
    let pool = api
        .create(
            "/v2/lbaas/pools",
            "pool",
            json!({"pool": {"name": "web", "listener_id": listener["id"], "protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN"}}),
        )
        .await?;
    let pool_id = pool["id"].as_str().unwrap_or_default().to_owned();
    wait_active(&api, &lb_path).await?;
    for m in &members {
        api.create(
            &format!("/v2/lbaas/pools/{pool_id}/members"),
            "member",
            json!({"member": {"name": format!("m{}", m.index), "address": m.addr.to_string(),
                   "protocol_port": opts.member_port, "subnet_id": plan::MEMBER_SUBNET_ID}}),
        )
        .await?;
        wait_active(&api, &lb_path).await?;
    }
    api.create(
        "/v2/lbaas/healthmonitors",
        "healthmonitor",
        json!({"healthmonitor": {"pool_id": pool_id, "type": "HTTP", "delay": 1, "timeout": 1,
               "max_retries": 1, "max_retries_down": 2, "url_path": "/health"}}),
    )
    .await?;
    wait_active(&api, &lb_path).await?;
    summary.add(
        "listener+pool+2 members+HM applied on all VMs",
        ms(t.elapsed()),
    );

    progress
        .step("waiting for both gateways to hold 2 ECMP paths to the VIP and the LB to be ONLINE");
    let IpAddr::V4(vip4) = vip else {
        return Err(DemoError::Step(
            "IPv6 VIPs are not supported by the local cloud".into(),
        ));
    };
    let ecmp = local
        .lab()
        .await
        .wait_paths(vip4, 2, Duration::from_secs(30))
        .await?;
    summary.add(
        "ECMP paths on each gateway",
        format!("2 (after {})", ms(ecmp)),
    );
    let online = api
        .wait_for(
            &lb_path,
            "loadbalancer",
            "operating_status",
            "ONLINE",
            Duration::from_secs(30),
        )
        .await?;
    summary.add("LB operating_status ONLINE after", ms(online));

    progress.step(&format!(
        "sending {} requests from the client namespace",
        opts.requests
    ));
    let vm_before = per_vm_connections(&reports, &lb_id).await;
    let load = client_load(&local, opts, vip, opts.requests, Pace::Parallel(8)).await?;
    wait_fresh_reports(&reports, &lb_id, Instant::now()).await;
    let vm_after = per_vm_connections(&reports, &lb_id).await;
    summary.add(
        "requests ok / failed",
        format!("{} / {}", load["ok"], load["failed"]),
    );
    summary.add("split across members", split_text(&load["by_header"]));
    summary.add("split across LB VMs", vm_split(&vm_before, &vm_after));
    // The same traffic as the API reports it (heartbeats → health manager → /stats).
    tokio::time::sleep(Duration::from_millis(1200)).await; // one health-manager tick after
    let stats = api
        .get(&format!("{lb_path}/stats"))
        .await?
        .unwrap_or_default();
    summary.add(
        "API /stats total_connections",
        stats["stats"]["total_connections"].to_string(),
    );

    progress.step(&format!(
        "TLS: TERMINATED_HTTPS:443 with SNI certificates for {} from klb's secret store",
        tls::NAMES.join(" and ")
    ));
    let client_ns = local.lab().await.client_ns();
    let tls = tls::run(&api, &client_ns, &lb_id, &pool_id, vip, 20).await?;
    summary.add(
        "TLS listener (2 SNI certs) applied on all VMs",
        ms(tls.applied),
    );
    summary.add(
        "TLS requests ok / failed (certificate verified per SNI name)",
        format!("{} / {}", tls.ok, tls.failed),
    );
    if let Some(e) = tls.first_error {
        summary.add("TLS first failure", e);
    }

    // Paced at 200 requests/s: below the demo's PPS threshold, so no scale-out yet.
    progress.step("member churn under load: add a third member, then remove it");
    let churn = {
        let local = local.clone();
        let opts = opts.clone();
        tokio::spawn(async move { client_load(&local, &opts, vip, 800, Pace::Every(5)).await })
    };
    let m3 = local.add_member(3, &opts.klb_exe, opts.member_port).await?;
    let member3 = api
        .create(
            &format!("/v2/lbaas/pools/{pool_id}/members"),
            "member",
            json!({"member": {"name": "m3", "address": m3.addr.to_string(),
                   "protocol_port": opts.member_port, "subnet_id": plan::MEMBER_SUBNET_ID}}),
        )
        .await?;
    let added = wait_active(&api, &lb_path).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let member3_path = format!(
        "/v2/lbaas/pools/{pool_id}/members/{}",
        member3["id"].as_str().unwrap_or_default()
    );
    api.delete(&member3_path).await?;
    let removed = wait_active(&api, &lb_path).await?;
    // More samples of the same change under the same load, for a median and a maximum.
    let mut samples = vec![added, removed];
    for _ in 0..8 {
        let member = api
            .create(
                &format!("/v2/lbaas/pools/{pool_id}/members"),
                "member",
                json!({"member": {"name": "m3", "address": m3.addr.to_string(),
                       "protocol_port": opts.member_port, "subnet_id": plan::MEMBER_SUBNET_ID}}),
            )
            .await?;
        samples.push(wait_active(&api, &lb_path).await?);
        api.delete(&format!(
            "/v2/lbaas/pools/{pool_id}/members/{}",
            member["id"].as_str().unwrap_or_default()
        ))
        .await?;
        samples.push(wait_active(&api, &lb_path).await?);
    }
    samples.sort();
    let churn = churn
        .await
        .map_err(|e| DemoError::Step(format!("load task: {e}")))??;
    summary.add(
        "member churn: add / remove applied on all VMs",
        format!("{} / {}", ms(added), ms(removed)),
    );
    summary.add(
        "member churn: 18 add/remove -> ACTIVE, p50 / max",
        format!(
            "{} / {}",
            ms(samples[samples.len() / 2]),
            ms(samples[samples.len() - 1])
        ),
    );
    summary.add(
        "member churn: requests ok / failed",
        format!("{} / {}", churn["ok"], churn["failed"]),
    );
    summary.add(
        "member churn: split across members",
        split_text(&churn["by_header"]),
    );

    progress.step("killing one LB VM (SIGKILL to its agent, HAProxy and FRR) under a probe load");
    let resources = lb_resources(plane, &lb_id).await?;
    let victim = resources
        .vms
        .first()
        .ok_or_else(|| DemoError::Step("no LB VM recorded".into()))?
        .clone();
    let victim_net = local
        .vm_of(&victim.server_id)
        .await
        .ok_or_else(|| DemoError::Step("victim VM not in the lab".into()))?;
    let probe = {
        let local = local.clone();
        let opts = opts.clone();
        tokio::spawn(async move { client_load(&local, &opts, vip, 300, Pace::Every(20)).await })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let killed_at = now_ms();
    let killed = Instant::now();
    local
        .lab()
        .await
        .signal_vm(&victim_net.short_id, "KILL")
        .await?;
    let probe = probe
        .await
        .map_err(|e| DemoError::Step(format!("probe task: {e}")))??;
    let failed_at: Vec<u64> = probe["failed_at_ms"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default();
    // Failures within 2 s of the kill are the route withdrawal; later ones happen when the
    // rebuilt VM joins ECMP (Linux re-hashes some flows to it).
    let (withdraw, rejoin): (Vec<u64>, Vec<u64>) =
        failed_at.iter().partition(|t| **t <= killed_at + 2000);
    let recovered = withdraw
        .iter()
        .max()
        .map(|last| last.saturating_sub(killed_at))
        .unwrap_or(0);
    summary.add(
        "failover: failed probe requests",
        format!(
            "{} of {} (one every 20 ms): {} at the kill, {} later",
            probe["failed"],
            probe["requests"],
            withdraw.len(),
            rejoin.len()
        ),
    );
    summary.add(
        "failover: requests succeed again after",
        format!("{recovered} ms"),
    );

    progress.step("waiting for the health manager to replace the killed LB VM");
    wait_vm_replaced(plane, &lb_id, &victim.server_id, Duration::from_secs(90)).await?;
    wait_active(&api, &lb_path).await?;
    local
        .lab()
        .await
        .wait_paths(vip4, 2, Duration::from_secs(30))
        .await?;
    summary.add(
        "failover: kill -> VM rebuilt and back in ECMP",
        ms(killed.elapsed()),
    );

    progress.step("raising the PPS alarm with a bounded load: scale-out to 3 LB VMs");
    let t = Instant::now();
    let scale = {
        let local = local.clone();
        let opts = opts.clone();
        // Paced, not as fast as possible: the alarm needs two consecutive 1 s periods above
        // 300 connections/s, and an unpaced burst can be over in under two periods on a fast
        // build (the release demo then never scaled out). 500/s for 6 s.
        tokio::spawn(async move { client_load(&local, &opts, vip, 3000, Pace::Every(2)).await })
    };
    let scaled = async {
        wait_vm_count(plane, &lb_id, 3, Duration::from_secs(60)).await?;
        wait_active(&api, &lb_path).await?;
        local
            .lab()
            .await
            .wait_paths(vip4, 3, Duration::from_secs(30))
            .await?;
        Ok::<(), DemoError>(())
    }
    .await;
    let scaled_after = t.elapsed();
    let _ = scale.await;
    scaled?;
    summary.add("scale-out: 3rd LB VM in ECMP after", ms(scaled_after));
    // Counters that include the end of the alarm's load, so the split below is this load's.
    wait_fresh_reports(&reports, &lb_id, Instant::now()).await;
    let vm_before = per_vm_connections(&reports, &lb_id).await;
    let load = client_load(&local, opts, vip, opts.requests, Pace::Parallel(8)).await?;
    wait_fresh_reports(&reports, &lb_id, Instant::now()).await;
    let vm_after = per_vm_connections(&reports, &lb_id).await;
    summary.add(
        "after scale-out: ok / failed",
        format!("{} / {}", load["ok"], load["failed"]),
    );
    summary.add(
        "after scale-out: split across LB VMs",
        vm_split(&vm_before, &vm_after),
    );

    progress.step("stopping member m2: the health monitor marks it ERROR, traffic avoids it");
    let m2 = &members[1];
    let member2_id = member_id(&api, &pool_id, &m2.addr.to_string()).await?;
    for pid in klb_local::netns::ns_pids(&m2.ns).await? {
        klb_local::netns::send_signal(pid, klb_local::netns::Signal::TERM)?;
    }
    let member2_path = format!("/v2/lbaas/pools/{pool_id}/members/{member2_id}");
    let marked = api
        .wait_for(
            &member2_path,
            "member",
            "operating_status",
            "ERROR",
            Duration::from_secs(30),
        )
        .await?;
    summary.add("stopped member -> ERROR after", ms(marked));
    let load = client_load(&local, opts, vip, 200, Pace::Parallel(4)).await?;
    summary.add(
        "with m2 stopped: ok / failed",
        format!("{} / {}", load["ok"], load["failed"]),
    );
    summary.add(
        "with m2 stopped: split across members",
        split_text(&load["by_header"]),
    );

    progress.step("deleting the load balancer (cascade)");
    let t = Instant::now();
    // A late PPS alarm may still be scaling the LB: wait for ACTIVE, retry on 409.
    let mut attempts = 0;
    loop {
        wait_active(&api, &lb_path).await?;
        match api.delete(&format!("{lb_path}?cascade=true")).await {
            Err(ClientError::Status { status: 409, .. }) if attempts < 10 => attempts += 1,
            other => break other?,
        }
    }
    api.wait_gone(&lb_path, Duration::from_secs(60)).await?;
    summary.add("LB cascade delete -> gone", ms(t.elapsed()));
    progress.step("done; the local cloud is removed next");
    Ok(summary)
}

/// The id of the pool member with `address`.
async fn member_id(api: &OctaviaClient, pool_id: &str, address: &str) -> Result<String, DemoError> {
    let list = api
        .get(&format!("/v2/lbaas/pools/{pool_id}/members"))
        .await?
        .unwrap_or_default();
    list["members"]
        .as_array()
        .and_then(|ms| ms.iter().find(|m| m["address"] == address))
        .and_then(|m| m["id"].as_str())
        .map(str::to_owned)
        .ok_or_else(|| DemoError::Step(format!("no member with address {address}")))
}

async fn wait_active(api: &OctaviaClient, lb_path: &str) -> Result<Duration, ClientError> {
    api.wait_for(
        lb_path,
        "loadbalancer",
        "provisioning_status",
        "ACTIVE",
        Duration::from_secs(60),
    )
    .await
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// How a load phase sends its requests.
#[derive(Debug, Clone, Copy)]
enum Pace {
    /// One request every this many milliseconds (a probe).
    Every(u64),
    /// Back to back with this many in flight.
    Parallel(u32),
}

/// Runs `klb load` inside the client namespace; returns its JSON report.
async fn client_load(
    local: &klb_local::LocalCloud,
    opts: &DemoOptions,
    vip: IpAddr,
    count: u32,
    pace: Pace,
) -> Result<Value, DemoError> {
    let ns = local.lab().await.client_ns();
    let mut cmd = tokio::process::Command::new("ip");
    cmd.args(["netns", "exec", &ns])
        .arg(&opts.klb_exe)
        .args([
            "load",
            "--url",
            &format!("http://{vip}/"),
            "--count",
            &count.to_string(),
        ])
        .args(["--timeout-ms", "1000", "--max-seconds", "60"]);
    match pace {
        Pace::Every(ms) => {
            cmd.args(["--interval-ms", &ms.to_string(), "--concurrency", "64"]);
        }
        Pace::Parallel(n) => {
            cmd.args(["--concurrency", &n.to_string()]);
        }
    }
    cmd.kill_on_drop(true);
    let out = cmd
        .output()
        .await
        .map_err(|e| DemoError::Step(format!("running klb load: {e}")))?;
    if !out.status.success() {
        return Err(DemoError::Step(format!(
            "klb load failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    serde_json::from_slice(&out.stdout)
        .map_err(|e| DemoError::Step(format!("klb load output: {e}")))
}

fn split_text(by: &Value) -> String {
    by.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

/// Waits (up to 5 s) until every LB VM has reported after `since`, so counters include the
/// load that just ended.
async fn wait_fresh_reports(reports: &klb_health::Reports, lb_id: &str, since: Instant) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let snapshot = reports.snapshot().await;
        if snapshot
            .get(lb_id)
            .is_some_and(|vms| !vms.is_empty() && vms.values().all(|r| r.at > since))
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn per_vm_connections(reports: &klb_health::Reports, lb_id: &str) -> BTreeMap<String, u64> {
    let snapshot = reports.snapshot().await;
    snapshot
        .get(lb_id)
        .map(|vms| {
            vms.iter()
                .map(|(vm, r)| {
                    let total = r
                        .heartbeat
                        .stats
                        .listeners
                        .iter()
                        .map(|l| l.counters.total_connections)
                        .sum();
                    (vm.clone(), total)
                })
                .collect()
        })
        .unwrap_or_default()
}

fn vm_split(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> String {
    after
        .iter()
        .map(|(vm, total)| {
            // HAProxy counters restart with each reload (a new worker): a smaller total
            // means a reset, and the whole new total is this window's.
            let previous = *before.get(vm).unwrap_or(&0);
            let delta = if *total >= previous {
                total - previous
            } else {
                *total
            };
            format!("{}={delta}", &vm[..8.min(vm.len())])
        })
        .collect::<Vec<_>>()
        .join(" ")
}

async fn lb_resources(plane: &ControlPlane, lb_id: &str) -> Result<LbResources, DemoError> {
    let doc = plane
        .store()
        .get(RESOURCES_KIND, lb_id)
        .await?
        .ok_or_else(|| DemoError::Step("no LB resources recorded".into()))?;
    serde_json::from_str(&doc.body).map_err(|e| DemoError::Step(e.to_string()))
}

async fn wait_vm_replaced(
    plane: &ControlPlane,
    lb_id: &str,
    old_server: &str,
    limit: Duration,
) -> Result<(), DemoError> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Ok(r) = lb_resources(plane, lb_id).await
            && !r.vms.iter().any(|vm| vm.server_id == old_server)
            && r.vms.iter().all(|vm| vm.active)
            && r.vms.len() >= 2
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(DemoError::Step(format!(
        "LB VM {} was not replaced within {limit:?}",
        vm_record_id(old_server)
    )))
}

async fn wait_vm_count(
    plane: &ControlPlane,
    lb_id: &str,
    want: usize,
    limit: Duration,
) -> Result<(), DemoError> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Ok(r) = lb_resources(plane, lb_id).await
            && r.vms.iter().filter(|vm| vm.active).count() >= want
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(DemoError::Step(format!(
        "the LB did not reach {want} VMs within {limit:?}"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer into a shared buffer. A std lock is right here: these tests are synchronous,
    /// there is no async runtime to stall.
    #[allow(clippy::disallowed_types)]
    #[derive(Clone, Default)]
    struct Buf(Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Buf {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    fn script(screen: &mut Screen) {
        screen.begin("[1/2] wait");
        screen.tick_to(1);
        screen.tick_to(12);
        screen.line("        rate: 5/s");
        screen.begin("[2/2] done");
        screen.close();
        screen.line("table");
    }

    #[test]
    fn a_terminal_gets_a_ticker_on_the_open_step_line() {
        let buf = Buf::default();
        script(&mut Screen::new(Box::new(buf.clone()), true));
        assert_eq!(
            buf.text(),
            "[1/2] wait  (1s)\x08\x08\x08\x08\x08\x08  (12s)\n        rate: 5/s\n[2/2] done\ntable\n"
        );
    }

    #[test]
    fn a_pipe_gets_whole_lines_without_ticker() {
        let buf = Buf::default();
        let mut screen = Screen::new(Box::new(buf.clone()), false);
        script(&mut screen);
        screen.tick();
        assert_eq!(
            buf.text(),
            "[1/2] wait\n        rate: 5/s\n[2/2] done\ntable\n"
        );
    }
}
