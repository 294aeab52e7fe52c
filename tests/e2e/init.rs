//! `neutral init`: the real binary scaffolds a platform repository that
//! `neutral validate` accepts, that `terraform fmt -check` leaves alone,
//! whose CI workflow is YAML with the documented jobs, and whose
//! pre-receive step — run here exactly as the workflow runs it — passes.
//! It never overwrites without `--force`, and bad flags write nothing.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use neutral_e2e::services::terraform_or_skip;
use neutral_e2e::{bin, run_with_deadline};
use saphyr_parser::{Event, Parser};
use serde_json::Value;

const DEADLINE: Duration = Duration::from_secs(60);

fn neutral(args: &[&str]) -> neutral_e2e::Finished {
    run_with_deadline(Command::new(bin("neutral")).args(args), DEADLINE)
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A YAML document as JSON (scalars as strings), from the parser's events.
fn yaml(text: &str) -> Value {
    let mut events = Vec::new();
    let mut parser = Parser::new_from_str(text);
    while let Some(next) = parser.next_event() {
        let (event, _) = next.unwrap_or_else(|e| panic!("YAML: {e}\n{text}"));
        events.push(event);
    }
    let mut events = events.into_iter().filter(|e| {
        !matches!(
            e,
            Event::StreamStart
                | Event::StreamEnd
                | Event::DocumentStart(_)
                | Event::DocumentEnd
                | Event::Nothing
        )
    });
    fn node<'a>(first: Event<'a>, rest: &mut impl Iterator<Item = Event<'a>>) -> Value {
        match first {
            Event::Scalar(text, ..) => Value::String(text.to_string()),
            Event::SequenceStart(..) => {
                let mut items = Vec::new();
                while let Some(event) = rest.next() {
                    if matches!(event, Event::SequenceEnd) {
                        break;
                    }
                    items.push(node(event, rest));
                }
                Value::Array(items)
            }
            Event::MappingStart(..) => {
                let mut map = serde_json::Map::new();
                while let Some(event) = rest.next() {
                    if matches!(event, Event::MappingEnd) {
                        break;
                    }
                    let Value::String(key) = node(event, rest) else {
                        panic!("a key that is not a scalar");
                    };
                    let value = rest.next().map(|e| node(e, rest)).unwrap_or(Value::Null);
                    map.insert(key, value);
                }
                Value::Object(map)
            }
            other => panic!("unexpected YAML event {other:?}"),
        }
    }
    let first = events.next().expect("a document");
    node(first, &mut events)
}

#[test]
fn init_scaffolds_a_repository_that_validates_formats_and_passes_its_own_checks() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("platform");
    let repo_arg = repo.to_str().unwrap();
    let out = neutral(&[
        "init",
        repo_arg,
        "--region",
        "jp",
        "--region",
        "sg",
        "--domain",
        "app.example.com",
        "--dns",
        "route53",
        "--provider",
        "aws",
    ]);
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains("regions jp, sg, app.example.com through route53"),
        "{}",
        out.stdout
    );

    let validated = neutral(&["validate", repo_arg]);
    assert_eq!(validated.code, Some(0), "{}", validated.stdout);
    assert!(
        validated
            .stdout
            .contains("2 regions, 1 domains, 2 autoscale policies, 2 node pools; 0 warnings"),
        "{}",
        validated.stdout
    );

    // The workflow: YAML, the checks job first, Terraform after it.
    let workflow =
        yaml(&std::fs::read_to_string(repo.join(".github/workflows/terraform.yml")).unwrap());
    let jobs = workflow["jobs"].as_object().expect("jobs");
    let names: Vec<&str> = jobs.keys().map(String::as_str).collect();
    assert_eq!(names, ["checks", "terraform"]);
    assert_eq!(jobs["terraform"]["needs"], "checks");
    let triggers: Vec<&str> = workflow["on"]
        .as_object()
        .expect("on")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        triggers,
        ["pull_request", "push", "schedule"],
        "(keys sorted)"
    );
    assert_eq!(workflow["on"]["push"]["branches"][0], "main");
    let check_steps: Vec<String> = jobs["checks"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["run"].as_str().map(str::to_owned))
        .collect();
    let pre_receive = check_steps
        .iter()
        .find(|s| s.contains("neutral hook pre-receive"))
        .expect("a pre-receive step");

    // That step, run as CI runs it, on the scaffold committed.
    git(&repo, &["init", "-q", "-b", "main"]);
    git(&repo, &["add", "-A"]);
    git(
        &repo,
        &[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "commit",
            "-q",
            "-m",
            "scaffold",
        ],
    );
    let script = pre_receive.replace(
        "${{ github.event.pull_request.base.sha || github.event.before }}",
        "",
    );
    let bin_dir = bin("neutral").parent().unwrap().to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let ran = run_with_deadline(
        Command::new("bash")
            .args(["-euo", "pipefail", "-c", &script])
            .current_dir(&repo)
            .env("PATH", path),
        DEADLINE,
    );
    assert_eq!(
        ran.code,
        Some(0),
        "{script}\n{}\n{}",
        ran.stdout,
        ran.stderr
    );
    let said = format!("{}{}", ran.stdout, ran.stderr);
    assert!(
        said.contains("neutral: ok: refs/heads/main") && said.contains("Terraform files valid"),
        "{said}"
    );

    // The CI script is there and runnable.
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(repo.join("scripts/terraform.sh"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o111, 0o111);

    // Terraform's formatter has nothing to change.
    if let Some(terraform) = terraform_or_skip("init_scaffolds_a_repository") {
        let fmt = run_with_deadline(
            Command::new(terraform)
                .args(["fmt", "-check", "-recursive", "-diff"])
                .current_dir(&repo),
            DEADLINE,
        );
        assert_eq!(fmt.code, Some(0), "{}\n{}", fmt.stdout, fmt.stderr);
    }

    // Again: nothing is replaced without --force, and the refusal lists why.
    std::fs::write(repo.join("platform-config/regions/jp.yaml"), "# edited\n").unwrap();
    let again = neutral(&["init", repo_arg, "--region", "jp"]);
    assert_eq!(again.code, Some(2), "{}", again.stdout);
    assert!(again.stderr.contains("--force"), "{}", again.stderr);
    assert!(
        again.stderr.contains("platform-config/regions/jp.yaml"),
        "{}",
        again.stderr
    );
    assert_eq!(
        std::fs::read_to_string(repo.join("platform-config/regions/jp.yaml")).unwrap(),
        "# edited\n"
    );
    let forced = neutral(&["init", repo_arg, "--region", "jp", "--force"]);
    assert_eq!(forced.code, Some(0), "{}", forced.stderr);
    assert!(
        std::fs::read_to_string(repo.join("platform-config/regions/jp.yaml"))
            .unwrap()
            .contains("name: jp")
    );
}

#[test]
fn init_with_bad_flags_names_each_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("platform");
    let out = neutral(&[
        "init",
        repo.to_str().unwrap(),
        "--region",
        "Tokyo",
        "--dns",
        "bind",
        "--domain",
        "bad-.example.com",
    ]);
    assert_eq!(out.code, Some(2), "{}", out.stdout);
    for named in ["--region Tokyo", "--dns", "--domain"] {
        assert!(out.stderr.contains(named), "{named} in {}", out.stderr);
    }
    assert!(!repo.exists(), "something was written");
}
