//! The run queue: triggers for the same root and workspace coalesce into one
//! pending job; a job runs only when no other job of its root and workspace
//! runs (one state, one writer); a job for a workspace that is running waits
//! and collects further triggers. Workspaces of one root run side by side:
//! one region's node-pool run that waits for hosts that cannot register (a
//! region cut off) must not hold back another region's failover capacity.
//! Their `terraform init`s, which write into the shared root folder, take
//! turns in the runner.
//!
//! Pure: time is a parameter, nothing is spawned here.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::Serialize;

/// A root and one of its workspaces (state files).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct JobKey {
    /// Root directory inside the repository, e.g. `infra/gtm`.
    pub root: String,
    pub workspace: String,
}

/// Why a run was asked for.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Trigger {
    /// A commit landed on the branch.
    Push { commit: String },
    /// Health changed a domain's answers.
    Health { detail: String },
    /// The autoscaler changed a node pool or asked for replacements.
    Autoscale { detail: String },
    /// The periodic drift check (plan only unless configured).
    Drift,
    /// Someone asked.
    Manual,
}

impl Trigger {
    pub fn name(&self) -> &'static str {
        match self {
            Trigger::Push { .. } => "push",
            Trigger::Health { .. } => "health",
            Trigger::Autoscale { .. } => "autoscale",
            Trigger::Drift => "drift",
            Trigger::Manual => "manual",
        }
    }
}

/// A pending or running job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Job {
    pub key: JobKey,
    pub triggers: Vec<Trigger>,
    /// Resource addresses to limit the run to; `None` means the whole root.
    pub targets: Option<BTreeSet<String>>,
    /// Plan only: report changes, apply nothing (drift checks).
    pub plan_only: bool,
    /// When the first trigger arrived, in ms since the epoch.
    pub since: i64,
}

impl Job {
    /// The trigger named in the run record: the most consequential one.
    pub fn trigger_name(&self) -> String {
        let mut names: Vec<&str> = self.triggers.iter().map(Trigger::name).collect();
        names.dedup();
        names.join("+")
    }

    /// The newest commit among push triggers, if any.
    pub fn commit(&self) -> Option<&str> {
        self.triggers.iter().rev().find_map(|t| match t {
            Trigger::Push { commit } => Some(commit.as_str()),
            _ => None,
        })
    }
}

/// The queue itself.
#[derive(Debug, Default)]
pub struct Queue {
    pending: BTreeMap<JobKey, Job>,
    running: BTreeSet<JobKey>,
}

impl Queue {
    pub fn new() -> Queue {
        Queue::default()
    }

    /// Adds a trigger. `targets: None` asks for the whole root and wins over
    /// any targeted request; targeted requests merge. A job that applies wins
    /// over a plan-only one.
    pub fn push(
        &mut self,
        key: JobKey,
        trigger: Trigger,
        targets: Option<BTreeSet<String>>,
        plan_only: bool,
        now: i64,
    ) {
        match self.pending.get_mut(&key) {
            Some(job) => {
                if !job.triggers.contains(&trigger) {
                    job.triggers.push(trigger);
                }
                job.targets = match (job.targets.take(), targets) {
                    (Some(mut a), Some(b)) => {
                        a.extend(b);
                        Some(a)
                    }
                    _ => None,
                };
                job.plan_only &= plan_only;
            }
            None => {
                self.pending.insert(
                    key.clone(),
                    Job {
                        key,
                        triggers: vec![trigger],
                        targets,
                        plan_only,
                        since: now,
                    },
                );
            }
        }
    }

    /// Takes the next job whose workspace is idle and whose first trigger is
    /// at least `settle` old (a short wait lets a burst of triggers
    /// coalesce); the oldest first. The workspace counts as running until
    /// [`Queue::finish`].
    pub fn take_ready(&mut self, now: i64, settle: Duration) -> Option<Job> {
        let settle_ms = i64::try_from(settle.as_millis()).unwrap_or(i64::MAX);
        let key = self
            .pending
            .values()
            .filter(|job| !self.running.contains(&job.key))
            .filter(|job| now.saturating_sub(job.since) >= settle_ms)
            .min_by_key(|job| (job.since, job.key.clone()))
            .map(|job| job.key.clone())?;
        let job = self.pending.remove(&key)?;
        self.running.insert(key);
        Some(job)
    }

    /// Marks the workspace of `key` idle again.
    pub fn finish(&mut self, key: &JobKey) {
        self.running.remove(key);
    }

    /// When the next job becomes ready, for sleeping until then.
    pub fn next_ready_at(&self, settle: Duration) -> Option<i64> {
        let settle_ms = i64::try_from(settle.as_millis()).unwrap_or(i64::MAX);
        self.pending
            .values()
            .filter(|job| !self.running.contains(&job.key))
            .map(|job| job.since.saturating_add(settle_ms))
            .min()
    }

    pub fn pending(&self) -> impl Iterator<Item = &Job> {
        self.pending.values()
    }

    pub fn is_running(&self, key: &JobKey) -> bool {
        self.running.contains(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SETTLE: Duration = Duration::from_millis(100);

    fn key(root: &str, ws: &str) -> JobKey {
        JobKey {
            root: root.into(),
            workspace: ws.into(),
        }
    }

    fn targets(list: &[&str]) -> Option<BTreeSet<String>> {
        Some(list.iter().map(|s| (*s).to_owned()).collect())
    }

    #[test]
    fn triggers_for_one_workspace_coalesce_and_targets_merge() {
        let mut q = Queue::new();
        q.push(
            key("infra/gtm", "default"),
            Trigger::Health { detail: "a".into() },
            targets(&["x"]),
            false,
            0,
        );
        q.push(
            key("infra/gtm", "default"),
            Trigger::Health { detail: "b".into() },
            targets(&["y"]),
            false,
            10,
        );
        let job = q.take_ready(200, SETTLE).unwrap();
        assert_eq!(job.triggers.len(), 2);
        assert_eq!(job.targets, targets(&["x", "y"]));
        assert_eq!(job.since, 0);
        assert!(q.take_ready(200, SETTLE).is_none());
    }

    #[test]
    fn a_whole_root_request_wins_over_targets_and_apply_over_plan_only() {
        let mut q = Queue::new();
        q.push(key("r", "w"), Trigger::Drift, targets(&["x"]), true, 0);
        q.push(
            key("r", "w"),
            Trigger::Push {
                commit: "c1".into(),
            },
            None,
            false,
            0,
        );
        let job = q.take_ready(100, SETTLE).unwrap();
        assert_eq!(job.targets, None);
        assert!(!job.plan_only);
        assert_eq!(job.trigger_name(), "drift+push");
        assert_eq!(job.commit(), Some("c1"));
    }

    #[test]
    fn one_run_per_workspace_at_a_time_others_wait_and_collect_triggers() {
        let mut q = Queue::new();
        q.push(
            key("infra/node-pool", "jp"),
            Trigger::Manual,
            None,
            false,
            0,
        );
        q.push(
            key("infra/node-pool", "sg"),
            Trigger::Manual,
            None,
            false,
            5,
        );
        q.push(key("infra/gtm", "default"), Trigger::Manual, None, false, 7);
        let first = q.take_ready(1000, SETTLE).unwrap();
        assert_eq!(first.key, key("infra/node-pool", "jp"));
        // sg does not wait for jp (another workspace of the same root), nor
        // does gtm (another root).
        let second = q.take_ready(1000, SETTLE).unwrap();
        assert_eq!(second.key, key("infra/node-pool", "sg"));
        let third = q.take_ready(1000, SETTLE).unwrap();
        assert_eq!(third.key, key("infra/gtm", "default"));
        assert!(q.is_running(&first.key));
        // A new trigger for running jp waits for jp's run to end.
        q.push(
            key("infra/node-pool", "jp"),
            Trigger::Drift,
            None,
            true,
            1000,
        );
        assert!(q.take_ready(1200, SETTLE).is_none());
        assert_eq!(q.next_ready_at(SETTLE), None);
        q.finish(&first.key);
        assert!(!q.is_running(&first.key));
        let again = q.take_ready(1200, SETTLE).unwrap();
        assert_eq!(again.key, key("infra/node-pool", "jp"));
        assert_eq!(again.triggers, [Trigger::Drift]);
    }

    #[test]
    fn a_burst_settles_before_running() {
        let mut q = Queue::new();
        q.push(key("r", "w"), Trigger::Manual, None, false, 1000);
        assert!(q.take_ready(1050, SETTLE).is_none());
        assert_eq!(q.next_ready_at(SETTLE), Some(1100));
        assert!(q.take_ready(1100, SETTLE).is_some());
    }
}
