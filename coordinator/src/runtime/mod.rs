//! Leader-side live parts: everything that needs clocks, sockets or timers. They read the state
//! machine and propose commands; they never change replicated state directly.

pub mod clock;
mod proposer;
pub mod sessions;

pub use proposer::{BatchLimits, CommandResult, Proposer};
