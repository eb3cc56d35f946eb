//! An in-memory [`LbBackend`] for tests and the bench: desired states carry the VM identity,
//! peers and a version that grows on every build (no listeners), records live in a map.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use tokio::sync::Mutex;

use super::{Graph, LbBackend, LbResources, Vm};
use crate::StepError;
use klb_proto::DesiredState;
use klb_proto::{Global, Peer, VmIdentity};
use std::net::IpAddr;

/// The in-memory backend.
#[derive(Debug, Default)]
pub struct FakeBackend {
    version: AtomicU64,
    records: Mutex<BTreeMap<String, LbResources>>,
}

impl FakeBackend {
    /// An empty backend.
    pub fn new() -> Self {
        Self::default()
    }

    /// What was recorded for an LB.
    pub async fn record_of(&self, lb_id: &str) -> Option<LbResources> {
        self.records.lock().await.get(lb_id).cloned()
    }
}

#[async_trait]
impl LbBackend for FakeBackend {
    async fn desired_states(
        &self,
        lb_id: &str,
        _graph: Option<&Graph>,
        vip: IpAddr,
        vms: &[Vm],
    ) -> Result<Vec<DesiredState>, StepError> {
        let version = self.version.fetch_add(1, Ordering::Relaxed) + 1;
        Ok(vms
            .iter()
            .map(|vm| state_of(lb_id, vip, vm, vms, version))
            .collect())
    }

    async fn record(&self, lb_id: &str, resources: &LbResources) -> Result<(), StepError> {
        self.records
            .lock()
            .await
            .insert(lb_id.to_string(), resources.clone());
        Ok(())
    }

    async fn forget(&self, lb_id: &str) -> Result<(), StepError> {
        self.records.lock().await.remove(lb_id);
        Ok(())
    }
}

/// The fake's desired state for `vm`: its identity, the peers, no listeners.
fn state_of(lb_id: &str, vip: IpAddr, vm: &Vm, vms: &[Vm], version: u64) -> DesiredState {
    DesiredState {
        protocol: klb_proto::PROTOCOL_VERSION,
        version,
        load_balancer_id: lb_id.to_string(),
        admin_state_up: true,
        vip,
        additional_vips: Vec::new(),
        vm: VmIdentity {
            id: vm.server_id.clone(),
            index: vm.index,
            name: vm.name.clone(),
        },
        peers: vms
            .iter()
            .filter_map(|v| {
                v.l3_ip.map(|address| Peer {
                    name: v.name.clone(),
                    address,
                    port: 1024,
                })
            })
            .collect(),
        listeners: Vec::new(),
        pools: Vec::new(),
        bgp: None,
        global: Global::default(),
        certificates: Vec::new(),
        heartbeat_key: None,
    }
}
