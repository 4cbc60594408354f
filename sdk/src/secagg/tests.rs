//! End-to-end rounds: every participant runs its side honestly, the coordinator relays, some
//! participants may drop after key sharing, and the decoded sum is checked against the plain
//! one.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

use super::*;

/// One simulated round attempt after phases 1 and 2.
struct Round {
    ids: Vec<String>,
    keys: Vec<KeyPair>,
    peers: Vec<Peer>,
    shares: Vec<EncryptedShare>,
    threshold: u32,
}

impl Round {
    /// `n` participants "p0".."p{n-1}" advertise keys and share them with `threshold`.
    fn new(n: usize, threshold: u32, rng: &mut ChaCha20Rng) -> Round {
        let ids: Vec<String> = (0..n).map(|i| format!("p{i}")).collect();
        let keys: Vec<KeyPair> = ids.iter().map(|_| KeyPair::generate(rng)).collect();
        let peers: Vec<Peer> = ids
            .iter()
            .cloned()
            .zip(keys.iter().map(KeyPair::public))
            .collect();
        let shares = ids
            .iter()
            .zip(&keys)
            .flat_map(|(id, k)| share_private_key(id, k, &peers, threshold, rng).unwrap())
            .collect();
        Round {
            ids,
            keys,
            peers,
            shares,
            threshold,
        }
    }

    /// Participant `i`'s masked update, masked for every peer that completed key sharing.
    fn masked(&self, i: usize, update: &[f32], params: MaskingParams) -> Vec<i64> {
        mask_update(&self.ids[i], &self.keys[i], update, &self.peers, params).unwrap()
    }

    /// The share plaintext survivor `s` reveals of dropped participant `d`'s key.
    fn reveal(&self, s: usize, d: usize) -> Vec<u8> {
        let share = self
            .shares
            .iter()
            .find(|e| e.from == self.ids[d] && e.to == self.ids[s])
            .unwrap();
        open_share(
            &self.ids[s],
            &self.keys[s],
            &self.ids[d],
            &self.peers[d].1,
            &share.ciphertext,
        )
        .unwrap()
    }

    /// Survivors' entries of the peer list.
    fn survivors(&self, dropped: &[usize]) -> Vec<Peer> {
        let kept = |(i, _): &(usize, &Peer)| !dropped.contains(i);
        self.peers
            .iter()
            .enumerate()
            .filter(kept)
            .map(|(_, p)| p.clone())
            .collect()
    }
}

fn random_updates(n: usize, dim: usize, bound: f32, rng: &mut ChaCha20Rng) -> Vec<Vec<f32>> {
    (0..n)
        .map(|_| (0..dim).map(|_| rng.random_range(-bound..=bound)).collect())
        .collect()
}

/// Σ of the updates of `who`, in f64.
fn plain_sum(updates: &[Vec<f32>], who: &[usize]) -> Vec<f64> {
    let dim = updates[0].len();
    (0..dim)
        .map(|c| who.iter().map(|&i| f64::from(updates[i][c])).sum())
        .collect()
}

/// Σ of the unmasked fixed-point encodings of the updates of `who`, as raw group elements.
fn quantized_sum(updates: &[Vec<f32>], who: &[usize], params: MaskingParams) -> Vec<i64> {
    let keys = KeyPair::from_secret_bytes([7; 32]);
    let mut sum = MaskedSum::new(updates[0].len(), params).unwrap();
    for &i in who {
        sum.add(&mask_update("x", &keys, &updates[i], &[], params).unwrap())
            .unwrap();
    }
    sum.raw()
}

fn assert_close(decoded: &[f64], expected: &[f64], tolerance: f64) {
    assert_eq!(decoded.len(), expected.len());
    for (c, (d, e)) in decoded.iter().zip(expected).enumerate() {
        assert!((d - e).abs() <= tolerance, "coordinate {c}: {d} vs {e}");
    }
}

#[test]
fn masked_sum_decodes_to_the_plain_sum_for_three_to_five_participants() {
    let params = MaskingParams::default();
    for n in 3..=5 {
        let mut rng = ChaCha20Rng::seed_from_u64(100 + n as u64);
        let round = Round::new(n, 2, &mut rng);
        let updates = random_updates(n, 64, 1.0, &mut rng);
        let mut sum = MaskedSum::new(64, params).unwrap();
        for (i, update) in updates.iter().enumerate() {
            sum.add(&round.masked(i, update, params)).unwrap();
        }
        let everyone: Vec<usize> = (0..n).collect();
        assert_eq!(
            sum.raw(),
            quantized_sum(&updates, &everyone, params),
            "n={n}"
        );
        let tolerance = n as f64 * 0.5 / params.scale;
        assert_close(&sum.decode(), &plain_sum(&updates, &everyone), tolerance);
        assert_eq!(sum.updates(), n);
    }
}

#[test]
fn one_masked_update_alone_looks_uniform_and_reveals_nothing() {
    let params = MaskingParams::default();
    let dim = 4096;
    let mut rng = ChaCha20Rng::seed_from_u64(200);
    let round = Round::new(3, 2, &mut rng);
    let updates = random_updates(3, dim, 1.0, &mut rng);
    let masked = round.masked(0, &updates[0], params);

    let mut alone = MaskedSum::new(dim, params).unwrap();
    alone.add(&masked).unwrap();
    let decoded = alone.decode();
    let mean_abs_error = decoded
        .iter()
        .zip(&updates[0])
        .map(|(d, &v)| (d - f64::from(v)).abs())
        .sum::<f64>()
        / dim as f64;
    // Uniform on [−2^31, 2^31) / 2^16 has mean |value| 2^30 / 2^16 = 16384.
    assert!(
        (14_700.0..18_000.0).contains(&mean_abs_error),
        "{mean_abs_error}"
    );

    // The top 4 bits of the group elements fall evenly into 16 buckets.
    let mut buckets = [0f64; 16];
    for &value in &masked {
        buckets[(value >> 28) as usize] += 1.0;
    }
    let expected = dim as f64 / 16.0;
    let chi_square: f64 = buckets
        .iter()
        .map(|b| (b - expected).powi(2) / expected)
        .sum();
    assert!(
        chi_square < 40.0,
        "chi² = {chi_square} over 15 degrees of freedom"
    );
}

#[test]
fn two_participants_masks_cancel_exactly() {
    let params = MaskingParams::default();
    let mut rng = ChaCha20Rng::seed_from_u64(300);
    let round = Round::new(2, 2, &mut rng);
    let updates = random_updates(2, 256, 3.0, &mut rng);
    let masked: Vec<Vec<i64>> = (0..2)
        .map(|i| round.masked(i, &updates[i], params))
        .collect();
    let plain: Vec<Vec<i64>> = (0..2)
        .map(|i| quantized_sum(&updates, &[i], params))
        .collect();
    assert_ne!(masked[0], plain[0]);
    assert_ne!(masked[1], plain[1]);
    let mut sum = MaskedSum::new(256, params).unwrap();
    sum.add(&masked[0]).unwrap();
    sum.add(&masked[1]).unwrap();
    assert_eq!(sum.raw(), quantized_sum(&updates, &[0, 1], params));
}

/// Four participants share keys, `dropped` submit nothing, survivors reveal their shares and
/// the coordinator unmasks. Returns the decoded sum and the survivors' plain sum.
fn run_with_dropouts(
    n: usize,
    threshold: u32,
    dropped: &[usize],
    params: MaskingParams,
    bound: f32,
    seed: u64,
) -> (Vec<f64>, Vec<f64>) {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let round = Round::new(n, threshold, &mut rng);
    let updates = random_updates(n, 32, bound, &mut rng);
    let alive: Vec<usize> = (0..n).filter(|i| !dropped.contains(i)).collect();
    let mut sum = MaskedSum::new(32, params).unwrap();
    for &s in &alive {
        sum.add(&round.masked(s, &updates[s], params)).unwrap();
    }
    let survivors = round.survivors(dropped);
    for &d in dropped {
        let revealed: Vec<Vec<u8>> = alive.iter().map(|&s| round.reveal(s, d)).collect();
        let secret =
            reconstruct_private_key(&revealed, round.threshold, &round.peers[d].1).unwrap();
        assert_eq!(secret, round.keys[d].secret_bytes());
        sum.remove_dropped_masks(&round.ids[d], secret, &survivors)
            .unwrap();
    }
    assert_eq!(sum.raw(), quantized_sum(&updates, &alive, params));
    (sum.decode(), plain_sum(&updates, &alive))
}

#[test]
fn dropped_participant_masks_are_removed_with_threshold_two_and_three() {
    let params = MaskingParams::default();
    for (threshold, dropped) in [(2, 0), (2, 2), (3, 1), (3, 3)] {
        let (decoded, plain) = run_with_dropouts(4, threshold, &[dropped], params, 1.0, 400);
        assert_close(&decoded, &plain, 3.0 * 0.5 / params.scale);
    }
}

#[test]
fn two_dropouts_out_of_five_are_both_unmasked() {
    let params = MaskingParams::default();
    let (decoded, plain) = run_with_dropouts(5, 3, &[1, 3], params, 2.0, 500);
    assert_close(&decoded, &plain, 3.0 * 0.5 / params.scale);
}

#[test]
fn negative_values_at_sixty_two_bits_and_at_twelve_bits() {
    let wide = MaskingParams::new(62, 1_048_576.0).unwrap();
    let (decoded, plain) = run_with_dropouts(4, 2, &[2], wide, 1.0e6, 600);
    assert!(plain.iter().any(|v| *v < -1.0e5), "{plain:?}");
    assert_close(
        &decoded,
        &plain,
        3.0 * (0.5 / wide.scale + 1.0e6 * f64::EPSILON),
    );

    let narrow = MaskingParams::new(12, 8.0).unwrap();
    let bound = narrow.max_safe_abs_value(4) as f32; // 511 / 8
    let (decoded, plain) = run_with_dropouts(4, 3, &[0], narrow, bound, 601);
    assert!(plain.iter().any(|v| *v < -20.0), "{plain:?}");
    assert_close(&decoded, &plain, 3.0 * 0.5 / narrow.scale);
}

#[test]
fn sums_within_max_safe_abs_value_decode_and_beyond_it_wrap() {
    let params = MaskingParams::new(8, 1.0).unwrap();
    let safe = params.max_safe_abs_value(4);
    assert_eq!(safe, 31.0);
    let keys = KeyPair::from_secret_bytes([3; 32]);
    let decode_four = |v: f32| {
        let mut sum = MaskedSum::new(1, params).unwrap();
        for _ in 0..4 {
            sum.add(&mask_update("a", &keys, &[v], &[], params).unwrap())
                .unwrap();
        }
        sum.decode()[0]
    };
    assert_eq!(decode_four(31.0), 124.0);
    assert_eq!(decode_four(-31.0), -124.0);
    assert_eq!(decode_four(32.0), -128.0); // 128 wrapped around
}

#[test]
fn too_few_or_tampered_revealed_shares_are_caught() {
    let mut rng = ChaCha20Rng::seed_from_u64(700);
    let round = Round::new(4, 3, &mut rng);
    let d = 3;
    let pk = round.peers[d].1;
    let revealed: Vec<Vec<u8>> = (0..3).map(|s| round.reveal(s, d)).collect();
    assert_eq!(
        reconstruct_private_key(&revealed[..2], 3, &pk),
        Err(SecAggError::NotEnoughShares {
            have: 2,
            threshold: 3
        })
    );
    // Byte 4 bit 0 lands in a bit X25519 clamps away; byte 20 in one it uses.
    for (byte, bit) in [(4, 0x01), (20, 0x10), (35, 0x80)] {
        let mut forged = revealed.clone();
        forged[2][byte] ^= bit;
        assert_eq!(
            reconstruct_private_key(&forged, 3, &pk),
            Err(SecAggError::ReconstructedKeyMismatch),
            "byte {byte}"
        );
    }
    assert_eq!(
        reconstruct_private_key(&revealed, 3, &pk),
        Ok(round.keys[d].secret_bytes())
    );
}

#[test]
fn masks_are_not_removed_by_a_wrong_key() {
    let params = MaskingParams::default();
    let mut rng = ChaCha20Rng::seed_from_u64(800);
    let round = Round::new(3, 2, &mut rng);
    let updates = random_updates(3, 16, 1.0, &mut rng);
    let mut sum = MaskedSum::new(16, params).unwrap();
    for s in [0, 1] {
        sum.add(&round.masked(s, &updates[s], params)).unwrap();
    }
    let survivors = round.survivors(&[2]);
    let wrong = round.keys[0].secret_bytes();
    sum.remove_dropped_masks("p2", wrong, &survivors).unwrap();
    assert_ne!(sum.raw(), quantized_sum(&updates, &[0, 1], params));
}

#[test]
fn masked_updates_survive_the_wire_encoding() {
    let params = MaskingParams::new(62, 65536.0).unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(900);
    let round = Round::new(3, 2, &mut rng);
    let updates = random_updates(3, 8, 1.0, &mut rng);
    let mut sum = MaskedSum::new(8, params).unwrap();
    for (i, update) in updates.iter().enumerate() {
        let bytes = i64s_to_le_bytes(&round.masked(i, update, params));
        assert_eq!(bytes.len(), 64);
        sum.add(&i64s_from_le_bytes(&bytes).unwrap()).unwrap();
    }
    assert_eq!(sum.raw(), quantized_sum(&updates, &[0, 1, 2], params));
}
