//! The store-wide change counter that lets a replica read only what changed
//! since its last read instead of every row (`NodeStore::changes_since`,
//! `VerdictStore::changes_since`).
//!
//! Every write transaction that changes a node or a verdict first bumps the
//! counter ([`bump`]) and stamps the rows it writes with the counter's value
//! ([`STAMP`]); a deleted node leaves a stamped tombstone in
//! `node_deletions`. A reader takes the counter's value in the same snapshot
//! as the rows ([`current`]) and next asks for the rows stamped above it.
//! That is exact because writes are serialized on both backends (SQLite's
//! `BEGIN IMMEDIATE`, PostgreSQL's transaction-level write lock in `pg.rs`):
//! a transaction that commits after a reader's snapshot bumped the counter
//! after every transaction the snapshot saw, so its stamp is above the
//! value the reader took. Tombstones older than [`TOMBSTONES_KEPT_MS`] are
//! pruned; a reader whose last read is older than the newest pruned one
//! gets a complete read instead, in which a missing node is a deleted one.
//! This module owns the counter; it must not read or write the rows it
//! stamps.

use crate::db::{Tx, params};
use crate::error::{During, Result};

/// The SQL expression that stamps a row written in a transaction that
/// called [`bump`].
pub(crate) const STAMP: &str = "(SELECT n FROM change_counter WHERE id = 1)";

/// How long a deleted node's tombstone is kept: a replica that has not read
/// for longer reads everything once.
pub(crate) const TOMBSTONES_KEPT_MS: i64 = 24 * 60 * 60 * 1000;

/// Moves the counter on; the rows this transaction stamps afterwards are
/// newer than anything a reader has seen.
pub(crate) fn bump(tx: &Tx<'_>, op: &'static str) -> Result<()> {
    tx.prepare_cached("UPDATE change_counter SET n = n + 1 WHERE id = 1")
        .during(op)?
        .execute(params![])
        .during(op)?;
    Ok(())
}

/// The counter as this transaction sees it, and the newest stamp whose
/// tombstones were pruned.
pub(crate) fn current(tx: &Tx<'_>, op: &'static str) -> Result<(i64, i64)> {
    tx.prepare_cached("SELECT n, pruned_through FROM change_counter WHERE id = 1")
        .during(op)?
        .query_row(params![], |row| Ok((row.get(0)?, row.get(1)?)))
        .during(op)
}

/// Records that node `id` was deleted at `at` (a tombstone stamped like a
/// write) and prunes the tombstones that are older than
/// [`TOMBSTONES_KEPT_MS`], remembering the newest pruned stamp.
pub(crate) fn record_deletion(tx: &Tx<'_>, op: &'static str, id: &str, at: i64) -> Result<()> {
    bump(tx, op)?;
    tx.prepare_cached(&format!(
        "INSERT INTO node_deletions (node_id, changed, at) VALUES (?1, {STAMP}, ?2)"
    ))
    .during(op)?
    .execute(params![id, at])
    .during(op)?;
    let cutoff = at.saturating_sub(TOMBSTONES_KEPT_MS);
    tx.prepare_cached(
        "UPDATE change_counter SET pruned_through = coalesce(
             (SELECT max(changed) FROM node_deletions WHERE at < ?1), pruned_through)
         WHERE id = 1",
    )
    .during(op)?
    .execute(params![cutoff])
    .during(op)?;
    tx.prepare_cached("DELETE FROM node_deletions WHERE at < ?1")
        .during(op)?
        .execute(params![cutoff])
        .during(op)?;
    Ok(())
}
