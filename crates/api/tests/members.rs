use serde_json::json;

use crate::util::*;

#[tokio::test]
async fn member_crud_duplicates_and_parent_lock() {
    let app = App::new().await;
    let lb = app.lb().await;
    let pool = app.pool(&lb, None).await;
    let b = app
        .post(
            &format!("/v2/lbaas/pools/{pool}/members"),
            json!({"member": {"address": "192.0.2.10", "protocol_port": 80}}),
        )
        .await
        .expect(201);
    let m = &b["member"];
    assert_eq!(m["weight"], 1);
    assert_eq!(m["backup"], false);
    assert_eq!(m["operating_status"], "NO_MONITOR");
    assert_eq!(m["monitor_port"], serde_json::Value::Null);
    app.post(
        &format!("/v2/lbaas/pools/{pool}/members"),
        json!({"member": {"address": "192.0.2.11", "protocol_port": 80}}),
    )
    .await
    .fault(409, "is immutable and cannot be updated.");
    app.settle().await;
    app.post(
        &format!("/v2/lbaas/pools/{pool}/members"),
        json!({"member": {"address": "192.0.2.10", "protocol_port": 80}}),
    )
    .await
    .fault(
        409,
        "Another member on this pool is already using ip 192.0.2.10 on protocol_port 80",
    );
    app.post(
        &format!("/v2/lbaas/pools/{pool}/members"),
        json!({"member": {"address": "169.254.169.254", "protocol_port": 80}}),
    )
    .await
    .fault(400, "reserved");
    let id = m["id"].as_str().unwrap();
    let upd = app
        .put(
            &format!("/v2/lbaas/pools/{pool}/members/{id}"),
            json!({"member": {"weight": 0}}),
        )
        .await
        .expect(200);
    assert_eq!(upd["member"]["weight"], 0);
    app.settle().await;
    // A member looked up under another pool is not found.
    let other = app.pool(&lb, None).await;
    app.get(&format!("/v2/lbaas/pools/{other}/members/{id}"))
        .await
        .fault(404, "Member");
    app.delete(&format!("/v2/lbaas/pools/{pool}/members/{id}"))
        .await
        .expect(204);
    app.settle().await;
    app.get(&format!("/v2/lbaas/pools/{pool}/members/{id}"))
        .await
        .expect(404);
}

#[tokio::test]
async fn batch_update_replaces_members() {
    let app = App::new().await;
    let lb = app.lb().await;
    let pool = app.pool(&lb, None).await;
    let path = format!("/v2/lbaas/pools/{pool}/members");
    app.put(
        &path,
        json!({"members": [
        {"address": "192.0.2.1", "protocol_port": 80},
        {"address": "192.0.2.2", "protocol_port": 80, "weight": 5}]}),
    )
    .await
    .expect(202);
    app.settle().await;
    let list = app.get(&path).await.expect(200);
    assert_eq!(list["members"].as_array().unwrap().len(), 2);
    // Replace: .1 updated, .2 removed, .3 created.
    app.put(
        &path,
        json!({"members": [
        {"address": "192.0.2.1", "protocol_port": 80, "weight": 7},
        {"address": "192.0.2.3", "protocol_port": 80}]}),
    )
    .await
    .expect(202);
    let pending = app.get(&path).await.expect(200);
    let statuses: Vec<_> = pending["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["address"].as_str().unwrap().to_owned(),
                m["provisioning_status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(
        statuses.contains(&("192.0.2.2".into(), "PENDING_DELETE".into())),
        "{statuses:?}"
    );
    assert!(statuses.contains(&("192.0.2.3".into(), "PENDING_CREATE".into())));
    app.settle().await;
    let list = app.get(&path).await.expect(200);
    let mut got: Vec<(String, i64)> = list["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["address"].as_str().unwrap().into(),
                m["weight"].as_i64().unwrap(),
            )
        })
        .collect();
    got.sort();
    assert_eq!(got, vec![("192.0.2.1".into(), 7), ("192.0.2.3".into(), 1)]);
    // additive_only keeps what is not listed.
    app.put(
        &format!("{path}?additive_only=true"),
        json!({"members": [{"address": "192.0.2.9", "protocol_port": 80}]}),
    )
    .await
    .expect(202);
    app.settle().await;
    assert_eq!(
        app.get(&path).await.expect(200)["members"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    // Nothing changed: 202 and the LB stays ACTIVE.
    app.put(
        &format!("{path}?additive_only=true"),
        json!({"members": [{"address": "192.0.2.9", "protocol_port": 80}]}),
    )
    .await
    .expect(202);
    assert_eq!(
        app.status_of(&format!("/v2/lbaas/loadbalancers/{lb}"), "loadbalancer")
            .await,
        "ACTIVE"
    );
    app.put(&path, json!({"members": [{"address": "192.0.2.1", "protocol_port": 80}, {"address": "192.0.2.1", "protocol_port": 80}]}))
        .await
        .fault(
            400,
            "Validation failure: Member must be updated only once in the same request.",
        );
    // A new member twice: Octavia 19's duplicate-entry conflict.
    app.put(&path, json!({"members": [{"address": "192.0.2.99", "protocol_port": 80}, {"address": "192.0.2.99", "protocol_port": 80}]}))
        .await
        .fault(
            409,
            "Another member on this pool is already using ip 192.0.2.99 on protocol_port 80",
        );
}

/// Issue 11 §6: member and monitor addresses are judged as parsed addresses, so the metadata
/// address in IPv4-mapped form is refused too, and so are loopback, unspecified, multicast
/// and broadcast addresses.
#[tokio::test]
async fn reserved_member_and_monitor_addresses_are_400() {
    let app = App::new().await;
    let lb = app.lb().await;
    let pool = app.pool(&lb, None).await;
    let members = format!("/v2/lbaas/pools/{pool}/members");
    for bad in [
        "169.254.169.254",
        "::ffff:169.254.169.254",
        "127.0.0.1",
        "::1",
        "0.0.0.0",
        "::",
        "224.0.0.1",
        "ff02::1",
        "255.255.255.255",
    ] {
        app.post(
            &members,
            json!({"member": {"address": bad, "protocol_port": 80}}),
        )
        .await
        .fault(
            400,
            &format!("Validation failure: The IP Address {bad} is a reserved address"),
        );
        app.post(&members, json!({"member": {"address": "192.0.2.20", "protocol_port": 80, "monitor_address": bad}}))
            .await
            .fault(400, "is a reserved address");
    }
    let m = app
        .post(&members, json!({"member": {"address": "192.0.2.20", "protocol_port": 80, "monitor_address": "192.0.2.21"}}))
        .await
        .expect(201);
    app.settle().await;
    let id = m["member"]["id"].as_str().unwrap();
    app.put(
        &format!("{members}/{id}"),
        json!({"member": {"monitor_address": "::ffff:127.0.0.1"}}),
    )
    .await
    .fault(400, "is a reserved address");
}
