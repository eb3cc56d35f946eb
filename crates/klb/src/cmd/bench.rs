//! `klb bench`: benchmark subcommands; the measuring code lives in the `klb-bench` crate.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

/// Subcommands of `klb bench`.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Load Balancer v2 API throughput and latency against any Octavia-compatible endpoint
    /// (LB create/show/list/delete, listener and member create), with a same-run `GET /`
    /// baseline; writes a JSON result file and prints a table.
    Api(ApiArgs),
    /// Reliability suite (issue 11): starts its own `klb serve` (noauth, noop provider) on
    /// SQLite and, when PostgreSQL is installed, on a throwaway cluster; runs concurrent mixed
    /// clients (0 5xx, no lost writes, nothing stuck in PENDING_*), a proptest fuzzer (0 5xx,
    /// 0 panics, RSS bounded) and stops/restarts PostgreSQL under load (503 while down, full
    /// service after). Writes a JSON result file; exits non-zero when an expectation failed.
    Reliability(ReliabilityArgs),
}

/// Arguments of `klb bench reliability`.
#[derive(Debug, clap::Args)]
pub struct ReliabilityArgs {
    /// Concurrent API clients of the mixed workload.
    #[arg(long, default_value_t = 200)]
    pub clients: usize,
    /// Seconds of the mixed workload (per database).
    #[arg(long, default_value_t = 60)]
    pub seconds: u64,
    /// Upper bound on waiting for nothing to be PENDING_* after the load, seconds.
    #[arg(long, default_value_t = 30)]
    pub settle_seconds: u64,
    /// Fuzz cases per database.
    #[arg(long, default_value_t = 20_000)]
    pub fuzz_cases: u64,
    /// Upper bound on the fuzz run per database, seconds.
    #[arg(long, default_value_t = 120)]
    pub fuzz_seconds: u64,
    /// Allowed growth of the server's RSS over the fuzz run, MiB.
    #[arg(long, default_value_t = 32)]
    pub fuzz_rss_growth_mib: u64,
    /// PostgreSQL part: auto (when initdb/postgres are found), on (required) or off.
    #[arg(long, default_value = "auto", value_parser = ["auto", "on", "off"])]
    pub postgres: String,
    /// Concurrent clients during the PostgreSQL outage.
    #[arg(long, default_value_t = 50)]
    pub outage_clients: usize,
    /// Seconds PostgreSQL stays down (longer than the response bound: 503s must show).
    #[arg(long, default_value_t = 20)]
    pub outage_seconds: u64,
    /// Longest acceptable answer while PostgreSQL is down, seconds (klb's PostgreSQL pools
    /// wait up to 10 s for a connection before answering 503).
    #[arg(long, default_value_t = 15)]
    pub response_bound_seconds: u64,
    /// Seconds after PostgreSQL's restart from which every request must succeed.
    #[arg(long, default_value_t = 5)]
    pub recovery_seconds: u64,
    /// Seed of the workload's and the fuzzer's choices (a run is reproducible from it).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// The `klb` binary to test as `klb serve` (default: this one).
    #[arg(long)]
    pub server_bin: Option<PathBuf>,
    /// Work directory (databases, logs, the PostgreSQL cluster); default a temporary one,
    /// removed at the end.
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// JSON result file (parent directories are created).
    #[arg(long, default_value = "results/reliability.json")]
    pub output: PathBuf,
}

/// Arguments of `klb bench api`.
#[derive(Debug, clap::Args)]
pub struct ApiArgs {
    /// Endpoint root (serves the version document), e.g. http://127.0.0.1:9876.
    #[arg(long)]
    pub url: String,
    /// Concurrent clients; a comma list runs several levels in one run (e.g. 8,50).
    #[arg(long, value_delimiter = ',', default_value = "8")]
    pub concurrency: Vec<usize>,
    /// Operations per measured phase.
    #[arg(long, default_value_t = 200)]
    pub count: usize,
    /// Operations of the `GET /` baseline phase.
    #[arg(long, default_value_t = 2000)]
    pub baseline_count: usize,
    /// Load balancers present during the list phase (topped up, unmeasured).
    #[arg(long, default_value_t = 200)]
    pub list_size: usize,
    /// JSON result file (parent directories are created).
    #[arg(long, default_value = "results/api.json")]
    pub output: PathBuf,
    /// Project id sent as X-Project-Id (noauth servers).
    #[arg(long)]
    pub project_id: Option<String>,
    /// Keystone token sent as X-Auth-Token (or env KLB_BENCH_TOKEN). Never printed.
    #[arg(long, env = "KLB_BENCH_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// vip_subnet_id of created LBs (default: a random UUID; noop/local clouds accept any).
    #[arg(long)]
    pub vip_subnet_id: Option<String>,
    /// PID of the server process: its peak RSS (/proc/PID/status) is reported.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Upper bound on each measured phase, seconds.
    #[arg(long, default_value_t = 120)]
    pub phase_seconds: u64,
    /// Upper bound on waiting for an LB to become ACTIVE or go away, seconds.
    #[arg(long, default_value_t = 300)]
    pub active_timeout_seconds: u64,
    /// Interval between status polls while waiting for ACTIVE, milliseconds.
    #[arg(long, default_value_t = 10)]
    pub poll_ms: u64,
}

pub fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Api(args) => api(args),
        Command::Reliability(args) => reliability(args),
    }
}

fn reliability(args: ReliabilityArgs) -> anyhow::Result<()> {
    use klb_bench::reliability::{PostgresMode, ReliabilityConfig};
    let klb_bin = match args.server_bin {
        Some(p) => p,
        None => std::env::current_exe().context("locating the klb binary")?,
    };
    // Kept alive until the end: removing it also removes the PostgreSQL cluster.
    let temp;
    let work_dir = match args.work_dir {
        Some(d) => {
            std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
            d
        }
        None => {
            temp = tempfile::Builder::new()
                .prefix("klb-reliability.")
                .tempdir()
                .context("creating a work directory")?;
            temp.path().to_path_buf()
        }
    };
    let mut config = ReliabilityConfig::new(klb_bin, work_dir);
    config.clients = args.clients;
    config.duration = Duration::from_secs(args.seconds);
    config.settle_timeout = Duration::from_secs(args.settle_seconds);
    config.fuzz_cases = args.fuzz_cases;
    config.fuzz_time = Duration::from_secs(args.fuzz_seconds);
    config.fuzz_rss_growth_kib = args.fuzz_rss_growth_mib * 1024;
    config.postgres = match args.postgres.as_str() {
        "on" => PostgresMode::Required,
        "off" => PostgresMode::Off,
        _ => PostgresMode::Auto,
    };
    config.outage_clients = args.outage_clients;
    config.outage_down = Duration::from_secs(args.outage_seconds);
    config.response_bound = Duration::from_secs(args.response_bound_seconds);
    config.recovery_bound = Duration::from_secs(args.recovery_seconds);
    config.seed = args.seed;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let report = runtime.block_on(klb_bench::reliability::run(config))?;
    if let Some(dir) = args.output.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let json = serde_json::to_string_pretty(&report)?;
    std::fs::write(&args.output, json + "\n")
        .with_context(|| format!("writing {}", args.output.display()))?;
    print!("{}", report.summary());
    println!("results: {}", args.output.display());
    if !report.failures.is_empty() {
        anyhow::bail!(
            "{} reliability expectation(s) failed (see the result file)",
            report.failures.len()
        );
    }
    Ok(())
}

fn api(args: ApiArgs) -> anyhow::Result<()> {
    let mut config = klb_bench::ApiBenchConfig::new(args.url);
    config.concurrency = args.concurrency;
    config.count = args.count;
    config.baseline_count = args.baseline_count;
    config.list_size = args.list_size;
    config.project_id = args.project_id;
    config.token = args.token;
    if let Some(subnet) = args.vip_subnet_id {
        config.vip_subnet_id = subnet;
    }
    config.server_pid = args.server_pid;
    config.phase_time_limit = Duration::from_secs(args.phase_seconds);
    config.active_timeout = Duration::from_secs(args.active_timeout_seconds);
    config.poll_interval = Duration::from_millis(args.poll_ms.max(1));

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let report = runtime.block_on(klb_bench::api::run(config))?;

    if let Some(dir) = args.output.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let json = serde_json::to_string_pretty(&report)?;
    std::fs::write(&args.output, json + "\n")
        .with_context(|| format!("writing {}", args.output.display()))?;
    print!("{}", report.summary_table());
    println!("results: {}", args.output.display());
    if !report.failed_levels.is_empty() {
        anyhow::bail!(
            "{} concurrency level(s) failed (see the result file)",
            report.failed_levels.len()
        );
    }
    Ok(())
}
