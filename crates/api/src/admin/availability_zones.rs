//! Availability zones and their profiles (`/v2/availabilityzones`,
//! `/v2/availabilityzoneprofiles`, octavia-api.md §11). Octavia:
//! `controllers/availability_zones.py`, `controllers/availability_zone_profiles.py`.
//!
//! An availability zone is keyed by its **name** (it has no id); its profile's
//! `availability_zone_data` (a JSON string) tells klb's driver where to build LB VMs (see
//! `providers::AVAILABILITY_ZONE_CAPABILITIES`).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use klb_store::DocumentKind;
use serde_json::{Map, Value};

use crate::AppState;
use crate::admin::flavors::used_by_load_balancers;
use crate::admin::profiles::{self, ProfileSpec};
use crate::admin::{NIL_UUID, authorize_global, body_of, new_doc, providers, set_body};
use crate::admin::{get_config, list_config};
use crate::body::{Field, JsonBody, Obj, required};
use crate::context::{Action, Op, RequestContext, Resource as R};
use crate::error::{ApiError, ApiResult};
use crate::list;
use crate::v2::common::{OrigPath, QueryPairs, no_content, reply, reply_list};

const KIND: DocumentKind = DocumentKind::AvailabilityZone;

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
    // Octavia's AZ model has neither `created_at` nor `id`, so its list has no default order
    // (no ORDER BY); klb keeps the store's, creation order.
    let (items, links) =
        list_config(&state, &ctx, R::AvailabilityZone, KIND, &[], &q.0, &path).await?;
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
        list::select_fields(body, &q.fields()),
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
        &[
            "name",
            "description",
            "enabled",
            "availability_zone_profile_id",
        ],
    )?;
    let name = required(
        "name",
        obj.checked("name", 255, |s| {
            // The name is the path key: it must be addressable and printable.
            if s.is_empty() || s.contains('/') || klb_model::validate::has_control(s) {
                Err("Value should be a non-empty name without '/' or control characters".to_owned())
            } else {
                Ok(())
            }
        })?,
    )?;
    let description = obj.text("description", 255)?.opt();
    let enabled = obj.bool("enabled")?.or(true);
    let profile_id = required(
        "availability_zone_profile_id",
        obj.uuid("availability_zone_profile_id")?,
    )?
    .to_string();
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
    let mut m = Map::new();
    m.insert("name".into(), Value::String(name.clone()));
    m.insert(
        "description".into(),
        description.map(Value::String).unwrap_or(Value::Null),
    );
    m.insert("enabled".into(), Value::Bool(enabled));
    m.insert(
        "availability_zone_profile_id".into(),
        Value::String(profile_id.clone()),
    );
    tx.insert(&new_doc(KIND, &name, None, Some(&profile_id), &m))
        .await?;
    tx.commit().await?;
    Ok(reply(
        StatusCode::CREATED,
        "availability_zone",
        Value::Object(m),
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
        &["description", "enabled"],
    )?;
    let description = obj.text("description", 255)?;
    let enabled = obj.bool("enabled")?;
    if matches!(enabled, Field::Null) {
        return Err(ApiError::invalid_option("None", "enabled"));
    }
    let mut tx = state.store.begin().await?;
    let mut doc = tx
        .get_for_update(KIND, &name)
        .await?
        .ok_or_else(|| not_found(&name))?;
    let mut m = body_of(&doc)?;
    if let Some(d) = description.update() {
        m.insert(
            "description".into(),
            d.map(Value::String).unwrap_or(Value::Null),
        );
    }
    if let Field::Set(e) = enabled {
        m.insert("enabled".into(), Value::Bool(e));
    }
    set_body(&mut doc, &m);
    tx.update(&mut doc).await?;
    tx.commit().await?;
    Ok(reply(StatusCode::OK, "availability_zone", Value::Object(m)))
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
