use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use neutral_core::autoscale::NodeSample;
use neutral_core::model::{MetricSample, Metrics, NodeMode, NodeStatus, Timestamp};
use neutral_store::{Heartbeat, NewNode, Store, StoreOptions, TokenHash};
use proptest::prelude::*;

use super::{Cover, Readiness, SampleRings};

fn cover(regions: &[&str], keep_s: u64) -> Cover {
    Cover {
        regions: regions.iter().map(|r| Arc::from(*r)).collect(),
        keep: Duration::from_secs(keep_s),
    }
}

fn sample(at: i64, cpu: f64) -> MetricSample {
    MetricSample {
        at: Timestamp(at),
        metrics: Metrics {
            cpu,
            rtt_ms: 5.0,
            error_rate: 0.0,
        },
    }
}

/// Rings seeded with nothing for `wanted`.
fn seeded(spacing_ms: i64, wanted: &Cover) -> SampleRings {
    let mut rings = SampleRings::new(spacing_ms);
    rings.begin_seed(wanted.clone());
    rings.finish_seed(wanted, Vec::new());
    rings
}

/// Node and time of each sample, by node then time.
fn ats(samples: &[NodeSample]) -> Vec<(&str, i64)> {
    let mut ats: Vec<(&str, i64)> = samples
        .iter()
        .map(|s| (&*s.node_id, s.sample.at.0))
        .collect();
    ats.sort_unstable();
    ats
}

/// A stored sample of `node_id`, in the region its id starts with.
fn stored(node_id: &str, sample: MetricSample) -> (Arc<str>, NodeSample) {
    (
        node_id.get(..2).unwrap_or_default().into(),
        NodeSample {
            node_id: node_id.into(),
            sample,
        },
    )
}

#[test]
fn a_ring_keeps_the_store_spacing_and_only_its_cover_s_time() {
    let wanted = cover(&["jp"], 10);
    let mut rings = seeded(2_000, &wanted);
    for at in [0, 1_000, 2_000, 3_999, 4_000, 3_000, 30_000, 36_000, 41_000] {
        rings.note("jp-1", "jp", sample(at, 0.5));
    }
    // 1,000 and 3,999 fall inside the spacing, 3,000 is older than the
    // last kept; 30,000 leaves 0..4,000 more than 10 s behind.
    let read = rings.samples_since(Timestamp(0));
    assert_eq!(
        ats(&read),
        vec![("jp-1", 36_000), ("jp-1", 41_000)],
        "{read:?}"
    );
    assert_eq!(rings.size(), (1, 2));
}

#[test]
fn a_snapshot_reads_the_rings_as_they_were_when_taken() {
    let wanted = cover(&["jp"], 10);
    let mut rings = seeded(1_000, &wanted);
    rings.note("jp-1", "jp", sample(1_000, 0.5));
    rings.note("jp-2", "jp", sample(1_000, 0.5));
    let snapshot = rings.snapshot_since(Timestamp(0));
    // Heartbeats after the snapshot was taken (the world's lock let go)
    // change the rings, not the snapshot; trimming included.
    rings.note("jp-1", "jp", sample(2_000, 0.6));
    rings.note("jp-2", "jp", sample(20_000, 0.6));
    rings.note("jp-3", "jp", sample(20_000, 0.6));
    assert_eq!(
        ats(&snapshot.samples()),
        vec![("jp-1", 1_000), ("jp-2", 1_000)]
    );
    assert_eq!(
        ats(&rings.samples_since(Timestamp(0))),
        vec![
            ("jp-1", 1_000),
            ("jp-1", 2_000),
            ("jp-2", 20_000),
            ("jp-3", 20_000)
        ]
    );
    // A snapshot's `since` holds for every ring.
    assert_eq!(
        ats(&rings.snapshot_since(Timestamp(1_500)).samples()),
        vec![("jp-1", 2_000), ("jp-2", 20_000), ("jp-3", 20_000)]
    );
}

#[test]
fn a_ring_never_holds_more_than_the_spacing_lets_into_its_time() {
    let wanted = cover(&["jp"], 10);
    // 10 s at least 1 s apart: 11 at most, however fast the heartbeats.
    for every_ms in [250, 999, 1_000, 1_001, 3_000] {
        let mut rings = seeded(1_000, &wanted);
        for i in 0..400 {
            rings.note("jp-1", "jp", sample(i * every_ms, 0.5));
        }
        let (nodes, samples) = rings.size();
        assert_eq!(nodes, 1);
        assert!(
            samples <= 11,
            "{samples} samples kept at one every {every_ms} ms"
        );
        assert!(
            samples >= 4,
            "{samples} samples kept at one every {every_ms} ms"
        );
    }
}

#[test]
fn nothing_is_kept_for_an_uncovered_region_or_while_not_in_use() {
    let mut idle = SampleRings::new(1_000);
    idle.note("jp-1", "jp", sample(0, 0.5));
    assert_eq!(idle.size(), (0, 0));
    assert!(idle.samples_since(Timestamp(0)).is_empty());

    let mut rings = seeded(1_000, &cover(&["jp"], 60));
    rings.note("sg-1", "sg", sample(0, 0.5));
    assert_eq!(rings.size(), (0, 0));

    rings.note("jp-1", "jp", sample(0, 0.5));
    rings.stop();
    assert_eq!(rings.size(), (0, 0));
    assert_eq!(rings.readiness(&cover(&["jp"], 60)), Readiness::Seed);
}

#[test]
fn a_wider_cover_asks_for_a_seed_and_a_narrower_one_drops_what_it_no_longer_needs() {
    let both = cover(&["jp", "sg"], 60);
    let mut rings = SampleRings::new(1_000);
    assert_eq!(rings.readiness(&both), Readiness::Seed);
    rings.begin_seed(both.clone());
    assert_eq!(
        rings.readiness(&both),
        Readiness::Seed,
        "not ready before the store was read"
    );
    rings.finish_seed(&both, Vec::new());
    assert_eq!(rings.readiness(&both), Readiness::Ready);

    for at in [0, 20_000, 40_000, 60_000] {
        rings.note("jp-1", "jp", sample(at, 0.5));
        rings.note("sg-1", "sg", sample(at, 0.5));
    }
    assert_eq!(rings.size(), (2, 8));
    assert_eq!(rings.readiness(&cover(&["jp", "sg"], 120)), Readiness::Seed);
    assert_eq!(rings.readiness(&cover(&["jp", "us"], 60)), Readiness::Seed);

    assert_eq!(rings.readiness(&cover(&["jp"], 30)), Readiness::Ready);
    assert_eq!(rings.size(), (1, 2), "sg dropped, jp back to 30 s");
    // The narrower cover is now the one in force.
    assert_eq!(rings.readiness(&cover(&["jp"], 60)), Readiness::Seed);
}

#[test]
fn a_seed_keeps_what_was_noted_while_the_store_was_read() {
    let wanted = cover(&["jp", "sg"], 60);
    let mut rings = SampleRings::new(1_000);
    rings.begin_seed(wanted.clone());
    // Noted while the store is read: 10,000 is in the store's answer too,
    // 12,000 is not (its batch was written after the read).
    rings.note("jp-1", "jp", sample(10_000, 0.6));
    rings.note("jp-1", "jp", sample(12_000, 0.7));
    rings.note("sg-1", "sg", sample(12_000, 0.1));
    let stored = vec![
        stored("jp-1", sample(8_000, 0.5)),
        stored("jp-1", sample(10_000, 0.6)),
        stored("us-1", sample(10_000, 0.6)),
    ];
    rings.finish_seed(&wanted, stored);
    assert_eq!(rings.readiness(&wanted), Readiness::Ready);
    let read = rings.samples_since(Timestamp(0));
    assert_eq!(
        ats(&read),
        vec![
            ("jp-1", 8_000),
            ("jp-1", 10_000),
            ("jp-1", 12_000),
            ("sg-1", 12_000)
        ]
    );
}

#[test]
fn a_seed_for_other_regions_drops_the_rings_of_the_regions_it_no_longer_covers() {
    let mut rings = seeded(1_000, &cover(&["sg"], 60));
    rings.note("sg-1", "sg", sample(1_000, 0.5));
    // jp gets a policy and sg loses its own: the store is read for jp.
    let jp = cover(&["jp"], 60);
    assert_eq!(rings.readiness(&jp), Readiness::Seed);
    rings.begin_seed(jp.clone());
    rings.finish_seed(&jp, vec![stored("jp-1", sample(1_000, 0.5))]);
    assert_eq!(
        ats(&rings.samples_since(Timestamp(0))),
        vec![("jp-1", 1_000)]
    );
    assert_eq!(rings.size(), (1, 1));
}

#[test]
fn a_seed_that_arrives_after_the_cover_changed_is_dropped() {
    let first = cover(&["jp"], 60);
    let mut rings = SampleRings::new(1_000);
    rings.begin_seed(first.clone());
    rings.stop();
    rings.finish_seed(&first, vec![stored("jp-1", sample(0, 0.5))]);
    assert_eq!(rings.size(), (0, 0));
    assert_eq!(rings.readiness(&first), Readiness::Seed);
}

#[test]
fn a_read_drops_the_rings_with_nothing_since_its_start() {
    let mut rings = seeded(1_000, &cover(&["jp", "sg"], 60));
    rings.note("jp-1", "jp", sample(1_000, 0.5));
    rings.note("jp-1", "jp", sample(3_000, 0.5));
    // Deleted or silent since 1,500.
    rings.note("jp-2", "jp", sample(1_000, 0.5));
    rings.note("sg-1", "sg", sample(1_400, 0.5));
    let read = rings.samples_since(Timestamp(2_000));
    assert_eq!(ats(&read), vec![("jp-1", 3_000)]);
    assert_eq!(rings.size(), (1, 2), "jp-1 keeps its older sample");
    // A node that comes back starts a ring again.
    rings.note("jp-2", "jp", sample(4_000, 0.5));
    assert_eq!(rings.size(), (2, 3));
}

#[test]
fn a_node_that_moves_region_is_kept_under_its_new_one_and_dropped_when_that_is_not_covered() {
    let mut rings = seeded(1_000, &cover(&["jp", "sg"], 60));
    rings.note("n-1", "jp", sample(1_000, 0.5));
    rings.note("n-1", "sg", sample(3_000, 0.5));
    assert_eq!(rings.size(), (1, 2));
    assert_eq!(rings.readiness(&cover(&["jp"], 60)), Readiness::Ready);
    assert_eq!(rings.size(), (0, 0), "its ring went with sg's cover");
}

fn new_node(id: &str, region: &str, n: u8) -> NewNode {
    NewNode {
        id: id.to_owned(),
        region: region.to_owned(),
        address: std::net::IpAddr::from([127, 0, 1, n]),
        mode: NodeMode::ContainerdOnly,
        hostname: None,
        agent_version: None,
        token_hash: TokenHash::of(&format!("token of {id}")),
        status: NodeStatus::Up,
        at: Timestamp(0),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// The rings, fed the heartbeats the store records (seeded partway
    /// through from what the store holds then), return what the store
    /// returns for the autoscaler's read, for every node of a covered
    /// region.
    #[test]
    fn the_rings_read_what_the_store_returns(
        // Steps in quarter seconds, so that gaps of exactly the spacing occur.
        beats in proptest::collection::vec((0usize..4, 0i64..12, any::<bool>(), 0.0f64..1.0), 1..120),
        seed_after in 0usize..120,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let options = StoreOptions {
            sample_retention: Duration::from_secs(60),
            samples_per_node: 41,
            ..StoreOptions::default()
        };
        let store = Store::open(dir.path(), options).unwrap();
        let nodes = [("jp-1", "jp"), ("jp-2", "jp"), ("sg-1", "sg"), ("us-1", "us")];
        for (n, (id, region)) in (1u8..).zip(nodes) {
            store.nodes().register(&new_node(id, region, n), "test").unwrap();
        }
        let wanted = cover(&["jp", "sg"], 20);
        let covered: BTreeSet<String> = wanted.regions.iter().map(ToString::to_string).collect();
        let mut rings = SampleRings::new(store.samples().spacing_ms());
        prop_assert_eq!(rings.spacing_ms, 1_500);

        let mut at = 1_000_000i64;
        for (i, (node, step, with_metrics, cpu)) in beats.iter().enumerate() {
            if i == seed_after {
                rings.begin_seed(wanted.clone());
                let since = Timestamp(at - 20_000);
                let stored = store.samples().regional_samples_of(since, Some(&covered)).unwrap();
                rings.finish_seed(&wanted, stored);
            }
            at += step * 250;
            let (id, region) = nodes[*node];
            let metrics = with_metrics.then_some(Metrics { cpu: *cpu, rtt_ms: 5.0, error_rate: 0.0 });
            store
                .samples()
                .record_heartbeats(&[Heartbeat { node_id: id.to_owned(), at: Timestamp(at), metrics }])
                .unwrap();
            if let Some(metrics) = metrics {
                rings.note(id, region, MetricSample { at: Timestamp(at), metrics });
            }
        }
        if seed_after < beats.len() {
            let since = Timestamp(at - 20_000);
            let from_store = store.samples().samples_of(since, Some(&covered)).unwrap();
            let mut from_rings = rings.samples_since(since);
            // Each node's samples oldest first in both; the nodes in any
            // order from the rings.
            let key = |s: &NodeSample| (s.node_id.clone(), s.sample.at);
            let mut from_store = from_store;
            from_store.sort_by_key(key);
            from_rings.sort_by_key(key);
            prop_assert_eq!(from_rings, from_store);
        }
    }
}
