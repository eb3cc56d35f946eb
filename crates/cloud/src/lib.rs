//! The cloud seams klb's flows drive, split by capability: [`Compute`] (server groups and LB VMs),
//! [`Network`] (security groups, ports, allowed-address pairs, VIPs), [`Alarms`] (the per-LB PPS
//! alarm). [`Cloud`] bundles them with the LB VMs' agents (`klb_agent_client::agents::Agents`:
//! the agent is klb's own service, not a cloud capability, so its seam lives beside its client
//! and this crate depends on that one, never the reverse). Drivers implement the capabilities:
//! `openstack` (Keystone/Nova/Neutron/Aodh), `klb-local` (network namespaces on this host) and
//! [`fake`], the in-memory cloud with a ledger of live resources and scripted faults used by the
//! flow tests (its fake servers also answer as agents).
//!
//! Contract shared by every driver (the flow engine relies on it for crash safety):
//! - Every create takes a deterministic `name` (see [`names`]). Creates do **not** deduplicate;
//!   a step that may have run before (crash, lost reply) first calls the matching `find_*` and
//!   adopts what it finds. The fake cloud never deduplicates either, so a flow that forgets to
//!   look first leaves a visible duplicate in the ledger.
//! - Deletes are idempotent: deleting a missing resource is `Ok(())`.
//! - `get_*`/`find_*` return `Ok(None)` / an empty list for missing resources, never an error.
//! - Every error is a [`CloudError`] carrying the operation, the resource and whether a retry
//!   may succeed.
//!
//! State holds the traits as `Arc<dyn Compute>` and friends ([`Cloud`] bundles them).
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod fake;
pub mod names;

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use async_trait::async_trait;
use ipnet::IpNet;
use klb_agent_client::agents::Agents;
use serde::{Deserialize, Serialize};

/// Result of a cloud call.
pub type CloudResult<T> = Result<T, CloudError>;

/// What went wrong, coarsely: enough for callers to decide (retry, adopt, give up).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloudErrorKind {
    /// The referenced resource (e.g. a network or a server group) does not exist.
    NotFound,
    /// The request conflicts with the resource's state (e.g. an IP already in use).
    Conflict,
    /// The request itself is invalid (bad CIDR, unknown flavor); retrying cannot help.
    Invalid,
    /// Quota or capacity exhausted.
    Quota,
    /// The backend is unreachable, overloaded or answered 5xx.
    Unavailable,
    /// The call did not finish in time.
    Timeout,
    /// Authentication or authorization with the cloud failed.
    Auth,
    /// Anything else.
    Other,
}

impl fmt::Display for CloudErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Self::NotFound => "not found",
            Self::Conflict => "conflict",
            Self::Invalid => "invalid request",
            Self::Quota => "quota exceeded",
            Self::Unavailable => "unavailable",
            Self::Timeout => "timed out",
            Self::Auth => "authentication failed",
            Self::Other => "failed",
        };
        f.write_str(s)
    }
}

/// A failed cloud call with its context.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cloud {operation} {resource}: {kind}: {message}")]
pub struct CloudError {
    /// The operation, e.g. `create_server`.
    pub operation: &'static str,
    /// The resource id or name the call was about (empty if none).
    pub resource: String,
    /// Coarse classification.
    pub kind: CloudErrorKind,
    /// Whether the same call may succeed if retried later.
    pub retryable: bool,
    /// Human-readable detail (never contains secrets).
    pub message: String,
}

impl CloudError {
    /// A new error; `retryable` defaults from the kind (unavailable/timeout/conflict retry).
    pub fn new(
        operation: &'static str,
        resource: impl Into<String>,
        kind: CloudErrorKind,
        message: impl Into<String>,
    ) -> Self {
        let retryable = matches!(
            kind,
            CloudErrorKind::Unavailable | CloudErrorKind::Timeout | CloudErrorKind::Conflict
        );
        Self {
            operation,
            resource: resource.into(),
            kind,
            retryable,
            message: message.into(),
        }
    }

    /// Override the retry decision.
    pub fn with_retryable(mut self, retryable: bool) -> Self {
        self.retryable = retryable;
        self
    }

    /// Shorthand for a missing resource.
    pub fn not_found(operation: &'static str, resource: impl Into<String>) -> Self {
        Self::new(
            operation,
            resource,
            CloudErrorKind::NotFound,
            "does not exist",
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Compute
// ---------------------------------------------------------------------------------------------

/// Placement policy of a server group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServerGroupPolicy {
    /// Never two members on one host (the seed's "separation of VM server to different host").
    AntiAffinity,
    /// Prefer different hosts, allow sharing when no other host fits.
    SoftAntiAffinity,
}

/// What to create: a server group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerGroupSpec {
    /// Deterministic name, e.g. [`names::server_group`].
    pub name: String,
    /// Placement policy.
    pub policy: ServerGroupPolicy,
}

/// A server group as the cloud reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerGroup {
    /// Cloud id.
    pub id: String,
    /// Name (see [`names::server_group`]).
    pub name: String,
    /// Placement policy.
    pub policy: ServerGroupPolicy,
    /// Ids of the servers in the group.
    pub members: Vec<String>,
}

/// One NIC of a new server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NicSpec {
    /// Let the cloud create a port on this network (deleted with the server).
    Network {
        /// The network.
        network_id: String,
        /// A fixed address on that network, if wanted.
        fixed_ip: Option<IpAddr>,
    },
    /// Attach an existing port (created with [`Network::create_port`]; not deleted with the server).
    Port {
        /// The port.
        port_id: String,
    },
}

/// What to create: one LB VM.
#[derive(Clone, PartialEq, Eq)]
pub struct ServerSpec {
    /// Deterministic name, e.g. [`names::server`].
    pub name: String,
    /// Image to boot (the seed's `image_id`).
    pub image_id: String,
    /// Compute flavor (the seed's `base_flavor_id`).
    pub flavor_id: String,
    /// Server group id (anti-affinity), if any.
    pub server_group_id: Option<String>,
    /// NICs in order (the first is eth0).
    pub nics: Vec<NicSpec>,
    /// Security groups applied to the ports the cloud creates for [`NicSpec::Network`].
    pub security_group_ids: Vec<String>,
    /// Cloud-init user data for agent bootstrap. May hold secrets: never logged (see `Debug`).
    pub user_data: Option<String>,
    /// Boot from a new volume of this size in GiB (the seed's `loadbalancer_instance_volume_size`).
    pub boot_volume_gib: Option<u32>,
    /// Availability zone, if the LB asks for one.
    pub availability_zone: Option<String>,
    /// Free-form metadata; klb sets [`META_LB_ID`] and [`META_VM_INDEX`].
    pub metadata: BTreeMap<String, String>,
}

impl fmt::Debug for ServerSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerSpec")
            .field("name", &self.name)
            .field("image_id", &self.image_id)
            .field("flavor_id", &self.flavor_id)
            .field("server_group_id", &self.server_group_id)
            .field("nics", &self.nics)
            .field("security_group_ids", &self.security_group_ids)
            .field("user_data", &self.user_data.as_ref().map(|_| "<redacted>"))
            .field("boot_volume_gib", &self.boot_volume_gib)
            .field("availability_zone", &self.availability_zone)
            .field("metadata", &self.metadata)
            .finish()
    }
}

/// Metadata key holding the load balancer id on every klb resource that supports metadata.
pub const META_LB_ID: &str = "klb_lb_id";
/// Metadata key holding the LB VM index (0-based) on a server.
pub const META_VM_INDEX: &str = "klb_vm_index";

/// Server lifecycle status, reduced to what flows act on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServerStatus {
    /// Still booting.
    Build,
    /// Running.
    Active,
    /// Failed to boot or broken.
    Error,
    /// Any other status string the cloud reports (SHUTOFF, DELETED, ...).
    Other(String),
}

/// One address of a server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerAddress {
    /// The network.
    pub network_id: String,
    /// The address.
    pub ip: IpAddr,
    /// The port carrying the address (needed for allowed-address pairs).
    pub port_id: String,
}

/// A server as the cloud reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Server {
    /// Cloud id.
    pub id: String,
    /// Name (see [`names::server`]).
    pub name: String,
    /// Lifecycle status.
    pub status: ServerStatus,
    /// Addresses, one per NIC address.
    pub addresses: Vec<ServerAddress>,
    /// Metadata (klb sets [`META_LB_ID`] and [`META_VM_INDEX`]).
    pub metadata: BTreeMap<String, String>,
    /// The reason for `Error`, if the cloud gives one.
    pub fault: Option<String>,
}

impl Server {
    /// The first address on `network_id`, if any.
    pub fn address_on(&self, network_id: &str) -> Option<&ServerAddress> {
        self.addresses.iter().find(|a| a.network_id == network_id)
    }
}

/// Which servers to list; every set field must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerFilter {
    /// Exact name.
    pub name: Option<String>,
    /// Every pair must be present in the server's metadata.
    pub metadata: BTreeMap<String, String>,
}

impl ServerFilter {
    /// Servers with this exact name.
    pub fn name(name: impl Into<String>) -> Self {
        Self {
            name: Some(name.into()),
            ..Self::default()
        }
    }

    /// Servers belonging to a load balancer (by [`META_LB_ID`]).
    pub fn lb(lb_id: &str) -> Self {
        let mut metadata = BTreeMap::new();
        metadata.insert(META_LB_ID.to_string(), lb_id.to_string());
        Self {
            name: None,
            metadata,
        }
    }
}

/// Servers and server groups (Nova, or namespaces on the local cloud).
#[async_trait]
pub trait Compute: Send + Sync {
    /// Create a server group.
    async fn create_server_group(&self, spec: &ServerGroupSpec) -> CloudResult<ServerGroup>;
    /// The server group with this exact name, if any.
    async fn find_server_group(&self, name: &str) -> CloudResult<Option<ServerGroup>>;
    /// Idempotent: a missing group is `Ok`.
    async fn delete_server_group(&self, id: &str) -> CloudResult<()>;

    /// Start booting a server; it is usually in `Build` when this returns.
    async fn create_server(&self, spec: &ServerSpec) -> CloudResult<Server>;
    /// A server by id; `None` when the cloud has no such server.
    async fn get_server(&self, id: &str) -> CloudResult<Option<Server>>;
    /// Servers matching every set field of `filter`.
    async fn find_servers(&self, filter: &ServerFilter) -> CloudResult<Vec<Server>>;
    /// Idempotent: a missing server is `Ok`. Ports the cloud created for [`NicSpec::Network`]
    /// go with the server; ports passed as [`NicSpec::Port`] stay.
    async fn delete_server(&self, id: &str) -> CloudResult<()>;
}

// ---------------------------------------------------------------------------------------------
// Network
// ---------------------------------------------------------------------------------------------

/// A network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkInfo {
    /// Cloud id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Its subnets.
    pub subnet_ids: Vec<String>,
}

/// A subnet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subnet {
    /// Cloud id.
    pub id: String,
    /// Name.
    pub name: String,
    /// The network.
    pub network_id: String,
    /// Address range.
    pub cidr: IpNet,
    /// Gateway address, if any.
    pub gateway_ip: Option<IpAddr>,
}

/// What to create: a security group (rules are added separately).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityGroupSpec {
    /// Deterministic name, e.g. [`names::security_group`].
    pub name: String,
    /// Shown to operators.
    pub description: String,
}

/// A security group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityGroup {
    /// Cloud id.
    pub id: String,
    /// Name (see [`names::security_group`]).
    pub name: String,
}

/// Traffic direction of a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Direction {
    /// Towards the port.
    Ingress,
    /// From the port.
    Egress,
}

/// IP protocol of a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// ICMP (v4 or v6 by the remote prefix).
    Icmp,
    /// All protocols (port range ignored).
    Any,
}

/// A rule to add; also the identity used to find an existing equal rule.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RuleSpec {
    /// Traffic direction.
    pub direction: Direction,
    /// IP protocol.
    pub protocol: Protocol,
    /// Inclusive port range; `None` = all ports.
    pub ports: Option<(u16, u16)>,
    /// Remote prefix; `None` = anywhere (0.0.0.0/0 and ::/0). Its family sets the ethertype.
    pub remote_cidr: Option<IpNet>,
}

impl RuleSpec {
    /// Ingress TCP to one port from `remote` (or anywhere).
    pub fn tcp_in(port: u16, remote: Option<IpNet>) -> Self {
        Self {
            direction: Direction::Ingress,
            protocol: Protocol::Tcp,
            ports: Some((port, port)),
            remote_cidr: remote,
        }
    }
}

/// A rule as the cloud reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityGroupRule {
    /// Cloud id.
    pub id: String,
    /// The group holding it.
    pub security_group_id: String,
    /// What it allows.
    pub spec: RuleSpec,
}

/// What to create: a port (used for VIP allocation and pre-created VM ports).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSpec {
    /// Deterministic name, e.g. [`names::vip_port`].
    pub name: String,
    /// The network.
    pub network_id: String,
    /// Allocate from this subnet (else any subnet of the network).
    pub subnet_id: Option<String>,
    /// A requested fixed address (else the cloud picks one).
    pub fixed_ip: Option<IpAddr>,
    /// Security groups applied to the port.
    pub security_group_ids: Vec<String>,
    /// E.g. `klb:vip` so operators see what owns it.
    pub device_owner: Option<String>,
}

/// A port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Port {
    /// Cloud id.
    pub id: String,
    /// Name.
    pub name: String,
    /// The network.
    pub network_id: String,
    /// Its fixed addresses.
    pub fixed_ips: Vec<IpAddr>,
    /// Security groups applied to it.
    pub security_group_ids: Vec<String>,
    /// Extra addresses the port may send from (the VIP on LB VM ports).
    pub allowed_address_pairs: Vec<IpAddr>,
    /// The server the port is attached to, if any.
    pub device_id: Option<String>,
    /// What owns the port (e.g. `klb:vip`, `compute:nova`).
    pub device_owner: Option<String>,
}

/// Networks, security groups and ports (Neutron, or veths and nftables on the local cloud).
#[async_trait]
pub trait Network: Send + Sync {
    /// Find a network by id or name.
    async fn find_network(&self, id_or_name: &str) -> CloudResult<Option<NetworkInfo>>;
    /// Find a subnet by id or name.
    async fn find_subnet(&self, id_or_name: &str) -> CloudResult<Option<Subnet>>;

    /// Create a security group without rules.
    async fn create_security_group(&self, spec: &SecurityGroupSpec) -> CloudResult<SecurityGroup>;
    /// The security group with this exact name, if any.
    async fn find_security_group(&self, name: &str) -> CloudResult<Option<SecurityGroup>>;
    /// Idempotent; also removes the group's rules.
    async fn delete_security_group(&self, id: &str) -> CloudResult<()>;
    /// Add a rule; an equal existing rule is returned as is.
    async fn add_security_group_rule(
        &self,
        security_group_id: &str,
        rule: &RuleSpec,
    ) -> CloudResult<SecurityGroupRule>;
    /// Rules of a security group.
    async fn list_security_group_rules(
        &self,
        security_group_id: &str,
    ) -> CloudResult<Vec<SecurityGroupRule>>;
    /// Idempotent.
    async fn delete_security_group_rule(&self, rule_id: &str) -> CloudResult<()>;

    /// Create a port; with `device_owner = "klb:vip"` this allocates the VIP.
    async fn create_port(&self, spec: &PortSpec) -> CloudResult<Port>;
    /// A port by id; `None` when the cloud has no such port.
    async fn get_port(&self, id: &str) -> CloudResult<Option<Port>>;
    /// Ports with this exact name.
    async fn find_ports(&self, name: &str) -> CloudResult<Vec<Port>>;
    /// Idempotent.
    async fn delete_port(&self, id: &str) -> CloudResult<()>;
    /// Replace the port's allowed-address pairs with `addresses` (idempotent).
    async fn set_allowed_address_pairs(
        &self,
        port_id: &str,
        addresses: &[IpAddr],
    ) -> CloudResult<Port>;
}

// ---------------------------------------------------------------------------------------------
// Alarms
// ---------------------------------------------------------------------------------------------

/// What to create: the per-LB packets-per-second alarm that triggers scale-out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PpsAlarmSpec {
    /// Deterministic name, e.g. [`names::alarm`].
    pub name: String,
    /// The load balancer the alarm scales.
    pub lb_id: String,
    /// The LB VMs whose packet rate is summed.
    pub server_ids: Vec<String>,
    /// The seed's `ceilometer_pps_threshold`.
    pub threshold_pps: u64,
    /// The seed's `ceilometer_period`, seconds.
    pub period_secs: u32,
    /// The seed's `ceilometer_evaluation_periods`.
    pub evaluation_periods: u32,
    /// klb's alarm webhook; may embed a token, so drivers must not log it.
    pub webhook_url: String,
}

/// An alarm.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alarm {
    /// Cloud id.
    pub id: String,
    /// Name (see [`names::alarm`]).
    pub name: String,
    /// The load balancer it scales.
    pub lb_id: String,
    /// The LB VMs it watches.
    pub server_ids: Vec<String>,
}

/// Threshold alarms (Aodh, or klb's local evaluator).
#[async_trait]
pub trait Alarms: Send + Sync {
    /// Create the packets-per-second alarm.
    async fn create_pps_alarm(&self, spec: &PpsAlarmSpec) -> CloudResult<Alarm>;
    /// The alarm with this exact name, if any.
    async fn find_alarm(&self, name: &str) -> CloudResult<Option<Alarm>>;
    /// Idempotent.
    async fn delete_alarm(&self, id: &str) -> CloudResult<()>;
}

/// All capabilities of one cloud, as trait objects (what the flow engine and API state hold).
#[derive(Clone)]
pub struct Cloud {
    /// Servers and server groups.
    pub compute: Arc<dyn Compute>,
    /// Networks, security groups and ports.
    pub network: Arc<dyn Network>,
    /// Threshold alarms.
    pub alarms: Arc<dyn Alarms>,
    /// The LB VMs' agents (klb's own service on the VMs; the seam is `klb-agent-client`'s).
    pub agents: Arc<dyn Agents>,
}

impl fmt::Debug for Cloud {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cloud").finish_non_exhaustive()
    }
}
