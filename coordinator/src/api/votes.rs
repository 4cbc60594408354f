//! Votes over gRPC: open, cast, read, list and watch.
//!
//! Writes are served by the leader (a follower forwards the whole request): the leader
//! resolves a selector to the agents connected to it, commits the command, reads the applied
//! vote and asks the eligible agents for their ballots on their sessions. Reads follow the
//! usual consistency rule; `WatchVote` sends the vote, then every change, until it closes.
//!
//! ```text
//!   OpenVote ─► check ─► voters (listed | selector → connected agents) ─► OpenVote command
//!             ─► VoteRequest to each voter's session ─► the vote
//!   CastBallot / agent Ballot ─► CastBallot command ─► verdict at apply ─► the vote
//! ```

use std::time::Duration;

use synod_proto::v1 as pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use super::convert::write_meta;
use super::convert_vote::{rule, vote, vote_state, voters, Voters};
use super::request::{
    check_chars, id_for, next_token, page_position, page_size, require, state_filter,
};
use super::{ApiError, LeaderRouter};
use crate::runtime::{AgentRuntime, Proposer};
use crate::state::votes::{VoteRecord, VoteSpec};
use crate::state::{Applied, Command, Rejection, State};

/// Longest idempotency key, in characters.
const IDEMPOTENCY_KEY_CHARS_MAX: usize = 128;
/// Vote states buffered per watcher.
const WATCH_BUFFER: usize = 16;
/// How long a watcher's buffer may stay full before its stream is dropped.
const WATCH_STALL_MS: u64 = 10_000;

/// The vote half of `synod.v1.CoordinationService`.
#[derive(Clone)]
pub struct VoteApi {
    proposer: Proposer,
    router: LeaderRouter,
    runtime: AgentRuntime,
}

/// The stream type of `WatchVote`.
pub type VoteStream = ReceiverStream<Result<pb::Vote, Status>>;

impl VoteApi {
    /// A service proposing through `proposer`, reading through `router`, reaching agents
    /// through `runtime`.
    pub fn new(proposer: Proposer, router: LeaderRouter, runtime: AgentRuntime) -> Self {
        Self {
            proposer,
            router,
            runtime,
        }
    }

    /// The leader's channel when this node must forward a write.
    pub fn forward_target<T>(
        &self,
        request: &tonic::Request<T>,
    ) -> Result<Option<tonic::transport::Channel>, ApiError> {
        self.router.forward_target(request)
    }

    /// Rewraps a request for forwarding.
    pub fn forwarded<T>(&self, request: tonic::Request<T>) -> tonic::Request<T> {
        self.router.forwarded(request)
    }

    /// The router, for reads.
    pub fn router(&self) -> &LeaderRouter {
        &self.router
    }

    /// Opens a vote (on the leader) and asks its voters for their ballots.
    pub async fn open(
        &self,
        request: pb::OpenVoteRequest,
    ) -> Result<pb::OpenVoteResponse, ApiError> {
        require("question", &request.question)?;
        check_chars(
            "idempotency_key",
            &request.idempotency_key,
            IDEMPOTENCY_KEY_CHARS_MAX,
        )?;
        if request.timeout_ms == 0 {
            return Err(ApiError::invalid("timeout_ms", "required"));
        }
        let rule = rule(request.rule)?;
        let voters = match voters(request.voters)? {
            Voters::Listed(ids) => ids,
            Voters::Selected(selector) => {
                let ids = self.runtime.connected_matching(&selector);
                if ids.is_empty() {
                    return Err(ApiError::invalid(
                        "selector",
                        "no connected agent matches it",
                    ));
                }
                ids
            }
        };
        let spec = VoteSpec {
            question: request.question,
            options: request.options,
            voters,
            timeout_ms: request.timeout_ms,
            rule,
            opened_by: "client".to_owned(),
        };
        let key = request.idempotency_key;
        let vote_id = id_for("synod.v1.CoordinationService/OpenVote", &key);
        let command = Command::OpenVote {
            vote_id: vote_id.clone(),
            spec: spec.clone(),
        };
        let result = self.proposer.propose(command).await?;
        match &result.outcome {
            Ok(Applied::VoteChanged { .. }) => {}
            Err(Rejection::VoteExists { .. }) if !key.is_empty() => {
                let existing = self.read_vote(&vote_id)?;
                let same = existing.question == spec.question && existing.options == spec.options;
                return match same {
                    true => Ok(pb::OpenVoteResponse {
                        vote: Some(existing),
                        write: Some(write_meta(&result)),
                    }),
                    false => Err(ApiError::AlreadyExists(format!(
                        "idempotency_key: already used for vote '{vote_id}' with another question"
                    ))),
                };
            }
            Ok(other) => return Err(unexpected(other)),
            Err(rejection) => return Err(rejection.clone().into()),
        }
        self.runtime.request_ballots(&vote_id);
        Ok(pb::OpenVoteResponse {
            vote: Some(self.read_vote(&vote_id)?),
            write: Some(write_meta(&result)),
        })
    }

    /// Counts a ballot (on the leader).
    pub async fn cast(
        &self,
        request: pb::CastBallotRequest,
    ) -> Result<pb::CastBallotResponse, ApiError> {
        require("vote_id", &request.vote_id)?;
        require("agent_id", &request.agent_id)?;
        require("option", &request.option)?;
        let command = Command::CastBallot {
            vote_id: request.vote_id.clone(),
            agent_id: request.agent_id,
            option: request.option,
        };
        let result = self.proposer.propose(command).await?;
        match &result.outcome {
            Ok(Applied::VoteChanged { .. } | Applied::Done) => Ok(pb::CastBallotResponse {
                vote: Some(self.read_vote(&request.vote_id)?),
                write: Some(write_meta(&result)),
            }),
            Ok(other) => Err(unexpected(other)),
            Err(rejection) => Err(rejection.clone().into()),
        }
    }

    /// One vote from this replica's applied state.
    fn read_vote(&self, vote_id: &str) -> Result<pb::Vote, ApiError> {
        let (found, _) = self.router.read_local(false, |state| {
            state.votes.get(vote_id).map(|v| vote(v, true))
        });
        found.ok_or_else(|| no_vote(vote_id))
    }

    /// Starts following a vote on this replica: its state now, then every change.
    pub fn watch(&self, vote_id: &str, linearizable: bool) -> Result<VoteStream, ApiError> {
        let (first, _) = self.router.read_local(linearizable, |state| {
            state.votes.get(vote_id).map(|v| vote(v, true))
        });
        let first = first.ok_or_else(|| no_vote(vote_id))?;
        let (sender, receiver) = mpsc::channel(WATCH_BUFFER);
        let router = self.router.clone();
        let vote_id = vote_id.to_owned();
        tokio::spawn(async move {
            if let Err(error) = follow(router, &vote_id, first, &sender).await {
                let _ = sender.try_send(Err(error.into()));
            }
        });
        Ok(ReceiverStream::new(receiver))
    }
}

/// Sends `first`, then the vote again each time a ballot is counted or it closes.
async fn follow(
    router: LeaderRouter,
    vote_id: &str,
    first: pb::Vote,
    sender: &mpsc::Sender<Result<pb::Vote, Status>>,
) -> Result<(), ApiError> {
    let mut metrics = router.raft().metrics();
    let mut sent = (first.ballots.len(), first.state);
    let closed = |state: i32| state != pb::VoteState::Open as i32;
    if !send(sender, first.clone()).await? || closed(first.state) {
        return Ok(());
    }
    loop {
        let seen = metrics.borrow_and_update().last_applied;
        let (current, _) = router.read_local(false, |state| {
            let record = state.votes.get(vote_id)?;
            let key = (record.ballots.len(), vote_state(record.state) as i32);
            Some((key, (key != sent).then(|| vote(record, true))))
        });
        let (key, changed) = current.ok_or_else(|| no_vote(vote_id))?;
        if let Some(changed) = changed {
            sent = key;
            if !send(sender, changed).await? {
                return Ok(());
            }
        }
        if closed(key.1) {
            return Ok(());
        }
        tokio::select! {
            changed = metrics.wait_for(|m| m.last_applied != seen) => {
                if changed.is_err() {
                    return Err(ApiError::Unavailable {
                        message: "this node is shutting down".into(),
                        leader: None,
                    });
                }
            }
            () = sender.closed() => return Ok(()),
        }
    }
}

/// Sends one state; false when the client left.
async fn send(
    sender: &mpsc::Sender<Result<pb::Vote, Status>>,
    vote: pb::Vote,
) -> Result<bool, ApiError> {
    let stall = Duration::from_millis(WATCH_STALL_MS);
    match tokio::time::timeout(stall, sender.send(Ok(vote))).await {
        Ok(Ok(())) => Ok(true),
        Ok(Err(_)) => Ok(false),
        Err(_) => Err(ApiError::ResourceExhausted(format!(
            "watcher did not read its vote states for {WATCH_STALL_MS} ms"
        ))),
    }
}

/// A vote read from `state`, with its ballots.
pub fn read_vote(state: &State, vote_id: &str) -> Result<pb::Vote, ApiError> {
    state
        .votes
        .get(vote_id)
        .map(|v| vote(v, true))
        .ok_or_else(|| no_vote(vote_id))
}

/// A page of votes, newest first, before position `before`; and the next page's token.
pub fn list_votes(
    state: &State,
    request: &pb::ListVotesRequest,
) -> Result<(Vec<pb::Vote>, String), ApiError> {
    let states = state_filter::<pb::VoteState>("states", &request.states)?;
    let limit = page_size(request.page.as_ref())?;
    let before = page_position(request.page.as_ref())?;
    let wanted = |v: &&VoteRecord| {
        before.is_none_or(|before| v.seq < before)
            && (states.is_empty() || states.contains(&(vote_state(v.state) as i32)))
    };
    let mut found: Vec<&VoteRecord> = state.votes.iter().filter(wanted).collect();
    found.sort_unstable_by_key(|v| std::cmp::Reverse(v.seq));
    let more = found.len() > limit;
    found.truncate(limit);
    let token = next_token(more, found.last().map(|v| v.seq));
    Ok((found.into_iter().map(|v| vote(v, false)).collect(), token))
}

fn no_vote(vote_id: &str) -> ApiError {
    ApiError::NotFound(format!("vote_id: no vote '{vote_id}'"))
}

fn unexpected(applied: &Applied) -> ApiError {
    ApiError::Internal(format!("unexpected outcome {applied:?}"))
}
