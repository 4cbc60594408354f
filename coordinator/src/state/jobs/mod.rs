//! [`JobTable`]: every job, its tasks and the indexes the leader's scheduler reads, changed by
//! the job commands.
//!
//! ```text
//!   SubmitJob ─► validate, capabilities some live agent offers ─► JobRecord (roots Ready)
//!   AssignTask ─► check task (Ready, backoff, attempt) + agent (connected, caps, slot)
//!   StartTask / CompleteTask / AddSubtasks ─► fence (current attempt, its agent)
//!        │ a repeat of what was applied (late start, re-sent result): Done, nothing changes
//!        │ stale: refused, recorded as StaleResultRejected (Applied::StaleReport)
//!        ▼
//!   Transition ─► settle ─► dependents, waiting parents, job criterion ─► Effects
//! ```
//! Every handler validates before it changes anything, so a rejected command changes nothing.
//! Pure: no I/O, clock or randomness.

mod children;
mod compensation;
mod dag;
mod events;
mod fan_out;
mod index;
mod job;
mod lifecycle;
mod queries;
mod spec;
mod task;
mod validate;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use children::child_job_id;
pub use events::{JobEvent, JobEventKind};
pub use index::{ReadyKey, TaskIndex};
pub use job::CompensationPlan;
pub use job::{JobRecord, JobState};
pub use queries::ReadyTask;
pub use spec::{
    Criterion, Fallback, FanOut, FanOutSource, Goal, JobSpec, OutputCondition, RetryPolicy,
    Strategy, TaskSpec, ATTEMPTS_MAX, CHILD_JOB_DEPTH_MAX, DEFAULT_TASK_TIMEOUT_MS, FAN_OUT_MAX,
    PAYLOAD_BYTES_MAX, TASKS_MAX, TASK_RECORDS_MAX,
};
pub use task::{
    instance_id, AttemptOutcome, AttemptRecord, AttemptRef, FanOutProgress, TaskKey, TaskRecord,
    TaskRole, TaskState,
};
pub use validate::{
    unsatisfiable, unsatisfiable_tasks, validate, validate_subtasks, why_unsatisfiable, Existing,
    SpecError,
};

use children::JobLink;
use lifecycle::Transition;

use super::effects::{AttemptEnd, Effects};
use super::{placement, AgentRegistry, Applied, Meta, Outcome, Rejection, TaskOutcome};
use crate::scheduler;

/// An agent's report on one attempt: what fencing checks.
#[derive(Debug, Clone, Copy)]
pub struct Report<'a> {
    /// The job.
    pub job_id: &'a str,
    /// The task.
    pub task_id: &'a str,
    /// The attempt reported on.
    pub attempt: u32,
    /// The reporting agent.
    pub agent_id: &'a str,
}

/// All jobs by id, with scheduling indexes.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobTable {
    jobs: BTreeMap<String, JobRecord>,
    index: TaskIndex,
    next_seq: u64,
    /// Links between jobs the current command still has to follow; empty between commands.
    #[serde(skip)]
    links: Vec<JobLink>,
}

impl JobTable {
    /// Accepts a job: validates it, stores it and readies its root tasks.
    pub fn submit(
        &mut self,
        job_id: &str,
        spec: &JobSpec,
        agents: &mut AgentRegistry,
        meta: Meta,
    ) -> Outcome {
        validate(spec).map_err(Rejection::InvalidSpec)?;
        if let Some(error) = unsatisfiable(spec, agents) {
            return Err(Rejection::InvalidSpec(error));
        }
        if self.jobs.contains_key(job_id) {
            return Err(Rejection::JobExists {
                job_id: job_id.to_owned(),
            });
        }
        let job = JobRecord::new(job_id, self.next_seq, spec.clone(), meta.now_ms);
        self.next_seq += 1;
        let mut effects = Effects::default();
        self.insert_submitted(job, agents, &mut effects, meta);
        self.follow_links(agents, &mut effects, meta);
        let ready = self.index_ready_in(job_id);
        Ok(Applied::JobSubmitted {
            job_id: job_id.to_owned(),
            ready,
        })
    }

    /// Stores a new job (submitted, or a child job starting) and starts its root tasks.
    fn insert_submitted(
        &mut self,
        mut job: JobRecord,
        agents: &mut AgentRegistry,
        effects: &mut Effects,
        meta: Meta,
    ) {
        job.push_event(meta, events::JobEventKind::JobSubmitted);
        let ids: Vec<String> = job.spec.tasks.iter().map(|task| task.id.clone()).collect();
        self.index.insert_job(&job);
        let job_id = job.id.clone();
        self.jobs.insert(job_id.clone(), job);
        if let Ok(mut transition) = self.transition(&job_id, agents, effects, meta) {
            for id in &ids {
                transition.evaluate_pending(id);
            }
            transition.settle();
        }
    }

    /// Assigns attempt `attempt` of a ready task to `agent_id`.
    pub fn assign(
        &mut self,
        report: Report<'_>,
        agents: &mut AgentRegistry,
        meta: Meta,
    ) -> Outcome {
        let (job, task) = self.open_task(report.job_id, report.task_id)?;
        check_assignable_task(report, task, meta.now_ms)?;
        let spec = job.task_spec(report.task_id);
        let capabilities = spec.map(|spec| &spec.required_capabilities);
        agents.check_assignable(report.agent_id, capabilities.unwrap_or(&Default::default()))?;
        if let (Some(spec), Some(agent)) = (spec, agents.get(report.agent_id)) {
            let needs = placement::needs_of(report.job_id, spec);
            let candidate = placement::candidate_of(self, agent, meta.now_ms);
            scheduler::eligible(&needs, &candidate).map_err(|reason| Rejection::Ineligible {
                agent_id: report.agent_id.to_owned(),
                reason: reason.to_string(),
            })?;
        }
        let mut effects = Effects::default();
        let mut transition = self.transition(report.job_id, agents, &mut effects, meta)?;
        let deadline_at_ms = transition.assign(report.task_id, report.attempt, report.agent_id);
        Ok(Applied::TaskAssigned {
            task: report_attempt(report),
            agent_id: report.agent_id.to_owned(),
            deadline_at_ms,
        })
    }

    /// The agent started its attempt (fenced). A repeated start, or one arriving after the
    /// attempt already ended, changes nothing.
    pub fn start(&mut self, report: Report<'_>, agents: &mut AgentRegistry, meta: Meta) -> Outcome {
        if self
            .reported_attempt(report)
            .is_some_and(|record| record.started_at_ms.is_some() || record.outcome.is_some())
        {
            return Ok(Applied::Done);
        }
        if let Some(stale) = self.fence(report, meta)? {
            return Ok(stale);
        }
        if self.task_state(report.job_id, report.task_id) == Some(TaskState::Running) {
            return Ok(Applied::Done);
        }
        let mut effects = Effects::default();
        self.transition(report.job_id, agents, &mut effects, meta)?
            .start(report.task_id);
        Ok(Applied::Done)
    }

    /// The agent's result for its attempt (fenced): success, or a failure that may be retried.
    pub fn complete(
        &mut self,
        report: Report<'_>,
        outcome: &TaskOutcome,
        agents: &mut AgentRegistry,
        meta: Meta,
    ) -> Outcome {
        let repeated = self.reported_attempt(report).is_some_and(|record| {
            matches!(
                (&record.outcome, outcome),
                (
                    Some(AttemptOutcome::Succeeded),
                    TaskOutcome::Succeeded { .. }
                ) | (
                    Some(AttemptOutcome::Failed { .. }),
                    TaskOutcome::Failed { .. }
                )
            )
        });
        if repeated {
            // The agent re-sent a result whose acknowledgement it lost: counted once already.
            return Ok(Applied::Done);
        }
        if let Some(stale) = self.fence(report, meta)? {
            return Ok(stale);
        }
        check_output(report, outcome)?;
        let mut effects = Effects::default();
        let mut transition = self.transition(report.job_id, agents, &mut effects, meta)?;
        let end = match outcome {
            TaskOutcome::Succeeded { output } => transition.succeed(report.task_id, output.clone()),
            TaskOutcome::Failed { error, retryable } => {
                let failure = AttemptOutcome::Failed {
                    error: error.clone(),
                    retryable: *retryable,
                };
                transition.fail(report.task_id, failure)
            }
        };
        transition.settle();
        self.follow_links(agents, &mut effects, meta);
        Ok(Applied::AttemptEnded { end, effects })
    }

    /// An in-progress attempt passed its deadline.
    pub fn time_out(
        &mut self,
        report: Report<'_>,
        agents: &mut AgentRegistry,
        meta: Meta,
    ) -> Outcome {
        let (_, task) = self.open_task(report.job_id, report.task_id)?;
        check_timed_out(report, task, meta.now_ms)?;
        let mut effects = Effects::default();
        let mut transition = self.transition(report.job_id, agents, &mut effects, meta)?;
        let end = transition.fail(report.task_id, AttemptOutcome::TimedOut);
        transition.settle();
        self.follow_links(agents, &mut effects, meta);
        Ok(Applied::AttemptEnded { end, effects })
    }

    /// Ends a ready task that no live agent could take, if that still holds on this state.
    pub fn mark_unsatisfiable(
        &mut self,
        job_id: &str,
        task_id: &str,
        agents: &mut AgentRegistry,
        meta: Meta,
    ) -> Outcome {
        let (job, task) = self.open_task(job_id, task_id)?;
        if task.state != TaskState::Ready {
            return Err(Rejection::TaskNotReady {
                job_id: job_id.to_owned(),
                task_id: task_id.to_owned(),
                state: task.state,
            });
        }
        let spec = job.task_spec(task_id).ok_or_else(|| unknown_job(job_id))?;
        let Some(reason) = why_unsatisfiable(spec, agents) else {
            return Err(Rejection::StillSatisfiable {
                job_id: job_id.to_owned(),
                task_id: task_id.to_owned(),
            });
        };
        let mut effects = Effects::default();
        let mut transition = self.transition(job_id, agents, &mut effects, meta)?;
        transition.unsatisfiable(task_id, &reason);
        transition.settle();
        self.follow_links(agents, &mut effects, meta);
        Ok(Applied::JobCancelled(effects))
    }

    /// Cancels an unfinished job.
    pub fn cancel(
        &mut self,
        job_id: &str,
        reason: &str,
        agents: &mut AgentRegistry,
        meta: Meta,
    ) -> Outcome {
        self.open_job(job_id)?;
        let mut effects = Effects::default();
        self.transition(job_id, agents, &mut effects, meta)?
            .cancel_job(reason);
        self.follow_links(agents, &mut effects, meta);
        Ok(Applied::JobCancelled(effects))
    }

    /// An unfinished job passed its deadline: it fails, its open tasks are cancelled.
    pub fn time_out_job(
        &mut self,
        job_id: &str,
        agents: &mut AgentRegistry,
        meta: Meta,
    ) -> Outcome {
        let job = self.open_job(job_id)?;
        let problem = match job.deadline_at_ms() {
            _ if job.state == JobState::Compensating => Some("is compensating".to_owned()),
            None => Some("has no timeout".to_owned()),
            Some(deadline) if meta.now_ms < deadline => {
                Some(format!("times out at {deadline}, not before"))
            }
            Some(_) => None,
        };
        if let Some(problem) = problem {
            let job_id = job_id.to_owned();
            return Err(Rejection::JobDeadlineNotReached { job_id, problem });
        }
        let timeout_ms = job.spec.timeout_ms;
        let mut effects = Effects::default();
        self.transition(job_id, agents, &mut effects, meta)?
            .time_out_job(timeout_ms);
        self.follow_links(agents, &mut effects, meta);
        Ok(Applied::JobCancelled(effects))
    }

    /// A running attempt adds subtasks (fenced, validated against the job's tasks).
    pub fn add_subtasks(
        &mut self,
        report: Report<'_>,
        subtasks: &[TaskSpec],
        wait: bool,
        agents: &mut AgentRegistry,
        meta: Meta,
    ) -> Outcome {
        if let Some(stale) = self.fence(report, meta)? {
            return Ok(stale);
        }
        let job = self.open_job(report.job_id)?;
        let existing = Existing {
            tasks: job.spec.tasks.len(),
            records: job.tasks.len(),
            depth: self.depth_of(job),
            contains: &|id| job.tasks.contains_key(id),
            is_fan_out: &|id| {
                let record = job.tasks.get(id);
                matches!(record.map(|r| &r.role), Some(TaskRole::FanOut(_)))
            },
        };
        validate_subtasks(subtasks, &existing).map_err(Rejection::InvalidSpec)?;
        if let Some(error) = unsatisfiable_tasks("subtasks", subtasks, agents) {
            return Err(Rejection::InvalidSpec(error));
        }
        if wait {
            check_no_wait_cycle(job, report.task_id, subtasks).map_err(Rejection::InvalidSpec)?;
        }
        check_no_compensation_dependency(job, subtasks).map_err(Rejection::InvalidSpec)?;
        let mut effects = Effects::default();
        let mut transition = self.transition(report.job_id, agents, &mut effects, meta)?;
        let (ids, waiting) = transition.add_subtasks(report.task_id, subtasks.to_vec(), wait);
        transition.settle();
        self.follow_links(agents, &mut effects, meta);
        let job_id = report.job_id.to_owned();
        Ok(Applied::SubtasksAdded {
            job_id,
            ids,
            waiting,
            effects,
        })
    }

    /// Ends the attempts a lost agent held (each counts as a failed attempt and may be
    /// retried). `tasks` were already released from the agent.
    pub fn lose_agent(
        &mut self,
        agent_id: &str,
        tasks: &std::collections::BTreeSet<TaskKey>,
        agents: &mut AgentRegistry,
        meta: Meta,
    ) -> (Vec<AttemptEnd>, Effects) {
        let mut effects = Effects::default();
        let mut ended = Vec::new();
        for key in tasks {
            let held = self.jobs.get(&key.job_id).is_some_and(|job| {
                let task = job.tasks.get(&key.task_id);
                !job.state.is_terminal()
                    && task.is_some_and(|task| {
                        task.state.is_active() && task.agent.as_deref() == Some(agent_id)
                    })
            });
            if !held {
                continue;
            }
            if let Ok(mut transition) = self.transition(&key.job_id, agents, &mut effects, meta) {
                ended.push(transition.fail(&key.task_id, AttemptOutcome::AgentLost));
                transition.settle();
            }
        }
        self.follow_links(agents, &mut effects, meta);
        (ended, effects)
    }

    /// The record of the attempt `report` is about, when that agent held it (even in a job
    /// that has since finished).
    fn reported_attempt(&self, report: Report<'_>) -> Option<&AttemptRecord> {
        let task = self.jobs.get(report.job_id)?.tasks.get(report.task_id)?;
        task.attempts
            .iter()
            .rev()
            .find(|record| record.attempt == report.attempt && record.agent == report.agent_id)
    }

    /// Checks an agent's report against the task's current attempt. `Ok(Some(_))` is a stale
    /// report, already recorded in the job's history.
    fn fence(&mut self, report: Report<'_>, meta: Meta) -> Result<Option<Applied>, Rejection> {
        let (_, task) = self.open_task(report.job_id, report.task_id)?;
        if task.holds(report.attempt, report.agent_id) {
            return Ok(None);
        }
        let current = format!(
            "current attempt {} by agent '{}', {:?}",
            task.attempt,
            task.agent.as_deref().unwrap_or(""),
            task.state
        );
        let rejection = Rejection::StaleAttempt {
            job_id: report.job_id.to_owned(),
            task_id: report.task_id.to_owned(),
            attempt: report.attempt,
            agent_id: report.agent_id.to_owned(),
            current,
        };
        let kind = events::JobEventKind::StaleResultRejected {
            task_id: report.task_id.to_owned(),
            attempt: report.attempt,
            agent: report.agent_id.to_owned(),
        };
        let job = self
            .jobs
            .get_mut(report.job_id)
            .ok_or_else(|| unknown_job(report.job_id))?;
        let sequence = job.push_event(meta, kind);
        Ok(Some(Applied::StaleReport {
            rejection,
            sequence,
        }))
    }

    /// How many child jobs deep `job` is: 0 for a submitted job.
    fn depth_of(&self, job: &JobRecord) -> usize {
        let mut depth = 0;
        let mut parent = job.parent.as_ref();
        while let Some(key) = parent {
            depth += 1;
            parent = self.jobs.get(&key.job_id).and_then(|j| j.parent.as_ref());
        }
        depth
    }

    /// An unfinished job.
    fn open_job(&self, job_id: &str) -> Result<&JobRecord, Rejection> {
        let job = self.jobs.get(job_id).ok_or_else(|| unknown_job(job_id))?;
        if job.state.is_terminal() {
            return Err(Rejection::JobFinished {
                job_id: job_id.to_owned(),
                state: job.state,
            });
        }
        Ok(job)
    }

    /// A task of an unfinished job.
    fn open_task(
        &self,
        job_id: &str,
        task_id: &str,
    ) -> Result<(&JobRecord, &TaskRecord), Rejection> {
        let job = self.open_job(job_id)?;
        let task = job
            .tasks
            .get(task_id)
            .ok_or_else(|| Rejection::UnknownTask {
                job_id: job_id.to_owned(),
                task_id: task_id.to_owned(),
            })?;
        Ok((job, task))
    }

    fn transition<'a>(
        &'a mut self,
        job_id: &str,
        agents: &'a mut AgentRegistry,
        effects: &'a mut Effects,
        meta: Meta,
    ) -> Result<Transition<'a>, Rejection> {
        let job = self
            .jobs
            .get_mut(job_id)
            .ok_or_else(|| unknown_job(job_id))?;
        Ok(Transition::new(
            job,
            &mut self.index,
            agents,
            effects,
            &mut self.links,
            meta,
        ))
    }

    fn index_ready_in(&self, job_id: &str) -> u32 {
        let job = self.jobs.get(job_id);
        let tasks = job.map(|job| job.tasks.values());
        tasks
            .into_iter()
            .flatten()
            .filter(|task| task.state == TaskState::Ready)
            .count() as u32
    }
}

fn check_assignable_task(
    report: Report<'_>,
    task: &TaskRecord,
    now_ms: u64,
) -> Result<(), Rejection> {
    let (job_id, task_id) = (report.job_id.to_owned(), report.task_id.to_owned());
    if task.state != TaskState::Ready {
        return Err(Rejection::TaskNotReady {
            job_id,
            task_id,
            state: task.state,
        });
    }
    if now_ms < task.not_before_ms {
        let not_before_ms = task.not_before_ms;
        return Err(Rejection::BackoffPending {
            job_id,
            task_id,
            not_before_ms,
        });
    }
    let expected = task.attempt + 1;
    if report.attempt != expected {
        let attempt = report.attempt;
        return Err(Rejection::WrongAttempt {
            job_id,
            task_id,
            attempt,
            expected,
        });
    }
    Ok(())
}

fn check_timed_out(report: Report<'_>, task: &TaskRecord, now_ms: u64) -> Result<(), Rejection> {
    let (job_id, task_id) = (report.job_id.to_owned(), report.task_id.to_owned());
    if !task.state.is_active() || task.attempt != report.attempt {
        let current = format!("current attempt {}, {:?}", task.attempt, task.state);
        let attempt = report.attempt;
        return Err(Rejection::AttemptNotInProgress {
            job_id,
            task_id,
            attempt,
            current,
        });
    }
    if task.is_waiting() {
        return Err(Rejection::WaitingForSubtasks { job_id, task_id });
    }
    match task.deadline_at_ms {
        Some(deadline_at_ms) if now_ms < deadline_at_ms => Err(Rejection::DeadlineNotReached {
            job_id,
            task_id,
            deadline_at_ms,
        }),
        Some(_) => Ok(()),
        // Fan-outs and child jobs run in place, without an attempt or its deadline.
        None => Err(Rejection::AttemptNotInProgress {
            job_id,
            task_id,
            attempt: report.attempt,
            current: "runs in place (a fan-out or child job), without an attempt".to_owned(),
        }),
    }
}

fn check_output(report: Report<'_>, outcome: &TaskOutcome) -> Result<(), Rejection> {
    let TaskOutcome::Succeeded { output } = outcome else {
        return Ok(());
    };
    if output.len() <= PAYLOAD_BYTES_MAX {
        return Ok(());
    }
    Err(Rejection::OutputTooLarge {
        job_id: report.job_id.to_owned(),
        task_id: report.task_id.to_owned(),
        bytes: output.len() as u64,
        limit: PAYLOAD_BYTES_MAX as u64,
    })
}

/// With `wait`, a subtask depending on the parent (or on a task that depends on it) could never
/// run: the parent waits for it while it waits for the parent.
fn check_no_wait_cycle(
    job: &JobRecord,
    parent: &str,
    subtasks: &[TaskSpec],
) -> Result<(), SpecError> {
    let mut blocked = downstream_of(job, parent);
    // An instance waiting blocks its fan-out, everything after it and its other instances.
    let fan_out = match job.tasks.get(parent).map(|task| (&task.role, &task.parent)) {
        Some((TaskRole::Instance { .. }, Some(fan_out))) => Some(fan_out.as_str()),
        _ => None,
    };
    if let Some(fan_out) = fan_out {
        blocked.extend(downstream_of(job, fan_out));
    }
    let instance_of_fan_out = |dep: &str| {
        fan_out.is_some_and(|f| {
            dep.strip_prefix(f)
                .is_some_and(|rest| rest.starts_with('['))
        })
    };
    for (i, task) in subtasks.iter().enumerate() {
        if let Some((j, dep)) = task
            .depends_on
            .iter()
            .enumerate()
            .find(|(_, dep)| blocked.contains(dep.as_str()) || instance_of_fan_out(dep))
        {
            let problem =
                format!("'{dep}' waits for parent '{parent}', which would wait for this subtask");
            return Err(SpecError::new(
                format!("subtasks[{i}].depends_on[{j}]"),
                problem,
            ));
        }
    }
    Ok(())
}

/// A compensation task runs only while its job compensates: nothing may wait for it.
fn check_no_compensation_dependency(
    job: &JobRecord,
    subtasks: &[TaskSpec],
) -> Result<(), SpecError> {
    for (i, task) in subtasks.iter().enumerate() {
        for (j, dep) in task.depends_on.iter().enumerate() {
            let role = job.tasks.get(dep).map(|record| &record.role);
            if matches!(role, Some(TaskRole::Compensation { .. })) {
                let problem = format!("'{dep}' is a compensation task, which runs only on failure");
                return Err(SpecError::new(
                    format!("subtasks[{i}].depends_on[{j}]"),
                    problem,
                ));
            }
        }
    }
    Ok(())
}

/// `task_id` and every task that depends on it, directly or not.
fn downstream_of<'a>(job: &'a JobRecord, task_id: &'a str) -> std::collections::BTreeSet<&'a str> {
    let mut seen = std::collections::BTreeSet::from([task_id]);
    let mut stack = vec![task_id];
    while let Some(current) = stack.pop() {
        for dependent in job.dependents_of(current) {
            if seen.insert(dependent.as_str()) {
                stack.push(dependent.as_str());
            }
        }
    }
    seen
}

fn report_attempt(report: Report<'_>) -> AttemptRef {
    AttemptRef {
        job_id: report.job_id.to_owned(),
        task_id: report.task_id.to_owned(),
        attempt: report.attempt,
    }
}

fn unknown_job(job_id: &str) -> Rejection {
    Rejection::UnknownJob {
        job_id: job_id.to_owned(),
    }
}

#[cfg(test)]
mod tests;
