//! [`TaskIndex`]: derived indexes over every job's tasks, so a scheduling or timeout pass reads
//! only the tasks it acts on instead of scanning every job.
//!
//! - `ready`: tasks in state `Ready`, ordered by job priority (highest first), then job
//!   submission order, then task submission order.
//! - `deadlines`: in-progress attempts that are not waiting for subtasks, by deadline.
//! - `job_deadlines`: unfinished jobs with a timeout, by deadline.
//!
//! Maintained only by [`Transition`](super::lifecycle::Transition) and serialized with the state
//! (it is a pure function of the jobs). Pure data.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::{JobRecord, TaskKey, TaskRecord, TaskState};

/// Scheduling order of a ready task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ReadyKey {
    /// Negated job priority, so higher priorities sort first.
    pub priority_rank: i64,
    /// Job submission order.
    pub job_seq: u64,
    /// Task submission order within the job.
    pub task_index: u32,
    /// Item order among the instances of a fan-out (1-based; 0 for other tasks).
    #[serde(default)]
    pub instance: u32,
}

impl ReadyKey {
    /// The key of a task of `job`.
    pub fn of(job: &JobRecord, task: &TaskRecord) -> Self {
        Self {
            priority_rank: -i64::from(job.spec.priority),
            job_seq: job.seq,
            task_index: task.index,
            instance: match task.role {
                super::TaskRole::Instance { index, .. } => index + 1,
                _ => 0,
            },
        }
    }
}

/// Indexes over all tasks.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskIndex {
    ready: BTreeMap<ReadyKey, TaskKey>,
    deadlines: BTreeSet<(u64, TaskKey)>,
    #[serde(default)]
    job_deadlines: BTreeSet<(u64, String)>,
}

impl TaskIndex {
    /// Removes the entries `task` of `job` currently has.
    pub fn remove(&mut self, job: &JobRecord, task_id: &str) {
        let Some(task) = job.tasks.get(task_id) else {
            return;
        };
        self.ready.remove(&ReadyKey::of(job, task));
        if let Some(deadline) = task.deadline_at_ms {
            self.deadlines.remove(&(deadline, key(job, task_id)));
        }
    }

    /// Adds the entries `task` of `job` should have in its current state.
    pub fn insert(&mut self, job: &JobRecord, task_id: &str) {
        let Some(task) = job.tasks.get(task_id) else {
            return;
        };
        if task.state == TaskState::Ready {
            self.ready
                .insert(ReadyKey::of(job, task), key(job, task_id));
        }
        if let (true, false, Some(deadline)) = (
            task.state.is_active(),
            task.is_waiting(),
            task.deadline_at_ms,
        ) {
            self.deadlines.insert((deadline, key(job, task_id)));
        }
    }

    /// Ready tasks in scheduling order (backoff not considered).
    pub fn ready(&self) -> impl Iterator<Item = &TaskKey> {
        self.ready.values()
    }

    /// In-progress attempts by deadline, earliest first.
    pub fn deadlines(&self) -> impl Iterator<Item = (u64, &TaskKey)> {
        self.deadlines
            .iter()
            .map(|(deadline, key)| (*deadline, key))
    }

    /// Tracks `job`'s own deadline while it is unfinished (no-op without a timeout).
    pub fn insert_job(&mut self, job: &JobRecord) {
        if let Some(deadline) = job.deadline_at_ms() {
            self.job_deadlines.insert((deadline, job.id.clone()));
        }
    }

    /// Stops tracking `job`'s deadline (it finished).
    pub fn remove_job(&mut self, job: &JobRecord) {
        if let Some(deadline) = job.deadline_at_ms() {
            self.job_deadlines.remove(&(deadline, job.id.clone()));
        }
    }

    /// Unfinished jobs with a timeout, by deadline, earliest first.
    pub fn job_deadlines(&self) -> impl Iterator<Item = (u64, &str)> {
        self.job_deadlines
            .iter()
            .map(|(deadline, job_id)| (*deadline, job_id.as_str()))
    }

    /// Number of ready tasks.
    pub fn ready_len(&self) -> usize {
        self.ready.len()
    }
}

fn key(job: &JobRecord, task_id: &str) -> TaskKey {
    TaskKey {
        job_id: job.id.clone(),
        task_id: task_id.to_owned(),
    }
}
