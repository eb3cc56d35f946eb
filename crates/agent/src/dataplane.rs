//! The seam between the agent API and the HAProxy process it drives.
//!
//! The API handlers only need four things from HAProxy: apply a desired state (checked first,
//! the old configuration keeps serving on failure), report statistics, say whether it is up,
//! and stop/start accepting new connections for draining. [`Proxy`] is exactly that, so the
//! versioning and drain logic can be tested without processes ([`fake::FakeProxy`]) while the
//! agent binary plugs in the real HAProxy supervisor.

use klb_proto::{ApplyMethod, DesiredState, Stats};

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

pub mod fake {
    //! An in-memory [`Proxy`] for unit tests: records what it was asked and fails on demand.

    use std::sync::Mutex;

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
        pub fn applied_versions(&self) -> Vec<u64> {
            self.inner.lock().unwrap().applied.clone()
        }

        /// Last value given to `set_accepting` (None: never called).
        pub fn accepting(&self) -> Option<bool> {
            self.inner.lock().unwrap().accepting
        }

        /// Makes the next `apply` fail with `err`.
        pub fn fail_next_apply(&self, err: ProxyError) {
            self.inner.lock().unwrap().fail_next_apply = Some(err);
        }
    }

    #[async_trait::async_trait]
    impl Proxy for FakeProxy {
        async fn apply(&self, state: &DesiredState) -> Result<ApplyMethod, ProxyError> {
            let mut inner = self.inner.lock().unwrap();
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
            self.inner.lock().unwrap().running.is_some()
        }

        async fn set_accepting(&self, accepting: bool) -> Result<(), ProxyError> {
            self.inner.lock().unwrap().accepting = Some(accepting);
            Ok(())
        }
    }
}
