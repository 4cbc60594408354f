//! Barriers over gRPC: create, arrive / enter / leave (blocking until the generation's
//! outcome), read and delete.
//!
//! Writes are served by the leader (a follower forwards the whole request). A blocking call
//! commits the step, then waits on this node's applied state until its generation ends (or,
//! for an entry, until every party entered): woken by [`BarrierWaiters`] when the barrier
//! changes, never polled. A retried call with the same party and generation resumes the same
//! wait.

use synod_proto::v1 as pb;

use super::barrier_waiters::BarrierWaiters;
use super::convert::write_meta;
use super::request::require;
use super::{ApiError, LeaderRouter};
use crate::runtime::Proposer;
use crate::state::barriers::{BarrierKind, BarrierRecord, BarrierSpec, Parties, Step};
use crate::state::{Applied, Command, State};

/// The barrier part of `synod.v1.CoordinationService`.
#[derive(Clone)]
pub struct BarrierApi {
    proposer: Proposer,
    router: LeaderRouter,
    waiters: BarrierWaiters,
}

impl BarrierApi {
    /// A service proposing through `proposer` and reading through `router`.
    pub fn new(proposer: Proposer, router: LeaderRouter) -> Self {
        let waiters = BarrierWaiters::start(router.clone());
        Self {
            proposer,
            router,
            waiters,
        }
    }

    /// Creates a barrier.
    pub async fn create(
        &self,
        request: pb::CreateBarrierRequest,
    ) -> Result<pb::CreateBarrierResponse, ApiError> {
        require("name", &request.name)?;
        let kind = match pb::BarrierKind::try_from(request.kind) {
            Ok(pb::BarrierKind::Unspecified | pb::BarrierKind::Single) => BarrierKind::Single,
            Ok(pb::BarrierKind::Double) => BarrierKind::Double,
            Err(_) => {
                return Err(ApiError::invalid(
                    "kind",
                    format!("unknown kind {}", request.kind),
                ))
            }
        };
        let parties = match request.parties {
            Some(pb::create_barrier_request::Parties::PartyCount(n)) => Parties::Count(n),
            Some(pb::create_barrier_request::Parties::AgentIds(list)) => {
                Parties::Agents(list.agent_ids)
            }
            None => return Err(ApiError::invalid("parties", "set party_count or agent_ids")),
        };
        let spec = BarrierSpec {
            kind,
            parties,
            timeout_ms: request.timeout_ms,
            cyclic: request.cyclic,
        };
        let command = Command::CreateBarrier {
            name: request.name.clone(),
            spec,
        };
        let result = self.proposer.propose(command).await?;
        match &result.outcome {
            Ok(Applied::BarrierChanged { .. }) => Ok(pb::CreateBarrierResponse {
                barrier: Some(self.read(&request.name)?),
                write: Some(write_meta(&result)),
            }),
            Ok(other) => Err(ApiError::Internal(format!("unexpected outcome {other:?}"))),
            Err(rejection) => Err(rejection.clone().into()),
        }
    }

    /// Commits a party's step, then waits for its outcome.
    pub async fn step(
        &self,
        name: String,
        party: String,
        generation: u64,
        step: Step,
    ) -> Result<(pb::BarrierWaitResult, pb::WriteMeta), ApiError> {
        require("name", &name)?;
        require("party_id", &party)?;
        let command = Command::BarrierStep {
            name: name.clone(),
            party: party.clone(),
            generation,
            step,
        };
        let result = self.proposer.propose(command).await?;
        let generation = match &result.outcome {
            Ok(Applied::BarrierChanged { generation, .. }) => *generation,
            Ok(other) => return Err(ApiError::Internal(format!("unexpected outcome {other:?}"))),
            Err(rejection) => return Err(rejection.clone().into()),
        };
        let waited = self.wait(&name, &party, generation, step).await?;
        Ok((waited, write_meta(&result)))
    }

    /// Waits until generation `generation` of `name` ends (an entry: until every party
    /// entered, or it ends).
    async fn wait(
        &self,
        name: &str,
        party: &str,
        generation: u64,
        step: Step,
    ) -> Result<pb::BarrierWaitResult, ApiError> {
        let registration = self.waiters.register(name);
        loop {
            // Armed before the state is read, so a change in between is not missed.
            let woken = registration.notify.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let (done, _) = self
                .router
                .read_local(false, |state| outcome(state, name, party, generation, step));
            if let Some(result) = done {
                return Ok(result);
            }
            woken.await;
        }
    }

    /// One barrier from this replica's applied state.
    fn read(&self, name: &str) -> Result<pb::Barrier, ApiError> {
        let (found, _) = self
            .router
            .read_local(false, |state| read_barrier(state, name));
        found
    }

    /// Deletes a barrier.
    pub async fn delete(&self, name: String) -> Result<pb::DeleteBarrierResponse, ApiError> {
        require("name", &name)?;
        let result = self
            .proposer
            .propose(Command::DeleteBarrier { name })
            .await?;
        match &result.outcome {
            Ok(Applied::Deleted(deleted)) => Ok(pb::DeleteBarrierResponse {
                deleted: *deleted,
                write: Some(write_meta(&result)),
            }),
            Ok(other) => Err(ApiError::Internal(format!("unexpected outcome {other:?}"))),
            Err(rejection) => Err(rejection.clone().into()),
        }
    }

    /// The router, for reads.
    pub fn router(&self) -> &LeaderRouter {
        &self.router
    }
}

/// The end of a wait, once known.
fn outcome(
    state: &State,
    name: &str,
    party: &str,
    number: u64,
    step: Step,
) -> Option<pb::BarrierWaitResult> {
    let result = |outcome: pb::BarrierOutcome, reason: &str, index: u32| pb::BarrierWaitResult {
        name: name.to_owned(),
        generation: number,
        outcome: outcome as i32,
        reason: reason.to_owned(),
        arrival_index: index,
    };
    let Some(barrier) = state.barriers.get(name) else {
        return Some(result(pb::BarrierOutcome::Broken, "deleted", 0));
    };
    let Some(generation) = barrier.generation(number) else {
        // Ended so long ago it is forgotten; only released or broken generations are.
        return Some(result(
            pb::BarrierOutcome::Broken,
            "generation forgotten",
            0,
        ));
    };
    let index = generation.arrival_index(party).unwrap_or(0);
    match &generation.end {
        Some(end) if end.released => Some(result(pb::BarrierOutcome::Released, "", index)),
        Some(end) => Some(result(pb::BarrierOutcome::Broken, &end.reason, index)),
        None if step == Step::Enter && generation.entered => {
            Some(result(pb::BarrierOutcome::Released, "", index))
        }
        None => None,
    }
}

/// A barrier's proto form.
pub fn read_barrier(state: &State, name: &str) -> Result<pb::Barrier, ApiError> {
    let record = state
        .barriers
        .get(name)
        .ok_or_else(|| ApiError::NotFound(format!("name: no barrier '{name}'")))?;
    Ok(barrier(record))
}

fn barrier(record: &BarrierRecord) -> pb::Barrier {
    let current = &record.current;
    let state = match (&current.end, current.entered) {
        (Some(end), _) if end.released => pb::BarrierState::Released,
        (Some(_), _) => pb::BarrierState::Broken,
        (None, true) => pb::BarrierState::Entered,
        (None, false) => pb::BarrierState::Waiting,
    };
    let (party_count, party_ids) = match &record.spec.parties {
        Parties::Count(n) => (*n, Vec::new()),
        Parties::Agents(ids) => (ids.len() as u32, ids.clone()),
    };
    pb::Barrier {
        name: record.name.clone(),
        kind: match record.spec.kind {
            BarrierKind::Single => pb::BarrierKind::Single,
            BarrierKind::Double => pb::BarrierKind::Double,
        } as i32,
        party_count,
        party_ids,
        timeout_ms: record.spec.timeout_ms,
        cyclic: record.spec.cyclic,
        generation: current.number,
        state: state as i32,
        arrived_party_ids: current.arrived.clone(),
        left_party_ids: current.left.clone(),
        broken_reason: current
            .end
            .as_ref()
            .map(|end| end.reason.clone())
            .unwrap_or_default(),
        created_at_ms: record.created_at_ms,
        generation_started_at_ms: current.started_at_ms.unwrap_or(0),
    }
}
