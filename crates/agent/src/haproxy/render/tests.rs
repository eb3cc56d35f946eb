//! Snapshot-style tests: each case renders a state and checks a block of the output; every
//! rendered config is also run through `haproxy -c` when HAProxy is installed.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::process::Command;

use klb_proto::*;

use super::*;
use crate::haproxy::fixture::{listener, member, pool, state};

const HAPROXY: &str = "/usr/sbin/haproxy";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// One HTTP listener `l1` on 127.0.0.1:8080 with round-robin pool `p1` (members `m1`, `m2`).
fn base() -> DesiredState {
    state(
        ip("127.0.0.1"),
        vec![listener("l1", ListenerProtocol::Http, 8080, Some("p1"))],
        vec![pool(
            "p1",
            PoolProtocol::Http,
            LbAlgorithm::RoundRobin,
            vec![
                member("m1", ip("10.0.0.1"), 80),
                member("m2", ip("10.0.0.2"), 80),
            ],
        )],
    )
}

fn pem_cert() -> SecretPem {
    let ck = rcgen::generate_simple_self_signed(vec!["kh.example".into()]).unwrap();
    SecretPem::new(format!(
        "{}{}",
        ck.cert.pem(),
        ck.signing_key.serialize_pem()
    ))
}

/// Renders, writes the referenced files into a temp dir and runs `haproxy -c`; returns the
/// config text (with the temp dir replaced by `$DIR`) or the checker's complaint.
pub(crate) fn render_and_check(s: &DesiredState) -> Result<String, String> {
    let dir = tempfile::tempdir().unwrap();
    let paths = Paths::under(dir.path());
    let plan = plan(s, &paths).map_err(|e| e.to_string())?;
    if Path::new(HAPROXY).exists() {
        std::fs::create_dir_all(&paths.cert_dir).unwrap();
        for f in &plan.files {
            std::fs::write(&f.path, &f.contents).unwrap();
        }
        let cfg = dir.path().join("haproxy.cfg");
        std::fs::write(&cfg, &plan.config).unwrap();
        let out = Command::new(HAPROXY)
            .arg("-c")
            .arg("-f")
            .arg(&cfg)
            .output()
            .unwrap();
        if !out.status.success() {
            return Err(format!(
                "haproxy -c failed:\n{}{}\n--- config ---\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                plan.config
            ));
        }
    }
    Ok(strip_hashes(
        &plan
            .config
            .replace(&dir.path().display().to_string(), "$DIR"),
    ))
}

/// `name-0123456789abcdef.pem` -> `name.pem` (content hashes differ per generated key).
fn strip_hashes(s: &str) -> String {
    let mut out = s.to_owned();
    for ext in [".pem", ".crtlist"] {
        let mut from = 0;
        while let Some(i) = out[from..].find(ext).map(|i| i + from) {
            let hex_ok = i >= 17
                && out.as_bytes()[i - 17] == b'-'
                && out[i - 16..i].bytes().all(|b| b.is_ascii_hexdigit());
            if hex_ok {
                out.replace_range(i - 17..i, "");
                from = i - 17 + ext.len();
            } else {
                from = i + ext.len();
            }
        }
    }
    out
}

/// Asserts that the lines of `expect` (indentation-insensitive) appear contiguously in the
/// rendered config, and that the config passes `haproxy -c`.
#[track_caller]
fn check(s: &DesiredState, expect: &str) {
    let config = render_and_check(s).unwrap_or_else(|e| panic!("{e}"));
    let want: Vec<&str> = expect
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let got: Vec<&str> = config
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let found = got.windows(want.len()).any(|w| w == want.as_slice());
    assert!(
        found,
        "expected block:\n{}\n--- not found in ---\n{config}",
        want.join("\n")
    );
}

/// Asserts that rendering fails with a message containing `expect`.
#[track_caller]
fn check_err(s: &DesiredState, expect: &str) {
    match plan(s, &Paths::under(Path::new("/run/kh"))) {
        Ok(p) => panic!("expected error {expect:?}, rendered:\n{}", p.config),
        Err(e) => assert!(
            e.to_string().contains(expect),
            "{e} does not contain {expect:?}"
        ),
    }
}

#[test]
fn global_defaults_and_http_listener() {
    let s = base();
    check(
        &s,
        "global
            master-worker
            maxconn 12000
            stats socket $DIR/admin.sock mode 600 level admin expose-fd listeners",
    );
    check(
        &s,
        "frontend l1
            mode http
            maxconn 12000
            bind 127.0.0.1:8080
            timeout client 50000ms
            default_backend p1:l1

        backend p1:l1
            mode http
            balance roundrobin
            option allbackups
            timeout connect 5000ms
            timeout server 50000ms
            server m1 10.0.0.1:80 weight 1 id 486071276
            server m2 10.0.0.2:80 weight 1 id 502848895",
    );
}

#[test]
fn connection_limit_timeouts_and_additional_vips() {
    let mut s = base();
    s.global.maxconn = 500;
    s.additional_vips = vec![ip("::1")];
    let l = &mut s.listeners[0];
    l.connection_limit = Some(100);
    l.timeout_client_data = 1000;
    l.timeout_member_connect = 2000;
    l.timeout_member_data = 3000;
    l.timeout_tcp_inspect = 400;
    check(&s, "maxconn 500");
    check(
        &s,
        "maxconn 100
         bind 127.0.0.1:8080
         bind ipv6@::1:8080
         timeout client 1000ms
         tcp-request inspect-delay 400ms",
    );
    check(&s, "timeout connect 2000ms\ntimeout server 3000ms");
}

#[test]
fn tcp_and_https_passthrough_are_tcp_mode() {
    for proto in [ListenerProtocol::Tcp, ListenerProtocol::Https] {
        let mut s = base();
        s.listeners[0].protocol = proto;
        s.pools[0].protocol = PoolProtocol::Tcp;
        check(&s, "frontend l1\nmode tcp");
        check(&s, "backend p1:l1\nmode tcp");
    }
}

#[test]
fn proxy_pools_follow_listener_mode_and_send_proxy() {
    let mut s = base();
    s.pools[0].protocol = PoolProtocol::Proxy;
    check(&s, "backend p1:l1\nmode http");
    check(&s, "server m1 10.0.0.1:80 weight 1 send-proxy id 486071276");
    s.listeners[0].protocol = ListenerProtocol::Tcp;
    s.pools[0].protocol = PoolProtocol::ProxyV2;
    check(&s, "backend p1:l1\nmode tcp");
    check(
        &s,
        "server m1 10.0.0.1:80 weight 1 send-proxy-v2 id 486071276",
    );
}

#[test]
fn allowed_cidrs_reject_other_sources() {
    let mut s = base();
    s.listeners[0].allowed_cidrs = vec![
        "10.0.0.0/8".parse().unwrap(),
        "2001:db8::/32".parse().unwrap(),
    ];
    check(
        &s,
        "acl klb:allowed_cidrs src 10.0.0.0/8 2001:db8::/32
         tcp-request connection reject unless klb:allowed_cidrs",
    );
    // HAProxy reads 64 words a line: the API's maximum of 64 networks (58 broke the single
    // line) goes on several lines of the same ACL.
    s.listeners[0].allowed_cidrs = (0..64u32)
        .map(|i| format!("10.{i}.0.0/16").parse().unwrap())
        .collect();
    let config = render_and_check(&s).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.matches("acl klb:allowed_cidrs src").count(), 2);
    assert!(config.contains(" 10.63.0.0/16\n"), "{config}");
    s.listeners[0]
        .allowed_cidrs
        .push("10.64.0.0/16".parse().unwrap());
    check_err(&s, "allowed_cidrs: at most 64 items");
}

#[test]
fn insert_headers_only_true_values_act() {
    let mut s = base();
    s.listeners[0].insert_headers = BTreeMap::from([
        ("X-Forwarded-For".to_owned(), "true".to_owned()),
        ("X-Forwarded-Port".to_owned(), "TRUE".to_owned()),
        ("X-Forwarded-Proto".to_owned(), "true".to_owned()),
        ("X-Real-IP".to_owned(), "false".to_owned()),
    ]);
    check(
        &s,
        "option forwardfor
         http-request set-header X-Forwarded-Port %[dst_port]
         http-request set-header X-Forwarded-Proto http",
    );
    let cfg = render_and_check(&s).unwrap();
    assert!(!cfg.contains("X-Real-IP"));
    s.listeners[0].insert_headers =
        BTreeMap::from([("X-SSL-Client-DN".to_owned(), "true".to_owned())]);
    check_err(&s, "unknown or not allowed header \"X-SSL-Client-DN\"");
    s.listeners[0].insert_headers =
        BTreeMap::from([("Evil\nheader".to_owned(), "true".to_owned())]);
    check_err(&s, "unknown or not allowed header");
}

#[test]
fn algorithms_use_consistent_hashing_for_source() {
    let mut s = base();
    s.pools[0].lb_algorithm = LbAlgorithm::LeastConnections;
    check(&s, "mode http\nbalance leastconn");
    s.pools[0].lb_algorithm = LbAlgorithm::SourceIp;
    check(&s, "balance source\nhash-type consistent");
    s.pools[0].lb_algorithm = LbAlgorithm::SourceIpPort;
    check(
        &s,
        "http-request set-var(txn.sport) src_port\ndefault_backend p1:l1",
    );
    check(
        &s,
        "balance hash src,concat(:,txn.sport)\nhash-type consistent",
    );
    s.listeners[0].protocol = ListenerProtocol::Tcp;
    s.pools[0].protocol = PoolProtocol::Tcp;
    check(&s, "tcp-request content set-var(sess.sport) src_port");
    check(&s, "balance hash src,concat(:,sess.sport)");
}

#[test]
fn session_persistence_with_peers() {
    let mut s = base();
    s.peers = vec![
        Peer {
            name: "vm0".into(),
            address: ip("127.0.0.1"),
            port: 17001,
        },
        Peer {
            name: "vm1".into(),
            address: ip("127.0.0.2"),
            port: 17001,
        },
    ];
    s.pools[0].session_persistence = Some(SessionPersistence {
        persistence_type: SessionPersistenceType::SourceIp,
        cookie_name: None,
        persistence_timeout: None,
        persistence_granularity: None,
    });
    check(
        &s,
        "peers klb_peers\npeer vm0 127.0.0.1:17001\npeer vm1 127.0.0.2:17001",
    );
    check(
        &s,
        "stick-table type ipv6 size 10k peers klb_peers\nstick on src",
    );
    let sp = s.pools[0].session_persistence.as_mut().unwrap();
    sp.persistence_type = SessionPersistenceType::AppCookie;
    sp.cookie_name = Some("JSESSIONID".into());
    check(
        &s,
        "stick-table type string len 64 size 10k peers klb_peers
         stick store-response res.cook(JSESSIONID)
         stick match req.cook(JSESSIONID)",
    );
    let sp = s.pools[0].session_persistence.as_mut().unwrap();
    sp.persistence_type = SessionPersistenceType::HttpCookie;
    sp.cookie_name = None;
    check(&s, "cookie SRV insert indirect nocache");
    check(&s, "server m1 10.0.0.1:80 weight 1 cookie m1 id 486071276");
    s.vm.name = "vm9".into();
    check_err(&s, "this VM (vm9) is not among the peers");
}

fn monitor(t: HealthMonitorType) -> HealthMonitor {
    HealthMonitor {
        id: "hm1".into(),
        admin_state_up: true,
        monitor_type: t,
        delay: 5,
        timeout: 3,
        max_retries: 2,
        max_retries_down: 4,
        http_method: None,
        url_path: None,
        expected_codes: None,
        http_version: None,
        domain_name: None,
    }
}

#[test]
fn health_monitors() {
    let mut s = base();
    let mut hm = monitor(HealthMonitorType::Http);
    hm.http_method = Some(HttpMethod::Head);
    hm.url_path = Some("/health?full=1".into());
    hm.expected_codes = Some("200-202".into());
    hm.http_version = Some(HttpVersion::Http11);
    hm.domain_name = Some("app.example".into());
    s.pools[0].health_monitor = Some(hm);
    s.pools[0].members[0].monitor_address = Some(ip("10.0.1.1"));
    s.pools[0].members[0].monitor_port = Some(8081);
    check(
        &s,
        "timeout check 3s
         option httpchk
         http-check send meth HEAD uri /health?full=1 ver HTTP/1.1 hdr Host app.example
         http-check expect rstatus ^(20[0-2])$",
    );
    check(
        &s,
        "server m1 10.0.0.1:80 weight 1 check inter 5000ms fall 4 rise 2 addr 10.0.1.1 port 8081 id 486071276",
    );
    s.pools[0].health_monitor = Some(monitor(HealthMonitorType::Https));
    check(
        &s,
        "server m2 10.0.0.2:80 weight 1 check inter 5000ms fall 4 rise 2 check-ssl verify none id 502848895",
    );
    s.pools[0].health_monitor = Some(monitor(HealthMonitorType::TlsHello));
    check(&s, "option ssl-hello-chk");
    s.pools[0].health_monitor = Some(monitor(HealthMonitorType::Tcp));
    check(&s, "timeout check 3s\noption allbackups");
    s.pools[0].health_monitor = Some(monitor(HealthMonitorType::Ping));
    check(&s, "external-check\ninsecure-fork-wanted");
    check(
        &s,
        "option external-check\nexternal-check path \"/usr/bin:/bin:/usr/sbin:/sbin\"\nexternal-check command $DIR/ping-check.sh",
    );
    // A disabled monitor renders no checks at all.
    s.pools[0].health_monitor.as_mut().unwrap().admin_state_up = false;
    check(
        &s,
        "server m1 10.0.0.1:80 weight 1 id 486071276\nserver m2 10.0.0.2:80 weight 1 id 502848895",
    );
}

#[test]
fn members_weight_backup_disabled_ipv6() {
    let mut s = base();
    let m = &mut s.pools[0].members;
    m[0].weight = 0;
    m[0].backup = true;
    m[1].admin_state_up = false;
    m.push(member("m3", ip("2001:db8::3"), 8443));
    check(
        &s,
        "server m1 10.0.0.1:80 weight 0 backup id 486071276
         server m2 10.0.0.2:80 weight 1 id 502848895 disabled
         server m3 ipv6@2001:db8::3:8443 weight 1 id 519626514",
    );
}

fn rule(
    id: &str,
    t: L7RuleType,
    c: L7CompareType,
    key: Option<&str>,
    value: &str,
    invert: bool,
) -> L7Rule {
    L7Rule {
        id: id.into(),
        admin_state_up: true,
        rule_type: t,
        compare_type: c,
        key: key.map(Into::into),
        value: value.into(),
        invert,
    }
}

fn policy(id: &str, position: u32, action: L7PolicyAction, rules: Vec<L7Rule>) -> L7Policy {
    L7Policy {
        id: id.into(),
        admin_state_up: true,
        action,
        position,
        redirect_pool_id: None,
        redirect_url: None,
        redirect_prefix: None,
        redirect_http_code: None,
        rules,
    }
}

/// What the emitters read from a policy, rule or pool (a redirect target, a rule's key, the
/// SSL_VERIFY_RESULT number, an APP_COOKIE name) is parsed when the state is validated (issue
/// 13 §8): a state without it is refused with a reason instead of reaching the emitters.
#[test]
fn values_the_emitters_need_are_refused_when_missing() {
    use L7CompareType::*;
    use L7RuleType::*;
    let with_policy = |p: L7Policy| {
        let mut s = base();
        s.listeners[0].l7_policies = vec![p];
        s
    };
    let path = || vec![rule("r1", Path, StartsWith, None, "/a", false)];
    for (action, field) in [
        (L7PolicyAction::RedirectToUrl, "redirect_url"),
        (L7PolicyAction::RedirectPrefix, "redirect_prefix"),
        (L7PolicyAction::RedirectToPool, "redirect_pool_id"),
    ] {
        check_err(
            &with_policy(policy("pol1", 1, action, path())),
            &format!("l7policy \"pol1\": invalid {field}: required"),
        );
    }
    let mut to_nowhere = policy("pol1", 1, L7PolicyAction::RedirectToPool, path());
    to_nowhere.redirect_pool_id = Some("p9".into());
    check_err(
        &with_policy(to_nowhere),
        "redirect_pool_id refers to unknown pool p9",
    );
    for t in [Header, Cookie, SslDnField] {
        let keyless = vec![rule("r1", t, EqualTo, None, "v", false)];
        check_err(
            &with_policy(policy("pol1", 1, L7PolicyAction::Reject, keyless)),
            "l7rule \"r1\": invalid value: key must be provided",
        );
    }
    let not_a_number = vec![rule("r1", SslVerifyResult, EqualTo, None, "x", false)];
    check_err(
        &with_policy(policy("pol1", 1, L7PolicyAction::Reject, not_a_number)),
        "l7rule \"r1\": invalid value: SSL_VERIFY_RESULT rule value must be an integer",
    );
    let mut s = base();
    s.pools[0].session_persistence = Some(SessionPersistence {
        persistence_type: SessionPersistenceType::AppCookie,
        cookie_name: None,
        persistence_timeout: None,
        persistence_granularity: None,
    });
    check_err(
        &s,
        "pool \"p1\": invalid session_persistence.cookie_name: required for APP_COOKIE",
    );
}

#[test]
fn l7_policies_and_rules() {
    use L7CompareType::*;
    use L7RuleType::*;
    let mut s = base();
    s.pools.push(pool(
        "p2",
        PoolProtocol::Http,
        LbAlgorithm::RoundRobin,
        vec![member("m9", ip("10.0.0.9"), 80)],
    ));
    let mut to_pool = policy(
        "pol2",
        2,
        L7PolicyAction::RedirectToPool,
        vec![
            rule("r3", Header, Contains, Some("X-Env"), "\"st\\ag e\"", false),
            rule("r4", Cookie, EqualTo, Some("sess"), "-i", true),
        ],
    );
    to_pool.redirect_pool_id = Some("p2".into());
    let mut to_url = policy(
        "pol3",
        3,
        L7PolicyAction::RedirectToUrl,
        vec![rule("r5", FileType, EqualTo, None, "jpg", false)],
    );
    to_url.redirect_url = Some("https://img.example/%[src]#x".into());
    to_url.redirect_http_code = Some(301);
    let mut prefix = policy(
        "pol4",
        4,
        L7PolicyAction::RedirectPrefix,
        vec![rule("r6", FileType, Regex, None, "\\.(png|gif)$", false)],
    );
    prefix.redirect_prefix = Some("https://new.example".into());
    let reject = policy(
        "pol1",
        1,
        L7PolicyAction::Reject,
        vec![
            rule("r1", HostName, EqualTo, None, "bad.example", false),
            rule("r2", Path, StartsWith, None, "/admin", true),
        ],
    );
    let empty = policy("pol5", 5, L7PolicyAction::Reject, vec![]);
    s.listeners[0].l7_policies = vec![prefix, to_url, empty, to_pool, reject];
    check(
        &s,
        r#"acl r1 req.hdr(host) -i -m str -- bad.example
          acl r2 path -m beg -- /admin
          http-request deny if r1 !r2
          acl r3 req.hdr(X-Env) -m sub -- \"st\\ag\ e\"
          acl r4 req.cook(sess) -m str -- -i
          use_backend p2:l1 if r3 !r4
          acl r5 path_end -- .jpg
          http-request redirect code 301 location https://img.example/%%[src]\#x if r5
          acl r6 path_end -m reg -- \\.(png|gif)$
          http-request redirect code 302 prefix https://new.example if r6
          default_backend p1:l1"#,
    );
    check(&s, "backend p2:l1\nmode http");
    assert!(!render_and_check(&s).unwrap().contains("pol5"));
}

#[test]
fn l7_ssl_rules() {
    use L7CompareType::*;
    use L7RuleType::*;
    let mut s = tls_state();
    s.listeners[0].l7_policies = vec![policy(
        "pol1",
        1,
        L7PolicyAction::Reject,
        vec![
            rule("r1", SslConnHasCert, EqualTo, None, "TRUE", true),
            rule("r2", SslVerifyResult, EqualTo, None, "0", true),
            rule("r3", SslDnField, EndsWith, Some("CN"), ".example", true),
        ],
    )];
    check(
        &s,
        "acl r1 ssl_c_used
         acl r2 ssl_c_verify eq 0
         acl r3 ssl_c_s_dn(CN) -m end -- .example
         http-request deny if !r1 !r2 !r3",
    );
    s.listeners[0].l7_policies[0].rules[1].value = "-1".into();
    check_err(&s, "SSL_VERIFY_RESULT rule value must be an integer");
}

fn tls_state() -> DesiredState {
    let mut s = base();
    s.certificates = vec![
        Certificate {
            id: "c1".into(),
            pem: pem_cert(),
        },
        Certificate {
            id: "c2".into(),
            pem: pem_cert(),
        },
        Certificate {
            id: "ca".into(),
            pem: SecretPem::new(
                rcgen::generate_simple_self_signed(vec!["ca.example".into()])
                    .unwrap()
                    .cert
                    .pem(),
            ),
        },
    ];
    let l = &mut s.listeners[0];
    l.protocol = ListenerProtocol::TerminatedHttps;
    l.protocol_port = 8443;
    l.default_tls_certificate_id = Some("c1".into());
    l.sni_certificate_ids = vec!["c2".into(), "c1".into()];
    s
}

#[test]
fn terminated_https_with_sni_client_auth_hsts() {
    let mut s = tls_state();
    let l = &mut s.listeners[0];
    l.client_ca_certificate_id = Some("ca".into());
    l.client_authentication = ClientAuthentication::Optional;
    l.tls_ciphers = Some("ECDHE-RSA-AES128-GCM-SHA256:!aNULL".into());
    l.tls_versions = vec![TlsVersion::TlsV1_3, TlsVersion::TlsV1_2];
    l.alpn_protocols = vec![AlpnProtocol::H2, AlpnProtocol::Http11];
    l.hsts_max_age = Some(31536000);
    l.hsts_include_subdomains = true;
    l.insert_headers = BTreeMap::from([("X-SSL-Client-CN".to_owned(), "true".to_owned())]);
    check(
        &s,
        "bind 127.0.0.1:8443 ssl crt-list $DIR/certs/l1.crtlist ca-file $DIR/certs/ca.pem verify optional ciphers ECDHE-RSA-AES128-GCM-SHA256:!aNULL ssl-min-ver TLSv1.2 ssl-max-ver TLSv1.3 alpn h2,http/1.1",
    );
    check(
        &s,
        r"http-response set-header Strict-Transport-Security max-age=31536000;\ includeSubDomains;",
    );
    check(
        &s,
        "http-request set-header X-SSL-Client-CN %{+Q}[ssl_c_s_dn(cn)]",
    );
    let dir = Paths::under(Path::new("/kh"));
    let plan = plan(&s, &dir).unwrap();
    let list = plan
        .files
        .iter()
        .find(|f| f.path.to_string_lossy().contains("/l1-"))
        .unwrap();
    assert_eq!(
        strip_hashes(&list.contents),
        "/kh/certs/c1.pem\n/kh/certs/c2.pem\n"
    );
    let c1 = plan
        .files
        .iter()
        .filter(|f| f.path.to_string_lossy().contains("/c1-"))
        .count();
    assert_eq!(c1, 1, "written once although referenced twice");
    // A rotated certificate gets a new file name, hence a new config (and a reload).
    let mut rotated = s.clone();
    rotated.certificates[0].pem = pem_cert();
    assert_ne!(super::render(&rotated, &dir).unwrap(), plan.config);
    assert!(
        !format!("{plan:?}").contains("PRIVATE KEY"),
        "plan Debug leaks key material"
    );
    s.listeners[0].default_tls_certificate_id = Some("nope".into());
    check_err(
        &s,
        "default_tls_container_ref refers to unknown certificate nope",
    );
}

#[test]
fn pool_reencryption() {
    let mut s = tls_state();
    let p = &mut s.pools[0];
    p.tls_enabled = true;
    p.tls_certificate_id = Some("c2".into());
    p.ca_tls_certificate_id = Some("ca".into());
    p.alpn_protocols = vec![AlpnProtocol::Http11];
    check(
        &s,
        "server m1 10.0.0.1:80 weight 1 ssl crt $DIR/certs/c2.pem ca-file $DIR/certs/ca.pem verify required alpn http/1.1 id 486071276",
    );
    s.pools[0].ca_tls_certificate_id = None;
    check(
        &s,
        "server m1 10.0.0.1:80 weight 1 ssl crt $DIR/certs/c2.pem verify none alpn http/1.1 id 486071276",
    );
}

#[test]
fn disabled_objects_are_not_rendered() {
    let mut s = base();
    s.pools[0].admin_state_up = false;
    let cfg = render_and_check(&s).unwrap();
    assert!(
        !cfg.contains("backend") && !cfg.contains("default_backend"),
        "{cfg}"
    );
    s.listeners[0].admin_state_up = false;
    assert!(!render_and_check(&s).unwrap().contains("frontend"));
    let mut s = base();
    s.admin_state_up = false;
    assert!(!render_and_check(&s).unwrap().contains("frontend"));
}

#[test]
fn prometheus_listener() {
    let mut s = base();
    s.listeners[0].protocol = ListenerProtocol::Prometheus;
    s.listeners[0].default_pool_id = None;
    check(
        &s,
        "http-request use-service prometheus-exporter if { path /metrics }",
    );
}

#[test]
fn refusals() {
    let mut s = base();
    s.listeners[0].protocol = ListenerProtocol::Udp;
    check_err(&s, "protocol UDP (planned: IPVS");
    let mut s = base();
    s.pools[0].protocol = PoolProtocol::Sctp;
    check_err(&s, "pool \"p1\": protocol SCTP is not supported");
    let mut s = base();
    s.listeners[0].id = "l1 \nfrontend x".into();
    check_err(&s, "ids must match");
    let mut s = base();
    s.listeners[0].default_pool_id = Some("p9".into());
    check_err(&s, "default_pool_id refers to unknown pool p9");
    let mut s = base();
    s.listeners[0].tls_ciphers = Some("ALL ;bind".into());
    check_err(&s, "invalid tls_ciphers: \"ALL ;bind\" may contain only");
    let mut s = base();
    let mut hm = monitor(HealthMonitorType::Tcp);
    hm.url_path = Some("/".into());
    s.pools[0].health_monitor = Some(hm);
    check_err(&s, "HTTP fields are not valid for TCP monitors");
    let mut s = base();
    s.protocol = 2;
    check_err(&s, "protocol version 2");
    let mut s = base();
    s.listeners[0].protocol = ListenerProtocol::Tcp;
    s.listeners[0].l7_policies = vec![policy("p", 1, L7PolicyAction::Reject, vec![])];
    check_err(&s, "L7 policies on a TCP listener");
}

#[test]
fn regexes_the_shared_check_accepts_compile_in_pcre2() {
    // klb_proto::check::regex compiles with Rust's regex and refuses the Rust-only syntax
    // PCRE2 rejects, so every accepted regex passes `haproxy -c` (issue 11 §5).
    let accepted = [
        r"^/api/.*$",
        r"\d+\.(png|gif)$",
        r"\pL+",
        r"(?i)ab",
        r"(?s:.)x",
        r"[a&b]",
        r"\x41",
        r"a b#c'd",
        r"(?P<n>a)\z",
        "\u{e9}t\u{e9}",
    ];
    let rules = accepted
        .iter()
        .enumerate()
        .map(|(i, v)| {
            rule(
                &format!("r{i}"),
                L7RuleType::Path,
                L7CompareType::Regex,
                None,
                v,
                false,
            )
        })
        .collect();
    let mut s = base();
    s.listeners[0].l7_policies = vec![policy("pol", 1, L7PolicyAction::Reject, rules)];
    render_and_check(&s).unwrap_or_else(|e| panic!("{e}"));
    for refused in ["(", "", "(?u)a", "[a--b]", r"\x{41}", r"\u0041"] {
        s.listeners[0].l7_policies[0].rules[0].value = refused.into();
        check_err(&s, "l7rule \"r0\": invalid value");
    }
}

mod injection {
    //! Property: for arbitrary text in any user-controlled field, rendering either refuses the
    //! state or produces a config with exactly the structure of a benign value (same lines,
    //! same directive on each line, same number of tokens per line), which `haproxy -c`
    //! accepts (checked on the first cases to stay fast).

    use std::sync::atomic::{AtomicUsize, Ordering};

    use proptest::prelude::*;

    use super::*;

    /// Every field below gets its benign value here.
    fn full() -> DesiredState {
        use L7CompareType::*;
        use L7RuleType::*;
        let mut s = tls_state();
        s.peers = vec![Peer {
            name: "vm0".into(),
            address: ip("127.0.0.1"),
            port: 17001,
        }];
        let l = &mut s.listeners[0];
        l.tls_ciphers = Some("ECDHE-RSA-AES128-GCM-SHA256".into());
        l.insert_headers = BTreeMap::from([("X-Forwarded-For".to_owned(), "true".to_owned())]);
        let mut to_url = policy(
            "pol1",
            1,
            L7PolicyAction::RedirectToUrl,
            vec![
                rule("r1", Header, Contains, Some("X-Env"), "stage", false),
                rule("r2", Cookie, Contains, Some("sess"), "abc", false),
                rule("r3", Path, Contains, None, "/api", false),
                rule("r4", HostName, Contains, None, "www.example", false),
                rule("r5", SslDnField, Contains, Some("CN"), "client", false),
            ],
        );
        to_url.redirect_url = Some("https://example.com/x".into());
        let mut prefix = policy(
            "pol2",
            2,
            L7PolicyAction::RedirectPrefix,
            vec![rule("r6", Path, StartsWith, None, "/old", false)],
        );
        prefix.redirect_prefix = Some("https://new.example".into());
        l.l7_policies = vec![to_url, prefix];
        let p = &mut s.pools[0];
        p.session_persistence = Some(SessionPersistence {
            persistence_type: SessionPersistenceType::AppCookie,
            cookie_name: Some("JSESSIONID".into()),
            persistence_timeout: None,
            persistence_granularity: None,
        });
        let mut hm = monitor(HealthMonitorType::Http);
        hm.url_path = Some("/health".into());
        hm.expected_codes = Some("200".into());
        hm.http_version = Some(HttpVersion::Http11);
        hm.domain_name = Some("app.example".into());
        p.health_monitor = Some(hm);
        p.tls_enabled = true;
        p.tls_ciphers = Some("HIGH".into());
        s
    }

    const FIELDS: usize = 24;

    /// Puts `v` into field number `field` of `s`.
    fn set(s: &mut DesiredState, field: usize, v: String) {
        let l = &mut s.listeners[0];
        let rules = &mut l.l7_policies[0].rules;
        match field {
            0 => {
                // Ids are cross-referenced: change the id and its reference together.
                s.pools[0].id = v.clone();
                s.listeners[0].default_pool_id = Some(v);
            }
            1 => l.id = v,
            2 => s.pools[0].members[0].id = v,
            3 => s.pools[0].health_monitor.as_mut().unwrap().url_path = Some(v),
            4 => s.pools[0].health_monitor.as_mut().unwrap().expected_codes = Some(v),
            5 => s.pools[0].health_monitor.as_mut().unwrap().domain_name = Some(v),
            6 => s.pools[0].session_persistence.as_mut().unwrap().cookie_name = Some(v),
            7 => rules[0].key = Some(v),
            8 => rules[0].value = v,
            9 => rules[1].key = Some(v),
            10 => rules[1].value = v,
            11 => rules[2].value = v,
            12 => rules[3].value = v,
            13 => l.l7_policies[0].redirect_url = Some(v),
            14 => l.l7_policies[1].redirect_prefix = Some(v),
            15 => l.tls_ciphers = Some(v),
            16 => l.insert_headers = BTreeMap::from([(v, "true".to_owned())]),
            17 => l.insert_headers = BTreeMap::from([("X-Forwarded-For".to_owned(), v)]),
            18 => {
                s.vm.name = v.clone();
                s.peers[0].name = v;
            }
            19 => rules[4].key = Some(v),
            20 => rules[0].id = v,
            21 => s.load_balancer_id = v,
            22 => s.pools[0].tls_ciphers = Some(v),
            23 => {
                s.certificates[0].id = v.clone();
                s.listeners[0].default_tls_certificate_id = Some(v.clone());
                s.listeners[0].sni_certificate_ids[1] = v;
            }
            _ => unreachable!(),
        }
    }

    /// Splits a config line the way HAProxy's tokenizer does outside quotes: backslash escapes
    /// the next character, unescaped whitespace separates, unescaped `#` starts a comment.
    fn tokens(line: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut cur = String::new();
        let mut chars = line.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => {
                    cur.push(c);
                    if let Some(n) = chars.next() {
                        cur.push(n);
                    }
                }
                '#' => break,
                c if c == ' ' || c == '\t' => {
                    if !cur.is_empty() {
                        out.push(std::mem::take(&mut cur));
                    }
                }
                '"' | '\'' => {
                    // Quotes are only ever rendered by the renderer itself (PING path).
                    cur.push(c);
                }
                c => cur.push(c),
            }
        }
        if !cur.is_empty() {
            out.push(cur);
        }
        out
    }

    fn shape(config: &str) -> Vec<(String, usize)> {
        config
            .lines()
            .filter(|l| !l.starts_with("# Rendered"))
            .map(|l| {
                let t = tokens(l);
                (t.first().cloned().unwrap_or_default(), t.len())
            })
            .collect()
    }

    fn nasty() -> impl Strategy<Value = String> {
        let chars = prop_oneof![
            4 => proptest::char::range('a', 'z'),
            1 => proptest::char::range('0', '9'),
            6 => proptest::sample::select(vec![
                '\n', '\r', '#', '"', '\'', '\\', ' ', '\t', '%', '[', ']', '{', '}', '(', ')', ',',
                ';', ':', '$', '-', '/', '.', '=', '!', '\u{0}', '\u{85}', '\u{2028}', 'é', '€',
                '😀', '`', '|', '@', '?', '&', '*', '+', '<', '>',
            ]),
        ];
        proptest::collection::vec(chars, 1..24).prop_map(|v| v.into_iter().collect())
    }

    /// Cases that passed validation (printed every 50 for information).
    static ACCEPTED: AtomicUsize = AtomicUsize::new(0);
    static HAPROXY_CHECKS: AtomicUsize = AtomicUsize::new(0);
    const MAX_HAPROXY_CHECKS: usize = 64;

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 512,
            // Keep failures in the output only: no regression files in the crate directory.
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        #[test]
        fn user_text_never_changes_config_structure(
            field in 0..FIELDS,
            keep_prefix in any::<bool>(),
            value in nasty(),
        ) {
            let paths = Paths::under(Path::new("/run/kh-prop"));
            let benign = full();
            let mut s = benign.clone();
            // Half the cases keep a valid-looking prefix so more of them get past validation.
            let prefix = match field {
                3 => "/",
                13 | 14 => "https://x.example/",
                _ => "a",
            };
            let v = if keep_prefix { format!("{prefix}{value}") } else { value };
            set(&mut s, field, v.clone());
            // An insert_headers value other than "true" legitimately drops its line.
            let mut reference = benign;
            if field == 17 && !v.eq_ignore_ascii_case("true") {
                set(&mut reference, 17, "false".into());
            }
            let benign_plan = plan(&reference, &paths).expect("benign state renders");
            let Ok(p) = plan(&s, &paths) else { return Ok(()) };
            let n = ACCEPTED.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_multiple_of(50) {
                eprintln!("{n} property cases passed validation");
            }
            prop_assert!(!text::has_control(&p.config.replace('\n', "")), "control character rendered for {v:?}");
            prop_assert_eq!(shape(&p.config), shape(&benign_plan.config), "field {} value {:?}:\n{}", field, v, p.config);
            if Path::new(HAPROXY).exists() && HAPROXY_CHECKS.fetch_add(1, Ordering::Relaxed) < MAX_HAPROXY_CHECKS {
                let r = render_and_check(&s);
                // OpenSSL, not the tokenizer, rejects unknown cipher names: a semantic refusal.
                let cipher_refused = matches!(field, 15 | 22)
                    && r.as_ref().is_err_and(|e| e.contains("unable to set SSL cipher list"));
                prop_assert!(r.is_ok() || cipher_refused, "field {} value {:?}: {}", field, v, r.unwrap_err());
            }
        }
    }

    #[test]
    fn escaped_values_with_specials_are_accepted_and_valid() {
        // Deterministic companions of the property: specials that validation lets through
        // are rendered as single escaped tokens that haproxy accepts.
        let mut s = full();
        set(&mut s, 8, "\"a b#c'e\\f%g$h{i}\"".into());
        set(&mut s, 3, "/p'$(x)*;=@".into());
        set(&mut s, 13, "https://x.example/a'b#d%e".into());
        let cfg = render_and_check(&s).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            cfg.contains(r#"acl r1 req.hdr(X-Env) -m sub -- \"a\ b\#c\'e\\f%g$h{i}\""#),
            "{cfg}"
        );
        assert!(cfg.contains(r"uri /p\'$(x)*;=@"), "{cfg}");
        assert!(
            cfg.contains(r#"location https://x.example/a\'b\#d%%e"#),
            "{cfg}"
        );
    }

    #[test]
    fn tokenizer_model_matches_escaping() {
        assert_eq!(
            tokens(r"acl a path -m sub -- x\ y\#z # c"),
            ["acl", "a", "path", "-m", "sub", "--", r"x\ y\#z"]
        );
    }
}

#[test]
fn server_ids_are_stable_whatever_the_member_order() {
    let a = [
        member("m1", ip("10.0.0.1"), 80),
        member("m2", ip("10.0.0.2"), 80),
    ];
    let b = [a[1].clone(), a[0].clone()];
    let (ia, ib) = (server_ids(&a), server_ids(&b));
    assert_eq!((ia[0], ia[1]), (ib[1], ib[0]));
    assert_ne!(ia[0], ia[1]);
    // Same member id twice (validation refuses it, but ids must still be unique).
    let same = [
        member("m1", ip("10.0.0.1"), 80),
        member("m1", ip("10.0.0.2"), 80),
    ];
    let ids = server_ids(&same);
    assert_eq!(ids[1], ids[0] % 2_000_000_000 + 1);
}

mod api_valid {
    //! Property (issue 11 §5): every state built only from values the API's validation accepts
    //! (`klb_proto::check`, which the API runs through `klb_model::validate`) renders, and
    //! `haproxy -c` accepts the result. Candidate values mix benign and hostile characters;
    //! a candidate the shared check refuses is replaced by a benign value, so the generator
    //! explores exactly the accepted set and never filters whole cases away.

    use std::sync::atomic::{AtomicUsize, Ordering};

    use klb_proto::check;
    use proptest::prelude::*;
    use proptest::sample::select;

    use super::*;

    /// Text from pieces that stress HAProxy's tokenizer, sample-fetch arguments and PCRE2.
    fn text(pieces: &'static [&'static str], max: usize) -> impl Strategy<Value = String> {
        proptest::collection::vec(select(pieces), 1..max).prop_map(|v| v.concat())
    }

    const WORD: &[&str] = &[
        "a", "Z", "0", "9", "-", ".", "_", "~", "!", "%", "&", "*", "+", "^", "|", "#", "$", "'",
        "`", "\"", "\\", " ", "(", ")", ",", ";", "=", ":", "/", "?", "@", "[", "]", "{", "}", "é",
        "\t",
    ];
    const REGEX: &[&str] = &[
        "a", "^", "$", ".*", "\\d+", "[a-z]", "(x|y)", "{2}", "?", "\\.", " ", "#", "'", "\"", "%",
        "\\x41", "\\pL", "(?i)", "[^/]", "\\", "(", ")", "é", "[a&&b]", "(?u)", "\\x{41}",
    ];
    const URL: &[&str] = &[
        "http://",
        "https://",
        "HTTP://",
        "x.example",
        "/",
        "a",
        "%",
        "%[src]",
        "?q=1",
        "#f",
        "'",
        "\"",
        "\\",
        ":8080",
        "@",
        "$",
        "{",
        "é",
        " ",
    ];
    const CODES: &[&str] = &["1", "2", "3", "5", "9", "0", ",", "-", " "];

    /// `v` if `ok(v)` accepts it, otherwise `fallback`.
    fn accepted<E>(v: String, ok: impl Fn(&str) -> Result<(), E>, fallback: &str) -> String {
        if ok(&v).is_ok() {
            v
        } else {
            fallback.to_owned()
        }
    }

    fn l7_rule_strategy(idx: usize) -> impl Strategy<Value = L7Rule> {
        use L7CompareType as C;
        use L7RuleType as T;
        (
            select(vec![
                T::HostName,
                T::Path,
                T::FileType,
                T::Header,
                T::Cookie,
                T::SslConnHasCert,
                T::SslVerifyResult,
                T::SslDnField,
            ]),
            select(vec![
                C::Regex,
                C::StartsWith,
                C::EndsWith,
                C::Contains,
                C::EqualTo,
            ]),
            text(WORD, 12),
            prop_oneof![text(WORD, 16), text(REGEX, 10)],
            any::<bool>(),
        )
            .prop_map(move |(t, c, key, value, invert)| {
                let key = Some(key);
                let valid =
                    |k: &Option<String>, v: &str, c| check::l7_rule(t, c, k.as_deref(), v).is_ok();
                // Fall back step by step to a rule of this type the API accepts.
                let (c, key, value) = if valid(&key, &value, c) {
                    (c, key, value)
                } else {
                    let key = match t {
                        T::Header | T::Cookie => Some("X-K".to_owned()),
                        T::SslDnField => Some("CN".to_owned()),
                        _ => None,
                    };
                    let c = match t {
                        T::SslConnHasCert | T::SslVerifyResult => C::EqualTo,
                        T::FileType if c != C::Regex => C::EqualTo,
                        _ => c,
                    };
                    let value = match t {
                        T::SslConnHasCert => "true".to_owned(),
                        T::SslVerifyResult => "0".to_owned(),
                        _ if valid(&key, &value, c) => value,
                        _ => "v".to_owned(),
                    };
                    (c, key, value)
                };
                assert!(valid(&key, &value, c), "{t} {c} {key:?} {value:?}");
                rule(&format!("r{idx}"), t, c, key.as_deref(), &value, invert)
            })
    }

    fn policy_strategy(idx: usize) -> impl Strategy<Value = L7Policy> {
        (
            select(vec![
                L7PolicyAction::Reject,
                L7PolicyAction::RedirectToUrl,
                L7PolicyAction::RedirectPrefix,
                L7PolicyAction::RedirectToPool,
            ]),
            proptest::collection::vec(
                (0..4usize).prop_flat_map(move |i| l7_rule_strategy(idx * 10 + i)),
                1..4,
            ),
            text(URL, 8),
            select(vec![
                None,
                Some(301u16),
                Some(302),
                Some(303),
                Some(307),
                Some(308),
            ]),
        )
            .prop_map(move |(action, mut rules, url, code)| {
                for (i, r) in rules.iter_mut().enumerate() {
                    r.id = format!("r{idx}-{i}");
                }
                let mut p = policy(&format!("pol{idx}"), idx as u32 + 1, action, rules);
                let url = accepted(url, check::redirect_url, "https://x.example/");
                match action {
                    L7PolicyAction::RedirectToUrl => p.redirect_url = Some(url),
                    L7PolicyAction::RedirectPrefix => p.redirect_prefix = Some(url),
                    L7PolicyAction::RedirectToPool => p.redirect_pool_id = Some("p1".into()),
                    L7PolicyAction::Reject => {}
                }
                if action != L7PolicyAction::Reject && action != L7PolicyAction::RedirectToPool {
                    p.redirect_http_code = code;
                }
                p
            })
    }

    fn monitor_strategy() -> impl Strategy<Value = HealthMonitor> {
        (
            select(vec![
                HealthMonitorType::Http,
                HealthMonitorType::Https,
                HealthMonitorType::Tcp,
                HealthMonitorType::TlsHello,
                HealthMonitorType::Ping,
            ]),
            prop_oneof![0..=60u32, Just(check::MAX_MONITOR_SECONDS)],
            prop_oneof![0..=60u32, Just(check::MAX_MONITOR_SECONDS)],
            (1..=10u8, 1..=10u8),
            text(URL, 6),
            text(CODES, 8),
            text(WORD, 10),
            any::<bool>(),
        )
            .prop_map(
                |(t, delay, timeout, (rise, fall), path, codes, domain, v11)| {
                    let mut hm = monitor(t);
                    hm.delay = delay;
                    hm.timeout = timeout;
                    hm.max_retries = rise;
                    hm.max_retries_down = fall;
                    if matches!(t, HealthMonitorType::Http | HealthMonitorType::Https) {
                        let path = format!("/{}", path.trim_start_matches('/'));
                        hm.url_path = Some(accepted(path, check::url_path, "/"));
                        hm.expected_codes = Some(accepted(
                            codes,
                            |c| check::expected_codes(c).map(drop),
                            "200",
                        ));
                        hm.http_method = Some(HttpMethod::Get);
                        if v11 {
                            hm.http_version = Some(HttpVersion::Http11);
                            hm.domain_name = check::domain_name(&domain).is_ok().then_some(domain);
                        } else {
                            hm.http_version = Some(HttpVersion::Http10);
                        }
                    }
                    hm
                },
            )
    }

    fn address() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            any::<std::net::Ipv4Addr>().prop_map(IpAddr::V4),
            any::<std::net::Ipv6Addr>().prop_map(IpAddr::V6)
        ]
        .prop_map(|a| {
            if check::member_address(a).is_ok() {
                a
            } else {
                ip("192.0.2.1")
            }
        })
    }

    fn member_strategy(idx: usize) -> impl Strategy<Value = Member> {
        (
            address(),
            1..=65535u16,
            0..=256u16,
            any::<bool>(),
            proptest::option::of(address()),
            proptest::option::of(1..=65535u16),
            any::<bool>(),
        )
            .prop_map(move |(a, port, weight, backup, mon_a, mon_p, up)| {
                let mut m = member(&format!("m{idx}"), a, port);
                m.weight = weight;
                m.backup = backup;
                m.monitor_address = mon_a;
                m.monitor_port = mon_p;
                m.admin_state_up = up;
                m
            })
    }

    fn pool_strategy(id: &'static str) -> impl Strategy<Value = Pool> {
        (
            select(vec![
                PoolProtocol::Http,
                PoolProtocol::Proxy,
                PoolProtocol::ProxyV2,
                PoolProtocol::Tcp,
            ]),
            select(vec![
                LbAlgorithm::RoundRobin,
                LbAlgorithm::LeastConnections,
                LbAlgorithm::SourceIp,
                LbAlgorithm::SourceIpPort,
            ]),
            0..4usize,
            text(WORD, 12),
            proptest::option::of(monitor_strategy()),
            proptest::collection::vec((0..100usize).prop_flat_map(member_strategy), 0..4),
        )
            .prop_map(
                move |(protocol, alg, persistence, cookie, hm, mut members)| {
                    for (i, m) in members.iter_mut().enumerate() {
                        m.id = format!("{id}-m{i}");
                    }
                    let mut p = pool(id, protocol, alg, members);
                    p.session_persistence = match persistence {
                        1 => Some((SessionPersistenceType::SourceIp, None)),
                        2 => Some((SessionPersistenceType::HttpCookie, None)),
                        3 => Some((
                            SessionPersistenceType::AppCookie,
                            Some(accepted(cookie, check::fetch_key, "JSESSIONID")),
                        )),
                        _ => None,
                    }
                    .map(|(t, cookie_name)| SessionPersistence {
                        persistence_type: t,
                        cookie_name,
                        persistence_timeout: None,
                        persistence_granularity: None,
                    });
                    p.health_monitor = hm;
                    p
                },
            )
    }

    fn cidr() -> impl Strategy<Value = ipnet::IpNet> {
        prop_oneof![
            (any::<std::net::Ipv4Addr>(), 0..=32u8)
                .prop_map(|(a, l)| ipnet::IpNet::V4(ipnet::Ipv4Net::new(a, l).unwrap().trunc())),
            (any::<std::net::Ipv6Addr>(), 0..=128u8)
                .prop_map(|(a, l)| ipnet::IpNet::V6(ipnet::Ipv6Net::new(a, l).unwrap().trunc())),
        ]
    }

    /// Certificates are expensive to generate: one TLS base state for all cases.
    static TLS_BASE: std::sync::LazyLock<DesiredState> = std::sync::LazyLock::new(tls_state);

    /// TLS and header settings of a listener, applied where its protocol allows them.
    #[derive(Debug, Clone)]
    struct ListenerExtras {
        insert_headers: Vec<(&'static str, bool)>,
        hsts: Option<(u32, bool, bool)>,
        versions: Vec<TlsVersion>,
        alpn: Vec<AlpnProtocol>,
        client_auth: ClientAuthentication,
    }

    fn extras_strategy() -> impl Strategy<Value = ListenerExtras> {
        (
            proptest::collection::vec(
                (
                    select(vec![
                        "X-Forwarded-For",
                        "X-Forwarded-Port",
                        "X-Forwarded-Proto",
                        "X-Forwarded-IP",
                        "X-Client-IP",
                        "X-Real-IP",
                        "X-SSL-Client-Verify",
                        "X-SSL-Client-Has-Cert",
                        "X-SSL-Client-DN",
                        "X-SSL-Client-CN",
                        "X-SSL-Issuer",
                        "X-SSL-Client-SHA1",
                        "X-SSL-Client-Not-Before",
                        "X-SSL-Client-Not-After",
                    ]),
                    any::<bool>(),
                ),
                0..5,
            ),
            proptest::option::of((0..=u32::MAX / 2, any::<bool>(), any::<bool>())),
            proptest::sample::subsequence(vec![TlsVersion::TlsV1_2, TlsVersion::TlsV1_3], 0..=2),
            proptest::sample::subsequence(
                vec![AlpnProtocol::H2, AlpnProtocol::Http11, AlpnProtocol::Http10],
                0..=3,
            ),
            select(vec![
                ClientAuthentication::None,
                ClientAuthentication::Optional,
                ClientAuthentication::Mandatory,
            ]),
        )
            .prop_map(|(insert_headers, hsts, versions, alpn, client_auth)| {
                ListenerExtras {
                    insert_headers,
                    hsts,
                    versions,
                    alpn,
                    client_auth,
                }
            })
    }

    /// `klb_model::validate::insert_header_key` (klb-agent cannot depend on klb-model): the
    /// forwarding headers on HTTP and TERMINATED_HTTPS, the X-SSL ones on the latter only.
    fn insert_header_allowed(tls: bool, key: &str) -> bool {
        !key.starts_with("X-SSL-") || tls
    }

    fn state_strategy() -> impl Strategy<Value = DesiredState> {
        (
            select(vec![
                ListenerProtocol::Http,
                ListenerProtocol::Tcp,
                ListenerProtocol::TerminatedHttps,
            ]),
            extras_strategy(),
            proptest::option::of(1..=1_000_000u32),
            proptest::array::uniform4(prop_oneof![0..=100_000u32, Just(check::MAX_TIMEOUT_MS)]),
            proptest::collection::vec(cidr(), 0..=check::MAX_ALLOWED_CIDRS),
            proptest::collection::vec((0..3usize).prop_flat_map(policy_strategy), 0..3),
            pool_strategy("p1"),
            pool_strategy("p2"),
            proptest::collection::vec(address(), 0..3),
        )
            .prop_map(
                |(protocol, extras, limit, timeouts, cidrs, mut policies, p1, p2, extra)| {
                    let tls = protocol == ListenerProtocol::TerminatedHttps;
                    let mut s = if tls { TLS_BASE.clone() } else { base() };
                    s.pools = vec![p1, p2];
                    let l = &mut s.listeners[0];
                    l.protocol = protocol;
                    if protocol != ListenerProtocol::Tcp {
                        l.insert_headers = extras
                            .insert_headers
                            .iter()
                            .filter(|(k, _)| insert_header_allowed(tls, k))
                            .map(|(k, v)| (k.to_string(), v.to_string()))
                            .collect();
                    }
                    if tls {
                        if let Some((age, sub, preload)) = extras.hsts {
                            l.hsts_max_age = Some(age);
                            l.hsts_include_subdomains = sub;
                            l.hsts_preload = preload;
                        }
                        l.tls_versions = extras.versions.clone();
                        l.alpn_protocols = extras.alpn.clone();
                        l.tls_ciphers = Some("ECDHE-RSA-AES128-GCM-SHA256:!aNULL".into());
                        if extras.client_auth != ClientAuthentication::None {
                            l.client_ca_certificate_id = Some("ca".into());
                            l.client_authentication = extras.client_auth;
                        }
                    }
                    l.connection_limit = limit;
                    [
                        l.timeout_client_data,
                        l.timeout_member_connect,
                        l.timeout_member_data,
                        l.timeout_tcp_inspect,
                    ] = timeouts;
                    assert!(check::allowed_cidrs_count(cidrs.len()).is_ok());
                    l.allowed_cidrs = cidrs;
                    if protocol != ListenerProtocol::Tcp {
                        // Octavia's listener/pool protocol map: HTTP, PROXY or PROXYV2 pools.
                        for p in &mut s.pools {
                            if p.protocol == PoolProtocol::Tcp {
                                p.protocol = PoolProtocol::Http;
                            }
                        }
                        for (i, p) in policies.iter_mut().enumerate() {
                            p.id = format!("pol{i}");
                            p.position = i as u32 + 1;
                            if p.redirect_pool_id.is_some() {
                                p.redirect_pool_id = Some("p2".into());
                            }
                        }
                        l.l7_policies = policies;
                    } else {
                        // The API refuses L7 policies on TCP listeners; every pool protocol
                        // generated here is allowed behind one.
                    }
                    // Additional VIPs of the VIP's family, like the API allows.
                    s.additional_vips = extra.into_iter().filter(|a| a.is_ipv4()).collect();
                    s
                },
            )
    }

    static HAPROXY_CHECKS: AtomicUsize = AtomicUsize::new(0);

    proptest! {
        #![proptest_config(ProptestConfig {
            // Bounded: about 10-30 ms of `haproxy -c` per case.
            cases: 96,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        #[test]
        fn api_valid_states_pass_haproxy_check(s in state_strategy()) {
            if let Err(e) = render_and_check(&s) {
                prop_assert!(false, "an API-valid state was refused: {e}");
            }
            let n = HAPROXY_CHECKS.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_multiple_of(32) {
                eprintln!("{n} API-valid states rendered and passed haproxy -c");
            }
        }
    }
}
