//! The sync task: fetches, validates and applies commits (see [`super`]),
//! every `sync_interval` and on request.

use std::sync::{Arc, Mutex};

use neutral_core::config;
use neutral_git::Mirror;
use tokio::sync::mpsc;

use super::{SyncOutcome, SyncRequest, SyncResult};
use crate::app::App;
use crate::shutdown::Shutdown;
use crate::world::{ChangeEvent, now};

/// Syncs until `shutdown`; holds the request channel (shared across leader
/// terms) while it runs.
pub async fn run(
    app: Arc<App>,
    requests: Arc<tokio::sync::Mutex<mpsc::Receiver<SyncRequest>>>,
    mut shutdown: Shutdown,
) {
    let mut requests = tokio::select! {
        requests = requests.lock() => requests,
        () = shutdown.wait() => return,
    };
    let mirror = Arc::clone(&app.mirror);
    let mut last_handled: Option<String> = app
        .store
        .sync_status()
        .ok()
        .and_then(|s| s.last_seen.map(|c| c.commit));
    let mut interval = tokio::time::interval(app.settings.sync_interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {
                sync_once(&app, &mirror, &mut last_handled, false).await;
            }
            request = requests.recv() => {
                let Some(request) = request else { break };
                let outcome = sync_once(&app, &mirror, &mut last_handled, true).await;
                let _ = request.reply.send(outcome);
            }
            () = shutdown.wait() => break,
        }
    }
}

/// One attempt, timed; a good one (the newest commit applied or already in
/// force) sets the last-good-sync time.
async fn sync_once(
    app: &Arc<App>,
    mirror: &Arc<Mutex<Mirror>>,
    last_handled: &mut Option<String>,
    requested: bool,
) -> SyncOutcome {
    let started = std::time::Instant::now();
    let outcome = attempt(app, mirror, last_handled, requested).await;
    app.counters
        .sync_seconds
        .observe(started.elapsed().as_secs_f64());
    let good = match outcome.result {
        SyncResult::Applied => true,
        SyncResult::Unchanged => {
            outcome.commit.is_some() && app.read_world().commit == outcome.commit
        }
        SyncResult::Rejected | SyncResult::Error => false,
    };
    if good {
        app.counters
            .last_good_sync
            .set(now().millis() as f64 / 1000.0);
    }
    outcome
}

async fn attempt(
    app: &Arc<App>,
    mirror: &Arc<Mutex<Mirror>>,
    last_handled: &mut Option<String>,
    requested: bool,
) -> SyncOutcome {
    let at = now();
    app.write_world().sync.last_attempt = Some(at);
    let mirror = Arc::clone(mirror);
    let fetched = tokio::task::spawn_blocking(move || {
        let mirror = mirror
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let head = mirror.fetch()?;
        let files = mirror.config_tree(head)?;
        let info = mirror.commit_info(head)?;
        Ok::<_, neutral_git::GitError>((head.to_string(), files, info))
    })
    .await;
    let (commit, files, info) = match fetched {
        Ok(Ok(fetched)) => fetched,
        Ok(Err(err)) => return sync_error(app, &err.to_string()),
        Err(err) => return sync_error(app, &format!("sync task failed: {err}")),
    };
    app.write_world().sync.last_error = None;
    if !requested && last_handled.as_deref() == Some(commit.as_str()) {
        return unchanged(commit);
    }
    if requested && app.read_world().commit.as_deref() == Some(commit.as_str()) {
        *last_handled = Some(commit.clone());
        return unchanged(commit);
    }
    *last_handled = Some(commit.clone());

    let loaded = config::load(&files);
    if loaded.is_valid() {
        let decl = loaded.declarations;
        let stored = decl.clone();
        let sha = commit.clone();
        let applied = app
            .with_store(move |s| s.apply_declarations(&sha, &stored, at, "sync"))
            .await;
        let changes = match applied {
            Ok(applied) => applied.changes.summary(),
            Err(err) => return sync_error(app, &format!("storing commit {commit}: {err:#}")),
        };
        {
            let mut world = app.write_world();
            world.decl = Arc::new(decl);
            world.commit = Some(commit.clone());
            world.refresh_settings(&app.settings.liveness);
        }
        app.counters.syncs_applied.inc();
        tracing::info!(%commit, summary = %info.summary, %changes, "applied declarations");
        let _ = app.events.send(ChangeEvent::Declarations {
            commit: commit.clone(),
            at,
        });
        app.probe_wakeup.notify_one();
        app.recompute(&format!("commit {}", short(&commit))).await;
        SyncOutcome {
            result: SyncResult::Applied,
            commit: Some(commit),
            message: format!("{}: {changes}", info.summary),
            diagnostics: loaded.diagnostics,
        }
    } else {
        let diagnostics = loaded.diagnostics;
        let stored = diagnostics.clone();
        let sha = commit.clone();
        if let Err(err) = app
            .with_store(move |s| s.record_sync_failure(&sha, &stored, at, "sync"))
            .await
        {
            tracing::error!(error = %format!("{err:#}"), "cannot record the rejected commit");
        }
        app.counters.syncs_rejected.inc();
        let errors = diagnostics.iter().filter(|d| d.is_error()).count();
        tracing::warn!(%commit, errors, "rejected invalid commit; keeping the last good declarations");
        SyncOutcome {
            result: SyncResult::Rejected,
            commit: Some(commit),
            message: format!("{errors} errors; the last good declarations stay in force"),
            diagnostics,
        }
    }
}

fn short(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}

fn unchanged(commit: String) -> SyncOutcome {
    SyncOutcome {
        result: SyncResult::Unchanged,
        message: format!("already at {}", short(&commit)),
        commit: Some(commit),
        diagnostics: Vec::new(),
    }
}

/// Records a failed sync. The message is redacted here, once, before it
/// reaches `/status`, the log or the `POST /sync` answer: a `--repo` URL
/// with credentials in it must never show them.
fn sync_error(app: &App, message: &str) -> SyncOutcome {
    let message = neutral_core::redact::redact(message).into_owned();
    app.counters.sync_errors.inc();
    let mut world = app.write_world();
    if world.sync.last_error.as_deref() != Some(message.as_str()) {
        tracing::error!(error = %message, "sync failed");
    }
    world.sync.last_error = Some(message.clone());
    SyncOutcome {
        result: SyncResult::Error,
        commit: None,
        message,
        diagnostics: Vec::new(),
    }
}
