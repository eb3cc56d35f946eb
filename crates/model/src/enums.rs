//! Octavia's enumerations. Each enum converts to and from its exact Octavia spelling with
//! `as_str` / `FromStr`; serde uses the same spelling (for storage only).

use std::fmt;
use std::str::FromStr;

/// The spelling given does not name any variant of the enum.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{value}' is not a valid {name}")]
pub struct UnknownVariant {
    /// Enum name, e.g. `Protocol`.
    pub name: &'static str,
    /// The rejected input.
    pub value: String,
}

macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $($(#[$vmeta])* #[doc = concat!("`", $text, "`")] $variant),+ }

        impl $name {
            /// Every variant, in Octavia's documentation order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// Octavia's spelling.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownVariant;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(UnknownVariant { name: stringify!($name), value: s.to_owned() }),
                }
            }
        }

        // Storage only: documents in klb-store keep Octavia's spelling.
        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

string_enum!(
    /// The user-visible outcome of the last change (not a lock).
    ProvisioningStatus {
        Active => "ACTIVE",
        Deleted => "DELETED",
        Error => "ERROR",
        PendingCreate => "PENDING_CREATE",
        PendingUpdate => "PENDING_UPDATE",
        PendingDelete => "PENDING_DELETE",
    }
);

impl ProvisioningStatus {
    /// `PENDING_CREATE`, `PENDING_UPDATE` or `PENDING_DELETE`.
    pub fn is_pending(self) -> bool {
        matches!(
            self,
            Self::PendingCreate | Self::PendingUpdate | Self::PendingDelete
        )
    }
}

string_enum!(
    /// Health as observed by the data plane.
    OperatingStatus {
        Online => "ONLINE",
        Draining => "DRAINING",
        Offline => "OFFLINE",
        Degraded => "DEGRADED",
        Error => "ERROR",
        NoMonitor => "NO_MONITOR",
    }
);

string_enum!(
    /// Listener protocols.
    ListenerProtocol {
        Http => "HTTP",
        Https => "HTTPS",
        Tcp => "TCP",
        TerminatedHttps => "TERMINATED_HTTPS",
        Udp => "UDP",
        Sctp => "SCTP",
        Prometheus => "PROMETHEUS",
    }
);

/// The L4 family a listener port is unique in (TCP 80 and UDP 80 may coexist).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L4Family {
    /// TCP, HTTP, HTTPS, TERMINATED_HTTPS, PROMETHEUS.
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl ListenerProtocol {
    /// The transport family used for the duplicate-port rule.
    pub fn l4_family(self) -> L4Family {
        match self {
            Self::Udp => L4Family::Udp,
            Self::Sctp => L4Family::Sctp,
            _ => L4Family::Tcp,
        }
    }

    /// Pool protocols a listener of this protocol may use (Octavia's
    /// `VALID_LISTENER_POOL_PROTOCOL_MAP`).
    pub fn allowed_pool_protocols(self) -> &'static [PoolProtocol] {
        use PoolProtocol as P;
        match self {
            Self::Tcp => &[P::Http, P::Https, P::Proxy, P::ProxyV2, P::Tcp],
            Self::Http => &[P::Http, P::Proxy, P::ProxyV2],
            Self::Https => &[P::Https, P::Proxy, P::ProxyV2, P::Tcp],
            Self::TerminatedHttps => &[P::Http, P::Proxy, P::ProxyV2],
            Self::Udp => &[P::Udp],
            Self::Sctp => &[P::Sctp],
            Self::Prometheus => &[],
        }
    }

    /// Whether the listener terminates TLS (certificate refs allowed).
    pub fn terminates_tls(self) -> bool {
        matches!(self, Self::TerminatedHttps | Self::Prometheus)
    }
}

string_enum!(
    /// Pool protocols.
    PoolProtocol {
        Http => "HTTP",
        Https => "HTTPS",
        Proxy => "PROXY",
        ProxyV2 => "PROXYV2",
        Tcp => "TCP",
        Udp => "UDP",
        Sctp => "SCTP",
    }
);

impl PoolProtocol {
    /// UDP and SCTP pools follow the LVS rules (no cookies, timeout/granularity allowed).
    pub fn is_datagram(self) -> bool {
        matches!(self, Self::Udp | Self::Sctp)
    }
}

string_enum!(
    /// Pool balancing algorithm. klb supports all four (SOURCE_IP_PORT included).
    LbAlgorithm {
        RoundRobin => "ROUND_ROBIN",
        LeastConnections => "LEAST_CONNECTIONS",
        SourceIp => "SOURCE_IP",
        SourceIpPort => "SOURCE_IP_PORT",
    }
);

string_enum!(
    /// Session persistence type.
    SessionPersistenceType {
        SourceIp => "SOURCE_IP",
        HttpCookie => "HTTP_COOKIE",
        AppCookie => "APP_COOKIE",
    }
);

string_enum!(
    /// Listener client certificate authentication.
    ClientAuthentication {
        None => "NONE",
        Optional => "OPTIONAL",
        Mandatory => "MANDATORY",
    }
);

string_enum!(
    /// Health monitor type.
    HealthMonitorType {
        Http => "HTTP",
        Https => "HTTPS",
        Ping => "PING",
        Tcp => "TCP",
        TlsHello => "TLS-HELLO",
        UdpConnect => "UDP-CONNECT",
        Sctp => "SCTP",
    }
);

impl HealthMonitorType {
    /// HTTP and HTTPS monitors carry http_method, url_path and expected_codes.
    pub fn is_http(self) -> bool {
        matches!(self, Self::Http | Self::Https)
    }
}

string_enum!(
    /// HTTP method of an HTTP(S) health monitor.
    HttpMethod {
        Get => "GET",
        Head => "HEAD",
        Post => "POST",
        Put => "PUT",
        Delete => "DELETE",
        Trace => "TRACE",
        Options => "OPTIONS",
        Connect => "CONNECT",
        Patch => "PATCH",
    }
);

string_enum!(
    /// What an L7 policy does when its rules match.
    L7PolicyAction {
        Reject => "REJECT",
        RedirectToUrl => "REDIRECT_TO_URL",
        RedirectToPool => "REDIRECT_TO_POOL",
        RedirectPrefix => "REDIRECT_PREFIX",
    }
);

string_enum!(
    /// What an L7 rule inspects.
    L7RuleType {
        HostName => "HOST_NAME",
        Path => "PATH",
        FileType => "FILE_TYPE",
        Header => "HEADER",
        Cookie => "COOKIE",
        SslConnHasCert => "SSL_CONN_HAS_CERT",
        SslVerifyResult => "SSL_VERIFY_RESULT",
        SslDnField => "SSL_DN_FIELD",
    }
);

string_enum!(
    /// How an L7 rule compares.
    L7CompareType {
        Regex => "REGEX",
        StartsWith => "STARTS_WITH",
        EndsWith => "ENDS_WITH",
        Contains => "CONTAINS",
        EqualTo => "EQUAL_TO",
    }
);

string_enum!(
    /// TLS protocol versions accepted in `tls_versions`.
    TlsVersion {
        SslV3 => "SSLv3",
        TlsV1 => "TLSv1",
        TlsV1_1 => "TLSv1.1",
        TlsV1_2 => "TLSv1.2",
        TlsV1_3 => "TLSv1.3",
    }
);

string_enum!(
    /// ALPN protocols accepted in `alpn_protocols`.
    AlpnProtocol {
        H2 => "h2",
        Http11 => "http/1.1",
        Http10 => "http/1.0",
    }
);

string_enum!(
    /// Role of an LB VM. klb runs LB VMs active-active, so `Standalone` is the usual value.
    LbVmRole {
        Master => "MASTER",
        Backup => "BACKUP",
        Standalone => "STANDALONE",
    }
);

string_enum!(
    /// Lifecycle of an LB VM (Octavia's amphora statuses).
    LbVmStatus {
        Booting => "BOOTING",
        Allocated => "ALLOCATED",
        Ready => "READY",
        PendingCreate => "PENDING_CREATE",
        PendingDelete => "PENDING_DELETE",
        Deleted => "DELETED",
        Error => "ERROR",
        FailoverStopped => "FAILOVER_STOPPED",
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_round_trip() {
        for p in ListenerProtocol::ALL {
            assert_eq!(p.as_str().parse::<ListenerProtocol>().unwrap(), *p);
        }
        assert_eq!(
            "TLS-HELLO".parse::<HealthMonitorType>(),
            Ok(HealthMonitorType::TlsHello)
        );
        assert_eq!(
            "SOURCE_IP_PORT".parse::<LbAlgorithm>(),
            Ok(LbAlgorithm::SourceIpPort)
        );
        assert!("http".parse::<ListenerProtocol>().is_err());
    }

    #[test]
    fn listener_pool_map() {
        assert!(
            ListenerProtocol::Http
                .allowed_pool_protocols()
                .contains(&PoolProtocol::Proxy)
        );
        assert!(
            !ListenerProtocol::Http
                .allowed_pool_protocols()
                .contains(&PoolProtocol::Tcp)
        );
        assert!(
            ListenerProtocol::Prometheus
                .allowed_pool_protocols()
                .is_empty()
        );
    }
}
