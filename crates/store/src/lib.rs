//! Durable store of klb's resources on SQLite (default) or PostgreSQL, with migrations
//! applied at open. Both backends run the same SQL through sqlx's `Any` driver.
//!
//! Shape: every resource is a JSON [`Document`] in the `resources` table, keyed by
//! `(kind, id)`, with indexed columns for project, load balancer, parent, a secondary
//! reference and the provisioning status, plus a version for optimistic concurrency. Other
//! crates keep their own kinds there (quotas, flavors, secrets, ...) through the generic
//! document API; every kind the table holds is a [`DocumentKind`] variant. The `jobs` table is the outbox and the provider interface: the
//! API writes a job in the same transaction that sets `PENDING_*`, a worker claims it with a
//! lease ([`Store::claim_job`]) and [`Store::settle_job`] applies Octavia's completion rules.
//!
//! Writers: on SQLite all write transactions go through a one-connection pool, so concurrent
//! requests queue instead of failing with `SQLITE_BUSY`; readers use a separate pool (WAL).
//! On PostgreSQL writers lock the load balancer row (`SELECT ... FOR UPDATE`) and workers claim
//! jobs with `FOR UPDATE SKIP LOCKED`.

#![warn(missing_docs)]
mod batch;
mod cache;
mod document;
mod error;
mod jobs;
mod kind;
mod query;
mod settle;
mod store;
mod tx;

pub use batch::WriteBatch;
pub use cache::{DEFAULT_CACHE_BYTES, RenderCache};
pub use document::{Document, ListQuery, Relation, Stamp};
pub use kind::DocumentKind;

/// Kind of the per-load-balancer statistics document (id = load balancer id) that the health
/// manager writes from heartbeats and the API's `/stats` endpoints read. Body:
/// `{"loadbalancer": COUNTERS, "listeners": {LISTENER_ID: COUNTERS},
/// "amphorae": {VM_ID: {LISTENER_ID: COUNTERS}}}` (summed over the LB VMs, and each VM's own)
/// with Octavia's counter names (`bytes_in`, `bytes_out`, `active_connections`,
/// `total_connections`, `request_errors`).
pub const STATS_KIND: DocumentKind = DocumentKind::LbStats;
pub use error::StoreError;
pub use jobs::{Job, JobAction, JobOp, JobPayload, JobState, NewJob, Outcome};
pub use store::{Backend, Store, StoreOptions};
pub use tx::WriteTx;

/// Current time as stored in `created_at` columns: RFC 3339 with microseconds, so text order
/// is time order.
pub fn timestamp(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}
