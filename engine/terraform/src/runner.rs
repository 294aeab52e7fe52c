//! Running the `terraform` CLI: `init`, `plan -detailed-exitcode -out`, and,
//! when the plan has changes and the run may apply, `apply` of exactly that
//! saved plan. Every command runs with a deadline, its output is captured
//! into the run's log, and a failed run says whether retrying may help
//! (a held state lock, an unreachable API) or not (a configuration error).
//!
//! State lives where the scheduler says (`RunRequest::state_path`, through a
//! generated `backend "local"` override, always written: the Terraform
//! policy refuses a root's own backend); Terraform's own lock
//! (`-lock-timeout`) serialises writers.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::process::Command;

use crate::plan::{PlanSummary, summarize};

/// util-linux's `setpriv`, when installed (Debian's `util-linux` is
/// essential, so it is there on every Debian host).
fn setpriv() -> Option<&'static Path> {
    ["/usr/bin/setpriv", "/bin/setpriv"]
        .into_iter()
        .map(Path::new)
        .find(|path| path.is_file())
}

/// Another user Terraform runs as (`neutral serve --terraform-user`): the
/// daemon, running as root, starts every command through `setpriv` with
/// this uid and gid and no supplementary groups, so a run can read neither
/// the daemon's data folder nor its process environment (`/proc/<pid>/environ`
/// is its owner's only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunAs {
    pub uid: u32,
    pub gid: u32,
}

impl RunAs {
    /// `setpriv`'s arguments that switch to this user, with no
    /// supplementary groups.
    fn setpriv_args(&self) -> [String; 3] {
        [
            format!("--reuid={}", self.uid),
            format!("--regid={}", self.gid),
            "--clear-groups".to_owned(),
        ]
    }

    /// Whether this user passes `test <flag> <path>` (e.g. `-w`, `-x`), as
    /// the kernel judges it; an error when `setpriv` is not installed.
    pub fn passes(&self, flag: &str, path: &Path) -> std::io::Result<bool> {
        let setpriv = setpriv().ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "util-linux's setpriv is not installed",
            )
        })?;
        let status = std::process::Command::new(setpriv)
            .args(self.setpriv_args())
            .args(["--", "test", flag])
            .arg(path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        Ok(status.success())
    }

    /// Makes `path` this user's (a symlink itself, never its target).
    pub fn give(&self, path: &Path) -> std::io::Result<()> {
        std::os::unix::fs::lchown(path, Some(self.uid), Some(self.gid))
    }

    /// Makes `path` and everything under it this user's, following no
    /// symlink.
    pub fn give_tree(&self, path: &Path) -> std::io::Result<()> {
        self.give(path)?;
        if std::fs::symlink_metadata(path)?.is_dir() {
            for entry in std::fs::read_dir(path)? {
                self.give_tree(&entry?.path())?;
            }
        }
        Ok(())
    }
}

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

/// Where a run's state lives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StateBackend {
    /// The file at [`RunRequest::state_path`] (a `backend "local"` override).
    #[default]
    Local,
    /// Terraform's `pg` backend (a `backend "pg" {}` override), configured
    /// entirely by `PG_CONN_STR` and `PG_SCHEMA_NAME` in
    /// [`RunRequest::env`], so the connection string is never written to a
    /// file. State and its lock then outlive any one control-plane host.
    Postgres,
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
    /// Which backend keeps it.
    pub backend: StateBackend,
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
///
/// **Isolation.** Every command starts from an empty environment: only
/// `env` (which the caller builds with [`pass_environment`]), the request's
/// own variables, `HOME`/`TMPDIR` (`home`) and Terraform's automation
/// switches reach it — never the daemon's secrets. It runs in a process
/// group of its own, so a command that outlives `command_timeout`, or is
/// still running when `stop` turns true (the daemon shuts down), is
/// stopped with every process it started: SIGTERM to the group, SIGKILL
/// after `kill_grace`.
#[derive(Clone, Debug)]
pub struct Runner {
    pub terraform: Terraform,
    pub env: Vec<(String, String)>,
    /// Upper bound for each command.
    pub command_timeout: Duration,
    /// `-lock-timeout` for plan and apply.
    pub lock_timeout: Duration,
    /// `HOME` and `TMPDIR` of the commands (created when missing); `None`:
    /// `/nonexistent`, and the system's temporary folder.
    pub home: Option<PathBuf>,
    /// Turns true when the daemon stops: running commands are stopped.
    pub stop: Option<tokio::sync::watch::Receiver<bool>>,
    /// How long a stopped command's group gets between SIGTERM and SIGKILL.
    pub kill_grace: Duration,
    /// The user commands run as, when not the daemon's (needs `setpriv`).
    pub run_as: Option<RunAs>,
}

/// Variables passed from the daemon's environment to Terraform by name
/// (besides `TF_VAR_*`): the locale, TLS roots, Terraform's logging, and
/// the DNS backends' credentials the provider documents.
pub const PASS_ENV: &[&str] = &[
    "PATH",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "TF_LOG",
    "TF_LOG_PROVIDER",
    "PDNS_API_KEY",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT_URL_ROUTE_53",
    "CLOUDFLARE_API_TOKEN",
    "ALICLOUD_ACCESS_KEY",
    "ALICLOUD_SECRET_KEY",
    "ALIBABA_CLOUD_ACCESS_KEY_ID",
    "ALIBABA_CLOUD_ACCESS_KEY_SECRET",
];

/// Prefixes of variables passed by name pattern.
pub const PASS_PREFIXES: &[&str] = &["TF_VAR_"];

/// The part of `inherited` (the daemon's environment) Terraform may see:
/// [`PASS_ENV`], [`PASS_PREFIXES`] and the names in `extra`, except any
/// `NEUTRAL_*` variable and any variable whose value holds one of
/// `secrets` (the daemon's own tokens, however they are named). Returns
/// what passes and the names left out because of a secret.
pub fn pass_environment(
    inherited: impl IntoIterator<Item = (String, String)>,
    extra: &[String],
    secrets: &[&str],
) -> (Vec<(String, String)>, Vec<String>) {
    let mut passed = Vec::new();
    let mut withheld = Vec::new();
    for (name, value) in inherited {
        let wanted = PASS_ENV.contains(&name.as_str())
            || PASS_PREFIXES.iter().any(|p| name.starts_with(p))
            || extra.contains(&name);
        if !wanted || name.starts_with("NEUTRAL_") {
            continue;
        }
        if secrets.iter().any(|s| !s.is_empty() && value.contains(s)) {
            withheld.push(name);
            continue;
        }
        passed.push((name, value));
    }
    passed.sort();
    withheld.sort();
    (passed, withheld)
}

/// Held by a run's `init`: this process's inits run one at a time. Runs of
/// one root's workspaces share its folder, where `init` writes the
/// dependency lock file; and Terraform's `pg` backend creates its objects
/// with `IF NOT EXISTS`, one of them (the id sequence) shared by every
/// schema, so two first inits at once collide on PostgreSQL's catalog.
static INIT: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

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
    // Another process's `pg` backend creating the same objects at the same
    // moment (the backend's `IF NOT EXISTS` is not atomic).
    "duplicate key value violates unique constraint \"pg_",
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

/// `PATH` when the caller passes none (see [`PASS_ENV`]).
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Whether the process group `pgid` still has a live member.
fn group_alive(pgid: u32) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries.flatten().any(|entry| {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            return false;
        };
        // pid (comm) state ppid pgrp ...
        let Some((_, rest)) = stat.rsplit_once(')') else {
            return false;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        fields.first().is_some_and(|s| *s != "Z" && *s != "X")
            && fields.get(2).and_then(|g| g.parse::<u32>().ok()) == Some(pgid)
    })
}

/// SIGTERM to the process group `pgid`, SIGKILL after `grace` if any
/// member is left (through procps' `kill`: signalling needs no `unsafe`).
pub async fn stop_group(pgid: u32, grace: Duration) {
    let signal = |sig: &'static str| {
        let group = format!("-{pgid}");
        async move {
            let _ = Command::new("kill")
                .args([sig, "--", &group])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .await;
        }
    };
    signal("-TERM").await;
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if !group_alive(pgid) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    signal("-KILL").await;
}

impl Runner {
    pub async fn run(&self, request: &RunRequest) -> Result<Outcome, RunnerError> {
        let start = Instant::now();
        let prepare = |path: &Path, source| RunnerError::Prepare {
            path: path.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(&request.data_dir).map_err(|e| prepare(&request.data_dir, e))?;
        if let Some(home) = &self.home {
            let tmp = home.join("tmp");
            std::fs::create_dir_all(&tmp).map_err(|e| prepare(&tmp, e))?;
        }
        if request.backend == StateBackend::Local
            && let Some(parent) = request.state_path.parent()
        {
            std::fs::create_dir_all(parent).map_err(|e| prepare(parent, e))?;
        }
        // Always written, over anything a commit put at that name: the
        // Terraform policy refuses a root's own backend, and skips this file
        // (its content is the runner's, whatever the commit held). Its text
        // is the same for every workspace of the root (a local state's path
        // goes to `init` as backend configuration, kept in the workspace's
        // own data folder), so runs of several workspaces at once agree on
        // it; it is replaced whole, never seen half written.
        {
            let override_path = request.workdir.join(BACKEND_OVERRIDE);
            let text = match request.backend {
                StateBackend::Local => {
                    "# Written by neutral's scheduler: state outside the checkout (init's -backend-config=path=...).\nterraform {\n  backend \"local\" {}\n}\n"
                }
                StateBackend::Postgres => {
                    "# Written by neutral's scheduler: state in PostgreSQL (PG_CONN_STR, PG_SCHEMA_NAME).\nterraform {\n  backend \"pg\" {}\n}\n"
                }
            };
            if std::fs::read_to_string(&override_path).ok().as_deref() != Some(text) {
                // Staged in the workspace's own data folder: one writer each.
                let staging = request.data_dir.join("backend_override.tmp");
                std::fs::write(&staging, text)
                    .and_then(|()| std::fs::rename(&staging, &override_path))
                    .map_err(|e| prepare(&override_path, e))?;
            }
            if let Some(user) = self.run_as {
                user.give(&override_path)
                    .map_err(|e| prepare(&override_path, e))?;
            }
        }
        if let Some(user) = self.run_as {
            // The folders this run created above, which Terraform writes
            // into (what existed before is handed over once, at start:
            // `Scheduler::new`).
            let mut created = vec![request.data_dir.clone()];
            if let Some(home) = &self.home {
                created.extend([home.clone(), home.join("tmp")]);
            }
            if request.backend == StateBackend::Local
                && let Some(parent) = request.state_path.parent()
            {
                created.push(parent.to_path_buf());
            }
            for path in created {
                user.give(&path).map_err(|e| prepare(&path, e))?;
            }
        }
        let plan_file = request.data_dir.join("neutral.tfplan");
        let mut log = String::new();
        let lock = format!("-lock-timeout={}s", self.lock_timeout.as_secs());

        let init = {
            let _one_at_a_time = INIT.lock().await;
            let state_config = format!("-backend-config=path={}", request.state_path.display());
            let mut args = vec!["init", "-input=false", "-no-color", "-reconfigure"];
            if request.backend == StateBackend::Local {
                args.push(&state_config);
            }
            self.step(request, &mut log, &args).await
        };
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
        // Under util-linux's `setpriv --pdeathsig KILL`: Terraform dies with
        // the daemon even when the daemon is killed with SIGKILL and cannot
        // stop the group itself (the signal is the kernel's, set before
        // Terraform starts; no `unsafe` here). The signal follows the thread
        // that spawned the command: these are the runtime's worker threads,
        // which live as long as the daemon. (A provider process Terraform
        // started can still outlive it: not solved.)
        let mut cmd = match setpriv() {
            Some(setpriv) => {
                let mut cmd = Command::new(setpriv);
                if let Some(user) = self.run_as {
                    cmd.args(user.setpriv_args());
                }
                cmd.args(["--pdeathsig", "KILL", "--"])
                    .arg(&self.terraform.bin);
                cmd
            }
            None => Command::new(&self.terraform.bin),
        };
        let (home, tmp) = match &self.home {
            Some(home) => (home.clone(), home.join("tmp")),
            None => (PathBuf::from("/nonexistent"), std::env::temp_dir()),
        };
        cmd.args(args)
            .current_dir(&request.workdir)
            .env_clear()
            .env("PATH", DEFAULT_PATH)
            .env("HOME", &home)
            .env("TMPDIR", &tmp)
            .env("TF_IN_AUTOMATION", "1")
            .env("TF_INPUT", "0")
            .env("TF_DATA_DIR", &request.data_dir)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .envs(request.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        cmd
    }

    /// Runs `cmd` to its end, or until the deadline or the stop signal;
    /// then its whole process group is stopped. `Err` names why it was cut.
    async fn output(
        &self,
        mut cmd: Command,
    ) -> Result<std::io::Result<std::process::Output>, String> {
        let child = match cmd.spawn() {
            Ok(child) => child,
            Err(err) => return Ok(Err(err)),
        };
        let pgid = child.id();
        let mut stop = self.stop.clone();
        let stopped = async move {
            match stop.as_mut() {
                Some(stop) => {
                    let _ = stop.wait_for(|s| *s).await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        let cut = tokio::select! {
            output = child.wait_with_output() => return Ok(output),
            () = tokio::time::sleep(self.command_timeout) => format!("timed out after {:?}", self.command_timeout),
            () = stopped => "stopped: the daemon is shutting down".to_owned(),
        };
        if let Some(pgid) = pgid {
            stop_group(pgid, self.kill_grace).await;
        }
        Err(cut)
    }

    /// Runs one command, appending `$ terraform <args>` and its output to
    /// `log`; returns its exit code (`None`: could not run or timed out).
    async fn step(&self, request: &RunRequest, log: &mut String, args: &[&str]) -> Option<i32> {
        log.push_str(&format!("$ terraform {}\n", args.join(" ")));
        let started = Instant::now();
        let output = self.output(self.command(request, args)).await;
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
            Err(why) => {
                log.push_str(&format!("{why}; its process group was stopped\n"));
                None
            }
        }
    }

    /// Runs one command and returns its exit code and stdout.
    async fn capture(&self, request: &RunRequest, args: &[&str]) -> (Option<i32>, String) {
        match self.output(self.command(request, args)).await {
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
            home: None,
            stop: None,
            kill_grace: Duration::from_secs(2),
            run_as: None,
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
            backend: StateBackend::Local,
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
        assert!(is_transient(
            "Error: pq: duplicate key value violates unique constraint \"pg_class_relname_nsp_index\""
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

    /// A stand-in `terraform` that records its environment and starts a
    /// grandchild that would outlive it.
    fn fake_terraform(dir: &Path) -> Terraform {
        use std::os::unix::fs::PermissionsExt;
        let bin = dir.join("terraform");
        std::fs::write(
            &bin,
            format!(
                "#!/bin/sh\n/usr/bin/env > '{env}'\nsleep 300 &\necho $! > '{pid}'\nwait\n",
                env = dir.join("env").display(),
                pid = dir.join("grandchild").display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        Terraform { bin }
    }

    fn alive(pid: u32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                s.rsplit_once(')')
                    .map(|(_, r)| r.trim_start().starts_with(['Z', 'X']))
            })
            == Some(false)
    }

    fn grandchild(dir: &Path) -> u32 {
        let path = dir.join("grandchild");
        for _ in 0..100 {
            if let Some(pid) = std::fs::read_to_string(&path)
                .ok()
                .and_then(|t| t.trim().parse().ok())
            {
                return pid;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("the fake terraform never started its grandchild");
    }

    #[tokio::test]
    async fn commands_see_only_the_given_environment_and_a_timeout_stops_their_group() {
        let dir = tempfile::tempdir().unwrap();
        let root = root(dir.path(), "x");
        let runner = Runner {
            terraform: fake_terraform(dir.path()),
            env: vec![("TF_VAR_a".into(), "1".into())],
            command_timeout: Duration::from_millis(500),
            lock_timeout: Duration::from_secs(1),
            home: Some(dir.path().join("home")),
            stop: None,
            kill_grace: Duration::from_secs(2),
            run_as: None,
        };
        let out = runner.run(&request(dir.path(), root)).await.unwrap();
        assert!(!out.succeeded);
        assert!(
            out.log
                .contains("timed out after 500ms; its process group was stopped"),
            "{}",
            out.log
        );
        let env = std::fs::read_to_string(dir.path().join("env")).unwrap();
        let mut names: Vec<&str> = env
            .lines()
            .filter_map(|l| l.split_once('=').map(|(k, _)| k))
            .collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "HOME",
                "PATH",
                "PWD",
                "TF_DATA_DIR",
                "TF_INPUT",
                "TF_IN_AUTOMATION",
                "TF_VAR_a",
                "TMPDIR"
            ],
            "{env}"
        );
        assert!(env.contains(&format!("HOME={}", dir.path().join("home").display())));
        let pid = grandchild(dir.path());
        assert!(!alive(pid), "the grandchild {pid} outlived the timeout");
    }

    #[tokio::test]
    async fn the_stop_signal_ends_a_running_command_and_its_group() {
        let dir = tempfile::tempdir().unwrap();
        let root = root(dir.path(), "x");
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let runner = Runner {
            terraform: fake_terraform(dir.path()),
            env: Vec::new(),
            command_timeout: Duration::from_secs(300),
            lock_timeout: Duration::from_secs(1),
            home: None,
            stop: Some(stopped),
            kill_grace: Duration::from_secs(2),
            run_as: None,
        };
        let request = request(dir.path(), root);
        let run = tokio::spawn(async move { runner.run(&request).await });
        let pid = tokio::task::spawn_blocking({
            let dir = dir.path().to_path_buf();
            move || grandchild(&dir)
        })
        .await
        .unwrap();
        stop.send(true).unwrap();
        let out = tokio::time::timeout(Duration::from_secs(10), run)
            .await
            .expect("the run ends after the stop signal")
            .unwrap()
            .unwrap();
        assert!(
            out.log.contains("stopped: the daemon is shutting down"),
            "{}",
            out.log
        );
        assert!(!alive(pid), "the grandchild {pid} outlived the stop");
    }

    #[test]
    fn only_allowed_variables_pass_and_never_a_daemon_secret() {
        let inherited = [
            ("PATH", "/usr/bin"),
            ("HOME", "/root"),
            ("NEUTRAL_ADMIN_TOKEN", "admin-secret-123456"),
            ("NEUTRAL_JOIN_TOKEN", "join-secret-1234567"),
            ("NEUTRAL_TOKEN", "anything"),
            ("TF_VAR_agent_args", "[]"),
            ("TF_VAR_join_token", "join-secret-1234567"),
            ("PDNS_API_KEY", "pdns"),
            ("AWS_SECRET_ACCESS_KEY", "aws"),
            ("MY_SETTING", "x"),
            ("OTHER", "y"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let (passed, withheld) = pass_environment(
            inherited,
            &["MY_SETTING".to_owned(), "NEUTRAL_ADMIN_TOKEN".to_owned()],
            &["admin-secret-123456", "join-secret-1234567"],
        );
        let names: Vec<&str> = passed.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "AWS_SECRET_ACCESS_KEY",
                "MY_SETTING",
                "PATH",
                "PDNS_API_KEY",
                "TF_VAR_agent_args"
            ]
        );
        assert_eq!(withheld, ["TF_VAR_join_token"]);
    }
}
