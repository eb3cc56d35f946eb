//! The agent's configuration file (`agent.toml`), read in two stages: [`RawAgentConfig`]
//! mirrors the file (every field optional where a default exists), [`AgentConfig`] is the
//! validated, typed result the agent runs with.
//!
//! ```toml
//! listen_addr = "0.0.0.0"          # bind address of the agent API
//! port = 62000                     # agent_port
//! runtime_dir = "/run/klb-agent"   # HAProxy and FRR files, sockets, pid files
//! netns_exec = ["ip", "netns", "exec", "vm1"]   # optional: run daemons in this namespace
//! drain_wait_ms = 1000             # after withdrawing the VIP, before HAProxy stops accepting
//! haproxy_bin = "/usr/sbin/haproxy"
//!
//! [tls]
//! ca_cert = "/etc/klb/ca.crt"      # klb's CA: clients must present a cert signed by it
//! cert = "/etc/klb/agent.crt"      # this agent's server certificate
//! key = "/etc/klb/agent.key"
//!
//! [auth]                           # optional HTTP basic auth on top of mTLS
//! user = "admin"                   # the seed's agent_user
//! password = "secret"              # the seed's agent_password (never logged)
//!
//! [heartbeat]                      # optional
//! url = "http://198.18.0.1:6543/v1/heartbeat"
//! interval_ms = 5000               # health_interval
//! load_balancer_id / vm_id and this VM's own HMAC key are taken from the applied desired
//! state (`hmac_key`, the old shared key, is still accepted and ignored)
//!
//! [frr]                            # optional; defaults are Debian's paths
//! daemon_dir = "/usr/lib/frr"
//! vtysh = "/usr/bin/vtysh"
//! reload_script = "/usr/lib/frr/frr-reload.py"
//! user = "frr"
//! group = "frr"
//! ```

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use klb_proto::auth::{BasicAuth, Password};

use crate::frr::FrrConfig;

/// Default agent port (the seed's `agent_port`).
pub const DEFAULT_AGENT_PORT: u16 = 62000;

/// Configuration errors.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("parsing {path}: {message}")]
    Parse {
        /// File.
        path: PathBuf,
        /// Parser message.
        message: String,
    },
    /// A value is out of range.
    #[error("invalid {field}: {message}")]
    Invalid {
        /// Field name.
        field: &'static str,
        /// Why.
        message: String,
    },
}

/// `agent.toml` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAgentConfig {
    listen_addr: Option<IpAddr>,
    port: Option<u16>,
    runtime_dir: Option<PathBuf>,
    #[serde(default)]
    netns_exec: Vec<String>,
    drain_wait_ms: Option<u64>,
    haproxy_bin: Option<PathBuf>,
    tls: Option<RawTls>,
    auth: Option<RawAuth>,
    heartbeat: Option<RawHeartbeat>,
    frr: Option<RawFrr>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    ca_cert: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    user: String,
    password: String,
}

impl fmt::Debug for RawAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawAuth")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHeartbeat {
    url: String,
    /// Ignored: keys are per VM now and come with the desired state. Accepted so an
    /// `agent.toml` written by an older control plane still loads.
    #[serde(default, rename = "hmac_key")]
    _hmac_key: Option<String>,
    interval_ms: Option<u64>,
}

impl fmt::Debug for RawHeartbeat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawHeartbeat")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFrr {
    daemon_dir: Option<PathBuf>,
    vtysh: Option<PathBuf>,
    reload_script: Option<PathBuf>,
    user: Option<String>,
    group: Option<String>,
}

/// Paths of the TLS material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsPaths {
    /// CA certificate clients must chain to.
    pub ca_cert: PathBuf,
    /// Server certificate.
    pub cert: PathBuf,
    /// Server private key.
    pub key: PathBuf,
}

/// Heartbeat settings.
#[derive(Debug, Clone)]
pub struct HeartbeatConfig {
    /// Receiver URL.
    pub url: String,
    /// Send period (`health_interval`).
    pub interval: Duration,
}

/// The validated agent configuration.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Address and port of the HTTPS API.
    pub listen: SocketAddr,
    /// TLS material (required: the API is mTLS only).
    pub tls: TlsPaths,
    /// Optional basic auth on top of mTLS.
    pub auth: Option<BasicAuth>,
    /// Runtime directory (HAProxy files under `haproxy/`, FRR under `frr/`).
    pub runtime_dir: PathBuf,
    /// Command prefix for running daemons in the VM namespace (empty: current namespace).
    pub netns_exec: Vec<String>,
    /// Pause between withdrawing the VIP and HAProxy no longer accepting.
    pub drain_wait: Duration,
    /// HAProxy binary.
    pub haproxy_bin: PathBuf,
    /// Heartbeats, if configured.
    pub heartbeat: Option<HeartbeatConfig>,
    /// FRR paths.
    pub frr: FrrConfig,
}

impl AgentConfig {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<AgentConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let raw: RawAgentConfig = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            // toml's message quotes the offending line, which may hold a secret: keep only
            // the first line (the location and reason).
            message: e.message().lines().next().unwrap_or("").to_owned(),
        })?;
        AgentConfig::from_raw(raw)
    }

    /// Validates a parsed file.
    pub fn from_raw(raw: RawAgentConfig) -> Result<AgentConfig, ConfigError> {
        let invalid = |field, message: &str| ConfigError::Invalid {
            field,
            message: message.to_owned(),
        };
        let tls = raw
            .tls
            .ok_or_else(|| invalid("tls", "the [tls] section is required (mTLS only)"))?;
        let port = raw.port.unwrap_or(DEFAULT_AGENT_PORT);
        if port == 0 {
            return Err(invalid("port", "must not be 0"));
        }
        let auth = match raw.auth {
            Some(a) if a.user.is_empty() || a.password.is_empty() => {
                return Err(invalid("auth", "user and password must not be empty"));
            }
            Some(a) => Some(BasicAuth {
                user: a.user,
                password: Password::new(a.password),
            }),
            None => None,
        };
        let heartbeat = match raw.heartbeat {
            Some(h) => {
                if !(h.url.starts_with("http://") || h.url.starts_with("https://")) {
                    return Err(invalid("heartbeat.url", "must be an http(s) URL"));
                }
                let interval = Duration::from_millis(h.interval_ms.unwrap_or(5000));
                if interval < Duration::from_millis(100) || interval > Duration::from_secs(300) {
                    return Err(invalid(
                        "heartbeat.interval_ms",
                        "must be between 100 and 300000",
                    ));
                }
                Some(HeartbeatConfig {
                    url: h.url,
                    interval,
                })
            }
            None => None,
        };
        let runtime_dir = raw
            .runtime_dir
            .unwrap_or_else(|| PathBuf::from("/run/klb-agent"));
        if !runtime_dir.is_absolute() {
            return Err(invalid("runtime_dir", "must be an absolute path"));
        }
        let drain_wait = Duration::from_millis(raw.drain_wait_ms.unwrap_or(1000));
        if drain_wait > Duration::from_secs(60) {
            return Err(invalid("drain_wait_ms", "must be at most 60000"));
        }
        let rf = raw.frr.unwrap_or_default();
        let mut frr = FrrConfig::with_run_dir(runtime_dir.join("frr"));
        frr.netns_exec = raw.netns_exec.clone();
        if let Some(v) = rf.daemon_dir {
            frr.daemon_dir = v;
        }
        if let Some(v) = rf.vtysh {
            frr.vtysh = v;
        }
        if let Some(v) = rf.reload_script {
            frr.reload_script = v;
        }
        if let Some(v) = rf.user {
            frr.user = v;
        }
        if let Some(v) = rf.group {
            frr.group = v;
        }
        Ok(AgentConfig {
            listen: SocketAddr::new(
                raw.listen_addr.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
                port,
            ),
            tls: TlsPaths {
                ca_cert: tls.ca_cert,
                cert: tls.cert,
                key: tls.key,
            },
            auth,
            runtime_dir,
            netns_exec: raw.netns_exec,
            drain_wait,
            haproxy_bin: raw
                .haproxy_bin
                .unwrap_or_else(|| PathBuf::from("/usr/sbin/haproxy")),
            heartbeat,
            frr,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<AgentConfig, ConfigError> {
        AgentConfig::from_raw(toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: "t".into(),
            message: e.to_string(),
        })?)
    }

    const TLS: &str = "[tls]\nca_cert = \"/c\"\ncert = \"/a\"\nkey = \"/k\"\n";

    #[test]
    fn defaults() {
        let c = parse(TLS).unwrap();
        assert_eq!(c.listen, "0.0.0.0:62000".parse().unwrap());
        assert_eq!(c.drain_wait, Duration::from_secs(1));
        assert_eq!(c.frr.run_dir, PathBuf::from("/run/klb-agent/frr"));
        assert!(c.auth.is_none() && c.heartbeat.is_none());
    }

    #[test]
    fn full_file() {
        let c = parse(&format!(
            "listen_addr = \"198.18.0.2\"\nport = 62001\nnetns_exec = [\"ip\",\"netns\",\"exec\",\"x\"]\n\
             drain_wait_ms = 200\n{TLS}[auth]\nuser = \"u\"\npassword = \"hunter2\"\n\
             [heartbeat]\nurl = \"http://198.18.0.1:6543/hb\"\nhmac_key = \"0123456789abcdef\"\ninterval_ms = 1000\n\
             [frr]\nuser = \"frr2\"\n"
        ))
        .unwrap();
        assert_eq!(c.listen, "198.18.0.2:62001".parse().unwrap());
        assert_eq!(c.frr.netns_exec.len(), 4);
        assert_eq!(c.frr.user, "frr2");
        assert_eq!(
            c.heartbeat.as_ref().unwrap().interval,
            Duration::from_secs(1)
        );
        let printed = format!("{c:?}");
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(!printed.contains("0123456789abcdef"), "{printed}");
    }

    #[test]
    fn auth_is_read_and_never_printed() {
        let c = parse(&format!(
            "{TLS}[auth]\nuser = \"klb\"\npassword = \"pa55-w0rd\"\n"
        ))
        .unwrap();
        let auth = c.auth.as_ref().unwrap();
        assert_eq!(
            (auth.user.as_str(), auth.password.expose()),
            ("klb", "pa55-w0rd")
        );
        for printed in [format!("{c:?}"), format!("{auth:?}"), format!("{c:#?}")] {
            assert!(!printed.contains("pa55-w0rd"), "{printed}");
        }
        let raw: RawAgentConfig = toml::from_str(&format!(
            "{TLS}[auth]\nuser = \"klb\"\npassword = \"pa55-w0rd\"\n"
        ))
        .unwrap();
        assert!(!format!("{raw:?}").contains("pa55-w0rd"));
        // Half a credential is a mistake, not "no auth".
        for half in [
            "user = \"\"\npassword = \"p\"",
            "user = \"u\"\npassword = \"\"",
        ] {
            assert!(parse(&format!("{TLS}[auth]\n{half}\n")).is_err(), "{half}");
        }
        assert!(parse(&format!("{TLS}[auth]\nuser = \"u\"\n")).is_err());
    }

    #[test]
    fn bad_values_are_rejected() {
        assert!(parse("port = 1\n").is_err(), "tls required");
        assert!(parse(&format!("port = 0\n{TLS}")).is_err());
        assert!(parse(&format!("runtime_dir = \"rel\"\n{TLS}")).is_err());
        assert!(parse(&format!("bogus = 1\n{TLS}")).is_err());
        assert!(
            parse(&format!(
                "{TLS}[heartbeat]\nurl = \"ftp://x\"\nhmac_key = \"0123456789abcdef\"\n"
            ))
            .is_err()
        );
        // The old shared key is ignored (keys come with the desired state), so an older
        // agent.toml still loads, and a [heartbeat] without one is complete.
        for key in ["hmac_key = \"short\"\n", ""] {
            let c = parse(&format!("{TLS}[heartbeat]\nurl = \"http://x\"\n{key}")).unwrap();
            assert_eq!(c.heartbeat.unwrap().url, "http://x");
        }
    }
}
