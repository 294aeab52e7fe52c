//! Fixtures shared by the stores' tests, and tests that span stores.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use neutral_core::model::{
    AllDownPolicy, AutoscalePolicy, CloudProvider, Declarations, DeclaredRegionState,
    DnsBackendKind, GtmPolicy, Metrics, NodeMode, NodePoolDecl, NodeStatus, Probe, RecordType,
    Region, ScaleDownRule, ScaleUpRule,
};
use tempfile::TempDir;

use crate::pg_testing::PgServer;

use crate::audit::{AuditQuery, kinds};
use crate::error::StoreError;
use crate::nodes::{NewNode, TokenHash};
use crate::samples::Heartbeat;
use crate::store::{Store, StoreOptions};
use neutral_core::model::Timestamp;

pub(crate) fn open_temp() -> (TempDir, Store) {
    open_temp_with(StoreOptions::default())
}

/// Opens a store on the backend the running test was given
/// ([`with_postgres`]; SQLite otherwise): a fresh file in a temp folder, or
/// a fresh PostgreSQL database whose URL is kept in that folder so
/// [`reopen`] finds it again.
pub(crate) fn open_temp_with(options: StoreOptions) -> (TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    if ON_POSTGRES.with(Cell::get) {
        let server = pg_server().expect("with_postgres checked the server");
        let url = server.create_database().unwrap();
        std::fs::write(dir.path().join(PG_URL_FILE), &url).unwrap();
        let store = Store::open_postgres(&url, options).unwrap();
        return (dir, store);
    }
    let store = Store::open(dir.path(), options).unwrap();
    (dir, store)
}

/// Opens again the store [`open_temp_with`] made in `dir` (its PostgreSQL
/// database, or its SQLite file).
pub(crate) fn reopen(dir: &std::path::Path, options: StoreOptions) -> crate::error::Result<Store> {
    match std::fs::read_to_string(dir.join(PG_URL_FILE)) {
        Ok(url) => Store::open_postgres(&url, options),
        Err(_) => Store::open(dir, options),
    }
}

const PG_URL_FILE: &str = "pg-url";

thread_local! {
    static ON_POSTGRES: Cell<bool> = const { Cell::new(false) };
}

/// One PostgreSQL server per test process (`None`: not installed, and not
/// under CI, where its absence fails instead).
fn pg_server() -> Option<&'static PgServer> {
    static SERVER: OnceLock<Option<PgServer>> = OnceLock::new();
    SERVER
        .get_or_init(crate::pg_testing::start_or_skip)
        .as_ref()
}

/// Runs `test` with [`open_temp_with`] giving PostgreSQL stores; skips it
/// (saying so) when PostgreSQL is not installed and env `CI` is not set.
pub(crate) fn with_postgres(test: fn()) {
    if pg_server().is_none() {
        return;
    }
    ON_POSTGRES.with(|on| on.set(true));
    test();
    ON_POSTGRES.with(|on| on.set(false));
}

/// `on_postgres!(a, b)` in a test module: `on_pg::a` and
/// `on_pg::b` run the SQLite tests `a` and `b` again on PostgreSQL.
macro_rules! on_postgres {
    ($($name:ident),* $(,)?) => {
        mod on_pg {
            $(
                #[test]
                fn $name() {
                    $crate::tests::with_postgres(super::$name);
                }
            )*
        }
    };
}
pub(crate) use on_postgres;

/// A valid-looking set of declarations; `variant` changes weights and the
/// number of regions so two variants differ in every table.
pub(crate) fn declarations(variant: u32, region_count: u32) -> Declarations {
    let mut decl = Declarations::default();
    let names: Vec<String> = (0..region_count).map(|r| format!("r{r:03}")).collect();
    for (i, name) in names.iter().enumerate() {
        let i = u32::try_from(i).unwrap();
        decl.regions.insert(
            name.clone(),
            Region {
                name: name.clone(),
                provider: CloudProvider::Edge,
                min_nodes: 1,
                max_nodes: 5 + i % 3,
                base_weight: (variant + i) % 1000,
                state: DeclaredRegionState::Up,
                failover: names
                    .first()
                    .filter(|first| *first != name)
                    .cloned()
                    .into_iter()
                    .collect(),
            },
        );
        decl.autoscale.insert(
            name.clone(),
            AutoscalePolicy {
                region: name.clone(),
                scale_up: ScaleUpRule {
                    cpu_above: Some(0.75),
                    rtt_ms_above: Some(250.0),
                    error_rate_above: None,
                    for_: Duration::from_secs(60),
                    step: 1,
                },
                scale_down: ScaleDownRule {
                    cpu_below: Some(0.3),
                    rtt_ms_below: None,
                    error_rate_below: None,
                    for_: Duration::from_secs(300),
                    step: 1,
                },
                cooldown: Duration::from_secs(u64::from(300 + variant % 7)),
                failover_capacity: true,
            },
        );
        decl.node_pools.insert(
            name.clone(),
            NodePoolDecl {
                region: name.clone(),
                desired_nodes: 1 + (variant + i) % 4,
            },
        );
    }
    decl.gtm.insert(
        "app.example.com".to_owned(),
        GtmPolicy {
            name: "app".to_owned(),
            domain: "app.example.com".to_owned(),
            zone: "example.com".to_owned(),
            record_type: RecordType::A,
            ttl: 30 + variant % 5,
            dns: DnsBackendKind::Embedded,
            min_ready_nodes: 1,
            regions: names
                .iter()
                .map(|n| (n.clone(), 100))
                .collect::<BTreeMap<_, _>>(),
            all_down: AllDownPolicy::FailOpen,
            probe: Probe::default(),
            slow_start: None,
            health: neutral_core::model::HealthPolicy::default(),
        },
    );
    decl
}

pub(crate) fn new_node(id: &str, region: &str, address: &str, at: i64) -> NewNode {
    NewNode {
        id: id.to_owned(),
        region: region.to_owned(),
        address: address.parse::<IpAddr>().unwrap(),
        mode: NodeMode::ContainerdOnly,
        hostname: Some(format!("host-{id}")),
        agent_version: Some("0.1.0".to_owned()),
        token_hash: TokenHash::of(&format!("token-{id}")),
        status: NodeStatus::Up,
        at: Timestamp(at),
    }
}

pub(crate) fn metrics(cpu: f64) -> Metrics {
    Metrics {
        cpu,
        rtt_ms: 3.0,
        error_rate: 0.0,
    }
}

#[test]
fn store_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Store>();
}

#[test]
fn options_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let bad = StoreOptions {
        samples_per_node: 1,
        ..StoreOptions::default()
    };
    let err = Store::open(dir.path(), bad).unwrap_err();
    assert!(err.to_string().contains("samples_per_node"), "{err}");
    let bad = StoreOptions {
        sample_retention: Duration::ZERO,
        ..StoreOptions::default()
    };
    assert!(Store::open(dir.path(), bad).is_err());
    let bad = StoreOptions {
        cache_mib: 0,
        ..StoreOptions::default()
    };
    let err = Store::open(dir.path(), bad).unwrap_err();
    assert!(err.to_string().contains("cache_mib"), "{err}");
}

#[test]
fn the_page_cache_is_what_the_options_say() {
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions {
        cache_mib: 3,
        ..StoreOptions::default()
    };
    let store = Store::open(dir.path(), options).unwrap();
    store.with_sqlite(|conn| {
        let kib: i64 = conn
            .pragma_query_value(None, "cache_size", |row| row.get(0))
            .unwrap();
        assert_eq!(kib, -3 * 1024);
    });
}

#[test]
fn opening_creates_the_data_directory_and_one_wal_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("nested/data");
    let store = Store::open(&data, StoreOptions::default()).unwrap();
    assert_eq!(
        store.path(),
        Some(data.join(crate::store::DB_FILE_NAME).as_path())
    );
    assert!(data.join(crate::store::DB_FILE_NAME).is_file());
    assert_eq!(
        store.schema_version().unwrap(),
        i64::try_from(crate::schema::current_version()).unwrap()
    );
    store.with_sqlite(|conn| {
        let mode: String = conn
            .pragma_query_value(None, "journal_mode", |row| row.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let fk: i64 = conn
            .pragma_query_value(None, "foreign_keys", |row| row.get(0))
            .unwrap();
        assert_eq!(fk, 1);
        // NORMAL is 1.
        let sync: i64 = conn
            .pragma_query_value(None, "synchronous", |row| row.get(0))
            .unwrap();
        assert_eq!(sync, 1);
    });
}

#[test]
fn everything_survives_a_reopen() {
    let (dir, store) = open_temp();
    let decl = declarations(3, 3);
    {
        store
            .apply_declarations("c1", &decl, Timestamp(1), "sync")
            .unwrap();
        store
            .nodes()
            .register(&new_node("jp-1", "r000", "127.0.0.2", 10), "join")
            .unwrap();
        store
            .samples()
            .record_heartbeats(&[Heartbeat {
                node_id: "jp-1".into(),
                at: Timestamp(20),
                metrics: Some(metrics(0.5)),
            }])
            .unwrap();
        drop(store);
    }
    let store = reopen(dir.path(), StoreOptions::default()).unwrap();
    assert_eq!(
        store.load_declarations().unwrap(),
        Some(("c1".to_owned(), decl))
    );
    let node = store.nodes().get("jp-1").unwrap().unwrap();
    assert_eq!(node.node.last_heartbeat, Some(Timestamp(20)));
    assert_eq!(
        store.nodes().token_hash("jp-1").unwrap(),
        Some(TokenHash::of("token-jp-1"))
    );
    assert_eq!(
        store.samples().samples_since(Timestamp(0)).unwrap().len(),
        1
    );
    assert_eq!(store.audit().list(&AuditQuery::default()).unwrap().len(), 2);
}

#[test]
fn several_threads_write_and_read_concurrently() {
    const THREADS: usize = 4;
    const ROUNDS: i64 = 50;
    let (_dir, store) = open_temp();
    let store = Arc::new(store);
    for t in 0..THREADS {
        store
            .nodes()
            .register(&new_node(&format!("n{t}"), "r000", "127.0.0.2", 0), "join")
            .unwrap();
    }
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                let id = format!("n{t}");
                for round in 1..=ROUNDS {
                    let at = Timestamp(round * 10_000);
                    let outcome = store
                        .samples()
                        .record_heartbeats(&[Heartbeat {
                            node_id: id.clone(),
                            at,
                            metrics: Some(metrics(0.1)),
                        }])
                        .unwrap();
                    assert_eq!(outcome.applied, 1);
                    // Registered `up`: every round is a change.
                    let status = if round % 2 == 1 {
                        NodeStatus::Drain
                    } else {
                        NodeStatus::Up
                    };
                    store
                        .nodes()
                        .set_status(&id, status, at, "test", "health")
                        .unwrap();
                    let listed = store.nodes().list().unwrap();
                    assert_eq!(listed.len(), THREADS);
                    store.samples().samples_since(Timestamp(0)).unwrap();
                    if t == 0 {
                        store
                            .apply_declarations(
                                &format!("c{round}"),
                                &declarations(u32::try_from(round).unwrap(), 4),
                                at,
                                "sync",
                            )
                            .unwrap();
                    } else {
                        store.load_declarations().unwrap();
                    }
                }
            })
        })
        .collect();
    for handle in handles {
        handle.join().unwrap();
    }
    let samples = store.samples().samples_since(Timestamp(0)).unwrap();
    assert_eq!(samples.len(), THREADS * usize::try_from(ROUNDS).unwrap());
    let status_changes = store
        .audit()
        .list(&AuditQuery {
            kind: Some(kinds::NODE_STATUS.into()),
            limit: 10_000,
            ..AuditQuery::default()
        })
        .unwrap();
    assert_eq!(
        status_changes.len(),
        THREADS * usize::try_from(ROUNDS).unwrap()
    );
    let (commit, decl) = store.load_declarations().unwrap().unwrap();
    assert_eq!(commit, format!("c{ROUNDS}"));
    assert_eq!(decl, declarations(u32::try_from(ROUNDS).unwrap(), 4));
}

#[test]
fn a_checkpoint_copies_the_wal_into_the_database_file() {
    let (_dir, store) = open_temp();
    for i in 0..20 {
        store
            .nodes()
            .register(&new_node(&format!("n{i}"), "r000", "127.0.0.2", i), "join")
            .unwrap();
    }
    let first = store.checkpoint().unwrap();
    assert!(first.wal_pages > 0, "{first:?}");
    assert_eq!(
        first.copied_pages, first.wal_pages,
        "no reader holds it back"
    );
    // Nothing new: the WAL is copied already, and the data reads back.
    let again = store.checkpoint().unwrap();
    assert_eq!(again.copied_pages, again.wal_pages);
    assert_eq!(store.nodes().list().unwrap().len(), 20);
}

// ---- files, modes and damaged stores ----------------------------------------

fn mode_of(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

#[test]
fn the_data_directory_is_0700_and_the_store_files_0600() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let store = Store::open(&data, StoreOptions::default()).unwrap();
    store
        .nodes()
        .register(&new_node("n1", "r000", "127.0.0.2", 1), "join")
        .unwrap();
    assert_eq!(mode_of(&data), 0o700);
    let db = data.join(crate::store::DB_FILE_NAME);
    for file in [
        db.clone(),
        data.join("neutral.sqlite3-wal"),
        data.join("neutral.sqlite3-shm"),
    ] {
        assert!(file.exists(), "{}", file.display());
        assert_eq!(mode_of(&file), 0o600, "{}", file.display());
    }
    drop(store);
    // A store file an older version left world-readable is tightened.
    crate::store::set_mode(&db, 0o644).unwrap();
    let _store = Store::open(&data, StoreOptions::default()).unwrap();
    assert_eq!(mode_of(&db), 0o600);
}

#[test]
fn a_data_directory_others_can_write_is_refused_and_one_they_can_read_is_tightened() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    crate::store::set_mode(&data, 0o777).unwrap();
    let err = Store::open(&data, StoreOptions::default()).unwrap_err();
    assert!(
        matches!(err, StoreError::UnsafeDataDir { mode: 0o777, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("chmod 700"), "{err}");
    assert!(
        !data.join(crate::store::DB_FILE_NAME).exists(),
        "nothing written"
    );
    crate::store::set_mode(&data, 0o770).unwrap();
    assert!(Store::open(&data, StoreOptions::default()).is_err());

    crate::store::set_mode(&data, 0o755).unwrap();
    assert_eq!(
        crate::store::secure_data_dir(&data).unwrap(),
        crate::store::DataDirSecurity::Tightened { old_mode: 0o755 }
    );
    assert_eq!(mode_of(&data), 0o700);
    assert_eq!(
        crate::store::secure_data_dir(&data).unwrap(),
        crate::store::DataDirSecurity::Private
    );
}

#[test]
fn an_empty_store_file_is_refused_unless_init() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        store
            .nodes()
            .register(&new_node("n1", "r000", "127.0.0.2", 1), "join")
            .unwrap();
    }
    // Truncated to 0 bytes (its WAL gone with it, as after a bad restore).
    let db = dir.path().join(crate::store::DB_FILE_NAME);
    std::fs::write(&db, b"").unwrap();
    let _ = std::fs::remove_file(dir.path().join("neutral.sqlite3-wal"));
    let _ = std::fs::remove_file(dir.path().join("neutral.sqlite3-shm"));
    let err = Store::open(dir.path(), StoreOptions::default()).unwrap_err();
    assert!(matches!(err, StoreError::EmptyStore { .. }), "{err}");
    assert!(err.to_string().contains("--init"), "{err}");
    assert_eq!(std::fs::metadata(&db).unwrap().len(), 0, "left untouched");

    let store = Store::open(
        dir.path(),
        StoreOptions {
            init: true,
            ..StoreOptions::default()
        },
    )
    .unwrap();
    assert!(store.nodes().list().unwrap().is_empty(), "started over");
}

#[test]
fn a_store_missing_from_a_used_data_directory_is_refused_but_a_fresh_one_is_a_first_start() {
    let dir = tempfile::tempdir().unwrap();
    // A brand-new (even existing, empty) folder is a first start.
    let fresh = dir.path().join("fresh");
    std::fs::create_dir(&fresh).unwrap();
    crate::store::set_mode(&fresh, 0o700).unwrap();
    Store::open(&fresh, StoreOptions::default()).unwrap();

    let used = dir.path().join("used");
    std::fs::create_dir_all(used.join("mirror.git")).unwrap();
    crate::store::set_mode(&used, 0o700).unwrap();
    let err = Store::open(&used, StoreOptions::default()).unwrap_err();
    assert!(matches!(err, StoreError::MissingStore { .. }), "{err}");
    assert!(err.to_string().contains("mirror.git"), "{err}");
    Store::open(
        &used,
        StoreOptions {
            init: true,
            ..StoreOptions::default()
        },
    )
    .unwrap();
}

#[test]
fn damaged_or_foreign_store_files_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good");
    {
        let store = Store::open(&good, StoreOptions::default()).unwrap();
        for i in 0..200 {
            store
                .nodes()
                .register(&new_node(&format!("n{i}"), "r000", "127.0.0.2", i), "join")
                .unwrap();
        }
        store.checkpoint().unwrap();
    }
    let bytes = std::fs::read(good.join(crate::store::DB_FILE_NAME)).unwrap();
    let case = |name: &str, content: &[u8]| {
        let data = dir.path().join(name);
        std::fs::create_dir(&data).unwrap();
        crate::store::set_mode(&data, 0o700).unwrap();
        std::fs::write(data.join(crate::store::DB_FILE_NAME), content).unwrap();
        let result = Store::open(&data, StoreOptions::default())
            .and_then(|store| store.nodes().list().map(|nodes| nodes.len()));
        (data, result)
    };
    // Garbage where the header should be.
    let mut garbage = bytes.clone();
    garbage[..100].copy_from_slice(&[0x5a; 100]);
    let (_, result) = case("garbage", &garbage);
    let err = result.unwrap_err().to_string();
    assert!(err.contains("not a database"), "{err}");
    // Half the file: either refused, or a read of the missing pages fails.
    let (_, result) = case("half", &bytes[..bytes.len() / 2]);
    assert!(result.is_err(), "a truncated store must not read as valid");
    // Another application's SQLite database.
    let foreign = dir.path().join("foreign.db");
    rusqlite::Connection::open(&foreign)
        .unwrap()
        .execute_batch("CREATE TABLE theirs (x TEXT); INSERT INTO theirs VALUES ('y');")
        .unwrap();
    let (_, result) = case("foreign", &std::fs::read(&foreign).unwrap());
    let err = result.unwrap_err();
    assert!(matches!(err, StoreError::NotNeutral { .. }), "{err}");
}

on_postgres!(
    everything_survives_a_reopen,
    several_threads_write_and_read_concurrently,
);
