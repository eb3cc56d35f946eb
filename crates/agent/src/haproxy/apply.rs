//! The HAProxy supervisor: starts HAProxy in master-worker mode, applies desired states (check,
//! then runtime API or seamless reload), reads statistics and stops it by PID.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use klb_proto::{ApplyMethod, ApplyReply, DesiredState, Stats};
use rustix::process::{Pid, Signal};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep};
use tracing::{debug, error, info, instrument, warn};

use super::render::{self, AuxFile, Paths, Plan, RenderError, Server};
use super::runtime::{self, RuntimeError};

/// How to run HAProxy.
#[derive(Debug, Clone)]
pub struct HaproxyConfig {
    /// The HAProxy binary (`/usr/sbin/haproxy`).
    pub binary: PathBuf,
    /// Words put before the binary when starting it, e.g. `["ip", "netns", "exec", "ns1"]`.
    /// The prefix must `exec` HAProxy so the child PID is HAProxy's master.
    pub command_prefix: Vec<String>,
    /// Where config, sockets, pid file and certificates go.
    pub paths: Paths,
    /// Bound on waiting for a (re)started worker.
    pub start_timeout: Duration,
    /// Bound on waiting for a removed member's connections to finish before `del server`;
    /// after it the remaining sessions are shut down.
    pub drain_timeout: Duration,
}

impl HaproxyConfig {
    /// Defaults for a runtime directory: `/usr/sbin/haproxy`, no prefix, 10 s start, 5 s drain.
    pub fn new(run_dir: &Path) -> Self {
        HaproxyConfig {
            binary: PathBuf::from("/usr/sbin/haproxy"),
            command_prefix: Vec::new(),
            paths: Paths::under(run_dir),
            start_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(5),
        }
    }
}

/// Why an apply (or stop) failed. In every case the previously running configuration (if any)
/// is still the one serving.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The state failed render-time validation.
    #[error("render: {0}")]
    Render(#[from] RenderError),
    /// `haproxy -c` rejected the rendered configuration; `output` is the checker's text.
    #[error("haproxy -c rejected the configuration for version {version}: {output}")]
    Check {
        /// The rejected version.
        version: u64,
        /// Checker output (stdout + stderr).
        output: String,
    },
    /// The state is older than the running one.
    #[error("version {version} is older than the running version {running}")]
    Stale {
        /// Offered version.
        version: u64,
        /// Running version.
        running: u64,
    },
    /// Writing files or spawning processes failed.
    #[error("{operation} {path}: {source}")]
    Io {
        /// What was being done.
        operation: &'static str,
        /// The file or binary.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// HAProxy did not start (its last stderr lines are included).
    #[error("haproxy did not start: {reason}")]
    Start {
        /// Why, with HAProxy's last log lines.
        reason: String,
    },
    /// The reload did not produce a new worker; the old worker keeps serving the old config.
    #[error("reload of version {version} failed: {reason}")]
    Reload {
        /// The version that was being applied.
        version: u64,
        /// Why, with HAProxy's last log lines.
        reason: String,
    },
    /// HAProxy is not running.
    #[error("haproxy is not running")]
    NotRunning,
    /// A runtime API call failed.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

struct Running {
    child: Child,
    version: u64,
    plan: Plan,
    peer_name: String,
}

/// A supervised HAProxy instance (one per load balancer on an LB VM).
pub struct Haproxy {
    config: HaproxyConfig,
    running: Option<Running>,
    log: Arc<Mutex<VecDeque<String>>>,
    /// `false` while draining: frontends are disabled, also after every reload.
    accepting: bool,
    /// The check of the file behind the last member-only change, which replaces the live file
    /// when `haproxy -c` accepts it (see [`Haproxy::apply`]).
    pending_file: Option<JoinHandle<Result<(), ApplyError>>>,
    /// The live file lags behind the running servers (its check failed): the next apply
    /// reloads from a fully checked file instead of changing servers at runtime.
    file_behind: bool,
}

/// Lines of HAProxy's stderr kept for error messages.
const LOG_LINES: usize = 20;

impl Haproxy {
    /// A supervisor that has not started anything yet.
    pub fn new(config: HaproxyConfig) -> Self {
        Haproxy {
            config,
            running: None,
            log: Arc::new(Mutex::new(VecDeque::new())),
            accepting: true,
            pending_file: None,
            file_behind: false,
        }
    }

    /// The paths used.
    pub fn paths(&self) -> &Paths {
        &self.config.paths
    }

    /// The version running, if HAProxy was started.
    pub fn running_version(&self) -> Option<u64> {
        self.running.as_ref().map(|r| r.version)
    }

    /// The master's PID, if started.
    pub fn master_pid(&self) -> Option<u32> {
        self.running.as_ref().and_then(|r| r.child.id())
    }

    /// The plan of the running configuration.
    pub fn running_plan(&self) -> Option<&Plan> {
        self.running.as_ref().map(|r| &r.plan)
    }

    /// Applies `state`: renders and checks it, then starts HAProxy, changes members through the
    /// runtime API, or reloads. On any error the previous configuration keeps serving.
    ///
    /// A member-only change is applied through the runtime API first and answered right away;
    /// `haproxy -c` (~60 ms, most of such a change) then checks the new file in the background,
    /// and only a file it accepts replaces the live one. The running configuration is never
    /// replaced by an unchecked file: the servers went through HAProxy's own parser of the same
    /// `server` keywords (`add server`). The checks of consecutive member changes run one
    /// after the other in the background; any other apply, and stop, wait for them first.
    #[instrument(skip_all, name = "apply", fields(lb = %state.load_balancer_id, version = state.version))]
    pub async fn apply(&mut self, state: &DesiredState) -> Result<ApplyReply, ApplyError> {
        let result = self.apply_inner(state).await;
        // Whatever happened, only the running configuration's certificates stay on disk.
        self.remove_unused_certificates().await;
        result
    }

    async fn apply_inner(&mut self, state: &DesiredState) -> Result<ApplyReply, ApplyError> {
        // A member-only change does not wait for the previous one's check (the checks chain in
        // the background); every other path does, below.
        self.collect_finished_check().await;
        self.reap();
        if let Some(r) = &self.running
            && state.version < r.version
        {
            return Err(ApplyError::Stale {
                version: state.version,
                running: r.version,
            });
        }
        let plan = render::plan(state, &self.config.paths)?;
        if let Some(r) = &mut self.running
            && r.plan.config == plan.config
            && !self.file_behind
        {
            r.version = state.version;
            return Ok(ApplyReply::new(state.version, ApplyMethod::Unchanged));
        }
        self.prepare_dirs().await?;
        write_aux_files(&plan.files).await?;
        if let Some(running) = &self.running
            && !self.file_behind
            && running.peer_name == state.vm.name
            && running.plan.skeleton == plan.skeleton
            && member_ops(&running.plan, &plan).is_some()
        {
            match self.apply_members(&running.plan, &plan).await {
                Ok(()) => {
                    if let Err(e) = self
                        .check_file_in_background(&plan.config, state.version)
                        .await
                    {
                        // The change is live; the file catches up at the next apply (a reload).
                        error!(error = %e, "cannot write the file of a runtime member change");
                        self.file_behind = true;
                    }
                    let r = self.running.as_mut().expect("running");
                    r.plan = plan;
                    r.version = state.version;
                    return Ok(ApplyReply::new(state.version, ApplyMethod::Runtime));
                }
                Err(e) => warn!(error = %e, "runtime member update failed, reloading instead"),
            }
        }
        self.finish_pending_file().await;
        let candidate = self.config.paths.run_dir.join("haproxy.cfg.new");
        write_file(&candidate, &plan.config, 0o600).await?;
        if let Err(e) = check_config(&self.config.binary, &candidate, state.version).await {
            let _ = tokio::fs::remove_file(&candidate).await;
            return Err(e);
        }
        let live = self.config.paths.config();
        if self
            .running
            .as_ref()
            .is_some_and(|r| r.peer_name != state.vm.name)
        {
            // The local peer name is a command-line argument (`-L`): only a restart changes
            // it. VM names are fixed for a VM's life, so this is a repair path, not routine.
            warn!(name = %state.vm.name, "peer name changed, restarting haproxy");
            self.stop().await?;
        }
        if self.running.is_none() {
            rename(&candidate, &live).await?;
            self.spawn(state, plan).await?;
            self.enforce_accepting().await?;
            return Ok(ApplyReply::new(state.version, ApplyMethod::Start));
        }
        self.reload(&candidate, state, plan).await?;
        self.file_behind = false;
        // A reload starts a fresh worker with every frontend enabled.
        self.enforce_accepting().await?;
        Ok(ApplyReply::new(state.version, ApplyMethod::Reload))
    }

    /// Deletes files in the certificate directory that the running plan does not reference.
    async fn remove_unused_certificates(&self) {
        let keep: std::collections::BTreeSet<&Path> = self
            .running
            .iter()
            .flat_map(|r| r.plan.files.iter().map(|f| f.path.as_path()))
            .collect();
        let Ok(mut dir) = tokio::fs::read_dir(&self.config.paths.cert_dir).await else {
            return;
        };
        while let Ok(Some(entry)) = dir.next_entry().await {
            let path = entry.path();
            if !keep.contains(path.as_path())
                && let Err(e) = tokio::fs::remove_file(&path).await
            {
                warn!(path = %path.display(), error = %e, "cannot remove unused certificate file");
            }
        }
    }

    /// Drain (`false`: every frontend stops accepting new connections; established ones
    /// finish) or resume (`true`). Remembered across reloads and restarts.
    pub async fn set_accepting(&mut self, accepting: bool) -> Result<(), ApplyError> {
        self.accepting = accepting;
        self.apply_accepting(accepting).await
    }

    /// Whether frontends accept new connections (see [`Haproxy::set_accepting`]).
    pub fn accepting(&self) -> bool {
        self.accepting
    }

    async fn enforce_accepting(&self) -> Result<(), ApplyError> {
        if self.accepting {
            Ok(())
        } else {
            self.apply_accepting(false).await
        }
    }

    async fn apply_accepting(&self, accepting: bool) -> Result<(), ApplyError> {
        let Some(r) = &self.running else {
            return Ok(());
        };
        let verb = if accepting { "enable" } else { "disable" };
        let sock = self.config.paths.admin_socket();
        for f in &r.plan.frontends {
            runtime::expect(&sock, &format!("{verb} frontend {f}"), &[]).await?;
        }
        Ok(())
    }

    /// Current statistics from `show stat`.
    pub async fn stats(&self) -> Result<Stats, ApplyError> {
        if self.running.is_none() {
            return Err(ApplyError::NotRunning);
        }
        let rows = runtime::show_stat(&self.config.paths.admin_socket()).await?;
        Ok(runtime::stats_from_rows(&rows))
    }

    /// Whether the admin socket answers.
    pub async fn is_up(&self) -> bool {
        self.running.is_some()
            && runtime::command(&self.config.paths.admin_socket(), "show info")
                .await
                .is_ok()
    }

    /// Stops HAProxy: SIGTERM to the master (by PID), SIGKILL after `start_timeout`; reaps it.
    pub async fn stop(&mut self) -> Result<(), ApplyError> {
        self.finish_pending_file().await;
        let Some(mut r) = self.running.take() else {
            return Ok(());
        };
        if let Some(pid) = r.child.id() {
            info!(pid, "stopping haproxy");
            send_signal(pid, Signal::TERM);
            if tokio::time::timeout(self.config.start_timeout, r.child.wait())
                .await
                .is_ok()
            {
                return Ok(());
            }
            warn!(pid, "haproxy ignored SIGTERM, killing");
        }
        let _ = r.child.start_kill();
        r.child.wait().await.map_err(|source| ApplyError::Io {
            operation: "wait for",
            path: self.config.binary_path(),
            source,
        })?;
        Ok(())
    }

    /// Reaps a master that exited on its own (so no zombie stays) and forgets it.
    fn reap(&mut self) {
        if let Some(r) = &mut self.running
            && let Ok(Some(status)) = r.child.try_wait()
        {
            warn!(%status, "haproxy master exited");
            self.running = None;
        }
    }

    async fn prepare_dirs(&self) -> Result<(), ApplyError> {
        for (dir, mode) in [
            (&self.config.paths.run_dir, 0o700),
            (&self.config.paths.cert_dir, 0o700),
        ] {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|source| ApplyError::Io {
                    operation: "create",
                    path: dir.clone(),
                    source,
                })?;
            set_mode(dir, mode).await?;
        }
        Ok(())
    }

    /// Writes the file of a member-only change already running and starts its check; the
    /// check's task replaces the live file when `haproxy -c` accepts it.
    async fn check_file_in_background(
        &mut self,
        config: &str,
        version: u64,
    ) -> Result<(), ApplyError> {
        // One file per version: a check still running on an older file is never disturbed.
        let pending = self
            .config
            .paths
            .run_dir
            .join(format!("haproxy.cfg.pending.{version}"));
        write_file(&pending, config, 0o600).await?;
        let previous = self.pending_file.take();
        let binary = self.config.binary.clone();
        let live = self.config.paths.config();
        self.pending_file = Some(tokio::spawn(async move {
            // Checks run one after the other, so the live file only moves forward; a newer
            // file holds every earlier runtime change, so it stands for a failed older one.
            let earlier = match previous {
                Some(task) => match task.await {
                    Ok(result) => result.err().map(|e| e.to_string()),
                    Err(e) => Some(e.to_string()),
                },
                None => None,
            };
            if let Some(error) = earlier {
                warn!(%error, "an earlier runtime change's file was not accepted; checking the newer one");
            }
            match check_config(&binary, &pending, version).await {
                Ok(()) => rename(&pending, &live).await,
                Err(e) => {
                    let _ = tokio::fs::remove_file(&pending).await;
                    Err(e)
                }
            }
        }));
        Ok(())
    }

    /// Waits until the live file holds the last member-only change (its background check
    /// passed), or that check failed (then the next apply reloads from a checked file).
    pub async fn wait_file_checked(&mut self) {
        self.finish_pending_file().await;
    }

    /// Takes the background check's result if it is done, without waiting.
    async fn collect_finished_check(&mut self) {
        if self.pending_file.as_ref().is_some_and(|t| t.is_finished()) {
            self.finish_pending_file().await;
        }
    }

    /// Waits for the background check of the last member-only change. If it failed, the
    /// running servers are ahead of the live file: the next apply reloads.
    async fn finish_pending_file(&mut self) {
        let Some(task) = self.pending_file.take() else {
            return;
        };
        let failure = match task.await {
            Ok(Ok(())) => return,
            Ok(Err(e)) => e.to_string(),
            Err(e) => format!("check task ended: {e}"),
        };
        error!(error = %failure, "the file of a runtime member change was not accepted; the next change reloads");
        self.file_behind = true;
    }
}

/// `haproxy -c -f cfg`.
async fn check_config(binary: &Path, cfg: &Path, version: u64) -> Result<(), ApplyError> {
    let out = Command::new(binary)
        .arg("-c")
        .arg("-f")
        .arg(cfg)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|source| ApplyError::Io {
            operation: "run",
            path: binary.to_path_buf(),
            source,
        })?;
    if out.status.success() {
        return Ok(());
    }
    let mut output = String::from_utf8_lossy(&out.stdout).into_owned();
    output.push_str(&String::from_utf8_lossy(&out.stderr));
    Err(ApplyError::Check {
        version,
        output: output.trim().to_owned(),
    })
}

impl Haproxy {
    async fn spawn(&mut self, state: &DesiredState, plan: Plan) -> Result<(), ApplyError> {
        let paths = &self.config.paths;
        let mut words: Vec<String> = self.config.command_prefix.clone();
        words.push(self.config.binary.to_string_lossy().into_owned());
        let mut cmd = Command::new(&words[0]);
        cmd.args(&words[1..])
            .arg("-W")
            .arg("-S")
            .arg(format!("{},mode,600", paths.master_socket().display()))
            .arg("-f")
            .arg(paths.config())
            .arg("-p")
            .arg(paths.pid_file())
            .arg("-L")
            .arg(&state.vm.name)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|source| ApplyError::Io {
            operation: "spawn",
            path: PathBuf::from(&words[0]),
            source,
        })?;
        let pid = child.id();
        info!(?pid, "started haproxy master");
        if let Some(stderr) = child.stderr.take() {
            let log = self.log.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    debug!(target: "haproxy", "{line}");
                    let mut l = log.lock().await;
                    if l.len() == LOG_LINES {
                        l.pop_front();
                    }
                    l.push_back(line);
                }
            });
        }
        self.running = Some(Running {
            child,
            version: state.version,
            plan,
            peer_name: state.vm.name.clone(),
        });
        let deadline = Instant::now() + self.config.start_timeout;
        let mut last;
        loop {
            self.reap();
            if self.running.is_none() {
                return Err(ApplyError::Start {
                    reason: format!("master exited; log: {}", self.log_tail().await),
                });
            }
            match self.worker_ready().await {
                Ok(()) => return Ok(()),
                Err(e) => last = e,
            }
            if Instant::now() > deadline {
                let _ = self.stop().await;
                return Err(ApplyError::Start {
                    reason: format!(
                        "no worker within {:?} ({last}); log: {}",
                        self.config.start_timeout,
                        self.log_tail().await
                    ),
                });
            }
            sleep(Duration::from_millis(20)).await;
        }
    }

    /// Ok when the master lists a worker and the worker's admin socket answers.
    async fn worker_ready(&self) -> Result<(), String> {
        let p = runtime::show_proc(&self.config.paths.master_socket())
            .await
            .map_err(|e| e.to_string())?;
        if p.workers.is_empty() {
            return Err("no worker yet".into());
        }
        runtime::command(&self.config.paths.admin_socket(), "show info")
            .await
            .map_err(|e| e.to_string())?;
        Ok(())
    }

    /// Swaps the config and reloads through the master CLI; on failure restores the old file.
    async fn reload(
        &mut self,
        candidate: &Path,
        state: &DesiredState,
        plan: Plan,
    ) -> Result<(), ApplyError> {
        let live = self.config.paths.config();
        let previous = self.config.paths.run_dir.join("haproxy.cfg.prev");
        copy(&live, &previous).await?;
        rename(candidate, &live).await?;
        let master = self.config.paths.master_socket();
        let result = self.reload_and_wait(&master, state.version).await;
        match result {
            Ok(()) => {
                let r = self.running.as_mut().expect("running");
                r.plan = plan;
                r.version = state.version;
                r.peer_name = state.vm.name.clone();
                Ok(())
            }
            Err(e) => {
                // The master keeps the old worker when a reload fails; put the file it runs back.
                rename(&previous, &live).await?;
                Err(e)
            }
        }
    }

    async fn reload_and_wait(&mut self, master: &Path, version: u64) -> Result<(), ApplyError> {
        let deadline = Instant::now() + self.config.start_timeout;
        let before = loop {
            match runtime::show_proc(master).await {
                Ok(p) => break p,
                // The master CLI refuses connections briefly while it re-executes.
                Err(e) if Instant::now() > deadline => return Err(e.into()),
                Err(_) => sleep(Duration::from_millis(20)).await,
            }
        };
        // The connection closes when the master re-executes; the reply does not matter.
        let _ = runtime::command(master, "reload").await;
        loop {
            self.reap();
            if self.running.is_none() {
                return Err(ApplyError::Reload {
                    version,
                    reason: format!("master exited; log: {}", self.log_tail().await),
                });
            }
            if let Ok(p) = runtime::show_proc(master).await {
                if p.failed_reloads > before.failed_reloads {
                    return Err(ApplyError::Reload {
                        version,
                        reason: format!(
                            "haproxy refused the new configuration; log: {}",
                            self.log_tail().await
                        ),
                    });
                }
                if p.reloads > before.reloads
                    && !p.workers.is_empty()
                    && p.workers.iter().all(|w| !before.workers.contains(w))
                {
                    info!(workers = ?p.workers, "reloaded");
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(ApplyError::Reload {
                    version,
                    reason: format!(
                        "no new worker within {:?}; log: {}",
                        self.config.start_timeout,
                        self.log_tail().await
                    ),
                });
            }
            sleep(Duration::from_millis(20)).await;
        }
    }

    /// Applies a member-only difference through the runtime API.
    async fn apply_members(&self, old: &Plan, new: &Plan) -> Result<(), ApplyError> {
        let ops = member_ops(old, new).ok_or_else(|| RuntimeError::Refused {
            command: "(plan)".into(),
            reply: "member options changed; needs a reload".into(),
        })?;
        let sock = self.config.paths.admin_socket();
        for op in ops {
            debug!(?op, "runtime");
            match op {
                MemberOp::Add { backend, server } => {
                    let cmd = format!(
                        "add server {backend}/{} {}",
                        server.name,
                        server_add_tail(&server)
                    );
                    runtime::expect(&sock, &cmd, &["New server registered"]).await?;
                    if server.checked {
                        runtime::expect(
                            &sock,
                            &format!("enable health {backend}/{}", server.name),
                            &[],
                        )
                        .await?;
                    }
                    if server.enabled {
                        runtime::expect(
                            &sock,
                            &format!("enable server {backend}/{}", server.name),
                            &[],
                        )
                        .await?;
                    }
                }
                MemberOp::Update { backend, old, new } => {
                    let s = format!("{backend}/{}", new.name);
                    if (old.address, old.port) != (new.address, new.port) {
                        let cmd = format!("set server {s} addr {} port {}", new.address, new.port);
                        runtime::expect(&sock, &cmd, &["changed", "no need to change"]).await?;
                    }
                    if old.weight != new.weight {
                        runtime::expect(
                            &sock,
                            &format!("set server {s} weight {}", new.weight),
                            &[],
                        )
                        .await?;
                    }
                    if old.enabled != new.enabled {
                        let state = if new.enabled { "ready" } else { "maint" };
                        runtime::expect(&sock, &format!("set server {s} state {state}"), &[])
                            .await?;
                    }
                }
                MemberOp::Remove { backend, name } => {
                    self.remove_server(&sock, &backend, &name).await?
                }
            }
        }
        Ok(())
    }

    /// maint, wait (bounded) until its connections are gone, then `del server`.
    async fn remove_server(
        &self,
        sock: &Path,
        backend: &str,
        name: &str,
    ) -> Result<(), ApplyError> {
        let s = format!("{backend}/{name}");
        runtime::expect(sock, &format!("set server {s} state maint"), &[]).await?;
        let deadline = Instant::now() + self.config.drain_timeout;
        loop {
            let reply = runtime::command(sock, &format!("del server {s}")).await?;
            if reply.contains("Server deleted") {
                return Ok(());
            }
            if !reply.contains("still has connections") {
                return Err(RuntimeError::Refused {
                    command: format!("del server {s}"),
                    reply: reply.trim().to_owned(),
                }
                .into());
            }
            if Instant::now() > deadline {
                warn!(server = %s, "connections did not drain in time, shutting them down");
                runtime::expect(sock, &format!("shutdown sessions server {s}"), &[]).await?;
            }
            sleep(Duration::from_millis(50)).await;
        }
    }

    async fn log_tail(&self) -> String {
        let l = self.log.lock().await;
        l.iter().cloned().collect::<Vec<_>>().join(" | ")
    }
}

impl HaproxyConfig {
    fn binary_path(&self) -> PathBuf {
        self.binary.clone()
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        // kill_on_drop sends SIGKILL to the master; its workers exit when the master dies.
        if let Some(r) = &mut self.running {
            let _ = r.child.start_kill();
        }
    }
}

/// One runtime change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum MemberOp {
    /// `add server` (+ `enable health`, `enable server`).
    Add { backend: String, server: Server },
    /// `set server ... addr/weight/state`.
    Update {
        backend: String,
        old: Server,
        new: Server,
    },
    /// maint, drain, `del server`.
    Remove { backend: String, name: String },
}

/// The runtime operations turning `old` servers into `new` ones, or `None` when some change
/// (options, health check, the set of backends) needs a reload. Removals come last so a
/// replaced member's traffic has somewhere to go.
pub(crate) fn member_ops(old: &Plan, new: &Plan) -> Option<Vec<MemberOp>> {
    if old.servers.keys().ne(new.servers.keys()) {
        return None;
    }
    let mut adds = Vec::new();
    let mut removes = Vec::new();
    for (backend, new_servers) in &new.servers {
        let old_servers = &old.servers[backend];
        for n in new_servers {
            match old_servers.iter().find(|o| o.name == n.name) {
                // HAProxy 2.6 refuses `cookie` on dynamic servers: such adds need a reload.
                None if !runtime_addable(n) => return None,
                None => adds.push(MemberOp::Add {
                    backend: backend.clone(),
                    server: n.clone(),
                }),
                Some(o) if o == n => {}
                Some(o) if o.options == n.options && o.checked == n.checked => {
                    adds.push(MemberOp::Update {
                        backend: backend.clone(),
                        old: o.clone(),
                        new: n.clone(),
                    })
                }
                Some(_) => return None,
            }
        }
        for o in old_servers {
            if !new_servers.iter().any(|n| n.name == o.name) {
                removes.push(MemberOp::Remove {
                    backend: backend.clone(),
                    name: o.name.clone(),
                });
            }
        }
    }
    adds.extend(removes);
    Some(adds)
}

/// Whether `add server` accepts this server's options in HAProxy 2.6 (not `cookie`).
fn runtime_addable(s: &Server) -> bool {
    !s.options.split(' ').any(|t| t == "cookie")
}

/// `add server` arguments: the same options as the config line (no `default-server` applies to
/// dynamic servers) but never `disabled` (new servers start in maintenance anyway).
fn server_add_tail(s: &Server) -> String {
    let mut t = format!("{} weight {}", s.address_token(), s.weight);
    if !s.options.is_empty() {
        t.push(' ');
        t.push_str(&s.options);
    }
    t
}

async fn write_aux_files(files: &[AuxFile]) -> Result<(), ApplyError> {
    for f in files {
        let tmp = f.path.with_extension("tmp");
        write_file(&tmp, &f.contents, f.mode).await?;
        rename(&tmp, &f.path).await?;
    }
    Ok(())
}

async fn write_file(path: &Path, contents: &str, mode: u32) -> Result<(), ApplyError> {
    let io = |source| ApplyError::Io {
        operation: "write",
        path: path.to_path_buf(),
        source,
    };
    let mut opts = tokio::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true).mode(mode);
    let mut f = opts.open(path).await.map_err(io)?;
    tokio::io::AsyncWriteExt::write_all(&mut f, contents.as_bytes())
        .await
        .map_err(io)?;
    f.sync_all().await.map_err(io)?;
    drop(f);
    // `mode` only applies to new files.
    set_mode(path, mode).await
}

async fn set_mode(path: &Path, mode: u32) -> Result<(), ApplyError> {
    use std::os::unix::fs::PermissionsExt;
    tokio::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .await
        .map_err(|source| ApplyError::Io {
            operation: "chmod",
            path: path.to_path_buf(),
            source,
        })
}

async fn rename(from: &Path, to: &Path) -> Result<(), ApplyError> {
    tokio::fs::rename(from, to)
        .await
        .map_err(|source| ApplyError::Io {
            operation: "rename",
            path: from.to_path_buf(),
            source,
        })
}

async fn copy(from: &Path, to: &Path) -> Result<(), ApplyError> {
    tokio::fs::copy(from, to)
        .await
        .map(|_| ())
        .map_err(|source| ApplyError::Io {
            operation: "copy",
            path: from.to_path_buf(),
            source,
        })
}

/// Sends a signal by PID with kill(2) through rustix (a safe wrapper: the crate forbids
/// `unsafe`). PID 0 (or one beyond `pid_t`) is refused: kill(2) would read it as a group.
pub(crate) fn send_signal(pid: u32, sig: Signal) {
    let target = i32::try_from(pid).ok().and_then(Pid::from_raw);
    let r = match target {
        Some(target) => rustix::process::kill_process(target, sig).map_err(std::io::Error::from),
        None => Err(std::io::ErrorKind::InvalidInput.into()),
    };
    if let Err(e) = r {
        warn!(pid, ?sig, error = %e, "kill failed");
    }
}
