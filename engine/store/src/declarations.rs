//! Declarations of the last good commit and the GitOps sync state.
//!
//! This module owns the four declaration tables (regions, GTM policies,
//! autoscale policies, node pools), each object stored as a JSON document
//! tagged with the commit it was applied from, and the one-row `sync_state`
//! table (last good, last seen and last rejected commit).
//!
//! [`Store::apply_declarations`] replaces all four tables, the sync state and
//! an audit entry in ONE transaction: readers, a restarted daemon and a
//! daemon killed with `kill -9` mid-apply all see either the previous
//! declarations or the new ones, never a mix. It does not validate: the
//! caller hands in `Declarations` the core has accepted, or records the
//! rejection with [`Store::record_sync_failure`].

use std::collections::BTreeMap;
use std::marker::PhantomData;

use crate::db::{OptionalExtension, Tx, params};
use neutral_core::diag::Diagnostic;
use neutral_core::model::{AutoscalePolicy, Declarations, GtmPolicy, NodePoolDecl, Region};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::audit::{AuditEntry, append_in, kinds};
use crate::error::{During, Result, StoreError};
use crate::store::{Store, decode, encode, short_commit};
use neutral_core::model::Timestamp;

mod sealed {
    pub trait Sealed {}
    impl Sealed for neutral_core::model::Region {}
    impl Sealed for neutral_core::model::GtmPolicy {}
    impl Sealed for neutral_core::model::AutoscalePolicy {}
    impl Sealed for neutral_core::model::NodePoolDecl {}
}

/// A kind of declared object with its own table.
pub trait DeclaredObject: Serialize + DeserializeOwned + Send + sealed::Sealed {
    /// The table holding this kind.
    const TABLE: &'static str;
    /// How messages name one object of this kind.
    const WHAT: &'static str;
}

impl DeclaredObject for Region {
    const TABLE: &'static str = "regions";
    const WHAT: &'static str = "region";
}

impl DeclaredObject for GtmPolicy {
    const TABLE: &'static str = "gtm_policies";
    const WHAT: &'static str = "GTM policy";
}

impl DeclaredObject for AutoscalePolicy {
    const TABLE: &'static str = "autoscale_policies";
    const WHAT: &'static str = "autoscale policy";
}

impl DeclaredObject for NodePoolDecl {
    const TABLE: &'static str = "node_pools";
    const WHAT: &'static str = "node pool";
}

/// A stored declaration with its provenance.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Declared<T> {
    /// The key in [`Declarations`]: region name, domain, region, region.
    pub name: String,
    /// The commit applied (the same for every stored object).
    pub commit: String,
    /// The applied commit in which this object's content last changed.
    pub changed_in: String,
    pub value: T,
}

/// A typed view of one declaration table.
#[derive(Debug)]
pub struct DeclStore<'a, T> {
    store: &'a Store,
    kind: PhantomData<fn() -> T>,
}

impl<T> Clone for DeclStore<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for DeclStore<'_, T> {}

/// Regions (`platform-config/regions/*.yaml`), keyed by region name.
pub type RegionStore<'a> = DeclStore<'a, Region>;
/// GTM policies (`platform-config/gtm/*.yaml`), keyed by domain.
pub type GtmPolicyStore<'a> = DeclStore<'a, GtmPolicy>;
/// Autoscale policies (`platform-config/autoscale/*.yaml`), keyed by region.
pub type AutoscalePolicyStore<'a> = DeclStore<'a, AutoscalePolicy>;
/// Node pools (`infra/node-pool/*.tfvars`), keyed by region.
pub type NodePoolStore<'a> = DeclStore<'a, NodePoolDecl>;

impl<'a, T: DeclaredObject> DeclStore<'a, T> {
    pub(crate) fn new(store: &'a Store) -> Self {
        DeclStore {
            store,
            kind: PhantomData,
        }
    }

    /// Every object of the last good commit, by name.
    pub fn list(&self) -> Result<Vec<Declared<T>>> {
        self.store
            .read("list declarations", |tx| read_table::<T>(tx, None))
    }

    pub fn get(&self, name: &str) -> Result<Option<Declared<T>>> {
        self.store.read("get declaration", |tx| {
            Ok(read_table::<T>(tx, Some(name))?.into_iter().next())
        })
    }
}

fn read_table<T: DeclaredObject>(conn: &Tx<'_>, name: Option<&str>) -> Result<Vec<Declared<T>>> {
    const OP: &str = "read declarations";
    let sql = format!(
        "SELECT name, commit_sha, changed_in, doc FROM {} WHERE CAST(?1 AS TEXT) IS NULL OR name = ?1
         ORDER BY name",
        T::TABLE
    );
    let mut stmt = conn.prepare_cached(&sql).during(OP)?;
    let rows = stmt
        .query_map(params![name], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, String>(3)?,
            ))
        })
        .during(OP)?;
    let mut out = Vec::new();
    for row in rows {
        let (name, commit, changed_in, doc) = row.during(OP)?;
        let value = decode(OP, &format!("{} `{name}`", T::WHAT), &doc)?;
        out.push(Declared {
            name,
            commit,
            changed_in,
            value,
        });
    }
    Ok(out)
}

/// A commit and when the daemon handled it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitAt {
    pub commit: String,
    pub at: Timestamp,
}

/// The last commit that failed validation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncFailure {
    pub commit: String,
    pub at: Timestamp,
    pub diagnostics: Vec<Diagnostic>,
}

/// Where GitOps sync stands.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncStatus {
    /// The commit whose declarations are stored.
    pub last_good: Option<CommitAt>,
    /// The newest commit handled, good or not.
    pub last_seen: Option<CommitAt>,
    /// The last rejected commit; kept after later good commits as history.
    pub last_failure: Option<SyncFailure>,
}

impl SyncStatus {
    /// The failure still in force: the newest commit seen was rejected, so the
    /// stored declarations are older than the branch.
    pub fn failing(&self) -> Option<&SyncFailure> {
        let failure = self.last_failure.as_ref()?;
        let seen = self.last_seen.as_ref()?;
        (seen.commit == failure.commit && seen.at == failure.at).then_some(failure)
    }
}

/// Which objects of one kind an apply added, changed and removed (by name).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectChanges {
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
}

impl ObjectChanges {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.changed.is_empty() && self.removed.is_empty()
    }

    fn count(&self) -> usize {
        self.added
            .len()
            .saturating_add(self.changed.len())
            .saturating_add(self.removed.len())
    }
}

/// What an apply changed, per declaration kind.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeclChanges {
    pub regions: ObjectChanges,
    pub gtm: ObjectChanges,
    pub autoscale: ObjectChanges,
    pub node_pools: ObjectChanges,
}

impl DeclChanges {
    pub fn is_empty(&self) -> bool {
        self.regions.is_empty()
            && self.gtm.is_empty()
            && self.autoscale.is_empty()
            && self.node_pools.is_empty()
    }

    /// One line, e.g. `regions +us ~sg; gtm ~app.example.com`, or
    /// `no changes`.
    pub fn summary(&self) -> String {
        let parts: Vec<String> = [
            ("regions", &self.regions),
            ("gtm", &self.gtm),
            ("autoscale", &self.autoscale),
            ("node pools", &self.node_pools),
        ]
        .into_iter()
        .filter(|(_, changes)| !changes.is_empty())
        .map(|(label, changes)| {
            let names = changes
                .added
                .iter()
                .map(|n| format!("+{n}"))
                .chain(changes.changed.iter().map(|n| format!("~{n}")))
                .chain(changes.removed.iter().map(|n| format!("-{n}")))
                .collect::<Vec<_>>()
                .join(" ");
            format!("{label} {names}")
        })
        .collect();
        if parts.is_empty() {
            "no changes".to_owned()
        } else {
            parts.join("; ")
        }
    }

    fn count(&self) -> usize {
        [&self.regions, &self.gtm, &self.autoscale, &self.node_pools]
            .into_iter()
            .map(ObjectChanges::count)
            .fold(0, usize::saturating_add)
    }
}

/// The result of [`Store::apply_declarations`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncApplied {
    pub audit_id: i64,
    pub changes: DeclChanges,
}

/// Compares two sets of JSON documents by name.
pub(crate) fn diff_docs(
    old: &BTreeMap<String, String>,
    new: &BTreeMap<String, String>,
) -> ObjectChanges {
    let mut changes = ObjectChanges::default();
    for (name, doc) in new {
        match old.get(name) {
            None => changes.added.push(name.clone()),
            Some(previous) if previous != doc => changes.changed.push(name.clone()),
            Some(_) => {}
        }
    }
    changes.removed = old
        .keys()
        .filter(|name| !new.contains_key(*name))
        .cloned()
        .collect();
    changes
}

fn encode_all<T: DeclaredObject>(
    op: &'static str,
    objects: &BTreeMap<String, T>,
) -> Result<BTreeMap<String, String>> {
    objects
        .iter()
        .map(|(name, value)| {
            Ok((
                name.clone(),
                encode(op, &format!("{} `{name}`", T::WHAT), value)?,
            ))
        })
        .collect()
}

/// Replaces the table's rows with `docs`, all tagged with `commit`; keeps
/// `changed_in` of unchanged objects.
fn replace_table(
    conn: &Tx<'_>,
    op: &'static str,
    table: &str,
    commit: &str,
    docs: &BTreeMap<String, String>,
) -> Result<ObjectChanges> {
    let mut old_docs = BTreeMap::new();
    let mut changed_in = BTreeMap::new();
    {
        let mut stmt = conn
            .prepare_cached(&format!("SELECT name, doc, changed_in FROM {table}"))
            .during(op)?;
        let rows = stmt
            .query_map(params![], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                ))
            })
            .during(op)?;
        for row in rows {
            let (name, doc, changed) = row.during(op)?;
            changed_in.insert(name.clone(), changed);
            old_docs.insert(name, doc);
        }
    }
    let changes = diff_docs(&old_docs, docs);
    conn.execute(&format!("DELETE FROM {table}"), params![])
        .during(op)?;
    let mut insert = conn
        .prepare_cached(&format!(
            "INSERT INTO {table} (name, commit_sha, changed_in, doc) VALUES (?1, ?2, ?3, ?4)"
        ))
        .during(op)?;
    for (name, doc) in docs {
        let unchanged = old_docs.get(name) == Some(doc);
        let origin = match changed_in.get(name) {
            Some(previous) if unchanged => previous.as_str(),
            _ => commit,
        };
        insert
            .execute(params![name, commit, origin, doc])
            .during(op)?;
    }
    Ok(changes)
}

impl Store {
    /// Stores `declarations` (validated by the core) as those of `commit`:
    /// replaces the four declaration tables, marks `commit` last good and
    /// last seen, and appends a `sync.applied` audit entry naming the commit
    /// and what changed, all in one transaction.
    pub fn apply_declarations(
        &self,
        commit: &str,
        declarations: &Declarations,
        at: Timestamp,
        actor: &str,
    ) -> Result<SyncApplied> {
        const OP: &str = "apply declarations";
        let regions = encode_all(OP, &declarations.regions)?;
        let gtm = encode_all(OP, &declarations.gtm)?;
        let autoscale = encode_all(OP, &declarations.autoscale)?;
        let node_pools = encode_all(OP, &declarations.node_pools)?;
        self.write_fenced(OP, |tx| {
            let changes = DeclChanges {
                regions: replace_table(tx, OP, Region::TABLE, commit, &regions)?,
                gtm: replace_table(tx, OP, GtmPolicy::TABLE, commit, &gtm)?,
                autoscale: replace_table(tx, OP, AutoscalePolicy::TABLE, commit, &autoscale)?,
                node_pools: replace_table(tx, OP, NodePoolDecl::TABLE, commit, &node_pools)?,
            };
            tx.execute(
                "UPDATE sync_state SET good_commit = ?1, good_at = ?2, seen_commit = ?1,
                 seen_at = ?2 WHERE id = 1",
                params![commit, at.0],
            )
            .during(OP)?;
            let message = format!(
                "applied commit {}: {} regions, {} domains, {} autoscale policies, \
                 {} node pools; {}",
                short_commit(commit),
                regions.len(),
                gtm.len(),
                autoscale.len(),
                node_pools.len(),
                changes.summary()
            );
            let audit_id = append_in(
                tx,
                &AuditEntry {
                    at,
                    actor: actor.to_owned(),
                    kind: kinds::SYNC_APPLIED.to_owned(),
                    subject: commit.to_owned(),
                    message,
                    commit: Some(commit.to_owned()),
                    data: json!({ "changes": &changes, "changed_objects": changes.count() }),
                },
            )?;
            crate::store::fault_point(
                self.options.pause_inside_apply.as_deref(),
                "pause_inside_apply",
            )?;
            Ok(SyncApplied { audit_id, changes })
        })
    }

    /// The declarations of the last good commit, or `None` before the first
    /// successful sync.
    pub fn load_declarations(&self) -> Result<Option<(String, Declarations)>> {
        const OP: &str = "load declarations";
        self.read(OP, |tx| {
            let good: Option<String> = tx
                .query_row(
                    "SELECT good_commit FROM sync_state WHERE id = 1",
                    params![],
                    |row| row.get(0),
                )
                .optional()
                .during(OP)?
                .flatten();
            let Some(commit) = good else {
                return Ok(None);
            };
            let declarations = Declarations {
                regions: collect_checked(read_table::<Region>(tx, None)?, &commit)?,
                gtm: collect_checked(read_table::<GtmPolicy>(tx, None)?, &commit)?,
                autoscale: collect_checked(read_table::<AutoscalePolicy>(tx, None)?, &commit)?,
                node_pools: collect_checked(read_table::<NodePoolDecl>(tx, None)?, &commit)?,
            };
            Ok(Some((commit, declarations)))
        })
    }

    /// Records that `commit` failed validation: it becomes the last seen and
    /// last failed commit with its diagnostics; the stored declarations stay
    /// those of the last good commit. Appends a `sync.rejected` audit entry.
    /// Returns the audit entry's id.
    pub fn record_sync_failure(
        &self,
        commit: &str,
        diagnostics: &[Diagnostic],
        at: Timestamp,
        actor: &str,
    ) -> Result<i64> {
        const OP: &str = "record sync failure";
        let encoded = encode(OP, "diagnostics", diagnostics)?;
        let errors = diagnostics.iter().filter(|d| d.is_error()).count();
        let warnings = diagnostics.len().saturating_sub(errors);
        let first = diagnostics
            .iter()
            .find(|d| d.is_error())
            .or(diagnostics.first())
            .map(|d| format!("; first: {d}"))
            .unwrap_or_default();
        let message = format!(
            "rejected commit {}: {errors} errors, {warnings} warnings{first}",
            short_commit(commit)
        );
        self.write_fenced(OP, |tx| {
            tx.execute(
                "UPDATE sync_state SET seen_commit = ?1, seen_at = ?2, failed_commit = ?1,
                 failed_at = ?2, failed_diagnostics = ?3 WHERE id = 1",
                params![commit, at.0, encoded],
            )
            .during(OP)?;
            append_in(
                tx,
                &AuditEntry {
                    at,
                    actor: actor.to_owned(),
                    kind: kinds::SYNC_REJECTED.to_owned(),
                    subject: commit.to_owned(),
                    message,
                    commit: Some(commit.to_owned()),
                    data: json!({ "diagnostics": diagnostics }),
                },
            )
        })
    }

    pub fn sync_status(&self) -> Result<SyncStatus> {
        const OP: &str = "read sync status";
        self.read(OP, |tx| {
            let row = tx
                .query_row(
                    "SELECT good_commit, good_at, seen_commit, seen_at, failed_commit, failed_at,
                     failed_diagnostics FROM sync_state WHERE id = 1",
                    params![],
                    |row| {
                        Ok((
                            row.get::<_, Option<String>>(0)?,
                            row.get::<_, Option<i64>>(1)?,
                            row.get::<_, Option<String>>(2)?,
                            row.get::<_, Option<i64>>(3)?,
                            row.get::<_, Option<String>>(4)?,
                            row.get::<_, Option<i64>>(5)?,
                            row.get::<_, Option<String>>(6)?,
                        ))
                    },
                )
                .optional()
                .during(OP)?;
            let Some((good, good_at, seen, seen_at, failed, failed_at, diagnostics)) = row else {
                return Err(StoreError::Corrupt {
                    op: OP,
                    what: "sync_state".to_owned(),
                    value: "no row".to_owned(),
                });
            };
            let commit_at = |commit: Option<String>, at: Option<i64>| {
                commit.map(|commit| CommitAt {
                    commit,
                    at: Timestamp(at.unwrap_or(0)),
                })
            };
            let last_failure = match failed {
                Some(commit) => Some(SyncFailure {
                    diagnostics: decode(
                        OP,
                        &format!("diagnostics of commit {commit}"),
                        diagnostics.as_deref().unwrap_or("[]"),
                    )?,
                    commit,
                    at: Timestamp(failed_at.unwrap_or(0)),
                }),
                None => None,
            };
            Ok(SyncStatus {
                last_good: commit_at(good, good_at),
                last_seen: commit_at(seen, seen_at),
                last_failure,
            })
        })
    }
}

/// Turns stored rows into a map, checking that each came from `commit` (they
/// are all replaced together, so anything else means a damaged file).
fn collect_checked<T: DeclaredObject>(
    rows: Vec<Declared<T>>,
    commit: &str,
) -> Result<BTreeMap<String, T>> {
    rows.into_iter()
        .map(|row| {
            if row.commit == commit {
                Ok((row.name, row.value))
            } else {
                Err(StoreError::Corrupt {
                    op: "load declarations",
                    what: format!(
                        "commit of {} `{}` (last good is {commit})",
                        T::WHAT,
                        row.name
                    ),
                    value: row.commit,
                })
            }
        })
        .collect()
}

impl Store {
    pub fn regions(&self) -> RegionStore<'_> {
        DeclStore::new(self)
    }

    pub fn gtm_policies(&self) -> GtmPolicyStore<'_> {
        DeclStore::new(self)
    }

    pub fn autoscale_policies(&self) -> AutoscalePolicyStore<'_> {
        DeclStore::new(self)
    }

    pub fn node_pools(&self) -> NodePoolStore<'_> {
        DeclStore::new(self)
    }
}

#[cfg(test)]
mod tests;
