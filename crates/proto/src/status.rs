//! What the agent sends back: the outcome of applying a desired state, status and statistics
//! per listener/pool/member, drain replies, the error body of every failed call, and the
//! periodic heartbeat.

use serde::{Deserialize, Serialize};

/// How a desired state was applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApplyMethod {
    /// Nothing changed in the rendered configuration.
    Unchanged,
    /// Member-only changes applied through the HAProxy runtime API (no reload); the config file
    /// was rewritten too so a later reload keeps them.
    Runtime,
    /// The configuration file was swapped and HAProxy reloaded seamlessly.
    Reload,
    /// HAProxy was not running and has been started.
    Start,
}

/// Reply to a successful apply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyReply {
    /// The version now running.
    pub version: u64,
    /// How it was applied.
    pub method: ApplyMethod,
    /// Whether the VM is drained, as the agent answers `PUT /v1/state` (absent from older
    /// agents: the caller then asks `GET /v1/status`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drained: Option<bool>,
    /// Whether HAProxy answers on its runtime socket after the apply (same as `drained`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub haproxy_up: Option<bool>,
}

impl ApplyReply {
    /// A reply without the agent-level fields (`drained`, `haproxy_up`).
    pub fn new(version: u64, method: ApplyMethod) -> ApplyReply {
        ApplyReply {
            version,
            method,
            drained: None,
            haproxy_up: None,
        }
    }
}

/// Reply to a failed apply; the previous configuration keeps serving.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyFailure {
    /// The version that was rejected.
    pub version: u64,
    /// The version still running, if any.
    pub running_version: Option<u64>,
    /// Why: a validation message or the text of `haproxy -c`. Never contains secrets.
    pub message: String,
}

/// Listener status as reported by HAProxy's frontend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ListenerStatus {
    /// Accepting connections.
    Open,
    /// At its connection limit.
    Full,
    /// Not accepting (stopped or absent).
    Down,
}

/// Pool (backend) status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PoolStatus {
    /// At least one server is usable.
    Up,
    /// No server is usable.
    Down,
}

/// Member (server) status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MemberStatus {
    /// Health check passes.
    Up,
    /// Health check fails.
    Down,
    /// Weight 0 or drain state: no new traffic.
    Drain,
    /// Administratively disabled.
    Maint,
    /// No health monitor: assumed usable.
    NoCheck,
}

/// Traffic counters (HAProxy `show stat` columns).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Current sessions (`scur`).
    pub active_connections: u64,
    /// Cumulative sessions (`stot`).
    pub total_connections: u64,
    /// Bytes received from clients (`bin`).
    pub bytes_in: u64,
    /// Bytes sent to clients (`bout`).
    pub bytes_out: u64,
    /// HTTP requests (`req_tot`; 0 in TCP mode).
    pub requests: u64,
    /// Request errors (`ereq`).
    pub request_errors: u64,
}

/// Status and counters of one listener.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerStats {
    /// Listener id.
    pub id: String,
    /// Status.
    pub status: ListenerStatus,
    /// Counters.
    pub counters: Counters,
}

/// Status and counters of one pool as used by one listener (HAProxy backend
/// `<pool_id>:<listener_id>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolStats {
    /// Pool id.
    pub id: String,
    /// Listener whose backend this is.
    pub listener_id: String,
    /// Status.
    pub status: PoolStatus,
    /// Counters.
    pub counters: Counters,
    /// Members.
    pub members: Vec<MemberStats>,
}

/// Status and counters of one member within one backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberStats {
    /// Member id.
    pub id: String,
    /// Status.
    pub status: MemberStatus,
    /// Counters.
    pub counters: Counters,
}

/// Everything the agent knows about its HAProxy at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Listeners.
    pub listeners: Vec<ListenerStats>,
    /// Pools (per listener).
    pub pools: Vec<PoolStats>,
}

/// Reply to a status request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReply {
    /// Load balancer id of the running state, if any.
    pub load_balancer_id: Option<String>,
    /// Version of the running state, if any.
    pub version: Option<u64>,
    /// Whether HAProxy answers on its admin socket.
    pub haproxy_up: bool,
    /// Statistics (empty when HAProxy is down).
    pub stats: Stats,
}

/// `GET /v1/status`: the proto status plus what only the agent knows (drain, BGP).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentStatus {
    /// Applied version, HAProxy liveness and statistics.
    #[serde(flatten)]
    pub status: StatusReply,
    /// Whether the VM is drained (VIP withdrawn, frontends not accepting).
    pub drained: bool,
    /// BGP sessions (empty without FRR).
    #[serde(default)]
    pub bgp_sessions: Vec<BgpSession>,
}

/// One BGP session as seen by bgpd.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BgpSession {
    /// Neighbor address.
    pub peer: String,
    /// FSM state (`Established`, `Active`, `Connect`, ...).
    pub state: String,
    /// Prefixes sent to the peer.
    #[serde(default)]
    pub prefixes_sent: u64,
}

/// Reply to drain/undrain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainReply {
    /// State after the call.
    pub drained: bool,
    /// `false` when the VM already was in that state.
    pub changed: bool,
    /// Milliseconds from the start of the call until it finished (includes the drain wait).
    pub took_ms: u64,
}

/// Error body of every non-2xx agent reply (a superset of [`ApplyFailure`]'s fields).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong; never contains secrets.
    pub message: String,
    /// The rejected state's version (PUT /v1/state).
    #[serde(default)]
    pub version: Option<u64>,
    /// The version still running, if any.
    #[serde(default)]
    pub running_version: Option<u64>,
}

/// The periodic report an agent sends to the control plane (HMAC-signed by the sender).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Load balancer id.
    pub load_balancer_id: String,
    /// The sending LB VM's id.
    pub vm_id: String,
    /// Sequence number, increasing per agent process; the receiver drops replays.
    pub seq: u64,
    /// Send time, milliseconds since the Unix epoch.
    pub sent_at: u64,
    /// Version of the running desired state, if any.
    #[serde(default)]
    pub version: Option<u64>,
    /// Whether HAProxy answers on its admin socket.
    pub haproxy_up: bool,
    /// Statistics.
    pub stats: Stats,
}
