//! [`JobRecord`]: the replicated state of one job — its spec, tasks, counters and history.
//!
//! Plain data with pure read helpers; every change goes through
//! [`Transition`](super::lifecycle::Transition), which keeps indexes and events consistent.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{JobEvent, JobEventKind, JobSpec, TaskRecord, TaskSpec, TaskState};
use crate::state::Meta;

/// Lifecycle of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobState {
    /// Accepted; no task assigned yet.
    Pending,
    /// At least one task has been assigned.
    Running,
    /// Terminal: the success criterion was met.
    Succeeded,
    /// Terminal: the criterion can no longer be met.
    Failed,
    /// Terminal: cancelled.
    Cancelled,
}

impl JobState {
    /// No further transition is possible.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled
        )
    }
}

/// One job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    /// Server-assigned id.
    pub id: String,
    /// Submission order among all jobs (a scheduling tie-break).
    pub seq: u64,
    /// The spec; `spec.tasks` grows as subtasks are added and is the task submission order.
    pub spec: JobSpec,
    /// Current state.
    pub state: JobState,
    /// Why the job failed or was cancelled.
    pub state_reason: Option<String>,
    /// Tasks by id.
    pub tasks: BTreeMap<String, TaskRecord>,
    /// Reverse dependency edges: task id → tasks that depend on it.
    pub dependents: BTreeMap<String, Vec<String>>,
    /// Tasks in state `Succeeded`.
    pub succeeded: u32,
    /// Tasks terminal without success.
    pub unsuccessful: u32,
    /// Tasks whose branch was not taken (neither success nor failure).
    #[serde(default)]
    pub bypassed: u32,
    /// When the job was submitted.
    pub created_at_ms: u64,
    /// When its first task was assigned.
    pub started_at_ms: Option<u64>,
    /// When it reached a terminal state.
    pub finished_at_ms: Option<u64>,
    /// The goal task's output once the job succeeded on a goal task.
    #[serde(with = "serde_bytes")]
    pub output: Option<Vec<u8>>,
    /// The history, `events[i].sequence == i + 1`.
    pub events: Vec<JobEvent>,
}

impl JobRecord {
    /// When the job times out as a whole (`timeout_ms` after submission), if it has a timeout.
    pub fn deadline_at_ms(&self) -> Option<u64> {
        (self.spec.timeout_ms > 0).then(|| self.created_at_ms.saturating_add(self.spec.timeout_ms))
    }

    /// A new pending job holding `spec`'s tasks, all `Pending`, with no events yet.
    pub fn new(id: &str, seq: u64, mut spec: JobSpec, now_ms: u64) -> Self {
        let tasks = std::mem::take(&mut spec.tasks);
        let mut job = Self {
            id: id.to_owned(),
            seq,
            spec,
            state: JobState::Pending,
            state_reason: None,
            tasks: BTreeMap::new(),
            dependents: BTreeMap::new(),
            succeeded: 0,
            unsuccessful: 0,
            bypassed: 0,
            created_at_ms: now_ms,
            started_at_ms: None,
            finished_at_ms: None,
            output: None,
            events: Vec::new(),
        };
        job.append_tasks(tasks, None, now_ms);
        job
    }

    /// Appends task specs (submission or subtasks) as `Pending` records; returns their ids.
    pub fn append_tasks(
        &mut self,
        specs: Vec<TaskSpec>,
        parent: Option<&str>,
        now_ms: u64,
    ) -> Vec<String> {
        let mut ids = Vec::with_capacity(specs.len());
        for spec in specs {
            let index = self.spec.tasks.len() as u32;
            for dep in &spec.depends_on {
                let dependents = self.dependents.entry(dep.clone()).or_default();
                dependents.push(spec.id.clone());
            }
            let record = TaskRecord::new(index, parent.map(str::to_owned), now_ms);
            self.tasks.insert(spec.id.clone(), record);
            ids.push(spec.id.clone());
            self.spec.tasks.push(spec);
        }
        ids
    }

    /// Appends an event with the next sequence number.
    pub fn push_event(&mut self, meta: Meta, kind: JobEventKind) -> u64 {
        let sequence = self.events.len() as u64 + 1;
        self.events.push(JobEvent {
            sequence,
            at_ms: meta.now_ms,
            log_index: meta.index,
            kind,
        });
        sequence
    }

    /// The spec of a task.
    /// The spec of `task_id`, to change (a fallback taking over).
    pub fn task_spec_mut(&mut self, task_id: &str) -> Option<&mut TaskSpec> {
        let record = self.tasks.get(task_id)?;
        self.spec.tasks.get_mut(record.index as usize)
    }

    pub fn task_spec(&self, task_id: &str) -> Option<&TaskSpec> {
        let record = self.tasks.get(task_id)?;
        self.spec.tasks.get(record.index as usize)
    }

    /// Tasks in submission order, with their specs.
    pub fn tasks_in_order(&self) -> impl Iterator<Item = (&TaskSpec, &TaskRecord)> {
        self.spec
            .tasks
            .iter()
            .filter_map(|spec| Some((spec, self.tasks.get(&spec.id)?)))
    }

    /// State of a task, if it exists.
    pub fn task_state(&self, task_id: &str) -> Option<TaskState> {
        self.tasks.get(task_id).map(|task| task.state)
    }

    /// Outputs of the succeeded dependencies of `task_id`, by dependency id.
    pub fn dependency_outputs(&self, task_id: &str) -> BTreeMap<String, Vec<u8>> {
        let Some(spec) = self.task_spec(task_id) else {
            return BTreeMap::new();
        };
        spec.depends_on
            .iter()
            .filter_map(|dep| {
                let output = self.tasks.get(dep)?.output.as_ref()?;
                Some((dep.clone(), output.clone()))
            })
            .collect()
    }

    /// Tasks that depend on `task_id`.
    pub fn dependents_of(&self, task_id: &str) -> &[String] {
        self.dependents.get(task_id).map_or(&[], Vec::as_slice)
    }
}
