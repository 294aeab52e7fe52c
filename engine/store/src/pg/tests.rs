use super::*;
use crate::pg_testing::{PgServer, start_or_skip};
use crate::store::{Store, StoreOptions};

fn server() -> Option<&'static PgServer> {
    static SERVER: std::sync::OnceLock<Option<PgServer>> = std::sync::OnceLock::new();
    SERVER.get_or_init(start_or_skip).as_ref()
}

fn version_of(url: &str) -> i64 {
    let mut client: postgres::Client = parse_url(url).unwrap().connect(NoTls).unwrap();
    recorded_version(&mut client, "test").unwrap()
}

#[test]
fn migrations_reach_the_current_version_and_reopening_is_a_no_op() {
    let Some(server) = server() else { return };
    let url = server.create_database().unwrap();
    let store = Store::open_postgres(&url, StoreOptions::default()).unwrap();
    let current = i64::try_from(PG_MIGRATIONS.len()).unwrap();
    assert_eq!(store.schema_version().unwrap(), current);
    store
        .zones()
        .put_zone(
            "example.com",
            7,
            &serde_json::json!({}),
            neutral_core::model::Timestamp(1),
            "t",
            &serde_json::json!({}),
        )
        .unwrap();
    drop(store);
    let store = Store::open_postgres(&url, StoreOptions::default()).unwrap();
    assert_eq!(store.schema_version().unwrap(), current);
    let zones: Vec<crate::zones::StoredZone<serde_json::Value>> =
        store.zones().list_zones().unwrap();
    assert_eq!(zones.len(), 1, "re-opening keeps the data");
    let rows: i64 = store.with_writer(|tx| {
        tx.query_row(
            "SELECT count(*) FROM neutral_schema",
            crate::db::params![],
            |row| row.get(0),
        )
        .unwrap()
    });
    assert_eq!(rows, current, "one row per applied version, none twice");
}

#[test]
fn a_newer_schema_is_refused_with_both_versions_named() {
    let Some(server) = server() else { return };
    let url = server.create_database().unwrap();
    drop(Store::open_postgres(&url, StoreOptions::default()).unwrap());
    let mut client: postgres::Client = parse_url(&url).unwrap().connect(NoTls).unwrap();
    client
        .batch_execute("INSERT INTO neutral_schema (version) VALUES (99)")
        .unwrap();
    let err = Store::open_postgres(&url, StoreOptions::default()).unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, StoreError::PgNewerSchema { found: 99, .. }),
        "{text}"
    );
    assert!(text.starts_with("--store postgres://"), "{text}");
    assert!(text.contains("schema version 99 is newer"), "{text}");
    assert!(
        text.contains(&format!("up to {}", PG_MIGRATIONS.len())),
        "{text}"
    );
    assert_eq!(version_of(&url), 99, "nothing was changed");
}

#[test]
fn a_foreign_database_is_refused_untouched() {
    let Some(server) = server() else { return };
    let url = server.create_database().unwrap();
    let mut client: postgres::Client = parse_url(&url).unwrap().connect(NoTls).unwrap();
    client
        .batch_execute("CREATE TABLE someone_elses (x TEXT)")
        .unwrap();
    let err = Store::open_postgres(&url, StoreOptions::default()).unwrap_err();
    assert!(matches!(err, StoreError::PgNotNeutral { .. }), "{err}");
    assert!(err.to_string().contains("not a neutral database"), "{err}");
    let tables: i64 = client
        .query_one(
            "SELECT count(*) FROM information_schema.tables
             WHERE table_schema = current_schema()",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(tables, 1);
}

#[test]
fn a_failing_step_leaves_the_previous_version_intact() {
    let Some(server) = server() else { return };
    let url = server.create_database().unwrap();
    let config = parse_url(&url).unwrap();
    let mut conn = connect(&config, "test").unwrap();
    let v1 = "CREATE TABLE t (a BIGINT);";
    let broken = "CREATE TABLE u (a BIGINT); INSERT INTO no_such_table VALUES (1);";
    assert_eq!(migrate(&mut conn, "test", &[v1]).unwrap(), 1);
    let err = migrate(&mut conn, "test", &[v1, broken]).unwrap_err();
    assert!(
        matches!(err, StoreError::PgMigration { version: 2, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("no_such_table"), "{err}");
    assert_eq!(recorded_version(&mut conn.client, "test").unwrap(), 1);
    let u: bool = conn
        .client
        .query_one("SELECT to_regclass('u') IS NOT NULL", &[])
        .unwrap()
        .get(0);
    assert!(!u, "u was rolled back");
    // And a later step applies on top, once.
    let v2 = "INSERT INTO t VALUES (1);";
    assert_eq!(migrate(&mut conn, "test", &[v1, v2]).unwrap(), 2);
    assert_eq!(migrate(&mut conn, "test", &[v1, v2]).unwrap(), 2);
    let rows: i64 = conn
        .client
        .query_one("SELECT count(*) FROM t", &[])
        .unwrap()
        .get(0);
    assert_eq!(rows, 1);
}

#[test]
fn bad_urls_are_refused_clearly_without_the_password() {
    for (url, expect) in [
        (
            "mysql://u:hunter2@127.0.0.1/db",
            "must start with postgres://",
        ),
        ("postgres://u:hunter2@127.0.0.1", "names no database"),
        ("postgres://u:hunter2@127.0.0.1:notaport/db", "invalid"),
    ] {
        let err = Store::open_postgres(url, StoreOptions::default()).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, StoreError::InvalidStoreUrl { .. }), "{text}");
        assert!(text.starts_with("--store "), "{text}");
        assert!(text.contains(expect), "{url}: {text}");
        assert!(!text.contains("hunter2"), "{text}");
    }
}

#[test]
fn an_unreachable_server_is_a_connect_error_within_the_timeout() {
    // A port nobody listens on (bound, then released).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://neutral:hunter2@127.0.0.1:{port}/db");
    let started = std::time::Instant::now();
    let err = Store::open_postgres(&url, StoreOptions::default()).unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(30));
    let text = err.to_string();
    assert!(matches!(err, StoreError::PgConnect { .. }), "{text}");
    assert!(
        text.starts_with(&format!(
            "--store postgres://***@127.0.0.1:{port}/db: cannot connect to PostgreSQL"
        )),
        "{text}"
    );
    assert!(!text.contains("hunter2"), "{text}");
}

#[test]
fn a_restarted_connection_is_opened_again() {
    let Some(server) = server() else { return };
    let url = server.create_database().unwrap();
    let store = Store::open_postgres(&url, StoreOptions::default()).unwrap();
    store
        .nodes()
        .register(&crate::tests::new_node("n1", "jp", "127.0.0.2", 1), "t")
        .unwrap();
    // Kill every connection of this database from the server side.
    let name = url.rsplit('/').next().unwrap().to_owned();
    let mut admin = server.admin().unwrap();
    admin
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = $1 AND pid <> pg_backend_pid()",
            &[&name],
        )
        .unwrap();
    // The first use of a dead connection fails (or not, if the client
    // saw the close first); the next one reconnects.
    let _ = store.nodes().list();
    let _ = store.nodes().list();
    assert_eq!(store.nodes().list().unwrap().len(), 1);
    let _ = store.audit().append(&crate::audit::AuditEntry {
        at: neutral_core::model::Timestamp(2),
        actor: "t".into(),
        kind: "test".into(),
        subject: "s".into(),
        message: "m".into(),
        commit: None,
        data: serde_json::json!({}),
    });
    assert!(store.nodes().get("n1").unwrap().is_some());
}

#[test]
fn a_url_naming_several_hosts_connects_to_the_first_that_takes_writes() {
    let Some(server) = server() else { return };
    let url = server.create_database().unwrap();
    // A host that refuses connections comes first (a failed-over primary),
    // as a Patroni cluster's members would be listed.
    let down = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let several = format!(
        "{}?target_session_attrs=read-write",
        url.replace("@127.0.0.1:", &format!("@127.0.0.1:{down},127.0.0.1:"))
    );
    assert!(several.contains(','), "{several}");
    let store = Store::open_postgres(&several, StoreOptions::default()).unwrap();
    store
        .docs()
        .put("k", "v", neutral_core::model::Timestamp(1))
        .unwrap();
    assert_eq!(
        store.docs().get("k").unwrap().map(|(doc, _)| doc),
        Some("v".to_owned())
    );
}
