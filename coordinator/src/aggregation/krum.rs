//! Krum and Multi-Krum (Blanchard et al., "Machine Learning with Adversaries: Byzantine
//! Tolerant Gradient Descent", 2017; Flower's `Krum`).
//!
//! ```text
//!   pairwise ‖Δᵢ − Δⱼ‖² (summed block by block) ─► score(i) = Σ of its n − f − 2 smallest
//!   ─► order by (score, index) ─► Krum: Δ of the best; Multi-Krum: mean of the best multi_m
//! ```
//!
//! Unweighted throughout (Flower's Multi-Krum weights the kept updates by `num_examples`; this
//! one follows the paper). Ties go to the lower index, so the result is deterministic. Memory:
//! the n × n distance matrix plus one block of every update.

use super::spill::SpillFile;
use super::AggregationError;

/// The Krum (multi_m ≤ 1) or Multi-Krum aggregate of every spilled update.
pub(crate) fn aggregate(
    spill: &mut SpillFile,
    f: u32,
    multi_m: u32,
    block: usize,
) -> Result<Vec<f64>, AggregationError> {
    let n = spill.count();
    let needed = 2 * u64::from(f) + 3;
    if (n as u64) < needed {
        return Err(AggregationError::TooFewForKrum { f, needed, got: n });
    }
    let keep = multi_m.max(1) as usize;
    if keep > n {
        return Err(AggregationError::MultiKrumTooLarge { multi_m, got: n });
    }
    let distances = squared_distances(spill, block).map_err(AggregationError::spill("read"))?;
    let chosen = best(&scores(&distances, n, n - f as usize - 2), keep);
    mean_of_rows(spill, &chosen, block).map_err(AggregationError::spill("read"))
}

/// The n × n matrix of squared L2 distances, row-major, accumulated block by block in f64.
pub(crate) fn squared_distances(spill: &mut SpillFile, block: usize) -> std::io::Result<Vec<f64>> {
    let n = spill.count();
    let mut distances = vec![0.0; n * n];
    spill.for_each_block(block, |b| {
        for i in 0..n {
            for j in i + 1..n {
                let d = squared_distance(b.row(i), b.row(j));
                distances[i * n + j] += d;
                distances[j * n + i] += d;
            }
        }
    })?;
    Ok(distances)
}

fn squared_distance(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2))
        .sum()
}

/// score(i): the sum of the `closest` smallest distances from i to the other updates.
pub(crate) fn scores(distances: &[f64], n: usize, closest: usize) -> Vec<f64> {
    (0..n)
        .map(|i| {
            let mut others: Vec<f64> = (0..n)
                .filter(|&j| j != i)
                .map(|j| distances[i * n + j])
                .collect();
            others.sort_unstable_by(f64::total_cmp);
            others[..closest].iter().sum()
        })
        .collect()
}

/// Indices of the `keep` lowest scores, lowest first; ties to the lower index.
pub(crate) fn best(scores: &[f64], keep: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]).then(a.cmp(&b)));
    order.truncate(keep);
    order
}

/// The unweighted mean of the updates at `rows`, block by block.
fn mean_of_rows(spill: &mut SpillFile, rows: &[usize], block: usize) -> std::io::Result<Vec<f64>> {
    let mut out = Vec::new();
    let k = rows.len() as f64;
    spill.for_each_block(block, |b| {
        debug_assert_eq!(out.len(), b.start);
        for j in 0..b.len {
            let sum: f64 = rows.iter().map(|&i| f64::from(b.row(i)[j])).sum();
            out.push(sum / k);
        }
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_and_ties() {
        // Points 0, 1, 2, 3, 4 on a line; squared distances |i − j|²; 2 closest each.
        let n = 5;
        let d: Vec<f64> = (0..n * n)
            .map(|k| ((k / n) as f64 - (k % n) as f64).powi(2))
            .collect();
        // 0: 1 + 4; 1: 1 + 1; 2: 1 + 1; 3: 1 + 1; 4: 1 + 4.
        assert_eq!(scores(&d, n, 2), vec![5.0, 2.0, 2.0, 2.0, 5.0]);
        assert_eq!(best(&[5.0, 2.0, 2.0, 2.0, 5.0], 2), vec![1, 2]);
        assert_eq!(best(&[5.0, 2.0, 2.0, 2.0, 5.0], 5), vec![1, 2, 3, 0, 4]);
    }
}
