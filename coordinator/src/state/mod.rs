//! The replicated state machine: every durable fact of a Synod cluster.
//!
//! It changes only by applying [`Proposal`]s taken from the Raft log, and applying is pure and
//! deterministic: no I/O, no clocks, no randomness. Time reaches it as data (`Meta::now_ms`, the
//! leader's clock when it proposed the batch), so every replica computes the same state.
//!
//! ```text
//!   Raft log entry ──► Proposal { now_ms, commands[..] }
//!                          │ apply_proposal(&mut State, .., index)
//!                          ▼
//!   State ──(one Outcome per command; a rejected command changes nothing)──► Vec<Outcome>
//! ```
//!
//! Parts: [`KvStore`] (keys), [`AgentRegistry`] (agents and their sessions), [`JobTable`]
//! (goal-driven jobs of fenced, retried tasks), and the coordination primitives — votes,
//! barriers, checkpoints, elections and channels, one module each. Commands that touch several
//! parts (assign, results, agent loss: tasks, barrier parties and leaderships) are dispatched
//! here; each part owns its rules.
//!
//! This module must never reach tokio, the network, the disk or a clock.

pub mod agents;
pub mod barriers;
pub mod channels;
pub mod checkpoints;
mod command;
pub mod effects;
pub mod elections;
pub mod federations;
pub mod inboxes;
pub mod jobs;
mod kv;
mod outcome;
pub mod placement;
pub mod votes;

pub use agents::{AgentRecord, AgentRegistry, AgentStatus, Registration};
pub use command::{Command, KvCondition, Meta, Proposal, TaskOutcome};
pub use effects::{AttemptEnd, Effects};
pub use jobs::JobTable;
pub use kv::{KeyValue, KvStore, KEY_BYTES_MAX, VALUE_BYTES_MAX};
pub use outcome::{Applied, Outcome, Rejection};

use jobs::Report;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Everything the cluster has committed. Serialized whole into snapshots.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// The replicated key-value namespace.
    pub kv: KvStore,
    /// Every agent that registered.
    pub agents: AgentRegistry,
    /// Every job.
    pub jobs: JobTable,
    /// Every vote.
    pub votes: votes::VoteTable,
    /// Every barrier.
    pub barriers: barriers::BarrierTable,
    /// Every checkpoint.
    pub checkpoints: checkpoints::CheckpointTable,
    /// Every election.
    pub elections: elections::ElectionTable,
    /// Every channel, with the messages of durable ones.
    pub channels: channels::ChannelTable,
    /// Every agent's inbox of direct and broadcast messages.
    pub inboxes: inboxes::InboxTable,
    /// Every federation and its rounds.
    pub federations: federations::FederationTable,
    /// Number of commands applied (accepted or rejected) since the cluster began.
    pub commands_applied: u64,
    /// Leader timestamp of the last applied proposal, in Unix milliseconds.
    pub last_proposal_ms: u64,
}

impl State {
    /// Applies one committed proposal found at log `index`, returning one outcome per command.
    pub fn apply_proposal(&mut self, proposal: &Proposal, index: u64) -> Vec<Outcome> {
        let meta = Meta {
            index,
            now_ms: proposal.now_ms,
        };
        self.last_proposal_ms = self.last_proposal_ms.max(proposal.now_ms);
        proposal
            .commands
            .iter()
            .map(|command| self.apply(command, meta))
            .collect()
    }

    /// Applies one command. A command that is not valid against the current state is rejected
    /// with a reason and leaves the state untouched.
    pub fn apply(&mut self, command: &Command, meta: Meta) -> Outcome {
        self.commands_applied += 1;
        match command {
            Command::Noop => Ok(Applied::Done),
            Command::KvPut {
                key,
                value,
                condition,
            } => self
                .kv
                .put(key, value, *condition, meta.index)
                .map(Applied::Kv),
            Command::KvDelete { key } => Ok(Applied::Deleted(self.kv.delete(key))),
            command if federations::is_federation_command(command) => {
                federations::apply(&mut self.federations, command, &self.agents, meta)
            }
            command => self.apply_coordination(command, meta),
        }
    }

    /// Applies an agent or job command.
    fn apply_coordination(&mut self, command: &Command, meta: Meta) -> Outcome {
        let agents = &mut self.agents;
        match command {
            Command::RegisterAgent(registration) => agents
                .register(registration, meta.now_ms)
                .map(Applied::AgentRegistered),
            Command::AgentDisconnected {
                agent_id,
                session_id,
            } => agents
                .disconnect(agent_id, session_id, meta.now_ms)
                .map(|()| Applied::Done),
            Command::ExpireAgent {
                agent_id,
                session_id,
            } => {
                let tasks = agents.expire(agent_id, session_id)?;
                Ok(self.lose_agent(agent_id, &tasks, meta))
            }
            Command::DeregisterAgent { agent_id } => {
                let tasks = agents.deregister(agent_id)?;
                self.inboxes.agent_left(agent_id);
                Ok(self.lose_agent(agent_id, &tasks, meta))
            }
            Command::DrainAgent { agent_id } => agents.drain(agent_id).map(|()| Applied::Done),
            Command::QuarantineAgent {
                agent_id,
                quarantined,
                reason,
            } => agents
                .quarantine(agent_id, quarantined.then(|| reason.clone()))
                .map(|()| Applied::Done),
            command => self.apply_vote(command, meta),
        }
    }

    /// Applies a vote command, or passes the command on to the job commands.
    fn apply_vote(&mut self, command: &Command, meta: Meta) -> Outcome {
        match command {
            Command::OpenVote { vote_id, spec } => {
                self.votes.open(vote_id, spec, &self.agents, meta)
            }
            Command::CastBallot {
                vote_id,
                agent_id,
                option,
            } => self.votes.cast(vote_id, agent_id, option, meta),
            Command::ExpireVote { vote_id } => self.votes.expire(vote_id, meta),
            Command::CreateBarrier { name, spec } => {
                self.barriers.create(name, spec, &self.agents, meta)
            }
            Command::BarrierStep {
                name,
                party,
                generation,
                step,
            } => self.barriers.step(name, party, *generation, *step, meta),
            Command::BreakBarrier { name, generation } => {
                self.barriers.time_out(name, *generation, meta)
            }
            Command::DeleteBarrier { name } => self.barriers.delete(name, meta),
            Command::Campaign {
                election,
                agent_id,
                value,
            } => self
                .elections
                .campaign(election, agent_id, value, &self.agents, meta),
            Command::Withdraw { election, agent_id } => self.elections.withdraw(election, agent_id),
            Command::Resign {
                election,
                agent_id,
                term,
            } => self.elections.resign(election, agent_id, *term, meta),
            Command::CreateChannel { name, spec } => self.channels.create(name, spec, meta),
            Command::Publish {
                channel,
                sender,
                payload,
            } => self.channels.publish(channel, sender, payload, meta),
            Command::SendDirect {
                to_agent_id,
                sender,
                payload,
            } => self
                .inboxes
                .send_direct(to_agent_id, sender, payload, &self.agents, meta),
            Command::Broadcast {
                selector,
                sender,
                payload,
            } => self
                .inboxes
                .broadcast(selector, sender, payload, &self.agents, meta),
            Command::AckInbox { agent_id, offset } => self.inboxes.ack(agent_id, *offset),
            Command::SaveCheckpoint(save) => {
                self.checkpoints.save(save, &self.jobs, &self.agents, meta)
            }
            command => self.apply_job(command, meta),
        }
    }

    /// Applies a job command.
    fn apply_job(&mut self, command: &Command, meta: Meta) -> Outcome {
        let (jobs, agents) = (&mut self.jobs, &mut self.agents);
        match command {
            Command::SubmitJob { job_id, spec } => jobs.submit(job_id, spec, agents, meta),
            Command::AssignTask {
                job_id,
                task_id,
                attempt,
                agent_id,
            } => jobs.assign(report(job_id, task_id, *attempt, agent_id), agents, meta),
            Command::StartTask {
                job_id,
                task_id,
                attempt,
                agent_id,
            } => jobs.start(report(job_id, task_id, *attempt, agent_id), agents, meta),
            Command::CompleteTask {
                job_id,
                task_id,
                attempt,
                agent_id,
                outcome,
            } => {
                let report = report(job_id, task_id, *attempt, agent_id);
                jobs.complete(report, outcome, agents, meta)
            }
            Command::TimeOutTask {
                job_id,
                task_id,
                attempt,
            } => jobs.time_out(report(job_id, task_id, *attempt, ""), agents, meta),
            Command::CancelJob { job_id, reason } => jobs.cancel(job_id, reason, agents, meta),
            Command::MarkUnsatisfiable { job_id, task_id } => {
                jobs.mark_unsatisfiable(job_id, task_id, agents, meta)
            }
            Command::TimeOutJob { job_id } => jobs.time_out_job(job_id, agents, meta),
            Command::AddSubtasks {
                job_id,
                parent_task_id,
                attempt,
                agent_id,
                subtasks,
                wait,
            } => {
                let report = report(job_id, parent_task_id, *attempt, agent_id);
                jobs.add_subtasks(report, subtasks, *wait, agents, meta)
            }
            // Dispatched by `apply`, `apply_coordination` and `apply_vote` before reaching here;
            // listed one by one (no `_`) so a new command cannot be forgotten silently.
            Command::Noop
            | Command::KvPut { .. }
            | Command::KvDelete { .. }
            | Command::RegisterAgent(_)
            | Command::AgentDisconnected { .. }
            | Command::ExpireAgent { .. }
            | Command::DeregisterAgent { .. }
            | Command::DrainAgent { .. }
            | Command::QuarantineAgent { .. }
            | Command::OpenVote { .. }
            | Command::CastBallot { .. }
            | Command::ExpireVote { .. }
            | Command::CreateBarrier { .. }
            | Command::BarrierStep { .. }
            | Command::BreakBarrier { .. }
            | Command::DeleteBarrier { .. }
            | Command::SaveCheckpoint(_)
            | Command::Campaign { .. }
            | Command::Withdraw { .. }
            | Command::Resign { .. }
            | Command::CreateChannel { .. }
            | Command::Publish { .. }
            | Command::SendDirect { .. }
            | Command::Broadcast { .. }
            | Command::AckInbox { .. } => Ok(Applied::Done),
            // Federation commands are dispatched by `apply`.
            _ => Ok(Applied::Done),
        }
    }

    /// Ends the attempts an expired or deregistered agent held, and breaks the barrier
    /// generations it is a party of.
    fn lose_agent(
        &mut self,
        agent_id: &str,
        tasks: &std::collections::BTreeSet<jobs::TaskKey>,
        meta: Meta,
    ) -> Applied {
        let (ended, effects) = self
            .jobs
            .lose_agent(agent_id, tasks, &mut self.agents, meta);
        self.barriers.party_lost(agent_id, meta);
        self.elections.agent_lost(agent_id, meta);
        self.federations.agent_lost(agent_id, meta);
        Applied::AgentLost {
            agent_id: agent_id.to_owned(),
            ended,
            effects,
        }
    }

    /// A digest of the whole state: equal digests at equal applied indexes mean identical
    /// replicas.
    pub fn digest(&self) -> String {
        let bytes = postcard::to_allocvec(self).unwrap_or_default();
        let hash = Sha256::digest(&bytes);
        hash.iter().map(|b| format!("{b:02x}")).collect()
    }
}

fn report<'a>(job_id: &'a str, task_id: &'a str, attempt: u32, agent_id: &'a str) -> Report<'a> {
    Report {
        job_id,
        task_id,
        attempt,
        agent_id,
    }
}

#[cfg(test)]
mod testing;
#[cfg(test)]
mod tests;
