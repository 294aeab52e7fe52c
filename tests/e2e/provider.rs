//! Acceptance tests of `neutral_gtm_record` with real Terraform, a real
//! control plane and a real PowerDNS, one scenario per DNS backend:
//! plan → apply → an empty plan → change a weight → apply → a hand edit in
//! the backend is drift in the next plan → import round trip → destroy
//! leaves no owned record and every foreign record in place.
//!
//! Terraform is `TERRAFORM_BIN`, else `terraform`/`tofu` on PATH, else the
//! one `scripts/setup` installs; without any, the tests say so loudly and
//! pass without running.

use neutral_e2e::services::{ControlPlane, Nodes, PowerDns, Terraform, rrsets, terraform_or_skip};
use serde_json::Value;

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

/// Git declares app.example.com (embedded, jp 100 / sg 50), so the
/// embedded scenario's plan uses the control plane's own computation.
const GTM_APP: (&str, &[u8]) = (
    "platform-config/gtm/app.yaml",
    b"domain: app.example.com\nzone: example.com\ntype: A\nttl: 30\ndns: embedded\n\
      min_ready_nodes: 1\nregions: { jp: 100, sg: 50 }\nall_down: fail_open\n",
);

const NODES: [(&str, &str); 3] = [
    ("jp", "127.0.0.11"),
    ("jp", "127.0.0.12"),
    ("sg", "127.0.0.21"),
];

fn config(cp: &ControlPlane, extra_provider: &str, domain: &str, zone: &str, dns: &str) -> String {
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
  token    = "{token}"
{extra_provider}
}}

resource "neutral_gtm_record" "app" {{
  domain  = "{domain}"
  zone    = "{zone}"
  dns     = "{dns}"
  regions = {{ jp = 100, sg = var.sg }}
}}

data "neutral_region" "jp" {{
  name = "jp"
}}

output "jp_ready" {{
  value = data.neutral_region.jp.ready
}}
"#,
        endpoint = cp.url,
        token = neutral_e2e::services::ADMIN_TOKEN,
    )
}

/// The record's attribute values in the state.
fn state_values(tf: &Terraform) -> Value {
    let shown = tf.expect(&["show", "-json", "-no-color"], 0);
    let state: Value = serde_json::from_str(&shown).expect("state JSON");
    let resources = state["values"]["root_module"]["resources"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    resources
        .into_iter()
        .find(|r| r["address"] == "neutral_gtm_record.app")
        .map(|r| r["values"].clone())
        .expect("neutral_gtm_record.app in the state")
}

/// Whether an rrset carries neutral's ownership comment.
fn owned(rrset: &Value) -> bool {
    rrset["comments"]
        .as_array()
        .is_some_and(|c| c.iter().any(|c| c["account"] == "neutral"))
}

/// The steps both backends share, from the first plan to the import round
/// trip. `records` reads the backend's rrsets of the domain; `edit` changes
/// them by hand.
fn lifecycle(
    tf: &Terraform,
    domain: &str,
    id: &str,
    records: &dyn Fn() -> Vec<Value>,
    edit: &dyn Fn(),
    after_weight_change: &dyn Fn(&[Value]),
) {
    // Plan: the answers, weights and reasons from live health.
    let plan = tf.expect(&["plan", "-no-color"], 0);
    assert!(
        plan.contains("neutral_gtm_record.app will be created"),
        "{plan}"
    );
    assert!(
        plan.contains("jp: 100 × min(1, 2/1 ready) = 100"),
        "reasons in the plan:\n{plan}"
    );
    assert!(
        plan.contains("\"A 127.0.0.21"),
        "records in the plan:\n{plan}"
    );

    // Apply, then nothing left to do.
    tf.expect(&["apply", "-auto-approve", "-no-color"], 0);
    tf.expect(&["plan", "-detailed-exitcode", "-no-color"], 0);
    let written = records();
    assert_eq!(written.len(), 1, "one rrset: {written:?}");
    assert!(owned(&written[0]), "marked as neutral's: {written:?}");
    let text = serde_json::to_string(&written).expect("json");
    for address in ["127.0.0.11", "127.0.0.12", "127.0.0.21"] {
        assert!(text.contains(address), "{address} in {text}");
    }

    // Change a weight: the plan says what changes and why.
    let plan = tf.expect(
        &["plan", "-detailed-exitcode", "-no-color", "-var", "sg=100"],
        2,
    );
    assert!(
        plan.contains("\"sg\" = 50 -> 100"),
        "weight change in the plan:\n{plan}"
    );
    assert!(plan.contains("sg: 100 × min(1, 1/1 ready) = 100"), "{plan}");
    tf.expect(
        &["apply", "-auto-approve", "-no-color", "-var", "sg=100"],
        0,
    );
    tf.expect(
        &["plan", "-detailed-exitcode", "-no-color", "-var", "sg=100"],
        0,
    );
    after_weight_change(&records());

    // A hand edit in the backend is drift.
    edit();
    let plan = tf.expect(
        &["plan", "-detailed-exitcode", "-no-color", "-var", "sg=100"],
        2,
    );
    assert!(
        plan.contains("203.0.113.9"),
        "the hand edit shows in the plan:\n{plan}"
    );
    assert!(plan.contains("will be updated in-place"), "{plan}");
    tf.expect(
        &["apply", "-auto-approve", "-no-color", "-var", "sg=100"],
        0,
    );
    tf.expect(
        &["plan", "-detailed-exitcode", "-no-color", "-var", "sg=100"],
        0,
    );
    assert!(
        !serde_json::to_string(&records())
            .expect("json")
            .contains("203.0.113.9")
    );

    // Import round trip: the imported state is the applied one.
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
    let after = state_values(tf);
    assert_eq!(
        before, after,
        "import of {domain} gives back the applied state"
    );
    tf.expect(
        &["plan", "-detailed-exitcode", "-no-color", "-var", "sg=100"],
        0,
    );

    // Destroy.
    tf.expect(
        &["destroy", "-auto-approve", "-no-color", "-var", "sg=100"],
        0,
    );
    let left = records();
    assert!(
        left.iter().all(|r| !owned(r)),
        "no owned record left: {left:?}"
    );
}

#[test]
fn gtm_record_lifecycle_in_the_embedded_backend() {
    let Some(terraform) = terraform_or_skip("gtm_record_lifecycle_in_the_embedded_backend") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let cp = ControlPlane::start(&dir.path().join("cp"), &[REGIONS[0], REGIONS[1], GTM_APP]);
    let nodes = Nodes::start(&cp, &NODES);
    // A record someone made by hand in the same zone, before Terraform.
    let (status, body) = cp.admin(
        "POST",
        "/dns/zones",
        Some(r#"{"name":"example.com.","kind":"Native","nameservers":["ns1.example.com."]}"#),
    );
    assert_eq!(status, 201, "{body}");
    let (status, body) = cp.admin(
        "PATCH",
        "/dns/zones/example.com.",
        Some(r#"{"rrsets":[{"name":"www.example.com.","type":"A","ttl":300,"changetype":"REPLACE","records":[{"content":"198.51.100.1","disabled":false}]}]}"#),
    );
    assert_eq!(status, 204, "{body}");

    let tf = Terraform::new(terraform, &dir.path().join("tf"));
    tf.write(
        "main.tf",
        &config(&cp, "", "app.example.com", "example.com", "embedded"),
    );
    tf.write(
        "domain.tf",
        r#"data "neutral_domain" "app" {
  domain = "app.example.com"
}

output "app_weights" {
  value = data.neutral_domain.app.effective_weights
}
"#,
    );
    let records = || {
        rrsets(&cp.zone("example.com"), "app.example.com")
            .into_iter()
            .cloned()
            .collect::<Vec<_>>()
    };
    let edit = || {
        let (status, body) = cp.admin(
            "PATCH",
            "/dns/zones/example.com.",
            Some(r#"{"rrsets":[{"name":"app.example.com.","type":"A","ttl":30,"changetype":"REPLACE","records":[{"content":"203.0.113.9","disabled":false,"weight":1}]}]}"#),
        );
        assert_eq!(status, 204, "hand edit: {body}");
    };
    let after_weight_change = |rrsets: &[Value]| {
        let sg = rrsets[0]["records"]
            .as_array()
            .and_then(|r| r.iter().find(|r| r["content"] == "127.0.0.21"))
            .cloned()
            .expect("sg's node");
        assert_eq!(
            sg["weight"], 100,
            "sg's node carries its region's new weight"
        );
    };
    lifecycle(
        &tf,
        "app.example.com",
        "example.com/app.example.com/A",
        &records,
        &edit,
        &after_weight_change,
    );

    // Live health: draining a node is a planned change with its reason.
    tf.expect(&["apply", "-auto-approve", "-no-color"], 0);

    // The data sources read the control plane as it is.
    let outputs: Value =
        serde_json::from_str(&tf.expect(&["output", "-json", "-no-color"], 0)).expect("outputs");
    assert_eq!(outputs["jp_ready"]["value"], 2, "{outputs}");
    assert_eq!(outputs["app_weights"]["value"]["jp"], 100, "{outputs}");
    assert_eq!(outputs["app_weights"]["value"]["sg"], 50, "{outputs}");

    let drained = &nodes.nodes[1].0;
    let (status, body) = cp.admin("POST", &format!("/nodes/{drained}/drain"), Some("{}"));
    assert_eq!(status, 200, "drain: {body}");
    let plan = tf.expect(&["plan", "-detailed-exitcode", "-no-color"], 2);
    assert!(
        plan.contains(&format!("drained {drained}")),
        "the reason names the drained node:\n{plan}"
    );
    assert!(
        plan.contains("- \"A 127.0.0.12 weight=50\""),
        "its record goes:\n{plan}"
    );
    tf.expect(&["destroy", "-auto-approve", "-no-color"], 0);

    // An argument known only after apply: the plan leaves the answers
    // unknown, the apply computes and writes them, and all is then stable.
    let later = config(&cp, "", "app.example.com", "example.com", "embedded")
        .replace("sg = var.sg", "sg = terraform_data.sg.output")
        + "\nresource \"terraform_data\" \"sg\" {\n  input = 50\n}\n";
    tf.write("main.tf", &later);
    let plan = tf.expect(&["plan", "-no-color"], 0);
    assert!(
        plan.contains("answers           = (known after apply)"),
        "{plan}"
    );
    tf.expect(&["apply", "-auto-approve", "-no-color"], 0);
    tf.expect(&["plan", "-detailed-exitcode", "-no-color"], 0);
    assert_eq!(rrsets(&cp.zone("example.com"), "app.example.com").len(), 1);
    tf.expect(&["destroy", "-auto-approve", "-no-color"], 0);

    let zone = cp.zone("example.com");
    assert!(rrsets(&zone, "app.example.com").is_empty(), "{zone}");
    let www = rrsets(&zone, "www.example.com");
    assert_eq!(www.len(), 1, "the foreign record is untouched: {zone}");
    assert_eq!(www[0]["records"][0]["content"], "198.51.100.1");
}

#[test]
fn gtm_record_lifecycle_in_powerdns() {
    let Some(terraform) = terraform_or_skip("gtm_record_lifecycle_in_powerdns") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    // Git declares no policy for web.example.org: the provider computes the
    // weights itself from the control plane's regions and nodes.
    let cp = ControlPlane::start(&dir.path().join("cp"), &[REGIONS[0], REGIONS[1]]);
    let _nodes = Nodes::start(&cp, &NODES);
    let pdns = PowerDns::start(&dir.path().join("pdns"));
    let (status, body) = pdns.request(
        "POST",
        "/api/v1/servers/localhost/zones",
        Some(
            r#"{"name":"example.org.","kind":"Native","nameservers":["ns1.example.org."],
                "rrsets":[{"name":"www.example.org.","type":"A","ttl":300,"changetype":"REPLACE",
                           "records":[{"content":"198.51.100.1","disabled":false}]}]}"#,
        ),
    );
    assert_eq!(status, 201, "create zone: {body}");

    let tf = Terraform::new(terraform, &dir.path().join("tf"));
    let powerdns_block = format!(
        "  powerdns {{\n    url     = \"{}\"\n    api_key = \"{}\"\n  }}",
        pdns.api,
        neutral_e2e::services::PDNS_API_KEY
    );
    tf.write(
        "main.tf",
        &config(
            &cp,
            &powerdns_block,
            "web.example.org",
            "example.org",
            "powerdns",
        ),
    );
    let records = || {
        rrsets(&pdns.zone("example.org"), "web.example.org")
            .into_iter()
            .cloned()
            .collect::<Vec<_>>()
    };
    let edit = || {
        let (status, body) = pdns.request(
            "PATCH",
            "/api/v1/servers/localhost/zones/example.org.",
            Some(r#"{"rrsets":[{"name":"web.example.org.","type":"LUA","ttl":30,"changetype":"REPLACE","records":[{"content":"A \"pickwrandom({{1,'203.0.113.9'}})\"","disabled":false}]}]}"#),
        );
        assert_eq!(status, 204, "hand edit: {body}");
    };
    let after_weight_change = |rrsets: &[Value]| {
        // jp's two nodes 50 each, sg's one node 100: weighted, so a LUA record.
        assert_eq!(rrsets.len(), 1, "{rrsets:?}");
        assert_eq!(rrsets[0]["type"], "LUA");
        assert_eq!(
            rrsets[0]["records"][0]["content"],
            "A \"pickwrandom({{1,'127.0.0.11'},{1,'127.0.0.12'},{2,'127.0.0.21'}})\""
        );
    };
    lifecycle(
        &tf,
        "web.example.org",
        "example.org/web.example.org/A",
        &records,
        &edit,
        &after_weight_change,
    );

    let zone = pdns.zone("example.org");
    assert!(rrsets(&zone, "web.example.org").is_empty(), "{zone}");
    let www = rrsets(&zone, "www.example.org");
    assert_eq!(www.len(), 1, "the foreign record is untouched: {zone}");
    assert_eq!(www[0]["records"][0]["content"], "198.51.100.1");
}

#[test]
fn bad_arguments_get_attribute_diagnostics_from_real_terraform() {
    let Some(terraform) =
        terraform_or_skip("bad_arguments_get_attribute_diagnostics_from_real_terraform")
    else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let tf = Terraform::new(terraform, dir.path());
    tf.write(
        "main.tf",
        r#"terraform {
  required_providers {
    neutral = { source = "neutral/neutral" }
  }
}

provider "neutral" {}

resource "neutral_gtm_record" "bad" {
  domain  = "app.example.com"
  zone    = "example.com"
  ttl     = 0
  regions = { jp = 1001 }
  records = ["A 192.0.2.1"]
}
"#,
    );
    let finished = tf.run(&["validate", "-no-color"]);
    assert_eq!(finished.code, Some(1), "{finished:?}");
    let text = format!("{}{}", finished.stdout, finished.stderr);
    for expected in [
        "0 is outside 1..=2147483647",
        "1001 is outside 0..=1000",
        "`records` is computed by the provider",
        "on main.tf line 12",
        "on main.tf line 13",
        "on main.tf line 14",
    ] {
        assert!(text.contains(expected), "`{expected}` in:\n{text}");
    }
}

#[test]
fn provider_examples_are_formatted_and_valid() {
    let Some(terraform) = terraform_or_skip("provider_examples_are_formatted_and_valid") else {
        return;
    };
    let examples = neutral_e2e::workspace_root().join("provider/examples");
    let dir = tempfile::tempdir().expect("tempdir");
    let tf = Terraform::new(terraform, dir.path());
    let check = tf.run(&[
        "fmt",
        "-check",
        "-recursive",
        "-no-color",
        examples.to_str().expect("utf-8 path"),
    ]);
    assert_eq!(
        check.code,
        Some(0),
        "terraform fmt -check:\n{}{}",
        check.stdout,
        check.stderr
    );
    // The snippets validate together with the provider block.
    for (from, to) in [
        ("provider/provider.tf", "provider.tf"),
        ("resources/neutral_gtm_record/resource.tf", "resource.tf"),
        ("data-sources/neutral_region/data-source.tf", "region.tf"),
        ("data-sources/neutral_domain/data-source.tf", "domain.tf"),
    ] {
        let text = std::fs::read_to_string(examples.join(from)).expect("example");
        tf.write(to, &text);
    }
    tf.expect(&["validate", "-no-color"], 0);
}

#[test]
fn the_plugin_run_by_hand_explains_itself() {
    let finished = neutral_e2e::run_with_deadline(
        std::process::Command::new(neutral_e2e::bin("terraform-provider-neutral"))
            .env_remove("TF_PLUGIN_MAGIC_COOKIE"),
        std::time::Duration::from_secs(30),
    );
    assert_eq!(finished.code, Some(1), "{finished:?}");
    assert!(
        finished.stderr.contains("is a Terraform plugin"),
        "{}",
        finished.stderr
    );
}
