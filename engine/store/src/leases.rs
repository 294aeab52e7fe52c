//! Leadership among control-plane replicas that share one store: one lease
//! row per name, with its holder, a **fencing term** and an expiry read off
//! the database's own clock (so replicas' clocks never decide who leads).
//!
//! A replica takes the lease when it is free or lapsed, and renews it while it
//! holds it; the term goes up every time the lease changes hands or lapses, so
//! two leaders never share a term. A leader sets its term as the store's fence
//! ([`Store::set_fence`]): every leader-only write (declarations, sync
//! failures, Terraform runs, autoscale actions) then checks, in its own
//! transaction, that the term is still the lease's, and is refused with
//! [`StoreError::Fenced`] otherwise. A leader paused past its lease therefore
//! cannot write once another has taken over, whatever it believes. On
//! PostgreSQL lease writes do not queue behind the store-wide write lock (a
//! renewal stuck behind heartbeat batches would let the lease lapse under
//! load); the fence check locks the lease row in share mode instead, so a
//! takeover waits for the fenced writes in flight and the check and a
//! takeover are ordered. On SQLite the single writer orders them.
//!
//! This module owns the `leases` table and the fence check. It must not decide
//! when to campaign or what a leader runs: that is the daemon's elector.

use std::time::Duration;

use crate::db::{Dialect, OptionalExtension, Tx, params};
use crate::error::{During, Result, StoreError};
use crate::store::Store;
use neutral_core::model::Timestamp;

/// The lease the control plane's singleton work runs under.
pub const LEADER: &str = "leader";

/// A lease held by the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lease {
    pub term: i64,
    /// On the database's clock.
    pub expires_at: Timestamp,
}

/// Who holds a lease, as anyone may read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseHolder {
    pub holder: String,
    pub term: i64,
    pub expires_at: Timestamp,
    /// Whether it had lapsed when read (on the database's clock).
    pub lapsed: bool,
}

/// The database's clock in milliseconds since the epoch.
pub(crate) fn now_sql(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Sqlite => "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)",
        Dialect::Postgres => "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT",
    }
}

/// The lease view of a [`Store`].
#[derive(Clone, Copy, Debug)]
pub struct LeaseStore<'a> {
    pub(crate) store: &'a Store,
}

impl LeaseStore<'_> {
    /// Takes `name` for `holder` for `ttl` when it is free or lapsed, or
    /// renews it when `holder` has it. `None` while another holder's lease is
    /// live. The term goes up whenever the lease changes hands or had lapsed.
    pub fn acquire(&self, name: &str, holder: &str, ttl: Duration) -> Result<Option<Lease>> {
        const OP: &str = "acquire lease";
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 4);
        self.store.write_unserialized(OP, |tx| {
            let now = now_sql(tx.dialect());
            let sql = format!(
                "INSERT INTO leases (name, holder, term, expires_at) VALUES (?1, ?2, 1, {now} + ?3)
                 ON CONFLICT (name) DO UPDATE SET
                     term = CASE WHEN leases.holder = excluded.holder AND leases.expires_at >= {now}
                                 THEN leases.term ELSE leases.term + 1 END,
                     holder = excluded.holder,
                     expires_at = excluded.expires_at
                 WHERE leases.holder = excluded.holder OR leases.expires_at < {now}
                 RETURNING term, expires_at"
            );
            tx.query_row(&sql, params![name, holder, ttl_ms], |row| {
                Ok(Lease {
                    term: row.get(0)?,
                    expires_at: Timestamp(row.get(1)?),
                })
            })
            .optional()
            .during(OP)
        })
    }

    /// Gives `name` up when `holder` has it (a leader stopping cleanly), so
    /// another replica takes over at its next try instead of after the TTL.
    pub fn release(&self, name: &str, holder: &str) -> Result<()> {
        const OP: &str = "release lease";
        self.store.write_unserialized(OP, |tx| {
            let now = now_sql(tx.dialect());
            tx.execute(
                &format!(
                    "UPDATE leases SET expires_at = {now} - 1 WHERE name = ?1 AND holder = ?2"
                ),
                params![name, holder],
            )
            .during(OP)?;
            Ok(())
        })
    }

    /// The lease's holder, if it was ever taken.
    pub fn current(&self, name: &str) -> Result<Option<LeaseHolder>> {
        const OP: &str = "read lease";
        self.store.read(OP, |tx| {
            let now = now_sql(tx.dialect());
            tx.query_row(
                &format!(
                    "SELECT holder, term, expires_at, expires_at < {now} FROM leases WHERE name = ?1"
                ),
                params![name],
                |row| {
                    Ok(LeaseHolder {
                        holder: row.get(0)?,
                        term: row.get(1)?,
                        expires_at: Timestamp(row.get(2)?),
                        lapsed: row.get(3)?,
                    })
                },
            )
            .optional()
            .during(OP)
        })
    }
}

/// Refuses the write `op` unless `term` is still the leader lease's term.
/// On PostgreSQL the lease row is locked in share mode until the write
/// commits: lease writes do not take the store-wide write lock
/// (`Store::write_unserialized`), so without it a takeover could commit
/// between this check and the fenced write's commit.
pub(crate) fn check_fence(tx: &Tx<'_>, op: &'static str, term: i64) -> Result<()> {
    let sql = match tx.dialect() {
        Dialect::Sqlite => "SELECT term FROM leases WHERE name = ?1",
        Dialect::Postgres => "SELECT term FROM leases WHERE name = ?1 FOR SHARE",
    };
    let current: Option<i64> = tx
        .query_row(sql, params![LEADER], |row| row.get(0))
        .optional()
        .during(op)?;
    if current == Some(term) {
        Ok(())
    } else {
        Err(StoreError::Fenced {
            op,
            term,
            current: current.unwrap_or(0),
        })
    }
}

impl Store {
    pub fn leases(&self) -> LeaseStore<'_> {
        LeaseStore { store: self }
    }

    /// [`Store::write`] for leader-only writes: with a fence set, the
    /// transaction first checks the term is still the leader lease's and is
    /// refused with [`StoreError::Fenced`] otherwise.
    pub(crate) fn write_fenced<T: Send>(
        &self,
        op: &'static str,
        f: impl FnOnce(&Tx<'_>) -> Result<T> + Send,
    ) -> Result<T> {
        let fence = self.fence();
        self.write(op, |tx| {
            if let Some(term) = fence {
                check_fence(tx, op, term)?;
            }
            f(tx)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{open_temp, reopen};
    use neutral_core::autoscale::LastAction;

    const LONG: Duration = Duration::from_secs(60);

    fn action() -> LastAction {
        LastAction {
            at: Timestamp(1),
            from: 1,
            to: 2,
            in_flight: true,
            failover_extra: 0,
        }
    }

    #[test]
    fn one_holder_at_a_time_and_the_term_rises_with_every_change_of_hands() {
        let (_dir, store) = open_temp();
        let leases = store.leases();
        assert_eq!(leases.current(LEADER).unwrap(), None);
        let a = leases
            .acquire(LEADER, "a", LONG)
            .unwrap()
            .expect("free lease");
        assert_eq!(a.term, 1);
        // Renewing keeps the term; another holder is refused while it lives.
        let renewed = leases.acquire(LEADER, "a", LONG).unwrap().unwrap();
        assert_eq!(renewed.term, 1);
        assert!(renewed.expires_at >= a.expires_at);
        assert_eq!(leases.acquire(LEADER, "b", LONG).unwrap(), None);
        let held = leases.current(LEADER).unwrap().unwrap();
        assert_eq!(
            (held.holder.as_str(), held.term, held.lapsed),
            ("a", 1, false)
        );
        // Released, it goes to the next asker under a new term.
        leases.release(LEADER, "a").unwrap();
        assert!(leases.current(LEADER).unwrap().unwrap().lapsed);
        let b = leases.acquire(LEADER, "b", LONG).unwrap().unwrap();
        assert_eq!(b.term, 2);
        // A release by someone who does not hold it changes nothing.
        leases.release(LEADER, "a").unwrap();
        assert_eq!(leases.acquire(LEADER, "a", LONG).unwrap(), None);
    }

    #[test]
    fn a_lapsed_lease_is_taken_over_and_even_its_old_holder_gets_a_new_term() {
        let (_dir, store) = open_temp();
        let leases = store.leases();
        let a = leases
            .acquire(LEADER, "a", Duration::from_millis(30))
            .unwrap()
            .unwrap();
        std::thread::sleep(Duration::from_millis(80));
        assert!(leases.current(LEADER).unwrap().unwrap().lapsed);
        let again = leases.acquire(LEADER, "a", LONG).unwrap().unwrap();
        assert_eq!(again.term, a.term + 1, "a lapse ends a term");
        let other = leases.acquire(LEADER, "b", LONG).unwrap();
        assert_eq!(other, None);
    }

    #[test]
    fn a_deposed_leader_cannot_write_what_only_a_leader_writes() {
        let (dir, old) = open_temp();
        // Two replicas: two stores on one database.
        let new = reopen(dir.path(), crate::store::StoreOptions::default()).unwrap();
        let first = old
            .leases()
            .acquire(LEADER, "old", Duration::from_millis(30))
            .unwrap()
            .unwrap();
        old.set_fence(Some(first.term));
        old.autoscale_state()
            .put(
                "jp",
                &action(),
                "autoscaler",
                "leading",
                &serde_json::Value::Null,
            )
            .unwrap();
        // The old leader stalls past its lease; the other takes over.
        std::thread::sleep(Duration::from_millis(80));
        let second = new.leases().acquire(LEADER, "new", LONG).unwrap().unwrap();
        assert_eq!(second.term, first.term + 1);
        new.set_fence(Some(second.term));
        // The old one wakes up and writes as if it still led: refused, and
        // the error says why.
        let refused = old
            .autoscale_state()
            .put(
                "jp",
                &action(),
                "autoscaler",
                "stale",
                &serde_json::Value::Null,
            )
            .unwrap_err();
        assert!(
            matches!(refused, StoreError::Fenced { term, current, .. } if term == first.term && current == second.term),
            "{refused}"
        );
        assert!(refused.to_string().contains("another replica leads now"));
        let run = crate::runs::NewRun {
            root: "infra/gtm".into(),
            workspace: "default".into(),
            trigger: "push".into(),
            commit: None,
        };
        assert!(matches!(
            old.runs().create_run(&run, Timestamp(2), "scheduler"),
            Err(StoreError::Fenced { .. })
        ));
        // The new leader writes; replica writes (no fence) are unaffected.
        new.autoscale_state()
            .put(
                "jp",
                &action(),
                "autoscaler",
                "leading",
                &serde_json::Value::Null,
            )
            .unwrap();
        new.runs()
            .create_run(&run, Timestamp(3), "scheduler")
            .unwrap();
        old.set_fence(None);
        old.audit()
            .append(&crate::audit::AuditEntry {
                at: Timestamp(4),
                actor: "test".into(),
                kind: "test".into(),
                subject: "x".into(),
                message: "unfenced".into(),
                commit: None,
                data: serde_json::Value::Null,
            })
            .unwrap();
    }

    crate::tests::on_postgres!(
        one_holder_at_a_time_and_the_term_rises_with_every_change_of_hands,
        a_lapsed_lease_is_taken_over_and_even_its_old_holder_gets_a_new_term,
        a_deposed_leader_cannot_write_what_only_a_leader_writes,
    );
}
