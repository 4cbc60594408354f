//! Auction (contract net), the pure halves: who is invited to bid, and which bid wins.
//!
//! ```text
//!   invitees(needs, agents) ──► CallForBids ──(bid window, runtime)──► bids
//!   award(bids, agents, needs) ──► Some(Award) │ None ──► re-auction or fallback strategy
//! ```
//!
//! The bid window, deadlines and messages belong to the runtime. This module must stay pure:
//! no tokio, I/O, clock or randomness.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{is_eligible, Candidate, TaskNeeds};

/// An agent's offer to run a task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bid {
    /// The bidding agent.
    pub agent_id: String,
    /// Agent-defined cost; only finite values ≥ 0 count.
    pub cost: f64,
    /// Estimated run time.
    pub estimate_ms: u64,
}

/// The winning bid of an auction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Award {
    /// The winner.
    pub agent_id: String,
    /// Its cost.
    pub cost: f64,
    /// Its estimate.
    pub estimate_ms: u64,
}

/// Ids of the agents to call for bids: every eligible candidate, in id order.
pub fn invitees<'a>(needs: &TaskNeeds, candidates: &'a [Candidate]) -> Vec<&'a str> {
    let mut ids: Vec<&str> = candidates
        .iter()
        .filter(|candidate| is_eligible(needs, candidate))
        .map(|candidate| candidate.id.as_str())
        .collect();
    ids.sort_unstable();
    ids
}

/// The best valid bid: lowest cost, then lowest estimate, then lowest load, then lowest agent
/// id. A bid counts only if its cost is finite and ≥ 0 and its agent is still a candidate and
/// still eligible. `None` when no bid counts.
pub fn award(
    bids: &[Bid],
    candidates_by_id: &BTreeMap<String, Candidate>,
    needs: &TaskNeeds,
) -> Option<Award> {
    bids.iter()
        .filter(|bid| bid.cost.is_finite() && bid.cost >= 0.0)
        .filter_map(|bid| {
            let candidate = candidates_by_id.get(&bid.agent_id)?;
            is_eligible(needs, candidate).then_some((bid, candidate))
        })
        .min_by(|lhs, rhs| compare(*lhs, *rhs))
        .map(|(bid, _)| Award {
            agent_id: bid.agent_id.clone(),
            cost: bid.cost,
            estimate_ms: bid.estimate_ms,
        })
}

/// Bid order; costs here are finite, so `partial_cmp` always answers.
fn compare(lhs: (&Bid, &Candidate), rhs: (&Bid, &Candidate)) -> Ordering {
    let (lhs_bid, lhs_agent) = lhs;
    let (rhs_bid, rhs_agent) = rhs;
    let cost = lhs_bid
        .cost
        .partial_cmp(&rhs_bid.cost)
        .unwrap_or(Ordering::Equal);
    cost.then(lhs_bid.estimate_ms.cmp(&rhs_bid.estimate_ms))
        .then(lhs_agent.load().cmp(&rhs_agent.load()))
        .then(lhs_bid.agent_id.cmp(&rhs_bid.agent_id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::testing::{agent, needs};

    fn bid(agent_id: &str, cost: f64, estimate_ms: u64) -> Bid {
        Bid {
            agent_id: agent_id.into(),
            cost,
            estimate_ms,
        }
    }

    fn by_id(candidates: Vec<Candidate>) -> BTreeMap<String, Candidate> {
        candidates.into_iter().map(|c| (c.id.clone(), c)).collect()
    }

    /// (name, bids, candidates, needs, expected winner)
    type Case = (
        &'static str,
        Vec<Bid>,
        BTreeMap<String, Candidate>,
        TaskNeeds,
        Option<&'static str>,
    );

    #[test]
    fn award_table() {
        let idle = || by_id(vec![agent("a"), agent("b"), agent("c")]);
        // (name, bids, candidates, needs, expected winner)
        let cases: Vec<Case> = vec![
            ("no bids", vec![], idle(), needs(), None),
            (
                "lowest cost wins",
                vec![bid("a", 3.0, 10), bid("b", 1.0, 900), bid("c", 2.0, 1)],
                idle(),
                needs(),
                Some("b"),
            ),
            (
                "cost tie: lowest estimate",
                vec![bid("a", 1.0, 50), bid("b", 1.0, 20), bid("c", 1.0, 30)],
                idle(),
                needs(),
                Some("b"),
            ),
            (
                "cost and estimate tie: lowest load",
                vec![bid("a", 1.0, 20), bid("b", 1.0, 20)],
                by_id(vec![agent("a").busy(2, 4), agent("b").busy(1, 4)]),
                needs(),
                Some("b"),
            ),
            (
                "everything ties: lowest id",
                vec![bid("c", 1.0, 20), bid("b", 1.0, 20)],
                idle(),
                needs(),
                Some("b"),
            ),
            (
                "zero cost counts",
                vec![bid("b", 0.0, 5), bid("a", 0.5, 5)],
                idle(),
                needs(),
                Some("b"),
            ),
            (
                "negative zero ties with zero",
                vec![bid("b", -0.0, 5), bid("a", 0.0, 5)],
                idle(),
                needs(),
                Some("a"),
            ),
            (
                "NaN cost ignored",
                vec![bid("a", f64::NAN, 1), bid("b", 5.0, 9)],
                idle(),
                needs(),
                Some("b"),
            ),
            (
                "negative cost ignored",
                vec![bid("a", -1.0, 1), bid("b", 5.0, 9)],
                idle(),
                needs(),
                Some("b"),
            ),
            (
                "infinite cost ignored",
                vec![bid("a", f64::INFINITY, 1), bid("b", f64::NEG_INFINITY, 1)],
                idle(),
                needs(),
                None,
            ),
            (
                "unknown bidder ignored",
                vec![bid("zz", 0.0, 1), bid("b", 5.0, 9)],
                idle(),
                needs(),
                Some("b"),
            ),
            (
                "bidder that became full ignored",
                vec![bid("a", 0.0, 1), bid("b", 5.0, 9)],
                by_id(vec![agent("a").busy(4, 4), agent("b")]),
                needs(),
                Some("b"),
            ),
            (
                "bidder lacking a capability ignored",
                vec![bid("a", 0.0, 1), bid("b", 5.0, 9)],
                by_id(vec![agent("a"), agent("b").caps(&["gpu"])]),
                needs().caps(&["gpu"]),
                Some("b"),
            ),
            (
                "draining bidder ignored",
                vec![bid("a", 0.0, 1)],
                by_id(vec![agent("a").unavailable()]),
                needs(),
                None,
            ),
        ];
        for (name, bids, candidates, task, want) in cases {
            let winner = award(&bids, &candidates, &task);
            assert_eq!(winner.as_ref().map(|w| w.agent_id.as_str()), want, "{name}");
        }
    }

    #[test]
    fn award_carries_the_winning_offer() {
        let candidates = by_id(vec![agent("a"), agent("b")]);
        let bids = [bid("a", 2.5, 40), bid("b", 1.5, 70)];
        let want = Award {
            agent_id: "b".into(),
            cost: 1.5,
            estimate_ms: 70,
        };
        assert_eq!(award(&bids, &candidates, &needs()), Some(want));
    }

    #[test]
    fn invitees_are_eligible_agents_in_id_order() {
        let candidates = vec![
            agent("d").caps(&["gpu"]),
            agent("a").caps(&["gpu"]),
            agent("c"),
            agent("b").caps(&["gpu"]).busy(4, 4),
            agent("e").caps(&["gpu"]).unavailable(),
        ];
        assert_eq!(
            invitees(&needs().caps(&["gpu"]), &candidates),
            vec!["a", "d"]
        );
        assert_eq!(invitees(&needs(), &candidates), vec!["a", "c", "d"]);
    }
}
