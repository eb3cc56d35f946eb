//! Test builders shared by this crate's unit tests.

use std::collections::BTreeMap;

use chrono::Utc;
use klb_model::*;
use klb_proto::{
    Counters, Heartbeat, ListenerStats, ListenerStatus, MemberStats, MemberStatus, PoolStats,
    PoolStatus, Stats,
};
use uuid::Uuid;

use crate::status::GraphRef;

pub struct Lab {
    pub lb: LoadBalancer,
    pub listener: Listener,
    pub pool: Pool,
    pub members: Vec<Member>,
    pub hm: Vec<HealthMonitor>,
}

pub fn lab(n_members: usize, monitored: bool) -> Lab {
    let lb_id = Uuid::new_v4();
    let now = Utc::now();
    let lb = LoadBalancer {
        id: lb_id,
        project_id: "p".into(),
        name: None,
        description: None,
        admin_state_up: true,
        provisioning_status: ProvisioningStatus::Active,
        operating_status: OperatingStatus::Offline,
        created_at: now,
        updated_at: None,
        tags: vec![],
        vip_address: None,
        vip_port_id: None,
        vip_subnet_id: None,
        vip_network_id: None,
        vip_qos_policy_id: None,
        vip_sg_ids: vec![],
        vip_vnic_type: "normal".into(),
        additional_vips: vec![],
        provider: "klb".into(),
        flavor_id: None,
        availability_zone: None,
    };
    let pool = Pool {
        id: Uuid::new_v4(),
        project_id: "p".into(),
        loadbalancer_id: lb_id,
        name: None,
        description: None,
        admin_state_up: true,
        provisioning_status: ProvisioningStatus::Active,
        operating_status: OperatingStatus::Offline,
        created_at: now,
        updated_at: None,
        tags: vec![],
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
    let listener = Listener {
        id: Uuid::new_v4(),
        project_id: "p".into(),
        loadbalancer_id: lb_id,
        name: None,
        description: None,
        admin_state_up: true,
        provisioning_status: ProvisioningStatus::Active,
        operating_status: OperatingStatus::Offline,
        created_at: now,
        updated_at: None,
        tags: vec![],
        protocol: ListenerProtocol::Http,
        protocol_port: 80,
        connection_limit: -1,
        default_pool_id: Some(pool.id),
        insert_headers: BTreeMap::new(),
        default_tls_container_ref: None,
        sni_container_refs: vec![],
        client_ca_tls_container_ref: None,
        client_authentication: ClientAuthentication::None,
        client_crl_container_ref: None,
        timeout_client_data: 50000,
        timeout_member_connect: 5000,
        timeout_member_data: 50000,
        timeout_tcp_inspect: 0,
        allowed_cidrs: vec![],
        tls_ciphers: None,
        tls_versions: None,
        alpn_protocols: None,
        hsts_max_age: None,
        hsts_include_subdomains: false,
        hsts_preload: false,
    };
    let members = (0..n_members)
        .map(|i| Member {
            id: Uuid::new_v4(),
            project_id: "p".into(),
            loadbalancer_id: lb_id,
            pool_id: pool.id,
            name: None,
            admin_state_up: true,
            provisioning_status: ProvisioningStatus::Active,
            operating_status: OperatingStatus::Offline,
            created_at: now,
            updated_at: None,
            tags: vec![],
            address: format!("198.18.3.{}", i + 2).parse().unwrap(),
            protocol_port: 8080,
            weight: 1,
            backup: false,
            subnet_id: None,
            monitor_address: None,
            monitor_port: None,
            request_sriov: false,
            vnic_type: "normal".into(),
        })
        .collect();
    let hm = if monitored {
        vec![HealthMonitor {
            id: Uuid::new_v4(),
            project_id: "p".into(),
            loadbalancer_id: lb_id,
            pool_id: pool.id,
            name: None,
            admin_state_up: true,
            provisioning_status: ProvisioningStatus::Active,
            operating_status: OperatingStatus::Offline,
            created_at: now,
            updated_at: None,
            tags: vec![],
            kind: HealthMonitorType::Http,
            delay: 1,
            timeout: 1,
            max_retries: 2,
            max_retries_down: 2,
            http_method: None,
            url_path: None,
            expected_codes: None,
            http_version: None,
            domain_name: None,
        }]
    } else {
        vec![]
    };
    Lab {
        lb,
        listener,
        pool,
        members,
        hm,
    }
}

impl Lab {
    pub fn graph(&self) -> GraphRef<'_> {
        GraphRef {
            load_balancer: &self.lb,
            listeners: std::slice::from_ref(&self.listener),
            pools: std::slice::from_ref(&self.pool),
            members: &self.members,
            health_monitors: &self.hm,
        }
    }

    /// A heartbeat in which member i has status `members[i]`.
    pub fn heartbeat(&self, vm: &str, members: &[MemberStatus], requests: u64) -> Heartbeat {
        let pool_up = members
            .iter()
            .any(|s| matches!(s, MemberStatus::Up | MemberStatus::NoCheck));
        Heartbeat {
            load_balancer_id: self.lb.id.to_string(),
            vm_id: vm.into(),
            seq: 1,
            sent_at: 0,
            version: Some(1),
            haproxy_up: true,
            stats: Stats {
                listeners: vec![ListenerStats {
                    id: self.listener.id.to_string(),
                    status: ListenerStatus::Open,
                    counters: Counters {
                        requests,
                        total_connections: requests,
                        ..Default::default()
                    },
                }],
                pools: vec![PoolStats {
                    id: self.pool.id.to_string(),
                    listener_id: self.listener.id.to_string(),
                    status: if pool_up {
                        PoolStatus::Up
                    } else {
                        PoolStatus::Down
                    },
                    counters: Counters::default(),
                    members: self
                        .members
                        .iter()
                        .zip(members)
                        .map(|(m, s)| MemberStats {
                            id: m.id.to_string(),
                            status: *s,
                            counters: Counters::default(),
                        })
                        .collect(),
                }],
            },
        }
    }
}
