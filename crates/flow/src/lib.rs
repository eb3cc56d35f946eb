//! Durable, resumable, revertible workflows that turn API changes into cloud resources and
//! LB-VM configuration.
//!
//! A [`Flow`] is data: a kind name and an ordered list of [`Step`]s, each with an idempotent
//! `execute` and `revert` (see [`lb::flows`] for the load-balancer flows, which read like the
//! seed's list). [`Engine::submit`] stores a run; a [`Worker`] claims runs with a lease, executes
//! steps one by one and commits the step index, the attempt count and every variable the step
//! recorded (cloud ids) to `flow_runs` after each attempt, with one history row per attempt in
//! `flow_steps`. A crash at any point loses at most the step in flight, which the next owner
//! re-executes (steps adopt what they made by deterministic name). A step that keeps failing
//! (bounded retries with exponential backoff, per-attempt timeout) makes the run revert the
//! steps done so far in reverse order, the failed one included, and end `Failed` with a reason.
//! Finished runs go through a [`FinishHook`] (settle the store's job, set the LB status) before
//! their key is released. [`jobs`] connects the store's `jobs` table (the provider interface):
//! [`jobs::JobPump`] turns each job into a run, [`jobs::SettleJobs`] settles it.
//!
//! # Why our own engine (and not apalis, underway or sqlxmq)
//! Evaluated from their documentation (Nov 2026):
//! - **apalis** (`apalis-sql` 0.7; SQLite, PostgreSQL, MySQL storages) is a job *queue*: one
//!   handler per job, retries, tower middleware. It has no notion of multi-step progress or
//!   compensation (revert), so the step index, recorded cloud ids and the revert walk would
//!   still be ours, stored beside apalis' own schema. It cannot serialize jobs per key (one run
//!   per load balancer), its SQLite storage claims "with a transaction and min(rowid)", and its
//!   API has changed shape in every minor release (0.4 → 0.5 → 0.6 → 0.7).
//! - **underway** (0.2) is closest in spirit (durable step functions, `FOR UPDATE SKIP LOCKED`,
//!   enqueue inside your transaction) but is **PostgreSQL only**, while klb's default store is
//!   SQLite; steps chain outputs forward with no revert; no per-key serialization.
//! - **sqlxmq** (0.6) is a PostgreSQL-only message queue built on PL/pgSQL functions; same gaps.
//!
//! What klb needs beyond a queue (per-LB serialization, cancellation of a create by a delete,
//! revert in reverse order, a durable variable bag per run, a finish hook that settles the
//! API's job, SQLite and PostgreSQL through the same `Any` pool as the store) is most of the
//! engine; the queue part is one claim statement ([`db`]). So: own engine (~1.4k lines with its
//! SQL), two tables.
//!
//! # Invariants
//! - Runs with the same key (load balancer id) execute one at a time, in submission order; a
//!   run keeps its key until it is final **and** settled.
//! - A delete **cancels** a running create: it is submitted with `cancel_previous`, the create
//!   stops at its next step boundary, reverts, and ends `Failed` ("cancelled"); then the delete
//!   runs (and finds little or nothing to remove).
//! - Only the lease holder writes a run. Each claim writes a fresh token (`<worker>/<nonce>`)
//!   and every write matches it, so a task whose run was taken over (it stalled past the TTL
//!   and another claim happened, even by its own worker) stops at its next write. A holder
//!   whose lease ran out but was not taken over keeps going. Cloud calls already in flight
//!   when a lease is lost are not cancelled remotely: steps stay idempotent for that reason.
//! - A step's per-attempt timeout, the lease TTL and the wait budgets are independent: a hung
//!   cloud call costs one attempt, never the run.
//! - Dropping a worker's future at any point is a crash, which is always safe.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod db;
mod engine;
pub mod jobs;
pub mod lb;

pub use db::{Backend, Db, RunRecord, RunState, StepRecord};
pub use engine::{
    Engine, EngineConfig, FinishHook, Flow, RunRequest, Step, StepCtx, StepError, StepErrorKind,
    Var, Worker,
};

/// Errors of the flow engine (step failures are not errors: they end runs as `Failed`).
#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    /// The flow database failed.
    #[error("flow store: {0}")]
    Db(#[from] sqlx::Error),
    /// A stored run does not decode.
    #[error("flow store holds corrupt data: {0}")]
    Corrupt(String),
    /// The database URL names neither SQLite nor PostgreSQL.
    #[error("unsupported database backend {0:?} (SQLite or PostgreSQL)")]
    Unsupported(String),
    /// A run names a flow kind this engine does not have.
    #[error("no flow of kind {0:?} is registered")]
    UnknownFlow(String),
    /// A run input does not decode for its flow.
    #[error("invalid flow input: {0}")]
    Input(String),
    /// A run input that does not encode as JSON.
    #[error("invalid flow input: {0}")]
    Encode(#[source] serde_json::Error),
    /// The klb store failed while a job became runs or a run settled its job.
    #[error("store: {0}")]
    Store(#[from] klb_store::StoreError),
    /// The cloud failed while a job became runs (looking up the LB's servers).
    #[error("cloud: {0}")]
    Cloud(#[from] klb_cloud::CloudError),
    /// No run has this id.
    #[error("no flow run {0}")]
    NoSuchRun(String),
    /// A wait for a run's end timed out.
    #[error("flow run {0} did not finish in time")]
    WaitTimeout(String),
}
