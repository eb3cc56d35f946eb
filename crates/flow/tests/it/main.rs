//! klb-flow integration tests: the engine on SQLite (and PostgreSQL when
//! `KLB_TEST_POSTGRES_URL` is set), the LB flows on the fake cloud under every fault class at
//! every cloud call, and crashes at every call.

mod engine;
mod jobs;
mod lb_faults;
mod lb_flows;
mod postgres;
mod support;
