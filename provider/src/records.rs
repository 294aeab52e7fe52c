//! From a domain's answers to the record sets a DNS backend holds, and from
//! a backend's zone and a [`dnsplan`] to the `PATCH` that applies it.
//!
//! This module owns the per-backend record shapes and the ownership marker,
//! and is pure: no IO, no clock. Weights are scaled by the core
//! ([`scale::render_weights`]); the diff is the core's ([`dnsplan::plan`]).
//!
//! - **embedded**: one `A`/`AAAA` rrset, one record per address carrying the
//!   node weight in neutral's `weight` extension.
//! - **PowerDNS**: a plain `A`/`AAAA` rrset of the answers when their scaled
//!   weights are equal, else one `LUA` record
//!   `A "pickwrandom({{2,'192.0.2.1'},{1,'192.0.2.2'}})"`. PowerDNS keeps every
//!   `LUA` record of a name in one rrset, so the `A` and `AAAA` records of one
//!   domain share it: here each is its own record set (set id = the inner
//!   type), and a `PATCH` rewrites the shared rrset keeping the other's
//!   records and comments.
//!
//! - **Route53**: one weighted record set per node (`SetIdentifier` = node
//!   id, `Weight` = the node weight scaled to 0..=255 by the core).
//! - **Cloudflare**: one plain record per address whose weight is positive
//!   (Cloudflare's DNS has no weights); record sets are keyed by address.
//! - **AliDNS**: one record per address with its weight scaled to 1..=100;
//!   weight 0 is a disabled record.
//!
//! Ownership: on embedded and PowerDNS an rrset is neutral's when a
//! comment's account is [`OWNER`]; the comment's content names the record
//! type and the policy arguments (`neutral_gtm_record A {"all_down":…}`), so
//! an import can rebuild the resource from the backend alone. The cloud
//! backends keep an ownership *registry* record as external-dns does: a TXT
//! record at `_neutral-<type>.<domain>` ([`registry_name`]) reading
//! `heritage=neutral,owner=<owner id>,…` followed by the same policy
//! arguments ([`registry_text`]). Records owned by anyone else are never
//! changed: the core's plan reports them as conflicts.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use neutral_core::dnsplan::{self, DnsPlan, RecordSet};
use neutral_core::model::{AllDownPolicy, DnsBackendKind, RecordType};
use neutral_core::weights::scale;
use serde::{Deserialize, Serialize};

use crate::client::{ChangeType, Comment, Record, RrSet, RrSetChange, Zone};

/// The comment account that marks an rrset as neutral's; the same as
/// `neutral_dns::zone::NEUTRAL_ACCOUNT`, which the embedded server reads.
pub const OWNER: &str = "neutral";

/// Prefix of the ownership comment's content.
const COMMENT_PREFIX: &str = "neutral_gtm_record";

const LUA: &str = "LUA";

/// One answer of a domain: a node, its address and its weight (0..=1000).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnswerRow {
    pub node: String,
    pub region: String,
    pub address: IpAddr,
    pub weight: u32,
}

/// The arguments an import cannot read from the records themselves.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub all_down: AllDownPolicy,
    pub min_ready_nodes: u32,
    pub regions: BTreeMap<String, u32>,
}

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

/// `name` with exactly one trailing dot.
pub fn fqdn(name: &str) -> String {
    format!("{}.", name.trim_end_matches('.'))
}

/// Answers summed per address (a node that re-registered may share one),
/// leaving out answers of weight 0 unless `keep_zero`.
fn by_address(answers: &[AnswerRow]) -> Vec<(IpAddr, u32)> {
    sum_by_address(answers, false)
}

fn sum_by_address(answers: &[AnswerRow], keep_zero: bool) -> Vec<(IpAddr, u32)> {
    let mut sums: BTreeMap<IpAddr, u32> = BTreeMap::new();
    for answer in answers.iter().filter(|a| keep_zero || a.weight > 0) {
        let sum = sums.entry(answer.address).or_default();
        *sum = sum.saturating_add(answer.weight);
    }
    sums.into_iter().collect()
}

fn set(name: &str, rtype: &str, set_id: Option<&str>, ttl: u32, values: Vec<String>) -> RecordSet {
    let mut values = values;
    values.sort();
    RecordSet {
        name: dnsplan::normalize_name(name),
        rtype: rtype.to_owned(),
        set_id: set_id.map(str::to_owned),
        ttl,
        values,
        weight: None,
        owner: None,
    }
}

/// The `pickwrandom` call of a `LUA` record.
fn pickwrandom(entries: &[(IpAddr, u32)]) -> String {
    let items: Vec<String> = entries
        .iter()
        .map(|(address, weight)| format!("{{{weight},'{address}'}}"))
        .collect();
    format!("pickwrandom({{{}}})", items.join(","))
}

/// The record sets `kind` should hold for a record of `domain` and `rtype`
/// answering with `answers`. Empty when nothing is to be answered.
pub fn desired_sets(
    kind: DnsBackendKind,
    domain: &str,
    rtype: RecordType,
    ttl: u32,
    answers: &[AnswerRow],
) -> Vec<RecordSet> {
    match kind {
        DnsBackendKind::Route53 => return route53_sets(domain, rtype, ttl, answers),
        DnsBackendKind::Alidns => return per_address_sets(kind, domain, rtype, ttl, answers),
        DnsBackendKind::Cloudflare => return per_address_sets(kind, domain, rtype, ttl, answers),
        DnsBackendKind::Embedded | DnsBackendKind::Powerdns => {}
    }
    let entries = by_address(answers);
    if entries.is_empty() {
        return Vec::new();
    }
    let weights: Vec<u32> = entries.iter().map(|(_, w)| *w).collect();
    let rendered = scale::render_weights(kind, &weights);
    let scaled: Vec<(IpAddr, u32)> = entries
        .iter()
        .map(|(address, _)| *address)
        .zip(rendered.iter().copied())
        .filter(|(_, w)| *w > 0)
        .collect();
    match kind {
        DnsBackendKind::Powerdns if !scale::weights_are_equal(&rendered) => {
            let content = format!("{} \"{}\"", rtype.as_str(), pickwrandom(&scaled));
            vec![set(domain, LUA, Some(rtype.as_str()), ttl, vec![content])]
        }
        DnsBackendKind::Powerdns => {
            let values = scaled.iter().map(|(a, _)| a.to_string()).collect();
            vec![set(domain, rtype.as_str(), None, ttl, values)]
        }
        _ => {
            let values = scaled
                .iter()
                .map(|(address, weight)| format!("{address} weight={weight}"))
                .collect();
            vec![set(domain, rtype.as_str(), None, ttl, values)]
        }
    }
}

/// Route53: one weighted set per answering node, weights scaled to 0..=255.
fn route53_sets(
    domain: &str,
    rtype: RecordType,
    ttl: u32,
    answers: &[AnswerRow],
) -> Vec<RecordSet> {
    let serving: Vec<&AnswerRow> = answers.iter().filter(|a| a.weight > 0).collect();
    let weights: Vec<u32> = serving.iter().map(|a| a.weight).collect();
    let rendered = scale::render_weights(DnsBackendKind::Route53, &weights);
    serving
        .iter()
        .zip(rendered)
        .map(|(answer, weight)| RecordSet {
            weight: Some(weight),
            ..set(
                domain,
                rtype.as_str(),
                Some(&answer.node),
                ttl,
                vec![answer.address.to_string()],
            )
        })
        .collect()
}

/// Cloudflare and AliDNS: one record per address, keyed by the address.
/// Cloudflare's records carry no weight and only positive answers are
/// records; AliDNS' carry the weight scaled to 1..=100, 0 being a disabled
/// record.
fn per_address_sets(
    kind: DnsBackendKind,
    domain: &str,
    rtype: RecordType,
    ttl: u32,
    answers: &[AnswerRow],
) -> Vec<RecordSet> {
    let entries = sum_by_address(answers, kind == DnsBackendKind::Alidns);
    let weights: Vec<u32> = entries.iter().map(|(_, w)| *w).collect();
    let rendered = scale::render_weights(kind, &weights);
    entries
        .iter()
        .zip(rendered)
        .filter(|(_, weight)| kind == DnsBackendKind::Alidns || *weight > 0)
        .map(|((address, _), weight)| {
            let address = address.to_string();
            RecordSet {
                weight: (kind == DnsBackendKind::Alidns).then_some(weight),
                ..set(
                    domain,
                    rtype.as_str(),
                    Some(&address),
                    ttl,
                    vec![address.clone()],
                )
            }
        })
        .collect()
}

/// How record sets read in a plan and in the `records` attribute:
/// `<type> <content>` per record, sorted, with ` weight=<w>` where the set
/// carries a weight and ` id=<set id>` where the set id is neither the
/// value nor the inner type of a `LUA` record (Route53's node ids). The
/// ownership registry record is left out.
pub fn presentation(sets: &[RecordSet]) -> Vec<String> {
    let mut lines: Vec<String> = sets
        .iter()
        .filter(|s| !is_registry(s))
        .flat_map(|s| {
            s.values.iter().map(move |v| {
                let mut line = format!("{} {v}", s.rtype);
                if let Some(weight) = s.weight {
                    line.push_str(&format!(" weight={weight}"));
                }
                if let Some(id) = s.set_id.as_deref()
                    && id != v
                    && !s.rtype.eq_ignore_ascii_case(LUA)
                {
                    line.push_str(&format!(" id={id}"));
                }
                line
            })
        })
        .collect();
    lines.sort();
    lines
}

// ---- the ownership registry of the cloud backends ----

/// First label prefix of a registry record's name.
pub const REGISTRY_PREFIX: &str = "_neutral-";
/// The registry record's `heritage`, as external-dns writes its own.
const HERITAGE: &str = "heritage=neutral";
/// The longest character-string of a TXT record.
const TXT_STRING_MAX: usize = 255;

/// The name of the registry record of `domain`'s `rtype` records:
/// `_neutral-a.app.example.com`.
pub fn registry_name(domain: &str, rtype: RecordType) -> String {
    format!(
        "{REGISTRY_PREFIX}{}.{}",
        rtype.as_str().to_ascii_lowercase(),
        dnsplan::normalize_name(domain)
    )
}

/// Whether `set` is an ownership registry record.
pub fn is_registry(set: &RecordSet) -> bool {
    set.rtype.eq_ignore_ascii_case("TXT") && set.name.starts_with(REGISTRY_PREFIX)
}

/// The registry record's text: who owns the records and the policy
/// arguments an import needs, as `key=value` pairs without quotes:
/// `heritage=neutral,owner=prod,resource=neutral_gtm_record,type=A,
/// all_down=fail_open,min_ready_nodes=1,regions=jp:100;sg:50`.
pub fn registry_text(owner: &str, rtype: RecordType, policy: &Policy) -> String {
    let regions: Vec<String> = policy
        .regions
        .iter()
        .map(|(region, weight)| format!("{region}:{weight}"))
        .collect();
    format!(
        "{HERITAGE},owner={owner},resource={COMMENT_PREFIX},type={},all_down={},\
         min_ready_nodes={},regions={}",
        rtype.as_str(),
        policy.all_down.as_str(),
        policy.min_ready_nodes,
        regions.join(";")
    )
}

/// What a registry record says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registry {
    pub owner: String,
    /// `None` when the text names no readable policy (another tool's).
    pub policy: Option<Policy>,
}

/// Reads a registry record's text (quoted character-strings or plain);
/// `None` when it is not neutral's registry for `rtype`.
pub fn parse_registry(value: &str, rtype: RecordType) -> Option<Registry> {
    let text = unquote_txt(value);
    let mut fields = BTreeMap::new();
    for pair in text.split(',') {
        let (key, value) = pair.split_once('=')?;
        fields.insert(key.trim(), value.trim());
    }
    if fields.get("heritage") != Some(&"neutral") {
        return None;
    }
    if fields
        .get("type")
        .is_some_and(|t| !t.eq_ignore_ascii_case(rtype.as_str()))
    {
        return None;
    }
    let owner = (*fields.get("owner")?).to_owned();
    let policy = (|| {
        let all_down = match *fields.get("all_down")? {
            "fail_open" => AllDownPolicy::FailOpen,
            "last_known_good" => AllDownPolicy::LastKnownGood,
            _ => return None,
        };
        let min_ready_nodes = fields.get("min_ready_nodes")?.parse().ok()?;
        let mut regions = BTreeMap::new();
        for entry in fields.get("regions")?.split(';').filter(|e| !e.is_empty()) {
            let (region, weight) = entry.split_once(':')?;
            regions.insert(region.to_owned(), weight.parse().ok()?);
        }
        Some(Policy {
            all_down,
            min_ready_nodes,
            regions,
        })
    })();
    Some(Registry { owner, policy })
}

/// A TXT value's text: quoted character-strings (`"a" "b"`) joined, or the
/// value as it is when unquoted.
pub fn unquote_txt(value: &str) -> String {
    let trimmed = value.trim();
    if !trimmed.starts_with('"') {
        return trimmed.to_owned();
    }
    let mut text = String::new();
    let mut inside = false;
    let mut escaped = false;
    for c in trimmed.chars() {
        match (inside, escaped, c) {
            (true, true, _) => {
                text.push(c);
                escaped = false;
            }
            (true, false, '\\') => escaped = true,
            (_, false, '"') => inside = !inside,
            (true, false, _) => text.push(c),
            (false, _, _) => {}
        }
    }
    text
}

/// `text` as quoted TXT character-strings of at most 255 characters each
/// (Route53's presentation).
pub fn quote_txt(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let strings: Vec<String> = chars
        .chunks(TXT_STRING_MAX)
        .map(|chunk| {
            let piece: String = chunk.iter().collect();
            format!("\"{}\"", piece.replace('\\', "\\\\").replace('"', "\\\""))
        })
        .collect();
    if strings.is_empty() {
        "\"\"".to_owned()
    } else {
        strings.join(" ")
    }
}

/// The TTL of registry records: long enough not to matter, and within
/// every backend's floor (AliDNS' free edition takes 600 and up).
pub fn registry_ttl(kind: DnsBackendKind) -> u32 {
    kind.ttl_floor().max(300)
}

/// The registry record of `domain`'s `rtype` records for `owner` with
/// `policy`, in `kind`'s presentation (Route53 quotes TXT values).
pub fn registry_set(
    kind: DnsBackendKind,
    domain: &str,
    rtype: RecordType,
    owner: &str,
    policy: &Policy,
) -> RecordSet {
    let text = registry_text(owner, rtype, policy);
    let value = if kind == DnsBackendKind::Route53 {
        quote_txt(&text)
    } else {
        text
    };
    set(
        &registry_name(domain, rtype),
        "TXT",
        None,
        registry_ttl(kind),
        vec![value],
    )
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
fn record_of(value: &str) -> Record {
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

#[cfg(test)]
mod tests {
    use expect_test::expect;

    use super::*;

    fn answer(node: &str, address: &str, weight: u32) -> AnswerRow {
        AnswerRow {
            node: node.to_owned(),
            region: "jp".to_owned(),
            address: address.parse().expect("address"),
            weight,
        }
    }

    fn policy() -> Policy {
        Policy {
            all_down: AllDownPolicy::FailOpen,
            min_ready_nodes: 1,
            regions: [("jp".to_owned(), 100)].into(),
        }
    }

    fn zone(rrsets: Vec<RrSet>) -> Zone {
        Zone {
            name: "example.com.".to_owned(),
            rrsets,
        }
    }

    fn rrset(rtype: &str, records: &[&str], comments: Vec<Comment>) -> RrSet {
        RrSet {
            name: "app.example.com.".to_owned(),
            rtype: rtype.to_owned(),
            ttl: 30,
            records: records.iter().map(|c| record_of(c)).collect(),
            comments,
        }
    }

    fn foreign(text: &str) -> Comment {
        Comment {
            content: text.to_owned(),
            account: "ops".to_owned(),
            modified_at: 7,
        }
    }

    /// Plans and patches like the resource does.
    fn apply(
        kind: DnsBackendKind,
        zone: &Zone,
        rtype: RecordType,
        answers: &[AnswerRow],
    ) -> (DnsPlan, Vec<RrSetChange>) {
        let desired = desired_sets(kind, "app.example.com", rtype, 30, answers);
        let current = current_sets(kind, zone, "app.example.com", rtype);
        let plan = dnsplan::plan(OWNER, &desired, &current);
        let comment = policy_comment(rtype, &policy());
        let changes = patch(
            zone,
            "app.example.com",
            rtype,
            &plan,
            &desired,
            Some(&comment),
        );
        (plan, changes)
    }

    fn json(changes: &[RrSetChange]) -> String {
        serde_json::to_string_pretty(changes).expect("json")
    }

    #[test]
    fn embedded_records_carry_node_weights() {
        let sets = desired_sets(
            DnsBackendKind::Embedded,
            "app.example.com",
            RecordType::A,
            30,
            &[
                answer("jp-1", "192.0.2.1", 50),
                answer("jp-2", "192.0.2.2", 50),
            ],
        );
        expect![[r#"["A 192.0.2.1 weight=50", "A 192.0.2.2 weight=50"]"#]]
            .assert_eq(&format!("{:?}", presentation(&sets)));
    }

    #[test]
    fn powerdns_uses_a_plain_rrset_when_weights_are_equal_and_lua_otherwise() {
        let equal = desired_sets(
            DnsBackendKind::Powerdns,
            "app.example.com",
            RecordType::A,
            30,
            &[
                answer("jp-1", "192.0.2.1", 50),
                answer("sg-1", "192.0.2.9", 50),
            ],
        );
        expect![[r#"["A 192.0.2.1", "A 192.0.2.9"]"#]]
            .assert_eq(&format!("{:?}", presentation(&equal)));
        let weighted = desired_sets(
            DnsBackendKind::Powerdns,
            "app.example.com",
            RecordType::A,
            30,
            &[
                answer("jp-1", "192.0.2.1", 100),
                answer("sg-1", "192.0.2.9", 50),
            ],
        );
        expect![[r#"["LUA A \"pickwrandom({{2,'192.0.2.1'},{1,'192.0.2.9'}})\""]"#]]
            .assert_eq(&format!("{:?}", presentation(&weighted)));
        assert_eq!(weighted[0].set_id.as_deref(), Some("A"));
    }

    #[test]
    fn answers_sharing_an_address_become_one_record() {
        let sets = desired_sets(
            DnsBackendKind::Embedded,
            "app.example.com",
            RecordType::A,
            30,
            &[
                answer("old", "192.0.2.1", 30),
                answer("new", "192.0.2.1", 20),
            ],
        );
        assert_eq!(presentation(&sets), ["A 192.0.2.1 weight=50"]);
        assert!(
            desired_sets(
                DnsBackendKind::Embedded,
                "a.example.com",
                RecordType::A,
                30,
                &[]
            )
            .is_empty()
        );
    }

    #[test]
    fn the_policy_comment_round_trips_and_names_its_type() {
        let comment = policy_comment(RecordType::Aaaa, &policy());
        expect![[r#"neutral_gtm_record AAAA {"all_down":"fail_open","min_ready_nodes":1,"regions":{"jp":100}}"#]]
            .assert_eq(&comment.content);
        let set = rrset("AAAA", &["2001:db8::1"], vec![comment]);
        assert_eq!(policy_of(&set, RecordType::Aaaa), Some(policy()));
        assert_eq!(policy_of(&set, RecordType::A), None);
    }

    #[test]
    fn creating_in_an_empty_zone_replaces_one_rrset_with_the_comment() {
        let (plan, changes) = apply(
            DnsBackendKind::Embedded,
            &zone(Vec::new()),
            RecordType::A,
            &[answer("jp-1", "192.0.2.1", 100)],
        );
        assert_eq!(plan.counts(), (1, 0, 0));
        expect![[r#"
            [
              {
                "name": "app.example.com.",
                "type": "A",
                "ttl": 30,
                "changetype": "REPLACE",
                "records": [
                  {
                    "content": "192.0.2.1",
                    "disabled": false,
                    "weight": 100
                  }
                ],
                "comments": [
                  {
                    "content": "neutral_gtm_record A {\"all_down\":\"fail_open\",\"min_ready_nodes\":1,\"regions\":{\"jp\":100}}",
                    "account": "neutral"
                  }
                ]
              }
            ]"#]]
        .assert_eq(&json(&changes));
    }

    #[test]
    fn nothing_is_written_when_the_backend_already_holds_the_records() {
        let answers = [answer("jp-1", "192.0.2.1", 100)];
        let comment = policy_comment(RecordType::A, &policy());
        let current = zone(vec![rrset("A", &["192.0.2.1 weight=100"], vec![comment])]);
        let (plan, changes) = apply(DnsBackendKind::Embedded, &current, RecordType::A, &answers);
        assert!(plan.is_empty());
        assert!(changes.is_empty(), "{changes:?}");
    }

    #[test]
    fn a_changed_policy_alone_rewrites_only_the_comment() {
        let answers = [answer("jp-1", "192.0.2.1", 100)];
        let mut old = policy();
        old.min_ready_nodes = 2;
        let current = zone(vec![rrset(
            "A",
            &["192.0.2.1 weight=100"],
            vec![policy_comment(RecordType::A, &old), foreign("ticket 42")],
        )]);
        let (plan, changes) = apply(DnsBackendKind::Embedded, &current, RecordType::A, &answers);
        assert!(plan.is_empty());
        assert_eq!(changes.len(), 1);
        let comments = changes[0].comments.as_ref().expect("comments");
        assert_eq!(comments.len(), 2);
        assert!(comments.iter().any(|c| c.content == "ticket 42"));
        assert!(
            comments
                .iter()
                .any(|c| c.content.contains("\"min_ready_nodes\":1"))
        );
    }

    #[test]
    fn records_owned_by_someone_else_are_conflicts_and_left_alone() {
        let current = zone(vec![rrset(
            "A",
            &["198.51.100.7"],
            vec![foreign("hand made")],
        )]);
        let (plan, _) = apply(
            DnsBackendKind::Powerdns,
            &current,
            RecordType::A,
            &[answer("jp-1", "192.0.2.1", 100)],
        );
        assert!(plan.changes.is_empty());
        assert_eq!(plan.conflicts.len(), 1);
        assert!(plan.conflicts[0].reason.contains("not owned"));
    }

    #[test]
    fn switching_powerdns_from_plain_to_lua_deletes_the_plain_rrset_in_the_same_patch() {
        let comment = policy_comment(RecordType::A, &policy());
        let current = zone(vec![rrset("A", &["192.0.2.1", "192.0.2.9"], vec![comment])]);
        let (_, changes) = apply(
            DnsBackendKind::Powerdns,
            &current,
            RecordType::A,
            &[
                answer("jp-1", "192.0.2.1", 100),
                answer("sg-1", "192.0.2.9", 50),
            ],
        );
        let summary: Vec<String> = changes
            .iter()
            .map(|c| {
                format!(
                    "{:?} {} {}",
                    c.changetype,
                    c.rtype,
                    c.records.as_ref().map_or(0, Vec::len)
                )
            })
            .collect();
        assert_eq!(summary, ["Delete A 0", "Replace LUA 1"]);
    }

    #[test]
    fn the_a_and_aaaa_lua_records_of_one_name_share_an_rrset_without_losing_each_other() {
        let aaaa_comment = policy_comment(RecordType::Aaaa, &policy());
        let current = zone(vec![rrset(
            "LUA",
            &["AAAA \"pickwrandom({{2,'2001:db8::1'},{1,'2001:db8::2'}})\""],
            vec![aaaa_comment.clone()],
        )]);
        let answers = [
            answer("jp-1", "192.0.2.1", 100),
            answer("sg-1", "192.0.2.9", 50),
        ];
        let (plan, changes) = apply(DnsBackendKind::Powerdns, &current, RecordType::A, &answers);
        assert_eq!(
            plan.counts(),
            (1, 0, 0),
            "the AAAA part is not ours to plan"
        );
        let change = &changes[0];
        assert_eq!(change.changetype, ChangeType::Replace);
        assert_eq!(change.records.as_ref().expect("records").len(), 2);
        assert_eq!(change.comments.as_ref().expect("comments").len(), 2);

        // Destroying the A record keeps the AAAA one and its comment.
        let both = zone(vec![rrset(
            "LUA",
            &[
                "AAAA \"pickwrandom({{2,'2001:db8::1'},{1,'2001:db8::2'}})\"",
                "A \"pickwrandom({{2,'192.0.2.1'},{1,'192.0.2.9'}})\"",
            ],
            vec![aaaa_comment, policy_comment(RecordType::A, &policy())],
        )]);
        let current = current_sets(
            DnsBackendKind::Powerdns,
            &both,
            "app.example.com",
            RecordType::A,
        );
        let plan = dnsplan::plan(OWNER, &[], &current);
        assert_eq!(plan.counts(), (0, 0, 1));
        let changes = patch(&both, "app.example.com", RecordType::A, &plan, &[], None);
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].changetype, ChangeType::Replace);
        let kept = changes[0].records.as_ref().expect("records");
        assert_eq!(kept.len(), 1);
        assert!(kept[0].content.starts_with("AAAA "));
        let comments = changes[0].comments.as_ref().expect("comments");
        assert!(comments.iter().all(|c| c.content.contains(" AAAA ")));
    }

    #[test]
    fn destroying_deletes_only_owned_rrsets() {
        let comment = policy_comment(RecordType::A, &policy());
        let mut www = rrset("A", &["198.51.100.1"], Vec::new());
        www.name = "www.example.com.".to_owned();
        let current_zone = zone(vec![
            rrset("A", &["192.0.2.1 weight=100"], vec![comment]),
            www,
        ]);
        let current = current_sets(
            DnsBackendKind::Embedded,
            &current_zone,
            "app.example.com",
            RecordType::A,
        );
        let plan = dnsplan::plan(OWNER, &[], &current);
        let changes = patch(
            &current_zone,
            "app.example.com",
            RecordType::A,
            &plan,
            &[],
            None,
        );
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].name, "app.example.com.");
        assert_eq!(changes[0].changetype, ChangeType::Delete);
    }

    fn weighted() -> Vec<AnswerRow> {
        vec![
            answer("jp-1", "192.0.2.1", 50),
            answer("jp-2", "192.0.2.2", 50),
            answer("sg-1", "192.0.2.9", 100),
        ]
    }

    #[test]
    fn route53_gets_one_weighted_set_per_node_scaled_to_255() {
        let sets = desired_sets(
            DnsBackendKind::Route53,
            "app.example.com",
            RecordType::A,
            30,
            &weighted(),
        );
        expect![[r#"["A 192.0.2.1 weight=128 id=jp-1", "A 192.0.2.2 weight=127 id=jp-2", "A 192.0.2.9 weight=255 id=sg-1"]"#]]
            .assert_eq(&format!("{:?}", presentation(&sets)));
        assert!(sets.iter().all(|s| s.set_id.is_some()));
    }

    #[test]
    fn cloudflare_gets_plain_records_and_alidns_weights_to_100() {
        let cloudflare = desired_sets(
            DnsBackendKind::Cloudflare,
            "app.example.com",
            RecordType::A,
            60,
            &weighted(),
        );
        expect![[r#"["A 192.0.2.1", "A 192.0.2.2", "A 192.0.2.9"]"#]]
            .assert_eq(&format!("{:?}", presentation(&cloudflare)));
        let mut answers = weighted();
        answers.push(answer("sg-2", "192.0.2.10", 0));
        let alidns = desired_sets(
            DnsBackendKind::Alidns,
            "app.example.com",
            RecordType::A,
            600,
            &answers,
        );
        expect![[r#"["A 192.0.2.1 weight=50", "A 192.0.2.10 weight=0", "A 192.0.2.2 weight=50", "A 192.0.2.9 weight=100"]"#]]
            .assert_eq(&format!("{:?}", presentation(&alidns)));
    }

    #[test]
    fn the_registry_names_its_owner_and_policy_and_reads_back() {
        let text = registry_text("prod", RecordType::A, &policy());
        expect![[r#"heritage=neutral,owner=prod,resource=neutral_gtm_record,type=A,all_down=fail_open,min_ready_nodes=1,regions=jp:100"#]]
            .assert_eq(&text);
        let expected = Some(Registry {
            owner: "prod".to_owned(),
            policy: Some(policy()),
        });
        assert_eq!(parse_registry(&text, RecordType::A), expected);
        assert_eq!(parse_registry(&quote_txt(&text), RecordType::A), expected);
        assert_eq!(parse_registry(&text, RecordType::Aaaa), None);
        assert_eq!(
            parse_registry("\"heritage=external-dns,owner=prod\"", RecordType::A),
            None
        );
        let route53 = registry_set(
            DnsBackendKind::Route53,
            "app.example.com",
            RecordType::A,
            "prod",
            &policy(),
        );
        assert_eq!(route53.name, "_neutral-a.app.example.com");
        assert!(is_registry(&route53));
        assert!(presentation(&[route53]).is_empty());
    }

    #[test]
    fn long_txt_text_is_split_into_255_character_strings() {
        let text = "x".repeat(600);
        let quoted = quote_txt(&text);
        assert_eq!(quoted.matches('"').count(), 6);
        assert_eq!(unquote_txt(&quoted), text);
        assert_eq!(unquote_txt("\"a\\\"b\" \"c\""), "a\"bc");
    }

    #[test]
    fn a_hand_edited_record_shows_in_the_presentation() {
        let comment = policy_comment(RecordType::A, &policy());
        let edited = zone(vec![rrset("A", &["203.0.113.9 weight=100"], vec![comment])]);
        let current = current_sets(
            DnsBackendKind::Embedded,
            &edited,
            "app.example.com",
            RecordType::A,
        );
        assert_eq!(presentation(&current), ["A 203.0.113.9 weight=100"]);
        assert_eq!(current[0].owner.as_deref(), Some(OWNER));
    }
}
