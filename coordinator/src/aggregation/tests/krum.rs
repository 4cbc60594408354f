//! Krum and Multi-Krum on five points with one attacker (f = 1, n − f − 2 = 2 closest).
//!
//! Points h0 = [1, 1], h1 = [2, 1], h2 = [1, 3], h3 = [3, 3] and attacker a = [11, 11].
//! Squared distances:
//!   h0–h1 1, h0–h2 4, h0–h3 8, h0–a 200, h1–h2 5, h1–h3 5, h1–a 181,
//!   h2–h3 4, h2–a 164, h3–a 128
//! Scores (2 smallest): h0 1+4 = 5, h1 1+5 = 6, h2 4+4 = 8, h3 4+5 = 9, a 128+164 = 292.

use super::*;

const POINTS: [(&[f32], u64); 5] = [
    (&[1.0, 1.0], 1),
    (&[2.0, 1.0], 1),
    (&[1.0, 3.0], 1),
    (&[3.0, 3.0], 1),
    (&[11.0, 11.0], 1000),
];

#[test]
fn krum_picks_the_lowest_score_honest_update() {
    let krum = Strategy::Krum { f: 1, multi_m: 0 };
    assert_eq!(
        run(&krum, &POINTS, &[0.5, 0.5]),
        vec![1.5, 1.5],
        "h0 + global"
    );
    let multi_one = Strategy::Krum { f: 1, multi_m: 1 };
    assert_eq!(run(&multi_one, &POINTS, &[0.5, 0.5]), vec![1.5, 1.5]);
}

#[test]
fn multi_krum_averages_the_best_three() {
    // h0, h1, h2: ([1, 1] + [2, 1] + [1, 3]) / 3 = [4/3, 5/3]; + [0.5, 0.5]
    let got = run(&Strategy::Krum { f: 1, multi_m: 3 }, &POINTS, &[0.5, 0.5]);
    assert_close(&got, &[0.5 + 4.0 / 3.0, 0.5 + 5.0 / 3.0], 1e-6);
}

#[test]
fn ties_go_to_the_lower_index() {
    // Values 3, 2, 1, 0, 4 on a line: scores 1+1, 1+1, 1+1, 1+4, 1+4 → first index (value 3).
    let updates: [(&[f32], u64); 5] = [
        (&[3.0], 1),
        (&[2.0], 1),
        (&[1.0], 1),
        (&[0.0], 1),
        (&[4.0], 1),
    ];
    assert_eq!(
        run(&Strategy::Krum { f: 1, multi_m: 0 }, &updates, &[0.0]),
        vec![3.0]
    );
}

#[test]
fn needs_two_f_plus_three_updates() {
    let err = round(
        &Strategy::Krum { f: 1, multi_m: 0 },
        None,
        &POINTS[..4],
        &[0.0, 0.0],
        &mut ServerState::default(),
    );
    assert!(matches!(
        err,
        Err(AggregationError::TooFewForKrum {
            f: 1,
            needed: 5,
            got: 4
        })
    ));
    let err = round(
        &Strategy::Krum { f: 1, multi_m: 6 },
        None,
        &POINTS,
        &[0.0, 0.0],
        &mut ServerState::default(),
    );
    assert!(matches!(
        err,
        Err(AggregationError::MultiKrumTooLarge { multi_m: 6, got: 5 })
    ));
}
