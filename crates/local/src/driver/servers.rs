//! Booting a server: its VM namespace and links ([`crate::lab`]), the files its bootstrap hook
//! returns (the local cloud-init) and the agent started inside it ([`AgentLaunch`]).

use super::*;

impl LocalCloud {
    pub(super) async fn boot(&self, core: &mut Core, spec: &ServerSpec) -> CloudResult<Server> {
        const OP: &str = "create_server";
        if let Some(g) = &spec.server_group_id
            && !core.st.groups.contains_key(g)
        {
            return Err(CloudError::not_found(OP, g).with_retryable(false));
        }
        for sg in &spec.security_group_ids {
            if !core.st.security_groups.contains_key(sg) {
                return Err(CloudError::not_found(OP, sg).with_retryable(false));
            }
        }
        let known: Vec<String> = self.networks().iter().map(|(n, _)| n.id.clone()).collect();
        for nic in &spec.nics {
            match nic {
                NicSpec::Network { network_id, .. } if !known.contains(network_id) => {
                    return Err(CloudError::not_found(OP, network_id).with_retryable(false));
                }
                NicSpec::Port { port_id } => match core.st.ports.get(port_id) {
                    None => return Err(CloudError::not_found(OP, port_id).with_retryable(false)),
                    Some(p) if p.device_id.is_some() => {
                        return Err(CloudError::new(
                            OP,
                            port_id,
                            CloudErrorKind::Conflict,
                            "port already attached",
                        )
                        .with_retryable(false));
                    }
                    Some(_) => {}
                },
                _ => {}
            }
        }
        // A fresh id whose 8-hex short form is unused (it names the namespace).
        let (id, short) = loop {
            let id = Uuid::new_v4().to_string();
            let short = id[..8].to_string();
            if !core.st.servers.values().any(|s| s.short_id == short) {
                break (id, short);
            }
        };
        let vm = core
            .lab
            .add_vm(&short)
            .await
            .map_err(|e| cloud_err(OP, &spec.name, e))?;
        match self.wire_server(core, spec, &id, &vm).await {
            Ok(nics) => {
                let rec = ServerRec {
                    id: id.clone(),
                    name: spec.name.clone(),
                    short_id: short,
                    metadata: spec.metadata.clone(),
                    group: spec.server_group_id.clone(),
                    nics,
                    fault: None,
                };
                if let Some(g) = spec
                    .server_group_id
                    .as_ref()
                    .and_then(|g| core.st.groups.get_mut(g))
                {
                    g.members.push(id.clone());
                }
                core.st.servers.insert(id.clone(), rec.clone());
                self.snapshot_and_persist(core)
                    .map_err(|e| cloud_err(OP, &id, e))?;
                info!(server = %id, name = %spec.name, ns = %vm.ns, "local LB VM created");
                Ok(Self::server_of(core, &rec, self.inner.cfg.agent.is_some()))
            }
            Err(e) => {
                // Undo: ports made for it, attachments, the namespace.
                core.st.ports.retain(|_, p| {
                    !(p.server_owned && p.device_id.as_deref() == Some(id.as_str()))
                });
                for p in core.st.ports.values_mut() {
                    if p.device_id.as_deref() == Some(id.as_str()) {
                        p.device_id = None;
                    }
                }
                if let Err(e2) = core.lab.remove_vm(&vm.short_id).await {
                    warn!(error = %e2, "cleanup of a failed VM failed");
                }
                let _ = self.snapshot_and_persist(core);
                Err(e)
            }
        }
    }

    pub(super) async fn wire_server(
        &self,
        core: &mut Core,
        spec: &ServerSpec,
        id: &str,
        vm: &VmNet,
    ) -> CloudResult<Vec<String>> {
        const OP: &str = "create_server";
        let l3 = plan::L3_NETWORK_ID.to_string();
        let mgmt = plan::MGMT_NETWORK_ID.to_string();
        let mut nics = Vec::new();
        for (i, nic) in spec.nics.iter().enumerate() {
            let port_id = match nic {
                NicSpec::Network {
                    network_id,
                    fixed_ip,
                } => {
                    let ip = if *network_id == l3 || *network_id == mgmt {
                        let slot_ip = IpAddr::V4(if *network_id == l3 {
                            vm.l3_addr
                        } else {
                            vm.mgmt_addr
                        });
                        if fixed_ip.is_some_and(|f| f != slot_ip) {
                            return Err(CloudError::new(
                                OP,
                                &spec.name,
                                CloudErrorKind::Invalid,
                                "local cloud: L3/management addresses follow the VM slot",
                            ));
                        }
                        slot_ip
                    } else {
                        self.allocate(&core.st, OP, network_id, *fixed_ip)?
                    };
                    let pid = Uuid::new_v4().to_string();
                    core.st.ports.insert(
                        pid.clone(),
                        PortRec {
                            id: pid.clone(),
                            name: format!("{}/nic{i}", spec.name),
                            network_id: network_id.clone(),
                            ip,
                            security_groups: spec.security_group_ids.clone(),
                            pairs: Vec::new(),
                            device_id: Some(id.to_string()),
                            device_owner: Some("compute:klb-local".into()),
                            server_owned: true,
                        },
                    );
                    pid
                }
                NicSpec::Port { port_id } => {
                    if let Some(p) = core.st.ports.get_mut(port_id) {
                        p.device_id = Some(id.to_string());
                    }
                    port_id.clone()
                }
            };
            nics.push(port_id);
        }
        // Filtered before anything in the VM listens.
        let groups: BTreeSet<&str> = spec.security_group_ids.iter().map(String::as_str).collect();
        Self::load_firewall(core, vm, &groups)
            .await
            .map_err(|e| cloud_err(OP, &spec.name, e))?;
        if let Some(agent) = self.inner.cfg.agent.clone() {
            self.start_agent(core, spec, id, vm, &agent)
                .await
                .map_err(|e| cloud_err(OP, &spec.name, e))?;
        }
        Ok(nics)
    }

    pub(super) async fn start_agent(
        &self,
        core: &mut Core,
        spec: &ServerSpec,
        id: &str,
        vm: &VmNet,
        agent: &AgentLaunch,
    ) -> Result<()> {
        let user_data = match &spec.user_data {
            Some(ud) => {
                let path = vm.dir.join("user-data");
                write_private(&path, ud.as_bytes())?;
                path.display().to_string()
            }
            None => String::new(),
        };
        let p = self.plan();
        if let Some(hook) = &self.inner.cfg.bootstrap {
            let boot = BootInfo {
                server_id: id.to_string(),
                server_name: spec.name.clone(),
                metadata: spec.metadata.clone(),
                ns: vm.ns.clone(),
                dir: vm.dir.clone(),
                mgmt_addr: vm.mgmt_addr,
                l3_addr: vm.l3_addr,
                host_mgmt_addr: p.host_mgmt_addr(),
                gateways: [p.gw_l3_addr(1), p.gw_l3_addr(2)],
                user_data: spec.user_data.clone(),
            };
            let files = hook
                .files(&boot)
                .await
                .map_err(|e| LocalError::Invalid(format!("VM bootstrap: {e}")))?;
            for (rel, body) in files {
                let rel_path = Path::new(&rel);
                let safe = !rel.is_empty()
                    && rel_path
                        .components()
                        .all(|c| matches!(c, std::path::Component::Normal(_)));
                if !safe {
                    return Err(LocalError::Invalid(format!(
                        "VM bootstrap file {rel:?} must be a relative path without `..`"
                    )));
                }
                let path = vm.dir.join(rel_path);
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| LocalError::io(parent, e))?;
                }
                write_private(&path, &body)?;
            }
        }
        let vars: Vec<(&str, String)> = vec![
            ("server_id", id.to_string()),
            ("server_name", spec.name.clone()),
            ("ns", vm.ns.clone()),
            ("dir", vm.dir.display().to_string()),
            ("user_data", user_data),
            ("mgmt_addr", vm.mgmt_addr.to_string()),
            ("l3_addr", vm.l3_addr.to_string()),
            ("host_mgmt_addr", p.host_mgmt_addr().to_string()),
            ("gw1", p.gw_l3_addr(1).to_string()),
            ("gw2", p.gw_l3_addr(2).to_string()),
            ("l3_prefix_len", p.l3_subnet.prefix_len().to_string()),
            ("slot", vm.slot.to_string()),
        ];
        let subst = |s: &str| {
            vars.iter().fold(s.to_string(), |acc, (k, v)| {
                acc.replace(&format!("{{{k}}}"), v)
            })
        };
        let args: Vec<String> = agent.args.iter().map(|a| subst(a)).collect();
        let mut env: Vec<(String, String)> = vars
            .iter()
            .filter(|(k, _)| {
                matches!(
                    *k,
                    "server_id"
                        | "dir"
                        | "user_data"
                        | "mgmt_addr"
                        | "l3_addr"
                        | "host_mgmt_addr"
                        | "ns"
                )
            })
            .map(|(k, v)| (format!("KLB_LOCAL_{}", k.to_uppercase()), v.clone()))
            .collect();
        env.push((
            "KLB_LOCAL_GATEWAYS".into(),
            format!("{},{}", p.gw_l3_addr(1), p.gw_l3_addr(2)),
        ));
        env.extend(agent.env.iter().map(|(k, v)| (k.clone(), subst(v))));
        let pid = core
            .lab
            .spawn_in_vm(&vm.short_id, "agent", &agent.program, &args, &env)
            .await?;
        info!(server = id, pid, "agent started");
        Ok(())
    }
}
