//! Parsing and checking TLS material, and writing it back as the PEM text HAProxy loads.
//!
//! Accepted: PEM (certificates, one private key in PKCS#8, PKCS#1 or SEC1 form, CRLs) and
//! PKCS#12 with an empty password (what Octavia's docs tell tenants to store in Barbican).
//! Error messages name what is missing or wrong, never the material.

use base64::Engine as _;
use p12_keystore::{KeyStore, Pkcs12ImportPolicy};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};

/// A certificate chain with the private key of its first certificate.
pub struct ServerBundle {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl std::fmt::Debug for ServerBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerBundle")
            .field("certificates", &self.chain.len())
            .field("key", &"<redacted>")
            .finish()
    }
}

impl ServerBundle {
    /// Reads one payload: a PEM bundle (certificates and key) or a PKCS#12 archive.
    pub fn from_payload(payload: &[u8]) -> Result<ServerBundle, String> {
        if looks_like_pem(payload) {
            let chain = certificates(payload)?;
            let key = private_key(payload)?;
            ServerBundle::checked(chain, key)
        } else {
            ServerBundle::from_pkcs12(payload)
        }
    }

    /// Assembles a Barbican certificate container's parts (each PEM).
    pub fn from_parts(
        certificate: &[u8],
        key: &[u8],
        intermediates: Option<&[u8]>,
    ) -> Result<ServerBundle, String> {
        let mut chain = certificates(certificate)?;
        chain.truncate(1);
        if let Some(more) = intermediates {
            chain.extend(certificates(more)?);
        }
        ServerBundle::checked(chain, private_key(key)?)
    }

    /// Reads a PKCS#12 archive protected by the empty password.
    pub fn from_pkcs12(der: &[u8]) -> Result<ServerBundle, String> {
        let store = KeyStore::from_pkcs12(der, "", Pkcs12ImportPolicy::Strict).map_err(|_| {
            "not a PEM bundle nor a PKCS#12 archive with an empty password".to_owned()
        })?;
        let (_, keychain) = store
            .private_key_chain()
            .ok_or("the PKCS#12 archive holds no private key with its certificate")?;
        let chain = keychain
            .certs()
            .iter()
            .map(|c| CertificateDer::from(c.as_der().to_vec()))
            .collect();
        let key = PrivateKeyDer::try_from(keychain.key().as_der().to_vec())
            .map_err(|_| "the PKCS#12 private key cannot be read".to_owned())?;
        ServerBundle::checked(chain, key)
    }

    fn checked(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<ServerBundle, String> {
        if chain.is_empty() {
            return Err("no certificate found".into());
        }
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        rustls::sign::CertifiedKey::from_der(chain.clone(), key.clone_key(), &provider).map_err(
            |e| match e {
                rustls::Error::InconsistentKeys(_) => {
                    "the private key does not belong to the first certificate".to_owned()
                }
                _ => "the private key or certificate cannot be used for TLS".to_owned(),
            },
        )?;
        Ok(ServerBundle { chain, key })
    }

    /// Number of certificates (leaf first, then intermediates).
    pub fn chain_len(&self) -> usize {
        self.chain.len()
    }

    /// PEM text: the chain, leaf first, then the key; the form HAProxy's `crt` loads.
    pub fn to_pem(&self) -> String {
        let mut out = String::new();
        for c in &self.chain {
            out.push_str(&pem("CERTIFICATE", c.as_ref()));
        }
        let label = match &self.key {
            PrivateKeyDer::Pkcs1(_) => "RSA PRIVATE KEY",
            PrivateKeyDer::Sec1(_) => "EC PRIVATE KEY",
            _ => "PRIVATE KEY",
        };
        out.push_str(&pem(label, self.key.secret_der()));
        out
    }
}

/// A CA bundle (PEM certificates, or one DER certificate) as PEM text.
pub fn ca_bundle_pem(payload: &[u8]) -> Result<String, String> {
    let certs = if looks_like_pem(payload) {
        certificates(payload)?
    } else {
        vec![CertificateDer::from(payload.to_vec())]
    };
    for c in &certs {
        rustls::server::ParsedCertificate::try_from(c)
            .map_err(|_| "a CA certificate cannot be parsed".to_owned())?;
    }
    if private_key(payload).is_ok() {
        return Err("a CA bundle must not contain a private key".into());
    }
    Ok(certs
        .iter()
        .map(|c| pem("CERTIFICATE", c.as_ref()))
        .collect())
}

/// A certificate revocation list (PEM) as PEM text.
pub fn crl_pem(payload: &[u8]) -> Result<String, String> {
    let crls: Vec<CertificateRevocationListDer<'static>> =
        CertificateRevocationListDer::pem_slice_iter(payload)
            .collect::<Result<_, _>>()
            .map_err(|_| "the CRL is not valid PEM".to_owned())?;
    if crls.is_empty() {
        return Err("no X509 CRL found".into());
    }
    Ok(crls.iter().map(|c| pem("X509 CRL", c.as_ref())).collect())
}

fn looks_like_pem(payload: &[u8]) -> bool {
    payload.windows(11).any(|w| w == b"-----BEGIN ")
}

fn certificates(pem_text: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem_text)
        .collect::<Result<_, _>>()
        .map_err(|_| "the certificate is not valid PEM".to_owned())?;
    if chain.is_empty() {
        return Err("no certificate found".into());
    }
    Ok(chain)
}

fn private_key(pem_text: &[u8]) -> Result<PrivateKeyDer<'static>, String> {
    if pem_text.windows(9).any(|w| w == b"ENCRYPTED") {
        return Err("encrypted private keys (with a passphrase) are not supported".into());
    }
    PrivateKeyDer::from_pem_slice(pem_text).map_err(|_| "no private key found".to_owned())
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        // base64 output is ASCII.
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A CA and a leaf for `name` signed by it, as PEM: (ca_cert, leaf_cert, leaf_key).
    pub(crate) fn leaf(name: &str) -> (String, String, String) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let cert = params.signed_by(&key, &issuer).unwrap();
        (ca.pem(), cert.pem(), key.serialize_pem())
    }

    #[test]
    fn pem_bundle_round_trips_leaf_first_then_key() {
        let (ca, cert, key) = leaf("a.example");
        let b = ServerBundle::from_payload(format!("{key}{cert}{ca}").as_bytes()).unwrap();
        assert_eq!(b.chain_len(), 2);
        let out = b.to_pem();
        assert!(out.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(out.trim_end().ends_with("-----END PRIVATE KEY-----"));
        // Re-reading the output gives the same material.
        let again = ServerBundle::from_payload(out.as_bytes()).unwrap();
        assert_eq!(again.to_pem(), out);
        assert!(
            !format!("{b:?}").contains("BEGIN"),
            "Debug never shows material"
        );
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let (_, cert, _) = leaf("a.example");
        let (_, _, other_key) = leaf("b.example");
        let e = ServerBundle::from_payload(format!("{cert}{other_key}").as_bytes()).unwrap_err();
        assert!(e.contains("does not belong"), "{e}");
        let e = ServerBundle::from_parts(cert.as_bytes(), other_key.as_bytes(), None).unwrap_err();
        assert!(e.contains("does not belong"), "{e}");
    }

    #[test]
    fn missing_parts_are_named_without_material() {
        let (ca, cert, key) = leaf("a.example");
        assert_eq!(
            ServerBundle::from_payload(cert.as_bytes()).unwrap_err(),
            "no private key found"
        );
        assert_eq!(
            ServerBundle::from_payload(key.as_bytes()).unwrap_err(),
            "no certificate found"
        );
        let e = ServerBundle::from_payload(b"garbage").unwrap_err();
        assert!(e.contains("PKCS#12"), "{e}");
        let encrypted =
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n";
        let e = ServerBundle::from_payload(format!("{cert}{encrypted}").as_bytes()).unwrap_err();
        assert!(e.contains("passphrase"), "{e}");
        let msg = ca_bundle_pem(format!("{ca}{key}").as_bytes()).unwrap_err();
        assert!(!msg.contains("BEGIN"), "{msg}");
    }

    #[test]
    fn pkcs12_with_an_empty_password_is_read() {
        let (_, cert, key) = leaf("p12.example");
        let cert_der = CertificateDer::from_pem_slice(cert.as_bytes()).unwrap();
        let key_der = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
        let chain = p12_keystore::PrivateKeyChain::new(
            vec![1u8; 20],
            p12_keystore::PrivateKey::from_der(key_der.secret_der()).unwrap(),
            [p12_keystore::Certificate::from_der(cert_der.as_ref()).unwrap()],
        );
        let mut store = KeyStore::new();
        store.add_entry("tls", p12_keystore::KeyStoreEntry::PrivateKeyChain(chain));
        let der = store.writer("").write().unwrap();
        let b = ServerBundle::from_payload(&der).unwrap();
        assert_eq!(b.chain_len(), 1);
        assert!(b.to_pem().contains(cert.lines().nth(1).unwrap()));
    }

    /// What Octavia's docs tell tenants to run: `openssl pkcs12 -export ... -passout pass:`
    /// (OpenSSL 3 encrypts with AES-256-CBC and PBKDF2 by default).
    #[test]
    fn pkcs12_from_the_openssl_command_line_is_read() {
        if std::process::Command::new("openssl")
            .arg("version")
            .output()
            .is_err()
        {
            eprintln!("skipped: openssl is not installed");
            return;
        }
        let (_, cert, key) = leaf("cli.example");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("c.pem"), &cert).unwrap();
        std::fs::write(dir.path().join("k.pem"), &key).unwrap();
        let out = dir.path().join("b.p12");
        let status = std::process::Command::new("openssl")
            .args(["pkcs12", "-export", "-passout", "pass:", "-inkey"])
            .arg(dir.path().join("k.pem"))
            .arg("-in")
            .arg(dir.path().join("c.pem"))
            .arg("-out")
            .arg(&out)
            .status()
            .unwrap();
        assert!(status.success());
        let b = ServerBundle::from_payload(&std::fs::read(&out).unwrap()).unwrap();
        assert!(b.to_pem().contains(cert.lines().nth(1).unwrap()));
    }

    #[test]
    fn ca_bundles_and_crls() {
        let (ca, cert, _) = leaf("a.example");
        let out = ca_bundle_pem(format!("{ca}{cert}").as_bytes()).unwrap();
        assert_eq!(out.matches("BEGIN CERTIFICATE").count(), 2);
        assert!(ca_bundle_pem(b"").is_err());
        assert!(
            crl_pem(ca.as_bytes()).is_err(),
            "a certificate is not a CRL"
        );
    }
}
