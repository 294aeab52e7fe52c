//! Platform-config loading and validation: a repository tree given as
//! `(path, content)` pairs in, typed [`Declarations`] plus every diagnostic out.
//!
//! This module owns the layout (which path holds which object, what is
//! ignored), reading file contents safely (size limit, UTF-8, symlinks
//! resolved lexically inside the given tree, never through the filesystem) and
//! putting the pieces together: `yaml` builds located trees with limits,
//! `decode` and `schema` read typed objects field by field, `tfvars` reads the
//! node pools, `checks` applies the rules that span files. It must not do IO:
//! the caller reads the repository and hands every file in.
//!
//! An object enters [`Loaded::declarations`] only when its file decoded
//! without error (and, for a GTM policy, when no earlier file declared the
//! same domain). The semantic checks still look at every object whose file
//! held a YAML mapping (or parsed as HCL), skipping only the fields that failed
//! to decode, so one run reports as much as possible without follow-up errors
//! caused by an earlier mistake. A region file that failed entirely still
//! declares its name: references to it are not reported as unknown.

pub(crate) mod checks;
pub(crate) mod decode;
mod schema;
mod tfvars;
pub mod yaml;

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::diag::{Diagnostic, Pos};
use crate::model::Declarations;

pub use self::decode::{dns_label_problem, normalize_dns_name};
pub use self::tfvars::{
    NODE_POOL_VARIABLES, TfvarsEditError, desired_nodes_in, node_pool_path, set_desired_nodes,
};

use self::checks::Decls;
use self::decode::{Decoded, Decoder};

/// Files larger than this are rejected without being parsed.
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// Symlinks followed from one path before giving up.
pub const MAX_SYMLINK_HOPS: usize = 8;

/// What a repository path holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileContent {
    /// A regular file's bytes.
    Bytes(Vec<u8>),
    /// A symbolic link and its target, as stored (relative or absolute).
    Symlink(String),
    /// A regular file the reader did not read because it is larger than
    /// [`MAX_FILE_BYTES`]; carries its size.
    Oversized(u64),
}

/// One file of the repository tree, by its path relative to the repository
/// root with `/` separators (e.g. `platform-config/regions/jp.yaml`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepoFile {
    pub path: String,
    pub content: FileContent,
}

/// The result of [`load`]: what could be understood, and every problem.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Loaded {
    pub declarations: Declarations,
    pub diagnostics: Vec<Diagnostic>,
}

impl Loaded {
    /// No error-severity diagnostics.
    pub fn is_valid(&self) -> bool {
        !crate::diag::has_errors(&self.diagnostics)
    }
}

/// Whether a repository path is one `load` reads: `platform-config/**` and
/// `infra/node-pool/**`.
pub fn is_config_path(path: &str) -> bool {
    path.starts_with("platform-config/") || path.starts_with("infra/node-pool/")
}

/// The kinds of object a repository declares, one per file.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ObjectKind {
    /// `platform-config/regions/<name>.yaml`
    Region,
    /// `platform-config/gtm/<name>.yaml`
    Gtm,
    /// `platform-config/autoscale/<region>.yaml`
    Autoscale,
    /// `infra/node-pool/<region>.tfvars`
    NodePool,
}

impl ObjectKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::Region => "region",
            ObjectKind::Gtm => "GTM policy",
            ObjectKind::Autoscale => "autoscale policy",
            ObjectKind::NodePool => "node pool",
        }
    }
}

/// What `load` does with a path.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum FileRole<'p> {
    /// Declares one object named `name` (the file stem).
    Object { kind: ObjectKind, name: &'p str },
    /// Under a config folder but not read; `warn` says whether `load` tells
    /// the user so (READMEs, `.gitkeep` and the Terraform files of the
    /// node-pool root are ignored silently).
    Ignored { warn: bool },
    /// Outside `platform-config/` and `infra/node-pool/`.
    Outside,
}

/// How `load` treats `path`.
pub fn file_role(path: &str) -> FileRole<'_> {
    if !is_config_path(path) {
        return FileRole::Outside;
    }
    let file_name = path.rsplit('/').next().unwrap_or_default();
    let lower = file_name.to_ascii_lowercase();
    if lower == "readme.md" || lower == "readme" || lower == ".gitkeep" {
        return FileRole::Ignored { warn: false };
    }
    let yaml_object = |folder: &str, kind| {
        let rest = path.strip_prefix(folder)?;
        let stem = rest
            .strip_suffix(".yaml")
            .or_else(|| rest.strip_suffix(".yml"))?;
        (!stem.is_empty() && !stem.contains('/')).then_some(FileRole::Object { kind, name: stem })
    };
    let object = yaml_object("platform-config/regions/", ObjectKind::Region)
        .or_else(|| yaml_object("platform-config/gtm/", ObjectKind::Gtm))
        .or_else(|| yaml_object("platform-config/autoscale/", ObjectKind::Autoscale));
    if let Some(object) = object {
        return object;
    }
    if let Some(rest) = path.strip_prefix("infra/node-pool/") {
        if let Some(stem) = rest.strip_suffix(".tfvars") {
            let auto_loaded = stem == "terraform" || stem.ends_with(".auto");
            if !stem.is_empty() && !stem.contains('/') && !auto_loaded {
                return FileRole::Object {
                    kind: ObjectKind::NodePool,
                    name: stem,
                };
            }
        }
        // The node-pool folder is a Terraform root: its configuration, lock
        // file and local working directory are expected there.
        let terraform_file = lower.ends_with(".tf")
            || lower.ends_with(".tf.json")
            || lower.ends_with(".hcl")
            || lower.contains(".tfstate")
            || rest.starts_with(".terraform/");
        if terraform_file {
            return FileRole::Ignored { warn: false };
        }
    }
    FileRole::Ignored { warn: true }
}

const IGNORED_HINT: &str = "file ignored: neutral reads platform-config/regions/<name>.yaml, platform-config/gtm/<name>.yaml, platform-config/autoscale/<region>.yaml and infra/node-pool/<region>.tfvars";

/// Parses and validates a repository tree.
///
/// `files` should hold every file under `platform-config/` and
/// `infra/node-pool/`; other paths are skipped (but may be symlink targets).
/// Diagnostics come sorted by path, line, column and message.
pub fn load(files: &[RepoFile]) -> Loaded {
    let mut tree: BTreeMap<&str, &FileContent> = BTreeMap::new();
    for file in files {
        tree.entry(file.path.as_str()).or_insert(&file.content);
    }
    let mut diagnostics = Vec::new();
    let mut decls = Decls::default();
    let mut declared: BTreeMap<(ObjectKind, &str), &str> = BTreeMap::new();
    for (&path, &content) in &tree {
        let (kind, name) = match file_role(path) {
            FileRole::Object { kind, name } => (kind, name),
            FileRole::Ignored { warn: true } => {
                // Not read, but a link out of the repository is worth an error.
                match follow_symlinks(&tree, path, content) {
                    Ok(_) => diagnostics.push(Diagnostic::warning(path, Pos::START, IGNORED_HINT)),
                    Err((pos, message)) => diagnostics.push(Diagnostic::error(path, pos, message)),
                }
                continue;
            }
            FileRole::Ignored { warn: false } | FileRole::Outside => continue,
        };
        match declared.entry((kind, name)) {
            Entry::Occupied(first) => {
                diagnostics.push(Diagnostic::error(
                    path,
                    Pos::START,
                    format!(
                        "{} `{name}` is already declared in {}",
                        kind.as_str(),
                        first.get()
                    ),
                ));
                continue;
            }
            Entry::Vacant(slot) => {
                slot.insert(path);
            }
        }
        let text = match read_text(&tree, path, content) {
            Ok(text) => text,
            Err((pos, message)) => {
                diagnostics.push(Diagnostic::error(path, pos, message));
                if kind == ObjectKind::Region {
                    // The region exists even if its file cannot be read:
                    // references to it are not "unknown".
                    decls.regions.push(Decoded {
                        path: path.to_owned(),
                        stem: name.to_owned(),
                        value: None,
                        places: decode::Places::default(),
                        clean: false,
                    });
                }
                continue;
            }
        };
        decode_file(&mut decls, &mut diagnostics, path, text, kind, name);
    }
    let outcome = checks::run(&decls, &mut diagnostics);
    let declarations = declarations(&decls, &outcome.duplicate_gtm);
    sort_diagnostics(&mut diagnostics);
    Loaded {
        declarations,
        diagnostics,
    }
}

/// Where `field` of the object declared at `path` is written: the place
/// `load`'s diagnostics for that field point at, or where the object starts
/// when the field is absent. Field names are as `load` records them:
/// `state`, `base_weight`, `regions` or `regions.jp` (a map key),
/// `desired_nodes`, `probe.port`. `None` when `path` declares no object or
/// its text cannot be read (oversized, invalid UTF-8, a broken symlink).
///
/// For callers that report on a tree `load` already accepted (the what-if
/// checks): the file is decoded again, so this costs one file's parse.
pub fn locate(files: &[RepoFile], path: &str, field: &str) -> Option<Pos> {
    let FileRole::Object { kind, name } = file_role(path) else {
        return None;
    };
    let mut tree: BTreeMap<&str, &FileContent> = BTreeMap::new();
    for file in files {
        tree.entry(file.path.as_str()).or_insert(&file.content);
    }
    let content = tree.get(path).copied()?;
    let text = read_text(&tree, path, content).ok()?;
    let mut decls = Decls::default();
    let mut ignored = Vec::new();
    decode_file(&mut decls, &mut ignored, path, text, kind, name);
    let places = match kind {
        ObjectKind::Region => decls.regions.first().map(|d| &d.places),
        ObjectKind::Gtm => decls.gtm.first().map(|d| &d.places),
        ObjectKind::Autoscale => decls.autoscale.first().map(|d| &d.places),
        ObjectKind::NodePool => decls.pools.first().map(|d| &d.places),
    }?;
    Some(places.at(field))
}

fn decode_file(
    decls: &mut Decls,
    diagnostics: &mut Vec<Diagnostic>,
    path: &str,
    text: &str,
    kind: ObjectKind,
    name: &str,
) {
    let mut decoder = Decoder::new(path, diagnostics);
    macro_rules! decoded {
        ($value:expr) => {{
            let value = $value;
            Decoded {
                path: path.to_owned(),
                stem: name.to_owned(),
                value,
                clean: !decoder.has_errors(),
                places: std::mem::take(&mut decoder.places),
            }
        }};
    }
    match kind {
        ObjectKind::Region => {
            let decoded = decoded!(schema::region(&mut decoder, text, name));
            decls.regions.push(decoded);
        }
        ObjectKind::Gtm => {
            let decoded = decoded!(schema::gtm(&mut decoder, text, name));
            decls.gtm.push(decoded);
        }
        ObjectKind::Autoscale => {
            let decoded = decoded!(schema::autoscale(&mut decoder, text, name));
            decls.autoscale.push(decoded);
        }
        ObjectKind::NodePool => {
            let decoded = decoded!(tfvars::node_pool(&mut decoder, text, name));
            decls.pools.push(decoded);
        }
    }
}

/// The objects whose files decoded cleanly.
fn declarations(decls: &Decls, duplicate_gtm: &BTreeSet<usize>) -> Declarations {
    fn clean<T: Clone>(decoded: &Decoded<T>) -> Option<(String, T)> {
        let value = decoded.value.clone().filter(|_| decoded.clean)?;
        Some((decoded.stem.clone(), value))
    }
    Declarations {
        regions: decls.regions.iter().filter_map(clean).collect(),
        gtm: decls
            .gtm
            .iter()
            .enumerate()
            .filter(|(index, _)| !duplicate_gtm.contains(index))
            .filter_map(|(_, decoded)| clean(decoded))
            .map(|(_, policy)| (policy.domain.clone(), policy))
            .collect(),
        autoscale: decls.autoscale.iter().filter_map(clean).collect(),
        node_pools: decls.pools.iter().filter_map(clean).collect(),
    }
}

/// Sorts by (path, line, column, message) and drops exact repeats.
pub fn sort_diagnostics(diagnostics: &mut Vec<Diagnostic>) {
    diagnostics.sort_by(|a, b| {
        (&a.path, a.line, a.col, &a.message, a.severity)
            .cmp(&(&b.path, b.line, b.col, &b.message, b.severity))
    });
    diagnostics.dedup();
}

type ReadError = (Pos, String);

/// The text of `path`: symlinks followed inside the tree, size and UTF-8
/// checked.
fn read_text<'t>(
    tree: &BTreeMap<&str, &'t FileContent>,
    path: &str,
    content: &'t FileContent,
) -> Result<&'t str, ReadError> {
    let bytes = match follow_symlinks(tree, path, content)? {
        FileContent::Bytes(bytes) => bytes,
        FileContent::Oversized(size) => return Err(too_big(*size)),
        FileContent::Symlink(_) => {
            return Err((Pos::START, "symlink could not be resolved".to_owned()));
        }
    };
    let size = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
    if size > MAX_FILE_BYTES {
        return Err(too_big(size));
    }
    std::str::from_utf8(bytes).map_err(|error| {
        let valid = bytes.get(..error.valid_up_to()).unwrap_or_default();
        let prefix = std::str::from_utf8(valid).unwrap_or_default();
        let bad = bytes.get(error.valid_up_to()).copied().unwrap_or_default();
        (
            Pos::of_offset(prefix, prefix.len()),
            format!("invalid UTF-8 (byte 0x{bad:02x}); platform-config files must be UTF-8 text"),
        )
    })
}

fn too_big(size: u64) -> ReadError {
    (
        Pos::START,
        format!("file is {size} bytes; the limit is {MAX_FILE_BYTES}"),
    )
}

/// Follows a chain of symlinks from `path` to regular content in `tree`.
fn follow_symlinks<'t>(
    tree: &BTreeMap<&str, &'t FileContent>,
    path: &str,
    content: &'t FileContent,
) -> Result<&'t FileContent, ReadError> {
    let mut current_path = path.to_owned();
    let mut current = content;
    let mut visited = vec![path.to_owned()];
    let mut hops = 0usize;
    while let FileContent::Symlink(target) = current {
        hops = hops.saturating_add(1);
        if hops > MAX_SYMLINK_HOPS {
            return Err((
                Pos::START,
                format!("symlink chain longer than {MAX_SYMLINK_HOPS} links"),
            ));
        }
        let resolved = resolve_link(&current_path, target).ok_or_else(|| {
            (
                Pos::START,
                format!("symlink points outside the repository: {target}"),
            )
        })?;
        if visited.contains(&resolved) {
            visited.push(resolved);
            return Err((
                Pos::START,
                format!("symlink loop: {}", visited.join(" -> ")),
            ));
        }
        let Some(&next) = tree.get(resolved.as_str()) else {
            let directory = format!("{resolved}/");
            let is_directory = tree
                .range(directory.as_str()..)
                .next()
                .is_some_and(|(candidate, _)| candidate.starts_with(&directory));
            let message = if is_directory {
                format!(
                    "symlink points to a directory ({resolved}); only symlinks to files are followed"
                )
            } else if is_config_path(&resolved) {
                format!("symlink target not found: {resolved}")
            } else {
                format!(
                    "symlink target not found: {resolved} (only files under platform-config/ and infra/node-pool/ are read)"
                )
            };
            return Err((Pos::START, message));
        };
        visited.push(resolved.clone());
        current_path = resolved;
        current = next;
    }
    Ok(current)
}

/// Resolves symlink `target` lexically against the folder of `link`, both
/// relative to the repository root. `None` when the result leaves the
/// repository (absolute targets always do).
pub fn resolve_link(link: &str, target: &str) -> Option<String> {
    if target.starts_with('/') || target.starts_with('\\') || target.contains(":\\") {
        return None;
    }
    let mut parts: Vec<&str> = link.split('/').collect();
    parts.pop();
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            name => parts.push(name),
        }
    }
    if parts.is_empty() {
        return None;
    }
    Some(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locate_finds_fields_where_load_reports_them() {
        let bytes = |text: &str| FileContent::Bytes(text.as_bytes().to_vec());
        let files = [
            RepoFile {
                path: "platform-config/regions/jp.yaml".into(),
                content: bytes("name: jp\nprovider: local\nmax_nodes: 5\nstate: down\n"),
            },
            RepoFile {
                path: "platform-config/gtm/app.yaml".into(),
                content: bytes("domain: app.example.com\nzone: example.com\nregions:\n  jp: 0\n"),
            },
            RepoFile {
                path: "infra/node-pool/jp.tfvars".into(),
                content: bytes("# jp\nregion = \"jp\"\ndesired_nodes = 0\n"),
            },
            RepoFile {
                path: "platform-config/regions/link.yaml".into(),
                content: FileContent::Symlink("jp.yaml".into()),
            },
        ];
        let at = |path: &str, field: &str| locate(&files, path, field);
        assert_eq!(
            at("platform-config/regions/jp.yaml", "state"),
            Some(Pos::new(4, 8))
        );
        assert_eq!(
            at("platform-config/gtm/app.yaml", "regions.jp"),
            Some(Pos::new(4, 3))
        );
        assert_eq!(
            at("infra/node-pool/jp.tfvars", "desired_nodes"),
            Some(Pos::new(3, 17))
        );
        // An absent field: where the object starts.
        assert_eq!(
            at("platform-config/regions/jp.yaml", "failover"),
            Some(Pos::START)
        );
        // Links are followed inside the tree, as `load` does.
        assert_eq!(
            at("platform-config/regions/link.yaml", "state"),
            Some(Pos::new(4, 8))
        );
        assert_eq!(at("platform-config/regions/none.yaml", "state"), None);
        assert_eq!(at("docs/readme.md", "state"), None);
    }

    #[test]
    fn paths_map_to_object_kinds_by_folder_and_extension() {
        let object = |kind, name| FileRole::Object { kind, name };
        assert_eq!(
            file_role("platform-config/regions/jp.yaml"),
            object(ObjectKind::Region, "jp")
        );
        assert_eq!(
            file_role("platform-config/gtm/app.yml"),
            object(ObjectKind::Gtm, "app")
        );
        assert_eq!(
            file_role("platform-config/autoscale/sg.yaml"),
            object(ObjectKind::Autoscale, "sg")
        );
        assert_eq!(
            file_role("infra/node-pool/jp.tfvars"),
            object(ObjectKind::NodePool, "jp")
        );
        let silent = FileRole::Ignored { warn: false };
        let warned = FileRole::Ignored { warn: true };
        assert_eq!(file_role("platform-config/README.md"), silent);
        assert_eq!(file_role("infra/node-pool/main.tf"), silent);
        assert_eq!(file_role("infra/node-pool/.terraform.lock.hcl"), silent);
        assert_eq!(file_role("infra/node-pool/terraform.tfvars"), warned);
        assert_eq!(file_role("platform-config/regions/old/jp.yaml"), warned);
        assert_eq!(file_role("platform-config/regions/jp.json"), warned);
        assert_eq!(file_role("platform-config/evil.yaml"), warned);
        assert_eq!(file_role("infra/gtm/main.tf"), FileRole::Outside);
    }

    #[test]
    fn symlinks_resolve_lexically_and_never_leave_the_root() {
        assert_eq!(
            resolve_link("platform-config/regions/jp.yaml", "../shared/jp.yaml"),
            Some("platform-config/shared/jp.yaml".into())
        );
        assert_eq!(
            resolve_link("platform-config/regions/jp.yaml", "./sg.yaml"),
            Some("platform-config/regions/sg.yaml".into())
        );
        assert_eq!(
            resolve_link("platform-config/regions/jp.yaml", "../../../x"),
            None
        );
        assert_eq!(
            resolve_link("platform-config/regions/jp.yaml", "../../README.md"),
            Some("README.md".into())
        );
        assert_eq!(resolve_link("platform-config/a.yaml", "/etc/passwd"), None);
        assert_eq!(resolve_link("platform-config/a.yaml", ".."), None);
    }

    fn bytes(path: &str, text: &str) -> RepoFile {
        RepoFile {
            path: path.into(),
            content: FileContent::Bytes(text.as_bytes().to_vec()),
        }
    }

    fn link(path: &str, target: &str) -> RepoFile {
        RepoFile {
            path: path.into(),
            content: FileContent::Symlink(target.into()),
        }
    }

    fn rendered(files: &[RepoFile]) -> Vec<String> {
        load(files)
            .diagnostics
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    const JP: &str = "name: jp\nprovider: edge\nmax_nodes: 3\n";

    #[test]
    fn a_symlink_inside_the_tree_reads_its_target() {
        let files = [
            bytes("platform-config/shared/jp.yaml", JP),
            link("platform-config/regions/jp.yaml", "../shared/jp.yaml"),
        ];
        let loaded = load(&files);
        assert!(loaded.declarations.regions.contains_key("jp"));
        assert_eq!(
            rendered(&files),
            [
                "platform-config/shared/jp.yaml:1:1: warning: file ignored: neutral reads platform-config/regions/<name>.yaml, platform-config/gtm/<name>.yaml, platform-config/autoscale/<region>.yaml and infra/node-pool/<region>.tfvars"
            ]
        );
    }

    #[test]
    fn symlink_loops_and_missing_targets_are_errors() {
        let files = [
            link("platform-config/regions/a.yaml", "b.yaml"),
            link("platform-config/regions/b.yaml", "a.yaml"),
            link("platform-config/regions/c.yaml", "../gtm"),
            link("platform-config/regions/d.yaml", "nope.yaml"),
            bytes("platform-config/gtm/x.txt", ""),
        ];
        assert_eq!(
            rendered(&files),
            [
                "platform-config/gtm/x.txt:1:1: warning: file ignored: neutral reads platform-config/regions/<name>.yaml, platform-config/gtm/<name>.yaml, platform-config/autoscale/<region>.yaml and infra/node-pool/<region>.tfvars",
                "platform-config/regions/a.yaml:1:1: error: symlink loop: platform-config/regions/a.yaml -> platform-config/regions/b.yaml -> platform-config/regions/a.yaml",
                "platform-config/regions/b.yaml:1:1: error: symlink loop: platform-config/regions/b.yaml -> platform-config/regions/a.yaml -> platform-config/regions/b.yaml",
                "platform-config/regions/c.yaml:1:1: error: symlink points to a directory (platform-config/gtm); only symlinks to files are followed",
                "platform-config/regions/d.yaml:1:1: error: symlink target not found: platform-config/regions/nope.yaml",
            ]
        );
    }

    #[test]
    fn invalid_utf8_is_reported_at_the_first_bad_byte() {
        let mut text = b"name: jp\nprovider: \xc3\xa7\xff\n".to_vec();
        text.extend_from_slice(b"max_nodes: 1\n");
        let files = [RepoFile {
            path: "platform-config/regions/jp.yaml".into(),
            content: FileContent::Bytes(text),
        }];
        assert_eq!(
            rendered(&files),
            [
                "platform-config/regions/jp.yaml:2:12: error: invalid UTF-8 (byte 0xff); platform-config files must be UTF-8 text"
            ]
        );
    }

    #[test]
    fn the_same_object_in_two_files_is_an_error_at_the_second() {
        let files = [
            bytes("platform-config/regions/jp.yaml", JP),
            bytes("platform-config/regions/jp.yml", JP),
        ];
        assert_eq!(
            rendered(&files),
            [
                "platform-config/regions/jp.yml:1:1: error: region `jp` is already declared in platform-config/regions/jp.yaml"
            ]
        );
    }

    #[test]
    fn an_unreadable_region_file_still_declares_the_region() {
        let files = [
            RepoFile {
                path: "platform-config/regions/jp.yaml".into(),
                content: FileContent::Oversized(MAX_FILE_BYTES + 1),
            },
            bytes(
                "infra/node-pool/jp.tfvars",
                "region = \"jp\"\ndesired_nodes = 1\n",
            ),
        ];
        assert_eq!(
            rendered(&files),
            [
                "platform-config/regions/jp.yaml:1:1: error: file is 1048577 bytes; the limit is 1048576"
            ]
        );
    }

    #[test]
    fn only_clean_objects_enter_the_declarations() {
        let files = [
            bytes("platform-config/regions/jp.yaml", JP),
            bytes(
                "platform-config/regions/sg.yaml",
                "name: sg\nprovider: edge\nmax_nodes: 3\ncolour: red\n",
            ),
        ];
        let loaded = load(&files);
        assert!(!loaded.is_valid());
        assert_eq!(
            loaded.declarations.regions.keys().collect::<Vec<_>>(),
            ["jp"]
        );
    }
}
