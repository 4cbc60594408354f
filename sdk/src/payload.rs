//! Blobs on the wire, both ways, with as few passes over their bytes as possible: element
//! vectors (f32 models and updates, i64 masked updates, raw bytes) become little-endian bytes
//! in place, and chunks received are copied once into their final element vector while their
//! checksum is computed. Shared by the coordinator and the SDK.
//!
//! ```text
//!   send:    Vec<T> ─► to little-endian in place (a no-op on little-endian machines) ─► Bytes
//!            (no copy; chunks are slices of it)
//!   receive: chunk ─► checksum.update ─► its bytes copied into Vec<T> seen as bytes
//!            ─► … ─► Vec<T> (read little-endian) and the checksum
//! ```
//! Federation models and updates are checked by CRC-32 (zlib's, which every language's standard
//! library has) so that checking hundreds of MB costs little; checkpoints by SHA-256.

use bytemuck::Pod;
use bytes::Bytes;
use sha2::{Digest, Sha256};
use synod_proto::v1 as pb;

use crate::tensors::hex;

/// An element of a payload: a plain value with a little-endian wire form.
pub trait Element: Pod + Send + Sync + 'static {
    /// The value with its bytes swapped between native and little-endian order (a no-op on
    /// little-endian machines; the swap is its own inverse).
    fn swap_le(self) -> Self;
}

impl Element for u8 {
    fn swap_le(self) -> Self {
        self
    }
}

impl Element for f32 {
    fn swap_le(self) -> Self {
        f32::from_bits(self.to_bits().to_le())
    }
}

impl Element for i64 {
    fn swap_le(self) -> Self {
        self.to_le()
    }
}

/// Owns an element vector already in wire order and shows it as bytes; hands the vector to
/// `then`, when there is one, once no slice of it is left.
struct WireVec<T> {
    values: Vec<T>,
    then: Option<Box<dyn FnOnce(Vec<T>) + Send>>,
}

impl<T: Element> AsRef<[u8]> for WireVec<T> {
    fn as_ref(&self) -> &[u8] {
        bytemuck::cast_slice(&self.values)
    }
}

impl<T> Drop for WireVec<T> {
    fn drop(&mut self) {
        if let Some(then) = self.then.take() {
            then(std::mem::take(&mut self.values));
        }
    }
}

/// `values` as little-endian bytes, without a copy on little-endian machines.
pub fn into_le_bytes<T: Element>(values: Vec<T>) -> Bytes {
    wire_bytes(values, None)
}

/// As [`into_le_bytes`]; the vector (its values no longer meaningful) goes to `then` once the
/// bytes and every slice of them are dropped, so that its memory can serve again.
pub fn into_le_bytes_then<T: Element>(
    values: Vec<T>,
    then: impl FnOnce(Vec<T>) + Send + 'static,
) -> Bytes {
    wire_bytes(values, Some(Box::new(then)))
}

fn wire_bytes<T: Element>(
    mut values: Vec<T>,
    then: Option<Box<dyn FnOnce(Vec<T>) + Send>>,
) -> Bytes {
    if cfg!(target_endian = "big") {
        values.iter_mut().for_each(|v| *v = v.swap_le());
    }
    Bytes::from_owner(WireVec { values, then })
}

/// Bytes per chunk a client sends (updates, checkpoints). Kept small: with 1 MiB update chunks
/// a leader taking 50 participants' updates at once held 6–12 MB more at its peak.
pub const CHUNK_BYTES: usize = 128 * 1024;

/// Bytes per chunk of a model a server streams to its participants. Each chunk is a slice of
/// the model the server holds anyway and crosses as one HTTP/2 frame to a client that allows
/// frames this large (the SDK's do), so it is one socket write: larger chunks move the same
/// bytes in fewer writes, and fewer writes are most of what a transfer costs on a busy host.
pub const DOWNLOAD_CHUNK_BYTES: usize = 1024 * 1024;

/// `data` from `offset` as chunks of [`CHUNK_BYTES`], each a slice of it (no copy); one empty
/// last chunk for an empty remainder.
pub fn chunks(data: Bytes, offset: usize) -> impl Iterator<Item = pb::Chunk> {
    chunks_of(data, offset, CHUNK_BYTES)
}

/// As [`chunks`], `chunk_bytes` (at least 1) at a time.
pub fn chunks_of(
    data: Bytes,
    offset: usize,
    chunk_bytes: usize,
) -> impl Iterator<Item = pb::Chunk> {
    let chunk_bytes = chunk_bytes.max(1);
    let rest = data.slice(offset.min(data.len())..);
    let count = rest.len().div_ceil(chunk_bytes).max(1);
    (0..count).map(move |i| {
        let start = i * chunk_bytes;
        let end = (start + chunk_bytes).min(rest.len());
        pb::Chunk {
            offset: (offset + start) as u64,
            data: rest.slice(start..end),
            last: i + 1 == count,
        }
    })
}

/// The size and `kind` checksum of `data`.
pub fn blob_info(data: &[u8], kind: ChecksumKind) -> pb::BlobInfo {
    let mut blob = pb::BlobInfo {
        size_bytes: data.len() as u64,
        ..Default::default()
    };
    match kind {
        ChecksumKind::Sha256 => blob.sha256 = crate::tensors::sha256_hex(data),
        ChecksumKind::Crc32 => blob.crc32 = crc32(data),
    }
    blob
}

/// CRC-32 (IEEE 802.3, zlib's `crc32`) of `bytes`.
pub fn crc32(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

/// The checksum a blob is checked by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChecksumKind {
    /// Lower-case hex SHA-256 (`BlobInfo.sha256`).
    Sha256,
    /// CRC-32 (`BlobInfo.crc32`).
    Crc32,
}

/// A computed checksum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checksum {
    /// Lower-case hex SHA-256.
    Sha256(String),
    /// CRC-32.
    Crc32(u32),
}

impl Checksum {
    /// Whether `blob` declares this checksum.
    pub fn matches(&self, blob: &pb::BlobInfo) -> bool {
        match self {
            Checksum::Sha256(hex) => *hex == blob.sha256.to_lowercase(),
            Checksum::Crc32(crc) => *crc == blob.crc32,
        }
    }

    /// The `BlobInfo` field this checksum is declared in.
    pub fn field(&self) -> &'static str {
        match self {
            Checksum::Sha256(_) => "blob.sha256",
            Checksum::Crc32(_) => "blob.crc32",
        }
    }

    /// The value, for messages.
    pub fn describe(&self) -> String {
        match self {
            Checksum::Sha256(hex) => hex.clone(),
            Checksum::Crc32(crc) => crc.to_string(),
        }
    }
}

enum Hasher {
    Sha256(Box<Sha256>),
    Crc32(crc32fast::Hasher),
}

/// Why a chunk cannot be taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiveError {
    /// The chunk does not start where the bytes so far end.
    #[error("chunk.offset: {got}, expected {expected}")]
    Offset {
        /// Offset received.
        got: u64,
        /// Bytes received so far.
        expected: u64,
    },
    /// More bytes than declared.
    #[error("blob.size_bytes: {declared} declared, more received")]
    TooLong {
        /// Declared size.
        declared: u64,
    },
    /// Fewer bytes than declared when the last chunk came.
    #[error("blob.size_bytes: {declared} declared, {received} received")]
    TooShort {
        /// Declared size.
        declared: u64,
        /// Bytes received.
        received: u64,
    },
}

impl ReceiveError {
    /// The field at fault.
    pub fn field(&self) -> &'static str {
        match self {
            ReceiveError::Offset { .. } => "chunk.offset",
            ReceiveError::TooLong { .. } | ReceiveError::TooShort { .. } => "blob.size_bytes",
        }
    }

    /// The problem, without the field.
    pub fn problem(&self) -> String {
        let text = self.to_string();
        text.split_once(": ")
            .map_or(text.clone(), |(_, problem)| problem.to_owned())
    }
}

/// Receives a blob of exactly `len` elements of `T` from its chunks, checksumming as it goes.
/// Each chunk's bytes are copied once, straight into the element vector seen as bytes (so an
/// element split across two chunks needs no special case). The vector may be a buffer of an
/// earlier blob, reused without being cleared: every byte is overwritten before it is returned.
pub struct Receiver<T> {
    values: Vec<T>,
    received: usize,
    hasher: Hasher,
}

impl<T: Element> Receiver<T> {
    const SIZE: usize = std::mem::size_of::<T>();

    /// A receiver of `len` elements checked by `kind`.
    pub fn new(len: usize, kind: ChecksumKind) -> Self {
        Self::reusing(Vec::new(), len, kind)
    }

    /// As [`new`](Self::new), writing into `buffer` (its contents are overwritten; its memory
    /// is reused when it is large enough).
    pub fn reusing(mut buffer: Vec<T>, len: usize, kind: ChecksumKind) -> Self {
        let hasher = match kind {
            ChecksumKind::Sha256 => Hasher::Sha256(Box::default()),
            ChecksumKind::Crc32 => Hasher::Crc32(crc32fast::Hasher::new()),
        };
        buffer.truncate(len);
        buffer.resize(len, T::zeroed());
        Self {
            values: buffer,
            received: 0,
            hasher,
        }
    }

    fn capacity_bytes(&self) -> usize {
        self.values.len() * Self::SIZE
    }

    /// Bytes received so far.
    pub fn received(&self) -> u64 {
        self.received as u64
    }

    /// The whole elements received so far, in wire order (little-endian), so that they can be
    /// checked while their bytes are still in the cache.
    pub fn filled(&self) -> &[T] {
        &self.values[..self.received / Self::SIZE]
    }

    /// Takes the chunk of `data` at `offset`.
    pub fn push(&mut self, offset: u64, data: &[u8]) -> Result<(), ReceiveError> {
        if offset != self.received as u64 {
            return Err(ReceiveError::Offset {
                got: offset,
                expected: self.received as u64,
            });
        }
        if self.received + data.len() > self.capacity_bytes() {
            return Err(ReceiveError::TooLong {
                declared: self.capacity_bytes() as u64,
            });
        }
        match &mut self.hasher {
            Hasher::Sha256(hasher) => hasher.update(data),
            Hasher::Crc32(hasher) => hasher.update(data),
        }
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut self.values);
        bytes[self.received..self.received + data.len()].copy_from_slice(data);
        self.received += data.len();
        Ok(())
    }

    /// The elements and their checksum, once every declared byte came.
    pub fn finish(mut self) -> Result<(Vec<T>, Checksum), ReceiveError> {
        if self.received != self.capacity_bytes() {
            return Err(ReceiveError::TooShort {
                declared: self.capacity_bytes() as u64,
                received: self.received as u64,
            });
        }
        if cfg!(target_endian = "big") {
            self.values.iter_mut().for_each(|v| *v = v.swap_le());
        }
        let checksum = match self.hasher {
            Hasher::Sha256(hasher) => Checksum::Sha256(hex(&hasher.finalize())),
            Hasher::Crc32(hasher) => Checksum::Crc32(hasher.finalize()),
        };
        Ok((self.values, checksum))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sent_vector_comes_back_once_its_last_slice_is_dropped() {
        let (tx, rx) = std::sync::mpsc::channel();
        let values = vec![1.0f32, 2.0, 3.0];
        let address = values.as_ptr();
        let bytes = into_le_bytes_then(values, move |back| tx.send(back).unwrap());
        let slice = bytes.slice(4..8);
        drop(bytes);
        assert!(rx.try_recv().is_err(), "a slice still reads it");
        assert_eq!(&slice[..], &2.0f32.to_le_bytes()[..]);
        drop(slice);
        let back = rx.try_recv().expect("handed back");
        assert_eq!(back.as_ptr(), address, "the same memory");
    }

    #[test]
    fn sent_bytes_are_little_endian_and_received_back_exactly() {
        let values = vec![1.5f32, -2.0, f32::MIN_POSITIVE, 0.0];
        let bytes = into_le_bytes(values.clone());
        let expected: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(&bytes[..], &expected[..]);
        let mut receiver = Receiver::<f32>::new(4, ChecksumKind::Crc32);
        receiver.push(0, &bytes[..5]).unwrap();
        assert_eq!(receiver.filled(), &values[..1], "one whole element so far");
        receiver.push(5, &bytes[5..]).unwrap();
        assert_eq!(receiver.filled(), &values[..]);
        let (back, checksum) = receiver.finish().unwrap();
        assert_eq!(back, values);
        assert_eq!(checksum, Checksum::Crc32(crc32(&expected)));
    }

    #[test]
    fn a_reused_buffer_is_overwritten_whole_and_its_memory_kept() {
        let values = vec![0.25f32, -8.0, 1e-3];
        let bytes = into_le_bytes(values.clone());
        let old = vec![7.0f32; 16];
        let old_memory = old.as_ptr();
        let mut receiver = Receiver::reusing(old, 3, ChecksumKind::Crc32);
        for (i, byte) in bytes.iter().enumerate() {
            receiver.push(i as u64, &[*byte]).unwrap();
        }
        let (back, _) = receiver.finish().unwrap();
        assert_eq!(back, values);
        assert_eq!(back.as_ptr(), old_memory, "the buffer's memory is reused");
        let short = Receiver::<f32>::reusing(vec![1.0; 2], 3, ChecksumKind::Crc32);
        assert!(
            short.finish().is_err(),
            "stale or zeroed bytes are never returned"
        );
    }

    #[test]
    fn chunks_cover_the_payload_from_the_offset() {
        let data = Bytes::from(vec![7u8; CHUNK_BYTES * 2 + 10]);
        let sent: Vec<pb::Chunk> = chunks(data.clone(), 5).collect();
        assert_eq!(sent.len(), 3);
        assert_eq!(sent[0].offset, 5);
        assert_eq!(sent[2].offset as usize + sent[2].data.len(), data.len());
        assert!(sent[2].last && !sent[1].last);
        let empty: Vec<pb::Chunk> = chunks(Bytes::new(), 0).collect();
        assert_eq!((empty.len(), empty[0].last), (1, true));
    }

    #[test]
    fn chunks_of_a_size_slice_the_payload_without_copies() {
        let data = Bytes::from((0..10u8).collect::<Vec<_>>());
        let sent: Vec<pb::Chunk> = chunks_of(data.clone(), 1, 4).collect();
        let offsets: Vec<u64> = sent.iter().map(|c| c.offset).collect();
        assert_eq!(offsets, [1, 5, 9]);
        assert_eq!(sent[2].data.as_ref(), [9]);
        assert!(sent[2].last && !sent[0].last);
        assert_eq!(
            sent[1].data.as_ptr(),
            data[5..].as_ptr(),
            "a slice, not a copy"
        );
        let whole: Vec<pb::Chunk> = chunks_of(data, 0, 0).collect();
        assert_eq!(whole.len(), 10, "a size of 0 is taken as 1");
    }

    #[test]
    fn crc32_is_zlibs() {
        // zlib.crc32(b"123456789") == 0xCBF43926, the standard check value.
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn i64_and_sha256() {
        let values = vec![-1i64, 1 << 40];
        let bytes = into_le_bytes(values.clone());
        let mut receiver = Receiver::<i64>::new(2, ChecksumKind::Sha256);
        receiver.push(0, &bytes).unwrap();
        let (back, checksum) = receiver.finish().unwrap();
        assert_eq!(back, values);
        assert_eq!(
            checksum,
            Checksum::Sha256(crate::tensors::sha256_hex(&bytes))
        );
    }

    #[test]
    fn gaps_overflow_and_short_blobs_are_refused() {
        let mut receiver = Receiver::<u8>::new(4, ChecksumKind::Crc32);
        assert_eq!(
            receiver.push(1, &[0]),
            Err(ReceiveError::Offset {
                got: 1,
                expected: 0
            })
        );
        assert_eq!(
            receiver.push(0, &[0; 5]),
            Err(ReceiveError::TooLong { declared: 4 })
        );
        receiver.push(0, &[0; 3]).unwrap();
        assert_eq!(
            receiver.finish().err(),
            Some(ReceiveError::TooShort {
                declared: 4,
                received: 3
            })
        );
    }
}
