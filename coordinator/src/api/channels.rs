//! Channels over gRPC: create, publish and subscribe.
//!
//! - Durable: a publish is committed before the answer; a subscriber replays from an offset,
//!   then follows, served at its own pace by a task that reads the applied state.
//! - Best-effort: the leader fans a publish out from memory ([`LiveChannels`]) to the
//!   subscribers it serves; a subscriber that falls behind skips ahead, told how many it
//!   missed; a leader change ends the stream with `UNAVAILABLE` (resubscribe at the new
//!   leader).
//!
//! Either way a slow subscriber never holds up the leader or other subscribers, and one that
//! stops reading for [`SUBSCRIBE_STALL_MS`] is dropped with `RESOURCE_EXHAUSTED`.

use std::sync::Arc;
use std::time::Duration;

use synod_proto::v1 as pb;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use super::convert::write_meta;
use super::request::require;
use super::{ApiError, LeaderRouter};
use crate::runtime::clock;
use crate::runtime::live_channels::LiveChannels;
use crate::runtime::Proposer;
use crate::state::channels::{check_payload, ChannelRecord, ChannelSpec, Delivery, Message};
use crate::state::{Applied, Command, Rejection, State};

/// How long a subscriber may leave its stream unread before it is dropped.
const SUBSCRIBE_STALL_MS: u64 = 10_000;
/// Messages read from the state at a time.
const READ_BATCH: usize = 256;

/// The channel part of `synod.v1.CoordinationService`.
#[derive(Clone)]
pub struct ChannelApi {
    proposer: Proposer,
    router: LeaderRouter,
    live: Arc<LiveChannels>,
}

/// The stream type of `Subscribe`.
pub type SubscribeStream = ReceiverStream<Result<pb::SubscribeResponse, Status>>;

impl ChannelApi {
    /// A service proposing through `proposer` and reading through `router`.
    pub fn new(proposer: Proposer, router: LeaderRouter) -> Self {
        Self {
            proposer,
            router,
            live: Arc::default(),
        }
    }

    /// The router, for reads.
    pub fn router(&self) -> &LeaderRouter {
        &self.router
    }

    /// Creates a channel (again with the same settings: a retry).
    pub async fn create(
        &self,
        request: pb::CreateChannelRequest,
    ) -> Result<pb::CreateChannelResponse, ApiError> {
        require("name", &request.name)?;
        let delivery = match pb::Delivery::try_from(request.delivery) {
            Ok(pb::Delivery::Unspecified | pb::Delivery::Durable) => Delivery::Durable,
            Ok(pb::Delivery::BestEffort) => Delivery::BestEffort,
            Err(_) => return Err(ApiError::invalid("delivery", "unknown delivery")),
        };
        let spec = ChannelSpec {
            delivery,
            retention_messages: request.retention_messages,
            retention_ms: request.retention_ms,
        };
        let command = Command::CreateChannel {
            name: request.name.clone(),
            spec,
        };
        let result = self.proposer.propose(command).await?;
        if let Err(rejection) = &result.outcome {
            return Err(rejection.clone().into());
        }
        let (channel, _) = self
            .router
            .read_local(false, |state| read_channel(state, &request.name));
        Ok(pb::CreateChannelResponse {
            channel: Some(channel?),
            write: Some(write_meta(&result)),
        })
    }

    /// Publishes: committed before the answer (durable), or fanned out by this leader
    /// (best-effort).
    pub async fn publish(
        &self,
        request: pb::PublishRequest,
        sender: String,
    ) -> Result<pb::PublishResponse, ApiError> {
        require("channel", &request.channel)?;
        let (delivery, _) = self.router.read_local(false, |state| {
            state
                .channels
                .get(&request.channel)
                .map(|c| c.spec.delivery)
        });
        if delivery == Some(Delivery::BestEffort) {
            return self.publish_live(request, sender);
        }
        let command = Command::Publish {
            channel: request.channel,
            sender,
            payload: request.payload,
        };
        let result = self.proposer.propose(command).await?;
        match &result.outcome {
            Ok(Applied::ChannelChanged { offset }) => Ok(pb::PublishResponse {
                offset: *offset,
                write: Some(write_meta(&result)),
            }),
            Ok(other) => Err(ApiError::Internal(format!("unexpected outcome {other:?}"))),
            Err(rejection) => Err(rejection.clone().into()),
        }
    }

    fn publish_live(
        &self,
        request: pb::PublishRequest,
        sender: String,
    ) -> Result<pb::PublishResponse, ApiError> {
        check_payload(&request.payload).map_err(Rejection::InvalidSpec)?;
        let term = self.leader_term()?;
        let offset = self.live.publish(
            &request.channel,
            term,
            sender,
            request.payload,
            clock::now_ms(),
        );
        Ok(pb::PublishResponse {
            offset,
            write: None,
        })
    }

    /// This node's term while it leads; `UNAVAILABLE` otherwise.
    fn leader_term(&self) -> Result<u64, ApiError> {
        let metrics = self.router.raft().metrics().borrow().clone();
        match metrics.state == openraft::ServerState::Leader {
            true => Ok(metrics.current_term),
            false => Err(ApiError::Unavailable {
                message: "best-effort channels are served by the leader".into(),
                leader: self.router.leader(),
            }),
        }
    }

    /// The channel's delivery, as this replica knows it.
    pub fn delivery_of(&self, name: &str) -> Option<Delivery> {
        let (delivery, _) = self.router.read_local(false, |state| {
            state.channels.get(name).map(|c| c.spec.delivery)
        });
        delivery
    }

    /// Streams a best-effort channel's messages published from now on by this leader.
    pub fn subscribe_live(&self, name: &str) -> Result<SubscribeStream, ApiError> {
        let term = self.leader_term()?;
        let mut messages = self.live.subscribe(name, term);
        let (sender, receiver) = mpsc::channel(READ_BATCH);
        let (router, name) = (self.router.clone(), name.to_owned());
        tokio::spawn(async move {
            let mut metrics = router.raft().metrics();
            let mut dropped = 0;
            loop {
                let received = tokio::select! {
                    received = messages.recv() => received,
                    _ = metrics.wait_for(|m| m.current_term != term) => Err(RecvError::Closed),
                    () = sender.closed() => return,
                };
                let message = match received {
                    Ok(message) => message,
                    Err(RecvError::Lagged(missed)) => {
                        dropped += missed;
                        continue;
                    }
                    Err(RecvError::Closed) => {
                        let moved = ApiError::Unavailable {
                            message: format!("channel '{name}': leadership moved; resubscribe"),
                            leader: router.leader(),
                        };
                        let _ = sender.try_send(Err(moved.into()));
                        return;
                    }
                };
                let response = pb::SubscribeResponse {
                    message: Some(mesh_message(&name, Message::clone(&message))),
                    dropped: std::mem::take(&mut dropped),
                };
                if let Err(error) = send_in_time(&sender, &name, response).await {
                    if let Some(error) = error {
                        let _ = sender.try_send(Err(error.into()));
                    }
                    return;
                }
            }
        });
        Ok(ReceiverStream::new(receiver))
    }

    /// Streams a channel's messages from `from_offset` (or from now), then every new one.
    pub fn subscribe(
        &self,
        request: pb::SubscribeRequest,
        linearizable: bool,
    ) -> Result<SubscribeStream, ApiError> {
        require("channel", &request.channel)?;
        let (found, _) = self.router.read_local(linearizable, |state| {
            state
                .channels
                .get(&request.channel)
                .map(|c| (c.next_offset, c.spec.delivery))
        });
        let (start, delivery) = found.ok_or_else(|| no_channel(&request.channel))?;
        if delivery == Delivery::BestEffort {
            return self.subscribe_live(&request.channel);
        }
        let from = request.from_offset.unwrap_or(start).max(1);
        let (sender, receiver) = mpsc::channel(READ_BATCH);
        let router = self.router.clone();
        let name = request.channel;
        tokio::spawn(async move {
            if let Err(error) = follow(router, &name, from, &sender).await {
                let _ = sender.try_send(Err(error.into()));
            }
        });
        Ok(ReceiverStream::new(receiver))
    }
}

/// Sends the channel's messages from offset `next` on, as they are applied.
async fn follow(
    router: LeaderRouter,
    name: &str,
    mut next: u64,
    sender: &mpsc::Sender<Result<pb::SubscribeResponse, Status>>,
) -> Result<(), ApiError> {
    let mut metrics = router.raft().metrics();
    loop {
        let seen = metrics.borrow_and_update().last_applied;
        let (read, _) = router.read_local(false, |state| {
            let channel = state.channels.get(name)?;
            let dropped = channel.first_offset().saturating_sub(next);
            let batch: Vec<Message> = channel.read_from(next, READ_BATCH).cloned().collect();
            Some((dropped, batch))
        });
        let (mut dropped, batch) = read.ok_or_else(|| no_channel(name))?;
        let more = batch.len() == READ_BATCH;
        for message in batch {
            next = message.offset + 1;
            let response = pb::SubscribeResponse {
                message: Some(mesh_message(name, message)),
                dropped: std::mem::take(&mut dropped),
            };
            match send_in_time(sender, name, response).await {
                Ok(()) => {}
                Err(None) => return Ok(()),
                Err(Some(error)) => return Err(error),
            }
        }
        if more {
            continue;
        }
        tokio::select! {
            changed = metrics.wait_for(|m| m.last_applied != seen) => {
                if changed.is_err() {
                    return Ok(());
                }
            }
            () = sender.closed() => return Ok(()),
        }
    }
}

/// Sends one message to a subscriber, giving up after [`SUBSCRIBE_STALL_MS`]; `Err(None)` when
/// the subscriber is gone.
async fn send_in_time(
    sender: &mpsc::Sender<Result<pb::SubscribeResponse, Status>>,
    name: &str,
    response: pb::SubscribeResponse,
) -> Result<(), Option<ApiError>> {
    let stall = Duration::from_millis(SUBSCRIBE_STALL_MS);
    match tokio::time::timeout(stall, sender.send(Ok(response))).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(None),
        Err(_) => Err(Some(ApiError::ResourceExhausted(format!(
            "channel '{name}': subscriber did not read for {SUBSCRIBE_STALL_MS} ms"
        )))),
    }
}

fn mesh_message(channel: &str, message: Message) -> pb::MeshMessage {
    pb::MeshMessage {
        channel: channel.to_owned(),
        offset: message.offset,
        sender: message.sender,
        payload: message.payload,
        sent_at_ms: message.sent_at_ms,
    }
}

/// A channel's proto form.
pub fn read_channel(state: &State, name: &str) -> Result<pb::Channel, ApiError> {
    let record = state.channels.get(name).ok_or_else(|| no_channel(name))?;
    Ok(channel(record))
}

fn channel(record: &ChannelRecord) -> pb::Channel {
    pb::Channel {
        name: record.name.clone(),
        delivery: match record.spec.delivery {
            Delivery::BestEffort => pb::Delivery::BestEffort,
            Delivery::Durable => pb::Delivery::Durable,
        } as i32,
        retention_messages: record.spec.retention_messages,
        retention_ms: record.spec.retention_ms,
        first_offset: record.first_offset(),
        next_offset: record.next_offset,
        created_at_ms: record.created_at_ms,
    }
}

fn no_channel(name: &str) -> ApiError {
    ApiError::NotFound(format!("channel: no channel '{name}'"))
}
