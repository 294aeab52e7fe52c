//! The cloud DNS backends of `neutral_gtm_record` — Route53 against a local
//! moto server, Cloudflare and AliDNS against the stand-ins of
//! `support/cloud` — first driven directly (write calls counted by the
//! server side), then through real Terraform:
//!
//! - a no-change apply makes zero write calls; N changed records cost the
//!   fewest write calls each API allows;
//! - a rate-limit answer in the middle of an apply ends with the right
//!   records after the retry, nothing duplicated;
//! - the acceptance scenario: create, weight change, drift by hand, import,
//!   node removal, destroy — foreign records untouched throughout.
//!
//! Without moto (`scripts/setup` installs it) or Terraform the tests that
//! need them say so loudly and pass without running.

use std::collections::BTreeSet;

use neutral_core::dnsplan::batch::{BatchLimits, lower_bound};
use neutral_core::dnsplan::{Change, RecordSet};
use neutral_core::model::DnsBackendKind;
use neutral_e2e::cloud::alidns::AliDns;
use neutral_e2e::cloud::cloudflare::Cloudflare;
use neutral_e2e::cloud::route53::{Moto, Route53Proxy};
use neutral_e2e::cloud::{self, answers, changed, sync};
use neutral_e2e::services::{ADMIN_TOKEN, ControlPlane, Nodes, Terraform, http, terraform_or_skip};
use serde_json::{Value, json};
use terraform_provider_neutral::backend::SyncError;

/// Reports a test skipped for a missing tool; under CI (env `CI` set) a
/// missing tool is a failure instead, so CI cannot pass without running it.
fn skip(test: &str, what: &str) {
    assert!(
        std::env::var_os("CI").is_none(),
        "{test} needs a tool CI must have: {what}"
    );
    eprintln!(
        "\n======================================================================\n\
         SKIPPED {test}: {what}\n\
         ======================================================================\n"
    );
}

fn moto_or_skip(test: &str, dir: &std::path::Path) -> Option<Moto> {
    let moto = Moto::start(dir);
    if moto.is_none() {
        skip(
            test,
            "no moto_server. Run scripts/setup (it installs PyPI moto[server] into \
             .build/moto/venv) or put moto_server on PATH.",
        );
    }
    moto
}

/// `n` UPSERT-like changes of one value each, for the Route53 minimum.
fn updates(n: usize) -> Vec<Change> {
    let set = RecordSet {
        name: "app.example.net".into(),
        rtype: "A".into(),
        set_id: Some("n".into()),
        ttl: 30,
        values: vec!["198.18.0.1".into()],
        weight: Some(1),
        owner: None,
    };
    vec![
        Change::Update {
            from: set.clone(),
            to: set,
        };
        n
    ]
}

// ---- Route53 (moto) ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route53_writes_only_the_difference_in_the_fewest_batches() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(moto) = moto_or_skip("route53_writes_only_the_difference", dir.path()) else {
        return;
    };
    let zone_id = moto.create_zone("example.net");
    let proxy = Route53Proxy::start(&moto);
    let backend = cloud::route53(&proxy.url());
    let nodes = answers(10);

    let synced = sync(&backend, "example.net", "app.example.net", 30, &nodes)
        .await
        .expect("create");
    assert_eq!(synced.counts, (11, 0, 0), "10 sets and the registry");
    assert_eq!(proxy.state().write_calls, 1, "one batch creates them all");
    let lines = moto.lines(&zone_id, "app.example.net");
    assert_eq!(lines.len(), 10, "{lines:?}");
    assert!(
        lines.iter().all(|l| l.contains(" weight=255 id=jp-")),
        "{lines:?}"
    );
    let registry = moto.lines(&zone_id, "_neutral-a.app.example.net");
    assert_eq!(registry.len(), 1, "{registry:?}");
    assert!(registry[0].starts_with("TXT \"heritage=neutral,owner=neutral,"));

    // No change: no write.
    let before = proxy.state().write_calls;
    let synced = sync(&backend, "example.net", "app.example.net", 30, &nodes)
        .await
        .expect("no change");
    assert_eq!((synced.counts, synced.applied.write_calls), ((0, 0, 0), 0));
    assert_eq!(proxy.state().write_calls, before);

    // Three weights change: three UPSERTs in one batch.
    let synced = sync(
        &backend,
        "example.net",
        "app.example.net",
        30,
        &changed(DnsBackendKind::Route53, &nodes, 3),
    )
    .await
    .expect("reweigh");
    assert_eq!(synced.counts, (0, 3, 0));
    assert_eq!(
        synced.applied.write_calls,
        lower_bound(&updates(3), &BatchLimits::ROUTE53)
    );
    assert_eq!(proxy.state().write_calls, before + 1);

    // Node removal: a DELETE that repeats the set exactly.
    let synced = sync(
        &backend,
        "example.net",
        "app.example.net",
        30,
        &changed(DnsBackendKind::Route53, &nodes, 3)[..9],
    )
    .await
    .expect("remove a node");
    assert_eq!(synced.counts, (0, 0, 1));
    assert_eq!(moto.lines(&zone_id, "app.example.net").len(), 9);

    // Destroy: the registry goes too, in the same single batch.
    let synced = sync(&backend, "example.net", "app.example.net", 30, &[])
        .await
        .expect("destroy");
    assert_eq!((synced.counts.2, synced.applied.write_calls), (10, 1));
    assert!(moto.lines(&zone_id, "app.example.net").is_empty());
    assert!(
        moto.lines(&zone_id, "_neutral-a.app.example.net")
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route53_throttling_mid_apply_is_retried_without_duplicates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(moto) = moto_or_skip("route53_throttling_mid_apply", dir.path()) else {
        return;
    };
    let zone_id = moto.create_zone("example.net");
    let proxy = Route53Proxy::start(&moto);
    let backend = cloud::route53(&proxy.url());
    // 1,200 sets plus the registry: two batches; the second is refused
    // twice (Throttling, then PriorRequestNotComplete) before it lands.
    let nodes = answers(1_200);
    {
        let mut state = proxy.state();
        state.pass_writes = 1;
        state.refuse_writes = 2;
    }
    let synced = sync(&backend, "example.net", "app.example.net", 30, &nodes)
        .await
        .expect("create despite throttling");
    assert_eq!(synced.applied.write_calls, 2 + 2);
    assert_eq!(proxy.state().write_calls, 4);
    let lines = moto.lines(&zone_id, "app.example.net");
    assert_eq!(lines.len(), 1_200);
    let unique: BTreeSet<&String> = lines.iter().collect();
    assert_eq!(unique.len(), 1_200, "nothing duplicated");
    let again = sync(&backend, "example.net", "app.example.net", 30, &nodes)
        .await
        .expect("no change");
    assert_eq!(again.applied.write_calls, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route53_records_of_other_owners_are_conflicts_and_left_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(moto) = moto_or_skip("route53_records_of_other_owners", dir.path()) else {
        return;
    };
    let zone_id = moto.create_zone("example.net");
    moto.change(
        &zone_id,
        "CREATE",
        "<ResourceRecordSet><Name>app.example.net.</Name><Type>A</Type>\
         <SetIdentifier>jp-0000</SetIdentifier><Weight>10</Weight><TTL>300</TTL>\
         <ResourceRecords><ResourceRecord><Value>203.0.113.1</Value></ResourceRecord>\
         </ResourceRecords></ResourceRecordSet>",
    );
    let backend = cloud::route53(&moto.url);
    let result = sync(&backend, "example.net", "app.example.net", 30, &answers(2)).await;
    let Err(SyncError::Conflicts(conflicts)) = result else {
        panic!("expected a conflict, got {result:?}");
    };
    // The hand-made set has a node's id: that key is refused, and so the
    // whole apply: nothing is written.
    assert_eq!(conflicts.len(), 1, "{conflicts:?}");
    assert_eq!(conflicts[0].key.set_id.as_deref(), Some("jp-0000"));
    assert!(
        moto.lines(&zone_id, "_neutral-a.app.example.net")
            .is_empty()
    );
    assert_eq!(
        moto.lines(&zone_id, "app.example.net"),
        ["A 203.0.113.1 weight=10 id=jp-0000"]
    );
}

// ---- Cloudflare ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudflare_writes_only_the_difference_in_the_fewest_batches() {
    let cf = Cloudflare::start(cloud::CLOUDFLARE_TOKEN, &["example.dev"]);
    cf.add(
        "example.dev",
        "app.example.dev",
        "A",
        "203.0.113.7",
        Some("made by hand"),
    );
    cf.state().batch_limit = 20;
    let backend = cloud::cloudflare(&cf.api_url(), 20);
    let nodes = answers(45);

    let synced = sync(&backend, "example.dev", "app.example.dev", 60, &nodes)
        .await
        .expect("create");
    assert_eq!(synced.counts, (46, 0, 0));
    assert_eq!(synced.applied.write_calls, 3, "46 posts in batches of 20");
    assert_eq!(cf.state().write_calls, 3);
    let records = cf.records("app.example.dev");
    assert_eq!(records.len(), 46, "45 and the foreign one");
    assert!(
        records
            .iter()
            .filter(|r| r.content != "203.0.113.7")
            .all(|r| r.comment.as_deref() == Some("heritage=neutral,owner=neutral") && !r.proxied)
    );
    // The registry record was posted in the first batch.
    let first = cf.state().batches[0].clone();
    assert_eq!(first["posts"][0]["name"], "_neutral-a.app.example.dev");

    let before = cf.state().write_calls;
    let synced = sync(&backend, "example.dev", "app.example.dev", 60, &nodes)
        .await
        .expect("no change");
    assert_eq!((synced.counts, synced.applied.write_calls), ((0, 0, 0), 0));
    assert_eq!(cf.state().write_calls, before);

    // Seven addresses change: planned as 7 deletes and 7 creates, written as
    // 7 patches of the old records, in one batch.
    let synced = sync(
        &backend,
        "example.dev",
        "app.example.dev",
        60,
        &changed(DnsBackendKind::Cloudflare, &nodes, 7),
    )
    .await
    .expect("readdress");
    assert_eq!(synced.counts, (7, 0, 7));
    assert_eq!(synced.applied.write_calls, 1);
    let last = cf.state().batches.last().cloned().expect("batch");
    assert_eq!(last["patches"].as_array().map(Vec::len), Some(7));
    assert_eq!(last["deletes"].as_array().map(Vec::len), Some(0));
    assert_eq!(last["posts"].as_array().map(Vec::len), Some(0));
    assert_eq!(cf.records("app.example.dev").len(), 46);

    // Destroy keeps the foreign record.
    sync(&backend, "example.dev", "app.example.dev", 60, &[])
        .await
        .expect("destroy");
    let left = cf.records("app.example.dev");
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].content, "203.0.113.7");
    assert!(cf.records("_neutral-a.app.example.dev").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudflare_429_mid_apply_is_retried_after_retry_after_without_duplicates() {
    let cf = Cloudflare::start(cloud::CLOUDFLARE_TOKEN, &["example.dev"]);
    cf.state().batch_limit = 10;
    let backend = cloud::cloudflare(&cf.api_url(), 10);
    {
        let mut state = cf.state();
        state.pass_writes = 1;
        state.throttle_writes = 1;
    }
    let started = std::time::Instant::now();
    let synced = sync(&backend, "example.dev", "app.example.dev", 60, &answers(25))
        .await
        .expect("create despite a 429");
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(1),
        "Retry-After honoured"
    );
    assert_eq!(synced.applied.write_calls, 3 + 1);
    let records = cf.records("app.example.dev");
    let unique: BTreeSet<&str> = records.iter().map(|r| r.content.as_str()).collect();
    assert_eq!(
        (records.len(), unique.len()),
        (25, 25),
        "nothing duplicated"
    );
    let again = sync(&backend, "example.dev", "app.example.dev", 60, &answers(25))
        .await
        .expect("no change");
    assert_eq!(again.applied.write_calls, 0);
}

#[test]
fn cloudflare_stand_in_batches_run_in_order_as_one_transaction() {
    let cf = Cloudflare::start(cloud::CLOUDFLARE_TOKEN, &["example.dev"]);
    cf.add("example.dev", "a.example.dev", "A", "192.0.2.1", None);
    cf.add("example.dev", "b.example.dev", "A", "192.0.2.2", None);
    let zone = cf.zone_id("example.dev");
    let url = format!("{}/zones/{zone}/dns_records/batch", cf.api_url());
    let auth = format!("Bearer {}", cloud::CLOUDFLARE_TOKEN);
    let id_of = |name: &str| cf.records(name)[0].id.clone();
    let post = |body: Value| {
        let (status, text) = http(
            "POST",
            &url,
            &[("Authorization", &auth)],
            Some(&body.to_string()),
        );
        (
            status,
            serde_json::from_str::<Value>(&text).unwrap_or(Value::Null),
        )
    };

    // Deletes run before posts: re-creating a deleted record in one batch works.
    let (status, body) = post(json!({
        "deletes": [{ "id": id_of("a.example.dev") }],
        "posts": [{ "name": "a.example.dev", "type": "A", "content": "192.0.2.1", "ttl": 60 }],
    }));
    assert_eq!(status, 200, "{body}");
    assert_eq!(cf.records("a.example.dev").len(), 1);

    // An identical post fails the whole batch: the patch before it is undone.
    let (status, body) = post(json!({
        "patches": [{ "id": id_of("b.example.dev"), "content": "192.0.2.22" }],
        "posts": [{ "name": "a.example.dev", "type": "A", "content": "192.0.2.1", "ttl": 60 }],
    }));
    assert_eq!(status, 400);
    assert_eq!(body["errors"][0]["code"], 81058, "{body}");
    assert_eq!(cf.records("b.example.dev")[0].content, "192.0.2.2");

    // Too many operations for the plan, bad TTLs and bad tokens are refused.
    cf.state().batch_limit = 1;
    let (status, _) = post(json!({ "deletes": [{ "id": "x" }, { "id": "y" }] }));
    assert_eq!(status, 400);
    cf.state().batch_limit = 200;
    let (status, body) = post(json!({
        "posts": [{ "name": "c.example.dev", "type": "A", "content": "192.0.2.3", "ttl": 30 }],
    }));
    assert_eq!(
        (status, body["errors"][0]["code"].clone()),
        (400, json!(9003))
    );
    let (status, body) = http(
        "GET",
        &format!("{}/zones", cf.api_url()),
        &[("Authorization", "Bearer wrong")],
        None,
    );
    assert_eq!(status, 403, "{body}");

    // Listings page through `page_max` records at a time.
    for i in 0..12 {
        cf.add(
            "example.dev",
            "many.example.dev",
            "A",
            &format!("192.0.2.{}", 100 + i),
            None,
        );
    }
    cf.state().page_max = 5;
    let (status, body) = http(
        "GET",
        &format!(
            "{}/zones/{zone}/dns_records?name=many.example.dev&per_page=500&page=3",
            cf.api_url()
        ),
        &[("Authorization", &auth)],
        None,
    );
    assert_eq!(status, 200);
    let page: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(page["result"].as_array().map(Vec::len), Some(2));
    assert_eq!(page["result_info"]["total_pages"], 3);
}

// ---- AliDNS ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alidns_writes_only_what_changed_one_call_per_record() {
    let ali = AliDns::start(cloud::ALIDNS_KEY_ID, cloud::ALIDNS_SECRET, &["example.cn"]);
    ali.add("example.cn", "www", "A", "203.0.113.7");
    let backend = cloud::alidns(&ali.endpoint());
    let nodes = answers(10);

    let synced = sync(&backend, "example.cn", "app.example.cn", 600, &nodes)
        .await
        .expect("create");
    assert_eq!(synced.counts, (11, 0, 0));
    // 11 adds, then 10 weights of 100 after switching weighted round robin on.
    assert_eq!(synced.applied.write_calls, 11 + 1 + 10);
    let records = ali.records("app.example.cn");
    assert_eq!(records.len(), 10);
    assert!(
        records
            .iter()
            .all(|r| r.weight == 100 && r.enabled && r.ttl == 600)
    );
    assert!(ali.state().slb.contains("app.example.cn"));

    let before = ali.state().write_calls;
    let synced = sync(&backend, "example.cn", "app.example.cn", 600, &nodes)
        .await
        .expect("no change");
    assert_eq!((synced.counts, synced.applied.write_calls), ((0, 0, 0), 0));
    assert_eq!(ali.state().write_calls, before);

    // Four weights change: four UpdateDNSSLBWeight calls, no UpdateDomainRecord.
    ali.state().write_log.clear();
    let synced = sync(
        &backend,
        "example.cn",
        "app.example.cn",
        600,
        &changed(DnsBackendKind::Alidns, &nodes, 4),
    )
    .await
    .expect("reweigh");
    assert_eq!((synced.counts, synced.applied.write_calls), ((0, 4, 0), 4));
    assert_eq!(ali.state().write_log, vec!["UpdateDNSSLBWeight"; 4]);

    // Two nodes replaced by two others: two updates in place, weights kept.
    ali.state().write_log.clear();
    let replaced = cloud::replaced(&changed(DnsBackendKind::Alidns, &nodes, 4)[..], 2);
    let synced = sync(&backend, "example.cn", "app.example.cn", 600, &replaced)
        .await
        .expect("replace");
    assert_eq!(synced.counts, (2, 0, 2));
    assert_eq!(ali.state().write_log, vec!["UpdateDomainRecord"; 2]);
    assert_eq!(ali.records("app.example.cn").len(), 10);

    // A weight of 0 is a disabled record; back again enables it.
    let mut zero = nodes.clone();
    zero[0].weight = 0;
    let synced = sync(&backend, "example.cn", "app.example.cn", 600, &zero)
        .await
        .expect("disable");
    assert!(synced.applied.write_calls >= 1);
    let first = ali
        .records("app.example.cn")
        .into_iter()
        .find(|r| r.value == "198.18.0.1");
    assert_eq!(first.map(|r| r.enabled), Some(false));

    // Destroy leaves the foreign record.
    sync(&backend, "example.cn", "app.example.cn", 600, &[])
        .await
        .expect("destroy");
    assert!(ali.records("app.example.cn").is_empty());
    assert!(ali.records("_neutral-a.app.example.cn").is_empty());
    assert_eq!(ali.records("www.example.cn").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alidns_throttling_mid_apply_is_retried_without_duplicates() {
    let ali = AliDns::start(cloud::ALIDNS_KEY_ID, cloud::ALIDNS_SECRET, &["example.cn"]);
    let backend = cloud::alidns(&ali.endpoint());
    {
        let mut state = ali.state();
        state.pass_writes = 3;
        state.throttle_writes = 2;
    }
    let nodes = answers(6);
    let synced = sync(&backend, "example.cn", "app.example.cn", 600, &nodes)
        .await
        .expect("create despite throttling");
    assert_eq!(synced.applied.write_calls, 7 + 1 + 6 + 2);
    let records = ali.records("app.example.cn");
    let unique: BTreeSet<&str> = records.iter().map(|r| r.value.as_str()).collect();
    assert_eq!((records.len(), unique.len()), (6, 6), "nothing duplicated");
    let again = sync(&backend, "example.cn", "app.example.cn", 600, &nodes)
        .await
        .expect("no change");
    assert_eq!(again.applied.write_calls, 0);
}

#[test]
fn alidns_stand_in_checks_signature_v1_like_the_reference() {
    use std::collections::BTreeMap;
    // The reference's own example, verified by the stand-in's signer.
    let params: BTreeMap<String, String> = [
        ("Format", "XML"),
        ("AccessKeyId", "testid"),
        ("Action", "DescribeDomainRecords"),
        ("SignatureMethod", "HMAC-SHA1"),
        ("DomainName", "example.com"),
        ("SignatureVersion", "1.0"),
        ("SignatureNonce", "f59ed6a9-83fc-473b-9cc6-99c95df3856e"),
        ("Version", "2015-01-09"),
        ("Timestamp", "2016-03-24T16:41:54Z"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    assert_eq!(
        neutral_e2e::cloud::alidns::signature(&params, "testsecret"),
        "uRpHwaSEt3J+6KQD//svCh/x+pI="
    );

    let ali = AliDns::start(cloud::ALIDNS_KEY_ID, cloud::ALIDNS_SECRET, &["example.cn"]);
    let call = |secret: &str, nonce: &str| {
        let mut params: BTreeMap<String, String> = [
            ("Action", "DescribeSubDomainRecords"),
            ("SubDomain", "www.example.cn"),
            ("Format", "JSON"),
            ("Version", "2015-01-09"),
            ("AccessKeyId", cloud::ALIDNS_KEY_ID),
            ("SignatureMethod", "HMAC-SHA1"),
            ("SignatureVersion", "1.0"),
            ("SignatureNonce", nonce),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        params.insert(
            "Timestamp".into(),
            humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        );
        let signature =
            terraform_provider_neutral::backend::alidns::signature("GET", &params, secret);
        params.insert("Signature".into(), signature);
        let query = terraform_provider_neutral::backend::alidns::canonical_query(&params);
        let query = format!(
            "{query}&Signature={}",
            terraform_provider_neutral::backend::alidns::percent_encode(&params["Signature"])
        );
        let (status, body) = http("GET", &format!("{}/?{query}", ali.endpoint()), &[], None);
        (
            status,
            serde_json::from_str::<Value>(&body).unwrap_or(Value::Null),
        )
    };
    let (status, body) = call(cloud::ALIDNS_SECRET, "n-1");
    assert_eq!(status, 200, "{body}");
    let (status, body) = call(cloud::ALIDNS_SECRET, "n-1");
    assert_eq!(
        (status, body["Code"].clone()),
        (400, json!("SignatureNonceUsed"))
    );
    let (status, body) = call("wrong-secret", "n-2");
    assert_eq!(
        (status, body["Code"].clone()),
        (400, json!("SignatureDoesNotMatch"))
    );
}

// ---- through Terraform ----

const REGIONS: [(&str, &[u8]); 2] = [
    (
        "platform-config/regions/jp.yaml",
        b"name: jp\nprovider: local\nmin_nodes: 1\nmax_nodes: 3\nbase_weight: 100\nstate: up\nfailover: []\n",
    ),
    (
        "platform-config/regions/sg.yaml",
        b"name: sg\nprovider: local\nmin_nodes: 1\nmax_nodes: 3\nbase_weight: 100\nstate: up\nfailover: []\n",
    ),
];

const NODES: [(&str, &str); 3] = [
    ("jp", "127.0.0.11"),
    ("jp", "127.0.0.12"),
    ("sg", "127.0.0.21"),
];

/// The provider's `alidns` block for the stand-in `ali`.
fn alidns_block(ali: &AliDns) -> String {
    format!(
        "  alidns {{\n    endpoint          = \"{}\"\n    access_key_id     = \"{}\"\n    \
         access_key_secret = \"{}\"\n  }}",
        ali.endpoint(),
        cloud::ALIDNS_KEY_ID,
        cloud::ALIDNS_SECRET
    )
}

fn config(cp: &ControlPlane, block: &str, domain: &str, zone: &str, dns: &str, ttl: u32) -> String {
    format!(
        r#"terraform {{
  required_providers {{
    neutral = {{ source = "neutral/neutral" }}
  }}
}}

variable "sg" {{
  type    = number
  default = 50
}}

provider "neutral" {{
  endpoint = "{endpoint}"
  token    = "{ADMIN_TOKEN}"
{block}
}}

resource "neutral_gtm_record" "app" {{
  domain  = "{domain}"
  zone    = "{zone}"
  dns     = "{dns}"
  ttl     = {ttl}
  regions = {{ jp = 100, sg = var.sg }}
}}
"#,
        endpoint = cp.url,
    )
}

fn state_values(tf: &Terraform) -> Value {
    let shown = tf.expect(&["show", "-json", "-no-color"], 0);
    let state: Value = serde_json::from_str(&shown).expect("state JSON");
    state["values"]["root_module"]["resources"]
        .as_array()
        .and_then(|all| {
            all.iter()
                .find(|r| r["address"] == "neutral_gtm_record.app")
        })
        .map(|r| r["values"].clone())
        .expect("neutral_gtm_record.app in the state")
}

/// What a backend looks like to the scenario.
struct Backend<'a> {
    /// The record lines of the domain (`A <address> …`), sorted.
    lines: &'a dyn Fn() -> Vec<String>,
    /// Whether this deployment's ownership marker is there.
    marked: &'a dyn Fn() -> bool,
    /// Changes the record of 127.0.0.21 to 203.0.113.9 by hand.
    edit: &'a dyn Fn(),
    /// The foreign record's lines, which must never change.
    foreign: &'a dyn Fn() -> Vec<String>,
}

/// Create, weight change, drift by hand, import, node removal, destroy.
fn acceptance(tf: &Terraform, cp: &ControlPlane, nodes: &Nodes, id: &str, backend: &Backend<'_>) {
    let foreign = (backend.foreign)();
    assert!(!foreign.is_empty(), "a foreign record to keep");
    let with = |args: &[&'static str]| -> Vec<&'static str> {
        let mut all = args.to_vec();
        all.extend(["-no-color", "-var", "sg=100"]);
        all
    };

    // Create.
    let plan = tf.expect(&["plan", "-no-color"], 0);
    assert!(
        plan.contains("neutral_gtm_record.app will be created"),
        "{plan}"
    );
    assert!(plan.contains("jp: 100 × min(1, 2/1 ready) = 100"), "{plan}");
    tf.expect(&["apply", "-auto-approve", "-no-color"], 0);
    tf.expect(&["plan", "-detailed-exitcode", "-no-color"], 0);
    let lines = (backend.lines)();
    assert_eq!(lines.len(), 3, "{lines:?}");
    for address in ["127.0.0.11", "127.0.0.12", "127.0.0.21"] {
        assert!(
            lines.iter().any(|l| l.contains(address)),
            "{address} in {lines:?}"
        );
    }
    assert!((backend.marked)(), "marked as this deployment's");

    // Weight change.
    let plan = tf.expect(&with(&["plan", "-detailed-exitcode"]), 2);
    assert!(plan.contains("\"sg\" = 50 -> 100"), "{plan}");
    tf.expect(&with(&["apply", "-auto-approve"]), 0);
    tf.expect(&with(&["plan", "-detailed-exitcode"]), 0);
    let reweighed = (backend.lines)();

    // Drift by hand.
    (backend.edit)();
    let plan = tf.expect(&with(&["plan", "-detailed-exitcode"]), 2);
    assert!(plan.contains("203.0.113.9"), "the hand edit shows:\n{plan}");
    assert!(plan.contains("will be updated in-place"), "{plan}");
    tf.expect(&with(&["apply", "-auto-approve"]), 0);
    tf.expect(&with(&["plan", "-detailed-exitcode"]), 0);
    assert_eq!((backend.lines)(), reweighed, "the drift was put right");

    // Import round trip.
    let before = state_values(tf);
    tf.expect(&["state", "rm", "-no-color", "neutral_gtm_record.app"], 0);
    tf.expect(
        &[
            "import",
            "-no-color",
            "-var",
            "sg=100",
            "neutral_gtm_record.app",
            id,
        ],
        0,
    );
    assert_eq!(
        before,
        state_values(tf),
        "import gives back the applied state"
    );
    tf.expect(&with(&["plan", "-detailed-exitcode"]), 0);

    // Node removal.
    let drained = &nodes.nodes[1].0;
    let (status, body) = cp.admin("POST", &format!("/nodes/{drained}/drain"), Some("{}"));
    assert_eq!(status, 200, "drain: {body}");
    let plan = tf.expect(&with(&["plan", "-detailed-exitcode"]), 2);
    assert!(plan.contains(&format!("drained {drained}")), "{plan}");
    tf.expect(&with(&["apply", "-auto-approve"]), 0);
    tf.expect(&with(&["plan", "-detailed-exitcode"]), 0);
    let lines = (backend.lines)();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(!lines.iter().any(|l| l.contains("127.0.0.12")), "{lines:?}");

    // Destroy.
    tf.expect(&with(&["destroy", "-auto-approve"]), 0);
    assert!((backend.lines)().is_empty(), "no record of ours left");
    assert!(!(backend.marked)(), "the marker went with them");
    assert_eq!(
        (backend.foreign)(),
        foreign,
        "the foreign record is untouched"
    );
}

#[test]
fn gtm_record_lifecycle_in_route53() {
    let Some(terraform) = terraform_or_skip("gtm_record_lifecycle_in_route53") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(moto) = moto_or_skip("gtm_record_lifecycle_in_route53", &dir.path().join("moto"))
    else {
        return;
    };
    let zone_id = moto.create_zone("example.net");
    moto.change(
        &zone_id,
        "CREATE",
        "<ResourceRecordSet><Name>www.example.net.</Name><Type>A</Type><TTL>300</TTL>\
         <ResourceRecords><ResourceRecord><Value>198.51.100.1</Value></ResourceRecord>\
         </ResourceRecords></ResourceRecordSet>",
    );
    let cp = ControlPlane::start(&dir.path().join("cp"), &REGIONS);
    let nodes = Nodes::start(&cp, &NODES);
    let tf = Terraform::new(terraform, &dir.path().join("tf"));
    let block = format!(
        "  route53 {{\n    endpoint          = \"{}\"\n    access_key_id     = \"{}\"\n    \
         secret_access_key = \"{}\"\n    wait_for_sync     = true\n  }}",
        moto.url,
        cloud::AWS_ACCESS_KEY_ID,
        cloud::AWS_SECRET_ACCESS_KEY
    );
    tf.write(
        "main.tf",
        &config(&cp, &block, "app.example.net", "example.net", "route53", 30),
    );
    let lines = || moto.lines(&zone_id, "app.example.net");
    let marked = || {
        moto.lines(&zone_id, "_neutral-a.app.example.net")
            .iter()
            .any(|l| l.contains("heritage=neutral,owner=neutral"))
    };
    let edit = || {
        let set = moto
            .record_sets(&zone_id)
            .into_iter()
            .find(|s| {
                s.child("ResourceRecords")
                    .and_then(|r| r.child("ResourceRecord"))
                    .and_then(|r| r.text_of("Value"))
                    == Some("127.0.0.21")
            })
            .expect("sg's record set");
        let xml = set.to_xml().replace("127.0.0.21", "203.0.113.9");
        moto.change(&zone_id, "UPSERT", &xml);
    };
    let foreign = || moto.lines(&zone_id, "www.example.net");
    acceptance(
        &tf,
        &cp,
        &nodes,
        "example.net/app.example.net/A/route53",
        &Backend {
            lines: &lines,
            marked: &marked,
            edit: &edit,
            foreign: &foreign,
        },
    );
}

#[test]
fn gtm_record_lifecycle_in_cloudflare() {
    let Some(terraform) = terraform_or_skip("gtm_record_lifecycle_in_cloudflare") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let cf = Cloudflare::start(cloud::CLOUDFLARE_TOKEN, &["example.dev"]);
    // A foreign record at the very name the resource manages.
    cf.add(
        "example.dev",
        "app.example.dev",
        "A",
        "198.51.100.1",
        Some("ops: legacy"),
    );
    let cp = ControlPlane::start(&dir.path().join("cp"), &REGIONS);
    let nodes = Nodes::start(&cp, &NODES);
    let tf = Terraform::new(terraform, &dir.path().join("tf"));
    let block = format!(
        "  cloudflare {{\n    api_url   = \"{}\"\n    api_token = \"{}\"\n  }}",
        cf.api_url(),
        cloud::CLOUDFLARE_TOKEN
    );
    tf.write(
        "main.tf",
        &config(
            &cp,
            &block,
            "app.example.dev",
            "example.dev",
            "cloudflare",
            60,
        ),
    );
    let lines = || {
        cf.records("app.example.dev")
            .iter()
            .filter(|r| r.comment.as_deref() == Some("heritage=neutral,owner=neutral"))
            .map(|r| format!("{} {}", r.rtype, r.content))
            .collect::<Vec<_>>()
    };
    let marked = || !cf.records("_neutral-a.app.example.dev").is_empty();
    let edit = || cf.edit("app.example.dev", "127.0.0.21", "203.0.113.9");
    let foreign = || {
        cf.records("app.example.dev")
            .iter()
            .filter(|r| r.comment.as_deref() == Some("ops: legacy"))
            .map(|r| format!("{} {}", r.rtype, r.content))
            .collect::<Vec<_>>()
    };
    acceptance(
        &tf,
        &cp,
        &nodes,
        "example.dev/app.example.dev/A/cloudflare",
        &Backend {
            lines: &lines,
            marked: &marked,
            edit: &edit,
            foreign: &foreign,
        },
    );
}

#[test]
fn gtm_record_lifecycle_in_alidns() {
    let Some(terraform) = terraform_or_skip("gtm_record_lifecycle_in_alidns") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let ali = AliDns::start(cloud::ALIDNS_KEY_ID, cloud::ALIDNS_SECRET, &["example.cn"]);
    ali.add("example.cn", "www", "A", "198.51.100.1");
    let cp = ControlPlane::start(&dir.path().join("cp"), &REGIONS);
    let nodes = Nodes::start(&cp, &NODES);
    let tf = Terraform::new(terraform, &dir.path().join("tf"));
    let block = alidns_block(&ali);
    tf.write(
        "main.tf",
        &config(&cp, &block, "app.example.cn", "example.cn", "alidns", 600),
    );
    let lines = || {
        ali.records("app.example.cn")
            .iter()
            .map(|r| {
                format!(
                    "{} {} weight={} enabled={}",
                    r.rtype, r.value, r.weight, r.enabled
                )
            })
            .collect::<Vec<_>>()
    };
    let marked = || !ali.records("_neutral-a.app.example.cn").is_empty();
    let edit = || ali.edit("app.example.cn", "127.0.0.21", "203.0.113.9");
    let foreign = || {
        ali.records("www.example.cn")
            .iter()
            .map(|r| format!("{} {}", r.rtype, r.value))
            .collect::<Vec<_>>()
    };
    acceptance(
        &tf,
        &cp,
        &nodes,
        "example.cn/app.example.cn/A/alidns",
        &Backend {
            lines: &lines,
            marked: &marked,
            edit: &edit,
            foreign: &foreign,
        },
    );
}

/// `neutral_dns_backend_calls_total{backend, call, result}`, read from the
/// control plane's `/metrics`: every series of the family.
fn backend_calls(cp: &ControlPlane) -> std::collections::BTreeMap<String, u64> {
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let (status, text) = http(
        "GET",
        &format!("{}/metrics", cp.url),
        &[("Authorization", &auth)],
        None,
    );
    assert_eq!(status, 200, "GET /metrics: {text}");
    text.lines()
        .filter_map(|l| l.strip_prefix("neutral_dns_backend_calls_total{"))
        .filter_map(|l| {
            let (labels, value) = l.split_once("} ")?;
            Some((labels.to_owned(), value.trim().parse().ok()?))
        })
        .collect()
}

#[test]
fn requests_to_a_dns_backend_are_counted_by_the_control_plane_throttled_ones_too() {
    let Some(terraform) = terraform_or_skip("requests_to_a_dns_backend_are_counted") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let ali = AliDns::start(cloud::ALIDNS_KEY_ID, cloud::ALIDNS_SECRET, &["example.cn"]);
    let cp = ControlPlane::start(&dir.path().join("cp"), &REGIONS);
    let _nodes = Nodes::start(&cp, &NODES);
    let before = backend_calls(&cp);
    let write = |result: &str| format!("backend=\"alidns\",call=\"write\",result=\"{result}\"");
    let read = |result: &str| format!("backend=\"alidns\",call=\"read\",result=\"{result}\"");
    assert_eq!(before.get(&write("throttled")), Some(&0), "listed at 0");
    assert_eq!(before.get(&read("ok")), None, "no read yet");
    {
        let mut state = ali.state();
        state.pass_writes = 1;
        state.throttle_writes = 2;
    }
    let tf = Terraform::new(terraform, &dir.path().join("tf"));
    let block = alidns_block(&ali);
    tf.write(
        "main.tf",
        &config(&cp, &block, "app.example.cn", "example.cn", "alidns", 600),
    );
    tf.expect(&["apply", "-auto-approve", "-no-color"], 0);
    tf.expect(&["plan", "-detailed-exitcode", "-no-color"], 0);
    let (writes, reads) = {
        let state = ali.state();
        (state.write_calls, state.read_calls)
    };
    assert_eq!(
        ali.records("app.example.cn").len(),
        3,
        "the records are there"
    );
    let after = backend_calls(&cp);
    let count = |key: String| after.get(&key).copied().unwrap_or(0);
    assert_eq!(count(write("throttled")), 2, "{after:?}");
    assert_eq!(
        count(write("ok")),
        u64::try_from(writes - 2).expect("count"),
        "every write the stand-in answered, as the provider reported it: {after:?}"
    );
    assert_eq!(count(write("error")), 0, "{after:?}");
    assert_eq!(
        count(read("ok")),
        u64::try_from(reads).expect("count"),
        "every read (refresh, listing): {after:?}"
    );
    assert!(reads > 0 && writes > 3, "reads {reads}, writes {writes}");

    // A request refused for good is an error: with a wrong secret, the
    // refresh's first read is refused and the plan fails.
    tf.write(
        "main.tf",
        &config(
            &cp,
            &block.replace(cloud::ALIDNS_SECRET, "not-the-secret"),
            "app.example.cn",
            "example.cn",
            "alidns",
            600,
        ),
    );
    tf.expect(&["plan", "-no-color"], 1);
    let last = backend_calls(&cp);
    assert_eq!(
        last.get(&read("error")).copied(),
        Some(1),
        "the refused read, reported though the call failed: {last:?}"
    );
    assert_eq!(
        last.get(&write("throttled")),
        after.get(&write("throttled"))
    );
}
