//! Incremental recompute: after node events, recompute only the domains the
//! events could have changed and keep every other domain's entry of the
//! previous report.
//!
//! [`compute_incremental`] returns exactly what [`compute`] returns on the
//! same inputs (a property test compares them after every event of random
//! event sequences), provided the caller keeps its contract:
//!
//! - `previous` is the report [`compute`] or [`compute_incremental`] returned
//!   for the **same declarations**, at [`Changes::previous_now`]. When the
//!   declarations change, call [`compute`] instead.
//! - [`Changes::regions`] names every region (a node's `region`) whose nodes
//!   differ from the nodes `previous` was computed from: a node registered,
//!   deregistered, moved (both regions), or changed in id, address, status or
//!   `status_since`. [`Changes::node`] records one event,
//!   [`Changes::between`] compares two node lists. Heartbeats, metrics and
//!   mode are not read by the weights, so they change nothing. Neither does
//!   the order of the list: a region's nodes are sorted by id and address,
//!   and two nodes with the same id and address read the same in either
//!   order; only "the first node with an id", which kept answers check,
//!   depends on the order, and a domain that may keep answers is always
//!   recomputed (2. below).
//! - `settings` may differ from `previous`'s: they only decide the guard,
//!   which is recomputed every time.
//!
//! # Which domains are recomputed
//!
//! Everything, as [`compute`] does, when the split-brain guard (rule 6,
//! global: computed from every node at `now`) is tripped now or was tripped
//! in `previous`: a held domain's answers come from the previous report, and
//! a guard that released changes every domain's reasons.
//!
//! Otherwise a domain is recomputed when any of these holds, and keeps its
//! previous entry when none does:
//!
//! 1. `previous` has no entry for it;
//! 2. its previous entry read the report before it: mode `last_known_good`
//!    or `split_brain_hold`, or `fail_open`/`empty` under
//!    `all_down: last_known_good` (the [weights' rule 4](super) looked for
//!    answers to keep, and kept answers depend on nodes by id, in any
//!    region);
//! 3. it serves ([`health::serves`]) a region named in [`Changes::regions`];
//! 4. it has a `slow_start` period `p` and serves a region with a node whose
//!    `status_since` is less than `p` before `min(previous_now, now)`: the
//!    region may be ramping (the weights' rule 5) at `previous_now` or at
//!    `now`, and a ramp's weight and reason change with time.
//!
//! Domains of `previous` no longer declared are dropped.
//!
//! Why that is enough: with the guard off, a domain's entry is a function of
//! the declarations, the nodes of the regions it serves, `now` only through a
//! ramp in progress (a region's ramp starts at one of its nodes'
//! `status_since`, and "in progress at `t`" only gets less likely as `t`
//! grows, so checking the earlier of the two times covers both), and its
//! previous entry only when it keeps answers (the weights' rules 4 and 6).
//! Weights do not follow
//! `failover` (see [`crate::failover`]), so a region a domain does not serve
//! never changes it.
//!
//! # Cost
//!
//! The guard and, when some domain has `slow_start`, the latest
//! `status_since` per region are one pass over the nodes each; only the
//! nodes of the regions serving recomputed domains are indexed, and only
//! those regions are evaluated. The report's entries are shared
//! ([`WeightsReport::domains`] holds `Arc`s): the domains kept are the
//! previous report's entries, neither copied nor compared, and a caller that
//! shares the previous report copies only its map of `Arc`s.
//!
//! A recomputed domain that was `normal` and stays `normal` keeps the
//! answers of every region left alone: its answers are one shared run per
//! serving region ([`Answers`]), so only the runs of the regions that
//! changed or may ramp (the same test as 3. and 4., per region) are made
//! again, once for all the domains that evaluate them alike, and the others
//! are kept by reference. Its regions and notes are rebuilt from the
//! evaluations as [`compute`] writes them. When every domain serves the
//! changed region (1,000 domains × 100 regions of 100 nodes), one node's
//! change makes about 88 answers once, not 88 per domain.

use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use super::node_set::NodeSet;
use super::{
    AnswerMode, Answers, DomainWeights, Fleet, RegionEval, RegionEvaluator, SplitBrain,
    WeightSettings, WeightsReport, choose_answers, compute, domain_entry, domain_evals,
    split_brain_guard, split_brain_verdict, weights_text,
};
use crate::health;
use crate::model::{AllDownPolicy, Declarations, GtmPolicy, Node, Timestamp};

/// What changed since the previous report: see the [module docs](self).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// The `now` the previous report was computed at.
    pub previous_now: Timestamp,
    /// Every region (a node's `region`) whose nodes changed since.
    pub regions: BTreeSet<String>,
}

impl Changes {
    /// No change yet since a report computed at `previous_now`.
    pub fn new(previous_now: Timestamp) -> Self {
        Changes {
            previous_now,
            regions: BTreeSet::new(),
        }
    }

    /// Records one node event: `before` is the node as `previous` saw it
    /// (`None`: newly registered), `after` as it is now (`None`:
    /// deregistered). Both regions count when the node moved; nothing when
    /// only fields the weights never read (heartbeat, metrics, mode) changed.
    pub fn node(&mut self, before: Option<&Node>, after: Option<&Node>) {
        let same = match (before, after) {
            (Some(b), Some(a)) => weighed(b) == weighed(a),
            (None, None) => true,
            _ => false,
        };
        if same {
            return;
        }
        for node in before.into_iter().chain(after) {
            if !self.regions.contains(&node.region) {
                self.regions.insert(node.region.clone());
            }
        }
    }

    /// The changes from the nodes `before` (as `previous` was computed, at
    /// `previous_now`) to the nodes `after`: every region whose nodes differ
    /// in the fields the weights read, whatever their order. It indexes and
    /// sorts both lists; [`Changes::node`] is cheaper for known events (the
    /// daemon records them as it builds its node list).
    pub fn between<B: Borrow<Node>, A: Borrow<Node>>(
        previous_now: Timestamp,
        before: &[B],
        after: &[A],
    ) -> Self {
        let (before, after) = (by_region(before), by_region(after));
        let mut regions = BTreeSet::new();
        for (region, nodes) in &before {
            if after.get(region) != Some(nodes) {
                regions.insert((*region).to_owned());
            }
        }
        for region in after.keys() {
            if !before.contains_key(region) {
                regions.insert((*region).to_owned());
            }
        }
        Changes {
            previous_now,
            regions,
        }
    }
}

/// The fields of a node the weights read.
type Weighed<'a> = (
    &'a str,
    &'a str,
    std::net::IpAddr,
    crate::model::NodeStatus,
    Timestamp,
);

fn weighed(node: &Node) -> Weighed<'_> {
    (
        &node.id,
        &node.region,
        node.address,
        node.status,
        node.status_since,
    )
}

/// Each region's nodes as the weights read them, in an order of their own:
/// a region's weights and answers do not depend on the list order.
fn by_region<N: Borrow<Node>>(nodes: &[N]) -> BTreeMap<&str, Vec<Weighed<'_>>> {
    let mut index: BTreeMap<&str, Vec<Weighed<'_>>> = BTreeMap::new();
    for node in nodes.iter().map(Borrow::borrow) {
        index
            .entry(node.region.as_str())
            .or_default()
            .push(weighed(node));
    }
    for members in index.values_mut() {
        members
            .sort_by_key(|&(id, _, address, status, since)| (id, address, status.as_str(), since));
    }
    index
}

/// Which domains a [`compute_incremental`] call recomputed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Recomputed {
    /// Every domain, as [`compute`] does, and why.
    All(&'static str),
    /// These domains (in order); every other domain kept its previous entry.
    Domains(Vec<String>),
}

/// A report and which of its domains were computed afresh.
#[derive(Clone, Debug, PartialEq)]
pub struct Incremental {
    pub report: WeightsReport,
    pub recomputed: Recomputed,
}

/// [`compute`]'s report, recomputing only the domains `changes` and the
/// passing of time could have changed since `previous`; see the
/// [module docs](self) for the contract and the exact rule.
///
/// `previous` is taken by value: the domains kept move into the new report.
/// A caller that shares the previous report clones it first, which copies
/// its map of shared names and entries (reference counts), not the names or
/// the entries.
pub fn compute_incremental<N: Borrow<Node>>(
    decl: &Declarations,
    nodes: &[N],
    previous: WeightsReport,
    changes: &Changes,
    now: Timestamp,
    settings: &WeightSettings,
) -> Incremental {
    incremental_from(decl, &Listed(nodes), previous, changes, now, settings)
}

/// [`compute_incremental`] over a [`NodeSet`]: the same report, reading
/// only the regions the recomputed domains serve and the set's counts, not
/// every node (a caller that keeps the set between recomputes pays for
/// what changed, not for the size of the fleet).
pub fn compute_incremental_in(
    decl: &Declarations,
    nodes: &NodeSet,
    previous: WeightsReport,
    changes: &Changes,
    now: Timestamp,
    settings: &WeightSettings,
) -> Incremental {
    incremental_from(decl, nodes, previous, changes, now, settings)
}

/// What an incremental recompute asks of its nodes: a list walks them, a
/// [`NodeSet`] answers from its groups and counts.
trait NodeSource {
    fn split_brain_guard(&self, now: Timestamp, settings: &WeightSettings) -> Option<SplitBrain>;
    /// The newest `status_since` of each region (by the node's `region`)
    /// whose newest is later than `after`.
    fn latest_after(&self, after: Timestamp) -> BTreeMap<&str, Timestamp>;
    /// The nodes of the regions in `only`, indexed.
    fn fleet<'s>(&'s self, only: &BTreeSet<&str>) -> Fleet<'s>;
    /// Every node, for a full [`compute`].
    fn all(&self) -> Vec<&Node>;
}

/// A plain list of nodes.
struct Listed<'n, N>(&'n [N]);

impl<N: Borrow<Node>> NodeSource for Listed<'_, N> {
    fn split_brain_guard(&self, now: Timestamp, settings: &WeightSettings) -> Option<SplitBrain> {
        split_brain_guard(self.0, now, settings)
    }

    fn latest_after(&self, after: Timestamp) -> BTreeMap<&str, Timestamp> {
        let mut latest: BTreeMap<&str, Timestamp> = BTreeMap::new();
        for node in self.0.iter().map(Borrow::borrow) {
            if node.status_since > after {
                latest
                    .entry(node.region.as_str())
                    .and_modify(|t| *t = (*t).max(node.status_since))
                    .or_insert(node.status_since);
            }
        }
        latest
    }

    fn fleet<'s>(&'s self, only: &BTreeSet<&str>) -> Fleet<'s> {
        Fleet::new(self.0, Some(only))
    }

    fn all(&self) -> Vec<&Node> {
        self.0.iter().map(Borrow::borrow).collect()
    }
}

impl NodeSource for NodeSet {
    fn split_brain_guard(&self, now: Timestamp, settings: &WeightSettings) -> Option<SplitBrain> {
        let went_down = self.down_since(now.minus(settings.split_brain_window));
        split_brain_verdict(self.not_drained(), went_down, settings)
    }

    fn latest_after(&self, after: Timestamp) -> BTreeMap<&str, Timestamp> {
        self.latest_since_by_region()
            .filter(|(_, latest)| *latest > after)
            .collect()
    }

    fn fleet<'s>(&'s self, only: &BTreeSet<&str>) -> Fleet<'s> {
        Fleet::of_set(self, only)
    }

    fn all(&self) -> Vec<&Node> {
        self.iter().map(|node| &**node).collect()
    }
}

fn incremental_from(
    decl: &Declarations,
    nodes: &impl NodeSource,
    previous: WeightsReport,
    changes: &Changes,
    now: Timestamp,
    settings: &WeightSettings,
) -> Incremental {
    let split_brain = nodes.split_brain_guard(now, settings);
    if split_brain.is_some() || previous.split_brain.is_some() {
        let why = if split_brain.is_some() {
            "the split-brain guard is tripped"
        } else {
            "the split-brain guard released"
        };
        return Incremental {
            report: compute(decl, &nodes.all(), &previous.domains, now, settings),
            recomputed: Recomputed::All(why),
        };
    }

    let mut domains = previous.domains;
    if !domains
        .keys()
        .map(|domain| &**domain)
        .eq(decl.gtm.keys().map(String::as_str))
    {
        domains.retain(|domain, _| decl.gtm.contains_key(&**domain));
    }
    // Each declared domain's previous mode; both maps are sorted by domain,
    // so when they hold the same domains they pair up without look-ups.
    let modes: Vec<Option<AnswerMode>> = if domains.len() == decl.gtm.len() {
        domains.values().map(|d| Some(d.mode)).collect()
    } else {
        decl.gtm
            .keys()
            .map(|domain| domains.get(domain.as_str()).map(|d| d.mode))
            .collect()
    };
    let hot = hot_regions(decl, nodes, changes, now);
    let dirty: Vec<(&String, &GtmPolicy)> = decl
        .gtm
        .iter()
        .zip(modes)
        .filter(|&((_, policy), mode)| {
            mode.is_none_or(|mode| read_previous(mode, policy.all_down))
                || hot
                    .iter()
                    .any(|(key, hot)| health::serves(decl, policy, key) && hot.affects(policy))
        })
        .map(|(entry, _)| entry)
        .collect();
    if dirty.is_empty() {
        return Incremental {
            report: WeightsReport {
                split_brain,
                domains,
            },
            recomputed: Recomputed::Domains(Vec::new()),
        };
    }

    // Only the regions serving a recomputed domain are read.
    let mut serving: BTreeSet<&str> = BTreeSet::new();
    for (_, policy) in &dirty {
        if policy.regions.is_empty() {
            serving.extend(decl.regions.values().map(|r| r.name.as_str()));
            break;
        }
        serving.extend(
            policy
                .regions
                .keys()
                .filter_map(|key| decl.regions.get(key))
                .map(|r| r.name.as_str()),
        );
    }
    // The regions that changed or may ramp, by name as evaluations carry it.
    let mut hot_by_name: BTreeMap<&str, &Hot> = BTreeMap::new();
    for (key, hot) in &hot {
        hot_by_name.insert(key, hot);
        if let Some(region) = decl.regions.get(*key) {
            hot_by_name.insert(&region.name, hot);
        }
    }
    let fleet = nodes.fleet(&serving);
    let mut evaluator = RegionEvaluator::new(decl, &fleet, now);
    let mut recomputed = Vec::with_capacity(dirty.len());
    for (domain, policy) in dirty {
        recomputed.push(domain.clone());
        let (evals, mut reasons) = domain_evals(decl, policy, &mut evaluator);
        if let Some(entry) = domains.get_mut(domain.as_str())
            && runs_align(entry, &evals)
        {
            let hot = |eval: &RegionEval<'_>| {
                hot_by_name
                    .get(&*eval.weight.region)
                    .is_some_and(|hot| hot.affects(policy))
            };
            *entry = Arc::new(patched(policy, entry, &evals, reasons, hot));
            continue;
        }
        let (mode, answers) = choose_answers(
            policy,
            &evals,
            &fleet,
            domains.get(domain.as_str()).map(Arc::as_ref),
            false,
            &mut reasons,
        );
        let weights = domain_entry(policy, mode, &evals, answers, reasons);
        match domains.get_mut(domain.as_str()) {
            Some(entry) => *entry = Arc::new(weights),
            None => {
                domains.insert(Arc::from(domain.as_str()), Arc::new(weights));
            }
        }
    }
    Incremental {
        report: WeightsReport {
            split_brain,
            domains,
        },
        recomputed: Recomputed::Domains(recomputed),
    }
}

/// Whether a domain's previous entry holds one run of answers per serving
/// region, in the order of `evals`, and the domain was and stays `normal`:
/// then a region left alone keeps its run.
fn runs_align(entry: &DomainWeights, evals: &[Rc<RegionEval<'_>>]) -> bool {
    let runs = entry.answers.runs();
    entry.mode == AnswerMode::Normal
        && evals.iter().any(|e| e.weight.effective > 0)
        && entry.regions.len() == evals.len()
        && runs.len() == evals.len()
        && entry
            .regions
            .iter()
            .zip(evals)
            .zip(runs)
            .all(|((before, eval), run)| {
                // Rule 3: `min(w, n)` of `n` ready nodes get a positive share
                // of `w`.
                let count = if before.effective == 0 {
                    0
                } else {
                    before.effective.min(before.ready)
                };
                before.region == eval.weight.region
                    && usize::try_from(count).is_ok_and(|count| count == run.len())
                    && run.first().is_none_or(|a| a.region == before.region)
            })
}

/// A `normal` domain's new entry from its previous one: the regions `hot`
/// picks answer with their evaluation's run, every other region keeps its
/// previous run (same nodes, same evaluation), and the regions and notes
/// are rebuilt from `evals` as [`choose_answers`] writes them.
fn patched(
    policy: &GtmPolicy,
    previous: &DomainWeights,
    evals: &[Rc<RegionEval<'_>>],
    mut reasons: Vec<String>,
    hot: impl Fn(&RegionEval<'_>) -> bool,
) -> DomainWeights {
    reasons.push(format!("weights from health: {}", weights_text(evals)));
    let runs = evals
        .iter()
        .zip(previous.answers.runs())
        .map(|(eval, run)| {
            if hot(eval) {
                eval.run()
            } else {
                Arc::clone(run)
            }
        })
        .collect();
    for eval in evals {
        reasons.extend(eval.zero_shares.clone());
    }
    domain_entry(
        policy,
        AnswerMode::Normal,
        evals,
        Answers::from_runs(runs),
        reasons,
    )
}

/// Rule 2: whether a domain's previous entry, of `mode` under `all_down`,
/// came from the report before it.
fn read_previous(mode: AnswerMode, all_down: AllDownPolicy) -> bool {
    match mode {
        AnswerMode::Normal => false,
        AnswerMode::FailOpen | AnswerMode::Empty => all_down == AllDownPolicy::LastKnownGood,
        AnswerMode::LastKnownGood | AnswerMode::SplitBrainHold => true,
    }
}

/// Why a declared region may change the domains it serves.
struct Hot {
    /// Rule 3: its nodes changed.
    changed: bool,
    /// Rule 4: how long before `min(previous_now, now)` its latest
    /// `status_since` is (zero when later); `None` when no node of it is
    /// recent enough for any `slow_start` period declared.
    ramp_age: Option<Duration>,
}

impl Hot {
    fn affects(&self, policy: &GtmPolicy) -> bool {
        self.changed
            || policy
                .slow_start
                .filter(|period| !period.is_zero())
                .zip(self.ramp_age)
                .is_some_and(|(period, age)| age < period)
    }
}

/// The declared regions (by key) that may change a domain serving them, by
/// rules 3 and 4.
fn hot_regions<'a>(
    decl: &'a Declarations,
    nodes: &impl NodeSource,
    changes: &Changes,
    now: Timestamp,
) -> Vec<(&'a str, Hot)> {
    let longest = decl
        .gtm
        .values()
        .filter_map(|p| p.slow_start)
        .max()
        .unwrap_or(Duration::ZERO);
    let earlier = changes.previous_now.min(now);
    // The smallest age of a node's `status_since` per region (that of its
    // newest), for the regions with a node younger than the longest period.
    // `minus` rounds down to whole milliseconds: one more keeps every
    // region the exact test below may accept.
    let mut youngest: BTreeMap<&str, Duration> = BTreeMap::new();
    if !longest.is_zero() {
        let after = earlier.minus(longest).minus(Duration::from_millis(1));
        for (region, latest) in nodes.latest_after(after) {
            let age = earlier.since(latest);
            if age < longest {
                youngest.insert(region, age);
            }
        }
    }
    decl.regions
        .iter()
        .filter_map(|(key, region)| {
            let hot = Hot {
                changed: changes.regions.contains(key.as_str())
                    || changes.regions.contains(region.name.as_str()),
                ramp_age: youngest.get(region.name.as_str()).copied(),
            };
            (hot.changed || hot.ramp_age.is_some()).then_some((key.as_str(), hot))
        })
        .collect()
}
