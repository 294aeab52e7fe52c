//! DNS record plans: desired record sets + current record sets → the minimal
//! list of changes, in the external-dns manner.
//!
//! Record sets are keyed by (name, type, set identifier). The plan creates what
//! is missing, updates what differs, deletes what this owner no longer wants,
//! and never touches a record set owned by someone else: such a key is reported
//! as a [`Conflict`] instead. Applying a plan to the current records
//! ([`apply`]) and planning again yields an empty plan.
//!
//! This module owns comparison and ordering only. It does not render weights
//! into records (see `render`) and does not know any backend's API; scoping the
//! current records to the names a caller manages is the caller's job. How a
//! plan is ordered and packed into an API's write calls is [`batch`].

pub mod batch;

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

/// Identity of a record set within a zone.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RecordKey {
    /// Lowercase, without trailing dot.
    pub name: String,
    /// Uppercase record type (`A`, `AAAA`, `LUA`, `TXT`, …).
    pub rtype: String,
    /// Distinguishes several sets of one name and type (Route53's
    /// `SetIdentifier`); `None` for backends without the notion.
    pub set_id: Option<String>,
}

impl fmt::Display for RecordKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.name, self.rtype)?;
        if let Some(set_id) = &self.set_id {
            write!(f, " [{set_id}]")?;
        }
        Ok(())
    }
}

/// One record set as desired or as found in a backend.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordSet {
    pub name: String,
    pub rtype: String,
    pub set_id: Option<String>,
    pub ttl: u32,
    /// Record data in the backend's presentation format.
    pub values: Vec<String>,
    /// Routing weight where the backend has one per set.
    pub weight: Option<u32>,
    /// Who owns the set; `None` for records nobody claimed.
    pub owner: Option<String>,
}

impl RecordSet {
    /// The set's key, normalised.
    pub fn key(&self) -> RecordKey {
        RecordKey {
            name: normalize_name(&self.name),
            rtype: self.rtype.to_ascii_uppercase(),
            set_id: self.set_id.clone(),
        }
    }

    /// A copy with its name and type normalised and its values sorted and
    /// deduplicated, so that two sets that mean the same compare equal.
    #[must_use]
    pub fn normalized(&self) -> RecordSet {
        let mut values = self.values.clone();
        values.sort();
        values.dedup();
        RecordSet {
            name: normalize_name(&self.name),
            rtype: self.rtype.to_ascii_uppercase(),
            set_id: self.set_id.clone(),
            ttl: self.ttl,
            values,
            weight: self.weight,
            owner: self.owner.clone(),
        }
    }
}

/// Lowercases a DNS name and strips one trailing dot.
pub fn normalize_name(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

/// One step of a plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Change {
    Create { record: RecordSet },
    Update { from: RecordSet, to: RecordSet },
    Delete { record: RecordSet },
}

impl Change {
    pub fn key(&self) -> RecordKey {
        match self {
            Change::Create { record } | Change::Delete { record } => record.key(),
            Change::Update { to, .. } => to.key(),
        }
    }
}

/// A desired record set the plan refused to touch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conflict {
    pub key: RecordKey,
    pub reason: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsPlan {
    /// Deletes first, then updates, then creates; each group in key order.
    pub changes: Vec<Change>,
    pub conflicts: Vec<Conflict>,
}

impl DnsPlan {
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// `(creates, updates, deletes)`.
    pub fn counts(&self) -> (usize, usize, usize) {
        self.changes
            .iter()
            .fold((0, 0, 0), |(c, u, d), change| match change {
                Change::Create { .. } => (c + 1, u, d),
                Change::Update { .. } => (c, u + 1, d),
                Change::Delete { .. } => (c, u, d + 1),
            })
    }
}

/// A borrowed, normalised view of a record set: comparing views allocates
/// only where a set is not already in normal form.
#[derive(Debug)]
struct View<'a> {
    record: &'a RecordSet,
    values: Cow<'a, [String]>,
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct KeyRef<'a> {
    name: Cow<'a, str>,
    rtype: Cow<'a, str>,
    set_id: Option<&'a str>,
}

impl<'a> View<'a> {
    fn new(record: &'a RecordSet) -> (KeyRef<'a>, View<'a>) {
        let trimmed = record.name.strip_suffix('.').unwrap_or(&record.name);
        let name = if trimmed.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(trimmed.to_ascii_lowercase())
        } else {
            Cow::Borrowed(trimmed)
        };
        let rtype = if record.rtype.bytes().any(|b| b.is_ascii_lowercase()) {
            Cow::Owned(record.rtype.to_ascii_uppercase())
        } else {
            Cow::Borrowed(record.rtype.as_str())
        };
        let sorted_unique = record
            .values
            .windows(2)
            .all(|w| matches!(w, [a, b] if a < b));
        let values = if sorted_unique {
            Cow::Borrowed(record.values.as_slice())
        } else {
            let mut values = record.values.clone();
            values.sort();
            values.dedup();
            Cow::Owned(values)
        };
        let key = KeyRef {
            name,
            rtype,
            set_id: record.set_id.as_deref(),
        };
        (key, View { record, values })
    }

    fn same_content(&self, other: &View<'_>) -> bool {
        self.record.ttl == other.record.ttl
            && self.values == other.values
            && self.record.weight == other.record.weight
    }

    fn owner(&self) -> Option<&str> {
        self.record.owner.as_deref()
    }

    fn to_record(&self, owner: Option<&str>) -> RecordSet {
        let mut record = self.record.normalized();
        record.owner = owner.map(str::to_owned);
        record
    }
}

impl KeyRef<'_> {
    fn to_key(&self) -> RecordKey {
        RecordKey {
            name: self.name.clone().into_owned(),
            rtype: self.rtype.clone().into_owned(),
            set_id: self.set_id.map(str::to_owned),
        }
    }
}

/// Plans the changes that turn `current` into `desired` for `owner`.
///
/// Every desired set is stamped with `owner`. A current set with the same key
/// but another (or no) owner is left alone and reported as a conflict; current
/// sets owned by `owner` that are no longer desired are deleted; everything
/// else is never touched.
pub fn plan(owner: &str, desired: &[RecordSet], current: &[RecordSet]) -> DnsPlan {
    let mut conflicts = Vec::new();
    let mut wanted: BTreeMap<KeyRef<'_>, View<'_>> = BTreeMap::new();
    for record in desired {
        let (key, view) = View::new(record);
        if let Some(previous) = wanted.insert(key, view) {
            let (key, _) = View::new(previous.record);
            conflicts.push(Conflict {
                key: key.to_key(),
                reason: "declared twice in the desired records; the last one wins".to_owned(),
            });
        }
    }
    let existing: BTreeMap<KeyRef<'_>, View<'_>> = current.iter().map(View::new).collect();

    let mut deletes = Vec::new();
    let mut updates = Vec::new();
    let mut creates = Vec::new();
    for (key, want) in &wanted {
        match existing.get(key) {
            None => creates.push(Change::Create {
                record: want.to_record(Some(owner)),
            }),
            Some(have) if have.owner() == Some(owner) => {
                if !have.same_content(want) {
                    updates.push(Change::Update {
                        from: have.to_record(have.owner()),
                        to: want.to_record(Some(owner)),
                    });
                }
            }
            Some(have) => conflicts.push(Conflict {
                key: key.to_key(),
                reason: match have.owner() {
                    Some(other) => format!("exists and is owned by `{other}`; left untouched"),
                    None => "exists and is not owned by this deployment; left untouched".to_owned(),
                },
            }),
        }
    }
    for (key, have) in &existing {
        if have.owner() == Some(owner) && !wanted.contains_key(key) {
            deletes.push(Change::Delete {
                record: have.to_record(have.owner()),
            });
        }
    }
    conflicts.sort_by(|a, b| a.key.cmp(&b.key));
    let mut changes = deletes;
    changes.append(&mut updates);
    changes.append(&mut creates);
    DnsPlan { changes, conflicts }
}

/// The records a backend holds after `plan` was applied to `current`.
/// Backends use it as their model; tests use it to check idempotence.
pub fn apply(current: &[RecordSet], plan: &DnsPlan) -> Vec<RecordSet> {
    let mut records: BTreeMap<RecordKey, RecordSet> = current
        .iter()
        .map(|r| {
            let r = r.normalized();
            (r.key(), r)
        })
        .collect();
    for change in &plan.changes {
        match change {
            Change::Create { record } | Change::Update { to: record, .. } => {
                records.insert(record.key(), record.clone());
            }
            Change::Delete { record } => {
                records.remove(&record.key());
            }
        }
    }
    records.into_values().collect()
}

/// The names a set of changes touches, for scoping follow-up reads.
pub fn touched_names(plan: &DnsPlan) -> BTreeSet<String> {
    plan.changes.iter().map(|c| c.key().name).collect()
}

#[cfg(test)]
mod tests {
    use expect_test::expect;
    use proptest::prelude::*;

    use super::*;

    const OWNER: &str = "neutral:test";

    fn set(
        name: &str,
        set_id: Option<&str>,
        values: &[&str],
        weight: Option<u32>,
        owner: Option<&str>,
    ) -> RecordSet {
        RecordSet {
            name: name.to_owned(),
            rtype: "A".to_owned(),
            set_id: set_id.map(str::to_owned),
            ttl: 30,
            values: values.iter().map(|v| (*v).to_owned()).collect(),
            weight,
            owner: owner.map(str::to_owned),
        }
    }

    fn render(plan: &DnsPlan) -> String {
        let mut out = String::new();
        for change in &plan.changes {
            let line = match change {
                Change::Create { record } => format!(
                    "create {} {:?} w={:?}",
                    record.key(),
                    record.values,
                    record.weight
                ),
                Change::Update { from, to } => format!(
                    "update {} {:?} w={:?} -> {:?} w={:?}",
                    to.key(),
                    from.values,
                    from.weight,
                    to.values,
                    to.weight
                ),
                Change::Delete { record } => format!("delete {}", record.key()),
            };
            out.push_str(&line);
            out.push('\n');
        }
        for conflict in &plan.conflicts {
            out.push_str(&format!("conflict {}: {}\n", conflict.key, conflict.reason));
        }
        out
    }

    #[test]
    fn creates_updates_and_deletes_only_what_differs() {
        let current = [
            set(
                "app.example.com.",
                Some("jp-1"),
                &["192.0.2.1"],
                Some(100),
                Some(OWNER),
            ),
            set(
                "app.example.com",
                Some("jp-2"),
                &["192.0.2.2"],
                Some(100),
                Some(OWNER),
            ),
            set(
                "app.example.com",
                Some("sg-1"),
                &["192.0.2.3"],
                Some(50),
                Some(OWNER),
            ),
        ];
        let desired = [
            set(
                "APP.example.com",
                Some("jp-1"),
                &["192.0.2.1"],
                Some(100),
                None,
            ),
            set(
                "app.example.com",
                Some("jp-2"),
                &["192.0.2.2"],
                Some(0),
                None,
            ),
            set(
                "app.example.com",
                Some("us-1"),
                &["192.0.2.9"],
                Some(50),
                None,
            ),
        ];
        let plan = plan(OWNER, &desired, &current);
        expect![[r#"
            delete app.example.com A [sg-1]
            update app.example.com A [jp-2] ["192.0.2.2"] w=Some(100) -> ["192.0.2.2"] w=Some(0)
            create app.example.com A [us-1] ["192.0.2.9"] w=Some(50)
        "#]]
        .assert_eq(&render(&plan));
    }

    #[test]
    fn foreign_records_are_never_touched() {
        let current = [
            set("app.example.com", None, &["198.51.100.1"], None, None),
            set(
                "www.example.com",
                None,
                &["198.51.100.2"],
                None,
                Some("someone-else"),
            ),
            set(
                "old.example.com",
                None,
                &["198.51.100.3"],
                None,
                Some("someone-else"),
            ),
        ];
        let desired = [
            set("app.example.com", None, &["192.0.2.1"], None, None),
            set("www.example.com", None, &["192.0.2.1"], None, None),
        ];
        let plan = plan(OWNER, &desired, &current);
        expect![[r#"
            conflict app.example.com A: exists and is not owned by this deployment; left untouched
            conflict www.example.com A: exists and is owned by `someone-else`; left untouched
        "#]]
        .assert_eq(&render(&plan));
    }

    #[test]
    fn value_order_and_duplicates_do_not_cause_updates() {
        let current = [set(
            "a.example.com",
            None,
            &["192.0.2.2", "192.0.2.1"],
            None,
            Some(OWNER),
        )];
        let desired = [set(
            "a.example.com",
            None,
            &["192.0.2.1", "192.0.2.2", "192.0.2.1"],
            None,
            None,
        )];
        assert!(plan(OWNER, &desired, &current).is_empty());
    }

    #[test]
    fn duplicate_desired_keys_are_reported() {
        let desired = [
            set("a.example.com", None, &["192.0.2.1"], None, None),
            set("a.example.com.", None, &["192.0.2.2"], None, None),
        ];
        let plan = plan(OWNER, &desired, &[]);
        assert_eq!(plan.counts(), (1, 0, 0));
        assert_eq!(plan.conflicts.len(), 1);
    }

    fn arb_set() -> impl Strategy<Value = RecordSet> {
        (
            prop::sample::select(vec!["a.example.com", "b.example.com", "c.example.com."]),
            prop::option::of(prop::sample::select(vec!["n1", "n2", "n3"])),
            prop::collection::vec(
                prop::sample::select(vec!["192.0.2.1", "192.0.2.2", "192.0.2.3"]),
                1..3,
            ),
            prop::option::of(0u32..4),
            prop::option::of(prop::sample::select(vec![OWNER, "other"])),
            prop::sample::select(vec![30u32, 60]),
        )
            .prop_map(|(name, set_id, values, weight, owner, ttl)| RecordSet {
                ttl,
                ..set(name, set_id, &values, weight, owner)
            })
    }

    /// A backend holds at most one set per key.
    fn unique_keys(records: Vec<RecordSet>) -> Vec<RecordSet> {
        let mut seen = BTreeSet::new();
        records
            .into_iter()
            .filter(|r| seen.insert(r.key()))
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn a_second_plan_on_the_result_is_empty(
            desired in prop::collection::vec(arb_set(), 0..8),
            current in prop::collection::vec(arb_set(), 0..8).prop_map(unique_keys),
        ) {
            let first = plan(OWNER, &desired, &current);
            let after = apply(&current, &first);
            let second = plan(OWNER, &desired, &after);
            prop_assert!(second.is_empty(), "second plan: {:?}", second.changes);
        }

        #[test]
        fn records_of_other_owners_survive_unchanged(
            desired in prop::collection::vec(arb_set(), 0..8),
            current in prop::collection::vec(arb_set(), 0..8).prop_map(unique_keys),
        ) {
            let first = plan(OWNER, &desired, &current);
            let after = apply(&current, &first);
            let before_foreign: BTreeMap<_, _> = current.iter().map(RecordSet::normalized)
                .map(|r| (r.key(), r)).filter(|(_, r)| r.owner.as_deref() != Some(OWNER)).collect();
            for (key, record) in before_foreign {
                prop_assert!(after.contains(&record), "foreign {key} changed or vanished");
            }
            for change in &first.changes {
                let touched = change.key();
                let owned_before = current.iter().map(RecordSet::normalized)
                    .filter(|r| r.key() == touched).all(|r| r.owner.as_deref() == Some(OWNER));
                prop_assert!(owned_before, "plan touched foreign {touched}");
            }
        }
    }
}
