//! Blobs streamed as `Chunk` messages, both ways: receiving checks order, the declared size,
//! a size limit and the checksum (SHA-256 for checkpoints, CRC-32 for federation payloads)
//! before anything is used, copying each chunk once into its final element vector; sending
//! cuts a payload into chunks from an offset, each a slice of it (no copy): 128 KiB for
//! checkpoints, 1 MiB for models streamed to participants. Shared by checkpoints, models and
//! federated updates.
//!
//! ```text
//!   receive: chunk.offset == bytes so far ─► size ≤ declared ≤ limit ─► last ─► size, checksum
//!   send:    payload[offset..] ─► Chunk{offset, ≤ 128 KiB or 1 MiB slice, last}
//! ```

use bytes::Bytes;
use synod_proto::v1 as pb;
pub use synod_sdk::payload::{chunks, CHUNK_BYTES};
use synod_sdk::payload::{chunks_of, DOWNLOAD_CHUNK_BYTES};
use synod_sdk::payload::{ChecksumKind, Element, Receiver};
use tonic::{Status, Streaming};

use super::ApiError;

pub use synod_sdk::chunk_stream::Piece;

/// Where a blob's chunks come from, as pieces in stream order.
pub trait Pieces {
    /// The next piece; `None` when the stream ended.
    fn next_piece(
        &mut self,
    ) -> impl std::future::Future<Output = Result<Option<Piece>, ApiError>> + Send;
}

/// The chunk messages of a tonic request stream, one piece each; `chunk_of` takes a message's
/// chunk, and a message without one is out of place.
pub struct MessageChunks<'a, M, F> {
    stream: &'a mut Streaming<M>,
    chunk_of: F,
}

impl<'a, M, F> MessageChunks<'a, M, F> {
    /// Chunks of `stream`.
    pub fn new(stream: &'a mut Streaming<M>, chunk_of: F) -> Self {
        Self { stream, chunk_of }
    }
}

impl<M, F> Pieces for MessageChunks<'_, M, F>
where
    M: Send + 'static,
    F: Fn(M) -> Option<pb::Chunk> + Send,
{
    async fn next_piece(&mut self) -> Result<Option<Piece>, ApiError> {
        let Some(message) = self.stream.message().await.map_err(stream_error)? else {
            return Ok(None);
        };
        let chunk = (self.chunk_of)(message)
            .ok_or_else(|| ApiError::invalid("chunk", "the header may come only once"))?;
        Ok(Some(Piece {
            offset: chunk.offset,
            data: chunk.data,
            last: chunk.last,
        }))
    }
}

/// A model from `offset` as the chunks of a download, each a slice of it.
pub fn download_chunks(model: Bytes, offset: usize) -> impl Iterator<Item = pb::Chunk> {
    chunks_of(model, offset, DOWNLOAD_CHUNK_BYTES)
}

/// Receives the chunks following a header that declared `declared`, refusing blobs over
/// `limit` bytes (named `limit_name` in the error) and blobs that do not fill whole elements
/// of `T`; `kind` is the checksum they must match. `chunk_of` takes a message's chunk; a
/// message without one is out of place. Returns the elements.
pub async fn receive<T: Element, M>(
    stream: &mut Streaming<M>,
    declared: &pb::BlobInfo,
    limit: u64,
    limit_name: &str,
    kind: ChecksumKind,
    chunk_of: impl Fn(M) -> Option<pb::Chunk> + Send,
) -> Result<Vec<T>, ApiError>
where
    M: Send + 'static,
{
    let mut pieces = MessageChunks::new(stream, chunk_of);
    receive_pieces(&mut pieces, declared, limit, limit_name, kind).await
}

/// [`receive`] from any source of pieces.
pub async fn receive_pieces<T: Element>(
    pieces: &mut impl Pieces,
    declared: &pb::BlobInfo,
    limit: u64,
    limit_name: &str,
    kind: ChecksumKind,
) -> Result<Vec<T>, ApiError> {
    let into = Destination {
        buffer: Vec::new(),
        inspect: |_: usize, _: &[T]| {},
    };
    receive_pieces_into(pieces, declared, limit, limit_name, kind, into).await
}

/// Where [`receive_pieces_into`] puts a blob's elements.
pub struct Destination<T, F> {
    /// Memory to receive into (its contents are overwritten).
    pub buffer: Vec<T>,
    /// Called with the index of the first element completed by each chunk and those elements
    /// (little-endian), while they are still in the cache.
    pub inspect: F,
}

/// [`receive_pieces`] into `into.buffer`'s memory, showing each chunk's elements to
/// `into.inspect`.
pub async fn receive_pieces_into<T: Element>(
    pieces: &mut impl Pieces,
    declared: &pb::BlobInfo,
    limit: u64,
    limit_name: &str,
    kind: ChecksumKind,
    into: Destination<T, impl FnMut(usize, &[T])>,
) -> Result<Vec<T>, ApiError> {
    let Destination {
        buffer,
        mut inspect,
    } = into;
    if declared.size_bytes > limit {
        return Err(too_large(declared.size_bytes, limit, limit_name));
    }
    let element = std::mem::size_of::<T>() as u64;
    if !declared.size_bytes.is_multiple_of(element) {
        return Err(ApiError::invalid(
            "blob.size_bytes",
            format!("{} is not a multiple of {element}", declared.size_bytes),
        ));
    }
    let len = (declared.size_bytes / element) as usize;
    let mut receiver = Receiver::<T>::reusing(buffer, len, kind);
    let mut last = false;
    while !last {
        let Some(piece) = pieces.next_piece().await? else {
            return Err(ApiError::invalid(
                "chunk",
                format!(
                    "the stream ended after {} bytes, before the last chunk",
                    receiver.received()
                ),
            ));
        };
        let done = receiver.filled().len();
        receiver
            .push(piece.offset, &piece.data)
            .map_err(received_error)?;
        inspect(done, &receiver.filled()[done..]);
        last = piece.last;
    }
    let (values, checksum) = receiver.finish().map_err(received_error)?;
    if !checksum.matches(declared) {
        let declared_value = match kind {
            ChecksumKind::Sha256 => declared.sha256.clone(),
            ChecksumKind::Crc32 => declared.crc32.to_string(),
        };
        return Err(ApiError::invalid(
            checksum.field(),
            format!(
                "{declared_value} declared, {} received",
                checksum.describe()
            ),
        ));
    }
    Ok(values)
}

fn received_error(error: synod_sdk::payload::ReceiveError) -> ApiError {
    ApiError::invalid(error.field(), error.problem())
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
    use synod_sdk::payload::{crc32, into_le_bytes};

    /// Pieces cut from one payload at the given ends.
    struct Cut(std::collections::VecDeque<Piece>);

    impl Cut {
        fn new(data: bytes::Bytes, ends: &[usize]) -> Self {
            let mut start = 0;
            let pieces = ends
                .iter()
                .map(|&end| {
                    let piece = Piece {
                        offset: start as u64,
                        data: data.slice(start..end),
                        last: end == data.len(),
                    };
                    start = end;
                    piece
                })
                .collect();
            Self(pieces)
        }
    }

    impl Pieces for Cut {
        async fn next_piece(&mut self) -> Result<Option<Piece>, ApiError> {
            Ok(self.0.pop_front())
        }
    }

    #[tokio::test]
    async fn each_whole_element_is_shown_once_in_order_wherever_chunks_end() {
        let values: Vec<f32> = (0..10).map(|i| i as f32).collect();
        let data = into_le_bytes(values.clone());
        let declared = pb::BlobInfo {
            size_bytes: 40,
            crc32: crc32(&data),
            ..Default::default()
        };
        let mut seen = Vec::new();
        let into = Destination {
            buffer: vec![7.0f32; 3],
            inspect: |start: usize, run: &[f32]| {
                assert_eq!(start, seen.len(), "runs follow each other");
                seen.extend_from_slice(run);
            },
        };
        let mut pieces = Cut::new(data, &[3, 5, 6, 22, 40]);
        let kind = ChecksumKind::Crc32;
        let received = receive_pieces_into(&mut pieces, &declared, 40, "limit", kind, into)
            .await
            .unwrap();
        assert_eq!(received, values);
        assert_eq!(seen, values, "every element, once, split or not");
    }
}
