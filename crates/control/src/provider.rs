//! The flow provider: turns the store's jobs (the API's provider interface) into flow runs and
//! settles each job when its run is final. Also the store side of the LB flows
//! ([`StoreBackend`]): the desired state comes from the stored graph, and the LB VMs the flows
//! record become `lbvm` documents (the amphora API and the health manager read them).
//!
//! Crash safety: a job stays `running` under a lease while its run executes. The run is found
//! again by its `external_ref` (the job id), so re-claiming a job never starts a second run; a
//! run that is final but whose job is still open (crash between the two) is settled again, which
//! is idempotent.

use std::net::IpAddr;
use std::time::Duration;

use async_trait::async_trait;
use klb_flow::lb::{LbBackend, LbEnv, LbInput, LbResources, ListenerPort, VipSpec, Vm, kind};
use klb_flow::{Engine, FinishHook, FlowError, RunRecord, RunRequest, RunState, StepError};
use klb_model::{Kind, LbVm, LbVmStatus, ListenerProtocol, ProvisioningStatus};
use klb_store::{Document, Job, JobOp, ListQuery, Outcome, Store, StoreError};
use tokio::sync::watch;
use uuid::Uuid;

use crate::desired::{self, DataPlane, Graph, VmPlan};

/// Kind of the document recording an LB's cloud resources (id = load balancer id).
pub const RESOURCES_KIND: &str = "lbresources";

/// Job payload key that turns an LB update into a scale-out.
pub const SCALE_OUT: &str = "scale_out";

/// The LB VM record id of a compute server (the amphora id the API shows).
pub fn vm_record_id(server_id: &str) -> Uuid {
    Uuid::parse_str(server_id).unwrap_or_else(|_| {
        // Non-UUID server ids (other clouds): a stable id derived from the text.
        let mut h: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
        for b in server_id.bytes() {
            h ^= u128::from(b);
            h = h.wrapping_mul(0x0000_0000_0100_0000_0000_0000_0000_013b);
        }
        Uuid::from_u128(h)
    })
}

/// Settings of the provider.
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    /// LB VMs per new load balancer (`lb_vm_count`).
    pub vm_count: u32,
    /// Largest active-active set (`max_lb_vms`).
    pub max_vms: u32,
    /// Network of VIPs when the LB names none (the local cloud's VIP network).
    pub default_vip_network: String,
    /// How long a claimed job is held before another worker may take it over.
    pub job_lease: Duration,
    /// Poll period when no wake-up arrives.
    pub poll_interval: Duration,
}

/// Claims jobs and submits flow runs.
pub struct FlowProvider {
    store: Store,
    engine: Engine<LbEnv>,
    config: ProviderConfig,
    owner: String,
}

impl FlowProvider {
    /// A provider feeding `engine` (whose finish hook must be a [`SettleHook`]).
    pub fn new(store: Store, engine: Engine<LbEnv>, config: ProviderConfig) -> Self {
        FlowProvider {
            store,
            engine,
            config,
            owner: format!("provider-{}", Uuid::new_v4()),
        }
    }

    /// Runs until `shutdown` turns true.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let wake = self.store.jobs_ready();
        loop {
            loop {
                match self
                    .store
                    .claim_job(&self.owner, self.config.job_lease)
                    .await
                {
                    Ok(Some(job)) => {
                        if let Err(err) = self.dispatch(&job).await {
                            tracing::warn!(job_id = %job.id, error = %err, "job dispatch failed");
                        }
                    }
                    Ok(None) => break,
                    Err(err) => {
                        tracing::warn!(error = %err, "claiming jobs failed");
                        break;
                    }
                }
            }
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(self.config.poll_interval) => {}
                _ = shutdown.changed() => {}
            }
            if *shutdown.borrow() {
                return;
            }
        }
    }

    /// Starts (or finds) the run of `job`.
    async fn dispatch(&self, job: &Job) -> Result<(), DispatchError> {
        let runs = self.engine.db().runs_for_key(&job.loadbalancer_id).await?;
        if let Some(run) = runs
            .iter()
            .find(|r| r.external_ref.as_deref() == Some(job.id.as_str()))
        {
            if run.state.is_final() {
                // Crash between the run's end and the job's settlement.
                settle(&self.store, run).await?;
            }
            return Ok(());
        }
        let mut request = self.request_for(job).await?;
        request.external_ref = Some(job.id.clone());
        tracing::info!(job_id = %job.id, flow = %request.kind, lb_id = %job.loadbalancer_id, "starting flow");
        self.engine.submit(request).await?;
        Ok(())
    }

    async fn request_for(&self, job: &Job) -> Result<RunRequest, DispatchError> {
        let lb_id = job.loadbalancer_id.as_str();
        let graph_docs = self.store.graph(lb_id).await?;
        let listeners = listener_ports(&graph_docs)?;
        let resources = recorded(&self.store, lb_id).await?;
        let n_vms = resources.as_ref().map_or(0, |r| r.vms.len() as u32);
        let is_lb = job.target_kind == Kind::LoadBalancer.as_str();
        Ok(match job.op {
            JobOp::Create if is_lb => {
                let lb = Graph::from_documents(lb_id, &graph_docs)?.load_balancer;
                let vip = VipSpec {
                    network_id: lb
                        .vip_network_id
                        .map(|id| id.to_string())
                        .unwrap_or_else(|| self.config.default_vip_network.clone()),
                    subnet_id: lb.vip_subnet_id.map(|id| id.to_string()),
                    address: lb.vip_address,
                };
                LbInput::create(lb_id, vip, listeners, self.config.vm_count)
                    .request(kind::CREATE_LB)
            }
            JobOp::Delete if is_lb => LbInput::delete(lb_id).request(kind::DELETE_LB),
            JobOp::Failover if is_lb => {
                let mut input = LbInput::failover(lb_id, 0);
                input.vm_indices = (0..n_vms.max(1)).collect();
                input.request(kind::FAILOVER_VM)
            }
            JobOp::Failover => {
                // One LB VM (the health manager's request): find its index.
                let index = resources
                    .as_ref()
                    .and_then(|r| {
                        r.vms
                            .iter()
                            .find(|vm| vm_record_id(&vm.server_id).to_string() == job.target_id)
                    })
                    .map(|vm| vm.index)
                    .ok_or_else(|| {
                        DispatchError::Invalid(format!("LB VM {} is not recorded", job.target_id))
                    })?;
                LbInput::failover(lb_id, index).request(kind::FAILOVER_VM)
            }
            JobOp::Update if is_lb && payload_action(job) == Some(SCALE_OUT) => {
                let to = (n_vms + 1).min(self.config.max_vms.max(n_vms));
                let mut input = LbInput::scale_out(lb_id, n_vms, to);
                input.listeners = listeners;
                input.request(kind::SCALE_OUT_LB)
            }
            // Every other change (LB update, any child create/update/delete, member batch)
            // pushes the whole desired state and re-syncs the listener ports.
            _ => LbInput::update(lb_id, listeners).request(kind::UPDATE_LB),
        })
    }
}

fn payload_action(job: &Job) -> Option<&'static str> {
    let payload: serde_json::Value = serde_json::from_str(job.payload.as_deref()?).ok()?;
    (payload.get("action")?.as_str()? == SCALE_OUT).then_some(SCALE_OUT)
}

fn listener_ports(docs: &[Document]) -> Result<Vec<ListenerPort>, StoreError> {
    let mut ports = Vec::new();
    for doc in docs.iter().filter(|d| d.kind == Kind::Listener.as_str()) {
        if doc.status() == Some(ProvisioningStatus::PendingDelete) {
            continue;
        }
        let listener: klb_model::Listener = doc.decode()?;
        let udp = matches!(
            listener.protocol,
            ListenerProtocol::Udp | ListenerProtocol::Sctp
        );
        ports.push(ListenerPort {
            udp,
            port: listener.protocol_port,
        });
    }
    Ok(ports)
}

async fn recorded(store: &Store, lb_id: &str) -> Result<Option<LbResources>, StoreError> {
    let Some(doc) = store.get(RESOURCES_KIND, lb_id).await? else {
        return Ok(None);
    };
    Ok(serde_json::from_str(&doc.body).ok())
}

/// Why a job could not be started.
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Flow(#[from] FlowError),
    #[error(transparent)]
    Desired(#[from] desired::DesiredError),
    #[error("{0}")]
    Invalid(String),
}

/// Settles the store job of a final run.
pub struct SettleHook {
    store: Store,
}

impl SettleHook {
    /// A hook settling jobs in `store`.
    pub fn new(store: Store) -> Self {
        SettleHook { store }
    }
}

#[async_trait]
impl FinishHook<LbEnv> for SettleHook {
    async fn finished(&self, _env: &LbEnv, run: &RunRecord) -> Result<(), FlowError> {
        settle(&self.store, run)
            .await
            .map_err(|e| FlowError::Hook(e.to_string()))
    }
}

async fn settle(store: &Store, run: &RunRecord) -> Result<(), StoreError> {
    let Some(job_id) = run.external_ref.as_deref() else {
        return Ok(());
    };
    let Some(job) = store
        .jobs_of(&run.key)
        .await?
        .into_iter()
        .find(|j| j.id == job_id)
    else {
        return Ok(()); // Already settled.
    };
    let outcome = match run.state {
        RunState::Completed => Outcome::Success,
        _ => Outcome::Failed(
            run.reason
                .clone()
                .unwrap_or_else(|| format!("flow {} failed", run.kind)),
        ),
    };
    tracing::info!(job_id, flow = %run.kind, state = run.state.as_str(), "settling job");
    store.settle_job(&job, outcome).await
}

/// The store side of the LB flows.
pub struct StoreBackend {
    store: Store,
    data_plane: DataPlane,
}

impl StoreBackend {
    /// A backend over `store` with the operator's data-plane settings.
    pub fn new(store: Store, data_plane: DataPlane) -> Self {
        StoreBackend { store, data_plane }
    }
}

fn step_error(e: impl std::fmt::Display) -> StepError {
    StepError::retry(e.to_string())
}

fn plan_of(vm: &Vm) -> VmPlan {
    VmPlan {
        id: vm_record_id(&vm.server_id).to_string(),
        index: vm.index,
        name: vm.name.clone(),
        l3_ip: vm.l3_ip,
    }
}

#[async_trait]
impl LbBackend for StoreBackend {
    async fn desired_state(
        &self,
        lb_id: &str,
        vip: IpAddr,
        vm: &Vm,
        vms: &[Vm],
    ) -> Result<klb_proto::DesiredState, StepError> {
        let docs = self.store.graph(lb_id).await.map_err(step_error)?;
        let mut graph = Graph::from_documents(lb_id, &docs).map_err(step_error)?;
        graph.load_balancer.vip_address = Some(vip);
        // A new version per push; pushes of one LB are serialized by the flow engine.
        let version = chrono::Utc::now().timestamp_micros().max(1) as u64;
        let peers: Vec<VmPlan> = vms.iter().map(plan_of).collect();
        desired::build(&graph, version, &plan_of(vm), &peers, &self.data_plane)
            .map_err(|e| StepError::fatal(e.to_string()))
    }

    async fn record(&self, lb_id: &str, resources: &LbResources) -> Result<(), StepError> {
        let lb_uuid = Uuid::parse_str(lb_id).map_err(step_error)?;
        let body = serde_json::to_string(resources).map_err(step_error)?;
        let mut tx = self.store.begin().await.map_err(step_error)?;
        match tx
            .get_for_update(RESOURCES_KIND, lb_id)
            .await
            .map_err(step_error)?
        {
            Some(mut doc) => {
                doc.body = body;
                tx.update(&mut doc).await.map_err(step_error)?;
            }
            None => {
                tx.insert(&resources_doc(lb_id, body))
                    .await
                    .map_err(step_error)?;
            }
        }
        let existing = tx
            .list(&ListQuery {
                kind: Kind::LbVm.as_str().to_owned(),
                loadbalancer_id: Some(lb_id.to_owned()),
                ..Default::default()
            })
            .await
            .map_err(step_error)?;
        let wanted: Vec<Uuid> = resources
            .vms
            .iter()
            .map(|vm| vm_record_id(&vm.server_id))
            .collect();
        for doc in &existing {
            if !wanted.iter().any(|id| id.to_string() == doc.id) {
                tx.delete(&doc.kind, &doc.id).await.map_err(step_error)?;
            }
        }
        for vm in &resources.vms {
            let record = lb_vm_record(lb_uuid, vm);
            tx.put_resource(&record).await.map_err(step_error)?;
        }
        tx.commit().await.map_err(step_error)
    }

    async fn forget(&self, lb_id: &str) -> Result<(), StepError> {
        let mut tx = self.store.begin().await.map_err(step_error)?;
        tx.delete(RESOURCES_KIND, lb_id).await.map_err(step_error)?;
        let vms = tx
            .list(&ListQuery {
                kind: Kind::LbVm.as_str().to_owned(),
                loadbalancer_id: Some(lb_id.to_owned()),
                include_deleted: true,
                ..Default::default()
            })
            .await
            .map_err(step_error)?;
        for doc in vms {
            tx.delete(&doc.kind, &doc.id).await.map_err(step_error)?;
        }
        tx.commit().await.map_err(step_error)
    }
}

fn resources_doc(lb_id: &str, body: String) -> Document {
    Document {
        kind: RESOURCES_KIND.to_owned(),
        id: lb_id.to_owned(),
        project_id: None,
        loadbalancer_id: None,
        parent_id: None,
        ref_id: None,
        position: 0,
        provisioning_status: None,
        created_at: klb_store::timestamp(chrono::Utc::now()),
        version: 1,
        body,
    }
}

fn lb_vm_record(lb_id: Uuid, vm: &Vm) -> LbVm {
    LbVm {
        id: vm_record_id(&vm.server_id),
        loadbalancer_id: Some(lb_id),
        compute_id: Some(vm.server_id.clone()),
        lb_network_ip: vm.mgmt_ip,
        vrrp_ip: vm.l3_ip,
        ha_ip: None,
        vrrp_port_id: vm.l3_port_id.clone(),
        ha_port_id: None,
        cert_expiration: None,
        cert_busy: false,
        role: None,
        status: if vm.active {
            LbVmStatus::Allocated
        } else {
            LbVmStatus::Booting
        },
        vrrp_interface: None,
        vrrp_id: None,
        vrrp_priority: None,
        cached_zone: None,
        created_at: chrono::Utc::now(),
        updated_at: None,
        image_id: None,
        compute_flavor: None,
    }
}
