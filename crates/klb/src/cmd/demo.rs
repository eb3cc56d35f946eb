//! `klb demo`: builds the local cloud, runs a whole real active-active load balancer on it
//! through the public API (traffic, failover, PPS scale-out), then removes everything, also on
//! Ctrl-C.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use klb_control::demo::{DemoOptions, Summary};
use klb_control::plane::{CloudChoice, ControlPlane, LocalSettings, PlaneConfig};

/// Arguments of `klb demo`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Requests of each bounded load phase.
    #[arg(long, default_value_t = 400)]
    pub requests: u32,
    /// PPS threshold of the demo's alarm (connections per second on the local cloud).
    #[arg(long, default_value_t = 300)]
    pub pps_threshold: u64,
    /// Directory for the demo's database, CA and keys (removed at the end).
    #[arg(long, default_value = "/run/klb/demo")]
    pub state_dir: PathBuf,
    /// Show the logs live on stderr, interleaved with the steps, instead of in the log file.
    #[arg(long, short)]
    pub verbose: bool,
    /// The log file (without --verbose); default: `<state-dir>.log`, e.g. /run/klb/demo.log
    /// (the state dir itself is removed at the end).
    #[arg(long)]
    pub log_file: Option<PathBuf>,
}

impl Args {
    /// Where the logs go: `None` = stderr (`--verbose`), else the file.
    pub fn log_destination(&self) -> Option<PathBuf> {
        if self.verbose {
            return None;
        }
        Some(
            self.log_file
                .clone()
                .unwrap_or_else(|| self.state_dir.with_extension("log")),
        )
    }
}

/// Runs the demo; `log_file` is where main sent the logs (`None`: stderr), named at the end.
pub fn run(args: Args, log_file: Option<PathBuf>) -> anyhow::Result<()> {
    preflight()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let summary = runtime.block_on(demo(&args));
    // The state dir holds only this run's database and keys.
    let _ = std::fs::remove_dir_all(&args.state_dir);
    let logs = log_file.map(|p| format!("klb demo: logs in {}", p.display()));
    let summary = match summary {
        Ok(s) => s,
        Err(e) => {
            if let Some(l) = &logs {
                eprintln!("{l}");
            }
            return Err(e);
        }
    };
    println!("\nklb demo summary\n{}", summary.table());
    if let Some(l) = &logs {
        println!("{l}");
    }
    Ok(())
}

fn preflight() -> anyhow::Result<()> {
    if !is_root() {
        bail!("klb demo needs root (it creates network namespaces); run it with sudo");
    }
    for bin in [
        "/usr/sbin/haproxy",
        "/usr/lib/frr/bgpd",
        "/usr/lib/frr/zebra",
        "/usr/lib/frr/bfdd",
    ] {
        if !std::path::Path::new(bin).exists() {
            bail!("{bin} is missing: install haproxy and frr (scripts/install-deps.sh)");
        }
    }
    Ok(())
}

pub(crate) fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|uid| uid == "0"))
        })
        .unwrap_or(false)
}

async fn demo(args: &Args) -> anyhow::Result<Summary> {
    let _ = std::fs::remove_dir_all(&args.state_dir);
    std::fs::create_dir_all(&args.state_dir)
        .with_context(|| format!("creating {}", args.state_dir.display()))?;
    println!(
        "klb demo: building the local cloud (namespaces, two FRR gateways with ECMP + BFD)..."
    );
    let settings = LocalSettings {
        teardown_on_stop: true,
        pps_threshold: args.pps_threshold,
        alarm_period_secs: 1,
        alarm_evaluation_periods: 2,
        alarm_period_override: Some(Duration::from_secs(1)),
        silent_after: Duration::from_secs(3),
        ..LocalSettings::default()
    };
    let plane = ControlPlane::start(PlaneConfig {
        api_bind: "127.0.0.1:0".parse()?,
        database_url: format!("sqlite://{}", args.state_dir.join("klb.db").display()),
        state_dir: args.state_dir.clone(),
        auth: Arc::new(klb_api::NoAuth {
            default_project_id: Some("demo".to_owned()),
        }),
        standalone_lookups: true,
        api: klb_api::ApiConfig::default(),
        policy: None,
        cloud: CloudChoice::Local(Box::new(settings)),
    })
    .await
    .context("starting the control plane")?;
    println!("klb demo: control plane API on http://{}", plane.api_addr());
    let options = DemoOptions {
        klb_exe: std::env::current_exe().context("locating the klb executable")?,
        requests: args.requests,
        member_port: 8080,
    };
    let outcome = tokio::select! {
        result = klb_control::demo::run(&plane, &options) => result.map_err(anyhow::Error::from),
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    println!("klb demo: removing the local cloud...");
    plane.stop().await.context("stopping the control plane")?;
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn dest(argv: &[&str]) -> Option<PathBuf> {
        let mut full = vec!["demo"];
        full.extend_from_slice(argv);
        Cli::try_parse_from(full).unwrap().args.log_destination()
    }

    #[test]
    fn logs_go_to_a_file_next_to_the_state_dir_unless_verbose() {
        assert_eq!(dest(&[]), Some(PathBuf::from("/run/klb/demo.log")));
        assert_eq!(
            dest(&["--state-dir", "/tmp/x/demo"]),
            Some(PathBuf::from("/tmp/x/demo.log"))
        );
        assert_eq!(
            dest(&["--log-file", "demo.log"]),
            Some(PathBuf::from("demo.log"))
        );
        assert_eq!(dest(&["-v"]), None);
        assert_eq!(dest(&["--verbose", "--log-file", "x.log"]), None);
    }
}
