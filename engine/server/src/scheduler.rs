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

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use neutral_store::{NewRun, RunOutcome, RunStatus};
use neutral_terraform::{
    Job, JobKey, Outcome, PlanSummary, Queue, RunRequest, Runner, Terraform, Trigger,
};
use serde::Serialize;
use tokio::sync::{Notify, broadcast};

use crate::shutdown::Shutdown;
use crate::world::{ChangeEvent, Shared, now};

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
        shared_args: &crate::ServeArgs,
        admin_secret: &str,
        join_secret: &str,
    ) -> anyhow::Result<Scheduler> {
        use anyhow::Context;
        let root = shared_args.data.join("terraform");
        std::fs::create_dir_all(&root)
            .with_context(|| format!("cannot create {}", root.display()))?;
        let repo_build = std::env::current_dir()
            .map(|d| d.join(".build/terraform/bin/terraform"))
            .unwrap_or_default();
        let terraform = Terraform::find(shared_args.terraform_bin.as_deref(), &[repo_build])
            .context("no terraform: pass --terraform-bin, set TERRAFORM_BIN, or put terraform or tofu on PATH")?;
        let provider_dir = match &shared_args.provider_dir {
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
        let scheme = if shared_args.tls_cert.is_some() {
            "https"
        } else {
            "http"
        };
        let runner = Runner {
            terraform,
            env: vec![
                (
                    "TF_CLI_CONFIG_FILE".into(),
                    cli_config.display().to_string(),
                ),
                (
                    "NEUTRAL_ENDPOINT".into(),
                    format!("{scheme}://{}", shared_args.listen),
                ),
                ("NEUTRAL_TOKEN".into(), admin_secret.to_owned()),
                // The node-pool root's local launcher gives it to the agents.
                ("NEUTRAL_JOIN_TOKEN".into(), join_secret.to_owned()),
                (
                    "TF_VAR_state_root".into(),
                    shared_args.data.join("nodes").display().to_string(),
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

fn gtm_key(shared: &Shared) -> JobKey {
    JobKey {
        root: shared.args.gtm_root.clone(),
        workspace: "default".into(),
    }
}

fn pool_key(shared: &Shared, region: &str) -> JobKey {
    JobKey {
        root: shared.args.node_pool_root.clone(),
        workspace: region.to_owned(),
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

/// Runs the scheduler until shutdown.
/// `events` must be subscribed before the other tasks start, so that no
/// change (such as the first sync) can slip by.
pub async fn run(
    shared: Arc<Shared>,
    scheduler: Arc<Scheduler>,
    mut events: broadcast::Receiver<ChangeEvent>,
    mut shutdown: Shutdown,
) {
    let mut drift = tokio::time::interval(shared.args.drift_interval);
    drift.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    drift.tick().await; // the first tick is immediate; the first check waits one interval
    // Everything once at start: converge on the commit in force.
    on_declarations(&shared, &scheduler, None);
    loop {
        start_ready(&shared, &scheduler);
        let sleep = {
            let queue = lock(&scheduler.queue);
            queue.next_ready_at(SETTLE).map(|at| {
                Duration::from_millis(u64::try_from(at.saturating_sub(now().millis())).unwrap_or(0))
            })
        };
        tokio::select! {
            event = events.recv() => match event {
                Ok(event) => on_event(&shared, &scheduler, event),
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "scheduler missed change events; running everything");
                    on_declarations(&shared, &scheduler, None);
                }
                Err(broadcast::error::RecvError::Closed) => break,
            },
            () = scheduler.wake.notified() => {}
            () = tokio::time::sleep(sleep.unwrap_or(Duration::from_secs(3600))), if sleep.is_some() => {}
            _ = drift.tick() => queue_drift_checks(&shared, &scheduler),
            () = shutdown.wait() => break,
        }
    }
}

fn regions_with_pools(shared: &Shared) -> Vec<String> {
    shared
        .read_world()
        .decl
        .node_pools
        .keys()
        .cloned()
        .collect()
}

fn on_event(shared: &Shared, scheduler: &Scheduler, event: ChangeEvent) {
    match event {
        ChangeEvent::Declarations { commit, .. } => {
            on_declarations(shared, scheduler, Some(commit));
        }
        ChangeEvent::Domain {
            domain, summary, ..
        } => {
            let target = shared.args.gtm_target.replace("{domain}", &domain);
            scheduler.request(
                gtm_key(shared),
                Trigger::Health { detail: summary },
                Some(BTreeSet::from([target])),
                false,
            );
        }
        ChangeEvent::Autoscale {
            region, summary, ..
        } => {
            scheduler.request(
                pool_key(shared, &region),
                Trigger::Autoscale { detail: summary },
                None,
                false,
            );
        }
        ChangeEvent::NodeStatus { .. } => {}
    }
}

/// Queues the runs a newly applied commit calls for (everything when the
/// previous commit is unknown).
fn on_declarations(shared: &Shared, scheduler: &Scheduler, commit: Option<String>) {
    let Some(commit) = commit.or_else(|| shared.read_world().commit.clone()) else {
        return;
    };
    let previous = lock(&scheduler.last_commit).replace(commit.clone());
    let regions = regions_with_pools(shared);
    let changed = {
        let mirror = shared
            .mirror
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let to = neutral_git::CommitId::from_str(&commit).ok();
        let from = previous
            .as_deref()
            .and_then(|p| neutral_git::CommitId::from_str(p).ok());
        match (from, to) {
            (Some(from), Some(to)) => mirror.changed_paths(Some(from), to).ok(),
            _ => None,
        }
    };
    let (gtm, pools) = match changed {
        Some(paths) => jobs_for_paths(
            &paths,
            &shared.args.gtm_root,
            &shared.args.node_pool_root,
            &regions,
        ),
        None => (true, regions.into_iter().collect()),
    };
    let trigger = Trigger::Push { commit };
    if gtm {
        scheduler.request(gtm_key(shared), trigger.clone(), None, false);
    }
    for region in pools {
        scheduler.request(pool_key(shared, &region), trigger.clone(), None, false);
    }
}

fn queue_drift_checks(shared: &Shared, scheduler: &Scheduler) {
    let plan_only = !shared.args.apply_drift;
    scheduler.request(gtm_key(shared), Trigger::Drift, None, plan_only);
    for region in regions_with_pools(shared) {
        scheduler.request(pool_key(shared, &region), Trigger::Drift, None, plan_only);
    }
}

fn start_ready(shared: &Arc<Shared>, scheduler: &Arc<Scheduler>) {
    loop {
        let Some(job) = lock(&scheduler.queue).take_ready(now().millis(), SETTLE) else {
            return;
        };
        let (shared, scheduler) = (Arc::clone(shared), Arc::clone(scheduler));
        tokio::spawn(async move {
            let key = job.key.clone();
            execute(&shared, &scheduler, job).await;
            lock(&scheduler.queue).finish(&key);
            scheduler.wake.notify_one();
        });
    }
}

/// Exports `commit` once into the scheduler's folder; returns its path.
async fn export(shared: &Shared, scheduler: &Scheduler, commit: &str) -> anyhow::Result<PathBuf> {
    let dir = scheduler.root.join("src").join(sanitize(commit));
    let _one_at_a_time = scheduler.exports.lock().await;
    if dir.is_dir() {
        return Ok(dir);
    }
    let (mirror, dest, sha) = (Arc::clone(&shared.mirror), dir.clone(), commit.to_owned());
    let parent = scheduler.root.join("src");
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let oid = neutral_git::CommitId::from_str(&sha)?;
        let staging = parent.join(format!(".{}.tmp", sanitize(&sha)));
        let _ = std::fs::remove_dir_all(&staging);
        mirror
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .export(oid, &staging)?;
        std::fs::rename(&staging, &dest)?;
        // Keep the newest few exports.
        let mut exports: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(&parent)?
            .flatten()
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
            .collect();
        exports.sort();
        let excess = exports.len().saturating_sub(KEEP_EXPORTS);
        for (_, old) in exports.into_iter().take(excess) {
            let _ = std::fs::remove_dir_all(old);
        }
        Ok(())
    })
    .await??;
    Ok(dir)
}

async fn execute(shared: &Shared, scheduler: &Scheduler, job: Job) {
    let Some(commit) = shared.read_world().commit.clone() else {
        return;
    };
    let src = match export(shared, scheduler, &commit).await {
        Ok(src) => src,
        Err(err) => {
            tracing::error!(error = %format!("{err:#}"), %commit, "cannot export the commit for Terraform");
            return;
        }
    };
    let workdir = src.join(&job.key.root);
    if !workdir.is_dir() {
        tracing::debug!(root = %job.key.root, "no such Terraform root in this commit; nothing to run");
        return;
    }
    let mut var_files = Vec::new();
    if job.key.root == shared.args.node_pool_root {
        let file = workdir.join(format!("{}.tfvars", job.key.workspace));
        if !file.is_file() {
            tracing::debug!(region = %job.key.workspace, "no tfvars for this region in the commit");
            return;
        }
        var_files.push(file);
    }
    let slug = sanitize(&job.key.root);
    let mut request = RunRequest {
        workdir,
        data_dir: scheduler
            .root
            .join("work")
            .join(&slug)
            .join(sanitize(&job.key.workspace)),
        state_path: scheduler
            .root
            .join("state")
            .join(&slug)
            .join(format!("{}.tfstate", sanitize(&job.key.workspace))),
        var_files,
        targets: job.targets.iter().flatten().cloned().collect(),
        plan_only: job.plan_only,
        env: Vec::new(),
    };
    let new_run = NewRun {
        root: job.key.root.clone(),
        workspace: job.key.workspace.clone(),
        trigger: job.trigger_name(),
        commit: Some(commit.clone()),
    };
    let queued_at = neutral_core::model::Timestamp(job.since);
    let id = match shared
        .with_store(move |s| s.runs().create_run(&new_run, queued_at, "scheduler"))
        .await
    {
        Ok(id) => id,
        Err(err) => {
            tracing::error!(error = %format!("{err:#}"), "cannot record the run");
            return;
        }
    };
    let started = now();
    let _ = shared
        .with_store(move |s| s.runs().start_run(id, started))
        .await;

    let mut log = String::new();
    let mut outcome: Option<Outcome> = None;
    for attempt in 1.. {
        // Plan and apply read the same published health (the newest when
        // this attempt starts): the provider's apply-time re-plan then
        // matches the saved plan however health moves meanwhile.
        let view = shared.read_world().views.latest().id.clone();
        request.env = vec![(HEALTH_VIEW_ENV.to_owned(), view)];
        match scheduler.runner.run(&request).await {
            Ok(result) => {
                log.push_str(&format!("--- attempt {attempt}\n{}", result.log));
                let retry = result.retry_after(attempt);
                outcome = Some(result);
                let Some(delay) = retry else {
                    break;
                };
                tokio::time::sleep(delay).await;
            }
            Err(err) => {
                log.push_str(&format!("--- attempt {attempt}\n{err}\n"));
                break;
            }
        }
    }
    let summary = outcome.as_ref().and_then(|o| o.summary.clone());
    let succeeded = outcome.as_ref().is_some_and(|o| o.succeeded);
    if job.triggers.contains(&Trigger::Drift) {
        let drift = summary
            .clone()
            .filter(|s| !s.is_empty())
            .map(|summary| Drift {
                checked_at: started.millis(),
                summary,
            });
        if let Some(found) = &drift {
            tracing::warn!(root = %job.key.root, workspace = %job.key.workspace, adds = found.summary.adds, changes = found.summary.changes, destroys = found.summary.destroys, "drift detected");
        }
        if succeeded {
            lock(&scheduler.drift).insert(job.key.clone(), drift);
        }
    }
    let record = RunOutcome {
        status: if succeeded {
            RunStatus::Succeeded
        } else {
            RunStatus::Failed
        },
        adds: summary.as_ref().map(|s| s.adds),
        changes: summary.as_ref().map(|s| s.changes),
        destroys: summary.as_ref().map(|s| s.destroys),
        exit_code: outcome.as_ref().and_then(|o| o.exit_code),
        log,
    };
    let finished = now();
    tracing::info!(
        run = id,
        root = %job.key.root,
        workspace = %job.key.workspace,
        trigger = %job.trigger_name(),
        succeeded,
        ms = finished.since(started).as_millis() as u64,
        "terraform run finished"
    );
    if let Err(err) = shared
        .with_store(move |s| s.runs().finish_run(id, &record, finished, "scheduler"))
        .await
    {
        tracing::error!(error = %format!("{err:#}"), "cannot record the run's outcome");
    }
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
