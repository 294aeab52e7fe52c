//! Registered nodes: identity, region, address, status, token hash, latest
//! heartbeat and metrics.
//!
//! This module owns the `nodes` table. A node's id and token hash are on disk,
//! so a node keeps its identity across daemon restarts. Only a SHA-256 hash of
//! a node token is stored ([`TokenHash`]), never the token. Status changes,
//! registrations and deletions append their audit entry in the same
//! transaction. Which status a node should have is the health checker's
//! decision, not this module's; heartbeats are written by
//! [`crate::SampleStore::record_heartbeats`].

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use crate::db::{OptionalExtension, Param, Row, Tx, params};
use neutral_core::model::{Metrics, Node, NodeMode, NodeStatus};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::audit::{AuditEntry, append_in, kinds};
use crate::changes::{self, STAMP};
use crate::error::{During, Result, StoreError};
use crate::store::Store;
use neutral_core::model::Timestamp;

/// SHA-256 of a node token. Equality is constant-time.
#[derive(Clone, Copy)]
pub struct TokenHash([u8; 32]);

impl TokenHash {
    /// The hash of `token` as presented by an agent.
    pub fn of(token: &str) -> TokenHash {
        TokenHash(Sha256::digest(token.as_bytes()).into())
    }

    pub fn from_bytes(bytes: [u8; 32]) -> TokenHash {
        TokenHash(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Whether `token` hashes to this hash, compared in constant time.
    pub fn matches(&self, token: &str) -> bool {
        *self == TokenHash::of(token)
    }
}

impl PartialEq for TokenHash {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl Eq for TokenHash {}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Enough to tell hashes apart in a log, not the whole value.
        let prefix: String = self.0.iter().take(4).map(|b| format!("{b:02x}")).collect();
        write!(f, "TokenHash({prefix}…)")
    }
}

/// A registration as the node API accepted it.
#[derive(Clone, Debug, PartialEq)]
pub struct NewNode {
    pub id: String,
    pub region: String,
    pub address: IpAddr,
    pub mode: NodeMode,
    pub hostname: Option<String>,
    pub agent_version: Option<String>,
    pub token_hash: TokenHash,
    /// The status the daemon gives the node on (re-)registration.
    pub status: NodeStatus,
    pub at: Timestamp,
}

/// A stored node: the core's [`Node`] plus what only the control plane keeps.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeRecord {
    #[serde(flatten)]
    pub node: Node,
    /// Why the status last changed.
    pub status_reason: String,
    /// The latest (re-)registration.
    pub registered_at: Timestamp,
    /// When `node.metrics` was reported.
    pub metrics_at: Option<Timestamp>,
    pub hostname: Option<String>,
    pub agent_version: Option<String>,
}

/// One status change for [`NodeStore::set_statuses`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusUpdate {
    pub id: String,
    pub status: NodeStatus,
    pub at: Timestamp,
    pub reason: String,
}

/// What [`NodeStore::set_statuses`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StatusUpdates {
    /// Ids whose status changed (each with an audit entry).
    pub changed: Vec<String>,
    /// Ids that already had the requested status.
    pub unchanged: Vec<String>,
    /// Ids of no stored node (e.g. deleted meanwhile).
    pub unknown: Vec<String>,
}

/// What [`NodeStore::changes_since`] read: the nodes written and deleted
/// since an earlier read, and where the next read starts.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeChanges {
    /// Pass to the next [`NodeStore::changes_since`].
    pub through: i64,
    /// Every stored node was read (a first read, or one after the
    /// tombstones it needed were pruned): a node not in `nodes` is deleted.
    pub complete: bool,
    /// The nodes written since (all of them when `complete`), with their
    /// token hashes, by id.
    pub nodes: Vec<(NodeRecord, TokenHash)>,
    /// The ids deleted since and not registered again (empty when
    /// `complete`).
    pub deleted: Vec<String>,
}

/// The node view of a [`Store`].
#[derive(Clone, Copy, Debug)]
pub struct NodeStore<'a> {
    pub(crate) store: &'a Store,
}

const NODE_COLUMNS: &str = "id, region, address, mode, status, status_since, status_reason, \
     registered_at, last_heartbeat, metrics_at, cpu, rtt_ms, error_rate, hostname, agent_version";

impl NodeStore<'_> {
    /// Registers a new node, or re-registers an existing id. An existing id is
    /// accepted only for the same region and address
    /// ([`StoreError::NodeIdTaken`] otherwise); re-registration replaces the
    /// token hash, mode, hostname, agent version and registration time and
    /// sets the given status. Appends `node.registered` (and `node.status`
    /// when a re-registration changes the status).
    pub fn register(&self, node: &NewNode, actor: &str) -> Result<NodeRecord> {
        const OP: &str = "register node";
        let address = node.address.to_string();
        self.store.write(OP, |tx| {
            let existing: Option<(String, String, String)> = tx
                .query_row(
                    "SELECT region, address, status FROM nodes WHERE id = ?1",
                    params![&node.id],
                    |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
                )
                .optional()
                .during(OP)?;
            let message = match &existing {
                None => {
                    changes::bump(tx, OP)?;
                    tx.prepare_cached(&format!(
                        "INSERT INTO nodes (id, region, address, mode, status, status_since,
                         status_reason, token_hash, registered_at, hostname, agent_version,
                         changed)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'registered', ?7, ?6, ?8, ?9, {STAMP})"
                    ))
                    .during(OP)?
                    .execute(params![
                        node.id,
                        node.region,
                        address,
                        mode_str(node.mode),
                        node.status.as_str(),
                        node.at.0,
                        node.token_hash.as_bytes().as_slice(),
                        node.hostname,
                        node.agent_version
                    ])
                    .during(OP)?;
                    format!(
                        "registered node {} in region {} at {address}",
                        node.id, node.region
                    )
                }
                Some((region, stored_address, _)) => {
                    if *region != node.region || *stored_address != address {
                        return Err(StoreError::NodeIdTaken {
                            id: node.id.clone(),
                            region: region.clone(),
                            address: stored_address.clone(),
                        });
                    }
                    changes::bump(tx, OP)?;
                    tx.prepare_cached(&format!(
                        "UPDATE nodes SET mode = ?2, token_hash = ?3, registered_at = ?4,
                         hostname = ?5, agent_version = ?6,
                         status_since = CASE WHEN status = ?7 THEN status_since ELSE ?4 END,
                         status_reason = CASE WHEN status = ?7 THEN status_reason
                                              ELSE 're-registered' END,
                         status = ?7, changed = {STAMP}
                         WHERE id = ?1"
                    ))
                    .during(OP)?
                    .execute(params![
                        node.id,
                        mode_str(node.mode),
                        node.token_hash.as_bytes().as_slice(),
                        node.at.0,
                        node.hostname,
                        node.agent_version,
                        node.status.as_str()
                    ])
                    .during(OP)?;
                    format!(
                        "re-registered node {} in region {} at {address}",
                        node.id, node.region
                    )
                }
            };
            append_in(
                tx,
                &AuditEntry {
                    at: node.at,
                    actor: actor.to_owned(),
                    kind: kinds::NODE_REGISTERED.to_owned(),
                    subject: node.id.clone(),
                    message,
                    commit: None,
                    data: json!({
                        "region": node.region,
                        "address": address,
                        "mode": mode_str(node.mode),
                        "hostname": node.hostname,
                        "agent_version": node.agent_version,
                        "status": node.status.as_str(),
                    }),
                },
            )?;
            if let Some((_, _, previous)) = &existing
                && previous != node.status.as_str()
            {
                audit_status(
                    tx,
                    &node.id,
                    previous,
                    node.status,
                    node.at,
                    "re-registered",
                    actor,
                )?;
            }
            read_node(tx, &node.id)?.ok_or_else(|| StoreError::NodeNotFound {
                op: OP,
                id: node.id.clone(),
            })
        })
    }

    pub fn get(&self, id: &str) -> Result<Option<NodeRecord>> {
        self.store.read("get node", |tx| read_node(tx, id))
    }

    /// The node `id` if it is registered for this region and address: the
    /// agent may keep its identity. `None` means assign a new id.
    pub fn find_for_reregister(
        &self,
        id: &str,
        region: &str,
        address: IpAddr,
    ) -> Result<Option<NodeRecord>> {
        Ok(self
            .get(id)?
            .filter(|record| record.node.region == region && record.node.address == address))
    }

    /// Every node, by id.
    pub fn list(&self) -> Result<Vec<NodeRecord>> {
        self.store.read("list nodes", |tx| {
            read_nodes(
                tx,
                &format!("SELECT {NODE_COLUMNS} FROM nodes ORDER BY id"),
                params![],
            )
        })
    }

    /// The nodes written and deleted since the read that returned `since`
    /// as its [`NodeChanges::through`] (everything with `None`), in one
    /// snapshot: what a replica reads every half second instead of every
    /// node (`changes.rs` says why no change is missed).
    pub fn changes_since(&self, since: Option<i64>) -> Result<NodeChanges> {
        const OP: &str = "read changed nodes";
        self.store.read(OP, |tx| {
            let (through, pruned_through) = changes::current(tx, OP)?;
            let since = since.filter(|since| *since >= pruned_through);
            let from = since.unwrap_or(i64::MIN);
            let mut stmt = tx
                .prepare_cached(&format!(
                    "SELECT {NODE_COLUMNS}, token_hash FROM nodes WHERE changed > ?1 ORDER BY id"
                ))
                .during(OP)?;
            let rows = stmt
                .query_map(params![from], |row| {
                    Ok((RawNode::from_row(row)?, row.get::<_, Vec<u8>>(15)?))
                })
                .during(OP)?;
            let mut nodes = Vec::new();
            for row in rows {
                let (raw, token) = row.during(OP)?;
                let token = token_of(OP, &raw.id, &token)?;
                nodes.push((raw.into_record()?, token));
            }
            let deleted = match since {
                None => Vec::new(),
                Some(since) => tx
                    .query_map(
                        "SELECT DISTINCT d.node_id FROM node_deletions d
                         WHERE d.changed > ?1
                           AND NOT EXISTS (SELECT 1 FROM nodes n WHERE n.id = d.node_id)
                         ORDER BY d.node_id",
                        params![since],
                        |row| row.get(0),
                    )
                    .and_then(Iterator::collect)
                    .during(OP)?,
            };
            Ok(NodeChanges {
                through,
                complete: since.is_none(),
                nodes,
                deleted,
            })
        })
    }

    /// The nodes of one region, by id.
    pub fn list_region(&self, region: &str) -> Result<Vec<NodeRecord>> {
        self.store.read("list nodes", |tx| {
            read_nodes(
                tx,
                &format!("SELECT {NODE_COLUMNS} FROM nodes WHERE region = ?1 ORDER BY id"),
                params![region],
            )
        })
    }

    /// Sets a node's status. Returns whether it changed; an unchanged status
    /// writes nothing. A change appends `node.status` with the reason.
    pub fn set_status(
        &self,
        id: &str,
        status: NodeStatus,
        at: Timestamp,
        reason: &str,
        actor: &str,
    ) -> Result<bool> {
        const OP: &str = "set node status";
        self.store.write(OP, |tx| {
            change_status(tx, id, status, at, reason, actor)?.ok_or_else(|| {
                StoreError::NodeNotFound {
                    op: OP,
                    id: id.to_owned(),
                }
            })
        })
    }

    /// Applies many status changes in one transaction (e.g. a heartbeat
    /// timeout sweep). Unknown ids are reported, not errors.
    pub fn set_statuses(&self, updates: &[StatusUpdate], actor: &str) -> Result<StatusUpdates> {
        self.store.write("set node statuses", |tx| {
            let mut outcome = StatusUpdates::default();
            for update in updates {
                let list = match change_status(
                    tx,
                    &update.id,
                    update.status,
                    update.at,
                    &update.reason,
                    actor,
                )? {
                    Some(true) => &mut outcome.changed,
                    Some(false) => &mut outcome.unchanged,
                    None => &mut outcome.unknown,
                };
                list.push(update.id.clone());
            }
            Ok(outcome)
        })
    }

    /// Removes a node; returns whether it existed. Its samples are no longer
    /// returned and age out with the retention window. Appends
    /// `node.deleted`.
    pub fn delete(&self, id: &str, at: Timestamp, actor: &str) -> Result<bool> {
        self.delete_because(id, at, actor, None)
    }

    /// [`NodeStore::delete`], with why (added to the audit entry's message
    /// and data), e.g. "registered and never heartbeated".
    pub fn delete_because(
        &self,
        id: &str,
        at: Timestamp,
        actor: &str,
        reason: Option<&str>,
    ) -> Result<bool> {
        const OP: &str = "delete node";
        self.store.write(OP, |tx| {
            let gone: Option<(String, String)> = tx
                .query_row(
                    "DELETE FROM nodes WHERE id = ?1 RETURNING region, address",
                    params![id],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .optional()
                .during(OP)?;
            let Some((region, address)) = gone else {
                return Ok(false);
            };
            changes::record_deletion(tx, OP, id, at.0)?;
            append_in(
                tx,
                &AuditEntry {
                    at,
                    actor: actor.to_owned(),
                    kind: kinds::NODE_DELETED.to_owned(),
                    subject: id.to_owned(),
                    message: match reason {
                        Some(reason) => {
                            format!("deleted node {id} of region {region} at {address}: {reason}")
                        }
                        None => format!("deleted node {id} of region {region} at {address}"),
                    },
                    commit: None,
                    data: json!({ "region": region, "address": address, "reason": reason }),
                },
            )?;
            Ok(true)
        })
    }

    /// The stored token hash of node `id`.
    pub fn token_hash(&self, id: &str) -> Result<Option<TokenHash>> {
        const OP: &str = "read node token hash";
        self.store.read(OP, |tx| {
            let bytes: Option<Vec<u8>> = tx
                .prepare_cached("SELECT token_hash FROM nodes WHERE id = ?1")
                .during(OP)?
                .query_row(params![id], |row| row.get(0))
                .optional()
                .during(OP)?;
            bytes.map(|bytes| token_of(OP, id, &bytes)).transpose()
        })
    }

    /// Every node's token hash, by node id, in one read (a start, or a
    /// replica learning of nodes registered elsewhere).
    pub fn token_hashes(&self) -> Result<BTreeMap<String, TokenHash>> {
        const OP: &str = "read node token hashes";
        self.store.read(OP, |tx| {
            let rows: Vec<(String, Vec<u8>)> = tx
                .query_map("SELECT id, token_hash FROM nodes", params![], |row| {
                    Ok((row.get(0)?, row.get(1)?))
                })
                .and_then(Iterator::collect)
                .during(OP)?;
            rows.into_iter()
                .map(|(id, bytes)| {
                    let token = token_of(OP, &id, &bytes)?;
                    Ok((id, token))
                })
                .collect()
        })
    }
}

/// A stored token hash, which must be 32 bytes.
fn token_of(op: &'static str, id: &str, bytes: &[u8]) -> Result<TokenHash> {
    <[u8; 32]>::try_from(bytes)
        .map(TokenHash)
        .map_err(|_| StoreError::Corrupt {
            op,
            what: format!("token hash of node `{id}`"),
            value: format!("{} bytes", bytes.len()),
        })
}

/// Changes one node's status inside a transaction: `None` when there is no
/// such node, `Some(changed)` otherwise.
fn change_status(
    conn: &Tx<'_>,
    id: &str,
    status: NodeStatus,
    at: Timestamp,
    reason: &str,
    actor: &str,
) -> Result<Option<bool>> {
    const OP: &str = "set node status";
    let previous: Option<String> = conn
        .prepare_cached("SELECT status FROM nodes WHERE id = ?1")
        .during(OP)?
        .query_row(params![id], |row| row.get(0))
        .optional()
        .during(OP)?;
    let Some(previous) = previous else {
        return Ok(None);
    };
    if previous == status.as_str() {
        return Ok(Some(false));
    }
    changes::bump(conn, OP)?;
    conn.prepare_cached(&format!(
        "UPDATE nodes SET status = ?2, status_since = ?3, status_reason = ?4, changed = {STAMP}
         WHERE id = ?1"
    ))
    .during(OP)?
    .execute(params![id, status.as_str(), at.0, reason])
    .during(OP)?;
    audit_status(conn, id, &previous, status, at, reason, actor)?;
    Ok(Some(true))
}

fn audit_status(
    conn: &Tx<'_>,
    id: &str,
    previous: &str,
    status: NodeStatus,
    at: Timestamp,
    reason: &str,
    actor: &str,
) -> Result<i64> {
    append_in(
        conn,
        &AuditEntry {
            at,
            actor: actor.to_owned(),
            kind: kinds::NODE_STATUS.to_owned(),
            subject: id.to_owned(),
            message: format!("node {id} {previous} -> {}: {reason}", status.as_str()),
            commit: None,
            data: json!({ "from": previous, "to": status.as_str(), "reason": reason }),
        },
    )
}

fn read_node(conn: &Tx<'_>, id: &str) -> Result<Option<NodeRecord>> {
    Ok(read_nodes(
        conn,
        &format!("SELECT {NODE_COLUMNS} FROM nodes WHERE id = ?1"),
        params![id],
    )?
    .into_iter()
    .next())
}

fn read_nodes(conn: &Tx<'_>, sql: &str, params: &[&dyn Param]) -> Result<Vec<NodeRecord>> {
    const OP: &str = "read nodes";
    let mut stmt = conn.prepare_cached(sql).during(OP)?;
    let rows = stmt.query_map(params, RawNode::from_row).during(OP)?;
    let mut out = Vec::new();
    for row in rows {
        out.push(row.during(OP)?.into_record()?);
    }
    Ok(out)
}

/// A `nodes` row as SQLite returns it, before the text columns are parsed.
struct RawNode {
    id: String,
    region: String,
    address: String,
    mode: String,
    status: String,
    status_since: i64,
    status_reason: String,
    registered_at: i64,
    last_heartbeat: Option<i64>,
    metrics_at: Option<i64>,
    cpu: Option<f64>,
    rtt_ms: Option<f64>,
    error_rate: Option<f64>,
    hostname: Option<String>,
    agent_version: Option<String>,
}

impl RawNode {
    fn from_row(row: &Row<'_>) -> crate::db::DbResult<RawNode> {
        Ok(RawNode {
            id: row.get(0)?,
            region: row.get(1)?,
            address: row.get(2)?,
            mode: row.get(3)?,
            status: row.get(4)?,
            status_since: row.get(5)?,
            status_reason: row.get(6)?,
            registered_at: row.get(7)?,
            last_heartbeat: row.get(8)?,
            metrics_at: row.get(9)?,
            cpu: row.get(10)?,
            rtt_ms: row.get(11)?,
            error_rate: row.get(12)?,
            hostname: row.get(13)?,
            agent_version: row.get(14)?,
        })
    }

    fn into_record(self) -> Result<NodeRecord> {
        const OP: &str = "read nodes";
        let corrupt = |what: &str, value: &str| StoreError::Corrupt {
            op: OP,
            what: format!("{what} of node `{}`", self.id),
            value: value.to_owned(),
        };
        let address = self
            .address
            .parse::<IpAddr>()
            .map_err(|_| corrupt("address", &self.address))?;
        let mode = parse_mode(&self.mode).ok_or_else(|| corrupt("mode", &self.mode))?;
        let status = parse_status(&self.status).ok_or_else(|| corrupt("status", &self.status))?;
        // A metric that was not a number is stored as NULL; give it back as
        // NaN, which the core ignores.
        let metrics = self.metrics_at.map(|_| Metrics {
            cpu: self.cpu.unwrap_or(f64::NAN),
            rtt_ms: self.rtt_ms.unwrap_or(f64::NAN),
            error_rate: self.error_rate.unwrap_or(f64::NAN),
        });
        Ok(NodeRecord {
            node: Node {
                id: self.id,
                region: self.region,
                address,
                status,
                status_since: Timestamp(self.status_since),
                mode,
                last_heartbeat: self.last_heartbeat.map(Timestamp),
                metrics,
            },
            status_reason: self.status_reason,
            registered_at: Timestamp(self.registered_at),
            metrics_at: self.metrics_at.map(Timestamp),
            hostname: self.hostname,
            agent_version: self.agent_version,
        })
    }
}

pub(crate) fn mode_str(mode: NodeMode) -> &'static str {
    match mode {
        NodeMode::ContainerdOnly => "containerd-only",
        NodeMode::K3sWorker => "k3s-worker",
    }
}

fn parse_mode(text: &str) -> Option<NodeMode> {
    [NodeMode::ContainerdOnly, NodeMode::K3sWorker]
        .into_iter()
        .find(|mode| mode_str(*mode) == text)
}

fn parse_status(text: &str) -> Option<NodeStatus> {
    [NodeStatus::Up, NodeStatus::Down, NodeStatus::Drain]
        .into_iter()
        .find(|status| status.as_str() == text)
}

impl Store {
    pub fn nodes(&self) -> NodeStore<'_> {
        NodeStore { store: self }
    }
}

#[cfg(test)]
mod tests;
