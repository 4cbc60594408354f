//! The agent's state that outlives sessions (identity, running tasks, unacknowledged results)
//! and the reconnect loop around sessions.

use std::collections::HashMap;
use std::time::Duration;

use synod_proto::v1 as pb;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::handler::{Task, TaskOutcome, TaskRequest};
use super::mailbox::Mailbox;
use super::outbox::Outbox;
use super::participant::Rounds;
use super::session::{run_session, SessionEnd};
use super::AgentBuilder;
use crate::{Client, ClientError};

/// (job id, task id).
pub(crate) type TaskKey = (String, String);

/// The agent's identity once registered.
#[derive(Debug, Clone)]
pub(crate) struct Identity {
    pub(crate) agent_id: String,
    pub(crate) session_token: String,
}

/// A task being run by a handler.
pub(crate) struct RunningTask {
    pub(crate) attempt: u32,
    pub(crate) cancel: CancellationToken,
}

/// A subtask request waiting for its answer.
pub(crate) struct SubtaskWaiter {
    pub(crate) parent: TaskKey,
    pub(crate) wait: bool,
    pub(crate) reply: oneshot::Sender<Result<Vec<pb::SubtaskOutcome>, String>>,
}

/// Everything that survives a reconnect.
pub(crate) struct AgentCore {
    pub(crate) config: AgentBuilder,
    pub(crate) identity: Option<Identity>,
    pub(crate) running: HashMap<TaskKey, RunningTask>,
    pub(crate) outbox: Outbox,
    pub(crate) draining: bool,
    pub(crate) completions: mpsc::Sender<(pb::TaskRef, TaskOutcome)>,
    pub(crate) completed: mpsc::Receiver<(pb::TaskRef, TaskOutcome)>,
    pub(crate) requests: mpsc::Sender<TaskRequest>,
    pub(crate) requested: mpsc::Receiver<TaskRequest>,
    /// Subtask requests by request id until committed.
    pub(crate) subtask_requests: HashMap<u64, SubtaskWaiter>,
    /// Parents waiting for their subtasks to end.
    pub(crate) subtask_waits: HashMap<TaskKey, SubtaskWaiter>,
    /// The current session's connection, for reads a task needs (omitted dependency outputs).
    pub(crate) channel: Option<tonic::transport::Channel>,
    /// Direct and broadcast messages.
    pub(crate) mailbox: Mailbox,
    /// Federated rounds, when the agent is a participant.
    pub(crate) rounds: Option<Rounds>,
}

impl AgentCore {
    pub(crate) fn new(config: AgentBuilder) -> Self {
        let capacity = config.max_concurrent as usize * 2 + 16;
        let (completions, completed) = mpsc::channel(capacity);
        let (requests, requested) = mpsc::channel(capacity);
        let mailbox = Mailbox::new(config.message_handler.clone());
        Self {
            mailbox,
            config,
            identity: None,
            running: HashMap::new(),
            channel: None,
            outbox: Outbox::default(),
            draining: false,
            completions,
            completed,
            requests,
            requested,
            subtask_requests: HashMap::new(),
            subtask_waits: HashMap::new(),
            rounds: None,
        }
    }

    /// Keeps a session open until `shutdown`, following leader changes and retrying failures
    /// with capped exponential backoff.
    pub(crate) async fn run(
        mut self,
        client: Client,
        shutdown: CancellationToken,
    ) -> Result<(), ClientError> {
        let mut backoff = Duration::from_millis(50);
        if let Some(participant) = self.config.participant.clone() {
            let acting = client.acting_as(self.config.credentials.subscribe());
            self.rounds = Some(Rounds::new(participant, acting));
        }
        loop {
            let addr = client.current_addr();
            let channel = client.channel(&addr)?;
            match run_session(&mut self, channel, &shutdown).await {
                Ok(SessionEnd::Shutdown) => return Ok(()),
                Ok(SessionEnd::Redirect(leader)) => {
                    tracing::info!(%leader, "session moves to the leader");
                    client.redirect(leader);
                    backoff = Duration::from_millis(50);
                    continue;
                }
                Err(status) => {
                    tracing::warn!(%addr, code = ?status.code(), message = status.message(), "session ended");
                    client.after_failure(&addr, &status);
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    /// Starts a handler for an assignment, or refuses it.
    pub(crate) fn start_task(
        &mut self,
        assignment: pb::TaskAssignment,
    ) -> Option<pb::agent_message::Kind> {
        let task_ref = assignment.task.clone().unwrap_or_default();
        let key = (task_ref.job_id.clone(), task_ref.task_id.clone());
        if let Some(existing) = self.running.get(&key) {
            if existing.attempt == task_ref.attempt {
                return None; // re-sent assignment of an attempt already running
            }
            existing.cancel.cancel();
        }
        if self.draining || self.running.len() >= self.config.max_concurrent as usize {
            return Some(pb::agent_message::Kind::TaskRejected(pb::TaskRejected {
                task: Some(task_ref),
                reason: if self.draining {
                    "draining"
                } else {
                    "at capacity"
                }
                .into(),
            }));
        }
        let handler = self
            .config
            .handlers
            .get(&assignment.kind)
            .or(self.config.fallback_handler.as_ref())
            .cloned();
        let cancel = CancellationToken::new();
        self.running.insert(
            key,
            super::core::RunningTask {
                attempt: task_ref.attempt,
                cancel: cancel.clone(),
            },
        );
        let task = Task {
            task: task_ref.clone(),
            kind: assignment.kind.clone(),
            payload: assignment.payload,
            item: assignment.item,
            item_index: assignment.item_index,
            dependency_outputs: assignment.dependency_outputs.into_iter().collect(),
            deadline_at_ms: assignment.deadline_at_ms,
            checkpoint: None,
            channel: self.channel.clone(),
            cancelled: cancel.clone(),
            requests: self.requests.clone(),
        };
        let completions = self.completions.clone();
        let (omitted, channel) = (assignment.omitted_dependency_outputs, self.channel.clone());
        let saved = assignment.checkpoint;
        tokio::spawn(async move {
            let mut task = task;
            let fetched = tokio::select! {
                fetched = fetch_inputs(channel, &task.task, omitted, saved) => fetched,
                _ = cancel.cancelled() => return,
            };
            let outcome = match (fetched, handler) {
                (Err(error), _) => TaskOutcome::retryable(error),
                (Ok((outputs, checkpoint)), Some(handler)) => {
                    task.dependency_outputs.extend(outputs);
                    task.checkpoint = checkpoint;
                    tokio::select! {
                        outcome = handler.run(task) => outcome,
                        _ = cancel.cancelled() => return,
                    }
                }
                (Ok(_), None) => {
                    TaskOutcome::fatal(format!("no handler for kind '{}'", assignment.kind))
                }
            };
            let _ = completions.send((task_ref, outcome)).await;
        });
        Some(pb::agent_message::Kind::TaskStarted(pb::TaskStarted {
            task: assignment.task,
        }))
    }

    /// Turns a finished attempt into its result message (None if it was cancelled meanwhile).
    pub(crate) fn finish_task(
        &mut self,
        task: pb::TaskRef,
        outcome: TaskOutcome,
    ) -> Option<pb::agent_message::Kind> {
        let key = (task.job_id.clone(), task.task_id.clone());
        match self.running.get(&key) {
            Some(running) if running.attempt == task.attempt => {
                self.running.remove(&key);
            }
            _ => return None,
        }
        let outcome = match outcome {
            TaskOutcome::Succeeded(output) => {
                pb::task_result::Outcome::Success(pb::task_result::Success { output })
            }
            TaskOutcome::Failed { error, retryable } => {
                pb::task_result::Outcome::Failure(pb::task_result::Failure {
                    error_message: error,
                    retryable,
                })
            }
        };
        Some(pb::agent_message::Kind::TaskResult(pb::TaskResult {
            task: Some(task),
            outcome: Some(outcome),
        }))
    }

    /// Cancels a running attempt at the coordinator's request.
    pub(crate) fn cancel_task(&mut self, task: &pb::TaskRef) {
        let key = (task.job_id.clone(), task.task_id.clone());
        if self
            .running
            .get(&key)
            .is_some_and(|r| r.attempt == task.attempt)
        {
            if let Some(running) = self.running.remove(&key) {
                running.cancel.cancel();
            }
        }
    }

    /// The attempts running now, for heartbeats and re-registration.
    pub(crate) fn running_refs(&self) -> Vec<pb::TaskRef> {
        self.running
            .iter()
            .map(|((job_id, task_id), running)| pb::TaskRef {
                job_id: job_id.clone(),
                task_id: task_id.clone(),
                attempt: running.attempt,
            })
            .collect()
    }
}

/// What an assignment names but does not carry: its omitted dependency outputs and the
/// checkpoint to resume from.
type Inputs = (
    Vec<(String, Vec<u8>)>,
    Option<crate::checkpoints::Checkpoint>,
);

/// Reads an assignment's omitted dependency outputs and its checkpoint.
async fn fetch_inputs(
    channel: Option<tonic::transport::Channel>,
    task: &pb::TaskRef,
    omitted: Vec<String>,
    checkpoint: Option<pb::CheckpointInfo>,
) -> Result<Inputs, String> {
    let outputs = fetch_outputs(channel.clone(), &task.job_id, omitted).await?;
    let Some(info) = checkpoint else {
        return Ok((outputs, None));
    };
    let channel = channel.ok_or("no connection to read the checkpoint over")?;
    let request = pb::GetCheckpointRequest {
        scope: info.scope.clone(),
        name: info.name.clone(),
        version: info.version,
        consistency: pb::Consistency::Linearizable as i32,
    };
    let checkpoint = crate::checkpoints::read_on(channel, request)
        .await
        .map_err(|status| format!("reading checkpoint '{}': {}", info.name, status.message()))?;
    Ok((outputs, Some(checkpoint)))
}

/// Reads the dependency outputs an assignment was too large to carry, by task id.
async fn fetch_outputs(
    channel: Option<tonic::transport::Channel>,
    job_id: &str,
    ids: Vec<String>,
) -> Result<Vec<(String, Vec<u8>)>, String> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let channel = channel.ok_or("no connection to read dependency outputs over")?;
    let mut jobs = synod_proto::v1::job_service_client::JobServiceClient::new(channel)
        .max_decoding_message_size(usize::MAX);
    let mut outputs = Vec::with_capacity(ids.len());
    for task_id in ids {
        let request = pb::GetTaskRequest {
            job_id: job_id.to_owned(),
            task_id: task_id.clone(),
            ..Default::default()
        };
        let task = jobs
            .get_task(request)
            .await
            .map_err(|status| format!("reading the output of '{task_id}': {}", status.message()))?
            .into_inner()
            .task
            .unwrap_or_default();
        outputs.push((task_id, task.output));
    }
    Ok(outputs)
}
