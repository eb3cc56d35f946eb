//! HAProxy on the LB VM.
//!
//! * [`render`](mod@render): pure rendering of `haproxy.cfg` (and the crt-lists, PEM files and scripts it
//!   refers to) from a [`klb_proto::DesiredState`], with render-time allow-lists and escaping
//!   of every user string.
//! * [`Haproxy`]: the supervisor. Starts HAProxy in master-worker mode (optionally behind a
//!   command prefix such as `ip netns exec NS`), checks every rendered config with
//!   `haproxy -c`, applies member-only differences through the runtime API (and rewrites the
//!   file so a later reload keeps them), otherwise swaps the file and reloads through the
//!   master CLI, waiting for the new worker. Drain (`set_accepting`) survives reloads.
//! * [`runtime`]: the admin-socket/master-CLI client and the `show stat`/`show proc` parsers.
//! * `bench`: loopback benchmarks and the load tools the data-plane tests share; `fixture`:
//!   builders for small states. Both are test-only (`cfg(test)`): they never ship to LB VMs.
//!
//! Invariant: a configuration that fails `haproxy -c` never replaces the running one, and a
//! reload HAProxy refuses (e.g. a port it cannot bind) leaves the old worker and file in place.

mod apply;
pub(crate) use apply::send_signal;
#[cfg(test)]
mod bench;
#[cfg(test)]
mod fixture;
pub mod render;
pub mod runtime;
mod text;

#[cfg(test)]
mod tests;

pub use apply::{ApplyError, Haproxy, HaproxyConfig};
pub use render::{Paths, Plan, RenderError, plan, render};
