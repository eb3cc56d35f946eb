//! `klb backend`: a tiny HTTP member for the local cloud and tests (see `klb_local::backend`).

use std::net::SocketAddr;

/// Arguments of `klb backend`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Path to klb.toml (optional; unused by the backend, accepted for symmetry).
    #[arg(long, short)]
    pub config: Option<std::path::PathBuf>,
    /// Address and port to listen on, e.g. 198.18.16.11:8080.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Name reported in the body and the `X-Backend` header (1-64 printable ASCII characters).
    #[arg(long)]
    pub name: String,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    // Validate before building a runtime so bad input fails fast with a clear message.
    klb_local::backend::check_name(&args.name)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let shutdown = async {
            use tokio::signal::unix::{SignalKind, signal};
            match signal(SignalKind::terminate()) {
                Ok(mut term) => {
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => {}
                        _ = term.recv() => {}
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "no SIGTERM handler; stop with Ctrl-C");
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
            tracing::info!("backend shutting down");
        };
        klb_local::backend::serve(args.listen, &args.name, shutdown).await
    })?;
    Ok(())
}
