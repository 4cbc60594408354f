//! [`WeightedSum`]: the streaming accumulator of the mean-based strategies (FedAvg, FedAvgM,
//! FedAdam, FedYogi).
//!
//! Holds exactly one f64 running sum of length `dim`, a total weight and a count; an update is
//! folded in and forgotten, so memory is O(dim) whatever the number of participants. f64 rather
//! than f32: summing thousands of weighted f32 updates in f32 loses up to n·2⁻²⁴ relative
//! precision and makes the result depend on arrival order; in f64 both effects stay far below
//! the final f32 rounding.

use super::error::{all_finite, first_non_finite};
use super::{AggregationError, CentralDp};

/// f64 values of the sum per block of [`WeightedSum::add_many`] (32 KiB: the sum's block and
/// each update's stay in the core's cache while the block takes them all).
const SUM_BLOCK: usize = 4096;

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

    /// Folds in updates already checked for length and finiteness, in order. The sum is
    /// walked once, a cache-sized block at a time, each block taking every update in turn: the
    /// same additions in the same order as folding them one by one, with the sum read and
    /// written once rather than once per update.
    pub(crate) fn add_many(&mut self, updates: &[(&[f32], u64)]) {
        let factors: Vec<f64> = updates
            .iter()
            .map(|&(update, num_examples)| {
                let (weight, factor) = match &self.dp {
                    Some(dp) => (1, dp.clip_scale(update)),
                    None => (num_examples, num_examples as f64),
                };
                self.total_weight += u128::from(weight);
                self.count += 1;
                factor
            })
            .collect();
        for (block, sum) in self.sum.chunks_mut(SUM_BLOCK).enumerate() {
            let start = block * SUM_BLOCK;
            for (&(update, _), &factor) in updates.iter().zip(&factors) {
                let part = &update[start..start + sum.len()];
                for (s, &x) in sum.iter_mut().zip(part) {
                    *s += factor * f64::from(x);
                }
            }
        }
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

    /// FedAvg's new model, global + Σ wᵢΔᵢ / Σ wᵢ, in one pass over the model and the sum (the
    /// arithmetic of [`mean`](Self::mean) followed by the plain server step, value for value),
    /// each block checked while it is in the cache. Refuses a global model or a result that is
    /// not finite. `global` must be `dim` long.
    pub(crate) fn step_mean(&self, global: &[f32]) -> Result<Vec<f32>, AggregationError> {
        let total = self.total_weight as f64;
        let mut model = Vec::with_capacity(global.len());
        let (mut global_finite, mut model_finite) = (true, true);
        for (g, s) in global.chunks(SUM_BLOCK).zip(self.sum.chunks(SUM_BLOCK)) {
            let start = model.len();
            model.extend(
                g.iter()
                    .zip(s)
                    .map(|(&x, &s)| (f64::from(x) + s / total) as f32),
            );
            global_finite &= all_finite(g);
            model_finite &= all_finite(&model[start..]);
        }
        if !global_finite {
            let index = first_non_finite(global).unwrap_or_default();
            return Err(AggregationError::NonFinite {
                what: "global model",
                index,
            });
        }
        match model_finite {
            true => Ok(model),
            false => Err(AggregationError::NonFiniteResult {
                index: first_non_finite(&model).unwrap_or_default(),
            }),
        }
    }

    /// The raw sum (for DP, which adds noise before dividing by the count).
    pub(crate) fn into_sum(self) -> Vec<f64> {
        self.sum
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folding_many_at_once_equals_folding_one_by_one() {
        let dim = SUM_BLOCK * 2 + 37;
        let updates: Vec<Vec<f32>> = (0..5)
            .map(|u| {
                (0..dim)
                    .map(|i| ((i * 7 + u * 13) % 101) as f32 * 0.37 - 11.0)
                    .collect()
            })
            .collect();
        let weighted: Vec<(&[f32], u64)> = updates
            .iter()
            .enumerate()
            .map(|(u, v)| (v.as_slice(), u as u64 * 3 + 1))
            .collect();
        let mut together = WeightedSum::new(dim, None);
        together.add_many(&weighted);
        let mut one_by_one = WeightedSum::new(dim, None);
        weighted.iter().for_each(|w| one_by_one.add_many(&[*w]));
        assert_eq!(together.count(), 5);
        assert_eq!(together.total_weight, one_by_one.total_weight);
        assert_eq!(together.mean(), one_by_one.mean(), "bit for bit");
    }

    #[test]
    fn the_one_pass_fedavg_step_equals_the_mean_then_the_plain_step() {
        let dim = SUM_BLOCK + 11;
        let update: Vec<f32> = (0..dim).map(|i| (i % 13) as f32 * 0.1 - 0.6).collect();
        let global: Vec<f32> = (0..dim).map(|i| (i % 5) as f32 * 1.7).collect();
        let mut sum = WeightedSum::new(dim, None);
        sum.add_many(&[(&update, 3), (&global, 7)]);
        let fused = sum.step_mean(&global).unwrap();
        let stepwise = super::super::optimizer::plain_step(&global, &sum.mean()).unwrap();
        assert_eq!(fused, stepwise, "bit for bit");

        let mut sum = WeightedSum::new(dim, None);
        sum.add_many(&[(&update, 1)]);
        let mut broken = global.clone();
        broken[SUM_BLOCK + 3] = f32::INFINITY;
        assert!(matches!(
            sum.step_mean(&broken),
            Err(AggregationError::NonFinite { what: "global model", index }) if index == SUM_BLOCK + 3
        ));
        let mut huge = global.clone();
        huge[5] = f32::MAX;
        let mut up = WeightedSum::new(dim, None);
        up.add_many(&[(&vec![f32::MAX; dim], 1)]);
        assert!(matches!(
            up.step_mean(&huge),
            Err(AggregationError::NonFiniteResult { index: 5 })
        ));
    }
}
