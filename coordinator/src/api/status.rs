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
        Self::FailedPrecondition(rejection.to_string())
    }
}

impl From<ApiError> for Status {
    fn from(error: ApiError) -> Self {
        let message = error.to_string();
        match error {
            ApiError::InvalidArgument { .. } => Status::invalid_argument(message),
            ApiError::NotFound(_) => Status::not_found(message),
            ApiError::AlreadyExists(_) => Status::already_exists(message),
            ApiError::FailedPrecondition(_) => Status::failed_precondition(message),
            ApiError::Internal(_) => Status::internal(message),
            ApiError::Unavailable { leader, .. } => unavailable(message, leader),
        }
    }
}

fn unavailable(message: String, leader: Option<(u64, String)>) -> Status {
    let mut status = Status::new(Code::Unavailable, message);
    if let Some((id, addr)) = leader {
        let metadata = status.metadata_mut();
        if let Ok(value) = addr.parse() {
            metadata.insert(LEADER_ADDR_METADATA, value);
        }
        if let Ok(value) = id.to_string().parse() {
            metadata.insert(LEADER_ID_METADATA, value);
        }
    }
    status
}
