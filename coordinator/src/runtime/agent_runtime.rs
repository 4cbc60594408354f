//! The leader's live coordination of agents and jobs: it proposes commands and acts on what
//! they produced (sends assignments, cancellations and subtask reports over agent sessions),
//! and its loop expires silent agents, times out attempts, places ready tasks in batches and
//! runs auctions.
//!
//! ```text
//!   every tick (and, for placement alone, whenever applied entries leave tasks ready),
//!   on the leader only:
//!     expire agents past their lease ─► ExpireAgent   ─► CancelTask / re-queue
//!     attempts past their deadline    ─► TimeOutTask   ─► CancelTask
//!     jobs past their own deadline    ─► TimeOutJob    ─► CancelTask × open attempts
//!     ready tasks ─► scheduler::place_batch ─► AssignTask × N ─► TaskAssignment
//!                                       └─► auctions ─► CallForBids … award ─► AssignTask
//!     ready tasks no live agent can take, for the unsatisfiable timeout ─► MarkUnsatisfiable
//! ```
//!
//! Everything decided here is written into a command before it counts; after a leader change
//! the new leader rebuilds from the replicated state (open auctions simply start again).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::auctions::{Auctions, NoBidPolicy};
use super::inbox_delivery::InboxDelivery;
use super::messages;
use super::sessions::SessionHub;
use super::unsatisfiable::UnsatisfiableWatch;
use super::{clock, CommandResult, Proposer};
use crate::raft::{ProposeError, Raft, SharedState};
use crate::scheduler::{self, Candidate, RoundRobinCursor, TaskNeeds};
use crate::state::agents::BreakerPolicy;
use crate::state::jobs::{AttemptRef, JobSpec, Strategy, TaskState};
use crate::state::{placement, Applied, Command, Effects, State};

/// A task the scheduler may place: its attempt, what it needs and how to choose.
type Placeable = (AttemptRef, TaskNeeds, scheduler::Strategy);
/// A scheduling pass: the tasks offered, the candidates after it, and its placements.
type Planned = (
    Vec<Placeable>,
    Vec<Candidate>,
    scheduler::BatchPlan<AttemptRef>,
);

/// Timing of agent sessions and of the coordination loop.
#[derive(Debug, Clone, Copy)]
pub struct AgentSettings {
    /// An agent silent this long (or absent this long after a leader change) expires.
    pub lease: Duration,
    /// Interval agents are asked to heartbeat at.
    pub heartbeat: Duration,
    /// Period of the leader's loop.
    pub tick: Duration,
    /// How long an auction collects bids.
    pub bid_window: Duration,
    /// Most ready tasks placed in one pass.
    pub placements_per_pass: usize,
    /// A ready task no live agent could ever take ends unsatisfiable after this long.
    pub unsatisfiable_after: Duration,
    /// Agents' circuit breakers: failures in a row that quarantine, and for how long.
    pub breaker: BreakerPolicy,
}

impl Default for AgentSettings {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(5),
            heartbeat: Duration::from_secs(1),
            tick: Duration::from_millis(20),
            bid_window: Duration::from_millis(200),
            placements_per_pass: 4096,
            unsatisfiable_after: Duration::from_secs(30),
            breaker: BreakerPolicy::default(),
        }
    }
}

/// The leader-side agent and job runtime. Cheap to clone.
#[derive(Clone)]
pub struct AgentRuntime {
    inner: Arc<Inner>,
}

struct Inner {
    raft: Raft,
    proposer: Proposer,
    state: SharedState,
    tasks_ready: Arc<Notify>,
    hub: SessionHub,
    settings: AgentSettings,
    cursor: Mutex<RoundRobinCursor>,
    auctions: Auctions,
    unsatisfiable: UnsatisfiableWatch,
    inbox: InboxDelivery,
}

impl AgentRuntime {
    /// A runtime proposing through `proposer` and reading `state`; `tasks_ready` wakes it to
    /// place tasks between ticks.
    pub fn new(
        raft: Raft,
        proposer: Proposer,
        state: SharedState,
        tasks_ready: Arc<Notify>,
        settings: AgentSettings,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                raft,
                proposer,
                state,
                tasks_ready,
                hub: SessionHub::default(),
                settings,
                cursor: Mutex::new(RoundRobinCursor::default()),
                auctions: Auctions::default(),
                unsatisfiable: UnsatisfiableWatch::default(),
                inbox: InboxDelivery::default(),
            }),
        }
    }

    /// Live sessions.
    pub fn hub(&self) -> &SessionHub {
        &self.inner.hub
    }

    /// Open auctions.
    pub fn auctions(&self) -> &Auctions {
        &self.inner.auctions
    }

    /// Inbox delivery on open sessions.
    pub fn inbox_delivery(&self) -> &InboxDelivery {
        &self.inner.inbox
    }

    /// Session and loop timing.
    pub fn settings(&self) -> AgentSettings {
        self.inner.settings
    }

    /// True when this node leads.
    pub fn is_leader(&self) -> bool {
        self.inner.raft.metrics().borrow().state == openraft::ServerState::Leader
    }

    /// Reads the replicated state.
    pub fn read<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        f(&self.inner.state.read().expect("state lock").state)
    }

    /// Proposes `command` and carries out what its outcome asks of the leader.
    pub async fn propose(&self, command: Command) -> Result<CommandResult, ProposeError> {
        self.enqueue(command).await?.await
    }

    /// Queues `command` behind every command queued before it (they apply in that order) and
    /// returns a future that waits for its outcome and carries out what it asks.
    pub async fn enqueue(
        &self,
        command: Command,
    ) -> Result<impl Future<Output = Result<CommandResult, ProposeError>>, ProposeError> {
        let mut pending = self.enqueue_group(vec![command]).await?;
        Ok(pending.pop().expect("one outcome per command"))
    }

    /// [`Self::enqueue`] for `commands` committed together in one entry, in their order.
    pub async fn enqueue_group(
        &self,
        commands: Vec<Command>,
    ) -> Result<Vec<impl Future<Output = Result<CommandResult, ProposeError>>>, ProposeError> {
        let pending = self.inner.proposer.enqueue_group(commands).await?;
        Ok(pending
            .into_iter()
            .map(|pending| {
                let runtime = self.clone();
                async move {
                    let result = pending.await?;
                    if let Ok(applied) = &result.outcome {
                        runtime.act(applied);
                    }
                    Ok(result)
                }
            })
            .collect())
    }

    /// Sends the messages an applied command calls for.
    pub fn act(&self, applied: &Applied) {
        match applied {
            Applied::TaskAssigned { task, agent_id, .. } => self.send_assignment(agent_id, task),
            Applied::AgentLost {
                effects, agent_id, ..
            } => {
                self.inner.hub.forget(agent_id);
                self.carry_out(effects);
            }
            Applied::AttemptEnded { effects, .. }
            | Applied::JobCancelled(effects)
            | Applied::SubtasksAdded { effects, .. } => self.carry_out(effects),
            Applied::MessagesQueued { queued, .. } => {
                for recipient in queued {
                    self.inner.inbox.wake(&recipient.agent_id);
                }
            }
            _ => {}
        }
    }

    /// Sends cancellations and subtask reports.
    pub fn carry_out(&self, effects: &Effects) {
        for cancel in &effects.cancelled {
            let message = messages::cancel(&cancel.held.task, &cancel.reason);
            self.inner.hub.send(&cancel.held.agent_id, message);
        }
        for held in &effects.subtasks_completed {
            if let Some(message) =
                self.read(|state| messages::subtasks_completed(state, &held.task))
            {
                self.inner.hub.send(&held.agent_id, message);
            }
        }
    }

    fn send_assignment(&self, agent_id: &str, task: &AttemptRef) {
        if let Some(message) =
            self.read(|state| messages::assignment(state, &task.job_id, &task.task_id))
        {
            self.inner.hub.send(agent_id, message);
        }
    }

    /// Runs the leader loop until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(self.inner.settings.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let tasks_ready = self.inner.tasks_ready.clone();
        loop {
            let full_pass = tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => true,
                _ = tasks_ready.notified() => false,
            };
            if !self.is_leader() {
                continue;
            }
            if full_pass {
                self.pass().await;
            } else {
                self.place_ready_tasks().await;
            }
        }
    }

    async fn pass(&self) {
        self.expire_agents().await;
        self.time_out_attempts().await;
        self.time_out_jobs().await;
        self.expire_votes().await;
        self.time_out_barriers().await;
        self.place_ready_tasks().await;
        self.close_due_auctions().await;
        self.end_unsatisfiable().await;
    }

    async fn end_unsatisfiable(&self) {
        let (now_ms, now) = (clock::now_ms(), tokio::time::Instant::now());
        let after = self.inner.settings.unsatisfiable_after;
        let due = self.read(|state| self.inner.unsatisfiable.scan(state, now_ms, now, after));
        self.propose_all(due.into_iter()).await;
    }

    async fn expire_agents(&self) {
        let live: BTreeMap<String, String> = self.read(|state| {
            state
                .agents
                .live()
                .map(|a| (a.id.clone(), a.session_id.clone()))
                .collect()
        });
        let lease = self.inner.settings.lease;
        let expired = self
            .inner
            .hub
            .expired(live.keys().map(String::as_str), lease);
        let commands = expired.into_iter().filter_map(|agent_id| {
            let session_id = live.get(&agent_id)?.clone();
            tracing::info!(%agent_id, "agent lease expired");
            Some(Command::ExpireAgent {
                agent_id,
                session_id,
            })
        });
        self.propose_all(commands).await;
    }

    async fn time_out_attempts(&self) {
        let now_ms = clock::now_ms();
        let due: Vec<AttemptRef> = self.read(|state| state.jobs.timed_out(now_ms).collect());
        let commands = due.into_iter().map(|attempt| Command::TimeOutTask {
            job_id: attempt.job_id,
            task_id: attempt.task_id,
            attempt: attempt.attempt,
        });
        self.propose_all(commands).await;
    }

    async fn time_out_jobs(&self) {
        let now_ms = clock::now_ms();
        let due: Vec<String> = self.read(|state| {
            state
                .jobs
                .timed_out_jobs(now_ms)
                .map(str::to_owned)
                .collect()
        });
        let commands = due.into_iter().map(|job_id| Command::TimeOutJob { job_id });
        self.propose_all(commands).await;
    }

    async fn place_ready_tasks(&self) {
        let now_ms = clock::now_ms();
        let limit = self.inner.settings.placements_per_pass;
        let planned = self.plan(|state| {
            state
                .jobs
                .ready_tasks(now_ms)
                .filter(|ready| !self.inner.auctions.is_open(&ready.job.id, ready.task_id))
                .take(limit)
                .map(|ready| {
                    let spec = ready.spec;
                    let needs = placement::needs_of(&ready.job.id, spec);
                    (attempt_of(&ready), needs, strategy_of(spec.strategy))
                })
                .collect()
        });
        let Some((tasks, candidates, plan)) = planned else {
            return;
        };
        for auctioned in &plan.auctions {
            self.open_auction(auctioned, &tasks, &candidates);
        }
        let commands = plan
            .assigned
            .into_iter()
            .map(|(attempt, agent_id)| assign(attempt, agent_id));
        self.propose_all(commands).await;
    }

    /// Placements for the root tasks of a job about to be submitted (attempt 1 each), decided
    /// on the current state as a scheduling pass would; auctioned tasks are left to the loop.
    /// Proposed right behind the submission, they spare its first tasks a commit.
    pub fn place_submission(&self, job_id: &str, spec: &JobSpec) -> Vec<Command> {
        let planned = self.plan(|_| {
            spec.tasks
                .iter()
                .filter(|task| task.depends_on.is_empty() && task.strategy != Strategy::Auction)
                .take(self.inner.settings.placements_per_pass)
                .map(|task| {
                    let attempt = AttemptRef {
                        job_id: job_id.to_owned(),
                        task_id: task.id.clone(),
                        attempt: 1,
                    };
                    let needs = placement::needs_of(job_id, task);
                    (attempt, needs, strategy_of(task.strategy))
                })
                .collect()
        });
        let Some((_, _, plan)) = planned else {
            return Vec::new();
        };
        plan.assigned
            .into_iter()
            .map(|(attempt, agent_id)| assign(attempt, agent_id))
            .collect()
    }

    /// One scheduling pass over the tasks `pick` chooses from the current state, against the
    /// connected agents; `None` when no agent has a free slot or nothing was picked.
    fn plan(&self, pick: impl FnOnce(&State) -> Vec<Placeable>) -> Option<Planned> {
        let (tasks, mut candidates) = self.read(|state| {
            let candidates = self.candidates(state);
            match candidates.iter().any(Candidate::has_free_slot) {
                true => (pick(state), candidates),
                false => (Vec::new(), candidates),
            }
        });
        if tasks.is_empty() {
            return None;
        }
        let plan = {
            let mut cursor = self.inner.cursor.lock().expect("cursor lock");
            scheduler::place_batch(&tasks, &mut candidates, &mut cursor)
        };
        Some((tasks, candidates, plan))
    }

    /// Queues `commands` now, in order, and carries out their outcomes from a task of their
    /// own.
    pub async fn propose_in_background(&self, commands: Vec<Command>) {
        let mut pending = Vec::with_capacity(commands.len());
        for command in commands {
            match self.enqueue(command).await {
                Ok(outcome) => pending.push(outcome),
                Err(error) => tracing::debug!(%error, "runtime command not queued"),
            }
        }
        if !pending.is_empty() {
            tokio::spawn(futures::future::join_all(pending));
        }
    }

    /// Connected agents that take work, as the scheduler sees them.
    pub fn candidates(&self, state: &State) -> Vec<Candidate> {
        let now_ms = clock::now_ms();
        state
            .agents
            .accepting_work()
            .filter(|agent| self.inner.hub.is_connected(&agent.id))
            .map(|agent| placement::candidate_of(&state.jobs, agent, now_ms))
            .collect()
    }

    fn open_auction(&self, attempt: &AttemptRef, tasks: &[Placeable], candidates: &[Candidate]) {
        let Some((_, needs, _)) = tasks.iter().find(|(a, _, _)| a == attempt) else {
            return;
        };
        let invitees: Vec<String> = scheduler::invitees(needs, candidates)
            .into_iter()
            .map(str::to_owned)
            .collect();
        if invitees.is_empty() {
            return;
        }
        let round = self.inner.auctions.next_round(attempt);
        let prepared = self.read(|state| {
            let (spec, _) = state.jobs.task(&attempt.job_id, &attempt.task_id)?;
            let window = match spec.bid_window_ms {
                0 => self.inner.settings.bid_window,
                ms => Duration::from_millis(ms),
            };
            let policy = NoBidPolicy {
                fallback: spec.fallback_strategy.map(strategy_of),
                rounds: spec.auction_rounds,
            };
            let call = super::auctions::call_for_bids(state, attempt, round, window)?;
            Some((call, policy, window))
        });
        let Some((call, policy, window)) = prepared else {
            return;
        };
        for agent_id in &invitees {
            self.inner.hub.send(
                agent_id,
                messages::message(synod_proto::v1::coordinator_message::Kind::CallForBids(
                    call.clone(),
                )),
            );
        }
        self.inner.auctions.open(
            call.call_id.clone(),
            attempt.clone(),
            round,
            needs.clone(),
            invitees,
            policy,
            window,
        );
    }

    async fn close_due_auctions(&self) {
        let auctions = &self.inner.auctions;
        if auctions.has_rounds() {
            self.read(|state| {
                auctions.forget_rounds_unless(|attempt| {
                    state
                        .jobs
                        .task(&attempt.job_id, &attempt.task_id)
                        .is_some_and(|(_, task)| {
                            task.state == TaskState::Ready && task.attempt + 1 == attempt.attempt
                        })
                });
            });
        }
        let due = auctions.take_due();
        if due.is_empty() {
            return;
        }
        let mut candidates = self.read(|state| self.candidates(state));
        let mut commands = Vec::new();
        for auction in due {
            let winner =
                auction.winner(&candidates, &self.inner.cursor.lock().expect("cursor lock"));
            // Later auctions of this pass see the slot the winner just took.
            if let Some(chosen) = candidates
                .iter_mut()
                .find(|c| Some(&c.id) == winner.as_ref())
            {
                chosen.reserve(auction.needs());
            }
            for (agent_id, message) in auction.results(winner.as_deref()) {
                self.inner.hub.send(&agent_id, message);
            }
            auctions.closed(&auction, winner.as_deref());
            if let Some(agent_id) = winner {
                commands.push(assign(auction.attempt.clone(), agent_id));
            }
        }
        self.propose_all(commands.into_iter()).await;
    }

    /// Proposes every command concurrently (the proposer batches them) and acts on each.
    pub(super) async fn propose_all(&self, commands: impl Iterator<Item = Command>) {
        let mut pending: FuturesUnordered<_> =
            commands.map(|command| self.propose(command)).collect();
        while let Some(result) = pending.next().await {
            match result {
                Ok(CommandResult {
                    outcome: Err(rejection),
                    ..
                }) => {
                    tracing::debug!(%rejection, "runtime command rejected");
                }
                Err(error) => {
                    tracing::debug!(%error, "runtime command not committed");
                }
                Ok(_) => {}
            }
        }
    }
}

fn assign(attempt: AttemptRef, agent_id: String) -> Command {
    Command::AssignTask {
        job_id: attempt.job_id,
        task_id: attempt.task_id,
        attempt: attempt.attempt,
        agent_id,
    }
}

fn attempt_of(ready: &crate::state::jobs::ReadyTask<'_>) -> AttemptRef {
    AttemptRef {
        job_id: ready.job.id.clone(),
        task_id: ready.task_id.to_owned(),
        attempt: ready.next_attempt(),
    }
}

/// The scheduler's strategy for the state's.
pub fn strategy_of(strategy: Strategy) -> scheduler::Strategy {
    match strategy {
        Strategy::RoundRobin => scheduler::Strategy::RoundRobin,
        Strategy::LeastLoaded => scheduler::Strategy::LeastLoaded,
        Strategy::Capability => scheduler::Strategy::Capability,
        Strategy::Auction => scheduler::Strategy::Auction,
    }
}
