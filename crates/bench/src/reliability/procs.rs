//! The processes the reliability suite runs itself: `klb serve` (noauth, noop provider, free
//! loopback port) and a throwaway PostgreSQL cluster (`initdb` in the work directory, its
//! postmaster a child process on a loopback port). Both are stopped by PID, also on drop.

use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::BenchError;

/// A loopback port free right now.
pub fn free_port() -> Result<u16, BenchError> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| BenchError::Setup(format!("no free loopback port: {e}")))
}

/// Sends `signal` to a child and waits (bounded) for it to exit; SIGKILL after `grace`.
fn stop_child(child: &mut Child, signal: rustix::process::Signal, grace: Duration) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
        let _ = rustix::process::kill_process(pid, signal);
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// `klb serve` under test; SIGTERM (then SIGKILL) on drop.
pub struct Server {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    /// Its stderr (tracing output): scanned for panics.
    pub log: PathBuf,
}

impl Server {
    /// Starts `klb serve` on a free loopback port with `database_url` and waits (up to 60 s)
    /// until it answers `GET /`.
    pub async fn start(
        klb_bin: &Path,
        database_url: &str,
        log: PathBuf,
    ) -> Result<Server, BenchError> {
        let port = free_port()?;
        let log_file = std::fs::File::create(&log)
            .map_err(|e| BenchError::Setup(format!("creating {}: {e}", log.display())))?;
        let child = Command::new(klb_bin)
            .arg("serve")
            .env("KLB_API_BIND", format!("127.0.0.1:{port}"))
            .env("KLB_DATABASE_URL", database_url)
            .env("KLB_API_AUTH_STRATEGY", "noauth")
            .env(
                "RUST_LOG",
                std::env::var("KLB_RELIABILITY_SERVER_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .map_err(|e| BenchError::Setup(format!("starting {}: {e}", klb_bin.display())))?;
        let mut server = Server {
            child,
            url: format!("http://127.0.0.1:{port}"),
            log,
        };
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(2))
            .build()
            .map_err(BenchError::Client)?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(BenchError::Setup(format!(
                    "klb serve exited ({status}) at start; see {}",
                    server.log.display()
                )));
            }
            if let Ok(r) = http.get(format!("{}/", server.url)).send().await
                && r.status().is_success()
            {
                return Ok(server);
            }
            if Instant::now() > deadline {
                return Err(BenchError::Setup(format!(
                    "klb serve did not answer on {} within 60 s",
                    server.url
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// False once the process has exited (a crash).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Lines of the server's log that report a panic.
    pub fn panics(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("panicked"))
            .map(|l| l.chars().take(300).collect())
            .collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        stop_child(
            &mut self.child,
            rustix::process::Signal::TERM,
            Duration::from_secs(10),
        );
    }
}

/// A throwaway PostgreSQL cluster in `dir`, listening on 127.0.0.1:`port` (and a unix
/// socket in `dir`), trust authentication for user `klb`. Fast shutdown on drop.
pub struct Postgres {
    bin_dir: PathBuf,
    dir: PathBuf,
    port: u16,
    owner: Option<(u32, u32)>,
    child: Option<Child>,
    log: PathBuf,
}

/// The directory holding `initdb` and `postgres`: `$KLB_POSTGRES_BIN_DIR`, else the newest
/// `/usr/lib/postgresql/<version>/bin`, else `pg_config --bindir`.
pub fn find_postgres_bin_dir() -> Option<PathBuf> {
    let has = |d: &Path| d.join("initdb").exists() && d.join("postgres").exists();
    if let Ok(d) = std::env::var("KLB_POSTGRES_BIN_DIR") {
        return Some(PathBuf::from(d)).filter(|d| has(d));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            Some((v, e.path().join("bin")))
        })
        .filter(|(_, d)| has(d))
        .collect();
    versions.sort();
    if let Some((_, d)) = versions.pop() {
        return Some(d);
    }
    let out = Command::new("pg_config").arg("--bindir").output().ok()?;
    let d = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    has(&d).then_some(d)
}

/// uid and gid of the `postgres` account (`initdb` refuses to run as root).
fn postgres_account() -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.first() == Some(&"postgres") && f.len() > 3)
            .then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
            .flatten()
    })
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

impl Postgres {
    /// `initdb` a new cluster under `dir` (created; must not exist) and start it.
    pub fn init(bin_dir: &Path, dir: &Path) -> Result<Postgres, BenchError> {
        let owner = if is_root() {
            Some(postgres_account().ok_or_else(|| {
                BenchError::Setup("running as root but there is no postgres account".into())
            })?)
        } else {
            None
        };
        let setup = |what: &str, e: std::io::Error| BenchError::Setup(format!("{what}: {e}"));
        std::fs::create_dir_all(dir).map_err(|e| setup("creating the cluster directory", e))?;
        if let Some((uid, gid)) = owner {
            // The postgres account must reach the cluster directory through our work dir.
            let mut p = dir.parent();
            while let Some(d) = p {
                if d.as_os_str().is_empty() || d == Path::new("/") {
                    break;
                }
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(d)
                    .map(|m| m.permissions().mode())
                    .unwrap_or(0);
                if mode & 0o001 == 0 {
                    let _ =
                        std::fs::set_permissions(d, std::fs::Permissions::from_mode(mode | 0o001));
                }
                p = d.parent();
            }
            std::os::unix::fs::chown(dir, Some(uid), Some(gid))
                .map_err(|e| setup("chown of the cluster directory", e))?;
        }
        let data = dir.join("data");
        let log = dir.join("postgres.log");
        let mut initdb = Command::new(bin_dir.join("initdb"));
        initdb
            .arg("-D")
            .arg(&data)
            .args(["-A", "trust", "-U", "klb", "-E", "UTF8", "--no-sync"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some((uid, gid)) = owner {
            initdb.uid(uid).gid(gid);
        }
        let out = initdb.output().map_err(|e| setup("running initdb", e))?;
        if !out.status.success() {
            return Err(BenchError::Setup(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        let mut pg = Postgres {
            bin_dir: bin_dir.to_path_buf(),
            dir: dir.to_path_buf(),
            port: free_port()?,
            owner,
            child: None,
            log,
        };
        pg.start()?;
        Ok(pg)
    }

    /// `postgres://klb@127.0.0.1:<port>/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://klb@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the postmaster (same port) and waits up to 30 s until it accepts connections.
    pub fn start(&mut self) -> Result<(), BenchError> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| BenchError::Setup(format!("opening {}: {e}", self.log.display())))?;
        if let Some((uid, gid)) = self.owner {
            let _ = std::os::unix::fs::chown(&self.log, Some(uid), Some(gid));
        }
        let mut cmd = Command::new(self.bin_dir.join("postgres"));
        cmd.arg("-D")
            .arg(self.dir.join("data"))
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-k")
            .arg(&self.dir)
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "max_connections=200",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        if let Some((uid, gid)) = self.owner {
            cmd.uid(uid).gid(gid);
        }
        self.child = Some(
            cmd.spawn()
                .map_err(|e| BenchError::Setup(format!("starting postgres: {e}")))?,
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                return Err(BenchError::Setup(format!(
                    "postgres exited ({status}); see {}",
                    self.log.display()
                )));
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(BenchError::Setup(
            "postgres did not accept connections within 30 s".into(),
        ))
    }

    /// Fast shutdown (SIGINT: open sessions are terminated), bounded by 30 s.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop_child(
                &mut child,
                rustix::process::Signal::INT,
                Duration::from_secs(30),
            );
        }
    }

    /// The postmaster's PID while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}
