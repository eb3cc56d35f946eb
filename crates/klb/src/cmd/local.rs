//! `klb local down`: removes the local cloud that `klb serve` (driver `local`) leaves running
//! on exit so that its next start can adopt the load balancers.

use std::path::PathBuf;

use anyhow::{Context, bail};

use crate::config::RawConfig;

/// `klb local ...` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Tear the local cloud down completely: stop its recorded processes (by PID), delete its
    /// namespaces and root-namespace veth, remove its state file and runtime directory. Stop
    /// `klb serve` first; its load balancers' VMs are gone afterwards.
    Down(DownArgs),
}

/// Arguments of `klb local down`.
#[derive(Debug, clap::Args)]
pub struct DownArgs {
    /// The klb.toml `klb serve` ran with (its `cloud.local_prefix` and
    /// `cloud.local_runtime_dir`); without it, the defaults (`klb-`, /run/klb/local).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
}

pub fn run(command: Command) -> anyhow::Result<()> {
    let Command::Down(args) = command;
    let raw = RawConfig::load(args.config.as_deref())?;
    let lab = super::serve::local_settings(&raw)?.lab;
    if !super::demo::is_root() {
        bail!("klb local down needs root (it deletes network namespaces); run it with sudo");
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let report = runtime
        .block_on(klb_local::LocalCloud::teardown_recorded(&lab, None))
        .with_context(|| format!("tearing down the local cloud {:?}", lab.prefix))?;
    println!(
        "klb local down: prefix {:?}: stopped {} recorded processes, removed {} namespaces{}{}",
        lab.prefix,
        report.stopped_processes,
        report.removed_namespaces.len(),
        if report.removed_state_file {
            ", the state file"
        } else {
            ""
        },
        if report.removed_runtime_dir {
            format!(" and {}", lab.runtime_dir.display())
        } else {
            String::new()
        },
    );
    Ok(())
}
