//! Votes from a client: open one, cast a ballot for an agent, read, list, and wait for the
//! result. Agents normally answer votes on their session instead, through
//! [`AgentBuilder::ballot_handler`](crate::agent::AgentBuilder::ballot_handler).

use std::future::Future;

use synod_proto::v1 as pb;
use synod_proto::v1::coordination_service_client::CoordinationServiceClient;
use tonic::transport::Channel;

use crate::jobs::all_pages;
use crate::{Client, ClientError};

impl Client {
    /// One `CoordinationService` call with `request`, following the leader.
    pub(crate) async fn coordination<Req, T, F, Fut>(
        &self,
        request: Req,
        method: F,
    ) -> Result<T, ClientError>
    where
        Req: Clone,
        F: Fn(CoordinationServiceClient<Channel>, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        self.call(|channel| {
            method(
                CoordinationServiceClient::new(channel),
                self.request(request.clone()),
            )
        })
        .await
    }

    /// Opens a vote; returns it as opened (its eligible voters resolved).
    pub async fn open_vote(&self, request: pb::OpenVoteRequest) -> Result<pb::Vote, ClientError> {
        let response = self
            .coordination(request, |mut c, r| async move { c.open_vote(r).await })
            .await?;
        Ok(response.vote.unwrap_or_default())
    }

    /// Casts `agent_id`'s ballot; returns the vote after counting it.
    pub async fn cast_ballot(
        &self,
        vote_id: &str,
        agent_id: &str,
        option: &str,
    ) -> Result<pb::Vote, ClientError> {
        let request = pb::CastBallotRequest {
            vote_id: vote_id.to_owned(),
            agent_id: agent_id.to_owned(),
            option: option.to_owned(),
        };
        let response = self
            .coordination(request, |mut c, r| async move { c.cast_ballot(r).await })
            .await?;
        Ok(response.vote.unwrap_or_default())
    }

    /// Reads a vote with its ballots (linearizable).
    pub async fn get_vote(&self, vote_id: &str) -> Result<pb::Vote, ClientError> {
        let request = pb::GetVoteRequest {
            vote_id: vote_id.to_owned(),
            consistency: pb::Consistency::Linearizable as i32,
        };
        let response = self
            .coordination(request, |mut c, r| async move { c.get_vote(r).await })
            .await?;
        Ok(response.vote.unwrap_or_default())
    }

    /// Lists votes, newest first, in any of `states` (all when empty), at most `limit`.
    pub async fn list_votes(
        &self,
        states: &[pb::VoteState],
        limit: usize,
    ) -> Result<Vec<pb::Vote>, ClientError> {
        let states: Vec<i32> = states.iter().map(|s| *s as i32).collect();
        all_pages(limit, |page| {
            let request = pb::ListVotesRequest {
                states: states.clone(),
                page: Some(page),
                consistency: pb::Consistency::Linearizable as i32,
            };
            async move {
                let response = self
                    .coordination(request, |mut c, r| async move { c.list_votes(r).await })
                    .await?;
                Ok((response.votes, response.next_page_token))
            }
        })
        .await
    }

    /// Follows a vote until it is decided or fails, calling `on_change` with each state
    /// (resuming after a broken stream); returns the closed vote.
    pub async fn watch_vote(
        &self,
        vote_id: &str,
        mut on_change: impl FnMut(&pb::Vote),
    ) -> Result<pb::Vote, ClientError> {
        let open = pb::VoteState::Open as i32;
        loop {
            let request = pb::WatchVoteRequest {
                vote_id: vote_id.to_owned(),
                consistency: pb::Consistency::Linearizable as i32,
            };
            let mut stream = self
                .coordination(request, |mut c, r| async move { c.watch_vote(r).await })
                .await?;
            loop {
                match stream.message().await {
                    Ok(Some(vote)) if vote.state != open => {
                        on_change(&vote);
                        return Ok(vote);
                    }
                    Ok(Some(vote)) => on_change(&vote),
                    Ok(None) => break,
                    Err(status) => {
                        tracing::debug!(code = ?status.code(), "vote watch broke; resuming");
                        break;
                    }
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}
