//! [`VoteTable`]: every vote, its ballots and its result, changed by `OpenVote`, `CastBallot`
//! and `ExpireVote`.
//!
//! ```text
//!   OpenVote ─► validate (options, voters live, rule) ─► Open ─┬─ CastBallot ─► verdict ─► Decided
//!                                                             │                        └► Failed
//!                                                             └─ ExpireVote (deadline) ───► Failed
//! ```
//! A result, once reached, never changes. One ballot per voter: the same ballot again changes
//! nothing, a different one is refused. Pure: no I/O, clock or randomness.

mod rule;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

pub use rule::{verdict, Tally, Verdict, VoteRule};

use super::jobs::SpecError;
use super::{AgentRegistry, Applied, Meta, Outcome, Rejection};

/// Longest question, in bytes.
pub const QUESTION_BYTES_MAX: usize = 4096;
/// Most options a vote may offer.
pub const OPTIONS_MAX: usize = 64;
/// Longest option, in characters.
pub const OPTION_CHARS_MAX: usize = 256;
/// Most eligible voters.
pub const VOTERS_MAX: usize = 10_000;
/// Longest a vote may stay open: a day.
pub const VOTE_TIMEOUT_MS_MAX: u64 = 24 * 60 * 60 * 1000;

/// What a vote asks and of whom, as the leader resolved it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VoteSpec {
    /// The question.
    pub question: String,
    /// The options, in the order given.
    pub options: Vec<String>,
    /// Eligible voters (agent ids), as given or resolved from a selector when opened.
    pub voters: Vec<String>,
    /// How long the vote stays open.
    pub timeout_ms: u64,
    /// The decision rule.
    pub rule: VoteRule,
    /// Who opened it.
    pub opened_by: String,
}

/// Lifecycle of a vote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VoteState {
    /// Accepting ballots.
    Open,
    /// Terminal: an option won.
    Decided,
    /// Terminal: no option can win, or the deadline passed.
    Failed,
}

/// One counted ballot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ballot {
    /// The voter.
    pub agent_id: String,
    /// The option chosen.
    pub option: String,
    /// When it was counted.
    pub cast_at_ms: u64,
}

/// One vote.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VoteRecord {
    /// Id chosen by the leader.
    pub id: String,
    /// Opening order among all votes.
    pub seq: u64,
    /// What was asked.
    pub spec: VoteSpec,
    /// Current state.
    pub state: VoteState,
    /// The winning option once decided.
    pub decided: Option<String>,
    /// Why it failed.
    pub reason: Option<String>,
    /// Counted ballots, in the order counted.
    pub ballots: Vec<Ballot>,
    /// When it was opened.
    pub opened_at_ms: u64,
    /// When it fails if still open.
    pub deadline_at_ms: u64,
    /// When it was decided or failed.
    pub closed_at_ms: Option<u64>,
    /// The ballots counted, per option.
    pub tally: Tally,
    /// Eligible voters, for lookups.
    pub eligible: BTreeSet<String>,
    /// Position in `ballots` of each voter's ballot.
    pub voted: BTreeMap<String, usize>,
}

impl VoteRecord {
    /// Ballots and weight per option, in the order of the options.
    pub fn tallies(&self) -> Vec<(String, u32, f64)> {
        self.spec
            .options
            .iter()
            .map(|option| {
                let counted = self.tally.per_option.get(option).copied();
                let (count, weight) = counted.unwrap_or_default();
                (option.clone(), count, weight)
            })
            .collect()
    }

    /// Whether `agent_id` may vote.
    pub fn is_eligible(&self, agent_id: &str) -> bool {
        self.eligible.contains(agent_id)
    }

    /// The ballot `agent_id` cast, if any.
    pub fn ballot_of(&self, agent_id: &str) -> Option<&Ballot> {
        self.ballots.get(*self.voted.get(agent_id)?)
    }

    fn close(&mut self, state: VoteState, reason: Option<String>, now_ms: u64) {
        self.state = state;
        self.reason = reason;
        self.closed_at_ms = Some(now_ms);
    }
}

/// Every vote by id, and the open ones by deadline.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct VoteTable {
    votes: BTreeMap<String, VoteRecord>,
    deadlines: BTreeSet<(u64, String)>,
    next_seq: u64,
}

impl VoteTable {
    /// Opens a vote: validates the spec against the live agents.
    pub fn open(
        &mut self,
        vote_id: &str,
        spec: &VoteSpec,
        agents: &AgentRegistry,
        meta: Meta,
    ) -> Outcome {
        if self.votes.contains_key(vote_id) {
            return Err(Rejection::VoteExists {
                vote_id: vote_id.to_owned(),
            });
        }
        validate(spec, agents).map_err(Rejection::InvalidSpec)?;
        let deadline_at_ms = meta.now_ms.saturating_add(spec.timeout_ms);
        let record = VoteRecord {
            id: vote_id.to_owned(),
            seq: self.next_seq,
            spec: spec.clone(),
            state: VoteState::Open,
            decided: None,
            reason: None,
            ballots: Vec::new(),
            opened_at_ms: meta.now_ms,
            deadline_at_ms,
            closed_at_ms: None,
            tally: Tally::default(),
            eligible: spec.voters.iter().cloned().collect(),
            voted: BTreeMap::new(),
        };
        self.next_seq += 1;
        self.deadlines.insert((deadline_at_ms, vote_id.to_owned()));
        self.votes.insert(vote_id.to_owned(), record);
        Ok(Applied::VoteChanged {
            vote_id: vote_id.to_owned(),
            opened: true,
        })
    }

    /// Counts a ballot and decides the vote as soon as its outcome is certain.
    pub fn cast(&mut self, vote_id: &str, agent_id: &str, option: &str, meta: Meta) -> Outcome {
        let vote = self.votes.get(vote_id).ok_or_else(|| unknown(vote_id))?;
        if !vote.is_eligible(agent_id) {
            return Err(Rejection::NotEligible {
                vote_id: vote_id.to_owned(),
                agent_id: agent_id.to_owned(),
            });
        }
        if !vote.spec.options.iter().any(|o| o == option) {
            let problem = format!("'{option}' is not an option of vote '{vote_id}'");
            return Err(Rejection::InvalidSpec(SpecError::new("option", problem)));
        }
        if let Some(ballot) = vote.ballot_of(agent_id) {
            if ballot.option == option {
                return Ok(Applied::Done);
            }
            return Err(Rejection::AlreadyVoted {
                vote_id: vote_id.to_owned(),
                agent_id: agent_id.to_owned(),
                option: ballot.option.clone(),
            });
        }
        if vote.state != VoteState::Open {
            return Err(Rejection::VoteClosed {
                vote_id: vote_id.to_owned(),
                state: vote.state,
            });
        }
        // A ballot after the deadline is too late, even before the expiry is applied.
        if meta.now_ms >= vote.deadline_at_ms {
            return Err(Rejection::PastDeadline {
                name: vote_id.to_owned(),
                deadline_at_ms: vote.deadline_at_ms,
            });
        }
        let Some(vote) = self.votes.get_mut(vote_id) else {
            return Err(unknown(vote_id));
        };
        let first = vote.ballots.first().map(|b| b.option.clone());
        vote.tally
            .count(&vote.spec.rule, agent_id, option, first.as_deref());
        vote.voted.insert(agent_id.to_owned(), vote.ballots.len());
        vote.ballots.push(Ballot {
            agent_id: agent_id.to_owned(),
            option: option.to_owned(),
            cast_at_ms: meta.now_ms,
        });
        let eligible = vote.spec.voters.len();
        let verdict = verdict(&vote.spec.rule, &vote.spec.options, eligible, &vote.tally);
        match verdict {
            Verdict::Open => {}
            Verdict::Decided(option) => {
                vote.decided = Some(option);
                vote.close(VoteState::Decided, None, meta.now_ms);
            }
            Verdict::Failed(reason) => vote.close(VoteState::Failed, Some(reason), meta.now_ms),
        }
        if vote.state != VoteState::Open {
            self.deadlines
                .remove(&(vote.deadline_at_ms, vote_id.to_owned()));
        }
        Ok(Applied::VoteChanged {
            vote_id: vote_id.to_owned(),
            opened: false,
        })
    }

    /// An open vote passed its deadline undecided: it fails.
    pub fn expire(&mut self, vote_id: &str, meta: Meta) -> Outcome {
        let vote = self
            .votes
            .get_mut(vote_id)
            .ok_or_else(|| unknown(vote_id))?;
        if vote.state != VoteState::Open {
            return Err(Rejection::VoteClosed {
                vote_id: vote_id.to_owned(),
                state: vote.state,
            });
        }
        if meta.now_ms < vote.deadline_at_ms {
            return Err(Rejection::VoteDeadlineNotReached {
                vote_id: vote_id.to_owned(),
                deadline_at_ms: vote.deadline_at_ms,
            });
        }
        let reason = format!(
            "the deadline passed with {} of {} ballots cast and no option reaching {}",
            vote.ballots.len(),
            vote.spec.voters.len(),
            vote.spec.rule.describe(vote.spec.voters.len())
        );
        vote.close(VoteState::Failed, Some(reason), meta.now_ms);
        self.deadlines
            .remove(&(vote.deadline_at_ms, vote_id.to_owned()));
        Ok(Applied::VoteChanged {
            vote_id: vote_id.to_owned(),
            opened: false,
        })
    }

    /// One vote.
    pub fn get(&self, vote_id: &str) -> Option<&VoteRecord> {
        self.votes.get(vote_id)
    }

    /// Every vote, in id order.
    pub fn iter(&self) -> impl Iterator<Item = &VoteRecord> {
        self.votes.values()
    }

    /// Open votes whose deadline is at or before `now_ms`: candidates for `ExpireVote`.
    pub fn expired(&self, now_ms: u64) -> impl Iterator<Item = &str> {
        self.deadlines
            .iter()
            .take_while(move |(deadline, _)| *deadline <= now_ms)
            .map(|(_, id)| id.as_str())
    }

    /// Open votes `agent_id` may vote in and has not yet.
    pub fn awaiting(&self, agent_id: &str) -> impl Iterator<Item = &VoteRecord> {
        let agent_id = agent_id.to_owned();
        self.deadlines
            .iter()
            .filter_map(|(_, id)| self.votes.get(id))
            .filter(move |vote| vote.is_eligible(&agent_id) && vote.ballot_of(&agent_id).is_none())
    }
}

fn unknown(vote_id: &str) -> Rejection {
    Rejection::UnknownVote {
        vote_id: vote_id.to_owned(),
    }
}

/// The rules an opened vote must satisfy; voters must be live registered agents.
pub fn validate(spec: &VoteSpec, agents: &AgentRegistry) -> Result<(), SpecError> {
    if spec.question.trim().is_empty() {
        return Err(SpecError::new("question", "empty"));
    }
    if spec.question.len() > QUESTION_BYTES_MAX {
        let problem = format!(
            "{} bytes, the limit is {QUESTION_BYTES_MAX}",
            spec.question.len()
        );
        return Err(SpecError::new("question", problem));
    }
    if !(2..=OPTIONS_MAX).contains(&spec.options.len()) {
        let problem = format!(
            "{} options, a vote needs 2 to {OPTIONS_MAX}",
            spec.options.len()
        );
        return Err(SpecError::new("options", problem));
    }
    let mut seen = BTreeSet::new();
    for (i, option) in spec.options.iter().enumerate() {
        let field = format!("options[{i}]");
        let chars = option.chars().count();
        if chars == 0 || chars > OPTION_CHARS_MAX {
            let problem = format!("{chars} chars, must be 1 to {OPTION_CHARS_MAX}");
            return Err(SpecError::new(field, problem));
        }
        if !seen.insert(option) {
            return Err(SpecError::new(
                field,
                format!("duplicate option '{option}'"),
            ));
        }
    }
    check_voters(spec, agents)?;
    if spec.timeout_ms == 0 || spec.timeout_ms > VOTE_TIMEOUT_MS_MAX {
        let problem = format!("{}, must be 1 to {VOTE_TIMEOUT_MS_MAX}", spec.timeout_ms);
        return Err(SpecError::new("timeout_ms", problem));
    }
    check_rule(spec)
}

fn check_voters(spec: &VoteSpec, agents: &AgentRegistry) -> Result<(), SpecError> {
    if spec.voters.is_empty() {
        return Err(SpecError::new("voters", "no eligible voter"));
    }
    if spec.voters.len() > VOTERS_MAX {
        let problem = format!("{} voters, the limit is {VOTERS_MAX}", spec.voters.len());
        return Err(SpecError::new("voters", problem));
    }
    let live: BTreeSet<&str> = agents.live().map(|agent| agent.id.as_str()).collect();
    let mut seen = BTreeSet::new();
    for (i, voter) in spec.voters.iter().enumerate() {
        let field = format!("voters[{i}]");
        if !seen.insert(voter) {
            return Err(SpecError::new(field, format!("duplicate voter '{voter}'")));
        }
        if !live.contains(voter.as_str()) {
            return Err(SpecError::new(field, format!("no live agent '{voter}'")));
        }
    }
    Ok(())
}

fn check_rule(spec: &VoteSpec) -> Result<(), SpecError> {
    let n = spec.voters.len();
    match &spec.rule {
        VoteRule::Majority | VoteRule::Unanimous => Ok(()),
        VoteRule::Supermajority { threshold } => match *threshold > 0.5 && *threshold <= 1.0 {
            true => Ok(()),
            false => Err(SpecError::new(
                "rule.supermajority.threshold",
                format!("{threshold}, must be in (0.5, 1]"),
            )),
        },
        VoteRule::Byzantine { f } => match n as u64 > 3 * u64::from(*f) {
            true => Ok(()),
            false => Err(SpecError::new(
                "rule.byzantine.f",
                format!(
                    "tolerating {f} faulty voters needs at least {} voters, not {n}",
                    3 * u64::from(*f) + 1
                ),
            )),
        },
        VoteRule::Weighted { weights, threshold } => {
            if !(0.5..1.0).contains(threshold) {
                return Err(SpecError::new(
                    "rule.weighted.threshold",
                    format!("{threshold}, must be in [0.5, 1)"),
                ));
            }
            if let Some(voter) = spec.voters.iter().find(|v| !weights.contains_key(*v)) {
                let problem = format!("no weight for voter '{voter}'");
                return Err(SpecError::new("rule.weighted.weights", problem));
            }
            if let Some(id) = weights.keys().find(|id| !spec.voters.contains(id)) {
                let problem = format!("'{id}' is not an eligible voter");
                return Err(SpecError::new("rule.weighted.weights", problem));
            }
            if let Some((id, w)) = weights.iter().find(|(_, w)| !(w.is_finite() && **w >= 0.0)) {
                let problem = format!("weight {w} of '{id}' is not a finite amount of at least 0");
                return Err(SpecError::new("rule.weighted.weights", problem));
            }
            match weights.values().sum::<f64>() > 0.0 {
                true => Ok(()),
                false => Err(SpecError::new(
                    "rule.weighted.weights",
                    "the total weight is 0",
                )),
            }
        }
    }
}
