//! Federated-learning aggregation: the server side of a round, from the participants' updates
//! to the next global model.
//!
//! A model is a flat `f32` vector of `dim` parameters. Each participant sends its update
//! Δᵢ = local − global with a weight `num_examples`. This module owns the aggregation rules
//! (Flower-compatible FedAvg, FedAvgM, FedAdam, FedYogi, FedMedian, FedTrimmedAvg, Krum /
//! Multi-Krum), server-side central DP with its privacy accountant, and the server-optimizer
//! state carried between rounds as data ([`ServerState`]). It must stay pure: no clock, no
//! network, no global rng — randomness enters only through the `rng` argument — and the only
//! I/O is the anonymous spill file of the robust rules.
//!
//! ```text
//!   add(Δᵢ, nᵢ) ─► check length, finite, nᵢ ≥ 1 ─┬─► WeightedSum: one f64 sum, O(dim)
//!                  [DP: clip to ‖Δᵢ‖ ≤ C, nᵢ → 1]  │     FedAvg · FedAvgM · FedAdam · FedYogi
//!                                                └─► SpillFile: every Δᵢ on disk
//!                                                      FedMedian · FedTrimmedAvg · Krum
//!   finish(global, state, rng):
//!     WeightedSum ─► mean [DP: sum + N(0, (σC)²), ÷ n] ─► server step (optimizer) ─► new model
//!     SpillFile   ─► block by block: median | trimmed mean | Krum ─► global + Δ ─► new model
//!   apply_summed(Σ Δᵢ from secure aggregation, n) ─► ÷ n [DP noise first] ─► server step
//! ```
//!
//! Memory: streaming rules hold O(dim); robust rules O(n × block + dim) while finishing, plus
//! Krum's n × n distances. Results are computed in f64 and rounded to f32 once.

pub mod accountant;
mod dp;
mod error;
mod krum;
mod median;
mod optimizer;
mod round;
mod special;
mod spill;
mod state;
mod strategy;
mod trimmed_mean;
mod weighted_sum;

#[cfg(test)]
mod tests;

pub use accountant::{epsilon, AccountantError, PrivacyAccountant, PrivacySpent};
pub use dp::CentralDp;
pub use error::{all_finite, first_non_finite, AggregationError};
pub use round::{apply_summed, RoundAggregator};
pub use state::{ServerState, StateDecodeError};
pub use strategy::{Adaptive, Strategy};
