//! [`JobRecord`]: the replicated state of one job — its spec, tasks, counters and history.
//!
//! Plain data with pure read helpers; every change goes through
//! [`Transition`](super::lifecycle::Transition), which keeps indexes and events consistent.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::task::{instance_id, TaskRole};
use super::{JobEvent, JobEventKind, JobSpec, TaskKey, TaskRecord, TaskSpec, TaskState};
use crate::state::Meta;

/// Lifecycle of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobState {
    /// Accepted; no task assigned yet.
    Pending,
    /// At least one task has been assigned.
    Running,
    /// Failing or cancelled, and its compensation tasks are running (in reverse order of the
    /// completion of the tasks they undo).
    Compensating,
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
    /// The task whose child job this is; `None` for a job submitted by a client.
    #[serde(default)]
    pub parent: Option<TaskKey>,
    /// Tasks that only run while the job compensates.
    #[serde(default)]
    pub compensation_tasks: u32,
    /// While compensating: how the job ends once compensation is over.
    #[serde(default)]
    pub compensation: Option<CompensationPlan>,
}

/// The compensation of a failed or cancelled job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompensationPlan {
    /// The terminal state the job ends in (`Failed` or `Cancelled`).
    pub outcome: JobState,
    /// Why the job is failing or was cancelled.
    pub reason: String,
    /// Compensation tasks still to run, next first.
    pub queue: Vec<String>,
    /// The compensation task running now.
    pub current: Option<String>,
    /// Compensation tasks that did not succeed.
    pub failed: Vec<String>,
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
            parent: None,
            compensation_tasks: 0,
            compensation: None,
        };
        job.append_tasks(tasks, None, now_ms);
        let undone: Vec<(String, String)> = job
            .spec
            .tasks
            .iter()
            .filter(|spec| !spec.compensation_task_id.is_empty())
            .map(|spec| (spec.compensation_task_id.clone(), spec.id.clone()))
            .collect();
        for (compensation, compensates) in undone {
            if let Some(task) = job.tasks.get_mut(&compensation) {
                task.role = TaskRole::Compensation { compensates };
                job.compensation_tasks += 1;
            }
        }
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
            let mut record = TaskRecord::new(index, parent.map(str::to_owned), now_ms);
            record.role = match (&spec.fan_out, &spec.child_job) {
                (Some(fan_out), _) => TaskRole::FanOut(super::task::FanOutProgress {
                    parallelism: fan_out.parallelism,
                    ..Default::default()
                }),
                (None, Some(_)) => TaskRole::ChildJob { child_job_id: None },
                (None, None) => TaskRole::Agent,
            };
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

    /// Creates the instances of fan-out task `task_id`, one per item, all `Pending`.
    pub fn add_instances(&mut self, task_id: &str, items: Vec<Vec<u8>>, now_ms: u64) {
        let Some(template) = self.tasks.get(task_id) else {
            return;
        };
        let index = template.index;
        for (i, item) in items.into_iter().enumerate() {
            let mut record = TaskRecord::new(index, Some(task_id.to_owned()), now_ms);
            record.role = TaskRole::Instance {
                index: i as u32,
                item,
            };
            self.tasks.insert(instance_id(task_id, i as u32), record);
        }
    }

    /// The spec of `task_id`, to change (a fallback taking over). A fan-out instance gets a
    /// copy of its template first, so the change is its own.
    pub fn task_spec_mut(&mut self, task_id: &str) -> Option<&mut TaskSpec> {
        let record = self.tasks.get_mut(task_id)?;
        if matches!(record.role, TaskRole::Instance { .. }) {
            if record.own_spec.is_none() {
                let mut copy = self.spec.tasks.get(record.index as usize)?.clone();
                copy.fan_out = None;
                record.own_spec = Some(Box::new(copy));
            }
            return record.own_spec.as_deref_mut();
        }
        self.spec.tasks.get_mut(record.index as usize)
    }

    /// The spec of a task (a fan-out instance's is its template's, unless it diverged).
    pub fn task_spec(&self, task_id: &str) -> Option<&TaskSpec> {
        let record = self.tasks.get(task_id)?;
        match &record.own_spec {
            Some(own) => Some(own),
            None => self.spec.tasks.get(record.index as usize),
        }
    }

    /// Tasks in submission order with their ids and specs; a fan-out's instances follow it in
    /// item order.
    pub fn tasks_in_order(&self) -> impl Iterator<Item = (&str, &TaskSpec, &TaskRecord)> {
        self.spec.tasks.iter().flat_map(move |spec| {
            let record = self.tasks.get(&spec.id);
            let instances = match record.map(|record| &record.role) {
                Some(TaskRole::FanOut(progress)) => progress.instances,
                _ => 0,
            };
            let instances = (0..instances).filter_map(move |i| {
                let (id, record) = self.tasks.get_key_value(&instance_id(&spec.id, i))?;
                let spec = record.own_spec.as_deref().unwrap_or(spec);
                Some((id.as_str(), spec, record))
            });
            record
                .map(|record| (spec.id.as_str(), spec, record))
                .into_iter()
                .chain(instances)
        })
    }

    /// State of a task, if it exists.
    pub fn task_state(&self, task_id: &str) -> Option<TaskState> {
        self.tasks.get(task_id).map(|task| task.state)
    }

    /// Outputs of the succeeded dependencies of `task_id`, by dependency id; a fan-out
    /// dependency gives its instances' outputs by instance id (`<id>[<i>]`, item order by `i`),
    /// and a compensation task gets the output of the task it undoes.
    pub fn dependency_outputs(&self, task_id: &str) -> BTreeMap<String, Vec<u8>> {
        let (Some(spec), Some(record)) = (self.task_spec(task_id), self.tasks.get(task_id)) else {
            return BTreeMap::new();
        };
        let compensates = match &record.role {
            TaskRole::Compensation { compensates } => Some(compensates),
            _ => None,
        };
        let mut outputs = BTreeMap::new();
        for dep in spec.depends_on.iter().chain(compensates) {
            let Some(upstream) = self.tasks.get(dep) else {
                continue;
            };
            if let TaskRole::FanOut(progress) = &upstream.role {
                for i in 0..progress.instances {
                    let id = instance_id(dep, i);
                    if let Some(output) = self.tasks.get(&id).and_then(|t| t.output.as_ref()) {
                        outputs.insert(id, output.clone());
                    }
                }
            } else if let Some(output) = &upstream.output {
                outputs.insert(dep.clone(), output.clone());
            }
        }
        outputs
    }

    /// Tasks that depend on `task_id`.
    pub fn dependents_of(&self, task_id: &str) -> &[String] {
        self.dependents.get(task_id).map_or(&[], Vec::as_slice)
    }
}
