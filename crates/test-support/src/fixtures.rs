//! Model builders: one per resource, with the defaults klb's tests share (Octavia's defaults
//! where it has them, `198.18.0.0/15` lab addresses). Children take their parent so project
//! and load balancer ids always agree; change anything else with struct update syntax.

use std::collections::BTreeMap;

use chrono::Utc;
use klb_model::{
    ClientAuthentication, HealthMonitor, HealthMonitorType, LbAlgorithm, LbVm, LbVmStatus,
    Listener, ListenerProtocol, LoadBalancer, Member, OperatingStatus, Pool, PoolProtocol,
    ProvisioningStatus,
};
use uuid::Uuid;

/// A load balancer of `project_id` in `status`: no VIP, provider `klb`, operating status
/// `OFFLINE`, created now.
pub fn load_balancer(project_id: &str, status: ProvisioningStatus) -> LoadBalancer {
    LoadBalancer {
        id: Uuid::new_v4(),
        project_id: project_id.into(),
        name: None,
        description: None,
        admin_state_up: true,
        provisioning_status: status,
        operating_status: OperatingStatus::Offline,
        created_at: Utc::now(),
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
    }
}

/// An HTTP listener on port 80 of `lb` in `status`, with Octavia's default timeouts and no
/// default pool.
pub fn listener(lb: &LoadBalancer, status: ProvisioningStatus) -> Listener {
    Listener {
        id: Uuid::new_v4(),
        project_id: lb.project_id.clone(),
        loadbalancer_id: lb.id,
        name: None,
        description: None,
        admin_state_up: true,
        provisioning_status: status,
        operating_status: OperatingStatus::Offline,
        created_at: Utc::now(),
        updated_at: None,
        tags: vec![],
        protocol: ListenerProtocol::Http,
        protocol_port: 80,
        connection_limit: -1,
        default_pool_id: None,
        insert_headers: BTreeMap::new(),
        default_tls_container_ref: None,
        sni_container_refs: vec![],
        client_ca_tls_container_ref: None,
        client_authentication: ClientAuthentication::None,
        client_crl_container_ref: None,
        timeout_client_data: 50_000,
        timeout_member_connect: 5_000,
        timeout_member_data: 50_000,
        timeout_tcp_inspect: 0,
        allowed_cidrs: vec![],
        tls_ciphers: None,
        tls_versions: None,
        alpn_protocols: None,
        hsts_max_age: None,
        hsts_include_subdomains: false,
        hsts_preload: false,
    }
}

/// An HTTP, round-robin pool of `lb` in `status`, without TLS or session persistence.
pub fn pool(lb: &LoadBalancer, status: ProvisioningStatus) -> Pool {
    Pool {
        id: Uuid::new_v4(),
        project_id: lb.project_id.clone(),
        loadbalancer_id: lb.id,
        name: None,
        description: None,
        admin_state_up: true,
        provisioning_status: status,
        operating_status: OperatingStatus::Offline,
        created_at: Utc::now(),
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
    }
}

/// A member `198.18.0.10:80` (weight 1) of `pool` in `status`, operating status `NO_MONITOR`.
pub fn member(pool: &Pool, status: ProvisioningStatus) -> Member {
    Member {
        id: Uuid::new_v4(),
        project_id: pool.project_id.clone(),
        loadbalancer_id: pool.loadbalancer_id,
        pool_id: pool.id,
        name: None,
        admin_state_up: true,
        provisioning_status: status,
        operating_status: OperatingStatus::NoMonitor,
        created_at: Utc::now(),
        updated_at: None,
        tags: vec![],
        address: [198, 18, 0, 10].into(),
        protocol_port: 80,
        weight: 1,
        backup: false,
        subnet_id: None,
        monitor_address: None,
        monitor_port: None,
        request_sriov: false,
        vnic_type: "normal".into(),
    }
}

/// An HTTP health monitor of `pool` in `status`: every second, 1 s timeout, 2 retries up and
/// down, Octavia's defaults for method, path and codes (`None`).
pub fn health_monitor(pool: &Pool, status: ProvisioningStatus) -> HealthMonitor {
    HealthMonitor {
        id: Uuid::new_v4(),
        project_id: pool.project_id.clone(),
        loadbalancer_id: pool.loadbalancer_id,
        pool_id: pool.id,
        name: None,
        admin_state_up: true,
        provisioning_status: status,
        operating_status: OperatingStatus::Offline,
        created_at: Utc::now(),
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
    }
}

/// An LB VM (amphora) record of `loadbalancer_id` in `status`, with no server, address, role
/// or image yet.
pub fn lb_vm(loadbalancer_id: Option<Uuid>, status: LbVmStatus) -> LbVm {
    LbVm {
        id: Uuid::new_v4(),
        loadbalancer_id,
        compute_id: None,
        lb_network_ip: None,
        vrrp_ip: None,
        ha_ip: None,
        vrrp_port_id: None,
        ha_port_id: None,
        cert_expiration: None,
        cert_busy: false,
        role: None,
        status,
        vrrp_interface: None,
        vrrp_id: None,
        vrrp_priority: None,
        cached_zone: None,
        created_at: Utc::now(),
        updated_at: None,
        image_id: None,
        compute_flavor: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn children_belong_to_their_parents() {
        let lb = load_balancer("p9", ProvisioningStatus::Active);
        let l = listener(&lb, ProvisioningStatus::PendingCreate);
        let p = pool(&lb, ProvisioningStatus::Active);
        let m = member(&p, ProvisioningStatus::Active);
        let hm = health_monitor(&p, ProvisioningStatus::Active);
        assert_eq!((l.project_id.as_str(), l.loadbalancer_id), ("p9", lb.id));
        assert_eq!(l.provisioning_status, ProvisioningStatus::PendingCreate);
        assert_eq!((p.project_id.as_str(), p.loadbalancer_id), ("p9", lb.id));
        assert_eq!((m.loadbalancer_id, m.pool_id), (lb.id, p.id));
        assert_eq!((hm.loadbalancer_id, hm.pool_id), (lb.id, p.id));
        assert_eq!(m.project_id, "p9");
        // Every call is a new object.
        assert_ne!(lb.id, load_balancer("p9", ProvisioningStatus::Active).id);
        let vm = lb_vm(Some(lb.id), LbVmStatus::Allocated);
        assert_eq!(
            (vm.loadbalancer_id, vm.status),
            (Some(lb.id), LbVmStatus::Allocated)
        );
    }
}
