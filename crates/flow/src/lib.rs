//! Durable, resumable, revertible workflows that turn API changes into cloud resources and LB-VM configuration.
