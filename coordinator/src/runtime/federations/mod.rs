//! The leader's part in federated learning: it samples each round's participants, invites
//! them, folds their updates into a running aggregate, drives the secure-aggregation phases and
//! deadlines, and commits each global model; a round it finds open without its aggregate (it
//! was started by a previous leader) is failed and restarted as a new attempt.
//!
//! ```text
//!   every tick, per running federation, on the leader only:
//!     no open round   ─► enough eligible connected agents? ─► sample ─► StartRound ─► invite
//!     open, not ours  ─► FailRound("leader changed") ─► next tick starts attempt + 1
//!     key phases      ─► everyone in, or the phase deadline ─► AdvancePhase
//!     training        ─► everyone in, or the deadline ─► DropParticipants ─► finish
//!     finish          ─► aggregate (blocking pool) ─► StageModel × n ─► CommitRound
//!                         ─► [open the next round behind it: sample ─► StartRound ─► invite]
//! ```
//! Opening the next round behind the commit lets participants download (from the leader's
//! memory) and train while the model is still being replicated; Raft's order makes the start
//! apply only after the commit, and every receipt of the new round after its start.

mod buffers;
mod finish;
pub mod invitations;
mod live;
mod receipts;
mod updates;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::seq::IndexedRandom;
use rand::SeedableRng;
use synod_sdk::tensors::F32Payload;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

pub use buffers::{PooledUpdate, UpdateBuffers};
pub use finish::stage_chunks;
pub use live::{Decoded, FiniteScan, GlobalModel, LiveRound, PlainUpdate};
pub use updates::{finite_metrics, HeaderCheck, UpdateAnswer, UpdateError, UpdateSubmission};

use super::{clock, AgentRuntime, CommandResult};
use crate::state::federations::{
    next_attempt, spec::PHASE_TIMEOUT_MS_DEFAULT, FederationRecord, FederationSpec,
    ParticipantState, RoundStart, RoundState,
};
use crate::state::{Applied, Command};

/// How often the leader looks at every running federation.
const TICK: Duration = Duration::from_millis(25);
/// KiB of updates received into memory at once: as many updates as fit are read in parallel
/// (at least one, however large), the others wait without being read.
pub const UPLOAD_KIB_IN_MEMORY_MAX: u32 = 16 * 1024;

/// The leader's federation runtime. Cheap to clone.
#[derive(Clone)]
pub struct FederationRuntime {
    inner: Arc<Inner>,
}

struct Inner {
    agents: AgentRuntime,
    live: Mutex<HashMap<String, Arc<LiveRound>>>,
    uploads: Semaphore,
    update_buffers: Arc<UpdateBuffers>,
    wake: Notify,
    spill_dir: PathBuf,
}

/// What the driver decided for one federation on one pass.
enum Step {
    Nothing,
    Start,
    Fail(u32, u32, String),
    Advance(u32, u32, RoundState, u64),
    Close(u32, u32, Vec<String>),
    Finish(u32, u32),
}

impl FederationRuntime {
    /// A runtime proposing through `agents`, spilling robust aggregation under `spill_dir`.
    pub fn new(agents: AgentRuntime, spill_dir: PathBuf) -> Self {
        Self {
            inner: Arc::new(Inner {
                agents,
                live: Mutex::new(HashMap::new()),
                uploads: Semaphore::new(UPLOAD_KIB_IN_MEMORY_MAX as usize),
                update_buffers: UpdateBuffers::new(UPLOAD_KIB_IN_MEMORY_MAX as usize * 1024),
                wake: Notify::new(),
                spill_dir,
            }),
        }
    }

    /// The agent runtime (sessions, proposals, state).
    pub fn agents(&self) -> &AgentRuntime {
        &self.inner.agents
    }

    /// Spare vectors to receive plain updates into.
    pub fn update_buffers(&self) -> &Arc<UpdateBuffers> {
        &self.inner.update_buffers
    }

    /// Asks the driver for a pass now (an update arrived, a round ended).
    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }

    /// The open attempt of `federation_id` this leader aggregates, if any.
    pub fn live(&self, federation_id: &str) -> Option<Arc<LiveRound>> {
        self.inner
            .live
            .lock()
            .expect("live lock")
            .get(federation_id)
            .cloned()
    }

    /// Makes `live` the attempt of `federation_id` this leader aggregates.
    fn adopt(&self, federation_id: &str, live: Arc<LiveRound>) {
        self.inner
            .live
            .lock()
            .expect("live lock")
            .insert(federation_id.to_owned(), live);
    }

    fn forget(&self, federation_id: &str, round: u32, attempt: u32) {
        let mut live = self.inner.live.lock().expect("live lock");
        if live
            .get(federation_id)
            .is_some_and(|l| l.round == round && l.attempt == attempt)
        {
            live.remove(federation_id);
        }
    }

    /// Runs the driver until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
                _ = self.inner.wake.notified() => {}
            }
            if self.inner.agents.is_leader() {
                self.pass().await;
            }
        }
    }

    async fn pass(&self) {
        let now_ms = clock::now_ms();
        let steps: Vec<(String, Step)> = self.inner.agents.read(|state| {
            state
                .federations
                .running()
                .map(|f| (f.id.clone(), self.decide(f, now_ms)))
                .collect()
        });
        for (federation_id, step) in steps {
            self.carry_out(&federation_id, step, now_ms).await;
        }
    }

    /// What to do next for `federation` (a read-only decision on the current state).
    fn decide(&self, federation: &FederationRecord, now_ms: u64) -> Step {
        let live = self.live(&federation.id);
        let Some(open) = federation.open_round() else {
            // A round opened behind the previous one's commit: its start is on its way.
            if live.is_some_and(|l| l.round == federation.committed_round + 1) {
                return Step::Nothing;
            }
            return Step::Start;
        };
        let (round, attempt) = (open.round, open.attempt);
        if live.as_ref().is_some_and(|l| l.round == round + 1) {
            // The open round is committing and its successor is already open behind it.
            return Step::Nothing;
        }
        let Some(live) = live.filter(|l| l.round == round && l.attempt == attempt) else {
            return Step::Fail(round, attempt, "leader changed; the round restarts".into());
        };
        if live.is_finishing() {
            return Step::Nothing;
        }
        let waiting_on =
            |state: ParticipantState| open.participants.values().any(|p| p.state == state);
        let phase_over = now_ms >= open.phase_deadline_at_ms;
        let phase_timeout_ms = federation
            .spec
            .secure_aggregation
            .map_or(PHASE_TIMEOUT_MS_DEFAULT, |s| s.phase_timeout_ms);
        match open.state {
            RoundState::AdvertisingKeys
                if phase_over || !waiting_on(ParticipantState::Selected) =>
            {
                Step::Advance(
                    round,
                    attempt,
                    RoundState::SharingKeys,
                    now_ms + phase_timeout_ms,
                )
            }
            RoundState::SharingKeys
                if phase_over || !waiting_on(ParticipantState::KeysAdvertised) =>
            {
                Step::Advance(round, attempt, RoundState::Training, open.deadline_at_ms)
            }
            // An update already folded is about to be receipted: not late. Once nobody is late
            // the attempt ends below, as soon as the folded updates are receipted.
            RoundState::Training
                if now_ms >= open.deadline_at_ms
                    && open.active().any(|(id, _)| !live.has_folded(id)) =>
            {
                let late = open
                    .active()
                    .filter(|(id, _)| !live.has_folded(id))
                    .map(|(id, _)| id.clone())
                    .collect();
                Step::Close(round, attempt, late)
            }
            RoundState::Training if open.active().next().is_none() => {
                match open.dropped_after_sharing().next() {
                    Some(_) => Step::Advance(
                        round,
                        attempt,
                        RoundState::Unmasking,
                        now_ms + phase_timeout_ms,
                    ),
                    None => Step::Finish(round, attempt),
                }
            }
            RoundState::Unmasking
                if phase_over || open.submitted().all(|(_, p)| p.unmask_submitted) =>
            {
                Step::Finish(round, attempt)
            }
            _ => Step::Nothing,
        }
    }

    async fn carry_out(&self, federation_id: &str, step: Step, now_ms: u64) {
        match step {
            Step::Nothing => {}
            Step::Start => self.start_round(federation_id, now_ms).await,
            Step::Fail(round, attempt, reason) => {
                self.fail(federation_id, round, attempt, &reason).await
            }
            Step::Advance(round, attempt, to, phase_deadline_at_ms) => {
                let command = Command::AdvancePhase {
                    federation_id: federation_id.to_owned(),
                    round,
                    attempt,
                    to,
                    phase_deadline_at_ms,
                };
                if let Err(reason) = self.propose(command).await {
                    self.fail(federation_id, round, attempt, &reason).await;
                }
            }
            Step::Close(round, attempt, late) => {
                if !late.is_empty() {
                    let command = Command::DropParticipants {
                        federation_id: federation_id.to_owned(),
                        round,
                        attempt,
                        agent_ids: late,
                        reason: "deadline passed".into(),
                    };
                    let _ = self.propose(command).await;
                }
                // Nobody late is waited on any more: receipts still gathering go at once.
                if let Some(live) = self.live(federation_id) {
                    self.complete_receipts_if_done(federation_id, &live);
                }
                self.wake();
            }
            Step::Finish(round, attempt) => {
                let live = self
                    .live(federation_id)
                    .filter(|l| l.round == round && l.attempt == attempt);
                if let Some(live) = live {
                    if live.claim_finish() {
                        let runtime = self.clone();
                        let id = federation_id.to_owned();
                        tokio::spawn(async move { runtime.finish(&id, live).await });
                    }
                } else {
                    self.fail(federation_id, round, attempt, "aggregate lost")
                        .await;
                }
            }
        }
    }

    /// Samples and opens the next attempt when enough eligible agents are connected.
    async fn start_round(&self, federation_id: &str, now_ms: u64) {
        let Some(plan) = self.plan_start(federation_id, now_ms) else {
            return;
        };
        let (start, live) = plan;
        let (round, attempt) = (start.round, start.attempt);
        self.adopt(federation_id, live.clone());
        match self
            .inner
            .agents
            .propose(Command::StartRound(start.clone()))
            .await
        {
            Ok(CommandResult {
                outcome: Ok(Applied::RoundStarted { .. }),
                ..
            }) => {
                tracing::debug!(federation_id, round, attempt, "round started");
                self.invite(federation_id, &start, &live)
            }
            Ok(CommandResult {
                outcome: Err(rejection),
                ..
            }) => {
                tracing::debug!(%rejection, federation_id, "round not started");
                self.forget(federation_id, round, attempt);
            }
            Ok(_) => {}
            Err(error) => {
                tracing::debug!(%error, federation_id, "round start not committed");
                self.forget(federation_id, round, attempt);
            }
        }
    }

    /// The sample and the live attempt for the next round, if it can start.
    fn plan_start(&self, federation_id: &str, now_ms: u64) -> Option<(RoundStart, Arc<LiveRound>)> {
        let read = self.inner.agents.read(|state| {
            let federation = state.federations.get(federation_id)?;
            let (model_round, model) = federation.latest_model()?;
            let global = GlobalModel {
                round: model_round,
                values: Arc::new(F32Payload::new(model.data.clone())),
                crc32: model.crc32,
            };
            let round = federation.committed_round + 1;
            let base_attempt = federation
                .rounds
                .get(&federation.committed_round)
                .map_or(0, |r| r.attempt);
            let attempt = next_attempt(federation, round, base_attempt);
            Some((federation.spec.clone(), round, attempt, global))
        });
        let (spec, round, attempt, global) = read?;
        self.plan(federation_id, &spec, (round, attempt), global, now_ms)
    }

    /// Samples the attempt `(round, attempt)` of a federation with `spec` on `global` and
    /// prepares its aggregate; `None` when too few eligible agents are connected.
    fn plan(
        &self,
        federation_id: &str,
        spec: &FederationSpec,
        (round, attempt): (u32, u32),
        global: GlobalModel,
        now_ms: u64,
    ) -> Option<(RoundStart, Arc<LiveRound>)> {
        let eligible = self
            .inner
            .agents
            .connected_matching(&spec.selection.selector);
        let size = spec.selection.sample_size(eligible.len())?;
        let mut rng = rand::rngs::StdRng::from_os_rng();
        let mut participants: Vec<String> =
            eligible.choose_multiple(&mut rng, size).cloned().collect();
        participants.sort();
        let dim = global.values.values().len();
        let aggregate = match finish::new_aggregate(spec, dim, &self.inner.spill_dir) {
            Ok(aggregate) => aggregate,
            Err(error) => {
                tracing::warn!(%error, federation_id, "cannot aggregate this federation");
                return None;
            }
        };
        let deadline_at_ms = now_ms + spec.round_timeout_ms;
        let phase_deadline_at_ms = match spec.secure_aggregation {
            Some(secure) => now_ms + secure.phase_timeout_ms,
            None => deadline_at_ms,
        };
        let start = RoundStart {
            federation_id: federation_id.to_owned(),
            round,
            attempt,
            sampling_rate: size as f64 / eligible.len() as f64,
            participants,
            phase_deadline_at_ms,
            deadline_at_ms,
        };
        let live = LiveRound::new(&start, global, aggregate);
        Some((start, Arc::new(live)))
    }

    /// Invites the participants `start` selected to the attempt `live` aggregates, naming the
    /// model it trains on from `live`: the same invitation whether the start has applied yet
    /// or not (an attempt opened behind the previous commit).
    fn invite(&self, federation_id: &str, start: &RoundStart, live: &LiveRound) {
        let message = self.inner.agents.read(|state| {
            let federation = state.federations.get(federation_id)?;
            let opening = invitations::Opening {
                round: start.round,
                attempt: start.attempt,
                evaluate: federation.spec.evaluates(start.round),
                deadline_at_ms: start.deadline_at_ms,
                model_round: live.model_round,
                model: Some(synod_proto::v1::BlobInfo {
                    size_bytes: live.global.bytes().len() as u64,
                    crc32: live.global_crc32,
                    ..Default::default()
                }),
            };
            Some(invitations::invitation_to(federation, opening))
        });
        let Some(message) = message else {
            return;
        };
        for agent_id in &start.participants {
            self.inner.agents.hub().send(agent_id, message.clone());
        }
    }

    async fn fail(&self, federation_id: &str, round: u32, attempt: u32, reason: &str) {
        tracing::info!(
            federation_id,
            round,
            attempt,
            reason,
            "round attempt failed"
        );
        let command = Command::FailRound {
            federation_id: federation_id.to_owned(),
            round,
            attempt,
            reason: reason.to_owned(),
        };
        let _ = self.propose(command).await;
        self.forget(federation_id, round, attempt);
        self.wake();
    }

    /// Proposes `command`; the rejection or commit failure as text.
    async fn propose(&self, command: Command) -> Result<Applied, String> {
        match self.inner.agents.propose(command).await {
            Ok(CommandResult {
                outcome: Ok(applied),
                ..
            }) => Ok(applied),
            Ok(CommandResult {
                outcome: Err(rejection),
                ..
            }) => Err(rejection.to_string()),
            Err(error) => Err(error.to_string()),
        }
    }
}
