//! The engine's tables (`flow_runs`, `flow_steps`) and every SQL statement it runs, for SQLite
//! and PostgreSQL through sqlx's `Any` driver.
//!
//! Both backends run the same statements except the claim, which adds `FOR UPDATE SKIP LOCKED`
//! on PostgreSQL. On SQLite the claim is a single `UPDATE ... WHERE seq = (SELECT ...)
//! RETURNING`, atomic under SQLite's single writer. Every transaction starts with a write so
//! SQLite takes the write lock up front (a read-then-write transaction could fail with
//! `SQLITE_BUSY` instead of waiting).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

use crate::FlowError;

/// Which SQL dialect the pool speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite (the embedded default).
    Sqlite,
    /// PostgreSQL (several control-plane nodes).
    Postgres,
}

/// The engine's database handle. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Db {
    /// Pool for writes. On SQLite it should have one connection (single writer).
    writer: AnyPool,
    /// Pool for reads (may be the same pool as `writer`).
    reader: AnyPool,
    backend: Backend,
}

/// Run states stored in `flow_runs.state`.
pub(crate) mod state {
    pub const PENDING: &str = "pending";
    pub const RUNNING: &str = "running";
    pub const REVERTING: &str = "reverting";
    pub const COMPLETED: &str = "completed";
    pub const FAILED: &str = "failed";
}

/// A run as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRecord {
    /// Unique id (UUID text).
    pub id: String,
    /// Submission order; runs with the same `key` execute in this order.
    pub seq: i64,
    /// Flow kind, e.g. `create_lb`.
    pub kind: String,
    /// Serialization key (the load balancer id): one run per key at a time.
    pub key: String,
    /// The flow's input, as submitted.
    pub input: Value,
    /// Durable variables the steps recorded (cloud ids).
    pub vars: Map<String, Value>,
    /// Where the run stands.
    pub state: RunState,
    /// Running: index of the next step to execute. Reverting: index of the next step to revert.
    pub step: i64,
    /// Failed attempts of the current step (or polls for a pending step).
    pub attempt: i64,
    /// Why the run failed (or what its revert could not undo).
    pub reason: Option<String>,
    /// A later run of the key asked this one to stop and revert.
    pub cancel_requested: bool,
    /// Opaque reference of whoever submitted the run (e.g. the store's job id).
    pub external_ref: Option<String>,
    /// Whether the finish hook ran after the run reached a final state.
    pub settled: bool,
    /// Submission time, Unix milliseconds.
    pub created_ms: i64,
    /// Last change, Unix milliseconds.
    pub updated_ms: i64,
}

/// Lifecycle of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    /// Submitted, not claimed yet.
    Pending,
    /// Executing its steps.
    Running,
    /// Undoing its completed steps in reverse order.
    Reverting,
    /// Every step executed.
    Completed,
    /// A step failed for good (or the run was cancelled); completed steps were reverted.
    Failed,
}

impl RunState {
    /// The `state` column's value.
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Pending => state::PENDING,
            RunState::Running => state::RUNNING,
            RunState::Reverting => state::REVERTING,
            RunState::Completed => state::COMPLETED,
            RunState::Failed => state::FAILED,
        }
    }

    fn parse(s: &str) -> Result<Self, FlowError> {
        Ok(match s {
            state::PENDING => RunState::Pending,
            state::RUNNING => RunState::Running,
            state::REVERTING => RunState::Reverting,
            state::COMPLETED => RunState::Completed,
            state::FAILED => RunState::Failed,
            other => return Err(FlowError::Corrupt(format!("unknown run state {other:?}"))),
        })
    }

    /// Completed or failed.
    pub fn is_final(self) -> bool {
        matches!(self, RunState::Completed | RunState::Failed)
    }
}

/// Milliseconds since the Unix epoch. Leases compare these across nodes, so node clocks must be
/// roughly in sync (NTP); the lease TTL is far larger than usual skew.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn ms(d: Duration) -> i64 {
    d.as_millis().min(i64::MAX as u128) as i64
}

const RUN_COLUMNS: &str = "id, seq, kind, lock_key, input, vars, state, step, attempt, reason, \
     cancel_requested, external_ref, settled, created_ms, updated_ms";

/// Runs that still hold their key: not final, or final but not yet settled.
const ACTIVE: &str = "(state IN ('pending', 'running', 'reverting') OR settled = 0)";

fn decode_run(row: &AnyRow) -> Result<RunRecord, FlowError> {
    let input: String = row.try_get("input")?;
    let vars: String = row.try_get("vars")?;
    let vars = match serde_json::from_str::<Value>(&vars)
        .map_err(|e| FlowError::Corrupt(format!("vars: {e}")))?
    {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    Ok(RunRecord {
        id: row.try_get("id")?,
        seq: row.try_get("seq")?,
        kind: row.try_get("kind")?,
        key: row.try_get("lock_key")?,
        input: serde_json::from_str(&input)
            .map_err(|e| FlowError::Corrupt(format!("input: {e}")))?,
        vars,
        state: RunState::parse(&row.try_get::<String, _>("state")?)?,
        step: row.try_get("step")?,
        attempt: row.try_get("attempt")?,
        reason: row.try_get("reason")?,
        cancel_requested: row.try_get::<i64, _>("cancel_requested")? != 0,
        external_ref: row.try_get("external_ref")?,
        settled: row.try_get::<i64, _>("settled")? != 0,
        created_ms: row.try_get("created_ms")?,
        updated_ms: row.try_get("updated_ms")?,
    })
}

/// What a worker writes after a step attempt.
#[derive(Debug, Clone)]
pub(crate) struct Progress<'a> {
    pub state: RunState,
    pub step: i64,
    pub attempt: i64,
    pub vars: &'a Map<String, Value>,
    pub reason: Option<&'a str>,
    /// The `flow_steps` history row, if this write ends a step attempt.
    pub log: Option<StepLog<'a>>,
}

/// One row of `flow_steps`.
#[derive(Debug, Clone)]
pub(crate) struct StepLog<'a> {
    pub step: i64,
    pub name: &'a str,
    pub phase: &'a str,
    pub attempt: i64,
    pub outcome: &'a str,
    pub error: Option<&'a str>,
    pub started_ms: i64,
}

/// One attempt of one step, as recorded in `flow_steps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepRecord {
    /// Index of the step in its flow.
    pub step: i64,
    /// The step's name.
    pub name: String,
    /// `execute` or `revert`.
    pub phase: String,
    /// Attempt number (1-based).
    pub attempt: i64,
    /// `ok`, `error`, `timeout`, `pending` or `skipped`.
    pub outcome: String,
    /// The attempt's error, if any.
    pub error: Option<String>,
}

impl Db {
    /// Open a database by URL (`sqlite://path?mode=rwc`, `sqlite::memory:`, `postgres://...`).
    /// On SQLite this makes a one-connection writer pool and a small reader pool, in WAL mode.
    pub async fn connect(url: &str) -> Result<Db, FlowError> {
        sqlx::any::install_default_drivers();
        if url.starts_with("sqlite:") {
            let writer = AnyPoolOptions::new()
                .max_connections(1)
                .after_connect(|conn, _| {
                    Box::pin(async move {
                        sqlx::query("PRAGMA busy_timeout = 10000")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA journal_mode = WAL")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA synchronous = NORMAL")
                            .execute(&mut *conn)
                            .await?;
                        Ok(())
                    })
                })
                .connect(url)
                .await?;
            // An in-memory database exists once per connection: readers must share the writer.
            let reader = if url.contains(":memory:") {
                writer.clone()
            } else {
                AnyPoolOptions::new()
                    .max_connections(4)
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            sqlx::query("PRAGMA busy_timeout = 10000")
                                .execute(&mut *conn)
                                .await?;
                            Ok(())
                        })
                    })
                    .connect(url)
                    .await?
            };
            Ok(Db {
                writer,
                reader,
                backend: Backend::Sqlite,
            })
        } else {
            let pool = AnyPoolOptions::new()
                .max_connections(16)
                .connect(url)
                .await?;
            Self::from_pools(pool.clone(), pool).await
        }
    }

    /// Use pools someone else opened (the store's), detecting the backend.
    pub async fn from_pools(writer: AnyPool, reader: AnyPool) -> Result<Db, FlowError> {
        let backend = {
            let conn = writer.acquire().await?;
            match conn.backend_name() {
                "PostgreSQL" => Backend::Postgres,
                "SQLite" => Backend::Sqlite,
                other => return Err(FlowError::Unsupported(other.to_string())),
            }
        };
        Ok(Db {
            writer,
            reader,
            backend,
        })
    }

    /// Run one statement outside the engine's API (test setup: schemas). Not for user input.
    #[doc(hidden)]
    pub async fn execute_raw(&self, sql: &str) -> Result<(), FlowError> {
        sqlx::query(sql).execute(&self.writer).await?;
        Ok(())
    }

    /// The SQL dialect of the pool.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Create the engine's tables if missing (idempotent; safe to run on every start).
    pub async fn migrate(&self) -> Result<(), FlowError> {
        let seq = match self.backend {
            Backend::Sqlite => "seq INTEGER PRIMARY KEY AUTOINCREMENT",
            Backend::Postgres => "seq BIGSERIAL PRIMARY KEY",
        };
        let statements = [
            format!(
                "CREATE TABLE IF NOT EXISTS flow_runs (
                    {seq},
                    id TEXT NOT NULL UNIQUE,
                    kind TEXT NOT NULL,
                    lock_key TEXT NOT NULL,
                    input TEXT NOT NULL,
                    vars TEXT NOT NULL,
                    state TEXT NOT NULL,
                    step BIGINT NOT NULL,
                    attempt BIGINT NOT NULL,
                    reason TEXT,
                    cancel_requested BIGINT NOT NULL DEFAULT 0,
                    external_ref TEXT,
                    settled BIGINT NOT NULL DEFAULT 0,
                    lease_owner TEXT,
                    lease_until BIGINT NOT NULL DEFAULT 0,
                    not_before BIGINT NOT NULL DEFAULT 0,
                    created_ms BIGINT NOT NULL,
                    updated_ms BIGINT NOT NULL
                )"
            ),
            "CREATE INDEX IF NOT EXISTS flow_runs_active ON flow_runs (lock_key, seq) \
             WHERE state IN ('pending', 'running', 'reverting') OR settled = 0"
                .to_string(),
            "CREATE INDEX IF NOT EXISTS flow_runs_external ON flow_runs (external_ref)".to_string(),
            format!(
                "CREATE TABLE IF NOT EXISTS flow_steps (
                {seq},
                run_id TEXT NOT NULL,
                step BIGINT NOT NULL,
                name TEXT NOT NULL,
                phase TEXT NOT NULL,
                attempt BIGINT NOT NULL,
                outcome TEXT NOT NULL,
                error TEXT,
                worker TEXT NOT NULL,
                started_ms BIGINT NOT NULL,
                finished_ms BIGINT NOT NULL
            )"
            ),
            "CREATE INDEX IF NOT EXISTS flow_steps_run ON flow_steps (run_id)".to_string(),
        ];
        for sql in statements {
            sqlx::query(&sql).execute(&self.writer).await?;
        }
        Ok(())
    }

    /// Insert a pending run. With `cancel_previous`, earlier active runs of the same key are
    /// asked to stop at their next step boundary and revert.
    pub(crate) async fn insert_run(
        &self,
        id: &str,
        kind: &str,
        key: &str,
        input: &Value,
        external_ref: Option<&str>,
        cancel_previous: bool,
    ) -> Result<(), FlowError> {
        let now = now_ms();
        let mut tx = self.writer.begin().await?;
        if cancel_previous {
            sqlx::query(
                "UPDATE flow_runs SET cancel_requested = 1, updated_ms = $1 \
                 WHERE lock_key = $2 AND state IN ('pending', 'running')",
            )
            .bind(now)
            .bind(key)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            "INSERT INTO flow_runs (id, kind, lock_key, input, vars, state, step, attempt, \
             external_ref, created_ms, updated_ms) \
             VALUES ($1, $2, $3, $4, '{}', 'pending', 0, 0, $5, $6, $6)",
        )
        .bind(id)
        .bind(kind)
        .bind(key)
        .bind(input.to_string())
        .bind(external_ref)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Lease the oldest claimable run: active, the first active run of its key, not backing off,
    /// and either unleased or with an expired lease (taken over from a dead worker).
    pub(crate) async fn claim(
        &self,
        worker: &str,
        lease: Duration,
    ) -> Result<Option<RunRecord>, FlowError> {
        let now = now_ms();
        let lock = match self.backend {
            Backend::Postgres => "FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        };
        let sql = format!(
            "UPDATE flow_runs SET \
               state = CASE WHEN state = 'pending' THEN 'running' ELSE state END, \
               lease_owner = $1, lease_until = $2, updated_ms = $3 \
             WHERE seq = ( \
               SELECT r.seq FROM flow_runs r \
               WHERE {active_r} AND r.not_before <= $3 AND r.lease_until < $3 \
                 AND NOT EXISTS (SELECT 1 FROM flow_runs e \
                   WHERE e.lock_key = r.lock_key AND e.seq < r.seq AND {active_e}) \
               ORDER BY r.seq LIMIT 1 {lock}) \
             AND lease_until < $3 \
             RETURNING {RUN_COLUMNS}",
            active_r = ACTIVE
                .replace("state", "r.state")
                .replace("settled", "r.settled"),
            active_e = ACTIVE
                .replace("state", "e.state")
                .replace("settled", "e.settled"),
        );
        let row = sqlx::query(&sql)
            .bind(worker)
            .bind(now + ms(lease))
            .bind(now)
            .fetch_optional(&self.writer)
            .await?;
        row.as_ref().map(decode_run).transpose()
    }

    /// Extend a lease; returns whether cancellation was requested, or `None` if the lease is lost.
    ///
    /// `lease` is the token of one claim (unique per claim, see [`Db::claim`]): a takeover always
    /// writes a new token, so matching the token is the whole fence. A holder whose lease ran
    /// out but was not taken over yet may keep going (a slow store must not stall every run).
    pub(crate) async fn renew(
        &self,
        run_id: &str,
        token: &str,
        lease: Duration,
    ) -> Result<Option<bool>, FlowError> {
        let now = now_ms();
        let row = sqlx::query(
            "UPDATE flow_runs SET lease_until = $1 \
             WHERE id = $2 AND lease_owner = $3 \
             RETURNING cancel_requested",
        )
        .bind(now + ms(lease))
        .bind(run_id)
        .bind(token)
        .fetch_optional(&self.writer)
        .await?;
        Ok(match row {
            Some(r) => Some(r.try_get::<i64, _>("cancel_requested")? != 0),
            None => None,
        })
    }

    /// Commit progress (and the step's history row) if this worker still holds the lease.
    /// Returns whether cancellation was requested, or `None` if the lease was lost (then
    /// nothing was written).
    pub(crate) async fn commit(
        &self,
        run_id: &str,
        worker: &str,
        lease: Duration,
        p: &Progress<'_>,
    ) -> Result<Option<bool>, FlowError> {
        let now = now_ms();
        let mut tx = self.writer.begin().await?;
        let row = sqlx::query(
            "UPDATE flow_runs SET state = $1, step = $2, attempt = $3, vars = $4, reason = $5, \
               lease_until = $6, updated_ms = $7 \
             WHERE id = $8 AND lease_owner = $9 \
             RETURNING cancel_requested",
        )
        .bind(p.state.as_str())
        .bind(p.step)
        .bind(p.attempt)
        .bind(Value::Object(p.vars.clone()).to_string())
        .bind(p.reason)
        .bind(now + ms(lease))
        .bind(now)
        .bind(run_id)
        .bind(worker)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            tx.rollback().await?;
            return Ok(None);
        };
        let cancel = row.try_get::<i64, _>("cancel_requested")? != 0;
        if let Some(log) = &p.log {
            sqlx::query(
                "INSERT INTO flow_steps (run_id, step, name, phase, attempt, outcome, error, \
                 worker, started_ms, finished_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            )
            .bind(run_id)
            .bind(log.step)
            .bind(log.name)
            .bind(log.phase)
            .bind(log.attempt)
            .bind(log.outcome)
            .bind(log.error)
            .bind(worker)
            .bind(log.started_ms)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(Some(cancel))
    }

    /// Mark a final run settled and drop its lease (frees its key for the next run).
    pub(crate) async fn mark_settled(&self, run_id: &str, worker: &str) -> Result<bool, FlowError> {
        let now = now_ms();
        let done = sqlx::query(
            "UPDATE flow_runs SET settled = 1, lease_owner = NULL, lease_until = 0, updated_ms = $1 \
             WHERE id = $2 AND lease_owner = $3",
        )
        .bind(now)
        .bind(run_id)
        .bind(worker)
        .execute(&self.writer)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Give up a lease so another worker can take the run at once (clean shutdown, backoff).
    pub(crate) async fn release(
        &self,
        run_id: &str,
        worker: &str,
        not_before_ms: i64,
    ) -> Result<(), FlowError> {
        sqlx::query(
            "UPDATE flow_runs SET lease_owner = NULL, lease_until = 0, not_before = $1 \
             WHERE id = $2 AND lease_owner = $3",
        )
        .bind(not_before_ms)
        .bind(run_id)
        .bind(worker)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// Release every lease a worker holds (its clean shutdown); its claim tokens are
    /// `<worker>/<nonce>`.
    pub(crate) async fn release_all(&self, worker: &str) -> Result<(), FlowError> {
        sqlx::query(
            "UPDATE flow_runs SET lease_owner = NULL, lease_until = 0 WHERE lease_owner LIKE $1",
        )
        .bind(format!("{worker}/%"))
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// One run by id.
    pub async fn run(&self, run_id: &str) -> Result<Option<RunRecord>, FlowError> {
        let row = sqlx::query(&format!(
            "SELECT {RUN_COLUMNS} FROM flow_runs WHERE id = $1"
        ))
        .bind(run_id)
        .fetch_optional(&self.reader)
        .await?;
        row.as_ref().map(decode_run).transpose()
    }

    /// Runs of a key, oldest first.
    pub async fn runs_for_key(&self, key: &str) -> Result<Vec<RunRecord>, FlowError> {
        let rows = sqlx::query(&format!(
            "SELECT {RUN_COLUMNS} FROM flow_runs WHERE lock_key = $1 ORDER BY seq"
        ))
        .bind(key)
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(decode_run).collect()
    }

    /// Runs submitted for an external reference (a store job id), oldest first.
    pub async fn runs_by_external_ref(
        &self,
        external_ref: &str,
    ) -> Result<Vec<RunRecord>, FlowError> {
        let rows = sqlx::query(&format!(
            "SELECT {RUN_COLUMNS} FROM flow_runs WHERE external_ref = $1 ORDER BY seq"
        ))
        .bind(external_ref)
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(decode_run).collect()
    }

    /// Number of runs that are not settled yet.
    pub async fn count_active(&self) -> Result<i64, FlowError> {
        let row = sqlx::query(&format!(
            "SELECT COUNT(*) AS n FROM flow_runs WHERE {ACTIVE}"
        ))
        .fetch_one(&self.reader)
        .await?;
        Ok(row.try_get("n")?)
    }

    /// The step history of a run, in order.
    pub async fn steps(&self, run_id: &str) -> Result<Vec<StepRecord>, FlowError> {
        let rows = sqlx::query(
            "SELECT step, name, phase, attempt, outcome, error FROM flow_steps \
             WHERE run_id = $1 ORDER BY seq",
        )
        .bind(run_id)
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(StepRecord {
                    step: r.try_get("step")?,
                    name: r.try_get("name")?,
                    phase: r.try_get("phase")?,
                    attempt: r.try_get("attempt")?,
                    outcome: r.try_get("outcome")?,
                    error: r.try_get("error")?,
                })
            })
            .collect()
    }
}
