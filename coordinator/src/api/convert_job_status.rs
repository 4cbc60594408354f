//! Jobs from domain to proto: job and task records into `synod.v1.Job` / `Task` /
//! `TaskAttempt`, history entries into `synod.v1.JobEvent`, and stored specs back into
//! `synod.v1.JobSpec` (for `include_spec`).
//!
//! Pure functions of the applied state. Where the proto has a field the state does not record
//! (progress, idempotency keys), it is left at its default.
//!
//! ```text
//!   JobRecord ──► pb::Job      (task_counts, output, last_sequence, timestamps)
//!   TaskRecord ─► pb::Task     (state, attempts, output, error, next_attempt_at_ms)
//!   JobEvent ───► pb::JobEvent (one per domain event: sequences stay gap-free)
//! ```

use std::collections::BTreeMap;

use synod_proto::v1 as pb;
use synod_proto::v1::job_event::Kind;

use crate::scheduler::{Constraint, ConstraintOp};
use crate::state::jobs::{
    AttemptOutcome, AttemptRecord, Criterion, FanOut, FanOutSource, JobEvent, JobEventKind,
    JobRecord, JobSpec, JobState, Strategy, TaskRecord, TaskRole, TaskSpec, TaskState,
};

/// A job's status; its spec only when `include_spec`.
pub fn job(record: &JobRecord, include_spec: bool) -> pb::Job {
    let parent = record.parent.as_ref();
    pb::Job {
        job_id: record.id.clone(),
        name: record.spec.name.clone(),
        labels: record.spec.labels.clone().into_iter().collect(),
        state: job_state(record.state) as i32,
        state_reason: record.state_reason.clone().unwrap_or_default(),
        task_counts: task_counts(record),
        output: record.output.clone().unwrap_or_default(),
        last_sequence: record.events.len() as u64,
        created_at_ms: record.created_at_ms,
        started_at_ms: record.started_at_ms.unwrap_or(0),
        finished_at_ms: record.finished_at_ms.unwrap_or(0),
        spec: include_spec.then(|| job_spec(&record.spec)),
        parent_job_id: parent.map(|p| p.job_id.clone()).unwrap_or_default(),
        parent_task_id: parent.map(|p| p.task_id.clone()).unwrap_or_default(),
        ..Default::default()
    }
}

/// Number of tasks in each non-empty state, in state order.
fn task_counts(record: &JobRecord) -> Vec<pb::TaskStateCount> {
    let mut counts = BTreeMap::<i32, u32>::new();
    for task in record.tasks.values() {
        *counts.entry(task_state(task.state) as i32).or_default() += 1;
    }
    counts
        .into_iter()
        .map(|(state, count)| pb::TaskStateCount { state, count })
        .collect()
}

/// A task's status; its spec only when `include_spec`.
pub fn task(
    job_id: &str,
    task_id: &str,
    spec: &TaskSpec,
    record: &TaskRecord,
    include_spec: bool,
) -> pb::Task {
    let (fan_out_index, child_job_id) = match &record.role {
        TaskRole::Instance { index, .. } => (Some(*index), String::new()),
        TaskRole::ChildJob {
            child_job_id: Some(id),
        } => (None, id.clone()),
        _ => (None, String::new()),
    };
    pb::Task {
        job_id: job_id.to_owned(),
        task_id: task_id.to_owned(),
        fan_out_index,
        child_job_id,
        compensation: matches!(record.role, TaskRole::Compensation { .. }),
        kind: spec.kind.clone(),
        state: task_state(record.state) as i32,
        state_reason: state_reason(record),
        attempt: record.attempt,
        failed_attempts: record.failed_attempts,
        agent_id: record.agent.clone().unwrap_or_default(),
        attempts: record
            .attempts
            .iter()
            .map(|a| attempt(a, spec.strategy))
            .collect(),
        output: record.output.clone().unwrap_or_default(),
        error_message: latest_error(record).unwrap_or_default(),
        parent_task_id: record.parent.clone().unwrap_or_default(),
        created_at_ms: record.created_at_ms,
        ready_at_ms: record.ready_at_ms.unwrap_or(0),
        next_attempt_at_ms: next_attempt_at_ms(record),
        finished_at_ms: record.finished_at_ms.unwrap_or(0),
        spec: include_spec.then(|| task_spec(spec)),
        ..Default::default()
    }
}

/// Why a task is in an unsuccessful terminal state; empty otherwise.
fn state_reason(record: &TaskRecord) -> String {
    match record.state.is_unsuccessful() {
        true => record.error.clone().unwrap_or_default(),
        false => String::new(),
    }
}

/// The error message of the latest attempt the agent reported as failed.
fn latest_error(record: &TaskRecord) -> Option<String> {
    record
        .attempts
        .iter()
        .rev()
        .find_map(|attempt| match &attempt.outcome {
            Some(AttemptOutcome::Failed { error, .. }) => Some(error.clone()),
            _ => None,
        })
}

/// When a pending retry may be assigned; 0 when none is pending.
fn next_attempt_at_ms(record: &TaskRecord) -> u64 {
    match record.state {
        TaskState::Ready if record.attempt > 0 => record.not_before_ms,
        _ => 0,
    }
}

/// One attempt; `strategy` is the task's.
pub fn attempt(record: &AttemptRecord, strategy: Strategy) -> pb::TaskAttempt {
    let (outcome, error_message, retryable) = attempt_outcome(record);
    pb::TaskAttempt {
        attempt: record.attempt,
        agent_id: record.agent.clone(),
        strategy: assignment_strategy(strategy) as i32,
        outcome: outcome as i32,
        error_message,
        retryable,
        fallback: false,
        assigned_at_ms: record.assigned_at_ms,
        started_at_ms: record.started_at_ms.unwrap_or(0),
        finished_at_ms: record.ended_at_ms.unwrap_or(0),
    }
}

/// How an attempt ended, its message and whether it was retryable.
fn attempt_outcome(record: &AttemptRecord) -> (pb::AttemptOutcome, String, bool) {
    match &record.outcome {
        None => (pb::AttemptOutcome::Unspecified, String::new(), false),
        Some(AttemptOutcome::Succeeded) => (pb::AttemptOutcome::Succeeded, String::new(), false),
        Some(AttemptOutcome::Failed { error, retryable }) => {
            (pb::AttemptOutcome::Failed, error.clone(), *retryable)
        }
        Some(AttemptOutcome::TimedOut) => {
            let message = "attempt exceeded its timeout".to_owned();
            (pb::AttemptOutcome::TimedOut, message, false)
        }
        Some(AttemptOutcome::AgentLost) => {
            let message = format!("agent '{}' lost", record.agent);
            (pb::AttemptOutcome::AgentLost, message, false)
        }
        Some(AttemptOutcome::Cancelled) => {
            let message = "attempt cancelled".to_owned();
            (pb::AttemptOutcome::Cancelled, message, false)
        }
    }
}

/// A job's lifecycle state.
pub fn job_state(state: JobState) -> pb::JobState {
    match state {
        JobState::Pending => pb::JobState::Pending,
        JobState::Running => pb::JobState::Running,
        JobState::Compensating => pb::JobState::Compensating,
        JobState::Succeeded => pb::JobState::Succeeded,
        JobState::Failed => pb::JobState::Failed,
        JobState::Cancelled => pb::JobState::Cancelled,
    }
}

/// A task's lifecycle state.
pub fn task_state(state: TaskState) -> pb::TaskState {
    match state {
        TaskState::Pending => pb::TaskState::Pending,
        TaskState::Ready => pb::TaskState::Ready,
        TaskState::Assigned => pb::TaskState::Assigned,
        TaskState::Running => pb::TaskState::Running,
        TaskState::Succeeded => pb::TaskState::Succeeded,
        TaskState::Failed => pb::TaskState::Failed,
        TaskState::TimedOut => pb::TaskState::TimedOut,
        TaskState::Cancelled => pb::TaskState::Cancelled,
        TaskState::Skipped | TaskState::Bypassed => pb::TaskState::Skipped,
        TaskState::DeadLettered => pb::TaskState::DeadLettered,
        TaskState::Unsatisfiable => pb::TaskState::Unsatisfiable,
    }
}

/// An assignment strategy.
pub fn assignment_strategy(strategy: Strategy) -> pb::AssignmentStrategy {
    match strategy {
        Strategy::RoundRobin => pb::AssignmentStrategy::RoundRobin,
        Strategy::LeastLoaded => pb::AssignmentStrategy::LeastLoaded,
        Strategy::Capability => pb::AssignmentStrategy::Capability,
        Strategy::Auction => pb::AssignmentStrategy::Auction,
    }
}

/// A stored job spec (subtasks included) as submitted-spec proto.
pub fn job_spec(spec: &JobSpec) -> pb::JobSpec {
    let (criterion, goal_task_id) = match &spec.goal.criterion {
        Criterion::AllTasks => (pb::GoalCriterion::AllTasks, String::new()),
        Criterion::GoalTask(id) => (pb::GoalCriterion::GoalTask, id.clone()),
    };
    pb::JobSpec {
        name: spec.name.clone(),
        goal: Some(pb::Goal {
            description: spec.goal.description.clone(),
            criterion: criterion as i32,
            goal_task_id,
        }),
        tasks: spec.tasks.iter().map(task_spec).collect(),
        labels: spec.labels.clone().into_iter().collect(),
        priority: spec.priority,
        timeout_ms: spec.timeout_ms,
    }
}

/// A stored task spec as proto.
pub fn task_spec(spec: &TaskSpec) -> pb::TaskSpec {
    let depends_on = spec.depends_on.iter().map(|id| pb::Dependency {
        task_id: id.clone(),
        condition: spec.conditions.get(id).map(|c| pb::OutputCondition {
            json_pointer: c.json_pointer.clone(),
            equals_json: c.equals_json.clone(),
        }),
    });
    pb::TaskSpec {
        task_id: spec.id.clone(),
        kind: spec.kind.clone(),
        description: spec.description.clone(),
        payload: spec.payload.clone(),
        depends_on: depends_on.collect(),
        required_capabilities: spec.required_capabilities.iter().cloned().collect(),
        preferred_labels: spec.preferred_labels.clone().into_iter().collect(),
        constraints: spec.constraints.iter().map(placement_constraint).collect(),
        resources: spec.resources.clone().into_iter().collect(),
        anti_affinity_group: spec.anti_affinity_group.clone(),
        timeout_ms: spec.timeout_ms,
        retry: Some(pb::RetryPolicy {
            max_attempts: spec.retry.max_attempts,
            initial_backoff_ms: spec.retry.initial_backoff_ms,
            max_backoff_ms: spec.retry.max_backoff_ms,
            multiplier: spec.retry.multiplier,
        }),
        strategy: assignment_strategy(spec.strategy) as i32,
        auction: auction_settings(spec),
        fallback: spec.fallback.as_ref().map(|f| pb::Fallback {
            kind: f.kind.clone(),
            strategy: f.strategy.map_or(0, |s| assignment_strategy(s) as i32),
            required_capabilities: f.required_capabilities.iter().cloned().collect(),
            max_attempts: f.max_attempts,
        }),
        fan_out: spec.fan_out.as_ref().map(fan_out),
        child_job: spec.child_job.as_deref().map(job_spec),
        compensation_task_id: spec.compensation_task_id.clone(),
    }
}

fn fan_out(fan_out: &FanOut) -> pb::FanOut {
    use pb::fan_out::Source;
    let source = match &fan_out.source {
        FanOutSource::Items(items) => Source::Items(pb::FanOutItems {
            items: items.iter().map(|item| item.to_vec()).collect(),
        }),
        FanOutSource::FromDependency {
            task_id,
            json_pointer,
        } => Source::FromDependency(pb::FanOutFromDependency {
            task_id: task_id.clone(),
            json_pointer: json_pointer.clone(),
        }),
    };
    pb::FanOut {
        source: Some(source),
        parallelism: fan_out.parallelism,
    }
}

fn placement_constraint(constraint: &Constraint) -> pb::PlacementConstraint {
    let (op, values) = match &constraint.op {
        ConstraintOp::Equals(value) => (pb::ConstraintOp::Equals, vec![value.clone()]),
        ConstraintOp::In(values) => (pb::ConstraintOp::In, values.clone()),
        ConstraintOp::NotIn(values) => (pb::ConstraintOp::NotIn, values.clone()),
        ConstraintOp::Exists => (pb::ConstraintOp::Exists, Vec::new()),
        ConstraintOp::NotExists => (pb::ConstraintOp::NotExists, Vec::new()),
    };
    pb::PlacementConstraint {
        key: constraint.key.clone(),
        op: op as i32,
        values,
    }
}

/// The auction settings a task was submitted with, `None` when it set none.
fn auction_settings(spec: &TaskSpec) -> Option<pb::AuctionSettings> {
    let set = spec.fallback_strategy.is_some() || spec.bid_window_ms > 0 || spec.auction_rounds > 0;
    set.then(|| pb::AuctionSettings {
        bid_window_ms: spec.bid_window_ms,
        fallback_strategy: spec
            .fallback_strategy
            .map_or(pb::AssignmentStrategy::Unspecified, assignment_strategy)
            as i32,
        max_rounds: spec.auction_rounds,
    })
}

/// One history entry of `job`. Details the event does not carry (agents, output sizes, error
/// messages) are looked up in the job's current records.
pub fn job_event(job: &JobRecord, event: &JobEvent) -> pb::JobEvent {
    pb::JobEvent {
        job_id: job.id.clone(),
        sequence: event.sequence,
        occurred_at_ms: event.at_ms,
        log_index: event.log_index,
        kind: event_kind(job, &event.kind),
    }
}

fn event_kind(job: &JobRecord, kind: &JobEventKind) -> Option<Kind> {
    use synod_proto::v1::job_event as e;
    Some(match kind {
        JobEventKind::JobSubmitted => Kind::JobSubmitted(e::JobSubmitted {
            name: job.spec.name.clone(),
            task_count: root_task_count(job),
            parent_job_id: job
                .parent
                .as_ref()
                .map(|p| p.job_id.clone())
                .unwrap_or_default(),
        }),
        JobEventKind::TaskReady { task_id } => Kind::TaskReady(e::TaskReady {
            task_id: task_id.clone(),
        }),
        JobEventKind::TaskAssigned {
            task_id,
            agent,
            attempt,
        } => Kind::TaskAssigned(e::TaskAssigned {
            task_id: task_id.clone(),
            attempt: *attempt,
            agent_id: agent.clone(),
            strategy: task_strategy(job, task_id) as i32,
        }),
        JobEventKind::TaskStarted { task_id, attempt } => Kind::TaskStarted(e::TaskStarted {
            task_id: task_id.clone(),
            attempt: *attempt,
            agent_id: attempt_agent(job, task_id, *attempt),
        }),
        JobEventKind::TaskSucceeded { task_id, attempt } => succeeded(job, task_id, *attempt),
        JobEventKind::TaskFailed {
            task_id,
            attempt: 0,
            error,
            ..
        } => Kind::TaskFailed(e::TaskFailed {
            task_id: task_id.clone(),
            error_message: error.clone(),
            ..Default::default()
        }),
        JobEventKind::TaskFailed {
            task_id, attempt, ..
        } => failed(job, task_id, *attempt),
        JobEventKind::TaskTimedOut {
            task_id, attempt, ..
        } => Kind::TaskTimedOut(e::TaskTimedOut {
            task_id: task_id.clone(),
            attempt: *attempt,
            agent_id: attempt_agent(job, task_id, *attempt),
        }),
        other => return later_event_kind(job, other),
    })
}

/// The kinds that end tasks or concern the whole job.
fn later_event_kind(job: &JobRecord, kind: &JobEventKind) -> Option<Kind> {
    use synod_proto::v1::job_event as e;
    Some(match kind {
        JobEventKind::TaskDeadLettered { task_id } => dead_lettered(job, task_id),
        JobEventKind::FallbackActivated {
            task_id,
            kind,
            strategy,
        } => Kind::FallbackActivated(e::FallbackActivated {
            task_id: task_id.clone(),
            kind: kind.clone(),
            strategy: assignment_strategy(*strategy) as i32,
        }),
        JobEventKind::TaskBypassed { task_id, reason } => Kind::TaskSkipped(e::TaskSkipped {
            task_id: task_id.clone(),
            reason: reason.clone(),
        }),
        JobEventKind::TaskUnsatisfiable { task_id, reason } => {
            Kind::TaskUnsatisfiable(e::TaskUnsatisfiable {
                task_id: task_id.clone(),
                reason: reason.clone(),
            })
        }
        JobEventKind::TaskSkipped {
            task_id,
            dependency,
        } => Kind::TaskSkipped(e::TaskSkipped {
            task_id: task_id.clone(),
            reason: format!("dependency '{dependency}' did not succeed"),
        }),
        JobEventKind::StaleResultRejected {
            task_id,
            attempt,
            agent,
        } => Kind::StaleResultRejected(e::StaleResultRejected {
            task_id: task_id.clone(),
            attempt: *attempt,
            current_attempt: job.tasks.get(task_id).map_or(0, |task| task.attempt),
            agent_id: agent.clone(),
        }),
        JobEventKind::SubtasksAdded {
            parent_task_id,
            ids,
        } => Kind::SubtasksAdded(e::SubtasksAdded {
            parent_task_id: parent_task_id.clone(),
            task_ids: ids.clone(),
            ..Default::default()
        }),
        JobEventKind::FanOutExpanded {
            task_id,
            instance_count,
        } => Kind::FanOutExpanded(e::FanOutExpanded {
            task_id: task_id.clone(),
            instance_count: *instance_count,
        }),
        JobEventKind::ChildJobStarted {
            task_id,
            child_job_id,
        } => Kind::ChildJobStarted(e::ChildJobStarted {
            task_id: task_id.clone(),
            child_job_id: child_job_id.clone(),
        }),
        JobEventKind::CompensationStarted { reason, task_ids } => {
            Kind::CompensationStarted(e::CompensationStarted {
                reason: reason.clone(),
                task_ids: task_ids.clone(),
            })
        }
        JobEventKind::JobCancelled { reason } => Kind::JobCancelled(e::JobCancelled {
            reason: reason.clone(),
        }),
        JobEventKind::JobCompleted { state } => Kind::JobCompleted(e::JobCompleted {
            state: job_state(*state) as i32,
            reason: job.state_reason.clone().unwrap_or_default(),
        }),
        JobEventKind::SubtasksCompleted { parent_task_id } => {
            Kind::SubtasksCompleted(e::SubtasksCompleted {
                parent_task_id: parent_task_id.clone(),
            })
        }
        JobEventKind::TaskRetryScheduled {
            task_id,
            failed_attempts,
            backoff_ms,
            retry_at_ms,
        } => Kind::TaskRetryScheduled(e::TaskRetryScheduled {
            task_id: task_id.clone(),
            failed_attempts: *failed_attempts,
            backoff_ms: *backoff_ms,
            retry_at_ms: *retry_at_ms,
        }),
        // The kinds above `later_event_kind` are handled by `event_kind`.
        _ => return None,
    })
}

fn succeeded(job: &JobRecord, task_id: &str, attempt: u32) -> Kind {
    let output = job.tasks.get(task_id).and_then(|task| task.output.as_ref());
    Kind::TaskSucceeded(pb::job_event::TaskSucceeded {
        task_id: task_id.to_owned(),
        attempt,
        agent_id: attempt_agent(job, task_id, attempt),
        output_size_bytes: output.map_or(0, |output| output.len() as u64),
    })
}

/// A failed attempt: `TaskAgentLost` when its agent was lost, `TaskFailed` otherwise.
fn failed(job: &JobRecord, task_id: &str, attempt: u32) -> Kind {
    let record = attempt_record(job, task_id, attempt);
    let agent_id = record.map(|r| r.agent.clone()).unwrap_or_default();
    let (task_id, outcome) = (task_id.to_owned(), record.and_then(|r| r.outcome.as_ref()));
    match outcome {
        Some(AttemptOutcome::AgentLost) => Kind::TaskAgentLost(pb::job_event::TaskAgentLost {
            task_id,
            attempt,
            agent_id,
        }),
        Some(AttemptOutcome::Failed { error, retryable }) => {
            Kind::TaskFailed(pb::job_event::TaskFailed {
                task_id,
                attempt,
                agent_id,
                error_message: error.clone(),
                retryable: *retryable,
            })
        }
        _ => Kind::TaskFailed(pb::job_event::TaskFailed {
            task_id,
            attempt,
            agent_id,
            ..Default::default()
        }),
    }
}

fn dead_lettered(job: &JobRecord, task_id: &str) -> Kind {
    let task = job.tasks.get(task_id);
    Kind::TaskDeadLettered(pb::job_event::TaskDeadLettered {
        task_id: task_id.to_owned(),
        attempts: task.map_or(0, |task| task.attempt),
        last_error: task.and_then(latest_error).unwrap_or_default(),
    })
}

/// Tasks submitted with the job (subtasks excluded).
fn root_task_count(job: &JobRecord) -> u32 {
    job.tasks.values().filter(|t| t.parent.is_none()).count() as u32
}

fn task_strategy(job: &JobRecord, task_id: &str) -> pb::AssignmentStrategy {
    job.task_spec(task_id)
        .map_or(pb::AssignmentStrategy::Unspecified, |spec| {
            assignment_strategy(spec.strategy)
        })
}

fn attempt_record<'a>(
    job: &'a JobRecord,
    task_id: &str,
    attempt: u32,
) -> Option<&'a AttemptRecord> {
    let task = job.tasks.get(task_id)?;
    task.attempts
        .iter()
        .find(|record| record.attempt == attempt)
}

fn attempt_agent(job: &JobRecord, task_id: &str, attempt: u32) -> String {
    attempt_record(job, task_id, attempt).map_or_else(String::new, |r| r.agent.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::jobs::{Goal, RetryPolicy};
    use crate::state::Meta;

    fn spec() -> JobSpec {
        let task = |id: &str, deps: &[&str]| TaskSpec {
            id: id.into(),
            kind: "k".into(),
            description: String::new(),
            payload: b"p".to_vec(),
            depends_on: deps.iter().map(|d| d.to_string()).collect(),
            conditions: deps
                .iter()
                .map(|d| {
                    let condition = crate::state::jobs::OutputCondition {
                        json_pointer: "/kind".into(),
                        equals_json: "\"bug\"".into(),
                    };
                    (d.to_string(), condition)
                })
                .collect(),
            required_capabilities: ["llm".to_owned()].into(),
            preferred_labels: BTreeMap::new(),
            constraints: vec![Constraint {
                key: "zone".into(),
                op: ConstraintOp::In(vec!["eu".into(), "us".into()]),
            }],
            resources: [("cpu".to_owned(), 2.0)].into(),
            anti_affinity_group: "replicas".into(),
            timeout_ms: 0,
            retry: RetryPolicy::default(),
            strategy: Strategy::Auction,
            fallback_strategy: Some(Strategy::LeastLoaded),
            bid_window_ms: 500,
            auction_rounds: 3,
            fallback: Some(crate::state::jobs::Fallback {
                kind: "k2".into(),
                strategy: Some(Strategy::LeastLoaded),
                required_capabilities: ["cpu".to_owned()].into(),
                max_attempts: 2,
            }),
            fan_out: None,
            child_job: None,
            compensation_task_id: String::new(),
        };
        JobSpec {
            name: "j".into(),
            goal: Goal {
                description: "g".into(),
                criterion: Criterion::GoalTask("b".into()),
            },
            tasks: vec![task("a", &[]), task("b", &["a"])],
            labels: [("team".to_owned(), "x".to_owned())].into(),
            priority: 3,
            timeout_ms: 9,
        }
    }

    fn attempt_record(attempt: u32, outcome: Option<AttemptOutcome>) -> AttemptRecord {
        AttemptRecord {
            attempt,
            agent: format!("agent-{attempt}"),
            assigned_at_ms: 10 * u64::from(attempt),
            started_at_ms: Some(11),
            ended_at_ms: outcome.as_ref().map(|_| 12),
            outcome,
        }
    }

    /// Job "job-1": task `a` failed once (retryable), lost its agent, then succeeded on the
    /// third attempt; `b` is ready for a retry at 500.
    fn record() -> JobRecord {
        let mut job = JobRecord::new("job-1", 0, spec(), 100);
        let failure = AttemptOutcome::Failed {
            error: "boom".into(),
            retryable: true,
        };
        let a = job.tasks.get_mut("a").expect("a");
        a.state = TaskState::Succeeded;
        a.attempt = 3;
        a.failed_attempts = 2;
        a.agent = Some("agent-3".into());
        a.output = Some(b"out".to_vec());
        a.attempts = vec![
            attempt_record(1, Some(failure)),
            attempt_record(2, Some(AttemptOutcome::AgentLost)),
            attempt_record(3, Some(AttemptOutcome::Succeeded)),
        ];
        let b = job.tasks.get_mut("b").expect("b");
        b.state = TaskState::Ready;
        b.attempt = 1;
        b.not_before_ms = 500;
        let meta = Meta {
            index: 7,
            now_ms: 100,
        };
        job.push_event(meta, JobEventKind::JobSubmitted);
        job.push_event(
            meta,
            JobEventKind::SubtasksCompleted {
                parent_task_id: "a".into(),
            },
        );
        job
    }

    #[test]
    fn a_job_converts_with_counts_and_spec() {
        let record = record();
        let converted = job(&record, true);
        assert_eq!(converted.job_id, "job-1");
        assert_eq!(converted.last_sequence, 2);
        assert_eq!((converted.created_at_ms, converted.started_at_ms), (100, 0));
        let counts: Vec<(i32, u32)> = converted
            .task_counts
            .iter()
            .map(|c| (c.state, c.count))
            .collect();
        let expected = vec![
            (pb::TaskState::Ready as i32, 1),
            (pb::TaskState::Succeeded as i32, 1),
        ];
        assert_eq!(counts, expected);
        let spec = converted.spec.expect("spec");
        let goal = spec.goal.expect("goal");
        assert_eq!(
            (goal.criterion, goal.goal_task_id.as_str()),
            (pb::GoalCriterion::GoalTask as i32, "b")
        );
        assert_eq!(spec.tasks[1].depends_on[0].task_id, "a");
        assert_eq!(
            spec.tasks[1].auction,
            Some(pb::AuctionSettings {
                bid_window_ms: 500,
                fallback_strategy: pb::AssignmentStrategy::LeastLoaded as i32,
                max_rounds: 3,
            })
        );
        assert!(job(&record, false).spec.is_none());
    }

    #[test]
    fn the_spec_round_trips_through_the_submit_conversion() {
        let mut original = spec();
        let base = original.tasks[0].clone();
        let mut map = base.clone();
        map.fan_out = Some(FanOut {
            source: FanOutSource::FromDependency {
                task_id: "a".into(),
                json_pointer: "/items".into(),
            },
            parallelism: 4,
        });
        map.compensation_task_id = "undo".into();
        let mut nested = base.clone();
        nested.child_job = Some(Box::new(JobSpec {
            name: "child".into(),
            goal: Goal {
                description: String::new(),
                criterion: Criterion::AllTasks,
            },
            tasks: vec![base.clone()],
            labels: BTreeMap::new(),
            priority: 0,
            timeout_ms: 0,
        }));
        let mut literal = base.clone();
        literal.fan_out = Some(FanOut {
            source: FanOutSource::Items(vec![serde_bytes::ByteBuf::from(b"x".to_vec())]),
            parallelism: 0,
        });
        for (id, mut task) in [("map", map), ("nested", nested), ("literal", literal)] {
            task.id = id.into();
            original.tasks.push(task);
        }
        let back =
            super::super::convert_job::job_spec(job_spec(&original), "spec").expect("converts");
        assert_eq!(back, original);
    }

    #[test]
    fn a_task_converts_with_attempts_and_errors() {
        let record = record();
        let (spec, a) = (record.task_spec("a").expect("spec"), &record.tasks["a"]);
        let converted = task("job-1", "a", spec, a, false);
        assert_eq!((converted.attempt, converted.failed_attempts), (3, 2));
        assert_eq!(
            (converted.agent_id.as_str(), converted.output.as_slice()),
            ("agent-3", &b"out"[..])
        );
        assert_eq!(converted.error_message, "boom");
        assert_eq!(converted.next_attempt_at_ms, 0);
        let outcomes: Vec<(i32, &str, bool)> = converted
            .attempts
            .iter()
            .map(|a| (a.outcome, a.error_message.as_str(), a.retryable))
            .collect();
        let expected = vec![
            (pb::AttemptOutcome::Failed as i32, "boom", true),
            (
                pb::AttemptOutcome::AgentLost as i32,
                "agent 'agent-2' lost",
                false,
            ),
            (pb::AttemptOutcome::Succeeded as i32, "", false),
        ];
        assert_eq!(outcomes, expected);
        let b = task(
            "job-1",
            "b",
            record.task_spec("b").expect("spec"),
            &record.tasks["b"],
            true,
        );
        assert_eq!(
            (b.next_attempt_at_ms, b.state),
            (500, pb::TaskState::Ready as i32)
        );
        assert_eq!(b.spec.map(|s| s.task_id), Some("b".to_owned()));
    }

    #[test]
    fn states_map_one_to_one() {
        let jobs = [
            (JobState::Pending, pb::JobState::Pending),
            (JobState::Running, pb::JobState::Running),
            (JobState::Succeeded, pb::JobState::Succeeded),
            (JobState::Failed, pb::JobState::Failed),
            (JobState::Cancelled, pb::JobState::Cancelled),
        ];
        for (domain, proto) in jobs {
            assert_eq!(job_state(domain), proto);
        }
        let tasks = [
            (TaskState::Pending, pb::TaskState::Pending),
            (TaskState::Ready, pb::TaskState::Ready),
            (TaskState::Assigned, pb::TaskState::Assigned),
            (TaskState::Running, pb::TaskState::Running),
            (TaskState::Succeeded, pb::TaskState::Succeeded),
            (TaskState::Failed, pb::TaskState::Failed),
            (TaskState::TimedOut, pb::TaskState::TimedOut),
            (TaskState::Cancelled, pb::TaskState::Cancelled),
            (TaskState::Skipped, pb::TaskState::Skipped),
            (TaskState::DeadLettered, pb::TaskState::DeadLettered),
        ];
        for (domain, proto) in tasks {
            assert_eq!(task_state(domain), proto);
        }
    }

    #[test]
    fn events_convert_with_details_from_the_records() {
        let job = record();
        let task_id = || "a".to_owned();
        let cases: Vec<(JobEventKind, Option<Kind>)> = vec![
            (
                JobEventKind::JobSubmitted,
                Some(Kind::JobSubmitted(pb::job_event::JobSubmitted {
                    name: "j".into(),
                    task_count: 2,
                    parent_job_id: String::new(),
                })),
            ),
            (
                JobEventKind::TaskAssigned {
                    task_id: task_id(),
                    agent: "agent-1".into(),
                    attempt: 1,
                },
                Some(Kind::TaskAssigned(pb::job_event::TaskAssigned {
                    task_id: task_id(),
                    attempt: 1,
                    agent_id: "agent-1".into(),
                    strategy: pb::AssignmentStrategy::Auction as i32,
                })),
            ),
            (
                JobEventKind::TaskStarted {
                    task_id: task_id(),
                    attempt: 3,
                },
                Some(Kind::TaskStarted(pb::job_event::TaskStarted {
                    task_id: task_id(),
                    attempt: 3,
                    agent_id: "agent-3".into(),
                })),
            ),
            (
                JobEventKind::TaskSucceeded {
                    task_id: task_id(),
                    attempt: 3,
                },
                Some(Kind::TaskSucceeded(pb::job_event::TaskSucceeded {
                    task_id: task_id(),
                    attempt: 3,
                    agent_id: "agent-3".into(),
                    output_size_bytes: 3,
                })),
            ),
            (
                JobEventKind::TaskFailed {
                    task_id: task_id(),
                    attempt: 1,
                    error: "boom".into(),
                    will_retry: true,
                    retry_at_ms: Some(5),
                },
                Some(Kind::TaskFailed(pb::job_event::TaskFailed {
                    task_id: task_id(),
                    attempt: 1,
                    agent_id: "agent-1".into(),
                    error_message: "boom".into(),
                    retryable: true,
                })),
            ),
            (
                JobEventKind::TaskFailed {
                    task_id: task_id(),
                    attempt: 2,
                    error: "lost".into(),
                    will_retry: true,
                    retry_at_ms: Some(5),
                },
                Some(Kind::TaskAgentLost(pb::job_event::TaskAgentLost {
                    task_id: task_id(),
                    attempt: 2,
                    agent_id: "agent-2".into(),
                })),
            ),
            (
                JobEventKind::TaskSkipped {
                    task_id: "b".into(),
                    dependency: "a".into(),
                },
                Some(Kind::TaskSkipped(pb::job_event::TaskSkipped {
                    task_id: "b".into(),
                    reason: "dependency 'a' did not succeed".into(),
                })),
            ),
            (
                JobEventKind::TaskDeadLettered { task_id: task_id() },
                Some(Kind::TaskDeadLettered(pb::job_event::TaskDeadLettered {
                    task_id: task_id(),
                    attempts: 3,
                    last_error: "boom".into(),
                })),
            ),
            (
                JobEventKind::StaleResultRejected {
                    task_id: task_id(),
                    attempt: 1,
                    agent: "agent-1".into(),
                },
                Some(Kind::StaleResultRejected(
                    pb::job_event::StaleResultRejected {
                        task_id: task_id(),
                        attempt: 1,
                        current_attempt: 3,
                        agent_id: "agent-1".into(),
                    },
                )),
            ),
            (
                JobEventKind::JobCompleted {
                    state: JobState::Cancelled,
                },
                Some(Kind::JobCompleted(pb::job_event::JobCompleted {
                    state: pb::JobState::Cancelled as i32,
                    reason: String::new(),
                })),
            ),
            (
                JobEventKind::SubtasksCompleted {
                    parent_task_id: task_id(),
                },
                Some(Kind::SubtasksCompleted(pb::job_event::SubtasksCompleted {
                    parent_task_id: task_id(),
                })),
            ),
            (
                JobEventKind::TaskRetryScheduled {
                    task_id: task_id(),
                    failed_attempts: 2,
                    backoff_ms: 400,
                    retry_at_ms: 1_400,
                },
                Some(Kind::TaskRetryScheduled(
                    pb::job_event::TaskRetryScheduled {
                        task_id: task_id(),
                        failed_attempts: 2,
                        backoff_ms: 400,
                        retry_at_ms: 1_400,
                    },
                )),
            ),
        ];
        for (kind, expected) in cases {
            let event = JobEvent {
                sequence: 4,
                at_ms: 50,
                log_index: 9,
                kind: kind.clone(),
            };
            let converted = job_event(&job, &event);
            assert_eq!(
                (
                    converted.sequence,
                    converted.occurred_at_ms,
                    converted.log_index
                ),
                (4, 50, 9)
            );
            assert_eq!(converted.kind, expected, "{kind:?}");
        }
    }
}
