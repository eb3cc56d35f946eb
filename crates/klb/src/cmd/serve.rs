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

/// Which provider settles the API's jobs (`cloud.driver`).
#[derive(Debug)]
enum Driver {
    /// Octavia's noop drivers: jobs succeed at once, nothing is built (the default).
    Noop,
    /// The local cloud: LB VMs are network namespaces on this host (root).
    Local(Box<klb_control::plane::LocalSettings>),
    /// The in-memory fake cloud with real flows (benchmarks, multi-node tests).
    Fake(klb_control::plane::FakeSettings),
    /// A real OpenStack cloud.
    OpenStack(Box<klb_control::plane::OpenStackSettings>),
}

/// The serve settings, validated.
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
    /// API settings (providers).
    api: klb_api::ApiConfig,
}

impl ServeConfig {
    fn lift(
        raw: &RawConfig,
        state_dir: Option<&std::path::Path>,
    ) -> Result<ServeConfig, ConfigError> {
        let bind_text = raw.api.bind.as_deref().unwrap_or(DEFAULT_BIND);
        let bind: SocketAddr = bind_text.parse().map_err(|e| ConfigError::Invalid {
            key: "api.bind".to_owned(),
            message: format!("{bind_text:?}: {e}"),
        })?;
        let auth = match raw.api.auth_strategy.as_deref().unwrap_or("noauth") {
            "noauth" => {
                // noauth believes whatever X-Project-Id/X-Roles a caller sends: reachable from
                // other hosts it is an open admin API, so that takes an explicit opt-in.
                let allowed = raw.api.allow_insecure_noauth.unwrap_or(false);
                if !bind.ip().is_loopback() && !allowed {
                    return Err(ConfigError::Invalid {
                        key: "api.allow_insecure_noauth".to_owned(),
                        message: format!(
                            "auth_strategy \"noauth\" trusts every caller's X-Project-Id and X-Roles headers; binding it to {bind} (not loopback) needs allow_insecure_noauth = true"
                        ),
                    });
                }
                AuthStrategy::NoAuth
            }
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
            "openstack" => Driver::OpenStack(Box::new(openstack_settings(raw)?)),
            "fake" => Driver::Fake(klb_control::plane::FakeSettings {
                latency: std::time::Duration::from_millis(raw.cloud.fake_latency_ms.unwrap_or(0)),
                flow_lease: std::time::Duration::from_secs(raw.cloud.flow_lease_secs.unwrap_or(30)),
                vm_count: raw.cloud.lb_vm_count.unwrap_or(2),
                state_file: raw.cloud.fake_state_file.as_ref().map(PathBuf::from),
            }),
            other => {
                return Err(ConfigError::Invalid {
                    key: "cloud.driver".to_owned(),
                    message: format!("{other:?} is not one of noop, local, fake, openstack"),
                });
            }
        };
        let mut api = klb_api::ApiConfig::default();
        if let Some(text) = &raw.api.enabled_provider_drivers {
            api.enabled_provider_drivers =
                text.parse().map_err(|e: klb_api::ProviderDriversError| {
                    invalid("api.enabled_provider_drivers", e.reason)
                })?;
        }
        if let Some(name) = &raw.api.default_provider_driver {
            api.default_provider = name.trim().to_owned();
        }
        if !api.enabled_provider_drivers.contains(&api.default_provider) {
            return Err(invalid(
                "api.default_provider_driver",
                format!(
                    "{:?} is not one of the enabled provider drivers ({})",
                    api.default_provider, api.enabled_provider_drivers
                ),
            ));
        }
        Ok(ServeConfig {
            driver,
            state_dir,
            auth,
            bind,
            database_url,
            api,
            default_project_id: raw
                .api
                .default_project_id
                .clone()
                .unwrap_or_else(|| DEFAULT_NOAUTH_PROJECT.to_owned()),
        })
    }
}

/// The local cloud's settings from `[cloud]` and the seed's `[kinx_haproxy]` options.
pub(crate) fn local_settings(
    raw: &RawConfig,
) -> Result<klb_control::plane::LocalSettings, ConfigError> {
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

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        message: message.into(),
    }
}

/// A required option of the openstack driver.
fn required(value: &Option<String>, key: &str) -> Result<String, ConfigError> {
    value
        .clone()
        .filter(|v| !v.trim().is_empty())
        .ok_or_else(|| invalid(key, "required with cloud.driver = \"openstack\""))
}

fn parse_opt<T: std::str::FromStr>(
    value: &Option<String>,
    key: &str,
) -> Result<Option<T>, ConfigError>
where
    T::Err: std::fmt::Display,
{
    value
        .as_deref()
        .map(|v| v.parse().map_err(|e| invalid(key, format!("{v:?}: {e}"))))
        .transpose()
}

/// The openstack driver's settings from `[openstack]`, `[keystone]` (credential defaults),
/// `[cloud]` and the seed's `[kinx_haproxy]`. Every option the driver needs is checked here,
/// so `klb serve` stops with the option's name before it talks to the cloud.
fn openstack_settings(
    raw: &RawConfig,
) -> Result<klb_control::plane::OpenStackSettings, ConfigError> {
    use klb_openstack::{AlarmBackend, Credentials, OpenStackConfig, SessionConfig};
    use std::time::Duration;
    let o = &raw.openstack;
    let k = &raw.kinx_haproxy;
    let ks = &raw.keystone;
    let auth_url = o
        .auth_url
        .clone()
        .or_else(|| k.auth_url.clone())
        .or_else(|| ks.auth_url.clone());
    let auth_url = required(&auth_url, "openstack.auth_url (or kinx_haproxy.auth_url)")?;
    let credentials = match (
        &o.application_credential_id,
        &o.application_credential_secret,
    ) {
        (Some(id), Some(secret)) => Credentials::ApplicationCredential {
            id: id.clone(),
            secret: secret.clone().into(),
        },
        (Some(_), None) | (None, Some(_)) => {
            return Err(invalid(
                "openstack.application_credential_id/secret",
                "set both or neither",
            ));
        }
        (None, None) => Credentials::Password {
            username: required(
                &o.username.clone().or_else(|| ks.username.clone()),
                "openstack.username",
            )?,
            password: required(
                &o.password.clone().or_else(|| ks.password.clone()),
                "openstack.password",
            )?
            .into(),
            user_domain_name: o
                .user_domain_name
                .clone()
                .or_else(|| ks.user_domain_name.clone())
                .unwrap_or_else(|| "Default".into()),
            project_name: required(
                &o.project_name.clone().or_else(|| ks.project_name.clone()),
                "openstack.project_name",
            )?,
            project_domain_name: o
                .project_domain_name
                .clone()
                .or_else(|| ks.project_domain_name.clone())
                .unwrap_or_else(|| "Default".into()),
        },
    };
    let interface = o.interface.clone().unwrap_or_else(|| "public".into());
    if !matches!(interface.as_str(), "public" | "internal" | "admin") {
        return Err(invalid(
            "openstack.interface",
            "one of public, internal, admin",
        ));
    }
    if k.image_id.is_none() && o.image_tag.is_none() {
        return Err(invalid(
            "kinx_haproxy.image_id",
            "required with cloud.driver = \"openstack\" (or set openstack.image_tag)",
        ));
    }
    let mgmt_network = k
        .lb_mgmt_net_id
        .clone()
        .or_else(|| k.lb_mgmt_net_name.clone());
    let l3_network = k.lb_l3_net_id.clone().or_else(|| k.lb_l3_net_name.clone());
    let alarms = match o.alarm_type.as_deref().unwrap_or("prometheus") {
        "prometheus" => match &o.prometheus_query {
            Some(query) => AlarmBackend::Prometheus {
                query: query.clone(),
            },
            None => AlarmBackend::prometheus(),
        },
        "gnocchi" => AlarmBackend::gnocchi(),
        other => {
            return Err(invalid(
                "openstack.alarm_type",
                format!("{other:?} is not one of prometheus, gnocchi"),
            ));
        }
    };
    let driver = OpenStackConfig {
        session: SessionConfig {
            auth_url,
            credentials,
            region: o.region_name.clone(),
            interface,
            ca_bundle: o.ca_bundle.as_ref().map(PathBuf::from),
            insecure: o.insecure.unwrap_or(false),
            timeout: Duration::from_secs(o.timeout_secs.unwrap_or(30).max(1)),
            network_endpoint: k.endpoint_url.clone(),
        },
        image_id: k.image_id.clone(),
        image_tag: o.image_tag.clone(),
        flavor_id: required(&k.base_flavor_id, "kinx_haproxy.base_flavor_id")?,
        mgmt_network: required(
            &mgmt_network,
            "kinx_haproxy.lb_mgmt_net_id (or lb_mgmt_net_name)",
        )?,
        l3_network: required(&l3_network, "kinx_haproxy.lb_l3_net_id (or lb_l3_net_name)")?,
        soft_anti_affinity: o.soft_anti_affinity.unwrap_or(false),
        alarms,
    };
    let heartbeat_ip: std::net::IpAddr =
        parse_opt(&k.lb_api_agent_addr, "kinx_haproxy.lb_api_agent_addr")?.ok_or_else(|| {
            invalid(
                "kinx_haproxy.lb_api_agent_addr",
                "required with cloud.driver = \"openstack\" (the control plane's address on lb_mgmt_net)",
            )
        })?;
    let gateways: Vec<std::net::IpAddr> = [
        (
            "kinx_haproxy.primary_l3_gateway_addr",
            &k.primary_l3_gateway_addr,
        ),
        (
            "kinx_haproxy.secondary_l3_gateway_addr",
            &k.secondary_l3_gateway_addr,
        ),
    ]
    .into_iter()
    .map(|(key, v)| {
        parse_opt(v, key)?.ok_or_else(|| invalid(key, "required with cloud.driver = \"openstack\""))
    })
    .collect::<Result<_, _>>()?;
    // The subnets the seed names are checked for form; the driver reads the real ones from
    // Neutron.
    parse_opt::<ipnet::IpNet>(&k.lb_mgmt_subnet, "kinx_haproxy.lb_mgmt_subnet")?;
    parse_opt::<ipnet::IpNet>(&k.lb_l3_subnet, "kinx_haproxy.lb_l3_subnet")?;
    let local = local_settings(raw)?;
    let boot_timeout = Duration::from_secs(o.boot_timeout_secs.unwrap_or(900).max(1));
    let mut timing = klb_flow::lb::FlowTiming::cloud();
    timing.boot.timeout = boot_timeout;
    timing.boot.interval = Duration::from_secs(1);
    if let Some(secs) = o.agent_timeout_secs {
        timing.agent_up.timeout = Duration::from_secs(secs.max(1));
    }
    Ok(klb_control::plane::OpenStackSettings {
        driver,
        vm_count: local.vm_count,
        max_vms: local.max_vms,
        scale_out_cooldown: local.scale_out_cooldown,
        agent_port: local.agent_port,
        agent_auth: local.agent_auth,
        heartbeat_addr: SocketAddr::new(heartbeat_ip, local.heartbeat_port),
        heartbeat_interval: Duration::from_secs(2),
        silent_after: Duration::from_secs(6),
        base_as_number: local.base_as_number,
        l3_router_as_number: k.l3_router_as_number.unwrap_or(60201),
        gateways,
        default_maxconn: local.default_maxconn,
        pps_threshold: local.pps_threshold,
        alarm_period_secs: local.alarm_period_secs,
        alarm_evaluation_periods: local.alarm_evaluation_periods,
        office_cidr: local.office_cidr,
        boot_volume_gib: k.loadbalancer_instance_volume_size,
        availability_zone: k.availibility_zone.clone(),
        agent_binary: o
            .agent_binary
            .clone()
            .unwrap_or_else(|| "/usr/bin/klb".into()),
        flow_lease: local.flow_lease,
        timing,
    })
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
    if noauth && !config.bind.ip().is_loopback() {
        tracing::warn!(
            bind = %config.bind,
            "noauth on a non-loopback address (api.allow_insecure_noauth): any caller who can reach it may act as any project, or as admin with X-Roles: admin"
        );
    }
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
        Driver::OpenStack(settings) => CloudChoice::OpenStack(settings),
    };
    let plane = ControlPlane::start(PlaneConfig {
        api_bind: config.bind,
        database_url: config.database_url,
        state_dir: config.state_dir,
        auth,
        policy,
        cloud,
        standalone_lookups: noauth,
        api: config.api,
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
    fn provider_drivers_come_from_the_config_the_octavia_way() {
        let mut raw = RawConfig::default();
        let c = ServeConfig::lift(&raw, None).unwrap();
        assert_eq!(c.api.default_provider, "klb");
        assert!(c.api.enabled_provider_drivers.contains("amphora"));
        raw.api.enabled_provider_drivers =
            Some("amphora: The klb driver, klb: klb's own name".into());
        raw.api.default_provider_driver = Some("amphora".into());
        let c = ServeConfig::lift(&raw, None).unwrap();
        let names: Vec<&str> = c
            .api
            .enabled_provider_drivers
            .iter()
            .map(|d| d.name.as_str())
            .collect();
        assert_eq!(names, ["amphora", "klb"]);
        assert_eq!(c.api.default_provider, "amphora");
        raw.api.default_provider_driver = Some("octavia".into());
        let err = ServeConfig::lift(&raw, None).unwrap_err().to_string();
        assert!(err.contains("api.default_provider_driver"), "{err}");
        raw.api.default_provider_driver = None;
        raw.api.enabled_provider_drivers = Some("amphora".into());
        let err = ServeConfig::lift(&raw, None).unwrap_err().to_string();
        assert!(err.contains("api.enabled_provider_drivers"), "{err}");
    }

    #[test]
    fn noauth_off_loopback_needs_the_opt_in() {
        let mut raw = RawConfig::default();
        for bind in ["127.0.0.1:9876", "[::1]:9876"] {
            raw.api.bind = Some(bind.into());
            assert!(ServeConfig::lift(&raw, None).is_ok(), "{bind}");
        }
        raw.api.bind = Some("0.0.0.0:9876".into());
        let err = ServeConfig::lift(&raw, None).unwrap_err();
        assert!(err.to_string().contains("allow_insecure_noauth"), "{err}");
        raw.api.bind = Some("198.18.0.5:9876".into());
        assert!(ServeConfig::lift(&raw, None).is_err());
        raw.api.allow_insecure_noauth = Some(true);
        assert!(matches!(
            ServeConfig::lift(&raw, None).unwrap().auth,
            AuthStrategy::NoAuth
        ));
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
    }

    #[test]
    fn openstack_driver_names_what_is_missing() {
        let mut raw = RawConfig::default();
        raw.cloud.driver = Some("openstack".into());
        let missing = |raw: &RawConfig| ServeConfig::lift(raw, None).unwrap_err().to_string();
        assert!(missing(&raw).contains("auth_url"), "{}", missing(&raw));
        raw.kinx_haproxy.auth_url = Some("http://192.168.0.2:35357/v2.0/".into());
        raw.openstack.username = Some("klb".into());
        raw.openstack.password = Some("pw".into());
        raw.openstack.project_name = Some("service".into());
        assert!(
            missing(&raw).contains("kinx_haproxy.image_id"),
            "{}",
            missing(&raw)
        );
        raw.kinx_haproxy.image_id = Some("img".into());
        assert!(
            missing(&raw).contains("base_flavor_id"),
            "{}",
            missing(&raw)
        );
        raw.kinx_haproxy.base_flavor_id = Some("42".into());
        assert!(missing(&raw).contains("lb_mgmt_net"), "{}", missing(&raw));
        raw.kinx_haproxy.lb_mgmt_net_name = Some("lb-mgmt-net".into());
        raw.kinx_haproxy.lb_l3_net_id = Some("bb0d0a66-e039-4b24-a4ba-2b27f1ad1169".into());
        assert!(
            missing(&raw).contains("lb_api_agent_addr"),
            "{}",
            missing(&raw)
        );
        raw.kinx_haproxy.lb_api_agent_addr = Some("198.18.128.1".into());
        assert!(
            missing(&raw).contains("primary_l3_gateway_addr"),
            "{}",
            missing(&raw)
        );
        raw.kinx_haproxy.primary_l3_gateway_addr = Some("198.18.64.1".into());
        raw.kinx_haproxy.secondary_l3_gateway_addr = Some("not an address".into());
        assert!(
            missing(&raw).contains("secondary_l3_gateway_addr"),
            "{}",
            missing(&raw)
        );
        raw.kinx_haproxy.secondary_l3_gateway_addr = Some("198.18.64.2".into());
        raw.kinx_haproxy.loadbalancer_instance_volume_size = Some(50);
        raw.kinx_haproxy.availibility_zone = Some("lbaas-az".into());
        raw.kinx_haproxy.lb_api_agent_port = Some(6543);
        let Driver::OpenStack(s) = ServeConfig::lift(&raw, None).unwrap().driver else {
            panic!("openstack driver expected");
        };
        assert_eq!(s.driver.flavor_id, "42");
        assert_eq!(s.driver.mgmt_network, "lb-mgmt-net");
        assert_eq!(s.heartbeat_addr.to_string(), "198.18.128.1:6543");
        assert_eq!(s.boot_volume_gib, Some(50));
        assert_eq!(s.availability_zone.as_deref(), Some("lbaas-az"));
        assert_eq!(s.gateways.len(), 2);
        raw.openstack.alarm_type = Some("threshold".into());
        assert!(missing(&raw).contains("alarm_type"), "{}", missing(&raw));
    }

    #[test]
    fn bad_bind_is_a_config_error() {
        let mut raw = RawConfig::default();
        raw.api.bind = Some("nowhere".into());
        assert!(ServeConfig::lift(&raw, None).is_err());
    }
}
