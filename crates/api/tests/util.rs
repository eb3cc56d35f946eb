//! Test harness: the router on a fresh store (temp SQLite file, or a fresh PostgreSQL schema
//! when `KLB_TEST_POSTGRES_URL` is set), driven with `oneshot`. Jobs are settled explicitly
//! with [`App::settle`] so tests never wait on timing.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use klb_api::{AppState, NoAuth};
use klb_store::{Outcome, Store};
use klb_test_support::db::TestDb;
use serde_json::{Value, json};
use tower::ServiceExt;

pub const SUBNET: &str = "8a3a5b41-4f0d-4a1b-9f2f-3a6c4e5d6f70";
pub const PROJECT: &str = "p-alpha";

pub struct App {
    pub router: Router,
    pub store: Store,
    /// Last, so the store's pools close before the database goes (a PostgreSQL schema is
    /// dropped with it).
    _db: TestDb,
}

pub struct Resp {
    pub status: StatusCode,
    pub body: Value,
}

impl Resp {
    #[track_caller]
    pub fn expect(self, status: u16) -> Value {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected status, body: {}",
            self.body
        );
        self.body
    }

    /// Asserts an Octavia fault body with this status and a faultstring containing `text`.
    #[track_caller]
    pub fn fault(self, status: u16, text: &str) {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected status, body: {}",
            self.body
        );
        let fs = self.body["faultstring"]
            .as_str()
            .unwrap_or_else(|| panic!("no faultstring in {}", self.body));
        assert!(
            fs.contains(text),
            "faultstring {fs:?} does not contain {text:?}"
        );
        assert_eq!(self.body["debuginfo"], Value::Null);
        assert_eq!(
            self.body["faultcode"],
            if status >= 500 { "Server" } else { "Client" }
        );
    }
}

impl App {
    pub async fn new() -> App {
        App::new_with(|s| s).await
    }

    /// An app whose state is adjusted by `f` (e.g. to plug another seam in).
    pub async fn new_with(f: impl FnOnce(AppState) -> AppState) -> App {
        let db = TestDb::new().await;
        let store = Store::open(db.url()).await.unwrap();
        let state = AppState::new(
            store.clone(),
            Arc::new(NoAuth {
                default_project_id: Some("admin-project".into()),
            }),
        );
        App {
            router: klb_api::router(f(state)),
            store,
            _db: db,
        }
    }

    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        project: Option<&str>,
    ) -> Resp {
        let mut req = Request::builder().method(method).uri(path);
        // `None` is the operator: noauth makes a caller admin only with the admin role.
        match project {
            Some(p) => req = req.header("x-project-id", p),
            None => req = req.header("x-roles", "admin"),
        }
        let req = req
            .header("content-type", "application/json")
            .body(
                body.map(|b| Body::from(b.to_owned()))
                    .unwrap_or_else(Body::empty),
            )
            .unwrap();
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        Resp { status, body }
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.call("GET", path, None, Some(PROJECT)).await
    }
    pub async fn post(&self, path: &str, body: Value) -> Resp {
        self.call("POST", path, Some(&body.to_string()), Some(PROJECT))
            .await
    }
    pub async fn put(&self, path: &str, body: Value) -> Resp {
        self.call("PUT", path, Some(&body.to_string()), Some(PROJECT))
            .await
    }
    pub async fn delete(&self, path: &str) -> Resp {
        self.call("DELETE", path, None, Some(PROJECT)).await
    }

    /// Settles every open job as the noop provider would.
    pub async fn settle(&self) {
        while let Some(job) = self
            .store
            .claim_job("test", Duration::from_secs(30))
            .await
            .unwrap()
        {
            self.store.settle_job(&job, Outcome::Success).await.unwrap();
        }
    }

    /// Settles every open job as failed.
    pub async fn fail_jobs(&self, reason: &str) {
        while let Some(job) = self
            .store
            .claim_job("test", Duration::from_secs(30))
            .await
            .unwrap()
        {
            self.store
                .settle_job(&job, Outcome::Failed(reason.into()))
                .await
                .unwrap();
        }
    }

    /// Creates an ACTIVE load balancer; returns its id.
    pub async fn lb(&self) -> String {
        let b = self
            .post(
                "/v2/lbaas/loadbalancers",
                json!({"loadbalancer": {"vip_subnet_id": SUBNET, "name": "lb"}}),
            )
            .await
            .expect(201);
        self.settle().await;
        b["loadbalancer"]["id"].as_str().unwrap().to_owned()
    }

    /// Creates an ACTIVE listener (HTTP on `port`); returns its id.
    pub async fn listener(&self, lb: &str, port: u16) -> String {
        let b = self
            .post("/v2/lbaas/listeners", json!({"listener": {"loadbalancer_id": lb, "protocol": "HTTP", "protocol_port": port}}))
            .await
            .expect(201);
        self.settle().await;
        b["listener"]["id"].as_str().unwrap().to_owned()
    }

    /// Creates an ACTIVE HTTP pool on the LB (or as a listener's default pool).
    pub async fn pool(&self, lb: &str, listener: Option<&str>) -> String {
        let mut p = json!({"protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN"});
        match listener {
            Some(l) => p["listener_id"] = json!(l),
            None => p["loadbalancer_id"] = json!(lb),
        }
        let b = self
            .post("/v2/lbaas/pools", json!({ "pool": p }))
            .await
            .expect(201);
        self.settle().await;
        b["pool"]["id"].as_str().unwrap().to_owned()
    }

    pub async fn status_of(&self, path: &str, key: &str) -> String {
        self.get(path).await.expect(200)[key]["provisioning_status"]
            .as_str()
            .unwrap()
            .to_owned()
    }
}
