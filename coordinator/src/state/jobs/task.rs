//! [`TaskRecord`]: the replicated life of one task — its state, current attempt (the fencing
//! token) and every attempt so far — plus the keys that name tasks and attempts.
//!
//! Plain data with small pure helpers; transitions live in [`lifecycle`](super::lifecycle).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// Names a task across jobs.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TaskKey {
    /// The job.
    pub job_id: String,
    /// The task within the job.
    pub task_id: String,
}

/// Names one attempt of one task: what an agent reports on.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AttemptRef {
    /// The job.
    pub job_id: String,
    /// The task within the job.
    pub task_id: String,
    /// The attempt number (1-based).
    pub attempt: u32,
}

/// Lifecycle of a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskState {
    /// Waiting for dependencies.
    Pending,
    /// Dependencies succeeded; waiting for an agent (or for `not_before_ms`).
    Ready,
    /// Assigned to an agent that has not started it.
    Assigned,
    /// Running on its agent.
    Running,
    /// Terminal: the current attempt succeeded.
    Succeeded,
    /// Terminal: a non-retryable failure.
    Failed,
    /// Terminal: the last allowed attempt timed out.
    TimedOut,
    /// Terminal: cancelled with its job, or because the job's goal was reached.
    Cancelled,
    /// Terminal: not run because a dependency can no longer succeed.
    Skipped,
    /// Terminal: retries exhausted after retryable failures or lost agents; kept for
    /// inspection.
    DeadLettered,
    /// Terminal: its branch was not taken — a condition on a dependency's output was false, or
    /// every dependency was itself bypassed. Neither success nor failure.
    Bypassed,
    /// Terminal: no live agent could ever take it (capabilities, constraints, resources) for
    /// longer than the leader waits; `error` names the unmet requirement.
    Unsatisfiable,
}

impl TaskState {
    /// No further transition is possible.
    pub fn is_terminal(self) -> bool {
        !matches!(
            self,
            TaskState::Pending | TaskState::Ready | TaskState::Assigned | TaskState::Running
        )
    }

    /// An agent holds the current attempt.
    pub fn is_active(self) -> bool {
        matches!(self, TaskState::Assigned | TaskState::Running)
    }

    /// Terminal without success.
    pub fn is_unsuccessful(self) -> bool {
        self.is_terminal() && !matches!(self, TaskState::Succeeded | TaskState::Bypassed)
    }
}

/// How one attempt ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AttemptOutcome {
    /// The agent reported success.
    Succeeded,
    /// The agent reported a failure.
    Failed {
        /// What went wrong.
        error: String,
        /// Whether another attempt may succeed.
        retryable: bool,
    },
    /// The attempt passed its deadline.
    TimedOut,
    /// The agent expired or deregistered while holding the attempt.
    AgentLost,
    /// The job finished or was cancelled while the attempt ran.
    Cancelled,
}

impl AttemptOutcome {
    /// True when the outcome counts against the retry policy.
    pub fn is_counted_failure(&self) -> bool {
        match self {
            AttemptOutcome::Failed { retryable, .. } => *retryable,
            AttemptOutcome::TimedOut | AttemptOutcome::AgentLost => true,
            AttemptOutcome::Succeeded | AttemptOutcome::Cancelled => false,
        }
    }
}

/// What runs a task: an agent, or (for fan-outs and child jobs) the state machine itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskRole {
    /// An agent runs it.
    #[default]
    Agent,
    /// It expands into instances and succeeds when they all have; never sent to an agent.
    FanOut(FanOutProgress),
    /// One instance of a fan-out (its parent): an agent runs the template on `item`.
    Instance {
        /// Position of the item (0-based).
        index: u32,
        /// The item.
        #[serde(with = "serde_bytes")]
        item: Vec<u8>,
    },
    /// It runs a child job and ends as that job ends; never sent to an agent.
    ChildJob {
        /// The child, once started.
        child_job_id: Option<String>,
    },
    /// It undoes `compensates` and runs only while its job compensates.
    Compensation {
        /// The task it undoes.
        compensates: String,
    },
}

/// How far a fan-out has got.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FanOutProgress {
    /// Instances created (0 before expansion).
    pub instances: u32,
    /// Instances made ready so far, in index order.
    pub released: u32,
    /// Instances that succeeded.
    pub succeeded: u32,
    /// Most instances in progress at once; 0 means unlimited.
    pub parallelism: u32,
}

impl FanOutProgress {
    /// The next instance that may be made ready, if the parallelism limit allows one.
    pub fn next_release(&self) -> Option<u32> {
        let in_progress = self.released - self.succeeded;
        let room = self.parallelism == 0 || in_progress < self.parallelism;
        (room && self.released < self.instances).then_some(self.released)
    }
}

/// The id of instance `index` of fan-out task `task_id`.
pub fn instance_id(task_id: &str, index: u32) -> String {
    format!("{task_id}[{index}]")
}

/// One assignment of a task to an agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRecord {
    /// Attempt number (fencing token).
    pub attempt: u32,
    /// Agent it was assigned to.
    pub agent: String,
    /// When it was assigned.
    pub assigned_at_ms: u64,
    /// When the agent reported it started.
    pub started_at_ms: Option<u64>,
    /// When it ended.
    pub ended_at_ms: Option<u64>,
    /// How it ended; `None` while in progress.
    pub outcome: Option<AttemptOutcome>,
}

/// The replicated state of one task. Its spec is `JobRecord::spec.tasks[index]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// Position in the job's spec (submission order).
    pub index: u32,
    /// Current state.
    pub state: TaskState,
    /// Latest attempt number; 0 before the first assignment.
    pub attempt: u32,
    /// Attempts counted against the retry policy so far.
    pub failed_attempts: u32,
    /// Agent holding (or that last held) the latest attempt.
    pub agent: Option<String>,
    /// The task that added this one as a subtask.
    pub parent: Option<String>,
    /// When the task was created.
    pub created_at_ms: u64,
    /// When it last became ready.
    pub ready_at_ms: Option<u64>,
    /// Retry backoff: no assignment before this time.
    pub not_before_ms: u64,
    /// When the current attempt times out (pushed back by time spent waiting for subtasks).
    pub deadline_at_ms: Option<u64>,
    /// When it reached a terminal state.
    pub finished_at_ms: Option<u64>,
    /// Output of the succeeded attempt.
    #[serde(with = "serde_bytes")]
    pub output: Option<Vec<u8>>,
    /// Error of the latest failed attempt, or why the task was skipped or cancelled.
    pub error: Option<String>,
    /// Subtasks the current attempt waits for (empty when not waiting).
    pub waiting_for: BTreeSet<String>,
    /// When the current attempt started waiting for subtasks.
    pub waiting_since_ms: Option<u64>,
    /// Every attempt, oldest first.
    pub attempts: Vec<AttemptRecord>,
    /// What runs it.
    #[serde(default)]
    pub role: TaskRole,
    /// The spec of a fan-out instance once it diverged from its template (its fallback taken).
    #[serde(default)]
    pub own_spec: Option<Box<super::TaskSpec>>,
}

impl TaskRecord {
    /// A new task in state `Pending`.
    pub fn new(index: u32, parent: Option<String>, now_ms: u64) -> Self {
        Self {
            index,
            state: TaskState::Pending,
            attempt: 0,
            failed_attempts: 0,
            agent: None,
            parent,
            created_at_ms: now_ms,
            ready_at_ms: None,
            not_before_ms: 0,
            deadline_at_ms: None,
            finished_at_ms: None,
            output: None,
            error: None,
            waiting_for: BTreeSet::new(),
            waiting_since_ms: None,
            attempts: Vec::new(),
            role: TaskRole::Agent,
            own_spec: None,
        }
    }

    /// True while the current attempt waits for subtasks (its timeout suspended).
    pub fn is_waiting(&self) -> bool {
        self.waiting_since_ms.is_some()
    }

    /// True when `agent` holds `attempt`, the current attempt, and it is still in progress.
    pub fn holds(&self, attempt: u32, agent: &str) -> bool {
        self.state.is_active() && self.attempt == attempt && self.agent.as_deref() == Some(agent)
    }

    /// The in-progress attempt record, if any.
    pub fn current_attempt_mut(&mut self) -> Option<&mut AttemptRecord> {
        let attempt = self.attempt;
        self.attempts
            .iter_mut()
            .rev()
            .find(|record| record.attempt == attempt && record.outcome.is_none())
    }
}
