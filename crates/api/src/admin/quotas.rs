//! Quotas (`/v2/quotas`, octavia-api.md §8) and [`StoredQuotas`], the limits the create
//! handlers enforce.
//!
//! A project's quota document holds only the values an operator set (`null` = use the
//! configured default), like Octavia's `quotas` row. `DELETE` removes the document, so the
//! list shows exactly the projects with custom quotas. Enforcement (`v2::common::check_quota`)
//! counts the project's live objects in the writer's transaction; Octavia keeps `in_use_*`
//! counters instead, which a count cannot let drift.

use std::sync::{Arc, LazyLock};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use klb_model::Kind;
use klb_store::{DocumentKind, ListQuery, Store};
use serde_json::{Map, Value};

use crate::AppState;
use crate::admin::{body_of, may_list_globally, new_doc, no_relations, set_body};
use crate::body::{Field, JsonBody, Obj};
use crate::context::{Action, Op, RequestContext, Resource as R};
use crate::error::{ApiError, ApiResult};
use crate::list::{self, Column, ListParams, Listing};
use crate::provider::QuotaLimits;
use crate::v2::common::{OrigPath, QueryPairs, accepted, reply, reply_list};
use crate::v2::fields::{Attr, Body, Reader, Table, read};

const KIND: DocumentKind = DocumentKind::Quota;

/// Octavia's `MIN_QUOTA` / `MAX_QUOTA`.
const MIN_QUOTA: i64 = -1;
const MAX_QUOTA: i64 = 2_000_000_000;

/// The quota fields, in Octavia's response order, with the kind each one limits.
const FIELDS: &[(&str, Kind)] = &[
    ("loadbalancer", Kind::LoadBalancer),
    ("listener", Kind::Listener),
    ("member", Kind::Member),
    ("pool", Kind::Pool),
    ("healthmonitor", Kind::HealthMonitor),
    ("l7policy", Kind::L7Policy),
    ("l7rule", Kind::L7Rule),
];

/// Deprecated spellings accepted on PUT and emitted in responses (Rocky).
const ALIASES: &[(&str, &str)] = &[
    ("load_balancer", "loadbalancer"),
    ("health_monitor", "healthmonitor"),
];

/// The quota's attributes (see [`crate::v2::fields`]), from [`FIELDS`] and [`ALIASES`]: each
/// field, then its deprecated spelling, which PUT reads only when the field itself is absent.
static TABLE: LazyLock<Table<Body>> = LazyLock::new(|| {
    type A = Attr<Body>;
    let mut attrs = vec![A::kept("project_id")];
    for &(name, _) in FIELDS {
        let int = read::int(MIN_QUOTA, MAX_QUOTA);
        attrs.push(A::stored(name, int).updatable());
        if let Some(&(alias, _)) = ALIASES.iter().find(|(_, n)| *n == name) {
            attrs.push(A::stored_as(alias, name, alias_of(name), Value::Null).updatable());
        }
    }
    Table::new(attrs)
});

/// Reads a deprecated spelling unless `name` itself is in the body (the current spelling
/// wins when both are given).
fn alias_of(name: &'static str) -> Reader<i64> {
    let int = read::int(MIN_QUOTA, MAX_QUOTA);
    Arc::new(move |o: &Obj<'_>, k: &str| {
        if o.raw(name).is_some() {
            Ok(Field::Absent)
        } else {
            int(o, k)
        }
    })
}

/// Configured defaults (`[quotas] default_*_quota`); -1 = unlimited, Octavia's default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaDefaults {
    /// Load balancers per project.
    pub loadbalancer: i64,
    /// Listeners per project.
    pub listener: i64,
    /// Members per project.
    pub member: i64,
    /// Pools per project.
    pub pool: i64,
    /// Health monitors per project.
    pub healthmonitor: i64,
    /// L7 policies per project.
    pub l7policy: i64,
    /// L7 rules per project.
    pub l7rule: i64,
}

impl Default for QuotaDefaults {
    fn default() -> QuotaDefaults {
        QuotaDefaults {
            loadbalancer: -1,
            listener: -1,
            member: -1,
            pool: -1,
            healthmonitor: -1,
            l7policy: -1,
            l7rule: -1,
        }
    }
}

impl QuotaDefaults {
    /// The default for one quota field.
    pub fn get(&self, kind: Kind) -> i64 {
        match kind {
            Kind::LoadBalancer => self.loadbalancer,
            Kind::Listener => self.listener,
            Kind::Member => self.member,
            Kind::Pool => self.pool,
            Kind::HealthMonitor => self.healthmonitor,
            Kind::L7Policy => self.l7policy,
            Kind::L7Rule => self.l7rule,
            Kind::LbVm => -1,
        }
    }
}

/// A project id no quota document can have: PUT refuses ids over 36 characters. (Not a NUL
/// byte: PostgreSQL text cannot hold one.)
const NO_PROJECT: &str = "klb-quota-defaults-not-a-project-id-000";

/// The defaults in force: the installed [`QuotaLimits`] asked about a project without its own
/// quotas, so what GET shows is what the create handlers enforce (`None` = -1, unlimited).
async fn defaults(state: &AppState) -> ApiResult<QuotaDefaults> {
    let mut d = QuotaDefaults::default();
    for (_, kind) in FIELDS {
        let v = state
            .quotas
            .limit(&state.store, NO_PROJECT, *kind)
            .await?
            .filter(|v| *v >= 0)
            .unwrap_or(-1);
        match kind {
            Kind::LoadBalancer => d.loadbalancer = v,
            Kind::Listener => d.listener = v,
            Kind::Member => d.member = v,
            Kind::Pool => d.pool = v,
            Kind::HealthMonitor => d.healthmonitor = v,
            Kind::L7Policy => d.l7policy = v,
            Kind::L7Rule => d.l7rule = v,
            Kind::LbVm => {}
        }
    }
    Ok(d)
}

/// `{"quota": {...}}` content: stored values with defaults filled in, aliases included.
fn render(
    project_id: &str,
    stored: Option<&Map<String, Value>>,
    defaults: &QuotaDefaults,
) -> Map<String, Value> {
    let mut full = Body::new();
    full.insert("project_id".into(), Value::String(project_id.to_owned()));
    for (name, kind) in FIELDS {
        let v = stored
            .and_then(|s| s.get(*name))
            .and_then(Value::as_i64)
            .unwrap_or_else(|| defaults.get(*kind));
        full.insert((*name).into(), Value::from(v));
    }
    let mut m = Map::new();
    TABLE.render(&full, &mut m);
    m
}

/// The quota a project has for `kind` (its own value, else the default).
fn limit_of(
    stored: Option<klb_store::Document>,
    kind: Kind,
    defaults: &QuotaDefaults,
) -> ApiResult<i64> {
    let field = FIELDS.iter().find(|(_, k)| *k == kind).map(|(n, _)| *n);
    let own = match (stored, field) {
        (Some(doc), Some(f)) => body_of(&doc)?.get(f).and_then(Value::as_i64),
        _ => None,
    };
    Ok(own.unwrap_or_else(|| defaults.get(kind)))
}

/// [`QuotaLimits`] backed by the `/v2/quotas` documents: a project's own value, else the
/// configured default. `klb-api` enforces it inside each create's write transaction
/// (`v2::common::check_quota`); install it as `AppState::quotas`.
#[derive(Debug, Clone, Copy, Default)]
pub struct StoredQuotas {
    /// Limits of projects without their own value.
    pub defaults: QuotaDefaults,
}

#[async_trait::async_trait]
impl QuotaLimits for StoredQuotas {
    async fn limit(
        &self,
        store: &Store,
        project_id: &str,
        kind: Kind,
    ) -> Result<Option<i64>, ApiError> {
        Ok(Some(limit_of(
            store.get(KIND, project_id).await?,
            kind,
            &self.defaults,
        )?))
    }
}

/// GET /v2/quotas
pub async fn list(
    State(state): State<AppState>,
    ctx: RequestContext,
    q: QueryPairs,
    OrigPath(path): OrigPath,
) -> ApiResult<Response> {
    let params = ListParams::parse(&q.0)?;
    let wanted = q.get("project_id").map(str::to_owned);
    // Octavia's `_auth_get_all`: global if allowed, else the caller's (or the asked) project
    // with the per-project rule.
    let project = if may_list_globally(&ctx, Action::new(R::Quota, Op::GetAllGlobal)) {
        None
    } else {
        let own = wanted
            .clone()
            .or_else(|| ctx.project_id.clone())
            .ok_or(ApiError::Forbidden)?;
        ctx.authorize(Action::new(R::Quota, Op::GetAll), Some(&own))
            .map_err(|_| ApiError::Forbidden)?;
        Some(own)
    };
    let listing = Listing {
        base: ListQuery {
            kind: Some(KIND),
            project_id: project,
            ..Default::default()
        },
        column_filters: &[("project_id", Column::Project)],
        with_relations: false,
    };
    let defaults = defaults(&state).await?;
    let (items, links) =
        list::run(&state, &path, &params, listing, render_stored, no_relations).await?;
    // Fill in defaults after paging (the renderer is a plain fn without access to config).
    let items = items
        .into_iter()
        .map(|item| match item {
            Value::Object(mut m) => {
                let keep: Vec<String> = m.keys().cloned().collect();
                // `fields=` may have kept only a deprecated spelling: its value is the
                // field's, so the field is not re-filled from the defaults.
                for &(alias, name) in ALIASES {
                    if let (None, Some(v)) = (m.get(name), m.get(alias).cloned()) {
                        m.insert(name.into(), v);
                    }
                }
                let project = m
                    .get("project_id")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned();
                let full = render(&project, Some(&m), &defaults);
                Value::Object(if params.fields.is_empty() {
                    full
                } else {
                    full.into_iter().filter(|(k, _)| keep.contains(k)).collect()
                })
            }
            other => other,
        })
        .collect();
    Ok(reply_list("quotas", items, links))
}

/// Stored quota bodies carry every field (null = default), so `fields=` selection and
/// filters see them; [`list`] fills the defaults in.
fn render_stored(doc: &klb_store::Document) -> ApiResult<Map<String, Value>> {
    let mut stored = body_of(doc)?;
    stored.insert("project_id".into(), Value::String(doc.id.clone()));
    let mut m = Map::new();
    TABLE.render(&stored, &mut m);
    Ok(m)
}

/// GET /v2/quotas/{project_id} (also `/v2/quotas/defaults`, which is a project without a
/// quota document and so shows the defaults, as in Octavia).
pub async fn get_one(
    State(state): State<AppState>,
    ctx: RequestContext,
    Path(project_id): Path<String>,
) -> ApiResult<Response> {
    ctx.authorize(Action::new(R::Quota, Op::GetOne), Some(&project_id))
        .map_err(|_| ApiError::Forbidden)?;
    let stored = match state.store.get(KIND, &project_id).await? {
        Some(doc) => Some(body_of(&doc)?),
        None => None,
    };
    Ok(reply(
        StatusCode::OK,
        "quota",
        Value::Object(render(
            &project_id,
            stored.as_ref(),
            &defaults(&state).await?,
        )),
    ))
}

/// GET /v2/quotas/{project_id}/default
pub async fn get_defaults(
    State(state): State<AppState>,
    ctx: RequestContext,
    Path(project_id): Path<String>,
) -> ApiResult<Response> {
    ctx.authorize(Action::new(R::Quota, Op::GetOne), Some(&project_id))
        .map_err(|_| ApiError::Forbidden)?;
    Ok(reply(
        StatusCode::OK,
        "quota",
        Value::Object(render(&project_id, None, &defaults(&state).await?)),
    ))
}

/// PUT /v2/quotas/{project_id}: 202 with the resulting quota.
pub async fn update(
    State(state): State<AppState>,
    ctx: RequestContext,
    Path(project_id): Path<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    ctx.authorize(Action::new(R::Quota, Op::Put), Some(&project_id))
        .map_err(|_| ApiError::Forbidden)?;
    if project_id.chars().count() > 36 || klb_model::validate::has_control(&project_id) {
        // Octavia's `quotas.project_id` column is 36 characters.
        return Err(ApiError::invalid(
            "project_id",
            &Value::String(project_id.clone()),
            "Value should have a maximum character requirement of 36",
        ));
    }
    let obj = Obj::envelope(&body, "quota", "quotas", TABLE.update_keys())?;
    // New values: `null` = back to the default, absent = unchanged.
    let changes = TABLE.patch(&obj, &state.config)?;
    let mut tx = state.store.begin().await?;
    let existing = tx.get_for_update(KIND, &project_id).await?;
    let mut stored = match &existing {
        Some(doc) => body_of(doc)?,
        None => Map::new(),
    };
    stored.extend(changes);
    for (name, _) in FIELDS {
        stored.entry(*name).or_insert(Value::Null);
    }
    match existing {
        Some(mut doc) => {
            set_body(&mut doc, &stored);
            tx.update(&mut doc).await?;
        }
        None => {
            tx.insert(&new_doc(
                KIND,
                &project_id,
                Some(&project_id),
                None,
                &stored,
            ))
            .await?
        }
    }
    tx.commit().await?;
    Ok(reply(
        StatusCode::ACCEPTED,
        "quota",
        Value::Object(render(&project_id, Some(&stored), &defaults(&state).await?)),
    ))
}

/// DELETE /v2/quotas/{project_id}: back to the defaults, 202 with an empty body.
pub async fn reset(
    State(state): State<AppState>,
    ctx: RequestContext,
    Path(project_id): Path<String>,
) -> ApiResult<Response> {
    ctx.authorize(Action::new(R::Quota, Op::Delete), Some(&project_id))
        .map_err(|_| ApiError::Forbidden)?;
    let mut tx = state.store.begin().await?;
    tx.delete(KIND, &project_id).await?;
    tx.commit().await?;
    Ok(accepted())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_fills_defaults_and_aliases() {
        let defaults = QuotaDefaults {
            loadbalancer: 5,
            healthmonitor: 7,
            ..QuotaDefaults::default()
        };
        let mut stored = Map::new();
        stored.insert("listener".into(), Value::from(3));
        stored.insert("loadbalancer".into(), Value::Null);
        let m = render("p1", Some(&stored), &defaults);
        assert_eq!(m["project_id"], "p1");
        assert_eq!(m["loadbalancer"], 5);
        assert_eq!(m["load_balancer"], 5);
        assert_eq!(m["listener"], 3);
        assert_eq!(m["healthmonitor"], 7);
        assert_eq!(m["health_monitor"], 7);
        assert_eq!(m["member"], -1);
        assert_eq!(m.len(), 10);
    }
}
