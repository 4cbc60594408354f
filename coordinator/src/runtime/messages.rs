//! Coordinator → agent messages built from the replicated state: assignments (with dependency
//! outputs), cancellations and completed-subtask reports. Reads state; changes nothing.

use synod_proto::v1 as pb;
use synod_proto::v1::coordinator_message::Kind;

use super::clock;
use crate::state::jobs::{AttemptRef, TaskRole, TaskState};
use crate::state::votes::VoteRecord;
use crate::state::State;

/// Wraps `kind` with the leader's clock.
pub fn message(kind: Kind) -> pb::CoordinatorMessage {
    pb::CoordinatorMessage {
        sent_at_ms: clock::now_ms(),
        kind: Some(kind),
    }
}

/// The proto reference to an attempt.
pub fn task_ref(attempt: &AttemptRef) -> pb::TaskRef {
    pb::TaskRef {
        job_id: attempt.job_id.clone(),
        task_id: attempt.task_id.clone(),
        attempt: attempt.attempt,
    }
}

/// Most bytes of payload, item and dependency outputs one assignment carries, below the 4 MiB
/// agents accept; outputs beyond it are named in `omitted_dependency_outputs` for the agent to
/// read with `GetTask` (a reduce over many large instance outputs).
const ASSIGNMENT_BYTES_MAX: usize = 3 * 1024 * 1024 + 512 * 1024;

/// The assignment message of the task's current attempt, if it is still assigned or running.
pub fn assignment(state: &State, job_id: &str, task_id: &str) -> Option<pb::CoordinatorMessage> {
    let job = state.jobs.get(job_id)?;
    let (spec, task) = state.jobs.task(job_id, task_id)?;
    if !matches!(task.state, TaskState::Assigned | TaskState::Running) {
        return None;
    }
    let attempt = AttemptRef {
        job_id: job_id.to_owned(),
        task_id: task_id.to_owned(),
        attempt: task.attempt,
    };
    let (item, item_index) = match &task.role {
        TaskRole::Instance { index, item } => (item.clone(), Some(*index)),
        _ => (Vec::new(), None),
    };
    let mut budget = ASSIGNMENT_BYTES_MAX.saturating_sub(spec.payload.len() + item.len());
    let (mut dependency_outputs, mut omitted_dependency_outputs) = (Vec::new(), Vec::new());
    for (id, output) in job.dependency_outputs(task_id) {
        let bytes = id.len() + output.len() + 16;
        match bytes <= budget {
            true => {
                budget -= bytes;
                dependency_outputs.push((id, output));
            }
            false => omitted_dependency_outputs.push(id),
        }
    }
    Some(message(Kind::TaskAssignment(pb::TaskAssignment {
        task: Some(task_ref(&attempt)),
        kind: spec.kind.clone(),
        payload: spec.payload.clone(),
        item,
        item_index,
        checkpoint: state
            .checkpoints
            .latest_of_task(job_id, task_id)
            .map(|(name, version)| {
                let scope = crate::state::checkpoints::Scope::Task {
                    job_id: job_id.to_owned(),
                    task_id: task_id.to_owned(),
                };
                crate::api::checkpoint_info(&scope, name, version)
            }),
        dependency_outputs: dependency_outputs.into_iter().collect(),
        omitted_dependency_outputs,
        deadline_at_ms: task.deadline_at_ms.unwrap_or(0),
        ..Default::default()
    })))
}

/// The request for a ballot in an open vote.
pub fn vote_request(vote: &VoteRecord) -> pb::CoordinatorMessage {
    message(Kind::VoteRequest(pb::VoteRequest {
        vote_id: vote.id.clone(),
        question: vote.spec.question.clone(),
        options: vote.spec.options.clone(),
        deadline_at_ms: vote.deadline_at_ms,
    }))
}

/// A cancellation of `attempt`.
pub fn cancel(attempt: &AttemptRef, reason: &str) -> pb::CoordinatorMessage {
    message(Kind::CancelTask(pb::CancelTask {
        task: Some(task_ref(attempt)),
        reason: reason.to_owned(),
    }))
}

/// The outcomes of every subtask of the waiting parent `parent`.
pub fn subtasks_completed(state: &State, parent: &AttemptRef) -> Option<pb::CoordinatorMessage> {
    let job = state.jobs.get(&parent.job_id)?;
    let subtasks = job
        .tasks_in_order()
        .filter(|(_, _, record)| record.parent.as_deref() == Some(parent.task_id.as_str()))
        .map(|(id, _, record)| pb::SubtaskOutcome {
            task_id: id.to_owned(),
            state: task_state(record.state) as i32,
            output: record.output.clone().unwrap_or_default(),
            error_message: record.error.clone().unwrap_or_default(),
        })
        .collect();
    Some(message(Kind::SubtasksCompleted(pb::SubtasksCompleted {
        parent: Some(task_ref(parent)),
        subtasks,
    })))
}

/// The proto form of a task state.
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
        TaskState::DeadLettered => pb::TaskState::DeadLettered,
        TaskState::Unsatisfiable => pb::TaskState::Unsatisfiable,
        TaskState::Skipped | TaskState::Bypassed => pb::TaskState::Skipped,
    }
}
