//! Security groups to iptables: which rules each LB VM namespace loads ([`crate::firewall`]),
//! re-synced when a server's ports, its groups or their rules change.

use super::*;

impl LocalCloud {
    /// Loads the security-group rules of the server's ports into its namespace
    /// ([`firewall`]). Servers whose VM is not in the lab are skipped.
    pub(super) async fn sync_firewall(&self, core: &Core, server_id: &str) -> Result<()> {
        let Some(server) = core.st.servers.get(server_id) else {
            return Ok(());
        };
        let Some(vm) = core.lab.vms().get(&server.short_id) else {
            return Ok(());
        };
        let groups: BTreeSet<&str> = server
            .nics
            .iter()
            .filter_map(|p| core.st.ports.get(p))
            .flat_map(|p| p.security_groups.iter().map(String::as_str))
            .collect();
        Self::load_firewall(core, vm, &groups).await
    }

    pub(super) async fn load_firewall(
        core: &Core,
        vm: &VmNet,
        groups: &BTreeSet<&str>,
    ) -> Result<()> {
        let rules: Vec<firewall::IngressRule> = core
            .st
            .rules
            .values()
            .filter(|r| r.ingress && groups.contains(r.group.as_str()))
            .map(|r| firewall::IngressRule {
                protocol: r.protocol.clone(),
                ports: r.ports,
                remote: r.remote,
            })
            .collect();
        let path = vm.dir.join("firewall.rules");
        std::fs::write(&path, firewall::render(!groups.is_empty(), &rules))
            .map_err(|e| LocalError::io(&path, e))?;
        netns::exec_in(&vm.ns, "iptables-restore", &[&path.to_string_lossy()]).await?;
        Ok(())
    }

    /// [`Self::sync_firewall`] for every server with a port in `group`.
    pub(super) async fn sync_firewalls_of_group(&self, core: &Core, group: &str) -> Result<()> {
        let servers: BTreeSet<String> = core
            .st
            .ports
            .values()
            .filter(|p| p.security_groups.iter().any(|g| g == group))
            .filter_map(|p| p.device_id.clone())
            .collect();
        for s in servers {
            self.sync_firewall(core, &s).await?;
        }
        Ok(())
    }
}
