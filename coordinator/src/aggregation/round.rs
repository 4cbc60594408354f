//! [`RoundAggregator`]: one round's updates, folded in as they arrive, then turned into the new
//! global model; and [`apply_summed`], the same ending for a round whose updates were summed
//! by secure aggregation.
//!
//! Branching lives here; the leaves ([`WeightedSum`], [`SpillFile`], the rule files and the
//! server step) are pure functions on data. An update is validated completely before anything
//! is changed, so a refused update leaves the aggregate as it was.

use std::path::Path;

use rand::Rng;

use super::error::{check_length, check_vector};
use super::spill::{block_coords, SpillFile};
use super::weighted_sum::WeightedSum;
use super::{dp, krum, median, optimizer, trimmed_mean};
use super::{AggregationError, CentralDp, ServerState, Strategy};

/// Aggregates one round of updates Δᵢ = local − global.
#[derive(Debug)]
pub struct RoundAggregator {
    strategy: Strategy,
    dim: usize,
    dp: Option<CentralDp>,
    updates: Updates,
}

/// Where the updates go: folded into one sum, or spilled whole for the robust rules.
#[derive(Debug)]
enum Updates {
    Streamed(WeightedSum),
    Spilled(SpillFile),
}

impl RoundAggregator {
    /// An empty round for models of `dim` parameters; robust strategies spill to the system
    /// temp directory. Central DP is refused for robust strategies.
    pub fn new(
        strategy: &Strategy,
        dim: usize,
        dp: Option<CentralDp>,
    ) -> Result<Self, AggregationError> {
        Self::build(strategy, dim, dp, None)
    }

    /// As [`new`](Self::new), spilling into `spill_dir` (e.g. the node's data directory).
    pub fn new_in(
        strategy: &Strategy,
        dim: usize,
        dp: Option<CentralDp>,
        spill_dir: &Path,
    ) -> Result<Self, AggregationError> {
        Self::build(strategy, dim, dp, Some(spill_dir))
    }

    fn build(
        strategy: &Strategy,
        dim: usize,
        dp: Option<CentralDp>,
        spill_dir: Option<&Path>,
    ) -> Result<Self, AggregationError> {
        check_config(strategy, dim, dp.as_ref())?;
        if dp.is_some() && strategy.is_robust() {
            return Err(AggregationError::DpUnsupported {
                strategy: strategy.name(),
            });
        }
        let updates = if strategy.is_robust() {
            let spill = SpillFile::create(dim, spill_dir);
            Updates::Spilled(spill.map_err(AggregationError::spill("create"))?)
        } else {
            Updates::Streamed(WeightedSum::new(dim, dp))
        };
        Ok(Self {
            strategy: *strategy,
            dim,
            dp,
            updates,
        })
    }

    /// Folds one update in, weighted by `num_examples` (ignored under DP and by the robust
    /// rules, which weigh updates equally). Refuses a wrong length, a non-finite value or a zero
    /// weight without changing the aggregate.
    pub fn add(&mut self, update: &[f32], num_examples: u64) -> Result<(), AggregationError> {
        let mut results = self.add_many(&[(update, num_examples)]);
        results.pop().unwrap_or(Ok(()))
    }

    /// Folds several updates in, in order, each refused or taken as by [`add`](Self::add); a
    /// refused one changes nothing. Streamed sums take the accepted ones in one pass.
    pub fn add_many(&mut self, updates: &[(&[f32], u64)]) -> Vec<Result<(), AggregationError>> {
        self.add_many_checking(updates, true)
    }

    /// [`add_many`](Self::add_many) of updates whose values are already known to be finite
    /// (checked as they were received); their length and weight are still checked.
    pub(crate) fn add_many_finite(
        &mut self,
        updates: &[(&[f32], u64)],
    ) -> Vec<Result<(), AggregationError>> {
        self.add_many_checking(updates, false)
    }

    fn add_many_checking(
        &mut self,
        updates: &[(&[f32], u64)],
        check_finite: bool,
    ) -> Vec<Result<(), AggregationError>> {
        let mut results: Vec<Result<(), AggregationError>> = updates
            .iter()
            .map(|&(update, num_examples)| {
                match check_finite {
                    true => check_vector("update", update, self.dim)?,
                    false => check_length("update", update, self.dim)?,
                }
                match num_examples {
                    0 => Err(AggregationError::ZeroWeight),
                    _ => Ok(()),
                }
            })
            .collect();
        let accepted = updates.iter().zip(&results).filter(|(_, r)| r.is_ok());
        match &mut self.updates {
            Updates::Streamed(sum) => {
                let accepted: Vec<(&[f32], u64)> = accepted.map(|(u, _)| *u).collect();
                sum.add_many(&accepted);
            }
            Updates::Spilled(spill) => {
                let appended: Vec<_> = accepted
                    .map(|(&(update, _), _)| spill.append(update))
                    .collect();
                let mut appended = appended.into_iter();
                for result in results.iter_mut().filter(|r| r.is_ok()) {
                    if let Some(Err(error)) = appended.next() {
                        *result = Err(AggregationError::spill("write")(error));
                    }
                }
            }
        }
        results
    }

    /// Updates folded in so far.
    pub fn updates(&self) -> usize {
        match &self.updates {
            Updates::Streamed(sum) => sum.count(),
            Updates::Spilled(spill) => spill.count(),
        }
    }

    /// The model dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The round's strategy.
    pub fn strategy(&self) -> &Strategy {
        &self.strategy
    }

    /// f64 values held in RAM between updates: `dim` when streaming, 0 when spilling.
    #[cfg(test)]
    pub(crate) fn held_values(&self) -> usize {
        match &self.updates {
            Updates::Streamed(sum) => sum.held_values(),
            Updates::Spilled(_) => 0,
        }
    }

    /// Computes the new global model (global + aggregated step) and advances `state`. `rng`
    /// is drawn from only for DP noise. On error `state` is unchanged.
    pub fn finish<R: Rng + ?Sized>(
        self,
        global: &[f32],
        state: &mut ServerState,
        rng: &mut R,
    ) -> Result<Vec<f32>, AggregationError> {
        check_length("global model", global, self.dim)?;
        if self.updates() == 0 {
            return Err(AggregationError::NoUpdates);
        }
        if let (Updates::Streamed(sum), None, true) =
            (&self.updates, &self.dp, optimizer::is_plain(&self.strategy))
        {
            return sum.step_mean(global);
        }
        check_vector("global model", global, self.dim)?;
        match self.updates {
            Updates::Streamed(sum) => {
                let delta = match &self.dp {
                    Some(dp) => {
                        let count = sum.count();
                        dp::noisy_mean(sum.into_sum(), count, Some(dp), rng)
                    }
                    None => sum.mean(),
                };
                optimizer::server_step(&self.strategy, global, &delta, state)
            }
            Updates::Spilled(mut spill) => {
                let delta = robust_delta(&self.strategy, &mut spill)?;
                optimizer::plain_step(global, &delta)
            }
        }
    }
}

/// The aggregated update of a robust strategy over the spilled updates.
fn robust_delta(strategy: &Strategy, spill: &mut SpillFile) -> Result<Vec<f64>, AggregationError> {
    let block = block_coords(spill.count());
    let read = AggregationError::spill("read");
    match *strategy {
        Strategy::FedMedian => median::aggregate(spill, block).map_err(read),
        Strategy::FedTrimmedAvg { beta } => {
            trimmed_mean::aggregate(spill, beta, block).map_err(read)
        }
        Strategy::Krum { f, multi_m } => krum::aggregate(spill, f, multi_m, block),
        _ => unreachable!("only robust strategies spill"),
    }
}

/// The end of a securely aggregated round: the leader sees only `sum` = Σ Δᵢ of `count`
/// updates (each already clipped to `dp.clip_norm` by its client when `dp` is set — the leader
/// cannot check that). Weighs updates equally: Δ = (sum [+ N(0, (σC)²)]) / count, then the
/// strategy's server step. FedAvg, FedAvgM, FedAdam and FedYogi only.
pub fn apply_summed<R: Rng + ?Sized>(
    strategy: &Strategy,
    sum: &[f64],
    count: usize,
    dp: Option<CentralDp>,
    global: &[f32],
    state: &mut ServerState,
    rng: &mut R,
) -> Result<Vec<f32>, AggregationError> {
    let dim = global.len();
    check_config(strategy, dim, dp.as_ref())?;
    if strategy.is_robust() {
        return Err(AggregationError::SummedUnsupported {
            strategy: strategy.name(),
        });
    }
    check_vector("sum", sum, dim)?;
    check_vector("global model", global, dim)?;
    if count == 0 {
        return Err(AggregationError::NoUpdates);
    }
    let delta = dp::noisy_mean(sum.to_vec(), count, dp.as_ref(), rng);
    optimizer::server_step(strategy, global, &delta, state)
}

fn check_config(
    strategy: &Strategy,
    dim: usize,
    dp: Option<&CentralDp>,
) -> Result<(), AggregationError> {
    strategy.validate()?;
    if dim == 0 {
        return Err(AggregationError::ZeroDimension);
    }
    dp.map_or(Ok(()), CentralDp::validate)
}
