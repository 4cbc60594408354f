//! [`WeightedSum`]: the streaming accumulator of the mean-based strategies (FedAvg, FedAvgM,
//! FedAdam, FedYogi).
//!
//! Holds exactly one f64 running sum of length `dim`, a total weight and a count; an update is
//! folded in and forgotten, so memory is O(dim) whatever the number of participants. f64 rather
//! than f32: summing thousands of weighted f32 updates in f32 loses up to n·2⁻²⁴ relative
//! precision and makes the result depend on arrival order; in f64 both effects stay far below
//! the final f32 rounding.

use super::CentralDp;

/// Σ wᵢ·Δᵢ and Σ wᵢ over the updates seen so far.
#[derive(Debug)]
pub(crate) struct WeightedSum {
    sum: Vec<f64>,
    total_weight: u128,
    count: usize,
    dp: Option<CentralDp>,
}

impl WeightedSum {
    /// An empty sum; with `dp`, updates are clipped and weighted equally.
    pub(crate) fn new(dim: usize, dp: Option<CentralDp>) -> Self {
        Self {
            sum: vec![0.0; dim],
            total_weight: 0,
            count: 0,
            dp,
        }
    }

    /// Folds in an update already checked for length and finiteness.
    pub(crate) fn add(&mut self, update: &[f32], num_examples: u64) {
        let (weight, factor) = match &self.dp {
            Some(dp) => (1, dp.clip_scale(update)),
            None => (num_examples, num_examples as f64),
        };
        for (s, &x) in self.sum.iter_mut().zip(update) {
            *s += factor * f64::from(x);
        }
        self.total_weight += u128::from(weight);
        self.count += 1;
    }

    pub(crate) fn count(&self) -> usize {
        self.count
    }

    /// Values held, whatever the number of updates: always `dim`.
    #[cfg(test)]
    pub(crate) fn held_values(&self) -> usize {
        self.sum.len()
    }

    /// Σ wᵢΔᵢ / Σ wᵢ.
    pub(crate) fn mean(mut self) -> Vec<f64> {
        let total = self.total_weight as f64;
        self.sum.iter_mut().for_each(|s| *s /= total);
        self.sum
    }

    /// The raw sum (for DP, which adds noise before dividing by the count).
    pub(crate) fn into_sum(self) -> Vec<f64> {
        self.sum
    }
}
