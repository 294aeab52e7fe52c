//! The `GET /events` streams' bookkeeping: how many are open, their cap,
//! and the stop signal that ends them at shutdown. A leaf: the handler
//! (`api::events`) uses it, `App` holds it; it imports no module of the crate.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

/// The event streams open now, their cap, and the stop signal that ends them.
#[derive(Debug)]
pub struct EventStreams {
    permits: Arc<Semaphore>,
    stop: watch::Sender<bool>,
}

impl Default for EventStreams {
    fn default() -> Self {
        EventStreams {
            permits: Arc::new(Semaphore::new(Self::MAX)),
            stop: watch::Sender::new(false),
        }
    }
}

impl EventStreams {
    /// Streams open at once, across all clients.
    pub const MAX: usize = 256;

    /// A slot for one more stream and the signal that ends it, unless
    /// [`Self::MAX`] are open.
    pub fn try_open(&self) -> Option<(OwnedSemaphorePermit, watch::Receiver<bool>)> {
        let permit = Arc::clone(&self.permits).try_acquire_owned().ok()?;
        Some((permit, self.stop.subscribe()))
    }

    /// Ends every open stream (at shutdown).
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }

    pub fn open(&self) -> usize {
        Self::MAX - self.permits.available_permits()
    }
}
