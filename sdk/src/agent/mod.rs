//! The agent runtime: an agent process registers its capabilities, keeps a session with the
//! cluster's leader, runs the tasks it is assigned through handlers, bids in auctions, and
//! survives lost connections and leader changes.
//!
//! ```text
//!   AgentBuilder ─► Agent::run ─┬─► session (one gRPC stream to the leader) ─► reconnect with
//!                               │     Register{agent_id, session_token} after a failure
//!                               ├─► handlers (one task per assignment, cancellable)
//!                               └─► outbox (results re-sent until acknowledged)
//! ```
//!
//! Running tasks outlive a session: their results are delivered on the next one, and the
//! coordinator accepts them while their attempt is still current.

mod core;
mod handler;
mod mailbox;
mod outbox;
mod participant;
mod session;
mod weights_memory;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

pub use handler::{BallotHandler, BidHandler, BoxFuture, Offer, Task, TaskHandler, TaskOutcome};
pub use mailbox::MessageHandler;
pub use participant::{Evaluation, FitRequest, FitResult, Participant};
use tokio_util::sync::CancellationToken;

use crate::{AgentCredentials, Client, ClientError, RetryPolicy};

/// Configures an agent.
pub struct AgentBuilder {
    endpoints: Vec<String>,
    pub(crate) name: String,
    pub(crate) capabilities: Vec<String>,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) resources: BTreeMap<String, f64>,
    pub(crate) max_concurrent: u32,
    pub(crate) handlers: HashMap<String, Arc<dyn TaskHandler>>,
    pub(crate) fallback_handler: Option<Arc<dyn TaskHandler>>,
    pub(crate) bid_handler: Option<Arc<dyn BidHandler>>,
    pub(crate) ballot_handler: Option<Arc<dyn BallotHandler>>,
    pub(crate) message_handler: Option<Arc<dyn MessageHandler>>,
    pub(crate) participant: Option<Arc<dyn Participant>>,
    pub(crate) credentials: tokio::sync::watch::Sender<Option<AgentCredentials>>,
}

/// A running agent's identity, for acting as it from outside its handlers: its id once
/// registered, and clients whose calls carry its session credentials.
#[derive(Clone)]
pub struct AgentHandle {
    endpoints: Vec<String>,
    credentials: tokio::sync::watch::Receiver<Option<AgentCredentials>>,
}

impl AgentHandle {
    /// The agent's id, once it has registered.
    pub async fn agent_id(&self) -> String {
        let mut credentials = self.credentials.clone();
        let agent_id = match credentials.wait_for(Option::is_some).await {
            Ok(current) => current.as_ref().map(|c| c.agent_id.clone()),
            Err(_) => None,
        };
        agent_id.unwrap_or_default()
    }

    /// A client acting as this agent (see [`Client::acting_as`]).
    pub fn client(&self) -> Result<Client, ClientError> {
        Ok(Client::new(self.endpoints.clone())?.acting_as(self.credentials.clone()))
    }
}

impl AgentBuilder {
    /// An agent named `name` for the cluster reachable at any of `endpoints`.
    pub fn new<A: Into<String>>(
        name: impl Into<String>,
        endpoints: impl IntoIterator<Item = A>,
    ) -> Self {
        Self {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            name: name.into(),
            capabilities: Vec::new(),
            labels: BTreeMap::new(),
            resources: BTreeMap::new(),
            max_concurrent: 1,
            handlers: HashMap::new(),
            fallback_handler: None,
            bid_handler: None,
            ballot_handler: None,
            message_handler: None,
            participant: None,
            credentials: tokio::sync::watch::channel(None).0,
        }
    }

    /// A handle on the agent's identity, usable while it runs.
    pub fn handle(&self) -> AgentHandle {
        AgentHandle {
            endpoints: self.endpoints.clone(),
            credentials: self.credentials.subscribe(),
        }
    }

    /// Handles the direct and broadcast messages sent to this agent, one at a time in offset
    /// order, each acknowledged once handled (repeats after a reconnect are dropped). Without
    /// a handler messages are acknowledged, and so dropped, as they arrive.
    pub fn message_handler(mut self, handler: impl MessageHandler) -> Self {
        self.message_handler = Some(Arc::new(handler));
        self
    }

    /// Takes part in federated rounds: each round this agent is selected for downloads the
    /// global model, runs `participant` and submits its update (masked when the round uses
    /// secure aggregation). An invitation repeated after a reconnect runs once.
    pub fn participant(mut self, participant: impl Participant) -> Self {
        self.participant = Some(Arc::new(participant));
        self
    }

    /// Advertises a capability.
    pub fn capability(mut self, capability: impl Into<String>) -> Self {
        self.capabilities.push(capability.into());
        self
    }

    /// Sets a label.
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// Advertises a numeric resource capacity (e.g. `cpu`, `mem_mb`, `gpu`).
    pub fn resource(mut self, name: impl Into<String>, capacity: f64) -> Self {
        self.resources.insert(name.into(), capacity);
        self
    }

    /// Most tasks run at once (at least 1).
    pub fn max_concurrent(mut self, tasks: u32) -> Self {
        self.max_concurrent = tasks.max(1);
        self
    }

    /// Runs tasks of `kind` with `handler`.
    pub fn handler(mut self, kind: impl Into<String>, handler: impl TaskHandler) -> Self {
        self.handlers.insert(kind.into(), Arc::new(handler));
        self
    }

    /// Runs tasks of every kind without a handler of its own.
    pub fn fallback_handler(mut self, handler: impl TaskHandler) -> Self {
        self.fallback_handler = Some(Arc::new(handler));
        self
    }

    /// Answers auctions; without one the agent declines every call for bids.
    pub fn bid_handler(mut self, handler: impl BidHandler) -> Self {
        self.bid_handler = Some(Arc::new(handler));
        self
    }

    /// Answers the votes this agent is eligible for (without a handler it abstains). A ballot
    /// lost with its session is asked for again: every new session (after a reconnect or a
    /// leader change) is sent the open votes the agent has not answered.
    pub fn ballot_handler(mut self, handler: impl BallotHandler) -> Self {
        self.ballot_handler = Some(Arc::new(handler));
        self
    }

    /// Runs the agent until `shutdown` is cancelled, reconnecting as needed, on a connection
    /// of its own.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), ClientError> {
        let policy = RetryPolicy::default();
        let client = Client::with_policy(self.endpoints.clone(), policy)?;
        self.run_on(client, shutdown).await
    }

    /// Like [`AgentBuilder::run`], with the session on `client`'s connections: agents of one
    /// process sharing a client multiplex their sessions over one HTTP/2 connection per
    /// member, which saves a socket, and system calls, per agent.
    pub async fn run_on(
        self,
        client: Client,
        shutdown: CancellationToken,
    ) -> Result<(), ClientError> {
        core::AgentCore::new(self).run(client, shutdown).await
    }
}
