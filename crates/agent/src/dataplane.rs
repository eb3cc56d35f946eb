//! The seam between the agent API and the HAProxy process it drives.
//!
//! The API handlers only need four things from HAProxy: apply a desired state (checked first,
//! the old configuration keeps serving on failure), report statistics, say whether it is up,
//! and stop/start accepting new connections for draining. [`Proxy`] is exactly that, so the
//! versioning and drain logic can be tested without processes ([`fake::FakeProxy`]) while the
//! agent binary plugs in the real HAProxy supervisor.

use klb_proto::{ApplyMethod, DesiredState, Stats};

use crate::haproxy::{ApplyError, Haproxy, runtime};

/// Why HAProxy did not take a state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    /// The state was rejected (validation or `haproxy -c`); the message is safe to show.
    #[error("invalid configuration: {0}")]
    Invalid(String),
    /// Something failed while applying (process, socket, file); the old config keeps serving.
    #[error("apply failed: {0}")]
    Failed(String),
}

/// The HAProxy operations the agent API uses.
#[async_trait::async_trait]
pub trait Proxy: Send + Sync {
    /// Renders, checks and applies `state` (runtime API or seamless reload).
    async fn apply(&self, state: &DesiredState) -> Result<ApplyMethod, ProxyError>;
    /// Current statistics.
    async fn stats(&self) -> Result<Stats, ProxyError>;
    /// Whether HAProxy answers on its admin socket.
    async fn is_up(&self) -> bool;
    /// `false` stops accepting new connections on every frontend (drain); `true` resumes.
    async fn set_accepting(&self, accepting: bool) -> Result<(), ProxyError>;
}

/// The real HAProxy supervisor behind the [`Proxy`] seam. Draining pauses every frontend
/// through the runtime API (`disable frontend`), which a reload would undo, so the agent
/// re-applies it after reloads while drained.
pub struct HaproxyProxy {
    inner: tokio::sync::Mutex<Haproxy>,
    admin_socket: std::path::PathBuf,
}

impl HaproxyProxy {
    /// Wraps a supervisor.
    pub fn new(haproxy: Haproxy) -> Self {
        let admin_socket = haproxy.paths().admin_socket();
        HaproxyProxy {
            inner: tokio::sync::Mutex::new(haproxy),
            admin_socket,
        }
    }

    /// Stops HAProxy (agent shutdown).
    pub async fn stop(&self) -> Result<(), ProxyError> {
        self.inner
            .lock()
            .await
            .stop()
            .await
            .map_err(map_apply_error)
    }

    /// The master PID, if running.
    pub async fn master_pid(&self) -> Option<u32> {
        self.inner.lock().await.master_pid()
    }
}

fn map_apply_error(e: ApplyError) -> ProxyError {
    match e {
        ApplyError::Render(_) | ApplyError::Check { .. } | ApplyError::Stale { .. } => {
            ProxyError::Invalid(e.to_string())
        }
        other => ProxyError::Failed(other.to_string()),
    }
}

#[async_trait::async_trait]
impl Proxy for HaproxyProxy {
    async fn apply(&self, state: &DesiredState) -> Result<ApplyMethod, ProxyError> {
        let mut h = self.inner.lock().await;
        h.apply(state)
            .await
            .map(|r| r.method)
            .map_err(map_apply_error)
    }

    async fn stats(&self) -> Result<Stats, ProxyError> {
        self.inner
            .lock()
            .await
            .stats()
            .await
            .map_err(map_apply_error)
    }

    async fn is_up(&self) -> bool {
        self.inner.lock().await.is_up().await
    }

    async fn set_accepting(&self, accepting: bool) -> Result<(), ProxyError> {
        let _guard = self.inner.lock().await;
        let rows = runtime::show_stat(&self.admin_socket)
            .await
            .map_err(|e| ProxyError::Failed(e.to_string()))?;
        let verb = if accepting { "enable" } else { "disable" };
        for row in rows.iter().filter(|r| r.svname == "FRONTEND") {
            runtime::command(
                &self.admin_socket,
                &format!("{verb} frontend {}", row.pxname),
            )
            .await
            .map_err(|e| ProxyError::Failed(e.to_string()))?;
        }
        Ok(())
    }
}

pub mod fake {
    //! An in-memory [`Proxy`] for unit tests: records what it was asked and fails on demand.

    use tokio::sync::Mutex;

    use super::*;

    /// Recorded calls and scripted failures.
    #[derive(Debug, Default)]
    pub struct FakeProxy {
        inner: Mutex<Inner>,
    }

    #[derive(Debug, Default)]
    struct Inner {
        applied: Vec<u64>,
        accepting: Option<bool>,
        fail_next_apply: Option<ProxyError>,
        running: Option<DesiredState>,
    }

    impl FakeProxy {
        /// Versions applied so far, in order.
        pub async fn applied_versions(&self) -> Vec<u64> {
            self.inner.lock().await.applied.clone()
        }

        /// Last value given to `set_accepting` (None: never called).
        pub async fn accepting(&self) -> Option<bool> {
            self.inner.lock().await.accepting
        }

        /// Makes the next `apply` fail with `err`.
        pub async fn fail_next_apply(&self, err: ProxyError) {
            self.inner.lock().await.fail_next_apply = Some(err);
        }
    }

    #[async_trait::async_trait]
    impl Proxy for FakeProxy {
        async fn apply(&self, state: &DesiredState) -> Result<ApplyMethod, ProxyError> {
            let mut inner = self.inner.lock().await;
            if let Some(err) = inner.fail_next_apply.take() {
                return Err(err);
            }
            let method = match &inner.running {
                None => ApplyMethod::Start,
                Some(old) if old.listeners == state.listeners && old.pools == state.pools => {
                    ApplyMethod::Unchanged
                }
                Some(_) => ApplyMethod::Reload,
            };
            inner.applied.push(state.version);
            inner.running = Some(state.clone());
            Ok(method)
        }

        async fn stats(&self) -> Result<Stats, ProxyError> {
            Ok(Stats::default())
        }

        async fn is_up(&self) -> bool {
            self.inner.lock().await.running.is_some()
        }

        async fn set_accepting(&self, accepting: bool) -> Result<(), ProxyError> {
            self.inner.lock().await.accepting = Some(accepting);
            Ok(())
        }
    }
}
