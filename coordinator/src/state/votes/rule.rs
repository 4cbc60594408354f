//! [`VoteRule`]: how a vote is decided, and [`verdict`], the decision on the ballots so far —
//! made as soon as the outcome can no longer change.
//!
//! Counts are over the eligible voters, not over the ballots cast. Pure arithmetic: integer
//! counts, and IEEE f64 (identical on every replica) for thresholds and weights.

use std::collections::{BTreeMap, BTreeSet};

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

/// One counted ballot.
#[derive(Debug, Clone, Copy)]
pub struct Cast<'a> {
    /// The voter.
    pub voter: &'a str,
    /// The option chosen.
    pub option: &'a str,
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
                Some(((threshold * eligible as f64).ceil() as usize).max(1))
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

/// The verdict on `ballots` (in the order cast) among `eligible` voters choosing from
/// `options`.
pub fn verdict(
    rule: &VoteRule,
    options: &[String],
    eligible: &[String],
    ballots: &[Cast<'_>],
) -> Verdict {
    if let VoteRule::Unanimous = rule {
        if let Some(first) = ballots.first() {
            if let Some(other) = ballots.iter().find(|b| b.option != first.option) {
                return Verdict::Failed(format!(
                    "unanimity broken by agent '{}' choosing '{}'",
                    other.voter, other.option
                ));
            }
        }
    }
    let mut count: BTreeMap<&str, (usize, f64)> = BTreeMap::new();
    for ballot in ballots {
        let entry = count.entry(ballot.option).or_default();
        entry.0 += 1;
        entry.1 += rule.weight(ballot.voter);
    }
    let remaining = eligible.len() - ballots.len().min(eligible.len());
    let tally = |option: &str| count.get(option).copied().unwrap_or((0, 0.0));
    match rule {
        VoteRule::Weighted { weights, threshold } => {
            let cast: BTreeSet<&str> = ballots.iter().map(|b| b.voter).collect();
            let remaining_weight: f64 = eligible
                .iter()
                .filter(|voter| !cast.contains(voter.as_str()))
                .map(|voter| rule.weight(voter))
                .sum();
            let total: f64 = weights.values().sum();
            let bar = threshold * total;
            if let Some(won) = options.iter().find(|o| tally(o).1 > bar) {
                return Verdict::Decided(won.clone());
            }
            let reachable = options.iter().any(|o| tally(o).1 + remaining_weight > bar);
            match reachable {
                true => Verdict::Open,
                false => Verdict::Failed(format!(
                    "no option can exceed {threshold} of the total weight {total}"
                )),
            }
        }
        _ => {
            let needed = rule.ballots_needed(eligible.len()).unwrap_or(usize::MAX);
            if let Some(won) = options.iter().find(|o| tally(o).0 >= needed) {
                return Verdict::Decided(won.clone());
            }
            let reachable = options.iter().any(|o| tally(o).0 + remaining >= needed);
            match reachable {
                true => Verdict::Open,
                false => Verdict::Failed(format!(
                    "no option can reach {}",
                    rule.describe(eligible.len())
                )),
            }
        }
    }
}
