//! End-to-end tests of `neutral validate` and `neutral explain`: the real
//! binary on real files, checking exit codes and printed diagnostics.

use std::process::Command;
use std::time::Duration;

use neutral_e2e::{bin, copy_example_config, run_with_deadline, workspace_root, write_tree};

const DEADLINE: Duration = Duration::from_secs(20);

fn neutral(args: &[&str]) -> neutral_e2e::Finished {
    run_with_deadline(Command::new(bin("neutral")).args(args), DEADLINE)
}

#[test]
fn validate_accepts_the_example_repository() {
    let root = workspace_root();
    let out = neutral(&["validate", root.to_str().unwrap()]);
    assert_eq!(
        out.code,
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        out.stdout,
        out.stderr
    );
    assert!(out.stdout.starts_with("ok: "), "{}", out.stdout);
    assert!(
        out.stdout.contains("3 regions, 1 domains"),
        "{}",
        out.stdout
    );
}

#[test]
fn validate_reports_every_error_with_its_place_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    copy_example_config(dir.path());
    write_tree(
        dir.path(),
        &[
            (
                "infra/node-pool/jp.tfvars",
                b"region = \"jp\"\ndesired_nodes = 99\n",
            ),
            (
                "platform-config/regions/sg.yaml",
                b"name: sg\nprovider: moon\nmax_nodes: 3\n",
            ),
        ],
    );
    let out = neutral(&["validate", dir.path().to_str().unwrap()]);
    assert_eq!(
        out.code,
        Some(1),
        "stdout:\n{}\nstderr:\n{}",
        out.stdout,
        out.stderr
    );
    let errors: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.contains(": error: "))
        .collect();
    assert!(
        errors
            .iter()
            .any(|l| l.starts_with("infra/node-pool/jp.tfvars:2:")),
        "{}",
        out.stdout
    );
    assert!(
        errors
            .iter()
            .any(|l| l.starts_with("platform-config/regions/sg.yaml:2:")),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.lines().last().unwrap().starts_with("invalid: "),
        "{}",
        out.stdout
    );
}

#[test]
fn validate_json_lists_diagnostics_as_objects() {
    let dir = tempfile::tempdir().unwrap();
    copy_example_config(dir.path());
    write_tree(
        dir.path(),
        &[("platform-config/regions/sg.yaml", b"name: [unclosed\n")],
    );
    let out = neutral(&["validate", "--format", "json", dir.path().to_str().unwrap()]);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).expect("valid JSON");
    assert_eq!(doc["valid"], false);
    let first = &doc["diagnostics"][0];
    assert_eq!(first["path"], "platform-config/regions/sg.yaml");
    assert_eq!(first["severity"], "error");
    assert!(first["line"].as_u64().unwrap() >= 1);
}

#[test]
fn validate_exits_2_on_usage_and_io_errors() {
    let out = neutral(&["validate", "/nonexistent/neutral-repo"]);
    assert_eq!(out.code, Some(2));
    assert!(
        out.stderr.contains("cannot read /nonexistent/neutral-repo"),
        "{}",
        out.stderr
    );
    let empty = tempfile::tempdir().unwrap();
    let out = neutral(&["validate", empty.path().to_str().unwrap()]);
    assert_eq!(out.code, Some(2));
    assert!(
        out.stderr
            .contains("neither platform-config/ nor infra/node-pool/"),
        "{}",
        out.stderr
    );
    let out = neutral(&["validate", "--format", "yaml"]);
    assert_eq!(out.code, Some(2));
}

/// Each hostile file gets a diagnostic naming it, with the process held to
/// 200 MB of address space by the kernel and killed if it runs away.
#[test]
fn validate_survives_hostile_trees_within_200_mb() {
    let dir = tempfile::tempdir().unwrap();
    copy_example_config(dir.path());
    let mut bomb = String::from(
        "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    for i in 1..10u8 {
        let prev = (b'a' + i - 1) as char;
        let name = (b'a' + i) as char;
        bomb.push_str(&format!("{name}: &{name} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"));
    }
    let deep_seq = "[".repeat(10_000) + &"]".repeat(10_000);
    let deep_map = "a:\n".to_owned()
        + &(1..10_000)
            .map(|i| format!("{}a:\n", " ".repeat(i)))
            .collect::<String>();
    let huge = "# padding\n".repeat(5 * 1024 * 1024);
    write_tree(
        dir.path(),
        &[
            ("platform-config/gtm/bomb.yaml", bomb.as_bytes()),
            ("platform-config/gtm/deep-seq.yaml", deep_seq.as_bytes()),
            ("platform-config/gtm/deep-map.yaml", deep_map.as_bytes()),
            ("platform-config/gtm/huge.yaml", huge.as_bytes()),
            (
                "platform-config/gtm/latin1.yaml",
                b"domain: caf\xe9.example.com\n",
            ),
            (
                "platform-config/regions/dup.yaml",
                b"name: dup\nname: dup\n",
            ),
        ],
    );
    std::os::unix::fs::symlink(
        "../../../../etc/passwd",
        dir.path().join("platform-config/gtm/evil.yaml"),
    )
    .unwrap();
    let mut cmd = Command::new("prlimit");
    cmd.arg(format!("--as={}", 200 * 1024 * 1024))
        .arg(bin("neutral"))
        .args(["validate", dir.path().to_str().unwrap()]);
    let out = run_with_deadline(&mut cmd, DEADLINE);
    assert_eq!(
        out.code,
        Some(1),
        "stdout:\n{}\nstderr:\n{}",
        out.stdout,
        out.stderr
    );
    for file in ["bomb", "deep-seq", "deep-map", "huge", "latin1", "evil"] {
        let prefix = format!("platform-config/gtm/{file}.yaml:");
        assert!(
            out.stdout
                .lines()
                .any(|l| l.starts_with(&prefix) && l.contains(": error: ")),
            "no error for {file}:\n{}",
            out.stdout
        );
    }
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with("platform-config/regions/dup.yaml:2:1: error: ")),
        "{}",
        out.stdout
    );
}

#[test]
fn explain_prints_weights_and_decisions_with_reasons() {
    let root = workspace_root();
    let state = root.join("examples/state/cpu-high.json");
    let out = neutral(&[
        "explain",
        "--state",
        state.to_str().unwrap(),
        root.to_str().unwrap(),
    ]);
    assert_eq!(
        out.code,
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        out.stdout,
        out.stderr
    );
    expect_test::expect_file!["snapshots/explain-cpu-high.txt"].assert_eq(&out.stdout);

    let out = neutral(&[
        "explain",
        "--format",
        "json",
        "--state",
        state.to_str().unwrap(),
        root.to_str().unwrap(),
    ]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).expect("valid JSON");
    let answers = doc["weights"]["domains"]["app.example.com"]["answers"]
        .as_array()
        .unwrap();
    let ids: Vec<&str> = answers
        .iter()
        .map(|a| a["node_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["jp-1", "sg-1"]);
    assert_eq!(doc["autoscale"]["jp"]["action"]["kind"], "scale_out");
    assert_eq!(doc["autoscale"]["jp"]["action"]["to"], 2);
}

#[test]
fn explain_rejects_a_broken_state_file_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    std::fs::write(
        &state,
        r#"{"nodes": [{"id": "x", "region": "jp", "ip": "300.0.0.1", "status": "up"}]}"#,
    )
    .unwrap();
    let root = workspace_root();
    let out = neutral(&[
        "explain",
        "--state",
        state.to_str().unwrap(),
        root.to_str().unwrap(),
    ]);
    assert_eq!(out.code, Some(2));
    assert!(
        out.stderr
            .contains("nodes[0] (x).ip: `300.0.0.1` is not an IP address"),
        "{}",
        out.stderr
    );
}

/// `neutral agent --log-format json`: every log line is one JSON object
/// (for log shippers); the default stays text for people.
#[test]
fn the_agent_logs_json_lines_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("join-token");
    std::fs::write(&token_file, "\n").unwrap();
    let agent = |format: &str| {
        neutral(&[
            "agent",
            "--control-plane",
            "http://127.0.0.1:9",
            "--region",
            "jp",
            "--ip",
            "127.0.0.2",
            "--join-token-file",
            token_file.to_str().unwrap(),
            "--log-format",
            format,
        ])
    };
    let json = agent("json");
    assert_ne!(
        json.code,
        Some(0),
        "an empty token file must stop the agent"
    );
    let logged: Vec<serde_json::Value> = json
        .stderr
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    let stopped = logged
        .iter()
        .find(|entry| entry["fields"]["message"] == "agent stopped")
        .unwrap_or_else(|| {
            panic!(
                "no JSON log line saying the agent stopped:\n{}",
                json.stderr
            )
        });
    assert_eq!(stopped["level"], "ERROR", "{stopped}");
    assert!(
        stopped["fields"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("join-token")),
        "the error names the file: {stopped}"
    );
    let text = agent("text");
    assert!(text.stderr.contains("agent stopped"), "{}", text.stderr);
    assert!(
        text.stderr
            .lines()
            .all(|line| serde_json::from_str::<serde_json::Value>(line).is_err()),
        "text logs are not JSON:\n{}",
        text.stderr
    );
    let bad = agent("yaml");
    assert_eq!(bad.code, Some(2), "{}", bad.stderr);
    assert!(bad.stderr.contains("--log-format"), "{}", bad.stderr);
}
