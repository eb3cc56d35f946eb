//! [`Compute`] on Nova (microversion 2.67: server groups with one `policy`, tags on create and
//! in lists) and the Glance lookup of the LB image.

use std::collections::BTreeMap;
use std::net::IpAddr;

use async_trait::async_trait;
use base64::Engine as _;
use http::Method;
use openstack_sdk::types::ServiceType;
use serde::Deserialize;
use serde_json::{Value, json};

use klb_cloud::{
    CloudError, CloudErrorKind, CloudResult, Compute, META_LB_ID, NicSpec, Server, ServerAddress,
    ServerFilter, ServerGroup, ServerGroupPolicy, ServerGroupSpec, ServerSpec, ServerStatus,
};

use crate::network::PortReply;
use crate::session::Call;
use crate::{OpenStackCloud, TAG, VmBoot, lb_tag};

/// Nova microversion klb speaks.
const NOVA: (u8, u8) = (2, 67);

fn nova(
    operation: &'static str,
    resource: impl Into<String>,
    method: Method,
    path: impl Into<String>,
) -> Call {
    Call::new(operation, resource, method, ServiceType::Compute, path).version(NOVA.0, NOVA.1)
}

/// The pre-created port of NIC `n` of server `name`.
pub(crate) fn nic_port_name(server_name: &str, n: usize) -> String {
    format!("{server_name}-nic{n}")
}

/// True for a port name [`nic_port_name`] made.
pub(crate) fn is_nic_port_name(name: &str) -> bool {
    name.starts_with("klb-")
        && name
            .rsplit_once("-nic")
            .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

#[derive(Debug, Deserialize)]
struct GroupReply {
    id: String,
    name: String,
    #[serde(default)]
    policy: Option<String>,
    #[serde(default)]
    members: Vec<String>,
}

impl GroupReply {
    fn into_group(self) -> ServerGroup {
        ServerGroup {
            policy: match self.policy.as_deref() {
                Some("soft-anti-affinity") => ServerGroupPolicy::SoftAntiAffinity,
                _ => ServerGroupPolicy::AntiAffinity,
            },
            id: self.id,
            name: self.name,
            members: self.members,
        }
    }
}

#[derive(Debug, Deserialize)]
struct ServerReply {
    id: String,
    name: String,
    status: String,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
    #[serde(default)]
    fault: Option<Fault>,
}

#[derive(Debug, Deserialize)]
struct Fault {
    #[serde(default)]
    message: String,
}

fn status_of(s: &str) -> ServerStatus {
    match s {
        "BUILD" => ServerStatus::Build,
        "ACTIVE" => ServerStatus::Active,
        "ERROR" => ServerStatus::Error,
        other => ServerStatus::Other(other.to_owned()),
    }
}

/// The server group policy Nova gets.
fn policy_name(policy: ServerGroupPolicy, soft: bool) -> &'static str {
    match (policy, soft) {
        (ServerGroupPolicy::SoftAntiAffinity, _) | (_, true) => "soft-anti-affinity",
        (ServerGroupPolicy::AntiAffinity, false) => "anti-affinity",
    }
}

/// The `POST /servers` body for `spec`, booting with `ports` (pre-created) and `image_id`.
pub(crate) fn server_body(
    spec: &ServerSpec,
    image_id: &str,
    ports: &[String],
    user_data: Option<&str>,
) -> Value {
    let mut server = json!({
        "name": spec.name,
        "flavorRef": spec.flavor_id,
        "networks": ports.iter().map(|p| json!({"port": p})).collect::<Vec<_>>(),
        "metadata": spec.metadata,
        "tags": server_tags(spec),
    });
    match spec.boot_volume_gib {
        Some(size) if size > 0 => {
            server["imageRef"] = json!("");
            server["block_device_mapping_v2"] = json!([{
                "boot_index": 0,
                "uuid": image_id,
                "source_type": "image",
                "destination_type": "volume",
                "volume_size": size,
                "delete_on_termination": true,
            }]);
        }
        _ => server["imageRef"] = json!(image_id),
    }
    if let Some(az) = &spec.availability_zone {
        server["availability_zone"] = json!(az);
    }
    if let Some(data) = user_data {
        server["user_data"] = json!(base64::engine::general_purpose::STANDARD.encode(data));
    }
    let mut body = json!({ "server": server });
    if let Some(group) = &spec.server_group_id {
        body["os:scheduler_hints"] = json!({ "group": group });
    }
    body
}

fn server_tags(spec: &ServerSpec) -> Vec<String> {
    let mut tags = vec![TAG.to_owned()];
    if let Some(lb) = spec.metadata.get(META_LB_ID) {
        tags.push(lb_tag(lb));
    }
    tags
}

impl OpenStackCloud {
    /// `image_id`, or the newest active image tagged `image_tag`.
    pub(crate) async fn image_id(&self) -> CloudResult<String> {
        let cfg = &self.inner.config;
        if let Some(id) = &cfg.image_id {
            let call = Call::new(
                "get_image",
                id,
                Method::GET,
                ServiceType::Image,
                format!("v2/images/{id}"),
            );
            return match self.inner.session.json::<Value>(&call).await {
                Ok(_) => Ok(id.clone()),
                Err(e) if e.kind == CloudErrorKind::NotFound => Err(CloudError::new(
                    "get_image",
                    id,
                    CloudErrorKind::Invalid,
                    format!("image_id: image {id} does not exist"),
                )),
                Err(e) => Err(e),
            };
        }
        let tag = cfg.image_tag.as_deref().ok_or_else(|| {
            CloudError::new(
                "get_image",
                "",
                CloudErrorKind::Invalid,
                "neither image_id nor image_tag is set",
            )
        })?;
        let call = Call::new(
            "find_image",
            tag,
            Method::GET,
            ServiceType::Image,
            "v2/images",
        )
        .query("tag", tag)
        .query("status", "active")
        .query("sort", "created_at:desc")
        .query("limit", "1")
        .key("images");
        #[derive(Deserialize)]
        struct Image {
            id: String,
        }
        let images: Vec<Image> = self.inner.session.json(&call).await?;
        images.into_iter().next().map(|i| i.id).ok_or_else(|| {
            CloudError::new(
                "find_image",
                tag,
                CloudErrorKind::Invalid,
                format!("image_tag: no active image is tagged {tag:?}"),
            )
        })
    }

    pub(crate) async fn check_flavor(&self) -> CloudResult<()> {
        let id = &self.inner.config.flavor_id;
        let call = nova("get_flavor", id, Method::GET, format!("flavors/{id}"));
        match self.inner.session.json::<Value>(&call).await {
            Ok(_) => Ok(()),
            Err(e) if e.kind == CloudErrorKind::NotFound => Err(CloudError::new(
                "get_flavor",
                id,
                CloudErrorKind::Invalid,
                format!("base_flavor_id: flavor {id} does not exist"),
            )),
            Err(e) => Err(e),
        }
    }

    /// The server with its addresses, read from Neutron (Nova lists addresses by network name
    /// and without port ids).
    async fn with_addresses(&self, reply: ServerReply) -> CloudResult<Server> {
        let ports = self.ports_of_device(&reply.id).await?;
        let mut addresses = Vec::new();
        for port in ports {
            for ip in port.ips() {
                addresses.push(ServerAddress {
                    network_id: port.network_id.clone(),
                    ip,
                    port_id: port.id.clone(),
                });
            }
        }
        Ok(Server {
            id: reply.id,
            name: reply.name,
            status: status_of(&reply.status),
            addresses,
            metadata: reply.metadata,
            fault: reply.fault.map(|f| f.message).filter(|m| !m.is_empty()),
        })
    }

    /// The ports of `spec`'s NICs: adopted by name (a retried create after a crash), else
    /// created with the spec's security groups.
    async fn nic_ports(&self, spec: &ServerSpec) -> CloudResult<(Vec<PortReply>, Vec<String>)> {
        let mut ports = Vec::new();
        let mut created = Vec::new();
        for (n, nic) in spec.nics.iter().enumerate() {
            let port = match nic {
                NicSpec::Port { port_id } => self.port_reply(port_id).await?.ok_or_else(|| {
                    CloudError::not_found("create_server", port_id).with_retryable(false)
                })?,
                NicSpec::Network {
                    network_id,
                    fixed_ip,
                } => {
                    let name = nic_port_name(&spec.name, n);
                    match self.port_replies_named(&name).await?.into_iter().next() {
                        Some(p) => p,
                        None => {
                            let p = self
                                .create_port_reply(
                                    &name,
                                    network_id,
                                    None,
                                    *fixed_ip,
                                    &spec.security_group_ids,
                                    None,
                                    &format!("klb LB VM {}", spec.name),
                                )
                                .await?;
                            created.push(p.id.clone());
                            p
                        }
                    }
                }
            };
            ports.push(port);
        }
        Ok((ports, created))
    }

    fn boot_addr(&self, ports: &[PortReply], network_id: &str) -> CloudResult<IpAddr> {
        ports
            .iter()
            .find(|p| p.network_id == network_id)
            .and_then(|p| p.ips().into_iter().next())
            .ok_or_else(|| {
                CloudError::new(
                    "create_server",
                    network_id,
                    CloudErrorKind::Invalid,
                    "the VM has no address on this network",
                )
                .with_retryable(false)
            })
    }

    async fn boot(&self, spec: &ServerSpec, ports: &[PortReply]) -> CloudResult<Server> {
        let image_id = if spec.image_id.is_empty() {
            self.image_id().await?
        } else {
            spec.image_id.clone()
        };
        let boot = VmBoot {
            server_name: spec.name.clone(),
            metadata: spec.metadata.clone(),
            mgmt_addr: self.boot_addr(ports, &self.inner.mgmt_network_id)?,
            l3_addr: self.boot_addr(ports, &self.inner.l3_network_id)?,
        };
        let user_data = self.inner.user_data.render(&boot).await.map_err(|why| {
            CloudError::new("create_server", &spec.name, CloudErrorKind::Other, why)
                .with_retryable(false)
        })?;
        let port_ids: Vec<String> = ports.iter().map(|p| p.id.clone()).collect();
        let body = server_body(spec, &image_id, &port_ids, Some(&user_data));
        let call = nova("create_server", &spec.name, Method::POST, "servers")
            .body(&body)
            .key("server");
        #[derive(Deserialize)]
        struct Created {
            id: String,
        }
        let created: Created = self.inner.session.json(&call).await?;
        Ok(Server {
            id: created.id,
            name: spec.name.clone(),
            status: ServerStatus::Build,
            addresses: Vec::new(),
            metadata: spec.metadata.clone(),
            fault: None,
        })
    }

    async fn server_reply(&self, id: &str) -> CloudResult<Option<ServerReply>> {
        let call = nova("get_server", id, Method::GET, format!("servers/{id}")).key("server");
        match self.inner.session.json(&call).await {
            Ok(s) => Ok(Some(s)),
            Err(e) if e.kind == CloudErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

#[async_trait]
impl Compute for OpenStackCloud {
    async fn create_server_group(&self, spec: &ServerGroupSpec) -> CloudResult<ServerGroup> {
        let body = json!({"server_group": {
            "name": spec.name,
            "policy": policy_name(spec.policy, self.inner.config.soft_anti_affinity),
        }});
        let call = nova(
            "create_server_group",
            &spec.name,
            Method::POST,
            "os-server-groups",
        )
        .body(&body)
        .key("server_group");
        Ok(self
            .inner
            .session
            .json::<GroupReply>(&call)
            .await?
            .into_group())
    }

    async fn find_server_group(&self, name: &str) -> CloudResult<Option<ServerGroup>> {
        let call = nova("find_server_group", name, Method::GET, "os-server-groups")
            .query("limit", "1000")
            .key("server_groups");
        let groups: Vec<GroupReply> = self.inner.session.json(&call).await?;
        Ok(groups
            .into_iter()
            .find(|g| g.name == name)
            .map(GroupReply::into_group))
    }

    async fn delete_server_group(&self, id: &str) -> CloudResult<()> {
        let call = nova(
            "delete_server_group",
            id,
            Method::DELETE,
            format!("os-server-groups/{id}"),
        );
        self.inner.session.send_ok(&call).await.map(drop)
    }

    async fn create_server(&self, spec: &ServerSpec) -> CloudResult<Server> {
        let (ports, created) = self.nic_ports(spec).await?;
        match self.boot(spec, &ports).await {
            Ok(server) => Ok(server),
            Err(e) => {
                // The server was refused: the ports made for it go too (best effort; a
                // security-group delete sweeps any left).
                for id in created {
                    if let Err(err) = self.delete_port_by_id(&id).await {
                        tracing::warn!(port = %id, error = %err, "could not remove a refused VM's port");
                    }
                }
                Err(e)
            }
        }
    }

    async fn get_server(&self, id: &str) -> CloudResult<Option<Server>> {
        match self.server_reply(id).await? {
            Some(reply) => Ok(Some(self.with_addresses(reply).await?)),
            None => Ok(None),
        }
    }

    async fn find_servers(&self, filter: &ServerFilter) -> CloudResult<Vec<Server>> {
        let mut call = nova(
            "find_servers",
            filter.name.clone().unwrap_or_default(),
            Method::GET,
            "servers/detail",
        )
        .key("servers");
        // Narrow on the server side (tags, name regex), then match exactly here.
        match filter.metadata.get(META_LB_ID) {
            Some(lb) => call = call.query("tags", lb_tag(lb)),
            None => call = call.query("tags", TAG),
        }
        if let Some(name) = &filter.name {
            let escaped: String = name
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                        c.to_string()
                    } else {
                        format!("\\{c}")
                    }
                })
                .collect();
            call = call.query("name", format!("^{escaped}$"));
        }
        let replies: Vec<ServerReply> = self.inner.session.json(&call).await?;
        let mut servers = Vec::new();
        for reply in replies {
            let matches = filter.name.as_ref().is_none_or(|n| &reply.name == n)
                && filter
                    .metadata
                    .iter()
                    .all(|(k, v)| reply.metadata.get(k) == Some(v));
            // A deleted server may still be listed for a moment.
            if matches && reply.status != "DELETED" {
                servers.push(self.with_addresses(reply).await?);
            }
        }
        Ok(servers)
    }

    async fn delete_server(&self, id: &str) -> CloudResult<()> {
        let Some(reply) = self.server_reply(id).await? else {
            return Ok(());
        };
        let call = nova("delete_server", id, Method::DELETE, format!("servers/{id}"));
        self.inner.session.send_ok(&call).await?;
        // Ports klb made for it (Nova deletes only the ports it created itself).
        for port in self.ports_of_device(id).await? {
            if is_nic_port_name(&port.name) && port.name.starts_with(&reply.name) {
                self.delete_port_by_id(&port.id).await?;
            }
        }
        for n in 0..8 {
            for port in self
                .port_replies_named(&nic_port_name(&reply.name, n))
                .await?
            {
                self.delete_port_by_id(&port.id).await?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(volume: Option<u32>) -> ServerSpec {
        let mut metadata = BTreeMap::new();
        metadata.insert(META_LB_ID.to_owned(), "lb1".to_owned());
        ServerSpec {
            name: "klb-lb1-vm-0".into(),
            image_id: "img".into(),
            flavor_id: "42".into(),
            server_group_id: Some("sg".into()),
            nics: vec![],
            security_group_ids: vec![],
            user_data: None,
            boot_volume_gib: volume,
            availability_zone: Some("lbaas-az".into()),
            metadata,
        }
    }

    #[test]
    fn boot_from_image_with_group_az_tags_and_user_data() {
        let body = server_body(&spec(None), "img", &["p0".into(), "p1".into()], Some("#x"));
        assert_eq!(body["server"]["imageRef"], "img");
        assert_eq!(body["server"]["flavorRef"], "42");
        assert_eq!(body["server"]["availability_zone"], "lbaas-az");
        assert_eq!(
            body["server"]["networks"],
            json!([{"port":"p0"},{"port":"p1"}])
        );
        assert_eq!(body["server"]["tags"], json!(["klb", "klb-lb-lb1"]));
        assert_eq!(body["server"]["user_data"], "I3g=");
        assert_eq!(body["os:scheduler_hints"]["group"], "sg");
        assert!(body["server"].get("block_device_mapping_v2").is_none());
    }

    #[test]
    fn boot_from_volume_when_a_size_is_set() {
        let body = server_body(&spec(Some(50)), "img", &[], None);
        assert_eq!(body["server"]["imageRef"], "");
        let bdm = &body["server"]["block_device_mapping_v2"][0];
        assert_eq!(bdm["uuid"], "img");
        assert_eq!(bdm["volume_size"], 50);
        assert_eq!(bdm["destination_type"], "volume");
        assert_eq!(bdm["delete_on_termination"], true);
        assert!(body["server"].get("user_data").is_none());
        let body = server_body(&spec(Some(0)), "img", &[], None);
        assert_eq!(body["server"]["imageRef"], "img");
    }

    #[test]
    fn nic_port_names_round_trip() {
        assert!(is_nic_port_name(&nic_port_name("klb-lb1-vm-0", 1)));
        assert!(!is_nic_port_name("klb-lb1-vip"));
        assert!(!is_nic_port_name("other-nic1"));
        assert!(!is_nic_port_name("klb-x-nic"));
    }

    #[test]
    fn soft_anti_affinity_by_config() {
        assert_eq!(
            policy_name(ServerGroupPolicy::AntiAffinity, false),
            "anti-affinity"
        );
        assert_eq!(
            policy_name(ServerGroupPolicy::AntiAffinity, true),
            "soft-anti-affinity"
        );
    }
}
