//! `klb agent`.

/// Arguments of `klb agent`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Path to klb.toml (optional).
    #[arg(long, short)]
    pub config: Option<std::path::PathBuf>,
}

pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("klb agent is not built yet")
}
