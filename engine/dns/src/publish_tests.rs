//! A health change makes again only the answers of the rrsets holding an
//! address whose status changed: after any sequence of health views, what a
//! handle serves (every rrset's answers, the degraded rrsets, the
//! last-known-good memory and its generation) is what a handle that makes
//! every rrset's answers again serves.

use std::net::IpAddr;

use neutral_core::model::{AllDownPolicy, NodeStatus};
use proptest::prelude::*;

use super::*;
use crate::health::{AnswerSet, HealthMove};
use crate::zone::{Record, RrSetChange, ZonePatch, ZoneRules, apply_patch};

const DOMAINS: [&str; 4] = ["a", "b", "c", "d"];

fn address(index: u8) -> IpAddr {
    IpAddr::from([192, 0, 2, index])
}

/// Four A rrsets over six addresses, overlapping, one record of weight 0.
fn zone() -> Zone {
    let members: [&[(u8, u32)]; 4] = [
        &[(1, 10), (2, 10), (3, 5)],
        &[(3, 1), (4, 1)],
        &[(4, 2), (5, 0), (6, 3)],
        &[(1, 1), (6, 1)],
    ];
    let rrsets = DOMAINS
        .iter()
        .zip(members)
        .map(|(domain, records)| {
            RrSetChange::replace(
                &format!("{domain}.example.com."),
                "A",
                30,
                records
                    .iter()
                    .map(|(last, weight)| Record::new(address(*last).to_string()).weighted(*weight))
                    .collect(),
            )
        })
        .collect();
    let zone = Zone::create("example.com.", &["ns1.example.com."]).expect("zone");
    apply_patch(&zone, &ZonePatch { rrsets }).expect("patch")
}

fn status() -> impl Strategy<Value = Option<NodeStatus>> {
    prop_oneof![
        Just(None),
        Just(Some(NodeStatus::Up)),
        Just(Some(NodeStatus::Down)),
        Just(Some(NodeStatus::Drain)),
    ]
}

fn policy() -> impl Strategy<Value = AllDownPolicy> {
    prop_oneof![
        Just(AllDownPolicy::LastKnownGood),
        Just(AllDownPolicy::FailOpen)
    ]
}

/// One step: the status of each of the six addresses, and the all-down
/// policy of each domain (mostly `last_known_good`, so that the memory
/// matters; now and then another, which makes everything again).
fn view() -> impl Strategy<Value = HealthView> {
    (
        proptest::collection::vec(status(), 6),
        proptest::collection::vec(
            prop_oneof![5 => Just(AllDownPolicy::LastKnownGood), 1 => policy()],
            4,
        ),
    )
        .prop_map(|(statuses, policies)| {
            let mut view = HealthView::new();
            for (index, status) in (1u8..).zip(statuses) {
                if let Some(status) = status {
                    view.set_node(address(index), status);
                }
            }
            for (domain, policy) in DOMAINS.iter().zip(policies) {
                view.set_all_down(&format!("{domain}.example.com"), policy);
            }
            view
        })
}

fn served(handle: &DnsHandle) -> Vec<Vec<AnswerSet>> {
    let snapshot = handle.shared.snapshot();
    snapshot
        .zones()
        .map(|zone| {
            zone.answers
                .iter()
                .map(|set| AnswerSet::clone(set))
                .collect()
        })
        .collect()
}

fn generation(handle: &DnsHandle) -> u64 {
    lock(&handle.shared.state).last_known_good_generation
}

/// `handle` serves what `everything` (which makes every rrset's answers
/// again) serves: answers, degraded rrsets, last-known-good memory and its
/// generation.
fn serve_alike(
    handle: &DnsHandle,
    everything: &DnsHandle,
    step: usize,
) -> Result<(), TestCaseError> {
    prop_assert_eq!(
        served(handle),
        served(everything),
        "answers at step {}",
        step
    );
    prop_assert_eq!(
        handle.degraded(),
        everything.degraded(),
        "modes at step {}",
        step
    );
    prop_assert_eq!(
        handle.last_known_good(),
        everything.last_known_good(),
        "memory at step {}",
        step
    );
    prop_assert_eq!(
        generation(handle),
        generation(everything),
        "generation at step {}",
        step
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn touched_rrsets_only_serve_what_making_everything_again_serves(
        views in proptest::collection::vec(view(), 1..16),
    ) {
        let zones: ZoneSet = [zone()].into_iter().collect();
        let (touched, _) = DnsHandle::detached(zones.clone());
        let (everything, _) = DnsHandle::detached(zones);
        for (step, view) in views.into_iter().enumerate() {
            touched.set_health(view.clone());
            everything.replace_health(view, false);
            serve_alike(&touched, &everything, step)?;
        }
    }
}

/// The moves that take the nodes of `from` (one per known address) to
/// those of `to`.
fn moves_between(from: &HealthView, to: &HealthView) -> Vec<HealthMove> {
    (1u8..=6)
        .map(address)
        .map(|at| HealthMove {
            leaving: from.status(at).map(|status| (at, status)),
            joining: to.status(at).map(|status| (at, status)),
        })
        .filter(|change| change.leaving != change.joining)
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Moving the nodes that changed (when the all-down policies did not)
    /// serves what replacing the whole view and making everything again
    /// serves.
    #[test]
    fn moved_nodes_serve_what_making_everything_again_serves(
        views in proptest::collection::vec(view(), 1..16),
    ) {
        let zones: ZoneSet = [zone()].into_iter().collect();
        let (moved, _) = DnsHandle::detached(zones.clone());
        let (everything, _) = DnsHandle::detached(zones);
        prop_assert!(!moved.move_health(&[]), "no view to move nodes in yet");
        let mut previous: Option<HealthView> = None;
        for (step, view) in views.into_iter().enumerate() {
            // Same all-down policies: the views differ only by addresses.
            match &previous {
                Some(before) if before.changed_addresses(&view).is_some() => {
                    prop_assert!(moved.move_health(&moves_between(before, &view)));
                }
                _ => moved.set_health(view.clone()),
            }
            everything.replace_health(view.clone(), false);
            serve_alike(&moved, &everything, step)?;
            previous = Some(view);
        }
    }
}

#[test]
fn one_address_changing_makes_again_only_the_rrsets_holding_it() {
    let zones: ZoneSet = [zone()].into_iter().collect();
    let (handle, _) = DnsHandle::detached(zones);
    let mut view = HealthView::new();
    for index in 1..=6 {
        view.set_node(address(index), NodeStatus::Up);
    }
    handle.set_health(view.clone());
    let before = handle.shared.snapshot();
    view.set_node(address(2), NodeStatus::Down);
    handle.set_health(view);
    let after = handle.shared.snapshot();
    let (before, after) = (
        &before.zones().next().unwrap().answers,
        &after.zones().next().unwrap().answers,
    );
    // Only `a` holds 192.0.2.2.
    let kept: Vec<bool> = before
        .iter()
        .zip(after)
        .map(|(b, a)| Arc::ptr_eq(b, a))
        .collect();
    assert_eq!(kept, [false, true, true, true]);
    assert_eq!(after[0].indexes, [0, 2], "a answers without its record 2");
}
