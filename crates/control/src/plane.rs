//! The control plane as one value: store, API, provider (noop or flows on a cloud), health
//! manager and heartbeat receiver, all spawned from here and stopped together. `klb serve`
//! runs it until a signal; `klb demo` and the end-to-end tests run it in-process.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use klb_agent_client::agents::HttpAgents;
use klb_agent_client::client::{AgentClient, AgentClientConfig};
use klb_agent_client::heartbeat::HeartbeatKeys;
use klb_api::provider::{Vip, VipError, VipNetwork, VipRequest};
use klb_api::{AppState, Authenticator};
use klb_certs::LocalSecrets;
use klb_flow::jobs::{JobPump, SettleJobs};
use klb_flow::lb::{self, LbConfig, LbEnv};
use klb_flow::{Db, Engine, EngineConfig};
use klb_health::{HealthConfig, HealthManager, Reports};
use klb_local::{AgentLaunch, LabConfig, LocalCloud, LocalCloudConfig, plan};
use klb_proto::auth::BasicAuth;
use klb_store::Store;
use klb_tls::{Ca, CertKind};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::bootstrap::{AgentBootstrap, CloudInit};
use crate::desired::DataPlane;
use crate::store_backend::StoreBackend;
use crate::{secrets_api, standalone, webhook};

/// Why the control plane could not start.
#[derive(Debug, thiserror::Error)]
pub enum PlaneError {
    /// The store failed to open.
    #[error("store: {0}")]
    Store(#[from] klb_store::StoreError),
    /// The flow engine failed to start.
    #[error("flow engine: {0}")]
    Flow(#[from] klb_flow::FlowError),
    /// The local cloud failed to start.
    #[error("local cloud: {0}")]
    Local(#[from] klb_local::LocalError),
    /// Loading or making TLS material failed.
    #[error("TLS: {0}")]
    Tls(#[from] klb_tls::TlsError),
    /// The agent client could not be built.
    #[error("agent client: {0}")]
    AgentClient(#[from] klb_agent_client::client::ClientError),
    /// The fake cloud's shared state file is unusable.
    #[error("{0}")]
    FakeCloud(#[from] klb_cloud::fake::SharedStateError),
    /// The OpenStack driver could not start.
    #[error("OpenStack: {0}")]
    OpenStack(#[from] klb_cloud::CloudError),
    /// A listener could not bind.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A state file could not be read or written.
    #[error("{what} in {path}: {source}")]
    File {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Which provider settles the API's jobs.
#[derive(Debug, Clone)]
pub enum CloudChoice {
    /// Octavia's noop drivers: every job succeeds at once; nothing runs.
    Noop,
    /// The local cloud of network namespaces with real agents, HAProxy and FRR.
    Local(Box<LocalSettings>),
    /// The in-memory fake cloud (fault-injection double), with real flows on the store: for
    /// benchmarks and multi-node tests without root.
    Fake(FakeSettings),
    /// A real OpenStack cloud (Keystone, Nova, Neutron, Glance, Aodh, Barbican).
    OpenStack(Box<OpenStackSettings>),
}

/// Settings of the fake cloud provider.
#[derive(Debug, Clone)]
pub struct FakeSettings {
    /// Latency of every cloud call.
    pub latency: Duration,
    /// Flow lease: how long a dead node's runs wait before another node takes them over.
    pub flow_lease: Duration,
    /// LB VMs per load balancer.
    pub vm_count: u32,
    /// Keep the fake cloud in this file instead of in memory, so several nodes sharing one
    /// database also share one cloud (the multi-node test); `None`: in memory.
    pub state_file: Option<PathBuf>,
}

/// Settings of the local cloud provider (the seed's options where they apply).
#[derive(Debug, Clone)]
pub struct LocalSettings {
    /// The lab (prefix, runtime dir, addresses, gateway AS).
    pub lab: LabConfig,
    /// Remove the whole lab when the plane stops (`klb demo`, tests) or leave it for the next
    /// start to adopt (`klb serve`).
    pub teardown_on_stop: bool,
    /// `lb_vm_count`.
    pub vm_count: u32,
    /// `max_lb_vms`.
    pub max_vms: u32,
    /// PPS alarms of an LB are ignored this long after it scaled out (`scale_out_cooldown_secs`).
    pub scale_out_cooldown: Duration,
    /// `agent_port`.
    pub agent_port: u16,
    /// `agent_user`/`agent_password`: HTTP basic auth every agent requires and the control
    /// plane sends, on top of mTLS (`None`: mTLS only). `Debug` redacts the password.
    pub agent_auth: Option<BasicAuth>,
    /// `lb_api_agent_port`: the heartbeat receiver's port on the management network.
    pub heartbeat_port: u16,
    /// Agent heartbeat period.
    pub heartbeat_interval: Duration,
    /// A VM silent this long is failed over.
    pub silent_after: Duration,
    /// `base_as_number`.
    pub base_as_number: u32,
    /// `default_maxconn`.
    pub default_maxconn: u32,
    /// `ceilometer_pps_threshold`.
    pub pps_threshold: u64,
    /// `ceilometer_period` (seconds).
    pub alarm_period_secs: u32,
    /// `ceilometer_evaluation_periods`.
    pub alarm_evaluation_periods: u32,
    /// Evaluate alarms this often instead of every `alarm_period_secs` (demo, tests).
    pub alarm_period_override: Option<Duration>,
    /// `kinx_office_ip`.
    pub office_cidr: Option<ipnet::IpNet>,
    /// The klb executable the LB VMs run as `klb agent` (default: this executable).
    pub klb_exe: Option<PathBuf>,
    /// Flow and job lease: how long a dead control plane's work waits before another (or a
    /// restarted) one takes it over.
    pub flow_lease: Duration,
}

impl Default for LocalSettings {
    fn default() -> Self {
        LocalSettings {
            lab: LabConfig::default(),
            teardown_on_stop: false,
            vm_count: 2,
            max_vms: 4,
            scale_out_cooldown: webhook::SCALE_OUT_COOLDOWN,
            agent_port: 62000,
            agent_auth: None,
            heartbeat_port: 6543,
            heartbeat_interval: Duration::from_secs(1),
            silent_after: Duration::from_secs(3),
            base_as_number: 10000,
            default_maxconn: klb_proto::DEFAULT_MAXCONN,
            pps_threshold: 20000,
            alarm_period_secs: 60,
            alarm_evaluation_periods: 3,
            alarm_period_override: None,
            office_cidr: None,
            klb_exe: None,
            flow_lease: Duration::from_secs(30),
        }
    }
}

/// Everything the plane needs.
pub struct PlaneConfig {
    /// API listen address (port 0 picks a free one).
    pub api_bind: SocketAddr,
    /// Store URL.
    pub database_url: String,
    /// Directory for klb's CA, keys and the flow database.
    pub state_dir: PathBuf,
    /// API authentication.
    pub auth: Arc<dyn Authenticator>,
    /// API authorization (`None`: project scoping only, as with noauth).
    pub policy: Option<Arc<dyn klb_api::Policy>>,
    /// The provider.
    pub cloud: CloudChoice,
    /// Answer the Neutron subnet/network and Keystone project reads that CLIs make when klb is
    /// their only endpoint (noauth).
    pub standalone_lookups: bool,
    /// API settings (providers; the plane turns UDP/SCTP off with a real provider).
    pub api: klb_api::ApiConfig,
}

/// A running control plane.
pub struct ControlPlane {
    api_addr: SocketAddr,
    store: Store,
    local: Option<(LocalCloud, bool)>,
    reports: Option<Reports>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl ControlPlane {
    /// Opens the store, builds the provider and starts every loop.
    pub async fn start(config: PlaneConfig) -> Result<ControlPlane, PlaneError> {
        std::fs::create_dir_all(&config.state_dir).map_err(|source| PlaneError::File {
            what: "creating the state dir",
            path: config.state_dir.clone(),
            source,
        })?;
        let store = Store::open(&config.database_url).await?;
        let (stop, stop_rx) = watch::channel(false);
        let mut tasks = Vec::new();
        let mut state = AppState::new(store.clone(), config.auth.clone());
        state.config = Arc::new(config.api.clone());
        // Quotas from the `/v2/quotas` documents (the API enforces them in every create).
        state.quotas = Arc::new(klb_api::admin::StoredQuotas::default());
        if let Some(policy) = &config.policy {
            state.policy = policy.clone();
        }
        let mut extra = axum::Router::new();
        let mut local = None;
        let mut reports = None;

        match &config.cloud {
            CloudChoice::Noop => {
                let worker = klb_api::provider::NoopProvider::new(store.clone());
                tasks.push(tokio::spawn(worker.run(wait_stop(stop_rx.clone()))));
            }
            CloudChoice::Fake(settings) => {
                let vip = start_fake(&config, settings, &store, &stop_rx, &mut tasks).await?;
                state.network = Arc::new(vip);
            }
            CloudChoice::OpenStack(settings) => {
                let cloud =
                    start_openstack(&config, settings, &store, &stop_rx, &mut tasks).await?;
                state.certs = Arc::new(klb_openstack::BarbicanCertificates::new(
                    cloud.session().clone(),
                ));
                state.network = Arc::new(OpenStackVipNetwork { cloud });
            }
            CloudChoice::Local(settings) => {
                let started = start_local(&config, settings, &store, &stop_rx, &mut tasks).await?;
                state.network = Arc::new(LocalVipNetwork {
                    plan: settings.lab.plan.clone(),
                });
                reports = Some(started.reports);
                local = Some((started.cloud, settings.teardown_on_stop));
            }
        }

        // Tenants store certificates in klb's own secret store through its Barbican-shaped API
        // on the same port. With a real provider certificate refs must resolve there; the
        // API-only noop provider accepts any ref, as Octavia's noop certificate manager does.
        let secrets = LocalSecrets::new(store.clone());
        if matches!(config.cloud, CloudChoice::Local(_) | CloudChoice::Fake(_)) {
            state.certs = Arc::new(secrets.clone());
        }
        if !matches!(config.cloud, CloudChoice::Noop) {
            // The real data plane is HAProxy: UDP/SCTP get Octavia's 501 at the API instead of
            // an LB in ERROR after the push.
            let mut api_config = (*state.config).clone();
            api_config.udp_sctp = false;
            state.config = Arc::new(api_config);
        }
        extra = extra.merge(secrets_api::router(state.clone(), secrets));
        if config.standalone_lookups {
            let networks = match &config.cloud {
                CloudChoice::Noop | CloudChoice::Fake(_) | CloudChoice::OpenStack(_) => {
                    standalone::Networks::Any
                }
                CloudChoice::Local(s) => standalone::Networks::Local(Box::new(s.lab.plan.clone())),
            };
            extra = extra.merge(standalone::router(networks));
        }
        let listener = tokio::net::TcpListener::bind(config.api_bind)
            .await
            .map_err(|source| PlaneError::Listen {
                addr: config.api_bind,
                source,
            })?;
        let api_addr = listener.local_addr().map_err(|source| PlaneError::Listen {
            addr: config.api_bind,
            source,
        })?;
        // The API's routes read the whole body first (`read_body_first`); the extra ones too.
        let limit = state.config.max_body_bytes;
        let extra = extra.layer(axum::middleware::from_fn(move |req, next| {
            klb_api::body::read_body_first(req, next, limit)
        }));
        let app = extra.merge(klb_api::router(state));
        let shutdown = wait_stop(stop_rx.clone());
        // Header/idle timeouts and a connection limit: slow or stalled clients cannot hold
        // every descriptor (issue 11 §3).
        let limits = klb_http::Limits::API;
        tasks.push(tokio::spawn(async move {
            if let Err(err) = klb_http::serve(listener, app, limits, shutdown).await {
                tracing::error!(error = %err, "API server failed");
            }
        }));
        tracing::info!(%api_addr, backend = ?store.backend(), "control plane started");
        Ok(ControlPlane {
            api_addr,
            store,
            local,
            reports,
            stop,
            tasks,
        })
    }

    /// Where the API listens.
    pub fn api_addr(&self) -> SocketAddr {
        self.api_addr
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The local cloud, when that is the provider.
    pub fn local_cloud(&self) -> Option<&LocalCloud> {
        self.local.as_ref().map(|(cloud, _)| cloud)
    }

    /// The latest heartbeats (local cloud only).
    pub fn reports(&self) -> Option<&Reports> {
        self.reports.as_ref()
    }

    /// Stops every loop; with `teardown_on_stop`, removes the local cloud too.
    pub async fn stop(self) -> Result<(), PlaneError> {
        let _ = self.stop.send(true);
        for task in self.tasks {
            if tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .is_err()
            {
                tracing::warn!("a control-plane task did not stop within 10 s");
            }
        }
        if let Some((cloud, teardown)) = self.local {
            if teardown {
                cloud.shutdown().await?;
            } else {
                cloud.detach().await;
            }
        }
        self.store.close().await;
        Ok(())
    }
}

async fn wait_stop(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stopped| *stopped).await;
}

struct LocalStarted {
    cloud: LocalCloud,
    reports: Reports,
}

/// What every real provider (local, OpenStack) shares: klb's CA and the control plane's
/// client identity, the heartbeat master secret (each VM's key is derived from it) and the
/// webhook token (kept in the state dir so a restart keeps talking to running VMs).
struct Identity {
    ca: Arc<Ca>,
    heartbeat_keys: HeartbeatKeys,
    webhook_token: String,
    client: AgentClient,
}

fn identity(dir: &std::path::Path, agent_auth: Option<BasicAuth>) -> Result<Identity, PlaneError> {
    std::fs::create_dir_all(dir).map_err(|source| PlaneError::File {
        what: "creating the state dir",
        path: dir.to_owned(),
        source,
    })?;
    let ca = Arc::new(load_or_create_ca(dir)?);
    let heartbeat_keys = HeartbeatKeys::new(load_or_create_secret(dir, "heartbeat.key")?);
    let webhook_token = load_or_create_secret(dir, "alarm-webhook.token")?;
    let plane_cert = ca.issue("klb-control-plane", CertKind::Client, &[])?;
    let client = AgentClient::new(AgentClientConfig {
        ca_pem: ca.cert_pem().to_owned(),
        cert_pem: plane_cert.cert_pem,
        key_pem: plane_cert.key_pem,
        auth: agent_auth,
        timeout: Duration::from_secs(30),
        connect_timeout: Duration::from_secs(2),
    })?;
    Ok(Identity {
        ca,
        heartbeat_keys,
        webhook_token,
        client,
    })
}

/// Heartbeat receiver and alarm webhook on `addr` (the management network), and the health
/// manager that fails over silent VMs.
async fn start_health(
    addr: SocketAddr,
    id: &Identity,
    store: &Store,
    silent_after: Duration,
    scale_out_cooldown: Duration,
    stop_rx: &watch::Receiver<bool>,
    tasks: &mut Vec<JoinHandle<()>>,
) -> Result<Reports, PlaneError> {
    let health = Arc::new(HealthConfig {
        heartbeat_keys: id.heartbeat_keys.clone(),
        max_age: Duration::from_secs(10),
        silent_after,
        boot_grace: Duration::from_secs(20),
        tick: Duration::from_millis(500),
        failover: true,
    });
    let reports = Reports::default();
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| PlaneError::Listen { addr, source })?;
    // The alarm webhook listens there too: the evaluator (Aodh or the local one) reaches the
    // control plane on the management network.
    let app = klb_health::router(reports.clone(), health.clone()).merge(webhook::router(
        store.clone(),
        id.webhook_token.clone(),
        scale_out_cooldown,
    ));
    let shutdown = wait_stop(stop_rx.clone());
    let limits = klb_http::Limits::INTERNAL;
    tasks.push(tokio::spawn(async move {
        if let Err(err) = klb_http::serve(listener, app, limits, shutdown).await {
            tracing::error!(error = %err, "heartbeat receiver failed");
        }
    }));
    let manager = HealthManager::new(store.clone(), reports.clone(), health);
    tasks.push(tokio::spawn(manager.run(stop_rx.clone())));
    Ok(reports)
}

/// The alarm webhook's URL (with its token: never logged).
fn webhook_url(addr: SocketAddr, token: &str) -> String {
    format!("http://{addr}{}?token={token}", webhook::PATH)
}

/// How the flow engine and the job pump run (the provider settings they come from differ).
struct FlowSettings {
    /// Step timings of the LB flows.
    timing: lb::FlowTiming,
    /// How long a dead node's runs wait before another node takes them over.
    lease: Duration,
    /// LB VMs per load balancer.
    vm_count: u32,
    /// At most this many LB VMs per load balancer.
    max_vms: u32,
}

/// The flow engine and the job pump over `env`.
async fn start_flows(
    config: &PlaneConfig,
    store: &Store,
    env: LbEnv,
    flows: FlowSettings,
    stop_rx: &watch::Receiver<bool>,
    tasks: &mut Vec<JoinHandle<()>>,
) -> Result<(), PlaneError> {
    let FlowSettings {
        timing,
        lease: flow_lease,
        vm_count,
        max_vms,
    } = flows;
    let db = Db::connect(&flow_db_url(&config.database_url, &config.state_dir)).await?;
    db.migrate().await?;
    let engine_config = EngineConfig {
        lease_ttl: flow_lease,
        ..EngineConfig::default()
    };
    let engine = Engine::new(db, Arc::new(env), lb::flows_with(timing), engine_config)
        .with_finish_hook(Arc::new(SettleJobs {
            store: store.clone(),
        }));
    let worker = engine.worker(4);
    let shutdown = wait_stop(stop_rx.clone());
    tasks.push(tokio::spawn(async move {
        if let Err(err) = worker.run(shutdown).await {
            tracing::error!(error = %err, "flow worker failed");
        }
    }));
    let pump = JobPump::new(store.clone(), engine, vm_count)
        .with_max_vms(max_vms)
        .with_lease(flow_lease.max(Duration::from_secs(1)));
    let shutdown = wait_stop(stop_rx.clone());
    tasks.push(tokio::spawn(async move {
        if let Err(err) = pump.run(shutdown).await {
            tracing::error!(error = %err, "job pump failed");
        }
    }));
    Ok(())
}

async fn start_local(
    config: &PlaneConfig,
    settings: &LocalSettings,
    store: &Store,
    stop_rx: &watch::Receiver<bool>,
    tasks: &mut Vec<JoinHandle<()>>,
) -> Result<LocalStarted, PlaneError> {
    let id = identity(&config.state_dir, settings.agent_auth.clone())?;
    let plan = settings.lab.plan.clone();
    let bootstrap = AgentBootstrap::new(
        id.ca.clone(),
        settings.agent_port,
        settings.heartbeat_port,
        settings.heartbeat_interval.as_millis() as u64,
    )
    .with_auth(settings.agent_auth.clone());
    let (cloud, adopted) = LocalCloud::open(LocalCloudConfig {
        lab: settings.lab.clone(),
        state_file: None,
        agent: Some(match &settings.klb_exe {
            Some(program) => AgentLaunch {
                program: program.clone(),
                args: vec!["agent".into(), "--config".into(), "{dir}/agent.toml".into()],
                env: Vec::new(),
            },
            None => AgentLaunch::klb_agent()?,
        }),
        bootstrap: Some(Arc::new(bootstrap)),
        alarm_period_override: settings.alarm_period_override,
        teardown_on_drop: settings.teardown_on_stop,
    })
    .await?;
    tracing::info!(?adopted, "local cloud ready");

    // Heartbeats arrive on the host's management address.
    let hb_addr = SocketAddr::new(IpAddr::V4(plan.host_mgmt_addr()), settings.heartbeat_port);
    let reports = start_health(
        hb_addr,
        &id,
        store,
        settings.silent_after,
        settings.scale_out_cooldown,
        stop_rx,
        tasks,
    )
    .await?;

    let mut lb_config = LbConfig::example(
        &plan::MGMT_NETWORK_ID.to_string(),
        &plan::L3_NETWORK_ID.to_string(),
    );
    lb_config.agent_port = settings.agent_port;
    lb_config.office_cidr = settings.office_cidr;
    lb_config.pps_threshold = settings.pps_threshold;
    lb_config.alarm_period_secs = settings.alarm_period_secs;
    lb_config.alarm_evaluation_periods = settings.alarm_evaluation_periods;
    lb_config.default_vm_count = settings.vm_count;
    lb_config.heartbeat_endpoint = hb_addr.to_string();
    lb_config.alarm_webhook_url = webhook_url(hb_addr, &id.webhook_token);
    let data_plane = DataPlane {
        base_as_number: settings.base_as_number,
        l3_router_as_number: settings.lab.l3_router_as,
        gateways: vec![
            IpAddr::V4(plan.gw_l3_addr(1)),
            IpAddr::V4(plan.gw_l3_addr(2)),
        ],
        bfd: true,
        default_maxconn: cap_maxconn(settings.default_maxconn),
        peer_port: lb_config.peer_port,
        heartbeat_keys: Some(id.heartbeat_keys.clone()),
    };
    let env = LbEnv {
        cloud: cloud.cloud(Arc::new(HttpAgents::new(id.client.clone()))),
        config: lb_config,
        backend: Arc::new(StoreBackend::new(
            store.clone(),
            data_plane,
            Arc::new(LocalSecrets::new(store.clone())),
        )),
        graphs: Default::default(),
    };
    start_flows(
        config,
        store,
        env,
        FlowSettings {
            timing: lb::FlowTiming::fast(),
            lease: settings.flow_lease,
            vm_count: settings.vm_count,
            max_vms: settings.max_vms,
        },
        stop_rx,
        tasks,
    )
    .await?;
    Ok(LocalStarted { cloud, reports })
}

/// Settings of the OpenStack provider: the driver's own and the seed's options.
#[derive(Debug, Clone)]
pub struct OpenStackSettings {
    /// Keystone session, image, flavor, networks, alarm type.
    pub driver: klb_openstack::OpenStackConfig,
    /// `lb_vm_count`.
    pub vm_count: u32,
    /// `max_lb_vms`.
    pub max_vms: u32,
    /// `scale_out_cooldown_secs`.
    pub scale_out_cooldown: Duration,
    /// `agent_port`.
    pub agent_port: u16,
    /// `agent_user`/`agent_password`.
    pub agent_auth: Option<BasicAuth>,
    /// `lb_api_agent_addr`:`lb_api_agent_port`: heartbeat receiver and alarm webhook.
    pub heartbeat_addr: SocketAddr,
    /// Agent heartbeat period.
    pub heartbeat_interval: Duration,
    /// A VM silent this long is failed over.
    pub silent_after: Duration,
    /// `base_as_number`.
    pub base_as_number: u32,
    /// `l3_router_as_number`.
    pub l3_router_as_number: u32,
    /// `primary_l3_gateway_addr`, `secondary_l3_gateway_addr`.
    pub gateways: Vec<IpAddr>,
    /// `default_maxconn`.
    pub default_maxconn: u32,
    /// `ceilometer_pps_threshold`.
    pub pps_threshold: u64,
    /// `ceilometer_period` (seconds).
    pub alarm_period_secs: u32,
    /// `ceilometer_evaluation_periods`.
    pub alarm_evaluation_periods: u32,
    /// `kinx_office_ip`.
    pub office_cidr: Option<ipnet::IpNet>,
    /// `loadbalancer_instance_volume_size` (0 or unset: boot from the image).
    pub boot_volume_gib: Option<u32>,
    /// `availibility_zone`.
    pub availability_zone: Option<String>,
    /// Path of `klb` inside the LB image (the agent's systemd unit runs it).
    pub agent_binary: String,
    /// Flow and job lease.
    pub flow_lease: Duration,
    /// How long the flows wait for Nova.
    pub timing: lb::FlowTiming,
}

async fn start_openstack(
    config: &PlaneConfig,
    settings: &OpenStackSettings,
    store: &Store,
    stop_rx: &watch::Receiver<bool>,
    tasks: &mut Vec<JoinHandle<()>>,
) -> Result<klb_openstack::OpenStackCloud, PlaneError> {
    let id = identity(&config.state_dir, settings.agent_auth.clone())?;
    let bootstrap = AgentBootstrap::new(
        id.ca.clone(),
        settings.agent_port,
        settings.heartbeat_addr.port(),
        settings.heartbeat_interval.as_millis() as u64,
    )
    .with_auth(settings.agent_auth.clone());
    let user_data = CloudInit::new(
        bootstrap,
        settings.heartbeat_addr.ip(),
        settings.agent_binary.clone(),
    );
    let cloud =
        klb_openstack::OpenStackCloud::connect(settings.driver.clone(), Arc::new(user_data))
            .await?;
    tracing::info!(?cloud, "OpenStack cloud ready");
    start_health(
        settings.heartbeat_addr,
        &id,
        store,
        settings.silent_after,
        settings.scale_out_cooldown,
        stop_rx,
        tasks,
    )
    .await?;
    let mut lb_config = LbConfig::example(cloud.mgmt_network_id(), cloud.l3_network_id());
    // The driver resolves `image_tag` itself when no id is configured.
    lb_config.image_id = settings.driver.image_id.clone().unwrap_or_default();
    lb_config.flavor_id = settings.driver.flavor_id.clone();
    lb_config.boot_volume_gib = settings.boot_volume_gib.filter(|&g| g > 0);
    lb_config.availability_zone = settings.availability_zone.clone();
    lb_config.agent_port = settings.agent_port;
    lb_config.office_cidr = settings.office_cidr;
    lb_config.pps_threshold = settings.pps_threshold;
    lb_config.alarm_period_secs = settings.alarm_period_secs;
    lb_config.alarm_evaluation_periods = settings.alarm_evaluation_periods;
    lb_config.default_vm_count = settings.vm_count;
    lb_config.heartbeat_endpoint = settings.heartbeat_addr.to_string();
    lb_config.alarm_webhook_url = webhook_url(settings.heartbeat_addr, &id.webhook_token);
    let data_plane = DataPlane {
        base_as_number: settings.base_as_number,
        l3_router_as_number: settings.l3_router_as_number,
        gateways: settings.gateways.clone(),
        bfd: true,
        default_maxconn: settings.default_maxconn,
        peer_port: lb_config.peer_port,
        heartbeat_keys: Some(id.heartbeat_keys.clone()),
    };
    let certs = Arc::new(klb_openstack::BarbicanCertificates::new(
        cloud.session().clone(),
    ));
    let env = LbEnv {
        cloud: cloud.cloud(Arc::new(HttpAgents::new(id.client.clone()))),
        config: lb_config,
        backend: Arc::new(StoreBackend::new(store.clone(), data_plane, certs)),
        graphs: Default::default(),
    };
    start_flows(
        config,
        store,
        env,
        FlowSettings {
            timing: settings.timing,
            lease: settings.flow_lease,
            vm_count: settings.vm_count,
            max_vms: settings.max_vms,
        },
        stop_rx,
        tasks,
    )
    .await?;
    Ok(cloud)
}

/// VIPs reserved in Neutron at the API call, as Octavia does; the create flow adopts the port.
struct OpenStackVipNetwork {
    cloud: klb_openstack::OpenStackCloud,
}

#[async_trait::async_trait]
impl VipNetwork for OpenStackVipNetwork {
    async fn allocate_vip(
        &self,
        lb_id: Uuid,
        project_id: &str,
        request: &VipRequest,
    ) -> Result<Vip, VipError> {
        if request.port_id.is_some() {
            return Err(VipError::PortIdUnsupported {
                scope: "",
                instead: "vip_subnet_id or vip_network_id",
            });
        }
        let subnet = request.subnet_id.map(|u| u.to_string());
        let network = request.network_id.map(|u| u.to_string());
        let vip = self
            .cloud
            .reserve_vip(
                &lb_id.to_string(),
                project_id,
                subnet.as_deref(),
                network.as_deref(),
                request.address,
            )
            .await
            .map_err(|e| VipError::Driver(Box::new(e)))?;
        let uuid = |s: &str| {
            Uuid::parse_str(s).map_err(|source| VipError::NotAUuid {
                id: s.to_owned(),
                source,
            })
        };
        Ok(Vip {
            address: vip.address,
            port_id: uuid(&vip.port_id)?,
            subnet_id: uuid(&vip.subnet_id)?,
            network_id: uuid(&vip.network_id)?,
        })
    }

    async fn subnet_cidr(
        &self,
        _project_id: &str,
        subnet_id: Uuid,
    ) -> Result<Option<ipnet::IpNet>, VipError> {
        let id = subnet_id.to_string();
        match klb_cloud::Network::find_subnet(&self.cloud, &id).await {
            Ok(Some(subnet)) => Ok(Some(subnet.cidr)),
            Ok(None) => Err(VipError::SubnetNotFound(subnet_id)),
            Err(e) => Err(VipError::SubnetUnreadable {
                subnet: subnet_id,
                source: Box::new(e),
            }),
        }
    }
}

async fn start_fake(
    config: &PlaneConfig,
    settings: &FakeSettings,
    store: &Store,
    stop_rx: &watch::Receiver<bool>,
    tasks: &mut Vec<JoinHandle<()>>,
) -> Result<FakeVipNetwork, PlaneError> {
    let fake = match &settings.state_file {
        Some(path) => klb_cloud::fake::FakeCloud::shared(path)?,
        None => klb_cloud::fake::FakeCloud::new(),
    };
    let cidr = |s: &str| s.parse().expect("constant CIDR");
    // Find-or-add: a node sharing the state file with others adopts their networks.
    fake.ensure_network("lb-mgmt-net", cidr("198.18.128.0/17"))
        .await?;
    fake.ensure_network("lb-l3-net", cidr("198.18.64.0/20"))
        .await?;
    let (network_id, subnet_id) = fake
        .ensure_network("vip-net", cidr("198.19.0.0/20"))
        .await?;
    fake.set_latency(settings.latency).await;
    let db = Db::connect(&flow_db_url(&config.database_url, &config.state_dir)).await?;
    db.migrate().await?;
    let mut lb_config = LbConfig::example("lb-mgmt-net", "lb-l3-net");
    lb_config.default_vm_count = settings.vm_count;
    let data_plane = DataPlane {
        base_as_number: 10000,
        l3_router_as_number: 60201,
        gateways: vec![],
        bfd: true,
        default_maxconn: klb_proto::DEFAULT_MAXCONN,
        peer_port: lb_config.peer_port,
        // The fake cloud's VMs send no heartbeats.
        heartbeat_keys: None,
    };
    let env = LbEnv {
        cloud: fake.cloud(),
        config: lb_config,
        backend: Arc::new(StoreBackend::new(
            store.clone(),
            data_plane,
            Arc::new(LocalSecrets::new(store.clone())),
        )),
        graphs: Default::default(),
    };
    let engine_config = EngineConfig {
        lease_ttl: settings.flow_lease,
        ..EngineConfig::default()
    };
    let engine = Engine::new(db, Arc::new(env), lb::flows(), engine_config).with_finish_hook(
        Arc::new(SettleJobs {
            store: store.clone(),
        }),
    );
    let worker = engine.worker(8);
    let shutdown = wait_stop(stop_rx.clone());
    tasks.push(tokio::spawn(async move {
        if let Err(err) = worker.run(shutdown).await {
            tracing::error!(error = %err, "flow worker failed");
        }
    }));
    let pump = JobPump::new(store.clone(), engine, settings.vm_count);
    let shutdown = wait_stop(stop_rx.clone());
    tasks.push(tokio::spawn(async move {
        if let Err(err) = pump.run(shutdown).await {
            tracing::error!(error = %err, "job pump failed");
        }
    }));
    let uuid = |s: &str| Uuid::parse_str(s).unwrap_or_default();
    Ok(FakeVipNetwork {
        network_id: uuid(&network_id),
        subnet_id: uuid(&subnet_id),
    })
}

/// VIPs on the fake cloud's one VIP network (any subnet id the caller gives is accepted, as
/// with Octavia's noop network driver; the flows allocate on the fake's network).
struct FakeVipNetwork {
    network_id: Uuid,
    subnet_id: Uuid,
}

#[async_trait::async_trait]
impl VipNetwork for FakeVipNetwork {
    async fn allocate_vip(
        &self,
        lb_id: Uuid,
        project_id: &str,
        request: &VipRequest,
    ) -> Result<Vip, VipError> {
        let mut vip = klb_api::provider::NoopNetwork
            .allocate_vip(lb_id, project_id, request)
            .await?;
        // An address inside the fake VIP subnet 198.19.0.0/20.
        if request.address.is_none() {
            let n = 16 + (lb_id.as_u128() % 4000) as u32;
            vip.address = IpAddr::V4(std::net::Ipv4Addr::from(
                u32::from(std::net::Ipv4Addr::new(198, 19, 0, 0)) + n,
            ));
        }
        vip.network_id = self.network_id;
        vip.subnet_id = self.subnet_id;
        Ok(vip)
    }

    async fn subnet_cidr(
        &self,
        _project_id: &str,
        subnet_id: Uuid,
    ) -> Result<Option<ipnet::IpNet>, VipError> {
        // Other subnet ids are accepted unchecked, as by the noop network.
        Ok((subnet_id == self.subnet_id).then(|| "198.19.0.0/20".parse().expect("constant CIDR")))
    }
}

/// HAProxy needs about two descriptors per connection and refuses to start when it cannot
/// raise its limit that far; local "VMs" inherit this process's hard limit (20000 on some
/// hosts, below what `default_maxconn` 12000 needs), so the global maxconn is capped to fit.
fn cap_maxconn(wanted: u32) -> u32 {
    let hard = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|limits| {
            limits
                .lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(4).map(str::to_owned))
        })
        .and_then(|v| v.parse::<u64>().ok());
    match hard {
        Some(hard) => {
            let fit = (hard.saturating_sub(1000) / 2).min(u64::from(wanted)) as u32;
            if fit < wanted {
                tracing::warn!(
                    wanted,
                    capped = fit,
                    hard_nofile = hard,
                    "default_maxconn capped to the descriptor limit"
                );
            }
            fit.max(256)
        }
        None => wanted,
    }
}

/// The flow engine's tables live beside the store's: the same PostgreSQL database, or a
/// sibling SQLite file (one writer per file keeps SQLite contention away from the API).
fn flow_db_url(store_url: &str, state_dir: &std::path::Path) -> String {
    if store_url.starts_with("postgres") {
        store_url.to_owned()
    } else {
        format!("sqlite://{}?mode=rwc", state_dir.join("flows.db").display())
    }
}

fn load_or_create_ca(dir: &std::path::Path) -> Result<Ca, PlaneError> {
    let ca_dir = dir.join("ca");
    match Ca::load(&ca_dir) {
        Ok(ca) => Ok(ca),
        Err(_) => {
            let ca = Ca::generate("klb local CA")?;
            ca.save(&ca_dir)?;
            Ok(ca)
        }
    }
}

/// A random secret kept in `dir/name` (mode 0600) so restarts keep talking to adopted VMs.
fn load_or_create_secret(dir: &std::path::Path, name: &str) -> Result<String, PlaneError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(name);
    if let Ok(text) = std::fs::read_to_string(&path)
        && text.trim().len() >= 16
    {
        return Ok(text.trim().to_owned());
    }
    let secret = format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple());
    let file_err = |source| PlaneError::File {
        what: "writing a secret",
        path: path.clone(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .map_err(file_err)?;
    file.write_all(secret.as_bytes()).map_err(file_err)?;
    Ok(secret)
}

/// VIPs on the local cloud's VIP subnet (the stable ids the docs name).
struct LocalVipNetwork {
    plan: klb_local::AddressPlan,
}

#[async_trait::async_trait]
impl VipNetwork for LocalVipNetwork {
    async fn allocate_vip(
        &self,
        lb_id: Uuid,
        _project_id: &str,
        request: &VipRequest,
    ) -> Result<Vip, VipError> {
        if let Some(subnet) = request.subnet_id
            && subnet != plan::VIP_SUBNET_ID
        {
            return Err(VipError::SubnetNotFound(subnet));
        }
        if let Some(network) = request.network_id
            && network != plan::VIP_NETWORK_ID
        {
            return Err(VipError::NetworkNotFound(network));
        }
        if request.port_id.is_some() {
            return Err(VipError::PortIdUnsupported {
                scope: " by the local cloud",
                instead: "vip_subnet_id",
            });
        }
        let address = match request.address {
            Some(IpAddr::V4(a)) if self.plan.vip_subnet.contains(&a) => IpAddr::V4(a),
            Some(other) => {
                return Err(VipError::AddressOutsideSubnet {
                    address: other,
                    subnet: ipnet::IpNet::V4(self.plan.vip_subnet),
                });
            }
            None => {
                let hosts = (1u32 << (32 - self.plan.vip_subnet.prefix_len())) - 32;
                let n = 16 + (lb_id.as_u128() % u128::from(hosts)) as u32;
                IpAddr::V4(
                    self.plan
                        .vip(n)
                        .map_err(|e| VipError::Driver(Box::new(e)))?,
                )
            }
        };
        Ok(Vip {
            address,
            port_id: Uuid::new_v4(),
            subnet_id: plan::VIP_SUBNET_ID,
            network_id: plan::VIP_NETWORK_ID,
        })
    }

    async fn subnet_cidr(
        &self,
        _project_id: &str,
        subnet_id: Uuid,
    ) -> Result<Option<ipnet::IpNet>, VipError> {
        if subnet_id != plan::VIP_SUBNET_ID {
            return Err(VipError::SubnetNotFound(subnet_id));
        }
        Ok(Some(ipnet::IpNet::V4(self.plan.vip_subnet)))
    }
}
