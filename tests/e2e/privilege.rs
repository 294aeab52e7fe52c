//! Least privilege for Terraform runs (issue 20), end to end on the whole
//! deployment (`neutral_e2e::stack`: a bare repository with neutral's hooks,
//! `neutral serve --run-terraform`, real Terraform, the real provider and its
//! local launcher's agents).
//!
//! The exploit: anyone who can push to the configuration repository adds a
//! `terraform_data` with a `local-exec` provisioner to a root the scheduler
//! runs; the provisioner runs on the control plane's machine with Terraform's
//! environment and writes the tokens it finds to a file. This test pushes it
//! through the hooks (it must be refused, naming the file, line and rule),
//! then writes the same commit straight into the bare repository, bypassing
//! the hooks (the scheduler must refuse the run and record why), then checks
//! that a legitimate change still plans and applies, that no run's
//! environment nor any file a run wrote holds the admin or the join token,
//! and that a run's own token is useless once the run is over.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use neutral_e2e::cluster::{ADMIN_TOKEN, JOIN_TOKEN};
use neutral_e2e::http;
use neutral_e2e::stack::{Stack, StackOptions};
use serde_json::Value;

/// The hostile file: a provisioner writing the tokens to `leak`.
fn hostile_tf(leak: &Path) -> String {
    format!(
        r#"resource "terraform_data" "x" {{
  input = "harmless-looking"

  provisioner "local-exec" {{
    command = "echo \"admin=$NEUTRAL_TOKEN join=$NEUTRAL_JOIN_TOKEN\" > {leak}; env >> {leak}"
  }}
}}
"#,
        leak = leak.display()
    )
}

fn git(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=Someone With Push Access",
            "-c",
            "user.email=pusher@example.com",
        ])
        .args(args)
        .output()
        .expect("run git")
}

fn git_ok(dir: &Path, args: &[&str]) -> String {
    let out = git(dir, args);
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Every regular file under `dir` (symlinks not followed).
fn files_under(dir: &Path, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            files_under(&entry.path(), found);
        } else if kind.is_file() {
            found.push(entry.path());
        }
    }
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

fn run_log(stack: &Stack, run: &Value) -> String {
    let id = run["id"].as_i64().expect("run id");
    stack
        .daemon()
        .admin("GET", &format!("/runs/{id}"), None)
        .json()["log"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn a_pushed_provisioner_gets_no_token_and_runs_hold_only_their_own() {
    let Some(stack) = Stack::start(StackOptions {
        net: 66,
        jp_nodes: 1,
        powerdns: false,
        hosts: None,
    }) else {
        return;
    };
    let scratch = tempfile::tempdir().unwrap();
    let leak = scratch.path().join("leak.txt");
    let work = &stack.repo.work;

    // The first commit converges: one node per region through the real
    // node-pool root (the provider's local launcher starts the agents).
    stack.wait_up("jp", 1);
    stack.wait_up("sg", 1);

    // 1. Through the hooks: refused, naming the file, line and rule.
    git_ok(work, &["pull", "-q", "--rebase", "origin", "main"]);
    std::fs::write(work.join("infra/gtm/x.tf"), hostile_tf(&leak)).unwrap();
    git_ok(work, &["add", "-A"]);
    git_ok(
        work,
        &["commit", "-q", "-m", "gtm: a harmless-looking helper"],
    );
    let push = git(work, &["push", "origin", "main"]);
    let said = String::from_utf8_lossy(&push.stderr).into_owned();
    assert!(
        !push.status.success(),
        "the hostile push was accepted:\n{said}"
    );
    assert!(
        said.contains("infra/gtm/x.tf:4:3: error: [provisioner]"),
        "the refusal names the file, line and rule:\n{said}"
    );

    // 2. Bypassing the hooks: the commit lands in the bare repository
    // directly (a fetch runs no receive hooks). The scheduler refuses it.
    let sha = git_ok(work, &["rev-parse", "HEAD"]);
    git_ok(
        &stack.repo.bare,
        &["fetch", "-q", work.to_str().unwrap(), "main:main"],
    );
    stack.daemon().sync();
    let refused = stack.wait_run("the bypassed commit's gtm run", |r| {
        r["root"] == "infra/gtm" && r["commit"] == sha.as_str()
    });
    let log = run_log(&stack, &refused);
    assert_eq!(refused["status"], "failed", "{refused}\n{log}");
    assert!(
        log.contains("refused by the Terraform policy")
            && log.contains("infra/gtm/x.tf:4:3: error: [provisioner]"),
        "{log}"
    );
    assert!(!log.contains("$ terraform"), "terraform ran: {log}");
    std::thread::sleep(Duration::from_secs(1));
    let leaked = std::fs::read_to_string(&leak).unwrap_or_default();
    assert!(
        !leaked.contains(ADMIN_TOKEN) && !leaked.contains(JOIN_TOKEN) && leaked.is_empty(),
        "the provisioner ran and wrote:\n{leaked}"
    );

    // 3. A legitimate change: the hostile file goes, jp grows to 2 nodes
    // through the node-pool root with the run's own token.
    std::fs::remove_file(work.join("infra/gtm/x.tf")).unwrap();
    let tfvars = work.join("infra/node-pool/jp.tfvars");
    let text = std::fs::read_to_string(&tfvars).unwrap();
    std::fs::write(
        &tfvars,
        text.replace("desired_nodes = 1", "desired_nodes = 2"),
    )
    .unwrap();
    git_ok(work, &["add", "-A"]);
    git_ok(work, &["commit", "-q", "-m", "jp: 2 nodes, helper removed"]);
    let push = git(work, &["push", "origin", "main"]);
    assert!(
        push.status.success(),
        "the legitimate push was refused:\n{}",
        String::from_utf8_lossy(&push.stderr)
    );
    let legit = git_ok(work, &["rev-parse", "HEAD"]);
    let grown = stack.wait_run("jp's run of the legitimate change", |r| {
        r["workspace"] == "jp" && r["commit"] == legit.as_str()
    });
    assert_eq!(
        grown["status"],
        "succeeded",
        "{grown}\n{}",
        run_log(&stack, &grown)
    );
    assert!(
        grown["adds"].as_u64().unwrap_or(0) + grown["changes"].as_u64().unwrap_or(0) > 0,
        "the legitimate change planned nothing: {grown}"
    );
    stack.wait_up("jp", 2);

    // 4. Nothing a run wrote holds the admin or the join token: its working
    // copies, plan files, state, HOME, logs, and the agents it started.
    let data = &stack.daemon().data;
    let mut written = Vec::new();
    files_under(&data.with_file_name("data-terraform"), &mut written);
    files_under(&data.join("nodes"), &mut written);
    assert!(
        written
            .iter()
            .any(|p| p.extension().is_some_and(|e| e == "tfstate")),
        "no state found where runs write: {written:?}"
    );
    for path in &written {
        let bytes = std::fs::read(path).unwrap_or_default();
        for (name, secret) in [("admin", ADMIN_TOKEN), ("join", JOIN_TOKEN)] {
            assert!(
                !contains(&bytes, secret),
                "{} holds the {name} token",
                path.display()
            );
        }
    }
    for run in stack.runs() {
        let log = run_log(&stack, &run);
        assert!(!log.contains(ADMIN_TOKEN) && !log.contains(JOIN_TOKEN));
    }

    // 5. The environment Terraform saw (the test's terraform wrapper records
    // it): no daemon secret, and the run's token is dead after the run.
    let envs = stack.terraform_environments();
    assert!(!envs.is_empty(), "the wrapper recorded no environment");
    let mut run_tokens = std::collections::BTreeSet::new();
    for env in &envs {
        assert!(
            !env.contains(ADMIN_TOKEN) && !env.contains(JOIN_TOKEN),
            "a run's environment holds a daemon token:\n{env}"
        );
        for line in env.lines() {
            if let Some(token) = line.strip_prefix("NEUTRAL_TOKEN=") {
                run_tokens.insert(token.to_owned());
            }
            let name = line.split('=').next().unwrap_or_default();
            assert!(
                !name.contains("ADMIN") && !name.contains("JOIN_TOKEN"),
                "{line}"
            );
        }
    }
    assert!(!run_tokens.is_empty(), "runs got no token of their own");
    stack.wait("every run finished", || {
        stack
            .runs()
            .iter()
            .all(|r| matches!(r["status"].as_str(), Some("succeeded" | "failed")))
            .then_some(())
    });
    for token in &run_tokens {
        let answer = http::request(stack.daemon().api, "GET", "/nodes", Some(token), None).unwrap();
        assert_eq!(
            answer.status, 401,
            "a finished run's token still reads /nodes"
        );
        let answer = http::request(
            stack.daemon().api,
            "POST",
            "/nodes/no-such-node/drain",
            Some(token),
            None,
        )
        .unwrap();
        assert_eq!(answer.status, 401, "a finished run's token still writes");
    }
    stack.shut_down();
}

/// The launcher hole: a pushed node-pool configuration that names its own
/// program for the local launcher to start. Under `neutral serve` those
/// settings are the operator's (the daemon's `TF_VAR_*`), so the provider
/// refuses the pool at the attribute, and the program never runs.
#[test]
fn a_pushed_launcher_program_is_refused_and_never_runs() {
    let Some(stack) = Stack::start(StackOptions {
        net: 67,
        jp_nodes: 1,
        powerdns: false,
        hosts: None,
    }) else {
        return;
    };
    stack.wait_up("jp", 1);
    let scratch = tempfile::tempdir().unwrap();
    let marker = scratch.path().join("ran.txt");
    let program = scratch.path().join("evil.sh");
    std::fs::write(
        &program,
        format!("#!/bin/sh\necho \"$@\" >> {}\n", marker.display()),
    )
    .unwrap();
    let mut mode = std::fs::metadata(&program).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut mode, 0o755);
    std::fs::set_permissions(&program, mode).unwrap();

    let work = &stack.repo.work;
    git_ok(work, &["pull", "-q", "--rebase", "origin", "main"]);
    let main_tf = work.join("infra/node-pool/main.tf");
    let text = std::fs::read_to_string(&main_tf).unwrap();
    assert!(
        text.contains("neutral_binary = var.neutral_binary"),
        "{text}"
    );
    // And the agents' control plane: where they would send their join token.
    // (No agent starts either way — the program is refused too — so what
    // the test can check is that the refusal names `control_plane`.)
    let collector = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    assert!(
        text.contains("control_plane  = lookup(var.control_planes, var.region, null)"),
        "{text}"
    );
    std::fs::write(
        &main_tf,
        text.replace(
            "neutral_binary = var.neutral_binary",
            &format!("neutral_binary = \"{}\"", program.display()),
        )
        .replace(
            "control_plane  = lookup(var.control_planes, var.region, null)",
            &format!(
                "control_plane  = \"http://{}\"",
                collector.local_addr().unwrap()
            ),
        ),
    )
    .unwrap();
    let tfvars = work.join("infra/node-pool/jp.tfvars");
    let text = std::fs::read_to_string(&tfvars).unwrap();
    std::fs::write(
        &tfvars,
        text.replace("desired_nodes = 1", "desired_nodes = 2"),
    )
    .unwrap();
    git_ok(work, &["add", "-A"]);
    git_ok(
        work,
        &["commit", "-q", "-m", "jp: 2 nodes from my own binary"],
    );
    // Straight into the bare repository: the scheduler is the last guard.
    let sha = git_ok(work, &["rev-parse", "HEAD"]);
    git_ok(
        &stack.repo.bare,
        &["fetch", "-q", work.to_str().unwrap(), "main:main"],
    );
    stack.daemon().sync();
    let refused = stack.wait_run("jp's run of the hostile commit", |r| {
        r["workspace"] == "jp"
            && r["commit"] == sha.as_str()
            && matches!(r["status"].as_str(), Some("succeeded" | "failed"))
    });
    let log = run_log(&stack, &refused);
    assert_eq!(refused["status"], "failed", "{refused}\n{log}");
    assert!(
        log.contains("set by the operator, not the repository")
            && log.contains("neutral_binary")
            && log.contains("control_plane"),
        "the refusal names the attributes: {log}"
    );
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        !marker.exists(),
        "the pushed program ran: {}",
        std::fs::read_to_string(&marker).unwrap_or_default()
    );
    assert_eq!(
        stack
            .daemon()
            .admin("GET", "/nodes?region=jp", None)
            .json()
            .as_array()
            .map(Vec::len),
        Some(1),
        "no node was added"
    );
    stack.shut_down();
}

/// Issue 19's roles: reads need a token; the viewer token reads everything
/// and writes nothing; region join tokens minted by an admin register nodes
/// of their region only. No Terraform needed.
#[test]
fn anonymous_reads_are_refused_and_the_viewer_reads_but_never_writes() {
    use neutral_e2e::cluster::{Daemon, Repo, VIEWER_TOKEN, fast_config, free_port, wait_for};
    let dir = tempfile::tempdir().unwrap();
    let files = fast_config(free_port());
    let refs: Vec<(&str, &str)> = files.iter().map(|(p, t)| (*p, t.as_str())).collect();
    let repo = Repo::create(dir.path(), &refs);
    let daemon = Daemon::start(
        &repo.bare,
        &dir.path().join("data"),
        &["--sync-interval", "1s", "--no-autoscale", "--no-probes"],
    );
    let api = daemon.api;
    let call = |method: &str, path: &str, token: Option<&str>, body: Option<&str>| {
        http::request(api, method, path, token, body).unwrap()
    };
    wait_for("the first sync", Duration::from_secs(30), || {
        (daemon.get("/status").json()["commit"].is_string()).then_some(())
    });

    // Anonymous: only liveness and the node API answer.
    assert_eq!(call("GET", "/healthz", None, None).status, 200);
    for path in [
        "/nodes",
        "/regions",
        "/domains",
        "/domains/app.example.com",
        "/status",
        "/runs",
        "/autoscale",
        "/metrics",
        "/audit",
        "/dns/zones",
        "/leader",
    ] {
        let answer = call("GET", path, None, None);
        assert_eq!(answer.status, 401, "anonymous GET {path}: {}", answer.body);
        assert_eq!(answer.json()["error"], "unauthorized", "{path}");
    }
    assert_eq!(
        call("GET", "/nodes", Some("a-guess-of-some-length"), None).status,
        401
    );

    // The viewer reads.
    for path in [
        "/nodes",
        "/regions",
        "/domains",
        "/status",
        "/runs",
        "/autoscale",
        "/metrics",
        "/leader",
    ] {
        let answer = call("GET", path, Some(VIEWER_TOKEN), None);
        assert_eq!(answer.status, 200, "viewer GET {path}: {}", answer.body);
    }

    // A node, registered with a join token an admin minted for jp.
    let minted = daemon.admin("POST", "/join-tokens", Some(r#"{"region": "jp"}"#));
    assert_eq!(minted.status, 201, "{}", minted.body);
    let jp_join = minted.json()["token"].as_str().unwrap().to_owned();
    let sg = call(
        "POST",
        "/nodes/register",
        Some(&jp_join),
        Some(r#"{"region": "sg", "address": "127.0.0.31"}"#),
    );
    assert_eq!(
        sg.status, 401,
        "a jp join token registered an sg node: {}",
        sg.body
    );
    let jp = call(
        "POST",
        "/nodes/register",
        Some(&jp_join),
        Some(r#"{"region": "jp", "address": "127.0.0.30"}"#),
    );
    assert_eq!(jp.status, 201, "{}", jp.body);
    let id = jp.json()["node_id"].as_str().unwrap().to_owned();

    // Every write the viewer tries is refused, and nothing changed.
    let writes: Vec<(&str, String, Option<&str>)> = vec![
        ("POST", "/sync".into(), None),
        ("POST", format!("/nodes/{id}/drain"), None),
        ("POST", format!("/nodes/{id}/undrain"), None),
        ("DELETE", format!("/nodes/{id}"), None),
        (
            "POST",
            format!("/nodes/{id}/release"),
            Some(r#"{"image": "registry.example/app:1"}"#),
        ),
        ("POST", "/join-tokens".into(), Some(r#"{"region": "jp"}"#)),
        (
            "POST",
            "/dns/zones".into(),
            Some(r#"{"name": "example.net."}"#),
        ),
        (
            "PATCH",
            "/dns/zones/example.com.".into(),
            Some(r#"{"rrsets": []}"#),
        ),
        ("DELETE", "/dns/zones/example.com.".into(), None),
        (
            "POST",
            "/dns/backend-calls".into(),
            Some(
                r#"{"calls": [{"backend": "route53", "call": "write", "result": "ok", "count": 1}]}"#,
            ),
        ),
        (
            "POST",
            "/nodes/register".into(),
            Some(r#"{"region": "jp", "address": "127.0.0.32"}"#),
        ),
    ];
    for (method, path, body) in &writes {
        let answer = call(method, path, Some(VIEWER_TOKEN), *body);
        assert!(
            answer.status == 401 || answer.status == 403,
            "viewer {method} {path} answered {}: {}",
            answer.status,
            answer.body
        );
    }
    let node = daemon.get(&format!("/nodes/{id}")).json();
    assert_ne!(node["status"], "drain", "{node}");
    assert_eq!(daemon.get("/nodes").json().as_array().unwrap().len(), 1);

    // Backend call reports: bad ones are refused naming the field, and
    // count nothing; a good one counts.
    let route53_writes = || -> String {
        let metrics = call("GET", "/metrics", Some(VIEWER_TOKEN), None).body;
        metrics
            .lines()
            .find(|l| {
                l.starts_with(
                    "neutral_dns_backend_calls_total{backend=\"route53\",call=\"write\",result=\"ok\"}",
                )
            })
            .unwrap_or_default()
            .to_owned()
    };
    assert!(route53_writes().ends_with(" 0"), "{}", route53_writes());
    for (body, named) in [
        (
            r#"{"calls": [{"backend": "bind", "call": "write", "result": "ok", "count": 1}]}"#,
            "bind",
        ),
        (
            r#"{"calls": [{"backend": "route53", "call": "write", "result": "ok", "count": 2000000}]}"#,
            "calls[0].count",
        ),
        (r#"{"calls": [], "extra": 1}"#, "extra"),
        (r#"{"calls": "many"}"#, "calls"),
    ] {
        let answer = daemon.admin("POST", "/dns/backend-calls", Some(body));
        assert_eq!(answer.status, 400, "{body}: {}", answer.body);
        assert!(answer.body.contains(named), "{body}: {}", answer.body);
    }
    let good = daemon.admin(
        "POST",
        "/dns/backend-calls",
        Some(r#"{"calls": [{"backend": "route53", "call": "write", "result": "ok", "count": 3}]}"#),
    );
    assert_eq!(good.status, 204, "{}", good.body);
    assert!(route53_writes().ends_with(" 3"), "{}", route53_writes());
}
