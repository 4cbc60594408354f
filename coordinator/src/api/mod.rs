//! Thin gRPC services: validate input, convert between proto and domain types, propose
//! commands or read the applied state. `status` is the one place errors become gRPC statuses.

mod cluster;
mod convert;
mod kv;
mod leader;
mod status;

pub use cluster::ClusterApi;
pub use kv::KvApi;
pub use leader::LeaderRouter;
pub use status::ApiError;
