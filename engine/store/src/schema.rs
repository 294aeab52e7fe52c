//! The database schema and its versioned migrations.
//!
//! This module owns the list of migration steps and the runner that applies
//! them. Each step runs in its own `BEGIN IMMEDIATE` transaction together with
//! the bump of `PRAGMA user_version`, so a step is applied entirely or not at
//! all, and two processes opening a new file at once cannot both apply it.
//! `PRAGMA application_id` marks the file as neutral's, so a foreign SQLite
//! file given as `--data` is refused instead of being written into.
//!
//! Rules for later versions: never edit a released step, append a new one.
//! A file whose version is newer than the steps this binary knows is refused
//! ([`StoreError::NewerSchema`]); an older binary must not guess at a newer
//! schema.

use std::path::Path;

use rusqlite::{Connection, TransactionBehavior};

use crate::error::{Result, StoreError};

/// `PRAGMA application_id` of neutral databases: "neut" in ASCII.
pub const APPLICATION_ID: i32 = 0x6e65_7574;

/// Migration steps; step `i` takes the schema from version `i` to `i + 1`.
pub const MIGRATIONS: &[&str] = &[V1, V2, V3, V4, V5, V6, V7, V8, V9];

/// The schema version this binary writes.
pub fn current_version() -> usize {
    MIGRATIONS.len()
}

const V1: &str = r"
-- Declarations of the last good commit, one JSON document per object.
-- `commit_sha`: the commit applied; `changed_in`: the commit in which the
-- object's content last changed.
CREATE TABLE regions (
    name TEXT PRIMARY KEY,
    commit_sha TEXT NOT NULL,
    changed_in TEXT NOT NULL,
    doc TEXT NOT NULL
) STRICT;
CREATE TABLE gtm_policies (
    name TEXT PRIMARY KEY,
    commit_sha TEXT NOT NULL,
    changed_in TEXT NOT NULL,
    doc TEXT NOT NULL
) STRICT;
CREATE TABLE autoscale_policies (
    name TEXT PRIMARY KEY,
    commit_sha TEXT NOT NULL,
    changed_in TEXT NOT NULL,
    doc TEXT NOT NULL
) STRICT;
CREATE TABLE node_pools (
    name TEXT PRIMARY KEY,
    commit_sha TEXT NOT NULL,
    changed_in TEXT NOT NULL,
    doc TEXT NOT NULL
) STRICT;

-- One row: where GitOps sync stands.
CREATE TABLE sync_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    good_commit TEXT,
    good_at INTEGER,
    seen_commit TEXT,
    seen_at INTEGER,
    failed_commit TEXT,
    failed_at INTEGER,
    failed_diagnostics TEXT
) STRICT;
INSERT INTO sync_state (id) VALUES (1);

-- `key` is never reused (AUTOINCREMENT), so samples left behind by a
-- deleted node can never be attributed to a later one.
CREATE TABLE nodes (
    key INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    region TEXT NOT NULL,
    address TEXT NOT NULL,
    mode TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('up', 'down', 'drain')),
    status_since INTEGER NOT NULL,
    status_reason TEXT NOT NULL,
    token_hash BLOB NOT NULL CHECK (length(token_hash) = 32),
    registered_at INTEGER NOT NULL,
    last_heartbeat INTEGER,
    metrics_at INTEGER,
    cpu REAL,
    rtt_ms REAL,
    error_rate REAL,
    last_sample_at INTEGER,
    hostname TEXT,
    agent_version TEXT
) STRICT;
CREATE INDEX nodes_by_region ON nodes (region, id);

-- Metric samples, appended in time order, pruned from the old end.
-- Metrics are NULL when the value was not a number.
CREATE TABLE samples (
    node_key INTEGER NOT NULL,
    at INTEGER NOT NULL,
    cpu REAL,
    rtt_ms REAL,
    error_rate REAL
) STRICT;
CREATE INDEX samples_by_time ON samples (at);

CREATE TABLE audit_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at INTEGER NOT NULL,
    actor TEXT NOT NULL,
    kind TEXT NOT NULL,
    subject TEXT NOT NULL,
    message TEXT NOT NULL,
    commit_sha TEXT,
    data TEXT NOT NULL
) STRICT;
CREATE INDEX audit_by_kind ON audit_log (kind, id);
CREATE INDEX audit_by_subject ON audit_log (subject, id);
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only: UPDATE refused');
END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only: DELETE refused');
END;

CREATE TABLE runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    root TEXT NOT NULL,
    workspace TEXT NOT NULL,
    trigger TEXT NOT NULL,
    commit_sha TEXT,
    status TEXT NOT NULL
        CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    adds INTEGER,
    changes INTEGER,
    destroys INTEGER,
    exit_code INTEGER,
    queued_at INTEGER NOT NULL,
    started_at INTEGER,
    finished_at INTEGER,
    duration_ms INTEGER,
    log TEXT NOT NULL DEFAULT ''
) STRICT;
CREATE INDEX runs_by_root ON runs (root, id);

CREATE TABLE autoscale_last_actions (
    region TEXT PRIMARY KEY,
    at INTEGER NOT NULL,
    doc TEXT NOT NULL
) STRICT;

CREATE TABLE dns_zones (
    name TEXT PRIMARY KEY,
    serial INTEGER NOT NULL CHECK (serial BETWEEN 0 AND 4294967295),
    doc TEXT NOT NULL,
    updated_at INTEGER NOT NULL
) STRICT;
";

/// Version 2: a run the daemon was killed during ends `interrupted`
/// (SQLite cannot change a CHECK constraint in place: the table is rebuilt).
const V2: &str = r"
CREATE TABLE runs_v2 (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    root TEXT NOT NULL,
    workspace TEXT NOT NULL,
    trigger TEXT NOT NULL,
    commit_sha TEXT,
    status TEXT NOT NULL
        CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled',
                          'interrupted')),
    adds INTEGER,
    changes INTEGER,
    destroys INTEGER,
    exit_code INTEGER,
    queued_at INTEGER NOT NULL,
    started_at INTEGER,
    finished_at INTEGER,
    duration_ms INTEGER,
    log TEXT NOT NULL DEFAULT ''
) STRICT;
INSERT INTO runs_v2 SELECT * FROM runs;
DROP TABLE runs;
ALTER TABLE runs_v2 RENAME TO runs;
CREATE INDEX runs_by_root ON runs (root, id);
CREATE INDEX runs_by_status ON runs (status, id);
";

/// Version 3: the leases replicas elect a leader with (`leases.rs`).
const V3: &str = r"
CREATE TABLE leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    term INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
) STRICT;
";

/// Version 4: the release queue, shared by replicas and kept over restarts.
const V4: &str = r"
CREATE TABLE releases (
    node_id TEXT PRIMARY KEY,
    doc TEXT NOT NULL,
    updated_at INTEGER NOT NULL
) STRICT;
";

/// Version 5: named documents kept over restarts (`docs.rs`).
const V5: &str = r"
CREATE TABLE docs (
    key TEXT PRIMARY KEY,
    doc TEXT NOT NULL,
    updated_at INTEGER NOT NULL
) STRICT;
";

/// Version 6: each replica's verdict on each node, and which replicas are
/// live (`verdicts.rs`).
const V6: &str = r"
CREATE TABLE vantage_points (
    replica TEXT PRIMARY KEY,
    seen_at INTEGER NOT NULL
) STRICT;
CREATE TABLE verdicts (
    replica TEXT NOT NULL,
    node_id TEXT NOT NULL,
    ready INTEGER NOT NULL,
    detail TEXT NOT NULL,
    PRIMARY KEY (replica, node_id)
) STRICT;
";

/// Version 7: the change counter and stamps that let a replica read only
/// the nodes and verdicts changed since its last read (`changes.rs`), and
/// the deleted nodes' tombstones. Rows written before carry stamp 1, which a
/// first (complete) read returns anyway. `nodes.changed` has no index: one
/// would be rewritten by every heartbeat, and the scan it saves is cheap
/// beside shipping every row.
const V7: &str = r"
CREATE TABLE change_counter (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    n INTEGER NOT NULL,
    pruned_through INTEGER NOT NULL
) STRICT;
INSERT INTO change_counter (id, n, pruned_through) VALUES (1, 1, 0);
ALTER TABLE nodes ADD COLUMN changed INTEGER NOT NULL DEFAULT 1;
ALTER TABLE verdicts ADD COLUMN changed INTEGER NOT NULL DEFAULT 1;
CREATE INDEX verdicts_by_change ON verdicts (changed);
CREATE TABLE node_deletions (
    node_id TEXT NOT NULL,
    changed INTEGER NOT NULL,
    at INTEGER NOT NULL
) STRICT;
CREATE INDEX node_deletions_by_change ON node_deletions (changed);
CREATE INDEX node_deletions_by_time ON node_deletions (at);
";

/// Version 8: audit retention (`audit.rs`). The log stays append-only but
/// for its oldest entries: a DELETE is refused unless the entry's id is at
/// most `audit_pruned.through_id`, a mark that only moves forward and that
/// the pruning transaction raises (beside an `audit.pruned` entry of its own).
const V8: &str = r"
CREATE TABLE audit_pruned (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    through_id INTEGER NOT NULL
) STRICT;
INSERT INTO audit_pruned (id, through_id) VALUES (1, 0);
CREATE TRIGGER audit_pruned_forward_only BEFORE UPDATE ON audit_pruned
WHEN NEW.through_id < OLD.through_id OR NEW.id <> OLD.id
BEGIN
    SELECT RAISE(ABORT, 'audit_pruned only moves forward');
END;
CREATE TRIGGER audit_pruned_no_delete BEFORE DELETE ON audit_pruned
BEGIN
    SELECT RAISE(ABORT, 'audit_pruned only moves forward');
END;
DROP TRIGGER audit_log_no_delete;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
WHEN OLD.id > (SELECT through_id FROM audit_pruned WHERE id = 1)
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only: DELETE refused beyond the pruning mark');
END;
";

/// Version 9: how far each replica's heartbeat writer has stored
/// (`verdicts.rs`): every heartbeat it received before `stored_through`
/// (milliseconds since the epoch, by its own clock) is in the store. NULL:
/// not published (a replica of an earlier version).
const V9: &str = r"
ALTER TABLE vantage_points ADD COLUMN stored_through INTEGER;
";

/// Brings the database at `path` (open as `conn`) to `steps.len()`, applying
/// the missing steps in order. Re-running on an up-to-date file changes
/// nothing. Returns the version reached.
pub(crate) fn migrate(conn: &mut Connection, path: &Path, steps: &[&str]) -> Result<usize> {
    let supported = steps.len();
    loop {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|source| open_error(path, source))?;
        let version = check_identity(&tx, path, supported)?;
        let Some(step) = steps.get(version) else {
            tx.commit().map_err(|source| open_error(path, source))?;
            return Ok(version);
        };
        let next = version.saturating_add(1);
        let migration_error = |source| StoreError::Migration {
            path: path.to_owned(),
            version: next,
            source,
        };
        tx.execute_batch(step).map_err(migration_error)?;
        tx.pragma_update(
            None,
            "user_version",
            i64::try_from(next).unwrap_or(i64::MAX),
        )
        .map_err(migration_error)?;
        tx.pragma_update(None, "application_id", APPLICATION_ID)
            .map_err(migration_error)?;
        tx.commit().map_err(migration_error)?;
    }
}

/// Checks that the file is empty or neutral's, at a version this binary
/// understands, and returns that version.
fn check_identity(conn: &Connection, path: &Path, supported: usize) -> Result<usize> {
    let read = |pragma: &str| -> Result<i64> {
        conn.pragma_query_value(None, pragma, |row| row.get::<_, i64>(0))
            .map_err(|source| open_error(path, source))
    };
    let application_id = read("application_id")?;
    let version = read("user_version")?;
    let not_neutral = |reason: String| StoreError::NotNeutral {
        path: path.to_owned(),
        reason,
    };
    if application_id != i64::from(APPLICATION_ID) {
        if application_id != 0 {
            return Err(not_neutral(format!(
                "application_id is {application_id:#x}"
            )));
        }
        if version != 0 {
            return Err(not_neutral(format!(
                "user_version {version} without neutral's application_id"
            )));
        }
        let objects: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_schema", [], |row| row.get(0))
            .map_err(|source| open_error(path, source))?;
        if objects != 0 {
            return Err(not_neutral(format!(
                "it already holds {objects} tables or indexes"
            )));
        }
    }
    let found =
        usize::try_from(version).map_err(|_| not_neutral(format!("user_version {version}")))?;
    if found > supported {
        return Err(StoreError::NewerSchema {
            path: path.to_owned(),
            found: version,
            supported,
        });
    }
    Ok(found)
}

fn open_error(path: &Path, source: rusqlite::Error) -> StoreError {
    StoreError::Open {
        path: path.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version_of(conn: &Connection) -> i64 {
        conn.pragma_query_value(None, "user_version", |row| row.get(0))
            .unwrap()
    }

    fn tables(conn: &Connection) -> Vec<String> {
        let mut stmt = conn
            .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name")
            .unwrap();
        stmt.query_map([], |row| row.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    }

    #[test]
    fn migrations_from_empty_reach_the_current_version_and_reopening_is_a_no_op() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let mut conn = Connection::open(&path).unwrap();
        assert_eq!(
            migrate(&mut conn, &path, MIGRATIONS).unwrap(),
            current_version()
        );
        assert_eq!(version_of(&conn), i64::try_from(current_version()).unwrap());
        conn.execute("INSERT INTO dns_zones VALUES ('z', 1, '{}', 0)", [])
            .unwrap();
        let before = tables(&conn);
        drop(conn);

        let mut conn = Connection::open(&path).unwrap();
        assert_eq!(
            migrate(&mut conn, &path, MIGRATIONS).unwrap(),
            current_version()
        );
        assert_eq!(tables(&conn), before);
        let zones: i64 = conn
            .query_row("SELECT count(*) FROM dns_zones", [], |row| row.get(0))
            .unwrap();
        assert_eq!(zones, 1, "re-opening keeps the data");
    }

    #[test]
    fn version_2_keeps_the_runs_of_version_1_and_allows_interrupted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let mut conn = Connection::open(&path).unwrap();
        migrate(&mut conn, &path, &[V1]).unwrap();
        conn.execute(
            "INSERT INTO runs (root, workspace, trigger, status, queued_at, log)
             VALUES ('infra/gtm', 'default', 'push', 'running', 5, 'half a log')",
            [],
        )
        .unwrap();
        assert!(
            conn.execute("UPDATE runs SET status = 'interrupted'", [])
                .is_err(),
            "version 1 has no interrupted"
        );
        assert_eq!(
            migrate(&mut conn, &path, MIGRATIONS).unwrap(),
            MIGRATIONS.len()
        );
        let (status, log): (String, String) = conn
            .query_row("SELECT status, log FROM runs", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!((status.as_str(), log.as_str()), ("running", "half a log"));
        conn.execute("UPDATE runs SET status = 'interrupted'", [])
            .unwrap();
    }

    #[test]
    fn later_steps_apply_in_order_on_top_of_earlier_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let mut conn = Connection::open(&path).unwrap();
        let v1 = "CREATE TABLE t (a INTEGER);";
        let v2 = "ALTER TABLE t ADD COLUMN b INTEGER; INSERT INTO t VALUES (1, 2);";
        assert_eq!(migrate(&mut conn, &path, &[v1]).unwrap(), 1);
        assert_eq!(migrate(&mut conn, &path, &[v1, v2]).unwrap(), 2);
        // Running again must not re-apply v2 (it would insert a second row).
        assert_eq!(migrate(&mut conn, &path, &[v1, v2]).unwrap(), 2);
        let rows: i64 = conn
            .query_row("SELECT count(*) FROM t", [], |row| row.get(0))
            .unwrap();
        assert_eq!(rows, 1);
    }

    #[test]
    fn a_failing_step_leaves_the_previous_version_intact() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let mut conn = Connection::open(&path).unwrap();
        let v1 = "CREATE TABLE t (a INTEGER);";
        let broken = "CREATE TABLE u (a INTEGER); INSERT INTO no_such_table VALUES (1);";
        migrate(&mut conn, &path, &[v1]).unwrap();
        let err = migrate(&mut conn, &path, &[v1, broken]).unwrap_err();
        assert!(
            matches!(err, StoreError::Migration { version: 2, .. }),
            "{err}"
        );
        assert_eq!(version_of(&conn), 1);
        assert_eq!(tables(&conn), vec!["t".to_owned()], "u was rolled back");
    }

    #[test]
    fn a_newer_schema_is_refused_with_both_versions_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let mut conn = Connection::open(&path).unwrap();
        migrate(&mut conn, &path, MIGRATIONS).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        let err = migrate(&mut conn, &path, MIGRATIONS).unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(err, StoreError::NewerSchema { found: 99, .. }),
            "{text}"
        );
        assert!(text.contains("schema version 99 is newer"), "{text}");
        assert!(
            text.contains(&format!("up to {}", current_version())),
            "{text}"
        );
    }

    #[test]
    fn a_foreign_sqlite_file_is_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let mut conn = Connection::open(&path).unwrap();
        conn.execute_batch("CREATE TABLE someone_elses (x TEXT);")
            .unwrap();
        let err = migrate(&mut conn, &path, MIGRATIONS).unwrap_err();
        assert!(matches!(err, StoreError::NotNeutral { .. }), "{err}");
        assert_eq!(tables(&conn), vec!["someone_elses".to_owned()]);

        conn.pragma_update(None, "application_id", 42).unwrap();
        let err = migrate(&mut conn, &path, MIGRATIONS).unwrap_err();
        assert!(err.to_string().contains("application_id is 0x2a"), "{err}");
    }
}
