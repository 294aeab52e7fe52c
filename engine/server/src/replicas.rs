//! What replicas on one PostgreSQL store learn from each other through it,
//! every [`EVERY`]: the nodes registered or deleted on another replica, the
//! heartbeats another replica received, each replica's verdict on each node,
//! the DNS zones written through another replica's API, and — on a
//! follower — the node statuses the leader decided.
//!
//! Every replica probes every node from where it stands and publishes its
//! own verdict (its liveness: its probes, and the heartbeats all replicas
//! share, each counted once whichever replica received it). Only the leader
//! decides a status: its reconcile (a singleton task, `lib.rs`) counts the
//! live replicas' verdicts against the domain's `health.quorum`
//! (`neutral_core::quorum`), so a replica cut off from a region cannot take
//! it down alone. Followers adopt the statuses it stored and recompute their
//! answers, so every replica's DNS serves the same nodes a moment later.
//! This module moves verdicts and statuses; it must not decide a status.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use neutral_core::liveness::Liveness;
use neutral_core::model::NodeStatus;
use neutral_core::quorum::Verdict;
use neutral_store::{NodeRecord, TokenHash, VantagePoints, VerdictChange};

use crate::app::App;
use crate::shutdown::Shutdown;
use crate::world::{NodeEntry, Vantage, now};

/// How often a replica reads the others' node changes.
pub const EVERY: Duration = Duration::from_millis(500);
/// A follower recomputes this often even without changes (slow-start ramps).
const RECOMPUTE_EVERY: Duration = Duration::from_secs(1);

/// A replica whose presence is older than this is not live: its verdicts
/// no longer count.
const LIVE_WITHIN: Duration = Duration::from_secs(3);

pub async fn run(app: Arc<App>, mut shutdown: Shutdown) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_recompute = tokio::time::Instant::now();
    let mut published = Published::default();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            // A flipped verdict of this replica's goes out at once.
            () = app.verdict_changed.notified() => {}
            () = shutdown.wait() => break,
        }
        let mut changed = mirror_once(&app).await;
        changed |= exchange_verdicts(&app, &mut published).await;
        // Zones another replica's API wrote (a Terraform apply through it):
        // every replica's DNS serves the same records.
        if let Err(err) = crate::api::mirror_zones(&app).await {
            tracing::warn!(error = %format!("{err:#}"), "cannot read the stored DNS zones");
        }
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
    // Stopping cleanly: this replica's verdicts stop counting at once.
    let replica = app.leadership.replica.clone();
    if let Err(err) = app
        .with_store(move |s| s.verdicts().withdraw(&replica))
        .await
    {
        tracing::warn!(error = %format!("{err:#}"), "cannot withdraw this replica's verdicts");
    }
}

/// This replica's verdicts as last written to the store.
#[derive(Debug, Default)]
struct Published {
    verdicts: BTreeMap<String, (bool, String)>,
    /// Whether every verdict must be written again (at start, after a
    /// failed write).
    stale: bool,
}

/// Writes this replica's changed verdicts (renewing its presence) and
/// reads the live replicas' into [`World::vantage`](crate::world::World).
/// Returns whether what the others see changed.
async fn exchange_verdicts(app: &Arc<App>, published: &mut Published) -> bool {
    let own = app.write_world().own_verdicts(now());
    let mut changes: Vec<VerdictChange> = own
        .iter()
        .filter(|(id, verdict)| published.stale || published.verdicts.get(*id) != Some(verdict))
        .map(|(id, verdict)| VerdictChange {
            node_id: id.clone(),
            verdict: Some(verdict.clone()),
        })
        .collect();
    changes.extend(
        published
            .verdicts
            .keys()
            .filter(|id| !own.contains_key(*id))
            .map(|id| VerdictChange {
                node_id: id.clone(),
                verdict: None,
            }),
    );
    let replica = app.leadership.replica.clone();
    let read = app
        .with_store(move |s| {
            s.verdicts().publish(&replica, &changes)?;
            s.verdicts().live(LIVE_WITHIN)
        })
        .await;
    let vantage = match read {
        Ok(points) => {
            published.verdicts = own;
            published.stale = false;
            Some(vantage_of(&app.leadership.replica, points))
        }
        Err(err) => {
            // The others' last verdicts stay: judging alone on a store
            // hiccup would let a cut-off leader take a region down. A store
            // gone for longer ends the leader's lease anyway.
            published.stale = true;
            tracing::warn!(error = %format!("{err:#}"), "cannot exchange verdicts with the other replicas; keeping their last ones");
            return false;
        }
    };
    let mut world = app.write_world();
    let changed = world.vantage != vantage;
    world.vantage = vantage;
    changed
}

/// The other live replicas' verdicts, by node, as `replica` counts them.
fn vantage_of(replica: &str, points: VantagePoints) -> Vantage {
    // This replica renewed its presence in the same exchange: it is live.
    let live = points.live.len().max(1);
    let mut others: BTreeMap<String, Vec<Verdict>> = BTreeMap::new();
    for stored in points.verdicts {
        if stored.replica == replica {
            continue;
        }
        others.entry(stored.node_id).or_default().push(Verdict {
            replica: stored.replica,
            ready: stored.ready,
            detail: stored.detail,
        });
    }
    Vantage {
        replica: replica.to_owned(),
        live,
        others,
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
