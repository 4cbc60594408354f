//! The replicated state machine: every durable fact of a Synod cluster.
//!
//! It changes only by applying [`Proposal`]s taken from the Raft log, and applying is pure and
//! deterministic: no I/O, no clocks, no randomness. Time reaches it as data (`Meta::now_ms`, the
//! leader's clock when it proposed the batch), so every replica computes the same state.
//!
//! ```text
//!   Raft log entry ──► Proposal { now_ms, commands[..] }
//!                          │ apply_proposal(&mut State, .., index)
//!                          ▼
//!   State ──(one Outcome per command; a rejected command changes nothing)──► Vec<Outcome>
//! ```
//!
//! This module must never reach tokio, the network, the disk or a clock.

mod command;
mod kv;
mod outcome;

pub use command::{Command, KvCondition, Meta, Proposal};
pub use kv::{KeyValue, KvStore, KEY_BYTES_MAX, VALUE_BYTES_MAX};
pub use outcome::{Applied, Outcome, Rejection};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Everything the cluster has committed. Serialized whole into snapshots.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// The replicated key-value namespace.
    pub kv: KvStore,
    /// Number of commands applied (accepted or rejected) since the cluster began.
    pub commands_applied: u64,
    /// Leader timestamp of the last applied proposal, in Unix milliseconds.
    pub last_proposal_ms: u64,
}

impl State {
    /// Applies one committed proposal found at log `index`, returning one outcome per command.
    pub fn apply_proposal(&mut self, proposal: &Proposal, index: u64) -> Vec<Outcome> {
        let meta = Meta {
            index,
            now_ms: proposal.now_ms,
        };
        self.last_proposal_ms = self.last_proposal_ms.max(proposal.now_ms);
        proposal
            .commands
            .iter()
            .map(|command| self.apply(command, meta))
            .collect()
    }

    /// Applies one command. A command that is not valid against the current state is rejected
    /// with a reason and leaves the state untouched.
    pub fn apply(&mut self, command: &Command, meta: Meta) -> Outcome {
        self.commands_applied += 1;
        match command {
            Command::Noop => Ok(Applied::Done),
            Command::KvPut {
                key,
                value,
                condition,
            } => self
                .kv
                .put(key, value, *condition, meta.index)
                .map(Applied::Kv),
            Command::KvDelete { key } => Ok(Applied::Deleted(self.kv.delete(key))),
        }
    }

    /// A digest of the whole state: equal digests at equal applied indexes mean identical
    /// replicas.
    pub fn digest(&self) -> String {
        let bytes = postcard::to_allocvec(self).unwrap_or_default();
        let hash = Sha256::digest(&bytes);
        hash.iter().map(|b| format!("{b:02x}")).collect()
    }
}

#[cfg(test)]
mod tests;
