//! [`JobSpec`] and [`TaskSpec`]: what a client asks a job to achieve, as plain domain data.
//!
//! The API layer converts `synod.v1.JobSpec` into these types (resolving the proto's "0 means
//! the server default" rules); [`validate`](super::validate) checks them. Pure data: no I/O,
//! clock or randomness.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::scheduler::Constraint;

/// Most tasks a job may declare, subtasks included (fan-out instances are counted apart).
pub const TASKS_MAX: usize = 10_000;
/// Most instances one fan-out may expand into.
pub const FAN_OUT_MAX: usize = 10_000;
/// Most task records a job may hold: declared tasks, subtasks and fan-out instances.
pub const TASK_RECORDS_MAX: usize = 100_000;
/// Deepest nesting of child jobs (a child job of a child job ... of a job).
pub const CHILD_JOB_DEPTH_MAX: usize = 4;
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
    /// Runs the task once per item (instances `<id>[<i>]`) instead of once.
    #[serde(default)]
    pub fan_out: Option<FanOut>,
    /// Runs this job as a child job instead of sending the task to an agent.
    #[serde(default)]
    pub child_job: Option<Box<JobSpec>>,
    /// A task of the job that undoes this one if the job fails or is cancelled after this
    /// task succeeded; empty for none.
    #[serde(default)]
    pub compensation_task_id: String,
}

/// A task template mapped over items.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FanOut {
    /// Where the items come from.
    pub source: FanOutSource,
    /// Most instances in progress at once; 0 means unlimited.
    pub parallelism: u32,
}

/// The items of a fan-out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FanOutSource {
    /// A literal list.
    Items(Vec<serde_bytes::ByteBuf>),
    /// The elements of a JSON array in a dependency's output, each as its JSON encoding.
    FromDependency {
        /// The dependency (also in `depends_on`).
        task_id: String,
        /// RFC 6901 JSON Pointer to the array; empty means the whole output.
        json_pointer: String,
    },
}

impl FanOutSource {
    /// The items, given the outputs of the task's dependencies; `Err` says why there are none.
    pub fn items(
        &self,
        output_of: impl Fn(&str) -> Option<Vec<u8>>,
    ) -> Result<Vec<Vec<u8>>, String> {
        let (task_id, json_pointer) = match self {
            FanOutSource::Items(items) => {
                return Ok(items.iter().map(|item| item.to_vec()).collect())
            }
            FanOutSource::FromDependency {
                task_id,
                json_pointer,
            } => (task_id, json_pointer),
        };
        let output = output_of(task_id).unwrap_or_default();
        let document: serde_json::Value = serde_json::from_slice(&output)
            .map_err(|error| format!("the output of '{task_id}' is not JSON: {error}"))?;
        let Some(serde_json::Value::Array(elements)) = document.pointer(json_pointer) else {
            return Err(format!(
                "the output of '{task_id}' has no JSON array at '{json_pointer}'"
            ));
        };
        if elements.len() > FAN_OUT_MAX {
            return Err(format!(
                "the output of '{task_id}' lists {} items, the limit is {FAN_OUT_MAX}",
                elements.len()
            ));
        }
        let items: Vec<Vec<u8>> = elements
            .iter()
            .map(|e| e.to_string().into_bytes())
            .collect();
        match items.iter().position(|item| item.len() > PAYLOAD_BYTES_MAX) {
            Some(i) => Err(format!(
                "item {i} of '{task_id}' is {} bytes, the limit is {PAYLOAD_BYTES_MAX}",
                items[i].len()
            )),
            None => Ok(items),
        }
    }
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
