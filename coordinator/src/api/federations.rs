//! `synod.v1.FederationService`: start, upload, read, watch and cancel federations, move
//! models, and take participants' updates and secure-aggregation steps.
//!
//! Writes reaching a follower are forwarded whole to the leader; streamed uploads (the initial
//! model, whose chunks must reach the log in order, and updates, which the leader folds into
//! the round's aggregate) must reach the leader itself (`UNAVAILABLE` with the leader's
//! address otherwise; the SDK follows it). Committed models are read from any node.
//!
//! ```text
//!   StartFederation ─► spec checked ─► StartFederation command (inline model ≤ 1 MiB)
//!   UploadModel     ─► header = spec's tensors ─► chunks (order, size, SHA-256)
//!                   ─► StageModel × n ─► CommitInitialModel
//!   SubmitUpdate    ─► header checked against the open attempt ─► upload permit
//!                   ─► chunks (order, size, SHA-256) ─► decode, receipt, fold
//!   DownloadModel   ─► ModelHeader ─► chunks from offset_bytes
//! ```

use std::pin::Pin;

use synod_proto::v1 as pb;
use synod_proto::v1::federation_service_client::FederationServiceClient;
use synod_proto::v1::federation_service_server::FederationService;
use synod_sdk::payload::{crc32, ChecksumKind};
use synod_sdk::tensors::{specs_from_proto, specs_to_proto};
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

use super::chunks::{self, Piece, Pieces};
use super::convert::write_meta;
use super::convert_federation::{domain_spec, federation, federation_state, round, round_state_of};
use super::federation_watch::watch;
use super::leader::wants_linearizable;
use super::request::{
    check_chars, id_for, next_token, page_position, page_size, require, state_filter,
};
use super::{ApiError, Caller, LeaderRouter};
use crate::runtime::federations::{
    finite_metrics, stage_chunks, Decoded, FiniteScan, HeaderCheck, UpdateSubmission,
};
use crate::runtime::{CommandResult, FederationRuntime, Proposer};
use crate::state::federations::secure::SecureStep;
use crate::state::federations::{
    EncryptedShare, FederationRecord, StoredModel, UpdateReceipt, STAGE_CHUNK_BYTES_MAX,
};
use crate::state::{Command, Rejection, State};

/// Largest inline initial model.
const INLINE_MODEL_BYTES_MAX: usize = 1024 * 1024;
/// The limit an update's size is checked against, in messages.
const UPDATE: &str = "the update size";
/// Longest idempotency key, in characters.
const IDEMPOTENCY_KEY_CHARS_MAX: usize = 128;
/// How long a download of the model being committed (the next round's) waits for it.
const NEXT_MODEL_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// A server stream, served here or relayed from the leader.
pub type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// The federation service.
#[derive(Clone)]
pub struct FederationApi {
    proposer: Proposer,
    router: LeaderRouter,
    runtime: FederationRuntime,
}

impl FederationApi {
    /// A service proposing through `proposer`, reading through `router`, aggregating in
    /// `runtime`.
    pub fn new(proposer: Proposer, router: LeaderRouter, runtime: FederationRuntime) -> Self {
        Self {
            proposer,
            router,
            runtime,
        }
    }

    async fn start(
        &self,
        request: pb::StartFederationRequest,
    ) -> Result<pb::StartFederationResponse, ApiError> {
        let key = request.idempotency_key;
        check_chars("idempotency_key", &key, IDEMPOTENCY_KEY_CHARS_MAX)?;
        let inline = request
            .spec
            .as_ref()
            .and_then(|s| s.initial_model.as_ref())
            .map(|m| m.inline_data.clone())
            .unwrap_or_default();
        let spec = domain_spec(request.spec)?;
        let initial_model = match inline.len() {
            0 => None,
            n if n > INLINE_MODEL_BYTES_MAX => {
                return Err(ApiError::invalid(
                    "spec.initial_model.inline_data",
                    format!("{n} bytes, at most {INLINE_MODEL_BYTES_MAX} inline; use UploadModel"),
                ))
            }
            n if n as u64 != spec.model_bytes() => {
                return Err(ApiError::invalid(
                    "spec.initial_model.inline_data",
                    format!("{n} bytes, the tensors hold {}", spec.model_bytes()),
                ))
            }
            _ => Some(StoredModel {
                crc32: crc32(&inline),
                data: inline.into(),
            }),
        };
        let federation_id = id_for("synod.v1.FederationService/StartFederation", &key);
        let command = Command::StartFederation {
            federation_id: federation_id.clone(),
            spec: Box::new(spec.clone()),
            idempotency_key: key.clone(),
            initial_model,
        };
        let result = self.proposer.propose(command).await?;
        let deduplicated = match &result.outcome {
            Ok(_) => false,
            Err(Rejection::FederationExists { .. }) if !key.is_empty() => {
                let same = self.read(&federation_id, |f| f.spec == spec)?;
                if !same {
                    return Err(ApiError::AlreadyExists(format!(
                        "idempotency_key: already used for federation '{federation_id}' with another spec"
                    )));
                }
                true
            }
            Err(rejection) => return Err(rejection.clone().into()),
        };
        self.runtime.wake();
        Ok(pb::StartFederationResponse {
            federation: Some(self.read(&federation_id, |f| federation(f, false))?),
            deduplicated,
            write: Some(write_meta(&result)),
        })
    }

    async fn upload(
        &self,
        mut stream: Streaming<pb::UploadModelRequest>,
    ) -> Result<pb::UploadModelResponse, ApiError> {
        use pb::upload_model_request::Part;
        // Staged chunks must reach the log in order, which only the leader's proposer keeps.
        if let Some(leader) = self.not_leader() {
            return Err(leader);
        }
        let header = match stream.message().await.map_err(chunks::stream_error)? {
            Some(pb::UploadModelRequest {
                part: Some(Part::Header(header)),
            }) => header,
            _ => {
                return Err(ApiError::invalid(
                    "header",
                    "the first message must be the header",
                ))
            }
        };
        require("header.federation_id", &header.federation_id)?;
        if header.round != 0 {
            return Err(ApiError::invalid(
                "header.round",
                "must be 0: the initial model",
            ));
        }
        let id = header.federation_id.clone();
        let tensors = specs_from_proto(&header.tensors, "header.tensors")
            .map_err(|e| ApiError::invalid(e.field, e.problem))?;
        let expected = self.read(&id, |f| {
            (f.spec.tensors == tensors).then(|| f.spec.model_bytes())
        })?;
        let expected = expected.ok_or_else(|| {
            ApiError::invalid(
                "header.tensors",
                "must equal the spec's initial_model.tensors",
            )
        })?;
        let declared = header
            .blob
            .ok_or_else(|| ApiError::invalid("header.blob", "required"))?;
        if declared.size_bytes != expected {
            return Err(ApiError::invalid(
                "header.blob.size_bytes",
                format!(
                    "{} declared, the tensors hold {expected}",
                    declared.size_bytes
                ),
            ));
        }
        let data = chunks::receive::<u8, _>(
            &mut stream,
            &declared,
            expected,
            "the model size",
            ChecksumKind::Crc32,
            |m| match m.part {
                Some(Part::Chunk(chunk)) => Some(chunk),
                _ => None,
            },
        )
        .await?;
        let mut pending = Vec::new();
        for (offset, data) in stage_chunks(data.into(), STAGE_CHUNK_BYTES_MAX) {
            let command = Command::StageModel {
                federation_id: id.clone(),
                round: 0,
                attempt: 0,
                offset,
                data,
            };
            pending.push(self.proposer.enqueue(command).await?);
        }
        let commit = Command::CommitInitialModel {
            federation_id: id.clone(),
            crc32: declared.crc32,
        };
        pending.push(self.proposer.enqueue(commit).await?);
        let mut last = None;
        for result in futures::future::join_all(pending).await {
            let result = result?;
            if let Err(rejection) = &result.outcome {
                return Err(rejection.clone().into());
            }
            last = Some(result);
        }
        let result = last.ok_or_else(|| ApiError::Internal("nothing was committed".into()))?;
        self.wait_applied(&result).await;
        self.runtime.wake();
        Ok(pb::UploadModelResponse {
            federation: Some(self.read(&id, |f| federation(f, false))?),
            write: Some(write_meta(&result)),
        })
    }

    /// Takes a participant's update from `source`.
    pub(super) async fn submit(
        &self,
        metadata: &tonic::metadata::MetadataMap,
        source: &mut impl UpdateSource,
    ) -> Result<pb::SubmitUpdateResponse, ApiError> {
        use pb::submit_update_request::Part;
        if let Some(leader) = self.not_leader() {
            return Err(leader);
        }
        let header = match source.first().await? {
            Some(pb::SubmitUpdateRequest {
                part: Some(Part::Header(header)),
            }) => header,
            _ => {
                return Err(ApiError::invalid(
                    "header",
                    "the first message must be the header",
                ))
            }
        };
        require("header.federation_id", &header.federation_id)?;
        require("header.agent_id", &header.agent_id)?;
        if header.num_examples == 0 {
            return Err(ApiError::invalid("header.num_examples", "must be > 0"));
        }
        let (allowed, _) = self.router.read_local(false, |state| {
            Caller::of(metadata, state)?.may_act_as("header.agent_id", &header.agent_id, state)
        });
        allowed?;
        let specs = specs_from_proto(&header.tensors, "header.tensors")
            .map_err(|e| ApiError::invalid(e.field, e.problem))?;
        let receipt = UpdateReceipt {
            federation_id: header.federation_id.clone(),
            round: header.round,
            attempt: header.attempt,
            agent_id: header.agent_id.clone(),
            num_examples: header.num_examples,
            crc32: 0,
            metrics: finite_metrics(&header.metrics),
            evaluation_metrics: finite_metrics(&header.evaluation_metrics),
        };
        let (live, expected) = match self.runtime.check_header(&receipt, &specs, header.masked)? {
            HeaderCheck::Receive {
                live,
                expected_bytes,
            } => (live, expected_bytes),
            HeaderCheck::Refused(reason) => return Ok(refused(reason, None)),
        };
        let declared = header
            .blob
            .ok_or_else(|| ApiError::invalid("header.blob", "required"))?;
        if declared.size_bytes != expected {
            return Err(ApiError::invalid(
                "header.blob.size_bytes",
                format!(
                    "{} declared, the tensors hold {expected}",
                    declared.size_bytes
                ),
            ));
        }
        let permit = self.runtime.upload_permit(expected).await;
        source.admitted();
        tracing::debug!(agent_id = %header.agent_id, round = header.round, "update upload");
        let (limit, kind) = (expected, ChecksumKind::Crc32);
        let values = match header.masked {
            true => Decoded::Masked(
                chunks::receive_pieces(source, &declared, limit, UPDATE, kind).await?,
            ),
            false => {
                let buffers = self.runtime.update_buffers();
                let mut scan = FiniteScan::default();
                let into = chunks::Destination {
                    buffer: buffers.take(expected as usize / 4),
                    inspect: |start: usize, values: &[f32]| scan.observe(start, values),
                };
                let values =
                    chunks::receive_pieces_into(source, &declared, limit, UPDATE, kind, into)
                        .await?;
                Decoded::Plain(scan.finish(buffers.pooled(values)))
            }
        };
        let submission = UpdateSubmission {
            receipt: UpdateReceipt {
                crc32: declared.crc32,
                ..receipt
            },
            values,
        };
        let answer = self.runtime.accept(live, submission, permit).await?;
        Ok(pb::SubmitUpdateResponse {
            accepted: answer.accepted,
            rejection_reason: answer.reason,
            write: answer.committed.as_ref().map(write_meta),
        })
    }

    fn not_leader(&self) -> Option<ApiError> {
        match self.router.is_leader() {
            true => None,
            false => Some(ApiError::Unavailable {
                message: "updates are taken by the leader, which holds the round's aggregate"
                    .into(),
                leader: self.router.leader(),
            }),
        }
    }

    async fn download(
        &self,
        request: pb::DownloadModelRequest,
    ) -> Result<BoxStream<pb::DownloadModelResponse>, ApiError> {
        use pb::download_model_response::Part;
        let (first, data, offset) = self.prepare_download(request).await?;
        // Chunks are slices of the shared payload: nothing is copied until the encoder's.
        let rest = chunks::download_chunks(data, offset).map(|chunk| pb::DownloadModelResponse {
            part: Some(Part::Chunk(chunk)),
            read: None,
        });
        Ok(Box::pin(tokio_stream::iter(
            std::iter::once(first).chain(rest).map(Ok),
        )))
    }

    /// What a download from this replica sends: the header message, the model's bytes and the
    /// offset its chunks start at. The model a leader is committing is served from its memory
    /// to the round it opened on it. A model not yet committed here is waited for (up to
    /// [`NEXT_MODEL_WAIT`]) until its commit is applied: on the leader only the next round's,
    /// since the leader knows every commit; on another replica any round the federation may
    /// still reach, since that replica may be behind the leader by a commit or more.
    pub(super) async fn prepare_download(
        &self,
        request: pb::DownloadModelRequest,
    ) -> Result<(pb::DownloadModelResponse, bytes::Bytes, usize), ApiError> {
        use pb::download_model_response::Part;
        require("federation_id", &request.federation_id)?;
        let linearizable = wants_linearizable(request.consistency);
        let id = request.federation_id.clone();
        let deadline = tokio::time::Instant::now() + NEXT_MODEL_WAIT;
        let mut applied = self.router.raft().metrics();
        let leader = self.router.is_leader();
        let (round, (crc32, data), tensors, read) = loop {
            let (found, read) = self.router.read_local(linearizable, |state| {
                let f = state.federations.get(&id)?;
                let round = request.round.unwrap_or(f.committed_round);
                let reachable = match leader {
                    true => round == f.committed_round + 1,
                    false => round > f.committed_round && round <= f.spec.rounds,
                };
                let next = reachable && !f.state.is_terminal();
                Some((
                    round,
                    f.models.get(&round).map(|m| (m.crc32, m.data.clone())),
                    f.spec.tensors.clone(),
                    next,
                ))
            });
            let (round, model, tensors, next) = found.ok_or_else(|| no_federation(&id))?;
            // The leader serves a model it is committing to the round it opened on it.
            let model = model.or_else(|| {
                let live = self.runtime.live(&id).filter(|l| l.model_round == round)?;
                Some((live.global_crc32, live.global.bytes().clone()))
            });
            if let Some(model) = model {
                break (round, model, tensors, read);
            }
            let missing = || {
                ApiError::NotFound(format!(
                    "round: federation '{id}' keeps no model of round {round} (only the initial and the latest committed)"
                ))
            };
            // Elsewhere the next model is waited for: it is being committed.
            if !next {
                return Err(missing());
            }
            match tokio::time::timeout_at(deadline, applied.changed()).await {
                Ok(Ok(())) => {}
                _ => return Err(missing()),
            }
        };
        tracing::debug!(federation_id = %id, round, "model download");
        let offset = request.offset_bytes as usize;
        if offset > data.len() {
            return Err(ApiError::invalid(
                "offset_bytes",
                format!("{offset}, the model has {} bytes", data.len()),
            ));
        }
        let header = pb::ModelHeader {
            federation_id: id,
            round,
            tensors: specs_to_proto(&tensors),
            blob: Some(pb::BlobInfo {
                size_bytes: data.len() as u64,
                crc32,
                ..Default::default()
            }),
        };
        let first = pb::DownloadModelResponse {
            part: Some(Part::Header(header)),
            read: Some(read),
        };
        Ok((first, data, offset))
    }

    /// Proposes a secure-aggregation step after checking the caller acts as its agent.
    async fn secure_step<T>(
        &self,
        request: &Request<T>,
        step: SecureStep,
        command: impl FnOnce(SecureStep) -> Command,
    ) -> Result<pb::WriteMeta, ApiError> {
        require("federation_id", &step.federation_id)?;
        require("agent_id", &step.agent_id)?;
        let (allowed, _) = self.router.read_local(false, |state| {
            Caller::of(request.metadata(), state)?.may_act_as("agent_id", &step.agent_id, state)
        });
        allowed?;
        let result = self.proposer.propose(command(step)).await?;
        result
            .outcome
            .as_ref()
            .map_err(|r| ApiError::from(r.clone()))?;
        self.runtime.wake();
        Ok(write_meta(&result))
    }

    /// Reads one federation from this replica's applied state.
    fn read<T>(
        &self,
        federation_id: &str,
        f: impl FnOnce(&FederationRecord) -> T,
    ) -> Result<T, ApiError> {
        let (found, _) = self
            .router
            .read_local(false, |state| state.federations.get(federation_id).map(f));
        found.ok_or_else(|| no_federation(federation_id))
    }

    async fn wait_applied(&self, result: &CommandResult) {
        let wait = self
            .router
            .raft()
            .wait(Some(std::time::Duration::from_secs(10)));
        let _ = wait
            .applied_index_at_least(Some(result.log_index), "federation write applied")
            .await;
    }
}

fn refused(reason: String, write: Option<pb::WriteMeta>) -> pb::SubmitUpdateResponse {
    pb::SubmitUpdateResponse {
        accepted: false,
        rejection_reason: reason,
        write,
    }
}

fn no_federation(federation_id: &str) -> ApiError {
    ApiError::NotFound(format!("federation_id: no federation '{federation_id}'"))
}

/// A page of federations, newest first.
fn list(
    state: &State,
    request: &pb::ListFederationsRequest,
) -> Result<(Vec<pb::Federation>, String), ApiError> {
    let states = state_filter::<pb::FederationState>("states", &request.states)?;
    let limit = page_size(request.page.as_ref())?;
    let before = page_position(request.page.as_ref())?;
    let wanted = |f: &&FederationRecord| {
        before.is_none_or(|before| f.seq < before)
            && (states.is_empty() || states.contains(&(federation_state(f.state) as i32)))
    };
    let mut found: Vec<&FederationRecord> = state.federations.iter().filter(wanted).collect();
    found.sort_unstable_by_key(|f| std::cmp::Reverse(f.seq));
    let more = found.len() > limit;
    found.truncate(limit);
    let token = next_token(more, found.last().map(|f| f.seq));
    Ok((
        found.into_iter().map(|f| federation(f, false)).collect(),
        token,
    ))
}

/// Round `round` (0: the open or latest) of a federation.
fn get_round(state: &State, federation_id: &str, number: u32) -> Result<pb::Round, ApiError> {
    let f = state
        .federations
        .get(federation_id)
        .ok_or_else(|| no_federation(federation_id))?;
    let number = match number {
        0 => f.rounds.keys().next_back().copied().unwrap_or(0),
        n => n,
    };
    f.rounds.get(&number).map(|r| round(f, r)).ok_or_else(|| {
        ApiError::NotFound(format!(
            "round: federation '{federation_id}' has no round {number}"
        ))
    })
}

/// The peer keys and the caller's shares of a round's latest attempt.
fn peer_keys(
    state: &State,
    request: &pb::GetPeerKeysRequest,
) -> Result<pb::GetPeerKeysResponse, ApiError> {
    let f = state
        .federations
        .get(&request.federation_id)
        .ok_or_else(|| no_federation(&request.federation_id))?;
    let open = f.rounds.get(&request.round).ok_or_else(|| {
        ApiError::NotFound(format!(
            "round: federation '{}' has no round {}",
            f.id, request.round
        ))
    })?;
    Ok(pb::GetPeerKeysResponse {
        attempt: open.attempt,
        state: round_state_of(Some(open)) as i32,
        peers: open
            .participants
            .iter()
            .filter(|(_, p)| !p.public_key.is_empty())
            .map(|(id, p)| pb::PeerKey {
                agent_id: id.clone(),
                public_key: p.public_key.clone(),
            })
            .collect(),
        shares: open
            .shares
            .iter()
            .filter(|s| s.to == request.agent_id)
            .map(|s| pb::EncryptedShare {
                from_agent_id: s.from.clone(),
                to_agent_id: s.to.clone(),
                ciphertext: s.ciphertext.clone(),
            })
            .collect(),
        read: None,
    })
}

/// Forwards a unary write reaching a follower to the leader, whole.
macro_rules! forward_write {
    ($self:ident, $request:ident, $method:ident) => {
        if let Some(leader) = $self.router.forward_target(&$request)? {
            return FederationServiceClient::new(leader)
                .$method($self.router.forwarded($request))
                .await;
        }
    };
}

/// Serves a read here at the requested consistency, or forwards it to the leader.
macro_rules! routed_read {
    ($self:ident, $request:ident, $method:ident) => {
        let linearizable = wants_linearizable($request.get_ref().consistency);
        if let Some(leader) = $self.router.route(&$request, linearizable).await? {
            return FederationServiceClient::new(leader)
                .$method($self.router.forwarded($request))
                .await;
        }
    };
}

#[tonic::async_trait]
impl FederationService for FederationApi {
    #[tracing::instrument(skip_all)]
    async fn start_federation(
        &self,
        request: Request<pb::StartFederationRequest>,
    ) -> Result<Response<pb::StartFederationResponse>, Status> {
        forward_write!(self, request, start_federation);
        Ok(Response::new(self.start(request.into_inner()).await?))
    }

    #[tracing::instrument(skip_all)]
    async fn upload_model(
        &self,
        request: Request<Streaming<pb::UploadModelRequest>>,
    ) -> Result<Response<pb::UploadModelResponse>, Status> {
        Ok(Response::new(self.upload(request.into_inner()).await?))
    }

    #[tracing::instrument(skip_all, fields(federation_id = %request.get_ref().federation_id))]
    async fn get_federation(
        &self,
        request: Request<pb::GetFederationRequest>,
    ) -> Result<Response<pb::GetFederationResponse>, Status> {
        require("federation_id", &request.get_ref().federation_id)?;
        routed_read!(self, request, get_federation);
        let body = request.into_inner();
        let (found, read) = self.router.read_local(false, |state| {
            state
                .federations
                .get(&body.federation_id)
                .map(|f| federation(f, body.include_spec))
        });
        Ok(Response::new(pb::GetFederationResponse {
            federation: Some(found.ok_or_else(|| no_federation(&body.federation_id))?),
            read: Some(read),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_federations(
        &self,
        request: Request<pb::ListFederationsRequest>,
    ) -> Result<Response<pb::ListFederationsResponse>, Status> {
        routed_read!(self, request, list_federations);
        let body = request.into_inner();
        let (found, read) = self.router.read_local(false, |state| list(state, &body));
        let (federations, next_page_token) = found?;
        Ok(Response::new(pb::ListFederationsResponse {
            federations,
            next_page_token,
            read: Some(read),
        }))
    }

    #[tracing::instrument(skip_all, fields(federation_id = %request.get_ref().federation_id))]
    async fn get_round(
        &self,
        request: Request<pb::GetRoundRequest>,
    ) -> Result<Response<pb::GetRoundResponse>, Status> {
        require("federation_id", &request.get_ref().federation_id)?;
        routed_read!(self, request, get_round);
        let body = request.into_inner();
        let (found, read) = self.router.read_local(false, |state| {
            get_round(state, &body.federation_id, body.round)
        });
        Ok(Response::new(pb::GetRoundResponse {
            round: Some(found?),
            read: Some(read),
        }))
    }

    type WatchFederationStream = BoxStream<pb::FederationEvent>;

    #[tracing::instrument(skip_all, fields(federation_id = %request.get_ref().federation_id))]
    async fn watch_federation(
        &self,
        request: Request<pb::WatchFederationRequest>,
    ) -> Result<Response<Self::WatchFederationStream>, Status> {
        let body = request.get_ref();
        require("federation_id", &body.federation_id)?;
        if body.from_start && body.after_sequence > 0 {
            let problem = "cannot be combined with from_start";
            return Err(ApiError::invalid("after_sequence", problem).into());
        }
        let linearizable = wants_linearizable(body.consistency);
        if let Some(leader) = self.router.route(&request, linearizable).await? {
            let mut client = FederationServiceClient::new(leader);
            let stream = client
                .watch_federation(self.router.forwarded(request))
                .await?;
            return Ok(Response::new(Box::pin(stream.into_inner())));
        }
        Ok(Response::new(watch(
            self.router.clone(),
            request.into_inner(),
        )?))
    }

    #[tracing::instrument(skip_all, fields(federation_id = %request.get_ref().federation_id))]
    async fn cancel_federation(
        &self,
        request: Request<pb::CancelFederationRequest>,
    ) -> Result<Response<pb::CancelFederationResponse>, Status> {
        require("federation_id", &request.get_ref().federation_id)?;
        forward_write!(self, request, cancel_federation);
        let body = request.into_inner();
        let command = Command::CancelFederation {
            federation_id: body.federation_id.clone(),
            reason: body.reason,
        };
        let result = self
            .proposer
            .propose(command)
            .await
            .map_err(ApiError::from)?;
        if let Err(rejection) = &result.outcome {
            return Err(ApiError::from(rejection.clone()).into());
        }
        let state = self.read(&body.federation_id, |f| federation_state(f.state))?;
        Ok(Response::new(pb::CancelFederationResponse {
            state: state as i32,
            write: Some(write_meta(&result)),
        }))
    }

    type DownloadModelStream = BoxStream<pb::DownloadModelResponse>;

    #[tracing::instrument(skip_all, fields(federation_id = %request.get_ref().federation_id))]
    async fn download_model(
        &self,
        request: Request<pb::DownloadModelRequest>,
    ) -> Result<Response<Self::DownloadModelStream>, Status> {
        let linearizable = wants_linearizable(request.get_ref().consistency);
        if linearizable && request.get_ref().round.is_none() {
            if let Some(leader) = self.router.route(&request, true).await? {
                let mut client =
                    FederationServiceClient::new(leader).max_decoding_message_size(usize::MAX);
                let stream = client
                    .download_model(self.router.forwarded(request))
                    .await?;
                return Ok(Response::new(Box::pin(stream.into_inner())));
            }
        }
        Ok(Response::new(self.download(request.into_inner()).await?))
    }

    #[tracing::instrument(skip_all)]
    async fn submit_update(
        &self,
        request: Request<Streaming<pb::SubmitUpdateRequest>>,
    ) -> Result<Response<pb::SubmitUpdateResponse>, Status> {
        let (metadata, _, stream) = request.into_parts();
        let mut source = DecodedUpdate(stream);
        Ok(Response::new(self.submit(&metadata, &mut source).await?))
    }

    #[tracing::instrument(skip_all, fields(agent_id = %request.get_ref().agent_id))]
    async fn advertise_keys(
        &self,
        request: Request<pb::AdvertiseKeysRequest>,
    ) -> Result<Response<pb::AdvertiseKeysResponse>, Status> {
        forward_write!(self, request, advertise_keys);
        let body = request.get_ref().clone();
        let step = SecureStep {
            federation_id: body.federation_id,
            round: body.round,
            attempt: body.attempt,
            agent_id: body.agent_id,
        };
        let write = self
            .secure_step(&request, step, |step| Command::AdvertiseKey {
                step,
                public_key: body.public_key,
            })
            .await?;
        Ok(Response::new(pb::AdvertiseKeysResponse {
            write: Some(write),
        }))
    }

    #[tracing::instrument(skip_all, fields(agent_id = %request.get_ref().agent_id))]
    async fn get_peer_keys(
        &self,
        request: Request<pb::GetPeerKeysRequest>,
    ) -> Result<Response<pb::GetPeerKeysResponse>, Status> {
        require("federation_id", &request.get_ref().federation_id)?;
        routed_read!(self, request, get_peer_keys);
        let body = request.into_inner();
        let (found, read) = self
            .router
            .read_local(false, |state| peer_keys(state, &body));
        Ok(Response::new(pb::GetPeerKeysResponse {
            read: Some(read),
            ..found?
        }))
    }

    #[tracing::instrument(skip_all, fields(agent_id = %request.get_ref().agent_id))]
    async fn submit_key_shares(
        &self,
        request: Request<pb::SubmitKeySharesRequest>,
    ) -> Result<Response<pb::SubmitKeySharesResponse>, Status> {
        forward_write!(self, request, submit_key_shares);
        let body = request.get_ref().clone();
        let step = SecureStep {
            federation_id: body.federation_id,
            round: body.round,
            attempt: body.attempt,
            agent_id: body.agent_id,
        };
        let shares = body
            .shares
            .into_iter()
            .map(|s| EncryptedShare {
                from: s.from_agent_id,
                to: s.to_agent_id,
                ciphertext: s.ciphertext,
            })
            .collect();
        let write = self
            .secure_step(&request, step, |step| Command::ShareKeys { step, shares })
            .await?;
        Ok(Response::new(pb::SubmitKeySharesResponse {
            write: Some(write),
        }))
    }

    #[tracing::instrument(skip_all, fields(agent_id = %request.get_ref().agent_id))]
    async fn submit_unmask_shares(
        &self,
        request: Request<pb::SubmitUnmaskSharesRequest>,
    ) -> Result<Response<pb::SubmitUnmaskSharesResponse>, Status> {
        forward_write!(self, request, submit_unmask_shares);
        let body = request.get_ref().clone();
        let step = SecureStep {
            federation_id: body.federation_id,
            round: body.round,
            attempt: body.attempt,
            agent_id: body.agent_id,
        };
        let shares = body
            .shares
            .into_iter()
            .map(|s| (s.dropped_agent_id, serde_bytes::ByteBuf::from(s.share)))
            .collect();
        let write = self
            .secure_step(&request, step, |step| Command::RevealShares {
                step,
                shares,
            })
            .await?;
        Ok(Response::new(pb::SubmitUnmaskSharesResponse {
            write: Some(write),
        }))
    }
}

impl From<crate::runtime::federations::UpdateError> for ApiError {
    fn from(error: crate::runtime::federations::UpdateError) -> Self {
        use crate::runtime::federations::UpdateError;
        match error {
            UpdateError::Invalid { field, problem } => ApiError::invalid(field, problem),
            UpdateError::UnknownFederation(id) => no_federation(&id),
            UpdateError::NotCommitted(error) => error.into(),
            UpdateError::NotFolded(reason) => ApiError::Internal(reason),
        }
    }
}

/// A SubmitUpdate request stream, however it is read: its first message whole, then the
/// payload's pieces.
pub(super) trait UpdateSource: Pieces + Send {
    /// The first message; `None` for an empty stream.
    fn first(
        &mut self,
    ) -> impl std::future::Future<Output = Result<Option<pb::SubmitUpdateRequest>, ApiError>> + Send;

    /// The update was given its share of the upload memory: its payload is read next.
    fn admitted(&mut self) {}
}

/// The stream as tonic decodes it.
struct DecodedUpdate(Streaming<pb::SubmitUpdateRequest>);

impl UpdateSource for DecodedUpdate {
    async fn first(&mut self) -> Result<Option<pb::SubmitUpdateRequest>, ApiError> {
        self.0.message().await.map_err(chunks::stream_error)
    }
}

impl Pieces for DecodedUpdate {
    async fn next_piece(&mut self) -> Result<Option<Piece>, ApiError> {
        let chunk_of = |m: pb::SubmitUpdateRequest| match m.part {
            Some(pb::submit_update_request::Part::Chunk(chunk)) => Some(chunk),
            _ => None,
        };
        chunks::MessageChunks::new(&mut self.0, chunk_of)
            .next_piece()
            .await
    }
}

impl<B> UpdateSource for super::update_body::UpdateBody<B>
where
    B: http_body::Body<Data = bytes::Bytes> + Unpin + Send,
    B::Error: std::fmt::Display,
{
    async fn first(&mut self) -> Result<Option<pb::SubmitUpdateRequest>, ApiError> {
        super::update_body::UpdateBody::first(self).await
    }

    fn admitted(&mut self) {
        super::update_body::UpdateBody::admitted(self)
    }
}
