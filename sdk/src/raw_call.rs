//! gRPC calls made below tonic's codec, for the bulk transfers: a client-streaming call whose
//! request body is given as ready HTTP/2 data (see [`crate::wire`]), so a payload's slices go
//! to the connection without an encode buffer, its unary reply read back with prost; and a
//! server-streaming call whose reply body is handed over as it arrives, for
//! [`crate::chunk_stream`] to parse. On the wire they are the calls tonic makes: the
//! status comes from the response headers or trailers, with its metadata (e.g. the leader
//! hint), a connection that cannot be used is `UNAVAILABLE`, and a call that outlives its
//! `grpc-timeout` header is `CANCELLED`. An upload can also hold its payload back until the
//! server admits it (the reply's headers), so that a server never buffers the payloads of
//! calls still waiting for their turn.

use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use prost::Message;
use tokio::sync::oneshot;
use tonic::body::Body;
use tonic::metadata::MetadataMap;
use tonic::transport::Channel;
use tonic::{Code, Status};
use tower::ServiceExt;

use crate::wire::single_message;

/// Calls `path` on `channel` with `metadata`, sending `data` as the request body, and decodes
/// the one reply message.
pub async fn client_streaming<M: Message + Default>(
    channel: Channel,
    path: &'static str,
    metadata: MetadataMap,
    data: impl Iterator<Item = Bytes> + Send + 'static,
) -> Result<M, Status> {
    let (in_headers, _, body) = start(channel, path, metadata, futures::stream::iter(data)).await?;
    reply(in_headers, body).await
}

/// The reply header by which a server admits a call before reading its payload (see
/// [`client_streaming_admitted`]).
pub const ADMITTED_HEADER: &str = "synod-admitted";

/// Like [`client_streaming`], for a server that admits a call before it reads its payload:
/// sends `first`, then `rest` only once the reply's headers arrive carrying [`ADMITTED_HEADER`]
/// (the server's go-ahead), or after half of `timeout` without any reply (a server that replies
/// only at the end still gets the payload). A reply that comes without the go-ahead ended the
/// call: nothing more is sent. The whole call takes at most `timeout`, as the channel's timeout
/// bounds a call whose reply comes at the end; past it the call is `CANCELLED`.
pub async fn client_streaming_admitted<M: Message + Default>(
    channel: Channel,
    path: &'static str,
    metadata: MetadataMap,
    first: Bytes,
    rest: impl Iterator<Item = Bytes> + Send + 'static,
    timeout: Duration,
) -> Result<M, Status> {
    let (go_ahead, admitted) = oneshot::channel::<()>();
    let rest = futures::stream::once(async move {
        match tokio::time::timeout(timeout / 2, admitted).await {
            Ok(Err(_)) => None,
            Ok(Ok(())) | Err(_) => Some(futures::stream::iter(rest)),
        }
    })
    .filter_map(std::future::ready)
    .flatten();
    let data = futures::stream::once(std::future::ready(first)).chain(rest);
    let call = async move {
        let (in_headers, headers, body) = start(channel, path, metadata, data).await?;
        if headers.contains_key(ADMITTED_HEADER) {
            let _ = go_ahead.send(());
        }
        reply(in_headers, body).await
    };
    tokio::time::timeout(timeout, call)
        .await
        .unwrap_or_else(|_| Err(Status::cancelled("Timeout expired")))
}

/// The one message of a unary reply, after its status (in its headers or trailers) is OK.
async fn reply<M: Message + Default>(in_headers: Option<Status>, body: Body) -> Result<M, Status> {
    let collected = body.collect().await?;
    let trailers = collected.trailers().and_then(Status::from_header_map);
    match trailers.or(in_headers) {
        Some(status) if status.code() != Code::Ok => return Err(status),
        Some(_) => {}
        None => return Err(Status::internal("the reply carried no grpc-status")),
    }
    let data = collected.to_bytes();
    let message =
        single_message(&data).ok_or_else(|| Status::internal("the reply is not one message"))?;
    M::decode(message).map_err(|e| Status::internal(format!("reply: {e}")))
}

/// Calls server-streaming `path` on `channel` with `metadata` and the one gRPC-framed request
/// `message`; returns the reply's body to be read as it arrives (its trailers carry the final
/// status).
pub async fn server_streaming(
    channel: Channel,
    path: &'static str,
    metadata: MetadataMap,
    message: Bytes,
) -> Result<Body, Status> {
    let data = futures::stream::once(std::future::ready(message));
    let (_, _, body) = start(channel, path, metadata, data).await?;
    Ok(body)
}

/// Whether `error` (or what caused it) is the channel's timeout.
fn timed_out(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(error) = next {
        if error.is::<tonic::TimeoutExpired>() {
            return true;
        }
        next = error.source();
    }
    false
}

/// Sends the request and waits for the reply's headers: an error status in them (a
/// trailers-only reply) is returned as the error; otherwise the status they hold, if any, the
/// headers and the body.
async fn start(
    channel: Channel,
    path: &'static str,
    metadata: MetadataMap,
    data: impl Stream<Item = Bytes> + Send + 'static,
) -> Result<(Option<Status>, http::HeaderMap, Body), Status> {
    let frames = data.map(|bytes| Ok::<_, Status>(Frame::data(bytes)));
    let mut request = http::Request::new(Body::new(StreamBody::new(frames)));
    *request.method_mut() = http::Method::POST;
    *request.uri_mut() = http::Uri::from_static(path);
    let headers = request.headers_mut();
    headers.extend(metadata.into_headers());
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    headers.insert(http::header::TE, http::HeaderValue::from_static("trailers"));
    let response = channel
        .oneshot(request)
        .await
        .map_err(|e| match timed_out(&e) {
            // The request's `grpc-timeout` passed: the call was cut short, as tonic reports it.
            true => Status::cancelled("Timeout expired"),
            false => Status::unavailable(format!("connection: {e}")),
        })?;
    let (parts, body) = response.into_parts();
    let in_headers = Status::from_header_map(&parts.headers);
    if let Some(status) = in_headers.clone().filter(|s| s.code() != Code::Ok) {
        return Err(status);
    }
    if parts.status != http::StatusCode::OK {
        return Err(Status::unknown(format!("HTTP status {}", parts.status)));
    }
    Ok((in_headers, parts.headers, body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::task::{Context, Poll};

    use synod_proto::v1 as pb;
    use tokio_stream::wrappers::TcpListenerStream;

    const PUT: &str = "/test.Uploads/Put";
    const REST_FRAMES: usize = 4;
    const REST_FRAME_BYTES: usize = 64 * 1024;
    /// Every byte of an upload: its first frame ("the header") and the rest.
    const ALL: usize = 10 + REST_FRAMES * REST_FRAME_BYTES;

    /// How a test server answers an upload after its first frame.
    #[derive(Clone, Copy)]
    enum Answer {
        /// Admits it (marked reply headers), then reads the rest and replies.
        Admit,
        /// Admits it, reads the rest and never replies.
        AdmitAndStall,
        /// Refuses it with an error status, without admitting it.
        Refuse,
        /// Answers it with a whole OK reply, without admitting it (as a leader answers an
        /// update for a closed round).
        ReplyAtOnce,
        /// Reads everything, then replies (no go-ahead before the end).
        AtTheEnd,
    }

    /// A server of one client-streaming method whose reply's `rejection_reason` says how many
    /// bytes came after the first frame before its go-ahead (`early N`) and in all (`N bytes`).
    #[derive(Clone)]
    struct Uploads(Answer);

    impl tonic::server::NamedService for Uploads {
        const NAME: &'static str = "test.Uploads";
    }

    /// The bytes of `body`'s data frames until it ends.
    async fn drain(body: &mut Body) -> usize {
        let mut total = 0;
        while let Some(Ok(frame)) = body.frame().await {
            total += frame.into_data().map_or(0, |d| d.len());
        }
        total
    }

    /// A reply of one message whose `rejection_reason` is `reason`, and an OK status.
    fn reply_frames(reason: String) -> [Result<Frame<Bytes>, Infallible>; 2] {
        let message = pb::SubmitUpdateResponse {
            rejection_reason: reason,
            ..Default::default()
        };
        crate::wire::reply_frames(&message).map(Ok)
    }

    /// A reply of `frames`, marked as the go-ahead when `admitted`.
    fn grpc_response(
        frames: impl Stream<Item = Result<Frame<Bytes>, Infallible>> + Send + 'static,
        admitted: bool,
    ) -> http::Response<Body> {
        let mut response = crate::wire::grpc_response(frames);
        if admitted {
            response
                .headers_mut()
                .insert(ADMITTED_HEADER, http::HeaderValue::from_static("true"));
        }
        response
    }

    impl tower::Service<http::Request<Body>> for Uploads {
        type Response = http::Response<Body>;
        type Error = Infallible;
        type Future = futures::future::BoxFuture<'static, Result<Self::Response, Infallible>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, request: http::Request<Body>) -> Self::Future {
            let answer = self.0;
            Box::pin(async move {
                let mut body = request.into_body();
                let first = match body.frame().await {
                    Some(Ok(frame)) => frame.into_data().map_or(0, |d| d.len()),
                    _ => 0,
                };
                // Whatever a client sends unprompted arrives well within this.
                let wait = Duration::from_millis(300);
                let mut early = 0;
                while let Ok(Some(Ok(frame))) = tokio::time::timeout(wait, body.frame()).await {
                    early += frame.into_data().map_or(0, |d| d.len());
                }
                let frames = match answer {
                    Answer::Refuse => {
                        return Ok(Status::failed_precondition("not your turn").into_http())
                    }
                    Answer::ReplyAtOnce => {
                        let frames = reply_frames(format!("answered, early {early}"));
                        return Ok(grpc_response(futures::stream::iter(frames), false));
                    }
                    Answer::AtTheEnd => {
                        let total = first + early + drain(&mut body).await;
                        let frames = reply_frames(format!("early 0, {total} bytes"));
                        return Ok(grpc_response(futures::stream::iter(frames), false));
                    }
                    Answer::Admit => futures::stream::once(async move {
                        let total = first + early + drain(&mut body).await;
                        futures::stream::iter(reply_frames(format!("early {early}, {total} bytes")))
                    })
                    .flatten()
                    .boxed(),
                    Answer::AdmitAndStall => futures::stream::once(async move {
                        drain(&mut body).await;
                        futures::future::pending::<()>().await;
                        futures::stream::iter(reply_frames(String::new()))
                    })
                    .flatten()
                    .boxed(),
                };
                Ok(grpc_response(frames, true))
            })
        }
    }

    /// A channel to a fresh server of `Uploads(answer)` on a loopback socket.
    async fn serve(answer: Answer) -> Channel {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(Uploads(answer))
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );
        Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    /// Uploads "the header" and then `REST_FRAMES` frames to a server answering with
    /// `answer`: the reply's `rejection_reason` or the error, whether the client took any of the
    /// rest to send, and how long the call took.
    async fn upload(answer: Answer, timeout: Duration) -> (Result<String, Status>, bool, Duration) {
        let channel = serve(answer).await;
        let taken = Arc::new(AtomicBool::new(false));
        let rest = {
            let taken = taken.clone();
            (0..REST_FRAMES).map(move |_| {
                taken.store(true, Ordering::SeqCst);
                Bytes::from(vec![7u8; REST_FRAME_BYTES])
            })
        };
        let started = std::time::Instant::now();
        let reply = client_streaming_admitted::<pb::SubmitUpdateResponse>(
            channel,
            PUT,
            MetadataMap::new(),
            Bytes::from_static(b"the header"),
            rest,
            timeout,
        )
        .await
        .map(|reply| reply.rejection_reason);
        (reply, taken.load(Ordering::SeqCst), started.elapsed())
    }

    #[tokio::test]
    async fn an_admitted_upload_sends_its_payload_only_after_the_go_ahead() {
        let (reply, _, took) = upload(Answer::Admit, Duration::from_secs(30)).await;
        assert_eq!(reply.unwrap(), format!("early 0, {ALL} bytes"));
        assert!(
            took < Duration::from_secs(10),
            "{took:?}: sent without the go-ahead"
        );
        // The same server sees the payload at once from a plain client-streaming call.
        let data = std::iter::once(Bytes::from_static(b"the header"))
            .chain((0..REST_FRAMES).map(|_| Bytes::from(vec![7u8; REST_FRAME_BYTES])));
        let eager: pb::SubmitUpdateResponse =
            client_streaming(serve(Answer::Admit).await, PUT, MetadataMap::new(), data)
                .await
                .unwrap();
        assert_eq!(
            eager.rejection_reason,
            format!("early {}, {ALL} bytes", ALL - 10)
        );
    }

    #[tokio::test]
    async fn an_upload_answered_before_its_go_ahead_sends_nothing_more() {
        let (refused, taken, _) = upload(Answer::Refuse, Duration::from_secs(30)).await;
        let status = refused.unwrap_err();
        assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
        assert_eq!(status.message(), "not your turn");
        assert!(!taken, "the payload was sent after a refusal");
        let (answered, taken, _) = upload(Answer::ReplyAtOnce, Duration::from_secs(30)).await;
        assert_eq!(answered.unwrap(), "answered, early 0");
        assert!(!taken, "the payload was sent after a whole reply");
    }

    #[tokio::test]
    async fn a_server_that_replies_only_at_the_end_gets_the_payload_after_half_the_timeout() {
        let (reply, taken, took) = upload(Answer::AtTheEnd, Duration::from_secs(2)).await;
        assert_eq!(reply.unwrap(), format!("early 0, {ALL} bytes"));
        assert!(taken);
        assert!(took >= Duration::from_secs(1), "{took:?}");
    }

    #[tokio::test]
    async fn an_admitted_upload_never_answered_is_cancelled_at_its_timeout() {
        let (reply, taken, took) = upload(Answer::AdmitAndStall, Duration::from_secs(1)).await;
        let status = reply.unwrap_err();
        assert_eq!(status.code(), Code::Cancelled, "{status:?}");
        assert!(taken);
        assert!(took >= Duration::from_secs(1), "{took:?}");
        assert!(took < Duration::from_secs(5), "{took:?}");
    }

    /// An error caused by another, as the channel wraps its timeout.
    #[derive(Debug, thiserror::Error)]
    #[error("request failed")]
    struct Wrapped(#[source] Box<dyn std::error::Error + Send + Sync>);

    #[test]
    fn the_channel_timeout_is_found_anywhere_in_the_error_chain() {
        let expired = Wrapped(Box::new(Wrapped(Box::new(tonic::TimeoutExpired(())))));
        assert!(timed_out(&expired));
        assert!(timed_out(&tonic::TimeoutExpired(())));
        let refused = Wrapped(Box::new(std::io::Error::other("connection refused")));
        assert!(!timed_out(&refused));
    }
}
