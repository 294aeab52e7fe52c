use super::*;
use crate::audit::AuditQuery;
use crate::tests::open_temp;
use neutral_core::model::Timestamp;

fn action(at: i64, from: u32, to: u32, in_flight: bool) -> LastAction {
    LastAction {
        at: Timestamp(at),
        from,
        to,
        in_flight,
        failover_extra: 1,
    }
}

#[test]
fn last_actions_round_trip_and_replace_per_region() {
    let (_dir, store) = open_temp();
    let state = store.autoscale_state();
    assert_eq!(state.get("jp").unwrap(), None);
    state
        .put(
            "jp",
            &action(10, 1, 2, true),
            "autoscaler",
            "cpu 0.82 > 0.75 for 60s",
            &json!({"cpu": 0.82}),
        )
        .unwrap();
    state
        .put(
            "sg",
            &action(11, 3, 2, true),
            "autoscaler",
            "cpu 0.1 < 0.3 for 300s",
            &json!(null),
        )
        .unwrap();
    state
        .put(
            "jp",
            &action(20, 1, 2, false),
            "autoscaler",
            "commit applied",
            &json!(null),
        )
        .unwrap();
    assert_eq!(state.get("jp").unwrap(), Some(action(20, 1, 2, false)));
    let all = state.list().unwrap();
    assert_eq!(all.keys().collect::<Vec<_>>(), vec!["jp", "sg"]);
    assert_eq!(all["sg"], action(11, 3, 2, true));

    let audit = store
        .audit()
        .list(&AuditQuery {
            subject: Some("jp".into()),
            ..AuditQuery::default()
        })
        .unwrap();
    assert_eq!(audit.len(), 2);
    assert_eq!(
        audit[0].entry.message,
        "region jp: 1 -> 2 nodes (in flight): cpu 0.82 > 0.75 for 60s"
    );
    assert_eq!(audit[0].entry.data["detail"]["cpu"], json!(0.82));
    assert_eq!(audit[0].entry.kind, kinds::AUTOSCALE_ACTION);
}

crate::tests::on_postgres!(last_actions_round_trip_and_replace_per_region,);
