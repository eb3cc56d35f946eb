use serde_json::{Value, json};

use crate::util::*;

async fn names(app: &App, query: &str) -> (Vec<String>, Value) {
    let b = app
        .get(&format!("/v2/lbaas/loadbalancers{query}"))
        .await
        .expect(200);
    let names = b["loadbalancers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap_or("").to_owned())
        .collect();
    (names, b["loadbalancers_links"].clone())
}

#[tokio::test]
async fn pagination_sorting_filters_tags_fields() {
    let app = App::new().await;
    let tags = [
        vec!["red"],
        vec!["red", "blue"],
        vec!["blue"],
        vec![],
        vec!["red"],
    ];
    for (i, t) in tags.iter().enumerate() {
        app.post(
            "/v2/lbaas/loadbalancers",
            json!({"loadbalancer": {"vip_subnet_id": SUBNET, "name": format!("lb{i}"), "tags": t,
            "admin_state_up": i % 2 == 0}}),
        )
        .await
        .expect(201);
    }
    app.settle().await;
    let (all, links) = names(&app, "").await;
    assert_eq!(all, vec!["lb0", "lb1", "lb2", "lb3", "lb4"]);
    assert_eq!(links, json!([]));

    // Keyset pages with next/previous links.
    let (page1, links) = names(&app, "?limit=2").await;
    assert_eq!(page1, vec!["lb0", "lb1"]);
    let next = links
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["rel"] == "next")
        .unwrap()["href"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        next.starts_with("http://localhost/v2/lbaas/loadbalancers?limit=2&marker="),
        "{next}"
    );
    let b = app.get(&next).await.expect(200);
    let page2: Vec<&str> = b["loadbalancers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    assert_eq!(page2, vec!["lb2", "lb3"]);
    let links = b["loadbalancers_links"].as_array().unwrap();
    let prev = links.iter().find(|l| l["rel"] == "previous").unwrap()["href"]
        .as_str()
        .unwrap();
    assert!(prev.contains("page_reverse=True"));
    let b = app.get(prev).await.expect(200);
    let back: Vec<&str> = b["loadbalancers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    assert_eq!(back, vec!["lb0", "lb1"]);

    // Sorting, both syntaxes.
    assert_eq!(
        names(&app, "?sort=name:desc").await.0,
        vec!["lb4", "lb3", "lb2", "lb1", "lb0"]
    );
    assert_eq!(
        names(&app, "?sort_key=name&sort_dir=desc&limit=2").await.0,
        vec!["lb4", "lb3"]
    );
    let (sorted, links) = names(&app, "?sort=admin_state_up:asc,name:desc&limit=3").await;
    assert_eq!(sorted, vec!["lb3", "lb1", "lb4"]);
    let next = links
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["rel"] == "next")
        .unwrap()["href"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(next.contains("sort=admin_state_up:asc,name:desc"), "{next}");
    let b = app.get(&next).await.expect(200);
    assert_eq!(b["loadbalancers"].as_array().unwrap().len(), 2);

    // Filters.
    assert_eq!(names(&app, "?name=lb2").await.0, vec!["lb2"]);
    assert_eq!(
        names(&app, "?admin_state_up=false").await.0,
        vec!["lb1", "lb3"]
    );
    // Tags.
    assert_eq!(names(&app, "?tags=red,blue").await.0, vec!["lb1"]);
    assert_eq!(
        names(&app, "?tags-any=red,blue").await.0,
        vec!["lb0", "lb1", "lb2", "lb4"]
    );
    assert_eq!(names(&app, "?not-tags=red").await.0, vec!["lb2", "lb3"]);
    assert_eq!(names(&app, "?not-tags-any=red,blue").await.0, vec!["lb3"]);
    assert_eq!(names(&app, "?tags=red&tags=blue").await.0, vec!["lb1"]);

    // fields=
    let b = app
        .get("/v2/lbaas/loadbalancers?fields=id&fields=name&limit=1")
        .await
        .expect(200);
    let keys: Vec<&String> = b["loadbalancers"][0].as_object().unwrap().keys().collect();
    assert_eq!(keys, vec!["id", "name"]);
    let id = b["loadbalancers"][0]["id"].as_str().unwrap();
    let one = app
        .get(&format!("/v2/lbaas/loadbalancers/{id}?fields=name"))
        .await
        .expect(200);
    assert_eq!(one["loadbalancer"].as_object().unwrap().len(), 1);

    // Bad list parameters.
    app.get("/v2/lbaas/loadbalancers?limit=abc")
        .await
        .fault(400, "Supplied pagination limit 'abc' is not valid.");
    app.get("/v2/lbaas/loadbalancers?marker=nope")
        .await
        .fault(400, "Supplied pagination marker 'nope' is not valid.");
    app.get("/v2/lbaas/loadbalancers?sort=name:sideways")
        .await
        .fault(400, "Supplied sort direction 'sideways' is not valid.");
    app.get("/v2/lbaas/loadbalancers?sort=bogus")
        .await
        .fault(400, "Supplied sort key 'bogus' is not valid.");
    app.get("/v2/lbaas/loadbalancers?bogus=1")
        .await
        .fault(400, "One or more arguments are either duplicate or invalid");
}

#[tokio::test]
async fn child_lists_filter_by_parent() {
    let app = App::new().await;
    let lb1 = app.lb().await;
    let lb2 = app.lb().await;
    app.listener(&lb1, 80).await;
    app.listener(&lb2, 80).await;
    app.listener(&lb2, 81).await;
    let b = app
        .get(&format!("/v2/lbaas/listeners?loadbalancer_id={lb2}"))
        .await
        .expect(200);
    assert_eq!(b["listeners"].as_array().unwrap().len(), 2);
    let b = app
        .get("/v2/lbaas/listeners?protocol_port=81")
        .await
        .expect(200);
    assert_eq!(b["listeners"].as_array().unwrap().len(), 1);
}

/// NUL in a filter or a path id is the caller's error on both backends (on PostgreSQL it was a
/// 500: text parameters cannot hold NUL; found by the reliability suite's fuzzer).
#[tokio::test]
async fn nul_in_filters_and_ids_is_a_client_error() {
    let app = App::new().await;
    app.lb().await;
    for path in [
        "/v2/lbaas/loadbalancers?project_id=%00",
        "/v2/lbaas/pools?name=a%00b",
        "/v2/lbaas/listeners?protocol_port=NaN&project_id=%00",
        "/v2/lbaas/loadbalancers?%00=1",
    ] {
        app.get(path)
            .await
            .fault(400, "NUL characters are not allowed");
    }
    let r = app.get("/v2/lbaas/availabilityzones/a%00b").await;
    assert!(
        [400, 404].contains(&r.status.as_u16()),
        "{} {}",
        r.status,
        r.body
    );
}
