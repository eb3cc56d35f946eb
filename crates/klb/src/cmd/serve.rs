//! `klb serve`: the control plane. Lifts the raw config into typed settings, opens the store
//! (migrations run at open), starts the provider worker and serves the API until SIGTERM or
//! Ctrl-C, then drains in-flight requests and stops the worker.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;

use crate::config::{ConfigError, RawConfig};

/// Arguments of `klb serve`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Path to klb.toml (optional; without it every setting has its default).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Directory of the default SQLite database `klb.db` (default: the current directory).
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
}

/// Default listen address.
const DEFAULT_BIND: &str = "127.0.0.1:9876";
/// Project used by noauth requests without `X-Project-Id` when none is configured.
const DEFAULT_NOAUTH_PROJECT: &str = "default";

/// How requests are authenticated.
#[derive(Debug)]
enum AuthStrategy {
    /// Trust `X-Project-Id` (local use only).
    NoAuth,
    /// Validate `X-Auth-Token` against Keystone v3; Octavia's default RBAC.
    Keystone(klb_api::auth::keystone::KeystoneConfig),
}

/// The serve settings, validated.
#[derive(Debug)]
struct ServeConfig {
    /// Authentication.
    auth: AuthStrategy,
    /// Listen address.
    bind: SocketAddr,
    /// Store URL (`sqlite://...` or `postgres://...`).
    database_url: String,
    /// Default project of noauth requests.
    default_project_id: String,
}

impl ServeConfig {
    fn lift(
        raw: &RawConfig,
        state_dir: Option<&std::path::Path>,
    ) -> Result<ServeConfig, ConfigError> {
        let bind_text = raw.api.bind.as_deref().unwrap_or(DEFAULT_BIND);
        let bind = bind_text.parse().map_err(|e| ConfigError::Invalid {
            key: "api.bind".to_owned(),
            message: format!("{bind_text:?}: {e}"),
        })?;
        let auth = match raw.api.auth_strategy.as_deref().unwrap_or("noauth") {
            "noauth" => AuthStrategy::NoAuth,
            "keystone" => {
                let k = &raw.keystone;
                let need = |v: &Option<String>, key: &str| {
                    v.clone()
                        .filter(|s| !s.is_empty())
                        .ok_or_else(|| ConfigError::Invalid {
                            key: format!("keystone.{key}"),
                            message: "required with api.auth_strategy = \"keystone\"".to_owned(),
                        })
                };
                let mut kc = klb_api::auth::keystone::KeystoneConfig::new(
                    need(&k.auth_url, "auth_url")?,
                    need(&k.username, "username")?,
                    klb_api::auth::Secret::new(need(&k.password, "password")?),
                    need(&k.project_name, "project_name")?,
                );
                if let Some(d) = &k.user_domain_name {
                    kc.user_domain_name = d.clone();
                }
                if let Some(d) = &k.project_domain_name {
                    kc.project_domain_name = d.clone();
                }
                if let Some(secs) = k.cache_seconds {
                    kc.cache_ttl = std::time::Duration::from_secs(secs);
                }
                AuthStrategy::Keystone(kc)
            }
            other => {
                return Err(ConfigError::Invalid {
                    key: "api.auth_strategy".to_owned(),
                    message: format!("{other:?} is not one of noauth, keystone"),
                });
            }
        };
        let database_url = match &raw.database.url {
            Some(url) => url.clone(),
            None => {
                let dir = state_dir
                    .map(PathBuf::from)
                    .unwrap_or_else(|| PathBuf::from("."));
                format!("sqlite://{}", dir.join("klb.db").display())
            }
        };
        Ok(ServeConfig {
            auth,
            bind,
            database_url,
            default_project_id: raw
                .api
                .default_project_id
                .clone()
                .unwrap_or_else(|| DEFAULT_NOAUTH_PROJECT.to_owned()),
        })
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let raw = RawConfig::load(args.config.as_deref())?;
    if let Some(dir) = &args.state_dir {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create state dir {}", dir.display()))?;
    }
    let config = ServeConfig::lift(&raw, args.state_dir.as_deref())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(config))
}

async fn serve(config: ServeConfig) -> anyhow::Result<()> {
    let store = klb_store::Store::open(&config.database_url)
        .await
        .context("cannot open the store")?;
    let state = match config.auth {
        AuthStrategy::NoAuth => {
            let auth = Arc::new(klb_api::NoAuth {
                default_project_id: Some(config.default_project_id.clone()),
            });
            klb_api::AppState::new(store.clone(), auth)
        }
        AuthStrategy::Keystone(kc) => {
            let policy_options = kc.policy;
            let auth = klb_api::auth::keystone::KeystoneAuth::new(kc)
                .context("cannot set up Keystone authentication")?;
            let mut state = klb_api::AppState::new(store.clone(), Arc::new(auth));
            state.policy = Arc::new(klb_api::auth::policy::OctaviaPolicy::new(policy_options));
            state
        }
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let wait_stop = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stopped| *stopped).await;
    };
    let worker = tokio::spawn(
        klb_api::provider::NoopProvider::new(store.clone()).run(wait_stop(stop_rx.clone())),
    );
    let listener = tokio::net::TcpListener::bind(config.bind)
        .await
        .with_context(|| format!("cannot listen on {}", config.bind))?;
    tracing::info!(bind = %config.bind, backend = ?store.backend(), "klb serve: API listening");
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down");
        let _ = stop_tx.send(true);
    });
    klb_api::serve(listener, state, wait_stop(stop_rx))
        .await
        .context("API server failed")?;
    let _ = worker.await;
    store.close().await;
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_without_config() {
        let c = ServeConfig::lift(&RawConfig::default(), None).unwrap();
        assert_eq!(c.bind.to_string(), DEFAULT_BIND);
        assert_eq!(c.database_url, "sqlite://./klb.db");
        let c = ServeConfig::lift(
            &RawConfig::default(),
            Some(std::path::Path::new("/var/lib/klb")),
        )
        .unwrap();
        assert_eq!(c.database_url, "sqlite:///var/lib/klb/klb.db");
    }

    #[test]
    fn keystone_needs_credentials() {
        let mut raw = RawConfig::default();
        raw.api.auth_strategy = Some("keystone".into());
        let err = ServeConfig::lift(&raw, None).unwrap_err();
        assert!(err.to_string().contains("keystone.auth_url"), "{err}");
        raw.keystone.auth_url = Some("http://keystone:5000/v3".into());
        raw.keystone.username = Some("klb".into());
        raw.keystone.password = Some("pw".into());
        raw.keystone.project_name = Some("service".into());
        assert!(matches!(
            ServeConfig::lift(&raw, None).unwrap().auth,
            AuthStrategy::Keystone(_)
        ));
        raw.api.auth_strategy = Some("magic".into());
        assert!(ServeConfig::lift(&raw, None).is_err());
    }

    #[test]
    fn bad_bind_is_a_config_error() {
        let mut raw = RawConfig::default();
        raw.api.bind = Some("nowhere".into());
        assert!(ServeConfig::lift(&raw, None).is_err());
    }
}
