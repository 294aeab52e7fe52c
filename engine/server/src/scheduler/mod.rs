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

use neutral_terraform::{Job, JobKey, PlanSummary, Queue, Runner, Terraform, Trigger};
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
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
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

impl Scheduler {
    /// Finds terraform and the provider, writes the CLI configuration, and
    /// prepares the scheduler's folders under `--data/terraform`.
    pub fn new(
        settings: &Settings,
        terraform_settings: &TerraformSettings,
        admin_secret: &str,
        join_secret: &str,
    ) -> anyhow::Result<Scheduler> {
        use anyhow::Context;
        let root = settings.data.join("terraform");
        std::fs::create_dir_all(&root)
            .with_context(|| format!("cannot create {}", root.display()))?;
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
        let runner = Runner {
            terraform,
            env: vec![
                (
                    "TF_CLI_CONFIG_FILE".into(),
                    cli_config.display().to_string(),
                ),
                (
                    "NEUTRAL_ENDPOINT".into(),
                    terraform_settings.endpoint.clone(),
                ),
                ("NEUTRAL_TOKEN".into(), admin_secret.to_owned()),
                // The node-pool root's local launcher gives it to the agents.
                ("NEUTRAL_JOIN_TOKEN".into(), join_secret.to_owned()),
                (
                    "TF_VAR_state_root".into(),
                    settings.data.join("nodes").display().to_string(),
                ),
            ],
            command_timeout: Duration::from_secs(600),
            lock_timeout: Duration::from_secs(120),
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

#[cfg(test)]
mod tests {
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
}
