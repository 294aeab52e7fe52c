//! `neutral status` against a real `neutral serve` with real agents: the
//! picture names the nodes, their status and the answers each domain serves,
//! follows a node's death, prints the same data as JSON, redraws with
//! `--watch`, and fails clearly on an unreachable control plane.

use std::process::Command;
use std::time::Duration;

use neutral_e2e::cluster::{Agent, Daemon, Repo, Service, fast_config, free_port, wait_for};
use neutral_e2e::{bin, run_with_deadline};
use serde_json::Value;

const FAST: &[&str] = &[
    "--heartbeat-interval",
    "500ms",
    "--heartbeat-timeout",
    "2s",
    "--sync-interval",
    "1s",
    "--no-autoscale",
];

fn status(daemon: &Daemon, extra: &[&str]) -> neutral_e2e::Finished {
    run_with_deadline(
        Command::new(bin("neutral"))
            .args([
                "status",
                "--control-plane",
                &format!("http://{}", daemon.api),
            ])
            .args(extra)
            .env_remove("NEUTRAL_VIEWER_TOKEN")
            .env("NEUTRAL_ADMIN_TOKEN", neutral_e2e::cluster::ADMIN_TOKEN),
        Duration::from_secs(30),
    )
}

/// The row of the NODES table for `id`.
fn node_row<'a>(text: &'a str, id: &str) -> &'a str {
    let nodes = text.split("\nNODES\n").nth(1).expect("a NODES section");
    nodes
        .lines()
        .find(|l| l.starts_with(id))
        .unwrap_or_else(|| panic!("no row for {id} in\n{text}"))
}

#[test]
fn status_shows_regions_answers_nodes_and_follows_a_death() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let files = fast_config(port);
    let refs: Vec<(&str, &str)> = files.iter().map(|(p, t)| (*p, t.as_str())).collect();
    let repo = Repo::create(dir.path(), &refs);
    let daemon = Daemon::start(&repo.bare, &dir.path().join("data"), FAST);
    let _services: Vec<Service> = ["127.0.60.2", "127.0.60.3", "127.0.60.4"]
        .iter()
        .map(|ip| Service::start(ip, port))
        .collect();
    let _jp_a = Agent::start(&daemon, dir.path(), "jp-a", "jp", "127.0.60.2");
    let mut jp_b = Agent::start(&daemon, dir.path(), "jp-b", "jp", "127.0.60.3");
    let _sg_a = Agent::start(&daemon, dir.path(), "sg-a", "sg", "127.0.60.4");
    let ids = [_jp_a.node_id(), jp_b.node_id(), _sg_a.node_id()];
    for id in &ids {
        wait_for(&format!("{id} up"), Duration::from_secs(20), || {
            (daemon.node_status(id).as_deref() == Some("up")).then_some(())
        });
    }

    let all_up = status(&daemon, &[]);
    assert_eq!(all_up.code, Some(0), "{}", all_up.stderr);
    let text = &all_up.stdout;
    for id in &ids {
        assert!(node_row(text, id).contains(" up "), "{text}");
    }
    assert!(
        text.contains("jp      up     up      2/2"),
        "jp fully ready: {text}"
    );
    assert!(
        text.contains("app.example.com A ttl 30 via embedded: normal"),
        "{text}"
    );
    for ip in ["127.0.60.2", "127.0.60.3", "127.0.60.4"] {
        assert!(
            text.lines().any(|l| l.trim_start().starts_with(ip)),
            "{ip} answers: {text}"
        );
    }
    assert!(
        text.contains("CPU") && text.contains("20%"),
        "agent metrics: {text}"
    );

    // A node dies: the next picture shows it down, jp degraded, and its
    // address no longer among the answers.
    jp_b.stop();
    wait_for("jp-b down", Duration::from_secs(10), || {
        (daemon.node_status(&ids[1]).as_deref() == Some("down")).then_some(())
    });
    let after = status(&daemon, &[]);
    assert_eq!(after.code, Some(0), "{}", after.stderr);
    let text = &after.stdout;
    assert!(node_row(text, &ids[1]).contains(" down "), "{text}");
    assert!(text.contains("jp      up     degraded  1/2"), "{text}");
    let domains = text.split("\nDOMAINS\n").nth(1).unwrap();
    let domains = domains.split("\nNODES\n").next().unwrap();
    assert!(
        !domains
            .lines()
            .any(|l| l.trim_start().starts_with("127.0.60.3")),
        "the dead node still answers: {text}"
    );

    // The same data as JSON.
    let json = status(&daemon, &["--format", "json"]);
    assert_eq!(json.code, Some(0), "{}", json.stderr);
    let doc: Value = serde_json::from_str(&json.stdout).expect("JSON");
    let node = doc["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == ids[1].as_str())
        .expect("the dead node");
    assert_eq!(node["status"], "down");
    assert_eq!(doc["domains"][0]["domain"], "app.example.com");
    assert_eq!(doc["domains"][0]["answers"].as_array().unwrap().len(), 2);
    assert_eq!(doc["regions"].as_array().unwrap().len(), 3);

    // --watch redraws until --count pictures.
    let watch = status(&daemon, &["--watch", "1", "--count", "2"]);
    assert_eq!(watch.code, Some(0), "{}", watch.stderr);
    assert_eq!(watch.stdout.matches("\x1b[H\x1b[2J").count(), 2);
    assert_eq!(watch.stdout.matches("\nNODES\n").count(), 2);
    assert!(
        watch.elapsed >= Duration::from_secs(1),
        "{:?}",
        watch.elapsed
    );
}

#[test]
fn an_unreachable_control_plane_is_a_clear_error() {
    let port = free_port();
    let out = run_with_deadline(
        Command::new(bin("neutral")).args([
            "status",
            "--control-plane",
            &format!("http://127.0.0.1:{port}"),
        ]),
        Duration::from_secs(30),
    );
    assert_eq!(out.code, Some(2));
    assert!(
        out.stderr.contains("cannot reach the control plane"),
        "{}",
        out.stderr
    );
    // While watching, it keeps trying and says so.
    let out = run_with_deadline(
        Command::new(bin("neutral")).args([
            "status",
            "--control-plane",
            &format!("http://127.0.0.1:{port}"),
            "--watch",
            "1",
            "--count",
            "2",
        ]),
        Duration::from_secs(30),
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(
        out.stdout.matches("trying again in 1s").count(),
        2,
        "{}",
        out.stdout
    );
    // A token file that cannot be read, or holds nothing, is named.
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty-token");
    std::fs::write(&empty, "\n").unwrap();
    for (file, message) in [
        (dir.path().join("missing-token"), "cannot read token file"),
        (empty, "is empty"),
    ] {
        let out = run_with_deadline(
            Command::new(bin("neutral")).args([
                "status",
                "--control-plane",
                &format!("http://127.0.0.1:{port}"),
                "--token-file",
                file.to_str().unwrap(),
            ]),
            Duration::from_secs(30),
        );
        assert_eq!(out.code, Some(2));
        assert!(out.stderr.contains(message), "{}", out.stderr);
    }
    // --count without --watch is a usage error.
    let out = run_with_deadline(
        Command::new(bin("neutral")).args(["status", "--count", "2"]),
        Duration::from_secs(30),
    );
    assert_eq!(out.code, Some(2), "{}", out.stderr);
}
