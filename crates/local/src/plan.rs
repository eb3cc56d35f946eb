//! The address plan of the local cloud and the stable ids of its networks.
//!
//! Every address comes from 198.18.0.0/15 (RFC 2544 benchmarking space, never routed on the
//! Internet). Defaults:
//!
//! | block | use |
//! |---|---|
//! | 198.18.0.0/30 | client `.1` ↔ edge router `.2` |
//! | 198.18.0.4/30 | edge `.5` ↔ gateway 1 `.6` |
//! | 198.18.0.8/30 | edge `.9` ↔ gateway 2 `.10` |
//! | 198.18.16.0/20 | member network (bridge): gateway 1 `.1`, gateway 2 `.2`, member *n* = `.16.(10+n)` … |
//! | 198.18.64.0/20 | L3 network `lb_l3_net` (bridge): gateway 1 `.1` (`primary_l3_gateway_addr`), gateway 2 `.2` (`secondary_l3_gateway_addr`), LB VM slot *n* = network + 16 + *n* |
//! | 198.18.128.0/17 | management network `lb_mgmt_net` (bridge): host `.1` (control plane: agent API client, heartbeat receiver `lb_api_agent_addr`), LB VM slot *n* = network + 16 + *n* |
//! | 198.19.0.0/20 | VIP subnet: VIPs are /32s on the LB VMs' `lo`, announced by BGP; the edge routes the whole subnet to both gateways (ECMP) |
//!
//! Routing: the client's default route is the edge; the edge has one multipath route for the
//! VIP subnet via both gateways (L4 hash), each gateway learns every VIP /32 from every LB VM
//! by eBGP and installs one multipath route (L4 hash). So a client flow hashes first across
//! gateways, then across LB VMs. LB VMs' default route is multipath via both gateways (towards
//! clients and members); members' default route is gateway 1. Gateways' default is the edge.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{LocalError, Result};

/// Network id of the VIP network (where load balancers get their VIP).
pub const VIP_NETWORK_ID: Uuid = Uuid::from_u128(0x6b6c6200_0000_4000_8000_000000000101);
/// Subnet id of the VIP subnet (198.19.0.0/20 by default).
pub const VIP_SUBNET_ID: Uuid = Uuid::from_u128(0x6b6c6200_0000_4000_8000_000000000201);
/// Network id of the member network (where `klb backend` members live).
pub const MEMBER_NETWORK_ID: Uuid = Uuid::from_u128(0x6b6c6200_0000_4000_8000_000000000102);
/// Subnet id of the member subnet (198.18.16.0/20 by default).
pub const MEMBER_SUBNET_ID: Uuid = Uuid::from_u128(0x6b6c6200_0000_4000_8000_000000000202);
/// Network id of the L3 network `lb_l3_net` (BGP sessions LB VM ↔ gateways).
pub const L3_NETWORK_ID: Uuid = Uuid::from_u128(0x6b6c6200_0000_4000_8000_000000000103);
/// Subnet id of the L3 subnet (198.18.64.0/20 by default).
pub const L3_SUBNET_ID: Uuid = Uuid::from_u128(0x6b6c6200_0000_4000_8000_000000000203);
/// Network id of the management network `lb_mgmt_net` (agent API, heartbeats).
pub const MGMT_NETWORK_ID: Uuid = Uuid::from_u128(0x6b6c6200_0000_4000_8000_000000000104);
/// Subnet id of the management subnet (198.18.128.0/17 by default).
pub const MGMT_SUBNET_ID: Uuid = Uuid::from_u128(0x6b6c6200_0000_4000_8000_000000000204);

/// The lab's address plan. [`AddressPlan::default`] is the documented plan above; tests that
/// run next to a lab override `mgmt_subnet` (the only block with an address in the root
/// namespace) so two labs never share a host route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressPlan {
    /// Client ↔ edge, edge ↔ gateway links: three /30s at the start of this /24.
    pub edge_net: Ipv4Net,
    /// Member network.
    pub member_subnet: Ipv4Net,
    /// L3 network (LB VMs ↔ gateways).
    pub l3_subnet: Ipv4Net,
    /// Management network (host ↔ LB VMs).
    pub mgmt_subnet: Ipv4Net,
    /// VIP subnet.
    pub vip_subnet: Ipv4Net,
}

impl Default for AddressPlan {
    fn default() -> Self {
        let net = |s: &str| s.parse().expect("constant subnet");
        AddressPlan {
            edge_net: net("198.18.0.0/24"),
            member_subnet: net("198.18.16.0/20"),
            l3_subnet: net("198.18.64.0/20"),
            mgmt_subnet: net("198.18.128.0/17"),
            vip_subnet: net("198.19.0.0/20"),
        }
    }
}

/// Where the first LB VM / member slot starts inside its subnet.
const VM_SLOT_BASE: u32 = 16;
const MEMBER_SLOT_BASE: u32 = 10;

fn nth(net: Ipv4Net, n: u32) -> Result<Ipv4Addr> {
    let size = 1u64 << (32 - net.prefix_len());
    if u64::from(n) == 0 || u64::from(n) >= size - 1 {
        return Err(LocalError::Plan(format!("host {n} is outside {net}")));
    }
    Ok(Ipv4Addr::from(u32::from(net.network()) + n))
}

impl AddressPlan {
    /// Checks that every block is inside 198.18.0.0/15, large enough, and that blocks do not
    /// overlap.
    pub fn validate(&self) -> Result<()> {
        let lab: Ipv4Net = "198.18.0.0/15".parse().expect("constant");
        let blocks = [
            ("edge_net", self.edge_net, 28),
            ("member_subnet", self.member_subnet, 27),
            ("l3_subnet", self.l3_subnet, 27),
            ("mgmt_subnet", self.mgmt_subnet, 27),
            ("vip_subnet", self.vip_subnet, 30),
        ];
        for (name, net, max_len) in blocks {
            if !lab.contains(&net) {
                return Err(LocalError::Plan(format!(
                    "{name} {net} is outside 198.18.0.0/15"
                )));
            }
            if net.prefix_len() > max_len {
                return Err(LocalError::Plan(format!(
                    "{name} {net} is too small (at most /{max_len})"
                )));
            }
        }
        for (i, (a, na, _)) in blocks.iter().enumerate() {
            for (b, nb, _) in &blocks[i + 1..] {
                if na.contains(nb) || nb.contains(na) {
                    return Err(LocalError::Plan(format!("{a} {na} overlaps {b} {nb}")));
                }
            }
        }
        Ok(())
    }

    /// Client address (on the client ↔ edge /30).
    pub fn client_addr(&self) -> Ipv4Net {
        self.p30(0, 1)
    }
    /// Edge address facing the client.
    pub fn edge_client_side(&self) -> Ipv4Net {
        self.p30(0, 2)
    }
    /// Edge address facing gateway `gw` (1 or 2).
    pub fn edge_gw_side(&self, gw: u8) -> Ipv4Net {
        self.p30(u32::from(gw), 1)
    }
    /// Gateway `gw` (1 or 2) address facing the edge.
    pub fn gw_edge_side(&self, gw: u8) -> Ipv4Net {
        self.p30(u32::from(gw), 2)
    }
    fn p30(&self, link: u32, host: u32) -> Ipv4Net {
        let a = Ipv4Addr::from(u32::from(self.edge_net.network()) + link * 4 + host);
        Ipv4Net::new(a, 30).expect("valid prefix")
    }

    /// Gateway `gw` (1 or 2) address on the L3 network: `primary_l3_gateway_addr` (1) and
    /// `secondary_l3_gateway_addr` (2).
    pub fn gw_l3_addr(&self, gw: u8) -> Ipv4Addr {
        nth(self.l3_subnet, u32::from(gw)).expect("plan validated")
    }
    /// Gateway `gw` address on the member network.
    pub fn gw_member_addr(&self, gw: u8) -> Ipv4Addr {
        nth(self.member_subnet, u32::from(gw)).expect("plan validated")
    }
    /// Host (control plane) address on the management network.
    pub fn host_mgmt_addr(&self) -> Ipv4Addr {
        nth(self.mgmt_subnet, 1).expect("plan validated")
    }
    /// LB VM slot `slot` (1-based) on the L3 network.
    pub fn vm_l3_addr(&self, slot: u32) -> Result<Ipv4Addr> {
        nth(self.l3_subnet, VM_SLOT_BASE + slot)
    }
    /// LB VM slot `slot` (1-based) on the management network.
    pub fn vm_mgmt_addr(&self, slot: u32) -> Result<Ipv4Addr> {
        nth(self.mgmt_subnet, VM_SLOT_BASE + slot)
    }
    /// Member `index` (1-based) on the member network.
    pub fn member_addr(&self, index: u32) -> Result<Ipv4Addr> {
        nth(self.member_subnet, MEMBER_SLOT_BASE + index)
    }
    /// Largest usable LB VM slot.
    pub fn max_vm_slot(&self) -> u32 {
        let l3 = (1u32 << (32 - self.l3_subnet.prefix_len())) - 2 - VM_SLOT_BASE;
        let mgmt = (1u32 << (32 - self.mgmt_subnet.prefix_len())) - 2 - VM_SLOT_BASE;
        l3.min(mgmt)
    }
    /// The `n`-th VIP (1-based) of the VIP subnet, for allocators and the demo.
    pub fn vip(&self, n: u32) -> Result<Ipv4Addr> {
        nth(self.vip_subnet, n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_plan_matches_the_documented_table() {
        let p = AddressPlan::default();
        p.validate().unwrap();
        assert_eq!(p.client_addr().to_string(), "198.18.0.1/30");
        assert_eq!(p.edge_client_side().to_string(), "198.18.0.2/30");
        assert_eq!(p.edge_gw_side(1).to_string(), "198.18.0.5/30");
        assert_eq!(p.gw_edge_side(1).to_string(), "198.18.0.6/30");
        assert_eq!(p.edge_gw_side(2).to_string(), "198.18.0.9/30");
        assert_eq!(p.gw_edge_side(2).to_string(), "198.18.0.10/30");
        assert_eq!(p.gw_l3_addr(1).to_string(), "198.18.64.1");
        assert_eq!(p.gw_l3_addr(2).to_string(), "198.18.64.2");
        assert_eq!(p.vm_l3_addr(1).unwrap().to_string(), "198.18.64.17");
        assert_eq!(p.vm_mgmt_addr(1).unwrap().to_string(), "198.18.128.17");
        assert_eq!(p.host_mgmt_addr().to_string(), "198.18.128.1");
        assert_eq!(p.member_addr(1).unwrap().to_string(), "198.18.16.11");
        assert_eq!(p.vip(10).unwrap().to_string(), "198.19.0.10");
        assert_eq!(p.max_vm_slot(), 4096 - 2 - 16);
    }

    #[test]
    fn out_of_range_slots_are_errors() {
        let p = AddressPlan::default();
        assert!(p.vm_l3_addr(p.max_vm_slot()).is_ok());
        assert!(p.vm_l3_addr(p.max_vm_slot() + 1).is_err());
        assert!(p.vip(4094).is_ok());
        assert!(p.vip(4095).is_err());
        assert!(p.vip(0).is_err());
    }

    #[test]
    fn bad_plans_are_rejected() {
        let p = AddressPlan {
            vip_subnet: "10.0.0.0/24".parse().unwrap(),
            ..AddressPlan::default()
        };
        assert!(p.validate().is_err());
        let p = AddressPlan {
            member_subnet: "198.18.64.0/24".parse().unwrap(),
            ..AddressPlan::default()
        };
        assert!(p.validate().is_err(), "overlap with l3 must be rejected");
    }

    #[test]
    fn stable_ids_are_distinct() {
        let ids = [
            VIP_NETWORK_ID,
            VIP_SUBNET_ID,
            MEMBER_NETWORK_ID,
            MEMBER_SUBNET_ID,
            L3_NETWORK_ID,
            L3_SUBNET_ID,
            MGMT_NETWORK_ID,
            MGMT_SUBNET_ID,
        ];
        let set: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(set.len(), ids.len());
        assert_eq!(
            VIP_SUBNET_ID.to_string(),
            "6b6c6200-0000-4000-8000-000000000201"
        );
    }
}
