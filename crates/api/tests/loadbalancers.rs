use serde_json::json;

use crate::util::*;

const LBS: &str = "/v2/lbaas/loadbalancers";

#[tokio::test]
async fn create_show_update_delete() {
    let app = App::new().await;
    let b = app
        .post(
            "/v2/lbaas/loadbalancers",
            json!({"loadbalancer": {"vip_subnet_id": SUBNET, "name": "web", "tags": ["a"]}}),
        )
        .await
        .expect(201);
    let lb = &b["loadbalancer"];
    assert_eq!(lb["provisioning_status"], "PENDING_CREATE");
    assert_eq!(lb["operating_status"], "OFFLINE");
    assert_eq!(lb["project_id"], PROJECT);
    assert_eq!(lb["tenant_id"], PROJECT);
    assert_eq!(lb["description"], serde_json::Value::Null);
    assert_eq!(lb["admin_state_up"], true);
    assert!(lb["vip_address"].as_str().unwrap().starts_with("198.1"));
    assert_eq!(lb["vip_subnet_id"], SUBNET);
    let id = lb["id"].as_str().unwrap().to_owned();
    // While PENDING_CREATE: updates and deletes are refused.
    app.put(
        &format!("/v2/lbaas/loadbalancers/{id}"),
        json!({"loadbalancer": {"name": "x"}}),
    )
    .await
    .fault(
        409,
        &format!("Invalid state PENDING_CREATE of loadbalancer resource {id}"),
    );
    app.delete(&format!("/v2/lbaas/loadbalancers/{id}"))
        .await
        .fault(409, "Invalid state PENDING_CREATE");
    app.settle().await;
    // Same object under every root and with .json.
    for root in ["/v2", "/v2.0", "/v2/lbaas", "/v2.0/lbaas"] {
        let got = app
            .get(&format!("{root}/loadbalancers/{id}.json"))
            .await
            .expect(200);
        assert_eq!(got["loadbalancer"]["provisioning_status"], "ACTIVE");
    }
    let upd = app
        .put(
            &format!("/v2/lbaas/loadbalancers/{id}"),
            json!({"loadbalancer": {"name": "web2", "admin_state_up": false}}),
        )
        .await
        .expect(200);
    assert_eq!(upd["loadbalancer"]["name"], "web2");
    assert_eq!(upd["loadbalancer"]["provisioning_status"], "PENDING_UPDATE");
    assert_ne!(upd["loadbalancer"]["updated_at"], serde_json::Value::Null);
    app.settle().await;
    app.delete(&format!("/v2/lbaas/loadbalancers/{id}"))
        .await
        .expect(204);
    assert_eq!(
        app.status_of(&format!("/v2/lbaas/loadbalancers/{id}"), "loadbalancer")
            .await,
        "PENDING_DELETE"
    );
    app.settle().await;
    app.get(&format!("/v2/lbaas/loadbalancers/{id}"))
        .await
        .fault(404, &format!("Load Balancer {id} not found."));
    let list = app.get("/v2/lbaas/loadbalancers").await.expect(200);
    assert_eq!(list["loadbalancers"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn vip_is_required_and_address_kept() {
    let app = App::new().await;
    app.post(
        "/v2/lbaas/loadbalancers",
        json!({"loadbalancer": {"name": "x"}}),
    )
    .await
    .fault(
        400,
        "VIP must contain one of: vip_port_id, vip_network_id, vip_subnet_id.",
    );
    let b = app
        .post(
            "/v2/lbaas/loadbalancers",
            json!({"loadbalancer": {"vip_network_id": SUBNET, "vip_address": "203.0.113.7"}}),
        )
        .await
        .expect(201);
    assert_eq!(b["loadbalancer"]["vip_address"], "203.0.113.7");
    assert_eq!(b["loadbalancer"]["vip_network_id"], SUBNET);
}

#[tokio::test]
async fn delete_with_children_needs_cascade() {
    let app = App::new().await;
    let lb = app.lb().await;
    let listener = app.listener(&lb, 80).await;
    let pool = app.pool(&lb, Some(&listener)).await;
    app.post(
        &format!("/v2/lbaas/pools/{pool}/members"),
        json!({"member": {"address": "192.0.2.10", "protocol_port": 80}}),
    )
    .await
    .expect(201);
    app.settle().await;
    app.delete(&format!("/v2/lbaas/loadbalancers/{lb}"))
        .await
        .fault(
            400,
            &format!("Validation failure: Cannot delete Load Balancer {lb} - it has children"),
        );
    app.delete(&format!("/v2/lbaas/loadbalancers/{lb}?cascade=true"))
        .await
        .expect(204);
    app.settle().await;
    app.get(&format!("/v2/lbaas/loadbalancers/{lb}"))
        .await
        .expect(404);
    app.get(&format!("/v2/lbaas/listeners/{listener}"))
        .await
        .expect(404);
    app.get(&format!("/v2/lbaas/pools/{pool}"))
        .await
        .expect(404);
    assert_eq!(
        app.get("/v2/lbaas/pools").await.expect(200)["pools"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
}

#[tokio::test]
async fn status_tree_stats_failover() {
    let app = App::new().await;
    let lb = app.lb().await;
    let listener = app.listener(&lb, 80).await;
    let pool = app.pool(&lb, Some(&listener)).await;
    app.post("/v2/lbaas/healthmonitors", json!({"healthmonitor": {"pool_id": pool, "type": "HTTP", "delay": 5, "timeout": 3, "max_retries": 3}}))
        .await
        .expect(201);
    app.settle().await;
    app.post(
        &format!("/v2/lbaas/pools/{pool}/members"),
        json!({"member": {"address": "192.0.2.10", "protocol_port": 8080}}),
    )
    .await
    .expect(201);
    app.settle().await;
    for suffix in ["status", "statuses"] {
        let t = app
            .get(&format!("/v2/lbaas/loadbalancers/{lb}/{suffix}"))
            .await
            .expect(200);
        let l = &t["statuses"]["loadbalancer"]["listeners"][0];
        assert_eq!(l["id"], listener.as_str());
        assert_eq!(l["name"], "");
        let p = &l["pools"][0];
        assert_eq!(p["id"], pool.as_str());
        assert_eq!(p["health_monitor"]["type"], "HTTP");
        assert_eq!(p["members"][0]["address"], "192.0.2.10");
        assert_eq!(p["members"][0]["protocol_port"], 8080);
        assert_eq!(p["members"][0]["operating_status"], "OFFLINE");
    }
    let s = app
        .get(&format!("/v2/lbaas/loadbalancers/{lb}/stats"))
        .await
        .expect(200);
    assert_eq!(s["stats"]["bytes_in"], 0);
    // Failover is admin-only, also with noauth.
    let failover = format!("/v2/lbaas/loadbalancers/{lb}/failover");
    app.put(&failover, json!({}))
        .await
        .fault(403, "Policy does not allow");
    app.call("PUT", &failover, Some("{}"), None)
        .await
        .expect(202);
    assert_eq!(
        app.status_of(&format!("/v2/lbaas/loadbalancers/{lb}"), "loadbalancer")
            .await,
        "PENDING_UPDATE"
    );
    app.call("PUT", &failover, Some("{}"), None)
        .await
        .fault(409, "Invalid state PENDING_UPDATE");
    app.settle().await;
    let got = app
        .get(&format!("/v2/lbaas/loadbalancers/{lb}"))
        .await
        .expect(200);
    assert_eq!(got["loadbalancer"]["listeners"][0]["id"], listener.as_str());
    assert_eq!(got["loadbalancer"]["pools"][0]["id"], pool.as_str());
}

#[tokio::test]
async fn failed_job_leaves_error_with_reason() {
    let app = App::new().await;
    let b = app
        .post(
            "/v2/lbaas/loadbalancers",
            json!({"loadbalancer": {"vip_subnet_id": SUBNET}}),
        )
        .await
        .expect(201);
    let id = b["loadbalancer"]["id"].as_str().unwrap().to_owned();
    app.fail_jobs("compute quota exceeded").await;
    assert_eq!(
        app.status_of(&format!("/v2/loadbalancers/{id}"), "loadbalancer")
            .await,
        "ERROR"
    );
    let jobs = app.store.jobs_of(&id).await.unwrap();
    assert_eq!(
        jobs[0].last_error.as_deref(),
        Some("compute quota exceeded")
    );
    // ERROR load balancers can be deleted.
    app.delete(&format!("/v2/loadbalancers/{id}"))
        .await
        .expect(204);
}

#[tokio::test]
async fn fully_populated_create() {
    let app = App::new().await;
    let body = json!({"loadbalancer": {
    "vip_subnet_id": SUBNET,
    "listeners": [{"protocol": "HTTP", "protocol_port": 80, "default_pool": {"name": "web"},
        "l7policies": [{"action": "REDIRECT_TO_POOL", "redirect_pool": {"name": "api"},
            "rules": [{"type": "PATH", "compare_type": "STARTS_WITH", "value": "/api"}]}]}],
    "pools": [
        {"name": "web", "protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN",
         "healthmonitor": {"type": "HTTP", "delay": 5, "timeout": 3, "max_retries": 2},
         "members": [{"address": "192.0.2.1", "protocol_port": 80}, {"address": "192.0.2.2", "protocol_port": 80}]},
        {"name": "api", "protocol": "HTTP", "lb_algorithm": "SOURCE_IP_PORT"}
    ]}});
    let b = app.post("/v2/lbaas/loadbalancers", body).await.expect(201);
    let lb = &b["loadbalancer"];
    assert_eq!(lb["listeners"][0]["protocol"], "HTTP");
    assert_eq!(
        lb["listeners"][0]["l7policies"].as_array().unwrap().len(),
        1
    );
    assert_eq!(lb["pools"].as_array().unwrap().len(), 2);
    assert_eq!(lb["pools"][0]["members"].as_array().unwrap().len(), 2);
    app.settle().await;
    let id = lb["id"].as_str().unwrap();
    let pools = app
        .get(&format!("/v2/lbaas/pools?loadbalancer_id={id}"))
        .await
        .expect(200);
    assert!(
        pools["pools"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["provisioning_status"] == "ACTIVE")
    );
    // Unnamed pools and dangling references are refused.
    app.post("/v2/lbaas/loadbalancers", json!({"loadbalancer": {"vip_subnet_id": SUBNET, "pools": [{"protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN"}]}}))
        .await
        .fault(400, "Pools must be named");
    app.post("/v2/lbaas/loadbalancers", json!({"loadbalancer": {"vip_subnet_id": SUBNET, "listeners": [{"protocol": "HTTP", "protocol_port": 80, "default_pool": {"name": "nope"}}]}}))
        .await
        .fault(400, "Pool 'nope' was referenced but no full definition was found.");
}

/// A VIP network that knows one subnet, 198.18.4.0/24 (the noop network knows none).
struct OneSubnet;

const KNOWN_SUBNET: &str = "5b0d1f5e-8e1a-4c7f-9f43-0b7a1f1d2c3e";

#[async_trait::async_trait]
impl klb_api::provider::VipNetwork for OneSubnet {
    async fn allocate_vip(
        &self,
        lb_id: uuid::Uuid,
        project_id: &str,
        request: &klb_api::provider::VipRequest,
    ) -> Result<klb_api::provider::Vip, klb_api::provider::VipError> {
        klb_api::provider::NoopNetwork
            .allocate_vip(lb_id, project_id, request)
            .await
    }

    async fn subnet_cidr(
        &self,
        _project_id: &str,
        subnet_id: uuid::Uuid,
    ) -> Result<Option<ipnet::IpNet>, klb_api::provider::VipError> {
        if subnet_id.to_string() == KNOWN_SUBNET || subnet_id.to_string() == SUBNET {
            Ok(Some("198.18.4.0/24".parse().unwrap()))
        } else {
            Err(klb_api::provider::VipError::SubnetNotFound(subnet_id))
        }
    }
}

/// Issue 11 §6: an additional VIP's address must be inside its subnet, not the VIP itself,
/// and not a reserved address (it ends up in every listener's `bind` lines).
#[tokio::test]
async fn additional_vip_addresses_are_checked_against_their_subnet() {
    let app = App::new_with(|mut s| {
        s.network = std::sync::Arc::new(OneSubnet);
        s
    })
    .await;
    let lb = |ip: &str, subnet: &str| {
        json!({"loadbalancer": {"vip_subnet_id": SUBNET, "vip_address": "198.18.4.10",
            "additional_vips": [{"subnet_id": subnet, "ip_address": ip}]}})
    };
    app.post(LBS, lb("8.8.8.8", KNOWN_SUBNET)).await.fault(
        400,
        &format!(
            "Validation failure: Additional VIP address 8.8.8.8 is not in subnet {KNOWN_SUBNET} (198.18.4.0/24)."
        ),
    );
    app.post(LBS, lb("198.18.4.10", KNOWN_SUBNET)).await.fault(
        400,
        "Additional VIP address 198.18.4.10 is the VIP address.",
    );
    app.post(LBS, lb("::ffff:198.18.4.10", KNOWN_SUBNET))
        .await
        .fault(400, "is the VIP address.");
    app.post(LBS, lb("127.0.0.1", KNOWN_SUBNET))
        .await
        .fault(400, "is a reserved address");
    app.post(
        LBS,
        lb("198.18.4.11", "0d6f1a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b"),
    )
    .await
    .fault(
        400,
        "Subnet 0d6f1a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b not found.",
    );
    let ok = app
        .post(LBS, lb("198.18.4.11", KNOWN_SUBNET))
        .await
        .expect(201);
    assert_eq!(
        ok["loadbalancer"]["additional_vips"][0]["ip_address"],
        "198.18.4.11"
    );
}
