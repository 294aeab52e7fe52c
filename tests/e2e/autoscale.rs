//! End-to-end tests of the autoscaler inside `neutral serve`: metrics fed to
//! real agents through their metrics files, decisions carried out as commits
//! pushed to a real bare repository, drains published to DNS.

use std::time::Duration;

use neutral_e2e::cluster::{Agent, Daemon, Repo, Service, fast_config, free_port, wait_for};

const ARGS: &[&str] = &[
    "--heartbeat-interval",
    "300ms",
    "--heartbeat-timeout",
    "2s",
    "--sync-interval",
    "1s",
    "--autoscale-interval",
    "500ms",
];

const POLICY: &str = "region: jp
scale_up:   { cpu_above: 0.75, for: 2s, step: 1 }
scale_down: { cpu_below: 0.30, for: 2s, step: 1 }
cooldown: 1s
";

const JP_POOL: &str = "# jp's node pool: people and the autoscaler both edit this file.
region        = \"jp\"   # must match the file name
desired_nodes = 1      # the autoscaler rewrites only this value
";

fn git(repo: &Repo, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(&repo.bare)
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn sustained_cpu_scales_out_by_commit_and_low_cpu_scales_in_with_a_drain() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut files = fast_config(port);
    files.retain(|(p, _)| *p != "infra/node-pool/jp.tfvars");
    files.push(("infra/node-pool/jp.tfvars", JP_POOL.to_owned()));
    files.push(("platform-config/autoscale/jp.yaml", POLICY.to_owned()));
    let refs: Vec<(&str, &str)> = files.iter().map(|(p, t)| (*p, t.as_str())).collect();
    let repo = Repo::create(dir.path(), &refs);
    let daemon = Daemon::start(&repo.bare, &dir.path().join("data"), ARGS);
    let _services = [
        Service::start("127.0.0.30", port),
        Service::start("127.0.0.31", port),
    ];
    let first = Agent::start(&daemon, dir.path(), "jp-1", "jp", "127.0.0.30");
    let first_id = first.node_id();
    wait_for("jp-1 up", Duration::from_secs(20), || {
        daemon.node(&first_id).filter(|n| n["status"] == "up")
    });

    // CPU 0.82 sustained: the autoscaler commits desired_nodes = 2.
    first.set_metrics(0.82, 5.0, 0.0);
    let subject = wait_for("the scale-out commit", Duration::from_secs(20), || {
        let subject = git(&repo, &["log", "-1", "--format=%s", "main"]);
        subject.starts_with("autoscale(jp)").then_some(subject)
    });
    assert!(
        subject.starts_with("autoscale(jp): 1 -> 2, cpu 0.82 > 0.75 for 2s"),
        "{subject}"
    );
    assert_eq!(
        git(&repo, &["log", "-1", "--format=%an <%ae>", "main"]),
        "neutral autoscaler <autoscaler@neutral.invalid>"
    );
    assert_eq!(
        git(&repo, &["show", "main:infra/node-pool/jp.tfvars"]),
        JP_POOL
            .replace("desired_nodes = 1 ", "desired_nodes = 2 ")
            .trim_end(),
        "only the value changed"
    );
    // The daemon applied it: jp now expects two nodes.
    wait_for("desired_nodes 2 applied", Duration::from_secs(10), || {
        let regions = daemon.get("/regions").json();
        (regions[0]["desired_nodes"] == 2).then_some(())
    });

    // While the action is in flight (the new node has not registered), no
    // second scale-out happens even though CPU stays high.
    std::thread::sleep(Duration::from_secs(3));
    let count = git(&repo, &["rev-list", "--count", "main"]);
    assert_eq!(count, "2", "a second action while the first was in flight");

    // The second node arrives (what Terraform would start); CPU drops.
    let second = Agent::start(&daemon, dir.path(), "jp-2", "jp", "127.0.0.31");
    let second_id = second.node_id();
    wait_for("jp-2 up", Duration::from_secs(20), || {
        daemon.node(&second_id).filter(|n| n["status"] == "up")
    });
    first.set_metrics(0.12, 5.0, 0.0);
    second.set_metrics(0.05, 5.0, 0.0);
    let subject = wait_for("the scale-in commit", Duration::from_secs(30), || {
        let subject = git(&repo, &["log", "-1", "--format=%s", "main"]);
        subject
            .starts_with("autoscale(jp): 2 -> 1")
            .then_some(subject)
    });
    assert!(subject.contains("cpu"), "{subject}");
    // The least loaded node was drained first.
    let drained = daemon.node(&second_id).unwrap();
    assert_eq!(drained["status"], "drain", "{drained}");
    assert_eq!(daemon.node(&first_id).unwrap()["status"], "up");
    let audit = daemon
        .admin("GET", "/audit?kind=autoscale.drain", None)
        .json();
    assert!(
        audit[0]["message"].as_str().unwrap().contains(&second_id),
        "{audit}"
    );

    // The leader read these samples from memory, at most what the policy's
    // windows need: 2 × 2 s + 30 s at one kept sample per 1.8 s (the
    // store's spacing for an hour's 2,000), and 2 more, per node.
    let metrics = daemon.admin("GET", "/metrics", None).body;
    let gauge = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {metrics}"))
    };
    assert_eq!(gauge("neutral_autoscale_sampled_nodes"), 2.0, "{metrics}");
    let samples = gauge("neutral_autoscale_samples_in_memory");
    assert!(
        (2.0..=2.0 * 20.0).contains(&samples),
        "{samples} samples in memory"
    );
}
