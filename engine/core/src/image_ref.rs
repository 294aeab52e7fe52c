//! OCI image references (`registry/name:tag`, `name@sha256:…`): the parser
//! every edge that accepts an image from outside (release orders) runs
//! before anything is queued.
//!
//! The grammar is the distribution project's reference grammar (the one
//! `docker pull` and containerd accept):
//!
//! ```text
//! reference        := name [ ":" tag ] [ "@" digest ]
//! name             := [ domain "/" ] path            (at most 255 characters)
//! domain           := host [ ":" port ]
//! host             := domain-component ( "." domain-component )* | "[" IPv6 "]"
//! domain-component := [a-zA-Z0-9] | [a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]
//! path             := path-component ( "/" path-component )*
//! path-component   := [a-z0-9]+ ( separator [a-z0-9]+ )*
//! separator        := "." | "_" | "__" | "-"+
//! tag              := [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}
//! digest           := algorithm ":" hex
//! algorithm        := [A-Za-z][A-Za-z0-9]* ( [+._-] [A-Za-z][A-Za-z0-9]* )*
//! hex              := [0-9a-fA-F]{32,}
//! ```
//!
//! As in the distribution code, the first `/`-separated part is the domain
//! only when it contains `.` or `:`, is `localhost`, or has an upper-case
//! letter; otherwise the whole name is the path (`library/web` is a path).
//! Digests of the registered algorithms are held to the OCI image spec:
//! `sha256` needs 64 and `sha512` 128 lower-case hex digits. The port must
//! be 1..=65535. So `../../../../etc/passwd`, `/etc/passwd`, `web:latest
//! --rm` or `WEB` are refused, each with the reason.
//!
//! This module only parses. It must not resolve a registry, pull anything or
//! add defaults (`docker.io/library/`, `:latest`): what was written is what
//! is kept.

use std::fmt;

use thiserror::Error;

/// Longest name (domain and path) the grammar allows.
pub const MAX_NAME: usize = 255;
/// Longest tag.
pub const MAX_TAG: usize = 128;

/// A parsed image reference; [`fmt::Display`] gives back the text it was
/// parsed from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRef {
    /// Registry host with an optional port (`registry.example.com:5000`).
    pub domain: Option<String>,
    /// Repository path (`team/web`).
    pub path: String,
    pub tag: Option<String>,
    /// `algorithm:hex`.
    pub digest: Option<String>,
}

/// Why a text is not an image reference.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ImageRefError {
    #[error("an image reference cannot be empty")]
    Empty,
    #[error("the name is {0} characters long; at most {MAX_NAME} are allowed")]
    NameTooLong(usize),
    #[error("{0:?} is not allowed in an image reference")]
    BadCharacter(char),
    #[error(
        "`{0}` is not a repository path component: lower-case letters and digits, separated by `.`, `_`, `__` or dashes"
    )]
    BadPathComponent(String),
    #[error("`{0}` is not a registry host")]
    BadDomain(String),
    #[error("`{0}` is not a port (1..=65535)")]
    BadPort(String),
    #[error(
        "`{0}` is not a tag: 1 to {MAX_TAG} letters, digits, `_`, `.` or `-`, not starting with `.` or `-`"
    )]
    BadTag(String),
    #[error("`{0}` is not a digest (`algorithm:hex`, e.g. sha256 with 64 lower-case hex digits)")]
    BadDigest(String),
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(domain) = &self.domain {
            write!(f, "{domain}/")?;
        }
        f.write_str(&self.path)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for ImageRef {
    type Err = ImageRefError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        parse(text)
    }
}

/// Parses `text` as an image reference; see the [module docs](self).
pub fn parse(text: &str) -> Result<ImageRef, ImageRefError> {
    if text.is_empty() {
        return Err(ImageRefError::Empty);
    }
    if let Some(bad) = text
        .chars()
        .find(|c| !c.is_ascii_graphic() || matches!(c, '"' | '\'' | '\\' | '`'))
    {
        return Err(ImageRefError::BadCharacter(bad));
    }
    let (rest, digest) = match text.split_once('@') {
        Some((rest, digest)) => (rest, Some(check_digest(digest)?)),
        None => (text, None),
    };
    // The tag follows the last `:` after the last `/` (a port's `:` comes
    // before a `/`).
    let last_slash = rest.rfind('/').map_or(0, |i| i.saturating_add(1));
    let (name, tag) = match rest.get(last_slash..).and_then(|tail| tail.rfind(':')) {
        Some(colon) => {
            let at = last_slash.saturating_add(colon);
            let name = rest.get(..at).unwrap_or_default();
            let tag = rest.get(at.saturating_add(1)..).unwrap_or_default();
            (name, Some(check_tag(tag)?))
        }
        None => (rest, None),
    };
    if name.len() > MAX_NAME {
        return Err(ImageRefError::NameTooLong(name.len()));
    }
    let (domain, path) = match name.split_once('/') {
        Some((first, path)) if looks_like_domain(first) => (Some(check_domain(first)?), path),
        _ => (None, name),
    };
    for component in path.split('/') {
        if !is_path_component(component) {
            return Err(ImageRefError::BadPathComponent(component.to_owned()));
        }
    }
    Ok(ImageRef {
        domain,
        path: path.to_owned(),
        tag,
        digest,
    })
}

fn looks_like_domain(first: &str) -> bool {
    first.contains(['.', ':'])
        || first == "localhost"
        || first.chars().any(|c| c.is_ascii_uppercase())
}

fn is_path_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let mut i = 0usize;
    let mut need_alnum = true;
    while let Some(&b) = bytes.get(i) {
        if alnum(&b) {
            need_alnum = false;
            i += 1;
            continue;
        }
        if need_alnum {
            return false;
        }
        let run = bytes
            .get(i..)
            .unwrap_or_default()
            .iter()
            .take_while(|c| !alnum(c))
            .count();
        let separator = bytes.get(i..i.saturating_add(run)).unwrap_or_default();
        let ok = matches!(separator, b"." | b"_" | b"__") || separator.iter().all(|&c| c == b'-');
        if !ok {
            return false;
        }
        need_alnum = true;
        i = i.saturating_add(run);
    }
    !need_alnum
}

fn check_domain(domain: &str) -> Result<String, ImageRefError> {
    let bad = || ImageRefError::BadDomain(domain.to_owned());
    let (host, port) = if let Some(rest) = domain.strip_prefix('[') {
        let (v6, after) = rest.split_once(']').ok_or_else(bad)?;
        v6.parse::<std::net::Ipv6Addr>().map_err(|_| bad())?;
        match after {
            "" => (domain, None),
            _ => (
                domain
                    .get(..domain.len().saturating_sub(after.len()))
                    .unwrap_or_default(),
                Some(after.strip_prefix(':').ok_or_else(bad)?),
            ),
        }
    } else {
        match domain.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (domain, None),
        }
    };
    if !host.starts_with('[') {
        let component_ok = |c: &str| {
            !c.is_empty()
                && c.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '-')
                && !c.starts_with('-')
                && !c.ends_with('-')
        };
        if !host.split('.').all(component_ok) {
            return Err(bad());
        }
    }
    if let Some(port) = port {
        let valid = !port.is_empty()
            && port.len() <= 5
            && port.chars().all(|c| c.is_ascii_digit())
            && port.parse::<u32>().is_ok_and(|p| (1..=65535).contains(&p));
        if !valid {
            return Err(ImageRefError::BadPort(port.to_owned()));
        }
    }
    Ok(domain.to_owned())
}

fn check_tag(tag: &str) -> Result<String, ImageRefError> {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let valid = tag.len() <= MAX_TAG
        && tag.chars().next().is_some_and(word)
        && tag.chars().all(|c| word(c) || c == '.' || c == '-');
    if valid {
        Ok(tag.to_owned())
    } else {
        Err(ImageRefError::BadTag(tag.to_owned()))
    }
}

fn check_digest(digest: &str) -> Result<String, ImageRefError> {
    let bad = || ImageRefError::BadDigest(digest.to_owned());
    let (algorithm, hex) = digest.split_once(':').ok_or_else(bad)?;
    let algorithm_ok = !algorithm.is_empty()
        && algorithm.split(['+', '.', '_', '-']).all(|part| {
            part.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
                && part.chars().all(|c| c.is_ascii_alphanumeric())
        });
    let hex_ok = hex.len() >= 32 && hex.chars().all(|c| c.is_ascii_hexdigit());
    let registered_ok = match algorithm {
        "sha256" => hex.len() == 64 && !hex.chars().any(|c| c.is_ascii_uppercase()),
        "sha512" => hex.len() == 128 && !hex.chars().any(|c| c.is_ascii_uppercase()),
        _ => true,
    };
    if algorithm_ok && hex_ok && registered_ok {
        Ok(digest.to_owned())
    } else {
        Err(bad())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SHA: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn verdict(text: &str) -> String {
        match parse(text) {
            Ok(image) => {
                assert_eq!(image.to_string(), text, "round trip");
                format!(
                    "ok domain={} path={} tag={} digest={}",
                    image.domain.as_deref().unwrap_or("-"),
                    image.path,
                    image.tag.as_deref().unwrap_or("-"),
                    image.digest.as_deref().map_or("-", |d| &d[..10]),
                )
            }
            Err(err) => err.to_string(),
        }
    }

    #[test]
    fn valid_references() {
        let table = [
            ("web", "ok domain=- path=web tag=- digest=-"),
            ("web:v2", "ok domain=- path=web tag=v2 digest=-"),
            (
                "library/web:1.0.0-rc_1",
                "ok domain=- path=library/web tag=1.0.0-rc_1 digest=-",
            ),
            (
                "neutral.test/web:v2",
                "ok domain=neutral.test path=web tag=v2 digest=-",
            ),
            (
                "localhost/web",
                "ok domain=localhost path=web tag=- digest=-",
            ),
            (
                "localhost:5000/team/web:latest",
                "ok domain=localhost:5000 path=team/web tag=latest digest=-",
            ),
            (
                "Registry.Example.com/a__b/c-d---e.f",
                "ok domain=Registry.Example.com path=a__b/c-d---e.f tag=- digest=-",
            ),
            (
                "[::1]:5000/web:v1",
                "ok domain=[::1]:5000 path=web tag=v1 digest=-",
            ),
            (
                "[2001:db8::1]/web",
                "ok domain=[2001:db8::1] path=web tag=- digest=-",
            ),
            (
                "10.0.0.1:443/web",
                "ok domain=10.0.0.1:443 path=web tag=- digest=-",
            ),
            (
                "_tag_ok:_x",
                "`_tag_ok` is not a repository path component: lower-case letters and digits, separated by `.`, `_`, `__` or dashes",
            ),
        ];
        for (text, expected) in table {
            assert_eq!(verdict(text), expected, "{text}");
        }
        assert_eq!(
            verdict(&format!("web:v2@{SHA}")),
            "ok domain=- path=web tag=v2 digest=sha256:012"
        );
        assert_eq!(
            verdict(&format!("ghcr.io/team/web@{SHA}")),
            "ok domain=ghcr.io path=team/web tag=- digest=sha256:012"
        );
        assert_eq!(
            verdict("web@multihash+base58:0123456789abcdef0123456789abcdef"),
            "ok domain=- path=web tag=- digest=multihash+"
        );
    }

    #[test]
    fn hostile_and_malformed_references_are_refused_with_the_reason() {
        let table = [
            ("", "an image reference cannot be empty"),
            ("../../../../etc/passwd", "`..` is not a registry host"),
            (
                "web/../../etc/passwd",
                "`..` is not a repository path component: lower-case letters and digits, separated by `.`, `_`, `__` or dashes",
            ),
            (
                "/etc/passwd",
                "`` is not a repository path component: lower-case letters and digits, separated by `.`, `_`, `__` or dashes",
            ),
            ("./web", "`.` is not a registry host"),
            (
                "web:latest --rm",
                "' ' is not allowed in an image reference",
            ),
            (
                "-v/:/host",
                "`-v` is not a repository path component: lower-case letters and digits, separated by `.`, `_`, `__` or dashes",
            ),
            ("web\n", "'\\n' is not allowed in an image reference"),
            ("wéb", "'é' is not allowed in an image reference"),
            (
                "web;rm",
                "`web;rm` is not a repository path component: lower-case letters and digits, separated by `.`, `_`, `__` or dashes",
            ),
            (
                "$(id)",
                "`$(id)` is not a repository path component: lower-case letters and digits, separated by `.`, `_`, `__` or dashes",
            ),
            (
                "WEB",
                "`WEB` is not a repository path component: lower-case letters and digits, separated by `.`, `_`, `__` or dashes",
            ),
            (
                "web.",
                "`web.` is not a repository path component: lower-case letters and digits, separated by `.`, `_`, `__` or dashes",
            ),
            (
                "a..b",
                "`a..b` is not a repository path component: lower-case letters and digits, separated by `.`, `_`, `__` or dashes",
            ),
            (
                "a___b",
                "`a___b` is not a repository path component: lower-case letters and digits, separated by `.`, `_`, `__` or dashes",
            ),
            (
                "web:",
                "`` is not a tag: 1 to 128 letters, digits, `_`, `.` or `-`, not starting with `.` or `-`",
            ),
            (
                "web:.x",
                "`.x` is not a tag: 1 to 128 letters, digits, `_`, `.` or `-`, not starting with `.` or `-`",
            ),
            (
                "web:a:b",
                "`web:a` is not a repository path component: lower-case letters and digits, separated by `.`, `_`, `__` or dashes",
            ),
            (
                "web@sha256:abc",
                "`sha256:abc` is not a digest (`algorithm:hex`, e.g. sha256 with 64 lower-case hex digits)",
            ),
            (
                "web@",
                "`` is not a digest (`algorithm:hex`, e.g. sha256 with 64 lower-case hex digits)",
            ),
            ("host:0/web", "`0` is not a port (1..=65535)"),
            ("host:99999/web", "`99999` is not a port (1..=65535)"),
            ("-host.com/web", "`-host.com` is not a registry host"),
            ("[::1/web", "`[::1` is not a registry host"),
            ("[zz]:5000/web", "`[zz]:5000` is not a registry host"),
        ];
        for (text, expected) in table {
            assert_eq!(verdict(text), expected, "{text:?}");
        }
        let long_tag = format!("web:{}", "x".repeat(129));
        assert!(matches!(parse(&long_tag), Err(ImageRefError::BadTag(_))));
        let long_name = format!("{}:v1", "a".repeat(256));
        assert_eq!(parse(&long_name), Err(ImageRefError::NameTooLong(256)));
        let upper = SHA.to_uppercase().replace("SHA256", "sha256");
        assert!(matches!(
            parse(&format!("web@{upper}")),
            Err(ImageRefError::BadDigest(_))
        ));
    }

    fn arb_component() -> impl Strategy<Value = String> {
        "[a-z0-9]{1,4}(([._]|__|-{1,3})[a-z0-9]{1,4}){0,2}"
    }

    fn arb_reference() -> impl Strategy<Value = String> {
        (
            proptest::option::of((
                "[a-z][a-z0-9-]{0,5}[a-z0-9]\\.[a-z]{2,4}",
                proptest::option::of(1u32..=65535),
            )),
            // Without a domain, a first component with a `.` would be
            // read as one (as the distribution code does).
            "[a-z0-9]{1,4}((_|__|-{1,3})[a-z0-9]{1,4}){0,2}",
            proptest::collection::vec(arb_component(), 0..3),
            proptest::option::of("[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}"),
            proptest::option::of("[0-9a-f]{64}"),
        )
            .prop_map(|(domain, first, rest, tag, digest)| {
                let path: Vec<String> = std::iter::once(first).chain(rest).collect();
                let mut text = String::new();
                if let Some((host, port)) = domain {
                    text.push_str(&host);
                    if let Some(port) = port {
                        text.push_str(&format!(":{port}"));
                    }
                    text.push('/');
                }
                text.push_str(&path.join("/"));
                if let Some(tag) = tag {
                    text.push_str(&format!(":{tag}"));
                }
                if let Some(hex) = digest {
                    text.push_str(&format!("@sha256:{hex}"));
                }
                text
            })
    }

    proptest! {
        #[test]
        fn grammar_references_parse_and_round_trip(text in arb_reference()) {
            let image = parse(&text).map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
            prop_assert_eq!(image.to_string(), text);
        }

        #[test]
        fn anything_parses_or_is_refused_without_panicking(text in ".{0,80}") {
            if let Ok(image) = parse(&text) {
                prop_assert_eq!(image.to_string(), text.clone());
                prop_assert!(!image.path.split('/').any(|c| c.is_empty() || c.starts_with('.')), "{}", text);
                prop_assert!(!text.starts_with(['/', '-', '.']), "{}", text);
                prop_assert!(text.chars().all(|c| c.is_ascii_graphic()));
            }
        }

        #[test]
        fn path_traversal_is_always_refused(
            prefix in proptest::collection::vec(arb_component(), 0..3),
            suffix in proptest::collection::vec(arb_component(), 0..3),
        ) {
            let mut parts = prefix;
            parts.push("..".to_owned());
            parts.extend(suffix);
            let text = parts.join("/");
            prop_assert!(parse(&text).is_err(), "{}", text);
        }
    }
}
