//! The load-balancer flows: create (in the seed's order), delete, update, failover of one VM,
//! scale-out and scale-in, as lists of steps over the cloud traits.
//!
//! Every step finds what it may have made before by deterministic name ([`klb_cloud::names`])
//! or by the `klb_lb_id` server metadata, so re-running it after a crash adopts instead of
//! duplicating; every revert deletes by the same names, so it also cleans up after a step
//! that crashed half-way.

mod graph;
mod steps;

pub mod fake;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use klb_cloud::{Cloud, Protocol};
use klb_proto::DesiredState;

use crate::{Flow, RunRequest, StepError};

pub use graph::{Graph, Graphs};
pub use steps::*;

/// The LB flows. The engine is generic and keys flows by name; this is the LB family's closed
/// set, and [`FlowKind::as_str`] the name each run record stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FlowKind {
    /// The seed's "Create Loadbalancer".
    CreateLb,
    /// Delete every cloud resource of an LB.
    DeleteLb,
    /// Child changes: security group, then the desired state on every VM.
    UpdateLb,
    /// Rebuild one LB VM.
    FailoverVm,
    /// Add LB VMs (PPS alarm).
    ScaleOutLb,
    /// Remove the highest LB VMs.
    ScaleInLb,
}

impl FlowKind {
    /// Every LB flow.
    pub const ALL: [FlowKind; 6] = [
        FlowKind::CreateLb,
        FlowKind::DeleteLb,
        FlowKind::UpdateLb,
        FlowKind::FailoverVm,
        FlowKind::ScaleOutLb,
        FlowKind::ScaleInLb,
    ];

    /// The name in run records (`RunRecord::kind`) and in the engine's flow table.
    pub const fn as_str(self) -> &'static str {
        match self {
            FlowKind::CreateLb => "create_lb",
            FlowKind::DeleteLb => "delete_lb",
            FlowKind::UpdateLb => "update_lb",
            FlowKind::FailoverVm => "failover_vm",
            FlowKind::ScaleOutLb => "scale_out_lb",
            FlowKind::ScaleInLb => "scale_in_lb",
        }
    }

    /// The kind a run record names; `None` for a flow outside the LB family.
    pub fn parse(name: &str) -> Option<FlowKind> {
        FlowKind::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

/// Operator configuration the LB flows need (lifted from the seed's `[kinx_haproxy]`).
#[derive(Debug, Clone)]
pub struct LbConfig {
    /// `image_id`.
    pub image_id: String,
    /// `base_flavor_id`.
    pub flavor_id: String,
    /// `loadbalancer_instance_volume_size` (GiB); `None` boots from the image.
    pub boot_volume_gib: Option<u32>,
    /// `availibility_zone`.
    pub availability_zone: Option<String>,
    /// `kinx_office_ip`: operators' admin access (SSH and the agent port).
    pub office_cidr: Option<IpNet>,
    /// `agent_port`.
    pub agent_port: u16,
    /// HAProxy `peers` port between the LB VMs (stick tables in active-active), on the L3
    /// network.
    pub peer_port: u16,
    /// `lb_mgmt_net_id` or `lb_mgmt_net_name`.
    pub mgmt_network: String,
    /// `lb_l3_net_id` or `lb_l3_net_name`.
    pub l3_network: String,
    /// `ceilometer_pps_threshold`.
    pub pps_threshold: u64,
    /// `ceilometer_period` (seconds).
    pub alarm_period_secs: u32,
    /// `ceilometer_evaluation_periods`.
    pub alarm_evaluation_periods: u32,
    /// klb's alarm webhook URL (may carry a token: never logged).
    pub alarm_webhook_url: String,
    /// `lb_vm_count` default.
    pub default_vm_count: u32,
    /// Where agents send heartbeats (`lb_api_agent_addr:lb_api_agent_port`), for user data.
    pub heartbeat_endpoint: String,
    /// Time a best-effort agent call (drain before failover/scale-in) may take.
    pub drain_timeout: Duration,
}

impl LbConfig {
    /// A config for tests and the bench, with the seed's values where they apply.
    pub fn example(mgmt_network: &str, l3_network: &str) -> Self {
        Self {
            image_id: "7de0af35-14d3-4771-8af5-48cbce75ea1d".into(),
            flavor_id: "880a8c79-6967-4c27-8ef7-1fe092bbeeda".into(),
            boot_volume_gib: Some(50),
            availability_zone: Some("lbaas-az".into()),
            office_cidr: Some("198.18.200.0/24".parse().expect("valid CIDR")),
            agent_port: 62000,
            peer_port: 1025,
            mgmt_network: mgmt_network.into(),
            l3_network: l3_network.into(),
            pps_threshold: 20000,
            alarm_period_secs: 60,
            alarm_evaluation_periods: 3,
            alarm_webhook_url: "https://127.0.0.1:9876/v1/alarms".into(),
            default_vm_count: 2,
            heartbeat_endpoint: "198.18.0.1:6543".into(),
            drain_timeout: Duration::from_millis(100),
        }
    }
}

/// One LB VM as the flows see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vm {
    /// Index within the LB (0-based; names and metadata use it).
    pub index: u32,
    /// The cloud server id.
    pub server_id: String,
    /// The server's name (deterministic, see klb-cloud's `names`).
    pub name: String,
    /// Address on the management network (agent API, heartbeats).
    pub mgmt_ip: Option<IpAddr>,
    /// Address on the L3 network (BGP sessions, ECMP next hop).
    pub l3_ip: Option<IpAddr>,
    /// The L3 port (carries the VIP as an allowed-address pair).
    pub l3_port_id: Option<String>,
    /// Whether it serves (false while drained or being replaced).
    pub active: bool,
}

/// What the flows record about a load balancer (the seed's "storing ... to vlb-api").
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LbResources {
    /// The LB VMs.
    pub vms: Vec<Vm>,
    /// The PPS alarm, once made.
    pub alarm_id: Option<String>,
    /// The VIP, once allocated.
    pub vip_ip: Option<IpAddr>,
}

/// The store side of the LB flows: builds the desired state agents get, records resources.
/// The real implementation sits on `klb-store` and `klb-proto`; [`fake::FakeBackend`] is
/// in memory.
#[async_trait]
pub trait LbBackend: Send + Sync {
    /// The whole desired state of `lb_id` for the agent of each of `vms` (in that order), given
    /// the VIP; `vms` are also each other's peers (BGP AS numbers derive from the indices).
    /// `graph` is the one this job's pump read ([`Graphs`]); without it the backend reads the
    /// graph once. One graph and one fetch of its certificates serve every VM, and all states
    /// of one push carry the same `version`.
    async fn desired_states(
        &self,
        lb_id: &str,
        graph: Option<&Graph>,
        vip: IpAddr,
        vms: &[Vm],
    ) -> Result<Vec<DesiredState>, StepError>;
    /// Record the LB's VMs and alarm (idempotent, last write wins).
    async fn record(&self, lb_id: &str, resources: &LbResources) -> Result<(), StepError>;
    /// Drop what was recorded (the LB is gone).
    async fn forget(&self, lb_id: &str) -> Result<(), StepError>;
}

/// What the LB flows' steps use.
#[derive(Clone)]
pub struct LbEnv {
    /// The cloud's capabilities.
    pub cloud: Cloud,
    /// Operator options (the seed's `[kinx_haproxy]`).
    pub config: LbConfig,
    /// Where LB records and desired states are read and written.
    pub backend: Arc<dyn LbBackend>,
    /// Graphs the job pump read, on their way to the same job's push.
    pub graphs: Graphs,
}

/// A listener port to open in the security group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerPort {
    /// `Tcp` or `Udp` (HTTP/HTTPS/TERMINATED_HTTPS/PROXY listeners are TCP). Stored in run
    /// inputs as `"udp": bool`, the shape runs recorded before this field was typed.
    #[serde(rename = "udp", with = "udp_flag")]
    pub protocol: Protocol,
    /// The listener's port.
    pub port: u16,
}

impl ListenerPort {
    /// A TCP listener port.
    pub fn tcp(port: u16) -> Self {
        Self {
            protocol: Protocol::Tcp,
            port,
        }
    }

    /// A UDP listener port.
    pub fn udp(port: u16) -> Self {
        Self {
            protocol: Protocol::Udp,
            port,
        }
    }
}

/// `Protocol::Udp` ⇄ `true`, anything else ⇄ `false` (a listener is TCP or UDP).
mod udp_flag {
    use klb_cloud::Protocol;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(p: &Protocol, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bool(*p == Protocol::Udp)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Protocol, D::Error> {
        Ok(if bool::deserialize(d)? {
            Protocol::Udp
        } else {
            Protocol::Tcp
        })
    }
}

/// Where the VIP lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VipSpec {
    /// The VIP network.
    pub network_id: String,
    /// The VIP subnet (else any subnet of the network).
    #[serde(default)]
    pub subnet_id: Option<String>,
    /// Requested address; `None` lets the cloud pick.
    #[serde(default)]
    pub address: Option<IpAddr>,
}

/// Input of every LB flow (fields a flow does not use stay empty).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LbInput {
    /// The load balancer.
    pub lb_id: String,
    /// Where the VIP lives (create).
    #[serde(default)]
    pub vip: Option<VipSpec>,
    /// Listener ports (create, update): the security group opens exactly these.
    #[serde(default)]
    pub listeners: Vec<ListenerPort>,
    /// VM indices this run creates (create, failover, scale-out) or removes (scale-in).
    #[serde(default)]
    pub vm_indices: Vec<u32>,
    /// The version of the graph the job pump read and handed over ([`Graph::version`]): the
    /// push renders that graph when it is still at hand in this process (see [`Graphs`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub graph_version: Option<i64>,
}

impl LbInput {
    /// Input of the create flow.
    pub fn create(lb_id: &str, vip: VipSpec, listeners: Vec<ListenerPort>, vm_count: u32) -> Self {
        Self {
            lb_id: lb_id.into(),
            vip: Some(vip),
            listeners,
            vm_indices: (0..vm_count).collect(),
            graph_version: None,
        }
    }

    /// Input of the delete flow.
    pub fn delete(lb_id: &str) -> Self {
        Self {
            lb_id: lb_id.into(),
            ..Self::default()
        }
    }

    /// Input of the update flow.
    pub fn update(lb_id: &str, listeners: Vec<ListenerPort>) -> Self {
        Self {
            lb_id: lb_id.into(),
            listeners,
            ..Self::default()
        }
    }

    /// The same input, naming the graph of `version` the job pump handed over.
    pub fn with_graph_version(mut self, version: Option<i64>) -> Self {
        self.graph_version = version;
        self
    }

    /// Replace VM `index`.
    pub fn failover(lb_id: &str, index: u32) -> Self {
        Self {
            lb_id: lb_id.into(),
            vm_indices: vec![index],
            ..Self::default()
        }
    }

    /// Grow from `from` VMs to `to` VMs.
    pub fn scale_out(lb_id: &str, from: u32, to: u32) -> Self {
        Self {
            lb_id: lb_id.into(),
            vm_indices: (from..to).collect(),
            ..Self::default()
        }
    }

    /// Shrink from `from` VMs to `to` VMs (the highest indices go).
    pub fn scale_in(lb_id: &str, from: u32, to: u32) -> Self {
        Self {
            lb_id: lb_id.into(),
            vm_indices: (to..from).collect(),
            ..Self::default()
        }
    }

    /// The run request for flow `kind` with this input, keyed by the load balancer.
    pub fn request(&self, kind: FlowKind) -> RunRequest {
        RunRequest {
            kind: kind.as_str().to_string(),
            key: self.lb_id.clone(),
            input: serde_json::to_value(self).unwrap_or_default(),
            // A delete cancels whatever still runs for the LB (documented in the crate docs).
            cancel_previous: kind == FlowKind::DeleteLb,
            external_ref: None,
        }
    }
}

/// How a step waits for the cloud (VM boot, VM deletion).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Polling {
    /// Delay between two looks.
    pub interval: Duration,
    /// Give up (and revert) after this long.
    pub timeout: Duration,
}

impl Polling {
    pub(crate) fn max_polls(&self) -> u32 {
        let n = self.timeout.as_millis() / self.interval.as_millis().max(1);
        n.clamp(1, u32::MAX as u128) as u32
    }
}

/// Waiting behaviour of the LB flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowTiming {
    /// Waiting for new VMs to become `ACTIVE`.
    pub boot: Polling,
    /// Waiting for deleted VMs to disappear.
    pub vm_delete: Polling,
    /// Waiting for the agents of new VMs to answer (a cloud's ACTIVE comes before the guest
    /// booted and cloud-init started `klb agent`).
    pub agent_up: Polling,
}

impl FlowTiming {
    /// For Nova: VMs take tens of seconds to boot; give up after 15 minutes.
    pub fn cloud() -> Self {
        Self {
            boot: Polling {
                interval: Duration::from_secs(2),
                timeout: Duration::from_secs(900),
            },
            vm_delete: Polling {
                interval: Duration::from_secs(1),
                timeout: Duration::from_secs(300),
            },
            agent_up: Polling {
                interval: Duration::from_secs(2),
                timeout: Duration::from_secs(600),
            },
        }
    }

    /// For the fake and the local cloud: look often.
    pub fn fast() -> Self {
        Self {
            boot: Polling {
                interval: Duration::from_millis(20),
                timeout: Duration::from_secs(60),
            },
            vm_delete: Polling {
                interval: Duration::from_millis(20),
                timeout: Duration::from_secs(60),
            },
            agent_up: Polling {
                interval: Duration::from_millis(50),
                timeout: Duration::from_secs(60),
            },
        }
    }
}

/// All LB flows with [`FlowTiming::cloud`].
pub fn flows() -> Vec<Flow<LbEnv>> {
    flows_with(FlowTiming::cloud())
}

/// All LB flows. Each reads like the seed's list.
pub fn flows_with(timing: FlowTiming) -> Vec<Flow<LbEnv>> {
    let boot = timing.boot;
    let agents_up = WaitAgentsUp {
        poll: timing.agent_up,
    };
    vec![
        // The seed's "Create Loadbalancer", in its order.
        Flow::new(FlowKind::CreateLb.as_str())
            .step(ResolveNetworks)
            .step(EnsureSecurityGroup { owned: true })
            .step(AllocateVip)
            .step(EnsureServerGroup)
            .step(CreateVms)
            .step(RecordLb { name: "record_vms" })
            .step(WaitVmsActive { poll: boot })
            .step(EnsureAlarm { owned: true })
            .step(RecordLb {
                name: "record_alarm",
            })
            .step(SetVipAddressPairs)
            .step(agents_up.clone())
            .step(PushDesiredState),
        Flow::new(FlowKind::DeleteLb.as_str())
            .step(DeleteAlarm)
            .step(DeleteAllVms {
                poll: timing.vm_delete,
            })
            .step(DeleteVip)
            .step(DeleteServerGroup)
            .step(DeleteSecurityGroup)
            .step(ForgetLb),
        // Child changes: listener ports open/close in the security group, then every VM gets
        // the new state.
        Flow::new(FlowKind::UpdateLb.as_str())
            .step(ResolveNetworks)
            .step(EnsureSecurityGroup { owned: false })
            .step(PushDesiredState),
        // ECMP already moved traffic away from the dead VM: rebuild it under the same name and
        // server group, configure it, and let it rejoin.
        Flow::new(FlowKind::FailoverVm.as_str())
            .step(ResolveNetworks)
            .step(DrainVms)
            .step(DeleteVms)
            .step(CreateVms)
            .step(RecordLb { name: "record_vms" })
            .step(WaitVmsActive { poll: boot })
            .step(SetVipAddressPairs)
            .step(EnsureAlarm { owned: false })
            .step(agents_up.clone())
            .step(PushDesiredState),
        Flow::new(FlowKind::ScaleOutLb.as_str())
            .step(ResolveNetworks)
            .step(CreateVms)
            .step(RecordLb { name: "record_vms" })
            .step(WaitVmsActive { poll: boot })
            .step(SetVipAddressPairs)
            .step(EnsureAlarm { owned: false })
            .step(agents_up.clone())
            .step(PushDesiredState),
        // Drain first so no connection is cut, then remove, then tell the survivors.
        Flow::new(FlowKind::ScaleInLb.as_str())
            .step(ResolveNetworks)
            .step(DrainVms)
            .step(DeleteVms)
            .step(RecordLb { name: "record_vms" })
            .step(EnsureAlarm { owned: false })
            .step(PushDesiredState),
    ]
}
