//! `synod.v1.CoordinationService`: votes are served by [`VoteApi`], barriers by
//! [`BarrierApi`], checkpoints by [`CheckpointApi`], elections by [`ElectionApi`], channels by
//! [`ChannelApi`], direct and broadcast messages by [`MessageApi`]. The caller's identity
//! ([`Caller`]) is checked where a request acts as an agent. Writes reaching a follower are
//! forwarded whole to the
//! leader (a checkpoint save is received here and its command forwarded); linearizable reads
//! and streams are served by the leader, proxied through a follower.

use synod_proto::v1 as pb;
use synod_proto::v1::coordination_service_client::CoordinationServiceClient;
use synod_proto::v1::coordination_service_server::CoordinationService;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::barriers::{read_barrier, BarrierApi};
use super::channels::{ChannelApi, SubscribeStream};
use super::checkpoints::{list_checkpoints, CheckpointApi, CheckpointStream};
use super::elections::{leader, leadership_pb, ElectionApi, ObserveStream};
use super::identity::Caller;
use super::leader::wants_linearizable;
use super::messages::MessageApi;
use super::request::require;
use super::votes::{list_votes, read_vote, VoteApi, VoteStream};
use crate::state::barriers::Step;
use crate::state::channels::Delivery;

/// Serves `synod.v1.CoordinationService`.
pub struct CoordinationApi {
    votes: VoteApi,
    barriers: BarrierApi,
    checkpoints: CheckpointApi,
    elections: ElectionApi,
    channels: ChannelApi,
    messages: MessageApi,
}

/// The parts of [`CoordinationApi`], one per primitive.
pub struct CoordinationParts {
    /// Votes.
    pub votes: VoteApi,
    /// Barriers.
    pub barriers: BarrierApi,
    /// Checkpoints.
    pub checkpoints: CheckpointApi,
    /// Elections.
    pub elections: ElectionApi,
    /// Channels.
    pub channels: ChannelApi,
    /// Direct and broadcast messages.
    pub messages: MessageApi,
}

impl CoordinationApi {
    /// A service made of its parts.
    pub fn new(parts: CoordinationParts) -> Self {
        Self {
            votes: parts.votes,
            barriers: parts.barriers,
            checkpoints: parts.checkpoints,
            elections: parts.elections,
            channels: parts.channels,
            messages: parts.messages,
        }
    }

    /// Refuses `request` unless its caller may act as the agent its `field` names.
    fn check_acting_as<T>(
        &self,
        request: &Request<T>,
        field: &str,
        agent_id: impl Fn(&T) -> &str,
    ) -> Result<(), Status> {
        let (allowed, _) = self.votes.router().read_local(false, |state| {
            let caller = Caller::of(request.metadata(), state)?;
            caller.may_act_as(field, agent_id(request.get_ref()), state)
        });
        Ok(allowed?)
    }

    /// The authenticated caller of `request`, from this node's applied state.
    fn caller<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        let (caller, _) = self
            .votes
            .router()
            .read_local(false, |state| Caller::of(request.metadata(), state));
        Ok(caller?)
    }
}

/// Relays a stream served by the leader.
fn proxy<T: Send + 'static>(mut upstream: Streaming<T>) -> ReceiverStream<Result<T, Status>> {
    let (sender, receiver) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        while let Some(item) = upstream.message().await.transpose() {
            if sender.send(item).await.is_err() {
                return;
            }
        }
    });
    ReceiverStream::new(receiver)
}

/// Forwards a write reaching a follower to the leader, whole.
macro_rules! forward_write {
    ($self:ident, $request:ident, $method:ident) => {
        if let Some(leader) = $self.votes.forward_target(&$request)? {
            return CoordinationServiceClient::new(leader)
                .$method($self.votes.forwarded($request))
                .await;
        }
    };
}

#[tonic::async_trait]
impl CoordinationService for CoordinationApi {
    #[tracing::instrument(skip_all)]
    async fn open_vote(
        &self,
        request: Request<pb::OpenVoteRequest>,
    ) -> Result<Response<pb::OpenVoteResponse>, Status> {
        forward_write!(self, request, open_vote);
        Ok(Response::new(self.votes.open(request.into_inner()).await?))
    }

    #[tracing::instrument(skip_all, fields(vote_id = %request.get_ref().vote_id))]
    async fn cast_ballot(
        &self,
        request: Request<pb::CastBallotRequest>,
    ) -> Result<Response<pb::CastBallotResponse>, Status> {
        forward_write!(self, request, cast_ballot);
        self.check_acting_as(&request, "agent_id", |r| &r.agent_id)?;
        Ok(Response::new(self.votes.cast(request.into_inner()).await?))
    }

    #[tracing::instrument(skip_all, fields(vote_id = %request.get_ref().vote_id))]
    async fn get_vote(
        &self,
        request: Request<pb::GetVoteRequest>,
    ) -> Result<Response<pb::GetVoteResponse>, Status> {
        require("vote_id", &request.get_ref().vote_id)?;
        let linearizable = wants_linearizable(request.get_ref().consistency);
        let router = self.votes.router();
        if let Some(leader) = router.route(&request, linearizable).await? {
            return CoordinationServiceClient::new(leader)
                .get_vote(router.forwarded(request))
                .await;
        }
        let vote_id = request.into_inner().vote_id;
        let (vote, read) = router.read_local(linearizable, |state| read_vote(state, &vote_id));
        Ok(Response::new(pb::GetVoteResponse {
            vote: Some(vote?),
            read: Some(read),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_votes(
        &self,
        request: Request<pb::ListVotesRequest>,
    ) -> Result<Response<pb::ListVotesResponse>, Status> {
        let linearizable = wants_linearizable(request.get_ref().consistency);
        let router = self.votes.router();
        if let Some(leader) = router.route(&request, linearizable).await? {
            return CoordinationServiceClient::new(leader)
                .list_votes(router.forwarded(request))
                .await;
        }
        let request = request.into_inner();
        let (found, read) = router.read_local(linearizable, |state| list_votes(state, &request));
        let (votes, next_page_token) = found?;
        Ok(Response::new(pb::ListVotesResponse {
            votes,
            next_page_token,
            read: Some(read),
        }))
    }

    type WatchVoteStream = VoteStream;

    #[tracing::instrument(skip_all, fields(vote_id = %request.get_ref().vote_id))]
    async fn watch_vote(
        &self,
        request: Request<pb::WatchVoteRequest>,
    ) -> Result<Response<Self::WatchVoteStream>, Status> {
        require("vote_id", &request.get_ref().vote_id)?;
        let linearizable = wants_linearizable(request.get_ref().consistency);
        if let Some(leader) = self.votes.router().route(&request, linearizable).await? {
            let upstream = CoordinationServiceClient::new(leader)
                .watch_vote(self.votes.forwarded(request))
                .await?
                .into_inner();
            return Ok(Response::new(proxy(upstream)));
        }
        let vote_id = request.into_inner().vote_id;
        Ok(Response::new(self.votes.watch(&vote_id, linearizable)?))
    }

    #[tracing::instrument(skip_all, fields(name = %request.get_ref().name))]
    async fn create_barrier(
        &self,
        request: Request<pb::CreateBarrierRequest>,
    ) -> Result<Response<pb::CreateBarrierResponse>, Status> {
        forward_write!(self, request, create_barrier);
        Ok(Response::new(
            self.barriers.create(request.into_inner()).await?,
        ))
    }

    #[tracing::instrument(skip_all, fields(name = %request.get_ref().name))]
    async fn arrive_barrier(
        &self,
        request: Request<pb::ArriveBarrierRequest>,
    ) -> Result<Response<pb::ArriveBarrierResponse>, Status> {
        forward_write!(self, request, arrive_barrier);
        self.check_acting_as(&request, "party_id", |r| &r.party_id)?;
        let r = request.into_inner();
        let (result, write) = self
            .barriers
            .step(r.name, r.party_id, r.generation, Step::Arrive)
            .await?;
        Ok(Response::new(pb::ArriveBarrierResponse {
            result: Some(result),
            write: Some(write),
        }))
    }

    #[tracing::instrument(skip_all, fields(name = %request.get_ref().name))]
    async fn enter_barrier(
        &self,
        request: Request<pb::EnterBarrierRequest>,
    ) -> Result<Response<pb::EnterBarrierResponse>, Status> {
        forward_write!(self, request, enter_barrier);
        self.check_acting_as(&request, "party_id", |r| &r.party_id)?;
        let r = request.into_inner();
        let (result, write) = self
            .barriers
            .step(r.name, r.party_id, r.generation, Step::Enter)
            .await?;
        Ok(Response::new(pb::EnterBarrierResponse {
            result: Some(result),
            write: Some(write),
        }))
    }

    #[tracing::instrument(skip_all, fields(name = %request.get_ref().name))]
    async fn leave_barrier(
        &self,
        request: Request<pb::LeaveBarrierRequest>,
    ) -> Result<Response<pb::LeaveBarrierResponse>, Status> {
        forward_write!(self, request, leave_barrier);
        self.check_acting_as(&request, "party_id", |r| &r.party_id)?;
        let r = request.into_inner();
        let (result, write) = self
            .barriers
            .step(r.name, r.party_id, r.generation, Step::Leave)
            .await?;
        Ok(Response::new(pb::LeaveBarrierResponse {
            result: Some(result),
            write: Some(write),
        }))
    }

    #[tracing::instrument(skip_all, fields(name = %request.get_ref().name))]
    async fn get_barrier(
        &self,
        request: Request<pb::GetBarrierRequest>,
    ) -> Result<Response<pb::GetBarrierResponse>, Status> {
        require("name", &request.get_ref().name)?;
        let linearizable = wants_linearizable(request.get_ref().consistency);
        let router = self.barriers.router();
        if let Some(leader) = router.route(&request, linearizable).await? {
            return CoordinationServiceClient::new(leader)
                .get_barrier(router.forwarded(request))
                .await;
        }
        let name = request.into_inner().name;
        let (barrier, read) = router.read_local(linearizable, |state| read_barrier(state, &name));
        Ok(Response::new(pb::GetBarrierResponse {
            barrier: Some(barrier?),
            read: Some(read),
        }))
    }

    #[tracing::instrument(skip_all, fields(name = %request.get_ref().name))]
    async fn delete_barrier(
        &self,
        request: Request<pb::DeleteBarrierRequest>,
    ) -> Result<Response<pb::DeleteBarrierResponse>, Status> {
        forward_write!(self, request, delete_barrier);
        let name = request.into_inner().name;
        Ok(Response::new(self.barriers.delete(name).await?))
    }

    #[tracing::instrument(skip_all)]
    async fn save_checkpoint(
        &self,
        request: Request<Streaming<pb::SaveCheckpointRequest>>,
    ) -> Result<Response<pb::SaveCheckpointResponse>, Status> {
        Ok(Response::new(
            self.checkpoints.save(request.into_inner()).await?,
        ))
    }

    type GetCheckpointStream = CheckpointStream;

    #[tracing::instrument(skip_all, fields(name = %request.get_ref().name))]
    async fn get_checkpoint(
        &self,
        request: Request<pb::GetCheckpointRequest>,
    ) -> Result<Response<Self::GetCheckpointStream>, Status> {
        let linearizable = wants_linearizable(request.get_ref().consistency);
        let router = self.checkpoints.router();
        if let Some(leader) = router.route(&request, linearizable).await? {
            let upstream = CoordinationServiceClient::new(leader)
                .get_checkpoint(router.forwarded(request))
                .await?
                .into_inner();
            return Ok(Response::new(proxy(upstream)));
        }
        let request = request.into_inner();
        Ok(Response::new(self.checkpoints.read(request, linearizable)?))
    }

    #[tracing::instrument(skip_all)]
    async fn list_checkpoints(
        &self,
        request: Request<pb::ListCheckpointsRequest>,
    ) -> Result<Response<pb::ListCheckpointsResponse>, Status> {
        let linearizable = wants_linearizable(request.get_ref().consistency);
        let router = self.checkpoints.router();
        if let Some(leader) = router.route(&request, linearizable).await? {
            return CoordinationServiceClient::new(leader)
                .list_checkpoints(router.forwarded(request))
                .await;
        }
        let request = request.into_inner();
        let (found, read) =
            router.read_local(linearizable, |state| list_checkpoints(state, &request));
        let (checkpoints, next_page_token) = found?;
        Ok(Response::new(pb::ListCheckpointsResponse {
            checkpoints,
            next_page_token,
            read: Some(read),
        }))
    }

    #[tracing::instrument(skip_all, fields(election = %request.get_ref().election))]
    async fn campaign(
        &self,
        request: Request<pb::CampaignRequest>,
    ) -> Result<Response<pb::CampaignResponse>, Status> {
        forward_write!(self, request, campaign);
        self.check_acting_as(&request, "agent_id", |r| &r.agent_id)?;
        Ok(Response::new(
            self.elections.campaign(request.into_inner()).await?,
        ))
    }

    type ObserveStream = ObserveStream;

    #[tracing::instrument(skip_all, fields(election = %request.get_ref().election))]
    async fn observe(
        &self,
        request: Request<pb::ObserveRequest>,
    ) -> Result<Response<Self::ObserveStream>, Status> {
        let linearizable = wants_linearizable(request.get_ref().consistency);
        let router = self.elections.router();
        if let Some(leader) = router.route(&request, linearizable).await? {
            let upstream = CoordinationServiceClient::new(leader)
                .observe(router.forwarded(request))
                .await?
                .into_inner();
            return Ok(Response::new(proxy(upstream)));
        }
        let election = request.into_inner().election;
        Ok(Response::new(
            self.elections.observe(&election, linearizable)?,
        ))
    }

    #[tracing::instrument(skip_all, fields(election = %request.get_ref().election))]
    async fn resign(
        &self,
        request: Request<pb::ResignRequest>,
    ) -> Result<Response<pb::ResignResponse>, Status> {
        forward_write!(self, request, resign);
        self.check_acting_as(&request, "agent_id", |r| &r.agent_id)?;
        Ok(Response::new(
            self.elections.resign(request.into_inner()).await?,
        ))
    }

    #[tracing::instrument(skip_all, fields(election = %request.get_ref().election))]
    async fn get_leader(
        &self,
        request: Request<pb::GetLeaderRequest>,
    ) -> Result<Response<pb::GetLeaderResponse>, Status> {
        require("election", &request.get_ref().election)?;
        let linearizable = wants_linearizable(request.get_ref().consistency);
        let router = self.elections.router();
        if let Some(leader) = router.route(&request, linearizable).await? {
            return CoordinationServiceClient::new(leader)
                .get_leader(router.forwarded(request))
                .await;
        }
        let election = request.into_inner().election;
        let (found, read) = router.read_local(linearizable, |state| leader(state, &election));
        Ok(Response::new(pb::GetLeaderResponse {
            leader: found.map(|l| leadership_pb(&election, &l)),
            read: Some(read),
        }))
    }

    #[tracing::instrument(skip_all, fields(channel = %request.get_ref().name))]
    async fn create_channel(
        &self,
        request: Request<pb::CreateChannelRequest>,
    ) -> Result<Response<pb::CreateChannelResponse>, Status> {
        forward_write!(self, request, create_channel);
        Ok(Response::new(
            self.channels.create(request.into_inner()).await?,
        ))
    }

    #[tracing::instrument(skip_all, fields(channel = %request.get_ref().channel))]
    async fn publish(
        &self,
        request: Request<pb::PublishRequest>,
    ) -> Result<Response<pb::PublishResponse>, Status> {
        forward_write!(self, request, publish);
        let sender = self.caller(&request)?.sender();
        Ok(Response::new(
            self.channels.publish(request.into_inner(), sender).await?,
        ))
    }

    type SubscribeStream = SubscribeStream;

    #[tracing::instrument(skip_all, fields(channel = %request.get_ref().channel))]
    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let linearizable = wants_linearizable(request.get_ref().consistency);
        let router = self.channels.router();
        // Best-effort messages exist only on the leader, whatever the consistency asked.
        let best_effort =
            self.channels.delivery_of(&request.get_ref().channel) == Some(Delivery::BestEffort);
        let leader = match best_effort {
            true => router.forward_target(&request)?,
            false => router.route(&request, linearizable).await?,
        };
        if let Some(leader) = leader {
            let upstream = CoordinationServiceClient::new(leader)
                .subscribe(router.forwarded(request))
                .await?
                .into_inner();
            return Ok(Response::new(proxy(upstream)));
        }
        let request = request.into_inner();
        Ok(Response::new(
            self.channels.subscribe(request, linearizable)?,
        ))
    }

    #[tracing::instrument(skip_all, fields(to = %request.get_ref().to_agent_id))]
    async fn send_direct(
        &self,
        request: Request<pb::SendDirectRequest>,
    ) -> Result<Response<pb::SendDirectResponse>, Status> {
        forward_write!(self, request, send_direct);
        let sender = self.caller(&request)?.sender();
        let sent = self
            .messages
            .send_direct(request.into_inner(), sender)
            .await?;
        Ok(Response::new(sent))
    }

    #[tracing::instrument(skip_all)]
    async fn broadcast(
        &self,
        request: Request<pb::BroadcastRequest>,
    ) -> Result<Response<pb::BroadcastResponse>, Status> {
        forward_write!(self, request, broadcast);
        let sender = self.caller(&request)?.sender();
        let sent = self
            .messages
            .broadcast(request.into_inner(), sender)
            .await?;
        Ok(Response::new(sent))
    }
}
