//! [`FederationEvent`]: one entry of a federation's replayable history, numbered 1, 2, 3… in
//! commit order without gaps; `Completed` is always the last. Pure data.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::record::{BlobRef, FederationState};

/// One thing that happened to a federation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FederationEvent {
    /// Position in the history, from 1.
    pub sequence: u64,
    /// Leader time of the entry that produced it.
    pub at_ms: u64,
    /// Raft log index of that entry.
    pub log_index: u64,
    /// What happened.
    pub kind: FederationEventKind,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum FederationEventKind {
    /// The federation was started.
    Started {
        /// Its name.
        name: String,
        /// Rounds to commit.
        rounds: u32,
    },
    /// The initial model was uploaded.
    ModelUploaded {
        /// Its size and hash.
        model: BlobRef,
    },
    /// A round attempt started.
    RoundStarted {
        /// Round.
        round: u32,
        /// Attempt.
        attempt: u32,
        /// Selected participants.
        participants: Vec<String>,
        /// When the attempt ends.
        deadline_at_ms: u64,
    },
    /// An update was accepted.
    UpdateReceived {
        /// Round.
        round: u32,
        /// Attempt.
        attempt: u32,
        /// Participant.
        agent_id: String,
        /// Examples trained on.
        num_examples: u64,
    },
    /// An update was rejected.
    UpdateRejected {
        /// Round.
        round: u32,
        /// Attempt.
        attempt: u32,
        /// Participant.
        agent_id: String,
        /// Why.
        reason: String,
    },
    /// A participant was dropped.
    ParticipantDropped {
        /// Round.
        round: u32,
        /// Attempt.
        attempt: u32,
        /// Participant.
        agent_id: String,
        /// Why.
        reason: String,
    },
    /// A round committed its global model.
    RoundCommitted {
        /// Round.
        round: u32,
        /// Attempt.
        attempt: u32,
        /// Updates aggregated.
        num_updates: u32,
        /// Examples over those updates.
        total_examples: u64,
        /// Training metrics averaged by examples.
        metrics: BTreeMap<String, f64>,
        /// Evaluation metrics averaged by examples.
        evaluation_metrics: BTreeMap<String, f64>,
        /// Cumulative epsilon.
        epsilon_spent: f64,
        /// The new global model.
        model: BlobRef,
    },
    /// A round attempt failed.
    RoundFailed {
        /// Round.
        round: u32,
        /// Attempt.
        attempt: u32,
        /// Why.
        reason: String,
        /// Whether another attempt follows.
        will_retry: bool,
    },
    /// The federation reached a terminal state.
    Completed {
        /// Its terminal state.
        state: FederationState,
        /// Why, when not every round committed.
        reason: String,
        /// Latest committed round.
        committed_round: u32,
    },
}
