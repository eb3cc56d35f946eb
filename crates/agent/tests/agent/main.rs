//! Integration tests of the agent crate: mutual TLS and basic auth over real sockets
//! (`mtls`), `klb_agent::run` from a config file with signed heartbeats to a verifying
//! receiver (`run`), and the agent driving real HAProxy and FRR in network namespaces against
//! a router namespace (`frr_e2e`, root only).

mod frr_e2e;
mod mtls;
mod run;
mod util;
