//! Allow-lists and escaping for every user-controlled string that reaches `haproxy.cfg`.
//!
//! The API validates these fields already; the renderer checks them again (defence in depth:
//! the desired state crosses a network and a version boundary). A value is first checked
//! against a narrow allow-list, then rendered through [`arg`], which escapes everything
//! HAProxy's line tokenizer treats specially, so even an allow-list mistake cannot split a line
//! or start a new directive.
//!
//! Tokenizer facts (HAProxy 2.6, checked with `http-request return ... string`): outside quotes
//! a backslash escapes `\`, space, `#`, `'` and `"`; `\x41`-style escapes exist (so a bare
//! backslash must be escaped); `${VAR}` is expanded only inside double quotes, so unquoted `$`
//! is literal. Control characters (newline above all) are never accepted.

/// Why a value was refused.
pub(crate) type Refusal = String;

/// Renders `s` as one HAProxy config token: escapes the tokenizer's special characters.
/// Callers must have rejected control characters and empty values (an empty token would
/// silently disappear).
pub(crate) fn arg(s: &str) -> String {
    debug_assert!(!s.is_empty() && !has_control(s));
    let mut out = String::with_capacity(s.len() + 4);
    for c in s.chars() {
        if matches!(c, '\\' | ' ' | '#' | '\'' | '"') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Escapes `%` for HAProxy log-format strings (redirect locations, header values), then
/// tokenizer-escapes the result.
pub(crate) fn log_format_arg(s: &str) -> String {
    arg(&s.replace('%', "%%"))
}

/// C0, DEL and C1 control characters (Octavia's 0x00–0x1f, 0x7f–0x9f).
pub(crate) fn has_control(s: &str) -> bool {
    s.chars()
        .any(|c| c.is_control() || ('\u{80}'..='\u{9f}').contains(&c))
}

fn check(ok: bool, what: &str) -> Result<(), Refusal> {
    if ok { Ok(()) } else { Err(what.to_owned()) }
}

fn len_between(s: &str, min: usize, max: usize) -> Result<(), Refusal> {
    check(
        (min..=max).contains(&s.len()),
        &format!("length must be {min}..={max} bytes"),
    )
}

/// Object ids become HAProxy proxy, server and ACL names: `[A-Za-z0-9_.-]`, 1–64 bytes,
/// starting with an alphanumeric character.
pub(crate) fn id(s: &str) -> Result<(), Refusal> {
    len_between(s, 1, 64)?;
    check(
        s.starts_with(|c: char| c.is_ascii_alphanumeric())
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')),
        "ids must match [A-Za-z0-9][A-Za-z0-9_.-]*",
    )
}

/// Peer names: like ids (they are VM names chosen by klb).
pub(crate) fn peer_name(s: &str) -> Result<(), Refusal> {
    id(s)
}

/// Header names and cookie names appear inside a sample fetch argument (`req.hdr(<key>)`,
/// `res.cook(<name>)`), whose own parser treats `,()'"\` and spaces specially: allow only RFC
/// 7230 token characters minus those HAProxy cares about.
pub(crate) fn fetch_key(s: &str) -> Result<(), Refusal> {
    len_between(s, 1, 255)?;
    check(
        s.chars().all(|c| {
            c.is_ascii_alphanumeric()
                || matches!(
                    c,
                    '!' | '%' | '&' | '*' | '+' | '-' | '.' | '^' | '_' | '|' | '~'
                )
        }),
        "must contain only A-Z a-z 0-9 ! % & * + - . ^ _ | ~",
    )
}

/// SSL DN field names (`ssl_c_s_dn(<key>)`): `^[a-zA-Z][A-Za-z0-9-]*$`.
pub(crate) fn dn_field(s: &str) -> Result<(), Refusal> {
    len_between(s, 1, 64)?;
    check(
        s.starts_with(|c: char| c.is_ascii_alphabetic())
            && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'),
        "must match [a-zA-Z][A-Za-z0-9-]*",
    )
}

/// L7 rule values: at most 255 bytes, no control characters. Spaces and quotes are allowed
/// (HAProxy regexes may need them) because [`arg`] escapes them.
pub(crate) fn l7_value(s: &str) -> Result<(), Refusal> {
    len_between(s, 1, 255)?;
    check(!has_control(s), "control characters are not allowed")
}

/// Health-check URL paths: an RFC 3986 path starting with `/` (unreserved, percent-encoded,
/// sub-delims, `:`, `@`, `/`), plus a query. No whitespace, no `#`.
pub(crate) fn url_path(s: &str) -> Result<(), Refusal> {
    len_between(s, 1, 2048)?;
    check(s.starts_with('/'), "must start with '/'")?;
    check(
        s.chars().all(|c| {
            c.is_ascii_alphanumeric()
                || matches!(
                    c,
                    '-' | '.'
                        | '_'
                        | '~'
                        | '%'
                        | '!'
                        | '$'
                        | '&'
                        | '\''
                        | '('
                        | ')'
                        | '*'
                        | '+'
                        | ','
                        | ';'
                        | '='
                        | ':'
                        | '@'
                        | '/'
                        | '?'
                )
        }),
        "must be an RFC 3986 path (no spaces, no '#')",
    )
}

/// Expected HTTP codes: `200`, `200,202` or `200-204`. Returns the regex for
/// `http-check expect rstatus`.
pub(crate) fn expected_codes(s: &str) -> Result<String, Refusal> {
    let bad = || format!("expected_codes must be like 200, 200,202 or 200-204, got {s:?}");
    let code = |c: &str| -> Result<u16, Refusal> {
        let c = c.trim();
        if c.len() == 3 && c.bytes().all(|b| b.is_ascii_digit()) {
            c.parse().map_err(|_| bad())
        } else {
            Err(bad())
        }
    };
    if s.len() > 64 {
        return Err(bad());
    }
    let codes: Vec<u16> = if let Some((lo, hi)) = s.split_once('-') {
        let (lo, hi) = (code(lo)?, code(hi)?);
        if lo > hi {
            return Err(bad());
        }
        (lo..=hi).collect()
    } else {
        s.split(',').map(code).collect::<Result<_, _>>()?
    };
    let alternatives: Vec<String> = codes.iter().map(u16::to_string).collect();
    Ok(format!("^({})$", alternatives.join("|")))
}

/// Host names (health-check `Host` header): letters, digits, `-` and `.`, labels ≤ 63.
pub(crate) fn domain_name(s: &str) -> Result<(), Refusal> {
    len_between(s, 1, 255)?;
    check(
        s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        }),
        "must be a DNS host name",
    )
}

/// Redirect URLs and prefixes: `http://` or `https://` followed by printable ASCII without
/// spaces (Octavia rejects 0x00–0x20 and 0x7f–0x9f).
pub(crate) fn redirect_url(s: &str) -> Result<(), Refusal> {
    len_between(s, 8, 2048)?;
    let rest = s
        .strip_prefix("http://")
        .or_else(|| s.strip_prefix("https://"))
        .ok_or_else(|| "must start with http:// or https://".to_owned())?;
    check(!rest.is_empty(), "must name a host")?;
    check(
        s.bytes().all(|b| (0x21..0x7f).contains(&b)),
        "only printable ASCII without spaces is allowed",
    )
}

/// OpenSSL cipher strings: `^[A-Za-z0-9\-+!:@=_.]+$`.
pub(crate) fn ciphers(s: &str) -> Result<(), Refusal> {
    len_between(s, 1, 2048)?;
    check(
        s.chars().all(|c| {
            c.is_ascii_alphanumeric() || matches!(c, '-' | '+' | '!' | ':' | '@' | '=' | '_' | '.')
        }),
        "cipher strings may contain only A-Z a-z 0-9 - + ! : @ = _ .",
    )
}

/// Shortens a refused value for an error message (the value itself is user input, shown
/// escaped with `{:?}` so it cannot forge log lines).
pub(crate) fn shown(s: &str) -> String {
    let mut out: String = s.chars().take(64).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    format!("{out:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arg_escapes_tokenizer_specials() {
        assert_eq!(arg(r#"a b\c#d'e"f$g"#), r#"a\ b\\c\#d\'e\"f$g"#);
        assert_eq!(log_format_arg("http://x/%[src]"), "http://x/%%[src]");
    }

    #[test]
    fn expected_codes_become_regexes() {
        assert_eq!(expected_codes("200").unwrap(), "^(200)$");
        assert_eq!(expected_codes("200, 202").unwrap(), "^(200|202)$");
        assert_eq!(expected_codes("200-203").unwrap(), "^(200|201|202|203)$");
        assert!(expected_codes("200-1000").is_err());
        assert!(expected_codes("2OO").is_err());
        assert!(expected_codes("300-200").is_err());
    }

    #[test]
    fn allow_lists_refuse_injection_characters() {
        assert!(fetch_key("X-Custom").is_ok());
        for bad in ["a b", "a)", "a,b", "a\nb", "", "a\"", "a'"] {
            assert!(fetch_key(bad).is_err(), "{bad:?}");
        }
        assert!(url_path("/health?x=1").is_ok());
        for bad in ["health", "/a b", "/a#b", "/a\n", "/é"] {
            assert!(url_path(bad).is_err(), "{bad:?}");
        }
        assert!(redirect_url("https://example.com/a?b=c").is_ok());
        for bad in ["ftp://x", "https://", "https://a b", "https://a\u{85}"] {
            assert!(redirect_url(bad).is_err(), "{bad:?}");
        }
        assert!(l7_value("a\u{9c}b").is_err());
        assert!(id("7c0f-aa_b.c").is_ok());
        assert!(id("-x").is_err());
        assert!(id("a:b").is_err());
    }
}
