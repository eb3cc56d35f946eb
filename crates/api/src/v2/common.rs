//! Helpers shared by the resource modules: extractors, responses, rendering of common
//! fields, and the locking sequence every change goes through.

use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use klb_model::{Kind, LoadBalancer, ProvisioningStatus, Resource, status};
use klb_store::{JobOp, NewJob, WriteTx};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::body::{Field, Obj};
use crate::context::{Action, Denied, RequestContext};
use crate::error::{ApiError, ApiResult};
use crate::list::RelIndex;
use crate::{AppState, RequestPath};

/// Query pairs; a malformed query string is a 400 with the fault body.
pub struct QueryPairs(pub Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for QueryPairs {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let pairs = axum::extract::Query::<Vec<(String, String)>>::try_from_uri(&parts.uri)
            .map_err(|e| ApiError::BadRequest(format!("Invalid query string: {}", e.body_text())))?
            .0;
        // No stored value contains NUL, and PostgreSQL refuses it in any text parameter (a
        // filter `?project_id=%00` was a 500 there and an empty list on SQLite).
        if pairs
            .iter()
            .any(|(k, v)| k.contains('\0') || v.contains('\0'))
        {
            return Err(ApiError::BadRequest(
                "Invalid query string: NUL characters are not allowed.".to_owned(),
            ));
        }
        Ok(QueryPairs(pairs))
    }
}

impl QueryPairs {
    /// The last value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// `fields=` values.
    pub fn fields(&self) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == "fields")
            .flat_map(|(_, v)| v.split(',').map(|s| s.trim().to_owned()))
            .filter(|s| !s.is_empty())
            .collect()
    }
}

/// The client's request URL without query (`http[s]://host/path`, as Octavia builds its
/// pagination links from the application URL).
pub struct OrigPath(pub String);

impl<S: Send + Sync> FromRequestParts<S> for OrigPath {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let path = parts
            .extensions
            .get::<RequestPath>()
            .map(|p| p.0.clone())
            .unwrap_or_else(|| parts.uri.path().to_owned());
        let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
        let host = header("x-forwarded-host")
            .or_else(|| header("host"))
            .or_else(|| parts.uri.authority().map(|a| a.as_str()))
            .unwrap_or("localhost");
        let scheme = match header("x-forwarded-proto") {
            Some("https") => "https",
            _ => "http",
        };
        // A Host header is the client's own input: only a sane host[:port] is echoed.
        let host = if host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-.:[]".contains(c))
        {
            host
        } else {
            "localhost"
        };
        Ok(OrigPath(format!("{scheme}://{host}{path}")))
    }
}

/// `{"<envelope>": obj}` with a status.
pub fn reply(status: StatusCode, envelope: &str, obj: Value) -> Response {
    let mut outer = Map::with_capacity(1);
    outer.insert(envelope.to_owned(), obj);
    (status, axum::Json(Value::Object(outer))).into_response()
}

/// A list reply with its links.
pub fn reply_list(envelope: &str, items: Vec<Value>, links: Vec<Value>) -> Response {
    let mut outer = Map::with_capacity(2);
    outer.insert(envelope.to_owned(), Value::Array(items));
    outer.insert(format!("{envelope}_links"), Value::Array(links));
    axum::Json(Value::Object(outer)).into_response()
}

/// 204.
pub fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

/// 202 with an empty body.
pub fn accepted() -> Response {
    StatusCode::ACCEPTED.into_response()
}

/// Octavia's timestamp format (no zone).
pub fn ts(t: DateTime<Utc>) -> Value {
    Value::String(t.format("%Y-%m-%dT%H:%M:%S").to_string())
}

/// Optional timestamp.
pub fn ts_opt(t: Option<DateTime<Utc>>) -> Value {
    t.map(ts).unwrap_or(Value::Null)
}

/// Optional value to JSON.
pub fn opt<T: ToString>(v: &Option<T>) -> Value {
    v.as_ref()
        .map(|v| Value::String(v.to_string()))
        .unwrap_or(Value::Null)
}

/// `[{"id": ...}]`.
pub fn id_refs<'a>(ids: impl IntoIterator<Item = &'a str>) -> Value {
    Value::Array(ids.into_iter().map(|id| json!({ "id": id })).collect())
}

/// Now, truncated to microseconds (what the store keeps).
pub fn now() -> DateTime<Utc> {
    let t = Utc::now();
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

/// Maps a policy refusal on an object to its HTTP answer.
pub fn denied(kind: Kind, id: &str, d: Denied) -> ApiError {
    match d {
        Denied::NotVisible => ApiError::not_found(kind, id),
        Denied::Forbidden => ApiError::Forbidden,
    }
}

/// Parses a path id; a malformed one is simply not found.
pub fn path_id(kind: Kind, id: &str) -> ApiResult<Uuid> {
    Uuid::parse_str(id).map_err(|_| ApiError::not_found(kind, id))
}

/// Reads an object for GET: 404 when absent, deleted or not visible; 403 when refused.
pub async fn load<T: Resource>(
    state: &AppState,
    ctx: &RequestContext,
    id: &str,
    action: Action,
) -> ApiResult<T> {
    let uuid = path_id(T::KIND, id)?;
    let obj: T = state
        .store
        .get_resource(uuid)
        .await?
        .ok_or_else(|| ApiError::not_found(T::KIND, id))?;
    ctx.authorize(action, obj.project_id())
        .map_err(|d| denied(T::KIND, id, d))?;
    Ok(obj)
}

/// The locking sequence of every child change: read `T` (404/403 as for GET), open a write
/// transaction, lock its load balancer (row lock on PostgreSQL), re-read `T` inside the
/// transaction, and require the load balancer to be ACTIVE (409 `ImmutableObject`).
pub async fn begin_write<T: Resource>(
    state: &AppState,
    ctx: &RequestContext,
    id: &str,
    action: Action,
) -> ApiResult<(WriteTx, T, LoadBalancer)> {
    let first: T = load(state, ctx, id, action).await?;
    let lb_id = first
        .loadbalancer_id()
        .ok_or_else(|| ApiError::not_found(T::KIND, id))?;
    let mut tx = state.store.begin().await?;
    let lb: LoadBalancer = tx
        .get_resource(lb_id)
        .await?
        .ok_or_else(|| ApiError::not_found(Kind::LoadBalancer, &lb_id.to_string()))?;
    let obj: T = tx
        .get_resource(first.id())
        .await?
        .ok_or_else(|| ApiError::not_found(T::KIND, id))?;
    status::check_lb_mutable(lb.id, lb.provisioning_status)?;
    Ok((tx, obj, lb))
}

/// Locks the load balancer and every listener in `listener_ids` for a child change: the LB
/// goes `PENDING_UPDATE`, ACTIVE listeners go `PENDING_UPDATE` (each with `updated_at`: in
/// Octavia every write of a row sets it).
pub async fn mark_pending(
    tx: &mut WriteTx,
    lb: &mut LoadBalancer,
    listener_ids: &[Uuid],
) -> ApiResult<()> {
    let stamp = now();
    lb.provisioning_status = ProvisioningStatus::PendingUpdate;
    lb.updated_at = Some(stamp);
    tx.put_resource(lb).await?;
    for id in listener_ids {
        if let Some(mut l) = tx.get_resource::<klb_model::Listener>(*id).await?
            && l.provisioning_status == ProvisioningStatus::Active
        {
            l.provisioning_status = ProvisioningStatus::PendingUpdate;
            l.updated_at = Some(stamp);
            tx.put_resource(&l).await?;
        }
    }
    Ok(())
}

/// Listeners whose traffic goes through pool `pool_id` (default pool or L7 redirect).
pub async fn listeners_of_pool(tx: &mut WriteTx, pool_id: Uuid) -> ApiResult<Vec<Uuid>> {
    let rels = RelIndex::new(tx.relations(&[pool_id.to_string()]).await?);
    let pid = pool_id.to_string();
    let mut ids: Vec<Uuid> = rels
        .referrers(&pid, Kind::Listener)
        .iter()
        .filter_map(|r| r.id.parse().ok())
        .collect();
    for policy in rels.referrers(&pid, Kind::L7Policy) {
        if let Some(l) = policy.parent_id.as_ref().and_then(|p| p.parse().ok()) {
            ids.push(l);
        }
    }
    ids.sort();
    ids.dedup();
    Ok(ids)
}

/// The job of a change of `target` in load balancer `lb`'s graph.
pub fn job(lb: Uuid, op: JobOp, kind: Kind, target: Uuid) -> NewJob {
    NewJob {
        loadbalancer_id: lb.to_string(),
        op,
        target_kind: kind,
        target_id: target.to_string(),
        payload: None,
    }
}

/// Enqueues the job of a change.
pub async fn enqueue(
    tx: &mut WriteTx,
    lb: Uuid,
    op: JobOp,
    kind: Kind,
    target: Uuid,
) -> ApiResult<()> {
    tx.enqueue_job(job(lb, op, kind, target)).await?;
    Ok(())
}

/// The project of a new object: the body's `project_id`/`tenant_id` (admin may name another
/// project), else the context's; 400 when neither gives one.
pub fn project_for_create(ctx: &RequestContext, obj: &Obj<'_>) -> ApiResult<String> {
    let from_body = match obj.string("project_id", 36)? {
        Field::Set(p) => Some(p),
        _ => obj.string("tenant_id", 36)?.opt(),
    };
    match (from_body, &ctx.project_id) {
        (Some(p), Some(own)) if &p != own && !ctx.is_admin => Err(ApiError::Forbidden),
        (Some(p), _) => Ok(p),
        (None, Some(own)) => Ok(own.clone()),
        (None, None) => Err(ApiError::BadRequest(
            "Missing project ID in request where one is required. An administrator should check the keystone settings in the Octavia configuration.".to_owned(),
        )),
    }
}

/// Reads `name`/`description`.
pub fn text(obj: &Obj<'_>, name: &str) -> ApiResult<Field<String>> {
    obj.text(name, klb_model::validate::MAX_STR)
}

/// The common head of every rendered object.
pub fn head(
    id: Uuid,
    project_id: &str,
    provisioning: ProvisioningStatus,
    operating: klb_model::OperatingStatus,
    created: DateTime<Utc>,
    updated: Option<DateTime<Utc>>,
    tags: &[String],
) -> Map<String, Value> {
    let mut m = Map::with_capacity(32);
    m.insert("id".into(), Value::String(id.to_string()));
    m.insert("project_id".into(), Value::String(project_id.to_owned()));
    m.insert("tenant_id".into(), Value::String(project_id.to_owned()));
    m.insert(
        "provisioning_status".into(),
        Value::String(provisioning.as_str().to_owned()),
    );
    m.insert(
        "operating_status".into(),
        Value::String(operating.as_str().to_owned()),
    );
    m.insert("created_at".into(), ts(created));
    m.insert("updated_at".into(), ts_opt(updated));
    m.insert("tags".into(), json!(tags));
    m
}

/// Checks TLS refs through the certificate manager, as the owning project: 400
/// `Could not retrieve certificate: [refs]` (with why) when one cannot be used.
pub async fn check_certs(
    state: &AppState,
    project: &str,
    refs: &[(&str, klb_certs::CertUsage)],
) -> ApiResult<()> {
    let mut bad = Vec::new();
    let mut reasons = Vec::new();
    for (reference, usage) in refs {
        match state.certs.check(project, reference, *usage).await {
            Ok(()) => {}
            Err(e) if e.is_client_error() => {
                bad.push((*reference).to_owned());
                if let klb_certs::CertError::Invalid { reason, .. } = e {
                    reasons.push(reason);
                }
            }
            Err(e) => return Err(ApiError::Unavailable(format!("certificate store: {e}"))),
        }
    }
    if bad.is_empty() {
        return Ok(());
    }
    let why = if reasons.is_empty() {
        String::new()
    } else {
        format!(" ({})", reasons.join("; "))
    };
    Err(ApiError::BadRequest(format!(
        "Could not retrieve certificate: {bad:?}{why}"
    )))
}

/// Refuses a create that would take `project_id` over its quota of `kind` (403).
pub async fn check_quota(
    state: &AppState,
    tx: &mut WriteTx,
    project_id: &str,
    kind: Kind,
    adding: i64,
) -> ApiResult<()> {
    if adding <= 0 {
        return Ok(());
    }
    let Some(limit) = state
        .quotas
        .limit(&state.store, project_id, kind)
        .await?
        .filter(|l| *l >= 0)
    else {
        return Ok(());
    };
    let q = klb_store::ListQuery {
        kind: Some(kind.into()),
        project_id: Some(project_id.to_owned()),
        ..Default::default()
    };
    if tx.count(&q).await? + adding > limit {
        return Err(ApiError::ForbiddenWith(format!(
            "Quota has been met for resources: {}",
            kind.display_name()
        )));
    }
    Ok(())
}
