//! A participant's masked update: its quantized update plus one pairwise mask per peer that
//! completed key sharing, so that masks cancel in the sum over all of them.
//!
//! ```text
//!   y_i = q_i + Σ_{j ≠ i} s_ij · PRG(k_ij)   mod 2^bits
//!         s_ij = +1 if id_i sorts before id_j (byte-wise), −1 otherwise
//!   Σ_i y_i = Σ_i q_i, since each pair adds its mask once and subtracts it once.
//!
//!   PRG(k)[c] = LE-u64 word c of the ChaCha20 keystream (key k, nonce 0, counter 0)
//!               & (2^bits − 1)                                  uniform on [0, 2^bits)
//! ```
//!
//! This module only adds masks; it never removes one (the coordinator's `MaskedSum` does).

use rand::RngCore;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

use super::keys::KeyPurpose;
use super::peers::{check_sorted, Peer};
use super::{KeyPair, MaskingParams, SecAggError};

/// Whether a mask is added to or subtracted from the values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MaskSign {
    /// Add PRG(k) (the lower id of the pair).
    Add,
    /// Subtract PRG(k) (the higher id of the pair).
    Subtract,
}

impl MaskSign {
    /// The sign with which participant `me` applies its mask shared with `peer`.
    pub(crate) fn of(me: &str, peer: &str) -> MaskSign {
        if me.as_bytes() < peer.as_bytes() {
            MaskSign::Add
        } else {
            MaskSign::Subtract
        }
    }

    /// The opposite sign, which removes a mask applied with `self`.
    pub(crate) fn inverse(self) -> MaskSign {
        match self {
            MaskSign::Add => MaskSign::Subtract,
            MaskSign::Subtract => MaskSign::Add,
        }
    }
}

/// Adds (or subtracts) PRG(`seed`) to `values`, element-wise modulo `group_mask + 1`.
pub(crate) fn apply_mask(values: &mut [u64], seed: [u8; 32], sign: MaskSign, group_mask: u64) {
    let mut prg = ChaCha20Rng::from_seed(seed);
    for value in values.iter_mut() {
        let mask = prg.next_u64() & group_mask;
        *value = match sign {
            MaskSign::Add => value.wrapping_add(mask),
            MaskSign::Subtract => value.wrapping_sub(mask),
        } & group_mask;
    }
}

/// `update` quantized with `params` and masked for every peer in `mask_peers` (the peers that
/// completed key sharing, sorted by id; an entry for `me` itself is skipped). With no peers
/// the result is the plain fixed-point encoding. Values come back in [0, 2^modulus_bits).
pub fn mask_update(
    me: &str,
    keys: &KeyPair,
    update: &[f32],
    mask_peers: &[Peer],
    params: MaskingParams,
) -> Result<Vec<i64>, SecAggError> {
    params.validate()?;
    check_sorted(mask_peers)?;
    let mut values = update
        .iter()
        .enumerate()
        .map(|(index, &value)| params.quantize(index, f64::from(value)))
        .collect::<Result<Vec<u64>, _>>()?;
    for (peer, public) in mask_peers.iter().filter(|(id, _)| id != me) {
        let seed = keys.pairwise_key(peer, public, KeyPurpose::MaskSeed)?;
        apply_mask(
            &mut values,
            seed,
            MaskSign::of(me, peer),
            params.group_mask(),
        );
    }
    Ok(values.into_iter().map(|v| v as i64).collect())
}

#[cfg(test)]
mod tests {
    use rand_chacha::ChaCha20Rng;

    use super::*;

    #[test]
    fn prg_is_the_rfc8439_chacha20_keystream_as_le_words() {
        // RFC 8439 appendix A.1 test vector #1: all-zero key and nonce, block counter 0.
        let mut values = [0u64; 2];
        apply_mask(&mut values, [0; 32], MaskSign::Add, u64::MAX);
        assert_eq!(values, [0x903d_f1a0_ade0_b876, 0x28bd_8653_e56a_5d40]);
        let mut values = [0u64; 2];
        apply_mask(&mut values, [0; 32], MaskSign::Add, (1 << 62) - 1);
        assert_eq!(values, [0x103d_f1a0_ade0_b876, 0x28bd_8653_e56a_5d40]);
    }

    #[test]
    fn subtracting_a_mask_undoes_adding_it() {
        let mask = (1u64 << 20) - 1;
        let mut values: Vec<u64> = (0..100).map(|i| (i * 977) & mask).collect();
        let original = values.clone();
        apply_mask(&mut values, [5; 32], MaskSign::Add, mask);
        assert_ne!(values, original);
        apply_mask(&mut values, [5; 32], MaskSign::Subtract, mask);
        assert_eq!(values, original);
    }

    #[test]
    fn sign_follows_byte_wise_order() {
        assert_eq!(MaskSign::of("a", "b"), MaskSign::Add);
        assert_eq!(MaskSign::of("b", "a"), MaskSign::Subtract);
        assert_eq!(MaskSign::of("Z", "a"), MaskSign::Add);
        assert_eq!(MaskSign::of("ab", "a"), MaskSign::Subtract);
        assert_eq!(MaskSign::Add.inverse(), MaskSign::Subtract);
    }

    #[test]
    fn without_peers_the_update_is_plainly_quantized() {
        let keys = KeyPair::generate(&mut ChaCha20Rng::seed_from_u64(1));
        let params = MaskingParams::new(16, 4.0).unwrap();
        let masked = mask_update("a", &keys, &[1.0, -1.0, 0.1], &[], params).unwrap();
        assert_eq!(masked, vec![4, 65532, 0]);
    }

    #[test]
    fn own_entry_in_mask_peers_is_skipped() {
        let keys = KeyPair::generate(&mut ChaCha20Rng::seed_from_u64(1));
        let me = vec![("a".to_owned(), keys.public())];
        let params = MaskingParams::default();
        assert_eq!(
            mask_update("a", &keys, &[0.5], &me, params),
            mask_update("a", &keys, &[0.5], &[], params)
        );
    }

    #[test]
    fn bad_inputs_are_rejected_with_their_condition() {
        let keys = KeyPair::generate(&mut ChaCha20Rng::seed_from_u64(1));
        let params = MaskingParams::default();
        let unsorted = vec![("c".to_owned(), [9; 32]), ("b".to_owned(), [9; 32])];
        let cases: Vec<(&[f32], &[Peer], MaskingParams, SecAggError)> = vec![
            (
                &[f32::NAN],
                &[],
                params,
                SecAggError::NonFiniteValue { index: 0 },
            ),
            (
                &[0.0, 40000.0],
                &[],
                params,
                SecAggError::ValueOutOfRange {
                    index: 1,
                    value: 40000.0,
                },
            ),
            (
                &[0.0],
                &unsorted,
                params,
                SecAggError::PeersNotSorted {
                    previous: "c".into(),
                    next: "b".into(),
                },
            ),
            (
                &[0.0],
                &[],
                MaskingParams {
                    modulus_bits: 63,
                    scale: 1.0,
                },
                SecAggError::InvalidModulusBits { bits: 63 },
            ),
        ];
        for (update, peers, params, expected) in cases {
            assert_eq!(
                mask_update("a", &keys, update, peers, params),
                Err(expected.clone()),
                "{expected}"
            );
        }
    }
}
