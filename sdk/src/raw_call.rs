//! gRPC calls made below tonic's codec, for the bulk transfers: a client-streaming call whose
//! request body is given as ready HTTP/2 data (see [`crate::wire`]), so a payload's slices go
//! to the connection without an encode buffer, its unary reply read back with prost; and a
//! server-streaming call whose reply body is handed over as it arrives, for
//! [`crate::chunk_stream`] to parse. On the wire they are the calls tonic makes: the
//! status comes from the response headers or trailers, with its metadata (e.g. the leader
//! hint), a connection that cannot be used is `UNAVAILABLE`, and a call that outlives its
//! `grpc-timeout` header is `CANCELLED`.

use bytes::Bytes;
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use prost::Message;
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
    let (in_headers, body) = start(channel, path, metadata, data).await?;
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
    let (_, body) = start(channel, path, metadata, std::iter::once(message)).await?;
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
/// trailers-only reply) is returned as the error; otherwise the status they hold, if any, and
/// the body.
async fn start(
    channel: Channel,
    path: &'static str,
    metadata: MetadataMap,
    data: impl Iterator<Item = Bytes> + Send + 'static,
) -> Result<(Option<Status>, Body), Status> {
    let frames = futures::stream::iter(data.map(|bytes| Ok::<_, Status>(Frame::data(bytes))));
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
    Ok((in_headers, body))
}

#[cfg(test)]
mod tests {
    use super::*;

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
