//! Where a request is served: on this node, or forwarded to the leader. Also serves reads at
//! the consistency a client asked for.
//!
//! A forwarded request carries `synod-forwarded` metadata; a node receiving one while not the
//! leader answers `UNAVAILABLE` with a leader hint instead of forwarding again, so requests
//! never loop between nodes during an election.

use openraft::error::{CheckIsLeaderError, RaftError};
use openraft::ServerState;
use synod_proto::v1::{Consistency, ReadMeta};
use tonic::transport::Channel;

use super::ApiError;
use crate::raft::{PeerClients, Raft, SharedState};
use crate::state::State;

/// Metadata key marking a request already forwarded once.
const FORWARDED_METADATA: &str = "synod-forwarded";

/// Metadata a forwarded request keeps: its deadline and the caller's agent credentials.
const CARRIED_METADATA: [&str; 3] = [
    "grpc-timeout",
    super::identity::AGENT_ID_METADATA,
    super::identity::SESSION_TOKEN_METADATA,
];

/// Routes requests to the leader and serves local reads.
#[derive(Clone)]
pub struct LeaderRouter {
    raft: Raft,
    node_id: u64,
    state: SharedState,
    peers: PeerClients,
}

impl LeaderRouter {
    /// A router for the node `node_id`.
    pub fn new(raft: Raft, node_id: u64, state: SharedState, peers: PeerClients) -> Self {
        Self {
            raft,
            node_id,
            state,
            peers,
        }
    }

    /// The Raft handle.
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// This node's id.
    pub fn node_id(&self) -> u64 {
        self.node_id
    }

    /// The leader's id and address when one is known.
    pub fn leader(&self) -> Option<(u64, String)> {
        let metrics = self.raft.metrics().borrow().clone();
        let id = metrics.current_leader?;
        let node = metrics.membership_config.membership().get_node(&id)?;
        Some((id, node.addr.clone()))
    }

    /// True when this node currently believes it is the leader.
    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().state == ServerState::Leader
    }

    /// `None` when this node should serve `request` itself (it is the leader); otherwise a
    /// channel to the leader to forward it to. Fails when the request was already forwarded or
    /// no leader is known.
    pub fn forward_target<T>(
        &self,
        request: &tonic::Request<T>,
    ) -> Result<Option<Channel>, ApiError> {
        if self.is_leader() {
            return Ok(None);
        }
        let leader = self.leader();
        let already_forwarded = request.metadata().contains_key(FORWARDED_METADATA);
        match leader {
            Some((id, addr)) if !already_forwarded && id != self.node_id => {
                let channel = self
                    .peers
                    .channel(&addr)
                    .map_err(|e| ApiError::Unavailable {
                        message: format!("leader address {addr}: {e}"),
                        leader: Some((id, addr.clone())),
                    })?;
                Ok(Some(channel))
            }
            leader => Err(ApiError::Unavailable {
                message: "this node is not the leader".into(),
                leader,
            }),
        }
    }

    /// `Some(leader)` when `request` must be forwarded to the leader; otherwise, for a
    /// linearizable read, confirms this node's leadership first.
    pub async fn route<T>(
        &self,
        request: &tonic::Request<T>,
        linearizable: bool,
    ) -> Result<Option<Channel>, ApiError> {
        if !linearizable {
            return Ok(None);
        }
        if let Some(leader) = self.forward_target(request)? {
            return Ok(Some(leader));
        }
        self.ensure_linearizable().await?;
        Ok(None)
    }

    /// Rewraps `request` for forwarding, marking it as forwarded.
    pub fn forwarded<T>(&self, request: tonic::Request<T>) -> tonic::Request<T> {
        let carried: Vec<_> = CARRIED_METADATA
            .iter()
            .filter_map(|key| Some((*key, request.metadata().get(*key)?.clone())))
            .collect();
        let mut forwarded = tonic::Request::new(request.into_inner());
        let metadata = forwarded.metadata_mut();
        if let Ok(value) = self.node_id.to_string().parse() {
            metadata.insert(FORWARDED_METADATA, value);
        }
        for (key, value) in carried {
            metadata.insert(key, value);
        }
        forwarded
    }

    /// Confirms leadership with a quorum and waits until every write committed before now is
    /// applied here, so a following local read is linearizable.
    pub async fn ensure_linearizable(&self) -> Result<(), ApiError> {
        match self.raft.ensure_linearizable().await {
            Ok(_) => Ok(()),
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(to))) => {
                Err(ApiError::Unavailable {
                    message: "leadership changed during a linearizable read".into(),
                    leader: to.leader_id.zip(to.leader_node.map(|n| n.addr)),
                })
            }
            Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(e))) => {
                Err(ApiError::Unavailable {
                    message: format!("leader lost its quorum: {e}"),
                    leader: None,
                })
            }
            Err(RaftError::Fatal(fatal)) => Err(ApiError::Internal(fatal.to_string())),
        }
    }

    /// Reads the applied state with `f`, describing how the read was served.
    pub fn read_local<T>(&self, linearizable: bool, f: impl FnOnce(&State) -> T) -> (T, ReadMeta) {
        let applied = self.state.read().expect("state lock");
        let value = f(&applied.state);
        let meta = ReadMeta {
            applied_index: applied.last_applied.map_or(0, |id| id.index),
            served_by: self.node_id,
            linearizable,
        };
        (value, meta)
    }
}

/// True when `consistency` asks for a linearizable read (the default).
pub fn wants_linearizable(consistency: i32) -> bool {
    consistency != Consistency::Stale as i32
}
