//! A whole load balancer through the `openstack` driver on the real Keystone, Nova (fake virt
//! driver, two hosts), Neutron, Glance and Aodh (`tests/openstack/run-services.sh`, which sets
//! `KLB_TEST_OPENSTACK=1`), with a real data plane: the stand-in hypervisor
//! (`support/standin.rs`) gives every server Nova schedules a namespace with its Neutron
//! addresses and MACs running `klb agent` from its user data, wired to a local lab's two FRR
//! gateways (ECMP) and members.
//!
//! One LB, in order: `klb serve` SIGKILLed in the middle of the create and restarted (the flow
//! finishes, nothing duplicated); the seed's resources in Nova/Neutron/Aodh (server group,
//! servers on two hosts, ports, VIP in the allowed-address pairs, the alarm); a listener opens
//! its port in the security group; both LB VMs take traffic through ECMP; failover of a killed
//! VM (old server and ports gone, a new one in the same group); a scale-out beyond what
//! anti-affinity allows on two hosts (Nova's "No valid host", the partial VM reverted, still
//! serving); the listener's removal closes its port; the delete leaves nothing.
//! Needs root, HAProxy and FRR too; skips with the reason otherwise.

mod support;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use klb_local::{Lab, LabConfig};
use klb_openstack::{Call, Credentials, Method, ServiceType, Session, SessionConfig};
use serde_json::{Value, json};
use support::os_cli::{AUTH_URL, LbLeftovers, Nets, id_of, network, os, rules_of};
use support::standin::{StandIn, StandInConfig};
use support::{cannot_run_as_root, free_port, serve, step_table, step_times, wait_up};
use tokio::sync::Mutex;

const KLB: &str = env!("CARGO_BIN_EXE_klb");

/// klb's API as a tenant (`project`) or, with `None`, as the noauth admin.
struct Api {
    http: reqwest::Client,
    base: String,
    /// Directories whose `*.log` files (`klb serve`'s, the guests' agents') are shown when a
    /// wait fails.
    logs: Vec<PathBuf>,
}

impl Api {
    async fn call(
        &self,
        method: Method,
        path: &str,
        project: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .timeout(Duration::from_secs(30));
        req = match project {
            Some(p) => req.header("X-Project-Id", p),
            None => req.header("X-Roles", "admin"),
        };
        if let Some(b) = body {
            req = req.json(&b);
        }
        match req.send().await {
            Ok(r) => {
                let code = r.status().as_u16();
                let v = r.json::<Value>().await.unwrap_or(Value::Null);
                (code, v)
            }
            Err(_) => (0, Value::Null),
        }
    }

    fn show_logs(&self) {
        for dir in &self.logs {
            show_logs(dir, 3);
        }
    }

    /// POSTs a load balancer on `vip_subnet` as `project`; the reply (201 asserted).
    async fn create_lb(&self, project: &str, vip_subnet: &str, name: &str) -> Value {
        let (code, body) = self
            .call(
                Method::POST,
                "/v2/lbaas/loadbalancers",
                Some(project),
                Some(json!({"loadbalancer": {"vip_subnet_id": vip_subnet, "name": name}})),
            )
            .await;
        assert_eq!(code, 201, "{body}");
        body
    }

    async fn lb(&self, project: &str, lb_id: &str) -> Value {
        let (_, v) = self
            .call(
                Method::GET,
                &format!("/v2/lbaas/loadbalancers/{lb_id}"),
                Some(project),
                None,
            )
            .await;
        v["loadbalancer"].clone()
    }

    async fn wait_status(&self, project: &str, lb_id: &str, want: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let lb = self.lb(project, lb_id).await;
            if lb["provisioning_status"] == want {
                return;
            }
            if Instant::now() > deadline {
                self.show_logs();
                panic!("LB not {want} after {limit:?}: {lb}");
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// POSTs a child object and waits for the LB to be ACTIVE again; returns the object.
    async fn create_child(&self, project: &str, lb_id: &str, path: &str, body: Value) -> Value {
        let (code, v) = self
            .call(Method::POST, path, Some(project), Some(body))
            .await;
        assert_eq!(code, 201, "POST {path}: {v}");
        self.wait_status(project, lb_id, "ACTIVE", Duration::from_secs(60))
            .await;
        v
    }
}

fn show_logs(dir: &std::path::Path, depth: u32) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() && depth > 0 {
            show_logs(&path, depth - 1);
        } else if path.extension().is_some_and(|e| e == "log") {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(30)..].join("\n");
            eprintln!("--- {}\n{tail}", path.display());
        }
    }
}

/// Waits until both gateways route `vip` to `want` LB VMs, holding the lab only for each look
/// (the stand-in needs it to boot and remove guests meanwhile).
async fn wait_paths(
    lab: &Mutex<Lab>,
    vip: std::net::Ipv4Addr,
    want: usize,
    limit: Duration,
) -> Result<Duration, String> {
    let start = Instant::now();
    loop {
        let (a, b) = {
            let lab = lab.lock().await;
            (
                lab.gateway_paths(1, vip).await.map_err(|e| e.to_string())?,
                lab.gateway_paths(2, vip).await.map_err(|e| e.to_string())?,
            )
        };
        if a == want && b == want {
            return Ok(start.elapsed());
        }
        if start.elapsed() > limit {
            return Err(format!(
                "{want} paths to {vip} expected, gateways have {a} and {b}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Nova servers carrying the LB's tag: `(id, host)`.
async fn servers_of(admin: &Session, lb_id: &str) -> Vec<(String, String)> {
    let list: Vec<Value> = admin
        .json(
            &Call::new(
                "servers",
                "",
                Method::GET,
                ServiceType::Compute,
                "servers/detail",
            )
            .query("all_tenants", "1")
            .query("tags", klb_openstack::lb_tag(lb_id))
            .version(2, 67)
            .key("servers"),
        )
        .await
        .expect("Nova lists servers");
    list.iter()
        .map(|s| {
            (
                s["id"].as_str().unwrap_or("").to_owned(),
                s["OS-EXT-SRV-ATTR:host"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

async fn neutron(admin: &Session, path: &str, key: &'static str) -> Vec<Value> {
    admin
        .json(
            &Call::new(
                "list",
                "",
                Method::GET,
                ServiceType::Network,
                format!("v2.0/{path}"),
            )
            .key(key),
        )
        .await
        .expect("Neutron lists")
}

/// Ports whose name carries the LB id (klb names every port it makes after its LB).
async fn ports_of(admin: &Session, lb_id: &str) -> Vec<Value> {
    neutron(admin, "ports", "ports")
        .await
        .into_iter()
        .filter(|p| p["name"].as_str().unwrap_or("").contains(lb_id))
        .collect()
}

async fn alarms_of(admin: &Session, lb_id: &str) -> Vec<Value> {
    let all: Vec<Value> = admin
        .json(
            &Call::new(
                "alarms",
                "",
                Method::GET,
                ServiceType::Other("alarming".to_owned()),
                "v2/alarms",
            )
            .query("q.field", "all_projects")
            .query("q.op", "eq")
            .query("q.value", "true"),
        )
        .await
        .expect("Aodh lists alarms");
    all.into_iter()
        .filter(|a| a["name"].as_str().unwrap_or("").contains(lb_id))
        .collect()
}

/// `klb load` from the lab's client namespace: `(ok, failed)`.
async fn load(client_ns: &str, vip: &str, count: u32) -> (u64, u64) {
    let out = tokio::process::Command::new("ip")
        .args(["netns", "exec", client_ns, KLB, "load", "--url"])
        .arg(format!("http://{vip}/"))
        .args(["--count", &count.to_string(), "--concurrency", "8"])
        .args(["--timeout-ms", "1000", "--max-seconds", "60"])
        .kill_on_drop(true)
        .output()
        .await
        .expect("klb load runs");
    assert!(
        out.status.success(),
        "klb load: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("klb load prints JSON");
    (
        v["ok"].as_u64().unwrap_or(0),
        v["failed"].as_u64().unwrap_or(0),
    )
}

/// Total connections each LB VM's HAProxy counted (amphora stats, admin API), by VM id.
async fn connections_per_vm(api: &Api, lb_id: &str) -> Vec<(String, u64)> {
    let (_, list) = api
        .call(
            Method::GET,
            &format!("/v2/octavia/amphorae?loadbalancer_id={lb_id}"),
            None,
            None,
        )
        .await;
    let mut out = Vec::new();
    for a in list["amphorae"].as_array().cloned().unwrap_or_default() {
        let id = a["id"].as_str().unwrap_or("").to_owned();
        let (_, stats) = api
            .call(
                Method::GET,
                &format!("/v2/octavia/amphorae/{id}/stats"),
                None,
                None,
            )
            .await;
        let total = stats["amphora_stats"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s["total_connections"].as_u64())
            .sum();
        out.push((id, total));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lb_on_openstack_serves_fails_over_and_scales_with_a_real_data_plane() {
    if std::env::var_os("KLB_TEST_OPENSTACK").is_none() {
        println!("skipped: KLB_TEST_OPENSTACK is not set (tests/openstack/run-services.sh)");
        return;
    }
    if let Some(reason) = cannot_run_as_root() {
        println!("skipped: {reason}");
        return;
    }
    let pid = std::process::id();
    let tag = format!("d{pid}");
    // The lab: gateways, edge, client, members; its L3, management and VIP subnets are the
    // Neutron subnets below (Neutron allocates from .16, the lab's own addresses are .1/.2).
    let mut lab_cfg = LabConfig {
        prefix: format!("ko{}-", pid % 10000),
        runtime_dir: std::env::temp_dir().join(format!("klb-osdp-{pid}")),
        ..LabConfig::default()
    };
    let net = |s: &str| s.parse().expect("subnet");
    lab_cfg.plan.l3_subnet = net("198.18.68.0/24");
    lab_cfg.plan.mgmt_subnet = net("198.18.132.0/24");
    lab_cfg.plan.vip_subnet = net("198.19.4.0/24");
    lab_cfg.plan.member_subnet = net("198.18.20.0/24");
    let plan = lab_cfg.plan.clone();
    let runtime_dir = lab_cfg.runtime_dir.clone();
    let l3_as = lab_cfg.l3_router_as;
    let lab = Lab::build(lab_cfg).await.expect("the lab builds");
    let client_ns = lab.client_ns();
    let lab = Arc::new(Mutex::new(lab));
    let mut members = Vec::new();
    for i in 1..=2u32 {
        let mut l = lab.lock().await;
        let m = l.add_member(i).await.expect("member namespace");
        let args = ["backend", "--listen", &format!("{}:8080", m.addr), "--name"]
            .iter()
            .map(|s| s.to_string())
            .chain([format!("m{i}")])
            .collect::<Vec<_>>();
        l.spawn_in(&m.ns, "backend", &PathBuf::from(KLB), &args)
            .await
            .expect("backend starts");
        members.push(m.addr);
    }

    let tenant = id_of(&os(&["project", "show", "klbtenant"]));
    // Each network joins the guard as soon as it exists (removed even if a later step fails).
    let mut nets = Nets(Vec::new());
    let mut add_net = |suffix: &str, cidr: &str, project: Option<&str>| {
        let base = cidr.trim_end_matches("0/24");
        let (first, last) = (format!("{base}16"), format!("{base}200"));
        let (n, s) = network(
            &format!("{tag}-{suffix}"),
            cidr,
            project,
            Some((&first, &last)),
        );
        nets.0.push(n.clone());
        (n, s)
    };
    let (mgmt, _) = add_net("mgmt", "198.18.132.0/24", None);
    let (l3, _) = add_net("l3", "198.18.68.0/24", None);
    let (_, vip_subnet) = add_net("vip", "198.19.4.0/24", Some(&tenant));

    let admin = Session::connect(&SessionConfig {
        auth_url: AUTH_URL.into(),
        credentials: Credentials::Password {
            username: "admin".into(),
            password: "secretadmin".to_owned().into(),
            user_domain_name: "Default".into(),
            project_name: "admin".into(),
            project_domain_name: "Default".into(),
        },
        region: Some("RegionOne".into()),
        interface: "public".into(),
        ca_bundle: None,
        insecure: false,
        timeout: Duration::from_secs(30),
        network_endpoint: None,
    })
    .await
    .expect("admin session");
    let standin = StandIn::start(
        lab.clone(),
        StandInConfig {
            session: admin.clone(),
            mgmt_network: mgmt.clone(),
            l3_network: l3.clone(),
            klb_exe: PathBuf::from(KLB),
        },
    );

    // Kept when the test fails (the control plane's logs); removed at the end otherwise.
    let dir = std::env::temp_dir().join(format!("klb-osdp-{pid}-state"));
    let state = dir.join("state");
    std::fs::create_dir_all(&state).unwrap();
    let port = free_port();
    let config = dir.join("klb.toml");
    // default_maxconn: HAProxy needs ~2 descriptors per connection; the guests inherit this
    // machine's hard limit (20000, and no CAP_SYS_RESOURCE to lift it, unlike a real LB VM).
    std::fs::write(
        &config,
        format!(
            "[api]\nbind = \"127.0.0.1:{port}\"\n\
             [cloud]\ndriver = \"openstack\"\nflow_lease_secs = 5\nmax_lb_vms = 4\n\
             [openstack]\nusername = \"klb\"\npassword = \"klbpass\"\nproject_name = \"service\"\n\
             region_name = \"RegionOne\"\nimage_tag = \"klb-lb-image\"\n\
             [kinx_haproxy]\nauth_url = \"{AUTH_URL}\"\n\
             base_flavor_id = 42\nlb_mgmt_net_id = \"{mgmt}\"\nlb_l3_net_id = \"{l3}\"\n\
             lb_api_agent_addr = \"{host}\"\nlb_api_agent_port = {hb}\n\
             primary_l3_gateway_addr = \"{gw1}\"\nsecondary_l3_gateway_addr = \"{gw2}\"\n\
             l3_router_as_number = {l3_as}\nkinx_office_ip = \"198.18.200.0/24\"\n\
             ceilometer_pps_threshold = 5000\ndefault_maxconn = 4000\n",
            host = plan.host_mgmt_addr(),
            hb = free_port(),
            gw1 = plan.gw_l3_addr(1),
            gw2 = plan.gw_l3_addr(2),
        ),
    )
    .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let api = Api {
        http: reqwest::Client::new(),
        base: base.clone(),
        logs: vec![state.clone(), runtime_dir.clone()],
    };
    let mut klb = serve(&config, &state, "serve-1.log");
    tokio::task::block_in_place(|| wait_up(&base));

    // Create, and SIGKILL the control plane once Nova has the first server.
    let t_create = Instant::now();
    let body = api.create_lb(&tenant, &vip_subnet, "web").await;
    let lb_id = body["loadbalancer"]["id"].as_str().unwrap().to_owned();
    // Dropped before the networks (declared after them): a failed run leaves nothing.
    let _leftovers = LbLeftovers(Some(lb_id.clone()));
    let vip = body["loadbalancer"]["vip_address"]
        .as_str()
        .unwrap()
        .to_owned();
    let deadline = Instant::now() + Duration::from_secs(60);
    while servers_of(&admin, &lb_id).await.is_empty() {
        assert!(Instant::now() < deadline, "no server in Nova");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(klb); // SIGKILL
    let killed_after = t_create.elapsed();
    klb = serve(&config, &state, "serve-2.log");
    tokio::task::block_in_place(|| wait_up(&base));
    api.wait_status(&tenant, &lb_id, "ACTIVE", Duration::from_secs(180))
        .await;
    println!(
        "create: killed after {killed_after:?}, ACTIVE after restart at {:?}",
        t_create.elapsed()
    );

    // Exactly the seed's resources, once each.
    let servers = servers_of(&admin, &lb_id).await;
    assert_eq!(servers.len(), 2, "two LB VMs, no duplicate: {servers:?}");
    assert_ne!(servers[0].1, servers[1].1, "anti-affinity: {servers:?}");
    let groups = os(&["server", "group", "list", "--all-projects", "--long"]);
    let group: Vec<&Value> = groups
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["Name"] == format!("klb-{lb_id}-sg-group").as_str())
        .collect();
    assert_eq!(group.len(), 1, "one server group: {groups}");
    assert_eq!(group[0]["Policy"], "anti-affinity");
    let group_id = group[0]["ID"].as_str().unwrap().to_owned();
    let sg_name = format!("klb-{lb_id}-sg");
    let sgs: Vec<Value> = neutron(&admin, "security-groups", "security_groups")
        .await
        .into_iter()
        .filter(|g| g["name"] == sg_name.as_str())
        .collect();
    assert_eq!(sgs.len(), 1, "one security group");
    let ports = ports_of(&admin, &lb_id).await;
    let vm_ports: Vec<&Value> = ports
        .iter()
        .filter(|p| p["name"].as_str().unwrap_or("").contains("-nic"))
        .collect();
    assert_eq!(vm_ports.len(), 4, "2 ports per VM: {ports:?}");
    let l3_ports: Vec<&&Value> = vm_ports
        .iter()
        .filter(|p| p["network_id"] == l3.as_str())
        .collect();
    assert_eq!(l3_ports.len(), 2);
    for p in &l3_ports {
        assert!(
            p["allowed_address_pairs"].to_string().contains(&vip),
            "VIP {vip} allowed on {p}"
        );
    }
    let alarms = alarms_of(&admin, &lb_id).await;
    assert_eq!(alarms.len(), 1, "one PPS alarm: {alarms:?}");
    assert_eq!(alarms[0]["type"], "prometheus");
    let alarm_rule = alarms[0]["prometheus_rule"].to_string();
    assert!(alarm_rule.contains("5000"), "threshold: {alarm_rule}");
    let action = alarms[0]["alarm_actions"][0].as_str().unwrap().to_owned();
    assert!(action.contains("/v1/alarms?token="), "webhook action");
    assert_eq!(
        standin.guests().await.len(),
        2,
        "{:?}",
        standin.errors().await
    );

    // A listener opens its port; the tenant's pool, members and health monitor follow.
    let listener = api
        .create_child(
            &tenant,
            &lb_id,
            "/v2/lbaas/listeners",
            json!({"listener": {"loadbalancer_id": lb_id, "protocol": "HTTP", "protocol_port": 80}}),
        )
        .await;
    let listener_id = listener["listener"]["id"].as_str().unwrap().to_owned();
    assert!(
        rules_of(&sg_name).contains(&"ingress IPv4 tcp 80:80 0.0.0.0/0".to_owned()),
        "listener port open: {:?}",
        rules_of(&sg_name)
    );
    let pool = api
        .create_child(
            &tenant,
            &lb_id,
            "/v2/lbaas/pools",
            json!({"pool": {"listener_id": listener_id, "protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN"}}),
        )
        .await;
    let pool_id = pool["pool"]["id"].as_str().unwrap().to_owned();
    for m in &members {
        api.create_child(
            &tenant,
            &lb_id,
            &format!("/v2/lbaas/pools/{pool_id}/members"),
            json!({"member": {"address": m.to_string(), "protocol_port": 8080}}),
        )
        .await;
    }

    // ECMP: both gateways route the VIP to both LB VMs; both take traffic.
    let vip4: std::net::Ipv4Addr = vip.parse().unwrap();
    if let Err(e) = wait_paths(&lab, vip4, 2, Duration::from_secs(60)).await {
        api.show_logs();
        panic!(
            "2 ECMP paths: {e}; stand-in errors {:?}",
            standin.errors().await
        );
    }
    let before = connections_per_vm(&api, &lb_id).await;
    let (ok, failed) = load(&client_ns, &vip, 400).await;
    assert_eq!((ok, failed), (400, 0), "traffic through the VIP");
    tokio::time::sleep(Duration::from_secs(5)).await; // a heartbeat with the counters
    let after = connections_per_vm(&api, &lb_id).await;
    assert_eq!(after.len(), 2, "{after:?}");
    for (vm, total) in &after {
        let was = before.iter().find(|(v, _)| v == vm).map_or(0, |(_, t)| *t);
        assert!(
            *total > was,
            "LB VM {vm} took no traffic: {before:?} → {after:?}"
        );
    }

    // Failover: kill one VM's processes; the health manager replaces its server.
    let guests = standin.guests().await;
    let (victim_server, victim) = guests
        .iter()
        .next()
        .map(|(k, g)| (k.clone(), g.clone()))
        .unwrap();
    let t_failover = Instant::now();
    lab.lock()
        .await
        .signal_vm(&victim.short_id, "KILL")
        .await
        .expect("kill the VM's processes");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let now = servers_of(&admin, &lb_id).await;
        if now.len() == 2 && !now.iter().any(|(id, _)| *id == victim_server) {
            break;
        }
        assert!(Instant::now() < deadline, "no replacement server: {now:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    api.wait_status(&tenant, &lb_id, "ACTIVE", Duration::from_secs(120))
        .await;
    if let Err(e) = wait_paths(&lab, vip4, 2, Duration::from_secs(60)).await {
        api.show_logs();
        panic!(
            "2 ECMP paths after failover: {e}; stand-in errors {:?}",
            standin.errors().await
        );
    }
    println!("failover: back in ECMP after {:?}", t_failover.elapsed());
    let ports = ports_of(&admin, &lb_id).await;
    assert!(
        !ports
            .iter()
            .any(|p| p["device_id"] == victim_server.as_str()),
        "the failed server's ports are gone"
    );
    assert_eq!(
        ports
            .iter()
            .filter(|p| p["name"].as_str().unwrap_or("").contains("-nic"))
            .count(),
        4
    );
    let group = os(&["server", "group", "show", &group_id]);
    let in_group = group["members"].to_string();
    for (id, _) in servers_of(&admin, &lb_id).await {
        assert!(
            in_group.contains(&id),
            "replacement {id} in the server group {group}"
        );
    }
    let (ok, failed) = load(&client_ns, &vip, 200).await;
    assert_eq!((ok, failed), (200, 0), "traffic after failover");

    // Scale-out beyond two hosts: Aodh's action (the webhook) asks for a third VM; Nova has no
    // host for it under anti-affinity. The partial VM is reverted; the LB keeps serving.
    let webhook = reqwest::Client::new()
        .post(&action)
        .json(&json!({"alarm_name": format!("klb-{lb_id}-pps"), "current": "alarm", "previous": "ok"}))
        .send()
        .await
        .expect("webhook answers");
    assert_eq!(webhook.status().as_u16(), 202);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let lb = api.lb(&tenant, &lb_id).await;
        if lb["provisioning_status"] != "PENDING_UPDATE" {
            break;
        }
        assert!(Instant::now() < deadline, "scale-out never ended: {lb}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let lb = api.lb(&tenant, &lb_id).await;
    println!("after the refused scale-out: {lb}");
    let servers = servers_of(&admin, &lb_id).await;
    assert_eq!(servers.len(), 2, "the partial VM is reverted: {servers:?}");
    assert_eq!(
        ports_of(&admin, &lb_id)
            .await
            .iter()
            .filter(|p| p["name"].as_str().unwrap_or("").contains("-nic"))
            .count(),
        4,
        "its ports too"
    );
    let (ok, failed) = load(&client_ns, &vip, 200).await;
    assert_eq!(
        (ok, failed),
        (200, 0),
        "still serving after the refused scale-out"
    );

    // Removing the listener closes its port.
    let (code, _) = api
        .call(
            Method::DELETE,
            &format!("/v2/lbaas/listeners/{listener_id}?cascade=true"),
            Some(&tenant),
            None,
        )
        .await;
    assert!(code == 204 || code == 409, "listener delete: {code}");
    if code == 409 {
        // A pool still attached: delete it first (Octavia has no listener cascade).
        let (c, v) = api
            .call(
                Method::DELETE,
                &format!("/v2/lbaas/pools/{pool_id}"),
                Some(&tenant),
                None,
            )
            .await;
        assert_eq!(c, 204, "{v}");
        api.wait_status(&tenant, &lb_id, "ACTIVE", Duration::from_secs(60))
            .await;
        let (c, v) = api
            .call(
                Method::DELETE,
                &format!("/v2/lbaas/listeners/{listener_id}"),
                Some(&tenant),
                None,
            )
            .await;
        assert_eq!(c, 204, "{v}");
    }
    api.wait_status(&tenant, &lb_id, "ACTIVE", Duration::from_secs(60))
        .await;
    assert!(
        !rules_of(&sg_name).iter().any(|r| r.contains("80:80")),
        "listener port closed: {:?}",
        rules_of(&sg_name)
    );

    // Delete: nothing klb made is left.
    let (code, _) = api
        .call(
            Method::DELETE,
            &format!("/v2/lbaas/loadbalancers/{lb_id}?cascade=true"),
            Some(&tenant),
            None,
        )
        .await;
    assert_eq!(code, 204);
    let deadline = Instant::now() + Duration::from_secs(120);
    while api
        .call(
            Method::GET,
            &format!("/v2/lbaas/loadbalancers/{lb_id}"),
            Some(&tenant),
            None,
        )
        .await
        .0
        != 404
    {
        assert!(Instant::now() < deadline, "LB not deleted");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(servers_of(&admin, &lb_id).await.is_empty(), "servers left");
    assert!(ports_of(&admin, &lb_id).await.is_empty(), "ports left");
    assert!(alarms_of(&admin, &lb_id).await.is_empty(), "alarms left");
    assert!(
        !neutron(&admin, "security-groups", "security_groups")
            .await
            .iter()
            .any(|g| g["name"].as_str().unwrap_or("").contains(&lb_id)),
        "security group left"
    );
    assert!(
        !os(&["server", "group", "list", "--all-projects"])
            .to_string()
            .contains(&lb_id),
        "server group left"
    );

    // A clean create (no crash) for BENCHMARKS.md: API POST → ACTIVE and each step's time.
    let t = Instant::now();
    let body = api.create_lb(&tenant, &vip_subnet, "timed").await;
    let timed = body["loadbalancer"]["id"].as_str().unwrap().to_owned();
    let _timed_leftovers = LbLeftovers(Some(timed.clone()));
    api.wait_status(&tenant, &timed, "ACTIVE", Duration::from_secs(120))
        .await;
    let took = t.elapsed();
    let times = step_times(&state, "create_lb");
    println!(
        "{}",
        step_table(
            &format!("openstack driver: LB create → ACTIVE {took:?} (API)"),
            &times
        )
    );
    assert!(
        times.0.iter().any(|(s, _)| s == "wait_agents_up"),
        "step times read: {times:?}"
    );
    let (code, _) = api
        .call(
            Method::DELETE,
            &format!("/v2/lbaas/loadbalancers/{timed}"),
            Some(&tenant),
            None,
        )
        .await;
    assert_eq!(code, 204);
    let deadline = Instant::now() + Duration::from_secs(120);
    while !servers_of(&admin, &timed).await.is_empty() || !ports_of(&admin, &timed).await.is_empty()
    {
        assert!(Instant::now() < deadline, "timed LB not removed");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let deadline = Instant::now() + Duration::from_secs(10);
    while !standin.guests().await.is_empty() {
        assert!(Instant::now() < deadline, "guest namespaces left");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let errors = standin.errors().await;
    standin.stop().await;
    drop(klb);
    let Ok(lab) = Arc::try_unwrap(lab) else {
        panic!("the stand-in still holds the lab");
    };
    lab.into_inner().teardown().await.expect("lab teardown");
    assert!(errors.is_empty(), "stand-in errors: {errors:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
