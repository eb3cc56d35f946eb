//! Raw configuration: `klb.toml`, the seed's INI `[kinx_haproxy]` section (same option names,
//! including the seed's spelling `availibility_zone`) and environment overrides. Each crate
//! lifts its part of [`RawConfig`] into its own validated, typed config.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Environment variables that override config keys (stable names, see README).
pub mod env {
    pub const API_BIND: &str = "KLB_API_BIND";
    pub const API_AUTH_STRATEGY: &str = "KLB_API_AUTH_STRATEGY";
    pub const DATABASE_URL: &str = "KLB_DATABASE_URL";
}

/// A configuration problem: the binary exits with EX_USAGE (64).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid TOML in {path}")]
    Toml {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("invalid INI in {path}")]
    Ini {
        path: PathBuf,
        #[source]
        source: ini::Error,
    },
    #[error("invalid value for {key}: {message}")]
    Invalid { key: String, message: String },
}

/// The whole raw file. Unknown keys are rejected so typos do not pass silently.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    pub api: RawApi,
    pub database: RawDatabase,
    pub keystone: RawKeystone,
    pub cloud: RawCloud,
    /// `cloud.driver = "openstack"`: klb's service user and the driver's choices.
    pub openstack: RawOpenStack,
    /// The seed's driver options, same names as in neutron.conf.
    pub kinx_haproxy: RawKinxHaproxy,
    /// Path of an INI file (e.g. the old neutron.conf) whose `[kinx_haproxy]` section is read.
    pub kinx_ini: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawApi {
    /// Listen address, default 127.0.0.1:9876.
    pub bind: Option<String>,
    /// `noauth` (default) or `keystone`.
    pub auth_strategy: Option<String>,
    /// Project used by `noauth` requests without an X-Project-Id header.
    pub default_project_id: Option<String>,
    /// Allow `noauth` on a non-loopback `bind` (noauth trusts the caller's headers).
    pub allow_insecure_noauth: Option<bool>,
    /// Octavia's `enabled_provider_drivers`: `name:description,name:description` (default: klb,
    /// amphora, octavia, all meaning klb's driver).
    pub enabled_provider_drivers: Option<String>,
    /// Octavia's `default_provider_driver`: recorded on LBs created without a provider
    /// (default `klb`); must be one of the enabled drivers.
    pub default_provider_driver: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawDatabase {
    /// `sqlite://PATH` (default `sqlite://klb.db`) or `postgres://...`.
    pub url: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawKeystone {
    /// Keystone v3 base URL, e.g. http://keystone:5000/v3 (a /v2.0 URL is mapped to /v3).
    pub auth_url: Option<String>,
    /// Service credentials used to validate user tokens.
    pub username: Option<String>,
    pub password: Option<String>,
    pub project_name: Option<String>,
    pub user_domain_name: Option<String>,
    pub project_domain_name: Option<String>,
    /// Seconds a validated token stays cached (bounded by its own expiry).
    pub cache_seconds: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawCloud {
    /// `noop` (default), `local` or `fake`.
    pub driver: Option<String>,
    /// Number of LB VMs per load balancer (default 2).
    pub lb_vm_count: Option<u32>,
    /// Upper bound of the active-active set for scale-out (default 4).
    pub max_lb_vms: Option<u32>,
    /// PPS alarms of a load balancer are ignored this long after it scaled out (default 60).
    pub scale_out_cooldown_secs: Option<u64>,
    /// `fake` driver: latency of every cloud call, milliseconds (default 0).
    pub fake_latency_ms: Option<u64>,
    /// `fake` driver: keep the fake cloud in this JSON file, shared by every node configured
    /// with the same path (default: in memory, per process).
    pub fake_state_file: Option<String>,
    /// Flow lease in seconds: how long a dead node's flows wait before another node takes
    /// them over (default 30).
    pub flow_lease_secs: Option<u64>,
    /// `local` driver: prefix of every namespace (default `klb-`, at most 10 bytes).
    pub local_prefix: Option<String>,
    /// `local` driver: directory for configs, logs and the state file (default /run/klb/local).
    pub local_runtime_dir: Option<String>,
    /// `local` driver: management subnet (default 198.18.128.0/17; must be in 198.18.0.0/15).
    pub local_mgmt_subnet: Option<String>,
}

/// `[openstack]`: how klb's service user reaches the cloud (credentials default to
/// `[keystone]`'s, the URL to `kinx_haproxy.auth_url`).
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawOpenStack {
    pub auth_url: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub user_domain_name: Option<String>,
    pub project_name: Option<String>,
    pub project_domain_name: Option<String>,
    /// Instead of a password: an application credential.
    pub application_credential_id: Option<String>,
    pub application_credential_secret: Option<String>,
    pub region_name: Option<String>,
    /// Catalog interface (default `public`).
    pub interface: Option<String>,
    /// CA bundle (PEM) for the cloud's endpoints.
    pub ca_bundle: Option<String>,
    /// Skip TLS verification (test clouds only).
    pub insecure: Option<bool>,
    /// Timeout of every call, seconds (default 30).
    pub timeout_secs: Option<u64>,
    /// Newest active Glance image with this tag, when `image_id` is not set.
    pub image_tag: Option<String>,
    /// `soft-anti-affinity` server groups (default false: `anti-affinity`).
    pub soft_anti_affinity: Option<bool>,
    /// `prometheus` (default) or `gnocchi`.
    pub alarm_type: Option<String>,
    /// PromQL with `{servers}` and `{period}` placeholders.
    pub prometheus_query: Option<String>,
    /// Path of `klb` in the LB image (default /usr/bin/klb).
    pub agent_binary: Option<String>,
    /// Seconds to wait for a VM to become ACTIVE (default 900).
    pub boot_timeout_secs: Option<u64>,
    /// Seconds to wait, once a VM is ACTIVE, for its agent to answer (cloud-init starts it;
    /// default 600).
    pub agent_timeout_secs: Option<u64>,
}

impl std::fmt::Debug for RawOpenStack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawOpenStack")
            .field("auth_url", &self.auth_url)
            .field("username", &self.username)
            .field("project_name", &self.project_name)
            .field("application_credential_id", &self.application_credential_id)
            .finish_non_exhaustive()
    }
}

/// The seed's `[kinx_haproxy]` options. All optional; defaults are applied when lifting.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawKinxHaproxy {
    /// Ids may look like numbers (Nova flavor `42`): accepted as text.
    #[serde(deserialize_with = "text_or_number")]
    pub image_id: Option<String>,
    #[serde(deserialize_with = "text_or_number")]
    pub base_flavor_id: Option<String>,
    pub auth_url: Option<String>,
    pub endpoint_url: Option<String>,
    pub kinx_office_ip: Option<String>,
    /// With `agent_password`: HTTP basic auth on every agent, on top of mTLS.
    pub agent_user: Option<String>,
    /// Never printed (`Debug` shows `<redacted>`).
    pub agent_password: Option<klb_proto::auth::Password>,
    pub agent_port: Option<u16>,
    pub default_maxconn: Option<u32>,
    pub loadbalancer_instance_volume_size: Option<u32>,
    /// Spelled as in the seed.
    pub availibility_zone: Option<String>,
    pub lb_api_agent_addr: Option<String>,
    pub lb_api_agent_port: Option<u16>,
    pub lb_mgmt_subnet: Option<String>,
    #[serde(deserialize_with = "text_or_number")]
    pub lb_mgmt_net_id: Option<String>,
    pub lb_mgmt_net_name: Option<String>,
    pub lb_l3_subnet: Option<String>,
    #[serde(deserialize_with = "text_or_number")]
    pub lb_l3_net_id: Option<String>,
    pub lb_l3_net_name: Option<String>,
    pub base_as_number: Option<u32>,
    pub primary_l3_gateway_addr: Option<String>,
    pub secondary_l3_gateway_addr: Option<String>,
    pub l3_router_as_number: Option<u32>,
    pub ceilometer_period: Option<u32>,
    pub ceilometer_evaluation_periods: Option<u32>,
    pub ceilometer_pps_threshold: Option<u64>,
}

/// An option that is text even when the file spells it as a number (`base_flavor_id=42`).
fn text_or_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum TextOrNumber {
        Text(String),
        Number(i64),
    }
    Ok(Option::<TextOrNumber>::deserialize(d)?.map(|v| match v {
        TextOrNumber::Text(s) => s,
        TextOrNumber::Number(n) => n.to_string(),
    }))
}

impl RawConfig {
    /// Reads `path` if given (a missing `--config` means all defaults), then the seed INI if
    /// named, then environment overrides.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let mut raw = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                toml::from_str(&text).map_err(|source| ConfigError::Toml {
                    path: path.to_owned(),
                    source,
                })?
            }
            None => RawConfig::default(),
        };
        if let Some(ini_path) = raw.kinx_ini.clone() {
            let from_ini = read_kinx_ini(&ini_path)?;
            raw.kinx_haproxy = merge_kinx(from_ini, raw.kinx_haproxy);
        }
        raw.apply_env(|key| std::env::var(key).ok());
        Ok(raw)
    }

    fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) {
        if let Some(v) = get(env::API_BIND) {
            self.api.bind = Some(v);
        }
        if let Some(v) = get(env::API_AUTH_STRATEGY) {
            self.api.auth_strategy = Some(v);
        }
        if let Some(v) = get(env::DATABASE_URL) {
            self.database.url = Some(v);
        }
    }
}

/// Reads the `[kinx_haproxy]` section of an INI file. Values may carry a trailing
/// `# comment` as in the seed's sample.
pub fn read_kinx_ini(path: &Path) -> Result<RawKinxHaproxy, ConfigError> {
    let ini = ini::Ini::load_from_file(path).map_err(|source| ConfigError::Ini {
        path: path.to_owned(),
        source,
    })?;
    let mut table = toml::Table::new();
    if let Some(section) = ini.section(Some("kinx_haproxy")) {
        for (key, value) in section.iter() {
            let value = value.split(" #").next().unwrap_or("").trim();
            // Credentials are strings even when they look like numbers ("123456").
            let text_only = matches!(key, "agent_user" | "agent_password");
            let parsed = value
                .parse::<i64>()
                .ok()
                .filter(|_| !text_only)
                .map_or_else(
                    || toml::Value::String(value.to_owned()),
                    toml::Value::Integer,
                );
            table.insert(key.to_owned(), parsed);
        }
    }
    toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| ConfigError::Invalid {
            key: format!("{}:[kinx_haproxy]", path.display()),
            message: e.to_string(),
        })
}

impl RawKinxHaproxy {
    /// `agent_user` and `agent_password` lifted: both or neither, neither empty.
    pub fn agent_auth(&self) -> Result<Option<klb_proto::auth::BasicAuth>, ConfigError> {
        match (&self.agent_user, &self.agent_password) {
            (None, None) => Ok(None),
            (Some(user), Some(password)) if !user.is_empty() && !password.expose().is_empty() => {
                Ok(Some(klb_proto::auth::BasicAuth {
                    user: user.clone(),
                    password: password.clone(),
                }))
            }
            _ => Err(ConfigError::Invalid {
                key: "kinx_haproxy.agent_user/agent_password".to_owned(),
                message: "set both (non-empty) or neither".to_owned(),
            }),
        }
    }
}

/// `over` wins field by field (klb.toml over the INI file).
fn merge_kinx(base: RawKinxHaproxy, over: RawKinxHaproxy) -> RawKinxHaproxy {
    macro_rules! pick {
        ($($f:ident),*) => { RawKinxHaproxy { $($f: over.$f.or(base.$f)),* } };
    }
    pick!(
        image_id,
        base_flavor_id,
        auth_url,
        endpoint_url,
        kinx_office_ip,
        agent_user,
        agent_password,
        agent_port,
        default_maxconn,
        loadbalancer_instance_volume_size,
        availibility_zone,
        lb_api_agent_addr,
        lb_api_agent_port,
        lb_mgmt_subnet,
        lb_mgmt_net_id,
        lb_mgmt_net_name,
        lb_l3_subnet,
        lb_l3_net_id,
        lb_l3_net_name,
        base_as_number,
        primary_l3_gateway_addr,
        secondary_l3_gateway_addr,
        l3_router_as_number,
        ceilometer_period,
        ceilometer_evaluation_periods,
        ceilometer_pps_threshold
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_ini_section_is_read_with_its_spellings() {
        let dir = tempfile_dir();
        let path = dir.join("neutron.conf");
        std::fs::write(
            &path,
            "[DEFAULT]\ndhcp_agents_per_network=3\n[kinx_haproxy]\n\
             image_id=7de0af35-14d3-4771-8af5-48cbce75ea1d # Image ID\n\
             agent_port=62000\navailibility_zone=lbaas-az\nbase_as_number=10000\n\
             ceilometer_pps_threshold=20000\nkinx_office_ip=198.18.9.0/24\n",
        )
        .unwrap();
        let raw = read_kinx_ini(&path).unwrap();
        assert_eq!(
            raw.image_id.as_deref(),
            Some("7de0af35-14d3-4771-8af5-48cbce75ea1d")
        );
        assert_eq!(raw.agent_port, Some(62000));
        assert_eq!(raw.availibility_zone.as_deref(), Some("lbaas-az"));
        assert_eq!(raw.base_as_number, Some(10000));
        assert_eq!(raw.ceilometer_pps_threshold, Some(20000));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_seeds_whole_section_reads_as_is_numeric_ids_included() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("neutron.conf");
        let seed = "[kinx_haproxy]\n\
            image_id=7de0af35-14d3-4771-8af5-48cbce75ea1d # Image ID\n\
            base_flavor_id=42 # Flavor ID\n\
            auth_url=http://192.168.0.2:35357/v2.0/\n\
            endpoint_url=http://192.168.0.2:9696/\n\
            kinx_office_ip=211.196.205.71/32\n\
            agent_user=kinx_haproxy_user\n\
            agent_password=ee71f1d37d8c4f96ac4fbb5ebecd65a9\n\
            agent_port=62000\ndefault_maxconn=12000\n\
            loadbalancer_instance_volume_size=50\navailibility_zone=lbaas-az\n\
            lb_api_agent_addr=192.168.0.4\nlb_api_agent_port=6543\n\
            lb_mgmt_subnet=10.30.252.0/22\nlb_mgmt_net_id=0589ee28-9e73-42ef-ba58-41e5b32a85ba\n\
            lb_mgmt_net_name=lb-mgmt-net\nlb_l3_subnet=10.40.252.0/22\n\
            lb_l3_net_id=bb0d0a66-e039-4b24-a4ba-2b27f1ad1169\nlb_l3_net_name=lb-l3-net\n\
            base_as_number=10000\nprimary_l3_gateway_addr=10.40.252.2\n\
            secondary_l3_gateway_addr=10.40.252.3\nl3_router_as_number=60201\n\
            ceilometer_period=60\nceilometer_evaluation_periods=3\nceilometer_pps_threshold=20000\n";
        std::fs::write(&path, seed).unwrap();
        let raw = read_kinx_ini(&path).unwrap();
        assert_eq!(raw.base_flavor_id.as_deref(), Some("42"));
        assert_eq!(raw.loadbalancer_instance_volume_size, Some(50));
        assert_eq!(
            raw.secondary_l3_gateway_addr.as_deref(),
            Some("10.40.252.3")
        );
        let toml: RawConfig = toml::from_str("[kinx_haproxy]\nbase_flavor_id = 42\n").unwrap();
        assert_eq!(toml.kinx_haproxy.base_flavor_id.as_deref(), Some("42"));
    }

    #[test]
    fn seed_agent_credentials_are_read_as_text_and_never_printed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("neutron.conf");
        // A password of digits only must stay a string (it used to fail as an integer).
        std::fs::write(
            &path,
            "[kinx_haproxy]\nagent_user=kinx_haproxy_user\nagent_password=0123456789\n",
        )
        .unwrap();
        let raw = read_kinx_ini(&path).unwrap();
        assert!(!format!("{raw:?}").contains("0123456789"), "{raw:?}");
        let auth = raw.agent_auth().unwrap().expect("credentials set");
        assert_eq!(auth.user, "kinx_haproxy_user");
        assert_eq!(auth.password.expose(), "0123456789");
        assert!(!format!("{auth:?}").contains("0123456789"));
        // From klb.toml too; half a credential is an error.
        let raw: RawConfig =
            toml::from_str("[kinx_haproxy]\nagent_user = \"u\"\nagent_password = \"p\"\n").unwrap();
        assert!(raw.kinx_haproxy.agent_auth().unwrap().is_some());
        let half: RawConfig = toml::from_str("[kinx_haproxy]\nagent_user = \"u\"\n").unwrap();
        assert!(half.kinx_haproxy.agent_auth().is_err());
        assert!(
            RawConfig::default()
                .kinx_haproxy
                .agent_auth()
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn env_overrides_file_values() {
        let mut raw: RawConfig =
            toml::from_str("[api]\nbind = \"127.0.0.1:1\"\n[database]\nurl = \"sqlite://a.db\"\n")
                .unwrap();
        raw.apply_env(|k| (k == env::DATABASE_URL).then(|| "postgres://x/y".to_owned()));
        assert_eq!(raw.api.bind.as_deref(), Some("127.0.0.1:1"));
        assert_eq!(raw.database.url.as_deref(), Some("postgres://x/y"));
    }

    #[test]
    fn the_readme_example_parses() {
        let readme = include_str!("../../../README.md");
        let start =
            readme.find("```toml\n").expect("README has a TOML example") + "```toml\n".len();
        let len = readme[start..].find("```").expect("the example ends");
        let raw: RawConfig = toml::from_str(&readme[start..start + len]).unwrap();
        assert_eq!(raw.cloud.max_lb_vms, Some(4));
        assert_eq!(raw.cloud.scale_out_cooldown_secs, Some(60));
    }

    #[test]
    fn unknown_keys_are_rejected() {
        assert!(toml::from_str::<RawConfig>("[api]\nbnid = \"x\"\n").is_err());
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("klb-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
