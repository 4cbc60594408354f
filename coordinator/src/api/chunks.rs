//! Blobs streamed as `Chunk` messages, both ways: receiving checks order, the declared size,
//! a size limit and the SHA-256 before anything is used; sending cuts a payload into 1 MiB
//! chunks from an offset. Shared by checkpoints, models and federated updates.
//!
//! ```text
//!   receive: chunk.offset == bytes so far ─► size ≤ declared ≤ limit ─► last ─► size, SHA-256
//!   send:    payload[offset..] ─► Chunk{offset, ≤ 1 MiB, last}
//! ```

use sha2::{Digest, Sha256};
use synod_proto::v1 as pb;
use synod_sdk::tensors::hex;
use tonic::{Status, Streaming};

use super::ApiError;

/// Bytes per chunk sent.
pub const CHUNK_BYTES: usize = 1024 * 1024;

/// Receives the chunks following a header that declared `declared`, refusing blobs over
/// `limit` bytes (named `limit_name` in the error). `chunk_of` takes a message's chunk; a
/// message without one is out of place. Returns the bytes and their SHA-256.
pub async fn receive<T>(
    stream: &mut Streaming<T>,
    declared: &pb::BlobInfo,
    limit: u64,
    limit_name: &str,
    chunk_of: impl Fn(T) -> Option<pb::Chunk>,
) -> Result<(Vec<u8>, String), ApiError> {
    if declared.size_bytes > limit {
        return Err(too_large(declared.size_bytes, limit, limit_name));
    }
    let mut data = Vec::with_capacity(declared.size_bytes as usize);
    let mut hasher = Sha256::new();
    let mut last = false;
    while !last {
        let message = stream.message().await.map_err(stream_error)?;
        let chunk = match message {
            Some(message) => chunk_of(message)
                .ok_or_else(|| ApiError::invalid("chunk", "the header may come only once"))?,
            None => {
                return Err(ApiError::invalid(
                    "chunk",
                    "the stream ended before the last chunk",
                ))
            }
        };
        if chunk.offset != data.len() as u64 {
            return Err(ApiError::invalid(
                "chunk.offset",
                format!("{}, expected {}", chunk.offset, data.len()),
            ));
        }
        let size = (data.len() + chunk.data.len()) as u64;
        if size > declared.size_bytes {
            return Err(ApiError::invalid(
                "blob.size_bytes",
                format!("{} declared, more received", declared.size_bytes),
            ));
        }
        hasher.update(&chunk.data);
        data.extend_from_slice(&chunk.data);
        last = chunk.last;
    }
    let sha256 = hex(&hasher.finalize());
    if data.len() as u64 != declared.size_bytes {
        return Err(ApiError::invalid(
            "blob.size_bytes",
            format!("{} declared, {} received", declared.size_bytes, data.len()),
        ));
    }
    if sha256 != declared.sha256.to_lowercase() {
        return Err(ApiError::invalid(
            "blob.sha256",
            format!("{} declared, {sha256} received", declared.sha256),
        ));
    }
    Ok((data, sha256))
}

/// `data` from `offset` as chunks; one empty last chunk for an empty remainder.
pub fn chunks(data: &[u8], offset: usize) -> impl Iterator<Item = pb::Chunk> + '_ {
    let rest = data.get(offset..).unwrap_or_default();
    let count = rest.len().div_ceil(CHUNK_BYTES).max(1);
    (0..count).map(move |i| {
        let start = i * CHUNK_BYTES;
        let end = (start + CHUNK_BYTES).min(rest.len());
        pb::Chunk {
            offset: (offset + start) as u64,
            data: rest[start..end].to_vec(),
            last: i + 1 == count,
        }
    })
}

/// A blob over its limit.
pub fn too_large(size: u64, max: u64, limit_name: &str) -> ApiError {
    ApiError::ResourceExhausted(format!(
        "blob.size_bytes: {size} bytes, the limit ({limit_name}) is {max}"
    ))
}

/// A broken request stream.
pub fn stream_error(status: Status) -> ApiError {
    ApiError::invalid("stream", status.message().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_the_payload_from_the_offset() {
        let data = vec![7u8; CHUNK_BYTES * 2 + 10];
        let sent: Vec<pb::Chunk> = chunks(&data, 5).collect();
        assert_eq!(sent.len(), 3);
        assert_eq!(sent[0].offset, 5);
        assert_eq!(sent[2].offset as usize + sent[2].data.len(), data.len());
        assert!(sent[2].last && !sent[1].last);
        let empty: Vec<pb::Chunk> = chunks(&[], 0).collect();
        assert_eq!((empty.len(), empty[0].last), (1, true));
    }
}
