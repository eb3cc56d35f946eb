//! Allow-lists for every user string that can reach a rendered config (octavia-api.md §13.6).
//!
//! Values that reach `haproxy.cfg` are checked by `klb_proto::check`, the same functions the
//! agent's renderer runs, so the API never accepts what an LB VM would refuse (issue 11 §5);
//! this module adapts them to the model's enums and keeps the checks of values that stay in
//! the control plane (names, refs, insert-header keys).
//!
//! Rule of thumb: control characters (including CR/LF and DEL) are rejected everywhere a
//! value can reach haproxy.cfg, even where Octavia's own regexes would let `\s` through.
//! Characters that are legal for HTTP but special to HAProxy's config parser are allowed only
//! where the renderer can escape them.

use std::net::IpAddr;

use klb_proto::check;
pub use klb_proto::check::{
    Invalid, MAX_ALLOWED_CIDRS, MAX_CIPHERS, MAX_L7_RULES_PER_POLICY, MAX_MONITOR_SECONDS, MAX_STR,
};

use crate::enums::{L7CompareType, L7RuleType, ListenerProtocol};

/// True if `s` contains a C0/C1 control character or DEL.
pub fn has_control(s: &str) -> bool {
    s.chars()
        .any(|c| c.is_control() || ('\u{7f}'..='\u{9f}').contains(&c))
}

/// Why [`free_text`] refused a name, description or tag. The messages are Octavia's (WSME's
/// length message) and end up after `Invalid input for field/attribute ...`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    /// More than `max` characters.
    #[error("Value should have a maximum character requirement of {max}")]
    TooLong {
        /// The limit.
        max: usize,
    },
    /// A control character (NUL, CR, LF, TAB, DEL, C1).
    #[error("Value must not contain control characters")]
    Control,
}

/// Why [`container_ref`] refused a TLS container reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContainerRefError {
    /// More than [`MAX_STR`] characters.
    #[error("Value should have a maximum character requirement of {max}")]
    TooLong {
        /// The limit.
        max: usize,
    },
    /// Empty, or with whitespace or control characters (shown with [`printable`]).
    #[error("{} is not a valid container reference", printable(.value))]
    Malformed {
        /// The refused reference, as given.
        value: String,
    },
}

/// Why [`insert_header_key`] or [`insert_header_value`] refused an `insert_headers` entry.
/// The messages are Octavia's; the API answers them as the whole 400 fault string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InsertHeaderError {
    /// The listener protocol takes no `insert_headers` at all.
    #[error("insert-headers is not a valid option for a {protocol} protocol listener.")]
    NotForProtocol {
        /// The listener's protocol.
        protocol: ListenerProtocol,
    },
    /// A key not allowed on this protocol, or a value too long or with control characters
    /// (shown with [`printable`]).
    #[error("{} is not a valid option for insert_headers", printable(.value))]
    NotAnOption {
        /// The refused key or value, as given.
        value: String,
    },
}

/// Free text (names, descriptions, tags): length, plus no control characters (NUL, CR, LF,
/// TAB, DEL, C1) so log lines and CLI tables stay one line each and cannot be forged. Never
/// rendered into configs.
pub fn free_text(s: &str, max: usize) -> Result<(), TextError> {
    if s.chars().count() > max {
        return Err(TextError::TooLong { max });
    }
    if has_control(s) {
        return Err(TextError::Control);
    }
    Ok(())
}

/// A health-monitor `url_path`: an RFC 3986 absolute path (with optional query), no spaces,
/// no scheme, host or fragment, no double quotes or backslashes.
pub fn url_path(s: &str) -> Result<(), Invalid> {
    check::url_path(s)
}

/// `expected_codes`: `200`, `200,202` or an ascending `200-204` (list or one range).
pub fn expected_codes(s: &str) -> Result<(), Invalid> {
    check::expected_codes(s).map(drop)
}

/// A session persistence `cookie_name`: a token HAProxy can take as a `req.cook()` argument.
pub fn cookie_name(s: &str) -> Result<(), Invalid> {
    check::fetch_key(s)
}

/// A redirect URL or prefix: lower-case `http`/`https` scheme, a host, and only visible
/// ASCII characters other than `"` and `\`.
pub fn redirect_url(s: &str) -> Result<(), Invalid> {
    check::redirect_url(s)
}

/// An OpenSSL cipher string.
pub fn tls_ciphers(s: &str) -> Result<(), Invalid> {
    check::ciphers(s)
}

/// A DNS host name for `domain_name` (no trailing dot: it becomes a `Host` header).
pub fn domain_name(s: &str) -> Result<(), Invalid> {
    check::domain_name(s)
}

/// A health-monitor `delay` or `timeout` in seconds (HAProxy's timers are 32-bit ms).
pub fn monitor_seconds(secs: u64) -> Result<(), Invalid> {
    check::monitor_seconds(secs)
}

/// The number of `allowed_cidrs` of a listener.
pub fn allowed_cidrs_count(n: usize) -> Result<(), Invalid> {
    check::allowed_cidrs_count(n)
}

/// A member address or `monitor_address`: not reserved, loopback, unspecified, multicast or
/// broadcast, judged on the parsed address (IPv4-mapped IPv6 included).
pub fn member_address(address: IpAddr) -> Result<(), Invalid> {
    check::member_address(address)
}

/// A TLS container reference (Barbican URL or other opaque ref): bounded, no controls or
/// whitespace.
pub fn container_ref(s: &str) -> Result<(), ContainerRefError> {
    if s.chars().count() > MAX_STR {
        return Err(ContainerRefError::TooLong { max: MAX_STR });
    }
    if s.is_empty() || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ContainerRefError::Malformed {
            value: s.to_owned(),
        });
    }
    Ok(())
}

/// Keys accepted in `insert_headers` for a listener protocol.
pub fn insert_header_key(protocol: ListenerProtocol, key: &str) -> Result<(), InsertHeaderError> {
    const ALWAYS: &[&str] = &[
        "X-Forwarded-For",
        "X-Forwarded-Port",
        "X-Forwarded-Proto",
        "X-Forwarded-IP",
        "X-Client-IP",
        "X-Real-IP",
    ];
    const TLS: &[&str] = &[
        "X-SSL-Client-Verify",
        "X-SSL-Client-Has-Cert",
        "X-SSL-Client-DN",
        "X-SSL-Client-CN",
        "X-SSL-Issuer",
        "X-SSL-Client-SHA1",
        "X-SSL-Client-Not-Before",
        "X-SSL-Client-Not-After",
    ];
    if !matches!(
        protocol,
        ListenerProtocol::Http | ListenerProtocol::TerminatedHttps
    ) {
        return Err(InsertHeaderError::NotForProtocol { protocol });
    }
    if ALWAYS.contains(&key)
        || (protocol == ListenerProtocol::TerminatedHttps && TLS.contains(&key))
    {
        Ok(())
    } else {
        Err(InsertHeaderError::NotAnOption {
            value: key.to_owned(),
        })
    }
}

/// An `insert_headers` value: only compared to "true" by the renderer, but still bounded and
/// free of control characters.
pub fn insert_header_value(value: &str) -> Result<(), InsertHeaderError> {
    if value.len() > MAX_STR || has_control(value) {
        return Err(InsertHeaderError::NotAnOption {
            value: value.to_owned(),
        });
    }
    Ok(())
}

/// Octavia's `l7rule_data` checks for one rule. The error is the `<msg>` of
/// `Error parsing L7Rule: Invalid L7 Rule: <msg>`; callers add the prefix.
pub fn l7_rule(
    kind: L7RuleType,
    compare: L7CompareType,
    key: Option<&str>,
    value: &str,
) -> Result<(), Invalid> {
    check::l7_rule(wire_rule_type(kind), wire_compare_type(compare), key, value)
}

fn wire_rule_type(kind: L7RuleType) -> klb_proto::L7RuleType {
    use klb_proto::L7RuleType as W;
    match kind {
        L7RuleType::HostName => W::HostName,
        L7RuleType::Path => W::Path,
        L7RuleType::FileType => W::FileType,
        L7RuleType::Header => W::Header,
        L7RuleType::Cookie => W::Cookie,
        L7RuleType::SslConnHasCert => W::SslConnHasCert,
        L7RuleType::SslVerifyResult => W::SslVerifyResult,
        L7RuleType::SslDnField => W::SslDnField,
    }
}

fn wire_compare_type(compare: L7CompareType) -> klb_proto::L7CompareType {
    use klb_proto::L7CompareType as W;
    match compare {
        L7CompareType::Regex => W::Regex,
        L7CompareType::StartsWith => W::StartsWith,
        L7CompareType::EndsWith => W::EndsWith,
        L7CompareType::Contains => W::Contains,
        L7CompareType::EqualTo => W::EqualTo,
    }
}

/// Renders `s` for an error message without echoing control characters back.
pub fn printable(s: &str) -> String {
    s.chars()
        .take(300)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_and_compare_types_map_to_the_same_spelling_on_the_wire() {
        for &t in L7RuleType::ALL {
            assert_eq!(wire_rule_type(t).as_str(), t.as_str());
        }
        for &c in L7CompareType::ALL {
            assert_eq!(wire_compare_type(c).as_str(), c.as_str());
        }
    }

    #[test]
    fn l7_rules_use_the_renderers_checks() {
        use L7CompareType as C;
        use L7RuleType as T;
        assert!(l7_rule(T::Header, C::EqualTo, Some("X-Foo"), "bar").is_ok());
        assert!(l7_rule(T::Header, C::EqualTo, Some("X#Foo"), "bar").is_err());
        assert!(l7_rule(T::Path, C::Regex, None, "").is_err());
    }

    #[test]
    fn insert_headers() {
        assert!(insert_header_key(ListenerProtocol::Http, "X-Forwarded-For").is_ok());
        assert!(insert_header_key(ListenerProtocol::Http, "X-SSL-Client-DN").is_err());
        assert!(insert_header_key(ListenerProtocol::TerminatedHttps, "X-SSL-Client-DN").is_ok());
        assert!(insert_header_key(ListenerProtocol::Tcp, "X-Forwarded-For").is_err());
        assert!(insert_header_value("true\nfoo").is_err());
    }

    /// The API answers these messages as they are (golden.rs pins some of them too).
    #[test]
    fn typed_errors_keep_octavias_messages() {
        let check = |e: &dyn std::error::Error, want: &str| assert_eq!(e.to_string(), want);
        check(
            &free_text("abcd", 3).unwrap_err(),
            "Value should have a maximum character requirement of 3",
        );
        check(
            &free_text("a\u{85}b", 3).unwrap_err(),
            "Value must not contain control characters",
        );
        check(
            &container_ref(&"r".repeat(MAX_STR + 1)).unwrap_err(),
            &format!("Value should have a maximum character requirement of {MAX_STR}"),
        );
        check(
            &container_ref("a b\n").unwrap_err(),
            "a b? is not a valid container reference",
        );
        check(
            &insert_header_key(ListenerProtocol::Tcp, "X-Real-IP").unwrap_err(),
            "insert-headers is not a valid option for a TCP protocol listener.",
        );
        check(
            &insert_header_key(ListenerProtocol::Http, "X-Bad\r").unwrap_err(),
            "X-Bad? is not a valid option for insert_headers",
        );
        check(
            &insert_header_value("t\x7f").unwrap_err(),
            "t? is not a valid option for insert_headers",
        );
    }
}
