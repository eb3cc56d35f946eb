//! The stock provider pieces used when no real flow engine runs: the VIP network seam with
//! its noop implementation, the certificate-manager seam with its noop implementation, and
//! [`NoopProvider`], a worker that settles every job as a success.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use klb_store::{Outcome, Store};
use uuid::Uuid;

/// What the caller asked for the VIP.
#[derive(Debug, Clone, Default)]
pub struct VipRequest {
    /// Requested address.
    pub address: Option<IpAddr>,
    /// Requested port.
    pub port_id: Option<Uuid>,
    /// Requested subnet.
    pub subnet_id: Option<Uuid>,
    /// Requested network.
    pub network_id: Option<Uuid>,
}

/// The VIP as allocated.
#[derive(Debug, Clone)]
pub struct Vip {
    /// Address.
    pub address: IpAddr,
    /// Port holding it.
    pub port_id: Uuid,
    /// Subnet.
    pub subnet_id: Uuid,
    /// Network.
    pub network_id: Uuid,
}

/// Why a [`VipNetwork`] allocated no VIP or could not tell a subnet's CIDR. Every message is a
/// client-facing reason: the API answers it, as it is, as a 400 fault string.
#[derive(Debug, thiserror::Error)]
pub enum VipError {
    /// A subnet this network does not have (or the project cannot see).
    #[error("Subnet {0} not found.")]
    SubnetNotFound(Uuid),
    /// A network this network driver does not have (or the project cannot see).
    #[error("Network {0} not found.")]
    NetworkNotFound(Uuid),
    /// `vip_port_id` was given to a network that cannot adopt a port.
    #[error("Validation failure: vip_port_id is not supported{scope}; use {instead}.")]
    PortIdUnsupported {
        /// Which network refuses it, as a phrase (` by the local cloud`), or empty.
        scope: &'static str,
        /// The fields to use instead.
        instead: &'static str,
    },
    /// The requested address is outside the VIP subnet.
    #[error("Validation failure: VIP address {address} is not in subnet {subnet}.")]
    AddressOutsideSubnet {
        /// The requested address.
        address: IpAddr,
        /// The subnet it must be in.
        subnet: ipnet::IpNet,
    },
    /// The cloud answered an id that is not a UUID.
    #[error("Neutron id {id} is not a UUID.")]
    NotAUuid {
        /// The id as answered.
        id: String,
        /// Why it did not parse.
        #[source]
        source: uuid::Error,
    },
    /// Reading a subnet failed.
    #[error("Could not read subnet {subnet}: {source}")]
    SubnetUnreadable {
        /// The subnet.
        subnet: Uuid,
        /// The cloud's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The network driver's own client-facing refusal (its `Display` is the message).
    #[error(transparent)]
    Driver(Box<dyn std::error::Error + Send + Sync>),
}

/// Allocates VIPs (Neutron ports in OpenStack). Errors are client-facing reasons
/// ([`VipError`], e.g. `Subnet <id> not found.`).
#[async_trait::async_trait]
pub trait VipNetwork: Send + Sync + 'static {
    /// Allocates the VIP for a new load balancer of `project_id`.
    async fn allocate_vip(
        &self,
        lb_id: Uuid,
        project_id: &str,
        request: &VipRequest,
    ) -> Result<Vip, VipError>;

    /// The CIDR of `subnet_id` as `project_id` sees it, to check addresses the caller picks on
    /// it (`additional_vips[].ip_address`). `Ok(None)`: this network cannot tell (the noop
    /// network accepts any subnet id, as Octavia's noop driver does). Errors are client-facing
    /// reasons (`Subnet <id> not found.`).
    async fn subnet_cidr(
        &self,
        _project_id: &str,
        _subnet_id: Uuid,
    ) -> Result<Option<ipnet::IpNet>, VipError> {
        Ok(None)
    }
}

/// Accepts any well-formed ids, like Octavia's noop network driver, and picks an address in
/// 198.18.0.0/15 when none is given.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoopNetwork;

#[async_trait::async_trait]
impl VipNetwork for NoopNetwork {
    async fn allocate_vip(
        &self,
        lb_id: Uuid,
        _project_id: &str,
        request: &VipRequest,
    ) -> Result<Vip, VipError> {
        let address = request.address.unwrap_or_else(|| {
            // 198.18.0.0/15 has 131072 addresses; skip .0 and .255 style edges loosely.
            let n = (lb_id.as_u128() % 131_000) as u32 + 10;
            IpAddr::V4(Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 0)) + n))
        });
        Ok(Vip {
            address,
            port_id: request.port_id.unwrap_or_else(Uuid::new_v4),
            subnet_id: request.subnet_id.unwrap_or_else(Uuid::new_v4),
            network_id: request.network_id.unwrap_or_else(Uuid::new_v4),
        })
    }
}

/// The certificate-manager seam (Barbican in OpenStack, klb's own secret store on the local
/// cloud, noop for the API-only provider) lives in klb-certs.
pub use klb_certs::{CertUsage, CertificateManager, NoopCertManager};

/// Per-project quota limits (Octavia's `/v2/quotas`). The API counts objects inside the
/// writer's transaction and answers 403 `Quota has been met for resources: <Resource>` when a
/// create would exceed the limit.
#[async_trait::async_trait]
pub trait QuotaLimits: Send + Sync + 'static {
    /// The limit of `kind` objects for `project_id`: `None` or a negative number = unlimited.
    async fn limit(
        &self,
        store: &Store,
        project_id: &str,
        kind: klb_model::Kind,
    ) -> Result<Option<i64>, crate::ApiError>;
}

/// No limits (the default until quotas are configured).
#[derive(Debug, Clone, Copy, Default)]
pub struct Unlimited;

#[async_trait::async_trait]
impl QuotaLimits for Unlimited {
    async fn limit(
        &self,
        _: &Store,
        _: &str,
        _: klb_model::Kind,
    ) -> Result<Option<i64>, crate::ApiError> {
        Ok(None)
    }
}

/// Jobs the noop provider claims and settles together.
const BATCH: usize = 64;

/// A provider worker that settles every job as a success right away, so `PENDING_*` becomes
/// `ACTIVE` (or the object disappears on delete). Operating statuses are left as created
/// (`OFFLINE`, members `NO_MONITOR`): nothing is measured.
pub struct NoopProvider {
    store: Store,
    owner: String,
    poll: Duration,
}

impl NoopProvider {
    /// A worker on `store`.
    pub fn new(store: Store) -> NoopProvider {
        NoopProvider {
            store,
            owner: format!("noop-{}", Uuid::new_v4()),
            poll: Duration::from_millis(500),
        }
    }

    /// Runs until `shutdown` resolves. Woken by the store after each commit that enqueued a
    /// job, with a poll fallback (jobs written by another node, or a missed wake-up).
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        let notify = self.store.jobs_ready();
        tokio::pin!(shutdown);
        loop {
            // In bulk: one claim and one transaction for every ready job (one per LB), so
            // concurrent API writes cost the single SQLite writer fewer round trips each.
            loop {
                match self
                    .store
                    .claim_jobs(&self.owner, Duration::from_secs(30), BATCH)
                    .await
                {
                    Ok(jobs) if jobs.is_empty() => break,
                    Ok(jobs) => {
                        if let Err(e) = self.store.settle_jobs(&jobs, Outcome::Success).await {
                            tracing::warn!(jobs = jobs.len(), error = %e, "noop provider could not settle jobs");
                            break;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "noop provider could not claim jobs");
                        break;
                    }
                }
            }
            tokio::select! {
                _ = &mut shutdown => return,
                _ = notify.notified() => {}
                _ = tokio::time::sleep(self.poll) => {}
            }
        }
    }
}
