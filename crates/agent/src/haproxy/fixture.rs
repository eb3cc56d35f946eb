//! Builders for small desired states (tests, benches and demos). Defaults are Octavia's.

use std::net::IpAddr;

use klb_proto::{
    ClientAuthentication, DesiredState, Global, LbAlgorithm, Listener, ListenerProtocol, Member,
    Pool, PoolProtocol, VmIdentity,
};

/// A state with one VM (`vm0`), VIP `vip`, no peers, the given listeners and pools.
pub fn state(vip: IpAddr, listeners: Vec<Listener>, pools: Vec<Pool>) -> DesiredState {
    DesiredState {
        protocol: klb_proto::PROTOCOL_VERSION,
        version: 1,
        load_balancer_id: "lb1".into(),
        admin_state_up: true,
        vip,
        additional_vips: Vec::new(),
        vm: VmIdentity {
            id: "vm0".into(),
            index: 0,
            name: "vm0".into(),
        },
        peers: Vec::new(),
        listeners,
        pools,
        bgp: None,
        global: Global::default(),
        certificates: Vec::new(),
        heartbeat_key: None,
    }
}

/// A listener with Octavia's defaults.
pub fn listener(
    id: &str,
    protocol: ListenerProtocol,
    port: u16,
    default_pool: Option<&str>,
) -> Listener {
    Listener {
        id: id.into(),
        admin_state_up: true,
        protocol,
        protocol_port: port,
        connection_limit: None,
        default_pool_id: default_pool.map(Into::into),
        l7_policies: Vec::new(),
        insert_headers: Default::default(),
        timeout_client_data: klb_proto::DEFAULT_TIMEOUT_CLIENT_DATA_MS,
        timeout_member_connect: klb_proto::DEFAULT_TIMEOUT_MEMBER_CONNECT_MS,
        timeout_member_data: klb_proto::DEFAULT_TIMEOUT_MEMBER_DATA_MS,
        timeout_tcp_inspect: 0,
        allowed_cidrs: Vec::new(),
        default_tls_certificate_id: None,
        sni_certificate_ids: Vec::new(),
        client_ca_certificate_id: None,
        client_authentication: ClientAuthentication::None,
        client_crl_certificate_id: None,
        tls_ciphers: None,
        tls_versions: Vec::new(),
        alpn_protocols: Vec::new(),
        hsts_max_age: None,
        hsts_include_subdomains: false,
        hsts_preload: false,
    }
}

/// A pool without health monitor or persistence.
pub fn pool(
    id: &str,
    protocol: PoolProtocol,
    lb_algorithm: LbAlgorithm,
    members: Vec<Member>,
) -> Pool {
    Pool {
        id: id.into(),
        admin_state_up: true,
        protocol,
        lb_algorithm,
        session_persistence: None,
        health_monitor: None,
        members,
        tls_enabled: false,
        tls_certificate_id: None,
        ca_tls_certificate_id: None,
        crl_certificate_id: None,
        tls_ciphers: None,
        tls_versions: Vec::new(),
        alpn_protocols: Vec::new(),
    }
}

/// An enabled member with weight 1.
pub fn member(id: &str, address: IpAddr, port: u16) -> Member {
    Member {
        id: id.into(),
        admin_state_up: true,
        address,
        protocol_port: port,
        weight: 1,
        backup: false,
        monitor_address: None,
        monitor_port: None,
    }
}
