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
//!
//! # Cost
//!
//! A region's evaluation depends on a domain only through the record type,
//! `min_ready_nodes`, the base weight and `slow_start`, so one [`compute`]
//! call indexes the nodes by region once and evaluates each region once per
//! such combination, whatever the number of domains. Answers and region
//! weights share their text (`Arc<str>`): a report over thousands of domains
//! holds each node id, region name and reason once. A `normal` domain's
//! answers are one run per serving region ([`Answers`]), and the run belongs
//! to the evaluation: every domain that evaluates a region alike holds the
//! same run. With 1,000 domains each served by all of 100 regions of 100
//! nodes at the regions' base weights, the report's 8.8 million answers are
//! 8,800 answers made and shared, and a full compute takes about 30 ms
//! instead of 1.5 s (`benches/core.rs`). What still grows with the output is
//! a domain weighing a region its own way: then the run is that domain's
//! alone, and 1,000 domains each with weights of their own over 100 regions
//! make all 8.8 million answers again (about 1.5 s, most of it writing and
//! freeing their memory).
//!
//! After node events, [`compute_incremental`] (module [`incremental`])
//! recomputes only the domains that serve a region whose nodes changed, that
//! may be in a slow-start ramp, or whose previous answers were kept, and
//! moves every other domain's entry over from the previous report: one node's
//! status change with 1,000 domains over 100 regions (3 each) recomputes
//! about 30 domains. The split-brain guard is still computed from every node
//! (one pass), and a tripped or released guard means a full recompute. Only
//! the nodes of the regions serving recomputed domains are indexed, and a
//! domain that stays `normal` keeps the runs of its unchanged regions by
//! reference.

mod answers;
pub mod incremental;
pub mod node_set;
pub mod packed;
pub mod scale;

#[cfg(test)]
mod tests;

use std::borrow::Borrow;
use std::cell::{OnceCell, RefCell};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::health::{self, RegionStatus};
use crate::model::{
    AllDownPolicy, Declarations, DeclaredRegionState, DnsBackendKind, GtmPolicy, Node, NodeStatus,
    RecordType, Region, RegionHealth, Timestamp,
};
pub use answers::{Answer, Answers};
use node_set::NodeSet;
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

/// One serving region's weight in one domain.
///
/// The text is shared (`Arc<str>`, serialized as a plain string): every
/// domain whose settings give a region the same weight points at the same
/// reason.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionWeight {
    pub region: Arc<str>,
    pub health: RegionHealth,
    pub base: u32,
    pub ready: u32,
    pub expected: u32,
    pub effective: u32,
    pub reason: Arc<str>,
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
    pub answers: Answers,
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
    /// Keyed by domain. Shared: a report computed incrementally holds the
    /// entries it did not recompute by reference to the previous report's,
    /// and every report the previous one's names, so making it (a copy of
    /// this map) and comparing the two cost what changed, not the whole.
    pub domains: BTreeMap<Arc<str>, Arc<DomainWeights>>,
}

/// Effective weights of every declared domain.
///
/// `previous` is the last report's domains (keyed by domain, as in
/// [`WeightsReport::domains`]); it feeds `last_known_good` and the
/// split-brain guard. See the [module docs](self) for the rules.
pub fn compute<N: Borrow<Node>>(
    decl: &Declarations,
    nodes: &[N],
    previous: &BTreeMap<Arc<str>, Arc<DomainWeights>>,
    now: Timestamp,
    settings: &WeightSettings,
) -> WeightsReport {
    let split_brain = split_brain_guard(nodes, now, settings);
    let fleet = Fleet::new(nodes, None);
    let mut evaluator = RegionEvaluator::new(decl, &fleet, now);
    let domains = decl
        .gtm
        .iter()
        .map(|(domain, policy)| {
            let before = previous.get_key_value(domain.as_str());
            let weights = domain_weights(
                decl,
                policy,
                &mut evaluator,
                &fleet,
                before.map(|(_, weights)| weights.as_ref()),
                split_brain.is_some(),
            );
            // The previous report's name, shared, when there is one.
            let name =
                before.map_or_else(|| Arc::from(domain.as_str()), |(name, _)| Arc::clone(name));
            (name, Arc::new(weights))
        })
        .collect();
    WeightsReport {
        split_brain,
        domains,
    }
}

/// Rule 6: whether so many nodes went down at once that the monitor, not the
/// nodes, is the likelier culprit.
fn split_brain_guard<N: Borrow<Node>>(
    nodes: &[N],
    now: Timestamp,
    settings: &WeightSettings,
) -> Option<SplitBrain> {
    let mut total = 0u32;
    let mut went_down = 0u32;
    for node in nodes
        .iter()
        .map(Borrow::borrow)
        .filter(|n: &&Node| n.status != NodeStatus::Drain)
    {
        total = total.saturating_add(1);
        if node.status == NodeStatus::Down
            && now.since(node.status_since) <= settings.split_brain_window
        {
            went_down = went_down.saturating_add(1);
        }
    }
    split_brain_verdict(total, went_down, settings)
}

/// The split-brain guard's decision from its counts: `total` nodes not
/// drained, `went_down` of them within the window.
fn split_brain_verdict(
    total: u32,
    went_down: u32,
    settings: &WeightSettings,
) -> Option<SplitBrain> {
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

/// The nodes of one [`compute`] call, indexed once.
struct Fleet<'a> {
    /// Every node, read only to build `by_id`.
    everyone: Everyone<'a>,
    /// Each region's nodes (by the node's `region`), by id then address.
    by_region: BTreeMap<&'a str, Vec<Member<'a>>>,
    /// The first node with each id; built only when previous answers are
    /// checked.
    by_id: OnceCell<BTreeMap<&'a str, &'a Node>>,
    /// Previous runs of answers as kept under these nodes
    /// ([`kept_answers`]), shared by every domain that keeps a run alike.
    kept: RefCell<HashMap<KeptKey, Rc<KeptRun>>>,
}

/// What decides how a previous run of answers is kept: the run (by
/// address; [`KeptRun`] holds it, so the address cannot be reused while
/// the key lives), the record type, the label, and whether each region the
/// run's answers come from serves the domain and is declared down.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct KeptKey {
    run: usize,
    record_type: RecordType,
    prefix: &'static str,
    regions: Vec<Option<bool>>,
}

/// A previous run as kept: the answers still served, relabelled, and why
/// each of the others is not.
#[derive(Debug)]
struct KeptRun {
    _source: Arc<[Answer]>,
    kept: Option<Arc<[Answer]>>,
    refused: Vec<String>,
}

/// Every node of a [`Fleet`]: the caller's list, or the set it was indexed
/// from (walked only if previous answers are checked).
enum Everyone<'a> {
    Listed(Vec<&'a Node>),
    InSet(&'a NodeSet),
}

/// A node with its id as answers carry it, made for its first answer (an
/// incremental recompute reads many nodes it answers with none of).
struct Member<'a> {
    node: &'a Node,
    id: OnceCell<Arc<str>>,
}

impl Member<'_> {
    fn id(&self) -> Arc<str> {
        Arc::clone(self.id.get_or_init(|| Arc::from(self.node.id.as_str())))
    }
}

impl<'a> Fleet<'a> {
    /// Indexes `nodes` by region: every region, or only the regions in
    /// `only` (an incremental recompute reads no other region's nodes).
    fn new<N: Borrow<Node>>(nodes: &'a [N], only: Option<&BTreeSet<&str>>) -> Self {
        let nodes: Vec<&'a Node> = nodes.iter().map(Borrow::borrow).collect();
        let mut by_region: BTreeMap<&str, Vec<Member<'_>>> = BTreeMap::new();
        // Runs of neighbours in one region (lists are usually grouped by
        // region) take one look-up each.
        for run in nodes.chunk_by(|a, b| a.region == b.region) {
            let Some(first) = run.first() else {
                continue;
            };
            let region = first.region.as_str();
            if only.is_some_and(|only| !only.contains(region)) {
                continue;
            }
            by_region
                .entry(region)
                .or_default()
                .extend(run.iter().map(|&node| Member {
                    node,
                    id: OnceCell::new(),
                }));
        }
        for members in by_region.values_mut() {
            members.sort_by(|a, b| {
                (a.node.id.as_str(), a.node.address).cmp(&(b.node.id.as_str(), b.node.address))
            });
        }
        Fleet {
            everyone: Everyone::Listed(nodes),
            by_region,
            by_id: OnceCell::new(),
            kept: RefCell::new(HashMap::new()),
        }
    }

    /// Indexes the nodes of `set` in the regions `only` (by the node's
    /// `region`), reading no other region's nodes: they are grouped and
    /// sorted already.
    fn of_set(set: &'a NodeSet, only: &BTreeSet<&str>) -> Self {
        let by_region = only
            .iter()
            .filter_map(|&region| {
                let (name, nodes) = set.region_entry(region)?;
                let members = nodes
                    .iter()
                    .map(|node| Member {
                        node,
                        id: OnceCell::new(),
                    })
                    .collect();
                Some((name, members))
            })
            .collect();
        Fleet {
            everyone: Everyone::InSet(set),
            by_region,
            by_id: OnceCell::new(),
            kept: RefCell::new(HashMap::new()),
        }
    }

    fn in_region(&self, region: &str) -> &[Member<'a>] {
        self.by_region.get(region).map_or(&[], Vec::as_slice)
    }

    /// The first node registered under `id`.
    fn by_id(&self, id: &str) -> Option<&'a Node> {
        let index = self.by_id.get_or_init(|| {
            let mut index = BTreeMap::new();
            let mut first = |node: &'a Node| {
                index.entry(node.id.as_str()).or_insert(node);
            };
            match &self.everyone {
                Everyone::Listed(nodes) => nodes.iter().for_each(|&node| first(node)),
                Everyone::InSet(set) => set.iter().for_each(|node| first(node)),
            }
            index
        });
        index.get(id).copied()
    }
}

/// What a region's nodes say for one record type and `min_ready_nodes`: the
/// same for every domain with those settings.
struct RegionNodes<'a> {
    /// The region's name, shared by its weights and answers.
    name: Arc<str>,
    declared_down: bool,
    status: RegionStatus,
    /// `up` nodes of the right address family, by id.
    ready: Vec<&'a Member<'a>>,
    /// `up` and `down` nodes of the right address family, by id.
    not_drained: Vec<&'a Member<'a>>,
    /// Domain notes about the nodes of the wrong address family.
    skipped: Vec<String>,
    /// The end of the region's reason: which nodes are ready, down, drained
    /// or of the wrong family.
    listing: String,
}

/// One serving region evaluated for one domain's settings.
struct RegionEval<'a> {
    nodes: Rc<RegionNodes<'a>>,
    weight: RegionWeight,
    /// Rule 3: the reason every answer of the region carries, when the
    /// region has weight.
    share_reason: Option<Arc<str>>,
    /// Domain notes about ready nodes whose share is 0.
    /// One line naming the ready nodes whose share is 0 (a few by id).
    zero_shares: Option<String>,
    /// Rule 3's answers of the region, made on first use and then shared by
    /// every domain with this evaluation.
    run: OnceCell<Arc<[Answer]>>,
    /// Rule 4's `fail_open` answers of the region and the note on its zero
    /// shares, made on first use and shared like `run`.
    fail_open: OnceCell<(Arc<[Answer]>, Option<String>)>,
}

impl RegionEval<'_> {
    /// Rule 3's answers of the region: its ready nodes with a positive share.
    fn run(&self) -> Arc<[Answer]> {
        Arc::clone(self.run.get_or_init(|| region_answers(self).collect()))
    }

    /// `fail_open`'s answers of the region: every non-drained node at the
    /// region's base weight, split; and the note on nodes whose share is 0.
    fn fail_open_run(&self) -> &(Arc<[Answer]>, Option<String>) {
        self.fail_open
            .get_or_init(|| fail_open_region(&self.nodes, self.weight.base))
    }
}

/// A region (its key in `Declarations::regions`), record type and
/// `min_ready_nodes`.
type NodesKey<'a> = (&'a str, RecordType, u32);

/// A [`NodesKey`] with the region's base weight and the slow start period.
type EvalKey<'a> = (NodesKey<'a>, u32, Option<Duration>);

/// Hands out region evaluations, each computed once per [`compute`] call:
/// a domain affects a region's evaluation only through the keys.
struct RegionEvaluator<'a> {
    decl: &'a Declarations,
    fleet: &'a Fleet<'a>,
    now: Timestamp,
    nodes: BTreeMap<NodesKey<'a>, Rc<RegionNodes<'a>>>,
    evals: BTreeMap<EvalKey<'a>, Rc<RegionEval<'a>>>,
}

impl<'a> RegionEvaluator<'a> {
    fn new(decl: &'a Declarations, fleet: &'a Fleet<'a>, now: Timestamp) -> Self {
        RegionEvaluator {
            decl,
            fleet,
            now,
            nodes: BTreeMap::new(),
            evals: BTreeMap::new(),
        }
    }

    /// `region`, declared under `key`, as `policy` sees it.
    fn evaluate(
        &mut self,
        policy: &GtmPolicy,
        key: &'a str,
        region: &'a Region,
    ) -> Rc<RegionEval<'a>> {
        let base = self.decl.base_weight(policy, &region.name);
        let nodes_key = (key, policy.record_type, policy.min_ready_nodes);
        let eval_key = (nodes_key, base, policy.slow_start);
        if let Some(eval) = self.evals.get(&eval_key) {
            return Rc::clone(eval);
        }
        let (decl, fleet) = (self.decl, self.fleet);
        let nodes = self.nodes.entry(nodes_key).or_insert_with(|| {
            Rc::new(region_nodes(
                decl,
                fleet,
                region,
                policy.record_type,
                policy.min_ready_nodes,
            ))
        });
        let eval = Rc::new(evaluate_region(
            Rc::clone(nodes),
            base,
            policy.slow_start,
            self.now,
        ));
        self.evals.insert(eval_key, Rc::clone(&eval));
        eval
    }
}

fn domain_weights<'a>(
    decl: &'a Declarations,
    policy: &'a GtmPolicy,
    evaluator: &mut RegionEvaluator<'a>,
    fleet: &Fleet<'_>,
    previous: Option<&DomainWeights>,
    split_brain: bool,
) -> DomainWeights {
    let (evals, mut reasons) = domain_evals(decl, policy, evaluator);
    let (mode, answers) =
        choose_answers(policy, &evals, fleet, previous, split_brain, &mut reasons);
    domain_entry(policy, mode, &evals, answers, reasons)
}

/// The evaluations of the regions serving `policy`'s domain, in order, and
/// the domain's first notes (nodes of the wrong family, undeclared regions).
fn domain_evals<'a>(
    decl: &'a Declarations,
    policy: &'a GtmPolicy,
    evaluator: &mut RegionEvaluator<'a>,
) -> (Vec<Rc<RegionEval<'a>>>, Vec<String>) {
    let mut reasons = Vec::new();
    let region_names: Vec<&String> = if policy.regions.is_empty() {
        decl.regions.keys().collect()
    } else {
        policy.regions.keys().collect()
    };
    let mut evals = Vec::with_capacity(region_names.len());
    for name in region_names {
        match decl.regions.get_key_value(name.as_str()) {
            Some((key, region)) if health::serves(decl, policy, name) => {
                let eval = evaluator.evaluate(policy, key, region);
                reasons.extend(eval.nodes.skipped.iter().cloned());
                evals.push(eval);
            }
            _ => reasons.push(format!("region {name} is listed but not declared; skipped")),
        }
    }
    (evals, reasons)
}

fn domain_entry(
    policy: &GtmPolicy,
    mode: AnswerMode,
    evals: &[Rc<RegionEval<'_>>],
    answers: Answers,
    reasons: Vec<String>,
) -> DomainWeights {
    DomainWeights {
        domain: policy.domain.clone(),
        zone: policy.zone.clone(),
        record_type: policy.record_type,
        ttl: policy.ttl,
        dns: policy.dns,
        mode,
        regions: evals.iter().map(|e| e.weight.clone()).collect(),
        answers,
        reasons,
    }
}

/// `jp 100, sg 50`: each serving region's effective weight.
fn weights_text(evals: &[Rc<RegionEval<'_>>]) -> String {
    let mut text = String::new();
    for eval in evals {
        if !text.is_empty() {
            text.push_str(", ");
        }
        let _ = write!(text, "{} {}", eval.weight.region, eval.weight.effective);
    }
    text
}

fn choose_answers(
    policy: &GtmPolicy,
    evals: &[Rc<RegionEval<'_>>],
    fleet: &Fleet<'_>,
    previous: Option<&DomainWeights>,
    split_brain: bool,
    reasons: &mut Vec<String>,
) -> (AnswerMode, Answers) {
    if split_brain {
        let kept = kept_answers(
            previous,
            policy.record_type,
            fleet,
            evals,
            (false, HELD_PREFIX),
            reasons,
        );
        match kept {
            Ok(answers) => {
                reasons.push(format!(
                    "split-brain guard tripped: keeping the {} answers of the previous report \
                     instead of the weights below",
                    answers.len()
                ));
                return (AnswerMode::SplitBrainHold, answers);
            }
            Err(why) => reasons.push(format!(
                "split-brain guard tripped, but {why}; computing from current health"
            )),
        }
    }

    let weights_text = weights_text(evals);
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
    let (mode, answers): (AnswerMode, Answers) = match policy.all_down {
        AllDownPolicy::FailOpen => {
            reasons.push(format!(
                "{all_zero}; all_down: fail_open serves every non-drained node at its region's \
                 base weight"
            ));
            (AnswerMode::FailOpen, fail_open_answers(evals, reasons))
        }
        AllDownPolicy::LastKnownGood => {
            let kept = kept_answers(
                previous,
                policy.record_type,
                fleet,
                evals,
                (true, KEPT_PREFIX),
                reasons,
            );
            match kept {
                Ok(answers) => {
                    reasons.push(format!(
                        "{all_zero}; all_down: last_known_good keeps the {} answers of the \
                         previous report",
                        answers.len()
                    ));
                    (AnswerMode::LastKnownGood, answers)
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

/// Sorts `region`'s nodes for `record_type` and derives its health; see
/// [`RegionNodes`].
fn region_nodes<'a>(
    decl: &Declarations,
    fleet: &'a Fleet<'a>,
    region: &Region,
    record_type: RecordType,
    min_ready_nodes: u32,
) -> RegionNodes<'a> {
    let (fitting, wrong_family): (Vec<&Member<'_>>, Vec<&Member<'_>>) = fleet
        .in_region(&region.name)
        .iter()
        .partition(|m| record_type.accepts(m.node.address));
    let skipped = wrong_family
        .iter()
        .map(|m| {
            format!(
                "{} ({}) skipped: an {} address never appears in an {} record",
                m.node.id,
                m.node.address,
                family_name(m.node.address),
                record_type.as_str()
            )
        })
        .collect();
    let status = health::region_status_of(
        region,
        decl.desired_nodes(&region.name),
        min_ready_nodes,
        fitting.iter().map(|m| m.node),
    );

    let mut listing = String::new();
    for (label, status_wanted) in [
        ("ready", NodeStatus::Up),
        ("down", NodeStatus::Down),
        ("drained", NodeStatus::Drain),
    ] {
        let ids = node_ids(
            fitting
                .iter()
                .map(|m| m.node)
                .filter(|n| n.status == status_wanted),
        );
        if !ids.is_empty() {
            let _ = write!(listing, "; {label} {ids}");
        }
    }
    if !wrong_family.is_empty() {
        let _ = write!(
            listing,
            "; not in {} records {}",
            record_type.as_str(),
            node_ids(wrong_family.iter().map(|m| m.node))
        );
    }

    RegionNodes {
        name: Arc::from(region.name.as_str()),
        declared_down: region.state == DeclaredRegionState::Down,
        ready: fitting
            .iter()
            .copied()
            .filter(|m| m.node.status == NodeStatus::Up)
            .collect(),
        not_drained: fitting
            .iter()
            .copied()
            .filter(|m| m.node.status != NodeStatus::Drain)
            .collect(),
        status,
        skipped,
        listing,
    }
}

/// Rules 1, 3 and 5 for one region at `base`.
fn evaluate_region<'a>(
    nodes: Rc<RegionNodes<'a>>,
    base: u32,
    slow_start_period: Option<Duration>,
    now: Timestamp,
) -> RegionEval<'a> {
    let name = &nodes.name;
    let status = &nodes.status;
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
        let effective = match slow_start(slow_start_period, status.since, now, full) {
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
    reason.push_str(&nodes.listing);

    let (share_reason, zero_shares) = shares(&nodes, effective);
    RegionEval {
        weight: RegionWeight {
            region: Arc::clone(&nodes.name),
            health: status.health,
            base,
            ready: status.ready,
            expected: status.expected,
            effective,
            reason: reason.into(),
        },
        share_reason,
        zero_shares,
        nodes,
        run: OnceCell::new(),
        fail_open: OnceCell::new(),
    }
}

/// Rule 3's text for a region at `effective`: the reason its answers carry,
/// and a note for each ready node whose share is 0. Nothing when the region
/// has no weight.
fn shares(nodes: &RegionNodes<'_>, effective: u32) -> (Option<Arc<str>>, Option<String>) {
    if effective == 0 {
        return (None, None);
    }
    let count = nodes.ready.len();
    let share = format!(
        "{} {effective} split over {}",
        nodes.name,
        plural(count, "ready node")
    );
    let zero_shares = zero_share_note(
        nodes
            .ready
            .iter()
            .zip(split_evenly(effective, count))
            .filter(|&(_, weight)| weight == 0)
            .map(|(member, _)| member.node.id.as_str()),
        &share,
    );
    let uneven = !effective.is_multiple_of(count_u32(count).max(1));
    let reason = if uneven {
        format!("{share} (largest remainder, by node id)")
    } else {
        share
    };
    (Some(reason.into()), zero_shares)
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

/// Ids a note on zero shares names; the rest are counted.
const ZERO_SHARE_IDS: usize = 5;

/// One line on the nodes (`ids`, in answer order) whose share of a split is
/// 0 — `jp-2 gets 0: jp 1 split over 2 ready nodes`, or for many, a few ids
/// and a count — so a report's reasons grow with its regions, not its nodes.
/// `None` when there are none.
fn zero_share_note<'a>(ids: impl Iterator<Item = &'a str>, split: &str) -> Option<String> {
    let mut named = Vec::new();
    let mut count = 0usize;
    for id in ids {
        if named.len() < ZERO_SHARE_IDS {
            named.push(id);
        }
        count += 1;
    }
    match count {
        0 => None,
        1 => Some(format!("{} gets 0: {split}", named.join(""))),
        _ => {
            let more = count - named.len();
            let tail = if more > 0 {
                format!(", and {more} more")
            } else {
                String::new()
            };
            Some(format!(
                "{count} nodes get 0 ({}{tail}): {split}",
                named.join(", ")
            ))
        }
    }
}

/// Rule 3: `total` split over `count` shares by largest remainder: every
/// share is `⌊total / count⌋` and the first `total mod count` get one more.
fn split_evenly(total: u32, count: usize) -> impl Iterator<Item = u32> + Clone {
    let (floor, extra) = match u32::try_from(count) {
        Ok(0) | Err(_) => (0, 0),
        Ok(count32) => (
            total / count32,
            usize::try_from(total % count32).unwrap_or(0),
        ),
    };
    (0..count).map(move |i| if i < extra { floor + 1 } else { floor })
}

/// Rule 3's answers: one run per serving region, shared with every other
/// domain that evaluates the region the same way.
fn health_answers(evals: &[Rc<RegionEval<'_>>], reasons: &mut Vec<String>) -> Answers {
    let mut runs = Vec::with_capacity(evals.len());
    for eval in evals {
        runs.push(eval.run());
        reasons.extend(eval.zero_shares.clone());
    }
    Answers::from_runs(runs)
}

/// Rule 3's answers of one region: its ready nodes with a positive share.
fn region_answers<'e>(eval: &'e RegionEval<'_>) -> impl Iterator<Item = Answer> + 'e {
    let ready = &eval.nodes.ready;
    let shares = split_evenly(eval.weight.effective, ready.len());
    eval.share_reason.iter().flat_map(move |reason| {
        ready
            .iter()
            .zip(shares.clone())
            .filter(|&(_, weight)| weight > 0)
            .map(move |(member, weight)| answer(member, &eval.nodes.name, weight, reason))
    })
}

/// Rule 4's `fail_open`: one run per serving region (empty for a region
/// declared down), shared with every other domain that evaluates the
/// region alike.
fn fail_open_answers(evals: &[Rc<RegionEval<'_>>], reasons: &mut Vec<String>) -> Answers {
    let mut runs = Vec::with_capacity(evals.len());
    for eval in evals {
        if eval.nodes.declared_down {
            reasons.push(format!(
                "fail_open leaves {} out: declared state: down",
                eval.nodes.name
            ));
            runs.push(Arc::from(Vec::new()));
            continue;
        }
        let (run, zero_shares) = eval.fail_open_run();
        reasons.extend(zero_shares.iter().cloned());
        runs.push(Arc::clone(run));
    }
    Answers::from_runs(runs)
}

/// One region's `fail_open` answers at `base` and the note on its nodes
/// whose share is 0; nothing when the region has no weight or no node to
/// serve.
fn fail_open_region(nodes: &RegionNodes<'_>, base: u32) -> (Arc<[Answer]>, Option<String>) {
    let region = &nodes.name;
    let not_drained = &nodes.not_drained;
    if base == 0 || not_drained.is_empty() {
        return (Arc::from(Vec::new()), None);
    }
    let count = not_drained.len();
    let reason_for = |status: NodeStatus| -> Arc<str> {
        format!(
            "fail_open: {region} base {base} split over {}; this one is {}",
            plural(count, "non-drained node"),
            status.as_str()
        )
        .into()
    };
    let (up_reason, down_reason) = (reason_for(NodeStatus::Up), reason_for(NodeStatus::Down));
    let shares = not_drained.iter().zip(split_evenly(base, count));
    let zero_shares = zero_share_note(
        shares
            .clone()
            .filter(|&(_, weight)| weight == 0)
            .map(|(member, _)| member.node.id.as_str()),
        &format!(
            "fail_open {region} base {base} split over {}",
            plural(count, "node")
        ),
    );
    let answers = shares
        .filter(|&(_, weight)| weight > 0)
        .map(|(member, weight)| {
            // `not_drained` holds only up and down nodes.
            let reason = if member.node.status == NodeStatus::Up {
                &up_reason
            } else {
                &down_reason
            };
            answer(member, region, weight, reason)
        })
        .collect();
    (answers, zero_shares)
}

const KEPT_PREFIX: &str = "last known good: ";
const HELD_PREFIX: &str = "held by split-brain guard: ";

/// The previous report's answers that may still be served, relabelled with
/// `prefix`, or why there are none. `known_good_only` refuses answers of a
/// `fail_open` or `empty` report.
///
/// Each previous run is kept once per compute for every domain that keeps
/// it alike ([`Fleet::kept`]): a world that falls all-down under
/// `last_known_good` shares the kept runs as the runs it keeps were
/// shared, rather than copying every answer for every domain.
fn kept_answers(
    previous: Option<&DomainWeights>,
    record_type: RecordType,
    fleet: &Fleet<'_>,
    evals: &[Rc<RegionEval<'_>>],
    (known_good_only, prefix): (bool, &'static str),
    reasons: &mut Vec<String>,
) -> Result<Answers, String> {
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
    // Whether each region serving the domain is declared down.
    let mut serving: BTreeMap<&str, bool> = BTreeMap::new();
    for eval in evals {
        serving
            .entry(&eval.weight.region)
            .or_insert(eval.nodes.declared_down);
    }
    let mut runs = Vec::new();
    for run in previous.answers.runs() {
        let kept = kept_run(run, record_type, fleet, &serving, prefix);
        reasons.extend(kept.refused.iter().cloned());
        runs.extend(kept.kept.clone());
    }
    if runs.is_empty() {
        return Err("none of the previous answers can still be served".to_owned());
    }
    Ok(Answers::from_runs(runs))
}

/// One previous run as kept for a domain `serving` these regions, from the
/// fleet's memo or made and remembered there.
fn kept_run(
    run: &Arc<[Answer]>,
    record_type: RecordType,
    fleet: &Fleet<'_>,
    serving: &BTreeMap<&str, bool>,
    prefix: &'static str,
) -> Rc<KeptRun> {
    let mut regions: Vec<Option<bool>> = Vec::new();
    let mut last_region: Option<&Arc<str>> = None;
    for answer in run.iter() {
        if last_region.is_some_and(|last| Arc::ptr_eq(last, &answer.region)) {
            continue;
        }
        last_region = Some(&answer.region);
        regions.push(serving.get(&*answer.region).copied());
    }
    let key = KeptKey {
        run: Arc::as_ptr(run).cast::<Answer>() as usize,
        record_type,
        prefix,
        regions,
    };
    if let Some(kept) = fleet.kept.borrow().get(&key) {
        return Rc::clone(kept);
    }
    let mut kept = Vec::new();
    let mut refused = Vec::new();
    for answer in run.iter() {
        match why_not_kept(answer, record_type, fleet, serving) {
            Some(why) => refused.push(format!(
                "previous answer {} ({}) not kept: {why}",
                answer.node_id, answer.address
            )),
            None => kept.push(answer.clone()),
        }
    }
    let kept = Rc::new(KeptRun {
        _source: Arc::clone(run),
        kept: (!kept.is_empty()).then(|| Arc::from(relabel(kept, prefix))),
        refused,
    });
    fleet.kept.borrow_mut().insert(key, Rc::clone(&kept));
    kept
}

/// Why a previous answer can no longer be served, if it cannot: a kept
/// answer never brings back a drained or removed node, an address of the
/// wrong family, or a region that no longer serves the domain (not in
/// `serving`) or that the operator declared down (`true` there).
fn why_not_kept(
    answer: &Answer,
    record_type: RecordType,
    fleet: &Fleet<'_>,
    serving: &BTreeMap<&str, bool>,
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
    match serving.get(&*answer.region) {
        None => {
            return Some(format!(
                "region {} no longer serves this domain",
                answer.region
            ));
        }
        Some(true) => {
            return Some(format!("region {} is declared state: down", answer.region));
        }
        Some(false) => {}
    }
    match fleet.by_id(&answer.node_id) {
        None => Some("no longer registered".to_owned()),
        Some(node) if node.status == NodeStatus::Drain => Some("drained".to_owned()),
        Some(_) => None,
    }
}

/// Prefixes each kept answer's reason with `prefix`, replacing an earlier
/// prefix so reasons do not grow with every report. Neighbouring answers
/// with the same reason (a region's nodes) share the new one.
fn relabel(answers: Vec<Answer>, prefix: &str) -> Vec<Answer> {
    let mut last: Option<(Arc<str>, Arc<str>)> = None;
    answers
        .into_iter()
        .map(|mut answer| {
            let relabeled = match &last {
                Some((from, to)) if *from == answer.reason => Arc::clone(to),
                _ => {
                    let mut original = &*answer.reason;
                    while let Some(rest) = original
                        .strip_prefix(KEPT_PREFIX)
                        .or_else(|| original.strip_prefix(HELD_PREFIX))
                    {
                        original = rest;
                    }
                    let to: Arc<str> = format!("{prefix}{original}").into();
                    last = Some((Arc::clone(&answer.reason), Arc::clone(&to)));
                    to
                }
            };
            answer.reason = relabeled;
            answer
        })
        .collect()
}

fn answer(member: &Member<'_>, region: &Arc<str>, weight: u32, reason: &Arc<str>) -> Answer {
    Answer {
        node_id: member.id(),
        region: Arc::clone(region),
        address: member.node.address,
        weight,
        reason: Arc::clone(reason),
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
