//! The federation service as a node serves it, with both bulk transfers on a fast path:
//! SubmitUpdate calls are read straight from their HTTP/2 body ([`UpdateBody`]), and models a
//! replica serves itself are written as HTTP/2 frames that point into the model's bytes (prost
//! would copy every chunk into an encode buffer first). Every other call, a download routed to
//! the leader and anything sent compressed go to the generated tonic service. Clients see one
//! gRPC service either way.
//!
//! ```text
//!   SubmitUpdate, uncompressed  ─► UpdateBody ─► submit
//!   DownloadModel, served here  ─► header message ─► per chunk: [prefix + field keys][slice][last]
//!   anything else               ─► FederationServiceServer
//! ```

use std::convert::Infallible;
use std::task::{Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};
use futures::future::BoxFuture;
use http_body::Frame;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use prost::Message;
use synod_proto::v1 as pb;
use synod_proto::v1::federation_service_server::FederationServiceServer;
use tonic::body::Body;
use tonic::metadata::MetadataMap;
use tonic::server::NamedService;
use tonic::Status;
use tower::Service;

use super::chunks::{self, fields};
use super::leader::wants_linearizable;
use super::update_body::UpdateBody;
use super::FederationApi;

const SUBMIT_UPDATE: &str = "/synod.v1.FederationService/SubmitUpdate";
const DOWNLOAD_MODEL: &str = "/synod.v1.FederationService/DownloadModel";

/// The federation service with its update fast path. Cheap to clone.
#[derive(Clone)]
pub struct FederationService {
    api: FederationApi,
    grpc: FederationServiceServer<FederationApi>,
    message_max: usize,
}

impl FederationService {
    /// Serves `api`, taking messages of up to `message_max` bytes.
    pub fn new(api: FederationApi, message_max: usize) -> Self {
        let grpc = FederationServiceServer::new(api.clone())
            .max_decoding_message_size(message_max)
            .max_encoding_message_size(message_max);
        Self {
            api,
            grpc,
            message_max,
        }
    }
}

impl NamedService for FederationService {
    const NAME: &'static str = <FederationServiceServer<FederationApi> as NamedService>::NAME;
}

impl Service<http::Request<Body>> for FederationService {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let fast = uncompressed_grpc(request.headers());
        if fast && request.uri().path() == SUBMIT_UPDATE {
            let (api, message_max) = (self.api.clone(), self.message_max);
            return Box::pin(async move { Ok(submit_update(api, request, message_max).await) });
        }
        if fast && request.uri().path() == DOWNLOAD_MODEL {
            let service = self.clone();
            return Box::pin(async move { service.download_model(request).await });
        }
        let mut grpc = self.grpc.clone();
        Box::pin(async move { grpc.call(request).await })
    }
}

impl FederationService {
    /// Serves a download of a model this replica holds from the model's own bytes; one routed
    /// to the leader, or a request it cannot read, goes to tonic unchanged.
    async fn download_model(
        mut self,
        request: http::Request<Body>,
    ) -> Result<http::Response<Body>, Infallible> {
        let (parts, body) = request.into_parts();
        let Ok(bytes) = Limited::new(body, self.message_max).collect().await else {
            return Ok(Status::invalid_argument("stream: unreadable request").into_http());
        };
        let bytes = bytes.to_bytes();
        let served_here = single_message(&bytes)
            .and_then(|m| pb::DownloadModelRequest::decode(m).ok())
            .filter(|r| r.round.is_some() || !wants_linearizable(r.consistency));
        let Some(download) = served_here else {
            let request = http::Request::from_parts(parts, Body::new(Full::new(bytes)));
            return self.grpc.call(request).await;
        };
        let response = match self.api.prepare_download(download).await {
            Ok((first, data, offset)) => {
                let frames = std::iter::once(message_frame(&first))
                    .chain(chunks::chunks(data, offset).flat_map(chunk_frames))
                    .map(|data| Ok(Frame::data(data)))
                    .chain(std::iter::once(Ok(Frame::trailers(ok_trailers()))));
                grpc_response(frames)
            }
            Err(error) => Status::from(error).into_http(),
        };
        Ok(response)
    }
}

/// The one gRPC message `bytes` holds, uncompressed.
fn single_message(bytes: &Bytes) -> Option<Bytes> {
    let len = u32::from_be_bytes(bytes.get(1..5)?.try_into().ok()?) as usize;
    (bytes[0] == 0 && bytes.len() == 5 + len).then(|| bytes.slice(5..))
}

/// One `DownloadModelResponse { chunk }` message as HTTP/2 data: the prefix and field keys,
/// the payload slice itself, and the `last` flag. Encodes exactly as prost would.
fn chunk_frames(chunk: pb::Chunk) -> impl Iterator<Item = Bytes> {
    use prost::encoding::{encode_key, encode_varint, encoded_len_varint, WireType};
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
    head.put_u8(0);
    head.put_u32(message as u32);
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

/// A gRPC request whose messages are not compressed.
fn uncompressed_grpc(headers: &http::HeaderMap) -> bool {
    let grpc = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == "application/grpc" || v == "application/grpc+proto");
    let identity = headers
        .get("grpc-encoding")
        .is_none_or(|v| v.as_bytes() == b"identity");
    grpc && identity
}

#[tracing::instrument(skip_all)]
async fn submit_update(
    api: FederationApi,
    request: http::Request<Body>,
    message_max: usize,
) -> http::Response<Body> {
    let (parts, body) = request.into_parts();
    let metadata = MetadataMap::from_headers(parts.headers);
    let mut source = UpdateBody::new(body, message_max);
    match api.submit(&metadata, &mut source).await {
        Ok(response) => unary_response(&response),
        Err(error) => Status::from(error).into_http(),
    }
}

/// A gRPC response of one message and an OK status.
fn unary_response(message: &impl Message) -> http::Response<Body> {
    grpc_response(
        [
            Ok(Frame::data(message_frame(message))),
            Ok(Frame::trailers(ok_trailers())),
        ]
        .into_iter(),
    )
}

/// `message`, gRPC-framed.
fn message_frame(message: &impl Message) -> Bytes {
    let len = message.encoded_len();
    let mut data = BytesMut::with_capacity(5 + len);
    data.put_u8(0);
    data.put_u32(len as u32);
    message
        .encode(&mut data)
        .expect("the buffer holds the message");
    data.freeze()
}

fn ok_trailers() -> http::HeaderMap {
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
    trailers
}

/// A gRPC response whose body is `frames`.
fn grpc_response(
    frames: impl Iterator<Item = Result<Frame<Bytes>, Infallible>> + Send + 'static,
) -> http::Response<Body> {
    let body = Body::new(StreamBody::new(futures::stream::iter(frames)));
    let mut response = http::Response::new(body);
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
    fn chunk_frames_encode_as_prost_does() {
        let data = Bytes::from((0..300u32).map(|i| i as u8).collect::<Vec<_>>());
        for (offset, data, last) in [
            (0, data.clone(), false),
            (131_072, data.clone(), true),
            (5, Bytes::new(), true),
            (0, Bytes::new(), false),
        ] {
            let chunk = pb::Chunk { offset, data, last };
            let joined: Vec<u8> = chunk_frames(chunk.clone()).flatten().collect();
            let expected = message_frame(&pb::DownloadModelResponse {
                part: Some(pb::download_model_response::Part::Chunk(chunk)),
                read: None,
            });
            assert_eq!(joined, expected.to_vec(), "offset {offset}, last {last}");
        }
    }
}
