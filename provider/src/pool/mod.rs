//! The `neutral_node_pool` resource: one region's nodes, as stable slots.
//!
//! - **Plan** observes the pool's slots (the control plane's `GET /nodes`,
//!   and for the local launcher the agents' processes) and asks the core
//!   ([`pool::plan_slots`]) which slots stay, go, are replaced or added; the
//!   plan shows the new `slots` and `reasons`. A plan without slot changes
//!   keeps `nodes`, `ready_count` and `reasons` as they are, so an
//!   unchanged pool plans nothing.
//! - **Apply** starts the new slots first (local: a detached `neutral agent`
//!   per slot, waiting until it registers), then removes the old ones: a
//!   serving node is drained through the control plane and kept for the
//!   longest TTL of the domains its region serves plus `drain_grace`
//!   (counted from when it was drained), then its agent is stopped and the
//!   node deleted. A down node is stopped and deleted at once.
//! - **Read** refreshes `nodes` and `ready_count` from the control plane, so
//!   a node that stopped heartbeating shows up and the next plan replaces it.
//! - **Import** by region: the region's registered nodes whose hostname is a
//!   slot key of the region (`<region>-<n>`; the local launcher registers
//!   its agents so) become the slots.
//! - **Destroy** removes every slot the same way, then stops any agent left
//!   in the state folder.
//!
//! Under `neutral serve` the settings that run programs come from the
//! operator: [`lock`] refuses a pool whose settings differ.
//!
//! One concern per file: [`schema`] (the schema and the argument checks),
//! [`observe`] (what the slots hold now), [`apply`] (starting and removing
//! slots) and this file (the resource: the order of the steps). Slot
//! decisions, statuses, drain timing and addresses are the core's,
//! processes are [`launcher`](crate::launcher)'s.

pub mod apply;
pub mod lock;
pub mod observe;
pub mod schema;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use neutral_core::config::dns_label_problem;
use neutral_core::pool::{self, CurrentSlot, SlotStatus};

use crate::client::NodeView;
use crate::context::{Clients, Configured, now};
use crate::framework::{
    Block, Diags, Opened, Opening, Path, PlanArguments, Planned, ResourceImpl, Value, open_plan,
};
use crate::launcher;

use apply::{check_can_start, used_addresses};
use observe::{
    Observer, SlotView, live, recorded_ids, set_observed, sort_slots, strings, strings_of,
};
pub use schema::{
    DEFAULT_DRAIN_GRACE, DEFAULT_LAUNCHER, ENV_JOIN_TOKEN, Launcher, LocalSettings, PoolSpec,
    REGISTER_TIMEOUT, STARTING_GRACE, check, schema, spec_of,
};
use schema::{LOCAL_ONLY, replacing, with_defaults};

#[derive(Debug)]
pub struct NodePool {
    configured: Configured,
}

impl NodePool {
    pub fn new(configured: Configured) -> NodePool {
        NodePool { configured }
    }

    /// The clients, with the admin token the node API's writes need.
    fn clients(&self, diags: &mut Diags) -> Option<std::sync::Arc<Clients>> {
        let clients = self.configured.get(diags)?;
        if !clients.has_token {
            diags.error(
                Path::root(),
                "no admin token for the node pool",
                "Draining and deleting nodes needs the control plane's admin token: set the \
                 provider's `token` or env NEUTRAL_TOKEN.",
            );
            return None;
        }
        Some(clients)
    }
}

impl PlanArguments for NodePool {
    type Spec = PoolSpec;
    const COMPUTED_LATER: &'static [&'static str] = &["slots", "nodes", "ready_count", "reasons"];

    fn check(config: &Value, diags: &mut Diags) {
        check(config, diags);
        lock::check_current(config, diags);
    }

    fn with_defaults(config: &Value) -> Value {
        let mut state = with_defaults(config);
        state.set("id", state.get("region").clone());
        state
    }

    fn replacing(prior: &Value, state: &Value) -> Vec<Path> {
        replacing(prior, state)
    }

    fn spec_of(state: &Value) -> Option<PoolSpec> {
        spec_of(state)
    }
}

#[async_trait]
impl ResourceImpl for NodePool {
    fn schema(&self) -> Block {
        schema()
    }

    fn validate(&self, config: &Value, diags: &mut Diags) {
        check(config, diags);
        lock::check_current(config, diags);
    }

    async fn plan(
        &self,
        prior: Option<&Value>,
        config: &Value,
        diags: &mut Diags,
    ) -> Option<Planned> {
        let Opened {
            mut state,
            requires_replace,
            prior,
            spec,
        } = match open_plan::<Self>(prior, config, diags) {
            Opening::Open(opened) => opened,
            Opening::Done(planned) => return planned,
        };
        let clients = self.clients(diags)?;
        let live = live(&clients.control_plane, diags).await?;
        let prior_slots = prior
            .map(|p| strings_of(p.get("slots")))
            .unwrap_or_default();
        let recorded = prior.map(recorded_ids).unwrap_or_default();
        let observer = Observer::of(&state)?;
        let views = observer.observe(&prior_slots, &recorded, &live, now());
        let current: Vec<CurrentSlot> = views
            .iter()
            .map(|v| CurrentSlot {
                key: v.key.clone(),
                status: v.status,
                node: v.node_id().map(str::to_owned),
            })
            .collect();
        let plan = match pool::plan_slots(&spec.region, &current, spec.desired, spec.min, spec.max)
        {
            Ok(plan) => plan,
            Err(err) => {
                diags.error(
                    Path::attr("min_nodes"),
                    "cannot plan the slots",
                    err.to_string(),
                );
                return None;
            }
        };
        if spec.desired != plan.size {
            diags.warning(
                Path::attr("desired_nodes"),
                "desired_nodes outside [min_nodes, max_nodes]",
                format!(
                    "desired_nodes {} is clamped to {} (min_nodes {}, max_nodes {})",
                    spec.desired, plan.size, spec.min, spec.max
                ),
            );
        }
        match prior {
            Some(prior) if !plan.changes() => {
                // Nothing to do: what the state says stays.
                for name in ["slots", "nodes", "ready_count", "reasons"] {
                    let value = prior.get(name);
                    state.set(
                        name,
                        if value.is_null() {
                            match name {
                                "slots" => strings(&plan.slots),
                                "reasons" => strings(&plan.reasons),
                                "ready_count" => Value::Int(
                                    i64::try_from(
                                        views.iter().filter(|v| v.status == SlotStatus::Up).count(),
                                    )
                                    .unwrap_or(0),
                                ),
                                _ => Value::List(views.iter().map(SlotView::value).collect()),
                            }
                        } else {
                            value.clone()
                        },
                    );
                }
            }
            _ => {
                if let Some(local) = &spec.local
                    && !plan.add.is_empty()
                {
                    let used = used_addresses(&live, &local.state_dir);
                    check_can_start(local, plan.add.len(), &used, diags);
                    if diags.has_errors() {
                        return None;
                    }
                }
                state.set("slots", strings(&plan.slots));
                state.set("reasons", strings(&plan.reasons));
                state.set("nodes", Value::Unknown);
                state.set("ready_count", Value::Unknown);
            }
        }
        Some(Planned {
            state,
            requires_replace,
        })
    }

    async fn apply(
        &self,
        prior: Option<&Value>,
        planned: &Value,
        diags: &mut Diags,
    ) -> Option<Value> {
        // Values unknown at plan time are known now: the lock again.
        lock::check_current(planned, diags);
        if diags.has_errors() {
            return None;
        }
        let Some(spec) = spec_of(planned) else {
            diags.error(
                Path::root(),
                "the planned node pool is incomplete",
                "An argument is unknown at apply time (a bug: Terraform should have known it).",
            );
            return None;
        };
        if !planned.get("nodes").is_unknown() {
            // The plan changes no slot.
            return Some(planned.clone());
        }
        let clients = self.clients(diags)?;
        let planned_slots = strings_of(planned.get("slots"));
        let prior_slots = prior
            .map(|p| strings_of(p.get("slots")))
            .unwrap_or_default();
        let added: Vec<String> = planned_slots
            .iter()
            .filter(|s| !prior_slots.contains(s))
            .cloned()
            .collect();
        let removed: Vec<String> = prior_slots
            .iter()
            .filter(|s| !planned_slots.contains(s))
            .cloned()
            .collect();

        // New slots first: a replaced node goes only once its successor runs.
        let failed_adds = match &spec.local {
            Some(local) => apply::start_slots(&spec, local, &clients, &added, diags).await,
            None => Vec::new(),
        };

        let live = live(&clients.control_plane, diags)
            .await
            .unwrap_or_default();
        let observer = Observer::of(planned)?;
        let recorded = prior.map(recorded_ids).unwrap_or_default();
        let leaving = observer.observe(&removed, &recorded, &live, now());
        let (leaving, kept) = apply::keep_for_failed_successors(leaving, failed_adds.len());
        let failed_removals = apply::remove_slots(&spec, &clients, &leaving, diags).await;

        let mut slots: Vec<String> = planned_slots
            .into_iter()
            .filter(|s| !failed_adds.contains(s))
            .chain(failed_removals)
            .chain(kept)
            .collect();
        sort_slots(&spec.region, &mut slots);
        Some(apply::settled(planned, &slots, &recorded, &clients, diags).await)
    }

    async fn destroy(&self, prior: &Value, diags: &mut Diags) -> Option<()> {
        let Some(spec) = spec_of(prior).or_else(|| {
            // An imported pool never applied has no launcher settings:
            // its nodes are removed as external ones.
            let mut external = prior.clone();
            external.set("launcher", "external".into());
            for name in LOCAL_ONLY {
                external.set(name, Value::Null);
            }
            external.set("drain_grace", Value::string(DEFAULT_DRAIN_GRACE));
            spec_of(&external)
        }) else {
            diags.error(
                Path::root(),
                "the state of this node pool is unreadable",
                "Remove it with `terraform state rm` and stop its nodes by hand.",
            );
            return None;
        };
        let clients = self.clients(diags)?;
        let live = live(&clients.control_plane, diags).await?;
        let slots = strings_of(prior.get("slots"));
        let mut observed = prior.clone();
        observed.set(
            "launcher",
            match spec.launcher {
                Launcher::Local => "local",
                Launcher::External => "external",
                Launcher::Docker => "docker",
            }
            .into(),
        );
        let observer = Observer::of(&observed)?;
        let views = observer.observe(&slots, &recorded_ids(prior), &live, now());
        let failed = apply::remove_slots(&spec, &clients, &views, diags).await;
        // Agents this pool started but no slot records (an apply that
        // failed half way): stop them too.
        if let Some(local) = &spec.local {
            for (name, dir) in launcher::slot_dirs(&local.state_dir) {
                if failed.contains(&name) || !dir.running() {
                    continue;
                }
                launcher::stop(&dir).await;
                if let Some(id) = dir.node_id() {
                    let _ = clients.control_plane.delete_node(&id).await;
                }
                launcher::forget(&dir);
            }
        }
        failed.is_empty().then_some(())
    }

    async fn read(&self, state: &Value, diags: &mut Diags) -> Result<Option<Value>, ()> {
        let Some(observer) = Observer::of(state) else {
            diags.error(
                Path::root(),
                "the state of this node pool is unreadable",
                "Remove it with `terraform state rm` and import it again.",
            );
            return Err(());
        };
        let clients = self.configured.get(diags).ok_or(())?;
        let live = live(&clients.control_plane, diags).await.ok_or(())?;
        let slots = strings_of(state.get("slots"));
        let views = observer.observe(&slots, &recorded_ids(state), &live, now());
        let mut refreshed = state.clone();
        set_observed(&mut refreshed, &views);
        Ok(Some(refreshed))
    }

    async fn import(&self, id: &str, diags: &mut Diags) -> Option<Value> {
        if let Some(problem) = dns_label_problem(id) {
            diags.error(
                Path::root(),
                "invalid import id",
                format!("`{id}`: import a node pool by its region's name ({problem})"),
            );
            return None;
        }
        let clients = self.configured.get(diags)?;
        let region = match clients.control_plane.regions().await {
            Ok(regions) => regions.into_iter().find(|r| r.name == id),
            Err(err) => {
                diags.error(
                    Path::root(),
                    "cannot read the regions from the control plane",
                    err.to_string(),
                );
                return None;
            }
        };
        let Some(region) = region else {
            diags.error(
                Path::root(),
                format!("no region `{id}`"),
                "The control plane declares no such region.",
            );
            return None;
        };
        let live = live(&clients.control_plane, diags).await?;
        let members: Vec<&NodeView> = live.iter().filter(|n| n.region == id).collect();
        let mut slots: Vec<String> = members
            .iter()
            .filter_map(|n| n.hostname.clone())
            .filter(|h| pool::slot_index(id, h).is_some())
            .collect::<BTreeSet<String>>()
            .into_iter()
            .collect();
        sort_slots(id, &mut slots);
        let strays: Vec<&str> = members
            .iter()
            .filter(|n| {
                n.hostname
                    .as_deref()
                    .is_none_or(|h| !slots.iter().any(|s| s == h))
            })
            .map(|n| n.id.as_str())
            .collect();
        if !strays.is_empty() {
            diags.warning(
                Path::root(),
                format!("nodes of region {id} without a slot were not imported"),
                format!(
                    "{} did not register with a slot key (`{id}-<n>`) as hostname.",
                    strays.join(", ")
                ),
            );
        }
        let mut state = Value::Map(BTreeMap::new());
        state.set("id", id.into());
        state.set("region", id.into());
        state.set("min_nodes", region.min_nodes.into());
        state.set("max_nodes", region.max_nodes.into());
        state.set("desired_nodes", region.desired_nodes.into());
        state.set("slots", strings(&slots));
        let observer = Observer {
            region: id,
            state_dir: None,
        };
        let views = observer.observe(&slots, &BTreeMap::new(), &live, now());
        set_observed(&mut state, &views);
        let described: Vec<String> = views
            .iter()
            .map(|v| match v.node_id() {
                Some(node) => format!("{} (node {node})", v.key),
                None => v.key.clone(),
            })
            .collect();
        state.set(
            "reasons",
            strings(&[format!(
                "imported from the control plane: {}",
                if described.is_empty() {
                    "no slot".to_owned()
                } else {
                    described.join(", ")
                }
            )]),
        );
        Some(state)
    }
}
