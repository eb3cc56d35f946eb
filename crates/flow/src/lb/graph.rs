//! The load balancer graph a job reads, decoded once ([`Graph`]), and how that one read travels
//! from the job pump to the same job's desired-state push ([`Graphs`]) instead of being read
//! again at the push.
//!
//! Why handing it over is safe: the pump hands a graph over only when its load balancer is in
//! `PENDING_CREATE`/`PENDING_UPDATE`, the API's lock, which this job holds until it settles, so
//! nothing that reaches a desired state changes before the push (the health manager writes
//! operating statuses and statistics only, which no desired state carries). The run input
//! names the read ([`LbInput::graph_version`](super::LbInput), the LB document's version), and a
//! push uses only a graph of that version: a run resumed by another node or after a restart
//! finds none and reads the graph itself.

use std::collections::BTreeMap;
use std::sync::Arc;

use klb_cloud::Protocol;
use klb_model::{
    HealthMonitor, Kind, L7Policy, L7Rule, Listener, ListenerProtocol, LoadBalancer, Member, Pool,
    ProvisioningStatus, Resource,
};
use klb_store::{Document, StoreError};
use tokio::sync::Mutex;

use super::ListenerPort;

/// A load balancer's live graph, decoded (what `Store::graph` returns, by kind).
#[derive(Debug, Clone)]
pub struct Graph {
    /// The load balancer.
    pub load_balancer: LoadBalancer,
    /// The version of the load balancer's document when read: every change of the graph
    /// writes the LB, so it names this state of the graph.
    pub version: i64,
    /// Its listeners.
    pub listeners: Vec<Listener>,
    /// Its pools.
    pub pools: Vec<Pool>,
    /// Its members.
    pub members: Vec<Member>,
    /// Its health monitors.
    pub health_monitors: Vec<HealthMonitor>,
    /// Its L7 policies.
    pub l7_policies: Vec<L7Policy>,
    /// Its L7 rules.
    pub l7_rules: Vec<L7Rule>,
}

impl Graph {
    /// Decodes the documents of one graph (as returned by `Store::graph`); `None` without the
    /// load balancer's own document. Documents of other kinds (LB VM records) are skipped.
    pub fn from_documents(docs: &[Document]) -> Result<Option<Graph>, StoreError> {
        fn all<T: Resource>(docs: &[Document]) -> Result<Vec<T>, StoreError> {
            docs.iter()
                .filter(|d| d.kind == T::KIND)
                .map(Document::decode)
                .collect()
        }
        let Some(lb) = docs.iter().find(|d| d.kind == Kind::LoadBalancer) else {
            return Ok(None);
        };
        Ok(Some(Graph {
            load_balancer: lb.decode()?,
            version: lb.version,
            listeners: all(docs)?,
            pools: all(docs)?,
            members: all(docs)?,
            health_monitors: all(docs)?,
            l7_policies: all(docs)?,
            l7_rules: all(docs)?,
        }))
    }

    /// Whether the load balancer holds the API's lock (a create or a change of it or of a
    /// child is being applied): the graph cannot change until its job settles.
    pub fn is_locked(&self) -> bool {
        matches!(
            self.load_balancer.provisioning_status,
            ProvisioningStatus::PendingCreate | ProvisioningStatus::PendingUpdate
        )
    }

    /// Ports of the listeners that stay (pending deletes are already closed), sorted, once
    /// each: what the security group opens.
    pub fn listener_ports(&self) -> Vec<ListenerPort> {
        let mut ports: Vec<ListenerPort> = self
            .listeners
            .iter()
            .filter(|l| {
                !matches!(
                    l.provisioning_status,
                    ProvisioningStatus::PendingDelete | ProvisioningStatus::Deleted
                )
            })
            .map(|l| ListenerPort {
                protocol: if l.protocol == ListenerProtocol::Udp {
                    Protocol::Udp
                } else {
                    Protocol::Tcp
                },
                port: l.protocol_port,
            })
            .collect();
        ports.sort_by_key(|p| (p.protocol, p.port));
        ports.dedup();
        ports
    }
}

/// At most this many graphs wait for their push (one per load balancer with a job in flight
/// on this node); beyond it the oldest is dropped and its push reads the graph itself.
const HANDOFF_LIMIT: usize = 1024;

/// Graphs the job pump read, waiting for the same job's push in this process (see the module
/// docs). Cheap to clone (shared).
#[derive(Debug, Clone, Default)]
pub struct Graphs {
    waiting: Arc<Mutex<BTreeMap<String, Arc<Graph>>>>,
}

impl Graphs {
    /// Keeps `graph` for its load balancer's next push (replacing an older one).
    pub async fn hand_over(&self, graph: Arc<Graph>) {
        let mut waiting = self.waiting.lock().await;
        let lb_id = graph.load_balancer.id.to_string();
        if waiting.len() >= HANDOFF_LIMIT && !waiting.contains_key(&lb_id) {
            waiting.pop_first();
        }
        waiting.insert(lb_id, graph);
    }

    /// The graph of `lb_id` read at `version`, once (a retried push reads it itself); `None`
    /// when none of that version waits.
    pub async fn take(&self, lb_id: &str, version: i64) -> Option<Arc<Graph>> {
        let mut waiting = self.waiting.lock().await;
        match waiting.get(lb_id) {
            Some(g) if g.version == version => waiting.remove(lb_id),
            _ => None,
        }
    }
}
