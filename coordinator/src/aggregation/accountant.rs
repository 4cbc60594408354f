//! Privacy accounting for central DP ([`CentralDp`](super::CentralDp)): how much (ε, δ) a run of
//! rounds has spent, by Rényi DP of the sampled Gaussian mechanism.
//!
//! ```text
//!   per round, per order α:  RDP(α) = ln A_α / (α − 1)      (Mironov, Talwar & Zhang 2019)
//!   composition:             RDP_total(α) = Σ rounds RDP(α)
//!   to (ε, δ):               ε = min_α RDP(α) − (ln δ + ln α)/(α − 1) + ln((α − 1)/α)
//! ```
//!
//! A port of Opacus's `opacus/accountants/analysis/rdp.py` (itself TensorFlow Privacy's):
//! `_compute_log_a_for_int_alpha` for integer orders, `_compute_log_a_for_frac_alpha` for the
//! others, and `get_privacy_spent`'s conversion, the tighter one of Balle et al. 2020
//! ("Hypothesis testing interpretations and Rényi DP", Theorem 21) rather than the classic
//! RDP(α) + ln(1/δ)/(α − 1); as in Google's `dp_accounting`, an order whose RDP is below
//! −ln(1 − δ²) gives ε = 0 (so nothing composed spends nothing). Default orders are Opacus's: 1.1, 1.2, …, 10.9, then 12, …, 63.
//! With sampling rate q = 1 the per-round RDP is the closed form α/(2σ²). Here the sampling rate
//! is the fraction of the population each round samples (Poisson sampling assumed, as in
//! Opacus); σ is [`CentralDp::noise_multiplier`](super::CentralDp::noise_multiplier).

use thiserror::Error;

use super::special::{log_add, log_erfc, log_sub};

/// Iterations after which a fractional order is given up (and counted as ε = ∞ there).
const FRAC_STEPS_MAX: usize = 10_000;

/// An input outside the accountant's domain.
#[derive(Debug, Error, PartialEq)]
pub enum AccountantError {
    /// The noise multiplier must be finite and ≥ 0.
    #[error("noise multiplier must be finite and >= 0")]
    NoiseMultiplier,
    /// The sampling rate must be in [0, 1].
    #[error("sampling rate must be in [0, 1]")]
    SamplingRate,
    /// δ must be in (0, 1).
    #[error("delta must be in (0, 1)")]
    Delta,
    /// Orders must be finite and > 1, and at least one given.
    #[error("RDP orders must be finite and > 1, at least one")]
    Orders,
}

/// The (ε, δ) guarantee spent so far, for the δ asked.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PrivacySpent {
    /// ε (≥ 0; ∞ when no order gives a bound).
    pub epsilon: f64,
    /// The Rényi order that gave it.
    pub order: f64,
}

/// Accumulated RDP at each order over every mechanism composed so far.
#[derive(Debug, Clone, PartialEq)]
pub struct PrivacyAccountant {
    orders: Vec<f64>,
    rdp: Vec<f64>,
}

/// Opacus's `DEFAULT_ALPHAS`: 1 + x/10 for x in 1..100, then 12..=63.
pub fn default_orders() -> Vec<f64> {
    let fractional = (1..100).map(|x| 1.0 + f64::from(x) / 10.0);
    fractional.chain((12..64).map(f64::from)).collect()
}

/// ε after `rounds` rounds with noise multiplier σ and per-round sampling rate q, at `delta`,
/// over [`default_orders`]. Invalid inputs give ∞ (no guarantee), never an optimistic value.
pub fn epsilon(noise_multiplier: f64, sampling_rate: f64, rounds: u32, delta: f64) -> f64 {
    let mut accountant = PrivacyAccountant::new();
    accountant
        .compose(noise_multiplier, sampling_rate, u64::from(rounds))
        .and_then(|()| accountant.spent(delta))
        .map_or(f64::INFINITY, |spent| spent.epsilon)
}

impl Default for PrivacyAccountant {
    fn default() -> Self {
        Self::new()
    }
}

impl PrivacyAccountant {
    /// Nothing spent yet, over [`default_orders`].
    pub fn new() -> Self {
        Self::with_orders(default_orders()).expect("default orders are valid")
    }

    /// Nothing spent yet, over `orders`.
    pub fn with_orders(orders: Vec<f64>) -> Result<Self, AccountantError> {
        if orders.is_empty() || orders.iter().any(|&a| !(a.is_finite() && a > 1.0)) {
            return Err(AccountantError::Orders);
        }
        let rdp = vec![0.0; orders.len()];
        Ok(Self { orders, rdp })
    }

    /// Adds `rounds` runs of the sampled Gaussian mechanism (σ, q).
    pub fn compose(
        &mut self,
        noise_multiplier: f64,
        sampling_rate: f64,
        rounds: u64,
    ) -> Result<(), AccountantError> {
        check_mechanism(noise_multiplier, sampling_rate)?;
        if rounds == 0 {
            return Ok(());
        }
        for (total, &order) in self.rdp.iter_mut().zip(&self.orders) {
            *total += rounds as f64 * step_rdp(noise_multiplier, sampling_rate, order);
        }
        Ok(())
    }

    /// The orders tracked.
    pub fn orders(&self) -> &[f64] {
        &self.orders
    }

    /// The accumulated RDP at each order.
    pub fn rdp(&self) -> &[f64] {
        &self.rdp
    }

    /// The smallest ε over the orders for `delta` (the first order wins ties).
    pub fn spent(&self, delta: f64) -> Result<PrivacySpent, AccountantError> {
        if !(delta > 0.0 && delta < 1.0) {
            return Err(AccountantError::Delta);
        }
        let mut best = PrivacySpent {
            epsilon: f64::INFINITY,
            order: self.orders[0],
        };
        for (&order, &rdp) in self.orders.iter().zip(&self.rdp) {
            let epsilon = rdp_to_epsilon(order, rdp, delta);
            if epsilon < best.epsilon {
                best = PrivacySpent { epsilon, order };
            }
        }
        best.epsilon = best.epsilon.max(0.0);
        Ok(best)
    }
}

/// Opacus's conversion at one order; 0 when δ alone covers it (δ² > 1 − e^(−RDP), the KL
/// bound dp_accounting applies, which matters only when almost nothing was spent).
fn rdp_to_epsilon(order: f64, rdp: f64, delta: f64) -> f64 {
    if delta * delta + (-rdp).exp_m1() > 0.0 {
        return 0.0;
    }
    rdp - (delta.ln() + order.ln()) / (order - 1.0) + ((order - 1.0) / order).ln()
}

/// RDP at `order` of one run of the sampled Gaussian mechanism (σ, q).
pub fn sampled_gaussian_rdp(
    noise_multiplier: f64,
    sampling_rate: f64,
    order: f64,
) -> Result<f64, AccountantError> {
    check_mechanism(noise_multiplier, sampling_rate)?;
    if !(order.is_finite() && order > 1.0) {
        return Err(AccountantError::Orders);
    }
    Ok(step_rdp(noise_multiplier, sampling_rate, order))
}

fn check_mechanism(noise_multiplier: f64, sampling_rate: f64) -> Result<(), AccountantError> {
    if !(noise_multiplier.is_finite() && noise_multiplier >= 0.0) {
        return Err(AccountantError::NoiseMultiplier);
    }
    if !(0.0..=1.0).contains(&sampling_rate) {
        return Err(AccountantError::SamplingRate);
    }
    Ok(())
}

/// Opacus's `_compute_rdp` for validated inputs.
fn step_rdp(sigma: f64, q: f64, order: f64) -> f64 {
    if q == 0.0 {
        0.0
    } else if sigma == 0.0 {
        f64::INFINITY
    } else if q == 1.0 {
        order / (2.0 * sigma * sigma)
    } else if order.fract() == 0.0 {
        log_a_int(q, sigma, order as u32) / (order - 1.0)
    } else {
        log_a_frac(q, sigma, order) / (order - 1.0)
    }
}

/// ln A_α for integer α: ln Σᵢ C(α, i) qⁱ (1 − q)^(α−i) e^((i² − i)/(2σ²)).
fn log_a_int(q: f64, sigma: f64, alpha: u32) -> f64 {
    let (log_q, log_1mq) = (q.ln(), (-q).ln_1p());
    let mut log_a = f64::NEG_INFINITY;
    let mut log_binom = 0.0;
    for i in 0..=alpha {
        let (i, a) = (f64::from(i), f64::from(alpha));
        let s = log_binom + i * log_q + (a - i) * log_1mq + (i * i - i) / (2.0 * sigma * sigma);
        log_a = log_add(log_a, s);
        log_binom += ((a - i) / (i + 1.0)).ln();
    }
    log_a
}

/// ln A_α for fractional α: the two half-line integrals split at z₀ (Mironov et al., §3.3),
/// each a signed series with generalized binomial coefficients; ∞ if it does not settle.
fn log_a_frac(q: f64, sigma: f64, alpha: f64) -> f64 {
    let (log_q, log_1mq) = (q.ln(), (-q).ln_1p());
    let z0 = sigma * sigma * (1.0 / q - 1.0).ln() + 0.5;
    let scale = std::f64::consts::SQRT_2 * sigma;
    let half = 0.5_f64.ln();
    let (mut a0, mut a1) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
    let (mut log_coef, mut positive) = (0.0, true);
    for i in 0..FRAC_STEPS_MAX {
        let i = i as f64;
        let j = alpha - i;
        let s0 = log_coef
            + i * log_q
            + j * log_1mq
            + (i * i - i) / (2.0 * sigma * sigma)
            + half
            + log_erfc((i - z0) / scale);
        let s1 = log_coef
            + j * log_q
            + i * log_1mq
            + (j * j - j) / (2.0 * sigma * sigma)
            + half
            + log_erfc((z0 - j) / scale);
        let next = if positive {
            Some((log_add(a0, s0), log_add(a1, s1)))
        } else {
            log_sub(a0, s0).zip(log_sub(a1, s1))
        };
        let Some((n0, n1)) = next else {
            return f64::INFINITY;
        };
        (a0, a1) = (n0, n1);
        if s0.max(s1) < -30.0 {
            return log_add(a0, a1);
        }
        let ratio = (alpha - i) / (i + 1.0);
        positive ^= ratio < 0.0;
        log_coef += ratio.abs().ln();
    }
    f64::INFINITY
}
