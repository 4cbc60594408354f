//! [`FederationSpec`]: everything that defines a federation (model layout, rounds, who takes
//! part, training settings, aggregation strategy, privacy), and its validation, run by the API
//! and again at apply. Pure data.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use synod_sdk::tensors::{self, Dtype, TensorSpec};

use crate::state::agents::AgentSelector;
use crate::state::jobs::SpecError;

/// Most rounds of one federation.
pub const ROUNDS_MAX: u32 = 100_000;
/// Largest model, in payload bytes.
pub const MODEL_BYTES_MAX: u64 = 2 * 1024 * 1024 * 1024;
/// Longest federation name, in characters.
pub const NAME_CHARS_MAX: usize = 256;
/// Most `round_config.extra` entries.
pub const EXTRA_MAX: usize = 64;
/// Consecutive failed attempts tolerated when the spec leaves it at 0.
pub const MAX_FAILED_ROUNDS_DEFAULT: u32 = 3;
/// Secure aggregation's key and unmask phase limit when the spec leaves it at 0.
pub const PHASE_TIMEOUT_MS_DEFAULT: u64 = 30_000;

/// A federation as started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FederationSpec {
    /// Human-readable name.
    pub name: String,
    /// Layout of the model, every update and every global model.
    pub tensors: Vec<TensorSpec>,
    /// Rounds to commit.
    pub rounds: u32,
    /// Who takes part.
    pub selection: Selection,
    /// Time limit of a round attempt.
    pub round_timeout_ms: u64,
    /// Settings sent to participants.
    pub round_config: RoundConfig,
    /// Participants evaluate every this many rounds; 0 never.
    pub evaluate_every_rounds: u32,
    /// How updates are combined.
    pub strategy: StrategySpec,
    /// Central differential privacy, if any.
    pub central_dp: Option<CentralDpSpec>,
    /// Secure aggregation, if any.
    pub secure_aggregation: Option<SecureAggregationSpec>,
    /// Consecutive failed attempts before the federation fails.
    pub max_failed_rounds: u32,
}

/// Participant selection per round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Selection {
    /// Eligible agents.
    pub selector: AgentSelector,
    /// Fraction of eligible agents sampled, in (0, 1].
    pub fraction: f64,
    /// Fewest participants a round starts and commits with.
    pub min_participants: u32,
    /// Most participants per round; 0 unbounded.
    pub max_participants: u32,
}

impl Selection {
    /// How many of `eligible` agents a round samples: ⌈fraction × eligible⌉ clamped to
    /// [min, max]; `None` when fewer than the minimum are eligible.
    pub fn sample_size(&self, eligible: usize) -> Option<usize> {
        let min = self.min_participants as usize;
        if eligible < min {
            return None;
        }
        let wanted = (self.fraction * eligible as f64).ceil() as usize;
        let max = match self.max_participants {
            0 => eligible,
            max => (max as usize).min(eligible),
        };
        Some(wanted.clamp(min, max.max(min)))
    }
}

/// Local training settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RoundConfig {
    /// Local epochs; 0 lets the participant decide.
    pub local_epochs: u32,
    /// Local batch size; 0 lets the participant decide.
    pub batch_size: u32,
    /// Local learning rate; 0 lets the participant decide.
    pub learning_rate: f64,
    /// Free-form trainer settings.
    pub extra: BTreeMap<String, String>,
}

/// Aggregation strategy and its parameters (defaults already filled in).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum StrategySpec {
    /// Weighted average of updates.
    FedAvg,
    /// FedAvg with a proximal term sent to participants.
    FedProx {
        /// Proximal weight, > 0.
        proximal_mu: f64,
    },
    /// FedAvg with server momentum.
    FedAvgM {
        /// Server learning rate.
        server_learning_rate: f64,
        /// Momentum in [0, 1).
        momentum: f64,
    },
    /// Server-side Adam.
    FedAdam(Adaptive),
    /// Server-side Yogi.
    FedYogi(Adaptive),
    /// Coordinate-wise median.
    FedMedian,
    /// Coordinate-wise trimmed mean.
    FedTrimmedAvg {
        /// Fraction trimmed from each end, in [0, 0.5).
        beta: f64,
    },
    /// (Multi-)Krum.
    Krum {
        /// Byzantine participants tolerated.
        f: u32,
        /// Best-scored updates averaged; 0 or 1 is plain Krum.
        multi_m: u32,
    },
}

impl StrategySpec {
    /// True for strategies that need every individual update.
    pub fn needs_individual_updates(&self) -> bool {
        matches!(
            self,
            StrategySpec::FedMedian
                | StrategySpec::FedTrimmedAvg { .. }
                | StrategySpec::Krum { .. }
        )
    }

    /// The proximal weight participants are sent.
    pub fn proximal_mu(&self) -> f64 {
        match self {
            StrategySpec::FedProx { proximal_mu } => *proximal_mu,
            _ => 0.0,
        }
    }
}

/// Server optimizer parameters of FedAdam and FedYogi.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Adaptive {
    /// Server learning rate.
    pub eta: f64,
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Adaptivity term.
    pub tau: f64,
}

/// Central DP with the Gaussian mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CentralDpSpec {
    /// L2 clipping bound of each update.
    pub clip_norm: f64,
    /// Noise stddev as a multiple of the clipping bound.
    pub noise_multiplier: f64,
    /// Target delta.
    pub delta: f64,
    /// Epsilon budget; 0 none.
    pub max_epsilon: f64,
}

/// Secure aggregation parameters (defaults filled in).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SecureAggregationSpec {
    /// Fewest survivors that can unmask.
    pub threshold: u32,
    /// Bits of the fixed-point group.
    pub modulus_bits: u32,
    /// Fixed-point scale.
    pub scale: f64,
    /// Limit of each key and unmask phase.
    pub phase_timeout_ms: u64,
}

impl FederationSpec {
    /// Payload bytes of the model.
    pub fn model_bytes(&self) -> u64 {
        tensors::payload_bytes(&self.tensors)
    }

    /// Whether round `round` (from 1) asks participants to evaluate.
    pub fn evaluates(&self, round: u32) -> bool {
        self.evaluate_every_rounds > 0 && round.is_multiple_of(self.evaluate_every_rounds)
    }

    /// Consecutive failed attempts tolerated.
    pub fn failed_rounds_allowed(&self) -> u32 {
        match self.max_failed_rounds {
            0 => MAX_FAILED_ROUNDS_DEFAULT,
            n => n,
        }
    }

    /// Checks every field, naming the first that is wrong.
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.name.chars().count() > NAME_CHARS_MAX {
            return Err(SpecError::new(
                "spec.name",
                format!("longer than {NAME_CHARS_MAX} characters"),
            ));
        }
        self.validate_model()?;
        if self.rounds == 0 || self.rounds > ROUNDS_MAX {
            return Err(SpecError::new(
                "spec.rounds",
                format!("{}, must be in 1..={ROUNDS_MAX}", self.rounds),
            ));
        }
        if self.round_timeout_ms == 0 {
            return Err(SpecError::new("spec.round_timeout_ms", "required"));
        }
        self.validate_selection()?;
        if self.round_config.extra.len() > EXTRA_MAX {
            return Err(SpecError::new(
                "spec.round_config.extra",
                format!(
                    "{} entries, at most {EXTRA_MAX}",
                    self.round_config.extra.len()
                ),
            ));
        }
        let lr = self.round_config.learning_rate;
        if !lr.is_finite() || lr < 0.0 {
            return Err(SpecError::new(
                "spec.round_config.learning_rate",
                format!("{lr}, must be finite and ≥ 0"),
            ));
        }
        self.validate_strategy()?;
        self.validate_privacy()
    }

    fn validate_model(&self) -> Result<(), SpecError> {
        let bytes = tensors::validate(&self.tensors, "spec.initial_model.tensors")
            .map_err(|e| SpecError::new(e.field, e.problem))?;
        if let Some(i) = self.tensors.iter().position(|t| t.dtype != Dtype::F32) {
            return Err(SpecError::new(
                format!("spec.initial_model.tensors[{i}].dtype"),
                "only F32 models are aggregated",
            ));
        }
        if bytes == 0 || bytes > MODEL_BYTES_MAX {
            return Err(SpecError::new(
                "spec.initial_model.tensors",
                format!("{bytes} bytes, must be in 1..={MODEL_BYTES_MAX}"),
            ));
        }
        Ok(())
    }

    fn validate_selection(&self) -> Result<(), SpecError> {
        let s = &self.selection;
        if !(s.fraction > 0.0 && s.fraction <= 1.0) {
            return Err(SpecError::new(
                "spec.participants.fraction",
                format!("{}, must be in (0, 1]", s.fraction),
            ));
        }
        if s.min_participants == 0 {
            return Err(SpecError::new(
                "spec.participants.min_participants",
                "at least 1",
            ));
        }
        if s.max_participants != 0 && s.max_participants < s.min_participants {
            return Err(SpecError::new(
                "spec.participants.max_participants",
                format!(
                    "{} is below min_participants {}",
                    s.max_participants, s.min_participants
                ),
            ));
        }
        Ok(())
    }

    fn validate_strategy(&self) -> Result<(), SpecError> {
        let field = "spec.strategy";
        let finite = |name: &str, v: f64, ok: bool| match v.is_finite() && ok {
            true => Ok(()),
            false => Err(SpecError::new(
                format!("{field}.{name}"),
                format!("{v} is out of range"),
            )),
        };
        match &self.strategy {
            StrategySpec::FedAvg | StrategySpec::FedMedian => Ok(()),
            StrategySpec::FedProx { proximal_mu } => {
                finite("fed_prox.proximal_mu", *proximal_mu, *proximal_mu > 0.0)
            }
            StrategySpec::FedAvgM {
                server_learning_rate,
                momentum,
            } => {
                finite(
                    "fed_avg_m.server_learning_rate",
                    *server_learning_rate,
                    *server_learning_rate > 0.0,
                )?;
                finite(
                    "fed_avg_m.momentum",
                    *momentum,
                    (0.0..1.0).contains(momentum),
                )
            }
            StrategySpec::FedAdam(a) | StrategySpec::FedYogi(a) => {
                finite("eta", a.eta, a.eta > 0.0)?;
                finite("beta1", a.beta1, (0.0..1.0).contains(&a.beta1))?;
                finite("beta2", a.beta2, (0.0..1.0).contains(&a.beta2))?;
                finite("tau", a.tau, a.tau > 0.0)
            }
            StrategySpec::FedTrimmedAvg { beta } => {
                finite("fed_trimmed_avg.beta", *beta, (0.0..0.5).contains(beta))
            }
            StrategySpec::Krum { f, .. } => {
                let needed = 2 * f + 3;
                match self.selection.min_participants >= needed {
                    true => Ok(()),
                    false => Err(SpecError::new(
                        "spec.participants.min_participants",
                        format!(
                            "{}, Krum with f = {f} needs at least 2f + 3 = {needed}",
                            self.selection.min_participants
                        ),
                    )),
                }
            }
        }
    }

    fn validate_privacy(&self) -> Result<(), SpecError> {
        if let Some(dp) = &self.central_dp {
            let ok = |v: f64| v.is_finite() && v > 0.0;
            if !ok(dp.clip_norm) {
                return Err(SpecError::new(
                    "spec.privacy.central_dp.clip_norm",
                    "must be > 0",
                ));
            }
            if !ok(dp.noise_multiplier) {
                return Err(SpecError::new(
                    "spec.privacy.central_dp.noise_multiplier",
                    "must be > 0",
                ));
            }
            if !(dp.delta > 0.0 && dp.delta < 1.0) {
                return Err(SpecError::new(
                    "spec.privacy.central_dp.delta",
                    format!("{}, must be in (0, 1)", dp.delta),
                ));
            }
            if !dp.max_epsilon.is_finite() || dp.max_epsilon < 0.0 {
                return Err(SpecError::new(
                    "spec.privacy.central_dp.max_epsilon",
                    "must be ≥ 0",
                ));
            }
            if self.strategy.needs_individual_updates() {
                return Err(SpecError::new(
                    "spec.privacy.central_dp",
                    "works with FedAvg, FedProx, FedAvgM, FedAdam and FedYogi only",
                ));
            }
        }
        match &self.secure_aggregation {
            Some(secure) => self.validate_secure(secure),
            None => Ok(()),
        }
    }

    fn validate_secure(&self, secure: &SecureAggregationSpec) -> Result<(), SpecError> {
        let field = "spec.privacy.secure_aggregation";
        if self.strategy.needs_individual_updates() {
            return Err(SpecError::new(
                field,
                "incompatible with FedMedian, FedTrimmedAvg and Krum, which need individual updates",
            ));
        }
        let min = self.selection.min_participants;
        if secure.threshold < 2 || secure.threshold > min {
            return Err(SpecError::new(
                format!("{field}.threshold"),
                format!(
                    "{}, must be in 2..=min_participants ({min})",
                    secure.threshold
                ),
            ));
        }
        if !(1..=62).contains(&secure.modulus_bits) {
            return Err(SpecError::new(
                format!("{field}.modulus_bits"),
                format!("{}, at most 62", secure.modulus_bits),
            ));
        }
        if !(secure.scale.is_finite() && secure.scale > 0.0) {
            return Err(SpecError::new(format!("{field}.scale"), "must be > 0"));
        }
        Ok(())
    }
}
