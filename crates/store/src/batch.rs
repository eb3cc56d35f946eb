//! Write batches: document inserts, versioned updates and job enqueues applied atomically, in
//! as few round trips to the writer connection as the backend allows.
//!
//! Why: sqlx runs each SQLite statement on the connection's own thread, so every statement is
//! a hand-off there and back. On 2 cores those hand-offs, not SQL, dominated a write (perf of
//! an LB delete burst: about half of the server's CPU in the scheduler). On SQLite a batch is
//! therefore one `INSERT INTO klb_writes VALUES (...), (...)`: `klb_writes` is a view local to
//! the writer connection (TEMP, created at connect, nothing in the schema) whose INSTEAD OF
//! triggers perform each row's write. One statement is atomic without BEGIN/COMMIT: a version
//! conflict raises inside the trigger and rolls the whole statement back. On PostgreSQL the
//! same batch runs as ordinary statements in a transaction.
//!
//! Group commit ([`GroupWriter`]): batches applied outside a transaction on SQLite queue for one
//! task that runs everything queued while the previous statement ran as a single statement
//! (concurrent API deletes then cost one hand-off between them, not one each). A failing group
//! is re-run batch by batch, so each caller gets its own batch's result.

use std::sync::Arc;

use sqlx::any::AnyArguments;
use sqlx::query::Query;
use sqlx::{Any, AnyConnection, AnyPool};
use tokio::sync::{Notify, mpsc, oneshot};
use uuid::Uuid;

use crate::StoreError;
use crate::document::Document;
use crate::error::query;
use crate::jobs::NewJob;
use crate::store::{Backend, Store};
use crate::tx::{WriteTx, bind_doc};

/// Columns of the `klb_writes` view: an operation, the document columns, the job columns.
const COLUMNS: &str = "op, kind, id, project_id, loadbalancer_id, parent_id, ref_id, position, \
    provisioning_status, created_at, version, body, job_op, target_kind, target_id, job_created_at, payload";
const NUM_COLUMNS: usize = 17;

/// Rows per statement: well under SQLite's 32766 bound parameters.
pub(crate) const ROWS_PER_STATEMENT: usize = 500;

/// The message of the trigger's RAISE on a version conflict.
const CONFLICT: &str = "klb_writes: version conflict";

/// DDL run on every SQLite writer connection (TEMP objects live as long as the connection).
pub(crate) fn sqlite_setup() -> String {
    format!(
        "\
CREATE TEMP VIEW IF NOT EXISTS klb_writes ({COLUMNS}) \
  AS SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL;
CREATE TEMP TRIGGER IF NOT EXISTS klb_writes_insert INSTEAD OF INSERT ON klb_writes WHEN NEW.op = 'insert' BEGIN
  INSERT INTO resources (kind, id, project_id, loadbalancer_id, parent_id, ref_id, position, provisioning_status, created_at, version, body)
  VALUES (NEW.kind, NEW.id, NEW.project_id, NEW.loadbalancer_id, NEW.parent_id, NEW.ref_id, NEW.position,
    NEW.provisioning_status, NEW.created_at, NEW.version, NEW.body);
END;
CREATE TEMP TRIGGER IF NOT EXISTS klb_writes_update INSTEAD OF INSERT ON klb_writes WHEN NEW.op = 'update' BEGIN
  UPDATE resources SET project_id = NEW.project_id, loadbalancer_id = NEW.loadbalancer_id, parent_id = NEW.parent_id,
    ref_id = NEW.ref_id, position = NEW.position, provisioning_status = NEW.provisioning_status,
    created_at = NEW.created_at, version = NEW.version + 1, body = NEW.body
  WHERE kind = NEW.kind AND id = NEW.id AND version = NEW.version;
  SELECT RAISE(ABORT, '{CONFLICT}') WHERE changes() = 0;
END;
CREATE TEMP TRIGGER IF NOT EXISTS klb_writes_update_body INSTEAD OF INSERT ON klb_writes WHEN NEW.op = 'update_body' BEGIN
  UPDATE resources SET provisioning_status = NEW.provisioning_status, version = NEW.version + 1, body = NEW.body
  WHERE kind = NEW.kind AND id = NEW.id AND version = NEW.version;
  SELECT RAISE(ABORT, '{CONFLICT}') WHERE changes() = 0;
END;
CREATE TEMP TRIGGER IF NOT EXISTS klb_writes_job INSTEAD OF INSERT ON klb_writes WHEN NEW.op = 'job' BEGIN
  INSERT INTO jobs (id, loadbalancer_id, op, target_kind, target_id, state, attempts, created_at, payload)
  VALUES (NEW.id, NEW.loadbalancer_id, NEW.job_op, NEW.target_kind, NEW.target_id, 'pending', 0, NEW.job_created_at, NEW.payload);
END;
CREATE TEMP TRIGGER IF NOT EXISTS klb_writes_job_done INSTEAD OF INSERT ON klb_writes WHEN NEW.op = 'job_done' BEGIN
  DELETE FROM jobs WHERE id = NEW.id;
END;
CREATE TEMP TRIGGER IF NOT EXISTS klb_writes_clear_graph INSTEAD OF INSERT ON klb_writes WHEN NEW.op = 'clear_graph' BEGIN
  {CLEAR_GRAPH} NEW.loadbalancer_id;
END;"
    )
}

/// Removes a load balancer's graph except the load balancer document and its LB VMs (which
/// the delete flow still needs); completed by the load balancer id.
pub(crate) const CLEAR_GRAPH: &str =
    "DELETE FROM resources WHERE kind <> 'loadbalancer' AND kind <> 'lbvm' AND loadbalancer_id =";

/// Writes that succeed or fail together ([`crate::Store::apply`], [`crate::WriteTx::apply`]).
#[derive(Debug, Default, Clone)]
pub struct WriteBatch {
    pub(crate) ops: Vec<WriteOp>,
}

#[derive(Debug, Clone)]
pub(crate) enum WriteOp {
    /// Insert a new document (`Duplicate` if it exists).
    Insert(Document),
    /// Replace a document whose stored version is still `version` (`VersionConflict` if not).
    Update(Document),
    /// As `Update`, writing only the body and the provisioning status.
    UpdateBody(Document),
    /// Enqueue a job (`id`, created at Unix microseconds).
    Job {
        id: String,
        created_at: i64,
        job: NewJob,
    },
    /// Remove a settled job's row.
    JobDone(String),
    /// Remove a load balancer's graph except the LB document and its LB VMs.
    ClearGraph(String),
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> WriteBatch {
        WriteBatch::default()
    }

    /// Inserts `doc` (it must not exist).
    pub fn insert(&mut self, doc: Document) -> &mut Self {
        self.ops.push(WriteOp::Insert(doc));
        self
    }

    /// Replaces `doc` if its stored version is still `doc.version` (the stored version then
    /// becomes `doc.version + 1`).
    pub fn update(&mut self, doc: Document) -> &mut Self {
        self.ops.push(WriteOp::Update(doc));
        self
    }

    /// As [`WriteBatch::update`] when only the body and the provisioning status changed (the
    /// other columns are not written): cheaper, since the indexes on the other columns are
    /// left alone.
    pub fn update_body(&mut self, doc: Document) -> &mut Self {
        self.ops.push(WriteOp::UpdateBody(doc));
        self
    }

    /// Enqueues `job`; returns its id. Workers are woken once the batch is applied.
    pub fn enqueue(&mut self, job: NewJob) -> String {
        let id = Uuid::new_v4().to_string();
        self.ops.push(WriteOp::Job {
            id: id.clone(),
            created_at: chrono::Utc::now().timestamp_micros(),
            job,
        });
        id
    }

    /// Removes a settled job's row.
    pub(crate) fn job_done(&mut self, id: String) -> &mut Self {
        self.ops.push(WriteOp::JobDone(id));
        self
    }

    /// Removes load balancer `lb_id`'s graph except its own document and its LB VMs.
    pub(crate) fn clear_graph(&mut self, lb_id: String) -> &mut Self {
        self.ops.push(WriteOp::ClearGraph(lb_id));
        self
    }

    /// No writes.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Whether applying the batch enqueues a job.
    pub(crate) fn has_job(&self) -> bool {
        self.ops.iter().any(|op| matches!(op, WriteOp::Job { .. }))
    }

    /// Runs the batch on SQLite through the `klb_writes` view: one statement per
    /// [`ROWS_PER_STATEMENT`] rows (the caller wraps several in a transaction).
    pub(crate) async fn run_sqlite(&self, conn: &mut AnyConnection) -> Result<(), StoreError> {
        let ops: Vec<&WriteOp> = self.ops.iter().collect();
        run_ops(conn, &ops)
            .await
            .map_err(|e| self.classify(e, "apply write batch"))
    }

    /// Maps the trigger's conflict and a unique violation to the store's errors, naming the
    /// batch's first update or insert (exact for the usual one-document batch).
    pub(crate) fn classify(&self, e: sqlx::Error, op: &'static str) -> StoreError {
        let db = e.as_database_error();
        if db.is_some_and(|d| d.message().contains(CONFLICT))
            && let Some(WriteOp::Update(doc) | WriteOp::UpdateBody(doc)) = self
                .ops
                .iter()
                .find(|o| matches!(o, WriteOp::Update(_) | WriteOp::UpdateBody(_)))
        {
            return StoreError::conflict(doc);
        }
        if db.is_some_and(|d| d.is_unique_violation())
            && let Some(WriteOp::Insert(doc)) =
                self.ops.iter().find(|o| matches!(o, WriteOp::Insert(_)))
        {
            return StoreError::Duplicate {
                kind: doc.kind,
                id: doc.id.clone(),
            };
        }
        query(op)(e)
    }
}

async fn run_ops(conn: &mut AnyConnection, ops: &[&WriteOp]) -> Result<(), sqlx::Error> {
    for chunk in ops.chunks(ROWS_PER_STATEMENT) {
        let sql = insert_sql(chunk.len());
        // Statements of the common sizes stay prepared: preparing one compiles the view's six
        // triggers. Up to 16 three-write child creates grouped (a burst of 8+ clients); larger
        // groups are one-offs (sqlx caches 100 statements per connection).
        let mut q = sqlx::query(&sql).persistent(chunk.len() <= 48);
        for op in chunk {
            q = bind_op(q, op);
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

/// A batch waiting for the group writer, and where its result goes.
struct Queued {
    batch: WriteBatch,
    done: oneshot::Sender<Result<(), StoreError>>,
}

/// Group commit of SQLite write batches (see the module documentation).
#[derive(Debug)]
pub(crate) struct GroupWriter {
    queue: mpsc::UnboundedSender<Queued>,
}

impl GroupWriter {
    /// Starts the writer task on the one-connection writer pool. It ends when the
    /// `GroupWriter` is dropped.
    pub(crate) fn spawn(pool: AnyPool, jobs_ready: Arc<Notify>) -> GroupWriter {
        let (queue, rx) = mpsc::unbounded_channel();
        tokio::spawn(group_writer(pool, jobs_ready, rx));
        GroupWriter { queue }
    }

    /// Applies `batch` (at most [`ROWS_PER_STATEMENT`] writes) in one statement, possibly
    /// together with other callers' batches.
    pub(crate) async fn apply(&self, batch: WriteBatch) -> Result<(), StoreError> {
        let (done, result) = oneshot::channel();
        self.queue
            .send(Queued { batch, done })
            .map_err(|_| query("apply write batch")(sqlx::Error::PoolClosed))?;
        result
            .await
            .map_err(|_| query("apply write batch")(sqlx::Error::PoolClosed))?
    }
}

async fn group_writer(
    pool: AnyPool,
    jobs_ready: Arc<Notify>,
    mut rx: mpsc::UnboundedReceiver<Queued>,
) {
    let mut carry: Option<Queued> = None;
    loop {
        let first = match carry.take() {
            Some(q) => q,
            None => match rx.recv().await {
                Some(q) => q,
                None => return,
            },
        };
        // Everything already queued, up to one statement's rows; no waiting for more.
        let mut rows = first.batch.ops.len();
        let mut group = vec![first];
        while let Ok(next) = rx.try_recv() {
            if rows + next.batch.ops.len() > ROWS_PER_STATEMENT {
                carry = Some(next);
                break;
            }
            rows += next.batch.ops.len();
            group.push(next);
        }
        let mut conn = match pool.acquire().await {
            Ok(conn) => conn,
            Err(e) => {
                let msg = e.to_string();
                for q in group {
                    let _ = q
                        .done
                        .send(Err(query("acquire writer")(sqlx::Error::Protocol(
                            msg.clone(),
                        ))));
                }
                continue;
            }
        };
        let jobs = group.iter().any(|q| q.batch.has_job());
        let ops: Vec<&WriteOp> = group.iter().flat_map(|q| q.batch.ops.iter()).collect();
        if group.len() > 1 && run_ops(&mut conn, &ops).await.is_ok() {
            for q in group {
                let _ = q.done.send(Ok(()));
            }
        } else {
            // One batch, or a group that failed as a whole (nothing of it stayed): each
            // batch on its own, with its own result.
            for q in group {
                let result = q.batch.run_sqlite(&mut conn).await;
                let _ = q.done.send(result);
            }
        }
        drop(conn);
        if jobs {
            jobs_ready.notify_one();
        }
    }
}

/// Binds `n` NULLs (the columns an operation does not use).
fn bind_nulls<'q>(
    mut q: Query<'q, Any, AnyArguments<'q>>,
    n: usize,
) -> Query<'q, Any, AnyArguments<'q>> {
    for _ in 0..n {
        q = q.bind(None::<&str>);
    }
    q
}

fn insert_sql(rows: usize) -> String {
    // Anonymous `?` parameters: SQLite looks named ones (`$1`) up in a list when it parses
    // and binds them, which is quadratic in their number (6 ms instead of 1.4 ms for 100 rows).
    let row = format!("({})", vec!["?"; NUM_COLUMNS].join(", "));
    format!(
        "INSERT INTO klb_writes ({COLUMNS}) VALUES {}",
        vec![row.as_str(); rows].join(", ")
    )
}

fn bind_op<'q>(
    q: Query<'q, Any, AnyArguments<'q>>,
    op: &'q WriteOp,
) -> Query<'q, Any, AnyArguments<'q>> {
    match op {
        WriteOp::Insert(doc) | WriteOp::Update(doc) | WriteOp::UpdateBody(doc) => {
            let name = match op {
                WriteOp::Insert(_) => "insert",
                WriteOp::Update(_) => "update",
                _ => "update_body",
            };
            // The view's document columns are in `bind_doc`'s order; the job columns stay NULL.
            bind_nulls(bind_doc(q.bind(name), doc), 5)
        }
        WriteOp::JobDone(id) => {
            bind_nulls(q.bind("job_done").bind(None::<&str>).bind(id.as_str()), 14)
        }
        WriteOp::ClearGraph(lb) => bind_nulls(
            q.bind("clear_graph")
                .bind(None::<&str>)
                .bind(None::<&str>)
                .bind(None::<&str>)
                .bind(lb.as_str()),
            12,
        ),
        WriteOp::Job {
            id,
            created_at,
            job,
        } => q
            .bind("job")
            .bind(None::<&str>)
            .bind(id.as_str())
            .bind(None::<&str>)
            .bind(job.loadbalancer_id.as_str())
            .bind(None::<&str>)
            .bind(None::<&str>)
            .bind(None::<i64>)
            .bind(None::<&str>)
            .bind(None::<&str>)
            .bind(None::<i64>)
            .bind(None::<&str>)
            .bind(job.op.as_str())
            .bind(job.target_kind.as_str())
            .bind(job.target_id.as_str())
            .bind(*created_at)
            .bind(job.payload.as_deref()),
    }
}

/// Applying batches: on their own (group commit on SQLite) or inside a transaction.
impl Store {
    /// Applies `batch` atomically. On SQLite a batch of up to
    /// [`ROWS_PER_STATEMENT`] writes is one statement on the writer connection (no
    /// BEGIN/COMMIT round trips), shared with the batches of concurrent callers (group
    /// commit); larger batches and PostgreSQL use a transaction.
    pub async fn apply(&self, batch: WriteBatch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        match &self.inner.group {
            Some(group) if batch.ops.len() <= ROWS_PER_STATEMENT => group.apply(batch).await,
            _ => self.apply_alone(batch).await,
        }
    }

    /// [`Store::apply`] without group commit.
    pub(crate) async fn apply_alone(&self, batch: WriteBatch) -> Result<(), StoreError> {
        if self.inner.backend == Backend::Sqlite && batch.ops.len() <= ROWS_PER_STATEMENT {
            let mut conn = self
                .inner
                .writer
                .acquire()
                .await
                .map_err(query("acquire writer"))?;
            batch.run_sqlite(&mut conn).await?;
            if batch.has_job() {
                self.inner.jobs_ready.notify_one();
            }
            return Ok(());
        }
        let mut tx = self.begin().await?;
        tx.apply(batch).await?;
        tx.commit().await
    }
}

impl WriteTx {
    /// Applies `batch` inside this transaction (on SQLite through the write-batch view: one
    /// round trip per [`ROWS_PER_STATEMENT`] writes).
    pub async fn apply(&mut self, batch: WriteBatch) -> Result<(), StoreError> {
        if batch.has_job() {
            self.job_written = true;
        }
        if self.backend == Backend::Sqlite {
            return batch.run_sqlite(&mut self.tx).await;
        }
        for op in batch.ops {
            match op {
                WriteOp::Insert(doc) => self.insert(&doc).await?,
                WriteOp::Update(mut doc) => self.update(&mut doc).await?,
                WriteOp::UpdateBody(mut doc) => self.update_body(&mut doc).await?,
                WriteOp::Job {
                    id,
                    created_at,
                    job,
                } => self.insert_job(&id, created_at, &job).await?,
                WriteOp::JobDone(id) => {
                    sqlx::query("DELETE FROM jobs WHERE id = $1")
                        .bind(id)
                        .execute(&mut *self.tx)
                        .await
                        .map_err(query("settle job"))?;
                }
                WriteOp::ClearGraph(lb) => {
                    sqlx::query(&format!("{} $1", CLEAR_GRAPH))
                        .bind(lb)
                        .execute(&mut *self.tx)
                        .await
                        .map_err(query("settle delete"))?;
                }
            }
        }
        Ok(())
    }
}
