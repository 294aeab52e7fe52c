//! The agent streams open on this replica (docs/api.md, "Agent stream"):
//! at most one per node — a newer stream of a node ends the older one — and
//! at most `--max-node-streams` in all. Each stream's task is handed a
//! [`Nudge`] (rung when there is something to push to its node: a status
//! change, an order) and an end signal (rung when a newer stream replaced
//! it), and ends them all when the daemon stops.
//!
//! A leaf: it owns the registry and its cap only. It must not read the
//! world or handle messages; `api/stream.rs` does.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, watch};

/// One open stream's signals, shared with its task.
#[derive(Debug, Default)]
pub struct Signals {
    /// Something changed for the node: push its current state.
    pub nudge: Notify,
    /// A newer stream of the same node replaced this one: end it.
    pub replaced: Notify,
}

/// A stream the registry accepted.
#[derive(Debug)]
pub struct Opened {
    /// Tells this stream from the node's earlier and later ones.
    pub id: u64,
    pub signals: Arc<Signals>,
    /// Whether it replaced an open stream of the same node.
    pub replaced_one: bool,
    /// Turns true when the daemon stops.
    pub stop: watch::Receiver<bool>,
}

/// Why a stream was not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{open} agent streams are open, the limit (--max-node-streams)")]
pub struct Full {
    pub open: usize,
}

#[derive(Debug)]
struct Slot {
    id: u64,
    signals: Arc<Signals>,
}

#[derive(Debug, Default)]
struct Inner {
    by_node: HashMap<String, Slot>,
    next_id: u64,
}

/// The registry.
#[derive(Debug)]
pub struct NodeStreams {
    inner: Mutex<Inner>,
    cap: usize,
    stop: watch::Sender<bool>,
}

impl NodeStreams {
    pub fn new(cap: usize) -> NodeStreams {
        NodeStreams {
            inner: Mutex::default(),
            cap,
            stop: watch::Sender::new(false),
        }
    }

    /// Ends every open stream (at shutdown).
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Accepts a stream for `node`, ending the node's open one if any. A
    /// stream of a node without one is refused when the cap is reached.
    pub fn open(&self, node: &str) -> Result<Opened, Full> {
        let mut inner = self.lock();
        let replaced = inner.by_node.contains_key(node);
        if !replaced && inner.by_node.len() >= self.cap {
            return Err(Full {
                open: inner.by_node.len(),
            });
        }
        inner.next_id = inner.next_id.wrapping_add(1);
        let id = inner.next_id;
        let signals = Arc::new(Signals::default());
        let old = inner.by_node.insert(
            node.to_owned(),
            Slot {
                id,
                signals: Arc::clone(&signals),
            },
        );
        if let Some(old) = &old {
            // `notify_one` keeps a permit: the old task sees it even if it
            // is not waiting right now.
            old.signals.replaced.notify_one();
        }
        Ok(Opened {
            id,
            signals,
            replaced_one: old.is_some(),
            stop: self.stop.subscribe(),
        })
    }

    /// Forgets stream `id` of `node`; returns whether it was still the
    /// node's stream (not replaced).
    pub fn close(&self, node: &str, id: u64) -> bool {
        let mut inner = self.lock();
        if inner.by_node.get(node).is_some_and(|slot| slot.id == id) {
            inner.by_node.remove(node);
            true
        } else {
            false
        }
    }

    /// Asks `node`'s stream, if it has one here, to push its state now.
    pub fn nudge(&self, node: &str) {
        if let Some(slot) = self.lock().by_node.get(node) {
            slot.signals.nudge.notify_one();
        }
    }

    /// How many are open.
    pub fn open_count(&self) -> usize {
        self.lock().by_node.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_stream_per_node_the_newest_wins_and_the_cap_holds() {
        let streams = NodeStreams::new(2);
        let first = streams.open("a").unwrap();
        assert!(!first.replaced_one);
        let second = streams.open("a").unwrap();
        assert!(second.replaced_one);
        assert_eq!(streams.open_count(), 1);
        // The first was told to end, and closing it does not close the second.
        assert!(futures_util::FutureExt::now_or_never(first.signals.replaced.notified()).is_some());
        assert!(!streams.close("a", first.id));
        assert_eq!(streams.open_count(), 1, "the second is still open");
        streams.open("b").unwrap();
        assert_eq!(streams.open("c").unwrap_err(), Full { open: 2 });
        // A node that has a stream may still replace it at the cap.
        assert!(streams.open("b").is_ok());
        assert!(streams.close("a", second.id));
        assert!(streams.open("c").is_ok());
    }
}
