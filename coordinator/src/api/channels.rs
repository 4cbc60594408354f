//! Channels over gRPC: create, publish (durable: committed before the answer) and subscribe
//! (replay from an offset, then follow). A subscriber is served at its own pace by a task that
//! reads the applied state, so a slow one never holds up the leader or other subscribers; one
//! that stops reading for [`SUBSCRIBE_STALL_MS`] is dropped with `RESOURCE_EXHAUSTED`.

use std::time::Duration;

use synod_proto::v1 as pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use super::convert::write_meta;
use super::request::require;
use super::{ApiError, LeaderRouter};
use crate::runtime::Proposer;
use crate::state::channels::{ChannelRecord, ChannelSpec, Delivery, Message};
use crate::state::{Applied, Command, State};

/// How long a subscriber may leave its stream unread before it is dropped.
const SUBSCRIBE_STALL_MS: u64 = 10_000;
/// Messages read from the state at a time.
const READ_BATCH: usize = 256;

/// The channel part of `synod.v1.CoordinationService`.
#[derive(Clone)]
pub struct ChannelApi {
    proposer: Proposer,
    router: LeaderRouter,
}

/// The stream type of `Subscribe`.
pub type SubscribeStream = ReceiverStream<Result<pb::SubscribeResponse, Status>>;

impl ChannelApi {
    /// A service proposing through `proposer` and reading through `router`.
    pub fn new(proposer: Proposer, router: LeaderRouter) -> Self {
        Self { proposer, router }
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

    /// Publishes to a durable channel: committed before the answer.
    pub async fn publish(
        &self,
        request: pb::PublishRequest,
    ) -> Result<pb::PublishResponse, ApiError> {
        require("channel", &request.channel)?;
        let (delivery, _) = self.router.read_local(false, |state| {
            state
                .channels
                .get(&request.channel)
                .map(|c| c.spec.delivery)
        });
        if delivery == Some(Delivery::BestEffort) {
            return Err(ApiError::Unimplemented(
                "best-effort channels are not available in this version of Synod".into(),
            ));
        }
        let command = Command::Publish {
            channel: request.channel,
            sender: "client".to_owned(),
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

    /// Streams a channel's messages from `from_offset` (or from now), then every new one.
    pub fn subscribe(
        &self,
        request: pb::SubscribeRequest,
        linearizable: bool,
    ) -> Result<SubscribeStream, ApiError> {
        require("channel", &request.channel)?;
        let (start, _) = self.router.read_local(linearizable, |state| {
            state.channels.get(&request.channel).map(|c| c.next_offset)
        });
        let start = start.ok_or_else(|| no_channel(&request.channel))?;
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
            let stall = Duration::from_millis(SUBSCRIBE_STALL_MS);
            match tokio::time::timeout(stall, sender.send(Ok(response))).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Ok(()),
                Err(_) => {
                    return Err(ApiError::ResourceExhausted(format!(
                        "channel '{name}': subscriber did not read for {SUBSCRIBE_STALL_MS} ms"
                    )))
                }
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
