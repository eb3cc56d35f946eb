//! The local cloud's persisted records and its state file (mode 0600: it holds webhook URLs).
//! klb-cloud's types are not `Serialize` by design; these records mirror them.

use super::*;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct GroupRec {
    pub(super) id: String,
    pub(super) name: String,
    pub(super) soft: bool,
    pub(super) members: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct ServerRec {
    pub(super) id: String,
    pub(super) name: String,
    pub(super) short_id: String,
    pub(super) metadata: BTreeMap<String, String>,
    pub(super) group: Option<String>,
    /// Port ids in NIC order.
    pub(super) nics: Vec<String>,
    /// Set when the VM was lost (e.g. gone after a restart).
    pub(super) fault: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct SecGroupRec {
    pub(super) id: String,
    pub(super) name: String,
    pub(super) description: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct RuleRec {
    pub(super) id: String,
    pub(super) group: String,
    pub(super) ingress: bool,
    pub(super) protocol: String,
    pub(super) ports: Option<(u16, u16)>,
    pub(super) remote: Option<IpNet>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct PortRec {
    pub(super) id: String,
    pub(super) name: String,
    pub(super) network_id: String,
    pub(super) ip: IpAddr,
    pub(super) security_groups: Vec<String>,
    pub(super) pairs: Vec<IpAddr>,
    pub(super) device_id: Option<String>,
    pub(super) device_owner: Option<String>,
    /// Created by `create_server` (deleted with it).
    pub(super) server_owned: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct AlarmRec {
    pub(super) id: String,
    pub(super) name: String,
    pub(super) lb_id: String,
    pub(super) server_ids: Vec<String>,
    pub(super) threshold_pps: u64,
    pub(super) period_secs: u32,
    pub(super) evaluation_periods: u32,
    pub(super) webhook_url: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct Persisted {
    pub(super) lab: Option<LabSnapshot>,
    pub(super) groups: BTreeMap<String, GroupRec>,
    pub(super) servers: BTreeMap<String, ServerRec>,
    pub(super) security_groups: BTreeMap<String, SecGroupRec>,
    pub(super) rules: BTreeMap<String, RuleRec>,
    pub(super) ports: BTreeMap<String, PortRec>,
    pub(super) alarms: BTreeMap<String, AlarmRec>,
}

pub(super) fn read_state(path: &Path) -> Result<Persisted> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| LocalError::State {
            path: path.into(),
            reason: e.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Persisted::default()),
        Err(e) => Err(LocalError::io(path, e)),
    }
}

pub(super) fn write_state(path: &Path, st: &Persisted) -> Result<()> {
    let body = serde_json::to_vec_pretty(st).map_err(|e| LocalError::State {
        path: path.into(),
        reason: e.to_string(),
    })?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| LocalError::io(dir, e))?;
    }
    let tmp = path.with_extension("tmp");
    write_private(&tmp, &body)?;
    std::fs::rename(&tmp, path).map_err(|e| LocalError::io(path, e))
}

/// Writes a file readable only by its owner (it may hold secrets).
pub(super) fn write_private(path: &Path, body: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| LocalError::io(path, e))?;
    f.write_all(body).map_err(|e| LocalError::io(path, e))
}
