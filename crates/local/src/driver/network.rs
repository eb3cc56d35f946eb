//! [`Network`] over the lab: the four stable networks, ports, allowed-address pairs (VIPs on
//! `lo`) and security groups (enforced through [`super::firewall_sync`]).

use super::*;

pub(super) fn proto_str(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
        Protocol::Icmp => "icmp",
        Protocol::Any => "any",
    }
}

pub(super) fn rule_of(r: &RuleRec) -> SecurityGroupRule {
    SecurityGroupRule {
        id: r.id.clone(),
        security_group_id: r.group.clone(),
        spec: RuleSpec {
            direction: if r.ingress {
                Direction::Ingress
            } else {
                Direction::Egress
            },
            protocol: match r.protocol.as_str() {
                "tcp" => Protocol::Tcp,
                "udp" => Protocol::Udp,
                "icmp" => Protocol::Icmp,
                _ => Protocol::Any,
            },
            ports: r.ports,
            remote_cidr: r.remote,
        },
    }
}

#[async_trait]
impl Network for LocalCloud {
    async fn find_network(&self, id_or_name: &str) -> CloudResult<Option<NetworkInfo>> {
        Ok(self
            .networks()
            .into_iter()
            .map(|(n, _)| n)
            .find(|n| n.id == id_or_name || n.name == id_or_name))
    }

    async fn find_subnet(&self, id_or_name: &str) -> CloudResult<Option<Subnet>> {
        Ok(self
            .networks()
            .into_iter()
            .map(|(_, s)| s)
            .find(|s| s.id == id_or_name || s.name == id_or_name))
    }

    async fn create_security_group(&self, spec: &SecurityGroupSpec) -> CloudResult<SecurityGroup> {
        let mut core = self.inner.core.lock().await;
        let rec = SecGroupRec {
            id: Uuid::new_v4().to_string(),
            name: spec.name.clone(),
            description: spec.description.clone(),
        };
        core.st.security_groups.insert(rec.id.clone(), rec.clone());
        self.persist(&core)
            .map_err(|e| cloud_err("create_security_group", &spec.name, e))?;
        Ok(SecurityGroup {
            id: rec.id,
            name: rec.name,
        })
    }

    async fn find_security_group(&self, name: &str) -> CloudResult<Option<SecurityGroup>> {
        let core = self.inner.core.lock().await;
        Ok(core
            .st
            .security_groups
            .values()
            .find(|g| g.name == name)
            .map(|g| SecurityGroup {
                id: g.id.clone(),
                name: g.name.clone(),
            }))
    }

    async fn delete_security_group(&self, id: &str) -> CloudResult<()> {
        const OP: &str = "delete_security_group";
        let mut core = self.inner.core.lock().await;
        if !core.st.security_groups.contains_key(id) {
            return Ok(());
        }
        if core
            .st
            .ports
            .values()
            .any(|p| p.security_groups.iter().any(|g| g == id))
        {
            // As Neutron: 409 while a port still uses the group.
            return Err(CloudError::new(
                OP,
                id,
                CloudErrorKind::Conflict,
                "security group in use by a port",
            ));
        }
        core.st.security_groups.remove(id);
        core.st.rules.retain(|_, r| r.group != id);
        self.persist(&core).map_err(|e| cloud_err(OP, id, e))
    }

    async fn add_security_group_rule(
        &self,
        security_group_id: &str,
        rule: &RuleSpec,
    ) -> CloudResult<SecurityGroupRule> {
        const OP: &str = "add_security_group_rule";
        let mut core = self.inner.core.lock().await;
        if !core.st.security_groups.contains_key(security_group_id) {
            return Err(CloudError::not_found(OP, security_group_id).with_retryable(false));
        }
        if let Some((lo, hi)) = rule.ports
            && lo > hi
        {
            return Err(CloudError::new(
                OP,
                security_group_id,
                CloudErrorKind::Invalid,
                "port range min is above max",
            ));
        }
        if core
            .st
            .rules
            .values()
            .any(|r| r.group == security_group_id && rule_of(r).spec == *rule)
        {
            return Err(CloudError::new(
                OP,
                security_group_id,
                CloudErrorKind::Conflict,
                "security group rule already exists",
            )
            .with_retryable(false));
        }
        let rec = RuleRec {
            id: Uuid::new_v4().to_string(),
            group: security_group_id.into(),
            ingress: rule.direction == Direction::Ingress,
            protocol: proto_str(rule.protocol).into(),
            ports: rule.ports,
            remote: rule.remote_cidr,
        };
        core.st.rules.insert(rec.id.clone(), rec.clone());
        self.persist(&core)
            .map_err(|e| cloud_err(OP, security_group_id, e))?;
        self.sync_firewalls_of_group(&core, security_group_id)
            .await
            .map_err(|e| cloud_err(OP, security_group_id, e))?;
        Ok(rule_of(&rec))
    }

    async fn list_security_group_rules(
        &self,
        security_group_id: &str,
    ) -> CloudResult<Vec<SecurityGroupRule>> {
        let core = self.inner.core.lock().await;
        Ok(core
            .st
            .rules
            .values()
            .filter(|r| r.group == security_group_id)
            .map(rule_of)
            .collect())
    }

    async fn delete_security_group_rule(&self, rule_id: &str) -> CloudResult<()> {
        const OP: &str = "delete_security_group_rule";
        let mut core = self.inner.core.lock().await;
        if let Some(rule) = core.st.rules.remove(rule_id) {
            self.persist(&core).map_err(|e| cloud_err(OP, rule_id, e))?;
            self.sync_firewalls_of_group(&core, &rule.group)
                .await
                .map_err(|e| cloud_err(OP, rule_id, e))?;
        }
        Ok(())
    }

    async fn create_port(&self, spec: &PortSpec) -> CloudResult<Port> {
        const OP: &str = "create_port";
        let mut core = self.inner.core.lock().await;
        for sg in &spec.security_group_ids {
            if !core.st.security_groups.contains_key(sg) {
                return Err(CloudError::not_found(OP, sg).with_retryable(false));
            }
        }
        if let Some(sub) = &spec.subnet_id {
            let ok = self
                .networks()
                .iter()
                .any(|(n, s)| &s.id == sub && n.id == spec.network_id);
            if !ok {
                return Err(CloudError::new(
                    OP,
                    sub,
                    CloudErrorKind::Invalid,
                    "subnet is not on the port's network",
                ));
            }
        }
        let ip = self.allocate(&core.st, OP, &spec.network_id, spec.fixed_ip)?;
        let rec = PortRec {
            id: Uuid::new_v4().to_string(),
            name: spec.name.clone(),
            network_id: spec.network_id.clone(),
            ip,
            security_groups: spec.security_group_ids.clone(),
            pairs: Vec::new(),
            device_id: None,
            device_owner: spec.device_owner.clone(),
            server_owned: false,
        };
        core.st.ports.insert(rec.id.clone(), rec.clone());
        self.persist(&core)
            .map_err(|e| cloud_err(OP, &spec.name, e))?;
        Ok(Self::port_of(&rec))
    }

    async fn get_port(&self, id: &str) -> CloudResult<Option<Port>> {
        let core = self.inner.core.lock().await;
        Ok(core.st.ports.get(id).map(Self::port_of))
    }

    async fn find_ports(&self, name: &str) -> CloudResult<Vec<Port>> {
        let core = self.inner.core.lock().await;
        Ok(core
            .st
            .ports
            .values()
            .filter(|p| p.name == name)
            .map(Self::port_of)
            .collect())
    }

    async fn delete_port(&self, id: &str) -> CloudResult<()> {
        const OP: &str = "delete_port";
        let mut core = self.inner.core.lock().await;
        match core.st.ports.get(id) {
            None => Ok(()),
            Some(p) if p.server_owned => Err(CloudError::new(
                OP,
                id,
                CloudErrorKind::Conflict,
                "port is owned by a server",
            )
            .with_retryable(false)),
            Some(_) => {
                core.st.ports.remove(id);
                self.persist(&core).map_err(|e| cloud_err(OP, id, e))
            }
        }
    }

    async fn set_allowed_address_pairs(
        &self,
        port_id: &str,
        addresses: &[IpAddr],
    ) -> CloudResult<Port> {
        const OP: &str = "set_allowed_address_pairs";
        let mut core = self.inner.core.lock().await;
        let Some(rec) = core.st.ports.get(port_id).cloned() else {
            return Err(CloudError::not_found(OP, port_id).with_retryable(false));
        };
        if let Some(server) = &rec.device_id {
            self.sync_vips(&mut core, server, &rec.pairs, addresses)
                .await
                .map_err(|e| cloud_err(OP, port_id, e))?;
        }
        let port = {
            let p = core.st.ports.get_mut(port_id).expect("checked above");
            p.pairs = addresses.to_vec();
            Self::port_of(p)
        };
        self.persist(&core).map_err(|e| cloud_err(OP, port_id, e))?;
        Ok(port)
    }
}
