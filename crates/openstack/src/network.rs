//! [`Network`] on Neutron.

use std::net::IpAddr;

use async_trait::async_trait;
use http::Method;
use ipnet::IpNet;
use openstack_sdk::types::ServiceType;
use serde::Deserialize;
use serde_json::{Value, json};

use klb_cloud::{
    CloudError, CloudErrorKind, CloudResult, Direction, Network, NetworkInfo, Port, PortSpec,
    Protocol, RuleSpec, SecurityGroup, SecurityGroupRule, SecurityGroupSpec, Subnet,
};

use crate::OpenStackCloud;
use crate::compute::is_nic_port_name;
use crate::session::Call;

fn neutron(
    operation: &'static str,
    resource: impl Into<String>,
    method: Method,
    path: impl Into<String>,
) -> Call {
    // The catalog names Neutron's root; its API lives under v2.0.
    Call::new(
        operation,
        resource,
        method,
        ServiceType::Network,
        format!("v2.0/{}", path.into()),
    )
}

fn looks_like_id(s: &str) -> bool {
    s.len() == 36 && s.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
}

#[derive(Debug, Deserialize)]
struct NetworkReply {
    id: String,
    name: String,
    #[serde(default)]
    subnets: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct SubnetReply {
    id: String,
    name: String,
    network_id: String,
    cidr: IpNet,
    #[serde(default)]
    gateway_ip: Option<IpAddr>,
}

#[derive(Debug, Deserialize)]
struct FixedIp {
    ip_address: IpAddr,
}

#[derive(Debug, Deserialize)]
struct AddressPair {
    ip_address: String,
}

/// A Neutron port as klb reads it.
#[derive(Debug, Deserialize)]
pub(crate) struct PortReply {
    pub id: String,
    #[serde(default)]
    pub name: String,
    pub network_id: String,
    #[serde(default)]
    fixed_ips: Vec<FixedIp>,
    #[serde(default)]
    security_groups: Vec<String>,
    #[serde(default)]
    allowed_address_pairs: Vec<AddressPair>,
    #[serde(default)]
    device_id: String,
    #[serde(default)]
    device_owner: String,
}

impl PortReply {
    pub(crate) fn ips(&self) -> Vec<IpAddr> {
        self.fixed_ips.iter().map(|f| f.ip_address).collect()
    }

    fn into_port(self) -> Port {
        Port {
            fixed_ips: self.ips(),
            allowed_address_pairs: self
                .allowed_address_pairs
                .iter()
                .filter_map(|p| {
                    let text = p.ip_address.split('/').next().unwrap_or_default();
                    text.parse().ok()
                })
                .collect(),
            id: self.id,
            name: self.name,
            network_id: self.network_id,
            security_group_ids: self.security_groups,
            device_id: Some(self.device_id).filter(|d| !d.is_empty()),
            device_owner: Some(self.device_owner).filter(|d| !d.is_empty()),
        }
    }
}

#[derive(Debug, Deserialize)]
struct RuleReply {
    id: String,
    security_group_id: String,
    direction: String,
    #[serde(default)]
    protocol: Option<String>,
    #[serde(default)]
    port_range_min: Option<u16>,
    #[serde(default)]
    port_range_max: Option<u16>,
    #[serde(default)]
    remote_ip_prefix: Option<String>,
}

impl RuleReply {
    fn spec(&self) -> Option<RuleSpec> {
        let protocol = match self.protocol.as_deref() {
            Some("tcp") | Some("6") => Protocol::Tcp,
            Some("udp") | Some("17") => Protocol::Udp,
            Some("icmp") | Some("1") => Protocol::Icmp,
            None => Protocol::Any,
            // Rules klb never makes (another protocol) are reported as "any" so the flow's
            // diff removes them.
            Some(_) => Protocol::Any,
        };
        let remote_cidr = match self.remote_ip_prefix.as_deref() {
            None | Some("0.0.0.0/0") | Some("::/0") => None,
            Some(p) => Some(p.parse().ok()?),
        };
        Some(RuleSpec {
            direction: if self.direction == "egress" {
                Direction::Egress
            } else {
                Direction::Ingress
            },
            protocol,
            ports: match (self.port_range_min, self.port_range_max) {
                (Some(a), Some(b)) => Some((a, b)),
                (Some(a), None) => Some((a, a)),
                _ => None,
            },
            remote_cidr,
        })
    }
}

/// The Neutron rules for one spec: one per ethertype when the remote is "anywhere".
pub(crate) fn rule_bodies(security_group_id: &str, rule: &RuleSpec) -> Vec<Value> {
    let ethertypes: Vec<(&str, Option<String>)> = match rule.remote_cidr {
        Some(net @ IpNet::V4(_)) => vec![("IPv4", Some(net.to_string()))],
        Some(net @ IpNet::V6(_)) => vec![("IPv6", Some(net.to_string()))],
        None => vec![("IPv4", None), ("IPv6", None)],
    };
    ethertypes
        .into_iter()
        .map(|(ethertype, prefix)| {
            let mut r = json!({
                "security_group_id": security_group_id,
                "direction": match rule.direction {
                    Direction::Ingress => "ingress",
                    Direction::Egress => "egress",
                },
                "ethertype": ethertype,
            });
            let protocol = match rule.protocol {
                Protocol::Tcp => Some("tcp"),
                Protocol::Udp => Some("udp"),
                Protocol::Icmp => Some("icmp"),
                Protocol::Any => None,
            };
            if let Some(p) = protocol {
                r["protocol"] = json!(p);
                if let (Some((a, b)), Protocol::Tcp | Protocol::Udp) = (rule.ports, rule.protocol) {
                    r["port_range_min"] = json!(a);
                    r["port_range_max"] = json!(b);
                }
            }
            if let Some(prefix) = prefix {
                r["remote_ip_prefix"] = json!(prefix);
            }
            json!({ "security_group_rule": r })
        })
        .collect()
}

impl OpenStackCloud {
    pub(crate) async fn port_reply(&self, id: &str) -> CloudResult<Option<PortReply>> {
        let call = neutron("get_port", id, Method::GET, format!("ports/{id}")).key("port");
        match self.inner.session.json(&call).await {
            Ok(p) => Ok(Some(p)),
            Err(e) if e.kind == CloudErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub(crate) async fn port_replies_named(&self, name: &str) -> CloudResult<Vec<PortReply>> {
        let call = neutron("find_ports", name, Method::GET, "ports")
            .query("name", name)
            .key("ports");
        self.inner.session.json(&call).await
    }

    pub(crate) async fn ports_of_device(&self, device_id: &str) -> CloudResult<Vec<PortReply>> {
        let call = neutron("list_ports", device_id, Method::GET, "ports")
            .query("device_id", device_id)
            .key("ports");
        self.inner.session.json(&call).await
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn create_port_reply(
        &self,
        name: &str,
        network_id: &str,
        subnet_id: Option<&str>,
        fixed_ip: Option<IpAddr>,
        security_group_ids: &[String],
        device_owner: Option<&str>,
        description: &str,
    ) -> CloudResult<PortReply> {
        let mut port = json!({
            "name": name,
            "network_id": network_id,
            "security_groups": security_group_ids,
            "description": description,
        });
        if subnet_id.is_some() || fixed_ip.is_some() {
            let mut ip = json!({});
            if let Some(s) = subnet_id {
                ip["subnet_id"] = json!(s);
            }
            if let Some(a) = fixed_ip {
                ip["ip_address"] = json!(a.to_string());
            }
            port["fixed_ips"] = json!([ip]);
        }
        if let Some(owner) = device_owner {
            port["device_owner"] = json!(owner);
        }
        let call = neutron("create_port", name, Method::POST, "ports")
            .body(&json!({ "port": port }))
            .key("port");
        self.inner.session.json(&call).await
    }

    pub(crate) async fn delete_port_by_id(&self, id: &str) -> CloudResult<()> {
        let call = neutron("delete_port", id, Method::DELETE, format!("ports/{id}"));
        self.inner.session.send_ok(&call).await.map(drop)
    }
}

#[async_trait]
impl Network for OpenStackCloud {
    async fn find_network(&self, id_or_name: &str) -> CloudResult<Option<NetworkInfo>> {
        let found: Vec<NetworkReply> = if looks_like_id(id_or_name) {
            let call = neutron(
                "find_network",
                id_or_name,
                Method::GET,
                format!("networks/{id_or_name}"),
            )
            .key("network");
            match self.inner.session.json(&call).await {
                Ok(n) => vec![n],
                Err(e) if e.kind == CloudErrorKind::NotFound => vec![],
                Err(e) => return Err(e),
            }
        } else {
            let call = neutron("find_network", id_or_name, Method::GET, "networks")
                .query("name", id_or_name)
                .key("networks");
            self.inner.session.json(&call).await?
        };
        Ok(found.into_iter().next().map(|n| NetworkInfo {
            id: n.id,
            name: n.name,
            subnet_ids: n.subnets,
        }))
    }

    async fn find_subnet(&self, id_or_name: &str) -> CloudResult<Option<Subnet>> {
        let found: Vec<SubnetReply> = if looks_like_id(id_or_name) {
            let call = neutron(
                "find_subnet",
                id_or_name,
                Method::GET,
                format!("subnets/{id_or_name}"),
            )
            .key("subnet");
            match self.inner.session.json(&call).await {
                Ok(s) => vec![s],
                Err(e) if e.kind == CloudErrorKind::NotFound => vec![],
                Err(e) => return Err(e),
            }
        } else {
            let call = neutron("find_subnet", id_or_name, Method::GET, "subnets")
                .query("name", id_or_name)
                .key("subnets");
            self.inner.session.json(&call).await?
        };
        Ok(found.into_iter().next().map(|s| Subnet {
            id: s.id,
            name: s.name,
            network_id: s.network_id,
            cidr: s.cidr,
            gateway_ip: s.gateway_ip,
        }))
    }

    async fn create_security_group(&self, spec: &SecurityGroupSpec) -> CloudResult<SecurityGroup> {
        #[derive(Deserialize)]
        struct Reply {
            id: String,
            name: String,
        }
        let call = neutron(
            "create_security_group",
            &spec.name,
            Method::POST,
            "security-groups",
        )
        .body(&json!({"security_group": {"name": spec.name, "description": spec.description}}))
        .key("security_group");
        let group: Reply = self.inner.session.json(&call).await?;
        Ok(SecurityGroup {
            id: group.id,
            name: group.name,
        })
    }

    async fn find_security_group(&self, name: &str) -> CloudResult<Option<SecurityGroup>> {
        #[derive(Deserialize)]
        struct Reply {
            id: String,
            name: String,
        }
        let call = neutron("find_security_group", name, Method::GET, "security-groups")
            .query("name", name)
            .key("security_groups");
        let groups: Vec<Reply> = self.inner.session.json(&call).await?;
        Ok(groups.into_iter().next().map(|g| SecurityGroup {
            id: g.id,
            name: g.name,
        }))
    }

    async fn delete_security_group(&self, id: &str) -> CloudResult<()> {
        // VM ports a crashed create left behind still hold the group; they go first.
        let call = neutron("list_ports", id, Method::GET, "ports")
            .query("security_groups", id)
            .key("ports");
        let ports: Vec<PortReply> = self.inner.session.json(&call).await?;
        for port in ports {
            if is_nic_port_name(&port.name) && port.device_id.is_empty() {
                self.delete_port_by_id(&port.id).await?;
            }
        }
        let call = neutron(
            "delete_security_group",
            id,
            Method::DELETE,
            format!("security-groups/{id}"),
        );
        self.inner.session.send_ok(&call).await.map(drop)
    }

    async fn add_security_group_rule(
        &self,
        security_group_id: &str,
        rule: &RuleSpec,
    ) -> CloudResult<SecurityGroupRule> {
        let mut first = None;
        for body in rule_bodies(security_group_id, rule) {
            let call = neutron(
                "add_security_group_rule",
                security_group_id,
                Method::POST,
                "security-group-rules",
            )
            .body(&body)
            .key("security_group_rule");
            match self.inner.session.json::<RuleReply>(&call).await {
                Ok(r) => {
                    first.get_or_insert(r.id);
                }
                // One of the pair exists already (a retried call): fine.
                Err(e) if e.kind == CloudErrorKind::Conflict => {}
                Err(e) => return Err(e),
            }
        }
        Ok(SecurityGroupRule {
            id: first.unwrap_or_default(),
            security_group_id: security_group_id.to_owned(),
            spec: rule.clone(),
        })
    }

    async fn list_security_group_rules(
        &self,
        security_group_id: &str,
    ) -> CloudResult<Vec<SecurityGroupRule>> {
        let call = neutron(
            "list_security_group_rules",
            security_group_id,
            Method::GET,
            "security-group-rules",
        )
        .query("security_group_id", security_group_id)
        .key("security_group_rules");
        let rules: Vec<RuleReply> = self.inner.session.json(&call).await?;
        Ok(rules
            .into_iter()
            .map(|r| SecurityGroupRule {
                spec: r.spec().unwrap_or(RuleSpec {
                    direction: Direction::Ingress,
                    protocol: Protocol::Any,
                    ports: None,
                    remote_cidr: None,
                }),
                id: r.id,
                security_group_id: r.security_group_id,
            })
            .collect())
    }

    async fn delete_security_group_rule(&self, rule_id: &str) -> CloudResult<()> {
        let call = neutron(
            "delete_security_group_rule",
            rule_id,
            Method::DELETE,
            format!("security-group-rules/{rule_id}"),
        );
        self.inner.session.send_ok(&call).await.map(drop)
    }

    async fn create_port(&self, spec: &PortSpec) -> CloudResult<Port> {
        self.create_port_reply(
            &spec.name,
            &spec.network_id,
            spec.subnet_id.as_deref(),
            spec.fixed_ip,
            &spec.security_group_ids,
            spec.device_owner.as_deref(),
            "klb",
        )
        .await
        .map(PortReply::into_port)
    }

    async fn get_port(&self, id: &str) -> CloudResult<Option<Port>> {
        Ok(self.port_reply(id).await?.map(PortReply::into_port))
    }

    async fn find_ports(&self, name: &str) -> CloudResult<Vec<Port>> {
        Ok(self
            .port_replies_named(name)
            .await?
            .into_iter()
            .map(PortReply::into_port)
            .collect())
    }

    async fn delete_port(&self, id: &str) -> CloudResult<()> {
        self.delete_port_by_id(id).await
    }

    async fn set_allowed_address_pairs(
        &self,
        port_id: &str,
        addresses: &[IpAddr],
    ) -> CloudResult<Port> {
        let pairs: Vec<Value> = addresses
            .iter()
            .map(|a| json!({"ip_address": a.to_string()}))
            .collect();
        let call = neutron(
            "set_allowed_address_pairs",
            port_id,
            Method::PUT,
            format!("ports/{port_id}"),
        )
        .body(&json!({"port": {"allowed_address_pairs": pairs}}))
        .key("port");
        self.inner
            .session
            .json::<PortReply>(&call)
            .await
            .map(PortReply::into_port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anywhere_is_one_rule_per_ethertype() {
        let bodies = rule_bodies("sg", &RuleSpec::tcp_in(80, None));
        assert_eq!(bodies.len(), 2);
        assert_eq!(bodies[0]["security_group_rule"]["ethertype"], "IPv4");
        assert_eq!(bodies[1]["security_group_rule"]["ethertype"], "IPv6");
        assert_eq!(bodies[0]["security_group_rule"]["port_range_min"], 80);
        assert!(
            bodies[0]["security_group_rule"]
                .get("remote_ip_prefix")
                .is_none()
        );
        let bfd = RuleSpec {
            direction: Direction::Ingress,
            protocol: Protocol::Udp,
            ports: Some((3784, 3785)),
            remote_cidr: Some("198.18.64.0/20".parse().unwrap()),
        };
        let bodies = rule_bodies("sg", &bfd);
        assert_eq!(bodies.len(), 1);
        assert_eq!(bodies[0]["security_group_rule"]["protocol"], "udp");
        assert_eq!(
            bodies[0]["security_group_rule"]["remote_ip_prefix"],
            "198.18.64.0/20"
        );
    }

    #[test]
    fn rules_read_back_as_the_spec_they_came_from() {
        let specs = [
            RuleSpec::tcp_in(443, None),
            RuleSpec::tcp_in(62000, Some("198.18.128.0/17".parse().unwrap())),
            RuleSpec {
                direction: Direction::Egress,
                protocol: Protocol::Any,
                ports: None,
                remote_cidr: None,
            },
        ];
        for spec in specs {
            for body in rule_bodies("sg", &spec) {
                let mut r = body["security_group_rule"].clone();
                r["id"] = json!("r");
                let reply: RuleReply = serde_json::from_value(r).unwrap();
                assert_eq!(reply.spec(), Some(spec.clone()));
            }
        }
    }
}

/// A VIP reserved for a new load balancer (the API answers with it; the create flow adopts
/// the port by its deterministic name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReservedVip {
    /// The VIP.
    pub address: IpAddr,
    /// The port holding it.
    pub port_id: String,
    /// Its subnet.
    pub subnet_id: String,
    /// Its network.
    pub network_id: String,
}

/// Why [`OpenStackCloud::reserve_vip`] reserved nothing. Every message is client-facing
/// (Octavia's wording where it has one): the API answers it as a 400 fault string.
#[derive(Debug, thiserror::Error)]
pub enum VipReservationError {
    /// The subnet does not exist or the project cannot see it (Neutron's own error is left
    /// out on purpose: it would tell apart "missing" from "someone else's").
    #[error("Subnet {subnet} not found.")]
    SubnetNotFound {
        /// The requested subnet.
        subnet: String,
    },
    /// The network does not exist or the project cannot see it.
    #[error("Network {network} not found.")]
    NetworkNotFound {
        /// The requested network.
        network: String,
    },
    /// Both were given and the subnet is on another network.
    #[error("Validation failure: subnet {subnet} is not on network {network}.")]
    SubnetNotOnNetwork {
        /// The requested subnet.
        subnet: String,
        /// The requested network.
        network: String,
    },
    /// The network has no subnet of the VIP's address family.
    #[error("Network {network} has no usable subnet for the VIP.")]
    NoUsableSubnet {
        /// The requested network.
        network: String,
    },
    /// Neither a subnet nor a network was given.
    #[error("VIP must contain one of: vip_network_id, vip_subnet_id.")]
    NoSubnetOrNetwork,
    /// Reading one of the network's subnets failed.
    #[error(transparent)]
    Neutron(CloudError),
    /// Neutron refused the port (address taken, not in the subnet, quota).
    #[error("Validation failure: {}", .0.message)]
    Refused(#[source] CloudError),
    /// Creating the port failed for another reason (the detail is in the source).
    #[error("The VIP could not be allocated; try again later.")]
    Unavailable(#[source] CloudError),
    /// Neutron created the port without an address.
    #[error("The VIP port got no address.")]
    NoAddress,
}

#[derive(Debug, Deserialize)]
struct Ownership {
    network_id: Option<String>,
    #[serde(default)]
    project_id: String,
    #[serde(default)]
    shared: bool,
    #[serde(default)]
    subnets: Vec<String>,
    #[serde(default)]
    ip_version: Option<u8>,
}

impl OpenStackCloud {
    /// Reserves the VIP of load balancer `lb_id` for `project_id` on its subnet (or network):
    /// the subnet must be the project's or on a shared network, as Octavia checks with the
    /// tenant's own view. Errors are client-facing reasons (Octavia's wording where it has one).
    pub async fn reserve_vip(
        &self,
        lb_id: &str,
        project_id: &str,
        subnet_id: Option<&str>,
        network_id: Option<&str>,
        address: Option<IpAddr>,
    ) -> Result<ReservedVip, VipReservationError> {
        use VipReservationError as E;
        let get = |what: &'static str, id: &str| {
            neutron("get", id, Method::GET, format!("{what}s/{id}")).key(what)
        };
        let visible = |o: &Ownership, net_shared: bool| o.project_id == project_id || net_shared;
        let (subnet_id, network_id) = match (subnet_id, network_id) {
            (Some(subnet), _) => {
                let not_found = || E::SubnetNotFound {
                    subnet: subnet.to_owned(),
                };
                let s: Ownership = self
                    .inner
                    .session
                    .json(&get("subnet", subnet))
                    .await
                    .map_err(|_| not_found())?;
                let net_id = s.network_id.clone().ok_or_else(not_found)?;
                let n: Ownership = self
                    .inner
                    .session
                    .json(&get("network", &net_id))
                    .await
                    .map_err(|_| not_found())?;
                if !visible(&s, n.shared) {
                    return Err(not_found());
                }
                if network_id.is_some_and(|n| n != net_id) {
                    return Err(E::SubnetNotOnNetwork {
                        subnet: subnet.to_owned(),
                        network: network_id.unwrap_or_default().to_owned(),
                    });
                }
                (subnet.to_owned(), net_id)
            }
            (None, Some(network)) => {
                let not_found = || E::NetworkNotFound {
                    network: network.to_owned(),
                };
                let n: Ownership = self
                    .inner
                    .session
                    .json(&get("network", network))
                    .await
                    .map_err(|_| not_found())?;
                if !visible(&n, n.shared) {
                    return Err(not_found());
                }
                let mut chosen = None;
                for id in &n.subnets {
                    let s: Ownership = self
                        .inner
                        .session
                        .json(&get("subnet", id))
                        .await
                        .map_err(E::Neutron)?;
                    let family = match address {
                        Some(IpAddr::V6(_)) => 6,
                        _ => 4,
                    };
                    if s.ip_version == Some(family) {
                        chosen = Some(id.clone());
                        break;
                    }
                }
                let subnet = chosen.ok_or_else(|| E::NoUsableSubnet {
                    network: network.to_owned(),
                })?;
                (subnet, network.to_owned())
            }
            (None, None) => {
                return Err(E::NoSubnetOrNetwork);
            }
        };
        let name = klb_cloud::names::vip_port(lb_id);
        let port = self
            .create_port_reply(
                &name,
                &network_id,
                Some(&subnet_id),
                address,
                &[],
                Some("klb:vip"),
                &format!("klb VIP of load balancer {lb_id} (project {project_id})"),
            )
            .await
            .map_err(|e| match e.kind {
                CloudErrorKind::Conflict | CloudErrorKind::Invalid | CloudErrorKind::Quota => {
                    E::Refused(e)
                }
                _ => E::Unavailable(e),
            })?;
        let address = port.ips().into_iter().next().ok_or(E::NoAddress)?;
        Ok(ReservedVip {
            address,
            port_id: port.id,
            subnet_id,
            network_id,
        })
    }
}
