//! Commands that followers forward to the leader: committed by the leader's proposer, then
//! carried out by the leader's agent runtime like its own (a job cancelled through a follower
//! reaches the agents at once, not at their next heartbeat).
//!
//! ```text
//!   follower API ─► Forward RPC ─► ActingForwarder ─► proposer ─► outcomes ─► runtime.act
//! ```

use std::sync::Arc;

use super::AgentRuntime;
use crate::raft::{Committed, ForwardHandler, ProposeError};
use crate::state::Command;

/// A [`ForwardHandler`] that acts on what the forwarded commands produced.
pub struct ActingForwarder {
    commit: Arc<dyn ForwardHandler>,
    runtime: AgentRuntime,
}

impl ActingForwarder {
    /// Commits through `commit` and acts through `runtime`.
    pub fn new(commit: Arc<dyn ForwardHandler>, runtime: AgentRuntime) -> Arc<Self> {
        Arc::new(Self { commit, runtime })
    }
}

#[tonic::async_trait]
impl ForwardHandler for ActingForwarder {
    async fn commit_forwarded(&self, commands: Vec<Command>) -> Result<Committed, ProposeError> {
        let committed = self.commit.commit_forwarded(commands).await?;
        for applied in committed.outcomes.iter().flatten() {
            self.runtime.act(applied);
        }
        Ok(committed)
    }
}
