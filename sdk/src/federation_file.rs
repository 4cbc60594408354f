//! Federation files: a federation written in TOML, as `synod fl start FILE` takes it, turned
//! into a [`pb::FederationSpec`] and the initial model (built from each tensor's `init`).
//!
//! ```toml
//! name = "wine"
//! rounds = 20
//! round_timeout_ms = 30000
//! evaluate_every_rounds = 1
//! [participants]
//! capabilities = ["fl"]
//! fraction = 1.0
//! min = 10
//! [round_config]
//! local_epochs = 5
//! learning_rate = 0.1
//! extra = { classes = "3" }
//! [strategy]
//! name = "fedavg"          # fedprox (proximal_mu), fedavgm (server_learning_rate, momentum),
//!                          # fedadam / fedyogi (eta, beta1, beta2, tau), fedmedian,
//!                          # fedtrimmedavg (beta), krum (f, multi_m)
//! [privacy.central_dp]     # optional: clip_norm, noise_multiplier, delta, max_epsilon
//! [privacy.secure_aggregation]  # optional: threshold, modulus_bits, scale, phase_timeout_ms
//! [[tensors]]
//! name = "weight"
//! shape = [13, 3]
//! init = "zeros"           # zeros | constant:V | uniform:LO,HI (seeded by `seed`)
//! ```

use std::collections::BTreeMap;

use rand::{Rng, SeedableRng};
use serde::Deserialize;
use synod_proto::v1 as pb;

use crate::tensors::{specs_to_proto, Model, TensorSpec};

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FederationFile {
    /// Name.
    #[serde(default)]
    pub name: String,
    /// Rounds to commit.
    pub rounds: u32,
    /// Time limit of a round attempt.
    pub round_timeout_ms: u64,
    /// Participants evaluate every this many rounds.
    #[serde(default)]
    pub evaluate_every_rounds: u32,
    /// Consecutive failed attempts tolerated.
    #[serde(default)]
    pub max_failed_rounds: u32,
    /// Seed of `uniform` initialisations.
    #[serde(default)]
    pub seed: u64,
    /// Who takes part.
    pub participants: ParticipantsSection,
    /// Training settings.
    #[serde(default)]
    pub round_config: RoundConfigSection,
    /// Aggregation.
    #[serde(default)]
    pub strategy: StrategySection,
    /// Privacy.
    #[serde(default)]
    pub privacy: PrivacySection,
    /// The model's tensors.
    pub tensors: Vec<TensorSection>,
}

/// `[participants]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParticipantsSection {
    /// Capabilities every participant offers.
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// Labels every participant carries.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Fraction sampled.
    #[serde(default)]
    pub fraction: f64,
    /// Fewest per round.
    pub min: u32,
    /// Most per round; 0 unbounded.
    #[serde(default)]
    pub max: u32,
}

/// `[round_config]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoundConfigSection {
    /// Local epochs.
    #[serde(default)]
    pub local_epochs: u32,
    /// Batch size.
    #[serde(default)]
    pub batch_size: u32,
    /// Learning rate.
    #[serde(default)]
    pub learning_rate: f64,
    /// Free-form settings.
    #[serde(default)]
    pub extra: BTreeMap<String, String>,
}

/// `[strategy]`: a name and its parameters (unset ones take the server's defaults).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StrategySection {
    /// Strategy name.
    #[serde(default)]
    pub name: String,
    /// FedProx.
    #[serde(default)]
    pub proximal_mu: f64,
    /// FedAvgM.
    #[serde(default)]
    pub server_learning_rate: f64,
    /// FedAvgM.
    #[serde(default)]
    pub momentum: f64,
    /// FedAdam / FedYogi.
    #[serde(default)]
    pub eta: f64,
    /// FedAdam / FedYogi.
    #[serde(default)]
    pub beta1: f64,
    /// FedAdam / FedYogi.
    #[serde(default)]
    pub beta2: f64,
    /// FedAdam / FedYogi.
    #[serde(default)]
    pub tau: f64,
    /// FedTrimmedAvg.
    #[serde(default)]
    pub beta: f64,
    /// Krum.
    #[serde(default)]
    pub f: u32,
    /// Multi-Krum.
    #[serde(default)]
    pub multi_m: u32,
}

/// `[privacy]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivacySection {
    /// Central DP.
    pub central_dp: Option<CentralDpSection>,
    /// Secure aggregation.
    pub secure_aggregation: Option<SecureSection>,
}

/// `[privacy.central_dp]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CentralDpSection {
    /// L2 clipping bound.
    pub clip_norm: f64,
    /// Noise multiplier.
    pub noise_multiplier: f64,
    /// Target delta.
    pub delta: f64,
    /// Budget; 0 none.
    #[serde(default)]
    pub max_epsilon: f64,
}

/// `[privacy.secure_aggregation]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecureSection {
    /// Fewest survivors.
    pub threshold: u32,
    /// Group bits.
    #[serde(default)]
    pub modulus_bits: u32,
    /// Fixed-point scale.
    #[serde(default)]
    pub scale: f64,
    /// Key and unmask phase limit.
    #[serde(default)]
    pub phase_timeout_ms: u64,
}

/// `[[tensors]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TensorSection {
    /// Name.
    pub name: String,
    /// Shape.
    pub shape: Vec<u64>,
    /// Initial values.
    #[serde(default)]
    pub init: String,
}

/// A federation file that cannot be used, with the field at fault.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct FederationFileError(pub String);

/// Parses a federation file into its spec (without inline data) and initial model.
pub fn parse_federation_file(
    text: &str,
) -> Result<(pb::FederationSpec, Model), FederationFileError> {
    let file: FederationFile = toml::from_str(text)
        .map_err(|e| FederationFileError(e.to_string().trim_end().to_owned()))?;
    let model = initial_model(&file)?;
    let p = &file.participants;
    let spec = pb::FederationSpec {
        name: file.name.clone(),
        initial_model: Some(pb::InitialModel {
            tensors: specs_to_proto(&model.specs),
            inline_data: Vec::new(),
        }),
        rounds: file.rounds,
        participants: Some(pb::ParticipantSelection {
            selector: Some(pb::AgentSelector {
                capabilities: p.capabilities.clone(),
                labels: p.labels.clone().into_iter().collect(),
            }),
            fraction: p.fraction,
            min_participants: p.min,
            max_participants: p.max,
        }),
        round_timeout_ms: file.round_timeout_ms,
        round_config: Some(pb::RoundConfig {
            local_epochs: file.round_config.local_epochs,
            batch_size: file.round_config.batch_size,
            learning_rate: file.round_config.learning_rate,
            extra: file.round_config.extra.clone().into_iter().collect(),
        }),
        evaluate_every_rounds: file.evaluate_every_rounds,
        strategy: Some(strategy(&file.strategy)?),
        privacy: Some(privacy(&file.privacy)),
        max_failed_rounds: file.max_failed_rounds,
    };
    Ok((spec, model))
}

fn strategy(s: &StrategySection) -> Result<pb::AggregationStrategy, FederationFileError> {
    use pb::aggregation_strategy::Strategy as S;
    let adaptive = pb::FedAdaptive {
        eta: s.eta,
        beta1: s.beta1,
        beta2: s.beta2,
        tau: s.tau,
    };
    let strategy = match s.name.to_lowercase().as_str() {
        "" | "fedavg" => S::FedAvg(pb::FedAvg {}),
        "fedprox" => S::FedProx(pb::FedProx {
            proximal_mu: s.proximal_mu,
        }),
        "fedavgm" => S::FedAvgM(pb::FedAvgM {
            server_learning_rate: s.server_learning_rate,
            momentum: s.momentum,
        }),
        "fedadam" => S::FedAdam(adaptive),
        "fedyogi" => S::FedYogi(adaptive),
        "fedmedian" => S::FedMedian(pb::FedMedian {}),
        "fedtrimmedavg" => S::FedTrimmedAvg(pb::FedTrimmedAvg { beta: s.beta }),
        "krum" => S::Krum(pb::Krum {
            f: s.f,
            multi_m: s.multi_m,
        }),
        other => {
            return Err(FederationFileError(format!(
                "strategy.name: unknown strategy '{other}' (fedavg, fedprox, fedavgm, fedadam, fedyogi, fedmedian, fedtrimmedavg, krum)"
            )))
        }
    };
    Ok(pb::AggregationStrategy {
        strategy: Some(strategy),
    })
}

fn privacy(p: &PrivacySection) -> pb::PrivacyConfig {
    pb::PrivacyConfig {
        central_dp: p.central_dp.as_ref().map(|dp| pb::CentralDp {
            clip_norm: dp.clip_norm,
            noise_multiplier: dp.noise_multiplier,
            delta: dp.delta,
            max_epsilon: dp.max_epsilon,
        }),
        secure_aggregation: p
            .secure_aggregation
            .as_ref()
            .map(|s| pb::SecureAggregation {
                threshold: s.threshold,
                modulus_bits: s.modulus_bits,
                scale: s.scale,
                phase_timeout_ms: s.phase_timeout_ms,
            }),
    }
}

/// The initial model from each tensor's `init`.
fn initial_model(file: &FederationFile) -> Result<Model, FederationFileError> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(file.seed);
    let mut specs = Vec::new();
    let mut values = Vec::new();
    for (i, t) in file.tensors.iter().enumerate() {
        let spec = TensorSpec::f32(t.name.clone(), &t.shape);
        let count = spec.elements().unwrap_or(0) as usize;
        let field = format!("tensors[{i}].init");
        values.extend(
            init_values(&t.init, count, &mut rng)
                .map_err(|p| FederationFileError(format!("{field}: {p}")))?,
        );
        specs.push(spec);
    }
    Model::new(specs, values).map_err(|e| FederationFileError(e.to_string()))
}

fn init_values(init: &str, count: usize, rng: &mut impl Rng) -> Result<Vec<f32>, String> {
    let (kind, args) = init.split_once(':').unwrap_or((init, ""));
    let number = |s: &str| {
        s.trim()
            .parse::<f32>()
            .map_err(|_| format!("'{s}' is not a number"))
    };
    match kind {
        "" | "zeros" => Ok(vec![0.0; count]),
        "constant" => Ok(vec![number(args)?; count]),
        "uniform" => {
            let (lo, hi) = args.split_once(',').ok_or("uniform:LO,HI")?;
            let (lo, hi) = (number(lo)?, number(hi)?);
            if lo >= hi || lo.is_nan() || hi.is_nan() {
                return Err("uniform needs LO < HI".into());
            }
            Ok((0..count).map(|_| rng.random_range(lo..hi)).collect())
        }
        other => Err(format!(
            "unknown init '{other}' (zeros, constant:V, uniform:LO,HI)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
name = "t"
rounds = 3
round_timeout_ms = 1000
[participants]
capabilities = ["fl"]
min = 2
[strategy]
name = "fedadam"
eta = 0.1
[[tensors]]
name = "w"
shape = [2, 2]
init = "constant:0.5"
[[tensors]]
name = "b"
shape = [2]
"#;

    #[test]
    fn a_file_becomes_a_spec_and_its_initial_model() {
        let (spec, model) = parse_federation_file(FILE).unwrap();
        assert_eq!(spec.rounds, 3);
        assert_eq!(model.values, vec![0.5, 0.5, 0.5, 0.5, 0.0, 0.0]);
        let strategy = spec.strategy.unwrap().strategy.unwrap();
        assert!(matches!(strategy, pb::aggregation_strategy::Strategy::FedAdam(a) if a.eta == 0.1));
    }

    #[test]
    fn bad_strategies_and_inits_name_their_field() {
        let error = parse_federation_file(&FILE.replace("fedadam", "nope")).unwrap_err();
        assert!(error.to_string().starts_with("strategy.name"), "{error}");
        let error = parse_federation_file(&FILE.replace("constant:0.5", "normal")).unwrap_err();
        assert!(error.to_string().starts_with("tensors[0].init"), "{error}");
    }
}
