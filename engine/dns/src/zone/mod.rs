//! Zones as PowerDNS' HTTP API shows them, and the all-or-nothing `PATCH` that
//! changes them.
//!
//! This module owns the JSON shape (field names, trailing-dot names,
//! `changetype`) and the rules a zone must keep: names absolute and inside the
//! zone, content valid for its type, one SOA at the apex, an NS rrset at the
//! apex, a CNAME alone at its name, a serial bumped on every change. It is pure:
//! no IO, no clock (a comment's `modified_at` is stamped by the caller, see
//! [`ZonePatch::stamp_comments`]), no randomness. Serving is
//! [`crate::snapshot`]'s job; persistence belongs to the store.
//!
//! Differences from PowerDNS, by design: only the types in
//! [`RrType`] are accepted (no `LUA`: weights are a record field here), no
//! wildcard owners, TXT content must be quoted strings, and `weight` on a
//! record is neutral's extension (A/AAAA only, on every record of the rrset or
//! none).

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::content::{self, RrType};

/// The largest TTL a record may carry (RFC 2181 §8).
pub const MAX_TTL: u32 = 2_147_483_647;

/// The comment account neutral's Terraform provider marks its rrsets with.
pub const NEUTRAL_ACCOUNT: &str = "neutral";

pub use neutral_core::pdns_api::{
    ChangeType, Comment, Record, RrSet, RrSetChange, Zone, ZonePatch,
};

/// Reads a PowerDNS-API body strictly: as the shared, lenient types in
/// [`neutral_core::pdns_api`] read it, but refusing any field they do not
/// know (a misspelt `changetyp` would otherwise do nothing), naming each by
/// its JSON path. Syntax and type errors are serde's, with line and column.
pub fn parse_strict<T: serde::de::DeserializeOwned>(json: &[u8]) -> Result<T, String> {
    let mut reader = serde_json::Deserializer::from_slice(json);
    let value = read_strict(&mut reader)?;
    reader.end().map_err(|err| err.to_string())?;
    Ok(value)
}

/// [`parse_strict`] over any deserializer (a `serde_json::Value` an HTTP
/// extractor already parsed, say).
pub fn read_strict<'de, T, D>(deserializer: D) -> Result<T, String>
where
    T: Deserialize<'de>,
    D: serde::Deserializer<'de>,
{
    let mut unknown = Vec::new();
    let value: T = serde_ignored::deserialize(deserializer, |path| {
        unknown.push(format!("`{}`", json_path(&path)));
    })
    .map_err(|err| err.to_string())?;
    match unknown.as_slice() {
        [] => Ok(value),
        [one] => Err(format!("unknown field {one}")),
        many => Err(format!("unknown fields {}", many.join(", "))),
    }
}

/// `rrsets[0].color` for serde_ignored's path.
fn json_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", json_path(parent)),
        Path::Map { parent, key } => match json_path(parent) {
            parent if parent.is_empty() => key.clone(),
            parent => format!("{parent}.{key}"),
        },
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => json_path(parent),
    }
}

/// One problem, at the JSON path of the field that has it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// `rrsets[2].records[0].content`; empty for the whole request.
    pub path: String,
    pub message: String,
}

impl Problem {
    fn new(path: impl Into<String>, message: impl Into<String>) -> Problem {
        Problem {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Why a zone could not be created, patched or loaded: every problem found,
/// not only the first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("zone {zone}: {}", join_problems(.problems))]
pub struct ZoneError {
    pub zone: String,
    pub problems: Vec<Problem>,
}

/// The error of [`apply_patch`].
pub type PatchError = ZoneError;

fn join_problems(problems: &[Problem]) -> String {
    let texts: Vec<String> = problems.iter().map(Problem::to_string).collect();
    texts.join("; ")
}

/// SOA and NS settings of a new zone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZoneDefaults {
    /// TTL of the SOA and NS rrsets.
    pub ttl: u32,
    /// The SOA's responsible mailbox; `hostmaster.<zone>` when absent.
    pub hostmaster: Option<String>,
    pub serial: u32,
    pub refresh: u32,
    pub retry: u32,
    pub expire: u32,
    /// Negative-caching TTL (RFC 2308).
    pub minimum: u32,
}

impl Default for ZoneDefaults {
    fn default() -> Self {
        ZoneDefaults {
            ttl: 3600,
            hostmaster: None,
            serial: 1,
            refresh: 10800,
            retry: 3600,
            expire: 604_800,
            minimum: 3600,
        }
    }
}

/// The zone rules this server keeps, on the shared [`Zone`] type.
pub trait ZoneRules: Sized {
    /// A new zone holding its SOA (primary = the first name server) and NS
    /// rrsets at the apex, with [`ZoneDefaults`].
    fn create(name: &str, nameservers: &[&str]) -> Result<Self, ZoneError>;

    fn create_with(
        name: &str,
        nameservers: &[&str],
        defaults: &ZoneDefaults,
    ) -> Result<Self, ZoneError>;

    /// Checks every rule of a zone as a whole (for zones read back from a
    /// store): the name, every rrset as [`apply_patch`] would, one SOA and an
    /// NS rrset at the apex, CNAMEs alone at their names.
    fn validate(&self) -> Result<(), ZoneError>;
}

impl ZoneRules for Zone {
    fn create(name: &str, nameservers: &[&str]) -> Result<Zone, ZoneError> {
        Zone::create_with(name, nameservers, &ZoneDefaults::default())
    }

    fn create_with(
        name: &str,
        nameservers: &[&str],
        defaults: &ZoneDefaults,
    ) -> Result<Zone, ZoneError> {
        let mut problems = Vec::new();
        let zone = match content::check_absolute_name(name, false) {
            Ok(zone) => zone,
            Err(message) => {
                problems.push(Problem::new("name", message));
                name.to_owned()
            }
        };
        if nameservers.is_empty() {
            problems.push(Problem::new(
                "nameservers",
                "at least one name server is required",
            ));
        }
        let mut servers = Vec::new();
        for (index, server) in nameservers.iter().enumerate() {
            match content::check_absolute_name(server, false) {
                Ok(server) if servers.contains(&server) => problems.push(Problem::new(
                    format!("nameservers[{index}]"),
                    format!("`{server}` is listed twice"),
                )),
                Ok(server) => servers.push(server),
                Err(message) => {
                    problems.push(Problem::new(format!("nameservers[{index}]"), message));
                }
            }
        }
        let hostmaster = match &defaults.hostmaster {
            Some(mailbox) => match content::check_absolute_name(mailbox, false) {
                Ok(mailbox) => mailbox,
                Err(message) => {
                    problems.push(Problem::new("hostmaster", message));
                    String::new()
                }
            },
            None => format!("hostmaster.{zone}"),
        };
        for (field, value) in [
            ("refresh", defaults.refresh),
            ("retry", defaults.retry),
            ("expire", defaults.expire),
            ("ttl", defaults.ttl),
        ] {
            if value > MAX_TTL {
                problems.push(Problem::new(field, format!("{value} exceeds {MAX_TTL}")));
            }
        }
        let (Some(primary), true) = (servers.first(), problems.is_empty()) else {
            return Err(ZoneError { zone, problems });
        };
        let soa = format!(
            "{primary} {hostmaster} {} {} {} {} {}",
            defaults.serial, defaults.refresh, defaults.retry, defaults.expire, defaults.minimum
        );
        let mut rrsets = vec![
            RrSet {
                name: zone.clone(),
                rtype: "NS".to_owned(),
                ttl: defaults.ttl,
                records: servers.iter().map(Record::new).collect(),
                comments: Vec::new(),
            },
            RrSet {
                name: zone.clone(),
                rtype: "SOA".to_owned(),
                ttl: defaults.ttl,
                records: vec![Record::new(soa)],
                comments: Vec::new(),
            },
        ];
        sort_rrsets(&mut rrsets);
        let created = Zone {
            serial: defaults.serial,
            ..Zone::named(zone.clone(), rrsets)
        };
        // The SOA text is built from checked parts, but check it like any other.
        created.validate()?;
        Ok(created)
    }

    fn validate(&self) -> Result<(), ZoneError> {
        let mut problems = Vec::new();
        let zone = match content::check_absolute_name(&self.name, false) {
            Ok(zone) => zone,
            Err(message) => {
                return Err(ZoneError {
                    zone: self.name.clone(),
                    problems: vec![Problem::new("name", message)],
                });
            }
        };
        let mut seen: HashMap<(String, RrType), usize> = HashMap::new();
        let mut types_at: BTreeMap<String, Vec<(RrType, usize)>> = BTreeMap::new();
        for (index, rrset) in self.rrsets.iter().enumerate() {
            let path = format!("rrsets[{index}]");
            let name = check_owner(&zone, &rrset.name, &format!("{path}.name"), &mut problems);
            let rtype = check_type(&rrset.rtype, &format!("{path}.type"), &mut problems);
            if rrset.ttl > MAX_TTL {
                problems.push(Problem::new(
                    format!("{path}.ttl"),
                    format!("{} exceeds {MAX_TTL}", rrset.ttl),
                ));
            }
            let (Some(name), Some(rtype)) = (name, rtype) else {
                continue;
            };
            if let Some(first) = seen.insert((name.clone(), rtype), index) {
                problems.push(Problem::new(
                    path.clone(),
                    format!("duplicate of rrsets[{first}] ({name} {rtype})"),
                ));
                continue;
            }
            check_placement(&zone, &name, rtype, &path, &mut problems);
            check_records(rtype, &rrset.records, &path, &mut problems);
            if !rrset.records.is_empty() {
                types_at.entry(name).or_default().push((rtype, index));
            }
        }
        if !seen.contains_key(&(zone.clone(), RrType::Soa)) {
            problems.push(Problem::new(
                "rrsets",
                format!("no SOA rrset at the apex `{zone}`"),
            ));
        }
        if !types_at
            .get(&zone)
            .is_some_and(|types| types.iter().any(|(t, _)| *t == RrType::Ns))
        {
            problems.push(Problem::new(
                "rrsets",
                format!("no NS rrset at the apex `{zone}`"),
            ));
        }
        for (name, types) in &types_at {
            if let Some(problem) = cname_conflict(name, types) {
                problems.push(problem);
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ZoneError { zone, problems })
        }
    }
}

fn sort_rrsets(rrsets: &mut [RrSet]) {
    rrsets.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.rtype.cmp(&b.rtype)));
}

/// A change that passed every per-change check, ready to apply.
struct CheckedChange<'p> {
    index: usize,
    name: String,
    rtype: RrType,
    change: &'p RrSetChange,
}

/// Applies `patch` to `zone`, all or nothing: every change is checked first,
/// and the result is returned only when every change and the zone they leave
/// behind are valid. The serial goes up by one (or to the patched SOA's serial
/// when that is newer in RFC 1982 order); an empty patch changes nothing.
pub fn apply_patch(zone: &Zone, patch: &ZonePatch) -> Result<Zone, PatchError> {
    let zone_name = zone.name.to_ascii_lowercase();
    let fail = |problems: Vec<Problem>| ZoneError {
        zone: zone_name.clone(),
        problems,
    };
    if patch.rrsets.is_empty() {
        return Ok(zone.clone());
    }
    let mut problems = Vec::new();
    let mut seen: HashMap<(String, RrType), usize> = HashMap::new();
    let mut checked = Vec::new();
    for (index, change) in patch.rrsets.iter().enumerate() {
        let path = format!("rrsets[{index}]");
        let name = check_owner(
            &zone_name,
            &change.name,
            &format!("{path}.name"),
            &mut problems,
        );
        let rtype = check_type(&change.rtype, &format!("{path}.type"), &mut problems);
        let (Some(name), Some(rtype)) = (name, rtype) else {
            continue;
        };
        if let Some(first) = seen.insert((name.clone(), rtype), index) {
            problems.push(Problem::new(
                path,
                format!(
                    "duplicate of rrsets[{first}] ({name} {rtype}); one change per name and type"
                ),
            ));
            continue;
        }
        check_change(&zone_name, &name, rtype, change, &path, &mut problems);
        checked.push(CheckedChange {
            index,
            name,
            rtype,
            change,
        });
    }
    if !problems.is_empty() {
        return Err(fail(problems));
    }

    let mut rrsets: BTreeMap<(String, String), RrSet> = zone
        .rrsets
        .iter()
        .map(|r| {
            let key = (r.name.to_ascii_lowercase(), r.rtype.to_ascii_uppercase());
            (key, r.clone())
        })
        .collect();
    let mut patched_soa_serial = None;
    for CheckedChange {
        name,
        rtype,
        change,
        ..
    } in &checked
    {
        let key = (name.clone(), rtype.as_str().to_owned());
        match change.changetype {
            ChangeType::Delete => {
                rrsets.remove(&key);
            }
            ChangeType::Replace => {
                let existing = rrsets.remove(&key);
                let (old_records, old_comments) = existing
                    .map(|r| (r.records, r.comments))
                    .unwrap_or_default();
                let records = change.records.clone().unwrap_or(old_records);
                let comments = change.comments.clone().unwrap_or(old_comments);
                if *rtype == RrType::Soa {
                    patched_soa_serial = records
                        .first()
                        .and_then(|r| content::soa_serial(&r.content));
                }
                if records.is_empty() && comments.is_empty() {
                    continue;
                }
                rrsets.insert(
                    key,
                    RrSet {
                        name: name.clone(),
                        rtype: rtype.as_str().to_owned(),
                        ttl: change.ttl.unwrap_or_default(),
                        records,
                        comments,
                    },
                );
            }
        }
    }

    // Rules about the zone the changes leave behind, reported at the change
    // that touched the name.
    let mut touched: BTreeSet<&str> = BTreeSet::new();
    for checked_change in &checked {
        if !touched.insert(&checked_change.name) {
            continue;
        }
        let types: Vec<(RrType, usize)> = rrsets
            .values()
            .filter(|r| r.name == checked_change.name && !r.records.is_empty())
            .filter_map(|r| RrType::parse(&r.rtype).map(|t| (t, checked_change.index)))
            .collect();
        if let Some(mut problem) = cname_conflict(&checked_change.name, &types) {
            problem.path = format!("rrsets[{}]", checked_change.index);
            problems.push(problem);
        }
    }
    if !problems.is_empty() {
        return Err(fail(problems));
    }

    let soa_key = (zone_name.clone(), "SOA".to_owned());
    let old_serial = zone
        .rrset(&zone_name, "SOA")
        .and_then(|r| r.records.first())
        .and_then(|r| content::soa_serial(&r.content))
        .unwrap_or(zone.serial);
    let serial = match patched_soa_serial {
        Some(patched) if serial_newer(patched, old_serial) => patched,
        _ => old_serial.wrapping_add(1),
    };
    let Some(soa_record) = rrsets.get_mut(&soa_key).and_then(|r| r.records.first_mut()) else {
        return Err(fail(vec![Problem::new(
            "",
            format!("the zone has no SOA at `{zone_name}` to bump; it cannot be patched"),
        )]));
    };
    match content::soa_with_serial(&soa_record.content, serial) {
        Some(content) => soa_record.content = content,
        None => {
            return Err(fail(vec![Problem::new(
                "",
                format!(
                    "the zone's SOA `{}` is malformed; it cannot be patched",
                    soa_record.content
                ),
            )]));
        }
    }

    let mut rrsets: Vec<RrSet> = rrsets.into_values().collect();
    sort_rrsets(&mut rrsets);
    Ok(Zone {
        id: zone_name.clone(),
        name: zone_name,
        kind: zone.kind.clone(),
        serial,
        rrsets,
    })
}

/// RFC 1982 serial arithmetic: whether `a` is newer than `b`.
pub fn serial_newer(a: u32, b: u32) -> bool {
    a != b && a.wrapping_sub(b) < (1 << 31)
}

/// The owner name, lowercased, when it is absolute and inside `zone`.
fn check_owner(zone: &str, name: &str, path: &str, problems: &mut Vec<Problem>) -> Option<String> {
    match content::check_absolute_name(name, false) {
        Ok(name) if is_in_zone(&name, zone) => Some(name),
        Ok(name) => {
            problems.push(Problem::new(
                path,
                format!("`{name}` is not inside the zone `{zone}`"),
            ));
            None
        }
        Err(message) => {
            problems.push(Problem::new(path, message));
            None
        }
    }
}

/// Whether the lowercase absolute `name` is `zone` or below it.
pub fn is_in_zone(name: &str, zone: &str) -> bool {
    name == zone
        || name
            .strip_suffix(zone)
            .is_some_and(|prefix| prefix.ends_with('.'))
}

fn check_type(rtype: &str, path: &str, problems: &mut Vec<Problem>) -> Option<RrType> {
    let parsed = RrType::parse(rtype);
    if parsed.is_none() {
        problems.push(Problem::new(
            path,
            format!(
                "`{rtype}` is not supported (use {})",
                RrType::supported_list()
            ),
        ));
    }
    parsed
}

/// Where a type may live: SOA only at the apex.
fn check_placement(zone: &str, name: &str, rtype: RrType, path: &str, problems: &mut Vec<Problem>) {
    if rtype == RrType::Soa && name != zone {
        problems.push(Problem::new(
            format!("{path}.name"),
            format!("an SOA is only allowed at the zone apex `{zone}`"),
        ));
    }
}

fn check_change(
    zone: &str,
    name: &str,
    rtype: RrType,
    change: &RrSetChange,
    path: &str,
    problems: &mut Vec<Problem>,
) {
    let apex = name == zone;
    match change.changetype {
        ChangeType::Delete => {
            if change.records.as_ref().is_some_and(|r| !r.is_empty()) {
                problems.push(Problem::new(
                    format!("{path}.records"),
                    "must be empty for DELETE",
                ));
            }
            if change.comments.as_ref().is_some_and(|c| !c.is_empty()) {
                problems.push(Problem::new(
                    format!("{path}.comments"),
                    "must be empty for DELETE",
                ));
            }
            if rtype == RrType::Soa {
                problems.push(Problem::new(
                    format!("{path}.changetype"),
                    "the SOA cannot be deleted, only replaced",
                ));
            } else if rtype == RrType::Ns && apex {
                problems.push(Problem::new(
                    format!("{path}.changetype"),
                    "the zone's NS rrset at the apex cannot be deleted",
                ));
            }
        }
        ChangeType::Replace => {
            match change.ttl {
                None => problems.push(Problem::new(format!("{path}.ttl"), "required for REPLACE")),
                Some(ttl) if ttl > MAX_TTL => problems.push(Problem::new(
                    format!("{path}.ttl"),
                    format!("{ttl} exceeds {MAX_TTL}"),
                )),
                Some(_) => {}
            }
            check_placement(zone, name, rtype, path, problems);
            match &change.records {
                None if change.comments.is_none() => problems.push(Problem::new(
                    path,
                    "REPLACE needs `records`, `comments` or both",
                )),
                None => {}
                Some(records) => {
                    check_records(rtype, records, path, problems);
                    if rtype == RrType::Ns && apex && records.iter().all(|r| r.disabled) {
                        problems.push(Problem::new(
                            format!("{path}.records"),
                            "the zone's NS rrset at the apex needs at least one enabled record",
                        ));
                    }
                }
            }
        }
    }
}

/// Per-record rules of an rrset of `rtype`: content, duplicates, weights, and
/// the single-record types.
fn check_records(rtype: RrType, records: &[Record], path: &str, problems: &mut Vec<Problem>) {
    let mut parsed: Vec<(usize, hickory_proto::rr::RData)> = Vec::new();
    for (index, record) in records.iter().enumerate() {
        let record_path = format!("{path}.records[{index}]");
        match content::parse_content(rtype, &record.content) {
            Ok(data) => {
                if let Some((first, _)) = parsed.iter().find(|(_, seen)| *seen == data) {
                    problems.push(Problem::new(
                        format!("{record_path}.content"),
                        format!("`{}` duplicates records[{first}]", record.content),
                    ));
                } else {
                    parsed.push((index, data));
                }
            }
            Err(message) => problems.push(Problem::new(format!("{record_path}.content"), message)),
        }
        if record.weight.is_some() && !rtype.is_address() {
            problems.push(Problem::new(
                format!("{record_path}.weight"),
                format!("weights are only supported on A and AAAA records, not {rtype}"),
            ));
        }
    }
    if rtype.is_address()
        && records.iter().any(|r| r.weight.is_some())
        && let Some(index) = records.iter().position(|r| r.weight.is_none())
    {
        problems.push(Problem::new(
            format!("{path}.records[{index}].weight"),
            "missing; give every record of the rrset a weight, or none",
        ));
    }
    let single = match rtype {
        RrType::Cname => Some("a CNAME"),
        RrType::Soa => Some("the SOA"),
        _ => None,
    };
    if let Some(what) = single {
        if rtype == RrType::Soa && records.is_empty() {
            problems.push(Problem::new(
                format!("{path}.records"),
                "the SOA rrset needs its one record",
            ));
        } else if records.len() > 1 {
            problems.push(Problem::new(
                format!("{path}.records"),
                format!(
                    "{what} rrset holds exactly one record, got {}",
                    records.len()
                ),
            ));
        }
    }
    if rtype == RrType::Soa
        && let Some(index) = records.iter().position(|r| r.disabled)
    {
        problems.push(Problem::new(
            format!("{path}.records[{index}].disabled"),
            "the SOA record cannot be disabled",
        ));
    }
}

/// A CNAME must be the only rrset (with records) at its name (RFC 1034 §3.6.2).
/// `types` pairs each type at `name` with the index to report it at.
fn cname_conflict(name: &str, types: &[(RrType, usize)]) -> Option<Problem> {
    let cname = types.iter().find(|(t, _)| *t == RrType::Cname)?;
    let others: Vec<&str> = types
        .iter()
        .filter(|(t, _)| *t != RrType::Cname)
        .map(|(t, _)| t.as_str())
        .collect();
    if others.is_empty() {
        return None;
    }
    Some(Problem::new(
        format!("rrsets[{}]", cname.1),
        format!(
            "`{name}` would have a CNAME and other rrsets ({}); a CNAME must be alone at its name",
            others.join(", ")
        ),
    ))
}

/// The zones a server holds, keyed by lowercase name with the trailing dot.
///
/// Serialized as a JSON list of zones.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "Vec<Zone>", into = "Vec<Zone>")]
pub struct ZoneSet {
    zones: BTreeMap<String, Zone>,
}

/// `example.com`, `Example.COM.` → `example.com.`.
pub fn zone_key(name: &str) -> String {
    let lower = name.to_ascii_lowercase();
    if lower.ends_with('.') {
        lower
    } else {
        format!("{lower}.")
    }
}

impl ZoneSet {
    pub fn new() -> ZoneSet {
        ZoneSet::default()
    }

    /// Adds or replaces a zone; returns the one it replaced.
    pub fn insert(&mut self, zone: Zone) -> Option<Zone> {
        self.zones.insert(zone_key(&zone.name), zone)
    }

    /// The zone named `name`, with or without the trailing dot, any case.
    pub fn get(&self, name: &str) -> Option<&Zone> {
        self.zones.get(&zone_key(name))
    }

    pub fn remove(&mut self, name: &str) -> Option<Zone> {
        self.zones.remove(&zone_key(name))
    }

    pub fn iter(&self) -> impl Iterator<Item = &Zone> {
        self.zones.values()
    }

    pub fn len(&self) -> usize {
        self.zones.len()
    }

    pub fn is_empty(&self) -> bool {
        self.zones.is_empty()
    }
}

impl From<Vec<Zone>> for ZoneSet {
    fn from(zones: Vec<Zone>) -> Self {
        zones.into_iter().collect()
    }
}

impl From<ZoneSet> for Vec<Zone> {
    fn from(set: ZoneSet) -> Self {
        set.zones.into_values().collect()
    }
}

impl FromIterator<Zone> for ZoneSet {
    fn from_iter<I: IntoIterator<Item = Zone>>(iter: I) -> Self {
        let mut set = ZoneSet::new();
        for zone in iter {
            set.insert(zone);
        }
        set
    }
}
