//! Effective DNS weights per domain, region and node, with the reason for
//! every number.
//!
//! This module owns the rules that turn declared weights plus live node
//! health into the answers each domain serves, and the text that explains
//! them ([`compact`]). It must not read a clock, talk to a DNS backend or
//! persist anything: the caller hands in `now` and the previous report, and
//! renders the result (scaling to a backend's weight range is [`scale`]).
//! Region health comes from [`crate::health`], never recomputed here.
//!
//! # Rules
//!
//! Per domain, for each region it serves ([`health::serves`]), counting only
//! the region's nodes whose address family fits the record type (an IPv6
//! node never appears in an `A` record, nor counts as ready for it):
//!
//! 1. `effective = round(base × min(1, ready / expected))` with
//!    `expected = max(desired_nodes, 1)`, and 0 when the region is `down`
//!    (fewer ready nodes than the domain's `min_ready_nodes`, or declared
//!    `state: down`). `round` is half up on exact integers:
//!    `(2·base·min(ready, expected) + expected) / (2·expected)`.
//! 2. Only `up` nodes are ready; `drain` and `down` nodes are never answers
//!    (except that `fail_open` serves `down` nodes, rule 4).
//! 3. A region's effective weight is split over its ready nodes by the
//!    largest-remainder method: everyone gets `⌊w / n⌋`, the `w mod n` units
//!    left go one each to the first nodes by id. Node weights sum to the
//!    region's weight exactly and differ by at most 1. Nodes whose share is 0
//!    are left out of the answers: every answer has a positive weight.
//! 4. When every region is at 0, the domain's `all_down` decides.
//!    `fail_open` serves every non-drained node (up or down) of the serving
//!    regions, each region's base weight split over them as in rule 3;
//!    regions declared `state: down` stay out (the operator, not the monitor,
//!    took them out). `last_known_good` keeps the previous report's answers
//!    when that report was `normal`, `last_known_good` or `split_brain_hold`,
//!    and fails open (saying so) otherwise. `empty` when nothing is left.
//! 5. Slow start: with `slow_start: d`, a region that left `down` (its
//!    [`RegionStatus::since`](crate::health::RegionStatus::since)) less than
//!    `d` before `now` gets `round(full × elapsed / d)` in milliseconds, same
//!    rounding, but at least 1 when `full` is positive.
//! 6. Split-brain guard: the nodes that are not drained, and among them those
//!    `down` with `status_since` no more than `split_brain_window` before
//!    `now` (a `status_since` after `now` counts as recent). When the total is
//!    at least `split_brain_min_nodes` and the recent-down share exceeds
//!    `split_brain_share`, every domain with usable previous answers keeps
//!    them (`split_brain_hold`); the others are computed as usual.
//! 7. Every region weight, answer and domain carries a reason with the
//!    numbers.
//!
//! Answers kept from a previous report (rules 4 and 6) keep their weights and
//! addresses, but never bring back a node that is now drained or no longer
//! registered, an address of the wrong family for the record type, or a
//! region that no longer serves the domain or is now declared `state: down`.

pub mod scale;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::health;
use crate::model::{
    AllDownPolicy, Declarations, DeclaredRegionState, DnsBackendKind, GtmPolicy, Node, NodeStatus,
    RecordType, Region, RegionHealth, Timestamp,
};
use scale::div_round_half_up;

/// Knobs of the weight computation that are deployment settings, not
/// per-domain intent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WeightSettings {
    /// Trip the split-brain guard when more than this share of all nodes
    /// went down within `split_brain_window`.
    pub split_brain_share: f64,
    pub split_brain_window: Duration,
    /// The guard never trips with fewer nodes than this in total.
    pub split_brain_min_nodes: u32,
}

impl Default for WeightSettings {
    fn default() -> Self {
        WeightSettings {
            split_brain_share: 0.5,
            split_brain_window: Duration::from_secs(60),
            split_brain_min_nodes: 3,
        }
    }
}

/// How a domain's answers were chosen.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnswerMode {
    /// Effective weights from health.
    Normal,
    /// Every region was 0; serving every non-drained node at base weight.
    FailOpen,
    /// Every region was 0; serving the last answers that had weight.
    LastKnownGood,
    /// The split-brain guard tripped; serving the last answers.
    SplitBrainHold,
    /// Nothing to serve (no nodes and no earlier answers).
    Empty,
}

impl AnswerMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AnswerMode::Normal => "normal",
            AnswerMode::FailOpen => "fail_open",
            AnswerMode::LastKnownGood => "last_known_good",
            AnswerMode::SplitBrainHold => "split_brain_hold",
            AnswerMode::Empty => "empty",
        }
    }

    /// Whether answers of this mode are known good, so `last_known_good` may
    /// keep them.
    fn is_known_good(self) -> bool {
        matches!(
            self,
            AnswerMode::Normal | AnswerMode::LastKnownGood | AnswerMode::SplitBrainHold
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionWeight {
    pub region: String,
    pub health: RegionHealth,
    pub base: u32,
    pub ready: u32,
    pub expected: u32,
    pub effective: u32,
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    pub node_id: String,
    pub region: String,
    pub address: IpAddr,
    pub weight: u32,
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainWeights {
    pub domain: String,
    pub zone: String,
    pub record_type: RecordType,
    pub ttl: u32,
    pub dns: DnsBackendKind,
    pub mode: AnswerMode,
    pub regions: Vec<RegionWeight>,
    pub answers: Vec<Answer>,
    pub reasons: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SplitBrain {
    pub went_down: u32,
    pub total: u32,
    pub share: f64,
    pub message: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WeightsReport {
    pub split_brain: Option<SplitBrain>,
    /// Keyed by domain.
    pub domains: BTreeMap<String, DomainWeights>,
}

/// Effective weights of every declared domain.
///
/// `previous` is the last report's domains (keyed by domain, as in
/// [`WeightsReport::domains`]); it feeds `last_known_good` and the
/// split-brain guard. See the [module docs](self) for the rules.
pub fn compute(
    decl: &Declarations,
    nodes: &[Node],
    previous: &BTreeMap<String, DomainWeights>,
    now: Timestamp,
    settings: &WeightSettings,
) -> WeightsReport {
    let split_brain = split_brain_guard(nodes, now, settings);
    let domains = decl
        .gtm
        .iter()
        .map(|(domain, policy)| {
            let weights = domain_weights(
                decl,
                policy,
                nodes,
                previous.get(domain),
                now,
                split_brain.is_some(),
            );
            (domain.clone(), weights)
        })
        .collect();
    WeightsReport {
        split_brain,
        domains,
    }
}

/// Rule 6: whether so many nodes went down at once that the monitor, not the
/// nodes, is the likelier culprit.
fn split_brain_guard(
    nodes: &[Node],
    now: Timestamp,
    settings: &WeightSettings,
) -> Option<SplitBrain> {
    let counted: Vec<&Node> = nodes
        .iter()
        .filter(|n| n.status != NodeStatus::Drain)
        .collect();
    let total = count_u32(counted.len());
    let went_down = count_u32(
        counted
            .iter()
            .filter(|n| {
                n.status == NodeStatus::Down
                    && now.since(n.status_since) <= settings.split_brain_window
            })
            .count(),
    );
    if went_down == 0 || total < settings.split_brain_min_nodes {
        return None;
    }
    let share = f64::from(went_down) / f64::from(total);
    if share.partial_cmp(&settings.split_brain_share) != Some(std::cmp::Ordering::Greater) {
        return None;
    }
    let percent = div_round_half_up(u128::from(went_down) * 100, u128::from(total));
    Some(SplitBrain {
        went_down,
        total,
        share,
        message: format!(
            "split-brain guard: {went_down} of {total} nodes ({percent}%) went down within {}; \
             suspecting the monitor, keeping last known good answers",
            seconds_text(settings.split_brain_window)
        ),
    })
}

/// One serving region of one domain, evaluated.
struct RegionEval<'a> {
    weight: RegionWeight,
    declared_down: bool,
    /// `up` nodes of the right address family, by id.
    ready: Vec<&'a Node>,
    /// `up` and `down` nodes of the right address family, by id.
    not_drained: Vec<&'a Node>,
}

fn domain_weights(
    decl: &Declarations,
    policy: &GtmPolicy,
    nodes: &[Node],
    previous: Option<&DomainWeights>,
    now: Timestamp,
    split_brain: bool,
) -> DomainWeights {
    let mut reasons = Vec::new();
    let region_names: Vec<&String> = if policy.regions.is_empty() {
        decl.regions.keys().collect()
    } else {
        policy.regions.keys().collect()
    };
    let mut evals = Vec::new();
    for name in region_names {
        match decl.regions.get(name.as_str()) {
            Some(region) if health::serves(decl, policy, name) => {
                evals.push(evaluate_region(
                    decl,
                    policy,
                    region,
                    nodes,
                    now,
                    &mut reasons,
                ));
            }
            _ => reasons.push(format!("region {name} is listed but not declared; skipped")),
        }
    }
    let (mode, answers) =
        choose_answers(policy, &evals, nodes, previous, split_brain, &mut reasons);
    DomainWeights {
        domain: policy.domain.clone(),
        zone: policy.zone.clone(),
        record_type: policy.record_type,
        ttl: policy.ttl,
        dns: policy.dns,
        mode,
        regions: evals.into_iter().map(|e| e.weight).collect(),
        answers,
        reasons,
    }
}

fn choose_answers(
    policy: &GtmPolicy,
    evals: &[RegionEval<'_>],
    nodes: &[Node],
    previous: Option<&DomainWeights>,
    split_brain: bool,
    reasons: &mut Vec<String>,
) -> (AnswerMode, Vec<Answer>) {
    if split_brain {
        match kept_answers(previous, policy.record_type, nodes, evals, false, reasons) {
            Ok(answers) => {
                reasons.push(format!(
                    "split-brain guard tripped: keeping the {} answers of the previous report \
                     instead of the weights below",
                    answers.len()
                ));
                return (AnswerMode::SplitBrainHold, relabel(answers, HELD_PREFIX));
            }
            Err(why) => reasons.push(format!(
                "split-brain guard tripped, but {why}; computing from current health"
            )),
        }
    }

    let weights_text = evals
        .iter()
        .map(|e| format!("{} {}", e.weight.region, e.weight.effective))
        .collect::<Vec<_>>()
        .join(", ");
    if evals.iter().any(|e| e.weight.effective > 0) {
        reasons.push(format!("weights from health: {weights_text}"));
        let answers = health_answers(evals, reasons);
        return (AnswerMode::Normal, answers);
    }

    let all_zero = if evals.is_empty() {
        "no region serves this domain".to_owned()
    } else {
        format!("every region is at weight 0 ({weights_text})")
    };
    let (mode, answers) = match policy.all_down {
        AllDownPolicy::FailOpen => {
            reasons.push(format!(
                "{all_zero}; all_down: fail_open serves every non-drained node at its region's \
                 base weight"
            ));
            (AnswerMode::FailOpen, fail_open_answers(evals, reasons))
        }
        AllDownPolicy::LastKnownGood => {
            match kept_answers(previous, policy.record_type, nodes, evals, true, reasons) {
                Ok(answers) => {
                    reasons.push(format!(
                        "{all_zero}; all_down: last_known_good keeps the {} answers of the \
                         previous report",
                        answers.len()
                    ));
                    (AnswerMode::LastKnownGood, relabel(answers, KEPT_PREFIX))
                }
                Err(why) => {
                    reasons.push(format!(
                        "{all_zero}; all_down: last_known_good, but {why}; failing open: every \
                         non-drained node at its region's base weight"
                    ));
                    (AnswerMode::FailOpen, fail_open_answers(evals, reasons))
                }
            }
        }
    };
    if answers.is_empty() {
        reasons.push("nothing to serve: no node can be answered".to_owned());
        return (AnswerMode::Empty, answers);
    }
    (mode, answers)
}

fn evaluate_region<'a>(
    decl: &Declarations,
    policy: &GtmPolicy,
    region: &Region,
    nodes: &'a [Node],
    now: Timestamp,
    domain_reasons: &mut Vec<String>,
) -> RegionEval<'a> {
    let name = region.name.as_str();
    let base = decl.base_weight(policy, name);
    let mut members: Vec<&Node> = nodes.iter().filter(|n| n.region == name).collect();
    members.sort_by(|a, b| a.id.cmp(&b.id).then(a.address.cmp(&b.address)));
    let (fitting, wrong_family): (Vec<&Node>, Vec<&Node>) = members
        .into_iter()
        .partition(|n| policy.record_type.accepts(n.address));
    for node in &wrong_family {
        domain_reasons.push(format!(
            "{} ({}) skipped: an {} address never appears in an {} record",
            node.id,
            node.address,
            family_name(node.address),
            policy.record_type.as_str()
        ));
    }
    let fitting_owned: Vec<Node> = fitting.iter().map(|&n| n.clone()).collect();
    let status = health::region_status(
        region,
        decl.desired_nodes(name),
        policy.min_ready_nodes,
        &fitting_owned,
    );

    let (effective, mut reason) = if status.health == RegionHealth::Down {
        (0, format!("{name}: down ({}) -> 0", status.reason))
    } else {
        let counted = status.ready.min(status.expected);
        let full = to_u32(div_round_half_up(
            u128::from(base) * u128::from(counted),
            u128::from(status.expected),
        ));
        let mut reason = format!(
            "{name}: {base} × min(1, {}/{} ready) = {full}; {}: {}",
            status.ready,
            status.expected,
            status.health.as_str(),
            status.reason
        );
        let effective = match slow_start(policy.slow_start, status.since, now, full) {
            Some(ramp) => {
                let _ = write!(
                    reason,
                    "; slow start {} of {}: {full} × {}/{} = {}",
                    seconds_text(ramp.elapsed),
                    seconds_text(ramp.period),
                    seconds_text(ramp.elapsed),
                    seconds_text(ramp.period),
                    ramp.weight
                );
                ramp.weight
            }
            None => full,
        };
        (effective, reason)
    };

    let ready: Vec<&Node> = fitting
        .iter()
        .copied()
        .filter(|n| n.status == NodeStatus::Up)
        .collect();
    let not_drained: Vec<&Node> = fitting
        .iter()
        .copied()
        .filter(|n| n.status != NodeStatus::Drain)
        .collect();
    for (label, status_wanted) in [
        ("ready", NodeStatus::Up),
        ("down", NodeStatus::Down),
        ("drained", NodeStatus::Drain),
    ] {
        let ids = node_ids(
            fitting
                .iter()
                .copied()
                .filter(|n| n.status == status_wanted),
        );
        if !ids.is_empty() {
            let _ = write!(reason, "; {label} {ids}");
        }
    }
    if !wrong_family.is_empty() {
        let _ = write!(
            reason,
            "; not in {} records {}",
            policy.record_type.as_str(),
            node_ids(wrong_family.iter().copied())
        );
    }

    RegionEval {
        weight: RegionWeight {
            region: name.to_owned(),
            health: status.health,
            base,
            ready: status.ready,
            expected: status.expected,
            effective,
            reason,
        },
        declared_down: region.state == DeclaredRegionState::Down,
        ready,
        not_drained,
    }
}

struct Ramp {
    weight: u32,
    elapsed: Duration,
    period: Duration,
}

/// Rule 5: the ramped weight while a recovering region is within its slow
/// start period, `None` when slow start does not apply.
fn slow_start(
    period: Option<Duration>,
    since: Option<Timestamp>,
    now: Timestamp,
    full: u32,
) -> Option<Ramp> {
    let period = period.filter(|p| !p.is_zero())?;
    let elapsed = now.since(since?);
    if elapsed >= period || full == 0 {
        return None;
    }
    let ramped = div_round_half_up(u128::from(full) * elapsed.as_millis(), period.as_millis());
    Some(Ramp {
        weight: to_u32(ramped).clamp(1, full),
        elapsed,
        period,
    })
}

/// Rule 3: `total` split over `count` shares by largest remainder: every
/// share is `⌊total / count⌋` and the first `total mod count` get one more.
fn split_evenly(total: u32, count: usize) -> Vec<u32> {
    let Ok(count32) = u32::try_from(count) else {
        return vec![0; count];
    };
    if count32 == 0 {
        return Vec::new();
    }
    let floor = total / count32;
    let extra = usize::try_from(total % count32).unwrap_or(0);
    (0..count)
        .map(|i| if i < extra { floor + 1 } else { floor })
        .collect()
}

fn health_answers(evals: &[RegionEval<'_>], reasons: &mut Vec<String>) -> Vec<Answer> {
    let mut answers = Vec::new();
    for eval in evals.iter().filter(|e| e.weight.effective > 0) {
        let region = &eval.weight.region;
        let effective = eval.weight.effective;
        let count = eval.ready.len();
        let uneven = effective % count_u32(count).max(1) != 0;
        for (node, weight) in eval.ready.iter().zip(split_evenly(effective, count)) {
            let share = format!(
                "{region} {effective} split over {}",
                plural(count, "ready node")
            );
            if weight == 0 {
                reasons.push(format!("{} gets 0: {share}", node.id));
                continue;
            }
            let reason = if uneven {
                format!("{share} (largest remainder, by node id)")
            } else {
                share
            };
            answers.push(answer(node, weight, reason));
        }
    }
    answers
}

fn fail_open_answers(evals: &[RegionEval<'_>], reasons: &mut Vec<String>) -> Vec<Answer> {
    let mut answers = Vec::new();
    for eval in evals {
        let region = &eval.weight.region;
        let base = eval.weight.base;
        if eval.declared_down {
            reasons.push(format!(
                "fail_open leaves {region} out: declared state: down"
            ));
            continue;
        }
        if base == 0 || eval.not_drained.is_empty() {
            continue;
        }
        let count = eval.not_drained.len();
        for (node, weight) in eval.not_drained.iter().zip(split_evenly(base, count)) {
            if weight == 0 {
                reasons.push(format!(
                    "{} gets 0: fail_open {region} base {base} split over {}",
                    node.id,
                    plural(count, "node")
                ));
                continue;
            }
            let reason = format!(
                "fail_open: {region} base {base} split over {}; this one is {}",
                plural(count, "non-drained node"),
                node.status.as_str()
            );
            answers.push(answer(node, weight, reason));
        }
    }
    answers
}

const KEPT_PREFIX: &str = "last known good: ";
const HELD_PREFIX: &str = "held by split-brain guard: ";

/// The previous report's answers that may still be served, or why there are
/// none. `known_good_only` refuses answers of a `fail_open` or `empty` report.
fn kept_answers(
    previous: Option<&DomainWeights>,
    record_type: RecordType,
    nodes: &[Node],
    evals: &[RegionEval<'_>],
    known_good_only: bool,
    reasons: &mut Vec<String>,
) -> Result<Vec<Answer>, String> {
    let Some(previous) = previous else {
        return Err("there is no previous report".to_owned());
    };
    if known_good_only && !previous.mode.is_known_good() {
        return Err(format!(
            "the previous report was {}, not known good",
            previous.mode.as_str()
        ));
    }
    if previous.answers.is_empty() {
        return Err("the previous report had no answers".to_owned());
    }
    let mut kept = Vec::new();
    for answer in &previous.answers {
        match why_not_kept(answer, record_type, nodes, evals) {
            Some(why) => reasons.push(format!(
                "previous answer {} ({}) not kept: {why}",
                answer.node_id, answer.address
            )),
            None => kept.push(answer.clone()),
        }
    }
    if kept.is_empty() {
        return Err("none of the previous answers can still be served".to_owned());
    }
    Ok(kept)
}

/// Why a previous answer can no longer be served, if it cannot: a kept
/// answer never brings back a drained or removed node, an address of the
/// wrong family, or a region that no longer serves the domain or that the
/// operator declared down.
fn why_not_kept(
    answer: &Answer,
    record_type: RecordType,
    nodes: &[Node],
    evals: &[RegionEval<'_>],
) -> Option<String> {
    if answer.weight == 0 {
        return Some("weight 0".to_owned());
    }
    if !record_type.accepts(answer.address) {
        return Some(format!(
            "an {} address in an {} record",
            family_name(answer.address),
            record_type.as_str()
        ));
    }
    match evals.iter().find(|e| e.weight.region == answer.region) {
        None => {
            return Some(format!(
                "region {} no longer serves this domain",
                answer.region
            ));
        }
        Some(eval) if eval.declared_down => {
            return Some(format!("region {} is declared state: down", answer.region));
        }
        Some(_) => {}
    }
    match nodes.iter().find(|n| n.id == answer.node_id) {
        None => Some("no longer registered".to_owned()),
        Some(node) if node.status == NodeStatus::Drain => Some("drained".to_owned()),
        Some(_) => None,
    }
}

/// Prefixes each kept answer's reason with `prefix`, replacing an earlier
/// prefix so reasons do not grow with every report.
fn relabel(answers: Vec<Answer>, prefix: &str) -> Vec<Answer> {
    answers
        .into_iter()
        .map(|mut answer| {
            let mut original = answer.reason.as_str();
            while let Some(rest) = original
                .strip_prefix(KEPT_PREFIX)
                .or_else(|| original.strip_prefix(HELD_PREFIX))
            {
                original = rest;
            }
            answer.reason = format!("{prefix}{original}");
            answer
        })
        .collect()
}

fn answer(node: &Node, weight: u32, reason: String) -> Answer {
    Answer {
        node_id: node.id.clone(),
        region: node.region.clone(),
        address: node.address,
        weight,
        reason,
    }
}

fn node_ids<'a>(nodes: impl Iterator<Item = &'a Node>) -> String {
    nodes.map(|n| n.id.as_str()).collect::<Vec<_>>().join(", ")
}

/// `1 node`, `2 nodes`.
fn plural(count: usize, noun: &str) -> String {
    if count == 1 {
        format!("1 {noun}")
    } else {
        format!("{count} {noun}s")
    }
}

fn family_name(address: IpAddr) -> &'static str {
    match address {
        IpAddr::V4(_) => "IPv4",
        IpAddr::V6(_) => "IPv6",
    }
}

fn count_u32(count: usize) -> u32 {
    u32::try_from(count).unwrap_or(u32::MAX)
}

fn to_u32(value: u128) -> u32 {
    u32::try_from(value).unwrap_or(u32::MAX)
}

/// `60s`, `1.5s`, `0.25s`: seconds, with the fraction only when there is one.
fn seconds_text(d: Duration) -> String {
    let millis = d.as_millis();
    let (secs, frac) = (millis / 1000, millis % 1000);
    if frac == 0 {
        format!("{secs}s")
    } else {
        let frac = format!("{frac:03}");
        format!("{secs}.{}s", frac.trim_end_matches('0'))
    }
}

/// A stable, line-oriented rendering of a report, for `neutral explain` and
/// snapshot tests:
///
/// ```text
/// app.example.com A ttl 30 via embedded: normal
///   region jp up       base 100 ready 2/2 -> 100  (jp: 100 × min(1, 2/2 ready) = 100; ...)
///   answer jp-1 127.0.0.2 50  (jp 100 split over 2 ready nodes)
///   note weights from health: jp 100
/// ```
///
/// A tripped split-brain guard comes first, on a line of its own.
pub fn compact(report: &WeightsReport) -> String {
    let mut out = String::new();
    if let Some(guard) = &report.split_brain {
        let _ = writeln!(out, "{}", guard.message);
    }
    if report.domains.is_empty() {
        out.push_str("no domains\n");
    }
    for domain in report.domains.values() {
        let _ = writeln!(
            out,
            "{} {} ttl {} via {}: {}",
            domain.domain,
            domain.record_type.as_str(),
            domain.ttl,
            domain.dns.as_str(),
            domain.mode.as_str()
        );
        let name_width = domain
            .regions
            .iter()
            .map(|r| r.region.len())
            .max()
            .unwrap_or(0);
        for region in &domain.regions {
            let _ = writeln!(
                out,
                "  region {:<name_width$} {:<8} base {} ready {}/{} -> {}  ({})",
                region.region,
                region.health.as_str(),
                region.base,
                region.ready,
                region.expected,
                region.effective,
                region.reason
            );
        }
        let id_width = domain
            .answers
            .iter()
            .map(|a| a.node_id.len())
            .max()
            .unwrap_or(0);
        let addresses: Vec<String> = domain
            .answers
            .iter()
            .map(|a| a.address.to_string())
            .collect();
        let address_width = addresses.iter().map(String::len).max().unwrap_or(0);
        for (answer, address) in domain.answers.iter().zip(&addresses) {
            let _ = writeln!(
                out,
                "  answer {:<id_width$} {:<address_width$} {}  ({})",
                answer.node_id, address, answer.weight, answer.reason
            );
        }
        for note in &domain.reasons {
            let _ = writeln!(out, "  note {note}");
        }
    }
    out
}
