//! Job files: a readable TOML form of a job (`synod job submit FILE`), converted to the API's
//! `JobSpec`. Payloads may be written as a string (sent as UTF-8) or as a TOML table (sent as
//! JSON), so handlers that take JSON read naturally.
//!
//! ```toml
//! name = "research"
//! [goal]
//! description = "Summarize what is known about X"
//! goal_task = "validate"            # omit for "all tasks succeed"
//!
//! [[tasks]]
//! id = "plan"
//! kind = "planner.decompose"
//! payload = { topic = "X" }
//! capabilities = ["planner"]
//! strategy = "capability"           # round_robin | least_loaded | capability | auction
//!                                   # auction: bid_window_ms, auction_fallback, auction_rounds
//! timeout_ms = 30000
//! retry = { max_attempts = 3, initial_backoff_ms = 200 }
//!
//! [[tasks]]
//! id = "validate"
//! kind = "validator.check"
//! depends_on = ["plan"]
//! compensation = "rollback"         # runs if the job fails or is cancelled after this succeeded
//!
//! [[tasks]]
//! id = "analyze"                    # instances analyze[0], analyze[1], ... one per item
//! kind = "analyzer.run"
//! depends_on = ["plan"]
//! fan_out = { from = "plan", pointer = "/items", parallelism = 8 }
//! # or: fan_out = { items = ["a", { n = 2 }], parallelism = 8 }
//!
//! [[tasks]]
//! id = "nested"                     # runs a whole job; its output is the child's
//! [tasks.child_job]
//! name = "child"
//! [[tasks.child_job.tasks]]
//! id = "step"
//! kind = "worker.step"
//! ```

use std::collections::BTreeMap;

use serde::Deserialize;
use synod_proto::v1 as pb;

/// A job file could not be read or converted.
#[derive(Debug, thiserror::Error)]
pub enum JobFileError {
    /// Not valid TOML for a job file (the message names the key, line and column).
    #[error("{0}")]
    Parse(String),
    /// A value is not allowed.
    #[error("{field}: {problem}")]
    Invalid {
        /// Path of the field, e.g. `tasks[2].strategy`.
        field: String,
        /// What is wrong.
        problem: String,
    },
}

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobFile {
    /// Human-readable name.
    #[serde(default)]
    pub name: String,
    /// What the job must achieve.
    #[serde(default)]
    pub goal: GoalSection,
    /// Labels for filtering.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Scheduling priority.
    #[serde(default)]
    pub priority: i32,
    /// Whole-job timeout.
    #[serde(default)]
    pub timeout_ms: u64,
    /// The tasks.
    #[serde(default)]
    pub tasks: Vec<TaskSection>,
}

/// `[goal]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GoalSection {
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// The task whose success is the job's success; absent: every task must succeed.
    pub goal_task: Option<String>,
}

/// One `[[tasks]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSection {
    /// Id unique in the job.
    pub id: String,
    /// Handler kind.
    #[serde(default)]
    pub kind: String,
    /// Description shown to bidders and operators.
    #[serde(default)]
    pub description: String,
    /// Input: a string, or a table sent as JSON.
    pub payload: Option<toml::Value>,
    /// Upstream task ids.
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// Conditions on upstream outputs, by upstream id: this task's branch is taken only when
    /// each holds, e.g. `when = { route = { pointer = "/category", equals = "bug" } }`.
    #[serde(default)]
    pub when: BTreeMap<String, WhenSection>,
    /// Capabilities the agent must all have.
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// Preferred agent labels.
    #[serde(default)]
    pub preferred_labels: BTreeMap<String, String>,
    /// Resources the task occupies.
    #[serde(default)]
    pub resources: BTreeMap<String, f64>,
    /// Hard conditions on agent labels.
    #[serde(default)]
    pub constraints: Vec<ConstraintSection>,
    /// Tasks sharing a group never run on one agent at the same time.
    #[serde(default)]
    pub anti_affinity_group: String,
    /// Per-attempt time limit.
    #[serde(default)]
    pub timeout_ms: u64,
    /// Retry policy.
    pub retry: Option<RetrySection>,
    /// `round_robin`, `least_loaded`, `capability` (default) or `auction`.
    pub strategy: Option<String>,
    /// Auction bid window.
    pub bid_window_ms: Option<u64>,
    /// Strategy once `auction_rounds` auctions got no bid; without one the task is auctioned
    /// until someone bids.
    pub auction_fallback: Option<String>,
    /// Auctions without a bid before `auction_fallback` takes over (default 1).
    pub auction_rounds: Option<u32>,
    /// What to try once the retries are used up.
    pub fallback: Option<FallbackSection>,
    /// Run once per item instead of once.
    pub fan_out: Option<FanOutSection>,
    /// Run this job as a child job instead of sending the task to an agent.
    pub child_job: Option<Box<JobFile>>,
    /// The task that undoes this one if the job fails or is cancelled after it succeeded.
    #[serde(default)]
    pub compensation: String,
}

/// `fan_out = { items = [...], parallelism = 8 }` or
/// `fan_out = { from = "fetch", pointer = "/issues", parallelism = 8 }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FanOutSection {
    /// Literal items: strings are sent as UTF-8, other values as JSON.
    pub items: Option<Vec<toml::Value>>,
    /// Upstream task whose output holds a JSON array of items.
    pub from: Option<String>,
    /// JSON Pointer to the array in that output (default: the whole output).
    #[serde(default)]
    pub pointer: String,
    /// Most instances in progress at once (default unlimited).
    #[serde(default)]
    pub parallelism: u32,
}

/// `fallback = { kind = "llm.small", capabilities = ["cpu"], max_attempts = 2 }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FallbackSection {
    /// Handler to use instead.
    #[serde(default)]
    pub kind: String,
    /// Strategy to use instead.
    pub strategy: Option<String>,
    /// Capabilities required instead.
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// Attempts the fallback may use (default 1).
    #[serde(default)]
    pub max_attempts: u32,
}

/// One entry of `when`: the value at a JSON Pointer of the upstream's output.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WhenSection {
    /// RFC 6901 JSON Pointer, e.g. `/category`; empty (the default) means the whole output.
    #[serde(default)]
    pub pointer: String,
    /// The value it must equal (any TOML value, compared as JSON).
    pub equals: toml::Value,
}

/// `constraints = [{ key = "zone", op = "in", values = ["eu", "us"] }]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConstraintSection {
    /// The label key.
    pub key: String,
    /// `equals`, `in`, `not_in`, `exists` or `not_exists`.
    pub op: String,
    /// Operands: one for `equals`, at least one for `in` and `not_in`, none otherwise.
    #[serde(default)]
    pub values: Vec<String>,
}

/// `retry = { ... }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrySection {
    /// Attempts in total, including the first.
    pub max_attempts: u32,
    /// First backoff.
    #[serde(default)]
    pub initial_backoff_ms: u64,
    /// Longest backoff.
    #[serde(default)]
    pub max_backoff_ms: u64,
    /// Backoff growth per attempt.
    #[serde(default)]
    pub multiplier: f64,
}

/// Parses a job file's text into the API's job spec.
pub fn parse_job_file(text: &str) -> Result<pb::JobSpec, JobFileError> {
    let file: JobFile = toml::from_str(text)
        .map_err(|e| JobFileError::Parse(e.to_string().trim_end().to_owned()))?;
    file.into_spec()
}

impl JobFile {
    /// Converts to the API's job spec.
    pub fn into_spec(self) -> Result<pb::JobSpec, JobFileError> {
        let tasks = self
            .tasks
            .into_iter()
            .enumerate()
            .map(|(i, task)| task.into_spec(i))
            .collect::<Result<_, _>>()?;
        let (criterion, goal_task_id) = match self.goal.goal_task {
            Some(id) => (pb::GoalCriterion::GoalTask, id),
            None => (pb::GoalCriterion::AllTasks, String::new()),
        };
        Ok(pb::JobSpec {
            name: self.name,
            goal: Some(pb::Goal {
                description: self.goal.description,
                criterion: criterion as i32,
                goal_task_id,
            }),
            tasks,
            labels: self.labels.into_iter().collect(),
            priority: self.priority,
            timeout_ms: self.timeout_ms,
        })
    }
}

impl TaskSection {
    fn into_spec(self, index: usize) -> Result<pb::TaskSpec, JobFileError> {
        let field = |name: &str| format!("tasks[{index}].{name}");
        let strategy = parse_strategy(self.strategy.as_deref(), &field("strategy"))?;
        let auction = match (
            self.bid_window_ms,
            self.auction_fallback.as_deref(),
            self.auction_rounds,
        ) {
            (None, None, None) => None,
            (window, fallback, rounds) => Some(pb::AuctionSettings {
                bid_window_ms: window.unwrap_or(0),
                fallback_strategy: parse_strategy(fallback, &field("auction_fallback"))? as i32,
                max_rounds: rounds.unwrap_or(0),
            }),
        };
        Ok(pb::TaskSpec {
            task_id: self.id,
            kind: self.kind,
            description: self.description,
            payload: payload_bytes(self.payload, &field("payload"))?,
            depends_on: dependencies(self.depends_on, self.when, &field("when"))?,
            required_capabilities: self.capabilities,
            preferred_labels: self.preferred_labels.into_iter().collect(),
            resources: self.resources.into_iter().collect(),
            constraints: self
                .constraints
                .into_iter()
                .enumerate()
                .map(|(i, c)| c.into_spec(&field(&format!("constraints[{i}].op"))))
                .collect::<Result<_, _>>()?,
            anti_affinity_group: self.anti_affinity_group,
            timeout_ms: self.timeout_ms,
            retry: self.retry.map(|r| pb::RetryPolicy {
                max_attempts: r.max_attempts,
                initial_backoff_ms: r.initial_backoff_ms,
                max_backoff_ms: r.max_backoff_ms,
                multiplier: r.multiplier,
            }),
            strategy: strategy as i32,
            auction,
            fallback: match self.fallback {
                Some(f) => Some(pb::Fallback {
                    kind: f.kind,
                    strategy: parse_strategy(f.strategy.as_deref(), &field("fallback.strategy"))?
                        as i32,
                    required_capabilities: f.capabilities,
                    max_attempts: f.max_attempts,
                }),
                None => None,
            },
            fan_out: match self.fan_out {
                Some(fan_out) => Some(fan_out.into_spec(&field("fan_out"))?),
                None => None,
            },
            child_job: match self.child_job {
                Some(child) => Some(child.into_spec().map_err(|error| match error {
                    JobFileError::Invalid {
                        field: inner,
                        problem,
                    } => JobFileError::Invalid {
                        field: field(&format!("child_job.{inner}")),
                        problem,
                    },
                    other => other,
                })?),
                None => None,
            },
            compensation_task_id: self.compensation,
        })
    }
}

impl FanOutSection {
    fn into_spec(self, field: &str) -> Result<pb::FanOut, JobFileError> {
        use pb::fan_out::Source;
        let source = match (self.items, self.from) {
            (Some(items), None) => Source::Items(pb::FanOutItems {
                items: items
                    .into_iter()
                    .enumerate()
                    .map(|(i, item)| payload_bytes(Some(item), &format!("{field}.items[{i}]")))
                    .collect::<Result<_, _>>()?,
            }),
            (None, Some(task_id)) => Source::FromDependency(pb::FanOutFromDependency {
                task_id,
                json_pointer: self.pointer,
            }),
            _ => {
                return Err(JobFileError::Invalid {
                    field: field.to_owned(),
                    problem: "set exactly one of items and from".to_owned(),
                })
            }
        };
        Ok(pb::FanOut {
            source: Some(source),
            parallelism: self.parallelism,
        })
    }
}

impl ConstraintSection {
    fn into_spec(self, field: &str) -> Result<pb::PlacementConstraint, JobFileError> {
        let op = match self.op.as_str() {
            "equals" => pb::ConstraintOp::Equals,
            "in" => pb::ConstraintOp::In,
            "not_in" => pb::ConstraintOp::NotIn,
            "exists" => pb::ConstraintOp::Exists,
            "not_exists" => pb::ConstraintOp::NotExists,
            other => {
                return Err(JobFileError::Invalid {
                    field: field.to_owned(),
                    problem: format!(
                        "'{other}' is not one of equals, in, not_in, exists, not_exists"
                    ),
                })
            }
        };
        Ok(pb::PlacementConstraint {
            key: self.key,
            op: op as i32,
            values: self.values,
        })
    }
}

fn parse_strategy(name: Option<&str>, field: &str) -> Result<pb::AssignmentStrategy, JobFileError> {
    match name {
        None => Ok(pb::AssignmentStrategy::Unspecified),
        Some("round_robin") => Ok(pb::AssignmentStrategy::RoundRobin),
        Some("least_loaded") => Ok(pb::AssignmentStrategy::LeastLoaded),
        Some("capability") => Ok(pb::AssignmentStrategy::Capability),
        Some("auction") => Ok(pb::AssignmentStrategy::Auction),
        Some(other) => Err(JobFileError::Invalid {
            field: field.to_owned(),
            problem: format!(
                "'{other}' is not one of round_robin, least_loaded, capability, auction"
            ),
        }),
    }
}

/// The dependency edges, each with its condition from `when` (which may name only listed
/// dependencies).
fn dependencies(
    depends_on: Vec<String>,
    mut when: BTreeMap<String, WhenSection>,
    field: &str,
) -> Result<Vec<pb::Dependency>, JobFileError> {
    let edges = depends_on
        .into_iter()
        .map(|task_id| {
            let condition = match when.remove(&task_id) {
                Some(test) => Some(pb::OutputCondition {
                    json_pointer: test.pointer,
                    equals_json: serde_json::to_string(&test.equals).map_err(|e| {
                        JobFileError::Invalid {
                            field: format!("{field}.{task_id}.equals"),
                            problem: e.to_string(),
                        }
                    })?,
                }),
                None => None,
            };
            Ok(pb::Dependency { task_id, condition })
        })
        .collect::<Result<_, JobFileError>>()?;
    match when.into_keys().next() {
        Some(stray) => Err(JobFileError::Invalid {
            field: format!("{field}.{stray}"),
            problem: format!("'{stray}' is not in depends_on"),
        }),
        None => Ok(edges),
    }
}

fn payload_bytes(payload: Option<toml::Value>, field: &str) -> Result<Vec<u8>, JobFileError> {
    match payload {
        None => Ok(Vec::new()),
        Some(toml::Value::String(text)) => Ok(text.into_bytes()),
        Some(value) => serde_json::to_vec(&value).map_err(|e| JobFileError::Invalid {
            field: field.to_owned(),
            problem: e.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_file_becomes_a_spec() {
        let spec = parse_job_file(
            r#"
            name = "demo"
            [goal]
            description = "d"
            goal_task = "b"
            [[tasks]]
            id = "a"
            kind = "k"
            payload = { topic = "x", n = 2 }
            strategy = "auction"
            bid_window_ms = 50
            auction_fallback = "least_loaded"
            auction_rounds = 2
            retry = { max_attempts = 3, initial_backoff_ms = 100 }
            [[tasks]]
            id = "b"
            kind = "k2"
            payload = "plain"
            depends_on = ["a"]
            capabilities = ["gpu"]
            "#,
        )
        .unwrap();
        let goal = spec.goal.unwrap();
        assert_eq!(
            (goal.criterion, goal.goal_task_id.as_str()),
            (pb::GoalCriterion::GoalTask as i32, "b")
        );
        let a = &spec.tasks[0];
        assert_eq!(a.payload, br#"{"n":2,"topic":"x"}"#);
        assert_eq!(a.strategy, pb::AssignmentStrategy::Auction as i32);
        let auction = a.auction.as_ref().unwrap();
        assert_eq!(
            (
                auction.bid_window_ms,
                auction.fallback_strategy,
                auction.max_rounds
            ),
            (50, pb::AssignmentStrategy::LeastLoaded as i32, 2)
        );
        assert_eq!(a.retry.as_ref().unwrap().max_attempts, 3);
        let b = &spec.tasks[1];
        assert_eq!(b.payload, b"plain");
        assert_eq!(b.depends_on[0].task_id, "a");
        assert_eq!(b.required_capabilities, ["gpu"]);
    }

    #[test]
    fn bad_files_name_the_field() {
        let cases = [
            (
                "[[tasks]]\nid = \"a\"\nstrategy = \"fastest\"\n",
                "tasks[0].strategy: 'fastest' is not one of",
            ),
            (
                "[[tasks]]\nid = \"a\"\ncolour = 1\n",
                "unknown field `colour`",
            ),
            ("[[tasks]]\nkind = \"k\"\n", "missing field `id`"),
        ];
        for (text, expected) in cases {
            let error = parse_job_file(text).unwrap_err().to_string();
            assert!(error.contains(expected), "{error}");
        }
    }

    #[test]
    fn fan_out_child_jobs_and_compensation_convert() {
        let spec = parse_job_file(
            r#"
            [[tasks]]
            id = "fetch"
            kind = "k"
            compensation = "undo"
            [[tasks]]
            id = "map"
            kind = "k"
            depends_on = ["fetch"]
            fan_out = { from = "fetch", pointer = "/issues", parallelism = 3 }
            [[tasks]]
            id = "literal"
            kind = "k"
            fan_out = { items = ["a", { n = 2 }] }
            [[tasks]]
            id = "undo"
            kind = "k"
            [[tasks]]
            id = "nested"
            [tasks.child_job]
            name = "child"
            goal = { goal_task = "c" }
            [[tasks.child_job.tasks]]
            id = "c"
            kind = "k"
            "#,
        )
        .unwrap();
        assert_eq!(spec.tasks[0].compensation_task_id, "undo");
        let map = spec.tasks[1].fan_out.clone().unwrap();
        assert_eq!(map.parallelism, 3);
        assert_eq!(
            map.source,
            Some(pb::fan_out::Source::FromDependency(
                pb::FanOutFromDependency {
                    task_id: "fetch".into(),
                    json_pointer: "/issues".into()
                }
            ))
        );
        let Some(pb::fan_out::Source::Items(items)) = spec.tasks[2].fan_out.clone().unwrap().source
        else {
            panic!("literal items expected")
        };
        assert_eq!(items.items, [b"a".to_vec(), br#"{"n":2}"#.to_vec()]);
        let child = spec.tasks[4].child_job.clone().unwrap();
        assert_eq!((child.name.as_str(), child.tasks.len()), ("child", 1));
        let error = parse_job_file(
            "[[tasks]]\nid = \"n\"\n[tasks.child_job]\n[[tasks.child_job.tasks]]\nid = \"c\"\nstrategy = \"fastest\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.starts_with("tasks[0].child_job.tasks[0].strategy:"),
            "{error}"
        );
        let error = parse_job_file("[[tasks]]\nid = \"m\"\nfan_out = { parallelism = 2 }\n")
            .unwrap_err()
            .to_string();
        assert_eq!(error, "tasks[0].fan_out: set exactly one of items and from");
    }

    #[test]
    fn when_becomes_conditions_on_listed_dependencies_only() {
        let spec = parse_job_file(
            r#"
            [[tasks]]
            id = "route"
            [[tasks]]
            id = "fix"
            depends_on = ["route"]
            when = { route = { pointer = "/category", equals = "bug" } }
            "#,
        )
        .unwrap();
        let condition = spec.tasks[1].depends_on[0].condition.clone().unwrap();
        assert_eq!(condition.json_pointer, "/category");
        assert_eq!(condition.equals_json, "\"bug\"");
        let error = parse_job_file(
            "[[tasks]]\nid = \"a\"\n[[tasks]]\nid = \"b\"\nwhen = { a = { equals = true } }\n",
        )
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "tasks[1].when.a: 'a' is not in depends_on"
        );
    }
}
