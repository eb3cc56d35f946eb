//! The agent's HTTPS API and the state machine behind it.
//!
//! | method | path | body | reply |
//! |---|---|---|---|
//! | PUT | `/v1/state` | [`DesiredState`] | 200 [`ApplyReply`]; 409/422/500 [`ErrorBody`] |
//! | GET | `/v1/status` | | 200 [`AgentStatus`] |
//! | GET | `/v1/stats` | | 200 [`Stats`] |
//! | POST | `/v1/drain` | | 200 [`DrainReply`] |
//! | POST | `/v1/undrain` | | 200 [`DrainReply`] |
//!
//! Transport: TLS with the control plane's client certificate ([`klb_tls::server_config`]:
//! it must chain to klb's CA and carry the control plane's identity, so another LB VM's
//! certificate is refused during the handshake), plus HTTP basic auth when the agent's config
//! has an `[auth]` section (the seed's `agent_user`/`agent_password`): every request, unknown
//! paths included, needs it; a failure answers 401 without saying which part was wrong, and
//! neither the password nor what was sent is logged. States are versioned: the same version again
//! is a no-op (200, method `unchanged`), an older one is refused with 409, a newer one is
//! applied to HAProxy first (which checks it and keeps the old config on failure), then to FRR.
//! Applies, drains and undrains are serialized by one lock, so they never interleave.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use base64::Engine as _;
use klb_proto::{
    AgentStatus, ApplyMethod, ApplyReply, DesiredState, DrainReply, ErrorBody, Heartbeat,
    HeartbeatKey, PROTOCOL_VERSION, Stats, StatusReply,
};
use sha2::{Digest, Sha256};
use tokio::sync::{Mutex, watch};

use crate::config::BasicAuth;
use crate::dataplane::{Proxy, ProxyError};
use crate::frr::{Frr, FrrError};
use crate::heartbeat::{HeartbeatSource, HmacKey, Report};

/// Largest accepted request body (a state with thousands of members and certificates).
const BODY_LIMIT: usize = 32 * 1024 * 1024;

/// Errors of the agent's operations, each mapped to an HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Malformed request (400).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// Version conflict (409): older version, or another load balancer's state.
    #[error("conflict: {message}")]
    Conflict {
        /// Explanation.
        message: String,
        /// Rejected version.
        version: u64,
        /// Running version.
        running_version: Option<u64>,
    },
    /// HAProxy refused the state (422); the old configuration keeps serving.
    #[error("state {version} rejected: {source}")]
    Rejected {
        /// Rejected version.
        version: u64,
        /// Running version.
        running_version: Option<u64>,
        /// Cause.
        source: ProxyError,
    },
    /// HAProxy failed while applying (500).
    #[error("HAProxy: {0}")]
    Proxy(ProxyError),
    /// FRR failed (500 for applies, 500 for drain).
    #[error("FRR: {0}")]
    Frr(#[from] FrrError),
    /// Failed to bind or serve.
    #[error("server: {0}")]
    Serve(std::io::Error),
    /// TLS material.
    #[error(transparent)]
    Tls(#[from] klb_tls::TlsError),
}

impl AgentError {
    fn status(&self) -> StatusCode {
        match self {
            AgentError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AgentError::Conflict { .. } => StatusCode::CONFLICT,
            AgentError::Rejected { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for AgentError {
    fn into_response(self) -> Response {
        let status = self.status();
        let (version, running_version) = match &self {
            AgentError::Conflict {
                version,
                running_version,
                ..
            }
            | AgentError::Rejected {
                version,
                running_version,
                ..
            } => (Some(*version), *running_version),
            _ => (None, None),
        };
        if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
        } else {
            tracing::warn!(error = %self, "request refused");
        }
        // The agent's callers are the control plane and operators: the detail (haproxy -c
        // output, FRR stderr) is what they need, and it carries no secrets.
        let body = ErrorBody {
            message: self.to_string(),
            version,
            running_version,
        };
        (status, Json(body)).into_response()
    }
}

/// The agent: the running desired state, the drain flag, HAProxy and FRR.
pub struct Agent {
    proxy: Arc<dyn Proxy>,
    frr: Option<Frr>,
    drain_wait: Duration,
    /// Serializes applies, drains and undrains (held across the drain wait).
    inner: Mutex<Inner>,
    /// What status and heartbeats report, readable while `inner` is held.
    snapshot: watch::Sender<Snapshot>,
}

/// The identity and flags reported by status and heartbeats.
#[derive(Debug, Clone, Default)]
struct Snapshot {
    load_balancer_id: Option<String>,
    vm_id: Option<String>,
    version: Option<u64>,
    /// This VM's heartbeat key, from the applied state.
    heartbeat_key: Option<HeartbeatKey>,
    drained: bool,
}

#[derive(Default)]
struct Inner {
    applied: Option<DesiredState>,
    drained: bool,
}

impl Agent {
    /// An agent driving `proxy` and, when given, FRR (states with BGP need it).
    pub fn new(proxy: Arc<dyn Proxy>, frr: Option<Frr>, drain_wait: Duration) -> Self {
        Agent {
            proxy,
            frr,
            drain_wait,
            inner: Mutex::new(Inner::default()),
            snapshot: watch::Sender::new(Snapshot::default()),
        }
    }

    /// FRR, if configured.
    pub fn frr(&self) -> Option<&Frr> {
        self.frr.as_ref()
    }

    /// Applies a whole desired state (see the module doc for the versioning rules).
    #[tracing::instrument(skip_all, fields(lb = %state.load_balancer_id, version = state.version))]
    pub async fn put_state(&self, state: DesiredState) -> Result<ApplyReply, AgentError> {
        if state.protocol != PROTOCOL_VERSION {
            return Err(AgentError::BadRequest(format!(
                "protocol {} not supported (this agent speaks {PROTOCOL_VERSION})",
                state.protocol
            )));
        }
        let mut inner = self.inner.lock().await;
        let running_version = inner.applied.as_ref().map(|s| s.version);
        if let Some(running) = &inner.applied {
            let conflict = |message: String| AgentError::Conflict {
                message,
                version: state.version,
                running_version,
            };
            if running.load_balancer_id != state.load_balancer_id {
                return Err(conflict(format!(
                    "this VM serves load balancer {}, not {}",
                    running.load_balancer_id, state.load_balancer_id
                )));
            }
            if state.version < running.version {
                return Err(conflict(format!(
                    "version {} is older than the running version {}",
                    state.version, running.version
                )));
            }
            if state.version == running.version {
                if *running == state {
                    return Ok(ApplyReply::new(state.version, ApplyMethod::Unchanged));
                }
                return Err(conflict(format!(
                    "version {} is already running with different content",
                    state.version
                )));
            }
        }
        if state.bgp.is_some() && self.frr.is_none() {
            return Err(AgentError::BadRequest(
                "the state has BGP settings but this agent has no FRR configured".into(),
            ));
        }
        if let Some(bgp) = &state.bgp {
            crate::frr::validate_bgp(bgp)?;
        }
        let started = Instant::now();
        let previous_bgp = inner.applied.as_ref().and_then(|s| s.bgp.clone());
        if let (Some(frr), Some(bgp)) = (&self.frr, &state.bgp) {
            // Before HAProxy: its frontends bind the VIP put on `lo` here.
            frr.prepare_host(bgp, previous_bgp.as_ref()).await?;
        }
        let method = self.proxy.apply(&state).await.map_err(|e| match e {
            ProxyError::Invalid(_) => AgentError::Rejected {
                version: state.version,
                running_version,
                source: e,
            },
            ProxyError::Failed(_) => AgentError::Proxy(e),
        })?;
        if inner.drained && method != ApplyMethod::Unchanged {
            // A reload re-opens the frontends: keep a drained VM drained.
            self.proxy
                .set_accepting(false)
                .await
                .map_err(AgentError::Proxy)?;
        }
        if let Some(frr) = &self.frr {
            match (&state.bgp, &previous_bgp) {
                // Unchanged BGP settings still go through when a daemon is missing (crashed).
                (Some(bgp), previous)
                    if previous.as_ref() != Some(bgp) || frr.pids().await.len() < 3 =>
                {
                    frr.apply(bgp, inner.drained).await?;
                }
                // BGP removed from the state: nothing may stay announced.
                (None, Some(previous)) => frr.release(previous).await,
                _ => {}
            }
        }
        tracing::info!(
            ?method,
            took_ms = started.elapsed().as_millis() as u64,
            "state applied"
        );
        self.snapshot.send_modify(|s| {
            s.load_balancer_id = Some(state.load_balancer_id.clone());
            s.vm_id = Some(state.vm.id.clone());
            s.version = Some(state.version);
            s.heartbeat_key = state.heartbeat_key.clone();
        });
        inner.applied = Some(state);
        Ok(ApplyReply::new(
            inner.applied.as_ref().map_or(0, |s| s.version),
            method,
        ))
    }

    /// Status for `GET /v1/status`.
    pub async fn status(&self) -> AgentStatus {
        let Snapshot {
            load_balancer_id: lb,
            version,
            drained,
            ..
        } = self.snapshot.borrow().clone();
        let haproxy_up = self.proxy.is_up().await;
        let stats = if haproxy_up {
            self.proxy.stats().await.unwrap_or_default()
        } else {
            Stats::default()
        };
        let bgp_sessions = match &self.frr {
            Some(frr) => frr.sessions().await,
            None => Vec::new(),
        };
        AgentStatus {
            status: StatusReply {
                load_balancer_id: lb,
                version,
                haproxy_up,
                stats,
            },
            drained,
            bgp_sessions,
        }
    }

    /// Statistics for `GET /v1/stats`.
    pub async fn stats(&self) -> Result<Stats, AgentError> {
        self.proxy.stats().await.map_err(AgentError::Proxy)
    }

    /// Drains: withdraw the VIP announcement, wait `drain_wait` so the gateways move traffic
    /// to the other VMs, then stop accepting new connections in HAProxy.
    #[tracing::instrument(skip_all)]
    pub async fn drain(&self) -> Result<DrainReply, AgentError> {
        let started = Instant::now();
        let mut inner = self.inner.lock().await;
        if inner.drained {
            return Ok(reply(true, false, started));
        }
        let bgp = inner.applied.as_ref().and_then(|s| s.bgp.clone());
        if let (Some(frr), Some(bgp)) = (&self.frr, &bgp) {
            frr.set_announced(bgp, false).await?;
            tokio::time::sleep(self.drain_wait).await;
        }
        if inner.applied.is_some() {
            self.proxy
                .set_accepting(false)
                .await
                .map_err(AgentError::Proxy)?;
        }
        inner.drained = true;
        self.snapshot.send_modify(|s| s.drained = true);
        tracing::info!(took_ms = started.elapsed().as_millis() as u64, "drained");
        Ok(reply(true, true, started))
    }

    /// Undrains: HAProxy accepts again first, then the VIP is announced.
    #[tracing::instrument(skip_all)]
    pub async fn undrain(&self) -> Result<DrainReply, AgentError> {
        let started = Instant::now();
        let mut inner = self.inner.lock().await;
        if !inner.drained {
            return Ok(reply(false, false, started));
        }
        if inner.applied.is_some() {
            self.proxy
                .set_accepting(true)
                .await
                .map_err(AgentError::Proxy)?;
        }
        let bgp = inner.applied.as_ref().and_then(|s| s.bgp.clone());
        if let (Some(frr), Some(bgp)) = (&self.frr, &bgp) {
            frr.set_announced(bgp, true).await?;
        }
        inner.drained = false;
        self.snapshot.send_modify(|s| s.drained = false);
        tracing::info!("undrained");
        Ok(reply(false, true, started))
    }
}

fn reply(drained: bool, changed: bool, started: Instant) -> DrainReply {
    DrainReply {
        drained,
        changed,
        took_ms: started.elapsed().as_millis() as u64,
    }
}

#[async_trait::async_trait]
impl HeartbeatSource for Agent {
    async fn heartbeat(&self) -> Option<Report> {
        let snap = self.snapshot.borrow().clone();
        let (lb, vm, version) = (snap.load_balancer_id?, snap.vm_id?, snap.version?);
        let key = HmacKey::from(snap.heartbeat_key.as_ref()?);
        let haproxy_up = self.proxy.is_up().await;
        let stats = if haproxy_up {
            self.proxy.stats().await.unwrap_or_default()
        } else {
            Stats::default()
        };
        Some(Report {
            heartbeat: Heartbeat {
                load_balancer_id: lb,
                vm_id: vm,
                seq: 0,
                sent_at: 0,
                version: Some(version),
                haproxy_up,
                stats,
            },
            key,
        })
    }
}

/// The API router (no TLS; [`serve`] wraps it). `auth` adds HTTP basic auth.
pub fn router(agent: Arc<Agent>, auth: Option<BasicAuth>) -> Router {
    let api = Router::new()
        .route("/v1/state", put(put_state))
        .route("/v1/status", get(status))
        .route("/v1/stats", get(stats))
        .route("/v1/drain", post(drain))
        .route("/v1/undrain", post(undrain))
        .with_state(agent)
        .layer(DefaultBodyLimit::max(BODY_LIMIT));
    match auth {
        Some(auth) => api.layer(middleware::from_fn_with_state(
            Arc::new(auth),
            require_basic_auth,
        )),
        None => api,
    }
}

async fn put_state(State(agent): State<Arc<Agent>>, body: Bytes) -> Response {
    let state: DesiredState = match serde_json::from_slice(&body) {
        Ok(s) => s,
        Err(e) => {
            return AgentError::BadRequest(format!("invalid desired state: {e}")).into_response();
        }
    };
    match agent.put_state(state).await {
        Ok(mut r) => {
            // What a pusher needs besides the version, so it need not ask `/v1/status` (which
            // also asks FRR for its sessions: tens of ms per push).
            r.drained = Some(agent.snapshot.borrow().drained);
            r.haproxy_up = Some(agent.proxy.is_up().await);
            Json(r).into_response()
        }
        Err(e) => e.into_response(),
    }
}

async fn status(State(agent): State<Arc<Agent>>) -> Json<AgentStatus> {
    Json(agent.status().await)
}

async fn stats(State(agent): State<Arc<Agent>>) -> Result<Json<Stats>, AgentError> {
    agent.stats().await.map(Json)
}

async fn drain(State(agent): State<Arc<Agent>>) -> Result<Json<DrainReply>, AgentError> {
    agent.drain().await.map(Json)
}

async fn undrain(State(agent): State<Arc<Agent>>) -> Result<Json<DrainReply>, AgentError> {
    agent.undrain().await.map(Json)
}

async fn require_basic_auth(
    State(auth): State<Arc<BasicAuth>>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Response {
    if basic_auth_ok(&auth, &headers) {
        return next.run(request).await;
    }
    // Never log what was sent: it may be a mistyped password.
    tracing::warn!("basic auth failed");
    let body = ErrorBody {
        message: "authentication required".into(),
        version: None,
        running_version: None,
    };
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Basic realm=\"klb-agent\"")],
        Json(body),
    )
        .into_response()
}

fn basic_auth_ok(auth: &BasicAuth, headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    // The scheme is case-insensitive (RFC 9110, section 11.1).
    let Some((scheme, encoded)) = value.split_once(' ') else {
        return false;
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return false;
    }
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
        return false;
    };
    let Some(colon) = decoded.iter().position(|&b| b == b':') else {
        return false;
    };
    let (user, password) = (&decoded[..colon], &decoded[colon + 1..]);
    // Evaluate both comparisons always, so timing says nothing about which one failed.
    let user_ok = constant_time_eq(user, auth.user.as_bytes());
    let password_ok = constant_time_eq(password, auth.password.expose().as_bytes());
    user_ok & password_ok
}

/// Compares SHA-256 digests byte by byte without early exit: the time depends on neither the
/// lengths nor the position of the first difference.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let (da, db) = (Sha256::digest(a), Sha256::digest(b));
    let diff = da
        .iter()
        .zip(db.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Serves the API over mutual TLS on `listener` until `shutdown` turns true (then finishes
/// in-flight requests for up to 5 s). The TLS handshake and each request head must arrive in
/// time and the open connections are bounded (`klb_http::Limits::AGENT`), so stalled clients
/// on the management network cannot keep the control plane out.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    agent: Arc<Agent>,
    auth: Option<BasicAuth>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), AgentError> {
    let app = router(agent, auth);
    listener.set_nonblocking(true).map_err(AgentError::Serve)?;
    let listener = tokio::net::TcpListener::from_std(listener).map_err(AgentError::Serve)?;
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let handshake = move |stream: tokio::net::TcpStream| {
        let acceptor = acceptor.clone();
        async move { acceptor.accept(stream).await }
    };
    let stop = async move {
        while !*shutdown.borrow() {
            if shutdown.changed().await.is_err() {
                break;
            }
        }
    };
    let limits = klb_http::Limits::AGENT;
    klb_http::serve_with(listener, handshake, app, limits, stop)
        .await
        .map_err(AgentError::Serve)
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;
    use crate::config::Password;
    use crate::dataplane::fake::FakeProxy;

    fn state(version: u64) -> DesiredState {
        serde_json::from_value(serde_json::json!({
            "version": version, "load_balancer_id": "lb1", "vip": "198.19.0.10",
            "vm": {"id": "vm1", "index": 1, "name": "lb1-1"},
            "listeners": [{"id": "l1", "protocol": "HTTP", "protocol_port": 80,
                           "default_pool_id": "p1"}],
            "pools": [{"id": "p1", "protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN",
                       "members": [{"id": "m1", "address": "198.18.3.2", "protocol_port": 8080}]}]
        }))
        .unwrap()
    }

    fn agent() -> (Arc<FakeProxy>, Arc<Agent>) {
        let proxy = Arc::new(FakeProxy::default());
        let agent = Arc::new(Agent::new(proxy.clone(), None, Duration::ZERO));
        (proxy, agent)
    }

    async fn call(
        app: &Router,
        method: &str,
        uri: &str,
        body: Option<String>,
        auth: Option<&str>,
    ) -> (StatusCode, serde_json::Value) {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(a) = auth {
            let enc = base64::engine::general_purpose::STANDARD.encode(a);
            req = req.header(header::AUTHORIZATION, format!("Basic {enc}"));
        }
        let req = req
            .header(header::CONTENT_TYPE, "application/json")
            .body(body.map(Body::from).unwrap_or_else(Body::empty))
            .unwrap();
        let resp = app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        (status, json)
    }

    fn put(v: &DesiredState) -> Option<String> {
        Some(serde_json::to_string(v).unwrap())
    }

    #[tokio::test]
    async fn state_versions_newer_same_older() {
        let (proxy, agent) = agent();
        let app = router(agent, None);
        let (st, body) = call(&app, "PUT", "/v1/state", put(&state(2)), None).await;
        assert_eq!(st, StatusCode::OK, "{body}");
        assert_eq!(body["method"], "start");
        // What a pusher needs comes with the reply (no `/v1/status` round trip).
        assert_eq!(body["version"], 2);
        assert_eq!(body["drained"], false);
        assert_eq!(body["haproxy_up"], true);
        // Same version again: no-op, HAProxy is not touched.
        let (st, body) = call(&app, "PUT", "/v1/state", put(&state(2)), None).await;
        assert_eq!(
            (st, body["method"].as_str()),
            (StatusCode::OK, Some("unchanged"))
        );
        // Older: 409 with the running version.
        let (st, body) = call(&app, "PUT", "/v1/state", put(&state(1)), None).await;
        assert_eq!(st, StatusCode::CONFLICT);
        assert_eq!(body["running_version"], 2);
        // Same version, different content: 409.
        let mut changed = state(2);
        changed.pools[0].members[0].weight = 5;
        let (st, _) = call(&app, "PUT", "/v1/state", put(&changed), None).await;
        assert_eq!(st, StatusCode::CONFLICT);
        // Newer: applied.
        changed.version = 3;
        let (st, body) = call(&app, "PUT", "/v1/state", put(&changed), None).await;
        assert_eq!(
            (st, body["method"].as_str()),
            (StatusCode::OK, Some("reload"))
        );
        assert_eq!(proxy.applied_versions().await, vec![2, 3]);
        let (_, status) = call(&app, "GET", "/v1/status", None, None).await;
        assert_eq!(status["version"], 3);
        assert_eq!(status["load_balancer_id"], "lb1");
        assert_eq!(status["drained"], false);
    }

    #[tokio::test]
    async fn rejected_state_keeps_the_old_version() {
        let (proxy, agent) = agent();
        let app = router(agent, None);
        call(&app, "PUT", "/v1/state", put(&state(1)), None).await;
        proxy
            .fail_next_apply(ProxyError::Invalid("haproxy -c: parsing error".into()))
            .await;
        let (st, body) = call(&app, "PUT", "/v1/state", put(&state(2)), None).await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(
            body["message"].as_str().unwrap().contains("parsing error"),
            "{body}"
        );
        assert_eq!(body["running_version"], 1);
        proxy
            .fail_next_apply(ProxyError::Failed("socket gone".into()))
            .await;
        let (st, _) = call(&app, "PUT", "/v1/state", put(&state(2)), None).await;
        assert_eq!(st, StatusCode::INTERNAL_SERVER_ERROR);
        let (_, status) = call(&app, "GET", "/v1/status", None, None).await;
        assert_eq!(status["version"], 1);
        // The retry succeeds.
        let (st, _) = call(&app, "PUT", "/v1/state", put(&state(2)), None).await;
        assert_eq!(st, StatusCode::OK);
    }

    #[tokio::test]
    async fn bad_requests() {
        let (_, agent) = agent();
        let app = router(agent, None);
        let (st, body) = call(&app, "PUT", "/v1/state", Some("{not json".into()), None).await;
        assert_eq!(st, StatusCode::BAD_REQUEST);
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("invalid desired state")
        );
        let mut s = state(1);
        s.protocol = 99;
        let (st, _) = call(&app, "PUT", "/v1/state", put(&s), None).await;
        assert_eq!(st, StatusCode::BAD_REQUEST);
        // BGP without FRR configured.
        let mut s = state(1);
        s.bgp = Some(
            serde_json::from_value(serde_json::json!({
            "local_as": 10001, "router_id": "198.18.1.2",
            "neighbors": [{"address": "198.18.1.1", "remote_as": 60201}],
            "announce": ["198.19.0.10/32"]}))
            .unwrap(),
        );
        let (st, _) = call(&app, "PUT", "/v1/state", put(&s), None).await;
        assert_eq!(st, StatusCode::BAD_REQUEST);
        // Another load balancer's state once one is running.
        call(&app, "PUT", "/v1/state", put(&state(1)), None).await;
        let mut other = state(5);
        other.load_balancer_id = "lb2".into();
        let (st, _) = call(&app, "PUT", "/v1/state", put(&other), None).await;
        assert_eq!(st, StatusCode::CONFLICT);
    }

    #[tokio::test]
    async fn drain_and_undrain_toggle_haproxy_and_survive_applies() {
        let (proxy, agent) = agent();
        let app = router(agent, None);
        call(&app, "PUT", "/v1/state", put(&state(1)), None).await;
        let (st, body) = call(&app, "POST", "/v1/drain", None, None).await;
        assert_eq!(
            (st, body["changed"].as_bool()),
            (StatusCode::OK, Some(true))
        );
        assert_eq!(proxy.accepting().await, Some(false));
        let (_, body) = call(&app, "POST", "/v1/drain", None, None).await;
        assert_eq!(body["changed"], false);
        // A new state while drained keeps the frontends closed.
        let mut s = state(2);
        s.pools[0].members[0].weight = 3;
        call(&app, "PUT", "/v1/state", put(&s), None).await;
        assert_eq!(proxy.accepting().await, Some(false));
        let (_, status) = call(&app, "GET", "/v1/status", None, None).await;
        assert_eq!(status["drained"], true);
        let (_, body) = call(&app, "POST", "/v1/undrain", None, None).await;
        assert_eq!(
            (body["drained"].as_bool(), body["changed"].as_bool()),
            (Some(false), Some(true))
        );
        assert_eq!(proxy.accepting().await, Some(true));
    }

    #[tokio::test]
    async fn basic_auth() {
        let (_, agent) = agent();
        let auth = BasicAuth {
            user: "admin".into(),
            password: Password::new("s3cret"),
        };
        let app = router(agent, Some(auth));
        let (st, none) = call(&app, "GET", "/v1/status", None, None).await;
        assert_eq!(st, StatusCode::UNAUTHORIZED);
        let (st, wrong_password) = call(&app, "GET", "/v1/status", None, Some("admin:wrong")).await;
        assert_eq!(st, StatusCode::UNAUTHORIZED);
        let (st, wrong_user) = call(&app, "GET", "/v1/status", None, Some("root:s3cret")).await;
        assert_eq!(st, StatusCode::UNAUTHORIZED);
        // One answer whatever was wrong.
        assert_eq!(none, wrong_password);
        assert_eq!(wrong_user, wrong_password);
        // Writes and unknown paths are behind the same check.
        let (st, _) = call(&app, "POST", "/v1/drain", None, Some("admin:wrong")).await;
        assert_eq!(st, StatusCode::UNAUTHORIZED);
        let (st, _) = call(&app, "GET", "/nope", None, None).await;
        assert_eq!(st, StatusCode::UNAUTHORIZED);
        let (st, _) = call(&app, "GET", "/v1/status", None, Some("admin:s3cret")).await;
        assert_eq!(st, StatusCode::OK);
        // The scheme is case-insensitive.
        let req = Request::builder()
            .uri("/v1/status")
            .header(header::AUTHORIZATION, "BASIC YWRtaW46czNjcmV0")
            .body(Body::empty())
            .unwrap();
        assert_eq!(
            app.clone().oneshot(req).await.unwrap().status(),
            StatusCode::OK
        );
        // A password containing ':' splits at the first colon only.
        let (_, agent) = self::agent();
        let app = router(
            agent,
            Some(BasicAuth {
                user: "u".into(),
                password: Password::new("a:b"),
            }),
        );
        let (st, _) = call(&app, "GET", "/v1/status", None, Some("u:a:b")).await;
        assert_eq!(st, StatusCode::OK);
    }

    #[test]
    fn constant_time_eq_compares() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(constant_time_eq(b"", b""));
    }
}
