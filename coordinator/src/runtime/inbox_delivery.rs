//! Delivery of agents' inboxes on the leader: one pump per open session sends the inbox's
//! committed messages in offset order as `MessageDelivery`, at most [`WINDOW`] ahead of the
//! agent's acknowledgements, and commits those acknowledgements (`AckInbox`, one in flight
//! per agent, so a burst of acks costs a single commit).
//!
//! ```text
//!   SendDirect / Broadcast applied ─► wake(recipient) ─► pump ─► MessageDelivery ─► agent
//!   agent DeliveryAck(offset) ─► acknowledged(offset) ─► pump ─► AckInbox ─► inbox trimmed
//! ```
//!
//! A slow agent only holds up its own pump: its window fills, then its inbox, and senders are
//! told `RESOURCE_EXHAUSTED`. A new session (reconnect, or a new leader) starts a new pump from
//! the oldest unacknowledged message, so nothing acknowledged is lost and nothing
//! unacknowledged is skipped; the SDK drops repeats by offset.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use futures::FutureExt;
use synod_proto::v1 as pb;
use synod_proto::v1::coordinator_message::Kind;
use tokio_util::sync::CancellationToken;

use super::sessions::Outbound;
use super::AgentRuntime;
use crate::state::channels::Message;
use crate::state::Command;

/// Messages sent but not yet acknowledged, per session.
pub const WINDOW: u64 = 256;

/// What a session and its pump share.
#[derive(Default)]
struct PumpSignal {
    wake: tokio::sync::Notify,
    acknowledged: AtomicU64,
    /// Cancelled when the session ends, so the pump lets go of its stream.
    closed: CancellationToken,
}

/// The pumps of the sessions open on this leader, by agent id.
#[derive(Default)]
pub struct InboxDelivery {
    pumps: Mutex<HashMap<String, (String, Arc<PumpSignal>)>>,
}

impl InboxDelivery {
    /// Wakes `agent_id`'s pump: its inbox has new messages.
    pub fn wake(&self, agent_id: &str) {
        if let Some((_, signal)) = self.pumps.lock().expect("pumps lock").get(agent_id) {
            signal.wake.notify_one();
        }
    }

    /// Records the agent's acknowledgement of its inbox up to `offset`.
    pub fn acknowledged(&self, agent_id: &str, session_id: &str, offset: u64) {
        let pumps = self.pumps.lock().expect("pumps lock");
        if let Some((_, signal)) = pumps.get(agent_id).filter(|(s, _)| s == session_id) {
            signal.acknowledged.fetch_max(offset, Ordering::Relaxed);
            signal.wake.notify_one();
        }
    }

    /// Forgets the pump of `session_id` (its session ended).
    pub fn close(&self, agent_id: &str, session_id: &str) {
        let mut pumps = self.pumps.lock().expect("pumps lock");
        if pumps.get(agent_id).is_some_and(|(s, _)| s == session_id) {
            if let Some((_, signal)) = pumps.remove(agent_id) {
                signal.closed.cancel();
            }
        }
    }
}

impl AgentRuntime {
    /// Starts delivering `agent_id`'s inbox on the session `session_id`.
    pub fn open_inbox(&self, agent_id: &str, session_id: &str, outbound: Outbound) {
        let signal = Arc::new(PumpSignal::default());
        let replaced = self
            .inbox_delivery()
            .pumps
            .lock()
            .expect("pumps lock")
            .insert(agent_id.to_owned(), (session_id.to_owned(), signal.clone()));
        if let Some((_, old)) = replaced {
            old.closed.cancel();
        }
        let pump = Pump {
            runtime: self.clone(),
            agent_id: agent_id.to_owned(),
            signal,
            outbound,
            sent: 0,
            committed: 0,
        };
        tokio::spawn(pump.run());
    }
}

/// One session's delivery loop.
struct Pump {
    runtime: AgentRuntime,
    agent_id: String,
    signal: Arc<PumpSignal>,
    outbound: Outbound,
    /// Highest offset sent on this session.
    sent: u64,
    /// Highest acknowledgement committed by this pump.
    committed: u64,
}

impl Pump {
    async fn run(mut self) {
        let mut in_flight: Option<BoxFuture<'static, u64>> = None;
        loop {
            let acknowledged = self
                .signal
                .acknowledged
                .load(Ordering::Relaxed)
                .min(self.sent);
            if in_flight.is_none() && acknowledged > self.committed {
                in_flight = Some(self.commit_ack(acknowledged));
            }
            if !self.send_window(acknowledged).await {
                return;
            }
            let ack_done = async {
                match in_flight.as_mut() {
                    Some(pending) => pending.await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = self.signal.wake.notified() => {}
                committed = ack_done => {
                    self.committed = self.committed.max(committed);
                    in_flight = None;
                }
                () = self.outbound.closed() => return,
                () = self.signal.closed.cancelled() => return,
            }
        }
    }

    /// Sends the messages the window allows; false when the session is gone.
    async fn send_window(&mut self, acknowledged: u64) -> bool {
        let room = WINDOW.saturating_sub(self.sent.saturating_sub(acknowledged));
        if room == 0 {
            return true;
        }
        let batch: Vec<Message> = self.runtime.read(|state| {
            let Some(inbox) = state.inboxes.get(&self.agent_id) else {
                return Vec::new();
            };
            inbox
                .read_from(self.sent + 1, room as usize)
                .cloned()
                .collect()
        });
        for message in batch {
            self.sent = message.offset;
            let sent = tokio::select! {
                sent = self.outbound.send(Ok(delivery(message))) => sent.is_ok(),
                () = self.signal.closed.cancelled() => false,
            };
            if !sent {
                return false;
            }
        }
        true
    }

    /// Commits the acknowledgement; resolves to the offset to count as committed (also when
    /// refused, so a bad acknowledgement is not retried forever).
    fn commit_ack(&self, offset: u64) -> BoxFuture<'static, u64> {
        let runtime = self.runtime.clone();
        let agent_id = self.agent_id.clone();
        async move {
            let command = Command::AckInbox {
                agent_id: agent_id.clone(),
                offset,
            };
            match runtime.propose(command).await {
                Ok(result) => {
                    if let Err(rejection) = result.outcome {
                        tracing::debug!(%agent_id, %rejection, "inbox acknowledgement refused");
                    }
                    offset
                }
                Err(error) => {
                    tracing::debug!(%agent_id, %error, "inbox acknowledgement not committed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    0
                }
            }
        }
        .boxed()
    }
}

fn delivery(message: Message) -> pb::CoordinatorMessage {
    super::messages::message(Kind::MessageDelivery(pb::MessageDelivery {
        message: Some(pb::MeshMessage {
            channel: String::new(),
            offset: message.offset,
            sender: message.sender,
            payload: message.payload,
            sent_at_ms: message.sent_at_ms,
        }),
        dropped: 0,
    }))
}
