//! Memory of the server under test: samples `/proc/<pid>/status` (VmRSS, VmHWM).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;

/// Peak memory seen while sampling, in KiB.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct RssPeak {
    /// The sampled process.
    pub pid: u32,
    /// Largest VmRSS seen by the sampler.
    pub peak_rss_kib: u64,
    /// The kernel's own high-water mark (VmHWM) at the last sample: catches peaks between samples.
    pub vm_hwm_kib: u64,
    /// Samples taken.
    pub samples: u64,
}

/// Parses the `VmRSS` and `VmHWM` lines (kB) of a `/proc/<pid>/status` text.
pub fn parse_status(text: &str) -> (Option<u64>, Option<u64>) {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// A background sampler; `stop` returns the peak.
pub struct RssSampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    hwm: Arc<AtomicU64>,
    samples: Arc<AtomicU64>,
    pid: u32,
    task: tokio::task::JoinHandle<()>,
}

impl RssSampler {
    /// Starts sampling every `interval`. A process that disappears just stops the sampling.
    pub fn start(pid: u32, interval: Duration) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let hwm = Arc::new(AtomicU64::new(0));
        let samples = Arc::new(AtomicU64::new(0));
        let (s, p, h, n) = (stop.clone(), peak.clone(), hwm.clone(), samples.clone());
        let path = format!("/proc/{pid}/status");
        let task = tokio::spawn(async move {
            while !s.load(Ordering::Relaxed) {
                match tokio::fs::read_to_string(&path).await {
                    Ok(text) => {
                        let (rss, vm_hwm) = parse_status(&text);
                        if let Some(rss) = rss {
                            p.fetch_max(rss, Ordering::Relaxed);
                        }
                        if let Some(vm_hwm) = vm_hwm {
                            h.fetch_max(vm_hwm, Ordering::Relaxed);
                        }
                        n.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(err) => {
                        tracing::warn!(%path, %err, "stopped sampling server memory");
                        return;
                    }
                }
                tokio::time::sleep(interval).await;
            }
        });
        RssSampler {
            stop,
            peak,
            hwm,
            samples,
            pid,
            task,
        }
    }

    /// Stops the sampler and returns the peak values.
    pub async fn stop(self) -> RssPeak {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        RssPeak {
            pid: self.pid,
            peak_rss_kib: self.peak.load(Ordering::Relaxed),
            vm_hwm_kib: self.hwm.load(Ordering::Relaxed),
            samples: self.samples.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_status() {
        let text = "Name:\tklb\nVmPeak:\t  200000 kB\nVmHWM:\t   41234 kB\nVmRSS:\t   40000 kB\n";
        assert_eq!(parse_status(text), (Some(40000), Some(41234)));
        assert_eq!(parse_status("Name:\tx\n"), (None, None));
        assert_eq!(parse_status("VmRSS:\tgarbage kB\n"), (None, None));
    }

    #[tokio::test]
    async fn samples_own_process() {
        let sampler = RssSampler::start(std::process::id(), Duration::from_millis(5));
        tokio::time::sleep(Duration::from_millis(30)).await;
        let peak = sampler.stop().await;
        assert!(peak.samples >= 1);
        assert!(peak.peak_rss_kib > 0);
        assert!(peak.vm_hwm_kib >= peak.peak_rss_kib);
    }
}
