//! The contract of a command batch forwarded from a follower to the leader: what the leader
//! answers, and the hook through which the transport hands a forwarded batch to the proposer.

use serde::{Deserialize, Serialize};

use crate::state::{Command, Outcome};

/// A batch committed by the leader.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Committed {
    /// One outcome per command, in order.
    pub outcomes: Vec<Outcome>,
    /// Log index of the entry that carried the batch.
    pub log_index: u64,
    /// Term of that entry.
    pub term: u64,
    /// Leader that committed it.
    pub leader_id: u64,
}

/// Why a batch was not committed.
#[derive(Debug, Clone, Serialize, Deserialize, thiserror::Error)]
pub enum ProposeError {
    /// This node is not the leader and could not forward (no leader known, or forwarding is not
    /// allowed for this batch). Carries the leader when known.
    #[error("not the leader{}", leader_hint(.leader_id, .leader_addr))]
    NotLeader {
        /// Leader id when known.
        leader_id: Option<u64>,
        /// Leader address when known.
        leader_addr: Option<String>,
    },
    /// The leader could not be reached while forwarding.
    #[error("leader {leader_addr} unreachable: {detail}")]
    LeaderUnreachable {
        /// Address tried.
        leader_addr: String,
        /// Transport error.
        detail: String,
    },
    /// The node is shutting down.
    #[error("node is shutting down")]
    ShuttingDown,
    /// Raft failed on this node.
    #[error("raft failure: {0}")]
    Fatal(String),
}

fn leader_hint(id: &Option<u64>, addr: &Option<String>) -> String {
    match (id, addr) {
        (Some(id), Some(addr)) => format!("; leader is node {id} at {addr}"),
        _ => "; no leader is known yet".to_owned(),
    }
}

/// Commits a batch that a follower forwarded to this node.
#[tonic::async_trait]
pub trait ForwardHandler: Send + Sync + 'static {
    /// Commits `commands` as one entry if this node is the leader; never forwards again.
    async fn commit_forwarded(&self, commands: Vec<Command>) -> Result<Committed, ProposeError>;
}
