//! The test database: a temporary SQLite file, or a fresh PostgreSQL schema when
//! `KLB_TEST_POSTGRES_URL` is set (the CI runs the store and API suites once more that way).

use std::path::Path;

/// The variable naming the PostgreSQL server tests use (`scripts/start-postgres.sh` prints a
/// URL for it).
pub const POSTGRES_URL_ENV: &str = "KLB_TEST_POSTGRES_URL";

/// A database for one test. Keep it alive as long as the store opened on it: dropping it
/// removes the SQLite directory or drops the PostgreSQL schema (`CASCADE`).
#[derive(Debug)]
pub struct TestDb {
    url: String,
    backend: Backend,
}

#[derive(Debug)]
enum Backend {
    Sqlite(tempfile::TempDir),
    Postgres { base: String, schema: String },
}

impl TestDb {
    /// A PostgreSQL schema when `KLB_TEST_POSTGRES_URL` is set, else a SQLite file.
    pub async fn new() -> TestDb {
        match Self::postgres_quiet().await {
            Some(db) => db,
            None => Self::sqlite(),
        }
    }

    /// A SQLite file (`klb.db`) in a fresh temporary directory.
    pub fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let url = format!("sqlite://{}", dir.path().join("klb.db").display());
        TestDb {
            url,
            backend: Backend::Sqlite(dir),
        }
    }

    /// A fresh PostgreSQL schema, or `None` (with a printed reason, so the test's output says
    /// it was skipped) when `KLB_TEST_POSTGRES_URL` is not set.
    pub async fn postgres() -> Option<TestDb> {
        let db = Self::postgres_quiet().await;
        if db.is_none() {
            eprintln!("skipping PostgreSQL test: {POSTGRES_URL_ENV} is not set");
        }
        db
    }

    async fn postgres_quiet() -> Option<TestDb> {
        let base = std::env::var(POSTGRES_URL_ENV).ok()?;
        // A unique schema per test: tests run in parallel against one server, and every
        // table klb creates lands in the schema its connections' `search_path` names.
        let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
        sqlx::any::install_default_drivers();
        let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&base)
            .await
            .expect("connect to KLB_TEST_POSTGRES_URL");
        sqlx::Executor::execute(&mut conn, format!("CREATE SCHEMA {schema}").as_str())
            .await
            .expect("create the test schema");
        let _ = sqlx::Connection::close(conn).await;
        let sep = if base.contains('?') { '&' } else { '?' };
        // The schema's name is also the connections' application name, so the teardown can
        // find (and end) the ones the test left open.
        let url =
            format!("{base}{sep}options=-c%20search_path%3D{schema}&application_name={schema}");
        Some(TestDb {
            url,
            backend: Backend::Postgres { base, schema },
        })
    }

    /// The URL to open the store on (`sqlite://...` or the PostgreSQL URL with the schema as
    /// its `search_path`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// True when the database is PostgreSQL.
    pub fn is_postgres(&self) -> bool {
        matches!(self.backend, Backend::Postgres { .. })
    }

    /// The SQLite file's directory (`None` on PostgreSQL), for tests that look at the files.
    pub fn dir(&self) -> Option<&Path> {
        match &self.backend {
            Backend::Sqlite(dir) => Some(dir.path()),
            Backend::Postgres { .. } => None,
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Backend::Postgres { base, schema } = &self.backend else {
            return;
        };
        let (base, schema) = (base.clone(), schema.clone());
        // Drop runs inside the test's runtime, which cannot be blocked on: a thread with its
        // own. The store usually still lives (it is dropped after this handle, or its pool
        // closes in the background), and a connection of it inside a transaction would block
        // the DROP: the test's own connections are ended first. The lock timeout is the last
        // guard against a hang; the schema then stays behind (`t_<uuid>`), which is harmless.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&base)
                    .await
                    .ok()?;
                sqlx::Executor::execute(
                    &mut conn,
                    format!(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                         WHERE application_name = '{schema}' AND pid <> pg_backend_pid()"
                    )
                    .as_str(),
                )
                .await
                .ok()?;
                sqlx::Executor::execute(&mut conn, "SET lock_timeout = '5s'")
                    .await
                    .ok()?;
                sqlx::Executor::execute(
                    &mut conn,
                    format!("DROP SCHEMA {schema} CASCADE").as_str(),
                )
                .await
                .ok()?;
                sqlx::Connection::close(conn).await.ok()
            })
        })
        .join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sqlite_lives_as_long_as_the_handle() {
        let db = TestDb::sqlite();
        assert!(!db.is_postgres());
        let dir = db.dir().unwrap().to_path_buf();
        assert_eq!(
            db.url(),
            format!("sqlite://{}", dir.join("klb.db").display())
        );
        assert!(dir.is_dir());
        drop(db);
        assert!(!dir.exists(), "the directory goes with the handle");
    }

    #[tokio::test]
    async fn postgres_schema_is_created_and_dropped() {
        let Some(db) = TestDb::postgres().await else {
            return;
        };
        let Backend::Postgres { base, schema } = &db.backend else {
            panic!("postgres() gives PostgreSQL");
        };
        let (base, schema) = (base.clone(), schema.clone());
        let exists = |base: String, schema: String| async move {
            let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&base)
                .await
                .unwrap();
            let n: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name = $1",
            )
            .bind(schema)
            .fetch_one(&mut conn)
            .await
            .unwrap();
            n == 1
        };
        assert!(exists(base.clone(), schema.clone()).await);
        assert!(db.url().contains(&format!("search_path%3D{schema}&")));
        // A connection the test left inside a transaction (its locks would block the DROP).
        let mut held = <sqlx::AnyConnection as sqlx::Connection>::connect(db.url())
            .await
            .unwrap();
        sqlx::Executor::execute(&mut held, "BEGIN").await.unwrap();
        sqlx::Executor::execute(&mut held, "CREATE TABLE held (x INT)")
            .await
            .unwrap();
        drop(db);
        assert!(!exists(base, schema).await, "dropped with the handle");
        drop(held);
    }
}
