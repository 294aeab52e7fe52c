//! Platform-config loading and validation: a repository tree given as
//! `(path, content)` pairs in, typed [`Declarations`] plus every diagnostic out.
//!
//! STUB: replaced by the config implementation.

use serde::{Deserialize, Serialize};

use crate::diag::Diagnostic;
use crate::model::Declarations;

/// Files larger than this are rejected without being parsed.
pub const MAX_FILE_BYTES: u64 = 1 << 20;

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

/// Parses and validates a repository tree.
pub fn load(files: &[RepoFile]) -> Loaded {
    let _ = files;
    Loaded::default()
}
