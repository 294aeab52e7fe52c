//! What can stop a hook from doing its job (as opposed to a refusal, which
//! is a verdict). A leaf: it names the other modules' error types and
//! reads nothing else of the crate.

use std::path::PathBuf;

use crate::updates;

/// A hook could not do its job.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("reading the hook's input: {0}")]
    Input(#[from] updates::BadLine),
    #[error(transparent)]
    Git(#[from] neutral_git::GitError),
    #[error("opening the repository ({}): {source}", path.display())]
    Open { path: PathBuf, source: git2::Error },
    #[error("writing the hook's output: {0}")]
    Io(#[from] std::io::Error),
}
