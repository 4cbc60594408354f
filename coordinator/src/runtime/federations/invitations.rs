//! `RoundInvitation`s: what a selected participant is told when an attempt opens (and again
//! when its session reopens while the attempt is open). Built from the replicated state, or,
//! for an attempt the leader opens behind the previous round's commit, from what it proposed.

use synod_proto::v1 as pb;
use synod_proto::v1::coordinator_message::Kind;

use crate::runtime::messages::message;
use crate::state::federations::{spec::FederationSpec, FederationRecord, RoundRecord};
use crate::state::State;

/// An attempt as its invitation describes it.
pub struct Opening {
    /// Round.
    pub round: u32,
    /// Attempt.
    pub attempt: u32,
    /// Whether participants evaluate the model first.
    pub evaluate: bool,
    /// End of the attempt.
    pub deadline_at_ms: u64,
    /// Round of the model it trains on.
    pub model_round: u32,
    /// That model's size and CRC-32.
    pub model: Option<pb::BlobInfo>,
}

/// The invitation to `round` of `federation`, an attempt recorded in the state.
pub fn invitation(federation: &FederationRecord, round: &RoundRecord) -> pb::CoordinatorMessage {
    let model = federation.latest_model().map(|(_, m)| pb::BlobInfo {
        size_bytes: m.data.len() as u64,
        crc32: m.crc32,
        ..Default::default()
    });
    let opening = Opening {
        round: round.round,
        attempt: round.attempt,
        evaluate: round.evaluate,
        deadline_at_ms: round.deadline_at_ms,
        model_round: federation.committed_round,
        model,
    };
    invitation_to(federation, opening)
}

/// The invitation to `opening` of `federation` (an attempt the state may not hold yet).
pub fn invitation_to(federation: &FederationRecord, opening: Opening) -> pb::CoordinatorMessage {
    let spec = &federation.spec;
    message(Kind::RoundInvitation(pb::RoundInvitation {
        federation_id: federation.id.clone(),
        round: opening.round,
        attempt: opening.attempt,
        config: Some(round_config(spec)),
        model_round: opening.model_round,
        model: opening.model,
        evaluate: opening.evaluate,
        proximal_mu: spec.strategy.proximal_mu(),
        clip_norm: client_clip_norm(spec),
        secure_aggregation: spec.secure_aggregation.map(|s| pb::SecureAggregation {
            threshold: s.threshold,
            modulus_bits: s.modulus_bits,
            scale: s.scale,
            phase_timeout_ms: s.phase_timeout_ms,
        }),
        deadline_at_ms: opening.deadline_at_ms,
    }))
}

/// Participants clip their own updates only when the leader cannot (secure aggregation).
fn client_clip_norm(spec: &FederationSpec) -> f64 {
    match (spec.central_dp, spec.secure_aggregation) {
        (Some(dp), Some(_)) => dp.clip_norm,
        _ => 0.0,
    }
}

/// The round configuration on the wire.
pub fn round_config(spec: &FederationSpec) -> pb::RoundConfig {
    let config = &spec.round_config;
    pb::RoundConfig {
        local_epochs: config.local_epochs,
        batch_size: config.batch_size,
        learning_rate: config.learning_rate,
        extra: config.extra.clone().into_iter().collect(),
    }
}

/// Invitations to every open attempt `agent_id` is still active in.
pub fn pending(state: &State, agent_id: &str) -> Vec<pb::CoordinatorMessage> {
    state
        .federations
        .invitations_of(agent_id)
        .map(|(federation, round)| invitation(federation, round))
        .collect()
}
