//! Certificate refs are checked through the certificate manager as the owning project
//! (klb's local secret store here): unknown, foreign or unusable refs are a 400 and nothing is
//! written.

use std::sync::Arc;

use klb_certs::{LocalSecrets, NewSecret};
use serde_json::json;

use crate::util::*;

/// (CA PEM, leaf certificate PEM, leaf key PEM) for `name`.
fn leaf(name: &str) -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap();
    let cert = params
        .signed_by(&key, &rcgen::Issuer::new(ca_params, ca_key))
        .unwrap();
    (ca.pem(), cert.pem(), key.serialize_pem())
}

async fn secret(s: &LocalSecrets, project: &str, payload: String) -> String {
    let meta = s
        .create_secret(
            project,
            NewSecret {
                name: None,
                secret_type: "opaque".into(),
                content_type: "text/plain".into(),
                payload: payload.into_bytes(),
            },
        )
        .await
        .unwrap();
    format!("http://198.18.0.1:9876/v1/secrets/{}", meta.id)
}

#[tokio::test]
async fn tls_refs_are_checked_as_the_owning_project() {
    let mut secrets = None;
    let app = App::new_with(|mut s| {
        let local = LocalSecrets::new(s.store.clone());
        secrets = Some(local.clone());
        s.certs = Arc::new(local);
        s
    })
    .await;
    let secrets = secrets.unwrap();
    let (ca, cert, key) = leaf("www.example");
    let good = secret(&secrets, PROJECT, format!("{cert}{key}")).await;
    let foreign = secret(&secrets, "p-other", format!("{cert}{key}")).await;
    let cert_only = secret(&secrets, PROJECT, cert.clone()).await;
    let ca_ref = secret(&secrets, PROJECT, ca).await;
    let lb = app.lb().await;
    let listener = |r: &str, port: u16| {
        json!({"listener": {"loadbalancer_id": lb, "protocol": "TERMINATED_HTTPS",
            "protocol_port": port, "default_tls_container_ref": r}})
    };
    let missing = format!("http://198.18.0.1:9876/v1/secrets/{}", uuid::Uuid::new_v4());
    for bad in [&missing, &foreign, &"not-a-ref".to_owned()] {
        app.post("/v2/lbaas/listeners", listener(bad, 443))
            .await
            .fault(400, &format!("Could not retrieve certificate: [\"{bad}\"]"));
    }
    app.post("/v2/lbaas/listeners", listener(&cert_only, 443))
        .await
        .fault(400, "no private key found");
    // A server bundle is not a CA bundle.
    let mut body = listener(&good, 443);
    body["listener"]["client_ca_tls_container_ref"] = json!(good);
    app.post("/v2/lbaas/listeners", body)
        .await
        .fault(400, "must not contain a private key");
    let mut body = listener(&good, 443);
    body["listener"]["sni_container_refs"] = json!([good]);
    body["listener"]["client_ca_tls_container_ref"] = json!(ca_ref);
    let l = app.post("/v2/lbaas/listeners", body).await.expect(201);
    let id = l["listener"]["id"].as_str().unwrap().to_owned();
    app.settle().await;
    // Updates are checked too.
    app.put(
        &format!("/v2/lbaas/listeners/{id}"),
        json!({"listener": {"sni_container_refs": [foreign]}}),
    )
    .await
    .fault(400, "Could not retrieve certificate");
    // Pools: the client certificate presented to members.
    app.post(
        "/v2/lbaas/pools",
        json!({"pool": {"loadbalancer_id": lb, "protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN",
            "tls_enabled": true, "tls_container_ref": cert_only}}),
    )
    .await
    .fault(400, "Could not retrieve certificate");
    app.post(
        "/v2/lbaas/pools",
        json!({"pool": {"loadbalancer_id": lb, "protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN",
            "tls_enabled": true, "tls_container_ref": good, "ca_tls_container_ref": ca_ref}}),
    )
    .await
    .expect(201);
    app.settle().await;
    // A single-call create with a bad ref writes nothing.
    let before = app.get("/v2/lbaas/loadbalancers").await.expect(200)["loadbalancers"]
        .as_array()
        .unwrap()
        .len();
    app.post(
        "/v2/lbaas/loadbalancers",
        json!({"loadbalancer": {"vip_subnet_id": SUBNET, "listeners": [
            {"protocol": "TERMINATED_HTTPS", "protocol_port": 443,
             "default_tls_container_ref": foreign}]}}),
    )
    .await
    .fault(400, "Could not retrieve certificate");
    let after = app.get("/v2/lbaas/loadbalancers").await.expect(200)["loadbalancers"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(before, after);
}
