//! `klb`: one binary for the control plane (`serve`), the LB-VM agent (`agent`), the local
//! demo (`demo`), benchmarks (`bench`) and small helpers. This file is glue only: it parses
//! the command line, sets up logging and calls one entry point per subcommand.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cmd;
mod config;

/// klb: active-active HAProxy load balancers for OpenStack, fed by ECMP over BGP.
#[derive(Debug, Parser)]
#[command(name = "klb", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the control plane: the Load Balancer v2 API, flows and health manager.
    Serve(cmd::serve::Args),
    /// Run the agent on an LB VM (HAProxy + FRR).
    Agent(cmd::agent::Args),
    /// Build the local cloud, run a whole real load balancer on it, then remove everything.
    Demo(cmd::demo::Args),
    /// Benchmarks (results as JSON files).
    #[command(subcommand)]
    Bench(cmd::bench::Command),
    /// Issue certificates from klb's CA for the control plane and the agents.
    #[command(subcommand)]
    Ca(cmd::ca::Command),
    /// Local-cloud housekeeping (`down`: remove what `klb serve` left running).
    #[command(subcommand)]
    Local(cmd::local::Command),
    /// A tiny HTTP backend used as a load-balancer member in the local cloud and tests.
    Backend(cmd::backend::Args),
    /// A bounded HTTP load generator (new connection per request); prints a JSON report.
    #[command(hide = true)]
    Load(cmd::load::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `klb demo` keeps the terminal for its steps and table; its logs go to a file.
    let log_file = match &cli.command {
        Command::Demo(args) => args.log_destination(),
        _ => None,
    };
    let log_file = init_tracing(log_file);
    let result = match cli.command {
        Command::Serve(args) => cmd::serve::run(args),
        Command::Agent(args) => cmd::agent::run(args),
        Command::Demo(args) => cmd::demo::run(args, log_file),
        Command::Bench(command) => cmd::bench::run(command),
        Command::Ca(command) => cmd::ca::run(command),
        Command::Local(command) => cmd::local::run(command),
        Command::Backend(args) => cmd::backend::run(args),
        Command::Load(args) => cmd::load::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("klb: error: {err:#}");
            if err.downcast_ref::<config::ConfigError>().is_some() {
                // EX_USAGE: bad configuration or arguments.
                ExitCode::from(64)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// Logs go to stderr, or to `file` if given (truncated; stderr if it cannot be opened),
/// filtered by `RUST_LOG` (default `info`, `openstack_sdk` at `warn`). Returns the file used.
fn init_tracing(file: Option<std::path::PathBuf>) -> Option<std::path::PathBuf> {
    use tracing_subscriber::EnvFilter;
    // openstack_sdk logs every request and reply at INFO (two lines per cloud call).
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,openstack_sdk=warn"));
    let opened = file.and_then(|path| {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            let _ = std::fs::create_dir_all(dir);
        }
        match std::fs::File::create(&path) {
            Ok(f) => Some((path, f)),
            Err(e) => {
                eprintln!(
                    "klb: cannot write the log file {}: {e}; logging to stderr",
                    path.display()
                );
                None
            }
        }
    });
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match opened {
        Some((path, f)) => {
            builder
                // `&File` is `Write`: one write per event, no lock needed.
                .with_writer(std::sync::Arc::new(f))
                .with_ansi(false)
                .init();
            Some(path)
        }
        None => {
            builder
                .with_writer(std::io::stderr)
                // Colour codes only on a terminal: agents and daemons log to files.
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .init();
            None
        }
    }
}
