//! GitOps sync: fetch the configuration branch into a local mirror, read the
//! new commit's `platform-config/` and `infra/node-pool/` from the object
//! database, validate them with the core, and either store every declaration
//! in one transaction tagged with the commit (then notify the controllers) or
//! keep the last good declarations and record the diagnostics.
//!
//! Runs every `--sync-interval` and on `POST /sync`. A commit already handled
//! (applied or rejected) is not handled again unless a sync is requested.
//!
//! This module holds the handle the rest of the daemon asks for a sync
//! with; the task itself is [`task`]. It must not import `app`.

pub mod task;

use std::time::Duration;

use neutral_core::diag::Diagnostic;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

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

/// Asks the sync task for an immediate sync and waits for its outcome.
pub async fn request(
    requests: &mpsc::Sender<SyncRequest>,
    timeout: Duration,
) -> Option<SyncOutcome> {
    let (reply, answer) = oneshot::channel();
    requests.send(SyncRequest { reply }).await.ok()?;
    tokio::time::timeout(timeout, answer).await.ok()?.ok()
}
