//! Elections over gRPC: campaign (blocking until the candidate leads; cancelling the call
//! withdraws the candidacy), resign, read and observe the leader.
//!
//! Writes are served by the leader (a follower forwards the whole request); waits and streams
//! follow this node's applied state, woken by Raft's apply watch.

use std::time::Duration;

use synod_proto::v1 as pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use super::convert::write_meta;
use super::request::require;
use super::{ApiError, LeaderRouter};
use crate::runtime::Proposer;
use crate::state::elections::Leadership;
use crate::state::{Applied, Command, State};

/// How long an observer's buffer may stay full before its stream is dropped.
const OBSERVE_STALL_MS: u64 = 10_000;

/// The election part of `synod.v1.CoordinationService`.
#[derive(Clone)]
pub struct ElectionApi {
    proposer: Proposer,
    router: LeaderRouter,
}

/// The stream type of `Observe`.
pub type ObserveStream = ReceiverStream<Result<pb::ObserveResponse, Status>>;

/// Withdraws a candidacy whose campaign call ended before it led (the client cancelled).
struct Candidacy {
    proposer: Proposer,
    election: String,
    agent_id: String,
    settled: bool,
}

impl Drop for Candidacy {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let command = Command::Withdraw {
            election: std::mem::take(&mut self.election),
            agent_id: std::mem::take(&mut self.agent_id),
        };
        let proposer = self.proposer.clone();
        tokio::spawn(async move {
            if let Err(error) = proposer.propose(command).await {
                tracing::debug!(%error, "withdrawing a cancelled candidacy failed");
            }
        });
    }
}

impl ElectionApi {
    /// A service proposing through `proposer` and reading through `router`.
    pub fn new(proposer: Proposer, router: LeaderRouter) -> Self {
        Self { proposer, router }
    }

    /// The router, for reads.
    pub fn router(&self) -> &LeaderRouter {
        &self.router
    }

    /// Campaigns and waits until the candidate leads.
    pub async fn campaign(
        &self,
        request: pb::CampaignRequest,
    ) -> Result<pb::CampaignResponse, ApiError> {
        require("election", &request.election)?;
        require("agent_id", &request.agent_id)?;
        let command = Command::Campaign {
            election: request.election.clone(),
            agent_id: request.agent_id.clone(),
            value: request.value,
        };
        let mut candidacy = Candidacy {
            proposer: self.proposer.clone(),
            election: request.election.clone(),
            agent_id: request.agent_id.clone(),
            settled: false,
        };
        let result = self.proposer.propose(command).await?;
        match &result.outcome {
            Ok(Applied::ElectionChanged { .. }) => {}
            Ok(other) => return Err(ApiError::Internal(format!("unexpected outcome {other:?}"))),
            Err(rejection) => {
                candidacy.settled = true;
                return Err(rejection.clone().into());
            }
        }
        let mut metrics = self.router.raft().metrics();
        loop {
            let seen = metrics.borrow_and_update().last_applied;
            let (leading, _) = self.router.read_local(false, |state| {
                leader(state, &request.election).filter(|l| l.agent_id == request.agent_id)
            });
            if let Some(leadership) = leading {
                candidacy.settled = true;
                return Ok(pb::CampaignResponse {
                    leadership: Some(leadership_pb(&request.election, &leadership)),
                    write: Some(write_meta(&result)),
                });
            }
            if metrics.wait_for(|m| m.last_applied != seen).await.is_err() {
                return Err(ApiError::Unavailable {
                    message: "this node is shutting down".into(),
                    leader: None,
                });
            }
        }
    }

    /// Gives up a leadership term.
    pub async fn resign(&self, request: pb::ResignRequest) -> Result<pb::ResignResponse, ApiError> {
        require("election", &request.election)?;
        require("agent_id", &request.agent_id)?;
        let command = Command::Resign {
            election: request.election,
            agent_id: request.agent_id,
            term: request.term,
        };
        let result = self.proposer.propose(command).await?;
        match &result.outcome {
            Ok(_) => Ok(pb::ResignResponse {
                write: Some(write_meta(&result)),
            }),
            Err(rejection) => Err(rejection.clone().into()),
        }
    }

    /// Streams the election's leader now, then at every change.
    pub fn observe(&self, election: &str, linearizable: bool) -> Result<ObserveStream, ApiError> {
        require("election", election)?;
        let (first, _) = self
            .router
            .read_local(linearizable, |state| observed(state, election));
        let (sender, receiver) = mpsc::channel(16);
        let router = self.router.clone();
        let election = election.to_owned();
        tokio::spawn(async move {
            let mut metrics = router.raft().metrics();
            let mut sent = first.log_index;
            if !send(&sender, first).await {
                return;
            }
            loop {
                let seen = metrics.borrow_and_update().last_applied;
                let (now, _) = router.read_local(false, |state| observed(state, &election));
                if now.log_index != sent {
                    sent = now.log_index;
                    if !send(&sender, now).await {
                        return;
                    }
                }
                tokio::select! {
                    changed = metrics.wait_for(|m| m.last_applied != seen) => {
                        if changed.is_err() {
                            return;
                        }
                    }
                    () = sender.closed() => return,
                }
            }
        });
        Ok(ReceiverStream::new(receiver))
    }
}

/// Sends one observation; false when the observer left or stalled.
async fn send(
    sender: &mpsc::Sender<Result<pb::ObserveResponse, Status>>,
    item: pb::ObserveResponse,
) -> bool {
    let stall = Duration::from_millis(OBSERVE_STALL_MS);
    matches!(
        tokio::time::timeout(stall, sender.send(Ok(item))).await,
        Ok(Ok(()))
    )
}

/// The election's current leader.
pub fn leader(state: &State, election: &str) -> Option<Leadership> {
    state.elections.get(election)?.leader.clone()
}

/// The leader and the log index of its last change.
fn observed(state: &State, election: &str) -> pb::ObserveResponse {
    let entry = state.elections.get(election);
    pb::ObserveResponse {
        leader: entry
            .and_then(|e| e.leader.as_ref())
            .map(|l| leadership_pb(election, l)),
        log_index: entry.map_or(0, |e| e.changed_at_index),
    }
}

/// A leadership's proto form.
pub fn leadership_pb(election: &str, leadership: &Leadership) -> pb::Leadership {
    pb::Leadership {
        election: election.to_owned(),
        agent_id: leadership.agent_id.clone(),
        value: leadership.value.clone(),
        term: leadership.term,
        elected_at_ms: leadership.elected_at_ms,
    }
}
