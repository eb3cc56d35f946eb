//! The local cloud: LB "VMs", gateways, clients and members as Linux network namespaces on this
//! host, wired like a small datacenter (ECMP over eBGP with BFD, L4 hashing), so a whole real
//! load balancer (klb agent, HAProxy, FRR) runs on one Linux box with `klb demo` and in tests.
//!
//! Layers, each usable alone:
//! - [`netns`]: namespaces, veths, bridges, addresses, routes, sysctls, processes started inside
//!   a namespace and stopped by PID (TERM, then KILL), and [`netns::Owned`], the record that
//!   makes teardown complete and idempotent (its drop guard cleans up on panic).
//! - [`frr`]: zebra + bfdd + bgpd per namespace with private paths; the gateway configuration
//!   (`bgp listen range` on the L3 subnet, so new LB VMs need no gateway change).
//! - [`plan`]: the address plan (all in 198.18.0.0/15) and the stable network/subnet ids.
//! - [`lab`]: the topology: client → edge router → two gateways → L3 bridge → LB VMs, members
//!   on their own bridge, a management bridge reachable from the host.
//! - [`driver`]: klb-cloud's `Compute`, `Network` and `Alarms` over the lab ([`LocalCloud`]):
//!   a server is a VM namespace running `klb agent`; a state file plus adoption on start let the
//!   data plane survive control-plane restarts.
//! - [`backend`]: the tiny HTTP member server behind `klb backend`.
//!
//! Everything here needs root (network namespaces) and the `ip`, `sysctl` and `kill` commands;
//! FRR for the gateways. Nothing is sent anywhere but into namespaces this crate created.

#![warn(missing_docs)]
pub mod backend;
pub mod driver;
pub mod error;
pub mod firewall;
pub mod frr;
pub mod lab;
pub mod netns;
pub mod plan;

pub use driver::{
    AgentLaunch, BootInfo, LocalCloud, LocalCloudConfig, PpsSource, TeardownReport, VmBootstrap,
    stable_networks,
};
pub use error::LocalError;
pub use lab::{AdoptReport, GuestNics, Lab, LabConfig, MemberNet, VmNet};
pub use plan::AddressPlan;
