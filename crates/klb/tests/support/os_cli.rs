//! The `openstack` CLI of the local OpenStack kit, as the cloud admin (tests that check what
//! klb made in Nova, Neutron and Aodh read it the way an operator would).

use std::process::{Command, Stdio};

use serde_json::Value;

/// Where `tests/openstack/run-services.sh` installs the kit.
pub const KIT: &str = "/var/lib/klb-openstack-local";
/// The kit's Keystone.
pub const AUTH_URL: &str = "http://127.0.0.1:15000/v3";

fn admin(cmd: &mut Command) -> &mut Command {
    cmd.env("OS_AUTH_URL", AUTH_URL)
        .env("OS_USERNAME", "admin")
        .env("OS_PASSWORD", "secretadmin")
        .env("OS_PROJECT_NAME", "admin")
        .env("OS_USER_DOMAIN_NAME", "Default")
        .env("OS_PROJECT_DOMAIN_NAME", "Default")
        .env("OS_REGION_NAME", "RegionOne")
        .env("OS_IDENTITY_API_VERSION", "3")
        .env("PYTHONWARNINGS", "ignore")
}

/// `openstack ... -f json` as the cloud admin; panics with the CLI's message on failure.
pub fn os(args: &[&str]) -> Value {
    let out = admin(&mut Command::new(format!("{KIT}/venv/bin/openstack")))
        .args(args)
        .args(["-f", "json"])
        .output()
        .expect("openstack CLI runs");
    assert!(
        out.status.success(),
        "openstack {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

/// `openstack ... -f json`, `Null` on any failure (cleanup code must not panic in a drop).
pub fn os_try(args: &[&str]) -> Value {
    admin(&mut Command::new(format!("{KIT}/venv/bin/openstack")))
        .args(args)
        .args(["-f", "json"])
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| serde_json::from_slice(&o.stdout).ok())
        .unwrap_or(Value::Null)
}

/// `openstack ...`, ignoring the outcome (cleanup).
pub fn os_quiet(args: &[&str]) {
    let _ = admin(&mut Command::new(format!("{KIT}/venv/bin/openstack")))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

pub fn id_of(v: &Value) -> String {
    v["id"].as_str().expect("an id").to_owned()
}

/// Networks of a test, removed on drop (also when the test fails).
pub struct Nets(pub Vec<String>);

impl Drop for Nets {
    fn drop(&mut self) {
        for n in &self.0 {
            os_quiet(&["network", "delete", n]);
        }
    }
}

/// A network with one subnet (no DHCP); `(network id, subnet id)`. `pool`: the allocation
/// pool's first and last address (and no gateway), so a lab's own addresses stay free.
pub fn network(
    name: &str,
    cidr: &str,
    project: Option<&str>,
    pool: Option<(&str, &str)>,
) -> (String, String) {
    let mut args = vec!["network", "create", name];
    if let Some(p) = project {
        args.extend(["--project", p]);
    }
    let net = id_of(&os(&args));
    let mut args = vec![
        "subnet",
        "create",
        name,
        "--network",
        &net,
        "--subnet-range",
        cidr,
        "--no-dhcp",
    ];
    if let Some(p) = project {
        args.extend(["--project", p]);
    }
    let pool_arg;
    if let Some((first, last)) = pool {
        pool_arg = format!("start={first},end={last}");
        args.extend(["--allocation-pool", &pool_arg, "--gateway", "none"]);
    }
    let subnet = id_of(&os(&args));
    (net, subnet)
}

/// A security group's rules as sorted `direction ethertype protocol ports prefix` lines.
pub fn rules_of(sg: &str) -> Vec<String> {
    let mut rules: Vec<String> = os(&["security", "group", "rule", "list", sg, "--long"])
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|r| {
            format!(
                "{} {} {} {} {}",
                r["Direction"].as_str().unwrap_or(""),
                r["Ethertype"].as_str().unwrap_or(""),
                r["IP Protocol"].as_str().unwrap_or("any"),
                r["Port Range"].as_str().unwrap_or(""),
                r["IP Range"].as_str().unwrap_or(""),
            )
        })
        .collect();
    rules.sort();
    rules
}

/// Removes whatever klb made for `lb_id` in Nova, Neutron and Aodh (a failed test's
/// leftovers; a passing test asserts there are none before this runs).
pub fn purge_lb(lb_id: &str) {
    let tag = format!("klb-lb-{lb_id}");
    let servers = os_try(&["server", "list", "--all-projects", "--tags", &tag]);
    for s in servers.as_array().into_iter().flatten() {
        if let Some(id) = s["ID"].as_str() {
            os_quiet(&["server", "delete", "--wait", id]);
        }
    }
    for (list, delete) in [
        (vec!["port", "list"], vec!["port", "delete"]),
        (
            vec!["security", "group", "list"],
            vec!["security", "group", "delete"],
        ),
        (
            vec!["server", "group", "list", "--all-projects"],
            vec!["server", "group", "delete"],
        ),
    ] {
        for item in os_try(&list).as_array().into_iter().flatten() {
            if item["Name"].as_str().unwrap_or("").contains(lb_id)
                && let Some(id) = item["ID"].as_str()
            {
                let mut args = delete.clone();
                args.push(id);
                os_quiet(&args);
            }
        }
    }
    // Aodh has no CLI in the kit's venv: its API with an admin token.
    let token = os_try(&["token", "issue"])["id"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    let aodh = "http://127.0.0.1:18042/v2/alarms";
    let out = Command::new("curl")
        .args(["-s", "-m", "10", "-H", &format!("X-Auth-Token: {token}")])
        .arg(format!("{aodh}?q.field=all_projects&q.op=eq&q.value=true"))
        .output();
    let alarms: Value = out
        .ok()
        .and_then(|o| serde_json::from_slice(&o.stdout).ok())
        .unwrap_or(Value::Null);
    for a in alarms.as_array().into_iter().flatten() {
        if a["name"].as_str().unwrap_or("").contains(lb_id)
            && let Some(id) = a["alarm_id"].as_str()
        {
            let _ = Command::new("curl")
                .args(["-s", "-m", "10", "-X", "DELETE", "-H"])
                .arg(format!("X-Auth-Token: {token}"))
                .arg(format!("{aodh}/{id}"))
                .output();
        }
    }
}

/// Purges an LB's leftovers when dropped (set the id once the LB exists).
#[derive(Default)]
pub struct LbLeftovers(pub Option<String>);

impl Drop for LbLeftovers {
    fn drop(&mut self) {
        if let Some(id) = &self.0 {
            purge_lb(id);
        }
    }
}
