//! Test builders shared by this crate's unit tests.

use klb_model::*;
use klb_proto::{
    Counters, Heartbeat, ListenerStats, ListenerStatus, MemberStats, MemberStatus, PoolStats,
    PoolStatus, Stats,
};
use klb_test_support::fixtures;

use crate::status::GraphRef;

pub struct Lab {
    pub lb: LoadBalancer,
    pub listener: Listener,
    pub pool: Pool,
    pub members: Vec<Member>,
    pub hm: Vec<HealthMonitor>,
}

pub fn lab(n_members: usize, monitored: bool) -> Lab {
    use ProvisioningStatus::Active;
    let lb = fixtures::load_balancer("p", Active);
    let pool = fixtures::pool(&lb, Active);
    let listener = Listener {
        default_pool_id: Some(pool.id),
        ..fixtures::listener(&lb, Active)
    };
    let members = (0..n_members)
        .map(|i| Member {
            address: format!("198.18.3.{}", i + 2).parse().unwrap(),
            protocol_port: 8080,
            operating_status: OperatingStatus::Offline,
            ..fixtures::member(&pool, Active)
        })
        .collect();
    let hm = if monitored {
        vec![fixtures::health_monitor(&pool, Active)]
    } else {
        vec![]
    };
    Lab {
        lb,
        listener,
        pool,
        members,
        hm,
    }
}

impl Lab {
    pub fn graph(&self) -> GraphRef<'_> {
        GraphRef {
            load_balancer: &self.lb,
            listeners: std::slice::from_ref(&self.listener),
            pools: std::slice::from_ref(&self.pool),
            members: &self.members,
            health_monitors: &self.hm,
        }
    }

    /// A heartbeat in which member i has status `members[i]`.
    pub fn heartbeat(&self, vm: &str, members: &[MemberStatus], requests: u64) -> Heartbeat {
        let pool_up = members
            .iter()
            .any(|s| matches!(s, MemberStatus::Up | MemberStatus::NoCheck));
        Heartbeat {
            load_balancer_id: self.lb.id.to_string(),
            vm_id: vm.into(),
            seq: 1,
            sent_at: 0,
            version: Some(1),
            haproxy_up: true,
            stats: Stats {
                listeners: vec![ListenerStats {
                    id: self.listener.id.to_string(),
                    status: ListenerStatus::Open,
                    counters: Counters {
                        requests,
                        total_connections: requests,
                        ..Default::default()
                    },
                }],
                pools: vec![PoolStats {
                    id: self.pool.id.to_string(),
                    listener_id: self.listener.id.to_string(),
                    status: if pool_up {
                        PoolStatus::Up
                    } else {
                        PoolStatus::Down
                    },
                    counters: Counters::default(),
                    members: self
                        .members
                        .iter()
                        .zip(members)
                        .map(|(m, s)| MemberStats {
                            id: m.id.to_string(),
                            status: *s,
                            counters: Counters::default(),
                        })
                        .collect(),
                }],
            },
        }
    }
}
