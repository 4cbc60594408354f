//! Numerics for the privacy accountant: log-space addition and subtraction, and ln erfc(x)
//! accurate far into the tail (where erfc itself underflows). No dependency: std has no erfc.
//!
//! ln erfc(x) by region:
//!
//! ```text
//!   x < −2:      ln(2 − erfc(−x))           (erfc(−x) from the continued fraction)
//!   −2 ≤ x < 2:  ln(1 − erf(x))             (Maclaurin series of erf)
//!   x ≥ 2:       −x² − ½ln π − ln K(x)       (Lentz's continued fraction K for √π·eˣ²·erfc)
//! ```

use std::f64::consts::PI;

/// ln(eˣ + eʸ); −∞ is ln 0.
pub(crate) fn log_add(x: f64, y: f64) -> f64 {
    let (lo, hi) = if x < y { (x, y) } else { (y, x) };
    if lo == f64::NEG_INFINITY {
        return hi;
    }
    (lo - hi).exp().ln_1p() + hi
}

/// ln(eˣ − eʸ), or `None` when that is negative (y > x).
pub(crate) fn log_sub(x: f64, y: f64) -> Option<f64> {
    if x < y {
        return None;
    }
    if y == f64::NEG_INFINITY {
        return Some(x);
    }
    if x == y {
        return Some(f64::NEG_INFINITY);
    }
    Some((x - y).exp_m1().ln() + y)
}

/// ln erfc(x) for any finite x.
pub(crate) fn log_erfc(x: f64) -> f64 {
    if x >= 2.0 {
        log_erfc_tail(x)
    } else if x >= -2.0 {
        (-erf_series(x)).ln_1p()
    } else {
        (2.0 - log_erfc_tail(-x).exp()).ln()
    }
}

/// erf(x) = 2/√π · Σₖ (−1)ᵏ x²ᵏ⁺¹ / (k! (2k + 1)), for |x| ≤ 2 (terms stay below 3).
fn erf_series(x: f64) -> f64 {
    let mut term = x;
    let mut sum = x;
    for k in 1..200 {
        term *= -x * x / k as f64;
        let add = term / (2 * k + 1) as f64;
        sum += add;
        if add.abs() < 1e-17 * sum.abs() {
            break;
        }
    }
    sum * 2.0 / PI.sqrt()
}

/// ln erfc(x) for x ≥ 2 from erfc(x) = e^(−x²)/√π · 1/(x + ½/(x + 1/(x + (3/2)/(x + …)))),
/// evaluated by the modified Lentz method.
fn log_erfc_tail(x: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let (mut f, mut c, mut d) = (x, x, 0.0_f64);
    for k in 1..10_000 {
        let a = k as f64 / 2.0;
        d = x + a * d;
        d = if d == 0.0 { TINY } else { d.recip() };
        c = x + a / c;
        if c == 0.0 {
            c = TINY;
        }
        let delta = c * d;
        f *= delta;
        if (delta - 1.0).abs() < 1e-16 {
            break;
        }
    }
    -x * x - 0.5 * PI.ln() - f.ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_erfc_matches_scipy() {
        // ln 2 + scipy.special.log_ndtr(−x·√2), SciPy 1.x.
        let cases = [
            (-3.0, 0.6931361352504468),
            (-0.5, 0.4190391477755596),
            (0.0, 0.0),
            (0.1, -0.11930497373739557),
            (0.5, -0.7350111298370848),
            (1.0, -1.849605509933249),
            (1.9, -4.93234586278027),
            (2.0, -5.36494126461664),
            (2.1, -5.816010968867557),
            (3.0, -10.720363041981116),
            (5.0, -27.200889545537446),
            (10.0, -102.87988902484493),
            (30.0, -903.9741171106442),
            (100.0, -10005.177585122668),
        ];
        for (x, want) in cases {
            let got = log_erfc(x);
            assert!(
                (got - want).abs() <= 1e-12 * want.abs().max(1.0),
                "x {x}: {got} vs {want}"
            );
        }
    }

    #[test]
    fn log_space_arithmetic() {
        let ln = f64::ln;
        assert!((log_add(ln(2.0), ln(3.0)) - ln(5.0)).abs() < 1e-15);
        assert_eq!(log_add(f64::NEG_INFINITY, 1.5), 1.5);
        assert!((log_sub(ln(5.0), ln(3.0)).unwrap() - ln(2.0)).abs() < 1e-15);
        assert_eq!(log_sub(1.0, 1.0), Some(f64::NEG_INFINITY));
        assert_eq!(log_sub(1.0, 2.0), None);
    }
}
