//! The round lifecycle of a federation: a sampled attempt starts, updates are receipted (or
//! refused), participants are dropped, and the attempt either commits the staged global model
//! or fails (and is retried as a new attempt until too many fail in a row).
//!
//! ```text
//!   StartRound ─► TRAINING (or ADVERTISING_KEYS) ─► RecordUpdate … ─► CommitRound ─► COMMITTED
//!                                                  └─► FailRound ─► FAILED (retry or give up)
//! ```
//! Pure.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::record::{BlobRef, FederationRecord, Participant, ParticipantState, RoundRecord};
use super::StoredModel;
use super::{changed, conflict, FederationEventKind, FederationState, FederationTable, RoundState};
use crate::state::{AgentRegistry, Applied, Meta, Outcome, Rejection};

/// The leader's sample for a new attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoundStart {
    /// Federation.
    pub federation_id: String,
    /// Round: the committed round + 1.
    pub round: u32,
    /// Attempt: greater than every earlier attempt of the round (see [`next_attempt`]).
    pub attempt: u32,
    /// Selected agents.
    pub participants: Vec<String>,
    /// Selected ÷ eligible.
    pub sampling_rate: f64,
    /// End of the first phase (the key phase with secure aggregation, else the attempt).
    pub phase_deadline_at_ms: u64,
    /// End of the attempt.
    pub deadline_at_ms: u64,
}

/// A participant's accepted update, as the leader received and checked it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpdateReceipt {
    /// Federation.
    pub federation_id: String,
    /// Round.
    pub round: u32,
    /// Attempt.
    pub attempt: u32,
    /// Participant.
    pub agent_id: String,
    /// Examples trained on.
    pub num_examples: u64,
    /// CRC-32 of the update payload.
    pub crc32: u32,
    /// Training metrics.
    pub metrics: BTreeMap<String, f64>,
    /// Evaluation metrics.
    pub evaluation_metrics: BTreeMap<String, f64>,
}

/// The leader's aggregate for an attempt; the bytes were staged before.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoundCommit {
    /// Federation.
    pub federation_id: String,
    /// Round.
    pub round: u32,
    /// Attempt.
    pub attempt: u32,
    /// CRC-32 of the model (the first `model_bytes` staged bytes).
    pub crc32: u32,
    /// Cumulative epsilon after the round.
    pub epsilon_spent: f64,
    /// The privacy budget would be passed by another round: complete after this one.
    pub budget_exhausted: bool,
}

impl FederationTable {
    /// Opens a sampled attempt.
    pub fn start_round(
        &mut self,
        start: &RoundStart,
        agents: &AgentRegistry,
        meta: Meta,
    ) -> Outcome {
        let id = &start.federation_id;
        let federation = self.federation_mut(id)?;
        check_startable(federation, start)?;
        let spec = &federation.spec;
        let min = spec.selection.min_participants as usize;
        if start.participants.len() < min {
            return Err(conflict(
                id,
                format!("{} participants, at least {min}", start.participants.len()),
            ));
        }
        let mut participants = BTreeMap::new();
        for agent_id in &start.participants {
            let live = agents.get(agent_id).is_some_and(|a| a.is_live());
            if !live {
                return Err(conflict(
                    id,
                    format!("participant '{agent_id}' is not live"),
                ));
            }
            participants.insert(agent_id.clone(), Participant::selected());
        }
        let state = match spec.secure_aggregation {
            Some(_) => RoundState::AdvertisingKeys,
            None => RoundState::Training,
        };
        let round = RoundRecord {
            round: start.round,
            attempt: start.attempt,
            state,
            state_reason: String::new(),
            participants,
            evaluate: spec.evaluates(start.round),
            sampling_rate: start.sampling_rate,
            started_at_ms: meta.now_ms,
            phase_deadline_at_ms: start.phase_deadline_at_ms,
            deadline_at_ms: start.deadline_at_ms,
            committed_at_ms: 0,
            metrics: BTreeMap::new(),
            evaluation_metrics: BTreeMap::new(),
            epsilon_spent: federation.epsilon_spent,
            model: None,
            shares: Vec::new(),
            unmask_shares: BTreeMap::new(),
        };
        federation.rounds.insert(start.round, round);
        federation.current_round = start.round;
        federation.staging = None;
        let event = FederationEventKind::RoundStarted {
            round: start.round,
            attempt: start.attempt,
            participants: start.participants.clone(),
            deadline_at_ms: start.deadline_at_ms,
        };
        federation.record(event, meta);
        Ok(Applied::RoundStarted {
            federation_id: id.clone(),
            round: start.round,
            attempt: start.attempt,
        })
    }

    /// Records an accepted update. Resubmitting the same update is accepted again.
    pub fn record_update(&mut self, receipt: &UpdateReceipt, meta: Meta) -> Outcome {
        let id = &receipt.federation_id;
        let federation = self.federation_mut(id)?;
        let secure = federation.spec.secure_aggregation.is_some();
        let round = open_attempt(federation, receipt.round, receipt.attempt)?;
        let participant = round
            .participants
            .get_mut(&receipt.agent_id)
            .ok_or_else(|| refused(&receipt.agent_id, "not selected"))?;
        let wanted = match round.state {
            RoundState::Training => participant_may_submit(participant, secure),
            _ => Err("round is not collecting updates"),
        };
        if participant.state == ParticipantState::Submitted {
            return match participant.crc32 == receipt.crc32 {
                true => Ok(Applied::UpdateRecorded { duplicate: true }),
                false => Err(refused(
                    &receipt.agent_id,
                    "duplicate update with different content",
                )),
            };
        }
        wanted.map_err(|reason| refused(&receipt.agent_id, reason))?;
        participant.state = ParticipantState::Submitted;
        participant.num_examples = receipt.num_examples;
        participant.crc32 = receipt.crc32;
        participant.metrics = receipt.metrics.clone();
        participant.evaluation_metrics = receipt.evaluation_metrics.clone();
        let event = FederationEventKind::UpdateReceived {
            round: receipt.round,
            attempt: receipt.attempt,
            agent_id: receipt.agent_id.clone(),
            num_examples: receipt.num_examples,
        };
        federation.record(event, meta);
        Ok(Applied::UpdateRecorded { duplicate: false })
    }

    /// Records that the leader refused a participant's update: it takes no further part.
    pub fn reject_update(
        &mut self,
        federation_id: &str,
        round: u32,
        attempt: u32,
        agent_id: &str,
        reason: &str,
        meta: Meta,
    ) -> Outcome {
        let federation = self.federation_mut(federation_id)?;
        let open = open_attempt(federation, round, attempt)?;
        let participant = open
            .participants
            .get_mut(agent_id)
            .filter(|p| p.state.is_active())
            .ok_or_else(|| refused(agent_id, "not an active participant"))?;
        participant.state = ParticipantState::Rejected;
        participant.reason = reason.to_owned();
        let event = FederationEventKind::UpdateRejected {
            round,
            attempt,
            agent_id: agent_id.to_owned(),
            reason: reason.to_owned(),
        };
        federation.record(event, meta);
        Ok(changed(federation_id))
    }

    /// Drops the named participants that are still active; returns how many were.
    pub fn drop_participants(
        &mut self,
        federation_id: &str,
        round: u32,
        attempt: u32,
        agent_ids: &[String],
        reason: &str,
        meta: Meta,
    ) -> Outcome {
        let federation = self.federation_mut(federation_id)?;
        open_attempt(federation, round, attempt)?;
        let dropped = drop_active(federation, agent_ids, reason, meta);
        Ok(Applied::ParticipantsDropped {
            federation_id: federation_id.to_owned(),
            dropped,
        })
    }

    /// An agent expired or left: it is dropped from every open attempt.
    pub fn agent_lost(&mut self, agent_id: &str, meta: Meta) {
        let ids = [agent_id.to_owned()];
        for federation in self.federations.values_mut() {
            if federation.open_round().is_some() {
                drop_active(federation, &ids, "agent lost", meta);
            }
        }
    }

    /// Fails the open attempt; the federation fails when too many failed in a row.
    pub fn fail_round(
        &mut self,
        federation_id: &str,
        round: u32,
        attempt: u32,
        reason: &str,
        meta: Meta,
    ) -> Outcome {
        let federation = self.federation_mut(federation_id)?;
        let open = open_attempt(federation, round, attempt)?;
        open.state = RoundState::Failed;
        open.state_reason = reason.to_owned();
        open.shares.clear();
        open.unmask_shares.clear();
        federation.current_round = 0;
        federation.staging = None;
        federation.consecutive_failures += 1;
        let will_retry = federation.consecutive_failures < federation.spec.failed_rounds_allowed();
        let event = FederationEventKind::RoundFailed {
            round,
            attempt,
            reason: reason.to_owned(),
            will_retry,
        };
        federation.record(event, meta);
        if !will_retry {
            let failures = federation.consecutive_failures;
            let why = format!("{failures} consecutive round attempts failed; last: {reason}");
            federation.finish(FederationState::Failed, &why, meta);
        }
        Ok(changed(federation_id))
    }

    /// Commits the staged global model (and server state) as the round's result.
    pub fn commit_round(&mut self, commit: &RoundCommit, meta: Meta) -> Outcome {
        let id = &commit.federation_id;
        let federation = self.federation_mut(id)?;
        let model_bytes = federation.spec.model_bytes() as usize;
        let min = federation.spec.selection.min_participants as usize;
        let staged = match &federation.staging {
            Some(s) if s.round == commit.round && s.attempt == commit.attempt => s.data.len(),
            _ => return Err(conflict(id, "no model was staged for this attempt")),
        };
        let open = open_attempt(federation, commit.round, commit.attempt)?;
        if staged < model_bytes {
            return Err(conflict(
                id,
                format!("staged {staged} bytes, the model holds {model_bytes}"),
            ));
        }
        let num_updates = open.submitted().count();
        if num_updates < min {
            return Err(conflict(
                id,
                format!("{num_updates} updates, at least {min}"),
            ));
        }
        let (data, server_state) = federation
            .staging
            .take()
            .map(|s| s.data.split_at(model_bytes))
            .unwrap_or_default();
        let server_state = server_state.to_vec();
        let open = open_attempt(federation, commit.round, commit.attempt)?;
        let event = settle(open, commit, &data, meta);
        federation.consecutive_failures = 0;
        federation.committed_round = commit.round;
        federation.current_round = 0;
        federation.epsilon_spent = commit.epsilon_spent;
        federation.latest_metrics = open_metrics(federation, commit.round);
        federation.server_state = server_state;
        federation.models.retain(|round, _| *round == 0);
        let model = StoredModel {
            crc32: commit.crc32,
            data,
        };
        federation.models.insert(commit.round, model);
        federation.record(event, meta);
        if commit.round >= federation.spec.rounds {
            federation.finish(FederationState::Completed, "", meta);
        } else if commit.budget_exhausted {
            federation.finish(FederationState::Completed, "privacy budget reached", meta);
        }
        Ok(changed(id))
    }
}

/// Marks the attempt committed and returns its `RoundCommitted` event.
fn settle(
    round: &mut RoundRecord,
    commit: &RoundCommit,
    model: &[u8],
    meta: Meta,
) -> FederationEventKind {
    let (metrics, total_examples) = weighted_metrics(round, |p| &p.metrics);
    let (evaluation_metrics, _) = weighted_metrics(round, |p| &p.evaluation_metrics);
    let blob = BlobRef {
        size_bytes: model.len() as u64,
        crc32: commit.crc32,
    };
    round.state = RoundState::Committed;
    round.committed_at_ms = meta.now_ms;
    round.metrics = metrics.clone();
    round.evaluation_metrics = evaluation_metrics.clone();
    round.epsilon_spent = commit.epsilon_spent;
    round.model = Some(blob.clone());
    round.shares.clear();
    round.unmask_shares.clear();
    FederationEventKind::RoundCommitted {
        round: commit.round,
        attempt: commit.attempt,
        num_updates: round.submitted().count() as u32,
        total_examples,
        metrics,
        evaluation_metrics,
        epsilon_spent: commit.epsilon_spent,
        model: blob,
    }
}

fn open_metrics(federation: &FederationRecord, round: u32) -> BTreeMap<String, f64> {
    federation
        .rounds
        .get(&round)
        .map(|r| r.metrics.clone())
        .unwrap_or_default()
}

/// Each metric averaged over the submitted participants that reported it, weighted by their
/// examples; and the total examples.
pub fn weighted_metrics(
    round: &RoundRecord,
    pick: impl Fn(&Participant) -> &BTreeMap<String, f64>,
) -> (BTreeMap<String, f64>, u64) {
    let mut sums: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    let mut total = 0u64;
    for (_, participant) in round.submitted() {
        total += participant.num_examples;
        let weight = participant.num_examples as f64;
        for (name, value) in pick(participant).iter().filter(|(_, v)| v.is_finite()) {
            let entry = sums.entry(name.clone()).or_default();
            entry.0 += weight * value;
            entry.1 += weight;
        }
    }
    let averaged = sums
        .into_iter()
        .filter(|(_, (_, weight))| *weight > 0.0)
        .map(|(name, (sum, weight))| (name, sum / weight))
        .collect();
    (averaged, total)
}

fn check_startable(federation: &FederationRecord, start: &RoundStart) -> Result<(), Rejection> {
    let id = &federation.id;
    if federation.state != FederationState::Running {
        return Err(conflict(
            id,
            format!("is {:?}, not running", federation.state),
        ));
    }
    if federation.open_round().is_some() {
        return Err(conflict(
            id,
            format!("round {} is still open", federation.current_round),
        ));
    }
    if start.round != federation.committed_round + 1 {
        return Err(conflict(
            id,
            format!(
                "round {} cannot start: round {} is next",
                start.round,
                federation.committed_round + 1
            ),
        ));
    }
    let previous = federation.rounds.get(&start.round).map_or(0, |r| r.attempt);
    match start.attempt > previous {
        true => Ok(()),
        false => Err(conflict(
            id,
            format!(
                "attempt {} cannot start: attempt {previous} already did",
                start.attempt
            ),
        )),
    }
}

/// The open attempt `round`/`attempt` of `federation`, or why it is not open.
pub(super) fn open_attempt(
    federation: &mut FederationRecord,
    round: u32,
    attempt: u32,
) -> Result<&mut RoundRecord, Rejection> {
    let id = federation.id.clone();
    if federation.state != FederationState::Running {
        return Err(conflict(
            &id,
            format!("is {:?}, not running", federation.state),
        ));
    }
    let record = federation
        .rounds
        .get_mut(&round)
        .ok_or_else(|| conflict(&id, format!("round {round} has not started")))?;
    if record.attempt != attempt {
        return Err(Rejection::UpdateRefused {
            agent_id: String::new(),
            reason: format!(
                "stale attempt: round {round} is at attempt {}, not {attempt}",
                record.attempt
            ),
        });
    }
    if record.state.is_terminal() {
        return Err(conflict(
            &id,
            format!(
                "round {round} attempt {attempt} is {:?}, closed",
                record.state
            ),
        ));
    }
    Ok(record)
}

fn participant_may_submit(participant: &Participant, secure: bool) -> Result<(), &'static str> {
    match (participant.state, secure) {
        (ParticipantState::Selected, false) | (ParticipantState::KeysShared, true) => Ok(()),
        (ParticipantState::Dropped, _) => Err("participant dropped"),
        (ParticipantState::Rejected, _) => Err("participant's update was rejected"),
        _ => Err("participant has not completed key sharing"),
    }
}

/// Drops the active participants among `agent_ids` from the open attempt; returns how many.
pub(super) fn drop_active(
    federation: &mut FederationRecord,
    agent_ids: &[String],
    reason: &str,
    meta: Meta,
) -> u32 {
    let Some(open) = federation.open_round_mut() else {
        return 0;
    };
    let (round, attempt) = (open.round, open.attempt);
    let mut dropped = Vec::new();
    for agent_id in agent_ids {
        if let Some(participant) = open.participants.get_mut(agent_id) {
            if participant.state.is_active() {
                participant.state = ParticipantState::Dropped;
                participant.reason = reason.to_owned();
                dropped.push(agent_id.clone());
            }
        }
    }
    let count = dropped.len() as u32;
    for agent_id in dropped {
        let event = FederationEventKind::ParticipantDropped {
            round,
            attempt,
            agent_id,
            reason: reason.to_owned(),
        };
        federation.record(event, meta);
    }
    count
}

fn refused(agent_id: &str, reason: impl Into<String>) -> Rejection {
    Rejection::UpdateRefused {
        agent_id: agent_id.to_owned(),
        reason: reason.into(),
    }
}

/// The attempt number for the next start of round `round` of `federation` when it trains on the
/// model committed by attempt `base_attempt` of the round before (0: the initial model):
/// greater than every earlier attempt of the round, and at least `base_attempt`.
///
/// An attempt opened behind its base's commit (before the base is known to commit) takes
/// `base_attempt` itself, so the pair (round, attempt) always names one base model: if that
/// base never commits, the round before is retried under a higher attempt number, and every
/// later start of this round numbers above it. Participants and the leader can then trust that
/// an update for (round, attempt) was trained on the attempt's own model.
pub fn next_attempt(federation: &FederationRecord, round: u32, base_attempt: u32) -> u32 {
    let previous = federation.rounds.get(&round).map_or(0, |r| r.attempt);
    (previous + 1).max(base_attempt)
}
