//! Admin API tests through the whole router (quotas, providers, flavors, flavor profiles,
//! availability zones and their profiles, amphorae) and the auth seams: the router on a temp
//! SQLite store, noauth identities (`X-Project-Id` + `X-Roles`) and Octavia's default policy,
//! driven with `oneshot`. They live in the library's test binary because the crate has one
//! integration binary (`autotests = false`) owned by the v2 API work.

use std::sync::Arc;
use std::time::Duration;

use crate::admin::{QuotaDefaults, StoredQuotas};
use crate::auth::Secret;
use crate::auth::keystone::{KeystoneAuth, KeystoneConfig};
use crate::auth::policy::OctaviaPolicy;
use crate::{AppState, NoAuth};
use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use klb_model::{LbVm, LbVmRole, LbVmStatus};
use klb_store::{Document, Outcome, Store};
use klb_test_support::db::TestDb;
use klb_test_support::fixtures::lb_vm;
use serde_json::{Value, json};
use tower::ServiceExt;

const SUBNET: &str = "8a3a5b41-4f0d-4a1b-9f2f-3a6c4e5d6f70";
const NIL: &str = "00000000-0000-0000-0000-000000000000";

/// Who calls: `Admin` = noauth with the admin role and no project header.
#[derive(Clone, Copy)]
enum Who {
    Admin,
    /// Project, comma-separated roles.
    User(&'static str, &'static str),
}

const ADMIN: Who = Who::Admin;
const MEMBER: Who = Who::User("p1", "member,reader");
const READER: Who = Who::User("p1", "reader");
const OTHER_MEMBER: Who = Who::User("p2", "member");

struct App {
    router: Router,
    state: AppState,
    store: Store,
    /// After `store`, so the store's pools close before the database goes.
    _db: TestDb,
}

struct Resp {
    status: StatusCode,
    body: Value,
}

impl Resp {
    #[track_caller]
    fn expect(self, status: u16) -> Value {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected status, body: {}",
            self.body
        );
        self.body
    }

    /// Asserts an Octavia fault with this status and exactly this faultstring.
    #[track_caller]
    fn fault(self, status: u16, text: &str) {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected status, body: {}",
            self.body
        );
        assert_eq!(self.body["faultstring"], text, "body: {}", self.body);
        assert_eq!(
            self.body["faultcode"],
            if status >= 500 { "Server" } else { "Client" }
        );
        assert_eq!(self.body["debuginfo"], Value::Null);
    }
}

impl App {
    async fn new() -> App {
        let db = TestDb::new().await;
        let store = Store::open(db.url()).await.unwrap();
        let mut state = AppState::new(
            store.clone(),
            Arc::new(NoAuth {
                default_project_id: Some("admin-project".into()),
            }),
        );
        state.policy = Arc::new(OctaviaPolicy::default());
        state.quotas = Arc::new(StoredQuotas::default());
        App {
            router: crate::router(state.clone()),
            state,
            store,
            _db: db,
        }
    }

    async fn call(&self, who: Who, method: &str, path: &str, body: Option<Value>) -> Resp {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", "application/json");
        match who {
            Who::User(project, roles) => {
                req = req.header("x-project-id", project).header("x-roles", roles);
            }
            Who::Admin => req = req.header("x-roles", "admin"),
        }
        let req = req
            .body(
                body.map(|b| Body::from(b.to_string()))
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
            serde_json::from_slice(&bytes).unwrap()
        };
        Resp { status, body }
    }

    async fn get(&self, who: Who, path: &str) -> Resp {
        self.call(who, "GET", path, None).await
    }
    async fn post(&self, who: Who, path: &str, body: Value) -> Resp {
        self.call(who, "POST", path, Some(body)).await
    }
    async fn put(&self, who: Who, path: &str, body: Value) -> Resp {
        self.call(who, "PUT", path, Some(body)).await
    }
    async fn delete(&self, who: Who, path: &str) -> Resp {
        self.call(who, "DELETE", path, None).await
    }

    async fn settle(&self) {
        while let Some(job) = self
            .store
            .claim_job("test", Duration::from_secs(30))
            .await
            .unwrap()
        {
            self.store.settle_job(&job, Outcome::Success).await.unwrap();
        }
    }

    /// An ACTIVE load balancer of project `p1` (created by the admin), with `extra` fields.
    async fn lb(&self, extra: Value) -> String {
        let mut lb = json!({"vip_subnet_id": SUBNET, "project_id": "p1"});
        for (k, v) in extra.as_object().unwrap() {
            lb[k] = v.clone();
        }
        let b = self
            .post(
                ADMIN,
                "/v2/lbaas/loadbalancers",
                json!({ "loadbalancer": lb }),
            )
            .await
            .expect(201);
        self.settle().await;
        b["loadbalancer"]["id"].as_str().unwrap().to_owned()
    }

    async fn flavor_profile(&self, data: &str) -> String {
        let b = self
            .post(ADMIN, "/v2/lbaas/flavorprofiles", json!({"flavorprofile": {"name": "fp", "provider_name": "klb", "flavor_data": data}}))
            .await
            .expect(201);
        b["flavorprofile"]["id"].as_str().unwrap().to_owned()
    }

    async fn az_profile(&self) -> String {
        let b = self
            .post(
                ADMIN,
                "/v2/lbaas/availabilityzoneprofiles",
                json!({"availability_zone_profile": {"name": "azp", "provider_name": "klb", "availability_zone_data": "{\"compute_zone\": \"nova\"}"}}),
            )
            .await
            .expect(201);
        b["availability_zone_profile"]["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    async fn insert_vm(&self, lb: Option<&str>, status: LbVmStatus) -> String {
        let vm = LbVm {
            compute_id: Some("server-1".into()),
            lb_network_ip: Some("198.18.10.5".parse().unwrap()),
            role: Some(LbVmRole::Standalone),
            cached_zone: Some("nova".into()),
            image_id: Some("img".into()),
            compute_flavor: Some("m1.lb".into()),
            ..lb_vm(lb.map(|l| l.parse().unwrap()), status)
        };
        let mut tx = self.store.begin().await.unwrap();
        tx.insert_resource(&vm).await.unwrap();
        tx.commit().await.unwrap();
        vm.id.to_string()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_crud_defaults_and_aliases() {
    let app = App::new().await;
    let empty = app.get(ADMIN, "/v2/lbaas/quotas").await.expect(200);
    assert_eq!(empty, json!({"quotas": [], "quotas_links": []}));

    let q = app.get(ADMIN, "/v2/lbaas/quotas/p1").await.expect(200);
    assert_eq!(
        q,
        json!({"quota": {"project_id": "p1", "loadbalancer": -1, "load_balancer": -1, "listener": -1, "member": -1,
            "pool": -1, "healthmonitor": -1, "health_monitor": -1, "l7policy": -1, "l7rule": -1}})
    );

    let put = app
        .put(
            ADMIN,
            "/v2/lbaas/quotas/p1",
            json!({"quota": {"loadbalancer": 2, "health_monitor": 5, "l7rule": 0}}),
        )
        .await
        .expect(202);
    assert_eq!(put["quota"]["loadbalancer"], 2);
    assert_eq!(put["quota"]["load_balancer"], 2);
    assert_eq!(put["quota"]["healthmonitor"], 5);
    assert_eq!(put["quota"]["health_monitor"], 5);
    assert_eq!(put["quota"]["l7rule"], 0);
    assert_eq!(put["quota"]["pool"], -1);

    // A second PUT changes only what it names; the deprecated alias works alone.
    let put = app
        .put(
            ADMIN,
            "/v2.0/quotas/p1",
            json!({"quota": {"load_balancer": 3}}),
        )
        .await
        .expect(202);
    assert_eq!(put["quota"]["loadbalancer"], 3);
    assert_eq!(put["quota"]["healthmonitor"], 5);

    let list = app.get(ADMIN, "/v2/quotas").await.expect(200);
    assert_eq!(list["quotas"].as_array().unwrap().len(), 1);
    assert_eq!(list["quotas"][0]["project_id"], "p1");
    assert_eq!(list["quotas"][0]["loadbalancer"], 3);
    assert_eq!(list["quotas"][0]["member"], -1);
    let fields = app
        .get(ADMIN, "/v2/quotas?fields=project_id&fields=pool")
        .await
        .expect(200);
    assert_eq!(fields["quotas"][0], json!({"project_id": "p1", "pool": -1}));
    // Only the deprecated spelling selected: it still shows the stored value, not the default.
    let fields = app
        .get(
            ADMIN,
            "/v2/quotas?fields=project_id&fields=pool&fields=load_balancer",
        )
        .await
        .expect(200);
    assert_eq!(
        fields["quotas"][0],
        json!({"project_id": "p1", "pool": -1, "load_balancer": 3})
    );

    let d = app
        .get(ADMIN, "/v2/lbaas/quotas/p1/default")
        .await
        .expect(200);
    assert_eq!(d["quota"]["loadbalancer"], -1);
    assert_eq!(d["quota"]["project_id"], "p1");
    let d = app
        .get(ADMIN, "/v2/lbaas/quotas/defaults")
        .await
        .expect(200);
    assert_eq!(d["quota"]["loadbalancer"], -1);

    app.put(ADMIN, "/v2/quotas/p1", json!({"quota": {"pool": -2}})).await.fault(
        400,
        "Invalid input for field/attribute pool. Value: '-2'. Value should be greater or equal to -1",
    );
    app.put(ADMIN, "/v2/quotas/p1", json!({"quota": {"pool": 2000000001i64}})).await.fault(
        400,
        "Invalid input for field/attribute pool. Value: '2000000001'. Value should be lower or equal to 2000000000",
    );
    app.put(ADMIN, "/v2/quotas/p1", json!({"quota": {"pools": 1}}))
        .await
        .fault(400, "Unknown attribute for argument quotas: pools");
    app.put(
        ADMIN,
        &format!("/v2/quotas/{}", "x".repeat(37)),
        json!({"quota": {"pool": 1}}),
    )
    .await
    .expect(400);

    assert_eq!(
        app.delete(ADMIN, "/v2/lbaas/quotas/p1").await.expect(202),
        Value::Null
    );
    assert_eq!(
        app.get(ADMIN, "/v2/quotas").await.expect(200)["quotas"],
        json!([])
    );
    assert_eq!(
        app.get(ADMIN, "/v2/quotas/p1").await.expect(200)["quota"]["loadbalancer"],
        -1
    );
    // Resetting twice is fine.
    app.delete(ADMIN, "/v2/lbaas/quotas/p1").await.expect(202);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_policy() {
    let app = App::new().await;
    app.put(ADMIN, "/v2/quotas/p2", json!({"quota": {"pool": 1}}))
        .await
        .expect(202);
    app.get(MEMBER, "/v2/quotas/p1").await.expect(200);
    app.get(READER, "/v2/quotas/p1").await.expect(200);
    app.get(MEMBER, "/v2/quotas/p2")
        .await
        .fault(403, "Policy does not allow this request to be performed.");
    app.put(MEMBER, "/v2/quotas/p1", json!({"quota": {"pool": 100}}))
        .await
        .fault(403, "Policy does not allow this request to be performed.");
    app.delete(MEMBER, "/v2/quotas/p2").await.expect(403);
    // A member lists its own project only; asking for another project is refused.
    assert_eq!(
        app.get(MEMBER, "/v2/quotas").await.expect(200)["quotas"],
        json!([])
    );
    app.get(MEMBER, "/v2/quotas?project_id=p2")
        .await
        .expect(403);
    assert_eq!(
        app.get(OTHER_MEMBER, "/v2/quotas").await.expect(200)["quotas"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // Octavia's deprecated quota-admin role manages every project's quotas.
    let quota_admin = Who::User("p9", "load-balancer_quota_admin");
    app.put(quota_admin, "/v2/quotas/p1", json!({"quota": {"pool": 7}}))
        .await
        .expect(202);
    assert_eq!(
        app.get(quota_admin, "/v2/quotas").await.expect(200)["quotas"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    app.get(quota_admin, "/v2/lbaas/loadbalancers")
        .await
        .expect(403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_enforcement_through_the_create_handlers() {
    let app = App::new().await;
    let lbs = "/v2/lbaas/loadbalancers";
    let new_lb = json!({"loadbalancer": {"vip_subnet_id": SUBNET}});
    app.put(
        ADMIN,
        "/v2/quotas/p1",
        json!({"quota": {"loadbalancer": 1, "listener": 0}}),
    )
    .await
    .expect(202);
    let lb = app.post(MEMBER, lbs, new_lb.clone()).await.expect(201)["loadbalancer"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.settle().await;
    app.post(MEMBER, lbs, new_lb.clone())
        .await
        .fault(403, "Quota has been met for resources: Load Balancer");
    // Zero means none.
    app.post(
        MEMBER,
        "/v2/lbaas/listeners",
        json!({"listener": {"loadbalancer_id": lb, "protocol": "HTTP", "protocol_port": 80}}),
    )
    .await
    .fault(403, "Quota has been met for resources: Listener");
    // Other projects and other kinds are not limited.
    app.post(OTHER_MEMBER, lbs, new_lb.clone())
        .await
        .expect(201);
    app.post(
        MEMBER,
        "/v2/lbaas/pools",
        json!({"pool": {"loadbalancer_id": lb, "protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN"}}),
    )
    .await
    .expect(201);
    app.settle().await;
    // Raising the quota lets the next one in; resetting goes back to unlimited defaults.
    app.put(
        ADMIN,
        "/v2/quotas/p1",
        json!({"quota": {"loadbalancer": 2}}),
    )
    .await
    .expect(202);
    app.post(MEMBER, lbs, new_lb.clone()).await.expect(201);
    app.settle().await;
    app.post(MEMBER, lbs, new_lb.clone()).await.expect(403);
    app.delete(ADMIN, "/v2/quotas/p1").await.expect(202);
    app.post(MEMBER, lbs, new_lb).await.expect(201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_defaults_are_shown_and_enforced() {
    let mut app = App::new().await;
    let defaults = QuotaDefaults {
        loadbalancer: 0,
        pool: 3,
        ..QuotaDefaults::default()
    };
    app.state.quotas = Arc::new(StoredQuotas { defaults });
    app.router = crate::router(app.state.clone());
    let q = app.get(ADMIN, "/v2/quotas/p7").await.expect(200);
    assert_eq!(
        (
            q["quota"]["loadbalancer"].as_i64(),
            q["quota"]["pool"].as_i64(),
            q["quota"]["member"].as_i64()
        ),
        (Some(0), Some(3), Some(-1))
    );
    let d = app.get(ADMIN, "/v2/quotas/p7/default").await.expect(200);
    assert_eq!(d["quota"]["pool"], 3);
    app.post(
        Who::User("p7", "member"),
        "/v2/lbaas/loadbalancers",
        json!({"loadbalancer": {"vip_subnet_id": SUBNET}}),
    )
    .await
    .fault(403, "Quota has been met for resources: Load Balancer");
    // A project's own value overrides the default.
    app.put(
        ADMIN,
        "/v2/quotas/p7",
        json!({"quota": {"loadbalancer": -1}}),
    )
    .await
    .expect(202);
    app.post(
        Who::User("p7", "member"),
        "/v2/lbaas/loadbalancers",
        json!({"loadbalancer": {"vip_subnet_id": SUBNET}}),
    )
    .await
    .expect(201);
    let q = app.get(ADMIN, "/v2/quotas/p7").await.expect(200);
    assert_eq!(
        (
            q["quota"]["loadbalancer"].as_i64(),
            q["quota"]["pool"].as_i64()
        ),
        (Some(-1), Some(3))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn providers_and_capabilities() {
    let app = App::new().await;
    let list = app.get(READER, "/v2/lbaas/providers").await.expect(200);
    let names: Vec<&str> = list["providers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["klb", "amphora", "octavia"]);
    assert!(list.get("providers_links").is_none());
    assert!(
        list["providers"][0]["description"]
            .as_str()
            .unwrap()
            .contains("klb")
    );
    let f = app
        .get(READER, "/v2/lbaas/providers?fields=name")
        .await
        .expect(200);
    assert_eq!(f["providers"][0], json!({"name": "klb"}));
    app.get(Who::User("p1", ""), "/v2/lbaas/providers")
        .await
        .expect(403);

    let caps = app
        .get(ADMIN, "/v2/lbaas/providers/klb/flavor_capabilities")
        .await
        .expect(200);
    let names: Vec<&str> = caps["flavor_capabilities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"loadbalancer_topology") && names.contains(&"compute_flavor"),
        "{names:?}"
    );
    let one = app
        .get(
            ADMIN,
            "/v2/lbaas/providers/amphora/flavor_capabilities?name=compute_flavor",
        )
        .await
        .expect(200);
    assert_eq!(one["flavor_capabilities"].as_array().unwrap().len(), 1);
    let az = app
        .get(
            ADMIN,
            "/v2/providers/klb/availability_zone_capabilities?fields=name",
        )
        .await
        .expect(200);
    assert!(
        az["availability_zone_capabilities"]
            .as_array()
            .unwrap()
            .contains(&json!({"name": "compute_zone"}))
    );
    app.get(ADMIN, "/v2/lbaas/providers/bogus/flavor_capabilities")
        .await
        .fault(400, "Provider 'bogus' is not enabled.");
    app.get(MEMBER, "/v2/lbaas/providers/klb/flavor_capabilities")
        .await
        .expect(403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flavor_profiles() {
    let app = App::new().await;
    let path = "/v2/lbaas/flavorprofiles";
    let b = app
        .post(ADMIN, path, json!({"flavorprofile": {"name": "small", "provider_name": "klb", "flavor_data": "{\"compute_flavor\": \"m1.small\"}"}}))
        .await
        .expect(201);
    let fp = &b["flavorprofile"];
    let id = fp["id"].as_str().unwrap().to_owned();
    assert_eq!(fp["name"], "small");
    assert_eq!(fp["provider_name"], "klb");
    assert_eq!(fp["flavor_data"], "{\"compute_flavor\": \"m1.small\"}");
    assert_eq!(fp.as_object().unwrap().len(), 4);

    app.post(
        ADMIN,
        path,
        json!({"flavorprofile": {"name": "x", "provider_name": "klb", "flavor_data": "{not json"}}),
    )
    .await
    .fault(400, "{not json is not a valid option for flavor_data");
    app.post(
        ADMIN,
        path,
        json!({"flavorprofile": {"name": "x", "provider_name": "noop", "flavor_data": "{}"}}),
    )
    .await
    .fault(400, "Provider 'noop' is not enabled.");
    app.post(ADMIN, path, json!({"flavorprofile": {"name": "x", "provider_name": "klb", "flavor_data": "{\"bogus\": 1}"}}))
        .await
        .fault(501, "Provider 'klb' does not support a requested option: Additional properties are not allowed ('bogus' was unexpected)");
    app.post(
        ADMIN,
        path,
        json!({"flavorprofile": {"name": "x", "provider_name": "klb"}}),
    )
    .await
    .fault(
        400,
        "Invalid input for field/attribute flavor_data. Value: 'None'. Mandatory field missing.",
    );
    app.post(ADMIN, path, json!({"flavorprofile": {"name": "x", "provider_name": "klb", "flavor_data": "{}", "id": "y"}}))
        .await
        .fault(400, "Unknown attribute for argument flavor_profile_: id");
    app.post(
        MEMBER,
        path,
        json!({"flavorprofile": {"name": "x", "provider_name": "klb", "flavor_data": "{}"}}),
    )
    .await
    .expect(403);

    let list = app.get(ADMIN, path).await.expect(200);
    assert_eq!(list["flavorprofiles"].as_array().unwrap().len(), 1);
    assert_eq!(list["flavorprofile_links"], json!([]));
    app.get(MEMBER, path).await.expect(403);
    app.get(ADMIN, &format!("{path}/{NIL}"))
        .await
        .fault(404, &format!("Flavor profile {NIL} not found."));
    let missing = uuid::Uuid::new_v4();
    app.get(ADMIN, &format!("{path}/{missing}"))
        .await
        .fault(404, &format!("Flavor Profile {missing} not found."));
    let one = app
        .get(ADMIN, &format!("{path}/{id}?fields=name"))
        .await
        .expect(200);
    assert_eq!(one, json!({"flavorprofile": {"name": "small"}}));

    let upd = app
        .put(
            ADMIN,
            &format!("{path}/{id}"),
            json!({"flavorprofile": {"name": "medium", "flavor_data": "{\"lb_vm_count\": 3}"}}),
        )
        .await
        .expect(200);
    assert_eq!(upd["flavorprofile"]["name"], "medium");
    assert_eq!(upd["flavorprofile"]["flavor_data"], "{\"lb_vm_count\": 3}");
    app.put(
        ADMIN,
        &format!("{path}/{id}"),
        json!({"flavorprofile": {"name": null}}),
    )
    .await
    .fault(400, "None is not a valid option for name");
    app.put(
        ADMIN,
        &format!("{path}/{id}"),
        json!({"flavorprofile": {"flavor_data": "{\"lb_vm_count\": 99}"}}),
    )
    .await
    .expect(501);
    app.put(
        ADMIN,
        &format!("{path}/{NIL}"),
        json!({"flavorprofile": {"name": "n"}}),
    )
    .await
    .fault(404, &format!("Flavor profile {NIL} not found."));

    app.delete(ADMIN, &format!("{path}/{id}")).await.expect(204);
    app.delete(ADMIN, &format!("{path}/{id}"))
        .await
        .fault(404, &format!("Flavor profile {id} not found."));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flavors_and_in_use_rules() {
    let app = App::new().await;
    let fp = app
        .flavor_profile("{\"loadbalancer_topology\": \"ACTIVE_STANDBY\"}")
        .await;
    let path = "/v2/lbaas/flavors";
    let b = app
        .post(
            ADMIN,
            path,
            json!({"flavor": {"name": "gold", "flavor_profile_id": fp}}),
        )
        .await
        .expect(201);
    let id = b["flavor"]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        b["flavor"],
        json!({"id": id, "name": "gold", "description": null, "enabled": true, "flavor_profile_id": fp})
    );

    app.post(
        ADMIN,
        path,
        json!({"flavor": {"name": "gold", "flavor_profile_id": fp}}),
    )
    .await
    .fault(409, "A flavor of gold already exists.");
    app.post(ADMIN, path, json!({"flavor": {"flavor_profile_id": fp}}))
        .await
        .fault(
            400,
            "Invalid input for field/attribute name. Value: 'None'. Mandatory field missing.",
        );
    app.post(ADMIN, path, json!({"flavor": {"name": "x", "flavor_profile_id": "bogus"}}))
        .await
        .fault(400, "Invalid input for field/attribute flavor_profile_id. Value: 'bogus'. Value should be UUID format");
    let missing = uuid::Uuid::new_v4();
    app.post(
        ADMIN,
        path,
        json!({"flavor": {"name": "x", "flavor_profile_id": missing}}),
    )
    .await
    .fault(400, &format!("Flavor profile {missing} not found."));
    app.post(
        ADMIN,
        path,
        json!({"flavor": {"name": "n".repeat(256), "flavor_profile_id": fp}}),
    )
    .await
    .expect(400);
    app.post(
        MEMBER,
        path,
        json!({"flavor": {"name": "x", "flavor_profile_id": fp}}),
    )
    .await
    .expect(403);

    // Any project reader sees flavors.
    assert_eq!(
        app.get(READER, path).await.expect(200)["flavors"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        app.get(READER, &format!("{path}/{id}")).await.expect(200)["flavor"]["name"],
        "gold"
    );
    app.get(ADMIN, &format!("{path}/{NIL}"))
        .await
        .fault(404, &format!("Flavor {NIL} not found."));
    app.get(ADMIN, &format!("{path}/bogus_id"))
        .await
        .fault(404, "Flavor bogus_id not found.");

    let upd = app
        .put(
            ADMIN,
            &format!("{path}/{id}"),
            json!({"flavor": {"description": "best", "enabled": false}}),
        )
        .await
        .expect(200);
    assert_eq!(upd["flavor"]["description"], "best");
    assert_eq!(upd["flavor"]["enabled"], false);
    assert_eq!(upd["flavor"]["name"], "gold");
    app.put(
        ADMIN,
        &format!("{path}/{id}"),
        json!({"flavor": {"flavor_profile_id": fp}}),
    )
    .await
    .fault(
        400,
        "Unknown attribute for argument flavor_: flavor_profile_id",
    );
    app.put(
        MEMBER,
        &format!("{path}/{id}"),
        json!({"flavor": {"name": "mine"}}),
    )
    .await
    .expect(403);
    app.put(
        ADMIN,
        &format!("{path}/{id}"),
        json!({"flavor": {"enabled": true}}),
    )
    .await
    .expect(200);

    // The profile is in use: its data and provider are frozen, its name is not.
    let fp_path = format!("/v2/lbaas/flavorprofiles/{fp}");
    app.put(
        ADMIN,
        &fp_path,
        json!({"flavorprofile": {"flavor_data": "{}"}}),
    )
    .await
    .fault(
        409,
        &format!("Flavor profile {fp} is in use and cannot be modified."),
    );
    app.put(
        ADMIN,
        &fp_path,
        json!({"flavorprofile": {"name": "renamed"}}),
    )
    .await
    .expect(200);
    app.delete(ADMIN, &fp_path).await.fault(
        409,
        &format!("Flavor profile {fp} is in use and cannot be modified."),
    );

    // A load balancer uses the flavor: it cannot be deleted.
    let lb = app.lb(json!({"flavor_id": id})).await;
    app.delete(ADMIN, &format!("{path}/{id}")).await.fault(
        409,
        &format!("Flavor {id} is in use and cannot be modified."),
    );
    app.delete(ADMIN, &format!("/v2/lbaas/loadbalancers/{lb}"))
        .await
        .expect(204);
    app.settle().await;
    app.delete(ADMIN, &format!("{path}/{id}")).await.expect(204);
    app.get(ADMIN, &format!("{path}/{id}"))
        .await
        .fault(404, &format!("Flavor {id} not found."));
    app.delete(ADMIN, &fp_path).await.expect(204);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn availability_zones_and_profiles() {
    let app = App::new().await;
    let azp = app.az_profile().await;
    let azp_path = "/v2/lbaas/availabilityzoneprofiles";
    let list = app.get(ADMIN, azp_path).await.expect(200);
    assert_eq!(
        list["availability_zone_profiles"][0]["availability_zone_data"],
        "{\"compute_zone\": \"nova\"}"
    );
    assert_eq!(list["availability_zone_profile_links"], json!([]));
    app.post(ADMIN, azp_path, json!({"availability_zone_profile": {"name": "x", "provider_name": "klb", "availability_zone_data": "nope"}}))
        .await
        .fault(400, "nope is not a valid option for availability_zone_data");
    app.get(ADMIN, &format!("{azp_path}/{NIL}"))
        .await
        .fault(404, &format!("Availability Zone Profile {NIL} not found."));
    app.get(READER, azp_path).await.expect(403);

    let path = "/v2/lbaas/availabilityzones";
    let b = app.post(ADMIN, path, json!({"availability_zone": {"name": "az1", "description": "first", "availability_zone_profile_id": azp}})).await.expect(201);
    assert_eq!(
        b["availability_zone"],
        json!({"name": "az1", "description": "first", "enabled": true, "availability_zone_profile_id": azp})
    );
    app.post(
        ADMIN,
        path,
        json!({"availability_zone": {"name": "az1", "availability_zone_profile_id": azp}}),
    )
    .await
    .fault(409, "A availability zone of az1 already exists.");
    app.post(ADMIN, path, json!({"availability_zone": {"name": "az2"}}))
        .await
        .fault(400, "Invalid input for field/attribute availability_zone_profile_id. Value: 'None'. Mandatory field missing.");
    app.post(
        MEMBER,
        path,
        json!({"availability_zone": {"name": "az2", "availability_zone_profile_id": azp}}),
    )
    .await
    .expect(403);

    assert_eq!(
        app.get(READER, &format!("{path}/az1")).await.expect(200)["availability_zone"]["description"],
        "first"
    );
    app.get(READER, &format!("{path}/az9"))
        .await
        .fault(404, "Availability Zone az9 not found.");
    let all = app.get(READER, path).await.expect(200);
    assert_eq!(all["availability_zones"].as_array().unwrap().len(), 1);
    assert_eq!(all["availability_zones_links"], json!([]));

    let upd = app
        .put(
            ADMIN,
            &format!("{path}/az1"),
            json!({"availability_zone": {"description": null, "enabled": false}}),
        )
        .await
        .expect(200);
    assert_eq!(upd["availability_zone"]["description"], Value::Null);
    assert_eq!(upd["availability_zone"]["enabled"], false);
    app.put(
        ADMIN,
        &format!("{path}/az1"),
        json!({"availability_zone": {"name": "az3"}}),
    )
    .await
    .fault(
        400,
        "Unknown attribute for argument availability_zone_: name",
    );
    app.put(
        ADMIN,
        &format!("{path}/az1"),
        json!({"availability_zone": {"enabled": true}}),
    )
    .await
    .expect(200);

    app.put(
        ADMIN,
        &format!("{azp_path}/{azp}"),
        json!({"availability_zone_profile": {"provider_name": "amphora"}}),
    )
    .await
    .fault(
        409,
        &format!("Availability Zone Profile {azp} is in use and cannot be modified."),
    );

    let lb = app.lb(json!({"availability_zone": "az1"})).await;
    app.delete(ADMIN, &format!("{path}/az1")).await.fault(
        409,
        "Availability Zone az1 is in use and cannot be modified.",
    );
    app.delete(ADMIN, &format!("/v2/lbaas/loadbalancers/{lb}"))
        .await
        .expect(204);
    app.settle().await;
    app.delete(ADMIN, &format!("{path}/az1")).await.expect(204);
    app.delete(ADMIN, &format!("{path}/az1"))
        .await
        .fault(404, "Availability Zone az1 not found.");
    app.delete(ADMIN, &format!("{azp_path}/{azp}"))
        .await
        .expect(204);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amphorae_are_the_lb_vms() {
    let app = App::new().await;
    let lb = app.lb(json!({})).await;
    let listener = app
        .post(
            ADMIN,
            "/v2/lbaas/listeners",
            json!({"listener": {"loadbalancer_id": lb, "protocol": "HTTP", "protocol_port": 80}}),
        )
        .await
        .expect(201)["listener"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.settle().await;
    let vm1 = app.insert_vm(Some(&lb), LbVmStatus::Allocated).await;
    let vm2 = app.insert_vm(Some(&lb), LbVmStatus::Error).await;
    let spare = app.insert_vm(None, LbVmStatus::Ready).await;
    let gone = app.insert_vm(Some(&lb), LbVmStatus::Deleted).await;

    let list = app.get(ADMIN, "/v2/octavia/amphorae").await.expect(200);
    let ids: Vec<&str> = list["amphorae"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [vm1.as_str(), vm2.as_str(), spare.as_str()]);
    assert_eq!(list["amphorae_links"], json!([]));
    let a = &list["amphorae"][0];
    assert_eq!(a["loadbalancer_id"], lb.as_str());
    assert_eq!(a["status"], "ALLOCATED");
    assert_eq!(a["role"], "STANDALONE");
    assert_eq!(a["lb_network_ip"], "198.18.10.5");
    assert_eq!(a["compute_flavor"], "m1.lb");
    assert_eq!(a["cert_busy"], false);
    assert_eq!(a.as_object().unwrap().len(), 20);
    let by_lb = app
        .get(
            ADMIN,
            &format!("/v2.0/octavia/amphorae?loadbalancer_id={lb}"),
        )
        .await
        .expect(200);
    assert_eq!(by_lb["amphorae"].as_array().unwrap().len(), 2);
    let errored = app
        .get(ADMIN, "/v2/octavia/amphorae?status=ERROR")
        .await
        .expect(200);
    assert_eq!(errored["amphorae"].as_array().unwrap().len(), 1);

    app.get(MEMBER, "/v2/octavia/amphorae")
        .await
        .fault(403, "Policy does not allow this request to be performed.");
    assert_eq!(
        app.get(ADMIN, &format!("/v2/octavia/amphorae/{vm1}?fields=status"))
            .await
            .expect(200),
        json!({"amphora": {"status": "ALLOCATED"}})
    );
    app.get(ADMIN, &format!("/v2/octavia/amphorae/{gone}"))
        .await
        .fault(404, &format!("Amphora {gone} not found."));
    app.get(ADMIN, "/v2/octavia/amphorae/nope")
        .await
        .fault(404, "Amphora nope not found.");
    app.get(MEMBER, &format!("/v2/octavia/amphorae/{vm1}"))
        .await
        .expect(403);

    let stats = app
        .get(ADMIN, &format!("/v2/octavia/amphorae/{vm1}/stats"))
        .await
        .expect(200);
    assert_eq!(
        stats,
        json!({"amphora_stats": [{"id": vm1, "loadbalancer_id": lb, "listener_id": listener, "active_connections": 0,
            "bytes_in": 0, "bytes_out": 0, "request_errors": 0, "total_connections": 0}]})
    );
    app.get(ADMIN, &format!("/v2/octavia/amphorae/{spare}/stats"))
        .await
        .fault(404, &format!("Amphora stats for {spare} not found."));
    // Once the health manager stored per-VM counters, each amphora shows its own share.
    let mut tx = app.store.begin().await.unwrap();
    // Written as the health manager writes it: through the one stats type.
    let mut body = klb_model::LbStats::default();
    let share = klb_model::stats::Counters {
        total_connections: 7,
        bytes_in: 70,
        bytes_out: 700,
        active_connections: 1,
        ..Default::default()
    };
    body.add(&vm1.to_string(), &listener.to_string(), &share);
    tx.insert(&Document::new(
        klb_store::STATS_KIND,
        &lb.to_string(),
        None,
        serde_json::to_string(&body).unwrap(),
    ))
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let stats = app
        .get(ADMIN, &format!("/v2/octavia/amphorae/{vm1}/stats"))
        .await
        .expect(200);
    assert_eq!(stats["amphora_stats"][0]["total_connections"], 7);
    assert_eq!(stats["amphora_stats"][0]["bytes_out"], 700);
    assert_eq!(stats["amphora_stats"][0]["active_connections"], 1);

    // Failover locks the load balancer and hands a job to the flow engine.
    assert_eq!(
        app.put(
            ADMIN,
            &format!("/v2/octavia/amphorae/{vm1}/failover"),
            json!(null)
        )
        .await
        .expect(202),
        Value::Null
    );
    let lb_now = app
        .get(ADMIN, &format!("/v2/lbaas/loadbalancers/{lb}"))
        .await
        .expect(200);
    assert_eq!(
        lb_now["loadbalancer"]["provisioning_status"],
        "PENDING_UPDATE"
    );
    let jobs = app.store.jobs_of(&lb).await.unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(
        (jobs[0].op, jobs[0].target_kind, jobs[0].target_id.as_str()),
        (
            klb_store::JobOp::Failover,
            klb_model::Kind::LbVm,
            vm1.as_str()
        )
    );
    app.put(
        ADMIN,
        &format!("/v2/octavia/amphorae/{vm2}/failover"),
        json!(null),
    )
    .await
    .fault(
        409,
        &format!("Load Balancer {lb} is immutable and cannot be updated."),
    );
    app.settle().await;
    assert_eq!(
        app.get(ADMIN, &format!("/v2/lbaas/loadbalancers/{lb}"))
            .await
            .expect(200)["loadbalancer"]["provisioning_status"],
        "ACTIVE"
    );
    app.put(
        ADMIN,
        &format!("/v2/octavia/amphorae/{spare}/failover"),
        json!(null),
    )
    .await
    .fault(
        409,
        &format!("amphora {spare} is immutable and cannot be updated."),
    );
    app.put(
        MEMBER,
        &format!("/v2/octavia/amphorae/{vm1}/failover"),
        json!(null),
    )
    .await
    .expect(403);

    // Config push: a job, no status change.
    app.put(
        ADMIN,
        &format!("/v2/octavia/amphorae/{vm1}/config"),
        json!(null),
    )
    .await
    .expect(202);
    let jobs = app.store.jobs_of(&lb).await.unwrap();
    assert_eq!(
        (jobs[0].op, jobs[0].target_id.as_str()),
        (klb_store::JobOp::Update, vm1.as_str())
    );
    assert_eq!(
        app.get(ADMIN, &format!("/v2/lbaas/loadbalancers/{lb}"))
            .await
            .expect(200)["loadbalancer"]["provisioning_status"],
        "ACTIVE"
    );
    app.settle().await;

    // Delete: only an ERROR VM.
    app.delete(ADMIN, &format!("/v2/octavia/amphorae/{vm1}"))
        .await
        .fault(
            409,
            &format!("amphora {vm1} is immutable and cannot be updated."),
        );
    app.delete(MEMBER, &format!("/v2/octavia/amphorae/{vm2}"))
        .await
        .expect(403);
    app.delete(ADMIN, &format!("/v2/octavia/amphorae/{vm2}"))
        .await
        .expect(204);
    assert_eq!(
        app.get(ADMIN, &format!("/v2/octavia/amphorae/{vm2}"))
            .await
            .expect(200)["amphora"]["status"],
        "PENDING_DELETE"
    );
    let jobs = app.store.jobs_of(&lb).await.unwrap();
    assert_eq!(
        (jobs[0].op, jobs[0].target_id.as_str()),
        (klb_store::JobOp::Delete, vm2.as_str())
    );
    app.delete(ADMIN, &format!("/v2/octavia/amphorae/{gone}"))
        .await
        .fault(404, &format!("Amphora {gone} not found."));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn octavia_policy_through_the_router() {
    let app = App::new().await;
    let lb = app.lb(json!({})).await;
    // Project p1: its reader reads, its member writes, another project gets 403 (not 404).
    app.get(READER, &format!("/v2/lbaas/loadbalancers/{lb}"))
        .await
        .expect(200);
    app.put(
        READER,
        &format!("/v2/lbaas/loadbalancers/{lb}"),
        json!({"loadbalancer": {"name": "x"}}),
    )
    .await
    .expect(403);
    app.put(
        MEMBER,
        &format!("/v2/lbaas/loadbalancers/{lb}"),
        json!({"loadbalancer": {"name": "x"}}),
    )
    .await
    .expect(200);
    app.settle().await;
    app.get(OTHER_MEMBER, &format!("/v2/lbaas/loadbalancers/{lb}"))
        .await
        .fault(403, "Policy does not allow this request to be performed.");
    // Failover is admin only.
    app.put(
        MEMBER,
        &format!("/v2/lbaas/loadbalancers/{lb}/failover"),
        json!(null),
    )
    .await
    .expect(403);
    // A caller without any load-balancer role sees nothing.
    app.get(Who::User("p1", "viewer"), "/v2/lbaas/loadbalancers")
        .await
        .expect(403);
    assert_eq!(
        app.get(MEMBER, "/v2/lbaas/loadbalancers").await.expect(200)["loadbalancers"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        app.get(OTHER_MEMBER, "/v2/lbaas/loadbalancers")
            .await
            .expect(200)["loadbalancers"],
        json!([])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keystone_authenticator_answers_401_or_503_through_the_router() {
    let db = TestDb::sqlite();
    let store = Store::open(db.url()).await.unwrap();
    // Nothing listens on port 9 of loopback: a token reaches the (failing) validation.
    let mut cfg = KeystoneConfig::new(
        "http://127.0.0.1:9/v2.0",
        "klb",
        Secret::new("pw"),
        "service",
    );
    cfg.request_timeout = Duration::from_secs(2);
    let auth = KeystoneAuth::new(cfg).unwrap();
    assert_eq!(auth.endpoint(), "http://127.0.0.1:9/v3");
    let mut state = AppState::new(store, Arc::new(auth));
    state.policy = Arc::new(OctaviaPolicy::default());
    let router = crate::router(state);
    let call = |token: Option<&'static str>| {
        let router = router.clone();
        async move {
            let mut req = Request::builder().uri("/v2/lbaas/loadbalancers");
            if let Some(t) = token {
                req = req.header("x-auth-token", t);
            }
            let resp = router
                .oneshot(req.body(Body::empty()).unwrap())
                .await
                .unwrap();
            let status = resp.status();
            let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
                .await
                .unwrap();
            Resp {
                status,
                body: serde_json::from_slice(&bytes).unwrap(),
            }
        }
    };
    call(None)
        .await
        .fault(401, "The request you have made requires authentication.");
    let r = call(Some("some-user-token")).await;
    assert!(!r.body.to_string().contains("some-user-token"));
    r.fault(503, "The Keystone service is temporarily unavailable.");
}
