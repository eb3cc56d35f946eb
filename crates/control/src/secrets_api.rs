//! The subset of Barbican's v1 API that tenants need to hand TLS certificates to klb on the
//! local cloud: secrets (one-step create with the payload, show, list, payload, delete) and
//! certificate containers (create, show, list, delete). Served on the API's port and
//! authenticated like the LB API; every object belongs to the project it was created in. The
//! refs it returns (`http://HOST/v1/secrets/UUID`) are what listeners and pools take in
//! `*_tls_container_ref`.
//!
//! Authorization ([`SecretsPolicy`]) follows the LB API's: where that enforces roles (Keystone
//! with Octavia's policy) Barbican's default policy applies, with its new defaults
//! (`barbican/common/policies/{base,secrets,containers}.py`, Barbican 23.0.0): listing and
//! creating need `member`; a secret's metadata and its deletion need `member` of its project
//! or `admin` (of any project, as Barbican's bare `role:admin`); its payload needs `member` or
//! `admin` of its project; a container's show and delete need `member` or `admin` of its
//! project. `reader` and other roles get 403, as does another project's member (Barbican finds
//! the object, then refuses). klb has no ACLs, so every object is readable by its project
//! (Barbican's default `project_access`) and the creator clause (`member` and `creator_id`)
//! grants nothing more. Where the LB API enforces no roles (noauth) every caller may do
//! everything in its own project and another project's ids answer 404.

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use klb_api::{Action, ApiError, ApiResult, AppState, Denied, Op, RequestContext, Resource};
use klb_certs::{ContainerMeta, LocalSecrets, NewContainer, NewSecret, SecretMeta, SecretsError};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

/// Handlers' state: the API state (authentication), the secret store and the policy.
#[derive(Clone)]
struct SecretsState {
    api: AppState,
    secrets: LocalSecrets,
    policy: SecretsPolicy,
}

/// Barbican's policy rules for what klb serves (`secrets.py`, `containers.py`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// `secrets:get`: list the project's secrets.
    SecretsGet,
    /// `secrets:post`: store a secret.
    SecretsPost,
    /// `secret:get`: a secret's metadata.
    SecretGet,
    /// `secret:decrypt`: a secret's payload.
    SecretDecrypt,
    /// `secret:delete`.
    SecretDelete,
    /// `containers:get`: list the project's containers.
    ContainersGet,
    /// `containers:post`: store a container.
    ContainersPost,
    /// `container:get`.
    ContainerGet,
    /// `container:delete`.
    ContainerDelete,
}

impl Rule {
    /// Barbican's rule name.
    pub fn name(self) -> &'static str {
        match self {
            Rule::SecretsGet => "secrets:get",
            Rule::SecretsPost => "secrets:post",
            Rule::SecretGet => "secret:get",
            Rule::SecretDecrypt => "secret:decrypt",
            Rule::SecretDelete => "secret:delete",
            Rule::ContainersGet => "containers:get",
            Rule::ContainersPost => "containers:post",
            Rule::ContainerGet => "container:get",
            Rule::ContainerDelete => "container:delete",
        }
    }
}

/// The object a rule is checked on (Barbican's `target.secret.*`, `target.container.*`).
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// Owning project.
    pub project_id: &'a str,
    /// The user who created it, when recorded.
    pub creator_id: Option<&'a str>,
}

/// Who may do what on `/v1/secrets` and `/v1/containers` (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretsPolicy {
    /// No roles enforced (noauth): a caller may do everything in its own project; another
    /// project's objects answer 404.
    ProjectScope,
    /// Barbican's default policy (new defaults) on the caller's Keystone roles.
    Barbican,
}

impl SecretsPolicy {
    /// The policy that matches the LB API's: if its configured policy lets a caller with no
    /// role create a load balancer in its own project ([`klb_api::ScopePolicy`], noauth), roles
    /// are not enforced here either; otherwise (Octavia's policy, Keystone) Barbican's are.
    pub fn for_api(api: &AppState) -> SecretsPolicy {
        const PROBE: &str = "policy-probe";
        let roleless = RequestContext::new(Some(PROBE.to_owned()), Vec::new(), false)
            .with_policy(api.policy.clone());
        let create = Action::new(Resource::LoadBalancer, Op::Post);
        if roleless.authorize(create, Some(PROBE)).is_ok() {
            SecretsPolicy::ProjectScope
        } else {
            SecretsPolicy::Barbican
        }
    }

    /// Decides `rule` for `ctx` on `target` (`None` for the collection rules, which act on
    /// the caller's own project).
    pub fn check(
        self,
        ctx: &RequestContext,
        rule: Rule,
        target: Option<Target<'_>>,
    ) -> Result<(), Denied> {
        match self {
            SecretsPolicy::ProjectScope => match target {
                Some(t) if ctx.project_id.as_deref() != Some(t.project_id) => {
                    Err(Denied::NotVisible)
                }
                _ => Ok(()),
            },
            SecretsPolicy::Barbican => {
                if barbican_allows(ctx, rule, target) {
                    Ok(())
                } else {
                    Err(Denied::Forbidden)
                }
            }
        }
    }
}

/// Barbican's new-default check strings (`True:%(enforce_new_defaults)s and (...)`), with
/// oslo.policy's case-insensitive role match.
fn barbican_allows(ctx: &RequestContext, rule: Rule, target: Option<Target<'_>>) -> bool {
    let role = |name: &str| ctx.roles.iter().any(|r| r.eq_ignore_ascii_case(name));
    // `*_project_match`: `project_id:%(target.*.project_id)s`.
    let project_match = target.is_some_and(|t| ctx.project_id.as_deref() == Some(t.project_id));
    // `*_owner`: `user_id:%(target.*.creator_id)s`; an unrecorded creator matches no one.
    let owner = matches!(
        (ctx.user_id.as_deref(), target.and_then(|t| t.creator_id)),
        (Some(u), Some(c)) if u == c
    );
    // klb has no ACLs: every object is readable by its project (`*_is_not_private`, Barbican's
    // default `project_access`) and no ACL lists the caller (`*_acl_read`).
    let is_not_private = true;
    let acl_read = false;
    let project_admin = role("admin") && project_match;
    let project_member = role("member") && project_match;
    // `(rule:*_project_member and rule:*_owner) or (rule:*_project_member and
    // rule:*_is_not_private)`.
    let member_access = project_member && (owner || is_not_private);
    match rule {
        Rule::SecretsGet | Rule::SecretsPost | Rule::ContainersGet | Rule::ContainersPost => {
            role("member")
        }
        Rule::SecretDecrypt | Rule::ContainerGet => project_admin || member_access || acl_read,
        Rule::SecretGet => role("admin") || project_admin || member_access || acl_read,
        Rule::SecretDelete => role("admin") || project_admin || member_access,
        Rule::ContainerDelete => project_admin || member_access,
    }
}

/// The `/v1/secrets` and `/v1/containers` routes, with the policy matching the LB API's
/// ([`SecretsPolicy::for_api`]).
pub fn router(api: AppState, secrets: LocalSecrets) -> Router {
    let policy = SecretsPolicy::for_api(&api);
    Router::new()
        .route("/v1", get(version))
        .route("/v1/", get(version))
        .route("/v1/secrets", get(list_secrets).post(create_secret))
        .route("/v1/secrets/{id}", get(show_secret).delete(delete_secret))
        .route("/v1/secrets/{id}/payload", get(secret_payload))
        .route(
            "/v1/containers",
            get(list_containers).post(create_container),
        )
        .route(
            "/v1/containers/{id}",
            get(show_container).delete(delete_container),
        )
        .layer(axum::extract::DefaultBodyLimit::max(256 * 1024))
        .with_state(SecretsState {
            api,
            secrets,
            policy,
        })
}

/// Context extractor bound to the API state.
struct Caller(RequestContext);

impl axum::extract::FromRequestParts<SecretsState> for Caller {
    type Rejection = ApiError;
    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &SecretsState,
    ) -> Result<Self, Self::Rejection> {
        RequestContext::from_request_parts(parts, &state.api)
            .await
            .map(Caller)
    }
}

impl Caller {
    fn project(&self) -> ApiResult<&str> {
        self.0.project_id.as_deref().ok_or_else(|| {
            ApiError::BadRequest("Secrets belong to a project: the request has none.".into())
        })
    }

    /// The caller's project, once `rule` (a collection rule) allows the request.
    fn project_for(&self, s: &SecretsState, rule: Rule) -> ApiResult<&str> {
        s.policy
            .check(&self.0, rule, None)
            .map_err(|d| denied(d, "Secret"))?;
        self.project()
    }

    /// Checks `rule` on an object (`what` names it in a 404).
    fn authorize(
        &self,
        s: &SecretsState,
        rule: Rule,
        target: Target<'_>,
        what: &str,
    ) -> ApiResult<()> {
        s.policy
            .check(&self.0, rule, Some(target))
            .map_err(|d| denied(d, what))
    }

    fn user(&self) -> Option<&str> {
        self.0.user_id.as_deref()
    }
}

/// 404 for an object the caller may not know about, 403 (the API's policy fault) otherwise.
fn denied(d: Denied, what: &str) -> ApiError {
    match d {
        Denied::NotVisible => not_found(what),
        Denied::Forbidden => ApiError::Forbidden,
    }
}

fn secret_target(m: &SecretMeta) -> Target<'_> {
    Target {
        project_id: &m.project_id,
        creator_id: m.creator_id.as_deref(),
    }
}

fn container_target(c: &ContainerMeta) -> Target<'_> {
    Target {
        project_id: &c.project_id,
        creator_id: c.creator_id.as_deref(),
    }
}

/// The secret `id` (of any project) once `rule` allows it to the caller.
async fn authorized_secret(
    s: &SecretsState,
    caller: &Caller,
    id: &str,
    rule: Rule,
) -> ApiResult<SecretMeta> {
    let id = parse_id(id, "Secret")?;
    let meta = s
        .secrets
        .find_secret(id)
        .await
        .map_err(store_error)?
        .ok_or_else(|| not_found("Secret"))?;
    caller.authorize(s, rule, secret_target(&meta), "Secret")?;
    Ok(meta)
}

/// The container `id` (of any project) once `rule` allows it to the caller.
async fn authorized_container(
    s: &SecretsState,
    caller: &Caller,
    id: &str,
    rule: Rule,
) -> ApiResult<ContainerMeta> {
    let id = parse_id(id, "Container")?;
    let c = s
        .secrets
        .find_container(id)
        .await
        .map_err(store_error)?
        .ok_or_else(|| not_found("Container"))?;
    caller.authorize(s, rule, container_target(&c), "Container")?;
    Ok(c)
}

fn base_url(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            h.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '-' | '[' | ']'))
        })
        .unwrap_or("localhost");
    format!("http://{host}")
}

/// Barbican's v1 version document: SDKs (keystoneauth) discover the endpoint with it.
async fn version(headers: HeaderMap) -> Json<Value> {
    let base = base_url(&headers);
    Json(json!({"version": {
        "id": "v1",
        "status": "CURRENT",
        "min_version": "1.0",
        "max_version": "1.1",
        "links": [{"rel": "self", "href": format!("{base}/v1/")}],
        "media-types": [{"base": "application/json",
                         "type": "application/vnd.openstack.key-manager-v1+json"}],
    }}))
}

fn store_error(e: SecretsError) -> ApiError {
    match e {
        SecretsError::Invalid(m) => ApiError::BadRequest(m),
        SecretsError::Store(e) => e.into(),
    }
}

/// Barbican's 404 for a secret or container (another project's id looks the same).
fn not_found(what: &str) -> ApiError {
    ApiError::NotFound(format!("{what} not found."))
}

fn parse_id(id: &str, what: &str) -> ApiResult<Uuid> {
    Uuid::parse_str(id).map_err(|_| not_found(what))
}

/// 201 with the new object's ref under `key` (`secret_ref`, `container_ref`).
fn created(key: &str, url: String) -> Response {
    (StatusCode::CREATED, Json(json!({ key: url }))).into_response()
}

/// 204 when the project's object was deleted, else 404.
fn deleted(found: bool, what: &str) -> ApiResult<StatusCode> {
    if found {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(not_found(what))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretRequest {
    name: Option<String>,
    payload: Option<String>,
    payload_content_type: Option<String>,
    payload_content_encoding: Option<String>,
    #[serde(default)]
    secret_type: Option<String>,
    // Accepted for compatibility with Barbican clients; klb stores no key metadata.
    #[serde(default)]
    algorithm: Option<String>,
    #[serde(default)]
    bit_length: Option<u32>,
    #[serde(default)]
    mode: Option<String>,
    #[serde(default)]
    expiration: Option<String>,
}

impl std::fmt::Debug for SecretRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretRequest")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

fn json_body<T: serde::de::DeserializeOwned>(body: &Bytes) -> ApiResult<T> {
    // The error text names the field, never echoes the payload.
    serde_json::from_slice(body).map_err(|e| {
        let msg = e.to_string();
        let msg = msg.split(" at line").next().unwrap_or("invalid JSON");
        ApiError::BadRequest(format!("Invalid request body: {}", msg.replace('`', "'")))
    })
}

fn secret_json(base: &str, m: &SecretMeta) -> Value {
    json!({
        "secret_ref": format!("{base}/v1/secrets/{}", m.id),
        "name": m.name,
        "secret_type": m.secret_type,
        "status": "ACTIVE",
        "content_types": {"default": m.content_type},
        "created": m.created,
        "updated": m.created,
        "algorithm": null, "bit_length": null, "mode": null, "expiration": null,
        "creator_id": m.creator_id,
    })
}

fn container_json(base: &str, c: &ContainerMeta) -> Value {
    json!({
        "container_ref": format!("{base}/v1/containers/{}", c.id),
        "name": c.name,
        "type": c.container_type,
        "status": "ACTIVE",
        "secret_refs": c.secrets.iter().map(|(name, id)| json!({
            "name": name, "secret_ref": format!("{base}/v1/secrets/{id}")
        })).collect::<Vec<_>>(),
        "consumers": [],
        "created": c.created,
        "updated": c.created,
        "creator_id": c.creator_id,
    })
}

async fn create_secret(
    State(s): State<SecretsState>,
    caller: Caller,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let project = caller.project_for(&s, Rule::SecretsPost)?;
    let req: SecretRequest = json_body(&body)?;
    let _ = (&req.algorithm, req.bit_length, &req.mode, &req.expiration);
    let payload = req.payload.ok_or_else(|| {
        ApiError::BadRequest(
            "A payload is required (two-step secret upload is not supported).".into(),
        )
    })?;
    let content_type = req
        .payload_content_type
        .unwrap_or_else(|| "text/plain".to_owned());
    let media = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_owned();
    let bytes = match (media.as_str(), req.payload_content_encoding.as_deref()) {
        ("text/plain", None) => payload.into_bytes(),
        (_, Some("base64")) if media != "text/plain" => base64::engine::general_purpose::STANDARD
            .decode(payload.trim())
            .map_err(|_| ApiError::BadRequest("The payload is not valid base64.".into()))?,
        ("text/plain", Some(_)) => {
            return Err(ApiError::BadRequest(
                "text/plain payloads take no payload_content_encoding.".into(),
            ));
        }
        (_, None) => {
            return Err(ApiError::BadRequest(
                "Binary payloads need payload_content_encoding 'base64'.".into(),
            ));
        }
        (_, Some(_)) => {
            return Err(ApiError::BadRequest(
                "payload_content_encoding must be 'base64'.".into(),
            ));
        }
    };
    if !matches!(
        media.as_str(),
        "text/plain"
            | "application/octet-stream"
            | "application/pkcs8"
            | "application/pkix-cert"
            | "application/pkcs12"
            | "application/x-pkcs12"
    ) {
        return Err(ApiError::BadRequest(format!(
            "payload_content_type '{}' is not supported.",
            media.escape_default()
        )));
    }
    let meta = s
        .secrets
        .create_secret_by(
            project,
            caller.user(),
            NewSecret {
                name: req.name,
                secret_type: req.secret_type.unwrap_or_else(|| "opaque".to_owned()),
                content_type: media,
                payload: bytes,
            },
        )
        .await
        .map_err(store_error)?;
    tracing::info!(secret = %meta.id, project, "secret stored");
    let base = base_url(&headers);
    Ok(created(
        "secret_ref",
        format!("{base}/v1/secrets/{}", meta.id),
    ))
}

async fn list_secrets(
    State(s): State<SecretsState>,
    caller: Caller,
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
    let all = s
        .secrets
        .secrets(caller.project_for(&s, Rule::SecretsGet)?)
        .await
        .map_err(store_error)?;
    let base = base_url(&headers);
    Ok(Json(json!({
        "secrets": all.iter().map(|m| secret_json(&base, m)).collect::<Vec<_>>(),
        "total": all.len(),
    })))
}

async fn show_secret(
    State(s): State<SecretsState>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let meta = authorized_secret(&s, &caller, &id, Rule::SecretGet).await?;
    Ok(Json(secret_json(&base_url(&headers), &meta)))
}

async fn secret_payload(
    State(s): State<SecretsState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let meta = authorized_secret(&s, &caller, &id, Rule::SecretDecrypt).await?;
    let (content_type, bytes) = s
        .secrets
        .secret_payload(&meta.project_id, meta.id)
        .await
        .map_err(store_error)?
        .ok_or_else(|| not_found("Secret"))?;
    Ok(([(header::CONTENT_TYPE, content_type)], bytes).into_response())
}

async fn delete_secret(
    State(s): State<SecretsState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let meta = authorized_secret(&s, &caller, &id, Rule::SecretDelete).await?;
    // Barbican deletes in the secret's project (an admin of another project may).
    let found = s
        .secrets
        .delete_secret(&meta.project_id, meta.id)
        .await
        .map_err(store_error)?;
    deleted(found, "Secret")
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ContainerRequest {
    name: Option<String>,
    #[serde(rename = "type")]
    container_type: String,
    #[serde(default)]
    secret_refs: Vec<NamedRef>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NamedRef {
    name: String,
    secret_ref: String,
}

async fn create_container(
    State(s): State<SecretsState>,
    caller: Caller,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let project = caller.project_for(&s, Rule::ContainersPost)?;
    let req: ContainerRequest = json_body(&body)?;
    let meta = s
        .secrets
        .create_container_by(
            project,
            caller.user(),
            NewContainer {
                name: req.name,
                container_type: req.container_type,
                secret_refs: req
                    .secret_refs
                    .into_iter()
                    .map(|r| (r.name, r.secret_ref))
                    .collect(),
            },
        )
        .await
        .map_err(store_error)?;
    let base = base_url(&headers);
    Ok(created(
        "container_ref",
        format!("{base}/v1/containers/{}", meta.id),
    ))
}

async fn list_containers(
    State(s): State<SecretsState>,
    caller: Caller,
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
    let all = s
        .secrets
        .containers(caller.project_for(&s, Rule::ContainersGet)?)
        .await
        .map_err(store_error)?;
    let base = base_url(&headers);
    Ok(Json(json!({
        "containers": all.iter().map(|c| container_json(&base, c)).collect::<Vec<_>>(),
        "total": all.len(),
    })))
}

async fn show_container(
    State(s): State<SecretsState>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let c = authorized_container(&s, &caller, &id, Rule::ContainerGet).await?;
    Ok(Json(container_json(&base_url(&headers), &c)))
}

async fn delete_container(
    State(s): State<SecretsState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let c = authorized_container(&s, &caller, &id, Rule::ContainerDelete).await?;
    let found = s
        .secrets
        .delete_container(&c.project_id, c.id)
        .await
        .map_err(store_error)?;
    deleted(found, "Container")
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::body::Body;
    use axum::http::Request;
    use klb_api::NoAuth;
    use klb_store::Store;
    use tower::ServiceExt;

    use super::*;

    async fn app() -> (Router, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&format!("sqlite://{}", dir.path().join("k.db").display()))
            .await
            .unwrap();
        let api = AppState::new(store.clone(), Arc::new(NoAuth::default()));
        (router(api, LocalSecrets::new(store)), dir)
    }

    async fn call(
        app: &Router,
        method: &str,
        path: &str,
        project: &str,
        body: Option<Value>,
    ) -> (StatusCode, Vec<u8>) {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "198.18.0.1:9876")
            .header("x-project-id", project)
            .header("content-type", "application/json")
            .body(
                body.map(|b| Body::from(b.to_string()))
                    .unwrap_or_else(Body::empty),
            )
            .unwrap();
        let resp = app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, bytes.to_vec())
    }

    fn json_of(bytes: &[u8]) -> Value {
        serde_json::from_slice(bytes).unwrap()
    }

    #[tokio::test]
    async fn secrets_and_containers_are_per_project() {
        let (app, _dir) = app().await;
        let (st, b) = call(
            &app,
            "POST",
            "/v1/secrets",
            "p1",
            Some(json!({
                "name": "key", "payload": "secret text", "payload_content_type": "text/plain"
            })),
        )
        .await;
        assert_eq!(st, StatusCode::CREATED);
        let r = json_of(&b)["secret_ref"].as_str().unwrap().to_owned();
        assert!(r.starts_with("http://198.18.0.1:9876/v1/secrets/"), "{r}");
        let path = r.trim_start_matches("http://198.18.0.1:9876");
        let (st, b) = call(&app, "GET", path, "p1", None).await;
        assert_eq!(st, StatusCode::OK);
        let shown = json_of(&b);
        assert_eq!(shown["name"], "key");
        assert!(
            !String::from_utf8_lossy(&b).contains("secret text"),
            "metadata never has the payload"
        );
        let (st, b) = call(&app, "GET", &format!("{path}/payload"), "p1", None).await;
        assert_eq!(
            (st, b.as_slice()),
            (StatusCode::OK, b"secret text".as_slice())
        );
        // Another project sees nothing.
        for p in [path.to_owned(), format!("{path}/payload")] {
            assert_eq!(
                call(&app, "GET", &p, "p2", None).await.0,
                StatusCode::NOT_FOUND
            );
        }
        assert_eq!(
            call(&app, "DELETE", path, "p2", None).await.0,
            StatusCode::NOT_FOUND
        );
        let (_, b) = call(&app, "GET", "/v1/secrets", "p2", None).await;
        assert_eq!(json_of(&b)["total"], 0);
        // Containers refer to the project's own secrets.
        let (st, b) = call(
            &app,
            "POST",
            "/v1/containers",
            "p2",
            Some(json!({
                "type": "certificate", "secret_refs": [{"name": "certificate", "secret_ref": r}]
            })),
        )
        .await;
        assert_eq!(
            st,
            StatusCode::BAD_REQUEST,
            "{}",
            String::from_utf8_lossy(&b)
        );
        let (st, b) = call(&app, "POST", "/v1/containers", "p1", Some(json!({
            "type": "certificate", "name": "tls", "secret_refs": [{"name": "certificate", "secret_ref": r}]
        }))).await;
        assert_eq!(st, StatusCode::CREATED);
        let c = json_of(&b)["container_ref"].as_str().unwrap().to_owned();
        let cpath = c.trim_start_matches("http://198.18.0.1:9876");
        let (_, b) = call(&app, "GET", cpath, "p1", None).await;
        assert_eq!(json_of(&b)["secret_refs"][0]["secret_ref"], r.as_str());
        assert_eq!(
            call(&app, "DELETE", cpath, "p1", None).await.0,
            StatusCode::NO_CONTENT
        );
        assert_eq!(
            call(&app, "DELETE", path, "p1", None).await.0,
            StatusCode::NO_CONTENT
        );
        assert_eq!(
            call(&app, "GET", path, "p1", None).await.0,
            StatusCode::NOT_FOUND
        );
    }

    #[tokio::test]
    async fn roles_are_enforced_exactly_where_the_lb_api_enforces_them() {
        let (app, _dir) = app().await;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&format!("sqlite://{}", dir.path().join("k.db").display()))
            .await
            .unwrap();
        let mut api = AppState::new(store, Arc::new(NoAuth::default()));
        assert_eq!(SecretsPolicy::for_api(&api), SecretsPolicy::ProjectScope);
        for enforce_new_defaults in [false, true] {
            api.policy = Arc::new(klb_api::auth::policy::OctaviaPolicy::new(
                klb_api::auth::policy::PolicyOptions {
                    enforce_new_defaults,
                    enforce_scope: true,
                },
            ));
            assert_eq!(SecretsPolicy::for_api(&api), SecretsPolicy::Barbican);
        }
        // Noauth, like the LB API's scope policy, ignores roles: whatever `X-Roles` says (here
        // nothing, as openstacksdk sends), the project's caller may do everything.
        let (st, b) = call(
            &app,
            "POST",
            "/v1/secrets",
            "p1",
            Some(json!({"payload": "t"})),
        )
        .await;
        assert_eq!(st, StatusCode::CREATED);
        let path = json_of(&b)["secret_ref"]
            .as_str()
            .unwrap()
            .trim_start_matches("http://198.18.0.1:9876")
            .to_owned();
        let (st, b) = call(&app, "GET", &format!("{path}/payload"), "p1", None).await;
        assert_eq!((st, b.as_slice()), (StatusCode::OK, b"t".as_slice()));
        assert_eq!(
            json_of(&call(&app, "GET", &path, "p1", None).await.1)["creator_id"],
            Value::Null
        );
    }

    #[test]
    fn barbican_rules_by_role() {
        let ctx = |project: &str, user: &str, roles: &[&str]| {
            let mut c = RequestContext::new(
                Some(project.to_owned()),
                roles.iter().map(|r| r.to_string()).collect(),
                false,
            );
            c.user_id = Some(user.to_owned());
            c
        };
        let t = Target {
            project_id: "p1",
            creator_id: Some("alice"),
        };
        let p = SecretsPolicy::Barbican;
        let ok = |c: &RequestContext, rule: Rule| p.check(c, rule, Some(t)).is_ok();
        let member = ctx("p1", "bob", &["Member"]);
        let reader = ctx("p1", "alice", &["reader"]);
        let admin_p2 = ctx("p2", "odin", &["admin"]);
        for rule in [
            Rule::SecretGet,
            Rule::SecretDecrypt,
            Rule::SecretDelete,
            Rule::ContainerGet,
            Rule::ContainerDelete,
        ] {
            assert!(ok(&member, rule), "{}", rule.name());
            assert_eq!(p.check(&reader, rule, Some(t)), Err(Denied::Forbidden));
        }
        assert!(ok(&admin_p2, Rule::SecretGet) && ok(&admin_p2, Rule::SecretDelete));
        assert!(!ok(&admin_p2, Rule::SecretDecrypt) && !ok(&admin_p2, Rule::ContainerGet));
        assert!(p.check(&member, Rule::SecretsPost, None).is_ok());
        assert!(p.check(&reader, Rule::SecretsGet, None).is_err());
        assert_eq!(
            SecretsPolicy::ProjectScope.check(&admin_p2, Rule::SecretGet, Some(t)),
            Err(Denied::NotVisible)
        );
    }

    #[tokio::test]
    async fn bad_requests_are_400_without_echoing_the_payload() {
        let (app, _dir) = app().await;
        for body in [
            json!({"payload": "x", "payload_content_type": "application/octet-stream"}),
            json!({"payload": "%%%", "payload_content_type": "application/octet-stream",
                   "payload_content_encoding": "base64"}),
            json!({"payload": "x", "payload_content_type": "text/html"}),
            json!({"name": "two-step"}),
            json!({"payload": "x", "surprise": 1}),
            json!({"payload": ""}),
        ] {
            let (st, b) = call(&app, "POST", "/v1/secrets", "p1", Some(body.clone())).await;
            assert_eq!(st, StatusCode::BAD_REQUEST, "{body}");
            let text = String::from_utf8_lossy(&b);
            assert!(!text.contains("%%%"), "{text}");
        }
        let (st, _) = call(
            &app,
            "POST",
            "/v1/secrets",
            "p1",
            Some(json!({
                "payload": base64::engine::general_purpose::STANDARD.encode([0u8, 1, 2]),
                "payload_content_type": "application/octet-stream",
                "payload_content_encoding": "base64"
            })),
        )
        .await;
        assert_eq!(st, StatusCode::CREATED);
        assert_eq!(
            call(&app, "GET", "/v1/secrets/not-a-uuid", "p1", None)
                .await
                .0,
            StatusCode::NOT_FOUND
        );
    }
}
