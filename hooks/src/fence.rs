//! The fence on a leader's pushes. A control-plane leader pushes its
//! autoscaler commits with the push option `neutral-leader-term=<term>`; a
//! leader frozen past its lease may wake and push after another replica
//! took over, and the remote is the one place that can still refuse it. The
//! pre-receive hook accepts such a push only while that term holds the
//! leader lease in the control plane's store (`GET /leader`).
//!
//! This module owns reading the claimed term from the push options and the
//! verdict on a lease; it must not call the control plane (the hook does)
//! or judge the pushed configuration (`check` does).

use neutral_git::LEADER_TERM_PUSH_OPTION;

use crate::control_plane::LeaderLease;

/// The leader term a push claims, from its push options; `Err` for a
/// malformed or repeated claim.
pub fn claimed_term(push_options: &[String]) -> Result<Option<i64>, String> {
    let prefix = format!("{LEADER_TERM_PUSH_OPTION}=");
    let mut claims = push_options.iter().filter_map(|o| o.strip_prefix(&prefix));
    let Some(first) = claims.next() else {
        return Ok(None);
    };
    if claims.next().is_some() {
        return Err(format!(
            "push option {LEADER_TERM_PUSH_OPTION} given more than once"
        ));
    }
    match first.parse::<i64>() {
        Ok(term) if term > 0 => Ok(Some(term)),
        _ => Err(format!(
            "push option {LEADER_TERM_PUSH_OPTION}={first}: the term must be a positive integer"
        )),
    }
}

/// Whether a push claiming `term` may land, given the lease now.
pub fn judge(term: i64, lease: &LeaderLease) -> Result<(), String> {
    let holder = lease.holder.as_deref().unwrap_or("nobody");
    match lease.term {
        None => Err(format!(
            "the push claims leader term {term}, but no control-plane replica holds the leader \
             lease"
        )),
        Some(current) if current != term => Err(format!(
            "the push claims leader term {term}, but the leader lease is at term {current} \
             (held by {holder}): a deposed leader's push"
        )),
        Some(_) if lease.lapsed => Err(format!(
            "the push claims leader term {term}, whose lease (held by {holder}) has lapsed: the \
             leader may be deposed any moment"
        )),
        Some(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(term: Option<i64>, lapsed: bool) -> LeaderLease {
        LeaderLease {
            holder: term.map(|_| "cp2".to_owned()),
            term,
            lapsed,
        }
    }

    #[test]
    fn the_term_is_read_from_the_push_options() {
        let options = |o: &[&str]| o.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(claimed_term(&[]), Ok(None));
        assert_eq!(claimed_term(&options(&["ci.skip"])), Ok(None));
        assert_eq!(
            claimed_term(&options(&["ci.skip", "neutral-leader-term=12"])),
            Ok(Some(12))
        );
        for bad in [
            "neutral-leader-term=",
            "neutral-leader-term=x",
            "neutral-leader-term=0",
        ] {
            assert!(claimed_term(&options(&[bad])).is_err(), "{bad}");
        }
        assert!(
            claimed_term(&options(&[
                "neutral-leader-term=2",
                "neutral-leader-term=2"
            ]))
            .unwrap_err()
            .contains("more than once")
        );
    }

    #[test]
    fn only_the_term_holding_a_live_lease_may_push() {
        assert_eq!(judge(4, &lease(Some(4), false)), Ok(()));
        assert_eq!(
            judge(4, &lease(Some(5), false)),
            Err(
                "the push claims leader term 4, but the leader lease is at term 5 (held by \
                 cp2): a deposed leader's push"
                    .to_owned()
            )
        );
        assert!(
            judge(4, &lease(Some(4), true))
                .unwrap_err()
                .contains("lapsed")
        );
        assert!(
            judge(4, &lease(None, true))
                .unwrap_err()
                .contains("no control-plane replica")
        );
    }
}
