//! What replicas on one PostgreSQL store learn from each other through it,
//! every [`EVERY`]: the nodes registered or deleted on another replica, the
//! heartbeats another replica received, each replica's verdict on each node,
//! the DNS zones written through another replica's API, and — on a
//! follower — the node statuses the leader decided. Each read asks the
//! store only for the nodes and verdicts written since the previous one
//! (the store's change counter), so its cost follows the heartbeats and
//! changes of the last half second, not the number of nodes.
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

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use neutral_core::liveness::Liveness;
use neutral_core::model::{MetricSample, NodeStatus, Timestamp};
use neutral_core::quorum::Verdict;
use neutral_store::{VerdictChange, VerdictChanges};

use crate::app::App;
use crate::shutdown::Shutdown;
use crate::world::{NodeEntry, PeerWriters, Vantage, now};

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
    let renewer = tokio::spawn(renew_presence(
        Arc::clone(&app),
        Arc::clone(&published.exchanged_at),
        shutdown.clone(),
    ));
    let mut others = Others::default();
    let mut nodes_through = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            // A flipped verdict of this replica's goes out at once.
            () = app.verdict_changed.notified() => {}
            () = shutdown.wait() => break,
        }
        let mut changed = mirror_once(&app, &mut nodes_through, &mut others).await;
        changed |= exchange_verdicts(&app, &mut published, &mut others).await;
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
    // Stopping cleanly: this replica's verdicts stop counting at once. The
    // renewer stopped with the rest first (and a renewal after the
    // withdrawal would find no presence to renew).
    let _ = renewer.await;
    let replica = app.leadership.replica.clone();
    if let Err(err) = app
        .with_store(move |s| s.verdicts().withdraw(&replica))
        .await
    {
        tracing::warn!(error = %format!("{err:#}"), "cannot withdraw this replica's verdicts");
    }
}

/// Renews this replica's presence every [`EVERY`] on its own while its
/// last exchange is recent (`exchanged_at`, [`renews`]): under load an exchange can wait
/// seconds behind the store's serialized writes (heartbeat batches, this
/// replica's or another's) or behind a slow read, and a replica whose
/// presence lapses drops out of the others' quorum, which then judge
/// without it, up to now, heartbeats they have not read yet (the ingest
/// bench saw a replica judge alone for 3 s at 17,766 heartbeats/s on 2
/// cores). Its verdicts, as last published, keep counting: they are
/// judged up to what it had read, never past.
async fn renew_presence(app: Arc<App>, exchanged_at: Arc<AtomicI64>, mut shutdown: Shutdown) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.wait() => break,
        }
        if !renews(exchanged_at.load(Ordering::Relaxed), now()) {
            continue;
        }
        let replica = app.leadership.replica.clone();
        let stored_through = app.heartbeat_backlog.stored_through(now());
        let renewed = app
            .with_store(move |s| s.verdicts().renew_presence(&replica, stored_through))
            .await;
        match renewed {
            Ok(_) => failing = false,
            Err(err) if !failing => {
                failing = true;
                tracing::warn!(error = %format!("{err:#}"), "cannot renew this replica's presence; the exchange renews it when it gets through");
            }
            Err(_) => {}
        }
    }
}

/// Whether to renew the presence at `now` of a replica whose last exchange
/// got through at `exchanged_at` (0: none yet). Never before the first (a
/// restarted replica's old verdicts must not count as its own), and not
/// once the exchange has been stuck for [`STUCK_AFTER`]: its verdicts, as
/// last published, would go on counting however stale (with two replicas
/// and a majority, a stale "ready" would keep a dead node up).
fn renews(exchanged_at: i64, now: Timestamp) -> bool {
    exchanged_at > 0 && now.since(Timestamp(exchanged_at)) <= STUCK_AFTER
}

/// An exchange that has not got through for this long no longer keeps its
/// replica present: under load one took up to a few seconds.
const STUCK_AFTER: Duration = Duration::from_secs(10);

/// This replica's verdicts as last written to the store.
#[derive(Debug, Default)]
struct Published {
    verdicts: BTreeMap<String, (bool, String)>,
    /// Whether every verdict must be written again (at start, after a
    /// failed write).
    stale: bool,
    /// When a publish last got through, in ms (0: none yet; once one has,
    /// this process's presence exists): what [`renew_presence`] reads.
    exchanged_at: Arc<AtomicI64>,
}

/// The other replicas' verdicts as read so far (of live replicas and not),
/// kept between reads so each read fetches only the changed ones.
#[derive(Debug, Default)]
struct Others {
    /// Per node, per replica (never this one), the last verdict read.
    by_node: BTreeMap<String, BTreeMap<String, (bool, String)>>,
    /// The live replicas at the last read.
    live: Vec<String>,
    /// Where the next read of verdicts starts (`None`: read them all).
    through: Option<i64>,
    /// How far the live others' heartbeat writers had stored at the last
    /// read; [`mirror_once`] hands it to the world once a read of the
    /// nodes that began after it is complete.
    writers: Option<PeerWriters>,
    /// Whether `by_node` or `live` changed since [`Vantage`] was built.
    dirty: bool,
    /// Exchanges since verdicts on nodes this replica no longer knows were
    /// last dropped ([`PRUNE_EVERY`]).
    since_pruned: u32,
}

/// Every this many exchanges (a minute), verdicts on nodes that are gone
/// are dropped: a replica that judged a node after this one saw it deleted
/// leaves a verdict whose removal no read reports.
const PRUNE_EVERY: u32 = 120;

impl Others {
    /// Forgets the verdicts on node `id` (deleted).
    fn forget(&mut self, id: &str) {
        self.dirty |= self.by_node.remove(id).is_some();
    }

    /// The live replicas' verdicts as [`World::vantage`](crate::world::World)
    /// holds them.
    fn vantage(&self, replica: &str) -> Vantage {
        // This replica renewed its presence in the same exchange: it is live.
        let live = self.live.len().max(1);
        let others = self
            .by_node
            .iter()
            .filter_map(|(node, verdicts)| {
                let counted: Vec<Verdict> = verdicts
                    .iter()
                    .filter(|(other, _)| self.live.contains(*other))
                    .map(|(other, (ready, detail))| Verdict {
                        replica: other.clone(),
                        ready: *ready,
                        detail: detail.clone(),
                    })
                    .collect();
                (!counted.is_empty()).then(|| (node.clone(), counted))
            })
            .collect();
        Vantage {
            replica: replica.to_owned(),
            live,
            others,
        }
    }
}

/// Writes this replica's changed verdicts (renewing its presence), reads
/// the verdicts the others changed since the last read, and when anything
/// changed sets [`World::vantage`](crate::world::World) to the live
/// replicas' verdicts. Returns whether what the others see changed.
async fn exchange_verdicts(app: &Arc<App>, published: &mut Published, others: &mut Others) -> bool {
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
    let since = others.through;
    let stored_through = app.heartbeat_backlog.stored_through(now());
    let read = app
        .with_store(move |s| {
            s.verdicts().publish(&replica, stored_through, &changes)?;
            s.verdicts().changes_since(LIVE_WITHIN, since)
        })
        .await;
    let read = match read {
        Ok(read) => {
            published.verdicts = own;
            published.stale = false;
            published.exchanged_at.store(now().0, Ordering::Relaxed);
            read
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
    let hold = app.settings.liveness.heartbeat_timeout;
    fold_verdicts(others, &app.leadership.replica, read, now(), hold);
    others.since_pruned += 1;
    if others.since_pruned >= PRUNE_EVERY {
        others.since_pruned = 0;
        let world = app.read_world();
        let before = others.by_node.len();
        others.by_node.retain(|id, _| world.nodes.contains_key(id));
        others.dirty |= others.by_node.len() != before;
    }
    if !others.dirty && app.read_world().vantage.is_some() {
        return false;
    }
    others.dirty = false;
    let vantage = Some(others.vantage(&app.leadership.replica));
    let mut world = app.write_world();
    let changed = world.vantage != vantage;
    world.vantage = vantage;
    changed
}

/// Folds one read of the others' verdicts into what this replica knows;
/// `read_at` (when it ended) stands for the mark of a live replica that
/// said none (an earlier version), and `hold` is
/// [`PeerWriters::hold_at_most`].
fn fold_verdicts(
    others: &mut Others,
    replica: &str,
    read: VerdictChanges,
    read_at: Timestamp,
    hold: Duration,
) {
    if read.complete {
        others.by_node.clear();
        others.dirty = true;
    }
    for stored in read.verdicts {
        if stored.replica == replica {
            continue;
        }
        let verdict = (stored.ready, stored.detail);
        let previous = others
            .by_node
            .entry(stored.node_id)
            .or_default()
            .insert(stored.replica, verdict.clone());
        others.dirty |= previous != Some(verdict);
    }
    let marks: Vec<Timestamp> = read
        .live
        .iter()
        .filter(|other| *other != replica)
        .map(|other| {
            read.stored_through
                .get(other)
                .map_or(read_at, |mark| (*mark).min(read_at))
        })
        .collect();
    // No other live replica: the last marks stay, dated, for
    // `World::judged_at` to go on holding judgement back for a while.
    if let Some((oldest, newest)) = marks.iter().min().zip(marks.iter().max()) {
        others.writers = Some(PeerWriters {
            stored_through: *oldest,
            least_behind: *newest,
            hold_at_most: hold,
            seen_at: read_at,
        });
    }
    if others.live != read.live {
        others.live = read.live;
        others.dirty = true;
    }
    others.through = Some(read.through);
}

/// Reads the nodes written or deleted since the last read (`through`; all of
/// them the first time) and folds them into this replica's world. Returns
/// whether anything the weights depend on changed.
async fn mirror_once(app: &Arc<App>, through: &mut Option<i64>, others: &mut Others) -> bool {
    let listed_at = now();
    let since = *through;
    let Ok(read) = app
        .with_store(move |s| s.nodes().changes_since(since))
        .await
    else {
        return false;
    };
    *through = Some(read.through);
    let leads = app.leadership.leads();
    let at = now();
    let mut changed = false;
    let mut guard = app.write_world();
    let world = &mut *guard;
    // Every heartbeat stored before the read began is in it; so is every
    // heartbeat the others had stored when their marks were read (before).
    world.heard_as_of = Some(world.heard_as_of.map_or(listed_at, |t| t.max(listed_at)));
    world.peer_writers = others.writers;
    let before = world.nodes.len();
    // Deleted on another replica; a node registered here after the read
    // is not in it yet, and stays.
    let gone = |entry: &NodeEntry| entry.record.registered_at < listed_at;
    if read.complete {
        let stored: BTreeSet<&str> = read.nodes.iter().map(|(r, _)| r.node.id.as_str()).collect();
        let deleted: Vec<String> = world
            .nodes
            .iter()
            .filter(|(id, entry)| !stored.contains(id.as_str()) && gone(entry))
            .map(|(id, _)| id.clone())
            .collect();
        for id in deleted {
            world.nodes.remove(&id);
        }
        others.by_node.retain(|id, _| stored.contains(id.as_str()));
        others.dirty = true;
    } else {
        for id in &read.deleted {
            if world.nodes.get(id).is_some_and(gone) {
                world.nodes.remove(id);
            }
            others.forget(id);
        }
    }
    changed |= world.nodes.len() != before;
    let decl = Arc::clone(&world.decl);
    for (record, token) in read.nodes {
        let id = record.node.id.clone();
        let new_here = match world.nodes.get(&id) {
            None => true,
            // Registered again on another replica (a new token).
            Some(entry) => record.registered_at > entry.record.registered_at,
        };
        if new_here {
            let mut liveness = Liveness::registered(record.registered_at);
            liveness.drained = record.node.status == NodeStatus::Drain;
            let heartbeat = record.node.last_heartbeat;
            let mut entry =
                NodeEntry::new(record, token, liveness, &app.settings.liveness, &decl, at);
            // Read once: a heartbeat received elsewhere before this read is
            // not read again.
            if let Some(heartbeat) = heartbeat {
                entry.liveness.heartbeat(heartbeat, &entry.settings);
            }
            world.nodes.insert(id, entry);
            changed = true;
            continue;
        }
        let Some(mut entry) = world.nodes.get_mut(&id) else {
            continue;
        };
        let entry = &mut *entry;
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
            if let (Some(metrics), Some(at)) = (record.node.metrics, record.metrics_at) {
                world
                    .samples
                    .note(&id, &entry.record.node.region, MetricSample { at, metrics });
            }
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
            // The split-brain guard counts only nodes that were ever up.
            entry.ever_up |= record.node.status == NodeStatus::Up;
            entry.record.node.status = record.node.status;
            entry.record.node.status_since = record.node.status_since;
            entry.record.status_reason = record.status_reason;
            changed = true;
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use neutral_store::StoredVerdict;

    #[test]
    fn presence_is_renewed_after_the_first_exchange_until_the_exchange_is_stuck() {
        let at = Timestamp(1_000_000);
        assert!(!renews(0, at), "before the first exchange");
        assert!(renews(at.0, at));
        assert!(renews(at.0, at.plus(STUCK_AFTER)));
        assert!(!renews(
            at.0,
            at.plus(STUCK_AFTER + Duration::from_millis(1))
        ));
    }

    fn stored(replica: &str, node: &str, ready: bool) -> StoredVerdict {
        StoredVerdict {
            replica: replica.into(),
            node_id: node.into(),
            ready,
            detail: format!("{replica} on {node}"),
        }
    }

    /// A read of `verdicts` through change `through`, with replicas `a` and
    /// `me` live.
    fn read(through: i64, complete: bool, verdicts: Vec<StoredVerdict>) -> VerdictChanges {
        VerdictChanges {
            through,
            complete,
            live: vec!["a".into(), "me".into()],
            stored_through: BTreeMap::new(),
            verdicts,
        }
    }

    const READ_AT: Timestamp = Timestamp(50_000);
    const HOLD: Duration = Duration::from_secs(3);

    /// Folds `read` in at [`READ_AT`].
    fn fold(others: &mut Others, read: VerdictChanges) {
        fold_verdicts(others, "me", read, READ_AT, HOLD);
    }

    #[test]
    fn only_live_replicas_verdicts_count_and_a_read_folds_in_what_changed() {
        let mut others = Others::default();
        fold(
            &mut others,
            read(
                5,
                true,
                vec![
                    stored("a", "n1", false),
                    stored("gone", "n1", false),
                    stored("me", "n1", true),
                ],
            ),
        );
        let vantage = others.vantage("me");
        assert_eq!(vantage.live, 2);
        let on_n1: Vec<&str> = vantage.others["n1"]
            .iter()
            .map(|v| v.replica.as_str())
            .collect();
        assert_eq!(on_n1, ["a"], "not this replica's own, not a dead one's");
        assert_eq!(others.through, Some(5));

        // An incremental read: a's verdict changes, nothing else is lost.
        others.dirty = false;
        fold(&mut others, read(9, false, vec![stored("a", "n1", true)]));
        assert!(others.dirty);
        assert!(others.vantage("me").others["n1"][0].ready);
        others.dirty = false;
        fold(&mut others, read(9, false, vec![]));
        assert!(!others.dirty, "nothing changed");
    }

    #[test]
    fn the_others_writer_marks_are_read_without_this_replicas_own() {
        let mut others = Others::default();
        let mut three = read(5, true, vec![]);
        three.live = vec!["a".into(), "b".into(), "me".into()];
        three.stored_through = BTreeMap::from([
            ("a".to_owned(), Timestamp(44_000)),
            ("b".to_owned(), Timestamp(49_000)),
            ("me".to_owned(), Timestamp(1_000)),
        ]);
        fold(&mut others, three.clone());
        assert_eq!(
            others.writers,
            Some(PeerWriters {
                stored_through: Timestamp(44_000),
                least_behind: Timestamp(49_000),
                hold_at_most: HOLD,
                seen_at: READ_AT,
            })
        );
        // A live replica that says nothing (an earlier version) counts as
        // not behind; a mark ahead of this replica's clock as now.
        three.stored_through.remove("a");
        three.stored_through.insert("b".into(), Timestamp(90_000));
        fold(&mut others, three.clone());
        let writers = others.writers.unwrap();
        assert_eq!(
            (writers.stored_through, writers.least_behind),
            (READ_AT, READ_AT)
        );
        // Alone: the last marks stay, dated by the read that saw them.
        three.live = vec!["me".into()];
        fold_verdicts(&mut others, "me", three, Timestamp(60_000), HOLD);
        assert_eq!(others.writers, Some(writers));
    }
}
