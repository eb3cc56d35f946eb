//! The allow-lists for every user value that can reach a rendered configuration, shared by the
//! API (through `klb_model::validate`) and the agent's renderer.
//!
//! Why here: a value the API accepts but the renderer or `haproxy -c` refuses turns a load
//! balancer into ERROR long after the 201 (issue 11 §5). One function per value, called by
//! both sides, closes that class; the agent depends on `klb-proto` only, so the checks live in
//! the protocol crate. The property test in `klb-agent` (`render/tests.rs`, `api_valid`)
//! renders states built only from values these functions accept and runs `haproxy -c` on them.
//!
//! The checks describe what HAProxy 2.6 accepts *after* the renderer's escaping (`arg` in
//! `klb-agent`): they may be stricter than Octavia where HAProxy is (sample-fetch arguments,
//! timer ranges, words per line), never looser than the renderer needs.

use std::net::{IpAddr, Ipv4Addr};

use crate::{L7CompareType, L7RuleType};

/// Maximum length of names, keys and values (Octavia's `String(255)` columns).
pub const MAX_STR: usize = 255;
/// Maximum length of a redirect URL/prefix or a health-check URL path.
pub const MAX_URL: usize = 2048;
/// Maximum length of a cipher string.
pub const MAX_CIPHERS: usize = 2048;
/// Maximum length of an SSL DN field name (the longest OpenSSL short/long names are far
/// shorter; the renderer's limit).
pub const MAX_DN_FIELD: usize = 64;
/// Maximum length of `expected_codes`.
pub const MAX_EXPECTED_CODES: usize = 64;
/// Maximum number of rules per L7 policy.
pub const MAX_L7_RULES_PER_POLICY: usize = 50;
/// Maximum number of `allowed_cidrs` of a listener (HAProxy reads at most 64 words a line;
/// the renderer splits them over several ACL lines, this bounds the config size).
pub const MAX_ALLOWED_CIDRS: usize = 64;
/// Largest health-monitor `delay`/`timeout` in seconds: HAProxy keeps timers as signed 32-bit
/// milliseconds and refuses larger values ("timer overflow").
pub const MAX_MONITOR_SECONDS: u32 = (i32::MAX as u32) / 1000;
/// Largest listener timeout in milliseconds (Octavia's `MAX_TIMEOUT`, 24 days).
pub const MAX_TIMEOUT_MS: u32 = 2_073_600_000;

/// Why a value was refused. Messages never repeat the value (callers show it escaped).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    /// An empty string where a value is required.
    #[error("must not be empty")]
    Empty,
    /// Longer than allowed.
    #[error("must be at most {max} characters")]
    TooLong {
        /// The limit.
        max: usize,
    },
    /// Contains a control character (CR, LF, NUL, DEL, C1...).
    #[error("control characters and line breaks are not allowed")]
    Control,
    /// A header or cookie name HAProxy cannot take as a sample-fetch argument.
    #[error(
        "must be a header or cookie name made of A-Z a-z 0-9 ! % & * + - . ^ _ | ~ (no # $ ' or `)"
    )]
    Token,
    /// An SSL DN field name.
    #[error("must be a DN field name: a letter, then letters, digits or '-'")]
    DnField,
    /// An HTTP header value.
    #[error(
        "must be a valid HTTP header value (visible characters, no spaces unless double-quoted)"
    )]
    HeaderValue,
    /// A cookie value.
    #[error("must be a valid cookie value")]
    CookieValue,
    /// A regular expression that does not compile.
    #[error("is not a valid regular expression")]
    Regex,
    /// A health-check URL path.
    #[error("must be an absolute URL path (RFC 3986 characters, no spaces, no '#')")]
    UrlPath,
    /// `expected_codes`.
    #[error("must be a code, a list of codes (200,202) or an ascending range (200-204)")]
    ExpectedCodes,
    /// A DNS host name.
    #[error("must be a DNS host name (letters, digits and '-', labels of 1-63, no trailing dot)")]
    DomainName,
    /// A redirect URL or prefix.
    #[error(
        "must be an http:// or https:// URL (lower-case scheme) with a host, in visible ASCII without '\"' or '\\'"
    )]
    RedirectUrl,
    /// An OpenSSL cipher string.
    #[error("may contain only A-Z a-z 0-9 - + ! : @ = _ .")]
    Ciphers,
    /// An L7 rule whose type, compare type, key and value do not fit together.
    #[error("{0}")]
    Rule(String),
    /// A list with too many items.
    #[error("at most {max} items are allowed")]
    TooMany {
        /// The limit.
        max: usize,
    },
    /// A number outside its range.
    #[error("must be between {min} and {max}")]
    OutOfRange {
        /// Smallest allowed.
        min: u64,
        /// Largest allowed.
        max: u64,
    },
    /// An L7 rule key that failed its check.
    #[error("key {0}")]
    Key(Box<Invalid>),
    /// An L7 rule value that failed its check.
    #[error("value {0}")]
    Value(Box<Invalid>),
    /// An address that may not be a member (or monitor) address.
    #[error("is a reserved address (loopback, unspecified, multicast, broadcast or metadata)")]
    ReservedAddress,
}

/// True if `s` contains a C0/C1 control character or DEL.
pub fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

fn bounded(s: &str, max: usize) -> Result<(), Invalid> {
    if s.is_empty() {
        Err(Invalid::Empty)
    } else if s.chars().count() > max {
        Err(Invalid::TooLong { max })
    } else if has_control(s) {
        Err(Invalid::Control)
    } else {
        Ok(())
    }
}

/// A header or cookie name (L7 HEADER/COOKIE keys, `cookie_name`). It becomes the argument of
/// `req.hdr(<name>)`/`req.cook(<name>)`, whose parser treats `,()'"\` and spaces specially
/// and `#`, `$` and backtick are easy to mis-render: RFC 7230 token characters minus those.
pub fn fetch_key(s: &str) -> Result<(), Invalid> {
    bounded(s, MAX_STR)?;
    let ok = s.chars().all(|c| {
        c.is_ascii_alphanumeric()
            || matches!(
                c,
                '!' | '%' | '&' | '*' | '+' | '-' | '.' | '^' | '_' | '|' | '~'
            )
    });
    if ok { Ok(()) } else { Err(Invalid::Token) }
}

/// An SSL DN field name (`ssl_c_s_dn(<key>)`): `^[a-zA-Z][A-Za-z0-9-]*$`, at most 64.
pub fn dn_field(s: &str) -> Result<(), Invalid> {
    bounded(s, MAX_DN_FIELD)?;
    let ok = s.starts_with(|c: char| c.is_ascii_alphabetic())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if ok { Ok(()) } else { Err(Invalid::DnField) }
}

/// An HTTP header value: visible ASCII without spaces, or a double-quoted string that may
/// contain spaces (backslash escapes a visible character).
pub fn header_value(s: &str) -> Result<(), Invalid> {
    bounded(s, MAX_STR)?;
    let visible = |b: u8| (0x21..=0x7e).contains(&b);
    if s.bytes().all(visible) {
        return Ok(());
    }
    let Some(inner) = s
        .strip_prefix('"')
        .and_then(|r| r.strip_suffix('"'))
        .filter(|_| s.len() >= 2)
    else {
        return Err(Invalid::HeaderValue);
    };
    let mut bytes = inner.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'\\' if bytes.next().is_some_and(|n| (0x20..=0x7e).contains(&n)) => {}
            b'"' | b'\\' => return Err(Invalid::HeaderValue),
            b if (0x20..=0x7e).contains(&b) => {}
            _ => return Err(Invalid::HeaderValue),
        }
    }
    Ok(())
}

/// A cookie value in an L7 COOKIE rule (RFC 6265 cookie-octets plus a few HAProxy handles).
pub fn cookie_value(s: &str) -> Result<(), Invalid> {
    bounded(s, MAX_STR)?;
    let ok = s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "!#$%&'()*+-./:<=>?@[]^_`{|}~".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Invalid::CookieValue)
    }
}

/// A regular expression for `-m reg`. HAProxy compiles it with PCRE2 (without UTF mode);
/// Rust's `regex` syntax is close to a subset of it (no look-around or back-references),
/// minus the constructs below, which PCRE2 refuses: the `u` and `R` flags, class set
/// operations (`[a--b]`, `&&`, `~~`) and `\x{...}`, `\u`, `\U` escapes.
pub fn regex(s: &str) -> Result<(), Invalid> {
    bounded(s, MAX_STR)?;
    regex::Regex::new(s).map_err(|_| Invalid::Regex)?;
    let ast = regex_syntax::ast::parse::Parser::new()
        .parse(s)
        .map_err(|_| Invalid::Regex)?;
    regex_syntax::ast::visit(&ast, PcreSubset)
}

/// Refuses the Rust-only regex constructs PCRE2 rejects.
struct PcreSubset;

impl regex_syntax::ast::Visitor for PcreSubset {
    type Output = ();
    type Err = Invalid;

    fn finish(self) -> Result<(), Invalid> {
        Ok(())
    }

    fn visit_pre(&mut self, ast: &regex_syntax::ast::Ast) -> Result<(), Invalid> {
        use regex_syntax::ast::{Ast, Flag, FlagsItemKind, GroupKind, HexLiteralKind, LiteralKind};
        let flags = match ast {
            Ast::Flags(f) => Some(&f.flags),
            Ast::Group(g) => match &g.kind {
                GroupKind::NonCapturing(f) => Some(f),
                _ => None,
            },
            // PCRE2: "quantifier does not follow a repeatable item" (`^{2}`, `\b+`, `a*{2}`).
            Ast::Repetition(r) => {
                return match *r.ast {
                    Ast::Assertion(_) | Ast::Empty(_) | Ast::Flags(_) | Ast::Repetition(_) => {
                        Err(Invalid::Regex)
                    }
                    _ => Ok(()),
                };
            }
            Ast::Literal(l) => {
                return match l.kind {
                    LiteralKind::HexBrace(_)
                    | LiteralKind::HexFixed(HexLiteralKind::UnicodeShort)
                    | LiteralKind::HexFixed(HexLiteralKind::UnicodeLong) => Err(Invalid::Regex),
                    _ => Ok(()),
                };
            }
            _ => None,
        };
        let rust_only = flags.is_some_and(|f| {
            f.items.iter().any(|i| {
                matches!(
                    i.kind,
                    FlagsItemKind::Flag(Flag::Unicode) | FlagsItemKind::Flag(Flag::CRLF)
                )
            })
        });
        if rust_only {
            Err(Invalid::Regex)
        } else {
            Ok(())
        }
    }

    fn visit_class_set_item_pre(
        &mut self,
        item: &regex_syntax::ast::ClassSetItem,
    ) -> Result<(), Invalid> {
        use regex_syntax::ast::{ClassSetItem, HexLiteralKind, LiteralKind};
        let literal = |l: &regex_syntax::ast::Literal| {
            matches!(
                l.kind,
                LiteralKind::HexBrace(_)
                    | LiteralKind::HexFixed(HexLiteralKind::UnicodeShort)
                    | LiteralKind::HexFixed(HexLiteralKind::UnicodeLong)
            )
        };
        let bad = match item {
            ClassSetItem::Literal(l) => literal(l),
            ClassSetItem::Range(r) => literal(&r.start) || literal(&r.end),
            _ => false,
        };
        if bad { Err(Invalid::Regex) } else { Ok(()) }
    }

    fn visit_class_set_binary_op_pre(
        &mut self,
        _op: &regex_syntax::ast::ClassSetBinaryOp,
    ) -> Result<(), Invalid> {
        Err(Invalid::Regex)
    }
}

/// Octavia's per-type L7 rule checks plus what the renderer needs: every value non-empty,
/// keys only where the rule type uses one (ignored otherwise, as Octavia does, except for the
/// SSL_CONN_HAS_CERT and SSL_VERIFY_RESULT rules, which refuse one).
pub fn l7_rule(
    kind: L7RuleType,
    compare: L7CompareType,
    key: Option<&str>,
    value: &str,
) -> Result<(), Invalid> {
    use L7CompareType as C;
    use L7RuleType as T;
    let rule = |m: String| Err(Invalid::Rule(m));
    let key_err = |e| Invalid::Key(Box::new(e));
    let value_err = |e| Invalid::Value(Box::new(e));
    if let Some(key) = key
        && key.chars().count() > MAX_STR
    {
        return Err(key_err(Invalid::TooLong { max: MAX_STR }));
    }
    if key.is_some_and(has_control) {
        return Err(key_err(Invalid::Control));
    }
    match kind {
        T::Header | T::Cookie => {
            let Some(key) = key else {
                return rule(format!("key must be provided for {kind} rules"));
            };
            fetch_key(key).map_err(key_err)?;
            match compare {
                C::Regex => regex(value),
                _ if kind == T::Header => header_value(value),
                _ => cookie_value(value),
            }
            .map_err(value_err)
        }
        T::HostName | T::Path | T::FileType => {
            if kind == T::FileType && !matches!(compare, C::Regex | C::EqualTo) {
                return rule(format!(
                    "Only REGEX and EQUAL_TO compare types are supported for {kind} rules"
                ));
            }
            if compare == C::Regex {
                regex(value)
            } else {
                header_value(value)
            }
            .map_err(value_err)
        }
        T::SslConnHasCert => {
            if key.is_some() {
                rule("SSL_CONN_HAS_CERT rules do not take a key".to_owned())
            } else if compare != C::EqualTo {
                rule("SSL_CONN_HAS_CERT rules only support EQUAL_TO".to_owned())
            } else if !value.eq_ignore_ascii_case("true") {
                rule("SSL_CONN_HAS_CERT rule value must be 'true'".to_owned())
            } else {
                Ok(())
            }
        }
        T::SslVerifyResult => {
            if key.is_some() {
                rule("SSL_VERIFY_RESULT rules do not take a key".to_owned())
            } else if compare != C::EqualTo {
                rule("SSL_VERIFY_RESULT rules only support EQUAL_TO".to_owned())
            } else if ssl_verify_result(value).is_none() {
                rule(
                    "SSL_VERIFY_RESULT rule value must be an integer from 0 to 4294967295"
                        .to_owned(),
                )
            } else {
                Ok(())
            }
        }
        T::SslDnField => {
            let Some(key) = key else {
                return rule("key must be provided for SSL_DN_FIELD rules".to_owned());
            };
            dn_field(key).map_err(key_err)?;
            if compare == C::Regex {
                regex(value)
            } else {
                header_value(value)
            }
            .map_err(value_err)
        }
    }
}

/// The number an SSL_VERIFY_RESULT rule compares with (`None` if the value is not one).
pub fn ssl_verify_result(value: &str) -> Option<u32> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok()
}

/// A health-monitor `url_path`: an RFC 3986 absolute path with optional query; no spaces,
/// scheme, host or fragment, no quotes other than `'`, no backslash.
pub fn url_path(s: &str) -> Result<(), Invalid> {
    bounded(s, MAX_URL)?;
    if !s.starts_with('/') {
        return Err(Invalid::UrlPath);
    }
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'%' {
            if i + 2 >= b.len() || !(b[i + 1].is_ascii_hexdigit() && b[i + 2].is_ascii_hexdigit()) {
                return Err(Invalid::UrlPath);
            }
            i += 3;
            continue;
        }
        if !(c.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/?".contains(&c)) {
            return Err(Invalid::UrlPath);
        }
        i += 1;
    }
    Ok(())
}

/// `expected_codes`: `200`, `200,202` (spaces around commas allowed) or an ascending range
/// `200-204`. Returns the codes, in order.
pub fn expected_codes(s: &str) -> Result<Vec<u16>, Invalid> {
    if s.len() > MAX_EXPECTED_CODES {
        return Err(Invalid::TooLong {
            max: MAX_EXPECTED_CODES,
        });
    }
    let code = |c: &str| -> Result<u16, Invalid> {
        if c.len() == 3 && c.bytes().all(|b| b.is_ascii_digit()) {
            c.parse().map_err(|_| Invalid::ExpectedCodes)
        } else {
            Err(Invalid::ExpectedCodes)
        }
    };
    if let Some((lo, hi)) = s.split_once('-') {
        let (lo, hi) = (code(lo)?, code(hi)?);
        if lo > hi {
            return Err(Invalid::ExpectedCodes);
        }
        return Ok((lo..=hi).collect());
    }
    s.split(',')
        .map(|c| code(c.trim_matches(' ')))
        .collect::<Result<_, _>>()
}

/// A DNS host name for a health check's `Host` header: labels of letters, digits and `-`
/// (not at either end), 1–63 each, at most 253 in all, no trailing dot.
pub fn domain_name(s: &str) -> Result<(), Invalid> {
    bounded(s, 253)?;
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if s.split('.').all(label_ok) {
        Ok(())
    } else {
        Err(Invalid::DomainName)
    }
}

/// A redirect URL or prefix: `http://` or `https://` (lower case, as the renderer and browsers
/// expect it), a host, and only visible ASCII characters other than `"` and `\`.
pub fn redirect_url(s: &str) -> Result<(), Invalid> {
    bounded(s, MAX_URL)?;
    if s.bytes()
        .any(|b| !(0x21..=0x7e).contains(&b) || b == b'"' || b == b'\\')
    {
        return Err(Invalid::RedirectUrl);
    }
    let Some(rest) = s
        .strip_prefix("http://")
        .or_else(|| s.strip_prefix("https://"))
    else {
        return Err(Invalid::RedirectUrl);
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit('@').next().unwrap_or("");
    if host.is_empty() || host.starts_with(':') {
        return Err(Invalid::RedirectUrl);
    }
    Ok(())
}

/// An OpenSSL cipher string: `^[A-Za-z0-9\-+!:@=_.]+$`, at most 2048.
pub fn ciphers(s: &str) -> Result<(), Invalid> {
    bounded(s, MAX_CIPHERS)?;
    let ok = s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-+!:@=_.".contains(c));
    if ok { Ok(()) } else { Err(Invalid::Ciphers) }
}

/// A health-monitor `delay` or `timeout` in seconds.
pub fn monitor_seconds(secs: u64) -> Result<(), Invalid> {
    if secs > u64::from(MAX_MONITOR_SECONDS) {
        return Err(Invalid::OutOfRange {
            min: 0,
            max: u64::from(MAX_MONITOR_SECONDS),
        });
    }
    Ok(())
}

/// The number of `allowed_cidrs` of a listener.
pub fn allowed_cidrs_count(n: usize) -> Result<(), Invalid> {
    if n > MAX_ALLOWED_CIDRS {
        return Err(Invalid::TooMany {
            max: MAX_ALLOWED_CIDRS,
        });
    }
    Ok(())
}

/// Octavia's default `[networking] reserved_ips`: the cloud metadata service.
pub const RESERVED_IPS: &[IpAddr] = &[IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254))];

/// A member or health-check address: not a reserved address, loopback, unspecified,
/// multicast or the IPv4 broadcast address. IPv4-mapped IPv6 addresses are judged as the
/// IPv4 address they carry (`::ffff:169.254.169.254` is the metadata service too).
pub fn member_address(address: IpAddr) -> Result<(), Invalid> {
    let a = address.to_canonical();
    let special = match a {
        IpAddr::V4(v4) => v4.is_broadcast(),
        IpAddr::V6(_) => false,
    };
    if special
        || a.is_loopback()
        || a.is_unspecified()
        || a.is_multicast()
        || RESERVED_IPS.contains(&a)
    {
        return Err(Invalid::ReservedAddress);
    }
    Ok(())
}

#[cfg(test)]
mod tests;
