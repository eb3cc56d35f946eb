//! The control plane assembled: the store, the Octavia API, the provider that turns jobs into
//! flows, the health manager and the cloud drivers, wired for `klb serve` and `klb demo`.
//! Everything here is glue between crates that do not know each other (the API does not know
//! the flows; the agent does not know the store).

#![warn(missing_docs)]
pub mod bootstrap;
pub mod demo;
pub mod desired;
pub mod octavia_client;
pub mod plane;
pub mod pps;
pub mod secrets_api;
pub mod standalone;
pub mod store_backend;
pub mod webhook;

#[cfg(test)]
mod testutil;
