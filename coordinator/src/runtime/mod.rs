//! Leader-side live parts: everything that needs clocks, sockets or timers. They read the state
//! machine and propose commands; they never change replicated state directly.

mod agent_runtime;
pub mod auctions;
mod barriers;
pub mod clock;
pub mod federations;
mod forwarded;
pub mod inbox_delivery;
pub mod live_channels;
pub mod messages;
mod proposer;
pub mod sessions;
mod unsatisfiable;
mod votes;

pub use crate::state::agents::AgentSelector;
pub use agent_runtime::{strategy_of, AgentRuntime, AgentSettings};
pub use federations::FederationRuntime;
pub use forwarded::ActingForwarder;
pub use proposer::{BatchLimits, CommandResult, Proposer};
