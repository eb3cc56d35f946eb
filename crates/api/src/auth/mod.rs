//! Authentication (noauth, Keystone v3 tokens) and Octavia's default RBAC policies.
//!
//! [`keystone::KeystoneAuth`] is the [`crate::Authenticator`] for OpenStack deployments: it
//! validates `X-Auth-Token` against Keystone v3 the way keystonemiddleware does and caches the
//! result. [`policy::OctaviaPolicy`] is the [`crate::Policy`] that answers with Octavia's
//! default rules (`octavia/policies/*.py`). Noauth stays in `crate::context`.
//!
//! Wiring (what `klb serve` does for `auth_strategy = "keystone"`): Keystone contexts carry
//! Keystone's roles, so they go with [`policy::OctaviaPolicy`]; noauth contexts have no roles
//! and keep the scope-only policy.
//!
//! ```no_run
//! # async fn wire(store: klb_store::Store) -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use std::time::Duration;
//! use klb_api::auth::keystone::{KeystoneAuth, KeystoneConfig};
//! use klb_api::auth::policy::{OctaviaPolicy, PolicyOptions};
//! use klb_api::auth::Secret;
//!
//! let mut cfg = KeystoneConfig::new(
//!     "http://keystone:5000/v3",
//!     "klb",
//!     Secret::new("service-password"),
//!     "service",
//! );
//! cfg.user_domain_name = "Default".into();
//! cfg.project_domain_name = "Default".into();
//! cfg.cache_ttl = Duration::from_secs(300);
//! let options = PolicyOptions::default();
//! cfg.policy = options;
//! let mut state = klb_api::AppState::new(store, Arc::new(KeystoneAuth::new(cfg)?));
//! state.policy = Arc::new(OctaviaPolicy::new(options));
//! state.quotas = Arc::new(klb_api::admin::StoredQuotas::default());
//! # Ok(()) }
//! ```

pub mod keystone;
pub mod policy;

/// A secret string (password, token). `Debug` and `Display` print `***` so it can never reach
/// a log line or an error message by accident; the value is read only through [`Secret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself, for the one place that sends it (an HTTP header or body).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// True for the empty string.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Secret {
        Secret(value)
    }
}

#[cfg(test)]
mod tests {
    use super::Secret;

    #[test]
    fn secret_is_redacted_in_debug_and_display() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "Secret(***)");
        assert_eq!(format!("{s}"), "***");
        assert!(!format!("{s:?} {s}").contains("hunter2"));
        assert_eq!(s.expose(), "hunter2");
    }
}
