//! End-to-end tests of the scheduler inside `neutral serve`: real terraform
//! runs of roots exported from the pushed commits, triggered by pushes,
//! health changes and drift checks, recorded in `GET /runs`.
//!
//! These roots use Terraform's built-in `terraform_data` so the scheduler is
//! tested on its own; the provider's tests cover `neutral_gtm_record` and
//! `neutral_node_pool` in the same roots.

use std::time::Duration;

use neutral_e2e::cluster::{Agent, Daemon, Repo, Service, fast_config, free_port, wait_for};
use neutral_e2e::services::terraform_or_skip;
use serde_json::Value;

const GTM_ROOT: &str = r#"# One record per GTM policy in platform-config/gtm.
locals {
  files    = fileset("${path.module}/../../platform-config/gtm", "*.yaml")
  policies = { for f in local.files : yamldecode(file("${path.module}/../../platform-config/gtm/${f}")).domain => yamldecode(file("${path.module}/../../platform-config/gtm/${f}")) }
}

resource "terraform_data" "this" {
  for_each = local.policies
  input    = each.value.regions
}
"#;

const POOL_ROOT: &str = r#"variable "region" {
  type = string
}

variable "desired_nodes" {
  type = number
}

resource "terraform_data" "pool" {
  input = "${var.region}: ${var.desired_nodes}"
}
"#;

/// A repository with the fast platform-config (probes on `probe_port`)
/// and the two roots above.
fn repo_with_roots(dir: &std::path::Path, probe_port: u16) -> Repo {
    let mut files = fast_config(probe_port);
    files.push(("infra/gtm/main.tf", GTM_ROOT.to_owned()));
    files.push(("infra/node-pool/main.tf", POOL_ROOT.to_owned()));
    let refs: Vec<(&str, &str)> = files.iter().map(|(p, t)| (*p, t.as_str())).collect();
    Repo::create(dir, &refs)
}

/// Asks for a sync after a push. The daemon's own, every second, may have
/// applied it first; the run of the pushed commit that the caller then
/// finds shows it was applied.
fn sync_after_push(daemon: &Daemon) {
    let synced = daemon.sync();
    assert!(
        matches!(synced["result"].as_str(), Some("applied" | "unchanged")),
        "{synced}"
    );
}

/// `neutral serve` running these roots' Terraform (GTM runs target the
/// `terraform_data` of their domain), syncing every second, no autoscaler.
const SCHEDULER: &[&str] = &[
    "--sync-interval",
    "1s",
    "--no-autoscale",
    "--run-terraform",
    "--gtm-target",
    "terraform_data.this[\"{domain}\"]",
];

/// The first GTM run a push started, once it ended.
fn first_gtm_push_run(daemon: &Daemon) -> Value {
    find_run(daemon, "the first gtm run", Duration::from_secs(60), |r| {
        r["root"] == "infra/gtm" && r["trigger"].as_str().is_some_and(|t| t.contains("push"))
    })
}

fn runs(daemon: &Daemon) -> Vec<Value> {
    daemon.get("/runs?limit=100").json()["runs"]
        .as_array()
        .unwrap()
        .clone()
}

fn find_run(
    daemon: &Daemon,
    what: &str,
    timeout: Duration,
    pick: impl Fn(&Value) -> bool,
) -> Value {
    wait_for(what, timeout, || {
        runs(daemon)
            .into_iter()
            .find(|r| pick(r) && r["status"] != "running" && r["status"] != "queued")
    })
}

#[test]
fn pushes_health_changes_and_drift_checks_run_terraform_and_are_recorded() {
    if terraform_or_skip("pushes_health_changes_and_drift_checks_run_terraform_and_are_recorded")
        .is_none()
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let repo = repo_with_roots(dir.path(), port);
    let daemon = Daemon::start(
        &repo.bare,
        &dir.path().join("data"),
        &[
            &["--heartbeat-interval", "300ms", "--heartbeat-timeout", "1s"],
            SCHEDULER,
            &["--drift-interval", "3s"],
        ]
        .concat(),
    );

    // The first commit: every root and workspace converges.
    let gtm = first_gtm_push_run(&daemon);
    assert_eq!(gtm["status"], "succeeded", "{gtm}");
    assert_eq!(gtm["adds"], 1, "{gtm}");
    for region in ["jp", "sg"] {
        let pool = find_run(
            &daemon,
            "the first node-pool runs",
            Duration::from_secs(60),
            |r| {
                r["root"] == "infra/node-pool" && r["workspace"] == region && r["trigger"] == "push"
            },
        );
        assert_eq!(pool["status"], "succeeded", "{pool}");
        assert_eq!(pool["adds"], 1, "{pool}");
    }

    // A push changing one region's tfvars runs only that workspace.
    repo.write(
        "infra/node-pool/jp.tfvars",
        "region        = \"jp\"\ndesired_nodes = 3\n",
    );
    let commit = repo.commit_push("jp: 3 nodes");
    sync_after_push(&daemon);
    let jp = find_run(
        &daemon,
        "the jp run of the push",
        Duration::from_secs(60),
        |r| r["workspace"] == "jp" && r["commit"] == commit.as_str(),
    );
    assert_eq!(
        (jp["status"].as_str(), jp["changes"].as_u64()),
        (Some("succeeded"), Some(1)),
        "{jp}"
    );
    assert_eq!(jp["trigger"], "push");
    assert!(
        !runs(&daemon)
            .iter()
            .any(|r| r["workspace"] == "sg" && r["commit"] == commit.as_str()),
        "sg ran although its tfvars did not change"
    );

    // A health change runs only the affected record, targeted.
    let _service = Service::start("127.0.0.40", port);
    let mut agent = Agent::start(&daemon, dir.path(), "jp-1", "jp", "127.0.0.40");
    let id = agent.node_id();
    wait_for("the node up", Duration::from_secs(20), || {
        daemon.node(&id).filter(|n| n["status"] == "up")
    });
    let before = runs(&daemon).len();
    agent.stop();
    wait_for("the node down", Duration::from_secs(10), || {
        daemon.node(&id).filter(|n| n["status"] == "down")
    });
    let health = find_run(
        &daemon,
        "a health-triggered run",
        Duration::from_secs(60),
        |r| r["trigger"].as_str().is_some_and(|t| t.contains("health")),
    );
    assert_eq!(health["root"], "infra/gtm", "{health}");
    assert_eq!(health["status"], "succeeded", "{health}");
    assert!(runs(&daemon).len() > before);
    let id = health["id"].as_i64().unwrap();
    let detail = daemon.admin("GET", &format!("/runs/{id}"), None).json();
    let log = detail["log"].as_str().unwrap();
    assert!(
        log.contains("-target=terraform_data.this[\"app.example.com\"]"),
        "{log}"
    );
    assert!(
        log.contains("-detailed-exitcode") && log.contains("-out="),
        "the plan is saved for apply: {log}"
    );

    // Drift checks plan every workspace without applying.
    let drift = find_run(&daemon, "a drift check", Duration::from_secs(30), |r| {
        r["trigger"] == "drift"
    });
    assert_eq!(drift["status"], "succeeded", "{drift}");
    let cli = std::process::Command::new(neutral_e2e::bin("neutral"))
        .args(["runs", "--limit", "100", "--control-plane"])
        .env("NEUTRAL_VIEWER_TOKEN", neutral_e2e::cluster::VIEWER_TOKEN)
        .arg(format!("http://{}", daemon.api))
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&cli.stdout);
    assert!(cli.status.success(), "{table}");
    assert!(table.starts_with("ID  ROOT"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.contains("infra/gtm") && l.contains("health") && l.contains("succeeded")),
        "{table}"
    );
    let listing = daemon.get("/runs").json();

    assert!(
        listing["drift"].as_array().is_some_and(|d| !d.is_empty()),
        "{listing}"
    );
}

#[test]
fn with_terraform_state_the_state_lives_in_postgres_not_in_files() {
    if terraform_or_skip("with_terraform_state_the_state_lives_in_postgres_not_in_files").is_none()
    {
        return;
    }
    let Some(server) = neutral_store::pg_testing::start_or_skip() else {
        return;
    };
    let url = server.create_database().unwrap();
    // Terraform's PostgreSQL client asks for TLS unless told otherwise.
    let state_url = format!("{url}?sslmode=disable");
    let dir = tempfile::tempdir().unwrap();
    let repo = repo_with_roots(dir.path(), free_port());
    let data = dir.path().join("data");
    let daemon = Daemon::start(
        &repo.bare,
        &data,
        &[SCHEDULER, &["--terraform-state", &state_url]].concat(),
    );
    let gtm = first_gtm_push_run(&daemon);
    assert_eq!(gtm["status"], "succeeded", "{gtm}");
    assert_eq!(gtm["adds"], 1, "{gtm}");
    let jp = find_run(&daemon, "the jp pool run", Duration::from_secs(60), |r| {
        r["root"] == "infra/node-pool" && r["workspace"] == "jp"
    });
    assert_eq!(jp["status"], "succeeded", "{jp}");

    // One schema per root and workspace, each with Terraform's state row.
    let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    for schema in [
        "neutral_tf_infra_gtm_default",
        "neutral_tf_infra_node_pool_jp",
    ] {
        let rows = client
            .query(&format!("SELECT name, data FROM {schema}.states"), &[])
            .unwrap_or_else(|err| panic!("{schema}: {err}"));
        assert_eq!(rows.len(), 1, "{schema}");
        let state: String = rows[0].get(1);
        assert!(state.contains("terraform_data"), "{schema}: {state}");
    }
    // Nothing under the Terraform folder's state directory.
    let state_dir = dir.path().join("data-terraform").join("state");
    let files: Vec<_> = walk(&state_dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "tfstate"))
        .collect();
    assert!(files.is_empty(), "state files written: {files:?}");
    // The next push plans against the stored state: nothing to add again.
    repo.write(
        "platform-config/regions/us.yaml",
        "name: us\nprovider: local\nmin_nodes: 1\nmax_nodes: 3\nbase_weight: 60\n",
    );
    let commit = repo.commit_push("us: 60");
    sync_after_push(&daemon);
    let again = find_run(
        &daemon,
        "the gtm run of the push",
        Duration::from_secs(60),
        |r| r["root"] == "infra/gtm" && r["commit"] == commit.as_str(),
    );
    assert_eq!(again["status"], "succeeded", "{again}");
    assert_eq!(again["adds"], 0, "{again}");

    // A team's CI running the same roots with the CI script shares that
    // state: its plan of the pushed tree finds nothing to do.
    let terraform =
        terraform_or_skip("with_terraform_state_the_state_lives_in_postgres_not_in_files")
            .expect("checked above");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/ci/terraform.sh");
    let ci = std::process::Command::new("bash")
        .arg(script)
        .arg(&repo.work)
        .env("TERRAFORM_BIN", &terraform)
        .env("PLAN_ONLY", "1")
        .env("NEUTRAL_TERRAFORM_STATE", &state_url)
        .env("TF_IN_AUTOMATION", "1")
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&ci.stdout),
        String::from_utf8_lossy(&ci.stderr)
    );
    assert!(ci.status.success(), "{said}");
    assert!(said.contains("gtm: no changes"), "{said}");
    assert!(said.contains("node-pool-jp: no changes"), "{said}");
    // Its backend override is gone, and the URL was never in a file.
    for root in ["infra/gtm", "infra/node-pool"] {
        let left = repo.work.join(root).join("_neutral_backend_override.tf");
        assert!(!left.exists(), "{} left behind", left.display());
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(walk(&path));
        } else {
            found.push(path);
        }
    }
    found
}

/// Whether this test process runs as root (only root starts Terraform as
/// another user).
fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1))
                .map(|uid| uid == "0")
        })
        .unwrap_or(false)
}

#[test]
fn as_the_terraform_user_a_run_reads_neither_the_daemons_data_nor_its_environment() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    if terraform_or_skip(
        "as_the_terraform_user_a_run_reads_neither_the_daemons_data_nor_its_environment",
    )
    .is_none()
    {
        return;
    }
    if !running_as_root() {
        assert!(
            std::env::var_os("CI").is_none(),
            "under CI this test must run as root"
        );
        eprintln!("SKIPPED: a Terraform user needs the daemon to run as root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // The Terraform user goes through the test's folder to the Terraform
    // folder beside the data folder (which stays 0700, the daemon's).
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let repo = repo_with_roots(dir.path(), free_port());
    let data = dir.path().join("data");
    let daemon = Daemon::start(
        &repo.bare,
        &data,
        &[SCHEDULER, &["--terraform-user", "nobody"]].concat(),
    );
    // A legitimate change plans and applies as that user.
    let first = first_gtm_push_run(&daemon);
    assert_eq!(first["status"], "succeeded", "{first}");
    let terraform_dir = dir.path().join("data-terraform");
    assert_eq!(
        std::fs::metadata(terraform_dir.join("home")).unwrap().uid(),
        65534,
        "the Terraform folder is the Terraform user's"
    );
    assert_eq!(std::fs::metadata(&data).unwrap().uid(), 0);

    // A push whose plan reads the store and the daemon's environment (its
    // admin and join tokens are there) through Terraform's file functions,
    // with paths the static policy cannot judge (variables).
    let store = data.join("neutral.sqlite3");
    assert!(store.is_file(), "{}", store.display());
    repo.write(
        "infra/gtm/read.tf",
        &format!(
            "variable \"store\" {{\n  default = \"{}\"\n}}\nvariable \"environ\" {{\n  default = \"/proc/{}/environ\"\n}}\noutput \"store\" {{\n  value = filebase64(var.store)\n}}\noutput \"environ\" {{\n  value = filebase64(var.environ)\n}}\n",
            store.display(),
            daemon.pid()
        ),
    );
    let sha = repo.commit_push("read what the daemon holds");
    daemon.sync();
    let run = find_run(
        &daemon,
        "the run of the reading commit",
        Duration::from_secs(60),
        |r| r["root"] == "infra/gtm" && r["commit"] == sha.as_str(),
    );
    let id = run["id"].as_i64().unwrap();
    let log = daemon.admin("GET", &format!("/runs/{id}"), None).json()["log"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(run["status"], "failed", "{run}\n{log}");
    assert!(log.contains("permission denied"), "{log}");
    assert!(
        log.contains("neutral.sqlite3") && log.contains("environ"),
        "{log}"
    );
    assert!(!log.contains(neutral_e2e::cluster::ADMIN_TOKEN), "{log}");
}
