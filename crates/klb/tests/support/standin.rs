//! A stand-in hypervisor for Nova's fake virt driver: for every ACTIVE server tagged `klb`,
//! a network namespace in a local lab ([`klb_local::Lab`]) with that server's Neutron port
//! addresses and MACs, running the real `klb agent` from the server's cloud-init user data;
//! when Nova forgets the server, its namespace goes.
//!
//! What it honours of cloud-init is what klb's user data uses: `write_files` (installed under
//! the VM's directory as its root, `/etc/klb/...` → `<vm dir>/root/etc/klb/...`) and the
//! systemd unit's `ExecStart=<klb> agent --config /etc/klb/agent.toml`, run with the
//! installed `agent.toml` whose `/etc/klb` and `/run/klb-agent` paths are mapped the same way
//! (a namespace has no chroot). The VIP goes on `lo` the way it does on a real LB VM: the
//! agent puts the addresses it announces there.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use klb_local::{GuestNics, Lab};
use klb_openstack::{Call, Method, ServiceType, Session};
use serde_json::Value;
use tokio::sync::{Mutex, watch};

/// Looks (250 ms apart) at a server that cannot boot yet before the stand-in gives up on it.
const MAX_BOOT_ATTEMPTS: u32 = 40;

/// The boot "error" of a server whose ports are on other networks.
const NOT_MINE: &str = "not on this hypervisor's networks";

/// What the stand-in needs to know.
#[derive(Clone)]
pub struct StandInConfig {
    /// A session that may list every project's servers and ports (the cloud admin).
    pub session: Session,
    /// Neutron network of the LB VMs' management ports.
    pub mgmt_network: String,
    /// Neutron network of their L3 ports.
    pub l3_network: String,
    /// The `klb` binary that plays the image's.
    pub klb_exe: PathBuf,
}

/// One booted guest.
#[derive(Debug, Clone)]
pub struct Guest {
    pub server_id: String,
    pub short_id: String,
    pub mgmt_addr: Ipv4Addr,
    pub l3_addr: Ipv4Addr,
}

/// The running stand-in (stops when dropped or [`StandIn::stop`]ped).
pub struct StandIn {
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
    guests: Arc<Mutex<BTreeMap<String, Guest>>>,
    errors: Arc<Mutex<Vec<String>>>,
}

impl StandIn {
    /// Starts watching Nova every 250 ms.
    pub fn start(lab: Arc<Mutex<Lab>>, cfg: StandInConfig) -> StandIn {
        let (stop, mut stop_rx) = watch::channel(false);
        let guests: Arc<Mutex<BTreeMap<String, Guest>>> = Arc::default();
        let errors: Arc<Mutex<Vec<String>>> = Arc::default();
        let (g, e) = (guests.clone(), errors.clone());
        let task = tokio::spawn(async move {
            // Boot attempts per server: Nova may report ACTIVE before Neutron shows the ports
            // bound to the server, so a failed boot is retried on the next ticks (10 s).
            let mut failed: BTreeMap<String, u32> = BTreeMap::new();
            loop {
                if let Err(why) = tick(&lab, &cfg, &g, &mut failed).await {
                    e.lock().await.push(why);
                }
                tokio::select! {
                    _ = stop_rx.changed() => break,
                    _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                }
            }
        });
        StandIn {
            stop,
            task: Some(task),
            guests,
            errors,
        }
    }

    /// The guests running now, by server id.
    pub async fn guests(&self) -> BTreeMap<String, Guest> {
        self.guests.lock().await.clone()
    }

    /// Boot failures and Nova errors seen so far.
    pub async fn errors(&self) -> Vec<String> {
        self.errors.lock().await.clone()
    }

    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// One look at Nova: boot new ACTIVE servers, remove namespaces of servers Nova no longer has.
async fn tick(
    lab: &Arc<Mutex<Lab>>,
    cfg: &StandInConfig,
    guests: &Arc<Mutex<BTreeMap<String, Guest>>>,
    failed: &mut BTreeMap<String, u32>,
) -> Result<(), String> {
    let servers: Vec<Value> = cfg
        .session
        .json(
            &Call::new(
                "standin_list_servers",
                "",
                Method::GET,
                ServiceType::Compute,
                "servers/detail",
            )
            .query("all_tenants", "1")
            .query("tags", klb_openstack::TAG)
            .version(2, 67)
            .key("servers"),
        )
        .await
        .map_err(|e| e.to_string())?;
    let active: BTreeMap<String, &Value> = servers
        .iter()
        .filter(|s| s["status"] == "ACTIVE")
        .filter_map(|s| s["id"].as_str().map(|id| (id.to_owned(), s)))
        .collect();
    let gone: Vec<Guest> = guests
        .lock()
        .await
        .values()
        .filter(|g| !active.contains_key(&g.server_id))
        .cloned()
        .collect();
    let mut result = Ok(());
    for g in gone {
        // Forgotten either way: a failed removal is reported, and never blocks new boots.
        guests.lock().await.remove(&g.server_id);
        if let Err(e) = lab.lock().await.remove_vm(&g.short_id).await {
            result = Err(format!("removing guest {}: {e}", g.short_id));
        }
    }
    for (id, server) in active {
        let attempts = failed.get(&id).copied().unwrap_or(0);
        if guests.lock().await.contains_key(&id) || attempts >= MAX_BOOT_ATTEMPTS {
            continue;
        }
        match boot(lab, cfg, &id, server).await {
            Ok(g) => {
                failed.remove(&id);
                guests.lock().await.insert(id, g);
            }
            Err(why) if why == NOT_MINE => {
                failed.insert(id.clone(), MAX_BOOT_ATTEMPTS);
            }
            Err(why) => {
                failed.insert(id.clone(), attempts + 1);
                if attempts + 1 == MAX_BOOT_ATTEMPTS {
                    result = Err(format!("booting server {id}: {why}"));
                }
            }
        }
    }
    result
}

/// A guest namespace for `server`, its files installed, its agent started.
async fn boot(
    lab: &Arc<Mutex<Lab>>,
    cfg: &StandInConfig,
    id: &str,
    server: &Value,
) -> Result<Guest, String> {
    let ports: Vec<Value> = cfg
        .session
        .json(
            &Call::new(
                "standin_ports",
                id,
                Method::GET,
                ServiceType::Network,
                "v2.0/ports",
            )
            .query("device_id", id)
            .key("ports"),
        )
        .await
        .map_err(|e| e.to_string())?;
    let nic = |network: &str| -> Result<(Ipv4Addr, String), String> {
        let port = ports
            .iter()
            .find(|p| p["network_id"] == network)
            .ok_or_else(|| format!("no port on network {network}"))?;
        let addr = port["fixed_ips"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| f["ip_address"].as_str()?.parse::<IpAddr>().ok())
            .find_map(|a| match a {
                IpAddr::V4(v4) => Some(v4),
                IpAddr::V6(_) => None,
            })
            .ok_or_else(|| format!("port {} has no IPv4 address", port["id"]))?;
        let mac = port["mac_address"]
            .as_str()
            .ok_or("port without a MAC")?
            .to_owned();
        Ok((addr, mac))
    };
    if !ports.is_empty()
        && !ports
            .iter()
            .any(|p| p["network_id"] == cfg.mgmt_network.as_str())
    {
        // Another test's (or a leftover) klb server on other networks: not this hypervisor's.
        return Err(NOT_MINE.to_owned());
    }
    let (mgmt_addr, mgmt_mac) = nic(&cfg.mgmt_network)?;
    let (l3_addr, l3_mac) = nic(&cfg.l3_network)?;
    let user_data = server["OS-EXT-SRV-ATTR:user_data"]
        .as_str()
        .ok_or("the server has no user data")?;
    let user_data = base64::engine::general_purpose::STANDARD
        .decode(user_data)
        .map_err(|e| format!("user data is not base64: {e}"))?;
    let user_data = String::from_utf8(user_data).map_err(|_| "user data is not UTF-8")?;
    let cloud_config = parse_cloud_config(&user_data)?;
    let short_id: String = id.chars().filter(char::is_ascii_hexdigit).take(8).collect();
    let mut lab = lab.lock().await;
    let vm = lab
        .add_guest_vm(
            &short_id,
            &GuestNics {
                l3_addr,
                l3_mac,
                mgmt_addr,
                mgmt_mac,
            },
        )
        .await
        .map_err(|e| e.to_string())?;
    let root = vm.dir.join("root");
    let started = async {
        let config = install(&cloud_config, &root)?;
        let args = vec![
            "agent".to_owned(),
            "--config".to_owned(),
            config.display().to_string(),
        ];
        lab.spawn_in_vm(
            &short_id,
            "agent",
            &cfg.klb_exe,
            &args,
            &[("RUST_LOG".to_owned(), "info".to_owned())],
        )
        .await
        .map_err(|e| e.to_string())
    }
    .await;
    if let Err(why) = started {
        let _ = lab.remove_vm(&short_id).await;
        return Err(why);
    }
    Ok(Guest {
        server_id: id.to_owned(),
        short_id,
        mgmt_addr,
        l3_addr,
    })
}

/// The parts of a `#cloud-config` document the stand-in honours.
#[derive(Debug)]
pub struct CloudConfig {
    /// `(path, content, mode)` of `write_files`.
    pub files: Vec<(String, String, u32)>,
    /// The agent unit's `ExecStart` arguments after the program.
    pub agent_args: Vec<String>,
}

/// Reads klb's user data (JSON is valid YAML, and klb renders JSON).
pub fn parse_cloud_config(text: &str) -> Result<CloudConfig, String> {
    let body = text
        .strip_prefix("#cloud-config\n")
        .ok_or("user data does not start with #cloud-config")?;
    let doc: Value =
        serde_json::from_str(body).map_err(|e| format!("cloud-config is not JSON: {e}"))?;
    let mut files = Vec::new();
    for f in doc["write_files"].as_array().ok_or("no write_files")? {
        let path = f["path"].as_str().ok_or("write_files entry without path")?;
        let content = f["content"]
            .as_str()
            .ok_or("write_files entry without content")?;
        let mode = u32::from_str_radix(f["permissions"].as_str().unwrap_or("0644"), 8)
            .map_err(|_| format!("bad permissions for {path}"))?;
        files.push((path.to_owned(), content.to_owned(), mode));
    }
    let unit = files
        .iter()
        .find(|(p, _, _)| p.ends_with("/klb-agent.service"))
        .ok_or("no klb-agent.service unit")?;
    let exec = unit
        .1
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .ok_or("the unit has no ExecStart")?;
    let agent_args: Vec<String> = exec.split_whitespace().skip(1).map(str::to_owned).collect();
    let runs_agent = doc["runcmd"].to_string().contains("klb-agent.service");
    if !runs_agent {
        return Err("runcmd does not start klb-agent.service".into());
    }
    Ok(CloudConfig { files, agent_args })
}

/// Writes the files under `root` and returns the mapped `agent.toml`'s path.
fn install(cc: &CloudConfig, root: &Path) -> Result<PathBuf, String> {
    use std::os::unix::fs::PermissionsExt;
    if cc.agent_args.first().map(String::as_str) != Some("agent")
        || cc.agent_args.get(1).map(String::as_str) != Some("--config")
    {
        return Err(format!(
            "unexpected ExecStart arguments {:?}",
            cc.agent_args
        ));
    }
    let config = cc.agent_args.get(2).ok_or("ExecStart without a config")?;
    let map = |path: &str| root.join(path.trim_start_matches('/'));
    let root_text = root.display().to_string();
    for (path, content, mode) in &cc.files {
        if path.contains("..") || !path.starts_with('/') {
            return Err(format!("refusing write_files path {path:?}"));
        }
        let target = map(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        let content = if path == config {
            content
                .replace("\"/etc/klb/", &format!("\"{root_text}/etc/klb/"))
                .replace("\"/run/klb-agent", &format!("\"{root_text}/run/klb-agent"))
        } else {
            content.clone()
        };
        std::fs::write(&target, content).map_err(|e| format!("{}: {e}", target.display()))?;
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(*mode))
            .map_err(|e| format!("{}: {e}", target.display()))?;
    }
    Ok(map(config))
}
