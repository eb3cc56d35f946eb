//! The driver's typed configuration (lifted from `klb.toml`'s `[openstack]` and the seed's
//! `[kinx_haproxy]` options by the binary).

use crate::session::SessionConfig;

/// Which Aodh alarm type watches an LB's packet rate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlarmBackend {
    /// `prometheus`: `query` with `{servers}` (a `|`-joined regex of the LB's server ids) and
    /// `{period}` (seconds) filled in.
    Prometheus {
        /// The PromQL template.
        query: String,
    },
    /// `gnocchi_aggregation_by_resources_threshold` over `metric` of the LB's instances.
    Gnocchi {
        /// Gnocchi metric name.
        metric: String,
        /// Gnocchi resource type holding the metric.
        resource_type: String,
        /// Aggregation applied across resources.
        aggregation_method: String,
    },
}

impl AlarmBackend {
    /// The default PromQL: the LB VMs' received packets per second, summed.
    pub const DEFAULT_PROMETHEUS_QUERY: &'static str =
        "sum(rate(klb_vm_rx_packets_total{server_id=~\"{servers}\"}[{period}s]))";

    /// Prometheus with [`Self::DEFAULT_PROMETHEUS_QUERY`].
    pub fn prometheus() -> Self {
        AlarmBackend::Prometheus {
            query: Self::DEFAULT_PROMETHEUS_QUERY.to_owned(),
        }
    }

    /// Gnocchi over Ceilometer's `network.incoming.packets.rate` per instance interface.
    pub fn gnocchi() -> Self {
        AlarmBackend::Gnocchi {
            metric: "network.incoming.packets.rate".to_owned(),
            resource_type: "instance_network_interface".to_owned(),
            aggregation_method: "rate:mean".to_owned(),
        }
    }
}

/// Everything the driver needs.
#[derive(Debug, Clone)]
pub struct OpenStackConfig {
    /// Where the cloud is and who klb is there.
    pub session: SessionConfig,
    /// `image_id` (wins over `image_tag`).
    pub image_id: Option<String>,
    /// Newest active Glance image with this tag, when `image_id` is not set.
    pub image_tag: Option<String>,
    /// `base_flavor_id`.
    pub flavor_id: String,
    /// `lb_mgmt_net_id` or `lb_mgmt_net_name`.
    pub mgmt_network: String,
    /// `lb_l3_net_id` or `lb_l3_net_name`.
    pub l3_network: String,
    /// Server groups use `soft-anti-affinity` instead of `anti-affinity`.
    pub soft_anti_affinity: bool,
    /// PPS alarm type.
    pub alarms: AlarmBackend,
}
