//! FedMedian (Yin et al., 2018; Flower's `FedMedian`): the coordinate-wise median of the
//! updates, unweighted; with an even count, the mean of the two middle values (as NumPy's
//! `median`). Reads the spilled updates block by block.

use std::io;

use super::spill::SpillFile;

/// The coordinate-wise median of every spilled update, `block` coordinates at a time.
pub(crate) fn aggregate(spill: &mut SpillFile, block: usize) -> io::Result<Vec<f64>> {
    spill.map_coordinates(block, median)
}

/// The median of finite, non-empty `values` (reordered in place).
pub(crate) fn median(values: &mut [f32]) -> f64 {
    let (n, mid) = (values.len(), values.len() / 2);
    let (lower, upper, _) = values.select_nth_unstable_by(mid, f32::total_cmp);
    let upper = f64::from(*upper);
    if n % 2 == 1 {
        return upper;
    }
    let lower = lower.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    (f64::from(lower) + upper) / 2.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_table() {
        let cases: [(&[f32], f64); 5] = [
            (&[7.0], 7.0),
            (&[3.0, 1.0], 2.0),
            (&[5.0, -1.0, 2.0], 2.0),
            (&[4.0, 1.0, 3.0, 2.0], 2.5),
            (&[1.0, 1.0, 9.0, 1.0], 1.0),
        ];
        for (values, want) in cases {
            assert_eq!(median(&mut values.to_vec()), want, "{values:?}");
        }
    }
}
