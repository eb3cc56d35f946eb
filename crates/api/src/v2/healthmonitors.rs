//! `/v2/healthmonitors` (octavia-api.md §5).

use std::sync::LazyLock;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use klb_model::*;
use klb_store::{Document, JobOp, ListQuery};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::common::*;
use super::fields::{Attr, Reader, Table, common_attr, read};
use super::loadbalancers::scope_project;
use crate::AppState;
use crate::body::{Field, JsonBody, Obj, required};
use crate::context::{Action, Op, RequestContext, Resource as R};
use crate::error::{ApiError, ApiResult};
use crate::list::{self, Column, ListParams, Listing, RelIndex};

/// HAProxy keeps timers as 32-bit milliseconds: a larger `delay`/`timeout` would pass here
/// and fail `haproxy -c` on the LB VM (issue 11 §5).
const MAX_MONITOR_SECONDS: i64 = validate::MAX_MONITOR_SECONDS as i64;
const UDP_CONNECT_MIN_DELAY: i64 = 3;

/// The monitor's attributes: how each is read (with its bounds), stored, updated and rendered
/// (see [`super::fields`]). PUT refuses a null `delay`, `timeout` or `max_retries` (`update`).
static TABLE: LazyLock<Table<HealthMonitor>> = LazyLock::new(|| {
    type A = Attr<HealthMonitor>;
    Table::new(vec![
        A::key("pool_id"),
        A::key("project_id"),
        A::key("tenant_id"),
        common_attr!(HealthMonitor, name),
        common_attr!(HealthMonitor, admin_state_up),
        A::new(
            "type",
            read::one_of(HealthMonitorType::ALL),
            |h, v, _| h.kind = v.unwrap_or(h.kind),
            |h| json!(h.kind.as_str()),
        )
        .required(),
        A::new(
            "delay",
            read::int(0, MAX_MONITOR_SECONDS),
            |h, v, _| h.delay = v.unwrap_or(h.delay),
            |h| json!(h.delay),
        )
        .required()
        .updatable(),
        A::new(
            "timeout",
            read::int(0, MAX_MONITOR_SECONDS),
            |h, v, _| h.timeout = v.unwrap_or(h.timeout),
            |h| json!(h.timeout),
        )
        .required()
        .updatable(),
        A::new(
            "max_retries",
            read::int(1, 10),
            |h, v, _| h.max_retries = v.unwrap_or(h.max_retries),
            |h| json!(h.max_retries),
        )
        .required()
        .updatable(),
        A::new(
            "max_retries_down",
            read::int(1, 10),
            |h, v, _| h.max_retries_down = v.unwrap_or(3),
            |h| json!(h.max_retries_down),
        )
        .updatable(),
        A::new(
            "http_version",
            http_version(),
            |h, v, _| h.http_version = v,
            |h| json!(h.http_version),
        )
        .updatable(),
        A::new(
            "domain_name",
            read::checked(255, validate::domain_name),
            |h, v, _| h.domain_name = v,
            |h| json!(h.domain_name),
        )
        .updatable(),
        // Rendered by `head`.
        common_attr!(HealthMonitor, tags),
        // HTTP-only, read together by `apply_http` after the others.
        A::key("http_method")
            .updatable()
            .rendered(|h| json!(h.http_method.map(|x| x.as_str()))),
        A::key("url_path")
            .updatable()
            .rendered(|h| json!(h.url_path)),
        A::key("expected_codes")
            .updatable()
            .rendered(|h| json!(h.expected_codes)),
        A::shown("pools", |h| json!([{"id": h.pool_id}])),
    ])
});

/// Attributes accepted on POST.
pub fn post_keys() -> &'static [&'static str] {
    TABLE.create_keys()
}

/// Renders a health monitor.
pub fn render(h: &HealthMonitor) -> Map<String, Value> {
    let mut m = head(
        h.id,
        &h.project_id,
        h.provisioning_status,
        h.operating_status,
        h.created_at,
        h.updated_at,
        &h.tags,
    );
    TABLE.render(h, &mut m);
    m
}

fn render_doc(d: &Document) -> ApiResult<Map<String, Value>> {
    Ok(render(&d.decode::<HealthMonitor>()?))
}

fn no_relations(_: &mut Map<String, Value>, _: &RelIndex) {}

/// `http_version`: 1.0 or 1.1.
fn http_version() -> Reader<f64> {
    std::sync::Arc::new(|obj: &Obj<'_>, key: &str| http_version_of(obj, key))
}

fn http_version_of(obj: &Obj<'_>, key: &str) -> ApiResult<Field<f64>> {
    Ok(match obj.raw(key) {
        None => Field::Absent,
        Some(Value::Null) => Field::Null,
        Some(v) => match v.as_f64() {
            Some(x) if x == 1.0 || x == 1.1 => Field::Set(x),
            _ => {
                return Err(ApiError::invalid(
                    key,
                    v,
                    "Value should be one of: 1.0, 1.1",
                ));
            }
        },
    })
}

/// The HTTP-only attributes of `obj`, applied to `h` (defaults for HTTP types, 400 otherwise).
fn apply_http(h: &mut HealthMonitor, obj: &Obj<'_>, creating: bool) -> ApiResult<()> {
    let method = obj.enumerated("http_method", HttpMethod::ALL)?;
    let path = obj.checked("url_path", 2048, validate::url_path)?;
    let codes = obj.checked("expected_codes", 64, validate::expected_codes)?;
    if !h.kind.is_http() {
        for (name, present) in [
            ("http_method", method.present()),
            ("url_path", path.present()),
            ("expected_codes", codes.present()),
        ] {
            if present && !matches!(obj.raw(name), Some(Value::Null)) {
                return Err(ApiError::BadRequest(format!(
                    "{name} is not a valid option for health monitors of type {}",
                    h.kind
                )));
            }
        }
        return Ok(());
    }
    match method.update() {
        Some(v) => h.http_method = Some(v.unwrap_or(HttpMethod::Get)),
        None if creating => h.http_method = Some(HttpMethod::Get),
        None => {}
    }
    match path.update() {
        Some(v) => h.url_path = Some(v.unwrap_or_else(|| "/".to_owned())),
        None if creating => h.url_path = Some("/".to_owned()),
        None => {}
    }
    match codes.update() {
        Some(v) => h.expected_codes = Some(v.unwrap_or_else(|| "200".to_owned())),
        None if creating => h.expected_codes = Some("200".to_owned()),
        None => {}
    }
    Ok(())
}

fn check(h: &HealthMonitor, pool: &Pool) -> ApiResult<()> {
    use HealthMonitorType as T;
    if pool.protocol.is_datagram() {
        if !matches!(h.kind, T::UdpConnect | T::Sctp | T::Tcp | T::Http) {
            return Err(ApiError::validation(format!(
                "The associated pool protocol is {}, only UDP-CONNECT, SCTP, TCP and HTTP health monitor types are supported.",
                pool.protocol
            )));
        }
    } else if matches!(h.kind, T::UdpConnect | T::Sctp) {
        return Err(ApiError::validation(format!(
            "The {} type is only supported for pools of type UDP/SCTP.",
            h.kind
        )));
    }
    if h.kind == T::UdpConnect && h.delay < UDP_CONNECT_MIN_DELAY {
        return Err(ApiError::validation(format!(
            "The request delay value {} should be larger than {UDP_CONNECT_MIN_DELAY} for UDP-CONNECT health monitor type.",
            h.delay
        )));
    }
    if h.domain_name.is_some() && h.http_version != Some(1.1) {
        return Err(ApiError::validation(
            "http_version 1.1 is required when domain_name is set.",
        ));
    }
    if (h.domain_name.is_some() || h.http_version.is_some()) && !h.kind.is_http() {
        return Err(ApiError::BadRequest(format!(
            "http_version is not a valid option for health monitors of type {}",
            h.kind
        )));
    }
    Ok(())
}

/// Reads a new health monitor of `pool`.
pub fn parse_new(state: &AppState, obj: &Obj<'_>, pool: &Pool) -> ApiResult<HealthMonitor> {
    // The table sets every attribute below (absent ones get their defaults).
    let mut h = HealthMonitor {
        id: Uuid::new_v4(),
        project_id: pool.project_id.clone(),
        loadbalancer_id: pool.loadbalancer_id,
        pool_id: pool.id,
        name: None,
        admin_state_up: true,
        provisioning_status: ProvisioningStatus::PendingCreate,
        operating_status: OperatingStatus::Offline,
        created_at: now(),
        updated_at: None,
        tags: Vec::new(),
        kind: HealthMonitorType::Http,
        delay: 0,
        timeout: 0,
        max_retries: 0,
        max_retries_down: 3,
        http_method: None,
        url_path: None,
        expected_codes: None,
        http_version: None,
        domain_name: None,
    };
    TABLE.create(obj, &mut h, &state.config, None)?;
    apply_http(&mut h, obj, true)?;
    check(&h, pool)?;
    Ok(h)
}

/// GET /v2/healthmonitors
pub async fn list(
    State(state): State<AppState>,
    ctx: RequestContext,
    q: QueryPairs,
    OrigPath(path): OrigPath,
) -> ApiResult<Response> {
    let params = ListParams::parse(&q.0)?;
    let listing = Listing {
        base: ListQuery {
            kind: Some(Kind::HealthMonitor.into()),
            project_id: scope_project(&ctx, R::HealthMonitor)?,
            ..Default::default()
        },
        column_filters: &[
            ("pool_id", Column::Parent),
            ("loadbalancer_id", Column::LoadBalancer),
            ("project_id", Column::Project),
        ],
        with_relations: false,
    };
    let (items, links) =
        list::run(&state, &path, &params, listing, render_doc, no_relations).await?;
    Ok(reply_list("healthmonitors", items, links))
}

/// GET /v2/healthmonitors/{id}
pub async fn get_one(
    State(state): State<AppState>,
    ctx: RequestContext,
    Path(id): Path<String>,
    q: QueryPairs,
) -> ApiResult<Response> {
    let h: HealthMonitor =
        load(&state, &ctx, &id, Action::new(R::HealthMonitor, Op::GetOne)).await?;
    Ok(reply(
        StatusCode::OK,
        "healthmonitor",
        list::select_fields(render(&h), &q.fields()),
    ))
}

/// POST /v2/healthmonitors
pub async fn create(
    State(state): State<AppState>,
    ctx: RequestContext,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    let obj = Obj::envelope(
        &body,
        "healthmonitor",
        "health_monitor_",
        TABLE.create_keys(),
    )?;
    let pool_id = required("pool_id", obj.uuid("pool_id")?)?;
    let (mut tx, pool, mut lb) = begin_write::<Pool>(
        &state,
        &ctx,
        &pool_id.to_string(),
        Action::new(R::HealthMonitor, Op::Post),
    )
    .await?;
    status::check_parent_mutable(Kind::Pool, pool.id, pool.provisioning_status)?;
    let h = parse_new(&state, &obj, &pool)?;
    let rels = RelIndex::new(tx.relations(&[pool.id.to_string()]).await?);
    if !rels
        .children(&pool.id.to_string(), Kind::HealthMonitor)
        .is_empty()
    {
        return Err(ApiError::Conflict(
            "This pool already has a health monitor".to_owned(),
        ));
    }
    check_quota(&state, &mut tx, &h.project_id, Kind::HealthMonitor, 1).await?;
    let listeners = listeners_of_pool(&mut tx, pool.id).await?;
    mark_pending(&mut tx, &mut lb, &listeners).await?;
    tx.insert_resource(&h).await?;
    enqueue(&mut tx, lb.id, JobOp::Create, Kind::HealthMonitor, h.id).await?;
    tx.commit().await?;
    Ok(reply(
        StatusCode::CREATED,
        "healthmonitor",
        Value::Object(render(&h)),
    ))
}

/// PUT /v2/healthmonitors/{id}
pub async fn update(
    State(state): State<AppState>,
    ctx: RequestContext,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    let obj = Obj::envelope(
        &body,
        "healthmonitor",
        "health_monitor_",
        TABLE.update_keys(),
    )?;
    for name in ["delay", "timeout", "max_retries"] {
        if matches!(obj.raw(name), Some(Value::Null)) {
            return Err(ApiError::invalid(
                name,
                &Value::Null,
                "Mandatory field missing.",
            ));
        }
    }
    let (mut tx, mut h, mut lb) =
        begin_write::<HealthMonitor>(&state, &ctx, &id, Action::new(R::HealthMonitor, Op::Put))
            .await?;
    let pool: Pool = tx
        .get_resource(h.pool_id)
        .await?
        .ok_or_else(|| ApiError::not_found(Kind::Pool, &h.pool_id.to_string()))?;
    status::check_parent_mutable(Kind::Pool, pool.id, pool.provisioning_status)?;
    TABLE.update(&obj, &mut h, &state.config, None)?;
    apply_http(&mut h, &obj, false)?;
    check(&h, &pool)?;
    h.provisioning_status = ProvisioningStatus::PendingUpdate;
    h.updated_at = Some(now());
    let listeners = listeners_of_pool(&mut tx, pool.id).await?;
    mark_pending(&mut tx, &mut lb, &listeners).await?;
    tx.put_resource(&h).await?;
    enqueue(&mut tx, lb.id, JobOp::Update, Kind::HealthMonitor, h.id).await?;
    tx.commit().await?;
    Ok(reply(
        StatusCode::OK,
        "healthmonitor",
        Value::Object(render(&h)),
    ))
}

/// DELETE /v2/healthmonitors/{id}
pub async fn delete(
    State(state): State<AppState>,
    ctx: RequestContext,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let (mut tx, mut h, mut lb) =
        begin_write::<HealthMonitor>(&state, &ctx, &id, Action::new(R::HealthMonitor, Op::Delete))
            .await?;
    let listeners = listeners_of_pool(&mut tx, h.pool_id).await?;
    mark_pending(&mut tx, &mut lb, &listeners).await?;
    h.provisioning_status = ProvisioningStatus::PendingDelete;
    h.updated_at = Some(now());
    tx.put_resource(&h).await?;
    enqueue(&mut tx, lb.id, JobOp::Delete, Kind::HealthMonitor, h.id).await?;
    tx.commit().await?;
    Ok(no_content())
}
