//! The admin amphora API (`/v2/octavia/amphorae`, octavia-api.md §12), backed by klb's LB VM
//! records (kind `lbvm`, written by the flow engine). Octavia: `controllers/amphora.py`.
//!
//! Failover, config push and delete are jobs for the flow engine, like every other change:
//! - failover: the load balancer goes `PENDING_UPDATE`, job `Failover` with target
//!   `lbvm/<id>` (rebuild that one VM);
//! - config: job `Update` with target `lbvm/<id>` and no status change (re-push the agent
//!   configuration);
//! - delete (VM in `ERROR` only): the VM goes `PENDING_DELETE`, job `Delete` with target
//!   `lbvm/<id>`; the flow removes the record when the VM is gone.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use klb_model::{Kind, LbVm, LbVmStatus, LoadBalancer, ProvisioningStatus, status};
use klb_store::{Document, JobAction, JobOp, JobPayload, ListQuery, NewJob};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::AppState;
use crate::admin::{authorize_global, no_relations};
use crate::context::{Action, Op, RequestContext, Resource as R};
use crate::error::{ApiError, ApiResult};
use crate::list::{self, Column, ListParams, Listing};
use crate::v2::common::{
    OrigPath, QueryPairs, accepted, enqueue, no_content, now, reply, reply_list, ts, ts_opt,
};
use crate::v2::loadbalancers::read_stats;

fn not_found(id: &str) -> ApiError {
    ApiError::not_found(Kind::LbVm, id)
}

fn immutable(id: &str) -> ApiError {
    ApiError::Conflict(format!("amphora {id} is immutable and cannot be updated."))
}

fn ip(v: &Option<std::net::IpAddr>) -> Value {
    v.map(|a| Value::String(a.to_string()))
        .unwrap_or(Value::Null)
}

fn string(v: &Option<String>) -> Value {
    v.clone().map(Value::String).unwrap_or(Value::Null)
}

/// Octavia's `AmphoraResponse`.
pub fn render(vm: &LbVm) -> Map<String, Value> {
    let mut m = Map::with_capacity(20);
    m.insert("id".into(), Value::String(vm.id.to_string()));
    m.insert(
        "loadbalancer_id".into(),
        vm.loadbalancer_id
            .map(|u| Value::String(u.to_string()))
            .unwrap_or(Value::Null),
    );
    m.insert("compute_id".into(), string(&vm.compute_id));
    m.insert("lb_network_ip".into(), ip(&vm.lb_network_ip));
    m.insert("vrrp_ip".into(), ip(&vm.vrrp_ip));
    m.insert("ha_ip".into(), ip(&vm.ha_ip));
    m.insert("vrrp_port_id".into(), string(&vm.vrrp_port_id));
    m.insert("ha_port_id".into(), string(&vm.ha_port_id));
    m.insert("cert_expiration".into(), ts_opt(vm.cert_expiration));
    m.insert("cert_busy".into(), Value::Bool(vm.cert_busy));
    m.insert(
        "role".into(),
        vm.role
            .map(|r| Value::String(r.to_string()))
            .unwrap_or(Value::Null),
    );
    m.insert("status".into(), Value::String(vm.status.to_string()));
    m.insert("vrrp_interface".into(), string(&vm.vrrp_interface));
    m.insert(
        "vrrp_id".into(),
        vm.vrrp_id.map(Value::from).unwrap_or(Value::Null),
    );
    m.insert(
        "vrrp_priority".into(),
        vm.vrrp_priority.map(Value::from).unwrap_or(Value::Null),
    );
    m.insert("cached_zone".into(), string(&vm.cached_zone));
    m.insert("created_at".into(), ts(vm.created_at));
    m.insert("updated_at".into(), ts_opt(vm.updated_at));
    m.insert("image_id".into(), string(&vm.image_id));
    m.insert("compute_flavor".into(), string(&vm.compute_flavor));
    m
}

fn render_doc(doc: &Document) -> ApiResult<Map<String, Value>> {
    Ok(render(&doc.decode::<LbVm>()?))
}

/// A live (not `DELETED`) LB VM, or 404.
async fn load(state: &AppState, id: &str) -> ApiResult<LbVm> {
    let uuid = Uuid::parse_str(id).map_err(|_| not_found(id))?;
    match state.store.get_resource::<LbVm>(uuid).await? {
        Some(vm) if vm.status != LbVmStatus::Deleted => Ok(vm),
        _ => Err(not_found(id)),
    }
}

/// GET /v2/octavia/amphorae
pub async fn list(
    State(state): State<AppState>,
    ctx: RequestContext,
    q: QueryPairs,
    OrigPath(path): OrigPath,
) -> ApiResult<Response> {
    authorize_global(&ctx, Action::new(R::Amphora, Op::GetAll))?;
    let params = ListParams::parse(&q.0)?;
    let listing = Listing {
        base: ListQuery::kind(Kind::LbVm),
        // `loadbalancer_id` (the API name) and `load_balancer_id` (the data model's).
        column_filters: &[
            ("loadbalancer_id", Column::LoadBalancer),
            ("load_balancer_id", Column::LoadBalancer),
        ],
        with_relations: false,
    };
    let (items, links) =
        list::run(&state, &path, &params, listing, render_doc, no_relations).await?;
    // Octavia hides DELETED amphorae. klb's flow removes a VM's record when the VM is gone,
    // so a DELETED record is a leftover; it is dropped from the page (which may then be
    // shorter than `limit`).
    let items = items
        .into_iter()
        .filter(|i| i.get("status").and_then(Value::as_str) != Some("DELETED"))
        .collect();
    Ok(reply_list("amphorae", items, links))
}

/// GET /v2/octavia/amphorae/{id}
pub async fn get_one(
    State(state): State<AppState>,
    ctx: RequestContext,
    Path(id): Path<String>,
    q: QueryPairs,
) -> ApiResult<Response> {
    let vm = load(&state, &id).await?;
    authorize_global(&ctx, Action::new(R::Amphora, Op::GetOne))?;
    Ok(reply(
        StatusCode::OK,
        "amphora",
        list::select_fields(render(&vm), &q.fields()),
    ))
}

/// GET /v2/octavia/amphorae/{id}/stats: one entry per listener of the VM's load balancer, with
/// what this VM alone served (from its heartbeats, stored by the health manager; zeros until
/// it reported).
pub async fn stats(
    State(state): State<AppState>,
    ctx: RequestContext,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    authorize_global(&ctx, Action::new(R::Amphora, Op::GetStats))?;
    let no_stats = || {
        ApiError::NotFound(format!(
            "Amphora stats for {} not found.",
            klb_model::validate::printable(&id)
        ))
    };
    let vm = load(&state, &id).await.map_err(|_| no_stats())?;
    let lb = vm.loadbalancer_id.ok_or_else(no_stats)?;
    let q = ListQuery {
        kind: Some(Kind::Listener.into()),
        parent_id: Some(lb.to_string()),
        ..Default::default()
    };
    let listeners = state.store.list(&q).await?;
    if listeners.is_empty() {
        return Err(no_stats());
    }
    let stored = read_stats(&state, &lb.to_string()).await?;
    let mine = stored.vms.get(&vm.id.to_string());
    let entries: Vec<Value> = listeners
        .iter()
        .map(|l| {
            let c = mine.and_then(|m| m.get(&l.id)).copied().unwrap_or_default();
            json!({"id": vm.id.to_string(), "loadbalancer_id": lb.to_string(),
                "listener_id": l.id, "active_connections": c.active_connections,
                "bytes_in": c.bytes_in, "bytes_out": c.bytes_out,
                "request_errors": c.request_errors, "total_connections": c.total_connections})
        })
        .collect();
    Ok(axum::response::IntoResponse::into_response(axum::Json(
        json!({ "amphora_stats": entries }),
    )))
}

/// PUT /v2/octavia/amphorae/{id}/failover: 202; the load balancer must be ACTIVE.
pub async fn failover(
    State(state): State<AppState>,
    ctx: RequestContext,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let vm = load(&state, &id).await?;
    let lb_id = vm.loadbalancer_id.ok_or_else(|| immutable(&id))?;
    let first: Option<LoadBalancer> = state.store.get_resource(lb_id).await?;
    let project = first.as_ref().map(|lb| lb.project_id.clone());
    ctx.authorize(Action::new(R::Amphora, Op::Failover), project.as_deref())
        .map_err(|_| ApiError::Forbidden)?;
    let mut tx = state.store.begin().await?;
    let mut lb: LoadBalancer = tx
        .get_resource(lb_id)
        .await?
        .ok_or_else(|| immutable(&id))?;
    status::check_lb_mutable(lb.id, lb.provisioning_status)?;
    lb.provisioning_status = ProvisioningStatus::PendingUpdate;
    lb.updated_at = Some(now());
    tx.put_resource(&lb).await?;
    enqueue(&mut tx, lb.id, JobOp::Failover, Kind::LbVm, vm.id).await?;
    tx.commit().await?;
    Ok(accepted())
}

/// PUT /v2/octavia/amphorae/{id}/config: 202; re-pushes the agent configuration.
pub async fn config(
    State(state): State<AppState>,
    ctx: RequestContext,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let vm = load(&state, &id).await?;
    authorize_global(&ctx, Action::new(R::Amphora, Op::Put))?;
    let mut tx = state.store.begin().await?;
    tx.enqueue_job(NewJob {
        loadbalancer_id: vm.loadbalancer_id.unwrap_or(vm.id).to_string(),
        op: JobOp::Update,
        target_kind: Kind::LbVm,
        target_id: vm.id.to_string(),
        payload: Some(
            JobPayload {
                action: Some(JobAction::Config),
                ..JobPayload::default()
            }
            .to_json(),
        ),
    })
    .await?;
    tx.commit().await?;
    Ok(accepted())
}

/// DELETE /v2/octavia/amphorae/{id}: 204; only a VM in `ERROR` may be deleted.
pub async fn delete(
    State(state): State<AppState>,
    ctx: RequestContext,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    authorize_global(&ctx, Action::new(R::Amphora, Op::Delete))?;
    let uuid = Uuid::parse_str(&id).map_err(|_| not_found(&id))?;
    let mut tx = state.store.begin().await?;
    let mut vm: LbVm = match tx.get_resource::<LbVm>(uuid).await? {
        Some(vm) if vm.status != LbVmStatus::Deleted => vm,
        _ => return Err(not_found(&id)),
    };
    if vm.status != LbVmStatus::Error {
        return Err(immutable(&id));
    }
    vm.status = LbVmStatus::PendingDelete;
    vm.updated_at = Some(now());
    tx.put_resource(&vm).await?;
    tx.enqueue_job(NewJob {
        loadbalancer_id: vm.loadbalancer_id.unwrap_or(vm.id).to_string(),
        op: JobOp::Delete,
        target_kind: Kind::LbVm,
        target_id: vm.id.to_string(),
        payload: None,
    })
    .await?;
    tx.commit().await?;
    Ok(no_content())
}
