//! `klb serve` on the local cloud killed with SIGKILL in the middle of a load-balancer create,
//! then started again: it adopts the namespaces and processes the dead one left, resumes the
//! flow when its lease expires, and the load balancer ends ACTIVE (or ERROR, then deletes
//! cleanly) — never stuck in PENDING_*. Root only; skips with a printed reason otherwise.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::{cannot_run_as_root, free_port, http, lb_status, serve, wait_up};

#[test]
fn serve_killed_mid_create_recovers_after_restart() {
    if let Some(reason) = cannot_run_as_root() {
        println!("skipped: {reason}");
        return;
    }
    let pid = std::process::id();
    let prefix = format!("kr{}-", pid % 10000);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let config = dir.path().join("klb.toml");
    std::fs::write(
        &config,
        format!(
            "[api]\nbind = \"127.0.0.1:{port}\"\n\
             [database]\nurl = \"sqlite://{}/klb.db\"\n\
             [cloud]\ndriver = \"local\"\nflow_lease_secs = 3\n\
             local_prefix = \"{prefix}\"\nlocal_runtime_dir = \"{}\"\n\
             local_mgmt_subnet = \"198.19.{}.0/24\"\n\
             [kinx_haproxy]\nlb_api_agent_port = {}\n",
            state.display(),
            dir.path().join("run").display(),
            128 + (pid * 4 + 2) % 120,
            free_port(),
        ),
    )
    .unwrap();

    let outcome = std::panic::catch_unwind(|| {
        let mut first = serve(&config, &state, "serve-1.log");
        wait_up(&url);
        let created = http(
            "POST",
            &format!("{url}/v2/lbaas/loadbalancers"),
            Some(r#"{"loadbalancer": {"name": "restart", "vip_subnet_id": "6b6c6200-0000-4000-8000-000000000201"}}"#),
        )
        .expect("create accepted");
        let lb_id = created["loadbalancer"]["id"].as_str().unwrap().to_owned();
        // Kill it while the create flow runs (namespaces and agents being made).
        std::thread::sleep(Duration::from_millis(600));
        let caught = lb_status(&url, &lb_id);
        first.0.kill().expect("SIGKILL");
        first.0.wait().unwrap();

        let _second = serve(&config, &state, "serve-2.log");
        wait_up(&url);
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut last = String::new();
        while Instant::now() < deadline {
            last = lb_status(&url, &lb_id);
            if last == "ACTIVE" || last == "ERROR" {
                break;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        let log = std::fs::read_to_string(state.join("serve-2.log")).unwrap_or_default();
        assert!(
            last == "ACTIVE" || last == "ERROR",
            "after the restart the LB left {caught} (last {last:?}); log:\n{log}"
        );
        // Either way it deletes cleanly.
        http(
            "DELETE",
            &format!("{url}/v2/lbaas/loadbalancers/{lb_id}"),
            None,
        )
        .expect("delete accepted");
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline && !lb_status(&url, &lb_id).is_empty() {
            std::thread::sleep(Duration::from_millis(250));
        }
        assert_eq!(lb_status(&url, &lb_id), "", "deleted; log:\n{log}");
        println!("killed in {caught}, after restart {last}, then deleted");
        last
    });

    // Whatever happened: remove the lab (serve leaves it for adoption by design).
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let removed = runtime
        .block_on(klb_local::lab::cleanup_prefix(
            &prefix,
            Duration::from_secs(2),
        ))
        .expect("cleanup");
    let left = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let left = String::from_utf8_lossy(&left.stdout);
    assert!(
        !left.lines().any(|l| l.starts_with(&prefix)),
        "namespaces left: {left} (removed {removed:?})"
    );
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}
