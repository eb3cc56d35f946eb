//! An in-memory [`LbBackend`] for tests and the bench: desired states are small JSON documents
//! with a version that grows on every build, records live in a map.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use tokio::sync::Mutex;

use super::{LbBackend, LbResources, Vm};
use crate::StepError;
use klb_cloud::DesiredState;

/// The in-memory backend.
#[derive(Debug, Default)]
pub struct FakeBackend {
    version: AtomicU64,
    records: Mutex<BTreeMap<String, LbResources>>,
}

impl FakeBackend {
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
    async fn desired_state(&self, lb_id: &str, vms: &[Vm]) -> Result<DesiredState, StepError> {
        let version = self.version.fetch_add(1, Ordering::Relaxed) + 1;
        Ok(serde_json::json!({
            "version": version,
            "lb_id": lb_id,
            "peers": vms.iter().map(|v| serde_json::json!({
                "index": v.index,
                "name": v.name,
                "address": v.l3_ip,
            })).collect::<Vec<_>>(),
        }))
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
