//! End-to-end on the local cloud (root, real HAProxy, FRR and `klb agent` in network
//! namespaces): a load balancer created through the API serves traffic from both LB VMs, fails
//! over when one is killed, scales out on the PPS alarm and leaves nothing behind when deleted.
//! Skips with a printed reason when not root or HAProxy/FRR are missing.

mod support;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use klb_control::demo::{DemoOptions, Summary};
use klb_control::plane::{CloudChoice, ControlPlane, LocalSettings, PlaneConfig};
use klb_local::LabConfig;
use support::cannot_run_as_root;

/// A lab that cannot collide with `klb demo` or other tests: own prefix, runtime dir and
/// management subnet (the only route in the root namespace).
fn lab_config(tag: u32) -> LabConfig {
    let pid = std::process::id();
    let mut lab = LabConfig {
        prefix: format!("kt{}-", (pid * 7 + tag) % 10000),
        runtime_dir: std::env::temp_dir().join(format!("klb-e2e-{pid}-{tag}")),
        ..LabConfig::default()
    };
    lab.plan.mgmt_subnet = format!("198.19.{}.0/24", 128 + (pid * 4 + tag) % 120)
        .parse()
        .expect("valid subnet");
    lab
}

fn value<'a>(summary: &'a Summary, what: &str) -> &'a str {
    summary
        .rows
        .iter()
        .find(|r| r.what == what)
        .map(|r| r.value.as_str())
        .unwrap_or_else(|| panic!("no {what:?} in the summary:\n{}", summary.table()))
}

fn counts(text: &str) -> Vec<u64> {
    text.split_whitespace()
        .filter_map(|kv| kv.split_once('=').and_then(|(_, v)| v.parse().ok()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lb_lifecycle_on_the_local_cloud() {
    if let Some(reason) = cannot_run_as_root() {
        println!("skipped: {reason}");
        return;
    }
    let lab = lab_config(1);
    let prefix = lab.prefix.clone();
    let state_dir = lab.runtime_dir.join("state");
    let plane = ControlPlane::start(PlaneConfig {
        api_bind: "127.0.0.1:0".parse().unwrap(),
        database_url: format!("sqlite://{}/klb.db", state_dir.display()),
        state_dir: state_dir.clone(),
        auth: Arc::new(klb_api::NoAuth {
            default_project_id: Some("e2e".into()),
        }),
        standalone_lookups: true,
        api: klb_api::ApiConfig::default(),
        policy: None,
        cloud: CloudChoice::Local(Box::new(LocalSettings {
            lab,
            teardown_on_stop: true,
            pps_threshold: 300,
            alarm_period_secs: 1,
            alarm_evaluation_periods: 2,
            alarm_period_override: Some(Duration::from_secs(1)),
            klb_exe: Some(PathBuf::from(env!("CARGO_BIN_EXE_klb"))),
            ..LocalSettings::default()
        })),
    })
    .await
    .expect("control plane starts");
    let options = DemoOptions {
        klb_exe: PathBuf::from(env!("CARGO_BIN_EXE_klb")),
        requests: 400,
        member_port: 8080,
    };
    let outcome = tokio::time::timeout(
        Duration::from_secs(300),
        klb_control::demo::run(&plane, &options),
    )
    .await;
    // Each create step's time, next to the openstack driver's (BENCHMARKS.md); read before
    // the stop removes the lab's directory and the state in it.
    let times = support::step_times(&state_dir, "create_lb");
    println!(
        "{}",
        support::step_table("local cloud: LB create → ACTIVE", &times)
    );
    plane.stop().await.expect("control plane stops");

    // Nothing left behind: no namespace with our prefix, no process in them.
    let left = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    let left = String::from_utf8_lossy(&left.stdout);
    assert!(
        !left.lines().any(|l| l.starts_with(&prefix)),
        "namespaces left behind: {left}"
    );
    let _ = std::fs::remove_dir_all(state_dir.parent().unwrap());

    let summary = outcome
        .expect("within 300 s")
        .expect("the lifecycle succeeds");
    println!("{}", summary.table());
    assert_eq!(value(&summary, "requests ok / failed"), "400 / 0");
    let vms = counts(value(&summary, "split across LB VMs"));
    assert_eq!(vms.len(), 2, "two LB VMs served");
    assert!(
        vms.iter().all(|n| *n >= 60),
        "each LB VM took a share: {vms:?}"
    );
    let api_total: u64 = value(&summary, "API /stats total_connections")
        .parse()
        .unwrap_or(0);
    assert!(api_total >= 400, "LB /stats counts the load: {api_total}");
    let members = counts(value(&summary, "split across members"));
    assert_eq!(members.len(), 2);
    assert!(
        members.iter().all(|n| *n >= 100),
        "round robin: {members:?}"
    );
    // TERMINATED_HTTPS with 2 SNI certificates from the secret store: curl verifies each
    // name's certificate, so a wrong (or missing) certificate fails the request.
    assert_eq!(
        value(
            &summary,
            "TLS requests ok / failed (certificate verified per SNI name)"
        ),
        "20 / 0"
    );
    assert!(
        value(&summary, "member churn: requests ok / failed").ends_with("/ 0"),
        "member add/remove under load loses nothing"
    );
    assert_eq!(value(&summary, "with m2 stopped: ok / failed"), "200 / 0");
    let members = value(&summary, "with m2 stopped: split across members");
    assert!(
        members.starts_with("m1=") && !members.contains("m2"),
        "traffic avoids m2: {members}"
    );
    let recovered: u64 = value(&summary, "failover: requests succeed again after")
        .trim_end_matches(" ms")
        .parse()
        .unwrap();
    assert!(
        recovered < 1000,
        "requests succeed again within 1 s: {recovered} ms"
    );
    assert_eq!(value(&summary, "after scale-out: ok / failed"), "400 / 0");
    let vms = counts(value(&summary, "after scale-out: split across LB VMs"));
    assert_eq!(vms.len(), 3, "three LB VMs after the PPS alarm");
    assert!(
        vms.iter().all(|n| *n > 0),
        "the new VM takes traffic: {vms:?}"
    );
}
