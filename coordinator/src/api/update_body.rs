//! A SubmitUpdate request read straight from its HTTP/2 body by the SDK's [`ChunkStream`]:
//! each chunk's payload goes from the received frames into the update's element vector
//! without first being gathered into a message buffer (tonic's decoder copies every byte once
//! more to do that, the largest single cost of an upload on the leader). It also tells the
//! service when the update is admitted, so that the reply's headers can give the go-ahead.
//! Stream errors become API errors here.

use bytes::Bytes;
use synod_proto::v1 as pb;
use synod_sdk::chunk_stream::{ChunkStream, StreamError};
use tokio::sync::oneshot;

use super::chunks::{Piece, Pieces};
use super::ApiError;

/// The messages of one SubmitUpdate request body, and who to tell once it is admitted.
pub struct UpdateBody<B> {
    stream: ChunkStream<B>,
    on_admission: Option<oneshot::Sender<()>>,
}

impl<B> UpdateBody<B>
where
    B: http_body::Body<Data = Bytes> + Unpin + Send,
    B::Error: std::fmt::Display,
{
    /// The stream of `body`, refusing messages over `message_max` bytes; its admission is told
    /// to `on_admission`.
    pub fn new(body: B, message_max: usize, on_admission: oneshot::Sender<()>) -> Self {
        Self {
            stream: ChunkStream::new(body, message_max),
            on_admission: Some(on_admission),
        }
    }

    /// The first message, whole; `None` when the stream is empty.
    pub async fn first(&mut self) -> Result<Option<pb::SubmitUpdateRequest>, ApiError> {
        self.stream.first().await.map_err(ApiError::from)
    }

    /// The update is admitted: its payload is read next.
    pub fn admitted(&mut self) {
        if let Some(on_admission) = self.on_admission.take() {
            let _ = on_admission.send(());
        }
    }
}

impl<B> Pieces for UpdateBody<B>
where
    B: http_body::Body<Data = Bytes> + Unpin + Send,
    B::Error: std::fmt::Display,
{
    async fn next_piece(&mut self) -> Result<Option<Piece>, ApiError> {
        self.stream.next_piece().await.map_err(ApiError::from)
    }
}

impl From<StreamError> for ApiError {
    fn from(error: StreamError) -> Self {
        match error {
            StreamError::Invalid { field, problem } => ApiError::invalid(field, problem),
            StreamError::Body(problem) => ApiError::invalid("stream", problem),
            too_large @ StreamError::TooLarge { .. } => {
                ApiError::ResourceExhausted(too_large.to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_errors_keep_their_status_and_field() {
        let invalid = tonic::Status::from(ApiError::from(StreamError::Invalid {
            field: "chunk",
            problem: "malformed message".into(),
        }));
        assert_eq!(invalid.code(), tonic::Code::InvalidArgument);
        assert!(
            invalid.message().contains("chunk: malformed message"),
            "{invalid:?}"
        );
        let large = tonic::Status::from(ApiError::from(StreamError::TooLarge { len: 9, max: 4 }));
        assert_eq!(large.code(), tonic::Code::ResourceExhausted, "{large:?}");
        assert!(large.message().contains("limit is 4"), "{large:?}");
    }
}
