//! The v2 resource routes, on canonical paths (`/v2/...`).

use axum::Router;
use axum::routing::get;

use crate::AppState;

pub mod common;
pub mod fields;
pub mod graph;
pub mod healthmonitors;
pub mod l7policies;
pub mod l7rules;
pub mod listeners;
pub mod loadbalancers;
pub mod members;
pub mod pools;

/// All LB-graph routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v2/octavia", get(|| async { axum::Json("v2") }))
        .route(
            "/v2/loadbalancers",
            get(loadbalancers::list).post(loadbalancers::create),
        )
        .route(
            "/v2/loadbalancers/{id}",
            get(loadbalancers::get_one)
                .put(loadbalancers::update)
                .delete(loadbalancers::delete),
        )
        .route("/v2/loadbalancers/{id}/stats", get(loadbalancers::stats))
        .route(
            "/v2/loadbalancers/{id}/status",
            get(loadbalancers::status_tree),
        )
        .route(
            "/v2/loadbalancers/{id}/statuses",
            get(loadbalancers::status_tree),
        )
        .route(
            "/v2/loadbalancers/{id}/failover",
            axum::routing::put(loadbalancers::failover),
        )
        .route(
            "/v2/listeners",
            get(listeners::list).post(listeners::create),
        )
        .route(
            "/v2/listeners/{id}",
            get(listeners::get_one)
                .put(listeners::update)
                .delete(listeners::delete),
        )
        .route("/v2/listeners/{id}/stats", get(listeners::stats))
        .route("/v2/pools", get(pools::list).post(pools::create))
        .route(
            "/v2/pools/{id}",
            get(pools::get_one).put(pools::update).delete(pools::delete),
        )
        .route(
            "/v2/pools/{id}/members",
            get(members::list).post(members::create).put(members::batch),
        )
        .route(
            "/v2/pools/{pool_id}/members/{id}",
            get(members::get_one)
                .put(members::update)
                .delete(members::delete),
        )
        .route(
            "/v2/healthmonitors",
            get(healthmonitors::list).post(healthmonitors::create),
        )
        .route(
            "/v2/healthmonitors/{id}",
            get(healthmonitors::get_one)
                .put(healthmonitors::update)
                .delete(healthmonitors::delete),
        )
        .route(
            "/v2/l7policies",
            get(l7policies::list).post(l7policies::create),
        )
        .route(
            "/v2/l7policies/{id}",
            get(l7policies::get_one)
                .put(l7policies::update)
                .delete(l7policies::delete),
        )
        .route(
            "/v2/l7policies/{id}/rules",
            get(l7rules::list).post(l7rules::create),
        )
        .route(
            "/v2/l7policies/{policy_id}/rules/{id}",
            get(l7rules::get_one)
                .put(l7rules::update)
                .delete(l7rules::delete),
        )
}
