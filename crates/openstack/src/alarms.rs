//! [`Alarms`] on Aodh: one PPS alarm per LB whose action is klb's webhook.

use async_trait::async_trait;
use http::Method;
use openstack_sdk::types::ServiceType;
use serde::Deserialize;
use serde_json::{Value, json};

use klb_cloud::{Alarm, Alarms, CloudResult, PpsAlarmSpec};

use crate::OpenStackCloud;
use crate::config::AlarmBackend;
use crate::session::Call;

fn aodh(
    operation: &'static str,
    resource: impl Into<String>,
    method: Method,
    path: impl Into<String>,
) -> Call {
    Call::new(
        operation,
        resource,
        method,
        ServiceType::Other("alarming".to_owned()),
        path,
    )
}

/// The description records the LB and its servers, so the flows can tell whether an alarm
/// still covers the LB's current VMs (Aodh has no free-form metadata).
fn description(spec: &PpsAlarmSpec) -> String {
    format!(
        "klb lb={} servers={}",
        spec.lb_id,
        spec.server_ids.join(",")
    )
}

fn parse_description(text: &str) -> Option<(String, Vec<String>)> {
    let rest = text.strip_prefix("klb lb=")?;
    let (lb, servers) = rest.split_once(" servers=")?;
    let servers = servers
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    Some((lb.to_owned(), servers))
}

/// The `POST /v2/alarms` body.
pub(crate) fn alarm_body(backend: &AlarmBackend, spec: &PpsAlarmSpec) -> Value {
    let mut body = json!({
        "name": spec.name,
        "description": description(spec),
        "alarm_actions": [spec.webhook_url],
        "repeat_actions": false,
        "enabled": true,
    });
    match backend {
        AlarmBackend::Prometheus { query } => {
            let servers: Vec<String> = spec
                .server_ids
                .iter()
                .map(|s| s.replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', ""))
                .collect();
            let window = spec.period_secs.max(1) * spec.evaluation_periods.max(1);
            let query = query
                .replace("{servers}", &servers.join("|"))
                .replace("{period}", &window.to_string());
            body["type"] = json!("prometheus");
            body["prometheus_rule"] = json!({
                "query": query,
                "threshold": spec.threshold_pps as f64,
                "comparison_operator": "gt",
            });
        }
        AlarmBackend::Gnocchi {
            metric,
            resource_type,
            aggregation_method,
        } => {
            let query = json!({"in": {"instance_id": spec.server_ids}}).to_string();
            body["type"] = json!("gnocchi_aggregation_by_resources_threshold");
            body["gnocchi_aggregation_by_resources_threshold_rule"] = json!({
                "metric": metric,
                "resource_type": resource_type,
                "aggregation_method": aggregation_method,
                "query": query,
                "threshold": spec.threshold_pps as f64,
                "comparison_operator": "gt",
                "granularity": spec.period_secs,
                "evaluation_periods": spec.evaluation_periods,
            });
        }
    }
    body
}

#[derive(Debug, Deserialize)]
struct AlarmReply {
    alarm_id: String,
    name: String,
    #[serde(default)]
    description: String,
}

impl AlarmReply {
    fn into_alarm(self) -> Alarm {
        let (lb_id, server_ids) = parse_description(&self.description).unwrap_or_default();
        Alarm {
            id: self.alarm_id,
            name: self.name,
            lb_id,
            server_ids,
        }
    }
}

#[async_trait]
impl Alarms for OpenStackCloud {
    async fn create_pps_alarm(&self, spec: &PpsAlarmSpec) -> CloudResult<Alarm> {
        let body = alarm_body(&self.inner.config.alarms, spec);
        let call = aodh("create_alarm", &spec.name, Method::POST, "v2/alarms").body(&body);
        let reply: AlarmReply = self.inner.session.json(&call).await?;
        Ok(reply.into_alarm())
    }

    async fn find_alarm(&self, name: &str) -> CloudResult<Option<Alarm>> {
        let call = aodh("find_alarm", name, Method::GET, "v2/alarms")
            .query("q.field", "name")
            .query("q.op", "eq")
            .query("q.value", name);
        let alarms: Vec<AlarmReply> = self.inner.session.json(&call).await?;
        Ok(alarms
            .into_iter()
            .find(|a| a.name == name)
            .map(AlarmReply::into_alarm))
    }

    async fn delete_alarm(&self, id: &str) -> CloudResult<()> {
        let call = aodh(
            "delete_alarm",
            id,
            Method::DELETE,
            format!("v2/alarms/{id}"),
        );
        self.inner.session.send_ok(&call).await.map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> PpsAlarmSpec {
        PpsAlarmSpec {
            name: "klb-lb1-pps".into(),
            lb_id: "lb1".into(),
            server_ids: vec!["s-1".into(), "s-2".into()],
            threshold_pps: 20000,
            period_secs: 60,
            evaluation_periods: 3,
            webhook_url: "http://198.18.128.1:6543/v1/alarms?token=t".into(),
        }
    }

    #[test]
    fn prometheus_alarm_over_the_lb_vms() {
        let body = alarm_body(&AlarmBackend::prometheus(), &spec());
        assert_eq!(body["type"], "prometheus");
        assert_eq!(
            body["prometheus_rule"]["query"],
            "sum(rate(klb_vm_rx_packets_total{server_id=~\"s-1|s-2\"}[180s]))"
        );
        assert_eq!(body["prometheus_rule"]["threshold"], 20000.0);
        assert_eq!(body["prometheus_rule"]["comparison_operator"], "gt");
        assert_eq!(body["alarm_actions"][0], spec().webhook_url);
    }

    #[test]
    fn gnocchi_alarm_sums_the_lb_instances() {
        let body = alarm_body(&AlarmBackend::gnocchi(), &spec());
        let rule = &body["gnocchi_aggregation_by_resources_threshold_rule"];
        assert_eq!(rule["metric"], "network.incoming.packets.rate");
        assert_eq!(rule["granularity"], 60);
        assert_eq!(rule["evaluation_periods"], 3);
        assert_eq!(rule["query"], r#"{"in":{"instance_id":["s-1","s-2"]}}"#);
    }

    #[test]
    fn description_round_trips() {
        let d = description(&spec());
        assert_eq!(
            parse_description(&d),
            Some(("lb1".into(), vec!["s-1".into(), "s-2".into()]))
        );
    }
}
