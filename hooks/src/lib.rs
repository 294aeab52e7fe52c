//! neutral's Git hooks: the edge where a push or a commit meets the core.
//!
//! - `neutral hook pre-receive` (server, bare repository): judges the new tip
//!   of each followed branch — static validation of `platform-config/` and
//!   `infra/node-pool/` with the core, then what-if checks against the
//!   control plane's live health — and rejects the push with
//!   `path:line:col` diagnostics and a summary ([`pre_receive`]).
//! - `neutral hook pre-commit` (people's clones): the same on the index
//!   ([`pre_commit`]).
//! - `neutral hook post-receive` (server): asks the control plane to sync now,
//!   bounded, never failing the push ([`post_receive`]).
//! - `neutral hooks install --repo <bare repo> | --clone <work tree>`
//!   ([`install`]).
//!
//! Settings live in the repository's git config (`neutral.*`, see
//! [`settings`]). This crate reads objects, talks HTTP and prints; every
//! judgement is a call into `neutral-core` (`config::load`,
//! `whatif::check`). Exit codes of `neutral hook`: 0 accept, 1 reject (the
//! input is invalid), 2 the hook itself failed (which also rejects: a gate
//! that cannot look stays shut).

pub mod check;
pub mod control_plane;
mod error;
pub mod fence;
pub mod install;
pub mod post_receive;
pub mod pre_commit;
pub mod pre_receive;
pub mod settings;
pub mod updates;

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{ArgGroup, Args, Subcommand};
use git2::Repository;

pub use crate::error::HookError;
use crate::settings::Settings;

/// `neutral hook <name>`: run by git, from the scripts `neutral hooks
/// install` writes.
#[derive(Debug, Args)]
pub struct HookArgs {
    #[command(subcommand)]
    pub hook: Hook,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, Subcommand)]
pub enum Hook {
    /// Validate pushed branch tips (reads `<old> <new> <ref>` lines on stdin).
    PreReceive,
    /// Validate the staged configuration of a working clone.
    PreCommit,
    /// Tell the control plane that a commit landed (never fails the push).
    PostReceive,
}

/// `neutral hooks <command>`.
#[derive(Debug, Args)]
pub struct HooksArgs {
    #[command(subcommand)]
    pub command: HooksCommand,
}

#[derive(Debug, Subcommand)]
pub enum HooksCommand {
    /// Install the hooks: pre-receive and post-receive into the bare
    /// repository people push to (--repo), or pre-commit into a working
    /// clone (--clone). Re-running it is harmless.
    Install(InstallArgs),
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("target").required(true).args(["repo", "clone"])))]
pub struct InstallArgs {
    /// Bare repository that receives pushes.
    #[arg(long, value_name = "BARE_REPO")]
    pub repo: Option<PathBuf>,
    /// Working clone (gets pre-commit).
    #[arg(long, value_name = "WORK_TREE")]
    pub clone: Option<PathBuf>,
    /// Control plane URL for what-if checks and the sync trigger
    /// (git config neutral.controlPlane).
    #[arg(long, value_name = "URL")]
    pub control_plane: Option<String>,
    /// File holding the admin token for POST /sync (neutral.tokenFile).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// File holding a viewer token for the what-if checks' GET /nodes
    /// (neutral.readTokenFile; else the admin token file is used).
    #[arg(long, value_name = "FILE")]
    pub read_token_file: Option<PathBuf>,
    /// PEM CA for a control plane with a private certificate (neutral.caFile).
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// Branch the control plane follows; repeat for several (neutral.branch,
    /// default main).
    #[arg(long = "branch", value_name = "BRANCH")]
    pub branches: Vec<String>,
    /// Replace hooks not written by neutral (each is kept as
    /// <hook>.before-neutral).
    #[arg(long)]
    pub force: bool,
}

/// Runs a hook as git does: input on stdin, messages on stderr (git shows
/// a server hook's output to the pusher as `remote: ...`).
pub fn run_hook(args: &HookArgs) -> ExitCode {
    let started = Instant::now();
    let stderr = std::io::stderr();
    let mut out = stderr.lock();
    let code = match run_hook_with(args.hook, std::io::stdin().lock(), &mut out, started) {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(err) => {
            let consequence = match args.hook {
                Hook::PreReceive => "; push rejected",
                Hook::PreCommit => "; commit stopped",
                Hook::PostReceive => "",
            };
            let _ = writeln!(out, "neutral: error: {err}{consequence}");
            2
        }
    };
    let _ = out.flush();
    if args.hook == Hook::PostReceive {
        return ExitCode::SUCCESS;
    }
    ExitCode::from(code)
}

/// [`run_hook`] with its input and output given: `Ok(true)` accepts.
pub fn run_hook_with(
    hook: Hook,
    mut input: impl Read,
    out: &mut dyn Write,
    started: Instant,
) -> Result<bool, HookError> {
    let repo = Repository::open_from_env().map_err(|source| HookError::Open {
        path: std::env::current_dir().unwrap_or_default(),
        source,
    })?;
    let settings = Settings::read(&repo);
    for warning in &settings.warnings {
        writeln!(out, "neutral: warning: {warning}")?;
    }
    match hook {
        Hook::PreCommit => pre_commit::run(&repo, &settings, out, started),
        Hook::PreReceive | Hook::PostReceive => {
            let mut text = String::new();
            input.read_to_string(&mut text)?;
            if hook == Hook::PostReceive {
                post_receive::run(&settings, &text, out);
                return Ok(true);
            }
            pre_receive::run(&repo, &settings, &text, &push_options(), out, started)
        }
    }
}

/// The push options git hands a server-side hook (`GIT_PUSH_OPTION_<n>`),
/// when the repository takes them (`receive.advertisePushOptions`).
fn push_options() -> Vec<String> {
    let count = std::env::var("GIT_PUSH_OPTION_COUNT")
        .ok()
        .and_then(|c| c.parse::<usize>().ok())
        .unwrap_or(0);
    (0..count.min(100))
        .filter_map(|i| std::env::var(format!("GIT_PUSH_OPTION_{i}")).ok())
        .collect()
}

/// Runs `neutral hooks ...`: prints what was done; exit 0, or 2 with the
/// reason.
pub fn run_hooks(args: &HooksArgs) -> ExitCode {
    let HooksCommand::Install(install_args) = &args.command;
    let binary = match std::env::current_exe().and_then(std::fs::canonicalize) {
        Ok(path) => path,
        Err(err) => {
            eprintln!("error: locating the neutral binary: {err}");
            return ExitCode::from(2);
        }
    };
    let (repo, server_side) = match (&install_args.repo, &install_args.clone) {
        (Some(repo), _) => (repo.clone(), true),
        (None, Some(clone)) => (clone.clone(), false),
        (None, None) => {
            eprintln!("error: give --repo <bare repo> or --clone <work tree>");
            return ExitCode::from(2);
        }
    };
    let request = install::Request {
        repo,
        server_side,
        binary,
        control_plane: install_args.control_plane.clone(),
        token_file: install_args.token_file.clone(),
        read_token_file: install_args.read_token_file.clone(),
        ca_file: install_args.ca_file.clone(),
        branches: install_args.branches.clone(),
        force: install_args.force,
    };
    match install::install(&request) {
        Ok(actions) => {
            for action in &actions {
                println!("{action}");
            }
            let missing_token = request.token_file.as_ref().filter(|path| !path.is_file());
            if let Some(path) = missing_token {
                println!("warning: token file {} does not exist yet", path.display());
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::from(2)
        }
    }
}
