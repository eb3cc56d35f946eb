//! Integration tests against the real HAProxy on loopback: start/stats/stop, member changes
//! through the runtime API under load, reloads under load, and refused configurations that
//! leave the old one serving. Skipped (with a printed reason) when HAProxy is not installed.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use klb_proto::{ApplyMethod, ListenerProtocol, MemberStatus};

use super::apply::ApplyError;
use super::bench::{Lab, free_port, run_load, run_load_observed, wait_for_progress};
use super::fixture;

const HAPROXY: &str = "/usr/sbin/haproxy";

/// Pause between a load worker's requests: 2000 requests then take a few seconds, long enough
/// for every change to land mid-load.
const PACE: Duration = Duration::from_millis(4);

fn have_haproxy() -> bool {
    if Path::new(HAPROXY).exists() {
        true
    } else {
        eprintln!("skipping: {HAPROXY} is not installed");
        false
    }
}

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kh_start_stats_and_stop_by_pid() {
    if !have_haproxy() {
        return;
    }
    let mut lab = Lab::start(Path::new(HAPROXY), 2).await.unwrap();
    let load = run_load(lab.frontend, 200, 4, Duration::from_secs(30)).await;
    assert_eq!(load.failed, 0, "{load:?}");
    assert_eq!(
        load.per_backend.len(),
        2,
        "round robin over both members: {load:?}"
    );
    let stats = lab.haproxy.stats().await.unwrap();
    let l1 = stats.listeners.iter().find(|l| l.id == "l1").unwrap();
    assert!(l1.counters.requests >= 200, "{l1:?}");
    let p1 = stats
        .pools
        .iter()
        .find(|p| p.id == "p1" && p.listener_id == "l1")
        .unwrap();
    assert_eq!(p1.members.len(), 2);
    assert!(
        p1.members
            .iter()
            .all(|m| m.status == MemberStatus::NoCheck && m.counters.total_connections > 0),
        "{p1:?}"
    );
    assert!(lab.haproxy.is_up().await);

    let master = lab.haproxy.master_pid().unwrap();
    let workers = super::runtime::show_proc(&lab.haproxy.paths().master_socket())
        .await
        .unwrap()
        .workers;
    assert!(!workers.is_empty());
    lab.haproxy.stop().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!pid_alive(master), "master {master} still running");
    for w in workers {
        assert!(!pid_alive(w), "worker {w} still running");
    }
    assert!(!lab.haproxy.is_up().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kh_member_changes_use_runtime_api_under_load_without_failures() {
    if !have_haproxy() {
        return;
    }
    let mut lab = Lab::start(Path::new(HAPROXY), 2).await.unwrap();
    let b2 = lab.add_backend().await.unwrap().addr.port();
    let b3 = lab.add_backend().await.unwrap().addr.port();
    let lo = "127.0.0.1".parse().unwrap();
    let done = Arc::new(AtomicUsize::new(0));
    let load = tokio::spawn(run_load_observed(
        lab.frontend,
        2000,
        4,
        Duration::from_secs(60),
        PACE,
        done.clone(),
    ));
    type Change = Box<dyn FnOnce(&mut klb_proto::DesiredState)>;
    let changes: Vec<(&str, Change)> = vec![
        (
            "add m2",
            Box::new(move |s| s.pools[0].members.push(fixture::member("m2", lo, b2))),
        ),
        ("weight m0", Box::new(|s| s.pools[0].members[0].weight = 5)),
        (
            "disable m1",
            Box::new(|s| s.pools[0].members[1].admin_state_up = false),
        ),
        (
            "enable m1",
            Box::new(|s| s.pools[0].members[1].admin_state_up = true),
        ),
        (
            "move m1 to backend 3",
            Box::new(move |s| s.pools[0].members[1].protocol_port = b3),
        ),
        (
            "remove m2",
            Box::new(|s| {
                s.pools[0].members.retain(|m| m.id != "m2");
            }),
        ),
    ];
    for (i, (what, change)) in changes.into_iter().enumerate() {
        // Every change lands while requests are flowing.
        wait_for_progress(&done, 200 + 250 * i).await;
        let method = lab
            .change(change)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(method, ApplyMethod::Runtime, "{what}");
    }
    let load = load.await.unwrap();
    assert_eq!(load.failed, 0, "{load:?}");
    assert_eq!(load.ok, 2000);
    // m2 served while it was a member.
    assert!(
        load.per_backend.get("m2").copied().unwrap_or(0) > 0,
        "{load:?}"
    );
    // Now m0 (weight 5) and m1 at backend "m3"'s address serve; m2 is gone.
    let after = run_load(lab.frontend, 120, 4, Duration::from_secs(30)).await;
    assert_eq!(after.failed, 0, "{after:?}");
    let served: Vec<&str> = after.per_backend.keys().map(String::as_str).collect();
    assert_eq!(served, ["m0", "m3"], "{after:?}");
    assert_eq!(
        after.per_backend["m0"], 100,
        "weights 5:1 over 120 requests: {after:?}"
    );

    // Each runtime change was answered before its file's `haproxy -c`; the live file is
    // replaced once the check passes: it now holds the last servers.
    lab.haproxy.wait_file_checked().await;
    let live = std::fs::read_to_string(lab.haproxy.paths().config()).unwrap();
    assert!(
        live.contains(&format!("server m1 127.0.0.1:{b3}")),
        "{live}"
    );
    assert!(!live.contains("server m2 "), "{live}");
    assert_eq!(pending_files(&lab), Vec::<String>::new());

    // The config file carries the runtime changes: after a full reload they are still there.
    let method = lab
        .change(|s| s.listeners[0].timeout_client_data = 40_000)
        .await
        .unwrap();
    assert_eq!(method, ApplyMethod::Reload);
    let rows = super::runtime::show_stat(&lab.haproxy.paths().admin_socket())
        .await
        .unwrap();
    let servers: Vec<(&str, &str, String)> = rows
        .iter()
        .filter(|r| r.pxname == "p1:l1" && r.svname != "BACKEND")
        .map(|r| (r.svname.as_str(), r.get("weight"), r.get("addr").to_owned()))
        .collect();
    assert_eq!(
        servers,
        vec![
            (
                "m0",
                "5",
                format!("127.0.0.1:{}", lab.backends[0].addr.port())
            ),
            ("m1", "1", format!("127.0.0.1:{b3}"))
        ],
    );
    lab.haproxy.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kh_back_to_back_member_changes_chain_their_checks() {
    if !have_haproxy() {
        return;
    }
    let mut lab = Lab::start(Path::new(HAPROXY), 2).await.unwrap();
    // Five changes without waiting for any check: each one is live at once, and the live
    // file ends as the last one's, checked.
    for w in 2..=6 {
        let method = lab
            .change(|s| s.pools[0].members[0].weight = w)
            .await
            .unwrap();
        assert_eq!(method, ApplyMethod::Runtime, "weight {w}");
        let rows = super::runtime::show_stat(&lab.haproxy.paths().admin_socket())
            .await
            .unwrap();
        let weight = rows
            .iter()
            .find(|r| r.pxname == "p1:l1" && r.svname == "m0")
            .map(|r| r.get("weight").to_owned());
        assert_eq!(weight.as_deref(), Some(w.to_string().as_str()));
    }
    lab.haproxy.wait_file_checked().await;
    let live = std::fs::read_to_string(lab.haproxy.paths().config()).unwrap();
    let m0 = live
        .lines()
        .find(|l| l.trim_start().starts_with("server m0 "))
        .unwrap();
    assert!(m0.contains("weight 6"), "{m0}");
    assert_eq!(pending_files(&lab), Vec::<String>::new());
    // A reload after them starts from a checked file with the same servers.
    let method = lab
        .change(|s| s.listeners[0].timeout_client_data = 40_000)
        .await
        .unwrap();
    assert_eq!(method, ApplyMethod::Reload);
    lab.haproxy.stop().await.unwrap();
}

/// Files of member changes whose background check has not ended.
fn pending_files(lab: &Lab) -> Vec<String> {
    std::fs::read_dir(&lab.haproxy.paths().run_dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("haproxy.cfg.pending"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kh_runtime_change_whose_file_fails_the_check_never_reaches_the_live_file() {
    if !have_haproxy() {
        return;
    }
    // HAProxy behind a wrapper whose `-c` fails while a marker file exists (fault injection:
    // a member-only change HAProxy's runtime parser accepts but `haproxy -c` would not).
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("fail-checks");
    let wrapper = dir.path().join("haproxy");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nif [ \"$1\" = -c ] && [ -e '{}' ]; then echo 'injected check failure' >&2; exit 1; fi\nexec {HAPROXY} \"$@\"\n",
            marker.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut lab = Lab::start(&wrapper, 2).await.unwrap();
    let live = lab.haproxy.paths().config();
    let before = std::fs::read_to_string(&live).unwrap();

    std::fs::write(&marker, "").unwrap();
    // Applied at runtime and answered before the (failing) check of its file.
    let method = lab
        .change(|s| s.pools[0].members[0].weight = 7)
        .await
        .unwrap();
    assert_eq!(method, ApplyMethod::Runtime);
    // Once that check is known to have failed, the next change takes the reload path, whose
    // check fails too: refused, and the live file is still the last checked one.
    lab.haproxy.wait_file_checked().await;
    match lab.change(|s| s.pools[0].members[0].weight = 8).await {
        Err(ApplyError::Check { output, .. }) => {
            assert!(output.contains("injected check failure"), "{output}")
        }
        other => panic!("expected a check failure, got {other:?}"),
    }
    assert_eq!(std::fs::read_to_string(&live).unwrap(), before);
    assert_eq!(pending_files(&lab), Vec::<String>::new());

    // Checks pass again: the next member change reloads from a checked file that has it.
    std::fs::remove_file(&marker).unwrap();
    let method = lab
        .change(|s| s.pools[0].members[0].weight = 9)
        .await
        .unwrap();
    assert_eq!(method, ApplyMethod::Reload);
    let now = std::fs::read_to_string(&live).unwrap();
    assert!(now.contains("weight 9"), "{now}");
    let load = run_load(lab.frontend, 50, 4, Duration::from_secs(30)).await;
    assert_eq!(load.failed, 0, "{load:?}");
    lab.haproxy.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kh_reloads_under_load_without_failures() {
    if !have_haproxy() {
        return;
    }
    let mut lab = Lab::start(Path::new(HAPROXY), 2).await.unwrap();
    let done = Arc::new(AtomicUsize::new(0));
    let load = tokio::spawn(run_load_observed(
        lab.frontend,
        2000,
        4,
        Duration::from_secs(60),
        PACE,
        done.clone(),
    ));
    let mut reloads = 0;
    for i in 0..5u32 {
        wait_for_progress(&done, 200 + 350 * i as usize).await;
        assert!(
            !load.is_finished(),
            "reload {i} would not happen under load"
        );
        let method = lab
            .change(|s| s.listeners[0].timeout_client_data = 30_000 + i)
            .await
            .unwrap();
        assert_eq!(method, ApplyMethod::Reload);
        reloads += 1;
    }
    let load = load.await.unwrap();
    assert_eq!(reloads, 5);
    assert_eq!(load.failed, 0, "{load:?}");
    assert_eq!(load.ok, 2000);
    let proc_info = super::runtime::show_proc(&lab.haproxy.paths().master_socket())
        .await
        .unwrap();
    assert_eq!((proc_info.reloads, proc_info.failed_reloads), (5, 0));
    lab.haproxy.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kh_config_failing_check_never_replaces_the_running_one() {
    if !have_haproxy() {
        return;
    }
    let mut lab = Lab::start(Path::new(HAPROXY), 2).await.unwrap();
    let before = std::fs::read_to_string(lab.haproxy.paths().config()).unwrap();
    // Passes render-time validation (the syntax is checked), but OpenSSL knows no such
    // cipher: only `haproxy -c` does.
    let mut bad = lab.state.clone();
    bad.version += 1;
    bad.pools[0].tls_enabled = true;
    bad.pools[0].tls_ciphers = Some("NO-SUCH-CIPHER".into());
    match lab.haproxy.apply(&bad).await {
        Err(ApplyError::Check { version, output }) => {
            assert_eq!(version, bad.version);
            assert!(output.contains("unable to set SSL cipher list"), "{output}");
        }
        other => panic!("expected a check failure, got {other:?}"),
    }
    assert_eq!(lab.haproxy.running_version(), Some(lab.state.version));
    assert_eq!(
        std::fs::read_to_string(lab.haproxy.paths().config()).unwrap(),
        before
    );
    assert!(!lab.haproxy.paths().run_dir.join("haproxy.cfg.new").exists());
    let load = run_load(lab.frontend, 100, 4, Duration::from_secs(30)).await;
    assert_eq!(load.failed, 0, "old config still serves: {load:?}");
    lab.haproxy.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kh_reload_that_cannot_bind_keeps_the_old_worker() {
    if !have_haproxy() {
        return;
    }
    let mut lab = Lab::start(Path::new(HAPROXY), 2).await.unwrap();
    let before = std::fs::read_to_string(lab.haproxy.paths().config()).unwrap();
    // `haproxy -c` does not bind, so a port held by someone else only fails at reload.
    let port = free_port().unwrap();
    let _holder = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let mut s = lab.state.clone();
    s.version += 1;
    s.listeners.push(fixture::listener(
        "l2",
        ListenerProtocol::Http,
        port,
        Some("p1"),
    ));
    match lab.haproxy.apply(&s).await {
        Err(ApplyError::Reload { version, reason }) => {
            assert_eq!(version, s.version);
            eprintln!("reload refused as expected: {reason}");
        }
        other => panic!("expected a reload failure, got {other:?}"),
    }
    assert_eq!(lab.haproxy.running_version(), Some(lab.state.version));
    assert_eq!(
        std::fs::read_to_string(lab.haproxy.paths().config()).unwrap(),
        before
    );
    let load = run_load(lab.frontend, 100, 4, Duration::from_secs(30)).await;
    assert_eq!(load.failed, 0, "old worker still serves: {load:?}");
    // A good state afterwards applies normally.
    let method = lab
        .change(|s| s.listeners[0].timeout_client_data = 20_000)
        .await
        .unwrap();
    assert_eq!(method, ApplyMethod::Reload);
    let load = run_load(lab.frontend, 100, 4, Duration::from_secs(30)).await;
    assert_eq!(load.failed, 0, "{load:?}");
    lab.haproxy.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kh_stale_and_unchanged_versions() {
    if !have_haproxy() {
        return;
    }
    let mut lab = Lab::start(Path::new(HAPROXY), 1).await.unwrap();
    let mut old = lab.state.clone();
    old.version = 0;
    assert!(matches!(
        lab.haproxy.apply(&old).await,
        Err(ApplyError::Stale {
            version: 0,
            running: 1
        })
    ));
    let method = lab.change(|_| {}).await.unwrap();
    assert_eq!(method, ApplyMethod::Unchanged);
    assert_eq!(lab.haproxy.running_version(), Some(2));
    lab.haproxy.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kh_benches_run_and_report() {
    if !have_haproxy() {
        return;
    }
    // No timing assertions (shared machine): only that the benches measure what they claim.
    // Sizes can be raised for manual measurement: KH_BENCH_CHANGES, KH_BENCH_RELOADS,
    // KH_BENCH_REQUESTS.
    let env = |k: &str, d: usize| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let (changes, reloads, requests) = (
        env("KH_BENCH_CHANGES", 30),
        env("KH_BENCH_RELOADS", 5),
        env("KH_BENCH_REQUESTS", 2000),
    );
    let m = super::bench::bench_member_change(Path::new(HAPROXY), changes)
        .await
        .unwrap();
    eprintln!("member change -> visible: {m:?}");
    assert_eq!(m.changes, changes);
    assert_eq!(
        m.runtime_applied, changes,
        "every member change went through the runtime API"
    );
    assert!(m.p50_ms > 0.0 && m.p50_ms <= m.p99_ms && m.p99_ms <= m.max_ms);
    let r = super::bench::bench_reload_under_load(Path::new(HAPROXY), reloads, requests, PACE)
        .await
        .unwrap();
    eprintln!(
        "reload under load: {} reloads, {} sent, {} failed, reload p50 {:.1} ms, max {:.1} ms",
        r.reloads, r.load.sent, r.load.failed, r.reload_p50_ms, r.reload_max_ms
    );
    assert_eq!(r.reloads, reloads);
    assert_eq!(r.load.failed, 0, "{:?}", r.load);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kh_drain_disables_frontends_and_survives_reload() {
    if !have_haproxy() {
        return;
    }
    let mut lab = Lab::start(Path::new(HAPROXY), 1).await.unwrap();
    lab.haproxy.set_accepting(false).await.unwrap();
    let load = run_load(lab.frontend, 4, 1, Duration::from_secs(10)).await;
    assert_eq!(load.failed, 4, "draining refuses new connections: {load:?}");
    let method = lab
        .change(|s| s.listeners[0].timeout_client_data = 1234)
        .await
        .unwrap();
    assert_eq!(method, ApplyMethod::Reload);
    let load = run_load(lab.frontend, 4, 1, Duration::from_secs(10)).await;
    assert_eq!(load.failed, 4, "still draining after the reload: {load:?}");
    lab.haproxy.set_accepting(true).await.unwrap();
    let load = run_load(lab.frontend, 20, 2, Duration::from_secs(10)).await;
    assert_eq!(load.failed, 0, "{load:?}");
    lab.haproxy.stop().await.unwrap();
}

fn tcp_monitor() -> klb_proto::HealthMonitor {
    klb_proto::HealthMonitor {
        id: "hm1".into(),
        admin_state_up: true,
        monitor_type: klb_proto::HealthMonitorType::Tcp,
        delay: 1,
        timeout: 1,
        max_retries: 1,
        max_retries_down: 1,
        http_method: None,
        url_path: None,
        expected_codes: None,
        http_version: None,
        domain_name: None,
    }
}

/// Polls `show stat` until member `id` of `p1:l1` has `status` (bounded).
async fn wait_member_status(
    lab: &Lab,
    id: &str,
    status: MemberStatus,
) -> Vec<(String, MemberStatus)> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let stats = lab.haproxy.stats().await.unwrap();
        let members: Vec<(String, MemberStatus)> = stats
            .pools
            .iter()
            .flat_map(|p| p.members.iter().map(|m| (m.id.clone(), m.status)))
            .collect();
        if members.iter().any(|(m, s)| m == id && *s == status)
            || tokio::time::Instant::now() > deadline
        {
            return members;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kh_runtime_added_members_get_health_checks_cookie_pools_reload() {
    if !have_haproxy() {
        return;
    }
    let mut lab = Lab::start(Path::new(HAPROXY), 1).await.unwrap();
    let method = lab
        .change(|s| s.pools[0].health_monitor = Some(tcp_monitor()))
        .await
        .unwrap();
    assert_eq!(method, ApplyMethod::Reload);
    let live = lab.add_backend().await.unwrap().addr.port();
    let dead = free_port().unwrap(); // nothing listens there
    let lo = "127.0.0.1".parse().unwrap();
    let method = lab
        .change(move |s| {
            s.pools[0].members.push(fixture::member("m1", lo, live));
            s.pools[0].members.push(fixture::member("m9", lo, dead));
        })
        .await
        .unwrap();
    assert_eq!(
        method,
        ApplyMethod::Runtime,
        "add server with check options, enable health"
    );
    let members = wait_member_status(&lab, "m9", MemberStatus::Down).await;
    assert!(
        members.contains(&("m9".into(), MemberStatus::Down)),
        "{members:?}"
    );
    let members = wait_member_status(&lab, "m1", MemberStatus::Up).await;
    assert!(
        members.contains(&("m1".into(), MemberStatus::Up)),
        "{members:?}"
    );
    // The dead member is never chosen; both live ones serve.
    let load = run_load(lab.frontend, 40, 2, Duration::from_secs(20)).await;
    assert_eq!(load.failed, 0, "{load:?}");
    assert_eq!(load.per_backend.len(), 2, "{load:?}");

    // HTTP_COOKIE pools: HAProxy 2.6 refuses `cookie` on `add server`, so adding a member
    // reloads; other member changes stay on the runtime API.
    let cookie = klb_proto::SessionPersistence {
        persistence_type: klb_proto::SessionPersistenceType::HttpCookie,
        cookie_name: None,
        persistence_timeout: None,
        persistence_granularity: None,
    };
    assert_eq!(
        lab.change(|s| s.pools[0].session_persistence = Some(cookie))
            .await
            .unwrap(),
        ApplyMethod::Reload
    );
    let extra = lab.add_backend().await.unwrap().addr.port();
    let method = lab
        .change(move |s| s.pools[0].members.push(fixture::member("m2", lo, extra)))
        .await
        .unwrap();
    assert_eq!(method, ApplyMethod::Reload);
    let method = lab
        .change(|s| s.pools[0].members[0].weight = 3)
        .await
        .unwrap();
    assert_eq!(method, ApplyMethod::Runtime);
    let load = run_load(lab.frontend, 40, 2, Duration::from_secs(20)).await;
    assert_eq!(load.failed, 0, "{load:?}");
    lab.haproxy.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kh_source_ip_port_hash_spreads_and_accepts_runtime_servers() {
    if !have_haproxy() {
        return;
    }
    let mut lab = Lab::start(Path::new(HAPROXY), 3).await.unwrap();
    let method = lab
        .change(|s| s.pools[0].lb_algorithm = klb_proto::LbAlgorithm::SourceIpPort)
        .await
        .unwrap();
    assert_eq!(method, ApplyMethod::Reload);
    // All clients share 127.0.0.1: only the port can spread them (`balance source` would not).
    let load = run_load(lab.frontend, 300, 4, Duration::from_secs(30)).await;
    assert_eq!(load.failed, 0, "{load:?}");
    assert_eq!(load.per_backend.len(), 3, "{load:?}");
    assert!(
        load.per_backend.values().all(|&n| n >= 30),
        "roughly even: {load:?}"
    );
    // Consistent hashing lets `add server` work on a hash backend.
    let port = lab.add_backend().await.unwrap().addr.port();
    let lo = "127.0.0.1".parse().unwrap();
    let method = lab
        .change(move |s| s.pools[0].members.push(fixture::member("m3", lo, port)))
        .await
        .unwrap();
    assert_eq!(method, ApplyMethod::Runtime);
    let load = run_load(lab.frontend, 300, 4, Duration::from_secs(30)).await;
    assert_eq!(load.failed, 0, "{load:?}");
    assert!(load.per_backend.contains_key("m3"), "{load:?}");
    // Ring positions follow the server ids: the runtime-added server keeps its id on reload.
    let sids = |rows: Vec<super::runtime::StatRow>| -> Vec<(String, String)> {
        rows.into_iter()
            .filter(|r| r.svname.starts_with('m'))
            .map(|r| (r.svname.clone(), r.get("sid").to_owned()))
            .collect()
    };
    let admin = lab.haproxy.paths().admin_socket();
    // Removing a member in the middle would renumber the others on reload without fixed ids.
    let method = lab
        .change(|s| s.pools[0].members.retain(|m| m.id != "m1"))
        .await
        .unwrap();
    assert_eq!(method, ApplyMethod::Runtime);
    let before = sids(super::runtime::show_stat(&admin).await.unwrap());
    assert_eq!(
        lab.change(|s| s.listeners[0].timeout_client_data = 1234)
            .await
            .unwrap(),
        ApplyMethod::Reload
    );
    let after = sids(super::runtime::show_stat(&admin).await.unwrap());
    assert_eq!(before.len(), 3);
    assert_eq!(before, after);
    lab.haproxy.stop().await.unwrap();
}

/// A network namespace deleted on drop.
struct Netns(String);

impl Netns {
    fn create(name: &str) -> Option<Netns> {
        let ok = |args: &[&str]| {
            std::process::Command::new("ip")
                .args(args)
                .status()
                .is_ok_and(|s| s.success())
        };
        if !ok(&["netns", "add", name]) {
            return None;
        }
        let ns = Netns(name.to_owned());
        ok(&["-n", name, "link", "set", "lo", "up"]).then_some(ns)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.0])
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kh_runs_inside_a_network_namespace_via_command_prefix() {
    if !have_haproxy() {
        return;
    }
    if std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        !s.lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
    }) {
        eprintln!("skipping: needs root for ip netns");
        return;
    }
    let name = format!("kh-ns-{}", std::process::id());
    let Some(_ns) = Netns::create(&name) else {
        panic!("ip netns add {name} failed although running as root");
    };
    let dir = super::bench::ScratchDir::new("kh-ns").unwrap();
    let mut cfg = super::HaproxyConfig::new(dir.path());
    cfg.command_prefix = vec!["ip".into(), "netns".into(), "exec".into(), name.clone()];
    let mut h = super::Haproxy::new(cfg);
    // Inside the namespace 127.0.0.1 is the namespace's own loopback; members need not exist.
    let lo = "127.0.0.1".parse().unwrap();
    let mut state = fixture::state(
        lo,
        vec![fixture::listener(
            "l1",
            ListenerProtocol::Http,
            18080,
            Some("p1"),
        )],
        vec![fixture::pool(
            "p1",
            klb_proto::PoolProtocol::Http,
            klb_proto::LbAlgorithm::RoundRobin,
            vec![fixture::member("m0", lo, 18081)],
        )],
    );
    state.global.maxconn = 2000;
    assert_eq!(h.apply(&state).await.unwrap().method, ApplyMethod::Start);
    let master = h.master_pid().unwrap();
    let ours = std::fs::read_link("/proc/self/ns/net").unwrap();
    let theirs = std::fs::read_link(format!("/proc/{master}/ns/net")).unwrap();
    assert_ne!(ours, theirs, "haproxy (pid {master}) must run in {name}");
    state.version += 1;
    state.listeners[0].timeout_client_data = 1000;
    assert_eq!(h.apply(&state).await.unwrap().method, ApplyMethod::Reload);
    assert!(
        h.stats()
            .await
            .unwrap()
            .listeners
            .iter()
            .any(|l| l.id == "l1")
    );
    h.stop().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!pid_alive(master));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kh_peers_share_source_ip_stick_table_between_two_lb_processes() {
    if !have_haproxy() {
        return;
    }
    let backends = [
        super::bench::Backend::spawn("m0").await.unwrap(),
        super::bench::Backend::spawn("m1").await.unwrap(),
    ];
    let lo: std::net::IpAddr = "127.0.0.1".parse().unwrap();
    let (peer_a, peer_b) = (free_port().unwrap(), free_port().unwrap());
    let peers = vec![
        klb_proto::Peer {
            name: "vmA".into(),
            address: lo,
            port: peer_a,
        },
        klb_proto::Peer {
            name: "vmB".into(),
            address: lo,
            port: peer_b,
        },
    ];
    let mut lbs = Vec::new();
    for name in ["vmA", "vmB"] {
        let dir = super::bench::ScratchDir::new("kh-peer").unwrap();
        let port = free_port().unwrap();
        let members = backends
            .iter()
            .map(|b| fixture::member(&b.name, lo, b.addr.port()))
            .collect();
        let mut pool = fixture::pool(
            "p1",
            klb_proto::PoolProtocol::Http,
            klb_proto::LbAlgorithm::RoundRobin,
            members,
        );
        pool.session_persistence = Some(klb_proto::SessionPersistence {
            persistence_type: klb_proto::SessionPersistenceType::SourceIp,
            cookie_name: None,
            persistence_timeout: None,
            persistence_granularity: None,
        });
        let mut state = fixture::state(
            lo,
            vec![fixture::listener(
                "l1",
                ListenerProtocol::Http,
                port,
                Some("p1"),
            )],
            vec![pool],
        );
        state.global.maxconn = 2000;
        state.peers = peers.clone();
        state.vm.name = name.into();
        let mut h = super::Haproxy::new(super::HaproxyConfig::new(dir.path()));
        assert_eq!(h.apply(&state).await.unwrap().method, ApplyMethod::Start);
        lbs.push((h, port, dir));
    }
    let a = std::net::SocketAddr::new(lo, lbs[0].1);
    let load = run_load(a, 10, 1, Duration::from_secs(10)).await;
    assert_eq!(load.failed, 0, "{load:?}");
    assert_eq!(
        load.per_backend.len(),
        1,
        "stick on src keeps one member: {load:?}"
    );
    // vmB learns the entry from vmA without having seen any traffic.
    let sock_b = lbs[1].0.paths().admin_socket();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let table = loop {
        let t = super::runtime::command(&sock_b, "show table p1:l1")
            .await
            .unwrap();
        if t.contains("127.0.0.1") || tokio::time::Instant::now() > deadline {
            break t;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        table.contains("127.0.0.1") && table.contains("server_id="),
        "{table}"
    );
    let b = std::net::SocketAddr::new(lo, lbs[1].1);
    let load_b = run_load(b, 10, 1, Duration::from_secs(10)).await;
    assert_eq!(
        load_b.per_backend, load.per_backend,
        "vmB sends the client to the same member"
    );
    for (h, _, _) in &mut lbs {
        h.stop().await.unwrap();
    }
}

fn cert_files(lab: &Lab) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(&lab.haproxy.paths().cert_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kh_certificate_rotation_reloads_and_bad_pem_keeps_old_files() {
    if !have_haproxy() {
        return;
    }
    let pem = || {
        let ck = rcgen::generate_simple_self_signed(vec!["kh.example".into()]).unwrap();
        klb_proto::SecretPem::new(format!(
            "{}{}",
            ck.cert.pem(),
            ck.signing_key.serialize_pem()
        ))
    };
    let mut lab = Lab::start(Path::new(HAPROXY), 1).await.unwrap();
    let first = pem();
    let method = lab
        .change(move |s| {
            s.certificates = vec![klb_proto::Certificate {
                id: "c1".into(),
                pem: first,
            }];
            s.listeners[0].protocol = ListenerProtocol::TerminatedHttps;
            s.listeners[0].default_tls_certificate_id = Some("c1".into());
        })
        .await
        .unwrap();
    assert_eq!(method, ApplyMethod::Reload);
    let v1 = cert_files(&lab);
    assert_eq!(v1.len(), 2, "{v1:?}");
    let second = pem();
    let method = lab
        .change(move |s| s.certificates[0].pem = second)
        .await
        .unwrap();
    assert_eq!(
        method,
        ApplyMethod::Reload,
        "a rotated certificate must reach HAProxy"
    );
    let v2 = cert_files(&lab);
    assert_eq!(v2.len(), 2, "old files removed: {v2:?}");
    assert!(v2.iter().all(|f| !v1.contains(f)), "{v1:?} {v2:?}");
    let mut bad = lab.state.clone();
    bad.version += 1;
    bad.certificates[0].pem =
        klb_proto::SecretPem::new("-----BEGIN CERTIFICATE-----\nnot a cert\n");
    let err = lab.haproxy.apply(&bad).await.unwrap_err();
    assert!(matches!(err, ApplyError::Check { .. }), "{err}");
    assert!(
        !err.to_string().contains("not a cert"),
        "no PEM text in errors: {err}"
    );
    assert_eq!(cert_files(&lab), v2, "the running certificate files stay");
    lab.haproxy.stop().await.unwrap();
}
