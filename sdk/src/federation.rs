//! Federations from a client: start one, upload its initial model, follow it, download
//! committed models (checked against their size, tensors and CRC-32), and — for participants —
//! submit updates and the secure-aggregation steps. Updates go to the leader (the client
//! follows its hint); everything else works through any member.
//!
//! ```text
//!   start_federation ─► [upload_model] ─► watch_federation … ─► download_model(latest)
//!   participant: download_model(invitation.model_round) ─► fit ─► submit_update
//! ```

use bytes::Bytes;
use synod_proto::v1 as pb;
use synod_proto::v1::federation_service_client::FederationServiceClient;
use tonic::metadata::MetadataMap;
use tonic::transport::Channel;
use tonic::Status;

use crate::chunk_stream::{ChunkStream, StreamError};
use crate::payload::{blob_info, chunks, into_le_bytes, ChecksumKind, Receiver};
use crate::tensors::{elements, specs_from_proto, specs_to_proto, Model, TensorSpec};
use crate::{raw_call, wire, Client, ClientError};

/// The SubmitUpdate method's path.
const SUBMIT_UPDATE: &str = "/synod.v1.FederationService/SubmitUpdate";
/// The DownloadModel method's path.
const DOWNLOAD_MODEL: &str = "/synod.v1.FederationService/DownloadModel";
/// Largest message of a model download (its header; chunks are far smaller).
const DOWNLOAD_MESSAGE_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Largest initial model sent inline with the start.
const INLINE_BYTES_MAX: usize = 1024 * 1024;

/// What a participant submits for a round.
#[derive(Debug, Clone)]
pub struct UpdateUpload {
    /// Federation, round, attempt, agent, examples, metrics, tensors and masking; `blob` is
    /// computed from `payload` unless it is given with the payload's size (a checksum computed
    /// while the payload was built saves a pass over it).
    pub header: pb::UpdateHeader,
    /// The payload (little-endian elements; see [`crate::payload::into_le_bytes`]).
    pub payload: Bytes,
}

fn federations(channel: Channel) -> FederationServiceClient<Channel> {
    FederationServiceClient::new(channel)
}

/// The messages of a payload: `header`, then its chunks (slices of it), each built by `wrap`.
fn chunk_messages<T>(header: T, data: &Bytes, wrap: impl Fn(pb::Chunk) -> T) -> Vec<T> {
    std::iter::once(header)
        .chain(chunks(data.clone(), 0).map(wrap))
        .collect()
}

impl Client {
    /// Starts a federation.
    pub async fn start_federation(
        &self,
        spec: pb::FederationSpec,
        idempotency_key: impl Into<String>,
    ) -> Result<pb::StartFederationResponse, ClientError> {
        let request = pb::StartFederationRequest {
            spec: Some(spec),
            idempotency_key: idempotency_key.into(),
        };
        self.call(|channel| {
            let request = request.clone();
            async move { federations(channel).start_federation(request).await }
        })
        .await
    }

    /// Starts a federation from `model`: inline when it is at most 1 MiB, uploaded otherwise.
    pub async fn start_federation_with_model(
        &self,
        mut spec: pb::FederationSpec,
        model: &Model,
        idempotency_key: impl Into<String>,
    ) -> Result<pb::Federation, ClientError> {
        let payload = model.payload();
        let inline = payload.len() <= INLINE_BYTES_MAX;
        spec.initial_model = Some(pb::InitialModel {
            tensors: specs_to_proto(&model.specs),
            inline_data: if inline { payload } else { Vec::new() },
        });
        let started = self.start_federation(spec, idempotency_key).await?;
        let federation = started
            .federation
            .ok_or(ClientError::Protocol("federation missing".into()))?;
        let awaiting = federation.state == pb::FederationState::AwaitingModel as i32;
        if inline || !awaiting {
            return Ok(federation);
        }
        let uploaded = self.upload_model(&federation.federation_id, model).await?;
        uploaded
            .federation
            .ok_or(ClientError::Protocol("federation missing".into()))
    }

    /// Uploads a federation's initial model.
    pub async fn upload_model(
        &self,
        federation_id: &str,
        model: &Model,
    ) -> Result<pb::UploadModelResponse, ClientError> {
        use pb::upload_model_request::Part;
        let payload = into_le_bytes(model.values.clone());
        let header = pb::ModelHeader {
            federation_id: federation_id.to_owned(),
            round: 0,
            tensors: specs_to_proto(&model.specs),
            blob: Some(blob_info(&payload, ChecksumKind::Crc32)),
        };
        self.call(|channel| {
            let first = pb::UploadModelRequest {
                part: Some(Part::Header(header.clone())),
            };
            let messages = chunk_messages(first, &payload, |c| pb::UploadModelRequest {
                part: Some(Part::Chunk(c)),
            });
            async move {
                federations(channel)
                    .upload_model(tokio_stream::iter(messages))
                    .await
            }
        })
        .await
    }

    /// Reads a federation.
    pub async fn get_federation(&self, federation_id: &str) -> Result<pb::Federation, ClientError> {
        let request = pb::GetFederationRequest {
            federation_id: federation_id.to_owned(),
            ..Default::default()
        };
        let response = self
            .call(|channel| {
                let request = request.clone();
                async move { federations(channel).get_federation(request).await }
            })
            .await?;
        response
            .federation
            .ok_or(ClientError::Protocol("federation missing".into()))
    }

    /// Reads a round (0: the current or latest).
    pub async fn get_round(
        &self,
        federation_id: &str,
        round: u32,
    ) -> Result<pb::Round, ClientError> {
        let request = pb::GetRoundRequest {
            federation_id: federation_id.to_owned(),
            round,
            ..Default::default()
        };
        let response = self
            .call(|channel| {
                let request = request.clone();
                async move { federations(channel).get_round(request).await }
            })
            .await?;
        response
            .round
            .ok_or(ClientError::Protocol("round missing".into()))
    }

    /// Cancels a federation.
    pub async fn cancel_federation(
        &self,
        federation_id: &str,
        reason: &str,
    ) -> Result<pb::CancelFederationResponse, ClientError> {
        let request = pb::CancelFederationRequest {
            federation_id: federation_id.to_owned(),
            reason: reason.to_owned(),
        };
        self.call(|channel| {
            let request = request.clone();
            async move { federations(channel).cancel_federation(request).await }
        })
        .await
    }

    /// Follows a federation's events from the start (or after `after_sequence`).
    pub async fn watch_federation(
        &self,
        federation_id: &str,
        after_sequence: u64,
    ) -> Result<tonic::Streaming<pb::FederationEvent>, ClientError> {
        let request = pb::WatchFederationRequest {
            federation_id: federation_id.to_owned(),
            from_start: after_sequence == 0,
            after_sequence,
            ..Default::default()
        };
        self.call(|channel| {
            let request = request.clone();
            async move { federations(channel).watch_federation(request).await }
        })
        .await
    }

    /// Downloads a committed model (`None`: the latest), checked against its header.
    pub async fn download_model(
        &self,
        federation_id: &str,
        round: Option<u32>,
    ) -> Result<(u32, Model), ClientError> {
        self.download_model_into(federation_id, round, Vec::new())
            .await
    }

    /// As [`download_model`](Self::download_model), receiving into `buffer` (e.g. the values of
    /// an earlier model): its memory is reused when it is large enough.
    pub async fn download_model_into(
        &self,
        federation_id: &str,
        round: Option<u32>,
        buffer: Vec<f32>,
    ) -> Result<(u32, Model), ClientError> {
        let request = pb::DownloadModelRequest {
            federation_id: federation_id.to_owned(),
            round,
            ..Default::default()
        };
        let buffer = std::sync::Mutex::new(buffer);
        self.call(|channel| {
            let (metadata, _, request) = self.request(request.clone()).into_parts();
            let buffer = std::mem::take(&mut *buffer.lock().expect("buffer lock"));
            async move {
                download_on(channel, metadata, request, buffer)
                    .await
                    .map(tonic::Response::new)
            }
        })
        .await
    }

    /// Submits a participant's update to the leader. The payload's chunks are written to the
    /// connection as slices of it (see [`crate::wire`]) rather than through an encode buffer,
    /// once the leader has admitted the update: an update waiting for its turn holds only its
    /// header on the leader. Each attempt takes at most the policy's attempt timeout, and a
    /// leader that says nothing for half of it gets the payload anyway (see
    /// [`raw_call::client_streaming_admitted`]).
    pub async fn submit_update(
        &self,
        upload: UpdateUpload,
    ) -> Result<pb::SubmitUpdateResponse, ClientError> {
        use pb::submit_update_request::Part;
        let size = upload.payload.len() as u64;
        let blob = match upload.header.blob {
            Some(blob) if blob.size_bytes == size => blob,
            _ => blob_info(&upload.payload, ChecksumKind::Crc32),
        };
        let header = pb::UpdateHeader {
            blob: Some(blob),
            ..upload.header
        };
        let first = wire::message_frame(&pb::SubmitUpdateRequest {
            part: Some(Part::Header(header)),
        });
        let payload = upload.payload;
        let timeout = self.policy().attempt_timeout;
        self.call(|channel| {
            let rest = chunks(payload.clone(), 0).flat_map(wire::chunk_frames);
            let (metadata, _, ()) = self.request(()).into_parts();
            let first = first.clone();
            async move {
                raw_call::client_streaming_admitted(
                    channel,
                    SUBMIT_UPDATE,
                    metadata,
                    first,
                    rest,
                    timeout,
                )
                .await
                .map(tonic::Response::new)
            }
        })
        .await
    }

    /// Secure aggregation: advertises this participant's public key.
    pub async fn advertise_keys(
        &self,
        request: pb::AdvertiseKeysRequest,
    ) -> Result<pb::AdvertiseKeysResponse, ClientError> {
        self.call(|channel| {
            let request = self.request(request.clone());
            async move { federations(channel).advertise_keys(request).await }
        })
        .await
    }

    /// Secure aggregation: reads the peer keys and the shares addressed to `agent_id`.
    pub async fn get_peer_keys(
        &self,
        federation_id: &str,
        round: u32,
        agent_id: &str,
    ) -> Result<pb::GetPeerKeysResponse, ClientError> {
        let request = pb::GetPeerKeysRequest {
            federation_id: federation_id.to_owned(),
            round,
            agent_id: agent_id.to_owned(),
            ..Default::default()
        };
        self.call(|channel| {
            let request = self.request(request.clone());
            async move { federations(channel).get_peer_keys(request).await }
        })
        .await
    }

    /// Secure aggregation: uploads the encrypted shares of this participant's key.
    pub async fn submit_key_shares(
        &self,
        request: pb::SubmitKeySharesRequest,
    ) -> Result<pb::SubmitKeySharesResponse, ClientError> {
        self.call(|channel| {
            let request = self.request(request.clone());
            async move { federations(channel).submit_key_shares(request).await }
        })
        .await
    }

    /// Secure aggregation: reveals shares of dropped participants' keys.
    pub async fn submit_unmask_shares(
        &self,
        request: pb::SubmitUnmaskSharesRequest,
    ) -> Result<pb::SubmitUnmaskSharesResponse, ClientError> {
        self.call(|channel| {
            let request = self.request(request.clone());
            async move { federations(channel).submit_unmask_shares(request).await }
        })
        .await
    }
}

/// Downloads and checks one model over `channel`, receiving into `buffer`. The reply is read
/// straight from its HTTP/2 body: each chunk's bytes go from the received frames into the
/// model's values, checksummed on the way, with no decode buffer in between.
async fn download_on(
    channel: Channel,
    metadata: MetadataMap,
    request: pb::DownloadModelRequest,
    buffer: Vec<f32>,
) -> Result<(u32, Model), Status> {
    let message = wire::message_frame(&request);
    let body = raw_call::server_streaming(channel, DOWNLOAD_MODEL, metadata, message).await?;
    let mut stream = ChunkStream::new(body, DOWNLOAD_MESSAGE_BYTES_MAX);
    let received = read_model(&mut stream, buffer).await;
    // A server that fails after its first reply says why in the trailers.
    match stream.trailers().and_then(Status::from_header_map) {
        Some(status) if received.is_err() && status.code() != tonic::Code::Ok => Err(status),
        _ => received,
    }
}

/// The status of a model stream that could not be read: a body that fails is a connection
/// lost (`UNAVAILABLE`: another member may serve the model); anything else is a stream that
/// cannot be a model (`DATA_LOSS`).
fn model_stream_status(error: StreamError) -> Status {
    match error {
        StreamError::Body(problem) => Status::unavailable(format!("model stream: {problem}")),
        other => Status::data_loss(format!("model stream: {other}")),
    }
}

/// The model a DownloadModel reply stream carries, checked against its header.
async fn read_model<B>(
    stream: &mut ChunkStream<B>,
    buffer: Vec<f32>,
) -> Result<(u32, Model), Status>
where
    B: http_body::Body<Data = Bytes> + Unpin + Send,
    B::Error: std::fmt::Display,
{
    use pb::download_model_response::Part;
    let lost = model_stream_status;
    let header = match stream.first().await.map_err(lost)? {
        Some(pb::DownloadModelResponse {
            part: Some(Part::Header(header)),
            ..
        }) => header,
        _ => {
            return Err(Status::data_loss(
                "model stream did not start with its header",
            ))
        }
    };
    let blob = header.blob.unwrap_or_default();
    let specs: Vec<TensorSpec> = specs_from_proto(&header.tensors, "tensors")
        .map_err(|e| Status::data_loss(e.to_string()))?;
    if blob.size_bytes != elements(&specs) * 4 {
        return Err(Status::data_loss(format!(
            "the model header declares {} bytes, its tensors hold {}",
            blob.size_bytes,
            elements(&specs) * 4
        )));
    }
    let mut receiver = Receiver::reusing(buffer, elements(&specs) as usize, ChecksumKind::Crc32);
    while let Some(piece) = stream.next_piece().await.map_err(lost)? {
        receiver
            .push(piece.offset, &piece.data)
            .map_err(|e| Status::data_loss(format!("model: {e}")))?;
        if piece.last {
            break;
        }
    }
    let (values, checksum) = receiver
        .finish()
        .map_err(|e| Status::data_loss(format!("model: {e}")))?;
    if !checksum.matches(&blob) {
        return Err(Status::data_loss(format!(
            "model: CRC-32 {} received, {} declared",
            checksum.describe(),
            blob.crc32
        )));
    }
    let model = Model::new(specs, values).map_err(|e| Status::data_loss(e.to_string()))?;
    Ok((header.round, model))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::retry::{next_step, Next};

    #[test]
    fn a_model_stream_cut_by_its_connection_is_retried_elsewhere_and_a_bad_one_is_not() {
        let lost = model_stream_status(StreamError::Body("connection reset".into()));
        assert_eq!(lost.code(), tonic::Code::Unavailable);
        assert!(matches!(next_step(&lost), Next::TryAnother));
        let bad = model_stream_status(StreamError::Invalid {
            field: "chunk",
            problem: "malformed message".into(),
        });
        assert_eq!(bad.code(), tonic::Code::DataLoss);
        assert!(matches!(next_step(&bad), Next::Fail));
    }
}
