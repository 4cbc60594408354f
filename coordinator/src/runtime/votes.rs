//! The leader's part in votes: asking eligible agents for their ballots on their session
//! streams, and failing votes whose deadline passed (`ExpireVote`, decided on the leader's
//! clock; the state machine checks it again).

use synod_proto::v1 as pb;

use super::messages;
use super::{clock, AgentRuntime};
use crate::state::agents::AgentSelector;
use crate::state::Command;

impl AgentRuntime {
    /// Sends a `VoteRequest` for `vote_id` to every eligible agent connected here that has not
    /// voted yet.
    pub fn request_ballots(&self, vote_id: &str) {
        let requests: Vec<(String, pb::CoordinatorMessage)> = self.read(|state| {
            let Some(vote) = state.votes.get(vote_id) else {
                return Vec::new();
            };
            vote.spec
                .voters
                .iter()
                .filter(|voter| vote.ballot_of(voter).is_none())
                .map(|voter| (voter.clone(), messages::vote_request(vote)))
                .collect()
        });
        for (agent_id, request) in requests {
            self.hub().send(&agent_id, request);
        }
    }

    /// The requests for every open vote `agent_id` has yet to answer (sent when its session
    /// opens).
    pub fn pending_ballots(&self, agent_id: &str) -> Vec<pb::CoordinatorMessage> {
        self.read(|state| {
            state
                .votes
                .awaiting(agent_id)
                .map(messages::vote_request)
                .collect()
        })
    }

    /// Agents matching `selector` with a session on this leader, in id order: the voters of a
    /// vote opened with a selector.
    pub fn connected_matching(&self, selector: &AgentSelector) -> Vec<String> {
        self.read(|state| {
            state
                .agents
                .live()
                .filter(|agent| selector.matches(&agent.capabilities, &agent.labels))
                .filter(|agent| self.hub().is_connected(&agent.id))
                .map(|agent| agent.id.clone())
                .collect()
        })
    }

    /// Fails the open votes whose deadline passed.
    pub(super) async fn expire_votes(&self) {
        let now_ms = clock::now_ms();
        let due: Vec<String> =
            self.read(|state| state.votes.expired(now_ms).map(str::to_owned).collect());
        let commands = due
            .into_iter()
            .map(|vote_id| Command::ExpireVote { vote_id });
        self.propose_all(commands).await;
    }
}
