//! Redaction of credentials in text: the one function every edge passes a
//! URL, an error message or a log before it reaches an API answer, a log
//! line, an audit entry or a run log.
//!
//! [`redact`] replaces, with `***`:
//! - the userinfo of every URL (`https://deploy:PASSWORD@host/x.git` →
//!   `https://***@host/x.git`; a token used as the user name goes too);
//! - the value of every secret-looking query parameter (`?token=`,
//!   `access_token`, `password`, `key`, `secret`, `signature`, … — any name
//!   that is one of those or ends in `token`, `password`, `secret`, `key` or
//!   `signature`, case and `-`/`_` ignored);
//! - the value of `Authorization`, `Proxy-Authorization`, `X-API-Key` and
//!   `X-Auth-Token` headers, written `Name: value` or `"name": "value"`,
//!   keeping an authentication scheme word (`Authorization: Bearer ***`).
//!
//! It is pure, never panics, and is idempotent (redacting twice changes
//! nothing more). It must not try to recognise secrets by their look (a bare
//! token in free text stays): it only knows where credentials are *put*.

use std::borrow::Cow;

/// What a redacted credential is replaced with.
pub const MASK: &str = "***";

/// `text` with every credential it can place (see the module docs) replaced
/// by [`MASK`]. Borrowed when nothing was found.
pub fn redact(text: &str) -> Cow<'_, str> {
    let mut out = Cow::Borrowed(text);
    for pass in [userinfo as fn(&str) -> Option<String>, query, headers] {
        if let Some(changed) = pass(&out) {
            out = Cow::Owned(changed);
        }
    }
    out
}

/// Characters that end a URL's authority, a query value or a header value
/// in running text.
fn ends_token(c: char) -> bool {
    c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | '`')
}

/// Replaces the userinfo of `scheme://userinfo@host` URLs.
fn userinfo(text: &str) -> Option<String> {
    let mut out = String::new();
    let mut copied = 0;
    let mut search = 0;
    while let Some(found) = text.get(search..).and_then(|rest| rest.find("://")) {
        let sep = search.saturating_add(found);
        let start = sep.saturating_add(3);
        search = start;
        let scheme_ok = text
            .get(..sep)
            .and_then(|before| before.chars().next_back())
            .is_some_and(|c| c.is_ascii_alphanumeric());
        if !scheme_ok {
            continue;
        }
        let rest = text.get(start..).unwrap_or_default();
        let authority_len = rest
            .find(|c: char| ends_token(c) || matches!(c, '/' | '?' | '#'))
            .unwrap_or(rest.len());
        let authority = rest.get(..authority_len).unwrap_or_default();
        let Some(at) = authority.rfind('@') else {
            continue;
        };
        if at == 0 || authority.get(..at) == Some(MASK) {
            continue;
        }
        out.push_str(text.get(copied..start).unwrap_or_default());
        out.push_str(MASK);
        copied = start.saturating_add(at);
        search = copied;
    }
    finish(out, text, copied)
}

/// Whether a query parameter (or header) name holds a secret.
fn secret_name(name: &str) -> bool {
    let name: String = name
        .chars()
        .filter(|c| !matches!(c, '-' | '_' | '.'))
        .map(|c| c.to_ascii_lowercase())
        .collect();
    const EXACT: &[&str] = &[
        "token",
        "password",
        "passwd",
        "pwd",
        "pass",
        "key",
        "secret",
        "auth",
        "sig",
        "signature",
        "credential",
        "credentials",
        "code",
        "session",
        "sessionid",
    ];
    const SUFFIXES: &[&str] = &[
        "token",
        "password",
        "secret",
        "key",
        "signature",
        "credential",
    ];
    EXACT.contains(&name.as_str()) || SUFFIXES.iter().any(|s| name.ends_with(s))
}

/// Replaces the values of secret query parameters (`?token=…`, `&key=…`).
fn query(text: &str) -> Option<String> {
    let mut out = String::new();
    let mut copied = 0;
    let mut search = 0;
    while let Some(found) = text
        .get(search..)
        .and_then(|rest| rest.find(['?', '&', ';']))
    {
        let name_start = search.saturating_add(found).saturating_add(1);
        search = name_start;
        let rest = text.get(name_start..).unwrap_or_default();
        let name_len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
            .unwrap_or(rest.len());
        if name_len == 0 || !rest.get(name_len..).is_some_and(|r| r.starts_with('=')) {
            continue;
        }
        if !secret_name(rest.get(..name_len).unwrap_or_default()) {
            continue;
        }
        let value_start = name_start.saturating_add(name_len).saturating_add(1);
        let value = text.get(value_start..).unwrap_or_default();
        let value_len = value
            .find(|c: char| ends_token(c) || matches!(c, '&' | '#' | ';'))
            .unwrap_or(value.len());
        search = value_start.saturating_add(value_len);
        if value_len == 0 || value.get(..value_len) == Some(MASK) {
            continue;
        }
        out.push_str(text.get(copied..value_start).unwrap_or_default());
        out.push_str(MASK);
        copied = search;
    }
    finish(out, text, copied)
}

/// Header names whose values are credentials (lower case).
const SECRET_HEADERS: &[&str] = &[
    "proxy-authorization",
    "authorization",
    "x-api-key",
    "x-auth-token",
];

/// Replaces the values of credential headers (`Authorization: Bearer …`).
fn headers(text: &str) -> Option<String> {
    let lower = text.to_ascii_lowercase();
    let mut out = String::new();
    let mut copied = 0;
    let mut search = 0;
    // The earliest header name from `search` on.
    let next_name = |search: usize| {
        SECRET_HEADERS
            .iter()
            .filter_map(|name| {
                lower
                    .get(search..)
                    .and_then(|rest| rest.find(name))
                    .map(|at| (search.saturating_add(at), *name))
            })
            .min_by_key(|(at, name)| (*at, std::cmp::Reverse(name.len())))
    };
    while let Some((found, name)) = next_name(search) {
        let after_name = found.saturating_add(name.len());
        search = after_name;
        // A name inside a longer word (`my-authorization: x`) counts too:
        // redacting a little more is the safe side.
        let rest = text.get(after_name..).unwrap_or_default();
        let mut chars = rest.char_indices().peekable();
        // `name`, optional closing quote, spaces, `:` or `=`, spaces, quotes.
        while chars.next_if(|(_, c)| matches!(c, '"' | '\'')).is_some() {}
        while chars.next_if(|(_, c)| *c == ' ' || *c == '\t').is_some() {}
        if chars.next_if(|(_, c)| matches!(c, ':' | '=')).is_none() {
            continue;
        }
        while chars
            .next_if(|(_, c)| matches!(c, ' ' | '\t' | '"' | '\''))
            .is_some()
        {}
        let Some(&(value_at, _)) = chars.peek() else {
            continue;
        };
        let value = rest.get(value_at..).unwrap_or_default();
        let value_len = value
            .find(['\r', '\n', '"', '\'', ',', ';'])
            .unwrap_or(value.len());
        let value = value.get(..value_len).unwrap_or_default();
        // Keep an authentication scheme (`Bearer`, `Basic`, `token`, ...).
        let scheme_len = match value.split_once(' ') {
            Some((scheme, _))
                if !scheme.is_empty()
                    && scheme.len() <= 24
                    && scheme
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-') =>
            {
                scheme.len().saturating_add(1)
            }
            _ => 0,
        };
        let secret = value.get(scheme_len..).unwrap_or_default().trim_end();
        let secret_start = after_name
            .saturating_add(value_at)
            .saturating_add(scheme_len);
        search = after_name
            .saturating_add(value_at)
            .saturating_add(value_len);
        if secret.is_empty() || secret == MASK {
            continue;
        }
        out.push_str(text.get(copied..secret_start).unwrap_or_default());
        out.push_str(MASK);
        copied = secret_start.saturating_add(secret.len());
    }
    finish(out, text, copied)
}

fn finish(mut out: String, text: &str, copied: usize) -> Option<String> {
    if copied == 0 {
        return None;
    }
    out.push_str(text.get(copied..).unwrap_or_default());
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn url_userinfo_is_replaced() {
        for (text, expected) in [
            (
                "http://deploy:SECRET@127.0.0.1:9/x.git",
                "http://***@127.0.0.1:9/x.git",
            ),
            (
                "fetching branch `main` from https://ghp_TOKEN@github.com/o/r: 401",
                "fetching branch `main` from https://***@github.com/o/r: 401",
            ),
            (
                "ssh://git:pw@host:22/repo and https://a:b@c/d",
                "ssh://***@host:22/repo and https://***@c/d",
            ),
            // An `@` after the authority is no userinfo.
            ("https://host/a@b", "https://host/a@b"),
            ("git@github.com:o/r.git", "git@github.com:o/r.git"),
            ("https://user:p%40ss@host", "https://***@host"),
            ("no url here", "no url here"),
            ("://x@y", "://x@y"),
        ] {
            assert_eq!(redact(text), expected, "{text}");
        }
    }

    #[test]
    fn secret_query_parameters_are_replaced() {
        for (text, expected) in [
            (
                "https://h/x?token=abc&ref=main",
                "https://h/x?token=***&ref=main",
            ),
            (
                "GET /a?ref=1&access_token=zzz#frag",
                "GET /a?ref=1&access_token=***#frag",
            ),
            ("u?password=hunter2 next", "u?password=*** next"),
            ("u?API-Key=k1&Signature=s", "u?API-Key=***&Signature=***"),
            ("u?X-Amz-Security-Token=t", "u?X-Amz-Security-Token=***"),
            ("u?keyboard=1&monkey=2", "u?keyboard=1&monkey=***"),
            ("u?ref=main&page=2", "u?ref=main&page=2"),
            ("u?token=", "u?token="),
        ] {
            assert_eq!(redact(text), expected, "{text}");
        }
    }

    #[test]
    fn credential_headers_are_replaced_keeping_the_scheme() {
        for (text, expected) in [
            ("Authorization: Bearer abc.def", "Authorization: Bearer ***"),
            (
                "authorization: Basic ZGVwbG95OnB3\r\nHost: x",
                "authorization: Basic ***\r\nHost: x",
            ),
            (
                r#"{"authorization": "Bearer s3cr3t", "host": "x"}"#,
                r#"{"authorization": "Bearer ***", "host": "x"}"#,
            ),
            ("X-API-Key: k-123\nnext", "X-API-Key: ***\nnext"),
            (
                "proxy-authorization=Digest abc",
                "proxy-authorization=Digest ***",
            ),
            ("x-auth-token: tok", "x-auth-token: ***"),
            ("the authorization failed", "the authorization failed"),
            ("my-authorization: x", "my-authorization: ***"),
        ] {
            assert_eq!(redact(text), expected, "{text}");
        }
    }

    #[test]
    fn all_three_in_one_text() {
        let text = "curl -H 'Authorization: Bearer T1' https://u:P2@h/p?token=T3";
        let out = redact(text);
        for secret in ["T1", "P2", "T3"] {
            assert!(!out.contains(secret), "{out}");
        }
        assert_eq!(
            out,
            "curl -H 'Authorization: Bearer ***' https://***@h/p?token=***"
        );
    }

    fn secret() -> impl Strategy<Value = String> {
        // Upper case and digits only: the surrounding text below is lower case.
        "[A-Z0-9]{6,40}"
    }

    fn filler() -> impl Strategy<Value = String> {
        "[a-z ,.:/\n]{0,30}"
    }

    proptest! {
        #[test]
        fn a_secret_placed_anywhere_a_credential_goes_never_survives(
            user in "[a-z]{0,8}",
            secret in secret(),
            before in filler(),
            after in filler(),
            host in "[a-z]{1,10}(:[0-9]{1,5})?",
            param in prop::sample::select(vec![
                "token", "access_token", "password", "key", "api_key", "client_secret",
                "X-Amz-Signature", "private-token",
            ]),
            header in prop::sample::select(vec![
                "Authorization: Bearer ", "authorization: ", "X-API-Key: ",
                "\"authorization\": \"Basic ", "Proxy-Authorization: token ",
            ]),
            form in 0..3u8,
        ) {
            let placed = match form {
                0 => format!("https://{user}:{secret}@{host}/x.git"),
                1 => format!("https://{host}/p?a=1&{param}={secret}"),
                _ => format!("{header}{secret}"),
            };
            let text = format!("{before}{placed}\n{after}");
            let out = redact(&text);
            prop_assert!(!out.contains(&secret), "{text:?} -> {out:?}");
            prop_assert_eq!(redact(&out), out.clone(), "idempotent");
        }

        #[test]
        fn redaction_never_panics_and_is_idempotent(text in "\\PC{0,200}") {
            let once = redact(&text).into_owned();
            prop_assert_eq!(redact(&once).into_owned(), once);
        }

        #[test]
        fn text_without_credentials_is_unchanged(text in "[a-z0-9 ,.:/\n=-]{0,200}") {
            prop_assume!(!text.contains("://"));
            prop_assert_eq!(redact(&text), text.as_str());
        }
    }
}
