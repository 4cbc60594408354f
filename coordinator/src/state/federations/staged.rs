//! [`StagedBytes`]: a model's bytes while they are staged chunk by chunk. Each chunk is kept as
//! the shared buffer its `StageModel` entry already holds, so a model staged in one chunk is
//! committed without a copy; several chunks are joined once, at commit.
//!
//! Stored (snapshots) exactly as one byte string, the same form as a plain byte vector.

use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The chunks staged so far, in order.
#[derive(Debug, Clone, Default)]
pub struct StagedBytes {
    pieces: Vec<Bytes>,
    len: usize,
}

impl StagedBytes {
    /// Bytes staged so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing is staged.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends `piece` (shared, not copied).
    pub fn push(&mut self, piece: Bytes) {
        self.len += piece.len();
        if !piece.is_empty() {
            self.pieces.push(piece);
        }
    }

    /// The bytes before `at` and those from it: the first piece itself when it ends exactly
    /// there (a model staged apart from the server state that follows it), else joined and cut.
    pub fn split_at(mut self, at: usize) -> (Bytes, Bytes) {
        if self.pieces.first().is_some_and(|p| p.len() == at) {
            let head = self.pieces.remove(0);
            self.len -= at;
            return (head, self.into_bytes());
        }
        let mut joined = self.into_bytes();
        let tail = joined.split_off(at.min(joined.len()));
        (joined, tail)
    }

    /// The staged bytes as one buffer: the only piece itself, or the pieces joined.
    pub fn into_bytes(mut self) -> Bytes {
        match self.pieces.len() {
            0 => Bytes::new(),
            1 => self.pieces.remove(0),
            _ => {
                let mut joined = BytesMut::with_capacity(self.len);
                self.pieces.iter().for_each(|p| joined.extend_from_slice(p));
                joined.freeze()
            }
        }
    }
}

impl PartialEq for StagedBytes {
    fn eq(&self, other: &Self) -> bool {
        let bytes = |s: &Self| {
            s.pieces
                .iter()
                .flat_map(|p| p.iter())
                .copied()
                .collect::<Vec<u8>>()
        };
        self.len == other.len && bytes(self) == bytes(other)
    }
}

impl Eq for StagedBytes {}

impl From<Vec<u8>> for StagedBytes {
    fn from(bytes: Vec<u8>) -> Self {
        let mut staged = Self::default();
        staged.push(bytes.into());
        staged
    }
}

impl Serialize for StagedBytes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.clone().into_bytes())
    }
}

impl<'de> Deserialize<'de> for StagedBytes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let bytes: serde_bytes::ByteBuf = Deserialize::deserialize(deserializer)?;
        Ok(bytes.into_vec().into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_piece_is_committed_without_a_copy_and_several_are_joined() {
        let piece = Bytes::from(vec![1u8, 2, 3]);
        let mut one = StagedBytes::default();
        one.push(piece.clone());
        let committed = one.into_bytes();
        assert_eq!(committed.as_ptr(), piece.as_ptr(), "the entry's own buffer");
        let mut several = StagedBytes::default();
        several.push(Bytes::from_static(&[1, 2]));
        several.push(Bytes::new());
        several.push(Bytes::from_static(&[3]));
        assert_eq!(several.len(), 3);
        assert_eq!(several.clone(), StagedBytes::from(vec![1, 2, 3]));
        assert_eq!(&several.clone().into_bytes()[..], &[1, 2, 3]);
        let (head, tail) = several.clone().split_at(2);
        assert_eq!((&head[..], &tail[..]), (&[1u8, 2][..], &[3u8][..]));
        let (head, tail) = several.split_at(1);
        assert_eq!((&head[..], &tail[..]), (&[1u8][..], &[2u8, 3][..]));
        let mut model_then_state = StagedBytes::default();
        model_then_state.push(piece.clone());
        model_then_state.push(Bytes::from_static(&[4]));
        let (model, state) = model_then_state.split_at(3);
        assert_eq!(model.as_ptr(), piece.as_ptr(), "the model's own buffer");
        assert_eq!(&state[..], &[4]);
    }

    #[test]
    fn stored_as_a_plain_byte_string() {
        #[derive(Serialize)]
        struct Plain {
            #[serde(with = "serde_bytes")]
            data: Vec<u8>,
        }
        #[derive(Serialize, Deserialize)]
        struct Staged {
            data: StagedBytes,
        }
        let mut staged = StagedBytes::default();
        staged.push(Bytes::from_static(&[9, 8]));
        staged.push(Bytes::from_static(&[7]));
        let encoded = postcard::to_allocvec(&Staged { data: staged }).unwrap();
        let plain = postcard::to_allocvec(&Plain {
            data: vec![9, 8, 7],
        })
        .unwrap();
        assert_eq!(encoded, plain);
        let back: Staged = postcard::from_bytes(&plain).unwrap();
        assert_eq!(back.data, StagedBytes::from(vec![9, 8, 7]));
    }
}
