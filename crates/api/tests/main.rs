//! klb-api integration tests: one binary, a module per area. Runs on SQLite always and on
//! PostgreSQL when `KLB_TEST_POSTGRES_URL` is set.

mod util;

mod certificates;
mod child_writes;
mod conformance;
mod errors;
mod golden;
mod hardening;
mod l7;
mod lists;
mod loadbalancers;
mod members;
mod pools_listeners;
