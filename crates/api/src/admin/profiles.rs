//! Flavor profiles and availability-zone profiles: the same resource twice (a name, a
//! provider and a JSON-encoded data string validated by the provider), described by a
//! [`ProfileSpec`]. Octavia: `controllers/flavor_profiles.py`,
//! `controllers/availability_zone_profiles.py`.

use axum::http::StatusCode;
use axum::response::Response;
use klb_store::{DocumentKind, ListQuery, WriteTx};
use serde_json::Value;

use crate::AppState;
use crate::admin::flavors::text_of;
use crate::admin::providers::require_enabled;
use crate::admin::{ConfigList, NIL_UUID, authorize_global, body_of, new_doc, reply_list_with};
use crate::admin::{get_config, list_config, render_with, set_body};
use crate::body::Obj;
use crate::context::{Action, Op, RequestContext, Resource as R};
use crate::error::{ApiError, ApiResult};
use crate::list;
use crate::v2::common::{no_content, reply};
use crate::v2::fields::{Attr, Body, Table, read};

/// Maximum length of the data string.
const MAX_DATA: usize = 4096;

/// What differs between the two profile kinds.
pub(crate) struct ProfileSpec {
    /// Store kind.
    pub kind: DocumentKind,
    /// Single-object envelope.
    pub single: &'static str,
    /// List envelope.
    pub plural: &'static str,
    /// List links key.
    pub links: &'static str,
    /// WSME argument name in "Unknown attribute" faults.
    pub arg: &'static str,
    /// The JSON-string attribute.
    pub data_field: &'static str,
    /// Resource name in the controllers' explicit faults (nil id, delete, in use).
    pub explicit_name: &'static str,
    /// Resource name of a failed lookup (the model's `_name()`).
    pub lookup_name: &'static str,
    /// RBAC resource.
    pub resource: R,
    /// Kind of the documents that reference a profile through `ref_id`.
    pub user_kind: DocumentKind,
    /// Provider validation of the parsed data.
    pub validate: fn(&str, &Value) -> ApiResult<()>,
    /// The attributes ([`table`] of `data_field`).
    pub table: fn() -> &'static Table<Body>,
    /// A stored profile rendered through `table` (for lists).
    pub render: crate::list::RenderFn,
}

/// A profile's attributes (see [`crate::v2::fields`]), its data string under `data_field`.
pub(crate) fn table(data_field: &'static str) -> Table<Body> {
    type A = Attr<Body>;
    Table::new(vec![
        A::kept("id"),
        A::stored("name", read::text())
            .required()
            .updatable()
            .not_null(),
        A::stored("provider_name", read::string(255))
            .required()
            .updatable()
            .not_null(),
        A::stored(data_field, read::string(MAX_DATA))
            .required()
            .updatable()
            .not_null(),
    ])
}

fn not_found(name: &str, id: &str) -> ApiError {
    ApiError::NotFound(format!(
        "{name} {} not found.",
        klb_model::validate::printable(id)
    ))
}

fn in_use(spec: &ProfileSpec, id: &str) -> ApiError {
    ApiError::Conflict(format!(
        "{} {} is in use and cannot be modified.",
        spec.explicit_name,
        klb_model::validate::printable(id)
    ))
}

/// Inside the write transaction, so a concurrent create of a referencing flavor/AZ (which
/// also writes) is ordered before or after this check, never across it.
async fn is_used(tx: &mut WriteTx, spec: &ProfileSpec, id: &str) -> ApiResult<bool> {
    let q = ListQuery {
        kind: Some(spec.user_kind),
        ref_id: Some(id.to_owned()),
        limit: Some(1),
        ..Default::default()
    };
    Ok(!tx.list(&q).await?.is_empty())
}

/// Parses the data string: 400 `<data> is not a valid option for <field>` unless JSON.
fn parse_data(spec: &ProfileSpec, data: &str) -> ApiResult<Value> {
    serde_json::from_str(data).map_err(|_| ApiError::invalid_option(data, spec.data_field))
}

pub(crate) async fn list(
    state: &AppState,
    ctx: &RequestContext,
    spec: &ProfileSpec,
    pairs: &[(String, String)],
    path: &str,
) -> ApiResult<Response> {
    let listing = ConfigList {
        resource: spec.resource,
        kind: spec.kind,
        default_sort: &["id"],
        render: spec.render,
    };
    let (items, links) = list_config(state, ctx, &listing, pairs, path).await?;
    Ok(reply_list_with(spec.plural, spec.links, items, links))
}
pub(crate) async fn get_one(
    state: &AppState,
    ctx: &RequestContext,
    spec: &ProfileSpec,
    id: &str,
    fields: &[String],
) -> ApiResult<Response> {
    let body = get_config(
        state,
        ctx,
        spec.resource,
        spec.kind,
        id,
        || not_found(spec.explicit_name, id),
        || not_found(spec.lookup_name, id),
    )
    .await?;
    Ok(reply(
        StatusCode::OK,
        spec.single,
        list::select_fields(render_with((spec.table)(), &body), fields),
    ))
}

pub(crate) async fn create(
    state: &AppState,
    ctx: &RequestContext,
    spec: &ProfileSpec,
    body: &Value,
) -> ApiResult<Response> {
    authorize_global(ctx, Action::new(spec.resource, Op::Post))?;
    let table = (spec.table)();
    let obj = Obj::envelope(body, spec.single, spec.arg, table.create_keys())?;
    let mut m = Body::new();
    table.create(&obj, &mut m, &state.config, None)?;
    let provider = text_of(&m, "provider_name");
    let parsed = parse_data(spec, &text_of(&m, spec.data_field))?;
    require_enabled(state, &provider)?;
    (spec.validate)(&provider, &parsed)?;
    let id = uuid::Uuid::new_v4().to_string();
    m.insert("id".into(), Value::String(id.clone()));
    let mut tx = state.store.begin().await?;
    tx.insert(&new_doc(spec.kind, &id, None, None, &m)).await?;
    tx.commit().await?;
    Ok(reply(
        StatusCode::CREATED,
        spec.single,
        Value::Object(render_with(table, &m)),
    ))
}

pub(crate) async fn update(
    state: &AppState,
    ctx: &RequestContext,
    spec: &ProfileSpec,
    id: &str,
    body: &Value,
) -> ApiResult<Response> {
    authorize_global(ctx, Action::new(spec.resource, Op::Put))?;
    let table = (spec.table)();
    let obj = Obj::envelope(body, spec.single, spec.arg, table.update_keys())?;
    // `null` is refused for each attribute (`_validate_update_fp`).
    let patch = table.patch(&obj, &state.config)?;
    let data = patch.get(spec.data_field).and_then(Value::as_str);
    let provider = patch.get("provider_name").and_then(Value::as_str);
    let mut tx = state.store.begin().await?;
    // A profile in use keeps its provider and data.
    if (data.is_some() || provider.is_some()) && is_used(&mut tx, spec, id).await? {
        return Err(in_use(spec, id));
    }
    if id == NIL_UUID {
        return Err(not_found(spec.explicit_name, id));
    }
    let mut doc = tx
        .get_for_update(spec.kind, id)
        .await?
        .ok_or_else(|| not_found(spec.lookup_name, id))?;
    let mut m = body_of(&doc)?;
    if let Some(d) = data {
        let parsed = parse_data(spec, d)?;
        let provider_name = match provider {
            Some(p) => p.to_owned(),
            None => text_of(&m, "provider_name"),
        };
        require_enabled(state, &provider_name)?;
        (spec.validate)(&provider_name, &parsed)?;
    } else if let Some(p) = provider {
        // A new provider must accept the stored data too.
        require_enabled(state, p)?;
        let stored = m
            .get(spec.data_field)
            .and_then(Value::as_str)
            .unwrap_or("{}");
        (spec.validate)(p, &parse_data(spec, stored)?)?;
    }
    m.extend(patch);
    set_body(&mut doc, &m);
    tx.update(&mut doc).await?;
    tx.commit().await?;
    Ok(reply(
        StatusCode::OK,
        spec.single,
        Value::Object(render_with(table, &m)),
    ))
}

pub(crate) async fn delete(
    state: &AppState,
    ctx: &RequestContext,
    spec: &ProfileSpec,
    id: &str,
) -> ApiResult<Response> {
    authorize_global(ctx, Action::new(spec.resource, Op::Delete))?;
    if id == NIL_UUID {
        return Err(not_found(spec.explicit_name, id));
    }
    let mut tx = state.store.begin().await?;
    if is_used(&mut tx, spec, id).await? {
        return Err(in_use(spec, id));
    }
    if !tx.delete(spec.kind, id).await? {
        return Err(not_found(spec.explicit_name, id));
    }
    tx.commit().await?;
    Ok(no_content())
}
