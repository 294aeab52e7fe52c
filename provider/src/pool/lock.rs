//! The operator's launcher lock: which program-running launcher settings a
//! `neutral_node_pool` may have when `neutral serve`'s scheduler runs
//! Terraform.
//!
//! `neutral_binary`, `agent_args` and the `docker_*` settings decide which
//! program the provider starts on the control plane's host, `state_dir`
//! where it writes, and `control_plane` where the agents it starts send
//! their join token. In a repository anyone who can push may edit HCL and
//! tfvars, so those values must come from the operator, not from Git. The
//! scheduler passes the operator's values (its own `TF_VAR_*` environment)
//! as JSON in [`LOCK_ENV`]; when it is set, a pool whose settings differ
//! is refused at its attribute, naming the operator's setting. Without the
//! variable (a team's CI running Terraform on its own repository, the
//! provider's tests) nothing is locked.
//!
//! This module only compares values; it starts nothing. The environment is
//! read once, at the provider's start.

use std::collections::BTreeMap;
use std::path::{Component, Path as FsPath};
use std::sync::OnceLock;

use serde::Deserialize;

use crate::framework::{Diags, Path, Value};

/// The variable holding the lock, as JSON.
pub const LOCK_ENV: &str = "NEUTRAL_LAUNCHER_LOCK";

/// The operator's launcher settings. Absent fields are `null` / `[]`: the
/// repository may not set them either.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LauncherLock {
    #[serde(default)]
    pub neutral_binary: Option<String>,
    #[serde(default)]
    pub agent_args: Vec<String>,
    /// Every `state_dir` must lie inside this folder.
    #[serde(default)]
    pub state_root: Option<String>,
    #[serde(default)]
    pub docker_image: Option<String>,
    #[serde(default)]
    pub docker_network: Option<String>,
    #[serde(default)]
    pub docker_args: Vec<String>,
    #[serde(default)]
    pub docker_binaries: Option<String>,
    /// Where each region's agents register (the operator's
    /// `TF_VAR_control_planes`): a pool may name its region's, or none (the
    /// provider's own endpoint, the control plane that runs it).
    #[serde(default)]
    pub control_planes: BTreeMap<String, String>,
}

/// The lock in force: `None` when [`LOCK_ENV`] is unset; `Err` (refuse
/// every pool) when it is set but unreadable.
pub fn current() -> Option<&'static Result<LauncherLock, String>> {
    static LOCK: OnceLock<Option<Result<LauncherLock, String>>> = OnceLock::new();
    LOCK.get_or_init(|| {
        std::env::var_os(LOCK_ENV).map(|raw| {
            let text = raw
                .into_string()
                .map_err(|_| format!("{LOCK_ENV} is not UTF-8"))?;
            parse(&text)
        })
    })
    .as_ref()
}

/// Reads a lock's JSON.
pub fn parse(text: &str) -> Result<LauncherLock, String> {
    serde_json::from_str(text).map_err(|err| format!("{LOCK_ENV} is not a valid lock: {err}"))
}

/// Checks `config`'s known launcher settings against the lock in force.
pub fn check_current(config: &Value, diags: &mut Diags) {
    match current() {
        None => {}
        Some(Ok(lock)) => lock.check(config, diags),
        Some(Err(problem)) => diags.error(
            Path::attr("launcher"),
            "the operator's launcher lock is unreadable",
            format!("{problem}; no pool is started until the operator fixes it"),
        ),
    }
}

impl LauncherLock {
    /// Adds an error for each known setting of `config` that the lock does
    /// not allow. An external pool starts nothing and is not checked.
    pub fn check(&self, config: &Value, diags: &mut Diags) {
        if config.get("launcher").as_str() == Some("external") {
            return;
        }
        // The `docker_*` settings start nothing under another launcher
        // (validation refuses them there), so only a docker pool must match
        // them: one operator may run local and docker pools side by side.
        let docker = config.get("launcher").as_str() == Some("docker");
        let strings = [
            ("neutral_binary", &self.neutral_binary, true),
            ("docker_image", &self.docker_image, docker),
            ("docker_network", &self.docker_network, docker),
            ("docker_binaries", &self.docker_binaries, docker),
        ];
        for (name, allowed, checked) in strings {
            if !checked {
                continue;
            }
            let given = match config.get(name) {
                Value::Null => None,
                Value::String(text) => Some(text.as_str()),
                _ => continue,
            };
            if given != allowed.as_deref() {
                refuse(diags, name, &describe(allowed.as_deref()));
            }
        }
        let lists = [
            ("agent_args", &self.agent_args, true),
            ("docker_args", &self.docker_args, docker),
        ];
        for (name, allowed, checked) in lists {
            if !checked {
                continue;
            }
            let Some(given) = known_strings(config.get(name)) else {
                continue;
            };
            if &given != allowed {
                refuse(diags, name, &format!("{allowed:?}"));
            }
        }
        if let (Some(root), Value::String(dir)) = (&self.state_root, config.get("state_dir"))
            && !inside(FsPath::new(dir), FsPath::new(root))
        {
            refuse(diags, "state_dir", &format!("a folder inside `{root}`"));
        }
        if let Value::String(url) = config.get("control_plane") {
            let region = config.get("region").as_str().unwrap_or("?");
            let allowed = self.control_planes.get(region);
            if Some(url) != allowed {
                diags.error(
                    Path::attr("control_plane"),
                    "set by the operator, not the repository",
                    format!(
                        "`control_plane` is where the pool's agents register, sending their \
                         join token, so under `neutral serve` it must be unset (the control plane \
                         itself) or the operator's URL for region {region} (TF_VAR_control_planes \
                         in the daemon's environment): {}. Remove it from the repository's \
                         configuration or ask the operator to change it.",
                        describe(allowed.map(String::as_str))
                    ),
                );
            }
        }
    }
}

fn refuse(diags: &mut Diags, name: &str, allowed: &str) {
    diags.error(
        Path::attr(name),
        "set by the operator, not the repository",
        format!(
            "`{name}` decides what the provider runs or writes on the control plane's host, so \
             under `neutral serve` it must be what the operator gave (TF_VAR_{name} in the \
             daemon's environment): {allowed}. Remove it from the repository's configuration \
             or ask the operator to change it."
        ),
    );
}

fn describe(allowed: Option<&str>) -> String {
    allowed.map_or_else(|| "unset".to_owned(), |value| format!("`{value}`"))
}

/// A known list of strings (`null` is empty), or `None` while any part is
/// unknown.
fn known_strings(value: &Value) -> Option<Vec<String>> {
    match value {
        Value::Null => Some(Vec::new()),
        Value::List(items) => items
            .iter()
            .map(|item| item.as_str().map(str::to_owned))
            .collect(),
        _ => None,
    }
}

/// Whether `dir` is `root` or below it, without `..` or `.` tricks.
fn inside(dir: &FsPath, root: &FsPath) -> bool {
    let plain = |path: &FsPath| {
        path.is_absolute()
            && path
                .components()
                .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
    };
    plain(dir) && plain(root) && dir.starts_with(root)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(pairs: &[(&str, Value)]) -> Value {
        let mut config = Value::Map(Default::default());
        for (name, value) in pairs {
            config.set(name, value.clone());
        }
        config
    }

    fn errors(lock: &LauncherLock, config: &Value) -> Vec<String> {
        let mut diags = Diags::default();
        lock.check(config, &mut diags);
        diags
            .0
            .iter()
            .map(|d| format!("{}: {}", d.path, d.summary))
            .collect()
    }

    fn text(s: &str) -> Value {
        Value::String(s.to_owned())
    }

    fn list(items: &[&str]) -> Value {
        Value::List(items.iter().map(|s| text(s)).collect())
    }

    fn operator() -> LauncherLock {
        parse(
            r#"{"neutral_binary": "/usr/bin/neutral", "agent_args": ["--runtime", "process"],
                "state_root": "/var/lib/neutral/nodes"}"#,
        )
        .unwrap()
    }

    #[test]
    fn the_operators_values_pass() {
        let config = pool(&[
            ("launcher", text("local")),
            ("neutral_binary", text("/usr/bin/neutral")),
            ("agent_args", list(&["--runtime", "process"])),
            ("state_dir", text("/var/lib/neutral/nodes/jp")),
        ]);
        assert_eq!(errors(&operator(), &config), Vec::<String>::new());
    }

    #[test]
    fn a_repository_program_arguments_or_folder_is_refused_at_its_attribute() {
        let config = pool(&[
            ("launcher", text("docker")),
            ("neutral_binary", text("/bin/sh")),
            (
                "agent_args",
                list(&["--runtime", "process", "--command", "x"]),
            ),
            ("state_dir", text("/var/lib/neutral/nodes/../../../etc")),
            ("docker_image", text("debian")),
        ]);
        assert_eq!(
            errors(&operator(), &config),
            [
                "neutral_binary: set by the operator, not the repository",
                "docker_image: set by the operator, not the repository",
                "agent_args: set by the operator, not the repository",
                "state_dir: set by the operator, not the repository",
            ]
        );
    }

    #[test]
    fn unset_in_the_lock_means_unset_in_the_repository_and_unknowns_wait() {
        let lock = LauncherLock::default();
        let config = pool(&[
            ("launcher", text("docker")),
            ("neutral_binary", Value::Unknown),
            ("agent_args", Value::Null),
            ("docker_args", list(&["--privileged"])),
        ]);
        assert_eq!(
            errors(&lock, &config),
            ["docker_args: set by the operator, not the repository"]
        );
    }

    #[test]
    fn a_local_pool_beside_the_operators_docker_pools_is_held_to_the_rest() {
        let lock = parse(
            r#"{"neutral_binary": "/usr/bin/neutral", "docker_image": "edge:1",
                "docker_network": "edge-{region}", "docker_args": ["--privileged"]}"#,
        )
        .unwrap();
        let local = pool(&[
            ("launcher", text("local")),
            ("neutral_binary", text("/usr/bin/neutral")),
        ]);
        assert_eq!(errors(&lock, &local), Vec::<String>::new());
        let docker = pool(&[
            ("launcher", text("docker")),
            ("neutral_binary", text("/usr/bin/neutral")),
            ("docker_image", text("edge:1")),
            ("docker_network", text("edge-jp")),
            ("docker_args", list(&["--privileged"])),
        ]);
        assert_eq!(
            errors(&lock, &docker),
            ["docker_network: set by the operator, not the repository"],
            "the placeholder is the operator's setting; the provider fills it in"
        );
    }

    #[test]
    fn agents_register_only_where_the_operator_said_for_their_region() {
        let lock = parse(
            r#"{"control_planes": {"jp": "http://10.0.1.1:7400", "sg": "http://10.0.2.1:7400"}}"#,
        )
        .unwrap();
        let with = |region: &str, control_plane: Value| {
            pool(&[
                ("launcher", text("local")),
                ("region", text(region)),
                ("control_plane", control_plane),
            ])
        };
        assert_eq!(
            errors(&lock, &with("jp", text("http://10.0.1.1:7400"))),
            Vec::<String>::new()
        );
        assert_eq!(
            errors(&lock, &with("jp", Value::Null)),
            Vec::<String>::new()
        );
        assert_eq!(
            errors(&lock, &with("jp", Value::Unknown)),
            Vec::<String>::new()
        );
        for (region, url) in [
            ("jp", "http://attacker.example:7400"),
            ("jp", "http://10.0.2.1:7400"),
            ("us", "http://10.0.1.1:7400"),
        ] {
            assert_eq!(
                errors(&lock, &with(region, text(url))),
                ["control_plane: set by the operator, not the repository"],
                "{region} {url}"
            );
        }
        // Without the operator's map, a pool names no control plane at all.
        assert_eq!(
            errors(
                &LauncherLock::default(),
                &with("jp", text("http://10.0.1.1:7400"))
            ),
            ["control_plane: set by the operator, not the repository"]
        );
    }

    #[test]
    fn an_external_pool_starts_nothing_and_is_not_checked() {
        let config = pool(&[
            ("launcher", text("external")),
            ("neutral_binary", text("/bin/sh")),
        ]);
        assert_eq!(errors(&operator(), &config), Vec::<String>::new());
    }

    #[test]
    fn a_malformed_lock_is_an_error_naming_the_variable() {
        let problem = parse(r#"{"neutral_binary": 3}"#).unwrap_err();
        assert!(
            problem.starts_with("NEUTRAL_LAUNCHER_LOCK is not a valid lock"),
            "{problem}"
        );
        assert!(
            parse(r#"{"binary": "x"}"#).is_err(),
            "unknown fields are refused"
        );
    }

    #[test]
    fn folders_inside_the_root_only() {
        let root = FsPath::new("/data/nodes");
        assert!(inside(FsPath::new("/data/nodes/jp"), root));
        assert!(inside(FsPath::new("/data/nodes"), root));
        assert!(!inside(FsPath::new("/data/nodes-evil"), root));
        assert!(!inside(FsPath::new("/data/nodes/../x"), root));
        assert!(!inside(FsPath::new("data/nodes/jp"), root));
    }
}
