//! `/v2/healthmonitors` (octavia-api.md §5).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use klb_model::*;
use klb_store::{Document, JobOp, ListQuery};
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
    "name",
    "admin_state_up",
    "pool_id",
    "type",
    "delay",
    "timeout",
    "max_retries",
    "max_retries_down",
    "http_method",
    "url_path",
    "expected_codes",
    "http_version",
    "domain_name",
    "project_id",
    "tenant_id",
    "tags",
];
/// HAProxy keeps timers as 32-bit milliseconds: a larger `delay`/`timeout` would pass here
/// and fail `haproxy -c` on the LB VM (issue 11 §5).
const MAX_MONITOR_SECONDS: i64 = validate::MAX_MONITOR_SECONDS as i64;
const PUT_KEYS: &[&str] = &[
    "name",
    "admin_state_up",
    "delay",
    "timeout",
    "max_retries",
    "max_retries_down",
    "http_method",
    "url_path",
    "expected_codes",
    "http_version",
    "domain_name",
    "tags",
];
const UDP_CONNECT_MIN_DELAY: i64 = 3;

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
    m.insert("name".into(), json!(h.name));
    m.insert("admin_state_up".into(), json!(h.admin_state_up));
    m.insert("type".into(), json!(h.kind.as_str()));
    m.insert("delay".into(), json!(h.delay));
    m.insert("timeout".into(), json!(h.timeout));
    m.insert("max_retries".into(), json!(h.max_retries));
    m.insert("max_retries_down".into(), json!(h.max_retries_down));
    m.insert(
        "http_method".into(),
        json!(h.http_method.map(|x| x.as_str())),
    );
    m.insert("url_path".into(), json!(h.url_path));
    m.insert("expected_codes".into(), json!(h.expected_codes));
    m.insert("http_version".into(), json!(h.http_version));
    m.insert("domain_name".into(), json!(h.domain_name));
    m.insert("pools".into(), json!([{"id": h.pool_id}]));
    m
}

fn render_doc(d: &Document) -> ApiResult<Map<String, Value>> {
    Ok(render(&d.decode::<HealthMonitor>()?))
}

fn no_relations(_: &mut Map<String, Value>, _: &RelIndex) {}

fn http_version(obj: &Obj<'_>) -> ApiResult<Field<f64>> {
    Ok(match obj.raw("http_version") {
        None => Field::Absent,
        Some(Value::Null) => Field::Null,
        Some(v) => match v.as_f64() {
            Some(x) if x == 1.0 || x == 1.1 => Field::Set(x),
            _ => {
                return Err(ApiError::invalid(
                    "http_version",
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
pub fn parse_new(obj: &Obj<'_>, pool: &Pool) -> ApiResult<HealthMonitor> {
    let mut h = HealthMonitor {
        id: Uuid::new_v4(),
        project_id: pool.project_id.clone(),
        loadbalancer_id: pool.loadbalancer_id,
        pool_id: pool.id,
        name: text(obj, "name")?.opt(),
        admin_state_up: obj.bool_null_false("admin_state_up")?.or(true),
        provisioning_status: ProvisioningStatus::PendingCreate,
        operating_status: OperatingStatus::Offline,
        created_at: now(),
        updated_at: None,
        tags: tags(obj)?.or(Vec::new()),
        kind: required("type", obj.enumerated("type", HealthMonitorType::ALL)?)?,
        delay: required("delay", obj.int("delay", 0, MAX_MONITOR_SECONDS)?)?,
        timeout: required("timeout", obj.int("timeout", 0, MAX_MONITOR_SECONDS)?)?,
        max_retries: required("max_retries", obj.int("max_retries", 1, 10)?)?,
        max_retries_down: obj.int("max_retries_down", 1, 10)?.or(3),
        http_method: None,
        url_path: None,
        expected_codes: None,
        http_version: http_version(obj)?.opt(),
        domain_name: obj
            .checked("domain_name", 255, validate::domain_name)?
            .opt(),
    };
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
            kind: Kind::HealthMonitor.as_str().into(),
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
    let obj = Obj::envelope(&body, "healthmonitor", "health_monitor_", POST_KEYS)?;
    let pool_id = required("pool_id", obj.uuid("pool_id")?)?;
    let (mut tx, pool, mut lb) = begin_write::<Pool>(
        &state,
        &ctx,
        &pool_id.to_string(),
        Action::new(R::HealthMonitor, Op::Post),
    )
    .await?;
    status::check_parent_mutable(Kind::Pool, pool.id, pool.provisioning_status)?;
    let h = parse_new(&obj, &pool)?;
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
    let obj = Obj::envelope(&body, "healthmonitor", "health_monitor_", PUT_KEYS)?;
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
    if let Some(v) = text(&obj, "name")?.update() {
        h.name = v;
    }
    if let Field::Set(v) = obj.bool_null_false("admin_state_up")? {
        h.admin_state_up = v;
    }
    if let Field::Set(v) = obj.int("delay", 0, MAX_MONITOR_SECONDS)? {
        h.delay = v;
    }
    if let Field::Set(v) = obj.int("timeout", 0, MAX_MONITOR_SECONDS)? {
        h.timeout = v;
    }
    if let Field::Set(v) = obj.int("max_retries", 1, 10)? {
        h.max_retries = v;
    }
    if let Some(v) = obj.int("max_retries_down", 1, 10)?.update() {
        h.max_retries_down = v.unwrap_or(3);
    }
    if let Some(v) = http_version(&obj)?.update() {
        h.http_version = v;
    }
    if let Some(v) = obj
        .checked("domain_name", 255, validate::domain_name)?
        .update()
    {
        h.domain_name = v;
    }
    if let Some(v) = tags(&obj)?.update() {
        h.tags = v.unwrap_or_default();
    }
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
