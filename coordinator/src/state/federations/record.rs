//! The replicated records of a federation: [`FederationRecord`], its rounds
//! ([`RoundRecord`]) and their participants ([`Participant`]), with the lifecycle states of
//! each. Pure data and small queries.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::events::{FederationEvent, FederationEventKind};
use super::spec::FederationSpec;
use super::staged::StagedBytes;
use crate::state::Meta;

/// Lifecycle of a federation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FederationState {
    /// Waiting for its initial model.
    AwaitingModel,
    /// Running rounds.
    Running,
    /// Every round committed, or the privacy budget was reached.
    Completed,
    /// Too many consecutive failed attempts.
    Failed,
    /// Cancelled.
    Cancelled,
}

impl FederationState {
    /// True for the states a federation never leaves.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            FederationState::Completed | FederationState::Failed | FederationState::Cancelled
        )
    }
}

/// Phase of a round attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum RoundState {
    /// Secure aggregation: collecting public keys.
    AdvertisingKeys,
    /// Secure aggregation: collecting encrypted key shares.
    SharingKeys,
    /// Participants train and submit updates.
    Training,
    /// Secure aggregation: collecting shares of dropped participants' keys.
    Unmasking,
    /// Terminal: the global model is committed.
    Committed,
    /// Terminal for the attempt.
    Failed,
}

impl RoundState {
    /// True once the attempt is over.
    pub fn is_terminal(self) -> bool {
        matches!(self, RoundState::Committed | RoundState::Failed)
    }
}

/// Progress of one participant in an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ParticipantState {
    /// Selected; nothing received yet.
    Selected,
    /// Secure aggregation: public key received.
    KeysAdvertised,
    /// Secure aggregation: key shares received.
    KeysShared,
    /// Update accepted.
    Submitted,
    /// Excluded: missed a deadline or lost its agent.
    Dropped,
    /// Update refused by the leader.
    Rejected,
}

impl ParticipantState {
    /// True while the participant may still contribute.
    pub fn is_active(self) -> bool {
        matches!(
            self,
            ParticipantState::Selected
                | ParticipantState::KeysAdvertised
                | ParticipantState::KeysShared
        )
    }
}

/// One participant of an attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Participant {
    /// Progress.
    pub state: ParticipantState,
    /// Examples its update trained on.
    pub num_examples: u64,
    /// Why it was dropped or rejected.
    pub reason: String,
    /// CRC-32 of its accepted update.
    pub crc32: u32,
    /// Its training metrics.
    pub metrics: BTreeMap<String, f64>,
    /// Its evaluation metrics of the received model.
    pub evaluation_metrics: BTreeMap<String, f64>,
    /// Secure aggregation: its public key.
    #[serde(with = "serde_bytes")]
    pub public_key: Vec<u8>,
    /// Secure aggregation: it completed key sharing (its masks are in the survivors' updates).
    pub shared_keys: bool,
    /// Secure aggregation: it revealed its unmask shares.
    pub unmask_submitted: bool,
}

impl Participant {
    pub(super) fn selected() -> Self {
        Self {
            state: ParticipantState::Selected,
            num_examples: 0,
            reason: String::new(),
            crc32: 0,
            metrics: BTreeMap::new(),
            evaluation_metrics: BTreeMap::new(),
            public_key: Vec::new(),
            shared_keys: false,
            unmask_submitted: false,
        }
    }
}

/// A Shamir share of one participant's private key, encrypted for another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncryptedShare {
    /// Whose key.
    pub from: String,
    /// Who can decrypt it.
    pub to: String,
    /// The ciphertext.
    #[serde(with = "serde_bytes")]
    pub ciphertext: Vec<u8>,
}

/// Size and CRC-32 of a committed model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRef {
    /// Bytes.
    pub size_bytes: u64,
    /// CRC-32.
    pub crc32: u32,
}

/// The latest attempt of one round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoundRecord {
    /// Round number, from 1.
    pub round: u32,
    /// Attempt number, from 1.
    pub attempt: u32,
    /// Phase.
    pub state: RoundState,
    /// Why the attempt failed.
    pub state_reason: String,
    /// Selected participants by agent id.
    pub participants: BTreeMap<String, Participant>,
    /// Participants evaluate this round.
    pub evaluate: bool,
    /// Selected ÷ eligible when sampled (the DP accountant's sampling rate).
    pub sampling_rate: f64,
    /// When the attempt started.
    pub started_at_ms: u64,
    /// When the current phase ends.
    pub phase_deadline_at_ms: u64,
    /// When the attempt ends.
    pub deadline_at_ms: u64,
    /// When the round committed.
    pub committed_at_ms: u64,
    /// Training metrics averaged by examples, once committed.
    pub metrics: BTreeMap<String, f64>,
    /// Evaluation metrics averaged by examples, once committed.
    pub evaluation_metrics: BTreeMap<String, f64>,
    /// Cumulative epsilon after the round.
    pub epsilon_spent: f64,
    /// The committed model.
    pub model: Option<BlobRef>,
    /// Secure aggregation: encrypted key shares (cleared when the attempt ends).
    pub shares: Vec<EncryptedShare>,
    /// Secure aggregation: revealed shares, by dropped participant then revealer (cleared when
    /// the attempt ends).
    pub unmask_shares: BTreeMap<String, BTreeMap<String, serde_bytes::ByteBuf>>,
}

impl RoundRecord {
    /// Participants whose update was accepted, in id order.
    pub fn submitted(&self) -> impl Iterator<Item = (&String, &Participant)> {
        self.participants
            .iter()
            .filter(|(_, p)| p.state == ParticipantState::Submitted)
    }

    /// Participants that may still contribute.
    pub fn active(&self) -> impl Iterator<Item = (&String, &Participant)> {
        self.participants
            .iter()
            .filter(|(_, p)| p.state.is_active())
    }

    /// Secure aggregation: participants that completed key sharing and were then dropped
    /// without an update; their masks must be removed.
    pub fn dropped_after_sharing(&self) -> impl Iterator<Item = &String> {
        self.participants
            .iter()
            .filter(|(_, p)| p.shared_keys && p.state == ParticipantState::Dropped)
            .map(|(id, _)| id)
    }
}

/// A committed model kept in the state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredModel {
    /// CRC-32 of the payload.
    pub crc32: u32,
    /// The payload, shared (not copied) by the downloads that stream it.
    pub data: bytes::Bytes,
}

/// A model being written chunk by chunk before its commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Staging {
    /// Round the bytes are for (0: the initial model).
    pub round: u32,
    /// Attempt (0 for the initial model).
    pub attempt: u32,
    /// Bytes received so far.
    pub data: StagedBytes,
}

/// One federation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FederationRecord {
    /// Server-assigned id.
    pub id: String,
    /// Creation order.
    pub seq: u64,
    /// The spec.
    pub spec: FederationSpec,
    /// Lifecycle state.
    pub state: FederationState,
    /// Why it failed, was cancelled or completed early.
    pub state_reason: String,
    /// Idempotency key it was started with.
    pub idempotency_key: String,
    /// When it was started.
    pub created_at_ms: u64,
    /// When it reached a terminal state.
    pub finished_at_ms: u64,
    /// Latest committed round.
    pub committed_round: u32,
    /// Round in progress; 0 when none.
    pub current_round: u32,
    /// The latest attempt of each round started.
    pub rounds: BTreeMap<u32, RoundRecord>,
    /// Failed attempts since the last commit.
    pub consecutive_failures: u32,
    /// Cumulative epsilon.
    pub epsilon_spent: f64,
    /// Training metrics of the latest committed round.
    pub latest_metrics: BTreeMap<String, f64>,
    /// Kept models by round: the initial (0) and the latest committed.
    pub models: BTreeMap<u32, StoredModel>,
    /// The server optimizer's state after the latest committed round.
    #[serde(with = "serde_bytes")]
    pub server_state: Vec<u8>,
    /// A model being staged.
    pub staging: Option<Staging>,
    /// History.
    pub events: Vec<FederationEvent>,
}

impl FederationRecord {
    /// The open attempt, if a round is in progress.
    pub fn open_round(&self) -> Option<&RoundRecord> {
        self.rounds
            .get(&self.current_round)
            .filter(|r| !r.state.is_terminal())
    }

    pub(super) fn open_round_mut(&mut self) -> Option<&mut RoundRecord> {
        self.rounds
            .get_mut(&self.current_round)
            .filter(|r| !r.state.is_terminal())
    }

    /// The global model participants of the next round train on.
    pub fn latest_model(&self) -> Option<(u32, &StoredModel)> {
        self.models
            .get(&self.committed_round)
            .map(|m| (self.committed_round, m))
    }

    /// Appends an event; returns its sequence.
    pub(super) fn record(&mut self, kind: FederationEventKind, meta: Meta) -> u64 {
        let sequence = self.events.len() as u64 + 1;
        self.events.push(FederationEvent {
            sequence,
            at_ms: meta.now_ms,
            log_index: meta.index,
            kind,
        });
        sequence
    }

    /// Moves to a terminal state, closing any open attempt, with the final event.
    pub(super) fn finish(&mut self, state: FederationState, reason: &str, meta: Meta) {
        if let Some(round) = self.open_round_mut() {
            round.state = RoundState::Failed;
            round.state_reason = reason.to_owned();
            round.shares.clear();
            round.unmask_shares.clear();
        }
        self.current_round = 0;
        self.staging = None;
        self.state = state;
        self.state_reason = reason.to_owned();
        self.finished_at_ms = meta.now_ms;
        let committed_round = self.committed_round;
        self.record(
            FederationEventKind::Completed {
                state,
                reason: reason.to_owned(),
                committed_round,
            },
            meta,
        );
    }
}
