//! The one place where errors become gRPC statuses.
//!
//! Validation → `INVALID_ARGUMENT` naming the field; unknown id → `NOT_FOUND`; a request no
//! longer valid → `FAILED_PRECONDITION`; no leader reachable → `UNAVAILABLE` with the leader's
//! address and id in metadata (`synod-leader-addr`, `synod-leader-id`) when known.

use synod_proto::{LEADER_ADDR_METADATA, LEADER_ID_METADATA};
use tonic::{Code, Status};

use crate::raft::ProposeError;
use crate::state::Rejection;

/// A request the API could not serve.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A field of the request is invalid.
    #[error("{field}: {problem}")]
    InvalidArgument {
        /// Field path, e.g. `key` or `tasks[2].id`.
        field: String,
        /// What is wrong with it.
        problem: String,
    },
    /// Something named by the request does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The server does not offer this yet.
    #[error("{0}")]
    Unimplemented(String),
    /// The caller may not do this (e.g. a ballot by an agent that is not a voter).
    #[error("{0}")]
    PermissionDenied(String),
    /// The caller's credentials are not valid.
    #[error("{0}")]
    Unauthenticated(String),
    /// Something named by the request already exists.
    #[error("{0}")]
    AlreadyExists(String),
    /// The request is valid but not in the current state.
    #[error("{0}")]
    FailedPrecondition(String),
    /// This node cannot serve the request and no leader could be reached for it.
    #[error("{message}")]
    Unavailable {
        /// What happened.
        message: String,
        /// The leader, when known.
        leader: Option<(u64, String)>,
    },
    /// A size or rate limit was hit, e.g. a watcher too slow to keep up with its stream.
    #[error("{0}")]
    ResourceExhausted(String),
    /// The node is broken or shutting down.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    /// An invalid field.
    pub fn invalid(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Self::InvalidArgument {
            field: field.into(),
            problem: problem.into(),
        }
    }
}

impl From<ProposeError> for ApiError {
    fn from(error: ProposeError) -> Self {
        let message = error.to_string();
        match error {
            ProposeError::NotLeader {
                leader_id: Some(id),
                leader_addr: Some(addr),
            } => Self::Unavailable {
                message,
                leader: Some((id, addr)),
            },
            ProposeError::NotLeader { .. } | ProposeError::LeaderUnreachable { .. } => {
                Self::Unavailable {
                    message,
                    leader: None,
                }
            }
            ProposeError::ShuttingDown => Self::Unavailable {
                message,
                leader: None,
            },
            ProposeError::Fatal(_) => Self::Internal(message),
        }
    }
}

impl From<Rejection> for ApiError {
    fn from(rejection: Rejection) -> Self {
        match rejection {
            Rejection::UnknownJob { job_id } => {
                Self::NotFound(format!("job_id: no job '{job_id}'"))
            }
            Rejection::UnknownTask { job_id, task_id } => {
                Self::NotFound(format!("task_id: no task '{task_id}' in job '{job_id}'"))
            }
            Rejection::InvalidSpec(error) => Self::invalid(error.field, error.problem),
            Rejection::JobExists { .. }
            | Rejection::VoteExists { .. }
            | Rejection::BarrierExists { .. }
            | Rejection::ChannelExists { .. }
            | Rejection::FederationExists { .. } => Self::AlreadyExists(rejection.to_string()),
            Rejection::UnknownVote { .. }
            | Rejection::UnknownBarrier { .. }
            | Rejection::UnknownAgent { .. }
            | Rejection::UnknownElection { .. }
            | Rejection::UnknownChannel { .. }
            | Rejection::UnknownFederation { .. } => Self::NotFound(rejection.to_string()),
            Rejection::InboxFull { .. } => Self::ResourceExhausted(rejection.to_string()),
            Rejection::NotEligible { .. } | Rejection::NotAParty { .. } => {
                Self::PermissionDenied(rejection.to_string())
            }
            rejection => Self::FailedPrecondition(rejection.to_string()),
        }
    }
}

impl ApiError {
    /// The gRPC code of this error.
    pub fn code(&self) -> Code {
        match self {
            ApiError::InvalidArgument { .. } => Code::InvalidArgument,
            ApiError::NotFound(_) => Code::NotFound,
            ApiError::AlreadyExists(_) => Code::AlreadyExists,
            ApiError::PermissionDenied(_) => Code::PermissionDenied,
            ApiError::Unauthenticated(_) => Code::Unauthenticated,
            ApiError::Unimplemented(_) => Code::Unimplemented,
            ApiError::FailedPrecondition(_) => Code::FailedPrecondition,
            ApiError::ResourceExhausted(_) => Code::ResourceExhausted,
            ApiError::Internal(_) => Code::Internal,
            ApiError::Unavailable { .. } => Code::Unavailable,
        }
    }

    fn leader(&self) -> Option<&(u64, String)> {
        match self {
            ApiError::Unavailable { leader, .. } => leader.as_ref(),
            _ => None,
        }
    }
}

impl From<ApiError> for Status {
    fn from(error: ApiError) -> Self {
        let mut status = Status::new(error.code(), error.to_string());
        if let Some((id, addr)) = error.leader() {
            add_leader_hint(&mut status, *id, addr);
        }
        status
    }
}

/// The same error as one answer inside a stream.
impl From<ApiError> for synod_proto::v1::RequestError {
    fn from(error: ApiError) -> Self {
        Self {
            code: error.code() as i32,
            message: error.to_string(),
            leader_addr: error
                .leader()
                .map(|(_, addr)| addr.clone())
                .unwrap_or_default(),
        }
    }
}

fn add_leader_hint(status: &mut Status, id: u64, addr: &str) {
    let metadata = status.metadata_mut();
    if let Ok(value) = addr.parse() {
        metadata.insert(LEADER_ADDR_METADATA, value);
    }
    if let Ok(value) = id.to_string().parse() {
        metadata.insert(LEADER_ID_METADATA, value);
    }
}
