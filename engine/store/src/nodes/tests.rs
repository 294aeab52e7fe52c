use serde_json::json;

use super::*;
use crate::audit::AuditQuery;
use crate::db::params;
use crate::samples::Heartbeat;
use crate::store::StoreOptions;
use crate::tests::{new_node, on_postgres, open_temp};

fn audit_of(store: &Store, subject: &str) -> Vec<AuditEntry> {
    store
        .audit()
        .list(&AuditQuery {
            subject: Some(subject.into()),
            ..AuditQuery::default()
        })
        .unwrap()
        .into_iter()
        .map(|r| r.entry)
        .collect()
}

#[test]
fn a_registered_node_round_trips_with_its_identity() {
    let (_dir, store) = open_temp();
    let nodes = store.nodes();
    let record = nodes
        .register(&new_node("jp-7f3a9c", "jp", "127.0.0.2", 1_000), "join")
        .unwrap();
    assert_eq!(
        record,
        NodeRecord {
            node: Node {
                id: "jp-7f3a9c".into(),
                region: "jp".into(),
                address: "127.0.0.2".parse().unwrap(),
                status: NodeStatus::Up,
                status_since: Timestamp(1_000),
                mode: NodeMode::ContainerdOnly,
                last_heartbeat: None,
                metrics: None,
            },
            status_reason: "registered".into(),
            registered_at: Timestamp(1_000),
            metrics_at: None,
            hostname: Some("host-jp-7f3a9c".into()),
            agent_version: Some("0.1.0".into()),
        }
    );
    assert_eq!(nodes.get("jp-7f3a9c").unwrap(), Some(record.clone()));
    assert_eq!(nodes.list().unwrap(), vec![record]);
    assert_eq!(nodes.get("nope").unwrap(), None);

    let audit = audit_of(&store, "jp-7f3a9c");
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].kind, kinds::NODE_REGISTERED);
    assert_eq!(
        audit[0].message,
        "registered node jp-7f3a9c in region jp at 127.0.0.2"
    );
    assert_eq!(audit[0].actor, "join");
}

#[test]
fn only_a_hash_of_the_token_is_stored_and_it_compares_in_constant_time() {
    let (_dir, store) = open_temp();
    store
        .nodes()
        .register(&new_node("n1", "jp", "127.0.0.2", 0), "join")
        .unwrap();
    let hash = store.nodes().token_hash("n1").unwrap().unwrap();
    assert!(hash.matches("token-n1"));
    assert!(!hash.matches("token-n2"));
    assert!(!hash.matches(""));
    assert_eq!(store.nodes().token_hash("nope").unwrap(), None);
    // All of them in one read: the same hashes, by id.
    store
        .nodes()
        .register(&new_node("n2", "jp", "127.0.0.3", 0), "join")
        .unwrap();
    let all = store.nodes().token_hashes().unwrap();
    assert_eq!(all.keys().collect::<Vec<_>>(), ["n1", "n2"]);
    assert!(all["n1"].matches("token-n1") && all["n2"].matches("token-n2"));
    assert!(!all["n2"].matches("token-n1"));
    let raw: Vec<u8> = store.with_writer(|conn| {
        conn.query_row("SELECT token_hash FROM nodes", params![], |row| row.get(0))
            .unwrap()
    });
    assert_eq!(raw.len(), 32);
    assert!(!raw.windows(8).any(|w| w == b"token-n1"));
    // sha256("abc"), the FIPS 180-2 example.
    assert_eq!(
        format!("{:?}", TokenHash::of("abc")),
        "TokenHash(ba7816bf…)"
    );
}

#[test]
fn re_registration_keeps_the_id_only_for_the_same_region_and_address() {
    let (_dir, store) = open_temp();
    let nodes = store.nodes();
    nodes
        .register(&new_node("jp-1", "jp", "127.0.0.2", 0), "join")
        .unwrap();
    nodes
        .set_status(
            "jp-1",
            NodeStatus::Down,
            Timestamp(50),
            "heartbeat timeout",
            "health",
        )
        .unwrap();

    let ip = "127.0.0.2".parse().unwrap();
    assert!(
        nodes
            .find_for_reregister("jp-1", "jp", ip)
            .unwrap()
            .is_some()
    );
    assert!(
        nodes
            .find_for_reregister("jp-1", "sg", ip)
            .unwrap()
            .is_none()
    );
    let other_ip = "127.0.0.3".parse().unwrap();
    assert!(
        nodes
            .find_for_reregister("jp-1", "jp", other_ip)
            .unwrap()
            .is_none()
    );
    assert!(
        nodes
            .find_for_reregister("jp-9", "jp", ip)
            .unwrap()
            .is_none()
    );

    let mut again = new_node("jp-1", "jp", "127.0.0.2", 100);
    again.token_hash = TokenHash::of("fresh token");
    again.agent_version = Some("0.2.0".into());
    let record = nodes.register(&again, "join").unwrap();
    assert_eq!(record.node.status, NodeStatus::Up);
    assert_eq!(record.node.status_since, Timestamp(100));
    assert_eq!(record.status_reason, "re-registered");
    assert_eq!(record.registered_at, Timestamp(100));
    assert_eq!(record.agent_version.as_deref(), Some("0.2.0"));
    let hash = nodes.token_hash("jp-1").unwrap().unwrap();
    assert!(hash.matches("fresh token"));
    assert!(!hash.matches("token-jp-1"));

    let kinds_seen: Vec<_> = audit_of(&store, "jp-1")
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        kinds_seen,
        vec![
            kinds::NODE_REGISTERED,
            kinds::NODE_STATUS,
            kinds::NODE_REGISTERED,
            kinds::NODE_STATUS
        ]
    );

    let err = nodes
        .register(&new_node("jp-1", "sg", "127.0.0.9", 200), "join")
        .unwrap_err();
    assert!(matches!(err, StoreError::NodeIdTaken { .. }), "{err}");
    assert_eq!(nodes.get("jp-1").unwrap().unwrap().node.region, "jp");
    assert_eq!(
        audit_of(&store, "jp-1").len(),
        4,
        "a refused registration audits nothing"
    );
}

#[test]
fn status_changes_are_audited_with_their_reason_and_unchanged_ones_write_nothing() {
    let (_dir, store) = open_temp();
    let nodes = store.nodes();
    nodes
        .register(&new_node("n1", "jp", "127.0.0.2", 0), "join")
        .unwrap();
    assert!(
        !nodes
            .set_status("n1", NodeStatus::Up, Timestamp(5), "probe ok", "health")
            .unwrap()
    );
    assert!(
        nodes
            .set_status(
                "n1",
                NodeStatus::Drain,
                Timestamp(10),
                "scale in",
                "autoscaler"
            )
            .unwrap()
    );
    let record = nodes.get("n1").unwrap().unwrap();
    assert_eq!(record.node.status, NodeStatus::Drain);
    assert_eq!(record.node.status_since, Timestamp(10));
    assert_eq!(record.status_reason, "scale in");

    let audit = audit_of(&store, "n1");
    assert_eq!(audit.len(), 2);
    assert_eq!(audit[1].message, "node n1 up -> drain: scale in");
    assert_eq!(audit[1].actor, "autoscaler");
    assert_eq!(
        audit[1].data,
        json!({"from": "up", "to": "drain", "reason": "scale in"})
    );

    let err = nodes
        .set_status("ghost", NodeStatus::Down, Timestamp(1), "x", "health")
        .unwrap_err();
    assert_eq!(err.to_string(), "set node status: no node `ghost`");
}

#[test]
fn batched_status_updates_report_changed_unchanged_and_unknown_ids() {
    let (_dir, store) = open_temp();
    for id in ["a", "b"] {
        store
            .nodes()
            .register(&new_node(id, "jp", "127.0.0.2", 0), "join")
            .unwrap();
    }
    let update = |id: &str, status| StatusUpdate {
        id: id.into(),
        status,
        at: Timestamp(30_000),
        reason: "no heartbeat for 30s".into(),
    };
    let outcome = store
        .nodes()
        .set_statuses(
            &[
                update("a", NodeStatus::Down),
                update("b", NodeStatus::Up),
                update("gone", NodeStatus::Down),
            ],
            "health",
        )
        .unwrap();
    assert_eq!(
        outcome,
        StatusUpdates {
            changed: vec!["a".into()],
            unchanged: vec!["b".into()],
            unknown: vec!["gone".into()],
        }
    );
    assert_eq!(
        store.nodes().get("a").unwrap().unwrap().node.status,
        NodeStatus::Down
    );
}

#[test]
fn deleting_a_node_removes_it_and_its_samples_from_view() {
    let (_dir, store) = open_temp();
    let nodes = store.nodes();
    nodes
        .register(&new_node("n1", "jp", "127.0.0.2", 0), "join")
        .unwrap();
    nodes
        .register(&new_node("n2", "sg", "127.0.0.3", 0), "join")
        .unwrap();
    store
        .samples()
        .record_heartbeats(&[
            Heartbeat {
                node_id: "n1".into(),
                at: Timestamp(1),
                metrics: Some(crate::tests::metrics(0.5)),
            },
            Heartbeat {
                node_id: "n2".into(),
                at: Timestamp(1),
                metrics: Some(crate::tests::metrics(0.6)),
            },
        ])
        .unwrap();
    assert!(nodes.delete("n1", Timestamp(9), "admin").unwrap());
    assert!(!nodes.delete("n1", Timestamp(9), "admin").unwrap());
    assert_eq!(nodes.get("n1").unwrap(), None);
    assert_eq!(nodes.token_hash("n1").unwrap(), None);
    assert_eq!(nodes.list_region("jp").unwrap(), vec![]);
    assert_eq!(nodes.list_region("sg").unwrap().len(), 1);
    let samples = store.samples().samples_since(Timestamp(0)).unwrap();
    assert_eq!(samples.len(), 1);
    assert_eq!(&*samples[0].node_id, "n2");

    // A new node with the old id does not inherit the old samples.
    nodes
        .register(&new_node("n1", "jp", "127.0.0.2", 10), "join")
        .unwrap();
    assert_eq!(
        store.samples().samples_since(Timestamp(0)).unwrap().len(),
        1
    );

    let audit = audit_of(&store, "n1");
    assert_eq!(audit[1].kind, kinds::NODE_DELETED);
    assert_eq!(
        audit[1].message,
        "deleted node n1 of region jp at 127.0.0.2"
    );
}

#[test]
fn node_identity_and_status_survive_a_reopen() {
    let (dir, store) = open_temp();
    {
        let mut node = new_node("sg-1", "sg", "::1", 5);
        node.mode = NodeMode::K3sWorker;
        store.nodes().register(&node, "join").unwrap();
        store
            .nodes()
            .set_status("sg-1", NodeStatus::Drain, Timestamp(6), "operator", "admin")
            .unwrap();
        drop(store);
    }
    let store = crate::tests::reopen(dir.path(), StoreOptions::default()).unwrap();
    let record = store.nodes().get("sg-1").unwrap().unwrap();
    assert_eq!(record.node.address, "::1".parse::<IpAddr>().unwrap());
    assert_eq!(record.node.mode, NodeMode::K3sWorker);
    assert_eq!(record.node.status, NodeStatus::Drain);
    assert!(
        store
            .nodes()
            .token_hash("sg-1")
            .unwrap()
            .unwrap()
            .matches("token-sg-1")
    );
}

#[test]
fn stored_modes_use_the_same_names_as_the_api() {
    for mode in [NodeMode::ContainerdOnly, NodeMode::K3sWorker] {
        assert_eq!(json!(mode), json!(mode_str(mode)));
        assert_eq!(parse_mode(mode_str(mode)), Some(mode));
    }
    assert_eq!(parse_status("drain"), Some(NodeStatus::Drain));
    assert_eq!(parse_status("gone"), None);
}

fn ids(changes: &NodeChanges) -> Vec<&str> {
    changes
        .nodes
        .iter()
        .map(|(record, _)| record.node.id.as_str())
        .collect()
}

#[test]
fn changes_since_returns_only_what_was_written_or_deleted_after_the_last_read() {
    let (_dir, store) = open_temp();
    let nodes = store.nodes();
    for (id, address) in [("a", "127.0.0.2"), ("b", "127.0.0.3"), ("c", "127.0.0.4")] {
        nodes
            .register(&new_node(id, "jp", address, 1_000), "join")
            .unwrap();
    }
    let first = nodes.changes_since(None).unwrap();
    assert!(first.complete);
    assert_eq!(ids(&first), ["a", "b", "c"]);
    assert_eq!(first.nodes[0].1, TokenHash::of("token-a"));
    assert!(first.deleted.is_empty());

    let nothing = nodes.changes_since(Some(first.through)).unwrap();
    assert!(!nothing.complete);
    assert!(nothing.nodes.is_empty() && nothing.deleted.is_empty());
    assert_eq!(nothing.through, first.through, "reads move nothing on");

    store
        .samples()
        .record_heartbeats(&[Heartbeat {
            node_id: "a".into(),
            at: Timestamp(2_000),
            metrics: None,
        }])
        .unwrap();
    nodes
        .set_status(
            "b",
            NodeStatus::Down,
            Timestamp(2_000),
            "probe failed",
            "health",
        )
        .unwrap();
    nodes.delete("c", Timestamp(2_000), "admin").unwrap();
    nodes
        .register(&new_node("d", "sg", "127.0.0.5", 2_000), "join")
        .unwrap();
    let second = nodes.changes_since(Some(first.through)).unwrap();
    assert!(!second.complete);
    assert_eq!(ids(&second), ["a", "b", "d"]);
    assert_eq!(
        second.nodes[0].0.node.last_heartbeat,
        Some(Timestamp(2_000))
    );
    assert_eq!(second.nodes[1].0.node.status, NodeStatus::Down);
    assert_eq!(second.deleted, ["c"]);
    assert!(second.through > first.through);
    assert!(
        nodes
            .changes_since(Some(second.through))
            .unwrap()
            .nodes
            .is_empty()
    );

    // Deleted and registered again (with a new token) between two reads:
    // the node is there, with the new token, and not reported deleted.
    nodes.delete("a", Timestamp(3_000), "admin").unwrap();
    let mut again = new_node("a", "jp", "127.0.0.2", 3_000);
    again.token_hash = TokenHash::of("another token");
    nodes.register(&again, "join").unwrap();
    let third = nodes.changes_since(Some(second.through)).unwrap();
    assert_eq!(ids(&third), ["a"]);
    assert_eq!(third.nodes[0].1, TokenHash::of("another token"));
    assert!(third.deleted.is_empty());

    // A day later a deletion prunes the old tombstones: a reader that last
    // read before them cannot learn of those deletions from tombstones and
    // gets every node instead.
    nodes
        .delete("d", Timestamp(3_000 + 25 * 3_600_000), "admin")
        .unwrap();
    let stale = nodes.changes_since(Some(second.through)).unwrap();
    assert!(stale.complete);
    assert_eq!(ids(&stale), ["a", "b"]);
    assert!(stale.deleted.is_empty());
    let recent = nodes.changes_since(Some(third.through)).unwrap();
    assert!(!recent.complete, "the newest tombstone is kept");
    assert_eq!(recent.deleted, ["d"]);
}

on_postgres!(
    changes_since_returns_only_what_was_written_or_deleted_after_the_last_read,
    a_registered_node_round_trips_with_its_identity,
    only_a_hash_of_the_token_is_stored_and_it_compares_in_constant_time,
    re_registration_keeps_the_id_only_for_the_same_region_and_address,
    status_changes_are_audited_with_their_reason_and_unchanged_ones_write_nothing,
    batched_status_updates_report_changed_unchanged_and_unknown_ids,
    deleting_a_node_removes_it_and_its_samples_from_view,
    node_identity_and_status_survive_a_reopen,
);
