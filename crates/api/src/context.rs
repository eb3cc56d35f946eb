//! Who is calling and what they may do: [`RequestContext`] (built by an [`Authenticator`] from
//! the request headers) and the one policy hook every handler calls, [`RequestContext::authorize`].
//!
//! Design: authentication and authorization are separate seams. The stock [`NoAuth`]
//! authenticator trusts `X-Project-Id`/`X-Roles` headers (local use only); Keystone validation
//! lives in `crate::auth`. The stock [`ScopePolicy`] keeps projects
//! apart and admin-only actions to admins: a non-admin context never sees or changes another project's objects, and handlers
//! turn [`Denied::NotVisible`] into the object's 404, as Octavia does. Octavia's RBAC plugs in
//! as another [`Policy`].

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::request::Parts;

use crate::AppState;
use crate::error::ApiError;

/// The caller, as established by the authenticator.
#[derive(Clone)]
pub struct RequestContext {
    /// The project the token is scoped to (`None`: unscoped or noauth without default).
    pub project_id: Option<String>,
    /// The user, when known.
    pub user_id: Option<String>,
    /// Role names (lower-case as Keystone returns them).
    pub roles: Vec<String>,
    /// Admin contexts see and change every project.
    pub is_admin: bool,
    /// Request id (`req-<uuid>`), echoed in `x-openstack-request-id`.
    pub request_id: String,
    policy: Arc<dyn Policy>,
}

impl std::fmt::Debug for RequestContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestContext")
            .field("project_id", &self.project_id)
            .field("user_id", &self.user_id)
            .field("roles", &self.roles)
            .field("is_admin", &self.is_admin)
            .finish()
    }
}

impl RequestContext {
    /// A context with the default [`ScopePolicy`] (the router replaces it with the configured
    /// policy).
    pub fn new(project_id: Option<String>, roles: Vec<String>, is_admin: bool) -> RequestContext {
        RequestContext {
            project_id,
            user_id: None,
            roles,
            is_admin,
            request_id: format!("req-{}", uuid::Uuid::new_v4()),
            policy: Arc::new(ScopePolicy),
        }
    }

    /// Replaces the policy.
    pub fn with_policy(mut self, policy: Arc<dyn Policy>) -> RequestContext {
        self.policy = policy;
        self
    }

    /// The policy hook: may this context perform `action` on an object owned by
    /// `target_project` (`None` for objects without a project, e.g. a global list)?
    pub fn authorize(&self, action: Action, target_project: Option<&str>) -> Result<(), Denied> {
        self.policy.check(self, action, target_project)
    }

    /// True if the context may see objects of `project_id` at all.
    pub fn can_see(&self, project_id: &str) -> bool {
        self.is_admin || self.project_id.as_deref() == Some(project_id)
    }
}

/// Why the policy refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// The object belongs to a project the caller cannot see: answer 404 for it.
    NotVisible,
    /// The caller sees it but may not do this: 403.
    Forbidden,
}

/// The resource an action is about (Octavia's RBAC resource names, one per API collection).
#[allow(missing_docs)] // each variant is the API collection of the same name
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Resource {
    LoadBalancer,
    Listener,
    Pool,
    Member,
    HealthMonitor,
    L7Policy,
    L7Rule,
    Quota,
    Provider,
    Flavor,
    FlavorProfile,
    AvailabilityZone,
    AvailabilityZoneProfile,
    Amphora,
}

/// What is done (Octavia's RBAC action names: `os_load-balancer_api:<resource>:<op>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// Read one object.
    GetOne,
    /// List the caller's project.
    GetAll,
    /// List every project.
    GetAllGlobal,
    /// Create.
    Post,
    /// Update.
    Put,
    /// Delete.
    Delete,
    /// Read statistics.
    GetStats,
    /// Read the status tree.
    GetStatus,
    /// Fail over.
    Failover,
}

/// An action checked by the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Action {
    /// Resource.
    pub resource: Resource,
    /// Operation.
    pub op: Op,
}

impl Action {
    /// Shorthand.
    pub const fn new(resource: Resource, op: Op) -> Action {
        Action { resource, op }
    }

    /// Octavia's policy rule name, e.g. `os_load-balancer_api:loadbalancer:get_one`.
    pub fn rule(&self) -> String {
        let r = match self.resource {
            Resource::LoadBalancer => "loadbalancer",
            Resource::Listener => "listener",
            Resource::Pool => "pool",
            Resource::Member => "member",
            Resource::HealthMonitor => "healthmonitor",
            Resource::L7Policy => "l7policy",
            Resource::L7Rule => "l7rule",
            Resource::Quota => "quota",
            Resource::Provider => "provider",
            Resource::Flavor => "flavor",
            Resource::FlavorProfile => "flavor-profile",
            Resource::AvailabilityZone => "availability-zone",
            Resource::AvailabilityZoneProfile => "availability-zone-profile",
            Resource::Amphora => "amphora",
        };
        let o = match self.op {
            Op::GetOne => "get_one",
            Op::GetAll => "get_all",
            Op::GetAllGlobal => "get_all-global",
            Op::Post => "post",
            Op::Put => "put",
            Op::Delete => "delete",
            Op::GetStats => "get_stats",
            Op::GetStatus => "get_status",
            Op::Failover => "failover",
        };
        format!("os_load-balancer_api:{r}:{o}")
    }
}

/// An authorization policy.
pub trait Policy: Send + Sync + 'static {
    /// Decides one action.
    fn check(
        &self,
        ctx: &RequestContext,
        action: Action,
        target_project: Option<&str>,
    ) -> Result<(), Denied>;
}

/// Allows everything except crossing projects (non-admin contexts only see their project) and
/// Octavia's admin-only actions (403 for non-admin contexts).
#[derive(Debug, Clone, Copy, Default)]
pub struct ScopePolicy;

impl Policy for ScopePolicy {
    fn check(
        &self,
        ctx: &RequestContext,
        action: Action,
        target_project: Option<&str>,
    ) -> Result<(), Denied> {
        use crate::auth::policy::{Rule, rule_for};
        // What Octavia reserves for admins (profiles, flavor and AZ writes, quota writes,
        // amphorae, failover, provider capabilities) stays admin-only here too.
        if !ctx.is_admin && matches!(rule_for(action), Rule::Admin | Rule::WriteQuota) {
            return Err(Denied::Forbidden);
        }
        match target_project {
            Some(p) if !ctx.can_see(p) => Err(Denied::NotVisible),
            _ => Ok(()),
        }
    }
}

/// Failed authentication: bad or missing credentials (401), a malformed identity header
/// (400), or the identity service cannot answer (503, as keystonemiddleware does, so clients
/// retry instead of re-authenticating).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct AuthError {
    /// The client-facing reason (never a credential).
    pub message: String,
    /// Which answer the failure gets.
    pub kind: AuthFailure,
}

/// The class of an [`AuthError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// Missing or invalid credentials: 401.
    Unauthorized,
    /// A malformed identity header (noauth's `X-Project-Id`, `X-Roles`): 400.
    Malformed,
    /// The identity service is unreachable or failing, not the caller's fault: 503.
    Unavailable,
}

impl AuthError {
    /// Missing or invalid credentials (401).
    pub fn unauthorized(message: impl Into<String>) -> AuthError {
        AuthError {
            message: message.into(),
            kind: AuthFailure::Unauthorized,
        }
    }

    /// A malformed identity header (400).
    pub fn malformed(message: impl Into<String>) -> AuthError {
        AuthError {
            message: message.into(),
            kind: AuthFailure::Malformed,
        }
    }

    /// The identity service cannot validate credentials right now (503).
    pub fn unavailable(message: impl Into<String>) -> AuthError {
        AuthError {
            message: message.into(),
            kind: AuthFailure::Unavailable,
        }
    }
}

/// Turns request headers into a [`RequestContext`].
#[async_trait::async_trait]
pub trait Authenticator: Send + Sync + 'static {
    /// Authenticates one request.
    async fn authenticate(&self, headers: &HeaderMap) -> Result<RequestContext, AuthError>;
}

/// `noauth`: trusts the caller's headers, for local use and tests only. The project comes
/// from `X-Project-Id` (or `X-Tenant-Id`), else the configured default project. The caller is
/// admin only when `X-Roles` names `admin` or `load-balancer_admin` (Octavia's
/// `context_is_admin` roles); a request without headers is an ordinary member of the default
/// project. A present but malformed project or roles header (empty, not UTF-8, not a plain
/// id) is refused with 400 rather than read as absent, so it can never widen the caller's
/// view. (Octavia's noauth makes every caller admin; klb does not, so a noauth API reachable
/// by tenants does not hand out other projects' load balancers or quota changes.)
#[derive(Debug, Clone, Default)]
pub struct NoAuth {
    /// Project for requests without a project header.
    pub default_project_id: Option<String>,
}

/// The roles that make a noauth caller admin.
pub const NOAUTH_ADMIN_ROLES: [&str; 2] = ["admin", "load-balancer_admin"];

/// A noauth identity header: `None` when absent; 400 when present but not a plain id
/// (1..=64 of `[A-Za-z0-9_.-]`; Keystone ids are 32 hex digits, Octavia stores up to 36).
fn noauth_id(headers: &HeaderMap, name: &str, max: usize) -> Result<Option<String>, AuthError> {
    let Some(value) = headers.get(name) else {
        return Ok(None);
    };
    let invalid = || AuthError::malformed(format!("Invalid {name} header"));
    let text = value.to_str().map_err(|_| invalid())?.trim();
    let plain = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.');
    if text.is_empty() || text.len() > max || !text.bytes().all(plain) {
        return Err(invalid());
    }
    Ok(Some(text.to_owned()))
}

#[async_trait::async_trait]
impl Authenticator for NoAuth {
    async fn authenticate(&self, headers: &HeaderMap) -> Result<RequestContext, AuthError> {
        let project = match noauth_id(headers, "x-project-id", 36)? {
            Some(p) => Some(p),
            None => noauth_id(headers, "x-tenant-id", 36)?,
        };
        let roles: Vec<String> = match headers.get("x-roles") {
            None => Vec::new(),
            Some(v) => v
                .to_str()
                .map_err(|_| AuthError::malformed("Invalid x-roles header"))?
                .split(',')
                .map(|s| s.trim().to_lowercase())
                .filter(|s| !s.is_empty())
                .collect(),
        };
        if roles
            .iter()
            .any(|r| r.len() > 64 || r.bytes().any(|b| b.is_ascii_control()))
        {
            return Err(AuthError::malformed("Invalid x-roles header"));
        }
        let is_admin = roles
            .iter()
            .any(|r| NOAUTH_ADMIN_ROLES.contains(&r.as_str()));
        let mut ctx = RequestContext::new(
            project.or_else(|| self.default_project_id.clone()),
            roles,
            is_admin,
        );
        ctx.user_id = noauth_id(headers, "x-user-id", 64)?;
        Ok(ctx)
    }
}

impl FromRequestParts<AppState> for RequestContext {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if let Some(ctx) = parts.extensions.get::<RequestContext>() {
            return Ok(ctx.clone());
        }
        let ctx = state
            .auth
            .authenticate(&parts.headers)
            .await
            .map_err(|e| match e.kind {
                AuthFailure::Unavailable => ApiError::Unavailable(e.message),
                AuthFailure::Malformed => ApiError::BadRequest(e.message),
                AuthFailure::Unauthorized => ApiError::Unauthorized(e.message),
            })?
            .with_policy(state.policy.clone());
        parts.extensions.insert(ctx.clone());
        Ok(ctx)
    }
}
