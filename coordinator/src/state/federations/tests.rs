//! Federations: starting (inline or uploaded model), round attempts with receipts, drops,
//! commits that keep only the initial and latest model, retries and failure, cancellation,
//! agent loss, and the secure-aggregation phases.

use std::collections::BTreeMap;

use synod_sdk::tensors::TensorSpec;

use super::spec::{Adaptive, SecureAggregationSpec, Selection, StrategySpec};
use super::*;
use crate::state::agents::AgentSelector;
use crate::state::testing::{register, Harness};
use crate::state::Command;

const FED: &str = "fed-1";
/// Model bytes: 2 × 2 + 2 f32 values.
const MODEL_BYTES: usize = 24;

fn fed_spec(rounds: u32, min: u32) -> FederationSpec {
    FederationSpec {
        name: "mnist".into(),
        tensors: vec![TensorSpec::f32("w", &[2, 2]), TensorSpec::f32("b", &[2])],
        rounds,
        selection: Selection {
            selector: AgentSelector::default(),
            fraction: 1.0,
            min_participants: min,
            max_participants: 0,
        },
        round_timeout_ms: 10_000,
        round_config: Default::default(),
        evaluate_every_rounds: 0,
        strategy: StrategySpec::FedAvg,
        central_dp: None,
        secure_aggregation: None,
        max_failed_rounds: 2,
    }
}

fn start_inline(spec: FederationSpec) -> Command {
    Command::StartFederation {
        federation_id: FED.into(),
        spec: Box::new(spec),
        idempotency_key: String::new(),
        initial_model: Some(StoredModel {
            crc32: 1,
            data: vec![0; MODEL_BYTES].into(),
        }),
    }
}

fn harness(spec: FederationSpec) -> Harness {
    let mut h = Harness::new();
    for agent in ["a1", "a2", "a3"] {
        h.ok(register(agent, &[], 1));
    }
    h.ok(start_inline(spec));
    h
}

fn start_round(round: u32, attempt: u32, participants: &[&str]) -> Command {
    Command::StartRound(RoundStart {
        federation_id: FED.into(),
        round,
        attempt,
        participants: participants.iter().map(|p| p.to_string()).collect(),
        sampling_rate: 1.0,
        phase_deadline_at_ms: 99_000,
        deadline_at_ms: 99_000,
    })
}

fn receipt(round: u32, attempt: u32, agent: &str, examples: u64, loss: f64) -> Command {
    Command::RecordUpdate(UpdateReceipt {
        federation_id: FED.into(),
        round,
        attempt,
        agent_id: agent.into(),
        num_examples: examples,
        crc32: synod_sdk::payload::crc32(agent.as_bytes()),
        metrics: BTreeMap::from([("loss".to_owned(), loss)]),
        evaluation_metrics: BTreeMap::new(),
    })
}

fn stage(round: u32, attempt: u32, offset: u64, data: Vec<u8>) -> Command {
    Command::StageModel {
        federation_id: FED.into(),
        round,
        attempt,
        offset,
        data: data.into(),
    }
}

fn commit(round: u32, attempt: u32) -> Command {
    Command::CommitRound(RoundCommit {
        federation_id: FED.into(),
        round,
        attempt,
        crc32: round,
        epsilon_spent: 0.0,
        budget_exhausted: false,
    })
}

fn fail(round: u32, attempt: u32) -> Command {
    Command::FailRound {
        federation_id: FED.into(),
        round,
        attempt,
        reason: "too few updates".into(),
    }
}

fn federation(h: &Harness) -> &FederationRecord {
    h.state.federations.get(FED).unwrap()
}

fn kinds(h: &Harness) -> Vec<FederationEventKind> {
    federation(h)
        .events
        .iter()
        .map(|e| e.kind.clone())
        .collect()
}

fn run_round(h: &mut Harness, round: u32, fill: u8) {
    h.ok(start_round(round, 1, &["a1", "a2"]));
    h.ok(receipt(round, 1, "a1", 10, 1.0));
    h.ok(receipt(round, 1, "a2", 30, 3.0));
    h.ok(stage(round, 1, 0, vec![fill; MODEL_BYTES]));
    h.ok(commit(round, 1));
}

#[test]
fn an_inline_model_starts_the_federation_running() {
    let h = harness(fed_spec(2, 2));
    let f = federation(&h);
    assert_eq!(f.state, FederationState::Running);
    assert_eq!(
        f.latest_model().map(|(r, m)| (r, m.data.len())),
        Some((0, MODEL_BYTES))
    );
    assert!(matches!(
        kinds(&h).as_slice(),
        [
            FederationEventKind::Started { rounds: 2, .. },
            FederationEventKind::ModelUploaded { .. }
        ]
    ));
}

#[test]
fn an_uploaded_model_is_staged_in_order_then_committed() {
    let mut h = Harness::new();
    let mut command = start_inline(fed_spec(1, 1));
    if let Command::StartFederation { initial_model, .. } = &mut command {
        *initial_model = None;
    }
    h.ok(command);
    assert_eq!(federation(&h).state, FederationState::AwaitingModel);
    h.ok(stage(0, 0, 0, vec![1; 10]));
    let rejection = h.rejected(stage(0, 0, 4, vec![1; 4]));
    assert!(rejection
        .to_string()
        .contains("staged offset 4, expected 10"));
    let early = h.rejected(Command::CommitInitialModel {
        federation_id: FED.into(),
        crc32: 7,
    });
    assert!(early
        .to_string()
        .contains("staged 10 bytes, the model holds 24"));
    h.ok(stage(0, 0, 10, vec![1; 14]));
    h.ok(Command::CommitInitialModel {
        federation_id: FED.into(),
        crc32: 7,
    });
    let f = federation(&h);
    assert_eq!(f.state, FederationState::Running);
    assert_eq!(f.models[&0].data, vec![1; MODEL_BYTES]);
    assert!(f.staging.is_none());
}

#[test]
fn a_wrongly_sized_inline_model_or_bad_spec_is_refused() {
    let mut h = Harness::new();
    let mut command = start_inline(fed_spec(1, 1));
    if let Command::StartFederation { initial_model, .. } = &mut command {
        initial_model
            .as_mut()
            .unwrap()
            .data
            .truncate(MODEL_BYTES - 1);
    }
    assert!(h
        .rejected(command)
        .to_string()
        .contains("initial model of 23 bytes"));
    let mut spec = fed_spec(1, 1);
    spec.selection.fraction = 0.0;
    let rejection = h.rejected(start_inline(spec));
    assert_eq!(
        rejection,
        Rejection::InvalidSpec(crate::state::jobs::SpecError::new(
            "spec.participants.fraction",
            "0, must be in (0, 1]"
        ))
    );
}

#[test]
fn a_round_commits_weighted_metrics_and_keeps_only_the_initial_and_latest_model() {
    let mut h = harness(fed_spec(3, 2));
    run_round(&mut h, 1, 7);
    run_round(&mut h, 2, 8);
    let f = federation(&h);
    assert_eq!((f.committed_round, f.current_round), (2, 0));
    assert_eq!(f.models.keys().copied().collect::<Vec<_>>(), vec![0, 2]);
    assert_eq!(f.models[&2].data, vec![8; MODEL_BYTES]);
    // (10 × 1.0 + 30 × 3.0) / 40 = 2.5
    assert_eq!(f.latest_metrics, BTreeMap::from([("loss".to_owned(), 2.5)]));
    let round = &f.rounds[&2];
    assert_eq!(round.state, RoundState::Committed);
    assert_eq!(round.model.as_ref().unwrap().crc32, 2);
    let last = kinds(&h).pop().unwrap();
    assert!(matches!(
        last,
        FederationEventKind::RoundCommitted {
            round: 2,
            num_updates: 2,
            total_examples: 40,
            ..
        }
    ));
}

#[test]
fn the_last_round_completes_the_federation() {
    let mut h = harness(fed_spec(1, 2));
    run_round(&mut h, 1, 1);
    let f = federation(&h);
    assert_eq!(f.state, FederationState::Completed);
    assert!(matches!(
        kinds(&h).pop(),
        Some(FederationEventKind::Completed {
            state: FederationState::Completed,
            committed_round: 1,
            ..
        })
    ));
    assert!(h
        .rejected(start_round(2, 1, &["a1", "a2"]))
        .to_string()
        .contains("not running"));
}

#[test]
fn rounds_start_in_order_with_enough_live_participants() {
    let mut h = harness(fed_spec(3, 2));
    assert!(h
        .rejected(start_round(2, 1, &["a1", "a2"]))
        .to_string()
        .contains("round 1 is next"));
    assert!(h
        .rejected(start_round(1, 0, &["a1", "a2"]))
        .to_string()
        .contains("attempt 0 cannot start"));
    assert!(h
        .rejected(start_round(1, 1, &["a1"]))
        .to_string()
        .contains("at least 2"));
    assert!(h
        .rejected(start_round(1, 1, &["a1", "ghost"]))
        .to_string()
        .contains("'ghost' is not live"));
    h.ok(start_round(1, 1, &["a1", "a2"]));
    assert!(h
        .rejected(start_round(1, 2, &["a1", "a2"]))
        .to_string()
        .contains("still open"));
}

#[test]
fn updates_are_fenced_by_selection_attempt_and_content() {
    let mut h = harness(fed_spec(3, 2));
    h.ok(start_round(1, 1, &["a1", "a2"]));
    assert_eq!(
        h.rejected(receipt(1, 1, "a3", 5, 1.0)),
        Rejection::UpdateRefused {
            agent_id: "a3".into(),
            reason: "not selected".into()
        }
    );
    assert!(h
        .rejected(receipt(1, 2, "a1", 5, 1.0))
        .to_string()
        .contains("stale attempt"));
    assert_eq!(
        h.ok(receipt(1, 1, "a1", 5, 1.0)),
        Applied::UpdateRecorded { duplicate: false }
    );
    assert_eq!(
        h.ok(receipt(1, 1, "a1", 5, 1.0)),
        Applied::UpdateRecorded { duplicate: true }
    );
    let mut other = receipt(1, 1, "a1", 5, 1.0);
    if let Command::RecordUpdate(r) = &mut other {
        r.crc32 ^= 1;
    }
    assert!(h.rejected(other).to_string().contains("different content"));
}

#[test]
fn a_commit_needs_the_staged_model_and_the_minimum_of_updates() {
    let mut h = harness(fed_spec(3, 2));
    h.ok(start_round(1, 1, &["a1", "a2", "a3"]));
    h.ok(receipt(1, 1, "a1", 5, 1.0));
    assert!(h
        .rejected(commit(1, 1))
        .to_string()
        .contains("no model was staged"));
    h.ok(stage(1, 1, 0, vec![0; MODEL_BYTES - 1]));
    assert!(h
        .rejected(commit(1, 1))
        .to_string()
        .contains("staged 23 bytes"));
    h.ok(stage(1, 1, (MODEL_BYTES - 1) as u64, vec![0; 1]));
    assert!(h
        .rejected(commit(1, 1))
        .to_string()
        .contains("1 updates, at least 2"));
}

#[test]
fn staged_bytes_beyond_the_model_are_the_server_state() {
    let mut h = harness(fed_spec(3, 2));
    h.ok(start_round(1, 1, &["a1", "a2"]));
    h.ok(receipt(1, 1, "a1", 5, 1.0));
    h.ok(receipt(1, 1, "a2", 5, 1.0));
    let mut data = vec![3; MODEL_BYTES];
    data.extend_from_slice(&[9, 9, 9]);
    h.ok(stage(1, 1, 0, data));
    h.ok(commit(1, 1));
    let f = federation(&h);
    assert_eq!(f.models[&1].data, vec![3; MODEL_BYTES]);
    assert_eq!(f.server_state, vec![9, 9, 9]);
}

#[test]
fn failed_attempts_are_retried_until_too_many_fail_in_a_row() {
    let mut h = harness(fed_spec(3, 2));
    h.ok(start_round(1, 1, &["a1", "a2"]));
    h.ok(fail(1, 1));
    assert_eq!(federation(&h).state, FederationState::Running);
    assert!(matches!(
        kinds(&h).pop(),
        Some(FederationEventKind::RoundFailed {
            will_retry: true,
            ..
        })
    ));
    h.ok(start_round(1, 2, &["a1", "a2"]));
    h.ok(fail(1, 2));
    let f = federation(&h);
    assert_eq!(f.state, FederationState::Failed);
    assert!(f
        .state_reason
        .contains("2 consecutive round attempts failed"));
}

#[test]
fn attempts_grow_and_name_the_model_they_train_on() {
    let mut h = harness(fed_spec(3, 2));
    assert_eq!(
        next_attempt(federation(&h), 1, 0),
        1,
        "on the initial model"
    );
    h.ok(start_round(1, 1, &["a1", "a2"]));
    h.ok(fail(1, 1));
    assert_eq!(next_attempt(federation(&h), 1, 0), 2);
    // Round 1's third attempt commits: round 2 starts at attempt 3 at least, so an attempt
    // opened early on round 1's first or second (uncommitted) model can never share its number.
    h.ok(start_round(1, 3, &["a1", "a2"]));
    assert!(h
        .rejected(start_round(1, 3, &["a1", "a2"]))
        .to_string()
        .contains("still open"));
    h.ok(receipt(1, 3, "a1", 10, 1.0));
    h.ok(receipt(1, 3, "a2", 30, 3.0));
    h.ok(stage(1, 3, 0, vec![1; MODEL_BYTES]));
    h.ok(commit(1, 3));
    assert_eq!(next_attempt(federation(&h), 2, 3), 3);
    h.ok(start_round(2, 3, &["a1", "a2"]));
    h.ok(fail(2, 3));
    assert_eq!(next_attempt(federation(&h), 2, 3), 4);
    assert!(h
        .rejected(start_round(2, 3, &["a1", "a2"]))
        .to_string()
        .contains("attempt 3 already did"));
}

#[test]
fn a_lost_agent_is_dropped_from_the_open_round() {
    let mut h = harness(fed_spec(3, 2));
    h.ok(start_round(1, 1, &["a1", "a2", "a3"]));
    h.ok(receipt(1, 1, "a1", 5, 1.0));
    h.ok(Command::DeregisterAgent {
        agent_id: "a2".into(),
    });
    let round = &federation(&h).rounds[&1];
    assert_eq!(round.participants["a2"].state, ParticipantState::Dropped);
    assert_eq!(round.participants["a2"].reason, "agent lost");
    assert_eq!(round.participants["a1"].state, ParticipantState::Submitted);
    assert!(h
        .rejected(receipt(1, 1, "a2", 5, 1.0))
        .to_string()
        .contains("dropped"));
}

#[test]
fn dropping_counts_only_active_participants() {
    let mut h = harness(fed_spec(3, 2));
    h.ok(start_round(1, 1, &["a1", "a2"]));
    h.ok(receipt(1, 1, "a1", 5, 1.0));
    let applied = h.ok(Command::DropParticipants {
        federation_id: FED.into(),
        round: 1,
        attempt: 1,
        agent_ids: vec!["a1".into(), "a2".into()],
        reason: "deadline passed".into(),
    });
    assert_eq!(
        applied,
        Applied::ParticipantsDropped {
            federation_id: FED.into(),
            dropped: 1
        }
    );
}

#[test]
fn cancelling_closes_the_open_round_once() {
    let mut h = harness(fed_spec(3, 2));
    h.ok(start_round(1, 1, &["a1", "a2"]));
    let cancel = Command::CancelFederation {
        federation_id: FED.into(),
        reason: "operator".into(),
    };
    h.ok(cancel.clone());
    let f = federation(&h);
    assert_eq!(f.state, FederationState::Cancelled);
    assert_eq!(f.rounds[&1].state, RoundState::Failed);
    assert!(h.rejected(cancel).to_string().contains("already finished"));
}

fn secure_spec() -> FederationSpec {
    let mut spec = fed_spec(2, 2);
    spec.secure_aggregation = Some(SecureAggregationSpec {
        threshold: 2,
        modulus_bits: 32,
        scale: 65536.0,
        phase_timeout_ms: 1000,
    });
    spec
}

fn step(agent: &str) -> secure::SecureStep {
    secure::SecureStep {
        federation_id: FED.into(),
        round: 1,
        attempt: 1,
        agent_id: agent.into(),
    }
}

fn advance(to: RoundState) -> Command {
    Command::AdvancePhase {
        federation_id: FED.into(),
        round: 1,
        attempt: 1,
        to,
        phase_deadline_at_ms: 50_000,
    }
}

fn share(from: &str, to: &str) -> EncryptedShare {
    EncryptedShare {
        from: from.into(),
        to: to.into(),
        ciphertext: vec![1; 60],
    }
}

#[test]
fn secure_rounds_move_through_key_phases_and_drop_laggards() {
    let mut h = harness(secure_spec());
    h.ok(start_round(1, 1, &["a1", "a2", "a3"]));
    assert_eq!(federation(&h).rounds[&1].state, RoundState::AdvertisingKeys);
    for agent in ["a1", "a2", "a3"] {
        h.ok(Command::AdvertiseKey {
            step: step(agent),
            public_key: vec![agent.as_bytes()[1]; 32],
        });
    }
    h.ok(advance(RoundState::SharingKeys));
    let incomplete = Command::ShareKeys {
        step: step("a1"),
        shares: vec![share("a1", "a2")],
    };
    assert!(h
        .rejected(incomplete)
        .to_string()
        .contains("each of the 2 other peers"));
    h.ok(Command::ShareKeys {
        step: step("a1"),
        shares: vec![share("a1", "a2"), share("a1", "a3")],
    });
    h.ok(Command::ShareKeys {
        step: step("a2"),
        shares: vec![share("a2", "a1"), share("a2", "a3")],
    });
    h.ok(Command::ShareKeys {
        step: step("a3"),
        shares: vec![share("a3", "a1"), share("a3", "a2")],
    });
    h.ok(advance(RoundState::Training));
    h.ok(receipt(1, 1, "a1", 5, 1.0));
    h.ok(receipt(1, 1, "a2", 5, 1.0));
    h.ok(advance(RoundState::Unmasking));
    let round = &federation(&h).rounds[&1];
    assert_eq!(round.participants["a3"].state, ParticipantState::Dropped);
    assert_eq!(
        round.dropped_after_sharing().collect::<Vec<_>>(),
        vec!["a3"]
    );
    let reveal_submitted = Command::RevealShares {
        step: step("a1"),
        shares: vec![("a2".into(), serde_bytes::ByteBuf::from(vec![1; 36]))],
    };
    assert!(h
        .rejected(reveal_submitted)
        .to_string()
        .contains("not a dropped participant"));
    h.ok(Command::RevealShares {
        step: step("a1"),
        shares: vec![("a3".into(), serde_bytes::ByteBuf::from(vec![1; 36]))],
    });
    let round = &federation(&h).rounds[&1];
    assert_eq!(round.unmask_shares["a3"].len(), 1);
    assert!(round.participants["a1"].unmask_submitted);
}

#[test]
fn a_secure_phase_needs_enough_participants_left() {
    let mut h = harness(secure_spec());
    h.ok(start_round(1, 1, &["a1", "a2"]));
    h.ok(Command::AdvertiseKey {
        step: step("a1"),
        public_key: vec![1; 32],
    });
    assert!(h
        .rejected(advance(RoundState::SharingKeys))
        .to_string()
        .contains("1 participants left, at least 2 needed"));
    assert!(h
        .rejected(advance(RoundState::Training))
        .to_string()
        .contains("not SharingKeys"));
}

#[test]
fn strategies_and_privacy_are_validated_together() {
    let mut spec = fed_spec(1, 3);
    spec.strategy = StrategySpec::Krum { f: 1, multi_m: 0 };
    let error = spec.validate().unwrap_err();
    assert_eq!(error.field, "spec.participants.min_participants");
    spec.selection.min_participants = 5;
    assert!(spec.validate().is_ok());
    spec.secure_aggregation = secure_spec().secure_aggregation;
    assert_eq!(
        spec.validate().unwrap_err().field,
        "spec.privacy.secure_aggregation"
    );
    let mut adam = fed_spec(1, 1);
    adam.strategy = StrategySpec::FedAdam(Adaptive {
        eta: 0.01,
        beta1: 1.5,
        beta2: 0.99,
        tau: 0.001,
    });
    assert_eq!(adam.validate().unwrap_err().field, "spec.strategy.beta1");
}

#[test]
fn sample_sizes_follow_fraction_and_bounds() {
    let mut selection = fed_spec(1, 2).selection;
    selection.fraction = 0.5;
    assert_eq!(selection.sample_size(1), None);
    assert_eq!(selection.sample_size(3), Some(2));
    assert_eq!(selection.sample_size(10), Some(5));
    selection.max_participants = 3;
    assert_eq!(selection.sample_size(10), Some(3));
}
