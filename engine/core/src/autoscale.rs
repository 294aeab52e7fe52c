//! Autoscale decisions per region.
//!
//! STUB: replaced by the autoscale implementation.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::model::{Declarations, MetricSample, Node, Timestamp};

/// A metric sample of one node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeSample {
    pub node_id: String,
    #[serde(flatten)]
    pub sample: MetricSample,
}

/// The last scaling action taken for a region.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastAction {
    pub at: Timestamp,
    pub from: u32,
    pub to: u32,
    /// Its commit is not yet applied or its nodes have not registered yet.
    pub in_flight: bool,
    /// Nodes added to this region to absorb a failed region's capacity and
    /// not yet released.
    #[serde(default)]
    pub failover_extra: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AutoscaleSettings {
    /// An in-flight action older than this no longer blocks new ones.
    pub in_flight_timeout: Duration,
}

impl Default for AutoscaleSettings {
    fn default() -> Self {
        AutoscaleSettings {
            in_flight_timeout: Duration::from_secs(600),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Action {
    None,
    ScaleOut {
        from: u32,
        to: u32,
    },
    ScaleIn {
        from: u32,
        to: u32,
        drain: Vec<String>,
    },
    Replace {
        nodes: Vec<String>,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub region: String,
    pub action: Action,
    pub reason: String,
    /// The figures behind the reason (metric values, thresholds, counts).
    pub numbers: BTreeMap<String, f64>,
    /// `failover_extra` after this action (see [`LastAction`]).
    pub failover_extra: u32,
}

/// Decisions for every declared region.
pub fn decide_all(
    decl: &Declarations,
    nodes: &[Node],
    samples: &[NodeSample],
    last_actions: &BTreeMap<String, LastAction>,
    now: Timestamp,
    settings: &AutoscaleSettings,
) -> BTreeMap<String, Decision> {
    let _ = (decl, nodes, samples, last_actions, now, settings);
    BTreeMap::new()
}
