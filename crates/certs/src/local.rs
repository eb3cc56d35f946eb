//! [`LocalSecrets`]: a project-scoped secret store in klb's database, shaped like Barbican's
//! secrets and certificate containers so tenants use the refs they would use with Octavia.
//!
//! Payloads are kept as stored (base64 in the document body) and only read back for their own
//! project; they are never logged. The database file is the trust boundary, as Barbican's
//! database is for its simple crypto plugin's key.

use async_trait::async_trait;
use base64::Engine as _;
use klb_proto::SecretPem;
use klb_store::{Document, DocumentKind, ListQuery, Store};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::bundle::{self, ServerBundle};
use crate::{CertError, CertUsage, CertificateManager, Reference, ReferenceKind};

/// Largest payload accepted (Barbican's `max_allowed_secret_in_bytes` is 20,000; certificate
/// chains in PKCS#12 can be larger).
pub const MAX_PAYLOAD_BYTES: usize = 65_536;

/// A secret to store.
#[derive(Clone, Default)]
pub struct NewSecret {
    /// Display name.
    pub name: Option<String>,
    /// Barbican secret type (`opaque`, `certificate`, `private`, ...).
    pub secret_type: String,
    /// Content type (`text/plain`, `application/octet-stream`, `application/pkcs12`, ...).
    pub content_type: String,
    /// The payload bytes.
    pub payload: Vec<u8>,
}

impl std::fmt::Debug for NewSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewSecret")
            .field("name", &self.name)
            .field("secret_type", &self.secret_type)
            .field(
                "payload",
                &format_args!("<{} bytes redacted>", self.payload.len()),
            )
            .finish()
    }
}

/// A secret's metadata (what Barbican's `GET /v1/secrets/ID` shows; never the payload).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SecretMeta {
    /// Id.
    pub id: Uuid,
    /// Owning project.
    pub project_id: String,
    /// Display name.
    pub name: Option<String>,
    /// Barbican secret type.
    pub secret_type: String,
    /// Content type of the payload.
    pub content_type: String,
    /// Creation time (RFC 3339).
    pub created: String,
    /// The user who stored it (Barbican's `creator_id`), when known; absent in documents
    /// written before klb recorded it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creator_id: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct SecretBody {
    #[serde(flatten)]
    meta: SecretMeta,
    /// base64 of the payload bytes.
    payload: String,
}

/// A certificate container to store: named refs to secrets of the same project.
#[derive(Debug, Clone, Default)]
pub struct NewContainer {
    /// Display name.
    pub name: Option<String>,
    /// `certificate` or `generic`.
    pub container_type: String,
    /// `(name, secret ref)` pairs: `certificate`, `private_key`, `intermediates`, ...
    pub secret_refs: Vec<(String, String)>,
}

/// A container as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerMeta {
    /// Id.
    pub id: Uuid,
    /// Owning project.
    pub project_id: String,
    /// Display name.
    pub name: Option<String>,
    /// `certificate` or `generic`.
    pub container_type: String,
    /// `(name, secret id)` pairs.
    pub secrets: Vec<(String, Uuid)>,
    /// Creation time (RFC 3339).
    pub created: String,
    /// The user who stored it (Barbican's `creator_id`), when known; absent in documents
    /// written before klb recorded it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creator_id: Option<String>,
}

/// Why a secret or container cannot be stored (a 400 for the caller) or the store failed.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    /// The request is wrong.
    #[error("{0}")]
    Invalid(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] klb_store::StoreError),
}

/// The store-backed secret store and certificate manager.
#[derive(Clone)]
pub struct LocalSecrets {
    store: Store,
}

impl LocalSecrets {
    /// Secrets kept in `store`.
    pub fn new(store: Store) -> LocalSecrets {
        LocalSecrets { store }
    }

    /// Stores a secret for `project_id` (no creator recorded).
    pub async fn create_secret(
        &self,
        project_id: &str,
        secret: NewSecret,
    ) -> Result<SecretMeta, SecretsError> {
        self.create_secret_by(project_id, None, secret).await
    }

    /// Stores a secret for `project_id`, made by the user `creator_id`.
    pub async fn create_secret_by(
        &self,
        project_id: &str,
        creator_id: Option<&str>,
        secret: NewSecret,
    ) -> Result<SecretMeta, SecretsError> {
        if secret.payload.is_empty() {
            return Err(SecretsError::Invalid("the payload is empty".into()));
        }
        if secret.payload.len() > MAX_PAYLOAD_BYTES {
            return Err(SecretsError::Invalid(format!(
                "the payload is larger than {MAX_PAYLOAD_BYTES} bytes"
            )));
        }
        let meta = SecretMeta {
            id: Uuid::new_v4(),
            project_id: project_id.to_owned(),
            name: secret.name,
            secret_type: secret.secret_type,
            content_type: secret.content_type,
            created: now(),
            creator_id: creator_id.map(str::to_owned),
        };
        let body = SecretBody {
            meta: meta.clone(),
            payload: base64::engine::general_purpose::STANDARD.encode(&secret.payload),
        };
        self.insert(DocumentKind::Secret, meta.id, project_id, &body)
            .await?;
        Ok(meta)
    }

    /// A secret of `project_id`.
    pub async fn secret(
        &self,
        project_id: &str,
        id: Uuid,
    ) -> Result<Option<SecretMeta>, SecretsError> {
        Ok(self.secret_body(project_id, id).await?.map(|b| b.meta))
    }

    /// A secret of any project, for a caller that decides about access itself (the API's
    /// policy needs the owner before it can answer 403 or 404).
    pub async fn find_secret(&self, id: Uuid) -> Result<Option<SecretMeta>, SecretsError> {
        Ok(self
            .store
            .get(DocumentKind::Secret, &id.to_string())
            .await?
            .and_then(|d| serde_json::from_str::<SecretBody>(&d.body).ok())
            .map(|b| b.meta))
    }

    /// A secret's payload and content type, for its own project only.
    pub async fn secret_payload(
        &self,
        project_id: &str,
        id: Uuid,
    ) -> Result<Option<(String, Vec<u8>)>, SecretsError> {
        let Some(body) = self.secret_body(project_id, id).await? else {
            return Ok(None);
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&body.payload)
            .map_err(|_| SecretsError::Invalid("stored payload is corrupt".into()))?;
        Ok(Some((body.meta.content_type, bytes)))
    }

    /// The project's secrets, oldest first.
    pub async fn secrets(&self, project_id: &str) -> Result<Vec<SecretMeta>, SecretsError> {
        let docs = self.list(DocumentKind::Secret, project_id).await?;
        Ok(docs
            .iter()
            .filter_map(|d| serde_json::from_str::<SecretBody>(&d.body).ok())
            .map(|b| b.meta)
            .collect())
    }

    /// Deletes a secret; false when the project has no such secret.
    pub async fn delete_secret(&self, project_id: &str, id: Uuid) -> Result<bool, SecretsError> {
        self.delete(DocumentKind::Secret, project_id, id).await
    }

    /// Stores a container whose refs all name secrets of `project_id` (no creator recorded).
    pub async fn create_container(
        &self,
        project_id: &str,
        container: NewContainer,
    ) -> Result<ContainerMeta, SecretsError> {
        self.create_container_by(project_id, None, container).await
    }

    /// Stores a container whose refs all name secrets of `project_id`, made by the user
    /// `creator_id`.
    pub async fn create_container_by(
        &self,
        project_id: &str,
        creator_id: Option<&str>,
        container: NewContainer,
    ) -> Result<ContainerMeta, SecretsError> {
        let allowed: &[&str] = match container.container_type.as_str() {
            "certificate" => &[
                "certificate",
                "private_key",
                "intermediates",
                "private_key_passphrase",
            ],
            "generic" => &[],
            other => {
                return Err(SecretsError::Invalid(format!(
                    "container type '{}' is not supported (certificate, generic)",
                    other.escape_default()
                )));
            }
        };
        let mut secrets = Vec::new();
        for (name, reference) in container.secret_refs {
            if !allowed.is_empty() && !allowed.contains(&name.as_str()) {
                return Err(SecretsError::Invalid(format!(
                    "secret name '{}' is not valid in a certificate container",
                    name.escape_default()
                )));
            }
            let id = Reference::parse(&reference)
                .filter(|r| r.kind == ReferenceKind::Secret)
                .map(|r| r.id)
                .ok_or_else(|| {
                    SecretsError::Invalid(format!(
                        "'{}' is not a secret ref",
                        reference.escape_default()
                    ))
                })?;
            if self.secret(project_id, id).await?.is_none() {
                return Err(SecretsError::Invalid(format!("secret {id} was not found")));
            }
            secrets.push((name, id));
        }
        if container.container_type == "certificate"
            && !secrets.iter().any(|(n, _)| n == "certificate")
        {
            return Err(SecretsError::Invalid(
                "a certificate container needs a 'certificate' secret".into(),
            ));
        }
        let meta = ContainerMeta {
            id: Uuid::new_v4(),
            project_id: project_id.to_owned(),
            name: container.name,
            container_type: container.container_type,
            secrets,
            created: now(),
            creator_id: creator_id.map(str::to_owned),
        };
        self.insert(DocumentKind::SecretContainer, meta.id, project_id, &meta)
            .await?;
        Ok(meta)
    }

    /// A container of `project_id`.
    pub async fn container(
        &self,
        project_id: &str,
        id: Uuid,
    ) -> Result<Option<ContainerMeta>, SecretsError> {
        Ok(self
            .owned(DocumentKind::SecretContainer, project_id, id)
            .await?
            .and_then(|d| serde_json::from_str(&d.body).ok()))
    }

    /// A container of any project, for a caller that decides about access itself.
    pub async fn find_container(&self, id: Uuid) -> Result<Option<ContainerMeta>, SecretsError> {
        Ok(self
            .store
            .get(DocumentKind::SecretContainer, &id.to_string())
            .await?
            .and_then(|d| serde_json::from_str(&d.body).ok()))
    }

    /// The project's containers, oldest first.
    pub async fn containers(&self, project_id: &str) -> Result<Vec<ContainerMeta>, SecretsError> {
        let docs = self.list(DocumentKind::SecretContainer, project_id).await?;
        Ok(docs
            .iter()
            .filter_map(|d| serde_json::from_str(&d.body).ok())
            .collect())
    }

    /// Deletes a container (not its secrets); false when the project has no such container.
    pub async fn delete_container(&self, project_id: &str, id: Uuid) -> Result<bool, SecretsError> {
        self.delete(DocumentKind::SecretContainer, project_id, id)
            .await
    }

    async fn secret_body(
        &self,
        project_id: &str,
        id: Uuid,
    ) -> Result<Option<SecretBody>, SecretsError> {
        Ok(self
            .owned(DocumentKind::Secret, project_id, id)
            .await?
            .and_then(|d| serde_json::from_str(&d.body).ok()))
    }

    /// The document when it exists and belongs to `project_id` (another project's id is
    /// indistinguishable from a missing one).
    async fn owned(
        &self,
        kind: DocumentKind,
        project_id: &str,
        id: Uuid,
    ) -> Result<Option<Document>, SecretsError> {
        Ok(self
            .store
            .get(kind, &id.to_string())
            .await?
            .filter(|d| d.project_id.as_deref() == Some(project_id)))
    }

    async fn list(
        &self,
        kind: DocumentKind,
        project_id: &str,
    ) -> Result<Vec<Document>, SecretsError> {
        Ok(self
            .store
            .list(&ListQuery {
                kind: Some(kind),
                project_id: Some(project_id.to_owned()),
                ..Default::default()
            })
            .await?)
    }

    async fn insert(
        &self,
        kind: DocumentKind,
        id: Uuid,
        project_id: &str,
        body: &impl Serialize,
    ) -> Result<(), SecretsError> {
        let body = serde_json::to_string(body)
            .map_err(|e| SecretsError::Invalid(format!("cannot encode: {e}")))?;
        let mut tx = self.store.begin().await?;
        tx.insert(&Document::new(
            kind,
            &id.to_string(),
            Some(project_id),
            body,
        ))
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn delete(
        &self,
        kind: DocumentKind,
        project_id: &str,
        id: Uuid,
    ) -> Result<bool, SecretsError> {
        if self.owned(kind, project_id, id).await?.is_none() {
            return Ok(false);
        }
        let mut tx = self.store.begin().await?;
        let gone = tx.delete(kind, &id.to_string()).await?;
        tx.commit().await?;
        Ok(gone)
    }

    async fn payload_of(
        &self,
        project_id: &str,
        id: Uuid,
        reference: &str,
    ) -> Result<Vec<u8>, CertError> {
        match self.secret_payload(project_id, id).await {
            Ok(Some((_, bytes))) => Ok(bytes),
            Ok(None) => Err(not_found(reference)),
            Err(SecretsError::Store(e)) => Err(CertError::Store(e)),
            Err(SecretsError::Invalid(reason)) => Err(invalid(reference, reason)),
        }
    }
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn not_found(reference: &str) -> CertError {
    CertError::NotFound {
        reference: reference.to_owned(),
    }
}

fn invalid(reference: &str, reason: impl Into<String>) -> CertError {
    CertError::Invalid {
        reference: reference.to_owned(),
        reason: reason.into(),
    }
}

#[async_trait]
impl CertificateManager for LocalSecrets {
    async fn fetch(
        &self,
        project_id: &str,
        reference: &str,
        usage: CertUsage,
    ) -> Result<SecretPem, CertError> {
        let parsed = Reference::parse(reference).ok_or_else(|| not_found(reference))?;
        let pem = match (parsed.kind, usage) {
            (ReferenceKind::Secret, CertUsage::Server | CertUsage::Client) => {
                let payload = self.payload_of(project_id, parsed.id, reference).await?;
                ServerBundle::from_payload(&payload)
                    .map_err(|r| invalid(reference, r))?
                    .to_pem()
            }
            (ReferenceKind::Secret, CertUsage::CaBundle) => {
                let payload = self.payload_of(project_id, parsed.id, reference).await?;
                bundle::ca_bundle_pem(&payload).map_err(|r| invalid(reference, r))?
            }
            (ReferenceKind::Secret, CertUsage::Crl) => {
                let payload = self.payload_of(project_id, parsed.id, reference).await?;
                bundle::crl_pem(&payload).map_err(|r| invalid(reference, r))?
            }
            (ReferenceKind::Container, CertUsage::Server | CertUsage::Client) => {
                let container = match self.container(project_id, parsed.id).await {
                    Ok(Some(c)) => c,
                    Ok(None) => return Err(not_found(reference)),
                    Err(SecretsError::Store(e)) => return Err(CertError::Store(e)),
                    Err(SecretsError::Invalid(r)) => return Err(invalid(reference, r)),
                };
                if container.container_type != "certificate" {
                    return Err(invalid(
                        reference,
                        "the container is not a certificate container",
                    ));
                }
                let part = |name: &str| {
                    container
                        .secrets
                        .iter()
                        .find(|(n, _)| n == name)
                        .map(|(_, id)| *id)
                };
                if part("private_key_passphrase").is_some() {
                    return Err(invalid(
                        reference,
                        "encrypted private keys (with a passphrase) are not supported",
                    ));
                }
                let cert_id = part("certificate")
                    .ok_or_else(|| invalid(reference, "no certificate secret"))?;
                let key_id = part("private_key")
                    .ok_or_else(|| invalid(reference, "no private_key secret"))?;
                let cert = self.payload_of(project_id, cert_id, reference).await?;
                let key = self.payload_of(project_id, key_id, reference).await?;
                let intermediates = match part("intermediates") {
                    Some(id) => Some(self.payload_of(project_id, id, reference).await?),
                    None => None,
                };
                ServerBundle::from_parts(&cert, &key, intermediates.as_deref())
                    .map_err(|r| invalid(reference, r))?
                    .to_pem()
            }
            (ReferenceKind::Container, CertUsage::CaBundle | CertUsage::Crl) => {
                return Err(invalid(
                    reference,
                    "CA bundles and CRLs are secrets, not containers",
                ));
            }
        };
        Ok(SecretPem::new(pem))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::tests::leaf;

    async fn secrets() -> (LocalSecrets, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("klb.db").display());
        (LocalSecrets::new(Store::open(&url).await.unwrap()), dir)
    }

    fn text(payload: &str) -> NewSecret {
        NewSecret {
            name: Some("tls".into()),
            secret_type: "opaque".into(),
            content_type: "text/plain".into(),
            payload: payload.as_bytes().to_vec(),
        }
    }

    fn secret_ref(id: Uuid) -> String {
        format!("http://198.18.0.1:9876/v1/secrets/{id}")
    }

    #[tokio::test]
    async fn a_pem_secret_is_delivered_to_its_project_only() {
        let (s, _dir) = secrets().await;
        let (_, cert, key) = leaf("a.example");
        let meta = s
            .create_secret("p1", text(&format!("{cert}{key}")))
            .await
            .unwrap();
        let r = secret_ref(meta.id);
        let pem = s.fetch("p1", &r, CertUsage::Server).await.unwrap();
        assert!(pem.expose().contains("PRIVATE KEY"));
        assert!(matches!(
            s.fetch("p2", &r, CertUsage::Server).await,
            Err(CertError::NotFound { .. })
        ));
        assert!(s.check("p2", &r, CertUsage::Server).await.is_err());
        assert_eq!(s.secrets("p1").await.unwrap().len(), 1);
        assert!(s.secrets("p2").await.unwrap().is_empty());
        assert!(
            !s.delete_secret("p2", meta.id).await.unwrap(),
            "other project"
        );
        assert!(s.delete_secret("p1", meta.id).await.unwrap());
        assert!(matches!(
            s.fetch("p1", &r, CertUsage::Server).await,
            Err(CertError::NotFound { .. })
        ));
    }

    #[tokio::test]
    async fn usage_decides_what_the_material_must_be() {
        let (s, _dir) = secrets().await;
        let (ca, cert, key) = leaf("a.example");
        let ca_ref = secret_ref(s.create_secret("p1", text(&ca)).await.unwrap().id);
        let bundle_ref = secret_ref(
            s.create_secret("p1", text(&format!("{cert}{key}")))
                .await
                .unwrap()
                .id,
        );
        assert!(s.check("p1", &ca_ref, CertUsage::CaBundle).await.is_ok());
        let e = s.check("p1", &ca_ref, CertUsage::Server).await.unwrap_err();
        assert!(e.to_string().contains("no private key"), "{e}");
        let e = s
            .check("p1", &bundle_ref, CertUsage::CaBundle)
            .await
            .unwrap_err();
        assert!(
            e.to_string().contains("must not contain a private key"),
            "{e}"
        );
        assert!(s.check("p1", &ca_ref, CertUsage::Crl).await.is_err());
        assert!(matches!(
            s.check("p1", "not a ref", CertUsage::Server).await,
            Err(CertError::NotFound { .. })
        ));
    }

    #[tokio::test]
    async fn certificate_containers_assemble_their_parts() {
        let (s, _dir) = secrets().await;
        let (ca, cert, key) = leaf("a.example");
        let c = s.create_secret("p1", text(&cert)).await.unwrap();
        let k = s.create_secret("p1", text(&key)).await.unwrap();
        let i = s.create_secret("p1", text(&ca)).await.unwrap();
        let container = s
            .create_container(
                "p1",
                NewContainer {
                    name: Some("tls".into()),
                    container_type: "certificate".into(),
                    secret_refs: vec![
                        ("certificate".into(), secret_ref(c.id)),
                        ("private_key".into(), secret_ref(k.id)),
                        ("intermediates".into(), secret_ref(i.id)),
                    ],
                },
            )
            .await
            .unwrap();
        let r = format!("http://kms/v1/containers/{}", container.id);
        let pem = s.fetch("p1", &r, CertUsage::Server).await.unwrap();
        assert_eq!(pem.expose().matches("BEGIN CERTIFICATE").count(), 2);
        // Refs to secrets of another project are refused when the container is made.
        let e = s
            .create_container(
                "p2",
                NewContainer {
                    name: None,
                    container_type: "certificate".into(),
                    secret_refs: vec![("certificate".into(), secret_ref(c.id))],
                },
            )
            .await
            .unwrap_err();
        assert!(e.to_string().contains("not found"), "{e}");
        // A container whose key secret is gone cannot be fetched.
        assert!(s.delete_secret("p1", k.id).await.unwrap());
        assert!(matches!(
            s.fetch("p1", &r, CertUsage::Server).await,
            Err(CertError::NotFound { .. })
        ));
    }

    #[tokio::test]
    async fn creators_are_recorded_and_older_documents_still_read() {
        let (s, _dir) = secrets().await;
        let meta = s
            .create_secret_by("p1", Some("alice-id"), text("x"))
            .await
            .unwrap();
        assert_eq!(meta.creator_id.as_deref(), Some("alice-id"));
        let found = s.find_secret(meta.id).await.unwrap().unwrap();
        assert_eq!(found, meta, "found by id whatever the caller's project");
        let c = s
            .create_container_by(
                "p1",
                Some("alice-id"),
                NewContainer {
                    name: None,
                    container_type: "generic".into(),
                    secret_refs: vec![("any".into(), secret_ref(meta.id))],
                },
            )
            .await
            .unwrap();
        let found = s.find_container(c.id).await.unwrap().unwrap();
        assert_eq!(found.creator_id.as_deref(), Some("alice-id"));
        assert!(s.find_secret(Uuid::new_v4()).await.unwrap().is_none());
        // Documents written before creators were recorded have no `creator_id` key.
        let old = Uuid::new_v4();
        let body = serde_json::json!({
            "id": old, "project_id": "p1", "name": null, "secret_type": "opaque",
            "content_type": "text/plain", "created": "2025-01-01T00:00:00Z",
            "payload": base64::engine::general_purpose::STANDARD.encode("old"),
        });
        s.insert(DocumentKind::Secret, old, "p1", &body)
            .await
            .unwrap();
        let meta = s.secret("p1", old).await.unwrap().expect("readable");
        assert_eq!(meta.creator_id, None);
        assert_eq!(
            s.secret_payload("p1", old).await.unwrap().unwrap().1,
            b"old".to_vec()
        );
        let cold = Uuid::new_v4();
        let body = serde_json::json!({
            "id": cold, "project_id": "p1", "name": null, "container_type": "generic",
            "secrets": [], "created": "2025-01-01T00:00:00Z",
        });
        s.insert(DocumentKind::SecretContainer, cold, "p1", &body)
            .await
            .unwrap();
        assert_eq!(
            s.container("p1", cold).await.unwrap().unwrap().creator_id,
            None
        );
    }

    #[tokio::test]
    async fn payload_limits() {
        let (s, _dir) = secrets().await;
        assert!(s.create_secret("p1", text("")).await.is_err());
        let big = "a".repeat(MAX_PAYLOAD_BYTES + 1);
        assert!(s.create_secret("p1", text(&big)).await.is_err());
    }
}
