//! A [`CertificateManager`] on Barbican, the way Octavia reads certificates: klb's service user
//! fetches the secret or certificate container by id from the catalog's `key-manager`
//! endpoint, so Barbican's policy decides (the tenant gave klb's user read access with an ACL,
//! or klb is admin there). The host in a tenant's ref is never called. Material is validated
//! like the local secret store's (klb-certs' `bundle`).

use async_trait::async_trait;
use http::Method;
use openstack_sdk::types::ServiceType;
use serde::Deserialize;

use klb_certs::bundle::{self, ServerBundle};
use klb_certs::{CertError, CertUsage, CertificateManager, Reference, ReferenceKind};
use klb_cloud::CloudErrorKind;
use klb_proto::SecretPem;

use crate::session::{Call, Session};

/// Barbican through klb's session.
#[derive(Debug, Clone)]
pub struct BarbicanCertificates {
    session: Session,
}

impl BarbicanCertificates {
    /// Reads certificates through `session` (klb's service identity).
    pub fn new(session: Session) -> Self {
        BarbicanCertificates { session }
    }

    fn call(operation: &'static str, reference: &str, path: String) -> Call {
        Call::new(
            operation,
            reference,
            Method::GET,
            ServiceType::Other("key-manager".to_owned()),
            path,
        )
    }

    async fn payload(&self, reference: &str, id: &str) -> Result<Vec<u8>, CertError> {
        let call = Self::call(
            "get_secret_payload",
            reference,
            format!("v1/secrets/{id}/payload"),
        )
        .accept("application/octet-stream");
        match self.session.send(&call).await {
            Ok((_, body)) => Ok(body.to_vec()),
            Err(e) => Err(cert_error(reference, e)),
        }
    }
}

fn cert_error(reference: &str, e: klb_cloud::CloudError) -> CertError {
    match e.kind {
        // Barbican answers 403 when klb's user has no access: to the tenant that is the same
        // as a ref that does not exist for them.
        CloudErrorKind::NotFound | CloudErrorKind::Auth => CertError::NotFound {
            reference: reference.to_owned(),
        },
        _ => CertError::Invalid {
            reference: reference.to_owned(),
            reason: format!("the key manager failed: {}", e.kind),
        },
    }
}

fn invalid(reference: &str, reason: impl Into<String>) -> CertError {
    CertError::Invalid {
        reference: reference.to_owned(),
        reason: reason.into(),
    }
}

#[derive(Debug, Deserialize)]
struct ContainerReply {
    #[serde(rename = "type")]
    container_type: String,
    #[serde(default)]
    secret_refs: Vec<SecretRef>,
}

#[derive(Debug, Deserialize)]
struct SecretRef {
    name: String,
    secret_ref: String,
}

#[async_trait]
impl CertificateManager for BarbicanCertificates {
    async fn fetch(
        &self,
        _project_id: &str,
        reference: &str,
        usage: CertUsage,
    ) -> Result<SecretPem, CertError> {
        let parsed = Reference::parse(reference).ok_or_else(|| CertError::NotFound {
            reference: reference.to_owned(),
        })?;
        let id = parsed.id.to_string();
        let pem = match (parsed.kind, usage) {
            (ReferenceKind::Secret, CertUsage::Server | CertUsage::Client) => {
                ServerBundle::from_payload(&self.payload(reference, &id).await?)
                    .map_err(|r| invalid(reference, r))?
                    .to_pem()
            }
            (ReferenceKind::Secret, CertUsage::CaBundle) => {
                bundle::ca_bundle_pem(&self.payload(reference, &id).await?)
                    .map_err(|r| invalid(reference, r))?
            }
            (ReferenceKind::Secret, CertUsage::Crl) => {
                bundle::crl_pem(&self.payload(reference, &id).await?)
                    .map_err(|r| invalid(reference, r))?
            }
            (ReferenceKind::Container, CertUsage::Server | CertUsage::Client) => {
                let call = Self::call("get_container", reference, format!("v1/containers/{id}"));
                let container: ContainerReply = self
                    .session
                    .json(&call)
                    .await
                    .map_err(|e| cert_error(reference, e))?;
                if container.container_type != "certificate" {
                    return Err(invalid(
                        reference,
                        "the container is not a certificate container",
                    ));
                }
                let part = |name: &str| -> Result<Option<String>, CertError> {
                    match container.secret_refs.iter().find(|s| s.name == name) {
                        Some(s) => Reference::parse(&s.secret_ref)
                            .map(|r| Some(r.id.to_string()))
                            .ok_or_else(|| invalid(reference, format!("bad {name} ref"))),
                        None => Ok(None),
                    }
                };
                let cert = part("certificate")?
                    .ok_or_else(|| invalid(reference, "the container has no certificate"))?;
                let key = part("private_key")?
                    .ok_or_else(|| invalid(reference, "the container has no private_key"))?;
                if part("private_key_passphrase")?.is_some() {
                    return Err(invalid(
                        reference,
                        "encrypted private keys are not supported",
                    ));
                }
                let intermediates = part("intermediates")?;
                let cert = self.payload(reference, &cert).await?;
                let key = self.payload(reference, &key).await?;
                let intermediates = match intermediates {
                    Some(id) => Some(self.payload(reference, &id).await?),
                    None => None,
                };
                ServerBundle::from_parts(&cert, &key, intermediates.as_deref())
                    .map_err(|r| invalid(reference, r))?
                    .to_pem()
            }
            (ReferenceKind::Container, _) => {
                return Err(invalid(
                    reference,
                    "a CA bundle or CRL is a secret, not a container",
                ));
            }
        };
        Ok(SecretPem::new(pem))
    }
}
