//! The coordinator's running sum of masked updates, and removal of dropped participants'
//! masks from it.
//!
//! ```text
//!   add(y_s) for each survivor s          sum = Σ_s q_s + Σ_s Σ_{d dropped} s_sd · PRG(k_sd)
//!   remove_dropped_masks(d, sk_d, S)      sum −= Σ_{s ∈ S} s_sd · PRG(k_sd),
//!                                         k_sd from X25519(sk_d, pk_s)
//!   decode()                              centered Σ_s q_s / scale
//! ```
//!
//! Masks between two survivors cancel by themselves; masks between two dropped participants
//! never entered the sum. Nothing here ever holds an individual plaintext update.

use super::keys::KeyPurpose;
use super::masking::{apply_mask, MaskSign};
use super::peers::{check_sorted, Peer};
use super::{KeyPair, MaskingParams, SecAggError};

/// Σ of masked updates modulo 2^modulus_bits.
#[derive(Debug, Clone, PartialEq)]
pub struct MaskedSum {
    params: MaskingParams,
    values: Vec<u64>,
    updates: usize,
}

impl MaskedSum {
    /// An empty sum of `dim`-value updates.
    pub fn new(dim: usize, params: MaskingParams) -> Result<MaskedSum, SecAggError> {
        params.validate()?;
        Ok(MaskedSum {
            params,
            values: vec![0; dim],
            updates: 0,
        })
    }

    /// Folds in one masked update; all of it or none: it must have `dim` values, each in
    /// [0, 2^modulus_bits).
    pub fn add(&mut self, masked: &[i64]) -> Result<(), SecAggError> {
        if masked.len() != self.values.len() {
            return Err(SecAggError::DimensionMismatch {
                expected: self.values.len(),
                actual: masked.len(),
            });
        }
        let group_mask = self.params.group_mask();
        if let Some((index, &value)) = masked
            .iter()
            .enumerate()
            .find(|&(_, &v)| v < 0 || v as u64 > group_mask)
        {
            return Err(SecAggError::ValueOutsideGroup { index, value });
        }
        for (sum, &value) in self.values.iter_mut().zip(masked) {
            *sum = sum.wrapping_add(value as u64) & group_mask;
        }
        self.updates += 1;
        Ok(())
    }

    /// Removes the masks dropped participant `dropped_id` (private key `dropped_secret`) shared
    /// with each of `survivors` (sorted by id, every one of whose updates was added and
    /// included `dropped_id` among its mask peers). Each dropped participant must be removed
    /// exactly once; on error the sum is unchanged.
    pub fn remove_dropped_masks(
        &mut self,
        dropped_id: &str,
        dropped_secret: [u8; 32],
        survivors: &[Peer],
    ) -> Result<(), SecAggError> {
        check_sorted(survivors)?;
        if survivors.iter().any(|(id, _)| id == dropped_id) {
            return Err(SecAggError::DroppedIsSurvivor {
                agent_id: dropped_id.to_owned(),
            });
        }
        let dropped = KeyPair::from_secret_bytes(dropped_secret);
        let seeds = survivors
            .iter()
            .map(|(id, public)| {
                let seed = dropped.pairwise_key(id, public, KeyPurpose::MaskSeed)?;
                Ok((seed, MaskSign::of(id, dropped_id).inverse()))
            })
            .collect::<Result<Vec<_>, SecAggError>>()?;
        for (seed, sign) in seeds {
            apply_mask(&mut self.values, seed, sign, self.params.group_mask());
        }
        Ok(())
    }

    /// Values per update.
    pub fn dim(&self) -> usize {
        self.values.len()
    }

    /// Updates added so far.
    pub fn updates(&self) -> usize {
        self.updates
    }

    /// The raw group elements of the sum, in [0, 2^modulus_bits).
    pub fn raw(&self) -> Vec<i64> {
        self.values.iter().map(|&v| v as i64).collect()
    }

    /// The sum decoded as signed fixed-point values: correct once every dropped
    /// participant's masks are removed and while the true sum stays within ±2^(bits−1) / scale.
    pub fn decode(&self) -> Vec<f64> {
        self.values.iter().map(|&v| self.params.decode(v)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(bits: u32) -> MaskingParams {
        MaskingParams::new(bits, 4.0).unwrap()
    }

    #[test]
    fn add_wraps_modulo_the_group_and_decodes_centered() {
        let mut sum = MaskedSum::new(3, params(8)).unwrap();
        sum.add(&[250, 4, 128]).unwrap();
        sum.add(&[10, 252, 0]).unwrap();
        assert_eq!(sum.raw(), vec![4, 0, 128]);
        assert_eq!(sum.decode(), vec![1.0, 0.0, -32.0]);
        assert_eq!((sum.dim(), sum.updates()), (3, 2));
    }

    #[test]
    fn out_of_group_or_misshapen_updates_are_rejected_and_leave_the_sum_alone() {
        let mut sum = MaskedSum::new(2, params(8)).unwrap();
        sum.add(&[1, 2]).unwrap();
        let cases: [(&[i64], SecAggError); 4] = [
            (
                &[1, 256],
                SecAggError::ValueOutsideGroup {
                    index: 1,
                    value: 256,
                },
            ),
            (
                &[-1, 0],
                SecAggError::ValueOutsideGroup {
                    index: 0,
                    value: -1,
                },
            ),
            (
                &[i64::MIN, 0],
                SecAggError::ValueOutsideGroup {
                    index: 0,
                    value: i64::MIN,
                },
            ),
            (
                &[1],
                SecAggError::DimensionMismatch {
                    expected: 2,
                    actual: 1,
                },
            ),
        ];
        for (masked, expected) in cases {
            assert_eq!(sum.add(masked), Err(expected.clone()), "{expected}");
        }
        assert_eq!((sum.raw(), sum.updates()), (vec![1, 2], 1));
        sum.add(&[255, 255]).unwrap();
        assert_eq!(sum.raw(), vec![0, 1]);
    }

    #[test]
    fn sixty_two_bit_elements_add_without_overflow() {
        let top = (1i64 << 62) - 1;
        let mut sum = MaskedSum::new(1, params(62)).unwrap();
        sum.add(&[top]).unwrap();
        sum.add(&[top]).unwrap();
        assert_eq!(sum.raw(), vec![top - 1]);
        assert_eq!(
            sum.add(&[top + 1]),
            Err(SecAggError::ValueOutsideGroup {
                index: 0,
                value: top + 1
            })
        );
    }

    #[test]
    fn a_dropped_participant_listed_as_survivor_is_refused() {
        let mut sum = MaskedSum::new(1, params(8)).unwrap();
        let survivors = vec![("a".to_owned(), [9; 32]), ("d".to_owned(), [9; 32])];
        assert_eq!(
            sum.remove_dropped_masks("d", [1; 32], &survivors),
            Err(SecAggError::DroppedIsSurvivor {
                agent_id: "d".into()
            })
        );
        let low_order = vec![("a".to_owned(), [0; 32])];
        assert_eq!(
            sum.remove_dropped_masks("d", [1; 32], &low_order),
            Err(SecAggError::LowOrderPublicKey {
                agent_id: "a".into()
            })
        );
        assert_eq!(sum.raw(), vec![0]);
    }

    #[test]
    fn invalid_params_are_refused() {
        assert_eq!(
            MaskedSum::new(
                1,
                MaskingParams {
                    modulus_bits: 0,
                    scale: 1.0
                }
            ),
            Err(SecAggError::InvalidModulusBits { bits: 0 })
        );
    }
}
