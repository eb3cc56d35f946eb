//! The load-balancer resources. Fields mirror Octavia's data model; relations that Octavia
//! renders as lists (`listeners`, `members`, ...) are not stored on the parent but derived from
//! the children's `parent` links, so a child write never rewrites its parent's document.
//!
//! Serde derives: storage only. klb-store keeps each resource as one JSON document; the
//! Octavia wire shapes live in klb-api and are built by hand from these types.

use std::collections::BTreeMap;
use std::net::IpAddr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::enums::*;

/// The resource kinds of the LB graph, as stored (`kind` column of the store).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A load balancer (the root of the graph and the unit of locking).
    LoadBalancer,
    /// A listener.
    Listener,
    /// A pool.
    Pool,
    /// A pool member.
    Member,
    /// A pool's health monitor.
    HealthMonitor,
    /// An L7 policy of a listener.
    L7Policy,
    /// An L7 rule of a policy.
    L7Rule,
    /// An LB VM (Octavia's amphora).
    LbVm,
}

impl Kind {
    /// Name used as the store's `kind` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::LoadBalancer => "loadbalancer",
            Kind::Listener => "listener",
            Kind::Pool => "pool",
            Kind::Member => "member",
            Kind::HealthMonitor => "healthmonitor",
            Kind::L7Policy => "l7policy",
            Kind::L7Rule => "l7rule",
            Kind::LbVm => "lbvm",
        }
    }

    /// Parses [`Kind::as_str`].
    pub fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "loadbalancer" => Kind::LoadBalancer,
            "listener" => Kind::Listener,
            "pool" => Kind::Pool,
            "member" => Kind::Member,
            "healthmonitor" => Kind::HealthMonitor,
            "l7policy" => Kind::L7Policy,
            "l7rule" => Kind::L7Rule,
            "lbvm" => Kind::LbVm,
            _ => return None,
        })
    }

    /// Octavia's human name used in fault strings (`Load Balancer <id> not found.`).
    pub fn display_name(self) -> &'static str {
        match self {
            Kind::LoadBalancer => "Load Balancer",
            Kind::Listener => "Listener",
            Kind::Pool => "Pool",
            Kind::Member => "Member",
            Kind::HealthMonitor => "Health Monitor",
            Kind::L7Policy => "L7 Policy",
            Kind::L7Rule => "L7 Rule",
            Kind::LbVm => "Amphora",
        }
    }
}

/// How a stored resource is indexed. klb-store keeps these as columns next to the document so
/// lookups by load balancer, parent or reference need no JSON parsing.
pub trait Resource: Serialize + for<'de> Deserialize<'de> {
    /// The stored kind.
    const KIND: Kind;
    /// Primary key.
    fn id(&self) -> Uuid;
    /// Owning project, if any.
    fn project_id(&self) -> Option<&str>;
    /// The load balancer whose graph this belongs to (itself for a load balancer).
    fn loadbalancer_id(&self) -> Option<Uuid>;
    /// Direct parent: LB for listeners and pools, pool for members and HMs, listener for L7
    /// policies, policy for L7 rules.
    fn parent_id(&self) -> Option<Uuid>;
    /// A secondary reference: a listener's default pool, an L7 policy's redirect pool.
    fn ref_id(&self) -> Option<Uuid> {
        None
    }
    /// Ordering among siblings (L7 policy position); 0 elsewhere.
    fn position(&self) -> i64 {
        0
    }
    /// Provisioning status, for resources that have one.
    fn provisioning_status(&self) -> Option<ProvisioningStatus>;
    /// Creation time (orders lists with the id as tie-breaker).
    fn created_at(&self) -> DateTime<Utc>;
}

/// A resource with an operating status, which the health manager derives from heartbeats and
/// stores by decoding, changing and re-encoding the typed resource (no patch by JSON key).
pub trait Observed: Resource {
    /// The current operating status.
    fn operating_status(&self) -> OperatingStatus;
    /// Sets the operating status and moves `updated_at` to `at` (Octavia moves `updated_at`
    /// with every change of a row, status changes included).
    fn set_operating_status(&mut self, status: OperatingStatus, at: DateTime<Utc>);
}

macro_rules! observed {
    ($($t:ty),*) => {$(
        impl Observed for $t {
            fn operating_status(&self) -> OperatingStatus {
                self.operating_status
            }
            fn set_operating_status(&mut self, status: OperatingStatus, at: DateTime<Utc>) {
                self.operating_status = status;
                self.updated_at = Some(at);
            }
        }
    )*};
}
observed!(
    LoadBalancer,
    Listener,
    Pool,
    Member,
    HealthMonitor,
    L7Policy,
    L7Rule
);

/// A resource with a provisioning status, which the store's completion rules set by decoding,
/// changing and re-encoding the typed resource (no patch by JSON key).
pub trait Provisioned: Resource {
    /// Sets the provisioning status and moves `updated_at` to `at` (Octavia moves `updated_at`
    /// with every change of a row, the provider's status changes included).
    fn set_provisioning_status(&mut self, status: ProvisioningStatus, at: DateTime<Utc>);
}

macro_rules! provisioned {
    ($($t:ty),*) => {$(
        impl Provisioned for $t {
            fn set_provisioning_status(&mut self, status: ProvisioningStatus, at: DateTime<Utc>) {
                self.provisioning_status = status;
                self.updated_at = Some(at);
            }
        }
    )*};
}
provisioned!(
    LoadBalancer,
    Listener,
    Pool,
    Member,
    HealthMonitor,
    L7Policy,
    L7Rule
);

/// An additional VIP on another subnet of the VIP network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdditionalVip {
    /// Subnet of the additional address.
    pub subnet_id: Uuid,
    /// The address; chosen by the network driver when not given.
    pub ip_address: Option<IpAddr>,
    /// Port holding the address.
    pub port_id: Option<Uuid>,
}

/// A load balancer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadBalancer {
    /// Primary key.
    pub id: Uuid,
    /// Owning project (Keystone project id).
    pub project_id: String,
    /// User-given name.
    pub name: Option<String>,
    /// User-given description.
    pub description: Option<String>,
    /// False takes the object out of service without deleting it.
    pub admin_state_up: bool,
    /// Where the object's last change stands (Octavia's provisioning status).
    pub provisioning_status: ProvisioningStatus,
    /// Observed health (Octavia's operating status).
    pub operating_status: OperatingStatus,
    /// When the object was created.
    pub created_at: DateTime<Utc>,
    /// When the object last changed (any status change included); `None` until then.
    pub updated_at: Option<DateTime<Utc>>,
    /// User-given tags.
    pub tags: Vec<String>,
    /// The VIP address.
    pub vip_address: Option<IpAddr>,
    /// Neutron port holding the VIP.
    pub vip_port_id: Option<Uuid>,
    /// The VIP's subnet.
    pub vip_subnet_id: Option<Uuid>,
    /// The VIP's network.
    pub vip_network_id: Option<Uuid>,
    /// QoS policy applied to the VIP port.
    pub vip_qos_policy_id: Option<Uuid>,
    /// Security groups applied to the VIP port (API 2.29).
    pub vip_sg_ids: Vec<Uuid>,
    /// `normal` or `direct` (SR-IOV).
    pub vip_vnic_type: String,
    /// More VIP addresses, on other subnets of the VIP network.
    pub additional_vips: Vec<AdditionalVip>,
    /// Provider driver name.
    pub provider: String,
    /// Octavia flavor.
    pub flavor_id: Option<Uuid>,
    /// Availability zone **name**.
    pub availability_zone: Option<String>,
}

/// A listener.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Listener {
    /// Primary key.
    pub id: Uuid,
    /// Owning project (Keystone project id).
    pub project_id: String,
    /// The load balancer whose graph this belongs to.
    pub loadbalancer_id: Uuid,
    /// User-given name.
    pub name: Option<String>,
    /// User-given description.
    pub description: Option<String>,
    /// False takes the object out of service without deleting it.
    pub admin_state_up: bool,
    /// Where the object's last change stands (Octavia's provisioning status).
    pub provisioning_status: ProvisioningStatus,
    /// Observed health (Octavia's operating status).
    pub operating_status: OperatingStatus,
    /// When the object was created.
    pub created_at: DateTime<Utc>,
    /// When the object last changed (any status change included); `None` until then.
    pub updated_at: Option<DateTime<Utc>>,
    /// User-given tags.
    pub tags: Vec<String>,
    /// Protocol clients speak to the listener.
    pub protocol: ListenerProtocol,
    /// TCP/UDP port.
    pub protocol_port: u16,
    /// Concurrent connections allowed; -1 = unlimited.
    pub connection_limit: i64,
    /// Pool used when no L7 policy matches.
    pub default_pool_id: Option<Uuid>,
    /// Headers HAProxy adds to requests (`X-Forwarded-For`, ...).
    pub insert_headers: BTreeMap<String, String>,
    /// Barbican container with the default certificate (TERMINATED_HTTPS).
    pub default_tls_container_ref: Option<String>,
    /// Barbican containers with SNI certificates.
    pub sni_container_refs: Vec<String>,
    /// Barbican secret with the CA that client certificates must chain to.
    pub client_ca_tls_container_ref: Option<String>,
    /// Whether client certificates are required.
    pub client_authentication: ClientAuthentication,
    /// Barbican secret with the CRL for client certificates.
    pub client_crl_container_ref: Option<String>,
    /// Milliseconds of client inactivity.
    pub timeout_client_data: i64,
    /// Milliseconds to connect to a member.
    pub timeout_member_connect: i64,
    /// Milliseconds of member inactivity.
    pub timeout_member_data: i64,
    /// Milliseconds to wait for content inspection.
    pub timeout_tcp_inspect: i64,
    /// Source networks allowed to connect; empty allows all.
    pub allowed_cidrs: Vec<ipnet::IpNet>,
    /// OpenSSL cipher string.
    pub tls_ciphers: Option<String>,
    /// TLS versions offered.
    pub tls_versions: Option<Vec<TlsVersion>>,
    /// ALPN protocols offered.
    pub alpn_protocols: Option<Vec<AlpnProtocol>>,
    /// HSTS `max-age` in seconds; `None` sends no HSTS header.
    pub hsts_max_age: Option<i64>,
    /// HSTS `includeSubDomains`.
    pub hsts_include_subdomains: bool,
    /// HSTS `preload`.
    pub hsts_preload: bool,
}

/// Session persistence of a pool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionPersistence {
    /// Stickiness kind (Octavia's `type`).
    #[serde(rename = "type")]
    pub kind: SessionPersistenceType,
    /// Application cookie name (APP_COOKIE).
    pub cookie_name: Option<String>,
    /// Stickiness timeout in seconds (UDP/SCTP).
    pub persistence_timeout: Option<i64>,
    /// Netmask of the stickiness key (UDP/SCTP).
    pub persistence_granularity: Option<String>,
}

/// A pool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pool {
    /// Primary key.
    pub id: Uuid,
    /// Owning project (Keystone project id).
    pub project_id: String,
    /// The load balancer whose graph this belongs to.
    pub loadbalancer_id: Uuid,
    /// User-given name.
    pub name: Option<String>,
    /// User-given description.
    pub description: Option<String>,
    /// False takes the object out of service without deleting it.
    pub admin_state_up: bool,
    /// Where the object's last change stands (Octavia's provisioning status).
    pub provisioning_status: ProvisioningStatus,
    /// Observed health (Octavia's operating status).
    pub operating_status: OperatingStatus,
    /// When the object was created.
    pub created_at: DateTime<Utc>,
    /// When the object last changed (any status change included); `None` until then.
    pub updated_at: Option<DateTime<Utc>>,
    /// User-given tags.
    pub tags: Vec<String>,
    /// Protocol spoken to members.
    pub protocol: PoolProtocol,
    /// How members are chosen.
    pub lb_algorithm: LbAlgorithm,
    /// Stickiness, if any.
    pub session_persistence: Option<SessionPersistence>,
    /// Re-encrypt to members.
    pub tls_enabled: bool,
    /// Barbican container with the client certificate presented to members.
    pub tls_container_ref: Option<String>,
    /// Barbican secret with the CA that members' certificates must chain to.
    pub ca_tls_container_ref: Option<String>,
    /// Barbican secret with the CRL for members' certificates.
    pub crl_container_ref: Option<String>,
    /// OpenSSL cipher string.
    pub tls_ciphers: Option<String>,
    /// TLS versions offered.
    pub tls_versions: Option<Vec<TlsVersion>>,
    /// ALPN protocols offered.
    pub alpn_protocols: Option<Vec<AlpnProtocol>>,
}

/// A pool member.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    /// Primary key.
    pub id: Uuid,
    /// Owning project (Keystone project id).
    pub project_id: String,
    /// The load balancer whose graph this belongs to.
    pub loadbalancer_id: Uuid,
    /// Parent pool.
    pub pool_id: Uuid,
    /// User-given name.
    pub name: Option<String>,
    /// False takes the object out of service without deleting it.
    pub admin_state_up: bool,
    /// Where the object's last change stands (Octavia's provisioning status).
    pub provisioning_status: ProvisioningStatus,
    /// Observed health (Octavia's operating status).
    pub operating_status: OperatingStatus,
    /// When the object was created.
    pub created_at: DateTime<Utc>,
    /// When the object last changed (any status change included); `None` until then.
    pub updated_at: Option<DateTime<Utc>>,
    /// User-given tags.
    pub tags: Vec<String>,
    /// The member's address.
    pub address: IpAddr,
    /// TCP/UDP port.
    pub protocol_port: u16,
    /// Share of new connections, 0–256; 0 drains.
    pub weight: u16,
    /// Used only when every non-backup member is down.
    pub backup: bool,
    /// Subnet the member's address is on.
    pub subnet_id: Option<Uuid>,
    /// Health-check address, if not the member address.
    pub monitor_address: Option<IpAddr>,
    /// Health-check port, if not the member port.
    pub monitor_port: Option<u16>,
    /// Member wants an SR-IOV VF (API 2.29).
    pub request_sriov: bool,
    /// `normal` or `direct` (SR-IOV).
    pub vnic_type: String,
}

/// A pool's health monitor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthMonitor {
    /// Primary key.
    pub id: Uuid,
    /// Owning project (Keystone project id).
    pub project_id: String,
    /// The load balancer whose graph this belongs to.
    pub loadbalancer_id: Uuid,
    /// Parent pool.
    pub pool_id: Uuid,
    /// User-given name.
    pub name: Option<String>,
    /// False takes the object out of service without deleting it.
    pub admin_state_up: bool,
    /// Where the object's last change stands (Octavia's provisioning status).
    pub provisioning_status: ProvisioningStatus,
    /// Observed health (Octavia's operating status).
    pub operating_status: OperatingStatus,
    /// When the object was created.
    pub created_at: DateTime<Utc>,
    /// When the object last changed (any status change included); `None` until then.
    pub updated_at: Option<DateTime<Utc>>,
    /// User-given tags.
    pub tags: Vec<String>,
    /// Check kind (Octavia's `type`).
    #[serde(rename = "type")]
    pub kind: HealthMonitorType,
    /// Seconds between checks.
    pub delay: i64,
    /// Seconds a check may take.
    pub timeout: i64,
    /// Successes to go ONLINE (haproxy `rise`).
    pub max_retries: i64,
    /// Failures to go ERROR (haproxy `fall`).
    pub max_retries_down: i64,
    /// HTTP method of the check.
    pub http_method: Option<HttpMethod>,
    /// HTTP path of the check.
    pub url_path: Option<String>,
    /// Status codes that pass (`200`, `200,202`, `200-204`).
    pub expected_codes: Option<String>,
    /// 1.0 or 1.1.
    pub http_version: Option<f64>,
    /// Host header of the check.
    pub domain_name: Option<String>,
}

/// An L7 policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct L7Policy {
    /// Primary key.
    pub id: Uuid,
    /// Owning project (Keystone project id).
    pub project_id: String,
    /// The load balancer whose graph this belongs to.
    pub loadbalancer_id: Uuid,
    /// Parent listener.
    pub listener_id: Uuid,
    /// User-given name.
    pub name: Option<String>,
    /// User-given description.
    pub description: Option<String>,
    /// False takes the object out of service without deleting it.
    pub admin_state_up: bool,
    /// Where the object's last change stands (Octavia's provisioning status).
    pub provisioning_status: ProvisioningStatus,
    /// Observed health (Octavia's operating status).
    pub operating_status: OperatingStatus,
    /// When the object was created.
    pub created_at: DateTime<Utc>,
    /// When the object last changed (any status change included); `None` until then.
    pub updated_at: Option<DateTime<Utc>>,
    /// User-given tags.
    pub tags: Vec<String>,
    /// What a match does.
    pub action: L7PolicyAction,
    /// Target pool (REDIRECT_TO_POOL).
    pub redirect_pool_id: Option<Uuid>,
    /// Target URL (REDIRECT_TO_URL).
    pub redirect_url: Option<String>,
    /// Target prefix (REDIRECT_PREFIX).
    pub redirect_prefix: Option<String>,
    /// Status code of the redirect.
    pub redirect_http_code: Option<u16>,
    /// 1-based, contiguous within a listener.
    pub position: i64,
}

/// An L7 rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct L7Rule {
    /// Primary key.
    pub id: Uuid,
    /// Owning project (Keystone project id).
    pub project_id: String,
    /// The load balancer whose graph this belongs to.
    pub loadbalancer_id: Uuid,
    /// Parent listener.
    pub listener_id: Uuid,
    /// Parent L7 policy.
    pub l7policy_id: Uuid,
    /// False takes the object out of service without deleting it.
    pub admin_state_up: bool,
    /// Where the object's last change stands (Octavia's provisioning status).
    pub provisioning_status: ProvisioningStatus,
    /// Observed health (Octavia's operating status).
    pub operating_status: OperatingStatus,
    /// When the object was created.
    pub created_at: DateTime<Utc>,
    /// When the object last changed (any status change included); `None` until then.
    pub updated_at: Option<DateTime<Utc>>,
    /// User-given tags.
    pub tags: Vec<String>,
    /// What the rule looks at (Octavia's `type`).
    #[serde(rename = "type")]
    pub kind: L7RuleType,
    /// How `value` is compared.
    pub compare_type: L7CompareType,
    /// Header or cookie name (HEADER, COOKIE, SSL_DN_FIELD rules).
    pub key: Option<String>,
    /// The value compared against.
    pub value: String,
    /// Negates the match.
    pub invert: bool,
}

/// An LB VM: one member of a load balancer's active-active set (Octavia's amphora record).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LbVm {
    /// Primary key.
    pub id: Uuid,
    /// The load balancer whose graph this belongs to.
    pub loadbalancer_id: Option<Uuid>,
    /// The cloud server id.
    pub compute_id: Option<String>,
    /// The agent's address (management network).
    pub lb_network_ip: Option<IpAddr>,
    /// The VM's address on the VIP network.
    pub vrrp_ip: Option<IpAddr>,
    /// The VIP this VM serves.
    pub ha_ip: Option<IpAddr>,
    /// The VM's port on the VIP network.
    pub vrrp_port_id: Option<String>,
    /// The VIP port.
    pub ha_port_id: Option<String>,
    /// When the agent's certificate expires.
    pub cert_expiration: Option<DateTime<Utc>>,
    /// A certificate rotation is in progress.
    pub cert_busy: bool,
    /// Octavia's amphora role (klb's VMs are all active).
    pub role: Option<LbVmRole>,
    /// The VM's lifecycle status.
    pub status: LbVmStatus,
    /// Octavia's field; klb has no VRRP.
    pub vrrp_interface: Option<String>,
    /// Octavia's field; klb has no VRRP.
    pub vrrp_id: Option<i64>,
    /// Octavia's field; klb has no VRRP.
    pub vrrp_priority: Option<i64>,
    /// Availability zone the VM landed in.
    pub cached_zone: Option<String>,
    /// When the object was created.
    pub created_at: DateTime<Utc>,
    /// When the object last changed (any status change included); `None` until then.
    pub updated_at: Option<DateTime<Utc>>,
    /// Image the VM was built from.
    pub image_id: Option<String>,
    /// Compute flavor of the VM.
    pub compute_flavor: Option<String>,
}

macro_rules! lb_scoped {
    ($ty:ty, $kind:expr, lb = $lb:ident, parent = $parent:ident $(, ref = $r:ident)? $(, position = $p:ident)?) => {
        impl Resource for $ty {
            const KIND: Kind = $kind;
            fn id(&self) -> Uuid {
                self.id
            }
            fn project_id(&self) -> Option<&str> {
                Some(&self.project_id)
            }
            fn loadbalancer_id(&self) -> Option<Uuid> {
                Some(self.$lb)
            }
            fn parent_id(&self) -> Option<Uuid> {
                Some(self.$parent)
            }
            $(fn ref_id(&self) -> Option<Uuid> {
                self.$r
            })?
            $(fn position(&self) -> i64 {
                self.$p
            })?
            fn provisioning_status(&self) -> Option<ProvisioningStatus> {
                Some(self.provisioning_status)
            }
            fn created_at(&self) -> DateTime<Utc> {
                self.created_at
            }
        }
    };
}

impl Resource for LoadBalancer {
    const KIND: Kind = Kind::LoadBalancer;
    fn id(&self) -> Uuid {
        self.id
    }
    fn project_id(&self) -> Option<&str> {
        Some(&self.project_id)
    }
    fn loadbalancer_id(&self) -> Option<Uuid> {
        Some(self.id)
    }
    fn parent_id(&self) -> Option<Uuid> {
        None
    }
    fn provisioning_status(&self) -> Option<ProvisioningStatus> {
        Some(self.provisioning_status)
    }
    fn created_at(&self) -> DateTime<Utc> {
        self.created_at
    }
}

lb_scoped!(Listener, Kind::Listener, lb = loadbalancer_id, parent = loadbalancer_id, ref = default_pool_id);
lb_scoped!(
    Pool,
    Kind::Pool,
    lb = loadbalancer_id,
    parent = loadbalancer_id
);
lb_scoped!(Member, Kind::Member, lb = loadbalancer_id, parent = pool_id);
lb_scoped!(
    HealthMonitor,
    Kind::HealthMonitor,
    lb = loadbalancer_id,
    parent = pool_id
);
lb_scoped!(L7Policy, Kind::L7Policy, lb = loadbalancer_id, parent = listener_id, ref = redirect_pool_id, position = position);
lb_scoped!(
    L7Rule,
    Kind::L7Rule,
    lb = loadbalancer_id,
    parent = l7policy_id
);

impl Resource for LbVm {
    const KIND: Kind = Kind::LbVm;
    fn id(&self) -> Uuid {
        self.id
    }
    fn project_id(&self) -> Option<&str> {
        None
    }
    fn loadbalancer_id(&self) -> Option<Uuid> {
        self.loadbalancer_id
    }
    fn parent_id(&self) -> Option<Uuid> {
        self.loadbalancer_id
    }
    fn provisioning_status(&self) -> Option<ProvisioningStatus> {
        None
    }
    fn created_at(&self) -> DateTime<Utc> {
        self.created_at
    }
}
