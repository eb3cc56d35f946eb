//! `/v2/listeners` (octavia-api.md §2).

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
use super::loadbalancers::{scope_project, stored_stats};
use crate::AppState;
use crate::body::{Field, JsonBody, Obj, required};
use crate::context::{Action, Op, RequestContext, Resource as R};
use crate::error::{ApiError, ApiResult};
use crate::list::{self, Column, ListParams, Listing, RelIndex};
use crate::provider::CertUsage;

const MAX_TIMEOUT: i64 = 2_073_600_000;
/// The key PUT's default-pool check looks for.
const DEFAULT_POOL_ID: &str = "default_pool_id";

/// The listener's attributes: how each is read (with its bounds), stored, updated and
/// rendered (see [`super::fields`]).
static TABLE: LazyLock<Table<Listener>> = LazyLock::new(|| {
    type A = Attr<Listener>;
    let container_ref = || read::checked(validate::MAX_STR, validate::container_ref);
    let timeout = || read::int(0, MAX_TIMEOUT);
    let tls = |l: &Listener| l.protocol == ListenerProtocol::TerminatedHttps;
    Table::new(vec![
        A::key("loadbalancer_id"),
        A::key("project_id"),
        A::key("tenant_id"),
        A::new(
            "protocol",
            read::one_of(ListenerProtocol::ALL),
            |l, v, _| l.protocol = v.unwrap_or(l.protocol),
            |l| json!(l.protocol.as_str()),
        )
        .required()
        .first(),
        A::new(
            "protocol_port",
            read::int(1, 65535),
            |l, v, _| l.protocol_port = v.map_or(l.protocol_port, |p| p as u16),
            |l| json!(l.protocol_port),
        )
        .required()
        .first(),
        common_attr!(Listener, name),
        common_attr!(Listener, description),
        common_attr!(Listener, admin_state_up),
        A::new(
            "connection_limit",
            read::int(-1, i64::from(i32::MAX)),
            |l, v, _| l.connection_limit = v.unwrap_or(-1),
            |l| json!(l.connection_limit),
        )
        .updatable(),
        A::new(
            DEFAULT_POOL_ID,
            read::uuid(),
            |l, v, _| l.default_pool_id = v,
            |l| opt(&l.default_pool_id),
        )
        .updatable(),
        A::shown("loadbalancers", |l| json!([{"id": l.loadbalancer_id}])),
        // Filled by `relate`.
        A::shown("l7policies", |_| json!([])),
        A::new(
            "insert_headers",
            read::string_map(validate::MAX_STR),
            |l, v, _| l.insert_headers = v.unwrap_or_default(),
            |l| json!(l.insert_headers),
        )
        .updatable(),
        A::new(
            "default_tls_container_ref",
            container_ref(),
            |l, v, _| l.default_tls_container_ref = v,
            |l| json!(l.default_tls_container_ref),
        )
        .updatable(),
        A::new(
            "sni_container_refs",
            read::strings(validate::MAX_STR, validate::container_ref),
            |l, v, _| l.sni_container_refs = v.unwrap_or_default(),
            |l| json!(l.sni_container_refs),
        )
        .updatable(),
        A::new(
            "client_ca_tls_container_ref",
            container_ref(),
            |l, v, _| l.client_ca_tls_container_ref = v,
            |l| json!(l.client_ca_tls_container_ref),
        )
        .updatable(),
        A::new(
            "client_authentication",
            read::one_of(ClientAuthentication::ALL),
            |l, v, _| l.client_authentication = v.unwrap_or(ClientAuthentication::None),
            |l| json!(l.client_authentication.as_str()),
        )
        .updatable(),
        A::new(
            "client_crl_container_ref",
            container_ref(),
            |l, v, _| l.client_crl_container_ref = v,
            |l| json!(l.client_crl_container_ref),
        )
        .updatable(),
        A::new(
            "timeout_client_data",
            timeout(),
            |l, v, c| l.timeout_client_data = v.unwrap_or(c.config.timeout_client_data),
            |l| json!(l.timeout_client_data),
        )
        .updatable(),
        A::new(
            "timeout_member_connect",
            timeout(),
            |l, v, c| l.timeout_member_connect = v.unwrap_or(c.config.timeout_member_connect),
            |l| json!(l.timeout_member_connect),
        )
        .updatable(),
        A::new(
            "timeout_member_data",
            timeout(),
            |l, v, c| l.timeout_member_data = v.unwrap_or(c.config.timeout_member_data),
            |l| json!(l.timeout_member_data),
        )
        .updatable(),
        A::new(
            "timeout_tcp_inspect",
            timeout(),
            |l, v, c| l.timeout_tcp_inspect = v.unwrap_or(c.config.timeout_tcp_inspect),
            |l| json!(l.timeout_tcp_inspect),
        )
        .updatable(),
        A::new(
            "allowed_cidrs",
            cidrs(),
            |l, v, c| {
                l.allowed_cidrs = v.unwrap_or_default();
                // On create the VIP check comes after the cross-field rules (`parse_new`).
                match c.lb {
                    Some(lb) if c.updating => check_cidrs_vs_vip(lb, &l.allowed_cidrs),
                    _ => Ok(()),
                }
            },
            |l| {
                if l.allowed_cidrs.is_empty() {
                    Value::Null
                } else {
                    json!(
                        l.allowed_cidrs
                            .iter()
                            .map(|c| c.to_string())
                            .collect::<Vec<_>>()
                    )
                }
            },
        )
        .updatable(),
        // TLS options left out (or null) get the defaults on TERMINATED_HTTPS listeners.
        A::new(
            "tls_ciphers",
            read::checked(validate::MAX_CIPHERS, validate::tls_ciphers),
            move |l, v, c| {
                l.tls_ciphers = v.or_else(|| tls(l).then(|| c.config.default_tls_ciphers.clone()))
            },
            |l| json!(l.tls_ciphers),
        )
        .updatable(),
        A::new(
            "tls_versions",
            read::nonempty(read::list_of(TlsVersion::ALL)),
            move |l, v, _| {
                l.tls_versions =
                    v.or_else(|| tls(l).then(|| vec![TlsVersion::TlsV1_2, TlsVersion::TlsV1_3]))
            },
            |l| {
                json!(
                    l.tls_versions
                        .as_ref()
                        .map(|v| v.iter().map(|x| x.as_str()).collect::<Vec<_>>())
                )
            },
        )
        .updatable(),
        A::new(
            "alpn_protocols",
            read::nonempty(read::list_of(AlpnProtocol::ALL)),
            move |l, v, _| {
                l.alpn_protocols = v.or_else(|| tls(l).then(|| AlpnProtocol::ALL.to_vec()))
            },
            |l| {
                json!(
                    l.alpn_protocols
                        .as_ref()
                        .map(|v| v.iter().map(|x| x.as_str()).collect::<Vec<_>>())
                )
            },
        )
        .updatable(),
        A::new(
            "hsts_max_age",
            read::int(0, i64::from(i32::MAX)),
            |l, v, _| l.hsts_max_age = v,
            |l| json!(l.hsts_max_age),
        )
        .updatable(),
        A::new(
            "hsts_include_subdomains",
            read::boolean(),
            |l, v, _| l.hsts_include_subdomains = v.unwrap_or(false),
            |l| json!(l.hsts_include_subdomains),
        )
        .updatable(),
        A::new(
            "hsts_preload",
            read::boolean(),
            |l, v, _| l.hsts_preload = v.unwrap_or(false),
            |l| json!(l.hsts_preload),
        )
        .updatable(),
        // Rendered by `head`.
        common_attr!(Listener, tags),
    ])
});

/// Attributes accepted on POST (the single-create form adds `default_pool`, `l7policies`).
pub fn post_keys() -> &'static [&'static str] {
    TABLE.create_keys()
}

/// Renders a listener without relation lists.
pub fn render(l: &Listener) -> Map<String, Value> {
    let mut m = head(
        l.id,
        &l.project_id,
        l.provisioning_status,
        l.operating_status,
        l.created_at,
        l.updated_at,
        &l.tags,
    );
    TABLE.render(l, &mut m);
    m
}

fn render_doc(d: &Document) -> ApiResult<Map<String, Value>> {
    Ok(render(&d.decode::<Listener>()?))
}

/// Adds `l7policies` (ordered by position).
pub fn relate(m: &mut Map<String, Value>, rels: &RelIndex) {
    let id = m.get("id").and_then(Value::as_str).unwrap_or("").to_owned();
    let mut ps = rels.children(&id, Kind::L7Policy);
    ps.sort_by_key(|r| r.position);
    m.insert(
        "l7policies".into(),
        Value::Array(ps.iter().map(|r| json!({"id": r.id})).collect()),
    );
}

/// Reads the listener attributes shared by POST and single-create, applying defaults.
pub fn parse_new(
    state: &AppState,
    obj: &Obj<'_>,
    lb: &LoadBalancer,
    project_id: &str,
) -> ApiResult<Listener> {
    // The table sets every attribute below (absent ones get their defaults).
    let mut l = Listener {
        id: Uuid::new_v4(),
        project_id: project_id.to_owned(),
        loadbalancer_id: lb.id,
        name: None,
        description: None,
        admin_state_up: true,
        provisioning_status: ProvisioningStatus::PendingCreate,
        operating_status: OperatingStatus::Offline,
        created_at: now(),
        updated_at: None,
        tags: Vec::new(),
        protocol: ListenerProtocol::Http,
        protocol_port: 0,
        connection_limit: -1,
        default_pool_id: None,
        insert_headers: Default::default(),
        default_tls_container_ref: None,
        sni_container_refs: Vec::new(),
        client_ca_tls_container_ref: None,
        client_authentication: ClientAuthentication::None,
        client_crl_container_ref: None,
        timeout_client_data: 0,
        timeout_member_connect: 0,
        timeout_member_data: 0,
        timeout_tcp_inspect: 0,
        allowed_cidrs: Vec::new(),
        tls_ciphers: None,
        tls_versions: None,
        alpn_protocols: None,
        hsts_max_age: None,
        hsts_include_subdomains: false,
        hsts_preload: false,
    };
    TABLE.create(obj, &mut l, &state.config, Some(lb))?;
    check(&l)?;
    check_cidrs_vs_vip(lb, &l.allowed_cidrs)?;
    if matches!(l.protocol, ListenerProtocol::Udp | ListenerProtocol::Sctp) {
        check_l4_support(state, lb, l.protocol.as_str())?;
    }
    Ok(l)
}

/// 501 for UDP/SCTP when the provider's data plane cannot serve them (see
/// [`crate::ApiConfig::udp_sctp`]), with Octavia's unsupported-option message.
pub fn check_l4_support(state: &AppState, lb: &LoadBalancer, protocol: &str) -> ApiResult<()> {
    if state.config.udp_sctp {
        return Ok(());
    }
    Err(ApiError::NotImplemented(format!(
        "Provider '{}' does not support a requested option: {protocol} load balancing \
         (klb's data plane is HAProxy; UDP and SCTP are planned with IPVS).",
        lb.provider
    )))
}

/// `allowed_cidrs`: at most 64 CIDRs.
fn cidrs() -> Reader<Vec<ipnet::IpNet>> {
    std::sync::Arc::new(|obj: &Obj<'_>, key: &str| {
        Ok(
            match obj.string_list(key, 64, |s| {
                s.parse::<ipnet::IpNet>()
                    .map(|_| ())
                    .map_err(|_| "Value should be a valid CIDR".to_owned())
            })? {
                Field::Set(v) => {
                    // HAProxy reads 64 words a line at most; the renderer splits the list, this
                    // bounds it (issue 11 §5).
                    validate::allowed_cidrs_count(v.len())
                        .map_err(|e| ApiError::invalid(key, &json!(v), &e.to_string()))?;
                    Field::Set(v.iter().filter_map(|s| s.parse().ok()).collect())
                }
                Field::Null => Field::Null,
                Field::Absent => Field::Absent,
            },
        )
    })
}

/// Octavia's `_validate_cidr_compatible_with_vip` (API 2.12): no allowed CIDRs with custom VIP
/// security groups, and each CIDR's IP version must be that of at least one of the load
/// balancer's VIPs (the VIP, then the additional VIPs, listed as Python prints a list).
pub fn check_cidrs_vs_vip(lb: &LoadBalancer, cidrs: &[ipnet::IpNet]) -> ApiResult<()> {
    if cidrs.is_empty() {
        return Ok(());
    }
    if !lb.vip_sg_ids.is_empty() {
        return Err(ApiError::validation(
            "Allowed CIDRs are not allowed when using custom VIP Security Groups.",
        ));
    }
    let vips: Vec<std::net::IpAddr> = lb
        .vip_address
        .iter()
        .copied()
        .chain(lb.additional_vips.iter().filter_map(|v| v.ip_address))
        .collect();
    for cidr in cidrs {
        let v6 = matches!(cidr, ipnet::IpNet::V6(_));
        if !vips.iter().any(|vip| vip.is_ipv6() == v6) {
            let listed: Vec<String> = vips.iter().map(|v| format!("'{v}'")).collect();
            return Err(ApiError::validation(format!(
                "CIDR {cidr} IP version incompatible with all VIPs [{}] IP version.",
                listed.join(", ")
            )));
        }
    }
    Ok(())
}

/// Cross-field rules on the final listener (octavia-api.md §2.1, §2.2).
pub fn check(l: &Listener) -> ApiResult<()> {
    let p = l.protocol;
    let has_certs = l.default_tls_container_ref.is_some()
        || !l.sni_container_refs.is_empty()
        || l.client_ca_tls_container_ref.is_some()
        || l.client_crl_container_ref.is_some();
    if matches!(p, ListenerProtocol::Udp | ListenerProtocol::Sctp)
        && (has_certs || l.tls_ciphers.is_some())
    {
        return Err(ApiError::validation(format!(
            "{p} protocol listener does not support TLS."
        )));
    }
    if has_certs && !p.terminates_tls() {
        return Err(ApiError::validation(format!(
            "Certificate container references are not allowed on {p} protocol listeners."
        )));
    }
    if p == ListenerProtocol::TerminatedHttps
        && l.default_tls_container_ref.is_none()
        && l.sni_container_refs.is_empty()
    {
        return Err(ApiError::validation(
            "An SNI or default certificate container reference must be provided for TERMINATED_HTTPS protocol listeners.",
        ));
    }
    if l.client_authentication != ClientAuthentication::None
        && l.client_ca_tls_container_ref.is_none()
    {
        return Err(ApiError::validation(format!(
            "Client authentication setting {} requires a client CA container reference.",
            l.client_authentication
        )));
    }
    if l.client_crl_container_ref.is_some() && l.client_ca_tls_container_ref.is_none() {
        return Err(ApiError::validation(
            "A client authentication CA reference is required to specify a client authentication revocation list.",
        ));
    }
    if p != ListenerProtocol::TerminatedHttps
        && (l.tls_ciphers.is_some() || l.tls_versions.is_some() || l.alpn_protocols.is_some())
        && p != ListenerProtocol::Prometheus
    {
        return Err(ApiError::validation(format!(
            "TLS options are not allowed on {p} protocol listeners."
        )));
    }
    if l.hsts_max_age.is_some() && p != ListenerProtocol::TerminatedHttps {
        return Err(ApiError::validation(
            "The HSTS feature can only be used for listeners using the TERMINATED_HTTPS protocol.",
        ));
    }
    if (l.hsts_include_subdomains || l.hsts_preload) && l.hsts_max_age.is_none() {
        return Err(ApiError::validation(
            "hsts_include_subdomains and hsts_preload require hsts_max_age.",
        ));
    }
    for (k, v) in &l.insert_headers {
        // Octavia answers these messages as the whole fault string, without a prefix.
        let refused = |e: validate::InsertHeaderError| ApiError::BadRequest(e.to_string());
        validate::insert_header_key(p, k).map_err(refused)?;
        validate::insert_header_value(v).map_err(refused)?;
    }
    Ok(())
}

/// The listener's certificate refs with what each must hold.
pub fn cert_refs(l: &Listener) -> Vec<(&str, CertUsage)> {
    let mut refs: Vec<(&str, CertUsage)> = l
        .default_tls_container_ref
        .iter()
        .chain(&l.sni_container_refs)
        .map(|r| (r.as_str(), CertUsage::Server))
        .collect();
    refs.extend(
        l.client_ca_tls_container_ref
            .as_deref()
            .map(|r| (r, CertUsage::CaBundle)),
    );
    refs.extend(
        l.client_crl_container_ref
            .as_deref()
            .map(|r| (r, CertUsage::Crl)),
    );
    refs
}

/// 409 when another listener of the LB uses the same L4 family and port.
pub fn check_duplicate(existing: &[Listener], l: &Listener) -> ApiResult<()> {
    if existing.iter().any(|o| {
        o.id != l.id
            && o.protocol_port == l.protocol_port
            && o.protocol.l4_family() == l.protocol.l4_family()
    }) {
        return Err(ApiError::Conflict(format!(
            "Another Listener on this Load Balancer is already using protocol {} and protocol_port {}",
            l.protocol, l.protocol_port
        )));
    }
    Ok(())
}

/// A default pool must live on the same LB and speak a compatible protocol.
pub fn check_default_pool(l: &Listener, pool: Option<&Pool>, pool_id: Uuid) -> ApiResult<()> {
    let pool = pool
        .filter(|p| p.loadbalancer_id == l.loadbalancer_id)
        .ok_or_else(|| ApiError::not_found(Kind::Pool, &pool_id.to_string()))?;
    check_protocols(l.protocol, pool.protocol)
}

/// `VALID_LISTENER_POOL_PROTOCOL_MAP`.
pub fn check_protocols(listener: ListenerProtocol, pool: PoolProtocol) -> ApiResult<()> {
    if listener == ListenerProtocol::Prometheus {
        return Err(ApiError::validation(
            "Protocol PROMETHEUS listeners cannot have child objects.",
        ));
    }
    if !listener.allowed_pool_protocols().contains(&pool) {
        return Err(ApiError::validation(format!(
            "The pool protocol '{pool}' is invalid while the listener protocol is '{listener}'."
        )));
    }
    Ok(())
}

async fn full(state: &AppState, l: &Listener) -> ApiResult<Map<String, Value>> {
    let mut m = render(l);
    relate(
        &mut m,
        &RelIndex::load_children(state, &[l.id.to_string()]).await?,
    );
    Ok(m)
}

/// GET /v2/listeners
pub async fn list(
    State(state): State<AppState>,
    ctx: RequestContext,
    q: QueryPairs,
    OrigPath(path): OrigPath,
) -> ApiResult<Response> {
    let params = ListParams::parse(&q.0)?;
    let listing = Listing {
        base: ListQuery {
            kind: Some(Kind::Listener.into()),
            project_id: scope_project(&ctx, R::Listener)?,
            ..Default::default()
        },
        column_filters: &[
            ("loadbalancer_id", Column::LoadBalancer),
            // The data model's name; openstacksdk's `listeners(load_balancer_id=...)`.
            ("load_balancer_id", Column::LoadBalancer),
            ("project_id", Column::Project),
        ],
        with_relations: true,
    };
    let (items, links) = list::run(&state, &path, &params, listing, render_doc, relate).await?;
    Ok(reply_list("listeners", items, links))
}

/// GET /v2/listeners/{id}
pub async fn get_one(
    State(state): State<AppState>,
    ctx: RequestContext,
    Path(id): Path<String>,
    q: QueryPairs,
) -> ApiResult<Response> {
    let l: Listener = load(&state, &ctx, &id, Action::new(R::Listener, Op::GetOne)).await?;
    Ok(reply(
        StatusCode::OK,
        "listener",
        list::select_fields(full(&state, &l).await?, &q.fields()),
    ))
}

/// POST /v2/listeners
pub async fn create(
    State(state): State<AppState>,
    ctx: RequestContext,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    let obj = Obj::envelope(&body, "listener", "listener_", TABLE.create_keys())?;
    let lb_id = required("loadbalancer_id", obj.uuid("loadbalancer_id")?)?;
    let action = Action::new(R::Listener, Op::Post);
    // Certificates are checked once (their refs do not depend on the LB's state), and
    // outside the write: a Barbican fetch never holds the writer.
    let mut certs_checked = false;
    for _ in 0..CHILD_WRITE_ATTEMPTS {
        let (mut lb, graph) = read_lb_for_child(&state, &ctx, &lb_id.to_string(), action).await?;
        project_for_create(&ctx, &obj)?;
        let project_id = lb.value.project_id.clone();
        let l = parse_new(&state, &obj, &lb.value, &project_id)?;
        if !certs_checked {
            check_certs(&state, &l.project_id, &cert_refs(&l)).await?;
            certs_checked = true;
        }
        check_duplicate(&graph.children::<Listener>(lb.value.id)?, &l)?;
        let quota = check_quota_before_write(&state, &l.project_id, Kind::Listener, 1).await?;
        if let Some(pid) = l.default_pool_id {
            // A pool of another LB is not in this graph: read it for check_default_pool's answer.
            let pool: Option<Pool> = match graph.get::<Pool>(pid)? {
                Some(p) => Some(p.value),
                None => state.store.get_resource(pid).await?,
            };
            check_default_pool(&l, pool.as_ref(), pid)?;
        }
        let mut write = ChildWrite::lock(&mut lb)?;
        write.insert(&l)?;
        write.enqueue(lb.value.id, JobOp::Create, Kind::Listener, l.id);
        write.guard_quota(quota);
        if let Commit::Done = write.commit(&state).await? {
            return Ok(reply(
                StatusCode::CREATED,
                "listener",
                Value::Object(render(&l)),
            ));
        }
    }
    Err(lb_busy(lb_id))
}

/// PUT /v2/listeners/{id}
pub async fn update(
    State(state): State<AppState>,
    ctx: RequestContext,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    let obj = Obj::envelope(&body, "listener", "listener_", TABLE.update_keys())?;
    let (mut tx, mut l, mut lb) =
        begin_write::<Listener>(&state, &ctx, &id, Action::new(R::Listener, Op::Put)).await?;
    TABLE.update(&obj, &mut l, &state.config, Some(&lb))?;
    check(&l)?;
    check_certs(&state, &l.project_id, &cert_refs(&l)).await?;
    // A default pool named in the body (not null) must exist and fit.
    if obj.raw(DEFAULT_POOL_ID).is_some_and(|v| !v.is_null())
        && let Some(pid) = l.default_pool_id
    {
        let pool: Option<Pool> = tx.get_resource(pid).await?;
        check_default_pool(&l, pool.as_ref(), pid)?;
    }
    l.provisioning_status = ProvisioningStatus::PendingUpdate;
    l.updated_at = Some(now());
    mark_pending(&mut tx, &mut lb, &[]).await?;
    tx.put_resource(&l).await?;
    enqueue(&mut tx, lb.id, JobOp::Update, Kind::Listener, l.id).await?;
    tx.commit().await?;
    Ok(reply(
        StatusCode::OK,
        "listener",
        Value::Object(full(&state, &l).await?),
    ))
}

/// DELETE /v2/listeners/{id}
pub async fn delete(
    State(state): State<AppState>,
    ctx: RequestContext,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let (mut tx, mut l, mut lb) =
        begin_write::<Listener>(&state, &ctx, &id, Action::new(R::Listener, Op::Delete)).await?;
    if l.provisioning_status.is_pending() {
        return Err(ApiError::Conflict(format!(
            "Listener {id} is immutable and cannot be updated."
        )));
    }
    mark_pending(&mut tx, &mut lb, &[]).await?;
    l.provisioning_status = ProvisioningStatus::PendingDelete;
    l.updated_at = Some(now());
    tx.put_resource(&l).await?;
    enqueue(&mut tx, lb.id, JobOp::Delete, Kind::Listener, l.id).await?;
    tx.commit().await?;
    Ok(no_content())
}

/// GET /v2/listeners/{id}/stats
pub async fn stats(
    State(state): State<AppState>,
    ctx: RequestContext,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let l: Listener = load(&state, &ctx, &id, Action::new(R::Listener, Op::GetStats)).await?;
    let stats = stored_stats(
        &state,
        &l.loadbalancer_id.to_string(),
        Some(&l.id.to_string()),
    )
    .await?;
    Ok(reply(StatusCode::OK, "stats", stats))
}
