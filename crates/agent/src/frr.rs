//! FRR on the LB VM: announce the VIP to the L3 gateways over eBGP with BFD.
//!
//! [`render_frr`] is pure: it turns the typed [`Bgp`] part of the desired state into the whole
//! integrated FRR configuration (zebra, bfdd, bgpd). Every value in it is typed (addresses, AS
//! numbers, prefixes), so no user text can reach the file. [`Frr`] is the apply side: it starts
//! zebra, bfdd and bgpd with private paths (pid files, zserv socket, vty sockets and the bfdd
//! control socket all under one directory owned by `frr:frr`), optionally inside a network
//! namespace via a command prefix, and updates them with `frr-reload.py --reload`, which diffs
//! the file against the running configuration. Draining removes the `network` statements with
//! vtysh (BGP withdraws at once, a route-map change would wait for the route-map delay timer).

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use rustix::process::Signal;

use crate::haproxy::send_signal;
use klb_proto::account::{AccountError, account_id, chown_recursive};
use klb_proto::{Bgp, BgpSession};
use tokio::process::Command;

/// Name of the BFD profile used on both sessions (100 ms x 3: sub-second failover).
pub const BFD_PROFILE: &str = "klb-fast";

/// FRR errors.
#[derive(Debug, thiserror::Error)]
pub enum FrrError {
    /// The BGP settings cannot be rendered.
    #[error("invalid BGP settings: {0}")]
    Invalid(String),
    /// A command could not be run or failed.
    #[error("{what} failed: {detail}")]
    Command {
        /// Which command.
        what: String,
        /// Exit status and stderr.
        detail: String,
    },
    /// A daemon did not come up.
    #[error("{0} did not start within {1:?}")]
    StartTimeout(&'static str, Duration),
    /// File system error.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// Where.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
}

impl From<AccountError> for FrrError {
    fn from(e: AccountError) -> Self {
        FrrError::Io {
            op: e.op,
            path: e.path,
            source: e.source,
        }
    }
}

/// Checks what the renderer relies on: a non-zero AS, at least one neighbor, host prefixes.
pub fn validate_bgp(bgp: &Bgp) -> Result<(), FrrError> {
    let bad = |m: String| Err(FrrError::Invalid(m));
    if bgp.local_as == 0 {
        return bad("local_as must not be 0".into());
    }
    if bgp.neighbors.is_empty() {
        return bad("at least one neighbor is needed".into());
    }
    for n in &bgp.neighbors {
        if n.remote_as == 0 {
            return bad(format!("neighbor {} has remote_as 0", n.address));
        }
        if n.address.is_unspecified() || n.address.is_multicast() {
            return bad(format!(
                "neighbor address {} is not a unicast address",
                n.address
            ));
        }
    }
    for p in &bgp.announce {
        if p.prefix_len() != p.max_prefix_len() {
            return bad(format!("announced prefix {p} is not a host route"));
        }
    }
    if bgp.keepalive_secs == 0 || bgp.hold_secs < 3 * bgp.keepalive_secs {
        return bad(format!(
            "timers {} {}: hold must be at least 3 x keepalive",
            bgp.keepalive_secs, bgp.hold_secs
        ));
    }
    Ok(())
}

/// Hostname of the FRR daemons (rendered so frr-reload never diffs against vtysh's default).
pub const HOSTNAME: &str = "klb";

/// The configuration split by daemon: each daemon reads its part at start (`-f`), and the
/// concatenation is the integrated configuration frr-reload compares against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrrSections {
    /// zebra: forwarding off, no kernel nexthop groups.
    pub zebra: String,
    /// bfdd: the BFD profile.
    pub bfdd: String,
    /// bgpd: prefix-lists, route-maps, `router bgp`.
    pub bgpd: String,
}

impl FrrSections {
    /// The whole integrated configuration.
    pub fn integrated(&self) -> String {
        format!("{}{}{}", self.zebra, self.bfdd, self.bgpd)
    }
}

/// The whole integrated FRR configuration for this VM. `drained` leaves out the `network`
/// statements so nothing is announced while the prefix-lists and sessions stay.
pub fn render_frr(bgp: &Bgp, drained: bool) -> String {
    render_sections(bgp, drained).integrated()
}

/// [`render_frr`], split by daemon.
pub fn render_sections(bgp: &Bgp, drained: bool) -> FrrSections {
    let mut z = String::new();
    // The file replaces the whole running config (frr-reload), so zebra's globals are here:
    // without `no ip forwarding` the diff would turn forwarding on.
    let _ = writeln!(z, "frr defaults traditional\nhostname {HOSTNAME}");
    z.push_str("no ip forwarding\nno ipv6 forwarding\n");
    // Kernel nexthop groups misbehave on link flaps in FRR 8.4 (see dataplane notes).
    z.push_str("no zebra nexthop kernel enable\n!\n");
    let mut f = String::new();
    if bgp.bfd {
        let _ = write!(
            f,
            "bfd\n profile {BFD_PROFILE}\n  detect-multiplier 3\n  receive-interval 100\n  \
             transmit-interval 100\n exit\nexit\n!\n"
        );
    }
    let mut s = String::new();
    let (v4, v6): (Vec<&IpNet>, Vec<&IpNet>) =
        bgp.announce.iter().partition(|p| matches!(p, IpNet::V4(_)));
    for (i, p) in v4.iter().enumerate() {
        let _ = writeln!(s, "ip prefix-list KLB-VIP seq {} permit {p}", (i + 1) * 5);
    }
    if v4.is_empty() {
        s.push_str("ip prefix-list KLB-VIP seq 5 deny any\n");
    }
    for (i, p) in v6.iter().enumerate() {
        let _ = writeln!(
            s,
            "ipv6 prefix-list KLB-VIP6 seq {} permit {p}",
            (i + 1) * 5
        );
    }
    if v6.is_empty() {
        s.push_str("ipv6 prefix-list KLB-VIP6 seq 5 deny any\n");
    }
    s.push_str(
        "!\nroute-map KLB-ANNOUNCE permit 10\n match ip address prefix-list KLB-VIP\nexit\n",
    );
    s.push_str(
        "!\nroute-map KLB-ANNOUNCE6 permit 10\n match ipv6 address prefix-list KLB-VIP6\nexit\n",
    );
    // Accept nothing: the VM routes by its static default, never by what gateways send.
    s.push_str("!\nroute-map KLB-NOTHING deny 10\nexit\n!\n");
    let _ = writeln!(s, "router bgp {}", bgp.local_as);
    let _ = writeln!(s, " bgp router-id {}", bgp.router_id);
    s.push_str(" no bgp ebgp-requires-policy\n");
    s.push_str(" no bgp default ipv4-unicast\n");
    s.push_str(" no bgp network import-check\n");
    // Announce to a new session at once instead of after the default 1 s update coalescing.
    s.push_str(" coalesce-time 100\n");
    let _ = writeln!(s, " timers bgp {} {}", bgp.keepalive_secs, bgp.hold_secs);
    for n in &bgp.neighbors {
        let _ = writeln!(s, " neighbor {} remote-as {}", n.address, n.remote_as);
        let _ = writeln!(s, " neighbor {} timers connect 2", n.address);
        if bgp.bfd {
            // BFD is configured with the session: turning it on later flaps the session.
            let _ = writeln!(s, " neighbor {} bfd", n.address);
            let _ = writeln!(s, " neighbor {} bfd profile {BFD_PROFILE}", n.address);
        }
    }
    for (family, prefixes, out_map) in [
        ("ipv4", &v4, "KLB-ANNOUNCE"),
        ("ipv6", &v6, "KLB-ANNOUNCE6"),
    ] {
        let neighbors: Vec<IpAddr> = bgp
            .neighbors
            .iter()
            .map(|n| n.address)
            .filter(|a| a.is_ipv4() == (family == "ipv4"))
            .collect();
        if neighbors.is_empty() {
            continue;
        }
        let _ = writeln!(s, " !\n address-family {family} unicast");
        if !drained {
            for p in prefixes.iter() {
                let _ = writeln!(s, "  network {p}");
            }
        }
        for a in &neighbors {
            let _ = writeln!(s, "  neighbor {a} activate");
            let _ = writeln!(s, "  neighbor {a} route-map {out_map} out");
            let _ = writeln!(s, "  neighbor {a} route-map KLB-NOTHING in");
        }
        s.push_str(" exit-address-family\n");
    }
    s.push_str("exit\n!\n");
    FrrSections {
        zebra: z,
        bfdd: f,
        bgpd: s,
    }
}

/// Where FRR lives and how to run it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrrConfig {
    /// Directory with `zebra`, `bgpd`, `bfdd` (Debian: `/usr/lib/frr`).
    pub daemon_dir: PathBuf,
    /// `vtysh` binary.
    pub vtysh: PathBuf,
    /// `frr-reload.py` (package frr-pythontools).
    pub reload_script: PathBuf,
    /// Private runtime directory (configs, pid files, sockets, logs); chowned to `user:group`.
    pub run_dir: PathBuf,
    /// Command prefix to run daemons and `ip`/`sysctl` in the VM's namespace, e.g.
    /// `["ip", "netns", "exec", "vm1"]`; empty when the agent already runs inside it.
    pub netns_exec: Vec<String>,
    /// User the daemons run as.
    pub user: String,
    /// Group the daemons run as.
    pub group: String,
}

impl FrrConfig {
    /// Debian paths, `frr:frr`, no namespace prefix.
    pub fn with_run_dir(run_dir: impl Into<PathBuf>) -> Self {
        FrrConfig {
            daemon_dir: "/usr/lib/frr".into(),
            vtysh: "/usr/bin/vtysh".into(),
            reload_script: "/usr/lib/frr/frr-reload.py".into(),
            run_dir: run_dir.into(),
            netns_exec: Vec::new(),
            user: "frr".into(),
            group: "frr".into(),
        }
    }
}

/// The daemons FRR needs, in start order (zebra first: the others connect to its socket).
const DAEMONS: [&str; 3] = ["zebra", "bfdd", "bgpd"];

/// FRR of one VM: start, apply, drain, stop. Calls are serialized by the caller (the agent
/// holds its state lock while applying).
#[derive(Debug)]
pub struct Frr {
    config: FrrConfig,
}

impl Frr {
    /// Wraps a configuration; nothing is started yet.
    pub fn new(config: FrrConfig) -> Self {
        Frr { config }
    }

    /// The configuration.
    pub fn config(&self) -> &FrrConfig {
        &self.config
    }

    fn path(&self, name: &str) -> PathBuf {
        self.config.run_dir.join(name)
    }

    /// Renders and applies `bgp`, starting the daemons first if needed. Call
    /// [`Frr::prepare_host`] before (HAProxy binds the VIPs it puts on `lo`).
    #[tracing::instrument(skip_all, fields(local_as = bgp.local_as, drained))]
    pub async fn apply(&self, bgp: &Bgp, drained: bool) -> Result<(), FrrError> {
        validate_bgp(bgp)?;
        self.apply_sections(&render_sections(bgp, drained)).await
    }

    /// Makes `sections` the running configuration. Daemons that are not running are started
    /// with their section as startup file: a neighbor configured at runtime through vtysh is
    /// held by bgpd's "config pending" logic for seconds before its session may start, one read
    /// from the startup file starts at once. When every daemon was already running (or only
    /// some were started), `frr-reload.py --reload` brings the running configuration in line.
    pub async fn apply_sections(&self, sections: &FrrSections) -> Result<(), FrrError> {
        let started = self.ensure_started(Some(sections)).await?;
        if started.len() == DAEMONS.len() {
            write_file(&self.path("klb-frr.conf"), &sections.integrated()).await?;
            return Ok(());
        }
        self.reload(&sections.integrated()).await
    }

    /// Starts the daemons if needed (with empty startup files) and makes `text` the whole
    /// running configuration with `frr-reload.py --reload` (lines missing from `text` are
    /// removed). For configurations other than the VM's, e.g. a gateway router in tests.
    pub async fn apply_config(&self, text: &str) -> Result<(), FrrError> {
        self.ensure_started(None).await?;
        self.reload(text).await
    }

    async fn reload(&self, text: &str) -> Result<(), FrrError> {
        let file = self.path("klb-frr.conf");
        write_file(&file, text).await?;
        let dir = self.config.run_dir.display().to_string();
        let mut cmd = Command::new(&self.config.reload_script);
        cmd.args(["--reload", "--stdout", "--bindir"])
            .arg(self.config.vtysh.parent().unwrap_or(Path::new("/usr/bin")))
            .args(["--confdir", &dir, "--rundir", &dir, "--vty_socket", &dir])
            .arg(&file);
        let started = Instant::now();
        run(cmd, "frr-reload.py --reload").await?;
        tracing::debug!(
            took_ms = started.elapsed().as_millis() as u64,
            "frr-reload done"
        );
        Ok(())
    }

    /// Withdraws (`drained`) or re-announces the prefixes immediately with vtysh, without
    /// touching sessions.
    pub async fn set_announced(&self, bgp: &Bgp, announced: bool) -> Result<(), FrrError> {
        let mut args: Vec<String> = vec!["conf t".into(), format!("router bgp {}", bgp.local_as)];
        for (family, v4) in [("ipv4", true), ("ipv6", false)] {
            let prefixes: Vec<&IpNet> = bgp
                .announce
                .iter()
                .filter(|p| matches!(p, IpNet::V4(_)) == v4)
                .collect();
            if prefixes.is_empty() || !bgp.neighbors.iter().any(|n| n.address.is_ipv4() == v4) {
                continue;
            }
            args.push(format!("address-family {family} unicast"));
            for p in prefixes {
                args.push(format!("{}network {p}", if announced { "" } else { "no " }));
            }
            args.push("exit-address-family".into());
        }
        self.vtysh(&args).await.map(|_| ())
    }

    /// Runs vtysh commands against this VM's daemons; returns stdout.
    pub async fn vtysh(&self, commands: &[String]) -> Result<String, FrrError> {
        let mut cmd = Command::new(&self.config.vtysh);
        cmd.arg("--vty_socket").arg(&self.config.run_dir);
        for c in commands {
            cmd.arg("-c").arg(c);
        }
        run(cmd, "vtysh").await
    }

    /// BGP sessions and their states (empty when bgpd is not running).
    pub async fn sessions(&self) -> Vec<BgpSession> {
        let Ok(out) = self.vtysh(&["show bgp summary json".into()]).await else {
            return Vec::new();
        };
        parse_summary(&out)
    }

    /// Starts the daemons that are not running (by their pid files), each with its section of
    /// `sections` (or an empty file) as startup configuration. Returns the daemons started.
    pub async fn ensure_started(
        &self,
        sections: Option<&FrrSections>,
    ) -> Result<Vec<&'static str>, FrrError> {
        let dir = &self.config.run_dir;
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|source| FrrError::Io {
                op: "create",
                path: dir.clone(),
                source,
            })?;
        let mut missing = Vec::new();
        for d in DAEMONS {
            if self.daemon_pid(d).await.is_none() {
                missing.push(d);
            }
        }
        if missing.is_empty() {
            return Ok(missing);
        }
        write_file(
            &self.path("vtysh.conf"),
            "service integrated-vtysh-config\n",
        )
        .await?;
        for d in &missing {
            let text = match (sections, *d) {
                (Some(s), "zebra") => s.zebra.as_str(),
                (Some(s), "bfdd") => s.bfdd.as_str(),
                (Some(s), _) => s.bgpd.as_str(),
                (None, "zebra") => "no zebra nexthop kernel enable\n",
                (None, _) => "",
            };
            write_file(&self.path(&format!("{d}.conf")), text).await?;
        }
        let uid = account_id(Path::new("/etc/passwd"), &self.config.user)?;
        let gid = account_id(Path::new("/etc/group"), &self.config.group)?;
        let owned = dir.to_path_buf();
        tokio::task::spawn_blocking(move || chown_recursive(&owned, uid, gid))
            .await
            .map_err(|e| FrrError::Command {
                what: "chown".into(),
                detail: e.to_string(),
            })??;
        for d in DAEMONS {
            if !missing.contains(&d) {
                continue;
            }
            self.start_daemon(d).await?;
            if d == "zebra" {
                wait_for(&self.path("zserv.api"), Duration::from_secs(5))
                    .await
                    .map_err(|_| FrrError::StartTimeout("zebra", Duration::from_secs(5)))?;
            }
        }
        // A neighbor configured before bgpd has heard from zebra fails to start (the default
        // VRF is still unknown) and then idles for seconds: wait until both clients are
        // registered with zebra before any configuration arrives.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let clients = self
                .vtysh(&["show zebra client summary".into()])
                .await
                .unwrap_or_default();
            if clients.lines().any(|l| l.starts_with("bgp "))
                && clients.lines().any(|l| l.starts_with("bfd "))
            {
                break;
            }
            if Instant::now() > deadline {
                return Err(FrrError::StartTimeout(
                    "bgpd/bfdd zebra session",
                    Duration::from_secs(5),
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(missing)
    }

    async fn start_daemon(&self, daemon: &'static str) -> Result<(), FrrError> {
        let dir = self.config.run_dir.display().to_string();
        let mut argv: Vec<String> = self.config.netns_exec.clone();
        argv.push(self.config.daemon_dir.join(daemon).display().to_string());
        argv.extend(
            [
                "-d",
                "-u",
                &self.config.user,
                "-g",
                &self.config.group,
                "-P",
                "0",
            ]
            .map(String::from),
        );
        argv.extend([
            "-f".into(),
            format!("{dir}/{daemon}.conf"),
            "-i".into(),
            format!("{dir}/{daemon}.pid"),
            "-z".into(),
            format!("{dir}/zserv.api"),
            "--vty_socket".into(),
            dir.clone(),
            "--log".into(),
            format!("file:{dir}/{daemon}.log"),
        ]);
        if daemon == "bfdd" {
            argv.extend(["--bfdctl".into(), format!("{dir}/bfdd.sock")]);
        }
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..]);
        run(cmd, daemon).await?;
        // `-d` forks: the pid file appears once the daemon is ready.
        let pid_file = self.path(&format!("{daemon}.pid"));
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if self.daemon_pid(daemon).await.is_some() {
                tracing::info!(daemon, "FRR daemon started");
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = pid_file;
        Err(FrrError::StartTimeout(daemon, Duration::from_secs(5)))
    }

    /// PID of a running daemon of this directory (pid file present and the process alive with
    /// our run dir on its command line, which guards against PID reuse).
    pub async fn daemon_pid(&self, daemon: &str) -> Option<u32> {
        let text = tokio::fs::read_to_string(self.path(&format!("{daemon}.pid")))
            .await
            .ok()?;
        let pid: u32 = text.trim().parse().ok()?;
        let cmdline = tokio::fs::read(format!("/proc/{pid}/cmdline")).await.ok()?;
        let stat = tokio::fs::read_to_string(format!("/proc/{pid}/stat"))
            .await
            .ok()?;
        let zombie = stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
        let dir = self.config.run_dir.display().to_string();
        let ours = String::from_utf8_lossy(&cmdline).contains(&dir);
        (ours && !zombie).then_some(pid)
    }

    /// PIDs of the running daemons.
    pub async fn pids(&self) -> Vec<u32> {
        let mut pids = Vec::new();
        for d in DAEMONS {
            if let Some(p) = self.daemon_pid(d).await {
                pids.push(p);
            }
        }
        pids
    }

    /// Stops the daemons by PID (TERM, then KILL after 3 s).
    pub async fn stop(&self) {
        let pids = self.pids().await;
        for sig in [Signal::TERM, Signal::KILL] {
            let alive: Vec<u32> = {
                let mut v = Vec::new();
                for d in DAEMONS {
                    if let Some(p) = self.daemon_pid(d).await {
                        v.push(p);
                    }
                }
                v
            };
            if alive.is_empty() {
                break;
            }
            for &pid in &alive {
                send_signal(pid, sig);
            }
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline && !self.pids().await.is_empty() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        tracing::info!(?pids, "FRR stopped");
    }

    /// Puts the announced host prefixes on `lo` and removes those of `previous` no longer
    /// announced; suppresses ARP for them (the VIP is on every VM: only the gateways' routes
    /// decide who gets traffic); enables non-local bind so HAProxy can bind VIPs in any order.
    pub async fn prepare_host(&self, bgp: &Bgp, previous: Option<&Bgp>) -> Result<(), FrrError> {
        self.netns_run(&[
            "sysctl",
            "-qw",
            "net.ipv4.conf.all.arp_ignore=1",
            "net.ipv4.conf.all.arp_announce=2",
            "net.ipv4.ip_nonlocal_bind=1",
        ])
        .await?;
        self.netns_run(&["ip", "link", "set", "lo", "up"]).await?;
        for p in &bgp.announce {
            self.netns_run(&["ip", "addr", "replace", &p.to_string(), "dev", "lo"])
                .await?;
        }
        if let Some(prev) = previous {
            for p in prev.announce.iter().filter(|p| !bgp.announce.contains(p)) {
                // Best effort: the address may already be gone.
                let _ = self
                    .netns_run(&["ip", "addr", "del", &p.to_string(), "dev", "lo"])
                    .await;
            }
        }
        Ok(())
    }

    /// Stops announcing altogether (a state without BGP settings): stops the daemons and
    /// removes the host prefixes `previous` put on `lo`.
    pub async fn release(&self, previous: &Bgp) {
        self.stop().await;
        for p in &previous.announce {
            let _ = self
                .netns_run(&["ip", "addr", "del", &p.to_string(), "dev", "lo"])
                .await;
        }
    }

    async fn netns_run(&self, argv: &[&str]) -> Result<String, FrrError> {
        let mut full: Vec<String> = self.config.netns_exec.clone();
        full.extend(argv.iter().map(|s| s.to_string()));
        let mut cmd = Command::new(&full[0]);
        cmd.args(&full[1..]);
        run(cmd, argv[0]).await
    }
}

fn parse_summary(json: &str) -> Vec<BgpSession> {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(json) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for family in ["ipv4Unicast", "ipv6Unicast"] {
        let Some(peers) = v[family]["peers"].as_object() else {
            continue;
        };
        for (peer, p) in peers {
            out.push(BgpSession {
                peer: peer.clone(),
                state: p["state"].as_str().unwrap_or("unknown").to_owned(),
                prefixes_sent: p["pfxSnt"].as_u64().unwrap_or(0),
            });
        }
    }
    out
}

async fn run(mut cmd: Command, what: &str) -> Result<String, FrrError> {
    let out = cmd
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| FrrError::Command {
            what: what.to_owned(),
            detail: e.to_string(),
        })?;
    if !out.status.success() {
        let mut detail = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        if detail.is_empty() {
            detail = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        }
        // Keep error bodies short: the tail holds the reason.
        if detail.len() > 2000 {
            detail = detail[detail.len() - 2000..].to_owned();
        }
        return Err(FrrError::Command {
            what: what.to_owned(),
            detail: format!("{}: {detail}", out.status),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

async fn write_file(path: &Path, text: &str) -> Result<(), FrrError> {
    tokio::fs::write(path, text)
        .await
        .map_err(|source| FrrError::Io {
            op: "write",
            path: path.to_owned(),
            source,
        })
}

async fn wait_for(path: &Path, max: Duration) -> Result<(), ()> {
    let deadline = Instant::now() + max;
    while Instant::now() < deadline {
        if tokio::fs::metadata(path).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use klb_proto::Neighbor;

    fn bgp() -> Bgp {
        Bgp {
            local_as: 10001,
            router_id: "198.18.1.2".parse().unwrap(),
            neighbors: vec![
                Neighbor {
                    address: "198.18.1.1".parse().unwrap(),
                    remote_as: 60201,
                },
                Neighbor {
                    address: "198.18.2.1".parse().unwrap(),
                    remote_as: 60201,
                },
            ],
            bfd: true,
            announce: vec!["198.19.0.10/32".parse().unwrap()],
            keepalive_secs: 3,
            hold_secs: 9,
        }
    }

    #[test]
    fn renders_the_whole_integrated_config() {
        let text = render_frr(&bgp(), false);
        for line in [
            "no ip forwarding",
            "no zebra nexthop kernel enable",
            "ip prefix-list KLB-VIP seq 5 permit 198.19.0.10/32",
            " profile klb-fast",
            "  receive-interval 100",
            "router bgp 10001",
            " bgp router-id 198.18.1.2",
            " timers bgp 3 9",
            " neighbor 198.18.1.1 remote-as 60201",
            " neighbor 198.18.2.1 bfd profile klb-fast",
            "  network 198.19.0.10/32",
            "  neighbor 198.18.2.1 route-map KLB-ANNOUNCE out",
            "  neighbor 198.18.1.1 route-map KLB-NOTHING in",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        assert!(!text.contains("address-family ipv6"), "{text}");
    }

    #[test]
    fn drained_config_announces_nothing() {
        let text = render_frr(&bgp(), true);
        assert!(!text.contains("  network "), "{text}");
        // Sessions and BFD stay configured.
        assert!(text.contains(" neighbor 198.18.1.1 bfd\n"));
    }

    #[test]
    fn without_bfd_no_bfd_lines() {
        let mut b = bgp();
        b.bfd = false;
        assert!(!render_frr(&b, false).contains("bfd"));
    }

    #[test]
    fn ipv6_vip_goes_to_the_ipv6_family() {
        let mut b = bgp();
        b.announce = vec!["2001:db8::10/128".parse().unwrap()];
        b.neighbors.push(Neighbor {
            address: "2001:db8:1::1".parse().unwrap(),
            remote_as: 60201,
        });
        let text = render_frr(&b, false);
        assert!(text.contains("ipv6 prefix-list KLB-VIP6 seq 5 permit 2001:db8::10/128"));
        assert!(text.contains(" address-family ipv6 unicast\n  network 2001:db8::10/128\n"));
        assert!(text.contains("  neighbor 2001:db8:1::1 activate"));
    }

    #[test]
    fn validation_rejects_what_cannot_render() {
        let check = |f: fn(&mut Bgp)| {
            let mut b = bgp();
            f(&mut b);
            validate_bgp(&b)
        };
        assert!(check(|_| ()).is_ok());
        assert!(check(|b| b.local_as = 0).is_err());
        assert!(check(|b| b.neighbors.clear()).is_err());
        assert!(check(|b| b.announce = vec!["198.19.0.0/24".parse().unwrap()]).is_err());
        assert!(check(|b| b.hold_secs = 4).is_err());
        assert!(check(|b| b.neighbors[0].address = "0.0.0.0".parse().unwrap()).is_err());
    }

    #[test]
    fn parses_bgp_summary_json() {
        let json = r#"{"ipv4Unicast":{"routerId":"198.18.1.2","peers":{
            "198.18.1.1":{"remoteAs":60201,"state":"Established","pfxSnt":1},
            "198.18.2.1":{"remoteAs":60201,"state":"Active"}}}}"#;
        let s = parse_summary(json);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].state, "Established");
        assert_eq!(s[0].prefixes_sent, 1);
        assert_eq!(s[1].state, "Active");
        assert!(parse_summary("not json").is_empty());
    }
}
