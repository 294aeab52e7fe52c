//! `neutral hook pre-commit`: the same judgement as `pre-receive`, on the
//! index (the staged content) of a working clone, so people learn about a
//! problem before they push.
//!
//! The staged `platform-config/` and `infra/node-pool/` files are read by the
//! index entries' blob ids (git sets `GIT_INDEX_FILE` for `git commit -a` and
//! `git commit <paths>`, which [`git2::Repository::open_from_env`] honours);
//! "before" is `HEAD` (nothing on an unborn branch). A commit that stages no
//! change under those folders (nor under `infra/`, `modules/` or the
//! Terraform policy file, which the Terraform policy judges) is not judged at all: a clone whose
//! configuration is already broken can still commit other work. This module
//! owns that; it must not validate by itself.

use std::io::Write;
use std::time::Instant;

use git2::Repository;
use neutral_core::config::RepoFile;

use crate::check::{self, LiveHealth};
use crate::error::HookError;
use crate::settings::Settings;

/// Judges the index of `repo`; `Ok(true)` lets the commit go ahead.
pub fn run(
    repo: &Repository,
    settings: &Settings,
    out: &mut dyn Write,
    started: Instant,
) -> Result<bool, HookError> {
    let staged = neutral_git::config_index(repo)?;
    let head = head_files(repo, neutral_git::config_tree)?;
    let staged_terraform = neutral_git::policy_index(repo)?;
    let head_terraform = head_files(repo, neutral_git::policy_tree)?;
    if staged == head && staged_terraform == head_terraform {
        return Ok(true);
    }
    let mut live = LiveHealth::new(settings);
    let mut verdict = check::judge(&staged, || Ok::<_, HookError>(head), &mut live)?;
    check::add_policy(&mut verdict, &staged_terraform);
    check::print(out, &verdict, "staged changes", started)?;
    if !verdict.accepted() {
        writeln!(
            out,
            "neutral: fix the files above and `git add` them; `git commit --no-verify` skips this check"
        )?;
    }
    Ok(verdict.accepted())
}

/// The files `read` selects from `HEAD`; none on an unborn branch.
fn head_files(
    repo: &Repository,
    read: fn(&Repository, git2::Oid) -> Result<Vec<RepoFile>, neutral_git::GitError>,
) -> Result<Vec<RepoFile>, HookError> {
    let head = match repo.head() {
        Ok(head) => head,
        Err(err)
            if err.code() == git2::ErrorCode::UnbornBranch
                || err.code() == git2::ErrorCode::NotFound =>
        {
            return Ok(Vec::new());
        }
        Err(source) => {
            return Err(HookError::Open {
                path: repo.path().to_path_buf(),
                source,
            });
        }
    };
    match head.target() {
        Some(commit) => Ok(read(repo, commit)?),
        None => Ok(Vec::new()),
    }
}
