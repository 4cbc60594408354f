//! Synod's public gRPC API, package `synod.v1`, generated at build time from `proto/synod/v1`.
//!
//! The `.proto` files are the contract: every other crate and every language binding derives
//! from them. This crate holds no logic of its own.

#![forbid(unsafe_code)]

/// Messages and services of `synod.v1`.
pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("synod.v1");
}

/// The encoded `FileDescriptorSet` of every `synod.v1` file, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("synod_descriptor");

/// gRPC metadata key carrying the current leader's client address on `UNAVAILABLE` replies.
pub const LEADER_ADDR_METADATA: &str = "synod-leader-addr";
/// gRPC metadata key carrying the current leader's node id on `UNAVAILABLE` replies.
pub const LEADER_ID_METADATA: &str = "synod-leader-id";
