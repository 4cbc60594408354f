//! FedTrimmedAvg (Yin et al., 2018; Flower's `FedTrimmedAvg`): per coordinate, sort the
//! updates' values, drop ⌊beta·n⌋ from each end and average the rest, unweighted (Flower's
//! `_trim_mean`, after SciPy's `trim_mean`). Reads the spilled updates block by block.

use std::io;

use super::spill::SpillFile;

/// Values cut from each end for `n` updates: ⌊beta·n⌋, computed as Flower does.
pub(crate) fn cut_per_end(beta: f64, n: usize) -> usize {
    (beta * n as f64).floor() as usize
}

/// The coordinate-wise trimmed mean of every spilled update, `block` coordinates at a time.
pub(crate) fn aggregate(spill: &mut SpillFile, beta: f64, block: usize) -> io::Result<Vec<f64>> {
    let cut = cut_per_end(beta, spill.count());
    spill.map_coordinates(block, |values| trimmed_mean(values, cut))
}

/// The mean of finite `values` without their `cut` smallest and `cut` largest (reordered in
/// place); needs `2·cut < values.len()`, which beta < 0.5 guarantees.
pub(crate) fn trimmed_mean(values: &mut [f32], cut: usize) -> f64 {
    values.sort_unstable_by(f32::total_cmp);
    let kept = &values[cut..values.len() - cut];
    kept.iter().map(|&x| f64::from(x)).sum::<f64>() / kept.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_table() {
        // (beta, n, cut): 0.2·5 is 1.0000000000000000555 in f64, which floors to 1.
        let cases = [
            (0.0, 5, 0),
            (0.1, 5, 0),
            (0.2, 5, 1),
            (0.25, 4, 1),
            (0.49, 10, 4),
        ];
        for (beta, n, want) in cases {
            assert_eq!(cut_per_end(beta, n), want, "beta {beta}, n {n}");
        }
    }

    #[test]
    fn trims_both_ends() {
        assert_eq!(trimmed_mean(&mut [9.0, 1.0, 2.0, 3.0, -50.0], 1), 2.0);
        assert_eq!(trimmed_mean(&mut [4.0, 2.0], 0), 3.0);
    }
}
