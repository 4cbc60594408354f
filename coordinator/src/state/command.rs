//! Commands: the only way the replicated state changes, and the batch that carries them.

use serde::{Deserialize, Serialize};

/// One Raft entry's worth of commands, stamped with the proposing leader's clock.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Proposal {
    /// Leader wall-clock time when the batch was proposed, in Unix milliseconds.
    pub now_ms: u64,
    /// Commands applied in order.
    pub commands: Vec<Command>,
}

/// Where and when a command is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    /// Raft log index of the entry carrying the command.
    pub index: u64,
    /// Leader timestamp of the entry, in Unix milliseconds.
    pub now_ms: u64,
}

/// A state change proposed through Raft.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// Changes nothing; used to confirm leadership and to measure the log.
    Noop,
    /// Sets a key, optionally only when a condition on its current state holds.
    KvPut {
        /// The key.
        key: String,
        /// The new value.
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
        /// Condition checked at apply time.
        condition: KvCondition,
    },
    /// Deletes a key if present.
    KvDelete {
        /// The key.
        key: String,
    },
}

/// A precondition on a key, checked when the command is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvCondition {
    /// No precondition.
    Always,
    /// The key must not exist.
    Absent,
    /// The key's `mod_index` must equal this value.
    ModIndex(u64),
}

impl Command {
    /// Approximate encoded size, used to cap batch sizes.
    pub fn size_bytes(&self) -> usize {
        match self {
            Command::Noop => 1,
            Command::KvPut { key, value, .. } => 16 + key.len() + value.len(),
            Command::KvDelete { key } => 8 + key.len(),
        }
    }
}
