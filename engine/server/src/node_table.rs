//! The world's node table: nodes by id, with an index by place (region and
//! address) and a count per region, kept in step by the only methods that
//! add or remove nodes. Registration asks "who is at this address?" and "how
//! many nodes has this region?" in O(1) instead of walking every node
//! (issue 17: 100,000 nodes).
//!
//! It also remembers which entries changed in what the engine reads of them
//! ([`Placed::watched`]) since [`NodeTable::take_changed`] last asked, so a
//! recompute revisits only those nodes rather than every one (issue 17: one
//! status change among 10,000 nodes). Every way to change an entry goes
//! through the table — [`NodeTable::get_mut`]'s guard and
//! [`NodeTable::for_each_mut`] compare the watched fields before and after —
//! so no caller can forget to say what it changed.
//!
//! A leaf, generic over the entry ([`Placed`]), so it imports nothing of
//! the crate. Reads go through `Deref` to the `BTreeMap`; entries may be
//! changed in place, but never their place (a node's region and address are
//! fixed at registration; re-registering inserts a new entry).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;

/// What the index needs to know of an entry.
pub trait Placed {
    /// The fields whose change [`NodeTable::take_changed`] reports.
    type Watched: PartialEq;

    fn region(&self) -> &str;
    fn address(&self) -> IpAddr;
    fn watched(&self) -> Self::Watched;
}

/// Nodes by id, indexed by place.
#[derive(Debug, Clone)]
pub struct NodeTable<E> {
    by_id: BTreeMap<String, E>,
    /// The ids at each (region, address): one by the identity rule, more
    /// only in states that rule forbids (a store from before it).
    by_place: HashMap<(String, IpAddr), Vec<String>>,
    per_region: HashMap<String, usize>,
    /// What changed since the last [`NodeTable::take_changed`].
    changed: Changed,
}

impl<E> Default for NodeTable<E> {
    fn default() -> Self {
        NodeTable {
            by_id: BTreeMap::new(),
            by_place: HashMap::new(),
            per_region: HashMap::new(),
            changed: Changed::default(),
        }
    }
}

impl<E: Placed> NodeTable<E> {
    /// Adds (or replaces) the entry of `id`.
    pub fn insert(&mut self, id: String, entry: E) -> Option<E> {
        let place = (entry.region().to_owned(), entry.address());
        self.changed.mark(&id);
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
    pub fn retain(&mut self, mut keep: impl FnMut(&String, &E) -> bool) {
        let gone: Vec<String> = self
            .by_id
            .iter()
            .filter(|(id, entry)| !keep(id, entry))
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            self.remove(&id);
        }
    }

    fn unindex(&mut self, id: &str, entry: &E) {
        let place = (entry.region().to_owned(), entry.address());
        self.changed.left.push((place.0.clone(), id.to_owned()));
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

impl<E: Placed> NodeTable<E> {
    /// The entry of `id`, to change in place: the guard notes the change
    /// when it drops if the watched fields moved.
    pub fn get_mut<'a>(&'a mut self, id: &'a str) -> Option<EntryMut<'a, E>> {
        let entry = self.by_id.get_mut(id)?;
        Some(EntryMut {
            before: entry.watched(),
            entry,
            id,
            changed: &mut self.changed,
        })
    }

    /// Calls `change` on every entry in id order, noting those whose
    /// watched fields it moved.
    pub fn for_each_mut(&mut self, mut change: impl FnMut(&String, &mut E)) {
        for (id, entry) in &mut self.by_id {
            let before = entry.watched();
            change(id, entry);
            if entry.watched() != before {
                self.changed.mark(id);
            }
        }
    }

    /// The places (region, id) where an entry was added, removed or
    /// changed in its watched fields since the last call, sorted; forgets
    /// them. An entry replaced by one in another region is at both.
    pub fn take_changed(&mut self) -> Vec<(String, String)> {
        let Changed { ids, mut left } = std::mem::take(&mut self.changed);
        left.extend(ids.into_iter().filter_map(|id| {
            let region = self.by_id.get(&id)?.region().to_owned();
            Some((region, id))
        }));
        left.sort_unstable();
        left.dedup();
        left
    }
}

/// What changed in a [`NodeTable`]: the ids of the entries added or changed
/// in place, and the places (region, id) entries left (removed, or replaced
/// by another).
#[derive(Debug, Clone, Default)]
struct Changed {
    ids: HashSet<String>,
    left: Vec<(String, String)>,
}

impl Changed {
    fn mark(&mut self, id: &str) {
        if !self.ids.contains(id) {
            self.ids.insert(id.to_owned());
        }
    }
}

/// An entry borrowed to change in place ([`NodeTable::get_mut`]).
#[derive(Debug)]
pub struct EntryMut<'a, E: Placed> {
    entry: &'a mut E,
    before: E::Watched,
    id: &'a str,
    changed: &'a mut Changed,
}

impl<E: Placed> std::ops::Deref for EntryMut<'_, E> {
    type Target = E;

    fn deref(&self) -> &E {
        self.entry
    }
}

impl<E: Placed> std::ops::DerefMut for EntryMut<'_, E> {
    fn deref_mut(&mut self) -> &mut E {
        self.entry
    }
}

impl<E: Placed> Drop for EntryMut<'_, E> {
    fn drop(&mut self) {
        if self.entry.watched() != self.before {
            self.changed.mark(self.id);
        }
    }
}

impl<E> std::ops::Deref for NodeTable<E> {
    type Target = BTreeMap<String, E>;

    fn deref(&self) -> &Self::Target {
        &self.by_id
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
        status: u8,
        heartbeats: u32,
    }

    impl Placed for Entry {
        type Watched = u8;

        fn region(&self) -> &str {
            &self.region
        }
        fn address(&self) -> IpAddr {
            self.address
        }
        fn watched(&self) -> u8 {
            self.status
        }
    }

    fn entry(region: &str, last_octet: u8) -> Entry {
        Entry {
            region: region.to_owned(),
            address: IpAddr::from([127, 0, 0, last_octet]),
            status: 0,
            heartbeats: 0,
        }
    }

    #[test]
    fn changes_are_noted_only_where_the_watched_fields_moved() {
        let mut table: NodeTable<Entry> = ["a", "b", "c", "d"]
            .into_iter()
            .zip(1..)
            .map(|(id, octet)| (id.to_owned(), entry("r0", octet)))
            .collect();
        let ids = |places: Vec<(String, String)>| -> Vec<String> {
            places
                .into_iter()
                .map(|(region, id)| format!("{region}/{id}"))
                .collect()
        };
        assert_eq!(
            ids(table.take_changed()),
            ["r0/a", "r0/b", "r0/c", "r0/d"],
            "every insert"
        );
        assert!(table.take_changed().is_empty(), "taken");

        // Unwatched fields change nothing; watched ones do, through either
        // way in.
        table.get_mut("a").unwrap().heartbeats += 1;
        table.get_mut("b").unwrap().status = 1;
        table.for_each_mut(|id, entry| {
            entry.heartbeats += 1;
            if id == "c" {
                entry.status = 2;
            }
        });
        // Moved and moved back is no change.
        {
            let mut d = table.get_mut("d").unwrap();
            d.status = 9;
            d.status = 0;
        }
        assert_eq!(ids(table.take_changed()), ["r0/b", "r0/c"]);

        table.remove("a");
        table.insert("e".to_owned(), entry("r1", 5));
        table.remove("nobody");
        // Replaced by an entry in another region: both places.
        table.insert("b".to_owned(), entry("r2", 2));
        assert_eq!(ids(table.take_changed()), ["r0/a", "r0/b", "r1/e", "r2/b"]);
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
                        table.insert(format!("n{id}"), entry(&format!("r{region}"), address));
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
