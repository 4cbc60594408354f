//! Synod's client library.
//!
//! [`Client`] talks to a coordinator cluster through any of its members and follows the
//! leader transparently: a follower's `UNAVAILABLE` reply with a `synod-leader-addr` hint sends
//! the next attempt to the leader, and a member that cannot be reached is skipped for the next.
//! The caller sees one call that succeeds or a final error.

#![forbid(unsafe_code)]

pub mod agent;
mod barriers;
mod channels;
pub mod checkpoints;
pub mod chunk_stream;
mod client;
mod elections;
mod error;
pub mod federation;
pub mod federation_file;
pub mod job_file;
mod jobs;
mod messages;
pub mod payload;
mod put_pipeline;
pub mod raw_call;
mod relay;
mod retry;
pub mod secagg;
pub mod tensors;
mod votes;
pub mod wire;

pub use channels::Subscription;
pub use client::{AgentCredentials, Client, AGENT_ID_METADATA, SESSION_TOKEN_METADATA};
pub use error::ClientError;
pub use jobs::JobWatch;
pub use retry::RetryPolicy;
pub use synod_proto::v1 as proto;
pub use tonic::Code;
