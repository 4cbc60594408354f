//! Outgoing node-to-node traffic: openraft's network factory over tonic, and the shared pool of
//! gRPC channels to peers (also used to forward client requests to the leader).
//!
//! openraft gives every AppendEntries one heartbeat interval before it drops the call and
//! retries. A large entry (a checkpoint, a round's model) can take longer than that to ship and
//! persist, so a large append runs in a task of its own: when openraft gives up on it, it keeps
//! going, and openraft's retry waits for that transfer instead of starting another one that
//! would be cut short again. The retry often carries more entries than the append in flight
//! (the leader appended some meanwhile): it still waits for the one in flight, which carries a
//! prefix of them, and reports that prefix as matched (`PartialSuccess`); openraft then sends
//! only the rest. Resending a model of several MB to a follower whose disk is slow would only
//! add to its load.
//!
//! ```text
//!   append_entries(prev, a..b) ─► small? ─yes─► send inline
//!                                 └no─► in flight from prev, same vote?
//!                                         ├ for a..b ─────► wait for it (may outlive calls)
//!                                         ├ for a..c, c<b ─► wait for it; success = matched to c
//!                                         └ otherwise ────► abort it, spawn the RPC, wait for it
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
use synod_sdk::{raw_call, wire};
use tonic::metadata::{Ascii, MetadataMap, MetadataValue};
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
            channel: self.peers.channel(&node.addr).map_err(|e| e.to_string()),
            in_flight: None,
        }
    }
}

/// openraft's connection to one peer.
pub struct PeerConnection {
    target: NodeId,
    channel: Result<Channel, String>,
    /// The append carrying entries that is being sent, by what it carries.
    in_flight: Option<(AppendKey, tokio::task::JoinHandle<AppendResult>)>,
}

/// What an append carries: under the leader's vote, the entries after `prev` up to `last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct AppendKey {
    vote: openraft::Vote<NodeId>,
    prev: Option<openraft::LogId<NodeId>>,
    last: Option<openraft::LogId<NodeId>>,
}

/// What the append in flight does for a wanted one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reuse {
    /// It carries the same entries.
    Whole,
    /// It carries the wanted entries up to this one: a leader never rewrites its own log
    /// within its term, so under the same vote and from the same `prev` they are a prefix.
    Prefix(openraft::LogId<NodeId>),
    /// It is of no use.
    Nothing,
}

impl AppendKey {
    fn of(request: &AppendEntriesRequest<TypeConfig>) -> Self {
        Self {
            vote: request.vote,
            prev: request.prev_log_id,
            last: request.entries.last().map(|entry| entry.log_id),
        }
    }

    /// What an append in flight carrying `self` does for one carrying `wanted`.
    fn reuse_for(&self, wanted: &AppendKey) -> Reuse {
        if self.vote != wanted.vote || self.prev != wanted.prev {
            return Reuse::Nothing;
        }
        match (self.last, wanted.last) {
            (last, wanted) if last == wanted => Reuse::Whole,
            (Some(last), Some(wanted)) if last.index < wanted.index => Reuse::Prefix(last),
            _ => Reuse::Nothing,
        }
    }
}

/// The follower's answer to a wanted append, from its reply to the one in flight that served it.
fn answer(reuse: Reuse, reply: AppendEntriesResponse<NodeId>) -> AppendEntriesResponse<NodeId> {
    match (reuse, reply) {
        (Reuse::Prefix(matched), AppendEntriesResponse::Success) => {
            AppendEntriesResponse::PartialSuccess(Some(matched))
        }
        (_, reply) => reply,
    }
}
type AppendResult = PeerResult<AppendEntriesResponse<NodeId>, openraft::error::Infallible>;

#[derive(Clone, Copy)]
enum Rpc {
    AppendEntries,
    Vote,
    InstallSnapshot,
}

impl Rpc {
    fn path(self) -> &'static str {
        match self {
            Rpc::AppendEntries => "/synod.v1.RaftTransport/AppendEntries",
            Rpc::Vote => "/synod.v1.RaftTransport/Vote",
            Rpc::InstallSnapshot => "/synod.v1.RaftTransport/InstallSnapshot",
        }
    }
}

/// `RaftPayload.ok`.
const RAFT_PAYLOAD_OK: u32 = 1;

/// A `grpc-timeout` header value: `after`, in milliseconds (at most the eight digits allowed).
fn grpc_timeout(after: Duration) -> MetadataValue<Ascii> {
    let millis = after.as_millis().min(99_999_999);
    format!("{millis}m")
        .parse()
        .expect("digits and a unit are ASCII")
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
        let channel = self.channel().map_err(RPCError::Unreachable)?;
        send(channel, self.target, rpc, request, option.hard_ttl()).await
    }

    fn channel(&self) -> Result<Channel, Unreachable> {
        self.channel
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
        let key = AppendKey::of(&request);
        let reuse = self
            .in_flight
            .as_ref()
            .map_or(Reuse::Nothing, |(pending, _)| pending.reuse_for(&key));
        if reuse == Reuse::Nothing {
            if let Some((_, stale)) = self.in_flight.take() {
                stale.abort();
            }
            let channel = self.channel().map_err(RPCError::Unreachable)?;
            let (target, ttl) = (self.target, option.hard_ttl());
            let task = tokio::spawn(async move {
                send(channel, target, Rpc::AppendEntries, &request, ttl).await
            });
            self.in_flight = Some((key, task));
        }
        let Some((_, task)) = self.in_flight.as_mut() else {
            unreachable!("an append was just put in flight");
        };
        // Dropped by openraft's timeout here, the task goes on and the retry waits for it.
        let result = task.await;
        self.in_flight = None;
        match result {
            Ok(reply) => reply.map(|reply| answer(reuse, reply)),
            Err(joined) => Err(RPCError::Network(NetworkError::new(
                &std::io::Error::other(joined.to_string()),
            ))),
        }
    }
}

/// One RPC to `target`: the request, its reply or error. The encoded request goes to the
/// connection as it is (see [`wire::bytes_field_frames`]), not copied into tonic's encode buffer
/// once more: for a round's model, that is a copy of several MB per follower.
async fn send<Req, Resp, E>(
    channel: Channel,
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
    let mut metadata = MetadataMap::new();
    metadata.insert("grpc-timeout", grpc_timeout(ttl + transfer));
    let body = wire::bytes_field_frames(RAFT_PAYLOAD_OK, payload.into());
    let reply: RaftPayload =
        raw_call::client_streaming(channel, rpc.path(), metadata, body.into_iter())
            .await
            .map_err(status_to_rpc_error)?;
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

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, LogId, Vote};

    use super::*;

    fn log_id(term: u64, index: u64) -> LogId<NodeId> {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    fn key(term: u64, prev: u64, last: Option<u64>) -> AppendKey {
        AppendKey {
            vote: Vote::new_committed(term, 1),
            prev: Some(log_id(term, prev)),
            last: last.map(|index| log_id(term, index)),
        }
    }

    #[test]
    fn an_append_in_flight_serves_the_same_entries_and_a_longer_run_from_the_same_point() {
        let in_flight = key(1, 10, Some(11));
        assert_eq!(in_flight.reuse_for(&key(1, 10, Some(11))), Reuse::Whole);
        assert_eq!(
            in_flight.reuse_for(&key(1, 10, Some(13))),
            Reuse::Prefix(log_id(1, 11))
        );
        // Fewer entries, another starting point, another vote: sent anew.
        assert_eq!(in_flight.reuse_for(&key(1, 10, Some(10))), Reuse::Nothing);
        assert_eq!(in_flight.reuse_for(&key(1, 10, None)), Reuse::Nothing);
        assert_eq!(in_flight.reuse_for(&key(1, 9, Some(13))), Reuse::Nothing);
        assert_eq!(in_flight.reuse_for(&key(2, 10, Some(13))), Reuse::Nothing);
    }

    #[test]
    fn a_prefix_that_succeeded_is_reported_as_matched_up_to_its_last_entry() {
        let prefix = Reuse::Prefix(log_id(1, 11));
        assert_eq!(
            answer(prefix, AppendEntriesResponse::Success),
            AppendEntriesResponse::PartialSuccess(Some(log_id(1, 11)))
        );
        assert_eq!(
            answer(Reuse::Whole, AppendEntriesResponse::Success),
            AppendEntriesResponse::Success
        );
        // A conflict or a higher vote is the follower's answer to the wanted append too.
        assert_eq!(
            answer(prefix, AppendEntriesResponse::Conflict),
            AppendEntriesResponse::Conflict
        );
        let higher = Vote::new(2, 2);
        assert_eq!(
            answer(prefix, AppendEntriesResponse::HigherVote(higher)),
            AppendEntriesResponse::HigherVote(higher)
        );
    }

    #[test]
    fn the_timeout_travels_in_milliseconds_within_eight_digits() {
        assert_eq!(grpc_timeout(Duration::from_millis(1_500)), "1500m");
        assert_eq!(grpc_timeout(Duration::from_secs(10_000_000)), "99999999m");
    }
}
