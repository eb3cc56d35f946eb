//! Operating statuses derived from the LB VMs' reports. Pure functions, no I/O.
//!
//! Octavia's meanings (octavia-api.md §0.7): members ONLINE / ERROR (failing checks) /
//! DRAINING (weight 0) / NO_MONITOR (pool without health monitor) / OFFLINE (admin down or not
//! reported); pools and listeners ONLINE, DEGRADED (some members or pools in ERROR), ERROR,
//! OFFLINE; the load balancer ONLINE, DEGRADED (a listener not ONLINE, or an LB VM silent),
//! ERROR (no LB VM serving), OFFLINE (admin down).
//!
//! Active-active: a member, pool or listener is judged by the best report among the LB VMs that
//! serve (a member one VM sees up still gets traffic from it); the load balancer by all of them.

use std::collections::HashMap;

use klb_model::{
    HealthMonitor, Kind, LbStats, Listener, LoadBalancer, Member, OperatingStatus, Pool,
};
use klb_proto::{Heartbeat, ListenerStatus, MemberStatus, PoolStatus};
use uuid::Uuid;

/// One LB VM's latest report; `None` when it is missing or too old.
#[derive(Debug, Clone, Copy)]
pub struct VmReport<'a> {
    /// The VM's id.
    pub vm_id: &'a str,
    /// Its latest fresh heartbeat.
    pub heartbeat: Option<&'a Heartbeat>,
}

/// The live objects of one load balancer's graph.
#[derive(Debug, Clone, Copy)]
pub struct GraphRef<'a> {
    /// The load balancer.
    pub load_balancer: &'a LoadBalancer,
    /// Its listeners.
    pub listeners: &'a [Listener],
    /// Its pools.
    pub pools: &'a [Pool],
    /// Members of its pools.
    pub members: &'a [Member],
    /// Health monitors of its pools.
    pub health_monitors: &'a [HealthMonitor],
}

/// Derived statuses by (kind, id). Objects whose status cannot be judged are absent.
pub type Statuses = HashMap<(Kind, Uuid), OperatingStatus>;

/// Derives every operating status of `graph` from `reports` (one per LB VM of the load
/// balancer). With no LB VMs at all nothing can be judged and the result is empty.
pub fn derive(graph: GraphRef<'_>, reports: &[VmReport<'_>]) -> Statuses {
    let mut out = Statuses::new();
    let lb = graph.load_balancer;
    if reports.is_empty() {
        return out;
    }
    if !lb.admin_state_up {
        out.insert((Kind::LoadBalancer, lb.id), OperatingStatus::Offline);
        for l in graph.listeners {
            out.insert((Kind::Listener, l.id), OperatingStatus::Offline);
        }
        for p in graph.pools {
            out.insert((Kind::Pool, p.id), OperatingStatus::Offline);
        }
        for m in graph.members {
            out.insert((Kind::Member, m.id), OperatingStatus::Offline);
        }
        return out;
    }
    let serving: Vec<&Heartbeat> = reports
        .iter()
        .filter_map(|r| r.heartbeat)
        .filter(|hb| hb.haproxy_up)
        .collect();
    if serving.is_empty() {
        out.insert((Kind::LoadBalancer, lb.id), OperatingStatus::Error);
        return out;
    }

    for member in graph.members {
        out.insert(
            (Kind::Member, member.id),
            member_status(graph, member, &serving),
        );
    }
    for pool in graph.pools {
        out.insert(
            (Kind::Pool, pool.id),
            pool_status(graph, pool, &serving, &out),
        );
    }
    for listener in graph.listeners {
        let status = listener_status(graph, listener, &serving, &out);
        out.insert((Kind::Listener, listener.id), status);
    }
    let all_serving = serving.len() == reports.len();
    let listeners_ok = graph.listeners.iter().all(|l| {
        !l.admin_state_up || out.get(&(Kind::Listener, l.id)) == Some(&OperatingStatus::Online)
    });
    let lb_status = if all_serving && listeners_ok {
        OperatingStatus::Online
    } else {
        OperatingStatus::Degraded
    };
    out.insert((Kind::LoadBalancer, lb.id), lb_status);
    out
}

fn member_status(graph: GraphRef<'_>, member: &Member, serving: &[&Heartbeat]) -> OperatingStatus {
    let pool_enabled = graph
        .pools
        .iter()
        .any(|p| p.id == member.pool_id && p.admin_state_up);
    if !member.admin_state_up || !pool_enabled {
        return OperatingStatus::Offline;
    }
    let monitored = graph
        .health_monitors
        .iter()
        .any(|hm| hm.pool_id == member.pool_id && hm.admin_state_up);
    if !monitored {
        return OperatingStatus::NoMonitor;
    }
    if member.weight == 0 {
        return OperatingStatus::Draining;
    }
    let id = member.id.to_string();
    let seen: Vec<MemberStatus> = serving
        .iter()
        .flat_map(|hb| hb.stats.pools.iter())
        .flat_map(|p| p.members.iter())
        .filter(|m| m.id == id)
        .map(|m| m.status)
        .collect();
    if seen
        .iter()
        .any(|s| matches!(s, MemberStatus::Up | MemberStatus::NoCheck))
    {
        OperatingStatus::Online
    } else if seen.contains(&MemberStatus::Drain) {
        OperatingStatus::Draining
    } else if seen.contains(&MemberStatus::Down) {
        OperatingStatus::Error
    } else {
        // Not applied yet on any VM, or in maintenance.
        OperatingStatus::Offline
    }
}

fn pool_status(
    graph: GraphRef<'_>,
    pool: &Pool,
    serving: &[&Heartbeat],
    members_done: &Statuses,
) -> OperatingStatus {
    if !pool.admin_state_up {
        return OperatingStatus::Offline;
    }
    let id = pool.id.to_string();
    let seen: Vec<PoolStatus> = serving
        .iter()
        .flat_map(|hb| hb.stats.pools.iter())
        .filter(|p| p.id == id)
        .map(|p| p.status)
        .collect();
    let base = if seen.contains(&PoolStatus::Up) {
        OperatingStatus::Online
    } else if seen.is_empty() {
        // A pool no listener uses is not in HAProxy: nothing to judge.
        return OperatingStatus::Offline;
    } else {
        OperatingStatus::Error
    };
    let member_in_error = graph.members.iter().any(|m| {
        m.pool_id == pool.id
            && members_done.get(&(Kind::Member, m.id)) == Some(&OperatingStatus::Error)
    });
    if base == OperatingStatus::Online && member_in_error {
        OperatingStatus::Degraded
    } else {
        base
    }
}

fn listener_status(
    graph: GraphRef<'_>,
    listener: &Listener,
    serving: &[&Heartbeat],
    pools_done: &Statuses,
) -> OperatingStatus {
    if !listener.admin_state_up {
        return OperatingStatus::Offline;
    }
    let id = listener.id.to_string();
    let seen: Vec<ListenerStatus> = serving
        .iter()
        .flat_map(|hb| hb.stats.listeners.iter())
        .filter(|l| l.id == id)
        .map(|l| l.status)
        .collect();
    let base = if seen.contains(&ListenerStatus::Open) {
        OperatingStatus::Online
    } else if seen.contains(&ListenerStatus::Full) {
        OperatingStatus::Degraded
    } else if seen.is_empty() {
        return OperatingStatus::Offline;
    } else {
        OperatingStatus::Error
    };
    let pool_bad = listener.default_pool_id.is_some_and(|pool_id| {
        graph
            .pools
            .iter()
            .any(|p| p.id == pool_id && p.admin_state_up)
            && matches!(
                pools_done.get(&(Kind::Pool, pool_id)),
                Some(OperatingStatus::Error | OperatingStatus::Degraded)
            )
    });
    if base == OperatingStatus::Online && pool_bad {
        OperatingStatus::Degraded
    } else {
        base
    }
}

/// Sums listener counters over `reports` (active-active: every VM serves a share); each VM's
/// own share is kept for the amphora stats endpoint.
pub fn sum_stats(reports: &[VmReport<'_>]) -> LbStats {
    let mut out = LbStats::default();
    for r in reports {
        let Some(hb) = r.heartbeat else { continue };
        // A VM that reported no listener still shows (with no counters).
        out.vms.entry(r.vm_id.to_owned()).or_default();
        for l in &hb.stats.listeners {
            out.add(r.vm_id, &l.id, &l.counters);
        }
    }
    out
}

#[cfg(test)]
mod tests;
