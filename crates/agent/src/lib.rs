//! The agent on each LB VM: receives the whole desired state of its load balancer over an
//! mTLS HTTPS API ([`server`]), applies it to HAProxy ([`haproxy`], behind the [`dataplane`]
//! seam) and FRR ([`frr`]: the VIP announced over eBGP with BFD), drains on request and sends
//! HMAC-signed heartbeats with HAProxy statistics to the control plane ([`heartbeat`]). This
//! is what ships to LB VMs: the control plane's side of the conversation (the agent client, the
//! heartbeat check, each VM's key) is `klb-agent-client`, and klb's CA and TLS configurations
//! are `klb-tls`.

#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod config;
pub mod dataplane;
pub mod frr;
pub mod haproxy;
pub mod heartbeat;
pub mod server;

use std::sync::Arc;

use klb_tls as tls;
use tokio::sync::watch;

pub use config::AgentConfig;
pub use server::{Agent, AgentError};

/// Runs the agent until `shutdown` turns true: loads the TLS material, binds the API, starts
/// the heartbeat sender, serves. On shutdown FRR is stopped (the VM is going away or being
/// replaced; a stopped agent must not keep announcing the VIP).
pub async fn run(
    config: AgentConfig,
    proxy: Arc<dyn dataplane::Proxy>,
    shutdown: watch::Receiver<bool>,
) -> Result<(), AgentError> {
    let read = |p: &std::path::Path| {
        std::fs::read_to_string(p).map_err(|source| {
            AgentError::Tls(tls::TlsError::Io {
                op: "read",
                path: p.to_owned(),
                source,
            })
        })
    };
    let server_tls = tls::server_config(
        &read(&config.tls.ca_cert)?,
        &read(&config.tls.cert)?,
        &tls::SecretKeyPem::new(read(&config.tls.key)?),
    )?;
    let listener = std::net::TcpListener::bind(config.listen).map_err(AgentError::Serve)?;
    tracing::info!(listen = %config.listen, "agent API listening (mTLS)");
    let agent = Arc::new(Agent::new(
        proxy,
        Some(frr::Frr::new(config.frr.clone())),
        config.drain_wait,
    ));
    if let Some(hb) = &config.heartbeat {
        let client = heartbeat_client(&config, &hb.url, &read)?;
        let sender = heartbeat::HeartbeatSender {
            url: hb.url.clone(),
            interval: hb.interval,
            client,
            source: agent.clone(),
        };
        tokio::spawn(sender.run(shutdown.clone()));
    }
    let result = server::serve(
        listener,
        server_tls,
        agent.clone(),
        config.auth.clone(),
        shutdown,
    )
    .await;
    if let Some(frr) = agent.frr() {
        frr.stop().await;
    }
    result
}

/// Heartbeats to an https URL trust klb's CA and present the agent's own certificate.
fn heartbeat_client(
    config: &AgentConfig,
    url: &str,
    read: &dyn Fn(&std::path::Path) -> Result<String, AgentError>,
) -> Result<reqwest::Client, AgentError> {
    // The receiver closes a keep-alive connection after 5 s idle (`klb_http::Limits::INTERNAL`),
    // the default period is 5 s: never reuse a connection that old, or a heartbeat may go out
    // on a connection the receiver is closing.
    let idle = klb_http::Limits::INTERNAL.header_read_timeout / 2;
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .pool_idle_timeout(idle);
    if url.starts_with("https://") {
        let tls = tls::client_config(
            &read(&config.tls.ca_cert)?,
            &read(&config.tls.cert)?,
            &tls::SecretKeyPem::new(read(&config.tls.key)?),
        )?;
        builder = builder.tls_backend_preconfigured(tls);
    }
    builder
        .build()
        .map_err(|e| AgentError::Serve(std::io::Error::other(e.to_string())))
}
