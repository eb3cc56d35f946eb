//! `klb agent`: the agent on an LB VM. Reads `agent.toml` (format: `klb_agent::config`), runs
//! HAProxy and FRR for the desired state the control plane PUTs, serves the mTLS API until
//! SIGTERM or Ctrl-C, then stops HAProxy and FRR.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use klb_agent::dataplane::HaproxyProxy;
use klb_agent::haproxy::{Haproxy, HaproxyConfig};

/// Arguments of `klb agent`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Path to agent.toml.
    #[arg(long, short)]
    pub config: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    raise_nofile_limit();
    let config = klb_agent::AgentConfig::load(&args.config).map_err(|e| {
        anyhow::Error::new(crate::config::ConfigError::Invalid {
            key: args.config.display().to_string(),
            message: e.to_string(),
        })
    })?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let mut hc = HaproxyConfig::new(&config.runtime_dir.join("haproxy"));
        hc.binary = config.haproxy_bin.clone();
        hc.command_prefix = config.netns_exec.clone();
        let proxy = Arc::new(HaproxyProxy::new(Haproxy::new(hc)));
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutting down");
            let _ = stop_tx.send(true);
        });
        let result = klb_agent::run(config, proxy.clone(), stop_rx).await;
        if let Err(e) = proxy.stop().await {
            tracing::warn!(error = %e, "stopping haproxy");
        }
        result.context("agent")
    })
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// HAProxy needs about two descriptors per connection (`default_maxconn` 12000 needs ~24000)
/// and refuses to start when it cannot raise its limit that far; it can raise the soft limit
/// but not the hard one. The agent runs as root on the LB VM, so it lifts both to the kernel's
/// ceiling (`fs.nr_open`, at most 2^20) before HAProxy inherits them; without the privilege,
/// the soft limit goes up to the hard one. Never lowers a limit.
fn raise_nofile_limit() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let ceiling = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(1 << 20)
        .min(1 << 20);
    let now = getrlimit(Resource::Nofile);
    let hard = now.maximum.unwrap_or(u64::MAX);
    let soft = now.current.unwrap_or(u64::MAX);
    if hard < ceiling {
        let raised = Rlimit {
            current: Some(ceiling),
            maximum: Some(ceiling),
        };
        if setrlimit(Resource::Nofile, raised).is_ok() {
            tracing::info!(from = hard, to = ceiling, "descriptor limit raised");
            return;
        }
    }
    if soft < hard {
        let _ = setrlimit(
            Resource::Nofile,
            Rlimit {
                current: now.maximum,
                maximum: now.maximum,
            },
        );
    }
}
