//! klb-cloud's [`Compute`], [`Network`] and [`Alarms`] over the [`Lab`]: the local cloud.
//!
//! - **Servers** are LB VM namespaces. `create_server` creates `{prefix}vm-<8 hex of the id>`
//!   with its L3 and management links, writes the files a [`VmBootstrap`] hook returns (the
//!   local cloud-init) and starts the agent inside it (see [`AgentLaunch`]);
//!   `delete_server` stops the VM's processes by PID and deletes the namespace. A server is
//!   `ACTIVE` while all its processes run and `ERROR` (with a fault) once one exited.
//! - **Server groups** are records: every "VM" shares this host, so anti-affinity is recorded,
//!   not enforced.
//! - **Networks/subnets** are the four fixed ones of [`crate::plan`] with stable ids. Ports on
//!   the L3 and management networks are created with the server (their address is the VM's
//!   slot address); ports on the VIP and member networks are logical (an address from the
//!   subnet, nothing configured), which is all a VIP port needs.
//! - **Allowed-address pairs** are recorded, and each VIP-subnet address in them is put on the
//!   `lo` of the server the port is attached to (removed when dropped from the pairs).
//! - **Security groups and rules** are enforced: each LB VM namespace loads a stateful
//!   iptables INPUT chain built from the ingress rules of its ports' groups ([`crate::firewall`]),
//!   re-synced whenever a port's groups or a group's rules change.
//! - **Alarms** run a local evaluator per alarm: every period it asks a [`PpsSource`] for the
//!   LB's packet rate; after `evaluation_periods` consecutive periods above the threshold it
//!   POSTs an Aodh-style notification to the webhook URL (once per transition to `alarm`).
//!
//! All of it is persisted in a JSON state file (mode 0600: it holds webhook URLs) after every
//! change; [`LocalCloud::open`] reads it back, adopts what still runs and removes the rest.
//!
//! Modules by concern: `state` (records and the state file), `servers` (boot, wiring, agent
//! start), `firewall_sync` (security groups to iptables), `pps` (the alarm evaluator), and one
//! module per trait impl: `compute`, `network`, `alarms`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use ipnet::{IpNet, Ipv4Net};
use klb_agent_client::agents::Agents;
use klb_cloud::{
    Alarm, Alarms, Cloud, CloudError, CloudErrorKind, CloudResult, Compute, Direction, Network,
    NetworkInfo, NicSpec, Port, PortSpec, PpsAlarmSpec, Protocol, RuleSpec, SecurityGroup,
    SecurityGroupRule, SecurityGroupSpec, Server, ServerAddress, ServerFilter, ServerGroup,
    ServerGroupPolicy, ServerGroupSpec, ServerSpec, ServerStatus, Subnet,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, MutexGuard};
use tokio::task::JoinHandle;
use tracing::{info, warn};
use uuid::Uuid;

use crate::error::{LocalError, Result};
use crate::lab::{AdoptReport, Lab, LabConfig, LabSnapshot, MemberNet, VmNet};
use crate::plan::{self, AddressPlan};
use crate::{firewall, netns};

/// Network names (what `lb_mgmt_net_name`, `lb_l3_net_name` etc. may name).
pub const VIP_NETWORK_NAME: &str = "klb-vip-net";
/// Member network name.
pub const MEMBER_NETWORK_NAME: &str = "klb-member-net";
/// L3 network name.
pub const L3_NETWORK_NAME: &str = "klb-l3-net";
/// Management network name.
pub const MGMT_NETWORK_NAME: &str = "klb-mgmt-net";

/// First host number handed out for logical ports on the VIP subnet and on the member subnet
/// (the member subnet's low addresses belong to the lab's member namespaces).
const VIP_ALLOC_START: u32 = 10;
const MEMBER_ALLOC_START: u32 = 1024;

/// How to start the agent inside a new LB VM namespace.
///
/// Placeholders in `args` and `env` values are replaced: `{server_id}`, `{server_name}`,
/// `{ns}`, `{dir}` (the VM's private directory), `{user_data}` (path of a 0600 file holding
/// `ServerSpec::user_data` verbatim, empty string if none), `{mgmt_addr}`, `{l3_addr}`,
/// `{host_mgmt_addr}` (the control plane on the management network), `{gw1}`, `{gw2}` (the
/// gateways' L3 addresses), `{l3_prefix_len}`, `{slot}`. The same values are also always
/// exported as `KLB_LOCAL_SERVER_ID`, `KLB_LOCAL_DIR`, `KLB_LOCAL_USER_DATA`,
/// `KLB_LOCAL_MGMT_ADDR`, `KLB_LOCAL_L3_ADDR`, `KLB_LOCAL_HOST_MGMT_ADDR`,
/// `KLB_LOCAL_GATEWAYS` (`gw1,gw2`), `KLB_LOCAL_NS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentLaunch {
    /// The program (usually the klb binary itself).
    pub program: PathBuf,
    /// Its arguments, with placeholders.
    pub args: Vec<String>,
    /// Extra environment, with placeholders.
    pub env: Vec<(String, String)>,
}

impl AgentLaunch {
    /// `<this executable> agent --config {dir}/agent.toml`: the agent reads the config file a
    /// [`VmBootstrap`] hook wrote into the VM directory (with the certificate and key it
    /// names), as cloud-init would write it on OpenStack.
    pub fn klb_agent() -> Result<Self> {
        let program = std::env::current_exe().map_err(|e| LocalError::io("current_exe", e))?;
        Ok(AgentLaunch {
            program,
            args: vec!["agent".into(), "--config".into(), "{dir}/agent.toml".into()],
            env: Vec::new(),
        })
    }
}

/// Everything known about a new LB VM when its agent is about to start.
#[derive(Debug, Clone)]
pub struct BootInfo {
    /// Server id.
    pub server_id: String,
    /// Server name (deterministic, e.g. `klb-<lb>-vm-0`).
    pub server_name: String,
    /// Server metadata (`klb_lb_id`, `klb_vm_index`).
    pub metadata: BTreeMap<String, String>,
    /// Namespace of the VM.
    pub ns: String,
    /// The VM's private directory (files go here).
    pub dir: PathBuf,
    /// Management address (agent API; put it in the agent certificate's SAN).
    pub mgmt_addr: Ipv4Addr,
    /// L3 address (BGP source).
    pub l3_addr: Ipv4Addr,
    /// The control plane's address on the management network (heartbeat receiver host).
    pub host_mgmt_addr: Ipv4Addr,
    /// The two gateways' L3 addresses (`primary_l3_gateway_addr`, `secondary_l3_gateway_addr`).
    pub gateways: [Ipv4Addr; 2],
    /// `ServerSpec::user_data` as the flow sent it (may hold secrets).
    pub user_data: Option<String>,
}

/// Produces the files a new LB VM needs before its agent starts (the local equivalent of
/// cloud-init `write_files`): typically `agent.toml` and the VM's certificate and key, issued
/// for [`BootInfo::mgmt_addr`]. Returned paths are relative to [`BootInfo::dir`]; files are
/// written with mode 0600.
#[async_trait]
pub trait VmBootstrap: Send + Sync {
    /// The files to write; an `Err` fails `create_server` (and the VM is removed).
    async fn files(&self, boot: &BootInfo) -> std::result::Result<Vec<(String, Vec<u8>)>, String>;
}

/// How to run the local cloud.
#[derive(Clone, Default)]
pub struct LocalCloudConfig {
    /// The lab (prefix, runtime dir, addresses, gateway AS).
    pub lab: LabConfig,
    /// The state file; `None` = `{lab.runtime_dir}/state.json` (removed on shutdown with the
    /// runtime directory).
    pub state_file: Option<PathBuf>,
    /// How to start the agent in a new VM; `None` = namespaces and links only (tests, or
    /// before an agent exists).
    pub agent: Option<AgentLaunch>,
    /// Writes per-VM files (agent.toml, TLS material) before the agent starts; the local
    /// stand-in for cloud-init. `None` = only `user-data` is written.
    pub bootstrap: Option<Arc<dyn VmBootstrap>>,
    /// Evaluate alarms every this long instead of `period_secs` (tests run in seconds).
    pub alarm_period_override: Option<Duration>,
    /// What dropping the last [`LocalCloud`] handle does without [`LocalCloud::shutdown`] or
    /// [`LocalCloud::detach`]: `false` (default, `klb serve`) leaves the VMs and the lab running
    /// for the next start to adopt, as a crash would; `true` (`klb demo`, tests) removes
    /// everything synchronously, also on panic.
    pub teardown_on_drop: bool,
}

impl std::fmt::Debug for LocalCloudConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCloudConfig")
            .field("lab", &self.lab)
            .field("state_file", &self.state_file)
            .field("agent", &self.agent)
            .field("bootstrap", &self.bootstrap.as_ref().map(|_| "<hook>"))
            .field("alarm_period_override", &self.alarm_period_override)
            .field("teardown_on_drop", &self.teardown_on_drop)
            .finish()
    }
}

/// Where the local PPS evaluator reads an LB's packet rate (klb's heartbeat stats in
/// production, a fixed value in tests). `None` = no data: the evaluator does not count it.
#[async_trait]
pub trait PpsSource: Send + Sync {
    /// Current packets per second of `lb_id`, summed over `server_ids`.
    async fn pps(&self, lb_id: &str, server_ids: &[String]) -> Option<u64>;
}

mod alarms;
mod compute;
mod firewall_sync;
mod network;
mod pps;
mod servers;
mod state;

use state::*;

struct Core {
    lab: Lab,
    st: Persisted,
}

struct Inner {
    cfg: LocalCloudConfig,
    state_file: PathBuf,
    core: Mutex<Core>,
    pps: Arc<Mutex<Option<Arc<dyn PpsSource>>>>,
    evaluators: Mutex<BTreeMap<String, JoinHandle<()>>>,
    http: reqwest::Client,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for (_, h) in std::mem::take(self.evaluators.get_mut()) {
            h.abort();
        }
        if !self.cfg.teardown_on_drop {
            // The data plane outlives the control plane: the next `open` adopts it.
            self.core.get_mut().lab.forget();
        }
    }
}

/// What [`LocalCloud::teardown_recorded`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TeardownReport {
    /// Recorded processes that were still running and were stopped.
    pub stopped_processes: usize,
    /// Namespaces of the prefix removed.
    pub removed_namespaces: Vec<String>,
    /// Whether a state file was removed.
    pub removed_state_file: bool,
    /// Whether the runtime directory was removed.
    pub removed_runtime_dir: bool,
}

/// The local cloud driver. Cheap to clone (shared state).
#[derive(Clone)]
pub struct LocalCloud {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for LocalCloud {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCloud")
            .field("prefix", &self.inner.cfg.lab.prefix)
            .finish_non_exhaustive()
    }
}

impl LocalCloud {
    /// Opens the local cloud: reads the state file, adopts the recorded lab and the VMs whose
    /// processes still run (others become `ERROR` servers with a fault, their namespaces
    /// removed), removes namespaces of the prefix that nothing owns, or builds a fresh lab.
    /// Alarm evaluators of recorded alarms are restarted.
    pub async fn open(cfg: LocalCloudConfig) -> Result<(LocalCloud, AdoptReport)> {
        let state_file = cfg
            .state_file
            .clone()
            .unwrap_or_else(|| cfg.lab.runtime_dir.join("state.json"));
        let mut st = read_state(&state_file)?;
        let (lab, report) = Lab::open(cfg.lab.clone(), st.lab.as_ref()).await?;
        // Servers whose VM is not adopted are lost: keep the record as ERROR so the control
        // plane sees it and replaces it (delete_server then clears the record).
        let adopted: Vec<&String> = lab.vms().keys().collect();
        for s in st.servers.values_mut() {
            if !adopted.contains(&&s.short_id) && s.fault.is_none() {
                s.fault = Some("local VM lost while klb was not running".into());
            }
        }
        st.lab = Some(lab.snapshot());
        let inner = Arc::new(Inner {
            cfg,
            state_file,
            core: Mutex::new(Core { lab, st }),
            pps: Arc::new(Mutex::new(None)),
            evaluators: Mutex::new(BTreeMap::new()),
            // The webhook closes keep-alive connections idle for 5 s (klb-http's INTERNAL
            // limits): never reuse one that old.
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .pool_idle_timeout(Duration::from_secs(2))
                .build()
                .map_err(|e| LocalError::Invalid(format!("HTTP client: {e}")))?,
        });
        let cloud = LocalCloud { inner };
        {
            let core = cloud.inner.core.lock().await;
            cloud.persist(&core)?;
            for a in core.st.alarms.values() {
                cloud.start_evaluator(a.clone()).await;
            }
        }
        Ok((cloud, report))
    }

    /// All four capabilities as klb-cloud's [`Cloud`], with the given agent client (the agent
    /// API is the agent crate's, not the cloud's).
    pub fn cloud(&self, agents: Arc<dyn Agents>) -> Cloud {
        Cloud {
            compute: Arc::new(self.clone()),
            network: Arc::new(self.clone()),
            alarms: Arc::new(self.clone()),
            agents,
        }
    }

    /// Exclusive access to the lab (client namespace, members, gateway route checks).
    pub async fn lab(&self) -> tokio::sync::MappedMutexGuard<'_, Lab> {
        MutexGuard::map(self.inner.core.lock().await, |c| &mut c.lab)
    }

    /// The address plan.
    pub fn plan(&self) -> &AddressPlan {
        &self.inner.cfg.lab.plan
    }

    /// Sets where alarm evaluators read packet rates.
    pub async fn set_pps_source(&self, source: Arc<dyn PpsSource>) {
        *self.inner.pps.lock().await = Some(source);
    }

    /// The VM namespace of a server.
    pub async fn vm_of(&self, server_id: &str) -> Option<VmNet> {
        let core = self.inner.core.lock().await;
        let short = &core.st.servers.get(server_id)?.short_id;
        core.lab.vms().get(short).cloned()
    }

    /// Adds member namespace `m{index}` running `program backend --listen ADDR:port --name
    /// m{index}` (`program` = the klb binary), recorded and persisted.
    pub async fn add_member(&self, index: u32, program: &Path, port: u16) -> Result<MemberNet> {
        let mut core = self.inner.core.lock().await;
        let m = core.lab.add_member(index).await?;
        let args = vec![
            "backend".to_string(),
            "--listen".into(),
            format!("{}:{port}", m.addr),
            "--name".into(),
            format!("m{index}"),
        ];
        let ns = m.ns.clone();
        core.lab.spawn_in(&ns, "backend", program, &args).await?;
        core.st.lab = Some(core.lab.snapshot());
        self.persist(&core)?;
        Ok(m)
    }

    /// Removes everything: evaluators, VMs, lab, state file. Idempotent for the namespaces.
    pub async fn shutdown(self) -> Result<()> {
        self.stop_evaluators().await;
        let mut core = self.inner.core.lock().await;
        let vms: Vec<String> = core.lab.vms().keys().cloned().collect();
        for v in vms {
            core.lab.remove_vm(&v).await?;
        }
        core.lab.teardown_mut().await?;
        match std::fs::remove_file(&self.inner.state_file) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(LocalError::io(&self.inner.state_file, e));
            }
            _ => {}
        }
        core.st = Persisted::default();
        Ok(())
    }

    /// Stops the alarm evaluators and lets go of the lab without removing it (a restart then
    /// adopts it through [`LocalCloud::open`]).
    pub async fn detach(self) {
        self.stop_evaluators().await;
        let mut core = self.inner.core.lock().await;
        core.lab.forget();
    }

    /// Tears down a local cloud that no process holds any more (`klb serve` leaves it running
    /// on exit for the next start to adopt): stops the processes recorded in the state file
    /// (by PID, only while still in their namespace, which guards against PID reuse), removes
    /// every namespace of the prefix (stopping whatever else runs inside) and the
    /// root-namespace veth, then the state file and the runtime directory. Idempotent; a
    /// missing or unreadable state file still removes everything of the prefix.
    pub async fn teardown_recorded(
        lab: &LabConfig,
        state_file: Option<&Path>,
    ) -> Result<TeardownReport> {
        let state_file = state_file
            .map(PathBuf::from)
            .unwrap_or_else(|| lab.runtime_dir.join("state.json"));
        // Only the lab part matters here; reading just it keeps a newer or damaged record of
        // servers and ports from blocking the cleanup.
        #[derive(Deserialize)]
        struct LabOnly {
            lab: Option<LabSnapshot>,
        }
        let snap = match std::fs::read(&state_file) {
            Ok(b) => match serde_json::from_slice::<LabOnly>(&b) {
                Ok(r) => r.lab,
                Err(e) => {
                    warn!(path = %state_file.display(), error = %e,
                          "state file unreadable; removing the namespaces of the prefix only");
                    None
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(LocalError::io(&state_file, e)),
        };
        let mut report = TeardownReport::default();
        if let Some(snap) = snap.filter(|s| s.prefix == lab.prefix) {
            let pids: Vec<u32> = snap
                .processes
                .iter()
                .filter(|p| netns::pid_alive(p.pid) && crate::lab::pid_in_ns(p.pid, &p.ns))
                .map(|p| p.pid)
                .collect();
            netns::stop_pids(&pids, lab.stop_grace).await;
            report.stopped_processes = pids.len();
        }
        report.removed_namespaces = crate::lab::cleanup_prefix(&lab.prefix, lab.stop_grace).await?;
        match std::fs::remove_file(&state_file) {
            Ok(()) => report.removed_state_file = true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(LocalError::io(&state_file, e)),
        }
        // The runtime directory is the lab's own (configs, logs, sockets), as `Lab::teardown`
        // assumes; still, only remove one that looks like it.
        let dir = &lab.runtime_dir;
        if dir.join("gw1").is_dir() || (report.removed_state_file && state_file.starts_with(dir)) {
            std::fs::remove_dir_all(dir).map_err(|e| LocalError::io(dir, e))?;
            report.removed_runtime_dir = true;
        }
        info!(prefix = %lab.prefix, ?report, "local cloud torn down");
        Ok(report)
    }

    async fn stop_evaluators(&self) {
        for (_, h) in std::mem::take(&mut *self.inner.evaluators.lock().await) {
            h.abort();
        }
    }

    fn persist(&self, core: &Core) -> Result<()> {
        write_state(&self.inner.state_file, &core.st)
    }

    fn snapshot_and_persist(&self, core: &mut Core) -> Result<()> {
        core.st.lab = Some(core.lab.snapshot());
        self.persist(core)
    }

    // --- networks ---------------------------------------------------------------------------

    fn networks(&self) -> Vec<(NetworkInfo, Subnet)> {
        stable_networks(self.plan())
    }

    /// Allocates a logical address on the VIP or member network (lowest free from the pool
    /// start), or checks a requested one.
    fn allocate(
        &self,
        st: &Persisted,
        op: &'static str,
        network_id: &str,
        fixed: Option<IpAddr>,
    ) -> CloudResult<IpAddr> {
        let p = self.plan();
        let (subnet, start) = if network_id == plan::VIP_NETWORK_ID.to_string() {
            (p.vip_subnet, VIP_ALLOC_START)
        } else if network_id == plan::MEMBER_NETWORK_ID.to_string() {
            (p.member_subnet, MEMBER_ALLOC_START)
        } else if network_id == plan::L3_NETWORK_ID.to_string()
            || network_id == plan::MGMT_NETWORK_ID.to_string()
        {
            return Err(CloudError::new(
                op,
                network_id,
                CloudErrorKind::Invalid,
                "local cloud: ports on the L3 and management networks come with the server",
            ));
        } else {
            return Err(CloudError::not_found(op, network_id).with_retryable(false));
        };
        let used: Vec<IpAddr> = st
            .ports
            .values()
            .filter(|x| x.network_id == network_id)
            .map(|x| x.ip)
            .collect();
        if let Some(ip) = fixed {
            let inside = matches!(ip, IpAddr::V4(v4) if subnet.contains(&v4));
            if !inside {
                return Err(CloudError::new(
                    op,
                    ip.to_string(),
                    CloudErrorKind::Invalid,
                    format!("address outside {subnet}"),
                ));
            }
            if used.contains(&ip) {
                return Err(CloudError::new(
                    op,
                    ip.to_string(),
                    CloudErrorKind::Conflict,
                    "address in use",
                )
                .with_retryable(false));
            }
            return Ok(ip);
        }
        let base = u32::from(subnet.network());
        let size = 1u32 << (32 - subnet.prefix_len());
        (start..size - 1)
            .map(|h| IpAddr::V4(Ipv4Addr::from(base + h)))
            .find(|ip| !used.contains(ip))
            .ok_or_else(|| {
                CloudError::new(op, network_id, CloudErrorKind::Quota, "subnet exhausted")
            })
    }

    fn port_of(rec: &PortRec) -> Port {
        Port {
            id: rec.id.clone(),
            name: rec.name.clone(),
            network_id: rec.network_id.clone(),
            fixed_ips: vec![rec.ip],
            security_group_ids: rec.security_groups.clone(),
            allowed_address_pairs: rec.pairs.clone(),
            device_id: rec.device_id.clone(),
            device_owner: rec.device_owner.clone(),
        }
    }

    fn server_of(core: &mut Core, rec: &ServerRec, agent: bool) -> Server {
        let addresses = rec
            .nics
            .iter()
            .filter_map(|p| core.st.ports.get(p))
            .map(|p| ServerAddress {
                network_id: p.network_id.clone(),
                ip: p.ip,
                port_id: p.id.clone(),
            })
            .collect();
        let (status, fault) = match &rec.fault {
            Some(f) => (ServerStatus::Error, Some(f.clone())),
            None if !core.lab.vms().contains_key(&rec.short_id) => {
                (ServerStatus::Error, Some("VM namespace is gone".into()))
            }
            None if agent && !core.lab.vm_processes_running(&rec.short_id) => (
                ServerStatus::Error,
                Some("the agent process exited (see its log in the VM directory)".into()),
            ),
            None => (ServerStatus::Active, None),
        };
        Server {
            id: rec.id.clone(),
            name: rec.name.clone(),
            status,
            addresses,
            metadata: rec.metadata.clone(),
            fault,
        }
    }

    /// Puts the VIP-subnet addresses of `pairs` on the VM's `lo`, removes those of `old`
    /// that are no longer listed.
    async fn sync_vips(
        &self,
        core: &mut Core,
        server_id: &str,
        old: &[IpAddr],
        pairs: &[IpAddr],
    ) -> Result<()> {
        let Some(short) = core.st.servers.get(server_id).map(|s| s.short_id.clone()) else {
            return Ok(());
        };
        if !core.lab.vms().contains_key(&short) {
            return Ok(());
        }
        let vip_net = self.plan().vip_subnet;
        let v4s = |l: &[IpAddr]| -> Vec<Ipv4Addr> {
            l.iter()
                .filter_map(|a| match a {
                    IpAddr::V4(v) if vip_net.contains(v) => Some(*v),
                    _ => None,
                })
                .collect()
        };
        let (old, new) = (v4s(old), v4s(pairs));
        for v in old.iter().filter(|v| !new.contains(v)) {
            core.lab.del_vip(&short, *v).await?;
        }
        for v in &new {
            core.lab.add_vip(&short, *v).await?;
        }
        Ok(())
    }
}

/// The four networks of the local cloud with their stable ids (see [`crate::plan`]).
pub fn stable_networks(p: &AddressPlan) -> Vec<(NetworkInfo, Subnet)> {
    let mk = |id: Uuid, name: &str, sid: Uuid, cidr: Ipv4Net, gw: Option<Ipv4Addr>| {
        (
            NetworkInfo {
                id: id.to_string(),
                name: name.into(),
                subnet_ids: vec![sid.to_string()],
            },
            Subnet {
                id: sid.to_string(),
                name: format!("{name}-subnet"),
                network_id: id.to_string(),
                cidr: IpNet::V4(cidr),
                gateway_ip: gw.map(IpAddr::V4),
            },
        )
    };
    vec![
        mk(
            plan::VIP_NETWORK_ID,
            VIP_NETWORK_NAME,
            plan::VIP_SUBNET_ID,
            p.vip_subnet,
            None,
        ),
        mk(
            plan::MEMBER_NETWORK_ID,
            MEMBER_NETWORK_NAME,
            plan::MEMBER_SUBNET_ID,
            p.member_subnet,
            Some(p.gw_member_addr(1)),
        ),
        mk(
            plan::L3_NETWORK_ID,
            L3_NETWORK_NAME,
            plan::L3_SUBNET_ID,
            p.l3_subnet,
            Some(p.gw_l3_addr(1)),
        ),
        mk(
            plan::MGMT_NETWORK_ID,
            MGMT_NETWORK_NAME,
            plan::MGMT_SUBNET_ID,
            p.mgmt_subnet,
            None,
        ),
    ]
}

fn cloud_err(op: &'static str, resource: &str, e: LocalError) -> CloudError {
    let kind = match &e {
        LocalError::NotFound { .. } => CloudErrorKind::NotFound,
        LocalError::Invalid(_) | LocalError::InvalidName { .. } => CloudErrorKind::Invalid,
        LocalError::Plan(_) => CloudErrorKind::Quota,
        LocalError::Timeout { .. } => CloudErrorKind::Timeout,
        _ => CloudErrorKind::Other,
    };
    CloudError::new(op, resource, kind, e.to_string())
}

#[cfg(test)]
mod tests;
