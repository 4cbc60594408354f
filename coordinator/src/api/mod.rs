//! Thin gRPC services: validate input, convert between proto and domain types, propose
//! commands or read the applied state. `status` is the one place errors become gRPC statuses.

mod agents;
mod barrier_waiters;
mod barriers;
mod channels;
mod checkpoints;
mod chunks;
mod cluster;
mod convert;
mod convert_agent;
mod convert_federation;
mod convert_job;
mod convert_job_status;
mod convert_vote;
mod coordination;
mod elections;
mod federation_service;
mod federation_watch;
mod federations;
mod identity;
mod jobs;
mod kv;
mod leader;
mod messages;
mod request;
mod status;
mod update_body;
mod votes;

pub use agents::AgentApi;
pub use barriers::BarrierApi;
pub use channels::ChannelApi;
pub use checkpoints::{info as checkpoint_info, CheckpointApi};
pub use cluster::ClusterApi;
pub use coordination::{CoordinationApi, CoordinationParts};
pub use elections::ElectionApi;
pub use federation_service::FederationService;
pub use federations::FederationApi;
pub use identity::{Caller, AGENT_ID_METADATA, SESSION_TOKEN_METADATA};
pub use jobs::JobApi;
pub use kv::KvApi;
pub use leader::LeaderRouter;
pub use messages::MessageApi;
pub use status::ApiError;
pub use votes::VoteApi;
