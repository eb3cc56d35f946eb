//! How a heartbeat is signed: the header [`SIGNATURE_HEADER`] carries the lowercase hex
//! HMAC-SHA256 of the exact body bytes under the sending VM's own key. The agent signs
//! ([`sign`]), the control plane checks ([`verify`]); which key belongs to which VM is the
//! control plane's business (`klb_agent_client::heartbeat`).

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::HeartbeatKey;

/// Header carrying the hex HMAC-SHA256 signature of the body.
pub const SIGNATURE_HEADER: &str = "x-klb-signature";

/// Heartbeats from further in the future than this are rejected (clock skew allowance).
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(5);

/// An HMAC key. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct HmacKey(Arc<[u8]>);

impl HmacKey {
    /// Wraps key bytes (any length; 32 random bytes recommended).
    pub fn new(key: impl AsRef<[u8]>) -> Self {
        HmacKey(Arc::from(key.as_ref()))
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC accepts keys of any length, so this cannot fail.
        <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0).expect("HMAC takes any key length")
    }
}

impl fmt::Debug for HmacKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HmacKey(<redacted>)")
    }
}

impl From<&HeartbeatKey> for HmacKey {
    fn from(key: &HeartbeatKey) -> Self {
        HmacKey::new(key.expose())
    }
}

/// Signs `body`: lowercase hex HMAC-SHA256.
pub fn sign(key: &HmacKey, body: &[u8]) -> String {
    let mut mac = key.mac();
    mac.update(body);
    to_hex(&mac.finalize().into_bytes())
}

/// Whether `signature` (hex, either case, surrounding blanks ignored) is `key`'s signature of
/// `body`; compared in constant time.
pub fn verify(key: &HmacKey, body: &[u8], signature: &str) -> bool {
    let Some(sig) = from_hex(signature.trim()) else {
        return false;
    };
    let mut mac = key.mac();
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn to_hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 15) as usize] as char);
    }
    s
}

fn from_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    s.as_bytes()
        .chunks(2)
        .map(|p| Some(digit(p[0])? << 4 | digit(p[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_only_under_their_key_and_body() {
        let key = HmacKey::new("k3y");
        let sig = sign(&key, b"body");
        assert_eq!(sig.len(), 64);
        assert!(verify(&key, b"body", &sig));
        assert!(verify(&key, b"body", &sig.to_uppercase()));
        assert!(!verify(&HmacKey::new("other"), b"body", &sig));
        assert!(!verify(&key, b"bodY", &sig));
        for bad in ["", "zz", &sig[..62]] {
            assert!(!verify(&key, b"body", bad), "{bad}");
        }
    }

    #[test]
    fn key_is_not_debug_printed() {
        assert!(!format!("{:?}", HmacKey::new("topsecret")).contains("topsecret"));
    }

    #[test]
    fn hex_round_trip() {
        assert_eq!(to_hex(&[0, 255, 16]), "00ff10");
        assert_eq!(from_hex("00ff10"), Some(vec![0, 255, 16]));
        assert_eq!(from_hex("0"), None);
    }
}
