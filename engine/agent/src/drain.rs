//! Drain before destroy, pure: once the control plane answers a heartbeat
//! with `drain`, DNS stops sending new clients to the node, but resolvers may
//! hold the old answer for the record's TTL. The agent keeps serving for
//! TTL + grace after it first saw `drain`, then stops taking work and exits.
//! An `up`/`down` answer before then cancels the countdown.
//!
//! Time is a [`Duration`] since any fixed origin (the caller's monotonic
//! clock); this module reads no clock.

use std::time::Duration;

use neutral_core::model::NodeStatus;

/// What the agent does after a heartbeat answer or when its timer fires.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum DrainStep {
    /// Serve as usual.
    Serve,
    /// Keep serving until `deadline`, then stop.
    Wait { deadline: Duration },
    /// Time is up: stop taking work and exit.
    Exit,
}

/// The countdown of one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DrainTracker {
    /// `None`: the agent never exits on drain (it only stops being answered).
    grace: Option<Duration>,
    ttl: Duration,
    seen_at: Option<Duration>,
}

impl DrainTracker {
    pub fn new(grace: Option<Duration>, ttl: Duration) -> Self {
        DrainTracker {
            grace,
            ttl,
            seen_at: None,
        }
    }

    /// Takes the status of a heartbeat answer received at `now`.
    pub fn observe(&mut self, status: NodeStatus, now: Duration) -> DrainStep {
        match status {
            NodeStatus::Drain => {
                if self.seen_at.is_none() {
                    self.seen_at = Some(now);
                }
            }
            NodeStatus::Up | NodeStatus::Down => self.seen_at = None,
        }
        self.step(now)
    }

    /// Where the countdown stands at `now`.
    pub fn step(&self, now: Duration) -> DrainStep {
        match self.deadline() {
            None => DrainStep::Serve,
            Some(deadline) if now >= deadline => DrainStep::Exit,
            Some(deadline) => DrainStep::Wait { deadline },
        }
    }

    /// When the agent stops, if it is draining and exits on drain.
    pub fn deadline(&self) -> Option<Duration> {
        let grace = self.grace?;
        let seen = self.seen_at?;
        Some(seen.saturating_add(self.ttl).saturating_add(grace))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    #[test]
    fn the_agent_exits_ttl_plus_grace_after_it_first_saw_drain() {
        let mut tracker = DrainTracker::new(Some(s(10)), s(30));
        assert_eq!(tracker.observe(NodeStatus::Up, s(0)), DrainStep::Serve);
        assert_eq!(
            tracker.observe(NodeStatus::Drain, s(5)),
            DrainStep::Wait { deadline: s(45) }
        );
        // Later drain answers do not push the deadline back.
        assert_eq!(
            tracker.observe(NodeStatus::Drain, s(20)),
            DrainStep::Wait { deadline: s(45) }
        );
        assert_eq!(tracker.step(s(44)), DrainStep::Wait { deadline: s(45) });
        assert_eq!(tracker.step(s(45)), DrainStep::Exit);
    }

    #[test]
    fn an_undrain_before_the_deadline_cancels_the_countdown() {
        let mut tracker = DrainTracker::new(Some(s(10)), s(30));
        tracker.observe(NodeStatus::Drain, s(0));
        assert_eq!(tracker.observe(NodeStatus::Up, s(20)), DrainStep::Serve);
        assert_eq!(tracker.step(s(100)), DrainStep::Serve);
        assert_eq!(
            tracker.observe(NodeStatus::Drain, s(100)),
            DrainStep::Wait { deadline: s(140) }
        );
    }

    #[test]
    fn without_a_grace_the_agent_never_exits_on_drain() {
        let mut tracker = DrainTracker::new(None, s(30));
        assert_eq!(tracker.observe(NodeStatus::Drain, s(0)), DrainStep::Serve);
        assert_eq!(tracker.step(s(1_000_000)), DrainStep::Serve);
    }

    #[test]
    fn huge_values_saturate_instead_of_overflowing() {
        let mut tracker = DrainTracker::new(Some(Duration::MAX), Duration::MAX);
        assert_eq!(
            tracker.observe(NodeStatus::Drain, s(1)),
            DrainStep::Wait {
                deadline: Duration::MAX
            }
        );
    }
}
