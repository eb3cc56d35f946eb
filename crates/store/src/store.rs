//! The store handle, write transactions, lists and the job completion rules.

use std::sync::Arc;
use std::time::Duration;

use klb_model::{
    HealthMonitor, Kind, L7Policy, L7Rule, Listener, LoadBalancer, Member, Pool, Provisioned,
    ProvisioningStatus, Resource,
};
use sqlx::any::{AnyArguments, AnyPoolOptions};
use sqlx::query::Query;
use sqlx::{Any, AnyConnection, AnyPool, Executor, Row, Transaction};
use tokio::sync::Notify;
use tracing::{debug, warn};
use uuid::Uuid;

use crate::StoreError;
use crate::batch::{self, GroupWriter, WriteBatch, WriteOp};
use crate::cache::{DEFAULT_CACHE_BYTES, RenderCache};
use crate::document::{Document, ListQuery, Relation, Stamp};
use crate::error::query;
use crate::jobs::{Job, NewJob, Outcome};
use crate::kind::DocumentKind;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Which database the store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// One SQLite file, one writer connection.
    Sqlite,
    /// PostgreSQL (several control-plane nodes may share it).
    Postgres,
}

/// How to open the store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// `sqlite://PATH`, `sqlite:PATH` or `postgres://...`.
    pub url: String,
    /// Reader connections (SQLite; one writer), or connections of each of the writer and
    /// the reader pool (PostgreSQL).
    pub max_connections: u32,
    /// Bound of the [`RenderCache`] in bytes (0 disables it).
    pub cache_bytes: usize,
}

impl StoreOptions {
    /// Defaults: 4 connections.
    pub fn new(url: impl Into<String>) -> Self {
        StoreOptions {
            url: url.into(),
            max_connections: 4,
            cache_bytes: DEFAULT_CACHE_BYTES,
        }
    }
}

/// The store handle. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    backend: Backend,
    writer: AnyPool,
    reader: AnyPool,
    jobs_ready: Arc<Notify>,
    cache: RenderCache,
    /// Group commit of [`Store::apply`] on SQLite.
    group: Option<GroupWriter>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.inner.backend)
            .finish()
    }
}

/// Removes a password from a URL before it reaches a log or an error message.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{}:***{}", &url[..s + 3], user, &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

impl Store {
    /// Opens (creating if needed) the database at `url` and applies migrations.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        Store::open_with(StoreOptions::new(url)).await
    }

    /// Opens with explicit options.
    pub async fn open_with(options: StoreOptions) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let url = options.url.as_str();
        let open_err = |source| StoreError::Open {
            url: redact(url),
            source,
        };
        let (backend, writer, reader) = if url.starts_with("postgres://")
            || url.starts_with("postgresql://")
        {
            // Two pools, as on SQLite: a request that holds a write transaction and reads
            // through the store (e.g. the quota limit inside a create's transaction) takes a
            // second connection. From one shared pool, as many such requests as connections
            // each held one and waited for another until the acquire timeout (every create
            // stalled 30 s with 20 concurrent clients: the reliability suite's finding).
            // Plain reads never wait for a writer connection, so two pools cannot deadlock.
            // Acquire timeout 10 s: while PostgreSQL is down, sqlx retries refused connects
            // until this deadline, so it bounds how long a request waits before its 503.
            let pool = |n: u32| {
                AnyPoolOptions::new()
                    .max_connections(n.max(2))
                    .acquire_timeout(Duration::from_secs(10))
            };
            let writer = pool(options.max_connections)
                .connect(url)
                .await
                .map_err(open_err)?;
            let reader = pool(options.max_connections)
                .connect(url)
                .await
                .map_err(open_err)?;
            (Backend::Postgres, writer, reader)
        } else {
            let url = sqlite_url(url);
            // The database holds secrets (certificate keys, webhook tokens): owner-only.
            restrict_sqlite_file(&url).map_err(|source| StoreError::Permissions {
                url: redact(&url),
                source,
            })?;
            // The writer pool has exactly one connection: write transactions queue on it
            // rather than failing with SQLITE_BUSY.
            // No ping before each acquire (sqlx's default): on SQLite a ping is one more
            // hand-off to the connection's thread per statement, and a local file does not
            // drop connections the way a network server does.
            let writer = AnyPoolOptions::new()
                .max_connections(1)
                .test_before_acquire(false)
                .acquire_timeout(Duration::from_secs(60))
                .after_connect(|conn, _| {
                    Box::pin(async move {
                        conn.execute("PRAGMA journal_mode=WAL; PRAGMA busy_timeout=10000; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=OFF;")
                            .await?;
                        // TEMP objects live with the connection, so every (re)connect makes
                        // them; SQLite resolves the triggers' tables when they fire, so this
                        // may run before the migrations.
                        conn.execute(batch::sqlite_setup().as_str()).await?;
                        Ok(())
                    })
                })
                .connect(&url)
                .await
                .map_err(open_err)?;
            MIGRATOR.run(&writer).await.map_err(StoreError::Migrate)?;
            let reader = AnyPoolOptions::new()
                .max_connections(options.max_connections.max(1))
                .test_before_acquire(false)
                .acquire_timeout(Duration::from_secs(30))
                .after_connect(|conn, _| {
                    Box::pin(async move {
                        conn.execute("PRAGMA busy_timeout=10000;").await?;
                        Ok(())
                    })
                })
                .connect(&url)
                .await
                .map_err(open_err)?;
            (Backend::Sqlite, writer, reader)
        };
        if backend == Backend::Postgres {
            MIGRATOR.run(&writer).await.map_err(StoreError::Migrate)?;
        }
        let jobs_ready = Arc::new(Notify::new());
        let group = (backend == Backend::Sqlite)
            .then(|| GroupWriter::spawn(writer.clone(), jobs_ready.clone()));
        Ok(Store {
            inner: Arc::new(Inner {
                backend,
                writer,
                reader,
                jobs_ready,
                cache: RenderCache::new(options.cache_bytes),
                group,
            }),
        })
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        self.inner.backend
    }

    /// Notified (one permit) after every commit that enqueued a job; workers wait on it with
    /// a poll fallback.
    pub fn jobs_ready(&self) -> Arc<Notify> {
        self.inner.jobs_ready.clone()
    }

    /// Closes the pools (waits for connections to be returned).
    pub async fn close(&self) {
        self.inner.writer.close().await;
        self.inner.reader.close().await;
    }

    /// Starts a write transaction.
    pub async fn begin(&self) -> Result<WriteTx, StoreError> {
        let tx = self.inner.writer.begin().await.map_err(query("begin"))?;
        Ok(WriteTx {
            tx,
            backend: self.inner.backend,
            jobs_ready: self.inner.jobs_ready.clone(),
            job_written: false,
        })
    }

    /// Applies `batch` atomically. On SQLite a batch of up to
    /// [`batch::ROWS_PER_STATEMENT`] writes is one statement on the writer connection (no
    /// BEGIN/COMMIT round trips), shared with the batches of concurrent callers (group
    /// commit); larger batches and PostgreSQL use a transaction.
    pub async fn apply(&self, batch: WriteBatch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        match &self.inner.group {
            Some(group) if batch.ops.len() <= batch::ROWS_PER_STATEMENT => group.apply(batch).await,
            _ => self.apply_alone(batch).await,
        }
    }

    /// [`Store::apply`] without group commit.
    async fn apply_alone(&self, batch: WriteBatch) -> Result<(), StoreError> {
        if self.inner.backend == Backend::Sqlite && batch.ops.len() <= batch::ROWS_PER_STATEMENT {
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

    /// One document by kind and id (`DELETED` rows included; callers decide).
    pub async fn get(
        &self,
        kind: impl Into<DocumentKind>,
        id: &str,
    ) -> Result<Option<Document>, StoreError> {
        let sql = format!(
            "SELECT {} FROM resources WHERE kind = $1 AND id = $2",
            Document::COLUMNS
        );
        let row = sqlx::query(&sql)
            .bind(kind.into().as_str())
            .bind(id)
            .fetch_optional(&self.inner.reader)
            .await
            .map_err(query("get"))?;
        row.map(|r| Document::from_row(&r))
            .transpose()
            .map_err(query("get"))
    }

    /// One model resource by id; `None` when absent or `DELETED`.
    pub async fn get_resource<T: Resource>(&self, id: Uuid) -> Result<Option<T>, StoreError> {
        match self.get(T::KIND, &id.to_string()).await? {
            Some(doc) if doc.status() != Some(ProvisioningStatus::Deleted) => {
                Ok(Some(doc.decode()?))
            }
            _ => Ok(None),
        }
    }

    /// Documents matching `q`, ordered by `(created_at, id)`.
    pub async fn list(&self, q: &ListQuery) -> Result<Vec<Document>, StoreError> {
        list_on(&self.inner.reader, q).await
    }

    /// Number of documents matching `q` (ignores `after`, `descending` and `limit`), read
    /// outside any transaction ([`WriteTx::count`] is the exact one under concurrent writes).
    pub async fn count(&self, q: &ListQuery) -> Result<i64, StoreError> {
        count_on(&self.inner.reader, q).await
    }

    /// The stamps of the documents [`Store::list`] would return for `q`, in the same order,
    /// without their bodies: with [`Store::render_cache`] a list reads bodies
    /// ([`Store::get_many`]) only of documents changed since they were last rendered.
    pub async fn list_stamps(&self, q: &ListQuery) -> Result<Vec<Stamp>, StoreError> {
        if let Some(stamps) = self.list_stamps_joined(q).await? {
            return Ok(stamps);
        }
        debug!(kind = ?q.kind, "stamps not splittable, listing them row by row");
        let (sql, binds) = list_sql("id, created_at, version", q);
        let mut stmt = sqlx::query(&sql);
        for b in &binds {
            stmt = stmt.bind(b.as_str());
        }
        let rows = stmt
            .fetch_all(&self.inner.reader)
            .await
            .map_err(query("list stamps"))?;
        rows.iter()
            .map(|r| {
                Ok(Stamp {
                    id: r.try_get(0)?,
                    created_at: r.try_get(1)?,
                    version: r.try_get(2)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(query("list stamps"))
    }

    /// [`Store::list_stamps`] as one aggregated row instead of a row per document: both
    /// drivers pay per row (on SQLite a channel message from the connection's thread and a
    /// copy of every value), which was most of the cost of a 200-object list. Records are
    /// `created_at US version US id`, separated by RS (ASCII unit/record separators); `None`
    /// when an id contains a separator (the record count then does not match).
    async fn list_stamps_joined(&self, q: &ListQuery) -> Result<Option<Vec<Stamp>>, StoreError> {
        let (inner, mut binds) = list_sql("id, created_at, version", q);
        let dir = if q.descending { "DESC" } else { "ASC" };
        binds.push(UNIT_SEP.to_owned());
        let us = binds.len();
        binds.push(RECORD_SEP.to_owned());
        let rs = binds.len();
        // string_agg with ORDER BY: PostgreSQL, and SQLite since 3.44 (sqlx bundles 3.46).
        let sql = format!(
            "SELECT COUNT(*), string_agg(created_at || CAST(${us} AS TEXT) || CAST(version AS TEXT) || CAST(${us} AS TEXT) || id, \
             CAST(${rs} AS TEXT) ORDER BY created_at {dir}, id {dir}) FROM ({inner}) page"
        );
        let mut stmt = sqlx::query(&sql);
        for b in &binds {
            stmt = stmt.bind(b.as_str());
        }
        let row = stmt
            .fetch_one(&self.inner.reader)
            .await
            .map_err(query("list stamps"))?;
        let count: i64 = row.try_get(0).map_err(query("list stamps"))?;
        let joined: Option<String> = row.try_get(1).map_err(query("list stamps"))?;
        Ok(parse_stamps(joined.as_deref().unwrap_or(""), count))
    }

    /// Documents of `kind` with the given ids (`DELETED` ones included), in no particular
    /// order; absent ids are skipped.
    pub async fn get_many(
        &self,
        kind: impl Into<DocumentKind>,
        ids: &[String],
    ) -> Result<Vec<Document>, StoreError> {
        let kind = kind.into().as_str();
        let mut docs = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(500) {
            let sql = format!(
                "SELECT {} FROM resources WHERE kind = $1 AND id IN ({})",
                Document::COLUMNS,
                placeholders(2, chunk.len())
            );
            let mut stmt = sqlx::query(&sql).bind(kind);
            for id in chunk {
                stmt = stmt.bind(id.as_str());
            }
            let rows = stmt
                .fetch_all(&self.inner.reader)
                .await
                .map_err(query("get many"))?;
            for r in &rows {
                docs.push(Document::from_row(r).map_err(query("get many"))?);
            }
        }
        Ok(docs)
    }

    /// The cache of values derived from documents (the API's rendered objects), shared by
    /// every clone of this store. See [`RenderCache`] for why it never serves stale data.
    pub fn render_cache(&self) -> &RenderCache {
        &self.inner.cache
    }

    /// Relation rows of every document whose `parent_id` or `ref_id` is one of `ids`
    /// (excluding `DELETED`). One query for a whole page of parents.
    pub async fn relations(&self, ids: &[String]) -> Result<Vec<Relation>, StoreError> {
        relations_on(&self.inner.reader, ids, true).await
    }

    /// Like [`Store::relations`] but only children (`parent_id` in `ids`): one index lookup
    /// per id, for kinds nothing refers to by `ref_id`.
    pub async fn children(&self, ids: &[String]) -> Result<Vec<Relation>, StoreError> {
        relations_on(&self.inner.reader, ids, false).await
    }

    /// Every live document of a load balancer's graph (the LB itself included).
    pub async fn graph(&self, loadbalancer_id: &str) -> Result<Vec<Document>, StoreError> {
        let q = ListQuery {
            loadbalancer_id: Some(loadbalancer_id.to_owned()),
            ..Default::default()
        };
        list_on(&self.inner.reader, &q).await
    }

    /// Every live document of the load balancer graph that document `(kind, id)` belongs to
    /// (the LB itself included), in one query: what a change of one object reads to check it
    /// against its LB, parent and siblings. Empty when `(kind, id)` does not exist.
    pub async fn graph_of(
        &self,
        kind: impl Into<DocumentKind>,
        id: &str,
    ) -> Result<Vec<Document>, StoreError> {
        let sql = format!(
            "SELECT {} FROM resources WHERE loadbalancer_id = \
             (SELECT loadbalancer_id FROM resources WHERE kind = $1 AND id = $2) \
             AND (provisioning_status IS NULL OR provisioning_status <> 'DELETED') \
             ORDER BY created_at, id",
            Document::COLUMNS
        );
        let rows = sqlx::query(&sql)
            .bind(kind.into().as_str())
            .bind(id)
            .fetch_all(&self.inner.reader)
            .await
            .map_err(query("graph of"))?;
        rows.iter()
            .map(Document::from_row)
            .collect::<Result<_, _>>()
            .map_err(query("graph of"))
    }

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

    /// Ends `job` and applies Octavia's completion rules to its load balancer's graph, in one
    /// transaction:
    ///
    /// Success: objects in `PENDING_CREATE`/`PENDING_UPDATE` become `ACTIVE`; objects in
    /// `PENDING_DELETE` are removed with their descendants (listeners whose default pool was
    /// removed lose the reference); a load balancer in `PENDING_DELETE` loses every child and
    /// is kept as `DELETED` (hidden from the API). The job row is deleted.
    ///
    /// Failure: the target and every other pending object become `ERROR`, except that the load
    /// balancer and listeners that were only locked for a child change (`PENDING_UPDATE`,
    /// not the target) go back to `ACTIVE`. The job stays with `state = failed` and
    /// `last_error = reason`.
    ///
    /// Reverted (a change klb made on its own, undone completely): the job fails the same way
    /// and every pending object goes back to `ACTIVE`.
    ///
    /// Every document whose status changes gets `updated_at` = now, and so does a listener
    /// that loses its default pool (Octavia's `updated_at` changes with every write of a row).
    pub async fn settle_job(&self, job: &Job, outcome: Outcome) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        Self::settle_in(&mut tx, job, &outcome).await?;
        tx.commit().await?;
        debug!(job = %job.id, lb = %job.loadbalancer_id, op = job.op.as_str(), ?outcome, "job settled");
        Ok(())
    }

    /// [`Store::settle_job`] for several jobs (of different load balancers, as
    /// [`Store::claim_jobs`] returns them): all settle or none. Successes are settled together
    /// from one read of their pending objects; when no subtree is removed (creates, updates,
    /// LB deletes) that is one write batch whose versioned updates check that nothing changed
    /// since the read, so it needs no transaction (one statement on SQLite). Otherwise, or on
    /// a conflict, one transaction.
    pub async fn settle_jobs(&self, jobs: &[Job], outcome: Outcome) -> Result<(), StoreError> {
        let mut lbs: Vec<&str> = jobs.iter().map(|j| j.loadbalancer_id.as_str()).collect();
        lbs.sort_unstable();
        lbs.dedup();
        let together = outcome == Outcome::Success && lbs.len() == jobs.len();
        if together {
            let mut reader = self
                .inner
                .reader
                .acquire()
                .await
                .map_err(query("acquire reader"))?;
            let pending = pending_of(&mut reader, &lb_ids(jobs)).await?;
            drop(reader);
            let plan = SettlePlan::successes(jobs, pending)?;
            if plan.removed.is_empty() {
                // Not through the group writer: API requests would then wait for this
                // background work; on its own it takes turns with them on the writer.
                match self.apply_alone(plan.writes).await {
                    Ok(()) => {
                        debug!(jobs = jobs.len(), "jobs settled");
                        return Ok(());
                    }
                    Err(StoreError::VersionConflict { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        let mut tx = self.begin().await?;
        if together {
            Self::settle_successes_in(&mut tx, jobs).await?;
        } else {
            for job in jobs {
                Self::settle_in(&mut tx, job, &outcome).await?;
            }
        }
        tx.commit().await?;
        debug!(jobs = jobs.len(), ?outcome, "jobs settled");
        Ok(())
    }

    /// The success rules of [`Store::settle_job`] for jobs of distinct load balancers.
    async fn settle_successes_in(tx: &mut WriteTx, jobs: &[Job]) -> Result<(), StoreError> {
        let pending = pending_of(&mut tx.tx, &lb_ids(jobs)).await?;
        let plan = SettlePlan::successes(jobs, pending)?;
        tx.apply(plan.writes).await?;
        // After the status writes: clearing a listener's default pool re-reads it.
        tx.remove_subtrees(plan.removed).await
    }

    async fn settle_in(tx: &mut WriteTx, job: &Job, outcome: &Outcome) -> Result<(), StoreError> {
        match outcome {
            Outcome::Success => Self::settle_successes_in(tx, std::slice::from_ref(job)).await?,
            Outcome::Reverted(reason) => {
                let pending =
                    pending_of(&mut tx.tx, std::slice::from_ref(&job.loadbalancer_id)).await?;
                Self::fail_job_row(tx, job, reason).await?;
                for mut doc in pending {
                    tx.set_status(&mut doc, ProvisioningStatus::Active).await?;
                }
            }
            Outcome::Failed(reason) => {
                let pending =
                    pending_of(&mut tx.tx, std::slice::from_ref(&job.loadbalancer_id)).await?;
                Self::fail_job_row(tx, job, reason).await?;
                let target_is_lb = job.target_kind == Kind::LoadBalancer;
                for mut doc in pending {
                    let is_target = doc.id == job.target_id && doc.kind == job.target_kind;
                    let only_locked = !is_target
                        && doc.status() == Some(ProvisioningStatus::PendingUpdate)
                        && ((doc.kind == Kind::LoadBalancer && !target_is_lb)
                            || doc.kind == Kind::Listener);
                    if only_locked {
                        tx.set_status(&mut doc, ProvisioningStatus::Active).await?;
                    } else {
                        tx.set_status(&mut doc, ProvisioningStatus::Error).await?;
                    }
                }
            }
        }
        Ok(())
    }

    async fn fail_job_row(tx: &mut WriteTx, job: &Job, reason: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE jobs SET state = 'failed', last_error = $1, lease_owner = NULL, lease_expires_at = NULL WHERE id = $2")
            .bind(reason)
            .bind(&job.id)
            .execute(&mut *tx.tx)
            .await
            .map_err(query("settle job"))?;
        Ok(())
    }
}

/// `sqlite:klb.db` / `sqlite://klb.db` / a bare path → a URL that creates the file.
fn sqlite_url(url: &str) -> String {
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    if path.contains('?') {
        format!("sqlite://{path}")
    } else {
        format!("sqlite://{path}?mode=rwc")
    }
}

/// The file of a `sqlite://PATH?...` URL; `None` for in-memory databases.
fn sqlite_file(url: &str) -> Option<std::path::PathBuf> {
    let rest = url.strip_prefix("sqlite://").unwrap_or(url);
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    if path.is_empty() || path == ":memory:" || query.split('&').any(|kv| kv == "mode=memory") {
        return None;
    }
    Some(std::path::PathBuf::from(path))
}

/// Creates the database file mode 0600 before SQLite opens it, and takes group/other access
/// away from an existing one and its `-wal`/`-shm` files. SQLite creates the `-wal` and `-shm`
/// files with the database file's permissions, so they follow.
fn restrict_sqlite_file(url: &str) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let Some(path) = sqlite_file(url) else {
        return Ok(());
    };
    if !path.exists() {
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(_) => {}
            // Another process created it first: fall through to the chmod below.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            // `mode=ro` databases and missing directories: let SQLite report it.
            Err(_) => return Ok(()),
        }
    }
    let mut wal = path.clone().into_os_string();
    wal.push("-wal");
    let mut shm = path.clone().into_os_string();
    shm.push("-shm");
    for file in [path.into_os_string(), wal, shm] {
        let Ok(meta) = std::fs::metadata(&file) else {
            continue;
        };
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode & 0o700))?;
        }
    }
    Ok(())
}

fn now_millis() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn placeholders(start: usize, n: usize) -> String {
    (start..start + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

async fn list_on<'e, E>(exec: E, q: &ListQuery) -> Result<Vec<Document>, StoreError>
where
    E: Executor<'e, Database = Any>,
{
    let (sql, binds) = list_sql(Document::COLUMNS, q);
    let mut stmt = sqlx::query(&sql);
    for b in &binds {
        stmt = stmt.bind(b.as_str());
    }
    let rows = stmt.fetch_all(exec).await.map_err(query("list"))?;
    rows.iter()
        .map(Document::from_row)
        .collect::<Result<_, _>>()
        .map_err(query("list"))
}

async fn count_on<'e, E>(exec: E, q: &ListQuery) -> Result<i64, StoreError>
where
    E: Executor<'e, Database = Any>,
{
    let mut sql = String::from("SELECT COUNT(*) FROM resources WHERE kind = $1");
    // A count is always of one kind (quota checks); `None` counts nothing.
    let Some(kind) = q.kind else {
        return Ok(0);
    };
    let mut binds: Vec<&str> = vec![kind.as_str()];
    for (col, v) in [
        ("project_id", &q.project_id),
        ("loadbalancer_id", &q.loadbalancer_id),
        ("parent_id", &q.parent_id),
        ("ref_id", &q.ref_id),
    ] {
        if let Some(v) = v {
            binds.push(v.as_str());
            sql.push_str(&format!(" AND {col} = ${}", binds.len()));
        }
    }
    if !q.include_deleted {
        sql.push_str(" AND (provisioning_status IS NULL OR provisioning_status <> 'DELETED')");
    }
    let mut stmt = sqlx::query_scalar::<_, i64>(&sql);
    for b in binds {
        stmt = stmt.bind(b);
    }
    stmt.fetch_one(exec).await.map_err(query("count"))
}

/// Separators of [`Store::list_stamps`]'s aggregated row (never in timestamps or numbers).
const UNIT_SEP: &str = "\u{1f}";
const RECORD_SEP: &str = "\u{1e}";

/// Splits [`Store::list_stamps`]'s aggregated row; `None` unless it holds exactly `count`
/// well-formed records.
fn parse_stamps(joined: &str, count: i64) -> Option<Vec<Stamp>> {
    if count == 0 {
        return joined.is_empty().then(Vec::new);
    }
    let stamps = joined
        .split(RECORD_SEP)
        .map(|rec| {
            let mut parts = rec.splitn(3, UNIT_SEP);
            let created_at = parts.next()?;
            let version = parts.next()?.parse().ok()?;
            let id = parts.next()?;
            if id.contains(UNIT_SEP) {
                return None;
            }
            Some(Stamp {
                id: id.to_owned(),
                created_at: created_at.to_owned(),
                version,
            })
        })
        .collect::<Option<Vec<_>>>()?;
    (stamps.len() as i64 == count).then_some(stamps)
}

/// The SELECT of a list query (`columns` of the matching rows, in list order) and its binds.
fn list_sql(columns: &str, q: &ListQuery) -> (String, Vec<String>) {
    let mut sql = format!("SELECT {columns} FROM resources WHERE 1 = 1");
    let mut binds: Vec<String> = Vec::new();
    let mut cond = |sql: &mut String, col: &str, v: &str| {
        binds.push(v.to_owned());
        sql.push_str(&format!(" AND {col} = ${}", binds.len()));
    };
    if let Some(kind) = q.kind {
        cond(&mut sql, "kind", kind.as_str());
    }
    if let Some(v) = &q.project_id {
        cond(&mut sql, "project_id", v);
    }
    if let Some(v) = &q.loadbalancer_id {
        cond(&mut sql, "loadbalancer_id", v);
    }
    if let Some(v) = &q.parent_id {
        cond(&mut sql, "parent_id", v);
    }
    if let Some(v) = &q.ref_id {
        cond(&mut sql, "ref_id", v);
    }
    if !q.include_deleted {
        sql.push_str(" AND (provisioning_status IS NULL OR provisioning_status <> 'DELETED')");
    }
    let (cmp, dir) = if q.descending {
        ("<", "DESC")
    } else {
        (">", "ASC")
    };
    if let Some((created, id)) = &q.after {
        binds.push(created.clone());
        let c = binds.len();
        binds.push(id.clone());
        let i = binds.len();
        sql.push_str(&format!(
            " AND (created_at {cmp} ${c} OR (created_at = ${c} AND id {cmp} ${i}))"
        ));
    }
    sql.push_str(&format!(" ORDER BY created_at {dir}, id {dir}"));
    if let Some(limit) = q.limit {
        sql.push_str(&format!(" LIMIT {}", limit.max(0)));
    }
    (sql, binds)
}

async fn relations_on<'e, E>(
    exec: E,
    ids: &[String],
    with_refs: bool,
) -> Result<Vec<Relation>, StoreError>
where
    E: Executor<'e, Database = Any>,
{
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let p = placeholders(1, ids.len());
    let cond = if with_refs {
        format!("(parent_id IN ({p}) OR ref_id IN ({p}))")
    } else {
        format!("parent_id IN ({p})")
    };
    let sql = format!(
        "SELECT kind, id, parent_id, ref_id, position FROM resources \
         WHERE {cond} \
         AND (provisioning_status IS NULL OR provisioning_status <> 'DELETED') \
         ORDER BY created_at, id"
    );
    let mut stmt = sqlx::query(&sql);
    for id in ids {
        stmt = stmt.bind(id.as_str());
    }
    let rows = stmt.fetch_all(exec).await.map_err(query("relations"))?;
    rows.iter()
        .map(Relation::from_row)
        .collect::<Result<_, _>>()
        .map_err(query("relations"))
}

/// A write transaction. Dropping it without [`WriteTx::commit`] rolls back.
pub struct WriteTx {
    tx: Transaction<'static, Any>,
    backend: Backend,
    jobs_ready: Arc<Notify>,
    job_written: bool,
}

impl WriteTx {
    /// Commits; wakes job workers if a job was enqueued.
    pub async fn commit(self) -> Result<(), StoreError> {
        self.tx.commit().await.map_err(query("commit"))?;
        if self.job_written {
            self.jobs_ready.notify_one();
        }
        Ok(())
    }

    /// Reads a document and, on PostgreSQL, locks its row until the transaction ends (SQLite
    /// needs no row lock: this transaction is the only writer).
    pub async fn get_for_update(
        &mut self,
        kind: impl Into<DocumentKind>,
        id: &str,
    ) -> Result<Option<Document>, StoreError> {
        let lock = match self.backend {
            Backend::Postgres => " FOR UPDATE",
            Backend::Sqlite => "",
        };
        let sql = format!(
            "SELECT {} FROM resources WHERE kind = $1 AND id = $2{lock}",
            Document::COLUMNS
        );
        let row = sqlx::query(&sql)
            .bind(kind.into().as_str())
            .bind(id)
            .fetch_optional(&mut *self.tx)
            .await
            .map_err(query("get for update"))?;
        row.map(|r| Document::from_row(&r))
            .transpose()
            .map_err(query("get for update"))
    }

    /// [`WriteTx::get_for_update`] decoded as a model resource; `None` if absent or DELETED.
    pub async fn get_resource<T: Resource>(&mut self, id: Uuid) -> Result<Option<T>, StoreError> {
        match self.get_for_update(T::KIND, &id.to_string()).await? {
            Some(doc) if doc.status() != Some(ProvisioningStatus::Deleted) => {
                Ok(Some(doc.decode()?))
            }
            _ => Ok(None),
        }
    }

    /// Lists inside the transaction (sees its own writes).
    pub async fn list(&mut self, q: &ListQuery) -> Result<Vec<Document>, StoreError> {
        list_on(&mut *self.tx, q).await
    }

    /// Lists model resources inside the transaction.
    pub async fn list_resources<T: Resource>(
        &mut self,
        mut q: ListQuery,
    ) -> Result<Vec<T>, StoreError> {
        q.kind = Some(T::KIND.into());
        self.list(&q).await?.iter().map(Document::decode).collect()
    }

    /// Number of documents matching `q` (ignores `after`, `descending` and `limit`); used for
    /// quota checks inside the writer's transaction.
    pub async fn count(&mut self, q: &ListQuery) -> Result<i64, StoreError> {
        count_on(&mut *self.tx, q).await
    }

    /// Relation rows inside the transaction.
    pub async fn relations(&mut self, ids: &[String]) -> Result<Vec<Relation>, StoreError> {
        relations_on(&mut *self.tx, ids, true).await
    }

    /// Inserts a new document (`Duplicate` if `(kind, id)` exists).
    pub async fn insert(&mut self, doc: &Document) -> Result<(), StoreError> {
        let res = bind_doc(sqlx::query(
            "INSERT INTO resources (kind, id, project_id, loadbalancer_id, parent_id, ref_id, position, provisioning_status, created_at, version, body) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        ), doc)
        .execute(&mut *self.tx)
        .await;
        match res {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_database_error()
                    .is_some_and(|d| d.is_unique_violation()) =>
            {
                Err(StoreError::Duplicate {
                    kind: doc.kind,
                    id: doc.id.clone(),
                })
            }
            Err(e) => Err(query("insert")(e)),
        }
    }

    /// Replaces a document if its stored version is still `doc.version`; the stored version
    /// becomes `doc.version + 1` (and so does `doc.version`).
    pub async fn update(&mut self, doc: &mut Document) -> Result<(), StoreError> {
        let res = sqlx::query(
            "UPDATE resources SET project_id = $3, loadbalancer_id = $4, parent_id = $5, ref_id = $6, position = $7, \
             provisioning_status = $8, created_at = $9, version = $10 + 1, body = $11 WHERE kind = $1 AND id = $2 AND version = $10",
        );
        let res = bind_doc(res, doc)
            .execute(&mut *self.tx)
            .await
            .map_err(query("update"))?;
        versioned_write(res.rows_affected(), doc)
    }

    /// As [`WriteTx::update`], writing only the body and the provisioning status (the other
    /// columns must be unchanged; their indexes are left alone).
    pub async fn update_body(&mut self, doc: &mut Document) -> Result<(), StoreError> {
        let res = sqlx::query(
            "UPDATE resources SET provisioning_status = $3, version = $4 + 1, body = $5 \
             WHERE kind = $1 AND id = $2 AND version = $4",
        )
        .bind(doc.kind.as_str())
        .bind(doc.id.as_str())
        .bind(doc.provisioning_status.as_deref())
        .bind(doc.version)
        .bind(doc.body.as_str())
        .execute(&mut *self.tx)
        .await
        .map_err(query("update"))?;
        versioned_write(res.rows_affected(), doc)
    }

    /// Inserts a model resource.
    pub async fn insert_resource<T: Resource>(&mut self, value: &T) -> Result<(), StoreError> {
        self.insert(&Document::from_resource(value)?).await
    }

    /// Writes a model resource over its stored version (the caller holds the LB lock, which
    /// serializes writers of one graph). Inserts it if absent.
    pub async fn put_resource<T: Resource>(&mut self, value: &T) -> Result<(), StoreError> {
        let doc = Document::from_resource(value)?;
        // Unversioned: `bind_doc` binds the version as $10, which this statement leaves unused
        // (both drivers accept that; the LB lock serializes writers of one graph).
        let res = sqlx::query(
            "UPDATE resources SET project_id = $3, loadbalancer_id = $4, parent_id = $5, ref_id = $6, position = $7, \
             provisioning_status = $8, created_at = $9, version = version + 1, body = $11 WHERE kind = $1 AND id = $2",
        );
        let res = bind_doc(res, &doc)
            .execute(&mut *self.tx)
            .await
            .map_err(query("put"))?;
        if res.rows_affected() == 0 {
            self.insert(&doc).await?;
        }
        Ok(())
    }

    /// Deletes one document; returns whether it existed.
    pub async fn delete(
        &mut self,
        kind: impl Into<DocumentKind>,
        id: &str,
    ) -> Result<bool, StoreError> {
        let res = sqlx::query("DELETE FROM resources WHERE kind = $1 AND id = $2")
            .bind(kind.into().as_str())
            .bind(id)
            .execute(&mut *self.tx)
            .await
            .map_err(query("delete"))?;
        Ok(res.rows_affected() > 0)
    }

    /// Applies `batch` inside this transaction (on SQLite through the write-batch view: one
    /// round trip per [`batch::ROWS_PER_STATEMENT`] writes).
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
                    sqlx::query(&format!("{} $1", batch::CLEAR_GRAPH))
                        .bind(lb)
                        .execute(&mut *self.tx)
                        .await
                        .map_err(query("settle delete"))?;
                }
            }
        }
        Ok(())
    }

    /// Enqueues a job; workers are woken at commit.
    pub async fn enqueue_job(&mut self, job: NewJob) -> Result<String, StoreError> {
        let id = Uuid::new_v4().to_string();
        self.insert_job(&id, chrono::Utc::now().timestamp_micros(), &job)
            .await?;
        Ok(id)
    }

    async fn insert_job(
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

    /// `DELETE FROM table WHERE column IN (values)` plus `extra` conditions, 500 values per
    /// statement.
    async fn delete_where_in(
        &mut self,
        table: &str,
        column: &str,
        extra: &str,
        values: &[String],
        op: &'static str,
    ) -> Result<(), StoreError> {
        for chunk in values.chunks(500) {
            let sql = format!(
                "DELETE FROM {table} WHERE {column} IN ({}){extra}",
                placeholders(1, chunk.len())
            );
            let mut q = sqlx::query(&sql);
            for v in chunk {
                q = q.bind(v.as_str());
            }
            q.execute(&mut *self.tx).await.map_err(query(op))?;
        }
        Ok(())
    }

    /// Sets a document's provisioning status (column and body) and writes it.
    async fn set_status(
        &mut self,
        doc: &mut Document,
        status: ProvisioningStatus,
    ) -> Result<(), StoreError> {
        with_status(doc, status)?;
        self.update_body(doc).await
    }

    /// Removes documents and everything below them (children by `parent_id`), and clears
    /// listeners' default-pool references to removed pools.
    async fn remove_subtrees(&mut self, mut ids: Vec<String>) -> Result<(), StoreError> {
        let mut all = Vec::new();
        while !ids.is_empty() {
            let rels = self.relations(&ids).await?;
            // Listeners pointing at a removed pool keep living without their default pool.
            for rel in rels.iter().filter(|r| {
                r.kind == Kind::Listener && r.ref_id.as_ref().is_some_and(|p| ids.contains(p))
            }) {
                if let Some(mut doc) = self.get_for_update(rel.kind, &rel.id).await? {
                    doc.rewrite(|listener: &mut Listener| {
                        listener.default_pool_id = None;
                        listener.updated_at = Some(now_micros());
                    })?;
                    doc.ref_id = None;
                    self.update(&mut doc).await?;
                }
            }
            all.append(&mut ids);
            ids = rels
                .into_iter()
                .filter(|r| {
                    r.parent_id.as_ref().is_some_and(|p| all.contains(p)) && !all.contains(&r.id)
                })
                .map(|r| r.id)
                .collect();
            ids.sort();
            ids.dedup();
        }
        self.delete_where_in("resources", "id", "", &all, "remove")
            .await?;
        if all.len() > 1000 {
            warn!(n = all.len(), "large subtree removed in one settle");
        }
        Ok(())
    }
}

fn lb_ids(jobs: &[Job]) -> Vec<String> {
    jobs.iter().map(|j| j.loadbalancer_id.clone()).collect()
}

/// Documents of these load balancers' graphs in a `PENDING_*` status, oldest first.
async fn pending_of(
    conn: &mut AnyConnection,
    lb_ids: &[String],
) -> Result<Vec<Document>, StoreError> {
    let mut docs = Vec::new();
    for chunk in lb_ids.chunks(500) {
        let sql = format!(
            "SELECT {} FROM resources WHERE loadbalancer_id IN ({}) AND provisioning_status IN ('PENDING_CREATE', 'PENDING_UPDATE', 'PENDING_DELETE') ORDER BY created_at, id",
            Document::COLUMNS,
            placeholders(1, chunk.len())
        );
        let mut q = sqlx::query(&sql);
        for id in chunk {
            q = q.bind(id.as_str());
        }
        let rows = q
            .fetch_all(&mut *conn)
            .await
            .map_err(query("pending of lb"))?;
        for row in &rows {
            docs.push(Document::from_row(row).map_err(query("pending of lb"))?);
        }
    }
    Ok(docs)
}

/// What settling jobs as successes writes: the job rows go, pending objects become `ACTIVE`
/// (a deleted load balancer `DELETED`, its graph cleared), and `removed` objects go with
/// their subtrees (which needs relation reads, so a transaction).
struct SettlePlan {
    writes: WriteBatch,
    removed: Vec<String>,
}

impl SettlePlan {
    fn successes(jobs: &[Job], pending: Vec<Document>) -> Result<SettlePlan, StoreError> {
        let mut writes = WriteBatch::new();
        for job in jobs {
            writes.job_done(job.id.clone());
        }
        let mut by_lb: std::collections::BTreeMap<String, Vec<Document>> = Default::default();
        for doc in pending {
            if let Some(lb) = doc.loadbalancer_id.clone() {
                by_lb.entry(lb).or_default().push(doc);
            }
        }
        let mut removed = Vec::new();
        for (lb_id, docs) in by_lb {
            let lb_deleting = docs.iter().any(|d| {
                d.kind == Kind::LoadBalancer
                    && d.status() == Some(ProvisioningStatus::PendingDelete)
            });
            if lb_deleting {
                // The LB is kept as DELETED (hidden); everything under it goes.
                if let Some(mut lb) = docs.into_iter().find(|d| d.kind == Kind::LoadBalancer) {
                    with_status(&mut lb, ProvisioningStatus::Deleted)?;
                    writes.update_body(lb);
                }
                writes.clear_graph(lb_id);
                continue;
            }
            for mut doc in docs {
                match doc.status() {
                    Some(ProvisioningStatus::PendingDelete) => removed.push(doc.id.clone()),
                    _ => {
                        with_status(&mut doc, ProvisioningStatus::Active)?;
                        writes.update_body(doc);
                    }
                }
            }
        }
        Ok(SettlePlan { writes, removed })
    }
}

/// The outcome of a version-checked write of `doc`: one row changed bumps `doc.version`, none
/// is a conflict.
fn versioned_write(rows: u64, doc: &mut Document) -> Result<(), StoreError> {
    if rows != 1 {
        return Err(StoreError::conflict(doc));
    }
    doc.version += 1;
    Ok(())
}

/// Sets a document's provisioning status (column and typed body) and its `updated_at`
/// (Octavia sets `updated_at` on every change of a row, the provider's status changes
/// included); the caller writes it. A failure's reason is kept on the job row
/// (`last_error`), not in the document.
fn with_status(doc: &mut Document, status: ProvisioningStatus) -> Result<(), StoreError> {
    fn set<T: Provisioned>(
        doc: &mut Document,
        status: ProvisioningStatus,
    ) -> Result<(), StoreError> {
        doc.rewrite(|value: &mut T| value.set_provisioning_status(status, now_micros()))
    }
    match doc.kind.resource() {
        Some(Kind::LoadBalancer) => set::<LoadBalancer>(doc, status)?,
        Some(Kind::Listener) => set::<Listener>(doc, status)?,
        Some(Kind::Pool) => set::<Pool>(doc, status)?,
        Some(Kind::Member) => set::<Member>(doc, status)?,
        Some(Kind::HealthMonitor) => set::<HealthMonitor>(doc, status)?,
        Some(Kind::L7Policy) => set::<L7Policy>(doc, status)?,
        Some(Kind::L7Rule) => set::<L7Rule>(doc, status)?,
        // Only the kinds above have a provisioning status (the pending reads select on it);
        // anything else keeps its body and gets the column only.
        Some(Kind::LbVm) | None => {}
    }
    doc.provisioning_status = Some(status.as_str().to_owned());
    Ok(())
}

/// Now, at the precision the model serializes `updated_at` (microseconds, like
/// `created_at`).
fn now_micros() -> chrono::DateTime<chrono::Utc> {
    let now = chrono::Utc::now();
    chrono::DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now)
}

pub(crate) fn bind_doc<'q>(
    q: Query<'q, Any, AnyArguments<'q>>,
    doc: &'q Document,
) -> Query<'q, Any, AnyArguments<'q>> {
    q.bind(doc.kind.as_str())
        .bind(doc.id.as_str())
        .bind(doc.project_id.as_deref())
        .bind(doc.loadbalancer_id.as_deref())
        .bind(doc.parent_id.as_deref())
        .bind(doc.ref_id.as_deref())
        .bind(doc.position)
        .bind(doc.provisioning_status.as_deref())
        .bind(doc.created_at.as_str())
        .bind(doc.version)
        .bind(doc.body.as_str())
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
