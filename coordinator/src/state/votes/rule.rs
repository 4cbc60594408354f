//! [`VoteRule`]: how a vote is decided, and [`verdict`], the decision on the ballots so far —
//! made as soon as the outcome can no longer change.
//!
//! Counts are over the eligible voters, not over the ballots cast. Pure arithmetic: integer
//! counts, and IEEE f64 (identical on every replica) for thresholds and weights.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A decision rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum VoteRule {
    /// An option wins with more than half of the eligible voters.
    Majority,
    /// An option wins with at least `ceil(threshold × eligible)` ballots; threshold in
    /// (0.5, 1].
    Supermajority {
        /// Fraction of the eligible voters.
        threshold: f64,
    },
    /// An option wins when every eligible voter chooses it; a differing ballot fails the vote.
    Unanimous,
    /// An option wins when its voters' weight exceeds `threshold × total weight`.
    Weighted {
        /// Weight of every eligible voter.
        weights: BTreeMap<String, f64>,
        /// Fraction of the total weight to exceed, in [0.5, 1).
        threshold: f64,
    },
    /// Tolerates `f` faulty voters among `n ≥ 3f + 1`: an option wins with
    /// `ceil((n + f + 1) / 2)` matching ballots.
    Byzantine {
        /// Faulty voters tolerated.
        f: u32,
    },
}

/// Where a vote stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The outcome can still change.
    Open,
    /// This option won.
    Decided(String),
    /// No option can win any more; why.
    Failed(String),
}

/// The ballots counted so far, kept up to date ballot by ballot so a verdict costs
/// O(options), not O(ballots).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Tally {
    /// Ballots and weight per option.
    pub per_option: BTreeMap<String, (u32, f64)>,
    /// Ballots counted.
    pub cast: usize,
    /// Their total weight.
    pub cast_weight: f64,
    /// The first ballot that differed from the first one (what breaks unanimity).
    pub first_dissent: Option<(String, String)>,
    /// Weight per option in millionths, compared exactly.
    pub micros_per_option: BTreeMap<String, u64>,
    /// Weight cast in millionths.
    pub cast_micros: u64,
}

/// `x` in millionths, rounded: weights and thresholds are compared in integers, so sums are
/// exact and every replica agrees.
pub fn micros(x: f64) -> u64 {
    (x * 1_000_000.0).round().max(0.0) as u64
}

impl Tally {
    /// Counts `voter`'s ballot for `option`.
    pub fn count(&mut self, rule: &VoteRule, voter: &str, option: &str, first: Option<&str>) {
        let weight = rule.weight(voter);
        let entry = self.per_option.entry(option.to_owned()).or_default();
        entry.0 += 1;
        entry.1 += weight;
        *self.micros_per_option.entry(option.to_owned()).or_default() += micros(weight);
        self.cast += 1;
        self.cast_weight += weight;
        self.cast_micros += micros(weight);
        if first.is_some_and(|first| first != option) && self.first_dissent.is_none() {
            self.first_dissent = Some((voter.to_owned(), option.to_owned()));
        }
    }

    fn of(&self, option: &str) -> (u32, f64) {
        self.per_option.get(option).copied().unwrap_or((0, 0.0))
    }
}

impl VoteRule {
    /// The weight of `voter`'s ballot.
    pub fn weight(&self, voter: &str) -> f64 {
        match self {
            VoteRule::Weighted { weights, .. } => weights.get(voter).copied().unwrap_or(0.0),
            _ => 1.0,
        }
    }

    /// Ballots an option needs out of `eligible` voters (count rules), or `None` for the
    /// weighted rule.
    fn ballots_needed(&self, eligible: usize) -> Option<usize> {
        match self {
            VoteRule::Majority => Some(eligible / 2 + 1),
            VoteRule::Supermajority { threshold } => {
                let scaled = u128::from(micros(*threshold)) * eligible as u128;
                Some((scaled.div_ceil(1_000_000) as usize).max(1))
            }
            VoteRule::Unanimous => Some(eligible),
            VoteRule::Byzantine { f } => Some((eligible + *f as usize + 2) / 2),
            VoteRule::Weighted { .. } => None,
        }
    }

    /// Short description, e.g. "a majority (3 of 5)".
    pub fn describe(&self, eligible: usize) -> String {
        match (self, self.ballots_needed(eligible)) {
            (VoteRule::Majority, Some(n)) => format!("a majority ({n} of {eligible})"),
            (VoteRule::Supermajority { threshold }, Some(n)) => {
                format!("a supermajority of {threshold} ({n} of {eligible})")
            }
            (VoteRule::Unanimous, _) => format!("unanimity ({eligible} of {eligible})"),
            (VoteRule::Byzantine { f }, Some(n)) => {
                format!("a Byzantine quorum tolerating {f} ({n} of {eligible})")
            }
            (VoteRule::Weighted { threshold, .. }, _) => {
                format!("more than {threshold} of the total weight")
            }
            (_, None) => "the rule".to_owned(),
        }
    }
}

/// The verdict on the ballots counted in `tally` among `eligible` voters choosing from
/// `options`.
pub fn verdict(rule: &VoteRule, options: &[String], eligible: usize, tally: &Tally) -> Verdict {
    if let (VoteRule::Unanimous, Some((voter, option))) = (rule, &tally.first_dissent) {
        return Verdict::Failed(format!(
            "unanimity broken by agent '{voter}' choosing '{option}'"
        ));
    }
    let remaining = eligible.saturating_sub(tally.cast) as u32;
    match rule {
        VoteRule::Weighted { weights, threshold } => {
            let total = weights.values().map(|w| micros(*w)).sum::<u64>();
            let remaining = u128::from(total - tally.cast_micros.min(total));
            // An option wins with more than threshold × total: compared in exact integers.
            let bar = u128::from(micros(*threshold)) * u128::from(total);
            let weight_of = |option: &str| {
                u128::from(tally.micros_per_option.get(option).copied().unwrap_or(0)) * 1_000_000
            };
            if let Some(won) = options.iter().find(|o| weight_of(o) > bar) {
                return Verdict::Decided(won.clone());
            }
            let reachable = options
                .iter()
                .any(|o| weight_of(o) + remaining * 1_000_000 > bar);
            let total = total as f64 / 1_000_000.0;
            match reachable {
                true => Verdict::Open,
                false => Verdict::Failed(format!(
                    "no option can exceed {threshold} of the total weight {total}"
                )),
            }
        }
        _ => {
            let needed = rule.ballots_needed(eligible).unwrap_or(usize::MAX) as u32;
            if let Some(won) = options.iter().find(|o| tally.of(o).0 >= needed) {
                return Verdict::Decided(won.clone());
            }
            let reachable = options.iter().any(|o| tally.of(o).0 + remaining >= needed);
            match reachable {
                true => Verdict::Open,
                false => {
                    Verdict::Failed(format!("no option can reach {}", rule.describe(eligible)))
                }
            }
        }
    }
}
