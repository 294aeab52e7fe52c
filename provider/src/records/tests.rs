//! The records' shapes across backends, end to end: render, read back,
//! plan and patch as the resource does.

use expect_test::expect;

use neutral_core::dnsplan::{self, DnsPlan};
use neutral_core::model::{AllDownPolicy, DnsBackendKind, RecordType};

use super::powerdns::record_of;
use super::*;
use crate::client::{ChangeType, Comment, RrSet, RrSetChange, Zone};

fn answer(node: &str, address: &str, weight: u32) -> AnswerRow {
    AnswerRow {
        node: node.to_owned(),
        region: "jp".to_owned(),
        address: address.parse().expect("address"),
        weight,
    }
}

fn policy() -> Policy {
    Policy {
        all_down: AllDownPolicy::FailOpen,
        min_ready_nodes: 1,
        regions: [("jp".to_owned(), 100)].into(),
    }
}

fn zone(rrsets: Vec<RrSet>) -> Zone {
    Zone::named("example.com.", rrsets)
}

fn rrset(rtype: &str, records: &[&str], comments: Vec<Comment>) -> RrSet {
    RrSet {
        name: "app.example.com.".to_owned(),
        rtype: rtype.to_owned(),
        ttl: 30,
        records: records.iter().map(|c| record_of(c)).collect(),
        comments,
    }
}

fn foreign(text: &str) -> Comment {
    Comment {
        content: text.to_owned(),
        account: "ops".to_owned(),
        modified_at: 7,
    }
}

/// Plans and patches like the resource does.
fn apply(
    kind: DnsBackendKind,
    zone: &Zone,
    rtype: RecordType,
    answers: &[AnswerRow],
) -> (DnsPlan, Vec<RrSetChange>) {
    let desired = desired_sets(kind, "app.example.com", rtype, 30, answers);
    let current = current_sets(kind, zone, "app.example.com", rtype);
    let plan = dnsplan::plan(OWNER, &desired, &current);
    let comment = policy_comment(rtype, &policy());
    let changes = patch(
        zone,
        "app.example.com",
        rtype,
        &plan,
        &desired,
        Some(&comment),
    );
    (plan, changes)
}

fn json(changes: &[RrSetChange]) -> String {
    serde_json::to_string_pretty(changes).expect("json")
}

#[test]
fn embedded_records_carry_node_weights() {
    let sets = desired_sets(
        DnsBackendKind::Embedded,
        "app.example.com",
        RecordType::A,
        30,
        &[
            answer("jp-1", "192.0.2.1", 50),
            answer("jp-2", "192.0.2.2", 50),
        ],
    );
    expect![[r#"["A 192.0.2.1 weight=50", "A 192.0.2.2 weight=50"]"#]]
        .assert_eq(&format!("{:?}", presentation(&sets)));
}

#[test]
fn powerdns_uses_a_plain_rrset_when_weights_are_equal_and_lua_otherwise() {
    let equal = desired_sets(
        DnsBackendKind::Powerdns,
        "app.example.com",
        RecordType::A,
        30,
        &[
            answer("jp-1", "192.0.2.1", 50),
            answer("sg-1", "192.0.2.9", 50),
        ],
    );
    expect![[r#"["A 192.0.2.1", "A 192.0.2.9"]"#]]
        .assert_eq(&format!("{:?}", presentation(&equal)));
    let weighted = desired_sets(
        DnsBackendKind::Powerdns,
        "app.example.com",
        RecordType::A,
        30,
        &[
            answer("jp-1", "192.0.2.1", 100),
            answer("sg-1", "192.0.2.9", 50),
        ],
    );
    expect![[r#"["LUA A \"pickwrandom({{2,'192.0.2.1'},{1,'192.0.2.9'}})\""]"#]]
        .assert_eq(&format!("{:?}", presentation(&weighted)));
    assert_eq!(weighted[0].set_id.as_deref(), Some("A"));
}

#[test]
fn answers_sharing_an_address_become_one_record() {
    let sets = desired_sets(
        DnsBackendKind::Embedded,
        "app.example.com",
        RecordType::A,
        30,
        &[
            answer("old", "192.0.2.1", 30),
            answer("new", "192.0.2.1", 20),
        ],
    );
    assert_eq!(presentation(&sets), ["A 192.0.2.1 weight=50"]);
    assert!(
        desired_sets(
            DnsBackendKind::Embedded,
            "a.example.com",
            RecordType::A,
            30,
            &[]
        )
        .is_empty()
    );
}

#[test]
fn the_policy_comment_round_trips_and_names_its_type() {
    let comment = policy_comment(RecordType::Aaaa, &policy());
    expect![[r#"neutral_gtm_record AAAA {"all_down":"fail_open","min_ready_nodes":1,"regions":{"jp":100}}"#]]
        .assert_eq(&comment.content);
    let set = rrset("AAAA", &["2001:db8::1"], vec![comment]);
    assert_eq!(policy_of(&set, RecordType::Aaaa), Some(policy()));
    assert_eq!(policy_of(&set, RecordType::A), None);
}

#[test]
fn creating_in_an_empty_zone_replaces_one_rrset_with_the_comment() {
    let (plan, changes) = apply(
        DnsBackendKind::Embedded,
        &zone(Vec::new()),
        RecordType::A,
        &[answer("jp-1", "192.0.2.1", 100)],
    );
    assert_eq!(plan.counts(), (1, 0, 0));
    expect![[r#"
        [
          {
            "name": "app.example.com.",
            "type": "A",
            "ttl": 30,
            "changetype": "REPLACE",
            "records": [
              {
                "content": "192.0.2.1",
                "disabled": false,
                "weight": 100
              }
            ],
            "comments": [
              {
                "content": "neutral_gtm_record A {\"all_down\":\"fail_open\",\"min_ready_nodes\":1,\"regions\":{\"jp\":100}}",
                "account": "neutral"
              }
            ]
          }
        ]"#]]
    .assert_eq(&json(&changes));
}

#[test]
fn nothing_is_written_when_the_backend_already_holds_the_records() {
    let answers = [answer("jp-1", "192.0.2.1", 100)];
    let comment = policy_comment(RecordType::A, &policy());
    let current = zone(vec![rrset("A", &["192.0.2.1 weight=100"], vec![comment])]);
    let (plan, changes) = apply(DnsBackendKind::Embedded, &current, RecordType::A, &answers);
    assert!(plan.is_empty());
    assert!(changes.is_empty(), "{changes:?}");
}

#[test]
fn a_changed_policy_alone_rewrites_only_the_comment() {
    let answers = [answer("jp-1", "192.0.2.1", 100)];
    let mut old = policy();
    old.min_ready_nodes = 2;
    let current = zone(vec![rrset(
        "A",
        &["192.0.2.1 weight=100"],
        vec![policy_comment(RecordType::A, &old), foreign("ticket 42")],
    )]);
    let (plan, changes) = apply(DnsBackendKind::Embedded, &current, RecordType::A, &answers);
    assert!(plan.is_empty());
    assert_eq!(changes.len(), 1);
    let comments = changes[0].comments.as_ref().expect("comments");
    assert_eq!(comments.len(), 2);
    assert!(comments.iter().any(|c| c.content == "ticket 42"));
    assert!(
        comments
            .iter()
            .any(|c| c.content.contains("\"min_ready_nodes\":1"))
    );
}

#[test]
fn records_owned_by_someone_else_are_conflicts_and_left_alone() {
    let current = zone(vec![rrset(
        "A",
        &["198.51.100.7"],
        vec![foreign("hand made")],
    )]);
    let (plan, _) = apply(
        DnsBackendKind::Powerdns,
        &current,
        RecordType::A,
        &[answer("jp-1", "192.0.2.1", 100)],
    );
    assert!(plan.changes.is_empty());
    assert_eq!(plan.conflicts.len(), 1);
    assert!(plan.conflicts[0].reason.contains("not owned"));
}

#[test]
fn switching_powerdns_from_plain_to_lua_deletes_the_plain_rrset_in_the_same_patch() {
    let comment = policy_comment(RecordType::A, &policy());
    let current = zone(vec![rrset("A", &["192.0.2.1", "192.0.2.9"], vec![comment])]);
    let (_, changes) = apply(
        DnsBackendKind::Powerdns,
        &current,
        RecordType::A,
        &[
            answer("jp-1", "192.0.2.1", 100),
            answer("sg-1", "192.0.2.9", 50),
        ],
    );
    let summary: Vec<String> = changes
        .iter()
        .map(|c| {
            format!(
                "{:?} {} {}",
                c.changetype,
                c.rtype,
                c.records.as_ref().map_or(0, Vec::len)
            )
        })
        .collect();
    assert_eq!(summary, ["Delete A 0", "Replace LUA 1"]);
}

#[test]
fn the_a_and_aaaa_lua_records_of_one_name_share_an_rrset_without_losing_each_other() {
    let aaaa_comment = policy_comment(RecordType::Aaaa, &policy());
    let current = zone(vec![rrset(
        "LUA",
        &["AAAA \"pickwrandom({{2,'2001:db8::1'},{1,'2001:db8::2'}})\""],
        vec![aaaa_comment.clone()],
    )]);
    let answers = [
        answer("jp-1", "192.0.2.1", 100),
        answer("sg-1", "192.0.2.9", 50),
    ];
    let (plan, changes) = apply(DnsBackendKind::Powerdns, &current, RecordType::A, &answers);
    assert_eq!(
        plan.counts(),
        (1, 0, 0),
        "the AAAA part is not ours to plan"
    );
    let change = &changes[0];
    assert_eq!(change.changetype, ChangeType::Replace);
    assert_eq!(change.records.as_ref().expect("records").len(), 2);
    assert_eq!(change.comments.as_ref().expect("comments").len(), 2);

    // Destroying the A record keeps the AAAA one and its comment.
    let both = zone(vec![rrset(
        "LUA",
        &[
            "AAAA \"pickwrandom({{2,'2001:db8::1'},{1,'2001:db8::2'}})\"",
            "A \"pickwrandom({{2,'192.0.2.1'},{1,'192.0.2.9'}})\"",
        ],
        vec![aaaa_comment, policy_comment(RecordType::A, &policy())],
    )]);
    let current = current_sets(
        DnsBackendKind::Powerdns,
        &both,
        "app.example.com",
        RecordType::A,
    );
    let plan = dnsplan::plan(OWNER, &[], &current);
    assert_eq!(plan.counts(), (0, 0, 1));
    let changes = patch(&both, "app.example.com", RecordType::A, &plan, &[], None);
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].changetype, ChangeType::Replace);
    let kept = changes[0].records.as_ref().expect("records");
    assert_eq!(kept.len(), 1);
    assert!(kept[0].content.starts_with("AAAA "));
    let comments = changes[0].comments.as_ref().expect("comments");
    assert!(comments.iter().all(|c| c.content.contains(" AAAA ")));
}

#[test]
fn destroying_deletes_only_owned_rrsets() {
    let comment = policy_comment(RecordType::A, &policy());
    let mut www = rrset("A", &["198.51.100.1"], Vec::new());
    www.name = "www.example.com.".to_owned();
    let current_zone = zone(vec![
        rrset("A", &["192.0.2.1 weight=100"], vec![comment]),
        www,
    ]);
    let current = current_sets(
        DnsBackendKind::Embedded,
        &current_zone,
        "app.example.com",
        RecordType::A,
    );
    let plan = dnsplan::plan(OWNER, &[], &current);
    let changes = patch(
        &current_zone,
        "app.example.com",
        RecordType::A,
        &plan,
        &[],
        None,
    );
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].name, "app.example.com.");
    assert_eq!(changes[0].changetype, ChangeType::Delete);
}

fn weighted() -> Vec<AnswerRow> {
    vec![
        answer("jp-1", "192.0.2.1", 50),
        answer("jp-2", "192.0.2.2", 50),
        answer("sg-1", "192.0.2.9", 100),
    ]
}

#[test]
fn route53_gets_one_weighted_set_per_node_scaled_to_255() {
    let sets = desired_sets(
        DnsBackendKind::Route53,
        "app.example.com",
        RecordType::A,
        30,
        &weighted(),
    );
    expect![[r#"["A 192.0.2.1 weight=128 id=jp-1", "A 192.0.2.2 weight=127 id=jp-2", "A 192.0.2.9 weight=255 id=sg-1"]"#]]
        .assert_eq(&format!("{:?}", presentation(&sets)));
    assert!(sets.iter().all(|s| s.set_id.is_some()));
}

#[test]
fn cloudflare_gets_plain_records_and_alidns_weights_to_100() {
    let cloudflare = desired_sets(
        DnsBackendKind::Cloudflare,
        "app.example.com",
        RecordType::A,
        60,
        &weighted(),
    );
    expect![[r#"["A 192.0.2.1", "A 192.0.2.2", "A 192.0.2.9"]"#]]
        .assert_eq(&format!("{:?}", presentation(&cloudflare)));
    let mut answers = weighted();
    answers.push(answer("sg-2", "192.0.2.10", 0));
    let alidns = desired_sets(
        DnsBackendKind::Alidns,
        "app.example.com",
        RecordType::A,
        600,
        &answers,
    );
    expect![[r#"["A 192.0.2.1 weight=50", "A 192.0.2.10 weight=0", "A 192.0.2.2 weight=50", "A 192.0.2.9 weight=100"]"#]]
        .assert_eq(&format!("{:?}", presentation(&alidns)));
}

#[test]
fn the_registry_names_its_owner_and_policy_and_reads_back() {
    let text = registry_text("prod", RecordType::A, &policy());
    expect![[r#"heritage=neutral,owner=prod,resource=neutral_gtm_record,type=A,all_down=fail_open,min_ready_nodes=1,regions=jp:100"#]]
        .assert_eq(&text);
    let expected = Some(Registry {
        owner: "prod".to_owned(),
        policy: Some(policy()),
    });
    assert_eq!(parse_registry(&text, RecordType::A), expected);
    assert_eq!(parse_registry(&quote_txt(&text), RecordType::A), expected);
    assert_eq!(parse_registry(&text, RecordType::Aaaa), None);
    assert_eq!(
        parse_registry("\"heritage=external-dns,owner=prod\"", RecordType::A),
        None
    );
    let route53 = registry_set(
        DnsBackendKind::Route53,
        "app.example.com",
        RecordType::A,
        "prod",
        &policy(),
    );
    assert_eq!(route53.name, "_neutral-a.app.example.com");
    assert!(is_registry(&route53));
    assert!(presentation(&[route53]).is_empty());
}

#[test]
fn long_txt_text_is_split_into_255_character_strings() {
    let text = "x".repeat(600);
    let quoted = quote_txt(&text);
    assert_eq!(quoted.matches('"').count(), 6);
    assert_eq!(unquote_txt(&quoted), text);
    assert_eq!(unquote_txt("\"a\\\"b\" \"c\""), "a\"bc");
}

#[test]
fn a_hand_edited_record_shows_in_the_presentation() {
    let comment = policy_comment(RecordType::A, &policy());
    let edited = zone(vec![rrset("A", &["203.0.113.9 weight=100"], vec![comment])]);
    let current = current_sets(
        DnsBackendKind::Embedded,
        &edited,
        "app.example.com",
        RecordType::A,
    );
    assert_eq!(presentation(&current), ["A 203.0.113.9 weight=100"]);
    assert_eq!(current[0].owner.as_deref(), Some(OWNER));
}
