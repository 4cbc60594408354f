//! Outcomes: what applying one command produced, or why it was rejected.
//!
//! Rule: `Err(Rejection)` means the command changed nothing. One case needs a change *and* a
//! refusal: an agent's report on an attempt that is not current (fencing, DESIGN.md §4) must be
//! refused and also recorded in the job's history. That is `Ok(Applied::StaleReport)`: the state
//! changed (one `StaleResultRejected` event appended), yet the request failed; the API layer
//! answers it with [`Applied::refusal`] as `FAILED_PRECONDITION`.

use serde::{Deserialize, Serialize};

use super::agents::Registered;
use super::effects::{AttemptEnd, Effects};
use super::jobs::{AttemptRef, JobState, SpecError, TaskState};
use super::KeyValue;

/// The result of applying one command.
pub type Outcome = Result<Applied, Rejection>;

/// A command that took effect.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Applied {
    /// The command took effect and has nothing to report.
    Done,
    /// A key as stored after the command.
    Kv(KeyValue),
    /// Whether a delete removed an existing key.
    Deleted(bool),
    /// An agent registered or resumed.
    AgentRegistered(Registered),
    /// An agent expired or deregistered; the attempts it held ended (and may be retried).
    AgentLost {
        /// The agent.
        agent_id: String,
        /// Each attempt it held, and how it ended.
        ended: Vec<AttemptEnd>,
        /// Follow-ups, e.g. cancellations when a job failed as a result.
        effects: Effects,
    },
    /// A job was accepted.
    JobSubmitted {
        /// The job.
        job_id: String,
        /// Tasks ready at once.
        ready: u32,
    },
    /// A task attempt was assigned: send the agent a `TaskAssignment`.
    TaskAssigned {
        /// The new attempt.
        task: AttemptRef,
        /// The agent.
        agent_id: String,
        /// When the attempt times out.
        deadline_at_ms: u64,
    },
    /// An attempt ended by a result or a timeout.
    AttemptEnded {
        /// How it ended.
        end: AttemptEnd,
        /// Follow-ups (cancellations, released parents, finished job).
        effects: Effects,
    },
    /// A job was cancelled; `effects.cancelled` lists the attempts to stop.
    JobCancelled(Effects),
    /// Subtasks were added to a job.
    SubtasksAdded {
        /// The job.
        job_id: String,
        /// The new task ids, in order.
        ids: Vec<String>,
        /// True when the parent attempt now waits for them.
        waiting: bool,
        /// Follow-ups (a subtask skipped at once may finish the job).
        effects: Effects,
    },
    /// A vote was opened (`opened`), counted a ballot, or closed.
    VoteChanged {
        /// The vote.
        vote_id: String,
        /// True when the command opened it.
        opened: bool,
    },
    /// A channel was created (offset 0) or a message published at `offset`.
    ChannelChanged {
        /// The published message's offset; 0 for a creation.
        offset: u64,
    },
    /// Messages were queued in agents' inboxes.
    MessagesQueued {
        /// Each recipient and the message's offset in its inbox.
        queued: Vec<super::inboxes::Queued>,
        /// Recipients of a broadcast whose inbox was full.
        skipped_full: u32,
    },
    /// An election's leader or queue changed (or a campaign was repeated).
    ElectionChanged {
        /// The election.
        election: String,
    },
    /// A checkpoint version was saved.
    CheckpointSaved {
        /// Its version.
        version: u64,
    },
    /// A barrier was created, or a generation of it changed.
    BarrierChanged {
        /// The barrier.
        name: String,
        /// The generation the command was about.
        generation: u64,
    },
    /// A federation changed.
    FederationChanged {
        /// The federation.
        federation_id: String,
    },
    /// A round attempt started: invite its participants.
    RoundStarted {
        /// The federation.
        federation_id: String,
        /// Round.
        round: u32,
        /// Attempt.
        attempt: u32,
    },
    /// An update's receipt was recorded (`duplicate`: the same update again).
    UpdateRecorded {
        /// True when it had been recorded before.
        duplicate: bool,
    },
    /// Participants were dropped from an attempt.
    ParticipantsDropped {
        /// The federation.
        federation_id: String,
        /// How many were still active.
        dropped: u32,
    },
    /// A report on a stale attempt: refused, but recorded as event `sequence` of the job.
    StaleReport {
        /// Why the report was refused.
        rejection: Rejection,
        /// Sequence of the `StaleResultRejected` event.
        sequence: u64,
    },
}

impl Applied {
    /// The refusal carried by a recorded-but-refused command, if this is one.
    pub fn refusal(&self) -> Option<&Rejection> {
        match self {
            Applied::StaleReport { rejection, .. } => Some(rejection),
            _ => None,
        }
    }
}

/// A command that was valid when proposed but not when applied. It changed nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Rejection {
    /// A compare-and-set condition did not hold.
    #[error("key '{key}': expected {expected}, found {found}")]
    KvConditionFailed {
        /// The key.
        key: String,
        /// What the command expected.
        expected: String,
        /// What the state held.
        found: String,
    },
    /// A registration field is invalid.
    #[error("{field}: {problem}")]
    InvalidRegistration {
        /// The field.
        field: String,
        /// What is wrong.
        problem: String,
    },
    /// A new agent's id is taken.
    #[error("agent '{agent_id}' already exists")]
    AgentExists {
        /// The agent.
        agent_id: String,
    },
    /// No such agent.
    #[error("agent '{agent_id}' is not registered")]
    UnknownAgent {
        /// The agent.
        agent_id: String,
    },
    /// A resume presented the wrong session token.
    #[error("agent '{agent_id}': wrong session token")]
    BadSessionToken {
        /// The agent.
        agent_id: String,
    },
    /// A deregistered agent tried to resume.
    #[error("agent '{agent_id}' deregistered and cannot resume")]
    AgentDeregistered {
        /// The agent.
        agent_id: String,
    },
    /// A session event names a session the agent no longer has.
    #[error("agent '{agent_id}': session '{session_id}' is not its current session")]
    StaleSession {
        /// The agent.
        agent_id: String,
        /// The session named by the command.
        session_id: String,
    },
    /// The agent's status does not allow the command.
    #[error("agent '{agent_id}' is {status}")]
    AgentNotActive {
        /// The agent.
        agent_id: String,
        /// Its status.
        status: String,
    },
    /// The agent takes no new work.
    #[error("agent '{agent_id}' is draining")]
    AgentDraining {
        /// The agent.
        agent_id: String,
    },
    /// The agent lacks a capability the task requires.
    #[error("agent '{agent_id}' does not offer capability '{capability}'")]
    MissingCapability {
        /// The agent.
        agent_id: String,
        /// The missing capability.
        capability: String,
    },
    /// The agent cannot take the task: a constraint, a resource or anti-affinity.
    #[error("agent '{agent_id}' cannot take the task: {reason}")]
    Ineligible {
        /// The agent.
        agent_id: String,
        /// Why, as the scheduler words it.
        reason: String,
    },
    /// A task the leader found unsatisfiable can be placed after all.
    #[error("task '{task_id}' of job '{job_id}' can still be placed")]
    StillSatisfiable {
        /// The job.
        job_id: String,
        /// The task.
        task_id: String,
    },
    /// The agent has no free slot.
    #[error("agent '{agent_id}' already runs {max_concurrent} tasks, its limit")]
    AgentFull {
        /// The agent.
        agent_id: String,
        /// Its limit.
        max_concurrent: u32,
    },
    /// A job spec or subtask batch breaks a rule.
    #[error("{0}")]
    InvalidSpec(SpecError),
    /// A job id is taken.
    #[error("job '{job_id}' already exists")]
    JobExists {
        /// The job.
        job_id: String,
    },
    /// No such job.
    #[error("job '{job_id}' not found")]
    UnknownJob {
        /// The job.
        job_id: String,
    },
    /// No such task.
    #[error("job '{job_id}': task '{task_id}' not found")]
    UnknownTask {
        /// The job.
        job_id: String,
        /// The task.
        task_id: String,
    },
    /// The job is terminal.
    #[error("job '{job_id}' already finished ({state:?})")]
    JobFinished {
        /// The job.
        job_id: String,
        /// Its terminal state.
        state: JobState,
    },
    /// An assignment for a task that is not `Ready`.
    #[error("job '{job_id}': task '{task_id}' is {state:?}, not Ready")]
    TaskNotReady {
        /// The job.
        job_id: String,
        /// The task.
        task_id: String,
        /// Its state.
        state: TaskState,
    },
    /// An assignment before the retry backoff passed.
    #[error("job '{job_id}': task '{task_id}' may not be assigned before {not_before_ms}")]
    BackoffPending {
        /// The job.
        job_id: String,
        /// The task.
        task_id: String,
        /// When it may be.
        not_before_ms: u64,
    },
    /// An assignment with an attempt number other than the next one.
    #[error("job '{job_id}': task '{task_id}' attempt {attempt}, expected {expected}")]
    WrongAttempt {
        /// The job.
        job_id: String,
        /// The task.
        task_id: String,
        /// The attempt proposed.
        attempt: u32,
        /// The next attempt.
        expected: u32,
    },
    /// A report on an attempt that is not the current one, or not held by the reporter.
    #[error("job '{job_id}': task '{task_id}' attempt {attempt} by agent '{agent_id}' is stale ({current})")]
    StaleAttempt {
        /// The job.
        job_id: String,
        /// The task.
        task_id: String,
        /// The attempt reported on.
        attempt: u32,
        /// The reporting agent.
        agent_id: String,
        /// What the task holds instead.
        current: String,
    },
    /// A timeout for an attempt that is not current or no longer in progress.
    #[error("job '{job_id}': task '{task_id}' attempt {attempt} is not in progress ({current})")]
    AttemptNotInProgress {
        /// The job.
        job_id: String,
        /// The task.
        task_id: String,
        /// The attempt named.
        attempt: u32,
        /// What the task holds instead.
        current: String,
    },
    /// A job timeout before the job's deadline, or for a job without one.
    #[error("job '{job_id}': {problem}")]
    JobDeadlineNotReached {
        /// The job.
        job_id: String,
        /// "times out at …, not before" or "has no timeout".
        problem: String,
    },
    /// A timeout before the attempt's deadline (it may have been pushed back).
    #[error("job '{job_id}': task '{task_id}' times out at {deadline_at_ms}, not before")]
    DeadlineNotReached {
        /// The job.
        job_id: String,
        /// The task.
        task_id: String,
        /// The deadline.
        deadline_at_ms: u64,
    },
    /// A timeout while the attempt waits for subtasks (its timeout is suspended).
    #[error("job '{job_id}': task '{task_id}' is waiting for subtasks")]
    WaitingForSubtasks {
        /// The job.
        job_id: String,
        /// The task.
        task_id: String,
    },
    /// No such channel.
    #[error("channel: no channel '{name}'")]
    UnknownChannel {
        /// The channel.
        name: String,
    },
    /// A channel name already in use with other settings.
    #[error("channel '{name}' already exists with other settings")]
    ChannelExists {
        /// The channel.
        name: String,
    },
    /// A committed publish to a best-effort channel.
    #[error("channel '{name}' is best-effort: its messages are not committed")]
    NotDurable {
        /// The channel.
        name: String,
    },
    /// An agent's inbox holds as much as it may.
    #[error("to_agent_id: the inbox of agent '{agent_id}' is full")]
    InboxFull {
        /// The agent.
        agent_id: String,
    },
    /// No such election.
    #[error("election: no election '{election}'")]
    UnknownElection {
        /// The election.
        election: String,
    },
    /// A resignation by an agent that does not lead.
    #[error("agent '{agent_id}' does not lead election '{election}'")]
    NotLeader {
        /// The election.
        election: String,
        /// The agent.
        agent_id: String,
    },
    /// A resignation of a term that is not the current one.
    #[error("election '{election}': term {term} is not the current term {current}")]
    StaleTerm {
        /// The election.
        election: String,
        /// The term given.
        term: u64,
        /// The current term.
        current: u64,
    },
    /// No such barrier.
    #[error("name: no barrier '{name}'")]
    UnknownBarrier {
        /// The barrier.
        name: String,
    },
    /// A barrier name already in use.
    #[error("barrier '{name}' already exists")]
    BarrierExists {
        /// The barrier.
        name: String,
    },
    /// An arrival, entry or departure the barrier's state does not allow.
    #[error("barrier '{name}': {problem}")]
    BarrierStep {
        /// The barrier.
        name: String,
        /// Why.
        problem: String,
    },
    /// A party not among the barrier's listed agents.
    #[error("'{party}' is not a party of barrier '{name}'")]
    NotAParty {
        /// The barrier.
        name: String,
        /// The would-be party.
        party: String,
    },
    /// No such federation.
    #[error("federation_id: no federation '{federation_id}'")]
    UnknownFederation {
        /// The federation.
        federation_id: String,
    },
    /// A federation id already in use.
    #[error("federation '{federation_id}' already exists")]
    FederationExists {
        /// The federation.
        federation_id: String,
    },
    /// A federation command its current state does not allow.
    #[error("federation '{federation_id}': {problem}")]
    FederationConflict {
        /// The federation.
        federation_id: String,
        /// Why.
        problem: String,
    },
    /// A well-formed update (or step) the round cannot use.
    #[error("{reason}")]
    UpdateRefused {
        /// The participant.
        agent_id: String,
        /// Why, e.g. "not selected", "stale attempt".
        reason: String,
    },
    /// No such vote.
    #[error("vote_id: no vote '{vote_id}'")]
    UnknownVote {
        /// The vote.
        vote_id: String,
    },
    /// A vote id already in use.
    #[error("vote '{vote_id}' already exists")]
    VoteExists {
        /// The vote.
        vote_id: String,
    },
    /// A ballot or expiry for a vote that is no longer open.
    #[error("vote '{vote_id}' is {state:?}, no longer open")]
    VoteClosed {
        /// The vote.
        vote_id: String,
        /// Its state.
        state: crate::state::votes::VoteState,
    },
    /// A ballot or arrival after its deadline, before the expiry was applied.
    #[error("'{name}' closed at {deadline_at_ms}: too late")]
    PastDeadline {
        /// The vote or barrier.
        name: String,
        /// Its deadline.
        deadline_at_ms: u64,
    },
    /// A ballot by an agent that may not vote.
    #[error("agent '{agent_id}' is not an eligible voter of vote '{vote_id}'")]
    NotEligible {
        /// The vote.
        vote_id: String,
        /// The agent.
        agent_id: String,
    },
    /// A second, different ballot.
    #[error("agent '{agent_id}' already voted '{option}' in vote '{vote_id}'")]
    AlreadyVoted {
        /// The vote.
        vote_id: String,
        /// The voter.
        agent_id: String,
        /// The option it chose.
        option: String,
    },
    /// An expiry before the vote's deadline.
    #[error("vote '{vote_id}' closes at {deadline_at_ms}, not before")]
    VoteDeadlineNotReached {
        /// The vote.
        vote_id: String,
        /// Its deadline.
        deadline_at_ms: u64,
    },
    /// A result output over the size limit.
    #[error("job '{job_id}': task '{task_id}' output: {bytes} bytes, the limit is {limit}")]
    OutputTooLarge {
        /// The job.
        job_id: String,
        /// The task.
        task_id: String,
        /// Its size.
        bytes: u64,
        /// The limit.
        limit: u64,
    },
}
