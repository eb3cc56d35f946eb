//! Escaping for every user-controlled string that reaches `haproxy.cfg`, and the allow-lists
//! of values only the agent sees (ids, peer names).
//!
//! User values are checked by `klb_proto::check`, the same functions the API runs (so the API
//! never accepts what the renderer refuses); the renderer runs them again (defence in depth:
//! the desired state crosses a network and a version boundary). A value is then rendered
//! through [`arg`], which escapes everything HAProxy's line tokenizer treats specially, so
//! even an allow-list mistake cannot split a line or start a new directive.
//!
//! Tokenizer facts (HAProxy 2.6, checked with `http-request return ... string`): outside quotes
//! a backslash escapes `\`, space, `#`, `'` and `"`; `\x41`-style escapes exist (so a bare
//! backslash must be escaped); `${VAR}` is expanded only inside double quotes, so unquoted `$`
//! is literal. Control characters (newline above all) are never accepted.

use std::fmt::Write as _;

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

/// A PCRE for `http-check expect rstatus` matching exactly `codes` (3-digit, ascending, as
/// `klb_proto::check::expected_codes` returns them). Three or more codes of one decade become
/// a character class, so even `100-999` stays far below HAProxy's 2048-byte line limit.
pub(crate) fn status_regex(codes: &[u16]) -> String {
    let mut alternatives = Vec::new();
    let mut i = 0;
    while i < codes.len() {
        let decade = codes[i] / 10;
        let mut digits = Vec::new();
        while i < codes.len() && codes[i] / 10 == decade {
            digits.push(codes[i] % 10);
            i += 1;
        }
        if digits.len() < 3 {
            alternatives.extend(digits.iter().map(|d| format!("{decade}{d}")));
            continue;
        }
        let mut class = String::new();
        let mut j = 0;
        while j < digits.len() {
            let start = digits[j];
            while j + 1 < digits.len() && digits[j + 1] == digits[j] + 1 {
                j += 1;
            }
            match digits[j] - start {
                0 => write!(class, "{start}"),
                1 => write!(class, "{start}{}", digits[j]),
                _ => write!(class, "{start}-{}", digits[j]),
            }
            .expect("write to String");
            j += 1;
        }
        alternatives.push(format!("{decade}[{class}]"));
    }
    format!("^({})$", alternatives.join("|"))
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
    fn expected_codes_become_compact_regexes() {
        let check = |codes: &str, want: &str| {
            let codes = klb_proto::check::expected_codes(codes).unwrap();
            assert_eq!(status_regex(&codes), want);
        };
        check("200", "^(200)$");
        check("200, 202", "^(200|202)$");
        check("200-203", "^(20[0-3])$");
        check("199-201", "^(199|200|201)$");
        check("200,202,203,204,209", "^(20[02-49])$");
        let wide = klb_proto::check::expected_codes("100-999").unwrap();
        let r = status_regex(&wide);
        assert_eq!(r.len(), 90 * 7 + 89 + 4, "{r}");
        assert!(r.starts_with("^(10[0-9]|11[0-9]|"), "{r}");
    }

    #[test]
    fn ids_are_restricted() {
        assert!(id("7c0f-aa_b.c").is_ok());
        assert!(id("-x").is_err());
        assert!(id("a:b").is_err());
    }
}
