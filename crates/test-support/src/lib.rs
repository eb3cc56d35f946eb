//! Test helpers shared by klb's crates (a dev-dependency only; `crates/klb/tests/tidy.rs`
//! fails if a library lists it, or `tempfile`, under `[dependencies]`).
//!
//! - [`db::TestDb`]: where a test's store lives, a temporary SQLite file or, when
//!   `KLB_TEST_POSTGRES_URL` is set, a fresh PostgreSQL schema dropped again at the end.
//! - [`fixtures`]: one builder per model resource, so the ~20-field literals are written once;
//!   a test changes what it cares about with struct update syntax
//!   (`LoadBalancer { name: Some("lb".into()), ..load_balancer("p1", Active) }`).
//!
//! This crate depends on `klb-model` but not on `klb-store`: the store's own unit tests use it
//! too, and a dev-dependency on a crate that depends on klb-store would give them a second,
//! incompatible copy of `Store`. So [`db::TestDb`] hands out a URL and each caller opens its
//! store (`Store::open(db.url())`).

#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod db;
pub mod fixtures;
