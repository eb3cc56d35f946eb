//! A load balancer's traffic statistics as stored between the health manager (which sums the
//! LB VMs' heartbeats and writes them) and the API (which answers `GET .../stats` and the
//! amphora stats from them).
//!
//! The type lives here rather than in `klb-proto` because it is a stored document, like the
//! resources, and never crosses the wire to an LB VM; both of its users already depend on this
//! crate. Its counters are the heartbeat's [`klb_proto::Counters`]: the same concept (HAProxy's
//! `show stat` columns), summed.

use std::collections::BTreeMap;

pub use klb_proto::Counters;
use serde::{Deserialize, Serialize};

/// The statistics document of one load balancer (`klb_store::STATS_KIND`, keyed by LB id).
/// A missing part (`amphorae`, `listeners`, `loadbalancer`) reads as zeros.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LbStats {
    /// Per LB VM id (the amphora id), per listener id: what that VM alone served.
    #[serde(rename = "amphorae")]
    pub vms: BTreeMap<String, BTreeMap<String, Counters>>,
    /// Per listener id, summed over the LB VMs.
    pub listeners: BTreeMap<String, Counters>,
    /// The whole load balancer, summed over listeners and LB VMs.
    #[serde(rename = "loadbalancer")]
    pub load_balancer: Counters,
}

impl LbStats {
    /// Adds one LB VM's counters for one listener to the VM's own share, the listener's sum
    /// and the load balancer's sum (active-active: every VM serves a share).
    pub fn add(&mut self, vm_id: &str, listener_id: &str, c: &Counters) {
        add(
            self.vms
                .entry(vm_id.to_owned())
                .or_default()
                .entry(listener_id.to_owned())
                .or_default(),
            c,
        );
        add(self.listeners.entry(listener_id.to_owned()).or_default(), c);
        add(&mut self.load_balancer, c);
    }
}

fn add(into: &mut Counters, c: &Counters) {
    into.active_connections += c.active_connections;
    into.total_connections += c.total_connections;
    into.bytes_in += c.bytes_in;
    into.bytes_out += c.bytes_out;
    into.requests += c.requests;
    into.request_errors += c.request_errors;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_shape_and_missing_parts() {
        let mut s = LbStats::default();
        let c = Counters {
            requests: 3,
            bytes_in: 10,
            ..Counters::default()
        };
        s.add("vm1", "l1", &c);
        s.add("vm2", "l1", &c);
        let json: serde_json::Value = serde_json::to_value(&s).unwrap();
        // The keys the stored documents have always had.
        assert_eq!(json["loadbalancer"]["requests"], 6);
        assert_eq!(json["listeners"]["l1"]["bytes_in"], 20);
        assert_eq!(json["amphorae"]["vm2"]["l1"]["requests"], 3);
        assert_eq!(serde_json::from_value::<LbStats>(json).unwrap(), s);
        // A document written before a part existed reads that part as zeros.
        let old: LbStats = serde_json::from_str(
            r#"{"loadbalancer":{"active_connections":1,"total_connections":2,"bytes_in":5,
                "bytes_out":6,"requests":7,"request_errors":0}}"#,
        )
        .unwrap();
        assert_eq!(old.load_balancer.bytes_in, 5);
        assert!(old.vms.is_empty() && old.listeners.is_empty());
    }
}
