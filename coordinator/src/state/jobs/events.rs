//! [`JobEvent`]: one entry of a job's replayable history.
//!
//! Each job numbers its events 1, 2, 3… without gaps, in the order they were committed; no event
//! follows `JobCompleted`. Pure data.

use serde::{Deserialize, Serialize};

use super::JobState;

/// One thing that happened to a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobEvent {
    /// Position in the job's history, from 1.
    pub sequence: u64,
    /// Leader time of the entry that produced the event.
    pub at_ms: u64,
    /// Raft log index of that entry.
    pub log_index: u64,
    /// What happened.
    pub kind: JobEventKind,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobEventKind {
    /// The job was accepted.
    JobSubmitted,
    /// A task's dependencies succeeded.
    TaskReady {
        /// The task.
        task_id: String,
    },
    /// An attempt was assigned.
    TaskAssigned {
        /// The task.
        task_id: String,
        /// The agent.
        agent: String,
        /// The attempt.
        attempt: u32,
    },
    /// The agent started an attempt.
    TaskStarted {
        /// The task.
        task_id: String,
        /// The attempt.
        attempt: u32,
    },
    /// An attempt succeeded; the task is done.
    TaskSucceeded {
        /// The task.
        task_id: String,
        /// The attempt.
        attempt: u32,
    },
    /// An attempt failed or lost its agent.
    TaskFailed {
        /// The task.
        task_id: String,
        /// The attempt.
        attempt: u32,
        /// The agent's error, or "agent '<id>' lost".
        error: String,
        /// True when another attempt will follow.
        will_retry: bool,
        /// When the retry may be assigned.
        retry_at_ms: Option<u64>,
    },
    /// An attempt passed its deadline.
    TaskTimedOut {
        /// The task.
        task_id: String,
        /// The attempt.
        attempt: u32,
        /// True when another attempt will follow; false leaves the task `TimedOut`.
        will_retry: bool,
        /// When the retry may be assigned.
        retry_at_ms: Option<u64>,
    },
    /// After a counted failure, another attempt will be made once the backoff has passed.
    TaskRetryScheduled {
        /// The task.
        task_id: String,
        /// Failed attempts counted so far.
        failed_attempts: u32,
        /// Backoff applied, ms.
        backoff_ms: u64,
        /// When the task may be assigned again.
        retry_at_ms: u64,
    },
    /// Attempts were used up and the task's fallback took over.
    FallbackActivated {
        /// The task.
        task_id: String,
        /// The kind used from now on.
        kind: String,
        /// The strategy used from now on.
        strategy: super::Strategy,
    },
    /// Retries are exhausted; the task is kept for inspection.
    TaskDeadLettered {
        /// The task.
        task_id: String,
    },
    /// No live agent could take the task for longer than the leader waits.
    TaskUnsatisfiable {
        /// The task.
        task_id: String,
        /// The unmet requirement.
        reason: String,
    },
    /// A task's branch was not taken.
    TaskBypassed {
        /// The task.
        task_id: String,
        /// Which condition was false, or that every dependency was bypassed.
        reason: String,
    },
    /// A task will not run because a dependency can no longer succeed.
    TaskSkipped {
        /// The task.
        task_id: String,
        /// The dependency.
        dependency: String,
    },
    /// A report for an attempt that is not current (or not from its agent) was refused.
    StaleResultRejected {
        /// The task.
        task_id: String,
        /// The attempt reported on.
        attempt: u32,
        /// The reporting agent.
        agent: String,
    },
    /// A running task added subtasks.
    SubtasksAdded {
        /// The parent task.
        parent_task_id: String,
        /// The new task ids, in order.
        ids: Vec<String>,
    },
    /// Every subtask a parent waited for is terminal; its timeout runs again.
    SubtasksCompleted {
        /// The parent task.
        parent_task_id: String,
    },
    /// A fan-out task was expanded into its instances.
    FanOutExpanded {
        /// The fan-out task.
        task_id: String,
        /// Instances created.
        instance_count: u32,
    },
    /// A task started its child job.
    ChildJobStarted {
        /// The task.
        task_id: String,
        /// The child job.
        child_job_id: String,
    },
    /// The job began compensating.
    CompensationStarted {
        /// Why the job is failing or was cancelled.
        reason: String,
        /// The compensation tasks that will run, in order.
        task_ids: Vec<String>,
    },
    /// The job was cancelled (followed by `JobCompleted`).
    JobCancelled {
        /// Why.
        reason: String,
    },
    /// The job reached a terminal state; the last event of the job.
    JobCompleted {
        /// The terminal state.
        state: JobState,
    },
}
