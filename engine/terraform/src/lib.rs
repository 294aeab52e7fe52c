//! Running Terraform for the scheduler.
//!
//! - [`queue`]: which run goes next — triggers coalesce per root and
//!   workspace, at most one run per root at a time, targets merge (pure).
//! - [`plan`]: what a saved plan will do, from `terraform show -json` (pure).
//! - [`runner`]: the processes — `init`, `plan -detailed-exitcode -out`, then
//!   `apply` of exactly that saved plan — with Terraform's own state locking,
//!   bounded time, logs captured, and transient failures told apart; every
//!   command in a clean environment and a process group of its own.
//! - [`policy`]: the core's Terraform policy over an exported tree, before
//!   any command runs.
//!
//! This crate knows Terraform, not neutral's control plane: the scheduler in
//! `neutral-server` decides what to run and records the runs.

pub mod plan;
pub mod policy;
pub mod queue;
pub mod runner;

pub use plan::PlanSummary;
pub use queue::{Job, JobKey, Queue, Trigger};
pub use runner::{
    Outcome, PASS_ENV, RunAs, RunRequest, Runner, RunnerError, StateBackend, Terraform,
    pass_environment, stop_group,
};
