//! The cluster client: one logical connection to a coordinator cluster that follows the leader.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use synod_proto::v1 as pb;
use synod_proto::v1::cluster_service_client::ClusterServiceClient;
use synod_proto::v1::kv_service_client::KvServiceClient;
use tonic::transport::{Channel, Endpoint};
use tonic::Status;

use crate::put_pipeline::{Broken, PutPipeline};
use crate::retry::{next_step, Next};
use crate::{ClientError, RetryPolicy};

/// Largest message the client sends or accepts.
const MESSAGE_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Metadata naming the agent a client acts as.
pub const AGENT_ID_METADATA: &str = "synod-agent-id";
/// Metadata carrying that agent's current session token.
pub const SESSION_TOKEN_METADATA: &str = "synod-session-token";

/// An agent's session credentials: its id and current session token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentCredentials {
    /// The agent's id.
    pub agent_id: String,
    /// The token of its current session (it changes when the agent re-registers).
    pub session_token: String,
}

/// A client of a Synod cluster. Cheap to clone; clones share connections.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
    /// The agent this client acts as, read at every call (tokens change on reconnect).
    agent: Option<tokio::sync::watch::Receiver<Option<AgentCredentials>>>,
}

struct Inner {
    endpoints: Mutex<Vec<String>>,
    current: Mutex<String>,
    channels: Mutex<HashMap<String, Channel>>,
    policy: RetryPolicy,
    pipeline: tokio::sync::Mutex<Option<Arc<PutPipeline>>>,
}

impl Client {
    /// The retry timing this client uses.
    pub fn policy(&self) -> RetryPolicy {
        self.inner.policy
    }

    /// A client for the cluster reachable at any of `addrs` (host:port). Connects lazily.
    pub fn new<A: Into<String>>(addrs: impl IntoIterator<Item = A>) -> Result<Self, ClientError> {
        Self::with_policy(addrs, RetryPolicy::default())
    }

    /// Like [`Client::new`] with explicit retry timing.
    pub fn with_policy<A: Into<String>>(
        addrs: impl IntoIterator<Item = A>,
        policy: RetryPolicy,
    ) -> Result<Self, ClientError> {
        let endpoints: Vec<String> = addrs.into_iter().map(Into::into).collect();
        let first = endpoints.first().cloned().ok_or(ClientError::NoEndpoints)?;
        for addr in &endpoints {
            endpoint(addr, &policy)?;
        }
        Ok(Self {
            inner: Arc::new(Inner {
                endpoints: Mutex::new(endpoints),
                current: Mutex::new(first),
                channels: Mutex::new(HashMap::new()),
                policy,
                pipeline: tokio::sync::Mutex::new(None),
            }),
            agent: None,
        })
    }

    /// This client acting as an agent: coordination calls carry its credentials, so the
    /// cluster lets it cast the agent's ballots, campaign as it and so on, and names it as the
    /// sender of its messages. The credentials are read from `agent` at every call.
    pub fn acting_as(&self, agent: tokio::sync::watch::Receiver<Option<AgentCredentials>>) -> Self {
        Self {
            inner: self.inner.clone(),
            agent: Some(agent),
        }
    }

    /// The agent this client acts as, if any, with its current token.
    pub fn agent_credentials(&self) -> Option<AgentCredentials> {
        self.agent.as_ref().and_then(|agent| agent.borrow().clone())
    }

    /// `message` as a request carrying this client's agent credentials, if any.
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(credentials) = self.agent_credentials() {
            let metadata = request.metadata_mut();
            if let (Ok(id), Ok(token)) = (
                credentials.agent_id.parse(),
                credentials.session_token.parse(),
            ) {
                metadata.insert(AGENT_ID_METADATA, id);
                metadata.insert(SESSION_TOKEN_METADATA, token);
            }
        }
        request
    }

    /// The member the next call goes to first.
    pub fn current_addr(&self) -> String {
        self.inner.current.lock().expect("client lock").clone()
    }

    /// A channel to `addr`, shared across calls.
    pub fn channel(&self, addr: &str) -> Result<Channel, ClientError> {
        let mut channels = self.inner.channels.lock().expect("client lock");
        if let Some(channel) = channels.get(addr) {
            return Ok(channel.clone());
        }
        let channel = endpoint(addr, &self.inner.policy)?.connect_lazy();
        channels.insert(addr.to_owned(), channel.clone());
        Ok(channel)
    }

    /// Runs `call` against the cluster, following leader hints and skipping unreachable
    /// members until it succeeds, fails for good, or the retry deadline passes.
    pub async fn call<T, F, Fut>(&self, call: F) -> Result<T, ClientError>
    where
        F: Fn(Channel) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let policy = self.inner.policy;
        let deadline = tokio::time::Instant::now() + policy.deadline;
        let mut backoff = policy.backoff_initial;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let addr = self.current_addr();
            let status = match call(self.channel(&addr)?).await {
                Ok(response) => return Ok(response.into_inner()),
                Err(status) => status,
            };
            match next_step(&status) {
                Next::Fail => return Err(ClientError::Rejected(status)),
                Next::Redirect(leader) if leader != addr => {
                    tracing::debug!(%leader, "following leader hint");
                    self.switch_to(leader);
                    continue;
                }
                Next::Redirect(_) | Next::TryAnother => self.rotate(&addr),
            }
            if tokio::time::Instant::now() + backoff > deadline {
                return Err(ClientError::Unavailable {
                    attempts,
                    last: format!("{}: {}", status.code(), status.message()),
                });
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(policy.backoff_max);
        }
    }

    /// Sends later calls to `addr` (the leader, as a member told us).
    pub(crate) fn redirect(&self, addr: String) {
        self.switch_to(addr);
    }

    /// Chooses where to go after `status` ended a call or stream to `addr`.
    pub(crate) fn after_failure(&self, addr: &str, status: &Status) {
        match next_step(status) {
            Next::Redirect(leader) if leader != addr => self.switch_to(leader),
            _ => self.rotate(addr),
        }
    }

    fn switch_to(&self, addr: String) {
        let mut endpoints = self.inner.endpoints.lock().expect("client lock");
        if !endpoints.contains(&addr) {
            endpoints.push(addr.clone());
        }
        *self.inner.current.lock().expect("client lock") = addr;
    }

    fn rotate(&self, failed: &str) {
        let endpoints = self.inner.endpoints.lock().expect("client lock");
        let position = endpoints.iter().position(|a| a == failed).unwrap_or(0);
        let next = endpoints[(position + 1) % endpoints.len()].clone();
        *self.inner.current.lock().expect("client lock") = next;
    }

    /// Sets a key.
    pub async fn put(
        &self,
        key: impl Into<String>,
        value: impl Into<Vec<u8>>,
    ) -> Result<pb::PutResponse, ClientError> {
        self.put_request(pb::PutRequest {
            key: key.into(),
            value: value.into(),
            ..Default::default()
        })
        .await
    }

    /// Sets a key with compare-and-set conditions.
    ///
    /// Puts travel over a shared `PutStream` to the current member while it works; when it
    /// breaks or answers with a leader hint, this put falls back to a unary call that follows
    /// the leader, and a new stream opens for later puts.
    pub async fn put_request(
        &self,
        request: pb::PutRequest,
    ) -> Result<pb::PutResponse, ClientError> {
        if let Some(pipeline) = self.pipeline().await {
            let attempt = tokio::time::timeout(
                self.inner.policy.attempt_timeout,
                pipeline.put(request.clone()),
            );
            match attempt.await {
                Ok(Ok(Ok(response))) => return Ok(response),
                Ok(Ok(Err(status))) => match next_step(&status) {
                    Next::Fail => return Err(ClientError::Rejected(status)),
                    Next::Redirect(leader) => self.switch_to(leader),
                    Next::TryAnother => {}
                },
                Ok(Err(Broken)) | Err(_) => {}
            }
            self.drop_pipeline(&pipeline).await;
        }
        self.put_unary(request).await
    }

    /// The open pipeline to the current member, opening one if needed; `None` when it cannot
    /// be opened now.
    async fn pipeline(&self) -> Option<Arc<PutPipeline>> {
        let mut slot = self.inner.pipeline.lock().await;
        let addr = self.current_addr();
        if let Some(pipeline) = slot.as_ref() {
            if !pipeline.is_closed() && pipeline.addr() == addr {
                return Some(pipeline.clone());
            }
        }
        let channel = self.channel(&addr).ok()?;
        let opening = PutPipeline::open(channel, addr, MESSAGE_BYTES_MAX);
        let pipeline = tokio::time::timeout(self.inner.policy.attempt_timeout, opening)
            .await
            .ok()?
            .ok()?;
        let pipeline = Arc::new(pipeline);
        *slot = Some(pipeline.clone());
        Some(pipeline)
    }

    async fn drop_pipeline(&self, broken: &Arc<PutPipeline>) {
        let mut slot = self.inner.pipeline.lock().await;
        if slot
            .as_ref()
            .is_some_and(|current| Arc::ptr_eq(current, broken))
        {
            *slot = None;
        }
    }

    async fn put_unary(&self, request: pb::PutRequest) -> Result<pb::PutResponse, ClientError> {
        self.call(|channel| {
            let request = request.clone();
            async move { kv(channel).put(request).await }
        })
        .await
    }

    /// Reads a key.
    pub async fn get(
        &self,
        key: impl Into<String>,
        consistency: pb::Consistency,
    ) -> Result<pb::GetResponse, ClientError> {
        let request = pb::GetRequest {
            key: key.into(),
            consistency: consistency as i32,
        };
        self.call(|channel| {
            let request = request.clone();
            async move { kv(channel).get(request).await }
        })
        .await
    }

    /// Lists keys.
    pub async fn list(&self, request: pb::ListRequest) -> Result<pb::ListResponse, ClientError> {
        self.call(|channel| {
            let request = request.clone();
            async move { kv(channel).list(request).await }
        })
        .await
    }

    /// Deletes a key.
    pub async fn delete(&self, key: impl Into<String>) -> Result<pb::DeleteResponse, ClientError> {
        let request = pb::DeleteRequest { key: key.into() };
        self.call(|channel| {
            let request = request.clone();
            async move { kv(channel).delete(request).await }
        })
        .await
    }

    /// The cluster's status; `from_leader` asks the leader (with replication progress).
    pub async fn status(&self, from_leader: bool) -> Result<pb::ClusterStatus, ClientError> {
        self.call(|channel| async move {
            cluster(channel)
                .get_status(pb::GetStatusRequest {
                    from_leader,
                    include_state_digest: false,
                })
                .await
        })
        .await
    }

    /// The status as one specific member sees it, without retries or redirects; with the state
    /// digest when `include_state_digest`.
    pub async fn status_of(
        &self,
        addr: &str,
        include_state_digest: bool,
    ) -> Result<pb::ClusterStatus, ClientError> {
        let request = pb::GetStatusRequest {
            from_leader: false,
            include_state_digest,
        };
        cluster(self.channel(addr)?)
            .get_status(request)
            .await
            .map(tonic::Response::into_inner)
            .map_err(ClientError::Rejected)
    }

    /// Adds a learner and (when `wait`) waits until it caught up.
    pub async fn add_learner(
        &self,
        id: u64,
        addr: impl Into<String>,
        wait: bool,
    ) -> Result<pb::MembershipResponse, ClientError> {
        let request = pb::AddLearnerRequest {
            id,
            addr: addr.into(),
            wait_caught_up: wait,
        };
        self.call(|channel| {
            let request = request.clone();
            async move { cluster(channel).add_learner(request).await }
        })
        .await
    }

    /// Promotes a learner to voter.
    pub async fn promote(&self, id: u64) -> Result<pb::MembershipResponse, ClientError> {
        self.call(|channel| async move {
            cluster(channel)
                .promote_member(pb::PromoteMemberRequest { id })
                .await
        })
        .await
    }

    /// Removes a member.
    pub async fn remove(&self, id: u64) -> Result<pb::MembershipResponse, ClientError> {
        self.call(|channel| async move {
            cluster(channel)
                .remove_member(pb::RemoveMemberRequest { id })
                .await
        })
        .await
    }
}

fn endpoint(addr: &str, policy: &RetryPolicy) -> Result<Endpoint, ClientError> {
    let bad = |detail: String| ClientError::BadAddress {
        addr: addr.to_owned(),
        detail,
    };
    if !addr.contains(':') {
        return Err(bad("expected host:port".into()));
    }
    Ok(Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| bad(e.to_string()))?
        .connect_timeout(std::time::Duration::from_millis(300))
        .timeout(policy.attempt_timeout)
        .tcp_nodelay(true)
        // Sessions share connections with model downloads: wide windows keep one slow stream
        // from stalling the rest, and let a download's chunks flow without waiting for
        // window updates.
        .initial_connection_window_size(64 * 1024 * 1024)
        .initial_stream_window_size(4 * 1024 * 1024)
        // A downloaded model chunk (1 MiB) crosses as one frame rather than 64 of the default
        // 16 KiB.
        .max_frame_size(4 * 1024 * 1024))
}

fn kv(channel: Channel) -> KvServiceClient<Channel> {
    KvServiceClient::new(channel)
        .max_decoding_message_size(MESSAGE_BYTES_MAX)
        .max_encoding_message_size(MESSAGE_BYTES_MAX)
}

fn cluster(channel: Channel) -> ClusterServiceClient<Channel> {
    ClusterServiceClient::new(channel)
}
