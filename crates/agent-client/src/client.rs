//! The control plane's client for the agent API (the endpoints are listed in `klb_agent::server`).
//!
//! One [`AgentClient`] serves every LB VM: it holds the TLS identity (klb CA as the only trust
//! anchor, the control plane's client certificate) and a connection pool; each call names the
//! agent's address. Agents are reached by IP, so their server certificates carry IP SANs.
//! Retries are the caller's decision (flows retry with backoff); [`ClientError::is_retryable`]
//! says which failures are worth it.

use std::net::SocketAddr;
use std::time::Duration;

use klb_proto::{AgentStatus, ApplyReply, DesiredState, DrainReply, ErrorBody, Stats};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;

use klb_proto::auth::{BasicAuth, Password};
use klb_tls::{self as tls, SecretKeyPem, TlsError};

/// Client errors.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Building the client failed.
    #[error("agent client setup: {0}")]
    Setup(String),
    /// TLS material.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// Connection, TLS handshake or timeout (retryable).
    #[error("agent {agent}: {source}")]
    Transport {
        /// The agent.
        agent: SocketAddr,
        /// Cause.
        source: reqwest::Error,
    },
    /// The agent answered with an error status.
    #[error("agent {agent} answered {status}: {message}")]
    Status {
        /// The agent.
        agent: SocketAddr,
        /// HTTP status.
        status: StatusCode,
        /// The agent's message.
        message: String,
        /// Version the agent is running, when it said.
        running_version: Option<u64>,
    },
    /// The reply did not parse.
    #[error("agent {agent}: unexpected reply: {message}")]
    Decode {
        /// The agent.
        agent: SocketAddr,
        /// Parser message.
        message: String,
    },
}

impl ClientError {
    /// Worth retrying later: transport failures and 5xx (the agent keeps its old state).
    /// 4xx are final for that request (409 = version conflict, 422 = config rejected).
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Transport { .. } => true,
            ClientError::Status { status, .. } => status.is_server_error(),
            _ => false,
        }
    }

    /// The HTTP status, if the agent answered.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ClientError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// How to build an [`AgentClient`].
#[derive(Debug, Clone)]
pub struct AgentClientConfig {
    /// klb's CA certificate (PEM): the only trust anchor for agents.
    pub ca_pem: String,
    /// The control plane's client certificate (PEM).
    pub cert_pem: String,
    /// Its key.
    pub key_pem: SecretKeyPem,
    /// Optional basic auth (the seed's agent_user / agent_password).
    pub auth: Option<BasicAuth>,
    /// Per-request timeout (connect + TLS + apply). Applies may reload HAProxy and FRR.
    pub timeout: Duration,
    /// Connect timeout.
    pub connect_timeout: Duration,
}

/// HTTPS client for agents.
#[derive(Debug, Clone)]
pub struct AgentClient {
    http: reqwest::Client,
    auth: Option<(String, Password)>,
}

impl AgentClient {
    /// Builds the client (mTLS with klb's CA only).
    pub fn new(config: AgentClientConfig) -> Result<AgentClient, ClientError> {
        let tls = tls::client_config(&config.ca_pem, &config.cert_pem, &config.key_pem)?;
        // Agents close keep-alive connections idle for longer than their head timeout
        // (`klb_http::Limits::AGENT`): drop them from the pool well before that, so a push
        // never goes out on a connection the agent is closing.
        let idle = klb_http::Limits::AGENT.header_read_timeout / 2;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .pool_idle_timeout(idle)
            .timeout(config.timeout)
            .connect_timeout(config.connect_timeout)
            .no_proxy()
            .build()
            .map_err(|e| ClientError::Setup(e.to_string()))?;
        Ok(AgentClient {
            http,
            auth: config.auth.map(|a| (a.user, a.password)),
        })
    }

    /// `PUT /v1/state`.
    pub async fn put_state(
        &self,
        agent: SocketAddr,
        state: &DesiredState,
    ) -> Result<ApplyReply, ClientError> {
        self.call(agent, Method::PUT, "/v1/state", Some(state))
            .await
    }

    /// `GET /v1/status`.
    pub async fn status(&self, agent: SocketAddr) -> Result<AgentStatus, ClientError> {
        self.call::<(), _>(agent, Method::GET, "/v1/status", None)
            .await
    }

    /// `GET /v1/stats`.
    pub async fn stats(&self, agent: SocketAddr) -> Result<Stats, ClientError> {
        self.call::<(), _>(agent, Method::GET, "/v1/stats", None)
            .await
    }

    /// `POST /v1/drain`.
    pub async fn drain(&self, agent: SocketAddr) -> Result<DrainReply, ClientError> {
        self.call::<(), _>(agent, Method::POST, "/v1/drain", None)
            .await
    }

    /// `POST /v1/undrain`.
    pub async fn undrain(&self, agent: SocketAddr) -> Result<DrainReply, ClientError> {
        self.call::<(), _>(agent, Method::POST, "/v1/undrain", None)
            .await
    }

    async fn call<B: serde::Serialize, T: DeserializeOwned>(
        &self,
        agent: SocketAddr,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, ClientError> {
        let url = format!("https://{agent}{path}");
        let mut req = self.http.request(method, url);
        if let Some((user, password)) = &self.auth {
            req = req.basic_auth(user, Some(password.expose()));
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req
            .send()
            .await
            .map_err(|source| ClientError::Transport { agent, source })?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|source| ClientError::Transport { agent, source })?;
        if !status.is_success() {
            let (message, running_version) = match serde_json::from_slice::<ErrorBody>(&bytes) {
                Ok(e) => (e.message, e.running_version),
                Err(_) => (
                    String::from_utf8_lossy(&bytes).chars().take(500).collect(),
                    None,
                ),
            };
            return Err(ClientError::Status {
                agent,
                status,
                message,
                running_version,
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode {
            agent,
            message: e.to_string(),
        })
    }
}
