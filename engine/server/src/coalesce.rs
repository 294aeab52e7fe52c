//! Folding of repeated requests for an idempotent job (reconcile, recompute)
//! into as few runs as keep every caller's promise: when [`Coalescer::run`]
//! returns, a run of the job that *started after the call began* has
//! finished, so it saw every change the caller made before calling. Runs
//! never overlap, so a slower, older run can no longer publish its result
//! over a newer one.
//!
//! Without this, every registration ran its own full weight recompute and
//! every status-changing heartbeat spawned its own reconcile, each O(nodes):
//! with 10,000 nodes registering or coming up at once that is O(nodes²) work
//! on the async worker threads, and heartbeats waited hundreds of
//! milliseconds behind it.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Mutex;

#[derive(Debug, Default)]
pub struct Coalescer {
    /// Requests made so far.
    requested: AtomicU64,
    /// The number of requests the last finished run covered; held across a
    /// run so that runs do not overlap.
    covered: Mutex<u64>,
}

impl Coalescer {
    /// Runs `job` unless a run that began after this request has already
    /// finished; returns whether this call ran it.
    pub async fn run<F, Fut>(&self, job: F) -> bool
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = ()>,
    {
        let mine = self
            .requested
            .fetch_add(1, Ordering::SeqCst)
            .saturating_add(1);
        let mut covered = self.covered.lock().await;
        if *covered >= mine {
            return false;
        }
        // Every request made up to now is covered by the run about to start.
        let upto = self.requested.load(Ordering::SeqCst);
        job().await;
        *covered = upto;
        true
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;

    use tokio::sync::Notify;

    use super::*;

    #[tokio::test]
    async fn requests_made_during_a_run_fold_into_one_later_run() {
        let coalescer = Arc::new(Coalescer::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let release = Arc::new(Notify::new());
        let started = Arc::new(Notify::new());

        // The first run blocks until released.
        let first = {
            let (coalescer, runs, release, started) = (
                Arc::clone(&coalescer),
                Arc::clone(&runs),
                Arc::clone(&release),
                Arc::clone(&started),
            );
            tokio::spawn(async move {
                coalescer
                    .run(|| async {
                        runs.fetch_add(1, Ordering::SeqCst);
                        started.notify_one();
                        release.notified().await;
                    })
                    .await
            })
        };
        started.notified().await;
        // Ten requests while it runs.
        let waiting: Vec<_> = (0..10)
            .map(|_| {
                let (coalescer, runs) = (Arc::clone(&coalescer), Arc::clone(&runs));
                tokio::spawn(async move {
                    coalescer
                        .run(|| async {
                            runs.fetch_add(1, Ordering::SeqCst);
                        })
                        .await
                })
            })
            .collect();
        // Let them all register their request and queue on the lock.
        while coalescer.requested.load(Ordering::SeqCst) < 11 {
            tokio::task::yield_now().await;
        }
        release.notify_one();
        assert!(first.await.unwrap());
        let mut ran = 0;
        for task in waiting {
            ran += usize::from(task.await.unwrap());
        }
        assert_eq!(ran, 1, "one run covers all ten waiting requests");
        assert_eq!(runs.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_request_after_a_finished_run_runs_again() {
        let coalescer = Coalescer::default();
        let runs = AtomicUsize::new(0);
        for _ in 0..3 {
            let ran = coalescer
                .run(|| async {
                    runs.fetch_add(1, Ordering::SeqCst);
                })
                .await;
            assert!(ran);
        }
        assert_eq!(runs.load(Ordering::SeqCst), 3);
    }
}
