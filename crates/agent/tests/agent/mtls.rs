//! Mutual TLS and basic auth on a real socket: only the control plane's client certificate from
//! klb's CA gets an answer (not another CA's, not an LB VM's from the same CA), and the client
//! only trusts agents with a certificate from that CA.

use std::sync::Arc;
use std::time::Duration;

use klb_agent::config::{BasicAuth, Password};
use klb_agent::dataplane::fake::FakeProxy;
use klb_agent_client::client::{AgentClient, ClientError};
use klb_proto::DesiredState;
use klb_tls::{Ca, CertKind, IssuedCert};

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
        .issue("intruder", klb_tls::CertKind::Client, &[])
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

/// A client presenting `cert` (trusting the right CA for the agent).
fn client_with(pki: &Pki, cert: &IssuedCert, auth: Option<BasicAuth>) -> AgentClient {
    let mut config = pki.client_config(auth);
    config.cert_pem = cert.cert_pem.clone();
    config.key_pem = cert.key_pem.clone();
    AgentClient::new(config).unwrap()
}

/// Issue 11: every LB VM's certificate chains to klb's CA and carries clientAuth, so any VM
/// could drain any other tenant's LB. Only the control plane's identity may call an agent,
/// even when the caller knows the basic-auth credentials (every VM's agent.toml holds them).
#[tokio::test]
async fn another_vms_certificate_is_refused() {
    let pki = Pki::new();
    let auth = BasicAuth {
        user: "klb".into(),
        password: Password::new("shared by every VM"),
    };
    let served = serve(
        &pki,
        Arc::new(FakeProxy::default()),
        None,
        Some(auth.clone()),
        Duration::ZERO,
    );
    let vm2 = pki
        .ca
        .issue("lb-vm-2", CertKind::Server, &["127.0.0.2".parse().unwrap()])
        .unwrap();
    for (who, cert) in [("another VM", &vm2), ("the agent itself", &pki.server)] {
        let intruder = client_with(&pki, cert, Some(auth.clone()));
        for result in [
            intruder.drain(served.addr).await.map(|_| ()),
            intruder.status(served.addr).await.map(|_| ()),
        ] {
            let err = result.expect_err(who);
            assert!(
                matches!(err, ClientError::Transport { .. })
                    || err.status().map(|s| s.as_u16()) == Some(403),
                "{who}: expected a refused handshake, got {err}"
            );
        }
    }
    assert!(!served.agent.status().await.drained, "a drain got through");
    // The control plane's certificate from the same CA, same credentials: 200.
    let reply = pki.client(Some(auth)).drain(served.addr).await.unwrap();
    assert!(reply.drained && reply.changed);
}

/// The same refusal for a raw TLS client presenting a VM's certificate (`curl --cert vm2.crt`).
#[tokio::test]
async fn raw_tls_with_a_vm_certificate_is_refused() {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let pki = Pki::new();
    let served = serve(
        &pki,
        Arc::new(FakeProxy::default()),
        None,
        None,
        Duration::ZERO,
    );
    let vm2 = pki
        .ca
        .issue("lb-vm-2", CertKind::Server, &["127.0.0.2".parse().unwrap()])
        .unwrap();
    let config_for = |cert: &IssuedCert| {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(pki.ca.cert_pem().as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        let chain = CertificateDer::pem_slice_iter(cert.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_slice(cert.key_pem.expose().as_bytes()).unwrap();
        rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .unwrap()
    };
    let url = format!("https://{}/v1/status", served.addr);
    let result = raw_get(config_for(&vm2), &url).await;
    assert!(
        result.is_err() || result.as_ref().is_ok_and(|s| *s == 403),
        "a VM's certificate got {result:?}"
    );
    assert_eq!(raw_get(config_for(&pki.client), &url).await.unwrap(), 200);
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
    let wrong_user = pki.client(Some(BasicAuth {
        user: "root".into(),
        password: Password::new("correct horse"),
    }));
    let err = wrong_user.status(served.addr).await.unwrap_err();
    assert_eq!(err.status().map(|s| s.as_u16()), Some(401), "{err}");
    let right = pki.client(Some(auth.clone()));
    right.status(served.addr).await.unwrap();
    // Neither the client nor its config shows the password.
    let config = pki.client_config(Some(auth));
    for printed in [format!("{config:?}"), format!("{right:?}")] {
        assert!(!printed.contains("correct horse"), "{printed}");
    }
}

/// Issue 11 §3: stalled TLS handshakes (connections that send nothing, or half a
/// ClientHello) do not keep the control plane out, and are dropped after the handshake
/// timeout.
#[tokio::test]
async fn stalled_handshakes_do_not_lock_out_the_control_plane() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const STALLED: usize = 300;
    let pki = Pki::new();
    let served = serve(
        &pki,
        Arc::new(FakeProxy::default()),
        None,
        None,
        Duration::ZERO,
    );
    let mut stalled = Vec::with_capacity(STALLED);
    for i in 0..STALLED {
        let mut s = tokio::net::TcpStream::connect(served.addr).await.unwrap();
        if i % 2 == 0 {
            // The first bytes of a TLS record header and ClientHello, then silence.
            s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
                .await
                .unwrap();
        }
        stalled.push(s);
    }
    let client = pki.client(None);
    for _ in 0..5 {
        let start = std::time::Instant::now();
        let status = tokio::time::timeout(Duration::from_secs(2), client.status(served.addr))
            .await
            .expect("answered within 2 s despite the stalled handshakes")
            .unwrap();
        assert_eq!(status.status.version, None);
        assert!(start.elapsed() < Duration::from_secs(2));
    }
    // The handshake timeout (5 s) closes every stalled connection.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    for s in &mut stalled {
        let mut buf = [0u8; 64];
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {}
            Ok(Ok(n)) => panic!("{n} unexpected bytes on a stalled handshake"),
            Err(_) => panic!("a stalled handshake was still open after 15 s"),
        }
    }
}
