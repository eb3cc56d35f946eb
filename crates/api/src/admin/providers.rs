//! Providers (`/v2/providers`, octavia-api.md §9) and the flavor / availability-zone
//! capabilities of klb's driver, which also validate `flavor_data` and
//! `availability_zone_data`.
//!
//! klb has one driver. It is listed as `klb`, and under the names tenants' tools already
//! send: `amphora` (Octavia's default provider: Terraform, Heat templates and
//! cloud-provider-openstack's `lb-provider` commonly name it) and `octavia` (its deprecated
//! alias). Which names exist, and their descriptions, is
//! `ApiConfig::enabled_provider_drivers` (Octavia's `enabled_provider_drivers`); all of them
//! mean klb's driver.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::AppState;
use crate::admin::authorize_global;
use crate::context::{Action, Op, RequestContext, Resource as R};
use crate::error::{ApiError, ApiResult};
use crate::list;
use crate::v2::common::QueryPairs;

/// Flavor keys klb's driver understands, with their descriptions.
pub const FLAVOR_CAPABILITIES: &[(&str, &str)] = &[
    (
        "loadbalancer_topology",
        "The load balancer topology. One of: SINGLE - One LB VM per load balancer. ACTIVE_STANDBY - Two LB VMs per load balancer (klb runs them active-active).",
    ),
    (
        "lb_vm_count",
        "Number of LB VMs serving each load balancer active-active behind ECMP (1 to 8).",
    ),
    (
        "compute_flavor",
        "The compute driver flavor ID for the LB VMs (overrides base_flavor_id).",
    ),
    (
        "image_id",
        "The image ID for the LB VMs (overrides image_id).",
    ),
];

/// Availability-zone keys klb's driver understands.
pub const AVAILABILITY_ZONE_CAPABILITIES: &[(&str, &str)] = &[
    (
        "compute_zone",
        "The compute availability zone of the LB VMs.",
    ),
    (
        "management_network",
        "The management network ID for the LB VMs.",
    ),
    (
        "valid_vip_networks",
        "List of network IDs that are allowed for VIP use. This overrides/replaces the list of allowed networks configured in klb.toml.",
    ),
];

/// 400 `Provider '<p>' is not enabled.` unless `provider` is one of the enabled names.
pub fn require_enabled(state: &AppState, provider: &str) -> ApiResult<()> {
    if state.config.enabled_provider_drivers.contains(provider) {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "Provider '{}' is not enabled.",
            klb_model::validate::printable(provider)
        )))
    }
}

/// Octavia's `ProviderUnsupportedOptionError` (501).
fn unsupported(provider: &str, msg: &str) -> ApiError {
    ApiError::NotImplemented(format!(
        "Provider '{}' does not support a requested option: {msg}",
        klb_model::validate::printable(provider)
    ))
}

/// Validates parsed `flavor_data` against klb's driver (Octavia's `validate_flavor`, whose
/// jsonschema messages these follow).
pub fn validate_flavor(provider: &str, data: &Value) -> ApiResult<()> {
    let Some(map) = data.as_object() else {
        return Err(unsupported(
            provider,
            &format!("{} is not of type 'object'", printable_json(data)),
        ));
    };
    for (key, value) in map {
        let ok = match key.as_str() {
            "loadbalancer_topology" => matches!(value.as_str(), Some("SINGLE" | "ACTIVE_STANDBY")),
            "lb_vm_count" => value.as_i64().is_some_and(|n| (1..=8).contains(&n)),
            "compute_flavor" | "image_id" => value
                .as_str()
                .is_some_and(|s| !s.is_empty() && s.len() <= 255),
            _ => {
                return Err(unsupported(
                    provider,
                    &format!(
                        "Additional properties are not allowed ('{}' was unexpected)",
                        printable(key)
                    ),
                ));
            }
        };
        if !ok {
            return Err(unsupported(
                provider,
                &format!(
                    "{} {} is not valid for {}",
                    printable(key),
                    printable_json(value),
                    printable(key)
                ),
            ));
        }
    }
    Ok(())
}

/// Validates parsed `availability_zone_data`.
pub fn validate_availability_zone(provider: &str, data: &Value) -> ApiResult<()> {
    let Some(map) = data.as_object() else {
        return Err(unsupported(
            provider,
            &format!("{} is not of type 'object'", printable_json(data)),
        ));
    };
    for (key, value) in map {
        let ok = match key.as_str() {
            "compute_zone" | "management_network" => value
                .as_str()
                .is_some_and(|s| !s.is_empty() && s.len() <= 255),
            "valid_vip_networks" => value.as_array().is_some_and(|a| {
                a.iter()
                    .all(|v| v.as_str().is_some_and(|s| !s.is_empty() && s.len() <= 255))
            }),
            _ => {
                return Err(unsupported(
                    provider,
                    &format!(
                        "Additional properties are not allowed ('{}' was unexpected)",
                        printable(key)
                    ),
                ));
            }
        };
        if !ok {
            return Err(unsupported(
                provider,
                &format!(
                    "{} {} is not valid for {}",
                    printable(key),
                    printable_json(value),
                    printable(key)
                ),
            ));
        }
    }
    Ok(())
}

fn printable(s: &str) -> String {
    klb_model::validate::printable(s)
}

fn printable_json(v: &Value) -> String {
    let s = v.to_string();
    let cut: String = s.chars().take(200).collect();
    printable(&cut)
}

/// GET /v2/providers
pub async fn list(
    State(state): State<AppState>,
    ctx: RequestContext,
    q: QueryPairs,
) -> ApiResult<Response> {
    authorize_global(&ctx, Action::new(R::Provider, Op::GetAll))?;
    let fields = q.fields();
    let providers: Vec<Value> = state
        .config
        .enabled_provider_drivers
        .iter()
        .map(|driver| {
            let mut m = Map::new();
            m.insert("name".into(), Value::String(driver.name.clone()));
            m.insert(
                "description".into(),
                Value::String(driver.description.clone()),
            );
            list::select_fields(m, &fields)
        })
        .collect();
    Ok(axum::Json(json!({ "providers": providers })).into_response())
}

/// GET /v2/providers/{provider}/flavor_capabilities
pub async fn flavor_capabilities(
    State(state): State<AppState>,
    ctx: RequestContext,
    Path(provider): Path<String>,
    q: QueryPairs,
) -> ApiResult<Response> {
    capabilities(
        &state,
        &ctx,
        &provider,
        &q,
        "flavor_capabilities",
        FLAVOR_CAPABILITIES,
    )
}

/// GET /v2/providers/{provider}/availability_zone_capabilities
pub async fn availability_zone_capabilities(
    State(state): State<AppState>,
    ctx: RequestContext,
    Path(provider): Path<String>,
    q: QueryPairs,
) -> ApiResult<Response> {
    capabilities(
        &state,
        &ctx,
        &provider,
        &q,
        "availability_zone_capabilities",
        AVAILABILITY_ZONE_CAPABILITIES,
    )
}

/// The capability lists; `name=` and `description=` filter, `fields=` selects (as Octavia).
fn capabilities(
    state: &AppState,
    ctx: &RequestContext,
    provider: &str,
    q: &QueryPairs,
    envelope: &str,
    all: &[(&str, &str)],
) -> ApiResult<Response> {
    // provider_flavor.py / provider_availability_zone.py: admin only.
    authorize_global(ctx, Action::new(R::Provider, Op::GetOne))?;
    require_enabled(state, provider)?;
    let fields = q.fields();
    let items: Vec<Value> = all
        .iter()
        .filter(|(name, _)| q.get("name").is_none_or(|n| n == *name))
        .filter(|(_, desc)| q.get("description").is_none_or(|d| d == *desc))
        .map(|(name, desc)| {
            let mut m = Map::new();
            m.insert("name".into(), Value::String((*name).to_owned()));
            m.insert("description".into(), Value::String((*desc).to_owned()));
            list::select_fields(m, &fields)
        })
        .collect();
    let mut outer = Map::new();
    outer.insert(envelope.to_owned(), Value::Array(items));
    Ok(axum::Json(Value::Object(outer)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(f: fn(&str, &Value) -> ApiResult<()>, data: Value, expect: Result<(), &str>) {
        match (f("klb", &data), expect) {
            (Ok(()), Ok(())) => {}
            (Err(e), Err(text)) => {
                assert_eq!(e.status().as_u16(), 501, "{e}");
                assert!(
                    e.to_string().contains(text),
                    "{e} does not contain {text:?}"
                );
            }
            (got, want) => panic!("{data}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn flavor_data_is_checked_against_the_driver_schema() {
        check(validate_flavor, json!({}), Ok(()));
        check(
            validate_flavor,
            json!({"loadbalancer_topology": "SINGLE", "compute_flavor": "m1.small"}),
            Ok(()),
        );
        check(
            validate_flavor,
            json!({"lb_vm_count": 4, "image_id": "abc"}),
            Ok(()),
        );
        check(
            validate_flavor,
            json!({"loadbalancer_topology": "TRIPLE"}),
            Err("loadbalancer_topology"),
        );
        check(
            validate_flavor,
            json!({"lb_vm_count": 0}),
            Err("lb_vm_count"),
        );
        check(
            validate_flavor,
            json!({"lb_vm_count": "2"}),
            Err("lb_vm_count"),
        );
        check(
            validate_flavor,
            json!({"bogus": 1}),
            Err("Additional properties are not allowed ('bogus' was unexpected)"),
        );
        check(validate_flavor, json!([1]), Err("is not of type 'object'"));
        check(
            validate_flavor,
            json!("x"),
            Err("Provider 'klb' does not support a requested option"),
        );
    }

    #[test]
    fn availability_zone_data_is_checked_against_the_driver_schema() {
        check(
            validate_availability_zone,
            json!({"compute_zone": "az1"}),
            Ok(()),
        );
        check(
            validate_availability_zone,
            json!({"valid_vip_networks": ["n1", "n2"], "management_network": "m"}),
            Ok(()),
        );
        check(
            validate_availability_zone,
            json!({"valid_vip_networks": "n1"}),
            Err("valid_vip_networks"),
        );
        check(
            validate_availability_zone,
            json!({"compute_zone": ""}),
            Err("compute_zone"),
        );
        check(
            validate_availability_zone,
            json!({"volume_zone": "x"}),
            Err("'volume_zone' was unexpected"),
        );
    }
}
