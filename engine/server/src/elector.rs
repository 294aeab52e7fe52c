//! Runs the singleton work — sync, the autoscaler, registration expiry and
//! the Terraform scheduler — on exactly one of the replicas that share a
//! PostgreSQL store.
//!
//! Every third of `--lease-ttl` the replica asks the store for the leader
//! lease (`neutral_store::LeaseStore::acquire`). Granted under a new term, it
//! sets the term as the store's fence (every leader-only write then checks
//! it), marks the runs a previous leader left unfinished `interrupted`, and
//! starts the singleton tasks. Refused, or unable to renew before its lease
//! runs out on its own clock, it stops them at once and follows: it reads
//! the declarations the leader stored and serves them. A leader that was
//! paused past its lease cannot do harm when it wakes: its writes carry the
//! old term and the store refuses them. A stopping leader gives the lease up,
//! so a follower takes over at its next try.
//!
//! This module owns the campaign loop and the follower's refresh; what the
//! singleton tasks are is `lib.rs`'s decision, handed in as `start`.

use std::sync::Arc;
use std::time::Duration;

use neutral_store::LEADER;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::app::App;
use crate::leadership::Role;
use crate::shutdown::{self, Shutdown, Trigger};
use crate::world::{ChangeEvent, now};

/// The tasks of one term and the trigger that stops them.
struct Term {
    term: i64,
    stop: Trigger,
    tasks: JoinSet<()>,
}

pub async fn run(
    app: Arc<App>,
    ttl: Duration,
    mut start: impl FnMut(&mut JoinSet<()>, &Shutdown) + Send,
    mut shutdown: Shutdown,
) {
    let mut ticker = tokio::time::interval(ttl / 3);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut leading: Option<Term> = None;
    // Until when this replica may act as leader on its own clock: the start
    // of its last successful renewal plus the TTL (the store's lease ends
    // later than that, never earlier).
    let mut held_until = Instant::now();
    let mut last_error: Option<String> = None;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = shutdown.wait() => break,
        }
        let asked_at = Instant::now();
        let replica = app.leadership.replica.clone();
        let granted = app
            .with_store(move |s| s.leases().acquire(LEADER, &replica, ttl))
            .await;
        match granted {
            Ok(Some(lease)) => {
                last_error = None;
                held_until = asked_at + ttl;
                if leading.as_ref().map(|t| t.term) != Some(lease.term) {
                    if let Some(old) = leading.take() {
                        step_down(
                            &app,
                            old,
                            "the lease lapsed and was taken again under a new term",
                        );
                    }
                    leading = Some(lead(&app, lease.term, &mut start).await);
                }
            }
            Ok(None) => {
                last_error = None;
                if let Some(old) = leading.take() {
                    step_down(&app, old, "another replica holds the leader lease");
                }
                follow(&app).await;
            }
            Err(err) => {
                let message = format!("{err:#}");
                if last_error.as_deref() != Some(message.as_str()) {
                    tracing::warn!(error = %message, "cannot reach the leader lease");
                }
                last_error = Some(message);
                if Instant::now() >= held_until
                    && let Some(old) = leading.take()
                {
                    step_down(
                        &app,
                        old,
                        "the lease could not be renewed before it ran out",
                    );
                }
            }
        }
    }
    if let Some(term) = leading.take() {
        term.stop.fire();
        let mut tasks = term.tasks;
        while tasks.join_next().await.is_some() {}
        let replica = app.leadership.replica.clone();
        if let Err(err) = app
            .with_store(move |s| s.leases().release(LEADER, &replica))
            .await
        {
            tracing::warn!(error = %format!("{err:#}"), "cannot give the leader lease up; a follower takes over when it lapses");
        } else {
            tracing::info!(term = term.term, "gave the leader lease up");
        }
    }
}

/// Becomes the leader under `term`: fence, runs left unfinished, tasks.
async fn lead(
    app: &Arc<App>,
    term: i64,
    start: &mut impl FnMut(&mut JoinSet<()>, &Shutdown),
) -> Term {
    app.store.set_fence(Some(term));
    app.leadership.set(Role::Leader { term });
    tracing::info!(term, replica = %app.leadership.replica, "leading: sync, autoscaler and scheduler run here");
    let at = now();
    match app
        .with_store(move |s| s.runs().interrupt_unfinished(at, "leader"))
        .await
    {
        Ok(runs) => {
            for run in runs {
                tracing::warn!(run = run.id, root = %run.root, workspace = %run.workspace, "run left unfinished by the previous leader: marked interrupted; its root is planned again");
            }
        }
        Err(err) => {
            tracing::error!(error = %format!("{err:#}"), "cannot mark the previous leader's unfinished runs");
        }
    }
    let (stop, term_shutdown) = shutdown::channel();
    let mut tasks = JoinSet::new();
    start(&mut tasks, &term_shutdown);
    Term { term, stop, tasks }
}

/// Stops a term's tasks without waiting for them: the fence (still the old
/// term) refuses whatever they try to write meanwhile.
fn step_down(app: &App, term: Term, why: &str) {
    tracing::warn!(
        term = term.term,
        reason = why,
        "no longer leading: singleton tasks stop"
    );
    app.leadership.set(Role::Follower {
        leader: None,
        term: term.term,
    });
    term.stop.fire();
    let mut tasks = term.tasks;
    tokio::spawn(async move { while tasks.join_next().await.is_some() {} });
}

/// A follower's refresh: who leads, and the declarations it stored.
async fn follow(app: &Arc<App>) {
    let read = app
        .with_store(|s| Ok((s.leases().current(LEADER)?, s.sync_status()?)))
        .await;
    let Ok((holder, sync)) = read else { return };
    app.leadership.set(Role::Follower {
        leader: holder
            .as_ref()
            .filter(|h| !h.lapsed)
            .map(|h| h.holder.clone()),
        term: holder.as_ref().map_or(0, |h| h.term),
    });
    let Some(good) = sync.last_good else { return };
    if app.read_world().commit.as_deref() == Some(good.commit.as_str()) {
        return;
    }
    let Ok(Some((commit, decl))) = app
        .with_store(neutral_store::Store::load_declarations)
        .await
    else {
        return;
    };
    {
        let mut world = app.write_world();
        world.decl = Arc::new(decl);
        world.commit = Some(commit.clone());
        world.refresh_settings(&app.settings.liveness);
    }
    tracing::info!(%commit, "following the leader's declarations");
    let _ = app.events.send(ChangeEvent::Declarations {
        commit: commit.clone(),
        at: now(),
    });
    app.probe_wakeup.notify_one();
    app.recompute(&format!(
        "commit {} (stored by the leader)",
        commit.get(..12).unwrap_or(&commit)
    ))
    .await;
}
