//! The JSON shape of PowerDNS' HTTP zone API (`/api/v1/servers/localhost/zones`):
//! zones, rrsets, records, comments and the `PATCH` body. One definition for
//! both sides that speak it: the provider's client (to PowerDNS and to the
//! embedded server) and the embedded server's zone API.
//!
//! The types read leniently: a field they do not know is skipped, so a newer
//! PowerDNS does not break an older provider. A side that must refuse unknown
//! fields (the embedded server's API, where a misspelt field would silently
//! do nothing) reads through a strict reader that reports the skipped fields
//! by path (`neutral_dns::zone::parse_strict`). This module only owns the
//! shape and its small constructors: no IO, no validation of names or
//! content (that is the embedded server's `zone` module).

use serde::{Deserialize, Serialize};

/// One zone, as `GET …/zones/{zone}` returns it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Zone {
    /// PowerDNS' zone id; the embedded server uses the name.
    #[serde(default)]
    pub id: String,
    /// With the trailing dot: `example.com.`.
    pub name: String,
    /// `Native`, `Master`, …; the embedded server creates `Native` zones.
    #[serde(default = "native_kind")]
    pub kind: String,
    /// The SOA serial.
    #[serde(default)]
    pub serial: u32,
    /// The embedded server keeps them sorted by name, then type.
    #[serde(default)]
    pub rrsets: Vec<RrSet>,
}

fn native_kind() -> String {
    "Native".to_owned()
}

impl Default for Zone {
    fn default() -> Self {
        Zone::named(String::new(), Vec::new())
    }
}

impl Zone {
    /// A zone with only a name and rrsets (id = name, `Native`, serial 0).
    pub fn named(name: impl Into<String>, rrsets: Vec<RrSet>) -> Zone {
        let name = name.into();
        Zone {
            id: name.clone(),
            name,
            kind: native_kind(),
            serial: 0,
            rrsets,
        }
    }
}

/// All records of one name and type.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RrSet {
    /// With the trailing dot.
    pub name: String,
    /// Uppercase: `A`, `AAAA`, `CNAME`, `LUA`, …
    #[serde(rename = "type")]
    pub rtype: String,
    pub ttl: u32,
    #[serde(default)]
    pub records: Vec<Record>,
    #[serde(default)]
    pub comments: Vec<Comment>,
}

impl Zone {
    /// The rrset of `name` and `rtype` (case-insensitive), if any.
    pub fn rrset(&self, name: &str, rtype: &str) -> Option<&RrSet> {
        self.rrsets
            .iter()
            .find(|r| r.name.eq_ignore_ascii_case(name) && r.rtype.eq_ignore_ascii_case(rtype))
    }
}

impl RrSet {
    /// Whether a comment carries `account` (the ownership marker).
    pub fn owned_by(&self, account: &str) -> bool {
        self.comments.iter().any(|c| c.account == account)
    }
}

/// One record of an rrset.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Presentation format: `192.0.2.1`, `10 mail.example.com.`, `"text"`.
    pub content: String,
    #[serde(default)]
    pub disabled: bool,
    /// neutral's extension (the embedded server; PowerDNS has none): the
    /// record's share of weighted answers (A/AAAA). Absent on every record
    /// means equal weights; 0 is never answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
}

impl Record {
    pub fn new(content: impl Into<String>) -> Record {
        Record {
            content: content.into(),
            disabled: false,
            weight: None,
        }
    }

    #[must_use]
    pub fn weighted(mut self, weight: u32) -> Record {
        self.weight = Some(weight);
        self
    }
}

/// A comment on an rrset; `account` carries the ownership marker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Comment {
    pub content: String,
    #[serde(default)]
    pub account: String,
    /// Unix seconds; 0 until the server stamps it (and then not sent).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub modified_at: i64,
}

fn is_zero(value: &i64) -> bool {
    *value == 0
}

/// The body of a zone `PATCH`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZonePatch {
    pub rrsets: Vec<RrSetChange>,
}

impl ZonePatch {
    /// Sets `modified_at` on every comment that has none (0) to `now_unix_secs`,
    /// as PowerDNS does with the server time.
    pub fn stamp_comments(&mut self, now_unix_secs: i64) {
        for change in &mut self.rrsets {
            for comment in change.comments.iter_mut().flatten() {
                if comment.modified_at == 0 {
                    comment.modified_at = now_unix_secs;
                }
            }
        }
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ChangeType {
    /// Set the rrset's TTL and records (and comments when given); an empty
    /// record list with no comments deletes it.
    Replace,
    /// Remove the rrset; removing one that does not exist is not an error.
    Delete,
}

/// One change of a [`ZonePatch`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RrSetChange {
    pub name: String,
    #[serde(rename = "type")]
    pub rtype: String,
    /// Required for `REPLACE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u32>,
    pub changetype: ChangeType,
    /// `REPLACE`: the new records; absent keeps the current ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub records: Option<Vec<Record>>,
    /// `REPLACE`: the new comments; absent keeps the current ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comments: Option<Vec<Comment>>,
}

impl RrSetChange {
    pub fn replace(name: &str, rtype: &str, ttl: u32, records: Vec<Record>) -> RrSetChange {
        RrSetChange {
            name: name.to_owned(),
            rtype: rtype.to_owned(),
            ttl: Some(ttl),
            changetype: ChangeType::Replace,
            records: Some(records),
            comments: None,
        }
    }

    pub fn delete(name: &str, rtype: &str) -> RrSetChange {
        RrSetChange {
            name: name.to_owned(),
            rtype: rtype.to_owned(),
            ttl: None,
            changetype: ChangeType::Delete,
            records: None,
            comments: None,
        }
    }
}
