//! `/v2/pools` (octavia-api.md §3).

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
use crate::provider::CertUsage;

/// The pool's attributes: how each is read (with its bounds), stored, updated and rendered
/// (see [`super::fields`]).
static TABLE: LazyLock<Table<Pool>> = LazyLock::new(|| {
    type A = Attr<Pool>;
    let container_ref = || read::checked(validate::MAX_STR, validate::container_ref);
    Table::new(vec![
        A::key("listener_id"),
        A::key("loadbalancer_id"),
        A::key("project_id"),
        A::key("tenant_id"),
        common_attr!(Pool, name),
        common_attr!(Pool, description),
        common_attr!(Pool, admin_state_up),
        A::new(
            "protocol",
            read::one_of(PoolProtocol::ALL),
            |p, v, _| p.protocol = v.unwrap_or(p.protocol),
            |p| json!(p.protocol.as_str()),
        )
        .required(),
        // PUT ignores a null algorithm.
        A::new(
            "lb_algorithm",
            read::one_of(LbAlgorithm::ALL),
            |p, v, _| p.lb_algorithm = v.unwrap_or(p.lb_algorithm),
            |p| json!(p.lb_algorithm.as_str()),
        )
        .required()
        .updatable(),
        A::new(
            "session_persistence",
            session_persistence(),
            |p, v, _| p.session_persistence = v,
            |p| match &p.session_persistence {
                Some(sp) => json!({"type": sp.kind.as_str(), "cookie_name": sp.cookie_name,
                    "persistence_timeout": sp.persistence_timeout,
                    "persistence_granularity": sp.persistence_granularity}),
                None => Value::Null,
            },
        )
        .updatable(),
        A::shown("loadbalancers", |p| json!([{"id": p.loadbalancer_id}])),
        // Filled by `relate`.
        A::shown("listeners", |_| json!([])),
        A::shown("members", |_| json!([])),
        A::shown("healthmonitor_id", |_| Value::Null),
        A::new(
            "tls_enabled",
            read::boolean(),
            |p, v, _| p.tls_enabled = v.unwrap_or(false),
            |p| json!(p.tls_enabled),
        )
        .updatable(),
        A::new(
            "tls_container_ref",
            container_ref(),
            |p, v, _| p.tls_container_ref = v,
            |p| json!(p.tls_container_ref),
        )
        .updatable(),
        A::new(
            "ca_tls_container_ref",
            container_ref(),
            |p, v, _| p.ca_tls_container_ref = v,
            |p| json!(p.ca_tls_container_ref),
        )
        .updatable(),
        A::new(
            "crl_container_ref",
            container_ref(),
            |p, v, _| p.crl_container_ref = v,
            |p| json!(p.crl_container_ref),
        )
        .updatable(),
        // TLS defaults for `tls_enabled` pools: `apply_tls_defaults`.
        A::new(
            "tls_ciphers",
            read::checked(validate::MAX_CIPHERS, validate::tls_ciphers),
            |p, v, _| p.tls_ciphers = v,
            |p| json!(p.tls_ciphers),
        )
        .updatable(),
        A::new(
            "tls_versions",
            read::list_of(TlsVersion::ALL),
            |p, v, _| p.tls_versions = v,
            |p| {
                json!(
                    p.tls_versions
                        .as_ref()
                        .map(|v| v.iter().map(|x| x.as_str()).collect::<Vec<_>>())
                )
            },
        )
        .updatable(),
        A::new(
            "alpn_protocols",
            read::list_of(AlpnProtocol::ALL),
            |p, v, _| p.alpn_protocols = v,
            |p| {
                json!(
                    p.alpn_protocols
                        .as_ref()
                        .map(|v| v.iter().map(|x| x.as_str()).collect::<Vec<_>>())
                )
            },
        )
        .updatable(),
        // Rendered by `head`.
        common_attr!(Pool, tags),
    ])
});

/// Attributes accepted on POST.
pub fn post_keys() -> &'static [&'static str] {
    TABLE.create_keys()
}

/// Attributes a POST must give (absent or `null`: `Mandatory field missing.`).
pub fn required_keys() -> impl Iterator<Item = &'static str> {
    TABLE.required_keys()
}

/// Renders a pool without relation lists.
pub fn render(p: &Pool) -> Map<String, Value> {
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
    Ok(render(&d.decode::<Pool>()?))
}

/// Adds `listeners`, `members`, `healthmonitor_id`.
pub fn relate(m: &mut Map<String, Value>, rels: &RelIndex) {
    let id = m.get("id").and_then(Value::as_str).unwrap_or("").to_owned();
    let mut listeners: Vec<&str> = rels
        .referrers(&id, Kind::Listener)
        .iter()
        .map(|r| r.id.as_str())
        .collect();
    for p in rels.referrers(&id, Kind::L7Policy) {
        if let Some(l) = p.parent_id.as_deref()
            && !listeners.contains(&l)
        {
            listeners.push(l);
        }
    }
    m.insert("listeners".into(), id_refs(listeners));
    m.insert("members".into(), rels.child_refs(&id, Kind::Member));
    m.insert(
        "healthmonitor_id".into(),
        rels.children(&id, Kind::HealthMonitor)
            .first()
            .map(|r| Value::String(r.id.clone()))
            .unwrap_or(Value::Null),
    );
}

/// `session_persistence`: an object with its own attributes.
fn session_persistence() -> Reader<SessionPersistence> {
    std::sync::Arc::new(|obj: &Obj<'_>, key: &str| session_persistence_of(obj, key))
}

fn session_persistence_of(obj: &Obj<'_>, key: &str) -> ApiResult<Field<SessionPersistence>> {
    Ok(match obj.object(key)? {
        Field::Set(sp) => {
            sp.only(
                key,
                &[
                    "type",
                    "cookie_name",
                    "persistence_timeout",
                    "persistence_granularity",
                ],
            )?;
            Field::Set(SessionPersistence {
                kind: required("type", sp.enumerated("type", SessionPersistenceType::ALL)?)?,
                cookie_name: sp
                    .checked("cookie_name", validate::MAX_STR, validate::cookie_name)?
                    .opt(),
                persistence_timeout: sp.int("persistence_timeout", 0, i64::from(i32::MAX))?.opt(),
                persistence_granularity: sp
                    .checked("persistence_granularity", 64, |s| {
                        s.parse::<std::net::IpAddr>()
                            .map(|_| ())
                            .map_err(|_| "Value should be IPv4 or IPv6 format".to_owned())
                    })?
                    .opt(),
            })
        }
        Field::Null => Field::Null,
        Field::Absent => Field::Absent,
    })
}

/// Reads a new pool (POST and single-create).
pub fn parse_new(state: &AppState, obj: &Obj<'_>, lb: &LoadBalancer) -> ApiResult<Pool> {
    // The table sets every attribute below (absent ones get their defaults).
    let mut p = Pool {
        id: Uuid::new_v4(),
        project_id: lb.project_id.clone(),
        loadbalancer_id: lb.id,
        name: None,
        description: None,
        admin_state_up: true,
        provisioning_status: ProvisioningStatus::PendingCreate,
        operating_status: OperatingStatus::Offline,
        created_at: now(),
        updated_at: None,
        tags: Vec::new(),
        protocol: PoolProtocol::Http,
        lb_algorithm: LbAlgorithm::RoundRobin,
        session_persistence: None,
        tls_enabled: false,
        tls_container_ref: None,
        ca_tls_container_ref: None,
        crl_container_ref: None,
        tls_ciphers: None,
        tls_versions: None,
        alpn_protocols: None,
    };
    TABLE.create(obj, &mut p, &state.config, Some(lb))?;
    apply_tls_defaults(state, &mut p);
    check(&p)?;
    if matches!(p.protocol, PoolProtocol::Udp | PoolProtocol::Sctp) {
        super::listeners::check_l4_support(state, lb, p.protocol.as_str())?;
    }
    Ok(p)
}

fn apply_tls_defaults(state: &AppState, p: &mut Pool) {
    if p.tls_enabled {
        p.tls_ciphers
            .get_or_insert_with(|| state.config.default_tls_ciphers.clone());
        p.tls_versions
            .get_or_insert_with(|| vec![TlsVersion::TlsV1_2, TlsVersion::TlsV1_3]);
        p.alpn_protocols
            .get_or_insert_with(|| AlpnProtocol::ALL.to_vec());
    }
}

/// Cross-field rules on the final pool.
pub fn check(p: &Pool) -> ApiResult<()> {
    if let Some(sp) = &p.session_persistence {
        if p.protocol.is_datagram() {
            if sp.kind != SessionPersistenceType::SourceIp {
                return Err(ApiError::validation(format!(
                    "Session persistence of type {} is not supported for {} protocol pools.",
                    sp.kind, p.protocol
                )));
            }
        } else if sp.persistence_timeout.is_some() || sp.persistence_granularity.is_some() {
            return Err(ApiError::validation(
                "persistence_timeout and persistence_granularity is only for UDP and SCTP protocol pools.",
            ));
        }
        match (sp.kind, &sp.cookie_name) {
            (SessionPersistenceType::AppCookie, None) => {
                return Err(ApiError::validation(
                    "Cookie names are required for APP_COOKIE session persistence type.",
                ));
            }
            (SessionPersistenceType::AppCookie, Some(_)) | (_, None) => {}
            (kind, Some(_)) => {
                return Err(ApiError::validation(format!(
                    "Cookie names are not supported for {kind} persistence."
                )));
            }
        }
    }
    if p.crl_container_ref.is_some() && p.ca_tls_container_ref.is_none() {
        return Err(ApiError::validation(
            "A CA reference is required to specify a certificate revocation list.",
        ));
    }
    if p.tls_versions.as_ref().is_some_and(Vec::is_empty) {
        return Err(ApiError::invalid(
            "tls_versions",
            &json!([]),
            "Value should not be an empty list",
        ));
    }
    if p.alpn_protocols.as_ref().is_some_and(Vec::is_empty) {
        return Err(ApiError::invalid(
            "alpn_protocols",
            &json!([]),
            "Value should not be an empty list",
        ));
    }
    Ok(())
}

/// The pool's certificate refs with what each must hold.
pub fn cert_refs(p: &Pool) -> Vec<(&str, CertUsage)> {
    [
        (&p.tls_container_ref, CertUsage::Client),
        (&p.ca_tls_container_ref, CertUsage::CaBundle),
        (&p.crl_container_ref, CertUsage::Crl),
    ]
    .into_iter()
    .filter_map(|(r, usage)| r.as_deref().map(|r| (r, usage)))
    .collect()
}

async fn full(state: &AppState, p: &Pool) -> ApiResult<Map<String, Value>> {
    let mut m = render(p);
    relate(&mut m, &RelIndex::load(state, &[p.id.to_string()]).await?);
    Ok(m)
}

/// GET /v2/pools
pub async fn list(
    State(state): State<AppState>,
    ctx: RequestContext,
    q: QueryPairs,
    OrigPath(path): OrigPath,
) -> ApiResult<Response> {
    let params = ListParams::parse(&q.0)?;
    let listing = Listing {
        base: ListQuery {
            kind: Some(Kind::Pool.into()),
            project_id: scope_project(&ctx, R::Pool)?,
            ..Default::default()
        },
        column_filters: &[
            ("loadbalancer_id", Column::LoadBalancer),
            // The data model's name (Octavia accepts it as well).
            ("load_balancer_id", Column::LoadBalancer),
            ("project_id", Column::Project),
        ],
        with_relations: true,
    };
    let (items, links) = list::run(&state, &path, &params, listing, render_doc, relate).await?;
    Ok(reply_list("pools", items, links))
}

/// GET /v2/pools/{id}
pub async fn get_one(
    State(state): State<AppState>,
    ctx: RequestContext,
    Path(id): Path<String>,
    q: QueryPairs,
) -> ApiResult<Response> {
    let p: Pool = load(&state, &ctx, &id, Action::new(R::Pool, Op::GetOne)).await?;
    Ok(reply(
        StatusCode::OK,
        "pool",
        list::select_fields(full(&state, &p).await?, &q.fields()),
    ))
}

/// POST /v2/pools
pub async fn create(
    State(state): State<AppState>,
    ctx: RequestContext,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    let obj = Obj::envelope(&body, "pool", "pool_", TABLE.create_keys())?;
    let listener_id = obj.uuid("listener_id")?.opt();
    let lb_id = obj.uuid("loadbalancer_id")?.opt();
    project_for_create(&ctx, &obj).ok();
    let action = Action::new(R::Pool, Op::Post);
    // Certificates once, outside the write (see listeners::create).
    let mut certs_checked = false;
    let mut raced_lb = None;
    for _ in 0..CHILD_WRITE_ATTEMPTS {
        let (mut lb, listener) = match (listener_id, lb_id) {
            (Some(lid), _) => {
                let (l, lb, _) =
                    read_for_child::<Listener>(&state, &ctx, &lid.to_string(), action).await?;
                if lb_id.is_some_and(|id| id != lb.value.id) {
                    return Err(ApiError::validation(
                        "The listener does not belong to the given load balancer.",
                    ));
                }
                (lb, Some(l))
            }
            (None, Some(id)) => (
                read_lb_for_child(&state, &ctx, &id.to_string(), action)
                    .await?
                    .0,
                None,
            ),
            (None, None) => {
                return Err(ApiError::validation(
                    "Must provide at least one of: loadbalancer_id, listener_id",
                ));
            }
        };
        let p = parse_new(&state, &obj, &lb.value)?;
        if !certs_checked {
            check_certs(&state, &p.project_id, &cert_refs(&p)).await?;
            certs_checked = true;
        }
        let quota = check_quota_before_write(&state, &p.project_id, Kind::Pool, 1).await?;
        let mut write = ChildWrite::lock(&mut lb)?;
        let mut listener_ids = Vec::new();
        if let Some(mut l) = listener {
            if l.value.default_pool_id.is_some() {
                return Err(ApiError::Conflict(
                    "This listener already has a default pool".to_owned(),
                ));
            }
            super::listeners::check_protocols(l.value.protocol, p.protocol)?;
            // The listener gets its default pool and, as `mark_pending` does, goes
            // PENDING_UPDATE if it was ACTIVE; one versioned write of both.
            l.value.default_pool_id = Some(p.id);
            l.value.updated_at = Some(write.stamp());
            if l.value.provisioning_status == ProvisioningStatus::Active {
                l.value.provisioning_status = ProvisioningStatus::PendingUpdate;
            }
            write.update(&l.value, l.version)?;
            listener_ids.push(l.value.id);
        }
        write.insert(&p)?;
        write.enqueue(lb.value.id, JobOp::Create, Kind::Pool, p.id);
        write.guard_quota(quota);
        if let Commit::Raced = write.commit(&state).await? {
            raced_lb = Some(lb.value.id);
            continue;
        }
        let mut m = render(&p);
        m.insert(
            "listeners".into(),
            id_refs(
                listener_ids
                    .iter()
                    .map(|i| i.to_string())
                    .collect::<Vec<_>>()
                    .iter()
                    .map(String::as_str),
            ),
        );
        return Ok(reply(StatusCode::CREATED, "pool", Value::Object(m)));
    }
    Err(lb_busy(raced_lb.unwrap_or_default()))
}

/// PUT /v2/pools/{id}
pub async fn update(
    State(state): State<AppState>,
    ctx: RequestContext,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    let obj = Obj::envelope(&body, "pool", "pool_", TABLE.update_keys())?;
    let (mut tx, mut p, mut lb) =
        begin_write::<Pool>(&state, &ctx, &id, Action::new(R::Pool, Op::Put)).await?;
    TABLE.update(&obj, &mut p, &state.config, Some(&lb))?;
    apply_tls_defaults(&state, &mut p);
    check(&p)?;
    check_certs(&state, &p.project_id, &cert_refs(&p)).await?;
    p.provisioning_status = ProvisioningStatus::PendingUpdate;
    p.updated_at = Some(now());
    let listeners = listeners_of_pool(&mut tx, p.id).await?;
    mark_pending(&mut tx, &mut lb, &listeners).await?;
    tx.put_resource(&p).await?;
    enqueue(&mut tx, lb.id, JobOp::Update, Kind::Pool, p.id).await?;
    tx.commit().await?;
    Ok(reply(
        StatusCode::OK,
        "pool",
        Value::Object(full(&state, &p).await?),
    ))
}

/// DELETE /v2/pools/{id}
pub async fn delete(
    State(state): State<AppState>,
    ctx: RequestContext,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let (mut tx, mut p, mut lb) =
        begin_write::<Pool>(&state, &ctx, &id, Action::new(R::Pool, Op::Delete)).await?;
    let rels = RelIndex::new(tx.relations(&[p.id.to_string()]).await?);
    if let Some(policy) = rels.referrers(&id, Kind::L7Policy).first() {
        return Err(ApiError::Conflict(format!(
            "Pool {id} is in use by L7 policy {}",
            policy.id
        )));
    }
    let listeners = listeners_of_pool(&mut tx, p.id).await?;
    mark_pending(&mut tx, &mut lb, &listeners).await?;
    p.provisioning_status = ProvisioningStatus::PendingDelete;
    p.updated_at = Some(now());
    tx.put_resource(&p).await?;
    enqueue(&mut tx, lb.id, JobOp::Delete, Kind::Pool, p.id).await?;
    tx.commit().await?;
    Ok(no_content())
}
