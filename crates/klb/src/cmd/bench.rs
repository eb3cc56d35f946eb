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
    }
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
