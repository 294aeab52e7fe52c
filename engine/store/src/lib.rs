//! neutral's durable state: one SQLite file under the daemon's `--data`
//! directory, opened in WAL mode with `synchronous=NORMAL`, foreign keys on,
//! a busy timeout, and versioned migrations ([`schema`]) — or, with
//! `--store postgres://…`, one PostgreSQL database ([`pg`]). The stores'
//! code is written once against the SQL facade in `db`, which runs it on
//! either backend.
//!
//! The stores and what each owns:
//! - declarations of the last good commit ([`RegionStore`], [`GtmPolicyStore`],
//!   [`AutoscalePolicyStore`], [`NodePoolStore`]) and the GitOps sync state
//!   ([`SyncStatus`]), written together by [`Store::apply_declarations`];
//! - registered nodes, their status and token hashes ([`NodeStore`]);
//! - bounded metric samples ([`SampleStore`]);
//! - the append-only audit log ([`AuditLog`]);
//! - Terraform runs ([`RunStore`]);
//! - the autoscaler's last action per region ([`AutoscaleStateStore`]);
//! - the embedded DNS backend's zones as opaque JSON ([`ZoneStore`]);
//! - each replica's verdict on each node, and which replicas are live
//!   ([`VerdictStore`]).
//!
//! The stores persist and retrieve; they decide nothing. Which status a node
//! gets, whether a config is valid, when to scale: the daemon and the core
//! decide, the store records. No clock is read here: every time comes in as a
//! [`Timestamp`].
//!
//! The API is synchronous (call it from `spawn_blocking`). [`Store`] is
//! `Send + Sync`: writes go through one connection behind a mutex, reads
//! through a small pool of read-only connections (WAL lets them read while a
//! write is in progress), so a long read never delays heartbeat ingest. Each
//! public write is one `BEGIN IMMEDIATE` transaction, including its audit
//! entry; each multi-statement read is one read transaction, so it sees a
//! single committed state. WAL checkpoints are kept off the write path: the
//! daemon calls [`Store::checkpoint`] about once a second (SQLite's own
//! auto-checkpoint remains as a safety net at a large WAL size).

#![warn(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

mod audit;
mod autoscale_state;
mod changes;
mod db;
mod declarations;
mod docs;
mod error;
mod leases;
mod nodes;
pub mod pg;
#[doc(hidden)]
pub mod pg_testing;
mod pg_tls;
mod releases;
mod runs;
mod samples;
pub mod schema;
mod store;
mod verdicts;
mod zones;

pub use audit::{AuditEntry, AuditLog, AuditQuery, AuditRecord, MAX_AUDIT_PAGE, kinds};
pub use autoscale_state::AutoscaleStateStore;
pub use db::DbError;
pub use declarations::{
    AutoscalePolicyStore, CommitAt, DeclChanges, DeclStore, Declared, DeclaredObject,
    GtmPolicyStore, NodePoolStore, ObjectChanges, RegionStore, SyncApplied, SyncFailure,
    SyncStatus,
};
pub use docs::DocStore;
pub use error::{Result, StoreError};
pub use leases::{LEADER, Lease, LeaseHolder, LeaseStore};
pub use neutral_core::model::Timestamp;
pub use nodes::{
    NewNode, NodeChanges, NodeRecord, NodeStore, StatusUpdate, StatusUpdates, TokenHash,
};
pub use releases::{ReleaseStore, StoredRelease};
pub use runs::{NewRun, Run, RunOutcome, RunQuery, RunStatus, RunStore, RunSummary};
pub use samples::{Heartbeat, HeartbeatOutcome, SampleStore};
pub use store::{
    Backend, Checkpoint, DB_FILE_NAME, DIR_MODE, DataDirSecurity, FILE_MODE, Store, StoreLocation,
    StoreOptions, secure_data_dir, set_mode,
};
pub use verdicts::{StoredVerdict, VerdictChange, VerdictChanges, VerdictStore};
pub use zones::{StoredZone, ZoneBase, ZoneStore};

#[cfg(test)]
mod tests;
