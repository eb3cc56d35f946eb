//! The control-plane ↔ LB-VM protocol: the versioned desired state the control plane PUTs to
//! every agent of a load balancer, the agent's replies (apply outcome, status and statistics)
//! and the heartbeat it sends back.
//!
//! These are wire types: the control plane builds them by hand from `klb-model` types (the
//! protocol has no dependency on the model, so either side can evolve its internals), and the
//! agent renders HAProxy and FRR configuration from them. Enum spellings are Octavia's. Object
//! names that reach HAProxy are ids; names, descriptions and tags are deliberately absent, so
//! they can never be rendered. Every user-controlled string in here is re-validated by the
//! agent before it reaches a configuration file.
//!
//! Compatibility rule: new fields get `#[serde(default)]` so an older control plane's state still
//! parses; renaming or removing a field needs a new [`PROTOCOL_VERSION`].

#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use serde::{Deserialize, Serialize};

pub mod account;
pub mod auth;
pub mod check;
pub mod signature;
mod status;

pub use status::*;

/// Version of this protocol; the agent rejects states with a different `protocol`.
pub const PROTOCOL_VERSION: u32 = 1;

/// Global `maxconn` when the control plane does not set one (also the frontend `maxconn` of a
/// listener with `connection_limit` unlimited).
pub const DEFAULT_MAXCONN: u32 = 12000;

/// Octavia's listener timeout defaults (milliseconds).
pub const DEFAULT_TIMEOUT_CLIENT_DATA_MS: u32 = 50_000;
/// Default `timeout_member_connect` (ms).
pub const DEFAULT_TIMEOUT_MEMBER_CONNECT_MS: u32 = 5_000;
/// Default `timeout_member_data` (ms).
pub const DEFAULT_TIMEOUT_MEMBER_DATA_MS: u32 = 50_000;

/// The whole desired state of one load balancer as seen by one of its LB VMs. The agent applies
/// states in increasing `version` order and ignores older ones.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DesiredState {
    /// Protocol version, [`PROTOCOL_VERSION`].
    #[serde(default = "protocol_version")]
    pub protocol: u32,
    /// Monotonic version of this load balancer's configuration (one per accepted change).
    pub version: u64,
    /// The load balancer's id.
    pub load_balancer_id: String,
    /// `false` renders no frontends at all (Octavia: nothing is served when the LB is admin-down).
    #[serde(default = "yes")]
    pub admin_state_up: bool,
    /// The VIP every listener binds.
    pub vip: IpAddr,
    /// Additional VIPs (Octavia `additional_vips`): each listener binds them too.
    #[serde(default)]
    pub additional_vips: Vec<IpAddr>,
    /// Which LB VM this state is for.
    pub vm: VmIdentity,
    /// Every LB VM of this load balancer (this one included), for the HAProxy `peers` section
    /// that shares stick tables in active-active.
    #[serde(default)]
    pub peers: Vec<Peer>,
    /// Listeners (frontends).
    #[serde(default)]
    pub listeners: Vec<Listener>,
    /// Pools (backends) of this load balancer, with their members and health monitor.
    #[serde(default)]
    pub pools: Vec<Pool>,
    /// BGP announcement of the VIP; `None` when the VIP is reached otherwise (e.g. L2).
    #[serde(default)]
    pub bgp: Option<Bgp>,
    /// Process-wide settings.
    #[serde(default)]
    pub global: Global,
    /// TLS material referenced by id from listeners and pools.
    #[serde(default)]
    pub certificates: Vec<Certificate>,
    /// The key this VM signs its heartbeats with: derived by the control plane from its
    /// master secret and this VM's identity (`load_balancer_id`, `vm.id`), so one VM's key
    /// is useless for another VM's reports. It travels here, over the mTLS push to exactly
    /// this VM, because an OpenStack VM's id (Nova's server id) does not exist yet when its
    /// cloud-init is rendered. `None`: the VM sends no heartbeats.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_key: Option<HeartbeatKey>,
}

fn protocol_version() -> u32 {
    PROTOCOL_VERSION
}

fn yes() -> bool {
    true
}

impl DesiredState {
    /// The pool with this id.
    pub fn pool(&self, id: &str) -> Option<&Pool> {
        self.pools.iter().find(|p| p.id == id)
    }

    /// The certificate with this id.
    pub fn certificate(&self, id: &str) -> Option<&Certificate> {
        self.certificates.iter().find(|c| c.id == id)
    }
}

/// Identity of the LB VM the state is addressed to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmIdentity {
    /// The LB VM's id (Octavia's amphora id).
    pub id: String,
    /// Index of the VM within the LB (0-based); BGP AS numbers are derived from it.
    pub index: u32,
    /// The VM's name; also its HAProxy peer name (`haproxy -L <name>`).
    pub name: String,
}

/// One LB VM as an HAProxy peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    /// Peer name, equal to that VM's [`VmIdentity::name`].
    pub name: String,
    /// Address the peer listens on for stick-table replication.
    pub address: IpAddr,
    /// TCP port of the peer listener.
    pub port: u16,
}

/// Process-wide HAProxy settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Global {
    /// Global `maxconn`; also the frontend `maxconn` of listeners with unlimited
    /// `connection_limit`.
    #[serde(default = "default_maxconn")]
    pub maxconn: u32,
}

fn default_maxconn() -> u32 {
    DEFAULT_MAXCONN
}

impl Default for Global {
    fn default() -> Self {
        Global {
            maxconn: DEFAULT_MAXCONN,
        }
    }
}

/// BGP settings for announcing the VIP from this VM (rendered into FRR by the agent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bgp {
    /// This VM's AS number (`base_as_number + index` by default).
    pub local_as: u32,
    /// BGP router id.
    pub router_id: Ipv4Addr,
    /// The upstream routers.
    pub neighbors: Vec<Neighbor>,
    /// Enable BFD on every session (configured once, at session creation).
    #[serde(default)]
    pub bfd: bool,
    /// Prefixes to announce (the VIP as /32 or /128).
    pub announce: Vec<ipnet::IpNet>,
    /// Keepalive interval, seconds (`timers bgp <keepalive> <hold>`).
    #[serde(default = "default_keepalive")]
    pub keepalive_secs: u16,
    /// Hold time, seconds.
    #[serde(default = "default_hold")]
    pub hold_secs: u16,
}

fn default_keepalive() -> u16 {
    3
}

fn default_hold() -> u16 {
    9
}

/// A BGP neighbor (an L3 gateway).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Neighbor {
    /// The neighbor's address.
    pub address: IpAddr,
    /// The neighbor's AS number.
    pub remote_as: u32,
}

/// TLS material (certificate chain and private key, a CA bundle or a CRL) in PEM form.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Certificate {
    /// Id the listener/pool fields refer to (derived from the container ref by the control plane).
    pub id: String,
    /// PEM text (certificate, intermediates and key for server certificates).
    pub pem: SecretPem,
}

impl fmt::Debug for Certificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certificate")
            .field("id", &self.id)
            .field("pem", &self.pem)
            .finish()
    }
}

/// PEM text that may hold a private key: never printed by `Debug` or `Display`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretPem(String);

impl SecretPem {
    /// Wraps PEM text.
    pub fn new(pem: impl Into<String>) -> Self {
        SecretPem(pem.into())
    }

    /// The PEM text, for writing it to a private file. Do not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretPem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretPem(<{} bytes redacted>)", self.0.len())
    }
}

/// A per-VM heartbeat HMAC key (the key text itself is the HMAC key): never printed by
/// `Debug`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct HeartbeatKey(String);

impl HeartbeatKey {
    /// Wraps key text.
    pub fn new(key: impl Into<String>) -> Self {
        HeartbeatKey(key.into())
    }

    /// The key text, for signing. Do not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for HeartbeatKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HeartbeatKey(<redacted>)")
    }
}

macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum $name { $($(#[$vmeta])* #[serde(rename = $text)] $variant),+ }

        impl $name {
            /// Octavia's spelling.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

wire_enum!(
    /// Listener protocol.
    ListenerProtocol {
        /// HTTP (HAProxy `mode http`).
        Http => "HTTP",
        /// TLS passthrough (`mode tcp`).
        Https => "HTTPS",
        /// Plain TCP.
        Tcp => "TCP",
        /// TLS terminated by HAProxy, HTTP inside.
        TerminatedHttps => "TERMINATED_HTTPS",
        /// UDP (not served by HAProxy; see the agent's renderer).
        Udp => "UDP",
        /// SCTP (not served by HAProxy).
        Sctp => "SCTP",
        /// Prometheus exporter endpoint.
        Prometheus => "PROMETHEUS",
    }
);

wire_enum!(
    /// Pool protocol.
    PoolProtocol {
        /// HTTP to members.
        Http => "HTTP",
        /// TLS passthrough to members.
        Https => "HTTPS",
        /// Listener protocol wrapped in PROXY protocol v1.
        Proxy => "PROXY",
        /// Listener protocol wrapped in PROXY protocol v2.
        ProxyV2 => "PROXYV2",
        /// Plain TCP.
        Tcp => "TCP",
        /// UDP.
        Udp => "UDP",
        /// SCTP.
        Sctp => "SCTP",
    }
);

wire_enum!(
    /// Member selection algorithm.
    LbAlgorithm {
        /// Weighted round robin.
        RoundRobin => "ROUND_ROBIN",
        /// Fewest active connections.
        LeastConnections => "LEAST_CONNECTIONS",
        /// Hash of the client address.
        SourceIp => "SOURCE_IP",
        /// Hash of the client address and port.
        SourceIpPort => "SOURCE_IP_PORT",
    }
);

wire_enum!(
    /// Session persistence kind.
    SessionPersistenceType {
        /// Stick on the client address.
        SourceIp => "SOURCE_IP",
        /// HAProxy inserts its own cookie.
        HttpCookie => "HTTP_COOKIE",
        /// Stick on an application cookie named by `cookie_name`.
        AppCookie => "APP_COOKIE",
    }
);

wire_enum!(
    /// TLS client authentication on a TERMINATED_HTTPS listener.
    ClientAuthentication {
        /// No client certificate requested.
        None => "NONE",
        /// Requested, verified if given.
        Optional => "OPTIONAL",
        /// Required.
        Mandatory => "MANDATORY",
    }
);

wire_enum!(
    /// Health monitor type.
    HealthMonitorType {
        /// HTTP request.
        Http => "HTTP",
        /// HTTP request over TLS.
        Https => "HTTPS",
        /// ICMP echo.
        Ping => "PING",
        /// TCP connect.
        Tcp => "TCP",
        /// TLS handshake.
        TlsHello => "TLS-HELLO",
        /// UDP connect (UDP pools only).
        UdpConnect => "UDP-CONNECT",
        /// SCTP (SCTP pools only).
        Sctp => "SCTP",
    }
);

wire_enum!(
    /// HTTP method of an HTTP health check.
    HttpMethod {
        /// GET
        Get => "GET",
        /// HEAD
        Head => "HEAD",
        /// POST
        Post => "POST",
        /// PUT
        Put => "PUT",
        /// DELETE
        Delete => "DELETE",
        /// TRACE
        Trace => "TRACE",
        /// OPTIONS
        Options => "OPTIONS",
        /// CONNECT
        Connect => "CONNECT",
        /// PATCH
        Patch => "PATCH",
    }
);

wire_enum!(
    /// HTTP version of an HTTP health check (Octavia's float `1.0`/`1.1`, as a string here).
    HttpVersion {
        /// HTTP/1.0
        Http10 => "1.0",
        /// HTTP/1.1
        Http11 => "1.1",
    }
);

wire_enum!(
    /// L7 policy action.
    L7PolicyAction {
        /// Deny the request (403).
        Reject => "REJECT",
        /// Redirect to `redirect_url`.
        RedirectToUrl => "REDIRECT_TO_URL",
        /// Send to `redirect_pool_id`.
        RedirectToPool => "REDIRECT_TO_POOL",
        /// Redirect, replacing scheme and host with `redirect_prefix`.
        RedirectPrefix => "REDIRECT_PREFIX",
    }
);

wire_enum!(
    /// What an L7 rule inspects.
    L7RuleType {
        /// The Host header.
        HostName => "HOST_NAME",
        /// The request path.
        Path => "PATH",
        /// The path's file extension.
        FileType => "FILE_TYPE",
        /// A request header named by `key`.
        Header => "HEADER",
        /// A cookie named by `key`.
        Cookie => "COOKIE",
        /// Whether the client presented a certificate.
        SslConnHasCert => "SSL_CONN_HAS_CERT",
        /// The client certificate verification result.
        SslVerifyResult => "SSL_VERIFY_RESULT",
        /// A field (`key`) of the client certificate's subject DN.
        SslDnField => "SSL_DN_FIELD",
    }
);

wire_enum!(
    /// How an L7 rule compares.
    L7CompareType {
        /// Regular expression.
        Regex => "REGEX",
        /// Prefix.
        StartsWith => "STARTS_WITH",
        /// Suffix.
        EndsWith => "ENDS_WITH",
        /// Substring.
        Contains => "CONTAINS",
        /// Exact match.
        EqualTo => "EQUAL_TO",
    }
);

wire_enum!(
    /// TLS protocol version.
    TlsVersion {
        /// SSLv3
        SslV3 => "SSLv3",
        /// TLSv1.0
        TlsV1 => "TLSv1",
        /// TLSv1.1
        TlsV1_1 => "TLSv1.1",
        /// TLSv1.2
        TlsV1_2 => "TLSv1.2",
        /// TLSv1.3
        TlsV1_3 => "TLSv1.3",
    }
);

wire_enum!(
    /// ALPN protocol.
    AlpnProtocol {
        /// HTTP/2
        H2 => "h2",
        /// HTTP/1.1
        Http11 => "http/1.1",
        /// HTTP/1.0
        Http10 => "http/1.0",
    }
);

/// A listener (one HAProxy frontend).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Listener {
    /// Listener id (the frontend's name).
    pub id: String,
    /// `false`: the listener is not rendered.
    #[serde(default = "yes")]
    pub admin_state_up: bool,
    /// Protocol.
    pub protocol: ListenerProtocol,
    /// Port bound on the VIP(s).
    pub protocol_port: u16,
    /// Maximum concurrent connections; `None` = unlimited (Octavia `-1`), rendered as the global
    /// `maxconn`.
    #[serde(default)]
    pub connection_limit: Option<u32>,
    /// Pool used when no L7 policy matches.
    #[serde(default)]
    pub default_pool_id: Option<String>,
    /// L7 policies; evaluated in `position` order.
    #[serde(default)]
    pub l7_policies: Vec<L7Policy>,
    /// Octavia `insert_headers` (header name -> value; acted upon when the value is `"true"`).
    #[serde(default)]
    pub insert_headers: BTreeMap<String, String>,
    /// Client inactivity timeout, ms.
    #[serde(default = "default_client_data")]
    pub timeout_client_data: u32,
    /// Member connect timeout, ms.
    #[serde(default = "default_member_connect")]
    pub timeout_member_connect: u32,
    /// Member inactivity timeout, ms.
    #[serde(default = "default_member_data")]
    pub timeout_member_data: u32,
    /// Time to wait for content inspection, ms (0 = none).
    #[serde(default)]
    pub timeout_tcp_inspect: u32,
    /// Only these client networks may connect; empty = everyone.
    #[serde(default)]
    pub allowed_cidrs: Vec<ipnet::IpNet>,
    /// TERMINATED_HTTPS: id of the default server certificate in [`DesiredState::certificates`].
    #[serde(default)]
    pub default_tls_certificate_id: Option<String>,
    /// TERMINATED_HTTPS: SNI certificates (ids).
    #[serde(default)]
    pub sni_certificate_ids: Vec<String>,
    /// CA bundle (id) used to verify client certificates.
    #[serde(default)]
    pub client_ca_certificate_id: Option<String>,
    /// Client certificate policy.
    #[serde(default = "client_auth_none")]
    pub client_authentication: ClientAuthentication,
    /// CRL (id) for client certificates.
    #[serde(default)]
    pub client_crl_certificate_id: Option<String>,
    /// OpenSSL cipher string (TLS <= 1.2).
    #[serde(default)]
    pub tls_ciphers: Option<String>,
    /// Allowed TLS versions; empty = HAProxy's defaults.
    #[serde(default)]
    pub tls_versions: Vec<TlsVersion>,
    /// ALPN protocols offered; empty = none advertised.
    #[serde(default)]
    pub alpn_protocols: Vec<AlpnProtocol>,
    /// HSTS `max-age` (TERMINATED_HTTPS); `None` = no HSTS header.
    #[serde(default)]
    pub hsts_max_age: Option<u32>,
    /// HSTS `includeSubDomains`.
    #[serde(default)]
    pub hsts_include_subdomains: bool,
    /// HSTS `preload`.
    #[serde(default)]
    pub hsts_preload: bool,
}

fn default_client_data() -> u32 {
    DEFAULT_TIMEOUT_CLIENT_DATA_MS
}

fn default_member_connect() -> u32 {
    DEFAULT_TIMEOUT_MEMBER_CONNECT_MS
}

fn default_member_data() -> u32 {
    DEFAULT_TIMEOUT_MEMBER_DATA_MS
}

fn client_auth_none() -> ClientAuthentication {
    ClientAuthentication::None
}

/// An L7 policy of a listener.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct L7Policy {
    /// Policy id.
    pub id: String,
    /// `false`: the policy is skipped.
    #[serde(default = "yes")]
    pub admin_state_up: bool,
    /// What to do when all rules match.
    pub action: L7PolicyAction,
    /// 1-based evaluation order.
    pub position: u32,
    /// Target pool for REDIRECT_TO_POOL.
    #[serde(default)]
    pub redirect_pool_id: Option<String>,
    /// Target URL for REDIRECT_TO_URL.
    #[serde(default)]
    pub redirect_url: Option<String>,
    /// Prefix for REDIRECT_PREFIX.
    #[serde(default)]
    pub redirect_prefix: Option<String>,
    /// 301, 302, 303, 307 or 308 (default 302 for redirects).
    #[serde(default)]
    pub redirect_http_code: Option<u16>,
    /// Rules, AND-ed. A policy without enabled rules is skipped.
    #[serde(default)]
    pub rules: Vec<L7Rule>,
}

/// An L7 rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct L7Rule {
    /// Rule id (the ACL's name).
    pub id: String,
    /// `false`: the rule is ignored.
    #[serde(default = "yes")]
    pub admin_state_up: bool,
    /// What is inspected.
    #[serde(rename = "type")]
    pub rule_type: L7RuleType,
    /// How it is compared.
    pub compare_type: L7CompareType,
    /// Header/cookie name or DN field (HEADER, COOKIE, SSL_DN_FIELD).
    #[serde(default)]
    pub key: Option<String>,
    /// Value compared against.
    pub value: String,
    /// Negate the match.
    #[serde(default)]
    pub invert: bool,
}

/// A pool (rendered as one HAProxy backend per listener that uses it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pool {
    /// Pool id.
    pub id: String,
    /// `false`: the pool is not rendered (listeners using it get no backend).
    #[serde(default = "yes")]
    pub admin_state_up: bool,
    /// Protocol towards members.
    pub protocol: PoolProtocol,
    /// Algorithm.
    pub lb_algorithm: LbAlgorithm,
    /// Session persistence, if any.
    #[serde(default)]
    pub session_persistence: Option<SessionPersistence>,
    /// Health monitor, if any.
    #[serde(default)]
    pub health_monitor: Option<HealthMonitor>,
    /// Members.
    #[serde(default)]
    pub members: Vec<Member>,
    /// Re-encrypt traffic to members with TLS.
    #[serde(default)]
    pub tls_enabled: bool,
    /// Client certificate (id) presented to members.
    #[serde(default)]
    pub tls_certificate_id: Option<String>,
    /// CA bundle (id) used to verify members; `None` = no verification.
    #[serde(default)]
    pub ca_tls_certificate_id: Option<String>,
    /// CRL (id) for member certificates.
    #[serde(default)]
    pub crl_certificate_id: Option<String>,
    /// OpenSSL cipher string towards members.
    #[serde(default)]
    pub tls_ciphers: Option<String>,
    /// TLS versions towards members.
    #[serde(default)]
    pub tls_versions: Vec<TlsVersion>,
    /// ALPN towards members.
    #[serde(default)]
    pub alpn_protocols: Vec<AlpnProtocol>,
}

/// Session persistence settings of a pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionPersistence {
    /// Kind.
    #[serde(rename = "type")]
    pub persistence_type: SessionPersistenceType,
    /// Cookie name (APP_COOKIE only).
    #[serde(default)]
    pub cookie_name: Option<String>,
    /// Seconds (UDP/SCTP pools only).
    #[serde(default)]
    pub persistence_timeout: Option<u32>,
    /// Netmask (UDP/SCTP pools only).
    #[serde(default)]
    pub persistence_granularity: Option<String>,
}

/// A pool member (an HAProxy `server`, named by its id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Member id.
    pub id: String,
    /// `false`: rendered `disabled` (maintenance).
    #[serde(default = "yes")]
    pub admin_state_up: bool,
    /// Member address.
    pub address: IpAddr,
    /// Member port.
    pub protocol_port: u16,
    /// 0–256; 0 drains.
    #[serde(default = "default_weight")]
    pub weight: u16,
    /// Used only when no non-backup member is up.
    #[serde(default)]
    pub backup: bool,
    /// Health checks go to this address instead.
    #[serde(default)]
    pub monitor_address: Option<IpAddr>,
    /// Health checks go to this port instead.
    #[serde(default)]
    pub monitor_port: Option<u16>,
}

fn default_weight() -> u16 {
    1
}

/// A pool's health monitor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthMonitor {
    /// Health monitor id.
    pub id: String,
    /// `false`: no checks are run.
    #[serde(default = "yes")]
    pub admin_state_up: bool,
    /// Kind of check.
    #[serde(rename = "type")]
    pub monitor_type: HealthMonitorType,
    /// Seconds between checks (HAProxy `inter`).
    pub delay: u32,
    /// Seconds a check may take (`timeout check`).
    pub timeout: u32,
    /// Successes to go up (`rise`), 1–10.
    pub max_retries: u8,
    /// Failures to go down (`fall`), 1–10.
    #[serde(default = "default_fall")]
    pub max_retries_down: u8,
    /// HTTP method (HTTP/HTTPS checks).
    #[serde(default)]
    pub http_method: Option<HttpMethod>,
    /// Path requested (HTTP/HTTPS checks).
    #[serde(default)]
    pub url_path: Option<String>,
    /// Expected status codes: `200`, `200,202` or `200-204`.
    #[serde(default)]
    pub expected_codes: Option<String>,
    /// HTTP version of the check request.
    #[serde(default)]
    pub http_version: Option<HttpVersion>,
    /// Host header of the check request (requires HTTP/1.1).
    #[serde(default)]
    pub domain_name: Option<String>,
}

fn default_fall() -> u8 {
    3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apply_replies_of_older_agents_parse_without_the_agent_fields() {
        let old: ApplyReply =
            serde_json::from_str(r#"{"version": 7, "method": "runtime"}"#).unwrap();
        assert_eq!(old, ApplyReply::new(7, ApplyMethod::Runtime));
        assert_eq!((old.drained, old.haproxy_up), (None, None));
        let mut new = ApplyReply::new(8, ApplyMethod::Reload);
        new.drained = Some(false);
        new.haproxy_up = Some(true);
        let text = serde_json::to_string(&new).unwrap();
        assert_eq!(serde_json::from_str::<ApplyReply>(&text).unwrap(), new);
        assert_eq!(
            serde_json::to_string(&ApplyReply::new(7, ApplyMethod::Runtime)).unwrap(),
            r#"{"version":7,"method":"runtime"}"#
        );
    }

    #[test]
    fn minimal_state_parses_with_defaults() {
        let json = r#"{
            "version": 3, "load_balancer_id": "lb1", "vip": "198.19.0.10",
            "vm": {"id": "vm1", "index": 0, "name": "lb1-0"},
            "listeners": [{"id": "l1", "protocol": "HTTP", "protocol_port": 80,
                           "default_pool_id": "p1"}],
            "pools": [{"id": "p1", "protocol": "HTTP", "lb_algorithm": "SOURCE_IP_PORT",
                       "session_persistence": {"type": "APP_COOKIE", "cookie_name": "JS"},
                       "health_monitor": {"id": "h1", "type": "TLS-HELLO", "delay": 5,
                                          "timeout": 3, "max_retries": 2},
                       "members": [{"id": "m1", "address": "10.0.0.1", "protocol_port": 8080}]}]
        }"#;
        let s: DesiredState = serde_json::from_str(json).unwrap();
        assert_eq!(s.protocol, PROTOCOL_VERSION);
        assert_eq!(s.global.maxconn, DEFAULT_MAXCONN);
        assert_eq!(s.listeners[0].timeout_client_data, 50_000);
        let pool = s.pool("p1").unwrap();
        assert_eq!(pool.lb_algorithm, LbAlgorithm::SourceIpPort);
        assert_eq!(pool.members[0].weight, 1);
        assert!(pool.members[0].admin_state_up);
        let hm = pool.health_monitor.as_ref().unwrap();
        assert_eq!(hm.monitor_type, HealthMonitorType::TlsHello);
        assert_eq!(hm.max_retries_down, 3);
        // Round trip keeps Octavia's spellings.
        let back = serde_json::to_value(&s).unwrap();
        assert_eq!(back["pools"][0]["health_monitor"]["type"], "TLS-HELLO");
        assert_eq!(
            back["pools"][0]["session_persistence"]["type"],
            "APP_COOKIE"
        );
    }

    #[test]
    fn secret_pem_is_never_debug_printed() {
        let c = Certificate {
            id: "c1".into(),
            pem: SecretPem::new("-----BEGIN PRIVATE KEY-----\nsecret\n"),
        };
        let printed = format!("{c:?}");
        assert!(!printed.contains("secret"), "{printed}");
        assert!(printed.contains("c1"));
        // The wire form carries the PEM text itself.
        let json = serde_json::to_string(&c).unwrap();
        assert!(json.contains("secret"));
    }

    #[test]
    fn heartbeat_key_is_never_debug_printed() {
        let key = HeartbeatKey::new("0123456789abcdef-topsecret");
        assert!(!format!("{key:?}").contains("topsecret"));
        assert_eq!(
            serde_json::to_string(&key).unwrap(),
            "\"0123456789abcdef-topsecret\""
        );
    }

    #[test]
    fn heartbeat_round_trips() {
        let hb = Heartbeat {
            load_balancer_id: "lb".into(),
            vm_id: "vm".into(),
            seq: 7,
            sent_at: 1,
            version: Some(2),
            haproxy_up: true,
            stats: Stats {
                listeners: vec![ListenerStats {
                    id: "l1".into(),
                    status: ListenerStatus::Open,
                    counters: Counters::default(),
                }],
                pools: vec![],
            },
        };
        let json = serde_json::to_string(&hb).unwrap();
        assert!(json.contains("\"OPEN\""));
        assert_eq!(serde_json::from_str::<Heartbeat>(&json).unwrap(), hb);
    }
}
