//! The coordinator's recovery of a dropped participant's private key from the share
//! plaintexts survivors revealed, checked against the public key it advertised.
//!
//! ```text
//!   survivors' revealed shares ──► parse (x ∈ 1..=255, distinct) ──► ≥ threshold?
//!        ──► Lagrange at 0 over all of them ──► clamped? and X25519(key, 9) == advertised pk
//! ```
//!
//! Every share given is used, so one wrong share makes the check fail rather than slip
//! through (the clamping check covers the 5 bits X25519 ignores, the public key the rest); finding which one is wrong is left to the caller. The key recovered is only good
//! for removing the dropped participant's masks with `MaskedSum::remove_dropped_masks`.

use std::collections::BTreeSet;

use super::keys::is_clamped;
use super::shares::parse_share;
use super::{shamir, KeyPair, SecAggError};

/// Reconstructs a dropped participant's 32-byte private key from at least `threshold` share
/// plaintexts (as returned by `open_share`) and checks that it is clamped and yields
/// `expected_public`.
pub fn reconstruct_private_key<S: AsRef<[u8]>>(
    shares: &[S],
    threshold: u32,
    expected_public: &[u8; 32],
) -> Result<[u8; 32], SecAggError> {
    if !(2..=shamir::MAX_SHARES as u32).contains(&threshold) {
        return Err(SecAggError::InvalidThreshold {
            threshold,
            peers: shamir::MAX_SHARES,
        });
    }
    let parsed = parse_distinct(shares)?;
    if parsed.len() < threshold as usize {
        return Err(SecAggError::NotEnoughShares {
            have: parsed.len(),
            threshold,
        });
    }
    let points: Vec<(u8, &[u8])> = parsed.iter().map(|(x, v)| (*x, &v[..])).collect();
    let secret: [u8; 32] = shamir::combine(&points)
        .try_into()
        .expect("every share value is 32 bytes");
    if !is_clamped(&secret) || KeyPair::from_secret_bytes(secret).public() != *expected_public {
        return Err(SecAggError::ReconstructedKeyMismatch);
    }
    Ok(secret)
}

/// Parses every share; rejects a repeated x-coordinate.
fn parse_distinct<S: AsRef<[u8]>>(shares: &[S]) -> Result<Vec<(u8, [u8; 32])>, SecAggError> {
    let mut seen = BTreeSet::new();
    shares
        .iter()
        .map(|share| {
            let (x, value) = parse_share(share.as_ref())?;
            if !seen.insert(x) {
                return Err(SecAggError::DuplicateShareX { x });
            }
            let x = u8::try_from(x).expect("parse_share keeps x within 1..=255");
            Ok((x, value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    use super::*;

    /// Plaintext shares of a fresh key at x = 1..=count.
    fn shares_of(keys: &KeyPair, threshold: usize, count: u8) -> Vec<Vec<u8>> {
        let xs: Vec<u8> = (1..=count).collect();
        let mut rng = ChaCha20Rng::seed_from_u64(11);
        shamir::split(&keys.secret_bytes(), threshold, &xs, &mut rng)
            .into_iter()
            .zip(&xs)
            .map(|(value, &x)| [&u32::from(x).to_be_bytes()[..], &value].concat())
            .collect()
    }

    #[test]
    fn threshold_shares_reconstruct_the_key() {
        let keys = KeyPair::generate(&mut ChaCha20Rng::seed_from_u64(10));
        let shares = shares_of(&keys, 3, 5);
        for subset in [&shares[..3], &shares[2..], &shares[..]] {
            assert_eq!(
                reconstruct_private_key(subset, 3, &keys.public()),
                Ok(keys.secret_bytes())
            );
        }
    }

    #[test]
    fn too_few_wrong_or_repeated_shares_are_detected() {
        let keys = KeyPair::generate(&mut ChaCha20Rng::seed_from_u64(12));
        let shares = shares_of(&keys, 3, 4);
        assert_eq!(
            reconstruct_private_key(&shares[..2], 3, &keys.public()),
            Err(SecAggError::NotEnoughShares {
                have: 2,
                threshold: 3
            })
        );
        // Claiming a lower threshold than the sharing used gives a wrong key, caught.
        assert_eq!(
            reconstruct_private_key(&shares[..2], 2, &keys.public()),
            Err(SecAggError::ReconstructedKeyMismatch)
        );
        let mut bad = shares.clone();
        bad[1][10] ^= 0x40;
        assert_eq!(
            reconstruct_private_key(&bad, 3, &keys.public()),
            Err(SecAggError::ReconstructedKeyMismatch)
        );
        let repeated = vec![shares[0].clone(), shares[1].clone(), shares[0].clone()];
        assert_eq!(
            reconstruct_private_key(&repeated, 3, &keys.public()),
            Err(SecAggError::DuplicateShareX { x: 1 })
        );
        let other = KeyPair::generate(&mut ChaCha20Rng::seed_from_u64(13));
        assert_eq!(
            reconstruct_private_key(&shares, 3, &other.public()),
            Err(SecAggError::ReconstructedKeyMismatch)
        );
    }

    #[test]
    fn threshold_and_framing_are_validated() {
        let keys = KeyPair::generate(&mut ChaCha20Rng::seed_from_u64(14));
        let shares = shares_of(&keys, 2, 2);
        assert_eq!(
            reconstruct_private_key(&shares, 1, &keys.public()),
            Err(SecAggError::InvalidThreshold {
                threshold: 1,
                peers: 255
            })
        );
        let short = vec![shares[0][..35].to_vec(), shares[1].clone()];
        assert_eq!(
            reconstruct_private_key(&short, 2, &keys.public()),
            Err(SecAggError::ShareLength { len: 35 })
        );
    }
}
