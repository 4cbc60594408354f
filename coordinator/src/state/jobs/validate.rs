//! [`validate`]: the rules a [`JobSpec`] (or a batch of subtasks) must satisfy, and
//! [`SpecError`], the first broken rule, naming the field.
//!
//! The API layer calls these before proposing; apply calls them again, since the state is the
//! authority. Pure: no I/O, clock or randomness.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::dag::find_cycle;
use super::spec::{
    ATTEMPTS_MAX, CHILD_JOB_DEPTH_MAX, FAN_OUT_MAX, NAME_CHARS_MAX, PAYLOAD_BYTES_MAX, TASKS_MAX,
    TASK_ID_CHARS_MAX, TASK_RECORDS_MAX,
};
use super::JobTable;
use super::{Criterion, FanOutSource, JobSpec, RetryPolicy, Strategy, TaskSpec};
use crate::scheduler::{self, Candidate, Ineligible, TaskNeeds};
use crate::state::{placement, AgentRegistry};

/// A broken spec rule: `field` is a path such as `tasks[2].depends_on[0]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct SpecError {
    /// Path of the offending field.
    pub field: String,
    /// What is wrong with it.
    pub problem: String,
}

impl SpecError {
    /// A new error on `field`.
    pub fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            problem: problem.into(),
        }
    }
}

/// Checks a whole job spec (child jobs included); the first broken rule is returned.
pub fn validate(spec: &JobSpec) -> Result<(), SpecError> {
    validate_nested(spec, 0)
}

/// Checks a job spec that is `depth` child jobs deep.
fn validate_nested(spec: &JobSpec, depth: usize) -> Result<(), SpecError> {
    let chars = spec.name.chars().count();
    if chars > NAME_CHARS_MAX {
        let problem = format!("{chars} chars, the limit is {NAME_CHARS_MAX}");
        return Err(SpecError::new("name", problem));
    }
    if spec.tasks.is_empty() {
        return Err(SpecError::new("tasks", "a job needs at least one task"));
    }
    check_batch("tasks", &spec.tasks, &Existing::none())?;
    check_goal(spec)?;
    check_compensation(spec)?;
    for (i, task) in spec.tasks.iter().enumerate() {
        let Some(child) = &task.child_job else {
            continue;
        };
        let field = format!("tasks[{i}].child_job");
        if depth + 1 > CHILD_JOB_DEPTH_MAX {
            let problem = format!("child jobs nest at most {CHILD_JOB_DEPTH_MAX} deep");
            return Err(SpecError::new(field, problem));
        }
        validate_nested(child, depth + 1)
            .map_err(|error| SpecError::new(format!("{field}.{}", error.field), error.problem))?;
    }
    Ok(())
}

/// Compensation tasks: each named once, by another task; they depend on nothing, nothing
/// depends on them, they undo nothing themselves and are not the goal.
fn check_compensation(spec: &JobSpec) -> Result<(), SpecError> {
    let position = |id: &str| spec.tasks.iter().position(|task| task.id == id);
    let mut named = BTreeSet::new();
    for (i, task) in spec.tasks.iter().enumerate() {
        let undo = &task.compensation_task_id;
        if undo.is_empty() {
            continue;
        }
        let field = format!("tasks[{i}].compensation_task_id");
        let problem = match position(undo) {
            None => Some(format!("unknown task '{undo}'")),
            Some(_) if *undo == task.id => Some("a task cannot compensate itself".to_owned()),
            Some(_) if !named.insert(undo.as_str()) => {
                Some(format!("'{undo}' already compensates another task"))
            }
            Some(j) if !spec.tasks[j].depends_on.is_empty() => Some(format!(
                "'{undo}' has dependencies; a compensation task receives the output of the task it undoes instead"
            )),
            Some(j) if !spec.tasks[j].compensation_task_id.is_empty() => {
                Some(format!("'{undo}' is a compensation task and cannot name one itself"))
            }
            Some(_) if spec.goal.criterion == Criterion::GoalTask(undo.clone()) => {
                Some(format!("'{undo}' is the goal task"))
            }
            Some(j) if spec.tasks[j].fan_out.is_some() || spec.tasks[j].child_job.is_some() => {
                Some(format!(
                    "'{undo}' is a fan-out or a child job; a compensation task runs on an agent"
                ))
            }
            Some(_) => None,
        };
        if let Some(problem) = problem {
            return Err(SpecError::new(field, problem));
        }
    }
    for (i, task) in spec.tasks.iter().enumerate() {
        if let Some((j, dep)) = task
            .depends_on
            .iter()
            .enumerate()
            .find(|(_, dep)| named.contains(dep.as_str()))
        {
            let problem = format!("'{dep}' is a compensation task, which runs only on failure");
            return Err(SpecError::new(
                format!("tasks[{i}].depends_on[{j}]"),
                problem,
            ));
        }
    }
    Ok(())
}

/// What a batch of subtasks joins: the job's tasks so far.
pub struct Existing<'a> {
    /// Tasks declared (submitted and added), fan-out instances excluded.
    pub tasks: usize,
    /// Task records, fan-out instances included.
    pub records: usize,
    /// How many child jobs deep the job is (0 for a submitted job).
    pub depth: usize,
    /// Whether a task id is taken.
    pub contains: &'a dyn Fn(&str) -> bool,
    /// Whether a task id names a fan-out.
    pub is_fan_out: &'a dyn Fn(&str) -> bool,
}

impl Existing<'_> {
    /// No existing task: a job being submitted.
    fn none() -> Self {
        Existing {
            tasks: 0,
            records: 0,
            depth: 0,
            contains: &|_| false,
            is_fan_out: &|_| false,
        }
    }
}

/// Checks subtasks added to a job that already holds the `existing` tasks. Dependencies may
/// name existing tasks.
pub fn validate_subtasks(subtasks: &[TaskSpec], existing: &Existing<'_>) -> Result<(), SpecError> {
    if subtasks.is_empty() {
        return Err(SpecError::new("subtasks", "at least one subtask is needed"));
    }
    check_batch("subtasks", subtasks, existing)?;
    for (i, task) in subtasks.iter().enumerate() {
        if !task.compensation_task_id.is_empty() {
            let field = format!("subtasks[{i}].compensation_task_id");
            return Err(SpecError::new(
                field,
                "compensation is declared when the job is submitted",
            ));
        }
        if let Some(child) = &task.child_job {
            let field = format!("subtasks[{i}].child_job");
            if existing.depth + 1 > CHILD_JOB_DEPTH_MAX {
                let problem = format!("child jobs nest at most {CHILD_JOB_DEPTH_MAX} deep");
                return Err(SpecError::new(field, problem));
            }
            validate_nested(child, existing.depth + 1).map_err(|error| {
                SpecError::new(format!("{field}.{}", error.field), error.problem)
            })?;
        }
    }
    Ok(())
}

/// The first task that no live agent (neither expired nor deregistered) could run: no such
/// agent offers all of its required capabilities, or none of those that do satisfies its label
/// constraints and has the resources it asks for in total. Tasks requiring none of these
/// always pass (they wait for whichever agent comes).
pub fn unsatisfiable(spec: &JobSpec, agents: &AgentRegistry) -> Option<SpecError> {
    unsatisfiable_tasks("tasks", &spec.tasks, agents)
}

/// The first of `tasks` (named under `prefix`) that no live agent could run.
pub fn unsatisfiable_tasks(
    prefix: &str,
    tasks: &[TaskSpec],
    agents: &AgentRegistry,
) -> Option<SpecError> {
    // Tasks of a job mostly share a few capability sets: check each distinct set once.
    let mut satisfiable: BTreeSet<&BTreeSet<String>> = BTreeSet::new();
    // ...and a few distinct placement needs: each fit found once.
    let mut fitting: Vec<TaskNeeds> = Vec::new();
    tasks
        .iter()
        .enumerate()
        .find_map(|(i, task)| match &task.child_job {
            Some(child) => {
                let prefix = format!("{prefix}[{i}].child_job.tasks");
                unsatisfiable_tasks(&prefix, &child.tasks, agents)
            }
            None => missing_capability(prefix, i, task, agents, &mut satisfiable)
                .or_else(|| unfit(prefix, i, task, agents, &mut fitting)),
        })
}

/// Why no live agent could ever run `task`, or `None` when one could.
pub fn why_unsatisfiable(task: &TaskSpec, agents: &AgentRegistry) -> Option<String> {
    let mut satisfiable = BTreeSet::new();
    missing_capability("task", 0, task, agents, &mut satisfiable)
        .or_else(|| unfit("task", 0, task, agents, &mut Vec::new()))
        .map(|error| error.problem)
}

/// Whether some live agent offers all of the task's capabilities.
fn missing_capability<'t>(
    prefix: &str,
    i: usize,
    task: &'t TaskSpec,
    agents: &AgentRegistry,
    satisfiable: &mut BTreeSet<&'t BTreeSet<String>>,
) -> Option<SpecError> {
    {
        let needed = &task.required_capabilities;
        // A task that needs no capability waits for whichever agent comes.
        if needed.is_empty() || satisfiable.contains(needed) {
            return None;
        }
        if agents
            .live()
            .any(|agent| needed.is_subset(&agent.capabilities))
        {
            satisfiable.insert(needed);
            return None;
        }
        let field = format!("{prefix}[{i}].required_capabilities");
        let missing = needed
            .iter()
            .find(|cap| !agents.live().any(|agent| agent.capabilities.contains(*cap)));
        let problem = match missing {
            Some(cap) => format!("no agent offers '{cap}'"),
            None => format!("no agent offers all of {}", quoted(needed.iter())),
        };
        Some(SpecError::new(field, problem))
    }
}

/// Whether some live agent with the task's capabilities could take it when idle: its label
/// constraints hold and its resources cover the request.
fn unfit(
    prefix: &str,
    i: usize,
    task: &TaskSpec,
    agents: &AgentRegistry,
    fitting: &mut Vec<TaskNeeds>,
) -> Option<SpecError> {
    if task.constraints.is_empty() && task.resources.is_empty() {
        return None;
    }
    let needs = placement::needs_of("", task);
    if fitting.contains(&needs) {
        return None;
    }
    let capable = agents
        .live()
        .filter(|agent| task.required_capabilities.is_subset(&agent.capabilities));
    let mut reasons = Vec::new();
    for agent in capable {
        // Idle, and with its circuit closed: a quarantine does not last.
        let idle = Candidate {
            max_concurrent: 1,
            draining_or_quarantined: agent.draining,
            ..placement::candidate_of(&JobTable::default(), agent, 0)
        };
        match scheduler::eligible(&needs, &idle) {
            Ok(()) => {
                fitting.push(needs);
                return None;
            }
            Err(reason) => reasons.push((agent.id.clone(), reason)),
        }
    }
    let field = match reasons.first() {
        Some((_, Ineligible::InsufficientResource { .. })) => "resources",
        Some(_) => "constraints",
        None if task.resources.is_empty() => "constraints",
        None => "resources",
    };
    let problem = match reasons.is_empty() {
        true => "no agent is connected to run it".to_owned(),
        false => {
            let shown: Vec<String> = reasons
                .iter()
                .take(3)
                .map(|(id, reason)| format!("agent '{id}': {reason}"))
                .collect();
            let more = reasons.len().saturating_sub(3);
            let more = if more > 0 {
                format!(" (and {more} more)")
            } else {
                String::new()
            };
            format!("no agent can ever run it: {}{more}", shown.join("; "))
        }
    };
    Some(SpecError::new(format!("{prefix}[{i}].{field}"), problem))
}

/// Rules shared by a job's tasks and a batch of subtasks, named under `prefix`.
fn check_batch(prefix: &str, tasks: &[TaskSpec], existing: &Existing<'_>) -> Result<(), SpecError> {
    let total = existing.tasks + tasks.len();
    if total > TASKS_MAX {
        let problem = format!("{total} tasks in the job, the limit is {TASKS_MAX}");
        return Err(SpecError::new(prefix, problem));
    }
    let instances: usize = tasks
        .iter()
        .filter_map(|task| match &task.fan_out.as_ref()?.source {
            FanOutSource::Items(items) => Some(items.len()),
            FanOutSource::FromDependency { .. } => None,
        })
        .sum();
    let records = existing.records + tasks.len() + instances;
    if records > TASK_RECORDS_MAX {
        let problem = format!(
            "{records} tasks and fan-out instances in the job, the limit is {TASK_RECORDS_MAX}"
        );
        return Err(SpecError::new(prefix, problem));
    }
    let mut ids = BTreeSet::new();
    for (i, task) in tasks.iter().enumerate() {
        let field = format!("{prefix}[{i}].task_id");
        check_id(&field, &task.id, existing.contains)?;
        if !ids.insert(task.id.as_str()) {
            return Err(SpecError::new(field, format!("duplicate id '{}'", task.id)));
        }
    }
    let fan_outs: BTreeSet<&str> = tasks
        .iter()
        .filter(|task| task.fan_out.is_some())
        .map(|task| task.id.as_str())
        .collect();
    let is_fan_out = |id: &str| fan_outs.contains(id) || (existing.is_fan_out)(id);
    for (i, task) in tasks.iter().enumerate() {
        let at = format!("{prefix}[{i}]");
        check_task(&at, task)?;
        check_dependencies(&at, task, &|id| ids.contains(id) || (existing.contains)(id))?;
        check_fan_out(&at, task, &is_fan_out)?;
    }
    match find_cycle(tasks) {
        Some(cycle) => {
            let problem = format!("dependency cycle {}", cycle.join(" -> "));
            Err(SpecError::new(prefix, problem))
        }
        None => Ok(()),
    }
}

fn check_id(field: &str, id: &str, existing: &dyn Fn(&str) -> bool) -> Result<(), SpecError> {
    let chars = id.chars().count();
    if chars == 0 {
        return Err(SpecError::new(field, "empty"));
    }
    if chars > TASK_ID_CHARS_MAX {
        let problem = format!("{chars} chars, the limit is {TASK_ID_CHARS_MAX}");
        return Err(SpecError::new(field, problem));
    }
    if existing(id) {
        return Err(SpecError::new(field, format!("duplicate id '{id}'")));
    }
    if id.contains(['[', ']']) {
        let problem = format!("'{id}': '[' and ']' are reserved for fan-out instance ids");
        return Err(SpecError::new(field, problem));
    }
    Ok(())
}

/// A fan-out's items and its source; conditions cannot test a fan-out (it has no output).
fn check_fan_out(
    at: &str,
    task: &TaskSpec,
    is_fan_out: &dyn Fn(&str) -> bool,
) -> Result<(), SpecError> {
    if let Some(dep) = task.conditions.keys().find(|dep| is_fan_out(dep)) {
        let problem = format!("'{dep}' is a fan-out, which has no output of its own to test");
        return Err(SpecError::new(format!("{at}.depends_on"), problem));
    }
    let Some(fan_out) = &task.fan_out else {
        return Ok(());
    };
    if task.child_job.is_some() {
        let problem = "a task is either a fan-out or a child job";
        return Err(SpecError::new(format!("{at}.fan_out"), problem));
    }
    match &fan_out.source {
        FanOutSource::Items(items) => {
            if items.len() > FAN_OUT_MAX {
                let problem = format!("{} items, the limit is {FAN_OUT_MAX}", items.len());
                return Err(SpecError::new(format!("{at}.fan_out.items"), problem));
            }
            if let Some(i) = items.iter().position(|item| item.len() > PAYLOAD_BYTES_MAX) {
                let problem = format!("{} bytes, the limit is {PAYLOAD_BYTES_MAX}", items[i].len());
                return Err(SpecError::new(format!("{at}.fan_out.items[{i}]"), problem));
            }
        }
        FanOutSource::FromDependency { task_id, .. } => {
            if !task.depends_on.contains(task_id) {
                let problem = format!("'{task_id}' must also be in depends_on");
                return Err(SpecError::new(
                    format!("{at}.fan_out.from_dependency.task_id"),
                    problem,
                ));
            }
        }
    }
    Ok(())
}

/// Rules on one task's own fields, named under `at` (e.g. `tasks[3]`).
fn check_task(at: &str, task: &TaskSpec) -> Result<(), SpecError> {
    if task.kind.is_empty() && task.child_job.is_none() {
        return Err(SpecError::new(format!("{at}.kind"), "empty"));
    }
    let bytes = task.payload.len();
    if bytes > PAYLOAD_BYTES_MAX {
        let problem = format!("{bytes} bytes, the limit is {PAYLOAD_BYTES_MAX}");
        return Err(SpecError::new(format!("{at}.payload"), problem));
    }
    if task.fallback_strategy == Some(Strategy::Auction) {
        let problem = "an auction cannot be its own fallback";
        return Err(SpecError::new(format!("{at}.fallback_strategy"), problem));
    }
    check_retry(&format!("{at}.retry"), &task.retry)
}

fn check_retry(at: &str, retry: &RetryPolicy) -> Result<(), SpecError> {
    if !(1..=ATTEMPTS_MAX).contains(&retry.max_attempts) {
        let problem = format!("{}, must be 1 to {ATTEMPTS_MAX}", retry.max_attempts);
        return Err(SpecError::new(format!("{at}.max_attempts"), problem));
    }
    if !(retry.multiplier.is_finite() && retry.multiplier >= 1.0) {
        let problem = format!("{}, must be at least 1.0", retry.multiplier);
        return Err(SpecError::new(format!("{at}.multiplier"), problem));
    }
    if retry.max_backoff_ms < retry.initial_backoff_ms {
        let problem = format!(
            "{} is below initial_backoff_ms {}",
            retry.max_backoff_ms, retry.initial_backoff_ms
        );
        return Err(SpecError::new(format!("{at}.max_backoff_ms"), problem));
    }
    Ok(())
}

fn check_dependencies(
    at: &str,
    task: &TaskSpec,
    known: &dyn Fn(&str) -> bool,
) -> Result<(), SpecError> {
    let mut seen = BTreeSet::new();
    for (j, dep) in task.depends_on.iter().enumerate() {
        let field = format!("{at}.depends_on[{j}]");
        if *dep == task.id {
            return Err(SpecError::new(field, "a task cannot depend on itself"));
        }
        if !known(dep) {
            return Err(SpecError::new(field, format!("unknown task '{dep}'")));
        }
        if !seen.insert(dep.as_str()) {
            return Err(SpecError::new(
                field,
                format!("duplicate dependency '{dep}'"),
            ));
        }
    }
    Ok(())
}

fn check_goal(spec: &JobSpec) -> Result<(), SpecError> {
    let Criterion::GoalTask(goal) = &spec.goal.criterion else {
        return Ok(());
    };
    if spec.tasks.iter().any(|task| task.id == *goal) {
        return Ok(());
    }
    let problem = format!("unknown task '{goal}'");
    Err(SpecError::new("goal.goal_task_id", problem))
}

fn quoted<'a>(items: impl Iterator<Item = &'a String>) -> String {
    let items: Vec<String> = items.map(|item| format!("'{item}'")).collect();
    items.join(", ")
}
