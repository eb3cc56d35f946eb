//! Fuzzing of the API's inputs with proptest strategies: JSON bodies (valid templates with
//! fields replaced, dropped or added; arbitrary JSON; raw bytes; deep nesting), query strings
//! (known and unknown keys, hostile values, broken percent-encoding), headers (identity,
//! content type, arbitrary names and bytes) and paths. Each case is one request; the answer
//! must not be a 5xx (501 is Octavia's "unsupported option") and must arrive. Cases come from a
//! seeded `TestRunner` per worker, so a run is reproducible from its seed; failing cases are
//! recorded verbatim (no shrinking: a request against a live server is not replayable
//! cheaply, and the recorded input is small).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config as RunnerConfig, RngAlgorithm, TestRng, TestRunner};
use reqwest::Method;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use super::client::{Client, Counts, sample};

/// Bounds of one fuzz run.
#[derive(Debug, Clone)]
pub struct FuzzConfig {
    /// Cases to run (or ran).
    pub cases: u64,
    /// Stop after this long even if cases remain.
    pub time_limit: Duration,
    /// Concurrent senders.
    pub workers: usize,
    /// Random seed (a run is reproducible from it).
    pub seed: u64,
}

/// Results of one fuzz run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FuzzReport {
    /// Cases to run (or ran).
    pub cases: u64,
    /// Random seed (a run is reproducible from it).
    pub seed: u64,
    /// Wall time, seconds.
    pub elapsed_s: f64,
    /// Answers per input class (`body`, `query`, `header`, `path`).
    pub by_class: BTreeMap<String, Counts>,
    /// Answers by HTTP status (0: no answer).
    pub statuses: BTreeMap<u16, u64>,
    /// Failing inputs (5xx or no answer), verbatim but truncated.
    pub failure_samples: Vec<String>,
    /// The time limit ended the run before the case count.
    pub hit_time_limit: bool,
    /// Generated cases the HTTP client could not build (not sent, not counted in `cases`).
    pub unsendable: u64,
}

impl FuzzReport {
    /// What breaks the suite's rules, as messages prefixed with `what` (empty: passed).
    pub fn failures(&self, what: &str) -> Vec<String> {
        let all = self.by_class.values().fold(Counts::default(), |mut a, c| {
            a.merge(c);
            a
        });
        let mut out = Vec::new();
        if all.server_error > 0 {
            out.push(format!(
                "{what}: {} fuzz cases answered 5xx",
                all.server_error
            ));
        }
        if all.transport > 0 {
            out.push(format!(
                "{what}: {} fuzz cases got no answer",
                all.transport
            ));
        }
        if self.cases == 0 {
            out.push(format!("{what}: no fuzz case ran"));
        }
        out
    }
}

/// Ids of real objects, so bodies and paths reach validation of existing resources.
#[derive(Debug, Clone)]
pub struct Fixture {
    /// Project of the fuzzed objects.
    pub project: String,
    /// An existing load balancer id.
    pub lb: String,
    /// An existing listener id.
    pub listener: String,
    /// An existing pool id.
    pub pool: String,
    /// An existing member id.
    pub member: String,
    /// An existing health monitor id.
    pub health_monitor: String,
    /// An existing L7 policy id.
    pub l7policy: String,
    /// An existing L7 rule id.
    pub l7rule: String,
}

/// One generated request.
#[derive(Debug, Clone)]
struct Case {
    class: &'static str,
    method: Method,
    path: String,
    headers: Vec<(String, Vec<u8>)>,
    /// Replaces the default identity (project header) when false.
    default_identity: bool,
    admin: bool,
    body: Option<Vec<u8>>,
}

impl Case {
    fn describe(&self) -> String {
        let body = self
            .body
            .as_ref()
            .map(|b| {
                String::from_utf8_lossy(b)
                    .chars()
                    .take(300)
                    .collect::<String>()
            })
            .unwrap_or_default();
        let headers: Vec<String> = self
            .headers
            .iter()
            .map(|(k, v)| {
                format!(
                    "{k}: {}",
                    String::from_utf8_lossy(v)
                        .chars()
                        .take(80)
                        .collect::<String>()
                )
            })
            .collect();
        format!(
            "[{}] {} {} headers {:?} admin={} body {}",
            self.class,
            self.method,
            self.path.chars().take(300).collect::<String>(),
            headers,
            self.admin,
            body
        )
    }
}

/// Strings that tend to break parsers and validators.
fn hostile_string() -> BoxedStrategy<String> {
    prop_oneof![
        ".{0,40}",
        "[ -~]{0,40}",
        "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
        "-?[0-9]{1,25}",
        "[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}(/[0-9]{1,3})?",
        Just(String::new()),
        Just("\0".to_string()),
        Just("a\r\nb".to_string()),
        Just("x".repeat(70_000)),
        Just("é".repeat(300)),
        Just("::ffff:169.254.169.254".to_string()),
        Just("0.0.0.0/0".to_string()),
        Just("HTTP://Example.COM./path?q=#frag".to_string()),
        Just("%00%zz%".to_string()),
        Just("' OR 1=1 --".to_string()),
        Just("\u{202e}\u{feff}\u{10ffff}".to_string()),
        Just("300-200".to_string()),
        Just("NaN".to_string()),
        Just("1e309".to_string()),
        prop::sample::select(vec![
            "HTTP",
            "HTTPS",
            "TCP",
            "UDP",
            "SCTP",
            "PROXY",
            "PROXYV2",
            "TERMINATED_HTTPS",
            "ROUND_ROBIN",
            "LEAST_CONNECTIONS",
            "SOURCE_IP",
            "SOURCE_IP_PORT",
            "PING",
            "HTTP_COOKIE",
            "APP_COOKIE",
            "REDIRECT_TO_URL",
            "REJECT",
            "HEADER",
            "COOKIE",
            "EQUAL_TO",
            "REGEX",
            "STARTS_WITH",
            "SSL_DN_FIELD",
            "ACTIVE",
            "ERROR",
            "PENDING_UPDATE",
            "klb",
            "amphora",
            "admin",
            "true",
            "null",
        ])
        .prop_map(str::to_owned),
    ]
    .boxed()
}

/// Arbitrary JSON (bounded depth and size).
fn json_value() -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        prop::sample::select(vec![
            0i64,
            -1,
            1,
            65535,
            65536,
            2147483648,
            i64::MAX,
            i64::MIN
        ])
        .prop_map(|n| json!(n)),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
            .map(Value::Number)),
        hostile_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 24, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(field_name(), inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
    .boxed()
}

/// Octavia's field names (so a random object hits real fields), or any name.
fn field_name() -> BoxedStrategy<String> {
    prop_oneof![
        3 => prop::sample::select(FIELDS.to_vec()).prop_map(str::to_owned),
        1 => ".{0,12}",
    ]
    .boxed()
}

const FIELDS: &[&str] = &[
    "name",
    "description",
    "admin_state_up",
    "tags",
    "project_id",
    "tenant_id",
    "id",
    "vip_subnet_id",
    "vip_network_id",
    "vip_port_id",
    "vip_address",
    "vip_qos_policy_id",
    "additional_vips",
    "subnet_id",
    "ip_address",
    "flavor_id",
    "availability_zone",
    "provider",
    "loadbalancer_id",
    "listener_id",
    "pool_id",
    "protocol",
    "protocol_port",
    "connection_limit",
    "default_pool_id",
    "default_tls_container_ref",
    "sni_container_refs",
    "insert_headers",
    "timeout_client_data",
    "timeout_member_connect",
    "timeout_member_data",
    "timeout_tcp_inspect",
    "allowed_cidrs",
    "client_ca_tls_container_ref",
    "client_authentication",
    "client_crl_container_ref",
    "tls_ciphers",
    "tls_versions",
    "alpn_protocols",
    "hsts_max_age",
    "hsts_include_subdomains",
    "hsts_preload",
    "lb_algorithm",
    "session_persistence",
    "type",
    "cookie_name",
    "persistence_timeout",
    "persistence_granularity",
    "tls_enabled",
    "tls_container_ref",
    "ca_tls_container_ref",
    "crl_container_ref",
    "address",
    "weight",
    "backup",
    "monitor_address",
    "monitor_port",
    "delay",
    "timeout",
    "max_retries",
    "max_retries_down",
    "http_method",
    "url_path",
    "expected_codes",
    "http_version",
    "domain_name",
    "action",
    "position",
    "redirect_pool_id",
    "redirect_url",
    "redirect_prefix",
    "redirect_http_code",
    "compare_type",
    "key",
    "value",
    "invert",
    "rules",
    "members",
    "loadbalancer",
    "listener",
    "pool",
    "member",
    "healthmonitor",
    "l7policy",
    "rule",
    "quota",
    "flavor",
    "flavorprofile",
    "flavor_data",
    "provider_name",
    "enabled",
    "availability_zone_data",
    "availabilityzone",
    "availabilityzoneprofile",
    "load_balancer",
    "health_monitor",
    "l7policy_id",
    "payload",
    "payload_content_type",
    "payload_content_encoding",
    "secret_type",
    "algorithm",
    "bit_length",
    "mode",
    "expiration",
    "secret_refs",
    "secret_ref",
];

/// Valid bodies, per (method, path), for the fixture's objects.
fn templates(f: &Fixture) -> Vec<(Method, String, Value)> {
    let lb = &f.lb;
    vec![
        (
            Method::POST,
            "/v2/lbaas/loadbalancers".into(),
            json!({"loadbalancer": {"name": "fz", "vip_subnet_id": "7c4cbf3e-4f2a-4c8d-9a51-3a2a3b0c0d01",
                "admin_state_up": true, "tags": ["a"], "description": "d"}}),
        ),
        (
            Method::PUT,
            format!("/v2/lbaas/loadbalancers/{lb}"),
            json!({"loadbalancer": {"name": "fz2", "description": "d", "admin_state_up": true}}),
        ),
        (
            Method::POST,
            "/v2/lbaas/listeners".into(),
            json!({"listener": {"loadbalancer_id": lb, "protocol": "HTTP", "protocol_port": 8080,
                "connection_limit": -1, "insert_headers": {"X-Forwarded-For": "true"},
                "allowed_cidrs": ["198.18.0.0/16"], "timeout_client_data": 50000}}),
        ),
        (
            Method::PUT,
            format!("/v2/lbaas/listeners/{}", f.listener),
            json!({"listener": {"name": "l", "connection_limit": 100, "default_pool_id": f.pool}}),
        ),
        (
            Method::POST,
            "/v2/lbaas/pools".into(),
            json!({"pool": {"loadbalancer_id": lb, "protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN",
                "session_persistence": {"type": "APP_COOKIE", "cookie_name": "c"}}}),
        ),
        (
            Method::PUT,
            format!("/v2/lbaas/pools/{}", f.pool),
            json!({"pool": {"lb_algorithm": "LEAST_CONNECTIONS", "session_persistence": {"type": "HTTP_COOKIE"}}}),
        ),
        (
            Method::POST,
            format!("/v2/lbaas/pools/{}/members", f.pool),
            json!({"member": {"address": "198.18.3.4", "protocol_port": 80, "weight": 1,
                "monitor_address": "198.18.3.5", "monitor_port": 81, "backup": false}}),
        ),
        (
            Method::PUT,
            format!("/v2/lbaas/pools/{}/members/{}", f.pool, f.member),
            json!({"member": {"weight": 5, "admin_state_up": true, "name": "m"}}),
        ),
        (
            Method::PUT,
            format!("/v2/lbaas/pools/{}/members", f.pool),
            json!({"members": [{"address": "198.18.3.6", "protocol_port": 80}]}),
        ),
        (
            Method::POST,
            "/v2/lbaas/healthmonitors".into(),
            json!({"healthmonitor": {"pool_id": f.pool, "type": "HTTP", "delay": 5, "timeout": 3,
                "max_retries": 3, "url_path": "/", "expected_codes": "200-204", "http_method": "GET",
                "http_version": 1.1, "domain_name": "example.com"}}),
        ),
        (
            Method::PUT,
            format!("/v2/lbaas/healthmonitors/{}", f.health_monitor),
            json!({"healthmonitor": {"delay": 10, "expected_codes": "200", "url_path": "/h"}}),
        ),
        (
            Method::POST,
            "/v2/lbaas/l7policies".into(),
            json!({"l7policy": {"listener_id": f.listener, "action": "REDIRECT_TO_URL",
                "redirect_url": "http://example.com/", "position": 1, "redirect_http_code": 301}}),
        ),
        (
            Method::PUT,
            format!("/v2/lbaas/l7policies/{}", f.l7policy),
            json!({"l7policy": {"action": "REJECT", "position": 2}}),
        ),
        (
            Method::POST,
            format!("/v2/lbaas/l7policies/{}/rules", f.l7policy),
            json!({"rule": {"type": "HEADER", "compare_type": "EQUAL_TO", "key": "X-A", "value": "b"}}),
        ),
        (
            Method::PUT,
            format!("/v2/lbaas/l7policies/{}/rules/{}", f.l7policy, f.l7rule),
            json!({"rule": {"type": "PATH", "compare_type": "REGEX", "value": "^/a[0-9]+$"}}),
        ),
        (
            Method::PUT,
            format!("/v2/lbaas/quotas/{}", f.project),
            json!({"quota": {"loadbalancer": 100, "listener": -1, "member": 10}}),
        ),
        (
            Method::POST,
            "/v2/lbaas/flavorprofiles".into(),
            json!({"flavorprofile": {"name": "fp", "provider_name": "klb", "flavor_data": "{\"loadbalancer_topology\": \"SINGLE\"}"}}),
        ),
        (
            Method::POST,
            "/v2/lbaas/flavors".into(),
            json!({"flavor": {"name": "f", "flavor_profile_id": "7c4cbf3e-4f2a-4c8d-9a51-3a2a3b0c0d01", "enabled": true}}),
        ),
        (
            Method::POST,
            "/v2/lbaas/availabilityzoneprofiles".into(),
            json!({"availabilityzoneprofile": {"name": "azp", "provider_name": "klb", "availability_zone_data": "{}"}}),
        ),
        (
            Method::POST,
            "/v2/lbaas/availabilityzones".into(),
            json!({"availabilityzone": {"name": "az", "availability_zone_profile_id": "7c4cbf3e-4f2a-4c8d-9a51-3a2a3b0c0d01"}}),
        ),
        (
            Method::PUT,
            format!("/v2/lbaas/loadbalancers/{lb}/failover"),
            json!({}),
        ),
        (
            Method::POST,
            "/v1/secrets".into(),
            json!({"name": "s", "payload": "abc", "payload_content_type": "text/plain", "secret_type": "opaque"}),
        ),
        (
            Method::POST,
            "/v1/containers".into(),
            json!({"name": "c", "type": "certificate", "secret_refs": [{"name": "certificate", "secret_ref": "http://x/v1/secrets/1"}]}),
        ),
    ]
}

/// Replaces, drops or adds fields of a template (inside its resource wrapper when present).
fn mutate(template: Value, edits: Vec<(u8, String, Value)>, pick: usize) -> Value {
    let mut v = template;
    let inner = match &mut v {
        Value::Object(top) if top.len() == 1 && top.values().all(Value::is_object) => {
            top.values_mut().next().and_then(Value::as_object_mut)
        }
        Value::Object(top) => Some(top),
        _ => None,
    };
    if let Some(obj) = inner {
        let keys: Vec<String> = obj.keys().cloned().collect();
        for (i, (kind, name, value)) in edits.into_iter().enumerate() {
            let existing = (!keys.is_empty()).then(|| keys[(pick + i) % keys.len()].clone());
            match (kind % 3, existing) {
                (0, Some(k)) => {
                    obj.insert(k, value);
                }
                (1, Some(k)) => {
                    obj.remove(&k);
                }
                _ => {
                    obj.insert(name, value);
                }
            }
        }
    }
    v
}

const HEADER_NAMES: &[&str] = &[
    "x-project-id",
    "x-tenant-id",
    "x-roles",
    "x-user-id",
    "content-type",
    "accept",
    "x-auth-token",
    "x-openstack-request-id",
    "openstack-api-version",
    "x-forwarded-for",
    "host",
    "x-subject-token",
    "accept-encoding",
    "transfer-encoding-x",
];

/// Bytes a header value may carry (visible ASCII, space, tab, obs-text).
fn header_value() -> BoxedStrategy<Vec<u8>> {
    let byte = prop_oneof![0x20u8..0x7f, 0x80u8..=0xff, Just(b'\t')];
    prop_oneof![
        prop::collection::vec(byte, 0..64),
        hostile_string()
            .prop_filter("valid header text", |s| !s
                .bytes()
                .any(|b| (b < 0x20 && b != b'\t') || b == 0x7f))
            .prop_map(String::into_bytes),
        Just(vec![b'a'; 8000]),
        prop::sample::select(vec![
            "application/json",
            "text/plain",
            "application/json; charset=latin1",
            "*/*",
            "admin",
            "admin,member",
            "load-balancer_admin",
            "reader",
            "",
            "gzip",
            "2.99",
        ])
        .prop_map(|s| s.as_bytes().to_vec()),
    ]
    .boxed()
}

/// Percent-encodes all but unreserved characters (sometimes leaving the raw text).
fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

const QUERY_KEYS: &[&str] = &[
    "limit",
    "marker",
    "page_reverse",
    "sort",
    "sort_key",
    "sort_dir",
    "fields",
    "name",
    "id",
    "project_id",
    "provisioning_status",
    "operating_status",
    "tags",
    "tags-any",
    "not-tags",
    "not-tags-any",
    "description",
    "admin_state_up",
    "vip_address",
    "protocol_port",
    "protocol",
    "created_at",
    "updated_at",
    "cascade",
    "lb_algorithm",
    "weight",
    "address",
];

const COLLECTIONS: &[&str] = &[
    "/v2/lbaas/loadbalancers",
    "/v2/lbaas/listeners",
    "/v2/lbaas/pools",
    "/v2/lbaas/healthmonitors",
    "/v2/lbaas/l7policies",
    "/v2/lbaas/quotas",
    "/v2/lbaas/flavors",
    "/v2/lbaas/flavorprofiles",
    "/v2/lbaas/availabilityzones",
    "/v2/lbaas/availabilityzoneprofiles",
    "/v2/lbaas/providers",
    "/v2/octavia/amphorae",
    "/v2/loadbalancers",
    "/v2.0/lbaas/pools",
    "/v1/secrets",
    "/v1/containers",
];

fn case_strategy(f: &Fixture) -> BoxedStrategy<Case> {
    let tpl = templates(f);
    let mut collections: Vec<String> = COLLECTIONS.iter().map(|s| s.to_string()).collect();
    collections.push(format!("/v2/lbaas/pools/{}/members", f.pool));
    collections.push(format!("/v2/lbaas/l7policies/{}/rules", f.l7policy));
    let ids = vec![
        f.lb.clone(),
        f.listener.clone(),
        f.pool.clone(),
        f.member.clone(),
        f.health_monitor.clone(),
        f.l7policy.clone(),
        f.l7rule.clone(),
        f.project.clone(),
    ];

    // JSON bodies.
    let body = (
        prop::sample::select(tpl),
        prop::collection::vec((any::<u8>(), field_name(), json_value()), 1..4),
        any::<usize>(),
        0u8..10,
        json_value(),
        prop::collection::vec(any::<u8>(), 0..200),
        1usize..5000,
        any::<bool>(),
    )
        .prop_map(
            |((method, path, t), edits, pick, kind, random, bytes, depth, admin)| {
                let body = match kind {
                    0..6 => serde_json::to_vec(&mutate(t, edits, pick)).unwrap_or_default(),
                    6 | 7 => serde_json::to_vec(&random).unwrap_or_default(),
                    8 => bytes,
                    _ => format!("{}{}", "[".repeat(depth), "]".repeat(depth)).into_bytes(),
                };
                Case {
                    class: "body",
                    method,
                    path,
                    headers: vec![("content-type".into(), b"application/json".to_vec())],
                    default_identity: true,
                    admin,
                    body: Some(body),
                }
            },
        );

    // Query strings.
    let pair = (
        prop_oneof![3 => prop::sample::select(QUERY_KEYS.to_vec()).prop_map(str::to_owned), 1 => ".{0,10}"],
        prop_oneof![
            hostile_string(),
            prop::sample::select(ids.clone()),
            prop::sample::select(vec![
                "-1",
                "0",
                "1",
                "1001",
                "infinite",
                "asc",
                "desc",
                "true",
                "name:asc,id:desc",
                "name,id",
                "%zz",
                "%",
                "a=b",
                "99999999999999999999999"
            ])
            .prop_map(str::to_owned),
        ],
        0u8..4,
    );
    let query = (
        prop::sample::select(collections.clone()),
        prop::collection::vec(pair, 0..6),
        any::<bool>(),
    )
        .prop_map(|(path, pairs, admin)| {
            let q: Vec<String> = pairs
                .into_iter()
                .map(|(k, v, raw)| {
                    // Mostly encoded; sometimes the raw text (the client encodes what it must).
                    if raw == 0 {
                        format!("{k}={v}")
                    } else {
                        format!("{}={}", encode(&k), encode(&v))
                    }
                })
                .collect();
            Case {
                class: "query",
                method: Method::GET,
                path: format!("{path}?{}", q.join("&")),
                headers: Vec::new(),
                default_identity: true,
                admin,
                body: None,
            }
        });

    // Headers.
    let header = (
        prop::collection::vec(
            (
                prop_oneof![3 => prop::sample::select(HEADER_NAMES.to_vec()).prop_map(str::to_owned),
                    1 => "[a-z][a-z0-9-]{0,20}"],
                header_value(),
            ),
            1..5,
        ),
        prop::sample::select(vec![
            (Method::GET, "/v2/lbaas/loadbalancers".to_string()),
            (Method::GET, format!("/v2/lbaas/loadbalancers/{}", f.lb)),
            (Method::POST, "/v2/lbaas/loadbalancers".to_string()),
            (Method::GET, "/".to_string()),
            (Method::GET, "/v1/secrets".to_string()),
            (Method::PUT, format!("/v2/lbaas/quotas/{}", f.project)),
        ]),
        any::<bool>(),
    )
        .prop_map(|(headers, (method, path), keep_identity)| {
            let body = (method != Method::GET).then(|| {
                br#"{"loadbalancer": {"vip_subnet_id": "7c4cbf3e-4f2a-4c8d-9a51-3a2a3b0c0d01"}, "quota": {"loadbalancer": 5}}"#.to_vec()
            });
            Case {
                class: "header",
                method,
                path,
                headers,
                default_identity: keep_identity,
                admin: false,
                body,
            }
        });

    // Paths.
    let segment = prop_oneof![
        prop::sample::select(vec![
            "loadbalancers",
            "listeners",
            "pools",
            "members",
            "healthmonitors",
            "l7policies",
            "rules",
            "stats",
            "status",
            "failover",
            "quotas",
            "default",
            "amphorae",
            "config",
            "flavors",
            "providers",
            "..",
            ".",
            "",
            "%2e%2e",
            "%2F",
            "%00",
            "%ff",
            "00000000-0000-0000-0000-000000000000"
        ])
        .prop_map(str::to_owned),
        prop::sample::select(ids),
        "[ -~]{0,40}".prop_map(|s| encode(&s)),
        Just("a".repeat(5000)),
    ];
    let path = (
        prop::sample::select(vec![
            "/v2/lbaas/",
            "/v2/",
            "/v2.0/lbaas/",
            "/v1/",
            "/",
            "/v2/octavia/",
        ]),
        prop::collection::vec(segment, 0..6),
        prop::sample::select(vec![
            Method::GET,
            Method::PUT,
            Method::POST,
            Method::DELETE,
            Method::PATCH,
            Method::HEAD,
            Method::OPTIONS,
        ]),
        any::<bool>(),
    )
        .prop_map(|(prefix, segs, method, admin)| {
            // DELETE only on paths that cannot name the fixture's objects by accident.
            let method = if method == Method::DELETE && segs.len() < 3 {
                Method::GET
            } else {
                method
            };
            Case {
                class: "path",
                method,
                path: format!("{prefix}{}", segs.join("/")),
                headers: Vec::new(),
                default_identity: true,
                admin,
                body: Some(b"{}".to_vec()),
            }
        });

    prop_oneof![4 => body, 3 => query, 2 => header, 1 => path].boxed()
}

/// Sends one case; None when the client library refuses to build it (e.g. a URI over 64 KiB):
/// such a request never reaches a server.
async fn send(client: &Client, case: &Case, project: &str) -> Option<super::client::Reply> {
    let url = format!("{}{}", client.base, case.path);
    // The `http` crate refuses URIs of 64 KiB and more when sending.
    if url.len() >= 65_000 {
        return None;
    }
    let mut req = client.raw().request(case.method.clone(), &url);
    if case.default_identity {
        req = req.header("x-project-id", project);
    }
    if case.admin {
        req = req.header("x-roles", "admin");
    }
    for (k, v) in &case.headers {
        if let (Ok(name), Ok(value)) = (
            reqwest::header::HeaderName::from_bytes(k.as_bytes()),
            reqwest::header::HeaderValue::from_bytes(v),
        ) {
            req = req.header(name, value);
        }
    }
    if let Some(b) = &case.body {
        req = req.body(b.clone());
    }
    let built = req.build().ok()?;
    let req = reqwest::RequestBuilder::from_parts(client.raw().clone(), built);
    Some(client.send(req).await)
}

/// Runs up to `cases` cases (bounded by time) with `workers` concurrent senders. Cases are
/// generated on one thread from one seeded runner (proptest's trees are not `Send`) and
/// handed over through a small bounded channel.
pub async fn run(client: &Client, fixture: &Fixture, config: &FuzzConfig) -> FuzzReport {
    let started = Instant::now();
    let deadline = started + config.time_limit;
    let (tx, rx) = tokio::sync::mpsc::channel::<Case>(64);
    let generator = {
        let (fixture, limit, seed) = (fixture.clone(), config.cases, config.seed);
        std::thread::spawn(move || {
            let strategy = case_strategy(&fixture);
            let mut key = [0u8; 32];
            key[..8].copy_from_slice(&seed.to_le_bytes());
            let mut runner = TestRunner::new_with_rng(
                RunnerConfig::default(),
                TestRng::from_seed(RngAlgorithm::ChaCha, &key),
            );
            for _ in 0..limit {
                let Ok(tree) = strategy.new_tree(&mut runner) else {
                    continue;
                };
                // The receivers are gone at the deadline.
                if tx.blocking_send(tree.current()).is_err() {
                    return;
                }
            }
        })
    };
    let rx = Arc::new(Mutex::new(rx));
    let report = Arc::new(Mutex::new(FuzzReport {
        seed: config.seed,
        ..FuzzReport::default()
    }));
    let mut tasks = Vec::new();
    for _ in 0..config.workers.max(1) {
        let (client, rx, report) = (client.clone(), rx.clone(), report.clone());
        let project = fixture.project.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                if Instant::now() >= deadline {
                    report.lock().await.hit_time_limit = true;
                    return;
                }
                let Some(case) = rx.lock().await.recv().await else {
                    return;
                };
                let Some(reply) = send(&client, &case, &project).await else {
                    report.lock().await.unsendable += 1;
                    continue;
                };
                let mut r = report.lock().await;
                r.cases += 1;
                r.by_class
                    .entry(case.class.to_string())
                    .or_default()
                    .add(&reply);
                *r.statuses.entry(reply.status().unwrap_or(0)).or_default() += 1;
                if reply.status().is_none_or(|s| s >= 500 && s != 501) {
                    let text = format!("{} -> {}", case.describe(), reply.describe());
                    sample(&mut r.failure_samples, text);
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    drop(rx);
    let _ = tokio::task::spawn_blocking(move || generator.join()).await;
    let mut out = report.lock().await.clone();
    out.elapsed_s = (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> Fixture {
        Fixture {
            project: "p".into(),
            lb: "lb".into(),
            listener: "l".into(),
            pool: "pool".into(),
            member: "m".into(),
            health_monitor: "hm".into(),
            l7policy: "pol".into(),
            l7rule: "r".into(),
        }
    }

    #[test]
    fn mutate_edits_inside_the_wrapper() {
        let t = json!({"pool": {"a": 1, "b": 2}});
        let v = mutate(t.clone(), vec![(0, "x".into(), json!("new"))], 0);
        assert_eq!(v, json!({"pool": {"a": "new", "b": 2}}));
        let v = mutate(t.clone(), vec![(1, "x".into(), Value::Null)], 1);
        assert_eq!(v, json!({"pool": {"a": 1}}));
        let v = mutate(t, vec![(2, "x".into(), json!([]))], 0);
        assert_eq!(v, json!({"pool": {"a": 1, "b": 2, "x": []}}));
    }

    #[test]
    fn cases_are_reproducible_and_cover_every_class() {
        let strategy = case_strategy(&fixture());
        let gen_cases = || {
            let mut runner = TestRunner::new_with_rng(
                RunnerConfig::default(),
                TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]),
            );
            (0..400)
                .map(|_| strategy.new_tree(&mut runner).unwrap().current().describe())
                .collect::<Vec<_>>()
        };
        let a = gen_cases();
        assert_eq!(a, gen_cases());
        for class in ["[body]", "[query]", "[header]", "[path]"] {
            assert!(a.iter().any(|c| c.starts_with(class)), "no {class} case");
        }
    }

    #[test]
    fn encode_leaves_unreserved_only() {
        assert_eq!(encode("a b/%é"), "a%20b%2F%25%C3%A9");
    }
}
