//! `/v2/loadbalancers` (octavia-api.md §1).

use std::net::IpAddr;
use std::sync::LazyLock;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use klb_model::stats::Counters;
use klb_model::*;
use klb_store::{Document, DocumentKind, JobOp, ListQuery, WriteBatch};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::common::*;
use super::fields::{Attr, Table, common_attr, read};
use crate::AppState;
use crate::body::{Field, JsonBody, Obj, required};
use crate::context::{Action, Op, RequestContext, Resource as R};
use crate::error::{ApiError, ApiResult};
use crate::list::{self, Column, ListParams, Listing, RelIndex};
use crate::provider::VipRequest;

/// The load balancer's attributes: how each is read (with its bounds), stored, updated and
/// rendered (see [`super::fields`]). The VIP, provider, flavor, availability zone and graph
/// attributes are read by `create` itself: they are checked against the network and the
/// store before anything is reserved.
static TABLE: LazyLock<Table<LoadBalancer>> = LazyLock::new(|| {
    type A = Attr<LoadBalancer>;
    Table::new(vec![
        A::key("project_id"),
        A::key("tenant_id"),
        common_attr!(LoadBalancer, name),
        common_attr!(LoadBalancer, description),
        common_attr!(LoadBalancer, admin_state_up),
        A::key("vip_address").rendered(|lb| opt(&lb.vip_address)),
        A::key("vip_port_id").rendered(|lb| opt(&lb.vip_port_id)),
        A::key("vip_subnet_id").rendered(|lb| opt(&lb.vip_subnet_id)),
        A::key("vip_network_id").rendered(|lb| opt(&lb.vip_network_id)),
        A::new(
            "vip_qos_policy_id",
            read::uuid(),
            |lb, v, _| lb.vip_qos_policy_id = v,
            |lb| opt(&lb.vip_qos_policy_id),
        )
        .updatable(),
        A::new(
            "vip_sg_ids",
            read::uuids(),
            |lb, v, _| lb.vip_sg_ids = v.unwrap_or_default(),
            |lb| json!(lb.vip_sg_ids),
        )
        .updatable(),
        A::shown("vip_vnic_type", |lb| json!(lb.vip_vnic_type)),
        A::key("additional_vips").rendered(|lb| {
            Value::Array(
                lb.additional_vips
                    .iter()
                    .map(|v| json!({"subnet_id": v.subnet_id, "ip_address": opt(&v.ip_address), "port_id": opt(&v.port_id)}))
                    .collect(),
            )
        }),
        // Filled by `relate` (or with the single-create graph).
        A::key("listeners").rendered(|_| json!([])),
        A::key("pools").rendered(|_| json!([])),
        A::key("provider").rendered(|lb| json!(lb.provider)),
        A::key("flavor_id").rendered(|lb| opt(&lb.flavor_id)),
        A::key("availability_zone").rendered(|lb| json!(lb.availability_zone)),
        // Rendered by `head`.
        common_attr!(LoadBalancer, tags),
    ])
});

/// Renders a load balancer without relation lists.
pub fn render(lb: &LoadBalancer) -> Map<String, Value> {
    let mut m = head(
        lb.id,
        &lb.project_id,
        lb.provisioning_status,
        lb.operating_status,
        lb.created_at,
        lb.updated_at,
        &lb.tags,
    );
    TABLE.render(lb, &mut m);
    m
}

fn render_doc(d: &Document) -> ApiResult<Map<String, Value>> {
    Ok(render(&d.decode::<LoadBalancer>()?))
}

fn relate(m: &mut Map<String, Value>, rels: &RelIndex) {
    let id = m.get("id").and_then(Value::as_str).unwrap_or("").to_owned();
    m.insert("listeners".into(), rels.child_refs(&id, Kind::Listener));
    m.insert("pools".into(), rels.child_refs(&id, Kind::Pool));
}

async fn full(state: &AppState, lb: &LoadBalancer) -> ApiResult<Map<String, Value>> {
    let mut m = render(lb);
    let rels = RelIndex::load_children(state, &[lb.id.to_string()]).await?;
    relate(&mut m, &rels);
    Ok(m)
}

/// GET /v2/loadbalancers
pub async fn list(
    State(state): State<AppState>,
    ctx: RequestContext,
    q: QueryPairs,
    OrigPath(path): OrigPath,
) -> ApiResult<Response> {
    let params = ListParams::parse(&q.0)?;
    let project = scope_project(&ctx, R::LoadBalancer)?;
    list::respond(
        &state,
        &path,
        "loadbalancers",
        &params,
        listing(project),
        RENDERING,
    )
    .await
}

/// How the LB collection is listed for `project` (`None`: every project).
fn listing(project: Option<String>) -> Listing {
    Listing {
        base: ListQuery {
            kind: Some(Kind::LoadBalancer.into()),
            project_id: project,
            ..Default::default()
        },
        column_filters: &[
            ("project_id", Column::Project),
            ("id", Column::LoadBalancer),
        ],
        with_relations: true,
    }
}

/// How LBs are rendered on [`list::respond`]'s cached path: the relation lists are those
/// [`relate`] fills in.
const RENDERING: list::Rendering = list::Rendering {
    render: render_doc,
    relate,
    children: &[("listeners", Kind::Listener), ("pools", Kind::Pool)],
};

/// The project a list is limited to: `None` for admins (all projects), the caller's project
/// otherwise.
pub fn scope_project(ctx: &RequestContext, resource: R) -> ApiResult<Option<String>> {
    if ctx.is_admin
        && ctx
            .authorize(Action::new(resource, Op::GetAllGlobal), None)
            .is_ok()
    {
        return Ok(None);
    }
    let own = ctx.project_id.clone().ok_or(ApiError::Forbidden)?;
    ctx.authorize(Action::new(resource, Op::GetAll), Some(&own))
        .map_err(|_| ApiError::Forbidden)?;
    Ok(Some(own))
}

/// GET /v2/loadbalancers/{id}
pub async fn get_one(
    State(state): State<AppState>,
    ctx: RequestContext,
    Path(id): Path<String>,
    q: QueryPairs,
) -> ApiResult<Response> {
    // As `load`, but the body is decoded and rendered only when the render cache does not
    // hold this version of it; the policy check needs only the project column.
    let uuid = path_id(Kind::LoadBalancer, &id)?;
    let doc = state
        .store
        .get(Kind::LoadBalancer, &uuid.to_string())
        .await?
        .filter(|d| d.status() != Some(ProvisioningStatus::Deleted))
        .ok_or_else(|| ApiError::not_found(Kind::LoadBalancer, &id))?;
    ctx.authorize(
        Action::new(R::LoadBalancer, Op::GetOne),
        doc.project_id.as_deref(),
    )
    .map_err(|d| denied(Kind::LoadBalancer, &id, d))?;
    list::respond_one(&state, "loadbalancer", &doc, RENDERING, &q.fields()).await
}

/// POST /v2/loadbalancers
pub async fn create(
    State(state): State<AppState>,
    ctx: RequestContext,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    let obj = Obj::envelope(&body, "loadbalancer", "load_balancer", TABLE.create_keys())?;
    let project_id = project_for_create(&ctx, &obj)?;
    ctx.authorize(Action::new(R::LoadBalancer, Op::Post), Some(&project_id))
        .map_err(|_| ApiError::Forbidden)?;
    let request = VipRequest {
        address: obj.ip("vip_address")?.opt(),
        port_id: obj.uuid("vip_port_id")?.opt(),
        subnet_id: obj.uuid("vip_subnet_id")?.opt(),
        network_id: obj.uuid("vip_network_id")?.opt(),
    };
    if request.port_id.is_none() && request.subnet_id.is_none() && request.network_id.is_none() {
        return Err(ApiError::validation(
            "VIP must contain one of: vip_port_id, vip_network_id, vip_subnet_id.",
        ));
    }
    let provider = match obj.string("provider", 64)? {
        Field::Set(p) => {
            if !state.config.enabled_provider_drivers.contains(&p) {
                return Err(ApiError::BadRequest(format!(
                    "Provider '{}' is not enabled.",
                    validate::printable(&p)
                )));
            }
            p
        }
        _ => state.config.default_provider.clone(),
    };
    let flavor_id = obj.uuid("flavor_id")?.opt();
    if let Some(f) = flavor_id {
        let enabled = state
            .store
            .get(DocumentKind::Flavor, &f.to_string())
            .await?
            .and_then(|d| serde_json::from_str::<Value>(&d.body).ok())
            .map(|v| v.get("enabled").and_then(Value::as_bool).unwrap_or(true));
        if enabled != Some(true) {
            return Err(ApiError::validation(format!("Invalid flavor_id {f}.")));
        }
    }
    let availability_zone = text(&obj, "availability_zone")?.opt();
    if let Some(az) = &availability_zone {
        let enabled = state
            .store
            .get(DocumentKind::AvailabilityZone, az)
            .await?
            .and_then(|d| serde_json::from_str::<Value>(&d.body).ok())
            .map(|v| v.get("enabled").and_then(Value::as_bool).unwrap_or(true));
        if enabled != Some(true) {
            return Err(ApiError::validation(format!(
                "Invalid availability zone {}.",
                validate::printable(az)
            )));
        }
    }
    let mut additional_vips = Vec::new();
    if let Field::Set(items) = obj.objects("additional_vips")? {
        for item in items {
            item.only("additional_vips", &["subnet_id", "ip_address", "port_id"])?;
            let subnet_id = required("subnet_id", item.uuid("subnet_id")?)?;
            if additional_vips
                .iter()
                .any(|v: &AdditionalVip| v.subnet_id == subnet_id)
            {
                return Err(ApiError::validation(
                    "Duplicate VIP subnet(s) specified. Only one IP can be bound per subnet.",
                ));
            }
            additional_vips.push(AdditionalVip {
                subnet_id,
                ip_address: item.ip("ip_address")?.opt(),
                port_id: item.uuid("port_id")?.opt(),
            });
        }
    }
    let listeners = obj.objects("listeners")?.opt().unwrap_or_default();
    let pools = obj.objects("pools")?.opt().unwrap_or_default();
    let id = Uuid::new_v4();
    // Before the VIP is reserved, so a refusal leaves nothing behind in the cloud.
    check_additional_vips(&state, &project_id, request.address, &additional_vips).await?;
    let vip = state
        .network
        .allocate_vip(id, &project_id, &request)
        .await
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let same = |a: IpAddr| a.to_canonical() == vip.address.to_canonical();
    if additional_vips
        .iter()
        .any(|v| v.ip_address.is_some_and(same))
    {
        return Err(ApiError::validation(format!(
            "Additional VIP address {} is the VIP address.",
            vip.address
        )));
    }
    // The table sets name, description, admin_state_up, tags and the VIP QoS/security groups.
    let mut lb = LoadBalancer {
        id,
        project_id,
        name: None,
        description: None,
        admin_state_up: true,
        provisioning_status: ProvisioningStatus::PendingCreate,
        operating_status: OperatingStatus::Offline,
        created_at: now(),
        updated_at: None,
        tags: Vec::new(),
        vip_address: Some(vip.address),
        vip_port_id: Some(vip.port_id),
        vip_subnet_id: Some(vip.subnet_id),
        vip_network_id: Some(vip.network_id),
        vip_qos_policy_id: None,
        vip_sg_ids: Vec::new(),
        vip_vnic_type: "normal".to_owned(),
        additional_vips,
        provider,
        flavor_id,
        availability_zone,
    };
    TABLE.create(&obj, &mut lb, &state.config, None)?;
    let graph = super::graph::build(&state, &lb, &listeners, &pools)?;
    graph.check_certs(&state).await?;
    let mut tx = state.store.begin().await?;
    check_quota(&state, &mut tx, &lb.project_id, Kind::LoadBalancer, 1).await?;
    graph.check_quotas(&state, &mut tx, &lb.project_id).await?;
    tx.insert_resource(&lb).await?;
    graph.insert(&mut tx).await?;
    enqueue(&mut tx, lb.id, JobOp::Create, Kind::LoadBalancer, lb.id).await?;
    tx.commit().await?;
    let mut m = render(&lb);
    if !graph.is_empty() {
        m.insert("listeners".into(), Value::Array(graph.render_listeners()));
        m.insert("pools".into(), Value::Array(graph.render_pools()));
    }
    Ok(reply(StatusCode::CREATED, "loadbalancer", Value::Object(m)))
}

/// Issue 11 §6: an additional VIP's address ends up in every listener's `bind` lines, so it
/// must be on the subnet it names, not the VIP itself, and not a reserved address.
async fn check_additional_vips(
    state: &AppState,
    project_id: &str,
    vip: Option<IpAddr>,
    additional: &[AdditionalVip],
) -> ApiResult<()> {
    for v in additional {
        let Some(ip) = v.ip_address else { continue };
        if vip.is_some_and(|vip| ip.to_canonical() == vip.to_canonical()) {
            return Err(ApiError::validation(format!(
                "Additional VIP address {ip} is the VIP address."
            )));
        }
        validate::member_address(ip)
            .map_err(|e| ApiError::validation(format!("Additional VIP address {ip} {e}.")))?;
        let cidr = state
            .network
            .subnet_cidr(project_id, v.subnet_id)
            .await
            .map_err(|e| ApiError::BadRequest(e.to_string()))?;
        if let Some(cidr) = cidr
            && !cidr.contains(&ip.to_canonical())
        {
            return Err(ApiError::validation(format!(
                "Additional VIP address {ip} is not in subnet {} ({cidr}).",
                v.subnet_id
            )));
        }
    }
    Ok(())
}

/// PUT /v2/loadbalancers/{id}
pub async fn update(
    State(state): State<AppState>,
    ctx: RequestContext,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    let obj = Obj::envelope(&body, "loadbalancer", "load_balancer", TABLE.update_keys())?;
    TABLE.check_update(&obj)?;
    let first: LoadBalancer =
        load(&state, &ctx, &id, Action::new(R::LoadBalancer, Op::Put)).await?;
    let mut tx = state.store.begin().await?;
    let mut lb: LoadBalancer = tx
        .get_resource(first.id)
        .await?
        .ok_or_else(|| ApiError::not_found(Kind::LoadBalancer, &id))?;
    status::check_lb_updatable(lb.id, lb.provisioning_status)?;
    TABLE.update(&obj, &mut lb, &state.config, None)?;
    lb.provisioning_status = ProvisioningStatus::PendingUpdate;
    lb.updated_at = Some(now());
    tx.put_resource(&lb).await?;
    enqueue(&mut tx, lb.id, JobOp::Update, Kind::LoadBalancer, lb.id).await?;
    tx.commit().await?;
    let m = full(&state, &lb).await?;
    Ok(reply(StatusCode::OK, "loadbalancer", Value::Object(m)))
}

/// DELETE /v2/loadbalancers/{id}[?cascade=true]
pub async fn delete(
    State(state): State<AppState>,
    ctx: RequestContext,
    Path(id): Path<String>,
    q: QueryPairs,
) -> ApiResult<Response> {
    let cascade = q.get("cascade").is_some_and(|v| {
        matches!(
            v.to_ascii_lowercase().as_str(),
            "true" | "1" | "yes" | "on" | "y" | "t"
        )
    });
    // As `load`, keeping the stored version for the optimistic write below.
    let uuid = path_id(Kind::LoadBalancer, &id)?;
    let read = state
        .store
        .get(Kind::LoadBalancer, &uuid.to_string())
        .await?
        .filter(|d| d.status() != Some(ProvisioningStatus::Deleted))
        .ok_or_else(|| ApiError::not_found(Kind::LoadBalancer, &id))?;
    let first: LoadBalancer = read.decode()?;
    ctx.authorize(
        Action::new(R::LoadBalancer, Op::Delete),
        Some(&first.project_id),
    )
    .map_err(|d| denied(Kind::LoadBalancer, &id, d))?;
    // A cascade delete of an LB that is still the version read above needs no transaction:
    // the versioned update and its job are one write batch (one statement on SQLite), and the
    // version check is the lock (it fails if anyone changed the LB in between, and then the
    // locked path below decides).
    if cascade && status::check_lb_deletable(first.id, first.provisioning_status).is_ok() {
        let mut lb = first.clone();
        lb.provisioning_status = ProvisioningStatus::PendingDelete;
        lb.updated_at = Some(now());
        let mut doc = Document::from_resource(&lb)?;
        doc.version = read.version;
        let mut batch = WriteBatch::new();
        batch.update_body(doc);
        batch.enqueue(job(lb.id, JobOp::Delete, Kind::LoadBalancer, lb.id));
        match state.store.apply(batch).await {
            Ok(()) => return Ok(no_content()),
            Err(klb_store::StoreError::VersionConflict { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let mut tx = state.store.begin().await?;
    let mut lb: LoadBalancer = tx
        .get_resource(first.id)
        .await?
        .ok_or_else(|| ApiError::not_found(Kind::LoadBalancer, &id))?;
    status::check_lb_deletable(lb.id, lb.provisioning_status)?;
    if !cascade {
        let rels = RelIndex::new(tx.relations(&[lb.id.to_string()]).await?);
        if !rels.children(&id, Kind::Listener).is_empty()
            || !rels.children(&id, Kind::Pool).is_empty()
        {
            return Err(ApiError::validation(format!(
                "Cannot delete Load Balancer {id} - it has children"
            )));
        }
    }
    lb.provisioning_status = ProvisioningStatus::PendingDelete;
    lb.updated_at = Some(now());
    tx.put_resource(&lb).await?;
    enqueue(&mut tx, lb.id, JobOp::Delete, Kind::LoadBalancer, lb.id).await?;
    tx.commit().await?;
    Ok(no_content())
}

/// PUT /v2/loadbalancers/{id}/failover
pub async fn failover(
    State(state): State<AppState>,
    ctx: RequestContext,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let first: LoadBalancer = load(
        &state,
        &ctx,
        &id,
        Action::new(R::LoadBalancer, Op::Failover),
    )
    .await?;
    let mut tx = state.store.begin().await?;
    let mut lb: LoadBalancer = tx
        .get_resource(first.id)
        .await?
        .ok_or_else(|| ApiError::not_found(Kind::LoadBalancer, &id))?;
    status::check_lb_deletable(lb.id, lb.provisioning_status)?;
    lb.provisioning_status = ProvisioningStatus::PendingUpdate;
    lb.updated_at = Some(now());
    tx.put_resource(&lb).await?;
    enqueue(&mut tx, lb.id, JobOp::Failover, Kind::LoadBalancer, lb.id).await?;
    tx.commit().await?;
    Ok(accepted())
}

/// Octavia's stats object: the counters Octavia has (`requests` is klb's own).
fn stats_json(c: &Counters) -> Value {
    json!({"bytes_in": c.bytes_in, "bytes_out": c.bytes_out,
        "active_connections": c.active_connections, "total_connections": c.total_connections,
        "request_errors": c.request_errors})
}

/// The statistics the health manager stored from the LB VMs' heartbeats; all zeros when
/// nothing was reported (or the document does not decode).
pub async fn read_stats(state: &AppState, lb_id: &str) -> ApiResult<LbStats> {
    Ok(state
        .store
        .get(klb_store::STATS_KIND, lb_id)
        .await?
        .and_then(|doc| serde_json::from_str(&doc.body).ok())
        .unwrap_or_default())
}

/// The counters the health manager stored (summed over the VMs), for the whole LB or one
/// listener; zeros when nothing was reported (the noop provider measures nothing).
pub async fn stored_stats(
    state: &AppState,
    lb_id: &str,
    listener_id: Option<&str>,
) -> ApiResult<Value> {
    let stats = read_stats(state, lb_id).await?;
    let counters = match listener_id {
        Some(id) => stats.listeners.get(id).copied().unwrap_or_default(),
        None => stats.load_balancer,
    };
    Ok(stats_json(&counters))
}

/// GET /v2/loadbalancers/{id}/stats
pub async fn stats(
    State(state): State<AppState>,
    ctx: RequestContext,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let lb: LoadBalancer = load(
        &state,
        &ctx,
        &id,
        Action::new(R::LoadBalancer, Op::GetStats),
    )
    .await?;
    let stats = stored_stats(&state, &lb.id.to_string(), None).await?;
    Ok(reply(StatusCode::OK, "stats", stats))
}

/// GET /v2/loadbalancers/{id}/status (and /statuses)
pub async fn status_tree(
    State(state): State<AppState>,
    ctx: RequestContext,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let lb: LoadBalancer = load(
        &state,
        &ctx,
        &id,
        Action::new(R::LoadBalancer, Op::GetStatus),
    )
    .await?;
    let docs = state.store.graph(&lb.id.to_string()).await?;
    let mut listeners = Vec::new();
    let mut pools = std::collections::HashMap::new();
    let mut members: std::collections::HashMap<Uuid, Vec<Member>> = Default::default();
    let mut monitors = std::collections::HashMap::new();
    let mut policies: Vec<L7Policy> = Vec::new();
    for d in &docs {
        match d.kind.resource() {
            Some(Kind::Listener) => listeners.push(d.decode::<Listener>()?),
            Some(Kind::Pool) => {
                let p: Pool = d.decode()?;
                pools.insert(p.id, p);
            }
            Some(Kind::Member) => {
                let m: Member = d.decode()?;
                members.entry(m.pool_id).or_default().push(m);
            }
            Some(Kind::HealthMonitor) => {
                let h: HealthMonitor = d.decode()?;
                monitors.insert(h.pool_id, h);
            }
            Some(Kind::L7Policy) => policies.push(d.decode()?),
            _ => {}
        }
    }
    let name = |n: &Option<String>| Value::String(n.clone().unwrap_or_default());
    let pool_status = |p: &Pool| {
        let mut o = json!({"id": p.id, "name": name(&p.name), "provisioning_status": p.provisioning_status,
            "operating_status": p.operating_status,
            "members": members.get(&p.id).map(|ms| ms.iter().map(|m| json!({"id": m.id, "name": name(&m.name),
                "provisioning_status": m.provisioning_status, "operating_status": m.operating_status,
                "address": m.address.to_string(), "protocol_port": m.protocol_port})).collect::<Vec<_>>()).unwrap_or_default()});
        if let Some(h) = monitors.get(&p.id) {
            o["health_monitor"] = json!({"id": h.id, "name": name(&h.name), "type": h.kind,
                "provisioning_status": h.provisioning_status, "operating_status": h.operating_status});
        }
        o
    };
    let listeners: Vec<Value> = listeners
        .iter()
        .map(|l| {
            let mut ids: Vec<Uuid> = l.default_pool_id.into_iter().collect();
            for p in policies.iter().filter(|p| p.listener_id == l.id) {
                if let Some(pid) = p.redirect_pool_id
                    && !ids.contains(&pid)
                {
                    ids.push(pid);
                }
            }
            let ps: Vec<Value> = ids
                .iter()
                .filter_map(|pid| pools.get(pid))
                .map(pool_status)
                .collect();
            json!({"id": l.id, "name": name(&l.name), "provisioning_status": l.provisioning_status,
                "operating_status": l.operating_status, "pools": ps})
        })
        .collect();
    let tree = json!({"loadbalancer": {"id": lb.id, "name": name(&lb.name), "provisioning_status": lb.provisioning_status,
        "operating_status": lb.operating_status, "listeners": listeners}});
    Ok(reply(StatusCode::OK, "statuses", tree))
}

#[cfg(test)]
mod tests {
    //! The cached list path against the plain one, and cache invalidation.

    use std::sync::Arc;
    use std::time::Duration;

    use axum::body::Body;
    use axum::http::Request;
    use klb_store::{Outcome, Store};
    use klb_test_support::db::TestDb;
    use tower::ServiceExt;

    use super::*;
    use crate::NoAuth;

    const SUBNET: &str = "8a3a5b41-4f0d-4a1b-9f2f-3a6c4e5d6f70";

    struct App {
        state: AppState,
        router: axum::Router,
        /// Last, so the store's pools close before the database goes.
        _db: TestDb,
    }

    /// The router on a temp SQLite store, or a fresh PostgreSQL schema when
    /// `KLB_TEST_POSTGRES_URL` is set.
    async fn app() -> App {
        let db = TestDb::new().await;
        let store = Store::open(db.url()).await.unwrap();
        let state = AppState::new(
            store,
            Arc::new(NoAuth {
                default_project_id: Some("admin-project".into()),
            }),
        );
        App {
            router: crate::router(state.clone()),
            state,
            _db: db,
        }
    }

    impl App {
        /// Status and raw body; `project` None = admin.
        async fn call(
            &self,
            method: &str,
            path: &str,
            body: Option<Value>,
            project: Option<&str>,
        ) -> (u16, Vec<u8>) {
            let mut req = Request::builder().method(method).uri(path);
            match project {
                Some(p) => req = req.header("x-project-id", p),
                None => req = req.header("x-roles", "admin"),
            }
            let req = req
                .header("content-type", "application/json")
                .body(body.map(|b| Body::from(b.to_string())).unwrap_or_default())
                .unwrap();
            let resp = self.router.clone().oneshot(req).await.unwrap();
            let status = resp.status().as_u16();
            let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
                .await
                .unwrap();
            (status, bytes.to_vec())
        }

        async fn json(
            &self,
            method: &str,
            path: &str,
            body: Option<Value>,
            project: &str,
        ) -> Value {
            let (status, bytes) = self.call(method, path, body, Some(project)).await;
            assert!(
                status < 300,
                "{method} {path}: {status} {}",
                String::from_utf8_lossy(&bytes)
            );
            serde_json::from_slice(&bytes).unwrap_or(Value::Null)
        }

        async fn create_lb(&self, project: &str, name: &str, tags: &[&str]) -> String {
            let b = self
                .json(
                    "POST",
                    "/v2/lbaas/loadbalancers",
                    Some(json!({"loadbalancer": {"vip_subnet_id": SUBNET, "name": name, "tags": tags}})),
                    project,
                )
                .await;
            b["loadbalancer"]["id"].as_str().unwrap().to_owned()
        }

        async fn settle(&self) {
            let store = &self.state.store;
            while let Some(job) = store
                .claim_job("test", Duration::from_secs(30))
                .await
                .unwrap()
            {
                store.settle_job(&job, Outcome::Success).await.unwrap();
            }
        }

        /// The reply of the uncached path (`list::run` + `reply_list`) for the same query.
        async fn plain(&self, query: &str, project: Option<&str>) -> Vec<u8> {
            let pairs: Vec<(String, String)> =
                axum::extract::Query::try_from_uri(&format!("/x{query}").parse().unwrap())
                    .map(|q: axum::extract::Query<Vec<(String, String)>>| q.0)
                    .unwrap();
            let params = ListParams::parse(&pairs).unwrap();
            let path = "http://localhost/v2/lbaas/loadbalancers";
            let listing = listing(project.map(str::to_owned));
            let (items, links) = list::run(&self.state, path, &params, listing, render_doc, relate)
                .await
                .unwrap();
            let resp = reply_list("loadbalancers", items, links);
            axum::body::to_bytes(resp.into_body(), usize::MAX)
                .await
                .unwrap()
                .to_vec()
        }

        async fn names(&self, project: &str) -> Vec<(String, String)> {
            let b = self
                .json("GET", "/v2/lbaas/loadbalancers", None, project)
                .await;
            b["loadbalancers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| {
                    (
                        l["name"].as_str().unwrap_or("").to_owned(),
                        l["provisioning_status"].as_str().unwrap().to_owned(),
                    )
                })
                .collect()
        }
    }

    /// Every list shape answers the same bytes from the cache (cold and warm) as the plain path.
    #[tokio::test]
    async fn cached_list_is_byte_identical_to_the_plain_one() {
        let app = app().await;
        let mut ids = Vec::new();
        for i in 0..5 {
            let tags: &[&str] = if i % 2 == 0 { &["red"] } else { &[] };
            ids.push(app.create_lb("p1", &format!("lb{i}"), tags).await);
        }
        app.create_lb("p2", "other", &[]).await;
        app.settle().await;
        // Children: a listener and a pool on lb1 fill its relation lists.
        let lb1 = ids[1].clone();
        app.json(
            "POST",
            "/v2/lbaas/listeners",
            Some(json!({"listener": {"loadbalancer_id": lb1, "protocol": "HTTP", "protocol_port": 80}})),
            "p1",
        )
        .await;
        app.settle().await;
        app.json(
            "POST",
            "/v2/lbaas/pools",
            Some(json!({"pool": {"loadbalancer_id": lb1, "protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN"}})),
            "p1",
        )
        .await;
        app.settle().await;

        let queries = [
            String::new(),
            "?limit=2".into(),
            format!("?limit=2&marker={}", ids[1]),
            format!("?limit=2&marker={}&page_reverse=True", ids[3]),
            "?fields=id,name,listeners,pools".into(),
            "?fields=name".into(),
            format!("?id={}", ids[2]),
            "?project_id=p2".into(),
            "?tags=red".into(),
            "?sort=name:desc&limit=3".into(),
            "?name=lb3".into(),
        ];
        for pass in ["cold", "warm"] {
            if pass == "cold" {
                assert_eq!(app.state.store.render_cache().usage().await.0, 0);
            }
            for (project, scope) in [(Some("p1"), Some("p1")), (None, None)] {
                for q in &queries {
                    let (status, bytes) = app
                        .call("GET", &format!("/v2/lbaas/loadbalancers{q}"), None, project)
                        .await;
                    assert_eq!(status, 200, "{q}");
                    let plain = app.plain(q, scope).await;
                    assert_eq!(
                        String::from_utf8_lossy(&bytes),
                        String::from_utf8_lossy(&plain),
                        "{pass} {project:?} {q}"
                    );
                }
            }
        }
        // Show answers from the same cache: same bytes as rendering the decoded LB.
        for id in &ids {
            for q in ["", "?fields=id,listeners", "?fields=name&fields=pools"] {
                let (status, bytes) = app
                    .call(
                        "GET",
                        &format!("/v2/lbaas/loadbalancers/{id}{q}"),
                        None,
                        Some("p1"),
                    )
                    .await;
                assert_eq!(status, 200);
                let lb: LoadBalancer = app
                    .state
                    .store
                    .get_resource(id.parse().unwrap())
                    .await
                    .unwrap()
                    .unwrap();
                let pairs = QueryPairs(
                    axum::extract::Query::<Vec<(String, String)>>::try_from_uri(
                        &format!("/x{q}").parse().unwrap(),
                    )
                    .unwrap()
                    .0,
                );
                let m = full(&app.state, &lb).await.unwrap();
                let plain = reply(
                    StatusCode::OK,
                    "loadbalancer",
                    list::select_fields(m, &pairs.fields()),
                );
                let plain = axum::body::to_bytes(plain.into_body(), usize::MAX)
                    .await
                    .unwrap();
                assert_eq!(
                    String::from_utf8_lossy(&bytes),
                    String::from_utf8_lossy(&plain),
                    "{id}{q}"
                );
            }
            // Another project never sees it.
            let (status, bytes) = app
                .call(
                    "GET",
                    &format!("/v2/lbaas/loadbalancers/{id}"),
                    None,
                    Some("p2"),
                )
                .await;
            assert_eq!(status, 404, "{}", String::from_utf8_lossy(&bytes));
        }

        // The relation lists are there, and a project never sees another's LBs.
        let b = app
            .json(
                "GET",
                "/v2/lbaas/loadbalancers?fields=name,listeners,pools",
                None,
                "p1",
            )
            .await;
        let lbs = b["loadbalancers"].as_array().unwrap();
        assert_eq!(lbs.len(), 5);
        assert_eq!(lbs[1]["listeners"].as_array().unwrap().len(), 1);
        assert_eq!(lbs[1]["pools"].as_array().unwrap().len(), 1);
        assert!(lbs.iter().all(|l| l["name"] != "other"));
        let b = app
            .json("GET", "/v2/lbaas/loadbalancers?limit=2", None, "p1")
            .await;
        assert_eq!(b["loadbalancers_links"][0]["rel"], "next");
        assert_eq!(app.state.store.render_cache().usage().await.0, 6);
    }

    /// A cached rendering is never served once the LB changed: update, status settle, delete.
    #[tokio::test]
    async fn cached_list_is_invalidated_by_updates() {
        let app = app().await;
        let id = app.create_lb("p1", "one", &[]).await;
        app.settle().await;
        assert_eq!(app.names("p1").await, [("one".into(), "ACTIVE".into())]);
        assert_eq!(app.state.store.render_cache().usage().await.0, 1);

        app.json(
            "PUT",
            &format!("/v2/lbaas/loadbalancers/{id}"),
            Some(json!({"loadbalancer": {"name": "two"}})),
            "p1",
        )
        .await;
        assert_eq!(
            app.names("p1").await,
            [("two".into(), "PENDING_UPDATE".into())]
        );
        let show = app
            .json("GET", &format!("/v2/lbaas/loadbalancers/{id}"), None, "p1")
            .await;
        assert_eq!(show["loadbalancer"]["name"], "two");
        app.settle().await;
        assert_eq!(app.names("p1").await, [("two".into(), "ACTIVE".into())]);

        // A write straight through the store (as the health manager or another node does)
        // bumps the version too.
        let mut tx = app.state.store.begin().await.unwrap();
        let mut lb: LoadBalancer = tx.get_resource(id.parse().unwrap()).await.unwrap().unwrap();
        lb.name = Some("three".into());
        tx.put_resource(&lb).await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(app.names("p1").await, [("three".into(), "ACTIVE".into())]);
        let show = app
            .json("GET", &format!("/v2/lbaas/loadbalancers/{id}"), None, "p1")
            .await;
        assert_eq!(show["loadbalancer"]["name"], "three");

        app.call(
            "DELETE",
            &format!("/v2/lbaas/loadbalancers/{id}"),
            None,
            Some("p1"),
        )
        .await;
        assert_eq!(
            app.names("p1").await,
            [("three".into(), "PENDING_DELETE".into())]
        );
        app.settle().await;
        assert!(app.names("p1").await.is_empty());
        let (status, _) = app
            .call(
                "GET",
                &format!("/v2/lbaas/loadbalancers/{id}"),
                None,
                Some("p1"),
            )
            .await;
        assert_eq!(status, 404);
    }
}
