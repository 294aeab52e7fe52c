//! Rendering: from a domain's answers to the record sets each backend
//! should hold ([`desired_sets`]), and how record sets read in a plan
//! ([`presentation`]). Pure; weights are scaled by the core.

use std::collections::BTreeMap;
use std::net::IpAddr;

use neutral_core::dnsplan::RecordSet;
use neutral_core::model::{DnsBackendKind, RecordType};
use neutral_core::weights::scale;

use super::model::{AnswerRow, LUA, set};
use super::registry::is_registry;

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
