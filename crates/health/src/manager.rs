//! The health manager loop: every tick, judges each reporting load balancer from its LB VMs'
//! latest heartbeats, stores changed operating statuses and the summed statistics, and asks
//! for a failover of an LB VM that went silent.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use klb_model::{
    HealthMonitor, Kind, LbStats, LbVm, Listener, LoadBalancer, Member, Observed, OperatingStatus,
    Pool, ProvisioningStatus,
};
use klb_store::{Document, JobOp, JobPayload, ListQuery, NewJob, Store, StoreError, WriteTx};
use tokio::sync::watch;
use uuid::Uuid;

use crate::HealthConfig;
use crate::receiver::{Received, Reports};
use crate::status::{self, GraphRef, VmReport};

pub use klb_store::STATS_KIND;

/// The health manager. Spawn [`HealthManager::run`] once per control-plane node.
pub struct HealthManager {
    store: Store,
    reports: Reports,
    config: Arc<HealthConfig>,
    /// When this manager first saw each LB VM record: a VM that has not reported yet is
    /// judged from then (plus [`HealthConfig::boot_grace`]), so a VM still booting is not
    /// failed over.
    first_seen: tokio::sync::Mutex<HashMap<String, Instant>>,
}

impl HealthManager {
    /// A manager over `store` fed by `reports` (shared with the receiver).
    pub fn new(store: Store, reports: Reports, config: Arc<HealthConfig>) -> Self {
        HealthManager {
            store,
            reports,
            config,
            first_seen: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    /// Runs until `shutdown` turns true.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut ticker = tokio::time::interval(self.config.tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = shutdown.changed() => {}
            }
            if *shutdown.borrow() {
                return;
            }
            if let Err(err) = self.tick().await {
                tracing::warn!(error = %err, "health tick failed");
            }
        }
    }

    /// One pass over every load balancer that has reports.
    pub async fn tick(&self) -> Result<(), StoreError> {
        for (lb_id, vms) in self.reports.snapshot().await {
            self.judge(&lb_id, &vms).await?;
        }
        Ok(())
    }

    async fn judge(
        &self,
        lb_id: &str,
        received: &HashMap<String, Received>,
    ) -> Result<(), StoreError> {
        let graph = self.store.graph(lb_id).await?;
        let Some(lb_doc) = graph.iter().find(|d| d.kind == Kind::LoadBalancer) else {
            // Deleted: nothing to judge any more.
            self.reports.forget_lb(lb_id).await;
            return Ok(());
        };
        let lb: LoadBalancer = lb_doc.decode()?;
        let vms: Vec<LbVm> = self
            .store
            .list(&ListQuery {
                kind: Some(Kind::LbVm.into()),
                loadbalancer_id: Some(lb_id.to_owned()),
                ..Default::default()
            })
            .await?
            .iter()
            .map(Document::decode)
            .collect::<Result<_, _>>()?;
        let vm_ids: Vec<String> = if vms.is_empty() {
            // No LB VM records (e.g. a provider that keeps none): judge by who reports.
            received.keys().cloned().collect()
        } else {
            vms.iter().map(|vm| vm.id.to_string()).collect()
        };
        let now = Instant::now();
        let fresh = |r: &Received| now.duration_since(r.at) <= self.config.silent_after;
        let reports: Vec<VmReport<'_>> = vm_ids
            .iter()
            .map(|id| VmReport {
                vm_id: id,
                heartbeat: received.get(id).filter(|r| fresh(r)).map(|r| &r.heartbeat),
            })
            .collect();

        let listeners = decode_kind::<Listener>(&graph, Kind::Listener)?;
        let pools = decode_kind::<Pool>(&graph, Kind::Pool)?;
        let members = decode_kind::<Member>(&graph, Kind::Member)?;
        let health_monitors = decode_kind::<HealthMonitor>(&graph, Kind::HealthMonitor)?;
        let graph = GraphRef {
            load_balancer: &lb,
            listeners: &listeners,
            pools: &pools,
            members: &members,
            health_monitors: &health_monitors,
        };
        let derived = status::derive(graph, &reports);
        self.store_statuses(graph, &derived).await?;
        self.store_stats(lb_id, &status::sum_stats(&reports))
            .await?;

        let first_seen: HashMap<String, Instant> = {
            let mut seen = self.first_seen.lock().await;
            for id in &vm_ids {
                seen.entry(id.clone()).or_insert(now);
            }
            vm_ids
                .iter()
                .filter_map(|id| Some((id.clone(), *seen.get(id)?)))
                .collect()
        };
        if self.config.failover && lb.provisioning_status == ProvisioningStatus::Active {
            let silent = vm_ids.iter().find(|id| match received.get(*id) {
                Some(r) => now.duration_since(r.at) > self.config.silent_after,
                None => first_seen.get(*id).is_some_and(|t| {
                    now.duration_since(*t) > self.config.silent_after + self.config.boot_grace
                }),
            });
            if let Some(vm_id) = silent {
                self.request_failover(&lb, vm_id).await?;
            }
        }
        Ok(())
    }

    /// Writes the statuses that changed, in one transaction.
    async fn store_statuses(
        &self,
        graph: GraphRef<'_>,
        derived: &status::Statuses,
    ) -> Result<(), StoreError> {
        let mut changed = Vec::new();
        changed_statuses(
            std::slice::from_ref(graph.load_balancer),
            derived,
            &mut changed,
        );
        changed_statuses(graph.listeners, derived, &mut changed);
        changed_statuses(graph.pools, derived, &mut changed);
        changed_statuses(graph.members, derived, &mut changed);
        changed_statuses(graph.health_monitors, derived, &mut changed);
        if changed.is_empty() {
            return Ok(());
        }
        let at = now_micros();
        let mut tx = self.store.begin().await?;
        for (kind, id, new) in changed {
            match kind {
                Kind::LoadBalancer => set_status::<LoadBalancer>(&mut tx, id, new, at).await?,
                Kind::Listener => set_status::<Listener>(&mut tx, id, new, at).await?,
                Kind::Pool => set_status::<Pool>(&mut tx, id, new, at).await?,
                Kind::Member => set_status::<Member>(&mut tx, id, new, at).await?,
                Kind::HealthMonitor => set_status::<HealthMonitor>(&mut tx, id, new, at).await?,
                // Only the kinds gathered above can be here.
                Kind::L7Policy | Kind::L7Rule | Kind::LbVm => {}
            }
        }
        tx.commit().await
    }

    async fn store_stats(&self, lb_id: &str, stats: &LbStats) -> Result<(), StoreError> {
        let body = serde_json::to_string(stats).map_err(|source| StoreError::Encode {
            kind: STATS_KIND.to_owned(),
            source,
        })?;
        let mut tx = self.store.begin().await?;
        match tx.get_for_update(STATS_KIND, lb_id).await? {
            Some(mut doc) if doc.body != body => {
                doc.body = body;
                tx.update(&mut doc).await?;
            }
            Some(_) => return Ok(()),
            None => {
                tx.insert(&Document::new(STATS_KIND, lb_id, None, body))
                    .await?;
            }
        }
        tx.commit().await
    }

    /// Moves the LB to PENDING_UPDATE and enqueues a failover job for `vm_id`, unless the LB
    /// changed meanwhile (then the next tick judges again).
    async fn request_failover(&self, lb: &LoadBalancer, vm_id: &str) -> Result<(), StoreError> {
        let mut tx = self.store.begin().await?;
        let Some(mut current) = tx.get_resource::<LoadBalancer>(lb.id).await? else {
            return Ok(());
        };
        if current.provisioning_status != ProvisioningStatus::Active {
            return Ok(());
        }
        current.provisioning_status = ProvisioningStatus::PendingUpdate;
        current.updated_at = Some(chrono::Utc::now());
        tx.put_resource(&current).await?;
        tx.enqueue_job(NewJob {
            loadbalancer_id: lb.id.to_string(),
            op: JobOp::Failover,
            target_kind: Kind::LbVm,
            target_id: vm_id.to_owned(),
            payload: Some(
                JobPayload {
                    reason: Some("heartbeat missed".to_owned()),
                    ..JobPayload::default()
                }
                .to_json(),
            ),
        })
        .await?;
        tx.commit().await?;
        tracing::warn!(lb_id = %lb.id, vm_id, "LB VM silent: failover requested");
        self.reports.forget_vm(&lb.id.to_string(), vm_id).await;
        Ok(())
    }
}

fn decode_kind<T: klb_model::Resource>(
    graph: &[Document],
    kind: Kind,
) -> Result<Vec<T>, StoreError> {
    graph
        .iter()
        .filter(|d| d.kind == kind)
        .map(Document::decode)
        .collect()
}

/// Appends `(kind, id, new status)` for each of `items` whose derived status differs.
fn changed_statuses<T: Observed>(
    items: &[T],
    derived: &status::Statuses,
    out: &mut Vec<(Kind, Uuid, OperatingStatus)>,
) {
    for item in items {
        if let Some(&new) = derived.get(&(T::KIND, item.id()))
            && item.operating_status() != new
        {
            out.push((T::KIND, item.id(), new));
        }
    }
}

/// Sets one resource's operating status (and `updated_at`) inside `tx`, on the version read
/// under the write lock: the API may have changed the object meanwhile. A resource gone or
/// undecodable meanwhile is skipped (the next tick judges again).
async fn set_status<T: Observed>(
    tx: &mut WriteTx,
    id: Uuid,
    new: OperatingStatus,
    at: chrono::DateTime<chrono::Utc>,
) -> Result<(), StoreError> {
    let Some(mut doc) = tx.get_for_update(T::KIND, &id.to_string()).await? else {
        return Ok(());
    };
    let mut value: T = match doc.decode() {
        Ok(v) => v,
        Err(err) => {
            tracing::warn!(kind = T::KIND.as_str(), %id, error = %err, "status not stored");
            return Ok(());
        }
    };
    value.set_operating_status(new, at);
    doc.body = serde_json::to_string(&value).map_err(|source| StoreError::Encode {
        kind: T::KIND.into(),
        source,
    })?;
    tx.update(&mut doc).await
}

#[cfg(test)]
mod tests;

/// Now, at the precision the model serializes (microseconds, like `created_at`).
fn now_micros() -> chrono::DateTime<chrono::Utc> {
    let now = chrono::Utc::now();
    chrono::DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now)
}
