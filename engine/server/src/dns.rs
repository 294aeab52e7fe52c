//! The bridge to the embedded DNS server: pushes node health into its data
//! plane the moment the control plane publishes a status, serializes zone
//! writes (read, patch, persist, serve), and exposes its metrics.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex, PoisonError};

use neutral_core::model::{Declarations, Node};
use neutral_dns::{DnsHandle, HealthMove, HealthView};

use crate::world::{DataPlaneHealth, EngineNodes, NodeMove};

#[derive(Debug)]
pub struct DnsBridge {
    handle: DnsHandle,
    /// Held across read-patch-persist-serve so concurrent PATCHes of a zone
    /// cannot lose each other's changes.
    pub zone_writes: tokio::sync::Mutex<()>,
    /// The node list and declarations whose health the data plane serves:
    /// a recompute that moved a few nodes from exactly that list moves
    /// only them (`DnsHandle::move_health`).
    pushed: Mutex<Option<(EngineNodes, Arc<Declarations>)>>,
}

impl DnsBridge {
    pub fn new(handle: DnsHandle) -> Self {
        DnsBridge {
            handle,
            zone_writes: tokio::sync::Mutex::new(()),
            pushed: Mutex::new(None),
        }
    }

    pub fn handle(&self) -> &DnsHandle {
        &self.handle
    }

    /// Node statuses and all-down policies, as the data plane applies them:
    /// the nodes that moved, when the data plane serves the list they moved
    /// from under the same declarations, else the whole list.
    pub fn set_health(&self, health: &DataPlaneHealth<'_>, decl: &Arc<Declarations>) {
        let mut pushed = self.pushed.lock().unwrap_or_else(PoisonError::into_inner);
        let moved_from_pushed = match (&*pushed, health.since) {
            (Some((nodes, pushed_decl)), Some((since, moved))) => {
                (Arc::ptr_eq(nodes, since) && Arc::ptr_eq(pushed_decl, decl)).then_some(moved)
            }
            _ => None,
        };
        let moved =
            moved_from_pushed.is_some_and(|moved| self.handle.move_health(&health_moves(moved)));
        if !moved {
            self.handle.set_health(HealthView::from_control_plane(
                health.nodes.iter().map(|node| &**node),
                decl,
            ));
        }
        *pushed = Some((Arc::clone(health.nodes), Arc::clone(decl)));
    }

    pub fn render_metrics(&self, out: &mut String) {
        let _ = write!(out, "{}", self.handle.metrics().prometheus_text());
    }
}

/// The data plane's view of node moves: only address and status count.
fn health_moves(moved: &[NodeMove]) -> Vec<HealthMove> {
    let place = |node: &Option<Arc<Node>>| node.as_ref().map(|node| (node.address, node.status));
    moved
        .iter()
        .map(|node| HealthMove {
            leaving: place(&node.before),
            joining: place(&node.after),
        })
        .filter(|change| change.leaving != change.joining)
        .collect()
}
