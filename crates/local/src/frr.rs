//! FRR (zebra + bgpd + bfdd) per namespace with private paths, and the gateway configuration.
//!
//! Daemons run in the foreground (no `-d`) so the tokio child is the daemon itself and its PID is
//! known without pid-file races. Each instance gets its own directory holding the configs, pid
//! files, `zserv.api`, the vty sockets and logs (`vtysh --vty_socket DIR` reaches it from the
//! root namespace).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::Ipv4Net;

use crate::error::{LocalError, Result};
use crate::netns::{self, Owned};

/// Default directory of the FRR daemons (Debian).
pub const FRR_BIN_DIR: &str = "/usr/lib/frr";

/// BFD profile used on every session: 100 ms × 3 (≈ 300 ms detection).
const BFD_PROFILE: &str = "bfd
 profile fast
  detect-multiplier 3
  receive-interval 100
  transmit-interval 100
 exit
exit
";

/// zebra.conf. `no zebra nexthop kernel enable`: with kernel nexthop groups, FRR 8.4.4 left the
/// FIB single-path after a link flap while its RIB showed two paths (see the ECMP lab notes).
pub fn render_zebra(hostname: &str) -> String {
    format!("hostname {hostname}\nno zebra nexthop kernel enable\n")
}

/// bfdd.conf with the `fast` profile.
pub fn render_bfdd(hostname: &str) -> String {
    format!("hostname {hostname}\n{BFD_PROFILE}")
}

/// bgpd.conf of an L3 gateway: accepts eBGP sessions from any address of the L3 subnet
/// (`bgp listen range`, so a new LB VM needs no gateway change), only VIP /32s from them,
/// announces nothing back, multipath across LB VMs with different ASNs.
pub fn render_gateway_bgpd(
    hostname: &str,
    asn: u32,
    router_id: Ipv4Addr,
    l3_subnet: Ipv4Net,
    vip_subnet: Ipv4Net,
) -> String {
    format!(
        "hostname {hostname}
ip prefix-list VIPS seq 5 permit {vip_subnet} ge 32
route-map LB-IN permit 10
 match ip address prefix-list VIPS
exit
route-map NOTHING deny 10
exit
router bgp {asn}
 bgp router-id {router_id}
 no bgp ebgp-requires-policy
 ! each LB VM has its own AS (base_as_number + n): as-paths differ, relax them for ECMP
 bgp bestpath as-path multipath-relax
 timers bgp 3 9
 neighbor LB peer-group
 neighbor LB remote-as external
 neighbor LB bfd
 neighbor LB bfd profile fast
 bgp listen range {l3_subnet} peer-group LB
 address-family ipv4 unicast
  maximum-paths 8
  neighbor LB route-map LB-IN in
  neighbor LB route-map NOTHING out
 exit-address-family
exit
"
    )
}

/// bgpd.conf of a plain VIP announcer (what the agent renders on an LB VM): peers with both
/// gateways, announces only `vip/32`, accepts nothing. Used by tests and by the lab before the
/// agent exists; the agent owns this file on real LB VMs.
pub fn render_speaker_bgpd(
    hostname: &str,
    asn: u32,
    router_id: Ipv4Addr,
    gateway_asn: u32,
    gateways: &[Ipv4Addr],
    vip: Ipv4Addr,
) -> String {
    let mut s = format!(
        "hostname {hostname}
ip prefix-list VIP seq 5 permit {vip}/32
route-map ANNOUNCE permit 10
 match ip address prefix-list VIP
exit
route-map NOTHING deny 10
exit
router bgp {asn}
 bgp router-id {router_id}
 no bgp ebgp-requires-policy
 timers bgp 3 9
 coalesce-time 50
"
    );
    for gw in gateways {
        s += &format!(
            " neighbor {gw} remote-as {gateway_asn}\n neighbor {gw} timers connect 1\n neighbor {gw} bfd\n neighbor {gw} bfd profile fast\n"
        );
    }
    s += &format!(" address-family ipv4 unicast\n  network {vip}/32\n");
    for gw in gateways {
        s += &format!(
            "  neighbor {gw} route-map ANNOUNCE out\n  neighbor {gw} route-map NOTHING in\n"
        );
    }
    s += " exit-address-family\nexit\n";
    s
}

/// One FRR instance (zebra, bfdd, bgpd) inside a namespace, with its private directory.
#[derive(Debug, Clone)]
pub struct FrrInstance {
    /// Namespace it runs in.
    pub ns: String,
    /// Private directory (configs, sockets, pid files, logs); `vtysh --vty_socket` target.
    pub dir: PathBuf,
    /// Directory of the daemon binaries.
    pub bin_dir: PathBuf,
}

impl FrrInstance {
    /// Writes the three configs, makes the directory `frr:frr`, starts zebra, waits for its
    /// `zserv.api`, then starts bfdd and bgpd. Every process is recorded in `owned`.
    pub async fn start(
        &self,
        owned: &mut Owned,
        zebra_conf: &str,
        bfdd_conf: &str,
        bgpd_conf: &str,
    ) -> Result<()> {
        // Start from an empty directory: a stale `zserv.api` from an earlier run would make the
        // wait below pass before zebra is listening.
        match std::fs::remove_dir_all(&self.dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(LocalError::io(&self.dir, e));
            }
            _ => {}
        }
        netns::prepare_dir(&self.dir, false).await?;
        for (name, body) in [
            ("zebra.conf", zebra_conf),
            ("bfdd.conf", bfdd_conf),
            ("bgpd.conf", bgpd_conf),
            ("vtysh.conf", "service integrated-vtysh-config\n"),
        ] {
            let p = self.dir.join(name);
            std::fs::write(&p, body).map_err(|e| LocalError::io(&p, e))?;
        }
        netns::prepare_dir(&self.dir, true).await?;
        self.start_daemon(owned, "zebra").await?;
        let sock = self.dir.join("zserv.api");
        wait_for(&sock, Duration::from_secs(10)).await?;
        self.start_daemon(owned, "bfdd").await?;
        self.start_daemon(owned, "bgpd").await?;
        Ok(())
    }

    /// Starts one daemon (`zebra`, `bfdd` or `bgpd`) in the foreground, recorded in `owned`.
    pub async fn start_daemon(&self, owned: &mut Owned, daemon: &str) -> Result<u32> {
        let d = |f: &str| self.dir.join(f).display().to_string();
        let mut args = vec![
            "-u".to_string(),
            "frr".into(),
            "-g".into(),
            "frr".into(),
            "-P".into(),
            "0".into(),
            "-f".into(),
            d(&format!("{daemon}.conf")),
            "-i".into(),
            d(&format!("{daemon}.pid")),
            "-z".into(),
            d("zserv.api"),
            "--vty_socket".into(),
            self.dir.display().to_string(),
            "--log".into(),
            format!("file:{}", d(&format!("{daemon}.log"))),
        ];
        if daemon == "bfdd" {
            args.extend(["--bfdctl".to_string(), d("bfdd.sock")]);
        }
        let program = self.bin_dir.join(daemon);
        let out = self.dir.join(format!("{daemon}.out"));
        owned.spawn(daemon, &self.ns, &program, &args, &out).await
    }

    /// Runs `vtysh --vty_socket DIR -c CMD...` and returns its output.
    pub async fn vtysh(&self, cmds: &[&str]) -> Result<String> {
        let dir = self.dir.display().to_string();
        let mut args = vec!["--vty_socket", dir.as_str()];
        for c in cmds {
            args.extend_from_slice(&["-c", c]);
        }
        netns::run("vtysh", &args).await
    }
}

/// Waits until `path` exists (polling every 50 ms) or `limit` passes.
pub async fn wait_for(path: &Path, limit: Duration) -> Result<()> {
    let start = tokio::time::Instant::now();
    while !path.exists() {
        if start.elapsed() > limit {
            return Err(LocalError::Timeout {
                what: path.display().to_string(),
                secs: limit.as_secs_f64(),
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// True if the FRR daemons are installed in `bin_dir`.
pub fn available(bin_dir: &Path) -> bool {
    ["zebra", "bgpd", "bfdd"]
        .iter()
        .all(|d| bin_dir.join(d).exists())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_config_has_the_settings_that_matter() {
        let c = render_gateway_bgpd(
            "gw1",
            60201,
            "198.18.64.1".parse().unwrap(),
            "198.18.64.0/20".parse().unwrap(),
            "198.19.0.0/24".parse().unwrap(),
        );
        for line in [
            "router bgp 60201",
            "maximum-paths 8",
            "bgp bestpath as-path multipath-relax",
            "no bgp ebgp-requires-policy",
            "timers bgp 3 9",
            "bgp listen range 198.18.64.0/20 peer-group LB",
            "neighbor LB remote-as external",
            "neighbor LB bfd profile fast",
            "permit 198.19.0.0/24 ge 32",
        ] {
            assert!(c.contains(line), "missing {line:?} in\n{c}");
        }
        assert!(render_zebra("gw1").contains("no zebra nexthop kernel enable"));
        assert!(render_bfdd("gw1").contains("receive-interval 100"));
    }

    #[test]
    fn speaker_config_announces_only_the_vip() {
        let c = render_speaker_bgpd(
            "vm1",
            10001,
            "198.18.64.17".parse().unwrap(),
            60201,
            &[
                "198.18.64.1".parse().unwrap(),
                "198.18.64.2".parse().unwrap(),
            ],
            "198.19.0.10".parse().unwrap(),
        );
        assert!(c.contains("network 198.19.0.10/32"));
        assert!(c.contains("neighbor 198.18.64.2 remote-as 60201"));
        assert_eq!(c.matches("route-map NOTHING in").count(), 2);
    }
}
