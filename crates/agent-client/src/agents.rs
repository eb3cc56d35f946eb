//! The agent API of LB VMs as the flows use it: the [`Agents`] seam, and [`HttpAgents`], its
//! real implementation over [`AgentClient`] (HTTPS with mutual TLS).
//!
//! Why here and not in `klb-cloud`: an LB VM's agent is klb's own service, not a capability of
//! the cloud the VM runs on, so the seam sits beside the client that speaks to it. It has its
//! own error type ([`AgentError`]) so this crate needs nothing of `klb-cloud`; `klb-cloud`
//! depends on this crate instead (its `Cloud` bundle holds an `Arc<dyn Agents>`, and its fake
//! cloud implements [`Agents`] on its fake servers).

use std::net::SocketAddr;

use async_trait::async_trait;
use klb_proto::DesiredState;

use crate::client::{AgentClient, ClientError};

/// Where an LB VM's agent listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentTarget {
    /// The server id of the LB VM.
    pub server_id: String,
    /// Agent API address on the management network (`agent_port`).
    pub address: SocketAddr,
}

/// What the control plane keeps of an agent's reply (the wire type is [`klb_proto::AgentStatus`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentSummary {
    /// Version of the desired state the agent has applied, if any.
    pub applied_version: Option<u64>,
    /// Whether the VM is drained (BGP withdrawn, not taking new traffic).
    pub drained: bool,
    /// Whether HAProxy is running.
    pub haproxy_up: bool,
}

/// A failed call to an LB VM's agent, with its context.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{operation} {server_id}: {message}")]
pub struct AgentError {
    /// The operation, e.g. `agent.put_state`.
    pub operation: &'static str,
    /// The LB VM's server id.
    pub server_id: String,
    /// Whether the same call may succeed if retried later (the agent is not up yet, a 5xx).
    pub retryable: bool,
    /// Human-readable detail (never contains secrets).
    pub message: String,
}

/// Result of an agent call.
pub type AgentResult<T> = Result<T, AgentError>;

/// The agent API of LB VMs (the real implementation is [`HttpAgents`]).
#[async_trait]
pub trait Agents: Send + Sync {
    /// Push the whole desired state; returns once the agent applied it (or refused it).
    async fn push(&self, target: &AgentTarget, state: &DesiredState) -> AgentResult<AgentSummary>;
    /// What the agent reports now.
    async fn status(&self, target: &AgentTarget) -> AgentResult<AgentSummary>;
    /// Withdraw the VIP announcement, then stop taking new connections.
    async fn drain(&self, target: &AgentTarget) -> AgentResult<AgentSummary>;
    /// Announce the VIP again and take new connections.
    async fn undrain(&self, target: &AgentTarget) -> AgentResult<AgentSummary>;
}

/// Pushes desired states to LB VM agents over HTTPS (mTLS with klb's CA).
#[derive(Debug, Clone)]
pub struct HttpAgents {
    client: AgentClient,
}

impl HttpAgents {
    /// Wraps a configured client.
    pub fn new(client: AgentClient) -> Self {
        HttpAgents { client }
    }
}

fn agent_error(operation: &'static str, target: &AgentTarget, err: ClientError) -> AgentError {
    AgentError {
        operation,
        server_id: target.server_id.clone(),
        retryable: err.is_retryable(),
        message: err.to_string(),
    }
}

#[async_trait]
impl Agents for HttpAgents {
    async fn push(&self, target: &AgentTarget, state: &DesiredState) -> AgentResult<AgentSummary> {
        let reply = self
            .client
            .put_state(target.address, state)
            .await
            .map_err(|e| agent_error("agent.put_state", target, e))?;
        match (reply.drained, reply.haproxy_up) {
            (Some(drained), Some(haproxy_up)) => Ok(AgentSummary {
                applied_version: Some(reply.version),
                drained,
                haproxy_up,
            }),
            // An agent from before these fields.
            _ => self.status(target).await,
        }
    }

    async fn status(&self, target: &AgentTarget) -> AgentResult<AgentSummary> {
        let status = self
            .client
            .status(target.address)
            .await
            .map_err(|e| agent_error("agent.status", target, e))?;
        Ok(AgentSummary {
            applied_version: status.status.version,
            drained: status.drained,
            haproxy_up: status.status.haproxy_up,
        })
    }

    async fn drain(&self, target: &AgentTarget) -> AgentResult<AgentSummary> {
        self.client
            .drain(target.address)
            .await
            .map_err(|e| agent_error("agent.drain", target, e))?;
        self.status(target).await
    }

    async fn undrain(&self, target: &AgentTarget) -> AgentResult<AgentSummary> {
        self.client
            .undrain(target.address)
            .await
            .map_err(|e| agent_error("agent.undrain", target, e))?;
        self.status(target).await
    }
}
