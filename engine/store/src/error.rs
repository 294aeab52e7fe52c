//! The one error type of the stores. Every variant names the operation that
//! failed (`record heartbeats`, `apply declarations`, ...) and, where there is
//! one, the object it was working on, so a log line says what went wrong
//! without a backtrace.

use std::path::PathBuf;

/// What went wrong in a store operation.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "{path} is writable by other users (mode {mode:o}): anyone who can write there can \
         replace the store or the Terraform state; run `chmod 700 {path}`"
    )]
    UnsafeDataDir { path: PathBuf, mode: u32 },

    #[error(
        "{path}: the store is empty (0 bytes) — it held state before and was truncated or \
         replaced, so starting would serve an empty control plane; restore it from a backup, \
         or pass --init to start over from nothing"
    )]
    EmptyStore { path: PathBuf },

    #[error(
        "{dir} holds neutral state ({found}) but no store file {file}; it was deleted or moved, \
         so starting would serve an empty control plane; restore it, or pass --init to start \
         over from nothing"
    )]
    MissingStore {
        dir: PathBuf,
        file: String,
        found: String,
    },

    #[error("{path}: cannot set its permissions to {mode:o}: {source}")]
    Permissions {
        path: PathBuf,
        mode: u32,
        #[source]
        source: std::io::Error,
    },

    #[error("{path}: the fault point `{point}` gave up after waiting {waited_ms} ms to be killed")]
    FaultPoint {
        path: PathBuf,
        point: &'static str,
        waited_ms: u128,
    },

    #[error("invalid store options: {0}")]
    InvalidOptions(String),

    #[error("{op}: {source}")]
    Database {
        op: &'static str,
        #[source]
        source: crate::db::DbError,
    },

    #[error("--store {url}: not a PostgreSQL URL: {reason}")]
    InvalidStoreUrl { url: String, reason: String },

    #[error("--store {location}: cannot connect to PostgreSQL: {}", crate::db::pg_message(.cause))]
    PgConnect {
        location: String,
        /// Not a `source`: the message carries it (see `DbError::Postgres`).
        cause: postgres::Error,
    },

    #[error("--store {location}: {}", crate::db::pg_message(.cause))]
    PgOpen {
        location: String,
        cause: postgres::Error,
    },

    #[error(
        "--store {location}: schema version {found} is newer than this binary understands \
         (it knows versions up to {supported}); run a newer neutral or use another database"
    )]
    PgNewerSchema {
        location: String,
        found: i64,
        supported: usize,
    },

    #[error("--store {location}: not a neutral database ({reason}); use another database")]
    PgNotNeutral { location: String, reason: String },

    #[error("--store {location}: migrating the schema to version {version}: {}", crate::db::pg_message(.cause))]
    PgMigration {
        location: String,
        version: usize,
        cause: postgres::Error,
    },

    #[error("{path}: opening the database: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },

    #[error("{path}: the database refused WAL mode (journal mode is `{mode}`)")]
    NoWal { path: PathBuf, mode: String },

    #[error(
        "{path}: schema version {found} is newer than this binary understands \
         (it knows versions up to {supported}); run a newer neutral or use another --data directory"
    )]
    NewerSchema {
        path: PathBuf,
        found: i64,
        supported: usize,
    },

    #[error("{path}: not a neutral database ({reason}); use another --data directory")]
    NotNeutral { path: PathBuf, reason: String },

    #[error("{path}: migrating the schema to version {version}: {source}")]
    Migration {
        path: PathBuf,
        version: usize,
        #[source]
        source: rusqlite::Error,
    },

    #[error("{op}: cannot encode {what} as JSON: {source}")]
    Encode {
        op: &'static str,
        what: String,
        #[source]
        source: serde_json::Error,
    },

    #[error("{op}: stored {what} is not valid JSON for this version: {source}")]
    Decode {
        op: &'static str,
        what: String,
        #[source]
        source: serde_json::Error,
    },

    #[error("{op}: stored {what} has the invalid value `{value}`")]
    Corrupt {
        op: &'static str,
        what: String,
        value: String,
    },

    #[error("{op}: no node `{id}`")]
    NodeNotFound { op: &'static str, id: String },

    #[error(
        "register node: id `{id}` belongs to a node in region `{region}` at {address}; \
         an agent keeps its id only for the same region and address"
    )]
    NodeIdTaken {
        id: String,
        region: String,
        address: String,
    },

    #[error(
        "{op}: refused: this replica led under term {term}, but the leader lease is at term \
         {current} — another replica leads now"
    )]
    Fenced {
        op: &'static str,
        term: i64,
        current: i64,
    },

    #[error(
        "prune audit entries {first}..={last}: the range holds {found} entries, not the {expected} \
         archived (one committed into it late); nothing was pruned"
    )]
    AuditRangeChanged {
        first: i64,
        last: i64,
        expected: u64,
        found: u64,
    },

    #[error("{op}: no run {id}")]
    RunNotFound { op: &'static str, id: i64 },

    #[error("{op}: run {id} is {from}, it cannot become {to}")]
    RunTransition {
        op: &'static str,
        id: i64,
        from: String,
        to: String,
    },
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Attaches the name of the operation to a database error.
pub(crate) trait During<T> {
    fn during(self, op: &'static str) -> Result<T>;
}

impl<T> During<T> for rusqlite::Result<T> {
    fn during(self, op: &'static str) -> Result<T> {
        self.map_err(|source| StoreError::Database {
            op,
            source: source.into(),
        })
    }
}

impl<T> During<T> for std::result::Result<T, postgres::Error> {
    fn during(self, op: &'static str) -> Result<T> {
        self.map_err(|source| StoreError::Database {
            op,
            source: source.into(),
        })
    }
}

impl<T> During<T> for crate::db::DbResult<T> {
    fn during(self, op: &'static str) -> Result<T> {
        self.map_err(|source| StoreError::Database { op, source })
    }
}
