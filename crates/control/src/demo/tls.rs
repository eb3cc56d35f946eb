//! The demo's TLS step: a tenant stores two certificates in klb's secret store through its
//! Barbican-shaped API, adds a TERMINATED_HTTPS listener with both as SNI certificates, and the
//! client namespace fetches each name over HTTPS with hostname verification against the demo's
//! CA, so a request only succeeds when HAProxy picked the right certificate for its SNI name.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde_json::json;

use super::{DemoError, wait_active};
use crate::octavia_client::OctaviaClient;

/// The SNI names served.
pub(super) const NAMES: [&str; 2] = ["www.klb.test", "api.klb.test"];

/// What the step measured.
pub(super) struct TlsOutcome {
    /// Listener create → ACTIVE on all LB VMs.
    pub applied: Duration,
    /// HTTPS requests answered 200 with a verified certificate.
    pub ok: u32,
    /// The others.
    pub failed: u32,
    /// The first failure, for the report.
    pub first_error: Option<String>,
}

/// One SNI name with its certificate and key (PEM).
type Leaf = (&'static str, String);

/// A demo CA (PEM) and a leaf per name.
fn certificates() -> Result<(String, Vec<Leaf>), DemoError> {
    let err = |e: rcgen::Error| DemoError::Step(format!("generating demo certificates: {e}"));
    let ca_key = rcgen::KeyPair::generate().map_err(err)?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "klb demo CA");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).map_err(err)?;
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let mut leaves = Vec::new();
    for name in NAMES {
        let key = rcgen::KeyPair::generate().map_err(err)?;
        let mut params = rcgen::CertificateParams::new(vec![name.to_owned()]).map_err(err)?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let cert = params.signed_by(&key, &issuer).map_err(err)?;
        leaves.push((name, format!("{}{}", cert.pem(), key.serialize_pem())));
    }
    Ok((ca.pem(), leaves))
}

/// Runs the step against the LB's pool; `requests` HTTPS requests alternate between the names.
pub(super) async fn run(
    api: &OctaviaClient,
    client_ns: &str,
    lb_id: &str,
    pool_id: &str,
    vip: IpAddr,
    requests: u32,
) -> Result<TlsOutcome, DemoError> {
    let (ca_pem, leaves) = certificates()?;
    let mut refs = Vec::new();
    for (name, pem) in &leaves {
        let secret_ref = api
            .create(
                "/v1/secrets",
                "secret_ref",
                json!({"name": name, "payload": pem, "payload_content_type": "text/plain"}),
            )
            .await?;
        refs.push(secret_ref);
    }
    let lb_path = format!("/v2/lbaas/loadbalancers/{lb_id}");
    let t = Instant::now();
    api.create(
        "/v2/lbaas/listeners",
        "listener",
        json!({"listener": {"name": "web-tls", "loadbalancer_id": lb_id,
               "protocol": "TERMINATED_HTTPS", "protocol_port": 443,
               "default_pool_id": pool_id, "default_tls_container_ref": refs[0],
               "sni_container_refs": refs}}),
    )
    .await?;
    wait_active(api, &lb_path).await?;
    let applied = t.elapsed();

    let dir = std::env::temp_dir().join(format!("klb-demo-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir)
        .map_err(|e| DemoError::Step(format!("creating {}: {e}", dir.display())))?;
    let ca_file = dir.join("ca.pem");
    let result = async {
        std::fs::write(&ca_file, &ca_pem)
            .map_err(|e| DemoError::Step(format!("writing {}: {e}", ca_file.display())))?;
        let mut outcome = TlsOutcome {
            applied,
            ok: 0,
            failed: 0,
            first_error: None,
        };
        for i in 0..requests {
            let name = NAMES[i as usize % NAMES.len()];
            match https_get(client_ns, &ca_file, name, vip).await {
                Ok(()) => outcome.ok += 1,
                Err(e) => {
                    outcome.failed += 1;
                    outcome.first_error.get_or_insert(e);
                }
            }
        }
        Ok(outcome)
    }
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// One HTTPS GET of `https://NAME/` sent to the VIP from the client namespace; curl checks the
/// chain against the CA and the certificate against NAME.
async fn https_get(
    client_ns: &str,
    ca_file: &std::path::Path,
    name: &str,
    vip: IpAddr,
) -> Result<(), String> {
    let out = tokio::process::Command::new("ip")
        .args(["netns", "exec", client_ns, "curl", "-sS", "-o", "/dev/null"])
        .args(["-w", "%{http_code}", "--max-time", "3", "--cacert"])
        .arg(ca_file)
        .arg("--resolve")
        .arg(format!("{name}:443:{vip}"))
        .arg(format!("https://{name}/"))
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("running curl: {e}"))?;
    let code = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if out.status.success() && code == "200" {
        Ok(())
    } else {
        Err(format!(
            "{name}: HTTP {code} {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}
