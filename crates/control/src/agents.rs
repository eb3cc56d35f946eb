//! klb-cloud's `Agents` seam over the real agent client (HTTPS with mutual TLS).

use async_trait::async_trait;
use klb_agent_client::client::{AgentClient, ClientError};
use klb_cloud::{
    AgentStatus, AgentTarget, Agents, CloudError, CloudErrorKind, CloudResult, DesiredState,
};

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

fn cloud_error(operation: &'static str, target: &AgentTarget, err: ClientError) -> CloudError {
    let retryable = err.is_retryable();
    let kind = if retryable {
        CloudErrorKind::Unavailable
    } else {
        CloudErrorKind::Invalid
    };
    CloudError::new(operation, target.server_id.clone(), kind, err.to_string())
        .with_retryable(retryable)
}

#[async_trait]
impl Agents for HttpAgents {
    async fn push(&self, target: &AgentTarget, state: &DesiredState) -> CloudResult<AgentStatus> {
        let reply = self
            .client
            .put_state(target.address, state)
            .await
            .map_err(|e| cloud_error("agent.put_state", target, e))?;
        match (reply.drained, reply.haproxy_up) {
            (Some(drained), Some(haproxy_up)) => Ok(AgentStatus {
                applied_version: Some(reply.version),
                drained,
                haproxy_up,
            }),
            // An agent from before these fields.
            _ => self.status(target).await,
        }
    }

    async fn status(&self, target: &AgentTarget) -> CloudResult<AgentStatus> {
        let status = self
            .client
            .status(target.address)
            .await
            .map_err(|e| cloud_error("agent.status", target, e))?;
        Ok(AgentStatus {
            applied_version: status.status.version,
            drained: status.drained,
            haproxy_up: status.status.haproxy_up,
        })
    }

    async fn drain(&self, target: &AgentTarget) -> CloudResult<AgentStatus> {
        self.client
            .drain(target.address)
            .await
            .map_err(|e| cloud_error("agent.drain", target, e))?;
        self.status(target).await
    }

    async fn undrain(&self, target: &AgentTarget) -> CloudResult<AgentStatus> {
        self.client
            .undrain(target.address)
            .await
            .map_err(|e| cloud_error("agent.undrain", target, e))?;
        self.status(target).await
    }
}
