//! The federation service as a node serves it, with both bulk transfers on a fast path:
//! SubmitUpdate calls are read straight from their HTTP/2 body ([`UpdateBody`]), and models a
//! replica serves itself are written as HTTP/2 frames that point into the model's bytes (prost
//! would copy every chunk into an encode buffer first). Every other call, a download routed to
//! the leader and anything sent compressed go to the generated tonic service. Clients see one
//! gRPC service either way.
//!
//! ```text
//!   SubmitUpdate, uncompressed  ─► UpdateBody ─► submit (reply headers once admitted)
//!   DownloadModel, served here  ─► header message ─► per chunk: [prefix + field keys][slice][last]
//!   anything else               ─► FederationServiceServer
//! ```

use std::convert::Infallible;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::StreamExt;
use http_body::Frame;
use http_body_util::{BodyExt, Full, Limited};
use prost::Message;
use synod_proto::v1 as pb;
use synod_proto::v1::federation_service_server::FederationServiceServer;
use synod_sdk::raw_call::ADMITTED_HEADER;
use synod_sdk::wire::{
    chunk_frames, grpc_response, message_frame, ok_trailers, reply_frames, single_message,
};
use tokio::sync::oneshot;
use tonic::body::Body;
use tonic::metadata::MetadataMap;
use tonic::server::NamedService;
use tonic::Status;
use tower::Service;
use tracing::Instrument;

use super::chunks;
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
                    .chain(chunks::download_chunks(data, offset).flat_map(chunk_frames))
                    .map(|data| Ok(Frame::data(data)))
                    .chain(std::iter::once(Ok(Frame::trailers(ok_trailers()))));
                grpc_response(futures::stream::iter(frames))
            }
            Err(error) => Status::from(error).into_http(),
        };
        Ok(response)
    }
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

/// Takes an update. The reply's headers go out, marked [`ADMITTED_HEADER`], as soon as the
/// update is admitted (given its share of the upload memory), and its message and status once
/// the update is folded and receipted: an SDK participant sends its payload only after those
/// headers, so an update waiting for its turn holds no more than its header here. An update
/// refused or failed before its admission gets its whole reply at once, unmarked.
#[tracing::instrument(skip_all)]
async fn submit_update(
    api: FederationApi,
    request: http::Request<Body>,
    message_max: usize,
) -> http::Response<Body> {
    let (parts, body) = request.into_parts();
    let metadata = MetadataMap::from_headers(parts.headers);
    let (admitted, admission) = oneshot::channel();
    let mut source = UpdateBody::new(body, message_max, admitted);
    let mut answer =
        Box::pin(async move { api.submit(&metadata, &mut source).await }.in_current_span());
    tokio::select! {
        biased;
        answer = &mut answer => return match answer {
            Ok(response) => unary_response(&response),
            Err(error) => Status::from(error).into_http(),
        },
        Ok(()) = admission => {}
    }
    let frames = futures::stream::once(answer)
        .flat_map(|answer| futures::stream::iter(answer_frames(answer).map(Ok)));
    let mut response = grpc_response(frames);
    response
        .headers_mut()
        .insert(ADMITTED_HEADER, http::HeaderValue::from_static("true"));
    response
}

/// The frames after the headers of a reply to an update: its message and an OK status, or the
/// error's status.
fn answer_frames(
    answer: Result<pb::SubmitUpdateResponse, super::ApiError>,
) -> impl Iterator<Item = Frame<Bytes>> {
    match answer {
        Ok(response) => Vec::from(reply_frames(&response)),
        Err(error) => vec![Frame::trailers(status_trailers(&Status::from(error)))],
    }
    .into_iter()
}

/// Trailers carrying `status`.
fn status_trailers(status: &Status) -> http::HeaderMap {
    let mut trailers = http::HeaderMap::new();
    if status.add_header(&mut trailers).is_err() {
        trailers.clear();
        let _ =
            Status::internal("the reply's status could not be encoded").add_header(&mut trailers);
    }
    trailers
}

/// A gRPC response of one message and an OK status.
fn unary_response(message: &impl Message) -> http::Response<Body> {
    grpc_response(futures::stream::iter(reply_frames(message).map(Ok)))
}
