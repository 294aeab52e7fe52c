//! Turning a [`DnsPlan`] into the write calls of a DNS API: the order the
//! changes are written in, and how they are packed into calls that each stay
//! within the API's limits.
//!
//! This module owns that ordering and packing and nothing else: it does not
//! know any API's wire format, and it never changes, drops or merges a
//! change. Every function is pure and total.
//!
//! # Order
//!
//! [`write_order`] puts the changes that add answers before those that take
//! them away — creates, then updates, then deletes, each group in the plan's
//! key order — so an apply that needs several calls never leaves a name with
//! fewer answers in between than it has before and after. An *ownership
//! record* (the TXT registry record a backend keeps beside the records it
//! owns) is written first when it is created or updated and last when it is
//! deleted: a record of ours never exists without its marker, even when a
//! later call fails.
//!
//! # Pairing
//!
//! Where a record has an identity of its own (Cloudflare's and AliDNS'
//! record ids), [`pair_replacements`] turns a delete and a create of the
//! same name and type into one update of the old record: a node replaced by
//! another costs one write instead of two.
//!
//! # Packing
//!
//! [`batches`] packs the ordered changes greedily into calls: a call takes
//! the next change while every limit still holds. A change counts its record
//! values (and their characters) once, an update `update_factor` times
//! (Route53 counts an `UPSERT` twice). Greedy packing of a fixed order is
//! the fewest calls any split into consecutive runs can give; when every
//! change costs the same it is the fewest calls at all, `⌈total / limit⌉`.

use super::{Change, DnsPlan, RecordKey, RecordSet};

/// What one write call of an API may hold. `None` means no such limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchLimits {
    /// Most changes in one call.
    pub max_changes: Option<usize>,
    /// Most record values in one call, counting an update's values
    /// `update_factor` times.
    pub max_values: Option<usize>,
    /// Most characters of record values in one call, counted likewise.
    pub max_value_chars: Option<usize>,
    /// How many times an update's values count against the limits.
    pub update_factor: usize,
}

impl BatchLimits {
    /// Route53's `ChangeResourceRecordSets`: at most 1,000 `ResourceRecord`
    /// elements and 32,000 characters of `Value`, an `UPSERT` counting twice.
    pub const ROUTE53: BatchLimits = BatchLimits {
        max_changes: None,
        max_values: Some(1_000),
        max_value_chars: Some(32_000),
        update_factor: 2,
    };

    /// An API whose batch call takes at most `max_changes` operations, each
    /// counting once (Cloudflare's `dns_records/batch`: 200 on the Free plan,
    /// 3,500 on the others).
    pub fn changes(max_changes: usize) -> BatchLimits {
        BatchLimits {
            max_changes: Some(max_changes),
            max_values: None,
            max_value_chars: None,
            update_factor: 1,
        }
    }
}

/// A change that no call can hold, even alone.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{key} needs {needed} {what} in one call, more than the {limit} a call takes")]
pub struct TooLarge {
    pub key: RecordKey,
    pub what: &'static str,
    pub needed: usize,
    pub limit: usize,
}

/// What one change costs against [`BatchLimits`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cost {
    pub changes: usize,
    pub values: usize,
    pub value_chars: usize,
}

impl Cost {
    fn plus(self, other: Cost) -> Cost {
        Cost {
            changes: self.changes.saturating_add(other.changes),
            values: self.values.saturating_add(other.values),
            value_chars: self.value_chars.saturating_add(other.value_chars),
        }
    }

    /// The first limit this cost exceeds, as `(what, needed, limit)`.
    fn exceeds(self, limits: &BatchLimits) -> Option<(&'static str, usize, usize)> {
        [
            ("changes", self.changes, limits.max_changes),
            ("record values", self.values, limits.max_values),
            ("value characters", self.value_chars, limits.max_value_chars),
        ]
        .into_iter()
        .find_map(|(what, needed, limit)| match limit {
            Some(limit) if needed > limit => Some((what, needed, limit)),
            _ => None,
        })
    }
}

fn set_cost(record: &RecordSet, factor: usize) -> Cost {
    let chars: usize = record.values.iter().map(|v| v.chars().count()).sum();
    Cost {
        changes: 1,
        values: record.values.len().saturating_mul(factor),
        value_chars: chars.saturating_mul(factor),
    }
}

/// What `change` costs under `limits`.
pub fn cost(change: &Change, limits: &BatchLimits) -> Cost {
    match change {
        Change::Create { record } | Change::Delete { record } => set_cost(record, 1),
        Change::Update { to, .. } => set_cost(to, limits.update_factor.max(1)),
    }
}

/// The plan's changes in the order they are written; see the
/// [module docs](self). `registry` is the key of the ownership record, if
/// the backend keeps one.
pub fn write_order(plan: &DnsPlan, registry: Option<&RecordKey>) -> Vec<Change> {
    let is_registry = |change: &Change| registry.is_some_and(|key| change.key() == *key);
    let rank = |change: &Change| match change {
        Change::Create { .. } | Change::Update { .. } if is_registry(change) => 0,
        Change::Create { .. } => 1,
        Change::Update { .. } => 2,
        Change::Delete { .. } if is_registry(change) => 4,
        Change::Delete { .. } => 3,
    };
    let mut ordered: Vec<(u8, usize, &Change)> = plan
        .changes
        .iter()
        .enumerate()
        .map(|(index, change)| (rank(change), index, change))
        .collect();
    ordered.sort_by_key(|(rank, index, _)| (*rank, *index));
    ordered
        .into_iter()
        .map(|(_, _, change)| change.clone())
        .collect()
}

/// Turns each pair of a delete and a create of the same name and type into
/// one update of the deleted record to the created one, for APIs whose
/// records have an identity of their own (a record id) that an update can
/// keep while changing the content: one write instead of two. `keep` (the
/// ownership record) is never paired. Pairs are made in key order within
/// each name and type; a paired update takes its create's place, its delete
/// goes, everything else keeps its place.
pub fn pair_replacements(changes: &[Change], keep: Option<&RecordKey>) -> Vec<Change> {
    type Group = (String, String);
    let group = |record: &RecordSet| -> Group {
        let key = record.key();
        (key.name, key.rtype)
    };
    let pairable = |record: &RecordSet| keep.is_none_or(|k| record.key() != *k);
    let mut deletes: std::collections::BTreeMap<Group, Vec<&RecordSet>> =
        std::collections::BTreeMap::new();
    for change in changes {
        if let Change::Delete { record } = change
            && pairable(record)
        {
            deletes.entry(group(record)).or_default().push(record);
        }
    }
    for list in deletes.values_mut() {
        list.sort_by_key(|r| r.key());
        list.reverse();
    }
    let mut paired_away: Vec<RecordKey> = Vec::new();
    let mut out = Vec::with_capacity(changes.len());
    for change in changes {
        match change {
            Change::Create { record } if pairable(record) => {
                match deletes.get_mut(&group(record)).and_then(Vec::pop) {
                    Some(from) => {
                        paired_away.push(from.key());
                        out.push(Change::Update {
                            from: from.clone(),
                            to: record.clone(),
                        });
                    }
                    None => out.push(change.clone()),
                }
            }
            _ => out.push(change.clone()),
        }
    }
    out.retain(|change| match change {
        Change::Delete { record } => !paired_away.contains(&record.key()),
        _ => true,
    });
    out
}

/// Packs `changes`, in their order, into the fewest consecutive calls that
/// each stay within `limits`; see the [module docs](self). Fails when one
/// change alone exceeds a limit.
pub fn batches(changes: &[Change], limits: &BatchLimits) -> Result<Vec<Vec<Change>>, TooLarge> {
    let mut calls: Vec<Vec<Change>> = Vec::new();
    let mut current: Vec<Change> = Vec::new();
    let mut used = Cost::default();
    for change in changes {
        let needed = cost(change, limits);
        if let Some((what, needed, limit)) = needed.exceeds(limits) {
            return Err(TooLarge {
                key: change.key(),
                what,
                needed,
                limit,
            });
        }
        let together = used.plus(needed);
        if together.exceeds(limits).is_some() && !current.is_empty() {
            calls.push(std::mem::take(&mut current));
            used = needed;
        } else {
            used = together;
        }
        current.push(change.clone());
    }
    if !current.is_empty() {
        calls.push(current);
    }
    Ok(calls)
}

/// The fewest calls any packing of `changes` can use under `limits`: the
/// largest total cost divided by its limit, rounded up. [`batches`] reaches
/// it when every change costs the same.
pub fn lower_bound(changes: &[Change], limits: &BatchLimits) -> usize {
    let total = changes
        .iter()
        .fold(Cost::default(), |sum, c| sum.plus(cost(c, limits)));
    let calls = |needed: usize, limit: Option<usize>| match limit {
        Some(limit) if limit > 0 => needed.div_ceil(limit),
        _ => usize::from(needed > 0),
    };
    [
        calls(total.changes, limits.max_changes),
        calls(total.values, limits.max_values),
        calls(total.value_chars, limits.max_value_chars),
    ]
    .into_iter()
    .max()
    .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::dnsplan::plan;

    const OWNER: &str = "neutral:test";

    fn set(name: &str, set_id: &str, values: &[&str], owner: Option<&str>) -> RecordSet {
        RecordSet {
            name: name.to_owned(),
            rtype: if name.starts_with('_') { "TXT" } else { "A" }.to_owned(),
            set_id: (!set_id.is_empty()).then(|| set_id.to_owned()),
            ttl: 30,
            values: values.iter().map(|v| (*v).to_owned()).collect(),
            weight: Some(1),
            owner: owner.map(str::to_owned),
        }
    }

    fn registry_key() -> RecordKey {
        RecordKey {
            name: "_neutral-a.app.example.com".to_owned(),
            rtype: "TXT".to_owned(),
            set_id: None,
        }
    }

    fn summary(changes: &[Change]) -> Vec<String> {
        changes
            .iter()
            .map(|c| {
                let op = match c {
                    Change::Create { .. } => "create",
                    Change::Update { .. } => "update",
                    Change::Delete { .. } => "delete",
                };
                format!("{op} {}", c.key())
            })
            .collect()
    }

    #[test]
    fn additions_come_before_removals_and_the_registry_brackets_them() {
        let current = [
            set("app.example.com", "old", &["192.0.2.9"], Some(OWNER)),
            set("app.example.com", "kept", &["192.0.2.1"], Some(OWNER)),
        ];
        let desired = [
            set("app.example.com", "kept", &["192.0.2.2"], None),
            set("app.example.com", "new", &["192.0.2.3"], None),
            set("_neutral-a.app.example.com", "", &["\"owner\""], None),
        ];
        let planned = plan(OWNER, &desired, &current);
        assert_eq!(
            summary(&write_order(&planned, Some(&registry_key()))),
            [
                "create _neutral-a.app.example.com TXT",
                "create app.example.com A [new]",
                "update app.example.com A [kept]",
                "delete app.example.com A [old]",
            ]
        );
        // Destroying: the registry goes last.
        let mut owned = current.to_vec();
        owned.push(set(
            "_neutral-a.app.example.com",
            "",
            &["\"owner\""],
            Some(OWNER),
        ));
        let destroy = plan(OWNER, &[], &owned);
        let order = summary(&write_order(&destroy, Some(&registry_key())));
        assert_eq!(
            order.last().map(String::as_str),
            Some("delete _neutral-a.app.example.com TXT")
        );
        assert_eq!(order.len(), 3);
    }

    fn creates(count: usize, values_each: usize) -> Vec<Change> {
        (0..count)
            .map(|i| {
                let values: Vec<String> = (0..values_each)
                    .map(|v| format!("192.0.{}.{}", v % 250, i % 250))
                    .collect();
                let refs: Vec<&str> = values.iter().map(String::as_str).collect();
                Change::Create {
                    record: set("app.example.com", &format!("n{i}"), &refs, None),
                }
            })
            .collect()
    }

    fn updates(count: usize) -> Vec<Change> {
        creates(count, 1)
            .into_iter()
            .map(|c| match c {
                Change::Create { record } => Change::Update {
                    from: record.clone(),
                    to: record,
                },
                other => other,
            })
            .collect()
    }

    #[test]
    fn replacements_pair_into_updates_of_the_old_record() {
        let current = [
            set("app.example.com", "192.0.2.1", &["192.0.2.1"], Some(OWNER)),
            set("app.example.com", "192.0.2.2", &["192.0.2.2"], Some(OWNER)),
            set("app.example.com", "192.0.2.3", &["192.0.2.3"], Some(OWNER)),
            set("_neutral-a.app.example.com", "", &["old"], Some(OWNER)),
        ];
        let desired = [
            set("app.example.com", "192.0.2.1", &["192.0.2.1"], None),
            set("app.example.com", "192.0.2.8", &["192.0.2.8"], None),
        ];
        let planned = plan(OWNER, &desired, &current);
        let ordered = write_order(&planned, Some(&registry_key()));
        let paired = pair_replacements(&ordered, Some(&registry_key()));
        assert_eq!(
            summary(&paired),
            [
                "update app.example.com A [192.0.2.8]",
                "delete app.example.com A [192.0.2.3]",
                "delete _neutral-a.app.example.com TXT",
            ]
        );
        let Some(Change::Update { from, .. }) = paired.first() else {
            panic!("an update first");
        };
        assert_eq!(
            from.set_id.as_deref(),
            Some("192.0.2.2"),
            "the first delete in key order"
        );
    }

    #[test]
    fn route53_upserts_count_twice_against_the_thousand_records() {
        let calls = batches(&updates(1_000), &BatchLimits::ROUTE53).expect("fits");
        assert_eq!(calls.iter().map(Vec::len).collect::<Vec<_>>(), [500, 500]);
        let calls = batches(&creates(1_000, 1), &BatchLimits::ROUTE53).expect("fits");
        assert_eq!(calls.len(), 1);
        let calls = batches(&creates(1_001, 1), &BatchLimits::ROUTE53).expect("fits");
        assert_eq!(calls.iter().map(Vec::len).collect::<Vec<_>>(), [1_000, 1]);
    }

    #[test]
    fn route53_value_characters_are_limited_too() {
        // 400 creates of 4 values each: 1,600 values need 2 calls.
        let long = creates(400, 4);
        let calls = batches(&long, &BatchLimits::ROUTE53).expect("fits");
        assert_eq!(calls.len(), 2);
        assert_eq!(lower_bound(&long, &BatchLimits::ROUTE53), 2);
        let value = "x".repeat(20_000);
        let huge = vec![Change::Create {
            record: set("app.example.com", "a", &[&value, &value], None),
        }];
        let err = batches(&huge, &BatchLimits::ROUTE53).expect_err("too large");
        assert_eq!(err.what, "value characters");
        assert_eq!(err.needed, 40_000);
    }

    #[test]
    fn cloudflare_batches_hold_the_plans_batch_size() {
        let calls = batches(&creates(450, 1), &BatchLimits::changes(200)).expect("fits");
        assert_eq!(
            calls.iter().map(Vec::len).collect::<Vec<_>>(),
            [200, 200, 50]
        );
        assert!(
            batches(&[], &BatchLimits::changes(200))
                .expect("ok")
                .is_empty()
        );
    }

    /// How many delete/create pairs share a name and type.
    fn paired_count(plan: &DnsPlan) -> usize {
        let mut deletes: std::collections::BTreeMap<(String, String), usize> = Default::default();
        let mut creates: std::collections::BTreeMap<(String, String), usize> = Default::default();
        for change in &plan.changes {
            let key = change.key();
            match change {
                Change::Delete { .. } => *deletes.entry((key.name, key.rtype)).or_default() += 1,
                Change::Create { .. } => *creates.entry((key.name, key.rtype)).or_default() += 1,
                Change::Update { .. } => {}
            }
        }
        deletes
            .iter()
            .map(|(k, d)| (*d).min(creates.get(k).copied().unwrap_or(0)))
            .sum()
    }

    fn arb_set() -> impl Strategy<Value = RecordSet> {
        (
            prop::sample::select(vec!["a.example.com", "b.example.com"]),
            prop::sample::select(vec!["192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4"]),
        )
            .prop_map(|(name, value)| set(name, value, &[value], None))
    }

    fn arb_change() -> impl Strategy<Value = Change> {
        (0usize..3, 1usize..6, 1usize..30, 0u32..1000).prop_map(|(op, values, len, id)| {
            let value = "v".repeat(len);
            let refs: Vec<&str> = (0..values).map(|_| value.as_str()).collect();
            let record = set("app.example.com", &format!("n{id}"), &refs, None);
            match op {
                0 => Change::Create { record },
                1 => Change::Update {
                    from: record.clone(),
                    to: record,
                },
                _ => Change::Delete { record },
            }
        })
    }

    fn arb_limits() -> impl Strategy<Value = BatchLimits> {
        (
            prop::option::of(1usize..20),
            prop::option::of(10usize..60),
            prop::option::of(60usize..400),
            1usize..3,
        )
            .prop_map(
                |(max_changes, max_values, max_value_chars, update_factor)| BatchLimits {
                    max_changes,
                    max_values,
                    max_value_chars,
                    update_factor,
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn packing_keeps_every_change_in_order_within_the_limits_and_greedily(
            changes in prop::collection::vec(arb_change(), 0..60),
            limits in arb_limits(),
        ) {
            match batches(&changes, &limits) {
                Err(err) => {
                    let alone = changes.iter().any(|c| cost(c, &limits).exceeds(&limits).is_some());
                    prop_assert!(alone, "refused without an oversized change: {err}");
                }
                Ok(calls) => {
                    let flat: Vec<Change> = calls.iter().flatten().cloned().collect();
                    prop_assert_eq!(&flat, &changes);
                    for (index, call) in calls.iter().enumerate() {
                        prop_assert!(!call.is_empty());
                        let used = call.iter().fold(Cost::default(), |s, c| s.plus(cost(c, &limits)));
                        prop_assert!(used.exceeds(&limits).is_none());
                        // Greedy: the next call's first change did not fit.
                        if let Some(next) = calls.get(index + 1).and_then(|n| n.first()) {
                            prop_assert!(used.plus(cost(next, &limits)).exceeds(&limits).is_some());
                        }
                    }
                    prop_assert!(calls.len() >= lower_bound(&changes, &limits));
                }
            }
        }

        #[test]
        fn uniform_changes_take_the_fewest_calls_possible(
            count in 0usize..300,
            max_changes in 1usize..50,
        ) {
            let changes = creates(count, 1);
            let limits = BatchLimits::changes(max_changes);
            let calls = batches(&changes, &limits).expect("fits");
            prop_assert_eq!(calls.len(), count.div_ceil(max_changes));
            prop_assert_eq!(calls.len(), lower_bound(&changes, &limits));
        }

        #[test]
        fn pairing_writes_the_same_result_in_fewer_changes(
            desired in prop::collection::vec(arb_set(), 0..12),
            current in prop::collection::vec(arb_set(), 0..12),
        ) {
            let current: Vec<RecordSet> = current
                .into_iter()
                .map(|mut r| { r.owner = Some(OWNER.to_owned()); r })
                .collect();
            let planned = plan(OWNER, &desired, &current);
            let paired = pair_replacements(&planned.changes, None);
            let (c, _, d) = planned.counts();
            prop_assert_eq!(paired.len(), planned.changes.len() - paired_count(&planned));
            prop_assert!(paired_count(&planned) <= c.min(d));
            // Applying the paired changes gives what the plan gives.
            let mut records: std::collections::BTreeMap<RecordKey, RecordSet> = current
                .iter()
                .map(|r| (r.key(), r.normalized()))
                .collect();
            for change in &paired {
                match change {
                    Change::Create { record } => { records.insert(record.key(), record.clone()); }
                    Change::Update { from, to } => {
                        records.remove(&from.key());
                        records.insert(to.key(), to.clone());
                    }
                    Change::Delete { record } => { records.remove(&record.key()); }
                }
            }
            let expected: Vec<RecordSet> = crate::dnsplan::apply(&current, &planned);
            prop_assert_eq!(records.into_values().collect::<Vec<_>>(), expected);
        }

        #[test]
        fn write_order_is_a_permutation_of_the_plan(
            changes in prop::collection::vec(arb_change(), 0..30),
        ) {
            let plan = DnsPlan { changes: changes.clone(), conflicts: Vec::new() };
            let ordered = write_order(&plan, None);
            prop_assert_eq!(ordered.len(), changes.len());
            for change in &changes {
                prop_assert!(ordered.contains(change));
            }
            let ranks: Vec<u8> = ordered.iter().map(|c| match c {
                Change::Create { .. } => 0,
                Change::Update { .. } => 1,
                Change::Delete { .. } => 2,
            }).collect();
            prop_assert!(ranks.windows(2).all(|w| matches!(w, [a, b] if a <= b)));
        }
    }
}
