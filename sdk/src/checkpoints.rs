//! Checkpoints: save a blob under a scope and a name (streamed in chunks with its SHA-256),
//! read the latest or a given version back, list. Tasks save theirs through
//! [`Task::save_checkpoint`](crate::agent::Task::save_checkpoint); a retried or reassigned
//! attempt finds the latest one of its task in [`Task::checkpoint`](crate::agent::Task).

use bytes::Bytes;
use synod_proto::v1 as pb;
use synod_proto::v1::coordination_service_client::CoordinationServiceClient;
use tonic::transport::Channel;
use tonic::Status;

use crate::jobs::all_pages;
use crate::payload::{blob_info, chunks, ChecksumKind};
use crate::tensors::sha256_hex;
use crate::{Client, ClientError};

/// A checkpoint version with its payload.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    /// Scope, name, version, size, SHA-256, metadata.
    pub info: pb::CheckpointInfo,
    /// The payload.
    pub data: Vec<u8>,
}

/// Saves `data` as a new version over `channel`.
pub(crate) async fn save_on(
    channel: Channel,
    scope: pb::CheckpointScope,
    name: &str,
    data: &[u8],
    metadata: &[(String, String)],
) -> Result<pb::CheckpointInfo, Status> {
    use pb::save_checkpoint_request::Part;
    let header = pb::CheckpointHeader {
        scope: Some(scope),
        name: name.to_owned(),
        blob: Some(blob_info(data, ChecksumKind::Sha256)),
        metadata: metadata.iter().cloned().collect(),
        keep_versions: 0,
    };
    let mut messages = vec![pb::SaveCheckpointRequest {
        part: Some(Part::Header(header)),
    }];
    messages.extend(chunks(Bytes::copy_from_slice(data), 0).map(|chunk| {
        pb::SaveCheckpointRequest {
            part: Some(Part::Chunk(chunk)),
        }
    }));
    let response = CoordinationServiceClient::new(channel)
        .save_checkpoint(tokio_stream::iter(messages))
        .await?;
    Ok(response.into_inner().checkpoint.unwrap_or_default())
}

/// Reads a version (0: the latest) over `channel`, checking its size and SHA-256.
pub(crate) async fn read_on(
    channel: Channel,
    request: pb::GetCheckpointRequest,
) -> Result<Checkpoint, Status> {
    use pb::get_checkpoint_response::Part;
    let mut stream = CoordinationServiceClient::new(channel)
        .max_decoding_message_size(usize::MAX)
        .get_checkpoint(request)
        .await?
        .into_inner();
    let mut info = None;
    let mut data = Vec::new();
    while let Some(message) = stream.message().await? {
        match message.part {
            Some(Part::Checkpoint(first)) => info = Some(first),
            Some(Part::Chunk(chunk)) => data.extend_from_slice(&chunk.data),
            None => {}
        }
    }
    let info = info.ok_or_else(|| Status::data_loss("the checkpoint stream had no header"))?;
    let blob = info.blob.clone().unwrap_or_default();
    let sha256 = sha256_hex(&data);
    if data.len() as u64 != blob.size_bytes || sha256 != blob.sha256 {
        return Err(Status::data_loss(format!(
            "checkpoint '{}' v{} arrived damaged ({} bytes, sha256 {sha256})",
            info.name,
            info.version,
            data.len()
        )));
    }
    Ok(Checkpoint { info, data })
}

impl Client {
    /// Saves `data` as the next version of `name` in `scope`.
    pub async fn save_checkpoint(
        &self,
        scope: pb::CheckpointScope,
        name: &str,
        data: &[u8],
        metadata: &[(String, String)],
    ) -> Result<pb::CheckpointInfo, ClientError> {
        self.call(|channel| {
            let scope = scope.clone();
            async move {
                save_on(channel, scope, name, data, metadata)
                    .await
                    .map(tonic::Response::new)
            }
        })
        .await
    }

    /// Reads version `version` (0: the latest) of `name` in `scope`.
    pub async fn get_checkpoint(
        &self,
        scope: pb::CheckpointScope,
        name: &str,
        version: u64,
    ) -> Result<Checkpoint, ClientError> {
        let request = pb::GetCheckpointRequest {
            scope: Some(scope),
            name: name.to_owned(),
            version,
            consistency: pb::Consistency::Linearizable as i32,
        };
        self.call(|channel| {
            let request = request.clone();
            async move { read_on(channel, request).await.map(tonic::Response::new) }
        })
        .await
    }

    /// Lists checkpoints (of `scope` when given), newest version first, every version when
    /// `all_versions`.
    pub async fn list_checkpoints(
        &self,
        scope: Option<pb::CheckpointScope>,
        all_versions: bool,
        limit: usize,
    ) -> Result<Vec<pb::CheckpointInfo>, ClientError> {
        all_pages(limit, |page| {
            let request = pb::ListCheckpointsRequest {
                scope: scope.clone(),
                name: String::new(),
                all_versions,
                page: Some(page),
                consistency: pb::Consistency::Linearizable as i32,
            };
            async move {
                let response = self
                    .coordination(
                        request,
                        |mut c, r| async move { c.list_checkpoints(r).await },
                    )
                    .await?;
                Ok((response.checkpoints, response.next_page_token))
            }
        })
        .await
    }
}
