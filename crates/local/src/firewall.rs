//! Neutron security groups on the local cloud: each LB VM namespace's `INPUT` chain admits
//! what the ingress rules of its ports' groups allow, plus loopback and replies to traffic the
//! VM started (stateful, like Neutron's); egress stays open (Neutron's default egress rules).
//! A VM whose ports have no group is not filtered, like a port with port security off.
//!
//! The ruleset is rendered whole and loaded with `iptables-restore` (atomic: no window with a
//! half-written chain). The lab is IPv4-only, so rules with an IPv6 remote prefix are skipped.

use ipnet::IpNet;

/// One ingress rule as the driver stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngressRule {
    /// `tcp`, `udp`, `icmp` or `any`.
    pub protocol: String,
    /// Inclusive destination port range (TCP/UDP only).
    pub ports: Option<(u16, u16)>,
    /// Source prefix; `None` = anywhere.
    pub remote: Option<IpNet>,
}

/// The `iptables-restore` input for a VM: `filtered` = its ports have security groups.
pub fn render(filtered: bool, rules: &[IngressRule]) -> String {
    let mut out = String::from("*filter\n");
    out.push_str(if filtered {
        ":INPUT DROP [0:0]\n"
    } else {
        ":INPUT ACCEPT [0:0]\n"
    });
    out.push_str(":FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n");
    if filtered {
        out.push_str("-A INPUT -i lo -j ACCEPT\n");
        out.push_str("-A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT\n");
        for r in rules {
            if let Some(line) = rule_line(r) {
                out.push_str(&line);
                out.push('\n');
            }
        }
    }
    out.push_str("COMMIT\n");
    out
}

fn rule_line(r: &IngressRule) -> Option<String> {
    let mut line = String::from("-A INPUT");
    match r.remote {
        Some(IpNet::V6(_)) => return None,
        Some(net @ IpNet::V4(_)) => line.push_str(&format!(" -s {net}")),
        None => {}
    }
    match r.protocol.as_str() {
        p @ ("tcp" | "udp") => {
            line.push_str(&format!(" -p {p} -m {p}"));
            if let Some((lo, hi)) = r.ports {
                line.push_str(&format!(" --dport {lo}:{hi}"));
            }
        }
        "icmp" => line.push_str(" -p icmp"),
        "any" => {}
        // The driver only stores the four protocols above; anything else admits nothing.
        _ => return None,
    }
    line.push_str(" -j ACCEPT");
    Some(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(protocol: &str, ports: Option<(u16, u16)>, remote: Option<&str>) -> IngressRule {
        IngressRule {
            protocol: protocol.into(),
            ports,
            remote: remote.map(|r| r.parse().unwrap()),
        }
    }

    #[test]
    fn groups_give_a_stateful_default_deny_with_their_rules() {
        let rules = [
            rule("tcp", Some((80, 80)), None),
            rule("udp", Some((3784, 3785)), Some("198.18.64.0/20")),
            rule("icmp", None, None),
            rule("tcp", Some((22, 22)), Some("2001:db8::/32")),
        ];
        let text = render(true, &rules);
        assert!(text.starts_with("*filter\n:INPUT DROP [0:0]\n"));
        assert!(text.contains("-A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT\n"));
        assert!(text.contains("-A INPUT -p tcp -m tcp --dport 80:80 -j ACCEPT\n"));
        assert!(
            text.contains("-A INPUT -s 198.18.64.0/20 -p udp -m udp --dport 3784:3785 -j ACCEPT\n")
        );
        assert!(text.contains("-A INPUT -p icmp -j ACCEPT\n"));
        assert!(!text.contains("2001:db8"), "IPv6 remotes are skipped");
        assert!(text.ends_with("COMMIT\n"));
    }

    #[test]
    fn no_group_means_no_filtering() {
        let text = render(false, &[rule("tcp", Some((80, 80)), None)]);
        assert!(text.contains(":INPUT ACCEPT [0:0]\n"));
        assert!(!text.contains("-A INPUT"));
    }
}
