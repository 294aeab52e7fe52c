//! What the server answers from: zones compiled into wire records, the answer
//! sets health leaves for every A/AAAA rrset, and the lookup of one query.
//!
//! This module owns query resolution for an authoritative server: the zone by
//! longest suffix (none, or a zone transfer: REFUSED), the AA bit, SOA and NS at the apex, NXDOMAIN
//! and NODATA with the SOA for negative caching, CNAME chasing inside the
//! zone, referrals below an NS cut, stored TTLs, and one weighted record per
//! A/AAAA answer. It is pure: the random roll is a closure argument, and a
//! [`Snapshot`] is immutable once built, so queries share it without locks.
//! Sockets, the health memory and metrics live in [`crate::server`].
//!
//! Zones are compiled leniently: an rrset or record a store hands back that
//! fails the zone rules is left out and reported, never fatal; a zone without
//! a usable SOA is left out whole.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::HINFO;
use hickory_proto::rr::{LowerName, Name, RData, Record as DnsRecord, RecordType};

use crate::content::{self, RrType};
use crate::health::{AnswerSet, Candidate, HealthView, ServeMode, answer_set};
use crate::zone::{Zone, ZoneSet, is_in_zone};

/// Longest CNAME chain followed before answering SERVFAIL.
pub const MAX_CNAME_CHAIN: usize = 8;

/// One zone in wire form. Immutable; shared between snapshots.
#[derive(Debug)]
pub struct CompiledZone {
    name: String,
    origin: LowerName,
    soa: DnsRecord,
    /// The SOA with its TTL lowered to the negative-caching TTL (RFC 2308 §5).
    negative_soa: DnsRecord,
    nodes: HashMap<LowerName, NameNode>,
    /// Names below the apex that hold an NS rrset: delegation points.
    cuts: HashSet<LowerName>,
    address_sets: Vec<AddressSet>,
    /// The address sets (indexes) each address is a candidate of: what one
    /// node's status change touches.
    by_address: HashMap<IpAddr, Vec<usize>>,
}

/// The rrsets at one name; none for an empty non-terminal.
#[derive(Debug, Default)]
struct NameNode {
    rrsets: Vec<CompiledRrSet>,
}

impl NameNode {
    fn rrset(&self, rtype: RecordType) -> Option<&CompiledRrSet> {
        self.rrsets.iter().find(|r| r.rtype == rtype)
    }
}

#[derive(Debug)]
struct CompiledRrSet {
    rtype: RecordType,
    /// Enabled records only.
    records: Vec<DnsRecord>,
    /// For A/AAAA: index into [`CompiledZone::address_sets`].
    address_set: Option<usize>,
}

/// An A/AAAA rrset as the health rules see it; `candidates[i]` is
/// `records[i]` of its [`CompiledRrSet`].
#[derive(Debug)]
struct AddressSet {
    owner: String,
    rtype: RrType,
    candidates: Vec<Candidate>,
}

/// Why part of a zone was left out when compiling it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    pub zone: String,
    pub message: String,
}

impl CompiledZone {
    /// Compiles `zone`, leaving out what breaks the zone rules (see the
    /// [module docs](self)). `None` when the zone itself is unusable.
    pub fn compile(zone: &Zone) -> (Option<CompiledZone>, Vec<Skipped>) {
        let mut skipped = Vec::new();
        let mut skip = |message: String| {
            skipped.push(Skipped {
                zone: zone.name.clone(),
                message,
            });
        };
        let (zone_name, origin) = match content::parse_absolute_name(&zone.name, false) {
            Ok(origin) => (zone.name.to_ascii_lowercase(), LowerName::new(&origin)),
            Err(message) => {
                skip(format!("zone name: {message}; zone not served"));
                return (None, skipped);
            }
        };
        let mut nodes: HashMap<LowerName, NameNode> = HashMap::new();
        let mut cuts = HashSet::new();
        let mut address_sets = Vec::new();
        let mut soa = None;
        let mut seen = HashSet::new();
        for (index, rrset) in zone.rrsets.iter().enumerate() {
            let path = format!("rrsets[{index}] ({} {})", rrset.name, rrset.rtype);
            let Some(rtype) = RrType::parse(&rrset.rtype) else {
                skip(format!("{path}: unsupported type; left out"));
                continue;
            };
            let owner = match content::check_absolute_name(&rrset.name, false) {
                Ok(owner) if is_in_zone(&owner, &zone_name) => owner,
                Ok(_) => {
                    skip(format!("{path}: not inside the zone; left out"));
                    continue;
                }
                Err(message) => {
                    skip(format!("{path}: {message}; left out"));
                    continue;
                }
            };
            if !seen.insert((owner.clone(), rtype)) {
                skip(format!("{path}: duplicate rrset; left out"));
                continue;
            }
            let Ok(owner_name) = Name::from_ascii(&owner) else {
                skip(format!("{path}: unreadable name; left out"));
                continue;
            };
            let mut records = Vec::new();
            let mut candidates = Vec::new();
            for (record_index, record) in rrset.records.iter().enumerate() {
                if record.disabled {
                    continue;
                }
                let data = match content::parse_content(rtype, &record.content) {
                    Ok(data) => data,
                    Err(message) => {
                        skip(format!(
                            "{path}.records[{record_index}]: {message}; left out"
                        ));
                        continue;
                    }
                };
                if let Some(address) = address_of(&data) {
                    candidates.push(Candidate {
                        address,
                        weight: record.weight,
                    });
                }
                records.push(DnsRecord::from_rdata(owner_name.clone(), rrset.ttl, data));
            }
            if records.is_empty() {
                continue;
            }
            let lower_owner = LowerName::new(&owner_name);
            if rtype == RrType::Soa {
                if lower_owner != origin {
                    skip(format!("{path}: an SOA below the apex; left out"));
                    continue;
                }
                soa = records.first().cloned();
            }
            if rtype == RrType::Ns && lower_owner != origin {
                cuts.insert(lower_owner.clone());
            }
            let address_set = rtype.is_address().then(|| {
                address_sets.push(AddressSet {
                    owner: owner.clone(),
                    rtype,
                    candidates,
                });
                address_sets.len().saturating_sub(1)
            });
            nodes
                .entry(lower_owner.clone())
                .or_default()
                .rrsets
                .push(CompiledRrSet {
                    rtype: rtype.to_hickory(),
                    records,
                    address_set,
                });
            // Empty non-terminals exist: they answer NODATA, not NXDOMAIN.
            let mut ancestor = lower_owner.base_name();
            while origin.zone_of(&ancestor) && ancestor != origin {
                nodes.entry(ancestor.clone()).or_default();
                ancestor = ancestor.base_name();
            }
        }
        let Some(soa) = soa else {
            skip("no usable SOA at the apex; zone not served".to_owned());
            return (None, skipped);
        };
        let negative_ttl = match &soa.data {
            RData::SOA(data) => soa.ttl.min(data.minimum),
            _ => soa.ttl,
        };
        let mut negative_soa = soa.clone();
        negative_soa.ttl = negative_ttl;
        nodes.entry(origin.clone()).or_default();
        let mut by_address: HashMap<IpAddr, Vec<usize>> = HashMap::new();
        for (index, set) in address_sets.iter().enumerate() {
            for candidate in &set.candidates {
                let sets = by_address.entry(candidate.address).or_default();
                if sets.last() != Some(&index) {
                    sets.push(index);
                }
            }
        }
        let compiled = CompiledZone {
            name: zone_name,
            origin,
            soa,
            negative_soa,
            nodes,
            cuts,
            address_sets,
            by_address,
        };
        (Some(compiled), skipped)
    }

    /// The zone's name, lowercase with the trailing dot.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The SOA serial being served.
    pub fn serial(&self) -> u32 {
        match &self.soa.data {
            RData::SOA(soa) => soa.serial,
            _ => 0,
        }
    }

    /// The owner and type of every A/AAAA rrset, in the order of
    /// [`CompiledZone::answer_sets`].
    pub fn address_rrsets(&self) -> impl Iterator<Item = (&str, RrType)> {
        self.address_sets
            .iter()
            .map(|s| (s.owner.as_str(), s.rtype))
    }

    /// Answer sets for every A/AAAA rrset under `health`, in the order of
    /// [`CompiledZone::address_rrsets`]; see [`CompiledZone::answer_set_at`].
    pub fn answer_sets(&self, health: &HealthView, memory: &mut Memory<'_>) -> Vec<Arc<AnswerSet>> {
        (0..self.address_sets.len())
            .filter_map(|index| self.answer_set_at(index, health, memory))
            .collect()
    }

    /// The answer set of the A/AAAA rrset at `index` under `health`,
    /// updating the last-known-good `memory` (`None`: no such rrset).
    pub fn answer_set_at(
        &self,
        index: usize,
        health: &HealthView,
        memory: &mut Memory<'_>,
    ) -> Option<Arc<AnswerSet>> {
        let set = self.address_sets.get(index)?;
        let key = (set.owner.clone(), set.rtype);
        let policy = health.all_down(&set.owner);
        let (answers, remembered) =
            answer_set(&set.candidates, health, policy, memory.sets.get(&key));
        if let Some(remembered) = remembered.filter(|_| memory.learn)
            && memory.sets.get(&key) != Some(&remembered)
        {
            memory.sets.insert(key, remembered);
            memory.changed = true;
        }
        Some(Arc::new(answers))
    }

    /// The indexes of the A/AAAA rrsets that hold `address`.
    pub fn sets_holding(&self, address: IpAddr) -> &[usize] {
        self.by_address.get(&address).map_or(&[], Vec::as_slice)
    }

    /// The highest delegation point at or above `name`, if any.
    fn cut_at_or_above(&self, name: &LowerName) -> Option<LowerName> {
        if self.cuts.is_empty() {
            return None;
        }
        let mut highest = None;
        let mut current = name.clone();
        while current != self.origin && self.origin.zone_of(&current) {
            if self.cuts.contains(&current) {
                highest = Some(current.clone());
            }
            current = current.base_name();
        }
        highest
    }
}

fn address_of(data: &RData) -> Option<IpAddr> {
    match data {
        RData::A(a) => Some(IpAddr::V4(a.0)),
        RData::AAAA(aaaa) => Some(IpAddr::V6(aaaa.0)),
        _ => None,
    }
}

/// The last-known-good memory as answer sets are made: every A/AAAA rrset's
/// last healthy addresses (keyed by owner and type), whether it may learn
/// (not before the first health view) and whether it changed.
#[derive(Debug)]
pub struct Memory<'a> {
    pub sets: &'a mut HashMap<(String, RrType), BTreeSet<IpAddr>>,
    pub learn: bool,
    pub changed: bool,
}

/// A compiled zone with the answers health leaves it.
#[derive(Debug)]
pub struct ServedZone {
    pub compiled: Arc<CompiledZone>,
    /// Indexed like the zone's address sets; shared with the next snapshot
    /// for the rrsets a health change does not touch.
    pub answers: Vec<Arc<AnswerSet>>,
}

/// Everything one query needs, immutable.
#[derive(Debug, Default)]
pub struct Snapshot {
    zones: HashMap<LowerName, ServedZone>,
}

/// The answer to one query, borrowing its records from the snapshot.
#[derive(Debug)]
pub struct Resolution<'s> {
    pub rcode: ResponseCode,
    pub authoritative: bool,
    pub answers: Vec<&'s DnsRecord>,
    pub authorities: Vec<&'s DnsRecord>,
    pub additionals: Vec<&'s DnsRecord>,
    /// Set when an address answer came from an all-down fallback.
    pub fallback: Option<ServeMode>,
    /// An answer made up for this query rather than stored: the HINFO of a
    /// minimal `ANY` answer (RFC 8482). Goes after `answers`.
    pub synthesized: Option<DnsRecord>,
}

impl Resolution<'_> {
    fn refused() -> Self {
        Resolution {
            rcode: ResponseCode::Refused,
            authoritative: false,
            answers: Vec::new(),
            authorities: Vec::new(),
            additionals: Vec::new(),
            fallback: None,
            synthesized: None,
        }
    }
}

impl Snapshot {
    pub fn new(zones: impl IntoIterator<Item = ServedZone>) -> Snapshot {
        Snapshot {
            zones: zones
                .into_iter()
                .map(|z| (z.compiled.origin.clone(), z))
                .collect(),
        }
    }

    /// The answers served for `zone`, when they were made from this very
    /// compilation of it.
    pub fn answers_of(&self, zone: &Arc<CompiledZone>) -> Option<&[Arc<AnswerSet>]> {
        self.zones
            .get(&zone.origin)
            .filter(|served| Arc::ptr_eq(&served.compiled, zone))
            .map(|served| served.answers.as_slice())
    }

    /// Compiles every zone of `set` and applies `health`; for tests and
    /// one-off use (the server keeps compiled zones between changes).
    pub fn build(
        set: &ZoneSet,
        health: &HealthView,
        memory: &mut HashMap<(String, RrType), BTreeSet<IpAddr>>,
    ) -> (Snapshot, Vec<Skipped>) {
        let mut skipped = Vec::new();
        let mut served = Vec::new();
        for zone in set.iter() {
            let (compiled, problems) = CompiledZone::compile(zone);
            skipped.extend(problems);
            if let Some(compiled) = compiled {
                let answers = compiled.answer_sets(
                    health,
                    &mut Memory {
                        sets: memory,
                        learn: true,
                        changed: false,
                    },
                );
                served.push(ServedZone {
                    compiled: Arc::new(compiled),
                    answers,
                });
            }
        }
        (Snapshot::new(served), skipped)
    }

    pub fn zones(&self) -> impl Iterator<Item = &ServedZone> {
        self.zones.values()
    }

    /// The zone holding `name`: the longest suffix among the zones.
    fn zone_for(&self, name: &LowerName) -> Option<&ServedZone> {
        let mut current = name.clone();
        loop {
            if let Some(zone) = self.zones.get(&current) {
                return Some(zone);
            }
            if current.is_root() {
                return None;
            }
            current = current.base_name();
        }
    }

    /// Answers `qname`/`qtype` (class IN). `roll(total)` must return a number
    /// in `0..total`; it picks the one record of each A/AAAA answer.
    pub fn resolve(
        &self,
        qname: &LowerName,
        qtype: RecordType,
        roll: &mut dyn FnMut(u64) -> u64,
    ) -> Resolution<'_> {
        // Zone transfers are not offered; a secondary cannot pull from here.
        if matches!(qtype, RecordType::AXFR | RecordType::IXFR) {
            return Resolution::refused();
        }
        let Some(served) = self.zone_for(qname) else {
            return Resolution::refused();
        };
        let zone = &*served.compiled;
        let mut resolution = Resolution {
            rcode: ResponseCode::NoError,
            authoritative: true,
            answers: Vec::new(),
            authorities: Vec::new(),
            additionals: Vec::new(),
            fallback: None,
            synthesized: None,
        };
        let mut name = qname.clone();
        for _ in 0..=MAX_CNAME_CHAIN {
            if let Some(cut) = zone.cut_at_or_above(&name)
                && !(cut == name && qtype == RecordType::DS)
            {
                referral(zone, &cut, &mut resolution);
                return resolution;
            }
            let Some(node) = zone.nodes.get(&name) else {
                resolution.rcode = ResponseCode::NXDomain;
                resolution.authorities.push(&zone.negative_soa);
                return resolution;
            };
            if qtype == RecordType::ANY {
                any_minimal(served, node, &name, &mut resolution, roll);
                return resolution;
            }
            if let Some(rrset) = node.rrset(qtype) {
                let before = resolution.answers.len();
                push_rrset(served, rrset, &mut resolution, roll);
                if resolution.answers.len() == before {
                    resolution.authorities.push(&zone.negative_soa);
                } else if qtype == RecordType::SOA
                    && name == zone.origin
                    && let Some(ns) = node.rrset(RecordType::NS)
                {
                    resolution.authorities.extend(ns.records.iter());
                }
                return resolution;
            }
            let Some(cname) = node.rrset(RecordType::CNAME) else {
                resolution.authorities.push(&zone.negative_soa);
                return resolution;
            };
            let Some(record) = cname.records.first() else {
                resolution.authorities.push(&zone.negative_soa);
                return resolution;
            };
            resolution.answers.push(record);
            let RData::CNAME(target) = &record.data else {
                return resolution;
            };
            let target = LowerName::new(&target.0);
            if !zone.origin.zone_of(&target) {
                return resolution;
            }
            name = target;
        }
        // A chain longer than MAX_CNAME_CHAIN, or a loop.
        Resolution {
            rcode: ResponseCode::ServFail,
            authoritative: false,
            ..Resolution::refused()
        }
    }
}

/// `ANY` answered minimally (RFC 8482), so that a small query never draws
/// every RRset of a name (the ×59 amplification of a fat apex): the CNAME if
/// the name has one, else its address set (one weighted address, A before
/// AAAA), else a synthesized `HINFO "RFC8482" ""` with the smallest TTL of
/// the name's RRsets (RFC 8482 section 4.2). A name without RRsets gets the
/// usual empty answer with the SOA.
fn any_minimal<'s>(
    served: &'s ServedZone,
    node: &'s NameNode,
    name: &LowerName,
    resolution: &mut Resolution<'s>,
    roll: &mut dyn FnMut(u64) -> u64,
) {
    let before = resolution.answers.len();
    for rtype in [RecordType::CNAME, RecordType::A, RecordType::AAAA] {
        if let Some(rrset) = node.rrset(rtype) {
            push_rrset(served, rrset, resolution, roll);
            if resolution.answers.len() > before {
                return;
            }
        }
    }
    let ttl = node
        .rrsets
        .iter()
        .flat_map(|rrset| rrset.records.iter().map(|r| r.ttl))
        .min();
    match ttl {
        Some(ttl) => {
            resolution.synthesized = Some(DnsRecord::from_rdata(
                Name::from(name.clone()),
                ttl,
                RData::HINFO(HINFO::new("RFC8482".to_owned(), String::new())),
            ));
        }
        None => resolution.authorities.push(&served.compiled.negative_soa),
    }
}

fn push_rrset<'s>(
    served: &'s ServedZone,
    rrset: &'s CompiledRrSet,
    resolution: &mut Resolution<'s>,
    roll: &mut dyn FnMut(u64) -> u64,
) {
    let Some(set_index) = rrset.address_set else {
        resolution.answers.extend(rrset.records.iter());
        return;
    };
    let Some(answers) = served.answers.get(set_index) else {
        return;
    };
    let total = answers.total_weight();
    if total == 0 {
        return;
    }
    let picked = answers
        .pick(roll(total))
        .and_then(|index| rrset.records.get(index));
    if let Some(record) = picked {
        resolution.answers.push(record);
        if matches!(answers.mode, ServeMode::FailOpen | ServeMode::LastKnownGood) {
            resolution.fallback = Some(answers.mode);
        }
    }
}

/// A referral to the child zone at `cut`: its NS rrset in the authority
/// section and in-zone glue addresses in the additional section; authoritative
/// only for the CNAMEs followed to get there.
fn referral<'s>(zone: &'s CompiledZone, cut: &LowerName, resolution: &mut Resolution<'s>) {
    resolution.authoritative = !resolution.answers.is_empty();
    let Some(ns) = zone.nodes.get(cut).and_then(|n| n.rrset(RecordType::NS)) else {
        return;
    };
    resolution.authorities.extend(ns.records.iter());
    for record in &ns.records {
        let RData::NS(host) = &record.data else {
            continue;
        };
        let Some(node) = zone.nodes.get(&LowerName::new(&host.0)) else {
            continue;
        };
        for rtype in [RecordType::A, RecordType::AAAA] {
            if let Some(glue) = node.rrset(rtype) {
                resolution.additionals.extend(glue.records.iter());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use neutral_core::model::{AllDownPolicy, NodeStatus};

    use super::*;
    use crate::zone::ZoneRules;
    use crate::zone::{Record, RrSetChange, ZonePatch, apply_patch};

    fn zone_with(changes: Vec<RrSetChange>) -> Zone {
        let zone = Zone::create("example.com.", &["ns1.example.com."]).unwrap();
        apply_patch(&zone, &ZonePatch { rrsets: changes }).unwrap()
    }

    fn records(contents: &[&str]) -> Vec<Record> {
        contents.iter().map(|c| Record::new(*c)).collect()
    }

    fn example() -> Zone {
        zone_with(vec![
            RrSetChange::replace("ns1.example.com.", "A", 3600, records(&["192.0.2.53"])),
            RrSetChange::replace(
                "app.example.com.",
                "A",
                30,
                vec![
                    Record::new("192.0.2.1").weighted(3),
                    Record::new("192.0.2.2").weighted(1),
                ],
            ),
            RrSetChange::replace("app.example.com.", "TXT", 60, records(&["\"hello\""])),
            RrSetChange::replace(
                "www.example.com.",
                "CNAME",
                120,
                records(&["app.example.com."]),
            ),
            RrSetChange::replace("ext.example.com.", "CNAME", 120, records(&["example.net."])),
            RrSetChange::replace(
                "dangling.example.com.",
                "CNAME",
                120,
                records(&["nope.example.com."]),
            ),
            RrSetChange::replace(
                "loop1.example.com.",
                "CNAME",
                120,
                records(&["loop2.example.com."]),
            ),
            RrSetChange::replace(
                "loop2.example.com.",
                "CNAME",
                120,
                records(&["loop1.example.com."]),
            ),
            RrSetChange::replace("a.b.c.example.com.", "TXT", 60, records(&["\"deep\""])),
            RrSetChange::replace(
                "off.example.com.",
                "A",
                60,
                vec![Record {
                    disabled: true,
                    ..Record::new("192.0.2.9")
                }],
            ),
            RrSetChange::replace(
                "sub.example.com.",
                "NS",
                300,
                records(&["ns.sub.example.com."]),
            ),
            RrSetChange::replace("ns.sub.example.com.", "A", 300, records(&["192.0.2.54"])),
        ])
    }

    fn snapshot(zones: Vec<Zone>, health: &HealthView) -> Snapshot {
        let set: ZoneSet = zones.into_iter().collect();
        let (snapshot, skipped) = Snapshot::build(&set, health, &mut HashMap::new());
        assert_eq!(skipped, vec![]);
        snapshot
    }

    fn name(text: &str) -> LowerName {
        LowerName::new(&Name::from_str(text).unwrap())
    }

    /// The response in `dig`-like lines, with the roll fixed at `roll`.
    fn answer(snapshot: &Snapshot, qname: &str, qtype: RecordType, roll: u64) -> String {
        let resolution = snapshot.resolve(&name(qname), qtype, &mut |total| roll.min(total - 1));
        let mut lines = vec![format!(
            "{} aa={}{}",
            resolution.rcode,
            resolution.authoritative,
            resolution
                .fallback
                .map(|m| format!(" fallback={}", m.as_str()))
                .unwrap_or_default()
        )];
        let synthesized: Vec<&DnsRecord> = resolution.synthesized.iter().collect();
        for (section, records) in [
            ("an", &resolution.answers),
            ("an", &synthesized),
            ("ns", &resolution.authorities),
            ("ad", &resolution.additionals),
        ] {
            for r in records.as_slice() {
                lines.push(format!(
                    "{section} {} {} {} {}",
                    r.name,
                    r.ttl,
                    r.record_type(),
                    r.data
                ));
            }
        }
        lines.join("\n")
    }

    #[test]
    fn address_answers_are_one_record_picked_by_weight_with_the_stored_ttl() {
        let snap = snapshot(vec![example()], &HealthView::new());
        expect_test::expect![[r#"
            No Error aa=true
            an app.example.com. 30 A 192.0.2.1"#]]
        .assert_eq(&answer(&snap, "app.example.com.", RecordType::A, 2));
        expect_test::expect![[r#"
            No Error aa=true
            an app.example.com. 30 A 192.0.2.2"#]]
        .assert_eq(&answer(&snap, "APP.example.com.", RecordType::A, 3));
    }

    #[test]
    fn the_apex_answers_soa_with_ns_and_ns() {
        let snap = snapshot(vec![example()], &HealthView::new());
        expect_test::expect![[r#"
            No Error aa=true
            an example.com. 3600 SOA ns1.example.com. hostmaster.example.com. 2 10800 3600 604800 3600
            ns example.com. 3600 NS ns1.example.com."#]]
        .assert_eq(&answer(&snap, "example.com.", RecordType::SOA, 0));
        expect_test::expect![[r#"
            No Error aa=true
            an example.com. 3600 NS ns1.example.com."#]]
        .assert_eq(&answer(&snap, "example.com.", RecordType::NS, 0));
    }

    #[test]
    fn missing_names_are_nxdomain_and_missing_types_nodata_with_the_soa() {
        let snap = snapshot(vec![example()], &HealthView::new());
        expect_test::expect![[r#"
            Non-Existent Domain aa=true
            ns example.com. 3600 SOA ns1.example.com. hostmaster.example.com. 2 10800 3600 604800 3600"#]]
        .assert_eq(&answer(&snap, "nope.example.com.", RecordType::A, 0));
        expect_test::expect![[r#"
            No Error aa=true
            ns example.com. 3600 SOA ns1.example.com. hostmaster.example.com. 2 10800 3600 604800 3600"#]]
        .assert_eq(&answer(&snap, "app.example.com.", RecordType::AAAA, 0));
        // An empty non-terminal exists.
        expect_test::expect![[r#"
            No Error aa=true
            ns example.com. 3600 SOA ns1.example.com. hostmaster.example.com. 2 10800 3600 604800 3600"#]]
        .assert_eq(&answer(&snap, "b.c.example.com.", RecordType::A, 0));
        // Disabled records are invisible.
        assert!(answer(&snap, "off.example.com.", RecordType::A, 0).starts_with("Non-Existent"));
    }

    #[test]
    fn foreign_names_are_refused_and_the_longest_zone_wins() {
        let child = Zone::create("deep.example.com.", &["ns1.example.com."]).unwrap();
        let child = apply_patch(
            &child,
            &ZonePatch {
                rrsets: vec![RrSetChange::replace(
                    "x.deep.example.com.",
                    "TXT",
                    5,
                    records(&["\"child\""]),
                )],
            },
        )
        .unwrap();
        let snap = snapshot(vec![example(), child], &HealthView::new());
        expect_test::expect!["Query Refused aa=false"].assert_eq(&answer(
            &snap,
            "example.org.",
            RecordType::A,
            0,
        ));
        expect_test::expect!["Query Refused aa=false"].assert_eq(&answer(
            &snap,
            "com.",
            RecordType::A,
            0,
        ));
        expect_test::expect![[r#"
            No Error aa=true
            an x.deep.example.com. 5 TXT child"#]]
        .assert_eq(&answer(&snap, "x.deep.example.com.", RecordType::TXT, 0));
    }

    #[test]
    fn cnames_are_chased_inside_the_zone_only() {
        let snap = snapshot(vec![example()], &HealthView::new());
        expect_test::expect![[r#"
            No Error aa=true
            an www.example.com. 120 CNAME app.example.com.
            an app.example.com. 30 A 192.0.2.1"#]]
        .assert_eq(&answer(&snap, "www.example.com.", RecordType::A, 0));
        expect_test::expect![[r#"
            No Error aa=true
            an www.example.com. 120 CNAME app.example.com."#]]
        .assert_eq(&answer(&snap, "www.example.com.", RecordType::CNAME, 0));
        expect_test::expect![[r#"
            No Error aa=true
            an ext.example.com. 120 CNAME example.net."#]]
        .assert_eq(&answer(&snap, "ext.example.com.", RecordType::A, 0));
        expect_test::expect![[r#"
            Non-Existent Domain aa=true
            an dangling.example.com. 120 CNAME nope.example.com.
            ns example.com. 3600 SOA ns1.example.com. hostmaster.example.com. 2 10800 3600 604800 3600"#]]
        .assert_eq(&answer(&snap, "dangling.example.com.", RecordType::A, 0));
        expect_test::expect!["Server Failure aa=false"].assert_eq(&answer(
            &snap,
            "loop1.example.com.",
            RecordType::A,
            0,
        ));
    }

    #[test]
    fn zone_transfers_are_refused() {
        let snap = snapshot(vec![example()], &HealthView::new());
        for qtype in [RecordType::AXFR, RecordType::IXFR] {
            expect_test::expect!["Query Refused aa=false"].assert_eq(&answer(
                &snap,
                "example.com.",
                qtype,
                0,
            ));
        }
    }

    #[test]
    fn names_below_an_ns_cut_get_a_referral_with_glue() {
        let snap = snapshot(vec![example()], &HealthView::new());
        expect_test::expect![[r#"
            No Error aa=false
            ns sub.example.com. 300 NS ns.sub.example.com.
            ad ns.sub.example.com. 300 A 192.0.2.54"#]]
        .assert_eq(&answer(&snap, "host.sub.example.com.", RecordType::A, 0));
    }

    #[test]
    fn any_is_answered_minimally_per_rfc_8482() {
        let snap = snapshot(vec![example()], &HealthView::new());
        // A name with an address set: one weighted address, nothing else.
        expect_test::expect![[r#"
            No Error aa=true
            an app.example.com. 30 A 192.0.2.2"#]]
        .assert_eq(&answer(&snap, "app.example.com.", RecordType::ANY, 3));
        // The apex (SOA, NS, ...): a synthesized HINFO.
        expect_test::expect![[r#"
            No Error aa=true
            an example.com. 3600 HINFO RFC8482 "#]]
        .assert_eq(&answer(&snap, "example.com.", RecordType::ANY, 0));
    }

    #[test]
    fn health_filters_answers_and_the_all_down_policy_applies() {
        let down_one = HealthView::new().with_node("192.0.2.1".parse().unwrap(), NodeStatus::Down);
        let snap = snapshot(vec![example()], &down_one);
        for roll in 0..4 {
            assert!(answer(&snap, "app.example.com.", RecordType::A, roll).ends_with("192.0.2.2"));
        }
        let all_down = down_one
            .clone()
            .with_node("192.0.2.2".parse().unwrap(), NodeStatus::Down);
        let snap = snapshot(vec![example()], &all_down);
        expect_test::expect![[r#"
            No Error aa=true fallback=fail_open
            an app.example.com. 30 A 192.0.2.1"#]]
        .assert_eq(&answer(&snap, "app.example.com.", RecordType::A, 0));

        // last_known_good remembers the set served before everything went down.
        let set: ZoneSet = [example()].into_iter().collect();
        let mut memory = HashMap::new();
        let policy =
            |view: HealthView| view.with_all_down("app.example.com", AllDownPolicy::LastKnownGood);
        let _ = Snapshot::build(&set, &policy(down_one), &mut memory);
        let (snap, _) = Snapshot::build(&set, &policy(all_down), &mut memory);
        for roll in 0..4 {
            let text = answer(&snap, "app.example.com.", RecordType::A, roll);
            assert!(text.contains("fallback=last_known_good"), "{text}");
            assert!(text.ends_with("192.0.2.2"), "{text}");
        }
    }

    #[test]
    fn broken_stored_zones_are_served_as_far_as_they_are_valid() {
        let mut zone = example();
        zone.rrsets.push(crate::zone::RrSet {
            name: "bad.example.com.".to_owned(),
            rtype: "A".to_owned(),
            ttl: 1,
            records: records(&["not-an-ip", "192.0.2.77"]),
            comments: vec![],
        });
        zone.rrsets.push(crate::zone::RrSet {
            name: "x.example.org.".to_owned(),
            rtype: "LUA".to_owned(),
            ttl: 1,
            records: records(&["whatever"]),
            comments: vec![],
        });
        let set: ZoneSet = [zone].into_iter().collect();
        let (snap, skipped) = Snapshot::build(&set, &HealthView::new(), &mut HashMap::new());
        let messages: Vec<String> = skipped.iter().map(|s| s.message.clone()).collect();
        expect_test::expect![[r#"
            [
                "rrsets[14] (bad.example.com. A).records[0]: `not-an-ip` is not an IPv4 address; left out",
                "rrsets[15] (x.example.org. LUA): unsupported type; left out",
            ]
        "#]]
        .assert_debug_eq(&messages);
        assert!(answer(&snap, "bad.example.com.", RecordType::A, 0).ends_with("192.0.2.77"));

        let mut no_soa = example();
        no_soa.rrsets.retain(|r| r.rtype != "SOA");
        let set: ZoneSet = [no_soa].into_iter().collect();
        let (snap, skipped) = Snapshot::build(&set, &HealthView::new(), &mut HashMap::new());
        assert_eq!(skipped.len(), 1);
        assert!(answer(&snap, "app.example.com.", RecordType::A, 0).starts_with("Query Refused"));
    }
}
