//! Fixed-point encoding of update values into the group Z / 2^modulus_bits.
//!
//! ```text
//!   encode: q = round(v · scale) mod 2^bits              |round(v · scale)| < 2^(bits−1)
//!   decode: x ∈ [0, 2^bits) ─► (x ≥ 2^(bits−1) ? x − 2^bits : x) / scale
//! ```
//!
//! Rounding is half away from zero. Decoding is centered, so a sum decodes correctly only
//! while it stays inside ±2^(bits−1): with n participants each |v| must be at most
//! [`MaskingParams::max_safe_abs_value`]`(n)`, or the sum silently wraps around.

use super::SecAggError;

/// Default bits of the group (`modulus_bits = 0` in the proto).
pub const DEFAULT_MODULUS_BITS: u32 = 32;
/// Default fixed-point scale (`scale = 0` in the proto).
pub const DEFAULT_SCALE: f64 = 65536.0;
/// Largest supported `modulus_bits`: sums of two group elements must fit in an i64.
pub const MAX_MODULUS_BITS: u32 = 62;

/// The fixed-point group and scale of a round. Fields are public like a config's; every
/// function taking one calls [`MaskingParams::validate`] first.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MaskingParams {
    /// Bits of the group: values live in [0, 2^modulus_bits); 1..=62.
    pub modulus_bits: u32,
    /// Multiplier applied to update values before rounding; finite and > 0.
    pub scale: f64,
}

impl Default for MaskingParams {
    fn default() -> Self {
        MaskingParams {
            modulus_bits: DEFAULT_MODULUS_BITS,
            scale: DEFAULT_SCALE,
        }
    }
}

impl MaskingParams {
    /// Validated parameters.
    pub fn new(modulus_bits: u32, scale: f64) -> Result<MaskingParams, SecAggError> {
        let params = MaskingParams {
            modulus_bits,
            scale,
        };
        params.validate()?;
        Ok(params)
    }

    /// Validated parameters from the proto's `SecureAggregation` fields, where 0 means the
    /// default.
    pub fn from_proto(modulus_bits: u32, scale: f64) -> Result<MaskingParams, SecAggError> {
        let bits = if modulus_bits == 0 {
            DEFAULT_MODULUS_BITS
        } else {
            modulus_bits
        };
        MaskingParams::new(bits, if scale == 0.0 { DEFAULT_SCALE } else { scale })
    }

    /// Checks `modulus_bits` is in 1..=62 and `scale` is finite and above zero.
    pub fn validate(&self) -> Result<(), SecAggError> {
        if !(1..=MAX_MODULUS_BITS).contains(&self.modulus_bits) {
            return Err(SecAggError::InvalidModulusBits {
                bits: self.modulus_bits,
            });
        }
        if !(self.scale.is_finite() && self.scale > 0.0) {
            return Err(SecAggError::InvalidScale { scale: self.scale });
        }
        Ok(())
    }

    /// 2^modulus_bits − 1: reduces a u64 modulo the group size.
    pub(crate) fn group_mask(&self) -> u64 {
        (1u64 << self.modulus_bits) - 1
    }

    /// 2^(modulus_bits − 1): decoded values lie in [−half, half).
    fn half_group(&self) -> u64 {
        1u64 << (self.modulus_bits - 1)
    }

    /// The largest |v| each of `participants` updates may hold so that the sum of their
    /// quantized values stays within ±(2^(bits−1) − 1) and decodes without wrapping:
    /// ⌊(2^(bits−1) − 1) / n⌋ / scale. Zero participants are treated as one.
    pub fn max_safe_abs_value(&self, participants: usize) -> f64 {
        let n = participants.max(1) as u64;
        ((self.half_group() - 1) / n) as f64 / self.scale
    }

    /// `value` quantized into the group; `index` names it in errors.
    pub(crate) fn quantize(&self, index: usize, value: f64) -> Result<u64, SecAggError> {
        if !value.is_finite() {
            return Err(SecAggError::NonFiniteValue { index });
        }
        let rounded = (value * self.scale).round();
        if rounded.abs() >= self.half_group() as f64 {
            return Err(SecAggError::ValueOutOfRange { index, value });
        }
        Ok((rounded as i64 as u64) & self.group_mask())
    }

    /// A group element decoded as a signed fixed-point value.
    pub(crate) fn decode(&self, element: u64) -> f64 {
        let element = element & self.group_mask();
        let signed = if element >= self.half_group() {
            element as i64 - (1i64 << self.modulus_bits)
        } else {
            element as i64
        };
        signed as f64 / self.scale
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_accepts_the_documented_ranges_only() {
        let cases = [
            (32, 65536.0, None),
            (1, 1.0, None),
            (62, 1e-3, None),
            (0, 1.0, Some(SecAggError::InvalidModulusBits { bits: 0 })),
            (63, 1.0, Some(SecAggError::InvalidModulusBits { bits: 63 })),
            (32, 0.0, Some(SecAggError::InvalidScale { scale: 0.0 })),
            (32, -2.0, Some(SecAggError::InvalidScale { scale: -2.0 })),
            (
                32,
                f64::INFINITY,
                Some(SecAggError::InvalidScale {
                    scale: f64::INFINITY,
                }),
            ),
        ];
        for (bits, scale, expected) in cases {
            assert_eq!(
                MaskingParams::new(bits, scale).err(),
                expected,
                "{bits} {scale}"
            );
        }
        assert!(matches!(
            MaskingParams::new(32, f64::NAN),
            Err(SecAggError::InvalidScale { .. })
        ));
    }

    #[test]
    fn proto_zeros_mean_defaults() {
        assert_eq!(
            MaskingParams::from_proto(0, 0.0),
            Ok(MaskingParams::default())
        );
        assert_eq!(
            MaskingParams::from_proto(16, 8.0),
            Ok(MaskingParams {
                modulus_bits: 16,
                scale: 8.0
            })
        );
    }

    #[test]
    fn quantize_and_decode_table() {
        let p = MaskingParams::new(8, 4.0).unwrap(); // group 256, values in [-128, 128)
        let cases = [
            (0.0, 0u64, 0.0),
            (1.0, 4, 1.0),
            (-1.0, 252, -1.0),
            (0.124, 0, 0.0),
            (0.125, 1, 0.25), // half away from zero
            (-0.125, 255, -0.25),
            (31.75, 127, 31.75),
            (-31.75, 129, -31.75),
        ];
        for (value, element, decoded) in cases {
            assert_eq!(p.quantize(0, value), Ok(element), "{value}");
            assert_eq!(p.decode(element), decoded, "{value}");
        }
        assert_eq!(p.decode(128), -32.0);
    }

    #[test]
    fn values_outside_half_the_group_are_rejected() {
        let p = MaskingParams::new(8, 4.0).unwrap();
        for value in [32.0, -32.0, 31.875, 1e300] {
            assert_eq!(
                p.quantize(3, value),
                Err(SecAggError::ValueOutOfRange { index: 3, value }),
                "{value}"
            );
        }
        for value in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert_eq!(
                p.quantize(5, value),
                Err(SecAggError::NonFiniteValue { index: 5 })
            );
        }
    }

    #[test]
    fn sixty_two_bits_round_trips_extremes() {
        let p = MaskingParams::new(62, 1.0).unwrap();
        let max = (1i64 << 61) - 1024; // representable in f64
        assert_eq!(p.quantize(0, max as f64), Ok(max as u64));
        assert_eq!(p.decode(max as u64), max as f64);
        let min = p.quantize(0, -(max as f64)).unwrap();
        assert_eq!(min, (1u64 << 62) - max as u64);
        assert_eq!(p.decode(min), -(max as f64));
        assert!(p.quantize(0, 2f64.powi(61)).is_err());
    }

    #[test]
    fn max_safe_abs_value_table() {
        let default = MaskingParams::default();
        let cases = [
            (default, 1, 2147483647.0 / 65536.0),
            (default, 4, 536870911.0 / 65536.0),
            (default, 0, 2147483647.0 / 65536.0),
            (MaskingParams::new(8, 4.0).unwrap(), 3, 42.0 / 4.0),
            (MaskingParams::new(1, 1.0).unwrap(), 5, 0.0),
        ];
        for (params, n, expected) in cases {
            assert_eq!(params.max_safe_abs_value(n), expected, "{params:?} n={n}");
        }
    }
}
