//! Direct and broadcast messages from a client: each is committed into the recipients' inboxes
//! before the call returns, then delivered on their sessions in offset order until they
//! acknowledge it (see [`AgentBuilder::message_handler`](crate::agent::AgentBuilder::message_handler)).
//! A client made with [`Client::acting_as`] is named as the sender.

use synod_proto::v1 as pb;

use crate::{Client, ClientError};

impl Client {
    /// Sends `payload` (at most 1 MiB) to agent `to_agent_id`; returns the message's offset in
    /// its inbox. A full inbox is `RESOURCE_EXHAUSTED`, an unknown agent `NOT_FOUND`.
    pub async fn send_direct(&self, to_agent_id: &str, payload: &[u8]) -> Result<u64, ClientError> {
        let request = pb::SendDirectRequest {
            to_agent_id: to_agent_id.to_owned(),
            payload: payload.to_vec(),
        };
        let response = self
            .coordination(request, |mut c, r| async move { c.send_direct(r).await })
            .await?;
        Ok(response.offset)
    }

    /// Sends `payload` to every live agent matching `selector` (every live agent when it is
    /// empty); the answer counts the recipients, and the matching agents whose inbox was full.
    pub async fn broadcast(
        &self,
        selector: pb::AgentSelector,
        payload: &[u8],
    ) -> Result<pb::BroadcastResponse, ClientError> {
        let request = pb::BroadcastRequest {
            selector: Some(selector),
            payload: payload.to_vec(),
        };
        self.coordination(request, |mut c, r| async move { c.broadcast(r).await })
            .await
    }
}
