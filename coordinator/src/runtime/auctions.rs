//! Open auctions (contract net) on the leader: who was invited, the bids received before the
//! window closed, and the award — the best bid by the scheduler's rule. When nobody bids the
//! task is auctioned again, and after its `auction_rounds` rounds its fallback strategy (if
//! it has one) places it. Bids and round counts are leader memory (a new leader starts the
//! count again); only the award is a command.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Duration;

use synod_proto::v1 as pb;
use synod_proto::v1::coordinator_message::Kind;
use tokio::time::Instant;

use super::messages;
use crate::scheduler::{self, Bid, Candidate, RoundRobinCursor, TaskNeeds};
use crate::state::jobs::AttemptRef;
use crate::state::State;

/// One auction.
#[derive(Debug, Clone)]
pub struct Auction {
    /// Call id sent to bidders.
    pub call_id: String,
    /// The attempt being auctioned.
    pub attempt: AttemptRef,
    needs: TaskNeeds,
    invitees: BTreeSet<String>,
    policy: NoBidPolicy,
    /// 1 for the task's first auction, counting rounds without a bid.
    round: u32,
    deadline: Instant,
    bids: Vec<Bid>,
    answered: BTreeSet<String>,
}

/// Why a bid was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BidRefused {
    /// No open auction has this call id (closed, awarded, or never opened).
    #[error("call_id: no open auction with this id")]
    UnknownCall,
    /// The bidder was not invited.
    #[error("call_id: this agent was not invited to bid")]
    NotInvited,
    /// The bidder already answered this call.
    #[error("call_id: this agent already answered this call")]
    AlreadyAnswered,
}

/// What happens when an auction gets no bid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NoBidPolicy {
    /// Places the task after `rounds` auctions without a bid; `None` re-auctions forever.
    pub fallback: Option<scheduler::Strategy>,
    /// Auctions before the fallback; 0 means 1.
    pub rounds: u32,
}

/// Every open auction, and how many rounds each re-auctioned task went without a bid.
#[derive(Default)]
pub struct Auctions {
    open: Mutex<BTreeMap<String, Auction>>,
    unanswered_rounds: Mutex<BTreeMap<AttemptRef, u32>>,
}

impl Auctions {
    /// The round the next auction of `attempt` is (1 for its first).
    pub fn next_round(&self, attempt: &AttemptRef) -> u32 {
        let rounds = self.unanswered_rounds.lock().expect("auctions lock");
        rounds.get(attempt).copied().unwrap_or(0) + 1
    }

    /// Opens round `round` of an auction, closing after `window`.
    #[allow(clippy::too_many_arguments)]
    pub fn open(
        &self,
        call_id: String,
        attempt: AttemptRef,
        round: u32,
        needs: TaskNeeds,
        invitees: Vec<String>,
        policy: NoBidPolicy,
        window: Duration,
    ) {
        let auction = Auction {
            call_id: call_id.clone(),
            attempt,
            needs,
            invitees: invitees.into_iter().collect(),
            policy,
            round,
            deadline: Instant::now() + window,
            bids: Vec::new(),
            answered: BTreeSet::new(),
        };
        self.open
            .lock()
            .expect("auctions lock")
            .insert(call_id, auction);
    }

    /// True while an auction for this task is open.
    pub fn is_open(&self, job_id: &str, task_id: &str) -> bool {
        let open = self.open.lock().expect("auctions lock");
        open.values()
            .any(|a| a.attempt.job_id == job_id && a.attempt.task_id == task_id)
    }

    /// Records `agent_id`'s answer to `call_id` (`None` declines).
    pub fn answer(
        &self,
        call_id: &str,
        agent_id: &str,
        offer: Option<(f64, u64)>,
    ) -> Result<(), BidRefused> {
        let mut open = self.open.lock().expect("auctions lock");
        let auction = open.get_mut(call_id).ok_or(BidRefused::UnknownCall)?;
        if !auction.invitees.contains(agent_id) {
            return Err(BidRefused::NotInvited);
        }
        if !auction.answered.insert(agent_id.to_owned()) {
            return Err(BidRefused::AlreadyAnswered);
        }
        if let Some((cost, estimate_ms)) = offer {
            auction.bids.push(Bid {
                agent_id: agent_id.to_owned(),
                cost,
                estimate_ms,
            });
        }
        Ok(())
    }

    /// Remembers how `auction` ended: a round without a winner counts towards the fallback;
    /// an award ends the count.
    pub fn closed(&self, auction: &Auction, winner: Option<&str>) {
        let mut rounds = self.unanswered_rounds.lock().expect("auctions lock");
        match winner {
            Some(_) => rounds.remove(&auction.attempt),
            None => rounds.insert(auction.attempt.clone(), auction.round),
        };
    }

    /// Forgets the round counts of attempts `still_auctioned` rejects (assigned meanwhile,
    /// cancelled, or their job ended).
    pub fn forget_rounds_unless(&self, still_auctioned: impl Fn(&AttemptRef) -> bool) {
        let mut rounds = self.unanswered_rounds.lock().expect("auctions lock");
        rounds.retain(|attempt, _| still_auctioned(attempt));
    }

    /// True when some task is being re-auctioned.
    pub fn has_rounds(&self) -> bool {
        !self
            .unanswered_rounds
            .lock()
            .expect("auctions lock")
            .is_empty()
    }

    /// Removes and returns the auctions whose window closed, or that every invitee answered.
    pub fn take_due(&self) -> Vec<Auction> {
        let now = Instant::now();
        let mut open = self.open.lock().expect("auctions lock");
        let due: Vec<String> = open
            .values()
            .filter(|a| a.deadline <= now || a.answered.len() == a.invitees.len())
            .map(|a| a.call_id.clone())
            .collect();
        due.iter()
            .filter_map(|call_id| open.remove(call_id))
            .collect()
    }
}

impl Auction {
    /// What the auctioned task needs.
    pub fn needs(&self) -> &TaskNeeds {
        &self.needs
    }

    /// The winner: the best eligible bid; without one, the fallback strategy's choice once
    /// the task's rounds are used up; otherwise none (the task is auctioned again).
    pub fn winner(&self, candidates: &[Candidate], cursor: &RoundRobinCursor) -> Option<String> {
        let by_id: BTreeMap<String, Candidate> = candidates
            .iter()
            .map(|c| (c.id.clone(), c.clone()))
            .collect();
        if let Some(award) = scheduler::award(&self.bids, &by_id, &self.needs) {
            return Some(award.agent_id);
        }
        let fallback = self
            .policy
            .fallback
            .filter(|strategy| *strategy != scheduler::Strategy::Auction)?;
        if self.round < self.policy.rounds.max(1) {
            return None;
        }
        scheduler::choose(fallback, &self.needs, candidates, cursor).map(|c| c.id.clone())
    }

    /// The BidResult for every bidder.
    pub fn results(&self, winner: Option<&str>) -> Vec<(String, pb::CoordinatorMessage)> {
        self.bids
            .iter()
            .map(|bid| {
                let awarded = winner == Some(bid.agent_id.as_str());
                let result = pb::BidResult {
                    call_id: self.call_id.clone(),
                    awarded,
                    reason: if awarded {
                        String::new()
                    } else {
                        "outbid".into()
                    },
                };
                (
                    bid.agent_id.clone(),
                    messages::message(Kind::BidResult(result)),
                )
            })
            .collect()
    }
}

/// The invitation to round `round` for `attempt`, closing `window` from now.
pub fn call_for_bids(
    state: &State,
    attempt: &AttemptRef,
    round: u32,
    window: Duration,
) -> Option<pb::CallForBids> {
    let (spec, _) = state.jobs.task(&attempt.job_id, &attempt.task_id)?;
    let call_id = format!(
        "{}/{}/{}/{round}",
        attempt.job_id, attempt.task_id, attempt.attempt
    );
    Some(pb::CallForBids {
        call_id,
        job_id: attempt.job_id.clone(),
        task_id: attempt.task_id.clone(),
        kind: spec.kind.clone(),
        description: spec.description.clone(),
        required_capabilities: spec.required_capabilities.iter().cloned().collect(),
        payload: if spec.payload.len() <= 64 * 1024 {
            spec.payload.clone()
        } else {
            Vec::new()
        },
        timeout_ms: spec.effective_timeout_ms(),
        bid_deadline_at_ms: super::clock::now_ms() + window.as_millis() as u64,
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt() -> AttemptRef {
        AttemptRef {
            job_id: "j".into(),
            task_id: "t".into(),
            attempt: 1,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn bids_are_checked_and_the_auction_closes_when_due() {
        let auctions = Auctions::default();
        let invitees = vec!["a".to_owned(), "b".to_owned()];
        auctions.open(
            "c1".into(),
            attempt(),
            1,
            TaskNeeds::default(),
            invitees,
            NoBidPolicy::default(),
            Duration::from_millis(100),
        );
        assert!(auctions.is_open("j", "t"));
        assert_eq!(
            auctions.answer("c1", "x", Some((1.0, 1))),
            Err(BidRefused::NotInvited)
        );
        assert_eq!(
            auctions.answer("c2", "a", Some((1.0, 1))),
            Err(BidRefused::UnknownCall)
        );
        assert_eq!(auctions.answer("c1", "a", Some((2.0, 1))), Ok(()));
        assert_eq!(
            auctions.answer("c1", "a", Some((1.0, 1))),
            Err(BidRefused::AlreadyAnswered)
        );
        assert!(
            auctions.take_due().is_empty(),
            "window open and b has not answered"
        );
        tokio::time::advance(Duration::from_millis(100)).await;
        let due = auctions.take_due();
        assert_eq!(due.len(), 1);
        assert!(!auctions.is_open("j", "t"));
    }

    #[tokio::test(start_paused = true)]
    async fn the_best_bid_wins_and_no_bid_re_auctions_then_falls_back() {
        let candidate = |id: &str| Candidate {
            id: id.into(),
            max_concurrent: 4,
            ..Candidate::default()
        };
        let candidates = vec![candidate("a"), candidate("b")];
        let auctions = Auctions::default();
        auctions.open(
            "c".into(),
            attempt(),
            1,
            TaskNeeds::default(),
            vec!["a".into(), "b".into()],
            NoBidPolicy::default(),
            Duration::from_millis(10),
        );
        auctions.answer("c", "a", Some((5.0, 10))).unwrap();
        auctions.answer("c", "b", Some((3.0, 99))).unwrap();
        let auction = auctions.take_due().pop().unwrap();
        assert_eq!(
            auction
                .winner(&candidates, &RoundRobinCursor::default())
                .as_deref(),
            Some("b")
        );
        let results: Vec<(String, bool)> = auction
            .results(Some("b"))
            .into_iter()
            .map(|(agent, m)| match m.kind {
                Some(Kind::BidResult(r)) => (agent, r.awarded),
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(results, [("a".to_owned(), false), ("b".to_owned(), true)]);

        auctions.closed(&auction, Some("b"));
        assert_eq!(
            auctions.next_round(&attempt()),
            1,
            "an award ends the count"
        );

        // Two rounds without a bid, then the fallback.
        let policy = NoBidPolicy {
            fallback: Some(scheduler::Strategy::LeastLoaded),
            rounds: 2,
        };
        let mut winners = Vec::new();
        for call_id in ["d", "e"] {
            let round = auctions.next_round(&attempt());
            let invitees = vec!["a".into()];
            let window = Duration::from_millis(10);
            auctions.open(
                call_id.into(),
                attempt(),
                round,
                TaskNeeds::default(),
                invitees,
                policy,
                window,
            );
            auctions.answer(call_id, "a", None).unwrap();
            let auction = auctions.take_due().pop().unwrap();
            let winner = auction.winner(&candidates, &RoundRobinCursor::default());
            auctions.closed(&auction, winner.as_deref());
            winners.push((round, winner));
        }
        assert_eq!(winners, [(1, None), (2, Some("a".to_owned()))]);

        // Without a fallback the task is auctioned again, round after round.
        let auctions = Auctions::default();
        for round in 1..=3 {
            assert_eq!(auctions.next_round(&attempt()), round);
            let invitees = vec!["a".into()];
            let window = Duration::from_millis(10);
            auctions.open(
                "f".into(),
                attempt(),
                round,
                TaskNeeds::default(),
                invitees,
                NoBidPolicy::default(),
                window,
            );
            tokio::time::advance(window).await;
            let auction = auctions.take_due().pop().unwrap();
            let winner = auction.winner(&candidates, &RoundRobinCursor::default());
            assert_eq!(winner, None);
            auctions.closed(&auction, None);
        }
        auctions.forget_rounds_unless(|_| false);
        assert!(!auctions.has_rounds());
    }
}
