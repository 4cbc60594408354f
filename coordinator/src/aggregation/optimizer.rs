//! The server step: from the round's aggregated update Δ to the new global model, advancing
//! the [`ServerState`] of the stateful strategies. Follows Flower's implementations.
//!
//! ```text
//!   plain (FedAvg, robust):  x ← x + Δ
//!   FedAvgM:                 u ← μ·u + Δ                      x ← x + lr·u
//!   FedAdam:                 m ← β₁m + (1−β₁)Δ   v ← β₂v + (1−β₂)Δ²
//!                            x ← x + η·√(1−β₂ᵗ⁺¹)/(1−β₁ᵗ⁺¹) · m / (√v + τ)
//!   FedYogi:                 m ← β₁m + (1−β₁)Δ   v ← v − (1−β₂)Δ²·sign(v − Δ²)
//!                            x ← x + η · m / (√v + τ)
//! ```
//!
//! Initial state, as in Flower: u, m and v start at zero (so FedAvgM's first u is Δ, Flower's
//! round-1 `momentum_vector = pseudo_gradient`). t is the 1-based number of this step; Flower's
//! FedAdam bias-corrects with exponent `server_round + 1`, i.e. t + 1, which is kept for
//! comparable results (Kingma & Ba would use t). sign(0) = 0, as NumPy's. Arithmetic is f64;
//! the state is stored as f32. A step that would give a non-finite model changes nothing.

use super::{Adaptive, AggregationError, ServerState, Strategy};

/// Applies `strategy`'s server step to `global` with the aggregated update `delta`.
pub(crate) fn server_step(
    strategy: &Strategy,
    global: &[f32],
    delta: &[f64],
    state: &mut ServerState,
) -> Result<Vec<f32>, AggregationError> {
    match strategy {
        Strategy::FedAvgM {
            server_learning_rate,
            momentum,
        } => momentum_step(*server_learning_rate, *momentum, global, delta, state),
        Strategy::FedAdam(params) => adaptive_step(params, Rule::Adam, global, delta, state),
        Strategy::FedYogi(params) => adaptive_step(params, Rule::Yogi, global, delta, state),
        _ => plain_step(global, delta),
    }
}

/// Whether `strategy`'s server step is the plain x + Δ (no server state).
pub(crate) fn is_plain(strategy: &Strategy) -> bool {
    !matches!(
        strategy,
        Strategy::FedAvgM { .. } | Strategy::FedAdam(_) | Strategy::FedYogi(_)
    )
}

/// x + Δ.
pub(crate) fn plain_step(global: &[f32], delta: &[f64]) -> Result<Vec<f32>, AggregationError> {
    finite_model(global.iter().zip(delta).map(|(&x, d)| f64::from(x) + d))
}

fn momentum_step(
    lr: f64,
    mu: f64,
    global: &[f32],
    delta: &[f64],
    state: &mut ServerState,
) -> Result<Vec<f32>, AggregationError> {
    let u = previous("momentum", &state.momentum, delta.len())?;
    let u: Vec<f64> = delta
        .iter()
        .enumerate()
        .map(|(j, d)| mu * u.at(j) + d)
        .collect();
    let model = finite_model(global.iter().zip(&u).map(|(&x, u)| f64::from(x) + lr * u))?;
    state.momentum = to_f32(&u);
    state.steps += 1;
    Ok(model)
}

#[derive(Clone, Copy)]
enum Rule {
    Adam,
    Yogi,
}

fn adaptive_step(
    p: &Adaptive,
    rule: Rule,
    global: &[f32],
    delta: &[f64],
    state: &mut ServerState,
) -> Result<Vec<f32>, AggregationError> {
    let m_old = previous("m", &state.m, delta.len())?;
    let v_old = previous("v", &state.v, delta.len())?;
    let m: Vec<f64> = delta
        .iter()
        .enumerate()
        .map(|(j, d)| p.beta1 * m_old.at(j) + (1.0 - p.beta1) * d)
        .collect();
    let v: Vec<f64> = delta
        .iter()
        .enumerate()
        .map(|(j, d)| second_moment(rule, p.beta2, v_old.at(j), *d))
        .collect();
    let eta = step_size(p, rule, state.steps + 1);
    let model = finite_model(
        (0..delta.len()).map(|j| f64::from(global[j]) + eta * m[j] / (v[j].sqrt() + p.tau)),
    )?;
    state.m = to_f32(&m);
    state.v = to_f32(&v);
    state.steps += 1;
    Ok(model)
}

fn second_moment(rule: Rule, beta2: f64, v: f64, d: f64) -> f64 {
    let d2 = d * d;
    match rule {
        Rule::Adam => beta2 * v + (1.0 - beta2) * d2,
        Rule::Yogi => v - (1.0 - beta2) * d2 * sign(v - d2),
    }
}

/// Flower's effective learning rate for step `t` (1-based).
fn step_size(p: &Adaptive, rule: Rule, t: u64) -> f64 {
    match rule {
        Rule::Adam => {
            let e = t as f64 + 1.0;
            p.eta * (1.0 - p.beta2.powf(e)).sqrt() / (1.0 - p.beta1.powf(e))
        }
        Rule::Yogi => p.eta,
    }
}

/// NumPy's sign: −1, 0 or 1.
fn sign(x: f64) -> f64 {
    if x == 0.0 {
        0.0
    } else {
        x.signum()
    }
}

/// A stored state vector as read by a step: zeros while it is empty (fresh).
#[derive(Clone, Copy)]
struct Previous<'a>(&'a [f32]);

impl Previous<'_> {
    fn at(self, j: usize) -> f64 {
        self.0.get(j).map_or(0.0, |&x| f64::from(x))
    }
}

/// Checks a stored vector is fresh (empty) or of the model's dimension.
fn previous<'a>(
    field: &'static str,
    stored: &'a [f32],
    dim: usize,
) -> Result<Previous<'a>, AggregationError> {
    if !stored.is_empty() && stored.len() != dim {
        return Err(AggregationError::StateMismatch {
            field,
            expected: dim,
            actual: stored.len(),
        });
    }
    Ok(Previous(stored))
}

fn finite_model(values: impl Iterator<Item = f64>) -> Result<Vec<f32>, AggregationError> {
    let model: Vec<f32> = values.map(|x| x as f32).collect();
    match model.iter().position(|x| !x.is_finite()) {
        Some(index) => Err(AggregationError::NonFiniteResult { index }),
        None => Ok(model),
    }
}

fn to_f32(values: &[f64]) -> Vec<f32> {
    values.iter().map(|&x| x as f32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numpy_sign() {
        assert_eq!(
            [sign(-2.0), sign(0.0), sign(-0.0), sign(3.0)],
            [-1.0, 0.0, 0.0, 1.0]
        );
    }

    #[test]
    fn non_finite_step_changes_nothing() {
        let strategy = Strategy::FedAvgM {
            server_learning_rate: 1.0,
            momentum: 0.5,
        };
        let mut state = ServerState::default();
        let err = server_step(
            &strategy,
            &[f32::MAX, 0.0],
            &[f64::from(f32::MAX), 1.0],
            &mut state,
        );
        assert!(matches!(
            err,
            Err(AggregationError::NonFiniteResult { index: 0 })
        ));
        assert_eq!(state, ServerState::default());
    }

    #[test]
    fn state_of_wrong_length_is_refused() {
        let mut state = ServerState {
            momentum: vec![1.0; 3],
            ..ServerState::default()
        };
        let strategy = Strategy::FedAvgM {
            server_learning_rate: 1.0,
            momentum: 0.5,
        };
        let err = server_step(&strategy, &[0.0; 2], &[0.0; 2], &mut state).unwrap_err();
        assert!(matches!(
            err,
            AggregationError::StateMismatch {
                field: "momentum",
                expected: 2,
                actual: 3
            }
        ));
    }
}
