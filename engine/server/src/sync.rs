//! GitOps sync: fetch the configuration branch into a local mirror, read the
//! new commit's `platform-config/` and `infra/node-pool/` from the object
//! database, validate them with the core, and either store every declaration
//! in one transaction tagged with the commit (then notify the controllers) or
//! keep the last good declarations and record the diagnostics.
//!
//! Runs every `--sync-interval` and on `POST /sync`. A commit already handled
//! (applied or rejected) is not handled again unless a sync is requested.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use neutral_core::config;
use neutral_core::diag::Diagnostic;
use neutral_git::Mirror;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::shutdown::Shutdown;
use crate::world::{ChangeEvent, Counters, Shared, now};

/// A request for an immediate sync, answered with its outcome.
#[derive(Debug)]
pub struct SyncRequest {
    pub reply: oneshot::Sender<SyncOutcome>,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncResult {
    Applied,
    Unchanged,
    Rejected,
    Error,
}

#[derive(Clone, Debug, Serialize)]
pub struct SyncOutcome {
    pub result: SyncResult,
    pub commit: Option<String>,
    pub message: String,
    pub diagnostics: Vec<Diagnostic>,
}

pub async fn run(
    shared: Arc<Shared>,
    mut requests: mpsc::Receiver<SyncRequest>,
    mut shutdown: Shutdown,
) {
    let mirror = Arc::clone(&shared.mirror);
    let mut last_handled: Option<String> = shared
        .store
        .sync_status()
        .ok()
        .and_then(|s| s.last_seen.map(|c| c.commit));
    let mut interval = tokio::time::interval(shared.args.sync_interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {
                sync_once(&shared, &mirror, &mut last_handled, false).await;
            }
            request = requests.recv() => {
                let Some(request) = request else { break };
                let outcome = sync_once(&shared, &mirror, &mut last_handled, true).await;
                let _ = request.reply.send(outcome);
            }
            () = shutdown.wait() => break,
        }
    }
}

async fn sync_once(
    shared: &Arc<Shared>,
    mirror: &Arc<Mutex<Mirror>>,
    last_handled: &mut Option<String>,
    requested: bool,
) -> SyncOutcome {
    let at = now();
    shared.write_world().sync.last_attempt = Some(at);
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
        Ok(Err(err)) => return sync_error(shared, err.to_string()),
        Err(err) => return sync_error(shared, format!("sync task failed: {err}")),
    };
    shared.write_world().sync.last_error = None;
    if !requested && last_handled.as_deref() == Some(commit.as_str()) {
        return unchanged(commit);
    }
    if requested && shared.read_world().commit.as_deref() == Some(commit.as_str()) {
        *last_handled = Some(commit.clone());
        return unchanged(commit);
    }
    *last_handled = Some(commit.clone());

    let loaded = config::load(&files);
    if loaded.is_valid() {
        let decl = loaded.declarations;
        let stored = decl.clone();
        let sha = commit.clone();
        let applied = shared
            .with_store(move |s| s.apply_declarations(&sha, &stored, at, "sync"))
            .await;
        let changes = match applied {
            Ok(applied) => applied.changes.summary(),
            Err(err) => return sync_error(shared, format!("storing commit {commit}: {err:#}")),
        };
        {
            let mut world = shared.write_world();
            world.decl = Arc::new(decl);
            world.commit = Some(commit.clone());
            world.refresh_settings(&shared.args);
        }
        Counters::bump(&shared.counters.syncs_applied);
        tracing::info!(%commit, summary = %info.summary, %changes, "applied declarations");
        let _ = shared.events.send(ChangeEvent::Declarations {
            commit: commit.clone(),
            at,
        });
        shared.probe_wakeup.notify_one();
        shared
            .recompute(&format!("commit {}", short(&commit)))
            .await;
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
        if let Err(err) = shared
            .with_store(move |s| s.record_sync_failure(&sha, &stored, at, "sync"))
            .await
        {
            tracing::error!(error = %format!("{err:#}"), "cannot record the rejected commit");
        }
        Counters::bump(&shared.counters.syncs_rejected);
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

fn sync_error(shared: &Shared, message: String) -> SyncOutcome {
    Counters::bump(&shared.counters.sync_errors);
    let mut world = shared.write_world();
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

/// Asks the sync task for an immediate sync and waits for its outcome.
pub async fn request(shared: &Shared, timeout: Duration) -> Option<SyncOutcome> {
    let (reply, answer) = oneshot::channel();
    shared
        .sync_requests
        .send(SyncRequest { reply })
        .await
        .ok()?;
    tokio::time::timeout(timeout, answer).await.ok()?.ok()
}
