//! The local PPS alarm evaluator: one task per alarm asks the [`PpsSource`] for the LB's packet
//! rate every period and POSTs an Aodh-style notification to the webhook URL once per
//! transition to `alarm`.

use super::*;

impl LocalCloud {
    pub(super) async fn start_evaluator(&self, a: AlarmRec) {
        let period = self
            .inner
            .cfg
            .alarm_period_override
            .unwrap_or(Duration::from_secs(u64::from(a.period_secs.max(1))));
        let pps = self.inner.pps.clone();
        let http = self.inner.http.clone();
        let id = a.id.clone();
        let handle = tokio::spawn(async move {
            let mut window = PpsWindow::default();
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await; // the first tick is immediate
            loop {
                tick.tick().await;
                let source = pps.lock().await.clone();
                let value = match source {
                    Some(s) => s.pps(&a.lb_id, &a.server_ids).await,
                    None => None,
                };
                if window.observe(value, a.threshold_pps, a.evaluation_periods) {
                    notify(&http, &a, value.unwrap_or(0), window.over).await;
                }
            }
        });
        if let Some(old) = self.inner.evaluators.lock().await.insert(id, handle) {
            old.abort();
        }
    }
}

/// The evaluator's state: Aodh's threshold semantics with `repeat_actions = false`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct PpsWindow {
    /// Consecutive periods above the threshold.
    pub(super) over: u32,
    /// In state `alarm` (fired, not yet back below the threshold).
    pub(super) alarmed: bool,
}

impl PpsWindow {
    /// Records one period's sample; true when the alarm must fire now (the
    /// `evaluation_periods`-th consecutive sample above `threshold`, once per transition).
    /// A missing sample (no data) breaks the streak but does not clear the alarm state.
    pub(super) fn observe(
        &mut self,
        value: Option<u64>,
        threshold: u64,
        evaluation_periods: u32,
    ) -> bool {
        match value {
            Some(v) if v > threshold => self.over = self.over.saturating_add(1),
            Some(_) => {
                self.over = 0;
                self.alarmed = false;
            }
            None => self.over = 0,
        }
        if self.over >= evaluation_periods.max(1) && !self.alarmed {
            self.alarmed = true;
            return true;
        }
        false
    }
}

/// POSTs an Aodh-style alarm notification. The URL may carry a token: never logged.
pub(super) async fn notify(http: &reqwest::Client, a: &AlarmRec, pps: u64, count: u32) {
    let body = serde_json::json!({
        "alarm_id": a.id,
        "alarm_name": a.name,
        "severity": "low",
        "previous": "ok",
        "current": "alarm",
        "reason": format!(
            "Transition to alarm due to {count} samples outside threshold, most recent: {pps}"
        ),
        "reason_data": {
            "type": "threshold",
            "disposition": "outside",
            "count": count,
            "most_recent": pps,
        },
        "lb_id": a.lb_id,
    });
    match http.post(&a.webhook_url).json(&body).send().await {
        Ok(r) if r.status().is_success() => {
            info!(alarm = %a.id, lb = %a.lb_id, pps, "PPS alarm fired")
        }
        Ok(r) => warn!(alarm = %a.id, status = %r.status(), "alarm webhook refused"),
        Err(e) => warn!(alarm = %a.id, error = %e.without_url(), "alarm webhook failed"),
    }
}
