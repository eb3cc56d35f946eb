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
    pub id: Uuid,
    pub project_id: String,
    pub name: Option<String>,
    pub description: Option<String>,
    pub admin_state_up: bool,
    pub provisioning_status: ProvisioningStatus,
    pub operating_status: OperatingStatus,
    pub created_at: DateTime<Utc>,
    pub updated_at: Option<DateTime<Utc>>,
    pub tags: Vec<String>,
    pub vip_address: Option<IpAddr>,
    pub vip_port_id: Option<Uuid>,
    pub vip_subnet_id: Option<Uuid>,
    pub vip_network_id: Option<Uuid>,
    pub vip_qos_policy_id: Option<Uuid>,
    pub vip_sg_ids: Vec<Uuid>,
    /// `normal` or `direct` (SR-IOV).
    pub vip_vnic_type: String,
    pub additional_vips: Vec<AdditionalVip>,
    pub provider: String,
    pub flavor_id: Option<Uuid>,
    /// Availability zone **name**.
    pub availability_zone: Option<String>,
}

/// A listener.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Listener {
    pub id: Uuid,
    pub project_id: String,
    pub loadbalancer_id: Uuid,
    pub name: Option<String>,
    pub description: Option<String>,
    pub admin_state_up: bool,
    pub provisioning_status: ProvisioningStatus,
    pub operating_status: OperatingStatus,
    pub created_at: DateTime<Utc>,
    pub updated_at: Option<DateTime<Utc>>,
    pub tags: Vec<String>,
    pub protocol: ListenerProtocol,
    pub protocol_port: u16,
    /// -1 = unlimited.
    pub connection_limit: i64,
    pub default_pool_id: Option<Uuid>,
    pub insert_headers: BTreeMap<String, String>,
    pub default_tls_container_ref: Option<String>,
    pub sni_container_refs: Vec<String>,
    pub client_ca_tls_container_ref: Option<String>,
    pub client_authentication: ClientAuthentication,
    pub client_crl_container_ref: Option<String>,
    /// Milliseconds.
    pub timeout_client_data: i64,
    pub timeout_member_connect: i64,
    pub timeout_member_data: i64,
    pub timeout_tcp_inspect: i64,
    pub allowed_cidrs: Vec<ipnet::IpNet>,
    pub tls_ciphers: Option<String>,
    pub tls_versions: Option<Vec<TlsVersion>>,
    pub alpn_protocols: Option<Vec<AlpnProtocol>>,
    pub hsts_max_age: Option<i64>,
    pub hsts_include_subdomains: bool,
    pub hsts_preload: bool,
}

/// Session persistence of a pool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionPersistence {
    #[serde(rename = "type")]
    pub kind: SessionPersistenceType,
    pub cookie_name: Option<String>,
    pub persistence_timeout: Option<i64>,
    pub persistence_granularity: Option<String>,
}

/// A pool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pool {
    pub id: Uuid,
    pub project_id: String,
    pub loadbalancer_id: Uuid,
    pub name: Option<String>,
    pub description: Option<String>,
    pub admin_state_up: bool,
    pub provisioning_status: ProvisioningStatus,
    pub operating_status: OperatingStatus,
    pub created_at: DateTime<Utc>,
    pub updated_at: Option<DateTime<Utc>>,
    pub tags: Vec<String>,
    pub protocol: PoolProtocol,
    pub lb_algorithm: LbAlgorithm,
    pub session_persistence: Option<SessionPersistence>,
    pub tls_enabled: bool,
    pub tls_container_ref: Option<String>,
    pub ca_tls_container_ref: Option<String>,
    pub crl_container_ref: Option<String>,
    pub tls_ciphers: Option<String>,
    pub tls_versions: Option<Vec<TlsVersion>>,
    pub alpn_protocols: Option<Vec<AlpnProtocol>>,
}

/// A pool member.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    pub id: Uuid,
    pub project_id: String,
    pub loadbalancer_id: Uuid,
    pub pool_id: Uuid,
    pub name: Option<String>,
    pub admin_state_up: bool,
    pub provisioning_status: ProvisioningStatus,
    pub operating_status: OperatingStatus,
    pub created_at: DateTime<Utc>,
    pub updated_at: Option<DateTime<Utc>>,
    pub tags: Vec<String>,
    pub address: IpAddr,
    pub protocol_port: u16,
    /// 0–256; 0 drains.
    pub weight: u16,
    pub backup: bool,
    pub subnet_id: Option<Uuid>,
    pub monitor_address: Option<IpAddr>,
    pub monitor_port: Option<u16>,
    pub request_sriov: bool,
    pub vnic_type: String,
}

/// A pool's health monitor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthMonitor {
    pub id: Uuid,
    pub project_id: String,
    pub loadbalancer_id: Uuid,
    pub pool_id: Uuid,
    pub name: Option<String>,
    pub admin_state_up: bool,
    pub provisioning_status: ProvisioningStatus,
    pub operating_status: OperatingStatus,
    pub created_at: DateTime<Utc>,
    pub updated_at: Option<DateTime<Utc>>,
    pub tags: Vec<String>,
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
    pub http_method: Option<HttpMethod>,
    pub url_path: Option<String>,
    pub expected_codes: Option<String>,
    /// 1.0 or 1.1.
    pub http_version: Option<f64>,
    pub domain_name: Option<String>,
}

/// An L7 policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct L7Policy {
    pub id: Uuid,
    pub project_id: String,
    pub loadbalancer_id: Uuid,
    pub listener_id: Uuid,
    pub name: Option<String>,
    pub description: Option<String>,
    pub admin_state_up: bool,
    pub provisioning_status: ProvisioningStatus,
    pub operating_status: OperatingStatus,
    pub created_at: DateTime<Utc>,
    pub updated_at: Option<DateTime<Utc>>,
    pub tags: Vec<String>,
    pub action: L7PolicyAction,
    pub redirect_pool_id: Option<Uuid>,
    pub redirect_url: Option<String>,
    pub redirect_prefix: Option<String>,
    pub redirect_http_code: Option<u16>,
    /// 1-based, contiguous within a listener.
    pub position: i64,
}

/// An L7 rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct L7Rule {
    pub id: Uuid,
    pub project_id: String,
    pub loadbalancer_id: Uuid,
    pub listener_id: Uuid,
    pub l7policy_id: Uuid,
    pub admin_state_up: bool,
    pub provisioning_status: ProvisioningStatus,
    pub operating_status: OperatingStatus,
    pub created_at: DateTime<Utc>,
    pub updated_at: Option<DateTime<Utc>>,
    pub tags: Vec<String>,
    #[serde(rename = "type")]
    pub kind: L7RuleType,
    pub compare_type: L7CompareType,
    pub key: Option<String>,
    pub value: String,
    pub invert: bool,
}

/// An LB VM: one member of a load balancer's active-active set (Octavia's amphora record).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LbVm {
    pub id: Uuid,
    pub loadbalancer_id: Option<Uuid>,
    pub compute_id: Option<String>,
    pub lb_network_ip: Option<IpAddr>,
    pub vrrp_ip: Option<IpAddr>,
    pub ha_ip: Option<IpAddr>,
    pub vrrp_port_id: Option<String>,
    pub ha_port_id: Option<String>,
    pub cert_expiration: Option<DateTime<Utc>>,
    pub cert_busy: bool,
    pub role: Option<LbVmRole>,
    pub status: LbVmStatus,
    pub vrrp_interface: Option<String>,
    pub vrrp_id: Option<i64>,
    pub vrrp_priority: Option<i64>,
    pub cached_zone: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: Option<DateTime<Utc>>,
    pub image_id: Option<String>,
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
