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

crate::tests::on_postgres!(
    entries_round_trip_in_order_with_filters_and_paging,
    the_database_refuses_to_update_or_delete_audit_entries,
);
