use serde_json::json;

use crate::util::*;

#[tokio::test]
async fn listener_crud_defaults_and_duplicates() {
    let app = App::new().await;
    let lb = app.lb().await;
    let b = app
        .post(
            "/v2/lbaas/listeners",
            json!({"listener": {"loadbalancer_id": lb, "protocol": "HTTP", "protocol_port": 80,
            "insert_headers": {"X-Forwarded-For": "true"}}}),
        )
        .await
        .expect(201);
    let l = &b["listener"];
    assert_eq!(l["connection_limit"], -1);
    assert_eq!(l["timeout_client_data"], 50000);
    assert_eq!(l["timeout_member_connect"], 5000);
    assert_eq!(l["timeout_tcp_inspect"], 0);
    assert_eq!(l["loadbalancers"][0]["id"], lb.as_str());
    assert_eq!(l["allowed_cidrs"], serde_json::Value::Null);
    assert_eq!(l["tls_versions"], serde_json::Value::Null);
    assert_eq!(l["insert_headers"]["X-Forwarded-For"], "true");
    // The LB is locked while the listener is created.
    assert_eq!(
        app.status_of(&format!("/v2/lbaas/loadbalancers/{lb}"), "loadbalancer")
            .await,
        "PENDING_UPDATE"
    );
    app.post(
        "/v2/lbaas/listeners",
        json!({"listener": {"loadbalancer_id": lb, "protocol": "TCP", "protocol_port": 81}}),
    )
    .await
    .fault(
        409,
        &format!("Load Balancer {lb} is immutable and cannot be updated."),
    );
    app.settle().await;
    app.post(
        "/v2/lbaas/listeners",
        json!({"listener": {"loadbalancer_id": lb, "protocol": "TCP", "protocol_port": 80}}),
    )
    .await
    .fault(
        409,
        "Another Listener on this Load Balancer is already using protocol TCP and protocol_port 80",
    );
    // UDP 80 may coexist with TCP 80.
    app.post(
        "/v2/lbaas/listeners",
        json!({"listener": {"loadbalancer_id": lb, "protocol": "UDP", "protocol_port": 80}}),
    )
    .await
    .expect(201);
    app.settle().await;
    let id = l["id"].as_str().unwrap();
    let upd = app
        .put(
            &format!("/v2/lbaas/listeners/{id}"),
            json!({"listener": {"connection_limit": 100, "name": "front"}}),
        )
        .await
        .expect(200);
    assert_eq!(upd["listener"]["connection_limit"], 100);
    app.settle().await;
    app.get(&format!("/v2/lbaas/listeners/{id}/stats"))
        .await
        .expect(200);
    app.delete(&format!("/v2/lbaas/listeners/{id}"))
        .await
        .expect(204);
    app.settle().await;
    app.get(&format!("/v2/lbaas/listeners/{id}"))
        .await
        .fault(404, &format!("Listener {id} not found."));
}

#[tokio::test]
async fn terminated_https_needs_certs_and_gets_tls_defaults() {
    let app = App::new().await;
    let lb = app.lb().await;
    app.post("/v2/lbaas/listeners", json!({"listener": {"loadbalancer_id": lb, "protocol": "TERMINATED_HTTPS", "protocol_port": 443}}))
        .await
        .fault(400, "certificate container reference must be provided");
    app.post(
        "/v2/lbaas/listeners",
        json!({"listener": {"loadbalancer_id": lb, "protocol": "HTTP", "protocol_port": 80,
        "default_tls_container_ref": "http://barbican/v1/containers/x"}}),
    )
    .await
    .fault(
        400,
        "Certificate container references are not allowed on HTTP protocol listeners.",
    );
    let b = app
        .post("/v2/lbaas/listeners", json!({"listener": {"loadbalancer_id": lb, "protocol": "TERMINATED_HTTPS", "protocol_port": 443,
            "default_tls_container_ref": "http://barbican/v1/containers/x"}}))
        .await
        .expect(201);
    assert_eq!(b["listener"]["tls_versions"], json!(["TLSv1.2", "TLSv1.3"]));
    assert_eq!(
        b["listener"]["alpn_protocols"],
        json!(["h2", "http/1.1", "http/1.0"])
    );
    assert!(
        b["listener"]["tls_ciphers"]
            .as_str()
            .unwrap()
            .contains("ECDHE")
    );
}

#[tokio::test]
async fn pool_crud_and_listener_binding() {
    let app = App::new().await;
    let lb = app.lb().await;
    let listener = app.listener(&lb, 80).await;
    let b = app
        .post("/v2/lbaas/pools", json!({"pool": {"listener_id": listener, "protocol": "HTTP", "lb_algorithm": "SOURCE_IP_PORT",
            "session_persistence": {"type": "APP_COOKIE", "cookie_name": "JSESSIONID"}}}))
        .await
        .expect(201);
    let pool = b["pool"]["id"].as_str().unwrap().to_owned();
    assert_eq!(b["pool"]["lb_algorithm"], "SOURCE_IP_PORT");
    assert_eq!(
        b["pool"]["session_persistence"]["persistence_timeout"],
        serde_json::Value::Null
    );
    assert_eq!(b["pool"]["listeners"][0]["id"], listener.as_str());
    assert_eq!(
        app.status_of(&format!("/v2/lbaas/listeners/{listener}"), "listener")
            .await,
        "PENDING_UPDATE"
    );
    app.settle().await;
    let l = app
        .get(&format!("/v2/lbaas/listeners/{listener}"))
        .await
        .expect(200);
    assert_eq!(l["listener"]["default_pool_id"], pool.as_str());
    app.post("/v2/lbaas/pools", json!({"pool": {"listener_id": listener, "protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN"}}))
        .await
        .fault(409, "This listener already has a default pool");
    app.post(
        "/v2/lbaas/pools",
        json!({"pool": {"protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN"}}),
    )
    .await
    .fault(
        400,
        "Must provide at least one of: loadbalancer_id, listener_id",
    );
    // TCP pools are not valid behind an HTTP listener.
    let l2 = app.listener(&lb, 81).await;
    app.post(
        "/v2/lbaas/pools",
        json!({"pool": {"listener_id": l2, "protocol": "TCP", "lb_algorithm": "ROUND_ROBIN"}}),
    )
    .await
    .fault(
        400,
        "The pool protocol 'TCP' is invalid while the listener protocol is 'HTTP'.",
    );
    let upd = app
        .put(
            &format!("/v2/lbaas/pools/{pool}"),
            json!({"pool": {"session_persistence": null, "lb_algorithm": "LEAST_CONNECTIONS"}}),
        )
        .await
        .expect(200);
    assert_eq!(upd["pool"]["session_persistence"], serde_json::Value::Null);
    app.settle().await;
    app.delete(&format!("/v2/lbaas/pools/{pool}"))
        .await
        .expect(204);
    app.settle().await;
    let l = app
        .get(&format!("/v2/lbaas/listeners/{listener}"))
        .await
        .expect(200);
    assert_eq!(l["listener"]["default_pool_id"], serde_json::Value::Null);
}

#[tokio::test]
async fn health_monitor_rules() {
    let app = App::new().await;
    let lb = app.lb().await;
    let pool = app.pool(&lb, None).await;
    let b = app
        .post("/v2/lbaas/healthmonitors", json!({"healthmonitor": {"pool_id": pool, "type": "HTTP", "delay": 5, "timeout": 3, "max_retries": 3}}))
        .await
        .expect(201);
    let hm = &b["healthmonitor"];
    assert_eq!(hm["http_method"], "GET");
    assert_eq!(hm["url_path"], "/");
    assert_eq!(hm["expected_codes"], "200");
    assert_eq!(hm["max_retries_down"], 3);
    assert_eq!(hm["pools"][0]["id"], pool.as_str());
    app.settle().await;
    app.post("/v2/lbaas/healthmonitors", json!({"healthmonitor": {"pool_id": pool, "type": "TCP", "delay": 5, "timeout": 3, "max_retries": 3}}))
        .await
        .fault(409, "This pool already has a health monitor");
    let p = app
        .get(&format!("/v2/lbaas/pools/{pool}"))
        .await
        .expect(200);
    assert_eq!(p["pool"]["healthmonitor_id"], hm["id"]);
    let id = hm["id"].as_str().unwrap();
    app.put(
        &format!("/v2/lbaas/healthmonitors/{id}"),
        json!({"healthmonitor": {"delay": null}}),
    )
    .await
    .fault(400, "Invalid input for field/attribute delay");
    let upd = app
        .put(
            &format!("/v2/lbaas/healthmonitors/{id}"),
            json!({"healthmonitor": {"url_path": "/healthz", "expected_codes": "200-204"}}),
        )
        .await
        .expect(200);
    assert_eq!(upd["healthmonitor"]["url_path"], "/healthz");
    app.settle().await;
    let pool2 = app.pool(&lb, None).await;
    app.post("/v2/lbaas/healthmonitors", json!({"healthmonitor": {"pool_id": pool2, "type": "TCP", "delay": 5, "timeout": 3, "max_retries": 3, "url_path": "/"}}))
        .await
        .fault(400, "url_path is not a valid option for health monitors of type TCP");
    app.post("/v2/lbaas/healthmonitors", json!({"healthmonitor": {"pool_id": pool2, "type": "UDP-CONNECT", "delay": 5, "timeout": 3, "max_retries": 3}}))
        .await
        .fault(400, "only supported for pools of type UDP/SCTP");
    app.delete(&format!("/v2/lbaas/healthmonitors/{id}"))
        .await
        .expect(204);
    app.settle().await;
    app.get(&format!("/v2/lbaas/healthmonitors/{id}"))
        .await
        .fault(404, "Health Monitor");
}

#[tokio::test]
async fn udp_and_sctp_are_501_when_the_provider_cannot_serve_them() {
    let app = App::new_with(|mut s| {
        let mut config = (*s.config).clone();
        config.udp_sctp = false;
        s.config = std::sync::Arc::new(config);
        s
    })
    .await;
    let lb = app.lb().await;
    for protocol in ["UDP", "SCTP"] {
        app.post(
            "/v2/lbaas/listeners",
            json!({"listener": {"loadbalancer_id": lb, "protocol": protocol, "protocol_port": 53}}),
        )
        .await
        .fault(
            501,
            &format!("Provider 'klb' does not support a requested option: {protocol}"),
        );
        app.post(
            "/v2/lbaas/pools",
            json!({"pool": {"loadbalancer_id": lb, "protocol": protocol, "lb_algorithm": "ROUND_ROBIN"}}),
        )
        .await
        .fault(501, "does not support a requested option");
    }
    // Nothing was written and the LB is not locked: TCP still works.
    app.post(
        "/v2/lbaas/listeners",
        json!({"listener": {"loadbalancer_id": lb, "protocol": "TCP", "protocol_port": 53}}),
    )
    .await
    .expect(201);
    // A single-call create with a UDP listener is refused as a whole.
    app.post(
        "/v2/lbaas/loadbalancers",
        json!({"loadbalancer": {"vip_subnet_id": SUBNET, "listeners": [
            {"protocol": "UDP", "protocol_port": 53}]}}),
    )
    .await
    .fault(501, "does not support a requested option");
}
