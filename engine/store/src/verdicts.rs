//! What each control-plane replica sees of each node, shared through the
//! store so the leader can decide health by a quorum of vantage points
//! (`neutral_core::quorum`): one verdict row per (replica, node), written
//! only when it changes, and one presence row per replica, renewed on every
//! exchange and between them on its own ([`VerdictStore::renew_presence`]),
//! dated by the database's clock (so replicas' clocks never
//! decide which replicas are live). The presence also carries how far the
//! replica's heartbeat writer has stored, so the others know up to when
//! what they read of its heartbeats is complete.
//!
//! This module stores and reads verdicts. It must not count them or decide a
//! status: the daemon and the core do.

use std::collections::BTreeMap;
use std::sync::LazyLock;
use std::time::Duration;

use neutral_core::model::Timestamp;

use crate::changes::{self, STAMP};
use crate::db::{Dialect, Param, Tx, Value, params, typed_values_rows};
use crate::error::{During, Result};
use crate::leases::now_sql;
use crate::store::Store;

/// One replica's view of one node, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredVerdict {
    pub replica: String,
    pub node_id: String,
    pub ready: bool,
    pub detail: String,
}

/// A change to one replica's verdicts: a node's new verdict, or `None` when
/// the replica no longer judges the node (it was deleted).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerdictChange {
    pub node_id: String,
    pub verdict: Option<(bool, String)>,
}

/// The verdict view of a [`Store`].
#[derive(Clone, Copy, Debug)]
pub struct VerdictStore<'a> {
    pub(crate) store: &'a Store,
}

impl VerdictStore<'_> {
    /// Renews `replica`'s presence and applies its verdict `changes`, in one
    /// transaction. `stored_through`: every heartbeat `replica` received
    /// before it (by its own clock) is stored.
    pub fn publish(
        &self,
        replica: &str,
        stored_through: Timestamp,
        changes: &[VerdictChange],
    ) -> Result<()> {
        const OP: &str = "publish verdicts";
        self.store.write(OP, |tx| {
            let now = now_sql(tx.dialect());
            tx.execute(
                &format!(
                    "INSERT INTO vantage_points (replica, seen_at, stored_through)
                     VALUES (?1, {now}, ?2)
                     ON CONFLICT (replica) DO UPDATE SET
                         seen_at = excluded.seen_at, stored_through = excluded.stored_through"
                ),
                params![replica, stored_through.0],
            )
            .during(OP)?;
            if !changes.is_empty() {
                changes::bump(tx, OP)?;
            }
            let (set, dropped): (Vec<&VerdictChange>, Vec<&VerdictChange>) =
                changes.iter().partition(|change| change.verdict.is_some());
            match tx.dialect() {
                Dialect::Sqlite => set_one_by_one(tx, replica, &set)?,
                Dialect::Postgres => set_in_chunks(tx, replica, &set)?,
            }
            for change in dropped {
                tx.execute(
                    "DELETE FROM verdicts WHERE replica = ?1 AND node_id = ?2",
                    params![replica, change.node_id],
                )
                .during(OP)?;
            }
            Ok(())
        })
    }

    /// Renews `replica`'s presence alone, if it has one (a replica that
    /// never published, or withdrew, stays absent), without queueing behind
    /// the store's serialized writes: a replica whose verdict exchange waits
    /// behind heartbeat batches (its own or another replica's) is still
    /// alive, and must not drop out of the others' quorum for it. Returns
    /// whether a presence was renewed.
    pub fn renew_presence(&self, replica: &str, stored_through: Timestamp) -> Result<bool> {
        const OP: &str = "renew presence";
        self.store.write_unserialized(OP, |tx| {
            let now = now_sql(tx.dialect());
            let renewed = tx
                .execute(
                    &format!(
                        "UPDATE vantage_points SET seen_at = {now}, stored_through = ?2
                         WHERE replica = ?1"
                    ),
                    params![replica, stored_through.0],
                )
                .during(OP)?;
            Ok(renewed > 0)
        })
    }

    /// Drops every verdict of `replica` and its presence (a replica stopping
    /// cleanly, or starting afresh so old verdicts do not count for it).
    pub fn withdraw(&self, replica: &str) -> Result<()> {
        const OP: &str = "withdraw verdicts";
        self.store.write(OP, |tx| {
            tx.execute("DELETE FROM verdicts WHERE replica = ?1", params![replica])
                .during(OP)?;
            tx.execute(
                "DELETE FROM vantage_points WHERE replica = ?1",
                params![replica],
            )
            .during(OP)?;
            Ok(())
        })
    }
}

const PUBLISH: &str = "publish verdicts";

/// Writes verdicts one statement each (SQLite, where a statement is a
/// function call).
fn set_one_by_one(tx: &Tx<'_>, replica: &str, set: &[&VerdictChange]) -> Result<()> {
    let mut upsert = tx
        .prepare_cached(&format!(
            "INSERT INTO verdicts (replica, node_id, ready, detail, changed)
             VALUES (?1, ?2, ?3, ?4, {STAMP})
             ON CONFLICT (replica, node_id) DO UPDATE SET
                 ready = excluded.ready, detail = excluded.detail, changed = excluded.changed"
        ))
        .during(PUBLISH)?;
    for change in set {
        if let Some((ready, detail)) = &change.verdict {
            upsert
                .execute(params![replica, change.node_id, i64::from(*ready), detail])
                .during(PUBLISH)?;
        }
    }
    Ok(())
}

/// Rows of one statement of [`set_in_chunks`].
const CHUNK: usize = 128;

/// The statement of [`set_in_chunks`], built once: [`CHUNK`] rows, the
/// padding rows (NULL node) skipped.
static CHUNK_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO verdicts (replica, node_id, ready, detail, changed)
         SELECT CAST(?1 AS TEXT), b.node_id, b.ready, b.detail, {STAMP}
         FROM (VALUES {}) AS b(node_id, ready, detail)
         WHERE b.node_id IS NOT NULL
         ON CONFLICT (replica, node_id) DO UPDATE SET
             ready = excluded.ready, detail = excluded.detail, changed = excluded.changed",
        typed_values_rows(&["TEXT", "BIGINT", "TEXT"], 2, CHUNK)
    )
});

/// Writes verdicts [`CHUNK`] to a statement (PostgreSQL, where every
/// statement is a round trip made under the store-wide write lock: a
/// registration storm changes thousands of verdicts at once).
fn set_in_chunks(tx: &Tx<'_>, replica: &str, set: &[&VerdictChange]) -> Result<()> {
    for chunk in set.chunks(CHUNK) {
        let mut values = Vec::with_capacity(1 + CHUNK * 3);
        values.push(Value::Text(replica.to_owned()));
        for row in 0..CHUNK {
            match chunk
                .get(row)
                .and_then(|c| Some((&c.node_id, c.verdict.as_ref()?)))
            {
                Some((node_id, (ready, detail))) => values.extend([
                    Value::Text(node_id.clone()),
                    Value::Int(i64::from(*ready)),
                    Value::Text(detail.clone()),
                ]),
                None => values.extend(std::iter::repeat_n(Value::Null, 3)),
            }
        }
        let params: Vec<&dyn Param> = values.iter().map(|v| v as &dyn Param).collect();
        tx.execute(&CHUNK_SQL, &params).during(PUBLISH)?;
    }
    Ok(())
}

/// What [`VerdictStore::changes_since`] read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerdictChanges {
    /// Pass to the next [`VerdictStore::changes_since`].
    pub through: i64,
    /// Every stored verdict was read (a first read).
    pub complete: bool,
    /// Replicas that renewed their presence within the asked window.
    pub live: Vec<String>,
    /// How far the heartbeat writer of each of them had stored when it last
    /// renewed its presence (by its own clock; only those that said).
    pub stored_through: BTreeMap<String, Timestamp>,
    /// The verdicts written since, of live replicas and others alike (a
    /// replica's verdicts count only while it is live), by node and
    /// replica.
    pub verdicts: Vec<StoredVerdict>,
}

impl VerdictStore<'_> {
    /// The live replicas, and the verdicts written since the read that
    /// returned `since` as its [`VerdictChanges::through`] (every verdict
    /// with `None`), in one snapshot. A verdict withdrawn or dropped with
    /// its node is not reported: the reader drops a replica's verdicts when
    /// it stops being live, and a node's when the node is deleted.
    pub fn changes_since(&self, within: Duration, since: Option<i64>) -> Result<VerdictChanges> {
        const OP: &str = "read changed verdicts";
        let within_ms = i64::try_from(within.as_millis()).unwrap_or(i64::MAX / 4);
        self.store.read(OP, |tx| {
            let (through, _) = changes::current(tx, OP)?;
            let now = now_sql(tx.dialect());
            let points: Vec<(String, Option<i64>)> = tx
                .query_map(
                    &format!(
                        "SELECT replica, stored_through FROM vantage_points
                         WHERE seen_at >= {now} - ?1 ORDER BY replica"
                    ),
                    params![within_ms],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .and_then(Iterator::collect)
                .during(OP)?;
            let stored_through = points
                .iter()
                .filter_map(|(replica, at)| Some((replica.clone(), Timestamp((*at)?))))
                .collect();
            let live = points.into_iter().map(|(replica, _)| replica).collect();
            let verdicts: Vec<StoredVerdict> = tx
                .query_map(
                    "SELECT replica, node_id, ready, detail FROM verdicts WHERE changed > ?1
                     ORDER BY node_id, replica",
                    params![since.unwrap_or(i64::MIN)],
                    |row| {
                        let ready: i64 = row.get(2)?;
                        Ok(StoredVerdict {
                            replica: row.get(0)?,
                            node_id: row.get(1)?,
                            ready: ready != 0,
                            detail: row.get(3)?,
                        })
                    },
                )
                .and_then(Iterator::collect)
                .during(OP)?;
            Ok(VerdictChanges {
                through,
                complete: since.is_none(),
                live,
                stored_through,
                verdicts,
            })
        })
    }
}

impl Store {
    pub fn verdicts(&self) -> VerdictStore<'_> {
        VerdictStore { store: self }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::open_temp;

    /// A writer mark for tests that do not read it.
    const AT: Timestamp = Timestamp(1_000);

    fn change(node: &str, ready: bool) -> VerdictChange {
        VerdictChange {
            node_id: node.to_owned(),
            verdict: Some((ready, format!("{node} {ready}"))),
        }
    }

    #[test]
    fn verdicts_of_live_replicas_are_read_changed_in_place_and_withdrawn() {
        let (_dir, store) = open_temp();
        let verdicts = store.verdicts();
        let empty = verdicts
            .changes_since(Duration::from_secs(60), None)
            .unwrap();
        assert!(empty.live.is_empty() && empty.verdicts.is_empty());
        verdicts
            .publish("a", AT, &[change("n1", true), change("n2", true)])
            .unwrap();
        verdicts.publish("b", AT, &[change("n1", false)]).unwrap();
        // a changes its mind about n1 and stops judging n2.
        verdicts
            .publish(
                "a",
                AT,
                &[
                    change("n1", false),
                    VerdictChange {
                        node_id: "n2".into(),
                        verdict: None,
                    },
                ],
            )
            .unwrap();
        let seen = verdicts
            .changes_since(Duration::from_secs(60), None)
            .unwrap();
        assert_eq!(seen.live, vec!["a".to_owned(), "b".to_owned()]);
        let rows: Vec<(String, String, bool)> = seen
            .verdicts
            .iter()
            .map(|v| (v.replica.clone(), v.node_id.clone(), v.ready))
            .collect();
        assert_eq!(
            rows,
            vec![
                ("a".into(), "n1".into(), false),
                ("b".into(), "n1".into(), false)
            ]
        );
        assert_eq!(seen.verdicts[0].detail, "n1 false");
        verdicts.withdraw("b").unwrap();
        let seen = verdicts
            .changes_since(Duration::from_secs(60), None)
            .unwrap();
        assert_eq!(seen.live, vec!["a".to_owned()]);
        assert_eq!(seen.verdicts.len(), 1);
    }

    #[test]
    fn a_replica_silent_past_the_window_is_not_live() {
        let (_dir, store) = open_temp();
        let verdicts = store.verdicts();
        verdicts.publish("old", AT, &[change("n1", false)]).unwrap();
        std::thread::sleep(Duration::from_millis(120));
        verdicts.publish("new", AT, &[change("n1", true)]).unwrap();
        let seen = verdicts
            .changes_since(Duration::from_millis(60), None)
            .unwrap();
        assert_eq!(seen.live, vec!["new".to_owned()]);
        // Its verdicts are still read: the reader counts only the live.
        assert_eq!(seen.verdicts.len(), 2);
    }

    #[test]
    fn changes_since_returns_the_verdicts_written_after_the_last_read() {
        let (_dir, store) = open_temp();
        let verdicts = store.verdicts();
        let window = Duration::from_secs(60);
        verdicts
            .publish("a", AT, &[change("n1", true), change("n2", true)])
            .unwrap();
        verdicts.publish("b", AT, &[change("n1", true)]).unwrap();
        let first = verdicts.changes_since(window, None).unwrap();
        assert!(first.complete);
        assert_eq!(first.live, ["a", "b"]);
        assert_eq!(first.verdicts.len(), 3);

        // A renewal alone (no changed verdict) is no change.
        verdicts.publish("a", AT, &[]).unwrap();
        let quiet = verdicts.changes_since(window, Some(first.through)).unwrap();
        assert!(!quiet.complete);
        assert!(quiet.verdicts.is_empty());
        assert_eq!(quiet.live, ["a", "b"]);

        verdicts.publish("b", AT, &[change("n1", false)]).unwrap();
        let next = verdicts.changes_since(window, Some(first.through)).unwrap();
        assert_eq!(
            next.verdicts,
            [StoredVerdict {
                replica: "b".into(),
                node_id: "n1".into(),
                ready: false,
                detail: "n1 false".into(),
            }]
        );
        assert!(
            verdicts
                .changes_since(window, Some(next.through))
                .unwrap()
                .verdicts
                .is_empty()
        );
    }

    #[test]
    fn a_publish_of_more_verdicts_than_a_statement_holds_writes_every_one() {
        let (_dir, store) = open_temp();
        let verdicts = store.verdicts();
        let many: Vec<VerdictChange> = (0..300)
            .map(|i| change(&format!("n{i:03}"), i % 3 == 0))
            .collect();
        verdicts.publish("a", AT, &many).unwrap();
        let read = verdicts
            .changes_since(Duration::from_secs(60), None)
            .unwrap();
        assert_eq!(read.verdicts.len(), 300);
        for (stored, sent) in read.verdicts.iter().zip(&many) {
            assert_eq!(stored.node_id, sent.node_id);
            assert_eq!(
                Some((stored.ready, stored.detail.clone())),
                sent.verdict.clone()
            );
        }
        // Changed again in place: still 300 rows, the new values.
        let flipped: Vec<VerdictChange> = (0..300)
            .map(|i| change(&format!("n{i:03}"), i % 3 != 0))
            .collect();
        verdicts.publish("a", AT, &flipped).unwrap();
        let again = verdicts
            .changes_since(Duration::from_secs(60), Some(read.through))
            .unwrap();
        assert_eq!(again.verdicts.len(), 300);
        assert!(
            again
                .verdicts
                .iter()
                .all(|v| v.ready == v.detail.ends_with("true"))
        );
        assert_eq!(again.verdicts.iter().filter(|v| v.ready).count(), 200);
    }

    #[test]
    fn each_live_replica_says_how_far_its_heartbeat_writer_has_stored() {
        let (_dir, store) = open_temp();
        let verdicts = store.verdicts();
        let window = Duration::from_secs(60);
        verdicts.publish("a", Timestamp(5_000), &[]).unwrap();
        verdicts.publish("b", Timestamp(7_000), &[]).unwrap();
        let first = verdicts.changes_since(window, None).unwrap();
        assert_eq!(
            first.stored_through,
            BTreeMap::from([
                ("a".to_owned(), Timestamp(5_000)),
                ("b".to_owned(), Timestamp(7_000))
            ])
        );
        // Renewed with a later mark: the latest is read, no verdict changed.
        verdicts.publish("a", Timestamp(9_500), &[]).unwrap();
        let next = verdicts.changes_since(window, Some(first.through)).unwrap();
        assert!(next.verdicts.is_empty());
        assert_eq!(next.stored_through["a"], Timestamp(9_500));
        // A replica no longer live says nothing.
        verdicts.withdraw("b").unwrap();
        let after = verdicts.changes_since(window, Some(next.through)).unwrap();
        assert_eq!(after.stored_through.keys().collect::<Vec<_>>(), ["a"]);
    }

    #[test]
    fn a_presence_renewed_alone_keeps_its_replica_live_and_never_brings_one_back() {
        let (_dir, store) = open_temp();
        let verdicts = store.verdicts();
        let window = Duration::from_millis(300);
        let live = || verdicts.changes_since(window, None).unwrap().live;
        assert!(
            !verdicts.renew_presence("a", AT).unwrap(),
            "never published"
        );
        verdicts.publish("a", AT, &[change("n1", true)]).unwrap();
        verdicts.publish("b", AT, &[]).unwrap();
        std::thread::sleep(Duration::from_millis(400));
        assert!(live().is_empty());

        let renew = || verdicts.renew_presence("a", Timestamp(2_000));
        if store.backend() == crate::store::Backend::Postgres {
            // Beside a serialized write held open (a heartbeat batch, here
            // or on another replica), the renewal does not wait for it.
            let (held_tx, held_rx) = std::sync::mpsc::channel();
            let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
            let store = &store;
            std::thread::scope(|scope| {
                let holder = scope.spawn(move || {
                    store.write("hold the write lock", move |_tx| {
                        let _ = held_tx.send(());
                        let _ = release_rx.recv_timeout(Duration::from_secs(10));
                        Ok(())
                    })
                });
                held_rx.recv_timeout(Duration::from_secs(10)).unwrap();
                let started = std::time::Instant::now();
                assert!(renew().unwrap());
                let took = started.elapsed();
                release_tx.send(()).unwrap();
                holder.join().unwrap().unwrap();
                assert!(took < Duration::from_secs(5), "renewal waited {took:?}");
            });
        } else {
            assert!(renew().unwrap());
        }
        let seen = verdicts.changes_since(window, None).unwrap();
        assert_eq!(seen.live, ["a"]);
        assert_eq!(seen.stored_through["a"], Timestamp(2_000));
        assert_eq!(
            seen.verdicts
                .iter()
                .map(|v| (v.replica.as_str(), v.node_id.as_str(), v.ready))
                .collect::<Vec<_>>(),
            [("a", "n1", true)],
            "a renewal leaves the verdicts as they are"
        );

        // Withdrawn (stopped cleanly): a late renewal does not bring it back.
        verdicts.withdraw("a").unwrap();
        assert!(!verdicts.renew_presence("a", AT).unwrap());
        assert!(live().is_empty());
    }

    crate::tests::on_postgres!(
        a_presence_renewed_alone_keeps_its_replica_live_and_never_brings_one_back,
        each_live_replica_says_how_far_its_heartbeat_writer_has_stored,
        a_publish_of_more_verdicts_than_a_statement_holds_writes_every_one,
        changes_since_returns_the_verdicts_written_after_the_last_read,
        verdicts_of_live_replicas_are_read_changed_in_place_and_withdrawn,
        a_replica_silent_past_the_window_is_not_live
    );
}
