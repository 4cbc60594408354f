//! Read-only queries the leader's runtime and the API need: ready tasks in scheduling order,
//! attempt deadlines, dependency outputs, lookups.
//!
//! Pure and cheap: ready tasks and deadlines come from [`TaskIndex`](super::TaskIndex), never
//! from a scan of every job.

use std::collections::BTreeMap;

use super::{AttemptRef, JobRecord, JobTable, TaskKey, TaskRecord, TaskSpec, TaskState};

/// A ready task as the scheduler sees it.
#[derive(Debug, Clone, Copy)]
pub struct ReadyTask<'a> {
    /// Its job.
    pub job: &'a JobRecord,
    /// Its id (a fan-out instance's differs from its spec's).
    pub task_id: &'a str,
    /// Its spec.
    pub spec: &'a TaskSpec,
    /// Its record.
    pub task: &'a TaskRecord,
}

impl ReadyTask<'_> {
    /// The attempt number an `AssignTask` must carry.
    pub fn next_attempt(&self) -> u32 {
        self.task.attempt + 1
    }

    /// The task's key.
    pub fn key(&self) -> TaskKey {
        TaskKey {
            job_id: self.job.id.clone(),
            task_id: self.task_id.to_owned(),
        }
    }
}

impl JobTable {
    /// Ready tasks that may be assigned at `now_ms` (retry backoff passed), by job priority
    /// (highest first), then job submission order, then task submission order. Lazy: take as
    /// many as a scheduling pass needs.
    pub fn ready_tasks(&self, now_ms: u64) -> impl Iterator<Item = ReadyTask<'_>> {
        self.index
            .ready()
            .filter_map(|key| self.ready_task(key))
            .filter(move |ready| ready.task.not_before_ms <= now_ms)
    }

    /// In-progress attempts (not waiting for subtasks) with their deadlines, earliest first.
    pub fn attempt_deadlines(&self) -> impl Iterator<Item = (u64, AttemptRef)> + '_ {
        self.index.deadlines().filter_map(|(deadline_at_ms, key)| {
            let task = self.jobs.get(&key.job_id)?.tasks.get(&key.task_id)?;
            let attempt = AttemptRef {
                job_id: key.job_id.clone(),
                task_id: key.task_id.clone(),
                attempt: task.attempt,
            };
            Some((deadline_at_ms, attempt))
        })
    }

    /// Attempts whose deadline is at or before `now_ms`: candidates for `TimeOutTask`.
    pub fn timed_out(&self, now_ms: u64) -> impl Iterator<Item = AttemptRef> + '_ {
        self.attempt_deadlines()
            .take_while(move |(deadline_at_ms, _)| *deadline_at_ms <= now_ms)
            .map(|(_, attempt)| attempt)
    }

    /// Unfinished jobs whose own deadline is at or before `now_ms`: candidates for
    /// `TimeOutJob`.
    pub fn timed_out_jobs(&self, now_ms: u64) -> impl Iterator<Item = &str> + '_ {
        self.index
            .job_deadlines()
            .take_while(move |(deadline_at_ms, _)| *deadline_at_ms <= now_ms)
            .map(|(_, job_id)| job_id)
    }

    /// Outputs of the dependencies of a task, by dependency id (sent with its assignment).
    pub fn dependency_outputs(
        &self,
        job_id: &str,
        task_id: &str,
    ) -> Option<BTreeMap<String, Vec<u8>>> {
        let job = self.jobs.get(job_id)?;
        job.tasks
            .contains_key(task_id)
            .then(|| job.dependency_outputs(task_id))
    }

    /// One job.
    pub fn get(&self, job_id: &str) -> Option<&JobRecord> {
        self.jobs.get(job_id)
    }

    /// One task with its spec.
    pub fn task(&self, job_id: &str, task_id: &str) -> Option<(&TaskSpec, &TaskRecord)> {
        let job = self.jobs.get(job_id)?;
        Some((job.task_spec(task_id)?, job.tasks.get(task_id)?))
    }

    /// State of one task.
    pub fn task_state(&self, job_id: &str, task_id: &str) -> Option<TaskState> {
        self.jobs.get(job_id)?.task_state(task_id)
    }

    /// Every job, in id order.
    pub fn iter(&self) -> impl Iterator<Item = &JobRecord> {
        self.jobs.values()
    }

    /// Number of jobs.
    pub fn len(&self) -> usize {
        self.jobs.len()
    }

    /// True when there is no job.
    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    /// Number of ready tasks, backoff included.
    pub fn ready_len(&self) -> usize {
        self.index.ready_len()
    }

    fn ready_task<'a>(&'a self, key: &'a TaskKey) -> Option<ReadyTask<'a>> {
        let job = self.jobs.get(&key.job_id)?;
        Some(ReadyTask {
            job,
            task_id: &key.task_id,
            spec: job.task_spec(&key.task_id)?,
            task: job.tasks.get(&key.task_id)?,
        })
    }
}
