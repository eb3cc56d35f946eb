//! The agent on each LB VM: renders and applies HAProxy and FRR configuration, reports health.
