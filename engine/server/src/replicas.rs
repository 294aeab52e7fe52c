//! What replicas on one PostgreSQL store learn from each other through it,
//! every [`EVERY`]: the nodes registered or deleted on another replica, the
//! heartbeats another replica received, and — on a follower — the node
//! statuses the leader decided.
//!
//! Only the leader decides node health (its reconcile and its probes run as
//! singleton tasks, `lib.rs`): a heartbeat any replica received counts once,
//! when the leader reads it here; followers adopt the statuses it stored and
//! recompute their answers, so every replica's DNS serves the same nodes a
//! moment later. This module must not decide a status itself.
//!
//! (A quorum of vantage points, where each replica probes and the status is
//! their majority, is not built: the leader's probes alone decide.)

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use neutral_core::liveness::Liveness;
use neutral_core::model::NodeStatus;
use neutral_store::{NodeRecord, TokenHash};

use crate::app::App;
use crate::shutdown::Shutdown;
use crate::world::{NodeEntry, now};

/// How often a replica reads the others' node changes.
pub const EVERY: Duration = Duration::from_millis(500);
/// A follower recomputes this often even without changes (slow-start ramps).
const RECOMPUTE_EVERY: Duration = Duration::from_secs(1);

pub async fn run(app: Arc<App>, mut shutdown: Shutdown) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_recompute = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.wait() => break,
        }
        let changed = mirror_once(&app).await;
        // Releases asked for on another replica, or finished there.
        crate::api::releases::load(&app).await;
        if app.leadership.leads() {
            if changed {
                app.reconcile("replicas").await;
            }
        } else if changed || last_recompute.elapsed() >= RECOMPUTE_EVERY {
            last_recompute = tokio::time::Instant::now();
            app.recompute("the leader's node statuses").await;
        }
    }
}

/// Reads the stored nodes once and folds them into this replica's world.
/// Returns whether anything the weights depend on changed.
async fn mirror_once(app: &Arc<App>) -> bool {
    let listed_at = now();
    let Ok(records) = app.with_store(|s| s.nodes().list()).await else {
        return false;
    };
    let stored: BTreeMap<String, NodeRecord> = records
        .into_iter()
        .map(|r| (r.node.id.clone(), r))
        .collect();
    // Nodes registered elsewhere need their token hash to heartbeat here:
    // read (all at once) only when there are such nodes.
    let unknown = {
        let world = app.read_world();
        stored.keys().any(|id| !world.nodes.contains_key(id))
    };
    let mut tokens: BTreeMap<String, TokenHash> = if unknown {
        app.with_store(|s| s.nodes().token_hashes())
            .await
            .unwrap_or_default()
    } else {
        BTreeMap::new()
    };
    let leads = app.leadership.leads();
    let at = now();
    let mut changed = false;
    let mut world = app.write_world();
    let before = world.nodes.len();
    // Deleted on another replica; a node registered here after the list was
    // read is not in it yet, and stays.
    world
        .nodes
        .retain(|id, entry| stored.contains_key(id) || entry.record.registered_at >= listed_at);
    changed |= world.nodes.len() != before;
    let decl = Arc::clone(&world.decl);
    for (id, record) in stored {
        let Some(entry) = world.nodes.get_mut(&id) else {
            let Some(token) = tokens.remove(&id) else {
                continue;
            };
            let mut liveness = Liveness::registered(record.registered_at);
            liveness.drained = record.node.status == NodeStatus::Drain;
            let entry = NodeEntry::new(record, token, liveness, &app.settings.liveness, &decl, at);
            world.nodes.insert(id, entry);
            changed = true;
            continue;
        };
        // A heartbeat another replica received (this replica's own are
        // stored too, never newer than what it saw).
        if let Some(heartbeat) = record.node.last_heartbeat
            && heartbeat > entry.liveness.last_heartbeat
        {
            entry.liveness.heartbeat(heartbeat, &entry.settings);
            entry.record.node.last_heartbeat = Some(heartbeat);
            changed |= leads;
        }
        if record.metrics_at > entry.record.metrics_at {
            entry.record.node.metrics = record.node.metrics;
            entry.record.metrics_at = record.metrics_at;
        }
        let newer = record.node.status_since > entry.record.node.status_since;
        if leads {
            // A drain or undrain asked of another replica.
            let drained = record.node.status == NodeStatus::Drain;
            if newer && drained != entry.liveness.drained {
                entry.liveness.drained = drained;
                changed = true;
            }
        } else if newer || record.node.status != entry.record.node.status {
            // The leader decided.
            entry.liveness.drained = record.node.status == NodeStatus::Drain;
            // The split-brain guard counts only nodes that were ever ready.
            entry.liveness.ever_ready |= record.node.status == NodeStatus::Up;
            entry.record.node.status = record.node.status;
            entry.record.node.status_since = record.node.status_since;
            entry.record.status_reason = record.status_reason;
            changed = true;
        }
    }
    changed
}
