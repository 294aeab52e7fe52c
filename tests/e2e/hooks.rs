//! End-to-end tests of the Git hooks: the real `git` CLI pushing to a bare
//! repository whose hooks `neutral hooks install` wrote, a real `neutral
//! serve` (and agent and node service) for the what-if checks and the sync
//! trigger, and a working clone committing through `pre-commit`.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use neutral_e2e::cluster::{
    ADMIN_TOKEN, Agent, Daemon, Repo, Service, fast_config, free_port, wait_for,
};
use neutral_e2e::{Finished, bin, run_with_deadline};

const DEADLINE: Duration = Duration::from_secs(60);

/// Runs git in `dir`, returning what it did (success or not).
fn git(dir: &Path, args: &[&str]) -> Finished {
    let mut cmd = Command::new("git");
    cmd.current_dir(dir)
        .args(["-c", "user.name=e2e", "-c", "user.email=e2e@example.com"])
        .args(args);
    run_with_deadline(&mut cmd, DEADLINE)
}

/// Runs git in `dir` and fails the test unless it succeeds; its stdout.
fn git_ok(dir: &Path, args: &[&str]) -> String {
    let done = git(dir, args);
    assert_eq!(done.code, Some(0), "git {args:?}:\n{}", done.stderr);
    done.stdout.trim().to_owned()
}

fn neutral(args: &[&str]) -> Finished {
    let mut cmd = Command::new(bin("neutral"));
    cmd.args(args);
    run_with_deadline(&mut cmd, DEADLINE)
}

fn install(args: &[&str]) -> String {
    let mut all = vec!["hooks", "install"];
    all.extend_from_slice(args);
    let done = neutral(&all);
    assert_eq!(done.code, Some(0), "neutral {all:?}:\n{}", done.stderr);
    done.stdout
}

fn repo(dir: &Path, probe_port: u16) -> Repo {
    let files = fast_config(probe_port);
    let refs: Vec<(&str, &str)> = files.iter().map(|(p, t)| (*p, t.as_str())).collect();
    Repo::create(dir, &refs)
}

fn commit(repo: &Repo, message: &str) -> String {
    git_ok(&repo.work, &["add", "-A"]);
    git_ok(&repo.work, &["commit", "-q", "-m", message]);
    git_ok(&repo.work, &["rev-parse", "HEAD"])
}

fn bare_ref(repo: &Repo, name: &str) -> Option<String> {
    let done = git(&repo.bare, &["rev-parse", "--verify", "-q", name]);
    (done.code == Some(0)).then(|| done.stdout.trim().to_owned())
}

/// The lines the hooks printed (git prefixes them with `remote: `).
fn remote_lines(push: &Finished) -> Vec<String> {
    push.stderr
        .lines()
        .filter_map(|l| l.strip_prefix("remote: "))
        .map(|l| l.trim_end().to_owned())
        .collect()
}

/// The summary line without its timing, e.g. `neutral: ok: ... (12 ms)`.
fn without_timing(line: &str) -> &str {
    match line.strip_suffix(" ms)").and_then(|l| l.rsplit_once(" (")) {
        Some((head, ms)) if ms.bytes().all(|b| b.is_ascii_digit()) => head,
        _ => line,
    }
}

const JP_REGION: &str = "platform-config/regions/jp.yaml";
const JP_DOWN: &str = "name: jp\nprovider: local\nmin_nodes: 1\nmax_nodes: 5\nbase_weight: 100\nfailover: [sg]\nstate: down\n";

#[test]
fn valid_pushes_are_accepted_and_invalid_ones_rejected_with_their_diagnostics() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo(dir.path(), 8080);
    let bare = repo.bare.to_str().unwrap();
    install(&["--repo", bare]);

    repo.write(
        "infra/node-pool/jp.tfvars",
        "region        = \"jp\"\ndesired_nodes = 3\n",
    );
    let good = commit(&repo, "jp: 3 nodes");
    let push = git(&repo.work, &["push", "origin", "main"]);
    assert_eq!(push.code, Some(0), "{}", push.stderr);
    let lines = remote_lines(&push);
    assert_eq!(
        lines.iter().map(|l| without_timing(l)).collect::<Vec<_>>(),
        [
            format!(
                "neutral: ok: refs/heads/main at {}: 6 config files valid, 0 warnings; static validation only (no neutral.controlPlane)",
                &good[..7]
            ),
            format!(
                "neutral: refs/heads/main at {}; no neutral.controlPlane configured, nobody to tell",
                &good[..7]
            )
        ],
        "{}",
        push.stderr
    );
    assert_eq!(bare_ref(&repo, "main").as_deref(), Some(good.as_str()));

    // Several mistakes in two files: every one reported at its place.
    repo.write(
        JP_REGION,
        "name: jp\nprovider: local\nmin_nodes: 9\nmax_nodes: 5\nbase_weight: 100\nfailover: [sg, mars]\n",
    );
    repo.write(
        "infra/node-pool/sg.tfvars",
        "region        = \"sg\"\ndesired_nodes = many\n",
    );
    let bad = commit(&repo, "broken");
    let push = git(&repo.work, &["push", "origin", "main"]);
    assert_ne!(
        push.code,
        Some(0),
        "an invalid push must fail:\n{}",
        push.stderr
    );
    let lines = remote_lines(&push);
    let shown: Vec<&str> = lines.iter().map(|l| without_timing(l)).collect();
    expect_test::expect![[r#"
        infra/node-pool/sg.tfvars:2:17: error: `desired_nodes` must be a whole number of nodes (0 to 4294967295), found `many`
        platform-config/regions/jp.yaml:3:12: error: `min_nodes` (9) is greater than `max_nodes` (5)
        platform-config/regions/jp.yaml:6:16: error: unknown region `mars`: there is no platform-config/regions/mars.yaml
        neutral: rejected: refs/heads/main at BAD: 3 errors, 0 warnings in 2 files; static validation only (no neutral.controlPlane)"#]]
    .assert_eq(&shown.join("\n").replace(&bad[..7], "BAD"));
    assert!(
        push.stderr
            .contains("[remote rejected] main -> main (pre-receive hook declined)"),
        "{}",
        push.stderr
    );
    assert_eq!(
        bare_ref(&repo, "main").as_deref(),
        Some(good.as_str()),
        "the rejected push left the branch where it was"
    );
    assert!(
        git(&repo.bare, &["cat-file", "-e", &bad]).code != Some(0),
        "the rejected objects stayed in quarantine"
    );
}

#[test]
fn deletes_tags_other_branches_and_new_branches_are_handled() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo(dir.path(), 8080);
    let bare = repo.bare.to_str().unwrap();
    // The control plane follows main and prod.
    install(&["--repo", bare, "--branch", "main", "--branch", "prod"]);

    // An invalid commit on a branch nobody follows, and a tag on it.
    git_ok(&repo.work, &["checkout", "-q", "-b", "feature"]);
    repo.write(JP_REGION, "name: jp\nmax_nodes: lots\n");
    let broken = commit(&repo, "work in progress");
    git_ok(&repo.work, &["tag", "wip"]);
    let push = git(&repo.work, &["push", "origin", "feature", "wip"]);
    assert_eq!(push.code, Some(0), "{}", push.stderr);
    assert!(remote_lines(&push).is_empty(), "{}", push.stderr);
    assert_eq!(bare_ref(&repo, "feature").as_deref(), Some(broken.as_str()));

    // A new followed branch at that commit: its tip is judged.
    let push = git(&repo.work, &["push", "origin", "feature:prod"]);
    assert_ne!(push.code, Some(0), "{}", push.stderr);
    let lines = remote_lines(&push);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("neutral: rejected: refs/heads/prod at ")),
        "{}",
        push.stderr
    );
    assert_eq!(bare_ref(&repo, "prod"), None);

    // Created at a valid commit, then deleted: both accepted.
    let push = git(&repo.work, &["push", "origin", "main:prod"]);
    assert_eq!(push.code, Some(0), "{}", push.stderr);
    let push = git(
        &repo.work,
        &["push", "origin", ":prod", ":feature", ":refs/tags/wip"],
    );
    assert_eq!(push.code, Some(0), "{}", push.stderr);
    assert_eq!(
        remote_lines(&push),
        ["neutral: refs/heads/prod: deleted; nothing to validate"],
        "{}",
        push.stderr
    );
    assert_eq!(bare_ref(&repo, "prod"), None);
    assert_eq!(bare_ref(&repo, "feature"), None);
}

const FAST: &[&str] = &[
    "--heartbeat-interval",
    "500ms",
    "--heartbeat-timeout",
    "2s",
    "--sync-interval",
    "1h",
];

fn wait_for_commit(daemon: &Daemon, commit: &str) {
    wait_for(
        "the daemon to apply the commit",
        Duration::from_secs(20),
        || {
            let status = daemon.get("/status").json();
            (status["commit"].as_str()? == commit).then_some(())
        },
    );
}

#[test]
fn what_if_checks_use_live_health_and_post_receive_triggers_a_sync() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let repo = repo(dir.path(), port);
    let first = git_ok(&repo.work, &["rev-parse", "HEAD"]);
    let mut daemon = Daemon::start(&repo.bare, &dir.path().join("data"), FAST);
    wait_for_commit(&daemon, &first);
    let url = format!("http://{}", daemon.api);
    let token_file = dir.path().join("admin.token");
    std::fs::write(&token_file, format!("{ADMIN_TOKEN}\n")).unwrap();
    let output = install(&[
        "--repo",
        repo.bare.to_str().unwrap(),
        "--control-plane",
        &url,
        "--token-file",
        token_file.to_str().unwrap(),
    ]);
    assert!(output.contains("set neutral.controlPlane = "), "{output}");

    // jp has the only ready node; sg has none.
    let _service = Service::start("127.0.0.2", port);
    let agent = Agent::start(&daemon, dir.path(), "jp-a", "jp", "127.0.0.2");
    let id = agent.node_id();
    wait_for("jp's node to be up", Duration::from_secs(20), || {
        (daemon.node_status(&id)? == "up").then_some(())
    });

    // A valid change lands, and post-receive makes the daemon apply it at
    // once (its own sync interval is an hour).
    repo.write(
        "infra/node-pool/jp.tfvars",
        "region        = \"jp\"\ndesired_nodes = 1\n",
    );
    let landed = commit(&repo, "jp: 1 node");
    let push = git(&repo.work, &["push", "origin", "main"]);
    assert_eq!(push.code, Some(0), "{}", push.stderr);
    let lines = remote_lines(&push);
    assert!(
        lines.iter().any(|l| l.starts_with(&format!(
            "neutral: ok: refs/heads/main at {}: 6 config files valid, 0 warnings; what-if checked against 1 live node",
            &landed[..7]
        ))),
        "{}",
        push.stderr
    );
    assert!(
        lines.iter().any(|l| l.starts_with(&format!(
            "neutral: control plane {url} applied {}: jp: 1 node",
            &landed[..7]
        ))),
        "{}",
        push.stderr
    );
    let status = daemon.get("/status").json();
    assert_eq!(status["commit"].as_str(), Some(landed.as_str()), "{status}");

    // Declaring jp down would leave app.example.com without traffic.
    repo.write(JP_REGION, JP_DOWN);
    let drain = commit(&repo, "take jp down");
    let push = git(&repo.work, &["push", "origin", "main"]);
    assert_ne!(push.code, Some(0), "{}", push.stderr);
    let lines = remote_lines(&push);
    let shown: Vec<&str> = lines.iter().map(|l| without_timing(l)).collect();
    expect_test::expect![[r#"
        platform-config/regions/jp.yaml:7:8: error: this change drains `jp`, the last ready region of `app.example.com`: every region would be at weight 0 with the nodes live now (jp 100 -> 0 (declared state: down), sg 0 (down, 0 of 1 ready))
        neutral: rejected: refs/heads/main at DRAIN: 1 error, 0 warnings in 1 file; what-if checked against 1 live node"#]]
    .assert_eq(&shown.join("\n").replace(&drain[..7], "DRAIN"));
    assert_eq!(bare_ref(&repo, "main").as_deref(), Some(landed.as_str()));

    // With the control plane down the same push is accepted on static
    // validation, with a warning; post-receive says it could not tell it.
    daemon.stop();
    let push = git(&repo.work, &["push", "origin", "main"]);
    assert_eq!(push.code, Some(0), "{}", push.stderr);
    let lines = remote_lines(&push);
    assert!(
        lines.iter().any(
            |l| l.starts_with(&format!("neutral: warning: control plane {url}: "))
                && l.ends_with(
                    "decided on static validation alone (no what-if checks against live health)"
                )
        ),
        "{}",
        push.stderr
    );
    assert!(
        lines.iter().any(|l| l.starts_with(&format!(
            "neutral: ok: refs/heads/main at {}: 6 config files valid, 0 warnings; live health unavailable",
            &drain[..7]
        ))),
        "{}",
        push.stderr
    );
    assert!(
        lines.iter().any(
            |l| l.starts_with(&format!("neutral: control plane {url} unreachable"))
                && l.ends_with(&format!("it picks up {} at its next sync", &drain[..7]))
        ),
        "{}",
        push.stderr
    );
    assert_eq!(bare_ref(&repo, "main").as_deref(), Some(drain.as_str()));
}

#[test]
fn pre_commit_judges_the_staged_files_of_a_clone() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo(dir.path(), 8080);
    let work = repo.work.to_str().unwrap();
    let output = install(&["--clone", work]);
    assert!(output.starts_with("installed "), "{output}");
    let head = git_ok(&repo.work, &["rev-parse", "HEAD"]);

    // A bad staged file stops the commit.
    repo.write(
        "infra/node-pool/sg.tfvars",
        "region        = \"sg\"\ndesired_nodes = 9\n",
    );
    git_ok(&repo.work, &["add", "-A"]);
    let done = git(&repo.work, &["commit", "-q", "-m", "too many"]);
    assert_ne!(done.code, Some(0), "{}", done.stderr);
    let lines: Vec<&str> = done.stderr.lines().map(without_timing).collect();
    expect_test::expect![[r#"
        infra/node-pool/sg.tfvars:2:17: error: `desired_nodes` (9) is outside region sg's bounds [min_nodes 1, max_nodes 5]
        neutral: rejected: staged changes: 1 error, 0 warnings in 1 file; static validation only (no neutral.controlPlane)
        neutral: fix the files above and `git add` them; `git commit --no-verify` skips this check"#]]
    .assert_eq(&lines.join("\n"));
    assert_eq!(git_ok(&repo.work, &["rev-parse", "HEAD"]), head);

    // The index is judged, not the work tree: a good staged version commits
    // while the bad text stays unstaged...
    repo.write(
        "infra/node-pool/sg.tfvars",
        "region        = \"sg\"\ndesired_nodes = 2\n",
    );
    git_ok(&repo.work, &["add", "-A"]);
    repo.write(
        "infra/node-pool/sg.tfvars",
        "region        = \"sg\"\ndesired_nodes = 9\n",
    );
    let done = git(&repo.work, &["commit", "-q", "-m", "sg: 2 nodes"]);
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    assert!(
        done.stderr
            .contains("neutral: ok: staged changes: 6 config files valid"),
        "{}",
        done.stderr
    );

    // ...and `commit -a` (a temporary index, GIT_INDEX_FILE) sees it.
    let done = git(&repo.work, &["commit", "-q", "-a", "-m", "sg: 9 nodes"]);
    assert_ne!(done.code, Some(0), "{}", done.stderr);
    assert!(
        done.stderr
            .contains("infra/node-pool/sg.tfvars:2:17: error:"),
        "{}",
        done.stderr
    );

    // Commits that touch no configuration are not judged.
    git_ok(&repo.work, &["checkout", "--", "."]);
    repo.write("README.md", "hello\n");
    git_ok(&repo.work, &["add", "README.md"]);
    let done = git(&repo.work, &["commit", "-q", "-m", "readme"]);
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    assert_eq!(done.stderr, "");
}

#[test]
fn installing_again_is_harmless_and_foreign_hooks_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo(dir.path(), 8080);
    let bare = repo.bare.to_str().unwrap();
    let first = install(&["--repo", bare, "--control-plane", "http://127.0.0.1:9"]);
    let hooks = repo.bare.join("hooks");
    let pre_receive = std::fs::read_to_string(hooks.join("pre-receive")).unwrap();
    assert_eq!(
        first
            .lines()
            .map(|l| l.replace(bare, "BARE"))
            .collect::<Vec<_>>(),
        [
            "installed BARE/hooks/pre-receive",
            "installed BARE/hooks/post-receive",
            "set neutral.controlPlane = http://127.0.0.1:9",
            "set receive.advertisePushOptions = true",
        ]
    );
    let again = install(&["--repo", bare, "--control-plane", "http://127.0.0.1:9"]);
    assert_eq!(
        again
            .lines()
            .map(|l| l.replace(bare, "BARE"))
            .collect::<Vec<_>>(),
        [
            "unchanged BARE/hooks/pre-receive",
            "unchanged BARE/hooks/post-receive",
            "set neutral.controlPlane = http://127.0.0.1:9",
            "set receive.advertisePushOptions = true",
        ]
    );
    assert_eq!(
        std::fs::read_to_string(hooks.join("pre-receive")).unwrap(),
        pre_receive
    );
    assert!(
        pre_receive.contains(&format!(
            "exec '{}' hook pre-receive",
            bin("neutral").canonicalize().unwrap().display()
        )),
        "{pre_receive}"
    );
    assert_eq!(
        git_ok(&repo.bare, &["config", "--get-all", "neutral.controlPlane"]),
        "http://127.0.0.1:9"
    );

    // Somebody else's post-receive is not clobbered without --force.
    std::fs::write(hooks.join("post-receive"), "#!/bin/sh\necho deploy\n").unwrap();
    let refused = neutral(&["hooks", "install", "--repo", bare]);
    assert_eq!(refused.code, Some(2), "{}", refused.stderr);
    assert!(
        refused
            .stderr
            .contains("post-receive exists and was not installed by neutral; re-run with --force"),
        "{}",
        refused.stderr
    );
    let forced = install(&["--repo", bare, "--force"]);
    assert!(forced.contains("replaced"), "{forced}");
    assert_eq!(
        std::fs::read_to_string(hooks.join("post-receive.before-neutral")).unwrap(),
        "#!/bin/sh\necho deploy\n"
    );
}
