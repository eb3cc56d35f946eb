//! Mutual TLS and basic auth on a real socket: only clients with a certificate from klb's CA
//! get an answer, and the client only trusts agents with a certificate from that CA.

use std::sync::Arc;
use std::time::Duration;

use klb_agent::client::{AgentClient, ClientError};
use klb_agent::config::{BasicAuth, Password};
use klb_agent::dataplane::fake::FakeProxy;
use klb_agent::tls::Ca;
use klb_proto::DesiredState;

use crate::util::{Pki, serve};

fn state(version: u64) -> DesiredState {
    serde_json::from_value(serde_json::json!({
        "version": version, "load_balancer_id": "lb1", "vip": "198.19.0.10",
        "vm": {"id": "vm1", "index": 1, "name": "lb1-1"}
    }))
    .unwrap()
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A raw HTTPS GET with a given rustls client config.
async fn raw_get(config: rustls::ClientConfig, url: &str) -> Result<u16, reqwest::Error> {
    let client = reqwest::Client::builder()
        .tls_backend_preconfigured(config)
        .timeout(Duration::from_secs(10))
        .no_proxy()
        .build()?;
    Ok(client.get(url).send().await?.status().as_u16())
}

#[tokio::test]
async fn right_client_certificate_is_accepted_and_the_api_works() {
    let pki = Pki::new();
    let served = serve(
        &pki,
        Arc::new(FakeProxy::default()),
        None,
        None,
        Duration::ZERO,
    );
    let client = pki.client(None);
    let reply = client.put_state(served.addr, &state(3)).await.unwrap();
    assert_eq!(reply.version, 3);
    let status = client.status(served.addr).await.unwrap();
    assert_eq!(status.status.version, Some(3));
    assert!(status.status.haproxy_up);
    // Older version through the client: a 409 that is not retryable.
    let err = client.put_state(served.addr, &state(2)).await.unwrap_err();
    assert_eq!(err.status().map(|s| s.as_u16()), Some(409), "{err}");
    assert!(!err.is_retryable());
    match err {
        ClientError::Status {
            running_version, ..
        } => assert_eq!(running_version, Some(3)),
        other => panic!("{other}"),
    }
    assert!(client.drain(served.addr).await.unwrap().drained);
    assert!(client.status(served.addr).await.unwrap().drained);
    assert!(!client.undrain(served.addr).await.unwrap().drained);
    client.stats(served.addr).await.unwrap();
}

#[tokio::test]
async fn client_without_certificate_is_rejected() {
    let pki = Pki::new();
    let served = serve(
        &pki,
        Arc::new(FakeProxy::default()),
        None,
        None,
        Duration::ZERO,
    );
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(pki.ca.cert_pem().as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    use rustls::pki_types::pem::PemObject;
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let url = format!("https://{}/v1/status", served.addr);
    let result = raw_get(config, &url).await;
    assert!(
        result.is_err(),
        "a client without certificate got {result:?}"
    );
}

#[tokio::test]
async fn client_certificate_from_another_ca_is_rejected() {
    let pki = Pki::new();
    let served = serve(
        &pki,
        Arc::new(FakeProxy::default()),
        None,
        None,
        Duration::ZERO,
    );
    let other = Ca::generate("other CA").unwrap();
    let foreign = other
        .issue("intruder", klb_agent::tls::CertKind::Client, &[])
        .unwrap();
    // Trusts the right CA for the server, but presents a certificate of another CA.
    let mut config = pki.client_config(None);
    config.cert_pem = foreign.cert_pem;
    config.key_pem = foreign.key_pem;
    let client = AgentClient::new(config).unwrap();
    let err = client.status(served.addr).await.unwrap_err();
    assert!(
        matches!(err, ClientError::Transport { .. }),
        "expected a TLS failure, got {err}"
    );
    assert!(err.is_retryable());
}

#[tokio::test]
async fn agent_with_certificate_from_another_ca_is_not_trusted() {
    let pki = Pki::new();
    let served = serve(
        &pki,
        Arc::new(FakeProxy::default()),
        None,
        None,
        Duration::ZERO,
    );
    // The client trusts only another CA (the agent could be an impostor).
    let other = Ca::generate("other CA").unwrap();
    let mut config = pki.client_config(None);
    config.ca_pem = other.cert_pem().to_owned();
    let client = AgentClient::new(config).unwrap();
    let err = client.status(served.addr).await.unwrap_err();
    assert!(matches!(err, ClientError::Transport { .. }), "{err}");
}

#[tokio::test]
async fn basic_auth_on_top_of_mtls() {
    let pki = Pki::new();
    let auth = BasicAuth {
        user: "admin".into(),
        password: Password::new("correct horse"),
    };
    let served = serve(
        &pki,
        Arc::new(FakeProxy::default()),
        None,
        Some(auth.clone()),
        Duration::ZERO,
    );
    let wrong = pki.client(Some(BasicAuth {
        user: "admin".into(),
        password: Password::new("wrong"),
    }));
    let err = wrong.status(served.addr).await.unwrap_err();
    assert_eq!(err.status().map(|s| s.as_u16()), Some(401), "{err}");
    // The reply must not echo the password.
    assert!(!err.to_string().contains("wrong"), "{err}");
    let none = pki.client(None);
    assert_eq!(
        none.status(served.addr)
            .await
            .unwrap_err()
            .status()
            .map(|s| s.as_u16()),
        Some(401)
    );
    let right = pki.client(Some(auth));
    right.status(served.addr).await.unwrap();
}
