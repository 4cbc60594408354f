//! End-to-end tests of each strategy through [`RoundAggregator`], against hand-computed
//! results on tiny vectors. Shared fixtures here; one file per strategy or concern.

mod accountant;
mod adaptive;
mod dp;
mod fedavg;
mod fedavgm;
mod krum;
mod median;
mod robustness;
mod state;
mod summed;
mod trimmed_mean;

use rand::rngs::StdRng;
use rand::SeedableRng;

use super::{AggregationError, CentralDp, RoundAggregator, ServerState, Strategy};

/// A seeded rng; the seed is printed so a failure can be replayed.
pub(super) fn rng(seed: u64) -> StdRng {
    println!("rng seed {seed}");
    StdRng::seed_from_u64(seed)
}

/// One round: `updates` as (Δ, num_examples), finished against `global`.
pub(super) fn round(
    strategy: &Strategy,
    dp: Option<CentralDp>,
    updates: &[(&[f32], u64)],
    global: &[f32],
    state: &mut ServerState,
) -> Result<Vec<f32>, AggregationError> {
    let mut aggregator = RoundAggregator::new(strategy, global.len(), dp)?;
    for (update, n) in updates {
        aggregator.add(update, *n)?;
    }
    aggregator.finish(global, state, &mut rng(1))
}

/// A stateless round that must succeed.
pub(super) fn run(strategy: &Strategy, updates: &[(&[f32], u64)], global: &[f32]) -> Vec<f32> {
    round(strategy, None, updates, global, &mut ServerState::default()).unwrap()
}

/// Asserts `got` equals `want` within `tol` in every coordinate.
#[track_caller]
pub(super) fn assert_close(got: &[f32], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "lengths differ: {got:?} vs {want:?}");
    for (j, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            (f64::from(g) - w).abs() <= tol,
            "index {j}: got {g}, want {w} (all: {got:?})"
        );
    }
}
