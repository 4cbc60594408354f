//! [`AggregationError`]: every way building, feeding or finishing a round can fail.
//!
//! Three kinds, kept apart so the caller can map them: a bad configuration (strategy, DP or
//! dimension), a rejected input (an update, a sum, the global model or the server state), and a
//! broken node (the spill file failed). A rejected update never changes the aggregate.

use thiserror::Error;

/// Why aggregation could not go on.
#[derive(Debug, Error)]
pub enum AggregationError {
    // --- configuration ---
    /// A strategy or DP parameter is out of its range.
    #[error("invalid parameter `{field}`: {reason}")]
    InvalidParameter {
        /// The parameter, e.g. `"beta"` or `"clip_norm"`.
        field: &'static str,
        /// The range it must be in.
        reason: &'static str,
    },
    /// A model must have at least one parameter.
    #[error("model dimension must be at least 1")]
    ZeroDimension,
    /// Central DP needs a mean of clipped updates; robust strategies have none.
    #[error("central DP works with FedAvg, FedAvgM, FedAdam and FedYogi, not {strategy}")]
    DpUnsupported {
        /// The strategy's name.
        strategy: &'static str,
    },
    /// Only mean-based strategies can work from a plain sum of updates.
    #[error("summed (secure) aggregation works with FedAvg, FedAvgM, FedAdam and FedYogi, not {strategy}")]
    SummedUnsupported {
        /// The strategy's name.
        strategy: &'static str,
    },

    // --- rejected input ---
    /// A vector does not have the model's dimension.
    #[error("{what} has {actual} values, the model has {expected}")]
    WrongLength {
        /// `"update"`, `"sum"` or `"global model"`.
        what: &'static str,
        /// The model dimension.
        expected: usize,
        /// The vector's length.
        actual: usize,
    },
    /// A vector holds NaN or an infinity.
    #[error("{what} value at index {index} is not finite")]
    NonFinite {
        /// `"update"`, `"sum"` or `"global model"`.
        what: &'static str,
        /// The first offending index.
        index: usize,
    },
    /// Every update must be backed by at least one example.
    #[error("num_examples must be at least 1")]
    ZeroWeight,
    /// `finish` or `apply_summed` was called with nothing to aggregate.
    #[error("no updates to aggregate")]
    NoUpdates,
    /// Krum is only defined for n ≥ 2f + 3.
    #[error("Krum with f = {f} needs at least {needed} updates, got {got}")]
    TooFewForKrum {
        /// Tolerated Byzantine updates.
        f: u32,
        /// 2f + 3.
        needed: u64,
        /// Updates added.
        got: usize,
    },
    /// Multi-Krum cannot keep more updates than were added.
    #[error("Multi-Krum keeps {multi_m} updates, only {got} were added")]
    MultiKrumTooLarge {
        /// Updates to average.
        multi_m: u32,
        /// Updates added.
        got: usize,
    },
    /// A server-state vector has neither length 0 (fresh) nor the model's dimension.
    #[error("server state `{field}` has {actual} values, expected 0 or {expected}")]
    StateMismatch {
        /// `"momentum"`, `"m"` or `"v"`.
        field: &'static str,
        /// The model dimension.
        expected: usize,
        /// The stored length.
        actual: usize,
    },
    /// The step would produce NaN or an infinity (overflowing f32 or a corrupt state); nothing
    /// was changed.
    #[error("new global model is not finite at index {index}")]
    NonFiniteResult {
        /// The first offending index.
        index: usize,
    },

    // --- node is broken ---
    /// Writing or reading the spill file failed.
    #[error("spill file {operation} failed: {source}")]
    Spill {
        /// `"create"`, `"write"` or `"read"`.
        operation: &'static str,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl AggregationError {
    /// True when the node itself failed (the spill file), as opposed to a bad configuration, a
    /// refused input or a round that cannot finish yet.
    pub fn is_node_broken(&self) -> bool {
        matches!(self, Self::Spill { .. })
    }

    pub(crate) fn spill(operation: &'static str) -> impl FnOnce(std::io::Error) -> Self {
        move |source| Self::Spill { operation, source }
    }
}

/// Checks that `values` has `dim` finite entries; `what` names the vector in the error.
/// Whether every value is finite: one pass without short-circuiting, so that it vectorizes.
pub fn all_finite<T: Copy + Into<f64>>(values: &[T]) -> bool {
    values
        .iter()
        .fold(true, |all, &x| all & x.into().is_finite())
}

/// Checks that `values` has `dim` entries; `what` names the vector in the error.
pub(crate) fn check_length<T>(
    what: &'static str,
    values: &[T],
    dim: usize,
) -> Result<(), AggregationError> {
    match values.len() == dim {
        true => Ok(()),
        false => Err(AggregationError::WrongLength {
            what,
            expected: dim,
            actual: values.len(),
        }),
    }
}

/// The index of the first value of `values` that is not finite, if any.
pub fn first_non_finite<T: Copy + Into<f64>>(values: &[T]) -> Option<usize> {
    match all_finite(values) {
        true => None,
        false => values.iter().position(|&x| !x.into().is_finite()),
    }
}

pub(crate) fn check_vector<T: Copy + Into<f64>>(
    what: &'static str,
    values: &[T],
    dim: usize,
) -> Result<(), AggregationError> {
    check_length(what, values, dim)?;
    match first_non_finite(values) {
        None => Ok(()),
        Some(index) => Err(AggregationError::NonFinite { what, index }),
    }
}
