//! Checkpoints over gRPC: a streamed save (header, then chunks checked for order, size and
//! SHA-256 before anything is proposed), a streamed read of any committed version from any
//! node, and listings.
//!
//! ```text
//!   SaveCheckpoint ─► header (scope, name, declared size ≤ limits.checkpoint_bytes_max)
//!                  ─► chunks in order ─► size and SHA-256 match ─► SaveCheckpoint command
//!   GetCheckpoint  ─► CheckpointInfo, then 1 MiB chunks
//! ```

use bytes::Bytes;
use synod_proto::v1 as pb;
use synod_sdk::payload::ChecksumKind;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use super::chunks;
use super::convert::write_meta;
use super::request::{next_token, page_position, page_size, require};
use super::{ApiError, LeaderRouter};
use crate::runtime::Proposer;
use crate::state::checkpoints::{Save, Scope, Version};
use crate::state::{Applied, Command, State};

/// The checkpoint part of `synod.v1.CoordinationService`.
#[derive(Clone)]
pub struct CheckpointApi {
    proposer: Proposer,
    router: LeaderRouter,
    bytes_max: usize,
}

/// The stream type of `GetCheckpoint`.
pub type CheckpointStream = ReceiverStream<Result<pb::GetCheckpointResponse, Status>>;

impl CheckpointApi {
    /// A service proposing through `proposer`, reading through `router`, accepting payloads
    /// of at most `bytes_max`.
    pub fn new(proposer: Proposer, router: LeaderRouter, bytes_max: usize) -> Self {
        Self {
            proposer,
            router,
            bytes_max,
        }
    }

    /// The router, for reads.
    pub fn router(&self) -> &LeaderRouter {
        &self.router
    }

    /// Receives a save, checks it, and commits it.
    pub async fn save(
        &self,
        mut stream: Streaming<pb::SaveCheckpointRequest>,
    ) -> Result<pb::SaveCheckpointResponse, ApiError> {
        use pb::save_checkpoint_request::Part;
        let header = match stream.message().await.map_err(chunks::stream_error)? {
            Some(pb::SaveCheckpointRequest {
                part: Some(Part::Header(header)),
            }) => header,
            _ => {
                return Err(ApiError::invalid(
                    "header",
                    "the first message must be the header",
                ))
            }
        };
        require("name", &header.name)?;
        let (scope, attempt) = scope(header.scope, "scope")?;
        if matches!(scope, Scope::Task { .. }) && attempt.is_none() {
            return Err(ApiError::invalid(
                "scope.task.attempt",
                "required when saving: the task's current attempt",
            ));
        }
        let declared = header
            .blob
            .ok_or_else(|| ApiError::invalid("header.blob", "required"))?;
        let data = chunks::receive::<u8, _>(
            &mut stream,
            &declared,
            self.bytes_max as u64,
            "limits.checkpoint_bytes_max",
            ChecksumKind::Sha256,
            |message| match message.part {
                Some(Part::Chunk(chunk)) => Some(chunk),
                _ => None,
            },
        )
        .await?;
        let save = Save {
            scope,
            name: header.name,
            data,
            sha256: declared.sha256.to_lowercase(),
            metadata: header.metadata.into_iter().collect(),
            created_by: "client".to_owned(),
            keep_versions: header.keep_versions,
            attempt,
        };
        let (scope, name) = (save.scope.clone(), save.name.clone());
        let result = self.proposer.propose(Command::SaveCheckpoint(save)).await?;
        let version = match &result.outcome {
            Ok(Applied::CheckpointSaved { version }) => *version,
            Ok(other) => return Err(ApiError::Internal(format!("unexpected outcome {other:?}"))),
            Err(rejection) => return Err(rejection.clone().into()),
        };
        let wait = self
            .router
            .raft()
            .wait(Some(std::time::Duration::from_secs(10)));
        let _ = wait
            .applied_index_at_least(Some(result.log_index), "checkpoint saved")
            .await;
        let (info, _) = self.router.read_local(false, |state| {
            let saved = state.checkpoints.get(&scope, &name, version)?;
            Some(info(&scope, &name, saved))
        });
        Ok(pb::SaveCheckpointResponse {
            checkpoint: info,
            write: Some(write_meta(&result)),
        })
    }

    /// Streams one version from this replica's applied state.
    pub fn read(
        &self,
        request: pb::GetCheckpointRequest,
        linearizable: bool,
    ) -> Result<CheckpointStream, ApiError> {
        require("name", &request.name)?;
        let (scope, _) = scope(request.scope, "scope")?;
        let (found, read) = self.router.read_local(linearizable, |state| {
            let version = state
                .checkpoints
                .get(&scope, &request.name, request.version)?;
            Some((
                info(&scope, &request.name, version),
                Bytes::from(version.data.clone()),
            ))
        });
        let (info, data) = found.ok_or_else(|| {
            let which = match request.version {
                0 => "any version".to_owned(),
                v => format!("version {v}"),
            };
            ApiError::NotFound(format!(
                "name: no checkpoint '{}' with {which} in that scope",
                request.name
            ))
        })?;
        let parts = chunks::chunks(data.clone(), 0);
        let (sender, receiver) = mpsc::channel(data.len().div_ceil(chunks::CHUNK_BYTES) + 2);
        let first = pb::GetCheckpointResponse {
            part: Some(pb::get_checkpoint_response::Part::Checkpoint(info)),
            read: Some(read),
        };
        let _ = sender.try_send(Ok(first));
        for chunk in parts {
            let _ = sender.try_send(Ok(pb::GetCheckpointResponse {
                part: Some(pb::get_checkpoint_response::Part::Chunk(chunk)),
                read: None,
            }));
        }
        Ok(ReceiverStream::new(receiver))
    }
}

/// A page of checkpoints by scope and name, newest version first.
pub fn list_checkpoints(
    state: &State,
    request: &pb::ListCheckpointsRequest,
) -> Result<(Vec<pb::CheckpointInfo>, String), ApiError> {
    let limit = page_size(request.page.as_ref())?;
    let after = page_position(request.page.as_ref())?;
    let only_scope = match &request.scope {
        Some(s) if s.owner.is_some() => Some(scope(Some(s.clone()), "scope")?.0),
        _ => None,
    };
    let entries = state
        .checkpoints
        .iter()
        .filter(|(s, _, _)| only_scope.as_ref().is_none_or(|only| only == *s))
        .filter(|(_, name, _)| request.name.is_empty() || request.name == *name)
        .flat_map(|(s, name, versions)| {
            let shown = match request.all_versions {
                true => versions.len(),
                false => 1,
            };
            versions
                .iter()
                .rev()
                .take(shown)
                .map(move |v| info(s, name, v))
        });
    let start = after.map_or(0, |position| position as usize + 1);
    let mut page: Vec<(usize, pb::CheckpointInfo)> =
        entries.enumerate().skip(start).take(limit + 1).collect();
    let more = page.len() > limit;
    page.truncate(limit);
    let token = next_token(more, page.last().map(|(i, _)| *i as u64));
    Ok((page.into_iter().map(|(_, info)| info).collect(), token))
}

/// The domain scope (and, for a task, the fencing attempt when given) of a proto scope.
fn scope(
    scope: Option<pb::CheckpointScope>,
    field: &str,
) -> Result<(Scope, Option<u32>), ApiError> {
    use pb::checkpoint_scope::Owner;
    match scope.and_then(|s| s.owner) {
        Some(Owner::JobId(job_id)) if !job_id.is_empty() => Ok((Scope::Job(job_id), None)),
        Some(Owner::Task(task)) if !task.job_id.is_empty() && !task.task_id.is_empty() => {
            let attempt = (task.attempt > 0).then_some(task.attempt);
            let scope = Scope::Task {
                job_id: task.job_id,
                task_id: task.task_id,
            };
            Ok((scope, attempt))
        }
        Some(Owner::AgentId(agent_id)) if !agent_id.is_empty() => {
            Ok((Scope::Agent(agent_id), None))
        }
        Some(Owner::FederationId(_)) => Err(ApiError::invalid(
            format!("{field}.federation_id"),
            "federation checkpoints are not available in this version of Synod",
        )),
        Some(_) => Err(ApiError::invalid(field, "the owner's id is empty")),
        None => Err(ApiError::invalid(
            field,
            "required: a job, task, agent or federation",
        )),
    }
}

/// The proto form of a scope.
pub fn scope_pb(scope: &Scope) -> pb::CheckpointScope {
    use pb::checkpoint_scope::Owner;
    let owner = match scope {
        Scope::Job(job_id) => Owner::JobId(job_id.clone()),
        Scope::Task { job_id, task_id } => Owner::Task(pb::TaskRef {
            job_id: job_id.clone(),
            task_id: task_id.clone(),
            attempt: 0,
        }),
        Scope::Agent(agent_id) => Owner::AgentId(agent_id.clone()),
    };
    pb::CheckpointScope { owner: Some(owner) }
}

/// A version's info, without its payload.
pub fn info(scope: &Scope, name: &str, version: &Version) -> pb::CheckpointInfo {
    pb::CheckpointInfo {
        scope: Some(scope_pb(scope)),
        name: name.to_owned(),
        version: version.version,
        blob: Some(pb::BlobInfo {
            size_bytes: version.data.len() as u64,
            sha256: version.sha256.clone(),
            ..Default::default()
        }),
        metadata: version.metadata.clone().into_iter().collect(),
        created_by: version.created_by.clone(),
        created_at_ms: version.created_at_ms,
    }
}
