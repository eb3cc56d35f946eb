use super::*;

/// Each of `ok` passes `f`, each of `bad` fails it.
#[track_caller]
fn check<T: std::fmt::Debug>(f: fn(&str) -> Result<T, Invalid>, ok: &[&str], bad: &[&str]) {
    for s in ok {
        assert!(f(s).is_ok(), "should accept {s:?}: {:?}", f(s));
    }
    for s in bad {
        assert!(f(s).is_err(), "should refuse {s:?}");
    }
}

#[test]
fn fetch_keys_refuse_what_haproxy_sample_arguments_cannot_take() {
    check(
        fetch_key,
        &["X-Foo", "JSESSIONID", "a!%&*+-.^_|~"],
        // Issue 11 §5: `#`, `$`, `'` and backtick passed the API and failed at render.
        &[
            "", "a#b", "a$b", "a'b", "a`b", "a b", "a,b", "a(b", "a\"b", "a\\b", "a\nb",
        ],
    );
    assert_eq!(
        fetch_key(&"a".repeat(256)),
        Err(Invalid::TooLong { max: 255 })
    );
}

#[test]
fn dn_fields_are_bounded_to_64() {
    check(
        dn_field,
        &["CN", "emailAddress", "x-1"],
        &["", "1CN", "C N", "C_N"],
    );
    assert!(dn_field(&"A".repeat(64)).is_ok());
    assert_eq!(dn_field(&"A".repeat(65)), Err(Invalid::TooLong { max: 64 }));
}

#[test]
fn header_and_cookie_values() {
    check(
        header_value,
        &["abc", "a=b;c", "\"a b c\"", r#""a \" b""#],
        &["", "a b", "a\nb", "\"a\nb\"", "\"a b", "\"a \" b", "é"],
    );
    check(
        cookie_value,
        &["abc", "a$b#c"],
        &["", "a b", "a;b", "a\"b", "a,b"],
    );
}

#[test]
fn regexes_must_compile_and_not_be_empty() {
    check(
        regex,
        &[
            "^/api/.*$",
            "a b",
            "x#y",
            r"\d+",
            r"\pL",
            "(?i)a",
            "(?s:.)",
            "[a&b]",
            r"\x41",
        ],
        // The last ones compile in Rust but PCRE2 (HAProxy) refuses them.
        &[
            "",
            "(",
            "a\nb",
            "[z-a]",
            "(?u)a",
            "(?i-u)a",
            "(?R)a",
            "[a--b]",
            "[a&&b]",
            "[a~~b]",
            r"\x{41}",
            r"\u0041",
            r"\U00000041",
            "^{2}",
            r"\b+",
            "$*",
            "a(?i){2}",
            ".*{2}",
            "a+{1,3}",
            r"[\x{41}-\x{5a}]",
        ],
    );
}

#[test]
fn url_paths() {
    check(
        url_path,
        &[
            "/",
            "/healthz",
            "/a/b?x=1&y=%20",
            "/~user/index.html",
            "/p'$(x)*;=@",
        ],
        &[
            "",
            "healthz",
            "/a b",
            "/a\nb",
            "http://x/",
            "/a#b",
            "/a\"b",
            "/a\\b",
            "/%zz",
            "/%2",
            "/%",
            "/é",
        ],
    );
}

#[test]
fn expected_codes_lists_and_ascending_ranges() {
    check(
        expected_codes,
        &["200", "200,202", "200, 202 ,204", "200-204", "200-200"],
        // Issue 11 §5: a descending range passed the API and failed at render.
        &[
            "",
            "20",
            "200-",
            "300-200",
            "200,201-204",
            "200\n",
            "abc",
            "200\t,201",
            "2OO",
        ],
    );
    assert_eq!(expected_codes("200-202").unwrap(), [200, 201, 202]);
    assert_eq!(expected_codes("200, 204").unwrap(), [200, 204]);
}

#[test]
fn domain_names_without_trailing_dot() {
    check(
        domain_name,
        &["example.com", "localhost", "a-b.c1"],
        // Issue 11 §5: a trailing dot passed the API and failed at render.
        &[
            "",
            "example.com.",
            "-a.com",
            "a-.com",
            "a..b",
            "a b",
            "a\nb",
            "a_b.com",
            ".",
        ],
    );
    assert!(domain_name(&format!("{}.com", "a".repeat(64))).is_err());
}

#[test]
fn redirect_urls_need_a_lower_case_scheme() {
    check(
        redirect_url,
        &[
            "http://example.com",
            "https://example.com/a?b=c",
            "https://user@host:8443/x",
        ],
        &[
            // Issue 11 §5: an upper-case scheme passed the API and failed at render.
            "HTTP://example.com",
            "Https://example.com",
            "example.com",
            "ftp://x",
            "http://",
            "http://:80/",
            "http://exa mple.com",
            "http://x/\nLocation: y",
            "http://x/\u{85}",
            "http://x/\"",
            "http://x/\\",
            "javascript:alert(1)",
        ],
    );
}

#[test]
fn cipher_strings() {
    check(
        ciphers,
        &["ECDHE-RSA-AES128-GCM-SHA256:!aNULL", "HIGH:+SHA@STRENGTH=1"],
        &["", "HIGH MEDIUM", "HIGH\nbind", "A#B", "A;B"],
    );
}

#[test]
fn l7_rules_per_type() {
    use L7CompareType as C;
    use L7RuleType as T;
    let ok = |t, c, k: Option<&str>, v: &str| {
        assert!(
            l7_rule(t, c, k, v).is_ok(),
            "{t} {c} {k:?} {v:?}: {:?}",
            l7_rule(t, c, k, v)
        )
    };
    let bad = |t, c, k: Option<&str>, v: &str| {
        assert!(l7_rule(t, c, k, v).is_err(), "{t} {c} {k:?} {v:?}")
    };
    ok(T::HostName, C::EqualTo, None, "www.example.com");
    bad(T::HostName, C::EqualTo, None, "www example");
    bad(T::Path, C::StartsWith, None, "/a\nhttp-request deny");
    ok(T::Path, C::Regex, None, "^/api/.*$");
    bad(T::Path, C::Regex, None, "(");
    // Issue 11 §5: an empty REGEX value passed the API and failed at render.
    bad(T::Path, C::Regex, None, "");
    bad(T::Header, C::Regex, Some("X-Foo"), "");
    bad(T::FileType, C::Contains, None, "jpg");
    ok(T::FileType, C::EqualTo, None, "jpg");
    ok(T::Header, C::EqualTo, Some("X-Foo"), "bar");
    bad(T::Header, C::EqualTo, None, "bar");
    bad(T::Header, C::EqualTo, Some("X Foo"), "bar");
    bad(T::Header, C::EqualTo, Some("X-Foo\r\n"), "bar");
    bad(T::Header, C::EqualTo, Some("X#Foo"), "bar");
    bad(T::Cookie, C::EqualTo, Some("a`b"), "bar");
    ok(T::Cookie, C::EqualTo, Some("session"), "abc");
    bad(T::Cookie, C::EqualTo, Some("session"), "a b");
    ok(T::SslConnHasCert, C::EqualTo, None, "True");
    bad(T::SslConnHasCert, C::EqualTo, None, "yes");
    bad(T::SslConnHasCert, C::EqualTo, Some("k"), "true");
    ok(T::SslVerifyResult, C::EqualTo, None, "0");
    bad(T::SslVerifyResult, C::EqualTo, None, "-1");
    bad(T::SslVerifyResult, C::EqualTo, None, "99999999999");
    ok(T::SslDnField, C::EqualTo, Some("CN"), "example");
    bad(T::SslDnField, C::EqualTo, Some("1CN"), "example");
    // Issue 11 §5: a DN field name over 64 characters passed the API and failed at render.
    bad(T::SslDnField, C::EqualTo, Some(&"A".repeat(65)), "example");
}

#[test]
fn monitor_seconds_fit_haproxy_timers() {
    assert!(monitor_seconds(0).is_ok());
    assert!(monitor_seconds(2_147_483).is_ok());
    // Issue 11 §5: 3,000,000 s overflowed HAProxy's millisecond timers.
    assert!(monitor_seconds(2_147_484).is_err());
    assert!(monitor_seconds(3_000_000).is_err());
}

#[test]
fn allowed_cidrs_are_bounded() {
    assert!(allowed_cidrs_count(64).is_ok());
    assert_eq!(allowed_cidrs_count(65), Err(Invalid::TooMany { max: 64 }));
}

#[test]
fn member_addresses_compare_parsed_addresses() {
    let ok = [
        "10.0.0.1",
        "198.18.0.5",
        "2001:db8::1",
        "::ffff:10.0.0.1",
        "169.254.1.1",
    ];
    let bad = [
        "169.254.169.254",
        // The metadata address in IPv4-mapped form passed a string comparison.
        "::ffff:169.254.169.254",
        "127.0.0.1",
        "127.1.2.3",
        "::1",
        "::ffff:127.0.0.1",
        "0.0.0.0",
        "::",
        "224.0.0.1",
        "ff02::1",
        "255.255.255.255",
    ];
    for a in ok {
        assert!(member_address(a.parse().unwrap()).is_ok(), "{a}");
    }
    for a in bad {
        assert_eq!(
            member_address(a.parse().unwrap()),
            Err(Invalid::ReservedAddress),
            "{a}"
        );
    }
}
