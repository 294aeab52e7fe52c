//! Data sources: `neutral_region` (a region's computed state, ready and
//! desired node counts) and `neutral_domain` (the control plane's effective
//! weights and answers for a domain), read from the control plane as is.

use std::collections::BTreeMap;

use async_trait::async_trait;

use crate::context::Configured;
use crate::framework::{Attribute, Block, Constraint, DataSourceImpl, Diags, Path, Type, Value};
use crate::live;

fn object() -> Value {
    Value::Map(BTreeMap::new())
}

fn read_error(diags: &mut Diags, what: &str, err: &impl std::fmt::Display) {
    diags.error(
        Path::root(),
        format!("cannot read {what} from the control plane"),
        err.to_string(),
    );
}

#[derive(Debug)]
pub struct RegionData {
    configured: Configured,
}

impl RegionData {
    pub fn new(configured: Configured) -> RegionData {
        RegionData { configured }
    }
}

pub fn region_schema() -> Block {
    use Constraint::{Computed, Required};
    let number = |name, text| Attribute::new(name, Type::Number, Computed, text);
    Block {
        description: "A region as the control plane sees it now: its computed state and node counts.",
        attributes: vec![
            Attribute::new(
                "name",
                Type::String,
                Required,
                "The region's name (`platform-config/regions/<name>.yaml`).",
            ),
            Attribute::new(
                "state",
                Type::String,
                Computed,
                "Computed state: `up` (ready ≥ desired), `degraded` (ready < desired but ≥ the minimum), or `down`.",
            ),
            Attribute::new(
                "reason",
                Type::String,
                Computed,
                "Why the region is in that state, with the numbers.",
            ),
            Attribute::new(
                "declared_state",
                Type::String,
                Computed,
                "The operator's declared state: `up` or `down`.",
            ),
            number("ready", "Nodes that are up."),
            number(
                "desired",
                "Nodes the region should run (`desired_nodes` of its node pool, else `min_nodes`).",
            ),
            number("draining", "Nodes being drained."),
            number("down", "Nodes that are down."),
            number("min_nodes", "Declared minimum node count."),
            number("max_nodes", "Declared maximum node count."),
            number("base_weight", "Declared base weight (0 to 1000)."),
            Attribute::new(
                "provider",
                Type::String,
                Computed,
                "Where the region's machines come from (`aws`, `edge`, `local`, …).",
            ),
            Attribute::new(
                "failover",
                Type::List(Box::new(Type::String)),
                Computed,
                "Regions that take over when this one is down.",
            ),
        ],
        blocks: Vec::new(),
    }
}

#[async_trait]
impl DataSourceImpl for RegionData {
    fn schema(&self) -> Block {
        region_schema()
    }

    fn validate(&self, config: &Value, diags: &mut Diags) {
        region_schema().reject_computed_in_config(config, diags);
    }

    async fn read(&self, config: &Value, diags: &mut Diags) -> Option<Value> {
        let name = config.get("name").as_str()?.to_owned();
        let clients = self.configured.get(diags)?;
        let regions = match clients.control_plane.regions().await {
            Ok(regions) => regions,
            Err(err) => {
                read_error(diags, "regions", &err);
                return None;
            }
        };
        let Some(region) = regions.into_iter().find(|r| r.name == name) else {
            diags.error(
                Path::attr("name"),
                "unknown region",
                format!("the control plane declares no region `{name}`"),
            );
            return None;
        };
        let mut state = object();
        state.set("name", name.into());
        state.set("state", region.health.as_str().into());
        state.set("reason", region.health_reason.into());
        state.set(
            "declared_state",
            match region.state {
                neutral_core::model::DeclaredRegionState::Up => "up",
                neutral_core::model::DeclaredRegionState::Down => "down",
            }
            .into(),
        );
        state.set("ready", region.ready.into());
        state.set("desired", region.desired_nodes.into());
        state.set("draining", region.draining.into());
        state.set("down", region.down.into());
        state.set("min_nodes", region.min_nodes.into());
        state.set("max_nodes", region.max_nodes.into());
        state.set("base_weight", region.base_weight.into());
        state.set("provider", region.provider.as_str().into());
        state.set(
            "failover",
            Value::List(region.failover.into_iter().map(Value::String).collect()),
        );
        Some(state)
    }
}

#[derive(Debug)]
pub struct DomainData {
    configured: Configured,
}

impl DomainData {
    pub fn new(configured: Configured) -> DomainData {
        DomainData { configured }
    }
}

pub fn domain_schema() -> Block {
    use Constraint::{Computed, Required};
    Block {
        description: "A domain's effective weights and answers as the control plane computed them from Git's GTM policy and live health.",
        attributes: vec![
            Attribute::new(
                "domain",
                Type::String,
                Required,
                "The domain (`platform-config/gtm/*.yaml`), e.g. `app.example.com`.",
            ),
            Attribute::new("zone", Type::String, Computed, "Its zone."),
            Attribute::new("type", Type::String, Computed, "`A` or `AAAA`."),
            Attribute::new("ttl", Type::Number, Computed, "TTL in seconds."),
            Attribute::new(
                "dns",
                Type::String,
                Computed,
                "The DNS backend its policy names.",
            ),
            Attribute::new(
                "mode",
                Type::String,
                Computed,
                "How the answers were chosen: `normal`, `fail_open`, `last_known_good`, `split_brain_hold` or `empty`.",
            ),
            Attribute::new(
                "effective_weights",
                Type::Map(Box::new(Type::Number)),
                Computed,
                "Effective weight per serving region (0 to 1000).",
            ),
            Attribute::new(
                "answers",
                Type::List(Box::new(Type::Object(vec![
                    ("node", Type::String),
                    ("region", Type::String),
                    ("address", Type::String),
                    ("weight", Type::Number),
                ]))),
                Computed,
                "The nodes answered: `node` id, `region`, `address`, `weight`.",
            ),
            Attribute::new(
                "reasons",
                Type::List(Box::new(Type::String)),
                Computed,
                "Why: each region's rule with its numbers, notes, and each answer's share.",
            ),
            Attribute::new(
                "split_brain",
                Type::String,
                Computed,
                "The split-brain guard's message when it holds the answers, else null.",
            ),
        ],
        blocks: Vec::new(),
    }
}

#[async_trait]
impl DataSourceImpl for DomainData {
    fn schema(&self) -> Block {
        domain_schema()
    }

    fn validate(&self, config: &Value, diags: &mut Diags) {
        domain_schema().reject_computed_in_config(config, diags);
    }

    async fn read(&self, config: &Value, diags: &mut Diags) -> Option<Value> {
        let domain = config.get("domain").as_str()?.to_owned();
        let clients = self.configured.get(diags)?;
        let view = match clients.control_plane.domain(&domain).await {
            Ok(Some(view)) => view,
            Ok(None) => {
                diags.error(
                    Path::attr("domain"),
                    "unknown domain",
                    format!("no GTM policy on the control plane declares `{domain}`"),
                );
                return None;
            }
            Err(err) => {
                read_error(diags, "the domain", &err);
                return None;
            }
        };
        let outcome = live::outcome(
            &view.weights,
            "weights computed by the control plane".to_owned(),
            view.split_brain.as_deref(),
        );
        let weights = &view.weights;
        let mut state = object();
        state.set("domain", domain.into());
        state.set("zone", weights.zone.clone().into());
        state.set("type", weights.record_type.as_str().into());
        state.set("ttl", weights.ttl.into());
        state.set("dns", weights.dns.as_str().into());
        state.set("mode", weights.mode.as_str().into());
        state.set(
            "effective_weights",
            Value::Map(
                outcome
                    .effective_weights
                    .iter()
                    .map(|(r, w)| (r.clone(), (*w).into()))
                    .collect(),
            ),
        );
        state.set(
            "answers",
            Value::List(
                outcome
                    .answers
                    .iter()
                    .map(|a| {
                        let mut item = object();
                        item.set("node", a.node.clone().into());
                        item.set("region", a.region.clone().into());
                        item.set("address", a.address.to_string().into());
                        item.set("weight", a.weight.into());
                        item
                    })
                    .collect(),
            ),
        );
        state.set(
            "reasons",
            Value::List(
                outcome
                    .reasons
                    .into_iter()
                    .skip(1)
                    .map(Value::String)
                    .collect(),
            ),
        );
        state.set("split_brain", view.split_brain.into());
        Some(state)
    }
}
