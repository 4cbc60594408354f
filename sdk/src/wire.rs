//! gRPC messages written by hand as HTTP/2 data, for the bulk transfers: a `Chunk` message
//! becomes its gRPC prefix and field keys, the payload slice itself, and its `last` flag —
//! byte for byte what prost encodes, without copying the payload into an encode buffer. The
//! coordinator sends models this way and the SDK sends updates; both read them back with
//! [`crate::chunk_stream`]. Replies are built here too, for servers that answer below tonic
//! (the coordinator's fast paths).
//!
//! ```text
//!   message ─► [0][len: u32 BE][protobuf]                        (message_frame)
//!   chunk   ─► [0][len][part key, len][offset][data key, len] [data slice] [last]
//! ```

use std::convert::Infallible;

use bytes::{BufMut, Bytes, BytesMut};
use futures::Stream;
use http_body::Frame;
use http_body_util::StreamBody;
use prost::encoding::{encode_key, encode_varint, encoded_len_varint, WireType};
use prost::Message;
use synod_proto::v1 as pb;
use tonic::body::Body;

/// Protobuf field numbers of `Chunk` and of the `chunk` part of the messages that carry one
/// (`SubmitUpdateRequest`, `DownloadModelResponse`), for code that reads or writes them by hand.
pub mod fields {
    /// The `chunk` part of `SubmitUpdateRequest` and of `DownloadModelResponse`.
    pub const PART_CHUNK: u32 = 2;
    /// `Chunk.offset`.
    pub const OFFSET: u32 = 1;
    /// `Chunk.data`.
    pub const DATA: u32 = 2;
    /// `Chunk.last`.
    pub const LAST: u32 = 3;
}

/// The gRPC prefix of an uncompressed message of `len` bytes.
fn put_prefix(buffer: &mut BytesMut, len: usize) {
    buffer.put_u8(0);
    buffer.put_u32(len as u32);
}

/// `message`, gRPC-framed (uncompressed).
pub fn message_frame(message: &impl Message) -> Bytes {
    let len = message.encoded_len();
    let mut data = BytesMut::with_capacity(5 + len);
    put_prefix(&mut data, len);
    message
        .encode(&mut data)
        .expect("the buffer holds the message");
    data.freeze()
}

/// One gRPC message whose only field is the length-delimited `field` holding `payload`, as
/// HTTP/2 data: the prefix and field key, then the payload itself.
pub fn bytes_field_frames(field: u32, payload: Bytes) -> [Bytes; 2] {
    let len = payload.len() as u64;
    let message = 1 + encoded_len_varint(len) + payload.len();
    let mut head = BytesMut::with_capacity(16);
    put_prefix(&mut head, message);
    encode_key(field, WireType::LengthDelimited, &mut head);
    encode_varint(len, &mut head);
    [head.freeze(), payload]
}

/// The one uncompressed gRPC message `bytes` holds, if that is all it holds.
pub fn single_message(bytes: &Bytes) -> Option<Bytes> {
    let len = u32::from_be_bytes(bytes.get(1..5)?.try_into().ok()?) as usize;
    (bytes[0] == 0 && bytes.len() == 5 + len).then(|| bytes.slice(5..))
}

/// One gRPC message whose `chunk` part (field [`fields::PART_CHUNK`]) is `chunk`, as HTTP/2
/// data: the prefix and field keys, the payload slice itself, and the `last` flag.
pub fn chunk_frames(chunk: pb::Chunk) -> impl Iterator<Item = Bytes> {
    let offset_len = match chunk.offset {
        0 => 0,
        offset => 1 + encoded_len_varint(offset),
    };
    let data_len = match chunk.data.len() {
        0 => 0,
        len => 1 + encoded_len_varint(len as u64) + len,
    };
    let last_len = if chunk.last { 2 } else { 0 };
    let inner = offset_len + data_len + last_len;
    let message = 1 + encoded_len_varint(inner as u64) + inner;
    let mut head = BytesMut::with_capacity(32);
    put_prefix(&mut head, message);
    encode_key(fields::PART_CHUNK, WireType::LengthDelimited, &mut head);
    encode_varint(inner as u64, &mut head);
    if chunk.offset != 0 {
        encode_key(fields::OFFSET, WireType::Varint, &mut head);
        encode_varint(chunk.offset, &mut head);
    }
    if !chunk.data.is_empty() {
        encode_key(fields::DATA, WireType::LengthDelimited, &mut head);
        encode_varint(chunk.data.len() as u64, &mut head);
    }
    let tail = chunk.last.then(|| {
        let mut tail = BytesMut::with_capacity(2);
        encode_key(fields::LAST, WireType::Varint, &mut tail);
        tail.put_u8(1);
        tail.freeze()
    });
    [Some(head.freeze()), Some(chunk.data), tail]
        .into_iter()
        .flatten()
        .filter(|b| !b.is_empty())
}

/// Trailers of an OK status.
pub fn ok_trailers() -> http::HeaderMap {
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
    trailers
}

/// The frames of a unary reply after its headers: `message` and an OK status.
pub fn reply_frames(message: &impl Message) -> [Frame<Bytes>; 2] {
    [
        Frame::data(message_frame(message)),
        Frame::trailers(ok_trailers()),
    ]
}

/// A gRPC response whose body is `frames`.
pub fn grpc_response(
    frames: impl Stream<Item = Result<Frame<Bytes>, Infallible>> + Send + 'static,
) -> http::Response<Body> {
    let mut response = http::Response::new(Body::new(StreamBody::new(frames)));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bytes_field_is_framed_as_prost_encodes_it() {
        for len in [1usize, 127, 128, 300_000] {
            let payload = Bytes::from(vec![7u8; len]);
            let joined: Vec<u8> = bytes_field_frames(1, payload.clone()).concat();
            let encoded = message_frame(&pb::RaftPayload {
                ok: payload,
                error: Bytes::new(),
            });
            assert_eq!(joined, encoded.to_vec(), "{len} bytes");
        }
        // prost leaves an empty field out; written anyway, it decodes the same.
        let empty = Bytes::from(bytes_field_frames(1, Bytes::new()).concat());
        let message = single_message(&empty).expect("one message");
        assert_eq!(
            pb::RaftPayload::decode(message).unwrap(),
            pb::RaftPayload::default()
        );
    }

    #[test]
    fn chunk_frames_encode_as_prost_does_for_both_messages_that_carry_chunks() {
        let data = Bytes::from((0..300u32).map(|i| i as u8).collect::<Vec<_>>());
        for (offset, data, last) in [
            (0, data.clone(), false),
            (131_072, data.clone(), true),
            (5, Bytes::new(), true),
            (0, Bytes::new(), false),
        ] {
            let chunk = pb::Chunk { offset, data, last };
            let joined: Vec<u8> = chunk_frames(chunk.clone()).flatten().collect();
            let download = message_frame(&pb::DownloadModelResponse {
                part: Some(pb::download_model_response::Part::Chunk(chunk.clone())),
                read: None,
            });
            assert_eq!(joined, download.to_vec(), "offset {offset}, last {last}");
            let upload = message_frame(&pb::SubmitUpdateRequest {
                part: Some(pb::submit_update_request::Part::Chunk(chunk)),
            });
            assert_eq!(joined, upload.to_vec(), "offset {offset}, last {last}");
            let one = single_message(&upload).expect("one message");
            let back = pb::SubmitUpdateRequest::decode(one).expect("decodes");
            assert!(matches!(
                back.part,
                Some(pb::submit_update_request::Part::Chunk(_))
            ));
        }
        assert_eq!(
            single_message(&Bytes::from_static(&[0, 0, 0, 0, 9, 1])),
            None
        );
    }
}
