use std::time::Duration;

use neutral_core::model::NodeStatus;

use super::*;
use crate::store::StoreOptions;
use crate::tests::{metrics, new_node, on_postgres, open_temp, open_temp_with};

fn beat(id: &str, at: i64, cpu: Option<f64>) -> Heartbeat {
    Heartbeat {
        node_id: id.into(),
        at: Timestamp(at),
        metrics: cpu.map(metrics),
    }
}

fn samples_of(store: &Store, id: &str) -> i64 {
    store.with_writer(|conn| {
        conn.query_row(
            "SELECT count(*) FROM samples s JOIN nodes n ON n.key = s.node_key WHERE n.id = ?1",
            params![id],
            |row| row.get(0),
        )
        .unwrap()
    })
}

#[test]
fn heartbeats_update_the_node_and_append_samples_in_one_batch() {
    let (_dir, store) = open_temp();
    for id in ["a", "b"] {
        store
            .nodes()
            .register(&new_node(id, "jp", "127.0.0.2", 0), "join")
            .unwrap();
    }
    let outcome = store
        .samples()
        .record_heartbeats(&[
            beat("a", 10_000, Some(0.5)),
            beat("b", 10_000, None),
            beat("ghost", 10_000, Some(0.1)),
            beat("a", 12_000, Some(0.7)),
        ])
        .unwrap();
    assert_eq!(
        outcome,
        HeartbeatOutcome {
            applied: 3,
            sampled: 2,
            pruned: 0,
            unknown: vec!["ghost".into()],
        }
    );
    let a = store.nodes().get("a").unwrap().unwrap();
    assert_eq!(a.node.last_heartbeat, Some(Timestamp(12_000)));
    assert_eq!(a.node.metrics, Some(metrics(0.7)));
    assert_eq!(a.metrics_at, Some(Timestamp(12_000)));
    let b = store.nodes().get("b").unwrap().unwrap();
    assert_eq!(b.node.last_heartbeat, Some(Timestamp(10_000)));
    assert_eq!(
        b.node.metrics, None,
        "a heartbeat without metrics proves liveness only"
    );

    let samples = store.samples().samples_since(Timestamp(0)).unwrap();
    assert_eq!(
        samples,
        vec![
            NodeSample {
                node_id: "a".into(),
                sample: MetricSample {
                    at: Timestamp(10_000),
                    metrics: metrics(0.5)
                }
            },
            NodeSample {
                node_id: "a".into(),
                sample: MetricSample {
                    at: Timestamp(12_000),
                    metrics: metrics(0.7)
                }
            },
        ]
    );
    assert_eq!(
        store
            .samples()
            .samples_since(Timestamp(11_000))
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn a_late_heartbeat_never_moves_liveness_or_metrics_backwards() {
    let (_dir, store) = open_temp();
    store
        .nodes()
        .register(&new_node("a", "jp", "127.0.0.2", 0), "join")
        .unwrap();
    let samples = store.samples();
    samples
        .record_heartbeats(&[beat("a", 20_000, Some(0.9))])
        .unwrap();
    samples
        .record_heartbeats(&[beat("a", 15_000, Some(0.1))])
        .unwrap();
    samples
        .record_heartbeats(&[beat("a", 25_000, None)])
        .unwrap();
    let a = store.nodes().get("a").unwrap().unwrap();
    assert_eq!(a.node.last_heartbeat, Some(Timestamp(25_000)));
    assert_eq!(a.node.metrics, Some(metrics(0.9)));
    assert_eq!(a.metrics_at, Some(Timestamp(20_000)));
}

#[test]
fn metrics_that_are_not_numbers_come_back_as_nan_without_failing_the_batch() {
    let (_dir, store) = open_temp();
    store
        .nodes()
        .register(&new_node("a", "jp", "127.0.0.2", 0), "join")
        .unwrap();
    store
        .samples()
        .record_heartbeats(&[Heartbeat {
            node_id: "a".into(),
            at: Timestamp(1),
            metrics: Some(Metrics {
                cpu: f64::NAN,
                rtt_ms: f64::INFINITY,
                error_rate: 0.25,
            }),
        }])
        .unwrap();
    let sample = store.samples().samples_since(Timestamp(0)).unwrap()[0].sample;
    assert!(sample.metrics.cpu.is_nan());
    assert_eq!(sample.metrics.rtt_ms, f64::INFINITY);
    assert_eq!(sample.metrics.error_rate, 0.25);
    let latest = store
        .nodes()
        .get("a")
        .unwrap()
        .unwrap()
        .node
        .metrics
        .unwrap();
    assert!(latest.cpu.is_nan());
}

#[test]
fn samples_older_than_the_retention_window_are_pruned_as_heartbeats_arrive() {
    let (_dir, store) = open_temp_with(StoreOptions {
        sample_retention: Duration::from_secs(60),
        samples_per_node: 1000,
        ..StoreOptions::default()
    });
    store
        .nodes()
        .register(&new_node("a", "jp", "127.0.0.2", 0), "join")
        .unwrap();
    // One heartbeat every 2 s for 5 minutes.
    let mut pruned = 0;
    for step in 0..150 {
        let outcome = store
            .samples()
            .record_heartbeats(&[beat("a", step * 2_000, Some(0.5))])
            .unwrap();
        pruned += outcome.pruned;
    }
    let newest = 149 * 2_000;
    let kept = store.samples().samples_since(Timestamp(0)).unwrap();
    assert!(
        kept.iter().all(|s| s.sample.at.0 >= newest - 60_000),
        "nothing older than the window"
    );
    assert_eq!(kept.len(), 31, "the 60 s window holds 31 samples 2 s apart");
    assert_eq!(pruned, 150 - 31);
    assert_eq!(store.samples().count().unwrap(), 31);
}

#[test]
fn a_node_heartbeating_too_fast_keeps_at_most_the_per_node_cap() {
    let (_dir, store) = open_temp_with(StoreOptions {
        sample_retention: Duration::from_secs(10),
        samples_per_node: 5,
        ..StoreOptions::default()
    });
    for id in ["fast", "normal"] {
        store
            .nodes()
            .register(&new_node(id, "jp", "127.0.0.2", 0), "join")
            .unwrap();
    }
    // "fast" heartbeats every 100 ms, "normal" every 2.5 s, for a minute.
    let mut max_fast = 0;
    let mut max_normal = 0;
    for step in 0..600i64 {
        let at = step * 100;
        let mut batch = vec![beat(
            "fast",
            at,
            Some(f64::from(u32::try_from(step).unwrap()) / 1e3),
        )];
        if at % 2_500 == 0 {
            batch.push(beat("normal", at, Some(0.5)));
        }
        store.samples().record_heartbeats(&batch).unwrap();
        max_fast = max_fast.max(samples_of(&store, "fast"));
        max_normal = max_normal.max(samples_of(&store, "normal"));
    }
    assert!(max_fast <= 5, "fast node held {max_fast} samples");
    assert!(max_fast >= 4, "the cap is used, not undershot: {max_fast}");
    assert_eq!(
        max_normal, 5,
        "a node at the designed rate keeps every sample"
    );
    // The latest metrics still follow every heartbeat.
    let fast = store.nodes().get("fast").unwrap().unwrap();
    assert_eq!(fast.metrics_at, Some(Timestamp(59_900)));
}

#[test]
fn the_spacing_keeps_any_window_within_the_cap() {
    for (retention, cap) in [
        (3_600_000u128, 2000u32),
        (10_000, 5),
        (60_000, 2),
        (7, 3),
        (1, 1000),
    ] {
        let spacing = i128::from(min_sample_spacing_ms(retention, cap));
        // `cap + 1` samples at that spacing span more than the window.
        assert!(
            spacing * i128::from(cap) > i128::try_from(retention).unwrap(),
            "{retention} {cap}"
        );
        assert!(spacing >= 1);
    }
    assert_eq!(min_sample_spacing_ms(3_600_000, 2000), 1801);
}

#[test]
fn prune_catches_up_in_bounded_steps() {
    let (_dir, store) = open_temp_with(StoreOptions {
        sample_retention: Duration::from_secs(10),
        samples_per_node: 100,
        ..StoreOptions::default()
    });
    store
        .nodes()
        .register(&new_node("a", "jp", "127.0.0.2", 0), "join")
        .unwrap();
    let batch: Vec<Heartbeat> = (0..100).map(|i| beat("a", i * 1_000, Some(0.5))).collect();
    let outcome = store.samples().record_heartbeats(&batch).unwrap();
    // The batch itself prunes what is older than 10 s before its newest.
    assert_eq!(outcome.pruned, 89);
    assert_eq!(store.samples().count().unwrap(), 11);
    // Long after: everything is out of the window.
    let later = Timestamp(10_000_000);
    assert_eq!(store.samples().prune(later, 5).unwrap(), 5);
    assert_eq!(store.samples().count().unwrap(), 6);
    assert_eq!(store.samples().prune(later, 1_000).unwrap(), 6);
    assert_eq!(store.samples().prune(later, 1_000).unwrap(), 0);
    assert_eq!(store.samples().count().unwrap(), 0);
    assert_eq!(
        store.nodes().get("a").unwrap().unwrap().node.status,
        NodeStatus::Up
    );
}

#[test]
fn a_late_batch_is_found_and_returned_in_time_order() {
    let (_dir, store) = open_temp();
    for id in ["a", "b"] {
        store
            .nodes()
            .register(&new_node(id, "jp", "127.0.0.2", 0), "join")
            .unwrap();
    }
    let samples = store.samples();
    samples
        .record_heartbeats(&[beat("a", 100_000, Some(0.1))])
        .unwrap();
    // Written later, taken earlier.
    samples
        .record_heartbeats(&[beat("b", 90_000, Some(0.2))])
        .unwrap();
    samples
        .record_heartbeats(&[beat("a", 110_000, Some(0.3))])
        .unwrap();

    let seen = |since: i64| -> Vec<(String, i64)> {
        samples
            .samples_since(Timestamp(since))
            .unwrap()
            .into_iter()
            .map(|s| (s.node_id.to_string(), s.sample.at.0))
            .collect()
    };
    assert_eq!(
        seen(85_000),
        vec![
            ("b".into(), 90_000),
            ("a".into(), 100_000),
            ("a".into(), 110_000)
        ]
    );
    assert_eq!(
        seen(95_000),
        vec![("a".into(), 100_000), ("a".into(), 110_000)]
    );
    assert_eq!(seen(90_000).len(), 3, "`since` is inclusive");
    assert_eq!(seen(120_000), vec![]);
}

#[test]
fn samples_of_regions_reads_only_their_nodes() {
    let (_dir, store) = open_temp();
    for (id, region, address) in [("a", "jp", "127.0.0.2"), ("b", "sg", "127.0.0.3")] {
        store
            .nodes()
            .register(&new_node(id, region, address, 0), "join")
            .unwrap();
    }
    store
        .samples()
        .record_heartbeats(&[beat("a", 10_000, Some(0.5)), beat("b", 10_000, Some(0.6))])
        .unwrap();
    let ids = |regions: Option<&[&str]>| -> Vec<String> {
        let regions: Option<BTreeSet<String>> =
            regions.map(|r| r.iter().map(|&r| r.to_owned()).collect());
        store
            .samples()
            .samples_of(Timestamp(0), regions.as_ref())
            .unwrap()
            .into_iter()
            .map(|s| s.node_id.to_string())
            .collect()
    };
    assert_eq!(ids(None), ["a", "b"]);
    assert_eq!(ids(Some(&["sg"])), ["b"]);
    assert_eq!(ids(Some(&["jp", "sg"])), ["a", "b"]);
    assert_eq!(ids(Some(&["us"])), Vec::<String>::new());
    assert_eq!(ids(Some(&[])), Vec::<String>::new());
}

#[test]
fn a_batch_larger_than_a_chunk_with_repeated_nodes_applies_in_order() {
    let (_dir, store) = open_temp();
    let count = ROUND_CHUNK + 22;
    let ids: Vec<String> = (0..count).map(|i| format!("n{i:03}")).collect();
    for (i, id) in ids.iter().enumerate() {
        let address = format!("127.0.{}.{}", i / 200 + 1, i % 200 + 2);
        store
            .nodes()
            .register(&new_node(id, "jp", &address, 0), "join")
            .unwrap();
    }
    // Each node twice (the second newer, so it wins), a ghost between.
    let mut batch: Vec<Heartbeat> = ids.iter().map(|id| beat(id, 100_000, Some(0.25))).collect();
    batch.push(beat("ghost", 100_000, Some(0.5)));
    batch.extend(ids.iter().map(|id| beat(id, 200_000, Some(0.75))));
    let outcome = store.samples().record_heartbeats(&batch).unwrap();
    assert_eq!(outcome.applied, 2 * count);
    assert_eq!(outcome.unknown, vec!["ghost".to_owned()]);
    assert_eq!(outcome.sampled, 2 * count, "100 s apart: both samples kept");
    for id in [
        &ids[0],
        &ids[ROUND_CHUNK - 1],
        &ids[ROUND_CHUNK],
        &ids[count - 1],
    ] {
        let node = store.nodes().get(id).unwrap().unwrap();
        assert_eq!(node.node.last_heartbeat, Some(Timestamp(200_000)), "{id}");
        assert_eq!(node.node.metrics, Some(metrics(0.75)), "{id}");
        assert_eq!(samples_of(&store, id), 2, "{id}");
    }
    // An older heartbeat in a later batch moves nothing back.
    store
        .samples()
        .record_heartbeats(&[beat(&ids[3], 150_000, Some(0.1))])
        .unwrap();
    let node = store.nodes().get(&ids[3]).unwrap().unwrap();
    assert_eq!(node.node.last_heartbeat, Some(Timestamp(200_000)));
    assert_eq!(node.node.metrics, Some(metrics(0.75)));
}

on_postgres!(
    heartbeats_update_the_node_and_append_samples_in_one_batch,
    a_late_heartbeat_never_moves_liveness_or_metrics_backwards,
    metrics_that_are_not_numbers_come_back_as_nan_without_failing_the_batch,
    samples_older_than_the_retention_window_are_pruned_as_heartbeats_arrive,
    a_node_heartbeating_too_fast_keeps_at_most_the_per_node_cap,
    the_spacing_keeps_any_window_within_the_cap,
    prune_catches_up_in_bounded_steps,
    a_late_batch_is_found_and_returned_in_time_order,
    samples_of_regions_reads_only_their_nodes,
    a_batch_larger_than_a_chunk_with_repeated_nodes_applies_in_order,
);
