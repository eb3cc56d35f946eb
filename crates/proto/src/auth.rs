//! The agent API's optional HTTP basic-auth credentials (the seed's `agent_user` /
//! `agent_password`): the control plane sends them, the agent requires them. Shared by both
//! ends, so they live with the protocol.

use std::fmt;

use serde::Deserialize;

/// HTTP basic-auth credentials (the seed's `agent_user` / `agent_password`). `Debug` hides
/// the password.
#[derive(Clone)]
pub struct BasicAuth {
    /// User name.
    pub user: String,
    /// Password; compared in constant time, never logged.
    pub password: Password,
}

impl fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BasicAuth")
            .field("user", &self.user)
            .field("password", &self.password)
            .finish()
    }
}

/// A password. `Debug` prints `<redacted>`; it deserializes from a plain string (so raw
/// configs can hold one without showing it in their `Debug` output).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Password(String);

impl Password {
    /// Wraps a password.
    pub fn new(p: impl Into<String>) -> Self {
        Password(p.into())
    }

    /// The password text (for building an Authorization header). Do not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}
