//! Octavia conformance (issue 12, items 1–6): `updated_at` on every change of a row, allowed
//! CIDRs against the VIPs' IP versions, default sort orders, parent-id filters of child lists,
//! configurable provider drivers, and a 413 that clients actually receive.

use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use chrono::{DateTime, Utc};
use klb_api::{ProviderDriver, ProviderDrivers};
use klb_model::Kind;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::util::*;

/// A request as an admin of `admin-project` (flavors, profiles, amphorae).
async fn admin(app: &App, method: &str, path: &str, body: Option<Value>) -> Resp {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("x-project-id", "admin-project")
        .header("x-roles", "admin")
        .header("content-type", "application/json")
        .body(
            body.map(|b| Body::from(b.to_string()))
                .unwrap_or_else(Body::empty),
        )
        .unwrap();
    let resp = app.router.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    Resp { status, body }
}

/// The stored `updated_at` (microseconds; the API renders whole seconds).
async fn stored_updated_at(app: &App, kind: Kind, id: &str) -> Option<DateTime<Utc>> {
    let doc = app.store.get(kind, id).await.unwrap().unwrap();
    let body: Value = serde_json::from_str(&doc.body).unwrap();
    body["updated_at"].as_str().map(|s| s.parse().unwrap())
}

fn ids_of(list: &Value, key: &str) -> Vec<String> {
    list[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap().to_owned())
        .collect()
}

// ------------------------------------------------------------------ 1. updated_at

/// Octavia's `updated_at` is SQLAlchemy's `onupdate`: null after the insert, set by every
/// later write of the row, the provider's status changes included.
#[tokio::test]
async fn updated_at_is_set_by_every_status_change() {
    let app = App::new().await;
    let b = app
        .post(
            "/v2/lbaas/loadbalancers",
            json!({"loadbalancer": {"vip_subnet_id": SUBNET}}),
        )
        .await
        .expect(201);
    assert_eq!(
        b["loadbalancer"]["updated_at"],
        Value::Null,
        "just inserted"
    );
    let lb = b["loadbalancer"]["id"].as_str().unwrap().to_owned();
    app.settle().await;
    let shown = app
        .get(&format!("/v2/lbaas/loadbalancers/{lb}"))
        .await
        .expect(200);
    assert_eq!(shown["loadbalancer"]["provisioning_status"], "ACTIVE");
    let updated = shown["loadbalancer"]["updated_at"].as_str();
    assert!(
        updated.is_some_and(|u| u >= shown["loadbalancer"]["created_at"].as_str().unwrap()),
        "the provider's ACTIVE sets updated_at: {shown}"
    );

    // Each child kind: null in the create reply, set once the provider settled it; the LB
    // (locked PENDING_UPDATE, then ACTIVE again) is written, so its updated_at moves on.
    let creates: Vec<(&str, &str, String, Value)> = vec![
        (
            "listener",
            "listener",
            "/v2/lbaas/listeners".into(),
            json!({"loadbalancer_id": lb, "protocol": "HTTP", "protocol_port": 80}),
        ),
        (
            "pool",
            "pool",
            "/v2/lbaas/pools".into(),
            json!({"loadbalancer_id": lb, "protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN"}),
        ),
    ];
    let mut made: Vec<(String, String, String)> = Vec::new();
    for (kind, env, path, body) in creates {
        let before = stored_updated_at(&app, Kind::LoadBalancer, &lb)
            .await
            .unwrap();
        let mut envelope = serde_json::Map::new();
        envelope.insert(env.to_owned(), body);
        let b = app.post(&path, Value::Object(envelope)).await.expect(201);
        assert_eq!(b[env]["updated_at"], Value::Null, "{kind} just inserted");
        let id = b[env]["id"].as_str().unwrap().to_owned();
        assert!(
            stored_updated_at(&app, Kind::LoadBalancer, &lb)
                .await
                .unwrap()
                > before
        );
        app.settle().await;
        let shown = app.get(&format!("{path}/{id}")).await.expect(200);
        assert_eq!(shown[env]["provisioning_status"], "ACTIVE");
        assert!(shown[env]["updated_at"].is_string(), "{kind}: {shown}");
        made.push((kind.to_owned(), env.to_owned(), id));
    }
    let pool = made[1].2.clone();
    let listener = made[0].2.clone();
    let member = app
        .post(
            &format!("/v2/lbaas/pools/{pool}/members"),
            json!({"member": {"address": "192.0.2.10", "protocol_port": 8080}}),
        )
        .await
        .expect(201)["member"]
        .clone();
    assert_eq!(member["updated_at"], Value::Null);
    app.settle().await;
    let hm = app
        .post(
            "/v2/lbaas/healthmonitors",
            json!({"healthmonitor": {"pool_id": pool, "type": "TCP", "delay": 5, "timeout": 3, "max_retries": 2}}),
        )
        .await
        .expect(201)["healthmonitor"]
        .clone();
    assert_eq!(hm["updated_at"], Value::Null);
    app.settle().await;
    let policy = app
        .post(
            "/v2/lbaas/l7policies",
            json!({"l7policy": {"listener_id": listener, "action": "REJECT"}}),
        )
        .await
        .expect(201)["l7policy"]
        .clone();
    assert_eq!(policy["updated_at"], Value::Null);
    app.settle().await;
    let pid = policy["id"].as_str().unwrap();
    let rule = app
        .post(
            &format!("/v2/lbaas/l7policies/{pid}/rules"),
            json!({"rule": {"type": "PATH", "compare_type": "STARTS_WITH", "value": "/a"}}),
        )
        .await
        .expect(201)["rule"]
        .clone();
    assert_eq!(rule["updated_at"], Value::Null);
    app.settle().await;
    let mid = member["id"].as_str().unwrap();
    let rid = rule["id"].as_str().unwrap();
    for (path, env) in [
        (format!("/v2/lbaas/pools/{pool}/members/{mid}"), "member"),
        (
            format!("/v2/lbaas/healthmonitors/{}", hm["id"].as_str().unwrap()),
            "healthmonitor",
        ),
        (format!("/v2/lbaas/l7policies/{pid}"), "l7policy"),
        (format!("/v2/lbaas/l7policies/{pid}/rules/{rid}"), "rule"),
    ] {
        let shown = app.get(&path).await.expect(200);
        assert_eq!(shown[env]["provisioning_status"], "ACTIVE", "{path}");
        assert!(shown[env]["updated_at"].is_string(), "{path}: {shown}");
    }

    // A failed change stamps ERROR too; so does the delete's PENDING_DELETE.
    let before = stored_updated_at(&app, Kind::Member, mid).await.unwrap();
    app.put(
        &format!("/v2/lbaas/pools/{pool}/members/{mid}"),
        json!({"member": {"weight": 5}}),
    )
    .await
    .expect(200);
    let pending = stored_updated_at(&app, Kind::Member, mid).await.unwrap();
    assert!(pending > before);
    app.fail_jobs("boom").await;
    let shown = app
        .get(&format!("/v2/lbaas/pools/{pool}/members/{mid}"))
        .await
        .expect(200);
    assert_eq!(shown["member"]["provisioning_status"], "ERROR");
    assert!(stored_updated_at(&app, Kind::Member, mid).await.unwrap() > pending);
    let before = stored_updated_at(&app, Kind::L7Rule, rid).await.unwrap();
    app.delete(&format!("/v2/lbaas/l7policies/{pid}/rules/{rid}"))
        .await
        .expect(204);
    assert!(stored_updated_at(&app, Kind::L7Rule, rid).await.unwrap() > before);
    app.settle().await;

    // A listener whose default pool goes away is written as well.
    let default_pool = app.pool(&lb, Some(&listener)).await;
    let before = stored_updated_at(&app, Kind::Listener, &listener)
        .await
        .unwrap();
    app.delete(&format!("/v2/lbaas/pools/{default_pool}"))
        .await
        .expect(204);
    app.settle().await;
    let l = app
        .get(&format!("/v2/lbaas/listeners/{listener}"))
        .await
        .expect(200);
    assert_eq!(l["listener"]["default_pool_id"], Value::Null);
    assert!(
        stored_updated_at(&app, Kind::Listener, &listener)
            .await
            .unwrap()
            > before
    );
}

// ------------------------------------------------------------------ 2. allowed_cidrs

async fn lb_with(app: &App, extra: Value) -> String {
    let mut lb = json!({"vip_subnet_id": SUBNET});
    for (k, v) in extra.as_object().unwrap() {
        lb[k] = v.clone();
    }
    let b = app
        .post("/v2/lbaas/loadbalancers", json!({ "loadbalancer": lb }))
        .await
        .expect(201);
    app.settle().await;
    b["loadbalancer"]["id"].as_str().unwrap().to_owned()
}

fn listener_with_cidrs(lb: &str, port: u16, cidrs: &[&str]) -> Value {
    json!({"listener": {"loadbalancer_id": lb, "protocol": "TCP", "protocol_port": port,
        "allowed_cidrs": cidrs}})
}

#[tokio::test]
async fn allowed_cidrs_must_match_the_ip_version_of_a_vip() {
    let app = App::new().await;
    let v4 = lb_with(&app, json!({"vip_address": "192.0.1.5"})).await;
    let r = app
        .post(
            "/v2/lbaas/listeners",
            listener_with_cidrs(&v4, 80, &["192.0.1.0/24", "2001:db8:a0b:12f0::/64"]),
        )
        .await;
    assert_eq!(r.status.as_u16(), 400, "{}", r.body);
    assert_eq!(
        r.body["faultstring"],
        "Validation failure: CIDR 2001:db8:a0b:12f0::/64 IP version incompatible with all VIPs ['192.0.1.5'] IP version."
    );
    let l = app
        .post(
            "/v2/lbaas/listeners",
            listener_with_cidrs(&v4, 80, &["192.0.1.0/24"]),
        )
        .await
        .expect(201)["listener"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.settle().await;
    // PUT checks the new list the same way; clearing it needs no check.
    app.put(
        &format!("/v2/lbaas/listeners/{l}"),
        json!({"listener": {"allowed_cidrs": ["2001:db8::/32"]}}),
    )
    .await
    .fault(
        400,
        "Validation failure: CIDR 2001:db8::/32 IP version incompatible with all VIPs ['192.0.1.5'] IP version.",
    );
    app.put(
        &format!("/v2/lbaas/listeners/{l}"),
        json!({"listener": {"allowed_cidrs": null}}),
    )
    .await
    .expect(200);
    app.settle().await;

    // IPv6 VIP, IPv4 CIDR.
    let v6 = lb_with(&app, json!({"vip_address": "2001:db9:a1b:13f0::1"})).await;
    app.post(
        "/v2/lbaas/listeners",
        listener_with_cidrs(&v6, 80, &["10.0.1.0/24"]),
    )
    .await
    .fault(
        400,
        "Validation failure: CIDR 10.0.1.0/24 IP version incompatible with all VIPs ['2001:db9:a1b:13f0::1'] IP version.",
    );
    // Dual stack through an additional VIP: both versions are fine.
    let dual = lb_with(
        &app,
        json!({"vip_address": "192.0.1.6", "additional_vips": [
            {"subnet_id": "5b0d1f5e-8e1a-4c7f-9f43-0b7a1f1d2c3e", "ip_address": "2001:db9:a1b:13f0::1"}]}),
    )
    .await;
    app.post(
        "/v2/lbaas/listeners",
        listener_with_cidrs(&dual, 80, &["10.0.1.0/24", "2001:db9:a1b:13f0::/64"]),
    )
    .await
    .expect(201);
    app.settle().await;
    // The single-call graph create checks its listeners against the new VIP too.
    app.post(
        "/v2/lbaas/loadbalancers",
        json!({"loadbalancer": {"vip_subnet_id": SUBNET, "vip_address": "192.0.1.7",
            "listeners": [{"protocol": "TCP", "protocol_port": 80, "allowed_cidrs": ["::/0"]}]}}),
    )
    .await
    .fault(
        400,
        "Validation failure: CIDR ::/0 IP version incompatible with all VIPs ['192.0.1.7'] IP version.",
    );
    // Custom VIP security groups and allowed CIDRs exclude each other.
    let sg = lb_with(
        &app,
        json!({"vip_sg_ids": ["0d6f1a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b"]}),
    )
    .await;
    app.post(
        "/v2/lbaas/listeners",
        listener_with_cidrs(&sg, 80, &["10.0.0.0/8"]),
    )
    .await
    .fault(
        400,
        "Validation failure: Allowed CIDRs are not allowed when using custom VIP Security Groups.",
    );
}

// ------------------------------------------------------------------ 3. default sort orders

#[tokio::test]
async fn default_sort_orders_follow_octavia() {
    let app = App::new().await;
    // Flavors and flavor profiles have no created_at in Octavia: listed by id.
    let mut profiles = Vec::new();
    let mut flavors = Vec::new();
    for i in 0..8 {
        let fp = admin(
            &app,
            "POST",
            "/v2/lbaas/flavorprofiles",
            Some(
                json!({"flavorprofile": {"name": format!("fp{i}"), "provider_name": "klb",
                "flavor_data": "{}"}}),
            ),
        )
        .await
        .expect(201)["flavorprofile"]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        // Two flavors share each description, so a sort by it shows the id tie-breaker.
        let fl = admin(
            &app,
            "POST",
            "/v2/lbaas/flavors",
            Some(
                json!({"flavor": {"name": format!("f{i}"), "flavor_profile_id": fp,
                "description": format!("d{}", i / 2)}}),
            ),
        )
        .await
        .expect(201)["flavor"]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        profiles.push(fp);
        flavors.push(fl);
    }
    let mut by_id = profiles.clone();
    by_id.sort();
    let listed = admin(&app, "GET", "/v2/lbaas/flavorprofiles", None)
        .await
        .expect(200);
    assert_eq!(ids_of(&listed, "flavorprofiles"), by_id);
    let mut by_id = flavors.clone();
    by_id.sort();
    let listed = admin(&app, "GET", "/v2/lbaas/flavors", None)
        .await
        .expect(200);
    assert_eq!(ids_of(&listed, "flavors"), by_id);
    // A requested key first, then the id (ascending) as the tie-breaker.
    let listed = admin(&app, "GET", "/v2/lbaas/flavors?sort=description:desc", None)
        .await
        .expect(200);
    let mut expected: Vec<(String, String)> = flavors
        .iter()
        .enumerate()
        .map(|(i, id)| (format!("d{}", i / 2), id.clone()))
        .collect();
    expected.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    assert_eq!(
        ids_of(&listed, "flavors"),
        expected.into_iter().map(|(_, id)| id).collect::<Vec<_>>()
    );
    // Pages follow the same order.
    let page = admin(&app, "GET", "/v2/lbaas/flavors?limit=3", None)
        .await
        .expect(200);
    assert_eq!(ids_of(&page, "flavors"), by_id[..3]);
    let page = admin(
        &app,
        "GET",
        &format!("/v2/lbaas/flavors?limit=3&marker={}", by_id[2]),
        None,
    )
    .await
    .expect(200);
    assert_eq!(ids_of(&page, "flavors"), by_id[3..6]);

    // L7 policies: by (created_at, id) like every object with timestamps, not by position.
    let lb = app.lb().await;
    let listener = app.listener(&lb, 80).await;
    let mut created = Vec::new();
    for position in [1, 1, 1] {
        let b = app
            .post(
                "/v2/lbaas/l7policies",
                json!({"l7policy": {"listener_id": listener, "action": "REJECT", "position": position}}),
            )
            .await
            .expect(201);
        created.push(b["l7policy"]["id"].as_str().unwrap().to_owned());
        app.settle().await;
    }
    let listed = app.get("/v2/lbaas/l7policies").await.expect(200);
    assert_eq!(ids_of(&listed, "l7policies"), created);
    let positions: Vec<i64> = listed["l7policies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["position"].as_i64().unwrap())
        .collect();
    assert_eq!(positions, vec![3, 2, 1]);
    // The listener's own l7policies list stays in position order (Octavia's relationship).
    let l = app
        .get(&format!("/v2/lbaas/listeners/{listener}"))
        .await
        .expect(200);
    let mut by_position = created.clone();
    by_position.reverse();
    assert_eq!(ids_of(&l["listener"], "l7policies"), by_position);
}

// ------------------------------------------------------------------ 4. parent-id filters

#[tokio::test]
async fn child_lists_accept_the_parent_id_filters_clients_send() {
    let app = App::new().await;
    let lb = app.lb().await;
    let other_lb = app.lb().await;
    let listener = app.listener(&lb, 80).await;
    let pool = app.pool(&lb, Some(&listener)).await;
    let member = app
        .post(
            &format!("/v2/lbaas/pools/{pool}/members"),
            json!({"member": {"address": "192.0.2.10", "protocol_port": 8080}}),
        )
        .await
        .expect(201)["member"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.settle().await;
    let policy = app
        .post(
            "/v2/lbaas/l7policies",
            json!({"l7policy": {"listener_id": listener, "action": "REJECT"}}),
        )
        .await
        .expect(201)["l7policy"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.settle().await;
    let rule = app
        .post(
            &format!("/v2/lbaas/l7policies/{policy}/rules"),
            json!({"rule": {"type": "PATH", "compare_type": "STARTS_WITH", "value": "/a"}}),
        )
        .await
        .expect(201)["rule"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.settle().await;

    // openstacksdk's l7_rules(policy): GET .../l7policies/<id>/rules?l7policy_id=<id>.
    let rules = app
        .get(&format!(
            "/v2/lbaas/l7policies/{policy}/rules?l7policy_id={policy}"
        ))
        .await
        .expect(200);
    assert_eq!(ids_of(&rules, "rules"), vec![rule.clone()]);
    let other = uuid::Uuid::new_v4();
    let rules = app
        .get(&format!(
            "/v2/lbaas/l7policies/{policy}/rules?l7policy_id={other}"
        ))
        .await
        .expect(200);
    assert_eq!(ids_of(&rules, "rules"), Vec::<String>::new());

    let members = app
        .get(&format!("/v2/lbaas/pools/{pool}/members?pool_id={pool}"))
        .await
        .expect(200);
    assert_eq!(ids_of(&members, "members"), vec![member]);
    let members = app
        .get(&format!("/v2/lbaas/pools/{pool}/members?pool_id={other}"))
        .await
        .expect(200);
    assert_eq!(ids_of(&members, "members"), Vec::<String>::new());

    // The data model's `load_balancer_id` (openstacksdk's listener query) next to the API's
    // `loadbalancer_id`.
    for (path, key, id) in [
        ("/v2/lbaas/listeners", "listeners", &listener),
        ("/v2/lbaas/pools", "pools", &pool),
    ] {
        for name in ["loadbalancer_id", "load_balancer_id"] {
            let got = app.get(&format!("{path}?{name}={lb}")).await.expect(200);
            assert_eq!(ids_of(&got, key), vec![id.clone()], "{path}?{name}");
            let got = app
                .get(&format!("{path}?{name}={other_lb}"))
                .await
                .expect(200);
            assert_eq!(ids_of(&got, key), Vec::<String>::new(), "{path}?{name}");
        }
    }
    let hms = app
        .get(&format!("/v2/lbaas/healthmonitors?pool_id={pool}"))
        .await
        .expect(200);
    assert_eq!(ids_of(&hms, "healthmonitors"), Vec::<String>::new());

    // Amphorae: `loadbalancer_id` and `load_balancer_id`.
    let vm = klb_model::LbVm {
        compute_id: Some("server-1".into()),
        lb_network_ip: Some("198.18.10.5".parse().unwrap()),
        role: Some(klb_model::LbVmRole::Standalone),
        ..klb_test_support::fixtures::lb_vm(
            Some(lb.parse().unwrap()),
            klb_model::LbVmStatus::Allocated,
        )
    };
    let mut tx = app.store.begin().await.unwrap();
    tx.insert_resource(&vm).await.unwrap();
    tx.commit().await.unwrap();
    for name in ["loadbalancer_id", "load_balancer_id"] {
        let got = admin(
            &app,
            "GET",
            &format!("/v2/octavia/amphorae?{name}={lb}"),
            None,
        )
        .await
        .expect(200);
        assert_eq!(ids_of(&got, "amphorae"), vec![vm.id.to_string()], "{name}");
    }
}

// ------------------------------------------------------------------ 5. provider drivers

#[test]
fn enabled_provider_drivers_parse_the_octavia_way() {
    let d: ProviderDrivers = " a : The A driver. , b:Desc: with colon ".parse().unwrap();
    assert_eq!(
        d.iter().cloned().collect::<Vec<_>>(),
        vec![
            ProviderDriver {
                name: "a".into(),
                description: "The A driver.".into()
            },
            ProviderDriver {
                name: "b".into(),
                description: "Desc: with colon".into()
            },
        ]
    );
    assert_eq!(d.to_string(), "a:The A driver.,b:Desc: with colon");
    assert!(d.contains("a") && d.contains("b") && !d.contains("c"));
    for bad in ["", "klb", "klb:x,amphora", ":x", "a:x,a:y"] {
        assert!(bad.parse::<ProviderDrivers>().is_err(), "{bad:?}");
    }
    assert!(
        "a:x,a:y"
            .parse::<ProviderDrivers>()
            .unwrap_err()
            .to_string()
            .contains("Duplicate key a")
    );
    // The defaults are expressible in that format: no description holds a comma, and
    // writing them out and reading them back gives them again.
    let defaults = ProviderDrivers::default();
    assert!(defaults.iter().all(|d| !d.description.contains(',')));
    assert_eq!(
        defaults.to_string().parse::<ProviderDrivers>().unwrap(),
        defaults
    );
    assert_eq!(
        defaults.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(),
        vec!["klb", "amphora", "octavia"]
    );
}

#[tokio::test]
async fn providers_come_from_enabled_provider_drivers() {
    let app = App::new().await;
    let providers = app.get("/v2/lbaas/providers").await.expect(200);
    for p in providers["providers"].as_array().unwrap() {
        assert!(
            !p["description"].as_str().unwrap().contains(','),
            "{p}: not expressible in enabled_provider_drivers"
        );
    }

    let app = App::new_with(|mut s| {
        let mut config = (*s.config).clone();
        config.enabled_provider_drivers = "edge:Edge LBs: klb's driver.,amphora:The klb driver."
            .parse()
            .unwrap();
        config.default_provider = "edge".into();
        s.config = Arc::new(config);
        s
    })
    .await;
    let providers = app.get("/v2/lbaas/providers").await.expect(200);
    assert_eq!(
        providers,
        json!({"providers": [
            {"name": "edge", "description": "Edge LBs: klb's driver."},
            {"name": "amphora", "description": "The klb driver."}
        ]})
    );
    let b = app
        .post(
            "/v2/lbaas/loadbalancers",
            json!({"loadbalancer": {"vip_subnet_id": SUBNET}}),
        )
        .await
        .expect(201);
    assert_eq!(b["loadbalancer"]["provider"], "edge");
    app.post(
        "/v2/lbaas/loadbalancers",
        json!({"loadbalancer": {"vip_subnet_id": SUBNET, "provider": "klb"}}),
    )
    .await
    .fault(400, "Provider 'klb' is not enabled.");
    app.post(
        "/v2/lbaas/loadbalancers",
        json!({"loadbalancer": {"vip_subnet_id": SUBNET, "provider": "amphora"}}),
    )
    .await
    .expect(201);
    admin(
        &app,
        "GET",
        "/v2/lbaas/providers/klb/flavor_capabilities",
        None,
    )
    .await
    .fault(400, "Provider 'klb' is not enabled.");
    admin(
        &app,
        "GET",
        "/v2/lbaas/providers/edge/flavor_capabilities",
        None,
    )
    .await
    .expect(200);
}

// ------------------------------------------------------------------ 6. 413 over TCP

/// A 20 MiB POST from a client that does not wait for `100 Continue` (like Python's
/// requests): the server reads the body away and the client, which writes all of it before
/// reading, gets the 413 instead of a reset or a broken pipe.
#[tokio::test]
async fn oversized_body_gets_its_413_over_tcp() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let app = App::new().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = app.router.clone();
    let server = tokio::spawn(async move { axum::serve(listener, router).await });

    const SIZE: usize = 20 * 1024 * 1024;
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /v2/lbaas/loadbalancers HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nX-Project-Id: {PROJECT}\r\nContent-Length: {SIZE}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let chunk = vec![b' '; 64 * 1024];
    let mut sent = 0;
    while sent < SIZE {
        stream
            .write_all(&chunk)
            .await
            .unwrap_or_else(|e| panic!("write failed after {sent} bytes: {e}"));
        sent += chunk.len();
    }
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    // Headers and the small fault body; the connection stays open (keep-alive).
    while !String::from_utf8_lossy(&reply).contains("faultstring") {
        let n = tokio::time::timeout(std::time::Duration::from_secs(30), stream.read(&mut buf))
            .await
            .expect("reply in time")
            .expect("read the reply");
        assert!(
            n > 0,
            "closed before the reply: {:?}",
            String::from_utf8_lossy(&reply)
        );
        reply.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&reply);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("\"faultcode\":\"Client\""), "{text}");

    // The same connection still serves the next request (the body was read to its end).
    stream
        .write_all(format!("GET / HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut next = Vec::new();
    while !String::from_utf8_lossy(&next).contains("CURRENT") {
        let n = tokio::time::timeout(std::time::Duration::from_secs(30), stream.read(&mut buf))
            .await
            .expect("reply in time")
            .unwrap();
        assert!(n > 0, "closed: {:?}", String::from_utf8_lossy(&next));
        next.extend_from_slice(&buf[..n]);
    }
    assert!(String::from_utf8_lossy(&next).starts_with("HTTP/1.1 200"));

    // A client that waits for `100 Continue` gets the 413 without sending anything.
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /v2/lbaas/loadbalancers HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nX-Project-Id: {PROJECT}\r\nContent-Length: {SIZE}\r\nExpect: 100-continue\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut reply = Vec::new();
    while !String::from_utf8_lossy(&reply).contains("faultstring") {
        let n = tokio::time::timeout(std::time::Duration::from_secs(30), stream.read(&mut buf))
            .await
            .expect("reply in time")
            .unwrap();
        assert!(n > 0, "closed: {:?}", String::from_utf8_lossy(&reply));
        reply.extend_from_slice(&buf[..n]);
    }
    assert!(String::from_utf8_lossy(&reply).starts_with("HTTP/1.1 413"));
    server.abort();
}
