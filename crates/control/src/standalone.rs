//! The few Neutron and Keystone reads that tenants' CLIs make on klb's own endpoint when it is
//! used alone (`openstack --os-auth-type none --os-endpoint URL loadbalancer ...`): the CLI
//! resolves `--vip-subnet-id` through `GET URL/v2.0/subnets...` and a quota's project through
//! `GET URL/projects/...`. With the noop provider any well-formed id exists (like Octavia's
//! noop network driver); with the local cloud only its stable networks and subnets do.

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use klb_local::AddressPlan;
use klb_local::plan;
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

/// Which networks exist.
#[derive(Debug, Clone)]
pub enum Networks {
    /// Any UUID names a subnet/network (noop provider).
    Any,
    /// The local cloud's stable networks.
    Local(Box<AddressPlan>),
}

#[derive(Debug, Clone, Copy)]
struct Net {
    network_id: Uuid,
    subnet_id: Uuid,
    name: &'static str,
}

const LOCAL: [Net; 2] = [
    Net {
        network_id: plan::VIP_NETWORK_ID,
        subnet_id: plan::VIP_SUBNET_ID,
        name: "klb-vip",
    },
    Net {
        network_id: plan::MEMBER_NETWORK_ID,
        subnet_id: plan::MEMBER_SUBNET_ID,
        name: "klb-member",
    },
];

impl Networks {
    fn subnet(&self, id: Uuid) -> Option<Value> {
        match self {
            Networks::Any => Some(subnet_json(
                id,
                Uuid::from_u128(id.as_u128() ^ 1),
                "",
                "198.18.0.0/15",
            )),
            Networks::Local(p) => LOCAL
                .iter()
                .find(|n| n.subnet_id == id)
                .map(|n| local_subnet(p, n)),
        }
    }

    fn network(&self, id: Uuid) -> Option<Value> {
        match self {
            Networks::Any => Some(network_json(id, Uuid::from_u128(id.as_u128() ^ 1), "")),
            Networks::Local(_) => LOCAL
                .iter()
                .find(|n| n.network_id == id)
                .map(|n| network_json(n.network_id, n.subnet_id, n.name)),
        }
    }

    fn subnets_named(&self, name: &str) -> Vec<Value> {
        match self {
            Networks::Any => Vec::new(),
            Networks::Local(p) => LOCAL
                .iter()
                .filter(|n| format!("{}-subnet", n.name) == name)
                .map(|n| local_subnet(p, n))
                .collect(),
        }
    }

    fn networks_named(&self, name: &str) -> Vec<Value> {
        match self {
            Networks::Any => Vec::new(),
            Networks::Local(_) => LOCAL
                .iter()
                .filter(|n| format!("{}-net", n.name) == name)
                .map(|n| network_json(n.network_id, n.subnet_id, n.name))
                .collect(),
        }
    }
}

fn local_subnet(p: &AddressPlan, n: &Net) -> Value {
    let cidr = if n.subnet_id == plan::VIP_SUBNET_ID {
        p.vip_subnet.to_string()
    } else {
        p.member_subnet.to_string()
    };
    subnet_json(
        n.subnet_id,
        n.network_id,
        &format!("{}-subnet", n.name),
        &cidr,
    )
}

fn subnet_json(id: Uuid, network_id: Uuid, name: &str, cidr: &str) -> Value {
    json!({"id": id, "network_id": network_id, "name": name, "cidr": cidr, "ip_version": 4,
           "enable_dhcp": false, "tenant_id": "", "project_id": "", "tags": []})
}

fn network_json(id: Uuid, subnet_id: Uuid, name: &str) -> Value {
    let name = if name.is_empty() {
        String::new()
    } else {
        format!("{name}-net")
    };
    json!({"id": id, "name": name, "subnets": [subnet_id], "status": "ACTIVE",
           "admin_state_up": true, "tenant_id": "", "project_id": "", "tags": []})
}

#[derive(Debug, Deserialize)]
struct Filter {
    id: Option<String>,
    name: Option<String>,
}

fn not_found(what: &str, id: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"NeutronError": {"type": format!("{what}NotFound"),
                     "message": format!("{what} {id} could not be found."), "detail": ""}})),
    )
        .into_response()
}

async fn list_subnets(State(n): State<Networks>, Query(f): Query<Filter>) -> Json<Value> {
    let found = match (&f.id, &f.name) {
        (Some(id), _) => Uuid::parse_str(id)
            .ok()
            .and_then(|id| n.subnet(id))
            .into_iter()
            .collect(),
        (None, Some(name)) => n.subnets_named(name),
        (None, None) => match &n {
            Networks::Any => Vec::new(),
            Networks::Local(p) => LOCAL.iter().map(|x| local_subnet(p, x)).collect(),
        },
    };
    Json(json!({ "subnets": found }))
}

async fn show_subnet(State(n): State<Networks>, Path(id): Path<String>) -> Response {
    match Uuid::parse_str(&id).ok().and_then(|u| n.subnet(u)) {
        Some(s) => Json(json!({ "subnet": s })).into_response(),
        None => not_found("Subnet", &id),
    }
}

async fn list_networks(State(n): State<Networks>, Query(f): Query<Filter>) -> Json<Value> {
    let found = match (&f.id, &f.name) {
        (Some(id), _) => Uuid::parse_str(id)
            .ok()
            .and_then(|id| n.network(id))
            .into_iter()
            .collect(),
        (None, Some(name)) => n.networks_named(name),
        (None, None) => match &n {
            Networks::Any => Vec::new(),
            Networks::Local(_) => LOCAL
                .iter()
                .map(|x| network_json(x.network_id, x.subnet_id, x.name))
                .collect(),
        },
    };
    Json(json!({ "networks": found }))
}

async fn show_network(State(n): State<Networks>, Path(id): Path<String>) -> Response {
    match Uuid::parse_str(&id).ok().and_then(|u| n.network(u)) {
        Some(net) => Json(json!({ "network": net })).into_response(),
        None => not_found("Network", &id),
    }
}

/// Under noauth a project is whatever id the caller names.
fn project(id: &str) -> Value {
    json!({"id": id, "name": id, "domain_id": "default", "enabled": true, "description": ""})
}

async fn show_project(Path(id): Path<String>) -> Json<Value> {
    Json(json!({ "project": project(&id) }))
}

async fn list_projects(Query(f): Query<Filter>) -> Json<Value> {
    let found: Vec<Value> = f.name.or(f.id).iter().map(|n| project(n)).collect();
    Json(json!({ "projects": found }))
}

/// The lookup routes (serve them only with noauth: with Keystone, clients use the catalog).
pub fn router(networks: Networks) -> Router {
    let mut r = Router::new();
    for prefix in ["/v2.0", "/v2"] {
        r = r
            .route(&format!("{prefix}/subnets"), get(list_subnets))
            .route(&format!("{prefix}/subnets/{{id}}"), get(show_subnet))
            .route(&format!("{prefix}/networks"), get(list_networks))
            .route(&format!("{prefix}/networks/{{id}}"), get(show_network));
    }
    for prefix in ["", "/v3"] {
        r = r
            .route(&format!("{prefix}/projects"), get(list_projects))
            .route(&format!("{prefix}/projects/{{id}}"), get(show_project));
    }
    r.with_state(networks)
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;

    async fn get_json(app: &Router, uri: &str) -> (StatusCode, Value) {
        let resp = app
            .clone()
            .oneshot(Request::get(uri).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    #[tokio::test]
    async fn noop_networks_know_every_uuid_and_projects_echo() {
        let app = router(Networks::Any);
        let id = Uuid::new_v4();
        let (status, body) = get_json(&app, &format!("/v2.0/subnets?id={id}")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["subnets"][0]["id"], id.to_string());
        let (status, body) = get_json(&app, &format!("/v2/subnets/{id}")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["subnet"]["id"], id.to_string());
        let (status, _) = get_json(&app, "/v2.0/subnets/not-a-uuid").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (_, body) = get_json(&app, "/v3/projects/p1").await;
        assert_eq!(body["project"]["id"], "p1");
    }

    #[tokio::test]
    async fn local_networks_are_only_the_stable_ones() {
        let app = router(Networks::Local(Box::default()));
        let (_, body) = get_json(&app, &format!("/v2.0/subnets?id={}", plan::VIP_SUBNET_ID)).await;
        assert_eq!(body["subnets"][0]["cidr"], "198.19.0.0/20");
        assert_eq!(
            body["subnets"][0]["network_id"],
            plan::VIP_NETWORK_ID.to_string()
        );
        let (_, body) = get_json(&app, &format!("/v2.0/subnets?id={}", Uuid::new_v4())).await;
        assert_eq!(body["subnets"].as_array().map(Vec::len), Some(0));
        let (_, body) = get_json(&app, "/v2.0/subnets?name=klb-member-subnet").await;
        assert_eq!(body["subnets"][0]["id"], plan::MEMBER_SUBNET_ID.to_string());
        let (status, _) = get_json(&app, &format!("/v2.0/networks/{}", Uuid::new_v4())).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
}
