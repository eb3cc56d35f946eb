//! Admin and global resources (quotas, providers, flavors, flavor profiles, availability zones
//! and their profiles, amphorae/LB VMs). `klb-api` merges [`routes`] into the v2 tree.
//!
//! Routes use **full canonical paths** (`/v2/quotas`, `/v2/octavia/amphorae`): the router
//! rewrites `/v2.0/...`, `/v2/lbaas/...`, `/v2.0/lbaas/...` and a `.json` suffix to that
//! form before routing. Handlers take `crate::context::RequestContext` (the policy hook is
//! `ctx.authorize`), return `crate::error::ApiResult`, read bodies with
//! `crate::body::JsonBody` and keep their documents in the store under their own kinds:
//!
//! | kind | id | indexed columns |
//! |---|---|---|
//! | `quota` | project id | `project_id` |
//! | `flavor` | uuid | `ref_id` = flavor profile |
//! | `flavorprofile` | uuid | |
//! | `availability_zone` | name | `ref_id` = AZ profile |
//! | `availability_zone_profile` | uuid | |
//! | `lbvm` (written by the flow engine) | uuid | `loadbalancer_id`, `parent_id` |
//!
//! Bodies are the Octavia response objects themselves (these kinds have no model type: they
//! are configuration records the API owns). Each resource declares its attributes once, in a
//! `Table<Body>` of stored attributes (`crate::v2::fields`): the accepted keys, how POST and
//! PUT read them, and the rendered object all come from it.

use axum::Router;
use axum::routing::{get, put};
use klb_store::{Document, DocumentKind};
use serde_json::{Map, Value};

use crate::AppState;
use crate::context::{Action, RequestContext};
use crate::error::{ApiError, ApiResult};
use crate::v2::fields::{Body, Table};

pub mod amphorae;
pub mod availability_zones;
pub mod flavors;
mod profiles;
pub mod providers;
pub mod quotas;

pub use quotas::{QuotaDefaults, StoredQuotas};

/// The admin routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v2/quotas", get(quotas::list))
        .route(
            "/v2/quotas/{project_id}",
            get(quotas::get_one)
                .put(quotas::update)
                .delete(quotas::reset),
        )
        .route("/v2/quotas/{project_id}/default", get(quotas::get_defaults))
        .route("/v2/providers", get(providers::list))
        .route(
            "/v2/providers/{provider}/flavor_capabilities",
            get(providers::flavor_capabilities),
        )
        .route(
            "/v2/providers/{provider}/availability_zone_capabilities",
            get(providers::availability_zone_capabilities),
        )
        .route("/v2/flavors", get(flavors::list).post(flavors::create))
        .route(
            "/v2/flavors/{id}",
            get(flavors::get_one)
                .put(flavors::update)
                .delete(flavors::delete),
        )
        .route(
            "/v2/flavorprofiles",
            get(flavors::list_profiles).post(flavors::create_profile),
        )
        .route(
            "/v2/flavorprofiles/{id}",
            get(flavors::get_profile)
                .put(flavors::update_profile)
                .delete(flavors::delete_profile),
        )
        .route(
            "/v2/availabilityzones",
            get(availability_zones::list).post(availability_zones::create),
        )
        .route(
            "/v2/availabilityzones/{name}",
            get(availability_zones::get_one)
                .put(availability_zones::update)
                .delete(availability_zones::delete),
        )
        .route(
            "/v2/availabilityzoneprofiles",
            get(availability_zones::list_profiles).post(availability_zones::create_profile),
        )
        .route(
            "/v2/availabilityzoneprofiles/{id}",
            get(availability_zones::get_profile)
                .put(availability_zones::update_profile)
                .delete(availability_zones::delete_profile),
        )
        .route("/v2/octavia/amphorae", get(amphorae::list))
        .route(
            "/v2/octavia/amphorae/{id}",
            get(amphorae::get_one).delete(amphorae::delete),
        )
        .route("/v2/octavia/amphorae/{id}/stats", get(amphorae::stats))
        .route(
            "/v2/octavia/amphorae/{id}/failover",
            put(amphorae::failover),
        )
        .route("/v2/octavia/amphorae/{id}/config", put(amphorae::config))
}

/// Octavia's reserved placeholder id (`constants.NIL_UUID`): GET/PUT/DELETE answer 404.
pub const NIL_UUID: &str = "00000000-0000-0000-0000-000000000000";

/// The policy hook for objects that belong to no project (flavors, AZs, profiles, amphorae,
/// providers): Octavia checks them against the caller's own project
/// (`_auth_validate_action(context, context.project_id, ...)`), so reads pass for any role
/// on the caller's project and writes need an admin rule.
pub(crate) fn authorize_global(ctx: &RequestContext, action: Action) -> ApiResult<()> {
    ctx.authorize(action, ctx.project_id.as_deref())
        .map_err(|_| ApiError::Forbidden)
}

/// True when the caller may list every project (`*:get_all-global`). The target is a project
/// nobody owns: Octavia's rule does not depend on it, and a scope-only policy grants it to
/// admins only.
pub(crate) fn may_list_globally(ctx: &RequestContext, action: Action) -> bool {
    ctx.authorize(action, Some("\u{0}all-projects")).is_ok()
}

/// A new configuration document whose body is `body`.
pub(crate) fn new_doc(
    kind: DocumentKind,
    id: &str,
    project_id: Option<&str>,
    ref_id: Option<&str>,
    body: &Map<String, Value>,
) -> Document {
    let mut doc = Document::new(
        kind,
        id,
        project_id,
        Value::Object(body.clone()).to_string(),
    );
    doc.ref_id = ref_id.map(str::to_owned);
    doc
}

/// The stored body of a configuration document.
pub(crate) fn body_of(doc: &Document) -> ApiResult<Map<String, Value>> {
    match serde_json::from_str(&doc.body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ApiError::Internal(
            format!("{} {} has a non-object body", doc.kind, doc.id).into(),
        )),
        Err(e) => Err(ApiError::internal(e)),
    }
}

/// Replaces the body of `doc` (keeping its indexed columns unless the caller changed them).
pub(crate) fn set_body(doc: &mut Document, body: &Map<String, Value>) {
    doc.body = Value::Object(body.clone()).to_string();
}

/// The rendered object of a stored body: `table`'s attributes.
pub(crate) fn render_with(table: &Table<Body>, body: &Body) -> Map<String, Value> {
    let mut m = Map::new();
    table.render(body, &mut m);
    m
}

/// A list reply whose links key is not `<envelope>_links` (Octavia's profiles use the
/// singular: `flavorprofile_links`, `availability_zone_profile_links`).
pub(crate) fn reply_list_with(
    envelope: &str,
    links_key: &str,
    items: Vec<Value>,
    links: Vec<Value>,
) -> axum::response::Response {
    let mut outer = Map::with_capacity(2);
    outer.insert(envelope.to_owned(), Value::Array(items));
    outer.insert(links_key.to_owned(), Value::Array(links));
    axum::response::IntoResponse::into_response(axum::Json(Value::Object(outer)))
}

/// `relate` for [`crate::list::run`]: configuration documents have no relation lists.
pub(crate) fn no_relations(_: &mut Map<String, Value>, _: &crate::list::RelIndex) {}

/// How a global configuration kind (flavors, availability zones and their profiles) is
/// listed.
pub(crate) struct ConfigList {
    /// RBAC resource of the `GetAll` check.
    pub resource: crate::context::Resource,
    /// Store kind.
    pub kind: DocumentKind,
    /// Octavia's default sort keys of the kind (see
    /// [`crate::list::ListParams::default_sort`]).
    pub default_sort: &'static [&'static str],
    /// Renders a document through the kind's table.
    pub render: crate::list::RenderFn,
}

/// The listing of a global configuration kind after the `GetAll` policy check: (items,
/// links).
pub(crate) async fn list_config(
    state: &AppState,
    ctx: &RequestContext,
    spec: &ConfigList,
    pairs: &[(String, String)],
    path: &str,
) -> ApiResult<(Vec<Value>, Vec<Value>)> {
    authorize_global(ctx, Action::new(spec.resource, crate::context::Op::GetAll))?;
    let mut params = crate::list::ListParams::parse(pairs)?;
    params.default_sort(spec.default_sort);
    let listing = crate::list::Listing {
        base: klb_store::ListQuery::kind(spec.kind),
        column_filters: &[],
        with_relations: false,
    };
    crate::list::run(state, path, &params, listing, spec.render, no_relations).await
}

/// One global configuration document's body after the `GetOne` policy check; the nil UUID
/// answers `nil` (Octavia's controllers refuse it explicitly), a miss answers `missing`.
pub(crate) async fn get_config(
    state: &AppState,
    ctx: &RequestContext,
    resource: crate::context::Resource,
    kind: DocumentKind,
    id: &str,
    nil: impl FnOnce() -> ApiError,
    missing: impl FnOnce() -> ApiError,
) -> ApiResult<Map<String, Value>> {
    authorize_global(ctx, Action::new(resource, crate::context::Op::GetOne))?;
    if id == NIL_UUID {
        return Err(nil());
    }
    let doc = state.store.get(kind, id).await?.ok_or_else(missing)?;
    body_of(&doc)
}

#[cfg(test)]
mod tests;
