//! klb's alarm webhook: the PPS alarm (Aodh, or the local evaluator) POSTs here when a load
//! balancer's packet rate stays above `ceilometer_pps_threshold`; klb then scales the
//! active-active set out by one LB VM (a job the flow provider turns into a scale-out flow).
//!
//! Authentication: a token in the URL (`?token=`), compared in constant time. Aodh's webhook
//! actions can only carry what the URL holds.

use axum::Json;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::post;
use klb_model::{Kind, LoadBalancer, ProvisioningStatus};
use klb_store::{JobOp, NewJob, Store};
use serde::Deserialize;
use uuid::Uuid;

use klb_flow::jobs::SCALE_OUT;

/// The webhook path.
pub const PATH: &str = "/v1/alarms";

#[derive(Clone)]
struct WebhookState {
    store: Store,
    token: String,
}

/// Routes of the webhook.
pub fn router(store: Store, token: String) -> Router {
    Router::new()
        .route(PATH, post(alarm))
        .with_state(WebhookState { store, token })
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
    match request_scale_out(&state.store, lb_id).await {
        Ok(true) => {
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
        target_kind: Kind::LoadBalancer.as_str().to_owned(),
        target_id: lb_id.to_string(),
        payload: Some(serde_json::json!({ "action": SCALE_OUT }).to_string()),
    })
    .await?;
    tx.commit().await?;
    Ok(true)
}
