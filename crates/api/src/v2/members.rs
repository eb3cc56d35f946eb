//! `/v2/pools/{pool_id}/members` (octavia-api.md §4), including the batch update.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::LazyLock;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use klb_model::*;
use klb_store::{Document, JobOp, ListQuery};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::common::*;
use super::fields::{Attr, Table, common_attr, read};
use super::loadbalancers::scope_project;
use crate::AppState;
use crate::body::{JsonBody, Obj, required};
use crate::context::{Action, Op, RequestContext, Resource as R};
use crate::error::{ApiError, ApiResult};
use crate::list::{self, Column, ListParams, Listing, RelIndex};

/// The member's attributes: how each is read (with its bounds), stored, updated and rendered
/// (see [`super::fields`]).
static TABLE: LazyLock<Table<Member>> = LazyLock::new(|| {
    type A = Attr<Member>;
    let address = || read::then(read::ip(), |_, a: &IpAddr| check_address(*a));
    Table::new(vec![
        A::new(
            "address",
            address(),
            |m, v, _| m.address = v.unwrap_or(m.address),
            |m| json!(m.address.to_string()),
        )
        .required()
        .first(),
        common_attr!(Member, name),
        common_attr!(Member, admin_state_up),
        A::new(
            "protocol_port",
            read::int(1, 65535),
            |m, v, _| m.protocol_port = v.map_or(m.protocol_port, |p| p as u16),
            |m| json!(m.protocol_port),
        )
        .required(),
        A::new(
            "weight",
            read::int(0, 256),
            |m, v, _| m.weight = v.unwrap_or(1) as u16,
            |m| json!(m.weight),
        )
        .updatable(),
        A::new(
            "backup",
            read::boolean(),
            |m, v, _| m.backup = v.unwrap_or(false),
            |m| json!(m.backup),
        )
        .updatable(),
        A::new(
            "subnet_id",
            read::uuid(),
            |m, v, _| m.subnet_id = v,
            |m| opt(&m.subnet_id),
        ),
        A::new(
            "monitor_address",
            address(),
            |m, v, _| m.monitor_address = v,
            |m| opt(&m.monitor_address),
        )
        .updatable()
        .first(),
        A::new(
            "monitor_port",
            read::int(1, 65535),
            |m, v, _| m.monitor_port = v.map(|p| p as u16),
            |m| json!(m.monitor_port),
        )
        .updatable(),
        A::new(
            "request_sriov",
            read::then(read::boolean(), |_, sriov: &bool| {
                if *sriov {
                    return Err(ApiError::BadRequest("Validation failure: SR-IOV members are not enabled by the flavor of this load balancer.".to_owned()));
                }
                Ok(())
            }),
            |m, v, _| m.request_sriov = v.unwrap_or(false),
            |_| Value::Null,
        )
        .unrendered()
        .first(),
        A::shown("vnic_type", |m| json!(m.vnic_type)),
        A::key("project_id"),
        A::key("tenant_id"),
        // Rendered by `head`.
        common_attr!(Member, tags),
    ])
});

/// Attributes accepted on POST and in batch items.
pub fn post_keys() -> &'static [&'static str] {
    TABLE.create_keys()
}

/// Renders a member.
pub fn render(m: &Member) -> Map<String, Value> {
    let mut o = head(
        m.id,
        &m.project_id,
        m.provisioning_status,
        m.operating_status,
        m.created_at,
        m.updated_at,
        &m.tags,
    );
    TABLE.render(m, &mut o);
    o
}

fn render_doc(d: &Document) -> ApiResult<Map<String, Value>> {
    Ok(render(&d.decode::<Member>()?))
}

fn no_relations(_: &mut Map<String, Value>, _: &RelIndex) {}

/// Octavia's `ip_not_reserved` plus loopback, unspecified, multicast and broadcast, on the
/// parsed address (so `::ffff:169.254.169.254` is the metadata address too).
fn check_address(address: IpAddr) -> ApiResult<()> {
    validate::member_address(address)
        .map_err(|e| ApiError::validation(format!("The IP Address {address} {e}.")))
}

/// Reads a new member of `pool` (POST, batch and single-create).
pub fn parse_new(
    state: &AppState,
    obj: &Obj<'_>,
    pool: &Pool,
    has_monitor: bool,
) -> ApiResult<Member> {
    // The table sets every attribute below (absent ones get their defaults).
    let mut m = Member {
        id: Uuid::new_v4(),
        project_id: pool.project_id.clone(),
        loadbalancer_id: pool.loadbalancer_id,
        pool_id: pool.id,
        name: None,
        admin_state_up: true,
        provisioning_status: ProvisioningStatus::PendingCreate,
        operating_status: if has_monitor {
            OperatingStatus::Offline
        } else {
            OperatingStatus::NoMonitor
        },
        created_at: now(),
        updated_at: None,
        tags: Vec::new(),
        address: IpAddr::from([0, 0, 0, 0]),
        protocol_port: 0,
        weight: 1,
        backup: false,
        subnet_id: None,
        monitor_address: None,
        monitor_port: None,
        request_sriov: false,
        vnic_type: "normal".to_owned(),
    };
    TABLE.create(obj, &mut m, &state.config, None)?;
    Ok(m)
}

/// Applies the updatable attributes; returns whether anything changed.
fn apply_update(state: &AppState, m: &mut Member, obj: &Obj<'_>) -> ApiResult<bool> {
    let before = m.clone();
    TABLE.update(obj, m, &state.config, None)?;
    Ok(*m != before)
}

async fn pool_for_write(
    state: &AppState,
    ctx: &RequestContext,
    pool_id: &str,
    op: Op,
) -> ApiResult<(klb_store::WriteTx, Pool, LoadBalancer)> {
    let (tx, pool, lb) =
        begin_write::<Pool>(state, ctx, pool_id, Action::new(R::Member, op)).await?;
    status::check_parent_mutable(Kind::Pool, pool.id, pool.provisioning_status)?;
    Ok((tx, pool, lb))
}

/// GET /v2/pools/{pool_id}/members
pub async fn list(
    State(state): State<AppState>,
    ctx: RequestContext,
    Path(pool_id): Path<String>,
    q: QueryPairs,
    OrigPath(path): OrigPath,
) -> ApiResult<Response> {
    let pool: Pool = load(&state, &ctx, &pool_id, Action::new(R::Member, Op::GetAll)).await?;
    let params = ListParams::parse(&q.0)?;
    let listing = Listing {
        base: ListQuery {
            kind: Some(Kind::Member.into()),
            parent_id: Some(pool.id.to_string()),
            project_id: scope_project(&ctx, R::Member)?,
            ..Default::default()
        },
        // openstacksdk and the CLI may repeat the parent as a filter (Octavia accepts any
        // attribute of its data model, `pool_id` included).
        column_filters: &[("pool_id", Column::Parent), ("project_id", Column::Project)],
        with_relations: false,
    };
    let (items, links) =
        list::run(&state, &path, &params, listing, render_doc, no_relations).await?;
    Ok(reply_list("members", items, links))
}

async fn load_member(
    state: &AppState,
    ctx: &RequestContext,
    pool_id: &str,
    id: &str,
    op: Op,
) -> ApiResult<Member> {
    let _pool: Pool = load(state, ctx, pool_id, Action::new(R::Member, op)).await?;
    let m: Member = load(state, ctx, id, Action::new(R::Member, op)).await?;
    if m.pool_id.to_string() != pool_id.to_ascii_lowercase() {
        return Err(ApiError::not_found(Kind::Member, id));
    }
    Ok(m)
}

/// GET /v2/pools/{pool_id}/members/{id}
pub async fn get_one(
    State(state): State<AppState>,
    ctx: RequestContext,
    Path((pool_id, id)): Path<(String, String)>,
    q: QueryPairs,
) -> ApiResult<Response> {
    let m = load_member(&state, &ctx, &pool_id, &id, Op::GetOne).await?;
    Ok(reply(
        StatusCode::OK,
        "member",
        list::select_fields(render(&m), &q.fields()),
    ))
}

/// POST /v2/pools/{pool_id}/members
pub async fn create(
    State(state): State<AppState>,
    ctx: RequestContext,
    Path(pool_id): Path<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    let obj = Obj::envelope(&body, "member", "member_", TABLE.create_keys())?;
    let action = Action::new(R::Member, Op::Post);
    let mut raced_lb = None;
    for _ in 0..CHILD_WRITE_ATTEMPTS {
        let (pool, mut lb, graph) = read_for_child::<Pool>(&state, &ctx, &pool_id, action).await?;
        let pool = pool.value;
        status::check_parent_mutable(Kind::Pool, pool.id, pool.provisioning_status)?;
        // The pool's relations: its health monitor and the listeners it serves.
        let rels = graph.relations(pool.id);
        let has_monitor = !rels
            .children(&pool.id.to_string(), Kind::HealthMonitor)
            .is_empty();
        let m = parse_new(&state, &obj, &pool, has_monitor)?;
        let existing = graph.children::<Member>(pool.id)?;
        if existing
            .iter()
            .any(|o| o.address == m.address && o.protocol_port == m.protocol_port)
        {
            return Err(ApiError::Conflict(format!(
                "Another member on this pool is already using ip {} on protocol_port {}",
                m.address, m.protocol_port
            )));
        }
        let quota = check_quota_before_write(&state, &m.project_id, Kind::Member, 1).await?;
        let listeners = graph_listeners(&graph, &listeners_through(&rels, pool.id))?;
        let mut write = ChildWrite::lock(&mut lb)?;
        write.lock_listeners(listeners)?;
        write.insert(&m)?;
        write.enqueue(lb.value.id, JobOp::Create, Kind::Member, m.id);
        write.guard_quota(quota);
        if let Commit::Done = write.commit(&state).await? {
            return Ok(reply(
                StatusCode::CREATED,
                "member",
                Value::Object(render(&m)),
            ));
        }
        raced_lb = Some(lb.value.id);
    }
    Err(lb_busy(raced_lb.unwrap_or_default()))
}

/// PUT /v2/pools/{pool_id}/members/{id}
pub async fn update(
    State(state): State<AppState>,
    ctx: RequestContext,
    Path((pool_id, id)): Path<(String, String)>,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    let obj = Obj::envelope(&body, "member", "member_", TABLE.update_keys())?;
    load_member(&state, &ctx, &pool_id, &id, Op::Put).await?;
    let (mut tx, pool, mut lb) = pool_for_write(&state, &ctx, &pool_id, Op::Put).await?;
    let mut m: Member = tx
        .get_resource(path_id(Kind::Member, &id)?)
        .await?
        .ok_or_else(|| ApiError::not_found(Kind::Member, &id))?;
    apply_update(&state, &mut m, &obj)?;
    m.provisioning_status = ProvisioningStatus::PendingUpdate;
    m.updated_at = Some(now());
    let listeners = listeners_of_pool(&mut tx, pool.id).await?;
    mark_pending(&mut tx, &mut lb, &listeners).await?;
    tx.put_resource(&m).await?;
    enqueue(&mut tx, lb.id, JobOp::Update, Kind::Member, m.id).await?;
    tx.commit().await?;
    Ok(reply(StatusCode::OK, "member", Value::Object(render(&m))))
}

/// DELETE /v2/pools/{pool_id}/members/{id}
pub async fn delete(
    State(state): State<AppState>,
    ctx: RequestContext,
    Path((pool_id, id)): Path<(String, String)>,
) -> ApiResult<Response> {
    load_member(&state, &ctx, &pool_id, &id, Op::Delete).await?;
    let (mut tx, pool, mut lb) = pool_for_write(&state, &ctx, &pool_id, Op::Delete).await?;
    let mut m: Member = tx
        .get_resource(path_id(Kind::Member, &id)?)
        .await?
        .ok_or_else(|| ApiError::not_found(Kind::Member, &id))?;
    let listeners = listeners_of_pool(&mut tx, pool.id).await?;
    mark_pending(&mut tx, &mut lb, &listeners).await?;
    m.provisioning_status = ProvisioningStatus::PendingDelete;
    m.updated_at = Some(now());
    tx.put_resource(&m).await?;
    enqueue(&mut tx, lb.id, JobOp::Delete, Kind::Member, m.id).await?;
    tx.commit().await?;
    Ok(no_content())
}

/// PUT /v2/pools/{pool_id}/members — batch update (202, no body).
pub async fn batch(
    State(state): State<AppState>,
    ctx: RequestContext,
    Path(pool_id): Path<String>,
    q: QueryPairs,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    let additive_only = q
        .get("additive_only")
        .is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "true" | "1" | "yes" | "on"));
    let Value::Object(outer) = &body else {
        return Err(ApiError::invalid(
            "members",
            &body,
            "Mandatory field missing.",
        ));
    };
    Obj::new(outer).only("members_", &["members"])?;
    let items = required("members", Obj::new(outer).objects("members")?)?;
    let (mut tx, pool, mut lb) = pool_for_write(&state, &ctx, &pool_id, Op::Put).await?;
    let rels = RelIndex::new(tx.relations(&[pool.id.to_string()]).await?);
    let has_monitor = !rels
        .children(&pool.id.to_string(), Kind::HealthMonitor)
        .is_empty();
    let mut existing: Vec<Member> = tx
        .list_resources(ListQuery {
            parent_id: Some(pool.id.to_string()),
            ..Default::default()
        })
        .await?;
    let mut seen = HashSet::new();
    let mut creates = Vec::new();
    let mut updates = Vec::new();
    for item in &items {
        item.only("members_", TABLE.create_keys())?;
        let address = required("address", item.ip("address")?)?;
        let port = required("protocol_port", item.int("protocol_port", 1, 65535)?)? as u16;
        if !seen.insert((address, port)) {
            // Octavia 19: an existing member named twice is a validation failure; a new one
            // twice fails as a duplicate entry when the second create hits the first.
            let exists = existing
                .iter()
                .any(|m| m.address == address && m.protocol_port == port);
            return Err(if exists {
                ApiError::BadRequest(
                    "Validation failure: Member must be updated only once in the same request."
                        .to_owned(),
                )
            } else {
                ApiError::Conflict(format!(
                    "Another member on this pool is already using ip {address} on protocol_port {port}"
                ))
            });
        }
        match existing
            .iter_mut()
            .find(|m| m.address == address && m.protocol_port == port)
        {
            Some(m) => {
                let mut changed = m.clone();
                if apply_update(&state, &mut changed, item)? {
                    updates.push(changed);
                }
            }
            None => creates.push(parse_new(&state, item, &pool, has_monitor)?),
        }
    }
    let deletes: Vec<Member> = if additive_only {
        Vec::new()
    } else {
        existing
            .into_iter()
            .filter(|m| !seen.contains(&(m.address, m.protocol_port)))
            .collect()
    };
    if creates.is_empty() && updates.is_empty() && deletes.is_empty() {
        return Ok(accepted());
    }
    check_quota(
        &state,
        &mut tx,
        &pool.project_id,
        Kind::Member,
        creates.len() as i64 - deletes.len() as i64,
    )
    .await?;
    let listeners = listeners_of_pool(&mut tx, pool.id).await?;
    mark_pending(&mut tx, &mut lb, &listeners).await?;
    let stamp = now();
    for m in &creates {
        tx.insert_resource(m).await?;
    }
    for mut m in updates {
        m.provisioning_status = ProvisioningStatus::PendingUpdate;
        m.updated_at = Some(stamp);
        tx.put_resource(&m).await?;
    }
    for mut m in deletes {
        m.provisioning_status = ProvisioningStatus::PendingDelete;
        m.updated_at = Some(stamp);
        tx.put_resource(&m).await?;
    }
    enqueue(&mut tx, lb.id, JobOp::BatchMembers, Kind::Pool, pool.id).await?;
    tx.commit().await?;
    Ok(accepted())
}
