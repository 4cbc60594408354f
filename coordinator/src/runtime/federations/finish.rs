//! The end of a round attempt on the leader: the aggregate becomes the next global model
//! (unmasked first under secure aggregation, with the privacy spent accounted under central
//! DP), which is staged in chunks and committed; any failure fails the attempt instead.
//!
//! ```text
//!   wait for in-flight folds ─► take the aggregate ─► [remove dropped masks] ─► strategy step
//!   ─► StageModel × ⌈model / chunk⌉ (slices of the model's own buffer) ─► [StageModel: the
//!   server state] ─► CommitRound
//! ```

use std::path::Path;
use std::sync::Arc;

use rand::SeedableRng;
use synod_sdk::payload::crc32;
use synod_sdk::secagg::{reconstruct_private_key, MaskedSum, MaskingParams};
use synod_sdk::tensors::F32Payload;

use super::live::{Aggregate, GlobalModel, LiveRound};
use super::{clock, FederationRuntime};
use crate::aggregation::{
    self, CentralDp, PrivacyAccountant, RoundAggregator, ServerState, Strategy,
};
use crate::raft::ProposeError;
use crate::runtime::CommandResult;
use crate::state::federations::spec::{FederationSpec, StrategySpec};
use crate::state::federations::{
    next_attempt, FederationRecord, FederationState, RoundCommit, RoundState,
};
use crate::state::{Applied, Command};

/// The outcome of an early `StartRound`, once it applies.
type StartOutcome = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<CommandResult, ProposeError>> + Send>,
>;

/// Bytes per `StageModel` command.
const STAGE_CHUNK_BYTES: usize = 4 * 1024 * 1024;

/// The aggregation strategy of a spec (FedProx aggregates as FedAvg).
pub fn strategy_of(spec: &StrategySpec) -> Strategy {
    match *spec {
        StrategySpec::FedAvg | StrategySpec::FedProx { .. } => Strategy::FedAvg,
        StrategySpec::FedAvgM {
            server_learning_rate,
            momentum,
        } => Strategy::FedAvgM {
            server_learning_rate,
            momentum,
        },
        StrategySpec::FedAdam(a) => Strategy::FedAdam(adaptive(a)),
        StrategySpec::FedYogi(a) => Strategy::FedYogi(adaptive(a)),
        StrategySpec::FedMedian => Strategy::FedMedian,
        StrategySpec::FedTrimmedAvg { beta } => Strategy::FedTrimmedAvg { beta },
        StrategySpec::Krum { f, multi_m } => Strategy::Krum { f, multi_m },
    }
}

fn adaptive(a: crate::state::federations::spec::Adaptive) -> aggregation::Adaptive {
    aggregation::Adaptive {
        eta: a.eta,
        beta1: a.beta1,
        beta2: a.beta2,
        tau: a.tau,
    }
}

/// Central DP as the aggregator applies it.
fn dp_of(spec: &FederationSpec) -> Option<CentralDp> {
    spec.central_dp.map(|dp| CentralDp {
        clip_norm: dp.clip_norm,
        noise_multiplier: dp.noise_multiplier,
    })
}

/// An empty aggregate for one attempt of a federation with `spec`.
pub fn new_aggregate(
    spec: &FederationSpec,
    dim: usize,
    spill_dir: &Path,
) -> Result<Aggregate, String> {
    match spec.secure_aggregation {
        Some(secure) => {
            let params =
                MaskingParams::new(secure.modulus_bits, secure.scale).map_err(|e| e.to_string())?;
            MaskedSum::new(dim, params)
                .map(Aggregate::Masked)
                .map_err(|e| e.to_string())
        }
        None => RoundAggregator::new_in(&strategy_of(&spec.strategy), dim, dp_of(spec), spill_dir)
            .map(Aggregate::Plain)
            .map_err(|e| e.to_string()),
    }
}

/// Epsilon spent after every committed round plus `extra` more at `sampling_rate`.
pub fn epsilon_after(federation: &FederationRecord, sampling_rate: f64, extra: u64) -> f64 {
    let Some(dp) = federation.spec.central_dp else {
        return 0.0;
    };
    let mut accountant = PrivacyAccountant::new();
    let committed = federation
        .rounds
        .values()
        .filter(|r| r.state == RoundState::Committed)
        .map(|r| r.sampling_rate);
    for rate in committed.chain(std::iter::repeat_n(sampling_rate, extra as usize)) {
        if accountant.compose(dp.noise_multiplier, rate, 1).is_err() {
            return f64::INFINITY;
        }
    }
    accountant
        .spent(dp.delta)
        .map_or(f64::INFINITY, |spent| spent.epsilon)
}

/// What the finisher reads from the state.
struct Inputs {
    spec: FederationSpec,
    server_state: Vec<u8>,
    epsilon_spent: f64,
    budget_exhausted: bool,
    submitted: Vec<(String, [u8; 32])>,
    unmasking: Vec<Unmask>,
}

/// A dropped participant's masks to remove.
struct Unmask {
    agent_id: String,
    public_key: [u8; 32],
    shares: Vec<Vec<u8>>,
}

impl FederationRuntime {
    /// Aggregates and commits the attempt `live`, or fails it.
    pub(super) async fn finish(&self, federation_id: &str, live: Arc<LiveRound>) {
        let (round, attempt) = (live.round, live.attempt);
        match self.aggregate_and_commit(federation_id, &live).await {
            Ok(()) => tracing::info!(federation_id, round, attempt, "round committed"),
            Err(reason) => self.fail(federation_id, round, attempt, &reason).await,
        }
        self.forget(federation_id, round, attempt);
        self.wake();
    }

    async fn aggregate_and_commit(
        &self,
        federation_id: &str,
        live: &Arc<LiveRound>,
    ) -> Result<(), String> {
        tracing::debug!(federation_id, round = live.round, "finishing");
        live.settled().await;
        // Taken first: no update is folded after this, so the folded set `inputs` checks
        // against the receipts is the aggregate's.
        let aggregate = live.take().ok_or("the aggregate was already taken")?;
        let inputs = self.inputs(federation_id, live)?;
        let global = live.global.clone();
        let computed =
            tokio::task::spawn_blocking(move || compute(aggregate, global.values(), inputs))
                .await
                .map_err(|e| format!("aggregation task: {e}"))??;
        let (model, server_state, commit_fields) = computed;
        tracing::debug!(federation_id, round = live.round, "aggregated");
        let crc32 = crc32(model.bytes());
        let model_bytes = model.bytes().len() as u64;
        let state_pieces = stage_chunks(server_state, STAGE_CHUNK_BYTES)
            .filter(|(_, data)| !data.is_empty())
            .map(|(offset, data)| (offset + model_bytes, data));
        let mut pending = Vec::new();
        for (offset, data) in
            stage_chunks(model.bytes().clone(), STAGE_CHUNK_BYTES).chain(state_pieces)
        {
            let command = Command::StageModel {
                federation_id: federation_id.to_owned(),
                round: live.round,
                attempt: live.attempt,
                offset,
                data,
            };
            pending.push(
                self.agents()
                    .enqueue(command)
                    .await
                    .map_err(|e| e.to_string())?,
            );
        }
        let commit = Command::CommitRound(RoundCommit {
            federation_id: federation_id.to_owned(),
            round: live.round,
            attempt: live.attempt,
            crc32,
            epsilon_spent: commit_fields.0,
            budget_exhausted: commit_fields.1,
        });
        pending.push(
            self.agents()
                .enqueue(commit)
                .await
                .map_err(|e| e.to_string())?,
        );
        let model = GlobalModel {
            round: live.round,
            values: Arc::new(model),
            crc32,
        };
        let successor = match commit_fields.1 {
            true => None,
            false => self.open_successor(federation_id, live, model).await,
        };
        let mut committed = Ok(());
        for result in futures::future::join_all(pending).await {
            let outcome = result.map_err(|e| e.to_string()).and_then(|result| {
                result
                    .outcome
                    .map(drop)
                    .map_err(|rejection| rejection.to_string())
            });
            committed = committed.and(outcome);
        }
        if let Some((round, attempt, started)) = successor {
            let opened = matches!(
                started.await,
                Ok(CommandResult {
                    outcome: Ok(Applied::RoundStarted { .. }),
                    ..
                })
            );
            match opened && committed.is_ok() {
                true => tracing::debug!(federation_id, round, attempt, "round started"),
                false => self.forget(federation_id, round, attempt),
            }
        }
        committed
    }

    /// Opens the round after `live` behind its commit, so participants train while the model
    /// they start from is still being replicated: samples it, makes it the live attempt, queues
    /// its `StartRound` right after the commit (so it applies only if the commit did, and every
    /// receipt for it follows both in the log) and invites its participants at once; they
    /// download the model from this leader's memory. Returns the attempt and its start's
    /// outcome, or `None` when the round cannot be opened early (the federation ends, uses
    /// secure aggregation, or too few agents are connected).
    async fn open_successor(
        &self,
        federation_id: &str,
        live: &LiveRound,
        model: GlobalModel,
    ) -> Option<(u32, u32, StartOutcome)> {
        let read = self.agents().read(|state| {
            let federation = state.federations.get(federation_id)?;
            let spec = &federation.spec;
            let early = federation.state == FederationState::Running
                && spec.secure_aggregation.is_none()
                && live.round < spec.rounds;
            // Numbered after the attempt whose model it trains on (see `next_attempt`).
            let attempt = next_attempt(federation, live.round + 1, live.attempt);
            early.then(|| (spec.clone(), attempt))
        });
        let (spec, attempt) = read?;
        let round = live.round + 1;
        let (start, successor) = self.plan(
            federation_id,
            &spec,
            (round, attempt),
            model,
            clock::now_ms(),
        )?;
        self.adopt(federation_id, successor.clone());
        let started = match self
            .agents()
            .enqueue(Command::StartRound(start.clone()))
            .await
        {
            Ok(started) => started,
            Err(error) => {
                tracing::debug!(%error, federation_id, round, "early round start not queued");
                self.forget(federation_id, round, attempt);
                return None;
            }
        };
        self.invite(federation_id, &start, &successor);
        Some((round, attempt, Box::pin(started)))
    }

    fn inputs(&self, federation_id: &str, live: &LiveRound) -> Result<Inputs, String> {
        let folded = live.folded();
        self.agents().read(|state| {
            let federation = state
                .federations
                .get(federation_id)
                .ok_or("the federation is gone")?;
            let open = federation
                .open_round()
                .filter(|r| r.round == live.round && r.attempt == live.attempt)
                .ok_or("the attempt is no longer open")?;
            let min = federation.spec.selection.min_participants as usize;
            let submitted: Vec<(String, [u8; 32])> = open
                .submitted()
                .map(|(id, p)| (id.clone(), key_of(&p.public_key)))
                .collect();
            if submitted.len() < min {
                return Err(format!(
                    "{} updates, at least {min} needed",
                    submitted.len()
                ));
            }
            if submitted.iter().any(|(id, _)| !folded.contains(id)) {
                return Err("an accepted update is missing from the aggregate".into());
            }
            if folded.len() != submitted.len() {
                return Err("the aggregate holds an update whose receipt was refused".into());
            }
            let unmasking = open
                .dropped_after_sharing()
                .map(|id| Unmask {
                    agent_id: id.clone(),
                    public_key: key_of(&open.participants[id].public_key),
                    shares: open
                        .unmask_shares
                        .get(id)
                        .map(|by| by.values().map(|s| s.to_vec()).collect())
                        .unwrap_or_default(),
                })
                .collect();
            let epsilon_spent = epsilon_after(federation, open.sampling_rate, 1);
            let budget_exhausted = federation.spec.central_dp.is_some_and(|dp| {
                dp.max_epsilon > 0.0
                    && epsilon_after(federation, open.sampling_rate, 2) > dp.max_epsilon
            });
            Ok(Inputs {
                spec: federation.spec.clone(),
                server_state: federation.server_state.clone(),
                epsilon_spent,
                budget_exhausted,
                submitted,
                unmasking,
            })
        })
    }
}

/// `payload` cut into `StageModel` pieces of at most `piece_bytes` with their offsets, each a
/// slice of it (none copied); an empty payload is one empty piece.
pub fn stage_chunks(
    payload: bytes::Bytes,
    piece_bytes: usize,
) -> impl Iterator<Item = (u64, bytes::Bytes)> {
    (0..payload.len().max(1))
        .step_by(piece_bytes)
        .map(move |start| {
            let end = (start + piece_bytes).min(payload.len());
            (start as u64, payload.slice(start..end))
        })
}

fn key_of(bytes: &[u8]) -> [u8; 32] {
    let mut key = [0u8; 32];
    if bytes.len() == 32 {
        key.copy_from_slice(bytes);
    }
    key
}

/// The model, the server state (empty when it is the default) and (epsilon, budget
/// exhausted). CPU-bound.
fn compute(
    aggregate: Aggregate,
    global: &[f32],
    inputs: Inputs,
) -> Result<(F32Payload, bytes::Bytes, (f64, bool)), String> {
    let mut server_state = match inputs.server_state.is_empty() {
        true => ServerState::default(),
        false => ServerState::from_bytes(&inputs.server_state).map_err(|e| e.to_string())?,
    };
    let mut rng = rand::rngs::StdRng::from_os_rng();
    let model = match aggregate {
        Aggregate::Plain(aggregator) => aggregator
            .finish(global, &mut server_state, &mut rng)
            .map_err(|e| e.to_string())?,
        Aggregate::Masked(mut sum) => {
            unmask(&mut sum, &inputs)?;
            let strategy = strategy_of(&inputs.spec.strategy);
            let total = sum.decode();
            let count = inputs.submitted.len();
            aggregation::apply_summed(
                &strategy,
                &total,
                count,
                dp_of(&inputs.spec),
                global,
                &mut server_state,
                &mut rng,
            )
            .map_err(|e| e.to_string())?
        }
    };
    let state_bytes = match server_state == ServerState::default() {
        true => bytes::Bytes::new(),
        false => server_state.to_bytes().into(),
    };
    let fields = (inputs.epsilon_spent, inputs.budget_exhausted);
    Ok((F32Payload::from_values(model), state_bytes, fields))
}

/// Removes every dropped participant's masks from the survivors' sum.
fn unmask(sum: &mut MaskedSum, inputs: &Inputs) -> Result<(), String> {
    let threshold = inputs
        .spec
        .secure_aggregation
        .map_or(2, |secure| secure.threshold);
    for dropped in &inputs.unmasking {
        let secret = reconstruct_private_key(&dropped.shares, threshold, &dropped.public_key)
            .map_err(|e| format!("unmasking '{}': {e}", dropped.agent_id))?;
        sum.remove_dropped_masks(&dropped.agent_id, secret, &inputs.submitted)
            .map_err(|e| format!("unmasking '{}': {e}", dropped.agent_id))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_chunks_cover_the_payload_in_order() {
        let payload: Vec<u8> = (0..STAGE_CHUNK_BYTES * 2 + 3).map(|i| i as u8).collect();
        let pieces: Vec<_> = stage_chunks(payload.clone().into(), STAGE_CHUNK_BYTES).collect();
        let offsets: Vec<u64> = pieces.iter().map(|(o, _)| *o).collect();
        let step = STAGE_CHUNK_BYTES as u64;
        assert_eq!(offsets, vec![0, step, 2 * step]);
        let joined: Vec<u8> = pieces.iter().flat_map(|(_, d)| d.iter().copied()).collect();
        assert_eq!(joined, payload);
        let small: Vec<_> = stage_chunks(vec![1, 2].into(), STAGE_CHUNK_BYTES).collect();
        assert_eq!(small, vec![(0, bytes::Bytes::from(vec![1, 2]))]);
        let empty: Vec<_> = stage_chunks(bytes::Bytes::new(), STAGE_CHUNK_BYTES).collect();
        assert_eq!(empty, vec![(0, bytes::Bytes::new())]);
    }
}
