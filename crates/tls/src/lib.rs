//! klb's own certificate authority and the rustls configurations of both ends of the agent API
//! (used by `klb-agent` on the LB VM, and by `klb-agent-client` and the control plane).
//!
//! The control plane keeps one CA (`ca.crt` + `ca.key` in a directory it owns). It issues a
//! *server* certificate per LB VM at boot (IP SANs = the VM's management addresses, so the
//! control plane can reach the agent by address) and one *client* certificate for itself. The
//! control plane accepts only agents whose certificate chains to that CA ([`client_config`]).
//!
//! Who may call an agent: chaining to klb's CA is not enough, because every LB VM holds a
//! certificate from that CA and VM certificates carry clientAuth too (the agent presents its
//! own certificate when it posts heartbeats to an https receiver, and VMs booted by earlier
//! releases hold such certificates anyway, so nothing may rely on its absence). The agent
//! ([`server_config`]) therefore accepts only the control plane's identity: a certificate that
//! chains to the CA, names [`CONTROL_PLANE_IDENTITY`] in a DNS SAN, and is *not* valid for
//! serverAuth (it lists clientAuth and not serverAuth). [`Ca::issue`] gives that SAN to
//! [`CertKind::Client`] certificates only and refuses a server certificate of that name, so a
//! VM's certificate, whatever its name, is refused during the handshake by every other VM's
//! agent. Why a certificate profile checked by the agent rather than an intermediate CA for
//! clients: the CA existing deployments keep on disk has `pathLenConstraint = 0`, so it cannot
//! sign an intermediate CA that issues leaves; the profile works with that CA unchanged (the
//! control plane issues its client certificate afresh at every start).
//!
//! Keys are ECDSA P-256 (rcgen's default). Private keys are written with mode 0600 and are
//! never printed: [`SecretKeyPem`] redacts itself in `Debug`.

#![warn(missing_docs)]
#![forbid(unsafe_code)]

use std::fmt;
use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore,
    ServerConfig, SignatureScheme,
};

/// File name of the CA certificate inside a CA directory.
pub const CA_CERT_FILE: &str = "ca.crt";
/// File name of the CA private key inside a CA directory.
pub const CA_KEY_FILE: &str = "ca.key";

/// The control plane's identity: the DNS SAN every [`CertKind::Client`] certificate carries and
/// the only client identity an agent accepts ([`server_config`]). No server certificate may
/// carry it.
pub const CONTROL_PLANE_IDENTITY: &str = "klb-control-plane";

/// Validity of the CA certificate, days.
const CA_VALIDITY_DAYS: i64 = 3650;
/// Validity of leaf certificates, days (VMs are replaced long before that).
const LEAF_VALIDITY_DAYS: i64 = 825;

/// Errors of the CA and of building TLS configurations.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Reading or writing a file failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// `klb ca init` on a directory that already holds a CA.
    #[error("{0} already exists; refusing to overwrite a CA")]
    CaExists(PathBuf),
    /// A leaf name that cannot be a file name.
    #[error("invalid certificate name {0:?}: use letters, digits, '.', '-' and '_' only")]
    InvalidName(String),
    /// A server certificate may not take the control plane's identity.
    #[error("{0:?} is the control plane's identity; a server certificate may not carry it")]
    ReservedName(String),
    /// A server certificate needs at least one IP SAN or a DNS-valid name.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// PEM input did not contain what was expected.
    #[error("invalid PEM ({what}): {detail}")]
    Pem {
        /// Which input.
        what: &'static str,
        /// Parser message.
        detail: String,
    },
    /// rustls refused the material.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client-certificate verifier could not be built.
    #[error("client verifier: {0}")]
    Verifier(String),
}

/// What a leaf certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertKind {
    /// TLS server (the agent): extended key usages serverAuth and clientAuth (for heartbeats
    /// over https), SANs from the IPs and the name. Agents refuse it as a client certificate.
    Server,
    /// The control plane's client identity: extended key usage clientAuth only and the DNS SAN
    /// [`CONTROL_PLANE_IDENTITY`] (the name is the common name), the only client certificate
    /// agents accept.
    Client,
}

/// A PEM private key. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretKeyPem(String);

impl SecretKeyPem {
    /// Wraps PEM text.
    pub fn new(pem: impl Into<String>) -> Self {
        SecretKeyPem(pem.into())
    }

    /// The PEM text, to write it to a 0600 file or hand it to rustls. Do not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretKeyPem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKeyPem(<redacted>)")
    }
}

/// A certificate and its private key, PEM encoded.
#[derive(Debug, Clone)]
pub struct IssuedCert {
    /// The leaf certificate.
    pub cert_pem: String,
    /// Its private key.
    pub key_pem: SecretKeyPem,
}

/// Paths of a certificate and key written to disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertPaths {
    /// `NAME.crt`.
    pub cert: PathBuf,
    /// `NAME.key` (mode 0600).
    pub key: PathBuf,
}

/// klb's certificate authority, loaded in memory.
pub struct Ca {
    cert_pem: String,
    key: KeyPair,
}

impl fmt::Debug for Ca {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}

impl Ca {
    /// Generates a new self-signed CA named `common_name`.
    pub fn generate(common_name: &str) -> Result<Ca, TlsError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params
            .distinguished_name
            .push(DnType::OrganizationName, "klb");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        set_validity(&mut params, CA_VALIDITY_DAYS);
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(Ca {
            cert_pem: cert.pem(),
            key,
        })
    }

    /// Loads a CA from PEM text.
    pub fn from_pem(cert_pem: &str, key_pem: &SecretKeyPem) -> Result<Ca, TlsError> {
        let key = KeyPair::from_pem(key_pem.expose()).map_err(|e| TlsError::Pem {
            what: "CA key",
            detail: e.to_string(),
        })?;
        // Parse once now so a broken certificate fails here, not at the first issue.
        Issuer::from_ca_cert_pem(cert_pem, &key).map_err(|e| TlsError::Pem {
            what: "CA certificate",
            detail: e.to_string(),
        })?;
        Ok(Ca {
            cert_pem: cert_pem.to_owned(),
            key,
        })
    }

    /// Loads `ca.crt` and `ca.key` from `dir`.
    pub fn load(dir: &Path) -> Result<Ca, TlsError> {
        let cert = read(&dir.join(CA_CERT_FILE))?;
        let key = SecretKeyPem::new(read(&dir.join(CA_KEY_FILE))?);
        Ca::from_pem(&cert, &key)
    }

    /// Writes `ca.crt` (0644) and `ca.key` (0600) into `dir` (created if missing). Refuses to
    /// overwrite an existing CA: replacing it would orphan every issued certificate.
    pub fn save(&self, dir: &Path) -> Result<CertPaths, TlsError> {
        fs::create_dir_all(dir).map_err(|source| TlsError::Io {
            op: "create directory",
            path: dir.to_owned(),
            source,
        })?;
        let paths = CertPaths {
            cert: dir.join(CA_CERT_FILE),
            key: dir.join(CA_KEY_FILE),
        };
        for p in [&paths.cert, &paths.key] {
            if p.exists() {
                return Err(TlsError::CaExists(p.clone()));
            }
        }
        write_new(&paths.key, self.key.serialize_pem().as_bytes(), 0o600)?;
        write_new(&paths.cert, self.cert_pem.as_bytes(), 0o644)?;
        Ok(paths)
    }

    /// The CA certificate (PEM), the trust anchor both ends load.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Issues a leaf certificate for `name`. Server certificates carry `ips` as IP SANs (and
    /// `name` as a DNS SAN when it is a valid DNS name); client certificates carry `name` as
    /// common name and [`CONTROL_PLANE_IDENTITY`] as their only SAN.
    pub fn issue(
        &self,
        name: &str,
        kind: CertKind,
        ips: &[IpAddr],
    ) -> Result<IssuedCert, TlsError> {
        validate_name(name)?;
        if kind == CertKind::Server && name.eq_ignore_ascii_case(CONTROL_PLANE_IDENTITY) {
            return Err(TlsError::ReservedName(name.to_owned()));
        }
        let issuer =
            Issuer::from_ca_cert_pem(&self.cert_pem, &self.key).map_err(|e| TlsError::Pem {
                what: "CA certificate",
                detail: e.to_string(),
            })?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params
            .distinguished_name
            .push(DnType::OrganizationName, "klb");
        params.is_ca = IsCa::ExplicitNoCa;
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        match kind {
            CertKind::Server => {
                // clientAuth too: the agent presents this certificate when it posts
                // heartbeats to an https receiver.
                params.extended_key_usages = vec![
                    ExtendedKeyUsagePurpose::ServerAuth,
                    ExtendedKeyUsagePurpose::ClientAuth,
                ];
                params.subject_alt_names = ips.iter().map(|ip| SanType::IpAddress(*ip)).collect();
                if let Ok(dns) = rcgen::string::Ia5String::try_from(name)
                    && name.contains(|c: char| c.is_ascii_alphabetic())
                {
                    params.subject_alt_names.push(SanType::DnsName(dns));
                }
            }
            CertKind::Client => {
                params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
                params.subject_alt_names = vec![SanType::DnsName(
                    rcgen::string::Ia5String::try_from(CONTROL_PLANE_IDENTITY)?,
                )];
            }
        }
        set_validity(&mut params, LEAF_VALIDITY_DAYS);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &issuer)?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            key_pem: SecretKeyPem::new(key.serialize_pem()),
        })
    }
}

/// `klb ca init`: generates a CA and writes it into `dir`.
pub fn init_ca(dir: &Path, common_name: &str) -> Result<CertPaths, TlsError> {
    Ca::generate(common_name)?.save(dir)
}

/// `klb ca issue`: loads the CA from `dir`, issues a certificate and writes `NAME.crt` and
/// `NAME.key` (0600) next to it. Existing files of the same name are replaced (re-issue).
pub fn issue_to_dir(
    dir: &Path,
    name: &str,
    kind: CertKind,
    ips: &[IpAddr],
) -> Result<CertPaths, TlsError> {
    let ca = Ca::load(dir)?;
    let issued = ca.issue(name, kind, ips)?;
    let paths = CertPaths {
        cert: dir.join(format!("{name}.crt")),
        key: dir.join(format!("{name}.key")),
    };
    write_replace(&paths.key, issued.key_pem.expose().as_bytes(), 0o600)?;
    write_replace(&paths.cert, issued.cert_pem.as_bytes(), 0o644)?;
    Ok(paths)
}

/// The agent's TLS configuration: presents `cert_pem` and accepts only the control plane's
/// client certificate (see the module doc): it must chain to `ca_pem`, carry the DNS SAN
/// [`CONTROL_PLANE_IDENTITY`] and not be valid for serverAuth. Anything else (no certificate,
/// another CA, any LB VM's certificate) fails the handshake.
pub fn server_config(
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &SecretKeyPem,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = ControlPlaneOnly::new(ca_pem, &provider)?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_single_cert(certs(cert_pem, "certificate")?, private_key(key_pem)?)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The agent's client-certificate verifier: rustls' WebPKI verifier (chain to klb's CA,
/// validity, clientAuth if the certificate lists usages), then the control plane's identity.
#[derive(Debug)]
struct ControlPlaneOnly {
    chain: Arc<dyn ClientCertVerifier>,
    roots: Arc<RootCertStore>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ControlPlaneOnly {
    fn new(ca_pem: &str, provider: &Arc<CryptoProvider>) -> Result<Self, TlsError> {
        let roots = Arc::new(root_store(ca_pem)?);
        let chain = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| TlsError::Verifier(e.to_string()))?;
        Ok(ControlPlaneOnly {
            chain,
            roots,
            algorithms: provider.signature_verification_algorithms,
        })
    }

    /// The checks beyond the chain (which `chain` verified already).
    fn check_identity(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<(), rustls::Error> {
        let refuse = |why: &'static str| {
            // Logged without the certificate: the reason is enough to diagnose a setup error.
            tracing::warn!(reason = why, "client certificate refused");
            Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ))
        };
        let cert = ParsedCertificate::try_from(end_entity)?;
        let identity = ServerName::try_from(CONTROL_PLANE_IDENTITY)
            .map_err(|_| rustls::Error::General("invalid control plane identity".into()))?;
        if rustls::client::verify_server_name(&cert, &identity).is_err() {
            return refuse("not the control plane's identity");
        }
        // A certificate valid for serverAuth (listing it, or listing no usages at all) is an
        // agent's, never the control plane's, whatever names it carries.
        if rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.algorithms.all,
        )
        .is_ok()
        {
            return refuse("a server certificate presented as a client certificate");
        }
        Ok(())
    }
}

impl ClientCertVerifier for ControlPlaneOnly {
    fn offer_client_auth(&self) -> bool {
        self.chain.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.chain.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.chain.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .chain
            .verify_client_cert(end_entity, intermediates, now)?;
        self.check_identity(end_entity, intermediates, now)?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.chain.supported_verify_schemes()
    }
}

/// The control plane's TLS configuration towards agents: trusts only `ca_pem` and presents the
/// client certificate `cert_pem`.
pub fn client_config(
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &SecretKeyPem,
) -> Result<ClientConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(root_store(ca_pem)?)
        .with_client_auth_cert(certs(cert_pem, "certificate")?, private_key(key_pem)?)?;
    Ok(config)
}

fn root_store(ca_pem: &str) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certs(ca_pem, "CA certificate")? {
        roots.add(cert)?;
    }
    Ok(roots)
}

fn certs(pem: &str, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            what,
            detail: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            what,
            detail: "no CERTIFICATE block".into(),
        });
    }
    Ok(certs)
}

fn private_key(key_pem: &SecretKeyPem) -> Result<PrivateKeyDer<'static>, TlsError> {
    // The parser's message never contains key material.
    PrivateKeyDer::from_pem_slice(key_pem.expose().as_bytes()).map_err(|e| TlsError::Pem {
        what: "private key",
        detail: e.to_string(),
    })
}

fn validate_name(name: &str) -> Result<(), TlsError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if ok && name != "ca" {
        Ok(())
    } else {
        Err(TlsError::InvalidName(name.to_owned()))
    }
}

/// Valid from yesterday (clock skew between control plane and VMs) for `days` days.
fn set_validity(params: &mut CertificateParams, days: i64) {
    let today = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| (d.as_secs() / 86_400) as i64)
        .unwrap_or(0);
    let (y, m, d) = civil_from_days(today - 1);
    params.not_before = rcgen::date_time_ymd(y, m, d);
    let (y, m, d) = civil_from_days(today + days);
    params.not_after = rcgen::date_time_ymd(y, m, d);
}

/// Days since 1970-01-01 to (year, month, day), Howard Hinnant's algorithm.
fn civil_from_days(z: i64) -> (i32, u8, u8) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    (y as i32, m as u8, d as u8)
}

fn read(path: &Path) -> Result<String, TlsError> {
    fs::read_to_string(path).map_err(|source| TlsError::Io {
        op: "read",
        path: path.to_owned(),
        source,
    })
}

fn write_new(path: &Path, data: &[u8], mode: u32) -> Result<(), TlsError> {
    let io = |source| TlsError::Io {
        op: "write",
        path: path.to_owned(),
        source,
    };
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io)?;
    f.write_all(data).map_err(io)?;
    f.sync_all().map_err(io)
}

/// Writes via a temporary file and rename, so a reader never sees half a key and the mode is
/// right from the first byte.
fn write_replace(path: &Path, data: &[u8], mode: u32) -> Result<(), TlsError> {
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    write_new(&tmp, data, mode)?;
    fs::rename(&tmp, path).map_err(|source| TlsError::Io {
        op: "rename",
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
    }

    #[test]
    fn names_are_checked() {
        for bad in ["", "../x", "a/b", "ca", ".hidden", "a b"] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
        validate_name("lb-vm_1.example").unwrap();
    }

    #[test]
    fn init_and_issue_write_private_keys_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let ca = init_ca(dir.path(), "klb test CA").unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&ca.key), 0o600);
        assert!(matches!(
            init_ca(dir.path(), "again"),
            Err(TlsError::CaExists(_))
        ));
        let leaf = issue_to_dir(
            dir.path(),
            "vm1",
            CertKind::Server,
            &["198.18.0.2".parse().unwrap()],
        )
        .unwrap();
        assert_eq!(mode(&leaf.key), 0o600);
        let pem = fs::read_to_string(&leaf.cert).unwrap();
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));
        // The issued pair builds a server config against the same CA.
        let ca_pem = fs::read_to_string(&ca.cert).unwrap();
        let key = SecretKeyPem::new(fs::read_to_string(&leaf.key).unwrap());
        server_config(&ca_pem, &pem, &key).unwrap();
        assert!(!format!("{key:?}").contains("PRIVATE"));
    }

    /// What the agent's verifier says about a certificate presented as a client certificate.
    fn verdict(verifier: &ControlPlaneOnly, cert_pem: &str) -> Result<(), rustls::Error> {
        let der = certs(cert_pem, "certificate").unwrap().remove(0);
        verifier
            .verify_client_cert(&der, &[], UnixTime::now())
            .map(|_| ())
    }

    #[test]
    fn agents_accept_only_the_control_plane_identity() {
        let ca = Ca::generate("klb test CA").unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verifier = ControlPlaneOnly::new(ca.cert_pem(), &provider).unwrap();
        let ip: IpAddr = "198.18.0.3".parse().unwrap();
        let plane = ca
            .issue(CONTROL_PLANE_IDENTITY, CertKind::Client, &[])
            .unwrap();
        verdict(&verifier, &plane.cert_pem).unwrap();
        // Any client certificate from the CA is a control plane's (one per node, say).
        let node2 = ca.issue("klb-serve-2", CertKind::Client, &[]).unwrap();
        verdict(&verifier, &node2.cert_pem).unwrap();
        // Another LB VM's certificate chains to the CA and carries clientAuth: refused.
        let vm = ca.issue("lb-vm-2", CertKind::Server, &[ip]).unwrap();
        assert!(verdict(&verifier, &vm.cert_pem).is_err());
        // The right identity from another CA: refused.
        let foreign = Ca::generate("other CA")
            .unwrap()
            .issue(CONTROL_PLANE_IDENTITY, CertKind::Client, &[])
            .unwrap();
        assert!(verdict(&verifier, &foreign.cert_pem).is_err());
        // No server certificate may take the identity ...
        assert!(matches!(
            ca.issue(CONTROL_PLANE_IDENTITY, CertKind::Server, &[ip]),
            Err(TlsError::ReservedName(_))
        ));
        // ... and one made anyway (the CA's key used by hand) is refused: valid for serverAuth.
        let forged = leaf_with(
            &ca,
            &[
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        );
        assert!(verdict(&verifier, &forged).is_err());
        // So is one listing no extended key usage at all (valid for anything).
        assert!(verdict(&verifier, &leaf_with(&ca, &[])).is_err());
        // The profile as the agent wants it, made by hand, passes: the test helper is right.
        verdict(
            &verifier,
            &leaf_with(&ca, &[ExtendedKeyUsagePurpose::ClientAuth]),
        )
        .unwrap();
    }

    /// A leaf with the control plane's SAN and the given extended key usages, signed by `ca`.
    fn leaf_with(ca: &Ca, usages: &[ExtendedKeyUsagePurpose]) -> String {
        let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, &ca.key).unwrap();
        let mut params = CertificateParams::new(vec![CONTROL_PLANE_IDENTITY.to_owned()]).unwrap();
        params.use_authority_key_identifier_extension = true;
        params.extended_key_usages = usages.to_vec();
        set_validity(&mut params, 1);
        let key = KeyPair::generate().unwrap();
        params.signed_by(&key, &issuer).unwrap().pem()
    }
}
