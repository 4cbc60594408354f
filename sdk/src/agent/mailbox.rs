//! The agent's inbox on its side: direct and broadcast messages handed to the message handler
//! one at a time in offset order, repeats (redeliveries after a reconnect) dropped by offset,
//! and the highest offset handled acknowledged back to the coordinator.
//!
//! ```text
//!   MessageDelivery ─► Mailbox::offer (offset > delivered?) ─► handler task (in order)
//!   handler done ─► handled(offset) ─► session sends DeliveryAck (cumulative)
//! ```
//! Without a message handler messages are acknowledged as they arrive (and so dropped).

use std::future::Future;
use std::sync::Arc;

use synod_proto::v1 as pb;
use tokio::sync::mpsc;

use super::handler::BoxFuture;

/// Messages queued towards the handler.
const QUEUE: usize = 1024;

/// Handles the agent's direct and broadcast messages, one at a time, in offset order. A
/// message is acknowledged once the returned future completes.
pub trait MessageHandler: Send + Sync + 'static {
    /// Handles one message.
    fn message(&self, message: pb::MeshMessage) -> BoxFuture<()>;
}

impl<F, Fut> MessageHandler for F
where
    F: Fn(pb::MeshMessage) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    fn message(&self, message: pb::MeshMessage) -> BoxFuture<()> {
        Box::pin(self(message))
    }
}

/// The agent's side of its inbox; lives across sessions.
pub(crate) struct Mailbox {
    /// The agent the offsets belong to.
    agent_id: String,
    /// Highest offset handed on (to the handler, or acknowledged without one).
    delivered: u64,
    /// Highest offset handled.
    handled: u64,
    queue: Option<mpsc::Sender<pb::MeshMessage>>,
    done: mpsc::Receiver<u64>,
    done_sender: mpsc::Sender<u64>,
}

impl Mailbox {
    /// A mailbox feeding `handler`, if there is one.
    pub(crate) fn new(handler: Option<Arc<dyn MessageHandler>>) -> Self {
        let (done_sender, done) = mpsc::channel(QUEUE);
        let queue = handler.map(|handler| {
            let (queue, mut queued) = mpsc::channel::<pb::MeshMessage>(QUEUE);
            let done = done_sender.clone();
            tokio::spawn(async move {
                while let Some(message) = queued.recv().await {
                    let offset = message.offset;
                    handler.message(message).await;
                    if done.send(offset).await.is_err() {
                        return;
                    }
                }
            });
            queue
        });
        Self {
            agent_id: String::new(),
            delivered: 0,
            handled: 0,
            queue,
            done,
            done_sender,
        }
    }

    /// The session registered as `agent_id`: offsets of another agent start over.
    pub(crate) fn registered_as(&mut self, agent_id: &str) {
        if self.agent_id != agent_id {
            self.agent_id = agent_id.to_owned();
            self.delivered = 0;
            self.handled = 0;
        }
    }

    /// The acknowledgement to repeat on a new session, if anything was handled.
    pub(crate) fn resume_ack(&self) -> Option<u64> {
        (self.handled > 0).then_some(self.handled)
    }

    /// Takes a delivered message; repeats are dropped.
    pub(crate) async fn offer(&mut self, message: pb::MeshMessage) {
        if message.offset <= self.delivered {
            return;
        }
        self.delivered = message.offset;
        let offset = message.offset;
        let queued = match &self.queue {
            Some(queue) => queue.send(message).await.is_ok(),
            None => false,
        };
        if !queued {
            let _ = self.done_sender.send(offset).await;
        }
    }

    /// Waits until messages were handled; returns the highest offset handled so far.
    pub(crate) async fn handled(&mut self) -> Option<u64> {
        let first = self.done.recv().await?;
        self.handled = self.handled.max(first);
        while let Ok(offset) = self.done.try_recv() {
            self.handled = self.handled.max(offset);
        }
        Some(self.handled)
    }
}
