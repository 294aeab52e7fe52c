//! Health decided by a quorum of vantage points: each control-plane replica
//! judges every node from where it stands (its own probes, and the
//! heartbeats every replica shares) and the node's status is what enough of
//! the live replicas agree on.
//!
//! The rule (Route53 and Cloudflare decide the same way
//! from many checkers): a node is taken **down** only when at least
//! `required` live replicas see it down, where `required` is the domain's
//! `health.quorum` (a majority of the live replicas by default, or a
//! number, never more than the replicas that are live). A replica cut off
//! from a region therefore cannot take the region down alone. A node is
//! **up** when fewer than `required` replicas see it down and at least one
//! sees it up: a replica that has not judged a node yet (it just started)
//! abstains. With one replica, `required` is 1 and its own verdict decides,
//! which is exactly the single control plane's behaviour.
//!
//! This module only counts. It must not probe, read a clock or know how
//! replicas exchange verdicts (that is the daemon's, over its store).

use serde::{Deserialize, Serialize};

/// How many live replicas must see a node down before it is down.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Quorum {
    /// More than half of the live replicas.
    #[default]
    Majority,
    /// This many (at least 1), or every live replica when fewer are live.
    AtLeast(u32),
}

impl Quorum {
    /// The down verdicts needed among `live` replicas (at least 1).
    pub fn required(self, live: usize) -> usize {
        let live = live.max(1);
        match self {
            Quorum::Majority => live / 2 + 1,
            Quorum::AtLeast(n) => usize::try_from(n).unwrap_or(usize::MAX).clamp(1, live),
        }
    }

    /// How the setting is written (`majority`, or the number).
    pub fn describe(self) -> String {
        match self {
            Quorum::Majority => "majority".to_owned(),
            Quorum::AtLeast(n) => n.to_string(),
        }
    }
}

/// One replica's view of one node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// The replica that judged (its `--replica-id`).
    pub replica: String,
    /// Whether it sees the node ready (drain aside: drain is not health).
    pub ready: bool,
    /// Why, in that replica's words.
    pub detail: String,
}

/// The status the quorum decided, with a reason naming who saw what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub ready: bool,
    pub reason: String,
}

/// Decides one node's readiness from the verdicts of the live replicas
/// (`live` of them, counting those without a verdict for this node yet).
/// Verdicts of replicas beyond `live` are the caller's bug and still count.
pub fn decide(quorum: Quorum, live: usize, verdicts: &[Verdict]) -> Decision {
    let live = live.max(verdicts.len()).max(1);
    let required = quorum.required(live);
    let down: Vec<&Verdict> = verdicts.iter().filter(|v| !v.ready).collect();
    let up: Vec<&Verdict> = verdicts.iter().filter(|v| v.ready).collect();
    let ready = down.len() < required && !up.is_empty();
    // One replica (or all agreeing on one side): its own words suffice.
    if live == 1 {
        if let [only] = verdicts {
            return Decision {
                ready,
                reason: only.detail.clone(),
            };
        }
        return Decision {
            ready,
            reason: "no vantage point has judged it yet".to_owned(),
        };
    }
    let side = |vs: &[&Verdict]| {
        vs.iter()
            .map(|v| format!("{}: {}", v.replica, v.detail))
            .collect::<Vec<_>>()
            .join("; ")
    };
    let quorum_text = format!("quorum {required} of {live}, {}", quorum.describe());
    let reason = if ready {
        if down.is_empty() {
            format!(
                "up at {} of {live} vantage points ({quorum_text}); {}",
                up.len(),
                side(&up)
            )
        } else {
            format!(
                "up: only {} of {live} vantage points see it down ({quorum_text}): {}",
                down.len(),
                side(&down)
            )
        }
    } else if down.len() >= required {
        format!(
            "down at {} of {live} vantage points ({quorum_text}): {}",
            down.len(),
            side(&down)
        )
    } else {
        "no vantage point has judged it yet".to_owned()
    };
    Decision { ready, reason }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v(replica: &str, ready: bool) -> Verdict {
        Verdict {
            replica: replica.to_owned(),
            ready,
            detail: if ready { "probe ok" } else { "probe timed out" }.to_owned(),
        }
    }

    #[test]
    fn required_is_a_majority_or_the_number_bounded_by_the_live_replicas() {
        assert_eq!(Quorum::Majority.required(1), 1);
        assert_eq!(Quorum::Majority.required(2), 2);
        assert_eq!(Quorum::Majority.required(3), 2);
        assert_eq!(Quorum::Majority.required(5), 3);
        assert_eq!(Quorum::Majority.required(0), 1);
        assert_eq!(Quorum::AtLeast(1).required(3), 1);
        assert_eq!(Quorum::AtLeast(3).required(2), 2);
        assert_eq!(Quorum::AtLeast(0).required(3), 1);
    }

    #[test]
    fn one_replica_decides_alone_in_its_own_words() {
        let d = decide(Quorum::Majority, 1, &[v("a", false)]);
        assert_eq!(
            d,
            Decision {
                ready: false,
                reason: "probe timed out".into()
            }
        );
        assert!(decide(Quorum::Majority, 1, &[v("a", true)]).ready);
        assert!(!decide(Quorum::Majority, 1, &[]).ready);
    }

    #[test]
    fn one_cut_off_replica_of_three_cannot_take_a_node_down_two_can() {
        let one = decide(
            Quorum::Majority,
            3,
            &[v("a", false), v("b", true), v("c", true)],
        );
        assert!(one.ready);
        expect_test::expect![[r#"up: only 1 of 3 vantage points see it down (quorum 2 of 3, majority): a: probe timed out"#]]
            .assert_eq(&one.reason);
        let two = decide(
            Quorum::Majority,
            3,
            &[v("a", false), v("b", false), v("c", true)],
        );
        assert!(!two.ready);
        expect_test::expect![[r#"down at 2 of 3 vantage points (quorum 2 of 3, majority): a: probe timed out; b: probe timed out"#]]
            .assert_eq(&two.reason);
        let all_up = decide(Quorum::AtLeast(1), 2, &[v("a", true), v("b", true)]);
        expect_test::expect![[
            r#"up at 2 of 2 vantage points (quorum 1 of 2, 1); a: probe ok; b: probe ok"#
        ]]
        .assert_eq(&all_up.reason);
    }

    #[test]
    fn a_replica_without_a_verdict_abstains() {
        // b and c just started: a's view alone cannot reach a quorum of 2.
        assert!(decide(Quorum::Majority, 3, &[v("a", true)]).ready);
        assert!(!decide(Quorum::Majority, 3, &[v("a", false)]).ready);
        let nobody = decide(Quorum::Majority, 3, &[]);
        assert!(!nobody.ready);
        assert_eq!(nobody.reason, "no vantage point has judged it yet");
    }

    proptest! {
        #[test]
        fn down_needs_the_quorum_and_one_more_down_verdict_never_brings_a_node_up(
            ready in proptest::collection::vec(any::<bool>(), 1..7),
            extra_live in 0usize..3,
            n in 0u32..8,
            majority in any::<bool>(),
        ) {
            let quorum = if majority { Quorum::Majority } else { Quorum::AtLeast(n) };
            let verdicts: Vec<Verdict> = ready
                .iter()
                .enumerate()
                .map(|(i, r)| v(&format!("r{i}"), *r))
                .collect();
            let live = verdicts.len() + extra_live;
            let decision = decide(quorum, live, &verdicts);
            let down = ready.iter().filter(|r| !**r).count();
            let up = ready.len() - down;
            // Ready exactly when the down verdicts fall short of the quorum
            // and someone sees it up.
            prop_assert_eq!(decision.ready, down < quorum.required(live) && up > 0);
            // Turning one up verdict down never makes the node ready.
            if let Some(i) = ready.iter().position(|r| *r) {
                let mut worse = verdicts.clone();
                if let Some(w) = worse.get_mut(i) {
                    w.ready = false;
                }
                let after = decide(quorum, live, &worse);
                prop_assert!(!after.ready || decision.ready);
            }
            // Unanimous views are what the quorum says, whatever it is.
            if down == 0 && up > 0 {
                prop_assert!(decision.ready);
            }
            if up == 0 {
                prop_assert!(!decision.ready);
            }
        }
    }
}
