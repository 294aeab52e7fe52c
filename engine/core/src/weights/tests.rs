//! Example tests, one per rule, the weight side of the five flows, snapshots of
//! richer scenarios and property tests for [`super::compute`].

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use expect_test::expect;
use proptest::prelude::*;

use super::incremental::{
    Changes, Incremental, Recomputed, compute_incremental, compute_incremental_in,
};
use super::packed::PackedReport;
use super::*;
use crate::model::{CloudProvider, NodeMode, NodePoolDecl, Probe};

const NOW: i64 = 1_000_000;
const DOMAIN: &str = "app.example.com";

fn region(name: &str, base_weight: u32) -> Region {
    Region {
        name: name.to_owned(),
        provider: CloudProvider::Edge,
        min_nodes: 1,
        max_nodes: 5,
        base_weight,
        state: DeclaredRegionState::Up,
        failover: vec![],
    }
}

fn policy(regions: &[(&str, u32)]) -> GtmPolicy {
    GtmPolicy {
        name: "app".to_owned(),
        domain: DOMAIN.to_owned(),
        zone: "example.com".to_owned(),
        record_type: RecordType::A,
        ttl: 30,
        dns: DnsBackendKind::Embedded,
        min_ready_nodes: 1,
        regions: regions.iter().map(|&(r, w)| (r.to_owned(), w)).collect(),
        all_down: AllDownPolicy::FailOpen,
        probe: Probe::default(),
        slow_start: None,
        health: crate::model::HealthPolicy::default(),
    }
}

/// Regions jp (100), sg (50) and us (25), each with `desired_nodes = 1`, and
/// one domain served by all three at their own base weights.
fn world() -> Declarations {
    let mut decl = Declarations::default();
    for (name, base) in [("jp", 100), ("sg", 50), ("us", 25)] {
        decl.regions.insert(name.to_owned(), region(name, base));
        set_desired(&mut decl, name, 1);
    }
    decl.gtm.insert(DOMAIN.to_owned(), policy(&[]));
    decl
}

fn set_desired(decl: &mut Declarations, region: &str, desired_nodes: u32) {
    decl.node_pools.insert(
        region.to_owned(),
        NodePoolDecl {
            region: region.to_owned(),
            desired_nodes,
        },
    );
}

fn gtm(decl: &mut Declarations) -> &mut GtmPolicy {
    decl.gtm.get_mut(DOMAIN).unwrap()
}

fn node(id: &str, region: &str, address: &str, status: NodeStatus, since_secs: i64) -> Node {
    Node {
        id: id.to_owned(),
        region: region.to_owned(),
        address: address.parse().unwrap(),
        status,
        status_since: Timestamp::from_secs(since_secs),
        mode: NodeMode::ContainerdOnly,
        last_heartbeat: None,
        metrics: None,
    }
}

fn up(id: &str, region: &str, address: &str) -> Node {
    node(id, region, address, NodeStatus::Up, 0)
}

fn run(decl: &Declarations, nodes: &[Node]) -> WeightsReport {
    run_after(decl, nodes, &BTreeMap::new(), NOW)
}

fn run_after(
    decl: &Declarations,
    nodes: &[Node],
    previous: &BTreeMap<Arc<str>, Arc<DomainWeights>>,
    now_secs: i64,
) -> WeightsReport {
    compute(
        decl,
        nodes,
        previous,
        Timestamp::from_secs(now_secs),
        &WeightSettings::default(),
    )
}

fn domain(report: &WeightsReport) -> &DomainWeights {
    report.domains.get(DOMAIN).unwrap()
}

fn region_weight<'a>(report: &'a WeightsReport, name: &str) -> &'a RegionWeight {
    domain(report)
        .regions
        .iter()
        .find(|r| &*r.region == name)
        .unwrap()
}

/// `node_id=weight` of every answer, in order.
fn answers(report: &WeightsReport) -> Vec<String> {
    domain(report)
        .answers
        .iter()
        .map(|a| format!("{}={}", a.node_id, a.weight))
        .collect()
}

// Rule 1: effective = round(base × min(1, ready / expected)), 0 when down.

#[test]
fn capacity_factor_scales_weight_by_ready_over_desired() {
    let mut decl = world();
    set_desired(&mut decl, "jp", 2);
    let report = run(&decl, &[up("jp-1", "jp", "127.0.0.2")]);
    let jp = region_weight(&report, "jp");
    assert_eq!(
        (jp.health, jp.ready, jp.expected, jp.effective),
        (RegionHealth::Degraded, 1, 2, 50)
    );
    assert_eq!(
        &*jp.reason,
        "jp: 100 × min(1, 1/2 ready) = 50; degraded: 1 ready < 2 desired, >= min_ready_nodes 1; \
         ready jp-1"
    );
}

#[test]
fn ready_beyond_desired_never_exceeds_base_weight() {
    let report = run(
        &world(),
        &[up("jp-1", "jp", "127.0.0.2"), up("jp-2", "jp", "127.0.0.3")],
    );
    let jp = region_weight(&report, "jp");
    assert_eq!(
        (jp.health, jp.ready, jp.effective),
        (RegionHealth::Up, 2, 100)
    );
}

#[test]
fn effective_weight_rounds_half_up_on_exact_integers() {
    let cases = [
        // (base, desired, ready, expected effective)
        (1, 2, 1, 1),      // 0.5 -> 1
        (3, 2, 1, 2),      // 1.5 -> 2
        (100, 3, 1, 33),   // 33.33 -> 33
        (100, 3, 2, 67),   // 66.67 -> 67
        (1000, 7, 3, 429), // 428.57 -> 429
    ];
    for (base, desired, ready, expected) in cases {
        let mut decl = world();
        decl.regions.get_mut("jp").unwrap().base_weight = base;
        set_desired(&mut decl, "jp", desired);
        let nodes: Vec<Node> = (0..ready)
            .map(|i| up(&format!("jp-{i}"), "jp", "127.0.0.2"))
            .collect();
        let report = run(&decl, &nodes);
        assert_eq!(
            region_weight(&report, "jp").effective,
            expected,
            "base {base}, {ready}/{desired} ready"
        );
    }
}

#[test]
fn zero_desired_nodes_still_expects_one() {
    let mut decl = world();
    set_desired(&mut decl, "jp", 0);
    let report = run(&decl, &[up("jp-1", "jp", "127.0.0.2")]);
    let jp = region_weight(&report, "jp");
    assert_eq!((jp.expected, jp.effective), (1, 100));
}

#[test]
fn region_below_min_ready_nodes_gets_weight_zero() {
    let mut decl = world();
    gtm(&mut decl).min_ready_nodes = 2;
    set_desired(&mut decl, "jp", 3);
    let report = run(
        &decl,
        &[
            up("jp-1", "jp", "127.0.0.2"),
            up("sg-1", "sg", "127.0.0.3"),
            up("sg-2", "sg", "127.0.0.4"),
        ],
    );
    let jp = region_weight(&report, "jp");
    assert_eq!((jp.health, jp.effective), (RegionHealth::Down, 0));
    assert_eq!(
        &*jp.reason,
        "jp: down (1 ready < min_ready_nodes 2) -> 0; ready jp-1"
    );
    assert_eq!(answers(&report), ["sg-1=25", "sg-2=25"]);
}

#[test]
fn declared_down_region_gets_weight_zero() {
    let mut decl = world();
    decl.regions.get_mut("jp").unwrap().state = DeclaredRegionState::Down;
    let report = run(
        &decl,
        &[up("jp-1", "jp", "127.0.0.2"), up("sg-1", "sg", "127.0.0.3")],
    );
    let jp = region_weight(&report, "jp");
    assert_eq!(jp.effective, 0);
    assert!(
        jp.reason
            .starts_with("jp: down (declared state: down) -> 0"),
        "{}",
        jp.reason
    );
    assert_eq!(answers(&report), ["sg-1=50"]);
}

#[test]
fn domain_override_replaces_region_base_weight_and_limits_regions() {
    let mut decl = world();
    gtm(&mut decl).regions = [("jp".to_owned(), 10)].into();
    let report = run(
        &decl,
        &[up("jp-1", "jp", "127.0.0.2"), up("sg-1", "sg", "127.0.0.3")],
    );
    assert_eq!(domain(&report).regions.len(), 1);
    assert_eq!(answers(&report), ["jp-1=10"]);
}

// Rule 2: drained and down nodes are never answers and never ready.

#[test]
fn drained_node_is_never_an_answer() {
    let mut decl = world();
    set_desired(&mut decl, "jp", 2);
    let report = run(
        &decl,
        &[
            up("jp-1", "jp", "127.0.0.2"),
            node("jp-2", "jp", "127.0.0.3", NodeStatus::Drain, 5),
        ],
    );
    assert_eq!(answers(&report), ["jp-1=50"]);
    let jp = region_weight(&report, "jp");
    assert_eq!(jp.ready, 1);
    assert!(
        jp.reason.ends_with("; ready jp-1; drained jp-2"),
        "{}",
        jp.reason
    );
}

#[test]
fn down_node_is_never_an_answer() {
    let mut decl = world();
    set_desired(&mut decl, "jp", 2);
    let report = run(
        &decl,
        &[
            up("jp-1", "jp", "127.0.0.2"),
            node("jp-2", "jp", "127.0.0.3", NodeStatus::Down, 5),
        ],
    );
    assert_eq!(answers(&report), ["jp-1=50"]);
    assert_eq!(region_weight(&report, "jp").ready, 1);
}

// Rule 3: split over ready nodes of the right family by largest remainder.

#[test]
fn region_weight_splits_over_ready_nodes_by_largest_remainder_in_id_order() {
    let mut decl = world();
    set_desired(&mut decl, "jp", 3);
    let report = run(
        &decl,
        &[
            up("jp-c", "jp", "127.0.0.4"),
            up("jp-a", "jp", "127.0.0.2"),
            up("jp-b", "jp", "127.0.0.3"),
        ],
    );
    assert_eq!(answers(&report), ["jp-a=34", "jp-b=33", "jp-c=33"]);
    let first = domain(&report).answers.first().unwrap();
    assert_eq!(
        &*first.reason,
        "jp 100 split over 3 ready nodes (largest remainder, by node id)"
    );
}

#[test]
fn node_whose_share_rounds_to_zero_is_left_out_with_a_reason() {
    let mut decl = world();
    decl.regions.get_mut("jp").unwrap().base_weight = 1;
    let report = run(
        &decl,
        &[up("jp-1", "jp", "127.0.0.2"), up("jp-2", "jp", "127.0.0.3")],
    );
    assert_eq!(answers(&report), ["jp-1=1"]);
    assert!(
        domain(&report)
            .reasons
            .contains(&"jp-2 gets 0: jp 1 split over 2 ready nodes".to_owned())
    );
}

#[test]
fn many_zero_shares_make_one_reason_naming_a_few() {
    let mut decl = world();
    decl.regions.get_mut("jp").unwrap().base_weight = 2;
    set_desired(&mut decl, "jp", 9);
    let nodes: Vec<Node> = (1..=9)
        .map(|i| up(&format!("jp-{i}"), "jp", &format!("127.0.0.{}", i + 1)))
        .collect();
    let report = run(&decl, &nodes);
    assert_eq!(answers(&report), ["jp-1=1", "jp-2=1"]);
    let zero: Vec<&String> = domain(&report)
        .reasons
        .iter()
        .filter(|r| r.contains("get 0"))
        .collect();
    expect_test::expect![[r#"
        [
            "7 nodes get 0 (jp-3, jp-4, jp-5, jp-6, jp-7, and 2 more): jp 2 split over 9 ready nodes",
        ]
    "#]]
    .assert_debug_eq(&zero);
}

#[test]
fn ipv6_node_never_appears_in_an_a_record() {
    let mut decl = world();
    set_desired(&mut decl, "jp", 2);
    let nodes = [
        up("jp-1", "jp", "127.0.0.2"),
        up("jp-6", "jp", "2001:db8::6"),
    ];
    let report = run(&decl, &nodes);
    assert_eq!(answers(&report), ["jp-1=50"]);
    let jp = region_weight(&report, "jp");
    assert_eq!(jp.ready, 1, "an IPv6 node is not ready for an A record");
    assert!(
        jp.reason.ends_with("; not in A records jp-6"),
        "{}",
        jp.reason
    );
    assert!(domain(&report).reasons.contains(
        &"jp-6 (2001:db8::6) skipped: an IPv6 address never appears in an A record".to_owned()
    ));

    gtm(&mut decl).record_type = RecordType::Aaaa;
    assert_eq!(answers(&run(&decl, &nodes)), ["jp-6=50"]);
}

// Rule 4: every region at 0.

fn all_down_nodes() -> Vec<Node> {
    vec![
        node("jp-1", "jp", "127.0.0.2", NodeStatus::Down, 10),
        node("jp-2", "jp", "127.0.0.3", NodeStatus::Down, 10),
        node("jp-3", "jp", "127.0.0.4", NodeStatus::Drain, 10),
        node("sg-1", "sg", "127.0.0.5", NodeStatus::Down, 10),
    ]
}

#[test]
fn fail_open_serves_all_non_drained_nodes_at_base_weight() {
    let report = run(&world(), &all_down_nodes());
    assert_eq!(domain(&report).mode, AnswerMode::FailOpen);
    assert_eq!(answers(&report), ["jp-1=50", "jp-2=50", "sg-1=50"]);
    assert_eq!(
        &*domain(&report).answers.first().unwrap().reason,
        "fail_open: jp base 100 split over 2 non-drained nodes; this one is down"
    );
}

#[test]
fn fail_open_leaves_regions_declared_down_out() {
    let mut decl = world();
    decl.regions.get_mut("jp").unwrap().state = DeclaredRegionState::Down;
    let report = run(&decl, &all_down_nodes());
    assert_eq!(answers(&report), ["sg-1=50"]);
    assert!(
        domain(&report)
            .reasons
            .contains(&"fail_open leaves jp out: declared state: down".to_owned())
    );
}

#[test]
fn last_known_good_keeps_previous_answers() {
    let mut decl = world();
    gtm(&mut decl).all_down = AllDownPolicy::LastKnownGood;
    let healthy = run(
        &decl,
        &[up("jp-1", "jp", "127.0.0.2"), up("sg-1", "sg", "127.0.0.5")],
    );
    assert_eq!(answers(&healthy), ["jp-1=100", "sg-1=50"]);

    let nodes = [
        node("jp-1", "jp", "127.0.0.2", NodeStatus::Down, 10),
        node("sg-1", "sg", "127.0.0.5", NodeStatus::Down, 10),
    ];
    let outage = run_after(&decl, &nodes, &healthy.domains, NOW);
    assert_eq!(domain(&outage).mode, AnswerMode::LastKnownGood);
    assert_eq!(answers(&outage), ["jp-1=100", "sg-1=50"]);
    assert_eq!(
        &*domain(&outage).answers.first().unwrap().reason,
        "last known good: jp 100 split over 1 ready node"
    );

    // A second report in the outage carries the same answers forward.
    let later = run_after(&decl, &nodes, &outage.domains, NOW + 60);
    assert_eq!(domain(&later).mode, AnswerMode::LastKnownGood);
    assert_eq!(domain(&later).answers, domain(&outage).answers);
}

#[test]
fn last_known_good_never_brings_back_a_drained_or_removed_node() {
    let mut decl = world();
    gtm(&mut decl).all_down = AllDownPolicy::LastKnownGood;
    let healthy = run(
        &decl,
        &[
            up("jp-1", "jp", "127.0.0.2"),
            up("jp-2", "jp", "127.0.0.3"),
            up("sg-1", "sg", "127.0.0.5"),
        ],
    );
    let nodes = [
        node("jp-1", "jp", "127.0.0.2", NodeStatus::Down, 10),
        node("jp-2", "jp", "127.0.0.3", NodeStatus::Drain, 10),
    ];
    let outage = run_after(&decl, &nodes, &healthy.domains, NOW);
    assert_eq!(answers(&outage), ["jp-1=50"]);
    let reasons = &domain(&outage).reasons;
    assert!(reasons.contains(&"previous answer jp-2 (127.0.0.3) not kept: drained".to_owned()));
    assert!(
        reasons.contains(
            &"previous answer sg-1 (127.0.0.5) not kept: no longer registered".to_owned()
        )
    );
}

#[test]
fn kept_answers_respect_the_operator_declaring_a_region_down() {
    let mut decl = world();
    let nodes = [
        up("jp-1", "jp", "127.0.0.2"),
        up("sg-1", "sg", "127.0.0.5"),
        up("us-1", "us", "127.0.0.8"),
    ];
    let healthy = run(&decl, &nodes);
    // The monitor loses two of three nodes at once while the operator takes
    // jp out: the guard holds sg-1 but not jp-1.
    decl.regions.get_mut("jp").unwrap().state = DeclaredRegionState::Down;
    let suspect = [
        node("jp-1", "jp", "127.0.0.2", NodeStatus::Down, NOW),
        node("sg-1", "sg", "127.0.0.5", NodeStatus::Down, NOW),
        up("us-1", "us", "127.0.0.8"),
    ];
    let report = run_after(&decl, &suspect, &healthy.domains, NOW);
    assert_eq!(domain(&report).mode, AnswerMode::SplitBrainHold);
    assert_eq!(answers(&report), ["sg-1=50", "us-1=25"]);
    assert!(domain(&report).reasons.contains(
        &"previous answer jp-1 (127.0.0.2) not kept: region jp is declared state: down".to_owned()
    ));
}

#[test]
fn last_known_good_without_previous_answers_fails_open_and_says_so() {
    let mut decl = world();
    gtm(&mut decl).all_down = AllDownPolicy::LastKnownGood;
    let first = run(&decl, &all_down_nodes());
    assert_eq!(domain(&first).mode, AnswerMode::FailOpen);
    assert_eq!(answers(&first), ["jp-1=50", "jp-2=50", "sg-1=50"]);
    assert!(
        domain(&first)
            .reasons
            .iter()
            .any(|r| r.contains("last_known_good, but there is no previous report; failing open")),
        "{:?}",
        domain(&first).reasons
    );
    // Fail-open answers are not known good: the next report fails open again
    // from the current nodes instead of keeping them.
    let mut nodes = all_down_nodes();
    nodes.retain(|n| n.id != "jp-2");
    let second = run_after(&decl, &nodes, &first.domains, NOW + 10);
    assert_eq!(domain(&second).mode, AnswerMode::FailOpen);
    assert_eq!(answers(&second), ["jp-1=100", "sg-1=50"]);
    assert!(
        domain(&second)
            .reasons
            .iter()
            .any(|r| r.contains("the previous report was fail_open, not known good"))
    );
}

#[test]
fn nothing_to_serve_is_empty() {
    let report = run(
        &world(),
        &[node("jp-1", "jp", "127.0.0.2", NodeStatus::Drain, 0)],
    );
    assert_eq!(domain(&report).mode, AnswerMode::Empty);
    assert!(domain(&report).answers.is_empty());
    assert_eq!(
        domain(&report).reasons.last().unwrap(),
        "nothing to serve: no node can be answered"
    );
}

// Rule 5: slow start.

#[test]
fn slow_start_ramps_recovering_region() {
    let mut decl = world();
    gtm(&mut decl).slow_start = Some(Duration::from_secs(60));
    let back_at = NOW - 12;
    let nodes = [
        node("jp-1", "jp", "127.0.0.2", NodeStatus::Up, back_at),
        up("sg-1", "sg", "127.0.0.5"),
    ];
    let report = run(&decl, &nodes);
    let jp = region_weight(&report, "jp");
    assert_eq!(jp.effective, 20);
    assert!(
        jp.reason
            .contains("; slow start 12s of 60s: 100 × 12s/60s = 20"),
        "{}",
        jp.reason
    );
    // sg came up long ago and gets its full weight.
    assert_eq!(region_weight(&report, "sg").effective, 50);

    let ramp: Vec<u32> = [0, 1, 30, 59, 60, 600]
        .iter()
        .map(|elapsed| {
            region_weight(
                &run_after(&decl, &nodes, &BTreeMap::new(), back_at + elapsed),
                "jp",
            )
            .effective
        })
        .collect();
    // At least 1 the moment the region is back, full weight once the ramp ends.
    assert_eq!(ramp, [1, 2, 50, 98, 100, 100]);
}

// Rule 6: split-brain guard.

fn six_nodes(down_since: i64) -> Vec<Node> {
    vec![
        node("jp-1", "jp", "127.0.0.2", NodeStatus::Down, down_since),
        node("jp-2", "jp", "127.0.0.3", NodeStatus::Down, down_since),
        node("sg-1", "sg", "127.0.0.5", NodeStatus::Down, down_since),
        node("sg-2", "sg", "127.0.0.6", NodeStatus::Down, down_since),
        up("us-1", "us", "127.0.0.8"),
        up("us-2", "us", "127.0.0.9"),
        node("us-3", "us", "127.0.0.10", NodeStatus::Drain, down_since),
    ]
}

#[test]
fn split_brain_guard_keeps_previous_answers() {
    let mut decl = world();
    for r in ["jp", "sg", "us"] {
        set_desired(&mut decl, r, 2);
    }
    let healthy_nodes: Vec<Node> = six_nodes(0)
        .into_iter()
        .map(|mut n| {
            n.status = NodeStatus::Up;
            n
        })
        .filter(|n| n.id != "us-3")
        .collect();
    let healthy = run(&decl, &healthy_nodes);
    assert_eq!(
        answers(&healthy),
        [
            "jp-1=50", "jp-2=50", "sg-1=25", "sg-2=25", "us-1=13", "us-2=12"
        ]
    );

    let report = run_after(&decl, &six_nodes(NOW - 30), &healthy.domains, NOW);
    let guard = report.split_brain.as_ref().unwrap();
    assert_eq!((guard.went_down, guard.total), (4, 6));
    assert_eq!(
        guard.message,
        "split-brain guard: 4 of 6 nodes (67%) went down within 60s; suspecting the monitor, \
         keeping last known good answers"
    );
    assert_eq!(domain(&report).mode, AnswerMode::SplitBrainHold);
    assert_eq!(answers(&report), answers(&healthy));
    // The region weights still show what health alone would give.
    assert_eq!(region_weight(&report, "jp").effective, 0);
}

#[test]
fn split_brain_guard_ignores_old_failures_and_small_fleets() {
    let settings = WeightSettings::default();
    // The same four nodes went down two minutes ago: outside the window.
    let old = compute(
        &world(),
        &six_nodes(NOW - 120),
        &BTreeMap::new(),
        Timestamp::from_secs(NOW),
        &settings,
    );
    assert!(old.split_brain.is_none());
    // Two of two nodes is 100 %, but below split_brain_min_nodes.
    let small = [
        node("jp-1", "jp", "127.0.0.2", NodeStatus::Down, NOW),
        node("sg-1", "sg", "127.0.0.5", NodeStatus::Down, NOW),
    ];
    assert!(run(&world(), &small).split_brain.is_none());
    // Exactly the share (3 of 6 = 50 %) does not trip: the share must be exceeded.
    let mut half = six_nodes(NOW - 30);
    half.first_mut().unwrap().status = NodeStatus::Up;
    assert!(run(&world(), &half).split_brain.is_none());
}

#[test]
fn split_brain_guard_computes_domains_without_previous_normally() {
    let report = run(&world(), &six_nodes(NOW - 30));
    assert!(report.split_brain.is_some());
    assert_eq!(domain(&report).mode, AnswerMode::Normal);
    assert_eq!(answers(&report), ["us-1=13", "us-2=12"]);
    assert!(domain(&report).reasons.iter().any(|r| r
        == "split-brain guard tripped, but there is no previous report; computing from current health"));
}

// Rule 7: reasons everywhere, shown by a full rendering.

#[test]
fn every_weight_carries_its_reason() {
    let mut decl = world();
    set_desired(&mut decl, "jp", 2);
    gtm(&mut decl).min_ready_nodes = 1;
    gtm(&mut decl).slow_start = Some(Duration::from_secs(60));
    let nodes = [
        node("jp-1", "jp", "127.0.0.2", NodeStatus::Up, NOW - 45),
        node("jp-2", "jp", "127.0.0.3", NodeStatus::Down, NOW - 300),
        node("sg-1", "sg", "127.0.0.5", NodeStatus::Up, 0),
        node("sg-2", "sg", "127.0.0.6", NodeStatus::Drain, 0),
        node("sg-6", "sg", "2001:db8::6", NodeStatus::Up, 0),
    ];
    let report = run(&decl, &nodes);
    let d = domain(&report);
    assert!(d.regions.iter().all(|r| !r.reason.is_empty()));
    assert!(d.answers.iter().all(|a| !a.reason.is_empty()));
    assert!(!d.reasons.is_empty());
    expect![[r#"
        app.example.com A ttl 30 via embedded: normal
          region jp degraded base 100 ready 1/2 -> 38  (jp: 100 × min(1, 1/2 ready) = 50; degraded: 1 ready < 2 desired, >= min_ready_nodes 1; slow start 45s of 60s: 50 × 45s/60s = 38; ready jp-1; down jp-2)
          region sg up       base 50 ready 1/1 -> 50  (sg: 50 × min(1, 1/1 ready) = 50; up: 1 ready >= 1 desired; ready sg-1; drained sg-2; not in A records sg-6)
          region us down     base 25 ready 0/1 -> 0  (us: down (0 ready < min_ready_nodes 1) -> 0)
          answer jp-1 127.0.0.2 38  (jp 38 split over 1 ready node)
          answer sg-1 127.0.0.5 50  (sg 50 split over 1 ready node)
          note sg-6 (2001:db8::6) skipped: an IPv6 address never appears in an A record
          note weights from health: jp 38, sg 50, us 0
    "#]]
    .assert_eq(&compact(&report));
}

// The weight side of the five flows of DESIGN.md, one region jp serving at
// first; sg and us join for the failover flow.

fn jp_only() -> Declarations {
    let mut decl = world();
    gtm(&mut decl).regions = [("jp".to_owned(), 100)].into();
    decl
}

#[test]
fn flow_bootstrap_first_node_is_the_only_answer() {
    let decl = jp_only();
    let before = run(&decl, &[]);
    assert_eq!(domain(&before).mode, AnswerMode::Empty);
    let report = run(&decl, &[up("jp-1", "jp", "127.0.0.2")]);
    expect![[r#"
        app.example.com A ttl 30 via embedded: normal
          region jp up       base 100 ready 1/1 -> 100  (jp: 100 × min(1, 1/1 ready) = 100; up: 1 ready >= 1 desired; ready jp-1)
          answer jp-1 127.0.0.2 100  (jp 100 split over 1 ready node)
          note weights from health: jp 100
    "#]]
    .assert_eq(&compact(&report));
}

#[test]
fn flow_scale_out_splits_weight_over_the_new_node() {
    let mut decl = jp_only();
    set_desired(&mut decl, "jp", 2);
    // desired_nodes = 2 committed, the second node not registered yet.
    let pending = run(&decl, &[up("jp-1", "jp", "127.0.0.2")]);
    assert_eq!(answers(&pending), ["jp-1=50"]);
    let report = run(
        &decl,
        &[up("jp-1", "jp", "127.0.0.2"), up("jp-2", "jp", "127.0.0.3")],
    );
    expect![[r#"
        app.example.com A ttl 30 via embedded: normal
          region jp up       base 100 ready 2/2 -> 100  (jp: 100 × min(1, 2/2 ready) = 100; up: 2 ready >= 2 desired; ready jp-1, jp-2)
          answer jp-1 127.0.0.2 50  (jp 100 split over 2 ready nodes)
          answer jp-2 127.0.0.3 50  (jp 100 split over 2 ready nodes)
          note weights from health: jp 100
    "#]]
    .assert_eq(&compact(&report));
}

#[test]
fn flow_scale_in_drops_the_drained_node() {
    let mut decl = jp_only();
    set_desired(&mut decl, "jp", 1);
    let report = run(
        &decl,
        &[
            up("jp-1", "jp", "127.0.0.2"),
            node("jp-2", "jp", "127.0.0.3", NodeStatus::Drain, NOW - 5),
        ],
    );
    expect![[r#"
        app.example.com A ttl 30 via embedded: normal
          region jp up       base 100 ready 1/1 -> 100  (jp: 100 × min(1, 1/1 ready) = 100; up: 1 ready >= 1 desired; ready jp-1; drained jp-2)
          answer jp-1 127.0.0.2 100  (jp 100 split over 1 ready node)
          note weights from health: jp 100
    "#]]
    .assert_eq(&compact(&report));
}

#[test]
fn flow_node_failure_drops_the_node_at_once() {
    let mut decl = jp_only();
    set_desired(&mut decl, "jp", 2);
    let report = run(
        &decl,
        &[
            up("jp-1", "jp", "127.0.0.2"),
            node("jp-2", "jp", "127.0.0.3", NodeStatus::Down, NOW),
        ],
    );
    expect![[r#"
        app.example.com A ttl 30 via embedded: normal
          region jp degraded base 100 ready 1/2 -> 50  (jp: 100 × min(1, 1/2 ready) = 50; degraded: 1 ready < 2 desired, >= min_ready_nodes 1; ready jp-1; down jp-2)
          answer jp-1 127.0.0.2 50  (jp 50 split over 1 ready node)
          note weights from health: jp 50
    "#]]
    .assert_eq(&compact(&report));
}

#[test]
fn flow_region_failover_moves_traffic_and_brings_it_back() {
    let decl = world();
    let healthy_nodes = [
        up("jp-1", "jp", "127.0.0.2"),
        up("sg-1", "sg", "127.0.0.5"),
        up("us-1", "us", "192.0.2.8"),
    ];
    let healthy = run(&decl, &healthy_nodes);
    assert_eq!(answers(&healthy), ["jp-1=100", "sg-1=50", "us-1=25"]);

    let mut failed = healthy_nodes.clone();
    failed[0] = node("jp-1", "jp", "127.0.0.2", NodeStatus::Down, NOW - 5);
    let report = run_after(&decl, &failed, &healthy.domains, NOW);
    expect![[r#"
        app.example.com A ttl 30 via embedded: normal
          region jp down     base 100 ready 0/1 -> 0  (jp: down (0 ready < min_ready_nodes 1) -> 0; down jp-1)
          region sg up       base 50 ready 1/1 -> 50  (sg: 50 × min(1, 1/1 ready) = 50; up: 1 ready >= 1 desired; ready sg-1)
          region us up       base 25 ready 1/1 -> 25  (us: 25 × min(1, 1/1 ready) = 25; up: 1 ready >= 1 desired; ready us-1)
          answer sg-1 127.0.0.5 50  (sg 50 split over 1 ready node)
          answer us-1 192.0.2.8 25  (us 25 split over 1 ready node)
          note weights from health: jp 0, sg 50, us 25
    "#]]
    .assert_eq(&compact(&report));

    let mut recovered = healthy_nodes.clone();
    recovered[0] = node("jp-1", "jp", "127.0.0.2", NodeStatus::Up, NOW + 60);
    let back = run_after(&decl, &recovered, &report.domains, NOW + 60);
    assert_eq!(answers(&back), ["jp-1=100", "sg-1=50", "us-1=25"]);
}

#[test]
fn compact_renders_held_answers_and_the_split_brain_line_first() {
    let decl = world();
    let healthy = run(
        &decl,
        &[
            up("jp-1", "jp", "127.0.0.2"),
            up("sg-1", "sg", "127.0.0.5"),
            up("us-1", "us", "127.0.0.8"),
        ],
    );
    let nodes = [
        node("jp-1", "jp", "127.0.0.2", NodeStatus::Down, NOW - 1),
        node("sg-1", "sg", "127.0.0.5", NodeStatus::Down, NOW - 1),
        up("us-1", "us", "127.0.0.8"),
    ];
    let report = run_after(&decl, &nodes, &healthy.domains, NOW);
    expect![[r#"
        split-brain guard: 2 of 3 nodes (67%) went down within 60s; suspecting the monitor, keeping last known good answers
        app.example.com A ttl 30 via embedded: split_brain_hold
          region jp down     base 100 ready 0/1 -> 0  (jp: down (0 ready < min_ready_nodes 1) -> 0; down jp-1)
          region sg down     base 50 ready 0/1 -> 0  (sg: down (0 ready < min_ready_nodes 1) -> 0; down sg-1)
          region us up       base 25 ready 1/1 -> 25  (us: 25 × min(1, 1/1 ready) = 25; up: 1 ready >= 1 desired; ready us-1)
          answer jp-1 127.0.0.2 100  (held by split-brain guard: jp 100 split over 1 ready node)
          answer sg-1 127.0.0.5 50  (held by split-brain guard: sg 50 split over 1 ready node)
          answer us-1 127.0.0.8 25  (held by split-brain guard: us 25 split over 1 ready node)
          note split-brain guard tripped: keeping the 3 answers of the previous report instead of the weights below
    "#]]
    .assert_eq(&compact(&report));
    assert_eq!(compact(&WeightsReport::default()), "no domains\n");
}

// Properties.

#[derive(Clone, Debug)]
struct Scenario {
    decl: Declarations,
    before: Vec<Node>,
    nodes: Vec<Node>,
    now: Timestamp,
    settings: WeightSettings,
}

const REGION_NAMES: [&str; 4] = ["r0", "r1", "r2", "r3"];

fn timestamp() -> impl Strategy<Value = Timestamp> {
    prop_oneof![
        4 => (NOW * 1000 - 600_000..NOW * 1000 + 600_000).prop_map(Timestamp::from_millis),
        1 => Just(Timestamp::from_millis(i64::MIN)),
        1 => Just(Timestamp::from_millis(i64::MAX)),
        1 => any::<i64>().prop_map(Timestamp::from_millis),
    ]
}

fn status() -> impl Strategy<Value = NodeStatus> {
    prop_oneof![
        3 => Just(NodeStatus::Up),
        1 => Just(NodeStatus::Down),
        1 => Just(NodeStatus::Drain),
    ]
}

fn address() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        3 => any::<u32>().prop_map(|a| IpAddr::from(a.to_be_bytes())),
        1 => any::<u128>().prop_map(|a| IpAddr::from(a.to_be_bytes())),
    ]
}

/// Nodes with unique ids, in random regions (one of them undeclared).
fn nodes() -> impl Strategy<Value = Vec<Node>> {
    prop::collection::vec((0usize..5, address(), status(), timestamp()), 0..14).prop_map(|specs| {
        specs
            .into_iter()
            .enumerate()
            .map(|(i, (region, address, status, since))| Node {
                id: format!("n{i}"),
                region: REGION_NAMES
                    .get(region)
                    .copied()
                    .unwrap_or("undeclared")
                    .to_owned(),
                address,
                status,
                status_since: since,
                mode: NodeMode::ContainerdOnly,
                last_heartbeat: None,
                metrics: None,
            })
            .collect()
    })
}

fn declarations() -> impl Strategy<Value = Declarations> {
    let region_spec = (
        0u32..=1000,
        prop::bool::weighted(0.15),
        0u32..3,
        prop::option::of(0u32..5),
    );
    let policy_spec = (
        prop::collection::btree_map(0usize..5, 0u32..=1000, 0..4),
        prop_oneof![Just(0u32), Just(1), Just(1), Just(2), Just(3)],
        any::<bool>(),
        prop::bool::weighted(0.25),
        prop::option::of(0u64..120_000),
    );
    (
        prop::collection::vec(region_spec, 4),
        prop::collection::vec(policy_spec, 1..3),
    )
        .prop_map(|(regions, policies)| {
            let mut decl = Declarations::default();
            for (name, (base, down, min_nodes, desired)) in REGION_NAMES.iter().zip(regions) {
                let mut r = region(name, base);
                r.min_nodes = min_nodes;
                if down {
                    r.state = DeclaredRegionState::Down;
                }
                decl.regions.insert((*name).to_owned(), r);
                if let Some(desired) = desired {
                    set_desired(&mut decl, name, desired);
                }
            }
            for (i, (weights, min_ready, lkg, aaaa, slow)) in policies.into_iter().enumerate() {
                let mut p = policy(&[]);
                p.domain = format!("d{i}.example.com");
                p.regions = weights
                    .into_iter()
                    .map(|(r, w)| {
                        (
                            REGION_NAMES
                                .get(r)
                                .copied()
                                .unwrap_or("undeclared")
                                .to_owned(),
                            w,
                        )
                    })
                    .collect();
                p.min_ready_nodes = min_ready;
                if lkg {
                    p.all_down = AllDownPolicy::LastKnownGood;
                }
                if aaaa {
                    p.record_type = RecordType::Aaaa;
                }
                p.slow_start = slow.map(Duration::from_millis);
                decl.gtm.insert(p.domain.clone(), p);
            }
            decl
        })
}

fn settings() -> impl Strategy<Value = WeightSettings> {
    (0.0f64..1.0, 0u64..600_000, 0u32..8).prop_map(|(share, window, min_nodes)| WeightSettings {
        split_brain_share: share,
        split_brain_window: Duration::from_millis(window),
        split_brain_min_nodes: min_nodes,
    })
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (declarations(), nodes(), nodes(), timestamp(), settings()).prop_map(
        |(decl, before, nodes, now, settings)| Scenario {
            decl,
            before,
            nodes,
            now,
            settings,
        },
    )
}

impl Scenario {
    /// A first report from `before`, then the report under test from
    /// `nodes` with the first as its previous.
    fn reports(&self) -> (WeightsReport, WeightsReport) {
        let first = compute(
            &self.decl,
            &self.before,
            &BTreeMap::new(),
            self.now,
            &self.settings,
        );
        let second = compute(
            &self.decl,
            &self.nodes,
            &first.domains,
            self.now,
            &self.settings,
        );
        (first, second)
    }
}

fn check_report(
    decl: &Declarations,
    nodes: &[Node],
    report: &WeightsReport,
) -> Result<(), TestCaseError> {
    prop_assert_eq!(report.domains.len(), decl.gtm.len());
    for (key, d) in &report.domains {
        let policy = decl.gtm.get(&**key).unwrap();
        for r in &d.regions {
            prop_assert!(r.effective <= r.base, "{} > base in {:?}", r.effective, r);
            if r.health == RegionHealth::Down {
                prop_assert_eq!(r.effective, 0);
            }
            prop_assert!(!r.reason.is_empty());
        }
        for a in &d.answers {
            prop_assert!(a.weight > 0);
            prop_assert!(!a.reason.is_empty());
            prop_assert!(policy.record_type.accepts(a.address));
            let node = nodes.iter().find(|n| *n.id == *a.node_id);
            prop_assert!(
                node.is_some_and(|n| n.status != NodeStatus::Drain),
                "{:?}",
                a
            );
            let base = decl.base_weight(policy, &a.region);
            prop_assert!(a.weight <= base, "answer {:?} above base {}", a, base);
        }
        prop_assert!(!d.reasons.is_empty());
        prop_assert_eq!(d.mode == AnswerMode::Empty, d.answers.is_empty());
        if d.mode == AnswerMode::Normal {
            for r in &d.regions {
                let sum: u32 = d
                    .answers
                    .iter()
                    .filter(|a| a.region == r.region)
                    .map(|a| a.weight)
                    .sum();
                prop_assert_eq!(sum, r.effective, "region {}", r.region);
            }
            for a in &d.answers {
                let node = nodes.iter().find(|n| *n.id == *a.node_id).unwrap();
                prop_assert_eq!(node.status, NodeStatus::Up);
            }
        }
        if d.mode == AnswerMode::FailOpen {
            prop_assert!(d.regions.iter().all(|r| r.effective == 0));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn weights_respect_every_rule_on_arbitrary_worlds(s in scenario()) {
        let (first, second) = s.reports();
        check_report(&s.decl, &s.before, &first)?;
        check_report(&s.decl, &s.nodes, &second)?;
        // Region weights come from health alone, never from the previous report.
        let fresh = compute(&s.decl, &s.nodes, &BTreeMap::new(), s.now, &s.settings);
        for (key, d) in &second.domains {
            prop_assert_eq!(&d.regions, &fresh.domains.get(key).unwrap().regions);
        }
    }

    #[test]
    fn effective_weight_never_drops_when_a_node_becomes_ready(s in scenario(), pick in any::<prop::sample::Index>()) {
        let candidates: Vec<usize> = s.nodes.iter().enumerate()
            .filter(|(_, n)| n.status != NodeStatus::Up)
            .map(|(i, _)| i)
            .collect();
        prop_assume!(!candidates.is_empty());
        let chosen = *pick.get(&candidates);
        let mut more = s.nodes.clone();
        more.get_mut(chosen).unwrap().status = NodeStatus::Up;
        let before = compute(&s.decl, &s.nodes, &BTreeMap::new(), s.now, &s.settings);
        let after = compute(&s.decl, &more, &BTreeMap::new(), s.now, &s.settings);
        for (key, d) in &before.domains {
            let later = &after.domains.get(key).unwrap().regions;
            for (r, r2) in d.regions.iter().zip(later) {
                prop_assert!(r2.ready >= r.ready);
                prop_assert!(r2.effective >= r.effective, "{:?} -> {:?}", r, r2);
            }
        }
    }

    #[test]
    fn each_domain_is_computed_as_if_it_were_the_only_one(s in scenario(), more in declarations()) {
        // Domains share region evaluations within a call; the sharing must
        // not carry one domain's settings over into another's weights.
        let mut decl = s.decl.clone();
        for (i, mut policy) in more.gtm.into_values().enumerate() {
            policy.domain = format!("more{i}.example.com");
            decl.gtm.insert(policy.domain.clone(), policy);
        }
        let previous = compute(&decl, &s.before, &BTreeMap::new(), s.now, &s.settings).domains;
        let together = compute(&decl, &s.nodes, &previous, s.now, &s.settings);
        for (key, policy) in &decl.gtm {
            let mut alone = decl.clone();
            alone.gtm = [(key.clone(), policy.clone())].into();
            let report = compute(&alone, &s.nodes, &previous, s.now, &s.settings);
            prop_assert_eq!(report.domains.get(key.as_str()), together.domains.get(key.as_str()));
        }
    }

    #[test]
    fn compute_never_panics_on_hostile_input(
        decl in declarations(),
        nodes in prop::collection::vec(
            ("[a-c]{0,2}", 0usize..6, address(), status(), timestamp()),
            0..12,
        ),
        previous_answers in prop::collection::vec(("[a-c]{0,2}", address(), any::<u32>()), 0..6),
        now in timestamp(),
        settings in settings(),
        slow in prop::option::of(prop_oneof![Just(Duration::MAX), Just(Duration::ZERO), Just(Duration::from_millis(1))]),
    ) {
        let mut decl = decl;
        for p in decl.gtm.values_mut() {
            p.slow_start = slow.or(p.slow_start);
        }
        let nodes: Vec<Node> = nodes.into_iter().map(|(id, region, address, status, since)| Node {
            id,
            region: REGION_NAMES.get(region).copied().unwrap_or("").to_owned(),
            address,
            status,
            status_since: since,
            mode: NodeMode::ContainerdOnly,
            last_heartbeat: None,
            metrics: None,
        }).collect();
        let previous: BTreeMap<Arc<str>, Arc<DomainWeights>> = decl.gtm.keys().map(|domain| {
            let answers = previous_answers.iter().map(|(id, address, weight)| Answer {
                node_id: id.as_str().into(),
                region: "r0".into(),
                address: *address,
                weight: *weight,
                reason: format!("{KEPT_PREFIX}{HELD_PREFIX}old").into(),
            }).collect();
            (Arc::from(domain.as_str()), Arc::new(DomainWeights {
                domain: domain.clone(),
                zone: "example.com".to_owned(),
                record_type: RecordType::A,
                ttl: 30,
                dns: DnsBackendKind::Embedded,
                mode: AnswerMode::LastKnownGood,
                regions: vec![],
                answers,
                reasons: vec![],
            }))
        }).collect();
        let extreme = WeightSettings { split_brain_share: f64::NAN, ..settings.clone() };
        for settings in [settings, extreme] {
            let report = compute(&decl, &nodes, &previous, now, &settings);
            let text = compact(&report);
            prop_assert!(text.lines().count() >= report.domains.len());
            for d in report.domains.values() {
                for a in &d.answers {
                    let doubled = format!("{KEPT_PREFIX}{KEPT_PREFIX}");
                    prop_assert!(!a.reason.contains(&doubled));
                    let stacked = format!("{HELD_PREFIX}{KEPT_PREFIX}");
                    prop_assert!(!a.reason.contains(&stacked));
                }
            }
        }
    }
}

// Incremental recompute: which domains an event recomputes.

/// Domains jp.example.com (jp), sg.example.com (sg) and both.example.com
/// (jp and us), with one node per region.
fn three_domains() -> (Declarations, Vec<Node>) {
    let mut decl = world();
    decl.gtm.clear();
    for (name, regions) in [
        ("jp", &[("jp", 100)][..]),
        ("sg", &[("sg", 100)][..]),
        ("both", &[("jp", 100), ("us", 100)][..]),
    ] {
        let mut p = policy(regions);
        p.domain = format!("{name}.example.com");
        decl.gtm.insert(p.domain.clone(), p);
    }
    let nodes = vec![
        up("jp-1", "jp", "127.0.0.2"),
        up("sg-1", "sg", "127.0.0.5"),
        up("us-1", "us", "127.0.0.8"),
    ];
    (decl, nodes)
}

fn incremental_after(
    decl: &Declarations,
    before: &[Node],
    after: &[Node],
    changes: &Changes,
    now_secs: i64,
) -> Incremental {
    let settings = WeightSettings::default();
    let previous = compute(
        decl,
        before,
        &BTreeMap::new(),
        changes.previous_now,
        &settings,
    );
    let now = Timestamp::from_secs(now_secs);
    let incremental = compute_incremental(decl, after, previous.clone(), changes, now, &settings);
    let full = compute(decl, after, &previous.domains, now, &settings);
    assert_eq!(incremental.report, full);
    incremental
}

fn recomputed(domains: &[&str]) -> Recomputed {
    Recomputed::Domains(domains.iter().map(|d| format!("{d}.example.com")).collect())
}

#[test]
fn domains_that_evaluate_a_region_alike_share_its_answers_and_a_change_elsewhere_keeps_them() {
    let (decl, before) = three_domains();
    let settings = WeightSettings::default();
    let previous_now = Timestamp::from_secs(NOW - 5);
    let previous = compute(&decl, &before, &BTreeMap::new(), previous_now, &settings);
    let runs = |report: &WeightsReport, domain: &str| -> Vec<Arc<[Answer]>> {
        report.domains[format!("{domain}.example.com").as_str()]
            .answers
            .runs()
            .to_vec()
    };
    // `jp` and `both` weigh jp at 100 alike: one run between them.
    let (jp, both) = (runs(&previous, "jp"), runs(&previous, "both"));
    assert_eq!((jp.len(), both.len()), (1, 2));
    assert!(Arc::ptr_eq(&jp[0], &both[0]));

    // A second node in us: `both` is recomputed, its jp answers are kept.
    let mut after = before.clone();
    after.push(up("us-2", "us", "127.0.0.9"));
    let mut changes = Changes::new(previous_now);
    changes.node(None, after.last());
    let now = Timestamp::from_secs(NOW);
    let result = compute_incremental(&decl, &after, previous.clone(), &changes, now, &settings);
    assert_eq!(result.recomputed, recomputed(&["both"]));
    assert_eq!(
        result.report,
        compute(&decl, &after, &previous.domains, now, &settings)
    );
    let kept = runs(&result.report, "both");
    assert!(Arc::ptr_eq(&kept[0], &both[0]));
    assert!(!Arc::ptr_eq(&kept[1], &both[1]));
    assert_eq!(kept[1].len(), 2);
    assert!(Arc::ptr_eq(
        &result.report.domains["jp.example.com"],
        &previous.domains["jp.example.com"]
    ));
}

#[test]
fn a_packed_report_writes_each_shared_run_once_and_reads_back_sharing_them() {
    let (decl, nodes) = three_domains();
    let report = run(&decl, &nodes);
    let packed = PackedReport::pack(&report);
    let json = serde_json::to_string(&packed).unwrap();
    let flat = serde_json::to_string(&report).unwrap();
    // (packed, flat) occurrences of `text`.
    let written = |text: &str| (json.matches(text).count(), flat.matches(text).count());
    // jp's run is shared by `jp` and `both`: written once, not twice.
    assert_eq!(written("\"node_id\":\"jp-1\""), (1, 2));
    let back = serde_json::from_str::<PackedReport>(&json)
        .unwrap()
        .unpack()
        .unwrap();
    assert_eq!(back, report);
    let run_of = |domain: &str| Arc::clone(&back.domains[domain].answers.runs()[0]);
    assert!(Arc::ptr_eq(
        &run_of("jp.example.com"),
        &run_of("both.example.com")
    ));

    let broken = json.replacen("\"runs\":[0]", "\"runs\":[7]", 1);
    assert_ne!(broken, json);
    let err = serde_json::from_str::<PackedReport>(&broken)
        .unwrap()
        .unpack()
        .unwrap_err();
    assert_eq!((err.what, err.number, err.held), ("answer run", 7, 3));
    // `jp` and `both` weigh jp alike: one region weight between them.
    assert_eq!(written("\"base\":100"), (3, 4));
}

#[test]
fn a_node_event_recomputes_only_the_domains_serving_its_region() {
    let (decl, before) = three_domains();
    let mut after = before.clone();
    after[0].status = NodeStatus::Down;
    after[0].status_since = Timestamp::from_secs(NOW);
    let mut changes = Changes::new(Timestamp::from_secs(NOW - 5));
    changes.node(Some(&before[0]), Some(&after[0]));
    assert_eq!(changes.regions, ["jp".to_owned()].into());
    let result = incremental_after(&decl, &before, &after, &changes, NOW);
    assert_eq!(result.recomputed, recomputed(&["both", "jp"]));

    // A heartbeat changes nothing the weights read.
    let mut beat = before.clone();
    beat[1].last_heartbeat = Some(Timestamp::from_secs(NOW));
    let mut changes = Changes::new(Timestamp::from_secs(NOW - 5));
    changes.node(Some(&before[1]), Some(&beat[1]));
    assert_eq!(
        changes,
        Changes::between(changes.previous_now, &before, &beat)
    );
    let result = incremental_after(&decl, &before, &beat, &changes, NOW);
    assert_eq!(result.recomputed, recomputed(&[]));
}

#[test]
fn a_slow_start_ramp_recomputes_its_domains_until_it_ends() {
    let (mut decl, mut nodes) = three_domains();
    for p in decl.gtm.values_mut() {
        p.slow_start = Some(Duration::from_secs(60));
    }
    nodes[1].status_since = Timestamp::from_secs(NOW - 30);
    // sg ramps from NOW - 30 to NOW + 30: still ramping, then ended since
    // the previous report, then ended before it.
    for (previous_secs, now_secs, expected) in [
        (NOW - 5, NOW, &["sg"][..]),
        (NOW + 20, NOW + 40, &["sg"][..]),
        (NOW + 31, NOW + 40, &[][..]),
    ] {
        let changes = Changes::new(Timestamp::from_secs(previous_secs));
        let result = incremental_after(&decl, &nodes, &nodes, &changes, now_secs);
        assert_eq!(result.recomputed, recomputed(expected), "at {now_secs}");
    }
}

#[test]
fn a_tripped_guard_recomputes_everything() {
    let decl = world();
    let before: Vec<Node> = six_nodes(NOW - 3600)
        .into_iter()
        .map(|mut n| {
            if n.status == NodeStatus::Down {
                n.status = NodeStatus::Up;
            }
            n
        })
        .collect();
    let after = six_nodes(NOW);
    let changes = Changes::between(Timestamp::from_secs(NOW - 5), &before, &after);
    let result = incremental_after(&decl, &before, &after, &changes, NOW);
    assert!(result.report.split_brain.is_some());
    assert_eq!(
        result.recomputed,
        Recomputed::All("the split-brain guard is tripped")
    );
}

// Incremental recompute: the same report as a full compute after every event.

/// One node event of a random sequence, after the clock advanced.
#[derive(Clone, Debug)]
enum Event {
    /// A node's status changes (or is set again, with a new `status_since`).
    Status(prop::sample::Index, NodeStatus),
    /// A new node registers.
    Register(usize, IpAddr, NodeStatus),
    /// A node registers again, in another region.
    Move(prop::sample::Index, usize),
    /// A second node registers under an existing node's id.
    Duplicate(prop::sample::Index, usize),
    Deregister(prop::sample::Index),
    /// Only time passes.
    Wait,
}

fn event() -> impl Strategy<Value = Event> {
    let index = any::<prop::sample::Index>;
    prop_oneof![
        6 => (index(), status()).prop_map(|(i, s)| Event::Status(i, s)),
        2 => (0usize..5, address(), status()).prop_map(|(r, a, s)| Event::Register(r, a, s)),
        1 => (index(), 0usize..5).prop_map(|(i, r)| Event::Move(i, r)),
        1 => (index(), 0usize..5).prop_map(|(i, r)| Event::Duplicate(i, r)),
        1 => index().prop_map(Event::Deregister),
        2 => Just(Event::Wait),
    ]
}

/// How far the clock moves before an event: mostly within slow-start
/// periods, sometimes not at all, rarely backwards.
fn advance() -> impl Strategy<Value = i64> {
    prop_oneof![
        2 => Just(0i64),
        6 => 0i64..90_000,
        1 => 0i64..1_000_000,
        1 => -5_000i64..0,
    ]
}

/// When an event says its status changed: mostly now, sometimes any time.
fn event_since() -> impl Strategy<Value = Option<Timestamp>> {
    prop_oneof![4 => Just(None), 1 => timestamp().prop_map(Some)]
}

fn region_name(index: usize) -> String {
    REGION_NAMES
        .get(index)
        .copied()
        .unwrap_or("undeclared")
        .to_owned()
}

/// Applies `event` at `now`, recording it in `changes` as a caller would.
fn apply(
    event: &Event,
    since: Option<Timestamp>,
    now: Timestamp,
    nodes: &mut Vec<Node>,
    next_id: &mut usize,
    changes: &mut Changes,
) {
    let since = since.unwrap_or(now);
    let fresh = |id: String, region: usize, address: IpAddr, status: NodeStatus| Node {
        id,
        region: region_name(region),
        address,
        status,
        status_since: since,
        mode: NodeMode::ContainerdOnly,
        last_heartbeat: Some(now),
        metrics: None,
    };
    match event {
        Event::Wait => {}
        Event::Register(region, address, status) => {
            let node = fresh(format!("new{next_id}"), *region, *address, *status);
            *next_id += 1;
            changes.node(None, Some(&node));
            nodes.push(node);
        }
        Event::Status(i, status) if !nodes.is_empty() => {
            let at = i.index(nodes.len());
            let node = nodes.get_mut(at).unwrap();
            let before = node.clone();
            node.status = *status;
            node.status_since = since;
            node.last_heartbeat = Some(now);
            changes.node(Some(&before), Some(node));
        }
        Event::Move(i, region) if !nodes.is_empty() => {
            let before = nodes.remove(i.index(nodes.len()));
            let after = fresh(before.id.clone(), *region, before.address, before.status);
            changes.node(Some(&before), Some(&after));
            nodes.push(after);
        }
        Event::Duplicate(i, region) if !nodes.is_empty() => {
            let original = nodes.get(i.index(nodes.len())).unwrap();
            let copy = fresh(
                original.id.clone(),
                *region,
                original.address,
                NodeStatus::Up,
            );
            changes.node(None, Some(&copy));
            nodes.push(copy);
        }
        Event::Deregister(i) if !nodes.is_empty() => {
            let before = nodes.remove(i.index(nodes.len()));
            changes.node(Some(&before), None);
        }
        Event::Status(..) | Event::Move(..) | Event::Duplicate(..) | Event::Deregister(_) => {}
    }
}

/// Declarations with up to six domains.
fn incremental_declarations() -> impl Strategy<Value = Declarations> {
    (declarations(), declarations()).prop_map(|(mut decl, more)| {
        for (i, mut policy) in more.gtm.into_values().enumerate() {
            policy.domain = format!("more{i}.example.com");
            decl.gtm.insert(policy.domain.clone(), policy);
        }
        decl
    })
}

/// Mostly the default settings (the guard trips only on real bursts), else
/// arbitrary ones.
fn incremental_settings() -> impl Strategy<Value = WeightSettings> {
    prop_oneof![3 => Just(WeightSettings::default()), 1 => settings()]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn incremental_recompute_equals_full_recompute_after_every_event(
        decl in incremental_declarations(),
        initial in nodes(),
        start in (NOW * 1000 - 600_000..NOW * 1000 + 600_000).prop_map(Timestamp::from_millis),
        settings in incremental_settings(),
        events in prop::collection::vec((event(), advance(), event_since()), 1..24),
    ) {
        let mut nodes = initial;
        let mut now = start;
        // From nothing: every domain is new.
        let first = compute_incremental(
            &decl, &nodes, WeightsReport::default(), &Changes::new(now), now, &settings,
        );
        let mut previous = compute(&decl, &nodes, &BTreeMap::new(), now, &settings);
        prop_assert_eq!(&first.report, &previous);
        let mut next_id = 0;
        for (event, advance, since) in &events {
            let before = nodes.clone();
            let previous_now = now;
            now = Timestamp::from_millis(now.0.saturating_add(*advance));
            let mut changes = Changes::new(previous_now);
            apply(event, *since, now, &mut nodes, &mut next_id, &mut changes);
            prop_assert_eq!(&Changes::between(previous_now, &before, &nodes), &changes);

            let full = compute(&decl, &nodes, &previous.domains, now, &settings);
            let incremental =
                compute_incremental(&decl, &nodes, previous.clone(), &changes, now, &settings);
            prop_assert_eq!(
                &incremental.report, &full,
                "after {:?} at {}, recomputed {:?}", event, now, incremental.recomputed
            );
            // The same over a node set, as the daemon keeps one: ids unique
            // (the list's duplicates are for the first-registered rule).
            let ids: std::collections::BTreeSet<&str> = nodes.iter().map(|n| n.id.as_str()).collect();
            if ids.len() == nodes.len() {
                let set = NodeSet::new(nodes.iter().cloned().map(Arc::new));
                let in_set =
                    compute_incremental_in(&decl, &set, previous.clone(), &changes, now, &settings);
                prop_assert_eq!(
                    &in_set, &incremental,
                    "in a node set, after {:?} at {}", event, now
                );
            }
            previous = full;
        }
    }
}

#[test]
fn domains_that_keep_a_shared_run_of_answers_keep_one_copy_of_it() {
    let (mut decl, before) = three_domains();
    for policy in decl.gtm.values_mut() {
        policy.all_down = AllDownPolicy::LastKnownGood;
    }
    // Two of three nodes going down would trip the split-brain guard.
    let settings = WeightSettings {
        split_brain_min_nodes: 100,
        ..WeightSettings::default()
    };
    let previous = compute(
        &decl,
        &before,
        &BTreeMap::new(),
        Timestamp::from_secs(NOW - 60),
        &settings,
    );
    // jp and us go down: `jp` and `both` fall all-down and keep what they
    // served; `both` keeps jp's run, which it shared with `jp`.
    let after: Vec<Node> = before
        .iter()
        .cloned()
        .map(|mut n| {
            if n.id != "sg-1" {
                n.status = NodeStatus::Down;
                n.status_since = Timestamp::from_secs(NOW - 1);
            }
            n
        })
        .collect();
    let report = compute(
        &decl,
        &after,
        &previous.domains,
        Timestamp::from_secs(NOW),
        &settings,
    );
    let entry = |domain: &str| &report.domains[format!("{domain}.example.com").as_str()];
    assert_eq!(entry("jp").mode, AnswerMode::LastKnownGood);
    assert_eq!(entry("both").mode, AnswerMode::LastKnownGood);
    let (jp, both) = (entry("jp").answers.runs(), entry("both").answers.runs());
    assert_eq!((jp.len(), both.len()), (1, 2));
    assert!(Arc::ptr_eq(&jp[0], &both[0]), "one kept copy of jp's run");
    assert_eq!(&*jp[0][0].node_id, "jp-1");
    assert!(jp[0][0].reason.starts_with("last known good: "));
    assert_eq!(&*both[1][0].node_id, "us-1");
}
