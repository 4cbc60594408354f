//! Federations between proto and domain: the spec in (with the documented defaults filled
//! in and every field checked), and federations, rounds and events out.

use synod_proto::v1 as pb;
use synod_sdk::tensors::{specs_from_proto, specs_to_proto};

use super::convert_vote::domain_selector;
use super::ApiError;
use crate::state::federations::spec::{
    Adaptive, CentralDpSpec, FederationSpec, RoundConfig, SecureAggregationSpec, Selection,
    StrategySpec, PHASE_TIMEOUT_MS_DEFAULT,
};
use crate::state::federations::{
    BlobRef, FederationEvent, FederationEventKind, FederationRecord, FederationState,
    ParticipantState, RoundRecord, RoundState,
};

/// The domain spec of a request's `spec`, checked.
pub fn domain_spec(spec: Option<pb::FederationSpec>) -> Result<FederationSpec, ApiError> {
    let spec = spec.ok_or_else(|| ApiError::invalid("spec", "required"))?;
    let model = spec
        .initial_model
        .ok_or_else(|| ApiError::invalid("spec.initial_model", "required"))?;
    let tensors = specs_from_proto(&model.tensors, "spec.initial_model.tensors")
        .map_err(|e| ApiError::invalid(e.field, e.problem))?;
    let participants = spec
        .participants
        .ok_or_else(|| ApiError::invalid("spec.participants", "required"))?;
    let selection = Selection {
        selector: domain_selector(participants.selector.unwrap_or_default()),
        fraction: match participants.fraction {
            0.0 => 1.0,
            fraction => fraction,
        },
        min_participants: participants.min_participants,
        max_participants: participants.max_participants,
    };
    let config = spec.round_config.unwrap_or_default();
    let privacy = spec.privacy.unwrap_or_default();
    let domain = FederationSpec {
        name: spec.name,
        tensors,
        rounds: spec.rounds,
        selection,
        round_timeout_ms: spec.round_timeout_ms,
        round_config: RoundConfig {
            local_epochs: config.local_epochs,
            batch_size: config.batch_size,
            learning_rate: config.learning_rate,
            extra: config.extra.into_iter().collect(),
        },
        evaluate_every_rounds: spec.evaluate_every_rounds,
        strategy: strategy(spec.strategy)?,
        central_dp: privacy.central_dp.map(|dp| CentralDpSpec {
            clip_norm: dp.clip_norm,
            noise_multiplier: dp.noise_multiplier,
            delta: dp.delta,
            max_epsilon: dp.max_epsilon,
        }),
        secure_aggregation: privacy.secure_aggregation.map(secure),
        max_failed_rounds: spec.max_failed_rounds,
    };
    domain
        .validate()
        .map_err(|e| ApiError::invalid(e.field, e.problem))?;
    Ok(domain)
}

fn or(value: f64, default: f64) -> f64 {
    match value {
        0.0 => default,
        value => value,
    }
}

fn strategy(strategy: Option<pb::AggregationStrategy>) -> Result<StrategySpec, ApiError> {
    use pb::aggregation_strategy::Strategy as S;
    let adaptive = |a: pb::FedAdaptive| Adaptive {
        eta: or(a.eta, 0.01),
        beta1: or(a.beta1, 0.9),
        beta2: or(a.beta2, 0.99),
        tau: or(a.tau, 0.001),
    };
    Ok(match strategy.and_then(|s| s.strategy) {
        None | Some(S::FedAvg(_)) => StrategySpec::FedAvg,
        Some(S::FedProx(p)) => StrategySpec::FedProx {
            proximal_mu: p.proximal_mu,
        },
        Some(S::FedAvgM(m)) => StrategySpec::FedAvgM {
            server_learning_rate: or(m.server_learning_rate, 1.0),
            momentum: or(m.momentum, 0.9),
        },
        Some(S::FedAdam(a)) => StrategySpec::FedAdam(adaptive(a)),
        Some(S::FedYogi(a)) => StrategySpec::FedYogi(adaptive(a)),
        Some(S::FedMedian(_)) => StrategySpec::FedMedian,
        Some(S::FedTrimmedAvg(t)) => StrategySpec::FedTrimmedAvg { beta: t.beta },
        Some(S::Krum(k)) => StrategySpec::Krum {
            f: k.f,
            multi_m: k.multi_m,
        },
    })
}

fn secure(s: pb::SecureAggregation) -> SecureAggregationSpec {
    SecureAggregationSpec {
        threshold: s.threshold,
        modulus_bits: match s.modulus_bits {
            0 => 32,
            bits => bits,
        },
        scale: or(s.scale, 65536.0),
        phase_timeout_ms: match s.phase_timeout_ms {
            0 => PHASE_TIMEOUT_MS_DEFAULT,
            ms => ms,
        },
    }
}

/// The spec on the wire (initial model data omitted).
pub fn proto_spec(spec: &FederationSpec) -> pb::FederationSpec {
    use pb::aggregation_strategy::Strategy as S;
    let adaptive = |a: &Adaptive| pb::FedAdaptive {
        eta: a.eta,
        beta1: a.beta1,
        beta2: a.beta2,
        tau: a.tau,
    };
    let strategy = match &spec.strategy {
        StrategySpec::FedAvg => S::FedAvg(pb::FedAvg {}),
        StrategySpec::FedProx { proximal_mu } => S::FedProx(pb::FedProx {
            proximal_mu: *proximal_mu,
        }),
        StrategySpec::FedAvgM {
            server_learning_rate,
            momentum,
        } => S::FedAvgM(pb::FedAvgM {
            server_learning_rate: *server_learning_rate,
            momentum: *momentum,
        }),
        StrategySpec::FedAdam(a) => S::FedAdam(adaptive(a)),
        StrategySpec::FedYogi(a) => S::FedYogi(adaptive(a)),
        StrategySpec::FedMedian => S::FedMedian(pb::FedMedian {}),
        StrategySpec::FedTrimmedAvg { beta } => S::FedTrimmedAvg(pb::FedTrimmedAvg { beta: *beta }),
        StrategySpec::Krum { f, multi_m } => S::Krum(pb::Krum {
            f: *f,
            multi_m: *multi_m,
        }),
    };
    pb::FederationSpec {
        name: spec.name.clone(),
        initial_model: Some(pb::InitialModel {
            tensors: specs_to_proto(&spec.tensors),
            inline_data: Vec::new(),
        }),
        rounds: spec.rounds,
        participants: Some(pb::ParticipantSelection {
            selector: Some(super::convert_vote::proto_selector(
                &spec.selection.selector,
            )),
            fraction: spec.selection.fraction,
            min_participants: spec.selection.min_participants,
            max_participants: spec.selection.max_participants,
        }),
        round_timeout_ms: spec.round_timeout_ms,
        round_config: Some(crate::runtime::federations::invitations::round_config(spec)),
        evaluate_every_rounds: spec.evaluate_every_rounds,
        strategy: Some(pb::AggregationStrategy {
            strategy: Some(strategy),
        }),
        privacy: Some(pb::PrivacyConfig {
            central_dp: spec.central_dp.map(|dp| pb::CentralDp {
                clip_norm: dp.clip_norm,
                noise_multiplier: dp.noise_multiplier,
                delta: dp.delta,
                max_epsilon: dp.max_epsilon,
            }),
            secure_aggregation: spec.secure_aggregation.map(|s| pb::SecureAggregation {
                threshold: s.threshold,
                modulus_bits: s.modulus_bits,
                scale: s.scale,
                phase_timeout_ms: s.phase_timeout_ms,
            }),
        }),
        max_failed_rounds: spec.max_failed_rounds,
    }
}

/// A federation's state on the wire.
pub fn federation_state(state: FederationState) -> pb::FederationState {
    match state {
        FederationState::AwaitingModel => pb::FederationState::AwaitingModel,
        FederationState::Running => pb::FederationState::Running,
        FederationState::Completed => pb::FederationState::Completed,
        FederationState::Failed => pb::FederationState::Failed,
        FederationState::Cancelled => pb::FederationState::Cancelled,
    }
}

/// A federation on the wire.
pub fn federation(record: &FederationRecord, include_spec: bool) -> pb::Federation {
    pb::Federation {
        federation_id: record.id.clone(),
        name: record.spec.name.clone(),
        state: federation_state(record.state) as i32,
        state_reason: record.state_reason.clone(),
        current_round: record.open_round().map_or(0, |r| r.round),
        committed_round: record.committed_round,
        rounds: record.spec.rounds,
        latest_metrics: record.latest_metrics.clone().into_iter().collect(),
        epsilon_spent: record.epsilon_spent,
        last_sequence: record.events.len() as u64,
        idempotency_key: record.idempotency_key.clone(),
        created_at_ms: record.created_at_ms,
        finished_at_ms: record.finished_at_ms,
        spec: include_spec.then(|| proto_spec(&record.spec)),
    }
}

fn round_state(state: RoundState) -> pb::RoundState {
    match state {
        RoundState::AdvertisingKeys => pb::RoundState::AdvertisingKeys,
        RoundState::SharingKeys => pb::RoundState::SharingKeys,
        RoundState::Training => pb::RoundState::Training,
        RoundState::Unmasking => pb::RoundState::Unmasking,
        RoundState::Committed => pb::RoundState::Committed,
        RoundState::Failed => pb::RoundState::Failed,
    }
}

/// A round state on the wire, with "waiting" for a round not started yet.
pub fn round_state_of(round: Option<&RoundRecord>) -> pb::RoundState {
    round.map_or(pb::RoundState::WaitingForParticipants, |r| {
        round_state(r.state)
    })
}

fn participant_state(state: ParticipantState) -> pb::ParticipantState {
    match state {
        ParticipantState::Selected => pb::ParticipantState::Selected,
        ParticipantState::KeysAdvertised => pb::ParticipantState::KeysAdvertised,
        ParticipantState::KeysShared => pb::ParticipantState::KeysShared,
        ParticipantState::Submitted => pb::ParticipantState::Submitted,
        ParticipantState::Dropped => pb::ParticipantState::Dropped,
        ParticipantState::Rejected => pb::ParticipantState::Rejected,
    }
}

fn blob(blob: &BlobRef) -> pb::BlobInfo {
    pb::BlobInfo {
        size_bytes: blob.size_bytes,
        crc32: blob.crc32,
        ..Default::default()
    }
}

/// A round on the wire.
pub fn round(federation: &FederationRecord, round: &RoundRecord) -> pb::Round {
    let spec = &federation.spec;
    pb::Round {
        federation_id: federation.id.clone(),
        round: round.round,
        attempt: round.attempt,
        state: round_state(round.state) as i32,
        state_reason: round.state_reason.clone(),
        participants: round
            .participants
            .iter()
            .map(|(id, p)| pb::RoundParticipant {
                agent_id: id.clone(),
                state: participant_state(p.state) as i32,
                num_examples: p.num_examples,
                reason: p.reason.clone(),
                unmask_shares_submitted: p.unmask_submitted,
            })
            .collect(),
        config: Some(crate::runtime::federations::invitations::round_config(spec)),
        evaluate: round.evaluate,
        secure_aggregation: spec.secure_aggregation.is_some(),
        started_at_ms: round.started_at_ms,
        phase_deadline_at_ms: round.phase_deadline_at_ms,
        deadline_at_ms: round.deadline_at_ms,
        committed_at_ms: round.committed_at_ms,
        metrics: round.metrics.clone().into_iter().collect(),
        evaluation_metrics: round.evaluation_metrics.clone().into_iter().collect(),
        epsilon_spent: round.epsilon_spent,
        model: round.model.as_ref().map(blob),
    }
}

/// An event on the wire.
pub fn event(federation_id: &str, event: &FederationEvent) -> pb::FederationEvent {
    use pb::federation_event as fe;
    use pb::federation_event::Kind;
    let kind = match &event.kind {
        FederationEventKind::Started { name, rounds } => {
            Kind::FederationStarted(fe::FederationStarted {
                name: name.clone(),
                rounds: *rounds,
            })
        }
        FederationEventKind::ModelUploaded { model } => Kind::ModelUploaded(fe::ModelUploaded {
            model: Some(blob(model)),
        }),
        FederationEventKind::RoundStarted {
            round,
            attempt,
            participants,
            deadline_at_ms,
        } => Kind::RoundStarted(fe::RoundStarted {
            round: *round,
            attempt: *attempt,
            participant_agent_ids: participants.clone(),
            deadline_at_ms: *deadline_at_ms,
        }),
        FederationEventKind::UpdateReceived {
            round,
            attempt,
            agent_id,
            num_examples,
        } => Kind::UpdateReceived(fe::UpdateReceived {
            round: *round,
            attempt: *attempt,
            agent_id: agent_id.clone(),
            num_examples: *num_examples,
        }),
        FederationEventKind::UpdateRejected {
            round,
            attempt,
            agent_id,
            reason,
        } => Kind::UpdateRejected(fe::UpdateRejected {
            round: *round,
            attempt: *attempt,
            agent_id: agent_id.clone(),
            reason: reason.clone(),
        }),
        FederationEventKind::ParticipantDropped {
            round,
            attempt,
            agent_id,
            reason,
        } => Kind::ParticipantDropped(fe::ParticipantDropped {
            round: *round,
            attempt: *attempt,
            agent_id: agent_id.clone(),
            reason: reason.clone(),
        }),
        FederationEventKind::RoundCommitted {
            round,
            attempt,
            num_updates,
            total_examples,
            metrics,
            evaluation_metrics,
            epsilon_spent,
            model,
        } => Kind::RoundCommitted(fe::RoundCommitted {
            round: *round,
            attempt: *attempt,
            num_updates: *num_updates,
            total_examples: *total_examples,
            metrics: metrics.clone().into_iter().collect(),
            evaluation_metrics: evaluation_metrics.clone().into_iter().collect(),
            epsilon_spent: *epsilon_spent,
            model: Some(blob(model)),
        }),
        FederationEventKind::RoundFailed {
            round,
            attempt,
            reason,
            will_retry,
        } => Kind::RoundFailed(fe::RoundFailed {
            round: *round,
            attempt: *attempt,
            reason: reason.clone(),
            will_retry: *will_retry,
        }),
        FederationEventKind::Completed {
            state,
            reason,
            committed_round,
        } => Kind::FederationCompleted(fe::FederationCompleted {
            state: federation_state(*state) as i32,
            reason: reason.clone(),
            committed_round: *committed_round,
        }),
    };
    pb::FederationEvent {
        federation_id: federation_id.to_owned(),
        sequence: event.sequence,
        occurred_at_ms: event.at_ms,
        log_index: event.log_index,
        kind: Some(kind),
    }
}
