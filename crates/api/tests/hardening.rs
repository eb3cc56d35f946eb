//! Issue 11 §4 and §8: noauth grants admin only to the admin role, malformed identity headers
//! are 400, the page cap cannot be skipped, the versions document does not echo a forged
//! `Host`, free text refuses control characters.

use axum::body::Body;
use axum::http::{HeaderValue, Request};
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::util::*;

const LBS: &str = "/v2/lbaas/loadbalancers";

/// One request with raw headers; returns the status and the JSON body.
async fn raw(app: &App, method: &str, path: &str, headers: &[(&str, &[u8])]) -> (u16, Value) {
    raw_body(app, method, path, headers, None).await
}

async fn raw_body(
    app: &App,
    method: &str,
    path: &str,
    headers: &[(&str, &[u8])],
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json");
    for (name, value) in headers {
        req = req.header(*name, HeaderValue::from_bytes(value).unwrap());
    }
    let req = req
        .body(body.map(|b| Body::from(b.to_string())).unwrap_or_default())
        .unwrap();
    let resp = app.router.clone().oneshot(req).await.unwrap();
    let status = resp.status().as_u16();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn noauth_is_admin_only_with_the_admin_role() {
    let app = App::new().await;
    app.lb().await;
    // Without headers: a member of the default project, who sees none of p-alpha's LBs.
    let (status, body) = raw(&app, "GET", LBS, &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["loadbalancers"], json!([]));
    // A present but malformed project header is refused, never read as "no project".
    for bad in [
        &b""[..],
        b"   ",
        b"\xff\xfe",
        b"a b",
        b"p/../x",
        &[b'a'; 37],
    ] {
        for name in ["x-project-id", "x-tenant-id"] {
            let (status, body) = raw(&app, "GET", LBS, &[(name, bad)]).await;
            assert_eq!(status, 400, "{name}: {bad:?}: {body}");
            assert_eq!(body["faultcode"], "Client");
        }
    }
    let (status, _) = raw(&app, "GET", LBS, &[("x-roles", b"\xffadmin")]).await;
    assert_eq!(status, 400);
    // Only the admin roles make an admin; other roles do not.
    for (roles, seen) in [
        (&b"member,reader"[..], 0),
        (b"Admin", 1),
        (b" reader , admin ", 1),
        (b"load-balancer_admin", 1),
        (b"administrator", 0),
    ] {
        let (status, body) = raw(&app, "GET", LBS, &[("x-roles", roles)]).await;
        assert_eq!(status, 200);
        assert_eq!(
            body["loadbalancers"].as_array().unwrap().len(),
            seen,
            "roles {roles:?}"
        );
    }
    // A project may not write its quota, profiles, flavors or AZs, nor list amphorae.
    let project = [("x-project-id", PROJECT.as_bytes())];
    let writes = [
        (
            "PUT",
            format!("/v2/lbaas/quotas/{PROJECT}"),
            json!({"quota": {"loadbalancer": 1000}}),
        ),
        ("DELETE", format!("/v2/lbaas/quotas/{PROJECT}"), Value::Null),
        (
            "POST",
            "/v2/lbaas/flavorprofiles".into(),
            json!({"flavorprofile": {"name": "fp", "provider_name": "klb", "flavor_data": "{}"}}),
        ),
        (
            "POST",
            "/v2/lbaas/availabilityzoneprofiles".into(),
            json!({"availability_zone_profile": {"name": "azp", "provider_name": "klb", "availability_zone_data": "{}"}}),
        ),
        ("GET", "/v2/octavia/amphorae".into(), Value::Null),
    ];
    for (method, path, body) in &writes {
        let body = (!body.is_null()).then(|| body.clone());
        let (status, got) = raw_body(&app, method, path, &project, body).await;
        assert_eq!(status, 403, "{method} {path}: {got}");
    }
    let (status, got) = raw_body(
        &app,
        "PUT",
        &format!("/v2/lbaas/quotas/{PROJECT}"),
        &[("x-roles", b"admin")],
        Some(json!({"quota": {"loadbalancer": 7}})),
    )
    .await;
    assert_eq!(status, 202, "{got}");
    let fp = app
        .call(
            "POST",
            "/v2/lbaas/flavorprofiles",
            Some(&json!({"flavorprofile": {"name": "fp", "provider_name": "klb", "flavor_data": "{}"}}).to_string()),
            None,
        )
        .await
        .expect(201);
    let flavor = json!({"flavor": {"name": "f", "flavor_profile_id": fp["flavorprofile"]["id"]}});
    let (status, _) = raw_body(
        &app,
        "POST",
        "/v2/lbaas/flavors",
        &project,
        Some(flavor.clone()),
    )
    .await;
    assert_eq!(status, 403);
    // Reading flavors stays open to projects.
    let (status, _) = raw(&app, "GET", "/v2/lbaas/flavors", &project).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn page_limit_below_one_is_refused() {
    let app = App::new().await;
    app.lb().await;
    app.lb().await;
    for bad in ["0", "-1", "-9999999999", "1.5", ""] {
        app.get(&format!("{LBS}?limit={bad}"))
            .await
            .fault(400, "Supplied pagination limit");
    }
    let page = app.get(&format!("{LBS}?limit=1")).await.expect(200);
    assert_eq!(page["loadbalancers"].as_array().unwrap().len(), 1);
    assert!(
        page["loadbalancers_links"]
            .as_array()
            .is_some_and(|l| !l.is_empty())
    );
    let page = app.get(&format!("{LBS}?limit=infinite")).await.expect(200);
    assert_eq!(page["loadbalancers"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn versions_document_echoes_only_a_valid_host() {
    let app = App::new().await;
    let href = |body: &Value| {
        body["versions"][0]["links"][0]["href"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    for (host, want) in [
        (
            &b"api.example.org:9876"[..],
            "http://api.example.org:9876/v2",
        ),
        (b"127.0.0.1:9876", "http://127.0.0.1:9876/v2"),
        (b"[::1]:9876", "http://[::1]:9876/v2"),
        (b"evil.example/phish?", "http://localhost/v2"),
        (b"a\"><script>x</script>", "http://localhost/v2"),
        (b"host:99999", "http://localhost/v2"),
        (b"user@evil.example", "http://localhost/v2"),
        (b"[::1", "http://localhost/v2"),
        (b"-bad-.example", "http://localhost/v2"),
    ] {
        let (status, body) = raw(&app, "GET", "/", &[("host", host)]).await;
        assert_eq!(status, 200);
        assert_eq!(href(&body), want, "host {host:?}");
    }
}

#[tokio::test]
async fn free_text_refuses_control_characters() {
    let app = App::new().await;
    for bad in [
        "a\u{0}b",
        "line\nbreak",
        "cr\rhere",
        "tab\there",
        "del\u{7f}",
    ] {
        app.post(
            LBS,
            json!({"loadbalancer": {"vip_subnet_id": SUBNET, "name": bad}}),
        )
        .await
        .fault(400, "control characters");
        app.post(
            LBS,
            json!({"loadbalancer": {"vip_subnet_id": SUBNET, "description": bad}}),
        )
        .await
        .fault(400, "control characters");
        app.post(
            LBS,
            json!({"loadbalancer": {"vip_subnet_id": SUBNET, "tags": ["ok", bad]}}),
        )
        .await
        .fault(400, "control characters");
    }
    let lb = app.lb().await;
    app.put(
        &format!("{LBS}/{lb}"),
        json!({"loadbalancer": {"name": "x\ny"}}),
    )
    .await
    .fault(400, "control characters");
    // Unicode text without control characters is fine.
    app.put(
        &format!("{LBS}/{lb}"),
        json!({"loadbalancer": {"name": "ロードバランサ é"}}),
    )
    .await
    .expect(200);
    app.call(
        "POST",
        "/v2/lbaas/flavorprofiles",
        Some(&json!({"flavorprofile": {"name": "a\nb", "provider_name": "klb", "flavor_data": "{}"}}).to_string()),
        None,
    )
    .await
    .fault(400, "control characters");
}
