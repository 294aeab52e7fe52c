use expect_test::{Expect, expect};

use super::*;

fn zone() -> Zone {
    Zone::create("example.com.", &["ns1.example.com.", "ns2.example.net."]).unwrap()
}

fn patch(changes: Vec<RrSetChange>) -> ZonePatch {
    ZonePatch { rrsets: changes }
}

fn records(contents: &[&str]) -> Vec<Record> {
    contents.iter().map(|c| Record::new(*c)).collect()
}

fn check_error(zone: &Zone, changes: Vec<RrSetChange>, expected: &Expect) {
    let error = apply_patch(zone, &patch(changes)).unwrap_err();
    let lines: Vec<String> = error.problems.iter().map(Problem::to_string).collect();
    expected.assert_eq(&lines.join("\n"));
}

fn soa_content(zone: &Zone) -> &str {
    &zone.rrset("example.com.", "SOA").unwrap().records[0].content
}

#[test]
fn a_new_zone_holds_its_soa_and_ns_at_the_apex() {
    let zone = Zone::create("Example.COM.", &["ns1.example.com.", "ns2.example.net."]).unwrap();
    expect![[r#"
        {
          "id": "example.com.",
          "name": "example.com.",
          "kind": "Native",
          "serial": 1,
          "rrsets": [
            {
              "name": "example.com.",
              "type": "NS",
              "ttl": 3600,
              "records": [
                {
                  "content": "ns1.example.com.",
                  "disabled": false
                },
                {
                  "content": "ns2.example.net.",
                  "disabled": false
                }
              ],
              "comments": []
            },
            {
              "name": "example.com.",
              "type": "SOA",
              "ttl": 3600,
              "records": [
                {
                  "content": "ns1.example.com. hostmaster.example.com. 1 10800 3600 604800 3600",
                  "disabled": false
                }
              ],
              "comments": []
            }
          ]
        }"#]]
    .assert_eq(&serde_json::to_string_pretty(&zone).unwrap());
    assert_eq!(zone.validate(), Ok(()));
}

#[test]
fn zone_creation_reports_every_bad_argument() {
    let error = Zone::create(
        "example.com",
        &["ns1", "ns1.example.com.", "ns1.example.com."],
    )
    .unwrap_err();
    expect![[r#"
        zone example.com: name: `example.com` is not absolute (add the trailing dot: `example.com.`); nameservers[0]: `ns1` is not absolute (add the trailing dot: `ns1.`); nameservers[2]: `ns1.example.com.` is listed twice"#]]
    .assert_eq(&error.to_string());
    let error = Zone::create("example.com.", &[]).unwrap_err();
    expect!["zone example.com.: nameservers: at least one name server is required"]
        .assert_eq(&error.to_string());
}

#[test]
fn replace_adds_weighted_records_and_bumps_the_serial() {
    let before = zone();
    let after = apply_patch(
        &before,
        &patch(vec![RrSetChange::replace(
            "App.Example.com.",
            "a",
            30,
            vec![
                Record::new("192.0.2.1").weighted(100),
                Record::new("192.0.2.2").weighted(50),
            ],
        )]),
    )
    .unwrap();
    let rrset = after.rrset("app.example.com.", "A").unwrap();
    assert_eq!(rrset.name, "app.example.com.");
    assert_eq!(rrset.rtype, "A");
    assert_eq!(rrset.ttl, 30);
    assert_eq!(rrset.records[1].weight, Some(50));
    assert_eq!(after.serial, 2);
    assert_eq!(
        soa_content(&after),
        "ns1.example.com. hostmaster.example.com. 2 10800 3600 604800 3600"
    );
    assert_eq!(after.validate(), Ok(()));
    // rrsets stay sorted by name, then type
    let keys: Vec<(&str, &str)> = after
        .rrsets
        .iter()
        .map(|r| (r.name.as_str(), r.rtype.as_str()))
        .collect();
    assert_eq!(
        keys,
        vec![
            ("app.example.com.", "A"),
            ("example.com.", "NS"),
            ("example.com.", "SOA")
        ]
    );
}

#[test]
fn replace_with_no_records_and_delete_remove_an_rrset() {
    let with_www = apply_patch(
        &zone(),
        &patch(vec![
            RrSetChange::replace("www.example.com.", "A", 60, records(&["192.0.2.1"])),
            RrSetChange::replace("www.example.com.", "TXT", 60, records(&["\"hi\""])),
        ]),
    )
    .unwrap();
    let after = apply_patch(
        &with_www,
        &patch(vec![
            RrSetChange::replace("www.example.com.", "A", 60, vec![]),
            RrSetChange::delete("www.example.com.", "TXT"),
            RrSetChange::delete("gone.example.com.", "A"),
        ]),
    )
    .unwrap();
    assert_eq!(after.rrset("www.example.com.", "A"), None);
    assert_eq!(after.rrset("www.example.com.", "TXT"), None);
    assert_eq!(after.serial, 3);
}

#[test]
fn an_empty_patch_changes_nothing() {
    let before = zone();
    assert_eq!(apply_patch(&before, &ZonePatch::default()), Ok(before));
}

#[test]
fn one_bad_change_rejects_the_whole_patch_with_every_problem() {
    check_error(
        &zone(),
        vec![
            RrSetChange::replace("ok.example.com.", "A", 60, records(&["192.0.2.1"])),
            RrSetChange::replace("www.example.com", "A", 60, records(&["192.0.2.1"])),
            RrSetChange::replace(
                "www.example.com.",
                "A",
                60,
                records(&["300.1.1.1", "192.0.2.1"]),
            ),
            RrSetChange::replace("www.example.org.", "A", 60, records(&["192.0.2.1"])),
            RrSetChange::replace("lua.example.com.", "LUA", 60, records(&["A \"1\""])),
            RrSetChange::replace("mx.example.com.", "MX", 60, records(&["10 mail"])),
            RrSetChange {
                ttl: None,
                ..RrSetChange::replace("nottl.example.com.", "A", 60, records(&["192.0.2.1"]))
            },
            RrSetChange::replace("ok.example.com.", "A", 60, records(&["192.0.2.9"])),
            RrSetChange::replace("big.example.com.", "TXT", MAX_TTL + 1, records(&["\"x\""])),
        ],
        &expect![[r#"
            rrsets[1].name: `www.example.com` is not absolute (add the trailing dot: `www.example.com.`)
            rrsets[2].records[0].content: `300.1.1.1` is not an IPv4 address
            rrsets[3].name: `www.example.org.` is not inside the zone `example.com.`
            rrsets[4].type: `LUA` is not supported (use A, AAAA, CNAME, TXT, NS, MX, SRV, SOA)
            rrsets[5].records[0].content: `mail` is not absolute (add the trailing dot: `mail.`)
            rrsets[6].ttl: required for REPLACE
            rrsets[7]: duplicate of rrsets[0] (ok.example.com. A); one change per name and type
            rrsets[8].ttl: 2147483648 exceeds 2147483647"#]],
    );
}

#[test]
fn duplicate_names_differing_only_in_case_are_the_same_rrset() {
    check_error(
        &zone(),
        vec![
            RrSetChange::replace("www.example.com.", "A", 60, records(&["192.0.2.1"])),
            RrSetChange::delete("WWW.example.com.", "a"),
        ],
        &expect![[
            r#"rrsets[1]: duplicate of rrsets[0] (www.example.com. A); one change per name and type"#
        ]],
    );
}

#[test]
fn records_of_an_rrset_are_checked_together() {
    check_error(
        &zone(),
        vec![
            RrSetChange::replace(
                "w.example.com.",
                "A",
                60,
                vec![
                    Record::new("192.0.2.1").weighted(10),
                    Record::new("192.0.2.2"),
                    Record::new("192.0.2.1").weighted(5),
                ],
            ),
            RrSetChange::replace(
                "t.example.com.",
                "TXT",
                60,
                vec![Record::new("\"a\"").weighted(1)],
            ),
            RrSetChange::replace(
                "c.example.com.",
                "CNAME",
                60,
                records(&["a.example.com.", "b.example.com."]),
            ),
        ],
        &expect![[r#"
            rrsets[0].records[2].content: `192.0.2.1` duplicates records[0]
            rrsets[0].records[1].weight: missing; give every record of the rrset a weight, or none
            rrsets[1].records[0].weight: weights are only supported on A and AAAA records, not TXT
            rrsets[2].records: a CNAME rrset holds exactly one record, got 2"#]],
    );
}

#[test]
fn a_cname_must_be_alone_at_its_name() {
    let with_www = apply_patch(
        &zone(),
        &patch(vec![RrSetChange::replace(
            "www.example.com.",
            "A",
            60,
            records(&["192.0.2.1"]),
        )]),
    )
    .unwrap();
    check_error(
        &with_www,
        vec![RrSetChange::replace(
            "www.example.com.",
            "CNAME",
            60,
            records(&["app.example.com."]),
        )],
        &expect![[
            r#"rrsets[0]: `www.example.com.` would have a CNAME and other rrsets (A); a CNAME must be alone at its name"#
        ]],
    );
    check_error(
        &zone(),
        vec![RrSetChange::replace(
            "example.com.",
            "CNAME",
            60,
            records(&["app.example.com."]),
        )],
        &expect![[
            r#"rrsets[0]: `example.com.` would have a CNAME and other rrsets (NS, SOA); a CNAME must be alone at its name"#
        ]],
    );
    // Replacing the A by a CNAME in one patch is fine.
    let swapped = apply_patch(
        &with_www,
        &patch(vec![
            RrSetChange::delete("www.example.com.", "A"),
            RrSetChange::replace(
                "www.example.com.",
                "CNAME",
                60,
                records(&["app.example.com."]),
            ),
        ]),
    )
    .unwrap();
    assert!(swapped.rrset("www.example.com.", "CNAME").is_some());
    assert_eq!(swapped.validate(), Ok(()));
}

#[test]
fn the_soa_is_replaced_only_at_the_apex_and_never_deleted() {
    check_error(
        &zone(),
        vec![
            RrSetChange::delete("example.com.", "SOA"),
            RrSetChange::replace(
                "sub.example.com.",
                "SOA",
                60,
                records(&["ns1.example.com. h.example.com. 5 1 1 1 1"]),
            ),
            RrSetChange::delete("example.com.", "NS"),
        ],
        &expect![[r#"
            rrsets[0].changetype: the SOA cannot be deleted, only replaced
            rrsets[1].name: an SOA is only allowed at the zone apex `example.com.`
            rrsets[2].changetype: the zone's NS rrset at the apex cannot be deleted"#]],
    );
    check_error(
        &zone(),
        vec![
            RrSetChange::replace("example.com.", "SOA", 60, vec![]),
            RrSetChange::replace("example.com.", "NS", 60, vec![]),
        ],
        &expect![[r#"
            rrsets[0].records: the SOA rrset needs its one record
            rrsets[1].records: the zone's NS rrset at the apex needs at least one enabled record"#]],
    );
}

#[test]
fn a_patched_soa_keeps_its_serial_only_when_newer() {
    let newer = apply_patch(
        &zone(),
        &patch(vec![RrSetChange::replace(
            "example.com.",
            "SOA",
            300,
            records(&["ns2.example.net.   admin.example.com. 2024010101 7200 900 1209600 60"]),
        )]),
    )
    .unwrap();
    assert_eq!(newer.serial, 2_024_010_101);
    assert_eq!(
        soa_content(&newer),
        "ns2.example.net. admin.example.com. 2024010101 7200 900 1209600 60"
    );
    let older = apply_patch(
        &newer,
        &patch(vec![RrSetChange::replace(
            "example.com.",
            "SOA",
            300,
            records(&["ns2.example.net. admin.example.com. 5 7200 900 1209600 60"]),
        )]),
    )
    .unwrap();
    assert_eq!(older.serial, 2_024_010_102);
}

#[test]
fn serials_follow_rfc_1982_and_wrap() {
    assert!(serial_newer(2, 1));
    assert!(!serial_newer(1, 2));
    assert!(!serial_newer(7, 7));
    assert!(serial_newer(0, u32::MAX));
    let defaults = ZoneDefaults {
        serial: u32::MAX,
        ..ZoneDefaults::default()
    };
    let zone = Zone::create_with("example.com.", &["ns1.example.com."], &defaults).unwrap();
    let after = apply_patch(
        &zone,
        &patch(vec![RrSetChange::replace(
            "a.example.com.",
            "A",
            1,
            records(&["192.0.2.1"]),
        )]),
    )
    .unwrap();
    assert_eq!(after.serial, 0);
}

#[test]
fn comments_are_kept_unless_replaced_and_stamped_by_the_caller() {
    let mut first = patch(vec![RrSetChange {
        comments: Some(vec![Comment {
            content: "managed by neutral".to_owned(),
            account: NEUTRAL_ACCOUNT.to_owned(),
            modified_at: 0,
        }]),
        ..RrSetChange::replace("app.example.com.", "A", 30, records(&["192.0.2.1"]))
    }]);
    first.stamp_comments(1_700_000_000);
    let owned = apply_patch(&zone(), &first).unwrap();
    let rrset = owned.rrset("app.example.com.", "A").unwrap();
    assert!(rrset.owned_by(NEUTRAL_ACCOUNT));
    assert_eq!(rrset.comments[0].modified_at, 1_700_000_000);

    let records_only = apply_patch(
        &owned,
        &patch(vec![RrSetChange::replace(
            "app.example.com.",
            "A",
            30,
            records(&["192.0.2.2"]),
        )]),
    )
    .unwrap();
    assert!(
        records_only
            .rrset("app.example.com.", "A")
            .unwrap()
            .owned_by(NEUTRAL_ACCOUNT)
    );

    let comments_only = apply_patch(
        &records_only,
        &patch(vec![RrSetChange {
            records: None,
            comments: Some(vec![]),
            ..RrSetChange::replace("app.example.com.", "A", 30, vec![])
        }]),
    )
    .unwrap();
    let rrset = comments_only.rrset("app.example.com.", "A").unwrap();
    assert!(!rrset.owned_by(NEUTRAL_ACCOUNT));
    assert_eq!(rrset.records, records(&["192.0.2.2"]));
}

#[test]
fn delete_must_not_carry_records_and_replace_needs_something() {
    check_error(
        &zone(),
        vec![
            RrSetChange {
                records: Some(records(&["192.0.2.1"])),
                ..RrSetChange::delete("a.example.com.", "A")
            },
            RrSetChange {
                records: None,
                ..RrSetChange::replace("b.example.com.", "A", 60, vec![])
            },
        ],
        &expect![[r#"
            rrsets[0].records: must be empty for DELETE
            rrsets[1]: REPLACE needs `records`, `comments` or both"#]],
    );
}

#[test]
fn powerdns_json_bodies_read_as_patches() {
    let body = r#"{"rrsets": [
        {"name": "app.example.com.", "type": "A", "ttl": 30, "changetype": "REPLACE",
         "records": [{"content": "192.0.2.1", "disabled": false, "weight": 100},
                     {"content": "192.0.2.2", "disabled": true, "weight": 0}],
         "comments": [{"content": "neutral", "account": "neutral"}]},
        {"name": "old.example.com.", "type": "TXT", "changetype": "DELETE"}
    ]}"#;
    let parsed: ZonePatch = serde_json::from_str(body).unwrap();
    assert_eq!(parsed.rrsets[0].changetype, ChangeType::Replace);
    assert_eq!(parsed.rrsets[1].changetype, ChangeType::Delete);
    let after = apply_patch(&zone(), &parsed).unwrap();
    assert!(after.rrset("app.example.com.", "A").unwrap().records[1].disabled);

    let unknown = r#"{"rrsets": [{"name": "a.example.com.", "type": "A", "changetype": "DELETE", "color": 1}]}"#;
    // The shared types read it leniently (the provider's side); the strict
    // reader names every skipped field by its path.
    assert!(serde_json::from_str::<ZonePatch>(unknown).is_ok());
    let error = parse_strict::<ZonePatch>(unknown.as_bytes()).unwrap_err();
    assert_eq!(error, "unknown field `rrsets[0].color`");
    let nested = r#"{"rrsets": [{"name": "a.example.com.", "type": "A", "changetype": "REPLACE", "ttl": 60,
        "records": [{"content": "192.0.2.1", "prio": 1}], "comments": [{"content": "x", "acount": "y"}]}], "x": 0}"#;
    let error = parse_strict::<ZonePatch>(nested.as_bytes()).unwrap_err();
    assert_eq!(
        error,
        "unknown fields `rrsets[0].records[0].prio`, `rrsets[0].comments[0].acount`, `x`"
    );
    let bad_change =
        r#"{"rrsets": [{"name": "a.example.com.", "type": "A", "changetype": "UPSERT"}]}"#;
    let error = parse_strict::<ZonePatch>(bad_change.as_bytes()).unwrap_err();
    assert!(error.contains("unknown variant `UPSERT`"), "{error}");
    let trailing = r#"{"rrsets": []} {}"#;
    assert!(parse_strict::<ZonePatch>(trailing.as_bytes()).is_err());
}

#[test]
fn validate_reports_what_a_stored_zone_breaks() {
    let mut broken = zone();
    broken.rrsets.retain(|r| r.rtype != "NS");
    broken.rrsets.push(RrSet {
        name: "www.example.com.".to_owned(),
        rtype: "A".to_owned(),
        ttl: 60,
        records: records(&["192.0.2.1"]),
        comments: vec![],
    });
    broken.rrsets.push(RrSet {
        name: "www.example.com.".to_owned(),
        rtype: "CNAME".to_owned(),
        ttl: 60,
        records: records(&["app.example.com."]),
        comments: vec![],
    });
    broken.rrsets.push(RrSet {
        name: "x.example.org.".to_owned(),
        rtype: "A".to_owned(),
        ttl: 60,
        records: records(&["192.0.2.1"]),
        comments: vec![],
    });
    let lines: Vec<String> = broken
        .validate()
        .unwrap_err()
        .problems
        .iter()
        .map(Problem::to_string)
        .collect();
    expect![[r#"
        rrsets[3].name: `x.example.org.` is not inside the zone `example.com.`
        rrsets: no NS rrset at the apex `example.com.`
        rrsets[2]: `www.example.com.` would have a CNAME and other rrsets (A); a CNAME must be alone at its name"#]]
    .assert_eq(&lines.join("\n"));
}

#[test]
fn zone_sets_find_zones_by_any_spelling_and_serialize_as_a_list() {
    let set: ZoneSet = [zone()].into_iter().collect();
    assert!(set.get("EXAMPLE.com").is_some());
    assert!(set.get("example.com.").is_some());
    assert!(set.get("example.org").is_none());
    let json = serde_json::to_string(&set).unwrap();
    assert!(json.starts_with("[{"), "{json}");
    let back: ZoneSet = serde_json::from_str(&json).unwrap();
    assert_eq!(back, set);
}

#[test]
fn is_in_zone_needs_a_label_boundary() {
    assert!(is_in_zone("example.com.", "example.com."));
    assert!(is_in_zone("a.example.com.", "example.com."));
    assert!(!is_in_zone("badexample.com.", "example.com."));
}
