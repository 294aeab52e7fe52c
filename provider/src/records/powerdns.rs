//! The PowerDNS-API shape (PowerDNS and the embedded server): record sets
//! to and from rrsets, the ownership comment that carries the policy, and
//! the `PATCH` that applies a [`DnsPlan`] keeping what is not ours. Pure.

use std::collections::BTreeSet;

use neutral_core::dnsplan::{DnsPlan, RecordSet};
use neutral_core::model::{DnsBackendKind, RecordType};

use super::model::{COMMENT_PREFIX, LUA, OWNER, Policy, fqdn, set};
use crate::client::{ChangeType, Comment, Record, RrSet, RrSetChange, Zone};

/// The ownership comment of a record of `rtype` with `policy`.
pub fn policy_comment(rtype: RecordType, policy: &Policy) -> Comment {
    let json = serde_json::to_string(policy).unwrap_or_default();
    Comment {
        content: format!("{COMMENT_PREFIX} {} {json}", rtype.as_str()),
        account: OWNER.to_owned(),
        modified_at: 0,
    }
}

fn is_our_comment(comment: &Comment, rtype: RecordType) -> bool {
    comment.account == OWNER
        && comment
            .content
            .strip_prefix(COMMENT_PREFIX)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|rest| rest.strip_prefix(rtype.as_str()))
            .is_some_and(|rest| rest.starts_with(' '))
}

/// The policy stored in `rrset`'s ownership comment for `rtype`.
pub fn policy_of(rrset: &RrSet, rtype: RecordType) -> Option<Policy> {
    rrset
        .comments
        .iter()
        .filter(|c| is_our_comment(c, rtype))
        .find_map(|c| {
            let json = c
                .content
                .get(COMMENT_PREFIX.len() + rtype.as_str().len() + 2..)?;
            serde_json::from_str(json).ok()
        })
}

/// A backend record as a record set value.
fn value_of(record: &Record) -> String {
    let mut value = record.content.clone();
    if let Some(weight) = record.weight {
        value.push_str(&format!(" weight={weight}"));
    }
    if record.disabled {
        value.push_str(" disabled");
    }
    value
}

/// A record set value back to a backend record.
pub(super) fn record_of(value: &str) -> Record {
    let (rest, disabled) = match value.strip_suffix(" disabled") {
        Some(rest) => (rest, true),
        None => (value, false),
    };
    let (content, weight) = match rest.rsplit_once(" weight=") {
        Some((content, weight)) if !content.starts_with(|c: char| c.is_ascii_uppercase()) => {
            match weight.parse::<u32>() {
                Ok(weight) => (content, Some(weight)),
                Err(_) => (rest, None),
            }
        }
        _ => (rest, None),
    };
    Record {
        content: content.to_owned(),
        disabled,
        weight,
    }
}

/// The inner type of a `LUA` record's content (`A "…"` → `A`).
fn lua_inner_type(content: &str) -> &str {
    content.split_whitespace().next().unwrap_or("")
}

/// The record sets of `domain` and `rtype` in `zone` that a
/// `neutral_gtm_record` may manage, with their owners: the plain rrset and,
/// for PowerDNS, the `LUA` records of that type.
pub fn current_sets(
    kind: DnsBackendKind,
    zone: &Zone,
    domain: &str,
    rtype: RecordType,
) -> Vec<RecordSet> {
    let name = fqdn(domain);
    let mut sets = Vec::new();
    for rrset in zone
        .rrsets
        .iter()
        .filter(|r| r.name.eq_ignore_ascii_case(&name))
    {
        if rrset.rtype.eq_ignore_ascii_case(rtype.as_str()) {
            let mut current = set(
                domain,
                rtype.as_str(),
                None,
                rrset.ttl,
                rrset.records.iter().map(value_of).collect(),
            );
            current.owner = rrset
                .comments
                .iter()
                .any(|c| c.account == OWNER)
                .then(|| OWNER.to_owned());
            sets.push(current);
        } else if kind == DnsBackendKind::Powerdns && rrset.rtype.eq_ignore_ascii_case(LUA) {
            let values: Vec<String> = rrset
                .records
                .iter()
                .filter(|r| lua_inner_type(&r.content).eq_ignore_ascii_case(rtype.as_str()))
                .map(value_of)
                .collect();
            if values.is_empty() {
                continue;
            }
            let mut current = set(domain, LUA, Some(rtype.as_str()), rrset.ttl, values);
            current.owner = rrset
                .comments
                .iter()
                .any(|c| is_our_comment(c, rtype))
                .then(|| OWNER.to_owned());
            sets.push(current);
        }
    }
    sets
}

/// The `PATCH` that applies `plan` (planned by [`dnsplan::plan`] from
/// `desired` and [`current_sets`]) to `zone`, and refreshes the ownership
/// `comment` of the record sets that stay. Only rrsets whose content
/// changes are in it; an empty result means nothing to write.
pub fn patch(
    zone: &Zone,
    domain: &str,
    rtype: RecordType,
    plan: &DnsPlan,
    desired: &[RecordSet],
    comment: Option<&Comment>,
) -> Vec<RrSetChange> {
    let name = fqdn(domain);
    let mut touched: BTreeSet<String> = plan.changes.iter().map(|c| c.key().rtype).collect();
    touched.extend(desired.iter().map(|s| s.rtype.to_ascii_uppercase()));
    let mut changes = Vec::new();
    for backend_type in touched {
        let existing = zone.rrsets.iter().find(|r| {
            r.name.eq_ignore_ascii_case(&name) && r.rtype.eq_ignore_ascii_case(&backend_type)
        });
        let ours = desired
            .iter()
            .find(|s| s.rtype.eq_ignore_ascii_case(&backend_type));
        let is_lua = backend_type == LUA;
        let mut records: Vec<Record> = match existing {
            Some(rrset) if is_lua => rrset
                .records
                .iter()
                .filter(|r| !lua_inner_type(&r.content).eq_ignore_ascii_case(rtype.as_str()))
                .cloned()
                .collect(),
            _ => Vec::new(),
        };
        let mut comments: Vec<Comment> = existing
            .map(|rrset| {
                rrset
                    .comments
                    .iter()
                    // A plain rrset is ours alone: all of neutral's comments go;
                    // a shared LUA rrset keeps the other type's comment.
                    .filter(|c| !is_our_comment(c, rtype) && (c.account != OWNER || is_lua))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        if let Some(ours) = ours {
            records.extend(ours.values.iter().map(|v| record_of(v)));
            if let Some(comment) = comment {
                comments.push(comment.clone());
            }
        }
        let ttl = ours
            .map(|s| s.ttl)
            .or_else(|| existing.map(|r| r.ttl))
            .unwrap_or(0);
        if records.is_empty() {
            if existing.is_some() {
                changes.push(RrSetChange {
                    name: name.clone(),
                    rtype: backend_type,
                    ttl: None,
                    changetype: ChangeType::Delete,
                    records: None,
                    comments: None,
                });
            }
            continue;
        }
        let unchanged = existing.is_some_and(|rrset| {
            rrset.ttl == ttl
                && same_records(&rrset.records, &records)
                && same_comments(&rrset.comments, &comments)
        });
        if !unchanged {
            changes.push(RrSetChange {
                name: name.clone(),
                rtype: backend_type,
                ttl: Some(ttl),
                changetype: ChangeType::Replace,
                records: Some(records),
                comments: Some(comments),
            });
        }
    }
    changes
}

fn same_records(a: &[Record], b: &[Record]) -> bool {
    let key = |r: &Record| value_of(r);
    let mut left: Vec<String> = a.iter().map(key).collect();
    let mut right: Vec<String> = b.iter().map(key).collect();
    left.sort();
    right.sort();
    left == right
}

fn same_comments(a: &[Comment], b: &[Comment]) -> bool {
    let key = |c: &Comment| (c.account.clone(), c.content.clone());
    let mut left: Vec<_> = a.iter().map(key).collect();
    let mut right: Vec<_> = b.iter().map(key).collect();
    left.sort();
    right.sort();
    left == right
}
