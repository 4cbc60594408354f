//! Tests of the job table: each applies commands through a harness and asserts the exact new
//! state and outcome; invariants (agent slots, indexes, gap-free events) are checked after every
//! command.

mod agent_loss;
mod assignment;
mod branches;
mod child_jobs;
mod compensation;
mod completion;
mod fan_out;
mod fencing;
mod placement;
mod readiness;
mod replicas;
mod retries;
mod subtasks;
mod validation;

use std::collections::{BTreeMap, BTreeSet};

use super::super::testing::*;
use super::*;
use crate::state::{Applied, Command, Effects, Rejection, State};

/// A harness with agents `a1` and `a2` (capability "python", 2 slots each) and job `j`
/// submitted from `tasks`.
fn with_job(job: JobSpec) -> Harness {
    let mut h = Harness::new();
    h.ok(register("a1", &["python"], 2));
    h.ok(register("a2", &["python"], 2));
    h.ok(submit("j", job));
    h
}

/// Assigns and starts attempt `attempt` of `task_id` on `agent_id`.
fn run(h: &mut Harness, task_id: &str, attempt: u32, agent_id: &str) {
    h.ok(assign("j", task_id, attempt, agent_id));
    h.ok(start("j", task_id, attempt, agent_id));
}
