//! The store handle: its pools and how they are opened (connection setup, SQLite file
//! permissions, migrations). Reads are in [`crate::query`], write transactions in
//! [`crate::tx`], batches in [`crate::batch`], jobs in [`crate::jobs`] and their completion
//! rules in [`crate::settle`].

use std::sync::Arc;
use std::time::Duration;

use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Executor};
use tokio::sync::Notify;

use crate::StoreError;
use crate::batch::{self, GroupWriter};
use crate::cache::{DEFAULT_CACHE_BYTES, RenderCache};
use crate::error::query;
use crate::tx::WriteTx;

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
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) backend: Backend,
    pub(crate) writer: AnyPool,
    pub(crate) reader: AnyPool,
    pub(crate) jobs_ready: Arc<Notify>,
    pub(crate) cache: RenderCache,
    /// Group commit of [`Store::apply`] on SQLite.
    pub(crate) group: Option<GroupWriter>,
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
        let (backend, writer, reader, checkpointer) = if url.starts_with("postgres://")
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
            (Backend::Postgres, writer, reader, None)
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
                        // wal_autocheckpoint=0: SQLite's automatic checkpoint runs inside
                        // the commit that crosses 1000 WAL pages, with two fsyncs, on this
                        // single writer: every queued write waited for them (20-360 ms on a
                        // busy disk, each ~0.7 s of a create burst). The checkpointer task
                        // (`spawn_checkpointer`) does it on its own connection instead.
                        conn.execute("PRAGMA journal_mode=WAL; PRAGMA busy_timeout=10000; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=OFF; PRAGMA wal_autocheckpoint=0;")
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
            let checkpointer = match sqlite_file(&url) {
                Some(_) => Some(
                    AnyPoolOptions::new()
                        .max_connections(1)
                        .test_before_acquire(false)
                        .after_connect(|conn, _| {
                            Box::pin(async move {
                                conn.execute("PRAGMA busy_timeout=10000;").await?;
                                Ok(())
                            })
                        })
                        .connect(&url)
                        .await
                        .map_err(open_err)?,
                ),
                None => None,
            };
            (Backend::Sqlite, writer, reader, checkpointer)
        };
        if backend == Backend::Postgres {
            MIGRATOR.run(&writer).await.map_err(StoreError::Migrate)?;
        }
        let jobs_ready = Arc::new(Notify::new());
        let group = (backend == Backend::Sqlite)
            .then(|| GroupWriter::spawn(writer.clone(), jobs_ready.clone()));
        let inner = Arc::new(Inner {
            backend,
            writer,
            reader,
            jobs_ready,
            cache: RenderCache::new(options.cache_bytes),
            group,
        });
        if let Some(pool) = checkpointer {
            spawn_checkpointer(pool, Arc::downgrade(&inner));
        }
        Ok(Store { inner })
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

    /// The cache of values derived from documents (the API's rendered objects), shared by
    /// every clone of this store. See [`RenderCache`] for why it never serves stale data.
    pub fn render_cache(&self) -> &RenderCache {
        &self.inner.cache
    }
}

/// How often the checkpointer copies the SQLite WAL into the database file. At ~1000 writes/s
/// the WAL then stays within a few MiB (SQLite's own automatic checkpoint: about 4 MiB).
const CHECKPOINT_EVERY: Duration = Duration::from_millis(200);

/// Checkpoints a SQLite database's WAL every [`CHECKPOINT_EVERY`] on `pool` (its own
/// connection), until the store is dropped. PASSIVE: it never takes the write lock nor waits
/// for readers, so the writer keeps committing while its fsyncs run; what readers still use
/// is left for the next round, as SQLite's automatic checkpoint (turned off on the writer)
/// did. With nothing new in the WAL a round syncs nothing.
fn spawn_checkpointer(pool: AnyPool, store: std::sync::Weak<Inner>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if store.strong_count() == 0 {
                break;
            }
            if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                .execute(&pool)
                .await
            {
                tracing::debug!(error = %e, "WAL checkpoint failed; retried next round");
            }
        }
        pool.close().await;
    });
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

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
