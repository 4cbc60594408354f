//! `apply_summed`: secure aggregation hands over only Σ Δᵢ and the count.

use super::*;
use crate::aggregation::apply_summed;

#[test]
fn sum_is_divided_by_the_count() {
    // ([1, 3] + [3, 1]) = [4, 4]; / 2 = [2, 2]; + [1, 0]
    let mut state = ServerState::default();
    let got = apply_summed(
        &Strategy::FedAvg,
        &[4.0, 4.0],
        2,
        None,
        &[1.0, 0.0],
        &mut state,
        &mut rng(1),
    );
    assert_eq!(got.unwrap(), vec![3.0, 2.0]);
}

#[test]
fn matches_an_equally_weighted_round_with_the_same_server_step() {
    let strategy = Strategy::FedAvgM {
        server_learning_rate: 0.5,
        momentum: 0.9,
    };
    let rounds: [[&[f32]; 2]; 2] = [[&[2.0, 4.0], &[4.0, 0.0]], [&[1.0, -1.0], &[5.0, 3.0]]];
    let (mut via_round, mut via_sum) = (ServerState::default(), ServerState::default());
    let (mut x_round, mut x_sum) = (vec![0.0_f32; 2], vec![0.0_f32; 2]);
    for updates in rounds {
        let weighted: Vec<(&[f32], u64)> = updates.iter().map(|u| (*u, 1)).collect();
        x_round = round(&strategy, None, &weighted, &x_round, &mut via_round).unwrap();
        let sum: Vec<f64> = (0..2)
            .map(|j| updates.iter().map(|u| f64::from(u[j])).sum())
            .collect();
        x_sum = apply_summed(&strategy, &sum, 2, None, &x_sum, &mut via_sum, &mut rng(1)).unwrap();
    }
    assert_eq!(x_round, x_sum);
    assert_eq!(via_round, via_sum);
}

#[test]
fn dp_without_noise_is_exact_and_with_noise_is_seeded() {
    let dp = |noise_multiplier| {
        Some(CentralDp {
            clip_norm: 1.0,
            noise_multiplier,
        })
    };
    let mut state = ServerState::default();
    let exact = apply_summed(
        &Strategy::FedAvg,
        &[1.5, -0.5],
        3,
        dp(0.0),
        &[0.0, 0.0],
        &mut state,
        &mut rng(1),
    );
    assert_eq!(exact.unwrap(), vec![0.5, -0.5 / 3.0]);
    let a = apply_summed(
        &Strategy::FedAvg,
        &[1.5, -0.5],
        3,
        dp(1.0),
        &[0.0, 0.0],
        &mut state,
        &mut rng(9),
    );
    let b = apply_summed(
        &Strategy::FedAvg,
        &[1.5, -0.5],
        3,
        dp(1.0),
        &[0.0, 0.0],
        &mut state,
        &mut rng(9),
    );
    assert_eq!(a.as_ref().unwrap(), b.as_ref().unwrap());
    assert_ne!(a.unwrap(), vec![0.5, -0.5 / 3.0]);
}

#[test]
fn refusals() {
    let mut state = ServerState::default();
    let mut apply = |strategy: &Strategy, sum: &[f64], count| {
        apply_summed(
            strategy,
            sum,
            count,
            None,
            &[0.0, 0.0],
            &mut state,
            &mut rng(1),
        )
        .unwrap_err()
    };
    assert!(matches!(
        apply(&Strategy::FedMedian, &[1.0, 1.0], 2),
        AggregationError::SummedUnsupported {
            strategy: "FedMedian"
        }
    ));
    assert!(matches!(
        apply(&Strategy::Krum { f: 0, multi_m: 0 }, &[1.0, 1.0], 2),
        AggregationError::SummedUnsupported { strategy: "Krum" }
    ));
    assert!(matches!(
        apply(&Strategy::FedAvg, &[1.0, 1.0], 0),
        AggregationError::NoUpdates
    ));
    assert!(matches!(
        apply(&Strategy::FedAvg, &[1.0], 1),
        AggregationError::WrongLength {
            what: "sum",
            expected: 2,
            actual: 1
        }
    ));
    assert!(matches!(
        apply(&Strategy::FedAvg, &[1.0, f64::NAN], 1),
        AggregationError::NonFinite {
            what: "sum",
            index: 1
        }
    ));
}
