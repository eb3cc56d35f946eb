//! The OpenStack cloud driver: klb-cloud's [`Compute`](klb_cloud::Compute) on Nova,
//! [`Network`](klb_cloud::Network) on Neutron, [`Alarms`](klb_cloud::Alarms) on Aodh, and a
//! Barbican [`CertificateManager`](klb_certs::CertificateManager), all over one Keystone
//! session ([`session`]).
//!
//! What each seam does here:
//! - **Servers** boot from `image_id` (or the newest active Glance image with `image_tag`) and
//!   `base_flavor_id`, in the LB's server group (`os:scheduler_hints`), optionally from a new
//!   volume of `loadbalancer_instance_volume_size` GiB and in `availibility_zone`. Their ports
//!   are created in Neutron first (named `<server>-nic<n>`, carrying the LB's security group),
//!   so the management address is known before boot and the [`UserData`] hook can put it in
//!   the agent's certificate. Servers carry the tags `klb` and `klb-lb-<lb id>` and klb's
//!   metadata, so klb finds (adopts or cleans) its own servers after a crash; deleting a server
//!   deletes its pre-created ports, and deleting a security group first deletes klb VM ports
//!   still holding it (a crash between port create and server create leaves nothing behind).
//! - **Security groups** map one rule spec without a remote prefix to an IPv4 and an IPv6
//!   Neutron rule (Neutron needs an ethertype; "anywhere" means both).
//! - **Alarms**: Aodh 23 has no `threshold` type. `prometheus` (a PromQL query over the LB VMs'
//!   packet rate) or `gnocchi` (`gnocchi_aggregation_by_resources_threshold` over Ceilometer's
//!   packet-rate metric of the LB's instances: a per-LB alarm sums several VMs, which the
//!   single-resource `gnocchi_resources_threshold` cannot), chosen by config. The webhook URL
//!   (with its token) is the alarm action; it is never logged.
//! - **Certificates** are read from Barbican by the ref's id on klb's catalog endpoint (never
//!   the host named in a tenant's ref) as klb's service user, so Barbican's policy (the tenant's
//!   ACL for klb's user, or admin access) decides, and validated like the local secret store.
//!
//! Errors keep the flows' split: quota, an address or port in use, a missing image or flavor
//! are permanent (the flow reverts and the LB shows the reason); 5xx, timeouts and transient
//! conflicts are retried.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod alarms;
mod barbican;
mod compute;
mod config;
mod network;
pub mod session;

use std::net::IpAddr;
use std::sync::Arc;

use async_trait::async_trait;
use klb_agent_client::agents::Agents;
use klb_cloud::{Cloud, CloudError, CloudErrorKind, CloudResult, Network as _};

pub use barbican::BarbicanCertificates;
pub use config::{AlarmBackend, OpenStackConfig};
/// For [`Call`]s made outside this crate (tests, tools).
pub use http::Method;
pub use network::{ReservedVip, VipReservationError};
pub use openstack_sdk::types::ServiceType;
pub use session::{Call, Credentials, Session, SessionConfig};

/// Server tag on every LB VM klb boots.
pub const TAG: &str = "klb";

/// The per-LB server tag (`klb-lb-<lb id>`).
pub fn lb_tag(lb_id: &str) -> String {
    format!("klb-lb-{lb_id}")
}

/// What the [`UserData`] hook knows about a VM about to boot.
#[derive(Debug, Clone)]
pub struct VmBoot {
    /// The server's name.
    pub server_name: String,
    /// `klb_lb_id`, `klb_vm_index`.
    pub metadata: std::collections::BTreeMap<String, String>,
    /// Address of the VM's port on the management network (agent API, certificate SAN).
    pub mgmt_addr: IpAddr,
    /// Address of its port on the L3 network (BGP source).
    pub l3_addr: IpAddr,
}

/// Renders a VM's cloud-init user data (agent certificate and key, CA, `agent.toml`, start
/// `klb agent`). May hold secrets: drivers never log it.
#[async_trait]
pub trait UserData: Send + Sync {
    /// The user data for `boot`; the error says why it could not be rendered.
    async fn render(&self, boot: &VmBoot) -> Result<String, String>;
}

/// The OpenStack cloud: one session, the resolved networks, the operator's choices.
#[derive(Clone)]
pub struct OpenStackCloud {
    inner: Arc<Inner>,
}

struct Inner {
    session: Session,
    config: OpenStackConfig,
    /// Network ids of `lb_mgmt_net` and `lb_l3_net`, resolved at connect.
    mgmt_network_id: String,
    l3_network_id: String,
    user_data: Arc<dyn UserData>,
}

impl std::fmt::Debug for OpenStackCloud {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenStackCloud")
            .field("mgmt_network_id", &self.inner.mgmt_network_id)
            .field("l3_network_id", &self.inner.l3_network_id)
            .finish_non_exhaustive()
    }
}

impl OpenStackCloud {
    /// Authenticates, checks that the image (or tag), flavor and the management and L3 networks
    /// exist, and returns the driver. Every failure names what is missing.
    pub async fn connect(
        config: OpenStackConfig,
        user_data: Arc<dyn UserData>,
    ) -> CloudResult<OpenStackCloud> {
        let session = Session::connect(&config.session).await?;
        let mut cloud = OpenStackCloud {
            inner: Arc::new(Inner {
                session,
                config,
                mgmt_network_id: String::new(),
                l3_network_id: String::new(),
                user_data,
            }),
        };
        let (mgmt, l3) = {
            let cfg = &cloud.inner.config;
            let mgmt = cloud
                .require_network("lb_mgmt_net", &cfg.mgmt_network)
                .await?;
            let l3 = cloud.require_network("lb_l3_net", &cfg.l3_network).await?;
            (mgmt, l3)
        };
        cloud.image_id().await?;
        cloud.check_flavor().await?;
        let inner = Arc::get_mut(&mut cloud.inner).expect("not shared yet");
        inner.mgmt_network_id = mgmt;
        inner.l3_network_id = l3;
        Ok(cloud)
    }

    async fn require_network(&self, option: &'static str, wanted: &str) -> CloudResult<String> {
        self.find_network(wanted)
            .await?
            .map(|n| n.id)
            .ok_or_else(|| {
                CloudError::new(
                    "resolve_network",
                    wanted,
                    CloudErrorKind::NotFound,
                    format!("{option}: network {wanted:?} does not exist"),
                )
                .with_retryable(false)
            })
    }

    /// The cloud's capabilities as trait objects (agents are reached over klb's mTLS client).
    pub fn cloud(&self, agents: Arc<dyn Agents>) -> Cloud {
        Cloud {
            compute: Arc::new(self.clone()),
            network: Arc::new(self.clone()),
            alarms: Arc::new(self.clone()),
            agents,
        }
    }

    /// The session (for the Barbican certificate manager and the API's VIP allocation).
    pub fn session(&self) -> &Session {
        &self.inner.session
    }

    /// Network id of `lb_mgmt_net`.
    pub fn mgmt_network_id(&self) -> &str {
        &self.inner.mgmt_network_id
    }

    /// Network id of `lb_l3_net`.
    pub fn l3_network_id(&self) -> &str {
        &self.inner.l3_network_id
    }
}
