//! Jobs: the outbox rows that are the provider interface.
//!
//! Semantics (invariants the flow engine relies on):
//! - A job is written in the same transaction that moved its target (and the load balancer)
//!   to `PENDING_*`; so a `PENDING_*` status always has a job that will settle it.
//! - Jobs of one load balancer run one at a time, oldest first: a job is claimable only when
//!   no older job of its load balancer is `pending` or `running`. Since the API refuses
//!   changes while the load balancer is `PENDING_*`, there is normally one open job per LB.
//! - A claim sets `state = running`, a lease owner and expiry and bumps `attempts`. A running
//!   job whose lease expired is claimable again (crash recovery: the flow resumes or reverts).
//! - [`crate::Store::settle_job`] ends a job: success deletes the row; failure keeps it with
//!   `state = failed` and `last_error` so operators can see why the object is `ERROR`.

use klb_model::Kind;
use sqlx::Row;
use sqlx::any::AnyRow;

/// What a job does to its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobOp {
    /// Create the target.
    Create,
    /// Apply an update of the target (or of its children).
    Update,
    /// Delete the target (for a load balancer: with everything under it).
    Delete,
    /// Fail over a load balancer (rebuild its LB VMs).
    Failover,
    /// Batch member update of a pool (target = the pool).
    BatchMembers,
}

impl JobOp {
    /// Stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            JobOp::Create => "create",
            JobOp::Update => "update",
            JobOp::Delete => "delete",
            JobOp::Failover => "failover",
            JobOp::BatchMembers => "batch_members",
        }
    }

    /// Parses [`JobOp::as_str`].
    pub fn parse(s: &str) -> Option<JobOp> {
        Some(match s {
            "create" => JobOp::Create,
            "update" => JobOp::Update,
            "delete" => JobOp::Delete,
            "failover" => JobOp::Failover,
            "batch_members" => JobOp::BatchMembers,
            _ => return None,
        })
    }
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    /// Waiting to be claimed.
    Pending,
    /// Claimed by `lease_owner` until `lease_expires_at`.
    Running,
    /// Settled as failed; kept for operators.
    Failed,
}

impl JobState {
    /// Stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::Running => "running",
            JobState::Failed => "failed",
        }
    }

    fn parse(s: &str) -> JobState {
        match s {
            "running" => JobState::Running,
            "failed" => JobState::Failed,
            _ => JobState::Pending,
        }
    }
}

/// A job row.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// Job id (UUID).
    pub id: String,
    /// The load balancer whose graph the job changes (the serialization key).
    pub loadbalancer_id: String,
    /// Operation.
    pub op: JobOp,
    /// Kind of the target object (load balancer, listener, pool, ..., LB VM).
    pub target_kind: Kind,
    /// Id of the target object.
    pub target_id: String,
    /// State.
    pub state: JobState,
    /// Worker holding the lease.
    pub lease_owner: Option<String>,
    /// Lease expiry, Unix milliseconds.
    pub lease_expires_at: Option<i64>,
    /// Number of claims so far.
    pub attempts: i64,
    /// Why the job failed (for operators).
    pub last_error: Option<String>,
    /// Creation time, Unix microseconds.
    pub created_at: i64,
    /// Optional JSON the writer attached (e.g. the previous state for a revert).
    pub payload: Option<String>,
}

/// A job to enqueue with [`crate::WriteTx::enqueue_job`].
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    /// The load balancer.
    pub loadbalancer_id: String,
    /// Operation.
    pub op: JobOp,
    /// Target kind.
    pub target_kind: Kind,
    /// Target id.
    pub target_id: String,
    /// Optional JSON payload.
    pub payload: Option<String>,
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The change is applied: pending objects become ACTIVE, deleted ones disappear.
    Success,
    /// The change failed (after retries/revert): the target becomes ERROR with this reason.
    Failed(String),
    /// A change klb made on its own (a PPS scale-out) could not be made and was reverted
    /// completely: the load balancer serves as before, so pending objects go back to ACTIVE;
    /// the job stays `failed` with this reason for operators.
    Reverted(String),
}

impl Job {
    pub(crate) const COLUMNS: &'static str = "id, loadbalancer_id, op, target_kind, target_id, state, lease_owner, lease_expires_at, attempts, last_error, created_at, payload";

    pub(crate) fn from_row(row: &AnyRow) -> Result<Job, sqlx::Error> {
        let op: String = row.try_get(2)?;
        let state: String = row.try_get(5)?;
        let target_kind: String = row.try_get(3)?;
        Ok(Job {
            id: row.try_get(0)?,
            loadbalancer_id: row.try_get(1)?,
            op: JobOp::parse(&op)
                .ok_or_else(|| sqlx::Error::Decode(format!("unknown job op {op}").into()))?,
            target_kind: Kind::parse(&target_kind).ok_or_else(|| {
                sqlx::Error::Decode(format!("unknown job target kind {target_kind}").into())
            })?,
            target_id: row.try_get(4)?,
            state: JobState::parse(&state),
            lease_owner: row.try_get(6)?,
            lease_expires_at: row.try_get(7)?,
            attempts: row.try_get(8)?,
            last_error: row.try_get(9)?,
            created_at: row.try_get(10)?,
            payload: row.try_get(11)?,
        })
    }
}
