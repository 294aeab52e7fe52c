//! The README's main command: `neutral demo` runs the minimal deployment end
//! to end (Git with hooks, `neutral serve`, Terraform through the scheduler,
//! nodes from the local launcher) and tells its story; it must finish, say
//! what it promised, and leave no process behind.

use std::process::Command;
use std::time::Duration;

use neutral_e2e::cluster::{free_dns_port, free_port};
use neutral_e2e::{bin, run_with_deadline, workspace_root};

#[test]
fn the_demo_tells_the_whole_story_and_cleans_up() {
    let terraform = std::env::var_os("TERRAFORM_BIN").is_some()
        || ["terraform", "tofu"].iter().any(|t| {
            Command::new(t)
                .arg("version")
                .output()
                .is_ok_and(|o| o.status.success())
        });
    if !terraform {
        eprintln!("SKIPPED: no terraform or tofu (scripts/setup installs one)");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let workdir = work.path().join("demo");
    let mut cmd = Command::new(bin("neutral"));
    cmd.arg("demo")
        .arg("--source")
        .arg(workspace_root())
        .arg("--workdir")
        .arg(&workdir)
        .arg("--listen")
        .arg(format!("127.0.0.1:{}", free_port()))
        .arg("--dns-listen")
        .arg(format!("127.0.0.1:{}", free_dns_port()));
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
}
