//! The heartbeat writer: heartbeats are accepted in memory at once and
//! written to SQLite in batches (one transaction per batch), so the node API
//! sustains thousands of heartbeats per second. Also checkpoints the WAL off
//! the request path. The queue in front of it is bounded (`--heartbeat-queue`),
//! and `backlog::Backlog` tells how far behind it is; what a full queue or a late
//! writer means for a heartbeat, the node API decides
//! (`api::nodes::accept_heartbeat`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use neutral_store::{Heartbeat, Timestamp};
use tokio::sync::mpsc;

use crate::app::App;
use crate::shutdown::Shutdown;

/// Largest batch written in one transaction: a writer that fell behind
/// catches up in few large transactions (on PostgreSQL, sixteen 512-row
/// chunks of two statements each) rather than many.
const MAX_BATCH: usize = 8000;
/// A writer this far behind (its batch's oldest heartbeat has waited this
/// long) writes only each node's newest heartbeats of the batch
/// ([`newest_per_node`]): the others see a node's heartbeats only once
/// stored, and judge silence at most a heartbeat timeout behind, so a
/// writer that falls further behind than that takes live nodes down in
/// their eyes. Three replicas at 5,000/s on 2 cores with other processes
/// burning both ran writers 7.9-9.7 s behind (timeout 6 s) and took 6,666
/// nodes down; a backlog of seconds holds each node several times.
const COALESCE_BEHIND: Duration = Duration::from_secs(1);
/// How long the first heartbeat of a batch may wait for company.
const MAX_DELAY: Duration = Duration::from_millis(100);
/// How long a stopping daemon keeps writing its queued heartbeats.
const FLUSH_WITHIN: Duration = Duration::from_secs(5);
/// The heartbeat writer waits before each batch while this env var's file
/// exists (its queue fills; overload tests only).
pub const FAULT_HOLD_HEARTBEAT_WRITER: &str = "NEUTRAL_FAULT_HOLD_HEARTBEAT_WRITER";
/// How long the writer may be held by [`FAULT_HOLD_HEARTBEAT_WRITER`].
const HOLD_AT_MOST: Duration = Duration::from_secs(60);

pub async fn run(app: Arc<App>, mut rx: mpsc::Receiver<Heartbeat>, mut shutdown: Shutdown) {
    let hold = std::env::var_os(FAULT_HOLD_HEARTBEAT_WRITER).map(std::path::PathBuf::from);
    let mut checkpoint = tokio::time::interval(Duration::from_secs(1));
    checkpoint.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            first = rx.recv() => {
                let Some(first) = first else { break };
                app.heartbeat_backlog.taken(first.at);
                if let Some(hold) = &hold {
                    hold_while_armed(hold).await;
                }
                let mut batch = vec![first];
                let deadline = tokio::time::Instant::now() + MAX_DELAY;
                while batch.len() < MAX_BATCH {
                    match tokio::time::timeout_at(deadline, rx.recv()).await {
                        Ok(Some(heartbeat)) => batch.push(heartbeat),
                        Ok(None) | Err(_) => break,
                    }
                }
                write(&app, batch).await;
                app.heartbeat_backlog.committed(rx.is_empty());
            }
            _ = checkpoint.tick() => {
                let _ = app.with_store(neutral_store::Store::checkpoint).await;
            }
            () = shutdown.wait() => break,
        }
    }
    // Flush what is queued before the process exits, for at most
    // FLUSH_WITHIN: a full queue on a busy shared store can take longer
    // than a service manager waits for a stop. What is left is only the
    // stored copy of heartbeats already counted in memory; the agents'
    // next heartbeats (to another replica, when there is one) replace it.
    let deadline = tokio::time::Instant::now() + FLUSH_WITHIN;
    let mut written = 0usize;
    loop {
        let mut batch = Vec::new();
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(heartbeat) => batch.push(heartbeat),
                Err(_) => break,
            }
        }
        if batch.is_empty() {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            let left = batch.len().saturating_add(rx.len());
            tracing::warn!(
                written,
                left,
                within_s = FLUSH_WITHIN.as_secs(),
                "stopping: queued heartbeats not written to the store in time"
            );
            break;
        }
        written = written.saturating_add(batch.len());
        write(&app, batch).await;
    }
}

/// Waits while the fault file `arm` exists, at most [`HOLD_AT_MOST`].
async fn hold_while_armed(arm: &std::path::Path) {
    let started = tokio::time::Instant::now();
    while arm.exists() && started.elapsed() < HOLD_AT_MOST {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `batch` without the heartbeats another one of the same node supersedes,
/// in batch order, and how many were left out. Each node keeps what the
/// store would end up with: its latest heartbeat (`last_heartbeat` never
/// moves back) and its latest carrying metrics (the store keeps the
/// latest metrics), the later in the batch among equals. What is lost is
/// the metric samples of the heartbeats left out.
fn newest_per_node(batch: Vec<Heartbeat>) -> (Vec<Heartbeat>, usize) {
    type Latest = (Timestamp, usize);
    let total = batch.len();
    // Per node: its latest heartbeat, and its latest with metrics, as
    // (at, index); a later index wins among equal times.
    let mut latest: HashMap<&str, (Latest, Option<Latest>)> = HashMap::with_capacity(total);
    for (index, heartbeat) in batch.iter().enumerate() {
        let this = (heartbeat.at, index);
        let entry = latest
            .entry(heartbeat.node_id.as_str())
            .or_insert((this, None));
        entry.0 = entry.0.max(this);
        if heartbeat.metrics.is_some() {
            entry.1 = entry.1.max(Some(this));
        }
    }
    let mut keep = vec![false; total];
    for ((_, newest), with_metrics) in latest.into_values() {
        for index in std::iter::once(newest).chain(with_metrics.map(|(_, index)| index)) {
            if let Some(slot) = keep.get_mut(index) {
                *slot = true;
            }
        }
    }
    let kept: Vec<Heartbeat> = batch
        .into_iter()
        .zip(keep)
        .filter_map(|(heartbeat, keep)| keep.then_some(heartbeat))
        .collect();
    let left_out = total - kept.len();
    (kept, left_out)
}

async fn write(app: &App, batch: Vec<Heartbeat>) {
    // The batch's own age, also in the flush at stop, which takes batches
    // without noting them in the backlog.
    let behind = batch
        .first()
        .is_some_and(|first| crate::world::now().since(first.at) >= COALESCE_BEHIND);
    let batch = if behind {
        let (kept, left_out) = newest_per_node(batch);
        app.counters.heartbeats_coalesced.inc_by(left_out as u64);
        kept
    } else {
        batch
    };
    match app
        .with_store(move |s| s.samples().record_heartbeats(&batch))
        .await
    {
        Ok(outcome) if !outcome.unknown.is_empty() => {
            tracing::debug!(
                unknown = outcome.unknown.len(),
                "heartbeats of deleted nodes dropped"
            );
        }
        Ok(_) => {}
        Err(err) => tracing::error!(error = %format!("{err:#}"), "cannot store heartbeats"),
    }
}

#[cfg(test)]
mod tests {
    use neutral_core::model::Metrics;
    use proptest::prelude::*;

    use super::*;

    fn beat(node: &str, at: i64, cpu: Option<f64>) -> Heartbeat {
        Heartbeat {
            node_id: node.to_owned(),
            at: Timestamp(at),
            metrics: cpu.map(|cpu| Metrics {
                cpu,
                rtt_ms: 1.0,
                error_rate: 0.0,
            }),
        }
    }

    fn shape(batch: &[Heartbeat]) -> Vec<(String, i64, Option<f64>)> {
        batch
            .iter()
            .map(|h| (h.node_id.clone(), h.at.0, h.metrics.map(|m| m.cpu)))
            .collect()
    }

    #[test]
    fn each_node_keeps_its_newest_heartbeat_and_its_newest_metrics_in_batch_order() {
        let batch = vec![
            beat("a", 1, Some(0.1)),
            beat("b", 2, Some(0.2)),
            beat("a", 3, Some(0.3)),
            beat("c", 4, None),
            beat("b", 5, Some(0.5)),
            beat("a", 6, None),
            beat("b", 7, Some(0.7)),
        ];
        let (kept, left_out) = newest_per_node(batch);
        assert_eq!(left_out, 3);
        assert_eq!(
            shape(&kept),
            [
                ("a".to_owned(), 3, Some(0.3)),
                ("c".to_owned(), 4, None),
                ("a".to_owned(), 6, None),
                ("b".to_owned(), 7, Some(0.7)),
            ]
        );
    }

    proptest! {
        /// What the store derives from a batch — each node's newest
        /// heartbeat and newest metrics — is the same with or without the
        /// heartbeats left out, which keep their order.
        #[test]
        fn what_the_store_keeps_of_a_node_is_unchanged(
            beats in proptest::collection::vec((0u8..6, 0i64..1_000, proptest::option::of(0.0f64..1.0)), 0..200)
        ) {
            let batch: Vec<Heartbeat> = beats
                .iter()
                .map(|(node, at, cpu)| beat(&format!("n{node}"), *at, *cpu))
                .collect();
            let (kept, left_out) = newest_per_node(batch.clone());
            prop_assert_eq!(kept.len() + left_out, batch.len());
            // A subsequence of the batch.
            let mut rest = batch.iter().map(|h| (h.node_id.clone(), h.at, h.metrics));
            for h in &kept {
                let wanted = (h.node_id.clone(), h.at, h.metrics);
                prop_assert!(rest.any(|x| x == wanted));
            }
            let derived = |beats: &[Heartbeat]| {
                // Per node: latest `at`, and (at, cpu bits) of its metrics.
                let mut per_node: std::collections::BTreeMap<String, (i64, Option<(i64, u64)>)> =
                    std::collections::BTreeMap::new();
                for h in beats {
                    let entry = per_node.entry(h.node_id.clone()).or_insert((i64::MIN, None));
                    entry.0 = entry.0.max(h.at.0);
                    if let Some(m) = h.metrics {
                        // Applied in order, metrics no older than the
                        // stored ones replace them.
                        if entry.1.is_none_or(|(at, _)| h.at.0 >= at) {
                            entry.1 = Some((h.at.0, m.cpu.to_bits()));
                        }
                    }
                }
                per_node.into_iter().collect::<Vec<_>>()
            };
            prop_assert_eq!(derived(&kept), derived(&batch));
            // At most two a node.
            let mut counts = std::collections::BTreeMap::new();
            for h in &kept {
                *counts.entry(h.node_id.clone()).or_insert(0) += 1;
            }
            prop_assert!(counts.values().all(|n| *n <= 2));
        }
    }
}
