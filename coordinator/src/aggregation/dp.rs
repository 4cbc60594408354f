//! [`CentralDp`]: server-side DP-FedAvg with the Gaussian mechanism (McMahan et al., 2018;
//! Flower's `DifferentialPrivacyServerSideFixedClipping`).
//!
//! ```text
//!   Δᵢ ─► × min(1, C/‖Δᵢ‖₂) ─► Σ (equal weights) ─► + N(0, (σ·C)²) per coordinate ─► ÷ n
//! ```
//!
//! Adding or removing one participant moves the sum by at most C, so noise of standard
//! deviation σ·C on the sum makes one round a Gaussian mechanism with noise multiplier σ; see
//! [`accountant`](super::accountant) for the (ε, δ) over many rounds. Randomness comes only from
//! the caller's rng.

use rand::Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

use super::strategy::{invalid, positive};
use super::AggregationError;

/// Central differential privacy for one round.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CentralDp {
    /// L2 bound C every update is clipped to (> 0).
    pub clip_norm: f64,
    /// σ: noise standard deviation on the sum, in units of C (≥ 0; 0 adds no noise).
    pub noise_multiplier: f64,
}

impl CentralDp {
    /// Standard deviation of the noise added to each coordinate of the sum: σ·C.
    pub fn noise_std(&self) -> f64 {
        self.noise_multiplier * self.clip_norm
    }

    pub(crate) fn validate(&self) -> Result<(), AggregationError> {
        positive("clip_norm", self.clip_norm)?;
        if self.noise_multiplier.is_finite() && self.noise_multiplier >= 0.0 {
            Ok(())
        } else {
            Err(invalid("noise_multiplier", "must be finite and >= 0"))
        }
    }

    /// The factor min(1, C/‖update‖₂) that clips `update` to norm C.
    pub(crate) fn clip_scale(&self, update: &[f32]) -> f64 {
        let norm = update
            .iter()
            .map(|&x| f64::from(x) * f64::from(x))
            .sum::<f64>()
            .sqrt();
        if norm > self.clip_norm {
            self.clip_norm / norm
        } else {
            1.0
        }
    }
}

/// `sum / count`, with the DP noise added to the sum first when `dp` is set.
pub(crate) fn noisy_mean<R: Rng + ?Sized>(
    mut sum: Vec<f64>,
    count: usize,
    dp: Option<&CentralDp>,
    rng: &mut R,
) -> Vec<f64> {
    let std = dp.map_or(0.0, CentralDp::noise_std);
    if std > 0.0 {
        for s in &mut sum {
            let z: f64 = StandardNormal.sample(rng);
            *s += std * z;
        }
    }
    let n = count as f64;
    sum.iter_mut().for_each(|s| *s /= n);
    sum
}
