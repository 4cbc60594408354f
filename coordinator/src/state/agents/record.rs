//! [`AgentRecord`]: one registered agent as replicated, and [`Registration`], the data a
//! `RegisterAgent` command carries.
//!
//! Plain data. Session ids and tokens are chosen by the leader and written into the command;
//! the token stored here is whatever the leader chose to store (it may be a hash).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::breaker::{BreakerPolicy, CircuitBreaker};

use crate::state::jobs::TaskKey;

/// What a registration (new agent or resumed identity) carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Registration {
    /// New id chosen by the leader, or the id being resumed.
    pub agent_id: String,
    /// Id of the new session, chosen by the leader.
    pub session_id: String,
    /// Token for the next resume, chosen by the leader; replaces the previous one.
    pub session_token: String,
    /// The token the agent presented to resume; `None` registers a new agent.
    pub resume_token: Option<String>,
    /// Human-readable name.
    pub name: String,
    /// Capabilities offered.
    pub capabilities: BTreeSet<String>,
    /// Placement labels.
    pub labels: BTreeMap<String, String>,
    /// Numeric resource capacities.
    pub resources: BTreeMap<String, f64>,
    /// Tasks the agent runs at once; at least 1.
    pub max_concurrent: u32,
    /// Its circuit breaker's policy (the leader's configuration).
    #[serde(default)]
    pub breaker: BreakerPolicy,
}

/// Where an agent is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AgentStatus {
    /// A session is live.
    Connected,
    /// The session ended; within its lease the agent keeps its tasks.
    Disconnected {
        /// When the session ended.
        since_ms: u64,
    },
    /// The lease passed; its tasks were re-queued. It may resume with its token.
    Expired,
    /// Left for good; kept for history.
    Deregistered,
}

/// One registered agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentRecord {
    /// Server-assigned id.
    pub id: String,
    /// Human-readable name.
    pub name: String,
    /// Capabilities offered.
    pub capabilities: BTreeSet<String>,
    /// Placement labels.
    pub labels: BTreeMap<String, String>,
    /// Numeric resource capacities.
    pub resources: BTreeMap<String, f64>,
    /// Tasks the agent runs at once.
    pub max_concurrent: u32,
    /// The current (or last) session.
    pub session_id: String,
    /// Secret that resumes this identity.
    pub session_token: String,
    /// Lifecycle status.
    pub status: AgentStatus,
    /// Takes no new work while true.
    pub draining: bool,
    /// Tasks whose current attempt it holds.
    pub running: BTreeSet<TaskKey>,
    /// When it first registered.
    pub registered_at_ms: u64,
    /// When its current session began.
    pub connected_at_ms: u64,
    /// Attempts it completed successfully.
    pub tasks_succeeded: u64,
    /// Attempts it failed, timed out or lost.
    pub tasks_failed: u64,
    /// Keeps work away after failures in a row.
    #[serde(default)]
    pub breaker: CircuitBreaker,
}

impl AgentRecord {
    /// A newly registered, connected agent.
    pub fn new(registration: &Registration, now_ms: u64) -> Self {
        let mut record = Self {
            id: registration.agent_id.clone(),
            name: String::new(),
            capabilities: BTreeSet::new(),
            labels: BTreeMap::new(),
            resources: BTreeMap::new(),
            max_concurrent: 0,
            session_id: String::new(),
            session_token: String::new(),
            status: AgentStatus::Connected,
            draining: false,
            running: BTreeSet::new(),
            registered_at_ms: now_ms,
            connected_at_ms: now_ms,
            tasks_succeeded: 0,
            tasks_failed: 0,
            breaker: CircuitBreaker::default(),
        };
        record.connect(registration, now_ms);
        record
    }

    /// Starts a session described by `registration`, replacing the advertised profile.
    pub fn connect(&mut self, registration: &Registration, now_ms: u64) {
        self.name = registration.name.clone();
        self.capabilities = registration.capabilities.clone();
        self.labels = registration.labels.clone();
        self.resources = registration.resources.clone();
        self.max_concurrent = registration.max_concurrent;
        self.breaker.policy = registration.breaker;
        self.session_id = registration.session_id.clone();
        self.session_token = registration.session_token.clone();
        self.status = AgentStatus::Connected;
        self.connected_at_ms = now_ms;
    }

    /// Neither expired nor deregistered: it may still run (or resume) work.
    pub fn is_live(&self) -> bool {
        matches!(
            self.status,
            AgentStatus::Connected | AgentStatus::Disconnected { .. }
        )
    }

    /// Connected and not draining: it may receive new work.
    pub fn accepts_work(&self) -> bool {
        self.status == AgentStatus::Connected && !self.draining
    }

    /// True when it runs as many tasks as it allows.
    pub fn is_full(&self) -> bool {
        self.running.len() >= self.max_concurrent as usize
    }
}
