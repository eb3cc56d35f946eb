//! klb's alarm webhook: the PPS alarm (Aodh, or the local evaluator) POSTs here when a load
//! balancer's packet rate stays above `ceilometer_pps_threshold`; klb then scales the
//! active-active set out by one LB VM (a job the flow provider turns into a scale-out flow).
//!
//! Authentication: a token in the URL (`?token=`), compared in constant time. Aodh's webhook
//! actions can only carry what the URL holds.
//!
//! Cooldown: after a scale-out request for a load balancer, its alarms are acknowledged but
//! ignored for [`SCALE_OUT_COOLDOWN`]. The scale-out flow replaces the LB's alarm (it covers the
//! new VM), and a new alarm under the same sustained load fires again after two periods: without
//! a cooldown one burst would grow the LB to its largest size before the new VM had any effect.
//! The cooldown is per control-plane node (in memory); another node may act once more.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::post;
use klb_model::{Kind, LoadBalancer, ProvisioningStatus};
use klb_store::{JobAction, JobOp, JobPayload, NewJob, Store};
use serde::Deserialize;
use tokio::sync::Mutex;
use uuid::Uuid;

/// The webhook path.
pub const PATH: &str = "/v1/alarms";

/// How long PPS alarms of a load balancer are ignored after a scale-out request.
pub const SCALE_OUT_COOLDOWN: Duration = Duration::from_secs(60);

#[derive(Clone)]
struct WebhookState {
    store: Store,
    token: String,
    cooldown: Duration,
    /// When each LB's last scale-out was requested (on this node).
    last_scale_out: Arc<Mutex<HashMap<Uuid, Instant>>>,
}

/// Routes of the webhook; alarms of an LB within `cooldown` of its last scale-out are ignored
/// ([`SCALE_OUT_COOLDOWN`] by default).
pub fn router(store: Store, token: String, cooldown: Duration) -> Router {
    Router::new()
        .route(PATH, post(alarm))
        .with_state(WebhookState {
            store,
            token,
            cooldown,
            last_scale_out: Arc::default(),
        })
}

#[derive(Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

/// The parts of an Aodh notification klb reads.
#[derive(Deserialize)]
struct Notification {
    #[serde(default)]
    alarm_name: Option<String>,
    #[serde(default)]
    lb_id: Option<String>,
    #[serde(default)]
    current: Option<String>,
}

fn same(a: &str, b: &str) -> bool {
    // Constant time in the length of the expected token.
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

async fn alarm(
    State(state): State<WebhookState>,
    Query(query): Query<TokenQuery>,
    Json(note): Json<Notification>,
) -> (StatusCode, String) {
    if !query
        .token
        .as_deref()
        .is_some_and(|t| same(t, &state.token))
    {
        return (StatusCode::UNAUTHORIZED, "bad token".to_owned());
    }
    if note.current.as_deref().is_some_and(|c| c != "alarm") {
        return (StatusCode::ACCEPTED, "not an alarm transition".to_owned());
    }
    // Aodh sends the alarm name (`klb-<lb_id>-pps`); the local evaluator also sends lb_id.
    let lb_id = note.lb_id.or_else(|| {
        note.alarm_name
            .as_deref()
            .and_then(|n| n.strip_prefix("klb-"))
            .and_then(|n| n.strip_suffix("-pps"))
            .map(str::to_owned)
    });
    let Some(lb_id) = lb_id.and_then(|id| Uuid::parse_str(&id).ok()) else {
        return (
            StatusCode::BAD_REQUEST,
            "no load balancer in the notification".to_owned(),
        );
    };
    let mut last = state.last_scale_out.lock().await;
    if last
        .get(&lb_id)
        .is_some_and(|at| at.elapsed() < state.cooldown)
    {
        tracing::info!(%lb_id, "PPS alarm ignored: scale-out cooldown");
        return (StatusCode::ACCEPTED, "scale-out cooldown".to_owned());
    }
    // Held across the request so two alarms arriving together scale out once.
    match request_scale_out(&state.store, lb_id).await {
        Ok(true) => {
            last.insert(lb_id, Instant::now());
            tracing::info!(%lb_id, "PPS alarm: scale-out requested");
            (StatusCode::ACCEPTED, "scale-out requested".to_owned())
        }
        Ok(false) => (
            StatusCode::CONFLICT,
            "load balancer is not ACTIVE".to_owned(),
        ),
        Err(err) => {
            tracing::error!(%lb_id, error = %err, "PPS alarm: scale-out request failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error".to_owned(),
            )
        }
    }
}

/// Moves the LB to `PENDING_UPDATE` with a scale-out job, if it is `ACTIVE`.
pub async fn request_scale_out(store: &Store, lb_id: Uuid) -> Result<bool, klb_store::StoreError> {
    let mut tx = store.begin().await?;
    let Some(mut lb) = tx.get_resource::<LoadBalancer>(lb_id).await? else {
        return Ok(false);
    };
    if lb.provisioning_status != ProvisioningStatus::Active {
        return Ok(false);
    }
    lb.provisioning_status = ProvisioningStatus::PendingUpdate;
    lb.updated_at = Some(chrono::Utc::now());
    tx.put_resource(&lb).await?;
    tx.enqueue_job(NewJob {
        loadbalancer_id: lb_id.to_string(),
        op: JobOp::Update,
        target_kind: Kind::LoadBalancer,
        target_id: lb_id.to_string(),
        payload: Some(
            JobPayload {
                action: Some(JobAction::ScaleOut),
                ..JobPayload::default()
            }
            .to_json(),
        ),
    })
    .await?;
    tx.commit().await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use klb_model::ProvisioningStatus;
    use tower::ServiceExt;

    use super::*;
    use crate::testutil;

    async fn post_alarm(app: &Router, lb_id: Uuid, token: &str) -> (StatusCode, String) {
        let body = serde_json::json!({"current": "alarm", "lb_id": lb_id.to_string()});
        let req = Request::builder()
            .method("POST")
            .uri(format!("{PATH}?token={token}"))
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap();
        let resp = app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    async fn status_of(store: &Store, id: Uuid) -> ProvisioningStatus {
        let lb: LoadBalancer = store.get_resource(id).await.unwrap().unwrap();
        lb.provisioning_status
    }

    /// What the scale-out flow does at its end, as far as the webhook can see.
    async fn finish_scale_out(store: &Store, id: Uuid) {
        let job = store
            .claim_job("test", Duration::from_secs(30))
            .await
            .unwrap()
            .expect("a scale-out job");
        assert_eq!(JobPayload::of(&job).action, Some(JobAction::ScaleOut));
        store
            .settle_job(&job, klb_store::Outcome::Success)
            .await
            .unwrap();
        assert_eq!(status_of(store, id).await, ProvisioningStatus::Active);
    }

    #[tokio::test]
    async fn an_alarm_scales_out_once_per_cooldown() {
        let dir = tempfile::tempdir().unwrap();
        let store = testutil::store(&dir).await;
        let lb = klb_test_support::fixtures::load_balancer("p1", ProvisioningStatus::Active);
        let mut tx = store.begin().await.unwrap();
        tx.insert_resource(&lb).await.unwrap();
        tx.commit().await.unwrap();
        let app = router(store.clone(), "t0k".into(), Duration::from_secs(3600));

        assert_eq!(
            post_alarm(&app, lb.id, "wrong").await.0,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(status_of(&store, lb.id).await, ProvisioningStatus::Active);
        let (st, body) = post_alarm(&app, lb.id, "t0k").await;
        assert_eq!(
            (st, body.as_str()),
            (StatusCode::ACCEPTED, "scale-out requested")
        );
        assert_eq!(
            status_of(&store, lb.id).await,
            ProvisioningStatus::PendingUpdate
        );
        finish_scale_out(&store, lb.id).await;
        // The replaced alarm fires again under the same load: ignored, nothing queued.
        let (st, body) = post_alarm(&app, lb.id, "t0k").await;
        assert_eq!(
            (st, body.as_str()),
            (StatusCode::ACCEPTED, "scale-out cooldown")
        );
        assert_eq!(status_of(&store, lb.id).await, ProvisioningStatus::Active);
        assert!(store.jobs_of(&lb.id.to_string()).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn after_the_cooldown_an_alarm_scales_out_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = testutil::store(&dir).await;
        let lb = klb_test_support::fixtures::load_balancer("p1", ProvisioningStatus::Active);
        let mut tx = store.begin().await.unwrap();
        tx.insert_resource(&lb).await.unwrap();
        tx.commit().await.unwrap();
        let app = router(store.clone(), "t0k".into(), Duration::ZERO);
        for _ in 0..2 {
            let (st, body) = post_alarm(&app, lb.id, "t0k").await;
            assert_eq!(
                (st, body.as_str()),
                (StatusCode::ACCEPTED, "scale-out requested")
            );
            finish_scale_out(&store, lb.id).await;
        }
    }
}
