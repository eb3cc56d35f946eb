//! Availability zones and their profiles (`/v2/availabilityzones`,
//! `/v2/availabilityzoneprofiles`, octavia-api.md §11). Octavia:
//! `controllers/availability_zones.py`, `controllers/availability_zone_profiles.py`.
//!
//! An availability zone is keyed by its **name** (it has no id); its profile's
//! `availability_zone_data` (a JSON string) tells klb's driver where to build LB VMs (see
//! `providers::AVAILABILITY_ZONE_CAPABILITIES`).

use std::sync::LazyLock;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use klb_store::DocumentKind;
use serde_json::{Map, Value};

use crate::AppState;
use crate::admin::flavors::{text_of, used_by_load_balancers};
use crate::admin::profiles::{self, ProfileSpec};
use crate::admin::{ConfigList, NIL_UUID, authorize_global, body_of, new_doc, providers};
use crate::admin::{get_config, list_config, render_with, set_body};
use crate::body::{JsonBody, Obj};
use crate::context::{Action, Op, RequestContext, Resource as R};
use crate::error::{ApiError, ApiResult};
use crate::list;
use crate::v2::common::{OrigPath, QueryPairs, no_content, reply, reply_list};
use crate::v2::fields::{Attr, Body, Table, read};

const KIND: DocumentKind = DocumentKind::AvailabilityZone;

/// The zone's attributes (see [`crate::v2::fields`]); name and profile are fixed once
/// created.
static TABLE: LazyLock<Table<Body>> = LazyLock::new(|| {
    type A = Attr<Body>;
    Table::new(vec![
        A::stored("name", read::checked(255, check_name)).required(),
        A::stored("description", read::text()).updatable(),
        A::stored_or("enabled", read::boolean(), Value::Bool(true))
            .updatable()
            .not_null(),
        A::stored("availability_zone_profile_id", read::uuid()).required(),
    ])
});

/// The name is the path key: it must be addressable and printable.
fn check_name(s: &str) -> Result<(), String> {
    if s.is_empty() || s.contains('/') || klb_model::validate::has_control(s) {
        Err("Value should be a non-empty name without '/' or control characters".to_owned())
    } else {
        Ok(())
    }
}

static PROFILE_TABLE: LazyLock<Table<Body>> =
    LazyLock::new(|| profiles::table("availability_zone_data"));

fn profile_table() -> &'static Table<Body> {
    &PROFILE_TABLE
}

fn render_profile(doc: &klb_store::Document) -> ApiResult<Map<String, Value>> {
    Ok(render_with(&PROFILE_TABLE, &body_of(doc)?))
}

fn render(body: &Body) -> Map<String, Value> {
    render_with(&TABLE, body)
}

fn render_doc(doc: &klb_store::Document) -> ApiResult<Map<String, Value>> {
    Ok(render(&body_of(doc)?))
}

// Octavia's AZ model has neither `created_at` nor `id`, so its list has no default order (no
// ORDER BY); klb keeps the store's, creation order.
const LIST: ConfigList = ConfigList {
    resource: R::AvailabilityZone,
    kind: KIND,
    default_sort: &[],
    render: render_doc,
};

const PROFILE: ProfileSpec = ProfileSpec {
    kind: DocumentKind::AvailabilityZoneProfile,
    single: "availability_zone_profile",
    plural: "availability_zone_profiles",
    links: "availability_zone_profile_links",
    arg: "availability_zone_profile_",
    data_field: "availability_zone_data",
    explicit_name: "Availability Zone Profile",
    lookup_name: "Availability Zone Profile",
    resource: R::AvailabilityZoneProfile,
    user_kind: KIND,
    validate: providers::validate_availability_zone,
    table: profile_table,
    render: render_profile,
};

fn not_found(name: &str) -> ApiError {
    ApiError::NotFound(format!(
        "Availability Zone {} not found.",
        klb_model::validate::printable(name)
    ))
}

/// GET /v2/availabilityzones
pub async fn list(
    State(state): State<AppState>,
    ctx: RequestContext,
    q: QueryPairs,
    OrigPath(path): OrigPath,
) -> ApiResult<Response> {
    let (items, links) = list_config(&state, &ctx, &LIST, &q.0, &path).await?;
    Ok(reply_list("availability_zones", items, links))
}

/// GET /v2/availabilityzones/{name}
pub async fn get_one(
    State(state): State<AppState>,
    ctx: RequestContext,
    Path(name): Path<String>,
    q: QueryPairs,
) -> ApiResult<Response> {
    let body = get_config(
        &state,
        &ctx,
        R::AvailabilityZone,
        KIND,
        &name,
        || not_found(&name),
        || not_found(&name),
    )
    .await?;
    Ok(reply(
        StatusCode::OK,
        "availability_zone",
        list::select_fields(render(&body), &q.fields()),
    ))
}

/// POST /v2/availabilityzones
pub async fn create(
    State(state): State<AppState>,
    ctx: RequestContext,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    authorize_global(&ctx, Action::new(R::AvailabilityZone, Op::Post))?;
    let obj = Obj::envelope(
        &body,
        "availability_zone",
        "availability_zone_",
        TABLE.create_keys(),
    )?;
    let mut m = Body::new();
    TABLE.create(&obj, &mut m, &state.config, None)?;
    let name = text_of(&m, "name");
    let profile_id = text_of(&m, "availability_zone_profile_id");
    let mut tx = state.store.begin().await?;
    if tx
        .get_for_update(PROFILE.kind, &profile_id)
        .await?
        .is_none()
    {
        return Err(ApiError::BadRequest(format!(
            "Availability Zone Profile {profile_id} not found."
        )));
    }
    if tx.get_for_update(KIND, &name).await?.is_some() {
        return Err(ApiError::Conflict(format!(
            "A availability zone of {} already exists.",
            klb_model::validate::printable(&name)
        )));
    }
    tx.insert(&new_doc(KIND, &name, None, Some(&profile_id), &m))
        .await?;
    tx.commit().await?;
    Ok(reply(
        StatusCode::CREATED,
        "availability_zone",
        Value::Object(render(&m)),
    ))
}

/// PUT /v2/availabilityzones/{name}: `description`, `enabled`.
pub async fn update(
    State(state): State<AppState>,
    ctx: RequestContext,
    Path(name): Path<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    authorize_global(&ctx, Action::new(R::AvailabilityZone, Op::Put))?;
    if name == NIL_UUID {
        return Err(not_found(&name));
    }
    let obj = Obj::envelope(
        &body,
        "availability_zone",
        "availability_zone_",
        TABLE.update_keys(),
    )?;
    let patch = TABLE.patch(&obj, &state.config)?;
    let mut tx = state.store.begin().await?;
    let mut doc = tx
        .get_for_update(KIND, &name)
        .await?
        .ok_or_else(|| not_found(&name))?;
    let mut m = body_of(&doc)?;
    m.extend(patch);
    set_body(&mut doc, &m);
    tx.update(&mut doc).await?;
    tx.commit().await?;
    Ok(reply(
        StatusCode::OK,
        "availability_zone",
        Value::Object(render(&m)),
    ))
}

/// DELETE /v2/availabilityzones/{name}: 409 while a load balancer uses it.
pub async fn delete(
    State(state): State<AppState>,
    ctx: RequestContext,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    authorize_global(&ctx, Action::new(R::AvailabilityZone, Op::Delete))?;
    if name == NIL_UUID {
        return Err(not_found(&name));
    }
    let mut tx = state.store.begin().await?;
    if tx.get_for_update(KIND, &name).await?.is_none() {
        return Err(not_found(&name));
    }
    if used_by_load_balancers(&mut tx, "availability_zone", &name).await? {
        return Err(ApiError::Conflict(format!(
            "Availability Zone {} is in use and cannot be modified.",
            klb_model::validate::printable(&name)
        )));
    }
    tx.delete(KIND, &name).await?;
    tx.commit().await?;
    Ok(no_content())
}

/// GET /v2/availabilityzoneprofiles
pub async fn list_profiles(
    State(state): State<AppState>,
    ctx: RequestContext,
    q: QueryPairs,
    OrigPath(path): OrigPath,
) -> ApiResult<Response> {
    profiles::list(&state, &ctx, &PROFILE, &q.0, &path).await
}

/// GET /v2/availabilityzoneprofiles/{id}
pub async fn get_profile(
    State(state): State<AppState>,
    ctx: RequestContext,
    Path(id): Path<String>,
    q: QueryPairs,
) -> ApiResult<Response> {
    profiles::get_one(&state, &ctx, &PROFILE, &id, &q.fields()).await
}

/// POST /v2/availabilityzoneprofiles
pub async fn create_profile(
    State(state): State<AppState>,
    ctx: RequestContext,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    profiles::create(&state, &ctx, &PROFILE, &body).await
}

/// PUT /v2/availabilityzoneprofiles/{id}
pub async fn update_profile(
    State(state): State<AppState>,
    ctx: RequestContext,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    profiles::update(&state, &ctx, &PROFILE, &id, &body).await
}

/// DELETE /v2/availabilityzoneprofiles/{id}
pub async fn delete_profile(
    State(state): State<AppState>,
    ctx: RequestContext,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    profiles::delete(&state, &ctx, &PROFILE, &id).await
}
