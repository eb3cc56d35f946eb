//! [`Compute`] over the lab: servers are LB VM namespaces, server groups are records.

use super::*;

#[async_trait]
impl Compute for LocalCloud {
    async fn create_server_group(&self, spec: &ServerGroupSpec) -> CloudResult<ServerGroup> {
        let mut core = self.inner.core.lock().await;
        let rec = GroupRec {
            id: Uuid::new_v4().to_string(),
            name: spec.name.clone(),
            soft: spec.policy == ServerGroupPolicy::SoftAntiAffinity,
            members: Vec::new(),
        };
        core.st.groups.insert(rec.id.clone(), rec.clone());
        self.persist(&core)
            .map_err(|e| cloud_err("create_server_group", &spec.name, e))?;
        Ok(group_of(&rec))
    }

    async fn find_server_group(&self, name: &str) -> CloudResult<Option<ServerGroup>> {
        let core = self.inner.core.lock().await;
        Ok(core
            .st
            .groups
            .values()
            .find(|g| g.name == name)
            .map(group_of))
    }

    async fn delete_server_group(&self, id: &str) -> CloudResult<()> {
        let mut core = self.inner.core.lock().await;
        if core.st.groups.remove(id).is_some() {
            self.persist(&core)
                .map_err(|e| cloud_err("delete_server_group", id, e))?;
        }
        Ok(())
    }

    async fn create_server(&self, spec: &ServerSpec) -> CloudResult<Server> {
        let mut core = self.inner.core.lock().await;
        self.boot(&mut core, spec).await
    }

    async fn get_server(&self, id: &str) -> CloudResult<Option<Server>> {
        let mut core = self.inner.core.lock().await;
        let Some(rec) = core.st.servers.get(id).cloned() else {
            return Ok(None);
        };
        Ok(Some(Self::server_of(
            &mut core,
            &rec,
            self.inner.cfg.agent.is_some(),
        )))
    }

    async fn find_servers(&self, filter: &ServerFilter) -> CloudResult<Vec<Server>> {
        let mut core = self.inner.core.lock().await;
        let recs: Vec<ServerRec> = core
            .st
            .servers
            .values()
            .filter(|s| filter.name.as_ref().is_none_or(|n| &s.name == n))
            .filter(|s| {
                filter
                    .metadata
                    .iter()
                    .all(|(k, v)| s.metadata.get(k) == Some(v))
            })
            .cloned()
            .collect();
        let agent = self.inner.cfg.agent.is_some();
        Ok(recs
            .iter()
            .map(|r| Self::server_of(&mut core, r, agent))
            .collect())
    }

    async fn delete_server(&self, id: &str) -> CloudResult<()> {
        const OP: &str = "delete_server";
        let mut core = self.inner.core.lock().await;
        let Some(rec) = core.st.servers.get(id).cloned() else {
            return Ok(());
        };
        core.lab
            .remove_vm(&rec.short_id)
            .await
            .map_err(|e| cloud_err(OP, id, e))?;
        core.st
            .ports
            .retain(|_, p| !(p.server_owned && p.device_id.as_deref() == Some(id)));
        for p in core.st.ports.values_mut() {
            if p.device_id.as_deref() == Some(id) {
                p.device_id = None;
            }
        }
        for g in core.st.groups.values_mut() {
            g.members.retain(|m| m != id);
        }
        core.st.servers.remove(id);
        self.snapshot_and_persist(&mut core)
            .map_err(|e| cloud_err(OP, id, e))?;
        info!(server = id, "local LB VM deleted");
        Ok(())
    }
}

fn group_of(g: &GroupRec) -> ServerGroup {
    ServerGroup {
        id: g.id.clone(),
        name: g.name.clone(),
        policy: if g.soft {
            ServerGroupPolicy::SoftAntiAffinity
        } else {
            ServerGroupPolicy::AntiAffinity
        },
        members: g.members.clone(),
    }
}
