//! The RDP accountant against the closed form (q = 1), Opacus's published doctest value, values
//! of Opacus's and Google's `dp_accounting` implementations, and monotonicity.

use crate::aggregation::accountant::{default_orders, sampled_gaussian_rdp};
use crate::aggregation::{epsilon, AccountantError, PrivacyAccountant};

#[track_caller]
fn assert_rel(got: f64, want: f64, rel: f64) {
    assert!(
        (got - want).abs() <= rel * want.abs(),
        "got {got}, want {want}"
    );
}

#[test]
fn default_orders_are_opacus_alphas() {
    let orders = default_orders();
    assert_eq!(orders.len(), 99 + 52);
    assert_eq!(
        (orders[0], orders[9], orders[98], orders[99], orders[150]),
        (1.1, 2.0, 10.9, 12.0, 63.0)
    );
}

#[test]
fn full_participation_is_the_closed_form() {
    // q = 1: RDP(α) = α/(2σ²) per round, × rounds.
    let mut accountant = PrivacyAccountant::new();
    accountant.compose(2.0, 1.0, 3).unwrap();
    for (&order, &rdp) in accountant.orders().iter().zip(accountant.rdp()) {
        assert_eq!(rdp, 3.0 * order / 8.0);
    }
    // σ = 5, one round, δ = 1e-5: min over α of α/50 − (ln δ + ln α)/(α − 1) + ln((α − 1)/α),
    // reached at α = 22 (Opacus and dp_accounting agree: 0.794522032537103).
    let spent = {
        let mut a = PrivacyAccountant::new();
        a.compose(5.0, 1.0, 1).unwrap();
        a.spent(1e-5).unwrap()
    };
    let closed = |a: f64| a / 50.0 - (1e-5_f64.ln() + a.ln()) / (a - 1.0) + ((a - 1.0) / a).ln();
    assert_eq!(spent.order, 22.0);
    assert_rel(spent.epsilon, closed(22.0), 1e-12);
    assert_rel(spent.epsilon, 0.794522032537103, 1e-12);
    assert_rel(epsilon(1.0, 1.0, 10, 1e-5), 19.05359753163139, 1e-12);
}

#[test]
fn opacus_doctest_composition() {
    // opacus/accountants/analysis/rdp.py module docs: (q, σ, steps) = (1e-5, 1.0, 10) then
    // (1e-4, 3.0, 4), orders 2..=32, δ = 1e-5 → (0.336, 23).
    let mut accountant = PrivacyAccountant::with_orders((2..=32).map(f64::from).collect()).unwrap();
    accountant.compose(1.0, 1e-5, 10).unwrap();
    accountant.compose(3.0, 1e-4, 4).unwrap();
    let spent = accountant.spent(1e-5).unwrap();
    assert_eq!(spent.order, 23.0);
    assert_rel(spent.epsilon, 0.33634406339259565, 1e-9);
}

#[test]
fn subsampled_values_match_opacus() {
    // (σ, q, rounds, δ) → ε from Opacus's formulas (dp_accounting 0.6 agrees to 1e-7 here),
    // default orders. The first is the DP-SGD MNIST setting: q = 256/60000, 60 epochs.
    let cases = [
        (1.1, 256.0 / 60000.0, 14062, 1e-5, 2.5965558689607486, 8.1),
        (1.0, 0.01, 100, 1e-5, 1.2141452107864754, 8.8),
        (1.0, 0.01, 1000, 1e-5, 2.1013652716430564, 7.8),
        (2.0, 0.1, 50, 1e-6, 2.104491747318052, 10.2),
        (0.8, 0.05, 200, 1e-5, 8.73182993236997, 2.9),
    ];
    for (sigma, q, rounds, delta, want, order) in cases {
        let mut accountant = PrivacyAccountant::new();
        accountant.compose(sigma, q, rounds).unwrap();
        let spent = accountant.spent(delta).unwrap();
        assert_rel(spent.epsilon, want, 1e-9);
        assert!(
            (spent.order - order).abs() < 1e-9,
            "σ {sigma} q {q}: order {}",
            spent.order
        );
    }
}

#[test]
fn single_order_rdp_matches_opacus() {
    // Opacus _compute_rdp(q, σ, α): integer and fractional orders.
    let cases = [
        (1.0, 0.01, 1.5, 0.00012725374351154145),
        (1.0, 0.01, 2.0, 0.00017181342207453428),
        (1.0, 0.01, 10.5, 0.18833969137955273),
        (1.0, 0.01, 32.0, 11.246275937048072),
        (2.0, 0.1, 2.5, 0.0035940771994730416),
        (2.0, 0.1, 10.0, 0.01862425425819884),
    ];
    for (sigma, q, order, want) in cases {
        assert_rel(sampled_gaussian_rdp(sigma, q, order).unwrap(), want, 1e-9);
    }
}

#[test]
fn epsilon_is_monotone() {
    let base = epsilon(1.0, 0.01, 100, 1e-5);
    assert!(
        epsilon(1.0, 0.01, 200, 1e-5) > base,
        "more rounds spend more"
    );
    assert!(
        epsilon(1.5, 0.01, 100, 1e-5) < base,
        "more noise spends less"
    );
    assert!(
        epsilon(1.0, 0.005, 100, 1e-5) < base,
        "sampling fewer spends less"
    );
    assert!(
        epsilon(1.0, 0.01, 100, 1e-3) < base,
        "a looser δ costs less ε"
    );
    let mut last = 0.0;
    for rounds in [1, 10, 100, 1000] {
        let eps = epsilon(1.1, 0.02, rounds, 1e-5);
        assert!(eps > last, "rounds {rounds}");
        last = eps;
    }
}

#[test]
fn edge_cases() {
    assert_eq!(
        epsilon(0.0, 0.1, 10, 1e-5),
        f64::INFINITY,
        "no noise, no privacy"
    );
    assert_eq!(epsilon(1.0, 0.0, 10, 1e-5), 0.0, "never sampled");
    assert_eq!(epsilon(1.0, 0.1, 0, 1e-5), 0.0, "no round run");
    for (sigma, q, delta) in [
        (-1.0, 0.1, 1e-5),
        (1.0, 1.5, 1e-5),
        (1.0, 0.1, 0.0),
        (f64::NAN, 0.1, 1e-5),
    ] {
        assert_eq!(
            epsilon(sigma, q, 10, delta),
            f64::INFINITY,
            "invalid input never looks private"
        );
    }
    let mut accountant = PrivacyAccountant::new();
    assert_eq!(
        accountant.compose(1.0, -0.1, 1),
        Err(AccountantError::SamplingRate)
    );
    assert_eq!(accountant.spent(1.0), Err(AccountantError::Delta));
    assert_eq!(
        PrivacyAccountant::with_orders(vec![1.0]),
        Err(AccountantError::Orders)
    );
    assert_eq!(
        PrivacyAccountant::with_orders(vec![]),
        Err(AccountantError::Orders)
    );
}
