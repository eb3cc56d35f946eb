use serde_json::json;

use crate::util::*;

#[tokio::test]
async fn policies_positions_and_rules() {
    let app = App::new().await;
    let lb = app.lb().await;
    let listener = app.listener(&lb, 80).await;
    let pool = app.pool(&lb, None).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let b = app
            .post(
                "/v2/lbaas/l7policies",
                json!({"l7policy": {"listener_id": listener, "action": "REJECT"}}),
            )
            .await
            .expect(201);
        ids.push(b["l7policy"]["id"].as_str().unwrap().to_owned());
        app.settle().await;
    }
    // Insert at position 1: the others shift down.
    let b = app
        .post(
            "/v2/lbaas/l7policies",
            json!({"l7policy": {"listener_id": listener, "action": "REDIRECT_TO_URL",
            "redirect_url": "https://example.com/", "position": 1}}),
        )
        .await
        .expect(201);
    assert_eq!(b["l7policy"]["position"], 1);
    assert_eq!(b["l7policy"]["redirect_http_code"], 302);
    let first = b["l7policy"]["id"].as_str().unwrap().to_owned();
    app.settle().await;
    let list = app
        .get(&format!("/v2/lbaas/l7policies?listener_id={listener}"))
        .await
        .expect(200);
    let order: Vec<(String, i64)> = list["l7policies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["id"].as_str().unwrap().into(),
                p["position"].as_i64().unwrap(),
            )
        })
        .collect();
    // Listed in creation order (Octavia's default sort), with the shifted positions.
    assert_eq!(
        order,
        vec![
            (ids[0].clone(), 2),
            (ids[1].clone(), 3),
            (ids[2].clone(), 4),
            (first.clone(), 1)
        ]
    );
    let l = app
        .get(&format!("/v2/lbaas/listeners/{listener}"))
        .await
        .expect(200);
    assert_eq!(l["listener"]["l7policies"][0]["id"], first.as_str());
    // A redirect field sets the action.
    let upd = app
        .put(
            &format!("/v2/lbaas/l7policies/{}", ids[0]),
            json!({"l7policy": {"redirect_pool_id": pool}}),
        )
        .await
        .expect(200);
    assert_eq!(upd["l7policy"]["action"], "REDIRECT_TO_POOL");
    assert_eq!(
        upd["l7policy"]["redirect_http_code"],
        serde_json::Value::Null
    );
    app.settle().await;
    app.delete(&format!("/v2/lbaas/pools/{pool}")).await.fault(
        409,
        &format!("Pool {pool} is in use by L7 policy {}", ids[0]),
    );
    app.put(
        &format!("/v2/lbaas/l7policies/{}", ids[1]),
        json!({"l7policy": {}}),
    )
    .await
    .fault(400, "Invalid update options");
    app.post(
        "/v2/lbaas/l7policies",
        json!({"l7policy": {"listener_id": listener, "action": "REDIRECT_TO_URL"}}),
    )
    .await
    .fault(
        400,
        "Invalid L7 Policy arguments: redirect_url must not be None",
    );

    // Rules.
    let rules = format!("/v2/lbaas/l7policies/{first}/rules");
    let r = app.post(&rules, json!({"rule": {"type": "HEADER", "compare_type": "EQUAL_TO", "key": "X-Env", "value": "prod"}})).await.expect(201);
    assert_eq!(r["rule"]["invert"], false);
    let rid = r["rule"]["id"].as_str().unwrap().to_owned();
    app.post(
        &rules,
        json!({"rule": {"type": "PATH", "compare_type": "EQUAL_TO", "value": "/x"}}),
    )
    .await
    .fault(409, "is immutable and cannot be updated.");
    app.settle().await;
    let p = app
        .get(&format!("/v2/lbaas/l7policies/{first}"))
        .await
        .expect(200);
    assert_eq!(p["l7policy"]["rules"][0]["id"], rid.as_str());
    let upd = app
        .put(
            &format!("{rules}/{rid}"),
            json!({"rule": {"value": "staging", "invert": true}}),
        )
        .await
        .expect(200);
    assert_eq!(upd["rule"]["value"], "staging");
    app.settle().await;
    assert_eq!(
        app.get(&rules).await.expect(200)["rules"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    app.delete(&format!("{rules}/{rid}")).await.expect(204);
    app.settle().await;
    app.get(&format!("{rules}/{rid}"))
        .await
        .fault(404, "L7 Rule");
    app.delete(&format!("/v2/lbaas/l7policies/{first}"))
        .await
        .expect(204);
    app.settle().await;
    let list = app
        .get(&format!("/v2/lbaas/l7policies?listener_id={listener}"))
        .await
        .expect(200);
    let positions: Vec<i64> = list["l7policies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["position"].as_i64().unwrap())
        .collect();
    assert_eq!(positions, vec![1, 2, 3]);
}

#[tokio::test]
async fn l7_on_tcp_listener_is_refused() {
    let app = App::new().await;
    let lb = app.lb().await;
    let b = app
        .post(
            "/v2/lbaas/listeners",
            json!({"listener": {"loadbalancer_id": lb, "protocol": "TCP", "protocol_port": 22}}),
        )
        .await
        .expect(201);
    app.settle().await;
    let l = b["listener"]["id"].as_str().unwrap();
    app.post(
        "/v2/lbaas/l7policies",
        json!({"l7policy": {"listener_id": l, "action": "REJECT"}}),
    )
    .await
    .fault(400, "not supported on TCP");
}
