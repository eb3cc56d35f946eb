//! The local cloud: LB "VMs", gateways, clients and members as Linux network namespaces on this
//! host, wired like a small datacenter (ECMP over eBGP with BFD, L4 hashing), so a whole real
//! load balancer (klb agent, HAProxy, FRR) runs on one Linux box with `klb demo` and in tests.
//!
//! Layers: [`netns`] (namespaces, links, addresses, routes, sysctls, processes by PID, an
//! ownership record for complete teardown) → [`frr`] (FRR per namespace with private paths,
//! gateway config) → [`lab`] (the topology and its [`plan`] of addresses, all in
//! 198.18.0.0/15) → [`driver`] (klb-cloud's traits over the lab). [`backend`] is the tiny
//! HTTP member server behind `klb backend`.
//!
//! Everything here needs root (network namespaces) and the `ip`, `sysctl` and `kill` commands.

pub mod backend;
pub mod driver;
pub mod error;
pub mod frr;
pub mod lab;
pub mod netns;
pub mod plan;

pub use driver::{AgentLaunch, BootInfo, LocalCloud, LocalCloudConfig, PpsSource, VmBootstrap};
pub use error::LocalError;
pub use lab::{Lab, LabConfig, MemberNet, VmNet};
pub use plan::AddressPlan;
