//! Node liveness: a node's status from its heartbeats, its active probe
//! results and the operator's drain, with rise/fall hysteresis.
//!
//! This module owns the state machine only. It must not send probes, read a
//! clock or store anything: the control plane feeds it events (a heartbeat at
//! a time, a probe result, a tick at `now`) and persists the status it
//! reports. Rules (DESIGN.md, "Health"):
//!
//! - A node starts not ready and becomes `up` after `rise` consecutive
//!   successes: successful probes when the node is probed, heartbeats when no
//!   probe applies to it.
//! - An `up` node goes `down` after `fall` consecutive failed probes, or at
//!   once when no heartbeat arrived for longer than the heartbeat timeout.
//! - Coming back from `down` (for either reason) needs `rise` consecutive
//!   successes again, counted from the moment heartbeats are fresh; this is
//!   the hysteresis that keeps a flapping node out of the answers.
//! - When a node's agent stream breaks, the control plane probes it at once
//!   ([`Liveness::confirming_probe`]): a failure takes an `up` node `down`
//!   without waiting for `fall` (the broken stream was the first sign, the
//!   probe confirms it); a success changes nothing — it is off the probe
//!   cadence, so it must not shorten `rise`. The broken stream alone
//!   changes nothing.
//! - `drain` is the operator's (or the autoscaler's) and wins over both; it
//!   is not a failure. Undraining returns to whatever health says.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::model::{NodeStatus, Timestamp};

/// Per-node thresholds, usually from the probe settings of the domain that
/// serves the node's region.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LivenessSettings {
    pub heartbeat_timeout: Duration,
    /// Consecutive successes before a not-ready node is `up`.
    pub rise: u32,
    /// Consecutive probe failures before an `up` node is `down`.
    pub fall: u32,
    /// Whether the node is actively probed; otherwise heartbeats count as
    /// the successes.
    pub probed: bool,
    /// How control-plane replicas agree on the node's health.
    #[serde(default)]
    pub quorum: crate::quorum::Quorum,
}

/// The health memory of one node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Liveness {
    pub last_heartbeat: Timestamp,
    pub drained: bool,
    /// Whether health (ignoring drain) currently counts the node as ready.
    pub ready: bool,
    pub success_streak: u32,
    pub failure_streak: u32,
    /// Whether the node was ever ready. A node that never was did not "go
    /// down": the split-brain guard must not count it.
    #[serde(default)]
    pub ever_ready: bool,
    /// Why the node is not ready, or what it last recovered from.
    pub detail: String,
}

impl Liveness {
    /// A freshly registered node: registration counts as its first
    /// heartbeat, not as a success.
    pub fn registered(at: Timestamp) -> Self {
        Liveness {
            last_heartbeat: at,
            drained: false,
            ready: false,
            success_streak: 0,
            failure_streak: 0,
            ever_ready: false,
            detail: "registered; waiting for its first successful checks".to_owned(),
        }
    }

    /// A node known from before a restart: its last known readiness is kept
    /// and its heartbeat clock restarts at `at`, so a restarted control plane
    /// does not declare every node dead before they had a chance to call in.
    pub fn restored(status: NodeStatus, at: Timestamp) -> Self {
        Liveness {
            last_heartbeat: at,
            drained: status == NodeStatus::Drain,
            ready: status == NodeStatus::Up,
            success_streak: 0,
            failure_streak: 0,
            // Unknown after a restart; a stored node most likely served at
            // some point.
            ever_ready: true,
            detail: format!(
                "restored as {} after a control-plane restart",
                status.as_str()
            ),
        }
    }

    fn heartbeat_fresh(&self, now: Timestamp, settings: &LivenessSettings) -> bool {
        now.since(self.last_heartbeat) <= settings.heartbeat_timeout
    }

    /// A heartbeat arrived at `at`.
    pub fn heartbeat(&mut self, at: Timestamp, settings: &LivenessSettings) {
        if at > self.last_heartbeat {
            self.last_heartbeat = at;
        }
        if !settings.probed {
            self.success(at, settings, "heartbeat");
        }
    }

    /// An active probe finished at `at`.
    pub fn probe(&mut self, at: Timestamp, ok: bool, detail: &str, settings: &LivenessSettings) {
        if ok {
            self.success(at, settings, "probe");
        } else {
            self.success_streak = 0;
            self.failure_streak = self.failure_streak.saturating_add(1);
            if self.ready && self.failure_streak >= settings.fall.max(1) {
                self.ready = false;
                self.detail = format!(
                    "{} consecutive failed probes (fall {}): {detail}",
                    self.failure_streak, settings.fall
                );
            } else if !self.ready {
                self.detail = format!("probe failed: {detail}");
            }
        }
    }

    /// The probe sent because the node's agent stream broke (`why`)
    /// finished. A failure confirms the loss: the node is not ready from
    /// now, whatever `fall` says. A success changes nothing (not even the
    /// `rise` streak of a node coming back: the probe is off its cadence).
    pub fn confirming_probe(&mut self, ok: bool, why: &str, detail: &str) {
        if ok {
            return;
        }
        self.success_streak = 0;
        self.failure_streak = self.failure_streak.saturating_add(1);
        if self.ready {
            self.ready = false;
            self.detail = format!("{why}, and the probe that followed failed: {detail}");
        } else {
            self.detail = format!("probe failed: {detail}");
        }
    }

    fn success(&mut self, at: Timestamp, settings: &LivenessSettings, what: &str) {
        self.failure_streak = 0;
        if !self.heartbeat_fresh(at, settings) {
            // A probe of a node whose agent is silent proves nothing about it.
            self.success_streak = 0;
            return;
        }
        self.success_streak = self.success_streak.saturating_add(1);
        if !self.ready {
            let rise = settings.rise.max(1);
            if self.success_streak >= rise {
                self.ready = true;
                self.ever_ready = true;
                self.detail = format!(
                    "{} consecutive successful {what}s (rise {rise})",
                    self.success_streak
                );
            } else {
                self.detail = format!(
                    "{} of {rise} successful {what}s before it is up",
                    self.success_streak
                );
            }
        }
    }

    /// Time passes: a node whose heartbeats stopped loses readiness at once.
    /// Returns whether readiness changed.
    pub fn tick(&mut self, now: Timestamp, settings: &LivenessSettings) -> bool {
        if self.ready && !self.heartbeat_fresh(now, settings) {
            self.ready = false;
            self.success_streak = 0;
            self.detail = format!(
                "no heartbeat for {}s (timeout {}s)",
                now.since(self.last_heartbeat).as_secs(),
                settings.heartbeat_timeout.as_secs()
            );
            return true;
        }
        false
    }

    /// The status to publish at `now`, with its reason.
    /// The node's status at `now`: drained, else up when health alone
    /// counts it ready ([`Liveness::verdict`]), else down. Builds no reason:
    /// what a periodic pass over every node asks first.
    pub fn current(&self, now: Timestamp, settings: &LivenessSettings) -> NodeStatus {
        if self.drained {
            NodeStatus::Drain
        } else if self.heartbeat_fresh(now, settings) && self.ready {
            NodeStatus::Up
        } else {
            NodeStatus::Down
        }
    }

    /// [`Liveness::current`] with the reason for it.
    pub fn status(&self, now: Timestamp, settings: &LivenessSettings) -> (NodeStatus, String) {
        let status = self.current(now, settings);
        let reason = match status {
            NodeStatus::Drain => "drained".to_owned(),
            NodeStatus::Up | NodeStatus::Down => self.verdict(now, settings).1,
        };
        (status, reason)
    }

    /// Whether health alone (drain aside) counts the node ready at `now`,
    /// and why: this control plane's verdict, one vote when several
    /// replicas judge the node (see [`crate::quorum`]).
    pub fn verdict(&self, now: Timestamp, settings: &LivenessSettings) -> (bool, String) {
        self.verdict_saying(now, settings, |timeout| {
            format!(
                "no heartbeat for {}s (timeout {timeout}s)",
                now.since(self.last_heartbeat).as_secs()
            )
        })
    }

    /// [`Liveness::verdict`] as published to the other replicas: the same
    /// readiness, with a detail that changes only when the verdict does. A
    /// silent node's elapsed silence is left out: it grows every second,
    /// and every change is a store write on every replica (for every
    /// silent node, so thousands a second during a registration storm).
    pub fn shared_verdict(&self, now: Timestamp, settings: &LivenessSettings) -> (bool, String) {
        self.verdict_saying(now, settings, |timeout| {
            format!("no heartbeat within the timeout ({timeout}s)")
        })
    }

    /// The verdict, with `silent(timeout in seconds)` as the detail of a
    /// node whose heartbeats stopped.
    fn verdict_saying(
        &self,
        now: Timestamp,
        settings: &LivenessSettings,
        silent: impl FnOnce(u64) -> String,
    ) -> (bool, String) {
        if !self.heartbeat_fresh(now, settings) {
            return (false, silent(settings.heartbeat_timeout.as_secs()));
        }
        (self.ready, self.detail.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROBED: LivenessSettings = LivenessSettings {
        heartbeat_timeout: Duration::from_secs(30),
        rise: 2,
        fall: 3,
        probed: true,
        quorum: crate::quorum::Quorum::Majority,
    };

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_secs(secs)
    }

    #[test]
    fn a_new_node_is_up_only_after_rise_successful_probes() {
        let mut node = Liveness::registered(t(0));
        assert_eq!(node.status(t(1), &PROBED).0, NodeStatus::Down);
        node.probe(t(1), true, "200", &PROBED);
        assert_eq!(
            node.status(t(1), &PROBED),
            (
                NodeStatus::Down,
                "1 of 2 successful probes before it is up".into()
            )
        );
        assert!(!node.ever_ready);
        node.probe(t(2), true, "200", &PROBED);
        assert_eq!(node.status(t(2), &PROBED).0, NodeStatus::Up);
        assert!(node.ever_ready);
    }

    #[test]
    fn an_up_node_goes_down_after_fall_failures_not_before() {
        let mut node = Liveness::registered(t(0));
        node.probe(t(1), true, "", &PROBED);
        node.probe(t(2), true, "", &PROBED);
        node.probe(t(3), false, "connection refused", &PROBED);
        node.probe(t(4), false, "connection refused", &PROBED);
        assert_eq!(node.status(t(4), &PROBED).0, NodeStatus::Up);
        node.probe(t(5), false, "connection refused", &PROBED);
        assert_eq!(
            node.status(t(5), &PROBED),
            (
                NodeStatus::Down,
                "3 consecutive failed probes (fall 3): connection refused".into()
            )
        );
    }

    #[test]
    fn a_broken_stream_takes_a_node_down_only_when_its_probe_confirms() {
        let mut node = Liveness::registered(t(0));
        node.probe(t(1), true, "", &PROBED);
        node.probe(t(2), true, "", &PROBED);
        let why = "its agent stream broke";
        // The probe after the break passes: still up, nothing forgotten.
        node.confirming_probe(true, why, "200");
        assert_eq!(node.status(t(3), &PROBED).0, NodeStatus::Up);
        // One failed confirming probe is enough, whatever `fall` (3) says.
        node.confirming_probe(false, why, "connection refused");
        assert_eq!(
            node.status(t(4), &PROBED),
            (
                NodeStatus::Down,
                "its agent stream broke, and the probe that followed failed: connection refused"
                    .into()
            )
        );
        // A passing confirming probe does not count towards `rise`.
        node.confirming_probe(true, why, "200");
        assert_eq!(node.success_streak, 0);
        // Coming back needs `rise` scheduled probes again.
        node.probe(t(5), true, "", &PROBED);
        assert_eq!(node.status(t(5), &PROBED).0, NodeStatus::Down);
        node.probe(t(6), true, "", &PROBED);
        assert_eq!(node.status(t(6), &PROBED).0, NodeStatus::Up);
    }

    #[test]
    fn a_success_between_failures_resets_the_fall_count() {
        let mut node = Liveness::registered(t(0));
        for (i, ok) in [true, true, false, false, true, false, false]
            .into_iter()
            .enumerate()
        {
            node.probe(t(i as i64), ok, "", &PROBED);
        }
        assert_eq!(node.status(t(7), &PROBED).0, NodeStatus::Up);
    }

    #[test]
    fn the_shared_verdict_of_a_silent_node_stays_the_same_as_its_silence_grows() {
        let mut node = Liveness::registered(t(0));
        node.probe(t(1), true, "", &PROBED);
        node.probe(t(2), true, "", &PROBED);
        assert_eq!(
            node.shared_verdict(t(3), &PROBED),
            node.verdict(t(3), &PROBED)
        );
        assert_ne!(node.verdict(t(40), &PROBED), node.verdict(t(41), &PROBED));
        assert_eq!(
            node.shared_verdict(t(40), &PROBED),
            node.shared_verdict(t(41), &PROBED)
        );
        assert_eq!(
            node.shared_verdict(t(41), &PROBED),
            (false, "no heartbeat within the timeout (30s)".to_owned())
        );
    }

    #[test]
    fn heartbeat_timeout_downs_the_node_at_once_and_recovery_needs_rise_again() {
        let mut node = Liveness::registered(t(0));
        node.probe(t(1), true, "", &PROBED);
        node.probe(t(2), true, "", &PROBED);
        assert!(!node.tick(t(30), &PROBED));
        assert!(node.tick(t(31), &PROBED));
        assert_eq!(
            node.status(t(31), &PROBED),
            (
                NodeStatus::Down,
                "no heartbeat for 31s (timeout 30s)".into()
            )
        );
        // Probes of a silent node do not count.
        node.probe(t(32), true, "", &PROBED);
        node.probe(t(33), true, "", &PROBED);
        assert_eq!(node.status(t(33), &PROBED).0, NodeStatus::Down);
        node.heartbeat(t(40), &PROBED);
        node.probe(t(41), true, "", &PROBED);
        assert_eq!(node.status(t(41), &PROBED).0, NodeStatus::Down);
        node.probe(t(42), true, "", &PROBED);
        assert_eq!(node.status(t(42), &PROBED).0, NodeStatus::Up);
    }

    #[test]
    fn without_probes_heartbeats_are_the_successes() {
        let settings = LivenessSettings {
            probed: false,
            ..PROBED
        };
        let mut node = Liveness::registered(t(0));
        node.heartbeat(t(10), &settings);
        assert_eq!(node.status(t(10), &settings).0, NodeStatus::Down);
        node.heartbeat(t(20), &settings);
        assert_eq!(node.status(t(20), &settings).0, NodeStatus::Up);
    }

    #[test]
    fn drain_wins_and_is_not_a_failure() {
        let mut node = Liveness::registered(t(0));
        node.probe(t(1), true, "", &PROBED);
        node.probe(t(2), true, "", &PROBED);
        node.drained = true;
        assert_eq!(node.status(t(3), &PROBED).0, NodeStatus::Drain);
        node.drained = false;
        assert_eq!(node.status(t(3), &PROBED).0, NodeStatus::Up);
    }

    #[test]
    fn restored_nodes_keep_their_status_and_get_a_fresh_heartbeat_clock() {
        let node = Liveness::restored(NodeStatus::Up, t(100));
        assert_eq!(node.status(t(120), &PROBED).0, NodeStatus::Up);
        assert_eq!(node.status(t(131), &PROBED).0, NodeStatus::Down);
        let node = Liveness::restored(NodeStatus::Drain, t(100));
        assert_eq!(node.status(t(101), &PROBED).0, NodeStatus::Drain);
    }

    proptest::proptest! {
        /// `current` agrees with `verdict` (drain aside), whatever happened.
        #[test]
        fn current_is_the_verdict_unless_drained(
            events in proptest::collection::vec((0u8..4, 0i64..20_000), 0..40),
            probed in proptest::bool::ANY,
        ) {
            let settings = LivenessSettings { probed, ..PROBED };
            let mut node = Liveness::registered(Timestamp(0));
            let mut at = 0;
            for (kind, gap) in events {
                at += gap;
                let now = Timestamp(at);
                match kind {
                    0 => node.heartbeat(now, &settings),
                    1 => node.probe(now, true, "ok", &settings),
                    2 => node.probe(now, false, "refused", &settings),
                    _ => node.drained = !node.drained,
                }
                node.tick(now, &settings);
                for later in [now, Timestamp(at + 31_000)] {
                    let expected = if node.drained {
                        NodeStatus::Drain
                    } else if node.verdict(later, &settings).0 {
                        NodeStatus::Up
                    } else {
                        NodeStatus::Down
                    };
                    proptest::prop_assert_eq!(node.current(later, &settings), expected);
                }
            }
        }
    }
}
