//! The data set and how it is dealt out: the UCI handwritten digits (1,797 8×8 images, ten
//! classes) embedded in the `smartcore` crate, a global test split held out, and the rest split
//! non-IID across the participants by a Dirichlet draw over labels. Never touches the network.
//!
//! ```text
//!   1,797 digits ─► shuffle(seed) ─┬─ 20 % global test set (the final model is scored on it)
//!                                  └─ 80 % ─► per digit: Dirichlet(α) shares over participants
//!                                              ─► each shard: 80 % local train, 20 % local eval
//! ```

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_distr::{Dirichlet, Distribution};

/// Participants the training data is split across.
pub const PARTICIPANTS: usize = 10;
/// Digits 0–9.
pub const CLASSES: usize = 10;
/// Share of the data set held out as the global test set.
const TEST_SHARE: f64 = 0.2;
/// Share of each participant's shard kept for its local evaluation.
const LOCAL_EVAL_SHARE: f64 = 0.2;
/// Dirichlet concentration of the label split: small means each participant sees few digits.
const DIRICHLET_ALPHA: f64 = 0.5;
/// Fewest examples a shard may have; a draw giving less is drawn again.
const SHARD_EXAMPLES_MIN: usize = 40;
/// Largest pixel intensity of the digits.
const PIXEL_MAX: f32 = 16.0;

/// Labelled examples, features row-major.
#[derive(Debug, Clone, Default)]
pub struct Examples {
    /// Features per example.
    pub features: usize,
    /// `len() × features` values.
    pub x: Vec<f32>,
    /// One label per example, `0..CLASSES`.
    pub y: Vec<usize>,
}

impl Examples {
    /// Examples held.
    pub fn len(&self) -> usize {
        self.y.len()
    }

    /// The features of example `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.x[i * self.features..(i + 1) * self.features]
    }

    /// How many examples of each class.
    pub fn class_counts(&self) -> [usize; CLASSES] {
        let mut counts = [0; CLASSES];
        self.y.iter().for_each(|&c| counts[c] += 1);
        counts
    }

    /// The examples at `indices`, in that order.
    fn select(&self, indices: &[usize]) -> Self {
        let mut out = Self {
            features: self.features,
            x: Vec::with_capacity(indices.len() * self.features),
            y: Vec::with_capacity(indices.len()),
        };
        for &i in indices {
            out.x.extend_from_slice(self.row(i));
            out.y.push(self.y[i]);
        }
        out
    }
}

/// One participant's data.
#[derive(Debug, Clone)]
pub struct Shard {
    /// What it trains on.
    pub train: Examples,
    /// What it evaluates received models on.
    pub eval: Examples,
}

/// The whole split.
#[derive(Debug)]
pub struct Split {
    /// The global test set.
    pub test: Examples,
    /// One shard per participant.
    pub shards: Vec<Shard>,
}

/// The digits, pixels scaled to [0, 1] by their fixed range (0–16), so no participant needs
/// statistics of anyone else's data.
pub fn load_digits() -> Examples {
    let digits = smartcore::dataset::digits::load_dataset();
    Examples {
        features: digits.num_features,
        x: digits.data.iter().map(|v| v / PIXEL_MAX).collect(),
        y: digits.target.iter().map(|&t| t as usize).collect(),
    }
}

/// Holds out the global test set and splits the rest non-IID, reproducibly from `seed`.
pub fn split(all: &Examples, seed: u64) -> Split {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut order: Vec<usize> = (0..all.len()).collect();
    order.shuffle(&mut rng);
    let test_len = (all.len() as f64 * TEST_SHARE).round() as usize;
    let (test, rest) = order.split_at(test_len);
    let shards = label_skewed_shards(all, rest, &mut rng)
        .into_iter()
        .map(|mut indices| {
            indices.shuffle(&mut rng);
            let eval_len = (indices.len() as f64 * LOCAL_EVAL_SHARE).round() as usize;
            let (eval, train) = indices.split_at(eval_len);
            Shard {
                train: all.select(train),
                eval: all.select(eval),
            }
        })
        .collect();
    Split {
        test: all.select(test),
        shards,
    }
}

/// Splits `indices` into one group per participant: every class is dealt out by shares drawn
/// from Dirichlet(α), drawn again until every group has at least `SHARD_EXAMPLES_MIN`.
fn label_skewed_shards(all: &Examples, indices: &[usize], rng: &mut StdRng) -> Vec<Vec<usize>> {
    let dirichlet = Dirichlet::new([DIRICHLET_ALPHA; PARTICIPANTS]).expect("α > 0");
    let by_class: Vec<Vec<usize>> = (0..CLASSES)
        .map(|c| indices.iter().copied().filter(|&i| all.y[i] == c).collect())
        .collect();
    loop {
        let mut groups = vec![Vec::new(); PARTICIPANTS];
        for members in &by_class {
            let shares = dirichlet.sample(rng);
            deal(members, &shares, &mut groups);
        }
        if groups.iter().all(|g| g.len() >= SHARD_EXAMPLES_MIN) {
            return groups;
        }
    }
}

/// Appends consecutive runs of `members` to `groups`, sized by `shares` (summing to 1).
fn deal(members: &[usize], shares: &[f64], groups: &mut [Vec<usize>]) {
    let mut start = 0;
    let mut cumulative = 0.0;
    for (group, share) in groups.iter_mut().zip(shares) {
        cumulative += share;
        let end = ((cumulative * members.len() as f64).round() as usize).min(members.len());
        group.extend_from_slice(&members[start..end.max(start)]);
        start = end.max(start);
    }
    if let Some(last) = groups.last_mut() {
        last.extend_from_slice(&members[start..]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_split_keeps_every_example_once_and_is_reproducible() {
        let all = load_digits();
        let split = split(&all, 7);
        let held: usize = split.test.len()
            + split
                .shards
                .iter()
                .map(|s| s.train.len() + s.eval.len())
                .sum::<usize>();
        assert_eq!(held, all.len());
        assert_eq!(
            split.shards[3].train.y,
            super::split(&all, 7).shards[3].train.y
        );
    }
}
