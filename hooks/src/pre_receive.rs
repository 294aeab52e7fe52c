//! `neutral hook pre-receive`: the gate on the server's bare repository.
//!
//! For each updated ref git lists on stdin: other branches, tags and
//! deletions are accepted as they are; a followed branch (`neutral.branch`,
//! default `main`) that moves or is created gets its **new tip** judged
//! ([`crate::check`]): the tip's `platform-config/` and `infra/node-pool/`
//! are read straight from the object database (the pushed objects are still
//! in git's quarantine; [`git2::Repository::open_from_env`] honours
//! `GIT_OBJECT_DIRECTORY` and `GIT_ALTERNATE_OBJECT_DIRECTORIES`), validated
//! by the core and, when the control plane answers, checked against live
//! health with the old tip as "before"; its Terraform roots and modules
//! (`infra/**`, `modules/**`) are judged by the core's Terraform policy
//! (`neutral_core::policy`: allowed providers, no provisioners, …).
//!
//! Only the tip is judged, not every pushed commit: the control plane and
//! Terraform only ever act on the branch's tip, so an intermediate commit
//! never takes effect, and judging each one would reject pushes for states
//! that never serve traffic and make the cost grow with the commit count.
//!
//! A push that claims a leader term (an autoscaler commit of a control-plane
//! leader, see [`crate::fence`]) is refused first unless that term still
//! holds the leader lease.
//!
//! Any rejected ref rejects the whole push (git's pre-receive is
//! all-or-nothing). This module owns that loop; it must not validate by
//! itself.

use std::io::Write;
use std::time::Instant;

use git2::{Oid, Repository};
use neutral_core::config::RepoFile;
use neutral_git::GitError;

use crate::check::{self, LiveHealth};
use crate::error::HookError;
use crate::fence;
use crate::settings::Settings;
use crate::updates::{self, Plan};

/// Judges the updates in `input` pushed with `push_options`; `Ok(true)`
/// accepts the push.
pub fn run(
    repo: &Repository,
    settings: &Settings,
    input: &str,
    push_options: &[String],
    out: &mut dyn Write,
    started: Instant,
) -> Result<bool, HookError> {
    let updates = updates::parse(input)?;
    let mut live = LiveHealth::new(settings);
    if !leader_term_holds(push_options, &live, out)? {
        return Ok(false);
    }
    let mut accepted = true;
    for update in &updates {
        match update.plan(&settings.branches) {
            Plan::Unrelated => {}
            Plan::Delete => writeln!(
                out,
                "neutral: {}: deleted; nothing to validate",
                update.name
            )?,
            Plan::Check { old, new } => {
                let new_id = oid(new.as_str())?;
                let after = neutral_git::config_tree(repo, new_id)?;
                let before = || -> Result<Vec<RepoFile>, HookError> {
                    match &old {
                        None => Ok(Vec::new()),
                        Some(old) => Ok(neutral_git::config_tree(repo, oid(old.as_str())?)?),
                    }
                };
                let mut verdict = check::judge(&after, before, &mut live)?;
                let terraform = neutral_git::policy_tree(repo, new_id)?;
                check::add_policy(&mut verdict, &terraform);
                let subject = format!("{} at {}", update.name, new.short());
                check::print(out, &verdict, &subject, started)?;
                accepted &= verdict.accepted();
            }
        }
    }
    Ok(accepted)
}

/// Whether a push claiming a leader term (see [`fence`]) may go on; a push
/// claiming none may. A claim that cannot be checked against a configured
/// control plane is refused: the leader that made it will decide again.
fn leader_term_holds(
    push_options: &[String],
    live: &LiveHealth,
    out: &mut dyn Write,
) -> Result<bool, HookError> {
    let term = match fence::claimed_term(push_options) {
        Ok(Some(term)) => term,
        Ok(None) => return Ok(true),
        Err(problem) => {
            writeln!(out, "neutral: refused: {problem}")?;
            return Ok(false);
        }
    };
    match live.leader() {
        Ok(None) => {
            writeln!(
                out,
                "neutral: the push claims leader term {term}; neutral.controlPlane is not set, \
                 so the term is not checked"
            )?;
            Ok(true)
        }
        Ok(Some(lease)) => match fence::judge(term, &lease) {
            Ok(()) => {
                writeln!(out, "neutral: leader term {term} holds the lease")?;
                Ok(true)
            }
            Err(why) => {
                writeln!(out, "neutral: refused: {why}")?;
                Ok(false)
            }
        },
        Err(err) => {
            writeln!(
                out,
                "neutral: refused: the push claims leader term {term}, which cannot be checked: \
                 {err}"
            )?;
            Ok(false)
        }
    }
}

fn oid(name: &str) -> Result<Oid, HookError> {
    Oid::from_str(name).map_err(|source| {
        HookError::Git(GitError::Read {
            commit: name.to_owned(),
            source,
        })
    })
}
