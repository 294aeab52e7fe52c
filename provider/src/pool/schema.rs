//! The `neutral_node_pool` schema and its arguments: defaults, the checks
//! of known values (each problem at its attribute) and the spec they make.
//! A leaf of `pool`.

use std::collections::BTreeMap;
use std::path::{Path as FsPath, PathBuf};
use std::time::Duration;

use neutral_core::config::dns_label_problem;
use neutral_core::model::parse_duration;
use neutral_core::pool::{AddressRange, MAX_NODES};

use crate::config::base_url;
use crate::docker_launcher::DockerTarget;
use crate::framework::{
    Attribute, Block, Constraint, Diags, Path, Type, Value, known_choice, known_int,
};
use crate::launcher::LAUNCHER_FLAGS;
use crate::secret::Secret;

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
pub(super) const LOCAL_ONLY: [&str; 6] = [
    "control_plane",
    "join_token",
    "address_range",
    "state_dir",
    "agent_args",
    "neutral_binary",
];
/// The attributes only the `docker` launcher uses.
pub(super) const DOCKER_ONLY: [&str; 4] = [
    "docker_image",
    "docker_network",
    "docker_args",
    "docker_binaries",
];
pub(super) const ARGUMENTS: [&str; 16] = [
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
pub(super) const COMPUTED: [&str; 5] = ["id", "slots", "nodes", "ready_count", "reasons"];

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Launcher {
    Local,
    External,
    Docker,
}

pub(super) const LAUNCHERS: [(&str, Launcher); 3] = [
    ("local", Launcher::Local),
    ("external", Launcher::External),
    ("docker", Launcher::Docker),
];

pub(super) fn node_type() -> Type {
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
                 its subnet. Each node's container gets its slot's address there. `{region}` \
                 stands for the pool's region, so one operator setting can name every region's \
                 network (`edge-{region}`).",
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

pub(super) fn known_duration(value: &Value, path: &Path, diags: &mut Diags) -> Option<Duration> {
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

pub(super) fn known_range(value: &Value, diags: &mut Diags) -> Option<AddressRange> {
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

pub(super) fn known_args(value: &Value, diags: &mut Diags) -> Option<Vec<String>> {
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
    // An unknown launcher (a module's input at validate time) decides nothing.
    if launcher.is_some_and(|l| l != Launcher::Docker) {
        for name in DOCKER_ONLY {
            let value = config.get(name);
            let unset = value.is_null() || value.as_list().is_some_and(<[Value]>::is_empty);
            if !unset && !value.is_unknown() {
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
pub(super) fn with_defaults(config: &Value) -> Value {
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

/// The Docker network of `region`'s pool: `docker_network` with its
/// `{region}` placeholder filled in.
pub fn network_of(docker_network: &str, region: &str) -> String {
    docker_network.replace("{region}", region)
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
                            network: network_of(state.get("docker_network").as_str()?, &region),
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
pub(super) fn check_quietly(state: &Value, diags: &mut Diags) {
    let mut arguments = state.clone();
    for name in COMPUTED {
        arguments.set(name, Value::Null);
    }
    check(&arguments, diags);
}

/// Arguments whose change replaces the pool: the region always; the
/// launcher and the state folder when the prior state had them (an
/// imported pool has neither and adopts the configuration's).
pub(super) fn replacing(prior: &Value, state: &Value) -> Vec<Path> {
    ["region", "launcher", "state_dir"]
        .into_iter()
        .filter(|name| {
            let before = prior.get(name);
            before != state.get(name) && (*name == "region" || !before.is_null())
        })
        .map(Path::attr)
        .collect()
}

/// The strings of a list value (other items skipped).
pub(super) fn strings_of(value: &Value) -> Vec<String> {
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
