//! [`ServerState`] blobs: exact round trip, and refusal of anything malformed.

use super::*;
use crate::aggregation::StateDecodeError;

fn sample() -> ServerState {
    ServerState {
        steps: 7,
        momentum: vec![],
        m: vec![0.5, -1.25, f32::MIN_POSITIVE],
        v: vec![1e-30, 3.0, f32::MAX],
    }
}

#[test]
fn round_trips_exactly() {
    for state in [ServerState::default(), sample()] {
        let bytes = state.to_bytes();
        assert_eq!(
            bytes.len(),
            40 + 4 * (state.momentum.len() + state.m.len() + state.v.len())
        );
        assert_eq!(ServerState::from_bytes(&bytes), Ok(state));
    }
}

#[test]
fn layout_is_little_endian_after_the_header() {
    let state = ServerState {
        steps: 2,
        momentum: vec![1.0],
        m: vec![],
        v: vec![],
    };
    let bytes = state.to_bytes();
    assert_eq!(&bytes[..8], b"SYAG\x01\0\0\0");
    assert_eq!(&bytes[8..16], &2u64.to_le_bytes());
    assert_eq!(&bytes[16..24], &1u64.to_le_bytes());
    assert_eq!(&bytes[40..], &1.0f32.to_le_bytes());
}

#[test]
fn malformed_blobs_are_refused() {
    let good = sample().to_bytes();
    let mut magic = good.clone();
    magic[0] = b'X';
    let mut version = good.clone();
    version[4] = 9;
    let mut nan = good.clone();
    let last = nan.len() - 4;
    nan[last..].copy_from_slice(&f32::NAN.to_le_bytes());
    let cases = [
        (good[..10].to_vec(), StateDecodeError::TooShort(10)),
        (magic, StateDecodeError::BadMagic),
        (version, StateDecodeError::UnsupportedVersion(9)),
        (
            good[..good.len() - 1].to_vec(),
            StateDecodeError::LengthMismatch {
                expected: 64,
                actual: 63,
            },
        ),
        (nan, StateDecodeError::NonFinite),
    ];
    for (bytes, want) in cases {
        assert_eq!(ServerState::from_bytes(&bytes), Err(want));
    }
}
