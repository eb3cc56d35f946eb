//! `klb ca`: klb's own certificate authority for the agent API (mutual TLS between the control
//! plane and the agents). `init` creates the CA, `issue` signs a server certificate for an
//! agent (IP SANs) or a client certificate for the control plane. Private keys are written
//! with mode 0600.

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::Context;
use klb_tls::{self as tls, CertKind};

/// Subcommands of `klb ca`.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Create a new CA (`ca.crt`, `ca.key`) in a directory; refuses to overwrite one.
    Init {
        /// Directory for the CA files (created if missing).
        #[arg(long)]
        dir: PathBuf,
        /// Common name of the CA certificate.
        #[arg(long, default_value = "klb CA")]
        name: String,
    },
    /// Issue a certificate signed by the CA in `--dir`: writes `NAME.crt` and `NAME.key` there.
    Issue {
        /// Directory holding `ca.crt` and `ca.key`.
        #[arg(long)]
        dir: PathBuf,
        /// Certificate name (common name and file name).
        #[arg(long)]
        name: String,
        /// `server` (an agent; needs --ip) or `client` (the control plane).
        #[arg(long, value_enum)]
        kind: Kind,
        /// IP address SAN of a server certificate; repeat for several.
        #[arg(long = "ip")]
        ips: Vec<IpAddr>,
    },
}

/// Certificate kind on the command line.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Kind {
    /// TLS server certificate (agents).
    Server,
    /// TLS client certificate (control plane).
    Client,
}

pub fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Init { dir, name } => {
            let paths = tls::init_ca(&dir, &name)
                .with_context(|| format!("creating a CA in {}", dir.display()))?;
            println!("CA certificate: {}", paths.cert.display());
            println!("CA key:         {} (mode 0600)", paths.key.display());
        }
        Command::Issue {
            dir,
            name,
            kind,
            ips,
        } => {
            let kind = match kind {
                Kind::Server => CertKind::Server,
                Kind::Client => CertKind::Client,
            };
            if kind == CertKind::Server && ips.is_empty() {
                anyhow::bail!(crate::config::ConfigError::Invalid {
                    key: "--ip".into(),
                    message: "a server certificate needs at least one --ip (agents are reached by address)".into(),
                });
            }
            let paths = tls::issue_to_dir(&dir, &name, kind, &ips)
                .with_context(|| format!("issuing {name} from the CA in {}", dir.display()))?;
            println!("certificate: {}", paths.cert.display());
            println!("key:         {} (mode 0600)", paths.key.display());
        }
    }
    Ok(())
}
