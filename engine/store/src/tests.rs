//! Fixtures shared by the stores' tests, and tests that span stores.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use neutral_core::model::{
    AllDownPolicy, AutoscalePolicy, CloudProvider, Declarations, DeclaredRegionState,
    DnsBackendKind, GtmPolicy, Metrics, NodeMode, NodePoolDecl, NodeStatus, Probe, RecordType,
    Region, ScaleDownRule, ScaleUpRule,
};
use tempfile::TempDir;

use crate::{AuditQuery, Heartbeat, NewNode, Store, StoreOptions, Timestamp, TokenHash, kinds};

pub(crate) fn open_temp() -> (TempDir, Store) {
    open_temp_with(StoreOptions::default())
}

pub(crate) fn open_temp_with(options: StoreOptions) -> (TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), options).unwrap();
    (dir, store)
}

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
}

#[test]
fn opening_creates_the_data_directory_and_one_wal_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("nested/data");
    let store = Store::open(&data, StoreOptions::default()).unwrap();
    assert_eq!(store.path(), data.join(crate::DB_FILE_NAME));
    assert!(data.join(crate::DB_FILE_NAME).is_file());
    assert_eq!(
        store.schema_version().unwrap(),
        i64::try_from(crate::schema::current_version()).unwrap()
    );
    store.with_writer(|conn| {
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
    let dir = tempfile::tempdir().unwrap();
    let decl = declarations(3, 3);
    {
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
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
    }
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
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
