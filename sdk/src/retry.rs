//! How long and how often a call is retried while the cluster elects or a member is down.

use std::time::Duration;

use synod_proto::LEADER_ADDR_METADATA;
use tonic::{Code, Status};

/// Retry timing of a [`crate::Client`].
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Give up after this long in total.
    pub deadline: Duration,
    /// Timeout of each attempt.
    pub attempt_timeout: Duration,
    /// First pause between attempts that found no leader.
    pub backoff_initial: Duration,
    /// Longest pause between attempts.
    pub backoff_max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            deadline: Duration::from_secs(15),
            attempt_timeout: Duration::from_secs(5),
            backoff_initial: Duration::from_millis(10),
            backoff_max: Duration::from_millis(200),
        }
    }
}

/// What to do after a failed attempt.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// Retry at once against this address (the leader's).
    Redirect(String),
    /// Retry another member after a pause.
    TryAnother,
    /// Give up: the error is final.
    Fail,
}

/// Classifies a failed attempt.
pub(crate) fn next_step(status: &Status) -> Next {
    if let Some(addr) = status
        .metadata()
        .get(LEADER_ADDR_METADATA)
        .and_then(|v| v.to_str().ok())
    {
        return Next::Redirect(addr.to_owned());
    }
    match status.code() {
        Code::Unavailable | Code::Cancelled | Code::DeadlineExceeded => Next::TryAnother,
        // A connection dropped mid-call (a member killed) surfaces as Unknown or Internal
        // with an h2/transport message.
        Code::Unknown | Code::Internal if is_transport_failure(status.message()) => {
            Next::TryAnother
        }
        _ => Next::Fail,
    }
}

fn is_transport_failure(message: &str) -> bool {
    [
        "transport",
        "h2 protocol",
        "connection",
        "broken pipe",
        "stream closed",
        "error reading",
    ]
    .iter()
    .any(|needle| message.to_ascii_lowercase().contains(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified() {
        let mut hinted = Status::unavailable("not the leader");
        hinted
            .metadata_mut()
            .insert(LEADER_ADDR_METADATA, "127.0.0.1:7102".parse().unwrap());
        let cases = [
            (hinted, Next::Redirect("127.0.0.1:7102".into())),
            (Status::unavailable("tcp connect error"), Next::TryAnother),
            (
                Status::unknown("h2 protocol error: broken pipe"),
                Next::TryAnother,
            ),
            (
                Status::invalid_argument("key: must not be empty"),
                Next::Fail,
            ),
            (
                Status::failed_precondition("key 'a': expected no key"),
                Next::Fail,
            ),
        ];
        for (status, expected) in cases {
            assert_eq!(next_step(&status), expected, "{status:?}");
        }
    }
}
