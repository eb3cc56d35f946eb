//! Flavors and flavor profiles (`/v2/flavors`, `/v2/flavorprofiles`, octavia-api.md §10).
//! Octavia: `controllers/flavors.py`, `controllers/flavor_profiles.py`, `types/flavors.py`.
//!
//! A flavor names a profile; the profile's `flavor_data` (a JSON string) is what klb's driver
//! reads when it builds a load balancer's LB VMs (see `providers::FLAVOR_CAPABILITIES`).
//! Names are unique; a profile used by a flavor cannot change provider or data nor be
//! deleted; a flavor used by a load balancer cannot be deleted.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use klb_store::{DocumentKind, ListQuery, WriteTx};
use serde_json::{Map, Value};

use crate::AppState;
use crate::admin::profiles::{self, ProfileSpec};
use crate::admin::{NIL_UUID, authorize_global, body_of, new_doc, providers, set_body};
use crate::admin::{get_config, list_config};
use crate::body::{Field, JsonBody, Obj, required};
use crate::context::{Action, Op, RequestContext, Resource as R};
use crate::error::{ApiError, ApiResult};
use crate::list;
use crate::v2::common::{OrigPath, QueryPairs, no_content, reply, reply_list};

const KIND: DocumentKind = DocumentKind::Flavor;

const PROFILE: ProfileSpec = ProfileSpec {
    kind: DocumentKind::FlavorProfile,
    single: "flavorprofile",
    plural: "flavorprofiles",
    links: "flavorprofile_links",
    arg: "flavor_profile_",
    data_field: "flavor_data",
    explicit_name: "Flavor profile",
    lookup_name: "Flavor Profile",
    resource: R::FlavorProfile,
    user_kind: KIND,
    validate: providers::validate_flavor,
};

fn not_found(id: &str) -> ApiError {
    ApiError::NotFound(format!(
        "Flavor {} not found.",
        klb_model::validate::printable(id)
    ))
}

fn duplicate(name: &str) -> ApiError {
    ApiError::Conflict(format!(
        "A flavor of {} already exists.",
        klb_model::validate::printable(name)
    ))
}

/// True if another flavor (not `except`) is called `name`.
async fn name_taken(tx: &mut WriteTx, name: &str, except: Option<&str>) -> ApiResult<bool> {
    for doc in tx.list(&ListQuery::kind(KIND)).await? {
        if Some(doc.id.as_str()) != except
            && body_of(&doc)?.get("name").and_then(Value::as_str) == Some(name)
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Load balancers whose `body_key` equals `value` (flavor id, availability zone name).
pub(crate) async fn used_by_load_balancers(
    tx: &mut WriteTx,
    body_key: &str,
    value: &str,
) -> ApiResult<bool> {
    for doc in tx
        .list(&ListQuery::kind(klb_model::Kind::LoadBalancer))
        .await?
    {
        let body: Value = serde_json::from_str(&doc.body).map_err(ApiError::internal)?;
        if body.get(body_key).and_then(Value::as_str) == Some(value) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// GET /v2/flavors
pub async fn list(
    State(state): State<AppState>,
    ctx: RequestContext,
    q: QueryPairs,
    OrigPath(path): OrigPath,
) -> ApiResult<Response> {
    let (items, links) = list_config(&state, &ctx, R::Flavor, KIND, &["id"], &q.0, &path).await?;
    Ok(reply_list("flavors", items, links))
}

/// GET /v2/flavors/{id}
pub async fn get_one(
    State(state): State<AppState>,
    ctx: RequestContext,
    Path(id): Path<String>,
    q: QueryPairs,
) -> ApiResult<Response> {
    let body = get_config(
        &state,
        &ctx,
        R::Flavor,
        KIND,
        &id,
        || not_found(&id),
        || not_found(&id),
    )
    .await?;
    Ok(reply(
        StatusCode::OK,
        "flavor",
        list::select_fields(body, &q.fields()),
    ))
}

/// POST /v2/flavors
pub async fn create(
    State(state): State<AppState>,
    ctx: RequestContext,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    authorize_global(&ctx, Action::new(R::Flavor, Op::Post))?;
    let obj = Obj::envelope(
        &body,
        "flavor",
        "flavor_",
        &["name", "description", "enabled", "flavor_profile_id"],
    )?;
    let name = required("name", obj.text("name", 255)?)?;
    let description = obj.text("description", 255)?.opt();
    let enabled = obj.bool("enabled")?.or(true);
    let profile_id = required("flavor_profile_id", obj.uuid("flavor_profile_id")?)?.to_string();
    let mut tx = state.store.begin().await?;
    if tx
        .get_for_update(PROFILE.kind, &profile_id)
        .await?
        .is_none()
    {
        return Err(ApiError::BadRequest(format!(
            "Flavor profile {profile_id} not found."
        )));
    }
    if name_taken(&mut tx, &name, None).await? {
        return Err(duplicate(&name));
    }
    let id = uuid::Uuid::new_v4().to_string();
    let mut m = Map::new();
    m.insert("id".into(), Value::String(id.clone()));
    m.insert("name".into(), Value::String(name));
    m.insert(
        "description".into(),
        description.map(Value::String).unwrap_or(Value::Null),
    );
    m.insert("enabled".into(), Value::Bool(enabled));
    m.insert(
        "flavor_profile_id".into(),
        Value::String(profile_id.clone()),
    );
    tx.insert(&new_doc(KIND, &id, None, Some(&profile_id), &m))
        .await?;
    tx.commit().await?;
    Ok(reply(StatusCode::CREATED, "flavor", Value::Object(m)))
}

/// PUT /v2/flavors/{id}: `name`, `description`, `enabled` (the profile is fixed).
pub async fn update(
    State(state): State<AppState>,
    ctx: RequestContext,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    authorize_global(&ctx, Action::new(R::Flavor, Op::Put))?;
    if id == NIL_UUID {
        return Err(not_found(&id));
    }
    let obj = Obj::envelope(
        &body,
        "flavor",
        "flavor_",
        &["name", "description", "enabled"],
    )?;
    let name = obj.text("name", 255)?;
    let description = obj.text("description", 255)?;
    let enabled = obj.bool("enabled")?;
    if matches!(name, Field::Null) {
        return Err(ApiError::invalid_option("None", "name"));
    }
    if matches!(enabled, Field::Null) {
        return Err(ApiError::invalid_option("None", "enabled"));
    }
    let mut tx = state.store.begin().await?;
    let mut doc = tx
        .get_for_update(KIND, &id)
        .await?
        .ok_or_else(|| not_found(&id))?;
    let mut m = body_of(&doc)?;
    if let Field::Set(n) = name {
        if name_taken(&mut tx, &n, Some(&id)).await? {
            return Err(duplicate(&n));
        }
        m.insert("name".into(), Value::String(n));
    }
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
    Ok(reply(StatusCode::OK, "flavor", Value::Object(m)))
}

/// DELETE /v2/flavors/{id}: 409 while a load balancer uses it.
pub async fn delete(
    State(state): State<AppState>,
    ctx: RequestContext,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    authorize_global(&ctx, Action::new(R::Flavor, Op::Delete))?;
    if id == NIL_UUID {
        return Err(not_found(&id));
    }
    let mut tx = state.store.begin().await?;
    if tx.get_for_update(KIND, &id).await?.is_none() {
        return Err(not_found(&id));
    }
    if used_by_load_balancers(&mut tx, "flavor_id", &id).await? {
        return Err(ApiError::Conflict(format!(
            "Flavor {id} is in use and cannot be modified."
        )));
    }
    tx.delete(KIND, &id).await?;
    tx.commit().await?;
    Ok(no_content())
}

/// GET /v2/flavorprofiles
pub async fn list_profiles(
    State(state): State<AppState>,
    ctx: RequestContext,
    q: QueryPairs,
    OrigPath(path): OrigPath,
) -> ApiResult<Response> {
    profiles::list(&state, &ctx, &PROFILE, &q.0, &path).await
}

/// GET /v2/flavorprofiles/{id}
pub async fn get_profile(
    State(state): State<AppState>,
    ctx: RequestContext,
    Path(id): Path<String>,
    q: QueryPairs,
) -> ApiResult<Response> {
    profiles::get_one(&state, &ctx, &PROFILE, &id, &q.fields()).await
}

/// POST /v2/flavorprofiles
pub async fn create_profile(
    State(state): State<AppState>,
    ctx: RequestContext,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    profiles::create(&state, &ctx, &PROFILE, &body).await
}

/// PUT /v2/flavorprofiles/{id}
pub async fn update_profile(
    State(state): State<AppState>,
    ctx: RequestContext,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    profiles::update(&state, &ctx, &PROFILE, &id, &body).await
}

/// DELETE /v2/flavorprofiles/{id}
pub async fn delete_profile(
    State(state): State<AppState>,
    ctx: RequestContext,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    profiles::delete(&state, &ctx, &PROFILE, &id).await
}
