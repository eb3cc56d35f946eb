//! The steps of the LB flows. Each is idempotent and its revert is safe to run whether or not
//! (or how far) its execute ran.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use async_trait::async_trait;
use klb_agent_client::agents::{AgentError, AgentTarget};
use klb_cloud::{
    Direction, META_LB_ID, META_VM_INDEX, NicSpec, PortSpec, PpsAlarmSpec, Protocol, RuleSpec,
    SecurityGroupSpec, Server, ServerFilter, ServerGroupPolicy, ServerGroupSpec, ServerSpec,
    ServerStatus, names,
};

use super::{LbEnv, LbInput, LbResources, Polling, Vm};
use crate::{Step, StepCtx, StepError};

type Ctx<'a> = StepCtx<'a, LbEnv>;

/// The LB flows' run variables: what one step found or made and a later step, a revert or a
/// takeover after a crash needs. Each name and type is declared here only.
mod var {
    use std::net::IpAddr;

    use ipnet::IpNet;

    use crate::Var;

    /// The management network's id.
    pub const MGMT_NET_ID: Var<String> = Var::new("mgmt_net_id");
    /// The management subnet (agent port ingress).
    pub const MGMT_CIDR: Var<IpNet> = Var::new("mgmt_cidr");
    /// The L3 network's id.
    pub const L3_NET_ID: Var<String> = Var::new("l3_net_id");
    /// The L3 subnet (BGP, BFD and peers ingress).
    pub const L3_CIDR: Var<IpNet> = Var::new("l3_cidr");
    /// The LB's security group.
    pub const SECURITY_GROUP_ID: Var<String> = Var::new("security_group_id");
    /// The VIP port.
    pub const VIP_PORT_ID: Var<String> = Var::new("vip_port_id");
    /// The VIP address.
    pub const VIP_IP: Var<IpAddr> = Var::new("vip_ip");
    /// The anti-affinity server group.
    pub const SERVER_GROUP_ID: Var<String> = Var::new("server_group_id");
    /// The PPS alarm.
    pub const ALARM_ID: Var<String> = Var::new("alarm_id");
}

fn input(ctx: &Ctx<'_>) -> Result<LbInput, StepError> {
    let input: LbInput = ctx.input()?;
    if input.lb_id.is_empty() {
        return Err(StepError::fatal("flow input has no lb_id"));
    }
    Ok(input)
}

/// The VMs of a load balancer as the cloud reports them, by index.
async fn lb_vms(ctx: &Ctx<'_>, lb_id: &str) -> Result<Vec<Vm>, StepError> {
    let mgmt = ctx.var(var::MGMT_NET_ID);
    let l3 = ctx.var(var::L3_NET_ID);
    let servers = ctx
        .env
        .cloud
        .compute
        .find_servers(&ServerFilter::lb(lb_id))
        .await?;
    let mut vms: Vec<Vm> = servers
        .iter()
        .map(|s| to_vm(s, mgmt.as_deref(), l3.as_deref()))
        .collect();
    vms.sort_by_key(|v| v.index);
    Ok(vms)
}

fn to_vm(s: &Server, mgmt: Option<&str>, l3: Option<&str>) -> Vm {
    let index = s
        .metadata
        .get(META_VM_INDEX)
        .and_then(|i| i.parse().ok())
        .unwrap_or(u32::MAX);
    let on = |net: Option<&str>| net.and_then(|n| s.address_on(n));
    Vm {
        index,
        server_id: s.id.clone(),
        name: s.name.clone(),
        mgmt_ip: on(mgmt).map(|a| a.ip),
        l3_ip: on(l3).map(|a| a.ip),
        l3_port_id: on(l3).map(|a| a.port_id.clone()),
        active: s.status == ServerStatus::Active,
    }
}

fn agent_target(ctx: &Ctx<'_>, vm: &Vm) -> Option<AgentTarget> {
    vm.mgmt_ip.map(|ip| AgentTarget {
        server_id: vm.server_id.clone(),
        address: SocketAddr::new(ip, ctx.env.config.agent_port),
    })
}

/// Look up the management and L3 networks (ids, management and L3 CIDRs) once per run.
pub struct ResolveNetworks;

#[async_trait]
impl Step<LbEnv> for ResolveNetworks {
    fn name(&self) -> &'static str {
        "resolve_networks"
    }

    async fn execute(&self, ctx: &mut StepCtx<'_, LbEnv>) -> Result<(), StepError> {
        let net = &ctx.env.cloud.network;
        for (which, wanted, net_var, cidr_var) in [
            (
                "mgmt",
                ctx.env.config.mgmt_network.clone(),
                var::MGMT_NET_ID,
                var::MGMT_CIDR,
            ),
            (
                "l3",
                ctx.env.config.l3_network.clone(),
                var::L3_NET_ID,
                var::L3_CIDR,
            ),
        ] {
            let found = net
                .find_network(&wanted)
                .await?
                .ok_or_else(|| StepError::fatal(format!("{which} network {wanted:?} not found")))?;
            let subnet_id = found
                .subnet_ids
                .first()
                .ok_or_else(|| StepError::fatal(format!("{which} network has no subnet")))?;
            let subnet = net
                .find_subnet(subnet_id)
                .await?
                .ok_or_else(|| StepError::fatal(format!("{which} subnet {subnet_id} not found")))?;
            ctx.set_var(net_var, &found.id);
            ctx.set_var(cidr_var, &subnet.cidr);
        }
        Ok(())
    }
}

/// The rules an LB's security group must hold: listener ports from anywhere, the agent port
/// from the management subnet, BGP, BFD and HAProxy peers from the L3 subnet, SSH and the agent
/// port from the operators' office CIDR; all egress.
fn desired_rules(ctx: &Ctx<'_>, input: &LbInput) -> Result<Vec<RuleSpec>, StepError> {
    let cfg = &ctx.env.config;
    let mut rules: Vec<RuleSpec> = input
        .listeners
        .iter()
        .map(|l| RuleSpec {
            direction: Direction::Ingress,
            protocol: l.protocol,
            ports: Some((l.port, l.port)),
            remote_cidr: None,
        })
        .collect();
    let mgmt = ctx.require(var::MGMT_CIDR)?;
    let l3 = ctx.require(var::L3_CIDR)?;
    rules.push(RuleSpec::tcp_in(cfg.agent_port, Some(mgmt)));
    rules.push(RuleSpec::tcp_in(179, Some(l3)));
    rules.push(RuleSpec::tcp_in(cfg.peer_port, Some(l3)));
    rules.push(RuleSpec {
        direction: Direction::Ingress,
        protocol: Protocol::Udp,
        ports: Some((3784, 3785)),
        remote_cidr: Some(l3),
    });
    // Outbound (members, gateways, the control plane) is open, stated explicitly: the exact
    // diff below would otherwise remove a cloud's default egress rules.
    rules.push(RuleSpec {
        direction: Direction::Egress,
        protocol: Protocol::Any,
        ports: None,
        remote_cidr: None,
    });
    if let Some(office) = cfg.office_cidr {
        rules.push(RuleSpec::tcp_in(22, Some(office)));
        rules.push(RuleSpec::tcp_in(cfg.agent_port, Some(office)));
    }
    rules.sort();
    rules.dedup();
    Ok(rules)
}

/// Security group with exactly the desired rules (missing ones added, stale ones removed).
/// `owned`: the run created the LB, so revert deletes the group; otherwise revert leaves it.
pub struct EnsureSecurityGroup {
    /// Whether this run created the LB (see above).
    pub owned: bool,
}

#[async_trait]
impl Step<LbEnv> for EnsureSecurityGroup {
    fn name(&self) -> &'static str {
        "ensure_security_group"
    }

    async fn execute(&self, ctx: &mut StepCtx<'_, LbEnv>) -> Result<(), StepError> {
        let input = input(ctx)?;
        let net = ctx.env.cloud.network.clone();
        let name = names::security_group(&input.lb_id);
        let group = match net.find_security_group(&name).await? {
            Some(g) => g,
            None if self.owned => {
                net.create_security_group(&SecurityGroupSpec {
                    name: name.clone(),
                    description: format!("klb load balancer {}", input.lb_id),
                })
                .await?
            }
            None => {
                return Err(StepError::fatal(format!(
                    "security group {name} is missing"
                )));
            }
        };
        ctx.set_var(var::SECURITY_GROUP_ID, &group.id);
        let desired = desired_rules(ctx, &input)?;
        let existing = net.list_security_group_rules(&group.id).await?;
        for rule in existing.iter().filter(|r| !desired.contains(&r.spec)) {
            net.delete_security_group_rule(&rule.id).await?;
        }
        for spec in desired
            .iter()
            .filter(|d| !existing.iter().any(|r| &r.spec == *d))
        {
            net.add_security_group_rule(&group.id, spec).await?;
        }
        Ok(())
    }

    async fn revert(&self, ctx: &mut StepCtx<'_, LbEnv>) -> Result<(), StepError> {
        if !self.owned {
            return Ok(());
        }
        let input = input(ctx)?;
        delete_security_group(ctx, &input.lb_id).await
    }
}

async fn delete_security_group(ctx: &Ctx<'_>, lb_id: &str) -> Result<(), StepError> {
    let net = &ctx.env.cloud.network;
    // Loop: a lost reply on create may have made two groups of the same name.
    while let Some(g) = net
        .find_security_group(&names::security_group(lb_id))
        .await?
    {
        net.delete_security_group(&g.id).await?;
    }
    Ok(())
}

/// The VIP port (reserves the address; its security group is the LB's).
pub struct AllocateVip;

#[async_trait]
impl Step<LbEnv> for AllocateVip {
    fn name(&self) -> &'static str {
        "allocate_vip"
    }

    async fn execute(&self, ctx: &mut StepCtx<'_, LbEnv>) -> Result<(), StepError> {
        let input = input(ctx)?;
        let vip = input
            .vip
            .clone()
            .ok_or_else(|| StepError::fatal("create needs a VIP"))?;
        let net = ctx.env.cloud.network.clone();
        let name = names::vip_port(&input.lb_id);
        let port = match net.find_ports(&name).await?.into_iter().next() {
            Some(p) => p,
            None => {
                net.create_port(&PortSpec {
                    name,
                    network_id: vip.network_id.clone(),
                    subnet_id: vip.subnet_id.clone(),
                    fixed_ip: vip.address,
                    security_group_ids: vec![ctx.require(var::SECURITY_GROUP_ID)?],
                    device_owner: Some("klb:vip".into()),
                })
                .await?
            }
        };
        let ip = port
            .fixed_ips
            .first()
            .copied()
            .ok_or_else(|| StepError::retry("VIP port has no address yet"))?;
        ctx.set_var(var::VIP_PORT_ID, &port.id);
        ctx.set_var(var::VIP_IP, &ip);
        Ok(())
    }

    async fn revert(&self, ctx: &mut StepCtx<'_, LbEnv>) -> Result<(), StepError> {
        let input = input(ctx)?;
        delete_vip(ctx, &input.lb_id).await
    }
}

async fn delete_vip(ctx: &Ctx<'_>, lb_id: &str) -> Result<(), StepError> {
    let net = &ctx.env.cloud.network;
    for p in net.find_ports(&names::vip_port(lb_id)).await? {
        net.delete_port(&p.id).await?;
    }
    Ok(())
}

/// The anti-affinity server group ("separation of VM server to different host").
pub struct EnsureServerGroup;

#[async_trait]
impl Step<LbEnv> for EnsureServerGroup {
    fn name(&self) -> &'static str {
        "ensure_server_group"
    }

    async fn execute(&self, ctx: &mut StepCtx<'_, LbEnv>) -> Result<(), StepError> {
        let input = input(ctx)?;
        let compute = ctx.env.cloud.compute.clone();
        let name = names::server_group(&input.lb_id);
        let group = match compute.find_server_group(&name).await? {
            Some(g) => g,
            None => {
                compute
                    .create_server_group(&ServerGroupSpec {
                        name,
                        policy: ServerGroupPolicy::AntiAffinity,
                    })
                    .await?
            }
        };
        ctx.set_var(var::SERVER_GROUP_ID, &group.id);
        Ok(())
    }

    async fn revert(&self, ctx: &mut StepCtx<'_, LbEnv>) -> Result<(), StepError> {
        let input = input(ctx)?;
        delete_server_group(ctx, &input.lb_id).await
    }
}

async fn delete_server_group(ctx: &Ctx<'_>, lb_id: &str) -> Result<(), StepError> {
    let compute = &ctx.env.cloud.compute;
    while let Some(g) = compute
        .find_server_group(&names::server_group(lb_id))
        .await?
    {
        compute.delete_server_group(&g.id).await?;
    }
    Ok(())
}

/// Boot the VMs of `vm_indices` (adopting any that already exist by name).
pub struct CreateVms;

#[async_trait]
impl Step<LbEnv> for CreateVms {
    fn name(&self) -> &'static str {
        "create_vms"
    }

    async fn execute(&self, ctx: &mut StepCtx<'_, LbEnv>) -> Result<(), StepError> {
        let input = input(ctx)?;
        let env = ctx.env;
        let compute = &env.cloud.compute;
        let cfg = &env.config;
        // Failover and scale-out runs did not make these: look them up.
        let server_group_id = match ctx.var(var::SERVER_GROUP_ID) {
            Some(id) => Some(id),
            None => compute
                .find_server_group(&names::server_group(&input.lb_id))
                .await?
                .map(|g| g.id),
        };
        let security_group_id = match ctx.var(var::SECURITY_GROUP_ID) {
            Some(id) => id,
            None => env
                .cloud
                .network
                .find_security_group(&names::security_group(&input.lb_id))
                .await?
                .map(|g| g.id)
                .ok_or_else(|| StepError::fatal("the LB's security group is missing"))?,
        };
        let mgmt = ctx.require(var::MGMT_NET_ID)?;
        let l3 = ctx.require(var::L3_NET_ID)?;
        for &index in &input.vm_indices {
            let name = names::server(&input.lb_id, index);
            if !compute
                .find_servers(&ServerFilter::name(&name))
                .await?
                .is_empty()
            {
                continue;
            }
            let mut metadata = BTreeMap::new();
            metadata.insert(META_LB_ID.to_string(), input.lb_id.clone());
            metadata.insert(META_VM_INDEX.to_string(), index.to_string());
            let user_data = serde_json::json!({
                "lb_id": input.lb_id,
                "vm_index": index,
                "agent_port": cfg.agent_port,
                "heartbeat_endpoint": cfg.heartbeat_endpoint,
            });
            compute
                .create_server(&ServerSpec {
                    name,
                    image_id: cfg.image_id.clone(),
                    flavor_id: cfg.flavor_id.clone(),
                    server_group_id: server_group_id.clone(),
                    nics: vec![
                        NicSpec::Network {
                            network_id: mgmt.clone(),
                            fixed_ip: None,
                        },
                        NicSpec::Network {
                            network_id: l3.clone(),
                            fixed_ip: None,
                        },
                    ],
                    security_group_ids: vec![security_group_id.clone()],
                    user_data: Some(format!(
                        "#cloud-config\nwrite_files:\n- path: /etc/klb/bootstrap.json\n  content: '{user_data}'\n"
                    )),
                    boot_volume_gib: cfg.boot_volume_gib,
                    availability_zone: cfg.availability_zone.clone(),
                    metadata,
                })
                .await?;
        }
        Ok(())
    }

    async fn revert(&self, ctx: &mut StepCtx<'_, LbEnv>) -> Result<(), StepError> {
        let input = input(ctx)?;
        delete_vms_by_index(ctx, &input.lb_id, &input.vm_indices).await
    }
}

async fn delete_vms_by_index(ctx: &Ctx<'_>, lb_id: &str, indices: &[u32]) -> Result<(), StepError> {
    let compute = &ctx.env.cloud.compute;
    for &index in indices {
        let name = names::server(lb_id, index);
        for s in compute.find_servers(&ServerFilter::name(&name)).await? {
            compute.delete_server(&s.id).await?;
        }
    }
    Ok(())
}

/// Record the LB's VMs (and alarm, once made) in the store.
pub struct RecordLb {
    /// Step name (`record_vms`, `record_alarm`): the seed records twice.
    pub name: &'static str,
}

#[async_trait]
impl Step<LbEnv> for RecordLb {
    fn name(&self) -> &'static str {
        self.name
    }

    async fn execute(&self, ctx: &mut StepCtx<'_, LbEnv>) -> Result<(), StepError> {
        let input = input(ctx)?;
        let vms = lb_vms(ctx, &input.lb_id).await?;
        let resources = LbResources {
            vms,
            alarm_id: ctx.var(var::ALARM_ID),
            vip_ip: ctx.var(var::VIP_IP),
        };
        ctx.env.backend.record(&input.lb_id, &resources).await
    }
}

/// Wait until the VMs of `vm_indices` are `ACTIVE` (a VM in `ERROR` fails the run).
pub struct WaitVmsActive {
    /// How often and how long to poll.
    pub poll: Polling,
}

#[async_trait]
impl Step<LbEnv> for WaitVmsActive {
    fn name(&self) -> &'static str {
        "wait_vms_active"
    }

    fn poll_interval(&self) -> Duration {
        self.poll.interval
    }

    fn max_polls(&self) -> u32 {
        self.poll.max_polls()
    }

    async fn execute(&self, ctx: &mut StepCtx<'_, LbEnv>) -> Result<(), StepError> {
        let input = input(ctx)?;
        let compute = &ctx.env.cloud.compute;
        let mut building = Vec::new();
        for &index in &input.vm_indices {
            let name = names::server(&input.lb_id, index);
            let found = compute.find_servers(&ServerFilter::name(&name)).await?;
            let Some(server) = found.first() else {
                return Err(StepError::fatal(format!(
                    "VM {name} disappeared while booting"
                )));
            };
            // `find` may answer from a list cache; `get` reports the live status.
            let server = compute
                .get_server(&server.id)
                .await?
                .ok_or_else(|| StepError::fatal(format!("VM {name} disappeared while booting")))?;
            match &server.status {
                ServerStatus::Active => {}
                ServerStatus::Build => building.push(name),
                ServerStatus::Error => {
                    return Err(StepError::fatal(format!(
                        "VM {name} went to ERROR: {}",
                        server.fault.as_deref().unwrap_or("no fault reported")
                    )));
                }
                ServerStatus::Other(s) => {
                    return Err(StepError::fatal(format!("VM {name} is {s}")));
                }
            }
        }
        if building.is_empty() {
            Ok(())
        } else {
            Err(StepError::pending(format!(
                "still building: {}",
                building.join(", ")
            )))
        }
    }
}

/// Wait until the agents of the VMs of `vm_indices` answer. A cloud reports a server ACTIVE
/// once the hypervisor started it; the guest still boots and cloud-init starts `klb agent`
/// tens of seconds later (Octavia waits the same way for its amphora agent). Until then every
/// look is "pending"; after [`FlowTiming::agent_up`](super::FlowTiming) the run reverts with
/// the last reason (e.g. the VM's agent refused the connection).
#[derive(Clone)]
pub struct WaitAgentsUp {
    /// How often and how long to poll.
    pub poll: Polling,
}

#[async_trait]
impl Step<LbEnv> for WaitAgentsUp {
    fn name(&self) -> &'static str {
        "wait_agents_up"
    }

    fn poll_interval(&self) -> Duration {
        self.poll.interval
    }

    fn max_polls(&self) -> u32 {
        self.poll.max_polls()
    }

    async fn execute(&self, ctx: &mut StepCtx<'_, LbEnv>) -> Result<(), StepError> {
        let input = input(ctx)?;
        let vms: Vec<Vm> = lb_vms(ctx, &input.lb_id)
            .await?
            .into_iter()
            .filter(|v| v.active && input.vm_indices.contains(&v.index))
            .collect();
        let mut waiting = Vec::new();
        for vm in &vms {
            let Some(target) = agent_target(ctx, vm) else {
                waiting.push(format!("{}: no management address yet", vm.name));
                continue;
            };
            match ctx.env.cloud.agents.status(&target).await {
                Ok(_) => {}
                // Not up yet (refused, timed out, 5xx): look again.
                Err(e) if e.retryable => waiting.push(format!("{}: {e}", vm.name)),
                Err(e) => return Err(StepError::fatal(format!("{}: {e}", vm.name))),
            }
        }
        if waiting.is_empty() {
            Ok(())
        } else {
            Err(StepError::pending(format!(
                "waiting for agents: {}",
                waiting.join("; ")
            )))
        }
    }
}

/// The PPS alarm over the LB's VMs (recreated when the VM set changed).
/// `owned` (create): revert deletes it. Otherwise (failover, scale) revert restores an alarm
/// over the VMs that remain once this run's own VMs are reverted.
pub struct EnsureAlarm {
    /// Whether this run created the LB (see above).
    pub owned: bool,
}

async fn ensure_alarm(ctx: &mut Ctx<'_>, lb_id: &str, skip: &[u32]) -> Result<(), StepError> {
    let alarms = ctx.env.cloud.alarms.clone();
    let cfg = &ctx.env.config;
    let mut server_ids: Vec<String> = lb_vms(ctx, lb_id)
        .await?
        .into_iter()
        .filter(|v| !skip.contains(&v.index))
        .map(|v| v.server_id)
        .collect();
    server_ids.sort();
    let name = names::alarm(lb_id);
    if let Some(existing) = alarms.find_alarm(&name).await? {
        let mut have = existing.server_ids.clone();
        have.sort();
        if have == server_ids {
            ctx.set_var(var::ALARM_ID, &existing.id);
            return Ok(());
        }
        // No update call in the trait (Aodh has one, the local evaluator need not): replace.
        alarms.delete_alarm(&existing.id).await?;
    }
    let alarm = alarms
        .create_pps_alarm(&PpsAlarmSpec {
            name,
            lb_id: lb_id.to_string(),
            server_ids,
            threshold_pps: cfg.pps_threshold,
            period_secs: cfg.alarm_period_secs,
            evaluation_periods: cfg.alarm_evaluation_periods,
            webhook_url: cfg.alarm_webhook_url.clone(),
        })
        .await?;
    ctx.set_var(var::ALARM_ID, &alarm.id);
    Ok(())
}

#[async_trait]
impl Step<LbEnv> for EnsureAlarm {
    fn name(&self) -> &'static str {
        "ensure_alarm"
    }

    async fn execute(&self, ctx: &mut StepCtx<'_, LbEnv>) -> Result<(), StepError> {
        let input = input(ctx)?;
        ensure_alarm(ctx, &input.lb_id, &[]).await
    }

    async fn revert(&self, ctx: &mut StepCtx<'_, LbEnv>) -> Result<(), StepError> {
        let input = input(ctx)?;
        if self.owned {
            delete_alarm(ctx, &input.lb_id).await
        } else {
            ensure_alarm(ctx, &input.lb_id, &input.vm_indices).await
        }
    }
}

async fn delete_alarm(ctx: &Ctx<'_>, lb_id: &str) -> Result<(), StepError> {
    let alarms = &ctx.env.cloud.alarms;
    while let Some(a) = alarms.find_alarm(&names::alarm(lb_id)).await? {
        alarms.delete_alarm(&a.id).await?;
    }
    Ok(())
}

/// The VIP address: recorded by this run, else read from the VIP port.
async fn vip_address(ctx: &mut Ctx<'_>, lb_id: &str) -> Result<IpAddr, StepError> {
    if let Some(ip) = ctx.var(var::VIP_IP) {
        return Ok(ip);
    }
    let port = ctx
        .env
        .cloud
        .network
        .find_ports(&names::vip_port(lb_id))
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| StepError::fatal("the LB's VIP port is missing"))?;
    let ip = *port
        .fixed_ips
        .first()
        .ok_or_else(|| StepError::fatal("VIP port has no address"))?;
    ctx.set_var(var::VIP_IP, &ip);
    Ok(ip)
}

/// Let every VM's L3 port carry the VIP (allowed-address pair).
pub struct SetVipAddressPairs;

#[async_trait]
impl Step<LbEnv> for SetVipAddressPairs {
    fn name(&self) -> &'static str {
        "set_vip_address_pairs"
    }

    async fn execute(&self, ctx: &mut StepCtx<'_, LbEnv>) -> Result<(), StepError> {
        let input = input(ctx)?;
        let net = ctx.env.cloud.network.clone();
        let vip = vip_address(ctx, &input.lb_id).await?;
        for vm in lb_vms(ctx, &input.lb_id).await? {
            let Some(port_id) = vm.l3_port_id else {
                return Err(StepError::retry(format!(
                    "VM {} has no L3 port yet",
                    vm.name
                )));
            };
            net.set_allowed_address_pairs(&port_id, &[vip]).await?;
        }
        Ok(())
    }
}

/// Build the desired state (haproxy.cfg, peers, BGP, health reporting) and push it to every
/// active VM at once (a change is live everywhere after the slowest VM, not the sum of all);
/// the step is done when all of them applied it.
pub struct PushDesiredState;

#[async_trait]
impl Step<LbEnv> for PushDesiredState {
    fn name(&self) -> &'static str {
        "push_desired_state"
    }

    async fn execute(&self, ctx: &mut StepCtx<'_, LbEnv>) -> Result<(), StepError> {
        let input = input(ctx)?;
        let vms: Vec<Vm> = lb_vms(ctx, &input.lb_id)
            .await?
            .into_iter()
            .filter(|v| v.active)
            .collect();
        let vip = vip_address(ctx, &input.lb_id).await?;
        let targets = vms
            .iter()
            .map(|vm| {
                agent_target(ctx, vm).ok_or_else(|| {
                    StepError::retry(format!("VM {} has no management address", vm.name))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        // The graph this job's pump read, if it is still at hand; taken once, so a retried
        // push renders what the store holds then.
        let graph = match input.graph_version {
            Some(version) => ctx.env.graphs.take(&input.lb_id, version).await,
            None => None,
        };
        let states = ctx
            .env
            .backend
            .desired_states(&input.lb_id, graph.as_deref(), vip, &vms)
            .await?;
        if states.len() != vms.len() {
            return Err(StepError::fatal(format!(
                "the backend built {} desired states for {} VMs",
                states.len(),
                vms.len()
            )));
        }
        let mut pushes = Vec::with_capacity(vms.len());
        for ((vm, target), state) in vms.iter().zip(targets).zip(states) {
            let agents = &ctx.env.cloud.agents;
            pushes.push(async move {
                let status = agents.push(&target, &state).await?;
                if status.applied_version != Some(state.version) {
                    return Err(StepError::retry(format!(
                        "VM {} applied version {:?}, wanted {}",
                        vm.name, status.applied_version, state.version
                    )));
                }
                Ok(())
            });
        }
        // Every push runs to its end (no VM is left mid-apply); the first error wins.
        futures::future::join_all(pushes)
            .await
            .into_iter()
            .collect::<Result<Vec<()>, StepError>>()?;
        Ok(())
    }
}

/// Best effort: ask the VMs of `vm_indices` to withdraw their routes before they go. A dead VM
/// cannot answer, which is fine: ECMP already routes around it.
pub struct DrainVms;

#[async_trait]
impl Step<LbEnv> for DrainVms {
    fn name(&self) -> &'static str {
        "drain_vms"
    }

    async fn execute(&self, ctx: &mut StepCtx<'_, LbEnv>) -> Result<(), StepError> {
        let input = input(ctx)?;
        let vms =
            match tokio::time::timeout(ctx.env.config.drain_timeout, lb_vms(ctx, &input.lb_id))
                .await
            {
                Ok(Ok(vms)) => vms,
                _ => return Ok(()),
            };
        for vm in vms.iter().filter(|v| input.vm_indices.contains(&v.index)) {
            if let Some(target) = agent_target(ctx, vm) {
                let drain = ctx.env.cloud.agents.drain(&target);
                if let Ok(Err(e)) | Err(e) =
                    tokio::time::timeout(ctx.env.config.drain_timeout, drain)
                        .await
                        .map_err(|_| AgentError {
                            operation: "agent_drain",
                            server_id: vm.server_id.clone(),
                            retryable: true,
                            message: "timed out".to_owned(),
                        })
                {
                    tracing::info!(vm = %vm.name, error = %e, "drain failed; removing anyway");
                }
            }
        }
        Ok(())
    }
}

/// Delete the VMs of `vm_indices` (failover: the dead one; scale-in: the highest ones).
pub struct DeleteVms;

#[async_trait]
impl Step<LbEnv> for DeleteVms {
    fn name(&self) -> &'static str {
        "delete_vms"
    }

    async fn execute(&self, ctx: &mut StepCtx<'_, LbEnv>) -> Result<(), StepError> {
        let input = input(ctx)?;
        delete_vms_by_index(ctx, &input.lb_id, &input.vm_indices).await
    }
}

/// Delete the PPS alarm.
pub struct DeleteAlarm;

#[async_trait]
impl Step<LbEnv> for DeleteAlarm {
    fn name(&self) -> &'static str {
        "delete_alarm"
    }

    async fn execute(&self, ctx: &mut StepCtx<'_, LbEnv>) -> Result<(), StepError> {
        let input = input(ctx)?;
        delete_alarm(ctx, &input.lb_id).await
    }
}

/// Delete every VM of the LB (by metadata, so half-created ones go too) and wait until gone.
pub struct DeleteAllVms {
    /// How often and how long to poll.
    pub poll: Polling,
}

#[async_trait]
impl Step<LbEnv> for DeleteAllVms {
    fn name(&self) -> &'static str {
        "delete_all_vms"
    }

    fn poll_interval(&self) -> Duration {
        self.poll.interval
    }

    fn max_polls(&self) -> u32 {
        self.poll.max_polls()
    }

    async fn execute(&self, ctx: &mut StepCtx<'_, LbEnv>) -> Result<(), StepError> {
        let input = input(ctx)?;
        let compute = &ctx.env.cloud.compute;
        let filter = ServerFilter::lb(&input.lb_id);
        for s in compute.find_servers(&filter).await? {
            compute.delete_server(&s.id).await?;
        }
        if compute.find_servers(&filter).await?.is_empty() {
            Ok(())
        } else {
            Err(StepError::pending("VMs still deleting"))
        }
    }
}

/// Delete the VIP port.
pub struct DeleteVip;

#[async_trait]
impl Step<LbEnv> for DeleteVip {
    fn name(&self) -> &'static str {
        "delete_vip"
    }

    async fn execute(&self, ctx: &mut StepCtx<'_, LbEnv>) -> Result<(), StepError> {
        let input = input(ctx)?;
        delete_vip(ctx, &input.lb_id).await
    }
}

/// Delete the server group.
pub struct DeleteServerGroup;

#[async_trait]
impl Step<LbEnv> for DeleteServerGroup {
    fn name(&self) -> &'static str {
        "delete_server_group"
    }

    async fn execute(&self, ctx: &mut StepCtx<'_, LbEnv>) -> Result<(), StepError> {
        let input = input(ctx)?;
        delete_server_group(ctx, &input.lb_id).await
    }
}

/// Delete the security group (after everything that used it).
pub struct DeleteSecurityGroup;

#[async_trait]
impl Step<LbEnv> for DeleteSecurityGroup {
    fn name(&self) -> &'static str {
        "delete_security_group"
    }

    async fn execute(&self, ctx: &mut StepCtx<'_, LbEnv>) -> Result<(), StepError> {
        let input = input(ctx)?;
        delete_security_group(ctx, &input.lb_id).await
    }
}

/// Drop the store's record of the LB's resources.
pub struct ForgetLb;

#[async_trait]
impl Step<LbEnv> for ForgetLb {
    fn name(&self) -> &'static str {
        "forget_lb"
    }

    async fn execute(&self, ctx: &mut StepCtx<'_, LbEnv>) -> Result<(), StepError> {
        let input = input(ctx)?;
        ctx.env.backend.forget(&input.lb_id).await
    }
}
