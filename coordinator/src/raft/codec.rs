//! Binary encoding of everything Synod stores or sends between nodes (log entries, snapshots,
//! Raft messages, forwarded batches).

use serde::{de::DeserializeOwned, Serialize};

/// A value could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {source}")]
pub struct CodecError {
    what: &'static str,
    #[source]
    source: postcard::Error,
}

/// Encodes `value`; `what` names it in errors. The output is sized first and written once:
/// a log entry of several MB is copied once instead of being regrown through every doubling.
pub fn encode<T: Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>, CodecError> {
    let error = |source| CodecError { what, source };
    let size = postcard::serialize_with_flavor(value, postcard::ser_flavors::Size::default())
        .map_err(error)?;
    postcard::serialize_with_flavor(value, Appender(Vec::with_capacity(size))).map_err(error)
}

/// Postcard output appending each run of bytes with one copy (postcard's `to_extend` output
/// moves byte strings one byte at a time).
struct Appender(Vec<u8>);

impl postcard::ser_flavors::Flavor for Appender {
    type Output = Vec<u8>;

    fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
        self.0.push(byte);
        Ok(())
    }

    fn try_extend(&mut self, bytes: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(bytes);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<Vec<u8>> {
        Ok(self.0)
    }
}

/// Decodes a value encoded by [`encode`].
pub fn decode<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, CodecError> {
    postcard::from_bytes(bytes).map_err(|source| CodecError { what, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_values_are_sized_exactly_and_decode_back() {
        let value = (
            7u64,
            "entry".to_owned(),
            serde_bytes::ByteBuf::from(vec![3u8; 100_000]),
        );
        let encoded = encode("test value", &value).unwrap();
        assert_eq!(
            encoded.capacity(),
            encoded.len(),
            "written once, no regrowth"
        );
        let back: (u64, String, serde_bytes::ByteBuf) = decode("test value", &encoded).unwrap();
        assert_eq!(back, value);
        assert_eq!(encoded, postcard::to_allocvec(&value).unwrap());
    }
}
