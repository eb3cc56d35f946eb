//! Deterministic resource names. A step that crashed after a create can find what it made by
//! these names, so every create is idempotent from the flow's point of view.

/// Security group of a load balancer.
pub fn security_group(lb_id: &str) -> String {
    format!("klb-{lb_id}-sg")
}

/// Anti-affinity server group of a load balancer.
pub fn server_group(lb_id: &str) -> String {
    format!("klb-{lb_id}-sg-group")
}

/// LB VM number `index` (0-based) of a load balancer.
pub fn server(lb_id: &str, index: u32) -> String {
    format!("klb-{lb_id}-vm-{index}")
}

/// VIP port of a load balancer.
pub fn vip_port(lb_id: &str) -> String {
    format!("klb-{lb_id}-vip")
}

/// PPS alarm of a load balancer.
pub fn alarm(lb_id: &str) -> String {
    format!("klb-{lb_id}-pps")
}
