//! Audit retention (`--audit-retention`, `--audit-archive`): the leader's
//! task that prunes audit entries older than the retention, a batch at a
//! time, writing each batch to the archive folder first when there is one.
//!
//! It owns the archive's files and the pace of pruning. What may be deleted,
//! and that a replica no longer leading deletes nothing, is the store's
//! (`AuditLog::prune`: a forward-only mark in a fenced transaction). It must
//! never prune an entry whose archive file is not on disk: a batch's file is
//! written, synced and renamed into place before the batch is deleted, and
//! a batch whose pruning fails is archived again (the same first id, so the
//! same file name) on the next try.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use neutral_core::model::Timestamp;
use neutral_store::{AuditEntry, AuditRecord, kinds};

use crate::api::rfc3339;
use crate::app::App;
use crate::settings::AuditRetention;
use crate::shutdown::Shutdown;
use crate::world::now;

/// Entries pruned (and archived) per transaction.
pub const BATCH: u32 = 5_000;

/// Batches per round at most, so that a backlog (retention turned on over a
/// long log) is caught up over several rounds without holding the store's
/// writer for long.
const BATCHES_PER_ROUND: usize = 20;

pub async fn run(app: Arc<App>, retention: AuditRetention, mut shutdown: Shutdown) {
    let mut tick = tokio::time::interval(pace(retention.keep));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.wait() => return,
        }
        for _ in 0..BATCHES_PER_ROUND {
            match prune_batch(&app, &retention, now()).await {
                Ok(0) => break,
                Ok(pruned) => {
                    app.counters.audit_pruned.inc_by(pruned);
                }
                Err(err) => {
                    tracing::warn!(error = %format!("{err:#}"), "audit retention: nothing pruned this round");
                    break;
                }
            }
        }
    }
}

/// How often retention runs: a tenth of the retention, between 1 s and
/// 10 minutes.
pub fn pace(keep: Duration) -> Duration {
    (keep / 10).clamp(Duration::from_secs(1), Duration::from_secs(600))
}

/// The oldest entries written before `keep` ago.
fn cutoff(now: Timestamp, keep: Duration) -> Timestamp {
    let keep_ms = i64::try_from(keep.as_millis()).unwrap_or(i64::MAX);
    Timestamp(now.0.saturating_sub(keep_ms))
}

/// Archives (when asked) and prunes one batch; returns how many entries went.
async fn prune_batch(app: &App, retention: &AuditRetention, at: Timestamp) -> anyhow::Result<u64> {
    let before = cutoff(at, retention.keep);
    let batch = app
        .with_store(move |s| s.audit().prunable_before(before, BATCH))
        .await
        .context("cannot read the audit entries to prune")?;
    let (Some(first), Some(last)) = (batch.first(), batch.last()) else {
        return Ok(0);
    };
    let (first, last) = (first.id, last.id);
    let count = u64::try_from(batch.len()).unwrap_or(u64::MAX);
    let archived = match &retention.archive {
        Some(dir) => {
            let dir = dir.clone();
            let file = tokio::task::spawn_blocking(move || write_archive(&dir, &batch))
                .await
                .context("the archive writer panicked")??;
            Some(file)
        }
        None => None,
    };
    let note = pruned_entry(at, before, first, last, count, archived.as_deref());
    app.with_store(move |s| s.audit().prune(first, last, count, &note))
        .await
        .with_context(|| format!("cannot prune audit entries {first}..={last}"))?;
    tracing::info!(
        first,
        last,
        count,
        archive = archived.as_ref().map(|p| p.display().to_string()),
        "audit retention: entries pruned"
    );
    Ok(count)
}

/// The entry a prune leaves in the log it pruned.
fn pruned_entry(
    at: Timestamp,
    before: Timestamp,
    first: i64,
    last: i64,
    count: u64,
    archive: Option<&Path>,
) -> AuditEntry {
    let whereto = archive.map_or_else(
        || "not archived (no --audit-archive)".to_owned(),
        |file| format!("archived to {}", file.display()),
    );
    AuditEntry {
        at,
        actor: "retention".into(),
        kind: kinds::AUDIT_PRUNED.into(),
        subject: "audit_log".into(),
        message: format!(
            "pruned {count} entries (ids {first}..={last}) written before {}; {whereto}",
            rfc3339(before)
        ),
        commit: None,
        data: serde_json::json!({
            "first_id": first,
            "last_id": last,
            "count": count,
            "before": rfc3339(before),
            "archive": archive.map(|p| p.display().to_string()),
        }),
    }
}

/// The archive file of the batch that starts at `first_id`.
pub fn archive_name(first_id: i64) -> String {
    format!("audit-{first_id:020}.jsonl")
}

/// Writes `batch` (one JSON record a line) to its file in `dir`, durably:
/// a temporary file, synced, renamed over any earlier try's, and the folder
/// synced. Returns the file's path.
fn write_archive(dir: &Path, batch: &[AuditRecord]) -> anyhow::Result<PathBuf> {
    let first = batch.first().map_or(0, |r| r.id);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| {
            format!(
                "--audit-archive {}: cannot create the folder",
                dir.display()
            )
        })?;
    let name = archive_name(first);
    let path = dir.join(&name);
    let temporary = dir.join(format!(".{name}.partial"));
    let mut lines = Vec::new();
    for record in batch {
        serde_json::to_writer(&mut lines, record)
            .with_context(|| format!("cannot encode audit entry {}", record.id))?;
        lines.push(b'\n');
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)
        .with_context(|| format!("cannot create {}", temporary.display()))?;
    file.write_all(&lines)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", temporary.display()))?;
    std::fs::rename(&temporary, &path)
        .with_context(|| format!("cannot rename {} to {name}", temporary.display()))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot sync the folder {}", dir.display()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_runs_a_tenth_as_often_as_it_keeps_within_bounds() {
        assert_eq!(pace(Duration::from_secs(2)), Duration::from_secs(1));
        assert_eq!(pace(Duration::from_secs(600)), Duration::from_secs(60));
        assert_eq!(
            pace(Duration::from_secs(90 * 86_400)),
            Duration::from_secs(600)
        );
    }

    #[test]
    fn the_cutoff_is_the_retention_before_now_and_never_wraps() {
        assert_eq!(
            cutoff(Timestamp(10_000), Duration::from_secs(3)),
            Timestamp(7_000)
        );
        assert_eq!(
            cutoff(Timestamp(i64::MIN + 5), Duration::from_secs(1)),
            Timestamp(i64::MIN)
        );
    }

    #[test]
    fn an_archive_holds_the_batch_as_json_lines_and_a_retry_replaces_it() {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("archive");
        let record = |id: i64| AuditRecord {
            id,
            entry: AuditEntry {
                at: Timestamp(id * 10),
                actor: "admin".into(),
                kind: "api.write".into(),
                subject: format!("s{id}"),
                message: "m".into(),
                commit: None,
                data: serde_json::json!({ "id": id }),
            },
        };
        let first_try = write_archive(&archive, &[record(7), record(8)]).unwrap();
        assert_eq!(first_try, archive.join("audit-00000000000000000007.jsonl"));
        let retry = write_archive(&archive, &[record(7), record(8), record(9)]).unwrap();
        assert_eq!(retry, first_try);
        let text = std::fs::read_to_string(&retry).unwrap();
        let read: Vec<AuditRecord> = text
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(read, vec![record(7), record(8), record(9)]);
        let names: Vec<_> = std::fs::read_dir(&archive)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "no partial file left: {names:?}");
    }

    #[test]
    fn an_archive_folder_that_cannot_be_made_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, b"").unwrap();
        let err = write_archive(&blocker.join("sub"), &[]).unwrap_err();
        assert!(format!("{err:#}").contains("--audit-archive"), "{err:#}");
    }
}
