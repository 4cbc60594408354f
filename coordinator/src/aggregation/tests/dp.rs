//! Central DP: clipping on `add`, equal weights, Gaussian noise of σ·C on the sum.

use super::*;
use crate::aggregation::Adaptive;

fn dp(clip_norm: f64, noise_multiplier: f64) -> Option<CentralDp> {
    Some(CentralDp {
        clip_norm,
        noise_multiplier,
    })
}

#[test]
fn update_of_norm_ten_contributes_norm_one() {
    // ‖[6, 8]‖ = 10 > C = 1 → scaled by 1/10 to [0.6, 0.8]; σ = 0 adds nothing.
    let updates: [(&[f32], u64); 1] = [(&[6.0, 8.0], 1)];
    let got = round(
        &Strategy::FedAvg,
        dp(1.0, 0.0),
        &updates,
        &[0.0, 0.0],
        &mut ServerState::default(),
    );
    assert_eq!(got.unwrap(), vec![0.6, 0.8]);
}

#[test]
fn clipped_updates_are_weighted_equally() {
    // [6, 8] → [0.6, 0.8]; [0.3, 0.4] has norm 0.5 ≤ 1, kept. Weights 100 and 1 are ignored:
    // ([0.6, 0.8] + [0.3, 0.4]) / 2 = [0.45, 0.6]; + global [1, 1].
    let updates: [(&[f32], u64); 2] = [(&[6.0, 8.0], 100), (&[0.3, 0.4], 1)];
    let got = round(
        &Strategy::FedAvg,
        dp(1.0, 0.0),
        &updates,
        &[1.0, 1.0],
        &mut ServerState::default(),
    );
    assert_close(&got.unwrap(), &[1.45, 1.6], 1e-7);
}

#[test]
fn noise_has_standard_deviation_sigma_c_over_n() {
    // Two zero updates, σ = 1.5, C = 2: sum noise std 3, mean noise std 3/2 = 1.5.
    let dim = 100_000;
    let zeros = vec![0.0_f32; dim];
    let mut aggregator = RoundAggregator::new(&Strategy::FedAvg, dim, dp(2.0, 1.5)).unwrap();
    aggregator.add(&zeros, 1).unwrap();
    aggregator.add(&zeros, 1).unwrap();
    let got = aggregator
        .finish(&zeros, &mut ServerState::default(), &mut rng(42))
        .unwrap();
    let n = dim as f64;
    let mean = got.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
    let var = got
        .iter()
        .map(|&x| (f64::from(x) - mean).powi(2))
        .sum::<f64>()
        / (n - 1.0);
    // Standard errors: mean 1.5/√n ≈ 0.0047, std 1.5/√(2n) ≈ 0.0034; bounds are ≈ 3.3 and 4.5 of them.
    assert!(mean.abs() < 0.0155, "mean {mean}");
    assert!((var.sqrt() - 1.5).abs() < 0.015, "std {}", var.sqrt());
}

#[test]
fn same_seed_same_noise() {
    let updates: [(&[f32], u64); 1] = [(&[1.0, 2.0, 3.0], 1)];
    let a = round(
        &Strategy::FedAvg,
        dp(1.0, 1.0),
        &updates,
        &[0.0; 3],
        &mut ServerState::default(),
    );
    let b = round(
        &Strategy::FedAvg,
        dp(1.0, 1.0),
        &updates,
        &[0.0; 3],
        &mut ServerState::default(),
    );
    assert_eq!(a.unwrap(), b.unwrap());
}

#[test]
fn dp_works_with_server_optimizers_only() {
    let adam = Strategy::FedAdam(Adaptive {
        eta: 0.1,
        beta1: 0.9,
        beta2: 0.99,
        tau: 1e-3,
    });
    assert!(RoundAggregator::new(&adam, 4, dp(1.0, 1.0)).is_ok());
    for robust in [
        Strategy::FedMedian,
        Strategy::FedTrimmedAvg { beta: 0.1 },
        Strategy::Krum { f: 0, multi_m: 0 },
    ] {
        let err = RoundAggregator::new(&robust, 4, dp(1.0, 1.0)).unwrap_err();
        assert!(
            matches!(err, AggregationError::DpUnsupported { strategy } if strategy == robust.name())
        );
    }
}

#[test]
fn dp_parameters_are_checked() {
    let cases = [
        (0.0, 1.0, "clip_norm"),
        (f64::NAN, 1.0, "clip_norm"),
        (1.0, -0.1, "noise_multiplier"),
    ];
    for (clip, sigma, field) in cases {
        let err = RoundAggregator::new(&Strategy::FedAvg, 2, dp(clip, sigma)).unwrap_err();
        assert!(
            matches!(err, AggregationError::InvalidParameter { field: f, .. } if f == field),
            "{err}"
        );
    }
}
