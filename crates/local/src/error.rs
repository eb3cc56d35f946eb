//! The error type of the local cloud.

use std::path::PathBuf;

/// Everything that can go wrong while building or running the local cloud.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// An external command (`ip`, `sysctl`, `vtysh`, ...) ran but failed.
    #[error("`{cmd}` failed ({status}): {stderr}")]
    Command {
        /// The command line, for the operator to re-run by hand.
        cmd: String,
        /// Exit status as text (`exit status: 2`, `signal: 9`).
        status: String,
        /// What the command printed on stderr (trimmed).
        stderr: String,
    },
    /// An external program could not be started at all (missing binary, permissions).
    #[error("cannot start `{program}`: {source}")]
    Spawn {
        /// The program path.
        program: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A file or directory operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A namespace, interface or process name that the kernel or `ip` would reject or misparse.
    #[error("invalid name {name:?}: {reason}")]
    InvalidName {
        /// The offending name.
        name: String,
        /// Why it is rejected.
        reason: &'static str,
    },
    /// The address plan cannot satisfy a request (pool exhausted, bad subnet).
    #[error("address plan: {0}")]
    Plan(String),
    /// Something did not happen within its deadline.
    #[error("timed out after {secs:.1}s waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long we waited.
        secs: f64,
    },
    /// The persisted state file could not be read or written.
    #[error("state file {path}: {reason}")]
    State {
        /// The state file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A resource the caller named does not exist.
    #[error("{kind} {id} not found")]
    NotFound {
        /// Resource kind (`server`, `subnet`, ...).
        kind: &'static str,
        /// Its id.
        id: String,
    },
    /// A signal could not be sent (kill(2) failed: no such process, not permitted).
    #[error("sending {signal:?} to process {pid}: {source}")]
    Signal {
        /// The target process.
        pid: u32,
        /// The signal.
        signal: rustix::process::Signal,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A request the caller made is invalid (bad argument).
    #[error("invalid request: {0}")]
    Invalid(String),
}

/// Shorthand used across the crate.
pub type Result<T, E = LocalError> = std::result::Result<T, E>;

impl From<klb_proto::account::AccountError> for LocalError {
    fn from(e: klb_proto::account::AccountError) -> Self {
        LocalError::io(e.path, e.source)
    }
}

impl LocalError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        LocalError::Io {
            path: path.into(),
            source,
        }
    }
}
