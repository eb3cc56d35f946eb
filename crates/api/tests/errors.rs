use serde_json::json;

use crate::util::*;

const LBS: &str = "/v2/lbaas/loadbalancers";

#[tokio::test]
async fn malformed_bodies_get_the_fault_envelope() {
    let app = App::new().await;
    app.call("POST", LBS, Some("{not json"), Some(PROJECT))
        .await
        .fault(400, "Invalid JSON body");
    app.call("POST", LBS, Some(""), Some(PROJECT)).await.fault(
        400,
        "Invalid input for field/attribute loadbalancer. Value: 'None'. Mandatory field missing.",
    );
    app.post(
        LBS,
        json!({"loadbalancer": {"vip_subnet_id": SUBNET, "foo": 1}}),
    )
    .await
    .fault(400, "Unknown attribute for argument load_balancer: foo");
    app.post(
        LBS,
        json!({"loadbalancer": {"vip_subnet_id": SUBNET, "foo": 1, "bar": 2}}),
    )
    .await
    .fault(
        400,
        "Unknown attributes for argument load_balancer: bar, foo",
    );
    app.post(
        LBS,
        json!({"loadbalancer": {"vip_subnet_id": SUBNET}, "extra": 1}),
    )
    .await
    .fault(400, "Unknown attribute");
    app.post(LBS, json!({"loadbalancer": {"vip_subnet_id": "not-a-uuid"}})).await.fault(400, "Invalid input for field/attribute vip_subnet_id. Value: 'not-a-uuid'. Value should be UUID format");
    app.post(
        LBS,
        json!({"loadbalancer": {"vip_subnet_id": SUBNET, "admin_state_up": "yes"}}),
    )
    .await
    .fault(400, "Invalid input for field/attribute admin_state_up");
    app.post(
        LBS,
        json!({"loadbalancer": {"vip_subnet_id": SUBNET, "name": "x".repeat(256)}}),
    )
    .await
    .fault(
        400,
        "Value should have a maximum character requirement of 255",
    );
    app.post(
        LBS,
        json!({"loadbalancer": {"vip_subnet_id": SUBNET, "vip_address": "300.1.1.1"}}),
    )
    .await
    .fault(400, "vip_address");
    app.post(LBS, json!({"loadbalancer": [1, 2]}))
        .await
        .fault(400, "loadbalancer");
    app.post(
        LBS,
        json!({"loadbalancer": {"vip_subnet_id": SUBNET, "provider": "haproxy-magic"}}),
    )
    .await
    .fault(400, "Provider 'haproxy-magic' is not enabled.");
}

#[tokio::test]
async fn out_of_range_and_wrong_types() {
    let app = App::new().await;
    let lb = app.lb().await;
    let l = |extra: serde_json::Value| {
        let mut body = json!({"loadbalancer_id": lb, "protocol": "HTTP", "protocol_port": 80});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        json!({ "listener": body })
    };
    app.post("/v2/lbaas/listeners", l(json!({"protocol_port": 0}))).await.fault(400, "Invalid input for field/attribute protocol_port. Value: '0'. Value should be greater or equal to 1");
    app.post("/v2/lbaas/listeners", l(json!({"protocol_port": 65536})))
        .await
        .fault(400, "Value should be lower or equal to 65535");
    // Numeric strings are converted as WSME does; other strings are a wrong type.
    app.post("/v2/lbaas/listeners", l(json!({"protocol_port": "eighty"})))
        .await
        .fault(400, "protocol_port");
    app.post("/v2/lbaas/listeners", l(json!({"protocol": "GOPHER"})))
        .await
        .fault(
            400,
            "Invalid input for field/attribute protocol. Value: 'GOPHER'",
        );
    app.post("/v2/lbaas/listeners", l(json!({"connection_limit": -2})))
        .await
        .fault(400, "Value should be greater or equal to -1");
    app.post(
        "/v2/lbaas/listeners",
        l(json!({"timeout_client_data": 2073600001i64})),
    )
    .await
    .fault(400, "lower or equal to 2073600000");
    app.post(
        "/v2/lbaas/listeners",
        json!({"listener": {"loadbalancer_id": lb, "protocol": "HTTP"}}),
    )
    .await
    .fault(
        400,
        "Invalid input for field/attribute protocol_port. Value: 'None'. Mandatory field missing.",
    );
    app.post("/v2/lbaas/listeners", l(json!({"tls_versions": []})))
        .await
        .fault(400, "tls_versions");
    let pool = app.pool(&lb, None).await;
    app.post(
        &format!("/v2/lbaas/pools/{pool}/members"),
        json!({"member": {"address": "192.0.2.1", "protocol_port": 80, "weight": 257}}),
    )
    .await
    .fault(400, "Value should be lower or equal to 256");
    app.post("/v2/lbaas/healthmonitors", json!({"healthmonitor": {"pool_id": pool, "type": "HTTP", "delay": 5, "timeout": 3, "max_retries": 11}}))
        .await
        .fault(400, "Value should be lower or equal to 10");
    // Last (it locks the LB): numeric strings are accepted, as Octavia's WSME converts them.
    let created = app
        .post(
            "/v2/lbaas/listeners",
            l(json!({"protocol_port": "8081", "connection_limit": "100"})),
        )
        .await;
    assert_eq!(created.status.as_u16(), 201, "{}", created.body);
    assert_eq!(created.body["listener"]["protocol_port"], 8081);
    assert_eq!(created.body["listener"]["connection_limit"], 100);
}

#[tokio::test]
async fn config_injection_attempts_are_rejected() {
    let app = App::new().await;
    let lb = app.lb().await;
    let listener = app.listener(&lb, 80).await;
    let pool = app.pool(&lb, None).await;
    let hm = |extra: serde_json::Value| {
        let mut body =
            json!({"pool_id": pool, "type": "HTTP", "delay": 5, "timeout": 3, "max_retries": 3});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        json!({ "healthmonitor": body })
    };
    for bad in [
        "/a\nhttp-request deny",
        "/a b",
        "/a\r",
        "healthz",
        "/#x",
        "/a\"b",
    ] {
        app.post("/v2/lbaas/healthmonitors", hm(json!({"url_path": bad})))
            .await
            .fault(400, "url_path");
    }
    for bad in ["200\n", "200,\n201", "200 201", "abc", "200-"] {
        app.post(
            "/v2/lbaas/healthmonitors",
            hm(json!({"expected_codes": bad})),
        )
        .await
        .fault(400, "expected_codes");
    }
    app.post(
        "/v2/lbaas/healthmonitors",
        hm(json!({"http_version": 1.1, "domain_name": "a b\nc"})),
    )
    .await
    .fault(400, "domain_name");
    for bad in ["JSESSION ID", "a;b", "a\nb", "a=b", "a\\b"] {
        app.post("/v2/lbaas/pools", json!({"pool": {"loadbalancer_id": lb, "protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN",
            "session_persistence": {"type": "APP_COOKIE", "cookie_name": bad}}}))
            .await
            .fault(400, "cookie_name");
    }
    for bad in ["HIGH MEDIUM", "HIGH\nbind :1", "A#B"] {
        app.post("/v2/lbaas/pools", json!({"pool": {"loadbalancer_id": lb, "protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN",
            "tls_enabled": true, "tls_ciphers": bad}}))
            .await
            .fault(400, "tls_ciphers");
    }
    for bad in [
        "http://x/\nLocation: y",
        "http://x y/",
        "ftp://x/",
        "http://x/\u{85}",
    ] {
        app.post("/v2/lbaas/l7policies", json!({"l7policy": {"listener_id": listener, "action": "REDIRECT_TO_URL", "redirect_url": bad}}))
            .await
            .fault(400, "redirect_url");
        app.post("/v2/lbaas/l7policies", json!({"l7policy": {"listener_id": listener, "action": "REDIRECT_PREFIX", "redirect_prefix": bad}}))
            .await
            .fault(400, "redirect_prefix");
    }
    app.post(
        "/v2/lbaas/listeners",
        json!({"listener": {"loadbalancer_id": lb, "protocol": "HTTP", "protocol_port": 81,
        "insert_headers": {"X-Forwarded-For\nX": "true"}}}),
    )
    .await
    .fault(400, "insert_headers");
    app.post(
        "/v2/lbaas/listeners",
        json!({"listener": {"loadbalancer_id": lb, "protocol": "HTTP", "protocol_port": 81,
        "insert_headers": {"X-Forwarded-For": "true\nfoo"}}}),
    )
    .await
    .fault(400, "insert_headers");
    let b = app
        .post(
            "/v2/lbaas/l7policies",
            json!({"l7policy": {"listener_id": listener, "action": "REJECT"}}),
        )
        .await
        .expect(201);
    app.settle().await;
    let rules = format!(
        "/v2/lbaas/l7policies/{}/rules",
        b["l7policy"]["id"].as_str().unwrap()
    );
    for (t, key, value) in [
        ("HEADER", Some("X-A\r\nX-B"), "v"),
        ("HEADER", Some("X A"), "v"),
        ("HEADER", Some("X-A"), "a b"),
        ("HEADER", Some("X-A"), "v\nhttp-request deny"),
        ("COOKIE", Some("c"), "a b"),
        ("PATH", None, "/a\n"),
        ("HOST_NAME", None, "a b"),
        ("HEADER", None, "v"),
    ] {
        let mut rule = json!({"type": t, "compare_type": "EQUAL_TO", "value": value});
        if let Some(k) = key {
            rule["key"] = json!(k);
        }
        app.post(&rules, json!({ "rule": rule }))
            .await
            .fault(400, "Error parsing L7Rule: Invalid L7 Rule");
    }
}

#[tokio::test]
async fn unknown_paths_methods_ids_and_oversized_bodies() {
    let app = App::new().await;
    app.get("/v2/lbaas/nothing")
        .await
        .fault(404, "The resource could not be found.");
    app.get("/v3").await.expect(404);
    app.call("PATCH", LBS, Some("{}"), Some(PROJECT))
        .await
        .fault(405, "not allowed");
    app.get(&format!("{LBS}/not-a-uuid"))
        .await
        .fault(404, "Load Balancer not-a-uuid not found.");
    app.get("/v2/lbaas/pools/00000000-0000-0000-0000-000000000001/members")
        .await
        .fault(404, "Pool 00000000-0000-0000-0000-000000000001 not found.");
    app.post("/v2/lbaas/listeners", json!({"listener": {"loadbalancer_id": "00000000-0000-0000-0000-000000000002", "protocol": "HTTP", "protocol_port": 80}}))
        .await
        .fault(404, "Load Balancer 00000000-0000-0000-0000-000000000002 not found.");
    let huge = format!(
        "{{\"loadbalancer\": {{\"name\": \"{}\"}}}}",
        "x".repeat(5 * 1024 * 1024)
    );
    app.call("POST", LBS, Some(&huge), Some(PROJECT))
        .await
        .fault(413, "larger than the limit");
    let v = app.get("/").await.expect(200);
    assert!(
        v["versions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["status"] == "CURRENT")
    );
    assert_eq!(app.get("/v2").await.expect(200), json!("v2"));
    assert_eq!(app.get("/v2.0/lbaas").await.expect(200), json!("v2"));
    assert_eq!(app.get("/healthcheck").await.expect(200), json!("OK"));
    let mut req = axum::http::Request::builder()
        .uri(LBS)
        .header("accept", "text/html")
        .body(axum::body::Body::empty())
        .unwrap();
    req.headers_mut()
        .insert("x-project-id", PROJECT.parse().unwrap());
    let resp = tower::ServiceExt::oneshot(app.router.clone(), req)
        .await
        .unwrap();
    assert_eq!(resp.status(), 406);
}

#[tokio::test]
async fn projects_are_isolated() {
    let app = App::new().await;
    let lb = app.lb().await; // project p-alpha
    let listener = app.listener(&lb, 80).await;
    let other = Some("p-beta");
    app.call("GET", &format!("{LBS}/{lb}"), None, other)
        .await
        .fault(404, &format!("Load Balancer {lb} not found."));
    app.call(
        "PUT",
        &format!("{LBS}/{lb}"),
        Some(r#"{"loadbalancer": {"name": "mine"}}"#),
        other,
    )
    .await
    .expect(404);
    app.call("DELETE", &format!("{LBS}/{lb}"), None, other)
        .await
        .expect(404);
    app.call(
        "GET",
        &format!("/v2/lbaas/listeners/{listener}"),
        None,
        other,
    )
    .await
    .expect(404);
    let body = json!({"listener": {"loadbalancer_id": lb, "protocol": "TCP", "protocol_port": 90}})
        .to_string();
    app.call("POST", "/v2/lbaas/listeners", Some(&body), other)
        .await
        .fault(404, "Load Balancer");
    let list = app.call("GET", LBS, None, other).await.expect(200);
    assert_eq!(list["loadbalancers"].as_array().unwrap().len(), 0);
    let list = app
        .call("GET", "/v2/lbaas/listeners", None, other)
        .await
        .expect(200);
    assert_eq!(list["listeners"].as_array().unwrap().len(), 0);
    // A non-admin cannot create in another project.
    let body =
        json!({"loadbalancer": {"vip_subnet_id": SUBNET, "project_id": "p-alpha"}}).to_string();
    app.call("POST", LBS, Some(&body), other)
        .await
        .fault(403, "Policy does not allow");
    // Admin (noauth with the admin role) sees everything.
    let list = app.call("GET", LBS, None, None).await.expect(200);
    assert_eq!(list["loadbalancers"].as_array().unwrap().len(), 1);
    let list = app
        .call("GET", &format!("{LBS}?project_id=p-alpha"), None, None)
        .await
        .expect(200);
    assert_eq!(list["loadbalancers"].as_array().unwrap().len(), 1);
}

struct OneOfEach;

#[async_trait::async_trait]
impl klb_api::provider::QuotaLimits for OneOfEach {
    async fn limit(
        &self,
        _: &klb_store::Store,
        project: &str,
        _: klb_model::Kind,
    ) -> Result<Option<i64>, klb_api::ApiError> {
        Ok((project == PROJECT).then_some(1))
    }
}

#[tokio::test]
async fn quotas_are_enforced() {
    let app = App::new_with(|mut s| {
        s.quotas = std::sync::Arc::new(OneOfEach);
        s
    })
    .await;
    let lb = app.lb().await;
    app.post(LBS, json!({"loadbalancer": {"vip_subnet_id": SUBNET}}))
        .await
        .fault(403, "Quota has been met for resources: Load Balancer");
    let pool = app.pool(&lb, None).await;
    let path = format!("/v2/lbaas/pools/{pool}/members");
    app.put(&path, json!({"members": [{"address": "192.0.2.1", "protocol_port": 80}, {"address": "192.0.2.2", "protocol_port": 80}]}))
        .await
        .fault(403, "Quota has been met for resources: Member");
    app.put(
        &path,
        json!({"members": [{"address": "192.0.2.1", "protocol_port": 80}]}),
    )
    .await
    .expect(202);
    // Another project is not limited.
    let body = json!({"loadbalancer": {"vip_subnet_id": SUBNET}}).to_string();
    app.call("POST", LBS, Some(&body), Some("p-gamma"))
        .await
        .expect(201);
    app.call("POST", LBS, Some(&body), Some("p-gamma"))
        .await
        .expect(201);
}

/// Issue 11 §5: ten values the API used to accept and the agent then refused (render or
/// `haproxy -c`), which left the load balancer in ERROR. Each is now a 400 with Octavia's
/// fault body, from the same checks the renderer runs (`klb_proto::check`).
#[tokio::test]
async fn values_the_renderer_refuses_are_400_at_the_api() {
    let app = App::new().await;
    let lb = app.lb().await;
    let listener = app.listener(&lb, 80).await;
    let pool = app.pool(&lb, None).await;
    let policy = app
        .post(
            "/v2/lbaas/l7policies",
            json!({"l7policy": {"listener_id": listener, "action": "REJECT"}}),
        )
        .await
        .expect(201);
    app.settle().await;
    let rules = format!(
        "/v2/lbaas/l7policies/{}/rules",
        policy["l7policy"]["id"].as_str().unwrap()
    );
    // 1-2: HEADER and COOKIE keys with `#$'` or a backtick.
    for (t, key) in [("HEADER", "X#$'a"), ("COOKIE", "c`d")] {
        app.post(
            &rules,
            json!({"rule": {"type": t, "compare_type": "EQUAL_TO", "key": key, "value": "v"}}),
        )
        .await
        .fault(
            400,
            "Error parsing L7Rule: Invalid L7 Rule: key must be a header or cookie name",
        );
    }
    // 3: cookie_name with `#$'` or a backtick.
    for bad in ["a#b", "a$b", "a'b", "a`b"] {
        app.post("/v2/lbaas/pools", json!({"pool": {"loadbalancer_id": lb, "protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN",
            "session_persistence": {"type": "APP_COOKIE", "cookie_name": bad}}}))
            .await
            .fault(400, "Invalid input for field/attribute cookie_name");
    }
    // 4: redirect_url with an upper-case scheme.
    app.post("/v2/lbaas/l7policies", json!({"l7policy": {"listener_id": listener, "action": "REDIRECT_TO_URL", "redirect_url": "HTTPS://example.com/"}}))
        .await
        .fault(400, "Invalid input for field/attribute redirect_url. Value: 'HTTPS://example.com/'. must be an http:// or https:// URL (lower-case scheme)");
    let hm = |extra: serde_json::Value| {
        let mut body =
            json!({"pool_id": pool, "type": "HTTP", "delay": 5, "timeout": 3, "max_retries": 3});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        json!({ "healthmonitor": body })
    };
    // 5: domain_name with a trailing dot.
    app.post(
        "/v2/lbaas/healthmonitors",
        hm(json!({"http_version": 1.1, "domain_name": "app.example."})),
    )
    .await
    .fault(400, "Invalid input for field/attribute domain_name. Value: 'app.example.'. must be a DNS host name");
    // 6: a descending expected_codes range.
    app.post(
        "/v2/lbaas/healthmonitors",
        hm(json!({"expected_codes": "300-200"})),
    )
    .await
    .fault(
        400,
        "Invalid input for field/attribute expected_codes. Value: '300-200'",
    );
    // 7: an empty REGEX value.
    app.post(
        &rules,
        json!({"rule": {"type": "PATH", "compare_type": "REGEX", "value": ""}}),
    )
    .await
    .fault(
        400,
        "Error parsing L7Rule: Invalid L7 Rule: value must not be empty",
    );
    // 8: an SSL_DN_FIELD key over 64 characters.
    app.post(&rules, json!({"rule": {"type": "SSL_DN_FIELD", "compare_type": "EQUAL_TO", "key": "A".repeat(65), "value": "v"}}))
        .await
        .fault(400, "Error parsing L7Rule: Invalid L7 Rule: key must be at most 64 characters");
    // 9-10: delay and timeout past HAProxy's 32-bit millisecond timers.
    for field in ["delay", "timeout"] {
        app.post("/v2/lbaas/healthmonitors", hm(json!({ field: 3_000_000 })))
            .await
            .fault(400, &format!("Invalid input for field/attribute {field}. Value: '3000000'. Value should be lower or equal to 2147483"));
    }
    // 11: more than 64 allowed_cidrs.
    let cidrs: Vec<String> = (0..65).map(|i| format!("10.{i}.0.0/16")).collect();
    app.post(
        "/v2/lbaas/listeners",
        json!({"listener": {"loadbalancer_id": lb, "protocol": "HTTP", "protocol_port": 81, "allowed_cidrs": cidrs}}),
    )
    .await
    .fault(400, "Invalid input for field/attribute allowed_cidrs");
    // The limits themselves are accepted.
    app.post(
        "/v2/lbaas/healthmonitors",
        hm(json!({"delay": 2_147_483, "timeout": 2_147_483})),
    )
    .await
    .expect(201);
    app.settle().await;
    app.post(
        "/v2/lbaas/listeners",
        json!({"listener": {"loadbalancer_id": lb, "protocol": "HTTP", "protocol_port": 82, "allowed_cidrs": &cidrs[..64]}}),
    )
    .await
    .expect(201);
}
