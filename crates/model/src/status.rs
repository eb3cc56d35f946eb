//! The provisioning status machine: which changes a load balancer (or a parent object) in a
//! given status accepts. Pure functions; the store applies them inside its transaction.

use uuid::Uuid;

use crate::enums::ProvisioningStatus;
use crate::resources::Kind;

/// A change refused because of an object's provisioning status (HTTP 409 at the API).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Conflict {
    /// A child change while the load balancer or the direct parent is not ACTIVE
    /// (Octavia's `ImmutableObject`).
    #[error("{} {id} is immutable and cannot be updated.", immutable_name(*.kind))]
    Immutable {
        /// Kind of the locked object.
        kind: Kind,
        /// Its id.
        id: Uuid,
    },
    /// A load balancer update/delete/failover in a status that forbids it
    /// (Octavia's `LBPendingStateError`).
    #[error("Invalid state {status} of loadbalancer resource {id}")]
    LbState {
        /// The load balancer id.
        id: Uuid,
        /// Its current status.
        status: ProvisioningStatus,
    },
}

fn immutable_name(kind: Kind) -> &'static str {
    match kind {
        Kind::L7Policy => "L7Policy",
        other => other.display_name(),
    }
}

/// Child create/update/delete: the load balancer must be ACTIVE (Octavia's MUTABLE_STATUSES).
pub fn check_lb_mutable(id: Uuid, status: ProvisioningStatus) -> Result<(), Conflict> {
    if status == ProvisioningStatus::Active {
        Ok(())
    } else {
        Err(Conflict::Immutable {
            kind: Kind::LoadBalancer,
            id,
        })
    }
}

/// Member/HM/L7 rule changes also need the direct parent (pool or L7 policy) ACTIVE.
pub fn check_parent_mutable(
    kind: Kind,
    id: Uuid,
    status: ProvisioningStatus,
) -> Result<(), Conflict> {
    if status == ProvisioningStatus::Active {
        Ok(())
    } else {
        Err(Conflict::Immutable { kind, id })
    }
}

/// Load balancer PUT: ACTIVE only.
pub fn check_lb_updatable(id: Uuid, status: ProvisioningStatus) -> Result<(), Conflict> {
    if status == ProvisioningStatus::Active {
        Ok(())
    } else {
        Err(Conflict::LbState { id, status })
    }
}

/// Load balancer DELETE and failover: ACTIVE or ERROR.
pub fn check_lb_deletable(id: Uuid, status: ProvisioningStatus) -> Result<(), Conflict> {
    if matches!(
        status,
        ProvisioningStatus::Active | ProvisioningStatus::Error
    ) {
        Ok(())
    } else {
        Err(Conflict::LbState { id, status })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ProvisioningStatus as P;

    #[test]
    fn status_rules() {
        let id = Uuid::nil();
        for s in P::ALL {
            assert_eq!(check_lb_mutable(id, *s).is_ok(), *s == P::Active);
            assert_eq!(check_lb_updatable(id, *s).is_ok(), *s == P::Active);
            assert_eq!(
                check_lb_deletable(id, *s).is_ok(),
                matches!(s, P::Active | P::Error)
            );
        }
        assert_eq!(
            check_lb_mutable(id, P::PendingUpdate)
                .unwrap_err()
                .to_string(),
            format!("Load Balancer {id} is immutable and cannot be updated.")
        );
        assert_eq!(
            check_lb_deletable(id, P::PendingCreate)
                .unwrap_err()
                .to_string(),
            format!("Invalid state PENDING_CREATE of loadbalancer resource {id}")
        );
        assert_eq!(
            check_parent_mutable(Kind::Pool, id, P::PendingCreate)
                .unwrap_err()
                .to_string(),
            format!("Pool {id} is immutable and cannot be updated.")
        );
    }
}
