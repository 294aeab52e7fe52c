//! How far behind the heartbeat writer (`ingest.rs`) is, for the node API
//! to read (`api::nodes::accept_heartbeat`). A leaf: it holds one number
//! and imports nothing of the daemon's.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use neutral_core::model::Timestamp;

/// How far behind the heartbeat writer is: when the oldest heartbeat it
/// has taken and not yet committed was received. Other replicas learn of a
/// heartbeat only once it is stored, so this is how stale this replica's
/// heartbeats look to them.
#[derive(Debug, Default)]
pub struct Backlog {
    /// Milliseconds since the epoch; 0 while the writer holds nothing.
    oldest: AtomicI64,
}

impl Backlog {
    pub fn taken(&self, oldest: Timestamp) {
        self.oldest.store(oldest.0.max(1), Ordering::Relaxed);
    }

    /// The batch taken is committed. `queue_empty`: nothing waits behind
    /// it. Otherwise the oldest stays where it was (older than what waits,
    /// so [`Backlog::stored_through`] stays true) until the next batch is
    /// taken.
    pub fn committed(&self, queue_empty: bool) {
        if queue_empty {
            self.oldest.store(0, Ordering::Relaxed);
        }
    }

    /// Every heartbeat received before this moment is stored, at `now`:
    /// what this replica tells the others (`replicas.rs`), so they judge a
    /// node's silence only up to what they can have read.
    pub fn stored_through(&self, now: Timestamp) -> Timestamp {
        match self.oldest.load(Ordering::Relaxed) {
            0 => now,
            oldest => Timestamp(oldest.min(now.0)),
        }
    }

    /// How long the oldest unwritten heartbeat has waited at `now`.
    pub fn lag(&self, now: Timestamp) -> Duration {
        match self.oldest.load(Ordering::Relaxed) {
            0 => Duration::ZERO,
            oldest => {
                Duration::from_millis(u64::try_from(now.0.saturating_sub(oldest)).unwrap_or(0))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lag_is_the_age_of_the_oldest_heartbeat_taken_and_not_committed() {
        let backlog = Backlog::default();
        assert_eq!(backlog.lag(Timestamp(5_000)), Duration::ZERO);
        backlog.taken(Timestamp(1_000));
        assert_eq!(backlog.lag(Timestamp(3_500)), Duration::from_millis(2_500));
        assert_eq!(
            backlog.lag(Timestamp(500)),
            Duration::ZERO,
            "a clock step back"
        );
        backlog.committed(true);
        assert_eq!(backlog.lag(Timestamp(9_000)), Duration::ZERO);
    }

    #[test]
    fn the_stored_mark_never_passes_a_heartbeat_still_waiting() {
        let backlog = Backlog::default();
        assert_eq!(backlog.stored_through(Timestamp(5_000)), Timestamp(5_000));
        backlog.taken(Timestamp(1_000));
        assert_eq!(backlog.stored_through(Timestamp(5_000)), Timestamp(1_000));
        // Committed with more queued behind: the mark waits for the next
        // batch rather than jumping to now past the queue's head.
        backlog.committed(false);
        assert_eq!(backlog.stored_through(Timestamp(6_000)), Timestamp(1_000));
        backlog.taken(Timestamp(4_000));
        assert_eq!(backlog.stored_through(Timestamp(6_000)), Timestamp(4_000));
        backlog.committed(true);
        assert_eq!(backlog.stored_through(Timestamp(7_000)), Timestamp(7_000));
    }
}
