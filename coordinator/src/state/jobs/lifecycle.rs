//! [`Transition`]: every change to one job's tasks, keeping the task index, the job's counters,
//! its events, the agents' held attempts and the runtime's [`Effects`] in step.
//!
//! ```text
//!   Pending ──deps succeeded──► Ready ──assign──► Assigned ──start──► Running
//!      │                          ▲                  │                  │
//!      └─dep can't succeed─► Skipped     retry (backoff)◄──fail/timeout/lost
//!                                                    │                  │
//!              Succeeded / Failed / TimedOut / DeadLettered ◄───────────┘
//! ```
//! A task reaching a terminal state is queued; [`Transition::settle`] then readies or skips its
//! dependents, releases a waiting parent, and finally applies the job's success criterion
//! (iteratively, so long chains never recurse). Callers validate first: nothing here fails.
//! Pure: no I/O, clock or randomness.

use super::children::JobLink;
use super::task::TaskRole;
use super::{
    AttemptOutcome, AttemptRecord, AttemptRef, Criterion, JobEventKind, JobRecord, JobState,
    TaskIndex, TaskKey, TaskRecord, TaskState,
};
use crate::state::effects::{AttemptEnd, CancelAttempt, Effects, HeldAttempt, JobFinished};
use crate::state::{AgentRegistry, Meta};

/// One command's worth of changes to one job.
pub struct Transition<'a> {
    pub(super) job: &'a mut JobRecord,
    pub(super) index: &'a mut TaskIndex,
    agents: &'a mut AgentRegistry,
    effects: &'a mut Effects,
    /// Work for other jobs (child jobs to start, cancel or report on).
    pub(super) links: &'a mut Vec<JobLink>,
    pub(super) meta: Meta,
    pub(super) newly_terminal: Vec<String>,
}

impl<'a> Transition<'a> {
    /// Starts changing `job`.
    pub fn new(
        job: &'a mut JobRecord,
        index: &'a mut TaskIndex,
        agents: &'a mut AgentRegistry,
        effects: &'a mut Effects,
        links: &'a mut Vec<JobLink>,
        meta: Meta,
    ) -> Self {
        Self {
            job,
            index,
            agents,
            effects,
            links,
            meta,
            newly_terminal: Vec::new(),
        }
    }

    /// Readies (or skips) a `Pending` task whose dependencies allow it.
    pub fn evaluate_pending(&mut self, task_id: &str) {
        let Some(task) = self.job.tasks.get(task_id) else {
            return;
        };
        // Compensation tasks wait for compensation; instances for their fan-out's limit.
        let gated = matches!(
            task.role,
            TaskRole::Compensation { .. } | TaskRole::Instance { .. }
        );
        if task.state != TaskState::Pending || gated {
            return;
        }
        let Some(spec) = self.job.task_spec(task_id) else {
            return;
        };
        let (mut waiting, mut taken) = (false, false);
        for dep in &spec.depends_on {
            match self.job.task_state(dep) {
                Some(TaskState::Succeeded) => {
                    let output = self.job.tasks.get(dep).and_then(|t| t.output.as_deref());
                    if let Some(condition) = spec.conditions.get(dep) {
                        if !condition.holds(output.unwrap_or_default()) {
                            let reason = format!(
                                "the output of '{dep}' at '{}' is not {}",
                                condition.json_pointer, condition.equals_json
                            );
                            return self.bypass(task_id, reason);
                        }
                    }
                    taken = true;
                }
                Some(TaskState::Bypassed) => {}
                Some(state) if state.is_unsuccessful() => {
                    let dep = dep.clone();
                    return self.skip(task_id, dep);
                }
                _ => waiting = true,
            }
        }
        match (waiting, taken || spec.depends_on.is_empty()) {
            (true, _) => {}
            (false, true) => self.activate(task_id),
            (false, false) => self.bypass(task_id, "every dependency was bypassed".into()),
        }
    }

    /// Starts a task whose dependencies allow it: an agent task becomes ready, a fan-out
    /// expands, a child job starts.
    pub(super) fn activate(&mut self, task_id: &str) {
        match self.job.tasks.get(task_id).map(|task| &task.role) {
            Some(TaskRole::FanOut(_)) => self.expand(task_id),
            Some(TaskRole::ChildJob { .. }) => self.start_child_job(task_id),
            _ => self.make_ready(task_id),
        }
    }

    /// A task the state machine runs itself (fan-out, child job) starts running.
    pub(super) fn run_in_place(&mut self, task_id: &str) {
        let now_ms = self.meta.now_ms;
        self.update(task_id, |task| {
            task.state = TaskState::Running;
            task.ready_at_ms = Some(now_ms);
        });
        self.mark_started();
    }

    /// A task the state machine runs itself ends: with an output, or failed for a reason.
    pub(super) fn end_in_place(&mut self, task_id: &str, result: Result<Option<Vec<u8>>, String>) {
        let id = task_id.to_owned();
        match result {
            Ok(output) => {
                self.update(task_id, |task| {
                    task.state = TaskState::Succeeded;
                    task.output = output;
                });
                self.event(JobEventKind::TaskSucceeded {
                    task_id: id,
                    attempt: 0,
                });
            }
            Err(error) => {
                self.update(task_id, |task| {
                    task.state = TaskState::Failed;
                    task.error = Some(error.clone());
                });
                self.event(JobEventKind::TaskFailed {
                    task_id: id,
                    attempt: 0,
                    error,
                    will_retry: false,
                    retry_at_ms: None,
                });
            }
        }
        self.newly_terminal.push(task_id.to_owned());
    }

    /// The job counts as started once any of its tasks runs.
    fn mark_started(&mut self) {
        if self.job.state == JobState::Pending {
            self.job.state = JobState::Running;
            self.job.started_at_ms = Some(self.meta.now_ms);
        }
    }

    /// Ends a pending task whose branch was not taken.
    pub(super) fn bypass(&mut self, task_id: &str, reason: String) {
        self.update(task_id, |task| {
            task.state = TaskState::Bypassed;
            task.error = Some(reason.clone());
        });
        self.event(JobEventKind::TaskBypassed {
            task_id: task_id.to_owned(),
            reason,
        });
        self.newly_terminal.push(task_id.to_owned());
    }

    /// Assigns attempt `attempt` of a ready task to `agent_id`; returns its deadline.
    pub fn assign(&mut self, task_id: &str, attempt: u32, agent_id: &str) -> u64 {
        let now_ms = self.meta.now_ms;
        let timeout_ms = self
            .job
            .task_spec(task_id)
            .map_or(0, |spec| spec.effective_timeout_ms());
        let deadline_at_ms = now_ms.saturating_add(timeout_ms);
        self.update(task_id, |task| {
            task.state = TaskState::Assigned;
            task.attempt = attempt;
            task.agent = Some(agent_id.to_owned());
            task.deadline_at_ms = Some(deadline_at_ms);
            task.not_before_ms = 0;
            task.attempts.push(AttemptRecord {
                attempt,
                agent: agent_id.to_owned(),
                assigned_at_ms: now_ms,
                started_at_ms: None,
                ended_at_ms: None,
                outcome: None,
            });
        });
        self.agents.hold(agent_id, self.key(task_id), now_ms);
        self.mark_started();
        let (task_id, agent) = (task_id.to_owned(), agent_id.to_owned());
        self.event(JobEventKind::TaskAssigned {
            task_id,
            agent,
            attempt,
        });
        deadline_at_ms
    }

    /// The agent started the current attempt of an `Assigned` task.
    pub fn start(&mut self, task_id: &str) {
        let now_ms = self.meta.now_ms;
        let mut attempt = 0;
        self.update(task_id, |task| {
            task.state = TaskState::Running;
            attempt = task.attempt;
            if let Some(record) = task.current_attempt_mut() {
                record.started_at_ms = Some(now_ms);
            }
        });
        let task_id = task_id.to_owned();
        self.event(JobEventKind::TaskStarted { task_id, attempt });
    }

    /// The current attempt succeeded: the task is done, for good.
    pub fn succeed(&mut self, task_id: &str, output: Vec<u8>) -> AttemptEnd {
        let (attempt, agent_id) = self.end_attempt(task_id, AttemptOutcome::Succeeded);
        self.update(task_id, |task| {
            task.state = TaskState::Succeeded;
            task.output = Some(output);
            task.error = None;
        });
        let id = task_id.to_owned();
        self.event(JobEventKind::TaskSucceeded {
            task_id: id,
            attempt,
        });
        self.newly_terminal.push(task_id.to_owned());
        self.attempt_end(task_id, attempt, agent_id, TaskState::Succeeded, None)
    }

    /// The current attempt failed, timed out or lost its agent: schedule a retry with backoff
    /// when the policy allows, otherwise end the task (Failed, TimedOut or DeadLettered).
    pub fn fail(&mut self, task_id: &str, outcome: AttemptOutcome) -> AttemptEnd {
        let error = self.describe_failure(task_id, &outcome);
        let (attempt, agent_id) = self.end_attempt(task_id, outcome.clone());
        let mut retry_at_ms = self.retry_time(task_id, &outcome);
        let ended = !matches!(
            outcome,
            AttemptOutcome::Succeeded | AttemptOutcome::Cancelled
        );
        let fallback = match retry_at_ms.is_none() && ended {
            true => self.take_fallback(task_id),
            false => None,
        };
        let fell_back = fallback.is_some();
        if fell_back {
            retry_at_ms = Some(self.meta.now_ms);
        }
        let state = match (retry_at_ms, &outcome) {
            (Some(_), _) => TaskState::Ready,
            (None, AttemptOutcome::TimedOut) => TaskState::TimedOut,
            (
                None,
                AttemptOutcome::Failed {
                    retryable: false, ..
                },
            ) => TaskState::Failed,
            (None, _) => TaskState::DeadLettered,
        };
        let (counted, now_ms) = (outcome.is_counted_failure(), self.meta.now_ms);
        self.update(task_id, |task| {
            task.failed_attempts = match fell_back {
                true => 0,
                false => task.failed_attempts + u32::from(counted),
            };
            task.state = state;
            task.error = Some(error.clone());
            if let Some(retry_at_ms) = retry_at_ms {
                task.not_before_ms = retry_at_ms;
                task.ready_at_ms = Some(now_ms);
            }
        });
        self.failure_events(task_id, attempt, &outcome, error, retry_at_ms, state);
        if let Some(activated) = fallback {
            self.event(activated);
        }
        if state.is_terminal() {
            self.newly_terminal.push(task_id.to_owned());
        }
        self.attempt_end(task_id, attempt, agent_id, state, retry_at_ms)
    }

    /// A ready task no live agent can take ends `Unsatisfiable`, for `reason`.
    pub fn unsatisfiable(&mut self, task_id: &str, reason: &str) {
        self.update(task_id, |task| {
            task.state = TaskState::Unsatisfiable;
            task.error = Some(reason.to_owned());
        });
        self.event(JobEventKind::TaskUnsatisfiable {
            task_id: task_id.to_owned(),
            reason: reason.to_owned(),
        });
        self.newly_terminal.push(task_id.to_owned());
    }

    /// Switches `task_id` to its fallback, if it has one left; the event that says so.
    fn take_fallback(&mut self, task_id: &str) -> Option<JobEventKind> {
        let spec = self.job.task_spec_mut(task_id)?;
        spec.take_fallback()?;
        Some(JobEventKind::FallbackActivated {
            task_id: task_id.to_owned(),
            kind: spec.kind.clone(),
            strategy: spec.strategy,
        })
    }

    /// Appends subtasks of `parent`; when `wait`, the parent's attempt waits for those not
    /// already terminal. Returns the new ids.
    pub fn add_subtasks(
        &mut self,
        parent: &str,
        subtasks: Vec<super::TaskSpec>,
        wait: bool,
    ) -> (Vec<String>, bool) {
        let now_ms = self.meta.now_ms;
        let ids = self.job.append_tasks(subtasks, Some(parent), now_ms);
        let (parent_task_id, added) = (parent.to_owned(), ids.clone());
        self.event(JobEventKind::SubtasksAdded {
            parent_task_id,
            ids: added,
        });
        for id in &ids {
            self.evaluate_pending(id);
        }
        let open: Vec<String> = ids
            .iter()
            .filter(|id| {
                self.job
                    .task_state(id)
                    .is_some_and(|state| !state.is_terminal())
            })
            .cloned()
            .collect();
        let waiting = wait && !open.is_empty();
        if waiting {
            self.update(parent, |task| {
                task.waiting_for.extend(open);
                task.waiting_since_ms.get_or_insert(now_ms);
            });
        }
        (ids, waiting)
    }

    /// Cancels the job: every unfinished task is cancelled, then compensation runs if the job
    /// has any to do. Cancelling a compensating job stops its compensation.
    pub fn cancel_job(&mut self, reason: &str) {
        let reason_text = reason.to_owned();
        self.event(JobEventKind::JobCancelled {
            reason: reason_text,
        });
        if self.job.state == JobState::Compensating {
            let reason = format!("cancelled while compensating: {reason}");
            return self.finish(JobState::Cancelled, Some(reason), "job cancelled");
        }
        self.end(JobState::Cancelled, reason.to_owned(), "job cancelled");
    }

    /// The job's own deadline passed: it fails and its open tasks are cancelled.
    pub fn time_out_job(&mut self, timeout_ms: u64) {
        let reason = format!("the job's timeout of {timeout_ms} ms passed");
        self.end(JobState::Failed, reason, "job timed out");
    }

    /// Propagates every task that became terminal, then applies the job's criterion.
    pub fn settle(&mut self) {
        while let Some(task_id) = self.newly_terminal.pop() {
            let dependents = self.job.dependents_of(&task_id).to_vec();
            for dependent in dependents {
                self.evaluate_pending(&dependent);
            }
            self.release_parent(&task_id);
            self.instance_ended(&task_id);
        }
        match self.job.state {
            JobState::Compensating => self.advance_compensation(),
            _ => self.evaluate_job(),
        }
    }

    pub(super) fn make_ready(&mut self, task_id: &str) {
        let now_ms = self.meta.now_ms;
        self.update(task_id, |task| {
            task.state = TaskState::Ready;
            task.ready_at_ms = Some(now_ms);
        });
        let task_id = task_id.to_owned();
        self.event(JobEventKind::TaskReady { task_id });
    }

    fn skip(&mut self, task_id: &str, dependency: String) {
        let reason = format!("dependency '{dependency}' did not succeed");
        self.update(task_id, |task| {
            task.state = TaskState::Skipped;
            task.error = Some(reason);
        });
        let id = task_id.to_owned();
        self.event(JobEventKind::TaskSkipped {
            task_id: id,
            dependency,
        });
        self.newly_terminal.push(task_id.to_owned());
    }

    /// Closes the current attempt record and frees the agent's slot; returns the attempt
    /// number and its agent.
    fn end_attempt(&mut self, task_id: &str, outcome: AttemptOutcome) -> (u32, String) {
        let now_ms = self.meta.now_ms;
        let succeeded = match outcome {
            AttemptOutcome::Succeeded => Some(true),
            AttemptOutcome::Cancelled => None,
            _ => Some(false),
        };
        let (mut attempt, mut agent) = (0, String::new());
        self.update(task_id, |task| {
            if let Some(record) = task.current_attempt_mut() {
                record.ended_at_ms = Some(now_ms);
                record.outcome = Some(outcome);
            }
            task.deadline_at_ms = None;
            task.waiting_for.clear();
            task.waiting_since_ms = None;
            attempt = task.attempt;
            agent = task.agent.clone().unwrap_or_default();
        });
        let key = self.key(task_id);
        self.agents.release(&agent, &key, succeeded, now_ms);
        (attempt, agent)
    }

    fn retry_time(&self, task_id: &str, outcome: &AttemptOutcome) -> Option<u64> {
        let task = self.job.tasks.get(task_id)?;
        let policy = &self.job.task_spec(task_id)?.retry;
        let failed = task.failed_attempts + 1;
        let retry = outcome.is_counted_failure() && failed < policy.max_attempts;
        retry.then(|| self.meta.now_ms.saturating_add(policy.backoff_ms(failed)))
    }

    fn describe_failure(&self, task_id: &str, outcome: &AttemptOutcome) -> String {
        let agent = self
            .job
            .tasks
            .get(task_id)
            .and_then(|task| task.agent.clone());
        match outcome {
            AttemptOutcome::Failed { error, .. } => error.clone(),
            AttemptOutcome::TimedOut => "timed out".to_owned(),
            AttemptOutcome::AgentLost => format!("agent '{}' lost", agent.unwrap_or_default()),
            AttemptOutcome::Succeeded | AttemptOutcome::Cancelled => String::new(),
        }
    }

    fn failure_events(
        &mut self,
        task_id: &str,
        attempt: u32,
        outcome: &AttemptOutcome,
        error: String,
        retry_at_ms: Option<u64>,
        state: TaskState,
    ) {
        let (task_id, will_retry) = (task_id.to_owned(), retry_at_ms.is_some());
        let kind = match outcome {
            AttemptOutcome::TimedOut => JobEventKind::TaskTimedOut {
                task_id: task_id.clone(),
                attempt,
                will_retry,
                retry_at_ms,
            },
            _ => JobEventKind::TaskFailed {
                task_id: task_id.clone(),
                attempt,
                error,
                will_retry,
                retry_at_ms,
            },
        };
        self.event(kind);
        if let Some(retry_at_ms) = retry_at_ms {
            let failed_attempts = self
                .job
                .tasks
                .get(&task_id)
                .map_or(0, |t| t.failed_attempts);
            self.event(JobEventKind::TaskRetryScheduled {
                task_id: task_id.clone(),
                failed_attempts,
                backoff_ms: retry_at_ms.saturating_sub(self.meta.now_ms),
                retry_at_ms,
            });
        }
        if state == TaskState::DeadLettered {
            self.event(JobEventKind::TaskDeadLettered { task_id });
        }
    }

    /// A terminal subtask leaves its parent's wait set; the last one releases the parent and
    /// pushes its deadline back by the time spent waiting.
    fn release_parent(&mut self, task_id: &str) {
        let Some(parent) = self
            .job
            .tasks
            .get(task_id)
            .and_then(|task| task.parent.clone())
        else {
            return;
        };
        let waits = self
            .job
            .tasks
            .get(&parent)
            .is_some_and(|p| p.waiting_for.contains(task_id));
        if !waits {
            return;
        }
        let now_ms = self.meta.now_ms;
        let mut released = false;
        self.update(&parent, |task| {
            task.waiting_for.remove(task_id);
            if task.waiting_for.is_empty() {
                let since = task.waiting_since_ms.take().unwrap_or(now_ms);
                let waited = now_ms.saturating_sub(since);
                task.deadline_at_ms = task.deadline_at_ms.map(|at| at.saturating_add(waited));
                released = true;
            }
        });
        if released {
            self.parent_released(&parent);
        }
    }

    fn parent_released(&mut self, parent: &str) {
        if let Some(held) = self.held(parent) {
            self.effects.subtasks_completed.push(held);
        }
        let parent_task_id = parent.to_owned();
        self.event(JobEventKind::SubtasksCompleted { parent_task_id });
    }

    fn evaluate_job(&mut self) {
        if self.job.state.is_terminal() {
            return;
        }
        match self.job.spec.goal.criterion.clone() {
            Criterion::AllTasks => self.evaluate_all_tasks(),
            Criterion::GoalTask(goal) => self.evaluate_goal(&goal),
        }
    }

    fn evaluate_all_tasks(&mut self) {
        if self.job.unsuccessful > 0 {
            let failed = self
                .job
                .tasks_in_order()
                .find(|(_, _, task)| task.state.is_unsuccessful());
            let reason = failed.map(|(id, _, task)| format!("task '{id}' ended {:?}", task.state));
            self.end(JobState::Failed, reason.unwrap_or_default(), "job failed");
        } else if (self.job.succeeded + self.job.bypassed + self.job.compensation_tasks) as usize
            == self.job.tasks.len()
        {
            self.finish(JobState::Succeeded, None, "job succeeded");
        }
    }

    fn evaluate_goal(&mut self, goal: &str) {
        match self.job.task_state(goal) {
            Some(TaskState::Succeeded) => {
                self.job.output = self
                    .job
                    .tasks
                    .get(goal)
                    .and_then(|task| task.output.clone());
                self.finish(JobState::Succeeded, None, "goal reached");
            }
            Some(state) if state.is_unsuccessful() || state == TaskState::Bypassed => {
                let reason = format!("goal task '{goal}' ended {state:?}");
                self.end(JobState::Failed, reason, "job failed");
            }
            _ => {}
        }
    }

    /// Ends the job in `state`, cancelling every unfinished task (`cancel_reason` goes to the
    /// agents of in-progress attempts); compensation tasks that never ran are bypassed when
    /// the job succeeded.
    pub(super) fn finish(&mut self, state: JobState, reason: Option<String>, cancel_reason: &str) {
        self.cancel_open_tasks(cancel_reason);
        let unneeded: Vec<String> = self
            .job
            .tasks
            .iter()
            .filter(|(_, task)| matches!(task.role, TaskRole::Compensation { .. }))
            .filter(|(_, task)| !task.state.is_terminal())
            .map(|(id, _)| id.clone())
            .collect();
        for task_id in unneeded {
            match state {
                JobState::Succeeded => self.bypass(&task_id, "the job succeeded".into()),
                _ => self.cancel_task(&task_id, cancel_reason),
            }
        }
        self.job.compensation = None;
        if self.job.parent.is_some() {
            let job_id = self.job.id.clone();
            self.links.push(JobLink::ChildFinished { job_id });
        }
        self.index.remove_job(self.job);
        self.job.state = state;
        self.job.state_reason = reason;
        self.job.finished_at_ms = Some(self.meta.now_ms);
        let job_id = self.job.id.clone();
        self.effects
            .jobs_finished
            .push(JobFinished { job_id, state });
        self.event(JobEventKind::JobCompleted { state });
    }

    /// Cancels every unfinished task but the compensation tasks.
    pub(super) fn cancel_open_tasks(&mut self, reason: &str) {
        let open: Vec<String> = self
            .job
            .tasks_in_order()
            .filter(|(_, _, task)| !task.state.is_terminal())
            .filter(|(_, _, task)| !matches!(task.role, TaskRole::Compensation { .. }))
            .map(|(id, _, _)| id.to_owned())
            .collect();
        for task_id in open {
            self.cancel_task(&task_id, reason);
        }
    }

    pub(super) fn cancel_task(&mut self, task_id: &str, reason: &str) {
        if let Some(TaskRole::ChildJob {
            child_job_id: Some(child),
        }) = self.job.tasks.get(task_id).map(|task| &task.role)
        {
            let (job_id, reason) = (child.clone(), reason.to_owned());
            let parent = self.key(task_id);
            self.links.push(JobLink::CancelChild {
                job_id,
                parent,
                reason,
            });
        }
        if let Some(held) = self.held(task_id) {
            self.end_attempt(task_id, AttemptOutcome::Cancelled);
            let reason = reason.to_owned();
            self.effects.cancelled.push(CancelAttempt { held, reason });
        }
        self.update(task_id, |task| {
            task.state = TaskState::Cancelled;
            task.error = Some(reason.to_owned());
        });
    }

    /// Applies `change` to a task, keeping the index and the job's counters in step.
    pub(super) fn update(&mut self, task_id: &str, change: impl FnOnce(&mut TaskRecord)) {
        self.index.remove(self.job, task_id);
        let now_ms = self.meta.now_ms;
        if let Some(task) = self.job.tasks.get_mut(task_id) {
            let before = task.state;
            change(task);
            if task.state.is_terminal() && !before.is_terminal() {
                task.finished_at_ms = Some(now_ms);
                match task.state {
                    TaskState::Succeeded => self.job.succeeded += 1,
                    TaskState::Bypassed => self.job.bypassed += 1,
                    _ => self.job.unsuccessful += 1,
                }
            }
        }
        self.index.insert(self.job, task_id);
    }

    pub(super) fn event(&mut self, kind: JobEventKind) {
        self.job.push_event(self.meta, kind);
    }

    fn key(&self, task_id: &str) -> TaskKey {
        TaskKey {
            job_id: self.job.id.clone(),
            task_id: task_id.to_owned(),
        }
    }

    /// The in-progress attempt of a task and its agent, if any.
    fn held(&self, task_id: &str) -> Option<HeldAttempt> {
        let task = self
            .job
            .tasks
            .get(task_id)
            .filter(|task| task.state.is_active())?;
        // Fan-outs and child jobs run without an agent.
        let agent_id = task.agent.clone()?;
        Some(HeldAttempt {
            task: self.attempt_ref(task_id, task.attempt),
            agent_id,
        })
    }

    fn attempt_ref(&self, task_id: &str, attempt: u32) -> AttemptRef {
        AttemptRef {
            job_id: self.job.id.clone(),
            task_id: task_id.to_owned(),
            attempt,
        }
    }

    fn attempt_end(
        &self,
        task_id: &str,
        attempt: u32,
        agent_id: String,
        state: TaskState,
        retry_at_ms: Option<u64>,
    ) -> AttemptEnd {
        AttemptEnd {
            task: self.attempt_ref(task_id, attempt),
            agent_id,
            state,
            retry_at_ms,
        }
    }
}
