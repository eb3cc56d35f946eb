//! What a new LB VM gets before its agent starts (cloud-init's `write_files` on OpenStack, the
//! local cloud's [`VmBootstrap`] hook here): an agent certificate issued by klb's CA for the
//! VM's management address, the CA certificate, and `agent.toml` pointing the heartbeat at
//! the control plane (no key: each VM's own heartbeat key comes with its first desired state,
//! because an OpenStack VM's id, which the key is derived from, does not exist before Nova
//! creates the server this user data boots), and, when the seed's `agent_user`/`agent_password` are set, the `[auth]`
//! the agent then requires on every request. Keys and the password are secrets: written 0600
//! by the local cloud, never logged.

use std::net::IpAddr;
use std::sync::Arc;

use async_trait::async_trait;
use klb_local::{BootInfo, VmBootstrap};
use klb_proto::auth::BasicAuth;
use klb_tls::{Ca, CertKind};

/// Issues per-VM agent credentials and config.
pub struct AgentBootstrap {
    ca: Arc<Ca>,
    /// The agent API port (`agent_port`).
    agent_port: u16,
    /// Port of the heartbeat receiver on the control plane (`lb_api_agent_port`).
    heartbeat_port: u16,
    /// Heartbeat period.
    heartbeat_interval_ms: u64,
    /// Basic auth every agent requires (`agent_user`/`agent_password`), if set.
    auth: Option<BasicAuth>,
}

impl std::fmt::Debug for AgentBootstrap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentBootstrap")
            .field("agent_port", &self.agent_port)
            .field("heartbeat_port", &self.heartbeat_port)
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

impl AgentBootstrap {
    /// A bootstrap hook issuing from `ca`.
    pub fn new(
        ca: Arc<Ca>,
        agent_port: u16,
        heartbeat_port: u16,
        heartbeat_interval_ms: u64,
    ) -> Self {
        AgentBootstrap {
            ca,
            agent_port,
            heartbeat_port,
            heartbeat_interval_ms,
            auth: None,
        }
    }

    /// Agents started with this hook require `auth` (HTTP basic auth); `None`: mTLS only.
    #[must_use]
    pub fn with_auth(mut self, auth: Option<BasicAuth>) -> Self {
        self.auth = auth;
        self
    }

    /// The `agent.toml` for one local-cloud VM (pure; files live in the VM's directory).
    pub fn agent_toml(&self, boot: &BootInfo) -> String {
        let dir = boot.dir.display().to_string();
        self.render_toml(&Layout {
            listen: IpAddr::V4(boot.mgmt_addr),
            runtime_dir: format!("{dir}/run"),
            etc_dir: dir,
            heartbeat_host: IpAddr::V4(boot.host_mgmt_addr),
        })
    }

    fn render_toml(&self, layout: &Layout) -> String {
        let etc = &layout.etc_dir;
        let heartbeat = std::net::SocketAddr::new(layout.heartbeat_host, self.heartbeat_port);
        let mut doc = toml::toml! {
            listen_addr = (layout.listen.to_string())
            port = (i64::from(self.agent_port))
            runtime_dir = (layout.runtime_dir.clone())
            [tls]
            ca_cert = (format!("{etc}/ca.crt"))
            cert = (format!("{etc}/agent.crt"))
            key = (format!("{etc}/agent.key"))
            [heartbeat]
            url = (format!("http://{heartbeat}/v1/heartbeat"))
            interval_ms = (self.heartbeat_interval_ms as i64)
        };
        if let Some(auth) = &self.auth {
            doc.insert(
                "auth".to_owned(),
                toml::Value::Table(toml::toml! {
                    user = (auth.user.clone())
                    password = (auth.password.expose().to_owned())
                }),
            );
        }
        doc.to_string()
    }

    /// Certificate and key of the agent at `mgmt_addr`.
    fn issue(&self, server_name: &str, mgmt_addr: IpAddr) -> Result<(String, String), String> {
        let issued = self
            .ca
            .issue(server_name, CertKind::Server, &[mgmt_addr])
            .map_err(|e| format!("issuing the agent certificate: {e}"))?;
        Ok((issued.cert_pem, issued.key_pem.expose().to_owned()))
    }
}

/// Where an agent's files live and where it reports.
struct Layout {
    listen: IpAddr,
    runtime_dir: String,
    etc_dir: String,
    heartbeat_host: IpAddr,
}

/// Where the agent's files go on an OpenStack LB VM (cloud-init `write_files`).
pub const VM_ETC_DIR: &str = "/etc/klb";
/// The agent's runtime directory on an OpenStack LB VM.
pub const VM_RUNTIME_DIR: &str = "/run/klb-agent";
/// The systemd unit cloud-init writes and starts.
pub const VM_UNIT_PATH: &str = "/etc/systemd/system/klb-agent.service";

/// Cloud-init user data for OpenStack LB VMs: the same files as the local cloud's hook, written
/// by `write_files` under [`VM_ETC_DIR`], plus a systemd unit that runs `klb agent` (the image
/// ships the `klb` binary at `agent_binary`). Rendered as JSON, which cloud-init reads as YAML.
pub struct CloudInit {
    bootstrap: AgentBootstrap,
    /// `lb_api_agent_addr`: the heartbeat receiver on the management network.
    heartbeat_host: IpAddr,
    /// Path of `klb` in the LB image.
    agent_binary: String,
}

impl std::fmt::Debug for CloudInit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CloudInit")
            .field("heartbeat_host", &self.heartbeat_host)
            .finish_non_exhaustive()
    }
}

impl CloudInit {
    /// Cloud-init for agents that bootstrap from `bootstrap`, send heartbeats to `heartbeat_host` and run `agent_binary`.
    pub fn new(bootstrap: AgentBootstrap, heartbeat_host: IpAddr, agent_binary: String) -> Self {
        CloudInit {
            bootstrap,
            heartbeat_host,
            agent_binary,
        }
    }

    /// The user data of one VM (holds its private key: never logged).
    pub fn render_for(&self, boot: &klb_openstack::VmBoot) -> Result<String, String> {
        let (cert, key) = self.bootstrap.issue(&boot.server_name, boot.mgmt_addr)?;
        let toml = self.bootstrap.render_toml(&Layout {
            listen: boot.mgmt_addr,
            runtime_dir: VM_RUNTIME_DIR.to_owned(),
            etc_dir: VM_ETC_DIR.to_owned(),
            heartbeat_host: self.heartbeat_host,
        });
        let unit = format!(
            "[Unit]\nDescription=klb LB VM agent\nAfter=network-online.target\n\n[Service]\nExecStart={} agent --config {VM_ETC_DIR}/agent.toml\nRestart=always\nLimitNOFILE=1048576\n\n[Install]\nWantedBy=multi-user.target\n",
            self.agent_binary
        );
        let file = |path: String, content: &str, permissions: &str| serde_json::json!({"path": path, "content": content, "permissions": permissions, "owner": "root:root"});
        let doc = serde_json::json!({
            "write_files": [
                file(format!("{VM_ETC_DIR}/ca.crt"), self.bootstrap.ca.cert_pem(), "0644"),
                file(format!("{VM_ETC_DIR}/agent.crt"), &cert, "0644"),
                file(format!("{VM_ETC_DIR}/agent.key"), &key, "0600"),
                file(format!("{VM_ETC_DIR}/agent.toml"), &toml, "0600"),
                file(VM_UNIT_PATH.to_owned(), &unit, "0644"),
            ],
            "runcmd": [["systemctl", "daemon-reload"], ["systemctl", "enable", "--now", "klb-agent.service"]],
        });
        Ok(format!("#cloud-config\n{doc}\n"))
    }
}

#[async_trait]
impl klb_openstack::UserData for CloudInit {
    async fn render(&self, boot: &klb_openstack::VmBoot) -> Result<String, String> {
        self.render_for(boot)
    }
}

#[async_trait]
impl VmBootstrap for AgentBootstrap {
    async fn files(&self, boot: &BootInfo) -> Result<Vec<(String, Vec<u8>)>, String> {
        let (cert, key) = self.issue(&boot.server_name, IpAddr::V4(boot.mgmt_addr))?;
        Ok(vec![
            ("ca.crt".to_owned(), self.ca.cert_pem().as_bytes().to_vec()),
            ("agent.crt".to_owned(), cert.into_bytes()),
            ("agent.key".to_owned(), key.into_bytes()),
            ("agent.toml".to_owned(), self.agent_toml(boot).into_bytes()),
        ])
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use klb_agent::config::{AgentConfig, Password};

    use super::*;

    fn boot_info(dir: &std::path::Path) -> BootInfo {
        BootInfo {
            server_id: "s-1".into(),
            server_name: "klb-lb-vm-0".into(),
            metadata: BTreeMap::new(),
            ns: "klb-vm-1".into(),
            dir: dir.to_owned(),
            mgmt_addr: "198.18.128.2".parse().unwrap(),
            l3_addr: "198.18.64.2".parse().unwrap(),
            host_mgmt_addr: "198.18.128.1".parse().unwrap(),
            gateways: [
                "198.18.64.252".parse().unwrap(),
                "198.18.64.253".parse().unwrap(),
            ],
            user_data: None,
        }
    }

    #[tokio::test]
    async fn written_files_make_a_valid_agent_config() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Arc::new(Ca::generate("klb test CA").unwrap());
        let hook = AgentBootstrap::new(ca, 62000, 6543, 1000);
        let boot = boot_info(dir.path());
        let files = hook.files(&boot).await.unwrap();
        for (name, bytes) in &files {
            std::fs::write(dir.path().join(name), bytes).unwrap();
        }
        let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["ca.crt", "agent.crt", "agent.key", "agent.toml"]);
        let config = AgentConfig::load(&dir.path().join("agent.toml")).unwrap();
        let debug = format!("{config:?}");
        assert!(debug.contains("198.18.128.2"), "{debug}");
        let toml = hook.agent_toml(&boot);
        assert!(
            toml.contains("url = \"http://198.18.128.1:6543/v1/heartbeat\""),
            "{toml}"
        );
        // No heartbeat key in the file: each VM's own key comes with its desired state.
        assert!(!toml.contains("hmac_key"), "{toml}");
        // Without agent_user/agent_password: no [auth], the agent runs on mTLS alone.
        assert!(config.auth.is_none(), "{toml}");
    }

    #[tokio::test]
    async fn agent_toml_carries_the_seed_credentials() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Arc::new(Ca::generate("klb test CA").unwrap());
        // Characters TOML must escape survive the round trip.
        let password = "ee71f1d3 \"quoted\" \\ #not-a-comment";
        let hook = AgentBootstrap::new(ca, 62000, 6543, 1000).with_auth(Some(BasicAuth {
            user: "kinx_haproxy_user".into(),
            password: Password::new(password),
        }));
        assert!(!format!("{hook:?}").contains(password));
        let boot = boot_info(dir.path());
        for (name, bytes) in hook.files(&boot).await.unwrap() {
            std::fs::write(dir.path().join(name), bytes).unwrap();
        }
        let config = AgentConfig::load(&dir.path().join("agent.toml")).unwrap();
        let auth = config.auth.as_ref().expect("agent.toml has no [auth]");
        assert_eq!(auth.user, "kinx_haproxy_user");
        assert_eq!(auth.password.expose(), password);
        assert!(!format!("{config:?}").contains(password));
    }
}
