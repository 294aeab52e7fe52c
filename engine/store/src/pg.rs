//! The PostgreSQL backend: connecting from a `postgres://` URL, the
//! connections, the transactions the stores run in, and the versioned
//! schema.
//!
//! This module owns the PostgreSQL side of [`crate::Store`]: one writer
//! connection behind a mutex and a few reader connections, as the SQLite
//! backend has. Every write transaction first takes a transaction-level
//! advisory lock ([`WRITE_LOCK`]), so writes are serialized as SQLite's
//! `BEGIN IMMEDIATE` serializes them, even across processes; each read is one
//! `REPEATABLE READ READ ONLY` transaction (one snapshot for all its
//! statements). A connection found closed (the server restarted) is opened
//! again before its next use. Migrations are recorded in the table
//! `neutral_schema` (one row per applied version), each step applied in one
//! transaction under [`MIGRATE_LOCK`]; a database whose recorded version is
//! newer than this binary knows is refused, and so is a database holding
//! other tables without `neutral_schema`. TLS follows libpq's `sslmode` and
//! `sslrootcert` in the URL (`pg_tls`). This module must not decide
//! anything about the stored data, read a clock, or log: it hands errors up
//! with the URL's credentials redacted.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::atomic::AtomicUsize;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use postgres::IsolationLevel;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::db::{self, PgClient, PgConn, Tx, lock, off_runtime};
use crate::error::{During, Result, StoreError};
use crate::pg_tls;
use crate::schema;

/// The transactions [`PgDb`] runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `READ COMMITTED`, holding [`WRITE_LOCK`].
    Serialized,
    /// `READ COMMITTED`, without it.
    Unserialized,
    /// `REPEATABLE READ READ ONLY`.
    Read,
}

/// Advisory lock key every write transaction holds ("neutwrit").
pub const WRITE_LOCK: i64 = 0x6e65_7574_7772_6974;
/// Advisory lock key a migration holds ("neutmigr").
pub const MIGRATE_LOCK: i64 = 0x6e65_7574_6d69_6772;

/// How long connecting may take before the store gives up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether `location` names a PostgreSQL database (`postgres://` or
/// `postgresql://`).
pub fn is_postgres_url(location: &str) -> bool {
    let lower = location.trim_start().to_ascii_lowercase();
    lower.starts_with("postgres://") || lower.starts_with("postgresql://")
}

/// Parses a `postgres://user[:password]@host[:port]/database[?options]` URL.
/// The error names the redacted URL and what is wrong; never the password.
pub fn parse_url(url: &str) -> Result<postgres::Config> {
    let shown = neutral_core::redact::redact(url).into_owned();
    let invalid = |reason: String| StoreError::InvalidStoreUrl {
        url: shown.clone(),
        reason,
    };
    if !is_postgres_url(url) {
        return Err(invalid(
            "it must start with postgres:// or postgresql://".to_owned(),
        ));
    }
    let (client_url, _) = pg_tls::split_url(url.trim()).map_err(&invalid)?;
    let mut config = postgres::Config::from_str(&client_url)
        // The client's message may quote the URL: say only what it is.
        .map_err(|err| invalid(neutral_core::redact::redact(&err.to_string()).into_owned()))?;
    if config.get_hosts().is_empty() {
        return Err(invalid("it names no host".to_owned()));
    }
    if config.get_dbname().is_none() {
        return Err(invalid(
            "it names no database (postgres://user@host:port/DATABASE)".to_owned(),
        ));
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    config.application_name("neutral");
    Ok(config)
}

/// The TLS connector a store URL asks for (`sslmode`, `sslrootcert`; see
/// `pg_tls`).
pub fn tls_of(url: &str) -> Result<MakeRustlsConnect> {
    let invalid = |reason: String| StoreError::InvalidStoreUrl {
        url: neutral_core::redact::redact(url).into_owned(),
        reason,
    };
    let (_, settings) = pg_tls::split_url(url.trim()).map_err(&invalid)?;
    pg_tls::connector(&settings).map_err(invalid)
}

/// The PostgreSQL side of a [`crate::Store`].
pub(crate) struct PgDb {
    /// The URL with its credentials redacted, for messages.
    pub(crate) location: String,
    config: postgres::Config,
    tls: MakeRustlsConnect,
    writer: Mutex<PgConn>,
    readers: Vec<Mutex<PgConn>>,
    next_reader: AtomicUsize,
}

impl PgDb {
    /// Connects, brings the schema up to date and opens the readers.
    pub(crate) fn open(url: &str, readers: usize) -> Result<PgDb> {
        off_runtime(|| PgDb::open_here(url, readers))
    }

    fn open_here(url: &str, readers: usize) -> Result<PgDb> {
        let config = parse_url(url)?;
        let tls = tls_of(url)?;
        let location = neutral_core::redact::redact(url).into_owned();
        let mut writer = connect(&config, &tls, &location)?;
        migrate(&mut writer, &location, PG_MIGRATIONS)?;
        let readers = (0..readers)
            .map(|_| connect(&config, &tls, &location).map(Mutex::new))
            .collect::<Result<Vec<_>>>()?;
        Ok(PgDb {
            location,
            config,
            tls,
            writer: Mutex::new(writer),
            readers,
            next_reader: AtomicUsize::new(0),
        })
    }

    /// Runs `f` in one transaction holding [`WRITE_LOCK`] and commits it.
    pub(crate) fn write<T: Send>(
        &self,
        op: &'static str,
        f: impl FnOnce(&Tx<'_>) -> Result<T> + Send,
    ) -> Result<T> {
        off_runtime(|| self.write_here(op, f))
    }

    fn write_here<T>(&self, op: &'static str, f: impl FnOnce(&Tx<'_>) -> Result<T>) -> Result<T> {
        self.run_on(lock(&self.writer), op, Kind::Serialized, f)
    }

    /// Runs `f` in one `READ COMMITTED` write transaction on a reader
    /// connection, without the write advisory lock: a write that must not
    /// queue behind the others (a lease renewal behind a replica's
    /// heartbeat batches would let the lease lapse; so would a replica's
    /// presence, `verdicts::renew_presence`). Only for rows whose own row
    /// locks order the writes: the lease, which no serialized write changes,
    /// and a presence's date and writer mark, which every write sets whole.
    pub(crate) fn write_unserialized<T: Send>(
        &self,
        op: &'static str,
        f: impl FnOnce(&Tx<'_>) -> Result<T> + Send,
    ) -> Result<T> {
        off_runtime(|| self.run_on(self.reader(), op, Kind::Unserialized, f))
    }

    /// Runs `f` in one `REPEATABLE READ READ ONLY` transaction.
    pub(crate) fn read<T: Send>(
        &self,
        op: &'static str,
        f: impl FnOnce(&Tx<'_>) -> Result<T> + Send,
    ) -> Result<T> {
        off_runtime(|| self.run_on(self.reader(), op, Kind::Read, f))
    }

    /// Runs `f` in one transaction of `kind` on `conn` and commits it.
    fn run_on<T>(
        &self,
        mut conn: MutexGuard<'_, PgConn>,
        op: &'static str,
        kind: Kind,
        f: impl FnOnce(&Tx<'_>) -> Result<T>,
    ) -> Result<T> {
        self.reconnect_if_closed(&mut conn)?;
        let conn: &mut PgConn = &mut conn;
        let mut tx = match kind {
            Kind::Serialized | Kind::Unserialized => conn
                .client
                .build_transaction()
                .isolation_level(IsolationLevel::ReadCommitted),
            Kind::Read => conn
                .client
                .build_transaction()
                .isolation_level(IsolationLevel::RepeatableRead)
                .read_only(true),
        }
        .start()
        .during(op)?;
        if kind == Kind::Serialized {
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&WRITE_LOCK])
                .during(op)?;
        }
        let tx = Tx::postgres(tx, &mut conn.statements);
        let value = f(&tx)?;
        tx.commit().during(op)?;
        Ok(value)
    }

    /// The schema version recorded in `neutral_schema`.
    pub(crate) fn schema_version(&self) -> Result<i64> {
        off_runtime(|| {
            let mut guard = self.reader();
            self.reconnect_if_closed(&mut guard)?;
            recorded_version(&mut guard.client, &self.location)
        })
    }

    fn reconnect_if_closed(&self, conn: &mut PgConn) -> Result<()> {
        if conn.client.is_closed() {
            *conn = connect(&self.config, &self.tls, &self.location)?;
        }
        Ok(())
    }

    fn reader(&self) -> MutexGuard<'_, PgConn> {
        db::reader(&self.readers, &self.writer, &self.next_reader)
    }
}

fn connect(config: &postgres::Config, tls: &MakeRustlsConnect, location: &str) -> Result<PgConn> {
    let client = config
        .connect(tls.clone())
        .map_err(|cause| StoreError::PgConnect {
            location: location.to_owned(),
            cause,
        })?;
    Ok(PgConn {
        client: PgClient(Some(client)),
        statements: HashMap::new(),
    })
}

/// Migration steps for PostgreSQL; step `i` takes the schema from version
/// `i` to `i + 1`. Version numbers match the SQLite schema's
/// ([`schema::MIGRATIONS`]): version 1 here already has what SQLite's
/// version 2 added, so a step may be a no-op on one backend.
pub const PG_MIGRATIONS: &[&str] = &[
    PG_V1, PG_V2, PG_V3, PG_V4, PG_V5, PG_V6, PG_V7, PG_V8, PG_V9,
];

const PG_V1: &str = r"
CREATE TABLE regions (
    name TEXT PRIMARY KEY,
    commit_sha TEXT NOT NULL,
    changed_in TEXT NOT NULL,
    doc TEXT NOT NULL
);
CREATE TABLE gtm_policies (
    name TEXT PRIMARY KEY,
    commit_sha TEXT NOT NULL,
    changed_in TEXT NOT NULL,
    doc TEXT NOT NULL
);
CREATE TABLE autoscale_policies (
    name TEXT PRIMARY KEY,
    commit_sha TEXT NOT NULL,
    changed_in TEXT NOT NULL,
    doc TEXT NOT NULL
);
CREATE TABLE node_pools (
    name TEXT PRIMARY KEY,
    commit_sha TEXT NOT NULL,
    changed_in TEXT NOT NULL,
    doc TEXT NOT NULL
);

CREATE TABLE sync_state (
    id BIGINT PRIMARY KEY CHECK (id = 1),
    good_commit TEXT,
    good_at BIGINT,
    seen_commit TEXT,
    seen_at BIGINT,
    failed_commit TEXT,
    failed_at BIGINT,
    failed_diagnostics TEXT
);
INSERT INTO sync_state (id) VALUES (1);

-- `key` comes from a sequence and is never reused.
CREATE TABLE nodes (
    key BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    region TEXT NOT NULL,
    address TEXT NOT NULL,
    mode TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('up', 'down', 'drain')),
    status_since BIGINT NOT NULL,
    status_reason TEXT NOT NULL,
    token_hash BYTEA NOT NULL CHECK (length(token_hash) = 32),
    registered_at BIGINT NOT NULL,
    last_heartbeat BIGINT,
    metrics_at BIGINT,
    cpu DOUBLE PRECISION,
    rtt_ms DOUBLE PRECISION,
    error_rate DOUBLE PRECISION,
    last_sample_at BIGINT,
    hostname TEXT,
    agent_version TEXT
);
CREATE INDEX nodes_by_region ON nodes (region, id);

-- `rowid` plays SQLite's rowid: the order samples were appended in.
CREATE TABLE samples (
    rowid BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    node_key BIGINT NOT NULL,
    at BIGINT NOT NULL,
    cpu DOUBLE PRECISION,
    rtt_ms DOUBLE PRECISION,
    error_rate DOUBLE PRECISION
);
CREATE INDEX samples_by_time ON samples (at);

CREATE TABLE audit_log (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at BIGINT NOT NULL,
    actor TEXT NOT NULL,
    kind TEXT NOT NULL,
    subject TEXT NOT NULL,
    message TEXT NOT NULL,
    commit_sha TEXT,
    data TEXT NOT NULL
);
CREATE INDEX audit_by_kind ON audit_log (kind, id);
CREATE INDEX audit_by_subject ON audit_log (subject, id);
CREATE FUNCTION neutral_audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $f$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP;
END
$f$;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION neutral_audit_log_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION neutral_audit_log_append_only();

CREATE TABLE runs (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    root TEXT NOT NULL,
    workspace TEXT NOT NULL,
    trigger TEXT NOT NULL,
    commit_sha TEXT,
    status TEXT NOT NULL
        CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled',
                          'interrupted')),
    adds BIGINT,
    changes BIGINT,
    destroys BIGINT,
    exit_code BIGINT,
    queued_at BIGINT NOT NULL,
    started_at BIGINT,
    finished_at BIGINT,
    duration_ms BIGINT,
    log TEXT NOT NULL DEFAULT ''
);
CREATE INDEX runs_by_root ON runs (root, id);

CREATE TABLE autoscale_last_actions (
    region TEXT PRIMARY KEY,
    at BIGINT NOT NULL,
    doc TEXT NOT NULL
);

CREATE TABLE dns_zones (
    name TEXT PRIMARY KEY,
    serial BIGINT NOT NULL CHECK (serial BETWEEN 0 AND 4294967295),
    doc TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
";

/// Version 2 (SQLite's added `interrupted` runs, which version 1 here
/// already allows): the index SQLite's version 2 added.
const PG_V2: &str = r"
CREATE INDEX runs_by_status ON runs (status, id);
";

const PG_V3: &str = r"
CREATE TABLE leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    term BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
";

const PG_V4: &str = r"
CREATE TABLE releases (
    node_id TEXT PRIMARY KEY,
    doc TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
";

const PG_V5: &str = r"
CREATE TABLE docs (
    key TEXT PRIMARY KEY,
    doc TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
";

const PG_V6: &str = r"
CREATE TABLE vantage_points (
    replica TEXT PRIMARY KEY,
    seen_at BIGINT NOT NULL
);
CREATE TABLE verdicts (
    replica TEXT NOT NULL,
    node_id TEXT NOT NULL,
    ready BIGINT NOT NULL,
    detail TEXT NOT NULL,
    PRIMARY KEY (replica, node_id)
);
";

/// Version 7: the change counter (see `schema::V7`).
const PG_V7: &str = r"
CREATE TABLE change_counter (
    id BIGINT PRIMARY KEY CHECK (id = 1),
    n BIGINT NOT NULL,
    pruned_through BIGINT NOT NULL
);
INSERT INTO change_counter (id, n, pruned_through) VALUES (1, 1, 0);
ALTER TABLE nodes ADD COLUMN changed BIGINT NOT NULL DEFAULT 1;
ALTER TABLE verdicts ADD COLUMN changed BIGINT NOT NULL DEFAULT 1;
CREATE INDEX verdicts_by_change ON verdicts (changed);
CREATE TABLE node_deletions (
    node_id TEXT NOT NULL,
    changed BIGINT NOT NULL,
    at BIGINT NOT NULL
);
CREATE INDEX node_deletions_by_change ON node_deletions (changed);
CREATE INDEX node_deletions_by_time ON node_deletions (at);
";

/// Version 9: each replica's heartbeat writer's mark (see `schema::V9`).
const PG_V9: &str = r"
ALTER TABLE vantage_points ADD COLUMN stored_through BIGINT;
";

/// Version 8: audit retention, as SQLite's version 8: a DELETE on the audit
/// log passes only at or below the forward-only `audit_pruned` mark.
const PG_V8: &str = r"
CREATE TABLE audit_pruned (
    id BIGINT PRIMARY KEY CHECK (id = 1),
    through_id BIGINT NOT NULL
);
INSERT INTO audit_pruned (id, through_id) VALUES (1, 0);
CREATE FUNCTION neutral_audit_pruned_forward_only() RETURNS trigger LANGUAGE plpgsql AS $f$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        IF NEW.through_id >= OLD.through_id AND NEW.id = OLD.id THEN
            RETURN NEW;
        END IF;
    END IF;
    RAISE EXCEPTION 'audit_pruned only moves forward: % refused', TG_OP;
END
$f$;
CREATE TRIGGER audit_pruned_forward_only BEFORE UPDATE OR DELETE ON audit_pruned
    FOR EACH ROW EXECUTE FUNCTION neutral_audit_pruned_forward_only();
CREATE TRIGGER audit_pruned_no_truncate BEFORE TRUNCATE ON audit_pruned
    FOR EACH STATEMENT EXECUTE FUNCTION neutral_audit_pruned_forward_only();
CREATE OR REPLACE FUNCTION neutral_audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $f$
BEGIN
    IF TG_OP = 'DELETE' THEN
        IF OLD.id <= (SELECT through_id FROM audit_pruned WHERE id = 1) THEN
            RETURN OLD;
        END IF;
        RAISE EXCEPTION 'audit_log is append-only: DELETE refused beyond the pruning mark';
    END IF;
    RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP;
END
$f$;
";

const BOOKKEEPING: &str = r"
CREATE TABLE IF NOT EXISTS neutral_schema (
    version BIGINT PRIMARY KEY,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
)";

/// Brings the database to `steps.len()`, one step per transaction under
/// [`MIGRATE_LOCK`]. Returns the version reached.
pub(crate) fn migrate(conn: &mut PgConn, location: &str, steps: &[&str]) -> Result<usize> {
    let supported = steps.len();
    let open_error = |cause| StoreError::PgOpen {
        location: location.to_owned(),
        cause,
    };
    loop {
        let mut tx = conn.client.transaction().map_err(open_error)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATE_LOCK])
            .map_err(open_error)?;
        let version = check_identity(&mut tx, location, supported)?;
        let Some(step) = steps.get(version) else {
            tx.commit().map_err(open_error)?;
            return Ok(version);
        };
        let next = version.saturating_add(1);
        let migration_error = |cause| StoreError::PgMigration {
            location: location.to_owned(),
            version: next,
            cause,
        };
        tx.batch_execute(BOOKKEEPING).map_err(migration_error)?;
        tx.batch_execute(step).map_err(migration_error)?;
        tx.execute(
            "INSERT INTO neutral_schema (version) VALUES ($1)",
            &[&i64::try_from(next).unwrap_or(i64::MAX)],
        )
        .map_err(migration_error)?;
        tx.commit().map_err(migration_error)?;
    }
}

/// Checks that the database is empty or neutral's, at a version this
/// binary understands, and returns that version.
fn check_identity(
    tx: &mut postgres::Transaction<'_>,
    location: &str,
    supported: usize,
) -> Result<usize> {
    let open_error = |cause| StoreError::PgOpen {
        location: location.to_owned(),
        cause,
    };
    let not_neutral = |reason: String| StoreError::PgNotNeutral {
        location: location.to_owned(),
        reason,
    };
    let has_bookkeeping: bool = tx
        .query_one("SELECT to_regclass('neutral_schema') IS NOT NULL", &[])
        .and_then(|row| row.try_get(0))
        .map_err(open_error)?;
    if !has_bookkeeping {
        let tables: i64 = tx
            .query_one(
                "SELECT count(*) FROM information_schema.tables
                 WHERE table_schema = current_schema()",
                &[],
            )
            .and_then(|row| row.try_get(0))
            .map_err(open_error)?;
        if tables != 0 {
            return Err(not_neutral(format!(
                "its schema already holds {tables} tables and no neutral_schema table"
            )));
        }
        return Ok(0);
    }
    let version: i64 = tx
        .query_one("SELECT coalesce(max(version), 0) FROM neutral_schema", &[])
        .and_then(|row| row.try_get(0))
        .map_err(open_error)?;
    let found =
        usize::try_from(version).map_err(|_| not_neutral(format!("recorded version {version}")))?;
    if found > supported {
        return Err(StoreError::PgNewerSchema {
            location: location.to_owned(),
            found: version,
            supported,
        });
    }
    Ok(found)
}

fn recorded_version(client: &mut postgres::Client, location: &str) -> Result<i64> {
    client
        .query_one("SELECT coalesce(max(version), 0) FROM neutral_schema", &[])
        .and_then(|row| row.try_get(0))
        .map_err(|cause| StoreError::PgOpen {
            location: location.to_owned(),
            cause,
        })
}

/// Keeps both backends at the same version numbers.
const _: () = assert!(PG_MIGRATIONS.len() == schema::MIGRATIONS.len());

#[cfg(test)]
mod tests;
