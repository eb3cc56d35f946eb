//! Octavia's default RBAC policies as pure functions.
//!
//! Source: `openstack/octavia` at `0e6ea11c` (2026-08-17): `octavia/policies/base.py` (the
//! `load-balancer:read`, `read-global`, `write`, `read-quota`, `read-quota-global`,
//! `write-quota` API rules), `keystone_default_roles.py` (the new defaults on Keystone's
//! `admin`/`member`/`reader` roles), `advanced_rbac.py` (the deprecated `load-balancer_*`
//! roles), the per-resource files (`loadbalancer.py`, `member.py`, `amphora.py`, `quota.py`,
//! `provider*.py`, `flavor*.py`, `availability_zone*.py`) and `octavia/common/policy.py`
//! (`is_admin` injected into the credentials), `octavia/api/v2/controllers/base.py`
//! (`_auth_get_all`, `_auth_validate_action`: the target is `{"project_id": <owner>}`).
//!
//! oslo.policy evaluates a rule with a deprecated variant as "new OR deprecated" unless
//! `[oslo_policy] enforce_new_defaults` is true (its default since oslo.policy 4.4, 2024.2).
//! klb keeps the deprecated `load-balancer_*` roles working by default
//! ([`PolicyOptions::enforce_new_defaults`] = false) because deployments that moved from
//! Octavia granted them to tenants; set it to true for the strict 2024.2+ behaviour.
//!
//! Every Octavia rule is project-scoped (`scope_types=['project']`), so with
//! `enforce_scope` a system-scoped token is refused; the Keystone authenticator does that by
//! giving such a token no roles (see `keystone.rs`).

use crate::context::{Action, Denied, Op, Policy, RequestContext, Resource};

/// Policy knobs (oslo.policy's `[oslo_policy]` section).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicyOptions {
    /// Ignore the deprecated `load-balancer_*` role rules (only Keystone's admin/member/reader
    /// count). Default false (see the module doc).
    pub enforce_new_defaults: bool,
    /// Refuse tokens that are not project-scoped (system, domain, unscoped): every Octavia
    /// rule has `scope_types=['project']`. Default true, as oslo.policy ≥ 4.4.
    pub enforce_scope: bool,
}

impl Default for PolicyOptions {
    fn default() -> PolicyOptions {
        PolicyOptions {
            enforce_new_defaults: false,
            enforce_scope: true,
        }
    }
}

/// What a check needs to know about the caller.
#[derive(Debug, Clone, Copy)]
pub struct Credentials<'a> {
    /// Project the token is scoped to.
    pub project_id: Option<&'a str>,
    /// Role names, lower-case.
    pub roles: &'a [String],
    /// Octavia's `is_admin` credential (noauth, or `context_is_admin`).
    pub is_admin: bool,
}

/// Policy refusal: 403 `Policy does not allow this request to be performed.`
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("Policy does not allow this request to be performed.")]
pub struct Forbidden;

/// The API-level rules of `octavia/policies/base.py` (plus `rule:load-balancer:admin`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// `rule:load-balancer:read`.
    Read,
    /// `rule:load-balancer:read` or `rule:service` (member listing, `RULE_MEMBER_API_READ`).
    MemberRead,
    /// `rule:load-balancer:read-global`.
    ReadGlobal,
    /// `rule:load-balancer:write`.
    Write,
    /// `rule:load-balancer:read-quota`.
    ReadQuota,
    /// `rule:load-balancer:read-quota-global`.
    ReadQuotaGlobal,
    /// `rule:load-balancer:write-quota`.
    WriteQuota,
    /// `rule:load-balancer:admin`.
    Admin,
}

/// The rule Octavia registers for an action.
///
/// klb's [`Action`] has no `provider-flavor`/`provider-availability-zone` resources: the
/// capability listings use `Provider` + [`Op::GetOne`] (both are `RULE_API_ADMIN` upstream),
/// the plain provider list is `Provider` + [`Op::GetAll`]. Amphora `put_config` is
/// `Amphora` + [`Op::Put`]; quota `get_defaults` is `Quota` + [`Op::GetOne`] (same rule).
pub fn rule_for(action: Action) -> Rule {
    use Resource as R;
    match (action.resource, action.op) {
        // amphora.py, flavor_profile.py, availability_zone_profile.py: everything admin.
        (R::Amphora | R::FlavorProfile | R::AvailabilityZoneProfile, _) => Rule::Admin,
        // loadbalancer.py: failover is admin only.
        (R::LoadBalancer, Op::Failover) => Rule::Admin,
        // quota.py.
        (R::Quota, Op::GetAllGlobal) => Rule::ReadQuotaGlobal,
        (R::Quota, Op::Post | Op::Put | Op::Delete | Op::Failover) => Rule::WriteQuota,
        (R::Quota, _) => Rule::ReadQuota,
        // provider.py: list is read; provider_flavor.py / provider_availability_zone.py:
        // capabilities are admin.
        (R::Provider, Op::GetAll | Op::GetAllGlobal) => Rule::Read,
        (R::Provider, _) => Rule::Admin,
        // flavor.py, availability_zone.py: reads for everyone, writes admin.
        (R::Flavor | R::AvailabilityZone, Op::GetOne | Op::GetAll | Op::GetAllGlobal) => Rule::Read,
        (R::Flavor | R::AvailabilityZone, _) => Rule::Admin,
        // member.py: the list also allows the `service` role.
        (R::Member, Op::GetAll) => Rule::MemberRead,
        // loadbalancer.py, listener.py, pool.py, healthmonitor.py, l7policy.py, l7rule.py,
        // member.py.
        (_, Op::GetAllGlobal) => Rule::ReadGlobal,
        (_, Op::GetOne | Op::GetAll | Op::GetStats | Op::GetStatus) => Rule::Read,
        (_, Op::Post | Op::Put | Op::Delete) => Rule::Write,
        // Failover of anything but a load balancer does not exist upstream: admin.
        (_, Op::Failover) => Rule::Admin,
    }
}

/// Octavia's default policy.
#[derive(Debug, Clone, Copy, Default)]
pub struct OctaviaPolicy {
    /// Knobs.
    pub options: PolicyOptions,
}

impl OctaviaPolicy {
    /// A policy with `options`.
    pub fn new(options: PolicyOptions) -> OctaviaPolicy {
        OctaviaPolicy { options }
    }

    /// Decides `action` on an object owned by `target_project` (`None`: no owner, e.g. a
    /// global list, where no `*_and_owner` rule can match).
    pub fn check(
        &self,
        action: Action,
        creds: &Credentials<'_>,
        target_project: Option<&str>,
    ) -> Result<(), Forbidden> {
        if self.eval(rule_for(action), creds, target_project) {
            Ok(())
        } else {
            Err(Forbidden)
        }
    }

    /// `context_is_admin` (`role:admin`, deprecated also `role:load-balancer_admin`): what the
    /// Keystone authenticator puts in [`RequestContext::is_admin`].
    pub fn context_is_admin(&self, roles: &[String]) -> bool {
        has(roles, "admin") || (self.legacy() && has(roles, "load-balancer_admin"))
    }

    fn legacy(&self) -> bool {
        !self.options.enforce_new_defaults
    }

    fn eval(&self, rule: Rule, c: &Credentials<'_>, target: Option<&str>) -> bool {
        let legacy = self.legacy();
        let roles = c.roles;
        // `rule:load-balancer:owner` / `project_id:%(project_id)s`: a missing target or a
        // token without a project never matches.
        let owner = matches!((c.project_id, target), (Some(p), Some(t)) if p == t);
        // keystone_default_roles.py, with advanced_rbac.py's deprecated alternatives OR'd in.
        let admin =
            c.is_admin || has(roles, "admin") || (legacy && has(roles, "load-balancer_admin"));
        let global_observer =
            has(roles, "admin") || (legacy && has(roles, "load-balancer_global_observer"));
        let member_and_owner =
            owner && (has(roles, "member") || (legacy && has(roles, "load-balancer_member")));
        let observer_and_owner =
            owner && (has(roles, "reader") || (legacy && has(roles, "load-balancer_observer")));
        let quota_admin =
            has(roles, "admin") || (legacy && has(roles, "load-balancer_quota_admin"));
        let read = observer_and_owner || global_observer || member_and_owner || admin;
        match rule {
            Rule::Read => read,
            Rule::MemberRead => read || has(roles, "service"),
            Rule::ReadGlobal => global_observer || admin,
            Rule::Write => member_and_owner || admin,
            Rule::ReadQuota => {
                observer_and_owner || global_observer || member_and_owner || quota_admin || admin
            }
            Rule::ReadQuotaGlobal => global_observer || quota_admin || admin,
            Rule::WriteQuota => quota_admin || admin,
            Rule::Admin => admin,
        }
    }
}

/// oslo.policy compares role names case-insensitively.
fn has(roles: &[String], role: &str) -> bool {
    roles.iter().any(|r| r.eq_ignore_ascii_case(role))
}

impl Policy for OctaviaPolicy {
    fn check(
        &self,
        ctx: &RequestContext,
        action: Action,
        target_project: Option<&str>,
    ) -> Result<(), Denied> {
        let creds = Credentials {
            project_id: ctx.project_id.as_deref(),
            roles: &ctx.roles,
            is_admin: ctx.is_admin,
        };
        // Octavia answers 403 (not 404) for another project's object: the object is found,
        // then `_auth_validate_action` refuses.
        OctaviaPolicy::check(self, action, &creds, target_project)
            .map_err(|Forbidden| Denied::Forbidden)
    }
}

#[cfg(test)]
mod tests;
