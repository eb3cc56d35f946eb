//! Test fixtures shared by this crate's unit tests.

use chrono::Utc;
use klb_model::{LoadBalancer, OperatingStatus, ProvisioningStatus};
use klb_store::Store;
use uuid::Uuid;

/// A load balancer of project `p1` in `status`.
pub fn lb(status: ProvisioningStatus) -> LoadBalancer {
    LoadBalancer {
        id: Uuid::new_v4(),
        project_id: "p1".into(),
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

/// A store on a fresh SQLite file in `dir`.
pub async fn store(dir: &tempfile::TempDir) -> Store {
    Store::open(&format!("sqlite://{}", dir.path().join("k.db").display()))
        .await
        .unwrap()
}
