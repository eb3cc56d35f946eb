//! The provider side of the store's `jobs` table: [`JobPump`] claims jobs and submits the
//! matching LB flow run (keyed by the load balancer, `external_ref` = job id); [`SettleJobs`]
//! is the engine's finish hook that settles the job with the run's outcome
//! ([`klb_store::Store::settle_job`]), which moves the graph out of `PENDING_*`.
//!
//! Crash rules: a job whose run was submitted is never submitted twice (the pump looks the run
//! up by `external_ref` first), so the job lease only guards the short claim-to-submit window;
//! a pump that dies there leaves the job to be claimed again when its lease expires. The run's
//! own lease protects the flow; the finish hook is idempotent (a job already settled is gone or
//! `failed`).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use klb_model::Kind;
use klb_store::{Job, JobAction, JobOp, JobPayload, JobState, Outcome, Store};
use tracing::{info, warn};

use klb_cloud::{META_VM_INDEX, ServerFilter};

use crate::lb::{FlowKind, Graph, LbEnv, LbInput, VipSpec};
use crate::{Engine, FinishHook, FlowError, RunRecord, RunRequest, RunState};

/// The runs that carry out `job`, from the load balancer graph as stored now. Usually one; a
/// failover of a whole load balancer is one run per VM, so the VMs are rebuilt one after the
/// other (runs of one LB are serialized) and the others keep serving. Only the last run
/// settles the job (its `external_ref` is the job id; the others get `<job id>#<n>`).
pub async fn requests_for_job(
    store: &Store,
    env: &LbEnv,
    job: &Job,
    vm_count: u32,
    max_vms: u32,
) -> Result<Vec<RunRequest>, FlowError> {
    let lb_id = job.loadbalancer_id.as_str();
    let is_lb = job.target_kind == Kind::LoadBalancer;
    let payload = JobPayload::of(job);
    let mut req = match (job.op, is_lb) {
        (JobOp::Delete, true) => LbInput::delete(lb_id).request(FlowKind::DeleteLb),
        (JobOp::Create, true) => {
            let graph = read_graph(store, env, lb_id)
                .await?
                .ok_or_else(|| FlowError::Input(format!("load balancer {lb_id} not stored")))?;
            let lb = &graph.load_balancer;
            let network_id = lb.vip_network_id.map(|u| u.to_string()).ok_or_else(|| {
                FlowError::Input(format!("load balancer {lb_id} has no VIP network"))
            })?;
            let vip = VipSpec {
                network_id,
                subnet_id: lb.vip_subnet_id.map(|u| u.to_string()),
                address: lb.vip_address,
            };
            LbInput::create(lb_id, vip, graph.listener_ports(), vm_count)
                .with_graph_version(handed_over(&graph))
                .request(FlowKind::CreateLb)
        }
        // One LB VM (the health manager's request): its index from the server's metadata.
        // The amphora API's delete of an LB VM (allowed in ERROR) replaces it too, so the LB
        // keeps its size and no server is orphaned.
        (JobOp::Failover | JobOp::Delete, false) if job.target_kind == Kind::LbVm => {
            let index = vm_index(store, env, &job.target_id).await?;
            LbInput::failover(lb_id, index).request(FlowKind::FailoverVm)
        }
        (JobOp::Update, true) if payload.action == Some(JobAction::ScaleOut) => {
            let servers = env
                .cloud
                .compute
                .find_servers(&ServerFilter::lb(lb_id))
                .await?;
            let n = servers.len() as u32;
            let graph = read_graph(store, env, lb_id).await?;
            let ports = graph.as_deref().map(Graph::listener_ports);
            let version = graph.as_deref().and_then(handed_over);
            if n >= max_vms {
                // Already at the limit: just re-sync (the alarm fires again if load stays).
                LbInput::update(lb_id, ports.unwrap_or_default())
                    .with_graph_version(version)
                    .request(FlowKind::UpdateLb)
            } else {
                let mut input = LbInput::scale_out(lb_id, n, n + 1).with_graph_version(version);
                input.listeners = ports.unwrap_or_default();
                input.request(FlowKind::ScaleOutLb)
            }
        }
        (JobOp::Failover, true) => {
            // A payload {"vm_index": n} replaces one VM (health manager); without one every
            // VM is rebuilt, one run per VM.
            let indices: Vec<u32> = match payload.vm_index {
                Some(i) => vec![i],
                None => (0..vm_count).collect(),
            };
            let n = indices.len();
            return Ok(indices
                .into_iter()
                .enumerate()
                .map(|(k, index)| {
                    let mut req = LbInput::failover(lb_id, index).request(FlowKind::FailoverVm);
                    req.external_ref = Some(if k + 1 == n {
                        job.id.clone()
                    } else {
                        format!("{}#{k}", job.id)
                    });
                    req
                })
                .collect());
        }
        // Everything else changes the configuration: open/close listener ports, push the state.
        _ => {
            let graph = read_graph(store, env, lb_id).await?;
            let ports = graph.as_deref().map(Graph::listener_ports);
            LbInput::update(lb_id, ports.unwrap_or_default())
                .with_graph_version(graph.as_deref().and_then(handed_over))
                .request(FlowKind::UpdateLb)
        }
    };
    req.external_ref = Some(job.id.clone());
    Ok(vec![req])
}

/// The job's one read of its load balancer's graph (`None`: the LB is not stored). A locked
/// graph (see [`Graph::is_locked`]) is handed over to the job's push, which then renders it
/// instead of reading it again.
async fn read_graph(
    store: &Store,
    env: &LbEnv,
    lb_id: &str,
) -> Result<Option<Arc<Graph>>, FlowError> {
    let Some(graph) = Graph::from_documents(&store.graph(lb_id).await?)? else {
        return Ok(None);
    };
    let graph = Arc::new(graph);
    if graph.is_locked() {
        env.graphs.hand_over(graph.clone()).await;
    }
    Ok(Some(graph))
}

/// The version the run input names when `graph` was handed over.
fn handed_over(graph: &Graph) -> Option<i64> {
    graph.is_locked().then_some(graph.version)
}

/// The index of an LB VM record (its server's `klb_vm_index` metadata). When the server is
/// gone (a failover that failed after deleting it, or a server removed behind klb's back),
/// the lowest index no server of the LB holds: the replacement fills the hole instead of the
/// job failing on every health-manager tick.
async fn vm_index(store: &Store, env: &LbEnv, lb_vm_id: &str) -> Result<u32, FlowError> {
    let doc = store
        .get(Kind::LbVm, lb_vm_id)
        .await?
        .ok_or_else(|| FlowError::Input(format!("LB VM {lb_vm_id} is not recorded")))?;
    let vm: klb_model::LbVm = doc.decode()?;
    let server_id = vm
        .compute_id
        .ok_or_else(|| FlowError::Input(format!("LB VM {lb_vm_id} has no server")))?;
    let server = env.cloud.compute.get_server(&server_id).await?;
    let Some(server) = server else {
        let lb_id = vm
            .loadbalancer_id
            .ok_or_else(|| FlowError::Input(format!("LB VM {lb_vm_id} has no load balancer")))?
            .to_string();
        let held: Vec<u32> = env
            .cloud
            .compute
            .find_servers(&ServerFilter::lb(&lb_id))
            .await?
            .iter()
            .filter_map(|s| s.metadata.get(META_VM_INDEX)?.parse().ok())
            .collect();
        let free = (0u32..).find(|i| !held.contains(i)).unwrap_or(0);
        tracing::warn!(%lb_id, server = %server_id, index = free, "the failed LB VM's server is gone: rebuilding the free index");
        return Ok(free);
    };
    server
        .metadata
        .get(META_VM_INDEX)
        .and_then(|i| i.parse().ok())
        .ok_or_else(|| FlowError::Input(format!("server {server_id} has no VM index")))
}

/// Claims jobs from the store and submits their flow runs.
pub struct JobPump {
    store: Store,
    engine: Engine<LbEnv>,
    owner: String,
    /// VMs per new load balancer (`lb_vm_count`).
    vm_count: u32,
    /// Largest active-active set (`max_lb_vms`).
    max_vms: u32,
    /// Job lease; only covers claim-to-submit.
    lease: Duration,
    poll: Duration,
}

impl JobPump {
    /// A pump turning `store`'s jobs into `engine` runs; new LBs get `vm_count` VMs.
    pub fn new(store: Store, engine: Engine<LbEnv>, vm_count: u32) -> Self {
        Self {
            store,
            engine,
            owner: format!("pump-{}", uuid::Uuid::new_v4()),
            vm_count,
            max_vms: vm_count.max(4),
            lease: Duration::from_secs(60),
            poll: Duration::from_millis(500),
        }
    }

    /// Sets how long a claimed job is held before another node may claim it again.
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// Sets the scale-out limit (`max_lb_vms`).
    pub fn with_max_vms(mut self, max_vms: u32) -> Self {
        self.max_vms = max_vms;
        self
    }

    /// Claim one job and submit its run(s). Returns whether a job was claimed.
    pub async fn pump_once(&self) -> Result<bool, FlowError> {
        let Some(job) = self.store.claim_job(&self.owner, self.lease).await? else {
            return Ok(false);
        };
        let env = self.engine.env().clone();
        match requests_for_job(&self.store, &env, &job, self.vm_count, self.max_vms).await {
            Ok(requests) => {
                for req in requests {
                    let reference = req.external_ref.clone().unwrap_or_default();
                    // Submitted before (the job's lease expired while its runs go on, or the
                    // pump died between two submits): each piece goes in exactly once.
                    if !self
                        .engine
                        .db()
                        .runs_by_external_ref(&reference)
                        .await?
                        .is_empty()
                    {
                        continue;
                    }
                    let run = self.engine.submit(req).await?;
                    info!(job = %job.id, run = %run, lb = %job.loadbalancer_id, "job submitted as flow run");
                }
            }
            Err(e) => {
                // The job cannot become a flow (e.g. no VIP network): fail it visibly.
                warn!(job = %job.id, error = %e, "job cannot be run");
                self.store
                    .settle_job(&job, Outcome::Failed(e.to_string()))
                    .await?;
            }
        }
        Ok(true)
    }

    /// Pump until `shutdown` resolves.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), FlowError> {
        let ready = self.store.jobs_ready();
        tokio::pin!(shutdown);
        loop {
            match self.pump_once().await {
                Ok(true) => continue,
                Ok(false) => {}
                Err(e) => warn!(error = %e, "job pump"),
            }
            tokio::select! {
                _ = &mut shutdown => return Ok(()),
                _ = ready.notified() => {}
                _ = tokio::time::sleep(self.poll) => {}
            }
        }
    }
}

/// The engine's finish hook: settle the run's job (if it came from one).
pub struct SettleJobs {
    /// Where the jobs live.
    pub store: Store,
}

#[async_trait]
impl FinishHook<LbEnv> for SettleJobs {
    async fn finished(&self, _env: &LbEnv, run: &RunRecord) -> Result<(), FlowError> {
        // Runs without a reference, and the leading runs of a multi-run job (`<id>#<n>`),
        // settle nothing.
        let Some(job_id) = run.external_ref.as_deref().filter(|r| !r.contains('#')) else {
            return Ok(());
        };
        let jobs = self.store.jobs_of(&run.key).await?;
        let Some(job) = jobs.into_iter().find(|j| j.id == job_id) else {
            return Ok(()); // Settled as success before (the row is gone).
        };
        if job.state == JobState::Failed {
            return Ok(());
        }
        let reason = || run.reason.clone().unwrap_or_else(|| "flow failed".into());
        let outcome = match run.state {
            RunState::Completed => Outcome::Success,
            // A PPS scale-out the cloud refused (e.g. no host left under anti-affinity) was
            // reverted: the LB serves on its VMs as before, so it is not put in ERROR.
            RunState::Failed if FlowKind::parse(&run.kind) == Some(FlowKind::ScaleOutLb) => {
                tracing::warn!(lb = %run.key, reason = %reason(), "scale-out refused and reverted; the load balancer keeps its VMs");
                Outcome::Reverted(reason())
            }
            _ => Outcome::Failed(reason()),
        };
        Ok(self.store.settle_job(&job, outcome).await?)
    }
}

#[cfg(test)]
mod tests {
    use crate::lb::ListenerPort;

    #[test]
    fn listener_ports_keep_their_stored_shape() {
        let udp = serde_json::to_string(&ListenerPort::udp(53)).unwrap();
        assert_eq!(udp, r#"{"udp":true,"port":53}"#);
        let back: ListenerPort = serde_json::from_str(r#"{"udp":false,"port":80}"#).unwrap();
        assert_eq!(back, ListenerPort::tcp(80));
    }
}
