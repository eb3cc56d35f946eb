//! [`Alarms`] over the local PPS evaluator ([`super::pps`]).

use super::*;

#[async_trait]
impl Alarms for LocalCloud {
    async fn create_pps_alarm(&self, spec: &PpsAlarmSpec) -> CloudResult<Alarm> {
        const OP: &str = "create_pps_alarm";
        if spec.threshold_pps == 0 || spec.period_secs == 0 || spec.evaluation_periods == 0 {
            return Err(CloudError::new(
                OP,
                &spec.name,
                CloudErrorKind::Invalid,
                "threshold, period and evaluation periods must be positive",
            ));
        }
        if reqwest::Url::parse(&spec.webhook_url).is_err() {
            return Err(CloudError::new(
                OP,
                &spec.name,
                CloudErrorKind::Invalid,
                "webhook URL is not a valid URL",
            ));
        }
        let mut core = self.inner.core.lock().await;
        let rec = AlarmRec {
            id: Uuid::new_v4().to_string(),
            name: spec.name.clone(),
            lb_id: spec.lb_id.clone(),
            server_ids: spec.server_ids.clone(),
            threshold_pps: spec.threshold_pps,
            period_secs: spec.period_secs,
            evaluation_periods: spec.evaluation_periods,
            webhook_url: spec.webhook_url.clone(),
        };
        core.st.alarms.insert(rec.id.clone(), rec.clone());
        self.persist(&core)
            .map_err(|e| cloud_err(OP, &spec.name, e))?;
        self.start_evaluator(rec.clone()).await;
        Ok(Alarm {
            id: rec.id,
            name: rec.name,
            lb_id: rec.lb_id,
            server_ids: rec.server_ids,
        })
    }

    async fn find_alarm(&self, name: &str) -> CloudResult<Option<Alarm>> {
        let core = self.inner.core.lock().await;
        Ok(core
            .st
            .alarms
            .values()
            .find(|a| a.name == name)
            .map(|a| Alarm {
                id: a.id.clone(),
                name: a.name.clone(),
                lb_id: a.lb_id.clone(),
                server_ids: a.server_ids.clone(),
            }))
    }

    async fn delete_alarm(&self, id: &str) -> CloudResult<()> {
        let mut core = self.inner.core.lock().await;
        if let Some(h) = self.inner.evaluators.lock().await.remove(id) {
            h.abort();
        }
        if core.st.alarms.remove(id).is_some() {
            self.persist(&core)
                .map_err(|e| cloud_err("delete_alarm", id, e))?;
        }
        Ok(())
    }
}
