//! `/v2/l7policies/{l7policy_id}/rules` (octavia-api.md §6.2). Envelope `rule`.

use std::sync::LazyLock;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use klb_model::*;
use klb_store::{Document, JobOp, ListQuery, WriteTx};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::common::*;
use super::fields::{Attr, Table, common_attr, read};
use super::loadbalancers::scope_project;
use crate::AppState;
use crate::body::{JsonBody, Obj};
use crate::context::{Action, Op, RequestContext, Resource as R};
use crate::error::{ApiError, ApiResult};
use crate::list::{self, Column, ListParams, Listing, RelIndex};

/// The rule's attributes: how each is read (with its bounds), stored, updated and rendered
/// (see [`super::fields`]). PUT ignores a null `type`, `compare_type` or `value`.
static TABLE: LazyLock<Table<L7Rule>> = LazyLock::new(|| {
    type A = Attr<L7Rule>;
    Table::new(vec![
        A::new(
            "type",
            read::one_of(L7RuleType::ALL),
            |r, v, _| r.kind = v.unwrap_or(r.kind),
            |r| json!(r.kind.as_str()),
        )
        .required()
        .updatable(),
        A::new(
            "compare_type",
            read::one_of(L7CompareType::ALL),
            |r, v, _| r.compare_type = v.unwrap_or(r.compare_type),
            |r| json!(r.compare_type.as_str()),
        )
        .required()
        .updatable(),
        A::new(
            "key",
            read::string(validate::MAX_STR),
            |r, v, _| r.key = v,
            |r| json!(r.key),
        )
        .updatable(),
        A::new(
            "value",
            read::string(validate::MAX_STR),
            |r, v, _| {
                if let Some(v) = v {
                    r.value = v;
                }
            },
            |r| json!(r.value),
        )
        .required()
        .updatable(),
        A::new(
            "invert",
            read::boolean(),
            |r, v, _| r.invert = v.unwrap_or(false),
            |r| json!(r.invert),
        )
        .updatable(),
        common_attr!(L7Rule, admin_state_up),
        A::key("project_id"),
        A::key("tenant_id"),
        // Rendered by `head`.
        common_attr!(L7Rule, tags),
    ])
});

/// Attributes accepted on POST.
pub fn post_keys() -> &'static [&'static str] {
    TABLE.create_keys()
}

/// Renders a rule.
pub fn render(r: &L7Rule) -> Map<String, Value> {
    let mut m = head(
        r.id,
        &r.project_id,
        r.provisioning_status,
        r.operating_status,
        r.created_at,
        r.updated_at,
        &r.tags,
    );
    TABLE.render(r, &mut m);
    m
}

fn render_doc(d: &Document) -> ApiResult<Map<String, Value>> {
    Ok(render(&d.decode::<L7Rule>()?))
}

fn no_relations(_: &mut Map<String, Value>, _: &RelIndex) {}

/// Per-type checks (400 `Error parsing L7Rule: Invalid L7 Rule: <msg>`).
pub fn check(r: &L7Rule) -> ApiResult<()> {
    validate::l7_rule(r.kind, r.compare_type, r.key.as_deref(), &r.value).map_err(|msg| {
        ApiError::BadRequest(format!("Error parsing L7Rule: Invalid L7 Rule: {msg}"))
    })
}

/// Reads a new rule of `policy`.
pub fn parse_new(state: &AppState, obj: &Obj<'_>, policy: &L7Policy) -> ApiResult<L7Rule> {
    // The table sets every attribute below (absent ones get their defaults).
    let mut r = L7Rule {
        id: Uuid::new_v4(),
        project_id: policy.project_id.clone(),
        loadbalancer_id: policy.loadbalancer_id,
        listener_id: policy.listener_id,
        l7policy_id: policy.id,
        admin_state_up: true,
        provisioning_status: ProvisioningStatus::PendingCreate,
        operating_status: OperatingStatus::Offline,
        created_at: now(),
        updated_at: None,
        tags: Vec::new(),
        kind: L7RuleType::Path,
        compare_type: L7CompareType::StartsWith,
        key: None,
        value: String::new(),
        invert: false,
    };
    TABLE.create(obj, &mut r, &state.config, None)?;
    check(&r)?;
    Ok(r)
}

async fn policy_for_write(
    state: &AppState,
    ctx: &RequestContext,
    policy_id: &str,
    op: Op,
) -> ApiResult<(WriteTx, L7Policy, LoadBalancer)> {
    let (tx, policy, lb) =
        begin_write::<L7Policy>(state, ctx, policy_id, Action::new(R::L7Rule, op)).await?;
    status::check_parent_mutable(Kind::L7Policy, policy.id, policy.provisioning_status)?;
    Ok((tx, policy, lb))
}

async fn load_rule(
    state: &AppState,
    ctx: &RequestContext,
    policy_id: &str,
    id: &str,
    op: Op,
) -> ApiResult<L7Rule> {
    let _p: L7Policy = load(state, ctx, policy_id, Action::new(R::L7Rule, op)).await?;
    let r: L7Rule = load(state, ctx, id, Action::new(R::L7Rule, op)).await?;
    if r.l7policy_id.to_string() != policy_id.to_ascii_lowercase() {
        return Err(ApiError::not_found(Kind::L7Rule, id));
    }
    Ok(r)
}

/// GET /v2/l7policies/{pid}/rules
pub async fn list(
    State(state): State<AppState>,
    ctx: RequestContext,
    Path(policy_id): Path<String>,
    q: QueryPairs,
    OrigPath(path): OrigPath,
) -> ApiResult<Response> {
    let policy: L7Policy =
        load(&state, &ctx, &policy_id, Action::new(R::L7Rule, Op::GetAll)).await?;
    let params = ListParams::parse(&q.0)?;
    let listing = Listing {
        base: ListQuery {
            kind: Some(Kind::L7Rule.into()),
            parent_id: Some(policy.id.to_string()),
            project_id: scope_project(&ctx, R::L7Rule)?,
            ..Default::default()
        },
        // openstacksdk's `l7_rules(policy)` sends `?l7policy_id=<policy>` (Octavia accepts
        // any attribute of its data model as a filter, `l7policy_id` included).
        column_filters: &[
            ("l7policy_id", Column::Parent),
            ("project_id", Column::Project),
        ],
        with_relations: false,
    };
    let (items, links) =
        list::run(&state, &path, &params, listing, render_doc, no_relations).await?;
    Ok(reply_list("rules", items, links))
}

/// GET /v2/l7policies/{pid}/rules/{id}
pub async fn get_one(
    State(state): State<AppState>,
    ctx: RequestContext,
    Path((policy_id, id)): Path<(String, String)>,
    q: QueryPairs,
) -> ApiResult<Response> {
    let r = load_rule(&state, &ctx, &policy_id, &id, Op::GetOne).await?;
    Ok(reply(
        StatusCode::OK,
        "rule",
        list::select_fields(render(&r), &q.fields()),
    ))
}

/// POST /v2/l7policies/{pid}/rules
pub async fn create(
    State(state): State<AppState>,
    ctx: RequestContext,
    Path(policy_id): Path<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    let obj = Obj::envelope(&body, "rule", "rule_", TABLE.create_keys())?;
    let (mut tx, policy, mut lb) = policy_for_write(&state, &ctx, &policy_id, Op::Post).await?;
    let r = parse_new(&state, &obj, &policy)?;
    let rels = RelIndex::new(tx.relations(&[policy.id.to_string()]).await?);
    if rels.children(&policy.id.to_string(), Kind::L7Rule).len()
        >= validate::MAX_L7_RULES_PER_POLICY
    {
        return Err(ApiError::Conflict(format!(
            "Too many rules on L7 policy {}",
            policy.id
        )));
    }
    check_quota(&state, &mut tx, &r.project_id, Kind::L7Rule, 1).await?;
    mark_pending(&mut tx, &mut lb, &[policy.listener_id]).await?;
    tx.insert_resource(&r).await?;
    enqueue(&mut tx, lb.id, JobOp::Create, Kind::L7Rule, r.id).await?;
    tx.commit().await?;
    Ok(reply(
        StatusCode::CREATED,
        "rule",
        Value::Object(render(&r)),
    ))
}

/// PUT /v2/l7policies/{pid}/rules/{id}
pub async fn update(
    State(state): State<AppState>,
    ctx: RequestContext,
    Path((policy_id, id)): Path<(String, String)>,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    let obj = Obj::envelope(&body, "rule", "rule_", TABLE.update_keys())?;
    load_rule(&state, &ctx, &policy_id, &id, Op::Put).await?;
    let (mut tx, policy, mut lb) = policy_for_write(&state, &ctx, &policy_id, Op::Put).await?;
    let mut r: L7Rule = tx
        .get_resource(path_id(Kind::L7Rule, &id)?)
        .await?
        .ok_or_else(|| ApiError::not_found(Kind::L7Rule, &id))?;
    TABLE.update(&obj, &mut r, &state.config, None)?;
    check(&r)?;
    r.provisioning_status = ProvisioningStatus::PendingUpdate;
    r.updated_at = Some(now());
    mark_pending(&mut tx, &mut lb, &[policy.listener_id]).await?;
    tx.put_resource(&r).await?;
    enqueue(&mut tx, lb.id, JobOp::Update, Kind::L7Rule, r.id).await?;
    tx.commit().await?;
    Ok(reply(StatusCode::OK, "rule", Value::Object(render(&r))))
}

/// DELETE /v2/l7policies/{pid}/rules/{id}
pub async fn delete(
    State(state): State<AppState>,
    ctx: RequestContext,
    Path((policy_id, id)): Path<(String, String)>,
) -> ApiResult<Response> {
    load_rule(&state, &ctx, &policy_id, &id, Op::Delete).await?;
    let (mut tx, policy, mut lb) = policy_for_write(&state, &ctx, &policy_id, Op::Delete).await?;
    let mut r: L7Rule = tx
        .get_resource(path_id(Kind::L7Rule, &id)?)
        .await?
        .ok_or_else(|| ApiError::not_found(Kind::L7Rule, &id))?;
    mark_pending(&mut tx, &mut lb, &[policy.listener_id]).await?;
    r.provisioning_status = ProvisioningStatus::PendingDelete;
    r.updated_at = Some(now());
    tx.put_resource(&r).await?;
    enqueue(&mut tx, lb.id, JobOp::Delete, Kind::L7Rule, r.id).await?;
    tx.commit().await?;
    Ok(no_content())
}
