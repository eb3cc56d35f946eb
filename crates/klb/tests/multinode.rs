//! Two `klb serve` processes on one PostgreSQL database and one fake cloud (a shared
//! `fake_state_file`, as nodes share OpenStack): the node running a create flow is killed with
//! SIGKILL mid-flow, after it booted the first LB VM; the other node takes the run over when its
//! lease expires, adopts what the dead node made and finishes it: the load balancer ends
//! `ACTIVE` with exactly its resources in the cloud, and a cascade delete through the survivor
//! leaves the cloud empty. The fake cloud answers in 300 ms so the flow is slow enough to be
//! caught mid-way. Skips with a printed reason without `KLB_TEST_POSTGRES_URL` or `psql`.

mod support;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use klb_cloud::fake::{FakeCloud, Kind, LedgerEntry};
use klb_cloud::names;
use support::{free_port, http, lb_status};

/// LB VMs per load balancer (the `klb serve` default).
const VM_COUNT: u32 = 2;

struct Node {
    child: Child,
    url: String,
    log: PathBuf,
}

impl Drop for Node {
    fn drop(&mut self) {
        // By PID, always (also when the test fails).
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs one statement; its unaligned, tuples-only output (`None` if psql failed).
fn psql(url: &str, sql: &str) -> Option<String> {
    let out = Command::new("psql")
        .args([url, "-qtAXc", sql])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn start(dir: &Path, name: &str, db_url: &str, cloud_file: &Path) -> Node {
    let port = free_port();
    let state = dir.join(name);
    std::fs::create_dir_all(&state).unwrap();
    let config = state.join("klb.toml");
    std::fs::write(
        &config,
        format!(
            "[api]\nbind = \"127.0.0.1:{port}\"\n[database]\nurl = \"{db_url}\"\n\
             [cloud]\ndriver = \"fake\"\nfake_latency_ms = 300\nflow_lease_secs = 2\n\
             lb_vm_count = {VM_COUNT}\nfake_state_file = \"{}\"\n",
            cloud_file.display()
        ),
    )
    .unwrap();
    let log = state.join("serve.log");
    let child = Command::new(env!("CARGO_BIN_EXE_klb"))
        .args(["serve", "--config"])
        .arg(&config)
        .arg("--state-dir")
        .arg(&state)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("klb serve starts");
    let node = Node {
        child,
        url: format!("http://127.0.0.1:{port}"),
        log,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if http("GET", &format!("{}/", node.url), None).is_some() {
            return node;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("klb serve {name} did not start: {}", read(&node.log));
}

fn read(path: &Path) -> String {
    let mut s = String::new();
    let _ = std::fs::File::open(path).and_then(|mut f| f.read_to_string(&mut s));
    s
}

/// Polls `node` until the LB's status is one of `done` (or the deadline); the last status.
fn wait_status(node: &Node, lb_id: &str, done: &[&str], within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let last = lb_status(&node.url, lb_id);
        if done.contains(&last.as_str()) || Instant::now() >= deadline {
            return last;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The shared cloud's ledger, as the nodes see it.
fn ledger(rt: &tokio::runtime::Runtime, cloud: &FakeCloud) -> Vec<LedgerEntry> {
    rt.block_on(cloud.try_ledger())
        .expect("the shared fake cloud file is readable")
}

/// Names per kind, sorted (rules are counted separately: their names repeat).
fn by_kind(ledger: &[LedgerEntry]) -> BTreeMap<Kind, Vec<String>> {
    let mut out: BTreeMap<Kind, Vec<String>> = BTreeMap::new();
    for e in ledger {
        out.entry(e.kind).or_default().push(e.name.clone());
    }
    out.values_mut().for_each(|v| v.sort());
    out
}

#[test]
fn a_killed_node_s_flow_is_finished_by_the_other() {
    let Ok(base) = std::env::var("KLB_TEST_POSTGRES_URL") else {
        println!("skipped: KLB_TEST_POSTGRES_URL is not set");
        return;
    };
    let schema = format!("klb_multinode_{}", std::process::id());
    if psql(&base, &format!("CREATE SCHEMA {schema}")).is_none() {
        println!("skipped: psql cannot create a schema on {base}");
        return;
    }
    let sep = if base.contains('?') { '&' } else { '?' };
    let db_url = format!("{base}{sep}options=-c%20search_path%3D{schema}");
    let dir = tempfile::tempdir().unwrap();
    let cloud_file = dir.path().join("fake-cloud.json");
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();

    let outcome = std::panic::catch_unwind(|| {
        let t0 = Instant::now();
        let mut a = start(dir.path(), "a", &db_url, &cloud_file);
        let b = start(dir.path(), "b", &db_url, &cloud_file);
        let cloud = FakeCloud::shared(&cloud_file).expect("the nodes' cloud file");
        let created = http(
            "POST",
            &format!("{}/v2/lbaas/loadbalancers", a.url),
            Some(r#"{"loadbalancer": {"name": "mn", "vip_subnet_id": "6b6c6200-0000-4000-8000-000000000201"}}"#),
        )
        .expect("create accepted");
        let lb_id = created["loadbalancer"]["id"].as_str().unwrap().to_owned();
        let started = Instant::now();

        // Node A runs the create flow (about 40 cloud calls x 300 ms). Kill it as soon as its
        // first LB VM exists in the cloud: security group, VIP port and server group are made,
        // the other VM and the alarm are not.
        let deadline = Instant::now() + Duration::from_secs(30);
        let vm0 = names::server(&lb_id, 0);
        let vm0_exists = || {
            ledger(&rt, &cloud)
                .iter()
                .any(|e| e.kind == Kind::Server && e.name == vm0)
        };
        while !vm0_exists() {
            assert!(
                Instant::now() < deadline,
                "node a never booted {vm0}; a's log:\n{}",
                read(&a.log)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(
            lb_status(&a.url, &lb_id),
            "PENDING_CREATE",
            "caught mid-flow"
        );
        a.child.kill().expect("SIGKILL node a");
        a.child.wait().unwrap();
        let killed_after = started.elapsed();
        let at_kill = by_kind(&ledger(&rt, &cloud));
        assert_eq!(
            at_kill.get(&Kind::SecurityGroup),
            Some(&vec![names::security_group(&lb_id)]),
            "node a made the security group before it died: {at_kill:?}"
        );
        assert!(
            !at_kill.contains_key(&Kind::Alarm),
            "node a died before the end of the flow: {at_kill:?}"
        );

        let last = wait_status(&b, &lb_id, &["ACTIVE", "ERROR"], Duration::from_secs(90));
        let finished_after = started.elapsed();
        let a_log = read(&a.log);
        let b_log = read(&b.log);
        assert_eq!(
            last, "ACTIVE",
            "node b finished the create; b's log:\n{b_log}"
        );

        // The run: started by a's worker, finished by b's, forward only (no step failed or
        // reverted), completed.
        let run = psql(
            &db_url,
            &format!(
                "SELECT id || '|' || state FROM flow_runs \
                 WHERE kind = 'create_lb' AND lock_key = '{lb_id}'"
            ),
        )
        .expect("flow_runs readable");
        let (run_id, run_state) = run.trim().split_once('|').expect("one create run");
        assert_eq!(run_state, "completed");
        let steps = psql(
            &db_url,
            &format!(
                "SELECT worker || '|' || name || '|' || phase || '|' || outcome \
                 FROM flow_steps WHERE run_id = '{run_id}' ORDER BY seq"
            ),
        )
        .expect("flow_steps readable");
        let steps: Vec<Vec<&str>> = steps
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| l.split('|').collect())
            .collect();
        assert!(steps.len() >= 2, "steps: {steps:?}");
        // `worker` is `<worker id>/<claim token>`; the id is in its node's log.
        let worker_id = |s: &[&str]| s[0].split('/').next().unwrap_or_default().to_owned();
        let (worker_a, worker_b) = (worker_id(&steps[0]), worker_id(&steps[steps.len() - 1]));
        assert_ne!(worker_a, worker_b, "two workers ran the run: {steps:?}");
        let (worker_a, worker_b) = (worker_a.as_str(), worker_b.as_str());
        assert!(
            a_log.contains(worker_a) && !b_log.contains(worker_a),
            "the first steps ran on node a ({worker_a}); steps: {steps:?}"
        );
        assert!(
            b_log.contains(worker_b),
            "the last steps ran on node b ({worker_b}); steps: {steps:?}; b's log:\n{b_log}"
        );
        for s in &steps {
            assert!(
                s[2] == "execute" && s[3] == "ok",
                "every step ran forward and succeeded: {steps:?}"
            );
        }
        // Once b took over, only b: a's steps are a prefix.
        let first_b = steps.iter().position(|s| worker_id(s) == worker_b).unwrap();
        assert!(
            steps[first_b..].iter().all(|s| worker_id(s) == worker_b),
            "b ran the rest: {steps:?}"
        );
        assert_eq!(steps[steps.len() - 1][1], "push_desired_state");
        // The engine logs "flow run finished" after the finish hook (which made the LB ACTIVE)
        // and after marking the run settled: wait for it, bounded.
        let logged = Instant::now() + Duration::from_secs(15);
        let mut b_log = b_log;
        while !b_log.contains("flow run finished") && Instant::now() < logged {
            std::thread::sleep(Duration::from_millis(50));
            b_log = read(&b.log);
        }
        assert!(b_log.contains("flow run finished"), "b's log:\n{b_log}");

        // The shared cloud holds exactly this LB's resources: nothing duplicated by the
        // take-over, nothing left from a's unfinished step.
        let now = ledger(&rt, &cloud);
        let kinds = by_kind(&now);
        let vms: Vec<String> = (0..VM_COUNT).map(|i| names::server(&lb_id, i)).collect();
        assert_eq!(
            kinds[&Kind::SecurityGroup],
            vec![names::security_group(&lb_id)]
        );
        assert_eq!(kinds[&Kind::ServerGroup], vec![names::server_group(&lb_id)]);
        assert_eq!(kinds[&Kind::Server], vms);
        assert_eq!(kinds[&Kind::Alarm], vec![names::alarm(&lb_id)]);
        let mut ports = vec![names::vip_port(&lb_id)];
        // Each VM has its NICs (management and L3 networks) the cloud made for it.
        for vm in &vms {
            ports.extend([format!("{vm}/nic0"), format!("{vm}/nic1")]);
        }
        ports.sort();
        assert_eq!(kinds[&Kind::Port], ports);
        let rules = &kinds[&Kind::SecurityGroupRule];
        assert!(
            !rules.is_empty()
                && rules
                    .iter()
                    .all(|r| *r == format!("{}/rule", names::security_group(&lb_id))),
            "rules of the LB's group only: {rules:?}"
        );
        assert_eq!(
            kinds.keys().count(),
            6,
            "no other kind of resource: {kinds:?}"
        );
        // And each VM's agent got the desired state b pushed at the end.
        for e in now.iter().filter(|e| e.kind == Kind::Server) {
            let pushed = rt.block_on(cloud.pushed_state(&e.id));
            assert!(
                pushed.is_some_and(|s| s.load_balancer_id == lb_id),
                "{} has the LB's desired state",
                e.name
            );
        }

        // A cascade delete through the survivor empties the cloud.
        http(
            "DELETE",
            &format!("{}/v2/lbaas/loadbalancers/{lb_id}?cascade=true", b.url),
            None,
        )
        .expect("delete accepted");
        let delete_started = Instant::now();
        let gone = wait_status(&b, &lb_id, &[""], Duration::from_secs(60));
        assert_eq!(gone, "", "deleted; b's log:\n{}", read(&b.log));
        let left = ledger(&rt, &cloud);
        assert!(left.is_empty(), "the shared cloud is empty: {left:?}");
        println!(
            "timings: nodes up {:?} before the create; a killed {killed_after:?} into the \
             flow; ACTIVE via b {finished_after:?} after the create ({} steps, {} on a); \
             cascade delete {:?}; total {:?}",
            started.duration_since(t0),
            steps.len(),
            first_b,
            delete_started.elapsed(),
            t0.elapsed()
        );
    });
    psql(&base, &format!("DROP SCHEMA {schema} CASCADE"));
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}
