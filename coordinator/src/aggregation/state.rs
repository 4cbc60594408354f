//! [`ServerState`]: the server optimizer's memory between rounds, and its blob form.
//!
//! The state is data the caller stores durably (e.g. in the replicated log) and hands back to
//! the next round; this module never keeps it. Blob layout, all little-endian:
//!
//! ```text
//!   "SYAG" │ version u8 = 1 │ 3 zero bytes │ steps u64 │ len momentum u64 │ len m u64 │ len v u64
//!   │ momentum f32 × len │ m f32 × len │ v f32 × len
//! ```

use serde::{Deserialize, Serialize};
use thiserror::Error;

const MAGIC: &[u8; 4] = b"SYAG";
const VERSION: u8 = 1;
const HEADER_BYTES: usize = 8 + 4 * 8;

/// Durable server-optimizer state between rounds. All vectors are empty for the stateless
/// strategies (FedAvg, FedMedian, FedTrimmedAvg, Krum), which never touch it.
///
/// Vectors point in the update direction (global model moves by `+`): `momentum` is the
/// negation of Flower's `momentum_vector` (which stores pseudo-gradients `global − mean`);
/// `m` and `v` are Flower's `m_t` and `v_t` as they are. A state belongs to one strategy:
/// start from `ServerState::default()` when the strategy changes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct ServerState {
    /// Server-optimizer steps applied so far (Flower's `server_round` of the last step).
    pub steps: u64,
    /// FedAvgM momentum buffer; empty before the first step.
    pub momentum: Vec<f32>,
    /// FedAdam / FedYogi first moment; empty before the first step.
    pub m: Vec<f32>,
    /// FedAdam / FedYogi second moment; empty before the first step.
    pub v: Vec<f32>,
}

/// Why a blob is not a [`ServerState`].
#[derive(Debug, Error, PartialEq, Eq)]
pub enum StateDecodeError {
    /// Shorter than the fixed header.
    #[error("server state blob has {0} bytes, shorter than its header")]
    TooShort(usize),
    /// Does not start with `SYAG`.
    #[error("server state blob has a wrong magic number")]
    BadMagic,
    /// Written by a newer layout.
    #[error("server state blob version {0} is not supported")]
    UnsupportedVersion(u8),
    /// The header's lengths do not add up to the blob's size.
    #[error("server state blob has {actual} bytes, its header says {expected}")]
    LengthMismatch {
        /// Size the header implies.
        expected: u128,
        /// Size of the blob.
        actual: usize,
    },
    /// A stored value is NaN or infinite.
    #[error("server state blob holds a non-finite value")]
    NonFinite,
}

impl ServerState {
    /// The blob form (see the module docs).
    pub fn to_bytes(&self) -> Vec<u8> {
        let values = self.momentum.len() + self.m.len() + self.v.len();
        let mut out = Vec::with_capacity(HEADER_BYTES + 4 * values);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&[VERSION, 0, 0, 0]);
        out.extend_from_slice(&self.steps.to_le_bytes());
        for part in [&self.momentum, &self.m, &self.v] {
            out.extend_from_slice(&(part.len() as u64).to_le_bytes());
        }
        for part in [&self.momentum, &self.m, &self.v] {
            out.extend(part.iter().flat_map(|x| x.to_le_bytes()));
        }
        out
    }

    /// Parses [`to_bytes`](Self::to_bytes) output, refusing anything malformed.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, StateDecodeError> {
        if bytes.len() < HEADER_BYTES {
            return Err(StateDecodeError::TooShort(bytes.len()));
        }
        if &bytes[..4] != MAGIC {
            return Err(StateDecodeError::BadMagic);
        }
        if bytes[4] != VERSION {
            return Err(StateDecodeError::UnsupportedVersion(bytes[4]));
        }
        let word = |i: usize| u64::from_le_bytes(std::array::from_fn(|k| bytes[8 + 8 * i + k]));
        let lens = [word(1), word(2), word(3)];
        let expected = HEADER_BYTES as u128 + 4 * lens.iter().map(|&l| u128::from(l)).sum::<u128>();
        if expected != bytes.len() as u128 {
            return Err(StateDecodeError::LengthMismatch {
                expected,
                actual: bytes.len(),
            });
        }
        let mut rest = &bytes[HEADER_BYTES..];
        let mut parts = lens.map(|len| {
            let (head, tail) = rest.split_at(4 * len as usize);
            rest = tail;
            decode_f32s(head)
        });
        if parts.iter().flatten().any(|x| !x.is_finite()) {
            return Err(StateDecodeError::NonFinite);
        }
        Ok(Self {
            steps: word(0),
            v: std::mem::take(&mut parts[2]),
            m: std::mem::take(&mut parts[1]),
            momentum: std::mem::take(&mut parts[0]),
        })
    }
}

fn decode_f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}
