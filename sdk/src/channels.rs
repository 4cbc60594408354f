//! Publish/subscribe channels from a client: create, publish (durable: committed before the
//! answer, with its offset), and subscribe from an offset, resuming from the last offset
//! received when the stream breaks.

use synod_proto::v1 as pb;
use tokio::sync::mpsc;

use crate::relay::{relay, Relayed};
use crate::{Client, ClientError};

/// Messages of one subscription, in offset order.
pub struct Subscription {
    messages: mpsc::Receiver<Result<pb::SubscribeResponse, ClientError>>,
}

impl Subscription {
    /// The next message (with the count of messages dropped just before it).
    pub async fn next(&mut self) -> Option<Result<pb::SubscribeResponse, ClientError>> {
        self.messages.recv().await
    }
}

impl Client {
    /// Creates a channel; creating it again with the same settings returns it.
    pub async fn create_channel(
        &self,
        name: &str,
        delivery: pb::Delivery,
        retention_messages: u64,
    ) -> Result<pb::Channel, ClientError> {
        let request = pb::CreateChannelRequest {
            name: name.to_owned(),
            delivery: delivery as i32,
            retention_messages,
            retention_ms: 0,
        };
        let response = self
            .coordination(request, |mut c, r| async move { c.create_channel(r).await })
            .await?;
        Ok(response.channel.unwrap_or_default())
    }

    /// Publishes `payload`; returns its offset.
    pub async fn publish(&self, channel: &str, payload: &[u8]) -> Result<u64, ClientError> {
        let request = pb::PublishRequest {
            channel: channel.to_owned(),
            payload: payload.to_vec(),
        };
        let response = self
            .coordination(request, |mut c, r| async move { c.publish(r).await })
            .await?;
        Ok(response.offset)
    }

    /// Subscribes from `from_offset` (`None`: messages published from now on).
    pub fn subscribe(&self, channel: &str, from_offset: Option<u64>) -> Subscription {
        let (sender, messages) = mpsc::channel(256);
        let client = self.clone();
        let channel = channel.to_owned();
        tokio::spawn(async move { client.pump_subscription(channel, from_offset, sender).await });
        Subscription { messages }
    }

    async fn pump_subscription(
        self,
        channel: String,
        mut from_offset: Option<u64>,
        sender: mpsc::Sender<Result<pb::SubscribeResponse, ClientError>>,
    ) {
        loop {
            let request = pb::SubscribeRequest {
                channel: channel.clone(),
                from_offset,
                consistency: pb::Consistency::Linearizable as i32,
            };
            let opened = self
                .coordination(request, |mut c, r| async move { c.subscribe(r).await })
                .await;
            let relayed = relay(opened, &sender, |response: &pb::SubscribeResponse| {
                if let Some(message) = &response.message {
                    from_offset = Some(message.offset + 1);
                }
                false
            })
            .await;
            if let Relayed::Done = relayed {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}
