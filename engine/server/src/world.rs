//! The control plane's in-memory view of the world and the two reactions
//! everything funnels into: [`Shared::reconcile`] (node liveness → published
//! node status) and [`Shared::recompute`] (declarations + node status →
//! effective weights, DNS health, change events).
//!
//! The world is the serving copy; SQLite is the durable one. Every status
//! change is written to the store (with its audit entry) right after it is
//! made here. Locks are `std` locks held for short, non-async sections only.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use neutral_core::liveness::{Liveness, LivenessSettings};
use neutral_core::model::{Declarations, Node, NodeStatus, Probe, Timestamp};
use neutral_core::weights::{self, DomainWeights, WeightSettings, WeightsReport};
use neutral_store::{AuditEntry, Heartbeat, NodeRecord, StatusUpdate, Store, TokenHash};
use serde::Serialize;
use tokio::sync::{Notify, broadcast, mpsc};

use crate::args::ServeArgs;
use crate::coalesce::Coalescer;
use crate::dns::DnsBridge;
use crate::sync::SyncRequest;

/// Milliseconds since the Unix epoch, now.
pub fn now() -> Timestamp {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    Timestamp(millis)
}

/// One registered node as the control plane tracks it.
#[derive(Clone, Debug)]
pub struct NodeEntry {
    pub record: NodeRecord,
    pub token: TokenHash,
    pub liveness: Liveness,
    pub settings: LivenessSettings,
    pub probe: Option<Probe>,
    pub next_probe: Timestamp,
    pub probe_in_flight: bool,
}

/// What the last sync attempt did, for `GET /status`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SyncView {
    pub last_attempt: Option<Timestamp>,
    pub last_error: Option<String>,
}

#[derive(Debug)]
pub struct World {
    pub commit: Option<String>,
    pub decl: Arc<Declarations>,
    pub nodes: BTreeMap<String, NodeEntry>,
    pub sync: SyncView,
    /// The last report and node list computed while no node had gone down
    /// within the split-brain window: what the guard holds on to when it
    /// trips, so answers are kept as they were before the burst began.
    pub calm: Option<(Arc<WeightsReport>, Vec<Node>)>,
    /// The autoscaler's latest decision per region and when it was made.
    pub decisions: BTreeMap<String, neutral_core::autoscale::Decision>,
    pub decisions_at: Option<Timestamp>,
    /// The published weights reports: the latest is the one in force
    /// ([`World::report`]), the recent ones stay readable by id.
    pub views: PublishedViews,
}

/// One published weights report with what it was computed from.
#[derive(Clone, Debug)]
pub struct PublishedView {
    pub id: String,
    pub report: Arc<WeightsReport>,
    pub at: Timestamp,
    pub decl: Arc<Declarations>,
    pub commit: Option<String>,
}

/// The last [`PublishedViews::KEEP`] published reports. A Terraform run pins
/// one (`NEUTRAL_HEALTH_VIEW` for both its plan and its apply), so the
/// provider's apply-time re-plan reads the same health its plan read and
/// the saved plan stays consistent while live health moves on. Ids carry
/// this process's start, so a restarted control plane never mistakes an
/// old id for one of its own.
#[derive(Debug)]
pub struct PublishedViews {
    epoch: String,
    next: u64,
    /// Never empty: [`PublishedViews::new`] publishes the first one.
    recent: VecDeque<PublishedView>,
}

impl PublishedViews {
    pub const KEEP: usize = 64;

    /// Views whose ids start with `epoch`, holding `first` as the latest.
    pub fn new(epoch: String, first: PublishedView) -> PublishedViews {
        let mut views = PublishedViews {
            epoch,
            next: 1,
            recent: VecDeque::with_capacity(Self::KEEP),
        };
        views.publish(first.report, first.at, first.decl, first.commit);
        views
    }

    /// Records a newly published report; returns its id.
    pub fn publish(
        &mut self,
        report: Arc<WeightsReport>,
        at: Timestamp,
        decl: Arc<Declarations>,
        commit: Option<String>,
    ) -> String {
        let id = format!("{}-{}", self.epoch, self.next);
        self.next += 1;
        if self.recent.len() == Self::KEEP {
            self.recent.pop_front();
        }
        self.recent.push_back(PublishedView {
            id: id.clone(),
            report,
            at,
            decl,
            commit,
        });
        id
    }

    pub fn get(&self, id: &str) -> Option<&PublishedView> {
        self.recent.iter().rev().find(|v| v.id == id)
    }

    /// The view `id`, else the latest (a view no longer held, or another
    /// process's, reads as the one in force).
    pub fn get_or_latest(&self, id: Option<&str>) -> &PublishedView {
        id.and_then(|id| self.get(id))
            .unwrap_or_else(|| self.latest())
    }

    pub fn latest(&self) -> &PublishedView {
        self.recent
            .back()
            .unwrap_or_else(|| unreachable!("PublishedViews is never empty"))
    }
}

/// Something that changed and may need a Terraform run (issue: scheduler).
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ChangeEvent {
    /// Effective weights or answers of a domain changed.
    Domain {
        domain: String,
        summary: String,
        at: Timestamp,
    },
    /// A new commit's declarations were applied.
    Declarations { commit: String, at: Timestamp },
    /// A node's status changed.
    NodeStatus {
        node: String,
        status: NodeStatus,
        reason: String,
        at: Timestamp,
    },
    /// The autoscaler acted on a region: a node-pool change (with its
    /// commit) or a replacement of down nodes (no commit).
    Autoscale {
        region: String,
        commit: Option<String>,
        summary: String,
        at: Timestamp,
    },
}

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

/// Everything the tasks and handlers share.
#[derive(Debug)]
pub struct Shared {
    pub args: ServeArgs,
    pub store: Arc<Store>,
    pub join_token: TokenHash,
    pub admin_token: TokenHash,
    pub world: RwLock<World>,
    pub heartbeats: mpsc::Sender<Heartbeat>,
    pub sync_requests: mpsc::Sender<SyncRequest>,
    pub events: broadcast::Sender<ChangeEvent>,
    pub dns: DnsBridge,
    pub counters: Counters,
    pub probe_wakeup: Notify,
    /// Asks the health ticker for a reconcile now (a heartbeat changed a
    /// node's liveness); requests made while one runs fold into one.
    pub reconcile_soon: Notify,
    pub reconciles: Coalescer,
    pub recomputes: Coalescer,
    pub weight_settings: WeightSettings,
    /// The local mirror of the configuration repository: sync fetches into
    /// it, the autoscaler commits and pushes from it.
    pub mirror: Arc<std::sync::Mutex<neutral_git::Mirror>>,
    /// The Terraform executor, when `--run-terraform` is on.
    pub scheduler: Option<Arc<crate::scheduler::Scheduler>>,
    /// Releases asked for through the API, delivered on heartbeats.
    pub releases: crate::api::releases::Releases,
}

/// Probe settings and liveness thresholds for a node of `region`: those of the
/// first domain (by domain name) that serves the region. Without such a domain,
/// or with probes off, heartbeats alone decide and one is enough.
pub fn liveness_for(
    args: &ServeArgs,
    decl: &Declarations,
    region: &str,
) -> (LivenessSettings, Option<Probe>) {
    let probe = decl
        .gtm
        .values()
        .find(|policy| neutral_core::health::serves(decl, policy, region))
        .map(|policy| policy.probe.clone());
    match probe {
        Some(probe) if !args.no_probes => (
            LivenessSettings {
                heartbeat_timeout: args.heartbeat_timeout,
                rise: probe.rise,
                fall: probe.fall,
                probed: true,
            },
            Some(probe),
        ),
        Some(probe) => (
            LivenessSettings {
                heartbeat_timeout: args.heartbeat_timeout,
                rise: probe.rise,
                fall: probe.fall,
                probed: false,
            },
            None,
        ),
        None => (
            LivenessSettings {
                heartbeat_timeout: args.heartbeat_timeout,
                rise: 1,
                fall: 1,
                probed: false,
            },
            None,
        ),
    }
}

impl World {
    /// The weights report in force: the latest published.
    pub fn report(&self) -> &Arc<WeightsReport> {
        &self.views.latest().report
    }

    pub fn node_list(&self) -> Vec<Node> {
        self.nodes.values().map(|e| e.record.node.clone()).collect()
    }

    /// The nodes as the engine's computations (weights, autoscale) see
    /// them. A node that was never ready (just registered, still proving
    /// itself) is down since [`Timestamp::SINCE_FOREVER`] rather than a node
    /// that just went down: a wave of new registrations cannot trip the
    /// split-brain guard, and a region whose first nodes are still starting
    /// is no failover source.
    pub fn nodes_for_engine(&self) -> Vec<Node> {
        self.nodes
            .values()
            .map(|e| {
                let mut node = e.record.node.clone();
                if node.status == NodeStatus::Down && !e.liveness.ever_ready {
                    node.status_since = Timestamp::SINCE_FOREVER;
                }
                node
            })
            .collect()
    }

    /// Re-derives every node's liveness thresholds after new declarations.
    pub fn refresh_settings(&mut self, args: &ServeArgs) {
        let decl = Arc::clone(&self.decl);
        for entry in self.nodes.values_mut() {
            let (settings, probe) = liveness_for(args, &decl, &entry.record.node.region);
            entry.settings = settings;
            entry.probe = probe;
        }
    }

    /// Moves every node's published status to what its liveness says at
    /// `now`; returns the changes.
    pub fn reconcile(&mut self, now: Timestamp) -> Vec<StatusUpdate> {
        let mut updates = Vec::new();
        for entry in self.nodes.values_mut() {
            entry.liveness.tick(now, &entry.settings);
            let (status, reason) = entry.liveness.status(now, &entry.settings);
            let node = &mut entry.record.node;
            if status != node.status {
                node.status = status;
                node.status_since = now;
                entry.record.status_reason.clone_from(&reason);
                updates.push(StatusUpdate {
                    id: node.id.clone(),
                    status,
                    at: now,
                    reason,
                });
            }
        }
        updates
    }
}

impl Shared {
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
            Counters::bump(&self.counters.store_errors);
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
        let updates = self.write_world().reconcile(at);
        self.publish_status_changes(updates, actor).await;
    }

    pub async fn publish_status_changes(&self, updates: Vec<StatusUpdate>, actor: &str) {
        if updates.is_empty() {
            return;
        }
        for update in &updates {
            Counters::bump(&self.counters.status_changes);
            tracing::info!(node = %update.id, status = update.status.as_str(), reason = %update.reason, "node status");
            let _ = self.events.send(ChangeEvent::NodeStatus {
                node: update.id.clone(),
                status: update.status,
                reason: update.reason.clone(),
                at: update.at,
            });
        }
        // The data plane first: a dead node leaves DNS answers before anything
        // is written down.
        self.recompute(&format!("node status ({actor})")).await;
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
        Counters::bump(&self.counters.recomputes);
        let at = now();
        let (decl, nodes, previous, previous_decl, calm) = {
            let world = self.read_world();
            let latest = world.views.latest();
            (
                Arc::clone(&world.decl),
                world.nodes_for_engine(),
                Arc::clone(&latest.report),
                Arc::clone(&latest.decl),
                world.calm.clone(),
            )
        };
        let settings = &self.weight_settings;
        let mut report = weights::compute(&decl, &nodes, &previous.domains, at, settings);
        if report.split_brain.is_some() {
            // Hold the answers from before the burst, not the ones already
            // thinned by its first failures.
            if let Some((calm_report, _)) = &calm {
                report = weights::compute(&decl, &nodes, &calm_report.domains, at, settings);
            }
        }
        let changed: Vec<(String, String)> = report
            .domains
            .iter()
            .filter(|(domain, now_weights)| {
                previous
                    .domains
                    .get(*domain)
                    .is_none_or(|before| differs(before, now_weights))
            })
            .map(|(domain, w)| (domain.clone(), summarize(w)))
            .collect();
        let split_brain = report.split_brain.clone();
        let guard_changed = split_brain.is_some() != previous.split_brain.is_some();
        // Only a new report (or new declarations) is a new view: a pinned
        // view then stays readable as long as nothing changes.
        let publish = report != *previous || !Arc::ptr_eq(&decl, &previous_decl);
        let report = Arc::new(report);
        {
            let mut world = self.write_world();
            if publish {
                let commit = world.commit.clone();
                world
                    .views
                    .publish(Arc::clone(&report), at, Arc::clone(&decl), commit);
            }
            if split_brain.is_none() && !recent_failures(&nodes, at, settings.split_brain_window) {
                world.calm = Some((Arc::clone(&report), nodes.clone()));
            }
        }
        match (&split_brain, &calm) {
            (None, _) => self.dns.set_health(&nodes, &decl),
            (Some(guard), calm) => {
                // The monitor, not the nodes, is suspect: the data plane goes
                // back to the health it had before the burst.
                if let Some((_, calm_nodes)) = calm {
                    self.dns.set_health(calm_nodes, &decl);
                }
                tracing::error!(message = %guard.message, "split-brain guard tripped");
            }
        }
        if guard_changed {
            let message = split_brain.as_ref().map_or_else(
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
        for (domain, summary) in changed {
            let commit = self.read_world().commit.clone();
            let _ = self.events.send(ChangeEvent::Domain {
                domain: domain.clone(),
                summary: summary.clone(),
                at,
            });
            self.audit(AuditEntry {
                at,
                actor: "gtm".into(),
                kind: "gtm.weights".into(),
                subject: domain,
                message: format!("{summary} ({cause})"),
                commit,
                data: serde_json::Value::Null,
            })
            .await;
        }
    }

    /// Queues a heartbeat for the batched writer; never blocks the request.
    pub fn enqueue_heartbeat(&self, heartbeat: Heartbeat) {
        if self.heartbeats.try_send(heartbeat).is_err() {
            // The writer is behind: the in-memory view is already updated,
            // only this sample is lost.
            Counters::bump(&self.counters.store_errors);
        }
    }

    pub fn heartbeat_interval(&self) -> Duration {
        self.args.heartbeat_interval
    }
}

/// Whether any node went down within `window` before `at`.
fn recent_failures(nodes: &[Node], at: Timestamp, window: Duration) -> bool {
    nodes
        .iter()
        .any(|n| n.status == NodeStatus::Down && at.since(n.status_since) <= window)
}

fn differs(before: &DomainWeights, after: &DomainWeights) -> bool {
    let key = |w: &DomainWeights| {
        (
            w.mode,
            w.regions
                .iter()
                .map(|r| (r.region.clone(), r.effective))
                .collect::<Vec<_>>(),
            w.answers
                .iter()
                .map(|a| (a.node_id.to_string(), a.address, a.weight))
                .collect::<Vec<_>>(),
        )
    };
    key(before) != key(after)
}

fn summarize(w: &DomainWeights) -> String {
    let regions: Vec<String> = w
        .regions
        .iter()
        .map(|r| format!("{} {}", r.region, r.effective))
        .collect();
    let answers: Vec<String> = w
        .answers
        .iter()
        .map(|a| format!("{}={}", a.node_id, a.weight))
        .collect();
    format!(
        "{} {}: regions [{}], answers [{}]",
        w.domain,
        w.mode.as_str(),
        regions.join(", "),
        answers.join(", ")
    )
}

/// Builds the world from the store after a (re)start: the last good
/// declarations and every known node, whose heartbeat clocks restart now.
pub fn restore(args: &ServeArgs, store: &Store, at: Timestamp) -> anyhow::Result<World> {
    let (commit, decl) = match store.load_declarations()? {
        Some((commit, decl)) => (Some(commit), decl),
        None => (None, Declarations::default()),
    };
    let mut nodes = BTreeMap::new();
    for record in store.nodes().list()? {
        let Some(token) = store.nodes().token_hash(&record.node.id)? else {
            continue;
        };
        let (settings, probe) = liveness_for(args, &decl, &record.node.region);
        let liveness = Liveness::restored(record.node.status, at);
        nodes.insert(
            record.node.id.clone(),
            NodeEntry {
                record,
                token,
                liveness,
                settings,
                probe,
                next_probe: at,
                probe_in_flight: false,
            },
        );
    }
    let decl = Arc::new(decl);
    let epoch = format!(
        "{:x}",
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis())
    );
    let nothing_yet = PublishedView {
        id: String::new(),
        report: Arc::new(WeightsReport::default()),
        at,
        decl: Arc::clone(&decl),
        commit: commit.clone(),
    };
    Ok(World {
        commit,
        decl,
        nodes,
        sync: SyncView::default(),
        calm: None,
        decisions: BTreeMap::new(),
        decisions_at: None,
        views: PublishedViews::new(epoch, nothing_yet),
    })
}

/// Previous answers of a domain, for reads.
pub fn domain_weights(world: &World, domain: &str) -> Option<DomainWeights> {
    world.report().domains.get(domain).cloned()
}

pub type DomainMap = BTreeMap<String, DomainWeights>;

#[cfg(test)]
mod tests {
    use super::*;

    fn view(at: i64) -> PublishedView {
        PublishedView {
            id: String::new(),
            report: Arc::new(WeightsReport::default()),
            at: Timestamp(at),
            decl: Arc::new(Declarations::default()),
            commit: None,
        }
    }

    #[test]
    fn published_views_keep_the_latest_and_forget_the_oldest() {
        let mut views = PublishedViews::new("e".into(), view(1));
        assert_eq!(views.latest().id, "e-1");
        assert_eq!(views.get("e-1").map(|v| v.at), Some(Timestamp(1)));
        for at in 2..=i64::try_from(PublishedViews::KEEP).unwrap() + 1 {
            let v = view(at);
            let id = views.publish(v.report, v.at, v.decl, v.commit);
            assert_eq!(id, format!("e-{at}"));
        }
        assert!(views.get("e-1").is_none(), "the oldest is forgotten");
        assert_eq!(views.get("e-2").map(|v| v.at), Some(Timestamp(2)));
        let latest = views.latest();
        assert_eq!(latest.id, format!("e-{}", PublishedViews::KEEP + 1));
        assert!(views.get("other-2").is_none(), "another epoch's id");
        assert_eq!(views.get_or_latest(Some("e-2")).at, Timestamp(2));
        assert_eq!(views.get_or_latest(Some("e-1")).id, latest.id);
        assert_eq!(views.get_or_latest(None).id, latest.id);
    }
}
