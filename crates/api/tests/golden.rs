//! Golden replies: every resource POSTed, PUT and read with every attribute, then a matrix of
//! bad values per attribute (alone, and all at once to pin which error a body with several
//! bad attributes gets), compared as text with `tests/golden/replies.txt`. Ids and timestamps
//! are normalized (ids numbered by first appearance). The file was recorded before the field
//! tables replaced the hand-written parsers (issue 13 §2): the API's replies stay byte for
//! byte the same. Re-record after an intended change with `KLB_BLESS_GOLDEN=1`.

use std::collections::HashMap;
use std::fmt::Write as _;

use axum::body::Body;
use axum::http::Request;
use regex::Regex;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::util::{App, PROJECT, SUBNET};

const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/replies.txt");

/// Values every attribute is tried with.
fn junk() -> Vec<Value> {
    vec![
        Value::Null,
        json!({}),
        json!([]),
        json!(""),
        json!("x"),
        json!(-1),
        json!(0),
        json!(1),
        json!(65536),
        json!(2_147_483_648_i64),
        json!(true),
        json!(1.5),
        json!(["x"]),
        json!({"a": "b"}),
        json!("10.0.0.0/8"),
        json!("192.0.2.10"),
    ]
}

struct Golden {
    app: App,
    out: String,
    ids: HashMap<String, usize>,
    uuid: Regex,
    ts: Regex,
    vip: Regex,
    port: u64,
    /// Calls as an operator (the admin role), for the admin resources.
    admin: bool,
}

impl Golden {
    async fn new() -> Golden {
        Golden {
            app: App::new().await,
            out: String::new(),
            ids: HashMap::new(),
            uuid: Regex::new("[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
                .unwrap(),
            ts: Regex::new(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d").unwrap(),
            vip: Regex::new(r"198\.1[89]\.\d+\.\d+").unwrap(),
            port: 1000,
            admin: false,
        }
    }

    fn next_port(&mut self) -> u64 {
        self.port += 1;
        self.port
    }

    fn norm(&mut self, text: &str) -> String {
        let text = self.ts.replace_all(text, "<ts>").into_owned();
        // The noop network picks VIPs at random from the lab range.
        let text = self.vip.replace_all(&text, "<vip>").into_owned();
        let mut out = String::with_capacity(text.len());
        let mut last = 0;
        for m in self.uuid.find_iter(&text) {
            out.push_str(&text[last..m.start()]);
            let n = self.ids.len() + 1;
            let n = *self.ids.entry(m.as_str().to_owned()).or_insert(n);
            write!(out, "<id{n}>").unwrap();
            last = m.end();
        }
        out.push_str(&text[last..]);
        out
    }

    /// Sends a request, records it and its reply, settles the jobs of a successful write.
    async fn call(&mut self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let label = body.as_ref().map(Value::to_string).unwrap_or_default();
        self.call_labelled(method, path, body, &label).await
    }

    /// [`Golden::call`] recorded with `label` instead of the body.
    async fn call_labelled(
        &mut self,
        method: &str,
        path: &str,
        body: Option<Value>,
        label: &str,
    ) -> (u16, Value) {
        let sent = body.as_ref().map(Value::to_string);
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("x-project-id", PROJECT)
            .header("content-type", "application/json");
        if self.admin {
            req = req.header("x-roles", "admin");
        }
        let req = req
            .body(sent.clone().map(Body::from).unwrap_or_else(Body::empty))
            .unwrap();
        let resp = self.app.router.clone().oneshot(req).await.unwrap();
        let status = resp.status().as_u16();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let line = format!("{method} {path} {label}\n  -> {status} {text}\n");
        let line = self.norm(&line);
        self.out.push_str(&line);
        if method != "GET" && (200..300).contains(&status) {
            self.app.settle().await;
        }
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    async fn post(&mut self, path: &str, body: Value) -> (u16, Value) {
        self.call("POST", path, Some(body)).await
    }

    async fn put(&mut self, path: &str, body: Value) -> (u16, Value) {
        self.call("PUT", path, Some(body)).await
    }

    async fn get(&mut self, path: &str) -> (u16, Value) {
        self.call("GET", path, None).await
    }

    /// POSTs/PUTs `envelope` with each key set to each junk value, then all keys at once
    /// (dropping the attribute each 400 names, to record the order attributes are read in).
    async fn matrix(
        &mut self,
        path: &str,
        envelope: &str,
        keys: &[&str],
        base: impl Fn(&mut Golden) -> Value,
    ) {
        let header = self.norm(&format!("## matrix {path} {envelope}\n"));
        self.out.push_str(&header);
        for key in keys {
            for j in junk() {
                let mut b = base(self);
                let label = format!("{key}={j}");
                b[*key] = j;
                self.call_env(path, envelope, b, &label).await;
            }
        }
        let attr = Regex::new(r"Invalid input for field/attribute ([a-z_0-9]+)\.").unwrap();
        for j in junk() {
            let mut left: Vec<&str> = keys.to_vec();
            for _ in 0..=keys.len() {
                let mut b = base(self);
                for key in &left {
                    b[*key] = j.clone();
                }
                let label = format!("all={j} ({} keys)", left.len());
                let (status, reply) = self.call_env(path, envelope, b, &label).await;
                let fault = reply["faultstring"].as_str().unwrap_or("").to_owned();
                let named = attr
                    .captures(&fault)
                    .map(|c| c[1].to_owned())
                    .filter(|k| left.contains(&k.as_str()));
                match named {
                    Some(k) if status == 400 => left.retain(|x| *x != k),
                    _ => break,
                }
            }
        }
    }

    async fn call_env(
        &mut self,
        path: &str,
        envelope: &str,
        b: Value,
        label: &str,
    ) -> (u16, Value) {
        let method = if path.ends_with("PUT") { "PUT" } else { "POST" };
        let path = path.trim_end_matches(" PUT").to_owned();
        let mut body = serde_json::Map::new();
        body.insert(envelope.to_owned(), b);
        self.call_labelled(method, &path, Some(Value::Object(body)), label)
            .await
    }
}

fn id(reply: &Value, envelope: &str) -> String {
    reply[envelope]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {reply}"))
        .to_owned()
}

#[tokio::test]
async fn replies_match_the_golden_file() {
    let mut g = Golden::new().await;

    // Load balancers.
    writeln!(g.out, "# loadbalancers").unwrap();
    let (_, b) = g
        .post(
            "/v2/lbaas/loadbalancers",
            json!({"loadbalancer": {"vip_subnet_id": SUBNET, "name": "lb", "description": "d",
                "admin_state_up": true, "vip_address": "10.0.0.5", "tags": ["t1", "t2"],
                "vip_qos_policy_id": "c1a2b3c4-0000-4000-8000-000000000001",
                "provider": "amphora"}}),
        )
        .await;
    let lb = id(&b, "loadbalancer");
    let lb_path = format!("/v2/lbaas/loadbalancers/{lb}");
    g.get(&lb_path).await;
    g.put(
        &lb_path,
        json!({"loadbalancer": {"name": "lb2", "description": "d2", "admin_state_up": false,
            "vip_qos_policy_id": null, "tags": ["t3"]}}),
    )
    .await;
    g.put(
        &lb_path,
        json!({"loadbalancer": {"name": null, "description": null, "admin_state_up": null,
            "tags": null}}),
    )
    .await;
    g.put(&lb_path, json!({"loadbalancer": {"admin_state_up": true}}))
        .await;
    g.get(&lb_path).await;
    let lb_keys = [
        "name",
        "description",
        "admin_state_up",
        "project_id",
        "tenant_id",
        "vip_address",
        "vip_port_id",
        "vip_subnet_id",
        "vip_network_id",
        "vip_qos_policy_id",
        "vip_sg_ids",
        "additional_vips",
        "provider",
        "flavor_id",
        "availability_zone",
        "tags",
        "nmae",
    ];
    g.matrix(
        "/v2/lbaas/loadbalancers",
        "loadbalancer",
        &lb_keys,
        |_| json!({"vip_subnet_id": SUBNET}),
    )
    .await;
    let (_, b) = g
        .post(
            "/v2/lbaas/loadbalancers",
            json!({"loadbalancer": {"vip_subnet_id": SUBNET, "name": "lb-put"}}),
        )
        .await;
    let lb_put = format!("/v2/lbaas/loadbalancers/{} PUT", id(&b, "loadbalancer"));
    g.matrix(&lb_put, "loadbalancer", &lb_keys, |_| json!({}))
        .await;

    // Pools (one for the listeners' default pool first).
    writeln!(g.out, "# pools").unwrap();
    let (_, b) = g
        .post(
            "/v2/lbaas/pools",
            json!({"pool": {"loadbalancer_id": lb, "protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN",
                "name": "default"}}),
        )
        .await;
    let default_pool = id(&b, "pool");
    let (_, b) = g
        .post(
            "/v2/lbaas/pools",
            json!({"pool": {"loadbalancer_id": lb, "protocol": "HTTP", "lb_algorithm": "SOURCE_IP",
                "name": "p", "description": "pd", "admin_state_up": false, "tags": ["a"],
                "session_persistence": {"type": "APP_COOKIE", "cookie_name": "c"},
                "tls_enabled": true, "tls_container_ref": "ref-tls", "ca_tls_container_ref": "ref-ca",
                "crl_container_ref": "ref-crl", "tls_ciphers": "ECDHE-RSA-AES128-GCM-SHA256",
                "tls_versions": ["TLSv1.3"], "alpn_protocols": ["h2"]}}),
        )
        .await;
    let pool = id(&b, "pool");
    let pool_path = format!("/v2/lbaas/pools/{pool}");
    g.get(&pool_path).await;
    g.put(
        &pool_path,
        json!({"pool": {"name": "p2", "description": "pd2", "admin_state_up": true,
            "lb_algorithm": "LEAST_CONNECTIONS", "session_persistence": {"type": "HTTP_COOKIE"},
            "tls_enabled": false, "tls_container_ref": "ref-tls2", "ca_tls_container_ref": "ref-ca2",
            "crl_container_ref": "ref-crl2", "tls_ciphers": "ECDHE-RSA-AES256-GCM-SHA384",
            "tls_versions": ["TLSv1.2"], "alpn_protocols": ["http/1.1"], "tags": ["b", "c"]}}),
    )
    .await;
    g.put(
        &pool_path,
        json!({"pool": {"name": null, "description": null, "admin_state_up": null,
            "lb_algorithm": null, "session_persistence": null, "tls_enabled": null,
            "tls_container_ref": null, "ca_tls_container_ref": null, "crl_container_ref": null,
            "tls_ciphers": null, "tls_versions": null, "alpn_protocols": null, "tags": null}}),
    )
    .await;
    g.put(&pool_path, json!({"pool": {"tls_enabled": true}}))
        .await;
    g.get(&pool_path).await;
    let pool_keys = [
        "name",
        "description",
        "admin_state_up",
        "project_id",
        "tenant_id",
        "listener_id",
        "loadbalancer_id",
        "protocol",
        "lb_algorithm",
        "session_persistence",
        "tls_enabled",
        "tls_container_ref",
        "ca_tls_container_ref",
        "crl_container_ref",
        "tls_ciphers",
        "tls_versions",
        "alpn_protocols",
        "tags",
        "nmae",
    ];
    let lb2 = lb.clone();
    g.matrix(
        "/v2/lbaas/pools",
        "pool",
        &pool_keys,
        move |_| json!({"loadbalancer_id": lb2, "protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN"}),
    )
    .await;
    g.matrix(&format!("{pool_path} PUT"), "pool", &pool_keys, |_| {
        json!({})
    })
    .await;

    // Listeners.
    writeln!(g.out, "# listeners").unwrap();
    let (_, b) = g
        .post(
            "/v2/lbaas/listeners",
            json!({"listener": {"loadbalancer_id": lb, "protocol": "TERMINATED_HTTPS",
                "protocol_port": 443, "name": "l", "description": "ld", "admin_state_up": false,
                "connection_limit": 100, "default_pool_id": default_pool,
                "insert_headers": {"X-Forwarded-For": "true", "X-Forwarded-Port": true},
                "default_tls_container_ref": "ref-a", "sni_container_refs": ["ref-b", "ref-c"],
                "client_ca_tls_container_ref": "ref-ca", "client_authentication": "OPTIONAL",
                "client_crl_container_ref": "ref-crl", "timeout_client_data": 1000,
                "timeout_member_connect": 2000, "timeout_member_data": 3000,
                "timeout_tcp_inspect": 4000, "allowed_cidrs": ["10.0.0.0/8", "192.0.2.0/24"],
                "tls_ciphers": "ECDHE-RSA-AES128-GCM-SHA256", "tls_versions": ["TLSv1.3"],
                "alpn_protocols": ["h2"], "hsts_max_age": 100, "hsts_include_subdomains": true,
                "hsts_preload": true, "tags": ["x", "y"]}}),
        )
        .await;
    let listener = id(&b, "listener");
    let listener_path = format!("/v2/lbaas/listeners/{listener}");
    g.get(&listener_path).await;
    g.put(
        &listener_path,
        json!({"listener": {"name": "l2", "description": "ld2", "admin_state_up": true,
            "connection_limit": 5, "default_pool_id": null,
            "insert_headers": {"X-Forwarded-Proto": "true"},
            "default_tls_container_ref": "ref-a2", "sni_container_refs": ["ref-d"],
            "client_ca_tls_container_ref": "ref-ca2", "client_authentication": "MANDATORY",
            "client_crl_container_ref": "ref-crl2", "timeout_client_data": 1,
            "timeout_member_connect": 2, "timeout_member_data": 3, "timeout_tcp_inspect": 4,
            "allowed_cidrs": ["172.16.0.0/12"], "tls_ciphers": "ECDHE-RSA-AES256-GCM-SHA384",
            "tls_versions": ["TLSv1.2", "TLSv1.3"], "alpn_protocols": ["http/1.1"],
            "hsts_max_age": 0, "hsts_include_subdomains": false, "hsts_preload": true,
            "tags": ["z"]}}),
    )
    .await;
    g.put(
        &listener_path,
        json!({"listener": {"name": null, "description": null, "admin_state_up": null,
            "connection_limit": null, "default_pool_id": null, "insert_headers": null,
            "sni_container_refs": null, "client_authentication": null,
            "client_crl_container_ref": null, "client_ca_tls_container_ref": null,
            "timeout_client_data": null, "timeout_member_connect": null,
            "timeout_member_data": null, "timeout_tcp_inspect": null, "allowed_cidrs": null,
            "tls_ciphers": null, "tls_versions": null, "alpn_protocols": null,
            "hsts_max_age": null, "hsts_include_subdomains": null, "hsts_preload": null,
            "tags": null}}),
    )
    .await;
    g.put(
        &listener_path,
        json!({"listener": {"default_pool_id": default_pool, "admin_state_up": true}}),
    )
    .await;
    g.get(&listener_path).await;
    g.get("/v2/lbaas/listeners?sort=protocol_port:desc,name&fields=id,name,protocol_port")
        .await;
    g.get(&format!(
        "/v2/lbaas/listeners?loadbalancer_id={lb}&protocol=TERMINATED_HTTPS"
    ))
    .await;
    g.get("/v2/lbaas/listeners?sort=loadbalancers").await;
    let listener_keys = [
        "name",
        "description",
        "admin_state_up",
        "project_id",
        "tenant_id",
        "loadbalancer_id",
        "protocol",
        "protocol_port",
        "connection_limit",
        "default_pool_id",
        "insert_headers",
        "default_tls_container_ref",
        "sni_container_refs",
        "client_ca_tls_container_ref",
        "client_authentication",
        "client_crl_container_ref",
        "timeout_client_data",
        "timeout_member_connect",
        "timeout_member_data",
        "timeout_tcp_inspect",
        "allowed_cidrs",
        "tls_ciphers",
        "tls_versions",
        "alpn_protocols",
        "hsts_max_age",
        "hsts_include_subdomains",
        "hsts_preload",
        "tags",
        "nmae",
    ];
    let lb2 = lb.clone();
    g.matrix(
        "/v2/lbaas/listeners",
        "listener",
        &listener_keys,
        move |g| {
            json!({"loadbalancer_id": lb2, "protocol": "TERMINATED_HTTPS",
            "protocol_port": g.next_port(), "default_tls_container_ref": "ref"})
        },
    )
    .await;
    let lb2 = lb.clone();
    g.matrix("/v2/lbaas/listeners", "listener", &listener_keys, move |g| {
        json!({"loadbalancer_id": lb2, "protocol": "HTTP", "protocol_port": g.next_port()})
    })
    .await;
    g.matrix(
        &format!("{listener_path} PUT"),
        "listener",
        &listener_keys,
        |_| json!({}),
    )
    .await;
    let (_, b) = g
        .post(
            "/v2/lbaas/listeners",
            json!({"listener": {"loadbalancer_id": lb, "protocol": "HTTP", "protocol_port": 80}}),
        )
        .await;
    let http_listener = id(&b, "listener");
    g.matrix(
        &format!("/v2/lbaas/listeners/{http_listener} PUT"),
        "listener",
        &listener_keys,
        |_| json!({}),
    )
    .await;

    // Members.
    writeln!(g.out, "# members").unwrap();
    let members = format!("/v2/lbaas/pools/{default_pool}/members");
    let (_, b) = g
        .post(
            &members,
            json!({"member": {"name": "m", "admin_state_up": false, "address": "192.0.2.1",
                "protocol_port": 80, "weight": 7, "backup": true, "subnet_id": SUBNET,
                "monitor_address": "192.0.2.2", "monitor_port": 8080, "request_sriov": false,
                "tags": ["m1"]}}),
        )
        .await;
    let member_path = format!("{members}/{}", id(&b, "member"));
    g.get(&member_path).await;
    g.put(
        &member_path,
        json!({"member": {"name": "m2", "admin_state_up": true, "weight": 0, "backup": false,
            "monitor_address": "192.0.2.3", "monitor_port": 9090, "tags": ["m2"]}}),
    )
    .await;
    g.put(
        &member_path,
        json!({"member": {"name": null, "admin_state_up": null, "weight": null, "backup": null,
            "monitor_address": null, "monitor_port": null, "tags": null}}),
    )
    .await;
    g.get(&format!("{members}?sort=weight:desc&address=192.0.2.1"))
        .await;
    g.put(
        &members,
        json!({"members": [{"address": "192.0.2.1", "protocol_port": 80, "weight": 3},
            {"address": "192.0.2.9", "protocol_port": 81, "name": "new", "tags": ["b"]}]}),
    )
    .await;
    g.get(&format!("{members}?sort=name")).await;
    let member_keys = [
        "name",
        "admin_state_up",
        "address",
        "protocol_port",
        "weight",
        "backup",
        "subnet_id",
        "monitor_address",
        "monitor_port",
        "request_sriov",
        "project_id",
        "tenant_id",
        "tags",
        "nmae",
    ];
    g.matrix(
        &members,
        "member",
        &member_keys,
        |g| json!({"address": "192.0.2.50", "protocol_port": g.next_port()}),
    )
    .await;
    g.matrix(
        &format!("{member_path} PUT"),
        "member",
        &member_keys,
        |_| json!({}),
    )
    .await;

    // Health monitors: a fresh pool per POST so each may succeed.
    writeln!(g.out, "# healthmonitors").unwrap();
    let (_, b) = g
        .post(
            "/v2/lbaas/healthmonitors",
            json!({"healthmonitor": {"pool_id": default_pool, "type": "HTTP", "delay": 5,
                "timeout": 3, "max_retries": 2, "max_retries_down": 4, "name": "h",
                "admin_state_up": false, "http_method": "HEAD", "url_path": "/health",
                "expected_codes": "200-204", "http_version": 1.1, "domain_name": "example.com",
                "tags": ["h"]}}),
        )
        .await;
    let hm_path = format!("/v2/lbaas/healthmonitors/{}", id(&b, "healthmonitor"));
    g.get(&hm_path).await;
    g.put(
        &hm_path,
        json!({"healthmonitor": {"name": "h2", "admin_state_up": true, "delay": 6, "timeout": 4,
            "max_retries": 3, "max_retries_down": 5, "http_method": "GET", "url_path": "/h2",
            "expected_codes": "200", "http_version": 1.0, "domain_name": null, "tags": []}}),
    )
    .await;
    g.put(
        &hm_path,
        json!({"healthmonitor": {"name": null, "admin_state_up": null, "max_retries_down": null,
            "http_method": null, "url_path": null, "expected_codes": null, "http_version": null,
            "domain_name": null, "tags": null}}),
    )
    .await;
    g.get(&hm_path).await;
    g.get(&members).await;
    let hm_keys = [
        "name",
        "admin_state_up",
        "pool_id",
        "type",
        "delay",
        "timeout",
        "max_retries",
        "max_retries_down",
        "http_method",
        "url_path",
        "expected_codes",
        "http_version",
        "domain_name",
        "project_id",
        "tenant_id",
        "tags",
        "nmae",
    ];
    let (_, b) = g
        .post(
            "/v2/lbaas/pools",
            json!({"pool": {"loadbalancer_id": lb, "protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN"}}),
        )
        .await;
    let hm_pool = id(&b, "pool");
    g.matrix("/v2/lbaas/healthmonitors", "healthmonitor", &hm_keys, move |_| {
        json!({"pool_id": hm_pool, "type": "HTTP", "delay": 5, "timeout": 3, "max_retries": 2})
    })
    .await;
    let (_, b) = g
        .post(
            "/v2/lbaas/pools",
            json!({"pool": {"loadbalancer_id": lb, "protocol": "TCP", "lb_algorithm": "ROUND_ROBIN"}}),
        )
        .await;
    let tcp_pool = id(&b, "pool");
    g.matrix("/v2/lbaas/healthmonitors", "healthmonitor", &hm_keys, move |_| {
        json!({"pool_id": tcp_pool, "type": "TCP", "delay": 5, "timeout": 3, "max_retries": 2})
    })
    .await;
    g.matrix(&format!("{hm_path} PUT"), "healthmonitor", &hm_keys, |_| {
        json!({})
    })
    .await;

    // L7 policies and rules.
    writeln!(g.out, "# l7policies").unwrap();
    let (_, b) = g
        .post(
            "/v2/lbaas/l7policies",
            json!({"l7policy": {"listener_id": http_listener, "action": "REDIRECT_TO_URL",
                "redirect_url": "http://example.com/", "redirect_http_code": 301, "position": 1,
                "name": "p", "description": "pd", "admin_state_up": false, "tags": ["p"]}}),
        )
        .await;
    let policy = id(&b, "l7policy");
    let policy_path = format!("/v2/lbaas/l7policies/{policy}");
    g.get(&policy_path).await;
    g.put(
        &policy_path,
        json!({"l7policy": {"name": "p2", "description": "pd2", "admin_state_up": true,
            "action": "REDIRECT_PREFIX", "redirect_prefix": "https://example.org",
            "redirect_http_code": 308, "position": 3, "tags": ["q"]}}),
    )
    .await;
    g.put(
        &policy_path,
        json!({"l7policy": {"redirect_pool_id": default_pool, "name": null, "tags": null,
            "description": null, "admin_state_up": null}}),
    )
    .await;
    g.put(&policy_path, json!({"l7policy": {"action": "REJECT"}}))
        .await;
    g.get(&policy_path).await;
    let policy_keys = [
        "name",
        "description",
        "admin_state_up",
        "project_id",
        "tenant_id",
        "listener_id",
        "action",
        "redirect_pool_id",
        "redirect_url",
        "redirect_prefix",
        "redirect_http_code",
        "position",
        "tags",
        "nmae",
    ];
    let hl = http_listener.clone();
    g.matrix(
        "/v2/lbaas/l7policies",
        "l7policy",
        &policy_keys,
        move |_| json!({"listener_id": hl, "action": "REJECT"}),
    )
    .await;
    g.matrix(
        &format!("{policy_path} PUT"),
        "l7policy",
        &policy_keys,
        |_| json!({"name": "n"}),
    )
    .await;

    writeln!(g.out, "# l7rules").unwrap();
    let rules = format!("{policy_path}/rules");
    let (_, b) = g
        .post(
            &rules,
            json!({"rule": {"type": "HEADER", "compare_type": "EQUAL_TO", "key": "X-Test",
                "value": "v", "invert": true, "admin_state_up": false, "tags": ["r"]}}),
        )
        .await;
    let rule_path = format!("{rules}/{}", id(&b, "rule"));
    g.get(&rule_path).await;
    g.put(
        &rule_path,
        json!({"rule": {"type": "PATH", "compare_type": "STARTS_WITH", "key": null,
            "value": "/api", "invert": false, "admin_state_up": true, "tags": ["r2"]}}),
    )
    .await;
    g.put(
        &rule_path,
        json!({"rule": {"key": null, "invert": null, "admin_state_up": null, "tags": null}}),
    )
    .await;
    g.get(&rule_path).await;
    g.get(&policy_path).await;
    let rule_keys = [
        "type",
        "compare_type",
        "key",
        "value",
        "invert",
        "admin_state_up",
        "project_id",
        "tenant_id",
        "tags",
        "nmae",
    ];
    g.matrix(
        &rules,
        "rule",
        &rule_keys,
        |_| json!({"type": "PATH", "compare_type": "STARTS_WITH", "value": "/a"}),
    )
    .await;
    g.matrix(&format!("{rule_path} PUT"), "rule", &rule_keys, |_| {
        json!({})
    })
    .await;

    // Single-create: the whole graph in one POST.
    writeln!(g.out, "# single-create").unwrap();
    g.post(
        "/v2/lbaas/loadbalancers",
        json!({"loadbalancer": {"vip_subnet_id": SUBNET, "name": "graph", "tags": ["g"],
            "listeners": [{"protocol": "HTTP", "protocol_port": 80, "name": "gl",
                "connection_limit": 10, "insert_headers": {"X-Forwarded-For": "true"},
                "timeout_client_data": 10, "allowed_cidrs": ["10.0.0.0/8"], "tags": ["gl"],
                "default_pool": {"name": "gp"},
                "l7policies": [{"action": "REDIRECT_TO_POOL", "redirect_pool": {"name": "gp2"},
                    "name": "gpol", "position": 1,
                    "rules": [{"type": "PATH", "compare_type": "EQUAL_TO", "value": "/x",
                        "tags": ["gr"]}]},
                    {"action": "REDIRECT_TO_URL", "redirect_url": "http://e.com/"}]}],
            "pools": [{"name": "gp", "protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN",
                "session_persistence": {"type": "SOURCE_IP"}, "tags": ["gp"],
                "healthmonitor": {"type": "HTTP", "delay": 5, "timeout": 3, "max_retries": 2,
                    "url_path": "/hc", "tags": ["ghm"]},
                "members": [{"address": "192.0.2.20", "protocol_port": 80, "weight": 2,
                    "tags": ["gm"]}, {"address": "192.0.2.21", "protocol_port": 80}]},
                {"name": "gp2", "protocol": "HTTP", "lb_algorithm": "LEAST_CONNECTIONS"}]}}),
    )
    .await;
    g.get("/v2/lbaas/loadbalancers?name=graph").await;
    g.get("/v2/lbaas/pools?name=gp").await;
    g.get("/v2/lbaas/listeners?name=gl").await;
    g.get("/v2/lbaas/l7policies?name=gpol").await;
    g.get("/v2/lbaas/healthmonitors?url_path=/hc").await;
    for bad in [
        json!({"listeners": [{"protocol": "HTTP", "protocol_port": 80, "nmae": 1}]}),
        json!({"listeners": [{"protocol": "HTTP", "protocol_port": "x"}]}),
        json!({"listeners": [{"protocol": "HTTP", "protocol_port": 81, "timeout_client_data": -5}]}),
        json!({"pools": [{"name": "a", "protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN",
            "members": [{"address": "192.0.2.1", "protocol_port": 80, "weight": 900}]}]}),
        json!({"pools": [{"name": "a", "protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN",
            "healthmonitor": {"type": "HTTP", "delay": 5, "timeout": 3}}]}),
        json!({"pools": [{"name": "a", "protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN",
            "tls_versions": []}]}),
    ] {
        let mut b = bad;
        b["vip_subnet_id"] = json!(SUBNET);
        g.post("/v2/lbaas/loadbalancers", json!({ "loadbalancer": b }))
            .await;
    }

    // Lists of every kind, sorted and filtered on rendered attributes.
    writeln!(g.out, "# lists").unwrap();
    for (path, q) in [
        (
            "/v2/lbaas/loadbalancers",
            "sort=name&fields=name,vip_address,tags",
        ),
        (
            "/v2/lbaas/pools",
            "sort=lb_algorithm:desc,name&fields=name,lb_algorithm,tls_enabled",
        ),
        (
            "/v2/lbaas/listeners",
            "sort=protocol_port&fields=protocol_port,timeout_client_data",
        ),
        (
            "/v2/lbaas/healthmonitors",
            "sort=type,delay&fields=type,delay,max_retries_down",
        ),
        (
            "/v2/lbaas/l7policies",
            "sort=position&fields=action,position,redirect_http_code",
        ),
        ("/v2/lbaas/listeners", "admin_state_up=true&fields=name"),
        ("/v2/lbaas/pools", "protocol=TCP&fields=protocol"),
        ("/v2/lbaas/pools", "sort=session_persistence"),
    ] {
        g.get(&format!("{path}?{q}")).await;
    }
    g.get(&format!("{rules}?sort=type&fields=type,value,key"))
        .await;

    admin_resources(&mut g).await;

    let actual = std::mem::take(&mut g.out);
    if std::env::var_os("KLB_BLESS_GOLDEN").is_some() {
        std::fs::create_dir_all(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden")).unwrap();
        std::fs::write(GOLDEN, &actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(GOLDEN).expect("golden file (KLB_BLESS_GOLDEN=1)");
    if let Some((n, (e, a))) = expected
        .lines()
        .zip(actual.lines())
        .enumerate()
        .find(|(_, (e, a))| e != a)
    {
        panic!("golden line {}:\nexpected: {e}\nactual:   {a}", n + 1);
    }
    assert_eq!(
        expected.lines().count(),
        actual.lines().count(),
        "golden transcript length"
    );
}

/// Quotas, flavors, availability zones and their profiles, as an operator. Names made unique
/// with a counter; lists are sorted by name and show no ids (ties between equal rows cannot
/// reorder the transcript).
async fn admin_resources(g: &mut Golden) {
    g.admin = true;

    writeln!(g.out, "# quotas").unwrap();
    let quota_path = format!("/v2/lbaas/quotas/{PROJECT}");
    g.get(&quota_path).await;
    g.put(
        &quota_path,
        json!({"quota": {"loadbalancer": 5, "health_monitor": 3, "listener": null, "l7rule": 0}}),
    )
    .await;
    g.put(
        &quota_path,
        json!({"quota": {"load_balancer": 7, "loadbalancer": 6, "healthmonitor": null}}),
    )
    .await;
    g.get(&quota_path).await;
    g.get(&format!("{quota_path}/default")).await;
    g.get("/v2/lbaas/quotas").await;
    g.get("/v2/lbaas/quotas?fields=project_id,pool,load_balancer")
        .await;
    let quota_keys = [
        "loadbalancer",
        "load_balancer",
        "listener",
        "member",
        "pool",
        "healthmonitor",
        "health_monitor",
        "l7policy",
        "l7rule",
        "nmae",
    ];
    g.matrix(&format!("{quota_path} PUT"), "quota", &quota_keys, |_| {
        json!({})
    })
    .await;
    g.call("DELETE", &quota_path, None).await;
    g.get(&quota_path).await;

    for (plural, single, data, profile_id, users, user) in [
        (
            "flavorprofiles",
            "flavorprofile",
            "flavor_data",
            "flavor_profile_id",
            "flavors",
            "flavor",
        ),
        (
            "availabilityzoneprofiles",
            "availability_zone_profile",
            "availability_zone_data",
            "availability_zone_profile_id",
            "availabilityzones",
            "availability_zone",
        ),
    ] {
        writeln!(g.out, "# {plural}").unwrap();
        let base = format!("/v2/lbaas/{plural}");
        let (_, b) = g
            .post(
                &base,
                json!({ single: {"name": "prof", "provider_name": "klb", data: "{}"} }),
            )
            .await;
        let profile = id(&b, single);
        let profile_path = format!("{base}/{profile}");
        g.get(&profile_path).await;
        g.put(&profile_path, json!({ single: {"name": "prof2"} }))
            .await;
        g.put(
            &profile_path,
            json!({ single: {"provider_name": "klb", data: "{}"} }),
        )
        .await;
        g.put(&profile_path, json!({ single: {"name": null} }))
            .await;
        g.get(&profile_path).await;
        let profile_keys = ["name", "provider_name", data, "nmae"];
        g.matrix(&base, single, &profile_keys, |g| {
            json!({"name": format!("prof-{}", g.next_port()), "provider_name": "klb", data: "{}"})
        })
        .await;
        g.matrix(
            &format!("{profile_path} PUT"),
            single,
            &profile_keys,
            |_| json!({}),
        )
        .await;

        writeln!(g.out, "# {users}").unwrap();
        let user_base = format!("/v2/lbaas/{users}");
        let (_, b) = g
            .post(
                &user_base,
                json!({ user: {"name": "u1", "description": "d", "enabled": false,
                    profile_id: profile} }),
            )
            .await;
        // Availability zones are keyed by name.
        let key = if user == "flavor" {
            id(&b, user)
        } else {
            "u1".to_owned()
        };
        let user_path = format!("{user_base}/{key}");
        g.get(&user_path).await;
        g.put(
            &user_path,
            json!({ user: {"description": null, "enabled": true} }),
        )
        .await;
        g.put(&user_path, json!({ user: {"enabled": null} })).await;
        g.put(&user_path, json!({ user: {"name": null} })).await;
        g.put(&profile_path, json!({ single: {data: "{}"} })).await;
        g.get(&user_path).await;
        let user_keys = ["name", "description", "enabled", profile_id, "nmae"];
        let profile = profile.clone();
        g.matrix(
            &user_base,
            user,
            &user_keys,
            move |g| json!({"name": format!("u-{}", g.next_port()), profile_id: profile}),
        )
        .await;
        g.matrix(&format!("{user_path} PUT"), user, &user_keys, |_| json!({}))
            .await;
        g.get(&format!(
            "{user_base}?sort=name&fields=name,enabled,description"
        ))
        .await;
        g.get(&format!("{user_base}?enabled=false&sort=name&fields=name"))
            .await;
        g.get(&format!("{base}?sort=name:desc&fields=name,provider_name"))
            .await;
        g.call("DELETE", &profile_path, None).await;
    }
}
