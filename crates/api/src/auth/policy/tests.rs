//! One line per case: who (roles, project), what (action, target owner), allowed or not.

use super::*;

const OWN: &str = "p1";
const OTHER: &str = "p2";

/// `roles` is a comma list; the caller's project is always `p1`, `is_admin` is what the
/// Keystone authenticator would compute from the roles.
fn check(options: PolicyOptions, roles: &str, action: Action, target: Option<&str>, expect: bool) {
    let policy = OctaviaPolicy::new(options);
    let roles: Vec<String> = roles
        .split(',')
        .filter(|r| !r.is_empty())
        .map(str::to_owned)
        .collect();
    let creds = Credentials {
        project_id: Some(OWN),
        roles: &roles,
        is_admin: policy.context_is_admin(&roles),
    };
    let got = policy.check(action, &creds, target).is_ok();
    assert_eq!(
        got,
        expect,
        "roles={roles:?} action={} target={target:?} options={options:?}",
        action.rule()
    );
}

fn legacy(roles: &str, action: Action, target: Option<&str>, expect: bool) {
    check(
        PolicyOptions {
            enforce_new_defaults: false,
            ..PolicyOptions::default()
        },
        roles,
        action,
        target,
        expect,
    );
}

fn strict(roles: &str, action: Action, target: Option<&str>, expect: bool) {
    check(
        PolicyOptions {
            enforce_new_defaults: true,
            ..PolicyOptions::default()
        },
        roles,
        action,
        target,
        expect,
    );
}

fn a(resource: Resource, op: Op) -> Action {
    Action::new(resource, op)
}

use Op::*;
use Resource as R;

#[test]
fn keystone_default_roles_on_own_project() {
    strict("reader", a(R::LoadBalancer, GetOne), Some(OWN), true);
    strict("reader", a(R::LoadBalancer, GetAll), Some(OWN), true);
    strict("reader", a(R::Listener, GetStats), Some(OWN), true);
    strict("reader", a(R::LoadBalancer, GetStatus), Some(OWN), true);
    strict("reader", a(R::LoadBalancer, Post), Some(OWN), false);
    strict("reader", a(R::Pool, Put), Some(OWN), false);
    strict("reader", a(R::Member, Delete), Some(OWN), false);
    strict("member", a(R::LoadBalancer, Post), Some(OWN), true);
    strict("member", a(R::Member, Put), Some(OWN), true);
    strict("member", a(R::L7Rule, Delete), Some(OWN), true);
    strict("member", a(R::HealthMonitor, GetOne), Some(OWN), true);
    strict("", a(R::LoadBalancer, GetOne), Some(OWN), false);
    strict(
        "someotherrole",
        a(R::LoadBalancer, GetAll),
        Some(OWN),
        false,
    );
}

#[test]
fn other_projects_need_admin() {
    strict("member", a(R::LoadBalancer, GetOne), Some(OTHER), false);
    strict("reader", a(R::Pool, GetOne), Some(OTHER), false);
    strict("member", a(R::Listener, Put), Some(OTHER), false);
    strict("admin", a(R::Listener, Put), Some(OTHER), true);
    strict("admin", a(R::LoadBalancer, GetOne), Some(OTHER), true);
    // A target without an owner never matches an *_and_owner rule.
    strict("member", a(R::LoadBalancer, GetOne), None, false);
}

#[test]
fn global_list() {
    strict("admin", a(R::LoadBalancer, GetAllGlobal), None, true);
    strict("member", a(R::LoadBalancer, GetAllGlobal), None, false);
    strict("reader", a(R::Pool, GetAllGlobal), None, false);
    legacy(
        "load-balancer_global_observer",
        a(R::LoadBalancer, GetAllGlobal),
        None,
        true,
    );
    strict(
        "load-balancer_global_observer",
        a(R::LoadBalancer, GetAllGlobal),
        None,
        false,
    );
    // A global observer reads any project's objects but writes none.
    legacy(
        "load-balancer_global_observer",
        a(R::LoadBalancer, GetOne),
        Some(OTHER),
        true,
    );
    legacy(
        "load-balancer_global_observer",
        a(R::LoadBalancer, Put),
        Some(OTHER),
        false,
    );
    legacy(
        "load-balancer_global_observer",
        a(R::LoadBalancer, Post),
        Some(OWN),
        false,
    );
}

#[test]
fn deprecated_octavia_roles() {
    legacy(
        "load-balancer_member",
        a(R::LoadBalancer, Post),
        Some(OWN),
        true,
    );
    legacy(
        "load-balancer_member",
        a(R::LoadBalancer, GetOne),
        Some(OWN),
        true,
    );
    legacy(
        "load-balancer_member",
        a(R::LoadBalancer, GetOne),
        Some(OTHER),
        false,
    );
    legacy(
        "load-balancer_observer",
        a(R::LoadBalancer, GetOne),
        Some(OWN),
        true,
    );
    legacy(
        "load-balancer_observer",
        a(R::LoadBalancer, Delete),
        Some(OWN),
        false,
    );
    legacy(
        "load-balancer_admin",
        a(R::LoadBalancer, Delete),
        Some(OTHER),
        true,
    );
    legacy("load-balancer_admin", a(R::Amphora, GetAll), None, true);
    // enforce_new_defaults drops them.
    strict(
        "load-balancer_member",
        a(R::LoadBalancer, Post),
        Some(OWN),
        false,
    );
    strict(
        "load-balancer_observer",
        a(R::LoadBalancer, GetOne),
        Some(OWN),
        false,
    );
    strict("load-balancer_admin", a(R::Amphora, GetAll), None, false);
}

#[test]
fn failover_and_amphorae_are_admin_only() {
    strict("member", a(R::LoadBalancer, Failover), Some(OWN), false);
    strict("admin", a(R::LoadBalancer, Failover), Some(OWN), true);
    for op in [GetAll, GetOne, GetStats, Put, Failover, Delete] {
        strict("member,reader", a(R::Amphora, op), Some(OWN), false);
        strict("admin", a(R::Amphora, op), None, true);
    }
}

#[test]
fn quotas() {
    strict("reader", a(R::Quota, GetOne), Some(OWN), true);
    strict("member", a(R::Quota, GetOne), Some(OWN), true);
    strict("member", a(R::Quota, GetOne), Some(OTHER), false);
    strict("member", a(R::Quota, Put), Some(OWN), false);
    strict("member", a(R::Quota, Delete), Some(OWN), false);
    strict("admin", a(R::Quota, Put), Some(OTHER), true);
    strict("member", a(R::Quota, GetAllGlobal), None, false);
    legacy(
        "load-balancer_quota_admin",
        a(R::Quota, Put),
        Some(OTHER),
        true,
    );
    legacy(
        "load-balancer_quota_admin",
        a(R::Quota, GetAllGlobal),
        None,
        true,
    );
    legacy(
        "load-balancer_quota_admin",
        a(R::Quota, GetOne),
        Some(OTHER),
        true,
    );
    // The quota admin is not a load-balancer admin.
    legacy(
        "load-balancer_quota_admin",
        a(R::LoadBalancer, GetOne),
        Some(OTHER),
        false,
    );
    strict(
        "load-balancer_quota_admin",
        a(R::Quota, Put),
        Some(OTHER),
        false,
    );
}

#[test]
fn flavors_azs_providers() {
    for r in [R::Flavor, R::AvailabilityZone] {
        strict("reader", a(r, GetAll), Some(OWN), true);
        strict("reader", a(r, GetOne), Some(OWN), true);
        strict("member", a(r, Post), Some(OWN), false);
        strict("member", a(r, Put), Some(OWN), false);
        strict("member", a(r, Delete), Some(OWN), false);
        strict("admin", a(r, Post), None, true);
    }
    for r in [R::FlavorProfile, R::AvailabilityZoneProfile] {
        strict("member", a(r, GetAll), Some(OWN), false);
        strict("member", a(r, GetOne), Some(OWN), false);
        strict("admin", a(r, GetAll), None, true);
        strict("admin", a(r, Delete), None, true);
    }
    strict("reader", a(R::Provider, GetAll), Some(OWN), true);
    strict("", a(R::Provider, GetAll), Some(OWN), false);
    // Capabilities (provider-flavor / provider-availability-zone) are admin only.
    strict("member", a(R::Provider, GetOne), Some(OWN), false);
    strict("admin", a(R::Provider, GetOne), None, true);
}

#[test]
fn member_list_allows_service_role() {
    strict("service", a(R::Member, GetAll), Some(OTHER), true);
    strict("service", a(R::Member, GetOne), Some(OTHER), false);
    strict("service", a(R::Pool, GetAll), Some(OTHER), false);
}

#[test]
fn role_names_are_case_insensitive() {
    strict("Member", a(R::LoadBalancer, Post), Some(OWN), true);
    strict("ADMIN", a(R::LoadBalancer, Delete), Some(OTHER), true);
}

#[test]
fn noauth_is_admin_flag_passes_admin_rules() {
    let policy = OctaviaPolicy::default();
    let creds = Credentials {
        project_id: None,
        roles: &[],
        is_admin: true,
    };
    assert!(policy.check(a(R::Amphora, Delete), &creds, None).is_ok());
    assert!(
        policy
            .check(a(R::LoadBalancer, GetOne), &creds, Some(OTHER))
            .is_ok()
    );
    assert!(policy.check(a(R::Quota, Put), &creds, Some(OTHER)).is_ok());
}

#[test]
fn policy_trait_maps_refusal_to_forbidden_not_hidden() {
    let ctx = RequestContext::new(Some(OWN.to_owned()), vec!["member".to_owned()], false);
    let policy = OctaviaPolicy::default();
    assert_eq!(
        Policy::check(&policy, &ctx, a(R::LoadBalancer, GetOne), Some(OTHER)),
        Err(Denied::Forbidden)
    );
    assert_eq!(
        Policy::check(&policy, &ctx, a(R::LoadBalancer, GetOne), Some(OWN)),
        Ok(())
    );
}
