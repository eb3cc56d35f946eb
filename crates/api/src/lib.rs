//! The OpenStack Load Balancer v2 (Octavia-compatible) HTTP API.
