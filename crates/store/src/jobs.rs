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
//!   `state = failed` and `last_error` so operators can see why the object is `ERROR`
//!   (the completion rules are in [`crate::settle`]).
//!
//! Here: the job types, enqueueing ([`WriteTx::enqueue_job`]), claims and leases.

use std::time::Duration;

use klb_model::Kind;
use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::any::AnyRow;
use uuid::Uuid;

use crate::StoreError;
use crate::error::query;
use crate::store::{Backend, Store};
use crate::tx::WriteTx;

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

/// A job's payload ([`Job::payload`], [`NewJob::payload`]: JSON), typed for its writers (the
/// API, the health manager, the PPS webhook) and its reader (the flow crate's job pump); absent
/// fields are `None`, unknown ones are ignored. Owned here, the lowest crate all of them use.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobPayload {
    /// What an LB update is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<JobAction>,
    /// The one LB VM an LB failover replaces (without it every VM is rebuilt).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_index: Option<u32>,
    /// Why klb asked for the job itself (the health manager's `heartbeat missed`), for
    /// operators reading the job row; the pump does not act on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// [`JobPayload::action`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobAction {
    /// Turns an LB update into a scale-out by one LB VM (the PPS alarm webhook writes it).
    ScaleOut,
    /// The amphora API's `PUT .../config`: re-push the configuration (a plain update).
    Config,
    /// Any other action: a plain update.
    #[serde(other)]
    Other,
}

impl JobPayload {
    /// The payload of `job`; an absent or unreadable one reads as empty (a plain run).
    pub fn of(job: &Job) -> JobPayload {
        JobPayload::parse(job.payload.as_deref())
    }

    /// A stored payload; absent or unreadable reads as empty.
    pub fn parse(json: Option<&str>) -> JobPayload {
        json.and_then(|p| serde_json::from_str(p).ok())
            .unwrap_or_default()
    }

    /// The JSON stored in [`NewJob::payload`].
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
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

impl Store {
    /// Claims the oldest claimable job (see [`crate::jobs`] for the rules) for `owner`,
    /// holding it for `lease`.
    pub async fn claim_job(&self, owner: &str, lease: Duration) -> Result<Option<Job>, StoreError> {
        Ok(self.claim_jobs(owner, lease, 1).await?.pop())
    }

    /// Claims up to `limit` ready jobs at once, at most one per load balancer (the oldest of
    /// each), oldest first: workers that settle jobs in bulk ([`Store::settle_jobs`]) pay one
    /// claim for all of them.
    pub async fn claim_jobs(
        &self,
        owner: &str,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<Job>, StoreError> {
        let now = now_millis();
        let lock = match self.inner.backend {
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        };
        let sql = format!(
            "UPDATE jobs SET state = 'running', lease_owner = $1, lease_expires_at = $2, attempts = attempts + 1 \
             WHERE id IN (SELECT j.id FROM jobs j \
               WHERE (j.state = 'pending' OR (j.state = 'running' AND j.lease_expires_at < $3)) \
               AND NOT EXISTS (SELECT 1 FROM jobs o WHERE o.loadbalancer_id = j.loadbalancer_id \
                 AND o.state IN ('pending', 'running') \
                 AND (o.created_at < j.created_at OR (o.created_at = j.created_at AND o.id < j.id))) \
               ORDER BY j.created_at, j.id LIMIT $4{lock}) \
             RETURNING {}",
            Job::COLUMNS
        );
        // One statement is atomic on both backends (its own implicit transaction; the row
        // lock of `FOR UPDATE SKIP LOCKED` is held until it ends), so no BEGIN/COMMIT: two
        // fewer round trips to the writer connection per claim, which every write's job pays.
        let rows = sqlx::query(&sql)
            .bind(owner)
            .bind(now + lease.as_millis() as i64)
            .bind(now)
            .bind(i64::try_from(limit.max(1)).unwrap_or(i64::MAX))
            .fetch_all(&self.inner.writer)
            .await
            .map_err(query("claim job"))?;
        let mut jobs = rows
            .iter()
            .map(Job::from_row)
            .collect::<Result<Vec<_>, _>>()
            .map_err(query("claim job"))?;
        // RETURNING has no defined order.
        jobs.sort_by(|a, b| (&a.created_at, &a.id).cmp(&(&b.created_at, &b.id)));
        Ok(jobs)
    }

    /// Extends the lease of a running job still held by `owner`. Returns false when the
    /// lease was lost (another worker took the job over).
    pub async fn renew_lease(
        &self,
        job_id: &str,
        owner: &str,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        let done = sqlx::query("UPDATE jobs SET lease_expires_at = $1 WHERE id = $2 AND lease_owner = $3 AND state = 'running'")
            .bind(now_millis() + lease.as_millis() as i64)
            .bind(job_id)
            .bind(owner)
            .execute(&mut *tx.tx)
            .await
            .map_err(query("renew lease"))?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// Jobs of a load balancer (all states), oldest first.
    pub async fn jobs_of(&self, loadbalancer_id: &str) -> Result<Vec<Job>, StoreError> {
        let sql = format!(
            "SELECT {} FROM jobs WHERE loadbalancer_id = $1 ORDER BY created_at, id",
            Job::COLUMNS
        );
        let rows = sqlx::query(&sql)
            .bind(loadbalancer_id)
            .fetch_all(&self.inner.reader)
            .await
            .map_err(query("list jobs"))?;
        rows.iter()
            .map(Job::from_row)
            .collect::<Result<_, _>>()
            .map_err(query("list jobs"))
    }
}

impl WriteTx {
    /// Enqueues a job; workers are woken at commit.
    pub async fn enqueue_job(&mut self, job: NewJob) -> Result<String, StoreError> {
        let id = Uuid::new_v4().to_string();
        self.insert_job(&id, chrono::Utc::now().timestamp_micros(), &job)
            .await?;
        Ok(id)
    }

    pub(crate) async fn insert_job(
        &mut self,
        id: &str,
        created_at: i64,
        job: &NewJob,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO jobs (id, loadbalancer_id, op, target_kind, target_id, state, attempts, created_at, payload) \
             VALUES ($1, $2, $3, $4, $5, 'pending', 0, $6, $7)",
        )
        .bind(id)
        .bind(job.loadbalancer_id.as_str())
        .bind(job.op.as_str())
        .bind(job.target_kind.as_str())
        .bind(job.target_id.as_str())
        .bind(created_at)
        .bind(job.payload.as_deref())
        .execute(&mut *self.tx)
        .await
        .map_err(query("enqueue job"))?;
        self.job_written = true;
        Ok(())
    }
}

fn now_millis() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(json: Option<&str>) -> JobPayload {
        JobPayload::parse(json)
    }

    #[test]
    fn payloads_as_their_writers_put_them() {
        // The PPS webhook, the health manager, the amphora API, nothing, garbage.
        assert_eq!(
            payload(Some(r#"{"action":"scale_out"}"#)).action,
            Some(JobAction::ScaleOut)
        );
        assert_eq!(payload(Some(r#"{"vm_index":2}"#)).vm_index, Some(2));
        assert_eq!(
            payload(Some(r#"{"action":"config"}"#)).action,
            Some(JobAction::Config)
        );
        assert_eq!(
            payload(Some(r#"{"action":"rebalance"}"#)).action,
            Some(JobAction::Other)
        );
        assert_eq!(
            payload(Some(r#"{"reason":"heartbeat missed"}"#))
                .reason
                .as_deref(),
            Some("heartbeat missed")
        );
        assert_eq!(payload(Some(r#"{"why":"test"}"#)), JobPayload::default());
        assert_eq!(payload(None), JobPayload::default());
        assert_eq!(payload(Some("not json")), JobPayload::default());
    }

    /// The bytes each writer stores are the ones it wrote as raw JSON before the type existed
    /// (rows written by an older klb read back the same).
    #[test]
    fn writers_store_the_same_json_as_before() {
        let json = |p: JobPayload| p.to_json();
        assert_eq!(
            json(JobPayload {
                action: Some(JobAction::ScaleOut),
                ..JobPayload::default()
            }),
            r#"{"action":"scale_out"}"#
        );
        assert_eq!(
            json(JobPayload {
                action: Some(JobAction::Config),
                ..JobPayload::default()
            }),
            r#"{"action":"config"}"#
        );
        assert_eq!(
            json(JobPayload {
                reason: Some("heartbeat missed".to_owned()),
                ..JobPayload::default()
            }),
            r#"{"reason":"heartbeat missed"}"#
        );
        assert_eq!(json(JobPayload::default()), "{}");
    }
}
