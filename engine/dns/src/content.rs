//! Record types, owner names and record content as PowerDNS' API writes them
//! (zone-file presentation format), parsed strictly into wire data.
//!
//! This module owns the syntax: which types the embedded server serves, what a
//! valid absolute name is, and how each type's `content` string reads. It must
//! not know zones, patches or health; [`crate::zone`] decides where a record may
//! live, [`crate::snapshot`] serves it. Errors are plain messages meant to follow
//! a field path (`rrsets[2].records[0].content: …`).
//!
//! Parsing is stricter than hickory's zone-file lexer, which ignores trailing
//! tokens (`1.2.3.4 5.6.7.8` reads as `1.2.3.4`): every token must be used.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use hickory_proto::rr::rdata::{A, AAAA, CNAME, MX, NS, SOA, SRV, TXT};
use hickory_proto::rr::{Name, RData, RecordType};

/// The record types the embedded server stores and serves.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RrType {
    A,
    Aaaa,
    Cname,
    Txt,
    Ns,
    Mx,
    Srv,
    Soa,
}

impl RrType {
    pub const ALL: [RrType; 8] = [
        RrType::A,
        RrType::Aaaa,
        RrType::Cname,
        RrType::Txt,
        RrType::Ns,
        RrType::Mx,
        RrType::Srv,
        RrType::Soa,
    ];

    /// Reads a type name, case-insensitively; `None` for types not served here.
    pub fn parse(text: &str) -> Option<RrType> {
        RrType::ALL
            .into_iter()
            .find(|t| t.as_str().eq_ignore_ascii_case(text))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RrType::A => "A",
            RrType::Aaaa => "AAAA",
            RrType::Cname => "CNAME",
            RrType::Txt => "TXT",
            RrType::Ns => "NS",
            RrType::Mx => "MX",
            RrType::Srv => "SRV",
            RrType::Soa => "SOA",
        }
    }

    pub fn to_hickory(self) -> RecordType {
        match self {
            RrType::A => RecordType::A,
            RrType::Aaaa => RecordType::AAAA,
            RrType::Cname => RecordType::CNAME,
            RrType::Txt => RecordType::TXT,
            RrType::Ns => RecordType::NS,
            RrType::Mx => RecordType::MX,
            RrType::Srv => RecordType::SRV,
            RrType::Soa => RecordType::SOA,
        }
    }

    /// Whether records of this type are address answers, picked one per query
    /// by weight and filtered by node health.
    pub fn is_address(self) -> bool {
        matches!(self, RrType::A | RrType::Aaaa)
    }

    /// The list used in "not supported" messages.
    pub fn supported_list() -> String {
        let names: Vec<&str> = RrType::ALL.iter().map(|t| t.as_str()).collect();
        names.join(", ")
    }
}

impl fmt::Display for RrType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Longest name on the wire, in octets (RFC 1035 §2.3.4).
const MAX_NAME_WIRE_LEN: usize = 255;
/// Longest label, in octets.
const MAX_LABEL_LEN: usize = 63;
/// Longest character-string in a TXT record, in octets.
const MAX_TXT_STRING_LEN: usize = 255;

/// Checks an absolute (trailing-dot) domain name and returns it lowercased.
///
/// Labels are letters, digits, `-` and `_` (for `_sip._tcp`-style owners);
/// `.` alone is the root, accepted only when `allow_root`.
pub fn check_absolute_name(text: &str, allow_root: bool) -> Result<String, String> {
    if text == "." {
        return if allow_root {
            Ok(".".to_owned())
        } else {
            Err("the root name `.` is not allowed here".to_owned())
        };
    }
    if text.is_empty() {
        return Err("empty name".to_owned());
    }
    let Some(stem) = text.strip_suffix('.') else {
        return Err(format!(
            "`{text}` is not absolute (add the trailing dot: `{text}.`)"
        ));
    };
    let mut wire_len = 1usize;
    for label in stem.split('.') {
        if label.is_empty() {
            return Err(format!("`{text}` has an empty label"));
        }
        if label.len() > MAX_LABEL_LEN {
            return Err(format!(
                "`{text}` has a label longer than {MAX_LABEL_LEN} characters"
            ));
        }
        if let Some(bad) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        {
            return Err(if bad == '*' {
                format!("`{text}`: wildcard names are not supported by the embedded server")
            } else {
                format!("`{text}` contains {bad:?}, which is not allowed in a DNS name")
            });
        }
        wire_len = wire_len.saturating_add(label.len()).saturating_add(1);
    }
    if wire_len > MAX_NAME_WIRE_LEN {
        return Err(format!(
            "`{text}` is longer than {MAX_NAME_WIRE_LEN} octets on the wire"
        ));
    }
    Ok(text.to_ascii_lowercase())
}

/// [`check_absolute_name`], then the hickory [`Name`].
pub fn parse_absolute_name(text: &str, allow_root: bool) -> Result<Name, String> {
    let checked = check_absolute_name(text, allow_root)?;
    Name::from_ascii(&checked).map_err(|e| format!("`{text}` is not a valid name: {e}"))
}

/// Parses `content` as the record data of `rtype`, in presentation format:
///
/// - `A` `192.0.2.1`, `AAAA` `2001:db8::1`;
/// - `CNAME`, `NS` an absolute name;
/// - `MX` `10 mail.example.com.` (`.` is the null MX);
/// - `SRV` `10 5 5060 sip.example.com.` (priority, weight, port, target);
/// - `SOA` `ns1.example.com. hostmaster.example.com. 1 10800 3600 604800 3600`;
/// - `TXT` one or more double-quoted strings, `\"`, `\\` and `\DDD` escapes,
///   each at most 255 octets: `"v=spf1 -all"`.
pub fn parse_content(rtype: RrType, content: &str) -> Result<RData, String> {
    match rtype {
        RrType::A => content
            .parse::<Ipv4Addr>()
            .map(|ip| RData::A(A(ip)))
            .map_err(|_| format!("`{content}` is not an IPv4 address")),
        RrType::Aaaa => content
            .parse::<Ipv6Addr>()
            .map(|ip| RData::AAAA(AAAA(ip)))
            .map_err(|_| format!("`{content}` is not an IPv6 address")),
        RrType::Cname => {
            let [target] = tokens::<1>(content, "a target name")?;
            Ok(RData::CNAME(CNAME(parse_absolute_name(target, false)?)))
        }
        RrType::Ns => {
            let [host] = tokens::<1>(content, "a name server name")?;
            Ok(RData::NS(NS(parse_absolute_name(host, false)?)))
        }
        RrType::Mx => {
            let [preference, exchange] = tokens::<2>(content, "`<preference> <exchange>`")?;
            Ok(RData::MX(MX::new(
                number::<u16>(preference, "preference")?,
                parse_absolute_name(exchange, true)?,
            )))
        }
        RrType::Srv => {
            let [priority, weight, port, target] =
                tokens::<4>(content, "`<priority> <weight> <port> <target>`")?;
            Ok(RData::SRV(SRV::new(
                number::<u16>(priority, "priority")?,
                number::<u16>(weight, "weight")?,
                number::<u16>(port, "port")?,
                parse_absolute_name(target, true)?,
            )))
        }
        RrType::Soa => {
            let [mname, rname, serial, refresh, retry, expire, minimum] = tokens::<7>(
                content,
                "`<primary> <hostmaster> <serial> <refresh> <retry> <expire> <minimum>`",
            )?;
            Ok(RData::SOA(SOA::new(
                parse_absolute_name(mname, false)?,
                parse_absolute_name(rname, false)?,
                number::<u32>(serial, "serial")?,
                number::<i32>(refresh, "refresh")?,
                number::<i32>(retry, "retry")?,
                number::<i32>(expire, "expire")?,
                number::<u32>(minimum, "minimum")?,
            )))
        }
        RrType::Txt => {
            let strings = parse_txt(content)?;
            Ok(RData::TXT(TXT::from_bytes(
                strings.iter().map(Vec::as_slice).collect(),
            )))
        }
    }
}

/// Splits `content` on whitespace into exactly `N` tokens.
fn tokens<'c, const N: usize>(content: &'c str, expected: &str) -> Result<[&'c str; N], String> {
    let parts: Vec<&str> = content.split_ascii_whitespace().collect();
    <[&str; N]>::try_from(parts.as_slice()).map_err(|_| {
        format!(
            "`{content}` has {} field(s); expected {expected}",
            parts.len()
        )
    })
}

fn number<T: std::str::FromStr>(text: &str, field: &str) -> Result<T, String> {
    // `FromStr` for integers accepts a leading `+`; presentation format does not.
    if text.starts_with('+') {
        return Err(format!("{field} `{text}` is not a number in range"));
    }
    text.parse::<T>()
        .map_err(|_| format!("{field} `{text}` is not a number in range"))
}

/// Reads TXT presentation content: quoted strings separated by whitespace.
fn parse_txt(content: &str) -> Result<Vec<Vec<u8>>, String> {
    let mut strings = Vec::new();
    let mut rest = content.trim_start();
    if rest.is_empty() {
        return Err(
            "TXT content must be one or more double-quoted strings, e.g. `\"v=spf1 -all\"`"
                .to_owned(),
        );
    }
    while !rest.is_empty() {
        let Some(after_quote) = rest.strip_prefix('"') else {
            return Err(format!(
                "TXT content must be double-quoted strings; `{rest}` does not start with `\"`"
            ));
        };
        let (bytes, after) = read_quoted(after_quote)?;
        if bytes.len() > MAX_TXT_STRING_LEN {
            return Err(format!(
                "a TXT string is {} octets long; split it into quoted strings of at most \
                 {MAX_TXT_STRING_LEN}",
                bytes.len()
            ));
        }
        strings.push(bytes);
        let trimmed = after.trim_start();
        if trimmed.len() == after.len() && !after.is_empty() {
            return Err(format!(
                "TXT strings must be separated by whitespace at `{after}`"
            ));
        }
        rest = trimmed;
    }
    Ok(strings)
}

/// Reads one quoted string's body (after the opening quote) up to its closing
/// quote; returns the bytes and what follows the closing quote.
fn read_quoted(body: &str) -> Result<(Vec<u8>, &str), String> {
    let mut out = Vec::new();
    let mut chars = body.char_indices();
    while let Some((index, c)) = chars.next() {
        match c {
            '"' => return Ok((out, body.get(index.saturating_add(1)..).unwrap_or(""))),
            '\\' => match chars.next() {
                Some((_, d0)) if d0.is_ascii_digit() => {
                    let d1 = chars.next().map(|(_, c)| c);
                    let d2 = chars.next().map(|(_, c)| c);
                    let value = match (d1, d2) {
                        (Some(d1), Some(d2)) if d1.is_ascii_digit() && d2.is_ascii_digit() => {
                            format!("{d0}{d1}{d2}").parse::<u8>().ok()
                        }
                        _ => None,
                    };
                    match value {
                        Some(byte) => out.push(byte),
                        None => {
                            return Err(
                                "a `\\DDD` escape in a TXT string needs three digits, 000 to 255"
                                    .to_owned(),
                            );
                        }
                    }
                }
                Some((_, escaped)) => {
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(escaped.encode_utf8(&mut buf).as_bytes());
                }
                None => return Err("a TXT string ends with a lone `\\`".to_owned()),
            },
            other => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(other.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    Err("a TXT string has no closing `\"`".to_owned())
}

/// The serial field of SOA content, if the content is well-formed.
pub fn soa_serial(content: &str) -> Option<u32> {
    match parse_content(RrType::Soa, content) {
        Ok(RData::SOA(soa)) => Some(soa.serial),
        _ => None,
    }
}

/// SOA content with its serial replaced, fields separated by single spaces;
/// `None` when `content` is not well-formed SOA content.
pub fn soa_with_serial(content: &str, serial: u32) -> Option<String> {
    soa_serial(content)?;
    let mut fields: Vec<String> = content
        .split_ascii_whitespace()
        .map(str::to_owned)
        .collect();
    *fields.get_mut(2)? = serial.to_string();
    Some(fields.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(rtype: RrType, content: &str) -> String {
        parse_content(rtype, content).unwrap_err()
    }

    #[test]
    fn types_parse_case_insensitively_and_only_the_served_ones() {
        assert_eq!(RrType::parse("aaaa"), Some(RrType::Aaaa));
        assert_eq!(RrType::parse("Srv"), Some(RrType::Srv));
        assert_eq!(RrType::parse("LUA"), None);
        assert_eq!(RrType::parse(""), None);
    }

    #[test]
    fn names_must_be_absolute_and_well_formed() {
        assert_eq!(
            check_absolute_name("WWW.Example.com.", false),
            Ok("www.example.com.".to_owned())
        );
        assert_eq!(
            check_absolute_name("_sip._tcp.example.com.", false),
            Ok("_sip._tcp.example.com.".to_owned())
        );
        expect_test::expect![[r#"
            [
                "`www.example.com` is not absolute (add the trailing dot: `www.example.com.`)",
                "`a..example.com.` has an empty label",
                "`a b.example.com.` contains ' ', which is not allowed in a DNS name",
                "`*.example.com.`: wildcard names are not supported by the embedded server",
                "the root name `.` is not allowed here",
                "empty name",
                "`aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.com.` has a label longer than 63 characters",
            ]
        "#]]
        .assert_debug_eq(
            &[
                "www.example.com",
                "a..example.com.",
                "a b.example.com.",
                "*.example.com.",
                ".",
                "",
                &format!("{}.com.", "a".repeat(64)),
            ]
            .iter()
            .map(|n| check_absolute_name(n, false).unwrap_err())
            .collect::<Vec<_>>(),
        );
        let long = format!("{}.", vec!["a".repeat(63); 4].join("."));
        assert!(
            check_absolute_name(&long, false)
                .unwrap_err()
                .contains("255 octets")
        );
        assert_eq!(check_absolute_name(".", true), Ok(".".to_owned()));
    }

    #[test]
    fn addresses_parse_exactly() {
        assert_eq!(
            parse_content(RrType::A, "192.0.2.1"),
            Ok(RData::A(A(Ipv4Addr::new(192, 0, 2, 1))))
        );
        assert_eq!(
            err(RrType::A, "300.1.1.1"),
            "`300.1.1.1` is not an IPv4 address"
        );
        assert_eq!(
            err(RrType::A, "1.2.3.4 5.6.7.8"),
            "`1.2.3.4 5.6.7.8` is not an IPv4 address"
        );
        assert_eq!(
            err(RrType::A, " 1.2.3.4"),
            "` 1.2.3.4` is not an IPv4 address"
        );
        assert_eq!(
            err(RrType::A, "2001:db8::1"),
            "`2001:db8::1` is not an IPv4 address"
        );
        assert!(parse_content(RrType::Aaaa, "2001:db8::1").is_ok());
        assert_eq!(
            err(RrType::Aaaa, "192.0.2.1"),
            "`192.0.2.1` is not an IPv6 address"
        );
    }

    #[test]
    fn every_token_of_structured_content_is_used() {
        expect_test::expect![[r#"
            [
                "`foo.example.com. extra` has 2 field(s); expected a target name",
                "`foo` is not absolute (add the trailing dot: `foo.`)",
                "`10` has 1 field(s); expected `<preference> <exchange>`",
                "preference `x` is not a number in range",
                "preference `+10` is not a number in range",
                "port `99999` is not a number in range",
                "`ns1.example.com. hostmaster.example.com. 1 10800` has 4 field(s); expected `<primary> <hostmaster> <serial> <refresh> <retry> <expire> <minimum>`",
                "refresh `4294967295` is not a number in range",
                "`` has 0 field(s); expected a name server name",
            ]
        "#]]
        .assert_debug_eq(&[
            err(RrType::Cname, "foo.example.com. extra"),
            err(RrType::Cname, "foo"),
            err(RrType::Mx, "10"),
            err(RrType::Mx, "x mail.example.com."),
            err(RrType::Mx, "+10 mail.example.com."),
            err(RrType::Srv, "10 5 99999 sip.example.com."),
            err(RrType::Soa, "ns1.example.com. hostmaster.example.com. 1 10800"),
            err(
                RrType::Soa,
                "ns1.example.com. hostmaster.example.com. 1 4294967295 1 1 1",
            ),
            err(RrType::Ns, ""),
        ]);
        assert!(parse_content(RrType::Mx, "0 .").is_ok());
        assert!(parse_content(RrType::Srv, "10 5 5060 sip.example.com.").is_ok());
    }

    #[test]
    fn txt_strings_are_quoted_escaped_and_bounded() {
        let RData::TXT(txt) = parse_content(RrType::Txt, r#""v=spf1 -all" "a\"b\\c\065""#).unwrap()
        else {
            panic!("not TXT");
        };
        let strings: Vec<&[u8]> = txt.txt_data.iter().map(|s| &**s).collect();
        assert_eq!(strings, vec![&b"v=spf1 -all"[..], &b"a\"b\\cA"[..]]);
        assert!(parse_content(RrType::Txt, r#""""#).is_ok());
        expect_test::expect![[r#"
            [
                "TXT content must be one or more double-quoted strings, e.g. `\"v=spf1 -all\"`",
                "TXT content must be double-quoted strings; `hello` does not start with `\"`",
                "a TXT string has no closing `\"`",
                "TXT strings must be separated by whitespace at `\"b\"`",
                "a `\\DDD` escape in a TXT string needs three digits, 000 to 255",
                "a TXT string is 256 octets long; split it into quoted strings of at most 255",
            ]
        "#]]
        .assert_debug_eq(&[
            err(RrType::Txt, ""),
            err(RrType::Txt, "hello"),
            err(RrType::Txt, "\"open"),
            err(RrType::Txt, "\"a\"\"b\""),
            err(RrType::Txt, "\"\\300\""),
            err(RrType::Txt, &format!("\"{}\"", "x".repeat(256))),
        ]);
    }

    #[test]
    fn soa_serial_is_read_and_rewritten() {
        let soa = "ns1.example.com.  hostmaster.example.com. 7 10800 3600 604800 3600";
        assert_eq!(soa_serial(soa), Some(7));
        assert_eq!(
            soa_with_serial(soa, 8).as_deref(),
            Some("ns1.example.com. hostmaster.example.com. 8 10800 3600 604800 3600")
        );
        assert_eq!(soa_with_serial("garbage", 8), None);
    }
}
