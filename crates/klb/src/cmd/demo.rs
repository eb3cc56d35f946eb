//! `klb demo`.

/// Arguments of `klb demo`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Path to klb.toml (optional).
    #[arg(long, short)]
    pub config: Option<std::path::PathBuf>,
}

pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("klb demo is not built yet")
}
