//! Load-balancer domain types: the Octavia resources ([`resources`]), their enumerations
//! ([`enums`]), the allow-lists every user string passes before it can reach a rendered
//! config ([`validate`]), the provisioning status machine ([`status`]) and the stored traffic
//! statistics ([`stats`]). No I/O: this crate depends on no runtime, database or HTTP library,
//! so it has no I/O failure path.

#![warn(missing_docs)]
pub mod enums;
pub mod resources;
pub mod stats;
pub mod status;
pub mod validate;

pub use enums::*;
pub use resources::*;
pub use stats::LbStats;
pub use status::Conflict;
