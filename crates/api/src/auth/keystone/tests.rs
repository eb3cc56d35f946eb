//! The authenticator against `fake_keystone`, an in-test Keystone v3 on 127.0.0.1 that issues
//! service tokens, answers validations from a token table and counts calls.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use chrono::TimeDelta;
use serde_json::{Value, json};

use super::*;

const PASSWORD: &str = "s3cret-service-password";

mod fake_keystone {
    use super::*;

    /// A user token: project, roles, expiry.
    pub type UserToken = (Option<String>, Vec<String>, DateTime<Utc>);

    #[derive(Default)]
    pub struct FakeState {
        /// User tokens: token → (project, roles, expires_at).
        pub tokens: Mutex<HashMap<String, UserToken>>,
        /// Service tokens Keystone currently accepts.
        pub service_tokens: Mutex<HashSet<String>>,
        /// Lifetime of issued service tokens.
        pub service_lifetime: Mutex<Option<TimeDelta>>,
        pub password_auths: AtomicUsize,
        pub validations: AtomicUsize,
    }

    pub struct FakeKeystone {
        pub url: String,
        pub state: Arc<FakeState>,
        task: tokio::task::JoinHandle<()>,
    }

    impl Drop for FakeKeystone {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    impl FakeKeystone {
        pub async fn start() -> FakeKeystone {
            let state = Arc::new(FakeState::default());
            let app = Router::new()
                .route("/v3/auth/tokens", post(issue).get(validate))
                .with_state(state.clone());
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind fake keystone");
            let addr = listener.local_addr().expect("local addr");
            let task = tokio::spawn(async move {
                let _ = axum::serve(listener, app).await;
            });
            FakeKeystone {
                url: format!("http://{addr}/v3"),
                state,
                task,
            }
        }

        /// Registers a user token.
        pub async fn user_token(
            &self,
            token: &str,
            project: Option<&str>,
            roles: &[&str],
            expires_in: TimeDelta,
        ) {
            self.state.tokens.lock().await.insert(
                token.to_owned(),
                (
                    project.map(str::to_owned),
                    roles.iter().map(|r| r.to_string()).collect(),
                    Utc::now() + expires_in,
                ),
            );
        }

        /// Revokes every service token (as a Keystone key rotation would).
        pub async fn revoke_service_tokens(&self) {
            self.state.service_tokens.lock().await.clear();
        }

        pub fn password_auths(&self) -> usize {
            self.state.password_auths.load(Ordering::SeqCst)
        }

        pub fn validations(&self) -> usize {
            self.state.validations.load(Ordering::SeqCst)
        }
    }

    fn token_body(
        user: &str,
        project: Option<&str>,
        roles: &[String],
        expires_at: DateTime<Utc>,
    ) -> Value {
        let mut token = json!({
            "methods": ["password"],
            "user": {"id": format!("{user}-id"), "name": user, "domain": {"id": "default", "name": "Default"}},
            "expires_at": expires_at.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
            "issued_at": Utc::now().format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
            "roles": roles.iter().map(|r| json!({"id": format!("{r}-id"), "name": r})).collect::<Vec<_>>(),
        });
        match project {
            Some("system") => token["system"] = json!({"all": true}),
            Some(p) => {
                token["project"] =
                    json!({"id": p, "name": format!("{p}-name"), "domain": {"id": "default"}})
            }
            None => {}
        }
        json!({ "token": token })
    }

    async fn issue(
        State(s): State<Arc<FakeState>>,
        axum::Json(body): axum::Json<Value>,
    ) -> Response {
        s.password_auths.fetch_add(1, Ordering::SeqCst);
        let auth = &body["auth"];
        let user = &auth["identity"]["password"]["user"];
        let scope = &auth["scope"]["project"];
        let ok = auth["identity"]["methods"] == json!(["password"])
            && user["name"] == "klb"
            && user["domain"]["name"] == "Default"
            && user["password"] == PASSWORD
            && scope["name"] == "service"
            && scope["domain"]["name"] == "Default";
        if !ok {
            return (
                StatusCode::UNAUTHORIZED,
                axum::Json(json!({"error": {"code": 401}})),
            )
                .into_response();
        }
        let n = s.password_auths.load(Ordering::SeqCst);
        let token = format!("svc-token-{n}");
        s.service_tokens.lock().await.insert(token.clone());
        let lifetime = s
            .service_lifetime
            .lock()
            .await
            .unwrap_or(TimeDelta::hours(1));
        let body = token_body(
            "klb",
            Some("service-project-id"),
            &["service".to_owned(), "admin".to_owned()],
            Utc::now() + lifetime,
        );
        let mut resp = (StatusCode::CREATED, axum::Json(body)).into_response();
        resp.headers_mut()
            .insert("X-Subject-Token", token.parse().expect("header value"));
        resp
    }

    async fn validate(State(s): State<Arc<FakeState>>, headers: HeaderMap) -> Response {
        s.validations.fetch_add(1, Ordering::SeqCst);
        let header = |n: &str| {
            headers
                .get(n)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned()
        };
        if !s
            .service_tokens
            .lock()
            .await
            .contains(&header("x-auth-token"))
        {
            return StatusCode::UNAUTHORIZED.into_response();
        }
        // The fake does not check expiry itself, so klb's own check is what is tested.
        match s.tokens.lock().await.get(&header("x-subject-token")) {
            Some((project, roles, expires_at)) => {
                axum::Json(token_body("alice", project.as_deref(), roles, *expires_at))
                    .into_response()
            }
            None => StatusCode::NOT_FOUND.into_response(),
        }
    }
}

use fake_keystone::FakeKeystone;

fn config(url: &str) -> KeystoneConfig {
    KeystoneConfig::new(url, "klb", Secret::new(PASSWORD), "service")
}

fn headers(token: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("x-auth-token", token.parse().expect("header"));
    h
}

#[tokio::test]
async fn valid_token_gives_project_roles_and_user() {
    let ks = FakeKeystone::start().await;
    ks.user_token(
        "tok-member",
        Some("p1"),
        &["Member", "reader"],
        TimeDelta::hours(1),
    )
    .await;
    ks.user_token("tok-admin", Some("p2"), &["admin"], TimeDelta::hours(1))
        .await;
    let auth = KeystoneAuth::new(config(&ks.url)).expect("auth");

    let ctx = auth
        .authenticate(&headers("tok-member"))
        .await
        .expect("valid");
    assert_eq!(ctx.project_id.as_deref(), Some("p1"));
    assert_eq!(ctx.roles, vec!["member".to_owned(), "reader".to_owned()]);
    assert_eq!(ctx.user_id.as_deref(), Some("alice-id"));
    assert!(!ctx.is_admin);

    let ctx = auth
        .authenticate(&headers("tok-admin"))
        .await
        .expect("valid");
    assert_eq!(ctx.project_id.as_deref(), Some("p2"));
    assert!(ctx.is_admin);
    assert_eq!(
        ks.password_auths(),
        1,
        "one service token serves both validations"
    );
}

#[tokio::test]
async fn missing_or_invalid_token_is_unauthorized() {
    let ks = FakeKeystone::start().await;
    let auth = KeystoneAuth::new(config(&ks.url)).expect("auth");

    let err = auth
        .authenticate(&HeaderMap::new())
        .await
        .expect_err("no token");
    assert_eq!(err.message, UNAUTHORIZED);
    assert_eq!(
        ks.validations(),
        0,
        "a missing token never reaches Keystone"
    );

    let err = auth
        .authenticate(&headers("no-such-token"))
        .await
        .expect_err("unknown token");
    assert_eq!(err.message, UNAUTHORIZED);
    assert_eq!(ks.validations(), 1);
    // The refusal is cached: asking again does not reach Keystone.
    assert!(matches!(
        auth.validate("no-such-token").await,
        Err(KeystoneError::InvalidToken)
    ));
    assert_eq!(ks.validations(), 1);
    assert_eq!(auth.cached_tokens().await, 1);
}

#[tokio::test]
async fn expired_token_is_unauthorized() {
    let ks = FakeKeystone::start().await;
    ks.user_token("tok-old", Some("p1"), &["member"], TimeDelta::seconds(-5))
        .await;
    let auth = KeystoneAuth::new(config(&ks.url)).expect("auth");
    let err = auth
        .authenticate(&headers("tok-old"))
        .await
        .expect_err("expired");
    assert_eq!(err.message, UNAUTHORIZED);
    let err = auth
        .authenticate(&headers("tok-old"))
        .await
        .expect_err("still expired");
    assert_eq!(err.message, UNAUTHORIZED);
    assert_eq!(ks.validations(), 1, "the refusal is cached");
}

#[tokio::test]
async fn cache_hit_avoids_a_second_validation() {
    let ks = FakeKeystone::start().await;
    ks.user_token("tok", Some("p1"), &["member"], TimeDelta::hours(1))
        .await;
    let auth = KeystoneAuth::new(config(&ks.url)).expect("auth");
    for _ in 0..3 {
        let ctx = auth.authenticate(&headers("tok")).await.expect("valid");
        assert_eq!(ctx.project_id.as_deref(), Some("p1"));
    }
    assert_eq!(ks.validations(), 1);

    // Without a cache every request is validated.
    let mut cfg = config(&ks.url);
    cfg.cache_ttl = Duration::ZERO;
    let uncached = KeystoneAuth::new(cfg).expect("auth");
    uncached.authenticate(&headers("tok")).await.expect("valid");
    uncached.authenticate(&headers("tok")).await.expect("valid");
    assert_eq!(ks.validations(), 3);
}

#[tokio::test]
async fn concurrent_first_requests_make_one_keystone_call() {
    let ks = FakeKeystone::start().await;
    ks.user_token("tok", Some("p1"), &["member"], TimeDelta::hours(1))
        .await;
    let auth = Arc::new(KeystoneAuth::new(config(&ks.url)).expect("auth"));
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let auth = auth.clone();
            tokio::spawn(async move { auth.validate("tok").await })
        })
        .collect();
    for t in tasks {
        assert_eq!(
            t.await.expect("join").expect("valid").project_id.as_deref(),
            Some("p1")
        );
    }
    assert_eq!(ks.validations(), 1);
    assert_eq!(ks.password_auths(), 1);
    assert!(
        auth.inflight.lock().await.is_empty(),
        "gates are cleaned up"
    );
}

#[tokio::test]
async fn cache_entry_ends_at_the_token_expiry() {
    let ks = FakeKeystone::start().await;
    ks.user_token("short", Some("p1"), &["member"], TimeDelta::seconds(90))
        .await;
    ks.user_token("long", Some("p1"), &["member"], TimeDelta::hours(5))
        .await;
    let auth = KeystoneAuth::new(config(&ks.url)).expect("auth");
    let short = auth.validate("short").await.expect("valid");
    let long = auth.validate("long").await.expect("valid");
    let cache = auth.cache.lock().await;
    assert_eq!(
        cache["short"].until, short.expires_at,
        "bounded by the token's own expiry"
    );
    assert!(
        cache["long"].until < long.expires_at,
        "bounded by cache_ttl"
    );
    assert!(cache["long"].until <= Utc::now() + TimeDelta::seconds(300));
    assert_eq!(cache["short"].token.as_ref(), Some(&short));
}

#[tokio::test]
async fn cache_is_bounded() {
    let ks = FakeKeystone::start().await;
    let mut cfg = config(&ks.url);
    cfg.cache_max_entries = 3;
    let auth = KeystoneAuth::new(cfg).expect("auth");
    for i in 0..10 {
        let token = format!("tok-{i}");
        ks.user_token(&token, Some("p1"), &["member"], TimeDelta::minutes(10 + i))
            .await;
        auth.validate(&token).await.expect("valid");
        assert!(auth.cached_tokens().await <= 3);
    }
    // The newest token is always kept.
    assert!(auth.cache.lock().await.contains_key("tok-9"));
}

#[tokio::test]
async fn service_token_is_renewed_once_on_401() {
    let ks = FakeKeystone::start().await;
    ks.user_token("t1", Some("p1"), &["member"], TimeDelta::hours(1))
        .await;
    ks.user_token("t2", Some("p1"), &["member"], TimeDelta::hours(1))
        .await;
    let auth = KeystoneAuth::new(config(&ks.url)).expect("auth");
    auth.validate("t1").await.expect("valid");
    assert_eq!(ks.password_auths(), 1);
    ks.revoke_service_tokens().await;
    let ctx = auth
        .authenticate(&headers("t2"))
        .await
        .expect("valid after renewal");
    assert_eq!(ctx.project_id.as_deref(), Some("p1"));
    assert_eq!(ks.password_auths(), 2);
    assert_eq!(
        ks.validations(),
        3,
        "one refused validation, then the retry"
    );
}

#[tokio::test]
async fn concurrent_refusals_renew_the_service_token_once() {
    let ks = FakeKeystone::start().await;
    ks.user_token("t0", Some("p1"), &["member"], TimeDelta::hours(1))
        .await;
    for i in 1..=8 {
        ks.user_token(
            &format!("t{i}"),
            Some("p1"),
            &["member"],
            TimeDelta::hours(1),
        )
        .await;
    }
    let auth = Arc::new(KeystoneAuth::new(config(&ks.url)).expect("auth"));
    auth.validate("t0").await.expect("valid");
    ks.revoke_service_tokens().await;
    // Eight requests all see the revoked service token refused: the first to get the lock
    // renews it, the others use that renewal instead of authenticating again each (every
    // password authentication is a slow hash on Keystone's side).
    let tasks: Vec<_> = (1..=8)
        .map(|i| {
            let auth = auth.clone();
            tokio::spawn(async move { auth.validate(&format!("t{i}")).await })
        })
        .collect();
    for t in tasks {
        t.await.expect("task").expect("valid after renewal");
    }
    assert_eq!(ks.password_auths(), 2, "one renewal for all eight");
}

#[tokio::test]
async fn service_token_is_renewed_before_it_expires() {
    let ks = FakeKeystone::start().await;
    // 30 s is inside the renewal margin: every use renews it.
    *ks.state.service_lifetime.lock().await = Some(TimeDelta::seconds(30));
    ks.user_token("t1", Some("p1"), &["member"], TimeDelta::hours(1))
        .await;
    ks.user_token("t2", Some("p1"), &["member"], TimeDelta::hours(1))
        .await;
    let auth = KeystoneAuth::new(config(&ks.url)).expect("auth");
    auth.validate("t1").await.expect("valid");
    auth.validate("t2").await.expect("valid");
    assert_eq!(ks.password_auths(), 2);

    // A long-lived one is reused.
    *ks.state.service_lifetime.lock().await = Some(TimeDelta::hours(1));
    let auth = KeystoneAuth::new(config(&ks.url)).expect("auth");
    auth.validate("t1").await.expect("valid");
    auth.validate("t2").await.expect("valid");
    assert_eq!(ks.password_auths(), 3);
}

#[tokio::test]
async fn bad_service_credentials_never_leak_the_password() {
    let ks = FakeKeystone::start().await;
    ks.user_token("t1", Some("p1"), &["member"], TimeDelta::hours(1))
        .await;
    let mut cfg = config(&ks.url);
    cfg.password = Secret::new("wrong-password-123");
    let auth = KeystoneAuth::new(cfg.clone()).expect("auth");
    let err = auth.validate("t1").await.expect_err("service auth fails");
    assert!(
        matches!(err, KeystoneError::ServiceAuth { status: 401, .. }),
        "{err:?}"
    );
    assert!(!err.is_client_error());
    let shown = format!("{err} {err:?} {cfg:?} {auth:?}");
    assert!(!shown.contains("wrong-password-123"), "{shown}");
    assert!(!shown.contains("t1"), "{shown}");
    let err = auth
        .authenticate(&headers("t1"))
        .await
        .expect_err("503-style refusal");
    assert_eq!(
        err.message,
        "The Keystone service is temporarily unavailable."
    );
    assert_eq!(err.kind, crate::context::AuthFailure::Unavailable);
}

#[tokio::test]
async fn unreachable_keystone_is_not_a_client_error() {
    // Bind then drop a listener: nothing listens on that port any more.
    let port = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        l.local_addr().expect("addr").port()
    };
    let auth = KeystoneAuth::new(config(&format!("http://127.0.0.1:{port}/v3"))).expect("auth");
    let err = auth.validate("t1").await.expect_err("unreachable");
    assert!(
        matches!(
            err,
            KeystoneError::Unreachable {
                operation: "authenticate",
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn scope_enforcement_strips_roles_of_system_tokens() {
    let ks = FakeKeystone::start().await;
    ks.user_token("sys", Some("system"), &["admin"], TimeDelta::hours(1))
        .await;
    let auth = KeystoneAuth::new(config(&ks.url)).expect("auth");
    let v = auth.validate("sys").await.expect("valid");
    assert_eq!(v.system_scope.as_deref(), Some("all"));
    let ctx = auth.context(&v);
    assert!(ctx.roles.is_empty() && !ctx.is_admin && ctx.project_id.is_none());

    let mut cfg = config(&ks.url);
    cfg.policy.enforce_scope = false;
    let lax = KeystoneAuth::new(cfg).expect("auth");
    assert!(lax.context(&v).is_admin);
}

#[test]
fn credentials_in_the_url_are_refused_and_never_shown() {
    let cfg = config("http://admin:hunter2@keystone:5000/v3");
    assert!(!format!("{cfg:?}").contains("hunter2"));
    let err = KeystoneAuth::new(cfg).expect_err("userinfo");
    let shown = format!("{err} {err:?}");
    assert!(shown.contains("credentials in the URL"), "{shown}");
    assert!(!shown.contains("hunter2"), "{shown}");
    let err = KeystoneAuth::new(config("gopher://u:hunter2@x/")).expect_err("scheme");
    assert!(!format!("{err}").contains("hunter2"));
}

#[test]
fn empty_settings_are_refused() {
    let mut cfg = config("http://127.0.0.1:1/v3");
    cfg.password = Secret::new("");
    assert!(matches!(
        KeystoneAuth::new(cfg),
        Err(KeystoneError::MissingSetting("password"))
    ));
    let mut cfg = config("http://127.0.0.1:1/v3");
    cfg.username = " ".into();
    assert!(matches!(
        KeystoneAuth::new(cfg),
        Err(KeystoneError::MissingSetting("username"))
    ));
    assert!(matches!(
        KeystoneAuth::new(config("")),
        Err(KeystoneError::InvalidUrl { .. })
    ));
}

#[test]
fn deprecated_admin_role_is_admin_only_with_legacy_rules() {
    let token = ValidatedToken {
        user_id: "u".into(),
        user_name: None,
        project_id: Some("p1".into()),
        project_name: None,
        domain_id: None,
        system_scope: None,
        roles: vec!["load-balancer_admin".into()],
        expires_at: Utc::now(),
    };
    let auth = KeystoneAuth::new(config("http://127.0.0.1:1/v3")).expect("auth");
    assert!(auth.context(&token).is_admin);
    let mut cfg = config("http://127.0.0.1:1/v3");
    cfg.policy.enforce_new_defaults = true;
    let strict = KeystoneAuth::new(cfg).expect("auth");
    assert!(!strict.context(&token).is_admin);
}

fn check_url(input: &str, expect: Result<&str, ()>) {
    let got = v3_url(input).map_err(|_| ());
    assert_eq!(
        got.as_deref(),
        expect.as_deref().map_err(|_| &()),
        "{input}"
    );
}

#[test]
fn auth_url_is_mapped_to_v3() {
    check_url("http://keystone:5000/v3", Ok("http://keystone:5000/v3"));
    check_url("http://keystone:5000/v3/", Ok("http://keystone:5000/v3"));
    check_url("http://keystone:5000/v2.0", Ok("http://keystone:5000/v3"));
    check_url("http://keystone:5000/v2.0/", Ok("http://keystone:5000/v3"));
    check_url(
        "https://cloud.example/identity",
        Ok("https://cloud.example/identity/v3"),
    );
    check_url(
        "https://cloud.example/identity/v2.0",
        Ok("https://cloud.example/identity/v3"),
    );
    check_url("http://keystone:5000", Ok("http://keystone:5000/v3"));
    check_url("ftp://keystone/v3", Err(()));
    check_url("keystone:5000", Err(()));
    check_url("not a url", Err(()));
    check_url("http://keystone:5000/v3?x=1", Err(()));
}

#[test]
fn parse_token_reads_keystone_bodies() {
    let body = br#"{"token": {"expires_at": "2030-01-02T03:04:05.000000Z", "methods": ["token"],
        "user": {"id": "u1", "name": "alice", "domain": {"id": "default"}},
        "project": {"id": "p1", "name": "demo", "domain": {"id": "default"}},
        "roles": [{"id": "r1", "name": "Member"}, {"id": "r2", "name": "reader"}],
        "catalog": []}}"#;
    let t = parse_token(body).expect("parse");
    assert_eq!(t.user_id, "u1");
    assert_eq!(t.user_name.as_deref(), Some("alice"));
    assert_eq!(t.project_id.as_deref(), Some("p1"));
    assert_eq!(t.project_name.as_deref(), Some("demo"));
    assert_eq!(t.roles, vec!["member", "reader"]);
    assert_eq!(t.expires_at.to_rfc3339(), "2030-01-02T03:04:05+00:00");

    let domain = br#"{"token": {"expires_at": "2030-01-02T03:04:05Z", "user": {"id": "u1"},
        "domain": {"id": "d1", "name": "Default"}, "roles": []}}"#;
    let t = parse_token(domain).expect("parse");
    assert_eq!((t.project_id, t.domain_id.as_deref()), (None, Some("d1")));

    for bad in [
        &b"not json"[..],
        br#"{"token": {}}"#,
        br#"{"token": {"expires_at": "soon", "user": {"id": "u"}}}"#,
        br#"{"token": {"expires_at": "2030-01-02T03:04:05Z", "user": {"name": "no id"}}}"#,
    ] {
        assert!(matches!(parse_token(bad), Err(KeystoneError::Malformed(_))));
    }
}
