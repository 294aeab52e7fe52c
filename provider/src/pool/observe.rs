//! Observing a pool: which node holds each slot now (from the control
//! plane's nodes and, for the local launcher, the agents' processes), and
//! what the state records of it. Reads only.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path as FsPath;

use neutral_core::model::Timestamp;
use neutral_core::pool::{self, Launch, ObservedNode, SlotStatus};

use crate::client::{ControlPlane, NodeView, parse_time};
use crate::framework::{Diags, Path, Value};
use crate::launcher::SlotDir;

use super::schema::STARTING_GRACE;
pub(super) use super::schema::strings_of;

// ---- observing the slots ----

/// A slot as it is now.
#[derive(Clone, Debug)]
pub(super) struct SlotView {
    pub(super) key: String,
    pub(super) node: Option<NodeView>,
    pub(super) status: SlotStatus,
}

impl SlotView {
    pub(super) fn node_id(&self) -> Option<&str> {
        self.node.as_ref().map(|n| n.id.as_str())
    }

    pub(super) fn value(&self) -> Value {
        let mut item = Value::Map(BTreeMap::new());
        item.set("slot", self.key.clone().into());
        item.set("node_id", self.node_id().map(str::to_owned).into());
        item.set(
            "address",
            self.node.as_ref().map(|n| n.address.clone()).into(),
        );
        item.set("status", self.status.as_str().into());
        item
    }
}

/// How the slots are observed: which launcher runs them and where its
/// files are.
#[derive(Clone, Debug)]
pub(super) struct Observer<'a> {
    pub(super) region: &'a str,
    /// `Some` for the local launcher.
    pub(super) state_dir: Option<&'a FsPath>,
}

impl Observer<'_> {
    pub(super) fn of(state: &Value) -> Option<Observer<'_>> {
        let local = matches!(state.get("launcher").as_str(), Some("local" | "docker"));
        Some(Observer {
            region: state.get("region").as_str()?,
            state_dir: state
                .get("state_dir")
                .as_str()
                .filter(|_| local)
                .map(FsPath::new),
        })
    }

    /// Each slot's node and status. A slot's node is, in order: the id in
    /// its agent's state file (local), the id the state recorded while that
    /// node is still registered, the node registered with the slot key as
    /// its hostname, and (external) any unclaimed node of the region, oldest
    /// first.
    pub(super) fn observe(
        &self,
        slots: &[String],
        recorded: &BTreeMap<String, String>,
        live: &[NodeView],
        at: Timestamp,
    ) -> Vec<SlotView> {
        let by_id: BTreeMap<&str, &NodeView> = live.iter().map(|n| (n.id.as_str(), n)).collect();
        let region_nodes: Vec<&NodeView> =
            live.iter().filter(|n| n.region == self.region).collect();
        let mut ids: Vec<Option<String>> = slots
            .iter()
            .map(|slot| {
                let from_file = self
                    .state_dir
                    .and_then(|dir| SlotDir::new(dir, slot).node_id());
                let from_state = recorded
                    .get(slot)
                    .filter(|id| by_id.contains_key(id.as_str()))
                    .cloned();
                let by_hostname = region_nodes
                    .iter()
                    .find(|n| n.hostname.as_deref() == Some(slot.as_str()))
                    .map(|n| n.id.clone());
                from_file.or(from_state).or(by_hostname)
            })
            .collect();
        if self.state_dir.is_none() {
            let claimed: BTreeSet<String> = ids.iter().flatten().cloned().collect();
            // Nodes that name no slot of the region (a node naming another
            // slot belongs to that slot, even one no longer in the pool).
            let mut unclaimed: Vec<&&NodeView> = region_nodes
                .iter()
                .filter(|n| !claimed.contains(&n.id))
                .filter(|n| {
                    n.hostname
                        .as_deref()
                        .is_none_or(|h| pool::slot_index(self.region, h).is_none())
                })
                .collect();
            unclaimed.sort_by(|a, b| {
                a.registered_at
                    .cmp(&b.registered_at)
                    .then_with(|| a.id.cmp(&b.id))
            });
            let mut spare = unclaimed.into_iter();
            for id in ids.iter_mut().filter(|id| id.is_none()) {
                match spare.next() {
                    Some(node) => *id = Some(node.id.clone()),
                    None => break,
                }
            }
        }
        slots
            .iter()
            .zip(ids)
            .map(|(slot, id)| {
                let node = id.and_then(|id| by_id.get(id.as_str()).map(|n| (*n).clone()));
                let observed = node.as_ref().and_then(|n| {
                    Some(ObservedNode {
                        status: n.status,
                        status_since: parse_time(&n.status_since)?,
                        registered_at: n.registered_at.as_deref().and_then(parse_time),
                    })
                });
                let launch = match self.state_dir {
                    Some(dir) => {
                        let slot_dir = SlotDir::new(dir, slot);
                        Launch::Local {
                            running: slot_dir.running(),
                            started_at: slot_dir.started_at(),
                        }
                    }
                    None => Launch::External,
                };
                SlotView {
                    key: slot.clone(),
                    status: pool::slot_status(observed.as_ref(), launch, at, STARTING_GRACE),
                    node,
                }
            })
            .collect()
    }
}

/// `slot → node id` from a state's `nodes`.
pub(super) fn recorded_ids(state: &Value) -> BTreeMap<String, String> {
    state
        .get("nodes")
        .as_list()
        .unwrap_or_default()
        .iter()
        .filter_map(|item| {
            Some((
                item.get("slot").as_str()?.to_owned(),
                item.get("node_id").as_str()?.to_owned(),
            ))
        })
        .collect()
}

pub(super) fn strings(items: &[String]) -> Value {
    Value::List(items.iter().map(|s| Value::string(s.as_str())).collect())
}

pub(super) fn set_observed(state: &mut Value, views: &[SlotView]) {
    state.set(
        "nodes",
        Value::List(views.iter().map(SlotView::value).collect()),
    );
    let ready = views.iter().filter(|v| v.status == SlotStatus::Up).count();
    state.set(
        "ready_count",
        Value::Int(i64::try_from(ready).unwrap_or(i64::MAX)),
    );
}

pub(super) fn sort_slots(region: &str, slots: &mut [String]) {
    slots.sort_by_key(|key| (pool::slot_index(region, key).unwrap_or(0), key.clone()));
}

/// The control plane's nodes, or an error at the root.
pub(super) async fn live(control_plane: &ControlPlane, diags: &mut Diags) -> Option<Vec<NodeView>> {
    match control_plane.nodes().await {
        Ok(nodes) => Some(nodes),
        Err(err) => {
            diags.error(
                Path::root(),
                "cannot read the nodes from the control plane",
                err.to_string(),
            );
            None
        }
    }
}
