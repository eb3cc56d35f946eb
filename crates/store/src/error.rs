//! The store's error type.

/// A store failure, with the operation or object it concerns.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened.
    #[error("cannot open database {url}")]
    Open {
        /// The URL with any password removed.
        url: String,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },
    /// The SQLite database file's permissions could not be restricted to its owner.
    #[error("cannot restrict the permissions of database {url}")]
    Permissions {
        /// The URL.
        url: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Applying migrations failed.
    #[error("database migration failed")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    /// A query failed.
    #[error("database error during {op}")]
    Query {
        /// What the store was doing.
        op: &'static str,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },
    /// An optimistic-concurrency check failed: someone else changed the document first.
    #[error("{kind} {id} was changed concurrently (expected version {expected})")]
    VersionConflict {
        /// Document kind.
        kind: crate::DocumentKind,
        /// Document id.
        id: String,
        /// The version the caller read.
        expected: i64,
    },
    /// A document with this kind and id already exists.
    #[error("{kind} {id} already exists")]
    Duplicate {
        /// Document kind.
        kind: crate::DocumentKind,
        /// Document id.
        id: String,
    },
    /// A stored document does not decode as the expected type.
    #[error("stored {kind} {id} cannot be decoded")]
    Decode {
        /// Document kind.
        kind: crate::DocumentKind,
        /// Document id.
        id: String,
        /// Why it does not decode.
        #[source]
        source: serde_json::Error,
    },
    /// A value could not be encoded for storage.
    #[error("cannot encode {kind} for storage")]
    Encode {
        /// Document kind.
        kind: crate::DocumentKind,
        /// Why it does not encode.
        #[source]
        source: serde_json::Error,
    },
}

impl StoreError {
    /// True when retrying the whole operation may succeed (lost race, busy database, dropped
    /// connection).
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::VersionConflict { .. } => true,
            StoreError::Query { source, .. } => {
                matches!(
                    source,
                    sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed
                ) || source
                    .as_database_error()
                    .and_then(|e| e.code())
                    .is_some_and(|c| {
                        // Serialization failure, deadlock, SQLITE_BUSY/LOCKED; PostgreSQL's
                        // connection exceptions (08xxx) and operator intervention (57P01
                        // admin shutdown, 57P02 crash shutdown, 57P03 cannot connect now):
                        // the server is stopping or restarting, so the request is answered
                        // 503 and may be retried, not 500.
                        c == "40001"
                            || c == "40P01"
                            || c == "5"
                            || c == "6"
                            || c.starts_with("08")
                            || c.starts_with("57P")
                    })
            }
            _ => false,
        }
    }
}

impl StoreError {
    /// True when the database refused a text value of the request (PostgreSQL: NUL or an
    /// invalid byte sequence, 22021/22P05): the caller's input, not a server fault.
    pub fn is_invalid_text(&self) -> bool {
        match self {
            StoreError::Query { source, .. } => source
                .as_database_error()
                .and_then(|e| e.code())
                .is_some_and(|c| c == "22021" || c == "22P05"),
            _ => false,
        }
    }

    /// The conflict of a versioned write of `doc` (read at `doc.version`).
    pub(crate) fn conflict(doc: &crate::Document) -> StoreError {
        StoreError::VersionConflict {
            kind: doc.kind,
            id: doc.id.clone(),
            expected: doc.version,
        }
    }
}

/// Adds the operation name to a sqlx error.
pub(crate) fn query(op: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |source| StoreError::Query { op, source }
}
