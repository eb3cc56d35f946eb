//! Barbican's default policy on klb's `/v1/secrets` and `/v1/containers` in Keystone mode:
//! the real `KeystoneAuth` against an in-test Keystone v3 (service token + token validation
//! from a table), Octavia's policy on the LB API, one request per role and operation.
//!
//! Project `p1` owns the objects, created by alice (`member`). Who may do what (Barbican 23's
//! new defaults, no ACLs):
//!
//! | caller                         | list | create | show | payload | delete |
//! |--------------------------------|------|--------|------|---------|--------|
//! | member of p1 (creator or not)  | 200  | 201    | 200  | 200     | 204    |
//! | admin of p1                    | 200  | 201    | 200  | 200     | 204    |
//! | reader of p1 (even the creator)| 403  | 403    | 403  | 403     | 403    |
//! | unrelated role in p1           | 403  | 403    | 403  | 403     | 403    |
//! | member of p2                   | own  | 201    | 403  | 403     | 403    |
//! | admin of p2 (secrets)          | own  | 201    | 200  | 403     | 204    |
//! | admin of p2 (containers)       | own  | 201    | 403  | -       | 403    |
//! | system-scoped admin            | 403  | 403    | 403  | 403     | 403    |

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use chrono::{TimeDelta, Utc};
use klb_api::AppState;
use klb_api::auth::Secret;
use klb_api::auth::keystone::{KeystoneAuth, KeystoneConfig};
use klb_api::auth::policy::{OctaviaPolicy, PolicyOptions};
use klb_certs::LocalSecrets;
use klb_store::Store;
use serde_json::{Value, json};
use tower::ServiceExt;

const HOST: &str = "198.18.0.1:9876";
const SECRET_TEXT: &str = "-----BEGIN PRIVATE KEY-----not really-----END PRIVATE KEY-----";

/// A user token: user id, project (`"system"` for a system-scoped token), roles.
type UserToken = (&'static str, &'static str, &'static [&'static str]);

/// token → (user, project, roles).
fn users() -> HashMap<&'static str, UserToken> {
    HashMap::from([
        ("alice", ("alice-id", "p1", &["member", "reader"][..])),
        ("bob", ("bob-id", "p1", &["member", "reader"][..])),
        ("rita", ("rita-id", "p1", &["reader"][..])),
        // The creator, holding only `reader` now.
        ("alice-reader", ("alice-id", "p1", &["reader"][..])),
        // Keystone's implied roles: admin ⇒ member ⇒ reader.
        (
            "adam",
            ("adam-id", "p1", &["admin", "member", "reader"][..]),
        ),
        // Barbican's deprecated `creator` role counts for nothing under the new defaults, nor
        // does an Octavia role.
        ("cora", ("cora-id", "p1", &["creator"][..])),
        ("lbm", ("lbm-id", "p1", &["load-balancer_member"][..])),
        ("carol", ("carol-id", "p2", &["member", "reader"][..])),
        (
            "odin",
            ("odin-id", "p2", &["admin", "member", "reader"][..]),
        ),
        (
            "sys",
            ("sys-id", "system", &["admin", "member", "reader"][..]),
        ),
    ])
}

/// The in-test Keystone: `POST /v3/auth/tokens` issues klb's service token, `GET` validates
/// a user token from [`users`].
async fn fake_keystone() -> (String, tokio::task::JoinHandle<()>) {
    fn body(user: &str, project: &str, roles: &[&str]) -> Value {
        let mut token = json!({
            "methods": ["password"],
            "user": {"id": user, "name": user, "domain": {"id": "default", "name": "Default"}},
            "expires_at": (Utc::now() + TimeDelta::hours(1))
                .format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
            "issued_at": Utc::now().format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
            "roles": roles.iter().map(|r| json!({"id": format!("{r}-id"), "name": r}))
                .collect::<Vec<_>>(),
        });
        if project == "system" {
            token["system"] = json!({"all": true});
        } else {
            token["project"] = json!({"id": project, "name": project, "domain": {"id": "default"}});
        }
        json!({ "token": token })
    }
    async fn issue() -> Response {
        let mut resp = (
            StatusCode::CREATED,
            axum::Json(body("klb", "service", &["service"])),
        )
            .into_response();
        resp.headers_mut()
            .insert("X-Subject-Token", "svc-token".parse().unwrap());
        resp
    }
    async fn validate(
        State(users): State<Arc<HashMap<&'static str, UserToken>>>,
        headers: HeaderMap,
    ) -> Response {
        let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("");
        if header("x-auth-token") != "svc-token" {
            return StatusCode::UNAUTHORIZED.into_response();
        }
        match users.get(header("x-subject-token")) {
            Some((user, project, roles)) => axum::Json(body(user, project, roles)).into_response(),
            None => StatusCode::NOT_FOUND.into_response(),
        }
    }
    let app = Router::new()
        .route("/v3/auth/tokens", post(issue).get(validate))
        .with_state(Arc::new(users()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v3", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, task)
}

struct Env {
    app: Router,
    _keystone: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Drop for Env {
    fn drop(&mut self) {
        self._keystone.abort();
    }
}

/// klb's secrets API wired as `klb serve` wires it for `auth_strategy = "keystone"`.
async fn keystone_app() -> Env {
    let (url, keystone) = fake_keystone().await;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&format!("sqlite://{}", dir.path().join("k.db").display()))
        .await
        .unwrap();
    let cfg = KeystoneConfig::new(url, "klb", Secret::new("service-password"), "service");
    let mut state = AppState::new(store.clone(), Arc::new(KeystoneAuth::new(cfg).unwrap()));
    state.policy = Arc::new(OctaviaPolicy::new(PolicyOptions::default()));
    Env {
        app: klb_control::secrets_api::router(state, LocalSecrets::new(store)),
        _keystone: keystone,
        _dir: dir,
    }
}

async fn call(
    env: &Env,
    method: &str,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (StatusCode, String) {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", HOST)
        .header("x-auth-token", token)
        .header("content-type", "application/json")
        .body(
            body.map(|b| Body::from(b.to_string()))
                .unwrap_or_else(Body::empty),
        )
        .unwrap();
    let resp = env.app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

fn path_of(r: &str) -> String {
    r.trim_start_matches(&format!("http://{HOST}")).to_owned()
}

fn secret_body() -> Value {
    json!({"name": "key", "payload": SECRET_TEXT, "payload_content_type": "text/plain"})
}

/// A secret stored by alice in p1; its path.
async fn alice_secret(env: &Env) -> String {
    let (st, b) = call(env, "POST", "/v1/secrets", "alice", Some(secret_body())).await;
    assert_eq!(st, StatusCode::CREATED, "{b}");
    let v: Value = serde_json::from_str(&b).unwrap();
    path_of(v["secret_ref"].as_str().unwrap())
}

/// A generic container stored by alice in p1 holding one of her secrets; its path.
async fn alice_container(env: &Env) -> String {
    let secret = format!("http://{HOST}{}", alice_secret(env).await);
    let (st, b) = call(
        env,
        "POST",
        "/v1/containers",
        "alice",
        Some(json!({"type": "generic", "name": "c",
                    "secret_refs": [{"name": "k", "secret_ref": secret}]})),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{b}");
    let v: Value = serde_json::from_str(&b).unwrap();
    path_of(v["container_ref"].as_str().unwrap())
}

/// A refusal is the API's 403 fault and never carries the key material.
fn assert_forbidden(who: &str, what: &str, (st, b): (StatusCode, String)) {
    assert_eq!(st, StatusCode::FORBIDDEN, "{who} {what}: {b}");
    let v: Value = serde_json::from_str(&b).unwrap();
    assert_eq!(
        v["faultstring"], "Policy does not allow this request to be performed.",
        "{who} {what}"
    );
    assert!(!b.contains("PRIVATE KEY"), "{who} {what}: {b}");
}

/// What a caller may do, per operation (true: allowed).
#[derive(Debug, Clone, Copy)]
struct Grants {
    list: bool,
    create: bool,
    show: bool,
    payload: bool,
    delete: bool,
}

const ALL: Grants = Grants {
    list: true,
    create: true,
    show: true,
    payload: true,
    delete: true,
};
const NONE: Grants = Grants {
    list: false,
    create: false,
    show: false,
    payload: false,
    delete: false,
};
/// Another project's member: its own list and creates only.
const OTHER_PROJECT: Grants = Grants {
    list: true,
    create: true,
    show: false,
    payload: false,
    delete: false,
};

async fn check_secrets(env: &Env, who: &str, g: Grants) {
    let own_project = users()[who].1 == "p1";
    let s = alice_secret(env).await;
    // List: 200 with the project's secrets (p1's only to p1's callers), else 403.
    let r = call(env, "GET", "/v1/secrets", who, None).await;
    if g.list {
        assert_eq!(r.0, StatusCode::OK, "{who} list: {}", r.1);
        let v: Value = serde_json::from_str(&r.1).unwrap();
        let listed = v["secrets"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["secret_ref"].as_str().unwrap().ends_with(&s));
        assert_eq!(listed, own_project, "{who} list: {}", r.1);
        assert!(!r.1.contains("PRIVATE KEY"), "{who} list");
    } else {
        assert_forbidden(who, "list", r);
    }
    // Create.
    let r = call(env, "POST", "/v1/secrets", who, Some(secret_body())).await;
    if g.create {
        assert_eq!(r.0, StatusCode::CREATED, "{who} create: {}", r.1);
        let v: Value = serde_json::from_str(&r.1).unwrap();
        let mine = path_of(v["secret_ref"].as_str().unwrap());
        let (st, b) = call(env, "GET", &mine, who, None).await;
        assert_eq!(st, StatusCode::OK, "{who} shows its own secret: {b}");
        let v: Value = serde_json::from_str(&b).unwrap();
        assert_eq!(v["creator_id"], users()[who].0, "{who}: {b}");
    } else {
        assert_forbidden(who, "create", r);
    }
    // Show (metadata only, with alice as the creator).
    let r = call(env, "GET", &s, who, None).await;
    if g.show {
        assert_eq!(r.0, StatusCode::OK, "{who} show: {}", r.1);
        let v: Value = serde_json::from_str(&r.1).unwrap();
        assert_eq!(v["creator_id"], "alice-id", "{who} show");
        assert!(!r.1.contains("PRIVATE KEY"), "{who} show");
    } else {
        assert_forbidden(who, "show", r);
    }
    // Payload.
    let r = call(env, "GET", &format!("{s}/payload"), who, None).await;
    if g.payload {
        assert_eq!((r.0, r.1.as_str()), (StatusCode::OK, SECRET_TEXT), "{who}");
    } else {
        assert_forbidden(who, "payload", r);
    }
    // Delete; a refused delete leaves the secret in place.
    let r = call(env, "DELETE", &s, who, None).await;
    if g.delete {
        assert_eq!(r.0, StatusCode::NO_CONTENT, "{who} delete: {}", r.1);
        assert_eq!(
            call(env, "GET", &s, "alice", None).await.0,
            StatusCode::NOT_FOUND,
            "{who} deleted it"
        );
    } else {
        assert_forbidden(who, "delete", r);
        assert_eq!(
            call(env, "GET", &format!("{s}/payload"), "alice", None)
                .await
                .0,
            StatusCode::OK,
            "{who}'s refused delete kept it"
        );
    }
}

async fn check_containers(env: &Env, who: &str, g: Grants) {
    let own_project = users()[who].1 == "p1";
    let c = alice_container(env).await;
    let r = call(env, "GET", "/v1/containers", who, None).await;
    if g.list {
        assert_eq!(r.0, StatusCode::OK, "{who} list: {}", r.1);
        let v: Value = serde_json::from_str(&r.1).unwrap();
        let listed = v["containers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["container_ref"].as_str().unwrap().ends_with(&c));
        assert_eq!(listed, own_project, "{who} list: {}", r.1);
    } else {
        assert_forbidden(who, "list containers", r);
    }
    let r = call(
        env,
        "POST",
        "/v1/containers",
        who,
        Some(json!({"type": "generic", "name": "mine"})),
    )
    .await;
    if g.create {
        assert_eq!(r.0, StatusCode::CREATED, "{who} create: {}", r.1);
        let v: Value = serde_json::from_str(&r.1).unwrap();
        let mine = path_of(v["container_ref"].as_str().unwrap());
        let (st, b) = call(env, "GET", &mine, who, None).await;
        assert_eq!(st, StatusCode::OK, "{who} shows its own container: {b}");
        let v: Value = serde_json::from_str(&b).unwrap();
        assert_eq!(v["creator_id"], users()[who].0, "{who}: {b}");
    } else {
        assert_forbidden(who, "create container", r);
    }
    let r = call(env, "GET", &c, who, None).await;
    if g.show {
        assert_eq!(r.0, StatusCode::OK, "{who} show: {}", r.1);
        let v: Value = serde_json::from_str(&r.1).unwrap();
        assert_eq!(v["creator_id"], "alice-id", "{who} show");
    } else {
        assert_forbidden(who, "show container", r);
    }
    let r = call(env, "DELETE", &c, who, None).await;
    if g.delete {
        assert_eq!(r.0, StatusCode::NO_CONTENT, "{who} delete: {}", r.1);
        assert_eq!(
            call(env, "GET", &c, "alice", None).await.0,
            StatusCode::NOT_FOUND
        );
    } else {
        assert_forbidden(who, "delete container", r);
        assert_eq!(
            call(env, "GET", &c, "alice", None).await.0,
            StatusCode::OK,
            "{who}'s refused delete kept it"
        );
    }
}

#[tokio::test]
async fn members_and_admins_of_the_project_may_do_everything() {
    let env = keystone_app().await;
    for who in ["alice", "adam"] {
        check_secrets(&env, who, ALL).await;
        check_containers(&env, who, ALL).await;
    }
}

#[tokio::test]
async fn another_member_has_the_creators_rights() {
    // No ACLs: Barbican's project access lets every member of the project read, decrypt and
    // delete what another member created.
    let env = keystone_app().await;
    check_secrets(&env, "bob", ALL).await;
    check_containers(&env, "bob", ALL).await;
}

#[tokio::test]
async fn a_reader_gets_no_private_key_and_cannot_store_one() {
    // Issue 11: a `reader` token read key material and stored secrets.
    let env = keystone_app().await;
    let s = alice_secret(&env).await;
    assert_forbidden(
        "rita",
        "payload",
        call(&env, "GET", &format!("{s}/payload"), "rita", None).await,
    );
    assert_forbidden(
        "rita",
        "create",
        call(&env, "POST", "/v1/secrets", "rita", Some(secret_body())).await,
    );
    let c = format!("http://{HOST}{s}");
    let body = json!({"type": "certificate",
                      "secret_refs": [{"name": "certificate", "secret_ref": c}]});
    assert_forbidden(
        "rita",
        "create container",
        call(&env, "POST", "/v1/containers", "rita", Some(body)).await,
    );
}

#[tokio::test]
async fn readers_get_neither_payloads_nor_anything_else() {
    let env = keystone_app().await;
    check_secrets(&env, "rita", NONE).await;
    check_containers(&env, "rita", NONE).await;
}

#[tokio::test]
async fn being_the_creator_grants_nothing_without_member() {
    let env = keystone_app().await;
    check_secrets(&env, "alice-reader", NONE).await;
    check_containers(&env, "alice-reader", NONE).await;
}

#[tokio::test]
async fn unrelated_roles_get_nothing() {
    let env = keystone_app().await;
    for who in ["cora", "lbm"] {
        check_secrets(&env, who, NONE).await;
        check_containers(&env, who, NONE).await;
    }
}

#[tokio::test]
async fn system_scoped_tokens_get_nothing() {
    let env = keystone_app().await;
    check_secrets(&env, "sys", NONE).await;
    check_containers(&env, "sys", NONE).await;
}

#[tokio::test]
async fn another_projects_member_sees_only_its_own() {
    // Barbican finds the object, then refuses: 403, where an unknown id is 404.
    let env = keystone_app().await;
    check_secrets(&env, "carol", OTHER_PROJECT).await;
    check_containers(&env, "carol", OTHER_PROJECT).await;
    let missing = uuid::Uuid::new_v4();
    for who in ["alice", "rita", "carol", "odin"] {
        for (method, path) in [
            ("GET", format!("/v1/secrets/{missing}")),
            ("GET", format!("/v1/secrets/{missing}/payload")),
            ("DELETE", format!("/v1/secrets/{missing}")),
            ("GET", format!("/v1/containers/{missing}")),
            ("DELETE", format!("/v1/containers/{missing}")),
            ("GET", "/v1/secrets/not-a-uuid".to_owned()),
        ] {
            assert_eq!(
                call(&env, method, &path, who, None).await.0,
                StatusCode::NOT_FOUND,
                "{who} {method} {path}"
            );
        }
    }
    assert_eq!(
        call(&env, "GET", "/v1/secrets", "no-such-token", None)
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn another_projects_admin_reads_and_deletes_secret_metadata_but_no_payload() {
    // Barbican's `secret:get` and `secret:delete` allow a bare `role:admin`; `secret:decrypt`
    // and the container rules want the admin of the object's project.
    let env = keystone_app().await;
    check_secrets(
        &env,
        "odin",
        Grants {
            show: true,
            delete: true,
            ..OTHER_PROJECT
        },
    )
    .await;
    check_containers(&env, "odin", OTHER_PROJECT).await;
}
