//! The driver against real Keystone, Nova (fake virt driver, two compute hosts), Neutron,
//! Glance, Aodh and Barbican: `tests/openstack/` starts them on loopback and sets
//! `KLB_TEST_OPENSTACK=1`; without it these tests print why and pass.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use http::Method;
use openstack_sdk::types::ServiceType;
use serde_json::{Value, json};

use klb_certs::{CertUsage, CertificateManager};
use klb_cloud::{
    Alarms, CloudErrorKind, Compute, META_LB_ID, META_VM_INDEX, Network, NicSpec, PortSpec,
    PpsAlarmSpec, RuleSpec, SecurityGroupSpec, ServerFilter, ServerGroupPolicy, ServerGroupSpec,
    ServerSpec, ServerStatus,
};
use klb_openstack::session::Call;
use klb_openstack::{
    AlarmBackend, BarbicanCertificates, Credentials, OpenStackCloud, OpenStackConfig, Session,
    SessionConfig, UserData, VmBoot,
};

const AUTH_URL: &str = "http://127.0.0.1:15000/v3";

fn enabled() -> bool {
    if std::env::var_os("KLB_TEST_OPENSTACK").is_some() {
        return true;
    }
    eprintln!(
        "skipped: KLB_TEST_OPENSTACK is not set (tests/openstack/run-services.sh starts the services)"
    );
    false
}

fn session_config(user: &str, password: &str, project: &str) -> SessionConfig {
    SessionConfig {
        auth_url: AUTH_URL.into(),
        credentials: Credentials::Password {
            username: user.into(),
            password: password.to_owned().into(),
            user_domain_name: "Default".into(),
            project_name: project.into(),
            project_domain_name: "Default".into(),
        },
        region: Some("RegionOne".into()),
        interface: "public".into(),
        ca_bundle: None,
        insecure: false,
        timeout: Duration::from_secs(30),
        network_endpoint: None,
    }
}

/// Records what it was asked to render; the user data is a marker.
#[derive(Default)]
struct RecordingUserData(tokio::sync::Mutex<Vec<VmBoot>>);

#[async_trait]
impl UserData for RecordingUserData {
    async fn render(&self, boot: &VmBoot) -> Result<String, String> {
        self.0.lock().await.push(boot.clone());
        Ok(format!("#cloud-config\n# {}\n", boot.server_name))
    }
}

/// Networks a test made (deleted by `drop_networks`).
struct Nets {
    admin: Session,
    network_ids: Vec<String>,
    mgmt: String,
    l3: String,
    vip: String,
    vip_subnet: String,
}

async fn json(
    session: &Session,
    method: Method,
    path: &str,
    body: Value,
    key: &'static str,
) -> Value {
    let call = Call::new(
        "test",
        path,
        method,
        ServiceType::Network,
        format!("v2.0/{path}"),
    )
    .body(&body)
    .key(key);
    session.json(&call).await.unwrap()
}

async fn make_networks(tag: &str) -> Nets {
    let admin = Session::connect(&session_config("admin", "secretadmin", "admin"))
        .await
        .unwrap();
    let mut network_ids = Vec::new();
    let mut ids = Vec::new();
    for (name, cidr, gw) in [
        ("mgmt", "198.18.128.0/24", "198.18.128.1"),
        ("l3", "198.18.64.0/24", "198.18.64.1"),
        ("vip", "198.19.0.0/24", "198.19.0.1"),
    ] {
        let net = json(
            &admin,
            Method::POST,
            "networks",
            json!({"network": {"name": format!("klbtest-{tag}-{name}")}}),
            "network",
        )
        .await;
        let net_id = net["id"].as_str().unwrap().to_owned();
        let subnet = json(
            &admin,
            Method::POST,
            "subnets",
            json!({"subnet": {"network_id": net_id, "ip_version": 4, "cidr": cidr,
                "gateway_ip": gw, "name": format!("klbtest-{tag}-{name}"), "enable_dhcp": false}}),
            "subnet",
        )
        .await;
        network_ids.push(net_id.clone());
        ids.push((net_id, subnet["id"].as_str().unwrap().to_owned()));
    }
    Nets {
        admin,
        network_ids,
        mgmt: ids[0].0.clone(),
        l3: ids[1].0.clone(),
        vip: ids[2].0.clone(),
        vip_subnet: ids[2].1.clone(),
    }
}

async fn drop_networks(nets: &Nets) {
    for id in &nets.network_ids {
        let call = Call::new(
            "test",
            id,
            Method::DELETE,
            ServiceType::Network,
            format!("v2.0/networks/{id}"),
        );
        if let Err(e) = nets.admin.send_ok(&call).await {
            eprintln!("could not delete test network {id}: {e}");
        }
    }
}

fn config(nets: &Nets) -> OpenStackConfig {
    OpenStackConfig {
        session: session_config("klb", "klbpass", "service"),
        image_id: None,
        image_tag: Some("klb-lb-image".into()),
        flavor_id: "42".into(),
        mgmt_network: nets.mgmt.clone(),
        l3_network: nets.l3.clone(),
        soft_anti_affinity: false,
        alarms: AlarmBackend::prometheus(),
    }
}

fn vm_spec(lb: &str, index: u32, group: &str, sg: &str, nets: &Nets) -> ServerSpec {
    let mut metadata = BTreeMap::new();
    metadata.insert(META_LB_ID.to_owned(), lb.to_owned());
    metadata.insert(META_VM_INDEX.to_owned(), index.to_string());
    ServerSpec {
        name: klb_cloud::names::server(lb, index),
        image_id: String::new(),
        flavor_id: "42".into(),
        server_group_id: Some(group.to_owned()),
        nics: vec![
            NicSpec::Network {
                network_id: nets.mgmt.clone(),
                fixed_ip: None,
            },
            NicSpec::Network {
                network_id: nets.l3.clone(),
                fixed_ip: None,
            },
        ],
        security_group_ids: vec![sg.to_owned()],
        user_data: None,
        boot_volume_gib: None,
        availability_zone: None,
        metadata,
    }
}

async fn wait_status(cloud: &OpenStackCloud, id: &str) -> klb_cloud::Server {
    let start = Instant::now();
    loop {
        let s = cloud.get_server(id).await.unwrap().expect("server exists");
        if s.status != ServerStatus::Build || start.elapsed() > Duration::from_secs(120) {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Compute host of a server (admin-only attribute).
async fn host_of(admin: &Session, id: &str) -> String {
    let call = Call::new(
        "test",
        id,
        Method::GET,
        ServiceType::Compute,
        format!("servers/{id}"),
    )
    .version(2, 67)
    .key("server");
    let s: Value = admin.json(&call).await.unwrap();
    s["OS-EXT-SRV-ATTR:host"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn lb_resources_on_real_nova_and_neutron() {
    if !enabled() {
        return;
    }
    let tag = format!("{}", std::process::id());
    let nets = make_networks(&tag).await;
    let hook = Arc::new(RecordingUserData::default());
    let cloud = OpenStackCloud::connect(config(&nets), hook.clone())
        .await
        .unwrap();
    let lb = format!("t{tag}");
    let result = async {
        // Security group with klb's rules, exactly.
        let sg = cloud
            .create_security_group(&SecurityGroupSpec {
                name: klb_cloud::names::security_group(&lb),
                description: "test".into(),
            })
            .await
            .unwrap();
        for rule in cloud.list_security_group_rules(&sg.id).await.unwrap() {
            cloud.delete_security_group_rule(&rule.id).await.unwrap();
        }
        let rules = [
            RuleSpec::tcp_in(80, None),
            RuleSpec::tcp_in(62000, Some("198.18.128.0/24".parse().unwrap())),
        ];
        for r in &rules {
            cloud.add_security_group_rule(&sg.id, r).await.unwrap();
        }
        let mut have: Vec<RuleSpec> = cloud
            .list_security_group_rules(&sg.id)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.spec)
            .collect();
        have.sort();
        // "Anywhere" is an IPv4 and an IPv6 rule.
        assert_eq!(
            have,
            vec![rules[0].clone(), rules[0].clone(), rules[1].clone()]
        );

        // The VIP port, then two anti-affinity VMs on different hosts, a third refused.
        let vip = cloud
            .create_port(&PortSpec {
                name: klb_cloud::names::vip_port(&lb),
                network_id: nets.vip.clone(),
                subnet_id: Some(nets.vip_subnet.clone()),
                fixed_ip: Some("198.19.0.10".parse().unwrap()),
                security_group_ids: vec![sg.id.clone()],
                device_owner: Some("klb:vip".into()),
            })
            .await
            .unwrap();
        assert_eq!(
            vip.fixed_ips,
            vec!["198.19.0.10".parse::<IpAddr>().unwrap()]
        );
        let taken = cloud
            .create_port(&PortSpec {
                name: "klbtest-taken".into(),
                network_id: nets.vip.clone(),
                subnet_id: Some(nets.vip_subnet.clone()),
                fixed_ip: Some("198.19.0.10".parse().unwrap()),
                security_group_ids: vec![],
                device_owner: None,
            })
            .await
            .unwrap_err();
        assert_eq!(taken.kind, CloudErrorKind::Conflict, "{taken}");
        assert!(!taken.retryable, "an address in use is permanent: {taken}");

        let group = cloud
            .create_server_group(&ServerGroupSpec {
                name: klb_cloud::names::server_group(&lb),
                policy: ServerGroupPolicy::AntiAffinity,
            })
            .await
            .unwrap();
        assert_eq!(
            cloud
                .find_server_group(&group.name)
                .await
                .unwrap()
                .map(|g| g.policy),
            Some(ServerGroupPolicy::AntiAffinity)
        );
        let mut servers = Vec::new();
        for index in 0..3 {
            let s = cloud
                .create_server(&vm_spec(&lb, index, &group.id, &sg.id, &nets))
                .await
                .unwrap();
            servers.push(wait_status(&cloud, &s.id).await);
        }
        assert_eq!(servers[0].status, ServerStatus::Active, "{:?}", servers[0]);
        assert_eq!(servers[1].status, ServerStatus::Active, "{:?}", servers[1]);
        assert_eq!(servers[2].status, ServerStatus::Error);
        assert!(
            servers[2]
                .fault
                .as_deref()
                .unwrap_or_default()
                .contains("No valid host"),
            "{:?}",
            servers[2].fault
        );
        let h0 = host_of(&nets.admin, &servers[0].id).await;
        let h1 = host_of(&nets.admin, &servers[1].id).await;
        assert_ne!(h0, h1, "anti-affinity puts the two VMs on different hosts");
        // Each VM: a port on the management and the L3 network, both with the LB's group; the
        // user data was rendered for the management address.
        for s in &servers[..2] {
            let mgmt = s.address_on(&nets.mgmt).expect("mgmt address");
            let l3 = s.address_on(&nets.l3).expect("l3 address");
            for a in [mgmt, l3] {
                let port = cloud.get_port(&a.port_id).await.unwrap().unwrap();
                assert_eq!(port.security_group_ids, vec![sg.id.clone()]);
                assert_eq!(port.device_id.as_deref(), Some(s.id.as_str()));
            }
            let boots = hook.0.lock().await.clone();
            let boot = boots.iter().find(|b| b.server_name == s.name).unwrap();
            assert_eq!(boot.mgmt_addr, mgmt.ip);
            assert_eq!(boot.l3_addr, l3.ip);
            // The VIP as an allowed-address pair on the L3 port.
            let port = cloud
                .set_allowed_address_pairs(&l3.port_id, &["198.19.0.10".parse().unwrap()])
                .await
                .unwrap();
            assert_eq!(
                port.allowed_address_pairs,
                vec!["198.19.0.10".parse::<IpAddr>().unwrap()]
            );
        }
        let by_lb = cloud.find_servers(&ServerFilter::lb(&lb)).await.unwrap();
        assert_eq!(by_lb.len(), 3);
        let by_name = cloud
            .find_servers(&ServerFilter::name(klb_cloud::names::server(&lb, 1)))
            .await
            .unwrap();
        assert_eq!(by_name.len(), 1);
        assert_eq!(by_name[0].id, servers[1].id);

        // The PPS alarm.
        let alarm = cloud
            .create_pps_alarm(&PpsAlarmSpec {
                name: klb_cloud::names::alarm(&lb),
                lb_id: lb.clone(),
                server_ids: vec![servers[0].id.clone(), servers[1].id.clone()],
                threshold_pps: 20000,
                period_secs: 60,
                evaluation_periods: 3,
                webhook_url: "http://198.18.128.1:6543/v1/alarms?token=x".into(),
            })
            .await
            .unwrap();
        let found = cloud.find_alarm(&alarm.name).await.unwrap().unwrap();
        assert_eq!(found.id, alarm.id);
        assert_eq!(found.server_ids.len(), 2);
        cloud.delete_alarm(&alarm.id).await.unwrap();
        assert!(cloud.find_alarm(&alarm.name).await.unwrap().is_none());

        // Delete: servers with their ports, the group, the VIP, the security group.
        for s in &servers {
            cloud.delete_server(&s.id).await.unwrap();
        }
        let start = Instant::now();
        while !cloud
            .find_servers(&ServerFilter::lb(&lb))
            .await
            .unwrap()
            .is_empty()
        {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "servers not gone"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        cloud.delete_server_group(&group.id).await.unwrap();
        cloud.delete_port(&vip.id).await.unwrap();
        cloud.delete_security_group(&sg.id).await.unwrap();
        for index in 0..3 {
            for n in 0..2 {
                let name = format!("{}-nic{n}", klb_cloud::names::server(&lb, index));
                assert!(
                    cloud.find_ports(&name).await.unwrap().is_empty(),
                    "{name} left"
                );
            }
        }
        assert!(
            cloud
                .find_server_group(&group.name)
                .await
                .unwrap()
                .is_none()
        );
        assert!(cloud.find_security_group(&sg.name).await.unwrap().is_none());
        // Idempotent deletes.
        cloud.delete_server(&servers[0].id).await.unwrap();
        cloud.delete_security_group(&sg.id).await.unwrap();
    }
    .await;
    drop_networks(&nets).await;
    result
}

#[tokio::test]
async fn refused_boots_leave_no_ports_and_bad_options_are_named() {
    if !enabled() {
        return;
    }
    let tag = format!("{}b", std::process::id());
    let nets = make_networks(&tag).await;
    let hook = Arc::new(RecordingUserData::default());
    let result = async {
        let mut bad = config(&nets);
        bad.flavor_id = "no-such-flavor".into();
        let err = OpenStackCloud::connect(bad, hook.clone())
            .await
            .unwrap_err();
        assert!(err.message.contains("base_flavor_id"), "{err}");
        let mut bad = config(&nets);
        bad.image_tag = Some("no-such-tag".into());
        let err = OpenStackCloud::connect(bad, hook.clone())
            .await
            .unwrap_err();
        assert!(err.message.contains("image_tag"), "{err}");
        let mut bad = config(&nets);
        bad.mgmt_network = "no-such-net".into();
        let err = OpenStackCloud::connect(bad, hook.clone())
            .await
            .unwrap_err();
        assert!(err.message.contains("lb_mgmt_net"), "{err}");
        let mut bad = config(&nets);
        bad.session = session_config("klb", "wrong", "service");
        let err = OpenStackCloud::connect(bad, hook.clone())
            .await
            .unwrap_err();
        assert_eq!(err.kind, CloudErrorKind::Auth, "{err}");

        let cloud = OpenStackCloud::connect(config(&nets), hook.clone())
            .await
            .unwrap();
        let lb = format!("t{tag}");
        let mut spec = vm_spec(&lb, 0, "unused", "x", &nets);
        spec.server_group_id = None;
        spec.security_group_ids = vec![];
        spec.image_id = "00000000-0000-4000-8000-000000000000".into();
        let err = cloud.create_server(&spec).await.unwrap_err();
        assert!(!err.retryable, "a missing image is permanent: {err}");
        for n in 0..2 {
            let name = format!("{}-nic{n}", spec.name);
            assert!(
                cloud.find_ports(&name).await.unwrap().is_empty(),
                "{name} left"
            );
        }
    }
    .await;
    drop_networks(&nets).await;
    result
}

#[tokio::test]
async fn barbican_certificates_are_read_with_the_tenants_acl() {
    if !enabled() {
        return;
    }
    // The tenant stores a certificate container and lets klb's user read it.
    let tenant = Session::connect(&session_config("klbmember", "userpass", "klbtenant"))
        .await
        .unwrap();
    let key_manager = ServiceType::Other("key-manager".into());
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["lb.example".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let mut refs = BTreeMap::new();
    for (name, payload) in [
        ("certificate", cert.pem()),
        ("private_key", key.serialize_pem()),
    ] {
        let call = Call::new(
            "test",
            name,
            Method::POST,
            key_manager.clone(),
            "v1/secrets",
        )
        .body(&json!({"name": name, "payload": payload, "payload_content_type": "text/plain"}));
        let reply: Value = tenant.json(&call).await.unwrap();
        refs.insert(name, reply["secret_ref"].as_str().unwrap().to_owned());
    }
    let call = Call::new(
        "test",
        "c",
        Method::POST,
        key_manager.clone(),
        "v1/containers",
    )
    .body(
        &json!({"type": "certificate", "name": "lb", "secret_refs": refs.iter()
            .map(|(n, r)| json!({"name": n, "secret_ref": r})).collect::<Vec<_>>()}),
    );
    let reply: Value = tenant.json(&call).await.unwrap();
    let container = reply["container_ref"].as_str().unwrap().to_owned();

    let klb = Session::connect(&session_config("klb", "klbpass", "service"))
        .await
        .unwrap();
    let barbican = BarbicanCertificates::new(klb);
    // Without an ACL for klb's user the tenant's secrets are not readable by klb... unless
    // klb is admin there; the ACL is what a tenant does, as with Octavia.
    for r in refs.values().chain([&container]) {
        let klb_user = user_id(&tenant, "klb").await;
        let id = r.rsplit('/').next().unwrap();
        let kind = if r.contains("/containers/") {
            "containers"
        } else {
            "secrets"
        };
        let call = Call::new(
            "test",
            id,
            Method::PUT,
            key_manager.clone(),
            format!("v1/{kind}/{id}/acl"),
        )
        .body(&json!({"read": {"users": [klb_user], "project-access": true}}));
        tenant.send(&call).await.unwrap();
    }
    let pem = barbican
        .fetch("ignored", &container, CertUsage::Server)
        .await
        .unwrap();
    assert!(pem.expose().contains("BEGIN CERTIFICATE"));
    assert!(pem.expose().contains("PRIVATE KEY"));
    // A certificate alone is not a server bundle; a missing ref is "not found".
    let err = barbican
        .fetch("ignored", &refs["certificate"], CertUsage::Server)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("cannot be used"), "{err}");
    let missing = "http://127.0.0.1:19311/v1/containers/00000000-0000-4000-8000-000000000000";
    let err = barbican
        .fetch("ignored", missing, CertUsage::Server)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not found"), "{err}");
    // The tenant cleans up.
    for r in refs.values().chain([&container]) {
        let id = r.rsplit('/').next().unwrap();
        let kind = if r.contains("/containers/") {
            "containers"
        } else {
            "secrets"
        };
        let call = Call::new(
            "test",
            id,
            Method::DELETE,
            key_manager.clone(),
            format!("v1/{kind}/{id}"),
        );
        let _ = tenant.send_ok(&call).await;
    }
}

async fn user_id(session: &Session, name: &str) -> String {
    // Any authenticated user may not list users; the admin can.
    let _ = session;
    let admin = Session::connect(&session_config("admin", "secretadmin", "admin"))
        .await
        .unwrap();
    let call = Call::new("test", name, Method::GET, ServiceType::Identity, "users")
        .query("name", name)
        .key("users");
    let users: Vec<Value> = admin.json(&call).await.unwrap();
    users[0]["id"].as_str().unwrap().to_owned()
}
