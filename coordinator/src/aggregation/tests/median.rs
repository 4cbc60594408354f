//! FedMedian: odd and even counts, and a model larger than one spill block.

use super::*;
use crate::aggregation::spill::BLOCK_COORDS_MAX;

#[test]
fn odd_count_takes_the_middle_value() {
    // coord 0: {1, 3, 2} → 2; coord 1: {5, 2, 9} → 5; coord 2: {−1, −3, 0} → −1
    let updates: [(&[f32], u64); 3] = [
        (&[1.0, 5.0, -1.0], 1),
        (&[3.0, 2.0, -3.0], 50),
        (&[2.0, 9.0, 0.0], 1),
    ];
    let got = run(&Strategy::FedMedian, &updates, &[10.0, 10.0, 10.0]);
    assert_eq!(got, vec![12.0, 15.0, 9.0], "weights are ignored");
}

#[test]
fn even_count_averages_the_two_middle_values() {
    // coord 0: {1, 2, 3, 4} → (2 + 3)/2 = 2.5; coord 1: {0, 2, 5, 9} → (2 + 5)/2 = 3.5
    // coord 2: {−3, −1, 0, 1} → (−1 + 0)/2 = −0.5
    let updates: [(&[f32], u64); 4] = [
        (&[1.0, 5.0, -1.0], 1),
        (&[3.0, 2.0, -3.0], 1),
        (&[2.0, 9.0, 0.0], 1),
        (&[4.0, 0.0, 1.0], 1),
    ];
    let got = run(&Strategy::FedMedian, &updates, &[10.0, 10.0, 10.0]);
    assert_eq!(got, vec![12.5, 13.5, 9.5]);
}

#[test]
fn refused_update_is_not_spilled() {
    let mut aggregator = RoundAggregator::new(&Strategy::FedMedian, 2, None).unwrap();
    aggregator.add(&[1.0, 1.0], 1).unwrap();
    assert!(aggregator.add(&[f32::NAN, 0.0], 1).is_err());
    assert!(aggregator.add(&[0.0], 1).is_err());
    aggregator.add(&[3.0, 5.0], 1).unwrap();
    assert_eq!(aggregator.updates(), 2);
    assert_eq!(
        aggregator.held_values(),
        0,
        "robust rules keep updates on disk"
    );
    let got = aggregator.finish(&[0.0, 0.0], &mut ServerState::default(), &mut rng(1));
    assert_eq!(got.unwrap(), vec![2.0, 3.0]);
}

/// Deterministic, varied values: update `i`, coordinate `j`.
fn value(i: usize, j: usize) -> f32 {
    (((j * 31 + i * 17 + (j / 7) * i) % 1009) as f32 - 504.0) * 0.5
}

#[test]
fn model_larger_than_one_block_is_read_block_by_block() {
    let dim = 200_000;
    assert!(dim > 3 * BLOCK_COORDS_MAX, "spans four blocks");
    for n in [4, 5] {
        let dir = tempfile::tempdir().unwrap();
        let mut aggregator =
            RoundAggregator::new_in(&Strategy::FedMedian, dim, None, dir.path()).unwrap();
        for i in 0..n {
            let update: Vec<f32> = (0..dim).map(|j| value(i, j)).collect();
            aggregator.add(&update, 1).unwrap();
        }
        let got = aggregator
            .finish(&vec![1.0; dim], &mut ServerState::default(), &mut rng(1))
            .unwrap();
        for j in (0..dim)
            .step_by(997)
            .chain([65_535, 65_536, 131_072, dim - 1])
        {
            let mut column: Vec<f32> = (0..n).map(|i| value(i, j)).collect();
            column.sort_by(f32::total_cmp);
            let mid = if n % 2 == 1 {
                f64::from(column[n / 2])
            } else {
                (f64::from(column[n / 2 - 1]) + f64::from(column[n / 2])) / 2.0
            };
            assert_eq!(got[j], (1.0 + mid) as f32, "n {n}, coordinate {j}");
        }
    }
}
