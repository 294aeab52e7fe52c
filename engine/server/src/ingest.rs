//! The heartbeat writer: heartbeats are accepted in memory at once and
//! written to SQLite in batches (one transaction per batch), so the node API
//! sustains thousands of heartbeats per second. Also checkpoints the WAL off
//! the request path. The queue in front of it is bounded (`--heartbeat-queue`),
//! and `backlog::Backlog` tells how far behind it is; what a full queue or a late
//! writer means for a heartbeat, the node API decides
//! (`api::nodes::accept_heartbeat`).

use std::sync::Arc;
use std::time::Duration;

use neutral_store::Heartbeat;
use tokio::sync::mpsc;

use crate::app::App;
use crate::shutdown::Shutdown;

/// Largest batch written in one transaction: a writer that fell behind
/// catches up in few large transactions (on PostgreSQL, sixteen 512-row
/// chunks of two statements each) rather than many.
const MAX_BATCH: usize = 8000;
/// How long the first heartbeat of a batch may wait for company.
const MAX_DELAY: Duration = Duration::from_millis(100);
/// How long a stopping daemon keeps writing its queued heartbeats.
const FLUSH_WITHIN: Duration = Duration::from_secs(5);
/// The heartbeat writer waits before each batch while this env var's file
/// exists (its queue fills; overload tests only).
pub const FAULT_HOLD_HEARTBEAT_WRITER: &str = "NEUTRAL_FAULT_HOLD_HEARTBEAT_WRITER";
/// How long the writer may be held by [`FAULT_HOLD_HEARTBEAT_WRITER`].
const HOLD_AT_MOST: Duration = Duration::from_secs(60);

pub async fn run(app: Arc<App>, mut rx: mpsc::Receiver<Heartbeat>, mut shutdown: Shutdown) {
    let hold = std::env::var_os(FAULT_HOLD_HEARTBEAT_WRITER).map(std::path::PathBuf::from);
    let mut checkpoint = tokio::time::interval(Duration::from_secs(1));
    checkpoint.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            first = rx.recv() => {
                let Some(first) = first else { break };
                app.heartbeat_backlog.taken(first.at);
                if let Some(hold) = &hold {
                    hold_while_armed(hold).await;
                }
                let mut batch = vec![first];
                let deadline = tokio::time::Instant::now() + MAX_DELAY;
                while batch.len() < MAX_BATCH {
                    match tokio::time::timeout_at(deadline, rx.recv()).await {
                        Ok(Some(heartbeat)) => batch.push(heartbeat),
                        Ok(None) | Err(_) => break,
                    }
                }
                write(&app, batch).await;
                app.heartbeat_backlog.committed(rx.is_empty());
            }
            _ = checkpoint.tick() => {
                let _ = app.with_store(neutral_store::Store::checkpoint).await;
            }
            () = shutdown.wait() => break,
        }
    }
    // Flush what is queued before the process exits, for at most
    // FLUSH_WITHIN: a full queue on a busy shared store can take longer
    // than a service manager waits for a stop. What is left is only the
    // stored copy of heartbeats already counted in memory; the agents'
    // next heartbeats (to another replica, when there is one) replace it.
    let deadline = tokio::time::Instant::now() + FLUSH_WITHIN;
    let mut written = 0usize;
    loop {
        let mut batch = Vec::new();
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(heartbeat) => batch.push(heartbeat),
                Err(_) => break,
            }
        }
        if batch.is_empty() {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            let left = batch.len().saturating_add(rx.len());
            tracing::warn!(
                written,
                left,
                within_s = FLUSH_WITHIN.as_secs(),
                "stopping: queued heartbeats not written to the store in time"
            );
            break;
        }
        written = written.saturating_add(batch.len());
        write(&app, batch).await;
    }
}

/// Waits while the fault file `arm` exists, at most [`HOLD_AT_MOST`].
async fn hold_while_armed(arm: &std::path::Path) {
    let started = tokio::time::Instant::now();
    while arm.exists() && started.elapsed() < HOLD_AT_MOST {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn write(app: &App, batch: Vec<Heartbeat>) {
    match app
        .with_store(move |s| s.samples().record_heartbeats(&batch))
        .await
    {
        Ok(outcome) if !outcome.unknown.is_empty() => {
            tracing::debug!(
                unknown = outcome.unknown.len(),
                "heartbeats of deleted nodes dropped"
            );
        }
        Ok(_) => {}
        Err(err) => tracing::error!(error = %format!("{err:#}"), "cannot store heartbeats"),
    }
}
