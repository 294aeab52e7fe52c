//! A record's answers from live health: the control plane's own computation
//! when its GTM policy for the domain is the resource's, else the core's
//! [`weights::compute`] over the control plane's regions and nodes with the
//! resource's arguments as the policy.
//!
//! This module owns that choice and the shape of the result (answers,
//! effective weights per region, reasons). The weights are always the
//! core's; the only IO is the reads through [`ControlPlane`]. Reasons carry
//! no timestamps or commit ids, so an unchanged world plans no change.

use std::collections::BTreeMap;
use std::sync::Arc;

use neutral_core::model::{
    Declarations, DnsBackendKind, GtmPolicy, NodePoolDecl, Probe, RecordType, Region, Timestamp,
};
use neutral_core::weights::{self, AnswerMode, DomainWeights, WeightSettings};

use crate::client::ControlPlane;
use crate::records::{AnswerRow, Policy};

/// The resource arguments the answers depend on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordSpec {
    pub domain: String,
    pub zone: String,
    pub rtype: RecordType,
    pub ttl: u32,
    pub dns: DnsBackendKind,
    pub policy: Policy,
}

/// What a plan shows and an apply writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub mode: AnswerMode,
    pub answers: Vec<AnswerRow>,
    pub effective_weights: BTreeMap<String, u32>,
    pub reasons: Vec<String>,
}

/// The previous answers, for `last_known_good`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Previous {
    pub mode: AnswerMode,
    pub answers: Vec<AnswerRow>,
}

impl RecordSpec {
    fn as_policy(&self) -> GtmPolicy {
        GtmPolicy {
            name: self.domain.clone(),
            domain: self.domain.clone(),
            zone: self.zone.clone(),
            record_type: self.rtype,
            ttl: self.ttl,
            dns: self.dns,
            min_ready_nodes: self.policy.min_ready_nodes,
            regions: self.policy.regions.clone(),
            all_down: self.policy.all_down,
            probe: Probe::default(),
            slow_start: None,
            health: neutral_core::model::HealthPolicy::default(),
        }
    }

    /// Why the control plane's policy for the domain is not this record's,
    /// or `None` when the weights it computed apply here.
    pub fn differs_from(&self, declared: &GtmPolicy) -> Option<String> {
        let mut differences = Vec::new();
        if declared.zone != self.zone {
            differences.push(format!("zone {} ≠ {}", declared.zone, self.zone));
        }
        if declared.record_type != self.rtype {
            differences.push(format!(
                "type {} ≠ {}",
                declared.record_type.as_str(),
                self.rtype.as_str()
            ));
        }
        if declared.ttl != self.ttl {
            differences.push(format!("ttl {} ≠ {}", declared.ttl, self.ttl));
        }
        if declared.dns != self.dns {
            differences.push(format!(
                "dns {} ≠ {}",
                declared.dns.as_str(),
                self.dns.as_str()
            ));
        }
        if declared.min_ready_nodes != self.policy.min_ready_nodes {
            differences.push(format!(
                "min_ready_nodes {} ≠ {}",
                declared.min_ready_nodes, self.policy.min_ready_nodes
            ));
        }
        if declared.regions != self.policy.regions {
            differences.push("regions differ".to_owned());
        }
        if declared.all_down != self.policy.all_down {
            differences.push(format!(
                "all_down {} ≠ {}",
                declared.all_down.as_str(),
                self.policy.all_down.as_str()
            ));
        }
        (!differences.is_empty()).then(|| differences.join(", "))
    }
}

/// The outcome of the core's report for one domain, with `source` (where
/// the weights came from) as the first reason.
pub fn outcome(weights: &DomainWeights, source: String, split_brain: Option<&str>) -> Outcome {
    let mut reasons = vec![source];
    if let Some(message) = split_brain {
        reasons.push(message.to_owned());
    }
    reasons.extend(weights.regions.iter().map(|r| r.reason.to_string()));
    reasons.extend(weights.reasons.iter().cloned());
    reasons.extend(weights.answers.iter().map(|a| {
        format!(
            "answer {} {} weight {}: {}",
            a.node_id, a.address, a.weight, a.reason
        )
    }));
    Outcome {
        mode: weights.mode,
        answers: weights
            .answers
            .iter()
            .map(|a| AnswerRow {
                node: a.node_id.to_string(),
                region: a.region.to_string(),
                address: a.address,
                weight: a.weight,
            })
            .collect(),
        effective_weights: weights
            .regions
            .iter()
            .map(|r| (r.region.to_string(), r.effective))
            .collect(),
        reasons,
    }
}

/// The answers for `spec` from the control plane's live health, at `now`.
pub async fn compute(
    control_plane: &ControlPlane,
    spec: &RecordSpec,
    previous: Option<&Previous>,
    now: Timestamp,
) -> Result<Outcome, String> {
    let context = |e: crate::client::ClientError| {
        format!("cannot read live health from the control plane: {e}")
    };
    let view = control_plane.domain(&spec.domain).await.map_err(context)?;
    let why_local = match &view {
        None => "the control plane declares no GTM policy for this domain".to_owned(),
        Some(view) => match &view.policy {
            None => "the control plane does not say which policy it computed for".to_owned(),
            Some(declared) => match spec.differs_from(declared) {
                Some(difference) => {
                    format!("the control plane's policy differs from this resource ({difference})")
                }
                None => {
                    return Ok(outcome(
                        &view.weights,
                        "weights computed by the control plane for the same policy".to_owned(),
                        view.split_brain.as_deref(),
                    ));
                }
            },
        },
    };

    let regions = control_plane.regions().await.map_err(context)?;
    let node_views = control_plane.nodes().await.map_err(context)?;
    let mut decl = Declarations::default();
    for region in &regions {
        decl.regions.insert(
            region.name.clone(),
            Region {
                name: region.name.clone(),
                provider: region.provider,
                min_nodes: region.min_nodes,
                max_nodes: region.max_nodes,
                base_weight: region.base_weight,
                state: region.state,
                failover: region.failover.clone(),
            },
        );
        decl.node_pools.insert(
            region.name.clone(),
            NodePoolDecl {
                region: region.name.clone(),
                desired_nodes: region.desired_nodes,
            },
        );
    }
    decl.gtm.insert(spec.domain.clone(), spec.as_policy());
    let nodes: Vec<_> = node_views
        .iter()
        .filter_map(crate::client::NodeView::to_node)
        .collect();
    let skipped = node_views.len() - nodes.len();

    let mut previous_report = BTreeMap::new();
    if let Some(previous) = previous {
        previous_report.insert(
            std::sync::Arc::from(spec.domain.as_str()),
            std::sync::Arc::new(previous_weights(spec, previous)),
        );
    }
    let report = weights::compute(
        &decl,
        &nodes,
        &previous_report,
        now,
        &WeightSettings::default(),
    );
    let Some(weights) = report.domains.get(spec.domain.as_str()) else {
        return Err(format!("the core computed no answers for {}", spec.domain));
    };
    let mut result = outcome(
        weights,
        format!("weights computed by the provider from live node health: {why_local}"),
        report.split_brain.as_ref().map(|g| g.message.as_str()),
    );
    if skipped > 0 {
        result.reasons.push(format!(
            "{skipped} node(s) from the control plane had an unreadable address or time and were left out"
        ));
    }
    Ok(result)
}

/// The previous answers as the core's report entry.
fn previous_weights(spec: &RecordSpec, previous: &Previous) -> DomainWeights {
    let reason: Arc<str> = Arc::from("kept from the previous apply");
    DomainWeights {
        domain: spec.domain.clone(),
        zone: spec.zone.clone(),
        record_type: spec.rtype,
        ttl: spec.ttl,
        dns: spec.dns,
        mode: previous.mode,
        regions: Vec::new(),
        answers: previous
            .answers
            .iter()
            .map(|a| weights::Answer {
                node_id: Arc::from(a.node.as_str()),
                region: Arc::from(a.region.as_str()),
                address: a.address,
                weight: a.weight,
                reason: Arc::clone(&reason),
            })
            .collect(),
        reasons: Vec::new(),
    }
}

/// Parses an answer mode's name.
pub fn parse_mode(text: &str) -> Option<AnswerMode> {
    [
        AnswerMode::Normal,
        AnswerMode::FailOpen,
        AnswerMode::LastKnownGood,
        AnswerMode::SplitBrainHold,
        AnswerMode::Empty,
    ]
    .into_iter()
    .find(|m| m.as_str() == text)
}

#[cfg(test)]
mod tests {
    use neutral_core::model::AllDownPolicy;

    use super::*;

    fn spec() -> RecordSpec {
        RecordSpec {
            domain: "app.example.com".into(),
            zone: "example.com".into(),
            rtype: RecordType::A,
            ttl: 30,
            dns: DnsBackendKind::Embedded,
            policy: Policy {
                all_down: AllDownPolicy::FailOpen,
                min_ready_nodes: 1,
                regions: [("jp".to_owned(), 100)].into(),
            },
        }
    }

    #[test]
    fn the_same_policy_lets_the_control_planes_weights_apply() {
        let declared = spec().as_policy();
        assert_eq!(spec().differs_from(&declared), None);
        let mut other = declared.clone();
        other.ttl = 60;
        other.min_ready_nodes = 2;
        assert_eq!(
            spec().differs_from(&other).as_deref(),
            Some("ttl 60 ≠ 30, min_ready_nodes 2 ≠ 1")
        );
    }

    #[test]
    fn mode_names_round_trip() {
        for mode in [
            AnswerMode::Normal,
            AnswerMode::SplitBrainHold,
            AnswerMode::Empty,
        ] {
            assert_eq!(parse_mode(mode.as_str()), Some(mode));
        }
        assert_eq!(parse_mode("bogus"), None);
    }
}
