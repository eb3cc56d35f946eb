//! Helpers shared by the resource modules: extractors, responses, rendering of common
//! fields, and the locking sequence every change goes through.

use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use klb_model::{Kind, Listener, LoadBalancer, ProvisioningStatus, Resource, status};
use klb_store::{Document, JobOp, NewJob, Relation, StoreError, WriteBatch, WriteTx};
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

/// How many times a child create re-reads and retries when its load balancer changed between
/// its read and its write ([`ChildWrite::commit`] answered [`Commit::Raced`]). A race means
/// another change of the same LB committed first; the retry then usually finds the LB
/// `PENDING_UPDATE` and answers Octavia's 409 as the locked sequence would have.
pub const CHILD_WRITE_ATTEMPTS: usize = 8;

/// A stored resource as read for a change: the model and the version its write is
/// conditioned on.
pub struct Versioned<T> {
    /// The resource.
    pub value: T,
    /// Its stored version when read.
    pub version: i64,
}

/// One load balancer's graph as a child change reads it: every live document (the LB
/// included) with its version, from one query. The change checks its parent, siblings and LB
/// in it instead of reading each (each read is a hand-off to the database's connection
/// thread, and those hand-offs, not the SQL, are most of a small request's cost).
pub struct LbGraph {
    docs: Vec<Document>,
}

impl LbGraph {
    /// The graph that `T` `id` belongs to (empty when no such document exists).
    pub async fn of<T: Resource>(state: &AppState, id: Uuid) -> ApiResult<LbGraph> {
        let docs = state.store.graph_of(T::KIND, &id.to_string()).await?;
        Ok(LbGraph { docs })
    }

    /// `T` `id` with its version, when it is in the graph (live).
    pub fn get<T: Resource>(&self, id: Uuid) -> ApiResult<Option<Versioned<T>>> {
        let id = id.to_string();
        self.docs
            .iter()
            .find(|d| d.kind == T::KIND && d.id == id)
            .map(versioned)
            .transpose()
    }

    /// The live `T`s whose parent is `parent`, in creation order.
    pub fn children<T: Resource>(&self, parent: Uuid) -> ApiResult<Vec<T>> {
        let parent = parent.to_string();
        self.docs
            .iter()
            .filter(|d| d.kind == T::KIND && d.parent_id.as_deref() == Some(&parent))
            .map(|d| Ok(d.decode()?))
            .collect()
    }

    /// The relations of `id` (what [`klb_store::Store::relations`] gives for it).
    pub fn relations(&self, id: Uuid) -> RelIndex {
        let id = id.to_string();
        RelIndex::new(
            self.docs
                .iter()
                .filter(|d| d.parent_id.as_deref() == Some(&id) || d.ref_id.as_deref() == Some(&id))
                .map(|d| Relation {
                    kind: d.kind,
                    id: d.id.clone(),
                    parent_id: d.parent_id.clone(),
                    ref_id: d.ref_id.clone(),
                    position: d.position,
                })
                .collect(),
        )
    }
}

fn versioned<T: Resource>(d: &Document) -> ApiResult<Versioned<T>> {
    Ok(Versioned {
        value: d.decode()?,
        version: d.version,
    })
}

/// What a child change reads first, once, outside any transaction: the graph of `T` `id`, in
/// which `T` (404/403 as for GET) and its load balancer, which must be ACTIVE (409
/// `ImmutableObject`): the checks of [`begin_write`] in its order, without holding the writer.
/// The LB's version is the lock, taken by the [`ChildWrite`] that ends the change.
pub async fn read_for_child<T: Resource>(
    state: &AppState,
    ctx: &RequestContext,
    id: &str,
    action: Action,
) -> ApiResult<(Versioned<T>, Versioned<LoadBalancer>, LbGraph)> {
    let uuid = path_id(T::KIND, id)?;
    let graph = LbGraph::of::<T>(state, uuid).await?;
    let obj: Versioned<T> = graph
        .get(uuid)?
        .ok_or_else(|| ApiError::not_found(T::KIND, id))?;
    ctx.authorize(action, obj.value.project_id())
        .map_err(|d| denied(T::KIND, id, d))?;
    let lb_id = obj
        .value
        .loadbalancer_id()
        .ok_or_else(|| ApiError::not_found(T::KIND, id))?;
    let lb: Versioned<LoadBalancer> = graph
        .get(lb_id)?
        .ok_or_else(|| ApiError::not_found(Kind::LoadBalancer, &lb_id.to_string()))?;
    status::check_lb_mutable(lb.value.id, lb.value.provisioning_status)?;
    Ok((obj, lb, graph))
}

/// [`read_for_child`] when the path names the load balancer itself.
pub async fn read_lb_for_child(
    state: &AppState,
    ctx: &RequestContext,
    id: &str,
    action: Action,
) -> ApiResult<(Versioned<LoadBalancer>, LbGraph)> {
    let (lb, _, graph) = read_for_child::<LoadBalancer>(state, ctx, id, action).await?;
    Ok((lb, graph))
}

/// The answer of [`ChildWrite::commit`].
#[must_use]
pub enum Commit {
    /// Written.
    Done,
    /// Nothing written: the load balancer (or a listener the change locks) changed since it
    /// was read. Read again and retry.
    Raced,
}

/// A quota to re-check exactly when a create is written (see [`check_quota_before_write`]).
pub struct QuotaGuard {
    project_id: String,
    kind: Kind,
    adding: i64,
    limit: i64,
}

/// The writes of one child change, applied together as one [`WriteBatch`] (on SQLite one
/// statement, grouped with concurrent callers'). Its first write is the load balancer going
/// `PENDING_UPDATE` at the version read: that versioned update is the lock. Every change of an
/// LB's graph writes the LB (it goes `PENDING_UPDATE`, the job's settle brings it back), so the
/// batch fails unless the graph is still the one the change read and checked. That is why
/// the reads, the checks and the certificate fetches before it need no transaction and never
/// hold SQLite's single writer: the write is the only moment the change takes it.
pub struct ChildWrite {
    batch: WriteBatch,
    stamp: DateTime<Utc>,
    quota: Option<QuotaGuard>,
}

impl ChildWrite {
    /// Starts the writes of a child change of `lb` (read at `lb.version`): the LB goes
    /// `PENDING_UPDATE` with `updated_at` (in Octavia every write of a row sets it).
    pub fn lock(lb: &mut Versioned<LoadBalancer>) -> ApiResult<ChildWrite> {
        let stamp = now();
        lb.value.provisioning_status = ProvisioningStatus::PendingUpdate;
        lb.value.updated_at = Some(stamp);
        let mut w = ChildWrite {
            batch: WriteBatch::new(),
            stamp,
            quota: None,
        };
        w.update_status(&lb.value, lb.version)?;
        Ok(w)
    }

    /// Also locks the listeners whose traffic the change affects: ACTIVE ones go
    /// `PENDING_UPDATE` (the rule of [`mark_pending`]).
    pub fn lock_listeners(&mut self, listeners: Vec<Versioned<Listener>>) -> ApiResult<()> {
        for mut l in listeners {
            if l.value.provisioning_status == ProvisioningStatus::Active {
                l.value.provisioning_status = ProvisioningStatus::PendingUpdate;
                l.value.updated_at = Some(self.stamp);
                self.update_status(&l.value, l.version)?;
            }
        }
        Ok(())
    }

    /// The time of the change (the `updated_at` the locked objects get).
    pub fn stamp(&self) -> DateTime<Utc> {
        self.stamp
    }

    /// Inserts a new object.
    pub fn insert<T: Resource>(&mut self, value: &T) -> ApiResult<()> {
        self.batch.insert(Document::from_resource(value)?);
        Ok(())
    }

    /// Replaces an object read at `version` (any column may change).
    pub fn update<T: Resource>(&mut self, value: &T, version: i64) -> ApiResult<()> {
        let mut doc = Document::from_resource(value)?;
        doc.version = version;
        self.batch.update(doc);
        Ok(())
    }

    /// Replaces an object read at `version` whose indexed columns other than the provisioning
    /// status are unchanged (cheaper: their indexes are left alone).
    fn update_status<T: Resource>(&mut self, value: &T, version: i64) -> ApiResult<()> {
        let mut doc = Document::from_resource(value)?;
        doc.version = version;
        self.batch.update_body(doc);
        Ok(())
    }

    /// Enqueues the job of the change.
    pub fn enqueue(&mut self, lb: Uuid, op: JobOp, kind: Kind, target: Uuid) {
        self.batch.enqueue(job(lb, op, kind, target));
    }

    /// Re-checks `guard` (if any) exactly when the change is written.
    pub fn guard_quota(&mut self, guard: Option<QuotaGuard>) {
        self.quota = guard;
    }

    /// Writes everything, or nothing when the LB or a locked listener changed since it was
    /// read ([`Commit::Raced`]). Without a quota to guard this is one write batch; with one,
    /// the count runs in the same write transaction as the batch, so concurrent creates in
    /// the project cannot pass the limit together.
    pub async fn commit(self, state: &AppState) -> ApiResult<Commit> {
        let written = match self.quota {
            None => state.store.apply(self.batch).await,
            Some(q) => {
                let mut tx = state.store.begin().await?;
                if count_kind(&mut tx, &q.project_id, q.kind).await? + q.adding > q.limit {
                    return Err(quota_met(q.kind));
                }
                match tx.apply(self.batch).await {
                    Ok(()) => tx.commit().await,
                    Err(e) => Err(e),
                }
            }
        };
        match written {
            Ok(()) => Ok(Commit::Done),
            Err(StoreError::VersionConflict { .. }) => Ok(Commit::Raced),
            Err(e) => Err(e.into()),
        }
    }
}

/// The 409 of a child change that lost [`CHILD_WRITE_ATTEMPTS`] races for its load balancer
/// (every attempt found it changed by another writer at the moment of writing).
pub fn lb_busy(lb_id: Uuid) -> ApiError {
    status::Conflict::Immutable {
        kind: Kind::LoadBalancer,
        id: lb_id,
    }
    .into()
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
    Ok(listeners_through(&rels, pool_id))
}

/// The listeners whose traffic goes through pool `pool_id`, from its relations.
pub fn listeners_through(rels: &RelIndex, pool_id: Uuid) -> Vec<Uuid> {
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
    ids
}

/// Listeners of `graph` by id with their versions, for [`ChildWrite::lock_listeners`];
/// absent ones are skipped.
pub fn graph_listeners(graph: &LbGraph, ids: &[Uuid]) -> ApiResult<Vec<Versioned<Listener>>> {
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(l) = graph.get::<Listener>(*id)? {
            out.push(l);
        }
    }
    Ok(out)
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

/// [`check_quota`] for a create written by a [`ChildWrite`]: the same 403 at the same point
/// (counted outside any transaction), and the guard with which [`ChildWrite::commit`] counts
/// again inside the write. `None` when the project has no limit for `kind`.
pub async fn check_quota_before_write(
    state: &AppState,
    project_id: &str,
    kind: Kind,
    adding: i64,
) -> ApiResult<Option<QuotaGuard>> {
    if adding <= 0 {
        return Ok(None);
    }
    let Some(limit) = state
        .quotas
        .limit(&state.store, project_id, kind)
        .await?
        .filter(|l| *l >= 0)
    else {
        return Ok(None);
    };
    if state.store.count(&quota_query(project_id, kind)).await? + adding > limit {
        return Err(quota_met(kind));
    }
    Ok(Some(QuotaGuard {
        project_id: project_id.to_owned(),
        kind,
        adding,
        limit,
    }))
}

fn quota_query(project_id: &str, kind: Kind) -> klb_store::ListQuery {
    klb_store::ListQuery {
        kind: Some(kind.into()),
        project_id: Some(project_id.to_owned()),
        ..Default::default()
    }
}

async fn count_kind(tx: &mut WriteTx, project_id: &str, kind: Kind) -> ApiResult<i64> {
    Ok(tx.count(&quota_query(project_id, kind)).await?)
}

fn quota_met(kind: Kind) -> ApiError {
    ApiError::ForbiddenWith(format!(
        "Quota has been met for resources: {}",
        kind.display_name()
    ))
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
    if count_kind(tx, project_id, kind).await? + adding > limit {
        return Err(quota_met(kind));
    }
    Ok(())
}
