//! Child jobs: a task that runs a whole job. Starting the child, reporting its end to the
//! parent task and cancelling it with its parent cross from one job to another, so a
//! [`Transition`] (which changes one job) records them as [`JobLink`]s and
//! [`JobTable::follow_links`] carries them out before the command's apply returns.
//!
//! ```text
//!   parent task ready ─► Running ─StartChild─► child job "<parent>/<task>" submitted
//!   child ends ─ChildFinished─► parent task Succeeded (child's output) / Failed (its reason)
//!   parent task cancelled ─CancelChild─► child job cancelled (and compensated)
//! ```
//! Pure: no I/O, clock or randomness.

use super::lifecycle::Transition;
use super::task::TaskRole;
use super::{JobEventKind, JobRecord, JobState, JobTable, TaskKey, TaskState};
use crate::state::effects::Effects;
use crate::state::{AgentRegistry, Meta};

/// Work one job's transition leaves for another job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobLink {
    /// Submit the child job of a task that just started.
    StartChild {
        /// The parent job.
        job_id: String,
        /// Its task running the child.
        task_id: String,
    },
    /// A child job ended: end its parent task.
    ChildFinished {
        /// The child job.
        job_id: String,
    },
    /// The task running a child job was cancelled: cancel the child (unless it is
    /// compensating: it then ends once its compensation is done).
    CancelChild {
        /// The child job.
        job_id: String,
        /// The task that ran it.
        parent: TaskKey,
        /// Why.
        reason: String,
    },
}

/// The id of the child job run by `task_id` of `job_id`.
pub fn child_job_id(job_id: &str, task_id: &str) -> String {
    format!("{job_id}/{task_id}")
}

impl Transition<'_> {
    /// Starts the child job of a task whose dependencies succeeded.
    pub(super) fn start_child_job(&mut self, task_id: &str) {
        self.run_in_place(task_id);
        let child = child_job_id(&self.job.id, task_id);
        self.update(task_id, |task| {
            task.role = TaskRole::ChildJob {
                child_job_id: Some(child.clone()),
            };
        });
        self.event(JobEventKind::ChildJobStarted {
            task_id: task_id.to_owned(),
            child_job_id: child,
        });
        self.links.push(JobLink::StartChild {
            job_id: self.job.id.clone(),
            task_id: task_id.to_owned(),
        });
    }
}

impl JobTable {
    /// Carries out the links the command's transitions left, and those they lead to, in order.
    pub(super) fn follow_links(
        &mut self,
        agents: &mut AgentRegistry,
        effects: &mut Effects,
        meta: Meta,
    ) {
        let mut next = 0;
        while next < self.links.len() {
            let link = self.links[next].clone();
            next += 1;
            match link {
                JobLink::StartChild { job_id, task_id } => {
                    self.start_child(&job_id, &task_id, agents, effects, meta)
                }
                JobLink::ChildFinished { job_id } => {
                    self.child_finished(&job_id, agents, effects, meta)
                }
                JobLink::CancelChild {
                    job_id,
                    parent,
                    reason,
                } => {
                    let cancellable = self.jobs.get(&job_id).is_some_and(|child| {
                        child.parent.as_ref() == Some(&parent)
                            && !child.state.is_terminal()
                            && child.state != JobState::Compensating
                    });
                    if let (true, Ok(mut transition)) =
                        (cancellable, self.transition(&job_id, agents, effects, meta))
                    {
                        transition.cancel_job(&format!("its parent ended: {reason}"));
                    }
                }
            }
        }
        self.links.clear();
    }

    /// Submits the child job of `task_id` and readies its roots.
    fn start_child(
        &mut self,
        parent_job: &str,
        task_id: &str,
        agents: &mut AgentRegistry,
        effects: &mut Effects,
        meta: Meta,
    ) {
        let Some(spec) = self
            .jobs
            .get(parent_job)
            .and_then(|job| job.task_spec(task_id))
            .and_then(|spec| spec.child_job.clone())
        else {
            return;
        };
        let child_id = child_job_id(parent_job, task_id);
        if self.jobs.contains_key(&child_id) {
            let error = format!("a job '{child_id}' already exists");
            let running = self.task_state(parent_job, task_id) == Some(TaskState::Running);
            if let (true, Ok(mut transition)) =
                (running, self.transition(parent_job, agents, effects, meta))
            {
                transition.end_in_place(task_id, Err(error));
                transition.settle();
            }
            return;
        }
        let mut child = JobRecord::new(&child_id, self.next_seq, *spec, meta.now_ms);
        self.next_seq += 1;
        child.parent = Some(TaskKey {
            job_id: parent_job.to_owned(),
            task_id: task_id.to_owned(),
        });
        self.insert_submitted(child, agents, effects, meta);
    }

    /// Ends the parent task of a child job that just ended.
    fn child_finished(
        &mut self,
        child_id: &str,
        agents: &mut AgentRegistry,
        effects: &mut Effects,
        meta: Meta,
    ) {
        let Some(child) = self.jobs.get(child_id) else {
            return;
        };
        let Some(parent) = child.parent.clone() else {
            return;
        };
        let result = match child.state {
            JobState::Succeeded => Ok(Some(child.output.clone().unwrap_or_default())),
            state => Err(format!(
                "child job '{child_id}' ended {state:?}: {}",
                child.state_reason.as_deref().unwrap_or("")
            )),
        };
        let waiting = self.jobs.get(&parent.job_id).is_some_and(|job| {
            let task = job.tasks.get(&parent.task_id);
            !job.state.is_terminal()
                && task.is_some_and(|task| {
                    task.state == TaskState::Running
                        && matches!(&task.role, TaskRole::ChildJob { child_job_id: Some(id) } if id == child_id)
                })
        });
        if !waiting {
            return;
        }
        if let Ok(mut transition) = self.transition(&parent.job_id, agents, effects, meta) {
            transition.end_in_place(&parent.task_id, result);
            transition.settle();
        }
    }
}
