//! Benchmarks of the HAProxy data plane on loopback (run by this crate's tests, which print the
//! figures) and the load tools the data-plane tests share: tiny HTTP backends and a bounded load generator that
//! opens a new connection per request.
//!
//! * [`bench_member_change`]: a member add / weight change / removal, from `apply` to the
//!   change being visible in `show stat`, p50/p99.
//! * [`bench_reload_under_load`]: full reloads during a bounded load; failed requests.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use klb_proto::{ApplyMethod, DesiredState, LbAlgorithm, ListenerProtocol, PoolProtocol};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::apply::{ApplyError, Haproxy, HaproxyConfig};
use super::fixture;
use super::runtime;

/// A minimal HTTP/1.1 server on loopback answering `200` with header `X-Srv: <name>`.
pub struct Backend {
    /// Its name (returned in `X-Srv` and the body).
    pub name: String,
    /// Where it listens.
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Backend {
    /// Starts a backend on `127.0.0.1:<ephemeral>`.
    pub async fn spawn(name: &str) -> std::io::Result<Backend> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let n = name.to_owned();
        let task = tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let n = n.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::with_capacity(1024);
                    let mut chunk = [0u8; 1024];
                    loop {
                        match tokio::time::timeout(Duration::from_secs(10), conn.read(&mut chunk))
                            .await
                        {
                            Ok(Ok(0)) | Err(_) | Ok(Err(_)) => return,
                            Ok(Ok(k)) => buf.extend_from_slice(&chunk[..k]),
                        }
                        if buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.len() > 16 * 1024 {
                            break;
                        }
                    }
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nX-Srv: {n}\r\nConnection: close\r\n\r\n{n}",
                        n.len()
                    );
                    let _ = conn.write_all(resp.as_bytes()).await;
                    let _ = conn.shutdown().await;
                });
            }
        });
        Ok(Backend {
            name: name.to_owned(),
            addr,
            task,
        })
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Outcome of a bounded load run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Requests attempted.
    pub sent: usize,
    /// Answered with 200.
    pub ok: usize,
    /// Failed (connect error, reset, timeout, non-200).
    pub failed: usize,
    /// The first few failure reasons.
    pub errors: Vec<String>,
    /// 200 answers per `X-Srv` value.
    pub per_backend: BTreeMap<String, usize>,
}

/// Sends `requests` HTTP GETs to `target`, `concurrency` at a time, each on a new connection
/// (`Connection: close`), stopping early at `deadline`. Each request has a 5 s timeout.
pub async fn run_load(
    target: SocketAddr,
    requests: usize,
    concurrency: usize,
    deadline: Duration,
) -> LoadReport {
    run_load_observed(
        target,
        requests,
        concurrency,
        deadline,
        Duration::ZERO,
        Arc::new(AtomicUsize::new(0)),
    )
    .await
}

/// [`run_load`] that waits `pace` between a worker's requests (loopback is fast: unpaced, 2000
/// requests finish before one reload does) and counts finished requests in `done`, so callers
/// can act at given points of the load instead of at guessed times.
pub async fn run_load_observed(
    target: SocketAddr,
    requests: usize,
    concurrency: usize,
    deadline: Duration,
    pace: Duration,
    done: Arc<AtomicUsize>,
) -> LoadReport {
    let next = Arc::new(AtomicUsize::new(0));
    let end = Instant::now() + deadline;
    let mut workers = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (next, done) = (next.clone(), done.clone());
        workers.push(tokio::spawn(async move {
            let mut r = LoadReport::default();
            while next.fetch_add(1, Ordering::Relaxed) < requests && Instant::now() < end {
                r.sent += 1;
                match tokio::time::timeout(Duration::from_secs(5), one_request(target)).await {
                    Ok(Ok(srv)) => {
                        r.ok += 1;
                        *r.per_backend.entry(srv).or_default() += 1;
                    }
                    Ok(Err(e)) => fail(&mut r, e),
                    Err(_) => fail(&mut r, "timeout".into()),
                }
                done.fetch_add(1, Ordering::Relaxed);
                if !pace.is_zero() {
                    tokio::time::sleep(pace).await;
                }
            }
            r
        }));
    }
    let mut total = LoadReport::default();
    for w in workers {
        let r = w.await.unwrap_or_default();
        total.sent += r.sent;
        total.ok += r.ok;
        total.failed += r.failed;
        total.errors.extend(r.errors);
        for (k, v) in r.per_backend {
            *total.per_backend.entry(k).or_default() += v;
        }
    }
    total.errors.truncate(10);
    total
}

fn fail(r: &mut LoadReport, e: String) {
    r.failed += 1;
    if r.errors.len() < 10 {
        r.errors.push(e);
    }
}

async fn one_request(target: SocketAddr) -> Result<String, String> {
    let mut s = TcpStream::connect(target)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: kh.test\r\nConnection: close\r\n\r\n")
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)
        .await
        .map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&buf);
    if !text.starts_with("HTTP/1.1 200") {
        return Err(format!("status: {:?}", text.lines().next().unwrap_or("")));
    }
    let srv = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("X-Srv: ")
                .or_else(|| l.strip_prefix("x-srv: "))
        })
        .unwrap_or("?")
        .trim()
        .to_owned();
    Ok(srv)
}

/// Waits (bounded by 60 s) until `done` reaches `n`.
pub async fn wait_for_progress(done: &AtomicUsize, n: usize) {
    let end = Instant::now() + Duration::from_secs(60);
    while done.load(Ordering::Relaxed) < n && Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// A free TCP port on 127.0.0.1 (bound then released; fine for tests and benches).
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

/// A private directory removed on drop.
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    /// Creates `<tmp>/<prefix>-<pid>-<n>`.
    pub fn new(prefix: &str) -> std::io::Result<ScratchDir> {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "{prefix}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p)?;
        Ok(ScratchDir(p))
    }

    /// The path.
    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running HAProxy with one HTTP listener on loopback and `n_backends` backends in pool `p1`.
pub struct Lab {
    /// The supervisor (stopped on drop).
    pub haproxy: Haproxy,
    /// The last applied state.
    pub state: DesiredState,
    /// Backends, member `m<i>` is `backends[i]`.
    pub backends: Vec<Backend>,
    /// The listener's address.
    pub frontend: SocketAddr,
    /// Dropped last: the runtime directory.
    _dir: ScratchDir,
}

impl Lab {
    /// Starts backends and HAProxy (`haproxy_binary`, e.g. `/usr/sbin/haproxy`).
    pub async fn start(
        haproxy_binary: &std::path::Path,
        n_backends: usize,
    ) -> Result<Lab, BenchError> {
        let dir = ScratchDir::new("kh-lab").map_err(BenchError::Io)?;
        let mut backends = Vec::new();
        for i in 0..n_backends {
            backends.push(
                Backend::spawn(&format!("m{i}"))
                    .await
                    .map_err(BenchError::Io)?,
            );
        }
        let port = free_port().map_err(BenchError::Io)?;
        let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let members = backends
            .iter()
            .map(|b| fixture::member(&b.name, localhost, b.addr.port()))
            .collect();
        let mut state = fixture::state(
            localhost,
            vec![fixture::listener(
                "l1",
                ListenerProtocol::Http,
                port,
                Some("p1"),
            )],
            vec![fixture::pool(
                "p1",
                PoolProtocol::Http,
                LbAlgorithm::RoundRobin,
                members,
            )],
        );
        // HAProxy needs about 2 fds per connection and refuses to start when it cannot raise
        // RLIMIT_NOFILE that far; test machines often cap it at 20000.
        state.global.maxconn = 4000;
        let mut cfg = HaproxyConfig::new(dir.path());
        cfg.binary = haproxy_binary.to_path_buf();
        let mut haproxy = Haproxy::new(cfg);
        haproxy.apply(&state).await?;
        Ok(Lab {
            haproxy,
            state,
            backends,
            frontend: SocketAddr::new(localhost, port),
            _dir: dir,
        })
    }

    /// Applies `change` to a copy of the state with the next version.
    pub async fn change(
        &mut self,
        change: impl FnOnce(&mut DesiredState),
    ) -> Result<ApplyMethod, ApplyError> {
        let mut s = self.state.clone();
        s.version += 1;
        change(&mut s);
        let reply = self.haproxy.apply(&s).await?;
        self.state = s;
        Ok(reply.method)
    }

    /// Adds one more backend process (not yet a member).
    pub async fn add_backend(&mut self) -> Result<&Backend, BenchError> {
        let b = Backend::spawn(&format!("m{}", self.backends.len()))
            .await
            .map_err(BenchError::Io)?;
        self.backends.push(b);
        Ok(self.backends.last().expect("just pushed"))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Haproxy's own Drop kills the master by PID; nothing else to do here.
    }
}

/// A bench failure.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Setting up sockets or directories failed.
    #[error("bench setup: {0}")]
    Io(std::io::Error),
    /// Applying a state failed.
    #[error(transparent)]
    Apply(#[from] ApplyError),
    /// A change never became visible.
    #[error("change {0} not visible in show stat within 5 s")]
    NotVisible(String),
}

/// Latency distribution of member changes.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberChangeReport {
    /// Changes measured.
    pub changes: usize,
    /// Median apply-to-visible latency, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Maximum, ms.
    pub max_ms: f64,
    /// How many changes went through the runtime API (the rest reloaded).
    pub runtime_applied: usize,
}

/// Performs `n` member changes (cycling add / weight change / remove of an extra member) on a
/// loopback HAProxy and measures from the start of `apply` until `show stat` shows the change.
pub async fn bench_member_change(
    haproxy_binary: &std::path::Path,
    n: usize,
) -> Result<MemberChangeReport, BenchError> {
    let mut lab = Lab::start(haproxy_binary, 2).await?;
    let extra = lab.add_backend().await?;
    let (extra_name, extra_port) = (extra.name.clone(), extra.addr.port());
    let admin = lab.haproxy.paths().admin_socket();
    let mut samples = Vec::with_capacity(n);
    let mut runtime_applied = 0;
    for i in 0..n {
        let step = i % 3;
        let t0 = Instant::now();
        let method = lab
            .change(|s| {
                let members = &mut s.pools[0].members;
                match step {
                    0 => members.push(fixture::member(
                        &extra_name,
                        IpAddr::V4(Ipv4Addr::LOCALHOST),
                        extra_port,
                    )),
                    1 => members.last_mut().expect("extra member").weight = 7,
                    _ => {
                        members.pop();
                    }
                }
            })
            .await?;
        if method == ApplyMethod::Runtime {
            runtime_applied += 1;
        }
        // Poll until visible.
        let deadline = t0 + Duration::from_secs(5);
        loop {
            let rows = runtime::show_stat(&admin).await.map_err(ApplyError::from)?;
            let row = rows
                .iter()
                .find(|r| r.pxname == "p1:l1" && r.svname == extra_name);
            let visible = match step {
                0 => row.is_some_and(|r| !r.get("status").starts_with("MAINT")),
                1 => row.is_some_and(|r| r.get("weight") == "7"),
                _ => row.is_none(),
            };
            if visible {
                break;
            }
            if Instant::now() > deadline {
                return Err(BenchError::NotVisible(format!("step {step} of change {i}")));
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        samples.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    lab.haproxy.stop().await?;
    samples.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        samples
            .get(((samples.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(0.0)
    };
    Ok(MemberChangeReport {
        changes: n,
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
        max_ms: pct(1.0),
        runtime_applied,
    })
}

/// Outcome of reloads under load.
#[derive(Debug, Clone, PartialEq)]
pub struct ReloadReport {
    /// Reloads performed.
    pub reloads: usize,
    /// The load's outcome.
    pub load: LoadReport,
    /// Median reload duration (apply start to new worker), ms.
    pub reload_p50_ms: f64,
    /// Slowest reload, ms.
    pub reload_max_ms: f64,
}

/// Runs a bounded load (`requests`, 4 concurrent, new connection each, `pace` between a
/// worker's requests) while performing `reloads` full reloads spread over it (each changes the
/// client timeout, which needs a reload).
pub async fn bench_reload_under_load(
    haproxy_binary: &std::path::Path,
    reloads: usize,
    requests: usize,
    pace: Duration,
) -> Result<ReloadReport, BenchError> {
    let mut lab = Lab::start(haproxy_binary, 3).await?;
    let done = Arc::new(AtomicUsize::new(0));
    let load = tokio::spawn(run_load_observed(
        lab.frontend,
        requests,
        4,
        Duration::from_secs(120),
        pace,
        done.clone(),
    ));
    let mut durations = Vec::new();
    for i in 0..reloads {
        // Spread the reloads over the first 90 % of the load.
        wait_for_progress(&done, requests * 9 / 10 * i / reloads.max(1)).await;
        if load.is_finished() {
            break;
        }
        let t0 = Instant::now();
        lab.change(|s| s.listeners[0].timeout_client_data = 50_000 + i as u32 + 1)
            .await?;
        durations.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    let load = load.await.unwrap_or_default();
    lab.haproxy.stop().await?;
    durations.sort_by(f64::total_cmp);
    Ok(ReloadReport {
        reloads: durations.len(),
        load,
        reload_p50_ms: durations.get(durations.len() / 2).copied().unwrap_or(0.0),
        reload_max_ms: durations.last().copied().unwrap_or(0.0),
    })
}
