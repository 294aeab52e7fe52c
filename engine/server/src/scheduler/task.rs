//! The scheduler's task: turns change events, the commit in force and the
//! drift timer into queued runs, and runs them (see [`super`]).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use neutral_store::{NewRun, RunOutcome, RunStatus};
use neutral_terraform::{Job, JobKey, Outcome, RunRequest, StateBackend, Trigger};
use tokio::sync::broadcast;

use super::{
    Drift, HEALTH_VIEW_ENV, KEEP_EXPORTS, SETTLE, Scheduler, jobs_for_paths, lock, sanitize,
};
use crate::app::App;
use crate::settings::TerraformSettings;
use crate::shutdown::Shutdown;
use crate::world::{ChangeEvent, now};

fn gtm_key(settings: &TerraformSettings) -> JobKey {
    JobKey {
        root: settings.gtm_root.clone(),
        workspace: "default".into(),
    }
}

fn pool_key(settings: &TerraformSettings, region: &str) -> JobKey {
    JobKey {
        root: settings.node_pool_root.clone(),
        workspace: region.to_owned(),
    }
}

/// Runs the scheduler until shutdown.
/// `events` must be subscribed before the other tasks start, so that no
/// change (such as the first sync) can slip by.
pub async fn run(
    app: Arc<App>,
    scheduler: Arc<Scheduler>,
    mut events: broadcast::Receiver<ChangeEvent>,
    mut shutdown: Shutdown,
) {
    let mut drift = tokio::time::interval(scheduler.settings.drift_interval);
    drift.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    drift.tick().await; // the first tick is immediate; the first check waits one interval
    // Everything once at start: converge on the commit in force.
    on_declarations(&app, &scheduler, None);
    loop {
        start_ready(&app, &scheduler);
        let sleep = {
            let queue = lock(&scheduler.queue);
            queue.next_ready_at(SETTLE).map(|at| {
                Duration::from_millis(u64::try_from(at.saturating_sub(now().millis())).unwrap_or(0))
            })
        };
        tokio::select! {
            event = events.recv() => match event {
                Ok(event) => on_event(&app, &scheduler, event),
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "scheduler missed change events; running everything");
                    on_declarations(&app, &scheduler, None);
                }
                Err(broadcast::error::RecvError::Closed) => break,
            },
            () = scheduler.wake.notified() => {}
            () = tokio::time::sleep(sleep.unwrap_or(Duration::from_secs(3600))), if sleep.is_some() => {}
            _ = drift.tick() => queue_drift_checks(&app, &scheduler),
            () = shutdown.wait() => break,
        }
    }
    // Running Terraform commands are stopped (their whole process group:
    // SIGTERM, SIGKILL after a grace) and their runs recorded.
    let _ = scheduler.stop.send(true);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while scheduler.running.load(std::sync::atomic::Ordering::SeqCst) > 0
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn regions_with_pools(app: &App) -> Vec<String> {
    app.read_world().decl.node_pools.keys().cloned().collect()
}

fn on_event(app: &App, scheduler: &Scheduler, event: ChangeEvent) {
    match event {
        ChangeEvent::Declarations { commit, .. } => {
            on_declarations(app, scheduler, Some(commit));
        }
        ChangeEvent::Domain {
            domain, summary, ..
        } => {
            let target = scheduler.settings.gtm_target.replace("{domain}", &domain);
            scheduler.request(
                gtm_key(&scheduler.settings),
                Trigger::Health { detail: summary },
                Some(BTreeSet::from([target])),
                false,
            );
        }
        ChangeEvent::Autoscale {
            region, summary, ..
        } => {
            scheduler.request(
                pool_key(&scheduler.settings, &region),
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
fn on_declarations(app: &App, scheduler: &Scheduler, commit: Option<String>) {
    let Some(commit) = commit.or_else(|| app.read_world().commit.clone()) else {
        return;
    };
    let previous = lock(&scheduler.last_commit).replace(commit.clone());
    let regions = regions_with_pools(app);
    let changed = {
        let mirror = app
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
            &scheduler.settings.gtm_root,
            &scheduler.settings.node_pool_root,
            &regions,
        ),
        None => (true, regions.into_iter().collect()),
    };
    let trigger = Trigger::Push { commit };
    if gtm {
        scheduler.request(gtm_key(&scheduler.settings), trigger.clone(), None, false);
    }
    for region in pools {
        scheduler.request(
            pool_key(&scheduler.settings, &region),
            trigger.clone(),
            None,
            false,
        );
    }
}

fn queue_drift_checks(app: &App, scheduler: &Scheduler) {
    let plan_only = !scheduler.settings.apply_drift;
    scheduler.request(
        gtm_key(&scheduler.settings),
        Trigger::Drift,
        None,
        plan_only,
    );
    for region in regions_with_pools(app) {
        scheduler.request(
            pool_key(&scheduler.settings, &region),
            Trigger::Drift,
            None,
            plan_only,
        );
    }
}

fn start_ready(app: &Arc<App>, scheduler: &Arc<Scheduler>) {
    loop {
        let Some(job) = lock(&scheduler.queue).take_ready(now().millis(), SETTLE) else {
            return;
        };
        let (app, scheduler) = (Arc::clone(app), Arc::clone(scheduler));
        scheduler
            .running
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        tokio::spawn(async move {
            let key = job.key.clone();
            execute(&app, &scheduler, job).await;
            scheduler
                .running
                .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            lock(&scheduler.queue).finish(&key);
            scheduler.wake.notify_one();
        });
    }
}

/// Exports `commit` once into the scheduler's folder; returns its path.
async fn export(app: &App, scheduler: &Scheduler, commit: &str) -> anyhow::Result<PathBuf> {
    let dir = scheduler.root.join("src").join(sanitize(commit));
    let _one_at_a_time = scheduler.exports.lock().await;
    if dir.is_dir() {
        return Ok(dir);
    }
    let (mirror, dest, sha) = (Arc::clone(&app.mirror), dir.clone(), commit.to_owned());
    let parent = scheduler.root.join("src");
    let run_as = scheduler.runner.run_as;
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let oid = neutral_git::CommitId::from_str(&sha)?;
        let staging = parent.join(format!(".{}.tmp", sanitize(&sha)));
        let _ = std::fs::remove_dir_all(&staging);
        mirror
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .export(oid, &staging)?;
        if let Some(user) = run_as {
            // Terraform writes into its roots (`.terraform.lock.hcl`).
            user.give_tree(&staging)?;
        }
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

async fn execute(app: &App, scheduler: &Scheduler, job: Job) {
    let Some(commit) = app.read_world().commit.clone() else {
        return;
    };
    let src = match export(app, scheduler, &commit).await {
        Ok(src) => src,
        Err(err) => {
            tracing::error!(error = %format!("{err:#}"), %commit, "cannot export the commit for Terraform");
            return;
        }
    };
    // The Terraform policy before any command: a commit that bypassed the
    // hooks cannot run what pre-receive would have refused.
    let judged = {
        let src = src.clone();
        tokio::task::spawn_blocking(move || neutral_terraform::policy::check_tree(&src)).await
    };
    let findings = match judged {
        Ok(Ok(findings)) => findings,
        Ok(Err(err)) => {
            tracing::error!(error = %err, %commit, "cannot read the exported commit for the Terraform policy");
            return;
        }
        Err(err) => {
            tracing::error!(error = %err, "the Terraform policy check failed");
            return;
        }
    };
    let workdir = src.join(&job.key.root);
    if !workdir.is_dir() {
        tracing::debug!(root = %job.key.root, "no such Terraform root in this commit; nothing to run");
        return;
    }
    let mut var_files = Vec::new();
    if job.key.root == scheduler.settings.node_pool_root {
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
        backend: if scheduler.settings.state_store.is_some() {
            StateBackend::Postgres
        } else {
            StateBackend::Local
        },
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
    let id = match app
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
    let _ = app
        .with_store(move |s| s.runs().start_run(id, started))
        .await;

    let mut log = String::new();
    if !findings.is_empty() {
        let refused = neutral_terraform::policy::refuses(&findings);
        log.push_str(if refused {
            "refused by the Terraform policy (neutral_core::policy, .neutral/terraform-policy.yaml); no Terraform command ran:\n"
        } else {
            "Terraform policy warnings:\n"
        });
        for finding in &findings {
            log.push_str(&format!("{finding}\n"));
        }
        if refused {
            tracing::warn!(run = id, root = %job.key.root, %commit, errors = findings.iter().filter(|d| d.is_error()).count(), "run refused by the Terraform policy");
            let record = RunOutcome {
                status: RunStatus::Failed,
                adds: None,
                changes: None,
                destroys: None,
                exit_code: None,
                log,
            };
            let finished = now();
            if let Err(err) = app
                .with_store(move |s| s.runs().finish_run(id, &record, finished, "scheduler"))
                .await
            {
                tracing::error!(error = %format!("{err:#}"), "cannot record the run's outcome");
            }
            return;
        }
    }
    // The run's own token: what the provider needs for this root (reads,
    // records; the node pool's region for a node-pool run), revoked below.
    let regions = if job.key.root == scheduler.settings.node_pool_root {
        BTreeSet::from([job.key.workspace.clone()])
    } else {
        BTreeSet::new()
    };
    // The run's token carries the term this leader's store writes are
    // fenced with (none alone): its writes are refused once the lease has
    // moved on (a leader frozen past its lease whose Terraform went on).
    let (grant, run_token) = app.grants.mint_run(
        regions,
        app.store.fence(),
        crate::auth::MAX_RUN_TOKEN_LIFETIME,
    );
    let mut outcome: Option<Outcome> = None;
    for attempt in 1.. {
        // Plan and apply read the same published health (the newest when
        // this attempt starts): the provider's apply-time re-plan then
        // matches the saved plan however health moves meanwhile.
        let view = app.read_world().views.latest().id.clone();
        request.env = vec![
            (HEALTH_VIEW_ENV.to_owned(), view),
            ("NEUTRAL_TOKEN".to_owned(), run_token.clone()),
        ];
        if let Some(url) = &scheduler.settings.state_store {
            request.env.extend([
                ("PG_CONN_STR".to_owned(), url.clone()),
                (
                    "PG_SCHEMA_NAME".to_owned(),
                    super::state_schema(&job.key.root, &job.key.workspace),
                ),
            ]);
        }
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
    app.grants.revoke(grant);
    let log = log.replace(&run_token, "[run token]");
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
    // Terraform writes its state 0644; it can hold tokens. The data folder
    // is 0700 already, the files themselves are made 0600 too.
    let state_path = request.state_path.clone();
    let _ = tokio::task::spawn_blocking(move || super::private_state_files(&state_path)).await;
    // A run log may quote a URL with credentials or a header; never store it.
    let log = neutral_core::redact::redact(&log).into_owned();
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
    app.counters.run_finished(
        &job.key.root,
        &job.trigger_name(),
        succeeded,
        finished.since(started),
    );
    tracing::info!(
        run = id,
        root = %job.key.root,
        workspace = %job.key.workspace,
        trigger = %job.trigger_name(),
        succeeded,
        ms = finished.since(started).as_millis() as u64,
        "terraform run finished"
    );
    if let Err(err) = app
        .with_store(move |s| s.runs().finish_run(id, &record, finished, "scheduler"))
        .await
    {
        tracing::error!(error = %format!("{err:#}"), "cannot record the run's outcome");
    }
}
