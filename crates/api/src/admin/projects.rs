//! A minimal Keystone project lookup (`GET /projects/{id}`, `GET /projects?name=`) for
//! `klb serve` used alone.
//!
//! Why: with `openstack --os-auth-type none --os-endpoint URL`, the CLI's
//! `loadbalancer quota set/unset/reset PROJECT` resolves PROJECT through the identity API on
//! that same endpoint before calling `/v2/lbaas/quotas/{id}`. klb has no project registry
//! (projects are just the ids callers present), so every well-formed id resolves to itself.
//! In a Keystone deployment clients resolve projects at Keystone; here only an admin (or the
//! project itself) gets an answer, so nothing is revealed that the caller could not name.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::AppState;
use crate::admin::may_list_globally;
use crate::context::{Action, Op, RequestContext, Resource as R};
use crate::error::{ApiError, ApiResult};
use crate::v2::common::QueryPairs;

/// Keystone's project id limit.
const MAX_ID: usize = 64;

fn not_found(id: &str) -> ApiError {
    ApiError::NotFound(format!(
        "Could not find project: {}.",
        klb_model::validate::printable(id)
    ))
}

/// The project `id` as Keystone would show it, if this caller may resolve it.
fn project(ctx: &RequestContext, id: &str) -> Option<Value> {
    let well_formed = !id.is_empty()
        && id.len() <= MAX_ID
        && !id.contains('/')
        && !klb_model::validate::has_control(id);
    let allowed = ctx.project_id.as_deref() == Some(id)
        || may_list_globally(ctx, Action::new(R::Quota, Op::GetAllGlobal));
    (well_formed && allowed).then(|| {
        json!({"id": id, "name": id, "domain_id": "default", "description": "", "enabled": true,
            "parent_id": "default", "is_domain": false, "tags": [], "options": {},
            "links": {"self": format!("/v3/projects/{id}")}})
    })
}

/// GET /projects/{id}
pub async fn get_one(
    State(_state): State<AppState>,
    ctx: RequestContext,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let p = project(&ctx, &id).ok_or_else(|| not_found(&id))?;
    Ok(axum::Json(json!({ "project": p })).into_response())
}

/// GET /projects (`?name=` or `?id=`): at most the one project that name denotes.
pub async fn list(
    State(_state): State<AppState>,
    ctx: RequestContext,
    q: QueryPairs,
) -> ApiResult<Response> {
    let wanted = q
        .get("name")
        .or_else(|| q.get("id"))
        .map(str::to_owned)
        .or_else(|| ctx.project_id.clone());
    let projects: Vec<Value> = wanted
        .and_then(|id| project(&ctx, &id))
        .into_iter()
        .collect();
    Ok(axum::Json(json!({"projects": projects, "links": {"self": "/v3/projects", "previous": null, "next": null}})).into_response())
}
