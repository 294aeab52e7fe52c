//! Effective DNS weights per domain, region and node.
//!
//! STUB: replaced by the weights implementation.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::model::{Declarations, DnsBackendKind, Node, RecordType, RegionHealth, Timestamp};

/// Knobs of the weight computation that are deployment settings, not
/// per-domain intent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WeightSettings {
    /// Trip the split-brain guard when more than this share of all nodes
    /// went down within `split_brain_window`.
    pub split_brain_share: f64,
    pub split_brain_window: Duration,
    /// The guard never trips with fewer nodes than this in total.
    pub split_brain_min_nodes: u32,
}

impl Default for WeightSettings {
    fn default() -> Self {
        WeightSettings {
            split_brain_share: 0.5,
            split_brain_window: Duration::from_secs(60),
            split_brain_min_nodes: 3,
        }
    }
}

/// How a domain's answers were chosen.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnswerMode {
    /// Effective weights from health.
    Normal,
    /// Every region was 0; serving every non-drained node at base weight.
    FailOpen,
    /// Every region was 0; serving the last answers that had weight.
    LastKnownGood,
    /// The split-brain guard tripped; serving the last answers.
    SplitBrainHold,
    /// Nothing to serve (no nodes and no earlier answers).
    Empty,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionWeight {
    pub region: String,
    pub health: RegionHealth,
    pub base: u32,
    pub ready: u32,
    pub expected: u32,
    pub effective: u32,
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    pub node_id: String,
    pub region: String,
    pub address: IpAddr,
    pub weight: u32,
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainWeights {
    pub domain: String,
    pub zone: String,
    pub record_type: RecordType,
    pub ttl: u32,
    pub dns: DnsBackendKind,
    pub mode: AnswerMode,
    pub regions: Vec<RegionWeight>,
    pub answers: Vec<Answer>,
    pub reasons: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SplitBrain {
    pub went_down: u32,
    pub total: u32,
    pub share: f64,
    pub message: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WeightsReport {
    pub split_brain: Option<SplitBrain>,
    /// Keyed by domain.
    pub domains: BTreeMap<String, DomainWeights>,
}

/// Effective weights of every declared domain.
pub fn compute(
    decl: &Declarations,
    nodes: &[Node],
    previous: &BTreeMap<String, DomainWeights>,
    now: Timestamp,
    settings: &WeightSettings,
) -> WeightsReport {
    let _ = (decl, nodes, previous, now, settings);
    WeightsReport::default()
}

/// A stable, readable rendering of a report.
pub fn compact(report: &WeightsReport) -> String {
    format!("{report:?}")
}
