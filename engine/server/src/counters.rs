//! The daemon's counters for `/metrics`: plain atomics any part bumps.
//! A leaf: it must not import any other module of the crate.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct Counters {
    pub heartbeats: AtomicU64,
    pub heartbeats_rejected: AtomicU64,
    pub registrations: AtomicU64,
    pub status_changes: AtomicU64,
    pub syncs_applied: AtomicU64,
    pub syncs_rejected: AtomicU64,
    pub sync_errors: AtomicU64,
    pub probes_ok: AtomicU64,
    pub probes_failed: AtomicU64,
    pub recomputes: AtomicU64,
    pub store_errors: AtomicU64,
}

impl Counters {
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}
