//! The [`Store`] handle itself: where the data is ([`StoreLocation`]), its
//! tunables ([`StoreOptions`]), opening either backend, the data folder's
//! permissions, and the transactions every store runs in
//! ([`Store::write`], [`Store::read`]).
//!
//! This module owns the SQLite connections (one writer, read-only readers, a
//! checkpointer) and hands PostgreSQL to [`crate::pg`]. It must not know any
//! table: each store module adds its own view (`store.nodes()`, …) in an
//! `impl Store` block of its own, so this module imports none of them.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicUsize;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{Connection, TransactionBehavior};

use crate::db::{self, Tx, lock};
use crate::error::{During, Result, StoreError};
use crate::{pg, schema};

/// The database file's name inside the `--data` directory.
pub const DB_FILE_NAME: &str = "neutral.sqlite3";

/// Tunables of a [`Store`]. `Default` gives the production values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreOptions {
    /// Metric samples older than this (relative to the newest heartbeat) are
    /// pruned. Default 1 h.
    pub sample_retention: Duration,
    /// At most this many samples per node within the retention window (at
    /// least 2). Default 2,000. See [`SampleStore`] for how it is kept.
    pub samples_per_node: u32,
    /// How long a statement waits for a lock held by another connection.
    /// Default 5 s.
    pub busy_timeout: Duration,
    /// A run's stored log keeps its last this many bytes. Default 256 KiB.
    pub run_log_limit: usize,
    /// Read-only connections for reads; 0 reads through the writer.
    /// Default 2.
    pub readers: usize,
    /// SQLite's page cache per connection (the writer, the checkpointer and
    /// each reader), in MiB: what the daemon's memory may grow by as the
    /// database grows, times the connections. Default 32 (the samples index
    /// and the nodes table stay hot); at least 1.
    pub cache_mib: u32,
    /// The writer copies the WAL into the database file itself (SQLite's
    /// auto-checkpoint, which stalls that commit) only once the WAL holds
    /// this many pages. A safety net: the daemon is expected to call
    /// [`Store::checkpoint`] about once a second, off the write path.
    /// Default 16,384 pages (64 MiB).
    pub wal_autocheckpoint_pages: u32,
    /// Start over from nothing when the store file exists but is empty, or
    /// is missing from a data directory that holds other neutral state
    /// (`--init`). Without it such a store is refused
    /// ([`StoreError::EmptyStore`], [`StoreError::MissingStore`]): a control
    /// plane must never silently come back with no nodes. A data directory
    /// with no store and no other state is a first start and needs no flag.
    pub init: bool,
    /// Fault point for crash tests (an "arm" file): while this file exists,
    /// [`Store::apply_declarations`] does all its writes, then creates
    /// `<file>.reached` and waits (at most 60 s) before committing, so a test
    /// can kill the process provably *inside* the transaction. The daemon
    /// sets it from env `NEUTRAL_FAULT_PAUSE_INSIDE_APPLY`; never in
    /// production.
    pub pause_inside_apply: Option<PathBuf>,
    /// The same for [`crate::SampleStore::record_heartbeats`] (env
    /// `NEUTRAL_FAULT_PAUSE_INSIDE_HEARTBEATS`): a heartbeat batch written,
    /// not committed.
    pub pause_inside_heartbeats: Option<PathBuf>,
    /// The same for [`crate::ZoneStore::put_zone_if`] (env
    /// `NEUTRAL_FAULT_PAUSE_INSIDE_ZONE_WRITE`): a zone and its audit entry
    /// written, not committed.
    pub pause_inside_zone_write: Option<PathBuf>,
}

/// A fault point for crash tests: while the arm file exists, creates
/// `<arm>.reached` (so the test knows the transaction's writes are done and
/// nothing is committed) and waits for the kill. Gives up with an error
/// (rolling back) after 60 s, so a test that forgot to kill cannot hang.
pub(crate) fn fault_point(arm: Option<&Path>, point: &'static str) -> Result<()> {
    let Some(arm) = arm.filter(|arm| arm.exists()) else {
        return Ok(());
    };
    let started = std::time::Instant::now();
    let mut reached = arm.as_os_str().to_owned();
    reached.push(".reached");
    let reached = PathBuf::from(reached);
    std::fs::write(&reached, format!("inside {point}, not committed\n")).map_err(|source| {
        StoreError::DataDir {
            path: reached.clone(),
            source,
        }
    })?;
    while started.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(StoreError::FaultPoint {
        path: reached,
        point,
        waited_ms: started.elapsed().as_millis(),
    })
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            sample_retention: Duration::from_secs(3600),
            samples_per_node: 2000,
            busy_timeout: Duration::from_secs(5),
            run_log_limit: 256 * 1024,
            readers: 2,
            cache_mib: 32,
            wal_autocheckpoint_pages: 16_384,
            init: false,
            pause_inside_apply: None,
            pause_inside_heartbeats: None,
            pause_inside_zone_write: None,
        }
    }
}

impl StoreOptions {
    fn check(&self) -> Result<()> {
        let retention_ms = self.sample_retention.as_millis();
        if retention_ms == 0 || i64::try_from(retention_ms).is_err() {
            return Err(StoreError::InvalidOptions(format!(
                "sample_retention must be between 1 ms and {} ms",
                i64::MAX
            )));
        }
        if self.samples_per_node < 2 {
            return Err(StoreError::InvalidOptions(format!(
                "samples_per_node must be at least 2, got {}",
                self.samples_per_node
            )));
        }
        if !(1..=65_536).contains(&self.cache_mib) {
            return Err(StoreError::InvalidOptions(format!(
                "cache_mib must be between 1 and 65536, got {}",
                self.cache_mib
            )));
        }
        if self.run_log_limit < 1024 {
            return Err(StoreError::InvalidOptions(format!(
                "run_log_limit must be at least 1024 bytes, got {}",
                self.run_log_limit
            )));
        }
        Ok(())
    }
}

/// Where a [`Store`] keeps its data: the SQLite file in a data directory
/// (the embedded default) or a PostgreSQL database (`--store
/// postgres://…`).
#[derive(Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// `neutral.sqlite3` in this data directory.
    SqliteDir(PathBuf),
    /// A `postgres://` or `postgresql://` URL (it may hold a password:
    /// [`fmt::Debug`] and [`fmt::Display`] redact it).
    Postgres(String),
}

impl fmt::Debug for StoreLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for StoreLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreLocation::SqliteDir(dir) => write!(f, "{}", dir.join(DB_FILE_NAME).display()),
            StoreLocation::Postgres(url) => f.write_str(&neutral_core::redact::redact(url)),
        }
    }
}

/// Which database a [`Store`] runs on.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The handle to neutral's database. Cheap to share behind an `Arc`.
pub struct Store {
    pub(crate) options: StoreOptions,
    backend: BackendDb,
    /// The leader term this process writes under, when it campaigns
    /// (`leases.rs`); `None`: no election, leader-only writes unchecked.
    fence: Mutex<Option<i64>>,
}

// One per process, never moved after opening: the size difference costs nothing.
#[allow(clippy::large_enum_variant)]
enum BackendDb {
    Sqlite(SqliteDb),
    Postgres(pg::PgDb),
}

/// The SQLite side: one writer, read-only readers, a checkpointer.
struct SqliteDb {
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: Vec<Mutex<Connection>>,
    checkpointer: Mutex<Connection>,
    next_reader: AtomicUsize,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("location", &self.location())
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens the store at `location`: [`Store::open`] for a data directory,
    /// [`Store::open_postgres`] for a URL.
    pub fn open_at(location: &StoreLocation, options: StoreOptions) -> Result<Store> {
        match location {
            StoreLocation::SqliteDir(dir) => Store::open(dir, options),
            StoreLocation::Postgres(url) => Store::open_postgres(url, options),
        }
    }

    /// Connects to the PostgreSQL database named by `url`
    /// (`postgres://user[:password]@host[:port]/database`) and brings its
    /// schema up to date. Errors name the URL with its credentials redacted.
    /// `options.init` and the data-directory checks do not apply: an empty
    /// database is a first start.
    pub fn open_postgres(url: &str, options: StoreOptions) -> Result<Store> {
        options.check()?;
        let db = pg::PgDb::open(url, options.readers)?;
        Ok(Store {
            options,
            backend: BackendDb::Postgres(db),
            fence: Mutex::new(None),
        })
    }

    /// Opens (creating if needed) `data_dir/neutral.sqlite3` and brings its
    /// schema up to date. The data directory is made private first
    /// ([`secure_data_dir`]). A store file that is missing from a directory
    /// holding other neutral state is refused unless `options.init`.
    pub fn open(data_dir: &Path, options: StoreOptions) -> Result<Store> {
        secure_data_dir(data_dir)?;
        let path = data_dir.join(DB_FILE_NAME);
        if !path.exists() && !options.init {
            let found: Vec<&str> = STATE_MARKERS
                .iter()
                .copied()
                .filter(|marker| data_dir.join(marker).exists())
                .collect();
            if !found.is_empty() {
                return Err(StoreError::MissingStore {
                    dir: data_dir.to_owned(),
                    file: DB_FILE_NAME.to_owned(),
                    found: found.join(", "),
                });
            }
        }
        Store::open_file(&path, options)
    }

    /// Opens (creating if needed, mode 0600) the database file at `path`.
    /// An existing empty (0-byte) file is refused unless `options.init`.
    pub fn open_file(path: &Path, options: StoreOptions) -> Result<Store> {
        options.check()?;
        prepare_file(path, options.init)?;
        let mut writer = connect(path, &options)?;
        schema::migrate(&mut writer, path, schema::MIGRATIONS)?;
        writer
            .pragma_update(None, "wal_autocheckpoint", options.wal_autocheckpoint_pages)
            .map_err(|source| StoreError::Open {
                path: path.to_owned(),
                source,
            })?;
        let checkpointer = connect(path, &options)?;
        let readers = (0..options.readers)
            .map(|_| {
                let reader = connect(path, &options)?;
                reader
                    .pragma_update(None, "query_only", true)
                    .map_err(|source| StoreError::Open {
                        path: path.to_owned(),
                        source,
                    })?;
                Ok(Mutex::new(reader))
            })
            .collect::<Result<Vec<_>>>()?;
        // SQLite creates `-wal` and `-shm` with the database file's mode;
        // files left by an older version are tightened here.
        for suffix in ["-wal", "-shm"] {
            let mut name = path.as_os_str().to_owned();
            name.push(suffix);
            let companion = PathBuf::from(name);
            if companion.exists() {
                set_mode(&companion, FILE_MODE)?;
            }
        }
        Ok(Store {
            options,
            backend: BackendDb::Sqlite(SqliteDb {
                path: path.to_owned(),
                writer: Mutex::new(writer),
                readers,
                checkpointer: Mutex::new(checkpointer),
                next_reader: AtomicUsize::new(0),
            }),
            fence: Mutex::new(None),
        })
    }

    /// Sets the leader term this process's leader-only writes must still
    /// hold (`None`: no election; they are not checked). See `leases.rs`.
    pub fn set_fence(&self, term: Option<i64>) {
        *lock(&self.fence) = term;
    }

    /// The leader term set by [`Store::set_fence`].
    pub fn fence(&self) -> Option<i64> {
        *lock(&self.fence)
    }

    /// The database file (SQLite), `None` on PostgreSQL.
    pub fn path(&self) -> Option<&Path> {
        match &self.backend {
            BackendDb::Sqlite(db) => Some(&db.path),
            BackendDb::Postgres(_) => None,
        }
    }

    /// Where the data is, for messages: the file, or the URL with its
    /// credentials redacted.
    pub fn location(&self) -> String {
        match &self.backend {
            BackendDb::Sqlite(db) => db.path.display().to_string(),
            BackendDb::Postgres(db) => db.location.clone(),
        }
    }

    pub fn backend(&self) -> Backend {
        match &self.backend {
            BackendDb::Sqlite(_) => Backend::Sqlite,
            BackendDb::Postgres(_) => Backend::Postgres,
        }
    }

    pub fn options(&self) -> &StoreOptions {
        &self.options
    }

    /// The schema version of the open database.
    pub fn schema_version(&self) -> Result<i64> {
        match &self.backend {
            BackendDb::Sqlite(db) => {
                let conn = db.reader();
                conn.pragma_query_value(None, "user_version", |row| row.get(0))
                    .during("read schema version")
            }
            BackendDb::Postgres(db) => db.schema_version(),
        }
    }

    /// Copies committed WAL frames into the database file without blocking
    /// writers or readers (`PRAGMA wal_checkpoint(PASSIVE)` on a connection of
    /// its own), so commits never pay for it. Call it periodically (about once
    /// a second) from a blocking task. Once every frame is copied and no reader
    /// holds an old snapshot, the next commit starts the WAL over and trims the
    /// file to 64 MiB (`journal_size_limit`). On PostgreSQL there is nothing
    /// to do (the server checkpoints): it returns zeros.
    pub fn checkpoint(&self) -> Result<Checkpoint> {
        const OP: &str = "checkpoint the WAL";
        let BackendDb::Sqlite(db) = &self.backend else {
            return Ok(Checkpoint {
                wal_pages: 0,
                copied_pages: 0,
            });
        };
        let conn = lock(&db.checkpointer);
        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
            Ok(Checkpoint {
                wal_pages: row.get::<_, i64>(1)?,
                copied_pages: row.get::<_, i64>(2)?,
            })
        })
        .during(OP)
    }

    /// Runs `f` in one write transaction and commits it; any error rolls
    /// everything back. SQLite: `BEGIN IMMEDIATE` on the writer. PostgreSQL:
    /// a transaction on the writer holding the write advisory lock.
    pub(crate) fn write<T: Send>(
        &self,
        op: &'static str,
        f: impl FnOnce(&Tx<'_>) -> Result<T> + Send,
    ) -> Result<T> {
        match &self.backend {
            BackendDb::Sqlite(db) => {
                let mut conn = lock(&db.writer);
                let tx = conn
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .during(op)?;
                let tx = Tx::Sqlite(tx);
                let value = f(&tx)?;
                tx.commit().during(op)?;
                Ok(value)
            }
            BackendDb::Postgres(db) => db.write(op, f),
        }
    }

    /// [`Store::write`] that does not queue behind the other writes on
    /// PostgreSQL (`pg::PgDb::write_unserialized`): for the leader lease,
    /// whose row lock orders its writes and which fenced writes lock in
    /// share mode (`leases::check_fence`). SQLite has one writer anyway.
    pub(crate) fn write_unserialized<T: Send>(
        &self,
        op: &'static str,
        f: impl FnOnce(&Tx<'_>) -> Result<T> + Send,
    ) -> Result<T> {
        match &self.backend {
            BackendDb::Sqlite(_) => self.write(op, f),
            BackendDb::Postgres(db) => db.write_unserialized(op, f),
        }
    }

    /// Runs `f` in one read transaction (one committed snapshot for all its
    /// statements): a reader connection's transaction on SQLite, a
    /// `REPEATABLE READ READ ONLY` one on PostgreSQL.
    pub(crate) fn read<T: Send>(
        &self,
        op: &'static str,
        f: impl FnOnce(&Tx<'_>) -> Result<T> + Send,
    ) -> Result<T> {
        match &self.backend {
            BackendDb::Sqlite(db) => {
                let mut conn = db.reader();
                let tx = Tx::Sqlite(conn.transaction().during(op)?);
                let value = f(&tx)?;
                tx.commit().during(op)?;
                Ok(value)
            }
            BackendDb::Postgres(db) => db.read(op, f),
        }
    }

    /// Test hook: runs `f` in a write transaction, committed when `f` returns
    /// (e.g. to install a failing trigger or read a raw column). On
    /// PostgreSQL a statement that failed inside `f` rolls it all back.
    #[cfg(test)]
    #[allow(clippy::panic)]
    pub(crate) fn with_writer<T: Send>(&self, f: impl FnOnce(&Tx<'_>) -> T + Send) -> T {
        self.write("test", |tx| Ok(f(tx)))
            .unwrap_or_else(|err| panic!("test transaction: {err}"))
    }

    /// Test hook: the SQLite writer connection itself (SQLite-only tests).
    #[cfg(test)]
    #[allow(clippy::panic)]
    pub(crate) fn with_sqlite<T>(&self, f: impl FnOnce(&Connection) -> T) -> T {
        match &self.backend {
            BackendDb::Sqlite(db) => f(&lock(&db.writer)),
            BackendDb::Postgres(_) => panic!("a SQLite-only test hook on PostgreSQL"),
        }
    }
}

impl SqliteDb {
    /// A free reader if there is one, else the next one in turn (or the
    /// writer when there are no readers).
    fn reader(&self) -> MutexGuard<'_, Connection> {
        db::reader(&self.readers, &self.writer, &self.next_reader)
    }
}

/// Mode of the data directory: only the daemon's user may enter it.
pub const DIR_MODE: u32 = 0o700;
/// Mode of the store's files (and the Terraform state the daemon keeps).
pub const FILE_MODE: u32 = 0o600;

/// Entries of a data directory that show a store was there before.
const STATE_MARKERS: &[&str] = &["mirror.git", "terraform", "nodes"];

/// What [`secure_data_dir`] found.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum DataDirSecurity {
    /// Created now, mode 0700.
    Created,
    /// Existed, already private.
    Private,
    /// Existed readable by others (the old mode); now 0700. Worth a loud
    /// warning: what was in it may have been read.
    Tightened { old_mode: u32 },
}

/// Makes `dir` the daemon's private folder: creates it with mode 0700, or
/// refuses it when it is writable by group or others (someone else could
/// swap the store or the Terraform state), or takes away the group's and
/// others' read and enter permissions when it has them.
pub fn secure_data_dir(dir: &Path) -> Result<DataDirSecurity> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let data_dir_error = |source| StoreError::DataDir {
        path: dir.to_owned(),
        source,
    };
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(dir)
            .map_err(data_dir_error)?;
        // The umask may have taken bits away, never added any; set it exactly.
        set_mode(dir, DIR_MODE)?;
        return Ok(DataDirSecurity::Created);
    }
    let mode = std::fs::metadata(dir)
        .map_err(data_dir_error)?
        .permissions()
        .mode()
        & 0o7777;
    if mode & 0o022 != 0 {
        return Err(StoreError::UnsafeDataDir {
            path: dir.to_owned(),
            mode,
        });
    }
    if mode & 0o077 != 0 {
        set_mode(dir, mode & !0o077)?;
        return Ok(DataDirSecurity::Tightened { old_mode: mode });
    }
    Ok(DataDirSecurity::Private)
}

/// Sets `path`'s permission bits to `mode`.
pub fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|source| {
        StoreError::Permissions {
            path: path.to_owned(),
            mode,
            source,
        }
    })
}

/// Creates the store file with mode 0600 when it does not exist (so SQLite's
/// `-wal` and `-shm` get that mode too), tightens an existing one, and
/// refuses an existing empty file unless `init`.
fn prepare_file(path: &Path, init: bool) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::metadata(path) {
        Ok(meta) => {
            if meta.len() == 0 && !init {
                return Err(StoreError::EmptyStore {
                    path: path.to_owned(),
                });
            }
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(FILE_MODE)
                .open(path)
                .map_err(|source| StoreError::DataDir {
                    path: path.to_owned(),
                    source,
                })?;
        }
        Err(source) => {
            return Err(StoreError::DataDir {
                path: path.to_owned(),
                source,
            });
        }
    }
    set_mode(path, FILE_MODE)
}

/// What [`Store::checkpoint`] did.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// Frames in the WAL.
    pub wal_pages: i64,
    /// Frames now copied into the database file (all of them, when equal).
    pub copied_pages: i64,
}

fn connect(path: &Path, options: &StoreOptions) -> Result<Connection> {
    let open_error = |source| StoreError::Open {
        path: path.to_owned(),
        source,
    };
    let conn = Connection::open(path).map_err(open_error)?;
    conn.busy_timeout(options.busy_timeout)
        .map_err(open_error)?;
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "wal", |row| row.get(0))
        .map_err(open_error)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::NoWal {
            path: path.to_owned(),
            mode,
        });
    }
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(open_error)?;
    conn.pragma_update(None, "foreign_keys", true)
        .map_err(open_error)?;
    // A negative cache_size is in KiB.
    conn.pragma_update(None, "cache_size", -i64::from(options.cache_mib) * 1024)
        .map_err(open_error)?;
    conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)
        .map_err(open_error)?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// Converts a stored integer to a `u32`, naming the column when it does not
/// fit.
pub(crate) fn stored_u32(op: &'static str, what: &str, value: i64) -> Result<u32> {
    u32::try_from(value).map_err(|_| StoreError::Corrupt {
        op,
        what: what.to_owned(),
        value: value.to_string(),
    })
}

pub(crate) fn encode<T: serde::Serialize + ?Sized>(
    op: &'static str,
    what: &str,
    value: &T,
) -> Result<String> {
    serde_json::to_string(value).map_err(|source| StoreError::Encode {
        op,
        what: what.to_owned(),
        source,
    })
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(
    op: &'static str,
    what: &str,
    doc: &str,
) -> Result<T> {
    serde_json::from_str(doc).map_err(|source| StoreError::Decode {
        op,
        what: what.to_owned(),
        source,
    })
}

/// The first 12 characters of a commit id, for messages.
pub(crate) fn short_commit(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}
