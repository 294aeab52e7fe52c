//! The failover graph: which regions take over a region's load when it is
//! down.
//!
//! Each region lists the regions it fails over to (`failover: [sg]`). The
//! graph may have cycles: mutual failover (`jp: [sg]`, `sg: [jp]`) is the
//! most common two-region setup, and DESIGN.md makes it valid by one rule:
//! **failover is never followed past a region already visited.** Starting
//! from a down region S, the walk is breadth first in declaration order:
//!
//! - S itself is visited first, so S never takes over its own load;
//! - a target that can take load (not down, or the region a caller counts as
//!   taking load whatever its state) *absorbs*: it is listed and the walk
//!   does not go further through it (its own failover list is for its own
//!   loss);
//! - a target that is down is passed through: its failover list is walked in
//!   turn, so `jp -> sg -> us` with jp and sg down lands jp's load on us;
//! - a region already visited, an unknown region and a region listing itself
//!   are skipped.
//!
//! Every region is visited at most once, so the walk ends after at most one
//! step per declared region and failover edge, whatever the graph, and no
//! region is counted twice. This module owns the walk only; what the load is
//! (capacity for the autoscaler) is the caller's business. It must not look
//! at nodes: the caller says which regions are down.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::model::Region;

/// The regions that absorb `source`'s load, in walk order (see the module
/// docs). `is_down(r)` tells whether region `r` cannot take load; regions
/// missing from `regions` are skipped, and so is an unknown `source` (no
/// absorbers).
pub fn absorbers<'r>(
    regions: &'r BTreeMap<String, Region>,
    source: &str,
    is_down: impl Fn(&str) -> bool,
) -> Vec<&'r str> {
    let Some((start, _)) = regions.get_key_value(source) else {
        return Vec::new();
    };
    let mut visited: BTreeSet<&str> = BTreeSet::from([start.as_str()]);
    let mut queue: VecDeque<&str> = VecDeque::from([start.as_str()]);
    let mut found = Vec::new();
    while let Some(current) = queue.pop_front() {
        let Some(region) = regions.get(current) else {
            continue;
        };
        for target in &region.failover {
            let Some((name, _)) = regions.get_key_value(target) else {
                continue;
            };
            if !visited.insert(name.as_str()) {
                continue;
            }
            if is_down(name) {
                queue.push_back(name.as_str());
            } else {
                found.push(name.as_str());
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CloudProvider, DeclaredRegionState};
    use proptest::prelude::*;

    fn graph(edges: &[(&str, &[&str])]) -> BTreeMap<String, Region> {
        edges
            .iter()
            .map(|(name, targets)| {
                (
                    (*name).to_owned(),
                    Region {
                        name: (*name).to_owned(),
                        provider: CloudProvider::Edge,
                        min_nodes: 0,
                        max_nodes: 5,
                        base_weight: 100,
                        state: DeclaredRegionState::Up,
                        failover: targets.iter().map(|t| (*t).to_owned()).collect(),
                    },
                )
            })
            .collect()
    }

    #[test]
    fn mutual_failover_lands_on_the_other_region_once() {
        let regions = graph(&[("jp", &["sg"]), ("sg", &["jp"])]);
        assert_eq!(absorbers(&regions, "jp", |_| false), ["sg"]);
        assert_eq!(absorbers(&regions, "sg", |_| false), ["jp"]);
        // Both down: nobody is left, and the walk ends.
        assert!(absorbers(&regions, "jp", |_| true).is_empty());
    }

    #[test]
    fn down_targets_are_passed_through_never_back_to_a_visited_region() {
        let regions = graph(&[
            ("jp", &["sg", "kr"]),
            ("sg", &["jp", "us", "kr"]),
            ("kr", &[]),
            ("us", &["jp", "mars"]),
        ]);
        let down = |r: &str| r == "jp" || r == "sg";
        assert_eq!(absorbers(&regions, "jp", down), ["kr", "us"]);
        let down = |r: &str| r != "kr";
        assert_eq!(absorbers(&regions, "us", down), ["kr"]);
        assert!(absorbers(&regions, "mars", |_| false).is_empty());
    }

    #[test]
    fn a_region_listing_itself_does_not_absorb_its_own_load() {
        let regions = graph(&[("jp", &["jp", "sg"]), ("sg", &[])]);
        assert_eq!(absorbers(&regions, "jp", |_| false), ["sg"]);
        assert!(absorbers(&regions, "jp", |r| r == "sg").is_empty());
    }

    #[test]
    fn long_chains_and_dense_cycles_end() {
        let names: Vec<String> = (0..2000).map(|i| format!("r{i}")).collect();
        let mut regions = BTreeMap::new();
        for (i, name) in names.iter().enumerate() {
            let next = &names[(i + 1) % names.len()];
            regions.extend(graph(&[(name.as_str(), &[next.as_str(), "r0"])]));
        }
        // Everything down but the region just before the start.
        let found = absorbers(&regions, "r0", |r| r != "r1999");
        assert_eq!(found, ["r1999"]);
    }

    /// Up to 8 regions with any edges (self-loops, cycles, unknown targets)
    /// and any set of down regions.
    fn arb_graph() -> impl Strategy<Value = (BTreeMap<String, Region>, BTreeSet<String>)> {
        let edges = proptest::collection::vec(proptest::collection::vec(0usize..10, 0..6), 1..9);
        let down = proptest::collection::btree_set(0usize..10, 0..9);
        (edges, down).prop_map(|(edges, down)| {
            let name = |i: usize| format!("r{i}");
            let count = edges.len();
            let regions = edges
                .into_iter()
                .enumerate()
                .map(|(i, targets)| {
                    let mut failover: Vec<String> = Vec::new();
                    for t in targets {
                        // Index 9 names an undeclared region.
                        let target = if t >= count && t != 9 { t % count } else { t };
                        if !failover.contains(&name(target)) {
                            failover.push(name(target));
                        }
                    }
                    (
                        name(i),
                        Region {
                            name: name(i),
                            provider: CloudProvider::Edge,
                            min_nodes: 0,
                            max_nodes: 5,
                            base_weight: 100,
                            state: DeclaredRegionState::Up,
                            failover,
                        },
                    )
                })
                .collect();
            (regions, down.into_iter().map(name).collect())
        })
    }

    /// Everything reachable from `source` through down regions only, by a
    /// plain fixpoint (no walk order), to compare the walk against.
    fn reachable(
        regions: &BTreeMap<String, Region>,
        source: &str,
        down: &BTreeSet<String>,
    ) -> BTreeSet<String> {
        let mut passed: BTreeSet<String> = BTreeSet::from([source.to_owned()]);
        let mut absorbing = BTreeSet::new();
        loop {
            let before = (passed.len(), absorbing.len());
            for from in passed.clone() {
                for target in regions.get(&from).map_or(&[][..], |r| &r.failover[..]) {
                    if !regions.contains_key(target) || target == source {
                        continue;
                    }
                    if down.contains(target) {
                        passed.insert(target.clone());
                    } else {
                        absorbing.insert(target.clone());
                    }
                }
            }
            if (passed.len(), absorbing.len()) == before {
                return absorbing;
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn the_walk_ends_counts_no_region_twice_and_reaches_exactly_the_absorbers(
            (regions, down) in arb_graph()
        ) {
            for source in regions.keys() {
                let found = absorbers(&regions, source, |r| down.contains(r));
                let unique: BTreeSet<&str> = found.iter().copied().collect();
                prop_assert_eq!(unique.len(), found.len(), "{:?}", found);
                prop_assert!(!unique.contains(source.as_str()));
                prop_assert!(found.iter().all(|r| !down.contains(*r) && regions.contains_key(*r)));
                let expected = reachable(&regions, source, &down);
                let got: BTreeSet<String> = unique.iter().map(|r| (*r).to_owned()).collect();
                prop_assert_eq!(got, expected);
                prop_assert!(found.len() < regions.len());
            }
        }
    }
}
