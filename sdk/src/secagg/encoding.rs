//! Masked updates on the wire: `DTYPE_I64` values, little-endian, 8 bytes each, no padding
//! (the proto's model encoding).

use super::SecAggError;

/// `values` as little-endian bytes, 8 per value.
pub fn i64s_to_le_bytes(values: &[i64]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Little-endian 8-byte values from `bytes`, whose length must be a multiple of 8.
pub fn i64s_from_le_bytes(bytes: &[u8]) -> Result<Vec<i64>, SecAggError> {
    if !bytes.len().is_multiple_of(8) {
        return Err(SecAggError::PayloadLength { len: bytes.len() });
    }
    let words = bytes.chunks_exact(8);
    Ok(words
        .map(|w| i64::from_le_bytes(w.try_into().expect("chunks are 8 bytes")))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_exact_layout() {
        let values = [0, 1, -1, i64::MAX, (1 << 62) - 1];
        let bytes = i64s_to_le_bytes(&values);
        assert_eq!(bytes.len(), 40);
        assert_eq!(bytes[8..16], [1, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(bytes[16..24], [0xFF; 8]);
        assert_eq!(i64s_from_le_bytes(&bytes), Ok(values.to_vec()));
        assert_eq!(i64s_from_le_bytes(&[]), Ok(vec![]));
    }

    #[test]
    fn ragged_payload_is_rejected() {
        assert_eq!(
            i64s_from_le_bytes(&[0; 12]),
            Err(SecAggError::PayloadLength { len: 12 })
        );
    }
}
