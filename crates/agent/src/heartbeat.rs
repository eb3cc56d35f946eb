//! The agent's periodic, signed report to the control plane. Wire format and signature:
//! `klb_proto::signature` (`POST <heartbeat_url>`, JSON [`Heartbeat`] body, hex HMAC-SHA256 of
//! the body under this VM's own key, which came with its desired state). `seq` starts at the
//! agent's start time in milliseconds and then counts up, so it keeps increasing across agent
//! restarts without any persisted state.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use klb_proto::Heartbeat;
pub use klb_proto::signature::{HmacKey, SIGNATURE_HEADER, sign, unix_ms};
use tokio::sync::watch;

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
