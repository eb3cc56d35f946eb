//! `klb serve` with `api.auth_strategy = "keystone"` against the real Keystone that
//! `tests/openstack/run-services.sh` starts (it sets `KLB_TEST_OPENSTACK=1`; without it every
//! test here prints why and passes). Tokens come from Keystone itself (`POST /v3/auth/tokens`).
//!
//! Each test runs its own `klb serve` (noop provider) with its own service user
//! (`klbks-<pid>-<n>`, admin in project `service`, like the fixtures' `klb`), so revoking that
//! user's tokens never touches what other tests or engineers use. The tests hold one lock:
//! one of them stops and restarts Keystone, which the others must not see.
//!
//! Everything a test makes in Keystone and Neutron (users, application credentials, the
//! `load-balancer` service and its endpoints, a network) is deleted by a drop guard, also when
//! the test fails; a stopped Keystone is started again the same way.

mod support;

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Guard, free_port, serve, wait_up};

const KIT: &str = "/var/lib/klb-openstack-local";
const KEYSTONE: &str = "http://127.0.0.1:15000/v3";
const NEUTRON: &str = "http://127.0.0.1:19696/v2.0";
/// klb's `[keystone] cache_seconds` in these tests: the bound on accepting a revoked token.
const CACHE_SECONDS: u64 = 8;

/// One test at a time: `service_token_*` stops Keystone. A std lock is right here: these
/// tests are synchronous, there is no async runtime to stall.
#[allow(clippy::disallowed_types)]
static KEYSTONE_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
static SEQ: AtomicU32 = AtomicU32::new(0);

fn skip() -> bool {
    if std::env::var_os("KLB_TEST_OPENSTACK").is_none() {
        println!("skipped: KLB_TEST_OPENSTACK is not set (tests/openstack/run-services.sh)");
        return true;
    }
    false
}

/// An HTTP answer: status, JSON body (`Null` if none or not JSON), raw response headers.
struct Reply {
    code: u16,
    body: Value,
    headers: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<String> {
        self.headers.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    }
}

/// One request through curl (no HTTP client dependency for a test): bounded by 15 s.
fn call(
    method: &str,
    url: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> Reply {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-m", "15", "-D", "-", "-X", method])
        .args(["-H", "Content-Type: application/json"])
        .args(["-H", "Accept: application/json"])
        .args(["-w", "\n%{http_code}"]);
    if let Some(t) = token {
        cmd.args(["-H", &format!("X-Auth-Token: {t}")]);
    }
    for (k, v) in headers {
        cmd.args(["-H", &format!("{k}: {v}")]);
    }
    if let Some(b) = body {
        cmd.args(["-d", &b.to_string()]);
    }
    let out = cmd.arg(url).output().expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (rest, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    // `-D -` prints the header block (or blocks, after a 100 Continue) before the body.
    let mut rest = rest;
    let mut headers = String::new();
    while rest.starts_with("HTTP/") {
        let (h, b) = rest.split_once("\r\n\r\n").unwrap_or((rest, ""));
        headers = h.to_owned();
        rest = b;
    }
    Reply {
        code: code.trim().parse().unwrap_or(0),
        body: serde_json::from_str(rest).unwrap_or(Value::Null),
        headers,
    }
}

/// `POST /v3/auth/tokens`; the token, or panics with Keystone's answer.
fn issue(auth: Value) -> String {
    let r = call(
        "POST",
        &format!("{KEYSTONE}/auth/tokens?nocatalog"),
        None,
        &[],
        Some(&json!({ "auth": auth })),
    );
    assert_eq!(r.code, 201, "Keystone refused a token: {}", r.body);
    r.header("X-Subject-Token").expect("X-Subject-Token")
}

fn password(user: &str, password: &str, scope: Value) -> Value {
    json!({
        "identity": {"methods": ["password"], "password": {"user": {
            "name": user, "domain": {"name": "Default"}, "password": password}}},
        "scope": scope,
    })
}

fn project(name: &str) -> Value {
    json!({"project": {"name": name, "domain": {"name": "Default"}}})
}

fn token(user: &str, pass: &str, project_name: &str) -> String {
    issue(password(user, pass, project(project_name)))
}

fn member() -> String {
    token("klbmember", "userpass", "klbtenant")
}

fn admin() -> String {
    token("admin", "secretadmin", "admin")
}

fn keystone_up() -> bool {
    Command::new("curl")
        .args([
            "-sf",
            "-m",
            "2",
            "-o",
            "/dev/null",
            "http://127.0.0.1:15000/v3",
        ])
        .status()
        .is_ok_and(|s| s.success())
}

/// What a test made in Keystone or Neutron: deleted in reverse order on drop, each with the
/// token allowed to delete it.
#[derive(Default)]
struct Cleanup(Vec<(String, String)>);

impl Cleanup {
    fn delete_on_drop(&mut self, url: String, token: &str) {
        self.0.push((url, token.to_owned()));
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for (url, token) in self.0.drain(..).rev() {
            let r = call("DELETE", &url, Some(&token), &[], None);
            if !matches!(r.code, 200 | 202 | 204 | 404) {
                eprintln!("cleanup: DELETE {url} answered {}: {}", r.code, r.body);
            }
        }
    }
}

fn id_by_name(admin: &str, collection: &str, name: &str) -> String {
    let r = call(
        "GET",
        &format!("{KEYSTONE}/{collection}?name={name}"),
        Some(admin),
        &[],
        None,
    );
    r.body[collection][0]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no {collection} named {name}: {}", r.body))
        .to_owned()
}

/// A test's world: the admin token, its own service user, its `klb serve` and what to delete.
/// Field order is drop order: klb stops before its service user goes.
struct World {
    klb: String,
    _serve: Guard,
    service_user: String,
    service_password: String,
    admin: String,
    dir: tempfile::TempDir,
    cleanup: Cleanup,
}

impl World {
    fn start() -> World {
        let admin = admin();
        let mut cleanup = Cleanup::default();
        let name = format!(
            "klbks-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let service_password = format!("pw-{name}-{}", free_port());
        let r = call(
            "POST",
            &format!("{KEYSTONE}/users"),
            Some(&admin),
            &[],
            Some(&json!({"user": {"name": name, "password": service_password,
                                  "domain_id": "default"}})),
        );
        assert_eq!(r.code, 201, "create the service user: {}", r.body);
        let service_user = r.body["user"]["id"].as_str().unwrap().to_owned();
        cleanup.delete_on_drop(format!("{KEYSTONE}/users/{service_user}"), &admin);
        let service_project = id_by_name(&admin, "projects", "service");
        let admin_role = id_by_name(&admin, "roles", "admin");
        let r = call(
            "PUT",
            &format!(
                "{KEYSTONE}/projects/{service_project}/users/{service_user}/roles/{admin_role}"
            ),
            Some(&admin),
            &[],
            None,
        );
        assert_eq!(r.code, 204, "grant admin on service: {}", r.body);

        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let config = dir.path().join("klb.toml");
        std::fs::write(
            &config,
            format!(
                "[api]\nbind = \"127.0.0.1:{port}\"\nauth_strategy = \"keystone\"\n\
                 [keystone]\nauth_url = \"{KEYSTONE}\"\nusername = \"{name}\"\n\
                 password = \"{service_password}\"\nproject_name = \"service\"\n\
                 cache_seconds = {CACHE_SECONDS}\n"
            ),
        )
        .unwrap();
        let serve = serve(&config, dir.path(), "serve.log");
        let klb = format!("http://127.0.0.1:{port}");
        wait_up(&klb);
        World {
            klb,
            _serve: serve,
            service_user,
            service_password,
            admin,
            dir,
            cleanup,
        }
    }

    fn lbs(&self) -> String {
        format!("{}/v2/lbaas/loadbalancers", self.klb)
    }

    fn get(&self, url: &str, token: &str) -> Reply {
        call("GET", url, Some(token), &[], None)
    }

    fn create_lb(&self, token: &str, name: &str) -> Reply {
        call(
            "POST",
            &self.lbs(),
            Some(token),
            &[],
            Some(&json!({"loadbalancer": {
                "name": name, "vip_subnet_id": "5f0e4a1c-3e8b-4f55-9a57-2f3e7d9b0c11"}})),
        )
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("serve.log")).unwrap_or_default()
    }
}

fn ids(list: &Value) -> Vec<String> {
    list["loadbalancers"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|lb| lb["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn lock() -> std::sync::MutexGuard<'static, ()> {
    KEYSTONE_LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn project_tokens_follow_octavias_default_rbac() {
    if skip() {
        return;
    }
    let _lock = lock();
    let w = World::start();
    let member = member();
    let reader = token("klbreader", "userpass", "klbtenant");
    let other = token("klbother", "userpass", "klbother");

    // No token, or a made-up one: keystonemiddleware's 401.
    let r = call("GET", &w.lbs(), None, &[], None);
    assert_eq!(r.code, 401, "{}", r.body);
    let r = w.get(&w.lbs(), "gAAAAABnot-a-real-token");
    assert_eq!(r.code, 401, "{}", r.body);

    // A member creates, lists and shows in its own project.
    let r = w.create_lb(&member, "ks-rbac");
    assert_eq!(r.code, 201, "{}", r.body);
    let lb = r.body["loadbalancer"]["id"].as_str().unwrap().to_owned();
    let tenant = r.body["loadbalancer"]["project_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(tenant, id_by_name(&w.admin, "projects", "klbtenant"));
    let one = format!("{}/{lb}", w.lbs());
    let r = w.get(&w.lbs(), &member);
    assert_eq!(r.code, 200, "{}", r.body);
    assert!(ids(&r.body).contains(&lb), "{}", r.body);
    let r = w.get(&one, &member);
    assert_eq!(r.code, 200, "{}", r.body);
    assert_eq!(r.body["loadbalancer"]["name"], "ks-rbac");

    // A reader reads but writes nothing.
    let r = w.get(&w.lbs(), &reader);
    assert_eq!(r.code, 200, "{}", r.body);
    assert!(ids(&r.body).contains(&lb));
    assert_eq!(w.get(&one, &reader).code, 200);
    let r = w.create_lb(&reader, "by-reader");
    assert_eq!(r.code, 403, "{}", r.body);
    assert_eq!(
        r.body["faultstring"],
        "Policy does not allow this request to be performed."
    );
    let r = call(
        "PUT",
        &one,
        Some(&reader),
        &[],
        Some(&json!({"loadbalancer": {"name": "x"}})),
    );
    assert_eq!(r.code, 403, "{}", r.body);

    // Another project: absent from its list; show/update/delete refused. Octavia finds the
    // object, then its policy check refuses: 403 (load_balancer.py get_one), not 404.
    let r = w.get(&w.lbs(), &other);
    assert_eq!(r.code, 200, "{}", r.body);
    assert!(!ids(&r.body).contains(&lb), "{}", r.body);
    let r = w.get(&one, &other);
    assert_eq!(r.code, 403, "{}", r.body);
    assert!(!r.body.to_string().contains("ks-rbac"), "{}", r.body);
    let r = call(
        "PUT",
        &one,
        Some(&other),
        &[],
        Some(&json!({"loadbalancer": {"name": "stolen"}})),
    );
    assert_eq!(r.code, 403, "{}", r.body);
    assert_eq!(call("DELETE", &one, Some(&other), &[], None).code, 403);
    let r = w.get(&w.lbs(), &other);
    assert!(!ids(&r.body).contains(&lb));

    // A project-scoped admin sees every project's load balancers.
    let r = w.get(&w.lbs(), &w.admin);
    assert_eq!(r.code, 200, "{}", r.body);
    assert!(ids(&r.body).contains(&lb), "{}", r.body);
    let r = w.get(&one, &w.admin);
    assert_eq!(r.code, 200, "{}", r.body);
    assert_eq!(r.body["loadbalancer"]["name"], "ks-rbac");

    // The member deletes its own.
    let r = call("DELETE", &one, Some(&member), &[], None);
    assert_eq!(r.code, 204, "{}", r.body);
}

#[test]
fn system_and_domain_scoped_tokens_are_refused_like_octavia() {
    if skip() {
        return;
    }
    let _lock = lock();
    let w = World::start();
    let member = member();
    let r = w.create_lb(&member, "ks-system");
    assert_eq!(r.code, 201, "{}", r.body);
    let lb = r.body["loadbalancer"]["id"].as_str().unwrap().to_owned();
    let tenant = r.body["loadbalancer"]["project_id"].clone();
    let one = format!("{}/{lb}", w.lbs());

    // Keystone's bootstrap gives the cloud admin the admin role on the system. Every Octavia
    // rule has scope_types=['project'] and oslo.policy enforces scope by default: a system
    // token is refused (Octavia's list: PolicyForbidden, project unknown), never served as a
    // project token of an empty project (200 with an empty list) nor a crash.
    let system = issue(password(
        "admin",
        "secretadmin",
        json!({"system": {"all": true}}),
    ));
    for (method, url, body) in [
        ("GET", w.lbs(), None),
        ("GET", one.clone(), None),
        (
            "PUT",
            one.clone(),
            Some(json!({"loadbalancer": {"name": "sys"}})),
        ),
        ("DELETE", one.clone(), None),
        (
            "POST",
            w.lbs(),
            Some(json!({"loadbalancer": {"project_id": tenant,
                "vip_subnet_id": "5f0e4a1c-3e8b-4f55-9a57-2f3e7d9b0c11"}})),
        ),
        ("GET", format!("{}/v2/lbaas/quotas", w.klb), None),
        ("GET", format!("{}/v2/octavia/amphorae", w.klb), None),
    ] {
        let r = call(method, &url, Some(&system), &[], body.as_ref());
        assert_eq!(
            r.code, 403,
            "{method} {url} with a system token: {}",
            r.body
        );
    }
    // A domain-scoped admin token is no project token either (the test's own service user
    // gets the admin role on the Default domain; the grant goes with the user).
    let admin_role = id_by_name(&w.admin, "roles", "admin");
    let r = call(
        "PUT",
        &format!(
            "{KEYSTONE}/domains/default/users/{}/roles/{admin_role}",
            w.service_user
        ),
        Some(&w.admin),
        &[],
        None,
    );
    assert_eq!(r.code, 204, "domain grant: {}", r.body);
    let domain = issue(json!({
        "identity": {"methods": ["password"], "password": {"user": {
            "id": w.service_user, "password": w.service_password}}},
        "scope": {"domain": {"id": "default"}},
    }));
    for url in [w.lbs(), one.clone()] {
        let r = w.get(&url, &domain);
        assert_eq!(r.code, 403, "GET {url} with a domain token: {}", r.body);
    }

    // Without a project in the body there is no owner to check at all: Octavia's
    // load_balancer.py answers 400 before any policy check, and so does klb.
    let r = call(
        "POST",
        &w.lbs(),
        Some(&system),
        &[],
        Some(&json!({"loadbalancer": {"vip_subnet_id": "5f0e4a1c-3e8b-4f55-9a57-2f3e7d9b0c11"}})),
    );
    assert_eq!(r.code, 400, "{}", r.body);
    assert!(
        r.body["faultstring"]
            .as_str()
            .is_some_and(|s| s.starts_with("Missing project ID")),
        "{}",
        r.body
    );
    // Still there, untouched.
    let r = w.get(&one, &member);
    assert_eq!(r.body["loadbalancer"]["name"], "ks-system", "{}", r.body);
    assert_eq!(call("DELETE", &one, Some(&member), &[], None).code, 204);
}

#[test]
fn expired_and_revoked_tokens_stop_working_within_the_cache_bound() {
    if skip() {
        return;
    }
    let _lock = lock();
    let mut w = World::start();
    let member = member();
    let user_id = call(
        "GET",
        &format!("{KEYSTONE}/auth/tokens?nocatalog"),
        Some(&member),
        &[("X-Subject-Token", &member)],
        None,
    )
    .body["token"]["user"]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // klb's service token first, so the short token's first use below is quick.
    assert_eq!(w.get(&w.lbs(), &member).code, 200);

    // Expired: Keystone caps a token's life at its application credential's expiry, so a
    // credential that expires in 5 s yields a real token that dies within 5 s (Keystone
    // hashes the credential's secret: issuing takes a while on a busy machine), before
    // klb's cache entry would (cache_seconds): klb must stop accepting it at its expires_at.
    let expiry = unix_now() + 5.0;
    let r = call(
        "POST",
        &format!("{KEYSTONE}/users/{user_id}/application_credentials"),
        Some(&member),
        &[],
        Some(&json!({"application_credential": {
            "name": format!("klbks-{}-expiry", std::process::id()),
            "expires_at": gnu_date(&format!("@{expiry:.0}"), "+%Y-%m-%dT%H:%M:%S")}})),
    );
    assert_eq!(r.code, 201, "application credential: {}", r.body);
    let credential = &r.body["application_credential"];
    let credential_id = credential["id"].as_str().unwrap().to_owned();
    w.cleanup.delete_on_drop(
        format!("{KEYSTONE}/users/{user_id}/application_credentials/{credential_id}"),
        &member,
    );
    let short = issue(json!({"identity": {"methods": ["application_credential"],
        "application_credential": {"id": credential_id, "secret": credential["secret"]}}}));
    let r = w.get(&w.lbs(), &short);
    let left = expiry - unix_now();
    assert_eq!(
        r.code, 200,
        "the short-lived token {left:.3} s before its expiry: {}",
        r.body
    );
    // Cached now for cache_seconds, or less: only the token's own expiry can end it sooner.
    assert!(left < CACHE_SECONDS as f64);
    let expires_at = call(
        "GET",
        &format!("{KEYSTONE}/auth/tokens?nocatalog"),
        Some(&w.admin),
        &[("X-Subject-Token", &short)],
        None,
    )
    .body["token"]["expires_at"]
        .as_str()
        .map(|t| gnu_date(t, "+%s.%N"))
        .and_then(|t| t.parse::<f64>().ok())
        .expect("the short token's expires_at");
    let expired_after = poll_until_401(&w, &short, Duration::from_secs(CACHE_SECONDS));
    let late = unix_now() - expires_at;
    println!(
        "expired token refused {expired_after:?} after the first use, {late:.3} s after expires_at"
    );
    // Refused at expires_at plus the polling step, not only when cache_seconds ran out.
    assert!(
        late < 1.5,
        "an expired token was accepted {late:.3} s after its expiry"
    );

    // Revoked: DELETE /v3/auth/tokens. klb caches validations for cache_seconds (like
    // keystonemiddleware's token_cache_time), so a revoked token is refused within that.
    let revoked = self::member();
    let r = w.get(&w.lbs(), &revoked);
    assert_eq!(r.code, 200, "{}", r.body);
    let r = call(
        "DELETE",
        &format!("{KEYSTONE}/auth/tokens"),
        Some(&revoked),
        &[("X-Subject-Token", &revoked)],
        None,
    );
    assert_eq!(r.code, 204, "revoke: {}", r.body);
    let refused_after = poll_until_401(&w, &revoked, Duration::from_secs(CACHE_SECONDS + 5));
    println!(
        "revoked token refused {refused_after:?} after revocation (cache_seconds = {CACHE_SECONDS})"
    );
    assert!(
        refused_after <= Duration::from_millis(CACHE_SECONDS * 1000 + 1500),
        "a revoked token was accepted for {refused_after:?}, cache_seconds is {CACHE_SECONDS}"
    );
    // Other tokens of the same user are not affected.
    assert_eq!(w.get(&w.lbs(), &member).code, 200);
}

/// Seconds since the epoch.
fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64()
}

/// GNU date for the two conversions to and from Keystone's ISO 8601 times (no date crate
/// for a test): `date -u -d <when> <format>`.
fn gnu_date(when: &str, format: &str) -> String {
    let out = Command::new("date")
        .args(["-u", "-d", when, format])
        .output()
        .expect("date runs");
    assert!(out.status.success(), "date -d {when:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Polls klb with `token` every 100 ms until it answers 401; the time that took. Any other
/// status than 200/401 fails the test.
fn poll_until_401(w: &World, token: &str, limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let r = w.get(&w.lbs(), token);
        match r.code {
            401 => return start.elapsed(),
            200 => {}
            other => panic!("unexpected {other} while waiting for a 401: {}", r.body),
        }
        assert!(
            start.elapsed() < limit,
            "token still accepted after {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Starts Keystone again (the kit's `start.sh keystone`) if this test stopped it and it is
/// not back, also when the test fails.
struct RestoreKeystone;

impl Drop for RestoreKeystone {
    fn drop(&mut self) {
        if !keystone_up() {
            eprintln!("restarting Keystone (the test stopped it)");
            let _ = Command::new(format!("{KIT}/start.sh"))
                .arg("keystone")
                .stdout(Stdio::null())
                .status();
        }
    }
}

#[test]
fn service_token_is_renewed_after_revocation_and_keystone_restarts() {
    if skip() {
        return;
    }
    let _lock = lock();
    let w = World::start();
    let first = member();
    assert_eq!(
        w.get(&w.lbs(), &first).code,
        200,
        "klb got its service token"
    );

    // Revoke every token of klb's service user (disabling a user revokes its tokens), then
    // enable it again: klb's next validation is refused (401) and it must authenticate again.
    for enabled in [false, true] {
        let r = call(
            "PATCH",
            &format!("{KEYSTONE}/users/{}", w.service_user),
            Some(&w.admin),
            &[],
            Some(&json!({"user": {"enabled": enabled}})),
        );
        assert_eq!(r.code, 200, "enabled={enabled}: {}", r.body);
    }
    // Keystone's revocation events have one-second resolution: a token issued in the same
    // second as the event counts as revoked too.
    std::thread::sleep(Duration::from_millis(1100));
    let fresh = member();
    let r = w.get(&w.lbs(), &fresh);
    assert_eq!(
        r.code, 200,
        "after the service token was revoked: {}",
        r.body
    );
    assert!(
        w.log()
            .contains("Keystone refused the service token; authenticating again"),
        "klb did not re-authenticate:\n{}",
        w.log()
    );
    assert!(
        !w.log().contains(&w.service_password),
        "password in the log"
    );

    // Keystone down: a token klb has not cached yet gets 503 (keystonemiddleware's answer),
    // klb keeps running; once Keystone is back the same token and new ones validate.
    let unseen = member();
    let _restore = RestoreKeystone;
    let stopped = Instant::now();
    let status = Command::new(format!("{KIT}/stop.sh"))
        .arg("keystone")
        .stdout(Stdio::null())
        .status()
        .expect("stop.sh runs");
    assert!(status.success() && !keystone_up(), "Keystone did not stop");
    let r = w.get(&w.lbs(), &unseen);
    assert_eq!(r.code, 503, "while Keystone is down: {}", r.body);
    assert!(
        r.body["faultstring"]
            .as_str()
            .is_some_and(|s| s.contains("Keystone")),
        "{}",
        r.body
    );
    let status = Command::new(format!("{KIT}/start.sh"))
        .arg("keystone")
        .stdout(Stdio::null())
        .status()
        .expect("start.sh runs");
    assert!(status.success() && keystone_up(), "Keystone did not start");
    println!("Keystone was down for {:?}", stopped.elapsed());
    let r = w.get(&w.lbs(), &unseen);
    assert_eq!(r.code, 200, "after Keystone restarted: {}", r.body);
    let r = w.get(&w.lbs(), &member());
    assert_eq!(r.code, 200, "a new token after the restart: {}", r.body);
}

/// `openstack loadbalancer ...` (python-octaviaclient) as klbmember, password auth, endpoint
/// from Keystone's catalog.
fn cli(venv: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(format!("{venv}/bin/openstack"))
        .args(args)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("OS_AUTH_URL", KEYSTONE)
        .env("OS_USERNAME", "klbmember")
        .env("OS_PASSWORD", "userpass")
        .env("OS_PROJECT_NAME", "klbtenant")
        .env("OS_USER_DOMAIN_NAME", "Default")
        .env("OS_PROJECT_DOMAIN_NAME", "Default")
        .env("OS_REGION_NAME", "RegionOne")
        .env("OS_IDENTITY_API_VERSION", "3")
        .env("OS_INTERFACE", "public")
        .env("PYTHONWARNINGS", "ignore")
        .output()
        .expect("openstack CLI runs");
    let text = if out.status.success() {
        String::from_utf8_lossy(&out.stdout).into_owned()
    } else {
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    (out.status.success(), text)
}

fn cli_json(venv: &str, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["-f", "json"]);
    let (ok, text) = cli(venv, &all);
    assert!(ok, "openstack {args:?}: {text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

/// The pinned client venv (tests/compat/venv.sh creates it once, then reuses it).
fn client_venv() -> String {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target = std::path::Path::new(env!("CARGO_BIN_EXE_klb"))
        .parent()
        .and_then(|p| p.parent())
        .expect("target dir")
        .to_path_buf();
    let out = Command::new("bash")
        .arg(root.join("tests/compat/venv.sh"))
        .env(
            "CARGO_TARGET_DIR",
            std::env::var_os("CARGO_TARGET_DIR").unwrap_or(target.into_os_string()),
        )
        .stderr(Stdio::inherit())
        .output()
        .expect("venv.sh runs");
    assert!(out.status.success(), "tests/compat/venv.sh failed");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Removes `load-balancer` services left by a killed run of this test (its pid is gone);
/// anything else is left alone.
fn remove_stale_services(admin: &str) {
    let r = call(
        "GET",
        &format!("{KEYSTONE}/services?type=load-balancer"),
        Some(admin),
        &[],
        None,
    );
    for s in r.body["services"].as_array().cloned().unwrap_or_default() {
        let name = s["name"].as_str().unwrap_or("");
        let Some(pid) = name
            .strip_prefix("klb-ks-")
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if std::path::Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let id = s["id"].as_str().unwrap_or_default();
        let endpoints = call(
            "GET",
            &format!("{KEYSTONE}/endpoints?service_id={id}"),
            Some(admin),
            &[],
            None,
        );
        for e in endpoints.body["endpoints"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            let e = e["id"].as_str().unwrap_or_default();
            call(
                "DELETE",
                &format!("{KEYSTONE}/endpoints/{e}"),
                Some(admin),
                &[],
                None,
            );
        }
        call(
            "DELETE",
            &format!("{KEYSTONE}/services/{id}"),
            Some(admin),
            &[],
            None,
        );
        eprintln!("removed the stale load-balancer service {name} ({id})");
    }
}

#[test]
fn openstack_cli_finds_klb_in_the_catalog() {
    if skip() {
        return;
    }
    let venv = client_venv();
    let _lock = lock();
    let mut w = World::start();
    let admin = w.admin.clone();
    remove_stale_services(&admin);

    // Register klb as `load-balancer` (unique name per run), all three interfaces.
    let name = format!("klb-ks-{}", std::process::id());
    let r = call(
        "POST",
        &format!("{KEYSTONE}/services"),
        Some(&admin),
        &[],
        Some(&json!({"service": {"type": "load-balancer", "name": name,
                                 "description": "klb keystone.rs test"}})),
    );
    assert_eq!(r.code, 201, "service: {}", r.body);
    let service = r.body["service"]["id"].as_str().unwrap().to_owned();
    w.cleanup
        .delete_on_drop(format!("{KEYSTONE}/services/{service}"), &admin);
    let mut endpoints = Vec::new();
    for interface in ["public", "internal", "admin"] {
        let r = call(
            "POST",
            &format!("{KEYSTONE}/endpoints"),
            Some(&admin),
            &[],
            Some(
                &json!({"endpoint": {"service_id": service, "interface": interface,
                                      "region_id": "RegionOne", "url": w.klb}}),
            ),
        );
        assert_eq!(r.code, 201, "endpoint {interface}: {}", r.body);
        let id = r.body["endpoint"]["id"].as_str().unwrap().to_owned();
        w.cleanup
            .delete_on_drop(format!("{KEYSTONE}/endpoints/{id}"), &admin);
        endpoints.push(id);
    }

    // The client resolves --vip-subnet-id through Neutron: a real subnet in klbtenant.
    let tenant = id_by_name(&admin, "projects", "klbtenant");
    let r = call(
        "POST",
        &format!("{NEUTRON}/networks"),
        Some(&admin),
        &[],
        Some(&json!({"network": {"name": format!("{name}-vip"), "project_id": tenant}})),
    );
    assert_eq!(r.code, 201, "network: {}", r.body);
    let network = r.body["network"]["id"].as_str().unwrap().to_owned();
    w.cleanup
        .delete_on_drop(format!("{NEUTRON}/networks/{network}"), &admin);
    let r = call(
        "POST",
        &format!("{NEUTRON}/subnets"),
        Some(&admin),
        &[],
        Some(&json!({"subnet": {"network_id": network, "ip_version": 4,
            "cidr": "198.19.40.0/24", "enable_dhcp": false, "project_id": tenant}})),
    );
    assert_eq!(r.code, 201, "subnet: {}", r.body);
    let subnet = r.body["subnet"]["id"].as_str().unwrap().to_owned();

    let created = cli_json(
        &venv,
        &[
            "loadbalancer",
            "create",
            "--name",
            "ks-cli",
            "--vip-subnet-id",
            &subnet,
        ],
    );
    let lb = created["id"].as_str().expect("an id").to_owned();
    assert_eq!(created["vip_subnet_id"], subnet.as_str(), "{created}");
    assert_eq!(created["project_id"], tenant.as_str(), "{created}");
    let listed = cli_json(&venv, &["loadbalancer", "list"]);
    assert!(
        listed
            .as_array()
            .is_some_and(|a| a.iter().any(|l| l["id"] == lb.as_str())),
        "{listed}"
    );
    let shown = cli_json(&venv, &["loadbalancer", "show", "ks-cli"]);
    assert_eq!(shown["id"], lb.as_str(), "{shown}");
    assert_eq!(shown["provisioning_status"], "ACTIVE", "{shown}");
    let (ok, text) = cli(&venv, &["loadbalancer", "delete", &lb]);
    assert!(ok, "delete: {text}");
    let (ok, text) = cli(&venv, &["loadbalancer", "show", &lb]);
    // octaviaclient looks the id up in the list first: gone from it, gone.
    assert!(
        !ok && text.contains("Unable to locate"),
        "after delete: {text}"
    );

    // The catalog entry goes with the test; nothing named like it is left behind.
    drop(w);
    let admin = self::admin();
    let left = call(
        "GET",
        &format!("{KEYSTONE}/services?type=load-balancer"),
        Some(&admin),
        &[],
        None,
    );
    assert!(
        !left.body.to_string().contains(&name),
        "service left behind: {}",
        left.body
    );
    for id in endpoints {
        let r = call(
            "GET",
            &format!("{KEYSTONE}/endpoints/{id}"),
            Some(&admin),
            &[],
            None,
        );
        assert_eq!(r.code, 404, "endpoint {id} left behind");
    }
}
