//! Shared helpers: a CA with issued certificates, and a running agent API on loopback.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use klb_agent::Agent;
use klb_agent::config::BasicAuth;
use klb_agent::dataplane::Proxy;
use klb_agent::frr::Frr;
use klb_agent_client::client::{AgentClient, AgentClientConfig};
use klb_tls::{self as tls, Ca, CertKind, IssuedCert};
use tokio::sync::watch;

/// A CA, a server certificate for 127.0.0.1 and a client certificate.
pub struct Pki {
    pub ca: Ca,
    pub server: IssuedCert,
    pub client: IssuedCert,
}

impl Pki {
    pub fn new() -> Pki {
        let ca = Ca::generate("test CA").unwrap();
        let server = ca
            .issue("agent", CertKind::Server, &["127.0.0.1".parse().unwrap()])
            .unwrap();
        let client = ca.issue("control-plane", CertKind::Client, &[]).unwrap();
        Pki { ca, server, client }
    }

    pub fn client_config(&self, auth: Option<BasicAuth>) -> AgentClientConfig {
        AgentClientConfig {
            ca_pem: self.ca.cert_pem().to_owned(),
            cert_pem: self.client.cert_pem.clone(),
            key_pem: self.client.key_pem.clone(),
            auth,
            timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(5),
        }
    }

    pub fn client(&self, auth: Option<BasicAuth>) -> AgentClient {
        AgentClient::new(self.client_config(auth)).unwrap()
    }
}

/// A TLS server config that accepts any client certificate chaining to `ca_pem` (agents
/// included): what a heartbeat receiver over https needs, unlike the agent's own
/// [`tls::server_config`], which accepts only the control plane.
pub fn any_client_server_config(ca_pem: &str, server: &IssuedCert) -> Arc<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let chain = CertificateDer::pem_slice_iter(server.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(server.key_pem.expose().as_bytes()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .unwrap();
    Arc::new(config)
}

/// An agent API served on 127.0.0.1 (random port); stops when dropped.
pub struct Served {
    pub addr: SocketAddr,
    pub agent: Arc<Agent>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        self.task.abort();
    }
}

pub fn serve(
    pki: &Pki,
    proxy: Arc<dyn Proxy>,
    frr: Option<Frr>,
    auth: Option<BasicAuth>,
    drain_wait: Duration,
) -> Served {
    let tls =
        tls::server_config(pki.ca.cert_pem(), &pki.server.cert_pem, &pki.server.key_pem).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let agent = Arc::new(Agent::new(proxy, frr, drain_wait));
    let (stop, rx) = watch::channel(false);
    let task = tokio::spawn({
        let agent = agent.clone();
        async move {
            klb_agent::server::serve(listener, tls, agent, auth, rx)
                .await
                .unwrap();
        }
    });
    Served {
        addr,
        agent,
        stop,
        task,
    }
}
