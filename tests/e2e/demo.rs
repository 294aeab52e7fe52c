//! The README's main command: `neutral demo` runs the minimal deployment end
//! to end (Git with hooks, `neutral serve`, Terraform through the scheduler,
//! nodes from the local launcher) and tells its story; it must finish, say
//! what it promised, and leave no process behind. `neutral demo --hosts`
//! tells the same story with every node a Docker host of its own that
//! Terraform creates through the provider's docker launcher (skipped
//! without Docker, failed without it when `CI` is set).

use std::process::Command;
use std::time::Duration;

use neutral_e2e::cluster::{free_dns_port, free_port};
use neutral_e2e::{bin, run_with_deadline, testbed, workspace_root};

#[test]
fn the_demo_tells_the_whole_story_and_cleans_up() {
    if !terraform_here() {
        eprintln!("SKIPPED: no terraform or tofu (scripts/setup installs one)");
        return;
    }
    demo(&format!("127.0.0.1:{}", free_port()), &[]);
}

/// `--hosts`: the same story with every node a Docker host of its own that
/// Terraform creates through the docker launcher; nothing of it stays in
/// Docker afterwards.
#[test]
fn the_demo_on_docker_hosts_tells_the_same_story_and_removes_its_hosts() {
    if !terraform_here() {
        eprintln!("SKIPPED: no terraform or tofu (scripts/setup installs one)");
        return;
    }
    if let Err(reason) = testbed::docker_available() {
        testbed::skip::<()>(&reason);
        return;
    }
    // The API listens on every address with --hosts: reserved ports are
    // free on all.
    let listen = format!("127.0.0.1:{}", free_port());
    let said = demo(&listen, &["--hosts"]);
    assert!(said.contains("nodes: Docker hosts of their own"), "{said}");
    assert!(said.contains("docker kill neutral-demo-"), "{said}");
    let prefix = said
        .split_whitespace()
        .find(|w| w.starts_with("neutral-demo-") && w.ends_with("-local"))
        .and_then(|w| w.strip_suffix("local"))
        .unwrap_or_else(|| panic!("no network named:\n{said}"))
        .to_owned();
    let name = format!("name={prefix}");
    let containers = testbed::docker(&["ps", "-aq", "--filter", &name]).stdout;
    assert_eq!(containers.trim(), "", "containers left");
    let networks = testbed::docker(&["network", "ls", "-q", "--filter", &name]).stdout;
    assert_eq!(networks.trim(), "", "networks left");
}

fn terraform_here() -> bool {
    neutral_e2e::services::terraform_bin().is_some()
}

/// Runs `neutral demo` with its API on `listen` and `extra` flags, checks
/// that it told the whole story and left no process behind; returns what it
/// said.
fn demo(listen: &str, extra: &[&str]) -> String {
    let work = tempfile::tempdir().unwrap();
    let workdir = work.path().join("demo");
    let mut cmd = Command::new(bin("neutral"));
    cmd.arg("demo")
        .arg("--source")
        .arg(workspace_root())
        .arg("--workdir")
        .arg(&workdir)
        .arg("--listen")
        .arg(listen)
        .arg("--dns-listen")
        .arg(format!("127.0.0.1:{}", free_dns_port()))
        .args(extra);
    let out = run_with_deadline(&mut cmd, Duration::from_secs(900));
    assert_eq!(
        out.code,
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        out.stdout,
        out.stderr
    );
    for promised in [
        "== 1. bootstrap",
        "DNS: the first node answers",
        "autoscale(local): 1 -> 2, cpu 0.85 > 0.75 for 5s",
        "DNS: DNS drops the dead node",
        "DNS: the replacement answers",
        "DNS: only backup answers",
        "autoscale(backup): 1 -> ",
        "DNS: local answers again",
        "release: ",
        "neutral runs:",
        "figures (this machine, this run):",
    ] {
        assert!(
            out.stdout.contains(promised),
            "missing `{promised}`:\n{}",
            out.stdout
        );
    }
    // Nothing of the demo keeps running.
    let ps = Command::new("ps").args(["-eo", "args"]).output().unwrap();
    let leftovers: Vec<String> = String::from_utf8_lossy(&ps.stdout)
        .lines()
        .filter(|l| l.contains(workdir.to_str().unwrap()))
        .map(str::to_owned)
        .collect();
    assert!(leftovers.is_empty(), "left running: {leftovers:#?}");
    out.stdout
}
