//! TLS certificate material for TERMINATED_HTTPS listeners and TLS-enabled pools.
//!
//! Octavia stores only *references* to certificates (Barbican secret or container URLs) and
//! fetches the material when it configures an amphora. klb does the same through the
//! [`CertificateManager`] trait: the API checks every ref a tenant sets (400 `Could not retrieve
//! certificate` when the tenant's project cannot load it), and the flows fetch the PEM text that
//! goes, inside the desired state, to each LB VM (where the agent writes it mode 0600).
//!
//! Implementations: [`NoopCertManager`] (accepts every ref and delivers nothing, like Octavia's
//! noop certificate manager, for the API-only provider) and [`LocalSecrets`], a project-scoped
//! secret store in klb's own database that answers a subset of Barbican's v1 API (served by the
//! control plane), for the local cloud. A Barbican client for the OpenStack driver plugs into the
//! same trait.
//!
//! Material is validated when it is fetched ([`bundle`]): a server or client certificate needs a
//! certificate chain and the private key of its first certificate; CA bundles need certificates;
//! CRLs need CRLs. Messages never contain key material.

#![warn(missing_docs)]
pub mod bundle;
mod local;
mod reference;

pub use local::{
    ContainerMeta, LocalSecrets, MAX_PAYLOAD_BYTES, NewContainer, NewSecret, SecretMeta,
    SecretsError,
};
pub use reference::{Reference, ReferenceKind};

use async_trait::async_trait;
use klb_proto::SecretPem;

/// What a certificate ref is used for, which decides the material it must hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CertUsage {
    /// A listener's default or SNI certificate: chain + private key.
    Server,
    /// A pool's client certificate presented to members: chain + private key.
    Client,
    /// A CA bundle verifying client or member certificates.
    CaBundle,
    /// A certificate revocation list.
    Crl,
}

/// Why a certificate ref cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// The ref names nothing the project can read.
    #[error("certificate {reference} was not found")]
    NotFound {
        /// The ref as given.
        reference: String,
    },
    /// The ref's material is not what its use needs (never includes the material).
    #[error("certificate {reference} cannot be used: {reason}")]
    Invalid {
        /// The ref as given.
        reference: String,
        /// What is wrong.
        reason: String,
    },
    /// This manager does not deliver material (noop).
    #[error("no certificate manager is configured to deliver {reference}")]
    NotDelivered {
        /// The ref as given.
        reference: String,
    },
    /// The secret store failed.
    #[error("certificate store: {0}")]
    Store(#[from] klb_store::StoreError),
}

impl CertError {
    /// Whether the caller's ref is at fault (a 400), not the service.
    pub fn is_client_error(&self) -> bool {
        !matches!(self, CertError::Store(_))
    }
}

/// Resolves certificate refs for a project.
#[async_trait]
pub trait CertificateManager: Send + Sync + 'static {
    /// The PEM text HAProxy loads for `reference` used as `usage`, read as `project_id`
    /// (chain + key for [`CertUsage::Server`]/[`CertUsage::Client`], certificates for CA
    /// bundles, CRLs for CRLs).
    async fn fetch(
        &self,
        project_id: &str,
        reference: &str,
        usage: CertUsage,
    ) -> Result<SecretPem, CertError>;

    /// Checks that `reference` can be fetched; the API calls this on create and update.
    async fn check(
        &self,
        project_id: &str,
        reference: &str,
        usage: CertUsage,
    ) -> Result<(), CertError> {
        self.fetch(project_id, reference, usage).await.map(drop)
    }
}

/// Accepts every ref as-is and delivers no material, like Octavia's noop certificate manager.
/// For the API-only provider, where nothing is configured.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoopCertManager;

#[async_trait]
impl CertificateManager for NoopCertManager {
    async fn fetch(&self, _: &str, reference: &str, _: CertUsage) -> Result<SecretPem, CertError> {
        Err(CertError::NotDelivered {
            reference: reference.to_owned(),
        })
    }

    async fn check(&self, _: &str, _: &str, _: CertUsage) -> Result<(), CertError> {
        Ok(())
    }
}
