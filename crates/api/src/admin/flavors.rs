//! Flavors and flavor profiles (`/v2/flavors`, `/v2/flavorprofiles`, octavia-api.md §10).
//! Octavia: `controllers/flavors.py`, `controllers/flavor_profiles.py`, `types/flavors.py`.
//!
//! A flavor names a profile; the profile's `flavor_data` (a JSON string) is what klb's driver
//! reads when it builds a load balancer's LB VMs (see `providers::FLAVOR_CAPABILITIES`).
//! Names are unique; a profile used by a flavor cannot change provider or data nor be
//! deleted; a flavor used by a load balancer cannot be deleted.

use std::sync::LazyLock;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use klb_store::{DocumentKind, ListQuery, WriteTx};
use serde_json::{Map, Value};

use crate::AppState;
use crate::admin::profiles::{self, ProfileSpec};
use crate::admin::{ConfigList, NIL_UUID, authorize_global, body_of, new_doc, providers};
use crate::admin::{get_config, list_config, render_with, set_body};
use crate::body::{JsonBody, Obj};
use crate::context::{Action, Op, RequestContext, Resource as R};
use crate::error::{ApiError, ApiResult};
use crate::list;
use crate::v2::common::{OrigPath, QueryPairs, no_content, reply, reply_list};
use crate::v2::fields::{Attr, Body, Table, read};

const KIND: DocumentKind = DocumentKind::Flavor;

/// The flavor's attributes (see [`crate::v2::fields`]); the profile is fixed once created.
static TABLE: LazyLock<Table<Body>> = LazyLock::new(|| {
    type A = Attr<Body>;
    Table::new(vec![
        A::kept("id"),
        A::stored("name", read::text())
            .required()
            .updatable()
            .not_null(),
        A::stored("description", read::text()).updatable(),
        A::stored_or("enabled", read::boolean(), Value::Bool(true))
            .updatable()
            .not_null(),
        A::stored("flavor_profile_id", read::uuid()).required(),
    ])
});

static PROFILE_TABLE: LazyLock<Table<Body>> = LazyLock::new(|| profiles::table("flavor_data"));

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

const LIST: ConfigList = ConfigList {
    resource: R::Flavor,
    kind: KIND,
    default_sort: &["id"],
    render: render_doc,
};

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
    table: profile_table,
    render: render_profile,
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
    let (items, links) = list_config(&state, &ctx, &LIST, &q.0, &path).await?;
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
        list::select_fields(render(&body), &q.fields()),
    ))
}

/// POST /v2/flavors
pub async fn create(
    State(state): State<AppState>,
    ctx: RequestContext,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    authorize_global(&ctx, Action::new(R::Flavor, Op::Post))?;
    let obj = Obj::envelope(&body, "flavor", "flavor_", TABLE.create_keys())?;
    let mut m = Body::new();
    TABLE.create(&obj, &mut m, &state.config, None)?;
    let name = text_of(&m, "name");
    let profile_id = text_of(&m, "flavor_profile_id");
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
    m.insert("id".into(), Value::String(id.clone()));
    tx.insert(&new_doc(KIND, &id, None, Some(&profile_id), &m))
        .await?;
    tx.commit().await?;
    Ok(reply(
        StatusCode::CREATED,
        "flavor",
        Value::Object(render(&m)),
    ))
}

/// A string attribute of a body the table has read (empty if it is not one).
pub(crate) fn text_of(m: &Body, key: &str) -> String {
    m.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
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
    let obj = Obj::envelope(&body, "flavor", "flavor_", TABLE.update_keys())?;
    let patch = TABLE.patch(&obj, &state.config)?;
    let mut tx = state.store.begin().await?;
    let mut doc = tx
        .get_for_update(KIND, &id)
        .await?
        .ok_or_else(|| not_found(&id))?;
    let mut m = body_of(&doc)?;
    if patch.contains_key("name") {
        let n = text_of(&patch, "name");
        if name_taken(&mut tx, &n, Some(&id)).await? {
            return Err(duplicate(&n));
        }
    }
    m.extend(patch);
    set_body(&mut doc, &m);
    tx.update(&mut doc).await?;
    tx.commit().await?;
    Ok(reply(StatusCode::OK, "flavor", Value::Object(render(&m))))
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
