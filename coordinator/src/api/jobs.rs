//! `JobService`: submit, read, watch and cancel jobs over gRPC.
//!
//! Writes (`SubmitJob`, `CancelJob`) are validated here and proposed through the [`Proposer`],
//! which forwards them to the leader. Reads are linearizable by default: a follower forwards
//! them to the leader, the leader confirms its leadership with a quorum and then reads its
//! applied state; `CONSISTENCY_STALE` reads the local replica. `WatchJob` follows the same rule
//! (a follower proxies the leader's stream) and then follows the serving replica's applied
//! state, woken by Raft's metrics watch whenever `last_applied` moves, never by polling.
//!
//! ```text
//!   SubmitJob ─► convert ─► validate ─► job id ─► propose SubmitJob (the state machine also
//!                checks that live agents offer every task's capabilities, on current state)
//!                on the leader, + AssignTask for its root tasks, queued right behind it
//!   CancelJob ─► propose CancelJob ─► Effects ─► runtime tells the agents (on the leader;
//!                a command forwarded by a follower is acted on by the leader's forwarder)
//!   WatchJob  ─► history after `after_sequence` ─┬─► new events as applied ─► JobCompleted: end
//!                 bounded buffer; full too long ─┴─► RESOURCE_EXHAUSTED, stream dropped
//! ```
//!
//! Idempotency keys: a non-empty key makes the job id a digest of the key (a UUID v8), so a
//! second submission hits `JobExists` at apply and is answered with the first job when the
//! specs match (`deduplicated = true`), `ALREADY_EXISTS` otherwise.
//!
//! This module never changes state directly and holds no state of its own.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};
use std::pin::Pin;
use std::time::Duration;

use futures::Stream;
use openraft::{BasicNode, LogId, RaftMetrics};
use synod_proto::v1 as pb;
use synod_proto::v1::job_service_client::JobServiceClient;
use synod_proto::v1::job_service_server::JobService;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use super::convert::write_meta;
use super::convert_job::job_spec as domain_spec;
use super::convert_job_status::{job, job_event, job_state, task, task_state};
use super::leader::wants_linearizable;
use super::request::{
    check_chars, id_for, next_token, page_position, page_size, require, state_filter,
};
use super::{ApiError, LeaderRouter};
use crate::raft::NodeId;
use crate::runtime::{AgentRuntime, CommandResult, Proposer};
use crate::state::jobs::{validate, JobEventKind, JobRecord, JobSpec, SpecError};
use crate::state::{Applied, Command, Effects, Rejection, State};

/// Longest idempotency key, in characters.
const IDEMPOTENCY_KEY_CHARS_MAX: usize = 128;
/// Longest cancellation reason, in characters.
const REASON_CHARS_MAX: usize = 1024;
/// Events buffered per watcher.
const WATCH_BUFFER_EVENTS: usize = 256;
/// Events converted per read of the applied state.
const WATCH_READ_EVENTS_MAX: usize = 256;
/// How long a watcher's buffer may stay full before its stream is dropped.
const WATCH_STALL_MS: u64 = 10_000;
/// How long a deduplicated submission waits for this replica to apply the original.
const DEDUP_WAIT_MS: u64 = 5_000;

/// Serves `synod.v1.JobService`.
pub struct JobApi {
    proposer: Proposer,
    router: LeaderRouter,
    runtime: Option<AgentRuntime>,
}

impl JobApi {
    /// A service proposing through `proposer` and reading through `router`.
    pub fn new(proposer: Proposer, router: LeaderRouter) -> Self {
        Self {
            proposer,
            router,
            runtime: None,
        }
    }

    /// Lets the leader's agent runtime act on what this service commits: a submission's root
    /// tasks are placed in the same batch as the job (saving a commit before their agents hear
    /// of them), and a cancellation's attempts are told to stop.
    pub fn with_runtime(mut self, runtime: AgentRuntime) -> Self {
        self.runtime = Some(runtime);
        self
    }

    /// Validates, converts and commits a submission.
    async fn submit(
        &self,
        request: pb::SubmitJobRequest,
    ) -> Result<pb::SubmitJobResponse, ApiError> {
        let key = request.idempotency_key;
        let spec = checked_spec(request.spec, &key)?;
        let job_id = id_for("synod.v1.JobService", &key);
        tracing::Span::current().record("job_id", job_id.as_str());
        let command = Command::SubmitJob {
            job_id: job_id.clone(),
            spec: spec.clone(),
        };
        let placements = match &self.runtime {
            Some(runtime) if runtime.is_leader() => runtime.place_submission(&job_id, &spec),
            _ => Vec::new(),
        };
        let committed = self.proposer.enqueue(command).await?;
        if let Some(runtime) = &self.runtime {
            // Queued right behind the job, so they apply after it; a placement the state
            // refuses (the slot went to another task meanwhile) leaves the task to the next
            // scheduling pass.
            runtime.propose_in_background(placements).await;
        }
        let result = committed.await?;
        match &result.outcome {
            Ok(Applied::JobSubmitted { .. }) => Ok(submitted(job_id, false, write_meta(&result))),
            Ok(other) => Err(unexpected(other)),
            Err(Rejection::JobExists { .. }) if !key.is_empty() => {
                self.deduplicate(job_id, &spec, &result).await
            }
            Err(Rejection::InvalidSpec(error)) => Err(spec_error(error.clone())),
            Err(rejection) => Err(rejection.clone().into()),
        }
    }

    /// Answers a resubmission with an idempotency key: the first job when the specs match.
    async fn deduplicate(
        &self,
        job_id: String,
        spec: &JobSpec,
        result: &CommandResult,
    ) -> Result<pb::SubmitJobResponse, ApiError> {
        let wait = self
            .router
            .raft()
            .wait(Some(Duration::from_millis(DEDUP_WAIT_MS)));
        wait.applied_index_at_least(Some(result.log_index), "deduplicated submission")
            .await
            .map_err(|e| ApiError::Unavailable {
                message: format!("waiting for the original submission: {e}"),
                leader: None,
            })?;
        let (original, _) = self.router.read_local(false, |state| {
            let job = state.jobs.get(&job_id)?;
            Some((
                same_submission(job, spec),
                job.events.first().map(|e| e.log_index),
            ))
        });
        match original {
            Some((true, log_index)) => {
                let write = pb::WriteMeta {
                    log_index: log_index.unwrap_or(0),
                    ..Default::default()
                };
                Ok(submitted(job_id, true, write))
            }
            _ => Err(ApiError::AlreadyExists(format!(
                "idempotency_key: already used for job '{job_id}' with a different spec"
            ))),
        }
    }

    /// Commits a cancellation and hands its effects to the runtime.
    async fn cancel(
        &self,
        request: pb::CancelJobRequest,
    ) -> Result<pb::CancelJobResponse, ApiError> {
        require("job_id", &request.job_id)?;
        check_chars("reason", &request.reason, REASON_CHARS_MAX)?;
        let job_id = request.job_id.clone();
        let command = Command::CancelJob {
            job_id: request.job_id,
            reason: request.reason,
        };
        let result = self.proposer.propose(command).await?;
        let effects = match &result.outcome {
            Ok(Applied::JobCancelled(effects)) => effects,
            Ok(other) => return Err(unexpected(other)),
            Err(rejection) => return Err(rejection.clone().into()),
        };
        self.hand_over(effects);
        Ok(pb::CancelJobResponse {
            state: cancelled_state(&job_id, effects) as i32,
            write: Some(write_meta(&result)),
        })
    }

    fn hand_over(&self, effects: &Effects) {
        match &self.runtime {
            // Only a leader's sessions reach the agents; when this node forwarded the command,
            // the leader acted on it as it committed (`runtime::ActingForwarder`).
            Some(runtime) if runtime.is_leader() && !effects.is_empty() => {
                runtime.carry_out(effects)
            }
            _ => {}
        }
    }

    /// Starts following a job's events on this replica.
    fn start_watch(
        &self,
        request: pb::WatchJobRequest,
        linearizable: bool,
    ) -> Result<WatchStream, ApiError> {
        let (last, _) = self.router.read_local(linearizable, |state| {
            state
                .jobs
                .get(&request.job_id)
                .map(|job| job.events.len() as u64)
        });
        let last = last.ok_or_else(|| no_job(&request.job_id))?;
        let after = match (request.from_start, request.after_sequence) {
            (true, _) => 0,
            (false, 0) => last,
            (false, after) => after,
        };
        let (sender, receiver) = mpsc::channel(WATCH_BUFFER_EVENTS + 1);
        let watch = Watch {
            router: self.router.clone(),
            job_id: request.job_id,
            sent: after,
            sender,
        };
        tokio::spawn(watch.run().instrument(tracing::Span::current()));
        Ok(Box::pin(ReceiverStream::new(receiver)))
    }
}

/// The stream type of `WatchJob`: served here, or proxied from the leader.
type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::JobEvent, Status>> + Send>>;

/// Checks the request's spec and key, returning the domain spec.
fn checked_spec(spec: Option<pb::JobSpec>, key: &str) -> Result<JobSpec, ApiError> {
    check_chars("idempotency_key", key, IDEMPOTENCY_KEY_CHARS_MAX)?;
    let spec = spec.ok_or_else(|| ApiError::invalid("spec", "required"))?;
    let spec = domain_spec(spec, "spec")?;
    validate(&spec).map_err(spec_error)?;
    Ok(spec)
}

/// A spec rule broken under the request's `spec` field.
fn spec_error(error: SpecError) -> ApiError {
    ApiError::invalid(format!("spec.{}", error.field), error.problem)
}

/// True when `job` was submitted with `spec` (subtasks added since do not count).
fn same_submission(job: &JobRecord, spec: &JobSpec) -> bool {
    let submitted = job.tasks.values().filter(|t| t.parent.is_none()).count();
    let stored = &job.spec;
    submitted == spec.tasks.len()
        && stored.tasks.get(..submitted) == Some(&spec.tasks[..])
        && (&stored.name, &stored.goal, &stored.labels) == (&spec.name, &spec.goal, &spec.labels)
        && (stored.priority, stored.timeout_ms) == (spec.priority, spec.timeout_ms)
}

fn submitted(job_id: String, deduplicated: bool, write: pb::WriteMeta) -> pb::SubmitJobResponse {
    pb::SubmitJobResponse {
        job_id,
        deduplicated,
        write: Some(write),
    }
}

/// The state a cancellation left the job in: the terminal state it finished in, or
/// `COMPENSATING` when it did not finish because its compensation tasks now run.
fn cancelled_state(job_id: &str, effects: &Effects) -> pb::JobState {
    effects
        .jobs_finished
        .iter()
        .find(|finished| finished.job_id == job_id)
        .map_or(pb::JobState::Compensating, |finished| {
            job_state(finished.state)
        })
}

fn unexpected(applied: &Applied) -> ApiError {
    ApiError::Internal(format!("unexpected outcome {applied:?}"))
}

fn no_job(job_id: &str) -> ApiError {
    ApiError::NotFound(format!("job_id: no job '{job_id}'"))
}

fn no_task(job_id: &str, task_id: &str) -> ApiError {
    ApiError::NotFound(format!("task_id: no task '{task_id}' in job '{job_id}'"))
}

/// Which jobs a `ListJobs` wants.
struct JobFilter {
    states: BTreeSet<i32>,
    labels: BTreeMap<String, String>,
}

impl JobFilter {
    fn matches(&self, job: &JobRecord) -> bool {
        let state = job_state(job.state) as i32;
        (self.states.is_empty() || self.states.contains(&state))
            && self
                .labels
                .iter()
                .all(|(k, v)| job.spec.labels.get(k) == Some(v))
    }
}

// ---- reads of the applied state ----

/// One job's status.
fn read_job(state: &State, job_id: &str, include_spec: bool) -> Result<pb::Job, ApiError> {
    let record = state.jobs.get(job_id).ok_or_else(|| no_job(job_id))?;
    Ok(job(record, include_spec))
}

/// Jobs newest first, before submission order `before_seq`; and the next page's token.
fn list_jobs(
    state: &State,
    filter: &JobFilter,
    before_seq: Option<u64>,
    limit: usize,
) -> (Vec<pb::Job>, String) {
    let mut found: Vec<&JobRecord> = state
        .jobs
        .iter()
        .filter(|j| before_seq.is_none_or(|before| j.seq < before) && filter.matches(j))
        .collect();
    found.sort_unstable_by_key(|j| Reverse(j.seq));
    let more = found.len() > limit;
    found.truncate(limit);
    let token = next_token(more, found.last().map(|j| j.seq));
    (found.into_iter().map(|j| job(j, false)).collect(), token)
}

/// A job's tasks in submission order (fan-out instances after their fan-out), after position
/// `after` in that order; and the next page's token.
fn list_tasks(
    state: &State,
    job_id: &str,
    states: &BTreeSet<i32>,
    after: Option<u64>,
    limit: usize,
) -> Result<(Vec<pb::Task>, String), ApiError> {
    let record = state.jobs.get(job_id).ok_or_else(|| no_job(job_id))?;
    let start = after.map_or(0, |position| position.saturating_add(1));
    let mut found: Vec<_> = (0u64..)
        .zip(record.tasks_in_order())
        .skip(usize::try_from(start).unwrap_or(usize::MAX))
        .filter(|(_, (_, _, t))| {
            states.is_empty() || states.contains(&(task_state(t.state) as i32))
        })
        .take(limit + 1)
        .collect();
    let more = found.len() > limit;
    found.truncate(limit);
    let token = next_token(more, found.last().map(|(position, _)| *position));
    let tasks = found
        .into_iter()
        .map(|(_, (id, spec, t))| task(job_id, id, spec, t, false));
    Ok((tasks.collect(), token))
}

/// One task's status.
fn read_task(
    state: &State,
    job_id: &str,
    task_id: &str,
    include_spec: bool,
) -> Result<pb::Task, ApiError> {
    if state.jobs.get(job_id).is_none() {
        return Err(no_job(job_id));
    }
    let (spec, record) = state
        .jobs
        .task(job_id, task_id)
        .ok_or_else(|| no_task(job_id, task_id))?;
    Ok(task(job_id, task_id, spec, record, include_spec))
}

/// A job's events after sequence `after`; and the next page's token.
fn history(
    state: &State,
    job_id: &str,
    after: u64,
    limit: usize,
) -> Result<(Vec<pb::JobEvent>, String), ApiError> {
    let record = state.jobs.get(job_id).ok_or_else(|| no_job(job_id))?;
    let (events, more) = events_after(record, after, limit);
    let token = next_token(more, events.last().map(|e| e.sequence));
    Ok((events, token))
}

/// Up to `limit` events after sequence `after`, and whether more follow.
fn events_after(record: &JobRecord, after: u64, limit: usize) -> (Vec<pb::JobEvent>, bool) {
    let start = usize::try_from(after)
        .unwrap_or(usize::MAX)
        .min(record.events.len());
    let rest = &record.events[start..];
    let events = rest
        .iter()
        .take(limit)
        .map(|e| job_event(record, e))
        .collect();
    (events, rest.len() > limit)
}

/// True once the job's last event is `JobCompleted`: nothing can follow it.
fn completed(record: &JobRecord) -> bool {
    matches!(
        record.events.last().map(|e| &e.kind),
        Some(JobEventKind::JobCompleted { .. })
    )
}

// ---- WatchJob ----

/// One watcher: sends the events of `job_id` after `sent`, in order, as they are applied.
struct Watch {
    router: LeaderRouter,
    job_id: String,
    /// Sequence of the last event sent (or skipped as already known to the client).
    sent: u64,
    sender: mpsc::Sender<Result<pb::JobEvent, Status>>,
}

/// How a watch stopped early.
enum Stop {
    /// The client went away.
    Disconnected,
    /// The stream ends with this error.
    Failed(ApiError),
}

impl Watch {
    /// Follows the job until it completes, the client leaves or the watch fails. One buffer
    /// slot is kept back for the final error, so it can be delivered even to a full stream.
    async fn run(mut self) {
        let Ok(last_slot) = self.sender.clone().reserve_owned().await else {
            return;
        };
        match self.follow().await {
            Ok(()) | Err(Stop::Disconnected) => {}
            Err(Stop::Failed(error)) => {
                tracing::debug!(%error, "watch ended");
                last_slot.send(Err(error.into()));
            }
        }
    }

    async fn follow(&mut self) -> Result<(), Stop> {
        let mut metrics = self.router.raft().metrics();
        loop {
            let seen = metrics.borrow_and_update().last_applied;
            let (events, more, done) = self.next_events()?;
            for event in events {
                self.send(event).await?;
            }
            if done {
                return Ok(());
            }
            if !more {
                self.wait_for_apply(&mut metrics, seen).await?;
            }
        }
    }

    /// The next events to send, whether more are already applied, and whether the job is
    /// complete once they are sent.
    fn next_events(&self) -> Result<(Vec<pb::JobEvent>, bool, bool), Stop> {
        let (found, _) = self.router.read_local(false, |state| {
            let record = state.jobs.get(&self.job_id)?;
            let (events, more) = events_after(record, self.sent, WATCH_READ_EVENTS_MAX);
            Some((events, more, !more && completed(record)))
        });
        found.ok_or_else(|| Stop::Failed(no_job(&self.job_id)))
    }

    /// Sends one event, waiting at most [`WATCH_STALL_MS`] for buffer space.
    async fn send(&mut self, event: pb::JobEvent) -> Result<(), Stop> {
        let stall = Duration::from_millis(WATCH_STALL_MS);
        match tokio::time::timeout(stall, self.sender.reserve()).await {
            Ok(Ok(permit)) => {
                self.sent = event.sequence;
                permit.send(Ok(event));
                Ok(())
            }
            Ok(Err(_)) => Err(Stop::Disconnected),
            Err(_) => Err(Stop::Failed(ApiError::ResourceExhausted(format!(
                "job '{}': watcher did not read its events for {WATCH_STALL_MS} ms",
                self.job_id
            )))),
        }
    }

    /// Waits until this replica applies past `seen`, or the client leaves.
    async fn wait_for_apply(
        &self,
        metrics: &mut watch::Receiver<RaftMetrics<NodeId, BasicNode>>,
        seen: Option<LogId<NodeId>>,
    ) -> Result<(), Stop> {
        tokio::select! {
            changed = metrics.wait_for(|m| m.last_applied != seen) => match changed {
                Ok(_) => Ok(()),
                Err(_) => Err(Stop::Failed(ApiError::Unavailable {
                    message: "this node is shutting down".into(),
                    leader: None,
                })),
            },
            () = self.sender.closed() => Err(Stop::Disconnected),
        }
    }
}

// ---- the service ----

#[tonic::async_trait]
impl JobService for JobApi {
    #[tracing::instrument(skip_all, fields(job_id = tracing::field::Empty))]
    async fn submit_job(
        &self,
        request: Request<pb::SubmitJobRequest>,
    ) -> Result<Response<pb::SubmitJobResponse>, Status> {
        Ok(Response::new(self.submit(request.into_inner()).await?))
    }

    #[tracing::instrument(skip_all, fields(job_id = %request.get_ref().job_id))]
    async fn get_job(
        &self,
        request: Request<pb::GetJobRequest>,
    ) -> Result<Response<pb::GetJobResponse>, Status> {
        require("job_id", &request.get_ref().job_id)?;
        let linearizable = wants_linearizable(request.get_ref().consistency);
        if let Some(leader) = self.router.route(&request, linearizable).await? {
            return JobServiceClient::new(leader)
                .get_job(self.router.forwarded(request))
                .await;
        }
        let request = request.into_inner();
        let (job, read) = self.router.read_local(linearizable, |state| {
            read_job(state, &request.job_id, request.include_spec)
        });
        Ok(Response::new(pb::GetJobResponse {
            job: Some(job?),
            read: Some(read),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_jobs(
        &self,
        request: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        let body = request.get_ref();
        let limit = page_size(body.page.as_ref())?;
        let before = page_position(body.page.as_ref())?;
        let filter = JobFilter {
            states: state_filter::<pb::JobState>("states", &body.states)?,
            labels: body.labels.clone().into_iter().collect(),
        };
        let linearizable = wants_linearizable(body.consistency);
        if let Some(leader) = self.router.route(&request, linearizable).await? {
            return JobServiceClient::new(leader)
                .list_jobs(self.router.forwarded(request))
                .await;
        }
        let ((jobs, next_page_token), read) = self.router.read_local(linearizable, |state| {
            list_jobs(state, &filter, before, limit)
        });
        Ok(Response::new(pb::ListJobsResponse {
            jobs,
            next_page_token,
            read: Some(read),
        }))
    }

    #[tracing::instrument(skip_all, fields(job_id = %request.get_ref().job_id))]
    async fn list_tasks(
        &self,
        request: Request<pb::ListTasksRequest>,
    ) -> Result<Response<pb::ListTasksResponse>, Status> {
        let body = request.get_ref();
        require("job_id", &body.job_id)?;
        let limit = page_size(body.page.as_ref())?;
        let after = page_position(body.page.as_ref())?;
        let states = state_filter::<pb::TaskState>("states", &body.states)?;
        let linearizable = wants_linearizable(body.consistency);
        if let Some(leader) = self.router.route(&request, linearizable).await? {
            return JobServiceClient::new(leader)
                .list_tasks(self.router.forwarded(request))
                .await;
        }
        let job_id = request.into_inner().job_id;
        let (found, read) = self.router.read_local(linearizable, |state| {
            list_tasks(state, &job_id, &states, after, limit)
        });
        let (tasks, next_page_token) = found?;
        Ok(Response::new(pb::ListTasksResponse {
            tasks,
            next_page_token,
            read: Some(read),
        }))
    }

    #[tracing::instrument(skip_all, fields(job_id = %request.get_ref().job_id, task_id = %request.get_ref().task_id))]
    async fn get_task(
        &self,
        request: Request<pb::GetTaskRequest>,
    ) -> Result<Response<pb::GetTaskResponse>, Status> {
        require("job_id", &request.get_ref().job_id)?;
        require("task_id", &request.get_ref().task_id)?;
        let linearizable = wants_linearizable(request.get_ref().consistency);
        if let Some(leader) = self.router.route(&request, linearizable).await? {
            return JobServiceClient::new(leader)
                .get_task(self.router.forwarded(request))
                .await;
        }
        let request = request.into_inner();
        let (task, read) = self.router.read_local(linearizable, |state| {
            read_task(
                state,
                &request.job_id,
                &request.task_id,
                request.include_spec,
            )
        });
        Ok(Response::new(pb::GetTaskResponse {
            task: Some(task?),
            read: Some(read),
        }))
    }

    type WatchJobStream = WatchStream;

    #[tracing::instrument(skip_all, fields(job_id = %request.get_ref().job_id))]
    async fn watch_job(
        &self,
        request: Request<pb::WatchJobRequest>,
    ) -> Result<Response<Self::WatchJobStream>, Status> {
        let body = request.get_ref();
        require("job_id", &body.job_id)?;
        if body.from_start && body.after_sequence > 0 {
            let problem = "cannot be combined with from_start";
            return Err(ApiError::invalid("after_sequence", problem).into());
        }
        let linearizable = wants_linearizable(body.consistency);
        if let Some(leader) = self.router.route(&request, linearizable).await? {
            let mut client = JobServiceClient::new(leader);
            let stream = client.watch_job(self.router.forwarded(request)).await?;
            return Ok(Response::new(Box::pin(stream.into_inner())));
        }
        Ok(Response::new(
            self.start_watch(request.into_inner(), linearizable)?,
        ))
    }

    #[tracing::instrument(skip_all, fields(job_id = %request.get_ref().job_id))]
    async fn cancel_job(
        &self,
        request: Request<pb::CancelJobRequest>,
    ) -> Result<Response<pb::CancelJobResponse>, Status> {
        Ok(Response::new(self.cancel(request.into_inner()).await?))
    }

    #[tracing::instrument(skip_all, fields(job_id = %request.get_ref().job_id))]
    async fn get_job_history(
        &self,
        request: Request<pb::GetJobHistoryRequest>,
    ) -> Result<Response<pb::GetJobHistoryResponse>, Status> {
        let body = request.get_ref();
        require("job_id", &body.job_id)?;
        let limit = page_size(body.page.as_ref())?;
        let after = page_position(body.page.as_ref())?
            .unwrap_or(0)
            .max(body.after_sequence);
        let linearizable = wants_linearizable(body.consistency);
        if let Some(leader) = self.router.route(&request, linearizable).await? {
            return JobServiceClient::new(leader)
                .get_job_history(self.router.forwarded(request))
                .await;
        }
        let job_id = request.into_inner().job_id;
        let (found, read) = self
            .router
            .read_local(linearizable, |state| history(state, &job_id, after, limit));
        let (events, next_page_token) = found?;
        Ok(Response::new(pb::GetJobHistoryResponse {
            events,
            next_page_token,
            read: Some(read),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::super::request::PAGE_SIZE_DEFAULT;
    use super::*;
    use crate::state::Meta;

    fn pb_task(id: &str, deps: &[&str]) -> pb::TaskSpec {
        pb::TaskSpec {
            task_id: id.into(),
            kind: "k".into(),
            depends_on: deps
                .iter()
                .map(|d| pb::Dependency {
                    task_id: d.to_string(),
                    condition: None,
                })
                .collect(),
            ..Default::default()
        }
    }

    fn pb_spec(tasks: Vec<pb::TaskSpec>, team: &str) -> pb::JobSpec {
        pb::JobSpec {
            name: "j".into(),
            tasks,
            labels: [("team".to_owned(), team.to_owned())].into(),
            ..Default::default()
        }
    }

    /// A state holding jobs `job-0`..`job-{n-1}` (submitted in that order, teams alternating
    /// a/b), each with tasks `a` and `b` (b depends on a); `job-0` is cancelled.
    fn state(n: u64) -> State {
        let mut state = State::default();
        for i in 0..n {
            let team = if i % 2 == 0 { "a" } else { "b" };
            let spec = checked_spec(
                Some(pb_spec(vec![pb_task("a", &[]), pb_task("b", &["a"])], team)),
                "",
            )
            .expect("valid");
            let command = Command::SubmitJob {
                job_id: format!("job-{i}"),
                spec,
            };
            state
                .apply(
                    &command,
                    Meta {
                        index: i + 1,
                        now_ms: 100 + i,
                    },
                )
                .expect("submitted");
        }
        let cancel = Command::CancelJob {
            job_id: "job-0".into(),
            reason: "stop".into(),
        };
        state
            .apply(
                &cancel,
                Meta {
                    index: n + 1,
                    now_ms: 200,
                },
            )
            .expect("cancelled");
        state
    }

    fn page(size: u32, token: &str) -> pb::PageRequest {
        pb::PageRequest {
            page_size: size,
            page_token: token.into(),
        }
    }

    #[test]
    fn page_requests_are_checked() {
        let cases: Vec<(Option<pb::PageRequest>, Result<usize, &str>)> = vec![
            (None, Ok(PAGE_SIZE_DEFAULT)),
            (Some(page(0, "")), Ok(PAGE_SIZE_DEFAULT)),
            (Some(page(7, "")), Ok(7)),
            (
                Some(page(1001, "")),
                Err("page.page_size: 1001 exceeds the maximum of 1000"),
            ),
        ];
        for (request, expected) in cases {
            let got = page_size(request.as_ref()).map_err(|e| e.to_string());
            assert_eq!(got, expected.map_err(str::to_owned));
        }
        assert_eq!(
            page_position(Some(&page(0, &next_token(true, Some(42))))).ok(),
            Some(Some(42))
        );
        assert_eq!(page_position(None).ok(), Some(None));
        let garbage = page_position(Some(&page(0, "zz"))).map_err(|e| e.to_string());
        assert_eq!(
            garbage,
            Err("page.page_token: not a token from a previous page".to_owned())
        );
        assert_eq!(next_token(false, Some(3)), "");
        assert_eq!(next_token(true, None), "");
    }

    #[test]
    fn state_filters_refuse_unknown_and_unspecified_states() {
        let ok = state_filter::<pb::JobState>("states", &[pb::JobState::Running as i32]);
        assert_eq!(
            ok.ok(),
            Some(BTreeSet::from([pb::JobState::Running as i32]))
        );
        for bad in [0, 99] {
            let error =
                state_filter::<pb::TaskState>("states", &[1, bad]).map_err(|e| e.to_string());
            assert_eq!(error, Err(format!("states[1]: unknown state {bad}")));
        }
    }

    #[test]
    fn submissions_are_validated_naming_the_spec_field() {
        let long_key = "k".repeat(129);
        let cases: Vec<(Option<pb::JobSpec>, &str, &str)> = vec![
            (None, "", "spec: required"),
            (
                Some(pb_spec(vec![], "a")),
                "",
                "spec.tasks: a job needs at least one task",
            ),
            (
                Some(pb_spec(
                    vec![pb_task("a", &[]), pb_task("b", &["fetch"])],
                    "a",
                )),
                "",
                "spec.tasks[1].depends_on[0]: unknown task 'fetch'",
            ),
            (
                Some(pb_spec(vec![pb_task("a", &["a"])], "a")),
                "",
                "spec.tasks[0].depends_on[0]: a task cannot depend on itself",
            ),
            (
                Some(pb_spec(vec![pb_task("a", &[])], "a")),
                &long_key,
                "idempotency_key: 129 chars, the limit is 128",
            ),
        ];
        for (spec, key, expected) in cases {
            let error = checked_spec(spec, key).expect_err(expected);
            assert_eq!(error.to_string(), expected);
            assert_eq!(error.code(), tonic::Code::InvalidArgument);
        }
        let oversized = pb::TaskSpec {
            payload: vec![0; 1024 * 1024 + 1],
            ..pb_task("a", &[])
        };
        let error = checked_spec(Some(pb_spec(vec![oversized], "a")), "").expect_err("too big");
        assert!(
            error.to_string().starts_with("spec.tasks[0].payload: "),
            "{error}"
        );
    }

    #[test]
    fn unsatisfiable_tasks_name_the_capability() {
        let spec = checked_spec(
            Some(pb_spec(
                vec![pb::TaskSpec {
                    required_capabilities: vec!["gpu".into()],
                    ..pb_task("a", &[])
                }],
                "a",
            )),
            "",
        )
        .expect("valid");
        let error = crate::state::jobs::unsatisfiable(&spec, &State::default().agents)
            .map(spec_error)
            .expect("unsatisfiable");
        assert_eq!(
            error.to_string(),
            "spec.tasks[0].required_capabilities: no agent offers 'gpu'"
        );
    }

    #[test]
    fn job_ids_are_random_or_derived_from_the_key() {
        let job_id_for = |key| id_for("synod.v1.JobService", key);
        assert_ne!(job_id_for(""), job_id_for(""));
        assert_eq!(job_id_for("retry-1"), job_id_for("retry-1"));
        assert_ne!(job_id_for("retry-1"), job_id_for("retry-2"));
        assert!(uuid::Uuid::parse_str(&job_id_for("retry-1")).is_ok());
    }

    #[test]
    fn resubmissions_match_only_the_same_spec() {
        let state = state(2);
        let job = state.jobs.get("job-1").expect("job");
        let same = checked_spec(
            Some(pb_spec(vec![pb_task("a", &[]), pb_task("b", &["a"])], "b")),
            "",
        )
        .expect("valid");
        let other = checked_spec(Some(pb_spec(vec![pb_task("a", &[])], "b")), "").expect("valid");
        assert!(same_submission(job, &same));
        assert!(!same_submission(job, &other));
    }

    #[test]
    fn jobs_list_newest_first_in_pages_with_filters() {
        let state = state(5);
        let all = JobFilter {
            states: BTreeSet::new(),
            labels: BTreeMap::new(),
        };
        let (first, token) = list_jobs(&state, &all, None, 2);
        let ids = |jobs: &[pb::Job]| jobs.iter().map(|j| j.job_id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&first), ["job-4", "job-3"]);
        let before = page_position(Some(&page(2, &token))).expect("token");
        let (second, _) = list_jobs(&state, &all, before, 2);
        assert_eq!(ids(&second), ["job-2", "job-1"]);
        let (last, token) = list_jobs(&state, &all, Some(1), 2);
        assert_eq!(
            (ids(&last), token),
            (vec!["job-0".to_owned()], String::new())
        );
        let team_a = JobFilter {
            states: BTreeSet::new(),
            labels: [("team".to_owned(), "a".to_owned())].into(),
        };
        assert_eq!(
            ids(&list_jobs(&state, &team_a, None, 10).0),
            ["job-4", "job-2", "job-0"]
        );
        let cancelled = JobFilter {
            states: [pb::JobState::Cancelled as i32].into(),
            labels: BTreeMap::new(),
        };
        assert_eq!(ids(&list_jobs(&state, &cancelled, None, 10).0), ["job-0"]);
    }

    #[test]
    fn tasks_list_in_submission_order_in_pages() {
        let state = state(2);
        let none = BTreeSet::new();
        let (first, token) = list_tasks(&state, "job-1", &none, None, 1).expect("job");
        assert_eq!(first[0].task_id, "a");
        let after = page_position(Some(&page(1, &token))).expect("token");
        let (second, token) = list_tasks(&state, "job-1", &none, after, 1).expect("job");
        assert_eq!((second[0].task_id.as_str(), token.as_str()), ("b", ""));
        let ready = [pb::TaskState::Ready as i32].into();
        let (only_ready, _) = list_tasks(&state, "job-1", &ready, None, 10).expect("job");
        assert_eq!(
            only_ready
                .iter()
                .map(|t| t.task_id.as_str())
                .collect::<Vec<_>>(),
            ["a"]
        );
        let missing = list_tasks(&state, "nope", &none, None, 1).map_err(|e| e.to_string());
        assert_eq!(missing.err().as_deref(), Some("job_id: no job 'nope'"));
    }

    #[test]
    fn unknown_ids_are_not_found_naming_them() {
        let state = state(1);
        let cases = [
            (read_job(&state, "abc", false).err(), "job_id: no job 'abc'"),
            (
                read_task(&state, "abc", "a", false).err(),
                "job_id: no job 'abc'",
            ),
            (
                read_task(&state, "job-0", "zz", false).err(),
                "task_id: no task 'zz' in job 'job-0'",
            ),
            (history(&state, "abc", 0, 1).err(), "job_id: no job 'abc'"),
        ];
        for (error, expected) in cases {
            let error = error.expect(expected);
            assert_eq!(
                (error.code(), error.to_string().as_str()),
                (tonic::Code::NotFound, expected)
            );
        }
        assert!(read_task(&state, "job-0", "b", true)
            .expect("task")
            .spec
            .is_some());
    }

    #[test]
    fn history_pages_through_events_in_order() {
        let state = state(1);
        let job = state.jobs.get("job-0").expect("job");
        let total = job.events.len() as u64;
        assert!(completed(job), "a cancelled job ends with JobCompleted");
        let (first, token) = history(&state, "job-0", 0, 2).expect("job");
        assert_eq!(first.iter().map(|e| e.sequence).collect::<Vec<_>>(), [1, 2]);
        let after = page_position(Some(&page(2, &token)))
            .expect("token")
            .expect("position");
        let (rest, token) = history(&state, "job-0", after, 100).expect("job");
        assert_eq!(
            rest.iter().map(|e| e.sequence).collect::<Vec<_>>(),
            (3..=total).collect::<Vec<_>>()
        );
        assert_eq!(token, "");
        assert_eq!(
            history(&state, "job-0", total + 5, 10).expect("job").0,
            vec![]
        );
    }

    #[test]
    fn a_cancellation_reports_the_state_it_left() {
        let state = state(1);
        let finished = Effects {
            jobs_finished: vec![crate::state::effects::JobFinished {
                job_id: "job-0".into(),
                state: crate::state::jobs::JobState::Failed,
            }],
            ..Default::default()
        };
        assert_eq!(cancelled_state("job-0", &finished), pb::JobState::Failed);
        assert_eq!(
            cancelled_state("job-0", &Effects::default()),
            pb::JobState::Compensating
        );
        assert_eq!(
            state.jobs.get("job-0").map(|j| j.state),
            Some(crate::state::jobs::JobState::Cancelled)
        );
    }
}
