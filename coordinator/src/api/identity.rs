//! Who is calling, and whether it may act as the agent a request names (DESIGN.md §7).
//!
//! An agent proves its identity on unary calls with its session's credentials in request
//! metadata, [`AGENT_ID_METADATA`] and [`SESSION_TOKEN_METADATA`] (the SDK adds them for
//! clients made from an agent). A request without them comes from a client with no agent
//! identity. Either way a caller may act only as itself: naming another registered agent as
//! voter, candidate or party is `PERMISSION_DENIED`. Credentials travel with forwarded
//! requests and are checked by the node that serves the request.

use tonic::metadata::MetadataMap;

use super::ApiError;
use crate::state::{AgentStatus, State};

/// Metadata naming the calling agent.
pub const AGENT_ID_METADATA: &str = "synod-agent-id";
/// Metadata carrying the calling agent's current session token.
pub const SESSION_TOKEN_METADATA: &str = "synod-session-token";
/// How a caller without an agent identity is named as a message's sender.
pub const CLIENT_SENDER: &str = "client";

/// The authenticated caller of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A registered agent, by id.
    Agent(String),
    /// A client without an agent identity.
    Client,
}

impl Caller {
    /// The caller of a request with `metadata`, checked against the applied `state`.
    pub fn of(metadata: &MetadataMap, state: &State) -> Result<Self, ApiError> {
        let text = |key: &str| metadata.get(key).and_then(|v| v.to_str().ok());
        let Some(agent_id) = text(AGENT_ID_METADATA).filter(|id| !id.is_empty()) else {
            return Ok(Self::Client);
        };
        let token = text(SESSION_TOKEN_METADATA).unwrap_or_default();
        let valid = state.agents.get(agent_id).is_some_and(|agent| {
            agent.status != AgentStatus::Deregistered
                && !agent.session_token.is_empty()
                && agent.session_token == token
        });
        match valid {
            true => Ok(Self::Agent(agent_id.to_owned())),
            false => Err(ApiError::Unauthenticated(format!(
                "{SESSION_TOKEN_METADATA}: not the current session token of agent '{agent_id}'"
            ))),
        }
    }

    /// The sender recorded for a message this caller sends.
    pub fn sender(&self) -> String {
        match self {
            Self::Agent(id) => id.clone(),
            Self::Client => CLIENT_SENDER.to_owned(),
        }
    }

    /// Refuses a request whose `field` names `agent_id` unless the caller is that agent. A
    /// client without an agent identity may name ids that are no registered agent (barrier
    /// parties of its own).
    pub fn may_act_as(&self, field: &str, agent_id: &str, state: &State) -> Result<(), ApiError> {
        match self {
            Self::Agent(me) if me == agent_id => Ok(()),
            Self::Agent(me) => Err(ApiError::PermissionDenied(format!(
                "{field}: the caller is agent '{me}' and may act only as itself, not as '{agent_id}'"
            ))),
            Self::Client if state.agents.get(agent_id).is_none() => Ok(()),
            Self::Client => Err(ApiError::PermissionDenied(format!(
                "{field}: acting as agent '{agent_id}' needs its session credentials \
                 ({AGENT_ID_METADATA} and {SESSION_TOKEN_METADATA} metadata)"
            ))),
        }
    }
}
