//! The local cloud: LB "VMs", gateways, clients and members as Linux network namespaces on this host.
