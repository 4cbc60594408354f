//! What an agent's code sees: the task it was handed, how it reports the outcome, and the
//! handler traits for tasks and auction bids.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

use synod_proto::v1 as pb;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// A boxed, sendable future.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// The final outcome of one task attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskOutcome {
    /// The task succeeded with this output (at most 1 MiB).
    Succeeded(Vec<u8>),
    /// The task failed; `retryable` lets the job's retry policy try again.
    Failed {
        /// What went wrong.
        error: String,
        /// Whether another attempt may succeed.
        retryable: bool,
    },
}

impl TaskOutcome {
    /// A retryable failure.
    pub fn retryable(error: impl Into<String>) -> Self {
        Self::Failed {
            error: error.into(),
            retryable: true,
        }
    }

    /// A failure that no retry can fix.
    pub fn fatal(error: impl Into<String>) -> Self {
        Self::Failed {
            error: error.into(),
            retryable: false,
        }
    }
}

/// One assigned task attempt, as handed to a handler.
#[derive(Debug)]
pub struct Task {
    /// Job, task and attempt (the fencing token).
    pub task: pb::TaskRef,
    /// Handler kind.
    pub kind: String,
    /// Input.
    pub payload: Vec<u8>,
    /// Fan-out instances: the item, empty otherwise.
    pub item: Vec<u8>,
    /// Fan-out instances: the item's position, `None` otherwise.
    pub item_index: Option<u32>,
    /// Outputs of the task's dependencies by task id; a fan-out dependency contributes one
    /// entry per instance, `<id>[<i>]` (see [`Task::fan_out_outputs`]).
    pub dependency_outputs: BTreeMap<String, Vec<u8>>,
    /// When the attempt times out (leader clock, Unix ms); 0 when unknown.
    pub deadline_at_ms: u64,
    /// The latest checkpoint an earlier attempt of this task saved, to resume from.
    pub checkpoint: Option<crate::checkpoints::Checkpoint>,
    /// The session's connection, for saving checkpoints.
    pub(crate) channel: Option<tonic::transport::Channel>,
    /// Cancelled when the coordinator cancels this attempt; stop work and return anything.
    pub cancelled: CancellationToken,
    pub(crate) requests: mpsc::Sender<TaskRequest>,
}

/// Requests a running task makes through its agent's session.
#[derive(Debug)]
pub(crate) enum TaskRequest {
    /// Add subtasks to the job; answered when committed, or when they all ended if `wait`.
    AddSubtasks {
        parent: pb::TaskRef,
        subtasks: Vec<pb::TaskSpec>,
        wait: bool,
        reply: oneshot::Sender<Result<Vec<pb::SubtaskOutcome>, String>>,
    },
}

impl Task {
    /// A task not attached to any session, for running a handler locally (tests, dry runs);
    /// `add_subtasks` on it fails.
    pub fn standalone(task: pb::TaskRef, kind: impl Into<String>, payload: Vec<u8>) -> Self {
        let (requests, _) = mpsc::channel(1);
        Self {
            task,
            kind: kind.into(),
            payload,
            item: Vec::new(),
            item_index: None,
            dependency_outputs: BTreeMap::new(),
            deadline_at_ms: 0,
            checkpoint: None,
            channel: None,
            cancelled: CancellationToken::new(),
            requests,
        }
    }

    /// Saves `data` as the next version of checkpoint `name` of this task (fenced: refused once
    /// the attempt is no longer current). A later attempt of the task starts with the newest
    /// checkpoint in [`Task::checkpoint`]. Returns the version saved.
    pub async fn save_checkpoint(&self, name: &str, data: &[u8]) -> Result<u64, String> {
        let channel = self
            .channel
            .clone()
            .ok_or("this task has no session to save checkpoints over")?;
        let scope = pb::CheckpointScope {
            owner: Some(pb::checkpoint_scope::Owner::Task(self.task.clone())),
        };
        crate::checkpoints::save_on(channel, scope, name, data, &[])
            .await
            .map(|info| info.version)
            .map_err(|status| format!("saving checkpoint '{name}': {}", status.message()))
    }

    /// The outputs of the instances of fan-out dependency `task_id`, in item order (the reduce
    /// step of a map-reduce). Empty when `task_id` is not a fan-out dependency.
    pub fn fan_out_outputs(&self, task_id: &str) -> Vec<&[u8]> {
        let prefix = format!("{task_id}[");
        let mut outputs: Vec<(u32, &[u8])> = self
            .dependency_outputs
            .range(prefix.clone()..)
            .take_while(|(id, _)| id.starts_with(&prefix))
            .filter_map(|(id, output)| {
                let index = id[prefix.len()..].strip_suffix(']')?.parse().ok()?;
                Some((index, output.as_slice()))
            })
            .collect();
        outputs.sort_unstable_by_key(|(index, _)| *index);
        outputs.into_iter().map(|(_, output)| output).collect()
    }

    /// Adds subtasks to this task's job (a planner decomposing its goal). With `wait`, returns
    /// once every subtask has ended, with their outcomes; without, once they are committed.
    pub async fn add_subtasks(
        &self,
        subtasks: Vec<pb::TaskSpec>,
        wait: bool,
    ) -> Result<Vec<pb::SubtaskOutcome>, String> {
        let (reply, answer) = oneshot::channel();
        let request = TaskRequest::AddSubtasks {
            parent: self.task.clone(),
            subtasks,
            wait,
            reply,
        };
        self.requests
            .send(request)
            .await
            .map_err(|_| "agent stopped".to_owned())?;
        answer.await.map_err(|_| "agent stopped".to_owned())?
    }
}

/// Runs tasks of one or more kinds.
pub trait TaskHandler: Send + Sync + 'static {
    /// Runs one attempt to its outcome.
    fn run(&self, task: Task) -> BoxFuture<TaskOutcome>;
}

impl<F, Fut> TaskHandler for F
where
    F: Fn(Task) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = TaskOutcome> + Send + 'static,
{
    fn run(&self, task: Task) -> BoxFuture<TaskOutcome> {
        Box::pin(self(task))
    }
}

/// An offer in an auction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Offer {
    /// Agent-defined cost, finite and ≥ 0; the lowest wins.
    pub cost: f64,
    /// Estimated run time.
    pub estimate_ms: u64,
}

/// Answers calls for bids: `Some(offer)` to bid, `None` to decline.
pub trait BidHandler: Send + Sync + 'static {
    /// Decides on one call.
    fn bid(&self, call: &pb::CallForBids) -> Option<Offer>;
}

impl<F> BidHandler for F
where
    F: Fn(&pb::CallForBids) -> Option<Offer> + Send + Sync + 'static,
{
    fn bid(&self, call: &pb::CallForBids) -> Option<Offer> {
        self(call)
    }
}

/// Answers vote requests: `Some(option)` to cast that ballot, `None` to abstain. Called once
/// per vote (again after a reconnect while the vote is open and unanswered).
pub trait BallotHandler: Send + Sync + 'static {
    /// Decides on one vote.
    fn ballot(&self, request: &pb::VoteRequest) -> Option<String>;
}

impl<F> BallotHandler for F
where
    F: Fn(&pb::VoteRequest) -> Option<String> + Send + Sync + 'static,
{
    fn ballot(&self, request: &pb::VoteRequest) -> Option<String> {
        self(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fan_out_outputs_come_in_item_order() {
        let task_ref = pb::TaskRef {
            job_id: "j".into(),
            task_id: "reduce".into(),
            attempt: 1,
        };
        let mut task = Task::standalone(task_ref, "k", Vec::new());
        for i in [10u32, 2, 0, 1] {
            task.dependency_outputs
                .insert(format!("map[{i}]"), i.to_string().into_bytes());
        }
        task.dependency_outputs
            .insert("other".into(), b"x".to_vec());
        task.dependency_outputs
            .insert("mapper".into(), b"y".to_vec());
        let outputs: Vec<&[u8]> = task.fan_out_outputs("map");
        assert_eq!(outputs, [&b"0"[..], b"1", b"2", b"10"]);
        assert!(task.fan_out_outputs("missing").is_empty());
    }
}
