//! `ClusterService`: cluster status and online membership changes.

use std::collections::{BTreeMap, BTreeSet};

use openraft::error::{ChangeMembershipError, ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers, RaftMetrics, ServerState};
use synod_proto::v1 as pb;
use synod_proto::v1::cluster_service_client::ClusterServiceClient;
use synod_proto::v1::cluster_service_server::ClusterService;
use tonic::{Request, Response, Status};

use super::{ApiError, LeaderRouter};
use crate::raft::{LogStore, NodeId};

/// Serves `synod.v1.ClusterService`.
pub struct ClusterApi {
    router: LeaderRouter,
    log: LogStore,
}

impl ClusterApi {
    /// A service for the node behind `router`, whose log is `log`.
    pub fn new(router: LeaderRouter, log: LogStore) -> Self {
        Self { router, log }
    }

    fn metrics(&self) -> RaftMetrics<NodeId, BasicNode> {
        self.router.raft().metrics().borrow().clone()
    }

    fn status(&self, include_digest: bool) -> pb::ClusterStatus {
        let metrics = self.metrics();
        let leader_addr = self
            .router
            .leader()
            .map(|(_, addr)| addr)
            .unwrap_or_default();
        let (digest, commands_applied) = self
            .router
            .read_local(false, |state| {
                let digest = if include_digest {
                    state.digest()
                } else {
                    String::new()
                };
                (digest, state.commands_applied)
            })
            .0;
        pb::ClusterStatus {
            node_id: metrics.id,
            leader_id: metrics.current_leader.unwrap_or(0),
            leader_addr,
            term: metrics.current_term,
            commit_index: self.log.committed_index(),
            applied_index: metrics.last_applied.map_or(0, |id| id.index),
            last_log_index: metrics.last_log_index.unwrap_or(0),
            snapshot_index: metrics.snapshot.map_or(0, |id| id.index),
            purged_index: metrics.purged.map_or(0, |id| id.index),
            members: members(&metrics),
            role: role_of(metrics.state) as i32,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            state_digest: digest,
            commands_applied,
        }
    }

    /// Applies a membership change on the leader.
    async fn change(
        &self,
        change: ChangeMembers<NodeId, BasicNode>,
    ) -> Result<pb::MembershipResponse, ApiError> {
        let response = self
            .router
            .raft()
            .change_membership(change, false)
            .await
            .map_err(membership_error)?;
        Ok(membership_response(
            &response.log_id,
            response.membership.as_ref(),
        ))
    }

    fn current_membership(&self) -> (BTreeSet<NodeId>, BTreeMap<NodeId, BasicNode>) {
        let metrics = self.metrics();
        let membership = metrics.membership_config.membership();
        let voters = membership.voter_ids().collect();
        let nodes = membership
            .nodes()
            .map(|(id, node)| (*id, node.clone()))
            .collect();
        (voters, nodes)
    }
}

fn role_of(state: ServerState) -> pb::MemberRole {
    match state {
        ServerState::Leader => pb::MemberRole::Leader,
        ServerState::Follower => pb::MemberRole::Follower,
        ServerState::Candidate => pb::MemberRole::Candidate,
        ServerState::Learner => pb::MemberRole::Learner,
        ServerState::Shutdown => pb::MemberRole::Unspecified,
    }
}

fn members(metrics: &RaftMetrics<NodeId, BasicNode>) -> Vec<pb::MemberStatus> {
    let membership = metrics.membership_config.membership();
    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    membership
        .nodes()
        .map(|(id, node)| member_status(metrics, *id, node, voters.contains(id)))
        .collect()
}

fn member_status(
    metrics: &RaftMetrics<NodeId, BasicNode>,
    id: NodeId,
    node: &BasicNode,
    voter: bool,
) -> pb::MemberStatus {
    let role = if id == metrics.id {
        role_of(metrics.state)
    } else if Some(id) == metrics.current_leader {
        pb::MemberRole::Leader
    } else if voter {
        pb::MemberRole::Follower
    } else {
        pb::MemberRole::Learner
    };
    let last_log = metrics.last_log_index.unwrap_or(0);
    let matched = metrics
        .replication
        .as_ref()
        .and_then(|r| r.get(&id).cloned());
    let (matched_index, healthy, detail) = match matched {
        _ if id == metrics.id => (
            metrics.last_applied.map_or(0, |l| l.index),
            true,
            String::new(),
        ),
        Some(Some(log_id)) => {
            let lag = last_log.saturating_sub(log_id.index);
            let healthy = lag <= 1000;
            let detail = if healthy {
                String::new()
            } else {
                format!("{lag} entries behind")
            };
            (log_id.index, healthy, detail)
        }
        Some(None) => (0, false, "no entries replicated yet".to_owned()),
        None if Some(id) == metrics.current_leader => (0, true, String::new()),
        None => (
            0,
            false,
            "unknown from this node; ask the leader".to_owned(),
        ),
    };
    pb::MemberStatus {
        id,
        addr: node.addr.clone(),
        role: role as i32,
        voter,
        matched_index,
        healthy,
        health_detail: detail,
    }
}

fn membership_response(
    log_id: &openraft::LogId<NodeId>,
    membership: Option<&openraft::Membership<NodeId, BasicNode>>,
) -> pb::MembershipResponse {
    let (voters, learners) = match membership {
        Some(m) => (m.voter_ids().collect(), m.learner_ids().collect()),
        None => (Vec::new(), Vec::new()),
    };
    pb::MembershipResponse {
        write: Some(pb::WriteMeta {
            log_index: log_id.index,
            term: log_id.leader_id.term,
            leader_id: log_id.leader_id.node_id,
        }),
        voters,
        learners,
    }
}

fn membership_error(error: RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>) -> ApiError {
    match error {
        RaftError::APIError(ClientWriteError::ForwardToLeader(to)) => ApiError::Unavailable {
            message: "leadership changed during a membership change".into(),
            leader: to.leader_id.zip(to.leader_node.map(|n| n.addr)),
        },
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => match e {
            ChangeMembershipError::LearnerNotFound(e) => ApiError::NotFound(format!(
                "id: node {} is not a member of the cluster",
                e.node_id
            )),
            ChangeMembershipError::EmptyMembership(_) => {
                ApiError::FailedPrecondition("id: a cluster needs at least one voter".into())
            }
            other => ApiError::FailedPrecondition(other.to_string()),
        },
        RaftError::Fatal(fatal) => ApiError::Internal(fatal.to_string()),
    }
}

macro_rules! forward_to_leader {
    ($self:ident, $request:ident, $method:ident) => {
        if let Some(leader) = $self.router.forward_target(&$request)? {
            return ClusterServiceClient::new(leader)
                .$method($self.router.forwarded($request))
                .await;
        }
    };
}

#[tonic::async_trait]
impl ClusterService for ClusterApi {
    async fn get_status(
        &self,
        request: Request<pb::GetStatusRequest>,
    ) -> Result<Response<pb::ClusterStatus>, Status> {
        if request.get_ref().from_leader {
            forward_to_leader!(self, request, get_status);
        }
        Ok(Response::new(
            self.status(request.get_ref().include_state_digest),
        ))
    }

    #[tracing::instrument(skip_all, fields(id = request.get_ref().id))]
    async fn add_learner(
        &self,
        request: Request<pb::AddLearnerRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        let body = request.get_ref();
        if body.id == 0 {
            return Err(ApiError::invalid("id", "must be a positive node id").into());
        }
        if body.addr.parse::<std::net::SocketAddr>().is_err() && !body.addr.contains(':') {
            return Err(
                ApiError::invalid("addr", format!("'{}' is not host:port", body.addr)).into(),
            );
        }
        forward_to_leader!(self, request, add_learner);
        let body = request.into_inner();
        let (voters, _) = self.current_membership();
        if voters.contains(&body.id) {
            return Err(ApiError::AlreadyExists(format!(
                "id: node {} is already a voter",
                body.id
            ))
            .into());
        }
        let response = self
            .router
            .raft()
            .add_learner(body.id, BasicNode::new(body.addr), body.wait_caught_up)
            .await
            .map_err(membership_error)?;
        Ok(Response::new(membership_response(
            &response.log_id,
            response.membership.as_ref(),
        )))
    }

    #[tracing::instrument(skip_all, fields(id = request.get_ref().id))]
    async fn promote_member(
        &self,
        request: Request<pb::PromoteMemberRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        forward_to_leader!(self, request, promote_member);
        let id = request.into_inner().id;
        let (_, nodes) = self.current_membership();
        if !nodes.contains_key(&id) {
            return Err(ApiError::NotFound(format!(
                "id: node {id} is not a member; add it with add-learner first"
            ))
            .into());
        }
        let change = ChangeMembers::AddVoterIds(BTreeSet::from([id]));
        Ok(Response::new(self.change(change).await?))
    }

    #[tracing::instrument(skip_all, fields(id = request.get_ref().id))]
    async fn remove_member(
        &self,
        request: Request<pb::RemoveMemberRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        forward_to_leader!(self, request, remove_member);
        let id = request.into_inner().id;
        let (voters, nodes) = self.current_membership();
        if !nodes.contains_key(&id) {
            return Err(ApiError::NotFound(format!(
                "id: node {id} is not a member of the cluster"
            ))
            .into());
        }
        let change = if voters.contains(&id) {
            if voters.len() == 1 {
                return Err(ApiError::FailedPrecondition(format!(
                    "id: node {id} is the last voter; a cluster needs at least one voter"
                ))
                .into());
            }
            ChangeMembers::RemoveVoters(BTreeSet::from([id]))
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([id]))
        };
        Ok(Response::new(self.change(change).await?))
    }
}
