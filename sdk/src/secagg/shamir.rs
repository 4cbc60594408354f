//! Shamir secret sharing over GF(2^8), byte-wise: each secret byte is the constant term of its
//! own random polynomial of degree `threshold − 1`, and a share is that polynomial family
//! evaluated at one non-zero x.
//!
//! ```text
//!   split:   secret[k] = p_k(0),  share(x)[k] = p_k(x)          x ∈ 1..=255
//!   combine: secret[k] = Σ_i share(x_i)[k] · Π_{j≠i} x_j / (x_j − x_i)     (− is XOR)
//! ```
//!
//! The field is GF(2)\[X\]/(X^8 + X^4 + X^3 + X + 1), AES's. Arithmetic runs a fixed number of
//! steps with no data-dependent branches or table look-ups. Only the maths lives here: share
//! framing, validation and encryption are the callers'.

use rand::CryptoRng;

/// Largest number of distinct non-zero x-coordinates in GF(2^8).
pub(crate) const MAX_SHARES: usize = 255;

/// a · b in GF(2^8).
fn mul(a: u8, b: u8) -> u8 {
    let (mut a, mut b, mut product) = (a, b, 0u8);
    for _ in 0..8 {
        product ^= a & (b & 1).wrapping_neg();
        let carry = (a >> 7).wrapping_neg();
        a = (a << 1) ^ (0x1B & carry);
        b >>= 1;
    }
    product
}

/// a^-1 in GF(2^8) as a^254; maps 0 to 0.
fn inv(a: u8) -> u8 {
    let (mut result, mut base) = (1u8, a);
    for bit in 0..8 {
        let factor = if (254u8 >> bit) & 1 == 1 { base } else { 1 };
        result = mul(result, factor);
        base = mul(base, base);
    }
    result
}

/// Evaluates the polynomial with `coefficients` (constant term first) at `x`, by Horner.
fn eval(coefficients: &[u8], x: u8) -> u8 {
    coefficients
        .iter()
        .rev()
        .fold(0u8, |acc, &c| mul(acc, x) ^ c)
}

/// One share value per entry of `xs` (each non-zero, distinct), any `threshold` of which
/// recover `secret`.
pub(crate) fn split<R: CryptoRng + ?Sized>(
    secret: &[u8],
    threshold: usize,
    xs: &[u8],
    rng: &mut R,
) -> Vec<Vec<u8>> {
    let mut polynomials = vec![0u8; secret.len() * threshold];
    rng.fill_bytes(&mut polynomials);
    for (polynomial, &byte) in polynomials.chunks_mut(threshold).zip(secret) {
        polynomial[0] = byte;
    }
    xs.iter()
        .map(|&x| polynomials.chunks(threshold).map(|p| eval(p, x)).collect())
        .collect()
}

/// The Lagrange weight of point `i` at x = 0.
fn weight_at_zero(xs: &[u8], i: usize) -> u8 {
    xs.iter()
        .enumerate()
        .filter(|&(j, _)| j != i)
        .fold(1u8, |acc, (_, &xj)| mul(acc, mul(xj, inv(xj ^ xs[i]))))
}

/// The secret interpolated from `points` (x, value): x non-zero and distinct, values of equal
/// length. With fewer points than the threshold the result is unrelated to the secret.
pub(crate) fn combine(points: &[(u8, &[u8])]) -> Vec<u8> {
    let xs: Vec<u8> = points.iter().map(|&(x, _)| x).collect();
    let len = points.first().map_or(0, |(_, value)| value.len());
    let mut secret = vec![0u8; len];
    for (i, (_, value)) in points.iter().enumerate() {
        let weight = weight_at_zero(&xs, i);
        for (out, &y) in secret.iter_mut().zip(value.iter()) {
            *out ^= mul(weight, y);
        }
    }
    secret
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    use super::*;

    #[test]
    fn multiplication_matches_known_products() {
        let cases = [
            (0x00, 0x53, 0x00),
            (0x01, 0x53, 0x53),
            (0x57, 0x83, 0xC1), // FIPS-197 §4.2
            (0x57, 0x13, 0xFE), // FIPS-197 §4.2.1
            (0x53, 0xCA, 0x01), // inverses
            (0x02, 0x80, 0x1B),
        ];
        for (a, b, product) in cases {
            assert_eq!(mul(a, b), product, "{a:#04x} · {b:#04x}");
            assert_eq!(mul(b, a), product, "{b:#04x} · {a:#04x}");
        }
    }

    #[test]
    fn every_non_zero_element_has_its_inverse() {
        assert_eq!(inv(0), 0);
        for a in 1..=255u8 {
            assert_eq!(mul(a, inv(a)), 1, "{a:#04x}");
        }
    }

    #[test]
    fn any_threshold_subset_recovers_and_fewer_do_not() {
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let secret: Vec<u8> = (0..32).collect();
        let xs = [1u8, 2, 3, 4, 5];
        let shares = split(&secret, 3, &xs, &mut rng);
        let subsets: &[&[usize]] = &[&[0, 1, 2], &[4, 2, 0], &[1, 3, 4], &[0, 1, 2, 3, 4]];
        for subset in subsets {
            let points: Vec<(u8, &[u8])> =
                subset.iter().map(|&i| (xs[i], &shares[i][..])).collect();
            assert_eq!(combine(&points), secret, "{subset:?}");
        }
        let two: Vec<(u8, &[u8])> = vec![(xs[0], &shares[0]), (xs[1], &shares[1])];
        assert_ne!(combine(&two), secret);
    }

    #[test]
    fn shares_at_high_x_coordinates_recover() {
        let mut rng = ChaCha20Rng::seed_from_u64(8);
        let secret = [0xFFu8; 32];
        let xs = [253u8, 254, 255];
        let shares = split(&secret, 2, &xs, &mut rng);
        let points: Vec<(u8, &[u8])> = vec![(xs[2], &shares[2]), (xs[0], &shares[0])];
        assert_eq!(combine(&points), secret.to_vec());
    }

    #[test]
    fn a_single_share_below_threshold_two_is_not_the_secret() {
        let mut rng = ChaCha20Rng::seed_from_u64(9);
        let secret = [0x42u8; 32];
        let shares = split(&secret, 2, &[1, 2], &mut rng);
        assert_ne!(shares[0], secret.to_vec());
        assert_ne!(shares[1], secret.to_vec());
    }
}
