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
//! - **Security groups and rules** are recorded only: this host has neither `iptables` nor
//!   `nft`, and every namespace is reachable only from this host anyway.
//! - **Alarms** run a local evaluator per alarm: every period it asks a [`PpsSource`] for the
//!   LB's packet rate; after `evaluation_periods` consecutive periods above the threshold it
//!   POSTs an Aodh-style notification to the webhook URL (once per transition to `alarm`).
//!
//! All of it is persisted in a JSON state file (mode 0600: it holds webhook URLs) after every
//! change; [`LocalCloud::open`] reads it back, adopts what still runs and removes the rest.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use ipnet::{IpNet, Ipv4Net};
use klb_cloud::{
    Agents, Alarm, Alarms, Cloud, CloudError, CloudErrorKind, CloudResult, Compute, Direction,
    Network, NetworkInfo, NicSpec, Port, PortSpec, PpsAlarmSpec, Protocol, RuleSpec, SecurityGroup,
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

// ---------------------------------------------------------------------------------------------
// Persisted records (klb-cloud's types are not `Serialize` by design; these mirror them)

#[derive(Debug, Clone, Serialize, Deserialize)]
struct GroupRec {
    id: String,
    name: String,
    soft: bool,
    members: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ServerRec {
    id: String,
    name: String,
    short_id: String,
    metadata: BTreeMap<String, String>,
    group: Option<String>,
    /// Port ids in NIC order.
    nics: Vec<String>,
    /// Set when the VM was lost (e.g. gone after a restart).
    fault: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SecGroupRec {
    id: String,
    name: String,
    description: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct RuleRec {
    id: String,
    group: String,
    ingress: bool,
    protocol: String,
    ports: Option<(u16, u16)>,
    remote: Option<IpNet>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct PortRec {
    id: String,
    name: String,
    network_id: String,
    ip: IpAddr,
    security_groups: Vec<String>,
    pairs: Vec<IpAddr>,
    device_id: Option<String>,
    device_owner: Option<String>,
    /// Created by `create_server` (deleted with it).
    server_owned: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct AlarmRec {
    id: String,
    name: String,
    lb_id: String,
    server_ids: Vec<String>,
    threshold_pps: u64,
    period_secs: u32,
    evaluation_periods: u32,
    webhook_url: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Persisted {
    lab: Option<LabSnapshot>,
    groups: BTreeMap<String, GroupRec>,
    servers: BTreeMap<String, ServerRec>,
    security_groups: BTreeMap<String, SecGroupRec>,
    rules: BTreeMap<String, RuleRec>,
    ports: BTreeMap<String, PortRec>,
    alarms: BTreeMap<String, AlarmRec>,
}

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

    /// Loads the security-group rules of the server's ports into its namespace
    /// ([`firewall`]). Servers whose VM is not in the lab are skipped.
    async fn sync_firewall(&self, core: &Core, server_id: &str) -> Result<()> {
        let Some(server) = core.st.servers.get(server_id) else {
            return Ok(());
        };
        let Some(vm) = core.lab.vms().get(&server.short_id) else {
            return Ok(());
        };
        let groups: BTreeSet<&str> = server
            .nics
            .iter()
            .filter_map(|p| core.st.ports.get(p))
            .flat_map(|p| p.security_groups.iter().map(String::as_str))
            .collect();
        Self::load_firewall(core, vm, &groups).await
    }

    async fn load_firewall(core: &Core, vm: &VmNet, groups: &BTreeSet<&str>) -> Result<()> {
        let rules: Vec<firewall::IngressRule> = core
            .st
            .rules
            .values()
            .filter(|r| r.ingress && groups.contains(r.group.as_str()))
            .map(|r| firewall::IngressRule {
                protocol: r.protocol.clone(),
                ports: r.ports,
                remote: r.remote,
            })
            .collect();
        let path = vm.dir.join("firewall.rules");
        std::fs::write(&path, firewall::render(!groups.is_empty(), &rules))
            .map_err(|e| LocalError::io(&path, e))?;
        netns::exec_in(&vm.ns, "iptables-restore", &[&path.to_string_lossy()]).await?;
        Ok(())
    }

    /// [`Self::sync_firewall`] for every server with a port in `group`.
    async fn sync_firewalls_of_group(&self, core: &Core, group: &str) -> Result<()> {
        let servers: BTreeSet<String> = core
            .st
            .ports
            .values()
            .filter(|p| p.security_groups.iter().any(|g| g == group))
            .filter_map(|p| p.device_id.clone())
            .collect();
        for s in servers {
            self.sync_firewall(core, &s).await?;
        }
        Ok(())
    }

    async fn boot(&self, core: &mut Core, spec: &ServerSpec) -> CloudResult<Server> {
        const OP: &str = "create_server";
        if let Some(g) = &spec.server_group_id
            && !core.st.groups.contains_key(g)
        {
            return Err(CloudError::not_found(OP, g).with_retryable(false));
        }
        for sg in &spec.security_group_ids {
            if !core.st.security_groups.contains_key(sg) {
                return Err(CloudError::not_found(OP, sg).with_retryable(false));
            }
        }
        let known: Vec<String> = self.networks().iter().map(|(n, _)| n.id.clone()).collect();
        for nic in &spec.nics {
            match nic {
                NicSpec::Network { network_id, .. } if !known.contains(network_id) => {
                    return Err(CloudError::not_found(OP, network_id).with_retryable(false));
                }
                NicSpec::Port { port_id } => match core.st.ports.get(port_id) {
                    None => return Err(CloudError::not_found(OP, port_id).with_retryable(false)),
                    Some(p) if p.device_id.is_some() => {
                        return Err(CloudError::new(
                            OP,
                            port_id,
                            CloudErrorKind::Conflict,
                            "port already attached",
                        )
                        .with_retryable(false));
                    }
                    Some(_) => {}
                },
                _ => {}
            }
        }
        // A fresh id whose 8-hex short form is unused (it names the namespace).
        let (id, short) = loop {
            let id = Uuid::new_v4().to_string();
            let short = id[..8].to_string();
            if !core.st.servers.values().any(|s| s.short_id == short) {
                break (id, short);
            }
        };
        let vm = core
            .lab
            .add_vm(&short)
            .await
            .map_err(|e| cloud_err(OP, &spec.name, e))?;
        match self.wire_server(core, spec, &id, &vm).await {
            Ok(nics) => {
                let rec = ServerRec {
                    id: id.clone(),
                    name: spec.name.clone(),
                    short_id: short,
                    metadata: spec.metadata.clone(),
                    group: spec.server_group_id.clone(),
                    nics,
                    fault: None,
                };
                if let Some(g) = spec
                    .server_group_id
                    .as_ref()
                    .and_then(|g| core.st.groups.get_mut(g))
                {
                    g.members.push(id.clone());
                }
                core.st.servers.insert(id.clone(), rec.clone());
                self.snapshot_and_persist(core)
                    .map_err(|e| cloud_err(OP, &id, e))?;
                info!(server = %id, name = %spec.name, ns = %vm.ns, "local LB VM created");
                Ok(Self::server_of(core, &rec, self.inner.cfg.agent.is_some()))
            }
            Err(e) => {
                // Undo: ports made for it, attachments, the namespace.
                core.st.ports.retain(|_, p| {
                    !(p.server_owned && p.device_id.as_deref() == Some(id.as_str()))
                });
                for p in core.st.ports.values_mut() {
                    if p.device_id.as_deref() == Some(id.as_str()) {
                        p.device_id = None;
                    }
                }
                if let Err(e2) = core.lab.remove_vm(&vm.short_id).await {
                    warn!(error = %e2, "cleanup of a failed VM failed");
                }
                let _ = self.snapshot_and_persist(core);
                Err(e)
            }
        }
    }

    async fn wire_server(
        &self,
        core: &mut Core,
        spec: &ServerSpec,
        id: &str,
        vm: &VmNet,
    ) -> CloudResult<Vec<String>> {
        const OP: &str = "create_server";
        let l3 = plan::L3_NETWORK_ID.to_string();
        let mgmt = plan::MGMT_NETWORK_ID.to_string();
        let mut nics = Vec::new();
        for (i, nic) in spec.nics.iter().enumerate() {
            let port_id = match nic {
                NicSpec::Network {
                    network_id,
                    fixed_ip,
                } => {
                    let ip = if *network_id == l3 || *network_id == mgmt {
                        let slot_ip = IpAddr::V4(if *network_id == l3 {
                            vm.l3_addr
                        } else {
                            vm.mgmt_addr
                        });
                        if fixed_ip.is_some_and(|f| f != slot_ip) {
                            return Err(CloudError::new(
                                OP,
                                &spec.name,
                                CloudErrorKind::Invalid,
                                "local cloud: L3/management addresses follow the VM slot",
                            ));
                        }
                        slot_ip
                    } else {
                        self.allocate(&core.st, OP, network_id, *fixed_ip)?
                    };
                    let pid = Uuid::new_v4().to_string();
                    core.st.ports.insert(
                        pid.clone(),
                        PortRec {
                            id: pid.clone(),
                            name: format!("{}/nic{i}", spec.name),
                            network_id: network_id.clone(),
                            ip,
                            security_groups: spec.security_group_ids.clone(),
                            pairs: Vec::new(),
                            device_id: Some(id.to_string()),
                            device_owner: Some("compute:klb-local".into()),
                            server_owned: true,
                        },
                    );
                    pid
                }
                NicSpec::Port { port_id } => {
                    if let Some(p) = core.st.ports.get_mut(port_id) {
                        p.device_id = Some(id.to_string());
                    }
                    port_id.clone()
                }
            };
            nics.push(port_id);
        }
        // Filtered before anything in the VM listens.
        let groups: BTreeSet<&str> = spec.security_group_ids.iter().map(String::as_str).collect();
        Self::load_firewall(core, vm, &groups)
            .await
            .map_err(|e| cloud_err(OP, &spec.name, e))?;
        if let Some(agent) = self.inner.cfg.agent.clone() {
            self.start_agent(core, spec, id, vm, &agent)
                .await
                .map_err(|e| cloud_err(OP, &spec.name, e))?;
        }
        Ok(nics)
    }

    async fn start_agent(
        &self,
        core: &mut Core,
        spec: &ServerSpec,
        id: &str,
        vm: &VmNet,
        agent: &AgentLaunch,
    ) -> Result<()> {
        let user_data = match &spec.user_data {
            Some(ud) => {
                let path = vm.dir.join("user-data");
                write_private(&path, ud.as_bytes())?;
                path.display().to_string()
            }
            None => String::new(),
        };
        let p = self.plan();
        if let Some(hook) = &self.inner.cfg.bootstrap {
            let boot = BootInfo {
                server_id: id.to_string(),
                server_name: spec.name.clone(),
                metadata: spec.metadata.clone(),
                ns: vm.ns.clone(),
                dir: vm.dir.clone(),
                mgmt_addr: vm.mgmt_addr,
                l3_addr: vm.l3_addr,
                host_mgmt_addr: p.host_mgmt_addr(),
                gateways: [p.gw_l3_addr(1), p.gw_l3_addr(2)],
                user_data: spec.user_data.clone(),
            };
            let files = hook
                .files(&boot)
                .await
                .map_err(|e| LocalError::Invalid(format!("VM bootstrap: {e}")))?;
            for (rel, body) in files {
                let rel_path = Path::new(&rel);
                let safe = !rel.is_empty()
                    && rel_path
                        .components()
                        .all(|c| matches!(c, std::path::Component::Normal(_)));
                if !safe {
                    return Err(LocalError::Invalid(format!(
                        "VM bootstrap file {rel:?} must be a relative path without `..`"
                    )));
                }
                let path = vm.dir.join(rel_path);
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| LocalError::io(parent, e))?;
                }
                write_private(&path, &body)?;
            }
        }
        let vars: Vec<(&str, String)> = vec![
            ("server_id", id.to_string()),
            ("server_name", spec.name.clone()),
            ("ns", vm.ns.clone()),
            ("dir", vm.dir.display().to_string()),
            ("user_data", user_data),
            ("mgmt_addr", vm.mgmt_addr.to_string()),
            ("l3_addr", vm.l3_addr.to_string()),
            ("host_mgmt_addr", p.host_mgmt_addr().to_string()),
            ("gw1", p.gw_l3_addr(1).to_string()),
            ("gw2", p.gw_l3_addr(2).to_string()),
            ("l3_prefix_len", p.l3_subnet.prefix_len().to_string()),
            ("slot", vm.slot.to_string()),
        ];
        let subst = |s: &str| {
            vars.iter().fold(s.to_string(), |acc, (k, v)| {
                acc.replace(&format!("{{{k}}}"), v)
            })
        };
        let args: Vec<String> = agent.args.iter().map(|a| subst(a)).collect();
        let mut env: Vec<(String, String)> = vars
            .iter()
            .filter(|(k, _)| {
                matches!(
                    *k,
                    "server_id"
                        | "dir"
                        | "user_data"
                        | "mgmt_addr"
                        | "l3_addr"
                        | "host_mgmt_addr"
                        | "ns"
                )
            })
            .map(|(k, v)| (format!("KLB_LOCAL_{}", k.to_uppercase()), v.clone()))
            .collect();
        env.push((
            "KLB_LOCAL_GATEWAYS".into(),
            format!("{},{}", p.gw_l3_addr(1), p.gw_l3_addr(2)),
        ));
        env.extend(agent.env.iter().map(|(k, v)| (k.clone(), subst(v))));
        let pid = core
            .lab
            .spawn_in_vm(&vm.short_id, "agent", &agent.program, &args, &env)
            .await?;
        info!(server = id, pid, "agent started");
        Ok(())
    }

    // --- alarms -----------------------------------------------------------------------------

    async fn start_evaluator(&self, a: AlarmRec) {
        let period = self
            .inner
            .cfg
            .alarm_period_override
            .unwrap_or(Duration::from_secs(u64::from(a.period_secs.max(1))));
        let pps = self.inner.pps.clone();
        let http = self.inner.http.clone();
        let id = a.id.clone();
        let handle = tokio::spawn(async move {
            let mut window = PpsWindow::default();
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await; // the first tick is immediate
            loop {
                tick.tick().await;
                let source = pps.lock().await.clone();
                let value = match source {
                    Some(s) => s.pps(&a.lb_id, &a.server_ids).await,
                    None => None,
                };
                if window.observe(value, a.threshold_pps, a.evaluation_periods) {
                    notify(&http, &a, value.unwrap_or(0), window.over).await;
                }
            }
        });
        if let Some(old) = self.inner.evaluators.lock().await.insert(id, handle) {
            old.abort();
        }
    }
}

/// The evaluator's state: Aodh's threshold semantics with `repeat_actions = false`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct PpsWindow {
    /// Consecutive periods above the threshold.
    over: u32,
    /// In state `alarm` (fired, not yet back below the threshold).
    alarmed: bool,
}

impl PpsWindow {
    /// Records one period's sample; true when the alarm must fire now (the
    /// `evaluation_periods`-th consecutive sample above `threshold`, once per transition).
    /// A missing sample (no data) breaks the streak but does not clear the alarm state.
    fn observe(&mut self, value: Option<u64>, threshold: u64, evaluation_periods: u32) -> bool {
        match value {
            Some(v) if v > threshold => self.over = self.over.saturating_add(1),
            Some(_) => {
                self.over = 0;
                self.alarmed = false;
            }
            None => self.over = 0,
        }
        if self.over >= evaluation_periods.max(1) && !self.alarmed {
            self.alarmed = true;
            return true;
        }
        false
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

/// POSTs an Aodh-style alarm notification. The URL may carry a token: never logged.
async fn notify(http: &reqwest::Client, a: &AlarmRec, pps: u64, count: u32) {
    let body = serde_json::json!({
        "alarm_id": a.id,
        "alarm_name": a.name,
        "severity": "low",
        "previous": "ok",
        "current": "alarm",
        "reason": format!(
            "Transition to alarm due to {count} samples outside threshold, most recent: {pps}"
        ),
        "reason_data": {
            "type": "threshold",
            "disposition": "outside",
            "count": count,
            "most_recent": pps,
        },
        "lb_id": a.lb_id,
    });
    match http.post(&a.webhook_url).json(&body).send().await {
        Ok(r) if r.status().is_success() => {
            info!(alarm = %a.id, lb = %a.lb_id, pps, "PPS alarm fired")
        }
        Ok(r) => warn!(alarm = %a.id, status = %r.status(), "alarm webhook refused"),
        Err(e) => warn!(alarm = %a.id, error = %e.without_url(), "alarm webhook failed"),
    }
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

fn read_state(path: &Path) -> Result<Persisted> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| LocalError::State {
            path: path.into(),
            reason: e.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Persisted::default()),
        Err(e) => Err(LocalError::io(path, e)),
    }
}

fn write_state(path: &Path, st: &Persisted) -> Result<()> {
    let body = serde_json::to_vec_pretty(st).map_err(|e| LocalError::State {
        path: path.into(),
        reason: e.to_string(),
    })?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| LocalError::io(dir, e))?;
    }
    let tmp = path.with_extension("tmp");
    write_private(&tmp, &body)?;
    std::fs::rename(&tmp, path).map_err(|e| LocalError::io(path, e))
}

/// Writes a file readable only by its owner (it may hold secrets).
fn write_private(path: &Path, body: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| LocalError::io(path, e))?;
    f.write_all(body).map_err(|e| LocalError::io(path, e))
}

fn proto_str(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
        Protocol::Icmp => "icmp",
        Protocol::Any => "any",
    }
}

fn rule_of(r: &RuleRec) -> SecurityGroupRule {
    SecurityGroupRule {
        id: r.id.clone(),
        security_group_id: r.group.clone(),
        spec: RuleSpec {
            direction: if r.ingress {
                Direction::Ingress
            } else {
                Direction::Egress
            },
            protocol: match r.protocol.as_str() {
                "tcp" => Protocol::Tcp,
                "udp" => Protocol::Udp,
                "icmp" => Protocol::Icmp,
                _ => Protocol::Any,
            },
            ports: r.ports,
            remote_cidr: r.remote,
        },
    }
}

// ---------------------------------------------------------------------------------------------
// Trait implementations

#[async_trait]
impl Compute for LocalCloud {
    async fn create_server_group(&self, spec: &ServerGroupSpec) -> CloudResult<ServerGroup> {
        let mut core = self.inner.core.lock().await;
        let rec = GroupRec {
            id: Uuid::new_v4().to_string(),
            name: spec.name.clone(),
            soft: spec.policy == ServerGroupPolicy::SoftAntiAffinity,
            members: Vec::new(),
        };
        core.st.groups.insert(rec.id.clone(), rec.clone());
        self.persist(&core)
            .map_err(|e| cloud_err("create_server_group", &spec.name, e))?;
        Ok(group_of(&rec))
    }

    async fn find_server_group(&self, name: &str) -> CloudResult<Option<ServerGroup>> {
        let core = self.inner.core.lock().await;
        Ok(core
            .st
            .groups
            .values()
            .find(|g| g.name == name)
            .map(group_of))
    }

    async fn delete_server_group(&self, id: &str) -> CloudResult<()> {
        let mut core = self.inner.core.lock().await;
        if core.st.groups.remove(id).is_some() {
            self.persist(&core)
                .map_err(|e| cloud_err("delete_server_group", id, e))?;
        }
        Ok(())
    }

    async fn create_server(&self, spec: &ServerSpec) -> CloudResult<Server> {
        let mut core = self.inner.core.lock().await;
        self.boot(&mut core, spec).await
    }

    async fn get_server(&self, id: &str) -> CloudResult<Option<Server>> {
        let mut core = self.inner.core.lock().await;
        let Some(rec) = core.st.servers.get(id).cloned() else {
            return Ok(None);
        };
        Ok(Some(Self::server_of(
            &mut core,
            &rec,
            self.inner.cfg.agent.is_some(),
        )))
    }

    async fn find_servers(&self, filter: &ServerFilter) -> CloudResult<Vec<Server>> {
        let mut core = self.inner.core.lock().await;
        let recs: Vec<ServerRec> = core
            .st
            .servers
            .values()
            .filter(|s| filter.name.as_ref().is_none_or(|n| &s.name == n))
            .filter(|s| {
                filter
                    .metadata
                    .iter()
                    .all(|(k, v)| s.metadata.get(k) == Some(v))
            })
            .cloned()
            .collect();
        let agent = self.inner.cfg.agent.is_some();
        Ok(recs
            .iter()
            .map(|r| Self::server_of(&mut core, r, agent))
            .collect())
    }

    async fn delete_server(&self, id: &str) -> CloudResult<()> {
        const OP: &str = "delete_server";
        let mut core = self.inner.core.lock().await;
        let Some(rec) = core.st.servers.get(id).cloned() else {
            return Ok(());
        };
        core.lab
            .remove_vm(&rec.short_id)
            .await
            .map_err(|e| cloud_err(OP, id, e))?;
        core.st
            .ports
            .retain(|_, p| !(p.server_owned && p.device_id.as_deref() == Some(id)));
        for p in core.st.ports.values_mut() {
            if p.device_id.as_deref() == Some(id) {
                p.device_id = None;
            }
        }
        for g in core.st.groups.values_mut() {
            g.members.retain(|m| m != id);
        }
        core.st.servers.remove(id);
        self.snapshot_and_persist(&mut core)
            .map_err(|e| cloud_err(OP, id, e))?;
        info!(server = id, "local LB VM deleted");
        Ok(())
    }
}

fn group_of(g: &GroupRec) -> ServerGroup {
    ServerGroup {
        id: g.id.clone(),
        name: g.name.clone(),
        policy: if g.soft {
            ServerGroupPolicy::SoftAntiAffinity
        } else {
            ServerGroupPolicy::AntiAffinity
        },
        members: g.members.clone(),
    }
}

#[async_trait]
impl Network for LocalCloud {
    async fn find_network(&self, id_or_name: &str) -> CloudResult<Option<NetworkInfo>> {
        Ok(self
            .networks()
            .into_iter()
            .map(|(n, _)| n)
            .find(|n| n.id == id_or_name || n.name == id_or_name))
    }

    async fn find_subnet(&self, id_or_name: &str) -> CloudResult<Option<Subnet>> {
        Ok(self
            .networks()
            .into_iter()
            .map(|(_, s)| s)
            .find(|s| s.id == id_or_name || s.name == id_or_name))
    }

    async fn create_security_group(&self, spec: &SecurityGroupSpec) -> CloudResult<SecurityGroup> {
        let mut core = self.inner.core.lock().await;
        let rec = SecGroupRec {
            id: Uuid::new_v4().to_string(),
            name: spec.name.clone(),
            description: spec.description.clone(),
        };
        core.st.security_groups.insert(rec.id.clone(), rec.clone());
        self.persist(&core)
            .map_err(|e| cloud_err("create_security_group", &spec.name, e))?;
        Ok(SecurityGroup {
            id: rec.id,
            name: rec.name,
        })
    }

    async fn find_security_group(&self, name: &str) -> CloudResult<Option<SecurityGroup>> {
        let core = self.inner.core.lock().await;
        Ok(core
            .st
            .security_groups
            .values()
            .find(|g| g.name == name)
            .map(|g| SecurityGroup {
                id: g.id.clone(),
                name: g.name.clone(),
            }))
    }

    async fn delete_security_group(&self, id: &str) -> CloudResult<()> {
        const OP: &str = "delete_security_group";
        let mut core = self.inner.core.lock().await;
        if !core.st.security_groups.contains_key(id) {
            return Ok(());
        }
        if core
            .st
            .ports
            .values()
            .any(|p| p.security_groups.iter().any(|g| g == id))
        {
            // As Neutron: 409 while a port still uses the group.
            return Err(CloudError::new(
                OP,
                id,
                CloudErrorKind::Conflict,
                "security group in use by a port",
            ));
        }
        core.st.security_groups.remove(id);
        core.st.rules.retain(|_, r| r.group != id);
        self.persist(&core).map_err(|e| cloud_err(OP, id, e))
    }

    async fn add_security_group_rule(
        &self,
        security_group_id: &str,
        rule: &RuleSpec,
    ) -> CloudResult<SecurityGroupRule> {
        const OP: &str = "add_security_group_rule";
        let mut core = self.inner.core.lock().await;
        if !core.st.security_groups.contains_key(security_group_id) {
            return Err(CloudError::not_found(OP, security_group_id).with_retryable(false));
        }
        if let Some((lo, hi)) = rule.ports
            && lo > hi
        {
            return Err(CloudError::new(
                OP,
                security_group_id,
                CloudErrorKind::Invalid,
                "port range min is above max",
            ));
        }
        if core
            .st
            .rules
            .values()
            .any(|r| r.group == security_group_id && rule_of(r).spec == *rule)
        {
            return Err(CloudError::new(
                OP,
                security_group_id,
                CloudErrorKind::Conflict,
                "security group rule already exists",
            )
            .with_retryable(false));
        }
        let rec = RuleRec {
            id: Uuid::new_v4().to_string(),
            group: security_group_id.into(),
            ingress: rule.direction == Direction::Ingress,
            protocol: proto_str(rule.protocol).into(),
            ports: rule.ports,
            remote: rule.remote_cidr,
        };
        core.st.rules.insert(rec.id.clone(), rec.clone());
        self.persist(&core)
            .map_err(|e| cloud_err(OP, security_group_id, e))?;
        self.sync_firewalls_of_group(&core, security_group_id)
            .await
            .map_err(|e| cloud_err(OP, security_group_id, e))?;
        Ok(rule_of(&rec))
    }

    async fn list_security_group_rules(
        &self,
        security_group_id: &str,
    ) -> CloudResult<Vec<SecurityGroupRule>> {
        let core = self.inner.core.lock().await;
        Ok(core
            .st
            .rules
            .values()
            .filter(|r| r.group == security_group_id)
            .map(rule_of)
            .collect())
    }

    async fn delete_security_group_rule(&self, rule_id: &str) -> CloudResult<()> {
        const OP: &str = "delete_security_group_rule";
        let mut core = self.inner.core.lock().await;
        if let Some(rule) = core.st.rules.remove(rule_id) {
            self.persist(&core).map_err(|e| cloud_err(OP, rule_id, e))?;
            self.sync_firewalls_of_group(&core, &rule.group)
                .await
                .map_err(|e| cloud_err(OP, rule_id, e))?;
        }
        Ok(())
    }

    async fn create_port(&self, spec: &PortSpec) -> CloudResult<Port> {
        const OP: &str = "create_port";
        let mut core = self.inner.core.lock().await;
        for sg in &spec.security_group_ids {
            if !core.st.security_groups.contains_key(sg) {
                return Err(CloudError::not_found(OP, sg).with_retryable(false));
            }
        }
        if let Some(sub) = &spec.subnet_id {
            let ok = self
                .networks()
                .iter()
                .any(|(n, s)| &s.id == sub && n.id == spec.network_id);
            if !ok {
                return Err(CloudError::new(
                    OP,
                    sub,
                    CloudErrorKind::Invalid,
                    "subnet is not on the port's network",
                ));
            }
        }
        let ip = self.allocate(&core.st, OP, &spec.network_id, spec.fixed_ip)?;
        let rec = PortRec {
            id: Uuid::new_v4().to_string(),
            name: spec.name.clone(),
            network_id: spec.network_id.clone(),
            ip,
            security_groups: spec.security_group_ids.clone(),
            pairs: Vec::new(),
            device_id: None,
            device_owner: spec.device_owner.clone(),
            server_owned: false,
        };
        core.st.ports.insert(rec.id.clone(), rec.clone());
        self.persist(&core)
            .map_err(|e| cloud_err(OP, &spec.name, e))?;
        Ok(Self::port_of(&rec))
    }

    async fn get_port(&self, id: &str) -> CloudResult<Option<Port>> {
        let core = self.inner.core.lock().await;
        Ok(core.st.ports.get(id).map(Self::port_of))
    }

    async fn find_ports(&self, name: &str) -> CloudResult<Vec<Port>> {
        let core = self.inner.core.lock().await;
        Ok(core
            .st
            .ports
            .values()
            .filter(|p| p.name == name)
            .map(Self::port_of)
            .collect())
    }

    async fn delete_port(&self, id: &str) -> CloudResult<()> {
        const OP: &str = "delete_port";
        let mut core = self.inner.core.lock().await;
        match core.st.ports.get(id) {
            None => Ok(()),
            Some(p) if p.server_owned => Err(CloudError::new(
                OP,
                id,
                CloudErrorKind::Conflict,
                "port is owned by a server",
            )
            .with_retryable(false)),
            Some(_) => {
                core.st.ports.remove(id);
                self.persist(&core).map_err(|e| cloud_err(OP, id, e))
            }
        }
    }

    async fn set_allowed_address_pairs(
        &self,
        port_id: &str,
        addresses: &[IpAddr],
    ) -> CloudResult<Port> {
        const OP: &str = "set_allowed_address_pairs";
        let mut core = self.inner.core.lock().await;
        let Some(rec) = core.st.ports.get(port_id).cloned() else {
            return Err(CloudError::not_found(OP, port_id).with_retryable(false));
        };
        if let Some(server) = &rec.device_id {
            self.sync_vips(&mut core, server, &rec.pairs, addresses)
                .await
                .map_err(|e| cloud_err(OP, port_id, e))?;
        }
        let port = {
            let p = core.st.ports.get_mut(port_id).expect("checked above");
            p.pairs = addresses.to_vec();
            Self::port_of(p)
        };
        self.persist(&core).map_err(|e| cloud_err(OP, port_id, e))?;
        Ok(port)
    }
}

#[async_trait]
impl Alarms for LocalCloud {
    async fn create_pps_alarm(&self, spec: &PpsAlarmSpec) -> CloudResult<Alarm> {
        const OP: &str = "create_pps_alarm";
        if spec.threshold_pps == 0 || spec.period_secs == 0 || spec.evaluation_periods == 0 {
            return Err(CloudError::new(
                OP,
                &spec.name,
                CloudErrorKind::Invalid,
                "threshold, period and evaluation periods must be positive",
            ));
        }
        if reqwest::Url::parse(&spec.webhook_url).is_err() {
            return Err(CloudError::new(
                OP,
                &spec.name,
                CloudErrorKind::Invalid,
                "webhook URL is not a valid URL",
            ));
        }
        let mut core = self.inner.core.lock().await;
        let rec = AlarmRec {
            id: Uuid::new_v4().to_string(),
            name: spec.name.clone(),
            lb_id: spec.lb_id.clone(),
            server_ids: spec.server_ids.clone(),
            threshold_pps: spec.threshold_pps,
            period_secs: spec.period_secs,
            evaluation_periods: spec.evaluation_periods,
            webhook_url: spec.webhook_url.clone(),
        };
        core.st.alarms.insert(rec.id.clone(), rec.clone());
        self.persist(&core)
            .map_err(|e| cloud_err(OP, &spec.name, e))?;
        self.start_evaluator(rec.clone()).await;
        Ok(Alarm {
            id: rec.id,
            name: rec.name,
            lb_id: rec.lb_id,
            server_ids: rec.server_ids,
        })
    }

    async fn find_alarm(&self, name: &str) -> CloudResult<Option<Alarm>> {
        let core = self.inner.core.lock().await;
        Ok(core
            .st
            .alarms
            .values()
            .find(|a| a.name == name)
            .map(|a| Alarm {
                id: a.id.clone(),
                name: a.name.clone(),
                lb_id: a.lb_id.clone(),
                server_ids: a.server_ids.clone(),
            }))
    }

    async fn delete_alarm(&self, id: &str) -> CloudResult<()> {
        let mut core = self.inner.core.lock().await;
        if let Some(h) = self.inner.evaluators.lock().await.remove(id) {
            h.abort();
        }
        if core.st.alarms.remove(id).is_some() {
            self.persist(&core)
                .map_err(|e| cloud_err("delete_alarm", id, e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pps_window_fires_once_per_transition_after_n_periods() {
        let mut w = PpsWindow::default();
        let t = 1000;
        let fires: Vec<bool> = [
            Some(2000), // 1 over
            Some(2000), // 2 over -> fire
            Some(3000), // still alarm: no refire
            Some(500),  // back to ok
            Some(2000), // 1
            None,       // no data breaks the streak
            Some(2000), // 1
            Some(2000), // 2 -> fire again
            Some(1000), // equal to the threshold is not above it: ok
        ]
        .into_iter()
        .map(|v| w.observe(v, t, 2))
        .collect();
        assert_eq!(
            fires,
            [false, true, false, false, false, false, false, true, false]
        );
        // evaluation_periods 0 behaves as 1.
        let mut w = PpsWindow::default();
        assert!(w.observe(Some(5), 1, 0));
    }

    #[test]
    fn stable_networks_have_fixed_ids_names_and_gateways() {
        let nets = stable_networks(&AddressPlan::default());
        let by_name = |n: &str| nets.iter().find(|(net, _)| net.name == n).unwrap();
        let (vip, vip_sub) = by_name(VIP_NETWORK_NAME);
        assert_eq!(vip.id, "6b6c6200-0000-4000-8000-000000000101");
        assert_eq!(vip_sub.id, plan::VIP_SUBNET_ID.to_string());
        assert_eq!(vip_sub.cidr.to_string(), "198.19.0.0/20");
        assert_eq!(vip.subnet_ids, vec![vip_sub.id.clone()]);
        let (l3, l3_sub) = by_name(L3_NETWORK_NAME);
        assert_eq!(l3.id, plan::L3_NETWORK_ID.to_string());
        assert_eq!(l3_sub.gateway_ip, Some("198.18.64.1".parse().unwrap()));
        let (_, m_sub) = by_name(MEMBER_NETWORK_NAME);
        assert_eq!(m_sub.name, "klb-member-net-subnet");
        let (mgmt, _) = by_name(MGMT_NETWORK_NAME);
        assert_eq!(mgmt.id, plan::MGMT_NETWORK_ID.to_string());
        assert_eq!(nets.len(), 4);
    }
}
