//! Issue 11 §3: slow clients against a real `klb serve` (child process, noop provider, SQLite
//! in a temp dir, loopback only). Thousands of connections that send half a request line and
//! stall must not keep normal requests from being answered (each within 2 s), the server
//! closes them after its header-read timeout, and its RSS is back under the 64 MiB budget
//! once they are gone. Bounded: 4,000 connections (fewer if this process's descriptor limit
//! is lower), about 30 s.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use support::{free_port, serve, wait_up};

const STALLED: usize = 4000;
const RSS_BUDGET_KIB: u64 = 64 * 1024;

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn soft_nofile() -> usize {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|l| {
            l.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3).map(str::to_owned))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024)
}

/// One normal request on a new connection; how long the full answer took.
fn timed_get(addr: SocketAddr) -> Duration {
    let start = Instant::now();
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    s.write_all(
        b"GET /v2/lbaas/loadbalancers HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n",
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out)
        .expect("answered within 2 s while slow clients are connected");
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    start.elapsed()
}

#[test]
fn stalled_clients_do_not_starve_the_api_and_memory_comes_back() {
    let n = STALLED.min(soft_nofile().saturating_sub(256));
    if n < STALLED {
        println!("descriptor limit: {n} stalled connections instead of {STALLED}");
    }
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let port = free_port();
    let config = dir.path().join("klb.toml");
    std::fs::write(
        &config,
        format!(
            "[api]\nbind = \"127.0.0.1:{port}\"\n[database]\nurl = \"sqlite://{}/klb.db\"\n",
            state.display()
        ),
    )
    .unwrap();
    let server = serve(&config, &state, "serve.log");
    let pid = server.0.id();
    let url = format!("http://127.0.0.1:{port}");
    wait_up(&url);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    for _ in 0..20 {
        timed_get(addr);
    }
    let rss_start = rss_kib(pid);

    let started = Instant::now();
    let mut stalled = Vec::with_capacity(n);
    let mut slowest = Duration::ZERO;
    for i in 0..n {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect");
        s.write_all(b"GET /v2/lbaas/loadbal").unwrap();
        stalled.push(s);
        if i % 250 == 249 {
            slowest = slowest.max(timed_get(addr));
        }
    }
    let connect_time = started.elapsed();
    // All of them open at once: normal requests still get through.
    for _ in 0..20 {
        slowest = slowest.max(timed_get(addr));
    }
    let rss_peak = rss_kib(pid);
    assert!(slowest < Duration::from_secs(2), "{slowest:?}");

    // The header-read timeout (10 s) closes them: a sample reads EOF (or a reset).
    let closed_in = Instant::now();
    for s in stalled.iter_mut().step_by(400) {
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut buf = [0u8; 256];
        match s.read(&mut buf) {
            Ok(0) | Err(_) => {}
            Ok(n) => panic!("unexpected {n} bytes on a stalled connection"),
        }
    }
    let closed_after = closed_in.elapsed();
    assert!(closed_in.elapsed() < Duration::from_secs(20));
    drop(stalled);

    // Memory comes back (bounded wait).
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut rss_after = rss_kib(pid);
    while rss_after > RSS_BUDGET_KIB && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        rss_after = rss_kib(pid);
    }
    timed_get(addr);
    println!(
        "slow clients: {n} stalled; slowest normal request {slowest:?}; connecting them took {connect_time:?}; the sampled ones were closed {closed_after:?} later; \
         RSS start {} KiB, with stalled {} KiB, after {} KiB",
        rss_start, rss_peak, rss_after
    );
    assert!(
        rss_after <= RSS_BUDGET_KIB,
        "RSS {rss_after} KiB after the slow clients left (budget {RSS_BUDGET_KIB} KiB)"
    );
}
