//! The OpenStack Load Balancer v2 (Octavia-compatible) HTTP API: axum routes for load
//! balancers, listeners, pools, members, health monitors, L7 policies and rules, with
//! Octavia's envelopes, defaults, status codes, fault bodies and list queries. Each change is
//! written to the store together with a job (see `klb-store`) in one transaction; a provider
//! (the [`provider::NoopProvider`] or the flow engine) settles the job.
//!
//! [`router`] builds the whole service (tests drive it with `tower::ServiceExt::oneshot`);
//! [`serve`] runs it on a listener until shutdown.

#![warn(missing_docs)]
use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use klb_store::Store;
use serde_json::json;

pub mod admin;
pub mod auth;
pub mod body;
pub mod context;
pub mod error;
pub mod list;
pub mod provider;
mod v2;

pub use context::{
    Action, AuthError, AuthFailure, Authenticator, Denied, NOAUTH_ADMIN_ROLES, NoAuth, Op, Policy,
    RequestContext, Resource, ScopePolicy,
};
pub use error::{ApiError, ApiResult};

/// API settings, lifted from the raw config by the binary.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Provider recorded on load balancers created without one.
    pub default_provider: String,
    /// Octavia's `[api_settings] enabled_provider_drivers`: the provider names accepted in
    /// `provider` and listed by `GET /v2/providers` with their descriptions, in this order
    /// (all of them mean klb's driver). Parsed from `name:description,name:description`.
    pub enabled_provider_drivers: ProviderDrivers,
    /// Largest accepted request body, bytes.
    pub max_body_bytes: usize,
    /// Listener `timeout_client_data` default (ms).
    pub timeout_client_data: i64,
    /// Listener `timeout_member_connect` default (ms).
    pub timeout_member_connect: i64,
    /// Listener `timeout_member_data` default (ms).
    pub timeout_member_data: i64,
    /// Listener `timeout_tcp_inspect` default (ms).
    pub timeout_tcp_inspect: i64,
    /// Default cipher string for TLS-terminating listeners and TLS pools.
    pub default_tls_ciphers: String,
    /// Whether the provider balances UDP and SCTP. klb's data plane is HAProxy (TCP only; UDP
    /// and SCTP need IPVS, planned), so with a real provider these are refused with Octavia's
    /// 501 for unsupported provider options instead of failing on the LB VMs; the API-only
    /// noop provider accepts them.
    pub udp_sctp: bool,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            default_provider: "klb".to_owned(),
            enabled_provider_drivers: ProviderDrivers::default(),
            max_body_bytes: 4 * 1024 * 1024,
            timeout_client_data: 50_000,
            timeout_member_connect: 5_000,
            timeout_member_data: 50_000,
            timeout_tcp_inspect: 0,
            default_tls_ciphers: "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256".to_owned(),
            udp_sctp: true,
        }
    }
}

/// One enabled provider driver: a `name:description` entry of
/// [`ApiConfig::enabled_provider_drivers`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderDriver {
    /// The name clients send in `provider`.
    pub name: String,
    /// What `GET /v2/providers` says about it.
    pub description: String,
}

/// The enabled provider drivers, in configuration order, written the way Octavia's
/// `enabled_provider_drivers` is (an oslo.config dict option): `name:description` pairs
/// separated by commas, each name and description trimmed, a description running to the next
/// comma (so it can hold colons but no comma). `"klb:klb's driver,amphora:The klb driver"`
/// parses with [`str::parse`]; [`std::fmt::Display`] writes the same form back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderDrivers(Vec<ProviderDriver>);

/// Why an `enabled_provider_drivers` value was refused (oslo.config's messages).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid enabled_provider_drivers: {reason}")]
pub struct ProviderDriversError {
    /// What is wrong.
    pub reason: String,
}

impl ProviderDrivers {
    /// The drivers, in configuration order.
    pub fn iter(&self) -> impl Iterator<Item = &ProviderDriver> {
        self.0.iter()
    }

    /// True when `name` is enabled.
    pub fn contains(&self, name: &str) -> bool {
        self.0.iter().any(|d| d.name == name)
    }
}

impl Default for ProviderDrivers {
    /// klb's driver under its own name and under the two names tenants' tools send for
    /// Octavia's default driver (`amphora`, and its deprecated alias `octavia`); the
    /// descriptions hold no comma, so the default is expressible in the config format.
    fn default() -> Self {
        let driver = |name: &str, description: &str| ProviderDriver {
            name: name.to_owned(),
            description: description.to_owned(),
        };
        ProviderDrivers(vec![
            driver(
                "klb",
                "klb: active-active LB VMs (HAProxy) behind ECMP over BGP with BFD.",
            ),
            driver(
                "amphora",
                "The klb driver under the name of Octavia's Amphora driver.",
            ),
            driver(
                "octavia",
                "Deprecated alias of the klb driver (Octavia's 'octavia' provider name).",
            ),
        ])
    }
}

impl std::str::FromStr for ProviderDrivers {
    type Err = ProviderDriversError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason: String| ProviderDriversError { reason };
        let s = s.trim();
        if s.is_empty() {
            return Err(err(
                "at least one provider driver must be enabled".to_owned()
            ));
        }
        let mut drivers: Vec<ProviderDriver> = Vec::new();
        for pair in s.split(',') {
            let Some((name, description)) = pair.split_once(':') else {
                return Err(err(format!(
                    "Value should be NAME:VALUE pairs separated by \",\" (got {:?})",
                    pair.trim()
                )));
            };
            let (name, description) = (name.trim(), description.trim());
            if name.is_empty() {
                return Err(err("Key name should not be empty".to_owned()));
            }
            if drivers.iter().any(|d| d.name == name) {
                return Err(err(format!("Duplicate key {name}")));
            }
            drivers.push(ProviderDriver {
                name: name.to_owned(),
                description: description.to_owned(),
            });
        }
        Ok(ProviderDrivers(drivers))
    }
}

impl std::fmt::Display for ProviderDrivers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{}:{}", d.name, d.description)?;
        }
        Ok(())
    }
}

/// Shared state of every handler. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// The store.
    pub store: Store,
    /// Authentication.
    pub auth: Arc<dyn Authenticator>,
    /// Authorization.
    pub policy: Arc<dyn Policy>,
    /// VIP allocation.
    pub network: Arc<dyn provider::VipNetwork>,
    /// TLS container checks.
    pub certs: Arc<dyn provider::CertificateManager>,
    /// Quota limits.
    pub quotas: Arc<dyn provider::QuotaLimits>,
    /// Settings.
    pub config: Arc<ApiConfig>,
}

impl AppState {
    /// State with the stock seams: the given authenticator, [`ScopePolicy`], the noop network
    /// and certificate manager, default settings.
    pub fn new(store: Store, auth: Arc<dyn Authenticator>) -> AppState {
        AppState {
            store,
            auth,
            policy: Arc::new(ScopePolicy),
            network: Arc::new(provider::NoopNetwork),
            certs: Arc::new(provider::NoopCertManager),
            quotas: Arc::new(provider::Unlimited),
            config: Arc::new(ApiConfig::default()),
        }
    }
}

/// The request path as the client sent it (before `/v2.0`, `/lbaas` and `.json` are
/// normalized); used for pagination links.
#[derive(Debug, Clone)]
pub struct RequestPath(pub String);

/// The whole HTTP service.
pub fn router(state: AppState) -> Router {
    let limit = state.config.max_body_bytes;
    let inner = Router::new()
        .route("/", get(versions))
        .route("/v2", get(v2_root))
        .route("/healthcheck", get(|| async { "OK" }).head(|| async { "" }))
        .merge(v2::routes())
        .merge(admin::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn(move |mut req: Request, next: axum::middleware::Next| async move {
            req.extensions_mut().insert(body::BodyLimit(limit));
            if req.uri().path() != "/healthcheck" && !accepts_json(&req) {
                return ApiError::NotAcceptable.into_response();
            }
            let request_id = format!("req-{}", uuid::Uuid::new_v4());
            let span = tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %request_id);
            let mut resp = tracing::Instrument::instrument(next.run(req), span).await;
            if let Ok(v) = HeaderValue::from_str(&request_id) {
                resp.headers_mut().insert("x-openstack-request-id", v);
            }
            resp
        }))
        .with_state(state);
    let rewritten = tower::ServiceBuilder::new()
        .map_request(normalize)
        .service(inner);
    Router::new()
        .fallback_service(rewritten)
        .layer(axum::middleware::from_fn(move |req, next| {
            body::read_body_first(req, next, limit)
        }))
}

/// Serves `router(state)` on `listener` until `shutdown` resolves, with the API's limits
/// (header-read and idle timeouts, a connection limit: see `klb-http`).
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    klb_http::serve(listener, router(state), klb_http::Limits::API, shutdown).await
}

/// `/v2.0/...`, `/v2/lbaas/...`, `/v2.0/lbaas/...` → `/v2/...`; a `.json` suffix and a
/// trailing slash are dropped.
fn normalize(mut req: Request) -> Request {
    let original = req.uri().path().to_owned();
    let mut path = original.as_str();
    if let Some(p) = path.strip_suffix(".json") {
        path = p;
    }
    if path.len() > 1 {
        path = path.trim_end_matches('/');
    }
    let mut canonical = String::with_capacity(path.len());
    let rest = if let Some(r) = path.strip_prefix("/v2.0") {
        canonical.push_str("/v2");
        Some(r)
    } else if let Some(r) = path.strip_prefix("/v2") {
        canonical.push_str("/v2");
        Some(r)
    } else {
        None
    };
    match rest {
        Some(r) if r.is_empty() || r.starts_with('/') => {
            let r = match r.strip_prefix("/lbaas") {
                Some(after) if after.is_empty() || after.starts_with('/') => after,
                _ => r,
            };
            canonical.push_str(r);
        }
        _ => canonical = path.to_owned(),
    }
    if canonical != original {
        let pq = match req.uri().query() {
            Some(q) => format!("{canonical}?{q}"),
            None => canonical,
        };
        if let Ok(uri) = pq.parse() {
            *req.uri_mut() = uri;
        }
    }
    req.extensions_mut().insert(RequestPath(original));
    req
}

fn accepts_json(req: &Request) -> bool {
    let Some(accept) = req.headers().get("accept").and_then(|v| v.to_str().ok()) else {
        return true;
    };
    accept.split(',').any(|item| {
        let mime = item
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        mime.is_empty() || mime == "*/*" || mime == "application/*" || mime == "application/json"
    })
}

async fn versions(req: Request) -> Response {
    let host = req
        .headers()
        .get("host")
        .and_then(|h| h.to_str().ok())
        .filter(|h| is_host_port(h))
        .unwrap_or("localhost");
    let base = format!("http://{host}/v2");
    let updated = [
        ("v2.0", "2016-12-11T00:00:00Z"),
        ("v2.1", "2018-04-20T00:00:00Z"),
        ("v2.2", "2018-07-31T00:00:00Z"),
        ("v2.3", "2018-12-18T00:00:00Z"),
        ("v2.4", "2018-12-19T00:00:00Z"),
        ("v2.5", "2019-01-21T00:00:00Z"),
        ("v2.6", "2019-01-25T00:00:00Z"),
        ("v2.7", "2018-01-25T12:00:00Z"),
        ("v2.8", "2019-02-12T00:00:00Z"),
        ("v2.9", "2019-03-04T00:00:00Z"),
        ("v2.10", "2019-03-05T00:00:00Z"),
        ("v2.11", "2019-06-24T00:00:00Z"),
        ("v2.12", "2019-09-11T00:00:00Z"),
        ("v2.13", "2019-09-13T00:00:00Z"),
        ("v2.14", "2019-09-19T00:00:00Z"),
        ("v2.15", "2020-03-10T00:00:00Z"),
        ("v2.16", "2020-03-15T00:00:00Z"),
        ("v2.17", "2020-04-29T00:00:00Z"),
        ("v2.18", "2020-04-29T01:00:00Z"),
        ("v2.19", "2020-05-12T00:00:00Z"),
        ("v2.20", "2020-08-24T00:00:00Z"),
        ("v2.21", "2020-09-03T00:00:00Z"),
        ("v2.22", "2021-04-19T00:00:00Z"),
        ("v2.23", "2021-05-19T00:00:00Z"),
        ("v2.24", "2021-07-24T00:00:00Z"),
        ("v2.25", "2022-01-12T00:00:00Z"),
        ("v2.26", "2022-08-29T00:00:00Z"),
        ("v2.27", "2023-05-05T00:00:00Z"),
        ("v2.28", "2023-11-08T00:00:00Z"),
        ("v2.29", "2024-03-04T00:00:00Z"),
        ("v2.30", "2024-06-27T00:00:00Z"),
    ];
    let versions: Vec<_> = updated
        .iter()
        .map(|(id, ts)| {
            let status = if *id == "v2.30" { "CURRENT" } else { "SUPPORTED" };
            json!({"id": id, "status": status, "updated": ts, "links": [{"href": base, "rel": "self"}]})
        })
        .collect();
    axum::Json(json!({ "versions": versions })).into_response()
}

/// True for `host[:port]` where host is a DNS name, an IPv4 address or a bracketed IPv6
/// address: the only `Host` values echoed in the versions document, so a client cannot make
/// the API hand out links to another site or inject markup or header text.
fn is_host_port(value: &str) -> bool {
    let (host, port) = if let Some(rest) = value.strip_prefix('[') {
        let Some((v6, after)) = rest.split_once(']') else {
            return false;
        };
        if v6.parse::<std::net::Ipv6Addr>().is_err() {
            return false;
        }
        match after {
            "" => (v6, None),
            p => match p.strip_prefix(':') {
                Some(port) => (v6, Some(port)),
                None => return false,
            },
        }
    } else {
        match value.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (value, None),
        }
    };
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.parse::<u16>().is_ok());
    let name_ok = value.starts_with('[')
        || (!host.is_empty()
            && host.len() <= 253
            && host.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            }));
    port_ok && name_ok
}

async fn v2_root() -> Response {
    axum::Json(json!("v2")).into_response()
}

async fn not_found() -> Response {
    ApiError::NotFound("The resource could not be found.".to_owned()).into_response()
}

async fn method_not_allowed() -> Response {
    let mut resp = ApiError::MethodNotAllowed.into_response();
    *resp.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    resp
}
