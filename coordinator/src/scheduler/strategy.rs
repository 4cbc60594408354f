//! [`Strategy`]: how an agent is chosen for a task, and [`choose`], the dispatcher for the
//! strategies that need nothing but the task and the candidates.
//!
//! Pure: no tokio, I/O, clock or randomness.

use serde::{Deserialize, Serialize};

use super::{capability, least_loaded, round_robin, Candidate, RoundRobinCursor, TaskNeeds};

/// How the scheduler picks an agent for a ready task, as in `synod.v1.AssignmentStrategy`
/// (where UNSPECIFIED means [`Strategy::Capability`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Strategy {
    /// Cycle through eligible agents in id order.
    RoundRobin,
    /// The eligible agent with the lowest running / max_concurrent.
    LeastLoaded,
    /// Preferred-label matches, then load.
    #[default]
    Capability,
    /// Call for bids, award the best one.
    Auction,
}

/// The agent `strategy` picks for a task, or `None` when no candidate is eligible.
///
/// An auction needs bids first ([`award`](super::award)); given [`Strategy::Auction`] this
/// ranks like [`Strategy::Capability`], the fallback used once an auction got no bid. Round-robin
/// reads `cursor` but does not move it.
pub fn choose<'a>(
    strategy: Strategy,
    needs: &TaskNeeds,
    candidates: &'a [Candidate],
    cursor: &RoundRobinCursor,
) -> Option<&'a Candidate> {
    match strategy {
        Strategy::RoundRobin => round_robin::choose(needs, candidates, cursor),
        Strategy::LeastLoaded => least_loaded::choose(needs, candidates),
        Strategy::Capability | Strategy::Auction => capability::choose(needs, candidates),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::testing::{agent, id_of, needs};

    #[test]
    fn dispatch_table() {
        // a: idle, no labels; b: busier, preferred label; c: half loaded.
        let candidates = vec![
            agent("a"),
            agent("b").labels(&[("zone", "eu")]).busy(3, 4),
            agent("c").busy(2, 4),
        ];
        let task = needs().prefer(&[("zone", "eu")]);
        let cursor = RoundRobinCursor::after("a");
        let cases = [
            (Strategy::RoundRobin, Some("b")),
            (Strategy::LeastLoaded, Some("a")),
            (Strategy::Capability, Some("b")),
            (Strategy::Auction, Some("b")),
        ];
        for (strategy, want) in cases {
            assert_eq!(
                id_of(choose(strategy, &task, &candidates, &cursor)),
                want,
                "{strategy:?}"
            );
        }
    }

    #[test]
    fn full_agents_are_never_chosen() {
        let candidates = vec![
            agent("a").busy(4, 4),
            agent("b").busy(1, 1),
            agent("c").busy(0, 0),
        ];
        let cursor = RoundRobinCursor::default();
        for strategy in [
            Strategy::RoundRobin,
            Strategy::LeastLoaded,
            Strategy::Capability,
            Strategy::Auction,
        ] {
            assert_eq!(
                choose(strategy, &needs(), &candidates, &cursor),
                None,
                "{strategy:?}"
            );
        }
    }

    #[test]
    fn unspecified_defaults_to_capability() {
        assert_eq!(Strategy::default(), Strategy::Capability);
    }
}
