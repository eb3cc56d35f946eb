//! Admin and global resources (quotas, providers, flavors, flavor profiles, availability zones
//! and their profiles, amphorae/LB VMs). Owned by the admin-API work; `klb-api` merges
//! [`routes`] into the v2 tree.
//!
//! Routes use **full canonical paths** (`/v2/quotas`, `/v2/octavia/amphorae`): the router
//! rewrites `/v2.0/...`, `/v2/lbaas/...`, `/v2.0/lbaas/...` and a `.json` suffix to that
//! form before routing. Handlers take `crate::context::RequestContext` (the policy hook is
//! `ctx.authorize`), return `crate::error::ApiResult`, read bodies with
//! `crate::body::JsonBody` and keep their documents in the store under their own kinds.

use axum::Router;

use crate::AppState;

/// The admin routes (none yet).
pub fn routes() -> Router<AppState> {
    Router::new()
}
