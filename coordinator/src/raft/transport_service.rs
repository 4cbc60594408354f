//! Incoming node-to-node traffic: the `RaftTransport` gRPC service. Hands Raft messages to the
//! local openraft instance and forwarded batches to the local proposer.

use std::sync::Arc;

use serde::{de::DeserializeOwned, Serialize};
use synod_proto::v1::raft_transport_server::RaftTransport;
use synod_proto::v1::RaftPayload;
use tonic::{Request, Response, Status};

use super::codec::{decode, encode};
use super::forward::ForwardHandler;
use super::types::Raft;
use crate::state::Command;

/// Serves Raft RPCs and forwarded batches for one node.
pub struct RaftTransportService {
    raft: Raft,
    forward: Arc<dyn ForwardHandler>,
}

impl RaftTransportService {
    /// A service delivering to `raft` and `forward`.
    pub fn new(raft: Raft, forward: Arc<dyn ForwardHandler>) -> Self {
        Self { raft, forward }
    }
}

fn decode_request<T: DeserializeOwned>(request: Request<RaftPayload>) -> Result<T, Status> {
    decode("raft request", &request.into_inner().ok)
        .map_err(|e| Status::invalid_argument(format!("payload: {e}")))
}

fn reply<T: Serialize, E: Serialize>(
    result: Result<T, E>,
) -> Result<Response<RaftPayload>, Status> {
    let payload = match result {
        Ok(value) => RaftPayload {
            ok: encode("raft reply", &value)
                .map_err(|e| Status::internal(e.to_string()))?
                .into(),
            error: Default::default(),
        },
        Err(error) => RaftPayload {
            ok: Default::default(),
            error: encode("raft error", &error)
                .map_err(|e| Status::internal(e.to_string()))?
                .into(),
        },
    };
    Ok(Response::new(payload))
}

#[tonic::async_trait]
impl RaftTransport for RaftTransportService {
    async fn append_entries(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        reply(self.raft.append_entries(decode_request(request)?).await)
    }

    async fn vote(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        reply(self.raft.vote(decode_request(request)?).await)
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        reply(self.raft.install_snapshot(decode_request(request)?).await)
    }

    async fn forward(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let commands: Vec<Command> = decode_request(request)?;
        reply(self.forward.commit_forwarded(commands).await)
    }
}
