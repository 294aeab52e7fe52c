//! The control plane's in-memory view of the world and the two reactions
//! everything funnels into, as state changes: [`World::reconcile`] (node
//! liveness → published node status) and the recompute
//! ([`World::recompute_inputs`] → [`RecomputeInputs::compute`] →
//! [`World::publish`]: declarations + node status → effective weights, the
//! health the DNS data plane should serve, and what changed).
//!
//! The world is the serving copy; SQLite is the durable one. This module is
//! a leaf: it holds state and computes on it, and must not do IO, hold
//! channels or import the services. Pushing results out (store, audit, DNS,
//! change events) and folding concurrent requests is `app`'s.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use neutral_core::liveness::{Liveness, LivenessSettings};
use neutral_core::model::{Declarations, Node, NodeStatus, Probe, Timestamp};
use neutral_core::quorum::{self, Quorum, Verdict};
use neutral_core::weights::incremental::Changes;
use neutral_core::weights::node_set::NodeSet;
use neutral_core::weights::packed::PackedReport;
use neutral_core::weights::{
    self, Answer, Answers, DomainWeights, SplitBrain, WeightSettings, WeightsReport,
};
use neutral_store::{NodeRecord, StatusUpdate, Store, TokenHash};
use serde::{Deserialize, Serialize};

use crate::node_table::{NodeTable, Placed};
use crate::sample_rings::SampleRings;

/// The nodes as a recompute read them, grouped by region: shared between
/// recomputes (the next one reuses every node whose weighed fields did not
/// change, and every region group none of whose nodes did), so one node's
/// status change costs one node's copy and its group's. Each
/// node carries what the weights read (id, region, address, status and its
/// [`World::nodes_for_engine`] `status_since`) and its mode; heartbeat and
/// metrics are left out, as the weights never read them.
pub type EngineNodes = Arc<NodeSet>;

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
    /// When a probe last passed (for the detection-time histogram).
    pub last_passing_probe: Option<Timestamp>,
    /// Whether the node's published status was ever `up`: a node that never
    /// was did not "go down", and the split-brain guard must not count it
    /// ([`engine_since`]). Not this replica's own liveness: among replicas
    /// that rises before the quorum publishes `up`, and a registration wave
    /// then tripped the guard on every replica.
    pub ever_up: bool,
}

impl Placed for NodeEntry {
    /// What [`engine_view`] reads that may change after registration.
    type Watched = (NodeStatus, Timestamp, neutral_core::model::NodeMode, bool);

    fn watched(&self) -> Self::Watched {
        let node = &self.record.node;
        (node.status, node.status_since, node.mode, self.ever_up)
    }

    fn region(&self) -> &str {
        &self.record.node.region
    }

    fn address(&self) -> std::net::IpAddr {
        self.record.node.address
    }
}

impl NodeEntry {
    /// A node entry with `liveness`, the liveness settings and probe of its
    /// region under `decl`, and its first probe due at `at`.
    pub fn new(
        record: NodeRecord,
        token: TokenHash,
        liveness: Liveness,
        defaults: &LivenessDefaults,
        decl: &Declarations,
        at: Timestamp,
    ) -> NodeEntry {
        let (settings, probe) = liveness_for(defaults, decl, &record.node.region);
        // Restored after a restart (`Liveness::restored`), or read up.
        let ever_up = liveness.ever_ready || record.node.status == NodeStatus::Up;
        NodeEntry {
            ever_up,
            record,
            token,
            liveness,
            settings,
            probe,
            next_probe: at,
            probe_in_flight: false,
            last_passing_probe: None,
        }
    }
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
    pub nodes: NodeTable<NodeEntry>,
    pub sync: SyncView,
    /// The last report and node list computed while no node had gone down
    /// within the split-brain window: what the guard holds on to when it
    /// trips, so answers are kept as they were before the burst began.
    pub calm: Option<(Arc<WeightsReport>, EngineNodes)>,
    /// When the last recompute ran and the nodes it computed on: with the
    /// latest view's report (equal to what it computed), what the next one
    /// recomputes incrementally from.
    pub last_computed: Option<(Timestamp, EngineNodes)>,
    /// The autoscaler's latest decision per region and when it was made.
    pub decisions: BTreeMap<String, neutral_core::autoscale::Decision>,
    pub decisions_at: Option<Timestamp>,
    /// The published weights reports: the latest is the one in force
    /// ([`World::report`]), the recent ones stay readable by id.
    pub views: PublishedViews,
    /// The other replicas' verdicts as this replica last read them from the
    /// store (replicas on PostgreSQL; `None`: this replica judges alone).
    pub vantage: Option<Vantage>,
    /// Replicas: the moment up to which this replica has read the
    /// heartbeats the others stored (the start of its last complete read of
    /// the store's node changes, `replicas.rs`). A node's silence is judged
    /// up to there, not up to now: a replica whose reads fall behind (a slow
    /// store, a starved process) would otherwise count heartbeats it has
    /// not read yet as missing and vote live nodes down. `None`: no
    /// replicas; silence is judged up to now.
    pub heard_as_of: Option<Timestamp>,
    /// Replicas: how far the other live replicas' heartbeat writers had
    /// stored, as read before this replica's last complete read of the
    /// store's node changes began (`replicas.rs`). A heartbeat another
    /// replica received reaches this one only once stored; silence is judged
    /// up to here as well. Kept, dated, when the others stop being live.
    /// `None`: no other live replica was ever read.
    pub peer_writers: Option<PeerWriters>,
    /// The metric samples the autoscaler reads while this replica leads
    /// (the node API and the replicas' mirror note every heartbeat's
    /// metrics there: [`SampleRings::note`]).
    pub samples: SampleRings,
}

/// How far behind the other live replicas' heartbeat writers are
/// ([`World::peer_writers`]), each mark by that replica's own clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerWriters {
    /// The furthest behind: every heartbeat any other replica received
    /// before this moment is stored, and so read here.
    pub stored_through: Timestamp,
    /// The least behind: the mark of the replica a heartbeat this one
    /// would store late is best sent to (`api::nodes::accept_heartbeat`).
    pub least_behind: Timestamp,
    /// How far behind now the marks may hold judgement back at most (the
    /// heartbeat timeout, so a dead node is found within twice the timeout
    /// under any load): a writer stuck or far behind must not stop every
    /// replica from ever finding a dead node. A writer behind sheds while
    /// another is less behind; when all are, heartbeats stored up to this
    /// late still count.
    pub hold_at_most: Duration,
    /// When a read last showed another live replica (by this replica's
    /// clock). For [`PeerWriters::hold_at_most`] after it, this replica
    /// still judges as one of several: a replica whose presence lapsed
    /// because it or this one was starved for a few seconds still took
    /// heartbeats, and they may not be read yet.
    pub seen_at: Timestamp,
}

/// What the other live replicas see of each node (`replicas.rs` reads it;
/// the leader's [`World::reconcile`] counts it with its own view).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Vantage {
    /// This replica's name among them.
    pub replica: String,
    /// Live replicas, this one included.
    pub live: usize,
    /// Per node, the verdicts of the other live replicas.
    pub others: BTreeMap<String, Vec<Verdict>>,
}

impl Vantage {
    /// Every live replica's verdict on node `id`: this replica's `own`
    /// first, then the others'.
    pub fn verdicts_on(&self, id: &str, (ready, detail): (bool, String)) -> Vec<Verdict> {
        let mut verdicts = vec![Verdict {
            replica: self.replica.clone(),
            ready,
            detail,
        }];
        verdicts.extend(self.others.get(id).into_iter().flatten().cloned());
        verdicts
    }
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

    /// Takes the oldest view out when one more would be too many: a caller
    /// that publishes on a hot path drops it after the answers are out.
    pub fn make_room(&mut self) -> Option<PublishedView> {
        if self.recent.len() >= Self::KEEP {
            self.recent.pop_front()
        } else {
            None
        }
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

/// What decides liveness besides the declarations: the daemon's heartbeat
/// timeout and whether it probes nodes at all.
#[derive(Clone, Copy, Debug)]
pub struct LivenessDefaults {
    pub heartbeat_timeout: Duration,
    /// Off with `--no-probes`: heartbeats alone decide.
    pub probes: bool,
}

/// Probe settings and liveness thresholds for a node of `region`: those of the
/// first domain (by domain name) that serves the region. Without such a domain,
/// or with probes off, heartbeats alone decide and one is enough.
pub fn liveness_for(
    args: &LivenessDefaults,
    decl: &Declarations,
    region: &str,
) -> (LivenessSettings, Option<Probe>) {
    let policy = decl
        .gtm
        .values()
        .find(|policy| neutral_core::health::serves(decl, policy, region));
    let Some(policy) = policy else {
        return (
            LivenessSettings {
                heartbeat_timeout: args.heartbeat_timeout,
                rise: 1,
                fall: 1,
                probed: false,
                quorum: Quorum::default(),
            },
            None,
        );
    };
    let settings = LivenessSettings {
        heartbeat_timeout: args.heartbeat_timeout,
        rise: policy.probe.rise,
        fall: policy.probe.fall,
        probed: args.probes,
        quorum: policy.health.quorum,
    };
    (settings, args.probes.then(|| policy.probe.clone()))
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
                node.status_since = engine_since(e);
                node
            })
            .collect()
    }

    /// The nodes a recompute reads ([`EngineNodes`], grouped by region): the
    /// last recompute's node where its weighed fields and mode are
    /// unchanged, a fresh copy where not; and how they differ from the last
    /// recompute's ([`EngineRead`]).
    ///
    /// Only the places the table noted as changed since are looked at
    /// ([`NodeTable::take_changed`]), so one status change among 10,000
    /// nodes copies one region's group, not every node; more changes than a
    /// sixteenth of the nodes (a registration storm) read every node again
    /// instead.
    pub fn engine_nodes(&mut self) -> EngineRead {
        let changed = self.nodes.take_changed();
        match &self.last_computed {
            Some((at, previous)) if changed.len() <= previous.len() / 16 => {
                patch_engine_nodes(&self.nodes, *at, previous, &changed)
            }
            Some((at, previous)) => merge_engine_nodes(&self.nodes, Some(*at), previous),
            None => merge_engine_nodes(&self.nodes, None, &NodeSet::default()),
        }
    }

    /// Re-derives every node's liveness thresholds after new declarations.
    pub fn refresh_settings(&mut self, args: &LivenessDefaults) {
        let decl = Arc::clone(&self.decl);
        self.nodes.for_each_mut(|_, entry| {
            let (settings, probe) = liveness_for(args, &decl, &entry.record.node.region);
            entry.settings = settings;
            entry.probe = probe;
        });
    }

    /// Moves every node's published status to what health says at `now`:
    /// this replica's own liveness, or — with other live replicas judging
    /// too ([`World::vantage`]) — the quorum of their verdicts and its own.
    /// Returns the changes.
    ///
    /// Only the leader (`leads`) decides health; a follower's reconcile
    /// publishes only what an operator asked of it — a drain, or the end of
    /// one — and leaves every other status to the leader.
    pub fn reconcile(&mut self, now: Timestamp, leads: bool) -> Vec<StatusUpdate> {
        let mut updates = Vec::new();
        let vantage = self.vantage.as_ref().filter(|v| v.live > 1);
        let heard = self.judged_at(now);
        self.nodes.for_each_mut(|id, entry| {
            entry.liveness.tick(heard, &entry.settings);
            let drain_asked =
                entry.liveness.drained != (entry.record.node.status == NodeStatus::Drain);
            if !leads && !drain_asked {
                return;
            }
            let (status, reason) = match vantage {
                Some(vantage) if !entry.liveness.drained => {
                    let own = entry.liveness.verdict(heard, &entry.settings);
                    let verdicts = vantage.verdicts_on(id, own);
                    let decision = quorum::decide(entry.settings.quorum, vantage.live, &verdicts);
                    let status = if decision.ready {
                        NodeStatus::Up
                    } else {
                        NodeStatus::Down
                    };
                    (status, decision.reason)
                }
                _ => {
                    if entry.liveness.current(heard, &entry.settings) == entry.record.node.status {
                        return;
                    }
                    entry.liveness.status(heard, &entry.settings)
                }
            };
            let node = &mut entry.record.node;
            if status != node.status {
                entry.ever_up |= status == NodeStatus::Up;
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
        });
        updates
    }

    /// This replica's own verdict on every node at `now` (drain aside):
    /// what it publishes for the others to count.
    pub fn own_verdicts(&mut self, now: Timestamp) -> BTreeMap<String, (bool, String)> {
        let mut verdicts = BTreeMap::new();
        let heard = self.judged_at(now);
        self.nodes.for_each_mut(|id, entry| {
            entry.liveness.tick(heard, &entry.settings);
            verdicts.insert(
                id.clone(),
                entry.liveness.shared_verdict(heard, &entry.settings),
            );
        });
        verdicts
    }

    /// The moment a node's silence is judged up to: with other live
    /// replicas (or one seen live within [`PeerWriters::hold_at_most`]),
    /// the moment this replica has read their heartbeats up to
    /// ([`World::heard_as_of`]) and they had stored them up to
    /// ([`World::peer_writers`], held back at most
    /// [`PeerWriters::hold_at_most`]), if that is earlier than now; alone,
    /// now (every heartbeat comes here).
    pub fn judged_at(&self, now: Timestamp) -> Timestamp {
        let peers = self
            .peer_writers
            .filter(|peers| now.since(peers.seen_at) <= peers.hold_at_most);
        let live = self.vantage.as_ref().is_some_and(|v| v.live > 1);
        let Some(heard) = self.heard_as_of.filter(|_| live || peers.is_some()) else {
            return now;
        };
        let stored = peers.map_or(now, |peers| {
            peers.stored_through.max(now.minus(peers.hold_at_most))
        });
        heard.min(stored).min(now)
    }
}

/// What a recompute reads from the world: taken under a short lock,
/// computed on without one.
#[derive(Debug)]
pub struct RecomputeInputs {
    decl: Arc<Declarations>,
    /// The nodes to compute on, how they moved since the last recompute,
    /// and what changed.
    read: EngineRead,
    /// The nodes the last recompute computed on (what `read.moved` is
    /// relative to).
    previous_nodes: Option<EngineNodes>,
    previous: Arc<WeightsReport>,
    previous_decl: Arc<Declarations>,
    calm: Option<(Arc<WeightsReport>, EngineNodes)>,
}

/// The result of a recompute: the new report and what it changed.
#[derive(Debug)]
pub struct Recomputed {
    pub at: Timestamp,
    pub report: Arc<WeightsReport>,
    pub decl: Arc<Declarations>,
    /// The nodes as computed on (shared with the world's `last_computed`
    /// and `calm`, never copied).
    pub nodes: EngineNodes,
    /// The calm node list held before this run (the guard falls back to it).
    calm_nodes: Option<EngineNodes>,
    /// The nodes the previous recompute computed on, and how each node that
    /// changed moved from them to `nodes`.
    previous_nodes: Option<EngineNodes>,
    moved: Vec<NodeMove>,
    /// Domains whose answers changed, with a one-line summary each.
    pub changed: Vec<(String, String)>,
    /// Whether the split-brain guard tripped or released in this run.
    pub guard_changed: bool,
    /// Whether this is a new view (a new report or new declarations).
    publish: bool,
    /// Whether no node went down within the split-brain window.
    calm: bool,
}

impl Recomputed {
    /// Lets go of the node list this run was computed from and of the
    /// nodes' moves (the data plane has them): a recompute that read every
    /// node again would otherwise hold two generations of them until its
    /// audit entries are written.
    pub fn forget_moves(&mut self) -> (Option<EngineNodes>, Vec<NodeMove>) {
        (self.previous_nodes.take(), std::mem::take(&mut self.moved))
    }

    /// The guard in force, if it tripped.
    pub fn split_brain(&self) -> Option<&SplitBrain> {
        self.report.split_brain.as_ref()
    }

    /// The node health the DNS data plane should serve: the nodes as
    /// computed on, or — while the split-brain guard holds, since the
    /// monitor rather than the nodes is suspect — the health from before
    /// the burst (`None`: nothing calm known, leave the data plane as is).
    pub fn data_plane_health(&self) -> Option<DataPlaneHealth<'_>> {
        match self.split_brain() {
            None => Some(DataPlaneHealth {
                nodes: &self.nodes,
                since: self
                    .previous_nodes
                    .as_ref()
                    .map(|previous| (previous, self.moved.as_slice())),
            }),
            Some(_) => self
                .calm_nodes
                .as_ref()
                .map(|nodes| DataPlaneHealth { nodes, since: None }),
        }
    }
}

/// The node health the DNS data plane should serve
/// ([`Recomputed::data_plane_health`]).
#[derive(Debug)]
pub struct DataPlaneHealth<'a> {
    pub nodes: &'a EngineNodes,
    /// The node list it differs from by the moves given (`None`: not known;
    /// the data plane is to take `nodes` whole).
    pub since: Option<(&'a EngineNodes, &'a [NodeMove])>,
}

impl RecomputeInputs {
    /// Effective weights at `at`, compared with the report in force.
    pub fn compute(self, at: Timestamp, settings: &WeightSettings) -> Recomputed {
        let RecomputeInputs {
            decl,
            read:
                EngineRead {
                    nodes,
                    changes,
                    moved,
                },
            previous_nodes,
            previous,
            previous_decl,
            calm,
        } = self;
        let changes_known = changes.is_some();
        // Same declarations as the report in force: only the domains the
        // node changes (or time) could touch are recomputed; the result is
        // the full computation's (a property test in the core holds them
        // equal).
        let (mut report, recomputed) = match changes {
            Some(changes) if Arc::ptr_eq(&decl, &previous_decl) => {
                // Cheap: the entries are shared, only the map is copied.
                let incremental = weights::incremental::compute_incremental_in(
                    &decl,
                    &nodes,
                    WeightsReport::clone(&previous),
                    &changes,
                    at,
                    settings,
                );
                (incremental.report, Some(incremental.recomputed))
            }
            _ => (
                weights::compute(&decl, &listed(&nodes), &previous.domains, at, settings),
                None,
            ),
        };
        if report.split_brain.is_some() {
            // Hold the answers from before the burst, not the ones already
            // thinned by its first failures.
            if let Some((calm_report, _)) = &calm {
                report =
                    weights::compute(&decl, &listed(&nodes), &calm_report.domains, at, settings);
            }
        }
        let mut runs = RunComparison::default();
        // The domains an incremental recompute made afresh, when it says
        // which: every other entry is the previous report's own (the same
        // `Arc`), under the same declarations, so only these can differ.
        let fresh = match &recomputed {
            Some(weights::incremental::Recomputed::Domains(fresh))
                if report.split_brain.is_none()
                    && report.domains.len() == previous.domains.len() =>
            {
                Some(fresh.as_slice())
            }
            _ => None,
        };
        let pairs = domain_pairs(&report, &previous, fresh);
        let changed = pairs
            .iter()
            .filter_map(|&(domain, now_weights, before)| {
                change_of(domain, before, now_weights?, &mut runs)
            })
            .collect();
        let guard_changed = report.split_brain.is_some() != previous.split_brain.is_some();
        // Only a new report (or new declarations) is a new view: a pinned
        // view then stays readable as long as nothing changes.
        // Equal, as `==` says, reading each pair of runs of answers once and
        // entries kept by address.
        let same = report.split_brain == previous.split_brain
            && pairs.iter().all(|&(_, a, b)| match (a, b) {
                (Some(a), Some(b)) => std::ptr::eq(a, b) || same_domain(a, b, &mut runs),
                (None, None) => true,
                _ => false,
            });
        let publish = !same || !Arc::ptr_eq(&decl, &previous_decl);
        let calm_now = report.split_brain.is_none()
            && !recent_failures(&nodes, at, settings.split_brain_window);
        // What did not change stays the same `Arc`: the world, the calm
        // snapshot and the stored documents (rewritten when their `Arc`
        // changes) then see that nothing did.
        let report = if publish { Arc::new(report) } else { previous };
        let nodes = match &previous_nodes {
            Some(previous) if changes_known && moved.is_empty() => Arc::clone(previous),
            _ => Arc::new(nodes),
        };
        Recomputed {
            at,
            report,
            decl,
            nodes,
            calm_nodes: calm.map(|(_, nodes)| nodes),
            previous_nodes,
            moved,
            changed,
            guard_changed,
            publish,
            calm: calm_now,
        }
    }
}

impl World {
    /// What a recompute starts from. It takes the node table's changes
    /// (hence `&mut`): the recompute that reads them must publish.
    pub fn recompute_inputs(&mut self) -> RecomputeInputs {
        let read = self.engine_nodes();
        let latest = self.views.latest();
        RecomputeInputs {
            decl: Arc::clone(&self.decl),
            read,
            previous_nodes: self
                .last_computed
                .as_ref()
                .map(|(_, nodes)| Arc::clone(nodes)),
            previous: Arc::clone(&latest.report),
            previous_decl: Arc::clone(&latest.decl),
            calm: self.calm.clone(),
        }
    }

    /// Takes a recompute's result in: a new published view when it is one,
    /// and the calm report the split-brain guard falls back to. Returns the
    /// view that no longer fits ([`PublishedViews::KEEP`]), for the caller
    /// to drop once the new answers are out (freeing a report of a thousand
    /// domains is a tenth of a status change's time).
    #[must_use]
    pub fn publish(&mut self, recomputed: &Recomputed) -> Option<PublishedView> {
        let mut retired = None;
        if recomputed.publish {
            retired = self.views.make_room();
            let commit = self.commit.clone();
            self.views.publish(
                Arc::clone(&recomputed.report),
                recomputed.at,
                Arc::clone(&recomputed.decl),
                commit,
            );
        }
        if recomputed.calm {
            self.calm = Some((
                Arc::clone(&recomputed.report),
                Arc::clone(&recomputed.nodes),
            ));
        }
        self.last_computed = Some((recomputed.at, Arc::clone(&recomputed.nodes)));
        retired
    }
}

/// The nodes a recompute reads and what changed since the last one
/// ([`World::engine_nodes`]).
#[derive(Debug)]
pub struct EngineRead {
    pub nodes: NodeSet,
    /// The regions whose nodes changed (`None`: no recompute before).
    pub changes: Option<Changes>,
    /// Each node that changed, as the last recompute read it and as it is
    /// now (`None`: not there); empty with no recompute before.
    pub moved: Vec<NodeMove>,
}

/// One node as the last recompute read it and as it is now.
#[derive(Clone, Debug)]
pub struct NodeMove {
    pub before: Option<Arc<Node>>,
    pub after: Option<Arc<Node>>,
}

/// [`World::engine_nodes`] for a few changes: the previous set with the
/// `changed` places (sorted) looked up in it and patched.
fn patch_engine_nodes(
    table: &NodeTable<NodeEntry>,
    previous_at: Timestamp,
    previous: &NodeSet,
    changed: &[(String, String)],
) -> EngineRead {
    let mut nodes = previous.clone();
    let mut changes = Changes::new(previous_at);
    let mut moved = Vec::new();
    for (region, id) in changed {
        let now = table
            .get(id)
            .filter(|entry| entry.record.node.region == *region);
        let (before, after) = match (nodes.get(region, id), now) {
            (Some(seen), Some(entry)) if reads_the_same(seen, entry) => continue,
            (_, Some(entry)) => {
                let fresh = Arc::new(engine_view(entry));
                (nodes.insert(Arc::clone(&fresh)), Some(fresh))
            }
            (Some(_), None) => (nodes.remove(region, id), None),
            (None, None) => continue,
        };
        changes.node(before.as_deref(), after.as_deref());
        moved.push(NodeMove { before, after });
    }
    EngineRead {
        nodes,
        changes: Some(changes),
        moved,
    }
}

/// [`World::engine_nodes`] for many changes, or none known: every node of
/// the table read again, the previous node kept where it reads the same.
fn merge_engine_nodes(
    table: &NodeTable<NodeEntry>,
    previous_at: Option<Timestamp>,
    previous: &NodeSet,
) -> EngineRead {
    let mut changes = Changes::new(previous_at.unwrap_or_default());
    let mut moved = Vec::new();
    // With no recompute before there is nothing to move from.
    let mut record = |before: Option<Arc<Node>>, after: Option<Arc<Node>>| {
        if previous_at.is_some() {
            changes.node(before.as_deref(), after.as_deref());
            moved.push(NodeMove { before, after });
        }
    };
    let nodes = NodeSet::new(table.values().map(|entry| {
        let node = &entry.record.node;
        match previous.get(&node.region, &node.id) {
            Some(seen) if reads_the_same(seen, entry) => Arc::clone(seen),
            seen => {
                let fresh = Arc::new(engine_view(entry));
                record(seen.cloned(), Some(Arc::clone(&fresh)));
                fresh
            }
        }
    }));
    for seen in previous.iter() {
        if nodes.get(&seen.region, &seen.id).is_none() {
            record(Some(Arc::clone(seen)), None);
        }
    }
    EngineRead {
        nodes,
        changes: previous_at.map(|_| changes),
        moved,
    }
}

/// A node's `status_since` as the engine reads it: a node that was never
/// ready (just registered, still proving itself) is down since
/// [`Timestamp::SINCE_FOREVER`] rather than a node that just went down.
fn engine_since(entry: &NodeEntry) -> Timestamp {
    let node = &entry.record.node;
    if node.status == NodeStatus::Down && !entry.ever_up {
        Timestamp::SINCE_FOREVER
    } else {
        node.status_since
    }
}

/// A node as [`EngineNodes`] holds it.
fn engine_view(entry: &NodeEntry) -> Node {
    let node = &entry.record.node;
    Node {
        id: node.id.clone(),
        region: node.region.clone(),
        address: node.address,
        status: node.status,
        status_since: engine_since(entry),
        mode: node.mode,
        last_heartbeat: None,
        metrics: None,
    }
}

/// Whether `seen` is what [`engine_view`] makes of `entry` now.
fn reads_the_same(seen: &Node, entry: &NodeEntry) -> bool {
    let node = &entry.record.node;
    seen.id == node.id
        && seen.region == node.region
        && seen.address == node.address
        && seen.status == node.status
        && seen.status_since == engine_since(entry)
        && seen.mode == node.mode
}

/// The nodes of `set` as a list, for the computations that read every node.
fn listed(set: &NodeSet) -> Vec<&Node> {
    set.iter().map(|node| &**node).collect()
}

/// Whether any node went down within `window` before `at`.
fn recent_failures(nodes: &NodeSet, at: Timestamp, window: Duration) -> bool {
    nodes.down_since(at.minus(window)) > 0
}

fn differs(before: &DomainWeights, after: &DomainWeights, runs: &mut RunComparison) -> bool {
    before.mode != after.mode
        || !before
            .regions
            .iter()
            .map(|r| (&r.region, r.effective))
            .eq(after.regions.iter().map(|r| (&r.region, r.effective)))
        || !runs.same_answers(&before.answers, &after.answers, Likeness::Served)
}

/// A domain's entry in [`Recomputed::changed`]: `None` when it is the
/// previous entry itself (kept by an incremental recompute) or does not
/// differ from it.
fn change_of(
    domain: &str,
    before: Option<&DomainWeights>,
    now_weights: &DomainWeights,
    runs: &mut RunComparison,
) -> Option<(String, String)> {
    if before.is_some_and(|before| std::ptr::eq(before, now_weights)) {
        return None;
    }
    before
        .is_none_or(|before| differs(before, now_weights, runs))
        .then(|| (domain.to_owned(), summarize(before, now_weights, runs)))
}

/// The domains a recompute compares with the report before, each with its
/// entry in the new report and in the one before (`None`: not there):
/// the `fresh` ones only when the incremental recompute says which it made
/// (every other entry is the previous one's own), else every domain of
/// either, in one walk of the two sorted maps.
fn domain_pairs<'r>(
    report: &'r WeightsReport,
    previous: &'r WeightsReport,
    fresh: Option<&'r [String]>,
) -> Vec<(
    &'r str,
    Option<&'r DomainWeights>,
    Option<&'r DomainWeights>,
)> {
    if let Some(fresh) = fresh {
        return fresh
            .iter()
            .map(|domain| {
                let entry =
                    |r: &'r WeightsReport| r.domains.get(domain.as_str()).map(AsRef::as_ref);
                (domain.as_str(), entry(report), entry(previous))
            })
            .collect();
    }
    let mut pairs = Vec::with_capacity(report.domains.len());
    let mut now = report.domains.iter().peekable();
    let mut before = previous.domains.iter().peekable();
    loop {
        let order = match (now.peek(), before.peek()) {
            (None, None) => return pairs,
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some((a, _)), Some((b, _))) => a.cmp(b),
        };
        // Each arm takes the entry it peeked: the walk always advances.
        pairs.extend(match order {
            std::cmp::Ordering::Less => now.next().map(|(name, a)| (&**name, Some(&**a), None)),
            std::cmp::Ordering::Greater => {
                before.next().map(|(name, b)| (&**name, None, Some(&**b)))
            }
            std::cmp::Ordering::Equal => now
                .next()
                .zip(before.next())
                .map(|((name, a), (_, b))| (&**name, Some(&**a), Some(&**b))),
        });
    }
}

fn same_domain(a: &DomainWeights, b: &DomainWeights, runs: &mut RunComparison) -> bool {
    // Every field by name, so a new one cannot be forgotten.
    let DomainWeights {
        domain,
        zone,
        record_type,
        ttl,
        dns,
        mode,
        regions,
        answers,
        reasons,
    } = a;
    *domain == b.domain
        && *zone == b.zone
        && *record_type == b.record_type
        && *ttl == b.ttl
        && *dns == b.dns
        && *mode == b.mode
        && *regions == b.regions
        && *reasons == b.reasons
        && runs.same_answers(answers, &b.answers, Likeness::Full)
}

/// Which likeness of answers a comparison asks for.
#[derive(Clone, Copy)]
enum Likeness {
    /// Equal in every field.
    Full,
    /// The same nodes at the same addresses and weights (what is served).
    Served,
}

fn served(a: &Answer) -> (&str, std::net::IpAddr, u32) {
    (&a.node_id, a.address, a.weight)
}

/// Compares the runs of answers (`Answers`) of two reports, each pair of
/// runs once: after a recompute, every domain holding a region's answers
/// holds the same run, so a thousand domains over a hundred regions are a
/// hundred comparisons, not a hundred thousand.
#[derive(Default)]
struct RunComparison {
    /// (before, after) by address → (equal in full, served alike).
    seen: HashMap<(*const (), *const ()), (bool, bool)>,
    /// (before, after) by address → what changed between them.
    changes: HashMap<(*const (), *const ()), Rc<RunChanges>>,
}

/// What changed from one list of answers to another: a note per answer
/// added (`+id=w`) or reweighted (`id a->b`), in the new list's order, and
/// the ids gone, sorted.
#[derive(Debug, Default)]
struct RunChanges {
    changed: Vec<String>,
    gone: Vec<Arc<str>>,
}

impl RunChanges {
    fn between<'a>(
        before: impl Iterator<Item = &'a Answer>,
        after: impl Iterator<Item = &'a Answer> + Clone,
    ) -> Self {
        let old: HashMap<&str, u32> = before.map(|a| (&*a.node_id, a.weight)).collect();
        let mut changed = Vec::new();
        for answer in after.clone() {
            match old.get(&*answer.node_id) {
                None => changed.push(format!("+{}={}", answer.node_id, answer.weight)),
                Some(weight) if *weight != answer.weight => {
                    changed.push(format!("{} {}->{}", answer.node_id, weight, answer.weight));
                }
                Some(_) => {}
            }
        }
        let new: HashSet<&str> = after.map(|a| &*a.node_id).collect();
        let mut gone: Vec<Arc<str>> = old
            .keys()
            .filter(|id| !new.contains(*id))
            .map(|&id| Arc::from(id))
            .collect();
        gone.sort_unstable();
        RunChanges { changed, gone }
    }
}

impl RunComparison {
    fn runs(&mut self, before: &Arc<[Answer]>, after: &Arc<[Answer]>) -> (bool, bool) {
        if Arc::ptr_eq(before, after) {
            return (true, true);
        }
        let key = (
            Arc::as_ptr(before).cast::<()>(),
            Arc::as_ptr(after).cast::<()>(),
        );
        *self.seen.entry(key).or_insert_with(|| {
            let full = before == after;
            (
                full,
                full || before.iter().map(served).eq(after.iter().map(served)),
            )
        })
    }

    fn alike(&mut self, before: &Arc<[Answer]>, after: &Arc<[Answer]>, how: Likeness) -> bool {
        let (full, served) = self.runs(before, after);
        match how {
            Likeness::Full => full,
            Likeness::Served => served,
        }
    }

    /// Whether two lists of answers are alike; run by run when they are
    /// made of as many runs, else answer by answer.
    fn same_answers(&mut self, before: &Answers, after: &Answers, how: Likeness) -> bool {
        if before.runs().len() == after.runs().len() {
            return before
                .runs()
                .iter()
                .zip(after.runs())
                .all(|(b, a)| self.alike(b, a, how));
        }
        match how {
            Likeness::Full => before == after,
            Likeness::Served => before.iter().map(served).eq(after.iter().map(served)),
        }
    }

    /// What changed from `before` to `after`: pair by pair of runs (at the
    /// same position, as many runs on both sides) not served alike, each
    /// pair worked out once; answer by answer when the runs do not pair.
    fn changes(&mut self, before: &Answers, after: &Answers) -> Vec<Rc<RunChanges>> {
        if before.runs().len() != after.runs().len() {
            return vec![Rc::new(RunChanges::between(before.iter(), after.iter()))];
        }
        let mut changes = Vec::new();
        for (b, a) in before.runs().iter().zip(after.runs()) {
            if self.alike(b, a, Likeness::Served) {
                continue;
            }
            let key = (Arc::as_ptr(b).cast::<()>(), Arc::as_ptr(a).cast::<()>());
            let pair = self
                .changes
                .entry(key)
                .or_insert_with(|| Rc::new(RunChanges::between(b.iter(), a.iter())));
            changes.push(Rc::clone(pair));
        }
        changes
    }
}

/// Answer changes a summary names one by one; the rest are counted.
const SUMMARY_CHANGES: usize = 8;

/// One line on a domain's new answers: its mode, every region's effective
/// weight, how many answers it has, and what changed since `before` — at
/// most [`SUMMARY_CHANGES`] answers named, the rest counted, so the line
/// (an audit entry and a change event) stays short however many nodes
/// answer.
fn summarize(
    before: Option<&DomainWeights>,
    w: &DomainWeights,
    runs: &mut RunComparison,
) -> String {
    let regions: Vec<String> = w
        .regions
        .iter()
        .map(|r| format!("{} {}", r.region, r.effective))
        .collect();
    // Runs of answers served alike hold no change; the others' changes
    // are worked out once per pair of runs, not once per domain.
    let empty = Answers::default();
    let before_answers = before.map_or(&empty, |b| &b.answers);
    let pairs = runs.changes(before_answers, &w.answers);
    let changed_count: usize = pairs.iter().map(|p| p.changed.len()).sum();
    let gone_count: usize = pairs.iter().map(|p| p.gone.len()).sum();
    let mut changes: Vec<String> = pairs
        .iter()
        .flat_map(|p| p.changed.iter().cloned())
        .take(SUMMARY_CHANGES)
        .collect();
    // The first ids gone, in order across every pair.
    let room = SUMMARY_CHANGES - changes.len();
    let mut gone: Vec<&Arc<str>> = pairs
        .iter()
        .flat_map(|p| p.gone.iter().take(room))
        .collect();
    gone.sort_unstable();
    changes.extend(gone.into_iter().take(room).map(|id| format!("-{id}")));
    let more = changed_count + gone_count - changes.len();
    if more > 0 {
        changes.push(format!("and {more} more"));
    }
    format!(
        "{} {}: regions [{}], {} answer{}{}",
        w.domain,
        w.mode.as_str(),
        regions.join(", "),
        w.answers.len(),
        if w.answers.len() == 1 { "" } else { "s" },
        if changes.is_empty() {
            String::new()
        } else {
            format!(" ({})", changes.join(", "))
        }
    )
}

/// Builds the world from the store after a (re)start: the last good
/// declarations and every known node, whose heartbeat clocks restart now.
pub fn restore(args: &LivenessDefaults, store: &Store, at: Timestamp) -> anyhow::Result<World> {
    let (commit, decl) = match store.load_declarations()? {
        Some((commit, decl)) => (Some(commit), decl),
        None => (None, Declarations::default()),
    };
    let mut nodes = NodeTable::default();
    let mut tokens = store.nodes().token_hashes()?;
    for record in store.nodes().list()? {
        let Some(token) = tokens.remove(&record.node.id) else {
            continue;
        };
        let liveness = Liveness::restored(record.node.status, at);
        nodes.insert(
            record.node.id.clone(),
            NodeEntry::new(record, token, liveness, args, &decl, at),
        );
    }
    let decl = Arc::new(decl);
    let epoch = format!(
        "{:x}",
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis())
    );
    // The report in force before the restart (same commit), else nothing.
    let (first_report, first_at) = match stored_report(store, REPORT_DOC, commit.as_ref()) {
        Some(stored) => (stored.report, stored.at),
        None => (WeightsReport::default(), at),
    };
    let first = PublishedView {
        id: String::new(),
        report: Arc::new(first_report),
        at: first_at,
        decl: Arc::clone(&decl),
        commit: commit.clone(),
    };
    let calm = stored_report(store, CALM_DOC, commit.as_ref()).map(|stored| {
        (
            Arc::new(stored.report),
            Arc::new(NodeSet::new(stored.nodes)),
        )
    });
    Ok(World {
        commit,
        decl,
        nodes,
        sync: SyncView::default(),
        calm,
        last_computed: None,
        decisions: BTreeMap::new(),
        decisions_at: None,
        views: PublishedViews::new(epoch, first),
        vantage: None,
        heard_as_of: None,
        peer_writers: None,
        samples: SampleRings::new(store.samples().spacing_ms()),
    })
}

/// The store document holding the weights report in force.
pub const REPORT_DOC: &str = "weights.report";
/// The store document holding the split-brain guard's calm snapshot.
pub const CALM_DOC: &str = "weights.calm";

/// The weights report in force as stored: a restart (or a new leader)
/// starts from it, so `last_known_good` answers and the split-brain guard
/// keep what they held.
/// Written packed (`R = PackedReport`: each shared run of answers once),
/// read back as a report; a document written flat (`R = WeightsReport`,
/// before 2026-12-07) still reads.
#[derive(Debug, Serialize, Deserialize)]
pub struct StoredReport<R = WeightsReport> {
    /// The commit whose declarations it was computed for: kept only while
    /// the same commit is in force.
    pub commit: Option<String>,
    pub at: Timestamp,
    pub report: R,
    /// The nodes computed on (the calm snapshot's); empty for the report.
    #[serde(default)]
    pub nodes: Vec<Arc<Node>>,
}

/// A stored document `key` computed for `commit`, if readable.
fn stored_report(store: &Store, key: &str, commit: Option<&String>) -> Option<StoredReport> {
    let (doc, _) = store.docs().get(key).ok()??;
    let stored = read_stored_report(&doc).map_err(|err| {
        tracing::warn!(document = key, error = %err, "ignoring an unreadable stored weights document");
    });
    stored
        .ok()
        .filter(|stored| stored.commit.as_ref() == commit)
}

/// A stored report document, packed or (written before packing) flat.
fn read_stored_report(doc: &str) -> Result<StoredReport, String> {
    let packed_error = match serde_json::from_str::<StoredReport<PackedReport>>(doc) {
        Ok(stored) => {
            let report = stored.report.unpack().map_err(|err| err.to_string())?;
            return Ok(StoredReport {
                commit: stored.commit,
                at: stored.at,
                report,
                nodes: stored.nodes,
            });
        }
        Err(err) => err,
    };
    serde_json::from_str::<StoredReport>(doc).map_err(|_| packed_error.to_string())
}

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

    fn weights(answers: &[(&str, u32)]) -> DomainWeights {
        use neutral_core::model::{DnsBackendKind, RecordType, RegionHealth};
        use neutral_core::weights::{Answer, AnswerMode, RegionWeight};
        let text = |t: &str| -> Arc<str> { Arc::from(t) };
        DomainWeights {
            domain: "app.example.com".into(),
            zone: "example.com".into(),
            record_type: RecordType::A,
            ttl: 30,
            dns: DnsBackendKind::Embedded,
            mode: AnswerMode::Normal,
            regions: vec![RegionWeight {
                region: text("jp"),
                health: RegionHealth::Up,
                base: 100,
                ready: 1,
                expected: 1,
                effective: 100,
                reason: text(""),
            }],
            answers: answers
                .iter()
                .enumerate()
                .map(|(i, (id, weight))| Answer {
                    node_id: text(id),
                    region: text("jp"),
                    address: std::net::IpAddr::from(std::net::Ipv4Addr::from(
                        0x0a00_0000 + u32::try_from(i).unwrap(),
                    )),
                    weight: *weight,
                    reason: text(""),
                })
                .collect(),
            reasons: Vec::new(),
        }
    }

    #[test]
    fn runs_compared_once_tell_what_changed_and_what_did_not() {
        let run = |answers: &[(&str, u32)]| -> Arc<[neutral_core::weights::Answer]> {
            weights(answers).answers.to_vec().into()
        };
        let (jp, us, us_changed) = (
            run(&[("jp-1", 50), ("jp-2", 50)]),
            run(&[("us-1", 100)]),
            run(&[("us-1", 60), ("us-2", 40)]),
        );
        let with = |runs: Vec<Arc<[neutral_core::weights::Answer]>>| DomainWeights {
            answers: Answers::from_runs(runs),
            ..weights(&[])
        };
        let before = with(vec![Arc::clone(&jp), Arc::clone(&us)]);
        let after = with(vec![Arc::clone(&jp), Arc::clone(&us_changed)]);
        // A copy of `us` made apart reads the same as `us`.
        let again = with(vec![Arc::clone(&jp), us.to_vec().into()]);
        let mut runs = RunComparison::default();
        assert!(differs(&before, &after, &mut runs));
        assert!(!differs(&before, &again, &mut runs));
        assert!(same_domain(&before, &again, &mut runs));
        assert!(!same_domain(&before, &after, &mut runs));
        // Only the run that changed is summarized; jp's nodes are not named.
        let line = summarize(Some(&before), &after, &mut runs);
        assert!(
            line.contains("us-1 100->60") && line.contains("+us-2=40"),
            "{line}"
        );
        assert!(!line.contains("jp-"), "{line}");
        // Each pair of runs was compared once: (us, us_changed), (us, again's).
        assert_eq!(runs.seen.len(), 2);
        // A second domain holding the same runs reads the same changes,
        // worked out once.
        assert_eq!(summarize(Some(&before), &after, &mut runs), line);
        assert_eq!(runs.changes.len(), 1);
    }

    #[test]
    fn a_stored_report_reads_back_packed_or_flat() {
        let report = WeightsReport {
            split_brain: None,
            domains: [(
                Arc::from("app.example.com"),
                Arc::new(weights(&[("n1", 60), ("n2", 40)])),
            )]
            .into(),
        };
        let stored = |report: serde_json::Value| {
            serde_json::json!({ "commit": "c1", "at": 5, "report": report }).to_string()
        };
        let packed = stored(serde_json::to_value(PackedReport::pack(&report)).unwrap());
        let flat = stored(serde_json::to_value(&report).unwrap());
        assert_ne!(packed, flat);
        for doc in [&packed, &flat] {
            let back = read_stored_report(doc).unwrap();
            assert_eq!(back.report, report);
            assert_eq!(
                (back.commit.as_deref(), back.at),
                (Some("c1"), Timestamp(5))
            );
        }
        let err = read_stored_report(&stored(serde_json::json!({ "domains": 3 }))).unwrap_err();
        assert!(err.contains("invalid type"), "{err}");
    }

    #[test]
    fn a_summary_names_a_few_changed_answers_and_counts_the_rest() {
        let before = weights(&[("n1", 100), ("n2", 100), ("n3", 100)]);
        let after = weights(&[("n1", 100), ("n2", 50), ("n4", 100)]);
        expect_test::expect![[
            r#"app.example.com normal: regions [jp 100], 3 answers (n2 100->50, +n4=100, -n3)"#
        ]]
        .assert_eq(&summarize(
            Some(&before),
            &after,
            &mut RunComparison::default(),
        ));
        expect_test::expect![[r#"app.example.com normal: regions [jp 100], 1 answer (+n1=100)"#]]
            .assert_eq(&summarize(
                None,
                &weights(&[("n1", 100)]),
                &mut RunComparison::default(),
            ));
        assert!(!differs(
            &after,
            &after.clone(),
            &mut RunComparison::default()
        ));
        assert!(differs(&before, &after, &mut RunComparison::default()));

        // 1,000 answers, all new: the line stays short.
        let ids: Vec<String> = (0..1000).map(|i| format!("node-{i:04}")).collect();
        let many: Vec<(&str, u32)> = ids.iter().map(|id| (id.as_str(), 10)).collect();
        let line = summarize(None, &weights(&many), &mut RunComparison::default());
        assert!(line.len() < 300, "{line}");
        assert!(line.ends_with("1000 answers (+node-0000=10, +node-0001=10, +node-0002=10, +node-0003=10, +node-0004=10, +node-0005=10, +node-0006=10, +node-0007=10, and 992 more)"), "{line}");
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
        // Room made ahead of a publish: the oldest comes out, to drop later.
        let retired = views.make_room().map(|v| v.id);
        assert_eq!(retired.as_deref(), Some("e-2"));
        assert!(views.make_room().is_none(), "room enough");
        assert_eq!(views.latest().id, format!("e-{}", PublishedViews::KEEP + 1));
    }

    fn world_with_one_node(live: usize, others: &[(&str, bool)]) -> World {
        let at = Timestamp(1_000);
        let record = NodeRecord {
            node: Node {
                id: "n1".into(),
                region: "jp".into(),
                address: "192.0.2.1".parse().unwrap(),
                status: NodeStatus::Up,
                status_since: at,
                mode: neutral_core::model::NodeMode::ContainerdOnly,
                last_heartbeat: Some(at),
                metrics: None,
            },
            status_reason: String::new(),
            registered_at: at,
            metrics_at: None,
            hostname: None,
            agent_version: None,
        };
        let defaults = LivenessDefaults {
            heartbeat_timeout: Duration::from_secs(30),
            probes: true,
        };
        let mut liveness = Liveness::restored(NodeStatus::Up, at);
        liveness.ready = true;
        let entry = NodeEntry::new(
            record,
            TokenHash::of("t"),
            liveness,
            &defaults,
            &Declarations::default(),
            at,
        );
        let others = verdicts_of(others);
        World {
            commit: None,
            decl: Arc::new(Declarations::default()),
            nodes: NodeTable::from_iter([("n1".to_owned(), entry)]),
            sync: SyncView::default(),
            calm: None,
            last_computed: None,
            decisions: BTreeMap::new(),
            decisions_at: None,
            views: PublishedViews::new("e".into(), view(1)),
            samples: SampleRings::new(1_000),
            heard_as_of: None,
            peer_writers: None,
            vantage: Some(Vantage {
                replica: "me".into(),
                live,
                others: BTreeMap::from([("n1".to_owned(), others)]),
            }),
        }
    }

    /// This replica's own probes fail `fall` times in a row.
    fn fail_own_probes(world: &mut World, at: Timestamp) {
        let mut entry = world.nodes.get_mut("n1").unwrap();
        let entry = &mut *entry;
        for _ in 0..entry.settings.fall.max(3) {
            entry
                .liveness
                .probe(at, false, "timed out", &entry.settings);
        }
    }

    #[test]
    fn with_replicas_silence_is_judged_up_to_what_this_replica_has_read_of_the_others() {
        // The node's last known heartbeat (1 s) is 39 s old at 40 s, past
        // the 30 s timeout; but this replica has read the heartbeats the
        // others stored only up to 20 s, so it does not know of a silence.
        let now = Timestamp(40_000);
        let mut world = world_with_one_node(3, &[("b", false), ("c", true)]);
        world.heard_as_of = Some(Timestamp(20_000));
        assert_eq!(world.judged_at(now), Timestamp(20_000));
        assert!(world.own_verdicts(now)["n1"].0, "fresh as far as it read");
        assert!(world.reconcile(now, true).is_empty(), "2 of 3 still up");
        // Read up to 35 s: 34 s of silence, its vote turns, and with b's
        // the node is down (status since now, not since the read).
        world.heard_as_of = Some(Timestamp(35_000));
        assert!(!world.own_verdicts(now)["n1"].0);
        let updates = world.reconcile(now, true);
        assert_eq!(updates.len(), 1, "{updates:?}");
        assert_eq!(updates[0].status, NodeStatus::Down);
        assert_eq!(updates[0].at, now);
        assert!(
            updates[0].reason.contains("no heartbeat for 34s"),
            "{}",
            updates[0].reason
        );
        // A read ahead of now judges up to now.
        world.heard_as_of = Some(Timestamp(50_000));
        assert_eq!(world.judged_at(now), now);
        // Alone (no other live replica) every heartbeat comes to it: up to
        // now, whatever it read.
        let mut alone = world_with_one_node(1, &[]);
        alone.heard_as_of = Some(Timestamp(20_000));
        assert_eq!(alone.reconcile(now, true)[0].status, NodeStatus::Down);
    }

    /// Other replicas seen live at 39.5 s, the furthest behind having
    /// stored through `ms`, held back at most 15 s.
    fn peers_stored_through(ms: i64) -> PeerWriters {
        PeerWriters {
            stored_through: Timestamp(ms),
            least_behind: Timestamp(38_000),
            hold_at_most: Duration::from_secs(15),
            seen_at: Timestamp(39_500),
        }
    }

    #[test]
    fn silence_is_judged_only_up_to_where_the_other_replicas_had_stored_held_back_at_most_a_bound()
    {
        // Timeout 30 s; last heartbeat 1 s. Read up to 39 s: 38 s of
        // silence as far as this replica read, so down on its own.
        let now = Timestamp(40_000);
        let mut unaware = world_with_one_node(3, &[("b", false), ("c", true)]);
        unaware.heard_as_of = Some(Timestamp(39_000));
        assert!(!unaware.own_verdicts(now)["n1"].0);
        // But another replica's writer had stored only what it received
        // before 28 s when that read began: a heartbeat received after may
        // not be in it, so silence is judged up to 28 s (27 s, not past
        // the timeout).
        let mut world = world_with_one_node(3, &[("b", false), ("c", true)]);
        world.heard_as_of = Some(Timestamp(39_000));
        world.peer_writers = Some(peers_stored_through(28_000));
        assert_eq!(world.judged_at(now), Timestamp(28_000));
        assert!(world.own_verdicts(now)["n1"].0);
        assert!(world.reconcile(now, true).is_empty(), "2 of 3 still up");
        // A writer far behind holds judgement back by at most the bound
        // (15 s here): up to 25 s, so the 24 s of silence is not judged yet,
        // and at 47 s (judged up to 32 s) it is.
        world.peer_writers = Some(peers_stored_through(2_000));
        assert_eq!(world.judged_at(now), Timestamp(25_000));
        assert!(world.own_verdicts(now)["n1"].0);
        world.heard_as_of = Some(Timestamp(46_000));
        assert_eq!(world.judged_at(Timestamp(47_000)), Timestamp(32_000));
        assert!(!world.own_verdicts(Timestamp(47_000))["n1"].0);
        // Alone, but another replica was live 7.5 s ago (within the bound):
        // it may have taken heartbeats not read yet, so the same holds.
        let mut alone = world_with_one_node(1, &[]);
        alone.peer_writers = world.peer_writers;
        alone.heard_as_of = world.heard_as_of;
        assert_eq!(alone.judged_at(Timestamp(47_000)), Timestamp(32_000));
        // None seen for longer than the bound: every heartbeat comes here.
        assert_eq!(alone.judged_at(Timestamp(55_000)), Timestamp(55_000));
        alone.peer_writers = None;
        assert_eq!(alone.judged_at(now), now);
    }

    #[test]
    fn a_node_the_quorum_never_published_up_does_not_count_as_gone_down_for_the_guard() {
        // Just registered: down since its registration, never up.
        let mut world = world_with_one_node(3, &[("b", false), ("c", false)]);
        {
            let mut entry = world.nodes.get_mut("n1").unwrap();
            let entry = &mut *entry;
            entry.record.node.status = NodeStatus::Down;
            entry.liveness = Liveness::registered(Timestamp(1_000));
            entry.ever_up = false;
            for at in [2_000, 3_000, 4_000] {
                entry.liveness.heartbeat(Timestamp(at), &entry.settings);
            }
            assert!(entry.liveness.ready, "this replica's own view rose");
        }
        world.heard_as_of = Some(Timestamp(5_000));
        // The others have not seen it rise: 2 of 3 down, it stays down,
        // and for the split-brain guard it never went down.
        assert!(world.reconcile(Timestamp(5_000), true).is_empty());
        assert_eq!(
            world.nodes_for_engine()[0].status_since,
            Timestamp::SINCE_FOREVER
        );
        // Published up, then down: now it went down, at that moment.
        world_verdicts(&mut world, &[("b", true), ("c", true)]);
        assert_eq!(
            world.reconcile(Timestamp(6_000), true)[0].status,
            NodeStatus::Up
        );
        world_verdicts(&mut world, &[("b", false), ("c", false)]);
        let down = world.reconcile(Timestamp(7_000), true);
        assert_eq!(down[0].status, NodeStatus::Down);
        assert_eq!(world.nodes_for_engine()[0].status_since, Timestamp(7_000));
    }

    /// The other replicas' verdicts `(replica, ready)`.
    fn verdicts_of(others: &[(&str, bool)]) -> Vec<Verdict> {
        others
            .iter()
            .map(|(replica, ready)| Verdict {
                replica: (*replica).to_owned(),
                ready: *ready,
                detail: format!("{replica} says {ready}"),
            })
            .collect()
    }

    /// Replaces the other replicas' verdicts on `n1`.
    fn world_verdicts(world: &mut World, others: &[(&str, bool)]) {
        let vantage = world.vantage.as_mut().unwrap();
        vantage.others.insert("n1".to_owned(), verdicts_of(others));
    }

    #[test]
    fn the_leader_counts_the_other_replicas_verdicts_and_a_follower_decides_nothing() {
        let at = Timestamp(2_000);
        // Two others see it up: this replica's failing probes are outvoted.
        let mut world = world_with_one_node(3, &[("b", true), ("c", true)]);
        fail_own_probes(&mut world, at);
        assert!(world.reconcile(at, true).is_empty());
        // One other agrees it is down: 2 of 3, down, naming both.
        let mut world = world_with_one_node(3, &[("b", false), ("c", true)]);
        fail_own_probes(&mut world, at);
        let updates = world.reconcile(at, true);
        assert_eq!(updates.len(), 1);
        assert_eq!(updates[0].status, NodeStatus::Down);
        assert!(
            updates[0]
                .reason
                .starts_with("down at 2 of 3 vantage points"),
            "{}",
            updates[0].reason
        );
        assert!(
            updates[0].reason.contains("b: b says false"),
            "{}",
            updates[0].reason
        );
        // A follower with the same views publishes nothing...
        let mut world = world_with_one_node(3, &[("b", false), ("c", true)]);
        fail_own_probes(&mut world, at);
        assert!(world.reconcile(at, false).is_empty());
        // ...but a drain asked of it.
        world.nodes.get_mut("n1").unwrap().liveness.drained = true;
        let updates = world.reconcile(at, false);
        assert_eq!(updates.len(), 1);
        assert_eq!(updates[0].status, NodeStatus::Drain);
        // Alone (no other live replica), its own probes decide.
        let mut world = world_with_one_node(1, &[]);
        fail_own_probes(&mut world, at);
        assert_eq!(world.reconcile(at, true)[0].status, NodeStatus::Down);
    }

    /// A copy of `world`'s first node under another id, region and address.
    fn add_node(world: &mut World, id: &str, region: &str, last_octet: u8) {
        let mut entry = world.nodes.values().next().unwrap().clone();
        entry.record.node.id = id.to_owned();
        entry.record.node.region = region.to_owned();
        entry.record.node.address = std::net::IpAddr::from([192, 0, 2, last_octet]);
        world.nodes.insert(id.to_owned(), entry);
    }

    #[test]
    fn a_recompute_reuses_every_node_whose_weighed_fields_did_not_change() {
        let mut world = world_with_one_node(1, &[]);
        add_node(&mut world, "n2", "jp", 2);
        add_node(&mut world, "n3", "kr", 3);
        let EngineRead {
            nodes: first,
            changes,
            moved,
        } = world.engine_nodes();
        assert_eq!(changes, None, "no recompute before");
        assert!(moved.is_empty());
        let first = Arc::new(first);
        assert_eq!(
            first.iter().map(|n| n.id.as_str()).collect::<Vec<_>>(),
            ["n1", "n2", "n3"]
        );
        assert!(first.iter().all(|n| n.last_heartbeat.is_none()));
        world.last_computed = Some((Timestamp(1_000), Arc::clone(&first)));
        let beat = |world: &mut World, at: i64| {
            world
                .nodes
                .get_mut("n1")
                .unwrap()
                .record
                .node
                .last_heartbeat = Some(Timestamp(at));
        };

        // A heartbeat (not weighed) and a status change (weighed); a node
        // registered and one deregistered.
        beat(&mut world, 5_000);
        {
            let mut n2 = world.nodes.get_mut("n2").unwrap();
            n2.record.node.status = NodeStatus::Drain;
            n2.record.node.status_since = Timestamp(5_000);
        }
        world.nodes.remove("n3");
        add_node(&mut world, "n0", "sg", 9);

        let EngineRead {
            nodes: second,
            changes,
            moved,
        } = world.engine_nodes();
        assert_eq!(
            moved
                .iter()
                .map(|m| (
                    m.before.as_ref().map(|n| n.id.as_str()),
                    m.after.as_ref().map(|n| n.id.as_str())
                ))
                .collect::<Vec<_>>(),
            [
                (None, Some("n0")),
                (Some("n2"), Some("n2")),
                (Some("n3"), None)
            ]
        );
        // Region by region (jp, sg), each by id.
        assert_eq!(
            second.iter().map(|n| n.id.as_str()).collect::<Vec<_>>(),
            ["n1", "n2", "n0"]
        );
        let (n1, n2) = (
            second.get("jp", "n1").unwrap(),
            second.get("jp", "n2").unwrap(),
        );
        assert!(
            Arc::ptr_eq(n1, first.get("jp", "n1").unwrap()),
            "n1 is reused"
        );
        assert!(
            !Arc::ptr_eq(n2, first.get("jp", "n2").unwrap()),
            "n2 is a fresh copy"
        );
        assert_eq!(n2.status, NodeStatus::Drain);
        assert_eq!(n2.status_since, Timestamp(5_000));
        // The recompute sees what the weights would: the regions of the
        // drained (jp), the deregistered (kr) and the registered (sg) node.
        let changes = changes.expect("changes since the first");
        assert_eq!(changes.previous_now, Timestamp(1_000));
        assert_eq!(
            changes,
            Changes::between(Timestamp(1_000), &listed(&first), &listed(&second))
        );
        assert_eq!(
            changes.regions,
            ["jp".to_owned(), "kr".to_owned(), "sg".to_owned()].into()
        );

        // A heartbeat alone is no change.
        world.last_computed = Some((Timestamp(2_000), Arc::new(second)));
        beat(&mut world, 6_000);
        let read = world.engine_nodes();
        assert_eq!(read.changes, Some(Changes::new(Timestamp(2_000))));
        assert!(read.moved.is_empty());

        // A node never ready is down since forever, for the engine.
        let mut n0 = world.nodes.get_mut("n0").unwrap();
        n0.record.node.status = NodeStatus::Down;
        n0.ever_up = false;
        drop(n0);
        let third = world.engine_nodes().nodes;
        assert_eq!(
            third.get("sg", "n0").unwrap().status_since,
            Timestamp::SINCE_FOREVER
        );
        assert_eq!(
            world.nodes_for_engine()[0].status_since,
            Timestamp::SINCE_FOREVER
        );
    }

    #[derive(Debug, Clone)]
    enum NodeOp {
        Register(u8, u8),
        Deregister(u8),
        Status(u8, u8, i64),
        Heartbeat(u8, i64),
        NeverReady(u8),
    }

    fn node_op() -> impl proptest::strategy::Strategy<Value = NodeOp> {
        use proptest::prelude::*;
        prop_oneof![
            (0u8..40, 0u8..3).prop_map(|(id, region)| NodeOp::Register(id, region)),
            (0u8..40).prop_map(NodeOp::Deregister),
            (0u8..40, 0u8..3, 0i64..50).prop_map(|(id, s, at)| NodeOp::Status(id, s, at)),
            (0u8..40, 0i64..50).prop_map(|(id, at)| NodeOp::Heartbeat(id, at)),
            (0u8..40).prop_map(NodeOp::NeverReady),
        ]
    }

    fn apply_node_op(world: &mut World, op: &NodeOp) {
        let id = |n: &u8| format!("n{n:02}");
        match op {
            NodeOp::Register(n, region) => {
                add_node(world, &id(n), ["jp", "sg", "kr"][usize::from(*region)], *n);
            }
            NodeOp::Deregister(n) => {
                world.nodes.remove(&id(n));
            }
            NodeOp::Status(n, status, at) => {
                if let Some(mut entry) = world.nodes.get_mut(&id(n)) {
                    entry.record.node.status =
                        [NodeStatus::Up, NodeStatus::Down, NodeStatus::Drain][usize::from(*status)];
                    entry.record.node.status_since = Timestamp(*at);
                    entry.ever_up |= *status == 0;
                }
            }
            NodeOp::Heartbeat(n, at) => {
                if let Some(mut entry) = world.nodes.get_mut(&id(n)) {
                    entry.record.node.last_heartbeat = Some(Timestamp(*at));
                }
            }
            NodeOp::NeverReady(n) => {
                if let Some(mut entry) = world.nodes.get_mut(&id(n)) {
                    entry.ever_up = false;
                }
            }
        }
    }

    fn moves(read: &EngineRead) -> Vec<(Option<Node>, Option<Node>)> {
        read.moved
            .iter()
            .map(|m| (m.before.as_deref().cloned(), m.after.as_deref().cloned()))
            .collect()
    }

    proptest::proptest! {
        /// Patching the last recompute's nodes with the ones the table noted
        /// as changed reads what merging every node would, and both are
        /// what the table holds now.
        #[test]
        fn patching_the_changed_nodes_reads_what_a_merge_of_every_node_does(
            rounds in proptest::collection::vec(proptest::collection::vec(node_op(), 0..8), 1..8)
        ) {
            let mut world = world_with_one_node(1, &[]);
            let first = world.engine_nodes();
            world.last_computed = Some((Timestamp(0), Arc::new(first.nodes)));
            for (round, ops) in rounds.iter().enumerate() {
                for op in ops {
                    apply_node_op(&mut world, op);
                }
                let (at, previous) = world.last_computed.clone().unwrap();
                let changed = world.nodes.take_changed();
                let patched = patch_engine_nodes(&world.nodes, at, &previous, &changed);
                let merged = merge_engine_nodes(&world.nodes, Some(at), &previous);
                // Region by region, each by id.
                let mut now: Vec<Node> = world.nodes.values().map(engine_view).collect();
                now.sort_by(|a, b| (&a.region, &a.id).cmp(&(&b.region, &b.id)));
                let read = |r: &EngineRead| r.nodes.iter().map(|n| Node::clone(n)).collect::<Vec<_>>();
                proptest::prop_assert_eq!(read(&patched), now.clone());
                proptest::prop_assert_eq!(read(&merged), now);
                proptest::prop_assert_eq!(&patched.changes, &merged.changes);
                let sorted = |mut moves: Vec<(Option<Node>, Option<Node>)>| {
                    moves.sort_by_key(|(before, after)| {
                        let id = |n: &Option<Node>| n.as_ref().map(|n| (n.id.clone(), n.region.clone()));
                        (id(before).or_else(|| id(after)), id(after))
                    });
                    moves
                };
                proptest::prop_assert_eq!(sorted(moves(&patched)), sorted(moves(&merged)));
                let at = Timestamp(i64::try_from(round).unwrap() + 100);
                world.last_computed = Some((at, Arc::new(patched.nodes)));
            }
        }
    }

    /// Regions jp, sg and kr and five domains over them, two failing over.
    fn three_region_declarations() -> Arc<Declarations> {
        use neutral_core::config::{FileContent, RepoFile, load};
        let file = |path: &str, text: &str| RepoFile {
            path: path.to_owned(),
            content: FileContent::Bytes(text.as_bytes().to_vec()),
        };
        let mut files = vec![
            file(
                "platform-config/regions/jp.yaml",
                "name: jp\nprovider: local\nmin_nodes: 1\nmax_nodes: 50\nfailover: [sg]\n",
            ),
            file(
                "platform-config/regions/sg.yaml",
                "name: sg\nprovider: local\nmin_nodes: 1\nmax_nodes: 50\nfailover: [jp]\n",
            ),
            file(
                "platform-config/regions/kr.yaml",
                "name: kr\nprovider: local\nmin_nodes: 1\nmax_nodes: 50\nbase_weight: 50\n",
            ),
        ];
        let served = [
            "{ jp: 100 }",
            "{ sg: 100 }",
            "{ kr: 100, jp: 20 }",
            "{ jp: 50, sg: 50, kr: 10 }",
            "{ kr: 100 }",
        ];
        for (i, regions) in served.iter().enumerate() {
            files.push(file(
                &format!("platform-config/gtm/d{i}.yaml"),
                &format!(
                    "domain: d{i}.example.com\nzone: example.com\nmin_ready_nodes: 1\nregions: {regions}\nall_down: {}\n",
                    if i % 2 == 0 { "last_known_good" } else { "fail_open" }
                ),
            ));
        }
        let loaded = load(&files);
        assert!(loaded.is_valid(), "{:?}", loaded.diagnostics);
        Arc::new(loaded.declarations)
    }

    proptest::proptest! {
        /// A recompute that knows which domains it made afresh compares
        /// only those with the report before: what it says changed, and
        /// whether it publishes, are what comparing every domain says.
        #[test]
        fn comparing_only_the_fresh_domains_finds_what_comparing_all_does(
            rounds in proptest::collection::vec(proptest::collection::vec(node_op(), 0..8), 1..10)
        ) {
            let mut world = world_with_one_node(1, &[]);
            world.decl = three_region_declarations();
            let settings = WeightSettings::default();
            drop(recompute(&mut world, 2_000));
            for (round, ops) in rounds.iter().enumerate() {
                for op in ops {
                    apply_node_op(&mut world, op);
                }
                let at = Timestamp(3_000 + 1_000 * i64::try_from(round).unwrap());
                let inputs = world.recompute_inputs();
                let full = RecomputeInputs {
                    decl: Arc::clone(&inputs.decl),
                    read: EngineRead {
                        nodes: inputs.read.nodes.clone(),
                        changes: None,
                        moved: inputs.read.moved.clone(),
                    },
                    previous_nodes: inputs.previous_nodes.clone(),
                    previous: Arc::clone(&inputs.previous),
                    previous_decl: Arc::clone(&inputs.previous_decl),
                    calm: inputs.calm.clone(),
                }
                .compute(at, &settings);
                let fresh = inputs.compute(at, &settings);
                proptest::prop_assert_eq!(&fresh.changed, &full.changed);
                proptest::prop_assert_eq!(fresh.publish, full.publish);
                proptest::prop_assert_eq!(&*fresh.report, &*full.report);
                drop(world.publish(&fresh));
            }
        }
    }

    /// One recompute of `world` at `at`, taken in.
    fn recompute(world: &mut World, at: i64) -> Recomputed {
        let recomputed = world
            .recompute_inputs()
            .compute(Timestamp(at), &WeightSettings::default());
        drop(world.publish(&recomputed));
        recomputed
    }

    #[test]
    fn a_recompute_that_changes_nothing_keeps_the_report_and_nodes_it_had() {
        let mut world = world_with_one_node(1, &[]);
        let first = recompute(&mut world, 2_000);
        let second = recompute(&mut world, 3_000);
        assert!(Arc::ptr_eq(&first.nodes, &second.nodes), "same nodes");
        assert!(Arc::ptr_eq(&first.report, &second.report), "same report");
        assert!(second.changed.is_empty());
        // A node's status change is a new node set.
        world.nodes.get_mut("n1").unwrap().record.node.status = NodeStatus::Drain;
        let third = recompute(&mut world, 4_000);
        assert!(!Arc::ptr_eq(&second.nodes, &third.nodes), "new nodes");
        assert_eq!(
            third.nodes.get("jp", "n1").map(|n| n.status),
            Some(NodeStatus::Drain)
        );
        let (_, calm_nodes) = world.calm.as_ref().expect("calm");
        assert!(Arc::ptr_eq(calm_nodes, &third.nodes));
    }
}
