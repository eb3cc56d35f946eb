//! Client for HAProxy's runtime API (the admin stats socket) and master CLI, plus parsers for
//! `show stat` (CSV) and `show proc`.
//!
//! Both sockets speak the same line protocol: in non-interactive mode one connection carries
//! one command (or several separated by `;`) and HAProxy closes it after the reply. Every call
//! here is bounded by a timeout.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use klb_proto::{
    Counters, ListenerStats, ListenerStatus, MemberStats, MemberStatus, PoolStats, PoolStatus,
    Stats,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// Upper bound for one command round trip.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

/// A runtime-API failure.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// Connecting, writing or reading the socket failed.
    #[error("runtime socket {socket}: {source}")]
    Io {
        /// The socket path.
        socket: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// No reply within [`COMMAND_TIMEOUT`].
    #[error("runtime socket {socket}: no reply to {command:?} within {COMMAND_TIMEOUT:?}")]
    Timeout {
        /// The socket path.
        socket: PathBuf,
        /// The command (commands never carry secrets).
        command: String,
    },
    /// HAProxy answered with something other than success.
    #[error("runtime command {command:?} failed: {reply}")]
    Refused {
        /// The command.
        command: String,
        /// HAProxy's reply, trimmed.
        reply: String,
    },
    /// A reply could not be parsed.
    #[error("cannot parse the reply to {command:?}: {reason}")]
    Parse {
        /// The command.
        command: String,
        /// What is wrong.
        reason: String,
    },
}

/// Sends one command and returns the whole reply.
pub async fn command(socket: &Path, cmd: &str) -> Result<String, RuntimeError> {
    debug_assert!(!cmd.contains('\n'));
    let io = |source| RuntimeError::Io {
        socket: socket.to_path_buf(),
        source,
    };
    let run = async {
        let mut s = UnixStream::connect(socket).await.map_err(io)?;
        s.write_all(format!("{cmd}\n").as_bytes())
            .await
            .map_err(io)?;
        // Half-close like `socat`: the master CLI waits for more input otherwise.
        s.shutdown().await.map_err(io)?;
        let mut reply = String::new();
        s.read_to_string(&mut reply).await.map_err(io)?;
        Ok(reply)
    };
    match tokio::time::timeout(COMMAND_TIMEOUT, run).await {
        Ok(r) => r,
        Err(_) => Err(RuntimeError::Timeout {
            socket: socket.to_path_buf(),
            command: cmd.to_owned(),
        }),
    }
}

/// Sends a command whose successful reply is empty or matches one of `ok` (substring).
pub async fn expect(socket: &Path, cmd: &str, ok: &[&str]) -> Result<String, RuntimeError> {
    let reply = command(socket, cmd).await?;
    let t = reply.trim();
    if t.is_empty() || ok.iter().any(|o| t.contains(o)) {
        Ok(reply)
    } else {
        Err(RuntimeError::Refused {
            command: cmd.to_owned(),
            reply: t.to_owned(),
        })
    }
}

/// The master process as seen by `show proc` on the master CLI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcInfo {
    /// Master PID.
    pub master_pid: u32,
    /// Reloads counted by the master.
    pub reloads: u64,
    /// Failed reloads (`[failed: N]`), when shown.
    pub failed_reloads: u64,
    /// Current workers' PIDs.
    pub workers: Vec<u32>,
    /// Old workers still finishing connections.
    pub old_workers: Vec<u32>,
}

/// Parses `show proc`.
pub fn parse_show_proc(reply: &str) -> Result<ProcInfo, RuntimeError> {
    let err = |reason: String| RuntimeError::Parse {
        command: "show proc".into(),
        reason,
    };
    let mut master = None;
    let mut reloads = 0;
    let mut failed = 0;
    let mut workers = Vec::new();
    let mut old = Vec::new();
    let mut section = "";
    for line in reply.lines() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(s) = line.strip_prefix('#') {
            section = match s.trim() {
                "workers" => "workers",
                "old workers" => "old",
                s if s.starts_with("<PID>") => "",
                _ => "other",
            };
            continue;
        }
        let cols: Vec<&str> = line.split_whitespace().collect();
        let (Some(pid), Some(kind)) = (cols.first(), cols.get(1)) else {
            continue;
        };
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        match (*kind, section) {
            ("master", _) => {
                master = Some(pid);
                reloads = cols.get(2).and_then(|r| r.parse().ok()).unwrap_or(0);
                if let Some(i) = line.find("[failed:") {
                    failed = line[i + 8..]
                        .trim_start()
                        .split(']')
                        .next()
                        .and_then(|n| n.trim().parse().ok())
                        .unwrap_or(0);
                }
            }
            ("worker", "workers") => workers.push(pid),
            ("worker", "old") => old.push(pid),
            _ => {}
        }
    }
    let master_pid = master.ok_or_else(|| {
        err(format!(
            "no master line in {:?}",
            reply.chars().take(200).collect::<String>()
        ))
    })?;
    Ok(ProcInfo {
        master_pid,
        reloads,
        failed_reloads: failed,
        workers,
        old_workers: old,
    })
}

/// Reads `show proc` from the master CLI.
pub async fn show_proc(master_socket: &Path) -> Result<ProcInfo, RuntimeError> {
    parse_show_proc(&command(master_socket, "show proc").await?)
}

/// One row of `show stat`, by column name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatRow {
    /// Proxy name (frontend/backend).
    pub pxname: String,
    /// `FRONTEND`, `BACKEND` or the server name.
    pub svname: String,
    fields: HashMap<String, String>,
}

impl StatRow {
    /// A column's raw value ("" when absent).
    pub fn get(&self, column: &str) -> &str {
        self.fields.get(column).map_or("", String::as_str)
    }

    /// A numeric column (0 when empty).
    pub fn num(&self, column: &str) -> u64 {
        self.get(column).parse().unwrap_or(0)
    }

    fn counters(&self) -> Counters {
        Counters {
            active_connections: self.num("scur"),
            total_connections: self.num("stot"),
            bytes_in: self.num("bin"),
            bytes_out: self.num("bout"),
            requests: self.num("req_tot"),
            request_errors: self.num("ereq"),
        }
    }
}

/// Parses `show stat` CSV (header line `# pxname,svname,...`).
pub fn parse_show_stat(csv: &str) -> Result<Vec<StatRow>, RuntimeError> {
    let err = |reason: &str| RuntimeError::Parse {
        command: "show stat".into(),
        reason: reason.into(),
    };
    let mut lines = csv.lines();
    let header = lines
        .next()
        .and_then(|h| h.strip_prefix("# "))
        .ok_or_else(|| err("missing '# pxname,...' header"))?;
    let names: Vec<&str> = header.split(',').collect();
    let mut rows = Vec::new();
    for line in lines.filter(|l| !l.trim().is_empty()) {
        let values: Vec<&str> = line.split(',').collect();
        let fields: HashMap<String, String> = names
            .iter()
            .zip(values.iter())
            .filter(|(n, _)| !n.is_empty())
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect();
        rows.push(StatRow {
            pxname: fields.get("pxname").cloned().unwrap_or_default(),
            svname: fields.get("svname").cloned().unwrap_or_default(),
            fields,
        });
    }
    Ok(rows)
}

/// Reads and parses `show stat`.
pub async fn show_stat(admin_socket: &Path) -> Result<Vec<StatRow>, RuntimeError> {
    parse_show_stat(&command(admin_socket, "show stat").await?)
}

/// Server status text of `show stat` to the protocol's status.
pub fn member_status(status: &str) -> MemberStatus {
    let s = status.trim();
    if s.starts_with("MAINT") {
        MemberStatus::Maint
    } else if s.starts_with("DRAIN") || s.starts_with("NOLB") {
        MemberStatus::Drain
    } else if s.eq_ignore_ascii_case("no check") {
        MemberStatus::NoCheck
    } else if s.starts_with("UP") {
        MemberStatus::Up
    } else {
        MemberStatus::Down
    }
}

/// Builds protocol statistics from `show stat` rows: frontends named like listener ids,
/// backends named `<pool_id>:<listener_id>`; HAProxy's own proxies (e.g. the stats or
/// `GLOBAL` rows) are skipped.
pub fn stats_from_rows(rows: &[StatRow]) -> Stats {
    let mut stats = Stats::default();
    let mut pools: Vec<PoolStats> = Vec::new();
    for r in rows {
        match r.svname.as_str() {
            "FRONTEND" => stats.listeners.push(ListenerStats {
                id: r.pxname.clone(),
                status: match r.get("status") {
                    "OPEN" => ListenerStatus::Open,
                    "FULL" => ListenerStatus::Full,
                    _ => ListenerStatus::Down,
                },
                counters: r.counters(),
            }),
            "BACKEND" => {
                let Some((pool, listener)) = r.pxname.split_once(':') else {
                    continue;
                };
                let entry = pool_entry(&mut pools, pool, listener);
                entry.status = if r.get("status").starts_with("UP") {
                    PoolStatus::Up
                } else {
                    PoolStatus::Down
                };
                entry.counters = r.counters();
            }
            server => {
                let Some((pool, listener)) = r.pxname.split_once(':') else {
                    continue;
                };
                let entry = pool_entry(&mut pools, pool, listener);
                let mut status = member_status(r.get("status"));
                // Weight 0 is Octavia's "drain": HAProxy still says UP.
                if status == MemberStatus::Up && r.get("weight") == "0" {
                    status = MemberStatus::Drain;
                }
                entry.members.push(MemberStats {
                    id: server.to_owned(),
                    status,
                    counters: r.counters(),
                });
            }
        }
    }
    stats.pools = pools;
    stats
}

fn pool_entry<'p>(pools: &'p mut Vec<PoolStats>, pool: &str, listener: &str) -> &'p mut PoolStats {
    let i = match pools
        .iter()
        .position(|p| p.id == pool && p.listener_id == listener)
    {
        Some(i) => i,
        None => {
            pools.push(PoolStats {
                id: pool.to_owned(),
                listener_id: listener.to_owned(),
                status: PoolStatus::Down,
                counters: Counters::default(),
                members: Vec::new(),
            });
            pools.len() - 1
        }
    };
    &mut pools[i]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn show_proc_parses_master_workers_and_failures() {
        let reply = "#<PID>          <type>          <reloads>       <uptime>        <version>\n\
                     3036            master          2 [failed: 1]   0d00h00m02s     2.6.12\n\
                     # workers\n\
                     3050            worker          0               0d00h00m01s     2.6.12\n\
                     # old workers\n\
                     3037            worker          1               0d00h00m02s     2.6.12\n\
                     # programs\n\n";
        let p = parse_show_proc(reply).unwrap();
        assert_eq!(p.master_pid, 3036);
        assert_eq!(p.reloads, 2);
        assert_eq!(p.failed_reloads, 1);
        assert_eq!(p.workers, vec![3050]);
        assert_eq!(p.old_workers, vec![3037]);
        assert!(parse_show_proc("Unknown command").is_err());
    }

    #[test]
    fn show_stat_maps_to_protocol_stats() {
        let csv = "# pxname,svname,qcur,scur,stot,bin,bout,ereq,status,weight,req_tot,\n\
                   l1,FRONTEND,,3,10,100,200,1,OPEN,,9,\n\
                   p1:l1,m1,0,1,5,50,60,,UP,1,,\n\
                   p1:l1,m2,0,0,0,0,0,,MAINT,1,,\n\
                   p1:l1,m3,0,0,0,0,0,,UP,0,,\n\
                   p1:l1,m4,0,0,0,0,0,,DOWN 1/2,1,,\n\
                   p1:l1,BACKEND,0,1,5,50,60,,UP,2,,\n";
        let stats = stats_from_rows(&parse_show_stat(csv).unwrap());
        assert_eq!(stats.listeners.len(), 1);
        assert_eq!(stats.listeners[0].status, ListenerStatus::Open);
        assert_eq!(stats.listeners[0].counters.requests, 9);
        assert_eq!(stats.listeners[0].counters.request_errors, 1);
        let p = &stats.pools[0];
        assert_eq!(
            (p.id.as_str(), p.listener_id.as_str(), p.status),
            ("p1", "l1", PoolStatus::Up)
        );
        let st: Vec<_> = p.members.iter().map(|m| m.status).collect();
        assert_eq!(
            st,
            vec![
                MemberStatus::Up,
                MemberStatus::Maint,
                MemberStatus::Drain,
                MemberStatus::Down
            ]
        );
        assert_eq!(p.members[0].counters.bytes_out, 60);
    }
}
