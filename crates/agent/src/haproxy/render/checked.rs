//! What validation parsed out of a [`DesiredState`](klb_proto::DesiredState).
//!
//! Every value an emitter needs that validation had to check first (a policy's redirect
//! target, an APP_COOKIE name, a rule's key, the number an SSL_VERIFY_RESULT rule compares
//! with, a monitor's expected codes, the headers to insert) is a field of these types. Only the
//! validating functions of `render.rs` build them, so the emitters read them instead of
//! re-reading the wire types, and rendering cannot meet a value it would have to refuse (no
//! `expect("validated")` left to panic, issue 13 §8). Certificate references are kept as the
//! certificates they resolved to, for the same reason.

use klb_proto::check::{self, Invalid};
use klb_proto::{Certificate, HealthMonitor, L7Policy, L7Rule, Listener, Pool};

/// A listener that passed validation.
pub(super) struct CheckedListener<'a> {
    /// The listener as sent.
    pub listener: &'a Listener,
    /// The certificates its fields refer to.
    pub certs: ListenerCerts<'a>,
    /// Every policy (enabled or not), in the order sent.
    pub policies: Vec<CheckedPolicy<'a>>,
    /// What the `insert_headers` whose value is "true" render to, in key order (Octavia acts
    /// only on "true").
    pub headers: Vec<InsertHeader>,
}

impl<'a> CheckedListener<'a> {
    /// The enabled policies in `position` order.
    pub fn enabled_policies(&self) -> Vec<&CheckedPolicy<'a>> {
        let mut ps: Vec<_> = self
            .policies
            .iter()
            .filter(|p| p.policy.admin_state_up)
            .collect();
        ps.sort_by_key(|p| p.policy.position);
        ps
    }
}

/// A listener's certificates, found in the state's list by validation.
pub(super) struct ListenerCerts<'a> {
    /// `default_tls_container_ref`.
    pub default: Option<&'a Certificate>,
    /// `sni_container_refs`, in the order sent.
    pub sni: Vec<&'a Certificate>,
    /// `client_ca_tls_container_ref`.
    pub client_ca: Option<&'a Certificate>,
    /// `client_crl_container_ref`.
    pub client_crl: Option<&'a Certificate>,
}

/// A pool's certificates (for TLS to its members), found in the state's list by validation.
pub(super) struct PoolCerts<'a> {
    /// `tls_container_ref`: the client certificate shown to members.
    pub client: Option<&'a Certificate>,
    /// `ca_tls_container_ref`: verifies members.
    pub ca: Option<&'a Certificate>,
    /// `crl_container_ref`.
    pub crl: Option<&'a Certificate>,
}

/// An L7 policy that passed validation.
pub(super) struct CheckedPolicy<'a> {
    /// The policy as sent.
    pub policy: &'a L7Policy,
    /// Its action with the target the action needs.
    pub action: PolicyAction<'a>,
    /// Its rules (enabled or not), in the order sent.
    pub rules: Vec<CheckedRule<'a>>,
}

/// An L7 policy's action with its target, so a redirect without a URL (or a pool redirect to a
/// pool not in the state) cannot be represented.
pub(super) enum PolicyAction<'a> {
    /// `http-request deny`.
    Reject,
    /// Redirect to this URL (checked by `klb_proto::check::redirect_url`).
    RedirectToUrl(&'a str),
    /// Redirect with this prefix (checked like a URL).
    RedirectPrefix(&'a str),
    /// Send to this pool of the state.
    RedirectToPool(&'a Pool),
}

/// An L7 rule that passed validation.
pub(super) struct CheckedRule<'a> {
    /// The rule as sent.
    pub rule: &'a L7Rule,
    /// What its ACL fetches.
    pub fetch: RuleFetch<'a>,
}

/// What an L7 rule's ACL fetches, with the key of the rule types that take one (checked by
/// `klb_proto::check::l7_rule`) and the number SSL_VERIFY_RESULT compares with.
pub(super) enum RuleFetch<'a> {
    /// The `Host` header.
    HostName,
    /// The path.
    Path,
    /// The path's end (file extension).
    FileType,
    /// A request header by name.
    Header(&'a str),
    /// A request cookie by name.
    Cookie(&'a str),
    /// Whether the client sent a certificate.
    SslConnHasCert,
    /// The client certificate's verify result.
    SslVerifyResult(u32),
    /// A field of the client certificate's subject DN.
    SslDnField(&'a str),
}

/// A pool that passed validation.
pub(super) struct CheckedPool<'a> {
    /// The pool as sent.
    pub pool: &'a Pool,
    /// The certificates its fields refer to.
    pub certs: PoolCerts<'a>,
    /// Its session persistence.
    pub persistence: Option<Persistence<'a>>,
    /// Its health monitor (enabled or not).
    pub monitor: Option<CheckedMonitor<'a>>,
}

/// Session persistence with what each kind needs.
pub(super) enum Persistence<'a> {
    /// Stick on the client address.
    SourceIp,
    /// HAProxy inserts its own cookie.
    HttpCookie,
    /// Stick on the application's cookie of this name.
    AppCookie(CookieName<'a>),
}

/// A cookie name HAProxy can take as a `req.cook()` / `res.cook()` argument: built only by
/// [`CookieName::parse`], which runs the API's own check.
pub(super) struct CookieName<'a>(&'a str);

impl<'a> CookieName<'a> {
    /// `name` if it passes `klb_proto::check::fetch_key`.
    pub fn parse(name: &'a str) -> Result<CookieName<'a>, Invalid> {
        check::fetch_key(name)?;
        Ok(CookieName(name))
    }

    /// The name.
    pub fn as_str(&self) -> &'a str {
        self.0
    }
}

/// A health monitor that passed validation.
pub(super) struct CheckedMonitor<'a> {
    /// The monitor as sent.
    pub monitor: &'a HealthMonitor,
    /// What its check needs beyond the `server` options.
    pub kind: MonitorKind,
}

/// A health monitor's kind as the backend section renders it.
pub(super) enum MonitorKind {
    /// HTTP or HTTPS: `http-check` lines expecting these status codes (parsed from
    /// `expected_codes`, `200` when absent).
    Http {
        /// The expected codes, ascending.
        expected: Vec<u16>,
    },
    /// `option ssl-hello-chk`.
    TlsHello,
    /// The external ping script.
    Ping,
    /// A TCP connect: the server line's `check` alone.
    Connect,
}

/// What an allowed `insert_headers` key renders to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum InsertHeader {
    /// `option forwardfor`.
    ForwardedFor,
    /// `X-Forwarded-Port` from the destination port.
    ForwardedPort,
    /// `X-Forwarded-Proto` from the listener protocol.
    ForwardedProto,
    /// Header name and a fixed HAProxy expression.
    Fixed(&'static str, &'static str),
}
