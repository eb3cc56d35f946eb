//! `/v2/l7policies` (octavia-api.md §6.1).

use std::sync::LazyLock;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use klb_model::*;
use klb_store::{Document, JobOp, ListQuery, WriteTx};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::common::*;
use super::fields::{Attr, Table, common_attr};
use super::loadbalancers::scope_project;
use crate::AppState;
use crate::body::{Field, JsonBody, Obj, required};
use crate::context::{Action, Op, RequestContext, Resource as R};
use crate::error::{ApiError, ApiResult};
use crate::list::{self, Column, ListParams, Listing, RelIndex};

const MAX_POSITION: i64 = 2_147_483_647;

/// The policy's attributes: how each is read (with its bounds), stored, updated and rendered
/// (see [`super::fields`]). The action, redirect and position attributes are read together by
/// the handlers (`read_redirect`, `place`): they depend on each other.
static TABLE: LazyLock<Table<L7Policy>> = LazyLock::new(|| {
    type A = Attr<L7Policy>;
    Table::new(vec![
        A::key("project_id"),
        A::key("tenant_id"),
        A::key("listener_id").rendered(|p| json!(p.listener_id)),
        common_attr!(L7Policy, name),
        common_attr!(L7Policy, description),
        common_attr!(L7Policy, admin_state_up),
        A::key("action")
            .updatable()
            .rendered(|p| json!(p.action.as_str())),
        A::key("redirect_pool_id")
            .updatable()
            .rendered(|p| opt(&p.redirect_pool_id)),
        A::key("redirect_url")
            .updatable()
            .rendered(|p| json!(p.redirect_url)),
        A::key("redirect_prefix")
            .updatable()
            .rendered(|p| json!(p.redirect_prefix)),
        A::key("redirect_http_code")
            .updatable()
            .rendered(|p| json!(p.redirect_http_code)),
        A::key("position")
            .updatable()
            .rendered(|p| json!(p.position)),
        // Filled by `relate`.
        A::shown("rules", |_| json!([])),
        // Rendered by `head`.
        common_attr!(L7Policy, tags),
    ])
});

/// Attributes accepted on POST.
pub fn post_keys() -> &'static [&'static str] {
    TABLE.create_keys()
}

/// Renders a policy without its rules.
pub fn render(p: &L7Policy) -> Map<String, Value> {
    let mut m = head(
        p.id,
        &p.project_id,
        p.provisioning_status,
        p.operating_status,
        p.created_at,
        p.updated_at,
        &p.tags,
    );
    TABLE.render(p, &mut m);
    m
}

fn render_doc(d: &Document) -> ApiResult<Map<String, Value>> {
    Ok(render(&d.decode::<L7Policy>()?))
}

/// Adds `rules`.
pub fn relate(m: &mut Map<String, Value>, rels: &RelIndex) {
    let id = m.get("id").and_then(Value::as_str).unwrap_or("").to_owned();
    m.insert("rules".into(), rels.child_refs(&id, Kind::L7Rule));
}

/// The action/redirect fields of a body, before sanitising.
struct Redirect {
    action: Field<L7PolicyAction>,
    pool: Field<Uuid>,
    url: Field<String>,
    prefix: Field<String>,
    code: Field<i64>,
}

fn read_redirect(obj: &Obj<'_>) -> ApiResult<Redirect> {
    let code = obj.int("redirect_http_code", 0, 999)?;
    if let Field::Set(c) = code
        && ![301, 302, 303, 307, 308].contains(&c)
    {
        return Err(ApiError::invalid(
            "redirect_http_code",
            &json!(c),
            "Value should be one of: 301, 302, 303, 307, 308",
        ));
    }
    Ok(Redirect {
        action: obj.enumerated("action", L7PolicyAction::ALL)?,
        pool: obj.uuid("redirect_pool_id")?,
        url: obj.checked("redirect_url", 2048, validate::redirect_url)?,
        prefix: obj.checked("redirect_prefix", 2048, validate::redirect_url)?,
        code,
    })
}

/// Octavia's sanitising: a redirect field sets the action and clears the others; then the
/// action's required argument must be present.
fn apply_redirect(p: &mut L7Policy, r: Redirect) -> ApiResult<()> {
    let given = [
        matches!(r.pool, Field::Set(_)),
        matches!(r.url, Field::Set(_)),
        matches!(r.prefix, Field::Set(_)),
    ];
    if given.iter().filter(|g| **g).count() > 1 {
        return Err(ApiError::BadRequest(
            "Invalid L7 Policy arguments: Only one of redirect_pool_id, redirect_url and redirect_prefix may be given.".to_owned(),
        ));
    }
    if let Field::Set(a) = r.action {
        p.action = a;
    }
    if let Field::Set(pool) = r.pool {
        p.action = L7PolicyAction::RedirectToPool;
        p.redirect_pool_id = Some(pool);
    } else if let Field::Set(url) = r.url {
        p.action = L7PolicyAction::RedirectToUrl;
        p.redirect_url = Some(url);
    } else if let Field::Set(prefix) = r.prefix {
        p.action = L7PolicyAction::RedirectPrefix;
        p.redirect_prefix = Some(prefix);
    }
    if let Field::Set(c) = r.code {
        p.redirect_http_code = Some(c as u16);
    } else if let Field::Null = r.code {
        p.redirect_http_code = None;
    }
    let missing = |name: &str| {
        ApiError::BadRequest(format!(
            "Invalid L7 Policy arguments: {name} must not be None"
        ))
    };
    match p.action {
        L7PolicyAction::Reject => {
            p.redirect_pool_id = None;
            p.redirect_url = None;
            p.redirect_prefix = None;
            p.redirect_http_code = None;
        }
        L7PolicyAction::RedirectToPool => {
            p.redirect_url = None;
            p.redirect_prefix = None;
            p.redirect_http_code = None;
            if p.redirect_pool_id.is_none() {
                return Err(missing("redirect_pool_id"));
            }
        }
        L7PolicyAction::RedirectToUrl => {
            p.redirect_pool_id = None;
            p.redirect_prefix = None;
            if p.redirect_url.is_none() {
                return Err(missing("redirect_url"));
            }
            p.redirect_http_code.get_or_insert(302);
        }
        L7PolicyAction::RedirectPrefix => {
            p.redirect_pool_id = None;
            p.redirect_url = None;
            if p.redirect_prefix.is_none() {
                return Err(missing("redirect_prefix"));
            }
            p.redirect_http_code.get_or_insert(302);
        }
    }
    Ok(())
}

async fn check_pool(tx: &mut WriteTx, p: &L7Policy, listener: &Listener) -> ApiResult<()> {
    if let Some(pid) = p.redirect_pool_id {
        let pool: Option<Pool> = tx.get_resource(pid).await?;
        let pool = pool
            .filter(|x| x.loadbalancer_id == p.loadbalancer_id)
            .ok_or_else(|| ApiError::not_found(Kind::Pool, &pid.to_string()))?;
        super::listeners::check_protocols(listener.protocol, pool.protocol)?;
    }
    Ok(())
}

fn check_listener(l: &Listener) -> ApiResult<()> {
    match l.protocol {
        ListenerProtocol::Http | ListenerProtocol::TerminatedHttps => Ok(()),
        ListenerProtocol::Prometheus => Err(ApiError::validation(
            "Protocol PROMETHEUS listeners cannot have child objects.",
        )),
        other => Err(ApiError::validation(format!(
            "L7 policies are not supported on {other} protocol listeners."
        ))),
    }
}

/// Places `policy` at its requested position among its listener's policies and renumbers
/// them contiguously from 1; writes siblings whose position changed.
async fn place(tx: &mut WriteTx, policy: &mut L7Policy, requested: i64) -> ApiResult<()> {
    let mut siblings: Vec<L7Policy> = tx
        .list_resources::<L7Policy>(ListQuery {
            parent_id: Some(policy.listener_id.to_string()),
            ..Default::default()
        })
        .await?
        .into_iter()
        .filter(|s| s.id != policy.id)
        .collect();
    siblings.sort_by_key(|s| (s.position, s.created_at));
    let idx = ((requested.max(1) - 1) as usize).min(siblings.len());
    let mut order: Vec<Option<L7Policy>> = siblings.into_iter().map(Some).collect();
    order.insert(idx, None);
    for (i, slot) in order.into_iter().enumerate() {
        let pos = i as i64 + 1;
        match slot {
            None => policy.position = pos,
            Some(mut s) if s.position != pos => {
                s.position = pos;
                s.updated_at = Some(now());
                tx.put_resource(&s).await?;
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// GET /v2/l7policies
pub async fn list(
    State(state): State<AppState>,
    ctx: RequestContext,
    q: QueryPairs,
    OrigPath(path): OrigPath,
) -> ApiResult<Response> {
    // Listed by (created_at, id) like every object with timestamps: Octavia's repository
    // orders by `position` only without a pagination helper, and the API always has one.
    let params = ListParams::parse(&q.0)?;
    let listing = Listing {
        base: ListQuery {
            kind: Some(Kind::L7Policy.into()),
            project_id: scope_project(&ctx, R::L7Policy)?,
            ..Default::default()
        },
        column_filters: &[
            ("listener_id", Column::Parent),
            ("loadbalancer_id", Column::LoadBalancer),
            ("project_id", Column::Project),
        ],
        with_relations: true,
    };
    let (items, links) = list::run(&state, &path, &params, listing, render_doc, relate).await?;
    Ok(reply_list("l7policies", items, links))
}

/// GET /v2/l7policies/{id}
pub async fn get_one(
    State(state): State<AppState>,
    ctx: RequestContext,
    Path(id): Path<String>,
    q: QueryPairs,
) -> ApiResult<Response> {
    let p: L7Policy = load(&state, &ctx, &id, Action::new(R::L7Policy, Op::GetOne)).await?;
    let mut m = render(&p);
    relate(
        &mut m,
        &RelIndex::load_children(&state, &[p.id.to_string()]).await?,
    );
    Ok(reply(
        StatusCode::OK,
        "l7policy",
        list::select_fields(m, &q.fields()),
    ))
}

/// POST /v2/l7policies
pub async fn create(
    State(state): State<AppState>,
    ctx: RequestContext,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    let obj = Obj::envelope(&body, "l7policy", "l7policy_", TABLE.create_keys())?;
    let listener_id = required("listener_id", obj.uuid("listener_id")?)?;
    let action = required("action", obj.enumerated("action", L7PolicyAction::ALL)?)?;
    let redirect = read_redirect(&obj)?;
    let position = obj.int("position", 1, MAX_POSITION)?.or(MAX_POSITION);
    let (mut tx, listener, mut lb) = begin_write::<Listener>(
        &state,
        &ctx,
        &listener_id.to_string(),
        Action::new(R::L7Policy, Op::Post),
    )
    .await?;
    check_listener(&listener)?;
    let mut p = L7Policy {
        id: Uuid::new_v4(),
        project_id: listener.project_id.clone(),
        loadbalancer_id: lb.id,
        listener_id: listener.id,
        name: None,
        description: None,
        admin_state_up: true,
        provisioning_status: ProvisioningStatus::PendingCreate,
        operating_status: OperatingStatus::Offline,
        created_at: now(),
        updated_at: None,
        tags: Vec::new(),
        action,
        redirect_pool_id: None,
        redirect_url: None,
        redirect_prefix: None,
        redirect_http_code: None,
        position,
    };
    TABLE.create(&obj, &mut p, &state.config, None)?;
    apply_redirect(&mut p, redirect)?;
    check_pool(&mut tx, &p, &listener).await?;
    check_quota(&state, &mut tx, &p.project_id, Kind::L7Policy, 1).await?;
    place(&mut tx, &mut p, position).await?;
    mark_pending(&mut tx, &mut lb, &[listener.id]).await?;
    tx.insert_resource(&p).await?;
    enqueue(&mut tx, lb.id, JobOp::Create, Kind::L7Policy, p.id).await?;
    tx.commit().await?;
    Ok(reply(
        StatusCode::CREATED,
        "l7policy",
        Value::Object(render(&p)),
    ))
}

/// PUT /v2/l7policies/{id}
pub async fn update(
    State(state): State<AppState>,
    ctx: RequestContext,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    let obj = Obj::envelope(&body, "l7policy", "l7policy_", TABLE.update_keys())?;
    if obj.is_empty() {
        return Err(ApiError::BadRequest("Invalid update options".to_owned()));
    }
    let redirect = read_redirect(&obj)?;
    let position = obj.int("position", 1, MAX_POSITION)?;
    let (mut tx, mut p, mut lb) =
        begin_write::<L7Policy>(&state, &ctx, &id, Action::new(R::L7Policy, Op::Put)).await?;
    let listener: Listener = tx
        .get_resource(p.listener_id)
        .await?
        .ok_or_else(|| ApiError::not_found(Kind::Listener, &p.listener_id.to_string()))?;
    TABLE.update(&obj, &mut p, &state.config, None)?;
    apply_redirect(&mut p, redirect)?;
    check_pool(&mut tx, &p, &listener).await?;
    if let Field::Set(pos) = position {
        place(&mut tx, &mut p, pos).await?;
    }
    p.provisioning_status = ProvisioningStatus::PendingUpdate;
    p.updated_at = Some(now());
    mark_pending(&mut tx, &mut lb, &[listener.id]).await?;
    tx.put_resource(&p).await?;
    enqueue(&mut tx, lb.id, JobOp::Update, Kind::L7Policy, p.id).await?;
    tx.commit().await?;
    let mut m = render(&p);
    relate(
        &mut m,
        &RelIndex::load_children(&state, &[p.id.to_string()]).await?,
    );
    Ok(reply(StatusCode::OK, "l7policy", Value::Object(m)))
}

/// DELETE /v2/l7policies/{id}
pub async fn delete(
    State(state): State<AppState>,
    ctx: RequestContext,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let (mut tx, mut p, mut lb) =
        begin_write::<L7Policy>(&state, &ctx, &id, Action::new(R::L7Policy, Op::Delete)).await?;
    mark_pending(&mut tx, &mut lb, &[p.listener_id]).await?;
    p.provisioning_status = ProvisioningStatus::PendingDelete;
    p.updated_at = Some(now());
    tx.put_resource(&p).await?;
    // The remaining policies close the gap so positions stay contiguous.
    let mut siblings: Vec<L7Policy> = tx
        .list_resources::<L7Policy>(ListQuery {
            parent_id: Some(p.listener_id.to_string()),
            ..Default::default()
        })
        .await?
        .into_iter()
        .filter(|s| s.id != p.id)
        .collect();
    siblings.sort_by_key(|s| (s.position, s.created_at));
    for (i, mut s) in siblings.into_iter().enumerate() {
        if s.position != i as i64 + 1 {
            s.position = i as i64 + 1;
            s.updated_at = Some(now());
            tx.put_resource(&s).await?;
        }
    }
    enqueue(&mut tx, lb.id, JobOp::Delete, Kind::L7Policy, p.id).await?;
    tx.commit().await?;
    Ok(no_content())
}

/// A policy from a single-create graph (position = order in the list unless given).
pub fn parse_single(
    state: &AppState,
    obj: &Obj<'_>,
    listener: &Listener,
    lb: &LoadBalancer,
    default_position: i64,
) -> ApiResult<L7Policy> {
    check_listener(listener)?;
    let action = required("action", obj.enumerated("action", L7PolicyAction::ALL)?)?;
    let redirect = read_redirect(obj)?;
    let mut p = L7Policy {
        id: Uuid::new_v4(),
        project_id: listener.project_id.clone(),
        loadbalancer_id: lb.id,
        listener_id: listener.id,
        name: None,
        description: None,
        admin_state_up: true,
        provisioning_status: ProvisioningStatus::PendingCreate,
        operating_status: OperatingStatus::Offline,
        created_at: now(),
        updated_at: None,
        tags: Vec::new(),
        action,
        redirect_pool_id: None,
        redirect_url: None,
        redirect_prefix: None,
        redirect_http_code: None,
        position: default_position,
    };
    TABLE.create(obj, &mut p, &state.config, None)?;
    apply_redirect(&mut p, redirect)?;
    Ok(p)
}
