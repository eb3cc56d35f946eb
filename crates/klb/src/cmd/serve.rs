//! `klb serve`: the control plane. Lifts the raw config into typed settings and runs
//! `klb_control::plane::ControlPlane` (store with migrations, API, provider, health manager)
//! until SIGTERM or Ctrl-C, then stops every loop.

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
/// Which provider settles the API's jobs (`cloud.driver`).
#[derive(Debug)]
enum Driver {
    /// Octavia's noop drivers: jobs succeed at once, nothing is built (the default).
    Noop,
    /// The local cloud: LB VMs are network namespaces on this host (root).
    Local(Box<klb_control::plane::LocalSettings>),
    /// The in-memory fake cloud with real flows (benchmarks, multi-node tests).
    Fake(klb_control::plane::FakeSettings),
}

#[derive(Debug)]
struct ServeConfig {
    /// The provider.
    driver: Driver,
    /// Directory for klb's CA, keys and the flow database.
    state_dir: PathBuf,
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
        let state_dir = state_dir
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("."));
        let driver = match raw.cloud.driver.as_deref().unwrap_or("noop") {
            "noop" => Driver::Noop,
            "local" => Driver::Local(Box::new(local_settings(raw)?)),
            "fake" => Driver::Fake(klb_control::plane::FakeSettings {
                latency: std::time::Duration::from_millis(raw.cloud.fake_latency_ms.unwrap_or(0)),
                flow_lease: std::time::Duration::from_secs(raw.cloud.flow_lease_secs.unwrap_or(30)),
                vm_count: raw.cloud.lb_vm_count.unwrap_or(2),
                state_file: raw.cloud.fake_state_file.as_ref().map(PathBuf::from),
            }),
            other => {
                return Err(ConfigError::Invalid {
                    key: "cloud.driver".to_owned(),
                    message: format!("{other:?} is not one of noop, local, fake"),
                });
            }
        };
        Ok(ServeConfig {
            driver,
            state_dir,
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

/// The local cloud's settings from `[cloud]` and the seed's `[kinx_haproxy]` options.
fn local_settings(raw: &RawConfig) -> Result<klb_control::plane::LocalSettings, ConfigError> {
    let k = &raw.kinx_haproxy;
    let mut s = klb_control::plane::LocalSettings::default();
    if let Some(n) = raw.cloud.lb_vm_count {
        s.vm_count = n;
    }
    if let Some(n) = raw.cloud.max_lb_vms {
        s.max_vms = n;
    }
    if let Some(secs) = raw.cloud.scale_out_cooldown_secs {
        s.scale_out_cooldown = std::time::Duration::from_secs(secs);
    }
    if s.vm_count == 0 || s.max_vms < s.vm_count {
        return Err(ConfigError::Invalid {
            key: "cloud.lb_vm_count".to_owned(),
            message: format!(
                "need 1 <= lb_vm_count ({}) <= max_lb_vms ({})",
                s.vm_count, s.max_vms
            ),
        });
    }
    if let Some(v) = k.agent_port {
        s.agent_port = v;
    }
    s.agent_auth = k.agent_auth()?;
    if let Some(v) = k.lb_api_agent_port {
        s.heartbeat_port = v;
    }
    if let Some(v) = k.base_as_number {
        s.base_as_number = v;
    }
    if let Some(v) = k.l3_router_as_number {
        s.lab.l3_router_as = v;
    }
    if let Some(v) = k.default_maxconn {
        s.default_maxconn = v;
    }
    if let Some(v) = k.ceilometer_pps_threshold {
        s.pps_threshold = v;
    }
    if let Some(v) = k.ceilometer_period {
        s.alarm_period_secs = v;
    }
    if let Some(v) = k.ceilometer_evaluation_periods {
        s.alarm_evaluation_periods = v;
    }
    if let Some(secs) = raw.cloud.flow_lease_secs {
        s.flow_lease = std::time::Duration::from_secs(secs.max(1));
    }
    if let Some(prefix) = &raw.cloud.local_prefix {
        s.lab.prefix = prefix.clone();
    }
    if let Some(dir) = &raw.cloud.local_runtime_dir {
        s.lab.runtime_dir = PathBuf::from(dir);
    }
    if let Some(subnet) = &raw.cloud.local_mgmt_subnet {
        s.lab.plan.mgmt_subnet = subnet.parse().map_err(|e| ConfigError::Invalid {
            key: "cloud.local_mgmt_subnet".to_owned(),
            message: format!("{subnet:?}: {e}"),
        })?;
    }
    if let Some(cidr) = &k.kinx_office_ip {
        s.office_cidr = Some(cidr.parse().map_err(|e| ConfigError::Invalid {
            key: "kinx_haproxy.kinx_office_ip".to_owned(),
            message: format!("{cidr:?}: {e}"),
        })?);
    }
    Ok(s)
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
    use klb_control::plane::{CloudChoice, ControlPlane, PlaneConfig};
    let noauth = matches!(config.auth, AuthStrategy::NoAuth);
    let (auth, policy): (
        Arc<dyn klb_api::Authenticator>,
        Option<Arc<dyn klb_api::Policy>>,
    ) = match config.auth {
        AuthStrategy::NoAuth => (
            Arc::new(klb_api::NoAuth {
                default_project_id: Some(config.default_project_id.clone()),
            }),
            None,
        ),
        AuthStrategy::Keystone(kc) => {
            let policy_options = kc.policy;
            let auth = klb_api::auth::keystone::KeystoneAuth::new(kc)
                .context("cannot set up Keystone authentication")?;
            (
                Arc::new(auth),
                Some(Arc::new(klb_api::auth::policy::OctaviaPolicy::new(
                    policy_options,
                ))),
            )
        }
    };
    let cloud = match config.driver {
        Driver::Noop => CloudChoice::Noop,
        Driver::Local(settings) => CloudChoice::Local(settings),
        Driver::Fake(settings) => CloudChoice::Fake(settings),
    };
    let plane = ControlPlane::start(PlaneConfig {
        api_bind: config.bind,
        database_url: config.database_url,
        state_dir: config.state_dir,
        auth,
        policy,
        cloud,
        standalone_lookups: noauth,
    })
    .await
    .context("cannot start the control plane")?;
    tracing::info!(bind = %plane.api_addr(), "klb serve: API listening");
    shutdown_signal().await;
    tracing::info!("shutting down");
    plane.stop().await.context("stopping the control plane")?;
    Ok(())
}

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
    fn local_driver_takes_the_seed_options() {
        let mut raw = RawConfig::default();
        raw.cloud.driver = Some("local".into());
        raw.kinx_haproxy.base_as_number = Some(20000);
        raw.kinx_haproxy.l3_router_as_number = Some(65001);
        raw.kinx_haproxy.ceilometer_pps_threshold = Some(5000);
        raw.kinx_haproxy.kinx_office_ip = Some("198.18.250.0/24".into());
        let Driver::Local(s) = ServeConfig::lift(&raw, None).unwrap().driver else {
            panic!("local driver expected");
        };
        assert_eq!(s.base_as_number, 20000);
        assert_eq!(s.lab.l3_router_as, 65001);
        assert_eq!(s.pps_threshold, 5000);
        assert_eq!(s.office_cidr.unwrap().to_string(), "198.18.250.0/24");
        raw.kinx_haproxy.kinx_office_ip = Some("not a cidr".into());
        assert!(ServeConfig::lift(&raw, None).is_err());
        raw.kinx_haproxy.kinx_office_ip = None;
        raw.cloud.driver = Some("openstack".into());
        assert!(
            ServeConfig::lift(&raw, None).is_err(),
            "not built yet: a clear config error"
        );
    }

    #[test]
    fn bad_bind_is_a_config_error() {
        let mut raw = RawConfig::default();
        raw.api.bind = Some("nowhere".into());
        assert!(ServeConfig::lift(&raw, None).is_err());
    }
}
