//! Compensation on a [`Transition`]: when a job fails or is cancelled after tasks with a
//! compensation task succeeded, those compensation tasks run one at a time, in reverse order of
//! the completion of the tasks they undo, while the job is `Compensating`; then the job ends
//! as it was going to (`Failed` or `Cancelled`).
//!
//! ```text
//!   Running ─fail / cancel─► (nothing to undo) ─────────────────────► Failed / Cancelled
//!                        └─► Compensating: undo(c) … undo(a) one by one ─┘
//! ```
//! A compensation task that does not succeed (after its own retries) is recorded in the job's
//! reason and the next one still runs. Pure: no I/O, clock or randomness.

use super::job::CompensationPlan;
use super::lifecycle::Transition;
use super::task::TaskRole;
use super::{JobEventKind, JobState, TaskState};

impl Transition<'_> {
    /// The job can no longer succeed (`Failed`) or was cancelled: its open tasks are cancelled,
    /// then it compensates if some succeeded task has a compensation task, or ends at once.
    pub(super) fn end(&mut self, outcome: JobState, reason: String, cancel_reason: &str) {
        let queue = self.compensation_queue();
        if queue.is_empty() {
            return self.finish(
                outcome,
                Some(reason).filter(|r| !r.is_empty()),
                cancel_reason,
            );
        }
        self.cancel_open_tasks(cancel_reason);
        self.index.remove_job(self.job);
        self.job.state = JobState::Compensating;
        self.event(JobEventKind::CompensationStarted {
            reason: reason.clone(),
            task_ids: queue.clone(),
        });
        self.job.compensation = Some(CompensationPlan {
            outcome,
            reason,
            queue,
            current: None,
            failed: Vec::new(),
        });
        self.advance_compensation();
    }

    /// Compensation tasks to run: one per succeeded task that names one, most recently
    /// completed first.
    fn compensation_queue(&self) -> Vec<String> {
        let succeeded = self
            .job
            .events
            .iter()
            .rev()
            .filter_map(|event| match &event.kind {
                JobEventKind::TaskSucceeded { task_id, .. } => Some(task_id),
                _ => None,
            });
        succeeded
            .filter(|id| self.job.task_state(id) == Some(TaskState::Succeeded))
            .filter_map(|id| {
                let undo = &self.job.task_spec(id)?.compensation_task_id;
                let record = self.job.tasks.get(undo)?;
                let undoes_it = matches!(&record.role, TaskRole::Compensation { compensates } if compensates == id);
                (undoes_it && record.state == TaskState::Pending).then(|| undo.clone())
            })
            .collect()
    }

    /// Moves compensation on once its current task ended: the next one starts, or the job ends.
    pub(super) fn advance_compensation(&mut self) {
        let Some(plan) = self.job.compensation.as_mut() else {
            return;
        };
        if let Some(current) = plan.current.clone() {
            match self.job.tasks.get(&current).map(|task| task.state) {
                Some(state) if !state.is_terminal() => return,
                Some(TaskState::Succeeded) => {}
                _ => plan.failed.push(current),
            }
        }
        if plan.queue.is_empty() {
            let plan = self
                .job
                .compensation
                .take()
                .unwrap_or_else(|| unreachable!());
            let reason = match plan.failed.is_empty() {
                true => plan.reason,
                false => format!(
                    "{}; compensation did not succeed for {}",
                    plan.reason,
                    plan.failed.join(", ")
                ),
            };
            return self.finish(plan.outcome, Some(reason), "job compensated");
        }
        let next = plan.queue.remove(0);
        plan.current = Some(next.clone());
        self.activate(&next);
        // A compensation task can end at once (a fan-out over nothing).
        if self
            .job
            .task_state(&next)
            .is_some_and(TaskState::is_terminal)
        {
            self.advance_compensation();
        }
    }
}
