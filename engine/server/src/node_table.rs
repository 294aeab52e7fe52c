//! The world's node table: nodes by id, with an index by place (region and
//! address) and a count per region, kept in step by the only methods that
//! add or remove nodes. Registration asks "who is at this address?" and "how
//! many nodes has this region?" in O(1) instead of walking every node
//! (issue 17: 100,000 nodes).
//!
//! A leaf, generic over the entry ([`Placed`]), so it imports nothing of
//! the crate. Reads go through `Deref` to the `BTreeMap`; entries may be
//! changed in place through [`NodeTable::get_mut`] and the `_mut`
//! iterators, but never their place (a node's region and address are fixed
//! at registration; re-registering inserts a new entry).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

/// What the index needs to know of an entry.
pub trait Placed {
    fn region(&self) -> &str;
    fn address(&self) -> IpAddr;
}

/// Nodes by id, indexed by place.
#[derive(Debug, Clone)]
pub struct NodeTable<E> {
    by_id: BTreeMap<String, E>,
    /// The ids at each (region, address): one by the identity rule, more
    /// only in states that rule forbids (a store from before it).
    by_place: HashMap<(String, IpAddr), Vec<String>>,
    per_region: HashMap<String, usize>,
}

impl<E> Default for NodeTable<E> {
    fn default() -> Self {
        NodeTable {
            by_id: BTreeMap::new(),
            by_place: HashMap::new(),
            per_region: HashMap::new(),
        }
    }
}

impl<E: Placed> NodeTable<E> {
    /// Adds (or replaces) the entry of `id`.
    pub fn insert(&mut self, id: String, entry: E) -> Option<E> {
        let place = (entry.region().to_owned(), entry.address());
        let old = self.by_id.insert(id.clone(), entry);
        if let Some(old) = &old {
            self.unindex(&id, old);
        }
        self.by_place.entry(place.clone()).or_default().push(id);
        *self.per_region.entry(place.0).or_default() += 1;
        old
    }

    /// Removes the entry of `id`.
    pub fn remove(&mut self, id: &str) -> Option<E> {
        let old = self.by_id.remove(id)?;
        self.unindex(id, &old);
        Some(old)
    }

    /// Keeps only the entries `keep` says yes to.
    pub fn retain(&mut self, mut keep: impl FnMut(&String, &mut E) -> bool) {
        let gone: Vec<String> = self
            .by_id
            .iter_mut()
            .filter_map(|(id, entry)| (!keep(id, entry)).then(|| id.clone()))
            .collect();
        for id in gone {
            self.remove(&id);
        }
    }

    fn unindex(&mut self, id: &str, entry: &E) {
        let place = (entry.region().to_owned(), entry.address());
        if let Some(ids) = self.by_place.get_mut(&place) {
            ids.retain(|other| other != id);
            if ids.is_empty() {
                self.by_place.remove(&place);
            }
        }
        if let Some(count) = self.per_region.get_mut(&place.0) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.per_region.remove(&place.0);
            }
        }
    }

    /// The nodes at `address` in `region`.
    pub fn at_place(&self, region: &str, address: IpAddr) -> impl Iterator<Item = &E> {
        self.by_place
            .get(&(region.to_owned(), address))
            .into_iter()
            .flatten()
            .filter_map(|id| self.by_id.get(id))
    }

    /// How many nodes `region` holds, whatever their status.
    pub fn in_region(&self, region: &str) -> usize {
        self.per_region.get(region).copied().unwrap_or(0)
    }
}

impl<E> NodeTable<E> {
    pub fn get_mut(&mut self, id: &str) -> Option<&mut E> {
        self.by_id.get_mut(id)
    }

    pub fn values_mut(&mut self) -> std::collections::btree_map::ValuesMut<'_, String, E> {
        self.by_id.values_mut()
    }

    pub fn iter_mut(&mut self) -> std::collections::btree_map::IterMut<'_, String, E> {
        self.by_id.iter_mut()
    }
}

impl<E> std::ops::Deref for NodeTable<E> {
    type Target = BTreeMap<String, E>;

    fn deref(&self) -> &Self::Target {
        &self.by_id
    }
}

impl<'a, E> IntoIterator for &'a mut NodeTable<E> {
    type Item = (&'a String, &'a mut E);
    type IntoIter = std::collections::btree_map::IterMut<'a, String, E>;

    fn into_iter(self) -> Self::IntoIter {
        self.by_id.iter_mut()
    }
}

impl<E: Placed> FromIterator<(String, E)> for NodeTable<E> {
    fn from_iter<I: IntoIterator<Item = (String, E)>>(iter: I) -> Self {
        let mut table = NodeTable::default();
        for (id, entry) in iter {
            table.insert(id, entry);
        }
        table
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone, PartialEq)]
    struct Entry {
        region: String,
        address: IpAddr,
    }

    impl Placed for Entry {
        fn region(&self) -> &str {
            &self.region
        }
        fn address(&self) -> IpAddr {
            self.address
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u8, u8, u8),
        Remove(u8),
        RetainOdd,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..12, 0u8..3, 0u8..4).prop_map(|(id, r, a)| Op::Insert(id, r, a)),
            (0u8..12).prop_map(Op::Remove),
            Just(Op::RetainOdd),
        ]
    }

    proptest! {
        /// After any sequence of inserts, replacements and removals the
        /// index answers what a walk over every node would.
        #[test]
        fn the_index_agrees_with_a_walk_over_every_node(ops in proptest::collection::vec(op(), 0..60)) {
            let mut table = NodeTable::default();
            for op in ops {
                match op {
                    Op::Insert(id, region, address) => {
                        table.insert(
                            format!("n{id}"),
                            Entry {
                                region: format!("r{region}"),
                                address: IpAddr::from([127, 0, 0, address]),
                            },
                        );
                    }
                    Op::Remove(id) => {
                        table.remove(&format!("n{id}"));
                    }
                    Op::RetainOdd => table.retain(|id, _| id.len() % 2 == 1),
                }
                for region in ["r0", "r1", "r2"] {
                    let walked = table.values().filter(|e| e.region == region).count();
                    prop_assert_eq!(table.in_region(region), walked);
                    for address in 0..4u8 {
                        let address = IpAddr::from([127, 0, 0, address]);
                        let mut walked: Vec<&Entry> = table
                            .values()
                            .filter(|e| e.region == region && e.address == address)
                            .collect();
                        let mut indexed: Vec<&Entry> = table.at_place(region, address).collect();
                        walked.sort_by_key(|e| format!("{e:?}"));
                        indexed.sort_by_key(|e| format!("{e:?}"));
                        prop_assert_eq!(indexed, walked);
                    }
                }
            }
        }
    }
}
