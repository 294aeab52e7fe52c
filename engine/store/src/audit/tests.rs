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
fn entries_appended_together_land_in_order_after_the_others() {
    let (_dir, store) = open_temp();
    let log = store.audit();
    let first = log.append(&entry(1, "api.write", "x")).unwrap();
    let batch: Vec<AuditEntry> = (2..6).map(|i| entry(i, "gtm.weights", "d")).collect();
    log.append_all(&batch).unwrap();
    log.append_all(&[]).unwrap();
    let all = log.list(&AuditQuery::default()).unwrap();
    assert_eq!(all.first().map(|r| r.id), Some(first));
    assert_eq!(
        all.iter()
            .skip(1)
            .map(|r| r.entry.clone())
            .collect::<Vec<_>>(),
        batch
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

fn pruned_note(first: i64, last: i64) -> AuditEntry {
    AuditEntry {
        at: Timestamp(100),
        actor: "retention".into(),
        kind: kinds::AUDIT_PRUNED.into(),
        subject: "audit_log".into(),
        message: format!("pruned {first}..={last}"),
        commit: None,
        data: json!({ "first": first, "last": last }),
    }
}

#[test]
fn retention_prunes_the_oldest_entries_and_leaves_its_own_entry() {
    let (_dir, store) = open_temp();
    let log = store.audit();
    let ids: Vec<i64> = (1..=5)
        .map(|at| log.append(&entry(at, "api.write", "x")).unwrap())
        .collect();
    assert_eq!(log.pruned_through().unwrap(), 0);

    let old = log.prunable_before(Timestamp(4), 100).unwrap();
    assert_eq!(old.iter().map(|r| r.id).collect::<Vec<_>>(), ids[..3]);
    assert_eq!(old[1].entry, entry(2, "api.write", "x"));
    assert_eq!(
        log.prunable_before(Timestamp(4), 2).unwrap().len(),
        2,
        "the limit holds"
    );

    let note = log
        .prune(ids[0], ids[2], 3, &pruned_note(ids[0], ids[2]))
        .unwrap();
    assert!(note > ids[4]);
    assert_eq!(log.pruned_through().unwrap(), ids[2]);
    let left = log.list(&AuditQuery::default()).unwrap();
    assert_eq!(
        left.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![ids[3], ids[4], note]
    );
    assert_eq!(left[2].entry, pruned_note(ids[0], ids[2]));
    assert!(log.prunable_before(Timestamp(4), 100).unwrap().is_empty());

    // Above the mark the log is still append-only, and the mark only moves
    // forward.
    let delete = store.with_writer(|conn| {
        conn.execute("DELETE FROM audit_log WHERE id = ?1", params![ids[3]])
            .unwrap_err()
    });
    assert!(delete.to_string().contains("append-only"), "{delete}");
    let back = store.with_writer(|conn| {
        conn.execute("UPDATE audit_pruned SET through_id = 0", params![])
            .unwrap_err()
    });
    assert!(back.to_string().contains("only moves forward"), "{back}");
    assert_eq!(log.pruned_through().unwrap(), ids[2]);
    assert_eq!(log.list(&AuditQuery::default()).unwrap().len(), 3);
}

#[test]
fn retention_takes_a_prefix_of_the_log_even_when_times_are_out_of_order() {
    let (_dir, store) = open_temp();
    let log = store.audit();
    // Appended in this order; the fourth is stamped earlier than the third
    // (as a settled autoscale action is, with its start).
    let ids: Vec<i64> = [1, 2, 9, 3, 4, 12]
        .into_iter()
        .map(|at| log.append(&entry(at, "api.write", "x")).unwrap())
        .collect();
    let prefix = |cutoff: i64| -> Vec<i64> {
        log.prunable_before(Timestamp(cutoff), 100)
            .unwrap()
            .iter()
            .map(|r| r.id)
            .collect()
    };
    // Up to the first entry not older than the cutoff, never past it.
    assert_eq!(prefix(5), ids[..2]);
    assert_eq!(prefix(10), ids[..5]);
    assert_eq!(prefix(1), Vec::<i64>::new());
    // The prefix prunes cleanly: its range holds exactly what was read.
    let batch = prefix(10);
    log.prune(batch[0], batch[4], 5, &pruned_note(batch[0], batch[4]))
        .unwrap();
    let left: Vec<i64> = log
        .list(&AuditQuery::default())
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(left[0], ids[5]);
    assert_eq!(left.len(), 2, "the sixth entry and the pruning's own");
}

#[test]
fn a_prune_whose_range_holds_other_entries_than_were_read_changes_nothing() {
    let (_dir, store) = open_temp();
    let log = store.audit();
    let ids: Vec<i64> = (1..=3)
        .map(|at| log.append(&entry(at, "api.write", "x")).unwrap())
        .collect();
    // The caller read two entries, but three are in the range now.
    let err = log
        .prune(ids[0], ids[2], 2, &pruned_note(ids[0], ids[2]))
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::AuditRangeChanged {
                expected: 2,
                found: 3,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(log.pruned_through().unwrap(), 0);
    assert_eq!(
        log.list(&AuditQuery::default())
            .unwrap()
            .iter()
            .map(|r| r.id)
            .collect::<Vec<_>>(),
        ids
    );
}

crate::tests::on_postgres!(
    entries_round_trip_in_order_with_filters_and_paging,
    the_database_refuses_to_update_or_delete_audit_entries,
    retention_prunes_the_oldest_entries_and_leaves_its_own_entry,
    retention_takes_a_prefix_of_the_log_even_when_times_are_out_of_order,
    a_prune_whose_range_holds_other_entries_than_were_read_changes_nothing,
);
