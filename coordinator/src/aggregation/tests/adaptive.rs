//! FedAdam and FedYogi over two rounds, with Flower's conventions (m = v = 0 at first,
//! FedAdam's bias correction with exponent t + 1, sign(0) = 0).

use super::*;
use crate::aggregation::Adaptive;

const PARAMS: Adaptive = Adaptive {
    eta: 0.1,
    beta1: 0.9,
    beta2: 0.99,
    tau: 0.1,
};

/// Round 1: Δ = ([2, −2, 10] + [0, −2, 10]) / 2 = [1, −2, 10]; round 2: Δ = [−1, 1, 0.5].
fn two_rounds(strategy: &Strategy) -> (Vec<f32>, Vec<f32>, ServerState) {
    let mut state = ServerState::default();
    let r1: [(&[f32], u64); 2] = [(&[2.0, -2.0, 10.0], 1), (&[0.0, -2.0, 10.0], 1)];
    let x1 = round(strategy, None, &r1, &[0.0; 3], &mut state).unwrap();
    let r2: [(&[f32], u64); 1] = [(&[-1.0, 1.0, 0.5], 5)];
    let x2 = round(strategy, None, &r2, &x1, &mut state).unwrap();
    (x1, x2, state)
}

#[test]
fn fedadam_two_rounds() {
    let (x1, x2, state) = two_rounds(&Strategy::FedAdam(PARAMS));
    // Round 1 (t = 1): m = 0.1·Δ = [0.1, −0.2, 1]; v = 0.01·Δ² = [0.01, 0.04, 1]
    //   η₁ = 0.1·√(1 − 0.99²)/(1 − 0.9²) = 0.1·√0.0199/0.19 = 0.0742460
    //   m/(√v + τ) = [0.1/0.2, −0.2/0.3, 1/1.1] = [0.5, −0.666667, 0.909091]
    //   x₁ = η₁·[0.5, −0.666667, 0.909091] = [0.0371230, −0.0494973, 0.0674963]
    assert_close(&x1, &[0.0371230, -0.0494973, 0.0674963], 1e-6);
    // Round 2 (t = 2): m = 0.9·m + 0.1·[−1, 1, 0.5] = [−0.01, −0.08, 0.95]
    //   v = 0.99·v + 0.01·[1, 1, 0.25] = [0.0199, 0.0496, 0.9925]
    //   η₂ = 0.1·√(1 − 0.99³)/(1 − 0.9³) = 0.1·√0.029701/0.271 = 0.0635940
    //   x₂ = x₁ + η₂·[−0.01/(0.141067 + 0.1), −0.08/(0.222711 + 0.1), 0.95/(0.996243 + 0.1)]
    //      = [0.0344850, −0.0652623, 0.1226067]
    assert_close(&x2, &[0.0344850, -0.0652623, 0.1226067], 1e-6);
    assert_close(&state.m, &[-0.01, -0.08, 0.95], 1e-7);
    assert_close(&state.v, &[0.0199, 0.0496, 0.9925], 1e-7);
    assert_eq!(state.steps, 2);
    assert!(state.momentum.is_empty());
}

#[test]
fn fedyogi_two_rounds() {
    let (x1, x2, state) = two_rounds(&Strategy::FedYogi(PARAMS));
    // Round 1: m = [0.1, −0.2, 1]; v = 0 − 0.01·Δ²·sign(0 − Δ²) = 0.01·Δ² = [0.01, 0.04, 1]
    //   x₁ = 0.1·[0.5, −0.666667, 0.909091] = [0.05, −0.0666667, 0.0909091]
    assert_close(&x1, &[0.05, -0.0666667, 0.0909091], 1e-6);
    // Round 2: Δ² = [1, 1, 0.25]; sign(v − Δ²) = [−1, −1, +1]
    //   v = [0.01 + 0.01, 0.04 + 0.01, 1 − 0.0025] = [0.02, 0.05, 0.9975]   (Adam: 0.9925)
    //   m = [−0.01, −0.08, 0.95]
    //   x₂ = x₁ + 0.1·[−0.01/(0.141421 + 0.1), −0.08/(0.223607 + 0.1), 0.95/(0.998749 + 0.1)]
    //      = [0.0458579, −0.0913880, 0.1773710]
    assert_close(&x2, &[0.0458579, -0.0913880, 0.1773710], 1e-6);
    assert_close(&state.v, &[0.02, 0.05, 0.9975], 1e-7);
    assert_eq!(state.steps, 2);
}

#[test]
fn a_state_of_another_dimension_is_refused_and_kept() {
    let mut state = ServerState {
        steps: 4,
        m: vec![0.0; 5],
        v: vec![0.0; 5],
        ..ServerState::default()
    };
    let before = state.clone();
    let updates: [(&[f32], u64); 1] = [(&[1.0, 1.0, 1.0], 1)];
    let err = round(
        &Strategy::FedAdam(PARAMS),
        None,
        &updates,
        &[0.0; 3],
        &mut state,
    );
    assert!(matches!(
        err,
        Err(AggregationError::StateMismatch {
            field: "m",
            expected: 3,
            actual: 5
        })
    ));
    assert_eq!(state, before);
}

#[test]
fn fedyogi_keeps_v_where_it_equals_the_squared_update() {
    // Round 1: Δ = 10 → m = 1, v = 0.01·100 = 1, x₁ = 0.1·1/(1 + 0.1) = 0.0909091
    // Round 2: Δ = 1 → Δ² = 1 = v, sign(0) = 0 (NumPy) → v stays 1 (sign(0) = 1 would give 0.99)
    //   m = 0.9 + 0.1 = 1, x₂ = x₁ + 0.1·1/(1 + 0.1) = 0.1818182
    let yogi = Strategy::FedYogi(PARAMS);
    let mut state = ServerState::default();
    let x1 = round(&yogi, None, &[(&[10.0], 1)], &[0.0], &mut state).unwrap();
    let x2 = round(&yogi, None, &[(&[1.0], 1)], &x1, &mut state).unwrap();
    assert_eq!(state.v, vec![1.0]);
    assert_close(&x2, &[0.2 / 1.1], 1e-7);
}
