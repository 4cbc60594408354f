//! [`Effects`]: what applying a job or agent command asks the leader's runtime to do next
//! (send `CancelTask`, `SubtasksCompleted`, close job watches), and [`AttemptEnd`], how one
//! attempt ended.
//!
//! Pure data carried in [`Applied`](super::Applied); every replica computes it, only the leader
//! acts on it.

use serde::{Deserialize, Serialize};

use super::jobs::{AttemptRef, JobState, TaskState};

/// Follow-up work for the runtime.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Effects {
    /// In-progress attempts that were cancelled: send each agent `CancelTask`.
    pub cancelled: Vec<CancelAttempt>,
    /// Waiting parents whose subtasks are all terminal: send `SubtasksCompleted`.
    pub subtasks_completed: Vec<HeldAttempt>,
    /// Jobs that reached a terminal state.
    pub jobs_finished: Vec<JobFinished>,
}

impl Effects {
    /// True when the runtime has nothing to do.
    pub fn is_empty(&self) -> bool {
        self.cancelled.is_empty()
            && self.subtasks_completed.is_empty()
            && self.jobs_finished.is_empty()
    }
}

/// An attempt and the agent holding it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldAttempt {
    /// The attempt.
    pub task: AttemptRef,
    /// The agent holding it.
    pub agent_id: String,
}

/// An attempt the runtime must tell its agent to stop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelAttempt {
    /// The attempt and its agent.
    pub held: HeldAttempt,
    /// Why, e.g. "job cancelled", "job succeeded", "job failed".
    pub reason: String,
}

/// A job that reached a terminal state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobFinished {
    /// The job.
    pub job_id: String,
    /// Its terminal state.
    pub state: JobState,
}

/// How one attempt ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptEnd {
    /// The attempt.
    pub task: AttemptRef,
    /// The agent that held it.
    pub agent_id: String,
    /// The task's state afterwards (`Ready` when a retry is scheduled).
    pub state: TaskState,
    /// When the retry may be assigned, if one is scheduled.
    pub retry_at_ms: Option<u64>,
}
