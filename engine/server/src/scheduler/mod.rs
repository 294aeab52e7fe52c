//! The scheduler: the Terraform executor when no external CI runs it.
//!
//! It turns change events into runs of two roots (conventions, both
//! configurable): the GTM root (`infra/gtm`, one state; a health change runs
//! only the affected `neutral_gtm_record`s with `-target`) and the node-pool
//! root (`infra/node-pool`, one state per `<region>.tfvars`, fed with that
//! file). Triggers coalesce per root and workspace, one run per root at a
//! time ([`neutral_terraform::Queue`]); each run exports the commit in force,
//! plans to a file and applies exactly that plan against one published
//! health view, retries transient failures ([`Outcome::retry_after`]), and
//! is recorded (trigger, commit, adds/changes/destroys,
//! exit code, duration, log). A periodic drift check plans every workspace
//! and reports drift without applying it unless `--apply-drift`.
//!
//! This module holds the scheduler's state (queue, runner, drift), which the
//! API reads; the task that feeds and drains it is [`task`]. It must not
//! import `app`.

pub mod task;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use neutral_terraform::RunAs;
use neutral_terraform::{
    Job, JobKey, PlanSummary, Queue, Runner, Terraform, Trigger, pass_environment,
};
use serde::Serialize;
use tokio::sync::Notify;

use crate::settings::{Settings, TerraformSettings};
use crate::world::now;

/// A burst of triggers settles this long before its run starts.
const SETTLE: Duration = Duration::from_millis(100);
/// The provider reads the published health view to plan against from this
/// variable (`terraform-provider-neutral`'s `ENV_HEALTH_VIEW`).
const HEALTH_VIEW_ENV: &str = "NEUTRAL_HEALTH_VIEW";
/// Exported commit trees kept on disk.
const KEEP_EXPORTS: usize = 4;

/// Drift found by the last check of a workspace.
#[derive(Clone, Debug, Serialize)]
pub struct Drift {
    pub checked_at: i64,
    pub summary: PlanSummary,
}

/// The scheduler's state, shared with the API.
#[derive(Debug)]
pub struct Scheduler {
    runner: Runner,
    queue: Mutex<Queue>,
    wake: Notify,
    /// The commit whose changes were last turned into runs.
    last_commit: Mutex<Option<String>>,
    /// Latest drift check per workspace (`None`: no drift).
    pub drift: Mutex<BTreeMap<JobKey, Option<Drift>>>,
    root: PathBuf,
    /// Runs of different roots start together; one export per commit.
    exports: tokio::sync::Mutex<()>,
    settings: TerraformSettings,
    /// Set when the daemon stops: running Terraform commands are stopped.
    stop: tokio::sync::watch::Sender<bool>,
    /// Runs in progress.
    running: std::sync::atomic::AtomicUsize,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The PostgreSQL schema of one root and workspace's state
/// (`--terraform-state`): `neutral_tf_<root>_<workspace>` in `[a-z0-9_]`,
/// cut to PostgreSQL's 63-byte names with a hash of the whole name when
/// longer, so two roots never share a schema.
fn state_schema(root: &str, workspace: &str) -> String {
    use sha2::Digest as _;
    let name: String = format!("neutral_tf_{root}_{workspace}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    if name.len() <= 63 {
        return name;
    }
    let digest = sha2::Sha256::digest(format!("{root}\0{workspace}"));
    let hash: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    format!("{}_{hash}", name.get(..50).unwrap_or(&name))
}

fn sanitize(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// `--terraform-user NAME`: its uid and gid from `/etc/passwd`. Refused
/// for root, for a user that does not exist, and when this daemon is not
/// root (it could not start Terraform as anyone else); a missing `setpriv`
/// is refused by [`check_reach`].
fn terraform_user(name: &str) -> anyhow::Result<RunAs> {
    use anyhow::Context;
    let passwd = std::fs::read_to_string("/etc/passwd").context("cannot read /etc/passwd")?;
    let (uid, gid) = passwd
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            if fields.first() != Some(&name) {
                return None;
            }
            Some((
                fields.get(2)?.parse::<u32>().ok()?,
                fields.get(3)?.parse::<u32>().ok()?,
            ))
        })
        .with_context(|| format!("--terraform-user {name}: no such user in /etc/passwd"))?;
    if uid == 0 {
        anyhow::bail!("--terraform-user {name} is root: give Terraform a user of its own");
    }
    let status =
        std::fs::read_to_string("/proc/self/status").context("cannot read /proc/self/status")?;
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .and_then(|id| id.parse::<u32>().ok())
        .context("cannot read this process's user id from /proc/self/status")?;
    if euid != 0 {
        anyhow::bail!(
            "--terraform-user {name}: the daemon runs as uid {euid}, and only root can start Terraform as another user; run it as root or drop the flag"
        );
    }
    Ok(RunAs { uid, gid })
}

/// Checks, as the Terraform user, that it can write the Terraform folder and
/// run Terraform and the provider: a parent folder that does not let it
/// through would otherwise fail every run with a bare "permission denied".
fn check_reach(
    name: &str,
    user: RunAs,
    root: &Path,
    provider: &Path,
    terraform: &Path,
) -> anyhow::Result<()> {
    use anyhow::Context;
    for (what, path, flag) in [
        ("write", root, "-w"),
        ("run", provider, "-x"),
        ("run", terraform, "-x"),
    ] {
        let passes = user
            .passes(flag, path)
            .with_context(|| format!("--terraform-user {name}: cannot check {}", path.display()))?;
        if !passes {
            anyhow::bail!(
                "--terraform-user {name} cannot {what} {}: every parent folder must let it through (e.g. chmod o+x on each) and it must own or be allowed to {what} it",
                path.display()
            );
        }
    }
    Ok(())
}

impl Scheduler {
    /// Finds terraform and the provider, writes the CLI configuration, and
    /// prepares the scheduler's folders under `--data/terraform`.
    pub fn new(
        settings: &Settings,
        terraform_settings: &TerraformSettings,
        secrets: &[&str],
    ) -> anyhow::Result<Scheduler> {
        use anyhow::Context;
        let root = terraform_settings.dir.clone();
        if root.starts_with(&settings.data) {
            anyhow::bail!(
                "--terraform-dir {} is inside the data directory {}: Terraform's working copy must not reach the daemon's data",
                root.display(),
                settings.data.display()
            );
        }
        let run_as = match &terraform_settings.user {
            Some(name) => Some(terraform_user(name)?),
            None => None,
        };
        std::fs::create_dir_all(&root)
            .with_context(|| format!("cannot create {}", root.display()))?;
        clean_stale_locks(&root.join("state"));
        let repo_build = std::env::current_dir()
            .map(|d| d.join(".build/terraform/bin/terraform"))
            .unwrap_or_default();
        let terraform = Terraform::find(terraform_settings.bin.as_deref(), &[repo_build])
            .context("no terraform: pass --terraform-bin, set TERRAFORM_BIN, or put terraform or tofu on PATH")?;
        let provider_dir = match &terraform_settings.provider_dir {
            Some(dir) => dir.clone(),
            None => std::env::current_exe()
                .ok()
                .and_then(|exe| exe.parent().map(Path::to_path_buf))
                .context("cannot locate this binary's folder; pass --provider-dir")?,
        };
        if !provider_dir.join("terraform-provider-neutral").is_file() {
            tracing::warn!(dir = %provider_dir.display(), "terraform-provider-neutral not found there; runs using it will fail");
        }
        // `dev_overrides` alone still makes `init` look the provider up in the
        // registry; a filesystem mirror holding it satisfies `init`.
        let version = env!("CARGO_PKG_VERSION");
        let mirror = root.join("mirror");
        let platform_dir = mirror.join(format!(
            "registry.terraform.io/neutral/neutral/{version}/linux_amd64"
        ));
        std::fs::create_dir_all(&platform_dir)
            .with_context(|| format!("cannot create {}", platform_dir.display()))?;
        let link = platform_dir.join("terraform-provider-neutral");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(provider_dir.join("terraform-provider-neutral"), &link)
            .with_context(|| format!("cannot link {}", link.display()))?;
        let cli_config = root.join("cli.tfrc");
        std::fs::write(
            &cli_config,
            format!(
                "# Written by neutral serve: use the local provider build, no registry.\nprovider_installation {{\n  dev_overrides {{\n    \"registry.terraform.io/neutral/neutral\" = \"{}\"\n  }}\n  filesystem_mirror {{\n    path    = \"{}\"\n    include = [\"registry.terraform.io/neutral/neutral\"]\n  }}\n  direct {{\n    exclude = [\"registry.terraform.io/neutral/neutral\"]\n  }}\n}}\n",
                provider_dir.display(),
                mirror.display()
            ),
        )
        .with_context(|| format!("cannot write {}", cli_config.display()))?;
        // Terraform sees an allowlist of the daemon's environment, never its
        // tokens; each run adds its own token (`NEUTRAL_TOKEN`).
        let (mut env, withheld) = pass_environment(
            // `vars()` would panic on a name or value that is not UTF-8.
            std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))),
            &terraform_settings.pass_env,
            secrets,
        );
        if !withheld.is_empty() {
            tracing::warn!(
                ?withheld,
                "variables holding a daemon token are not passed to Terraform"
            );
        }
        env.extend([
            (
                "TF_CLI_CONFIG_FILE".to_owned(),
                cli_config.display().to_string(),
            ),
            (
                "NEUTRAL_ENDPOINT".to_owned(),
                terraform_settings.endpoint.clone(),
            ),
            (
                "TF_VAR_state_root".to_owned(),
                // The local launcher's node folders: with a Terraform user,
                // under the Terraform folder it owns, not the data folder.
                if run_as.is_some() {
                    root.join("nodes")
                } else {
                    settings.data.join("nodes")
                }
                .display()
                .to_string(),
            ),
        ]);
        if let Some(user) = run_as {
            // Everything under the Terraform folder becomes the run user's;
            // the data folder stays the daemon's alone.
            user.give_tree(&root)
                .with_context(|| format!("cannot hand {} to the Terraform user", root.display()))?;
            check_reach(
                terraform_settings.user.as_deref().unwrap_or_default(),
                user,
                &root,
                &provider_dir.join("terraform-provider-neutral"),
                &terraform.bin,
            )?;
        }
        let lock = launcher_lock(&env);
        env.push((LAUNCHER_LOCK_ENV.to_owned(), lock));
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let runner = Runner {
            terraform,
            env,
            command_timeout: Duration::from_secs(600),
            lock_timeout: Duration::from_secs(120),
            home: Some(root.join("home")),
            stop: Some(stopped),
            kill_grace: Duration::from_secs(10),
            run_as,
        };
        tracing::info!(terraform = %runner.terraform.bin.display(), provider = %provider_dir.display(), "scheduler ready");
        Ok(Scheduler {
            runner,
            queue: Mutex::new(Queue::new()),
            wake: Notify::new(),
            last_commit: Mutex::new(None),
            drift: Mutex::new(BTreeMap::new()),
            root,
            exports: tokio::sync::Mutex::new(()),
            settings: terraform_settings.clone(),
            stop,
            running: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    pub fn pending(&self) -> Vec<Job> {
        lock(&self.queue).pending().cloned().collect()
    }

    /// Queues a run and wakes the loop.
    pub fn request(
        &self,
        key: JobKey,
        trigger: Trigger,
        targets: Option<BTreeSet<String>>,
        plan_only: bool,
    ) {
        lock(&self.queue).push(key, trigger, targets, plan_only, now().millis());
        self.wake.notify_one();
    }
}

/// Which runs a set of changed paths calls for.
pub fn jobs_for_paths(
    paths: &[String],
    gtm_root: &str,
    pool_root: &str,
    regions: &[String],
) -> (bool, BTreeSet<String>) {
    let under =
        |path: &str, dir: &str| path.starts_with(&format!("{}/", dir.trim_end_matches('/')));
    let mut gtm = false;
    let mut pools = BTreeSet::new();
    for path in paths {
        if under(path, "platform-config/gtm") || under(path, gtm_root) || under(path, "modules/gtm")
        {
            gtm = true;
        } else if under(path, pool_root) {
            let file = path.rsplit('/').next().unwrap_or_default();
            match file.strip_suffix(".tfvars") {
                Some(region) => {
                    pools.insert(region.to_owned());
                }
                None => pools.extend(regions.iter().cloned()),
            }
        } else if under(path, "platform-config/regions") || under(path, "modules") {
            gtm = true;
            pools.extend(regions.iter().cloned());
        }
    }
    (gtm, pools)
}

/// Makes a workspace's state files (`<state>`, `<state>.backup`) mode 0600
/// and their folders 0700.
pub fn private_state_files(state: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = state.parent() {
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    }
    let mut backup = state.as_os_str().to_owned();
    backup.push(".backup");
    for file in [state.to_path_buf(), PathBuf::from(backup)] {
        if file.exists() {
            let _ = std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600));
        }
    }
}

/// Terraform's local backend leaves `.<state>.lock.info` behind when it is
/// killed (the lock itself is an OS lock the kernel dropped). At start —
/// this daemon holds the data folder's lock, so no run of its own is under
/// way — such files are stale: each is logged and removed, and every state
/// file is made private.
pub fn clean_stale_locks(state_root: &Path) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let Ok(roots) = std::fs::read_dir(state_root) else {
        return removed;
    };
    for root in roots.flatten() {
        let Ok(files) = std::fs::read_dir(root.path()) else {
            continue;
        };
        for file in files.flatten() {
            let path = file.path();
            let name = file.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') && name.ends_with(".lock.info") {
                if std::fs::remove_file(&path).is_ok() {
                    tracing::warn!(file = %path.display(), "removed a stale Terraform state lock left by a stopped run");
                    removed.push(path);
                }
            } else if name.ends_with(".tfstate") {
                private_state_files(&path);
            }
        }
    }
    removed
}

/// The variable the provider reads the operator's launcher lock from
/// (`provider/src/pool/lock.rs`).
const LAUNCHER_LOCK_ENV: &str = "NEUTRAL_LAUNCHER_LOCK";

/// The operator's launcher lock, as JSON: the program-running node-pool
/// settings the daemon was given (its `TF_VAR_*` environment), which the
/// provider then requires of every pool, whatever the repository says.
fn launcher_lock(env: &[(String, String)]) -> String {
    let get = |name: &str| {
        // The last setting wins, as it does for the child's environment.
        env.iter()
            .rev()
            .find(|(key, _)| key.strip_prefix("TF_VAR_") == Some(name))
            .map(|(_, value)| value.as_str())
    };
    let list = |name: &str| -> Vec<String> {
        let Some(text) = get(name) else {
            return Vec::new();
        };
        serde_json::from_str(text).unwrap_or_else(|err| {
            tracing::warn!(
                variable = %format!("TF_VAR_{name}"),
                error = %err,
                "not a JSON list of strings: node pools may not set {name}"
            );
            Vec::new()
        })
    };
    let control_planes: serde_json::Map<String, serde_json::Value> = get("control_planes")
        .map(|text| {
            serde_json::from_str::<std::collections::BTreeMap<String, String>>(text)
                .map(|map| map.into_iter().map(|(k, v)| (k, v.into())).collect())
                .unwrap_or_else(|err| {
                    tracing::warn!(
                        variable = "TF_VAR_control_planes",
                        error = %err,
                        "not a JSON map of region to URL: node pools may not set control_plane"
                    );
                    serde_json::Map::new()
                })
        })
        .unwrap_or_default();
    serde_json::json!({
        "neutral_binary": get("neutral_binary"),
        "agent_args": list("agent_args"),
        "state_root": get("state_root"),
        "docker_image": get("docker_image"),
        "docker_network": get("docker_network"),
        "docker_args": list("docker_args"),
        "docker_binaries": get("docker_binaries"),
        "control_planes": control_planes,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_launcher_lock_holds_the_operators_last_settings() {
        let env: Vec<(String, String)> = [
            ("TF_VAR_state_root", "/operator/nodes"),
            ("TF_VAR_agent_args", r#"["--runtime", "process"]"#),
            ("TF_VAR_neutral_binary", "/usr/bin/neutral"),
            ("TF_VAR_docker_args", "not json"),
            ("TF_VAR_control_planes", r#"{"jp": "http://10.0.1.1:7400"}"#),
            ("PATH", "/usr/bin"),
            ("TF_VAR_state_root", "/data/nodes"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        let lock: serde_json::Value = serde_json::from_str(&super::launcher_lock(&env)).unwrap();
        assert_eq!(
            lock,
            serde_json::json!({
                "neutral_binary": "/usr/bin/neutral",
                "agent_args": ["--runtime", "process"],
                "state_root": "/data/nodes",
                "docker_image": null,
                "docker_network": null,
                "docker_args": [],
                "docker_binaries": null,
                "control_planes": { "jp": "http://10.0.1.1:7400" },
            })
        );
    }

    use super::*;

    #[test]
    fn changed_paths_map_to_the_runs_they_need() {
        let regions = vec!["jp".to_owned(), "sg".to_owned()];
        let run = |paths: &[&str]| {
            let paths: Vec<String> = paths.iter().map(|p| (*p).to_owned()).collect();
            jobs_for_paths(&paths, "infra/gtm", "infra/node-pool", &regions)
        };
        assert_eq!(
            run(&["infra/node-pool/jp.tfvars"]),
            (false, BTreeSet::from(["jp".to_owned()]))
        );
        assert_eq!(
            run(&["platform-config/gtm/app.yaml"]),
            (true, BTreeSet::new())
        );
        assert_eq!(run(&["infra/node-pool/main.tf"]).1.len(), 2);
        assert_eq!(
            run(&["platform-config/regions/jp.yaml"]),
            (true, regions.iter().cloned().collect())
        );
        assert_eq!(run(&["README.md", "docs/api.md"]), (false, BTreeSet::new()));
    }

    #[test]
    fn stale_state_locks_are_removed_and_state_files_made_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("infra_gtm");
        std::fs::create_dir_all(&root).unwrap();
        let state = root.join("default.tfstate");
        std::fs::write(&state, "{}").unwrap();
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o644)).unwrap();
        let lock = root.join(".default.tfstate.lock.info");
        std::fs::write(&lock, "{}").unwrap();
        assert_eq!(clean_stale_locks(dir.path()), vec![lock.clone()]);
        assert!(!lock.exists());
        let mode = std::fs::metadata(&state).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(clean_stale_locks(&dir.path().join("missing")).is_empty());
    }

    #[test]
    fn a_terraform_user_must_exist_and_not_be_root() {
        let err = |name: &str| terraform_user(name).unwrap_err().to_string();
        assert_eq!(
            err("root"),
            "--terraform-user root is root: give Terraform a user of its own"
        );
        assert_eq!(
            err("no-such-user-here"),
            "--terraform-user no-such-user-here: no such user in /etc/passwd"
        );
    }
}
