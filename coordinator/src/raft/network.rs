//! Outgoing node-to-node traffic: openraft's network factory over tonic, and the shared pool of
//! gRPC channels to peers (also used to forward client requests to the leader).
//!
//! openraft gives every AppendEntries one heartbeat interval before it drops the call and
//! retries the same entries. A large entry (a checkpoint) can take longer than that to ship and
//! persist, so a large append runs in a task of its own: when openraft gives up on
//! it, it keeps going, and openraft's retry of the same entries waits for that transfer instead
//! of starting another one that would be cut short again.
//!
//! ```text
//!   append_entries(entries a..b) ─► small? ─yes─► send inline
//!                                   └no─► in flight for a..b? ─yes─► wait for it (may outlive calls)
//!                                                            └no──► spawn the RPC, wait for it
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::PayloadTooLarge;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use serde::{de::DeserializeOwned, Serialize};
use synod_proto::v1::raft_transport_client::RaftTransportClient;
use synod_proto::v1::RaftPayload;
use tonic::transport::{Channel, Endpoint};

use super::codec::{decode, encode};
use super::types::{NodeId, TypeConfig};

/// Largest message exchanged between nodes (log batches and snapshot chunks stay below it).
pub const PEER_MESSAGE_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Appends of at least this many bytes are sent from a task of their own (see the module doc).
const IN_TASK_BYTES_MIN: usize = 256 * 1024;
/// Bytes a peer is given a millisecond to receive and persist, on top of the RPC's own timeout.
const TRANSFER_BYTES_PER_MS: usize = 16 * 1024;

/// A pool of lazily connected gRPC channels to other nodes, by address.
#[derive(Clone, Default)]
pub struct PeerClients {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
}

impl PeerClients {
    /// A channel to `addr` (host:port), created on first use and shared afterwards.
    pub fn channel(&self, addr: &str) -> Result<Channel, tonic::transport::Error> {
        let mut channels = self.channels.lock().expect("peer channels lock");
        if let Some(channel) = channels.get(addr) {
            return Ok(channel.clone());
        }
        let channel = Endpoint::from_shared(format!("http://{addr}"))?
            .connect_timeout(Duration::from_millis(500))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5))
            .connect_lazy();
        channels.insert(addr.to_owned(), channel.clone());
        Ok(channel)
    }

    /// The internal Raft transport client for `addr`.
    pub fn transport(
        &self,
        addr: &str,
    ) -> Result<RaftTransportClient<Channel>, tonic::transport::Error> {
        Ok(RaftTransportClient::new(self.channel(addr)?)
            .max_decoding_message_size(PEER_MESSAGE_BYTES_MAX)
            .max_encoding_message_size(PEER_MESSAGE_BYTES_MAX))
    }
}

/// Creates openraft connections to peers.
#[derive(Clone, Default)]
pub struct NetworkFactory {
    peers: PeerClients,
}

impl NetworkFactory {
    /// A factory drawing channels from `peers`.
    pub fn new(peers: PeerClients) -> Self {
        Self { peers }
    }
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerConnection;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerConnection {
        PeerConnection {
            target,
            client: self.peers.transport(&node.addr).map_err(|e| e.to_string()),
            in_flight: None,
        }
    }
}

/// openraft's connection to one peer.
pub struct PeerConnection {
    target: NodeId,
    client: Result<RaftTransportClient<Channel>, String>,
    /// The append carrying entries that is being sent, by what it carries.
    in_flight: Option<(AppendKey, tokio::task::JoinHandle<AppendResult>)>,
}

/// What identifies a retry of the same append: the leader's vote and the entries it carries.
type AppendKey = (
    openraft::Vote<NodeId>,
    Option<openraft::LogId<NodeId>>,
    Option<openraft::LogId<NodeId>>,
);
type AppendResult = PeerResult<AppendEntriesResponse<NodeId>, openraft::error::Infallible>;

#[derive(Clone, Copy)]
enum Rpc {
    AppendEntries,
    Vote,
    InstallSnapshot,
}

type PeerResult<T, E> = Result<T, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>;

impl PeerConnection {
    async fn call<Req, Resp, E>(
        &mut self,
        rpc: Rpc,
        request: &Req,
        option: &RPCOption,
    ) -> PeerResult<Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let client = self.client().map_err(RPCError::Unreachable)?;
        send(client, self.target, rpc, request, option.hard_ttl()).await
    }

    fn client(&self) -> Result<RaftTransportClient<Channel>, Unreachable> {
        self.client
            .clone()
            .map_err(|e| Unreachable::new(&std::io::Error::other(e)))
    }

    /// Sends an append carrying entries from a task of its own, or waits for the one already
    /// sending the same entries.
    async fn append_in_task(
        &mut self,
        request: AppendEntriesRequest<TypeConfig>,
        option: &RPCOption,
    ) -> AppendResult {
        let key = (
            request.vote,
            request.prev_log_id,
            request.entries.last().map(|entry| entry.log_id),
        );
        match &self.in_flight {
            Some((pending, _)) if *pending == key => {}
            _ => {
                if let Some((_, stale)) = self.in_flight.take() {
                    stale.abort();
                }
                let client = self.client().map_err(RPCError::Unreachable)?;
                let (target, ttl) = (self.target, option.hard_ttl());
                let task = tokio::spawn(async move {
                    send(client, target, Rpc::AppendEntries, &request, ttl).await
                });
                self.in_flight = Some((key, task));
            }
        }
        let Some((_, task)) = self.in_flight.as_mut() else {
            unreachable!("an append was just put in flight");
        };
        // Dropped by openraft's timeout here, the task goes on and the retry waits for it.
        let result = task.await;
        self.in_flight = None;
        match result {
            Ok(answer) => answer,
            Err(joined) => Err(RPCError::Network(NetworkError::new(
                &std::io::Error::other(joined.to_string()),
            ))),
        }
    }
}

/// One RPC to `target`: the request, its reply or error.
async fn send<Req, Resp, E>(
    mut client: RaftTransportClient<Channel>,
    target: NodeId,
    rpc: Rpc,
    request: &Req,
    ttl: Duration,
) -> PeerResult<Resp, E>
where
    Req: Serialize,
    Resp: DeserializeOwned,
    E: std::error::Error + DeserializeOwned,
{
    let payload =
        encode("raft request", request).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
    // Large entries (checkpoints) take longer than a heartbeat to ship and persist.
    let transfer = Duration::from_millis((payload.len() / TRANSFER_BYTES_PER_MS) as u64);
    let mut grpc_request = tonic::Request::new(RaftPayload {
        ok: payload.into(),
        error: Default::default(),
    });
    grpc_request.set_timeout(ttl + transfer);
    let reply = match rpc {
        Rpc::AppendEntries => client.append_entries(grpc_request).await,
        Rpc::Vote => client.vote(grpc_request).await,
        Rpc::InstallSnapshot => client.install_snapshot(grpc_request).await,
    };
    let reply = reply.map_err(status_to_rpc_error)?.into_inner();
    if !reply.error.is_empty() {
        let error: RaftError<NodeId, E> = decode("raft error", &reply.error)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        return Err(RPCError::RemoteError(RemoteError::new(target, error)));
    }
    decode("raft reply", &reply.ok).map_err(|e| RPCError::Network(NetworkError::new(&e)))
}

/// Approximate bytes of the entries an append carries.
fn entries_bytes(request: &AppendEntriesRequest<TypeConfig>) -> usize {
    request
        .entries
        .iter()
        .map(|entry| match &entry.payload {
            openraft::EntryPayload::Normal(proposal) => proposal
                .commands
                .iter()
                .map(crate::state::Command::size_bytes)
                .sum(),
            _ => 64,
        })
        .sum()
}

fn status_to_rpc_error<E: std::error::Error>(
    status: tonic::Status,
) -> RPCError<NodeId, BasicNode, RaftError<NodeId, E>> {
    let error = std::io::Error::other(format!("{}: {}", status.code(), status.message()));
    match status.code() {
        tonic::Code::Unavailable => RPCError::Unreachable(Unreachable::new(&error)),
        _ => RPCError::Network(NetworkError::new(&error)),
    }
}

impl RaftNetwork<TypeConfig> for PeerConnection {
    async fn append_entries(
        &mut self,
        request: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> PeerResult<AppendEntriesResponse<NodeId>, openraft::error::Infallible> {
        // Too many bytes for one peer message: ask Raft to send fewer entries at a time.
        let (entries, bytes) = (request.entries.len() as u64, entries_bytes(&request));
        if entries > 1 && bytes > PEER_MESSAGE_BYTES_MAX / 2 {
            let hint = (entries / 2).max(1);
            return Err(PayloadTooLarge::new_entries_hint(hint).into());
        }
        // Only a large append risks outliving openraft's timeout; the rest go inline.
        if bytes < IN_TASK_BYTES_MIN {
            return self.call(Rpc::AppendEntries, &request, &option).await;
        }
        self.append_in_task(request, &option).await
    }

    async fn install_snapshot(
        &mut self,
        request: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> PeerResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        self.call(Rpc::InstallSnapshot, &request, &option).await
    }

    async fn vote(
        &mut self,
        request: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> PeerResult<VoteResponse<NodeId>, openraft::error::Infallible> {
        self.call(Rpc::Vote, &request, &option).await
    }
}
