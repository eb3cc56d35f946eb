//! The health manager: receives the LB VMs' signed heartbeats, derives Octavia's operating
//! statuses and traffic statistics from them, and asks for a failover when an LB VM goes
//! silent.
//!
//! Ingest ([`receiver`]) keeps only the latest report per LB VM in memory, so it never waits on
//! the database; the [`HealthManager`] loop writes statuses when they change.

#![warn(missing_docs)]
use std::time::Duration;

use klb_agent_client::heartbeat::HeartbeatKeys;

pub mod manager;
pub mod receiver;
pub mod status;

#[cfg(test)]
mod testutil;

pub use manager::{HealthManager, STATS_KIND};
pub use receiver::{Reports, router};

/// Health manager settings.
#[derive(Debug, Clone)]
pub struct HealthConfig {
    /// The master secret each LB VM's heartbeat key is derived from; every report is verified
    /// with the key of the VM it claims to come from.
    pub heartbeat_keys: HeartbeatKeys,
    /// Reports older than this when they arrive are rejected.
    pub max_age: std::time::Duration,
    /// An LB VM whose last report is older than this is silent: not counted as serving, and
    /// failed over.
    pub silent_after: Duration,
    /// Extra time a new LB VM gets to send its first report before it counts as silent.
    pub boot_grace: Duration,
    /// How often the manager judges.
    pub tick: Duration,
    /// Whether silent LB VMs are failed over.
    pub failover: bool,
}
