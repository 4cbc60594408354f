//! [`AgentRegistry`]: every agent that ever registered, its sessions, status and the task
//! attempts it holds.
//!
//! ```text
//!   RegisterAgent ─► Connected ◄─┐ resume (right token)
//!                      │         │
//!   AgentDisconnected ─► Disconnected{since} ─ ExpireAgent ─► Expired (tasks re-queued)
//!   DeregisterAgent (any live status) ─► Deregistered (tasks re-queued)
//! ```
//!
//! Pure: changed only through commands applied by [`State`](super::State); no I/O, clock or
//! randomness. Task re-queueing on loss is done by the job table with the keys returned here.

mod breaker;
mod record;
mod selector;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

pub use breaker::{BreakerPolicy, Circuit, CircuitBreaker};
pub use record::{AgentRecord, AgentStatus, Registration};
pub use selector::AgentSelector;

use super::jobs::TaskKey;
use super::Rejection;

/// What a registration produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registered {
    /// The agent's id.
    pub agent_id: String,
    /// The new session.
    pub session_id: String,
    /// True when an existing identity was resumed.
    pub resumed: bool,
    /// Task attempts the resumed agent still holds.
    pub running: BTreeSet<TaskKey>,
}

/// Busyness of one agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentLoad {
    /// Attempts it holds.
    pub running: u32,
    /// Attempts it allows at once.
    pub max_concurrent: u32,
}

/// All agents by id.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentRegistry {
    agents: BTreeMap<String, AgentRecord>,
}

impl AgentRegistry {
    /// Registers a new agent, or resumes one when `resume_token` is set.
    pub fn register(
        &mut self,
        registration: &Registration,
        now_ms: u64,
    ) -> Result<Registered, Rejection> {
        if registration.max_concurrent == 0 {
            return Err(Rejection::InvalidRegistration {
                field: "max_concurrent".into(),
                problem: "must be at least 1".into(),
            });
        }
        let id = &registration.agent_id;
        let resumed = match &registration.resume_token {
            None => self.insert_new(registration, now_ms)?,
            Some(token) => self.resume(registration, token, now_ms)?,
        };
        let running = self
            .agents
            .get(id)
            .map(|agent| agent.running.clone())
            .unwrap_or_default();
        Ok(Registered {
            agent_id: id.clone(),
            session_id: registration.session_id.clone(),
            resumed,
            running,
        })
    }

    fn insert_new(&mut self, registration: &Registration, now_ms: u64) -> Result<bool, Rejection> {
        let id = &registration.agent_id;
        if self.agents.contains_key(id) {
            return Err(Rejection::AgentExists {
                agent_id: id.clone(),
            });
        }
        self.agents
            .insert(id.clone(), AgentRecord::new(registration, now_ms));
        Ok(false)
    }

    fn resume(
        &mut self,
        registration: &Registration,
        token: &str,
        now_ms: u64,
    ) -> Result<bool, Rejection> {
        let agent = self.get_mut(&registration.agent_id)?;
        if agent.session_token != token {
            return Err(Rejection::BadSessionToken {
                agent_id: agent.id.clone(),
            });
        }
        if agent.status == AgentStatus::Deregistered {
            return Err(Rejection::AgentDeregistered {
                agent_id: agent.id.clone(),
            });
        }
        agent.connect(registration, now_ms);
        Ok(true)
    }

    /// Marks a session as gone; the agent keeps its tasks until it resumes or expires.
    pub fn disconnect(
        &mut self,
        agent_id: &str,
        session_id: &str,
        now_ms: u64,
    ) -> Result<(), Rejection> {
        let agent = self.session_mut(agent_id, session_id)?;
        if agent.status != AgentStatus::Connected {
            return Err(not_active(agent));
        }
        agent.status = AgentStatus::Disconnected { since_ms: now_ms };
        Ok(())
    }

    /// Expires a live agent whose lease passed; returns the tasks it held (now released).
    pub fn expire(
        &mut self,
        agent_id: &str,
        session_id: &str,
    ) -> Result<BTreeSet<TaskKey>, Rejection> {
        let agent = self.session_mut(agent_id, session_id)?;
        if !agent.is_live() {
            return Err(not_active(agent));
        }
        agent.status = AgentStatus::Expired;
        Ok(std::mem::take(&mut agent.running))
    }

    /// Removes an agent for good; returns the tasks it held (now released).
    pub fn deregister(&mut self, agent_id: &str) -> Result<BTreeSet<TaskKey>, Rejection> {
        let agent = self.get_mut(agent_id)?;
        if agent.status == AgentStatus::Deregistered {
            return Err(not_active(agent));
        }
        agent.status = AgentStatus::Deregistered;
        Ok(std::mem::take(&mut agent.running))
    }

    /// Stops new work for an agent; it finishes what it runs.
    pub fn drain(&mut self, agent_id: &str) -> Result<(), Rejection> {
        let agent = self.get_mut(agent_id)?;
        if agent.status == AgentStatus::Deregistered {
            return Err(not_active(agent));
        }
        agent.draining = true;
        Ok(())
    }

    /// Quarantines `agent_id` until released (`Some(reason)`), or releases it (`None`), which
    /// also closes its circuit.
    pub fn quarantine(&mut self, agent_id: &str, reason: Option<String>) -> Result<(), Rejection> {
        let agent = self.get_mut(agent_id)?;
        if agent.status == AgentStatus::Deregistered {
            return Err(not_active(agent));
        }
        agent.breaker.set_manual(reason);
        Ok(())
    }

    /// Checks that `agent_id` may take one more task needing `capabilities`.
    pub fn check_assignable(
        &self,
        agent_id: &str,
        capabilities: &BTreeSet<String>,
    ) -> Result<(), Rejection> {
        let agent = self.get(agent_id).ok_or_else(|| unknown(agent_id))?;
        if agent.status != AgentStatus::Connected {
            return Err(not_active(agent));
        }
        if agent.draining {
            return Err(Rejection::AgentDraining {
                agent_id: agent.id.clone(),
            });
        }
        if let Some(missing) = capabilities
            .iter()
            .find(|cap| !agent.capabilities.contains(*cap))
        {
            return Err(Rejection::MissingCapability {
                agent_id: agent.id.clone(),
                capability: missing.clone(),
            });
        }
        if agent.is_full() {
            return Err(Rejection::AgentFull {
                agent_id: agent.id.clone(),
                max_concurrent: agent.max_concurrent,
            });
        }
        Ok(())
    }

    /// Records that `agent_id` holds the current attempt of `task` from `now_ms`.
    pub(crate) fn hold(&mut self, agent_id: &str, task: TaskKey, now_ms: u64) {
        if let Some(agent) = self.agents.get_mut(agent_id) {
            agent.running.insert(task);
            agent.breaker.assigned(now_ms);
        }
    }

    /// Records that `agent_id` no longer holds `task`, counting how its attempt ended (and
    /// telling its circuit breaker).
    pub(crate) fn release(
        &mut self,
        agent_id: &str,
        task: &TaskKey,
        succeeded: Option<bool>,
        now_ms: u64,
    ) {
        let Some(agent) = self.agents.get_mut(agent_id) else {
            return;
        };
        agent.running.remove(task);
        match succeeded {
            Some(true) => agent.tasks_succeeded += 1,
            Some(false) => agent.tasks_failed += 1,
            None => {}
        }
        if let Some(succeeded) = succeeded {
            agent.breaker.record(succeeded, now_ms);
        }
    }

    /// One agent.
    pub fn get(&self, agent_id: &str) -> Option<&AgentRecord> {
        self.agents.get(agent_id)
    }

    /// Every agent, in id order.
    pub fn iter(&self) -> impl Iterator<Item = &AgentRecord> {
        self.agents.values()
    }

    /// Agents neither expired nor deregistered, in id order.
    pub fn live(&self) -> impl Iterator<Item = &AgentRecord> {
        self.agents.values().filter(|agent| agent.is_live())
    }

    /// Agents that may receive new work (connected, not draining), in id order.
    pub fn accepting_work(&self) -> impl Iterator<Item = &AgentRecord> {
        self.agents.values().filter(|agent| agent.accepts_work())
    }

    /// Tasks whose current attempt `agent_id` holds.
    pub fn tasks_of(&self, agent_id: &str) -> Option<&BTreeSet<TaskKey>> {
        self.agents.get(agent_id).map(|agent| &agent.running)
    }

    /// How busy `agent_id` is.
    pub fn load(&self, agent_id: &str) -> Option<AgentLoad> {
        self.agents.get(agent_id).map(|agent| AgentLoad {
            running: agent.running.len() as u32,
            max_concurrent: agent.max_concurrent,
        })
    }

    /// Number of agents ever registered.
    pub fn len(&self) -> usize {
        self.agents.len()
    }

    /// True when no agent ever registered.
    pub fn is_empty(&self) -> bool {
        self.agents.is_empty()
    }

    fn get_mut(&mut self, agent_id: &str) -> Result<&mut AgentRecord, Rejection> {
        self.agents
            .get_mut(agent_id)
            .ok_or_else(|| unknown(agent_id))
    }

    fn session_mut(
        &mut self,
        agent_id: &str,
        session_id: &str,
    ) -> Result<&mut AgentRecord, Rejection> {
        let agent = self.get_mut(agent_id)?;
        if agent.session_id != session_id {
            return Err(Rejection::StaleSession {
                agent_id: agent_id.to_owned(),
                session_id: session_id.to_owned(),
            });
        }
        Ok(agent)
    }
}

fn unknown(agent_id: &str) -> Rejection {
    Rejection::UnknownAgent {
        agent_id: agent_id.to_owned(),
    }
}

fn not_active(agent: &AgentRecord) -> Rejection {
    Rejection::AgentNotActive {
        agent_id: agent.id.clone(),
        status: format!("{:?}", agent.status),
    }
}

#[cfg(test)]
mod tests;
