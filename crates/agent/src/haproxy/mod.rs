//! HAProxy on the LB VM: pure rendering of `haproxy.cfg` from the desired state
//! ([`render`]), a supervisor that checks and applies it ([`Haproxy`]: runtime API for
//! member-only changes, seamless master-worker reload otherwise), the runtime-API client and
//! `show stat` parser ([`runtime`]), and benchmarks ([`bench`]).
//!
//! Invariant: a configuration that fails `haproxy -c` never replaces the running one.

mod apply;
pub mod bench;
pub mod fixture;
pub mod render;
pub mod runtime;
mod text;

#[cfg(test)]
mod tests;

pub use apply::{ApplyError, Haproxy, HaproxyConfig};
pub use render::{Paths, Plan, RenderError, plan, render};
