//! Benchmarks: API throughput and latency against any Octavia-compatible endpoint.
