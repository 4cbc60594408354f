//! [`Strategy`]: which aggregation rule a round uses, its parameters and their valid ranges.
//!
//! Pure data plus validation; the rules themselves live in one file each.

use serde::{Deserialize, Serialize};

use super::AggregationError;

/// Parameters of the adaptive server optimizers (Reddi et al., "Adaptive Federated
/// Optimization", 2021), named as in Flower's `FedAdam` / `FedYogi`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Adaptive {
    /// Server learning rate η (Flower's `eta`, default 0.1 there; > 0).
    pub eta: f64,
    /// First-moment decay β₁ in [0, 1) (Flower: 0.9).
    pub beta1: f64,
    /// Second-moment decay β₂ in [0, 1) (Flower: 0.99).
    pub beta2: f64,
    /// Adaptivity τ > 0, added to √v (Flower: 1e-9).
    pub tau: f64,
}

/// How the round's updates become the next global model.
///
/// FedProx differs from FedAvg only on the clients; the caller maps it to [`Strategy::FedAvg`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Strategy {
    /// Weighted mean of the updates (weights = `num_examples`).
    FedAvg,
    /// FedAvg's mean as pseudo-gradient for server SGD with momentum (Hsu et al., 2019).
    FedAvgM {
        /// Server learning rate (> 0; 1 with momentum 0 is FedAvg).
        server_learning_rate: f64,
        /// Momentum in [0, 1).
        momentum: f64,
    },
    /// FedAvg's mean as pseudo-gradient for server Adam.
    FedAdam(Adaptive),
    /// FedAvg's mean as pseudo-gradient for server Yogi.
    FedYogi(Adaptive),
    /// Coordinate-wise median, unweighted.
    FedMedian,
    /// Coordinate-wise mean after dropping ⌊beta·n⌋ values at each end, unweighted.
    FedTrimmedAvg {
        /// Fraction cut from each end, in [0, 0.5).
        beta: f64,
    },
    /// Krum (`multi_m` 0 or 1) or Multi-Krum (Blanchard et al., 2017), unweighted.
    Krum {
        /// Byzantine updates tolerated; needs n ≥ 2f + 3.
        f: u32,
        /// Updates averaged by Multi-Krum; 0 or 1 means plain Krum.
        multi_m: u32,
    },
}

impl Strategy {
    /// The strategy's name, as in Flower.
    pub fn name(&self) -> &'static str {
        match self {
            Self::FedAvg => "FedAvg",
            Self::FedAvgM { .. } => "FedAvgM",
            Self::FedAdam(_) => "FedAdam",
            Self::FedYogi(_) => "FedYogi",
            Self::FedMedian => "FedMedian",
            Self::FedTrimmedAvg { .. } => "FedTrimmedAvg",
            Self::Krum { .. } => "Krum",
        }
    }

    /// True for the rules that need every update at once (median, trimmed mean, Krum), which
    /// spill updates to disk; false for the mean-based ones, which stream.
    pub fn is_robust(&self) -> bool {
        matches!(
            self,
            Self::FedMedian | Self::FedTrimmedAvg { .. } | Self::Krum { .. }
        )
    }

    /// Checks every parameter's range.
    pub fn validate(&self) -> Result<(), AggregationError> {
        match *self {
            Self::FedAvg | Self::FedMedian | Self::Krum { .. } => Ok(()),
            Self::FedAvgM {
                server_learning_rate,
                momentum,
            } => {
                positive("server_learning_rate", server_learning_rate)?;
                unit_interval("momentum", momentum)
            }
            Self::FedAdam(adaptive) | Self::FedYogi(adaptive) => adaptive.validate(),
            Self::FedTrimmedAvg { beta } => {
                if (0.0..0.5).contains(&beta) {
                    Ok(())
                } else {
                    Err(invalid("beta", "must be in [0, 0.5)"))
                }
            }
        }
    }
}

impl Adaptive {
    fn validate(&self) -> Result<(), AggregationError> {
        positive("eta", self.eta)?;
        unit_interval("beta1", self.beta1)?;
        unit_interval("beta2", self.beta2)?;
        positive("tau", self.tau)
    }
}

pub(crate) fn invalid(field: &'static str, reason: &'static str) -> AggregationError {
    AggregationError::InvalidParameter { field, reason }
}

pub(crate) fn positive(field: &'static str, value: f64) -> Result<(), AggregationError> {
    if value.is_finite() && value > 0.0 {
        Ok(())
    } else {
        Err(invalid(field, "must be finite and > 0"))
    }
}

fn unit_interval(field: &'static str, value: f64) -> Result<(), AggregationError> {
    if (0.0..1.0).contains(&value) {
        Ok(())
    } else {
        Err(invalid(field, "must be in [0, 1)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADAM: Adaptive = Adaptive {
        eta: 0.1,
        beta1: 0.9,
        beta2: 0.99,
        tau: 1e-9,
    };

    #[test]
    fn parameter_ranges() {
        let bad = |adaptive| {
            Strategy::FedAdam(adaptive)
                .validate()
                .unwrap_err()
                .to_string()
        };
        let cases: [(Strategy, Option<&str>); 10] = [
            (Strategy::FedAvg, None),
            (Strategy::FedYogi(ADAM), None),
            (Strategy::FedTrimmedAvg { beta: 0.0 }, None),
            (Strategy::FedTrimmedAvg { beta: 0.5 }, Some("beta")),
            (Strategy::FedTrimmedAvg { beta: f64::NAN }, Some("beta")),
            (
                Strategy::FedAvgM {
                    server_learning_rate: 1.0,
                    momentum: 0.9,
                },
                None,
            ),
            (
                Strategy::FedAvgM {
                    server_learning_rate: 0.0,
                    momentum: 0.9,
                },
                Some("server_learning_rate"),
            ),
            (
                Strategy::FedAvgM {
                    server_learning_rate: 1.0,
                    momentum: 1.0,
                },
                Some("momentum"),
            ),
            (Strategy::Krum { f: 9, multi_m: 0 }, None),
            (Strategy::FedMedian, None),
        ];
        for (strategy, field) in cases {
            match (strategy.validate(), field) {
                (Ok(()), None) => {}
                (Err(AggregationError::InvalidParameter { field: got, .. }), Some(want)) => {
                    assert_eq!(got, want, "{strategy:?}");
                }
                (other, _) => panic!("{strategy:?}: {other:?}"),
            }
        }
        assert!(bad(Adaptive { tau: 0.0, ..ADAM }).contains("`tau`"));
        assert!(bad(Adaptive { beta2: 1.0, ..ADAM }).contains("`beta2`"));
        assert!(bad(Adaptive {
            eta: f64::INFINITY,
            ..ADAM
        })
        .contains("`eta`"));
    }
}
