//! The nodes a recompute reads, kept grouped by region and counted, so a
//! caller that keeps one between recomputes (the daemon) hands an
//! incremental recompute the few regions it reads instead of a list it
//! would walk whole (issue 17: one status change among 10,000 nodes).
//!
//! A [`NodeSet`] is cheap to clone (each region's group is shared until
//! changed) and answers what the weights ask of every node without walking
//! them: how many are not drained, how many went down since a moment (the
//! split-brain guard), and each region's newest `status_since` (slow
//! start). It owns only that bookkeeping; the weights are computed in the
//! parent module. It imports nothing of the parent.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::model::{Node, NodeStatus, Timestamp};

/// Nodes by region, each region's sorted by id then address.
#[derive(Clone, Debug, Default)]
pub struct NodeSet {
    regions: BTreeMap<String, Arc<Group>>,
    counts: Counts,
}

/// What the set counts of its nodes.
#[derive(Clone, Debug, Default)]
struct Counts {
    len: usize,
    not_drained: u32,
    /// How many `down` nodes went down at each moment.
    down_since: Arc<BTreeMap<Timestamp, u32>>,
}

impl Counts {
    /// Counts `node` in (`true`) or out.
    fn count(&mut self, node: &Node, add: bool) {
        let step = |n: &mut u32| {
            *n = if add {
                n.saturating_add(1)
            } else {
                n.saturating_sub(1)
            };
        };
        self.len = if add {
            self.len.saturating_add(1)
        } else {
            self.len.saturating_sub(1)
        };
        if node.status != NodeStatus::Drain {
            step(&mut self.not_drained);
        }
        if node.status == NodeStatus::Down {
            let down_since = Arc::make_mut(&mut self.down_since);
            let count = down_since.entry(node.status_since).or_default();
            step(count);
            if *count == 0 {
                down_since.remove(&node.status_since);
            }
        }
    }
}

#[derive(Clone, Debug, Default)]
struct Group {
    nodes: Vec<Arc<Node>>,
    /// The newest `status_since` of the group's nodes.
    latest_since: Option<Timestamp>,
}

impl Group {
    fn position(&self, id: &str) -> Result<usize, usize> {
        self.nodes.binary_search_by(|n| n.id.as_str().cmp(id))
    }

    fn refresh(&mut self) {
        self.latest_since = self.nodes.iter().map(|n| n.status_since).max();
    }
}

fn order(a: &Node, b: &Node) -> std::cmp::Ordering {
    (a.id.as_str(), a.address).cmp(&(b.id.as_str(), b.address))
}

impl NodeSet {
    /// The set of `nodes` (ids unique per region for [`NodeSet::insert`]
    /// and [`NodeSet::remove`] to find them).
    pub fn new(nodes: impl IntoIterator<Item = Arc<Node>>) -> NodeSet {
        let mut groups: BTreeMap<String, Group> = BTreeMap::new();
        let mut counts = Counts::default();
        for node in nodes {
            counts.count(&node, true);
            match groups.get_mut(node.region.as_str()) {
                Some(group) => group.nodes.push(node),
                None => {
                    groups.insert(
                        node.region.clone(),
                        Group {
                            nodes: vec![node],
                            latest_since: None,
                        },
                    );
                }
            }
        }
        for group in groups.values_mut() {
            group.nodes.sort_by(|a, b| order(a, b));
            group.refresh();
        }
        NodeSet {
            regions: groups
                .into_iter()
                .map(|(region, group)| (region, Arc::new(group)))
                .collect(),
            counts,
        }
    }

    /// Adds `node`, replacing the node with its id in its region.
    pub fn insert(&mut self, node: Arc<Node>) -> Option<Arc<Node>> {
        self.counts.count(&node, true);
        let group = Arc::make_mut(self.regions.entry(node.region.clone()).or_default());
        let old = match group.position(&node.id) {
            Ok(at) => group
                .nodes
                .get_mut(at)
                .map(|slot| std::mem::replace(slot, node)),
            Err(at) => {
                group.nodes.insert(at, node);
                None
            }
        };
        group.refresh();
        if let Some(old) = &old {
            self.counts.count(old, false);
        }
        old
    }

    /// Removes the node `id` of `region`.
    pub fn remove(&mut self, region: &str, id: &str) -> Option<Arc<Node>> {
        let group = self.regions.get_mut(region)?;
        let at = group.position(id).ok()?;
        let group = Arc::make_mut(group);
        let old = group.nodes.remove(at);
        group.refresh();
        if group.nodes.is_empty() {
            self.regions.remove(region);
        }
        self.counts.count(&old, false);
        Some(old)
    }

    /// The node `id` of `region`.
    pub fn get(&self, region: &str, id: &str) -> Option<&Arc<Node>> {
        let group = self.regions.get(region)?;
        group.nodes.get(group.position(id).ok()?)
    }

    pub fn len(&self) -> usize {
        self.counts.len
    }

    pub fn is_empty(&self) -> bool {
        self.counts.len == 0
    }

    /// Every node, region by region.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Node>> {
        self.regions.values().flat_map(|group| group.nodes.iter())
    }

    /// `region`'s name as the set holds it, and its nodes (by the node's
    /// `region`, sorted by id then address); `None` when it has none.
    pub fn region_entry(&self, region: &str) -> Option<(&str, &[Arc<Node>])> {
        self.regions
            .get_key_value(region)
            .map(|(name, group)| (name.as_str(), group.nodes.as_slice()))
    }

    /// The newest `status_since` of each region's nodes.
    pub fn latest_since_by_region(&self) -> impl Iterator<Item = (&str, Timestamp)> {
        self.regions.iter().filter_map(|(region, group)| {
            group.latest_since.map(|latest| (region.as_str(), latest))
        })
    }

    /// How many nodes are not drained.
    pub fn not_drained(&self) -> u32 {
        self.counts.not_drained
    }

    /// How many `down` nodes went down at `since` or later.
    pub fn down_since(&self, since: Timestamp) -> u32 {
        self.counts
            .down_since
            .range(since..)
            .fold(0u32, |sum, (_, count)| sum.saturating_add(*count))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::NodeMode;
    use proptest::prelude::*;

    fn node(id: u8, region: u8, status: u8, since: i64) -> Arc<Node> {
        Arc::new(Node {
            id: format!("n{id:02}"),
            region: format!("r{region}"),
            address: std::net::IpAddr::from([127, 0, 0, id]),
            status: [NodeStatus::Up, NodeStatus::Down, NodeStatus::Drain][usize::from(status % 3)],
            status_since: Timestamp(since),
            mode: NodeMode::ContainerdOnly,
            last_heartbeat: None,
            metrics: None,
        })
    }

    proptest! {
        /// After any inserts and removals, the set answers what a walk over
        /// its nodes would, and equals a set built from them at once.
        #[test]
        fn the_set_answers_what_a_walk_over_its_nodes_would(
            ops in proptest::collection::vec((0u8..16, 0u8..3, 0u8..3, 0i64..20, any::<bool>()), 0..60),
            since in 0i64..20,
        ) {
            let mut set = NodeSet::default();
            let mut walk: BTreeMap<(String, String), Arc<Node>> = BTreeMap::new();
            for (id, region, status, at, insert) in ops {
                let node = node(id, region, status, at);
                if insert {
                    // One id lives in one region, as the daemon keeps it.
                    if let Some(((was, _), _)) = walk.iter().find(|((_, i), _)| *i == node.id) {
                        let was = was.clone();
                        set.remove(&was, &node.id);
                        walk.remove(&(was, node.id.clone()));
                    }
                    set.insert(Arc::clone(&node));
                    walk.insert((node.region.clone(), node.id.clone()), node);
                } else {
                    let removed = set.remove(&node.region, &node.id).is_some();
                    prop_assert_eq!(removed, walk.remove(&(node.region.clone(), node.id.clone())).is_some());
                }
                let built = NodeSet::new(walk.values().cloned());
                for checked in [&set, &built] {
                    prop_assert_eq!(checked.len(), walk.len());
                    let ids: Vec<&str> = checked.iter().map(|n| n.id.as_str()).collect();
                    let walked: Vec<&str> = walk.values().map(|n| n.id.as_str()).collect();
                    prop_assert_eq!(ids, walked);
                    let not_drained = walk.values().filter(|n| n.status != NodeStatus::Drain).count();
                    prop_assert_eq!(checked.not_drained() as usize, not_drained);
                    let down = walk
                        .values()
                        .filter(|n| n.status == NodeStatus::Down && n.status_since >= Timestamp(since))
                        .count();
                    prop_assert_eq!(checked.down_since(Timestamp(since)) as usize, down);
                    let mut walked_latest: BTreeMap<&str, Timestamp> = BTreeMap::new();
                    for n in walk.values() {
                        let latest = walked_latest.entry(n.region.as_str()).or_insert(n.status_since);
                        *latest = (*latest).max(n.status_since);
                    }
                    let latest: BTreeMap<&str, Timestamp> = checked.latest_since_by_region().collect();
                    prop_assert_eq!(latest, walked_latest);
                }
            }
        }
    }
}
