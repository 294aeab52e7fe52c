//! Heartbeats and the bounded metric samples the autoscaler reads.
//!
//! This module owns the `samples` table and the heartbeat columns of `nodes`
//! (`last_heartbeat`, latest metrics). [`SampleStore::record_heartbeats`]
//! writes a whole batch in one transaction with cached statements: per
//! heartbeat one conditional `INSERT … SELECT` (the sample) and one `UPDATE`
//! (the node), then one bounded prune.
//!
//! # How the samples stay bounded
//!
//! - **Retention window**: a sample older than `sample_retention` before the
//!   newest heartbeat of a batch is deleted. Pruning walks the `at` index from
//!   its old end and removes at most `2 × batch + 64` rows per batch, so it
//!   never scans the table and still outpaces ingest; [`SampleStore::prune`]
//!   lets a background task catch up after a long pause.
//! - **Per node**: a node's sample is kept only when it is at least
//!   `ceil(retention / (samples_per_node − 1))` after that node's previous
//!   kept sample (1.8 s for 1 h and 2,000). `k` gaps of that spacing span more
//!   than the window once `k ≥ samples_per_node`, so no node ever has more than
//!   `samples_per_node` samples inside the window, however fast its agent
//!   heartbeats; a heartbeat that falls inside the spacing still updates the
//!   node's latest metrics. At the default 2 s heartbeat interval every
//!   heartbeat is sampled.
//!
//! Samples of a deleted node are not returned (they join `nodes`) and age out
//! with the window; node keys are never reused, so they cannot be attributed to
//! a later node.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, LazyLock};

use crate::db::{Dialect, Tx, Value, params, typed_values_rows};
use neutral_core::autoscale::NodeSample;
use neutral_core::model::{MetricSample, Metrics};

use crate::changes::{self, STAMP};
use crate::error::{During, Result};
use crate::store::Store;
use neutral_core::model::Timestamp;

/// One heartbeat as the node API accepted it (`at`: when it was received).
#[derive(Clone, Debug, PartialEq)]
pub struct Heartbeat {
    pub node_id: String,
    pub at: Timestamp,
    pub metrics: Option<Metrics>,
}

/// What [`SampleStore::record_heartbeats`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeartbeatOutcome {
    /// Heartbeats of known nodes (their `last_heartbeat` was updated).
    pub applied: usize,
    /// Samples appended.
    pub sampled: usize,
    /// Old samples deleted.
    pub pruned: usize,
    /// Node ids that are not registered (e.g. deleted meanwhile), in batch
    /// order.
    pub unknown: Vec<String>,
}

/// The metric sample view of a [`Store`].
#[derive(Clone, Copy, Debug)]
pub struct SampleStore<'a> {
    pub(crate) store: &'a Store,
}

impl SampleStore<'_> {
    /// Records a batch of heartbeats in one transaction: each updates its
    /// node's `last_heartbeat` (never moving it backwards) and, when it
    /// carries metrics and is not older than the stored ones, the node's latest
    /// metrics, and appends a sample (subject to the per-node spacing). Then
    /// prunes samples that left the retention window.
    pub fn record_heartbeats(&self, batch: &[Heartbeat]) -> Result<HeartbeatOutcome> {
        const OP: &str = "record heartbeats";
        if batch.is_empty() {
            return Ok(HeartbeatOutcome::default());
        }
        let spacing = self.spacing_ms();
        let retention = retention_ms(self.store);
        let newest = batch.iter().map(|h| h.at.0).max().unwrap_or(i64::MIN);
        let budget = batch.len().saturating_mul(2).saturating_add(64);
        self.store.write(OP, |tx| {
            changes::bump(tx, OP)?;
            let mut outcome = match tx.dialect() {
                Dialect::Sqlite => one_by_one(tx, batch, spacing)?,
                Dialect::Postgres => in_rounds(tx, batch, spacing)?,
            };
            outcome.pruned = prune_in(tx, newest.saturating_sub(retention), budget)?;
            crate::store::fault_point(
                self.store.options.pause_inside_heartbeats.as_deref(),
                "pause_inside_heartbeats",
            )?;
            Ok(outcome)
        })
    }

    /// The smallest gap between two kept samples of one node, in
    /// milliseconds (see the module documentation): what a copy of the
    /// samples kept elsewhere must apply to hold what the store holds.
    pub fn spacing_ms(&self) -> i64 {
        min_sample_spacing_ms(
            self.store.options.sample_retention.as_millis(),
            self.store.options.samples_per_node,
        )
    }

    /// Samples taken at or after `since`, of registered nodes, oldest first.
    /// A metric that was not a number comes back as NaN (the core ignores
    /// it).
    pub fn samples_since(&self, since: Timestamp) -> Result<Vec<NodeSample>> {
        self.samples_of(since, None)
    }

    /// [`SampleStore::samples_since`] of the nodes of `regions` only (all
    /// nodes with `None`): what the autoscaler reads for the regions that
    /// have a policy, so the others' samples never reach memory.
    pub fn samples_of(
        &self,
        since: Timestamp,
        regions: Option<&BTreeSet<String>>,
    ) -> Result<Vec<NodeSample>> {
        Ok(self
            .regional_samples_of(since, regions)?
            .into_iter()
            .map(|(_, sample)| sample)
            .collect())
    }

    /// [`SampleStore::samples_of`], each sample with its node's region (one
    /// shared name per region).
    pub fn regional_samples_of(
        &self,
        since: Timestamp,
        regions: Option<&BTreeSet<String>>,
    ) -> Result<Vec<(Arc<str>, NodeSample)>> {
        const OP: &str = "read samples";
        if regions.is_some_and(BTreeSet::is_empty) {
            return Ok(Vec::new());
        }
        self.store.read(OP, |tx| {
            let ids = node_ids(tx, regions)?;
            // Samples are appended in time order, so those in the window are
            // (nearly) a suffix of the table: find its first row through the
            // `at` index, then read on sequentially instead of looking every
            // row up by rowid. Rows of that suffix that are older (a late
            // heartbeat batch) are filtered out; the sort puts a late batch
            // in place.
            let first: Option<i64> = tx
                .prepare_cached("SELECT min(rowid) FROM samples WHERE at >= ?1")
                .during(OP)?
                .query_row(params![since.0], |row| row.get(0))
                .during(OP)?;
            let Some(first) = first else {
                return Ok(Vec::new());
            };
            let rows = tx
                .query_map(
                    "SELECT node_key, at, cpu, rtt_ms, error_rate FROM samples
                     WHERE rowid >= ?1 AND at >= ?2 ORDER BY rowid",
                    params![first, since.0],
                    |row| {
                        let metric = |i: usize| -> crate::db::DbResult<f64> {
                            Ok(row.get::<_, Option<f64>>(i)?.unwrap_or(f64::NAN))
                        };
                        Ok((
                            row.get::<_, i64>(0)?,
                            MetricSample {
                                at: Timestamp(row.get(1)?),
                                metrics: Metrics {
                                    cpu: metric(2)?,
                                    rtt_ms: metric(3)?,
                                    error_rate: metric(4)?,
                                },
                            },
                        ))
                    },
                )
                .during(OP)?;
            let mut out = Vec::new();
            for row in rows {
                let (key, sample) = row.during(OP)?;
                // Samples of deleted nodes are skipped.
                let Some((node_id, region)) = ids.get(&key) else {
                    continue;
                };
                out.push((
                    Arc::clone(region),
                    NodeSample {
                        node_id: Arc::clone(node_id),
                        sample,
                    },
                ));
            }
            // Stable and adaptive: nearly free on an already sorted run.
            out.sort_by_key(|(_, s)| s.sample.at);
            Ok(out)
        })
    }

    /// Deletes at most `max_rows` samples older than the retention window
    /// before `now`; returns how many. For a background task after a pause in
    /// heartbeats; [`SampleStore::record_heartbeats`] prunes as it goes.
    pub fn prune(&self, now: Timestamp, max_rows: usize) -> Result<usize> {
        let cutoff = now.0.saturating_sub(retention_ms(self.store));
        self.store
            .write("prune samples", |tx| prune_in(tx, cutoff, max_rows))
    }

    /// How many samples are stored (deleted nodes' included until pruned).
    pub fn count(&self) -> Result<u64> {
        const OP: &str = "count samples";
        self.store.read(OP, |tx| {
            let count: i64 = tx
                .query_row("SELECT count(*) FROM samples", params![], |row| row.get(0))
                .during(OP)?;
            Ok(u64::try_from(count).unwrap_or(0))
        })
    }
}

/// Records `batch` a heartbeat at a time: two statements each (for SQLite,
/// where a statement is a function call, not a round trip).
fn one_by_one(tx: &Tx<'_>, batch: &[Heartbeat], spacing: i64) -> Result<HeartbeatOutcome> {
    const OP: &str = "record heartbeats";
    let mut outcome = HeartbeatOutcome::default();
    let mut insert = tx
        .prepare_cached(
            "INSERT INTO samples (node_key, at, cpu, rtt_ms, error_rate)
             SELECT key, CAST(?2 AS BIGINT), CAST(?3 AS DOUBLE PRECISION),
                    CAST(?4 AS DOUBLE PRECISION), CAST(?5 AS DOUBLE PRECISION)
             FROM nodes
             WHERE id = ?1 AND (last_sample_at IS NULL OR ?2 - last_sample_at >= ?6)",
        )
        .during(OP)?;
    let mut update = tx
        .prepare_cached(&format!(
            "UPDATE nodes SET
           last_heartbeat = max(coalesce(last_heartbeat, ?2), ?2),
           cpu = CASE WHEN ?3 AND ?2 >= coalesce(metrics_at, ?2) THEN ?4 ELSE cpu END,
           rtt_ms = CASE WHEN ?3 AND ?2 >= coalesce(metrics_at, ?2) THEN ?5
                    ELSE rtt_ms END,
           error_rate = CASE WHEN ?3 AND ?2 >= coalesce(metrics_at, ?2) THEN ?6
                        ELSE error_rate END,
           metrics_at = CASE WHEN ?3 AND ?2 >= coalesce(metrics_at, ?2) THEN ?2
                        ELSE metrics_at END,
           last_sample_at = CASE WHEN ?7 THEN ?2 ELSE last_sample_at END,
           changed = {STAMP}
         WHERE id = ?1"
        ))
        .during(OP)?;
    for heartbeat in batch {
        let at = heartbeat.at.0;
        let sampled = match heartbeat.metrics {
            Some(m) => {
                insert
                    .execute(params![
                        heartbeat.node_id,
                        at,
                        m.cpu,
                        m.rtt_ms,
                        m.error_rate,
                        spacing
                    ])
                    .during(OP)?
                    > 0
            }
            None => false,
        };
        let metrics = heartbeat.metrics.unwrap_or_default();
        let updated = update
            .execute(params![
                heartbeat.node_id,
                at,
                heartbeat.metrics.is_some(),
                metrics.cpu,
                metrics.rtt_ms,
                metrics.error_rate,
                sampled
            ])
            .during(OP)?;
        if updated == 0 {
            outcome.unknown.push(heartbeat.node_id.clone());
        } else {
            outcome.applied = outcome.applied.saturating_add(1);
        }
        if sampled {
            outcome.sampled = outcome.sampled.saturating_add(1);
        }
    }
    Ok(outcome)
}

/// Rows of one set-based statement in [`in_rounds`]; a shorter chunk is
/// padded with rows of no node, so each statement is prepared once. At 128
/// rows, three replicas writing 5,000 heartbeats/s to one PostgreSQL on 2
/// cores (the ingest bench) ran writers 2.8–9.4 s behind; at 512
/// (3,584 parameters, far below PostgreSQL's 65,535), at most 1.1 s once
/// caught up.
pub(crate) const ROUND_CHUNK: usize = 512;

/// The two statements of [`in_rounds`], [`ROUND_CHUNK`] rows each, built
/// once: `(append samples, update nodes)`.
static ROUND_SQL: LazyLock<(String, String)> = LazyLock::new(|| {
    let rows = |types: &[&str], first: usize| typed_values_rows(types, first, ROUND_CHUNK);
    const FLOAT: &str = "DOUBLE PRECISION";
    let insert = format!(
        "WITH appended AS (
             INSERT INTO samples (node_key, at, cpu, rtt_ms, error_rate)
             SELECT n.key, b.at, b.cpu, b.rtt_ms, b.error_rate
             FROM (VALUES {}) AS b(id, at, cpu, rtt_ms, error_rate)
             JOIN nodes n ON n.id = b.id
             WHERE n.last_sample_at IS NULL OR b.at - n.last_sample_at >= CAST(?1 AS BIGINT)
             RETURNING node_key)
             SELECT n.id FROM appended JOIN nodes n ON n.key = appended.node_key",
        rows(&["TEXT", "BIGINT", FLOAT, FLOAT, FLOAT], 2)
    );
    let update = format!(
        "UPDATE nodes SET
               last_heartbeat = GREATEST(coalesce(nodes.last_heartbeat, b.at), b.at),
               cpu = CASE WHEN b.has AND b.at >= coalesce(nodes.metrics_at, b.at) THEN b.cpu
                     ELSE nodes.cpu END,
               rtt_ms = CASE WHEN b.has AND b.at >= coalesce(nodes.metrics_at, b.at) THEN b.rtt_ms
                        ELSE nodes.rtt_ms END,
               error_rate = CASE WHEN b.has AND b.at >= coalesce(nodes.metrics_at, b.at)
                            THEN b.error_rate ELSE nodes.error_rate END,
               metrics_at = CASE WHEN b.has AND b.at >= coalesce(nodes.metrics_at, b.at) THEN b.at
                            ELSE nodes.metrics_at END,
               last_sample_at = CASE WHEN b.sampled THEN b.at ELSE nodes.last_sample_at END,
               changed = {STAMP}
             FROM (VALUES {}) AS b(id, at, has, cpu, rtt_ms, error_rate, sampled)
             WHERE nodes.id = b.id
             RETURNING nodes.id",
        rows(
            &["TEXT", "BIGINT", "BOOLEAN", FLOAT, FLOAT, FLOAT, "BOOLEAN"],
            1
        )
    );
    (insert, update)
});

/// Records `batch` in a few set-based statements (PostgreSQL, where every
/// statement is a round trip): the heartbeats are taken in rounds, the
/// first heartbeat of every node in the first round, its second in the
/// second, and so on, so a node's heartbeats apply in batch order, each
/// round in chunks of [`ROUND_CHUNK`] rows, two statements a chunk: the
/// samples appended (returning whose were), then the nodes updated
/// (returning which exist). Each row does what [`one_by_one`] does for it.
fn in_rounds(tx: &Tx<'_>, batch: &[Heartbeat], spacing: i64) -> Result<HeartbeatOutcome> {
    // Round of each heartbeat: how many of its node's came before it.
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let mut rounds: Vec<Vec<usize>> = Vec::new();
    for (index, heartbeat) in batch.iter().enumerate() {
        let round = seen.entry(heartbeat.node_id.as_str()).or_insert(0);
        if rounds.len() <= *round {
            rounds.push(Vec::new());
        }
        if let Some(members) = rounds.get_mut(*round) {
            members.push(index);
        }
        *round += 1;
    }
    let (insert_sql, update_sql) = &*ROUND_SQL;
    let mut outcome = HeartbeatOutcome::default();
    let mut unknown: Vec<usize> = Vec::new();
    for round in &rounds {
        for chunk in round.chunks(ROUND_CHUNK) {
            let beats: Vec<&Heartbeat> = chunk.iter().filter_map(|&i| batch.get(i)).collect();
            // Samples first, as one_by_one does: they read the spacing
            // before the update moves it.
            let mut values = vec![Value::Int(spacing)];
            for row in 0..ROUND_CHUNK {
                match beats.get(row).and_then(|h| Some((h, h.metrics?))) {
                    Some((heartbeat, m)) => values.extend([
                        Value::Text(heartbeat.node_id.clone()),
                        Value::Int(heartbeat.at.0),
                        Value::Real(m.cpu),
                        Value::Real(m.rtt_ms),
                        Value::Real(m.error_rate),
                    ]),
                    None => values.extend(std::iter::repeat_n(Value::Null, 5)),
                }
            }
            let sampled = returned_ids(tx, insert_sql, &values)?;
            let mut values = Vec::with_capacity(ROUND_CHUNK * 7);
            for row in 0..ROUND_CHUNK {
                match beats.get(row) {
                    Some(heartbeat) => {
                        let m = heartbeat.metrics.unwrap_or_default();
                        values.extend([
                            Value::Text(heartbeat.node_id.clone()),
                            Value::Int(heartbeat.at.0),
                            Value::Bool(heartbeat.metrics.is_some()),
                            Value::Real(m.cpu),
                            Value::Real(m.rtt_ms),
                            Value::Real(m.error_rate),
                            Value::Bool(sampled.contains(&heartbeat.node_id)),
                        ]);
                    }
                    None => values.extend(std::iter::repeat_n(Value::Null, 7)),
                }
            }
            let updated = returned_ids(tx, update_sql, &values)?;
            for (&index, heartbeat) in chunk.iter().zip(&beats) {
                if updated.contains(&heartbeat.node_id) {
                    outcome.applied = outcome.applied.saturating_add(1);
                } else {
                    unknown.push(index);
                }
            }
            outcome.sampled = outcome.sampled.saturating_add(sampled.len());
        }
    }
    unknown.sort_unstable();
    outcome.unknown = unknown
        .into_iter()
        .filter_map(|i| batch.get(i).map(|h| h.node_id.clone()))
        .collect();
    Ok(outcome)
}

/// The node ids a statement of [`in_rounds`] returns.
fn returned_ids(tx: &Tx<'_>, sql: &str, values: &[Value]) -> Result<HashSet<String>> {
    const OP: &str = "record heartbeats";
    let params: Vec<&dyn crate::db::Param> =
        values.iter().map(|v| v as &dyn crate::db::Param).collect();
    tx.query_map(sql, &params, |row| row.get::<_, String>(0))
        .during(OP)?
        .collect::<crate::db::DbResult<_>>()
        .during(OP)
}

/// A node's id and its region's shared name.
type IdAndRegion = (Arc<str>, Arc<str>);

/// The ids and regions of the nodes (of `regions`, or all) by their row
/// key, each region's name shared.
fn node_ids(
    conn: &Tx<'_>,
    regions: Option<&BTreeSet<String>>,
) -> Result<HashMap<i64, IdAndRegion>> {
    const OP: &str = "read samples";
    let mut stmt = conn
        .prepare_cached("SELECT key, id, region FROM nodes")
        .during(OP)?;
    let rows = stmt
        .query_map(params![], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
            ))
        })
        .during(OP)?;
    let mut ids = HashMap::new();
    let mut names: HashMap<String, Arc<str>> = HashMap::new();
    for row in rows {
        let (key, id, region) = row.during(OP)?;
        if regions.is_none_or(|wanted| wanted.contains(&region)) {
            let region = names
                .entry(region)
                .or_insert_with_key(|name| Arc::from(name.as_str()));
            ids.insert(key, (Arc::from(id), Arc::clone(region)));
        }
    }
    Ok(ids)
}

fn retention_ms(store: &Store) -> i64 {
    i64::try_from(store.options.sample_retention.as_millis()).unwrap_or(i64::MAX)
}

/// The smallest gap between two kept samples of one node such that no node
/// has more than `per_node` samples in a window of `retention_ms`:
/// `ceil(retention / (per_node − 1))`, at least 1 ms.
pub(crate) fn min_sample_spacing_ms(retention_ms: u128, per_node: u32) -> i64 {
    let gaps = u128::from(per_node.saturating_sub(1).max(1));
    i64::try_from(retention_ms.div_ceil(gaps))
        .unwrap_or(i64::MAX)
        .max(1)
}

/// Deletes at most `max_rows` samples older than `cutoff`, oldest first,
/// through the `at` index.
fn prune_in(conn: &Tx<'_>, cutoff: i64, max_rows: usize) -> Result<usize> {
    const OP: &str = "prune samples";
    conn.prepare_cached(
        "DELETE FROM samples WHERE rowid IN
           (SELECT rowid FROM samples WHERE at < ?1 ORDER BY at LIMIT ?2)",
    )
    .during(OP)?
    .execute(params![cutoff, i64::try_from(max_rows).unwrap_or(i64::MAX)])
    .during(OP)
}

impl Store {
    pub fn samples(&self) -> SampleStore<'_> {
        SampleStore { store: self }
    }
}

#[cfg(test)]
mod tests;
