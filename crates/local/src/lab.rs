//! The local-cloud topology: client, edge router, two FRR gateways, three bridges (L3, member,
//! management), LB VM namespaces and member namespaces. See [`crate::plan`] for the addresses.
//!
//! ```text
//!  client ── edge ──┬── gw1 ──┐   (edge: static multipath VIP subnet → gw1, gw2; L4 hash)
//!                   └── gw2 ──┤   (gw: eBGP listen range on the L3 subnet, ECMP to LB VMs)
//!        L3 bridge  ──────────┴── vm-<id> (l3: BGP to gw1+gw2, VIP /32 on lo) ──┐
//!        member bridge ── gw1, gw2, m1, m2, ...                                  │
//!        mgmt bridge ── host (root ns, control plane) ───────────── vm-<id> (mgmt)
//! ```
//! Namespace names: `{prefix}client`, `{prefix}edge`, `{prefix}gw1`, `{prefix}gw2`,
//! `{prefix}l3`, `{prefix}mbr`, `{prefix}mgmt` (the three bridges), `{prefix}vm-<short id>`,
//! `{prefix}m<n>`; the only root-namespace object is the veth `{prefix}mgmt`.
//! The production prefix is `klb-`.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ipnet::{IpNet, Ipv4Net};
use serde::{Deserialize, Serialize};
use tracing::info;

use crate::error::{LocalError, Result};
use crate::frr::{self, FrrInstance};
use crate::netns::{self, End, Owned};
use crate::plan::AddressPlan;

/// Production namespace prefix.
pub const DEFAULT_PREFIX: &str = "klb-";
/// Default runtime directory (configs, logs, sockets, state file).
pub const DEFAULT_RUNTIME_DIR: &str = "/run/klb/local";
/// Default AS of the gateways (`l3_router_as_number`).
pub const DEFAULT_L3_ROUTER_AS: u32 = 60201;
const BRIDGE: &str = "br0";

/// How to build the lab.
#[derive(Debug, Clone)]
pub struct LabConfig {
    /// Prefix of every namespace and of the root-namespace veth (at most 10 bytes so interface
    /// names fit in 15). `klb-` in production; tests use a unique `kl<pid>-`.
    pub prefix: String,
    /// Directory for configs, logs, sockets and the state file.
    pub runtime_dir: PathBuf,
    /// Addresses.
    pub plan: AddressPlan,
    /// AS of the two gateways (`l3_router_as_number`).
    pub l3_router_as: u32,
    /// Directory of zebra/bgpd/bfdd.
    pub frr_bin_dir: PathBuf,
    /// Grace between SIGTERM and SIGKILL when stopping processes.
    pub stop_grace: Duration,
}

impl Default for LabConfig {
    fn default() -> Self {
        LabConfig {
            prefix: DEFAULT_PREFIX.into(),
            runtime_dir: DEFAULT_RUNTIME_DIR.into(),
            plan: AddressPlan::default(),
            l3_router_as: DEFAULT_L3_ROUTER_AS,
            frr_bin_dir: frr::FRR_BIN_DIR.into(),
            stop_grace: netns::DEFAULT_STOP_GRACE,
        }
    }
}

/// An LB VM's network identity in the lab.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmNet {
    /// Short id (8 lowercase hex digits of the server id, or any `[a-z0-9]{1,8}`).
    pub short_id: String,
    /// Namespace `{prefix}vm-{short_id}`.
    pub ns: String,
    /// Slot: index into the L3 and management address pools (1-based).
    pub slot: u32,
    /// Address on the L3 network (BGP source, ECMP next hop); prefix = L3 subnet.
    pub l3_addr: Ipv4Addr,
    /// Address on the management network (agent API); prefix = management subnet.
    pub mgmt_addr: Ipv4Addr,
    /// Private directory for this VM's processes (agent, HAProxy, FRR state).
    pub dir: PathBuf,
}

/// Addresses and MACs a cloud gave an LB VM's two ports (see [`Lab::add_guest_vm`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestNics {
    /// Address of its port on the L3 network.
    pub l3_addr: Ipv4Addr,
    /// MAC of that port.
    pub l3_mac: String,
    /// Address of its port on the management network.
    pub mgmt_addr: Ipv4Addr,
    /// MAC of that port.
    pub mgmt_mac: String,
}

/// A member namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberNet {
    /// 1-based index.
    pub index: u32,
    /// Namespace `{prefix}m{index}`.
    pub ns: String,
    /// Address on the member network.
    pub addr: Ipv4Addr,
}

/// Infrastructure namespaces (suffixes after the prefix).
const INFRA: [&str; 7] = ["client", "edge", "gw1", "gw2", "l3", "mbr", "mgmt"];

/// A recorded process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcRecord {
    /// What it is (`zebra`, `agent`, ...).
    pub name: String,
    /// Its namespace.
    pub ns: String,
    /// Its PID.
    pub pid: u32,
}

/// The persistent description of a lab (see [`Lab::snapshot`] and [`Lab::adopt`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabSnapshot {
    /// Namespace prefix.
    pub prefix: String,
    /// Address plan.
    pub plan: AddressPlan,
    /// Every recorded process.
    pub processes: Vec<ProcRecord>,
    /// LB VMs.
    pub vms: Vec<VmNet>,
    /// Members.
    pub members: Vec<MemberNet>,
}

/// What [`Lab::adopt`] / [`Lab::open`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdoptReport {
    /// VMs (short ids) re-attached with their processes.
    pub adopted_vms: Vec<String>,
    /// VMs that were recorded but are gone or broken (their namespace is removed).
    pub lost_vms: Vec<String>,
    /// Namespaces of the prefix that belonged to nothing recorded, removed.
    pub removed_namespaces: Vec<String>,
    /// Unrecorded processes stopped in infrastructure and member namespaces.
    pub stray_processes: usize,
}

/// True if `pid`'s network namespace is namespace `ns` (same nsfs inode): guards against a
/// recorded PID that the kernel reused for an unrelated process.
pub fn pid_in_ns(pid: u32, ns: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    let a = std::fs::metadata(format!("/proc/{pid}/ns/net"));
    let b = std::fs::metadata(Path::new("/run/netns").join(ns));
    match (a, b) {
        (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
        _ => false,
    }
}

/// Timings of [`Lab::build`].
#[derive(Debug, Clone, Copy)]
pub struct BuildTimings {
    /// Namespaces, links, addresses, routes, sysctls.
    pub links: Duration,
    /// Gateway FRR started (zebra socket up, bgpd/bfdd spawned).
    pub frr: Duration,
}

/// The running lab. Owns every namespace and process it created; [`Lab::teardown`] removes them
/// all, and dropping a lab that was not torn down removes them synchronously (panic safety).
#[derive(Debug)]
pub struct Lab {
    cfg: LabConfig,
    owned: Owned,
    gateways: [FrrInstance; 2],
    vms: BTreeMap<String, VmNet>,
    members: BTreeMap<u32, MemberNet>,
    timings: BuildTimings,
}

impl Lab {
    /// Builds the fixed part: client, edge, gateways (FRR running), bridges, host management
    /// link. Fails if a namespace of this prefix already exists (use
    /// [`cleanup_prefix`] first). On failure everything created so far is removed.
    pub async fn build(cfg: LabConfig) -> Result<Lab> {
        check_prefix(&cfg.prefix)?;
        cfg.plan.validate()?;
        if !frr::available(&cfg.frr_bin_dir) {
            return Err(LocalError::Invalid(format!(
                "FRR daemons not found in {}",
                cfg.frr_bin_dir.display()
            )));
        }
        let existing: Vec<String> = netns::list_ns()
            .await?
            .into_iter()
            .filter(|n| n.starts_with(&cfg.prefix))
            .collect();
        if !existing.is_empty() {
            return Err(LocalError::Invalid(format!(
                "namespaces with prefix {:?} already exist ({}); remove them first",
                cfg.prefix,
                existing.join(", ")
            )));
        }
        let gw = |n: u8| FrrInstance {
            ns: format!("{}gw{n}", cfg.prefix),
            dir: cfg.runtime_dir.join(format!("gw{n}")),
            bin_dir: cfg.frr_bin_dir.clone(),
        };
        let mut lab = Lab {
            gateways: [gw(1), gw(2)],
            cfg,
            owned: Owned::new(),
            vms: BTreeMap::new(),
            members: BTreeMap::new(),
            timings: BuildTimings {
                links: Duration::ZERO,
                frr: Duration::ZERO,
            },
        };
        if let Err(e) = lab.build_inner().await {
            let _ = lab.owned.teardown(lab.cfg.stop_grace).await;
            return Err(e);
        }
        Ok(lab)
    }

    async fn build_inner(&mut self) -> Result<()> {
        let t0 = Instant::now();
        netns::prepare_dir(&self.cfg.runtime_dir, false).await?;
        self.owned.add_dir(&self.cfg.runtime_dir);
        // FRR drops to the `frr` user: below a directory it cannot traverse, zebra cannot
        // create its socket and the gateways' start times out 10 s later with no hint why.
        check_frr_can_reach(&self.cfg.runtime_dir)?;
        let p = self.cfg.plan.clone();
        let (client, edge, gw1, gw2) = (
            self.ns("client"),
            self.ns("edge"),
            self.ns("gw1"),
            self.ns("gw2"),
        );
        let (l3, mbr, mgmt) = (self.ns("l3"), self.ns("mbr"), self.ns("mgmt"));
        for ns in [&client, &edge, &gw1, &gw2, &l3, &mbr, &mgmt] {
            self.owned.add_ns(ns).await?;
        }
        for ns in [&l3, &mbr, &mgmt] {
            netns::add_bridge(ns, BRIDGE).await?;
        }
        // client ↔ edge
        netns::add_veth(End::ns(&client, "eth0"), End::ns(&edge, "client")).await?;
        addr(&client, "eth0", p.client_addr()).await?;
        addr(&edge, "client", p.edge_client_side()).await?;
        netns::route_via(&client, "default", p.edge_client_side().addr().into()).await?;
        for (i, gw) in [(1u8, &gw1), (2u8, &gw2)] {
            let edge_if = format!("gw{i}");
            netns::add_veth(End::ns(&edge, &edge_if), End::ns(gw, "edge")).await?;
            addr(&edge, &edge_if, p.edge_gw_side(i)).await?;
            addr(gw, "edge", p.gw_edge_side(i)).await?;
            // gateway ↔ L3 bridge and member bridge
            let port = format!("gw{i}");
            netns::add_veth(End::ns(gw, "l3"), End::ns(&l3, &port)).await?;
            netns::set_master(&l3, &port, BRIDGE).await?;
            addr(gw, "l3", net(p.gw_l3_addr(i), p.l3_subnet)).await?;
            netns::add_veth(End::ns(gw, "mbr"), End::ns(&mbr, &port)).await?;
            netns::set_master(&mbr, &port, BRIDGE).await?;
            addr(gw, "mbr", net(p.gw_member_addr(i), p.member_subnet)).await?;
            netns::route_via(gw, "default", p.edge_gw_side(i).addr().into()).await?;
            router_sysctls(gw).await?;
        }
        let vip_dest = p.vip_subnet.to_string();
        netns::route_multipath(
            &edge,
            &vip_dest,
            &[
                p.gw_edge_side(1).addr().into(),
                p.gw_edge_side(2).addr().into(),
            ],
        )
        .await?;
        router_sysctls(&edge).await?;
        // host ↔ management bridge (the only object in the root namespace)
        let host_if = format!("{}mgmt", self.cfg.prefix);
        netns::add_veth(End::host(&host_if), End::ns(&mgmt, "host")).await?;
        self.owned.add_host_link(&host_if);
        netns::set_master(&mgmt, "host", BRIDGE).await?;
        netns::add_addr(
            None,
            &host_if,
            IpNet::V4(net(p.host_mgmt_addr(), p.mgmt_subnet)),
        )
        .await?;
        self.timings.links = t0.elapsed();

        let t1 = Instant::now();
        for (i, g) in self.gateways.clone().iter().enumerate() {
            let host = format!("gw{}", i + 1);
            let router_id = p.gw_l3_addr(i as u8 + 1);
            g.start(
                &mut self.owned,
                &frr::render_zebra(&host),
                &frr::render_bfdd(&host),
                &frr::render_gateway_bgpd(
                    &host,
                    self.cfg.l3_router_as,
                    router_id,
                    p.l3_subnet,
                    p.vip_subnet,
                ),
            )
            .await?;
        }
        self.timings.frr = t1.elapsed();
        info!(prefix = %self.cfg.prefix, links_ms = self.timings.links.as_millis() as u64,
              frr_ms = self.timings.frr.as_millis() as u64, "local cloud built");
        Ok(())
    }

    /// Namespace name `{prefix}{suffix}`.
    pub fn ns(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.cfg.prefix)
    }

    /// The client namespace (send test traffic from here).
    pub fn client_ns(&self) -> String {
        self.ns("client")
    }

    /// The configuration the lab was built with.
    pub fn config(&self) -> &LabConfig {
        &self.cfg
    }

    /// Build timings.
    pub fn timings(&self) -> BuildTimings {
        self.timings
    }

    /// The two gateways' FRR instances (for `vtysh`).
    pub fn gateways(&self) -> &[FrrInstance; 2] {
        &self.gateways
    }

    /// LB VMs currently in the lab, by short id.
    pub fn vms(&self) -> &BTreeMap<String, VmNet> {
        &self.vms
    }

    /// Members currently in the lab, by index.
    pub fn members(&self) -> &BTreeMap<u32, MemberNet> {
        &self.members
    }

    /// The ownership record (namespaces and processes).
    pub fn owned(&self) -> &Owned {
        &self.owned
    }

    /// Mutable ownership record, to start extra processes (e.g. an [`FrrInstance`] inside a VM)
    /// that teardown must stop.
    pub fn owned_mut(&mut self) -> &mut Owned {
        &mut self.owned
    }

    /// Creates LB VM namespace `{prefix}vm-{short_id}` in the lowest free slot: link to the L3
    /// bridge (default route multipath via both gateways), link to the management bridge,
    /// `arp_ignore=1`/`arp_announce=2` so a VIP on `lo` is never answered for on the wire.
    pub async fn add_vm(&mut self, short_id: &str) -> Result<VmNet> {
        let used: Vec<u32> = self.vms.values().map(|v| v.slot).collect();
        let slot = (1..=self.cfg.plan.max_vm_slot())
            .find(|s| !used.contains(s))
            .ok_or_else(|| LocalError::Plan("no free LB VM slot".into()))?;
        self.add_vm_at(short_id, slot).await
    }

    /// [`Lab::add_vm`] in a given slot (used when re-creating a recorded VM).
    pub async fn add_vm_at(&mut self, short_id: &str, slot: u32) -> Result<VmNet> {
        Self::check_short_id(short_id)?;
        if self.vms.values().any(|v| v.slot == slot) {
            return Err(LocalError::Invalid(format!("slot {slot} is in use")));
        }
        let p = &self.cfg.plan;
        let vm = VmNet {
            short_id: short_id.into(),
            ns: self.ns(&format!("vm-{short_id}")),
            slot,
            l3_addr: p.vm_l3_addr(slot)?,
            mgmt_addr: p.vm_mgmt_addr(slot)?,
            dir: self.cfg.runtime_dir.join(format!("vm-{short_id}")),
        };
        // A slot's addresses are reused by the next VM in that slot (failover); with a MAC
        // derived from the slot too, neighbours' ARP caches stay right across the swap (else
        // the host and the gateways keep sending to the dead VM's MAC until their entries age).
        let macs = [1u32, 2].map(|kind| {
            format!(
                "02:6b:{kind:02x}:{:02x}:{:02x}:{:02x}",
                (slot >> 16) & 0xff,
                (slot >> 8) & 0xff,
                slot & 0xff
            )
        });
        self.create_vm(vm, &macs).await
    }

    /// An LB VM whose addresses and MACs a cloud assigned (a stand-in for a hypervisor booting
    /// an OpenStack server: the addresses and MACs of its Neutron ports). The slot only names
    /// its bridge ports. Addresses must lie in the plan's L3 and management subnets.
    pub async fn add_guest_vm(&mut self, short_id: &str, nics: &GuestNics) -> Result<VmNet> {
        let p = &self.cfg.plan;
        if !p.l3_subnet.contains(&nics.l3_addr) || !p.mgmt_subnet.contains(&nics.mgmt_addr) {
            return Err(LocalError::Invalid(format!(
                "guest addresses {} / {} are outside the L3 subnet {} / management subnet {}",
                nics.l3_addr, nics.mgmt_addr, p.l3_subnet, p.mgmt_subnet
            )));
        }
        for mac in [&nics.l3_mac, &nics.mgmt_mac] {
            let ok = mac.len() == 17
                && mac.split(':').count() == 6
                && mac
                    .split(':')
                    .all(|b| b.len() == 2 && b.bytes().all(|c| c.is_ascii_hexdigit()));
            if !ok {
                return Err(LocalError::Invalid(format!("invalid MAC address {mac:?}")));
            }
        }
        Self::check_short_id(short_id)?;
        let used: Vec<u32> = self.vms.values().map(|v| v.slot).collect();
        let slot = (1..=self.cfg.plan.max_vm_slot())
            .find(|s| !used.contains(s))
            .ok_or_else(|| LocalError::Plan("no free LB VM slot".into()))?;
        let vm = VmNet {
            short_id: short_id.into(),
            ns: self.ns(&format!("vm-{short_id}")),
            slot,
            l3_addr: nics.l3_addr,
            mgmt_addr: nics.mgmt_addr,
            dir: self.cfg.runtime_dir.join(format!("vm-{short_id}")),
        };
        let macs = [nics.l3_mac.to_lowercase(), nics.mgmt_mac.to_lowercase()];
        self.create_vm(vm, &macs).await
    }

    fn check_short_id(short_id: &str) -> Result<()> {
        if short_id.is_empty()
            || short_id.len() > 8
            || !short_id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        {
            return Err(LocalError::InvalidName {
                name: short_id.into(),
                reason: "a VM short id is 1-8 characters [a-z0-9]",
            });
        }
        Ok(())
    }

    async fn create_vm(&mut self, vm: VmNet, macs: &[String; 2]) -> Result<VmNet> {
        if self.vms.contains_key(&vm.short_id) {
            return Err(LocalError::Invalid(format!(
                "VM {} already exists",
                vm.short_id
            )));
        }
        let short_id = vm.short_id.clone();
        self.owned.add_ns(&vm.ns).await?;
        if let Err(e) = self.wire_vm(&vm, macs).await {
            let _ = self.owned.remove_ns(&vm.ns, self.cfg.stop_grace).await;
            return Err(e);
        }
        self.vms.insert(short_id.clone(), vm.clone());
        info!(vm = %short_id, ns = %vm.ns, l3 = %vm.l3_addr, mgmt = %vm.mgmt_addr, "LB VM namespace ready");
        Ok(vm)
    }

    async fn wire_vm(&mut self, vm: &VmNet, macs: &[String; 2]) -> Result<()> {
        let p = self.cfg.plan.clone();
        let port = format!("vm{}", vm.slot);
        let (l3, mgmt) = (self.ns("l3"), self.ns("mgmt"));
        netns::add_veth(End::ns(&vm.ns, "l3"), End::ns(&l3, &port)).await?;
        netns::set_master(&l3, &port, BRIDGE).await?;
        addr(&vm.ns, "l3", net(vm.l3_addr, p.l3_subnet)).await?;
        netns::add_veth(End::ns(&vm.ns, "mgmt"), End::ns(&mgmt, &port)).await?;
        netns::set_master(&mgmt, &port, BRIDGE).await?;
        addr(&vm.ns, "mgmt", net(vm.mgmt_addr, p.mgmt_subnet)).await?;
        for (dev, mac) in [("l3", &macs[0]), ("mgmt", &macs[1])] {
            netns::run(
                "ip",
                &["-n", &vm.ns, "link", "set", "dev", dev, "address", mac],
            )
            .await?;
        }
        netns::route_multipath(
            &vm.ns,
            "default",
            &[p.gw_l3_addr(1).into(), p.gw_l3_addr(2).into()],
        )
        .await?;
        for (k, v) in [
            ("net.ipv4.conf.all.arp_ignore", "1"),
            ("net.ipv4.conf.all.arp_announce", "2"),
            ("net.ipv4.fib_multipath_hash_policy", "1"),
        ] {
            netns::sysctl(&vm.ns, k, v).await?;
        }
        netns::prepare_dir(&vm.dir, false).await?;
        Ok(())
    }

    /// Puts `vip/32` on the VM's `lo` (idempotent). In OpenStack the agent does this after
    /// Neutron allowed the address pair; in the local cloud the driver does it when the pair is
    /// allowed, and an agent doing it again is harmless.
    pub async fn add_vip(&self, short_id: &str, vip: Ipv4Addr) -> Result<()> {
        let vm = self.vm(short_id)?;
        netns::add_addr(Some(&vm.ns), "lo", IpNet::V4(net(vip, host_net(vip)))).await
    }

    /// Removes `vip/32` from the VM's `lo` (idempotent).
    pub async fn del_vip(&self, short_id: &str, vip: Ipv4Addr) -> Result<()> {
        let vm = self.vm(short_id)?;
        netns::del_addr(Some(&vm.ns), "lo", IpNet::V4(net(vip, host_net(vip)))).await
    }

    fn vm(&self, short_id: &str) -> Result<&VmNet> {
        self.vms.get(short_id).ok_or_else(|| LocalError::NotFound {
            kind: "LB VM",
            id: short_id.into(),
        })
    }

    /// Starts `program args` inside VM `short_id`, logging to `{vm dir}/{name}.log`; recorded so
    /// [`Lab::remove_vm`] and teardown stop it. Returns the PID.
    pub async fn spawn_in_vm(
        &mut self,
        short_id: &str,
        name: &str,
        program: &Path,
        args: &[String],
        env: &[(String, String)],
    ) -> Result<u32> {
        let vm = self.vm(short_id)?.clone();
        let log = vm.dir.join(format!("{name}.log"));
        self.owned
            .spawn_env(name, &vm.ns, program, args, env, &log)
            .await
    }

    /// True while every recorded process of VM `short_id` runs (reaping exited children).
    /// A VM without processes counts as running.
    pub fn vm_processes_running(&mut self, short_id: &str) -> bool {
        let ns = self.ns(&format!("vm-{short_id}"));
        self.owned.processes_in_running(&ns)
    }

    /// What klb must persist to find this lab again after a restart.
    pub fn snapshot(&self) -> LabSnapshot {
        LabSnapshot {
            prefix: self.cfg.prefix.clone(),
            plan: self.cfg.plan.clone(),
            processes: self
                .owned
                .processes()
                .iter()
                .map(|p| ProcRecord {
                    name: p.name.clone(),
                    ns: p.ns.clone(),
                    pid: p.pid(),
                })
                .collect(),
            vms: self.vms.values().cloned().collect(),
            members: self.members.values().cloned().collect(),
        }
    }

    /// Re-attaches to a lab a previous klb process built (after a crash or restart), from its
    /// [`Lab::snapshot`]. The fixed part must be intact (namespaces present, gateway FRR
    /// running, PIDs still in their namespace, which guards against PID reuse), else this fails
    /// and the caller rebuilds (see [`Lab::open`]). A VM whose namespace is gone or whose
    /// recorded processes died is removed and reported as lost; a namespace with this prefix that
    /// belongs to nothing recorded is removed.
    pub async fn adopt(cfg: LabConfig, snap: &LabSnapshot) -> Result<(Lab, AdoptReport)> {
        check_prefix(&cfg.prefix)?;
        cfg.plan.validate()?;
        if snap.prefix != cfg.prefix || snap.plan != cfg.plan {
            return Err(LocalError::Invalid(
                "recorded lab has another prefix or address plan".into(),
            ));
        }
        let existing = netns::list_ns().await?;
        let infra: Vec<String> = INFRA.iter().map(|s| format!("{}{s}", cfg.prefix)).collect();
        for ns in &infra {
            if !existing.contains(ns) {
                return Err(LocalError::Invalid(format!("namespace {ns} is gone")));
            }
        }
        let alive = |p: &ProcRecord| netns::pid_alive(p.pid) && pid_in_ns(p.pid, &p.ns);
        for gw in ["gw1", "gw2"] {
            let ns = format!("{}{gw}", cfg.prefix);
            for d in ["zebra", "bfdd", "bgpd"] {
                if !snap
                    .processes
                    .iter()
                    .any(|p| p.ns == ns && p.name == d && alive(p))
                {
                    return Err(LocalError::Invalid(format!("{d} in {ns} is not running")));
                }
            }
        }
        let gw = |n: u8| FrrInstance {
            ns: format!("{}gw{n}", cfg.prefix),
            dir: cfg.runtime_dir.join(format!("gw{n}")),
            bin_dir: cfg.frr_bin_dir.clone(),
        };
        let mut lab = Lab {
            gateways: [gw(1), gw(2)],
            owned: Owned::new(),
            vms: BTreeMap::new(),
            members: BTreeMap::new(),
            timings: BuildTimings {
                links: Duration::ZERO,
                frr: Duration::ZERO,
            },
            cfg,
        };
        lab.owned.add_dir(&lab.cfg.runtime_dir);
        lab.owned.add_host_link(&format!("{}mgmt", lab.cfg.prefix));
        let adopt_procs = |owned: &mut Owned, ns: &str| {
            for p in snap.processes.iter().filter(|p| p.ns == ns && alive(p)) {
                owned.adopt_process(netns::Process::adopted(&p.name, &p.ns, p.pid));
            }
        };
        let mut report = AdoptReport::default();
        for ns in &infra {
            lab.owned.adopt_ns(ns);
            adopt_procs(&mut lab.owned, ns);
        }
        let mut lost_ns = Vec::new();
        for vm in &snap.vms {
            let procs: Vec<&ProcRecord> = snap.processes.iter().filter(|p| p.ns == vm.ns).collect();
            if existing.contains(&vm.ns) && procs.iter().all(|p| alive(p)) {
                lab.owned.adopt_ns(&vm.ns);
                adopt_procs(&mut lab.owned, &vm.ns);
                lab.vms.insert(vm.short_id.clone(), vm.clone());
                report.adopted_vms.push(vm.short_id.clone());
            } else {
                lost_ns.push(vm.ns.clone());
                netns::del_ns(&vm.ns, lab.cfg.stop_grace).await?;
                let _ = std::fs::remove_dir_all(&vm.dir);
                report.lost_vms.push(vm.short_id.clone());
            }
        }
        for m in &snap.members {
            if existing.contains(&m.ns) {
                lab.owned.adopt_ns(&m.ns);
                adopt_procs(&mut lab.owned, &m.ns);
                lab.members.insert(m.index, m.clone());
            }
        }
        // Processes in infrastructure and member namespaces that nothing recorded (started by a
        // klb that crashed before persisting them, or by hand) belong to no one: stop them.
        // VM namespaces are left alone: the agent's HAProxy and FRR are its own children.
        let recorded: Vec<u32> = lab.owned.processes().iter().map(|p| p.pid()).collect();
        let member_ns: Vec<String> = lab.members.values().map(|m| m.ns.clone()).collect();
        for ns in infra.iter().chain(member_ns.iter()) {
            let strays: Vec<u32> = netns::ns_pids(ns)
                .await?
                .into_iter()
                .filter(|p| !recorded.contains(p))
                .collect();
            if !strays.is_empty() {
                info!(ns, ?strays, "stopping unrecorded processes");
                netns::stop_pids(&strays, lab.cfg.stop_grace).await;
                report.stray_processes += strays.len();
            }
        }
        for ns in existing {
            if ns.starts_with(&lab.cfg.prefix)
                && !lab.owned.namespaces().contains(&ns)
                && !lost_ns.contains(&ns)
            {
                netns::del_ns(&ns, lab.cfg.stop_grace).await?;
                report.removed_namespaces.push(ns);
            }
        }
        info!(adopted = ?report.adopted_vms, lost = ?report.lost_vms,
              removed = ?report.removed_namespaces, "local cloud adopted");
        Ok((lab, report))
    }

    /// Adopts the recorded lab if it is intact, else removes every namespace of the prefix and
    /// builds a fresh one (then every recorded VM is reported lost).
    pub async fn open(cfg: LabConfig, snap: Option<&LabSnapshot>) -> Result<(Lab, AdoptReport)> {
        check_prefix(&cfg.prefix)?;
        cfg.plan.validate()?;
        if let Some(snap) = snap {
            match Lab::adopt(cfg.clone(), snap).await {
                Ok(r) => return Ok(r),
                Err(e) => info!(error = %e, "recorded local cloud not adoptable; rebuilding"),
            }
        }
        let mut report = AdoptReport {
            removed_namespaces: cleanup_prefix(&cfg.prefix, cfg.stop_grace).await?,
            ..AdoptReport::default()
        };
        if let Some(snap) = snap {
            report.lost_vms = snap.vms.iter().map(|v| v.short_id.clone()).collect();
        }
        Ok((Lab::build(cfg).await?, report))
    }

    /// Sends `signal` (`STOP`, `CONT`, `KILL`, ...) to every process inside VM `short_id`, by
    /// PID: fault injection for failover tests and the demo (`STOP` = a silent hang).
    pub async fn signal_vm(&self, short_id: &str, signal: &str) -> Result<()> {
        let Some(sig) = netns::parse_signal(signal) else {
            return Err(LocalError::Invalid(format!("bad signal name {signal:?}")));
        };
        let vm = self.vm(short_id)?;
        for pid in netns::ns_pids(&vm.ns).await? {
            netns::send_signal(pid, sig)?;
        }
        Ok(())
    }

    /// Stops every process of the VM (by PID) and deletes its namespace (and so its links).
    /// Idempotent.
    pub async fn remove_vm(&mut self, short_id: &str) -> Result<()> {
        let ns = self.ns(&format!("vm-{short_id}"));
        self.owned.remove_ns(&ns, self.cfg.stop_grace).await?;
        if let Some(vm) = self.vms.remove(short_id) {
            let _ = std::fs::remove_dir_all(&vm.dir);
        }
        Ok(())
    }

    /// Creates member namespace `{prefix}m{index}` on the member bridge (default route via
    /// gateway 1).
    pub async fn add_member(&mut self, index: u32) -> Result<MemberNet> {
        if self.members.contains_key(&index) {
            return Err(LocalError::Invalid(format!(
                "member {index} already exists"
            )));
        }
        let p = self.cfg.plan.clone();
        let m = MemberNet {
            index,
            ns: self.ns(&format!("m{index}")),
            addr: p.member_addr(index)?,
        };
        let port = format!("m{index}");
        check_port_name(&port)?;
        self.owned.add_ns(&m.ns).await?;
        let mbr = self.ns("mbr");
        let wired = async {
            netns::add_veth(End::ns(&m.ns, "eth0"), End::ns(&mbr, &port)).await?;
            netns::set_master(&mbr, &port, BRIDGE).await?;
            addr(&m.ns, "eth0", net(m.addr, p.member_subnet)).await?;
            netns::route_via(&m.ns, "default", p.gw_member_addr(1).into()).await
        }
        .await;
        if let Err(e) = wired {
            let _ = self.owned.remove_ns(&m.ns, self.cfg.stop_grace).await;
            return Err(e);
        }
        self.members.insert(index, m.clone());
        Ok(m)
    }

    /// Starts `program args` inside namespace `ns` (one of this lab's), logging to
    /// `{runtime dir}/{ns}-{name}.log`. Returns the PID.
    pub async fn spawn_in(
        &mut self,
        ns: &str,
        name: &str,
        program: &Path,
        args: &[String],
    ) -> Result<u32> {
        if !self.owned.namespaces().iter().any(|n| n == ns) {
            return Err(LocalError::NotFound {
                kind: "namespace",
                id: ns.into(),
            });
        }
        let log = self.cfg.runtime_dir.join(format!("{ns}-{name}.log"));
        self.owned.spawn(name, ns, program, args, &log).await
    }

    /// Number of kernel nexthops for `vip/32` on gateway `gw` (1 or 2).
    pub async fn gateway_paths(&self, gw: u8, vip: Ipv4Addr) -> Result<usize> {
        netns::route_nexthops(&self.ns(&format!("gw{gw}")), &format!("{vip}/32")).await
    }

    /// Number of BFD sessions in state `up` on gateway `gw` (1 or 2).
    pub async fn gateway_bfd_up(&self, gw: u8) -> Result<usize> {
        let idx = usize::from(gw.clamp(1, 2) - 1);
        let out = self.gateways[idx].vtysh(&["show bfd peers brief"]).await?;
        Ok(out
            .lines()
            .filter(|l| l.split_whitespace().nth(3) == Some("up"))
            .count())
    }

    /// Waits until both gateways have at least `want` BFD sessions up; returns how long it took.
    pub async fn wait_bfd_up(&self, want: usize, limit: Duration) -> Result<Duration> {
        let start = Instant::now();
        loop {
            let a = self.gateway_bfd_up(1).await?;
            let b = self.gateway_bfd_up(2).await?;
            if a >= want && b >= want {
                return Ok(start.elapsed());
            }
            if start.elapsed() > limit {
                return Err(LocalError::Timeout {
                    what: format!("{want} BFD sessions up on both gateways (have {a} and {b})"),
                    secs: limit.as_secs_f64(),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until both gateways have exactly `want` nexthops for `vip/32`; returns how long it
    /// took. Polls every 50 ms.
    pub async fn wait_paths(
        &self,
        vip: Ipv4Addr,
        want: usize,
        limit: Duration,
    ) -> Result<Duration> {
        let start = Instant::now();
        loop {
            let a = self.gateway_paths(1, vip).await?;
            let b = self.gateway_paths(2, vip).await?;
            if a == want && b == want {
                return Ok(start.elapsed());
            }
            if start.elapsed() > limit {
                return Err(LocalError::Timeout {
                    what: format!("{want} nexthops for {vip} on both gateways (have {a} and {b})"),
                    secs: limit.as_secs_f64(),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops every process and deletes every namespace and the runtime directory. Idempotent.
    /// (Dropping a lab without calling this removes everything synchronously: the drop guard of
    /// [`Owned`].)
    pub async fn teardown(mut self) -> Result<()> {
        self.teardown_mut().await
    }

    /// [`Lab::teardown`] through a reference (the lab is empty afterwards).
    pub async fn teardown_mut(&mut self) -> Result<()> {
        let r = self.owned.teardown(self.cfg.stop_grace).await;
        self.vms.clear();
        self.members.clear();
        r
    }

    /// Lets go of everything without removing it, so that a later process can
    /// [`Lab::adopt`] it from a [`Lab::snapshot`] taken before.
    pub fn forget(&mut self) {
        self.owned.forget();
        self.vms.clear();
        self.members.clear();
    }
}

/// Removes every namespace whose name starts with `prefix` (stopping the processes inside
/// first, by PID) and the root-namespace veth `{prefix}mgmt`. For reconciliation after a crash
/// and for test cleanup. Returns the names removed.
pub async fn cleanup_prefix(prefix: &str, grace: Duration) -> Result<Vec<String>> {
    check_prefix(prefix)?;
    let mut removed = Vec::new();
    for ns in netns::list_ns().await? {
        if ns.starts_with(prefix) {
            netns::del_ns(&ns, grace).await?;
            removed.push(ns);
        }
    }
    netns::del_link(None, &format!("{prefix}mgmt")).await?;
    Ok(removed)
}

/// A user's identity, as far as directory traversal is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserIds {
    /// Name (for messages).
    pub name: String,
    /// UID.
    pub uid: u32,
    /// Primary and supplementary GIDs.
    pub gids: Vec<u32>,
}

/// The user `name` from `/etc/passwd` (primary group) and `/etc/group` (supplementary groups).
pub fn lookup_user(name: &str) -> Result<UserIds> {
    let passwd = std::fs::read_to_string("/etc/passwd")
        .map_err(|e| LocalError::io(Path::new("/etc/passwd"), e))?;
    let group = std::fs::read_to_string("/etc/group").unwrap_or_default();
    parse_user(name, &passwd, &group).ok_or_else(|| {
        LocalError::Invalid(format!(
            "user {name:?} (FRR's daemons run as it) is not in /etc/passwd"
        ))
    })
}

/// [`lookup_user`] over the files' texts.
fn parse_user(name: &str, passwd: &str, group: &str) -> Option<UserIds> {
    let f: Vec<&str> = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() >= 4 && f[0] == name)?;
    let uid = f[2].parse().ok()?;
    let mut gids = vec![f[3].parse().ok()?];
    for g in group.lines().map(|l| l.split(':').collect::<Vec<_>>()) {
        if g.len() >= 4
            && g[3].split(',').any(|m| m == name)
            && let Ok(gid) = g[2].parse::<u32>()
            && !gids.contains(&gid)
        {
            gids.push(gid);
        }
    }
    Some(UserIds {
        name: name.into(),
        uid,
        gids,
    })
}

/// Fails, naming the directory, unless the `frr` user can traverse `dir` and each of its
/// ancestors.
pub fn check_frr_can_reach(dir: &Path) -> Result<()> {
    check_user_can_reach(dir, &lookup_user("frr")?)
}

/// Fails, naming the first directory in the way, unless `user` can traverse (search
/// permission: the `x` bit for owner, group or other, whichever applies) `dir` and every
/// ancestor of it. Root (UID 0) can traverse anything.
pub fn check_user_can_reach(dir: &Path, user: &UserIds) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    if user.uid == 0 {
        return Ok(());
    }
    let dir = std::path::absolute(dir).map_err(|e| LocalError::io(dir, e))?;
    // Outermost first, so the message names the directory that actually blocks.
    let mut chain: Vec<&Path> = dir.ancestors().collect();
    chain.reverse();
    for d in chain {
        let md = std::fs::metadata(d).map_err(|e| LocalError::io(d, e))?;
        let mode = md.mode();
        let can = if md.uid() == user.uid {
            mode & 0o100 != 0
        } else if user.gids.contains(&md.gid()) {
            mode & 0o010 != 0
        } else {
            mode & 0o001 != 0
        };
        if !can {
            return Err(LocalError::Invalid(format!(
                "runtime directory {}: user {:?} (FRR) cannot traverse {} (mode {:o}); \
                 choose a runtime directory it can reach or open {} (chmod o+x)",
                dir.display(),
                user.name,
                d.display(),
                mode & 0o7777,
                d.display()
            )));
        }
    }
    Ok(())
}

fn check_prefix(prefix: &str) -> Result<()> {
    netns::check_ns_name(prefix)?;
    if prefix.len() > 10 {
        return Err(LocalError::InvalidName {
            name: prefix.into(),
            reason: "prefix longer than 10 bytes (interface names are limited to 15)",
        });
    }
    Ok(())
}

fn check_port_name(name: &str) -> Result<()> {
    netns::check_if_name(name)
}

fn net(a: Ipv4Addr, subnet: Ipv4Net) -> Ipv4Net {
    Ipv4Net::new(a, subnet.prefix_len()).expect("valid prefix")
}

fn host_net(a: Ipv4Addr) -> Ipv4Net {
    Ipv4Net::new(a, 32).expect("valid prefix")
}

async fn addr(ns: &str, dev: &str, cidr: Ipv4Net) -> Result<()> {
    netns::add_addr(Some(ns), dev, IpNet::V4(cidr)).await
}

/// Forwarding, L4 multipath hash, no reverse-path filter (paths are asymmetric by design).
async fn router_sysctls(ns: &str) -> Result<()> {
    for (k, v) in [
        ("net.ipv4.ip_forward", "1"),
        ("net.ipv4.fib_multipath_hash_policy", "1"),
        ("net.ipv4.conf.all.rp_filter", "0"),
        ("net.ipv4.conf.default.rp_filter", "0"),
    ] {
        netns::sysctl(ns, k, v).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn chmod(p: &Path, mode: u32) {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn a_0700_parent_is_named_for_a_user_that_is_not_its_owner() {
        let tmp = tempfile::tempdir().unwrap();
        let parent = tmp.path().join("private");
        let run = parent.join("run");
        std::fs::create_dir_all(&run).unwrap();
        chmod(tmp.path(), 0o755);
        chmod(&parent, 0o700);
        let owner = std::fs::metadata(&parent).unwrap();
        // A user that owns nothing here and is in none of its groups, like `frr`.
        let stranger = UserIds {
            name: "frr".into(),
            uid: owner.uid().wrapping_add(4242).max(1),
            gids: vec![owner.gid().wrapping_add(4242)],
        };
        let err = check_user_can_reach(&run, &stranger)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("traverse {} (mode 700)", parent.display())),
            "{err}"
        );
        // The owner passes; so does anyone once `x` is set for others.
        let me = UserIds {
            name: "me".into(),
            uid: owner.uid().max(1),
            gids: vec![],
        };
        if owner.uid() != 0 {
            check_user_can_reach(&run, &me).unwrap();
        }
        chmod(&parent, 0o711);
        check_user_can_reach(&run, &stranger).unwrap();
        // Group access counts only through the group bits.
        chmod(&parent, 0o710);
        assert!(check_user_can_reach(&run, &stranger).is_err());
        let member = UserIds {
            gids: vec![owner.gid()],
            ..stranger.clone()
        };
        check_user_can_reach(&run, &member).unwrap();
    }

    #[test]
    fn users_come_from_passwd_and_group() {
        let passwd =
            "root:x:0:0:root:/root:/bin/bash\nfrr:x:101:102:Frr:/nonexistent:/usr/sbin/nologin\n";
        let group = "frr:x:102:\nfrrvty:x:103:frr\nother:x:104:alice,frr,bob\nnope:x:105:frrx\n";
        let u = parse_user("frr", passwd, group).unwrap();
        assert_eq!(u.uid, 101);
        assert_eq!(u.gids, vec![102, 103, 104]);
        assert!(parse_user("zebra", passwd, group).is_none());
    }
}
