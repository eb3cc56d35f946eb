//! The control plane's side of the agent protocol: [`client::AgentClient`] (the mTLS client of
//! every agent's API), [`agents`] (the flows' seam over it, `Agents`) and [`heartbeat`] (each LB VM's heartbeat key and the check of every
//! report received). The LB VM side is `klb-agent`; the two share only `klb-proto` (wire types,
//! basic auth, the signature scheme) and `klb-tls` (klb's CA and TLS configurations), so the
//! control plane never compiles HAProxy or FRR code and the agent ships without this crate.

#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod agents;
pub mod client;
pub mod heartbeat;

pub use client::{AgentClient, AgentClientConfig, ClientError};
