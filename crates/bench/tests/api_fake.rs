//! `klb bench api` end to end against a small in-process fake Octavia endpoint (loopback only):
//! checks the phases, the status waits (the fake keeps LBs PENDING for a few ms and answers 409
//! to child creates on a PENDING LB, like Octavia) and that the benchmark deletes what it made.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use tokio::sync::Mutex;

/// How long an LB stays PENDING_* after a change.
const PENDING: Duration = Duration::from_millis(3);

#[derive(Default)]
struct Fake {
    lbs: HashMap<String, (Instant, String)>, // id -> (last change, pending status)
    order: Vec<String>,
    pools: HashMap<String, String>, // pool -> lb
    listeners: u64,
    members: u64,
    projects_seen: Vec<String>,
}

type Shared = Arc<Mutex<Fake>>;

fn status(changed: Instant, pending: &str) -> &str {
    if changed.elapsed() >= PENDING {
        "ACTIVE"
    } else {
        pending
    }
}

fn lb_json(id: &str, changed: Instant, pending: &str) -> Value {
    json!({"id": id, "provisioning_status": status(changed, pending), "operating_status": "ONLINE"})
}

fn conflict(id: &str) -> Response {
    (
        StatusCode::CONFLICT,
        Json(json!({"faultcode": "Client",
            "faultstring": format!("Load Balancer {id} is immutable and cannot be updated."), "debuginfo": null})),
    )
        .into_response()
}

/// Marks the LB PENDING_UPDATE when it is ACTIVE, else answers 409.
fn lock_lb(f: &mut Fake, lb: &str) -> Result<(), Box<Response>> {
    match f.lbs.get_mut(lb) {
        None => Err(Box::new(StatusCode::NOT_FOUND.into_response())),
        Some((changed, pending)) => {
            if status(*changed, pending) != "ACTIVE" {
                return Err(Box::new(conflict(lb)));
            }
            *changed = Instant::now();
            *pending = "PENDING_UPDATE".into();
            Ok(())
        }
    }
}

fn app(state: Shared) -> Router {
    Router::new()
        .route(
            "/",
            get(|| async { Json(json!({"versions": [{"id": "v2.0", "status": "CURRENT", "links": []}]})) }),
        )
        .route(
            "/v2/lbaas/loadbalancers",
            get(|State(s): State<Shared>| async move {
                let f = s.lock().await;
                let items: Vec<Value> = f
                    .order
                    .iter()
                    .map(|id| {
                        let (c, p) = &f.lbs[id];
                        lb_json(id, *c, p)
                    })
                    .collect();
                Json(json!({"loadbalancers": items, "loadbalancers_links": []}))
            })
            .post(
                |State(s): State<Shared>, headers: HeaderMap, Json(body): Json<Value>| async move {
                    assert!(body["loadbalancer"]["vip_subnet_id"].is_string());
                    let mut f = s.lock().await;
                    if let Some(p) = headers.get("x-project-id") {
                        f.projects_seen.push(p.to_str().unwrap().to_string());
                    }
                    let id = uuid::Uuid::new_v4().to_string();
                    let now = Instant::now();
                    f.lbs.insert(id.clone(), (now, "PENDING_CREATE".into()));
                    f.order.push(id.clone());
                    (
                        StatusCode::CREATED,
                        Json(json!({"loadbalancer": lb_json(&id, now, "PENDING_CREATE")})),
                    )
                },
            ),
        )
        .route(
            "/v2/lbaas/loadbalancers/{id}",
            get(|State(s): State<Shared>, Path(id): Path<String>| async move {
                let f = s.lock().await;
                match f.lbs.get(&id) {
                    Some((c, p)) => Json(json!({"loadbalancer": lb_json(&id, *c, p)})).into_response(),
                    None => StatusCode::NOT_FOUND.into_response(),
                }
            })
            .delete(|State(s): State<Shared>, Path(id): Path<String>| async move {
                let mut f = s.lock().await;
                if let Err(r) = lock_lb(&mut f, &id) {
                    return *r;
                }
                f.lbs.remove(&id);
                f.order.retain(|x| x != &id);
                f.pools.retain(|_, lb| lb != &id);
                StatusCode::NO_CONTENT.into_response()
            }),
        )
        .route(
            "/v2/lbaas/listeners",
            post(|State(s): State<Shared>, Json(body): Json<Value>| async move {
                let lb = body["listener"]["loadbalancer_id"].as_str().unwrap().to_string();
                let mut f = s.lock().await;
                if let Err(r) = lock_lb(&mut f, &lb) {
                    return *r;
                }
                f.listeners += 1;
                let id = uuid::Uuid::new_v4().to_string();
                (StatusCode::CREATED, Json(json!({"listener": {"id": id}}))).into_response()
            }),
        )
        .route(
            "/v2/lbaas/pools",
            post(|State(s): State<Shared>, Json(body): Json<Value>| async move {
                let lb = body["pool"]["loadbalancer_id"].as_str().unwrap().to_string();
                let mut f = s.lock().await;
                if let Err(r) = lock_lb(&mut f, &lb) {
                    return *r;
                }
                let id = uuid::Uuid::new_v4().to_string();
                f.pools.insert(id.clone(), lb);
                (StatusCode::CREATED, Json(json!({"pool": {"id": id}}))).into_response()
            }),
        )
        .route(
            "/v2/lbaas/pools/{id}/members",
            post(
                |State(s): State<Shared>, Path(pool): Path<String>, Json(body): Json<Value>| async move {
                    assert!(body["member"]["address"].as_str().unwrap().starts_with("198.1"));
                    let mut f = s.lock().await;
                    let Some(lb) = f.pools.get(&pool).cloned() else {
                        return StatusCode::NOT_FOUND.into_response();
                    };
                    if let Err(r) = lock_lb(&mut f, &lb) {
                        return *r;
                    }
                    f.members += 1;
                    (StatusCode::CREATED, Json(json!({"member": {"id": uuid::Uuid::new_v4()}})))
                        .into_response()
                },
            ),
        )
        .with_state(state)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_api_against_fake_octavia() {
    let state: Shared = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(axum::serve(listener, app(state.clone())).into_future());

    let mut config = klb_bench::ApiBenchConfig::new(format!("http://{addr}"));
    config.concurrency = vec![2, 4];
    config.count = 20;
    config.baseline_count = 50;
    config.list_size = 25;
    config.project_id = Some("bench-project".into());
    config.server_pid = Some(std::process::id());
    config.phase_time_limit = Duration::from_secs(30);
    config.active_timeout = Duration::from_secs(10);
    config.poll_interval = Duration::from_millis(1);
    let report = klb_bench::api::run(config).await.expect("bench run");
    server.abort();

    assert!(
        report.failed_levels.is_empty(),
        "{:?}",
        report.failed_levels
    );
    assert_eq!(report.runs.len(), 2);
    for run in &report.runs {
        assert_eq!(run.baseline_version_get.ok, 50);
        for (name, want) in [
            ("lb_create", 20),
            ("lb_create_to_active", 20),
            ("lb_show", 20),
            ("lb_list", 20),
            ("listener_create", 20),
            ("member_create", 20),
            ("lb_create_to_active_isolated", 20),
            ("listener_create_burst", 20),
            ("pool_create_burst", 20),
            ("member_create_burst", 20),
            ("lb_delete", 45),
        ] {
            let s = &run.ops[name];
            assert_eq!(
                (s.ok, s.errors),
                (want, 0),
                "{name} at {}: {s:?}",
                run.concurrency
            );
            assert!(s.p99_ms >= s.p50_ms);
        }
        assert_eq!(run.list_items, 25);
        assert_eq!(run.lbs_in_error, 0);
        // PENDING lasts PENDING, so waiting for ACTIVE is visible in the latencies.
        assert!(run.ops["listener_create_to_active"].p50_ms >= PENDING.as_secs_f64() * 1000.0);
        assert!(run.lb_all_active_s.is_some());
        assert!(run.relative_to_baseline.contains_key("lb_list"));
    }
    let f = state.lock().await;
    assert!(f.lbs.is_empty(), "benchmark left {} LBs", f.lbs.len());
    // Per level: 20 listeners and 20 members in the paced phases, 20 more of each back to back.
    assert_eq!(f.listeners, 80);
    assert_eq!(f.members, 80);
    assert!(f.projects_seen.iter().all(|p| p == "bench-project"));
    let mem = report.server_memory.expect("memory sampled");
    assert!(mem.peak_rss_kib > 0);
    let json = serde_json::to_value(&report).unwrap();
    assert!(
        json["runs"][0]["ops"]["lb_create"]["ops_per_s"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    assert!(report.summary_table().contains("listener_create"));
}
