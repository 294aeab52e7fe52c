//! Terraform runs: what was run, why, from which commit, how it ended, and
//! the tail of its log.
//!
//! This module owns the `runs` table and the run lifecycle
//! `queued → running → succeeded | failed | cancelled` (a queued run may also
//! end directly, e.g. cancelled or failed to start), and `interrupted` for a
//! run that was queued or running when the daemon stopped without finishing
//! it (kill -9, a crash, a power cut): [`RunStore::interrupt_unfinished`] at
//! start. It stores what the runner
//! reports; it does not run anything. A stored log keeps its last
//! `run_log_limit` bytes, prefixed with a marker saying how much was cut.
//! Queuing and finishing a run append audit entries in the same transaction.

use std::borrow::Cow;

use crate::db::{OptionalExtension, Row, Tx, params};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::audit::{AuditEntry, append_in, kinds};
use crate::error::{During, Result, StoreError};
use crate::store::{Store, short_commit};
use neutral_core::model::Timestamp;

#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    /// The daemon stopped (was killed) while the run was queued or running.
    Interrupted,
}

impl RunStatus {
    pub const ALL: [RunStatus; 6] = [
        RunStatus::Queued,
        RunStatus::Running,
        RunStatus::Succeeded,
        RunStatus::Failed,
        RunStatus::Cancelled,
        RunStatus::Interrupted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "queued",
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
            RunStatus::Interrupted => "interrupted",
        }
    }

    pub fn parse(text: &str) -> Option<RunStatus> {
        RunStatus::ALL.into_iter().find(|s| s.as_str() == text)
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RunStatus::Succeeded
                | RunStatus::Failed
                | RunStatus::Cancelled
                | RunStatus::Interrupted
        )
    }
}

/// A run to queue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewRun {
    /// The Terraform root directory, e.g. `infra/node-pool`.
    pub root: String,
    pub workspace: String,
    /// Why: `push`, `schedule`, `autoscale`, `health`, `manual`, ...
    pub trigger: String,
    pub commit: Option<String>,
}

/// How a run ended, as the runner reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunOutcome {
    /// `succeeded`, `failed` or `cancelled`.
    pub status: RunStatus,
    /// Resources added, changed and destroyed, when the plan got that far.
    pub adds: Option<u32>,
    pub changes: Option<u32>,
    pub destroys: Option<u32>,
    pub exit_code: Option<i32>,
    /// The full log; only its tail is stored.
    pub log: String,
}

/// A run without its log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSummary {
    pub id: i64,
    pub root: String,
    pub workspace: String,
    pub trigger: String,
    pub commit: Option<String>,
    pub status: RunStatus,
    pub adds: Option<u32>,
    pub changes: Option<u32>,
    pub destroys: Option<u32>,
    pub exit_code: Option<i32>,
    pub queued_at: Timestamp,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    /// From start (or queueing, if it never started) to finish.
    pub duration_ms: Option<i64>,
}

/// A run with the stored tail of its log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    #[serde(flatten)]
    pub summary: RunSummary,
    pub log: String,
}

/// Which runs [`RunStore::list_page`] returns: newest first, optionally
/// before a cursor (a run id from the previous page) and filtered.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunQuery {
    /// At most this many (capped at 10,000).
    pub limit: u32,
    /// Only runs with a smaller id (the last id of the previous page).
    pub before_id: Option<i64>,
    pub root: Option<String>,
    /// The workspace: the region for the node-pool root.
    pub workspace: Option<String>,
    pub status: Option<RunStatus>,
}

/// The run view of a [`Store`].
#[derive(Clone, Copy, Debug)]
pub struct RunStore<'a> {
    pub(crate) store: &'a Store,
}

const SUMMARY_COLUMNS: &str = "id, root, workspace, trigger, commit_sha, status, adds, changes, \
     destroys, exit_code, queued_at, started_at, finished_at, duration_ms";

impl RunStore<'_> {
    /// Queues a run; returns its id. Appends `run.queued`.
    pub fn create_run(&self, run: &NewRun, at: Timestamp, actor: &str) -> Result<i64> {
        const OP: &str = "create run";
        self.store.write_fenced(OP, |tx| {
            let id: i64 = tx
                .query_row(
                    "INSERT INTO runs (root, workspace, trigger, commit_sha, status, queued_at)
                     VALUES (?1, ?2, ?3, ?4, 'queued', ?5) RETURNING id",
                    params![run.root, run.workspace, run.trigger, run.commit, at.0],
                    |row| row.get(0),
                )
                .during(OP)?;
            let from = run
                .commit
                .as_deref()
                .map(|c| format!(" at commit {}", short_commit(c)))
                .unwrap_or_default();
            append_in(
                tx,
                &AuditEntry {
                    at,
                    actor: actor.to_owned(),
                    kind: kinds::RUN_QUEUED.to_owned(),
                    subject: format!("run:{id}"),
                    message: format!(
                        "queued run {id} of {} (workspace {}) on {}{from}",
                        run.root, run.workspace, run.trigger
                    ),
                    commit: run.commit.clone(),
                    data: json!({ "run": id, "root": run.root, "workspace": run.workspace,
                                  "trigger": run.trigger }),
                },
            )?;
            Ok(id)
        })
    }

    /// Marks a queued run running.
    pub fn start_run(&self, id: i64, at: Timestamp) -> Result<()> {
        const OP: &str = "start run";
        self.store.write_fenced(OP, |tx| {
            let status = current_status(tx, OP, id)?;
            if status != RunStatus::Queued {
                return Err(transition(OP, id, status, RunStatus::Running));
            }
            tx.execute(
                "UPDATE runs SET status = 'running', started_at = ?2 WHERE id = ?1",
                params![id, at.0],
            )
            .during(OP)?;
            Ok(())
        })
    }

    /// Records how a queued or running run ended. Appends `run.finished`.
    pub fn finish_run(
        &self,
        id: i64,
        outcome: &RunOutcome,
        at: Timestamp,
        actor: &str,
    ) -> Result<()> {
        const OP: &str = "finish run";
        let log = bounded_tail(&outcome.log, self.store.options.run_log_limit);
        self.store.write_fenced(OP, |tx| {
            let status = current_status(tx, OP, id)?;
            if status.is_terminal() || !outcome.status.is_terminal() {
                return Err(transition(OP, id, status, outcome.status));
            }
            let (started_at, commit): (Option<i64>, Option<String>) = tx
                .query_row(
                    "SELECT started_at, commit_sha FROM runs WHERE id = ?1",
                    params![id],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .during(OP)?;
            let duration_ms = started_at.map(|started| at.0.saturating_sub(started).max(0));
            tx.execute(
                "UPDATE runs SET status = ?2, adds = ?3, changes = ?4, destroys = ?5,
                 exit_code = ?6, finished_at = ?7, duration_ms = ?8, log = ?9 WHERE id = ?1",
                params![
                    id,
                    outcome.status.as_str(),
                    outcome.adds,
                    outcome.changes,
                    outcome.destroys,
                    outcome.exit_code,
                    at.0,
                    duration_ms,
                    log.as_ref()
                ],
            )
            .during(OP)?;
            let counts = match (outcome.adds, outcome.changes, outcome.destroys) {
                (Some(a), Some(c), Some(d)) => format!(": +{a} ~{c} -{d}"),
                _ => String::new(),
            };
            append_in(
                tx,
                &AuditEntry {
                    at,
                    actor: actor.to_owned(),
                    kind: kinds::RUN_FINISHED.to_owned(),
                    subject: format!("run:{id}"),
                    message: format!("run {id} {}{counts}", outcome.status.as_str()),
                    commit,
                    data: json!({
                        "run": id,
                        "status": outcome.status.as_str(),
                        "adds": outcome.adds,
                        "changes": outcome.changes,
                        "destroys": outcome.destroys,
                        "exit_code": outcome.exit_code,
                        "duration_ms": duration_ms,
                    }),
                },
            )?;
            Ok(())
        })
    }

    /// Marks every run still `queued` or `running` — left so by a daemon that
    /// was killed — `interrupted` at `at`, appending a line to its log and a
    /// `run.interrupted` audit entry each, in one transaction. Call it at
    /// start, before any run of this process is created. Returns the runs
    /// it marked (so the caller can plan their roots again).
    pub fn interrupt_unfinished(&self, at: Timestamp, actor: &str) -> Result<Vec<RunSummary>> {
        const OP: &str = "interrupt unfinished runs";
        let limit = self.store.options.run_log_limit;
        self.store.write_fenced(OP, |tx| {
            let ids: Vec<i64> = {
                let mut stmt = tx
                    .prepare_cached(
                        "SELECT id FROM runs WHERE status IN ('queued', 'running') ORDER BY id",
                    )
                    .during(OP)?;
                let rows = stmt.query_map(params![], |row| row.get(0)).during(OP)?;
                rows.collect::<crate::db::DbResult<_>>().during(OP)?
            };
            let mut marked = Vec::with_capacity(ids.len());
            for id in ids {
                let (status, started_at, log, commit): (
                    String,
                    Option<i64>,
                    String,
                    Option<String>,
                ) = tx
                    .query_row(
                        "SELECT status, started_at, log, commit_sha FROM runs WHERE id = ?1",
                        params![id],
                        |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)),
                    )
                    .during(OP)?;
                let duration_ms = started_at.map(|started| at.0.saturating_sub(started).max(0));
                let note = format!(
                    "{log}\n[interrupted: the control plane stopped while this run was {status}; \
                     marked at restart, and its root is planned again]\n"
                );
                let log = bounded_tail(&note, limit);
                tx.execute(
                    "UPDATE runs SET status = 'interrupted', finished_at = ?2, duration_ms = ?3,
                     log = ?4 WHERE id = ?1",
                    params![id, at.0, duration_ms, log.as_ref()],
                )
                .during(OP)?;
                append_in(
                    tx,
                    &AuditEntry {
                        at,
                        actor: actor.to_owned(),
                        kind: kinds::RUN_INTERRUPTED.to_owned(),
                        subject: format!("run:{id}"),
                        message: format!(
                            "run {id} was {status} when the control plane stopped: interrupted"
                        ),
                        commit,
                        data: json!({ "run": id, "was": status, "duration_ms": duration_ms }),
                    },
                )?;
                let summary = tx
                    .query_row(
                        &format!("SELECT {SUMMARY_COLUMNS} FROM runs WHERE id = ?1"),
                        params![id],
                        raw_summary,
                    )
                    .during(OP)?;
                marked.push(into_summary(OP, summary)?);
            }
            Ok(marked)
        })
    }

    /// The newest `limit` runs (of one root, if given), newest first.
    pub fn list_runs(&self, limit: u32, root: Option<&str>) -> Result<Vec<RunSummary>> {
        const OP: &str = "list runs";
        self.store.read(OP, |tx| {
            let mut stmt = tx
                .prepare_cached(&format!(
                    "SELECT {SUMMARY_COLUMNS} FROM runs WHERE CAST(?1 AS TEXT) IS NULL OR root = ?1
                     ORDER BY id DESC LIMIT ?2"
                ))
                .during(OP)?;
            let rows = stmt
                .query_map(params![root, limit], raw_summary)
                .during(OP)?;
            let mut out = Vec::new();
            for row in rows {
                out.push(into_summary(OP, row.during(OP)?)?);
            }
            Ok(out)
        })
    }

    /// A page of runs, newest first (see [`RunQuery`]).
    pub fn list_page(&self, query: &RunQuery) -> Result<Vec<RunSummary>> {
        const OP: &str = "list runs";
        self.store.read(OP, |tx| {
            let mut stmt = tx
                .prepare_cached(&format!(
                    "SELECT {SUMMARY_COLUMNS} FROM runs
                     WHERE id < ?1 AND (CAST(?2 AS TEXT) IS NULL OR root = ?2)
                       AND (CAST(?3 AS TEXT) IS NULL OR workspace = ?3) AND (CAST(?4 AS TEXT) IS NULL OR status = ?4)
                     ORDER BY id DESC LIMIT ?5"
                ))
                .during(OP)?;
            let rows = stmt
                .query_map(
                    params![
                        query.before_id.unwrap_or(i64::MAX),
                        query.root,
                        query.workspace,
                        query.status.map(RunStatus::as_str),
                        query.limit.min(10_000)
                    ],
                    raw_summary,
                )
                .during(OP)?;
            let mut out = Vec::new();
            for row in rows {
                out.push(into_summary(OP, row.during(OP)?)?);
            }
            Ok(out)
        })
    }

    pub fn get_run(&self, id: i64) -> Result<Option<Run>> {
        const OP: &str = "get run";
        self.store.read(OP, |tx| {
            let row = tx
                .query_row(
                    &format!("SELECT {SUMMARY_COLUMNS}, log FROM runs WHERE id = ?1"),
                    params![id],
                    |row| Ok((raw_summary(row)?, row.get::<_, String>(14)?)),
                )
                .optional()
                .during(OP)?;
            row.map(|(raw, log)| {
                Ok(Run {
                    summary: into_summary(OP, raw)?,
                    log,
                })
            })
            .transpose()
        })
    }
}

fn current_status(conn: &Tx<'_>, op: &'static str, id: i64) -> Result<RunStatus> {
    let text: Option<String> = conn
        .query_row(
            "SELECT status FROM runs WHERE id = ?1",
            params![id],
            |row| row.get(0),
        )
        .optional()
        .during(op)?;
    let text = text.ok_or(StoreError::RunNotFound { op, id })?;
    RunStatus::parse(&text).ok_or_else(|| StoreError::Corrupt {
        op,
        what: format!("status of run {id}"),
        value: text,
    })
}

fn transition(op: &'static str, id: i64, from: RunStatus, to: RunStatus) -> StoreError {
    StoreError::RunTransition {
        op,
        id,
        from: from.as_str().to_owned(),
        to: to.as_str().to_owned(),
    }
}

type RawSummary = (RunSummary, String);

/// Reads the summary columns; the status text is parsed afterwards.
fn raw_summary(row: &Row<'_>) -> crate::db::DbResult<RawSummary> {
    Ok((
        RunSummary {
            id: row.get(0)?,
            root: row.get(1)?,
            workspace: row.get(2)?,
            trigger: row.get(3)?,
            commit: row.get(4)?,
            status: RunStatus::Queued,
            adds: row.get(6)?,
            changes: row.get(7)?,
            destroys: row.get(8)?,
            exit_code: row.get(9)?,
            queued_at: Timestamp(row.get(10)?),
            started_at: row.get::<_, Option<i64>>(11)?.map(Timestamp),
            finished_at: row.get::<_, Option<i64>>(12)?.map(Timestamp),
            duration_ms: row.get(13)?,
        },
        row.get(5)?,
    ))
}

fn into_summary(op: &'static str, (mut summary, status): RawSummary) -> Result<RunSummary> {
    summary.status = RunStatus::parse(&status).ok_or_else(|| StoreError::Corrupt {
        op,
        what: format!("status of run {}", summary.id),
        value: status,
    })?;
    Ok(summary)
}

/// The last bytes of `log` that fit in `limit` together with a marker line
/// saying how many bytes were cut; `log` itself when it fits. Cuts on a
/// character boundary.
pub(crate) fn bounded_tail(log: &str, limit: usize) -> Cow<'_, str> {
    if log.len() <= limit {
        return Cow::Borrowed(log);
    }
    // The marker is sized for the largest count it could show.
    let widest = marker(log.len()).len();
    let keep = limit.saturating_sub(widest);
    let mut start = log.len().saturating_sub(keep);
    while !log.is_char_boundary(start) {
        start = start.saturating_add(1);
    }
    let tail = log.get(start..).unwrap_or_default();
    Cow::Owned(format!("{}{tail}", marker(start)))
}

fn marker(dropped: usize) -> String {
    format!("[... {dropped} earlier bytes of this log were dropped]\n")
}

impl Store {
    pub fn runs(&self) -> RunStore<'_> {
        RunStore { store: self }
    }
}

#[cfg(test)]
mod tests;
