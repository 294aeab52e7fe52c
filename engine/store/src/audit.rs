//! The append-only audit log: who did what, when, to which subject, from which
//! commit.
//!
//! This module owns the `audit_log` table. The database itself refuses UPDATE
//! and DELETE on it (triggers that abort), so no code path, not even a future
//! bug in this crate, can rewrite history through SQL. Entries are appended by
//! [`AuditLog::append`] and, inside their own transaction, by every store
//! write that the issue lists as audited (sync, status change, autoscale
//! action, API write): the write and its entry commit together or not at all.
//!
//! Retention is the one exception to append-only, and it only ever takes the
//! oldest entries: [`AuditLog::prune`] raises a forward-only mark
//! (`audit_pruned.through_id`), deletes entries at or below it and appends an
//! `audit.pruned` entry saying what went, in one leader-only transaction; the
//! database refuses any DELETE above the mark. Archiving what is pruned (and
//! deciding when) is the caller's (`neutral serve --audit-retention`); this
//! module must not write files.

use crate::db::{Tx, params};
use serde::{Deserialize, Serialize};

use crate::error::{During, Result, StoreError};
use crate::store::{Store, decode, encode};
use neutral_core::model::Timestamp;

/// The `kind`s the stores write themselves. Callers may use other kinds for
/// their own entries (e.g. `api.write`, `autoscale.decision`).
pub mod kinds {
    pub const SYNC_APPLIED: &str = "sync.applied";
    pub const SYNC_REJECTED: &str = "sync.rejected";
    pub const NODE_REGISTERED: &str = "node.registered";
    pub const NODE_STATUS: &str = "node.status";
    pub const NODE_DELETED: &str = "node.deleted";
    pub const AUTOSCALE_ACTION: &str = "autoscale.action";
    pub const RUN_QUEUED: &str = "run.queued";
    pub const RUN_FINISHED: &str = "run.finished";
    pub const RUN_INTERRUPTED: &str = "run.interrupted";
    pub const DNS_ZONE_PUT: &str = "dns.zone.put";
    pub const DNS_ZONE_DELETED: &str = "dns.zone.deleted";
    pub const AUDIT_PRUNED: &str = "audit.pruned";
}

/// The largest page [`AuditLog::list`] returns.
pub const MAX_AUDIT_PAGE: u32 = 10_000;

/// One audit entry as written.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub at: Timestamp,
    /// Who: `sync`, `health`, `autoscaler`, `admin`, `node:<id>`, ...
    pub actor: String,
    /// What kind of event; see [`kinds`].
    pub kind: String,
    /// What it concerns: a node id, a commit, a region, a zone, a run id.
    pub subject: String,
    pub message: String,
    /// The commit the event came from, if any.
    pub commit: Option<String>,
    /// Structured details (`null` when there are none).
    pub data: serde_json::Value,
}

/// An entry with the id the log gave it (increasing, never reused).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub id: i64,
    #[serde(flatten)]
    pub entry: AuditEntry,
}

/// Which entries [`AuditLog::list`] returns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditQuery {
    /// Only entries with an id greater than this (for paging and tailing).
    pub since_id: Option<i64>,
    /// Only entries with an id smaller than this (paging newest first).
    pub before_id: Option<i64>,
    pub kind: Option<String>,
    pub subject: Option<String>,
    /// At most this many entries (capped at [`MAX_AUDIT_PAGE`]).
    pub limit: u32,
    /// Newest entries first instead of oldest first.
    pub newest_first: bool,
}

impl Default for AuditQuery {
    fn default() -> Self {
        AuditQuery {
            since_id: None,
            before_id: None,
            kind: None,
            subject: None,
            limit: 100,
            newest_first: false,
        }
    }
}

/// The audit log view of a [`Store`].
#[derive(Clone, Copy, Debug)]
pub struct AuditLog<'a> {
    pub(crate) store: &'a Store,
}

impl AuditLog<'_> {
    /// Appends one entry in its own transaction; returns its id.
    pub fn append(&self, entry: &AuditEntry) -> Result<i64> {
        self.store
            .write("append audit entry", |tx| append_in(tx, entry))
    }

    /// Appends `entries`, in order, in one transaction (all or none).
    pub fn append_all(&self, entries: &[AuditEntry]) -> Result<()> {
        self.store.write("append audit entries", |tx| {
            for entry in entries {
                append_in(tx, entry)?;
            }
            Ok(())
        })
    }

    pub fn list(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>> {
        const OP: &str = "list audit entries";
        let order = if query.newest_first { "DESC" } else { "ASC" };
        let sql = format!(
            "SELECT id, at, actor, kind, subject, message, commit_sha, data FROM audit_log
             WHERE id > ?1 AND id < ?5 AND (CAST(?2 AS TEXT) IS NULL OR kind = ?2)
               AND (CAST(?3 AS TEXT) IS NULL OR subject = ?3)
             ORDER BY id {order} LIMIT ?4"
        );
        self.store.read(OP, |tx| {
            records_of(
                tx,
                OP,
                &sql,
                params![
                    query.since_id.unwrap_or(0),
                    query.kind,
                    query.subject,
                    query.limit.min(MAX_AUDIT_PAGE),
                    query.before_id.unwrap_or(i64::MAX)
                ],
            )
        })
    }

    /// What retention prunes next: the log's oldest entries in the order
    /// they were appended, up to the first one whose time is not before
    /// `cutoff`, at most `limit` (capped at [`MAX_AUDIT_PAGE`]). Always a
    /// prefix of the log: an entry may carry an earlier time than one
    /// appended before it (an autoscale action settled is stamped with the
    /// action's own start), and it waits for the entries before it.
    pub fn prunable_before(&self, cutoff: Timestamp, limit: u32) -> Result<Vec<AuditRecord>> {
        const OP: &str = "list audit entries to prune";
        self.store.read(OP, |tx| {
            // Times first (no entry decoded while nothing is due), then the
            // prefix itself.
            let times: Vec<(i64, i64)> = tx
                .query_map(
                    "SELECT id, at FROM audit_log ORDER BY id LIMIT ?1",
                    params![limit.min(MAX_AUDIT_PAGE)],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .and_then(Iterator::collect)
                .during(OP)?;
            let last = times
                .iter()
                .take_while(|&&(_, at)| at < cutoff.0)
                .last()
                .map(|&(id, _)| id);
            let Some(last) = last else {
                return Ok(Vec::new());
            };
            records_of(
                tx,
                OP,
                "SELECT id, at, actor, kind, subject, message, commit_sha, data FROM audit_log
                 WHERE id <= ?1 ORDER BY id",
                params![last],
            )
        })
    }

    /// Prunes the entries with ids `first..=last`, of which the caller read
    /// (and archived) `count`, and appends `note` (normally an
    /// [`kinds::AUDIT_PRUNED`] entry): one leader-only transaction, which
    /// first raises the pruning mark to `last`. Refused with
    /// [`StoreError::AuditRangeChanged`], changing nothing, if the range holds
    /// another number of entries now (on PostgreSQL an entry whose
    /// transaction began earlier may commit into it late). Returns the note's
    /// id.
    pub fn prune(&self, first: i64, last: i64, count: u64, note: &AuditEntry) -> Result<i64> {
        const OP: &str = "prune audit entries";
        self.store.write_fenced(OP, |tx| {
            tx.execute(
                "UPDATE audit_pruned SET through_id = ?1 WHERE id = 1 AND through_id < ?1",
                params![last],
            )
            .during(OP)?;
            let deleted = tx
                .execute(
                    "DELETE FROM audit_log WHERE id >= ?1 AND id <= ?2",
                    params![first, last],
                )
                .during(OP)?;
            let found = u64::try_from(deleted).unwrap_or(u64::MAX);
            if found != count {
                return Err(StoreError::AuditRangeChanged {
                    first,
                    last,
                    expected: count,
                    found,
                });
            }
            append_in(tx, note)
        })
    }

    /// The id of the newest entry retention may have pruned (0: none).
    pub fn pruned_through(&self) -> Result<i64> {
        const OP: &str = "read the audit pruning mark";
        self.store.read(OP, |tx| {
            tx.query_row(
                "SELECT through_id FROM audit_pruned WHERE id = 1",
                params![],
                |row| row.get(0),
            )
            .during(OP)
        })
    }
}

/// Runs `sql`, whose columns are an audit record's, and decodes the rows.
fn records_of(
    tx: &Tx<'_>,
    op: &'static str,
    sql: &str,
    params: &[&dyn crate::db::Param],
) -> Result<Vec<AuditRecord>> {
    let mut stmt = tx.prepare_cached(sql).during(op)?;
    let rows = stmt
        .query_map(params, |row| {
            Ok((
                row.get::<_, i64>(0)?,
                AuditEntry {
                    at: Timestamp(row.get(1)?),
                    actor: row.get(2)?,
                    kind: row.get(3)?,
                    subject: row.get(4)?,
                    message: row.get(5)?,
                    commit: row.get(6)?,
                    data: serde_json::Value::Null,
                },
                row.get::<_, String>(7)?,
            ))
        })
        .during(op)?;
    let mut records = Vec::new();
    for row in rows {
        let (id, mut entry, data) = row.during(op)?;
        entry.data = decode(op, &format!("data of audit entry {id}"), &data)?;
        records.push(AuditRecord { id, entry });
    }
    Ok(records)
}

/// Appends `entry` inside the caller's transaction; returns its id.
pub(crate) fn append_in(conn: &Tx<'_>, entry: &AuditEntry) -> Result<i64> {
    const OP: &str = "append audit entry";
    let data = encode(OP, "audit data", &entry.data)?;
    conn.query_row(
        "INSERT INTO audit_log (at, actor, kind, subject, message, commit_sha, data)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) RETURNING id",
        params![
            entry.at.0,
            entry.actor,
            entry.kind,
            entry.subject,
            entry.message,
            entry.commit,
            data
        ],
        |row| row.get(0),
    )
    .during(OP)
}

impl Store {
    pub fn audit(&self) -> AuditLog<'_> {
        AuditLog { store: self }
    }
}

#[cfg(test)]
mod tests;
