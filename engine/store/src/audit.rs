//! The append-only audit log: who did what, when, to which subject, from which
//! commit.
//!
//! This module owns the `audit_log` table. The database itself refuses UPDATE
//! and DELETE on it (triggers that abort), so no code path, not even a future
//! bug in this crate, can rewrite history through SQL. Entries are appended by
//! [`AuditLog::append`] and, inside their own transaction, by every store
//! write that the issue lists as audited (sync, status change, autoscale
//! action, API write): the write and its entry commit together or not at all.
//! Nothing is pruned; archiving old entries is an operator's job.

use crate::db::{Tx, params};
use serde::{Deserialize, Serialize};

use crate::error::{During, Result};
use crate::{Store, Timestamp, decode, encode};

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
            let mut stmt = tx.prepare_cached(&sql).during(OP)?;
            let rows = stmt
                .query_map(
                    params![
                        query.since_id.unwrap_or(0),
                        query.kind,
                        query.subject,
                        query.limit.min(MAX_AUDIT_PAGE),
                        query.before_id.unwrap_or(i64::MAX)
                    ],
                    |row| {
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
                    },
                )
                .during(OP)?;
            let mut records = Vec::new();
            for row in rows {
                let (id, mut entry, data) = row.during(OP)?;
                entry.data = decode(OP, &format!("data of audit entry {id}"), &data)?;
                records.push(AuditRecord { id, entry });
            }
            Ok(records)
        })
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::open_temp;
    use serde_json::json;

    fn entry(at: i64, kind: &str, subject: &str) -> AuditEntry {
        AuditEntry {
            at: Timestamp(at),
            actor: "admin".into(),
            kind: kind.into(),
            subject: subject.into(),
            message: format!("{kind} {subject}"),
            commit: (at % 2 == 0).then(|| format!("c{at}")),
            data: json!({ "n": at }),
        }
    }

    #[test]
    fn entries_round_trip_in_order_with_filters_and_paging() {
        let (_dir, store) = open_temp();
        let log = store.audit();
        let mut ids = Vec::new();
        for i in 0..6 {
            let kind = if i % 2 == 0 {
                "api.write"
            } else {
                "node.status"
            };
            ids.push(log.append(&entry(i, kind, &format!("s{}", i % 3))).unwrap());
        }
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids increase: {ids:?}");

        let all = log.list(&AuditQuery::default()).unwrap();
        assert_eq!(all.len(), 6);
        assert_eq!(all[3].entry, entry(3, "node.status", "s0"));

        let writes = log
            .list(&AuditQuery {
                kind: Some("api.write".into()),
                ..AuditQuery::default()
            })
            .unwrap();
        assert_eq!(
            writes.iter().map(|r| r.entry.at.0).collect::<Vec<_>>(),
            vec![0, 2, 4]
        );

        let s0_after_first = log
            .list(&AuditQuery {
                since_id: Some(ids[0]),
                subject: Some("s0".into()),
                ..AuditQuery::default()
            })
            .unwrap();
        assert_eq!(s0_after_first.len(), 1);
        assert_eq!(s0_after_first[0].id, ids[3]);

        let newest_two = log
            .list(&AuditQuery {
                limit: 2,
                newest_first: true,
                ..AuditQuery::default()
            })
            .unwrap();
        assert_eq!(
            newest_two.iter().map(|r| r.id).collect::<Vec<_>>(),
            vec![ids[5], ids[4]]
        );
    }

    #[test]
    fn the_database_refuses_to_update_or_delete_audit_entries() {
        let (_dir, store) = open_temp();
        let id = store.audit().append(&entry(1, "api.write", "x")).unwrap();
        // One transaction each: on PostgreSQL a failed statement aborts its
        // transaction.
        let update = store.with_writer(|conn| {
            conn.execute(
                "UPDATE audit_log SET message = 'forged' WHERE id = ?1",
                params![id],
            )
            .unwrap_err()
        });
        assert!(update.to_string().contains("append-only"), "{update}");
        let delete = store.with_writer(|conn| {
            conn.execute("DELETE FROM audit_log WHERE id = ?1", params![id])
                .unwrap_err()
        });
        assert!(delete.to_string().contains("append-only"), "{delete}");
        let delete_all = store.with_writer(|conn| {
            conn.execute("DELETE FROM audit_log", params![])
                .unwrap_err()
        });
        assert!(
            delete_all.to_string().contains("append-only"),
            "{delete_all}"
        );
        let records = store.audit().list(&AuditQuery::default()).unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].entry.message, "api.write x");
    }

    crate::tests::on_postgres!(
        entries_round_trip_in_order_with_filters_and_paging,
        the_database_refuses_to_update_or_delete_audit_entries,
    );
}
