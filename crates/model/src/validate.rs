//! Allow-lists for every user string that can reach a rendered config (octavia-api.md §13.6).
//! Each function returns `Err(reason)` with a sentence the API puts in its fault string.
//!
//! Rule of thumb: control characters (including CR/LF and DEL) are rejected everywhere a
//! value can reach haproxy.cfg, even where Octavia's own regexes would let `\s` through.
//! Characters that are legal for HTTP but special to HAProxy's config parser (`#`, `'`, `$`)
//! are allowed where Octavia allows them; the renderer escapes them.

use std::sync::LazyLock;

use regex::Regex;

use crate::enums::{L7CompareType, L7RuleType, ListenerProtocol};

/// Maximum length of names, descriptions, refs and tags.
pub const MAX_STR: usize = 255;
/// Maximum length of a cipher string.
pub const MAX_CIPHERS: usize = 2048;
/// Maximum number of rules per L7 policy.
pub const MAX_L7_RULES_PER_POLICY: usize = 50;

fn re(pattern: &str) -> Regex {
    Regex::new(pattern).expect("static regex")
}

static EXPECTED_CODES: LazyLock<Regex> =
    LazyLock::new(|| re(r"^(?:[0-9]{3}(?: *, *[0-9]{3})*|[0-9]{3}-[0-9]{3})$"));
static HEADER_NAME: LazyLock<Regex> = LazyLock::new(|| re(r"^[a-zA-Z0-9!#$%&'*+\-.^_`|~]+$"));
static HEADER_VALUE: LazyLock<Regex> = LazyLock::new(|| re(r"^[\x21-\x7e]+$"));
static QUOTED_HEADER_VALUE: LazyLock<Regex> =
    LazyLock::new(|| re(r#"^"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\[\x20-\x7e])*"$"#));
static COOKIE_VALUE: LazyLock<Regex> =
    LazyLock::new(|| re(r"^[a-zA-Z0-9!#$%&'()*+\-./:<=>?@\[\]^_`{|}~]+$"));
static DN_FIELD: LazyLock<Regex> = LazyLock::new(|| re(r"^[a-zA-Z][A-Za-z0-9-]*$"));
static CIPHERS: LazyLock<Regex> = LazyLock::new(|| re(r"^[A-Za-z0-9\-+!:@=_.]+$"));
static HOST_LABEL: LazyLock<Regex> =
    LazyLock::new(|| re(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$"));
static URL_PATH: LazyLock<Regex> =
    LazyLock::new(|| re(r"^/(?:[A-Za-z0-9\-._~!$&()*+,;=:@/?]|%[0-9A-Fa-f]{2})*$"));

/// True if `s` contains a C0/C1 control character or DEL.
pub fn has_control(s: &str) -> bool {
    s.chars()
        .any(|c| c.is_control() || ('\u{7f}'..='\u{9f}').contains(&c))
}

/// Free text (names, descriptions, tags): length, plus no control characters (NUL, CR, LF,
/// TAB, DEL, C1) so log lines and CLI tables stay one line each and cannot be forged. Never
/// rendered into configs.
pub fn free_text(s: &str, max: usize) -> Result<(), String> {
    if s.chars().count() > max {
        return Err(format!(
            "Value should have a maximum character requirement of {max}"
        ));
    }
    if has_control(s) {
        return Err("Value must not contain control characters".to_owned());
    }
    Ok(())
}

/// A health-monitor `url_path`: an RFC 3986 absolute path (with optional query), no spaces,
/// no scheme, host or fragment, no quotes or backslashes.
pub fn url_path(s: &str) -> Result<(), String> {
    if s.len() > MAX_STR * 8 || !URL_PATH.is_match(s) {
        return Err(format!("Not a valid URLPath: {}", printable(s)));
    }
    Ok(())
}

/// `expected_codes`: `200`, `200,202` or `200-204` (list or one range, never mixed).
pub fn expected_codes(s: &str) -> Result<(), String> {
    if !EXPECTED_CODES.is_match(s) {
        return Err(
            r"Value should match the pattern ^(\d{3}(\s*,\s*\d{3})*)$|^(\d{3}-\d{3})$".to_owned(),
        );
    }
    Ok(())
}

/// An HTTP header name (RFC 7230 token).
pub fn header_name(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > MAX_STR || !HEADER_NAME.is_match(s) {
        return Err("key is not a valid HTTP header name".to_owned());
    }
    Ok(())
}

/// An HTTP header value: visible ASCII without spaces, or a double-quoted string that may
/// contain spaces.
pub fn header_value(s: &str) -> Result<(), String> {
    if s.len() > MAX_STR || !(HEADER_VALUE.is_match(s) || QUOTED_HEADER_VALUE.is_match(s)) {
        return Err("value must be a valid HTTP header value (visible characters, no spaces unless double-quoted)".to_owned());
    }
    Ok(())
}

/// A session persistence `cookie_name` (RFC 6265 token: no whitespace, separators or controls).
pub fn cookie_name(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > MAX_STR || !HEADER_NAME.is_match(s) {
        return Err(format!(
            "{} is not a valid option for cookie_name",
            printable(s)
        ));
    }
    Ok(())
}

/// A cookie value in an L7 COOKIE rule.
pub fn cookie_value(s: &str) -> Result<(), String> {
    if s.len() > MAX_STR || !COOKIE_VALUE.is_match(s) {
        return Err("value must be a valid cookie value".to_owned());
    }
    Ok(())
}

/// A redirect URL or prefix: `http` or `https` scheme, a host, and only visible ASCII
/// characters other than `"` and `\`.
pub fn redirect_url(s: &str) -> Result<(), String> {
    let bad = || Err(format!("Not a valid URL: {}", printable(s)));
    if s.len() > MAX_STR * 8
        || s.bytes()
            .any(|b| !(0x21..=0x7e).contains(&b) || b == b'"' || b == b'\\')
    {
        return bad();
    }
    let rest = match s.split_once("://") {
        Some((scheme, rest))
            if scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https") =>
        {
            rest
        }
        _ => return bad(),
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit('@').next().unwrap_or("");
    if host.is_empty() || host.starts_with(':') {
        return bad();
    }
    Ok(())
}

/// An OpenSSL cipher string.
pub fn tls_ciphers(s: &str) -> Result<(), String> {
    if s.len() > MAX_CIPHERS {
        return Err(format!(
            "Value should have a maximum character requirement of {MAX_CIPHERS}"
        ));
    }
    if !CIPHERS.is_match(s) {
        return Err(format!(
            "{} is not a valid option for tls_ciphers",
            printable(s)
        ));
    }
    Ok(())
}

/// A DNS host name for `domain_name`.
pub fn domain_name(s: &str) -> Result<(), String> {
    let trimmed = s.strip_suffix('.').unwrap_or(s);
    if s.is_empty() || s.len() > MAX_STR || trimmed.split('.').any(|l| !HOST_LABEL.is_match(l)) {
        return Err(format!("{} is not a valid domain name", printable(s)));
    }
    Ok(())
}

/// A TLS container reference (Barbican URL or other opaque ref): bounded, no controls or
/// whitespace.
pub fn container_ref(s: &str) -> Result<(), String> {
    if s.chars().count() > MAX_STR {
        return Err(format!(
            "Value should have a maximum character requirement of {MAX_STR}"
        ));
    }
    if s.is_empty() || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "{} is not a valid container reference",
            printable(s)
        ));
    }
    Ok(())
}

/// Keys accepted in `insert_headers` for a listener protocol.
pub fn insert_header_key(protocol: ListenerProtocol, key: &str) -> Result<(), String> {
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
        return Err(format!(
            "insert-headers is not a valid option for a {protocol} protocol listener."
        ));
    }
    if ALWAYS.contains(&key)
        || (protocol == ListenerProtocol::TerminatedHttps && TLS.contains(&key))
    {
        Ok(())
    } else {
        Err(format!(
            "{} is not a valid option for insert_headers",
            printable(key)
        ))
    }
}

/// An `insert_headers` value: only compared to "true" by the renderer, but still bounded and
/// free of control characters.
pub fn insert_header_value(value: &str) -> Result<(), String> {
    if value.len() > MAX_STR || has_control(value) {
        return Err(format!(
            "{} is not a valid option for insert_headers",
            printable(value)
        ));
    }
    Ok(())
}

/// Octavia's `l7rule_data` checks for one rule. The error is the `<msg>` of
/// `Error parsing L7Rule: Invalid L7 Rule: <msg>`... callers add the prefix.
pub fn l7_rule(
    kind: L7RuleType,
    compare: L7CompareType,
    key: Option<&str>,
    value: &str,
) -> Result<(), String> {
    use L7CompareType as C;
    use L7RuleType as T;
    if value.len() > MAX_STR || has_control(value) {
        return Err("value may not contain control characters or line breaks".to_owned());
    }
    if let Some(key) = key
        && (key.len() > MAX_STR || has_control(key))
    {
        return Err("key may not contain control characters or line breaks".to_owned());
    }
    let check_regex = |v: &str| {
        Regex::new(v)
            .map(|_| ())
            .map_err(|_| format!("{} is not a valid regular expression", printable(v)))
    };
    match kind {
        T::Header | T::Cookie => {
            let Some(key) = key else {
                return Err(format!("key must be provided for {kind} rules"));
            };
            header_name(key)
                .map_err(|_| format!("{kind} rule key is not a valid header or cookie name"))?;
            if compare == C::Regex {
                check_regex(value)?;
            } else if kind == T::Header {
                header_value(value)?;
            } else {
                cookie_value(value)?;
            }
        }
        T::HostName | T::Path | T::FileType => {
            if kind == T::FileType && !matches!(compare, C::Regex | C::EqualTo) {
                return Err(format!(
                    "Only REGEX and EQUAL_TO compare types are supported for {kind} rules"
                ));
            }
            if compare == C::Regex {
                check_regex(value)?;
            } else {
                header_value(value)?;
            }
        }
        T::SslConnHasCert => {
            if key.is_some() {
                return Err("SSL_CONN_HAS_CERT rules do not take a key".to_owned());
            }
            if compare != C::EqualTo {
                return Err("SSL_CONN_HAS_CERT rules only support EQUAL_TO".to_owned());
            }
            if !value.eq_ignore_ascii_case("true") {
                return Err("SSL_CONN_HAS_CERT rule value must be 'true'".to_owned());
            }
        }
        T::SslVerifyResult => {
            if key.is_some() {
                return Err("SSL_VERIFY_RESULT rules do not take a key".to_owned());
            }
            if compare != C::EqualTo {
                return Err("SSL_VERIFY_RESULT rules only support EQUAL_TO".to_owned());
            }
            if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
                return Err(
                    "SSL_VERIFY_RESULT rule value must be a non-negative integer".to_owned(),
                );
            }
        }
        T::SslDnField => {
            let Some(key) = key else {
                return Err("key must be provided for SSL_DN_FIELD rules".to_owned());
            };
            if !DN_FIELD.is_match(key) {
                return Err("SSL_DN_FIELD rule key is not a valid DN field name".to_owned());
            }
            if compare == C::Regex {
                check_regex(value)?;
            } else {
                header_value(value)?;
            }
        }
    }
    Ok(())
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

    fn check(f: fn(&str) -> Result<(), String>, ok: &[&str], bad: &[&str]) {
        for s in ok {
            assert!(f(s).is_ok(), "should accept {s:?}: {:?}", f(s));
        }
        for s in bad {
            assert!(f(s).is_err(), "should reject {s:?}");
        }
    }

    #[test]
    fn url_paths() {
        check(
            url_path,
            &["/", "/healthz", "/a/b?x=1&y=%20", "/~user/index.html"],
            &[
                "",
                "healthz",
                "/a b",
                "/a\nb",
                "/a\rb",
                "http://x/",
                "/a#b",
                "/a\"b",
                "/a\\b",
                "/%zz",
                "/a\tb",
            ],
        );
    }

    #[test]
    fn expected_codes_list_or_range() {
        check(
            expected_codes,
            &["200", "200,202", "200, 202 ,204", "200-204"],
            &[
                "",
                "20",
                "200-",
                "200,201-204",
                "200\n",
                "200,\n201",
                "abc",
                "200\t,201",
            ],
        );
    }

    #[test]
    fn cookie_names() {
        check(
            cookie_name,
            &["JSESSIONID", "my_cookie-1", "a.b"],
            &[
                "", "a b", "a;b", "a,b", "a\\b", "a=b", "a\nb", "a\"b", "a:b", "a/b", "(x)",
            ],
        );
    }

    #[test]
    fn header_names_and_values() {
        check(
            header_name,
            &["X-Foo", "a!#$%&'*+-.^_`|~"],
            &["", "X Foo", "X:Foo", "X\nFoo", "X(Foo)"],
        );
        check(
            header_value,
            &["abc", "\"a b c\"", "a=b;c"],
            &["a b", "a\nb", "\"a\nb\"", ""],
        );
    }

    #[test]
    fn redirect_urls() {
        check(
            redirect_url,
            &[
                "http://example.com",
                "https://example.com/a?b=c",
                "https://user@host:8443/x",
            ],
            &[
                "example.com",
                "ftp://x",
                "http://",
                "http://exa mple.com",
                "http://x/\nLocation: y",
                "http://x/\u{85}",
                "http://x/\"",
                "javascript:alert(1)",
            ],
        );
    }

    #[test]
    fn ciphers() {
        check(
            tls_ciphers,
            &["ECDHE-RSA-AES128-GCM-SHA256:!aNULL", "HIGH:+SHA@STRENGTH=1"],
            &["", "HIGH MEDIUM", "HIGH\nbind", "A#B", "A;B"],
        );
    }

    #[test]
    fn domain_names() {
        check(
            domain_name,
            &["example.com", "a-b.example.", "localhost"],
            &["", "-a.com", "a..b", "a b", "a\nb"],
        );
    }

    #[test]
    fn l7_rules_per_type() {
        use L7CompareType as C;
        use L7RuleType as T;
        let ok = |t, c, k: Option<&str>, v: &str| {
            assert!(l7_rule(t, c, k, v).is_ok(), "{t} {c} {k:?} {v:?}")
        };
        let bad = |t, c, k: Option<&str>, v: &str| {
            assert!(l7_rule(t, c, k, v).is_err(), "{t} {c} {k:?} {v:?}")
        };
        ok(T::HostName, C::EqualTo, None, "www.example.com");
        bad(T::HostName, C::EqualTo, None, "www example");
        bad(T::Path, C::StartsWith, None, "/a\nhttp-request deny");
        ok(T::Path, C::Regex, None, "^/api/.*$");
        bad(T::Path, C::Regex, None, "(");
        bad(T::FileType, C::Contains, None, "jpg");
        ok(T::FileType, C::EqualTo, None, "jpg");
        ok(T::Header, C::EqualTo, Some("X-Foo"), "bar");
        bad(T::Header, C::EqualTo, None, "bar");
        bad(T::Header, C::EqualTo, Some("X Foo"), "bar");
        bad(T::Header, C::EqualTo, Some("X-Foo\r\n"), "bar");
        ok(T::Cookie, C::EqualTo, Some("session"), "abc");
        bad(T::Cookie, C::EqualTo, Some("session"), "a b");
        ok(T::SslConnHasCert, C::EqualTo, None, "True");
        bad(T::SslConnHasCert, C::EqualTo, None, "yes");
        bad(T::SslConnHasCert, C::EqualTo, Some("k"), "true");
        ok(T::SslVerifyResult, C::EqualTo, None, "0");
        bad(T::SslVerifyResult, C::EqualTo, None, "-1");
        ok(T::SslDnField, C::EqualTo, Some("CN"), "example");
        bad(T::SslDnField, C::EqualTo, Some("1CN"), "example");
    }

    #[test]
    fn insert_headers() {
        assert!(insert_header_key(ListenerProtocol::Http, "X-Forwarded-For").is_ok());
        assert!(insert_header_key(ListenerProtocol::Http, "X-SSL-Client-DN").is_err());
        assert!(insert_header_key(ListenerProtocol::TerminatedHttps, "X-SSL-Client-DN").is_ok());
        assert!(insert_header_key(ListenerProtocol::Tcp, "X-Forwarded-For").is_err());
        assert!(insert_header_value("true\nfoo").is_err());
    }
}
