//! A gRPC stream of chunk messages read straight from its HTTP/2 body: the messages are parsed
//! as their bytes arrive, and each chunk's payload is handed out as pieces of the received
//! frames, without first being gathered into a message buffer (tonic's decoder copies every
//! byte once more to do that). The first message is read whole. Serves both directions of a
//! federation's bulk transfers: the coordinator reads SubmitUpdate requests this way and the
//! SDK reads DownloadModel responses; any gRPC peer's stream parses the same way.
//!
//! ```text
//!   frames ─► [flag 0 | len] ─► field 2 (chunk) ─► offset ─► data: pieces of the frames ─► last
//!                             └ first message: read whole, decoded as the caller's type
//! ```
//!
//! A chunk whose payload comes before its offset (offset 0 is left out of the encoding, and an
//! encoder may order fields freely) has its payload held until the message ends. Trailers that
//! end the body are kept for the caller (a server's error status comes in them).

use std::collections::VecDeque;

use bytes::{Buf, Bytes, BytesMut};
use http_body_util::BodyExt;
use prost::encoding::WireType;
use prost::Message;

use crate::wire::fields;

/// Why a stream cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    /// The stream or one of its messages is malformed.
    #[error("{field}: {problem}")]
    Invalid {
        /// What is at fault (`stream`, `header`, `chunk`).
        field: &'static str,
        /// What is wrong.
        problem: String,
    },
    /// The body itself failed (the connection dropped, say).
    #[error("stream: {0}")]
    Body(String),
    /// A message over the size limit.
    #[error("stream: a message of {len} bytes, the limit is {max}")]
    TooLarge {
        /// The message's size.
        len: usize,
        /// The limit.
        max: usize,
    },
}

fn invalid(field: &'static str, problem: impl Into<String>) -> StreamError {
    StreamError::Invalid {
        field,
        problem: problem.into(),
    }
}

/// A run of a blob's bytes: `data` starts at byte `offset` of the blob; `last` marks the end
/// of the final chunk (it may come with no data).
#[derive(Debug)]
pub struct Piece {
    /// Blob offset of `data`.
    pub offset: u64,
    /// The bytes.
    pub data: Bytes,
    /// The final chunk ends here.
    pub last: bool,
}

/// The messages of one body: a first message, then chunk messages.
pub struct ChunkStream<B> {
    frames: Frames<B>,
    message_max: usize,
    chunk: Option<ChunkRead>,
}

/// What is known of the chunk message being read.
#[derive(Default)]
struct ChunkRead {
    /// Bytes of the message not yet parsed (a payload being streamed counts as parsed).
    left: usize,
    offset: Option<u64>,
    /// Payload bytes still to hand out as pieces.
    data_left: usize,
    /// Payload bytes handed out.
    data_done: u64,
    /// A payload that came before the offset, handed out when the message ends.
    held: Option<Bytes>,
    seen_data: bool,
    last: bool,
}

impl<B> ChunkStream<B>
where
    B: http_body::Body<Data = Bytes> + Unpin + Send,
    B::Error: std::fmt::Display,
{
    /// The stream of `body`, refusing messages over `message_max` bytes.
    pub fn new(body: B, message_max: usize) -> Self {
        Self {
            frames: Frames {
                body,
                queue: VecDeque::new(),
                queued: 0,
                ended: false,
                trailers: None,
            },
            message_max,
            chunk: None,
        }
    }

    /// The trailers that ended the body, once it ended with some.
    pub fn trailers(&self) -> Option<&http::HeaderMap> {
        self.frames.trailers.as_ref()
    }

    /// The first message, whole; `None` when the stream is empty.
    pub async fn first<M: Message + Default>(&mut self) -> Result<Option<M>, StreamError> {
        let Some(len) = self.message_len().await? else {
            return Ok(None);
        };
        if !self.frames.fill(len).await? {
            return Err(ended_inside());
        }
        M::decode(self.frames.take(len))
            .map(Some)
            .map_err(|e| invalid("header", format!("malformed message: {e}")))
    }

    /// The next message's length, after its prefix; `None` at a clean end of the stream.
    async fn message_len(&mut self) -> Result<Option<usize>, StreamError> {
        if !self.frames.fill(5).await? {
            return match self.frames.queued {
                0 => Ok(None),
                _ => Err(ended_inside()),
            };
        }
        let prefix = self.frames.take(5);
        if prefix[0] != 0 {
            return Err(invalid("stream", "compressed messages are not accepted"));
        }
        let len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
        if len > self.message_max {
            return Err(StreamError::TooLarge {
                len,
                max: self.message_max,
            });
        }
        Ok(Some(len))
    }

    /// Starts the next message, which must be a chunk; `None` at a clean end of the stream.
    async fn start_chunk(&mut self) -> Result<Option<ChunkRead>, StreamError> {
        let Some(len) = self.message_len().await? else {
            return Ok(None);
        };
        if len == 0 {
            return Err(invalid("chunk", "a message with no part"));
        }
        let (key, key_len) = self.frames.varint().await?;
        let (field, wire) = split_key(key)?;
        if field != fields::PART_CHUNK || wire != WireType::LengthDelimited {
            return Err(invalid("chunk", "the header may come only once"));
        }
        let (inner, inner_len) = self.frames.varint().await?;
        if key_len + inner_len + inner as usize != len {
            return Err(malformed());
        }
        Ok(Some(ChunkRead {
            left: inner as usize,
            ..ChunkRead::default()
        }))
    }

    /// Parses the next field of `chunk`; a payload starts being handed out.
    async fn next_field(&mut self, chunk: &mut ChunkRead) -> Result<(), StreamError> {
        let (key, key_len) = self.frames.varint().await?;
        chunk.left = chunk.left.checked_sub(key_len).ok_or_else(malformed)?;
        let (field, wire) = split_key(key)?;
        match wire {
            WireType::Varint => {
                let (value, len) = self.frames.varint().await?;
                chunk.left = chunk.left.checked_sub(len).ok_or_else(malformed)?;
                match field {
                    fields::OFFSET if chunk.seen_data && chunk.held.is_none() => {
                        return Err(malformed())
                    }
                    fields::OFFSET => chunk.offset = Some(value),
                    fields::LAST => chunk.last = value != 0,
                    _ => {}
                }
            }
            WireType::LengthDelimited => {
                let (len, len_len) = self.frames.varint().await?;
                let len = len as usize;
                chunk.left = chunk
                    .left
                    .checked_sub(len_len + len)
                    .ok_or_else(malformed)?;
                if field == fields::DATA {
                    if chunk.seen_data {
                        return Err(malformed());
                    }
                    chunk.seen_data = true;
                    match chunk.offset {
                        Some(_) => chunk.data_left = len,
                        None => {
                            if !self.frames.fill(len).await? {
                                return Err(ended_inside());
                            }
                            chunk.held = Some(self.frames.take(len));
                        }
                    }
                } else {
                    self.frames.skip(len).await?;
                }
            }
            WireType::SixtyFourBit | WireType::ThirtyTwoBit => {
                let len = if wire == WireType::SixtyFourBit { 8 } else { 4 };
                chunk.left = chunk.left.checked_sub(len).ok_or_else(malformed)?;
                self.frames.skip(len).await?;
            }
            _ => return Err(malformed()),
        }
        Ok(())
    }
}

impl<B> ChunkStream<B>
where
    B: http_body::Body<Data = Bytes> + Unpin + Send,
    B::Error: std::fmt::Display,
{
    /// The next piece of the chunks' payload, in stream order; `None` at a clean end of the
    /// stream.
    pub async fn next_piece(&mut self) -> Result<Option<Piece>, StreamError> {
        loop {
            let mut chunk = match self.chunk.take() {
                Some(chunk) => chunk,
                None => match self.start_chunk().await? {
                    Some(chunk) => chunk,
                    None => return Ok(None),
                },
            };
            if chunk.data_left > 0 {
                if !self.frames.fill(1).await? {
                    return Err(ended_inside());
                }
                let data = self.frames.take_piece(chunk.data_left);
                let offset = chunk.offset.unwrap_or(0) + chunk.data_done;
                chunk.data_left -= data.len();
                chunk.data_done += data.len() as u64;
                self.chunk = Some(chunk);
                return Ok(Some(Piece {
                    offset,
                    data,
                    last: false,
                }));
            }
            if chunk.left == 0 {
                if chunk.held.is_none() && !chunk.last {
                    continue;
                }
                return Ok(Some(Piece {
                    offset: chunk.offset.unwrap_or(0) + chunk.data_done,
                    data: chunk.held.take().unwrap_or_default(),
                    last: chunk.last,
                }));
            }
            self.next_field(&mut chunk).await?;
            self.chunk = Some(chunk);
        }
    }
}

/// Received frames not yet parsed.
struct Frames<B> {
    body: B,
    queue: VecDeque<Bytes>,
    queued: usize,
    ended: bool,
    trailers: Option<http::HeaderMap>,
}

impl<B> Frames<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    /// Waits until `n` bytes are queued; false when the body ends first.
    async fn fill(&mut self, n: usize) -> Result<bool, StreamError> {
        while self.queued < n {
            if self.ended {
                return Ok(false);
            }
            match self.body.frame().await {
                None => self.ended = true,
                Some(Err(error)) => return Err(StreamError::Body(error.to_string())),
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) if !data.is_empty() => {
                        self.queued += data.len();
                        self.queue.push_back(data);
                    }
                    Ok(_) => {}
                    Err(frame) => self.trailers = frame.into_trailers().ok(),
                },
            }
        }
        Ok(true)
    }

    /// The next `n` queued bytes, contiguous: copied only when they span frames.
    fn take(&mut self, n: usize) -> Bytes {
        debug_assert!(n <= self.queued);
        if self.queue.front().is_some_and(|f| f.len() >= n) {
            return self.take_piece(n);
        }
        let mut out = BytesMut::with_capacity(n);
        while out.len() < n {
            let piece = self.take_piece(n - out.len());
            out.extend_from_slice(&piece);
        }
        out.freeze()
    }

    /// Up to `max` bytes from the front frame, not copied.
    fn take_piece(&mut self, max: usize) -> Bytes {
        let Some(front) = self.queue.front_mut() else {
            return Bytes::new();
        };
        let piece = front.split_to(max.min(front.len()));
        if front.is_empty() {
            self.queue.pop_front();
        }
        self.queued -= piece.len();
        piece
    }

    /// Drops the next `n` bytes.
    async fn skip(&mut self, mut n: usize) -> Result<(), StreamError> {
        while n > 0 {
            if !self.fill(1).await? {
                return Err(ended_inside());
            }
            n -= self.take_piece(n).len();
        }
        Ok(())
    }

    /// A base-128 varint and the bytes it took.
    async fn varint(&mut self) -> Result<(u64, usize), StreamError> {
        let mut value = 0u64;
        for i in 0..10 {
            if !self.fill(1).await? {
                return Err(ended_inside());
            }
            let front = self.queue.front_mut().expect("a byte is queued");
            let byte = front.get_u8();
            if front.is_empty() {
                self.queue.pop_front();
            }
            self.queued -= 1;
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok((value, i + 1));
            }
        }
        Err(malformed())
    }
}

/// A field key's number and wire type.
fn split_key(key: u64) -> Result<(u32, WireType), StreamError> {
    let field = u32::try_from(key >> 3).map_err(|_| malformed())?;
    let wire = WireType::try_from(key & 7).map_err(|_| malformed())?;
    Ok((field, wire))
}

fn malformed() -> StreamError {
    invalid("chunk", "malformed message")
}

fn ended_inside() -> StreamError {
    invalid("stream", "the stream ended inside a message")
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use http_body::Frame;
    use http_body_util::StreamBody;

    use super::*;
    use synod_proto::v1 as pb;

    type TestBody =
        StreamBody<futures::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>>;

    /// Encoded messages, gRPC-framed.
    fn wire(messages: &[Vec<u8>]) -> Vec<u8> {
        let mut wire = Vec::new();
        for message in messages {
            wire.push(0);
            wire.extend_from_slice(&(message.len() as u32).to_be_bytes());
            wire.extend_from_slice(message);
        }
        wire
    }

    /// `wire` cut into frames of `frame` bytes.
    fn framed(wire: &[u8], frame: usize) -> TestBody {
        let frames: Vec<_> = wire
            .chunks(frame)
            .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
            .collect();
        StreamBody::new(futures::stream::iter(frames))
    }

    /// `messages` gRPC-framed and cut into frames of `frame` bytes.
    fn body(messages: &[pb::SubmitUpdateRequest], frame: usize) -> TestBody {
        let encoded: Vec<Vec<u8>> = messages.iter().map(Message::encode_to_vec).collect();
        framed(&wire(&encoded), frame)
    }

    fn header() -> pb::SubmitUpdateRequest {
        pb::SubmitUpdateRequest {
            part: Some(pb::submit_update_request::Part::Header(pb::UpdateHeader {
                federation_id: "f".into(),
                num_examples: 3,
                ..Default::default()
            })),
        }
    }

    fn chunk(offset: u64, data: &[u8], last: bool) -> pb::SubmitUpdateRequest {
        pb::SubmitUpdateRequest {
            part: Some(pb::submit_update_request::Part::Chunk(pb::Chunk {
                offset,
                data: Bytes::copy_from_slice(data),
                last,
            })),
        }
    }

    /// The header, then the pieces joined into (offset, bytes) runs and whether `last` came.
    async fn read(
        messages: &[pb::SubmitUpdateRequest],
        frame: usize,
    ) -> Result<(pb::SubmitUpdateRequest, Vec<u8>, bool), StreamError> {
        let mut stream = ChunkStream::new(body(messages, frame), 1 << 20);
        let first = stream.first().await?.expect("a first message");
        let (mut bytes, mut last) = (Vec::new(), false);
        while let Some(piece) = stream.next_piece().await? {
            assert_eq!(piece.offset, bytes.len() as u64, "pieces in order");
            bytes.extend_from_slice(&piece.data);
            last |= piece.last;
        }
        Ok((first, bytes, last))
    }

    #[tokio::test]
    async fn chunks_read_back_whatever_the_frame_boundaries() {
        let payload: Vec<u8> = (0..5000u32).map(|i| (i * 7) as u8).collect();
        let messages = vec![
            header(),
            chunk(0, &payload[..1000], false),
            chunk(1000, &payload[1000..4000], false),
            chunk(4000, &payload[4000..], true),
        ];
        for frame in [1, 2, 3, 7, 100, 1021, 4096, 1 << 20] {
            let (first, bytes, last) = read(&messages, frame).await.unwrap();
            assert_eq!(first, header(), "frame {frame}");
            assert_eq!(bytes, payload, "frame {frame}");
            assert!(last, "frame {frame}");
        }
    }

    #[tokio::test]
    async fn a_payload_before_its_offset_and_unknown_fields_are_handled() {
        // Fields in reverse order with an unknown varint and an unknown string in between.
        let mut inner = Vec::new();
        prost::encoding::bytes::encode(2, &Bytes::from_static(b"world"), &mut inner);
        prost::encoding::uint64::encode(9, &77, &mut inner);
        prost::encoding::string::encode(10, &"extra".to_string(), &mut inner);
        prost::encoding::uint64::encode(1, &5, &mut inner);
        prost::encoding::bool::encode(3, &true, &mut inner);
        let mut message = Vec::new();
        prost::encoding::encode_key(2, prost::encoding::WireType::LengthDelimited, &mut message);
        prost::encoding::encode_varint(inner.len() as u64, &mut message);
        message.extend_from_slice(&inner);
        let wire = wire(&[
            header().encode_to_vec(),
            chunk(0, b"hello", false).encode_to_vec(),
            message,
        ]);
        for frame in [1, 3, 64] {
            let mut stream = ChunkStream::new(framed(&wire, frame), 1024);
            stream.first::<pb::SubmitUpdateRequest>().await.unwrap();
            let mut pieces = Vec::new();
            while let Some(p) = stream.next_piece().await.unwrap() {
                pieces.push((p.offset, p.data.to_vec(), p.last));
            }
            let joined: Vec<u8> = pieces.iter().flat_map(|p| p.1.clone()).collect();
            assert_eq!(joined, b"helloworld", "frame {frame}");
            let last = pieces.last().unwrap();
            assert_eq!((last.0, last.2), (5, true), "frame {frame}");
        }
    }

    #[tokio::test]
    async fn broken_streams_are_refused_with_the_field_named() {
        let twice = read(&[header(), header()], 16).await.unwrap_err();
        assert!(
            matches!(&twice, StreamError::Invalid { field: "chunk", problem }
                if problem.contains("header may come only once")),
            "{twice:?}"
        );

        // Cut inside the second message.
        let mut cut = wire(&[
            header().encode_to_vec(),
            chunk(0, &[1; 100], true).encode_to_vec(),
        ]);
        cut.truncate(cut.len() - 10);
        let mut stream = ChunkStream::new(framed(&cut, 4096), 1024);
        stream.first::<pb::SubmitUpdateRequest>().await.unwrap();
        let mut outcome = Ok(());
        while outcome.is_ok() {
            match stream.next_piece().await {
                Ok(Some(_)) => {}
                Ok(None) => panic!("a cut stream ended cleanly"),
                Err(e) => outcome = Err(e),
            }
        }
        let cut = outcome.unwrap_err().to_string();
        assert!(cut.contains("ended inside a message"), "{cut}");

        let big = chunk(0, &[1; 2000], true);
        let mut stream = ChunkStream::new(body(&[header(), big], 4096), 1024);
        stream.first::<pb::SubmitUpdateRequest>().await.unwrap();
        let too_big = stream.next_piece().await.unwrap_err();
        assert!(
            matches!(too_big, StreamError::TooLarge { max: 1024, .. }),
            "{too_big:?}"
        );

        let mut stream = ChunkStream::new(framed(&[1, 0, 0, 0, 0], 5), 1024);
        let refused = stream.first::<pb::SubmitUpdateRequest>().await.unwrap_err();
        assert!(refused.to_string().contains("compressed"), "{refused:?}");
    }

    #[tokio::test]
    async fn trailers_that_end_the_body_are_kept() {
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("14"));
        let frames: Vec<Result<Frame<Bytes>, Infallible>> = vec![
            Ok(Frame::data(Bytes::from(wire(&[header().encode_to_vec()])))),
            Ok(Frame::trailers(trailers.clone())),
        ];
        let mut stream = ChunkStream::new(StreamBody::new(futures::stream::iter(frames)), 1024);
        assert!(stream.trailers().is_none());
        stream.first::<pb::SubmitUpdateRequest>().await.unwrap();
        assert!(stream.next_piece().await.unwrap().is_none(), "a clean end");
        assert_eq!(stream.trailers(), Some(&trailers));
    }

    #[tokio::test]
    async fn a_failing_body_is_told_apart_from_a_malformed_stream() {
        let frames: Vec<Result<Frame<Bytes>, String>> = vec![
            Ok(Frame::data(Bytes::from(wire(&[header().encode_to_vec()])))),
            Err("connection reset".to_owned()),
        ];
        let mut stream = ChunkStream::new(StreamBody::new(futures::stream::iter(frames)), 1024);
        stream.first::<pb::SubmitUpdateRequest>().await.unwrap();
        let error = stream.next_piece().await.unwrap_err();
        assert_eq!(error, StreamError::Body("connection reset".to_owned()));
    }
}
