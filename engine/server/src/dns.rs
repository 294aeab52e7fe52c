//! The bridge to the embedded DNS server: pushes node health into its data
//! plane the moment the control plane publishes a status, serializes zone
//! writes (read, patch, persist, serve), and exposes its metrics.

use std::fmt::Write as _;

use neutral_core::model::{Declarations, Node};
use neutral_dns::{DnsHandle, HealthView};

#[derive(Debug)]
pub struct DnsBridge {
    handle: DnsHandle,
    /// Held across read-patch-persist-serve so concurrent PATCHes of a zone
    /// cannot lose each other's changes.
    pub zone_writes: tokio::sync::Mutex<()>,
}

impl DnsBridge {
    pub fn new(handle: DnsHandle) -> Self {
        DnsBridge {
            handle,
            zone_writes: tokio::sync::Mutex::new(()),
        }
    }

    pub fn handle(&self) -> &DnsHandle {
        &self.handle
    }

    /// Node statuses and all-down policies, as the data plane applies them.
    pub fn set_health<N: std::borrow::Borrow<Node>>(&self, nodes: &[N], decl: &Declarations) {
        self.handle
            .set_health(HealthView::from_control_plane(nodes, decl));
    }

    pub fn render_metrics(&self, out: &mut String) {
        let _ = write!(out, "{}", self.handle.metrics().prometheus_text());
    }
}
