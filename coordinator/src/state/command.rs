//! Commands: the only way the replicated state changes, and the batch that carries them.

use serde::{Deserialize, Serialize};

use super::agents::{AgentSelector, Registration};
use super::barriers::{BarrierSpec, Step};
use super::channels::ChannelSpec;
use super::checkpoints::Save;
use super::federations::secure::SecureStep;
use super::federations::{
    EncryptedShare, FederationSpec, RoundCommit, RoundStart, RoundState, StoredModel, UpdateReceipt,
};
use super::jobs::{JobSpec, TaskSpec};
use super::votes::VoteSpec;

/// One Raft entry's worth of commands, stamped with the proposing leader's clock.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Proposal {
    /// Leader wall-clock time when the batch was proposed, in Unix milliseconds.
    pub now_ms: u64,
    /// Commands applied in order.
    pub commands: Vec<Command>,
}

/// Where and when a command is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    /// Raft log index of the entry carrying the command.
    pub index: u64,
    /// Leader timestamp of the entry, in Unix milliseconds.
    pub now_ms: u64,
}

/// A state change proposed through Raft.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// Changes nothing; used to confirm leadership and to measure the log.
    Noop,
    /// Sets a key, optionally only when a condition on its current state holds.
    KvPut {
        /// The key.
        key: String,
        /// The new value.
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
        /// Condition checked at apply time.
        condition: KvCondition,
    },
    /// Deletes a key if present.
    KvDelete {
        /// The key.
        key: String,
    },
    /// Registers a new agent, or resumes one with its session token.
    RegisterAgent(Registration),
    /// An agent's session stream ended; within its lease it keeps its tasks.
    AgentDisconnected {
        /// The agent.
        agent_id: String,
        /// The session that ended.
        session_id: String,
    },
    /// An agent's lease passed: it expires and every attempt it holds is lost (and retried
    /// according to each task's policy).
    ExpireAgent {
        /// The agent.
        agent_id: String,
        /// The session whose lease passed.
        session_id: String,
    },
    /// An agent leaves for good; its attempts are lost as with an expiry.
    DeregisterAgent {
        /// The agent.
        agent_id: String,
    },
    /// An agent takes no new work.
    DrainAgent {
        /// The agent.
        agent_id: String,
    },
    /// An operator quarantines an agent (until released), or releases it.
    QuarantineAgent {
        /// The agent.
        agent_id: String,
        /// True to quarantine, false to release.
        quarantined: bool,
        /// Why, recorded on the agent.
        reason: String,
    },
    /// Submits a job (validated again at apply).
    SubmitJob {
        /// Id chosen by the leader.
        job_id: String,
        /// The job.
        spec: JobSpec,
    },
    /// Assigns the next attempt of a ready task to an agent.
    AssignTask {
        /// The job.
        job_id: String,
        /// The task.
        task_id: String,
        /// The new attempt number: the task's current attempt + 1.
        attempt: u32,
        /// The agent.
        agent_id: String,
    },
    /// The agent started an attempt (fenced).
    StartTask {
        /// The job.
        job_id: String,
        /// The task.
        task_id: String,
        /// The attempt.
        attempt: u32,
        /// The reporting agent.
        agent_id: String,
    },
    /// The agent's result for an attempt (fenced).
    CompleteTask {
        /// The job.
        job_id: String,
        /// The task.
        task_id: String,
        /// The attempt.
        attempt: u32,
        /// The reporting agent.
        agent_id: String,
        /// Success or failure.
        outcome: TaskOutcome,
    },
    /// An attempt passed its deadline.
    TimeOutTask {
        /// The job.
        job_id: String,
        /// The task.
        task_id: String,
        /// The attempt.
        attempt: u32,
    },
    /// Ends a ready task that no live agent can take (the leader saw it so for its
    /// unsatisfiable timeout); applied only if that still holds.
    MarkUnsatisfiable {
        /// The job.
        job_id: String,
        /// The task.
        task_id: String,
    },
    /// Cancels an unfinished job.
    CancelJob {
        /// The job.
        job_id: String,
        /// Why.
        reason: String,
    },
    /// A running attempt adds subtasks to its job (fenced).
    AddSubtasks {
        /// The job.
        job_id: String,
        /// The task adding them.
        parent_task_id: String,
        /// The parent's attempt.
        attempt: u32,
        /// The reporting agent.
        agent_id: String,
        /// The new tasks.
        subtasks: Vec<TaskSpec>,
        /// The parent attempt waits (its timeout suspended) until all are terminal.
        wait: bool,
    },
    /// An unfinished job passed its own deadline (`JobSpec::timeout_ms` after submission):
    /// it fails and its open tasks are cancelled.
    TimeOutJob {
        /// The job.
        job_id: String,
    },
    /// Opens a vote among the voters the leader resolved.
    OpenVote {
        /// Id chosen by the leader.
        vote_id: String,
        /// The vote.
        spec: VoteSpec,
    },
    /// Counts one voter's ballot.
    CastBallot {
        /// The vote.
        vote_id: String,
        /// The voter.
        agent_id: String,
        /// The option chosen.
        option: String,
    },
    /// An open vote passed its deadline undecided: it fails.
    ExpireVote {
        /// The vote.
        vote_id: String,
    },
    /// Creates a barrier.
    CreateBarrier {
        /// Its name.
        name: String,
        /// The barrier.
        spec: BarrierSpec,
    },
    /// A party arrives at, enters or leaves a barrier generation.
    BarrierStep {
        /// The barrier.
        name: String,
        /// The party.
        party: String,
        /// The generation; 0 means the current one.
        generation: u64,
        /// Arrive, enter or leave.
        step: Step,
    },
    /// A barrier generation passed its deadline: it breaks.
    BreakBarrier {
        /// The barrier.
        name: String,
        /// The generation.
        generation: u64,
    },
    /// Deletes a barrier, breaking its open generation.
    DeleteBarrier {
        /// The barrier.
        name: String,
    },
    /// Saves a new version of a checkpoint.
    SaveCheckpoint(Save),
    /// Starts a federation (validated again at apply).
    StartFederation {
        /// Id chosen by the leader.
        federation_id: String,
        /// The federation.
        spec: Box<FederationSpec>,
        /// Idempotency key, if any.
        idempotency_key: String,
        /// The initial model when it came inline.
        initial_model: Option<StoredModel>,
    },
    /// Appends bytes to the model being staged for a round (0: the initial model).
    StageModel {
        /// Federation.
        federation_id: String,
        /// Round.
        round: u32,
        /// Attempt (0 for the initial model).
        attempt: u32,
        /// Where the bytes go; 0 starts over.
        offset: u64,
        /// The bytes, shared: cloning the entry (to replicate or apply it) copies nothing.
        data: bytes::Bytes,
    },
    /// The staged initial model is complete.
    CommitInitialModel {
        /// Federation.
        federation_id: String,
        /// CRC-32 of the staged bytes, checked by the API.
        crc32: u32,
    },
    /// Opens a round attempt with the leader's sample.
    StartRound(RoundStart),
    /// A participant's update was received and folded in by the leader.
    RecordUpdate(UpdateReceipt),
    /// The leader refused a participant's update.
    RejectUpdate {
        /// Federation.
        federation_id: String,
        /// Round.
        round: u32,
        /// Attempt.
        attempt: u32,
        /// Participant.
        agent_id: String,
        /// Why.
        reason: String,
    },
    /// Participants missed a deadline or lost their session.
    DropParticipants {
        /// Federation.
        federation_id: String,
        /// Round.
        round: u32,
        /// Attempt.
        attempt: u32,
        /// Who.
        agent_ids: Vec<String>,
        /// Why.
        reason: String,
    },
    /// The staged global model is the round's result.
    CommitRound(RoundCommit),
    /// The open attempt failed.
    FailRound {
        /// Federation.
        federation_id: String,
        /// Round.
        round: u32,
        /// Attempt.
        attempt: u32,
        /// Why.
        reason: String,
    },
    /// Cancels a federation.
    CancelFederation {
        /// Federation.
        federation_id: String,
        /// Why.
        reason: String,
    },
    /// Secure aggregation: a participant's public key.
    AdvertiseKey {
        /// Attempt and participant.
        step: SecureStep,
        /// X25519 public key.
        #[serde(with = "serde_bytes")]
        public_key: Vec<u8>,
    },
    /// Secure aggregation: a participant's encrypted key shares.
    ShareKeys {
        /// Attempt and participant.
        step: SecureStep,
        /// One per other peer.
        shares: Vec<EncryptedShare>,
    },
    /// Secure aggregation: a survivor's shares of dropped participants' keys.
    RevealShares {
        /// Attempt and participant.
        step: SecureStep,
        /// (dropped participant, share plaintext).
        shares: Vec<(String, serde_bytes::ByteBuf)>,
    },
    /// Secure aggregation: the attempt moves to its next phase.
    AdvancePhase {
        /// Federation.
        federation_id: String,
        /// Round.
        round: u32,
        /// Attempt.
        attempt: u32,
        /// The next phase.
        to: RoundState,
        /// When it ends.
        phase_deadline_at_ms: u64,
    },
    /// A live agent campaigns to lead an election.
    Campaign {
        /// The election.
        election: String,
        /// The candidate.
        agent_id: String,
        /// What it publishes while leading.
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
    /// A queued candidate stops waiting.
    Withdraw {
        /// The election.
        election: String,
        /// The candidate.
        agent_id: String,
    },
    /// Creates a publish/subscribe channel.
    CreateChannel {
        /// Its name.
        name: String,
        /// The channel.
        spec: ChannelSpec,
    },
    /// Queues a message in one agent's inbox.
    SendDirect {
        /// The recipient.
        to_agent_id: String,
        /// Who sends, as authenticated by the API.
        sender: String,
        /// The payload.
        #[serde(with = "serde_bytes")]
        payload: Vec<u8>,
    },
    /// Queues a message in the inbox of every live agent matching a selector.
    Broadcast {
        /// The recipients.
        selector: AgentSelector,
        /// Who sends, as authenticated by the API.
        sender: String,
        /// The payload.
        #[serde(with = "serde_bytes")]
        payload: Vec<u8>,
    },
    /// An agent processed its inbox up to and including `offset`.
    AckInbox {
        /// The agent.
        agent_id: String,
        /// Highest offset processed.
        offset: u64,
    },
    /// Appends a message to a durable channel.
    Publish {
        /// The channel.
        channel: String,
        /// Who publishes.
        sender: String,
        /// The payload.
        #[serde(with = "serde_bytes")]
        payload: Vec<u8>,
    },
    /// The leader gives up its term.
    Resign {
        /// The election.
        election: String,
        /// The leader.
        agent_id: String,
        /// The term resigned.
        term: u64,
    },
}

/// What an agent reports at the end of an attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TaskOutcome {
    /// The attempt succeeded.
    Succeeded {
        /// The output.
        #[serde(with = "serde_bytes")]
        output: Vec<u8>,
    },
    /// The attempt failed.
    Failed {
        /// What went wrong.
        error: String,
        /// True when another attempt may succeed.
        retryable: bool,
    },
}

/// A precondition on a key, checked when the command is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvCondition {
    /// No precondition.
    Always,
    /// The key must not exist.
    Absent,
    /// The key's `mod_index` must equal this value.
    ModIndex(u64),
}

impl Command {
    /// Approximate encoded size, used to cap batch sizes.
    pub fn size_bytes(&self) -> usize {
        match self {
            Command::Noop => 1,
            Command::KvPut { key, value, .. } => 16 + key.len() + value.len(),
            Command::KvDelete { key } => 8 + key.len(),
            Command::RegisterAgent(registration) => registration_bytes(registration),
            Command::AgentDisconnected {
                agent_id,
                session_id,
            }
            | Command::ExpireAgent {
                agent_id,
                session_id,
            } => 8 + agent_id.len() + session_id.len(),
            Command::QuarantineAgent {
                agent_id, reason, ..
            } => 8 + agent_id.len() + reason.len(),
            Command::DeregisterAgent { agent_id } | Command::DrainAgent { agent_id } => {
                8 + agent_id.len()
            }
            Command::SubmitJob { job_id, spec } => job_id.len() + spec_bytes(spec),
            Command::AssignTask {
                job_id,
                task_id,
                agent_id,
                ..
            }
            | Command::StartTask {
                job_id,
                task_id,
                agent_id,
                ..
            } => 16 + job_id.len() + task_id.len() + agent_id.len(),
            Command::CompleteTask {
                job_id,
                task_id,
                agent_id,
                outcome,
                ..
            } => 16 + job_id.len() + task_id.len() + agent_id.len() + outcome_bytes(outcome),
            Command::TimeOutTask {
                job_id, task_id, ..
            } => 16 + job_id.len() + task_id.len(),
            Command::CancelJob { job_id, reason } => 8 + job_id.len() + reason.len(),
            Command::MarkUnsatisfiable { job_id, task_id } => 8 + job_id.len() + task_id.len(),
            Command::AddSubtasks {
                job_id,
                parent_task_id,
                agent_id,
                subtasks,
                ..
            } => {
                let tasks: usize = subtasks.iter().map(task_bytes).sum();
                16 + job_id.len() + parent_task_id.len() + agent_id.len() + tasks
            }
            Command::TimeOutJob { job_id } => 8 + job_id.len(),
            Command::OpenVote { vote_id, spec } => {
                let strings = spec.question.len()
                    + spec.options.iter().map(String::len).sum::<usize>()
                    + spec.voters.iter().map(|v| v.len() + 8).sum::<usize>();
                32 + vote_id.len() + spec.opened_by.len() + strings
            }
            Command::CastBallot {
                vote_id,
                agent_id,
                option,
            } => 8 + vote_id.len() + agent_id.len() + option.len(),
            Command::ExpireVote { vote_id } => 8 + vote_id.len(),
            Command::CreateBarrier { name, spec } => {
                let parties = match &spec.parties {
                    super::barriers::Parties::Count(_) => 4,
                    super::barriers::Parties::Agents(ids) => ids.iter().map(|i| i.len() + 8).sum(),
                };
                24 + name.len() + parties
            }
            Command::BarrierStep { name, party, .. } => 16 + name.len() + party.len(),
            Command::BreakBarrier { name, .. } | Command::DeleteBarrier { name } => 16 + name.len(),
            Command::Campaign {
                election,
                agent_id,
                value,
            } => 16 + election.len() + agent_id.len() + value.len(),
            Command::Withdraw { election, agent_id }
            | Command::Resign {
                election, agent_id, ..
            } => 16 + election.len() + agent_id.len(),
            Command::CreateChannel { name, .. } => 32 + name.len(),
            Command::Publish {
                channel,
                sender,
                payload,
            } => 16 + channel.len() + sender.len() + payload.len(),
            Command::SendDirect {
                to_agent_id,
                sender,
                payload,
            } => 16 + to_agent_id.len() + sender.len() + payload.len(),
            Command::Broadcast {
                selector,
                sender,
                payload,
            } => {
                let caps: usize = selector.capabilities.iter().map(String::len).sum();
                let labels: usize = selector.labels.iter().map(|(k, v)| k.len() + v.len()).sum();
                16 + caps + labels + sender.len() + payload.len()
            }
            Command::AckInbox { agent_id, .. } => 16 + agent_id.len(),
            Command::SaveCheckpoint(save) => {
                let metadata: usize = save.metadata.iter().map(|(k, v)| k.len() + v.len()).sum();
                64 + save.name.len() + save.data.len() + metadata + save.created_by.len()
            }
            command => super::federations::command_bytes(command),
        }
    }
}

fn registration_bytes(registration: &Registration) -> usize {
    let strings = registration
        .capabilities
        .iter()
        .map(String::len)
        .sum::<usize>()
        + registration
            .labels
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum::<usize>()
        + registration
            .resources
            .keys()
            .map(|k| k.len() + 8)
            .sum::<usize>();
    let ids = registration.agent_id.len()
        + registration.session_id.len()
        + registration.session_token.len()
        + registration.resume_token.as_ref().map_or(0, String::len)
        + registration.name.len();
    16 + ids + strings
}

fn spec_bytes(spec: &JobSpec) -> usize {
    let labels: usize = spec.labels.iter().map(|(k, v)| k.len() + v.len()).sum();
    let tasks: usize = spec.tasks.iter().map(task_bytes).sum();
    32 + spec.name.len() + spec.goal.description.len() + labels + tasks
}

fn task_bytes(task: &TaskSpec) -> usize {
    let deps: usize = task.depends_on.iter().map(String::len).sum();
    let caps: usize = task.required_capabilities.iter().map(String::len).sum();
    let labels: usize = task
        .preferred_labels
        .iter()
        .map(|(k, v)| k.len() + v.len())
        .sum();
    let strings = task.id.len() + task.kind.len() + task.description.len();
    48 + strings + task.payload.len() + deps + caps + labels
}

fn outcome_bytes(outcome: &TaskOutcome) -> usize {
    match outcome {
        TaskOutcome::Succeeded { output } => output.len(),
        TaskOutcome::Failed { error, .. } => 1 + error.len(),
    }
}
