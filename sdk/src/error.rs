//! Errors returned by the SDK.

/// A call failed for good.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No endpoint was given.
    #[error("no coordinator address given")]
    NoEndpoints,
    /// An address is not a valid endpoint.
    #[error("address '{addr}': {detail}")]
    BadAddress {
        /// The address.
        addr: String,
        /// Why.
        detail: String,
    },
    /// The cluster answered with an error that retrying cannot fix.
    #[error("{}: {}", .0.code(), .0.message())]
    Rejected(tonic::Status),
    /// The cluster's answer was malformed.
    #[error("malformed answer: {0}")]
    Protocol(String),
    /// No member could serve the call before the retry deadline.
    #[error("cluster unavailable after {attempts} attempts: {last}")]
    Unavailable {
        /// Attempts made.
        attempts: u32,
        /// The last error seen.
        last: String,
    },
}

impl ClientError {
    /// The gRPC status code behind the error, when the cluster answered.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            ClientError::Rejected(status) => Some(status.code()),
            ClientError::Unavailable { .. } => Some(tonic::Code::Unavailable),
            _ => None,
        }
    }
}
