//! Helpers shared by the `klb` binary's integration tests (each test binary uses a subset).
#![allow(dead_code)]

pub mod os_cli;
pub mod standin;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Why a root/namespace test cannot run here (`None`: it can).
pub fn cannot_run_as_root() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let root = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        == Some("0");
    if !root {
        return Some("not root".into());
    }
    [
        "/usr/sbin/haproxy",
        "/usr/lib/frr/bgpd",
        "/usr/lib/frr/bfdd",
        "/usr/bin/curl",
    ]
    .iter()
    .find(|bin| !Path::new(bin).exists())
    .map(|bin| format!("{bin} missing"))
}

/// A child process stopped by its PID when dropped (also when the test fails).
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A loopback port free right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A tiny HTTP client via curl (no HTTP client dependency for a few calls): the JSON body
/// (`Null` when empty), or `None` on a transport error or a non-2xx status.
pub fn http(method: &str, url: &str, body: Option<&str>) -> Option<serde_json::Value> {
    let mut cmd = Command::new("curl");
    cmd.args([
        "-sf",
        "-m",
        "5",
        "-X",
        method,
        "-H",
        "Content-Type: application/json",
    ]);
    if let Some(body) = body {
        cmd.args(["-d", body]);
    }
    let out = cmd.arg(url).output().ok()?;
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout)
        .ok()
        .or(Some(serde_json::Value::Null))
}

/// Waits (up to 60 s) until `klb serve` answers on `base`.
pub fn wait_up(base: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if http("GET", &format!("{base}/"), None).is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("klb serve did not answer on {base}");
}

/// A load balancer's `provisioning_status` ("" when it is gone).
pub fn lb_status(base: &str, lb_id: &str) -> String {
    http(
        "GET",
        &format!("{base}/v2/lbaas/loadbalancers/{lb_id}"),
        None,
    )
    .and_then(|v| {
        v["loadbalancer"]["provisioning_status"]
            .as_str()
            .map(str::to_owned)
    })
    .unwrap_or_default()
}

/// `klb serve --config config --state-dir state`, its log in `state/log`; killed on drop.
pub fn serve(config: &Path, state: &Path, log: &str) -> Guard {
    let log = std::fs::File::create(state.join(log)).unwrap();
    Guard(
        Command::new(env!("CARGO_BIN_EXE_klb"))
            .args(["serve", "--config"])
            .arg(config)
            .arg("--state-dir")
            .arg(state)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("klb serve starts"),
    )
}

/// Wall time of each step of the last completed flow run of `kind` in the flow database of a
/// control plane on SQLite (`<state dir>/flows.db`; first start to last finish of the step, so
/// a waiting step's polls and pauses count), as `(step, ms)` in step order, and the run's
/// total. Reads with the `sqlite3` CLI.
pub fn step_times(state_dir: &Path, kind: &str) -> (Vec<(String, i64)>, i64) {
    let db = state_dir.join("flows.db");
    let sql = format!(
        "WITH run AS (SELECT id FROM flow_runs WHERE kind = '{kind}' AND state = 'completed' \
         ORDER BY seq DESC LIMIT 1) \
         SELECT name, MAX(finished_ms) - MIN(started_ms), MIN(started_ms), MAX(finished_ms) \
         FROM flow_steps WHERE run_id = (SELECT id FROM run) AND phase = 'execute' \
         GROUP BY step, name ORDER BY step"
    );
    let out = Command::new("sqlite3")
        .args(["-separator", "|"])
        .arg(&db)
        .arg(sql)
        .output()
        .expect("sqlite3 runs (scripts/install-deps.sh installs it)");
    let rows: Vec<(String, i64, i64, i64)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut f = l.split('|');
            Some((
                f.next()?.to_owned(),
                f.next()?.parse().ok()?,
                f.next()?.parse().ok()?,
                f.next()?.parse().ok()?,
            ))
        })
        .collect();
    let total = match (rows.first(), rows.last()) {
        (Some(first), Some(last)) => last.3 - first.2,
        _ => 0,
    };
    (
        rows.into_iter().map(|(n, ms, _, _)| (n, ms)).collect(),
        total,
    )
}

/// `step_times` as printable lines.
pub fn step_table(title: &str, times: &(Vec<(String, i64)>, i64)) -> String {
    let mut out = format!("{title} (total {} ms)\n", times.1);
    for (name, ms) in &times.0 {
        out.push_str(&format!("  {name:<22} {ms:>6} ms\n"));
    }
    out
}
