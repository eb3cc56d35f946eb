//! `/v2/l7policies/{l7policy_id}/rules` (octavia-api.md §6.2). Envelope `rule`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use klb_model::*;
use klb_store::{Document, JobOp, ListQuery, WriteTx};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::common::*;
use super::loadbalancers::scope_project;
use crate::AppState;
use crate::body::{Field, JsonBody, Obj, required};
use crate::context::{Action, Op, RequestContext, Resource as R};
use crate::error::{ApiError, ApiResult};
use crate::list::{self, Column, ListParams, Listing, RelIndex};

/// Attributes accepted on POST.
pub const POST_KEYS: &[&str] = &[
    "type",
    "compare_type",
    "key",
    "value",
    "invert",
    "admin_state_up",
    "project_id",
    "tenant_id",
    "tags",
];
const PUT_KEYS: &[&str] = &[
    "type",
    "compare_type",
    "key",
    "value",
    "invert",
    "admin_state_up",
    "tags",
];

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
    m.insert("type".into(), json!(r.kind.as_str()));
    m.insert("compare_type".into(), json!(r.compare_type.as_str()));
    m.insert("key".into(), json!(r.key));
    m.insert("value".into(), json!(r.value));
    m.insert("invert".into(), json!(r.invert));
    m.insert("admin_state_up".into(), json!(r.admin_state_up));
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
pub fn parse_new(obj: &Obj<'_>, policy: &L7Policy) -> ApiResult<L7Rule> {
    let r = L7Rule {
        id: Uuid::new_v4(),
        project_id: policy.project_id.clone(),
        loadbalancer_id: policy.loadbalancer_id,
        listener_id: policy.listener_id,
        l7policy_id: policy.id,
        admin_state_up: obj.bool_null_false("admin_state_up")?.or(true),
        provisioning_status: ProvisioningStatus::PendingCreate,
        operating_status: OperatingStatus::Offline,
        created_at: now(),
        updated_at: None,
        tags: tags(obj)?.or(Vec::new()),
        kind: required("type", obj.enumerated("type", L7RuleType::ALL)?)?,
        compare_type: required(
            "compare_type",
            obj.enumerated("compare_type", L7CompareType::ALL)?,
        )?,
        key: obj.string("key", validate::MAX_STR)?.opt(),
        value: required("value", obj.string("value", validate::MAX_STR)?)?,
        invert: obj.bool("invert")?.or(false),
    };
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
            kind: Kind::L7Rule.as_str().into(),
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
    let obj = Obj::envelope(&body, "rule", "rule_", POST_KEYS)?;
    let (mut tx, policy, mut lb) = policy_for_write(&state, &ctx, &policy_id, Op::Post).await?;
    let r = parse_new(&obj, &policy)?;
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
    let obj = Obj::envelope(&body, "rule", "rule_", PUT_KEYS)?;
    load_rule(&state, &ctx, &policy_id, &id, Op::Put).await?;
    let (mut tx, policy, mut lb) = policy_for_write(&state, &ctx, &policy_id, Op::Put).await?;
    let mut r: L7Rule = tx
        .get_resource(path_id(Kind::L7Rule, &id)?)
        .await?
        .ok_or_else(|| ApiError::not_found(Kind::L7Rule, &id))?;
    if let Field::Set(v) = obj.enumerated("type", L7RuleType::ALL)? {
        r.kind = v;
    }
    if let Field::Set(v) = obj.enumerated("compare_type", L7CompareType::ALL)? {
        r.compare_type = v;
    }
    if let Some(v) = obj.string("key", validate::MAX_STR)?.update() {
        r.key = v;
    }
    if let Field::Set(v) = obj.string("value", validate::MAX_STR)? {
        r.value = v;
    }
    if let Some(v) = obj.bool("invert")?.update() {
        r.invert = v.unwrap_or(false);
    }
    if let Field::Set(v) = obj.bool_null_false("admin_state_up")? {
        r.admin_state_up = v;
    }
    if let Some(v) = tags(&obj)?.update() {
        r.tags = v.unwrap_or_default();
    }
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
