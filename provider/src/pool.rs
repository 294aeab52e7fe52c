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
//! This module owns the schema, argument checks, observation and the order
//! of the steps; slot decisions, statuses, drain timing and addresses are
//! the core's, processes are [`launcher`]'s.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path as FsPath, PathBuf};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use neutral_core::config::dns_label_problem;
use neutral_core::model::{Timestamp, format_duration, parse_duration};
use neutral_core::pool::{
    self, AddressRange, CurrentSlot, Launch, MAX_NODES, ObservedNode, SlotStatus,
};

use crate::client::{ControlPlane, NodeView, parse_time};
use crate::config::{Secret, base_url};
use crate::docker_launcher::{self, DockerTarget};
use crate::framework::{
    Attribute, Block, Constraint, Diags, Path, Planned, ResourceImpl, Type, Value,
};
use crate::gtm::{known_choice, known_int};
use crate::launcher::{self, AgentLaunch, LAUNCHER_FLAGS, SlotDir};
use crate::provider::{Clients, Configured, now};

pub const DEFAULT_LAUNCHER: &str = "local";
pub const DEFAULT_DRAIN_GRACE: &str = "10s";
/// How long a new agent gets to register.
pub const REGISTER_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a node may stay not ready after it was started before it
/// counts as down.
pub const STARTING_GRACE: Duration = Duration::from_secs(300);
/// The environment variable the join token comes from when `join_token`
/// is not set (the same one `neutral agent` reads).
pub const ENV_JOIN_TOKEN: &str = "NEUTRAL_JOIN_TOKEN";

/// The attributes only the local launcher uses.
const LOCAL_ONLY: [&str; 6] = [
    "control_plane",
    "join_token",
    "address_range",
    "state_dir",
    "agent_args",
    "neutral_binary",
];
/// The attributes only the `docker` launcher uses.
const DOCKER_ONLY: [&str; 4] = [
    "docker_image",
    "docker_network",
    "docker_args",
    "docker_binaries",
];
const ARGUMENTS: [&str; 16] = [
    "region",
    "min_nodes",
    "max_nodes",
    "desired_nodes",
    "launcher",
    "drain_grace",
    "control_plane",
    "join_token",
    "address_range",
    "state_dir",
    "agent_args",
    "neutral_binary",
    "docker_image",
    "docker_network",
    "docker_args",
    "docker_binaries",
];
const COMPUTED: [&str; 5] = ["id", "slots", "nodes", "ready_count", "reasons"];

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Launcher {
    Local,
    External,
    Docker,
}

const LAUNCHERS: [(&str, Launcher); 3] = [
    ("local", Launcher::Local),
    ("external", Launcher::External),
    ("docker", Launcher::Docker),
];

fn node_type() -> Type {
    Type::Object(vec![
        ("slot", Type::String),
        ("node_id", Type::String),
        ("address", Type::String),
        ("status", Type::String),
    ])
}

pub fn schema() -> Block {
    use Constraint::{Computed, Optional, OptionalComputed, Required};
    Block {
        description: "One region's node pool: `desired_nodes` clamped to `[min_nodes, max_nodes]` \
                      as stable slots, down nodes replaced, scale-in drained first. The `local` \
                      launcher runs a `neutral agent` per slot on this machine; `external` \
                      publishes the slots for the cloud's own resources.",
        attributes: vec![
            Attribute::new("id", Type::String, Computed, "The region's name."),
            Attribute::new(
                "region",
                Type::String,
                Required,
                "The region (`platform-config/regions/<region>.yaml`). Changing it replaces the pool.",
            ),
            Attribute::new(
                "min_nodes",
                Type::Number,
                Required,
                "The fewest slots, 0 to 10000.",
            ),
            Attribute::new(
                "max_nodes",
                Type::Number,
                Required,
                "The most slots, 1 to 10000, at least `min_nodes`.",
            ),
            Attribute::new(
                "desired_nodes",
                Type::Number,
                Required,
                "The slots wanted (from `infra/node-pool/<region>.tfvars`), clamped to \
                 `[min_nodes, max_nodes]` with a warning.",
            ),
            Attribute::new(
                "launcher",
                Type::String,
                OptionalComputed,
                "`local` (default: an agent process per slot on this machine), `docker` (an \
                 agent per slot in a Docker container on the region's network) or `external` \
                 (slots only; machines come from other resources). Changing it replaces the pool.",
            ),
            Attribute::new(
                "drain_grace",
                Type::String,
                OptionalComputed,
                "Extra time a drained node keeps running after the longest TTL of its region's \
                 domains, e.g. `10s` (default), `1m30s`.",
            ),
            Attribute::new(
                "control_plane",
                Type::String,
                Optional,
                "`local`: the control-plane URL the agents register with. Default: the \
                 provider's `endpoint`.",
            ),
            Attribute::new(
                "join_token",
                Type::String,
                Optional,
                "`local`: the join token the agents register with. Default: env \
                 `NEUTRAL_JOIN_TOKEN` of the provider. Sensitive; prefer the environment, which \
                 keeps it out of the state.",
            )
            .sensitive(),
            Attribute::new(
                "address_range",
                Type::String,
                Optional,
                "`local`, required: the addresses nodes take, lowest free first: \
                 `127.0.0.50-127.0.0.59`, a CIDR block or one address. Must hold `max_nodes` \
                 addresses (one more while a down node is replaced).",
            ),
            Attribute::new(
                "state_dir",
                Type::String,
                Optional,
                "`local`, required: an absolute folder for the pool's pid files, agent \
                 identities and logs (`<state_dir>/<slot>/`). Changing it replaces the pool.",
            ),
            Attribute::new(
                "agent_args",
                Type::List(Box::new(Type::String)),
                Optional,
                "`local`: extra flags for every `neutral agent` (e.g. `[\"--metrics-file\", \
                 \"/run/m.prom\"]`). The launcher sets `--control-plane`, `--region`, `--ip`, \
                 `--state-file` and `--hostname` itself.",
            ),
            Attribute::new(
                "neutral_binary",
                Type::String,
                Optional,
                "`local`: the `neutral` binary. Default: the one next to the provider's \
                 binary, else `neutral` on `PATH`.",
            ),
            Attribute::new(
                "docker_image",
                Type::String,
                Optional,
                "`docker`, required: the image of every node's container (local only: never \
                 pulled). It runs `neutral agent` from `docker_binaries`.",
            ),
            Attribute::new(
                "docker_network",
                Type::String,
                Optional,
                "`docker`, required: the region's Docker network; `address_range` must lie in \
                 its subnet. Each node's container gets its slot's address there.",
            ),
            Attribute::new(
                "docker_args",
                Type::List(Box::new(Type::String)),
                Optional,
                "`docker`: extra `docker run` flags for every node's container, with the \
                 `{slot}`, `{address}` and `{slot_dir}` placeholders of `agent_args`.",
            ),
            Attribute::new(
                "docker_binaries",
                Type::String,
                Optional,
                "`docker`: the folder holding the `neutral` binary, mounted read-only into \
                 every container. Default: the folder of the binary the local launcher would \
                 run (`neutral_binary`).",
            ),
            Attribute::new(
                "slots",
                Type::List(Box::new(Type::String)),
                Computed,
                "The slot keys, `<region>-<n>`, oldest first: stable while the slot exists, \
                 known at plan time (use `toset(...)` for `for_each`).",
            ),
            Attribute::new(
                "nodes",
                Type::List(Box::new(node_type())),
                Computed,
                "One entry per slot: `slot`, `node_id` (null until a node registers), `address` \
                 and `status` (`up`, `starting`, `pending`, `drain` or `down`).",
            ),
            Attribute::new(
                "ready_count",
                Type::Number,
                Computed,
                "Slots whose node is `up`.",
            ),
            Attribute::new(
                "reasons",
                Type::List(Box::new(Type::String)),
                Computed,
                "Why the slots are what they are: the clamped size, and each slot added, \
                 removed or replaced with its node and status.",
            ),
        ],
        blocks: Vec::new(),
    }
}

// ---- arguments ----

/// The local launcher's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalSettings {
    pub control_plane: Option<String>,
    pub join_token: Option<Secret>,
    pub address_range: AddressRange,
    pub state_dir: PathBuf,
    pub agent_args: Vec<String>,
    pub neutral_binary: Option<String>,
    /// `Some` for the `docker` launcher (image, network, run flags;
    /// `docker_binaries` as given).
    pub docker: Option<(DockerTarget, Option<String>)>,
}

/// The pool's arguments, all known and valid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolSpec {
    pub region: String,
    pub min: u32,
    pub max: u32,
    pub desired: u32,
    pub launcher: Launcher,
    pub drain_grace: Duration,
    pub local: Option<LocalSettings>,
}

fn known_duration(value: &Value, path: &Path, diags: &mut Diags) -> Option<Duration> {
    let text = value.as_str()?;
    match parse_duration(text) {
        Ok(duration) => Some(duration),
        Err(err) => {
            diags.error(
                path.clone(),
                "invalid duration",
                format!("`{text}`: {err} (write e.g. `10s`, `1m30s`, `500ms`)"),
            );
            None
        }
    }
}

fn known_range(value: &Value, diags: &mut Diags) -> Option<AddressRange> {
    let text = value.as_str()?;
    match text.parse::<AddressRange>() {
        Ok(range) => Some(range),
        Err(err) => {
            diags.error(
                Path::attr("address_range"),
                "invalid address range",
                format!("`{text}`: {err}"),
            );
            None
        }
    }
}

fn known_args(value: &Value, diags: &mut Diags) -> Option<Vec<String>> {
    let items = match value {
        Value::Null => return Some(Vec::new()),
        Value::List(items) => items,
        _ => return None,
    };
    let mut args = Vec::new();
    let mut all_known = true;
    for (index, item) in items.iter().enumerate() {
        let Some(arg) = item.as_str() else {
            all_known = false;
            continue;
        };
        let flag = arg.split_once('=').map_or(arg, |(flag, _)| flag);
        if LAUNCHER_FLAGS.contains(&flag) {
            diags.error(
                Path::attr("agent_args").index(index),
                "flag set by the launcher",
                format!(
                    "`{flag}` is set by the local launcher for every agent; remove it from \
                     agent_args"
                ),
            );
        }
        args.push(arg.to_owned());
    }
    all_known.then_some(args)
}

/// Checks the known values of a configuration, each problem at its
/// attribute.
pub fn check(config: &Value, diags: &mut Diags) {
    schema().reject_computed_in_config(config, diags);
    if let Some(region) = config.get("region").as_str()
        && let Some(problem) = dns_label_problem(region)
    {
        diags.error(
            Path::attr("region"),
            "invalid region name",
            format!("`{region}`: {problem}"),
        );
    }
    let min = known_int(
        config.get("min_nodes"),
        &Path::attr("min_nodes"),
        0,
        MAX_NODES,
        diags,
    );
    let max = known_int(
        config.get("max_nodes"),
        &Path::attr("max_nodes"),
        1,
        MAX_NODES,
        diags,
    );
    known_int(
        config.get("desired_nodes"),
        &Path::attr("desired_nodes"),
        0,
        MAX_NODES,
        diags,
    );
    if let (Some(min), Some(max)) = (min, max)
        && min > max
    {
        diags.error(
            Path::attr("min_nodes"),
            "min_nodes above max_nodes",
            format!("min_nodes {min} is greater than max_nodes {max}"),
        );
    }
    let launcher = match config.get("launcher") {
        Value::Null => Some(Launcher::Local),
        value => known_choice(value, &Path::attr("launcher"), &LAUNCHERS, diags),
    };
    known_duration(config.get("drain_grace"), &Path::attr("drain_grace"), diags);
    if let Some(url) = config.get("control_plane").as_str()
        && let Err(problem) = base_url(url)
    {
        diags.error(Path::attr("control_plane"), "invalid URL", problem);
    }
    let range = known_range(config.get("address_range"), diags);
    if let Some(dir) = config.get("state_dir").as_str()
        && !FsPath::new(dir).is_absolute()
    {
        diags.error(
            Path::attr("state_dir"),
            "state_dir must be absolute",
            format!(
                "`{dir}` is relative: Terraform runs in changing folders (the scheduler \
                     exports each commit), the pool's agents must be found again"
            ),
        );
    }
    known_args(config.get("agent_args"), diags);
    if launcher != Some(Launcher::Docker) {
        for name in DOCKER_ONLY {
            let value = config.get(name);
            if !value.is_null() && !value.as_list().is_some_and(<[Value]>::is_empty) {
                diags.error(
                    Path::attr(name),
                    format!("`{name}` is for the docker launcher"),
                    "Remove it or set `launcher = \"docker\"`.",
                );
            }
        }
    }
    if launcher == Some(Launcher::Docker) {
        for name in ["docker_image", "docker_network"] {
            if config.get(name).is_null() {
                diags.error(
                    Path::attr(name),
                    format!("`{name}` is required by the docker launcher"),
                    "The docker launcher starts a container per slot: it needs the image \
                     (`docker_image`) and the region's network (`docker_network`).",
                );
            }
        }
    }
    match launcher {
        Some(Launcher::External) => {
            for name in LOCAL_ONLY {
                let value = config.get(name);
                let empty_list = value.as_list().is_some_and(<[Value]>::is_empty);
                if !value.is_null() && !empty_list {
                    diags.error(
                        Path::attr(name),
                        format!("`{name}` is for the local launcher"),
                        "The external launcher starts no processes; remove it or set \
                         `launcher = \"local\"`.",
                    );
                }
            }
        }
        Some(Launcher::Local | Launcher::Docker) => {
            for name in ["address_range", "state_dir"] {
                if config.get(name).is_null() {
                    diags.error(
                        Path::attr(name),
                        format!("`{name}` is required by the local launcher"),
                        "The local launcher starts an agent per slot on this machine: it needs \
                         the addresses they take (`address_range`) and a folder for their pid \
                         files, identities and logs (`state_dir`).",
                    );
                }
            }
            if let (Some(range), Some(max)) = (range, max)
                && range.len() < u128::from(max)
            {
                diags.error(
                    Path::attr("address_range"),
                    "address range smaller than max_nodes",
                    format!(
                        "`{range}` holds {} addresses; max_nodes is {max}",
                        range.len()
                    ),
                );
            }
        }
        None => {}
    }
}

/// The configuration's arguments with defaults for those it leaves out;
/// computed attributes null.
fn with_defaults(config: &Value) -> Value {
    let mut state = Value::Map(BTreeMap::new());
    for name in ARGUMENTS {
        let value = match (name, config.get(name)) {
            ("launcher", Value::Null) => Value::string(DEFAULT_LAUNCHER),
            ("drain_grace", Value::Null) => Value::string(DEFAULT_DRAIN_GRACE),
            (_, value) => value.clone(),
        };
        state.set(name, value);
    }
    state
}

/// The arguments, when every one is known and valid.
pub fn spec_of(state: &Value) -> Option<PoolSpec> {
    let mut ignored = Diags::default();
    let diags = &mut ignored;
    check_quietly(state, diags);
    if diags.has_errors() {
        return None;
    }
    let region = state.get("region").as_str()?.to_owned();
    let launcher = known_choice(state.get("launcher"), &Path::root(), &LAUNCHERS, diags)?;
    let local = match launcher {
        Launcher::External => None,
        Launcher::Local | Launcher::Docker => {
            let optional_string = |name: &str| -> Option<Option<String>> {
                match state.get(name) {
                    Value::Null => Some(None),
                    Value::String(text) => Some(Some(text.clone())),
                    _ => None,
                }
            };
            Some(LocalSettings {
                control_plane: optional_string("control_plane")?,
                join_token: optional_string("join_token")?.map(Secret::new),
                address_range: known_range(state.get("address_range"), diags)?,
                state_dir: PathBuf::from(state.get("state_dir").as_str()?),
                agent_args: known_args(state.get("agent_args"), diags)?,
                neutral_binary: optional_string("neutral_binary")?,
                docker: match launcher {
                    Launcher::Docker => Some((
                        DockerTarget {
                            image: state.get("docker_image").as_str()?.to_owned(),
                            network: state.get("docker_network").as_str()?.to_owned(),
                            binaries: PathBuf::new(),
                            run_args: strings_of(state.get("docker_args")),
                        },
                        optional_string("docker_binaries")?,
                    )),
                    _ => None,
                },
            })
        }
    };
    Some(PoolSpec {
        region,
        min: known_int(state.get("min_nodes"), &Path::root(), 0, MAX_NODES, diags)?,
        max: known_int(state.get("max_nodes"), &Path::root(), 1, MAX_NODES, diags)?,
        desired: known_int(
            state.get("desired_nodes"),
            &Path::root(),
            0,
            MAX_NODES,
            diags,
        )?,
        launcher,
        drain_grace: known_duration(state.get("drain_grace"), &Path::root(), diags)?,
        local,
    })
}

/// [`check`] without the computed-attribute rule (a state has them set).
fn check_quietly(state: &Value, diags: &mut Diags) {
    let mut arguments = state.clone();
    for name in COMPUTED {
        arguments.set(name, Value::Null);
    }
    check(&arguments, diags);
}

/// Arguments whose change replaces the pool: the region always; the
/// launcher and the state folder when the prior state had them (an
/// imported pool has neither and adopts the configuration's).
fn replacing(prior: &Value, state: &Value) -> Vec<Path> {
    ["region", "launcher", "state_dir"]
        .into_iter()
        .filter(|name| {
            let before = prior.get(name);
            before != state.get(name) && (*name == "region" || !before.is_null())
        })
        .map(Path::attr)
        .collect()
}

// ---- observing the slots ----

/// A slot as it is now.
#[derive(Clone, Debug)]
struct SlotView {
    key: String,
    node: Option<NodeView>,
    status: SlotStatus,
}

impl SlotView {
    fn node_id(&self) -> Option<&str> {
        self.node.as_ref().map(|n| n.id.as_str())
    }

    fn value(&self) -> Value {
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
struct Observer<'a> {
    region: &'a str,
    /// `Some` for the local launcher.
    state_dir: Option<&'a FsPath>,
}

impl Observer<'_> {
    fn of(state: &Value) -> Option<Observer<'_>> {
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
    fn observe(
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

fn strings_of(value: &Value) -> Vec<String> {
    value
        .as_list()
        .map(|items| {
            items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// `slot → node id` from a state's `nodes`.
fn recorded_ids(state: &Value) -> BTreeMap<String, String> {
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

fn strings(items: &[String]) -> Value {
    Value::List(items.iter().map(|s| Value::string(s.as_str())).collect())
}

fn set_observed(state: &mut Value, views: &[SlotView]) {
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

fn sort_slots(region: &str, slots: &mut [String]) {
    slots.sort_by_key(|key| (pool::slot_index(region, key).unwrap_or(0), key.clone()));
}

// ---- the resource ----

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

    async fn live(control_plane: &ControlPlane, diags: &mut Diags) -> Option<Vec<NodeView>> {
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
}

/// Checks what starting `count` new local agents needs, at plan time, so a
/// plan that cannot be applied fails early at the attribute to fix.
fn check_can_start(
    local: &LocalSettings,
    count: usize,
    used: &BTreeSet<IpAddr>,
    diags: &mut Diags,
) {
    if let Err(message) = launcher::find_binary(local.neutral_binary.as_deref()) {
        diags.error(
            Path::attr("neutral_binary"),
            "no neutral binary to start agents with",
            message,
        );
    }
    if join_token(local).is_none() && !has_token_file(local) {
        diags.error(
            Path::attr("join_token"),
            "no join token for the agents",
            format!(
                "Set `join_token`, env {ENV_JOIN_TOKEN} for Terraform, or pass \
                 `--join-token-file` in agent_args."
            ),
        );
    }
    let free = local.address_range.free(used, count).len();
    if free < count {
        diags.error(
            Path::attr("address_range"),
            "not enough free addresses",
            format!(
                "{count} new nodes need addresses, {free} of {} are free (the others are \
                 taken by registered nodes or this pool's agents)",
                local.address_range
            ),
        );
    }
}

fn join_token(local: &LocalSettings) -> Option<Secret> {
    local.join_token.clone().or_else(|| {
        std::env::var(ENV_JOIN_TOKEN)
            .ok()
            .filter(|t| !t.trim().is_empty())
            .map(Secret::new)
    })
}

fn has_token_file(local: &LocalSettings) -> bool {
    local
        .agent_args
        .iter()
        .any(|a| a == "--join-token-file" || a.starts_with("--join-token-file="))
}

/// Addresses new local agents must not take: every registered node's and
/// every running agent's of the pool.
fn used_addresses(live: &[NodeView], state_dir: &FsPath) -> BTreeSet<IpAddr> {
    let mut used: BTreeSet<IpAddr> = live.iter().filter_map(|n| n.address.parse().ok()).collect();
    for (_, dir) in launcher::slot_dirs(state_dir) {
        if dir.running()
            && let Some(address) = dir.address()
        {
            used.insert(address);
        }
    }
    used
}

/// The TTLs of the domains `region` serves, from the control plane.
async fn serving_ttls(control_plane: &ControlPlane, region: &str) -> Result<Vec<u32>, String> {
    let names = control_plane
        .domain_names()
        .await
        .map_err(|e| e.to_string())?;
    let mut ttls = Vec::new();
    for name in names {
        if let Some(view) = control_plane
            .domain(&name)
            .await
            .map_err(|e| e.to_string())?
        {
            let serves = view.weights.regions.iter().any(|r| &*r.region == region)
                || view
                    .policy
                    .as_ref()
                    .is_some_and(|p| p.regions.contains_key(region));
            if serves {
                ttls.push(view.weights.ttl);
            }
        }
    }
    Ok(ttls)
}

impl NodePool {
    /// Starts an agent for each new slot and waits until all registered.
    /// Returns the slots that failed (stopped and forgotten again).
    async fn start_slots(
        spec: &PoolSpec,
        local: &LocalSettings,
        clients: &Clients,
        added: &[String],
        diags: &mut Diags,
    ) -> Vec<String> {
        if added.is_empty() {
            return Vec::new();
        }
        let fail_all = |diags: &mut Diags, path: &str, summary: &str, detail: String| {
            diags.error(Path::attr(path), summary.to_owned(), detail);
            added.to_vec()
        };
        let binary = match launcher::find_binary(local.neutral_binary.as_deref()) {
            Ok(binary) => binary,
            Err(message) => {
                return fail_all(diags, "neutral_binary", "no neutral binary", message);
            }
        };
        let token = join_token(local);
        if token.is_none() && !has_token_file(local) {
            return fail_all(
                diags,
                "join_token",
                "no join token for the agents",
                format!("Set `join_token` or env {ENV_JOIN_TOKEN}."),
            );
        }
        let Some(live) = Self::live(&clients.control_plane, diags).await else {
            return added.to_vec();
        };
        let used = used_addresses(&live, &local.state_dir);
        let addresses = pool::assign_addresses(&local.address_range, added, &used);
        let control_plane = local
            .control_plane
            .clone()
            .unwrap_or_else(|| clients.control_plane.endpoint().to_owned());
        let mut failed = Vec::new();
        let mut waiting = Vec::new();
        for slot in added {
            let dir = SlotDir::new(&local.state_dir, slot);
            let Some(address) = addresses.get(slot).copied() else {
                diags.error(
                    Path::attr("address_range"),
                    format!("no free address for slot {slot}"),
                    format!("every address of {} is taken", local.address_range),
                );
                failed.push(slot.clone());
                continue;
            };
            // A slot key can come back after its slot was removed: nothing
            // of the old slot may survive into the new one.
            launcher::stop(&dir).await;
            launcher::forget(&dir);
            let launch = AgentLaunch {
                binary: binary.clone(),
                control_plane: control_plane.clone(),
                region: spec.region.clone(),
                slot: slot.clone(),
                address,
                join_token: token.clone(),
                extra_args: local.agent_args.clone(),
                docker: local
                    .docker
                    .as_ref()
                    .map(|(target, binaries)| DockerTarget {
                        binaries: docker_launcher::binaries_dir(binaries.as_deref(), &binary),
                        ..target.clone()
                    }),
            };
            match launcher::start(&dir, &launch) {
                Ok(_) => waiting.push((slot.clone(), dir)),
                Err(message) => {
                    diags.error(
                        Path::root(),
                        format!("cannot start the agent of slot {slot}"),
                        message,
                    );
                    failed.push(slot.clone());
                }
            }
        }
        // Wait until every started agent registered.
        let start = Instant::now();
        while !waiting.is_empty() {
            let live = clients.control_plane.nodes().await.unwrap_or_default();
            let registered: BTreeSet<&str> = live.iter().map(|n| n.id.as_str()).collect();
            let mut still = Vec::new();
            for (slot, dir) in waiting {
                if dir
                    .node_id()
                    .is_some_and(|id| registered.contains(id.as_str()))
                {
                    tracing::info!(%slot, "agent registered");
                    continue;
                }
                let exited = !dir.running();
                if exited || start.elapsed() > REGISTER_TIMEOUT {
                    let why = if exited {
                        "its agent exited".to_owned()
                    } else {
                        format!(
                            "it did not register within {}",
                            format_duration(REGISTER_TIMEOUT)
                        )
                    };
                    diags.error(
                        Path::root(),
                        format!(
                            "slot {slot} of region {} failed to start: {why}",
                            spec.region
                        ),
                        format!(
                            "The agent's log ({}) ends with:\n{}",
                            dir.log_file().display(),
                            dir.log_tail()
                        ),
                    );
                    launcher::stop(&dir).await;
                    if let Some(id) = dir.node_id() {
                        let _ = clients.control_plane.delete_node(&id).await;
                    }
                    launcher::forget(&dir);
                    failed.push(slot);
                } else {
                    still.push((slot, dir));
                }
            }
            waiting = still;
            if !waiting.is_empty() {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        failed
    }

    /// Removes slots: drains their serving nodes, waits out the TTL and
    /// grace, stops their agents (local) and deletes their nodes. Returns
    /// the slots that could not be removed.
    async fn remove_slots(
        spec: &PoolSpec,
        clients: &Clients,
        views: &[SlotView],
        diags: &mut Diags,
    ) -> Vec<String> {
        if views.is_empty() {
            return Vec::new();
        }
        let control_plane = &clients.control_plane;
        let mut failed = Vec::new();
        let mut drained_for = Vec::new();
        let at = now();
        for view in views {
            let Some(node) = &view.node else { continue };
            match view.status {
                SlotStatus::Up => match control_plane.drain_node(&node.id).await {
                    Ok(()) => {
                        tracing::info!(slot = %view.key, node = %node.id, "drained");
                        drained_for.push(Duration::ZERO);
                    }
                    Err(err) => {
                        diags.error(
                            Path::root(),
                            format!("cannot drain node {} of slot {}", node.id, view.key),
                            err.to_string(),
                        );
                        failed.push(view.key.clone());
                    }
                },
                SlotStatus::Drain => {
                    let since = parse_time(&node.status_since).unwrap_or(at);
                    drained_for.push(at.since(since));
                }
                // Not serving: nothing to wait for.
                _ => {}
            }
        }
        if let Some(shortest_drained) = drained_for.iter().min().copied() {
            let ttls = match serving_ttls(control_plane, &spec.region).await {
                Ok(ttls) => ttls,
                Err(message) => {
                    diags.error(
                        Path::root(),
                        "cannot read the TTLs of the region's domains",
                        message,
                    );
                    return views.iter().map(|v| v.key.clone()).collect();
                }
            };
            let wait = pool::drain_wait(&ttls, spec.drain_grace, shortest_drained);
            tracing::info!(
                region = %spec.region,
                ttl = ttls.iter().max().copied().unwrap_or(0),
                grace = %format_duration(spec.drain_grace),
                wait = %format_duration(wait),
                "waiting for drained nodes to leave resolver caches"
            );
            tokio::time::sleep(wait).await;
        }
        let undrained: BTreeSet<String> = failed.iter().cloned().collect();
        for view in views.iter().filter(|v| !undrained.contains(&v.key)) {
            if let Some(local) = &spec.local {
                launcher::stop(&SlotDir::new(&local.state_dir, &view.key)).await;
            }
            if let Some(id) = view.node_id() {
                if let Err(err) = control_plane.delete_node(id).await {
                    diags.error(
                        Path::root(),
                        format!("cannot delete node {id} of slot {}", view.key),
                        err.to_string(),
                    );
                    failed.push(view.key.clone());
                    continue;
                }
                tracing::info!(slot = %view.key, node = %id, "node removed");
            }
            if let Some(local) = &spec.local {
                launcher::forget(&SlotDir::new(&local.state_dir, &view.key));
            }
        }
        failed
    }

    /// The state after an apply: `planned` with the slots that exist and
    /// their nodes as they are now.
    async fn settled(
        &self,
        planned: &Value,
        slots: &[String],
        recorded: &BTreeMap<String, String>,
        clients: &Clients,
        diags: &mut Diags,
    ) -> Value {
        let mut state = planned.clone();
        state.set("slots", strings(slots));
        let live = Self::live(&clients.control_plane, diags)
            .await
            .unwrap_or_default();
        if let Some(observer) = Observer::of(planned) {
            let views = observer.observe(slots, recorded, &live, now());
            set_observed(&mut state, &views);
        }
        state
    }
}

#[async_trait]
impl ResourceImpl for NodePool {
    fn schema(&self) -> Block {
        schema()
    }

    fn validate(&self, config: &Value, diags: &mut Diags) {
        check(config, diags);
    }

    async fn plan(
        &self,
        prior: Option<&Value>,
        config: &Value,
        diags: &mut Diags,
    ) -> Option<Planned> {
        check(config, diags);
        if diags.has_errors() {
            return None;
        }
        let mut state = with_defaults(config);
        let requires_replace = prior.map(|p| replacing(p, &state)).unwrap_or_default();
        let prior = prior.filter(|_| requires_replace.is_empty());
        state.set("id", state.get("region").clone());
        let Some(spec) = spec_of(&state) else {
            // Some argument is known only after apply: so are the slots.
            for name in ["slots", "nodes", "ready_count", "reasons"] {
                state.set(name, Value::Unknown);
            }
            return Some(Planned {
                state,
                requires_replace,
            });
        };
        let clients = self.clients(diags)?;
        let live = Self::live(&clients.control_plane, diags).await?;
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
            Some(local) => Self::start_slots(&spec, local, &clients, &added, diags).await,
            None => Vec::new(),
        };

        let live = Self::live(&clients.control_plane, diags)
            .await
            .unwrap_or_default();
        let observer = Observer::of(planned)?;
        let recorded = prior.map(recorded_ids).unwrap_or_default();
        let leaving = observer.observe(&removed, &recorded, &live, now());
        let failed_removals = Self::remove_slots(&spec, &clients, &leaving, diags).await;

        let mut slots: Vec<String> = planned_slots
            .into_iter()
            .filter(|s| !failed_adds.contains(s))
            .chain(failed_removals)
            .collect();
        sort_slots(&spec.region, &mut slots);
        Some(
            self.settled(planned, &slots, &recorded, &clients, diags)
                .await,
        )
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
        let live = Self::live(&clients.control_plane, diags).await?;
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
        let failed = Self::remove_slots(&spec, &clients, &views, diags).await;
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
        let live = Self::live(&clients.control_plane, diags).await.ok_or(())?;
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
        let live = Self::live(&clients.control_plane, diags).await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn config(entries: &[(&str, Value)]) -> Value {
        let mut value = Value::Map(BTreeMap::new());
        for (k, v) in entries {
            value.set(k, v.clone());
        }
        value
    }

    fn local() -> Value {
        config(&[
            ("region", "jp".into()),
            ("min_nodes", Value::Int(1)),
            ("max_nodes", Value::Int(3)),
            ("desired_nodes", Value::Int(2)),
            ("address_range", "127.0.0.50-127.0.0.59".into()),
            ("state_dir", "/var/lib/neutral/pool/jp".into()),
        ])
    }

    fn problems(config: &Value) -> Vec<String> {
        let mut diags = Diags::default();
        check(config, &mut diags);
        diags
            .0
            .iter()
            .map(|d| format!("{}: {}: {}", d.path, d.summary, d.detail))
            .collect()
    }

    fn node(id: &str, region: &str, status: &str, hostname: Option<&str>) -> NodeView {
        serde_json::from_value(serde_json::json!({
            "id": id, "region": region, "address": "127.0.0.50", "status": status,
            "status_since": "2024-01-01T00:01:00Z", "registered_at": "2024-01-01T00:00:00Z",
            "hostname": hostname,
        }))
        .expect("node view")
    }

    #[test]
    fn a_local_pool_is_valid_and_gets_defaults() {
        assert_eq!(problems(&local()), Vec::<String>::new());
        let spec = spec_of(&with_defaults(&local())).expect("spec");
        assert_eq!(spec.launcher, Launcher::Local);
        assert_eq!(spec.drain_grace, Duration::from_secs(10));
        let settings = spec.local.expect("local settings");
        assert_eq!(settings.address_range.len(), 10);
        assert!(settings.agent_args.is_empty());
    }

    #[test]
    fn bad_values_are_reported_at_their_attribute() {
        let mut bad = local();
        bad.set("region", "JP".into());
        bad.set("min_nodes", Value::Int(4));
        bad.set("drain_grace", "soon".into());
        bad.set("address_range", "127.0.0.50-127.0.0.51".into());
        bad.set("state_dir", "pool/jp".into());
        bad.set("control_plane", "cp:7400".into());
        bad.set(
            "agent_args",
            Value::List(vec![
                "--probe-count".into(),
                "2".into(),
                "--ip=10.0.0.1".into(),
            ]),
        );
        bad.set("slots", Value::List(Vec::new()));
        expect_test::expect![[r#"
            slots: `slots` is computed by the provider: Remove it from the configuration: its value is set by the provider.
            region: invalid region name: `JP`: label `JP` contains `J`; use a-z, 0-9 and `-`
            min_nodes: min_nodes above max_nodes: min_nodes 4 is greater than max_nodes 3
            drain_grace: invalid duration: `soon`: expected a number at `soon` (write e.g. `10s`, `1m30s`, `500ms`)
            control_plane: invalid URL: `cp:7400` is not an http:// or https:// URL
            state_dir: state_dir must be absolute: `pool/jp` is relative: Terraform runs in changing folders (the scheduler exports each commit), the pool's agents must be found again
            agent_args[2]: flag set by the launcher: `--ip` is set by the local launcher for every agent; remove it from agent_args
            address_range: address range smaller than max_nodes: `127.0.0.50-127.0.0.51` holds 2 addresses; max_nodes is 3"#]]
        .assert_eq(&problems(&bad).join("\n"));
    }

    #[test]
    fn the_launchers_need_their_own_settings_only() {
        let mut bare = local();
        bare.set("address_range", Value::Null);
        bare.set("state_dir", Value::Null);
        let found = problems(&bare);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].starts_with("address_range: `address_range` is required"));
        assert!(found[1].starts_with("state_dir: `state_dir` is required"));

        let mut external = local();
        external.set("launcher", "external".into());
        let found = problems(&external);
        assert_eq!(
            found
                .iter()
                .map(|p| p.split(':').next().unwrap_or_default())
                .collect::<Vec<_>>(),
            ["address_range", "state_dir"]
        );
        external.set("address_range", Value::Null);
        external.set("state_dir", Value::Null);
        external.set("agent_args", Value::List(Vec::new()));
        assert!(problems(&external).is_empty());
        let spec = spec_of(&with_defaults(&external)).expect("spec");
        assert_eq!(spec.local, None);
    }

    #[test]
    fn unknown_arguments_leave_the_spec_unknown() {
        let mut later = local();
        later.set("desired_nodes", Value::Unknown);
        assert!(problems(&later).is_empty());
        assert_eq!(spec_of(&with_defaults(&later)), None);
    }

    #[test]
    fn region_changes_replace_and_launcher_changes_only_once_known() {
        let state = with_defaults(&local());
        let mut prior = state.clone();
        prior.set("region", "sg".into());
        assert_eq!(replacing(&prior, &state), [Path::attr("region")]);
        let mut imported = state.clone();
        imported.set("launcher", Value::Null);
        imported.set("state_dir", Value::Null);
        assert!(replacing(&imported, &state).is_empty());
        let mut moved = state.clone();
        moved.set("state_dir", "/elsewhere".into());
        assert_eq!(replacing(&moved, &state), [Path::attr("state_dir")]);
    }

    #[test]
    fn external_slots_take_nodes_by_hostname_then_unclaimed_oldest_first() {
        let live = vec![
            node("jp-bbb", "jp", "up", Some("jp-2")),
            node("jp-aaa", "jp", "up", Some("machine-a")),
            node("sg-ccc", "sg", "up", None),
        ];
        let observer = Observer {
            region: "jp",
            state_dir: None,
        };
        let slots = vec!["jp-1".to_owned(), "jp-2".to_owned(), "jp-3".to_owned()];
        let views = observer.observe(&slots, &BTreeMap::new(), &live, Timestamp::from_secs(0));
        let summary: Vec<String> = views
            .iter()
            .map(|v| format!("{}={}:{}", v.key, v.node_id().unwrap_or("-"), v.status))
            .collect();
        assert_eq!(
            summary,
            ["jp-1=jp-aaa:up", "jp-2=jp-bbb:up", "jp-3=-:pending"]
        );
    }

    #[test]
    fn a_recorded_node_stays_with_its_slot_while_registered() {
        let live = vec![node("jp-aaa", "jp", "drain", None)];
        let observer = Observer {
            region: "jp",
            state_dir: None,
        };
        let recorded = BTreeMap::from([
            ("jp-1".to_owned(), "jp-gone".to_owned()),
            ("jp-2".to_owned(), "jp-aaa".to_owned()),
        ]);
        let slots = vec!["jp-1".to_owned(), "jp-2".to_owned()];
        let views = observer.observe(&slots, &recorded, &live, Timestamp::from_secs(0));
        assert_eq!(views[0].node_id(), None);
        assert_eq!(views[1].node_id(), Some("jp-aaa"));
        assert_eq!(views[1].status, SlotStatus::Drain);
        let value = views[1].value();
        assert_eq!(value.get("address"), &Value::string("127.0.0.50"));
    }
}
