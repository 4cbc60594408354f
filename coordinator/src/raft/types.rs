//! The openraft type configuration of Synod.

use std::io::Cursor;

use crate::state::{Outcome, Proposal};

/// Raft node id; operators choose it (`--id`), and it is never 0.
pub type NodeId = u64;

openraft::declare_raft_types!(
    /// Synod's openraft types: entries carry a batch of commands, replies one outcome each.
    pub TypeConfig:
        D = Proposal,
        R = Vec<Outcome>,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        SnapshotData = Cursor<Vec<u8>>,
);

/// The Raft handle of one coordinator node.
pub type Raft = openraft::Raft<TypeConfig>;
