//! Placement: which connected agent runs a ready task.
//!
//! Every strategy is a plain function from (task needs, candidate agents) to a choice. The
//! leader's runtime builds the [`Candidate`]s from the replicated state, calls these functions,
//! and proposes the resulting assignments as commands; applying them stays the state machine's
//! job.
//!
//! ```text
//!   TaskNeeds ─┐
//!              ├─► eligible? ─► strategy ranking ─► Option<&Candidate>
//!   Candidates ┘   (capabilities, constraints,     round_robin  (cursor, then id)
//!                   slot, resources)               least_loaded (load, running, id)
//!                                                  capability   (affinity, load, id)
//!                                                  auction      (cost, estimate, load, id)
//!   many tasks at once: place_batch ─► BatchPlan { assigned, auctions, unplaced }
//! ```
//!
//! Deterministic: every tie ends in agent id order. This module must stay pure: no tokio, I/O,
//! clock or randomness (the crate's `clippy.toml` bans clock and rng calls).

pub mod auction;
mod batch;
mod candidate;
pub mod capability;
mod eligibility;
pub mod least_loaded;
mod needs;
pub mod round_robin;
mod strategy;
#[cfg(test)]
mod testing;

pub use auction::{award, invitees, Award, Bid};
pub use batch::{place_batch, BatchPlan};
pub use candidate::{Candidate, Load};
pub use eligibility::{eligible, is_eligible, Ineligible};
pub use needs::{Constraint, ConstraintOp, TaskNeeds};
pub use round_robin::RoundRobinCursor;
pub use strategy::{choose, Strategy};
