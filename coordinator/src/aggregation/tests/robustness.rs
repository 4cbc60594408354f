//! One poisoned update of 1e6 among four honest ones: FedAvg is dragged away, the robust rules
//! stay within the honest values.

use super::*;

const HONEST_MIN: f64 = 0.9;
const HONEST_MAX: f64 = 1.1;

fn poisoned() -> [(&'static [f32], u64); 5] {
    [
        (&[1.0, 1.0, 1.0], 10),
        (&[1.1, 0.9, 1.0], 10),
        (&[0.9, 1.1, 1.0], 10),
        (&[1.0, 1.0, 1.1], 10),
        (&[1e6, 1e6, 1e6], 10),
    ]
}

#[test]
fn fedavg_is_pulled_away() {
    // (4 honest ≈ 1 + 1e6) / 5 ≈ 200 000.8 in each coordinate.
    let got = run(&Strategy::FedAvg, &poisoned(), &[0.0; 3]);
    assert!(got.iter().all(|&x| x > 1e5), "{got:?}");
}

#[test]
fn robust_rules_resist() {
    let rules = [
        Strategy::FedMedian,
        Strategy::FedTrimmedAvg { beta: 0.2 },
        Strategy::Krum { f: 1, multi_m: 0 },
        Strategy::Krum { f: 1, multi_m: 3 },
    ];
    for rule in rules {
        let got = run(&rule, &poisoned(), &[0.0; 3]);
        for &x in &got {
            let x = f64::from(x);
            assert!(
                (HONEST_MIN - 1e-6..=HONEST_MAX + 1e-6).contains(&x),
                "{rule:?}: {got:?}"
            );
        }
    }
}
