//! Direct and broadcast messages over gRPC: committed into the recipients' inboxes (served by
//! the leader; followers forward the whole request), then delivered on their sessions by the
//! leader's inbox pumps (`runtime::inbox_delivery`).
//!
//! ```text
//!   SendDirect ─► SendDirect command ─► recipient's inbox ─► MessageDelivery on its session
//!   Broadcast  ─► Broadcast command  ─► every live matching agent's inbox (full ones counted)
//! ```

use synod_proto::v1 as pb;

use super::convert::write_meta;
use super::request::require;
use super::ApiError;
use crate::runtime::{AgentRuntime, CommandResult};
use crate::state::{Applied, Command};

/// The direct and broadcast part of `synod.v1.CoordinationService`.
#[derive(Clone)]
pub struct MessageApi {
    runtime: AgentRuntime,
}

impl MessageApi {
    /// A service committing through `runtime` (which wakes the recipients' pumps).
    pub fn new(runtime: AgentRuntime) -> Self {
        Self { runtime }
    }

    /// Queues a message for one agent; `sender` is the authenticated caller.
    pub async fn send_direct(
        &self,
        request: pb::SendDirectRequest,
        sender: String,
    ) -> Result<pb::SendDirectResponse, ApiError> {
        require("to_agent_id", &request.to_agent_id)?;
        let command = Command::SendDirect {
            to_agent_id: request.to_agent_id,
            sender,
            payload: request.payload,
        };
        let (result, queued, _) = self.commit(command).await?;
        Ok(pb::SendDirectResponse {
            offset: queued.first().map_or(0, |q| q.offset),
            write: Some(write_meta(&result)),
        })
    }

    /// Queues a message for every live agent matching the selector.
    pub async fn broadcast(
        &self,
        request: pb::BroadcastRequest,
        sender: String,
    ) -> Result<pb::BroadcastResponse, ApiError> {
        let selector = request.selector.unwrap_or_default();
        let command = Command::Broadcast {
            selector: super::convert_vote::domain_selector(selector),
            sender,
            payload: request.payload,
        };
        let (result, queued, skipped_full) = self.commit(command).await?;
        Ok(pb::BroadcastResponse {
            recipient_count: queued.len() as u32,
            full_inbox_count: skipped_full,
            write: Some(write_meta(&result)),
        })
    }

    async fn commit(
        &self,
        command: Command,
    ) -> Result<(CommandResult, Vec<crate::state::inboxes::Queued>, u32), ApiError> {
        let result = self.runtime.propose(command).await?;
        match result.outcome.clone() {
            Ok(Applied::MessagesQueued {
                queued,
                skipped_full,
            }) => Ok((result, queued, skipped_full)),
            Ok(other) => Err(ApiError::Internal(format!("unexpected outcome {other:?}"))),
            Err(rejection) => Err(rejection.into()),
        }
    }
}
