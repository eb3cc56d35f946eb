//! Pure rendering of `haproxy.cfg` (and the files it references) from a [`DesiredState`].
//!
//! No I/O happens here. The layout follows Octavia's amphora template (one process per load
//! balancer, one frontend per enabled listener, one backend per pool *per listener* named
//! `<pool_id>:<listener_id>`) with these deliberate differences:
//!
//! * Source hashing (`SOURCE_IP`, `SOURCE_IP_PORT`) uses `hash-type consistent`, because the
//!   runtime API refuses `add server` on map-based hashing. `SOURCE_IP_PORT` is implemented
//!   (Octavia's amphora falls back to round robin) with `balance hash src,concat(:,<var>)`.
//! * Every server option is written on the `server` line itself (no `default-server`), so the
//!   same options string can be replayed by `add server` for runtime member changes.
//! * HTTP health checks use the 2.6 `http-check send` syntax, so path and Host header are
//!   separate tokens instead of one concatenated request line.
//!
//! UDP and SCTP listeners are refused with [`RenderError::Unsupported`]. The plan (as in
//! Octavia, which uses keepalived/LVS for them): the agent renders an IPVS virtual server per
//! UDP/SCTP listener (`ipvsadm` or netlink, scheduler from `lb_algorithm`, persistence from
//! `session_persistence.persistence_timeout`/`granularity`), with UDP-CONNECT/SCTP/TCP/HTTP
//! health checks run by the agent itself toggling real-server weights; HAProxy is not involved.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use klb_proto::check::{self, Invalid};
use klb_proto::{
    AlpnProtocol, Certificate, ClientAuthentication, DesiredState, HealthMonitor,
    HealthMonitorType, HttpVersion, L7CompareType, L7PolicyAction, L7Rule, L7RuleType, LbAlgorithm,
    Listener, ListenerProtocol, Member, Pool, PoolProtocol, SessionPersistenceType, TlsVersion,
};

use self::checked::{
    CheckedListener, CheckedMonitor, CheckedPolicy, CheckedPool, CheckedRule, CookieName,
    InsertHeader, ListenerCerts, MonitorKind, Persistence, PolicyAction, PoolCerts, RuleFetch,
};
use super::text::{self, arg, log_format_arg, shown};

mod checked;

/// Name of the `peers` section shared by all LB VMs of a load balancer.
pub const PEERS_SECTION: &str = "klb_peers";

/// The ACL holding a listener's `allowed_cidrs`, and how many networks go on one of its lines.
const ALLOWED_CIDRS_ACL: &str = "klb:allowed_cidrs";
const CIDRS_PER_LINE: usize = 32;

/// Where the files HAProxy uses live on the LB VM. Agent configuration, not user input (still
/// escaped when rendered).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    /// Runtime directory: config, sockets, pid file.
    pub run_dir: PathBuf,
    /// Directory for certificate PEM files and crt-lists (mode 0700).
    pub cert_dir: PathBuf,
}

impl Paths {
    /// Both directories under one base.
    pub fn under(base: &Path) -> Paths {
        Paths {
            run_dir: base.to_path_buf(),
            cert_dir: base.join("certs"),
        }
    }

    /// The live configuration file.
    pub fn config(&self) -> PathBuf {
        self.run_dir.join("haproxy.cfg")
    }

    /// The admin stats socket (runtime API).
    pub fn admin_socket(&self) -> PathBuf {
        self.run_dir.join("admin.sock")
    }

    /// The master CLI socket (`-S`).
    pub fn master_socket(&self) -> PathBuf {
        self.run_dir.join("master.sock")
    }

    /// The pid file (master PID).
    pub fn pid_file(&self) -> PathBuf {
        self.run_dir.join("haproxy.pid")
    }

    /// The script used by PING health monitors.
    pub fn ping_script(&self) -> PathBuf {
        self.run_dir.join("ping-check.sh")
    }

    /// PEM file of a certificate.
    ///
    /// Names carry a hash of the contents: new material never overwrites a file the running
    /// configuration uses (a failed check leaves it untouched), and a rotated certificate
    /// changes the config text, which is what triggers the reload that loads it.
    pub fn certificate(&self, id: &str, pem: &str) -> PathBuf {
        self.cert_dir
            .join(format!("{id}-{:016x}.pem", content_hash(pem)))
    }

    /// crt-list of a TERMINATED_HTTPS listener.
    /// Content-addressed like [`Paths::certificate`].
    pub fn crt_list(&self, listener_id: &str, contents: &str) -> PathBuf {
        self.cert_dir.join(format!(
            "{listener_id}-{:016x}.crtlist",
            content_hash(contents)
        ))
    }
}

/// FNV-1a 64: names files by content (not a security boundary; the directory is private).
fn content_hash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Why a desired state cannot be rendered. Messages never contain certificate material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// A field failed the render-time allow-list.
    #[error("{object}: invalid {field}: {reason}")]
    Invalid {
        /// The object, e.g. `listener 1234`.
        object: String,
        /// Field name, Octavia spelling.
        field: &'static str,
        /// What is wrong (user values shown escaped and shortened).
        reason: String,
    },
    /// A reference to an object or certificate that is not in the state.
    #[error("{object}: {field} refers to unknown {target} {id}")]
    Missing {
        /// The referring object.
        object: String,
        /// Field name.
        field: &'static str,
        /// Kind of target (`pool`, `certificate`).
        target: &'static str,
        /// The missing id (already validated as an id, or shown escaped).
        id: String,
    },
    /// A feature HAProxy does not serve here.
    #[error("{object}: {what} is not supported by the HAProxy data plane")]
    Unsupported {
        /// The object.
        object: String,
        /// The feature.
        what: String,
    },
}

/// A file other than `haproxy.cfg` that the config refers to.
#[derive(Clone, PartialEq, Eq)]
pub struct AuxFile {
    /// Absolute path.
    pub path: PathBuf,
    /// Contents (may be a private key: never logged).
    pub contents: String,
    /// Unix mode (0600 for key material, 0700 for scripts).
    pub mode: u32,
}

impl std::fmt::Debug for AuxFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuxFile")
            .field("path", &self.path)
            .field("bytes", &self.contents.len())
            .field("mode", &format_args!("{:o}", self.mode))
            .finish()
    }
}

/// One `server` line, kept structured so the apply step can diff members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    /// Server name (member id).
    pub name: String,
    /// Address.
    pub address: IpAddr,
    /// Port.
    pub port: u16,
    /// Weight 0–256.
    pub weight: u16,
    /// `admin_state_up` (false = maintenance).
    pub enabled: bool,
    /// Whether the options include a health `check`.
    pub checked: bool,
    /// Every other option, rendered (same text for the config and for `add server`).
    pub options: String,
}

impl Server {
    /// The address token: IPv6 needs the `ipv6@` prefix to separate address and port.
    pub fn address_token(&self) -> String {
        addr_port(self.address, self.port)
    }

    /// The text after `server <name> ` in the config.
    pub fn config_tail(&self) -> String {
        let mut s = format!("{} weight {}", self.address_token(), self.weight);
        if !self.options.is_empty() {
            s.push(' ');
            s.push_str(&self.options);
        }
        if !self.enabled {
            s.push_str(" disabled");
        }
        s
    }
}

/// A rendered state: the config, its skeleton (config without `server` lines) and servers per
/// backend. Two plans whose skeletons are equal differ only in members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Full `haproxy.cfg`.
    pub config: String,
    /// `config` without the `server` lines.
    pub skeleton: String,
    /// Servers per backend name, in config order.
    pub servers: BTreeMap<String, Vec<Server>>,
    /// Certificates, crt-lists and scripts the config refers to.
    pub files: Vec<AuxFile>,
    /// Frontend names (listener ids), for `disable frontend` when draining.
    pub frontends: Vec<String>,
}

/// Renders `haproxy.cfg` for `state`.
pub fn render(state: &DesiredState, paths: &Paths) -> Result<String, RenderError> {
    plan(state, paths).map(|p| p.config)
}

/// Renders the config plus the structure the apply step needs.
pub fn plan(state: &DesiredState, paths: &Paths) -> Result<Plan, RenderError> {
    Renderer::new(state, paths).run()
}

/// `<pool_id>:<listener_id>`: the backend of a pool as used by one listener.
pub fn backend_name(pool_id: &str, listener_id: &str) -> String {
    format!("{pool_id}:{listener_id}")
}

fn addr_port(address: IpAddr, port: u16) -> String {
    match address {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("ipv6@{a}:{port}"),
    }
}

fn path_arg(p: &Path) -> String {
    // Agent-chosen paths; escaped anyway (a space in a directory name must not split tokens).
    arg(&p.to_string_lossy())
}

/// HAProxy mode of a listener.
fn listener_http(protocol: ListenerProtocol) -> bool {
    matches!(
        protocol,
        ListenerProtocol::Http | ListenerProtocol::TerminatedHttps | ListenerProtocol::Prometheus
    )
}

struct Renderer<'a> {
    state: &'a DesiredState,
    paths: &'a Paths,
    out: String,
    skeleton: String,
    servers: BTreeMap<String, Vec<Server>>,
    files: Vec<AuxFile>,
    frontends: Vec<String>,
    written_certs: BTreeSet<String>,
    ping: bool,
}

macro_rules! emit {
    ($r:expr, $($t:tt)*) => {{
        let l = format!($($t)*);
        $r.push_line(&l);
    }};
}

impl<'a> Renderer<'a> {
    fn new(state: &'a DesiredState, paths: &'a Paths) -> Self {
        Renderer {
            state,
            paths,
            out: String::new(),
            skeleton: String::new(),
            servers: BTreeMap::new(),
            files: Vec::new(),
            frontends: Vec::new(),
            written_certs: BTreeSet::new(),
            ping: false,
        }
    }

    fn push_line(&mut self, l: &str) {
        self.out.push_str(l);
        self.out.push('\n');
        self.skeleton.push_str(l);
        self.skeleton.push('\n');
    }

    fn run(mut self) -> Result<Plan, RenderError> {
        let state = self.state;
        let lb = format!("load balancer {}", shown(&state.load_balancer_id));
        text::id(&state.load_balancer_id).map_err(|r| invalid(&lb, "id", r))?;
        if state.protocol != klb_proto::PROTOCOL_VERSION {
            return Err(RenderError::Unsupported {
                object: lb,
                what: format!("protocol version {}", state.protocol),
            });
        }
        // Validate everything first: a bad field anywhere rejects the whole state. What the
        // checks parse is kept (`checked`), so the emitters below cannot fail on it.
        let mut checked = Vec::with_capacity(state.listeners.len());
        for l in &state.listeners {
            checked.push(self.validate_listener(l)?);
        }
        let mut pools = Vec::with_capacity(state.pools.len());
        for p in &state.pools {
            pools.push(self.validate_pool(p)?);
        }
        let listeners: Vec<&CheckedListener<'a>> = if state.admin_state_up {
            checked
                .iter()
                .filter(|l| l.listener.admin_state_up)
                .collect()
        } else {
            Vec::new()
        };
        self.ping = state.pools.iter().any(|p| {
            p.admin_state_up
                && p.health_monitor
                    .as_ref()
                    .is_some_and(|h| h.admin_state_up && h.monitor_type == HealthMonitorType::Ping)
        });

        self.global()?;
        self.defaults();
        self.peers()?;
        for l in listeners {
            let serves = pools_of(l, &pools);
            self.frontend(l, &serves)?;
            for pool in serves {
                self.backend(l, pool)?;
            }
        }
        if self.ping {
            self.files.push(AuxFile {
                path: self.paths.ping_script(),
                contents: PING_SCRIPT.to_owned(),
                mode: 0o700,
            });
        }
        Ok(Plan {
            config: self.out,
            skeleton: self.skeleton,
            servers: self.servers,
            files: self.files,
            frontends: self.frontends,
        })
    }

    fn global(&mut self) -> Result<(), RenderError> {
        let g = &self.state.global;
        if g.maxconn == 0 {
            return Err(invalid("global", "maxconn", "must be positive".into()));
        }
        emit!(
            self,
            // No version here: equal configs must compare equal across versions.
            "# Rendered by klb-agent for load balancer {}.",
            self.state.load_balancer_id
        );
        emit!(self, "global");
        emit!(self, "    master-worker");
        emit!(self, "    maxconn {}", g.maxconn);
        emit!(
            self,
            "    stats socket {} mode 600 level admin expose-fd listeners",
            path_arg(&self.paths.admin_socket())
        );
        emit!(self, "    stats timeout 30s");
        if self.ping {
            // PING health monitors run an external script; HAProxy requires both keywords.
            emit!(self, "    external-check");
            emit!(self, "    insecure-fork-wanted");
        }
        emit!(self, "");
        Ok(())
    }

    fn defaults(&mut self) {
        emit!(self, "defaults");
        emit!(self, "    mode tcp");
        // Retries plus redispatch make member removal and reloads invisible to clients.
        emit!(self, "    retries 3");
        emit!(self, "    option redispatch");
        emit!(self, "    timeout connect 5s");
        emit!(self, "    timeout client 50s");
        emit!(self, "    timeout server 50s");
        emit!(self, "");
    }

    fn peers(&mut self) -> Result<(), RenderError> {
        let state = self.state;
        if state.peers.is_empty() {
            return Ok(());
        }
        text::peer_name(&state.vm.name).map_err(|r| invalid("vm", "name", r))?;
        if !state.peers.iter().any(|p| p.name == state.vm.name) {
            return Err(invalid(
                "peers",
                "name",
                format!("this VM ({}) is not among the peers", state.vm.name),
            ));
        }
        emit!(self, "peers {PEERS_SECTION}");
        let mut seen = BTreeSet::new();
        for p in &state.peers {
            text::peer_name(&p.name).map_err(|r| invalid("peer", "name", r))?;
            if !seen.insert(&p.name) {
                return Err(invalid(
                    "peers",
                    "name",
                    format!("duplicate peer {}", p.name),
                ));
            }
            emit!(self, "    peer {} {}", p.name, addr_port(p.address, p.port));
        }
        emit!(self, "");
        Ok(())
    }

    fn has_peers(&self) -> bool {
        !self.state.peers.is_empty()
    }

    fn validate_listener(&self, l: &'a Listener) -> Result<CheckedListener<'a>, RenderError> {
        let obj = format!("listener {}", shown(&l.id));
        text::id(&l.id).map_err(|r| invalid(&obj, "id", r))?;
        if matches!(l.protocol, ListenerProtocol::Udp | ListenerProtocol::Sctp) {
            return Err(RenderError::Unsupported {
                object: obj,
                what: format!(
                    "protocol {} (planned: IPVS, see klb-agent render docs)",
                    l.protocol
                ),
            });
        }
        if l.protocol_port == 0 {
            return Err(invalid(&obj, "protocol_port", "must be 1-65535".into()));
        }
        if let Some(p) = &l.default_pool_id {
            self.pool_ref(&obj, "default_pool_id", p)?;
        }
        check::allowed_cidrs_count(l.allowed_cidrs.len())
            .map_err(|e| invalid(&obj, "allowed_cidrs", e.to_string()))?;
        let mut headers = Vec::new();
        for (key, value) in &l.insert_headers {
            let header = insert_header(l.protocol, key).ok_or_else(|| {
                invalid(
                    &obj,
                    "insert_headers",
                    format!("unknown or not allowed header {}", shown(key)),
                )
            })?;
            if value.len() > 255 || text::has_control(value) {
                return Err(invalid(
                    &obj,
                    "insert_headers",
                    format!("bad value for {key}"),
                ));
            }
            if value.eq_ignore_ascii_case("true") {
                headers.push(header); // Octavia acts only on "true".
            }
        }
        if let Some(c) = &l.tls_ciphers {
            check::ciphers(c).map_err(|e| refused(&obj, "tls_ciphers", c, e))?;
        }
        let tls_refs = l.default_tls_certificate_id.is_some() || !l.sni_certificate_ids.is_empty();
        if l.protocol == ListenerProtocol::TerminatedHttps {
            if !tls_refs {
                return Err(invalid(
                    &obj,
                    "default_tls_container_ref",
                    "TERMINATED_HTTPS needs a certificate".into(),
                ));
            }
        } else if tls_refs || l.client_ca_certificate_id.is_some() {
            return Err(invalid(
                &obj,
                "default_tls_container_ref",
                format!("certificates are not allowed on {} listeners", l.protocol),
            ));
        }
        let cert = |field, id: &Option<String>| {
            id.as_deref()
                .map(|c| self.cert_ref(&obj, field, c))
                .transpose()
        };
        let certs = ListenerCerts {
            default: cert("default_tls_container_ref", &l.default_tls_certificate_id)?,
            client_ca: cert("client_ca_tls_container_ref", &l.client_ca_certificate_id)?,
            client_crl: cert("client_crl_container_ref", &l.client_crl_certificate_id)?,
            sni: l
                .sni_certificate_ids
                .iter()
                .map(|c| self.cert_ref(&obj, "sni_container_refs", c))
                .collect::<Result<_, _>>()?,
        };
        if l.client_authentication != ClientAuthentication::None
            && l.client_ca_certificate_id.is_none()
        {
            return Err(invalid(
                &obj,
                "client_authentication",
                "requires client_ca_tls_container_ref".into(),
            ));
        }
        let policies: Vec<_> = l.l7_policies.iter().collect();
        if !policies.is_empty() && !listener_http(l.protocol) {
            return Err(RenderError::Unsupported {
                object: obj,
                what: format!("L7 policies on a {} listener", l.protocol),
            });
        }
        let mut checked = Vec::with_capacity(policies.len());
        for p in policies {
            let pobj = format!("l7policy {}", shown(&p.id));
            text::id(&p.id).map_err(|r| invalid(&pobj, "id", r))?;
            let action = match p.action {
                L7PolicyAction::Reject => PolicyAction::Reject,
                L7PolicyAction::RedirectToPool => {
                    let id = p
                        .redirect_pool_id
                        .as_deref()
                        .ok_or_else(|| invalid(&pobj, "redirect_pool_id", "required".into()))?;
                    PolicyAction::RedirectToPool(self.pool_ref(&pobj, "redirect_pool_id", id)?)
                }
                L7PolicyAction::RedirectToUrl => {
                    let u = p
                        .redirect_url
                        .as_deref()
                        .ok_or_else(|| invalid(&pobj, "redirect_url", "required".into()))?;
                    check::redirect_url(u).map_err(|e| refused(&pobj, "redirect_url", u, e))?;
                    PolicyAction::RedirectToUrl(u)
                }
                L7PolicyAction::RedirectPrefix => {
                    let u = p
                        .redirect_prefix
                        .as_deref()
                        .ok_or_else(|| invalid(&pobj, "redirect_prefix", "required".into()))?;
                    check::redirect_url(u).map_err(|e| refused(&pobj, "redirect_prefix", u, e))?;
                    PolicyAction::RedirectPrefix(u)
                }
            };
            if let Some(code) = p.redirect_http_code
                && ![301, 302, 303, 307, 308].contains(&code)
            {
                return Err(invalid(
                    &pobj,
                    "redirect_http_code",
                    format!("{code} is not 301, 302, 303, 307 or 308"),
                ));
            }
            if p.rules.len() > check::MAX_L7_RULES_PER_POLICY {
                return Err(invalid(&pobj, "rules", "at most 50 rules".into()));
            }
            let rules = p
                .rules
                .iter()
                .map(validate_rule)
                .collect::<Result<_, _>>()?;
            checked.push(CheckedPolicy {
                policy: p,
                action,
                rules,
            });
        }
        Ok(CheckedListener {
            listener: l,
            certs,
            policies: checked,
            headers,
        })
    }

    fn validate_pool(&self, p: &'a Pool) -> Result<CheckedPool<'a>, RenderError> {
        let obj = format!("pool {}", shown(&p.id));
        text::id(&p.id).map_err(|r| invalid(&obj, "id", r))?;
        if matches!(p.protocol, PoolProtocol::Udp | PoolProtocol::Sctp) {
            return Err(RenderError::Unsupported {
                object: obj,
                what: format!("protocol {}", p.protocol),
            });
        }
        let persistence =
            match &p.session_persistence {
                None => None,
                Some(sp) => Some(match sp.persistence_type {
                    SessionPersistenceType::AppCookie => {
                        let name = sp.cookie_name.as_deref().ok_or_else(|| {
                            invalid(
                                &obj,
                                "session_persistence.cookie_name",
                                "required for APP_COOKIE".into(),
                            )
                        })?;
                        Persistence::AppCookie(CookieName::parse(name).map_err(|e| {
                            refused(&obj, "session_persistence.cookie_name", name, e)
                        })?)
                    }
                    _ if sp.cookie_name.is_some() => {
                        return Err(invalid(
                            &obj,
                            "session_persistence.cookie_name",
                            "only allowed with APP_COOKIE".into(),
                        ));
                    }
                    SessionPersistenceType::SourceIp => Persistence::SourceIp,
                    SessionPersistenceType::HttpCookie => Persistence::HttpCookie,
                }),
            };
        let monitor = match &p.health_monitor {
            Some(hm) => Some(validate_monitor(&obj, hm)?),
            None => None,
        };
        if let Some(c) = &p.tls_ciphers {
            check::ciphers(c).map_err(|e| refused(&obj, "tls_ciphers", c, e))?;
        }
        let cert = |field, id: &Option<String>| {
            id.as_deref()
                .map(|c| self.cert_ref(&obj, field, c))
                .transpose()
        };
        let certs = PoolCerts {
            client: cert("tls_container_ref", &p.tls_certificate_id)?,
            ca: cert("ca_tls_container_ref", &p.ca_tls_certificate_id)?,
            crl: cert("crl_container_ref", &p.crl_certificate_id)?,
        };
        let mut seen = BTreeSet::new();
        for m in &p.members {
            let mobj = format!("member {}", shown(&m.id));
            text::id(&m.id).map_err(|r| invalid(&mobj, "id", r))?;
            if !seen.insert(&m.id) {
                return Err(invalid(
                    &obj,
                    "members",
                    format!("duplicate member id {}", m.id),
                ));
            }
            if m.protocol_port == 0 || m.monitor_port == Some(0) {
                return Err(invalid(&mobj, "protocol_port", "must be 1-65535".into()));
            }
            if m.weight > 256 {
                return Err(invalid(&mobj, "weight", "must be 0-256".into()));
            }
        }
        Ok(CheckedPool {
            pool: p,
            certs,
            persistence,
            monitor,
        })
    }

    fn pool_ref(&self, obj: &str, field: &'static str, id: &str) -> Result<&'a Pool, RenderError> {
        text::id(id).map_err(|r| invalid(obj, field, r))?;
        match self.state.pool(id) {
            Some(pool) => Ok(pool),
            None => Err(RenderError::Missing {
                object: obj.to_owned(),
                field,
                target: "pool",
                id: id.to_owned(),
            }),
        }
    }

    fn cert_ref(
        &self,
        obj: &str,
        field: &'static str,
        id: &str,
    ) -> Result<&'a Certificate, RenderError> {
        text::id(id).map_err(|r| invalid(obj, field, r))?;
        match self.state.certificate(id) {
            Some(cert) => Ok(cert),
            None => Err(RenderError::Missing {
                object: obj.to_owned(),
                field,
                target: "certificate",
                id: id.to_owned(),
            }),
        }
    }

    /// Queues a certificate's PEM file and returns its path.
    fn cert_file(&mut self, cert: &Certificate) -> PathBuf {
        let path = self.paths.certificate(&cert.id, cert.pem.expose());
        if self.written_certs.insert(cert.id.clone()) {
            self.files.push(AuxFile {
                path: path.clone(),
                contents: cert.pem.expose().to_owned(),
                mode: 0o600,
            });
        }
        path
    }

    fn frontend(
        &mut self,
        checked: &CheckedListener<'a>,
        pools: &[&CheckedPool<'a>],
    ) -> Result<(), RenderError> {
        let l = checked.listener;
        let http = listener_http(l.protocol);
        emit!(self, "frontend {}", l.id);
        self.frontends.push(l.id.clone());
        emit!(self, "    mode {}", if http { "http" } else { "tcp" });
        emit!(
            self,
            "    maxconn {}",
            l.connection_limit.unwrap_or(self.state.global.maxconn)
        );
        let tls = self.bind_tls(checked)?;
        let mut vips = vec![self.state.vip];
        vips.extend(self.state.additional_vips.iter().copied());
        for vip in vips {
            emit!(self, "    bind {}{}", addr_port(vip, l.protocol_port), tls);
        }
        emit!(self, "    timeout client {}ms", l.timeout_client_data);
        if l.timeout_tcp_inspect > 0 {
            emit!(
                self,
                "    tcp-request inspect-delay {}ms",
                l.timeout_tcp_inspect
            );
        }
        if !l.allowed_cidrs.is_empty() {
            // HAProxy reads at most 64 words a line: the networks go on several lines of one
            // ACL (lines of the same ACL are OR-ed). Its name has a ':', which ids never have.
            for chunk in l.allowed_cidrs.chunks(CIDRS_PER_LINE) {
                let cidrs: Vec<String> = chunk.iter().map(|c| c.to_string()).collect();
                emit!(self, "    acl {ALLOWED_CIDRS_ACL} src {}", cidrs.join(" "));
            }
            emit!(
                self,
                "    tcp-request connection reject unless {ALLOWED_CIDRS_ACL}"
            );
        }
        if l.protocol == ListenerProtocol::Prometheus {
            emit!(
                self,
                "    http-request use-service prometheus-exporter if {{ path /metrics }}"
            );
        }
        if pools
            .iter()
            .any(|p| p.pool.lb_algorithm == LbAlgorithm::SourceIpPort)
        {
            // The hash key needs the client port; `concat()` only takes variables.
            if http {
                emit!(self, "    http-request set-var(txn.sport) src_port");
            } else {
                emit!(self, "    tcp-request content set-var(sess.sport) src_port");
            }
        }
        if l.protocol == ListenerProtocol::TerminatedHttps
            && let Some(max_age) = l.hsts_max_age
        {
            let mut v = format!("max-age={max_age};");
            if l.hsts_include_subdomains {
                v.push_str(" includeSubDomains;");
            }
            if l.hsts_preload {
                v.push_str(" preload;");
            }
            emit!(
                self,
                "    http-response set-header Strict-Transport-Security {}",
                arg(&v)
            );
        }
        self.l7(checked);
        if let Some(pool) = l
            .default_pool_id
            .as_deref()
            .and_then(|id| self.state.pool(id))
            && pool.admin_state_up
        {
            emit!(
                self,
                "    default_backend {}",
                backend_name(&pool.id, &l.id)
            );
        }
        emit!(self, "");
        Ok(())
    }

    /// The `ssl ...` part of a TERMINATED_HTTPS bind line (empty otherwise); queues the crt-list.
    fn bind_tls(&mut self, checked: &CheckedListener<'_>) -> Result<String, RenderError> {
        let (l, certs) = (checked.listener, &checked.certs);
        if l.protocol != ListenerProtocol::TerminatedHttps {
            return Ok(String::new());
        }
        let mut chain: Vec<&Certificate> = Vec::new();
        chain.extend(certs.default);
        for s in &certs.sni {
            if !chain.iter().any(|c| c.id == s.id) {
                chain.push(s);
            }
        }
        // crt-list: the first entry is the default certificate; HAProxy picks the others by
        // the SNI names in each certificate.
        let mut list = String::new();
        for cert in chain {
            let path = self.cert_file(cert);
            writeln!(list, "{}", path_arg(&path)).expect("write to String");
        }
        let crt_list = self.paths.crt_list(&l.id, &list);
        self.files.push(AuxFile {
            path: crt_list.clone(),
            contents: list,
            mode: 0o600,
        });
        let mut s = format!(" ssl crt-list {}", path_arg(&crt_list));
        if let Some(ca) = certs.client_ca {
            let p = self.cert_file(ca);
            let verify = match l.client_authentication {
                ClientAuthentication::None => "none",
                ClientAuthentication::Optional => "optional",
                ClientAuthentication::Mandatory => "required",
            };
            write!(s, " ca-file {} verify {verify}", path_arg(&p)).expect("write to String");
            if let Some(crl) = certs.client_crl {
                let p = self.cert_file(crl);
                write!(s, " crl-file {}", path_arg(&p)).expect("write to String");
            }
        }
        s.push_str(&tls_options(
            l.tls_ciphers.as_deref(),
            &l.tls_versions,
            &l.alpn_protocols,
        ));
        Ok(s)
    }

    fn l7(&mut self, checked: &CheckedListener<'_>) {
        for p in checked.enabled_policies() {
            let rules: Vec<&CheckedRule<'_>> =
                p.rules.iter().filter(|r| r.rule.admin_state_up).collect();
            if rules.is_empty() {
                continue; // Octavia: a policy without enabled rules is skipped.
            }
            let mut cond = Vec::new();
            for r in &rules {
                emit!(self, "    acl {} {}", r.rule.id, acl_body(r));
                cond.push(if r.rule.invert {
                    format!("!{}", r.rule.id)
                } else {
                    r.rule.id.clone()
                });
            }
            let cond = cond.join(" ");
            let code = p.policy.redirect_http_code.unwrap_or(302);
            match p.action {
                PolicyAction::Reject => emit!(self, "    http-request deny if {cond}"),
                PolicyAction::RedirectToUrl(url) => {
                    emit!(
                        self,
                        "    http-request redirect code {code} location {} if {cond}",
                        log_format_arg(url)
                    );
                }
                PolicyAction::RedirectPrefix(url) => {
                    emit!(
                        self,
                        "    http-request redirect code {code} prefix {} if {cond}",
                        log_format_arg(url)
                    );
                }
                PolicyAction::RedirectToPool(pool) => {
                    if pool.admin_state_up {
                        emit!(
                            self,
                            "    use_backend {} if {cond}",
                            backend_name(&pool.id, &checked.listener.id)
                        );
                    }
                }
            }
        }
    }

    fn backend(
        &mut self,
        checked: &CheckedListener<'_>,
        checked_pool: &CheckedPool<'_>,
    ) -> Result<(), RenderError> {
        let (l, pool) = (checked.listener, checked_pool.pool);
        let name = backend_name(&pool.id, &l.id);
        let listener_mode_http = listener_http(l.protocol);
        // Octavia: PROXY pools follow the listener's mode, others their own protocol.
        let http = match pool.protocol {
            PoolProtocol::Proxy | PoolProtocol::ProxyV2 => listener_mode_http,
            PoolProtocol::Http => true,
            _ => false,
        };
        emit!(self, "backend {name}");
        emit!(self, "    mode {}", if http { "http" } else { "tcp" });
        match pool.lb_algorithm {
            LbAlgorithm::RoundRobin => emit!(self, "    balance roundrobin"),
            LbAlgorithm::LeastConnections => emit!(self, "    balance leastconn"),
            LbAlgorithm::SourceIp => {
                emit!(self, "    balance source");
                emit!(self, "    hash-type consistent");
            }
            LbAlgorithm::SourceIpPort => {
                // The variable is set by the frontend in its own mode's scope.
                let var = if listener_mode_http {
                    "txn.sport"
                } else {
                    "sess.sport"
                };
                emit!(self, "    balance hash src,concat(:,{var})");
                emit!(self, "    hash-type consistent");
            }
        }
        let peers = if self.has_peers() {
            format!(" peers {PEERS_SECTION}")
        } else {
            String::new()
        };
        let mut cookie = false;
        if let Some(persistence) = &checked_pool.persistence {
            match persistence {
                Persistence::SourceIp => {
                    emit!(self, "    stick-table type ipv6 size 10k{peers}");
                    emit!(self, "    stick on src");
                }
                // Cookie persistence needs HTTP; in TCP mode HAProxy would ignore it with a
                // warning, so it is left out (as Octavia's result is).
                Persistence::AppCookie(name) if http => {
                    let c = text::arg(name.as_str());
                    emit!(self, "    stick-table type string len 64 size 10k{peers}");
                    emit!(self, "    stick store-response res.cook({c})");
                    emit!(self, "    stick match req.cook({c})");
                }
                Persistence::HttpCookie if http => {
                    emit!(self, "    cookie SRV insert indirect nocache");
                    cookie = true;
                }
                _ => {}
            }
        }
        let monitor = checked_pool
            .monitor
            .as_ref()
            .filter(|m| m.monitor.admin_state_up);
        let hm = monitor.map(|m| m.monitor);
        if let Some(CheckedMonitor { monitor: hm, kind }) = monitor {
            if hm.timeout > 0 {
                emit!(self, "    timeout check {}s", hm.timeout);
            }
            match kind {
                MonitorKind::Http { expected } => {
                    emit!(self, "    option httpchk");
                    let method = hm.http_method.map_or("GET", |m| m.as_str());
                    let path = hm.url_path.as_deref().unwrap_or("/");
                    let mut send = format!("    http-check send meth {method} uri {}", arg(path));
                    match (hm.http_version, hm.domain_name.as_deref()) {
                        (Some(HttpVersion::Http11), Some(d)) => {
                            write!(send, " ver HTTP/1.1 hdr Host {d}").expect("write to String")
                        }
                        (Some(v), _) => {
                            write!(send, " ver HTTP/{}", v.as_str()).expect("write to String")
                        }
                        (None, _) => {}
                    }
                    self.push_line(&send);
                    emit!(
                        self,
                        "    http-check expect rstatus {}",
                        arg(&text::status_regex(expected))
                    );
                }
                MonitorKind::TlsHello => emit!(self, "    option ssl-hello-chk"),
                MonitorKind::Ping => {
                    emit!(self, "    option external-check");
                    emit!(
                        self,
                        "    external-check path \"/usr/bin:/bin:/usr/sbin:/sbin\""
                    );
                    emit!(
                        self,
                        "    external-check command {}",
                        path_arg(&self.paths.ping_script())
                    );
                }
                MonitorKind::Connect => {}
            }
        }
        if http {
            self.insert_headers(checked);
        }
        emit!(self, "    option allbackups");
        emit!(self, "    timeout connect {}ms", l.timeout_member_connect);
        emit!(self, "    timeout server {}ms", l.timeout_member_data);
        let options = self.server_options(checked_pool, hm);
        let mut servers = Vec::new();
        let puids = server_ids(&pool.members);
        for (m, puid) in pool.members.iter().zip(puids) {
            let server = member_server(m, puid, &options, hm.is_some(), cookie);
            let l = format!("    server {} {}", server.name, server.config_tail());
            self.out.push_str(&l);
            self.out.push('\n');
            servers.push(server);
        }
        self.servers.insert(name, servers);
        emit!(self, "");
        Ok(())
    }

    fn insert_headers(&mut self, checked: &CheckedListener<'_>) {
        let https = checked.listener.protocol == ListenerProtocol::TerminatedHttps;
        for header in &checked.headers {
            match *header {
                InsertHeader::ForwardedFor => emit!(self, "    option forwardfor"),
                InsertHeader::ForwardedPort => emit!(
                    self,
                    "    http-request set-header X-Forwarded-Port %[dst_port]"
                ),
                InsertHeader::ForwardedProto => emit!(
                    self,
                    "    http-request set-header X-Forwarded-Proto {}",
                    if https { "https" } else { "http" }
                ),
                InsertHeader::Fixed(name, value) => {
                    emit!(self, "    http-request set-header {name} {value}")
                }
            }
        }
    }

    /// Options shared by every server of a backend (everything but address, weight, state and
    /// the per-member monitor/backup/cookie bits).
    fn server_options(&mut self, checked: &CheckedPool<'_>, hm: Option<&HealthMonitor>) -> String {
        let (pool, certs) = (checked.pool, &checked.certs);
        let mut o = String::new();
        if let Some(hm) = hm {
            let inter_ms = (u64::from(hm.delay) * 1000).max(100);
            write!(
                o,
                " check inter {inter_ms}ms fall {} rise {}",
                hm.max_retries_down.clamp(1, 10),
                hm.max_retries.clamp(1, 10)
            )
            .expect("write to String");
            if hm.monitor_type == HealthMonitorType::Https {
                o.push_str(" check-ssl verify none");
            }
        }
        match pool.protocol {
            PoolProtocol::Proxy => o.push_str(" send-proxy"),
            PoolProtocol::ProxyV2 => o.push_str(" send-proxy-v2"),
            _ => {}
        }
        if pool.tls_enabled {
            o.push_str(" ssl");
            if let Some(c) = certs.client {
                let p = self.cert_file(c);
                write!(o, " crt {}", path_arg(&p)).expect("write to String");
            }
            match certs.ca {
                Some(ca) => {
                    let p = self.cert_file(ca);
                    write!(o, " ca-file {} verify required", path_arg(&p))
                        .expect("write to String");
                    if let Some(crl) = certs.crl {
                        let p = self.cert_file(crl);
                        write!(o, " crl-file {}", path_arg(&p)).expect("write to String");
                    }
                }
                None => o.push_str(" verify none"),
            }
            o.push_str(&tls_options(
                pool.tls_ciphers.as_deref(),
                &pool.tls_versions,
                &pool.alpn_protocols,
            ));
        }
        o.trim_start().to_owned()
    }
}

fn member_server(m: &Member, puid: u32, options: &str, checked: bool, cookie: bool) -> Server {
    let mut o = options.to_owned();
    let mut push = |s: String| {
        if !o.is_empty() {
            o.push(' ');
        }
        o.push_str(&s);
    };
    if checked {
        if let Some(a) = m.monitor_address {
            // `addr` takes an optional port: a bare IPv6 address (even with `ipv6@`) loses
            // its last group to it, brackets keep it whole (found by the api_valid property
            // test).
            push(match a {
                IpAddr::V4(a) => format!("addr {a}"),
                IpAddr::V6(a) => format!("addr [{a}]"),
            });
        }
        if let Some(p) = m.monitor_port {
            push(format!("port {p}"));
        }
    }
    if cookie {
        push(format!("cookie {}", m.id));
    }
    if m.backup {
        push("backup".to_owned());
    }
    push(format!("id {puid}"));
    Server {
        name: m.id.clone(),
        address: m.address,
        port: m.protocol_port,
        weight: m.weight,
        enabled: m.admin_state_up,
        checked,
        options: o,
    }
}

/// Stable numeric server ids (`id`), derived from member ids. Consistent hashing places a
/// server on the ring by this number, so without it a runtime-added server (next free id) and
/// the same server after a reload (id by config order) would sit at different ring positions
/// and remap clients. Collisions are resolved deterministically in member-id order.
fn server_ids(members: &[Member]) -> Vec<u32> {
    const RANGE: u32 = 2_000_000_000;
    let mut order: Vec<usize> = (0..members.len()).collect();
    order.sort_by(|&a, &b| members[a].id.cmp(&members[b].id));
    let mut taken = BTreeSet::new();
    let mut ids = vec![0; members.len()];
    for i in order {
        // FNV-1a: tiny, stable across Rust versions (unlike `DefaultHasher`).
        let h = members[i].id.bytes().fold(0x811c_9dc5_u32, |h, b| {
            (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
        });
        let mut id = h % RANGE + 1;
        while !taken.insert(id) {
            id = id % RANGE + 1;
        }
        ids[i] = id;
    }
    ids
}

fn tls_options(ciphers: Option<&str>, versions: &[TlsVersion], alpn: &[AlpnProtocol]) -> String {
    let mut s = String::new();
    if let Some(c) = ciphers {
        write!(s, " ciphers {}", arg(c)).expect("write to String");
    }
    let ver = |v: &TlsVersion| match v {
        TlsVersion::SslV3 => "SSLv3",
        TlsVersion::TlsV1 => "TLSv1.0",
        TlsVersion::TlsV1_1 => "TLSv1.1",
        TlsVersion::TlsV1_2 => "TLSv1.2",
        TlsVersion::TlsV1_3 => "TLSv1.3",
    };
    if let (Some(min), Some(max)) = (versions.iter().min(), versions.iter().max()) {
        write!(s, " ssl-min-ver {} ssl-max-ver {}", ver(min), ver(max)).expect("write to String");
    }
    if !alpn.is_empty() {
        let list: Vec<&str> = alpn.iter().map(|a| a.as_str()).collect();
        write!(s, " alpn {}", list.join(",")).expect("write to String");
    }
    s
}

/// Enabled pools this listener sends traffic to (default pool first, then L7 targets).
fn pools_of<'p, 'a>(
    l: &CheckedListener<'a>,
    pools: &'p [CheckedPool<'a>],
) -> Vec<&'p CheckedPool<'a>> {
    let mut ids: Vec<&str> = Vec::new();
    if let Some(id) = &l.listener.default_pool_id {
        ids.push(id);
    }
    for p in l.enabled_policies() {
        if let PolicyAction::RedirectToPool(pool) = p.action {
            ids.push(&pool.id);
        }
    }
    let mut seen = BTreeSet::new();
    ids.into_iter()
        .filter(|id| seen.insert(*id))
        .filter_map(|id| pools.iter().find(|p| p.pool.id == id))
        .filter(|p| p.pool.admin_state_up)
        .collect()
}

fn validate_rule(r: &L7Rule) -> Result<CheckedRule<'_>, RenderError> {
    let obj = format!("l7rule {}", shown(&r.id));
    text::id(&r.id).map_err(|e| invalid(&obj, "id", e))?;
    // The API's own check (klb_proto::check), so whatever the API accepted renders.
    check::l7_rule(r.rule_type, r.compare_type, r.key.as_deref(), &r.value).map_err(
        |e| match e {
            Invalid::Key(why) => refused(&obj, "key", r.key.as_deref().unwrap_or(""), *why),
            Invalid::Value(why) => refused(&obj, "value", &r.value, *why),
            other => invalid(&obj, "value", other.to_string()),
        },
    )?;
    // The check above refuses a missing key or a bad number, so these errors are the same
    // refusals spelled once more, not new rules.
    let key = || {
        r.key.as_deref().ok_or_else(|| {
            invalid(
                &obj,
                "key",
                format!("key must be provided for {} rules", r.rule_type),
            )
        })
    };
    let fetch = match r.rule_type {
        L7RuleType::HostName => RuleFetch::HostName,
        L7RuleType::Path => RuleFetch::Path,
        L7RuleType::FileType => RuleFetch::FileType,
        L7RuleType::Header => RuleFetch::Header(key()?),
        L7RuleType::Cookie => RuleFetch::Cookie(key()?),
        L7RuleType::SslConnHasCert => RuleFetch::SslConnHasCert,
        L7RuleType::SslVerifyResult => {
            RuleFetch::SslVerifyResult(check::ssl_verify_result(&r.value).ok_or_else(|| {
                invalid(
                    &obj,
                    "value",
                    "must be an integer from 0 to 4294967295".into(),
                )
            })?)
        }
        L7RuleType::SslDnField => RuleFetch::SslDnField(key()?),
    };
    Ok(CheckedRule { rule: r, fetch })
}

/// `<fetch> [flags] -- <value>` of a rule's ACL. `--` ends the flags, so a value starting with
/// `-` is never read as one.
fn acl_body(checked: &CheckedRule<'_>) -> String {
    let r = checked.rule;
    let m = match r.compare_type {
        L7CompareType::Regex => "-m reg",
        L7CompareType::StartsWith => "-m beg",
        L7CompareType::EndsWith => "-m end",
        L7CompareType::Contains => "-m sub",
        L7CompareType::EqualTo => "-m str",
    };
    let v = arg(&r.value);
    // Only the rule types that use a key carry it (the API ignores it on the others).
    match checked.fetch {
        RuleFetch::HostName => format!("req.hdr(host) -i {m} -- {v}"),
        RuleFetch::Path => format!("path {m} -- {v}"),
        RuleFetch::FileType if r.compare_type == L7CompareType::EqualTo => {
            format!("path_end -- .{v}")
        }
        RuleFetch::FileType => format!("path_end {m} -- {v}"),
        RuleFetch::Header(key) => format!("req.hdr({}) {m} -- {v}", arg(key)),
        RuleFetch::Cookie(key) => format!("req.cook({}) {m} -- {v}", arg(key)),
        RuleFetch::SslConnHasCert => "ssl_c_used".to_owned(),
        RuleFetch::SslVerifyResult(n) => format!("ssl_c_verify eq {n}"),
        RuleFetch::SslDnField(key) => format!("ssl_c_s_dn({}) {m} -- {v}", arg(key)),
    }
}

fn validate_monitor<'a>(
    obj: &str,
    hm: &'a HealthMonitor,
) -> Result<CheckedMonitor<'a>, RenderError> {
    let obj = format!("{obj} health monitor {}", shown(&hm.id));
    text::id(&hm.id).map_err(|e| invalid(&obj, "id", e))?;
    let http = matches!(
        hm.monitor_type,
        HealthMonitorType::Http | HealthMonitorType::Https
    );
    match hm.monitor_type {
        HealthMonitorType::UdpConnect | HealthMonitorType::Sctp => {
            return Err(RenderError::Unsupported {
                object: obj,
                what: format!("health monitor type {}", hm.monitor_type),
            });
        }
        _ => {}
    }
    if !(1..=10).contains(&hm.max_retries) || !(1..=10).contains(&hm.max_retries_down) {
        return Err(invalid(&obj, "max_retries", "must be 1-10".into()));
    }
    for (field, secs) in [("delay", hm.delay), ("timeout", hm.timeout)] {
        check::monitor_seconds(u64::from(secs)).map_err(|e| invalid(&obj, field, e.to_string()))?;
    }
    if !http
        && (hm.http_method.is_some()
            || hm.url_path.is_some()
            || hm.expected_codes.is_some()
            || hm.domain_name.is_some())
    {
        return Err(invalid(
            &obj,
            "http_method",
            format!("HTTP fields are not valid for {} monitors", hm.monitor_type),
        ));
    }
    if let Some(p) = &hm.url_path {
        check::url_path(p).map_err(|e| refused(&obj, "url_path", p, e))?;
    }
    let expected = match &hm.expected_codes {
        Some(c) => check::expected_codes(c).map_err(|e| refused(&obj, "expected_codes", c, e))?,
        None => vec![200],
    };
    if let Some(d) = &hm.domain_name {
        check::domain_name(d).map_err(|e| refused(&obj, "domain_name", d, e))?;
        if hm.http_version != Some(HttpVersion::Http11) {
            return Err(invalid(
                &obj,
                "domain_name",
                "requires http_version 1.1".into(),
            ));
        }
    }
    let kind = match hm.monitor_type {
        HealthMonitorType::Http | HealthMonitorType::Https => MonitorKind::Http { expected },
        HealthMonitorType::TlsHello => MonitorKind::TlsHello,
        HealthMonitorType::Ping => MonitorKind::Ping,
        _ => MonitorKind::Connect,
    };
    Ok(CheckedMonitor { monitor: hm, kind })
}

/// Maps an allowed `insert_headers` key to what it renders; `None` for unknown keys or keys
/// not allowed on this listener protocol.
fn insert_header(protocol: ListenerProtocol, key: &str) -> Option<InsertHeader> {
    let http = matches!(
        protocol,
        ListenerProtocol::Http | ListenerProtocol::TerminatedHttps
    );
    let https = protocol == ListenerProtocol::TerminatedHttps;
    let k = key.to_ascii_lowercase();
    let h = match k.as_str() {
        "x-forwarded-for" if http => InsertHeader::ForwardedFor,
        "x-forwarded-port" if http => InsertHeader::ForwardedPort,
        "x-forwarded-proto" if http => InsertHeader::ForwardedProto,
        "x-forwarded-ip" if http => InsertHeader::Fixed("X-Forwarded-IP", "%[src]"),
        "x-client-ip" if http => InsertHeader::Fixed("X-Client-IP", "%[src]"),
        "x-real-ip" if http => InsertHeader::Fixed("X-Real-IP", "%[src]"),
        "x-ssl-client-verify" if https => {
            InsertHeader::Fixed("X-SSL-Client-Verify", "%[ssl_c_verify]")
        }
        "x-ssl-client-has-cert" if https => {
            InsertHeader::Fixed("X-SSL-Client-Has-Cert", "%[ssl_c_used]")
        }
        "x-ssl-client-dn" if https => InsertHeader::Fixed("X-SSL-Client-DN", "%{+Q}[ssl_c_s_dn]"),
        "x-ssl-client-cn" if https => {
            InsertHeader::Fixed("X-SSL-Client-CN", "%{+Q}[ssl_c_s_dn(cn)]")
        }
        "x-ssl-issuer" if https => InsertHeader::Fixed("X-SSL-Issuer", "%{+Q}[ssl_c_i_dn]"),
        "x-ssl-client-sha1" if https => {
            InsertHeader::Fixed("X-SSL-Client-SHA1", "%{+Q}[ssl_c_sha1,hex]")
        }
        "x-ssl-client-not-before" if https => {
            InsertHeader::Fixed("X-SSL-Client-Not-Before", "%{+Q}[ssl_c_notbefore]")
        }
        "x-ssl-client-not-after" if https => {
            InsertHeader::Fixed("X-SSL-Client-Not-After", "%{+Q}[ssl_c_notafter]")
        }
        _ => return None,
    };
    Some(h)
}

/// A value the shared check refused; the value is shown escaped and shortened.
fn refused(object: &str, field: &'static str, value: &str, why: Invalid) -> RenderError {
    invalid(object, field, format!("{} {why}", shown(value)))
}

fn invalid(object: &str, field: &'static str, reason: String) -> RenderError {
    RenderError::Invalid {
        object: object.to_owned(),
        field,
        reason,
    }
}

/// PING check: HAProxy runs it as `<script> <proxy_addr> <proxy_port> <server_addr>
/// <server_port>`; only the server address is used.
const PING_SCRIPT: &str = r#"#!/bin/sh
# Written by klb-agent for PING health monitors.
case "$3" in
  *:*) exec ping -6 -q -n -c 1 -W 1 "$3" >/dev/null 2>&1 ;;
  *) exec ping -q -n -c 1 -W 1 "$3" >/dev/null 2>&1 ;;
esac
"#;

#[cfg(test)]
mod tests;
