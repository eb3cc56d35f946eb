//! The control plane's side of heartbeats: each LB VM's key, and the check run on every
//! report received.
//!
//! Keys are per VM: [`HeartbeatKeys::for_vm`] derives each VM's key from one master secret and
//! the VM's identity (load balancer id and VM id); the control plane hands it to that VM alone,
//! inside the desired state it pushes over mTLS. [`verify_heartbeat`] checks every report with
//! the key of the VM the report claims to come from, so a VM's key cannot sign for another VM
//! (of its own load balancer or another), and a restarted control plane derives the same keys
//! without storing any. The signature scheme itself is `klb_proto::signature`.
//!
//! The signature covers `seq` and `sent_at` inside the body, so the receiver can drop stale
//! reports ([`verify_heartbeat`] checks the age) and replays ([`ReplayGuard`] keeps the last
//! sequence number per VM, fed only with verified reports).

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, SystemTime};

use klb_proto::signature::{HmacKey, MAX_CLOCK_SKEW, sign, unix_ms, verify};
use klb_proto::{Heartbeat, HeartbeatKey};

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
        let mut input = b"klb heartbeat key v1".to_vec();
        for part in [lb_id, vm_id] {
            input.extend_from_slice(&(part.len() as u64).to_be_bytes());
            input.extend_from_slice(part.as_bytes());
        }
        HeartbeatKey::new(sign(&self.master, &input))
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
    let hb: Heartbeat =
        serde_json::from_slice(body).map_err(|e| HeartbeatError::Malformed(e.to_string()))?;
    let key = HmacKey::from(&keys.for_vm(&hb.load_balancer_id, &hb.vm_id));
    if !verify(&key, body, signature) {
        return Err(HeartbeatError::BadSignature);
    }
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

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use klb_proto::Stats;

    use super::*;

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
}
