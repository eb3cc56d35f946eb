//! The control-plane ↔ LB-VM protocol: the desired state pushed to each agent and the heartbeat it sends back.
