//! Autoscale decisions per region: from a region's policy, its nodes, their
//! metric samples, the last action and the failover situation, decide whether
//! to scale out, scale in (and which nodes to drain), replace down nodes, or do
//! nothing, and say why with the numbers behind it.
//!
//! This module owns the decision rules only. It must not act on a decision: it
//! writes no tfvars, marks no node, reads no clock. The caller applies the
//! [`Action`], records it as the region's [`LastAction`] (replacements too;
//! `in_flight` until its commit is applied and its nodes registered) and keeps
//! [`Decision::failover_extra`] from every decision, acting or not.
//!
//! # Region metric (rule 1)
//!
//! Only samples of the region's *ready* nodes (status `up`) count; samples of
//! draining or down nodes, samples later than `now` and non-finite values (NaN,
//! ±inf, per metric) are ignored as if they had never been taken. For a window
//! of length `w` ending at `now`, samples older than `now - 2w` (the window
//! start minus one window) are ignored too. The region's value of a metric at a
//! time `t` is the mean, over the ready nodes that have one, of each node's
//! latest sample at or before `t`. That makes the region value a step function
//! that changes only at sample times.
//!
//! # Sustained (rule 2)
//!
//! A threshold *holds for `w`* when the region value satisfies it at the window
//! start `now - w` (which needs a sample at or before it: the samples cover the
//! whole window) and at every sample time in `(now - w, now]`. Checking the
//! window start as well as the sample times checks the step function over the
//! whole window, not only where it changes. Thresholds are strict: `cpu_above`,
//! `rtt_ms_above`, `error_rate_above` need `value > bound`, the `_below` ones
//! `value < bound`. Scale out when any scale-up threshold holds for
//! `scale_up.for`. Scale in when every given scale-down threshold holds for
//! `scale_down.for` (a policy with no scale-down threshold never scales in on
//! metrics) and no scale-up threshold is met by the region value at `now`
//! (computed with the scale-down window's look-back). Reasons show the weakest
//! value seen in the window: the lowest for an `_above` threshold, the highest
//! for a `_below` one. Values oscillating strictly between the scale-down and
//! scale-up thresholds satisfy neither, so they never act (rule 9).
//!
//! # Order of the rules
//!
//! One decision per region; the first rule that applies wins (rule numbers as
//! in the design brief):
//!
//! - An `in_flight` last action blocks everything, rules 5–7 included, until
//!   `now - at > in_flight_timeout`; then the reason says it timed out and the
//!   rules below run. A last action stamped after `now` counts as just taken.
//! - A region with `min_nodes > max_nodes` is not scaled (validation rejects
//!   it; the engine still must not make it worse).
//! - Rule 5: `desired < min_nodes` scales out to `min_nodes`;
//!   `desired > max_nodes` scales in to `max_nodes`.
//! - Rule 6: down nodes while `ready < desired` are replaced.
//! - Rule 7: failover capacity grows or is released.
//! - Without a policy nothing else happens ("no autoscale policy").
//! - Rule 4: nothing within `cooldown` of the last action.
//! - Rules 2 and 3: metric scale out, else metric scale in, one `step` each,
//!   clamped to `[min_nodes, max_nodes]`.
//!
//! Cooldown damps reactions to metrics, which the last action itself disturbs.
//! It does not hold back the other rules: bringing `desired` back inside the
//! region's bounds and replacing down nodes restore declared capacity rather
//! than react to load, and failover capacity is needed at the moment traffic
//! moves, not a cooldown later (its release already waits `scale_down.for`
//! after the source recovers). An in-flight action blocks them all, because a
//! second node-pool change racing an unapplied one could undo it.
//!
//! Bootstrap: a region whose nodes have not registered yet (no nodes, nothing
//! down) is left alone, there is nothing to replace and nothing to measure;
//! the first `terraform apply` creates its nodes.
//!
//! # Failover capacity (rule 7)
//!
//! The sources of a region R are the regions S whose load reaches R over the
//! failover graph ([`failover::absorbers`]): R is in S's `failover` list, or
//! behind targets of S that are down themselves; the walk never goes past a
//! region already visited, so mutual failover and longer cycles are fine and
//! no region is counted twice. A source that is down
//! ([`health::capacity_status`]) loses `desired_nodes(S)` nodes, shared among
//! the regions its load reaches, rounded up ([`FailoverSource::share`]). R
//! always counts itself among the sharers (the walk stops at R even when R is
//! down), so a target that is down too keeps its share instead of releasing
//! it. R grows
//! (not limited by `step`, clamped to `max_nodes`) when the sum of the shares
//! of its down sources exceeds its `failover_extra`; the new extra counts only
//! the nodes actually added. The extra is released (clamped to `min_nodes`)
//! down to the shares still held: those of sources still down and of sources
//! up for less than `scale_down.for` (by [`RegionStatus::since`]; a source
//! whose recovery time is unknown counts as recovered long ago). While extra
//! remains, metric scale-in never goes below `min_nodes + failover_extra`, so
//! it shrinks only the region's own capacity. A region whose policy does not
//! enable `failover_capacity` (or has no policy) reports `failover_extra` 0:
//! turning the feature off turns earlier extra nodes into ordinary capacity.
//! A source that is starting (down, not declared down, and none of its nodes
//! has ever been ready: no nodes, or only down ones since
//! [`Timestamp::SINCE_FOREVER`]) is no source: it lost no traffic, so a
//! region whose first nodes are still proving themselves does not make its
//! targets grow. (Its own decision still replaces such nodes; the node
//! pool's plan gives a starting node its grace.)
//!
//! # Which nodes a scale-in drains (rule 8)
//!
//! Removing `k` nodes takes, in order:
//!
//! 1. slots of `desired_nodes` no node has registered for yet
//!    (`desired - (ready + draining + down)`): nothing to drain, and draining
//!    a ready node instead would cut serving capacity;
//! 2. nodes already draining: they count toward `k` but are not listed again,
//!    they are already marked;
//! 3. down nodes, by id;
//! 4. ready nodes with the lowest CPU (latest sample at or before `now`, else
//!    the node's last heartbeat metrics; a node with no CPU figure at all
//!    comes first, nothing is known to run there), ties broken by the
//!    greatest node id.
//!
//! `ScaleIn::drain` lists the nodes the caller must mark `drain`, in that
//! order. Together this never leaves fewer than `to` ready nodes (or all the
//! ready nodes there were).
//!
//! # Numbers
//!
//! Every decision fills `numbers` with the figures its reason quotes, under
//! stable keys: `from`, `to`, `window_s`, the metric names (`cpu`, `rtt_ms`,
//! `error_rate`: the weakest value in the window, or the latest when
//! steady), the thresholds (`cpu_above`, `cpu_below`, ...), `desired`,
//! `ready`, `down`, `min_nodes`, `max_nodes`, `cooldown_s`,
//! `since_last_action_s`, `in_flight_age_s`, `in_flight_timeout_s`,
//! `failover_needed` (shares of down sources), `failover_held` (plus shares
//! of sources recovered less than `scale_down.for` ago) and
//! `failover_extra_had` (the extra before this decision). Non-finite values
//! are left out.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::failover;
use crate::health::{self, RegionStatus};
use crate::model::{
    AutoscalePolicy, Declarations, DeclaredRegionState, MetricSample, Metrics, Node, NodeStatus,
    Region, RegionHealth, Timestamp,
};

/// A metric sample of one node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeSample {
    /// Shared: a node's id is held once however many samples it has.
    pub node_id: std::sync::Arc<str>,
    #[serde(flatten)]
    pub sample: MetricSample,
}

/// The last scaling action taken for a region.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastAction {
    pub at: Timestamp,
    pub from: u32,
    pub to: u32,
    /// Its commit is not yet applied or its nodes have not registered yet.
    pub in_flight: bool,
    /// Nodes added to this region to absorb a failed region's capacity and
    /// not yet released.
    #[serde(default)]
    pub failover_extra: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AutoscaleSettings {
    /// An in-flight action older than this no longer blocks new ones.
    pub in_flight_timeout: Duration,
}

impl Default for AutoscaleSettings {
    fn default() -> Self {
        AutoscaleSettings {
            in_flight_timeout: Duration::from_secs(600),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Action {
    None,
    ScaleOut {
        from: u32,
        to: u32,
    },
    ScaleIn {
        from: u32,
        to: u32,
        /// Nodes to mark `drain`, in the order they were picked. Nodes already
        /// draining count toward the removal but are not listed.
        drain: Vec<String>,
    },
    /// Run the node-pool Terraform that replaces the slots of these down
    /// nodes (sorted by id). `desired_nodes` does not change.
    Replace {
        nodes: Vec<String>,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub region: String,
    pub action: Action,
    pub reason: String,
    /// The figures behind the reason (metric values, thresholds, counts).
    pub numbers: BTreeMap<String, f64>,
    /// `failover_extra` after this action (see [`LastAction`]).
    pub failover_extra: u32,
}

/// A region that fails over to the region being decided, as it stands now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailoverSource {
    pub region: String,
    /// Its capacity health ([`health::capacity_status`]).
    pub health: RegionHealth,
    /// [`RegionStatus::since`]: when it left `down` (or went down).
    pub since: Option<Timestamp>,
    /// Its `desired_nodes`: the capacity lost while it is down.
    pub lost_nodes: u32,
    /// How many regions share that capacity: those its load reaches over the
    /// failover graph ([`failover::absorbers`]), always counting the region
    /// being decided.
    pub sharing_regions: u32,
}

impl FailoverSource {
    /// The part of the lost capacity one sharing region absorbs, rounded up.
    pub fn share(&self) -> u32 {
        self.lost_nodes.div_ceil(self.sharing_regions.max(1))
    }
}

/// Everything [`decide`] needs about one region.
#[derive(Clone, Debug)]
pub struct RegionInput<'a> {
    pub region: &'a Region,
    pub policy: Option<&'a AutoscalePolicy>,
    /// The region's current `desired_nodes` ([`Declarations::desired_nodes`]).
    pub desired_nodes: u32,
    /// Nodes of any region; only those of `region` are looked at.
    pub nodes: &'a [Node],
    /// Samples of any node; only those of `region`'s ready nodes count.
    pub samples: &'a [NodeSample],
    pub last_action: Option<&'a LastAction>,
    /// See [`failover_sources`].
    pub failover_sources: Vec<FailoverSource>,
}

/// Decisions for every declared region, in region order.
pub fn decide_all(
    decl: &Declarations,
    nodes: &[Node],
    samples: &[NodeSample],
    last_actions: &BTreeMap<String, LastAction>,
    now: Timestamp,
    settings: &AutoscaleSettings,
) -> BTreeMap<String, Decision> {
    let statuses = health::capacity_statuses(decl, nodes);
    decl.regions
        .values()
        .map(|region| {
            let input = RegionInput {
                region,
                policy: decl.autoscale.get(&region.name),
                desired_nodes: decl.desired_nodes(&region.name),
                nodes,
                samples,
                last_action: last_actions.get(&region.name),
                failover_sources: sources_from(decl, &statuses, &region.name),
            };
            (region.name.clone(), decide(&input, now, settings))
        })
        .collect()
}

/// The regions that fail over to `region`, with their current capacity status.
pub fn failover_sources(decl: &Declarations, nodes: &[Node], region: &str) -> Vec<FailoverSource> {
    sources_from(decl, &health::capacity_statuses(decl, nodes), region)
}

fn sources_from(
    decl: &Declarations,
    statuses: &BTreeMap<&str, RegionStatus>,
    region: &str,
) -> Vec<FailoverSource> {
    // `region` counts itself among the sharers even when down, so a target
    // that is down too keeps its share instead of releasing it.
    let is_down = |name: &str| {
        name != region
            && statuses
                .get(name)
                .is_none_or(|s| s.health == RegionHealth::Down)
    };
    decl.regions
        .values()
        .filter(|source| source.name != region)
        .filter_map(|source| {
            let status = statuses.get(source.name.as_str())?;
            if starting(source, status) {
                return None;
            }
            let sharing = failover::absorbers(&decl.regions, &source.name, is_down);
            if !sharing.contains(&region) {
                return None;
            }
            Some(FailoverSource {
                region: source.name.clone(),
                health: status.health,
                since: status.since,
                lost_nodes: decl.desired_nodes(&source.name),
                sharing_regions: count_u32(sharing.len()),
            })
        })
        .collect()
}

/// A region that is down only because none of its nodes has ever been ready
/// (no node left `up` at a known time) and that is not declared down is
/// starting, not failing: it lost no traffic, so it is no failover source.
fn starting(region: &Region, status: &RegionStatus) -> bool {
    status.health == RegionHealth::Down
        && status.since.is_none_or(|t| t == Timestamp::SINCE_FOREVER)
        && region.state != DeclaredRegionState::Down
}

/// The decision for one region. See the module docs for the rules.
pub fn decide(input: &RegionInput<'_>, now: Timestamp, settings: &AutoscaleSettings) -> Decision {
    let ctx = Ctx::new(input, now);
    let Some(last) = input.last_action.filter(|l| l.in_flight) else {
        return ctx.decide_unblocked();
    };
    let age = now.since(last.at);
    let timeout = settings.in_flight_timeout;
    if age <= timeout {
        return ctx.decision(
            Action::None,
            format!(
                "waiting for the in-flight action {} -> {} taken {} ago (timeout {})",
                last.from,
                last.to,
                fmt_duration(age),
                fmt_duration(timeout)
            ),
            Numbers::default()
                .with("in_flight_age_s", age.as_secs_f64())
                .with("in_flight_timeout_s", timeout.as_secs_f64()),
            ctx.extra,
        );
    }
    let mut decision = ctx.decide_unblocked();
    decision.reason = format!(
        "in-flight action {} -> {} timed out after {} (> {}); {}",
        last.from,
        last.to,
        fmt_duration(age),
        fmt_duration(timeout),
        decision.reason
    );
    decision
        .numbers
        .insert("in_flight_age_s".to_owned(), age.as_secs_f64());
    decision
}

/// One region's inputs, sorted out once.
struct Ctx<'a> {
    input: &'a RegionInput<'a>,
    now: Timestamp,
    desired: u32,
    ready: Vec<&'a Node>,
    draining: Vec<&'a Node>,
    down: Vec<&'a Node>,
    series: RegionSeries<'a>,
    /// The failover extra carried in: 0 unless the policy enables it.
    extra: u32,
}

impl<'a> Ctx<'a> {
    fn new(input: &'a RegionInput<'a>, now: Timestamp) -> Self {
        let mut ready = Vec::new();
        let mut draining = Vec::new();
        let mut down = Vec::new();
        for node in input.nodes.iter().filter(|n| n.region == input.region.name) {
            match node.status {
                NodeStatus::Up => ready.push(node),
                NodeStatus::Drain => draining.push(node),
                NodeStatus::Down => down.push(node),
            }
        }
        down.sort_by(|a, b| a.id.cmp(&b.id));
        draining.sort_by(|a, b| a.id.cmp(&b.id));
        let series = RegionSeries::new(&ready, input.samples, now);
        let failover_enabled = input.policy.is_some_and(|p| p.failover_capacity);
        let extra = match input.last_action {
            Some(last) if failover_enabled => last.failover_extra,
            _ => 0,
        };
        Ctx {
            input,
            now,
            desired: input.desired_nodes,
            ready,
            draining,
            down,
            series,
            extra,
        }
    }

    fn min(&self) -> u32 {
        self.input.region.min_nodes
    }

    fn max(&self) -> u32 {
        self.input.region.max_nodes
    }

    fn decision(
        &self,
        action: Action,
        reason: String,
        numbers: Numbers,
        failover_extra: u32,
    ) -> Decision {
        Decision {
            region: self.input.region.name.clone(),
            action,
            reason,
            numbers: numbers.0,
            failover_extra,
        }
    }

    fn none(&self, reason: String, numbers: Numbers, failover_extra: u32) -> Decision {
        self.decision(Action::None, reason, numbers, failover_extra)
    }

    fn scale_out(&self, to: u32, why: &str, numbers: Numbers, failover_extra: u32) -> Decision {
        self.decision(
            Action::ScaleOut {
                from: self.desired,
                to,
            },
            format!("{why}; scale out {} -> {to}", self.desired),
            numbers.with_u32("from", self.desired).with_u32("to", to),
            failover_extra,
        )
    }

    fn scale_in(&self, to: u32, why: &str, numbers: Numbers, failover_extra: u32) -> Decision {
        let drain = self.pick_drain(self.desired.saturating_sub(to));
        let drained = if drain.is_empty() {
            String::new()
        } else {
            format!(", drain {}", drain.join(", "))
        };
        self.decision(
            Action::ScaleIn {
                from: self.desired,
                to,
                drain,
            },
            format!("{why}; scale in {} -> {to}{drained}", self.desired),
            numbers.with_u32("from", self.desired).with_u32("to", to),
            failover_extra,
        )
    }

    fn decide_unblocked(&self) -> Decision {
        let (min, max, desired) = (self.min(), self.max(), self.desired);
        let bounds = Numbers::default()
            .with_u32("desired", desired)
            .with_u32("min_nodes", min)
            .with_u32("max_nodes", max);
        if min > max {
            return self.none(
                format!("min_nodes {min} > max_nodes {max}: invalid region, not scaling"),
                bounds,
                self.extra,
            );
        }
        if desired < min {
            let why = format!("desired {desired} below min_nodes {min}");
            return self.scale_out(min, &why, bounds, self.extra);
        }
        if desired > max {
            let why = format!("desired {desired} above max_nodes {max}");
            return self.scale_in(max, &why, bounds, self.extra);
        }
        let ready = count_u32(self.ready.len());
        if !self.down.is_empty() && ready < desired {
            let nodes: Vec<String> = self.down.iter().map(|n| n.id.clone()).collect();
            return self.decision(
                Action::Replace {
                    nodes: nodes.clone(),
                },
                format!(
                    "{} node(s) down ({}) and {ready} ready < {desired} desired; replace them",
                    nodes.len(),
                    nodes.join(", ")
                ),
                Numbers::default()
                    .with_u32("down", count_u32(nodes.len()))
                    .with_u32("ready", ready)
                    .with_u32("desired", desired),
                self.extra,
            );
        }
        let Some(policy) = self.input.policy else {
            return self.none(
                "no autoscale policy".to_owned(),
                Numbers::default()
                    .with_u32("desired", desired)
                    .with_u32("ready", ready),
                0,
            );
        };
        let extra = if policy.failover_capacity {
            match self.failover(policy) {
                FailoverStep::Decided(decision) => return decision,
                FailoverStep::Continue { extra } => extra,
            }
        } else {
            0
        };
        if let Some(last) = self.input.last_action {
            let elapsed = self.now.since(last.at);
            if elapsed < policy.cooldown {
                return self.none(
                    format!(
                        "cooldown: last action {} -> {} taken {} ago < cooldown {}",
                        last.from,
                        last.to,
                        fmt_duration(elapsed),
                        fmt_duration(policy.cooldown)
                    ),
                    Numbers::default()
                        .with("since_last_action_s", elapsed.as_secs_f64())
                        .with("cooldown_s", policy.cooldown.as_secs_f64()),
                    extra,
                );
            }
        }
        self.decide_on_metrics(policy, extra)
    }

    fn failover(&self, policy: &AutoscalePolicy) -> FailoverStep {
        let sources = &self.input.failover_sources;
        if sources.is_empty() && self.extra == 0 {
            return FailoverStep::Continue { extra: 0 };
        }
        let hold = policy.scale_down.for_;
        let mut needed = 0u32;
        let mut held = 0u32;
        let mut parts = Vec::new();
        for source in sources {
            let share = source.share();
            if source.health == RegionHealth::Down {
                needed = needed.saturating_add(share);
                held = held.saturating_add(share);
                parts.push(format!(
                    "{} down ({} node(s) over {} region(s): share {share})",
                    source.region,
                    source.lost_nodes,
                    source.sharing_regions.max(1)
                ));
            } else {
                match source.since.map(|t| self.now.since(t)) {
                    Some(up_for) if up_for < hold => {
                        held = held.saturating_add(share);
                        parts.push(format!(
                            "{} up for {} < {} (holding share {share})",
                            source.region,
                            fmt_duration(up_for),
                            fmt_duration(hold)
                        ));
                    }
                    Some(up_for) => parts.push(format!(
                        "{} up for {} >= {}",
                        source.region,
                        fmt_duration(up_for),
                        fmt_duration(hold)
                    )),
                    None => parts.push(format!("{} up", source.region)),
                }
            }
        }
        let situation = if parts.is_empty() {
            "no failover source".to_owned()
        } else {
            parts.join(", ")
        };
        let extra = self.extra;
        let numbers = Numbers::default()
            .with_u32("failover_needed", needed)
            .with_u32("failover_held", held)
            .with_u32("failover_extra_had", extra);
        if needed > extra {
            let wanted = self.desired.saturating_add(needed - extra);
            let to = wanted.min(self.max());
            let why = format!("failover: {situation}; need {needed} extra node(s), have {extra}");
            if to <= self.desired {
                return FailoverStep::Decided(self.none(
                    format!("{why}; at max_nodes {}", self.max()),
                    numbers.with_u32("max_nodes", self.max()),
                    extra,
                ));
            }
            let added = to - self.desired;
            return FailoverStep::Decided(self.scale_out(
                to,
                &why,
                numbers,
                extra.saturating_add(added),
            ));
        }
        if extra > held {
            let to = self.desired.saturating_sub(extra - held).max(self.min());
            if to < self.desired {
                let why = format!(
                    "failover: {situation}; {held} extra node(s) still held, release {} of {extra}",
                    extra - held
                );
                return FailoverStep::Decided(self.scale_in(to, &why, numbers, held));
            }
        }
        FailoverStep::Continue {
            extra: extra.min(held),
        }
    }

    fn decide_on_metrics(&self, policy: &AutoscalePolicy, extra: u32) -> Decision {
        let up = &policy.scale_up;
        let down = &policy.scale_down;
        let up_thresholds = scale_up_thresholds(policy);
        let down_thresholds = scale_down_thresholds(policy);

        let up_holding: Vec<(Threshold, f64)> = up_thresholds
            .iter()
            .filter_map(|th| match self.series.sustained(*th, up.for_, self.now) {
                Sustained::Holds { weakest } => Some((*th, weakest)),
                Sustained::Not => None,
            })
            .collect();
        if !up_holding.is_empty() {
            let (why, numbers) = describe_sustained(&up_holding, up.for_);
            let to = self.desired.saturating_add(up.step).min(self.max());
            if to <= self.desired {
                let limit = if up.step == 0 {
                    "scale_up.step is 0".to_owned()
                } else {
                    format!("at max_nodes {}", self.max())
                };
                return self.none(
                    format!("{why}; {limit}"),
                    numbers
                        .with_u32("desired", self.desired)
                        .with_u32("max_nodes", self.max()),
                    extra,
                );
            }
            return self.scale_out(to, &why, numbers, extra);
        }

        let latest_lookback = self.now.minus(down.for_).minus(down.for_);
        let down_holding: Vec<(Threshold, f64)> = down_thresholds
            .iter()
            .filter_map(|th| match self.series.sustained(*th, down.for_, self.now) {
                Sustained::Holds { weakest } => Some((*th, weakest)),
                Sustained::Not => None,
            })
            .collect();
        if !down_thresholds.is_empty() && down_holding.len() == down_thresholds.len() {
            let (why, numbers) = describe_sustained(&down_holding, down.for_);
            let blocking: Vec<(Threshold, f64)> = up_thresholds
                .iter()
                .filter_map(|th| {
                    let value = self.series.value_at(th.metric, self.now, latest_lookback)?;
                    th.met_by(value).then_some((*th, value))
                })
                .collect();
            if !blocking.is_empty() {
                let mut numbers = numbers;
                let mut now_parts = Vec::new();
                for (th, value) in &blocking {
                    now_parts.push(th.describe(*value));
                    numbers = numbers
                        .with(th.metric.name(), *value)
                        .with(&th.key(), th.bound);
                }
                return self.none(
                    format!("{why}, but {} now; not scaling in", now_parts.join(", ")),
                    numbers,
                    extra,
                );
            }
            let floor = self.min().saturating_add(extra).min(self.max());
            let to = self.desired.saturating_sub(down.step).max(floor);
            if to >= self.desired {
                let limit = if down.step == 0 {
                    "scale_down.step is 0".to_owned()
                } else if extra > 0 {
                    format!("at min_nodes {} plus failover extra {extra}", self.min())
                } else {
                    format!("at min_nodes {}", self.min())
                };
                return self.none(
                    format!("{why}; {limit}"),
                    numbers
                        .with_u32("desired", self.desired)
                        .with_u32("min_nodes", self.min()),
                    extra,
                );
            }
            return self.scale_in(to, &why, numbers, extra);
        }
        self.steady(
            policy,
            &up_thresholds,
            &down_thresholds,
            latest_lookback,
            extra,
        )
    }

    fn steady(
        &self,
        policy: &AutoscalePolicy,
        up_thresholds: &[Threshold],
        down_thresholds: &[Threshold],
        lookback: Timestamp,
        extra: u32,
    ) -> Decision {
        let ready = count_u32(self.ready.len());
        let head = format!("steady at {} node(s)", self.desired);
        let mut numbers = Numbers::default()
            .with_u32("desired", self.desired)
            .with_u32("ready", ready);
        let metrics: BTreeSet<Metric> = up_thresholds
            .iter()
            .chain(down_thresholds)
            .map(|th| th.metric)
            .collect();
        let latest: BTreeMap<Metric, f64> = metrics
            .iter()
            .filter_map(|m| Some((*m, self.series.value_at(*m, self.now, lookback)?)))
            .collect();
        if latest.is_empty() {
            let reason = if metrics.is_empty() {
                format!("{head}: the policy sets no metric threshold")
            } else if ready < self.desired && self.down.is_empty() {
                format!(
                    "{head}: no metric samples; {ready} of {} desired node(s) ready and none down, \
                     waiting for the node pool to register them",
                    self.desired
                )
            } else {
                format!("{head}: no metric samples from {ready} ready node(s)")
            };
            return self.none(reason, numbers, extra);
        }
        let values: Vec<String> = latest
            .iter()
            .map(|(m, v)| format!("{} {}", m.name(), fmt_number(*v)))
            .collect();
        for (m, v) in &latest {
            numbers = numbers.with(m.name(), *v);
        }
        let mut pending = Vec::new();
        for (thresholds, window) in [
            (up_thresholds, policy.scale_up.for_),
            (down_thresholds, policy.scale_down.for_),
        ] {
            for th in thresholds {
                numbers = numbers.with(&th.key(), th.bound);
                if latest.get(&th.metric).is_some_and(|v| th.met_by(*v)) {
                    pending.push(format!(
                        "{} {} {} but not for {} yet",
                        th.metric.name(),
                        th.direction.symbol(),
                        fmt_number(th.bound),
                        fmt_duration(window)
                    ));
                }
            }
        }
        let tail = if pending.is_empty() {
            "within thresholds".to_owned()
        } else {
            pending.join(", ")
        };
        self.none(
            format!("{head}: {}; {tail}", values.join(", ")),
            numbers,
            extra,
        )
    }

    /// Rule 8: slots without a node first, then draining, then down, then
    /// ready by lowest CPU, ties by greatest id. Returns the nodes to newly
    /// mark `drain`.
    fn pick_drain(&self, removals: u32) -> Vec<String> {
        let registered = self
            .ready
            .len()
            .saturating_add(self.draining.len())
            .saturating_add(self.down.len());
        let desired = usize::try_from(self.desired).unwrap_or(usize::MAX);
        let unregistered = desired.saturating_sub(registered);
        let mut remaining = usize::try_from(removals).unwrap_or(usize::MAX);
        remaining = remaining
            .saturating_sub(unregistered)
            .saturating_sub(self.draining.len());
        let mut picked: Vec<String> = self
            .down
            .iter()
            .take(remaining)
            .map(|n| n.id.clone())
            .collect();
        remaining = remaining.saturating_sub(picked.len());
        let mut by_cpu: Vec<(&Node, Option<f64>)> =
            self.ready.iter().map(|n| (*n, self.node_cpu(n))).collect();
        by_cpu.sort_by(|a, b| cmp_cpu(a.1, b.1).then_with(|| b.0.id.cmp(&a.0.id)));
        picked.extend(by_cpu.iter().take(remaining).map(|(n, _)| n.id.clone()));
        picked
    }

    fn node_cpu(&self, node: &Node) -> Option<f64> {
        self.series
            .node_latest(&node.id, Metric::Cpu, self.now)
            .or_else(|| node.metrics.map(|m| m.cpu).filter(|v| v.is_finite()))
    }
}

enum FailoverStep {
    Decided(Decision),
    Continue { extra: u32 },
}

/// Unknown CPU first, then ascending.
fn cmp_cpu(a: Option<f64>, b: Option<f64>) -> Ordering {
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(a), Some(b)) => a.total_cmp(&b),
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Metric {
    Cpu,
    RttMs,
    ErrorRate,
}

impl Metric {
    fn name(self) -> &'static str {
        match self {
            Metric::Cpu => "cpu",
            Metric::RttMs => "rtt_ms",
            Metric::ErrorRate => "error_rate",
        }
    }

    fn of(self, metrics: &Metrics) -> f64 {
        match self {
            Metric::Cpu => metrics.cpu,
            Metric::RttMs => metrics.rtt_ms,
            Metric::ErrorRate => metrics.error_rate,
        }
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Direction {
    Above,
    Below,
}

impl Direction {
    fn symbol(self) -> &'static str {
        match self {
            Direction::Above => ">",
            Direction::Below => "<",
        }
    }
}

#[derive(Copy, Clone, Debug)]
struct Threshold {
    metric: Metric,
    direction: Direction,
    bound: f64,
}

impl Threshold {
    fn met_by(self, value: f64) -> bool {
        match self.direction {
            Direction::Above => value > self.bound,
            Direction::Below => value < self.bound,
        }
    }

    /// Of two values that both meet the threshold, the one closer to it.
    fn weaker(self, a: f64, b: f64) -> f64 {
        match self.direction {
            Direction::Above => a.min(b),
            Direction::Below => a.max(b),
        }
    }

    fn key(self) -> String {
        let side = match self.direction {
            Direction::Above => "above",
            Direction::Below => "below",
        };
        format!("{}_{side}", self.metric.name())
    }

    fn describe(self, value: f64) -> String {
        format!(
            "{} {} {} {}",
            self.metric.name(),
            fmt_number(value),
            self.direction.symbol(),
            fmt_number(self.bound)
        )
    }
}

fn scale_up_thresholds(policy: &AutoscalePolicy) -> Vec<Threshold> {
    let up = &policy.scale_up;
    [
        (Metric::Cpu, up.cpu_above),
        (Metric::RttMs, up.rtt_ms_above),
        (Metric::ErrorRate, up.error_rate_above),
    ]
    .into_iter()
    .filter_map(|(metric, bound)| {
        Some(Threshold {
            metric,
            direction: Direction::Above,
            bound: bound?,
        })
    })
    .collect()
}

fn scale_down_thresholds(policy: &AutoscalePolicy) -> Vec<Threshold> {
    let down = &policy.scale_down;
    [
        (Metric::Cpu, down.cpu_below),
        (Metric::RttMs, down.rtt_ms_below),
        (Metric::ErrorRate, down.error_rate_below),
    ]
    .into_iter()
    .filter_map(|(metric, bound)| {
        Some(Threshold {
            metric,
            direction: Direction::Below,
            bound: bound?,
        })
    })
    .collect()
}

/// "cpu 0.82 > 0.75 for 60s" for every sustained threshold, with its numbers.
fn describe_sustained(holding: &[(Threshold, f64)], window: Duration) -> (String, Numbers) {
    let mut numbers = Numbers::default().with("window_s", window.as_secs_f64());
    let mut parts = Vec::new();
    for (th, weakest) in holding {
        parts.push(th.describe(*weakest));
        numbers = numbers
            .with(th.metric.name(), *weakest)
            .with(&th.key(), th.bound);
    }
    (
        format!("{} for {}", parts.join(", "), fmt_duration(window)),
        numbers,
    )
}

enum Sustained {
    Holds { weakest: f64 },
    Not,
}

/// The samples of a region's ready nodes, per node, sorted by time (samples
/// taken at the same time keep their input order, the last one wins).
struct RegionSeries<'a> {
    per_node: BTreeMap<&'a str, Vec<&'a MetricSample>>,
}

impl<'a> RegionSeries<'a> {
    fn new(ready: &[&'a Node], samples: &'a [NodeSample], now: Timestamp) -> Self {
        // Gathered by hash (one lookup per sample), kept by id.
        let mut gathered: HashMap<&'a str, Vec<&'a MetricSample>> =
            ready.iter().map(|n| (n.id.as_str(), Vec::new())).collect();
        for sample in samples.iter().filter(|s| s.sample.at <= now) {
            if let Some(series) = gathered.get_mut(&*sample.node_id) {
                series.push(&sample.sample);
            }
        }
        let mut per_node = BTreeMap::new();
        for (id, mut series) in gathered {
            series.sort_by_key(|s| s.at);
            per_node.insert(id, series);
        }
        RegionSeries { per_node }
    }

    /// A node's latest finite value of `metric` at or before `t`, taken no
    /// earlier than `oldest`.
    fn node_value(
        series: &[&MetricSample],
        metric: Metric,
        t: Timestamp,
        oldest: Timestamp,
    ) -> Option<f64> {
        let end = series.partition_point(|s| s.at <= t);
        series
            .get(..end)?
            .iter()
            .rev()
            .take_while(|s| s.at >= oldest)
            .map(|s| metric.of(&s.metrics))
            .find(|v| v.is_finite())
    }

    fn node_latest(&self, node_id: &str, metric: Metric, now: Timestamp) -> Option<f64> {
        let series = self.per_node.get(node_id)?;
        Self::node_value(series, metric, now, Timestamp(i64::MIN))
    }

    /// The region value of `metric` at `t` (rule 1).
    fn value_at(&self, metric: Metric, t: Timestamp, oldest: Timestamp) -> Option<f64> {
        let values: Vec<f64> = self
            .per_node
            .values()
            .filter_map(|series| Self::node_value(series, metric, t, oldest))
            .collect();
        mean(&values)
    }

    /// Times in `(after, until]` at which some node has a finite `metric`.
    #[cfg(test)]
    fn sample_times(
        &self,
        metric: Metric,
        after: Timestamp,
        until: Timestamp,
    ) -> BTreeSet<Timestamp> {
        self.per_node
            .values()
            .flatten()
            .filter(|s| s.at > after && s.at <= until && metric.of(&s.metrics).is_finite())
            .map(|s| s.at)
            .collect()
    }

    /// Rule 2: whether `threshold` holds at the window start and at every
    /// sample time in the window ending at `now`.
    ///
    /// One sweep over the window's samples in time order, keeping each
    /// node's current value and their sum: O(samples · log samples) rather
    /// than a region value recomputed over every node at every sample time
    /// (with 25,000 ready nodes heartbeating every 10 s, a one-minute window
    /// holds 150,000 sample times). The running mean only screens: a value
    /// within its rounding error of the bound, or a sum that overflowed, is
    /// recomputed exactly as [`RegionSeries::value_at`] does, and the
    /// weakest value is recomputed exactly at the time it was seen, so the
    /// verdict is [`RegionSeries::value_at`]'s at every sample time.
    fn sustained(&self, threshold: Threshold, window: Duration, now: Timestamp) -> Sustained {
        let metric = threshold.metric;
        let start = now.minus(window);
        let oldest = start.minus(window);
        // Each node's value at `start`, then the window's samples in time
        // order (a stable sort: one node's samples at one time keep their
        // order, the last one wins).
        let mut current: Vec<Option<f64>> = Vec::with_capacity(self.per_node.len());
        let mut events: Vec<(Timestamp, usize, f64)> = Vec::new();
        for (index, series) in self.per_node.values().enumerate() {
            current.push(Self::node_value(series, metric, start, oldest));
            let first = series.partition_point(|s| s.at <= start);
            let upto = series.partition_point(|s| s.at <= now);
            events.extend(
                series
                    .get(first..upto)
                    .unwrap_or(&[])
                    .iter()
                    .map(|s| (s.at, index, metric.of(&s.metrics)))
                    .filter(|(_, _, value)| value.is_finite()),
            );
        }
        events.sort_by_key(|(at, _, _)| *at);
        // The largest magnitude any value has: it bounds the running sum's
        // rounding error.
        let largest = current
            .iter()
            .flatten()
            .chain(events.iter().map(|(_, _, v)| v))
            .fold(0.0_f64, |m, v| m.max(v.abs()));
        let mut running = RunningMean::new(&current);
        let screen = |running: &RunningMean, current: &[Option<f64>]| -> Option<f64> {
            let approximate = running.mean()?;
            let near = !approximate.is_finite()
                || (approximate - threshold.bound).abs() <= running.error_bound(largest);
            if near {
                mean(&current.iter().flatten().copied().collect::<Vec<f64>>())
            } else {
                Some(approximate)
            }
        };
        let Some(first) = screen(&running, &current) else {
            return Sustained::Not;
        };
        if !threshold.met_by(first) {
            return Sustained::Not;
        }
        let (mut weakest, mut weakest_at) = (first, start);
        let mut rest = events.as_slice();
        while let Some(&(t, _, _)) = rest.first() {
            let same = rest.partition_point(|(at, _, _)| *at == t);
            let (now_events, later) = rest.split_at(same);
            for &(_, index, value) in now_events {
                if let Some(slot) = current.get_mut(index) {
                    running.replace(slot.replace(value), value);
                }
            }
            if running.updates > current.len().max(64) {
                running = RunningMean::new(&current);
            }
            rest = later;
            match screen(&running, &current) {
                Some(value) if threshold.met_by(value) => {
                    if threshold.weaker(weakest, value) != weakest {
                        (weakest, weakest_at) = (value, t);
                    }
                }
                _ => return Sustained::Not,
            }
        }
        // The weakest value as the region value defines it (the running sum
        // may differ from it in the last bits).
        let weakest = self.value_at(metric, weakest_at, oldest).unwrap_or(weakest);
        Sustained::Holds { weakest }
    }

    /// [`RegionSeries::sustained`] by its definition: the region value
    /// recomputed at the window start and at every sample time. The
    /// reference its property test holds the sweep to.
    #[cfg(test)]
    fn sustained_by_definition(
        &self,
        threshold: Threshold,
        window: Duration,
        now: Timestamp,
    ) -> Sustained {
        let start = now.minus(window);
        let oldest = start.minus(window);
        let Some(mut weakest) = self.value_at(threshold.metric, start, oldest) else {
            return Sustained::Not;
        };
        if !threshold.met_by(weakest) {
            return Sustained::Not;
        }
        for t in self.sample_times(threshold.metric, start, now) {
            match self.value_at(threshold.metric, t, oldest) {
                Some(value) if threshold.met_by(value) => {
                    weakest = threshold.weaker(weakest, value);
                }
                _ => return Sustained::Not,
            }
        }
        Sustained::Holds { weakest }
    }
}

/// The sum and count of the nodes' current values, updated one value at a
/// time, with how many updates it took since it was last summed afresh.
struct RunningMean {
    sum: f64,
    count: usize,
    updates: usize,
}

impl RunningMean {
    fn new(current: &[Option<f64>]) -> RunningMean {
        RunningMean {
            sum: current.iter().flatten().sum(),
            count: current.iter().flatten().count(),
            updates: 0,
        }
    }

    fn replace(&mut self, before: Option<f64>, value: f64) {
        match before {
            Some(before) => self.sum += value - before,
            None => {
                self.sum += value;
                self.count += 1;
            }
        }
        self.updates += 1;
    }

    fn mean(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum / self.count as f64)
    }

    /// A bound on how far [`RunningMean::mean`] may be from the exact mean
    /// of values no larger than `largest` in magnitude: each of the `count`
    /// terms of the fresh sum and each update since rounds by at most one
    /// unit in the last place of a sum of at most `count · largest`, with
    /// a factor 4 to spare.
    fn error_bound(&self, largest: f64) -> f64 {
        4.0 * f64::EPSILON * largest * (self.count + self.updates + 2) as f64
    }
}

/// Mean without overflow: each value is divided before summing.
fn mean(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let n = values.len() as f64;
    let mean: f64 = values.iter().map(|v| v / n).sum();
    mean.is_finite().then_some(mean)
}

/// The machine-readable figures of a decision. Non-finite values are left
/// out (they cannot be serialized faithfully).
#[derive(Default)]
struct Numbers(BTreeMap<String, f64>);

impl Numbers {
    fn with(mut self, key: &str, value: f64) -> Self {
        if value.is_finite() {
            self.0.insert(key.to_owned(), value);
        }
        self
    }

    fn with_u32(self, key: &str, value: u32) -> Self {
        self.with(key, f64::from(value))
    }
}

fn count_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Whole seconds as `60s`, anything finer as `1500ms`.
fn fmt_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// At most three decimals, trailing zeros trimmed: `0.82`, `250`, `0.333`.
fn fmt_number(v: f64) -> String {
    let text = format!("{v:.3}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use expect_test::{Expect, expect};
    use proptest::prelude::*;

    use super::*;
    use crate::model::{
        CloudProvider, DeclaredRegionState, NodeMode, NodePoolDecl, ScaleDownRule, ScaleUpRule,
    };

    const NOW: i64 = 100_000;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_secs(secs)
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn region(name: &str, min: u32, max: u32, failover: &[&str]) -> Region {
        Region {
            name: name.into(),
            provider: CloudProvider::Edge,
            min_nodes: min,
            max_nodes: max,
            base_weight: 100,
            state: DeclaredRegionState::Up,
            failover: failover.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    /// The policy of DESIGN.md's `platform-config/autoscale/jp.yaml`.
    fn policy(region: &str) -> AutoscalePolicy {
        AutoscalePolicy {
            region: region.into(),
            scale_up: ScaleUpRule {
                cpu_above: Some(0.75),
                rtt_ms_above: Some(250.0),
                error_rate_above: Some(0.05),
                for_: secs(60),
                step: 1,
            },
            scale_down: ScaleDownRule {
                cpu_below: Some(0.30),
                rtt_ms_below: None,
                error_rate_below: None,
                for_: secs(300),
                step: 1,
            },
            cooldown: secs(300),
            failover_capacity: true,
        }
    }

    fn node(id: &str, status: NodeStatus) -> Node {
        let region = id.split('-').next().unwrap_or(id);
        Node {
            id: id.into(),
            region: region.into(),
            address: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
            status,
            // A known time: Timestamp::SINCE_FOREVER would mean "never ready".
            status_since: at(1),
            mode: NodeMode::ContainerdOnly,
            last_heartbeat: None,
            metrics: None,
        }
    }

    fn sample(node_id: &str, t: i64, cpu: f64, rtt_ms: f64, error_rate: f64) -> NodeSample {
        NodeSample {
            node_id: node_id.into(),
            sample: MetricSample {
                at: at(t),
                metrics: Metrics {
                    cpu,
                    rtt_ms,
                    error_rate,
                },
            },
        }
    }

    /// A heartbeat every 10 s from `from` to `to` (seconds, inclusive) with
    /// this CPU, a calm RTT and no errors.
    fn cpu_every_10s(node_id: &str, from: i64, to: i64, cpu: f64) -> Vec<NodeSample> {
        (from..=to)
            .step_by(10)
            .map(|t| sample(node_id, t, cpu, 50.0, 0.0))
            .collect()
    }

    /// One region, driven through [`decide`].
    struct Case {
        region: Region,
        policy: Option<AutoscalePolicy>,
        desired: u32,
        nodes: Vec<Node>,
        samples: Vec<NodeSample>,
        last: Option<LastAction>,
        sources: Vec<FailoverSource>,
    }

    impl Case {
        /// jp: 1..=5 nodes, the jp policy, desired 1, node jp-1 up.
        fn jp() -> Self {
            Case {
                region: region("jp", 1, 5, &[]),
                policy: Some(policy("jp")),
                desired: 1,
                nodes: vec![node("jp-1", NodeStatus::Up)],
                samples: vec![],
                last: None,
                sources: vec![],
            }
        }

        fn decide_at(&self, now: i64) -> Decision {
            let input = RegionInput {
                region: &self.region,
                policy: self.policy.as_ref(),
                desired_nodes: self.desired,
                nodes: &self.nodes,
                samples: &self.samples,
                last_action: self.last.as_ref(),
                failover_sources: self.sources.clone(),
            };
            decide(&input, at(now), &AutoscaleSettings::default())
        }

        fn decide(&self) -> Decision {
            self.decide_at(NOW)
        }
    }

    fn show(d: &Decision) -> String {
        let action = match &d.action {
            Action::None => "none".to_owned(),
            Action::ScaleOut { from, to } => format!("scale_out {from} -> {to}"),
            Action::ScaleIn { from, to, drain } => {
                format!("scale_in {from} -> {to} drain [{}]", drain.join(", "))
            }
            Action::Replace { nodes } => format!("replace [{}]", nodes.join(", ")),
        };
        let numbers: Vec<String> = d.numbers.iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!(
            "{}: {action} (failover_extra {})\n{}\n{}\n",
            d.region,
            d.failover_extra,
            d.reason,
            numbers.join(" ")
        )
    }

    fn check(d: &Decision, expected: &Expect) {
        expected.assert_eq(&show(d));
    }

    // Rule 1 -----------------------------------------------------------------

    #[test]
    fn region_metric_is_the_mean_of_each_ready_nodes_latest_sample() {
        let mut case = Case::jp();
        case.desired = 2;
        case.nodes = vec![
            node("jp-1", NodeStatus::Up),
            node("jp-2", NodeStatus::Up),
            node("jp-3", NodeStatus::Drain),
        ];
        case.samples = cpu_every_10s("jp-1", NOW - 60, NOW, 0.9);
        // jp-2 reported once, before the window: that value lasts the window.
        case.samples.push(sample("jp-2", NOW - 65, 0.7, 50.0, 0.0));
        case.samples.push(sample("jp-2", NOW - 500, 0.0, 50.0, 0.0));
        // A draining node does not count, however idle it is.
        case.samples
            .extend(cpu_every_10s("jp-3", NOW - 60, NOW, 0.0));
        let d = case.decide();
        assert_eq!(d.action, Action::ScaleOut { from: 2, to: 3 });
        assert!((d.numbers["cpu"] - 0.8).abs() < 1e-9, "{d:?}");

        // A sample older than the window start minus one window is ignored.
        case.samples.retain(|s| &*s.node_id != "jp-2");
        case.samples.push(sample("jp-2", NOW - 121, 0.0, 50.0, 0.0));
        let d = case.decide();
        assert_eq!(d.numbers["cpu"], 0.9);
        // ... but one just inside the look-back counts.
        case.samples.push(sample("jp-2", NOW - 120, 0.1, 50.0, 0.0));
        let d = case.decide();
        assert_eq!(d.action, Action::None, "mean 0.5 is not above 0.75");
    }

    #[test]
    fn non_finite_metrics_are_missing_samples() {
        let mut case = Case::jp();
        case.samples = cpu_every_10s("jp-1", NOW - 60, NOW, 0.82);
        case.samples
            .push(sample("jp-1", NOW, f64::NAN, f64::INFINITY, 0.0));
        case.samples
            .push(sample("jp-1", NOW - 30, f64::NEG_INFINITY, 50.0, 0.0));
        let d = case.decide();
        assert_eq!(d.action, Action::ScaleOut { from: 1, to: 2 });
        assert_eq!(d.numbers["cpu"], 0.82);
        // Samples later than now are ignored too.
        case.samples = cpu_every_10s("jp-1", NOW - 60, NOW + 100, 0.82);
        case.samples.push(sample("jp-1", NOW + 5, 0.1, 50.0, 0.0));
        assert_eq!(case.decide().action, Action::ScaleOut { from: 1, to: 2 });
    }

    // Rule 2 -----------------------------------------------------------------

    #[test]
    fn scale_out_needs_the_condition_for_the_whole_window() {
        let mut case = Case::jp();
        case.samples = cpu_every_10s("jp-1", NOW - 50, NOW, 0.82);
        check(
            &case.decide(),
            &expect![[r#"
                jp: none (failover_extra 0)
                steady at 1 node(s): cpu 0.82, rtt_ms 50, error_rate 0; cpu > 0.75 but not for 60s yet
                cpu=0.82 cpu_above=0.75 cpu_below=0.3 desired=1 error_rate=0 error_rate_above=0.05 ready=1 rtt_ms=50 rtt_ms_above=250
            "#]],
        );
        // One dip inside the window breaks it.
        case.samples = cpu_every_10s("jp-1", NOW - 60, NOW, 0.82);
        case.samples.push(sample("jp-1", NOW - 25, 0.74, 50.0, 0.0));
        assert_eq!(case.decide().action, Action::None);
        // The whole window.
        case.samples = cpu_every_10s("jp-1", NOW - 60, NOW, 0.82);
        check(
            &case.decide(),
            &expect![[r#"
                jp: scale_out 1 -> 2 (failover_extra 0)
                cpu 0.82 > 0.75 for 60s; scale out 1 -> 2
                cpu=0.82 cpu_above=0.75 from=1 to=2 window_s=60
            "#]],
        );
    }

    #[test]
    fn the_window_start_counts_as_well_as_the_sample_times() {
        let mut case = Case::jp();
        // Low until just after the window start, high from then on: the
        // region was at 0.5 for the first 5 s of the window.
        case.samples = vec![sample("jp-1", NOW - 65, 0.5, 50.0, 0.0)];
        case.samples
            .extend(cpu_every_10s("jp-1", NOW - 55, NOW, 0.9));
        assert_eq!(case.decide().action, Action::None);
        case.samples.push(sample("jp-1", NOW - 60, 0.9, 50.0, 0.0));
        assert_eq!(case.decide().action, Action::ScaleOut { from: 1, to: 2 });
    }

    #[test]
    fn any_scale_up_threshold_is_enough() {
        let mut case = Case::jp();
        case.samples = (NOW - 60..=NOW)
            .step_by(15)
            .map(|t| sample("jp-1", t, 0.2, 300.0, 0.0))
            .collect();
        check(
            &case.decide(),
            &expect![[r#"
                jp: scale_out 1 -> 2 (failover_extra 0)
                rtt_ms 300 > 250 for 60s; scale out 1 -> 2
                from=1 rtt_ms=300 rtt_ms_above=250 to=2 window_s=60
            "#]],
        );
    }

    #[test]
    fn scale_in_waits_for_the_stabilization_window() {
        let mut case = Case::jp();
        case.desired = 2;
        case.nodes = vec![node("jp-1", NodeStatus::Up), node("jp-2", NodeStatus::Up)];
        case.samples = cpu_every_10s("jp-1", NOW - 290, NOW, 0.1);
        case.samples
            .extend(cpu_every_10s("jp-2", NOW - 290, NOW, 0.1));
        check(
            &case.decide(),
            &expect![[r#"
                jp: none (failover_extra 0)
                steady at 2 node(s): cpu 0.1, rtt_ms 50, error_rate 0; cpu < 0.3 but not for 300s yet
                cpu=0.1 cpu_above=0.75 cpu_below=0.3 desired=2 error_rate=0 error_rate_above=0.05 ready=2 rtt_ms=50 rtt_ms_above=250
            "#]],
        );
        case.samples.push(sample("jp-1", NOW - 300, 0.1, 50.0, 0.0));
        case.samples.push(sample("jp-2", NOW - 300, 0.1, 50.0, 0.0));
        let d = case.decide();
        assert_eq!(
            d.action,
            Action::ScaleIn {
                from: 2,
                to: 1,
                drain: vec!["jp-2".into()]
            }
        );
    }

    #[test]
    fn scale_in_needs_every_scale_down_threshold() {
        let mut case = Case::jp();
        case.desired = 2;
        case.nodes.push(node("jp-2", NodeStatus::Up));
        case.policy.as_mut().unwrap().scale_down.rtt_ms_below = Some(40.0);
        case.samples = cpu_every_10s("jp-1", NOW - 300, NOW, 0.1);
        assert_eq!(case.decide().action, Action::None, "rtt 50 is not below 40");
        case.policy.as_mut().unwrap().scale_down.rtt_ms_below = Some(60.0);
        let d = case.decide();
        assert_eq!(
            d.reason,
            "cpu 0.1 < 0.3, rtt_ms 50 < 60 for 300s; scale in 2 -> 1, drain jp-2"
        );
    }

    #[test]
    fn a_policy_without_scale_down_thresholds_never_scales_in() {
        let mut case = Case::jp();
        case.desired = 2;
        case.policy.as_mut().unwrap().scale_down.cpu_below = None;
        case.samples = cpu_every_10s("jp-1", NOW - 300, NOW, 0.1);
        assert_eq!(case.decide().action, Action::None);
    }

    #[test]
    fn scale_in_is_blocked_by_a_scale_up_threshold_met_now() {
        let mut case = Case::jp();
        case.desired = 2;
        case.samples = cpu_every_10s("jp-1", NOW - 300, NOW, 0.1);
        case.samples.push(sample("jp-1", NOW, 0.1, 50.0, 0.2));
        check(
            &case.decide(),
            &expect![[r#"
                jp: none (failover_extra 0)
                cpu 0.1 < 0.3 for 300s, but error_rate 0.2 > 0.05 now; not scaling in
                cpu=0.1 cpu_below=0.3 error_rate=0.2 error_rate_above=0.05 window_s=300
            "#]],
        );
    }

    // Rule 3 -----------------------------------------------------------------

    #[test]
    fn desired_is_clamped_to_max_nodes() {
        let mut case = Case::jp();
        case.samples = cpu_every_10s("jp-1", NOW - 60, NOW, 0.9);
        case.desired = 5;
        check(
            &case.decide(),
            &expect![[r#"
                jp: none (failover_extra 0)
                cpu 0.9 > 0.75 for 60s; at max_nodes 5
                cpu=0.9 cpu_above=0.75 desired=5 max_nodes=5 window_s=60
            "#]],
        );
        case.desired = 4;
        case.policy.as_mut().unwrap().scale_up.step = 3;
        assert_eq!(case.decide().action, Action::ScaleOut { from: 4, to: 5 });
    }

    #[test]
    fn scale_in_stops_at_min_nodes() {
        let mut case = Case::jp();
        case.samples = cpu_every_10s("jp-1", NOW - 300, NOW, 0.1);
        let d = case.decide();
        assert_eq!(d.action, Action::None);
        assert_eq!(d.reason, "cpu 0.1 < 0.3 for 300s; at min_nodes 1");
        case.desired = 3;
        case.policy.as_mut().unwrap().scale_down.step = 5;
        let d = case.decide();
        assert!(
            matches!(d.action, Action::ScaleIn { from: 3, to: 1, .. }),
            "{d:?}"
        );
    }

    // Rule 4 -----------------------------------------------------------------

    #[test]
    fn cooldown_blocks_actions() {
        let mut case = Case::jp();
        case.samples = cpu_every_10s("jp-1", NOW - 60, NOW, 0.9);
        case.last = Some(LastAction {
            at: at(NOW - 299),
            from: 2,
            to: 1,
            in_flight: false,
            failover_extra: 0,
        });
        check(
            &case.decide(),
            &expect![[r#"
                jp: none (failover_extra 0)
                cooldown: last action 2 -> 1 taken 299s ago < cooldown 300s
                cooldown_s=300 since_last_action_s=299
            "#]],
        );
        case.last.as_mut().unwrap().at = at(NOW - 300);
        assert_eq!(case.decide().action, Action::ScaleOut { from: 1, to: 2 });
    }

    #[test]
    fn in_flight_action_blocks_until_timeout() {
        let mut case = Case::jp();
        case.samples = cpu_every_10s("jp-1", NOW - 60, NOW, 0.9);
        case.last = Some(LastAction {
            at: at(NOW - 600),
            from: 0,
            to: 1,
            in_flight: true,
            failover_extra: 0,
        });
        check(
            &case.decide(),
            &expect![[r#"
                jp: none (failover_extra 0)
                waiting for the in-flight action 0 -> 1 taken 600s ago (timeout 600s)
                in_flight_age_s=600 in_flight_timeout_s=600
            "#]],
        );
        // In flight blocks the bounds rule and replacements too.
        case.desired = 0;
        assert_eq!(case.decide().action, Action::None);
        case.desired = 2;
        case.nodes.push(node("jp-2", NodeStatus::Down));
        assert_eq!(case.decide().action, Action::None);

        case.desired = 1;
        case.nodes.pop();
        case.last.as_mut().unwrap().at = at(NOW - 601);
        check(
            &case.decide(),
            &expect![[r#"
                jp: scale_out 1 -> 2 (failover_extra 0)
                in-flight action 0 -> 1 timed out after 601s (> 600s); cpu 0.9 > 0.75 for 60s; scale out 1 -> 2
                cpu=0.9 cpu_above=0.75 from=1 in_flight_age_s=601 to=2 window_s=60
            "#]],
        );
    }

    #[test]
    fn cooldown_does_not_block_bounds_replacements_or_failover() {
        let mut case = Case::jp();
        case.last = Some(LastAction {
            at: at(NOW - 10),
            from: 1,
            to: 2,
            in_flight: false,
            failover_extra: 0,
        });
        case.desired = 0;
        assert_eq!(case.decide().action, Action::ScaleOut { from: 0, to: 1 });
        case.desired = 2;
        case.nodes.push(node("jp-2", NodeStatus::Down));
        assert_eq!(
            case.decide().action,
            Action::Replace {
                nodes: vec!["jp-2".into()]
            }
        );
        case.nodes.pop();
        case.desired = 1;
        case.sources = vec![FailoverSource {
            region: "kr".into(),
            health: RegionHealth::Down,
            since: None,
            lost_nodes: 1,
            sharing_regions: 1,
        }];
        assert_eq!(case.decide().action, Action::ScaleOut { from: 1, to: 2 });
    }

    // Rule 5 -----------------------------------------------------------------

    #[test]
    fn below_min_nodes_gets_replacements() {
        let mut case = Case::jp();
        case.region.min_nodes = 2;
        check(
            &case.decide(),
            &expect![[r#"
                jp: scale_out 1 -> 2 (failover_extra 0)
                desired 1 below min_nodes 2; scale out 1 -> 2
                desired=1 from=1 max_nodes=5 min_nodes=2 to=2
            "#]],
        );
        // Without a policy too.
        case.policy = None;
        assert_eq!(case.decide().action, Action::ScaleOut { from: 1, to: 2 });
    }

    #[test]
    fn above_max_nodes_is_scaled_in_to_max_nodes() {
        let mut case = Case::jp();
        case.policy = None;
        case.region.max_nodes = 1;
        case.desired = 2;
        case.nodes.push(node("jp-2", NodeStatus::Up));
        check(
            &case.decide(),
            &expect![[r#"
                jp: scale_in 2 -> 1 drain [jp-2] (failover_extra 0)
                desired 2 above max_nodes 1; scale in 2 -> 1, drain jp-2
                desired=2 from=2 max_nodes=1 min_nodes=1 to=1
            "#]],
        );
    }

    // Rule 6 -----------------------------------------------------------------

    #[test]
    fn down_nodes_are_replaced() {
        let mut case = Case::jp();
        case.desired = 2;
        case.nodes = vec![
            node("jp-3", NodeStatus::Down),
            node("jp-1", NodeStatus::Down),
            node("jp-2", NodeStatus::Up),
        ];
        check(
            &case.decide(),
            &expect![[r#"
                jp: replace [jp-1, jp-3] (failover_extra 0)
                2 node(s) down (jp-1, jp-3) and 1 ready < 2 desired; replace them
                desired=2 down=2 ready=1
            "#]],
        );
        // Enough ready nodes: nothing to replace.
        case.desired = 1;
        assert_eq!(case.decide().action, Action::None);
    }

    // Rule 7 -----------------------------------------------------------------

    fn source(
        name: &str,
        health: RegionHealth,
        since: Option<i64>,
        lost: u32,
        sharing: u32,
    ) -> FailoverSource {
        FailoverSource {
            region: name.into(),
            health,
            since: since.map(at),
            lost_nodes: lost,
            sharing_regions: sharing,
        }
    }

    #[test]
    fn failover_capacity_grows_and_shrinks_back() {
        let mut case = Case::jp();
        case.region = region("sg", 1, 5, &[]);
        case.nodes = vec![node("sg-1", NodeStatus::Up)];
        case.sources = vec![source("kr", RegionHealth::Down, Some(NOW - 5), 3, 2)];
        let grow = case.decide();
        check(
            &grow,
            &expect![[r#"
                sg: scale_out 1 -> 3 (failover_extra 2)
                failover: kr down (3 node(s) over 2 region(s): share 2); need 2 extra node(s), have 0; scale out 1 -> 3
                failover_extra_had=0 failover_held=2 failover_needed=2 from=1 to=3
            "#]],
        );
        // Applied: sg runs 3 nodes, 2 of them extra.
        case.desired = 3;
        case.nodes = vec![
            node("sg-1", NodeStatus::Up),
            node("sg-2", NodeStatus::Up),
            node("sg-3", NodeStatus::Up),
        ];
        case.last = Some(LastAction {
            at: at(NOW),
            from: 1,
            to: 3,
            in_flight: false,
            failover_extra: grow.failover_extra,
        });
        // Still down: nothing more to do (cooldown for metrics).
        let d = case.decide_at(NOW + 100);
        assert_eq!((d.action, d.failover_extra), (Action::None, 2));
        // kr recovered 299 s ago: still holding.
        case.sources = vec![source("kr", RegionHealth::Up, Some(NOW + 1000 - 299), 3, 2)];
        let d = case.decide_at(NOW + 1000);
        assert_eq!((d.action, d.failover_extra), (Action::None, 2));
        // Up for the stabilization window: release both.
        case.samples = vec![
            sample("sg-1", NOW + 1000, 0.2, 50.0, 0.0),
            sample("sg-2", NOW + 1000, 0.1, 50.0, 0.0),
            sample("sg-3", NOW + 1000, 0.4, 50.0, 0.0),
        ];
        check(
            &case.decide_at(NOW + 1001),
            &expect![[r#"
                sg: scale_in 3 -> 1 drain [sg-2, sg-1] (failover_extra 0)
                failover: kr up for 300s >= 300s; 0 extra node(s) still held, release 2 of 2; scale in 3 -> 1, drain sg-2, sg-1
                failover_extra_had=2 failover_held=0 failover_needed=0 from=3 to=1
            "#]],
        );
    }

    #[test]
    fn failover_growth_is_clamped_to_max_nodes_and_counts_only_added_nodes() {
        let mut case = Case::jp();
        case.desired = 4;
        case.sources = vec![source("kr", RegionHealth::Down, None, 3, 1)];
        let d = case.decide();
        assert_eq!(
            (d.action, d.failover_extra),
            (Action::ScaleOut { from: 4, to: 5 }, 1)
        );
        case.desired = 5;
        case.last = Some(LastAction {
            at: at(NOW),
            from: 4,
            to: 5,
            in_flight: false,
            failover_extra: 1,
        });
        let d = case.decide_at(NOW + 10);
        assert_eq!((d.action.clone(), d.failover_extra), (Action::None, 1));
        assert!(
            d.reason
                .ends_with("need 3 extra node(s), have 1; at max_nodes 5"),
            "{}",
            d.reason
        );
    }

    #[test]
    fn metric_scale_in_keeps_the_failover_extra_still_needed() {
        let mut case = Case::jp();
        case.desired = 3;
        case.sources = vec![source("kr", RegionHealth::Down, None, 2, 1)];
        case.last = Some(LastAction {
            at: at(NOW - 1000),
            from: 1,
            to: 3,
            in_flight: false,
            failover_extra: 2,
        });
        case.samples = cpu_every_10s("jp-1", NOW - 300, NOW, 0.1);
        let d = case.decide();
        assert_eq!(d.action, Action::None);
        assert_eq!(
            d.reason,
            "cpu 0.1 < 0.3 for 300s; at min_nodes 1 plus failover extra 2"
        );
        // Own capacity above the floor may still go.
        case.desired = 4;
        assert!(matches!(
            case.decide().action,
            Action::ScaleIn { from: 4, to: 3, .. }
        ));
    }

    #[test]
    fn failover_extra_is_dropped_without_failover_capacity() {
        let mut case = Case::jp();
        case.policy.as_mut().unwrap().failover_capacity = false;
        case.desired = 3;
        case.sources = vec![source("kr", RegionHealth::Down, None, 2, 1)];
        case.last = Some(LastAction {
            at: at(NOW - 1000),
            from: 1,
            to: 3,
            in_flight: false,
            failover_extra: 2,
        });
        case.samples = cpu_every_10s("jp-1", NOW - 300, NOW, 0.1);
        let d = case.decide();
        assert_eq!(d.failover_extra, 0);
        assert!(matches!(d.action, Action::ScaleIn { from: 3, to: 2, .. }));
    }

    #[test]
    fn failover_shares_are_split_among_targets_that_are_not_down() {
        let mut decl = Declarations::default();
        for r in [
            region("jp", 1, 5, &["sg", "kr"]),
            region("sg", 1, 5, &[]),
            region("kr", 1, 5, &[]),
        ] {
            decl.regions.insert(r.name.clone(), r);
        }
        decl.node_pools.insert(
            "jp".into(),
            NodePoolDecl {
                region: "jp".into(),
                desired_nodes: 3,
            },
        );
        let mut nodes = vec![
            node("jp-1", NodeStatus::Down),
            node("sg-1", NodeStatus::Up),
            node("kr-1", NodeStatus::Up),
        ];
        let sg = failover_sources(&decl, &nodes, "sg");
        assert_eq!(sg, vec![source("jp", RegionHealth::Down, Some(1), 3, 2)]);
        assert_eq!(sg[0].share(), 2);
        nodes[2].status = NodeStatus::Down;
        let sg = failover_sources(&decl, &nodes, "sg");
        assert_eq!(sg[0].share(), 3);
        // kr, down itself, still counts itself: it keeps a share.
        let kr = failover_sources(&decl, &nodes, "kr");
        assert_eq!(kr[0].share(), 2);
        assert!(failover_sources(&decl, &nodes, "jp").is_empty());
    }

    #[test]
    fn a_starting_region_is_no_failover_source_but_a_declared_down_one_is() {
        let mut decl = Declarations::default();
        for r in [region("jp", 1, 5, &["sg"]), region("sg", 1, 5, &[])] {
            decl.regions.insert(r.name.clone(), r);
        }
        // jp's first node has not registered yet, then not been ready yet.
        let mut nodes = vec![node("sg-1", NodeStatus::Up)];
        assert!(failover_sources(&decl, &nodes, "sg").is_empty());
        let mut proving = node("jp-1", NodeStatus::Down);
        proving.status_since = Timestamp::SINCE_FOREVER;
        nodes.push(proving);
        assert!(failover_sources(&decl, &nodes, "sg").is_empty());
        // Declared down is down, nodes or not.
        decl.regions.get_mut("jp").unwrap().state = DeclaredRegionState::Down;
        let sg = failover_sources(&decl, &nodes, "sg");
        assert_eq!(sg.len(), 1, "{sg:?}");
        assert_eq!(sg[0].health, RegionHealth::Down);
        // A node that was ready and went down is a failure.
        decl.regions.get_mut("jp").unwrap().state = DeclaredRegionState::Up;
        let nodes = vec![node("jp-1", NodeStatus::Down), node("sg-1", NodeStatus::Up)];
        assert_eq!(failover_sources(&decl, &nodes, "sg").len(), 1);
    }

    #[test]
    fn mutual_failover_shares_each_way_and_a_cycle_ends() {
        let mut decl = Declarations::default();
        for r in [region("jp", 1, 5, &["sg"]), region("sg", 1, 5, &["jp"])] {
            decl.regions.insert(r.name.clone(), r);
        }
        let mut nodes = vec![node("jp-1", NodeStatus::Down), node("sg-1", NodeStatus::Up)];
        assert_eq!(
            failover_sources(&decl, &nodes, "sg"),
            vec![source("jp", RegionHealth::Down, Some(1), 1, 1)]
        );
        assert_eq!(
            failover_sources(&decl, &nodes, "jp"),
            vec![source("sg", RegionHealth::Up, Some(1), 1, 1)]
        );
        // Both down: each keeps its share of the other, nothing loops.
        nodes[1].status = NodeStatus::Down;
        assert_eq!(failover_sources(&decl, &nodes, "sg")[0].share(), 1);
        assert_eq!(failover_sources(&decl, &nodes, "jp")[0].share(), 1);
    }

    #[test]
    fn failover_goes_on_through_down_targets_never_back() {
        // jp -> sg -> us, sg -> jp: with jp and sg down, jp's load passes sg
        // and lands on us, next to sg's own.
        let mut decl = Declarations::default();
        for r in [
            region("jp", 1, 5, &["sg"]),
            region("sg", 1, 5, &["jp", "us"]),
            region("us", 1, 5, &[]),
        ] {
            decl.regions.insert(r.name.clone(), r);
        }
        decl.node_pools.insert(
            "jp".into(),
            NodePoolDecl {
                region: "jp".into(),
                desired_nodes: 2,
            },
        );
        let mut nodes = vec![
            node("jp-1", NodeStatus::Down),
            node("sg-1", NodeStatus::Up),
            node("us-1", NodeStatus::Up),
        ];
        // sg up: it takes jp's load alone; us backs up sg only.
        assert_eq!(
            failover_sources(&decl, &nodes, "us"),
            vec![source("sg", RegionHealth::Up, Some(1), 1, 1)]
        );
        nodes[1].status = NodeStatus::Down;
        assert_eq!(
            failover_sources(&decl, &nodes, "us"),
            vec![
                source("jp", RegionHealth::Down, Some(1), 2, 1),
                source("sg", RegionHealth::Down, Some(1), 1, 1),
            ]
        );
        // sg, down itself, still counts itself for jp's load (and shares
        // nothing of its own).
        assert_eq!(
            failover_sources(&decl, &nodes, "sg"),
            vec![source("jp", RegionHealth::Down, Some(1), 2, 1)]
        );
        let decisions = decide_all(
            &decl,
            &nodes,
            &[],
            &BTreeMap::new(),
            at(NOW),
            &AutoscaleSettings::default(),
        );
        assert_eq!(decisions.len(), 3);
    }

    /// Up to 6 regions, any failover edges (cycles, self-loops, unknown
    /// targets), any node states.
    fn arb_failover_world() -> impl Strategy<Value = (Declarations, Vec<Node>)> {
        let regions = proptest::collection::vec(
            (
                proptest::collection::vec(0usize..7, 0..5),
                0u32..4,
                any::<bool>(),
                proptest::collection::vec(arb_status(), 0..3),
            ),
            1..7,
        );
        regions.prop_map(|regions| {
            let count = regions.len();
            let name = |i: usize| {
                if i >= count {
                    "mars".to_owned()
                } else {
                    format!("r{i}")
                }
            };
            let mut decl = Declarations::default();
            let mut nodes = Vec::new();
            for (i, (targets, desired, declared_down, statuses)) in regions.into_iter().enumerate()
            {
                let mut r = region(&name(i), 0, 5, &[]);
                for t in targets {
                    if !r.failover.contains(&name(t)) {
                        r.failover.push(name(t));
                    }
                }
                if declared_down {
                    r.state = DeclaredRegionState::Down;
                }
                decl.regions.insert(name(i), r);
                decl.node_pools.insert(
                    name(i),
                    NodePoolDecl {
                        region: name(i),
                        desired_nodes: desired,
                    },
                );
                let mut p = policy(&name(i));
                p.failover_capacity = true;
                decl.autoscale.insert(name(i), p);
                for (j, status) in statuses.into_iter().enumerate() {
                    nodes.push(node(&format!("{}-{j}", name(i)), status));
                }
            }
            (decl, nodes)
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn failover_over_any_graph_ends_and_counts_no_region_twice(
            (decl, nodes) in arb_failover_world()
        ) {
            for name in decl.regions.keys() {
                let sources = failover_sources(&decl, &nodes, name);
                let unique: BTreeSet<&str> = sources.iter().map(|s| s.region.as_str()).collect();
                prop_assert_eq!(unique.len(), sources.len());
                prop_assert!(!unique.contains(name.as_str()));
                for s in &sources {
                    prop_assert!(s.sharing_regions >= 1);
                    prop_assert!(
                        usize::try_from(s.sharing_regions).unwrap() < decl.regions.len(),
                        "{s:?}"
                    );
                }
            }
            // A source's load is counted once per region it reaches: the
            // regions that are not down and claim a share of it are exactly
            // as many as each of them divides it by.
            let up: BTreeSet<&str> = decl
                .regions
                .values()
                .filter(|r| health::capacity_status(&decl, r, &nodes).health != RegionHealth::Down)
                .map(|r| r.name.as_str())
                .collect();
            let mut claims: BTreeMap<String, Vec<u32>> = BTreeMap::new();
            for name in &up {
                for s in failover_sources(&decl, &nodes, name) {
                    claims.entry(s.region).or_default().push(s.sharing_regions);
                }
            }
            for (source, sharing) in &claims {
                let claimants = u32::try_from(sharing.len()).unwrap();
                prop_assert!(sharing.iter().all(|&n| n == claimants), "{source}: {sharing:?}");
            }
            let all = decide_all(&decl, &nodes, &[], &BTreeMap::new(), at(NOW), &AutoscaleSettings::default());
            prop_assert_eq!(all.len(), decl.regions.len());
            for d in all.values() {
                prop_assert!(d.failover_extra <= 5);
            }
        }
    }

    // Rule 8 -----------------------------------------------------------------

    #[test]
    fn scale_in_drains_lowest_cpu_node_first() {
        let mut case = Case::jp();
        case.desired = 3;
        case.nodes = vec![
            node("jp-1", NodeStatus::Up),
            node("jp-2", NodeStatus::Up),
            node("jp-3", NodeStatus::Up),
        ];
        for (id, cpu) in [("jp-1", 0.2), ("jp-2", 0.05), ("jp-3", 0.25)] {
            case.samples.extend(cpu_every_10s(id, NOW - 300, NOW, cpu));
        }
        check(
            &case.decide(),
            &expect![[r#"
                jp: scale_in 3 -> 2 drain [jp-2] (failover_extra 0)
                cpu 0.167 < 0.3 for 300s; scale in 3 -> 2, drain jp-2
                cpu=0.16666666666666666 cpu_below=0.3 from=3 to=2 window_s=300
            "#]],
        );
        // Ties go to the greatest id.
        case.samples.retain(|s| &*s.node_id != "jp-2");
        case.samples
            .extend(cpu_every_10s("jp-2", NOW - 300, NOW, 0.2));
        let Action::ScaleIn { drain, .. } = case.decide().action else {
            panic!("expected a scale-in");
        };
        assert_eq!(drain, vec!["jp-2".to_owned()]);
        case.nodes[1].id = "jp-0".into();
        case.samples.retain(|s| &*s.node_id != "jp-2");
        case.samples
            .extend(cpu_every_10s("jp-0", NOW - 300, NOW, 0.2));
        let Action::ScaleIn { drain, .. } = case.decide().action else {
            panic!("expected a scale-in");
        };
        assert_eq!(drain, vec!["jp-1".to_owned()]);
    }

    #[test]
    fn scale_in_drains_draining_then_down_then_unknown_cpu_nodes_first() {
        let mut case = Case::jp();
        case.policy = None;
        case.region.max_nodes = 1;
        case.desired = 5;
        let mut quiet = node("jp-5", NodeStatus::Up);
        quiet.metrics = Some(Metrics {
            cpu: 0.01,
            rtt_ms: 1.0,
            error_rate: 0.0,
        });
        case.nodes = vec![
            node("jp-1", NodeStatus::Up),
            node("jp-2", NodeStatus::Down),
            node("jp-3", NodeStatus::Drain),
            node("jp-4", NodeStatus::Up),
            quiet,
        ];
        case.samples = vec![
            sample("jp-1", NOW - 10, 0.5, 1.0, 0.0),
            sample("jp-5", NOW - 10, 0.6, 1.0, 0.0),
        ];
        // Remove 4: jp-3 (already draining, not listed), jp-2 (down), jp-4
        // (no CPU known), jp-1 (0.5 < jp-5's latest sample 0.6).
        let d = case.decide();
        assert_eq!(
            d.action,
            Action::ScaleIn {
                from: 5,
                to: 1,
                drain: vec!["jp-2".into(), "jp-4".into(), "jp-1".into()]
            }
        );
        // The heartbeat metrics stand in when there is no sample.
        case.samples.retain(|s| &*s.node_id != "jp-5");
        case.desired = 4;
        let Action::ScaleIn { drain, .. } = case.decide().action else {
            panic!("expected a scale-in");
        };
        assert_eq!(drain, vec!["jp-2".to_owned(), "jp-4".to_owned()]);
        case.desired = 3;
        let Action::ScaleIn { drain, .. } = case.decide().action else {
            panic!("expected a scale-in");
        };
        assert_eq!(drain, vec!["jp-2".to_owned()]);
    }

    #[test]
    fn scale_in_removes_slots_without_a_node_before_draining_any() {
        let mut case = Case::jp();
        case.desired = 3;
        case.nodes.push(node("jp-2", NodeStatus::Up));
        case.samples = cpu_every_10s("jp-1", NOW - 300, NOW, 0.1);
        case.samples
            .extend(cpu_every_10s("jp-2", NOW - 300, NOW, 0.1));
        // One slot never got a node: removing it drains nobody.
        let d = case.decide();
        assert_eq!(
            d.action,
            Action::ScaleIn {
                from: 3,
                to: 2,
                drain: vec![]
            }
        );
        case.policy.as_mut().unwrap().scale_down.step = 2;
        let d = case.decide();
        assert_eq!(
            d.action,
            Action::ScaleIn {
                from: 3,
                to: 1,
                drain: vec!["jp-2".into()]
            }
        );
    }

    // Rule 9 -----------------------------------------------------------------

    #[test]
    fn metrics_in_the_tolerance_band_never_act() {
        let mut case = Case::jp();
        case.desired = 2;
        case.nodes.push(node("jp-2", NodeStatus::Up));
        for (i, t) in (NOW - 2000..=NOW).step_by(10).enumerate() {
            let cpu = if i % 2 == 0 { 0.31 } else { 0.74 };
            case.samples.push(sample("jp-1", t, cpu, 249.0, 0.049));
            case.samples
                .push(sample("jp-2", t + 5, 1.05 - cpu, 100.0, 0.0));
        }
        for now in (NOW - 1000..=NOW + 100).step_by(7) {
            let d = case.decide_at(now);
            assert_eq!(d.action, Action::None, "at {now}: {}", d.reason);
        }
    }

    // The five flows of DESIGN.md -----------------------------------------

    /// jp (fails over to sg) and sg, both with the jp-style policy, one node
    /// each, no GTM policy (so a region is down below 1 ready node).
    fn world() -> Declarations {
        let mut decl = Declarations::default();
        for r in [region("jp", 1, 5, &["sg"]), region("sg", 1, 5, &[])] {
            decl.autoscale.insert(r.name.clone(), policy(&r.name));
            decl.node_pools.insert(
                r.name.clone(),
                NodePoolDecl {
                    region: r.name.clone(),
                    desired_nodes: 1,
                },
            );
            decl.regions.insert(r.name.clone(), r);
        }
        decl
    }

    fn decide_world(
        decl: &Declarations,
        nodes: &[Node],
        samples: &[NodeSample],
        last: &BTreeMap<String, LastAction>,
        now: i64,
    ) -> BTreeMap<String, Decision> {
        decide_all(
            decl,
            nodes,
            samples,
            last,
            at(now),
            &AutoscaleSettings::default(),
        )
    }

    fn set_desired(decl: &mut Declarations, region: &str, desired: u32) {
        decl.node_pools.get_mut(region).unwrap().desired_nodes = desired;
    }

    #[test]
    fn flow_bootstrap_leaves_a_region_without_nodes_alone() {
        let mut decl = world();
        decl.regions.remove("sg");
        decl.regions.get_mut("jp").unwrap().failover.clear();
        let decisions = decide_world(&decl, &[], &[], &BTreeMap::new(), NOW);
        check(
            &decisions["jp"],
            &expect![[r#"
                jp: none (failover_extra 0)
                steady at 1 node(s): no metric samples; 0 of 1 desired node(s) ready and none down, waiting for the node pool to register them
                desired=1 ready=0
            "#]],
        );
        // Once the node registered and reports calm metrics, still nothing.
        let nodes = [node("jp-1", NodeStatus::Up)];
        let samples = cpu_every_10s("jp-1", NOW - 30, NOW, 0.2);
        let d = &decide_world(&decl, &nodes, &samples, &BTreeMap::new(), NOW)["jp"];
        assert_eq!(d.action, Action::None);
    }

    #[test]
    fn flow_scale_out_on_sustained_cpu() {
        let decl = world();
        let nodes = [node("jp-1", NodeStatus::Up), node("sg-1", NodeStatus::Up)];
        let mut samples = cpu_every_10s("jp-1", NOW - 60, NOW, 0.82);
        samples.extend(cpu_every_10s("sg-1", NOW - 60, NOW, 0.5));
        let decisions = decide_world(&decl, &nodes, &samples, &BTreeMap::new(), NOW);
        check(
            &decisions["jp"],
            &expect![[r#"
                jp: scale_out 1 -> 2 (failover_extra 0)
                cpu 0.82 > 0.75 for 60s; scale out 1 -> 2
                cpu=0.82 cpu_above=0.75 from=1 to=2 window_s=60
            "#]],
        );
        assert_eq!(decisions["sg"].action, Action::None);
        assert_eq!(decisions.keys().collect::<Vec<_>>(), ["jp", "sg"]);
        // While the commit is in flight, nothing more.
        let last = BTreeMap::from([(
            "jp".to_owned(),
            LastAction {
                at: at(NOW),
                from: 1,
                to: 2,
                in_flight: true,
                failover_extra: 0,
            },
        )]);
        let samples = cpu_every_10s("jp-1", NOW, NOW + 120, 0.9);
        let d = &decide_world(&decl, &nodes, &samples, &last, NOW + 120)["jp"];
        assert_eq!(d.action, Action::None);
    }

    #[test]
    fn flow_scale_in_after_low_cpu_for_the_stabilization_window() {
        let mut decl = world();
        set_desired(&mut decl, "jp", 2);
        let nodes = [
            node("jp-1", NodeStatus::Up),
            node("jp-2", NodeStatus::Up),
            node("sg-1", NodeStatus::Up),
        ];
        let mut samples = cpu_every_10s("jp-1", NOW - 300, NOW, 0.10);
        samples.extend(cpu_every_10s("jp-2", NOW - 300, NOW, 0.10));
        let last = BTreeMap::from([(
            "jp".to_owned(),
            LastAction {
                at: at(NOW - 900),
                from: 1,
                to: 2,
                in_flight: false,
                failover_extra: 0,
            },
        )]);
        let decisions = decide_world(&decl, &nodes, &samples, &last, NOW);
        check(
            &decisions["jp"],
            &expect![[r#"
                jp: scale_in 2 -> 1 drain [jp-2] (failover_extra 0)
                cpu 0.1 < 0.3 for 300s; scale in 2 -> 1, drain jp-2
                cpu=0.1 cpu_below=0.3 from=2 to=1 window_s=300
            "#]],
        );
        // Drained and applied: back at min_nodes, nothing further.
        set_desired(&mut decl, "jp", 1);
        let last = BTreeMap::from([(
            "jp".to_owned(),
            LastAction {
                at: at(NOW),
                from: 2,
                to: 1,
                in_flight: false,
                failover_extra: 0,
            },
        )]);
        let nodes = [node("jp-1", NodeStatus::Up), node("sg-1", NodeStatus::Up)];
        let samples = cpu_every_10s("jp-1", NOW, NOW + 1000, 0.10);
        let d = &decide_world(&decl, &nodes, &samples, &last, NOW + 1000)["jp"];
        assert_eq!(d.reason, "cpu 0.1 < 0.3 for 300s; at min_nodes 1");
    }

    #[test]
    fn flow_node_failure_gets_a_replacement() {
        let mut decl = world();
        decl.regions.get_mut("jp").unwrap().failover.clear();
        let nodes = [node("jp-1", NodeStatus::Down), node("sg-1", NodeStatus::Up)];
        let decisions = decide_world(&decl, &nodes, &[], &BTreeMap::new(), NOW);
        check(
            &decisions["jp"],
            &expect![[r#"
                jp: replace [jp-1] (failover_extra 0)
                1 node(s) down (jp-1) and 0 ready < 1 desired; replace them
                desired=1 down=1 ready=0
            "#]],
        );
        // The replacement registered: nothing to do.
        let nodes = [
            node("jp-1", NodeStatus::Down),
            node("jp-2", NodeStatus::Up),
            node("sg-1", NodeStatus::Up),
        ];
        let d = &decide_world(&decl, &nodes, &[], &BTreeMap::new(), NOW)["jp"];
        assert_eq!(d.action, Action::None);
    }

    #[test]
    fn flow_region_failover_grows_and_releases_failover_capacity() {
        let mut decl = world();
        let mut nodes = vec![node("jp-1", NodeStatus::Down), node("sg-1", NodeStatus::Up)];
        nodes[0].status_since = at(NOW - 5);
        let decisions = decide_world(&decl, &nodes, &[], &BTreeMap::new(), NOW);
        check(
            &decisions["sg"],
            &expect![[r#"
                sg: scale_out 1 -> 2 (failover_extra 1)
                failover: jp down (1 node(s) over 1 region(s): share 1); need 1 extra node(s), have 0; scale out 1 -> 2
                failover_extra_had=0 failover_held=1 failover_needed=1 from=1 to=2
            "#]],
        );
        assert!(matches!(decisions["jp"].action, Action::Replace { .. }));

        // sg's scale-out applied; jp comes back at NOW + 200.
        set_desired(&mut decl, "sg", 2);
        let mut last = BTreeMap::from([(
            "sg".to_owned(),
            LastAction {
                at: at(NOW),
                from: 1,
                to: 2,
                in_flight: false,
                failover_extra: 1,
            },
        )]);
        nodes.push(node("sg-2", NodeStatus::Up));
        nodes[0].status = NodeStatus::Up;
        nodes[0].status_since = at(NOW + 200);
        let d = &decide_world(&decl, &nodes, &[], &last, NOW + 400)["sg"];
        assert_eq!(
            (d.action.clone(), d.failover_extra),
            (Action::None, 1),
            "{}",
            d.reason
        );

        // Up for scale_down.for: the extra node is released.
        let samples = [
            sample("sg-1", NOW + 500, 0.3, 50.0, 0.0),
            sample("sg-2", NOW + 500, 0.2, 50.0, 0.0),
        ];
        let d = &decide_world(&decl, &nodes, &samples, &last, NOW + 500)["sg"];
        check(
            d,
            &expect![[r#"
                sg: scale_in 2 -> 1 drain [sg-2] (failover_extra 0)
                failover: jp up for 300s >= 300s; 0 extra node(s) still held, release 1 of 1; scale in 2 -> 1, drain sg-2
                failover_extra_had=1 failover_held=0 failover_needed=0 from=2 to=1
            "#]],
        );
        // After the release, sg carries no extra and stays put.
        set_desired(&mut decl, "sg", 1);
        last.insert(
            "sg".into(),
            LastAction {
                at: at(NOW + 500),
                from: 2,
                to: 1,
                in_flight: false,
                failover_extra: 0,
            },
        );
        nodes.pop();
        let d = &decide_world(&decl, &nodes, &[], &last, NOW + 900)["sg"];
        assert_eq!((d.action.clone(), d.failover_extra), (Action::None, 0));
    }

    #[test]
    fn regions_without_a_policy_report_it() {
        let mut decl = world();
        decl.autoscale.clear();
        let nodes = [node("jp-1", NodeStatus::Up), node("sg-1", NodeStatus::Up)];
        let decisions = decide_world(&decl, &nodes, &[], &BTreeMap::new(), NOW);
        assert_eq!(decisions.len(), 2);
        for d in decisions.values() {
            assert_eq!(
                (&d.action, d.reason.as_str()),
                (&Action::None, "no autoscale policy")
            );
        }
    }

    // Properties --------------------------------------------------------------

    #[derive(Clone, Debug)]
    struct Scenario {
        region: Region,
        policy: Option<AutoscalePolicy>,
        desired: u32,
        nodes: Vec<Node>,
        samples: Vec<NodeSample>,
        last: Option<LastAction>,
        sources: Vec<FailoverSource>,
        now: Timestamp,
    }

    impl Scenario {
        fn decide(&self) -> Decision {
            let input = RegionInput {
                region: &self.region,
                policy: self.policy.as_ref(),
                desired_nodes: self.desired,
                nodes: &self.nodes,
                samples: &self.samples,
                last_action: self.last.as_ref(),
                failover_sources: self.sources.clone(),
            };
            decide(&input, self.now, &AutoscaleSettings::default())
        }

        fn carried_extra(&self) -> u32 {
            match (&self.last, &self.policy) {
                (Some(last), Some(p)) if p.failover_capacity => last.failover_extra,
                _ => 0,
            }
        }
    }

    fn arb_status() -> impl Strategy<Value = NodeStatus> {
        prop_oneof![
            3 => Just(NodeStatus::Up),
            1 => Just(NodeStatus::Drain),
            1 => Just(NodeStatus::Down),
        ]
    }

    fn arb_health() -> impl Strategy<Value = RegionHealth> {
        prop_oneof![
            Just(RegionHealth::Up),
            Just(RegionHealth::Degraded),
            Just(RegionHealth::Down),
        ]
    }

    fn arb_policy(
        value: &BoxedStrategy<f64>,
        window: &BoxedStrategy<Duration>,
    ) -> impl Strategy<Value = AutoscalePolicy> + use<> {
        let threshold = proptest::option::of(value.clone());
        (
            (
                threshold.clone(),
                threshold.clone(),
                threshold.clone(),
                window.clone(),
                0u32..4,
            ),
            (
                threshold.clone(),
                threshold.clone(),
                threshold,
                window.clone(),
                0u32..4,
            ),
            window.clone(),
            any::<bool>(),
        )
            .prop_map(|(up, down, cooldown, failover_capacity)| AutoscalePolicy {
                region: "jp".into(),
                scale_up: ScaleUpRule {
                    cpu_above: up.0,
                    rtt_ms_above: up.1,
                    error_rate_above: up.2,
                    for_: up.3,
                    step: up.4,
                },
                scale_down: ScaleDownRule {
                    cpu_below: down.0,
                    rtt_ms_below: down.1,
                    error_rate_below: down.2,
                    for_: down.3,
                    step: down.4,
                },
                cooldown,
                failover_capacity,
            })
    }

    /// Plausible scenarios around `NOW`, with `desired` inside the bounds:
    /// mostly with a policy, heartbeats dense enough for windows to fill.
    fn arb_scenario() -> impl Strategy<Value = Scenario> {
        let window = (0u64..400).prop_map(secs).boxed();
        let value = prop_oneof![0.0f64..1.0, 0.0f64..400.0].boxed();
        let bounds = (0u32..4, 0u32..5)
            .prop_flat_map(|(min, span)| (Just(min), Just(min + span), min..=min + span));
        let nodes = proptest::collection::vec(arb_status(), 0..5);
        // Per node: a heartbeat period, and a level the values wander around.
        let series = proptest::collection::vec(
            (
                5i64..60,
                0.0f64..1.2,
                0.0f64..500.0,
                0.0f64..0.3,
                0.0f64..0.3,
            ),
            5,
        );
        let last = proptest::option::of((
            -1000i64..100,
            0u32..6,
            0u32..6,
            proptest::bool::weighted(0.25),
            0u32..4,
        ));
        let sources = proptest::collection::vec(
            (
                arb_health(),
                proptest::option::of(-1000i64..20),
                0u32..5,
                0u32..3,
            ),
            0..3,
        );
        (
            bounds,
            proptest::option::weighted(0.85, arb_policy(&value, &window)),
            nodes,
            series,
            any::<u64>(),
            last,
            sources,
        )
            .prop_map(
                |((min, max, desired), policy, statuses, series, seed, last, sources)| Scenario {
                    region: region("jp", min, max, &[]),
                    policy,
                    desired,
                    nodes: statuses
                        .iter()
                        .enumerate()
                        .map(|(i, status)| node(&format!("jp-{i}"), *status))
                        .collect(),
                    samples: wandering_samples(&series, seed),
                    last: last.map(|(dt, from, to, in_flight, failover_extra)| LastAction {
                        at: at(NOW + dt),
                        from,
                        to,
                        in_flight,
                        failover_extra,
                    }),
                    sources: sources
                        .into_iter()
                        .enumerate()
                        .map(|(i, (health, since, lost, sharing))| FailoverSource {
                            region: format!("src{i}"),
                            health,
                            since: since.map(|dt| at(NOW + dt)),
                            lost_nodes: lost,
                            sharing_regions: sharing,
                        })
                        .collect(),
                    now: at(NOW),
                },
            )
    }

    /// Heartbeats of nodes jp-0.. over the last 800 s: node `i` reports every
    /// `period` seconds, values at `level` plus a deterministic wobble of up
    /// to `wobble` (relative), so some windows hold and some break.
    fn wandering_samples(series: &[(i64, f64, f64, f64, f64)], seed: u64) -> Vec<NodeSample> {
        let mut state = seed | 1;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % 2001) as f64 / 1000.0 - 1.0
        };
        let mut out = Vec::new();
        for (i, (period, cpu, rtt, err, wobble)) in series.iter().enumerate() {
            for t in (NOW - 800..=NOW + 10).step_by(usize::try_from(*period).unwrap()) {
                let f = 1.0 + wobble * next();
                out.push(sample(&format!("jp-{i}"), t, cpu * f, rtt * f, err * f));
            }
        }
        out
    }

    fn any_f64() -> BoxedStrategy<f64> {
        prop_oneof![
            proptest::num::f64::ANY,
            Just(f64::NAN),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
            Just(f64::MAX),
            Just(-f64::MAX),
            -1.0f64..2.0,
        ]
        .boxed()
    }

    fn any_timestamp() -> BoxedStrategy<Timestamp> {
        prop_oneof![
            Just(Timestamp(i64::MIN)),
            Just(Timestamp(i64::MAX)),
            any::<i64>().prop_map(Timestamp),
            (NOW * 1000 - 2_000_000..NOW * 1000 + 10_000).prop_map(Timestamp),
        ]
        .boxed()
    }

    fn any_duration() -> BoxedStrategy<Duration> {
        prop_oneof![
            Just(Duration::MAX),
            Just(Duration::ZERO),
            any::<u64>().prop_map(Duration::from_millis),
            (0u64..2_000_000).prop_map(Duration::from_millis),
        ]
        .boxed()
    }

    /// Anything at all: extreme times, non-finite metrics, min > max.
    fn arb_wild_scenario() -> impl Strategy<Value = Scenario> {
        let nodes = proptest::collection::vec((arb_status(), any_timestamp()), 0..5);
        let samples = proptest::collection::vec(
            (0usize..6, any_timestamp(), any_f64(), any_f64(), any_f64()),
            0..30,
        );
        let last = proptest::option::of((
            any_timestamp(),
            any::<u32>(),
            any::<u32>(),
            any::<bool>(),
            any::<u32>(),
        ));
        let sources = proptest::collection::vec(
            (
                arb_health(),
                proptest::option::of(any_timestamp()),
                any::<u32>(),
                any::<u32>(),
            ),
            0..3,
        );
        (
            (any::<u32>(), any::<u32>(), any::<u32>()),
            proptest::option::of(arb_policy(&any_f64(), &any_duration())),
            nodes,
            samples,
            last,
            sources,
            any_timestamp(),
        )
            .prop_map(
                |((min, max, desired), policy, nodes, samples, last, sources, now)| Scenario {
                    region: region("jp", min % 8, max % 8, &[]),
                    policy,
                    desired: desired % 10,
                    nodes: nodes
                        .iter()
                        .enumerate()
                        .map(|(i, (status, since))| {
                            let mut n = node(&format!("jp-{i}"), *status);
                            n.status_since = *since;
                            n
                        })
                        .collect(),
                    samples: samples
                        .into_iter()
                        .map(|(i, t, cpu, rtt_ms, error_rate)| NodeSample {
                            node_id: format!("jp-{i}").into(),
                            sample: MetricSample {
                                at: t,
                                metrics: Metrics {
                                    cpu,
                                    rtt_ms,
                                    error_rate,
                                },
                            },
                        })
                        .collect(),
                    last: last.map(|(at, from, to, in_flight, failover_extra)| LastAction {
                        at,
                        from,
                        to,
                        in_flight,
                        failover_extra,
                    }),
                    sources: sources
                        .into_iter()
                        .map(|(health, since, lost, sharing)| FailoverSource {
                            region: "src".into(),
                            health,
                            since,
                            lost_nodes: lost,
                            sharing_regions: sharing,
                        })
                        .collect(),
                    now,
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn decisions_never_leave_min_max(s in arb_scenario()) {
            let d = s.decide();
            if let Action::ScaleOut { to, .. } | Action::ScaleIn { to, .. } = d.action {
                prop_assert!(
                    (s.region.min_nodes..=s.region.max_nodes).contains(&to),
                    "{to} outside [{}, {}]: {}", s.region.min_nodes, s.region.max_nodes, d.reason
                );
            }
        }

        #[test]
        fn scale_in_drains_only_its_own_nodes_and_keeps_to_ready(s in arb_scenario()) {
            let d = s.decide();
            let Action::ScaleIn { from, to, drain } = &d.action else { return Ok(()) };
            let ready = s.nodes.iter().filter(|n| n.is_ready()).count();
            let removals = usize::try_from(from - to).unwrap();
            prop_assert!(drain.len() <= removals);
            let unique: BTreeSet<&String> = drain.iter().collect();
            prop_assert_eq!(unique.len(), drain.len());
            let mut drained_ready = 0;
            for id in drain {
                let node = s.nodes.iter().find(|n| &n.id == id);
                prop_assert!(node.is_some_and(|n| n.status != NodeStatus::Drain), "{id}");
                drained_ready += usize::from(node.is_some_and(Node::is_ready));
            }
            let to = usize::try_from(*to).unwrap();
            prop_assert!(ready - drained_ready >= to.min(ready), "{}", d.reason);
        }

        #[test]
        fn no_action_during_cooldown_except_replacements_and_failover(s in arb_scenario()) {
            let (Some(last), Some(policy)) = (&s.last, &s.policy) else { return Ok(()) };
            let timed_out = s.now.since(last.at) > AutoscaleSettings::default().in_flight_timeout;
            if (last.in_flight && !timed_out) || s.now.since(last.at) >= policy.cooldown {
                return Ok(());
            }
            let d = s.decide();
            match d.action {
                Action::None | Action::Replace { .. } => {}
                Action::ScaleOut { .. } | Action::ScaleIn { .. } => prop_assert!(
                    d.failover_extra != s.carried_extra() && d.reason.starts_with("failover")
                        || d.reason.contains("in-flight") && d.reason.contains("; failover"),
                    "acted during cooldown: {}", d.reason
                ),
            }
        }

        #[test]
        fn no_action_while_in_flight(s in arb_scenario()) {
            let Some(last) = &s.last else { return Ok(()) };
            if !last.in_flight || s.now.since(last.at) > AutoscaleSettings::default().in_flight_timeout {
                return Ok(());
            }
            let d = s.decide();
            prop_assert_eq!(d.action, Action::None);
            prop_assert!(d.reason.starts_with("waiting for the in-flight action"));
        }

        #[test]
        fn metrics_inside_the_tolerance_band_never_act(
            (min, max, desired) in (0u32..4, 0u32..5)
                .prop_flat_map(|(min, span)| (Just(min), Just(min + span), min..=min + span)),
            node_count in 1usize..5,
            samples in proptest::collection::vec(
                (0usize..5, -1500i64..=0, 0.3001f64..0.7499, 100.0f64..250.0, 0.0f64..0.05),
                0..60,
            ),
            up_for in 0u64..400,
            down_for in 0u64..700,
            now_offsets in proptest::collection::vec(0i64..200, 1..5),
        ) {
            let mut p = policy("jp");
            p.scale_up.for_ = secs(up_for);
            p.scale_down.for_ = secs(down_for);
            p.scale_down.rtt_ms_below = Some(99.0);
            let case = Case {
                region: region("jp", min, max, &[]),
                policy: Some(p),
                desired,
                nodes: (0..node_count).map(|i| node(&format!("jp-{i}"), NodeStatus::Up)).collect(),
                samples: samples
                    .into_iter()
                    .map(|(i, dt, cpu, rtt, err)| sample(&format!("jp-{i}"), NOW + dt, cpu, rtt, err))
                    .collect(),
                last: None,
                sources: vec![],
            };
            for offset in now_offsets {
                let d = case.decide_at(NOW + offset);
                prop_assert_eq!(d.action, Action::None, "{}", d.reason);
            }
        }

        #[test]
        fn never_panics_on_arbitrary_inputs(s in arb_wild_scenario()) {
            let d = s.decide();
            prop_assert!(d.numbers.values().all(|v| v.is_finite()));
            prop_assert!(serde_json::to_string(&d).is_ok());
            let mut decl = Declarations::default();
            let mut source = s.region.clone();
            source.name = "src".into();
            source.failover = vec!["jp".into(), "src".into(), "nowhere".into()];
            decl.regions.insert("src".into(), source);
            decl.regions.insert("jp".into(), s.region.clone());
            if let Some(p) = &s.policy {
                decl.autoscale.insert("jp".into(), p.clone());
            }
            let last: BTreeMap<String, LastAction> =
                s.last.iter().map(|l| ("jp".to_owned(), l.clone())).collect();
            let all = decide_all(&decl, &s.nodes, &s.samples, &last, s.now, &AutoscaleSettings::default());
            prop_assert_eq!(all.len(), 2);
        }
    }

    proptest! {
        /// The sweep gives the verdict (and, to rounding, the weakest value)
        /// of the region value recomputed at every sample time — close to
        /// the bound too, with non-finite metrics, late samples and several
        /// samples of one node at one time.
        #[test]
        fn the_sweep_is_the_sustained_rule_by_definition(
            nodes in 1usize..6,
            raw in proptest::collection::vec(
                (0usize..6, (0i64..40).prop_map(|t| t * 5), prop_oneof![
                    8 => (0u32..8).prop_map(|v| f64::from(v) / 10.0 + 0.45),
                    1 => Just(f64::NAN),
                    1 => Just(0.75),
                    1 => Just(0.7500000000000001),
                ]),
                0..60,
            ),
            bound_below in proptest::bool::ANY,
            window_s in 10u64..80,
        ) {
            let ids: Vec<String> = (0..nodes).map(|i| format!("jp-{i}")).collect();
            let members: Vec<Node> = ids.iter().map(|id| node(id, NodeStatus::Up)).collect();
            let ready: Vec<&Node> = members.iter().collect();
            let now = at(NOW);
            let samples: Vec<NodeSample> = raw
                .iter()
                .map(|(n, ago, cpu)| sample(&ids[n % nodes], NOW - ago, *cpu, 50.0, 0.0))
                .collect();
            let series = RegionSeries::new(&ready, &samples, now);
            let threshold = Threshold {
                metric: Metric::Cpu,
                direction: if bound_below { Direction::Below } else { Direction::Above },
                bound: 0.75,
            };
            let window = secs(window_s);
            match (
                series.sustained(threshold, window, now),
                series.sustained_by_definition(threshold, window, now),
            ) {
                (Sustained::Not, Sustained::Not) => {}
                (Sustained::Holds { weakest: a }, Sustained::Holds { weakest: b }) => {
                    prop_assert!((a - b).abs() <= 1e-12, "{} vs {}", a, b);
                }
                (Sustained::Holds { weakest }, Sustained::Not) => {
                    prop_assert!(false, "sweep holds ({}), definition does not", weakest);
                }
                (Sustained::Not, Sustained::Holds { weakest }) => {
                    prop_assert!(false, "definition holds ({}), sweep does not", weakest);
                }
            }
        }
    }
}
