//! FedTrimmedAvg: ⌊beta·n⌋ values cut from each end per coordinate.

use super::*;

#[test]
fn beta_two_tenths_of_five_trims_one_each_side() {
    // ⌊0.2·5⌋ = 1 per end.
    // coord 0: sorted {1, 2, 3, 4, 100}    → drop 1 and 100  → (2 + 3 + 4)/3 = 3
    // coord 1: sorted {−100, 10, 20, 30, 40} → drop −100 and 40 → (10 + 20 + 30)/3 = 20
    let updates: [(&[f32], u64); 5] = [
        (&[1.0, 10.0], 1),
        (&[2.0, -100.0], 1),
        (&[3.0, 20.0], 7),
        (&[100.0, 30.0], 1),
        (&[4.0, 40.0], 1),
    ];
    let got = run(
        &Strategy::FedTrimmedAvg { beta: 0.2 },
        &updates,
        &[0.0, 1.0],
    );
    assert_eq!(got, vec![3.0, 21.0]);
}

#[test]
fn beta_too_small_to_cut_is_the_plain_mean() {
    // ⌊0.1·5⌋ = 0: coord 0 = (1 + 2 + 3 + 100 + 4)/5 = 22; coord 1 = (10 − 100 + 20 + 30 + 40)/5 = 0
    let updates: [(&[f32], u64); 5] = [
        (&[1.0, 10.0], 1),
        (&[2.0, -100.0], 1),
        (&[3.0, 20.0], 1),
        (&[100.0, 30.0], 1),
        (&[4.0, 40.0], 1),
    ];
    let got = run(
        &Strategy::FedTrimmedAvg { beta: 0.1 },
        &updates,
        &[0.0, 1.0],
    );
    assert_eq!(got, vec![22.0, 1.0]);
}

#[test]
fn quarter_of_four_keeps_the_middle_two() {
    // ⌊0.25·4⌋ = 1: sorted {−8, 1, 3, 50} → (1 + 3)/2 = 2
    let updates: [(&[f32], u64); 4] = [(&[3.0], 1), (&[-8.0], 1), (&[50.0], 1), (&[1.0], 1)];
    assert_eq!(
        run(&Strategy::FedTrimmedAvg { beta: 0.25 }, &updates, &[0.5]),
        vec![2.5]
    );
}
