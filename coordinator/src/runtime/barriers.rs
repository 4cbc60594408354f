//! The leader's part in barriers: breaking generations whose timeout passed (`BreakBarrier`,
//! decided on the leader's clock; the state machine checks it again).

use super::{clock, AgentRuntime};
use crate::state::Command;

impl AgentRuntime {
    /// Breaks the open barrier generations past their deadline.
    pub(super) async fn time_out_barriers(&self) {
        let now_ms = clock::now_ms();
        let due: Vec<(String, u64)> = self.read(|state| {
            state
                .barriers
                .timed_out(now_ms)
                .map(|(name, generation)| (name.to_owned(), generation))
                .collect()
        });
        let commands = due
            .into_iter()
            .map(|(name, generation)| Command::BreakBarrier { name, generation });
        self.propose_all(commands).await;
    }
}
