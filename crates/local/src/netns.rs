//! Network-namespace primitives: namespaces, veth pairs, bridges, addresses, routes, sysctls and
//! processes started inside a namespace.
//!
//! Network state goes through the `ip` and `sysctl` commands (run with `tokio::process`) rather
//! than netlink or `setns(2)`: the workspace forbids `unsafe`, the commands are what an operator
//! types to inspect or repair the same state, and their error messages are passed on verbatim in
//! [`LocalError::Command`]. Plain syscalls with a safe wrapper (signals through rustix, `chown`
//! through std) are made directly: a `kill` command would only add a fork per signal.
//!
//! [`Owned`] records every namespace and process created through it, so that
//! [`Owned::teardown`] (async) or [`Owned::teardown_blocking`] (usable from `Drop`) removes all
//! of it, and can be called again without error.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use ipnet::IpNet;
use klb_proto::account::{account_id, chown_recursive};
use rustix::process::Pid;
pub use rustix::process::Signal;
use tokio::process::{Child, Command};
use tracing::{debug, info, warn};

use crate::error::{LocalError, Result};

/// Path of the `ip` binary (iproute2).
pub const IP: &str = "ip";
/// How long [`Process::stop`] waits after SIGTERM before sending SIGKILL.
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(3);

/// Checks a namespace name: non-empty, at most 64 bytes, `[A-Za-z0-9._-]`, not starting with `-`
/// (it becomes a file name under `/run/netns` and an argument of `ip`).
pub fn check_ns_name(name: &str) -> Result<()> {
    check_chars(name, 64)
}

/// Checks an interface name: the kernel limit is 15 bytes (IFNAMSIZ - 1).
pub fn check_if_name(name: &str) -> Result<()> {
    check_chars(name, 15)
}

fn check_chars(name: &str, max: usize) -> Result<()> {
    let bad = |reason| {
        Err(LocalError::InvalidName {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > max {
        return bad("too long");
    }
    if name.starts_with('-') || name == "." || name == ".." {
        return bad("reserved form");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return bad("only A-Z a-z 0-9 . _ - are allowed");
    }
    Ok(())
}

/// Runs `program args...`, returns its stdout; a non-zero exit becomes [`LocalError::Command`].
pub async fn run(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|source| LocalError::Spawn {
            program: program.to_string(),
            source,
        })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(LocalError::Command {
            cmd: format!("{program} {}", args.join(" ")),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// `ip ARGS` in the root namespace.
pub async fn ip(args: &[&str]) -> Result<String> {
    run(IP, args).await
}

/// `ip -n NS ARGS` (the same as `ip ARGS` run inside namespace `ns`).
pub async fn ip_in(ns: &str, args: &[&str]) -> Result<String> {
    let mut all = vec!["-n", ns];
    all.extend_from_slice(args);
    run(IP, &all).await
}

/// Runs `program args` inside namespace `ns` and waits for it (`ip netns exec`).
pub async fn exec_in(ns: &str, program: &str, args: &[&str]) -> Result<String> {
    let mut all = vec!["netns", "exec", ns, program];
    all.extend_from_slice(args);
    run(IP, &all).await
}

/// Sets a sysctl inside a namespace, e.g. `sysctl("ns", "net.ipv4.ip_forward", "1")`.
/// `/proc/sys/net` shows the namespace of the reading process, hence `ip netns exec`.
pub async fn sysctl(ns: &str, key: &str, value: &str) -> Result<()> {
    exec_in(ns, "sysctl", &["-qw", &format!("{key}={value}")]).await?;
    Ok(())
}

/// Names of all namespaces known to `ip netns` (files under `/run/netns`).
pub async fn list_ns() -> Result<Vec<String>> {
    let out = ip(&["netns", "list"]).await?;
    Ok(parse_ns_list(&out))
}

fn parse_ns_list(out: &str) -> Vec<String> {
    // Lines look like `name` or `name (id: 3)`.
    out.lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// True if the namespace exists.
pub async fn ns_exists(name: &str) -> Result<bool> {
    Ok(Path::new("/run/netns").join(name).exists() || list_ns().await?.iter().any(|n| n == name))
}

/// Creates namespace `name` and brings its `lo` up. Fails if it already exists.
pub async fn add_ns(name: &str) -> Result<()> {
    check_ns_name(name)?;
    ip(&["netns", "add", name]).await?;
    ip_in(name, &["link", "set", "lo", "up"]).await?;
    debug!(ns = name, "namespace created");
    Ok(())
}

/// PIDs of all processes whose network namespace is `name` (`ip netns pids`).
pub async fn ns_pids(name: &str) -> Result<Vec<u32>> {
    let out = ip(&["netns", "pids", name]).await?;
    Ok(out
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect())
}

/// Stops every process left inside `name` (by PID: TERM, then KILL after `grace`), then deletes
/// the namespace. Deleting a namespace also deletes the veth pairs with an end inside it.
/// Idempotent: a missing namespace is not an error.
pub async fn del_ns(name: &str, grace: Duration) -> Result<()> {
    check_ns_name(name)?;
    if !ns_exists(name).await? {
        return Ok(());
    }
    // A namespace whose file is removed lives on while a process is inside; so empty it first.
    let pids = ns_pids(name).await.unwrap_or_default();
    if !pids.is_empty() {
        info!(ns = name, ?pids, "stopping processes left in namespace");
        stop_pids(&pids, grace).await;
    }
    match ip(&["netns", "del", name]).await {
        Ok(_) => {}
        Err(e) if !ns_exists(name).await.unwrap_or(true) => {
            debug!(ns = name, error = %e, "namespace already gone")
        }
        Err(e) => return Err(e),
    }
    debug!(ns = name, "namespace deleted");
    Ok(())
}

/// One end of a veth pair: the namespace (None = root namespace) and the interface name.
#[derive(Debug, Clone, Copy)]
pub struct End<'a> {
    /// Namespace of this end; `None` for the root (host) namespace.
    pub ns: Option<&'a str>,
    /// Interface name (at most 15 bytes).
    pub ifname: &'a str,
}

impl<'a> End<'a> {
    /// An end inside namespace `ns`.
    pub fn ns(ns: &'a str, ifname: &'a str) -> Self {
        End {
            ns: Some(ns),
            ifname,
        }
    }
    /// An end in the root namespace.
    pub fn host(ifname: &'a str) -> Self {
        End { ns: None, ifname }
    }
}

/// Creates a veth pair with its ends directly in their namespaces (no rename race) and sets
/// both ends up.
pub async fn add_veth(a: End<'_>, b: End<'_>) -> Result<()> {
    check_if_name(a.ifname)?;
    check_if_name(b.ifname)?;
    let mut args = vec!["link", "add", a.ifname];
    if let Some(ns) = a.ns {
        args.extend_from_slice(&["netns", ns]);
    }
    args.extend_from_slice(&["type", "veth", "peer", "name", b.ifname]);
    if let Some(ns) = b.ns {
        args.extend_from_slice(&["netns", ns]);
    }
    ip(&args).await?;
    link_up(a.ns, a.ifname).await?;
    link_up(b.ns, b.ifname).await?;
    Ok(())
}

async fn ip_at(ns: Option<&str>, args: &[&str]) -> Result<String> {
    match ns {
        Some(ns) => ip_in(ns, args).await,
        None => ip(args).await,
    }
}

/// `ip link set DEV up` in `ns` (None = root namespace).
pub async fn link_up(ns: Option<&str>, dev: &str) -> Result<()> {
    ip_at(ns, &["link", "set", dev, "up"]).await?;
    Ok(())
}

/// `ip link set DEV down` in `ns`.
pub async fn link_down(ns: Option<&str>, dev: &str) -> Result<()> {
    ip_at(ns, &["link", "set", dev, "down"]).await?;
    Ok(())
}

/// Deletes a link (and so its veth peer). A missing link is not an error.
pub async fn del_link(ns: Option<&str>, dev: &str) -> Result<()> {
    if ip_at(ns, &["link", "show", dev]).await.is_err() {
        return Ok(());
    }
    ip_at(ns, &["link", "del", dev]).await?;
    Ok(())
}

/// Creates a bridge `name` in `ns` and sets it up.
pub async fn add_bridge(ns: &str, name: &str) -> Result<()> {
    check_if_name(name)?;
    ip_in(ns, &["link", "add", name, "type", "bridge"]).await?;
    link_up(Some(ns), name).await
}

/// Attaches `dev` to bridge `bridge` (both in `ns`).
pub async fn set_master(ns: &str, dev: &str, bridge: &str) -> Result<()> {
    ip_in(ns, &["link", "set", dev, "master", bridge]).await?;
    Ok(())
}

/// `ip addr replace CIDR dev DEV` (idempotent) in `ns` (None = root namespace).
pub async fn add_addr(ns: Option<&str>, dev: &str, cidr: IpNet) -> Result<()> {
    ip_at(ns, &["addr", "replace", &cidr.to_string(), "dev", dev]).await?;
    Ok(())
}

/// Removes an address; a missing address is not an error.
pub async fn del_addr(ns: Option<&str>, dev: &str, cidr: IpNet) -> Result<()> {
    let shown = ip_at(ns, &["-o", "addr", "show", "dev", dev]).await?;
    if !shown.contains(&format!(" {cidr} ")) {
        return Ok(());
    }
    ip_at(ns, &["addr", "del", &cidr.to_string(), "dev", dev]).await?;
    Ok(())
}

/// `ip route replace DEST via GW` (idempotent); `dest` is `default` or a CIDR.
pub async fn route_via(ns: &str, dest: &str, gw: std::net::IpAddr) -> Result<()> {
    ip_in(ns, &["route", "replace", dest, "via", &gw.to_string()]).await?;
    Ok(())
}

/// `ip route replace DEST nexthop via GW1 nexthop via GW2 ...`: a kernel multipath route.
pub async fn route_multipath(ns: &str, dest: &str, gws: &[std::net::IpAddr]) -> Result<()> {
    let gws: Vec<String> = gws.iter().map(ToString::to_string).collect();
    let mut args = vec!["route", "replace", dest];
    for gw in &gws {
        args.extend_from_slice(&["nexthop", "via", gw]);
    }
    ip_in(ns, &args).await?;
    Ok(())
}

/// Number of nexthops of the kernel route to `dest` in `ns` (0 if there is no route).
pub async fn route_nexthops(ns: &str, dest: &str) -> Result<usize> {
    let out = ip_in(ns, &["route", "show", dest]).await?;
    Ok(count_nexthops(&out))
}

fn count_nexthops(route_show: &str) -> usize {
    // Single path: `198.19.0.10 via 198.18.64.16 dev br proto bgp metric 20`;
    // multipath: a first line then one `nexthop via ...` line per path.
    route_show.matches(" via ").count()
}

// ---------------------------------------------------------------------------------------------
// Processes

/// A process started inside a namespace. When klb started it, it holds the tokio [`Child`] so
/// the exit status is reaped (no zombie); an adopted process (from a previous klb run) has only
/// its PID.
#[derive(Debug)]
pub struct Process {
    /// What it is, for logs (`zebra`, `haproxy`, `agent`).
    pub name: String,
    /// The namespace it runs in.
    pub ns: String,
    pid: u32,
    child: Option<Child>,
}

impl Process {
    /// An adopted process known only by PID (not our child).
    pub fn adopted(name: &str, ns: &str, pid: u32) -> Self {
        Process {
            name: name.to_string(),
            ns: ns.to_string(),
            pid,
            child: None,
        }
    }

    /// Its PID.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// True while the process runs (reaps it if it exited).
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => pid_alive(self.pid),
        }
    }

    /// Stops it: SIGTERM, wait up to `grace`, then SIGKILL. Returns once it is gone (and reaped
    /// if it is our child). Idempotent.
    pub async fn stop(&mut self, grace: Duration) -> Result<()> {
        match &mut self.child {
            Some(child) => {
                if let Ok(Some(_)) = child.try_wait() {
                    return Ok(());
                }
                signal(self.pid, Signal::TERM);
                if tokio::time::timeout(grace, child.wait()).await.is_err() {
                    warn!(name = %self.name, pid = self.pid, "still running after SIGTERM, sending SIGKILL");
                    let _ = child.start_kill();
                    child
                        .wait()
                        .await
                        .map_err(|e| LocalError::io(format!("/proc/{}", self.pid), e))?;
                }
                Ok(())
            }
            None => {
                stop_pids(&[self.pid], grace).await;
                Ok(())
            }
        }
    }
}

/// Starts `program args` inside namespace `ns` with stdout+stderr appended to `log`.
/// `ip netns exec` execs the program, so the child's PID is the program's PID.
pub async fn spawn(
    name: &str,
    ns: &str,
    program: &Path,
    args: &[String],
    log: &Path,
) -> Result<Process> {
    spawn_env(name, ns, program, args, &[], log).await
}

/// [`spawn`] with extra environment variables (the rest of the environment is inherited).
pub async fn spawn_env(
    name: &str,
    ns: &str,
    program: &Path,
    args: &[String],
    env: &[(String, String)],
    log: &Path,
) -> Result<Process> {
    check_ns_name(ns)?;
    let open = |p: &Path| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .map_err(|e| LocalError::io(p, e))
    };
    let out = open(log)?;
    let err = out.try_clone().map_err(|e| LocalError::io(log, e))?;
    let child = Command::new(IP)
        .args(["netns", "exec", ns])
        .arg(program)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        // No kill_on_drop: a detached local cloud leaves its VMs running for the next klb
        // process to adopt; `Owned`'s drop guard handles the panic case.
        .spawn()
        .map_err(|source| LocalError::Spawn {
            program: program.display().to_string(),
            source,
        })?;
    let pid = child.id().ok_or_else(|| LocalError::Command {
        cmd: format!("ip netns exec {ns} {}", program.display()),
        status: "exited immediately".into(),
        stderr: String::new(),
    })?;
    debug!(name, ns, pid, "process started");
    Ok(Process {
        name: name.to_string(),
        ns: ns.to_string(),
        pid,
        child: Some(child),
    })
}

/// True if `pid` exists and is not a zombie.
pub fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // Field 3 (after the `(comm)` which may contain spaces) is the state.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// The network-namespace inode of `pid` (`/proc/PID/ns/net` link target), if readable.
pub fn pid_netns(pid: u32) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/ns/net"))
        .ok()
        .map(|p| p.display().to_string())
}

/// A signal by the name `kill -NAME` takes (`TERM`, `KILL`, `STOP`, `CONT`, `HUP`, `INT`,
/// `QUIT`, `USR1`, `USR2`); `None` for any other name.
pub fn parse_signal(name: &str) -> Option<Signal> {
    Some(match name {
        "TERM" => Signal::TERM,
        "KILL" => Signal::KILL,
        "STOP" => Signal::STOP,
        "CONT" => Signal::CONT,
        "HUP" => Signal::HUP,
        "INT" => Signal::INT,
        "QUIT" => Signal::QUIT,
        "USR1" => Signal::USR1,
        "USR2" => Signal::USR2,
        _ => return None,
    })
}

/// Sends `sig` to `pid` with kill(2). PID 0 (or one that does not fit a `pid_t`) is refused:
/// kill(2) would read it as "my process group".
pub fn send_signal(pid: u32, sig: Signal) -> Result<()> {
    let err = |source| LocalError::Signal {
        pid,
        signal: sig,
        source,
    };
    let target = i32::try_from(pid)
        .ok()
        .and_then(Pid::from_raw)
        .ok_or_else(|| err(std::io::ErrorKind::InvalidInput.into()))?;
    rustix::process::kill_process(target, sig).map_err(|e| err(e.into()))
}

fn signal(pid: u32, sig: Signal) {
    if let Err(e) = send_signal(pid, sig) {
        debug!(pid, ?sig, error = %e, "kill failed (process probably gone)");
    }
}

/// Stops processes that are not our children, by PID: CONT+TERM, poll up to `grace`, then KILL.
pub async fn stop_pids(pids: &[u32], grace: Duration) {
    for &pid in pids {
        if pid_alive(pid) {
            // A SIGSTOPped process (fault-injection tests freeze VMs) would never see TERM.
            signal(pid, Signal::CONT);
            signal(pid, Signal::TERM);
        }
    }
    let deadline = tokio::time::Instant::now() + grace;
    while pids.iter().any(|&p| pid_alive(p)) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for &pid in pids {
        if pid_alive(pid) {
            warn!(pid, "still running after SIGTERM, sending SIGKILL");
            signal(pid, Signal::KILL);
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while pids.iter().any(|&p| pid_alive(p)) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Ownership record

/// The record of what a component created: namespaces (deleted on teardown, which also removes
/// their veths and bridges) and processes (stopped on teardown). Links with one end in the root
/// namespace disappear with their peer's namespace.
#[derive(Debug, Default)]
pub struct Owned {
    namespaces: Vec<String>,
    processes: Vec<Process>,
    dirs: Vec<PathBuf>,
    host_links: Vec<String>,
}

impl Owned {
    /// An empty record.
    pub fn new() -> Self {
        Self::default()
    }

    /// Creates a namespace and records it.
    pub async fn add_ns(&mut self, name: &str) -> Result<()> {
        add_ns(name).await?;
        self.namespaces.push(name.to_string());
        Ok(())
    }

    /// Records a namespace created elsewhere (adopted) so teardown removes it.
    pub fn adopt_ns(&mut self, name: &str) {
        if !self.namespaces.iter().any(|n| n == name) {
            self.namespaces.push(name.to_string());
        }
    }

    /// Records a link in the root namespace to delete on teardown. (Its veth peer's namespace
    /// going away would delete it too, but the kernel cleans namespaces up asynchronously, so
    /// teardown deletes it explicitly to be complete when it returns.)
    pub fn add_host_link(&mut self, name: &str) {
        self.host_links.push(name.to_string());
    }

    /// Records a directory to remove on teardown.
    pub fn add_dir(&mut self, dir: &Path) {
        self.dirs.push(dir.to_path_buf());
    }

    /// Spawns a process in a namespace and records it.
    pub async fn spawn(
        &mut self,
        name: &str,
        ns: &str,
        program: &Path,
        args: &[String],
        log: &Path,
    ) -> Result<u32> {
        self.spawn_env(name, ns, program, args, &[], log).await
    }

    /// [`Owned::spawn`] with extra environment variables.
    pub async fn spawn_env(
        &mut self,
        name: &str,
        ns: &str,
        program: &Path,
        args: &[String],
        env: &[(String, String)],
        log: &Path,
    ) -> Result<u32> {
        let p = spawn_env(name, ns, program, args, env, log).await?;
        let pid = p.pid();
        self.processes.push(p);
        Ok(pid)
    }

    /// Records an already running process.
    pub fn adopt_process(&mut self, p: Process) {
        self.processes.push(p);
    }

    /// Recorded namespaces.
    pub fn namespaces(&self) -> &[String] {
        &self.namespaces
    }

    /// Recorded processes.
    pub fn processes(&self) -> &[Process] {
        &self.processes
    }

    /// Mutable access to one recorded process by name and namespace.
    pub fn process_mut(&mut self, ns: &str, name: &str) -> Option<&mut Process> {
        self.processes
            .iter_mut()
            .find(|p| p.ns == ns && p.name == name)
    }

    /// True if every recorded process in `ns` still runs (reaps exited children).
    pub fn processes_in_running(&mut self, ns: &str) -> bool {
        self.processes
            .iter_mut()
            .filter(|p| p.ns == ns)
            .all(|p| p.is_running())
    }

    /// Stops and forgets every recorded process running in `ns`.
    pub async fn stop_in(&mut self, ns: &str, grace: Duration) -> Result<()> {
        let mut keep = Vec::new();
        let mut first_err = None;
        for mut p in std::mem::take(&mut self.processes) {
            if p.ns == ns {
                if let Err(e) = p.stop(grace).await {
                    first_err.get_or_insert(e);
                }
            } else {
                keep.push(p);
            }
        }
        self.processes = keep;
        first_err.map_or(Ok(()), Err)
    }

    /// Stops the recorded processes of `ns`, deletes it and forgets it.
    pub async fn remove_ns(&mut self, ns: &str, grace: Duration) -> Result<()> {
        self.stop_in(ns, grace).await?;
        del_ns(ns, grace).await?;
        self.namespaces.retain(|n| n != ns);
        Ok(())
    }

    /// Stops all processes (in parallel), deletes all namespaces (newest first) and directories.
    /// Idempotent; keeps going after an error and returns the first one.
    pub async fn teardown(&mut self, grace: Duration) -> Result<()> {
        let mut first_err: Option<LocalError> = None;
        let procs = std::mem::take(&mut self.processes);
        let stops = procs.into_iter().map(|mut p| async move {
            let r = p.stop(grace).await;
            (p, r)
        });
        for (p, r) in futures_join_all(stops).await {
            if let Err(e) = r {
                warn!(name = %p.name, pid = p.pid(), error = %e, "stop failed");
                first_err.get_or_insert(e);
            }
        }
        while let Some(link) = self.host_links.pop() {
            if let Err(e) = del_link(None, &link).await {
                first_err.get_or_insert(e);
            }
        }
        while let Some(ns) = self.namespaces.pop() {
            if let Err(e) = del_ns(&ns, grace).await {
                warn!(ns, error = %e, "namespace delete failed");
                first_err.get_or_insert(e);
            }
        }
        for d in self.dirs.drain(..) {
            if let Err(e) = std::fs::remove_dir_all(&d)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                first_err.get_or_insert(LocalError::io(&d, e));
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Synchronous teardown for `Drop` guards and panics: kills recorded PIDs (TERM, then KILL
    /// after `grace`) and every process left in a recorded namespace, then deletes the
    /// namespaces and directories. Uses `std::process`, never blocks longer than ~2×grace.
    pub fn teardown_blocking(&mut self, grace: Duration) {
        let mut pids: Vec<u32> = self.processes.iter().map(Process::pid).collect();
        for ns in &self.namespaces {
            if let Ok(out) = std::process::Command::new(IP)
                .args(["netns", "pids", ns])
                .output()
            {
                pids.extend(
                    String::from_utf8_lossy(&out.stdout)
                        .split_whitespace()
                        .filter_map(|p| p.parse::<u32>().ok()),
                );
            }
        }
        pids.sort_unstable();
        pids.dedup();
        for &pid in &pids {
            if pid_alive(pid) {
                signal(pid, Signal::CONT);
                signal(pid, Signal::TERM);
            }
        }
        let deadline = std::time::Instant::now() + grace;
        while pids.iter().any(|&p| pid_alive(p)) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        for &pid in &pids {
            if pid_alive(pid) {
                signal(pid, Signal::KILL);
            }
        }
        // Our own children: reap them so no zombie remains (kill_on_drop would only SIGKILL).
        for p in &mut self.processes {
            if let Some(c) = &mut p.child {
                let _ = c.start_kill();
                let _ = c.try_wait();
            }
        }
        self.processes.clear();
        while let Some(link) = self.host_links.pop() {
            let _ = std::process::Command::new(IP)
                .args(["link", "del", &link])
                .stderr(Stdio::null())
                .status();
        }
        while let Some(ns) = self.namespaces.pop() {
            let _ = std::process::Command::new(IP)
                .args(["netns", "del", &ns])
                .stderr(Stdio::null())
                .status();
        }
        for d in self.dirs.drain(..) {
            let _ = std::fs::remove_dir_all(&d);
        }
    }

    /// Forgets everything without stopping or deleting anything (the caller hands the
    /// resources over, e.g. to a later process that adopts them).
    pub fn forget(&mut self) {
        self.processes.clear();
        self.namespaces.clear();
        self.dirs.clear();
        self.host_links.clear();
    }

    /// True when nothing is recorded any more.
    pub fn is_empty(&self) -> bool {
        self.namespaces.is_empty()
            && self.processes.is_empty()
            && self.dirs.is_empty()
            && self.host_links.is_empty()
    }
}

impl Drop for Owned {
    /// The guard for panics and early returns: whatever is still recorded is removed
    /// synchronously.
    fn drop(&mut self) {
        if !self.is_empty() {
            self.teardown_blocking(Duration::from_secs(2));
        }
    }
}

/// Minimal join-all (avoids a dependency on `futures` for one call).
async fn futures_join_all<F, T>(futs: impl IntoIterator<Item = F>) -> Vec<T>
where
    F: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let handles: Vec<_> = futs.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        if let Ok(v) = h.await {
            out.push(v);
        }
    }
    out
}

/// Creates `dir` (and parents) readable by other users (FRR drops to user `frr` and must reach
/// its files through every parent) and hands it (recursively) to `frr:frr` when `frr_owned`.
pub async fn prepare_dir(dir: &Path, frr_owned: bool) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).map_err(|e| LocalError::io(dir, e))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| LocalError::io(dir, e))?;
    if frr_owned {
        let uid = account_id(Path::new("/etc/passwd"), "frr")?;
        let gid = account_id(Path::new("/etc/group"), "frr")?;
        chown_recursive(dir, uid, gid)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(check_ns_name("klb-vm-1a2b3c4d").is_ok());
        assert!(check_ns_name("").is_err());
        assert!(check_ns_name("-n").is_err());
        assert!(check_ns_name("a b").is_err());
        assert!(check_ns_name("a/b").is_err());
        assert!(check_if_name("0123456789abcde").is_ok());
        assert!(check_if_name("0123456789abcdef").is_err());
    }

    #[test]
    fn signals_by_name_and_by_pid() {
        assert_eq!(parse_signal("STOP"), Some(Signal::STOP));
        assert_eq!(parse_signal("KILL"), Some(Signal::KILL));
        assert_eq!(parse_signal("-9"), None);
        assert_eq!(parse_signal("term"), None);
        // PID 0 would signal our own process group: refused before the syscall.
        let err = send_signal(0, Signal::TERM).unwrap_err();
        assert!(matches!(err, LocalError::Signal { pid: 0, .. }), "{err}");
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        send_signal(child.id(), Signal::TERM).unwrap();
        let status = child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(15), "{status:?}");
    }

    #[test]
    fn parses_ns_list_and_nexthops() {
        assert_eq!(
            parse_ns_list("klb-gw1 (id: 3)\nklb-client\n"),
            vec!["klb-gw1", "klb-client"]
        );
        let multi = "198.19.0.10 proto bgp metric 20 \n\tnexthop via 198.18.64.16 dev l3 weight 1 \n\tnexthop via 198.18.64.17 dev l3 weight 1 \n";
        assert_eq!(count_nexthops(multi), 2);
        assert_eq!(
            count_nexthops("198.19.0.10 via 198.18.64.16 dev l3 proto bgp metric 20 \n"),
            1
        );
        assert_eq!(count_nexthops(""), 0);
    }

    #[test]
    fn pid_alive_for_self_and_not_for_absurd_pid() {
        assert!(pid_alive(std::process::id()));
        assert!(!pid_alive(u32::MAX - 1));
    }
}
