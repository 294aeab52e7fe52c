use super::*;
use crate::pg_testing::{PgServer, start_or_skip};
use crate::store::{Store, StoreOptions};

fn server() -> Option<&'static PgServer> {
    static SERVER: std::sync::OnceLock<Option<PgServer>> = std::sync::OnceLock::new();
    SERVER.get_or_init(start_or_skip).as_ref()
}

fn version_of(url: &str) -> i64 {
    let mut client: postgres::Client = parse_url(url).unwrap().connect(postgres::NoTls).unwrap();
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
    let mut client: postgres::Client = parse_url(&url).unwrap().connect(postgres::NoTls).unwrap();
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
    let mut client: postgres::Client = parse_url(&url).unwrap().connect(postgres::NoTls).unwrap();
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
    let mut conn = connect(&config, &tls_of(&url).unwrap(), "test").unwrap();
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

/// A CA, and a server certificate it signed for 127.0.0.1 only.
struct Pki {
    ca_pem: String,
    server_cert: String,
    server_key: String,
}

fn pki() -> Pki {
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "neutral test CA");
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let mut server = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    server.subject_alt_names = vec![rcgen::SanType::IpAddress(std::net::IpAddr::from([
        127, 0, 0, 1,
    ]))];
    let server_key = rcgen::KeyPair::generate().unwrap();
    let server_cert = server.signed_by(&server_key, &issuer).unwrap();
    Pki {
        ca_pem: ca_cert.pem(),
        server_cert: server_cert.pem(),
        server_key: server_key.serialize_pem(),
    }
}

/// Whether the store's connections to `url` are encrypted, as the server
/// sees them (`pg_stat_ssl`).
fn encrypted(store: &Store) -> bool {
    store
        .read("pg_stat_ssl", |tx| {
            tx.query_row(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
                |row| row.get(0),
            )
            .during("pg_stat_ssl")
        })
        .unwrap()
}

#[test]
fn tls_follows_sslmode_and_checks_the_server_certificate_against_sslrootcert() {
    let ours = pki();
    let server = match PgServer::start_tls(&ours.server_cert, &ours.server_key) {
        Ok(server) => server,
        Err(crate::pg_testing::StartError::Missing(reason)) if std::env::var_os("CI").is_none() => {
            eprintln!("SKIPPED: {reason}");
            return;
        }
        Err(err) => panic!("{err}"),
    };
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &ours.ca_pem).unwrap();
    let other_ca = dir.path().join("other-ca.pem");
    std::fs::write(&other_ca, pki().ca_pem).unwrap();
    let url = server.create_database().unwrap();
    let open =
        |query: &str| Store::open_postgres(&format!("{url}?{query}"), StoreOptions::default());

    // Verified: the chain and the address the URL names.
    let store = open(&format!("sslmode=verify-full&sslrootcert={}", ca.display())).unwrap();
    assert!(encrypted(&store), "verify-full connected in plain text");
    // Encrypted without a check, as libpq's require; prefer takes TLS too.
    assert!(encrypted(&open("sslmode=require").unwrap()));
    assert!(
        encrypted(&open("").unwrap()),
        "prefer did not use the offered TLS"
    );
    // The server takes TLS only: plain text is refused.
    let err = open("sslmode=disable").err().unwrap().to_string();
    assert!(err.contains("no encryption"), "{err}");
    // A certificate of another CA is refused, naming the cause.
    let err = open(&format!(
        "sslmode=verify-full&sslrootcert={}",
        other_ca.display()
    ))
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("invalid peer certificate"), "{err}");
    // The host name: the certificate is for 127.0.0.1, not localhost.
    let by_name = url.replace("127.0.0.1", "localhost");
    let open_by_name =
        |query: &str| Store::open_postgres(&format!("{by_name}?{query}"), StoreOptions::default());
    let err = open_by_name(&format!("sslmode=verify-full&sslrootcert={}", ca.display()))
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.to_lowercase().contains("not valid for name") || err.contains("NotValidForName"),
        "{err}"
    );
    // verify-ca checks the chain only.
    let store = open_by_name(&format!("sslmode=verify-ca&sslrootcert={}", ca.display())).unwrap();
    assert!(encrypted(&store));
    // A mode that needs a root says so at once.
    let err = open("sslmode=verify-full").err().unwrap().to_string();
    assert!(err.contains("needs sslrootcert"), "{err}");
}
