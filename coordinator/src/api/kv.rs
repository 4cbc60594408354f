//! `KvService`: the replicated key-value namespace over gRPC.

use futures::stream::{FuturesUnordered, StreamExt};
use synod_proto::v1 as pb;
use synod_proto::v1::kv_service_client::KvServiceClient;
use synod_proto::v1::kv_service_server::KvService;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::convert::{key_value, page_token, parse_page_token, write_meta};
use super::leader::wants_linearizable;
use super::request::page_size;
use super::{ApiError, LeaderRouter};
use crate::runtime::Proposer;
use crate::state::{Applied, Command, KvCondition, KEY_BYTES_MAX, VALUE_BYTES_MAX};

/// Most unanswered puts on one PutStream.
const STREAM_IN_FLIGHT_MAX: usize = 4096;

/// Serves `synod.v1.KvService`.
pub struct KvApi {
    proposer: Proposer,
    router: LeaderRouter,
}

impl KvApi {
    /// A service proposing through `proposer` and reading through `router`.
    pub fn new(proposer: Proposer, router: LeaderRouter) -> Self {
        Self { proposer, router }
    }
}

/// Validates and commits one put.
async fn put(proposer: &Proposer, request: pb::PutRequest) -> Result<pb::PutResponse, ApiError> {
    let command = put_command(request)?;
    let result = proposer.propose(command).await?;
    match &result.outcome {
        Ok(Applied::Kv(kv)) => Ok(pb::PutResponse {
            write: Some(write_meta(&result)),
            kv: Some(key_value(kv)),
        }),
        Ok(other) => Err(ApiError::Internal(format!("unexpected outcome {other:?}"))),
        Err(rejection) => Err(rejection.clone().into()),
    }
}

/// Serves one PutStream: reads puts, commits up to [`STREAM_IN_FLIGHT_MAX`] of them at once
/// and answers each as it completes. Stops reading while that many are unanswered.
async fn serve_put_stream(
    proposer: Proposer,
    mut inbound: Streaming<pb::PutStreamRequest>,
    answers: mpsc::Sender<Result<pb::PutStreamResponse, Status>>,
) {
    let mut in_flight = FuturesUnordered::new();
    let mut reading = true;
    loop {
        tokio::select! {
            message = inbound.message(), if reading && in_flight.len() < STREAM_IN_FLIGHT_MAX => {
                match message {
                    Ok(Some(request)) => in_flight.push(answer_put(&proposer, request)),
                    Ok(None) | Err(_) => reading = false,
                }
            }
            Some(answer) = in_flight.next() => {
                if answers.send(Ok(answer)).await.is_err() {
                    return;
                }
            }
            else => return,
        }
    }
}

async fn answer_put(proposer: &Proposer, request: pb::PutStreamRequest) -> pb::PutStreamResponse {
    let result = match request.put {
        Some(body) => put(proposer, body).await,
        None => Err(ApiError::invalid("put", "required")),
    };
    pb::PutStreamResponse {
        request_id: request.request_id,
        result: Some(match result {
            Ok(ok) => pb::put_stream_response::Result::Ok(ok),
            Err(error) => pb::put_stream_response::Result::Error(error.into()),
        }),
    }
}

fn validate_key(key: &str) -> Result<(), ApiError> {
    if key.is_empty() {
        return Err(ApiError::invalid("key", "must not be empty"));
    }
    if key.len() > KEY_BYTES_MAX {
        return Err(ApiError::invalid(
            "key",
            format!("{} bytes, the limit is {KEY_BYTES_MAX}", key.len()),
        ));
    }
    Ok(())
}

fn put_command(request: pb::PutRequest) -> Result<Command, ApiError> {
    validate_key(&request.key)?;
    if request.value.len() > VALUE_BYTES_MAX {
        return Err(ApiError::invalid(
            "value",
            format!(
                "{} bytes, the limit is {VALUE_BYTES_MAX}",
                request.value.len()
            ),
        ));
    }
    let condition = match (request.expect_absent, request.expect_mod_index) {
        (true, 0) => KvCondition::Absent,
        (true, _) => {
            return Err(ApiError::invalid(
                "expect_mod_index",
                "cannot be combined with expect_absent",
            ))
        }
        (false, 0) => KvCondition::Always,
        (false, index) => KvCondition::ModIndex(index),
    };
    Ok(Command::KvPut {
        key: request.key,
        value: request.value,
        condition,
    })
}

#[tonic::async_trait]
impl KvService for KvApi {
    #[tracing::instrument(skip_all)]
    async fn put(
        &self,
        request: Request<pb::PutRequest>,
    ) -> Result<Response<pb::PutResponse>, Status> {
        Ok(Response::new(
            put(&self.proposer, request.into_inner()).await?,
        ))
    }

    type PutStreamStream = ReceiverStream<Result<pb::PutStreamResponse, Status>>;

    #[tracing::instrument(skip_all)]
    async fn put_stream(
        &self,
        request: Request<Streaming<pb::PutStreamRequest>>,
    ) -> Result<Response<Self::PutStreamStream>, Status> {
        let (answers, receiver) = mpsc::channel(STREAM_IN_FLIGHT_MAX);
        tokio::spawn(serve_put_stream(
            self.proposer.clone(),
            request.into_inner(),
            answers,
        ));
        Ok(Response::new(ReceiverStream::new(receiver)))
    }

    #[tracing::instrument(skip_all)]
    async fn get(
        &self,
        request: Request<pb::GetRequest>,
    ) -> Result<Response<pb::GetResponse>, Status> {
        validate_key(&request.get_ref().key)?;
        let linearizable = wants_linearizable(request.get_ref().consistency);
        if linearizable {
            if let Some(leader) = self.router.forward_target(&request)? {
                return KvServiceClient::new(leader)
                    .get(self.router.forwarded(request))
                    .await;
            }
            self.router.ensure_linearizable().await?;
        }
        let request = request.into_inner();
        let (kv, read) = self.router.read_local(linearizable, |state| {
            state.kv.get(&request.key).map(key_value)
        });
        Ok(Response::new(pb::GetResponse {
            kv,
            read: Some(read),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list(
        &self,
        request: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        let limit = page_size(request.get_ref().page.as_ref())?;
        let linearizable = wants_linearizable(request.get_ref().consistency);
        if linearizable {
            if let Some(leader) = self.router.forward_target(&request)? {
                return KvServiceClient::new(leader)
                    .list(self.router.forwarded(request))
                    .await;
            }
            self.router.ensure_linearizable().await?;
        }
        let request = request.into_inner();
        let token = request
            .page
            .as_ref()
            .map(|p| p.page_token.as_str())
            .unwrap_or("");
        let after = match token {
            "" => None,
            token => Some(parse_page_token(token).ok_or_else(|| {
                ApiError::invalid("page.page_token", "not a token from a previous page")
            })?),
        };
        let ((kvs, more), read) = self.router.read_local(linearizable, |state| {
            let mut found = state.kv.list(&request.prefix, after.as_deref(), limit + 1);
            let more = found.len() > limit;
            found.truncate(limit);
            (found.into_iter().map(key_value).collect::<Vec<_>>(), more)
        });
        let next_page_token = match (more, kvs.last()) {
            (true, Some(last)) => page_token(&last.key),
            _ => String::new(),
        };
        Ok(Response::new(pb::ListResponse {
            kvs,
            next_page_token,
            read: Some(read),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn delete(
        &self,
        request: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let key = request.into_inner().key;
        validate_key(&key)?;
        let result = self
            .proposer
            .propose(Command::KvDelete { key })
            .await
            .map_err(ApiError::from)?;
        let deleted = matches!(result.outcome, Ok(Applied::Deleted(true)));
        Ok(Response::new(pb::DeleteResponse {
            write: Some(write_meta(&result)),
            deleted,
        }))
    }
}
