//! The desired state each LB VM's agent gets, built from a load balancer's stored graph (model
//! types in, protocol types out, by hand: the protocol does not depend on the model).
//!
//! Objects in `PENDING_DELETE` are left out (the change being applied removes them), as are
//! objects of kinds the data plane does not run (UDP/SCTP listeners are refused by the agent's
//! renderer with a clear error instead).

use std::net::IpAddr;

use klb_agent_client::heartbeat::HeartbeatKeys;
use klb_model::{L7Policy, Listener, Pool, ProvisioningStatus};
use klb_proto as proto;
use klb_store::StoreError;

/// A load balancer's live graph, decoded: the LB flows' type, read once per job.
pub use klb_flow::lb::Graph;

/// Why a desired state could not be built.
#[derive(Debug, thiserror::Error)]
pub enum DesiredError {
    /// The LB's documents are gone.
    #[error("load balancer {0} has no stored graph")]
    Missing(String),
    /// Reading the graph failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored value does not convert to the protocol type.
    #[error("value {value:?} has no protocol equivalent: {message}")]
    Conversion {
        /// The value.
        value: String,
        /// Why it does not convert.
        message: String,
    },
}

/// Operator settings of the data plane (the seed's BGP options and defaults).
#[derive(Debug, Clone)]
pub struct DataPlane {
    /// `base_as_number`: VM n announces from AS base + n.
    pub base_as_number: u32,
    /// `l3_router_as_number`.
    pub l3_router_as_number: u32,
    /// `primary_l3_gateway_addr`, `secondary_l3_gateway_addr`.
    pub gateways: Vec<IpAddr>,
    /// BFD on the BGP sessions.
    pub bfd: bool,
    /// `default_maxconn`.
    pub default_maxconn: u32,
    /// TCP port of HAProxy's peers listener on each VM.
    pub peer_port: u16,
    /// Derives each VM's heartbeat key, sent in its desired state; `None`: no heartbeats
    /// (providers without a receiver).
    pub heartbeat_keys: Option<HeartbeatKeys>,
}

/// One LB VM as the state builder needs it.
#[derive(Debug, Clone)]
pub struct VmPlan {
    /// The LB VM record's id.
    pub id: String,
    /// Index within the LB.
    pub index: u32,
    /// The server's name.
    pub name: String,
    /// Address on the L3 network: BGP router id and HAProxy peer address.
    pub l3_ip: Option<IpAddr>,
}

/// Builds the states of `vms` (in that order; they are each other's peers) for a push of
/// `version` with the VIP `vip`. The graph is converted once: each VM's copy differs only in
/// its identity, its BGP session and its heartbeat key.
pub fn build(
    graph: &Graph,
    vip: IpAddr,
    version: u64,
    vms: &[VmPlan],
    data_plane: &DataPlane,
    certificates: Vec<proto::Certificate>,
) -> Result<Vec<proto::DesiredState>, DesiredError> {
    let lb = &graph.load_balancer;
    let live = |s: ProvisioningStatus| {
        !matches!(
            s,
            ProvisioningStatus::PendingDelete | ProvisioningStatus::Deleted
        )
    };
    let listeners = graph
        .listeners
        .iter()
        .filter(|l| live(l.provisioning_status))
        .map(|l| listener(graph, l))
        .collect::<Result<_, _>>()?;
    let pools = graph
        .pools
        .iter()
        .filter(|p| live(p.provisioning_status))
        .map(|p| pool(graph, p))
        .collect::<Result<_, _>>()?;
    let peers = vms
        .iter()
        .filter_map(|v| {
            Some(proto::Peer {
                name: v.name.clone(),
                address: v.l3_ip?,
                port: data_plane.peer_port,
            })
        })
        .collect();
    let lb_id = lb.id.to_string();
    let shared = proto::DesiredState {
        protocol: proto::PROTOCOL_VERSION,
        version,
        load_balancer_id: lb_id.clone(),
        admin_state_up: lb.admin_state_up,
        vip,
        additional_vips: lb
            .additional_vips
            .iter()
            .filter_map(|v| v.ip_address)
            .collect(),
        vm: proto::VmIdentity {
            id: String::new(),
            index: 0,
            name: String::new(),
        },
        peers,
        listeners,
        pools,
        bgp: None,
        global: proto::Global {
            maxconn: data_plane.default_maxconn,
        },
        certificates,
        heartbeat_key: None,
    };
    Ok(vms
        .iter()
        .map(|vm| {
            let mut state = shared.clone();
            state.vm = proto::VmIdentity {
                id: vm.id.clone(),
                index: vm.index,
                name: vm.name.clone(),
            };
            state.bgp = bgp(vm, vip, data_plane);
            state.heartbeat_key = data_plane
                .heartbeat_keys
                .as_ref()
                .map(|keys| keys.for_vm(&lb_id, &vm.id));
            state
        })
        .collect())
}

/// VM `vm`'s BGP session: it announces the VIP from its own AS to every gateway.
fn bgp(vm: &VmPlan, vip: IpAddr, data_plane: &DataPlane) -> Option<proto::Bgp> {
    match vm.l3_ip {
        Some(IpAddr::V4(router_id)) if !data_plane.gateways.is_empty() => Some(proto::Bgp {
            local_as: data_plane.base_as_number + vm.index,
            router_id,
            neighbors: data_plane
                .gateways
                .iter()
                .map(|address| proto::Neighbor {
                    address: *address,
                    remote_as: data_plane.l3_router_as_number,
                })
                .collect(),
            bfd: data_plane.bfd,
            announce: vec![ipnet::IpNet::from(vip)],
            keepalive_secs: 3,
            hold_secs: 9,
        }),
        _ => None,
    }
}

/// Converts a model enum to the protocol enum with the same Octavia spelling.
fn wire<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, DesiredError> {
    serde_json::from_value(serde_json::Value::from(text)).map_err(|e| DesiredError::Conversion {
        value: text.to_owned(),
        message: e.to_string(),
    })
}

fn wire_all<T: serde::de::DeserializeOwned>(
    texts: impl IntoIterator<Item = &'static str>,
) -> Result<Vec<T>, DesiredError> {
    texts.into_iter().map(wire).collect()
}

/// Certificates are referenced by an id derived from the container ref; the store backend adds
/// the PEM material under the same id from the certificate manager. (One ref cannot serve two
/// uses: the API checks each ref against its use, and a bundle with a key is not a CA bundle.)
pub fn certificate_id(container_ref: &str) -> String {
    // FNV-1a: stable and short; the id only needs to be unique within one state.
    let hash = container_ref
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
    format!("cert-{hash:016x}")
}

fn ms(value: i64) -> u32 {
    u32::try_from(value.max(0)).unwrap_or(u32::MAX)
}

fn listener(graph: &Graph, l: &Listener) -> Result<proto::Listener, DesiredError> {
    let mut policies: Vec<&L7Policy> = graph
        .l7_policies
        .iter()
        .filter(|p| {
            p.listener_id == l.id && p.provisioning_status != ProvisioningStatus::PendingDelete
        })
        .collect();
    policies.sort_by_key(|p| p.position);
    let l7_policies = policies
        .into_iter()
        .map(|p| l7_policy(graph, p))
        .collect::<Result<_, _>>()?;
    Ok(proto::Listener {
        id: l.id.to_string(),
        admin_state_up: l.admin_state_up,
        protocol: wire(l.protocol.as_str())?,
        protocol_port: l.protocol_port,
        connection_limit: u32::try_from(l.connection_limit).ok(),
        default_pool_id: l.default_pool_id.map(|id| id.to_string()),
        l7_policies,
        insert_headers: l.insert_headers.clone(),
        timeout_client_data: ms(l.timeout_client_data),
        timeout_member_connect: ms(l.timeout_member_connect),
        timeout_member_data: ms(l.timeout_member_data),
        timeout_tcp_inspect: ms(l.timeout_tcp_inspect),
        allowed_cidrs: l.allowed_cidrs.clone(),
        default_tls_certificate_id: l.default_tls_container_ref.as_deref().map(certificate_id),
        sni_certificate_ids: l
            .sni_container_refs
            .iter()
            .map(|r| certificate_id(r))
            .collect(),
        client_ca_certificate_id: l.client_ca_tls_container_ref.as_deref().map(certificate_id),
        client_authentication: wire(l.client_authentication.as_str())?,
        client_crl_certificate_id: l.client_crl_container_ref.as_deref().map(certificate_id),
        tls_ciphers: l.tls_ciphers.clone(),
        tls_versions: wire_all(l.tls_versions.iter().flatten().map(|v| v.as_str()))?,
        alpn_protocols: wire_all(l.alpn_protocols.iter().flatten().map(|v| v.as_str()))?,
        hsts_max_age: l.hsts_max_age.and_then(|v| u32::try_from(v).ok()),
        hsts_include_subdomains: l.hsts_include_subdomains,
        hsts_preload: l.hsts_preload,
    })
}

fn l7_policy(graph: &Graph, p: &L7Policy) -> Result<proto::L7Policy, DesiredError> {
    let rules = graph
        .l7_rules
        .iter()
        .filter(|r| {
            r.l7policy_id == p.id && r.provisioning_status != ProvisioningStatus::PendingDelete
        })
        .map(|r| {
            Ok(proto::L7Rule {
                id: r.id.to_string(),
                admin_state_up: r.admin_state_up,
                rule_type: wire(r.kind.as_str())?,
                compare_type: wire(r.compare_type.as_str())?,
                key: r.key.clone(),
                value: r.value.clone(),
                invert: r.invert,
            })
        })
        .collect::<Result<_, DesiredError>>()?;
    Ok(proto::L7Policy {
        id: p.id.to_string(),
        admin_state_up: p.admin_state_up,
        action: wire(p.action.as_str())?,
        position: u32::try_from(p.position).unwrap_or(u32::MAX),
        redirect_pool_id: p.redirect_pool_id.map(|id| id.to_string()),
        redirect_url: p.redirect_url.clone(),
        redirect_prefix: p.redirect_prefix.clone(),
        redirect_http_code: p.redirect_http_code,
        rules,
    })
}

fn pool(graph: &Graph, p: &Pool) -> Result<proto::Pool, DesiredError> {
    let health_monitor = graph
        .health_monitors
        .iter()
        .find(|hm| {
            hm.pool_id == p.id && hm.provisioning_status != ProvisioningStatus::PendingDelete
        })
        .map(|hm| {
            Ok::<_, DesiredError>(proto::HealthMonitor {
                id: hm.id.to_string(),
                admin_state_up: hm.admin_state_up,
                monitor_type: wire(hm.kind.as_str())?,
                delay: ms(hm.delay),
                timeout: ms(hm.timeout),
                max_retries: u8::try_from(hm.max_retries).unwrap_or(10),
                max_retries_down: u8::try_from(hm.max_retries_down).unwrap_or(10),
                http_method: hm.http_method.map(|m| wire(m.as_str())).transpose()?,
                url_path: hm.url_path.clone(),
                expected_codes: hm.expected_codes.clone(),
                http_version: hm
                    .http_version
                    .map(|v| wire(if v >= 1.05 { "1.1" } else { "1.0" }))
                    .transpose()?,
                domain_name: hm.domain_name.clone(),
            })
        })
        .transpose()?;
    let members = graph
        .members
        .iter()
        .filter(|m| m.pool_id == p.id && m.provisioning_status != ProvisioningStatus::PendingDelete)
        .map(|m| proto::Member {
            id: m.id.to_string(),
            admin_state_up: m.admin_state_up,
            address: m.address,
            protocol_port: m.protocol_port,
            weight: m.weight,
            backup: m.backup,
            monitor_address: m.monitor_address,
            monitor_port: m.monitor_port,
        })
        .collect();
    Ok(proto::Pool {
        id: p.id.to_string(),
        admin_state_up: p.admin_state_up,
        protocol: wire(p.protocol.as_str())?,
        lb_algorithm: wire(p.lb_algorithm.as_str())?,
        session_persistence: p
            .session_persistence
            .as_ref()
            .map(|sp| {
                Ok::<_, DesiredError>(proto::SessionPersistence {
                    persistence_type: wire(sp.kind.as_str())?,
                    cookie_name: sp.cookie_name.clone(),
                    persistence_timeout: sp.persistence_timeout.and_then(|v| u32::try_from(v).ok()),
                    persistence_granularity: sp.persistence_granularity.clone(),
                })
            })
            .transpose()?,
        health_monitor,
        members,
        tls_enabled: p.tls_enabled,
        tls_certificate_id: p.tls_container_ref.as_deref().map(certificate_id),
        ca_tls_certificate_id: p.ca_tls_container_ref.as_deref().map(certificate_id),
        crl_certificate_id: p.crl_container_ref.as_deref().map(certificate_id),
        tls_ciphers: p.tls_ciphers.clone(),
        tls_versions: wire_all(p.tls_versions.iter().flatten().map(|v| v.as_str()))?,
        alpn_protocols: wire_all(p.alpn_protocols.iter().flatten().map(|v| v.as_str()))?,
    })
}
