use super::*;
use crate::audit::AuditQuery;
use crate::tests::open_temp;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Zone {
    rrsets: Vec<(String, String, u32, Vec<String>)>,
}

fn zone(ip: &str) -> Zone {
    Zone {
        rrsets: vec![("app.example.com.".into(), "A".into(), 30, vec![ip.into()])],
    }
}

#[test]
fn zones_round_trip_replace_and_delete_with_audit() {
    let (_dir, store) = open_temp();
    let zones = store.zones();
    assert_eq!(zones.get_zone::<Zone>("example.com.").unwrap(), None);
    zones
        .put_zone(
            "example.com.",
            1,
            &zone("192.0.2.1"),
            Timestamp(5),
            "admin",
            &json!({"rrsets": 1}),
        )
        .unwrap();
    zones
        .put_zone(
            "example.org.",
            7,
            &zone("192.0.2.9"),
            Timestamp(6),
            "admin",
            &json!(null),
        )
        .unwrap();
    zones
        .put_zone(
            "example.com.",
            u32::MAX,
            &zone("192.0.2.2"),
            Timestamp(8),
            "admin",
            &json!(null),
        )
        .unwrap();
    let stored = zones.get_zone::<Zone>("example.com.").unwrap().unwrap();
    assert_eq!(
        stored,
        StoredZone {
            name: "example.com.".into(),
            serial: u32::MAX,
            zone: zone("192.0.2.2"),
            updated_at: Timestamp(8),
        }
    );
    // Opaque: any JSON shape reads back.
    let raw = zones.list_zones::<serde_json::Value>().unwrap();
    assert_eq!(raw.len(), 2);
    assert_eq!(raw[1].name, "example.org.");
    assert_eq!(raw[1].zone["rrsets"][0][3][0], "192.0.2.9");

    assert!(
        zones
            .delete_zone("example.org.", Timestamp(9), "admin")
            .unwrap()
    );
    assert!(
        !zones
            .delete_zone("example.org.", Timestamp(9), "admin")
            .unwrap()
    );
    assert_eq!(zones.list_zones::<Zone>().unwrap().len(), 1);

    let audit = store.audit().list(&AuditQuery::default()).unwrap();
    let kinds: Vec<_> = audit.iter().map(|r| r.entry.kind.as_str()).collect();
    assert_eq!(
        kinds,
        vec![
            kinds::DNS_ZONE_PUT,
            kinds::DNS_ZONE_PUT,
            kinds::DNS_ZONE_PUT,
            kinds::DNS_ZONE_DELETED
        ]
    );
    assert_eq!(
        audit[0].entry.data,
        json!({"serial": 1, "detail": {"rrsets": 1}})
    );
    assert_eq!(
        audit[3].entry.message,
        "zone example.org. deleted (was at serial 7)"
    );
}

#[test]
fn a_zone_that_does_not_decode_is_a_named_error() {
    let (_dir, store) = open_temp();
    store
        .zones()
        .put_zone(
            "example.com.",
            1,
            &json!({"other": true}),
            Timestamp(0),
            "admin",
            &json!(null),
        )
        .unwrap();
    let err = store.zones().get_zone::<Zone>("example.com.").unwrap_err();
    assert!(err.to_string().contains("zone `example.com.`"), "{err}");
}

#[test]
fn a_conditional_write_happens_only_on_the_base_it_was_made_on() {
    let (_dir, store) = open_temp();
    let zones = store.zones();
    let put = |base: ZoneBase, serial: u32, ip: &str| {
        zones
            .put_zone_if(
                "example.com.",
                base,
                serial,
                &zone(ip),
                Timestamp(1),
                "a",
                &json!(null),
            )
            .unwrap()
    };
    assert!(
        !put(ZoneBase::Serial(1), 2, "192.0.2.9"),
        "nothing to replace"
    );
    assert!(put(ZoneBase::Absent, 1, "192.0.2.1"));
    assert!(!put(ZoneBase::Absent, 1, "192.0.2.9"), "it exists now");
    // Two replicas patch serial 1; the second loses and must start again.
    assert!(put(ZoneBase::Serial(1), 2, "192.0.2.2"));
    assert!(!put(ZoneBase::Serial(1), 2, "192.0.2.3"));
    let stored = zones.get_zone::<Zone>("example.com.").unwrap().unwrap();
    assert_eq!((stored.serial, stored.zone), (2, zone("192.0.2.2")));
    assert_eq!(
        zones.serials().unwrap(),
        vec![("example.com.".to_owned(), 2)]
    );
    assert!(put(ZoneBase::Any, 9, "192.0.2.4"));
    assert_eq!(
        zones.serials().unwrap(),
        vec![("example.com.".to_owned(), 9)]
    );
}

crate::tests::on_postgres!(
    zones_round_trip_replace_and_delete_with_audit,
    a_zone_that_does_not_decode_is_a_named_error,
    a_conditional_write_happens_only_on_the_base_it_was_made_on,
);
