//! Outcomes: what applying one command produced, or why it was rejected.

use serde::{Deserialize, Serialize};

use super::KeyValue;

/// The result of applying one command.
pub type Outcome = Result<Applied, Rejection>;

/// A command that took effect.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Applied {
    /// The command took effect and has nothing to report.
    Done,
    /// A key as stored after the command.
    Kv(KeyValue),
    /// Whether a delete removed an existing key.
    Deleted(bool),
}

/// A command that was valid when proposed but not when applied. It changed nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Rejection {
    /// A compare-and-set condition did not hold.
    #[error("key '{key}': expected {expected}, found {found}")]
    KvConditionFailed {
        /// The key.
        key: String,
        /// What the command expected.
        expected: String,
        /// What the state held.
        found: String,
    },
}
