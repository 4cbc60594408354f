//! Open auctions (contract net) on the leader: who was invited, the bids received before the
//! window closed, and the award — the best bid by the scheduler's rule, or the task's
//! fallback strategy when nobody bid. Bids are leader memory; only the award is a command.

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
    fallback: Option<scheduler::Strategy>,
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

/// Every open auction.
#[derive(Default)]
pub struct Auctions {
    open: Mutex<BTreeMap<String, Auction>>,
}

impl Auctions {
    /// Opens an auction closing after `window`.
    pub fn open(
        &self,
        call_id: String,
        attempt: AttemptRef,
        needs: TaskNeeds,
        invitees: Vec<String>,
        fallback: Option<scheduler::Strategy>,
        window: Duration,
    ) {
        let auction = Auction {
            call_id: call_id.clone(),
            attempt,
            needs,
            invitees: invitees.into_iter().collect(),
            fallback,
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

    /// The winner: the best eligible bid, else the fallback strategy's choice.
    pub fn winner(&self, candidates: &[Candidate], cursor: &RoundRobinCursor) -> Option<String> {
        let by_id: BTreeMap<String, Candidate> = candidates
            .iter()
            .map(|c| (c.id.clone(), c.clone()))
            .collect();
        if let Some(award) = scheduler::award(&self.bids, &by_id, &self.needs) {
            return Some(award.agent_id);
        }
        let fallback = self.fallback.unwrap_or(scheduler::Strategy::Capability);
        let fallback = if fallback == scheduler::Strategy::Auction {
            scheduler::Strategy::Capability
        } else {
            fallback
        };
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

/// The invitation for `attempt`, closing `window` from now.
pub fn call_for_bids(
    state: &State,
    attempt: &AttemptRef,
    window: Duration,
) -> Option<pb::CallForBids> {
    let (spec, _) = state.jobs.task(&attempt.job_id, &attempt.task_id)?;
    let call_id = format!("{}/{}/{}", attempt.job_id, attempt.task_id, attempt.attempt);
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
            TaskNeeds::default(),
            invitees,
            None,
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
    async fn the_best_bid_wins_and_no_bid_falls_back() {
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
            TaskNeeds::default(),
            vec!["a".into(), "b".into()],
            None,
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

        auctions.open(
            "d".into(),
            attempt(),
            TaskNeeds::default(),
            vec!["a".into()],
            Some(scheduler::Strategy::LeastLoaded),
            Duration::from_millis(10),
        );
        auctions.answer("d", "a", None).unwrap();
        let auction = auctions.take_due().pop().unwrap();
        assert!(
            auction
                .winner(&candidates, &RoundRobinCursor::default())
                .is_some(),
            "fallback places it"
        );
    }
}
