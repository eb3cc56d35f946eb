//! Signed heartbeats: the agent's periodic report to the control plane, and the check the
//! control plane runs on each one it receives.
//!
//! Wire format: `POST <heartbeat_url>` with the JSON [`Heartbeat`] as body and the header
//! [`SIGNATURE_HEADER`] = lowercase hex HMAC-SHA256 of the exact body bytes under the sending
//! VM's own key. Keys are per VM: the control plane derives each VM's key from one master
//! secret and the VM's identity ([`HeartbeatKeys::for_vm`]: load balancer id and VM id) and
//! hands it to that VM alone, inside the desired state it pushes over mTLS. The receiver
//! verifies every report with the key of the VM the report claims to come from, so a VM's key
//! cannot sign for another VM (of its own load balancer or another), and a restarted control
//! plane derives the same keys without storing any.
//!
//! The signature covers `seq` and `sent_at` inside the body, so the receiver can drop stale
//! reports ([`verify_heartbeat`] checks the age) and replays ([`ReplayGuard`] keeps the last
//! sequence number per VM, fed only with verified reports). `seq` starts at the agent's start
//! time in milliseconds and then counts up, so it keeps increasing across agent restarts without
//! any persisted state.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use klb_proto::{Heartbeat, HeartbeatKey};
use sha2::Sha256;
use tokio::sync::watch;

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

/// The control plane's master secret, from which every VM's heartbeat key is derived. `Debug`
/// never shows it.
#[derive(Clone)]
pub struct HeartbeatKeys {
    master: HmacKey,
}

impl HeartbeatKeys {
    /// Keys derived from `master` (the control plane's `heartbeat.key`).
    pub fn new(master: impl AsRef<[u8]>) -> Self {
        HeartbeatKeys {
            master: HmacKey::new(master),
        }
    }

    /// The key of VM `vm_id` of load balancer `lb_id`: hex HMAC-SHA256 under the master secret
    /// of a label and both ids, each length-prefixed so no two identities share an input.
    pub fn for_vm(&self, lb_id: &str, vm_id: &str) -> HeartbeatKey {
        let mut mac = self.master.mac();
        mac.update(b"klb heartbeat key v1");
        for part in [lb_id, vm_id] {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part.as_bytes());
        }
        HeartbeatKey::new(to_hex(&mac.finalize().into_bytes()))
    }
}

impl fmt::Debug for HeartbeatKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HeartbeatKeys(<redacted>)")
    }
}

/// Why a heartbeat was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeartbeatError {
    /// Missing, malformed or wrong signature.
    #[error("bad heartbeat signature")]
    BadSignature,
    /// The body is not a heartbeat.
    #[error("malformed heartbeat: {0}")]
    Malformed(String),
    /// Older than the allowed age (ms).
    #[error("stale heartbeat: sent {age_ms} ms ago (max {max_ms} ms)")]
    Stale {
        /// Age of the report.
        age_ms: u64,
        /// Allowed age.
        max_ms: u64,
    },
    /// Sent in the future beyond [`MAX_CLOCK_SKEW`].
    #[error("heartbeat from the future ({ahead_ms} ms ahead)")]
    FromFuture {
        /// How far ahead.
        ahead_ms: u64,
    },
    /// Sequence number not above the last accepted one for this VM.
    #[error("replayed heartbeat: seq {seq} <= last {last}")]
    Replayed {
        /// Received sequence number.
        seq: u64,
        /// Last accepted one.
        last: u64,
    },
}

/// Signs `body`: lowercase hex HMAC-SHA256.
pub fn sign(key: &HmacKey, body: &[u8]) -> String {
    let mut mac = key.mac();
    mac.update(body);
    to_hex(&mac.finalize().into_bytes())
}

/// Verifies a received heartbeat: parses it to learn which VM it claims to come from, checks
/// the signature (constant time) with that VM's key from `keys`, then checks that `sent_at` is
/// not older than `max_age` nor more than [`MAX_CLOCK_SKEW`] ahead of `now`. Nothing of an
/// unverified body is kept. Replay protection across reports is [`ReplayGuard`]'s job, fed
/// only with what this returns.
pub fn verify_heartbeat(
    keys: &HeartbeatKeys,
    body: &[u8],
    signature: &str,
    now: SystemTime,
    max_age: Duration,
) -> Result<Heartbeat, HeartbeatError> {
    let sig = from_hex(signature.trim()).ok_or(HeartbeatError::BadSignature)?;
    let hb: Heartbeat =
        serde_json::from_slice(body).map_err(|e| HeartbeatError::Malformed(e.to_string()))?;
    let key = HmacKey::from(&keys.for_vm(&hb.load_balancer_id, &hb.vm_id));
    let mut mac = key.mac();
    mac.update(body);
    mac.verify_slice(&sig)
        .map_err(|_| HeartbeatError::BadSignature)?;
    let now_ms = unix_ms(now);
    if hb.sent_at > now_ms {
        let ahead_ms = hb.sent_at - now_ms;
        if ahead_ms > MAX_CLOCK_SKEW.as_millis() as u64 {
            return Err(HeartbeatError::FromFuture { ahead_ms });
        }
    } else {
        let age_ms = now_ms - hb.sent_at;
        let max_ms = max_age.as_millis() as u64;
        if age_ms > max_ms {
            return Err(HeartbeatError::Stale { age_ms, max_ms });
        }
    }
    Ok(hb)
}

/// Last accepted sequence number per VM id; rejects reports that do not increase it. Feed it
/// only reports [`verify_heartbeat`] accepted: then only a VM's own key can move its entry. One
/// per receiver process (a restarted receiver accepts the next report of each VM, which is fine
/// because [`verify_heartbeat`] already bounds the age).
#[derive(Debug, Default)]
pub struct ReplayGuard {
    last: HashMap<String, u64>,
}

impl ReplayGuard {
    /// Records `hb` if its `seq` is above the last one from the same VM.
    pub fn check(&mut self, hb: &Heartbeat) -> Result<(), HeartbeatError> {
        match self.last.get_mut(&hb.vm_id) {
            Some(last) if hb.seq <= *last => Err(HeartbeatError::Replayed {
                seq: hb.seq,
                last: *last,
            }),
            Some(last) => {
                *last = hb.seq;
                Ok(())
            }
            None => {
                self.last.insert(hb.vm_id.clone(), hb.seq);
                Ok(())
            }
        }
    }

    /// Forgets a VM (deleted or replaced).
    pub fn forget(&mut self, vm_id: &str) {
        self.last.remove(vm_id);
    }
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// One report to send and the key to sign it with (this VM's, from its desired state).
#[derive(Debug, Clone)]
pub struct Report {
    /// The report; `seq` and `sent_at` are filled in by the sender.
    pub heartbeat: Heartbeat,
    /// This VM's heartbeat key.
    pub key: HmacKey,
}

/// Where the sender gets the report contents from (the agent's state).
#[async_trait::async_trait]
pub trait HeartbeatSource: Send + Sync {
    /// A fresh report, or `None` while there is nothing to report or no key to sign with.
    async fn heartbeat(&self) -> Option<Report>;
}

/// Periodic sender: every `interval`, signs and POSTs one heartbeat. Failures are logged and
/// the next tick tries again (the receiver's missed-heartbeat logic decides about failover).
pub struct HeartbeatSender {
    /// Receiver URL (the control plane's heartbeat endpoint).
    pub url: String,
    /// Period.
    pub interval: Duration,
    /// HTTP client (with the klb CA and client cert when the URL is https).
    pub client: reqwest::Client,
    /// Report contents.
    pub source: Arc<dyn HeartbeatSource>,
}

impl HeartbeatSender {
    /// Runs until `shutdown` turns true.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let seq = AtomicU64::new(unix_ms(SystemTime::now()));
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => {}
            }
            if *shutdown.borrow() {
                return;
            }
            let Some(Report {
                heartbeat: mut hb,
                key,
            }) = self.source.heartbeat().await
            else {
                continue; // Nothing to report yet (no state applied, or no key in it).
            };
            hb.seq = seq.fetch_add(1, Ordering::Relaxed);
            hb.sent_at = unix_ms(SystemTime::now());
            if let Err(e) = self.send(&hb, &key).await {
                tracing::warn!(url = %self.url, seq = hb.seq, error = %e, "heartbeat not delivered");
            }
        }
    }

    /// Signs `hb` with `key` and POSTs it.
    pub async fn send(&self, hb: &Heartbeat, key: &HmacKey) -> Result<(), reqwest::Error> {
        let body = serde_json::to_vec(hb).expect("heartbeat serializes");
        let sig = sign(key, &body);
        self.client
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, sig)
            .timeout(self.interval.max(Duration::from_secs(1)))
            .body(body)
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }
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
    use klb_proto::Stats;

    fn hb(seq: u64, sent_at: u64) -> Heartbeat {
        Heartbeat {
            load_balancer_id: "lb1".into(),
            vm_id: "vm1".into(),
            seq,
            sent_at,
            version: Some(4),
            haproxy_up: true,
            stats: Stats::default(),
        }
    }

    fn at(ms: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(ms)
    }

    const MAX: Duration = Duration::from_secs(30);

    fn keys() -> HeartbeatKeys {
        HeartbeatKeys::new("master-secret")
    }

    /// vm1's own key (the one `hb` claims).
    fn vm1_key() -> HmacKey {
        HmacKey::from(&keys().for_vm("lb1", "vm1"))
    }

    #[test]
    fn good_heartbeat_verifies() {
        let body = serde_json::to_vec(&hb(1, 1_000_000)).unwrap();
        let sig = sign(&vm1_key(), &body);
        assert_eq!(sig.len(), 64);
        let got = verify_heartbeat(&keys(), &body, &sig, at(1_000_500), MAX).unwrap();
        assert_eq!(got, hb(1, 1_000_000));
        // Uppercase hex is the same signature.
        verify_heartbeat(&keys(), &body, &sig.to_uppercase(), at(1_000_500), MAX).unwrap();
    }

    #[test]
    fn keys_are_per_vm_and_stable() {
        let k = keys();
        let key = k.for_vm("lb1", "vm1");
        assert_eq!(key.expose().len(), 64);
        // A restarted control plane derives the same key from the same master secret.
        assert_eq!(
            HeartbeatKeys::new("master-secret").for_vm("lb1", "vm1"),
            key
        );
        for other in [
            k.for_vm("lb1", "vm2"),
            k.for_vm("lb2", "vm1"),
            k.for_vm("lb1v", "m1"), // Same concatenation, other split.
            HeartbeatKeys::new("other-master").for_vm("lb1", "vm1"),
        ] {
            assert_ne!(other, key);
        }
        assert!(!format!("{k:?}").contains("master-secret"));
    }

    #[test]
    fn another_vms_key_cannot_sign_for_it() {
        // vm2's own key (valid for vm2) signing a report that claims to be vm1, of the same
        // load balancer or another one.
        let body = serde_json::to_vec(&hb(1, 1_000_000)).unwrap();
        for (lb, vm) in [("lb1", "vm2"), ("lb2", "vm1"), ("lb2", "vm2")] {
            let sig = sign(&HmacKey::from(&keys().for_vm(lb, vm)), &body);
            assert_eq!(
                verify_heartbeat(&keys(), &body, &sig, at(1_000_000), MAX),
                Err(HeartbeatError::BadSignature),
                "{lb}/{vm}"
            );
        }
        // The master secret itself is not a VM key either.
        let sig = sign(&HmacKey::new("master-secret"), &body);
        assert_eq!(
            verify_heartbeat(&keys(), &body, &sig, at(1_000_000), MAX),
            Err(HeartbeatError::BadSignature)
        );
    }

    #[test]
    fn bad_signatures_are_rejected() {
        let key = vm1_key();
        let body = serde_json::to_vec(&hb(1, 1_000_000)).unwrap();
        let sig = sign(&key, &body);
        let now = at(1_000_000);
        let check = |k: &HeartbeatKeys, b: &[u8], s: &str| verify_heartbeat(k, b, s, now, MAX);
        let key = keys();
        assert_eq!(
            check(&HeartbeatKeys::new("other"), &body, &sig),
            Err(HeartbeatError::BadSignature)
        );
        let mut tampered = body.clone();
        let pos = tampered.iter().position(|&c| c == b'4').unwrap();
        tampered[pos] = b'5'; // version 4 -> 5
        assert_eq!(
            check(&key, &tampered, &sig),
            Err(HeartbeatError::BadSignature)
        );
        assert_eq!(check(&key, &body, ""), Err(HeartbeatError::BadSignature));
        assert_eq!(check(&key, &body, "zz"), Err(HeartbeatError::BadSignature));
        assert_eq!(
            check(&key, &body, &sig[..62]),
            Err(HeartbeatError::BadSignature)
        );
        // A signed non-heartbeat is malformed, not accepted.
        let junk = b"{\"x\":1}";
        assert!(matches!(
            check(&key, junk, &sign(&vm1_key(), junk)),
            Err(HeartbeatError::Malformed(_))
        ));
    }

    #[test]
    fn stale_and_future_heartbeats_are_rejected() {
        let key = keys();
        let body = serde_json::to_vec(&hb(1, 1_000_000)).unwrap();
        let sig = sign(&vm1_key(), &body);
        assert_eq!(
            verify_heartbeat(&key, &body, &sig, at(1_031_000), MAX),
            Err(HeartbeatError::Stale {
                age_ms: 31_000,
                max_ms: 30_000
            })
        );
        assert_eq!(
            verify_heartbeat(&key, &body, &sig, at(990_000), MAX),
            Err(HeartbeatError::FromFuture { ahead_ms: 10_000 })
        );
        // Small skew ahead is tolerated.
        verify_heartbeat(&key, &body, &sig, at(999_000), MAX).unwrap();
    }

    #[test]
    fn replays_are_rejected_per_vm() {
        let mut guard = ReplayGuard::default();
        guard.check(&hb(5, 0)).unwrap();
        assert_eq!(
            guard.check(&hb(5, 0)),
            Err(HeartbeatError::Replayed { seq: 5, last: 5 })
        );
        assert!(guard.check(&hb(4, 0)).is_err());
        guard.check(&hb(6, 0)).unwrap();
        let mut other = hb(1, 0);
        other.vm_id = "vm2".into();
        guard.check(&other).unwrap();
        guard.forget("vm1");
        guard.check(&hb(1, 0)).unwrap();
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
