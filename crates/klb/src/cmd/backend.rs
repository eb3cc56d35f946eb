//! `klb backend`.

/// Arguments of `klb backend`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Path to klb.toml (optional).
    #[arg(long, short)]
    pub config: Option<std::path::PathBuf>,
}

pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("klb backend is not built yet")
}
