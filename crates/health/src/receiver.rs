//! The heartbeat receiver: `POST /v1/heartbeat` with a body HMAC-signed by the sending VM's own
//! key (see `klb_agent_client::heartbeat`). Accepted reports are kept in memory only; the [`crate::HealthManager`]
//! turns them into stored statuses on its own schedule, so ingest never waits on the database.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use klb_agent_client::heartbeat::{HeartbeatError, ReplayGuard, verify_heartbeat};
use klb_proto::Heartbeat;
use klb_proto::signature::SIGNATURE_HEADER;
use tokio::sync::{Mutex, RwLock};

use crate::HealthConfig;

/// Latest accepted report of one LB VM.
#[derive(Debug, Clone)]
pub struct Received {
    /// The report.
    pub heartbeat: Heartbeat,
    /// When it arrived (monotonic).
    pub at: Instant,
}

/// Latest reports by load balancer id, then LB VM id. Cheap to clone (shared).
#[derive(Debug, Clone, Default)]
pub struct Reports {
    by_lb: Arc<RwLock<HashMap<String, HashMap<String, Received>>>>,
    replay: Arc<Mutex<ReplayGuard>>,
}

impl Reports {
    /// Records an accepted heartbeat.
    async fn record(&self, heartbeat: Heartbeat) {
        let mut by_lb = self.by_lb.write().await;
        let vms = by_lb.entry(heartbeat.load_balancer_id.clone()).or_default();
        vms.insert(
            heartbeat.vm_id.clone(),
            Received {
                heartbeat,
                at: Instant::now(),
            },
        );
    }

    /// A copy of the reports of every load balancer that has any.
    pub async fn snapshot(&self) -> HashMap<String, HashMap<String, Received>> {
        self.by_lb.read().await.clone()
    }

    /// Forgets one LB VM (replaced or deleted), so its silence is not judged again.
    pub async fn forget_vm(&self, lb_id: &str, vm_id: &str) {
        if let Some(vms) = self.by_lb.write().await.get_mut(lb_id) {
            vms.remove(vm_id);
        }
        self.replay.lock().await.forget(vm_id);
    }

    /// Forgets a whole load balancer (deleted).
    pub async fn forget_lb(&self, lb_id: &str) {
        let removed = self.by_lb.write().await.remove(lb_id);
        if let Some(vms) = removed {
            let mut replay = self.replay.lock().await;
            for vm_id in vms.keys() {
                replay.forget(vm_id);
            }
        }
    }
}

#[derive(Clone)]
struct ReceiverState {
    reports: Reports,
    config: Arc<HealthConfig>,
}

/// The receiver's routes (`POST /v1/heartbeat`).
pub fn router(reports: Reports, config: Arc<HealthConfig>) -> Router {
    Router::new()
        .route("/v1/heartbeat", post(receive))
        .with_state(ReceiverState { reports, config })
}

async fn receive(
    State(state): State<ReceiverState>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let Some(signature) = headers.get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok()) else {
        return (StatusCode::UNAUTHORIZED, "missing signature".to_owned());
    };
    let verified = verify_heartbeat(
        &state.config.heartbeat_keys,
        &body,
        signature,
        SystemTime::now(),
        state.config.max_age,
    );
    let heartbeat = match verified {
        Ok(hb) => hb,
        Err(err) => return reject(err),
    };
    // The replay guard is checked only after the signature (with the claimed VM's own key), so
    // no other VM can advance this VM's sequence number or displace its report.
    if let Err(err) = state.reports.replay.lock().await.check(&heartbeat) {
        return reject(err);
    }
    state.reports.record(heartbeat).await;
    (StatusCode::NO_CONTENT, String::new())
}

fn reject(err: HeartbeatError) -> (StatusCode, String) {
    let status = match err {
        HeartbeatError::BadSignature => StatusCode::UNAUTHORIZED,
        HeartbeatError::Malformed(_) => StatusCode::BAD_REQUEST,
        HeartbeatError::Stale { .. }
        | HeartbeatError::FromFuture { .. }
        | HeartbeatError::Replayed { .. } => StatusCode::CONFLICT,
    };
    tracing::debug!(%err, "heartbeat rejected");
    (status, err.to_string())
}
