//! The subset of Barbican's v1 API that tenants need to hand TLS certificates to klb on the
//! local cloud: secrets (one-step create with the payload, show, list, payload, delete) and
//! certificate containers (create, show, list, delete). Served on the API's port and
//! authenticated like the LB API; every object belongs to the caller's project, and another
//! project's id answers 404. The refs it returns (`http://HOST/v1/secrets/UUID`) are what
//! listeners and pools take in `*_tls_container_ref`.

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use klb_api::{ApiError, ApiResult, AppState, RequestContext};
use klb_certs::{ContainerMeta, LocalSecrets, NewContainer, NewSecret, SecretMeta, SecretsError};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

/// Handlers' state: the API state (authentication) and the secret store.
#[derive(Clone)]
struct SecretsState {
    api: AppState,
    secrets: LocalSecrets,
}

/// The `/v1/secrets` and `/v1/containers` routes.
pub fn router(api: AppState, secrets: LocalSecrets) -> Router {
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
        .with_state(SecretsState { api, secrets })
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
        "creator_id": null,
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
        "creator_id": null,
    })
}

async fn create_secret(
    State(s): State<SecretsState>,
    caller: Caller,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let project = caller.project()?;
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
        .create_secret(
            project,
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
        .secrets(caller.project()?)
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
    let id = parse_id(&id, "Secret")?;
    let meta = s
        .secrets
        .secret(caller.project()?, id)
        .await
        .map_err(store_error)?
        .ok_or_else(|| not_found("Secret"))?;
    Ok(Json(secret_json(&base_url(&headers), &meta)))
}

async fn secret_payload(
    State(s): State<SecretsState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let id = parse_id(&id, "Secret")?;
    let (content_type, bytes) = s
        .secrets
        .secret_payload(caller.project()?, id)
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
    let id = parse_id(&id, "Secret")?;
    let found = s
        .secrets
        .delete_secret(caller.project()?, id)
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
    let req: ContainerRequest = json_body(&body)?;
    let meta = s
        .secrets
        .create_container(
            caller.project()?,
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
        .containers(caller.project()?)
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
    let id = parse_id(&id, "Container")?;
    let c = s
        .secrets
        .container(caller.project()?, id)
        .await
        .map_err(store_error)?
        .ok_or_else(|| not_found("Container"))?;
    Ok(Json(container_json(&base_url(&headers), &c)))
}

async fn delete_container(
    State(s): State<SecretsState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id = parse_id(&id, "Container")?;
    if s.secrets
        .delete_container(caller.project()?, id)
        .await
        .map_err(store_error)?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(not_found("Container"))
    }
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
