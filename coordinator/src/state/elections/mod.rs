//! [`ElectionTable`]: leader election for groups of agents (like etcd's election API),
//! changed by `Campaign`, `Withdraw`, `Resign` and the loss of an agent.
//!
//! ```text
//!   Campaign ─► no leader: leads (term = log index) │ else queued, in arrival order
//!   Resign (current term) / leader's agent lost ─► the next queued candidate leads
//! ```
//! The term is the Raft log index at which leadership was granted, so it strictly increases
//! with every new leader of an election: a fencing token for what the leader guards.
//! Pure: no I/O, clock or randomness.

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::jobs::SpecError;
use super::{AgentRegistry, Applied, Meta, Outcome, Rejection};

/// Longest election name, in characters.
pub const NAME_CHARS_MAX: usize = 256;
/// Largest value a leader may publish.
pub const VALUE_BYTES_MAX: usize = 64 * 1024;

/// A granted leadership.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leadership {
    /// The leading agent.
    pub agent_id: String,
    /// What it published.
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    /// Log index at which it was granted (the fencing token).
    pub term: u64,
    /// When it was granted.
    pub elected_at_ms: u64,
}

/// A queued candidate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Candidate {
    /// The agent.
    pub agent_id: String,
    /// What it will publish when it leads.
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
}

/// One election.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Election {
    /// The current leader.
    pub leader: Option<Leadership>,
    /// Candidates waiting, in arrival order.
    pub queue: Vec<Candidate>,
    /// Log index of the latest change of leader (0 before the first).
    pub changed_at_index: u64,
}

/// Every election by name.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct ElectionTable {
    elections: BTreeMap<String, Election>,
}

impl ElectionTable {
    /// A live agent campaigns: it leads at once when nobody does, else it queues. Campaigning
    /// again changes nothing.
    pub fn campaign(
        &mut self,
        name: &str,
        agent_id: &str,
        value: &[u8],
        agents: &AgentRegistry,
        meta: Meta,
    ) -> Outcome {
        validate(name, value).map_err(Rejection::InvalidSpec)?;
        if !agents.live().any(|agent| agent.id == agent_id) {
            return Err(Rejection::UnknownAgent {
                agent_id: agent_id.to_owned(),
            });
        }
        let election = self.elections.entry(name.to_owned()).or_default();
        let leads = election
            .leader
            .as_ref()
            .is_some_and(|l| l.agent_id == agent_id);
        let queued = election.queue.iter().any(|c| c.agent_id == agent_id);
        if !leads && !queued {
            election.queue.push(Candidate {
                agent_id: agent_id.to_owned(),
                value: value.to_vec(),
            });
            promote(election, meta);
        }
        Ok(changed(name))
    }

    /// A candidate gives up waiting (its campaign call was cancelled); a leader keeps leading.
    pub fn withdraw(&mut self, name: &str, agent_id: &str) -> Outcome {
        let election = self.elections.get_mut(name).ok_or_else(|| unknown(name))?;
        election.queue.retain(|c| c.agent_id != agent_id);
        Ok(changed(name))
    }

    /// The leader resigns its term; the next candidate leads.
    pub fn resign(&mut self, name: &str, agent_id: &str, term: u64, meta: Meta) -> Outcome {
        let election = self.elections.get_mut(name).ok_or_else(|| unknown(name))?;
        match &election.leader {
            Some(leader) if leader.agent_id == agent_id && leader.term == term => {}
            Some(leader) if leader.agent_id == agent_id => {
                return Err(Rejection::StaleTerm {
                    election: name.to_owned(),
                    term,
                    current: leader.term,
                })
            }
            _ => {
                return Err(Rejection::NotLeader {
                    election: name.to_owned(),
                    agent_id: agent_id.to_owned(),
                })
            }
        }
        election.leader = None;
        election.changed_at_index = meta.index;
        promote(election, meta);
        Ok(changed(name))
    }

    /// An agent was lost: it leaves every queue, and elections it led pass on.
    pub fn agent_lost(&mut self, agent_id: &str, meta: Meta) {
        for election in self.elections.values_mut() {
            election.queue.retain(|c| c.agent_id != agent_id);
            if election
                .leader
                .as_ref()
                .is_some_and(|l| l.agent_id == agent_id)
            {
                election.leader = None;
                election.changed_at_index = meta.index;
                promote(election, meta);
            }
        }
    }

    /// One election.
    pub fn get(&self, name: &str) -> Option<&Election> {
        self.elections.get(name)
    }
}

/// With no leader, the first queued candidate leads.
fn promote(election: &mut Election, meta: Meta) {
    if election.leader.is_some() || election.queue.is_empty() {
        return;
    }
    let next = election.queue.remove(0);
    election.leader = Some(Leadership {
        agent_id: next.agent_id,
        value: next.value,
        term: meta.index,
        elected_at_ms: meta.now_ms,
    });
    election.changed_at_index = meta.index;
}

fn changed(name: &str) -> Applied {
    Applied::ElectionChanged {
        election: name.to_owned(),
    }
}

fn unknown(name: &str) -> Rejection {
    Rejection::UnknownElection {
        election: name.to_owned(),
    }
}

/// The rules a campaign must satisfy.
pub fn validate(name: &str, value: &[u8]) -> Result<(), SpecError> {
    let chars = name.chars().count();
    if chars == 0 || chars > NAME_CHARS_MAX {
        let problem = format!("{chars} chars, must be 1 to {NAME_CHARS_MAX}");
        return Err(SpecError::new("election", problem));
    }
    if value.len() > VALUE_BYTES_MAX {
        let problem = format!("{} bytes, the limit is {VALUE_BYTES_MAX}", value.len());
        return Err(SpecError::new("value", problem));
    }
    Ok(())
}
