//! Data-plane health: which address records an A/AAAA rrset may answer with
//! right now, and the weighted pick among them.
//!
//! This module owns the answer-time rules of DESIGN.md's "Data-plane health":
//! the [`HealthView`] the daemon pushes when the control plane changes a node's
//! status, the filtering of down and drained nodes, the all-down policies, and
//! the weighted random choice (PowerDNS `pickwrandom`). It is pure: the random
//! roll comes in as a number, and the last-known-good memory is handed in and
//! out by the caller ([`crate::server`] keeps it between health changes).
//!
//! # Rules
//!
//! For one rrset, among its enabled records:
//! 1. A record's weight is its `weight`, or 1 when absent (all absent: equal
//!    weights). Weight 0 is never answered, whatever the health.
//! 2. A record is healthy when its address is `up` in the health view or not
//!    in it at all (addresses the control plane does not know count as up);
//!    `down` and `drain` records are dropped.
//! 3. Healthy records with weight > 0 are the answers ([`ServeMode::Healthy`]),
//!    and their addresses become the rrset's last known good set.
//! 4. When none is left, the domain's [`AllDownPolicy`] decides:
//!    `last_known_good` serves the records of the last known good set that
//!    are still in the rrset and not drained ([`ServeMode::LastKnownGood`]),
//!    and fails open when there is no such record; `fail_open` serves every
//!    non-drained record with weight > 0, ignoring health
//!    ([`ServeMode::FailOpen`]).
//! 5. When even that is empty (every record drained or at weight 0), the rrset
//!    answers nothing: NODATA ([`ServeMode::Empty`]).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::IpAddr;

use neutral_core::model::{AllDownPolicy, Declarations, Node, NodeStatus};

/// Node status by address and the all-down policy by domain, as the control
/// plane sees them. Built whole ([`HealthView::from_control_plane`]) or moved
/// node by node ([`HealthView::apply`]).
#[derive(Clone, Debug, Default)]
pub struct HealthView {
    /// How many of the nodes at each address are in each status: an address
    /// several nodes share (a node that re-registered) reads as its best
    /// status ([`HealthView::merge_node`]).
    nodes: HashMap<IpAddr, Tally>,
    /// Keyed by lowercase domain without the trailing dot.
    all_down: HashMap<String, AllDownPolicy>,
}

/// Two views are equal when they answer alike: the same status at every
/// address and the same all-down policies, however many nodes share an
/// address.
impl PartialEq for HealthView {
    fn eq(&self, other: &HealthView) -> bool {
        self.all_down == other.all_down
            && self.nodes.len() == other.nodes.len()
            && self
                .nodes
                .iter()
                .all(|(address, tally)| other.status(*address) == tally.status())
    }
}

impl Eq for HealthView {}

/// The nodes at one address, counted by status.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
struct Tally {
    up: u32,
    down: u32,
    drain: u32,
}

impl Tally {
    fn of(status: NodeStatus) -> Tally {
        let mut tally = Tally::default();
        *tally.count(status) += 1;
        tally
    }

    /// `up` wins over `down`, and `down` over `drain`.
    fn status(self) -> Option<NodeStatus> {
        if self.up > 0 {
            Some(NodeStatus::Up)
        } else if self.down > 0 {
            Some(NodeStatus::Down)
        } else if self.drain > 0 {
            Some(NodeStatus::Drain)
        } else {
            None
        }
    }

    fn count(&mut self, status: NodeStatus) -> &mut u32 {
        match status {
            NodeStatus::Up => &mut self.up,
            NodeStatus::Down => &mut self.down,
            NodeStatus::Drain => &mut self.drain,
        }
    }
}

/// One node leaving an address in a status and/or joining one
/// ([`HealthView::apply`]): a status change leaves and joins the same
/// address; a registration only joins, a deletion only leaves.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct HealthMove {
    pub leaving: Option<(IpAddr, NodeStatus)>,
    pub joining: Option<(IpAddr, NodeStatus)>,
}

impl HealthView {
    pub fn new() -> HealthView {
        HealthView::default()
    }

    /// Statuses of `nodes` and the `all_down` policy of every declared domain.
    pub fn from_control_plane<'a>(
        nodes: impl IntoIterator<Item = &'a Node>,
        declarations: &Declarations,
    ) -> HealthView {
        let mut view = HealthView::new();
        for node in nodes {
            view.merge_node(node.address, node.status);
        }
        for policy in declarations.gtm.values() {
            view.set_all_down(&policy.domain, policy.all_down);
        }
        view
    }

    /// The addresses whose status differs between `self` and `other` (known
    /// in one and not the other, or known in both with another status),
    /// when both have the same all-down policies; `None` when they do not
    /// (every rrset's answers may then change).
    pub fn changed_addresses(&self, other: &HealthView) -> Option<HashSet<IpAddr>> {
        if self.all_down != other.all_down {
            return None;
        }
        let mut changed: HashSet<IpAddr> = self
            .nodes
            .iter()
            .filter(|(address, tally)| other.status(**address) != tally.status())
            .map(|(address, _)| *address)
            .collect();
        changed.extend(
            other
                .nodes
                .keys()
                .filter(|address| !self.nodes.contains_key(address)),
        );
        Some(changed)
    }

    /// Sets the status of `address`, replacing any earlier one.
    pub fn set_node(&mut self, address: IpAddr, status: NodeStatus) {
        self.nodes.insert(address, Tally::of(status));
    }

    #[must_use]
    pub fn with_node(mut self, address: IpAddr, status: NodeStatus) -> HealthView {
        self.set_node(address, status);
        self
    }

    /// Records the status of one of possibly several nodes sharing `address`
    /// (a node that re-registered, say): `up` wins over `down`, and `down` over
    /// `drain`, so that a live registration is never hidden by a stale one.
    pub fn merge_node(&mut self, address: IpAddr, status: NodeStatus) {
        *self.nodes.entry(address).or_default().count(status) += 1;
    }

    /// Takes back one [`HealthView::merge_node`] of `address` in `status`;
    /// the address is forgotten with its last node.
    pub fn unmerge_node(&mut self, address: IpAddr, status: NodeStatus) {
        let Some(tally) = self.nodes.get_mut(&address) else {
            return;
        };
        let count = tally.count(status);
        *count = count.saturating_sub(1);
        if tally.status().is_none() {
            self.nodes.remove(&address);
        }
    }

    /// Moves nodes as [`HealthView::merge_node`] and
    /// [`HealthView::unmerge_node`] would; returns the addresses whose
    /// status changed (the only answers that may change).
    pub fn apply(&mut self, moves: &[HealthMove]) -> HashSet<IpAddr> {
        let mut before: HashMap<IpAddr, Option<NodeStatus>> = HashMap::new();
        for change in moves {
            for (address, _) in change.leaving.iter().chain(&change.joining) {
                before
                    .entry(*address)
                    .or_insert_with(|| self.status(*address));
            }
            if let Some((address, status)) = change.leaving {
                self.unmerge_node(address, status);
            }
            if let Some((address, status)) = change.joining {
                self.merge_node(address, status);
            }
        }
        before
            .into_iter()
            .filter(|(address, status)| self.status(*address) != *status)
            .map(|(address, _)| address)
            .collect()
    }

    /// Sets the all-down policy of `domain` (with or without the trailing dot).
    pub fn set_all_down(&mut self, domain: &str, policy: AllDownPolicy) {
        self.all_down.insert(domain_key(domain), policy);
    }

    #[must_use]
    pub fn with_all_down(mut self, domain: &str, policy: AllDownPolicy) -> HealthView {
        self.set_all_down(domain, policy);
        self
    }

    /// The status of `address`, if the control plane knows it.
    pub fn status(&self, address: IpAddr) -> Option<NodeStatus> {
        self.nodes.get(&address).and_then(|tally| tally.status())
    }

    /// The all-down policy of `domain`; `fail_open` when none was set.
    pub fn all_down(&self, domain: &str) -> AllDownPolicy {
        self.all_down
            .get(&domain_key(domain))
            .copied()
            .unwrap_or_default()
    }

    fn is_healthy(&self, address: IpAddr) -> bool {
        matches!(self.status(address), None | Some(NodeStatus::Up))
    }

    fn is_drained(&self, address: IpAddr) -> bool {
        self.status(address) == Some(NodeStatus::Drain)
    }
}

fn domain_key(domain: &str) -> String {
    domain.trim_end_matches('.').to_ascii_lowercase()
}

/// One enabled address record of an rrset, as the answer rules see it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub address: IpAddr,
    /// The record's weight; `None` reads as 1.
    pub weight: Option<u32>,
}

impl Candidate {
    fn weight(self) -> u32 {
        self.weight.unwrap_or(1)
    }
}

/// How an rrset's answers were chosen.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum ServeMode {
    Healthy,
    LastKnownGood,
    FailOpen,
    Empty,
}

impl ServeMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ServeMode::Healthy => "healthy",
            ServeMode::LastKnownGood => "last_known_good",
            ServeMode::FailOpen => "fail_open",
            ServeMode::Empty => "empty",
        }
    }
}

/// The records an rrset answers with now, ready for [`AnswerSet::pick`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnswerSet {
    pub mode: ServeMode,
    /// Indexes into the candidate list, in order.
    pub indexes: Vec<usize>,
    /// Running sums of the weights of `indexes`: `cumulative[i]` is the sum
    /// of the first `i + 1` weights.
    cumulative: Vec<u64>,
}

impl AnswerSet {
    fn new(mode: ServeMode, chosen: Vec<(usize, u32)>) -> AnswerSet {
        let mut total = 0u64;
        let mut indexes = Vec::with_capacity(chosen.len());
        let mut cumulative = Vec::with_capacity(chosen.len());
        for (index, weight) in chosen {
            total = total.saturating_add(u64::from(weight));
            indexes.push(index);
            cumulative.push(total);
        }
        let mode = if indexes.is_empty() {
            ServeMode::Empty
        } else {
            mode
        };
        AnswerSet {
            mode,
            indexes,
            cumulative,
        }
    }

    /// The sum of the weights; 0 for an empty set.
    pub fn total_weight(&self) -> u64 {
        self.cumulative.last().copied().unwrap_or(0)
    }

    /// The candidate index a roll lands on: `roll` in `0..total_weight()`
    /// selects each index with probability weight / total. `None` when empty;
    /// a roll past the end lands on the last index.
    pub fn pick(&self, roll: u64) -> Option<usize> {
        let position = self.cumulative.partition_point(|&sum| sum <= roll);
        self.indexes
            .get(position)
            .or_else(|| self.indexes.last())
            .copied()
    }
}

/// Applies the [module rules](self) to the candidates of one rrset.
///
/// `last_known_good` is this rrset's remembered set; the returned set, when
/// `Some`, replaces it (rule 3).
pub fn answer_set(
    candidates: &[Candidate],
    health: &HealthView,
    policy: AllDownPolicy,
    last_known_good: Option<&BTreeSet<IpAddr>>,
) -> (AnswerSet, Option<BTreeSet<IpAddr>>) {
    let choose = |keep: &dyn Fn(&Candidate) -> bool| -> Vec<(usize, u32)> {
        candidates
            .iter()
            .enumerate()
            .filter(|(_, c)| c.weight() > 0 && keep(c))
            .map(|(index, c)| (index, c.weight()))
            .collect()
    };
    let healthy = choose(&|c| health.is_healthy(c.address));
    if !healthy.is_empty() {
        let remembered = healthy
            .iter()
            .filter_map(|(index, _)| candidates.get(*index).map(|c| c.address))
            .collect();
        return (
            AnswerSet::new(ServeMode::Healthy, healthy),
            Some(remembered),
        );
    }
    if let (AllDownPolicy::LastKnownGood, Some(known)) = (policy, last_known_good) {
        let kept = choose(&|c| known.contains(&c.address) && !health.is_drained(c.address));
        if !kept.is_empty() {
            return (AnswerSet::new(ServeMode::LastKnownGood, kept), None);
        }
    }
    let open = choose(&|c| !health.is_drained(c.address));
    (AnswerSet::new(ServeMode::FailOpen, open), None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    fn candidates(weights: &[(u8, Option<u32>)]) -> Vec<Candidate> {
        weights
            .iter()
            .map(|&(last, weight)| Candidate {
                address: ip(last),
                weight,
            })
            .collect()
    }

    fn addresses(set: &AnswerSet, candidates: &[Candidate]) -> Vec<IpAddr> {
        set.indexes.iter().map(|&i| candidates[i].address).collect()
    }

    /// How often each index is picked when the roll sweeps every value once.
    fn exact_distribution(set: &AnswerSet) -> Vec<(usize, u64)> {
        let mut counts: Vec<(usize, u64)> = set.indexes.iter().map(|&i| (i, 0)).collect();
        for roll in 0..set.total_weight() {
            let picked = set.pick(roll).unwrap();
            counts.iter_mut().find(|(i, _)| *i == picked).unwrap().1 += 1;
        }
        counts
    }

    #[test]
    fn weighted_pick_lands_on_each_record_in_proportion_to_its_weight() {
        let c = candidates(&[(1, Some(100)), (2, Some(0)), (3, Some(50)), (4, Some(1))]);
        let (set, _) = answer_set(&c, &HealthView::new(), AllDownPolicy::FailOpen, None);
        assert_eq!(set.total_weight(), 151);
        assert_eq!(exact_distribution(&set), vec![(0, 100), (2, 50), (3, 1)]);
        assert_eq!(set.pick(0), Some(0));
        assert_eq!(set.pick(99), Some(0));
        assert_eq!(set.pick(100), Some(2));
        assert_eq!(set.pick(150), Some(3));
        assert_eq!(set.pick(10_000), Some(3));
    }

    #[test]
    fn absent_weights_are_equal_weights() {
        let c = candidates(&[(1, None), (2, None), (3, None)]);
        let (set, _) = answer_set(&c, &HealthView::new(), AllDownPolicy::FailOpen, None);
        assert_eq!(exact_distribution(&set), vec![(0, 1), (1, 1), (2, 1)]);
    }

    #[test]
    fn weight_zero_is_never_answered_even_when_failing_open() {
        let c = candidates(&[(1, Some(0)), (2, Some(5))]);
        let health = HealthView::new().with_node(ip(2), NodeStatus::Down);
        let (set, _) = answer_set(&c, &health, AllDownPolicy::FailOpen, None);
        assert_eq!(set.mode, ServeMode::FailOpen);
        assert_eq!(addresses(&set, &c), vec![ip(2)]);
        let only_zero = candidates(&[(1, Some(0))]);
        let (set, _) = answer_set(
            &only_zero,
            &HealthView::new(),
            AllDownPolicy::FailOpen,
            None,
        );
        assert_eq!(set.mode, ServeMode::Empty);
        assert_eq!(set.pick(0), None);
    }

    #[test]
    fn down_and_drained_nodes_leave_the_answers_unknown_ones_stay() {
        let c = candidates(&[(1, None), (2, None), (3, None), (4, None)]);
        let health = HealthView::new()
            .with_node(ip(1), NodeStatus::Up)
            .with_node(ip(2), NodeStatus::Down)
            .with_node(ip(3), NodeStatus::Drain);
        let (set, remembered) = answer_set(&c, &health, AllDownPolicy::FailOpen, None);
        assert_eq!(set.mode, ServeMode::Healthy);
        assert_eq!(addresses(&set, &c), vec![ip(1), ip(4)]);
        assert_eq!(remembered, Some([ip(1), ip(4)].into_iter().collect()));
    }

    #[test]
    fn fail_open_serves_every_non_drained_record_when_all_are_down() {
        let c = candidates(&[(1, Some(3)), (2, Some(1)), (3, Some(7))]);
        let health = HealthView::new()
            .with_node(ip(1), NodeStatus::Down)
            .with_node(ip(2), NodeStatus::Down)
            .with_node(ip(3), NodeStatus::Drain);
        let (set, remembered) = answer_set(&c, &health, AllDownPolicy::FailOpen, None);
        assert_eq!(set.mode, ServeMode::FailOpen);
        assert_eq!(addresses(&set, &c), vec![ip(1), ip(2)]);
        assert_eq!(exact_distribution(&set), vec![(0, 3), (1, 1)]);
        assert_eq!(remembered, None, "a fail-open set is not known good");
    }

    #[test]
    fn last_known_good_serves_the_last_healthy_set_when_all_are_down() {
        let c = candidates(&[(1, None), (2, None), (3, None)]);
        let some_up = HealthView::new()
            .with_node(ip(1), NodeStatus::Up)
            .with_node(ip(2), NodeStatus::Up)
            .with_node(ip(3), NodeStatus::Down);
        let (_, remembered) = answer_set(&c, &some_up, AllDownPolicy::LastKnownGood, None);
        let remembered = remembered.unwrap();

        let all_down = HealthView::new()
            .with_node(ip(1), NodeStatus::Down)
            .with_node(ip(2), NodeStatus::Down)
            .with_node(ip(3), NodeStatus::Down);
        let (set, kept) = answer_set(
            &c,
            &all_down,
            AllDownPolicy::LastKnownGood,
            Some(&remembered),
        );
        assert_eq!(set.mode, ServeMode::LastKnownGood);
        assert_eq!(addresses(&set, &c), vec![ip(1), ip(2)]);
        assert_eq!(kept, None, "the memory is kept as it was");

        // A drained node never comes back through the memory.
        let drained = all_down.clone().with_node(ip(1), NodeStatus::Drain);
        let (set, _) = answer_set(
            &c,
            &drained,
            AllDownPolicy::LastKnownGood,
            Some(&remembered),
        );
        assert_eq!(addresses(&set, &c), vec![ip(2)]);
    }

    #[test]
    fn last_known_good_without_memory_fails_open() {
        let c = candidates(&[(1, None), (2, None)]);
        let all_down = HealthView::new()
            .with_node(ip(1), NodeStatus::Down)
            .with_node(ip(2), NodeStatus::Down);
        let (set, _) = answer_set(&c, &all_down, AllDownPolicy::LastKnownGood, None);
        assert_eq!(set.mode, ServeMode::FailOpen);
        assert_eq!(addresses(&set, &c), vec![ip(1), ip(2)]);
        // Memory of records no longer in the rrset also fails open.
        let stale: BTreeSet<IpAddr> = [ip(9)].into_iter().collect();
        let (set, _) = answer_set(&c, &all_down, AllDownPolicy::LastKnownGood, Some(&stale));
        assert_eq!(set.mode, ServeMode::FailOpen);
    }

    #[test]
    fn everything_drained_answers_nothing() {
        let c = candidates(&[(1, None)]);
        let health = HealthView::new().with_node(ip(1), NodeStatus::Drain);
        for policy in [AllDownPolicy::FailOpen, AllDownPolicy::LastKnownGood] {
            let remembered: BTreeSet<IpAddr> = [ip(1)].into_iter().collect();
            let (set, _) = answer_set(&c, &health, policy, Some(&remembered));
            assert_eq!(set.mode, ServeMode::Empty);
        }
    }

    #[test]
    fn a_live_registration_wins_over_a_stale_one_at_the_same_address() {
        let mut view = HealthView::new();
        view.merge_node(ip(1), NodeStatus::Down);
        view.merge_node(ip(1), NodeStatus::Up);
        view.merge_node(ip(1), NodeStatus::Drain);
        assert_eq!(view.status(ip(1)), Some(NodeStatus::Up));
        view.merge_node(ip(2), NodeStatus::Drain);
        view.merge_node(ip(2), NodeStatus::Down);
        assert_eq!(view.status(ip(2)), Some(NodeStatus::Down));
    }

    fn status_of(index: u8) -> NodeStatus {
        [NodeStatus::Up, NodeStatus::Down, NodeStatus::Drain][usize::from(index % 3)]
    }

    proptest::proptest! {
        /// Moving nodes one by one reads as building the view from the
        /// nodes where they end, and the addresses it reports are exactly
        /// those whose status changed.
        #[test]
        fn moving_nodes_reads_as_building_the_view_from_where_they_end(
            start in proptest::collection::vec((0u8..6, 0u8..3), 0..12),
            moves in proptest::collection::vec((0usize..16, proptest::option::of((0u8..6, 0u8..3))), 0..12),
        ) {
            // Nodes by slot: an address and a status each, or gone.
            let mut slots: Vec<Option<(IpAddr, NodeStatus)>> = start
                .iter()
                .map(|&(address, status)| Some((ip(address), status_of(status))))
                .collect();
            let build = |slots: &[Option<(IpAddr, NodeStatus)>]| {
                let mut view = HealthView::new();
                for (address, status) in slots.iter().flatten() {
                    view.merge_node(*address, *status);
                }
                view
            };
            let mut view = build(&slots);
            let before = view.clone();
            let mut changes = Vec::new();
            for (slot, to) in moves {
                let to = to.map(|(address, status)| (ip(address), status_of(status)));
                if slot >= slots.len() {
                    slots.push(to);
                    changes.push(HealthMove { leaving: None, joining: to });
                } else if let Some(node) = slots.get_mut(slot) {
                    changes.push(HealthMove { leaving: *node, joining: to });
                    *node = to;
                }
            }
            let touched = view.apply(&changes);
            let built = build(&slots);
            proptest::prop_assert_eq!(&view, &built);
            // Both have no all-down policy: the addresses are always known.
            proptest::prop_assert_eq!(Some(touched), before.changed_addresses(&built));
        }
    }

    #[test]
    fn the_last_node_leaving_an_address_forgets_it_and_the_best_status_stays() {
        let mut view = HealthView::new();
        view.merge_node(ip(1), NodeStatus::Up);
        view.merge_node(ip(1), NodeStatus::Down);
        let touched = view.apply(&[HealthMove {
            leaving: Some((ip(1), NodeStatus::Up)),
            joining: None,
        }]);
        assert_eq!(view.status(ip(1)), Some(NodeStatus::Down));
        assert_eq!(touched, [ip(1)].into_iter().collect());
        let touched = view.apply(&[HealthMove {
            leaving: Some((ip(1), NodeStatus::Down)),
            joining: None,
        }]);
        assert_eq!(view.status(ip(1)), None);
        assert_eq!(view, HealthView::new());
        assert_eq!(touched, [ip(1)].into_iter().collect());
    }

    #[test]
    fn the_control_plane_view_carries_node_statuses_and_domain_policies() {
        use neutral_core::model::{
            DnsBackendKind, GtmPolicy, NodeMode, Probe, RecordType, Timestamp,
        };
        let node = |id: &str, last: u8, status| Node {
            id: id.to_owned(),
            region: "jp".to_owned(),
            address: ip(last),
            status,
            status_since: Timestamp::from_secs(0),
            mode: NodeMode::ContainerdOnly,
            last_heartbeat: None,
            metrics: None,
        };
        let mut declarations = Declarations::default();
        declarations.gtm.insert(
            "app.example.com".to_owned(),
            GtmPolicy {
                name: "app".to_owned(),
                domain: "app.example.com".to_owned(),
                zone: "example.com".to_owned(),
                record_type: RecordType::A,
                ttl: 30,
                dns: DnsBackendKind::Embedded,
                min_ready_nodes: 1,
                regions: Default::default(),
                all_down: AllDownPolicy::LastKnownGood,
                probe: Probe::default(),
                slow_start: None,
                health: neutral_core::model::HealthPolicy::default(),
            },
        );
        let view = HealthView::from_control_plane(
            &[
                node("a", 1, NodeStatus::Up),
                node("b", 2, NodeStatus::Down),
                node("c", 2, NodeStatus::Up),
                node("d", 3, NodeStatus::Drain),
            ],
            &declarations,
        );
        assert_eq!(view.status(ip(1)), Some(NodeStatus::Up));
        assert_eq!(view.status(ip(2)), Some(NodeStatus::Up));
        assert_eq!(view.status(ip(3)), Some(NodeStatus::Drain));
        assert_eq!(view.status(ip(4)), None);
        assert_eq!(
            view.all_down("app.example.com."),
            AllDownPolicy::LastKnownGood
        );
    }

    #[test]
    fn all_down_policies_are_found_with_or_without_the_trailing_dot() {
        let view = HealthView::new().with_all_down("App.Example.com", AllDownPolicy::LastKnownGood);
        assert_eq!(
            view.all_down("app.example.com."),
            AllDownPolicy::LastKnownGood
        );
        assert_eq!(view.all_down("other.example.com."), AllDownPolicy::FailOpen);
    }
}
