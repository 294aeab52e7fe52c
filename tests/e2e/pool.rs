//! Acceptance tests of `neutral_node_pool` and the HCL around it, with real
//! Terraform, a real `neutral serve` (probing real node services) and real
//! `neutral agent`s started by the provider's local launcher:
//!
//! plan → apply → an empty plan → scale 1 → 2 → 1 removes the drained node
//! and no other → an agent killed with SIGKILL is replaced by the next apply
//! → import round trip → destroy leaves no agent process and no registered
//! node. The node-pool run uses the repository's own `infra/node-pool` root
//! and `modules/region`, fed by `<region>.tfvars` as the scheduler does.
//!
//! Also: `terraform fmt -check` and `terraform validate` of `modules/`,
//! `infra/` and `examples/minimal`, and the GTM root's record addresses.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use neutral_e2e::cluster::{
    ADMIN_TOKEN, Agent, Daemon, JOIN_TOKEN, Repo, Service, free_port, wait_for,
};
use neutral_e2e::services::{Terraform, terraform_or_skip};
use neutral_e2e::stack::alive;
use neutral_e2e::{Finished, workspace_root};
use serde_json::Value;

const ADDRESSES: [&str; 6] = [
    "127.0.0.50",
    "127.0.0.51",
    "127.0.0.52",
    "127.0.0.53",
    "127.0.0.54",
    "127.0.0.55",
];
/// The domain's TTL and the pool's drain grace: a drained node stays at
/// least this long before it is stopped.
const TTL_SECS: u64 = 2;
const GRACE_SECS: u64 = 1;
const POOL: &str = "module.region.neutral_node_pool.this";

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create folder");
    for entry in std::fs::read_dir(from).expect("list folder") {
        let entry = entry.expect("entry");
        let name = entry.file_name();
        if name == ".terraform" || name.to_string_lossy().starts_with(".terraform.lock") {
            continue;
        }
        let target = to.join(&name);
        if entry.file_type().expect("type").is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy file");
        }
    }
}

/// Copies the repository's `modules/` and the `.tf` files of `root` into
/// `dest`, the way the scheduler exports a commit.
fn export_root(dest: &Path, root: &str) -> PathBuf {
    let repo = workspace_root();
    copy_tree(&repo.join("modules"), &dest.join("modules"));
    let workdir = dest.join(root);
    std::fs::create_dir_all(&workdir).expect("root folder");
    for entry in std::fs::read_dir(repo.join(root)).expect("root") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "tf") {
            std::fs::copy(&path, workdir.join(path.file_name().expect("name"))).expect("copy");
        }
    }
    workdir
}

fn platform_config(probe_port: u16) -> Vec<(&'static str, String)> {
    vec![
        (
            "platform-config/regions/jp.yaml",
            "name: jp\nprovider: local\nmin_nodes: 1\nmax_nodes: 3\nbase_weight: 100\n".to_owned(),
        ),
        (
            "platform-config/gtm/app.yaml",
            format!(
                "domain: app.example.com\nzone: example.com\nttl: {TTL_SECS}\nregions: {{ jp: 100 }}\n\
                 probe: {{ http: /healthz, port: {probe_port}, interval: 300ms, timeout: 250ms, rise: 2, fall: 2 }}\n"
            ),
        ),
        (
            "infra/node-pool/jp.tfvars",
            "region        = \"jp\"\ndesired_nodes = 1\n".to_owned(),
        ),
    ]
}

/// Terraform in an exported node-pool root with the scheduler's
/// environment (endpoint, admin token, join token) plus the test's agent
/// settings.
struct PoolRun {
    tf: Terraform,
    env: Vec<(&'static str, OsString)>,
    state_root: PathBuf,
}

impl PoolRun {
    fn run(&self, args: &[&str]) -> Finished {
        let env: Vec<(&str, &std::ffi::OsStr)> =
            self.env.iter().map(|(k, v)| (*k, v.as_os_str())).collect();
        self.tf.run_with_env(args, &env)
    }

    fn expect(&self, args: &[&str], code: i32) -> String {
        let finished = self.run(args);
        assert_eq!(
            finished.code,
            Some(code),
            "terraform {args:?} exited {:?}\nstdout:\n{}\nstderr:\n{}",
            finished.code,
            finished.stdout,
            finished.stderr
        );
        finished.stdout
    }

    fn set_desired(&self, desired: u32) {
        std::fs::write(
            self.tf.dir.join("jp.tfvars"),
            format!("region        = \"jp\"\ndesired_nodes = {desired}\n"),
        )
        .expect("tfvars");
    }

    fn plan(&self, code: i32) -> String {
        self.expect(
            &[
                "plan",
                "-no-color",
                "-detailed-exitcode",
                "-var-file=jp.tfvars",
            ],
            code,
        )
    }

    fn apply(&self) -> String {
        self.expect(
            &["apply", "-no-color", "-auto-approve", "-var-file=jp.tfvars"],
            0,
        )
    }

    /// The pool's attributes in the state.
    fn pool(&self) -> Value {
        let shown = self.expect(&["show", "-json", "-no-color"], 0);
        let state: Value = serde_json::from_str(&shown).expect("state JSON");
        let modules = state["values"]["root_module"]["child_modules"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        modules
            .iter()
            .flat_map(|m| m["resources"].as_array().cloned().unwrap_or_default())
            .find(|r| r["address"] == POOL)
            .map(|r| r["values"].clone())
            .unwrap_or(Value::Null)
    }

    fn slots(&self) -> Vec<String> {
        self.pool()["slots"]
            .as_array()
            .map(|s| {
                s.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `slot → node id` from the state.
    fn node_ids(&self) -> Vec<(String, String)> {
        self.pool()["nodes"]
            .as_array()
            .map(|nodes| {
                nodes
                    .iter()
                    .map(|n| {
                        (
                            n["slot"].as_str().unwrap_or_default().to_owned(),
                            n["node_id"].as_str().unwrap_or_default().to_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn slot_dir(&self, slot: &str) -> PathBuf {
        self.state_root.join("jp").join(slot)
    }

    fn pid(&self, slot: &str) -> u32 {
        std::fs::read_to_string(self.slot_dir(slot).join("agent.pid"))
            .unwrap_or_else(|e| panic!("pid file of {slot}: {e}"))
            .trim()
            .parse()
            .expect("pid")
    }
}

/// `(pid, process group)` of every live process whose command line
/// mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<(u32, u32)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        if !String::from_utf8_lossy(&cmdline).contains(needle) || !alive(pid) {
            continue;
        }
        let group = std::fs::read_to_string(entry.path().join("stat"))
            .ok()
            .and_then(|stat| {
                let (_, rest) = stat.rsplit_once(')')?;
                rest.split_whitespace().nth(2)?.parse().ok()
            })
            .unwrap_or(0);
        found.push((pid, group));
    }
    found
}

/// Kills, when dropped, every process whose command line mentions its
/// folder: agents the provider started outlive Terraform by design, so a
/// failing test must not leave them behind.
struct Sweep(PathBuf);

impl Drop for Sweep {
    fn drop(&mut self) {
        for (pid, _) in processes_mentioning(&self.0.to_string_lossy()) {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
}

fn region_nodes(daemon: &Daemon) -> Vec<Value> {
    daemon
        .get("/nodes")
        .json()
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|n| n["region"] == "jp")
        .collect()
}

fn wait_up(daemon: &Daemon, id: &str) {
    wait_for(&format!("node {id} up"), Duration::from_secs(30), || {
        (daemon.node_status(id).as_deref() == Some("up")).then_some(())
    });
}

#[test]
fn node_pool_lifecycle_with_local_agents() {
    let Some(terraform) = terraform_or_skip("node_pool_lifecycle_with_local_agents") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let probe_port = free_port();
    // A node service on every address of the range: the probes succeed.
    let _services: Vec<Service> = ADDRESSES
        .iter()
        .map(|ip| Service::start(ip, probe_port))
        .collect();
    let config = platform_config(probe_port);
    let files: Vec<(&str, &str)> = config.iter().map(|(p, t)| (*p, t.as_str())).collect();
    let repo = Repo::create(dir.path(), &files);
    let daemon = Daemon::start(
        &repo.bare,
        &dir.path().join("data"),
        &[
            "--heartbeat-interval",
            "300ms",
            "--heartbeat-timeout",
            "1s",
            "--no-autoscale",
        ],
    );

    // The root as the scheduler runs it: an export of the commit.
    let export = dir.path().join("export");
    let workdir = export_root(&export, "infra/node-pool");
    for (path, text) in &config {
        let target = export.join(path);
        std::fs::create_dir_all(target.parent().expect("parent")).expect("folder");
        std::fs::write(target, text).expect("file");
    }
    let mut tf = Terraform::new(terraform, &dir.path().join("tf"));
    tf.dir = workdir;
    let state_root = dir.path().join("nodes");
    let _sweep = Sweep(state_root.clone());
    let metrics = dir.path().join("metrics.prom");
    std::fs::write(
        &metrics,
        "neutral_node_cpu_ratio 0.2\nneutral_node_rtt_seconds 0.005\nneutral_node_error_ratio 0\n",
    )
    .expect("metrics");
    let agent_args = format!(
        r#"["--metrics-file", "{}", "--backoff-min", "100ms", "--backoff-max", "1s"]"#,
        metrics.display()
    );
    let run = PoolRun {
        tf,
        env: vec![
            ("NEUTRAL_ENDPOINT", format!("http://{}", daemon.api).into()),
            ("NEUTRAL_TOKEN", ADMIN_TOKEN.into()),
            ("NEUTRAL_JOIN_TOKEN", JOIN_TOKEN.into()),
            ("TF_VAR_state_root", state_root.clone().into_os_string()),
            (
                "TF_VAR_address_ranges",
                r#"{ jp = "127.0.0.50-127.0.0.55" }"#.into(),
            ),
            ("TF_VAR_drain_grace", format!("{GRACE_SECS}s").into()),
            ("TF_VAR_agent_args", agent_args.into()),
        ],
        state_root: state_root.clone(),
    };
    run.expect(&["init", "-no-color", "-input=false"], 0);

    // Plan → apply → an empty plan.
    let plan = run.plan(2);
    assert!(plan.contains(&format!("{POOL} will be created")), "{plan}");
    assert!(plan.contains("add jp-1: scale out 0 → 1"), "{plan}");
    assert!(
        plan.contains("desired_nodes 1 within [1, 3]: 1 slot"),
        "{plan}"
    );
    run.apply();
    assert_eq!(run.slots(), ["jp-1"]);
    let first = run.node_ids();
    assert_eq!(first.len(), 1, "{first:?}");
    let (_, node_1) = first[0].clone();
    assert!(!node_1.is_empty(), "the node registered: {first:?}");
    // The agent outlived Terraform, detached in its own process group.
    let pid_1 = run.pid("jp-1");
    assert!(
        alive(pid_1),
        "the agent of jp-1 runs after terraform exited"
    );
    let agents = processes_mentioning(state_root.to_str().expect("utf-8"));
    assert_eq!(agents, [(pid_1, pid_1)], "one agent, leading its own group");
    wait_up(&daemon, &node_1);
    run.plan(0);

    // Scale out to 2.
    run.set_desired(2);
    let plan = run.plan(2);
    assert!(plan.contains("add jp-2: scale out 1 → 2"), "{plan}");
    run.apply();
    assert_eq!(run.slots(), ["jp-1", "jp-2"]);
    let ids = run.node_ids();
    let node_2 = ids
        .iter()
        .find(|(slot, _)| slot == "jp-2")
        .map(|(_, id)| id.clone())
        .expect("jp-2's node");
    assert_ne!(node_1, node_2);
    wait_up(&daemon, &node_2);
    run.plan(0);
    let addresses: Vec<String> = region_nodes(&daemon)
        .iter()
        .map(|n| n["address"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        addresses.len(),
        2,
        "two nodes on distinct addresses: {addresses:?}"
    );
    assert_ne!(addresses[0], addresses[1]);

    // Scale in to 1: the drained node goes, even though it is the older one
    // (without a drain the newest would go), and no other.
    let drain = daemon.admin("POST", &format!("/nodes/{node_1}/drain"), Some("{}"));
    assert_eq!(drain.status, 200, "{}", drain.body);
    let drained_at = Instant::now();
    run.set_desired(1);
    let plan = run.plan(2);
    assert!(
        plan.contains(&format!(
            "remove jp-1: scale in 2 → 1; its node {node_1} is drained (drained nodes go first)"
        )),
        "{plan}"
    );
    run.apply();
    assert!(
        drained_at.elapsed() >= Duration::from_secs(TTL_SECS + GRACE_SECS),
        "the drained node was kept for the TTL plus the grace"
    );
    assert_eq!(run.slots(), ["jp-2"]);
    assert!(
        daemon.node(&node_1).is_none(),
        "the drained node is deleted"
    );
    assert_eq!(
        daemon.node_status(&node_2).as_deref(),
        Some("up"),
        "the other node stays"
    );
    assert!(!alive(pid_1), "the drained node's agent is stopped");
    let pid_2 = run.pid("jp-2");
    assert!(alive(pid_2), "the other agent runs on");
    assert!(!run.slot_dir("jp-1").exists(), "jp-1's files are gone");
    run.plan(0);

    // Self-heal: an agent killed with SIGKILL is replaced by the next apply.
    let status = std::process::Command::new("kill")
        .args(["-KILL", &pid_2.to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    wait_for("the agent to die", Duration::from_secs(10), || {
        (!alive(pid_2)).then_some(())
    });
    let plan = run.plan(2);
    assert!(
        plan.contains(&format!("replace jp-2 by jp-3: its node {node_2} is down")),
        "{plan}"
    );
    run.apply();
    assert_eq!(run.slots(), ["jp-3"]);
    assert!(daemon.node(&node_2).is_none(), "the dead node is deleted");
    let healed = run.node_ids();
    let node_3 = healed[0].1.clone();
    assert!(!node_3.is_empty() && node_3 != node_2, "{healed:?}");
    wait_up(&daemon, &node_3);
    run.plan(0);

    // Import round trip: the slots and their nodes come back from the
    // control plane (the agents register with their slot key as hostname).
    let before = (run.slots(), run.node_ids());
    run.expect(&["state", "rm", "-no-color", POOL], 0);
    run.expect(
        &["import", "-no-color", "-var-file=jp.tfvars", POOL, "jp"],
        0,
    );
    assert_eq!((run.slots(), run.node_ids()), before, "imported as applied");
    // The configuration's settings are adopted in place; no slot changes.
    let plan = run.plan(2);
    assert!(plan.contains("will be updated in-place"), "{plan}");
    assert!(!plan.contains("will be destroyed"), "{plan}");
    assert!(!plan.contains("must be replaced"), "{plan}");
    run.apply();
    assert_eq!((run.slots(), run.node_ids()), before);
    run.plan(0);

    // Destroy: no agent process, no registered node.
    let pid_3 = run.pid("jp-3");
    run.expect(
        &[
            "destroy",
            "-no-color",
            "-auto-approve",
            "-var-file=jp.tfvars",
        ],
        0,
    );
    assert!(!alive(pid_3));
    let left = processes_mentioning(state_root.to_str().expect("utf-8"));
    assert!(left.is_empty(), "agents left running: {left:?}");
    let nodes = region_nodes(&daemon);
    assert!(nodes.is_empty(), "nodes left registered: {nodes:?}");
}

#[test]
fn modules_roots_and_the_minimal_example_are_formatted_and_valid() {
    let Some(terraform) =
        terraform_or_skip("modules_roots_and_the_minimal_example_are_formatted_and_valid")
    else {
        return;
    };
    let repo = workspace_root();
    let dir = tempfile::tempdir().expect("tempdir");
    let tf = Terraform::new(terraform.clone(), &dir.path().join("fmt"));
    for folder in ["modules", "infra", "examples"] {
        let check = tf.run(&[
            "fmt",
            "-check",
            "-recursive",
            "-diff",
            "-no-color",
            repo.join(folder).to_str().expect("utf-8 path"),
        ]);
        assert_eq!(
            check.code,
            Some(0),
            "terraform fmt -check {folder}:\n{}{}",
            check.stdout,
            check.stderr
        );
    }
    // Every root, exported with the modules beside it: the repository's,
    // and the minimal example's as its `assemble` script builds it.
    let minimal = dir.path().join("minimal");
    let assembled = neutral_e2e::run_with_deadline(
        std::process::Command::new(repo.join("examples/minimal/assemble")).arg(&minimal),
        Duration::from_secs(60),
    );
    assert_eq!(assembled.code, Some(0), "{assembled:?}");
    let roots = [
        (repo.clone(), "infra/gtm"),
        (repo.clone(), "infra/node-pool"),
        (minimal.clone(), "infra/gtm"),
        (minimal.clone(), "infra/node-pool"),
    ];
    for (index, (source, root)) in roots.iter().enumerate() {
        let export = dir.path().join(format!("export-{index}"));
        let workdir = if *source == repo {
            export_root(&export, root)
        } else {
            copy_tree(source, &export);
            export.join(root)
        };
        let mut tf = Terraform::new(terraform.clone(), &dir.path().join(format!("tf-{index}")));
        tf.dir = workdir;
        tf.expect(&["init", "-backend=false", "-no-color", "-input=false"], 0);
        tf.expect(&["validate", "-no-color"], 0);
    }
    // The provider's node-pool example validates with the provider block.
    let examples = repo.join("provider/examples");
    let mut tf = Terraform::new(terraform.clone(), &dir.path().join("tf-example"));
    tf.dir = dir.path().join("example");
    std::fs::create_dir_all(&tf.dir).expect("example folder");
    for (from, to) in [
        ("provider/provider.tf", "provider.tf"),
        ("resources/neutral_node_pool/resource.tf", "resource.tf"),
    ] {
        std::fs::copy(examples.join(from), tf.dir.join(to)).expect("copy example");
    }
    tf.expect(&["init", "-backend=false", "-no-color", "-input=false"], 0);
    tf.expect(&["validate", "-no-color"], 0);

    // The minimal example's tfvars is what the node-pool root reads.
    let tfvars = std::fs::read_to_string(minimal.join("infra/node-pool/local.tfvars"))
        .expect("local.tfvars");
    assert!(tfvars.contains("region") && tfvars.contains("desired_nodes"));
}

#[test]
fn the_gtm_root_keys_one_record_per_domain_from_git() {
    let Some(terraform) = terraform_or_skip("the_gtm_root_keys_one_record_per_domain_from_git")
    else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let files = [
        (
            "platform-config/regions/jp.yaml",
            "name: jp\nprovider: local\nmin_nodes: 1\nmax_nodes: 3\nbase_weight: 100\n",
        ),
        (
            "platform-config/regions/sg.yaml",
            "name: sg\nprovider: edge\nmin_nodes: 1\nmax_nodes: 3\nbase_weight: 40\n",
        ),
        (
            "platform-config/gtm/app.yaml",
            "domain: app.example.com\nzone: example.com\nttl: 30\nregions: { jp: 100, sg: 50 }\n",
        ),
        // No regions: every region at its base weight.
        (
            "platform-config/gtm/api.yaml",
            "domain: api.example.com\nzone: example.com\ntype: A\n",
        ),
        // A backend the provider does not manage yet: left out, listed.
        (
            "platform-config/gtm/edge.yaml",
            "domain: edge.example.net\nzone: example.net\ndns: route53\nregions: { jp: 10 }\n",
        ),
    ];
    let repo = Repo::create(dir.path(), &files);
    let daemon = Daemon::start(
        &repo.bare,
        &dir.path().join("data"),
        &["--no-autoscale", "--no-probes"],
    );
    let export = dir.path().join("export");
    let workdir = export_root(&export, "infra/gtm");
    for (path, text) in files {
        let target = export.join(path);
        std::fs::create_dir_all(target.parent().expect("parent")).expect("folder");
        std::fs::write(target, text).expect("file");
    }
    let mut tf = Terraform::new(terraform, &dir.path().join("tf"));
    tf.dir = workdir;
    let endpoint = OsString::from(format!("http://{}", daemon.api));
    let token = OsString::from(ADMIN_TOKEN);
    let env = [
        ("NEUTRAL_ENDPOINT", endpoint.as_os_str()),
        ("NEUTRAL_TOKEN", token.as_os_str()),
    ];
    let run = |args: &[&str], code: i32| {
        let finished = tf.run_with_env(args, &env);
        assert_eq!(
            finished.code,
            Some(code),
            "terraform {args:?}:\n{}\n{}",
            finished.stdout,
            finished.stderr
        );
        finished.stdout
    };
    run(&["init", "-no-color", "-input=false"], 0);
    let plan = run(&["plan", "-no-color"], 0);
    for address in [
        r#"module.gtm.neutral_gtm_record.this["app.example.com"] will be created"#,
        r#"module.gtm.neutral_gtm_record.this["api.example.com"] will be created"#,
    ] {
        assert!(plan.contains(address), "{address} in:\n{plan}");
    }
    assert!(!plan.contains("edge.example.net\"]"), "{plan}");
    // The scheduler's default target addresses exactly one record.
    let target = r#"-target=module.gtm.neutral_gtm_record.this["app.example.com"]"#;
    run(&["apply", "-no-color", "-auto-approve", target], 0);
    let shown = run(&["show", "-json", "-no-color"], 0);
    let state: Value = serde_json::from_str(&shown).expect("state");
    let records: Vec<Value> = state["values"]["root_module"]["child_modules"][0]["resources"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(records.len(), 1, "{shown}");
    assert_eq!(records[0]["index"], "app.example.com");
    assert_eq!(records[0]["values"]["regions"]["sg"], 50);
    run(&["apply", "-no-color", "-auto-approve"], 0);
    let outputs: Value =
        serde_json::from_str(&run(&["output", "-json", "-no-color"], 0)).expect("outputs");
    assert_eq!(
        outputs["skipped"]["value"],
        serde_json::json!(["edge.example.net"])
    );
    let shown = run(&["show", "-json", "-no-color"], 0);
    assert!(
        shown.contains(r#""sg":40"#),
        "api takes each region's base weight: {shown}"
    );
    run(&["destroy", "-no-color", "-auto-approve"], 0);
}

#[test]
fn an_external_pool_publishes_slots_and_drains_before_removal() {
    let Some(terraform) =
        terraform_or_skip("an_external_pool_publishes_slots_and_drains_before_removal")
    else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    // provider: edge, so modules/region picks the external launcher.
    let config = [
        (
            "platform-config/regions/jp.yaml",
            "name: jp\nprovider: edge\nmin_nodes: 1\nmax_nodes: 3\nbase_weight: 100\n".to_owned(),
        ),
        (
            "platform-config/gtm/app.yaml",
            format!(
                "domain: app.example.com\nzone: example.com\nttl: {TTL_SECS}\nregions: {{ jp: 100 }}\n"
            ),
        ),
        (
            "infra/node-pool/jp.tfvars",
            "region        = \"jp\"\ndesired_nodes = 2\n".to_owned(),
        ),
    ];
    let files: Vec<(&str, &str)> = config.iter().map(|(p, t)| (*p, t.as_str())).collect();
    let repo = Repo::create(dir.path(), &files);
    let daemon = Daemon::start(
        &repo.bare,
        &dir.path().join("data"),
        &[
            "--heartbeat-interval",
            "300ms",
            "--heartbeat-timeout",
            "1s",
            "--no-autoscale",
            "--no-probes",
        ],
    );
    let export = dir.path().join("export");
    let workdir = export_root(&export, "infra/node-pool");
    for (path, text) in &config {
        let target = export.join(path);
        std::fs::create_dir_all(target.parent().expect("parent")).expect("folder");
        std::fs::write(target, text).expect("file");
    }
    let mut tf = Terraform::new(terraform, &dir.path().join("tf"));
    tf.dir = workdir;
    let state_root = dir.path().join("nodes");
    let run = PoolRun {
        tf,
        env: vec![
            ("NEUTRAL_ENDPOINT", format!("http://{}", daemon.api).into()),
            ("NEUTRAL_TOKEN", ADMIN_TOKEN.into()),
            ("TF_VAR_drain_grace", format!("{GRACE_SECS}s").into()),
        ],
        state_root: state_root.clone(),
    };
    run.expect(&["init", "-no-color", "-input=false"], 0);
    let plan = run.plan(2);
    assert!(plan.contains("launcher      = \"external\""), "{plan}");
    run.apply();
    assert_eq!(run.slots(), ["jp-1", "jp-2"]);
    let pool = run.pool();
    assert_eq!(
        pool["nodes"][0]["status"], "pending",
        "no machine yet: {pool}"
    );
    assert!(pool["state_dir"].is_null());
    run.plan(0);

    // The machines come up (here: agents started by the test), each
    // registering with its slot key as hostname.
    let url = format!("http://{}", daemon.api);
    let agents_dir = dir.path().join("agents");
    std::fs::create_dir_all(&agents_dir).expect("agents dir");
    let _first = Agent::start_with(
        &url,
        &agents_dir,
        "a",
        "jp",
        "127.0.0.61",
        &["--hostname", "jp-1"],
    );
    let second = Agent::start_with(
        &url,
        &agents_dir,
        "b",
        "jp",
        "127.0.0.62",
        &["--hostname", "jp-2"],
    );
    let node_b = second.node_id();
    wait_up(&daemon, &node_b);
    run.expect(
        &[
            "apply",
            "-refresh-only",
            "-auto-approve",
            "-no-color",
            "-var-file=jp.tfvars",
        ],
        0,
    );
    let ids = run.node_ids();
    assert_eq!(ids[1], ("jp-2".to_owned(), node_b.clone()), "{ids:?}");
    run.plan(0);

    // Scale in: the newest slot's node is drained, kept for the TTL plus
    // the grace, then deleted; the slot leaves `slots` (its machine goes).
    run.set_desired(1);
    let plan = run.plan(2);
    assert!(
        plan.contains(&format!(
            "remove jp-2: scale in 2 → 1; its node {node_b} is up"
        )),
        "{plan}"
    );
    let start = Instant::now();
    run.apply();
    assert!(
        start.elapsed() >= Duration::from_secs(TTL_SECS + GRACE_SECS),
        "drained, then kept for the TTL plus the grace"
    );
    assert_eq!(run.slots(), ["jp-1"]);
    let audit = daemon
        .admin("GET", &format!("/audit?subject={node_b}&limit=50"), None)
        .json();
    let messages: Vec<&str> = audit["entries"]
        .as_array()
        .or_else(|| audit.as_array())
        .map(|entries| {
            entries
                .iter()
                .filter_map(|e| e["message"].as_str())
                .collect()
        })
        .unwrap_or_default();
    let drained = messages.iter().position(|m| m.starts_with("drain node"));
    let deleted = messages.iter().position(|m| m.starts_with("deleted node"));
    assert!(
        drained.is_some() && deleted.is_some() && drained < deleted,
        "drained before deleted: {messages:?}"
    );
    let processes = processes_mentioning(state_root.to_str().expect("utf-8"));
    assert!(
        processes.is_empty(),
        "no process of the pool's: {processes:?}"
    );
    drop(second);

    run.expect(
        &[
            "destroy",
            "-no-color",
            "-auto-approve",
            "-var-file=jp.tfvars",
        ],
        0,
    );
}
