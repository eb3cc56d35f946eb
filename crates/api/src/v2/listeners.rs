//! `/v2/listeners` (octavia-api.md §2).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use klb_model::*;
use klb_store::{Document, JobOp, ListQuery};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::common::*;
use super::loadbalancers::{scope_project, stored_stats};
use crate::AppState;
use crate::body::{Field, JsonBody, Obj, required};
use crate::context::{Action, Op, RequestContext, Resource as R};
use crate::error::{ApiError, ApiResult};
use crate::list::{self, Column, ListParams, Listing, RelIndex};
use crate::provider::CertUsage;

/// Attributes accepted on POST (the single-create form adds `default_pool`, `l7policies`).
pub const POST_KEYS: &[&str] = &[
    "name",
    "description",
    "admin_state_up",
    "project_id",
    "tenant_id",
    "loadbalancer_id",
    "protocol",
    "protocol_port",
    "connection_limit",
    "default_pool_id",
    "insert_headers",
    "default_tls_container_ref",
    "sni_container_refs",
    "client_ca_tls_container_ref",
    "client_authentication",
    "client_crl_container_ref",
    "timeout_client_data",
    "timeout_member_connect",
    "timeout_member_data",
    "timeout_tcp_inspect",
    "allowed_cidrs",
    "tls_ciphers",
    "tls_versions",
    "alpn_protocols",
    "hsts_max_age",
    "hsts_include_subdomains",
    "hsts_preload",
    "tags",
];
const PUT_KEYS: &[&str] = &[
    "name",
    "description",
    "admin_state_up",
    "connection_limit",
    "default_pool_id",
    "insert_headers",
    "default_tls_container_ref",
    "sni_container_refs",
    "client_ca_tls_container_ref",
    "client_authentication",
    "client_crl_container_ref",
    "timeout_client_data",
    "timeout_member_connect",
    "timeout_member_data",
    "timeout_tcp_inspect",
    "allowed_cidrs",
    "tls_ciphers",
    "tls_versions",
    "alpn_protocols",
    "hsts_max_age",
    "hsts_include_subdomains",
    "hsts_preload",
    "tags",
];
const MAX_TIMEOUT: i64 = 2_073_600_000;

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
    m.insert("name".into(), json!(l.name));
    m.insert("description".into(), json!(l.description));
    m.insert("admin_state_up".into(), json!(l.admin_state_up));
    m.insert("protocol".into(), json!(l.protocol.as_str()));
    m.insert("protocol_port".into(), json!(l.protocol_port));
    m.insert("connection_limit".into(), json!(l.connection_limit));
    m.insert("default_pool_id".into(), opt(&l.default_pool_id));
    m.insert("loadbalancers".into(), json!([{"id": l.loadbalancer_id}]));
    m.insert("l7policies".into(), json!([]));
    m.insert("insert_headers".into(), json!(l.insert_headers));
    m.insert(
        "default_tls_container_ref".into(),
        json!(l.default_tls_container_ref),
    );
    m.insert("sni_container_refs".into(), json!(l.sni_container_refs));
    m.insert(
        "client_ca_tls_container_ref".into(),
        json!(l.client_ca_tls_container_ref),
    );
    m.insert(
        "client_authentication".into(),
        json!(l.client_authentication.as_str()),
    );
    m.insert(
        "client_crl_container_ref".into(),
        json!(l.client_crl_container_ref),
    );
    m.insert("timeout_client_data".into(), json!(l.timeout_client_data));
    m.insert(
        "timeout_member_connect".into(),
        json!(l.timeout_member_connect),
    );
    m.insert("timeout_member_data".into(), json!(l.timeout_member_data));
    m.insert("timeout_tcp_inspect".into(), json!(l.timeout_tcp_inspect));
    let cidrs: Vec<String> = l.allowed_cidrs.iter().map(|c| c.to_string()).collect();
    m.insert(
        "allowed_cidrs".into(),
        if cidrs.is_empty() {
            Value::Null
        } else {
            json!(cidrs)
        },
    );
    m.insert("tls_ciphers".into(), json!(l.tls_ciphers));
    m.insert(
        "tls_versions".into(),
        json!(
            l.tls_versions
                .as_ref()
                .map(|v| v.iter().map(|x| x.as_str()).collect::<Vec<_>>())
        ),
    );
    m.insert(
        "alpn_protocols".into(),
        json!(
            l.alpn_protocols
                .as_ref()
                .map(|v| v.iter().map(|x| x.as_str()).collect::<Vec<_>>())
        ),
    );
    m.insert("hsts_max_age".into(), json!(l.hsts_max_age));
    m.insert(
        "hsts_include_subdomains".into(),
        json!(l.hsts_include_subdomains),
    );
    m.insert("hsts_preload".into(), json!(l.hsts_preload));
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
    let protocol: ListenerProtocol = required(
        "protocol",
        obj.enumerated("protocol", ListenerProtocol::ALL)?,
    )?;
    let protocol_port = required("protocol_port", obj.int("protocol_port", 1, 65535)?)? as u16;
    let tls = protocol == ListenerProtocol::TerminatedHttps;
    let cfg = &state.config;
    let mut l = Listener {
        id: Uuid::new_v4(),
        project_id: project_id.to_owned(),
        loadbalancer_id: lb.id,
        name: text(obj, "name")?.opt(),
        description: text(obj, "description")?.opt(),
        admin_state_up: obj.bool_null_false("admin_state_up")?.or(true),
        provisioning_status: ProvisioningStatus::PendingCreate,
        operating_status: OperatingStatus::Offline,
        created_at: now(),
        updated_at: None,
        tags: tags(obj)?.or(Vec::new()),
        protocol,
        protocol_port,
        connection_limit: obj.int("connection_limit", -1, i64::from(i32::MAX))?.or(-1),
        default_pool_id: obj.uuid("default_pool_id")?.opt(),
        insert_headers: obj
            .string_map("insert_headers", validate::MAX_STR)?
            .or(Default::default()),
        default_tls_container_ref: obj
            .checked(
                "default_tls_container_ref",
                validate::MAX_STR,
                validate::container_ref,
            )?
            .opt(),
        sni_container_refs: obj
            .string_list(
                "sni_container_refs",
                validate::MAX_STR,
                validate::container_ref,
            )?
            .or(Vec::new()),
        client_ca_tls_container_ref: obj
            .checked(
                "client_ca_tls_container_ref",
                validate::MAX_STR,
                validate::container_ref,
            )?
            .opt(),
        client_authentication: obj
            .enumerated("client_authentication", ClientAuthentication::ALL)?
            .or(ClientAuthentication::None),
        client_crl_container_ref: obj
            .checked(
                "client_crl_container_ref",
                validate::MAX_STR,
                validate::container_ref,
            )?
            .opt(),
        timeout_client_data: obj
            .int("timeout_client_data", 0, MAX_TIMEOUT)?
            .or(cfg.timeout_client_data),
        timeout_member_connect: obj
            .int("timeout_member_connect", 0, MAX_TIMEOUT)?
            .or(cfg.timeout_member_connect),
        timeout_member_data: obj
            .int("timeout_member_data", 0, MAX_TIMEOUT)?
            .or(cfg.timeout_member_data),
        timeout_tcp_inspect: obj
            .int("timeout_tcp_inspect", 0, MAX_TIMEOUT)?
            .or(cfg.timeout_tcp_inspect),
        allowed_cidrs: cidrs(obj)?.or(Vec::new()),
        tls_ciphers: obj
            .checked("tls_ciphers", validate::MAX_CIPHERS, validate::tls_ciphers)?
            .opt(),
        tls_versions: nonempty(
            "tls_versions",
            obj.enum_list("tls_versions", TlsVersion::ALL)?,
        )?
        .opt(),
        alpn_protocols: nonempty(
            "alpn_protocols",
            obj.enum_list("alpn_protocols", AlpnProtocol::ALL)?,
        )?
        .opt(),
        hsts_max_age: obj.int("hsts_max_age", 0, i64::from(i32::MAX))?.opt(),
        hsts_include_subdomains: obj.bool("hsts_include_subdomains")?.or(false),
        hsts_preload: obj.bool("hsts_preload")?.or(false),
    };
    if tls {
        l.tls_ciphers
            .get_or_insert_with(|| cfg.default_tls_ciphers.clone());
        l.tls_versions
            .get_or_insert_with(|| vec![TlsVersion::TlsV1_2, TlsVersion::TlsV1_3]);
        l.alpn_protocols
            .get_or_insert_with(|| AlpnProtocol::ALL.to_vec());
    }
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

fn cidrs(obj: &Obj<'_>) -> ApiResult<Field<Vec<ipnet::IpNet>>> {
    Ok(
        match obj.string_list("allowed_cidrs", 64, |s| {
            s.parse::<ipnet::IpNet>()
                .map(|_| ())
                .map_err(|_| "Value should be a valid CIDR".to_owned())
        })? {
            Field::Set(v) => {
                // HAProxy reads 64 words a line at most; the renderer splits the list, this
                // bounds it (issue 11 §5).
                validate::allowed_cidrs_count(v.len())
                    .map_err(|e| ApiError::invalid("allowed_cidrs", &json!(v), &e.to_string()))?;
                Field::Set(v.iter().filter_map(|s| s.parse().ok()).collect())
            }
            Field::Null => Field::Null,
            Field::Absent => Field::Absent,
        },
    )
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

fn nonempty<T>(name: &str, f: Field<Vec<T>>) -> ApiResult<Field<Vec<T>>> {
    if let Field::Set(v) = &f
        && v.is_empty()
    {
        return Err(ApiError::invalid(
            name,
            &json!([]),
            "Value should not be an empty list",
        ));
    }
    Ok(f)
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
        validate::insert_header_key(p, k).map_err(ApiError::BadRequest)?;
        validate::insert_header_value(v).map_err(ApiError::BadRequest)?;
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
            kind: Kind::Listener.as_str().into(),
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
    let obj = Obj::envelope(&body, "listener", "listener_", POST_KEYS)?;
    let lb_id = required("loadbalancer_id", obj.uuid("loadbalancer_id")?)?;
    let (mut tx, _, mut lb) = begin_write::<LoadBalancer>(
        &state,
        &ctx,
        &lb_id.to_string(),
        Action::new(R::Listener, Op::Post),
    )
    .await?;
    let project_id = project_for_create(&ctx, &obj)?;
    let l = parse_new(&state, &obj, &lb, &lb.project_id.clone())?;
    let _ = project_id;
    check_certs(&state, &l.project_id, &cert_refs(&l)).await?;
    let existing: Vec<Listener> = tx
        .list_resources(ListQuery {
            parent_id: Some(lb.id.to_string()),
            ..Default::default()
        })
        .await?;
    check_duplicate(&existing, &l)?;
    check_quota(&state, &mut tx, &l.project_id, Kind::Listener, 1).await?;
    if let Some(pid) = l.default_pool_id {
        let pool: Option<Pool> = tx.get_resource(pid).await?;
        check_default_pool(&l, pool.as_ref(), pid)?;
    }
    mark_pending(&mut tx, &mut lb, &[]).await?;
    tx.insert_resource(&l).await?;
    enqueue(&mut tx, lb.id, JobOp::Create, Kind::Listener, l.id).await?;
    tx.commit().await?;
    Ok(reply(
        StatusCode::CREATED,
        "listener",
        Value::Object(render(&l)),
    ))
}

/// PUT /v2/listeners/{id}
pub async fn update(
    State(state): State<AppState>,
    ctx: RequestContext,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    let obj = Obj::envelope(&body, "listener", "listener_", PUT_KEYS)?;
    let (mut tx, mut l, mut lb) =
        begin_write::<Listener>(&state, &ctx, &id, Action::new(R::Listener, Op::Put)).await?;
    let cfg = &state.config;
    if let Some(v) = text(&obj, "name")?.update() {
        l.name = v;
    }
    if let Some(v) = text(&obj, "description")?.update() {
        l.description = v;
    }
    if let Field::Set(v) = obj.bool_null_false("admin_state_up")? {
        l.admin_state_up = v;
    }
    if let Some(v) = obj
        .int("connection_limit", -1, i64::from(i32::MAX))?
        .update()
    {
        l.connection_limit = v.unwrap_or(-1);
    }
    let new_pool = obj.uuid("default_pool_id")?.update();
    if let Some(v) = new_pool {
        l.default_pool_id = v;
    }
    if let Some(v) = obj
        .string_map("insert_headers", validate::MAX_STR)?
        .update()
    {
        l.insert_headers = v.unwrap_or_default();
    }
    if let Some(v) = obj
        .checked(
            "default_tls_container_ref",
            validate::MAX_STR,
            validate::container_ref,
        )?
        .update()
    {
        l.default_tls_container_ref = v;
    }
    if let Some(v) = obj
        .string_list(
            "sni_container_refs",
            validate::MAX_STR,
            validate::container_ref,
        )?
        .update()
    {
        l.sni_container_refs = v.unwrap_or_default();
    }
    if let Some(v) = obj
        .checked(
            "client_ca_tls_container_ref",
            validate::MAX_STR,
            validate::container_ref,
        )?
        .update()
    {
        l.client_ca_tls_container_ref = v;
    }
    if let Some(v) = obj
        .enumerated("client_authentication", ClientAuthentication::ALL)?
        .update()
    {
        l.client_authentication = v.unwrap_or(ClientAuthentication::None);
    }
    if let Some(v) = obj
        .checked(
            "client_crl_container_ref",
            validate::MAX_STR,
            validate::container_ref,
        )?
        .update()
    {
        l.client_crl_container_ref = v;
    }
    if let Some(v) = obj.int("timeout_client_data", 0, MAX_TIMEOUT)?.update() {
        l.timeout_client_data = v.unwrap_or(cfg.timeout_client_data);
    }
    if let Some(v) = obj.int("timeout_member_connect", 0, MAX_TIMEOUT)?.update() {
        l.timeout_member_connect = v.unwrap_or(cfg.timeout_member_connect);
    }
    if let Some(v) = obj.int("timeout_member_data", 0, MAX_TIMEOUT)?.update() {
        l.timeout_member_data = v.unwrap_or(cfg.timeout_member_data);
    }
    if let Some(v) = obj.int("timeout_tcp_inspect", 0, MAX_TIMEOUT)?.update() {
        l.timeout_tcp_inspect = v.unwrap_or(cfg.timeout_tcp_inspect);
    }
    if let Some(v) = cidrs(&obj)?.update() {
        l.allowed_cidrs = v.unwrap_or_default();
        check_cidrs_vs_vip(&lb, &l.allowed_cidrs)?;
    }
    let tls = l.protocol == ListenerProtocol::TerminatedHttps;
    if let Some(v) = obj
        .checked("tls_ciphers", validate::MAX_CIPHERS, validate::tls_ciphers)?
        .update()
    {
        l.tls_ciphers = v.or_else(|| tls.then(|| cfg.default_tls_ciphers.clone()));
    }
    if let Some(v) = nonempty(
        "tls_versions",
        obj.enum_list("tls_versions", TlsVersion::ALL)?,
    )?
    .update()
    {
        l.tls_versions = v.or_else(|| tls.then(|| vec![TlsVersion::TlsV1_2, TlsVersion::TlsV1_3]));
    }
    if let Some(v) = nonempty(
        "alpn_protocols",
        obj.enum_list("alpn_protocols", AlpnProtocol::ALL)?,
    )?
    .update()
    {
        l.alpn_protocols = v.or_else(|| tls.then(|| AlpnProtocol::ALL.to_vec()));
    }
    if let Some(v) = obj.int("hsts_max_age", 0, i64::from(i32::MAX))?.update() {
        l.hsts_max_age = v;
    }
    if let Some(v) = obj.bool("hsts_include_subdomains")?.update() {
        l.hsts_include_subdomains = v.unwrap_or(false);
    }
    if let Some(v) = obj.bool("hsts_preload")?.update() {
        l.hsts_preload = v.unwrap_or(false);
    }
    if let Some(v) = tags(&obj)?.update() {
        l.tags = v.unwrap_or_default();
    }
    check(&l)?;
    check_certs(&state, &l.project_id, &cert_refs(&l)).await?;
    if let Some(Some(pid)) = new_pool {
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
