//! `klb_agent::run` as the binary runs it: config file, TLS files, API and heartbeats to a
//! receiver that verifies them with `verify_heartbeat` (the VM's own key, which came with its
//! desired state) and `ReplayGuard`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use klb_agent::config::{AgentConfig, BasicAuth, Password};
use klb_agent::dataplane::fake::FakeProxy;
use klb_agent_client::heartbeat::{HeartbeatKeys, ReplayGuard, verify_heartbeat};
use klb_proto::signature::SIGNATURE_HEADER;
use klb_proto::{DesiredState, Heartbeat};
use klb_tls::CertKind;
use tokio::sync::{Mutex, mpsc, watch};

use crate::util::Pki;

const MASTER: &str = "heartbeat-master-0123456789";

/// A heartbeat receiver on 127.0.0.1 (https with client certificates from the CA when `pki`
/// is given); verified heartbeats go to the channel, others get 401.
async fn receiver(key: HeartbeatKeys, pki: Option<&Pki>) -> (String, mpsc::Receiver<Heartbeat>) {
    let (tx, rx) = mpsc::channel(64);
    let guard = Arc::new(Mutex::new(ReplayGuard::default()));
    let app = axum::Router::new().route(
        "/v1/heartbeat",
        post(move |headers: HeaderMap, body: Bytes| {
            let (tx, key, guard) = (tx.clone(), key.clone(), guard.clone());
            async move {
                let sig = headers
                    .get(SIGNATURE_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                let Ok(hb) =
                    verify_heartbeat(&key, &body, sig, SystemTime::now(), Duration::from_secs(10))
                else {
                    return StatusCode::UNAUTHORIZED;
                };
                if guard.lock().await.check(&hb).is_err() {
                    return StatusCode::CONFLICT;
                }
                let _ = tx.send(hb).await;
                StatusCode::NO_CONTENT
            }
        }),
    );
    if let Some(pki) = pki {
        let cert = pki
            .ca
            .issue(
                "receiver",
                CertKind::Server,
                &["127.0.0.1".parse().unwrap()],
            )
            .unwrap();
        // Its clients are agents (heartbeats are HMAC-signed): any certificate from the CA.
        let tls = crate::util::any_client_server_config(pki.ca.cert_pem(), &cert);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = axum_server::from_tcp_rustls(
            listener,
            axum_server::tls_rustls::RustlsConfig::from_config(tls),
        )
        .unwrap();
        tokio::spawn(async move { server.serve(app.into_make_service()).await.unwrap() });
        return (format!("https://{addr}/v1/heartbeat"), rx);
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/v1/heartbeat"), rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_runs_from_its_config_file_and_sends_signed_heartbeats() {
    check_run(false).await;
}

/// Same over https: the agent trusts only klb's CA and presents its own certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_over_mutual_tls() {
    check_run(true).await;
}

async fn check_run(https: bool) {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
    write("ca.crt", pki.ca.cert_pem());
    write("agent.crt", &pki.server.cert_pem);
    write("agent.key", pki.server.key_pem.expose());
    let keys = HeartbeatKeys::new(MASTER);
    let (url, mut heartbeats) = receiver(keys.clone(), https.then_some(&pki)).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let d = dir.path().display();
    write(
        "agent.toml",
        &format!(
            "listen_addr = \"127.0.0.1\"\nport = {port}\nruntime_dir = \"{d}/run\"\n\
             [tls]\nca_cert = \"{d}/ca.crt\"\ncert = \"{d}/agent.crt\"\nkey = \"{d}/agent.key\"\n\
             [auth]\nuser = \"klb\"\npassword = \"agent-pass\"\n\
             [heartbeat]\nurl = \"{url}\"\ninterval_ms = 100\n"
        ),
    );
    let config = AgentConfig::load(&dir.path().join("agent.toml")).unwrap();
    let proxy = Arc::new(FakeProxy::default());
    let (stop, stop_rx) = watch::channel(false);
    let agent = tokio::spawn(klb_agent::run(config, proxy, stop_rx));

    let client = pki.client(Some(BasicAuth {
        user: "klb".into(),
        password: Password::new("agent-pass"),
    }));
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let state: DesiredState = serde_json::from_value(serde_json::json!({
        "version": 7, "load_balancer_id": "lb-run", "vip": "198.19.0.10",
        "vm": {"id": "vm-run", "index": 0, "name": "vm-run"},
        "heartbeat_key": keys.for_vm("lb-run", "vm-run"),
    }))
    .unwrap();
    // The API comes up asynchronously: retry the first PUT for a bounded time.
    let mut reply = None;
    for _ in 0..50 {
        match client.put_state(addr, &state).await {
            Ok(r) => {
                reply = Some(r);
                break;
            }
            Err(e) if e.is_retryable() => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(reply.expect("agent API never came up").version, 7);
    // The config file's [auth] is enforced.
    let err = pki.client(None).status(addr).await.unwrap_err();
    assert_eq!(err.status().map(|s| s.as_u16()), Some(401), "{err}");

    // Heartbeats arrive signed, for the applied state, with increasing sequence numbers.
    let mut seqs = Vec::new();
    while seqs.len() < 3 {
        let hb = tokio::time::timeout(Duration::from_secs(10), heartbeats.recv())
            .await
            .expect("no heartbeat within 10 s")
            .unwrap();
        assert_eq!(
            (hb.load_balancer_id.as_str(), hb.vm_id.as_str(), hb.version),
            ("lb-run", "vm-run", Some(7))
        );
        assert!(hb.haproxy_up);
        seqs.push(hb.seq);
    }
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");

    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(10), agent)
        .await
        .expect("agent did not stop")
        .unwrap()
        .unwrap();
}
