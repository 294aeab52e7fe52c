//! The application: the world and the services composed around it, shared
//! by every task and used as the HTTP API's state. It owns the two
//! reactions' side effects — [`App::reconcile`] and [`App::recompute`] run
//! the world's computations (folded by [`Coalescer`]s) and push the results
//! out: the store and its audit log, the DNS data plane, change events.
//!
//! The services' handles live here (the sync requests, the scheduler's
//! state, the release queue, the DNS bridge); their tasks import this
//! module, never the other way round. Which tasks a daemon starts — and
//! which of them only a leader may run — is decided in `lib.rs`.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use neutral_core::model::{NodeStatus, Timestamp};
use neutral_store::{AuditEntry, Heartbeat, StatusUpdate, Store, TokenHash};
use tokio::sync::{Notify, broadcast, mpsc};

use crate::coalesce::Coalescer;
use crate::counters::Counters;
use crate::dns::DnsBridge;
use crate::releases::Releases;
use crate::scheduler::Scheduler;
use crate::settings::Settings;
use crate::sync::{self, SyncOutcome, SyncRequest};
use crate::world::{ChangeEvent, World, now};

/// Everything the tasks and handlers share.
#[derive(Debug)]
pub struct App {
    pub settings: Settings,
    pub store: Arc<Store>,
    pub join_token: TokenHash,
    pub admin_token: TokenHash,
    /// The read-only viewer token, when configured.
    pub viewer_token: Option<TokenHash>,
    /// Run tokens and region join tokens minted by the scheduler.
    pub grants: crate::auth::Grants,
    pub world: RwLock<World>,
    pub heartbeats: mpsc::Sender<Heartbeat>,
    /// How far behind the writer of `heartbeats` is.
    pub heartbeat_backlog: crate::backlog::Backlog,
    pub sync_requests: mpsc::Sender<SyncRequest>,
    pub events: broadcast::Sender<ChangeEvent>,
    /// `GET /events` subscribers: their cap and the signal that ends them.
    pub event_streams: crate::event_streams::EventStreams,
    /// This replica's id and role among the replicas of its store.
    pub leadership: crate::leadership::Leadership,
    pub dns: DnsBridge,
    pub counters: Counters,
    pub probe_wakeup: Notify,
    /// Asks the health ticker for a reconcile now (a heartbeat changed a
    /// node's liveness); requests made while one runs fold into one.
    pub reconcile_soon: Notify,
    /// Asks for a recompute without waiting for it (a registration);
    /// requests made while one runs fold into one (`health::run_recompute_requests`).
    pub recompute_soon: Notify,
    /// Rung when this replica's own verdict on a node flips (a probe), so
    /// the replicas' exchange (`replicas.rs`) publishes it at once.
    pub verdict_changed: Notify,
    pub reconciles: Coalescer,
    pub recomputes: Coalescer,
    /// The local mirror of the configuration repository: sync fetches into
    /// it, the autoscaler commits and pushes from it.
    pub mirror: Arc<std::sync::Mutex<neutral_git::Mirror>>,
    /// The Terraform executor, when `--run-terraform` is on.
    pub scheduler: Option<Arc<Scheduler>>,
    /// Releases asked for through the API, delivered on heartbeats.
    pub releases: Releases,
    /// Registrations per client address (`--register-rate`/`--register-burst`).
    pub registrations: crate::admission::RateLimiter,
    /// Registrations being decided and stored, one per `(region, address)`.
    pub registering: crate::admission::InFlight,
    /// The API's open connections and their limits; the node API marks the
    /// addresses nodes speak from (the node reserve).
    pub connections: Arc<crate::connlimit::ConnTable>,
    /// The agent streams open on this replica (`api/stream.rs`).
    pub node_streams: crate::node_streams::NodeStreams,
    /// The probes' HTTP client (the prober's and the confirming probes').
    pub probe_client: reqwest::Client,
}

impl App {
    pub fn read_world(&self) -> std::sync::RwLockReadGuard<'_, World> {
        self.world
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn write_world(&self) -> std::sync::RwLockWriteGuard<'_, World> {
        self.world
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs a blocking store operation off the async threads.
    pub async fn with_store<T, F>(&self, op: F) -> anyhow::Result<T>
    where
        F: FnOnce(&Store) -> neutral_store::Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let store = Arc::clone(&self.store);
        let result = tokio::task::spawn_blocking(move || op(&store)).await?;
        if result.is_err() {
            self.counters.store_errors.inc();
        }
        Ok(result?)
    }

    pub async fn audit(&self, entry: AuditEntry) {
        if let Err(err) = self.with_store(move |s| s.audit().append(&entry)).await {
            tracing::error!(error = %format!("{err:#}"), "cannot append to the audit log");
        }
    }

    /// Publishes liveness changes: node status in memory, in the store (with
    /// audit entries), in the DNS data plane and in the effective weights.
    /// Concurrent calls fold into as few runs as keep their promise (see
    /// [`Coalescer`]).
    pub async fn reconcile(&self, actor: &str) {
        self.reconciles.run(|| self.reconcile_now(actor)).await;
    }

    async fn reconcile_now(&self, actor: &str) {
        let at = now();
        let leads = self.leadership.leads();
        let updates = self.write_world().reconcile(at, leads);
        self.publish_status_changes(updates, actor).await;
    }

    pub async fn publish_status_changes(&self, updates: Vec<StatusUpdate>, actor: &str) {
        if updates.is_empty() {
            return;
        }
        for update in &updates {
            self.node_streams.nudge(&update.id);
            self.counters.status_changes.inc();
            tracing::info!(node = %update.id, status = update.status.as_str(), reason = %update.reason, "node status");
            let _ = self.events.send(ChangeEvent::NodeStatus {
                node: update.id.clone(),
                status: update.status,
                reason: update.reason.clone(),
                at: update.at,
            });
        }
        let last_alive: Vec<Timestamp> = {
            let world = self.read_world();
            updates
                .iter()
                .filter(|u| u.status == NodeStatus::Down)
                .filter_map(|u| world.nodes.get(&u.id))
                .map(|e| {
                    e.last_passing_probe.map_or(e.liveness.last_heartbeat, |p| {
                        p.max(e.liveness.last_heartbeat)
                    })
                })
                .collect()
        };
        // The data plane first: a dead node leaves DNS answers before anything
        // is written down.
        self.recompute(&format!("node status ({actor})")).await;
        let out_at = now();
        for alive in last_alive {
            self.counters
                .detection_seconds
                .observe(out_at.since(alive).as_secs_f64());
        }
        let actor = actor.to_owned();
        if let Err(err) = self
            .with_store(move |s| s.nodes().set_statuses(&updates, &actor))
            .await
        {
            tracing::error!(error = %format!("{err:#}"), "cannot store node status changes");
        }
    }

    /// Recomputes effective weights from the current declarations and node
    /// statuses, publishes them (a new view when they or the declarations
    /// changed), updates the DNS data plane, and emits one
    /// change event (and audit entry) per domain whose answers changed.
    /// Concurrent calls fold into as few runs as keep their promise (see
    /// [`Coalescer`]); runs never overlap.
    pub async fn recompute(&self, cause: &str) {
        self.recomputes.run(|| self.recompute_now(cause)).await;
    }

    async fn recompute_now(&self, cause: &str) {
        self.counters.recomputes.inc();
        let started = std::time::Instant::now();
        let at = now();
        let inputs = self.write_world().recompute_inputs();
        let mut recomputed = inputs.compute(at, &self.settings.weights);
        let retired = self.write_world().publish(&recomputed);
        if let Some(health) = recomputed.data_plane_health() {
            self.dns.set_health(&health, &recomputed.decl);
        }
        let moves = recomputed.forget_moves();
        self.counters
            .recompute_seconds
            .observe(started.elapsed().as_secs_f64());
        // The answers are out: now the oldest view and the nodes computed
        // before may go.
        drop((retired, moves));
        if let Some(guard) = recomputed.split_brain() {
            tracing::error!(message = %guard.message, "split-brain guard tripped");
        }
        if recomputed.guard_changed {
            let message = recomputed.split_brain().map_or_else(
                || "split-brain guard released: health-driven changes resume".to_owned(),
                |g| g.message.clone(),
            );
            self.audit(AuditEntry {
                at,
                actor: "gtm".into(),
                kind: "gtm.split_brain".into(),
                subject: "nodes".into(),
                message,
                commit: None,
                data: serde_json::Value::Null,
            })
            .await;
        }
        if recomputed.changed.is_empty() {
            return;
        }
        // One audit entry per domain whose answers changed, in one write:
        // a change every domain serves makes a thousand.
        let commit = self.read_world().commit.clone();
        let mut entries = Vec::with_capacity(recomputed.changed.len());
        for (domain, summary) in recomputed.changed {
            let _ = self.events.send(ChangeEvent::Domain {
                domain: domain.clone(),
                summary: summary.clone(),
                at,
            });
            entries.push(AuditEntry {
                at,
                actor: "gtm".into(),
                kind: "gtm.weights".into(),
                subject: domain,
                message: format!("{summary} ({cause})"),
                commit: commit.clone(),
                data: serde_json::Value::Null,
            });
        }
        if let Err(err) = self
            .with_store(move |s| s.audit().append_all(&entries))
            .await
        {
            tracing::error!(error = %format!("{err:#}"), "cannot append to the audit log");
        }
    }

    /// Whether other replicas were live at the last exchange of verdicts
    /// (`replicas.rs`): a node refused here can heartbeat there.
    pub fn others_are_live(&self) -> bool {
        self.read_world()
            .vantage
            .as_ref()
            .is_some_and(|vantage| vantage.live > 1)
    }

    /// Whether another live replica's heartbeat writer is less behind than
    /// this one's `lag` at `now`, as it last said (one that said nothing
    /// counts as not behind): a heartbeat this replica would store late is
    /// better sent there.
    pub fn less_behind_replica_is_live(&self, lag: Duration, now: Timestamp) -> bool {
        let world = self.read_world();
        world.vantage.as_ref().is_some_and(|v| v.live > 1)
            && world
                .peer_writers
                .is_none_or(|peers| now.since(peers.least_behind) < lag)
    }

    pub fn heartbeat_interval(&self) -> Duration {
        self.settings.heartbeat_interval
    }

    /// Asks the sync task for an immediate sync and waits for its outcome.
    pub async fn request_sync(&self, timeout: Duration) -> Option<SyncOutcome> {
        sync::request(&self.sync_requests, timeout).await
    }
}
