//! The Synod coordinator: a Raft-replicated server that coordinates agents, jobs and federated
//! learning, and the `synod` command line that runs and operates it.
//!
//! Layers, dependencies pointing one way:
//!
//! ```text
//!   cli ─► node ─► api ─► runtime ─► raft ─► state
//! ```
//! - [`state`]: the pure replicated state machine.
//! - [`raft`]: openraft adapters (disk, network, transport service).
//! - [`runtime`]: leader-side live parts (batching proposer, clock).
//! - [`scheduler`]: pure placement strategies (round-robin, least-loaded, capability, auction).
//! - [`aggregation`]: federated aggregation strategies and the privacy accountant (pure maths).
//! - [`api`]: thin gRPC services and the one place errors become statuses.
//! - [`node`]: wiring of one coordinator node; [`config`]: its settings.

#![forbid(unsafe_code)]

pub mod aggregation;
pub mod api;
pub mod cli;
pub mod config;
pub mod local_cluster;
pub mod node;
pub mod raft;
pub mod runtime;
pub mod scheduler;
pub mod shutdown;
pub mod state;
