//! [`FederationTable`]: federated-learning runs and their rounds, changed by the federation
//! commands. The leader samples participants, folds updates and computes each global model
//! (runtime); this table records what was decided, so a new leader knows every committed
//! round and restarts the one in flight.
//!
//! ```text
//!   StartFederation ─► AWAITING_MODEL ─(StageModel × n, CommitInitialModel)─► RUNNING
//!   round r: StartRound(sample) ─► [AdvertiseKey… AdvancePhase ShareKeys… AdvancePhase]
//!            ─► TRAINING: RecordUpdate / RejectUpdate / DropParticipants
//!            ─► [AdvancePhase UNMASKING: RevealShares…]
//!            ─► StageModel × n ─► CommitRound ─► COMMITTED ─► round r+1 … ─► COMPLETED
//!                          └─► FailRound ─► retried as attempt + 1, or FAILED after too many
//! ```
//! Only the initial and the latest committed model are kept. Pure: no I/O, clock or
//! randomness (the sample is the leader's, written into `StartRound`).

mod events;
mod record;
mod rounds;
pub mod secure;
pub mod spec;
mod staged;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use events::{FederationEvent, FederationEventKind};
pub use record::{
    BlobRef, EncryptedShare, FederationRecord, FederationState, Participant, ParticipantState,
    RoundRecord, RoundState, Staging, StoredModel,
};
pub use rounds::{next_attempt, RoundCommit, RoundStart, UpdateReceipt};
pub use spec::FederationSpec;

use super::{Applied, Command, Meta, Outcome, Rejection};

/// Most bytes one `StageModel` command carries.
pub const STAGE_CHUNK_BYTES_MAX: usize = 4 * 1024 * 1024;

/// Every federation.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct FederationTable {
    federations: BTreeMap<String, FederationRecord>,
    next_seq: u64,
}

impl FederationTable {
    /// A federation by id.
    pub fn get(&self, federation_id: &str) -> Option<&FederationRecord> {
        self.federations.get(federation_id)
    }

    /// Every federation, in id order.
    pub fn iter(&self) -> impl Iterator<Item = &FederationRecord> {
        self.federations.values()
    }

    /// Federations that are running.
    pub fn running(&self) -> impl Iterator<Item = &FederationRecord> {
        self.iter().filter(|f| f.state == FederationState::Running)
    }

    /// Open attempts `agent_id` is selected for and still active in.
    pub fn invitations_of<'a>(
        &'a self,
        agent_id: &'a str,
    ) -> impl Iterator<Item = (&'a FederationRecord, &'a RoundRecord)> + 'a {
        self.running().filter_map(move |f| {
            let round = f.open_round()?;
            let participant = round.participants.get(agent_id)?;
            participant.state.is_active().then_some((f, round))
        })
    }

    fn federation_mut(&mut self, federation_id: &str) -> Result<&mut FederationRecord, Rejection> {
        self.federations
            .get_mut(federation_id)
            .ok_or_else(|| unknown(federation_id))
    }

    /// Starts a federation; with an initial model it runs at once.
    pub fn start(
        &mut self,
        federation_id: &str,
        spec: &FederationSpec,
        idempotency_key: &str,
        initial_model: Option<&StoredModel>,
        meta: Meta,
    ) -> Outcome {
        spec.validate().map_err(Rejection::InvalidSpec)?;
        if self.federations.contains_key(federation_id) {
            return Err(Rejection::FederationExists {
                federation_id: federation_id.to_owned(),
            });
        }
        if let Some(model) = initial_model {
            check_model_size(spec, model.data.len(), federation_id)?;
        }
        self.next_seq += 1;
        let mut record = new_record(federation_id, spec, idempotency_key, self.next_seq, meta);
        let started = FederationEventKind::Started {
            name: spec.name.clone(),
            rounds: spec.rounds,
        };
        record.record(started, meta);
        if let Some(model) = initial_model {
            install_initial(&mut record, model.clone(), meta);
        }
        self.federations.insert(federation_id.to_owned(), record);
        Ok(changed(federation_id))
    }

    /// Appends bytes to the model being staged for `round` (0: the initial model).
    pub fn stage(
        &mut self,
        federation_id: &str,
        round: u32,
        attempt: u32,
        offset: u64,
        data: bytes::Bytes,
    ) -> Outcome {
        let federation = self.federation_mut(federation_id)?;
        check_stage_target(federation, round, attempt)?;
        let limit = federation.spec.model_bytes() * 3 + 64;
        let staging = match &mut federation.staging {
            Some(s) if s.round == round && s.attempt == attempt && offset > 0 => s,
            _ if offset == 0 => federation.staging.insert(Staging {
                round,
                attempt,
                data: Default::default(),
            }),
            _ => return Err(conflict(federation_id, "no model is being staged")),
        };
        if offset != staging.data.len() as u64 {
            return Err(conflict(
                federation_id,
                format!("staged offset {offset}, expected {}", staging.data.len()),
            ));
        }
        if data.len() > STAGE_CHUNK_BYTES_MAX || staging.data.len() + data.len() > limit as usize {
            return Err(conflict(federation_id, "staged model exceeds its size"));
        }
        staging.data.push(data);
        Ok(Applied::Done)
    }

    /// Completes the upload of the initial model: the federation starts running.
    pub fn commit_initial(&mut self, federation_id: &str, crc32: u32, meta: Meta) -> Outcome {
        let federation = self.federation_mut(federation_id)?;
        if federation.state != FederationState::AwaitingModel {
            return Err(conflict(federation_id, "already has its initial model"));
        }
        let expected = federation.spec.model_bytes();
        let staged = match &federation.staging {
            Some(s) if s.round == 0 => s.data.len() as u64,
            _ => return Err(conflict(federation_id, "no initial model was staged")),
        };
        if staged != expected {
            return Err(conflict(
                federation_id,
                format!("staged {staged} bytes, the model holds {expected}"),
            ));
        }
        let data = federation
            .staging
            .take()
            .map(|s| s.data.into_bytes())
            .unwrap_or_default();
        let model = StoredModel { crc32, data };
        install_initial(federation, model, meta);
        Ok(changed(federation_id))
    }

    /// Cancels a federation that has not finished.
    pub fn cancel(&mut self, federation_id: &str, reason: &str, meta: Meta) -> Outcome {
        let federation = self.federation_mut(federation_id)?;
        if federation.state.is_terminal() {
            return Err(conflict(
                federation_id,
                format!("is {:?}, already finished", federation.state),
            ));
        }
        let reason = match reason {
            "" => "cancelled",
            reason => reason,
        };
        federation.finish(FederationState::Cancelled, reason, meta);
        Ok(changed(federation_id))
    }
}

fn new_record(
    federation_id: &str,
    spec: &FederationSpec,
    idempotency_key: &str,
    seq: u64,
    meta: Meta,
) -> FederationRecord {
    FederationRecord {
        id: federation_id.to_owned(),
        seq,
        spec: spec.clone(),
        state: FederationState::AwaitingModel,
        state_reason: String::new(),
        idempotency_key: idempotency_key.to_owned(),
        created_at_ms: meta.now_ms,
        finished_at_ms: 0,
        committed_round: 0,
        current_round: 0,
        rounds: BTreeMap::new(),
        consecutive_failures: 0,
        epsilon_spent: 0.0,
        latest_metrics: BTreeMap::new(),
        models: BTreeMap::new(),
        server_state: Vec::new(),
        staging: None,
        events: Vec::new(),
    }
}

fn install_initial(federation: &mut FederationRecord, model: StoredModel, meta: Meta) {
    let blob = BlobRef {
        size_bytes: model.data.len() as u64,
        crc32: model.crc32,
    };
    federation.models.insert(0, model);
    federation.state = FederationState::Running;
    federation.record(FederationEventKind::ModelUploaded { model: blob }, meta);
}

fn check_model_size(
    spec: &FederationSpec,
    len: usize,
    federation_id: &str,
) -> Result<(), Rejection> {
    let expected = spec.model_bytes();
    match len as u64 == expected {
        true => Ok(()),
        false => Err(conflict(
            federation_id,
            format!("initial model of {len} bytes, the tensors hold {expected}"),
        )),
    }
}

/// Staging is for the initial model while awaiting it, or for the open attempt's result.
fn check_stage_target(
    federation: &FederationRecord,
    round: u32,
    attempt: u32,
) -> Result<(), Rejection> {
    let ok = match round {
        0 => federation.state == FederationState::AwaitingModel,
        _ => federation
            .open_round()
            .is_some_and(|r| r.round == round && r.attempt == attempt),
    };
    match ok {
        true => Ok(()),
        false => Err(conflict(
            &federation.id,
            format!("round {round} attempt {attempt} is not open"),
        )),
    }
}

pub(super) fn unknown(federation_id: &str) -> Rejection {
    Rejection::UnknownFederation {
        federation_id: federation_id.to_owned(),
    }
}

pub(super) fn conflict(federation_id: &str, problem: impl Into<String>) -> Rejection {
    Rejection::FederationConflict {
        federation_id: federation_id.to_owned(),
        problem: problem.into(),
    }
}

pub(super) fn changed(federation_id: &str) -> Applied {
    Applied::FederationChanged {
        federation_id: federation_id.to_owned(),
    }
}

/// Approximate encoded size of a federation command (for batching).
pub fn command_bytes(command: &Command) -> usize {
    match command {
        Command::StartFederation {
            spec,
            initial_model,
            ..
        } => {
            let tensors: usize = spec.tensors.iter().map(|t| t.name.len() + 16).sum();
            256 + tensors + initial_model.as_ref().map_or(0, |m| m.data.len())
        }
        Command::StageModel { data, .. } => 64 + data.len(),
        Command::StartRound(start) => {
            64 + start
                .participants
                .iter()
                .map(|p| p.len() + 8)
                .sum::<usize>()
        }
        Command::RecordUpdate(receipt) => {
            let metrics = receipt.metrics.len() + receipt.evaluation_metrics.len();
            160 + receipt.agent_id.len() + 24 * metrics
        }
        Command::DropParticipants { agent_ids, .. } => {
            64 + agent_ids.iter().map(|p| p.len() + 8).sum::<usize>()
        }
        Command::ShareKeys { shares, .. } => {
            64 + shares
                .iter()
                .map(|s| s.ciphertext.len() + s.to.len() + s.from.len())
                .sum::<usize>()
        }
        Command::RevealShares { shares, .. } => {
            64 + shares
                .iter()
                .map(|(id, s)| id.len() + s.len())
                .sum::<usize>()
        }
        _ => 160,
    }
}

/// Applies a federation command.
pub fn apply(
    table: &mut FederationTable,
    command: &Command,
    agents: &super::AgentRegistry,
    meta: Meta,
) -> Outcome {
    match command {
        Command::StartFederation {
            federation_id,
            spec,
            idempotency_key,
            initial_model,
        } => table.start(
            federation_id,
            spec,
            idempotency_key,
            initial_model.as_ref(),
            meta,
        ),
        Command::StageModel {
            federation_id,
            round,
            attempt,
            offset,
            data,
        } => table.stage(federation_id, *round, *attempt, *offset, data.clone()),
        Command::CommitInitialModel {
            federation_id,
            crc32,
        } => table.commit_initial(federation_id, *crc32, meta),
        Command::StartRound(start) => table.start_round(start, agents, meta),
        Command::RecordUpdate(receipt) => table.record_update(receipt, meta),
        Command::RejectUpdate {
            federation_id,
            round,
            attempt,
            agent_id,
            reason,
        } => table.reject_update(federation_id, *round, *attempt, agent_id, reason, meta),
        Command::DropParticipants {
            federation_id,
            round,
            attempt,
            agent_ids,
            reason,
        } => table.drop_participants(federation_id, *round, *attempt, agent_ids, reason, meta),
        Command::CommitRound(commit) => table.commit_round(commit, meta),
        Command::FailRound {
            federation_id,
            round,
            attempt,
            reason,
        } => table.fail_round(federation_id, *round, *attempt, reason, meta),
        Command::CancelFederation {
            federation_id,
            reason,
        } => table.cancel(federation_id, reason, meta),
        Command::AdvertiseKey { step, public_key } => table.advertise_key(step, public_key),
        Command::ShareKeys { step, shares } => table.share_keys(step, shares),
        Command::RevealShares { step, shares } => table.reveal_shares(step, shares),
        Command::AdvancePhase {
            federation_id,
            round,
            attempt,
            to,
            phase_deadline_at_ms,
        } => table.advance_phase(
            federation_id,
            *round,
            *attempt,
            *to,
            *phase_deadline_at_ms,
            meta,
        ),
        _ => Ok(Applied::Done),
    }
}

/// True for the commands [`apply`] handles.
pub fn is_federation_command(command: &Command) -> bool {
    matches!(
        command,
        Command::StartFederation { .. }
            | Command::StageModel { .. }
            | Command::CommitInitialModel { .. }
            | Command::StartRound(_)
            | Command::RecordUpdate(_)
            | Command::RejectUpdate { .. }
            | Command::DropParticipants { .. }
            | Command::CommitRound(_)
            | Command::FailRound { .. }
            | Command::CancelFederation { .. }
            | Command::AdvertiseKey { .. }
            | Command::ShareKeys { .. }
            | Command::RevealShares { .. }
            | Command::AdvancePhase { .. }
    )
}
