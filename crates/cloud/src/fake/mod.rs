//! The fault-injection cloud: every capability in memory, a ledger of live resources that tests
//! query, and per-call faults scripted by tests (error, delay, hang, lost reply) on the Nth call
//! of an operation. A latency knob makes every call sleep, for the flow benchmark.
//!
//! It is deliberately strict where real clouds are: creates never deduplicate by name (a flow that
//! does not look first leaves a visible duplicate), a security group in use cannot be deleted,
//! a port or server must exist to be changed, agents answer only on `Active` servers.
//!
//! By default everything lives in this process. [`FakeCloud::shared`] keeps the cloud's state
//! (the ledger, subnets' address pools, agents) in a JSON file instead, so several processes
//! (two `klb serve` nodes in the multi-node test) see one cloud, as nodes share OpenStack: every
//! call takes an exclusive lock on `<file>.lock`, loads the file, applies itself and writes the
//! file back atomically (temp file + rename, so a node killed mid-write never leaves half a
//! file). Faults, call counts and latency stay per process.

use std::collections::{BTreeMap, HashMap};
use std::fs::OpenOptions;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use klb_agent_client::agents::{AgentError, AgentResult, AgentSummary, AgentTarget, Agents};
use klb_proto::DesiredState;

use crate::{
    Alarm, Alarms, Cloud, CloudError, CloudErrorKind, CloudResult, Compute, Network, NetworkInfo,
    NicSpec, Port, PortSpec, PpsAlarmSpec, RuleSpec, SecurityGroup, SecurityGroupRule,
    SecurityGroupSpec, Server, ServerAddress, ServerFilter, ServerGroup, ServerGroupSpec,
    ServerSpec, ServerStatus, Subnet,
};

/// Every operation of the four traits, for fault scripting and call counting.
// Each variant is the trait method of the same name (see `Op::name`).
#[allow(missing_docs)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    CreateServerGroup,
    FindServerGroup,
    DeleteServerGroup,
    CreateServer,
    GetServer,
    FindServers,
    DeleteServer,
    FindNetwork,
    FindSubnet,
    CreateSecurityGroup,
    FindSecurityGroup,
    DeleteSecurityGroup,
    AddSecurityGroupRule,
    ListSecurityGroupRules,
    DeleteSecurityGroupRule,
    CreatePort,
    GetPort,
    FindPorts,
    DeletePort,
    SetAllowedAddressPairs,
    CreatePpsAlarm,
    FindAlarm,
    DeleteAlarm,
    AgentPush,
    AgentStatus,
    AgentDrain,
    AgentUndrain,
}

impl Op {
    /// All operations, for tests that inject into each.
    pub const ALL: [Op; 27] = [
        Op::CreateServerGroup,
        Op::FindServerGroup,
        Op::DeleteServerGroup,
        Op::CreateServer,
        Op::GetServer,
        Op::FindServers,
        Op::DeleteServer,
        Op::FindNetwork,
        Op::FindSubnet,
        Op::CreateSecurityGroup,
        Op::FindSecurityGroup,
        Op::DeleteSecurityGroup,
        Op::AddSecurityGroupRule,
        Op::ListSecurityGroupRules,
        Op::DeleteSecurityGroupRule,
        Op::CreatePort,
        Op::GetPort,
        Op::FindPorts,
        Op::DeletePort,
        Op::SetAllowedAddressPairs,
        Op::CreatePpsAlarm,
        Op::FindAlarm,
        Op::DeleteAlarm,
        Op::AgentPush,
        Op::AgentStatus,
        Op::AgentDrain,
        Op::AgentUndrain,
    ];

    /// The operation name used in [`CloudError::operation`].
    pub fn name(self) -> &'static str {
        match self {
            Op::CreateServerGroup => "create_server_group",
            Op::FindServerGroup => "find_server_group",
            Op::DeleteServerGroup => "delete_server_group",
            Op::CreateServer => "create_server",
            Op::GetServer => "get_server",
            Op::FindServers => "find_servers",
            Op::DeleteServer => "delete_server",
            Op::FindNetwork => "find_network",
            Op::FindSubnet => "find_subnet",
            Op::CreateSecurityGroup => "create_security_group",
            Op::FindSecurityGroup => "find_security_group",
            Op::DeleteSecurityGroup => "delete_security_group",
            Op::AddSecurityGroupRule => "add_security_group_rule",
            Op::ListSecurityGroupRules => "list_security_group_rules",
            Op::DeleteSecurityGroupRule => "delete_security_group_rule",
            Op::CreatePort => "create_port",
            Op::GetPort => "get_port",
            Op::FindPorts => "find_ports",
            Op::DeletePort => "delete_port",
            Op::SetAllowedAddressPairs => "set_allowed_address_pairs",
            Op::CreatePpsAlarm => "create_pps_alarm",
            Op::FindAlarm => "find_alarm",
            Op::DeleteAlarm => "delete_alarm",
            Op::AgentPush => "agent_push",
            Op::AgentStatus => "agent_status",
            Op::AgentDrain => "agent_drain",
            Op::AgentUndrain => "agent_undrain",
        }
    }
}

/// A scripted fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Fail without doing anything.
    Error {
        /// Whether the error says "try again".
        retryable: bool,
    },
    /// Sleep this long, then behave normally.
    Delay(Duration),
    /// Never return (the caller's timeout must fire). Nothing is done.
    Hang,
    /// Do the operation, then fail with a retryable error: the reply was lost. Tests idempotency.
    LostReply,
    /// Do the operation, then never return: the caller crashes or times out after the effect.
    HangAfter,
    /// For [`Op::CreateServer`]: the server is created but ends in `Error` instead of `Active`.
    BootError,
}

/// The kinds of resources in the ledger (named as the cloud types they stand for).
#[allow(missing_docs)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    ServerGroup,
    Server,
    SecurityGroup,
    SecurityGroupRule,
    Port,
    Alarm,
}

/// One live resource.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct LedgerEntry {
    /// What it is.
    pub kind: Kind,
    /// Its id.
    pub id: String,
    /// The resource name; rules are named `<group name>/rule`, ports the cloud made for a
    /// server `<server name>/nic<i>`.
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct FakeServer {
    server: Server,
    /// Remaining `get_server` polls before `Build` turns into the final status.
    polls_left: u32,
    final_status: ServerStatus,
    group_id: Option<String>,
    /// Ports created for this server (deleted with it).
    owned_ports: Vec<String>,
    /// Ports attached by id (kept when the server goes).
    attached_ports: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct FakeSubnet {
    subnet: Subnet,
    next_host: u32,
}

/// The cloud's resources: what a state file holds.
#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    next_id: u64,
    networks: BTreeMap<String, NetworkInfo>,
    subnets: BTreeMap<String, FakeSubnet>,
    server_groups: BTreeMap<String, ServerGroup>,
    servers: BTreeMap<String, FakeServer>,
    security_groups: BTreeMap<String, SecurityGroup>,
    rules: BTreeMap<String, SecurityGroupRule>,
    ports: BTreeMap<String, Port>,
    alarms: BTreeMap<String, Alarm>,
    /// Agent state per server id: (applied version, drained, last state pushed).
    agents: BTreeMap<String, (Option<u64>, bool, Option<DesiredState>)>,
    /// `get_server` polls a new server spends in `Build`.
    boot_polls: u32,
}

impl State {
    /// An empty cloud: new servers become `Active` on their first `get_server`.
    fn empty() -> Self {
        Self {
            boot_polls: 1,
            ..Self::default()
        }
    }

    /// Find a network by name or add it with one subnet; returns `(network_id, subnet_id)`.
    fn ensure_network(&mut self, name: &str, cidr: IpNet) -> (String, String) {
        if let Some(net) = self.networks.values().find(|n| n.name == name)
            && let Some(subnet) = net.subnet_ids.first()
        {
            return (net.id.clone(), subnet.clone());
        }
        self.add_network(name, cidr)
    }

    fn add_network(&mut self, name: &str, cidr: IpNet) -> (String, String) {
        let net_id = self.id("net");
        let subnet_id = self.id("subnet");
        let gateway = match cidr {
            IpNet::V4(n) => Some(IpAddr::V4((u32::from(n.network()) + 1).into())),
            IpNet::V6(n) => Some(IpAddr::V6((u128::from(n.network()) + 1).into())),
        };
        self.networks.insert(
            net_id.clone(),
            NetworkInfo {
                id: net_id.clone(),
                name: name.to_string(),
                subnet_ids: vec![subnet_id.clone()],
            },
        );
        self.subnets.insert(
            subnet_id.clone(),
            FakeSubnet {
                subnet: Subnet {
                    id: subnet_id.clone(),
                    name: format!("{name}-subnet"),
                    network_id: net_id.clone(),
                    cidr,
                    gateway_ip: gateway,
                },
                // Leave .1 (gateway) and a few low addresses free, like a DHCP pool start.
                next_host: 10,
            },
        );
        (net_id, subnet_id)
    }

    /// Every live resource, sorted.
    fn ledger(&self) -> Vec<LedgerEntry> {
        let mut out = Vec::new();
        let mut push = |kind, id: &str, name: &str| {
            out.push(LedgerEntry {
                kind,
                id: id.to_string(),
                name: name.to_string(),
            })
        };
        for g in self.server_groups.values() {
            push(Kind::ServerGroup, &g.id, &g.name);
        }
        for s in self.servers.values() {
            push(Kind::Server, &s.server.id, &s.server.name);
        }
        for g in self.security_groups.values() {
            push(Kind::SecurityGroup, &g.id, &g.name);
        }
        for r in self.rules.values() {
            let group = self
                .security_groups
                .get(&r.security_group_id)
                .map(|g| g.name.as_str())
                .unwrap_or("?");
            push(Kind::SecurityGroupRule, &r.id, &format!("{group}/rule"));
        }
        for p in self.ports.values() {
            push(Kind::Port, &p.id, &p.name);
        }
        for a in self.alarms.values() {
            push(Kind::Alarm, &a.id, &a.name);
        }
        out.sort();
        out
    }

    /// A fresh UUID, like OpenStack ids (so they fit `klb-model`'s `Uuid` fields).
    fn id(&mut self, _kind: &str) -> String {
        self.next_id += 1;
        uuid::Uuid::new_v4().to_string()
    }

    /// Next free address of a subnet.
    fn allocate_ip(&mut self, subnet_id: &str) -> CloudResult<IpAddr> {
        let sub = self
            .subnets
            .get_mut(subnet_id)
            .ok_or_else(|| CloudError::not_found("allocate_ip", subnet_id))?;
        let host = sub.next_host;
        sub.next_host += 1;
        let ip = match sub.subnet.cidr {
            IpNet::V4(n) => {
                let base = u32::from(n.network());
                if host as u64 >= (1u64 << (32 - n.prefix_len())) - 1 {
                    return Err(CloudError::new(
                        "allocate_ip",
                        subnet_id,
                        CloudErrorKind::Quota,
                        "subnet exhausted",
                    ));
                }
                IpAddr::V4((base + host).into())
            }
            IpNet::V6(n) => IpAddr::V6((u128::from(n.network()) + host as u128).into()),
        };
        Ok(ip)
    }

    fn subnet_of_network(&self, network_id: &str) -> Option<String> {
        self.subnets
            .values()
            .find(|s| s.subnet.network_id == network_id)
            .map(|s| s.subnet.id.clone())
    }

    fn new_port(&mut self, op: &'static str, spec: &PortSpec) -> CloudResult<Port> {
        if !self.networks.contains_key(&spec.network_id) {
            return Err(CloudError::not_found(op, &spec.network_id).with_retryable(false));
        }
        for sg in &spec.security_group_ids {
            if !self.security_groups.contains_key(sg) {
                return Err(CloudError::not_found(op, sg).with_retryable(false));
            }
        }
        let ip = match spec.fixed_ip {
            Some(ip) => {
                if self.ports.values().any(|p| p.fixed_ips.contains(&ip)) {
                    return Err(CloudError::new(
                        op,
                        ip.to_string(),
                        CloudErrorKind::Conflict,
                        "address in use",
                    )
                    .with_retryable(false));
                }
                ip
            }
            None => {
                let subnet = match &spec.subnet_id {
                    Some(s) => s.clone(),
                    None => self.subnet_of_network(&spec.network_id).ok_or_else(|| {
                        CloudError::new(
                            op,
                            &spec.network_id,
                            CloudErrorKind::Invalid,
                            "network has no subnet",
                        )
                    })?,
                };
                self.allocate_ip(&subnet)?
            }
        };
        let port = Port {
            id: self.id("port"),
            name: spec.name.clone(),
            network_id: spec.network_id.clone(),
            fixed_ips: vec![ip],
            security_group_ids: spec.security_group_ids.clone(),
            allowed_address_pairs: Vec::new(),
            device_id: None,
            device_owner: spec.device_owner.clone(),
        };
        self.ports.insert(port.id.clone(), port.clone());
        Ok(port)
    }
}

#[derive(Debug, Default)]
struct Faults {
    calls: HashMap<Op, u32>,
    /// (op, nth call) -> fault.
    script: HashMap<(Op, u32), Fault>,
    latency: Duration,
}

/// Why a shared state file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SharedStateError {
    /// Opening, locking, reading or writing the file failed.
    #[error("fake cloud state file {path}: {what}: {source}")]
    Io {
        /// The operation that failed.
        what: &'static str,
        /// The state file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file exists but does not hold a fake cloud's state.
    #[error("fake cloud state file {path} does not hold a fake cloud's state: {source}")]
    Corrupt {
        /// The state file.
        path: PathBuf,
        /// Why it does not parse.
        #[source]
        source: serde_json::Error,
    },
}

impl SharedStateError {
    /// The failure as the cloud error of the call that hit it (retryable, like a 503).
    fn into_cloud(self, op: Op) -> CloudError {
        CloudError::new(op.name(), "", CloudErrorKind::Unavailable, self.to_string())
    }
}

/// The state file of a shared fake cloud and its lock file.
#[derive(Debug)]
struct StateFile {
    path: PathBuf,
    /// `<path>.lock`: locked instead of the state file itself, because the state file is
    /// replaced by a rename on every write (a lock on the old inode would guard nothing).
    lock_path: PathBuf,
    /// `<path>.tmp`: the next version, renamed over `path` (only written under the lock).
    tmp_path: PathBuf,
}

impl StateFile {
    fn new(path: &Path) -> Self {
        let with_suffix = |suffix: &str| {
            let mut p = path.as_os_str().to_owned();
            p.push(suffix);
            PathBuf::from(p)
        };
        Self {
            path: path.to_path_buf(),
            lock_path: with_suffix(".lock"),
            tmp_path: with_suffix(".tmp"),
        }
    }

    fn io(
        &self,
        what: &'static str,
        path: &Path,
    ) -> impl FnOnce(std::io::Error) -> SharedStateError {
        let path = path.to_path_buf();
        move |source| SharedStateError::Io { what, path, source }
    }

    /// Under the exclusive file lock: load the file into `st` (an empty cloud if there is no
    /// file yet), run `f`, and write the result back if it changed. The lock is held only for
    /// this, never across a call's simulated latency. These are blocking file operations on a
    /// few kilobytes, done inline: a spawned blocking task could not borrow `f`, and the only
    /// wait is for the other process's equally short turn.
    fn transact<T>(
        &self,
        st: &mut State,
        f: impl FnOnce(&mut State) -> T,
    ) -> Result<T, SharedStateError> {
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&self.lock_path)
            .map_err(self.io("opening the lock file", &self.lock_path))?;
        // Released when `lock` is closed at the end of this function, or by the kernel when
        // the process dies (a SIGKILLed node never leaves the cloud locked).
        lock.lock()
            .map_err(self.io("locking the lock file", &self.lock_path))?;
        let before = match std::fs::read(&self.path) {
            Ok(bytes) => Some(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(self.io("reading", &self.path)(e)),
        };
        *st = match &before {
            Some(bytes) => {
                serde_json::from_slice(bytes).map_err(|source| SharedStateError::Corrupt {
                    path: self.path.clone(),
                    source,
                })?
            }
            None => State::empty(),
        };
        let out = f(st);
        let after = serde_json::to_vec(&*st).map_err(|source| SharedStateError::Corrupt {
            path: self.path.clone(),
            source,
        })?;
        if before.as_deref() != Some(after.as_slice()) {
            // 0600: pushed desired states may carry TLS keys. No fsync: the file only has to
            // survive a process being killed, not the machine.
            let mut tmp = OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true)
                .mode(0o600)
                .open(&self.tmp_path)
                .map_err(self.io("creating", &self.tmp_path))?;
            tmp.write_all(&after)
                .map_err(self.io("writing", &self.tmp_path))?;
            drop(tmp);
            std::fs::rename(&self.tmp_path, &self.path)
                .map_err(self.io("renaming the new version over", &self.path))?;
        }
        Ok(out)
    }
}

/// The fault-injection cloud, in memory or shared through a state file. Cheap to clone;
/// clones share state.
#[derive(Debug, Clone, Default)]
pub struct FakeCloud {
    /// The state itself (in memory), or the last version loaded from the state file; its lock
    /// also serializes this process's calls.
    state: Arc<Mutex<State>>,
    file: Option<Arc<StateFile>>,
    faults: Arc<Mutex<Faults>>,
}

impl FakeCloud {
    /// An empty cloud in memory: no networks, new servers become `Active` on their first
    /// `get_server`.
    pub fn new() -> Self {
        Self {
            state: Arc::new(Mutex::new(State::empty())),
            file: None,
            faults: Arc::default(),
        }
    }

    /// A cloud whose state lives in `path`, shared by every process opening the same file
    /// (created empty if missing; an existing one is adopted). Faults, call counts and latency
    /// stay per process. Fails if the file cannot be created, locked or read.
    pub fn shared(path: impl AsRef<Path>) -> Result<Self, SharedStateError> {
        let file = StateFile::new(path.as_ref());
        let mut state = State::empty();
        // Load (and create) it once now, so a bad path fails here and not on the first call.
        file.transact(&mut state, |_| ())?;
        Ok(Self {
            state: Arc::new(Mutex::new(state)),
            file: Some(Arc::new(file)),
            faults: Arc::default(),
        })
    }

    /// The state file, if this cloud is shared.
    pub fn state_file(&self) -> Option<&Path> {
        self.file.as_deref().map(|f| f.path.as_path())
    }

    /// Run `f` on the current state: directly in memory, or as one locked load-apply-store
    /// transaction on the state file.
    async fn try_with_state<T>(
        &self,
        f: impl FnOnce(&mut State) -> T,
    ) -> Result<T, SharedStateError> {
        let mut st = self.state.lock().await;
        match &self.file {
            None => Ok(f(&mut st)),
            Some(file) => file.transact(&mut st, f),
        }
    }

    /// [`Self::try_with_state`] for a cloud call: a state file failure is the call's error.
    async fn apply<T>(
        &self,
        op: Op,
        f: impl FnOnce(&mut State) -> CloudResult<T>,
    ) -> CloudResult<T> {
        self.try_with_state(f)
            .await
            .unwrap_or_else(|e| Err(e.into_cloud(op)))
    }

    /// [`Self::try_with_state`] for the helpers that cannot fail: a state file failure is
    /// logged and `f` runs on the state as last loaded.
    async fn with_state<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let mut st = self.state.lock().await;
        let Some(file) = &self.file else {
            return f(&mut st);
        };
        let mut f = Some(f);
        let mut out = None;
        let result = file.transact(&mut st, |s| {
            out = f.take().map(|f| f(s));
        });
        if let Err(e) = result {
            tracing::error!(error = %e, "fake cloud: state file failed; using the last loaded state");
        }
        match (out, f) {
            (Some(out), _) => out,
            // The file could not be loaded, so `f` has not run yet.
            (None, Some(f)) => f(&mut st),
            (None, None) => unreachable!("`f` either ran or is still here"),
        }
    }

    /// All four capabilities backed by this fake.
    pub fn cloud(&self) -> Cloud {
        Cloud {
            compute: Arc::new(self.clone()),
            network: Arc::new(self.clone()),
            alarms: Arc::new(self.clone()),
            agents: Arc::new(self.clone()),
        }
    }

    /// Add a network with one subnet; returns `(network_id, subnet_id)`.
    pub async fn add_network(&self, name: &str, cidr: IpNet) -> (String, String) {
        self.with_state(|st| st.add_network(name, cidr)).await
    }

    /// The network named `name` (and its first subnet), added with one subnet of `cidr` if
    /// there is none: what every process sharing a state file calls at start, so they agree
    /// on one set of networks. Returns `(network_id, subnet_id)`.
    pub async fn ensure_network(
        &self,
        name: &str,
        cidr: IpNet,
    ) -> Result<(String, String), SharedStateError> {
        self.try_with_state(|st| st.ensure_network(name, cidr))
            .await
    }

    /// How many `get_server` polls a new server spends in `Build`.
    pub async fn set_boot_polls(&self, polls: u32) {
        self.with_state(|st| st.boot_polls = polls).await;
    }

    /// Every call sleeps this long first (the bench's 50 ms cloud).
    pub async fn set_latency(&self, latency: Duration) {
        self.faults.lock().await.latency = latency;
    }

    /// Script `fault` for the `nth` call (1-based, counted since creation) of `op`.
    pub async fn inject(&self, op: Op, nth: u32, fault: Fault) {
        self.faults.lock().await.script.insert((op, nth), fault);
    }

    /// Script `fault` for the next call of `op`.
    pub async fn inject_next(&self, op: Op, fault: Fault) {
        let mut f = self.faults.lock().await;
        let next = f.calls.get(&op).copied().unwrap_or(0) + 1;
        f.script.insert((op, next), fault);
    }

    /// Drop all scripted faults that have not fired yet.
    pub async fn clear_faults(&self) {
        self.faults.lock().await.script.clear();
    }

    /// How often `op` has been called (in this process).
    pub async fn calls(&self, op: Op) -> u32 {
        self.faults
            .lock()
            .await
            .calls
            .get(&op)
            .copied()
            .unwrap_or(0)
    }

    /// Total calls over all operations (in this process).
    pub async fn total_calls(&self) -> u64 {
        self.faults
            .lock()
            .await
            .calls
            .values()
            .map(|&c| c as u64)
            .sum()
    }

    /// Every live resource, sorted. With a state file that cannot be read, the last loaded
    /// version (logged); [`Self::try_ledger`] reports the failure instead.
    pub async fn ledger(&self) -> Vec<LedgerEntry> {
        self.with_state(|st| st.ledger()).await
    }

    /// Every live resource, sorted, or why the state file could not be read.
    pub async fn try_ledger(&self) -> Result<Vec<LedgerEntry>, SharedStateError> {
        self.try_with_state(|st| st.ledger()).await
    }

    /// Ids of live resources of one kind.
    pub async fn live(&self, kind: Kind) -> Vec<String> {
        self.ledger()
            .await
            .into_iter()
            .filter(|e| e.kind == kind)
            .map(|e| e.id)
            .collect()
    }

    /// The last desired state pushed to a server's agent.
    pub async fn pushed_state(&self, server_id: &str) -> Option<DesiredState> {
        self.with_state(|st| st.agents.get(server_id).and_then(|a| a.2.clone()))
            .await
    }

    /// Force a server's status (e.g. to simulate a VM dying for failover tests).
    pub async fn set_server_status(&self, server_id: &str, status: ServerStatus) -> bool {
        self.with_state(|st| match st.servers.get_mut(server_id) {
            Some(s) => {
                s.polls_left = 0;
                s.final_status = status.clone();
                s.server.status = status;
                true
            }
            None => false,
        })
        .await
    }
    /// Count the call, apply latency and the scripted fault. Returns the fault that must be
    /// applied after the operation (lost reply, boot error), if any.
    async fn enter(&self, op: Op, resource: &str) -> CloudResult<Option<Fault>> {
        let (latency, fault) = {
            let mut f = self.faults.lock().await;
            let n = f.calls.entry(op).or_insert(0);
            *n += 1;
            let n = *n;
            (f.latency, f.script.remove(&(op, n)))
        };
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        match fault {
            None => Ok(None),
            Some(Fault::Error { retryable }) => Err(CloudError::new(
                op.name(),
                resource,
                if retryable {
                    CloudErrorKind::Unavailable
                } else {
                    CloudErrorKind::Invalid
                },
                "injected fault",
            )
            .with_retryable(retryable)),
            Some(Fault::Delay(d)) => {
                tokio::time::sleep(d).await;
                Ok(None)
            }
            Some(Fault::Hang) => {
                tracing::debug!(op = op.name(), "fake cloud: hanging forever");
                std::future::pending::<()>().await;
                unreachable!("pending never resolves")
            }
            Some(f @ (Fault::LostReply | Fault::HangAfter | Fault::BootError)) => Ok(Some(f)),
        }
    }
}

/// Apply a post-operation fault: a lost reply turns success into a retryable error.
async fn leave<T>(
    op: Op,
    resource: &str,
    after: Option<Fault>,
    result: CloudResult<T>,
) -> CloudResult<T> {
    if after == Some(Fault::HangAfter) {
        tracing::debug!(op = op.name(), "fake cloud: hanging after the operation");
        std::future::pending::<()>().await;
    }
    match (after, result) {
        (Some(Fault::LostReply), Ok(_)) => Err(CloudError::new(
            op.name(),
            resource,
            CloudErrorKind::Timeout,
            "injected fault: reply lost after the operation took effect",
        )),
        (_, r) => r,
    }
}

#[async_trait]
impl Compute for FakeCloud {
    async fn create_server_group(&self, spec: &ServerGroupSpec) -> CloudResult<ServerGroup> {
        let op = Op::CreateServerGroup;
        let after = self.enter(op, &spec.name).await?;
        let result = self
            .apply(op, |st| {
                let group = ServerGroup {
                    id: st.id("sgroup"),
                    name: spec.name.clone(),
                    policy: spec.policy,
                    members: Vec::new(),
                };
                st.server_groups.insert(group.id.clone(), group.clone());
                Ok(group)
            })
            .await;
        leave(op, &spec.name, after, result).await
    }

    async fn find_server_group(&self, name: &str) -> CloudResult<Option<ServerGroup>> {
        let op = Op::FindServerGroup;
        let after = self.enter(op, name).await?;
        let result = self
            .apply(op, |st| {
                Ok(st.server_groups.values().find(|g| g.name == name).cloned())
            })
            .await;
        leave(op, name, after, result).await
    }

    async fn delete_server_group(&self, id: &str) -> CloudResult<()> {
        let op = Op::DeleteServerGroup;
        let after = self.enter(op, id).await?;
        let result = self
            .apply(op, |st| {
                st.server_groups.remove(id);
                Ok(())
            })
            .await;
        leave(op, id, after, result).await
    }

    async fn create_server(&self, spec: &ServerSpec) -> CloudResult<Server> {
        let op = Op::CreateServer;
        let after = self.enter(op, &spec.name).await?;
        let result = self
            .apply(op, |st| {
                if let Some(g) = &spec.server_group_id
                    && !st.server_groups.contains_key(g)
                {
                    return Err(CloudError::not_found(op.name(), g).with_retryable(false));
                }
                if spec.image_id.is_empty() || spec.flavor_id.is_empty() {
                    return Err(CloudError::new(
                        op.name(),
                        &spec.name,
                        CloudErrorKind::Invalid,
                        "image and flavor are required",
                    ));
                }
                for nic in &spec.nics {
                    match nic {
                        NicSpec::Network { network_id, .. }
                            if !st.networks.contains_key(network_id) =>
                        {
                            return Err(
                                CloudError::not_found(op.name(), network_id).with_retryable(false)
                            );
                        }
                        NicSpec::Port { port_id } => match st.ports.get(port_id) {
                            None => {
                                return Err(
                                    CloudError::not_found(op.name(), port_id).with_retryable(false)
                                );
                            }
                            Some(p) if p.device_id.is_some() => {
                                return Err(CloudError::new(
                                    op.name(),
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
                let id = st.id("server");
                let mut addresses = Vec::new();
                let mut owned_ports = Vec::new();
                let mut attached_ports = Vec::new();
                for (i, nic) in spec.nics.iter().enumerate() {
                    let port = match nic {
                        NicSpec::Network {
                            network_id,
                            fixed_ip,
                        } => {
                            let port = st.new_port(
                                op.name(),
                                &PortSpec {
                                    name: format!("{}/nic{i}", spec.name),
                                    network_id: network_id.clone(),
                                    subnet_id: None,
                                    fixed_ip: *fixed_ip,
                                    security_group_ids: spec.security_group_ids.clone(),
                                    device_owner: Some("compute:nova".into()),
                                },
                            )?;
                            owned_ports.push(port.id.clone());
                            port
                        }
                        NicSpec::Port { port_id } => {
                            attached_ports.push(port_id.clone());
                            st.ports.get(port_id).cloned().expect("checked above")
                        }
                    };
                    if let Some(p) = st.ports.get_mut(&port.id) {
                        p.device_id = Some(id.clone());
                    }
                    addresses.push(ServerAddress {
                        network_id: port.network_id.clone(),
                        ip: port.fixed_ips[0],
                        port_id: port.id.clone(),
                    });
                }
                if let Some(g) = &spec.server_group_id
                    && let Some(group) = st.server_groups.get_mut(g)
                {
                    group.members.push(id.clone());
                }
                let final_status = if after == Some(Fault::BootError) {
                    ServerStatus::Error
                } else {
                    ServerStatus::Active
                };
                let server = Server {
                    id: id.clone(),
                    name: spec.name.clone(),
                    status: ServerStatus::Build,
                    addresses,
                    metadata: spec.metadata.clone(),
                    fault: None,
                };
                let polls_left = st.boot_polls;
                st.servers.insert(
                    id.clone(),
                    FakeServer {
                        server: server.clone(),
                        polls_left,
                        final_status,
                        group_id: spec.server_group_id.clone(),
                        owned_ports,
                        attached_ports,
                    },
                );
                st.agents.insert(id, (None, false, None));
                Ok(server)
            })
            .await;
        leave(op, &spec.name, after, result).await
    }

    async fn get_server(&self, id: &str) -> CloudResult<Option<Server>> {
        let op = Op::GetServer;
        let after = self.enter(op, id).await?;
        let result = self
            .apply(op, |st| {
                Ok(st.servers.get_mut(id).map(|s| {
                    if s.server.status == ServerStatus::Build {
                        if s.polls_left <= 1 {
                            s.server.status = s.final_status.clone();
                            if s.server.status == ServerStatus::Error {
                                s.server.fault = Some("injected boot failure".into());
                            }
                        } else {
                            s.polls_left -= 1;
                        }
                    }
                    s.server.clone()
                }))
            })
            .await;
        leave(op, id, after, result).await
    }

    async fn find_servers(&self, filter: &ServerFilter) -> CloudResult<Vec<Server>> {
        let op = Op::FindServers;
        let after = self.enter(op, filter.name.as_deref().unwrap_or("")).await?;
        let result = self
            .apply(op, |st| {
                Ok(st
                    .servers
                    .values()
                    .map(|s| &s.server)
                    .filter(|s| filter.name.as_ref().is_none_or(|n| &s.name == n))
                    .filter(|s| {
                        filter
                            .metadata
                            .iter()
                            .all(|(k, v)| s.metadata.get(k) == Some(v))
                    })
                    .cloned()
                    .collect())
            })
            .await;
        leave(op, "", after, result).await
    }

    async fn delete_server(&self, id: &str) -> CloudResult<()> {
        let op = Op::DeleteServer;
        let after = self.enter(op, id).await?;
        let result = self
            .apply(op, |st| {
                if let Some(s) = st.servers.remove(id) {
                    for p in &s.owned_ports {
                        st.ports.remove(p);
                    }
                    for p in &s.attached_ports {
                        if let Some(port) = st.ports.get_mut(p) {
                            port.device_id = None;
                        }
                    }
                    if let Some(group) = s.group_id.and_then(|g| st.server_groups.get_mut(&g)) {
                        group.members.retain(|m| m != id);
                    }
                    st.agents.remove(id);
                }
                Ok(())
            })
            .await;
        leave(op, id, after, result).await
    }
}

#[async_trait]
impl Network for FakeCloud {
    async fn find_network(&self, id_or_name: &str) -> CloudResult<Option<NetworkInfo>> {
        let op = Op::FindNetwork;
        let after = self.enter(op, id_or_name).await?;
        let result = self
            .apply(op, |st| {
                Ok(st
                    .networks
                    .values()
                    .find(|n| n.id == id_or_name || n.name == id_or_name)
                    .cloned())
            })
            .await;
        leave(op, id_or_name, after, result).await
    }

    async fn find_subnet(&self, id_or_name: &str) -> CloudResult<Option<Subnet>> {
        let op = Op::FindSubnet;
        let after = self.enter(op, id_or_name).await?;
        let result = self
            .apply(op, |st| {
                Ok(st
                    .subnets
                    .values()
                    .map(|s| &s.subnet)
                    .find(|s| s.id == id_or_name || s.name == id_or_name)
                    .cloned())
            })
            .await;
        leave(op, id_or_name, after, result).await
    }

    async fn create_security_group(&self, spec: &SecurityGroupSpec) -> CloudResult<SecurityGroup> {
        let op = Op::CreateSecurityGroup;
        let after = self.enter(op, &spec.name).await?;
        let result = self
            .apply(op, |st| {
                let group = SecurityGroup {
                    id: st.id("secgroup"),
                    name: spec.name.clone(),
                };
                st.security_groups.insert(group.id.clone(), group.clone());
                Ok(group)
            })
            .await;
        leave(op, &spec.name, after, result).await
    }

    async fn find_security_group(&self, name: &str) -> CloudResult<Option<SecurityGroup>> {
        let op = Op::FindSecurityGroup;
        let after = self.enter(op, name).await?;
        let result = self
            .apply(op, |st| {
                Ok(st
                    .security_groups
                    .values()
                    .find(|g| g.name == name)
                    .cloned())
            })
            .await;
        leave(op, name, after, result).await
    }

    async fn delete_security_group(&self, id: &str) -> CloudResult<()> {
        let op = Op::DeleteSecurityGroup;
        let after = self.enter(op, id).await?;
        let result = self
            .apply(op, |st| {
                if st
                    .ports
                    .values()
                    .any(|p| p.security_group_ids.iter().any(|g| g == id))
                {
                    // Neutron answers 409 while a port still uses the group.
                    Err(CloudError::new(
                        op.name(),
                        id,
                        CloudErrorKind::Conflict,
                        "security group in use by a port",
                    ))
                } else {
                    st.security_groups.remove(id);
                    st.rules.retain(|_, r| r.security_group_id != id);
                    Ok(())
                }
            })
            .await;
        leave(op, id, after, result).await
    }

    async fn add_security_group_rule(
        &self,
        security_group_id: &str,
        rule: &RuleSpec,
    ) -> CloudResult<SecurityGroupRule> {
        let op = Op::AddSecurityGroupRule;
        let after = self.enter(op, security_group_id).await?;
        let result = self
            .apply(op, |st| {
                if !st.security_groups.contains_key(security_group_id) {
                    Err(CloudError::not_found(op.name(), security_group_id).with_retryable(false))
                } else if st
                    .rules
                    .values()
                    .any(|r| r.security_group_id == security_group_id && &r.spec == rule)
                {
                    // Neutron rejects exact duplicate rules with 409.
                    Err(CloudError::new(
                        op.name(),
                        security_group_id,
                        CloudErrorKind::Conflict,
                        "security group rule already exists",
                    )
                    .with_retryable(false))
                } else {
                    let r = SecurityGroupRule {
                        id: st.id("rule"),
                        security_group_id: security_group_id.to_string(),
                        spec: rule.clone(),
                    };
                    st.rules.insert(r.id.clone(), r.clone());
                    Ok(r)
                }
            })
            .await;
        leave(op, security_group_id, after, result).await
    }

    async fn list_security_group_rules(
        &self,
        security_group_id: &str,
    ) -> CloudResult<Vec<SecurityGroupRule>> {
        let op = Op::ListSecurityGroupRules;
        let after = self.enter(op, security_group_id).await?;
        let result = self
            .apply(op, |st| {
                Ok(st
                    .rules
                    .values()
                    .filter(|r| r.security_group_id == security_group_id)
                    .cloned()
                    .collect())
            })
            .await;
        leave(op, security_group_id, after, result).await
    }

    async fn delete_security_group_rule(&self, rule_id: &str) -> CloudResult<()> {
        let op = Op::DeleteSecurityGroupRule;
        let after = self.enter(op, rule_id).await?;
        let result = self
            .apply(op, |st| {
                st.rules.remove(rule_id);
                Ok(())
            })
            .await;
        leave(op, rule_id, after, result).await
    }

    async fn create_port(&self, spec: &PortSpec) -> CloudResult<Port> {
        let op = Op::CreatePort;
        let after = self.enter(op, &spec.name).await?;
        let result = self.apply(op, |st| st.new_port(op.name(), spec)).await;
        leave(op, &spec.name, after, result).await
    }

    async fn get_port(&self, id: &str) -> CloudResult<Option<Port>> {
        let op = Op::GetPort;
        let after = self.enter(op, id).await?;
        let result = self.apply(op, |st| Ok(st.ports.get(id).cloned())).await;
        leave(op, id, after, result).await
    }

    async fn find_ports(&self, name: &str) -> CloudResult<Vec<Port>> {
        let op = Op::FindPorts;
        let after = self.enter(op, name).await?;
        let result = self
            .apply(op, |st| {
                Ok(st
                    .ports
                    .values()
                    .filter(|p| p.name == name)
                    .cloned()
                    .collect())
            })
            .await;
        leave(op, name, after, result).await
    }

    async fn delete_port(&self, id: &str) -> CloudResult<()> {
        let op = Op::DeletePort;
        let after = self.enter(op, id).await?;
        let result = self
            .apply(op, |st| {
                match st.ports.get(id) {
                    Some(p) if p.device_owner.as_deref() == Some("compute:nova") => {
                        // Nova owns it; Neutron would let it go but the server would lose a NIC.
                        Err(CloudError::new(
                            op.name(),
                            id,
                            CloudErrorKind::Conflict,
                            "port is owned by a server",
                        )
                        .with_retryable(false))
                    }
                    _ => {
                        st.ports.remove(id);
                        Ok(())
                    }
                }
            })
            .await;
        leave(op, id, after, result).await
    }

    async fn set_allowed_address_pairs(
        &self,
        port_id: &str,
        addresses: &[IpAddr],
    ) -> CloudResult<Port> {
        let op = Op::SetAllowedAddressPairs;
        let after = self.enter(op, port_id).await?;
        let result = self
            .apply(op, |st| match st.ports.get_mut(port_id) {
                Some(p) => {
                    p.allowed_address_pairs = addresses.to_vec();
                    Ok(p.clone())
                }
                None => Err(CloudError::not_found(op.name(), port_id).with_retryable(false)),
            })
            .await;
        leave(op, port_id, after, result).await
    }
}

#[async_trait]
impl Alarms for FakeCloud {
    async fn create_pps_alarm(&self, spec: &PpsAlarmSpec) -> CloudResult<Alarm> {
        let op = Op::CreatePpsAlarm;
        let after = self.enter(op, &spec.name).await?;
        let result = if spec.threshold_pps == 0 || spec.period_secs == 0 {
            Err(CloudError::new(
                op.name(),
                &spec.name,
                CloudErrorKind::Invalid,
                "threshold and period must be positive",
            ))
        } else {
            self.apply(op, |st| {
                let alarm = Alarm {
                    id: st.id("alarm"),
                    name: spec.name.clone(),
                    lb_id: spec.lb_id.clone(),
                    server_ids: spec.server_ids.clone(),
                };
                st.alarms.insert(alarm.id.clone(), alarm.clone());
                Ok(alarm)
            })
            .await
        };
        leave(op, &spec.name, after, result).await
    }

    async fn find_alarm(&self, name: &str) -> CloudResult<Option<Alarm>> {
        let op = Op::FindAlarm;
        let after = self.enter(op, name).await?;
        let result = self
            .apply(op, |st| {
                Ok(st.alarms.values().find(|a| a.name == name).cloned())
            })
            .await;
        leave(op, name, after, result).await
    }

    async fn delete_alarm(&self, id: &str) -> CloudResult<()> {
        let op = Op::DeleteAlarm;
        let after = self.enter(op, id).await?;
        let result = self
            .apply(op, |st| {
                st.alarms.remove(id);
                Ok(())
            })
            .await;
        leave(op, id, after, result).await
    }
}

impl FakeCloud {
    /// The agent answers only on an existing, active server at one of its addresses.
    async fn agent_mut<R>(
        &self,
        op: Op,
        target: &AgentTarget,
        f: impl FnOnce(&mut (Option<u64>, bool, Option<DesiredState>)) -> R,
    ) -> CloudResult<R> {
        self.apply(op, |st| {
            let unreachable = |msg: &str| {
                CloudError::new(
                    op.name(),
                    &target.server_id,
                    CloudErrorKind::Unavailable,
                    msg.to_string(),
                )
            };
            let server = st
                .servers
                .get(&target.server_id)
                .ok_or_else(|| unreachable("no such LB VM"))?;
            if server.server.status != ServerStatus::Active {
                return Err(unreachable("LB VM is not active"));
            }
            if !server
                .server
                .addresses
                .iter()
                .any(|a| a.ip == target.address.ip())
            {
                return Err(unreachable("no agent at this address"));
            }
            let agent = st
                .agents
                .get_mut(&target.server_id)
                .ok_or_else(|| unreachable("agent not running"))?;
            Ok(f(agent))
        })
        .await
    }
}

fn agent_status(a: &(Option<u64>, bool, Option<DesiredState>)) -> AgentSummary {
    AgentSummary {
        applied_version: a.0,
        drained: a.1,
        haproxy_up: a.2.is_some(),
    }
}

/// The fake's agent calls run through the same fault and ledger machinery as its cloud calls
/// (scripted faults are [`CloudError`]s); the agent seam has its own error type.
fn agent_error(e: CloudError) -> AgentError {
    AgentError {
        operation: e.operation,
        server_id: e.resource,
        retryable: e.retryable,
        message: format!("{}: {}", e.kind, e.message),
    }
}

#[async_trait]
impl Agents for FakeCloud {
    async fn push(&self, target: &AgentTarget, state: &DesiredState) -> AgentResult<AgentSummary> {
        let op = Op::AgentPush;
        async {
            let after = self.enter(op, &target.server_id).await?;
            let version = Some(state.version);
            let result = self
                .agent_mut(op, target, |a| {
                    a.0 = version;
                    a.2 = Some(state.clone());
                    agent_status(a)
                })
                .await;
            leave(op, &target.server_id, after, result).await
        }
        .await
        .map_err(agent_error)
    }

    async fn status(&self, target: &AgentTarget) -> AgentResult<AgentSummary> {
        let op = Op::AgentStatus;
        async {
            let after = self.enter(op, &target.server_id).await?;
            let result = self.agent_mut(op, target, |a| agent_status(a)).await;
            leave(op, &target.server_id, after, result).await
        }
        .await
        .map_err(agent_error)
    }

    async fn drain(&self, target: &AgentTarget) -> AgentResult<AgentSummary> {
        let op = Op::AgentDrain;
        async {
            let after = self.enter(op, &target.server_id).await?;
            let result = self
                .agent_mut(op, target, |a| {
                    a.1 = true;
                    agent_status(a)
                })
                .await;
            leave(op, &target.server_id, after, result).await
        }
        .await
        .map_err(agent_error)
    }

    async fn undrain(&self, target: &AgentTarget) -> AgentResult<AgentSummary> {
        let op = Op::AgentUndrain;
        async {
            let after = self.enter(op, &target.server_id).await?;
            let result = self
                .agent_mut(op, target, |a| {
                    a.1 = false;
                    agent_status(a)
                })
                .await;
            leave(op, &target.server_id, after, result).await
        }
        .await
        .map_err(agent_error)
    }
}

/// A convenience agent address for a server's first address (tests and the fake flows).
pub fn agent_target(server: &Server, port: u16) -> Option<AgentTarget> {
    server.addresses.first().map(|a| AgentTarget {
        server_id: server.id.clone(),
        address: SocketAddr::new(a.ip, port),
    })
}

#[cfg(test)]
mod tests;
