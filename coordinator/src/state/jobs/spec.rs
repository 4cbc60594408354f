//! [`JobSpec`] and [`TaskSpec`]: what a client asks a job to achieve, as plain domain data.
//!
//! The API layer converts `synod.v1.JobSpec` into these types (resolving the proto's "0 means
//! the server default" rules); [`validate`](super::validate) checks them. Pure data: no I/O,
//! clock or randomness.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::scheduler::Constraint;

/// Most tasks a job may hold, subtasks included.
pub const TASKS_MAX: usize = 10_000;
/// Largest task payload or output, in bytes.
pub const PAYLOAD_BYTES_MAX: usize = 1024 * 1024;
/// Longest job name, in characters.
pub const NAME_CHARS_MAX: usize = 256;
/// Longest task id, in characters.
pub const TASK_ID_CHARS_MAX: usize = 128;
/// Most attempts a retry policy may allow.
pub const ATTEMPTS_MAX: u32 = 100;
/// Attempt time limit used when a task sets `timeout_ms = 0`.
pub const DEFAULT_TASK_TIMEOUT_MS: u64 = 10 * 60 * 1000;

/// A job: a goal and the DAG of tasks that achieves it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    /// Human-readable name, not unique.
    pub name: String,
    /// What the job should achieve and when it counts as succeeded.
    pub goal: Goal,
    /// The tasks in submission order; subtasks are appended as they are added.
    pub tasks: Vec<TaskSpec>,
    /// Labels for filtering.
    pub labels: BTreeMap<String, String>,
    /// Ready tasks of higher-priority jobs are placed first.
    pub priority: i32,
    /// Whole-job time limit from submission; 0 means none. Enforced by the runtime.
    pub timeout_ms: u64,
}

/// The goal of a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Goal {
    /// Free text shown to operators and planning agents.
    pub description: String,
    /// When the job succeeds.
    pub criterion: Criterion,
}

/// When a job counts as succeeded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Criterion {
    /// Every task succeeds; any terminal failure fails the job.
    AllTasks,
    /// This task succeeds (its output is the job's); the job fails once it no longer can.
    GoalTask(String),
}

/// One task of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskSpec {
    /// Id unique within the job.
    pub id: String,
    /// Handler the agent dispatches on.
    pub kind: String,
    /// Human-readable description of the work.
    pub description: String,
    /// Input for the handler.
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
    /// Tasks of the same job that must succeed first.
    pub depends_on: Vec<String>,
    /// Conditions on the outputs of some of those dependencies, by dependency id: when one is
    /// false, this task's branch is not taken.
    #[serde(default)]
    pub conditions: BTreeMap<String, OutputCondition>,
    /// Capabilities the agent must all offer.
    pub required_capabilities: BTreeSet<String>,
    /// Soft placement: agents with more matching labels are preferred.
    pub preferred_labels: BTreeMap<String, String>,
    /// Hard conditions on the agent's labels; all must hold.
    #[serde(default)]
    pub constraints: Vec<Constraint>,
    /// Resources the task holds on its agent while assigned, e.g. `{"cpu": 2.0}`.
    #[serde(default)]
    pub resources: BTreeMap<String, f64>,
    /// Tasks of the job sharing a non-empty group never run on one agent at the same time.
    #[serde(default)]
    pub anti_affinity_group: String,
    /// Time limit of each attempt from assignment; 0 means [`DEFAULT_TASK_TIMEOUT_MS`].
    pub timeout_ms: u64,
    /// Retries after failures, timeouts and lost agents.
    pub retry: RetryPolicy,
    /// How an agent is chosen.
    pub strategy: Strategy,
    /// Used when `auction_rounds` auctions got no bid; `None` keeps re-auctioning.
    pub fallback_strategy: Option<Strategy>,
    /// How long an auction collects bids; 0 means the server's default.
    #[serde(default)]
    pub bid_window_ms: u64,
    /// Auctions without a bid before the fallback strategy takes over; 0 means 1.
    #[serde(default)]
    pub auction_rounds: u32,
    /// What to try once the retry policy is exhausted; taken (and cleared) at most once.
    #[serde(default)]
    pub fallback: Option<Fallback>,
}

/// Another way to run a task once its attempts are used up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fallback {
    /// Handler to use instead; empty keeps the kind.
    pub kind: String,
    /// Strategy to use instead; `None` keeps the strategy.
    pub strategy: Option<Strategy>,
    /// Capabilities required instead; empty keeps them.
    pub required_capabilities: BTreeSet<String>,
    /// Attempts the fallback may use; at least 1.
    pub max_attempts: u32,
}

impl TaskSpec {
    /// Switches the task to its fallback, if it has one not yet taken: its kind, strategy,
    /// capabilities and attempt budget. Returns the fallback taken.
    pub fn take_fallback(&mut self) -> Option<Fallback> {
        let fallback = self.fallback.take()?;
        if !fallback.kind.is_empty() {
            self.kind = fallback.kind.clone();
        }
        if let Some(strategy) = fallback.strategy {
            self.strategy = strategy;
        }
        if !fallback.required_capabilities.is_empty() {
            self.required_capabilities = fallback.required_capabilities.clone();
        }
        self.retry.max_attempts = fallback.max_attempts.max(1);
        Some(fallback)
    }
}

impl TaskSpec {
    /// The attempt time limit, with the default applied.
    pub fn effective_timeout_ms(&self) -> u64 {
        match self.timeout_ms {
            0 => DEFAULT_TASK_TIMEOUT_MS,
            timeout_ms => timeout_ms,
        }
    }
}

/// A test on a dependency's output, which must then be JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputCondition {
    /// RFC 6901 JSON Pointer into the output; empty means the whole document.
    pub json_pointer: String,
    /// The JSON value the pointed-to value must equal.
    pub equals_json: String,
}

impl OutputCondition {
    /// Whether `output` holds: it is JSON, the pointer resolves, and the value there equals
    /// `equals_json`. Anything else is false.
    pub fn holds(&self, output: &[u8]) -> bool {
        let Ok(document) = serde_json::from_slice::<serde_json::Value>(output) else {
            return false;
        };
        let Ok(expected) = serde_json::from_str::<serde_json::Value>(&self.equals_json) else {
            return false;
        };
        document.pointer(&self.json_pointer) == Some(&expected)
    }
}

/// Exponential backoff between attempts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Attempts that may fail, counting the first; 1 means no retry.
    pub max_attempts: u32,
    /// Delay before the first retry.
    pub initial_backoff_ms: u64,
    /// Upper bound of the delay.
    pub max_backoff_ms: u64,
    /// Factor applied to the delay after each retry; at least 1.0.
    pub multiplier: f64,
}

impl Default for RetryPolicy {
    /// The server default: 3 attempts, 1 s doubling up to 60 s.
    fn default() -> Self {
        Self {
            max_attempts: 3,
            initial_backoff_ms: 1_000,
            max_backoff_ms: 60_000,
            multiplier: 2.0,
        }
    }
}

impl RetryPolicy {
    /// Delay before the retry that follows failed attempt `attempt` (1-based):
    /// `min(initial × multiplier^(attempt-1), max)`.
    ///
    /// Computed by repeated IEEE multiplication (never `powf`), so every replica gets the same
    /// result.
    pub fn backoff_ms(&self, attempt: u32) -> u64 {
        let max = self.max_backoff_ms as f64;
        let mut delay = self.initial_backoff_ms as f64;
        for _ in 1..attempt {
            if delay >= max {
                break;
            }
            delay *= self.multiplier;
        }
        delay.min(max) as u64
    }
}

/// How the scheduler picks an agent for a ready task.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Strategy {
    /// Cycle through eligible agents in id order.
    RoundRobin,
    /// The eligible agent with the lowest running / max_concurrent.
    LeastLoaded,
    /// Preferred-label matches, then load.
    #[default]
    Capability,
    /// Call for bids and award the best one.
    Auction,
}
