//! Running the `terraform` CLI: `init`, `plan -detailed-exitcode -out`, and,
//! when the plan has changes and the run may apply, `apply` of exactly that
//! saved plan. Every command runs with a deadline, its output is captured
//! into the run's log, and a failed run says whether retrying may help
//! (a held state lock, an unreachable API) or not (a configuration error).
//!
//! State lives where the scheduler says (`RunRequest::state_path`, through a
//! generated `backend "local"` override) unless the root declares its own
//! backend; Terraform's own lock (`-lock-timeout`) serialises writers.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::process::Command;

use crate::plan::{PlanSummary, summarize};

/// The name of the override file the runner writes into a root.
pub const BACKEND_OVERRIDE: &str = "_neutral_backend_override.tf";

/// A `terraform`-compatible binary (Terraform or OpenTofu).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Terraform {
    pub bin: PathBuf,
}

impl Terraform {
    /// Picks the binary: `explicit`, else `$TERRAFORM_BIN`, else `terraform`
    /// or `tofu` on `PATH`, else the first existing of `fallbacks`.
    pub fn find(explicit: Option<&Path>, fallbacks: &[PathBuf]) -> Option<Terraform> {
        if let Some(bin) = explicit {
            return Some(Terraform {
                bin: bin.to_path_buf(),
            });
        }
        if let Some(bin) = std::env::var_os("TERRAFORM_BIN").filter(|v| !v.is_empty()) {
            return Some(Terraform {
                bin: PathBuf::from(bin),
            });
        }
        let path = std::env::var_os("PATH").unwrap_or_default();
        for name in ["terraform", "tofu"] {
            for dir in std::env::split_paths(&path) {
                let candidate = dir.join(name);
                if candidate.is_file() {
                    return Some(Terraform { bin: candidate });
                }
            }
        }
        fallbacks
            .iter()
            .find(|p| p.is_file())
            .map(|bin| Terraform { bin: bin.clone() })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error("cannot prepare {path}: {source}")]
    Prepare {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// One run of one root and workspace.
#[derive(Clone, Debug)]
pub struct RunRequest {
    /// The root's directory (inside an exported commit tree).
    pub workdir: PathBuf,
    /// `TF_DATA_DIR` for this root and workspace (`.terraform` contents).
    pub data_dir: PathBuf,
    /// Where the local backend keeps this workspace's state.
    pub state_path: PathBuf,
    pub var_files: Vec<PathBuf>,
    pub targets: Vec<String>,
    pub plan_only: bool,
    /// Environment for this run's commands only (after the runner's own),
    /// the same for its plan and its apply.
    pub env: Vec<(String, String)>,
}

/// How a run ended.
#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    pub succeeded: bool,
    /// What the plan said; `None` when the run failed before planning.
    pub summary: Option<PlanSummary>,
    /// Whether an apply ran and succeeded.
    pub applied: bool,
    /// The exit code of the last command.
    pub exit_code: Option<i32>,
    /// A failure retrying may fix (held lock, unreachable API, timeout).
    pub transient: bool,
    pub log: String,
    pub duration: Duration,
}

/// Runs Terraform with a fixed environment (CLI configuration, provider
/// settings and credentials; never logged).
#[derive(Clone, Debug)]
pub struct Runner {
    pub terraform: Terraform,
    pub env: Vec<(String, String)>,
    /// Upper bound for each command.
    pub command_timeout: Duration,
    /// `-lock-timeout` for plan and apply.
    pub lock_timeout: Duration,
}

/// Failures worth a retry, as Terraform and providers print them.
const TRANSIENT: &[&str] = &[
    "Error acquiring the state lock",
    "connection refused",
    "Connection refused",
    "i/o timeout",
    "timed out",
    "TLS handshake timeout",
    "503 Service Unavailable",
    "429 Too Many Requests",
    "connection reset",
    // Live health changed between plan and apply (the GTM record computes
    // its answers from live health); a fresh plan applies cleanly.
    STALE_PLAN,
];

/// Whether a failed run's log shows a failure a retry may fix.
pub fn is_transient(log: &str) -> bool {
    TRANSIENT.iter().any(|needle| log.contains(needle))
}

/// The apply-time re-plan differed from the saved plan: what the provider
/// read moved between plan and apply.
const STALE_PLAN: &str = "Provider produced inconsistent final plan";
/// Attempts of a run whose failure looks transient.
const ATTEMPTS: u32 = 3;
/// Attempts of a run whose plan keeps going stale.
const STALE_PLAN_ATTEMPTS: u32 = 5;

impl Outcome {
    /// Whether to retry after attempt `attempt` (1-based) ended like this,
    /// and after how long: a stale plan at once (a fresh plan fixes it;
    /// waiting would only delay the change), up to 5 attempts; another
    /// transient failure after 1 s, 2 s, up to 3 attempts; else not.
    pub fn retry_after(&self, attempt: u32) -> Option<std::time::Duration> {
        if self.succeeded || !self.transient {
            None
        } else if self.log.contains(STALE_PLAN) {
            (attempt < STALE_PLAN_ATTEMPTS).then_some(std::time::Duration::ZERO)
        } else {
            // The core's schedule without jitter: 1 s, 2 s, …
            (attempt < ATTEMPTS).then(|| {
                neutral_core::backoff::Backoff::new(
                    std::time::Duration::from_secs(1),
                    std::time::Duration::from_secs(60),
                )
                .ceiling(attempt)
            })
        }
    }
}

/// Whether any `.tf` file of `dir` declares its own backend.
fn declares_backend(dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|entry| {
        let path = entry.path();
        path.extension().is_some_and(|e| e == "tf")
            && path.file_name().is_some_and(|n| n != BACKEND_OVERRIDE)
            && std::fs::read_to_string(&path).is_ok_and(|text| text.contains("backend \""))
    })
}

impl Runner {
    pub async fn run(&self, request: &RunRequest) -> Result<Outcome, RunnerError> {
        let start = Instant::now();
        let prepare = |path: &Path, source| RunnerError::Prepare {
            path: path.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(&request.data_dir).map_err(|e| prepare(&request.data_dir, e))?;
        if let Some(parent) = request.state_path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| prepare(parent, e))?;
        }
        if !declares_backend(&request.workdir) {
            let override_path = request.workdir.join(BACKEND_OVERRIDE);
            let state = request
                .state_path
                .display()
                .to_string()
                .replace('\\', "\\\\")
                .replace('"', "\\\"");
            std::fs::write(
                &override_path,
                format!("# Written by neutral's scheduler: state outside the checkout.\nterraform {{\n  backend \"local\" {{\n    path = \"{state}\"\n  }}\n}}\n"),
            )
            .map_err(|e| prepare(&override_path, e))?;
        }
        let plan_file = request.data_dir.join("neutral.tfplan");
        let mut log = String::new();
        let lock = format!("-lock-timeout={}s", self.lock_timeout.as_secs());

        let init = self
            .step(
                request,
                &mut log,
                &["init", "-input=false", "-no-color", "-reconfigure"],
            )
            .await;
        if init != Some(0) {
            return Ok(self.failed(init, log, start));
        }

        let mut plan_args: Vec<String> = vec![
            "plan".into(),
            "-input=false".into(),
            "-no-color".into(),
            "-detailed-exitcode".into(),
            lock.clone(),
            format!("-out={}", plan_file.display()),
        ];
        plan_args.extend(
            request
                .var_files
                .iter()
                .map(|f| format!("-var-file={}", f.display())),
        );
        plan_args.extend(request.targets.iter().map(|t| format!("-target={t}")));
        let plan_refs: Vec<&str> = plan_args.iter().map(String::as_str).collect();
        let plan = self.step(request, &mut log, &plan_refs).await;
        match plan {
            Some(0) => {
                return Ok(Outcome {
                    succeeded: true,
                    summary: Some(PlanSummary::default()),
                    applied: false,
                    exit_code: Some(0),
                    transient: false,
                    log,
                    duration: start.elapsed(),
                });
            }
            Some(2) => {}
            other => return Ok(self.failed(other, log, start)),
        }
        let plan_path = plan_file.display().to_string();
        let (show_code, show_json) = self
            .capture(request, &["show", "-json", "-no-color", &plan_path])
            .await;
        let summary = match (show_code, summarize(&show_json)) {
            (Some(0), Ok(summary)) => summary,
            (code, parsed) => {
                log.push_str(&format!(
                    "\n$ terraform show -json: exit {code:?}, {}\n",
                    parsed.err().map_or_else(String::new, |e| e.to_string())
                ));
                return Ok(self.failed(code, log, start));
            }
        };
        if request.plan_only {
            return Ok(Outcome {
                succeeded: true,
                summary: Some(summary),
                applied: false,
                exit_code: Some(2),
                transient: false,
                log,
                duration: start.elapsed(),
            });
        }
        let apply = self
            .step(
                request,
                &mut log,
                &["apply", "-input=false", "-no-color", &lock, &plan_path],
            )
            .await;
        Ok(Outcome {
            succeeded: apply == Some(0),
            transient: apply != Some(0) && is_transient(&log),
            summary: Some(summary),
            applied: apply == Some(0),
            exit_code: apply,
            log,
            duration: start.elapsed(),
        })
    }

    fn failed(&self, code: Option<i32>, log: String, start: Instant) -> Outcome {
        Outcome {
            succeeded: false,
            summary: None,
            applied: false,
            exit_code: code,
            transient: is_transient(&log),
            log,
            duration: start.elapsed(),
        }
    }

    fn command(&self, request: &RunRequest, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.terraform.bin);
        cmd.args(args)
            .current_dir(&request.workdir)
            .env("TF_IN_AUTOMATION", "1")
            .env("TF_INPUT", "0")
            .env("TF_DATA_DIR", &request.data_dir)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .envs(request.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd
    }

    /// Runs one command, appending `$ terraform <args>` and its output to
    /// `log`; returns its exit code (`None`: could not run or timed out).
    async fn step(&self, request: &RunRequest, log: &mut String, args: &[&str]) -> Option<i32> {
        log.push_str(&format!("$ terraform {}\n", args.join(" ")));
        let started = Instant::now();
        let output =
            tokio::time::timeout(self.command_timeout, self.command(request, args).output()).await;
        match output {
            Ok(Ok(output)) => {
                log.push_str(&String::from_utf8_lossy(&output.stdout));
                log.push_str(&String::from_utf8_lossy(&output.stderr));
                log.push_str(&format!(
                    "[exit {:?} after {} ms]\n",
                    output.status.code(),
                    started.elapsed().as_millis()
                ));
                output.status.code()
            }
            Ok(Err(err)) => {
                log.push_str(&format!(
                    "cannot run {}: {err}\n",
                    self.terraform.bin.display()
                ));
                None
            }
            Err(_) => {
                log.push_str(&format!("timed out after {:?}\n", self.command_timeout));
                None
            }
        }
    }

    /// Runs one command and returns its exit code and stdout.
    async fn capture(&self, request: &RunRequest, args: &[&str]) -> (Option<i32>, String) {
        match tokio::time::timeout(self.command_timeout, self.command(request, args).output()).await
        {
            Ok(Ok(output)) => (
                output.status.code(),
                String::from_utf8_lossy(&output.stdout).into_owned(),
            ),
            _ => (None, String::new()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runner() -> Option<Runner> {
        let terraform = Terraform::find(None, &[])?;
        Some(Runner {
            terraform,
            env: Vec::new(),
            command_timeout: Duration::from_secs(120),
            lock_timeout: Duration::from_secs(10),
        })
    }

    fn root(dir: &Path, value: &str) -> PathBuf {
        let root = dir.join("root");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(
            root.join("main.tf"),
            format!(
                "variable \"extra\" {{\n  default = \"\"\n}}\nresource \"terraform_data\" \"a\" {{\n  input = \"{value}${{var.extra}}\"\n}}\nresource \"terraform_data\" \"b\" {{\n  input = \"fixed\"\n}}\n"
            ),
        )
        .unwrap();
        root
    }

    fn request(dir: &Path, workdir: PathBuf) -> RunRequest {
        RunRequest {
            workdir,
            data_dir: dir.join("data"),
            state_path: dir.join("state/default.tfstate"),
            var_files: Vec::new(),
            targets: Vec::new(),
            plan_only: false,
            env: Vec::new(),
        }
    }

    #[tokio::test]
    async fn plans_then_applies_the_saved_plan_and_a_second_run_is_empty() {
        let Some(runner) = runner() else {
            eprintln!("SKIPPED: no terraform or tofu on PATH and TERRAFORM_BIN unset");
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let req = request(dir.path(), root(dir.path(), "one"));
        let first = runner.run(&req).await.unwrap();
        assert!(first.succeeded, "{}", first.log);
        assert!(first.applied);
        let summary = first.summary.unwrap();
        assert_eq!(
            (summary.adds, summary.changes, summary.destroys),
            (2, 0, 0),
            "{}",
            first.log
        );
        assert!(req.state_path.is_file(), "state kept outside the checkout");
        assert!(!req.workdir.join("terraform.tfstate").exists());

        let again = runner.run(&req).await.unwrap();
        assert!(again.succeeded && !again.applied, "{}", again.log);
        assert!(again.summary.unwrap().is_empty());

        // A change, planned only (drift check): reported, not applied.
        let changed = RunRequest {
            plan_only: true,
            ..request(dir.path(), root(dir.path(), "two"))
        };
        let drift = runner.run(&changed).await.unwrap();
        assert!(drift.succeeded && !drift.applied, "{}", drift.log);
        let drift_summary = drift.summary.unwrap();
        assert_eq!(
            (
                drift_summary.adds,
                drift_summary.changes,
                drift_summary.destroys
            ),
            (0, 1, 0),
            "a's input changes in place"
        );
        // Targeted apply touches only the target.
        let targeted = RunRequest {
            targets: vec!["terraform_data.a".into()],
            ..request(dir.path(), root(dir.path(), "two"))
        };
        let out = runner.run(&targeted).await.unwrap();
        assert!(out.applied, "{}", out.log);
        let summary = out.summary.unwrap();
        assert_eq!(summary.resources.len(), 1, "{:?}", summary.resources);
    }

    #[tokio::test]
    async fn configuration_errors_fail_without_being_called_transient() {
        let Some(runner) = runner() else {
            eprintln!("SKIPPED: no terraform or tofu on PATH and TERRAFORM_BIN unset");
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("bad");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(
            root.join("main.tf"),
            "resource \"terraform_data\" \"a\" {\n  input = var.missing\n}\n",
        )
        .unwrap();
        let out = runner.run(&request(dir.path(), root)).await.unwrap();
        assert!(!out.succeeded);
        assert!(!out.transient);
        assert!(
            out.log.contains("var.missing") || out.log.contains("undeclared"),
            "{}",
            out.log
        );
    }

    #[test]
    fn held_locks_and_unreachable_apis_are_transient() {
        assert!(is_transient("Error: Error acquiring the state lock\n"));
        assert!(is_transient(
            "dial tcp 127.0.0.1:7400: connect: connection refused"
        ));
        assert!(!is_transient(
            "Error: Reference to undeclared input variable"
        ));
    }

    #[test]
    fn a_stale_plan_is_retried_at_once_other_failures_back_off() {
        use std::time::Duration;
        let failed = |log: &str| Outcome {
            succeeded: false,
            summary: None,
            applied: false,
            exit_code: Some(1),
            transient: is_transient(log),
            log: log.to_owned(),
            duration: Duration::ZERO,
        };
        let stale = failed("Error: Provider produced inconsistent final plan\n");
        let retries: Vec<_> = (1..=6).map(|a| stale.retry_after(a)).collect();
        assert_eq!(
            retries,
            [Some(Duration::ZERO); 4]
                .into_iter()
                .chain([None, None])
                .collect::<Vec<_>>()
        );
        let locked = failed("Error: Error acquiring the state lock\n");
        let retries: Vec<_> = (1..=3).map(|a| locked.retry_after(a)).collect();
        assert_eq!(
            retries,
            [
                Some(Duration::from_secs(1)),
                Some(Duration::from_secs(2)),
                None
            ]
        );
        assert_eq!(failed("Error: Unsupported argument\n").retry_after(1), None);
        let done = Outcome {
            succeeded: true,
            ..failed("Error: Error acquiring the state lock\n")
        };
        assert_eq!(done.retry_after(1), None);
    }
}
