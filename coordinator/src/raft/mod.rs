//! openraft adapters: the type configuration, the on-disk log store, the state-machine store,
//! the tonic network between nodes and the internal Raft gRPC service.
//!
//! ```text
//!   propose ─► openraft core ─► LogStore (write-ahead log, group-committed fsync)
//!                   │   ▲
//!        NetworkFactory │ RaftTransportService (tonic, same port as the public API)
//!                   ▼
//!             StateMachineStore ─► state::State (pure apply) + snapshots in redb
//! ```
//!
//! Nothing here decides anything: decisions live in `state`, live behaviour in `runtime`.

mod codec;
mod disk;
mod forward;
mod log_store;
mod network;
mod state_machine;
mod transport_service;
mod types;
mod wal;

pub use codec::{decode, encode, CodecError};
pub use disk::{open_disk, Disk, DiskError};
pub use forward::{Committed, ForwardHandler, ProposeError};
pub use log_store::LogStore;
pub use network::{NetworkFactory, PeerClients, PEER_MESSAGE_BYTES_MAX};
pub use state_machine::{SharedState, StateMachineStore};
pub use transport_service::RaftTransportService;
pub use types::{NodeId, Raft, TypeConfig};

#[cfg(test)]
mod tests;
