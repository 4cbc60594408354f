//! [`InboxTable`]: every agent's inbox of direct and broadcast messages, changed by
//! `SendDirect`, `Broadcast` and `AckInbox`.
//!
//! ```text
//!   SendDirect ─► the recipient's inbox ─┐
//!   Broadcast  ─► every live agent       ├─► offset = inbox.next_offset ─► kept until the
//!                 matching the selector ─┘   agent acknowledges it (AckInbox, cumulative)
//! ```
//! An inbox holds at most [`INBOX_MESSAGES_MAX`] messages and [`INBOX_BYTES_MAX`] bytes: a
//! direct send to a full inbox is refused, a broadcast skips (and counts) the full ones. A
//! deregistered agent's inbox is dropped; an expired agent keeps it, since it may resume. Pure:
//! no I/O, clock or randomness.

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use super::agents::{AgentRegistry, AgentSelector, AgentStatus};
use super::channels::{check_payload, Message};
use super::jobs::SpecError;
use super::{Applied, Meta, Outcome, Rejection};

/// Most messages one inbox holds before it counts as full.
pub const INBOX_MESSAGES_MAX: usize = 10_000;
/// Most payload bytes one inbox holds before it counts as full.
pub const INBOX_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Most payload bytes one broadcast may copy into inboxes (payload × recipients); larger
/// fan-outs belong on a channel.
pub const BROADCAST_BYTES_MAX: usize = 64 * 1024 * 1024;

/// One agent's unacknowledged messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inbox {
    /// Messages not yet acknowledged, oldest first.
    pub messages: VecDeque<Message>,
    /// Offset the next message gets (offsets start at 1).
    pub next_offset: u64,
    /// Payload bytes held.
    pub bytes: usize,
}

impl Default for Inbox {
    fn default() -> Self {
        Self {
            messages: VecDeque::new(),
            next_offset: 1,
            bytes: 0,
        }
    }
}

impl Inbox {
    fn has_room_for(&self, payload: usize) -> bool {
        self.messages.len() < INBOX_MESSAGES_MAX && self.bytes + payload <= INBOX_BYTES_MAX
    }

    fn push(&mut self, sender: &str, payload: &[u8], meta: Meta) -> u64 {
        let offset = self.next_offset;
        self.messages.push_back(Message {
            offset,
            sender: sender.to_owned(),
            payload: payload.to_vec(),
            sent_at_ms: meta.now_ms,
        });
        self.next_offset = offset + 1;
        self.bytes += payload.len();
        offset
    }

    /// Unacknowledged messages from offset `from` on, at most `limit`.
    pub fn read_from(&self, from: u64, limit: usize) -> impl Iterator<Item = &Message> {
        let first = self.messages.front().map_or(u64::MAX, |m| m.offset);
        let skip = from.saturating_sub(first) as usize;
        self.messages.iter().skip(skip).take(limit)
    }
}

/// Where one message went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Queued {
    /// The recipient.
    pub agent_id: String,
    /// The message's offset in its inbox.
    pub offset: u64,
}

/// Every agent's inbox by agent id.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct InboxTable {
    inboxes: BTreeMap<String, Inbox>,
}

impl InboxTable {
    /// Queues a message for one registered agent.
    pub fn send_direct(
        &mut self,
        to: &str,
        sender: &str,
        payload: &[u8],
        agents: &AgentRegistry,
        meta: Meta,
    ) -> Outcome {
        check_payload(payload).map_err(Rejection::InvalidSpec)?;
        let agent = agents.get(to).ok_or_else(|| Rejection::UnknownAgent {
            agent_id: to.to_owned(),
        })?;
        if agent.status == AgentStatus::Deregistered {
            return Err(Rejection::AgentNotActive {
                agent_id: to.to_owned(),
                status: "Deregistered".into(),
            });
        }
        let inbox = self.inboxes.entry(to.to_owned()).or_default();
        if !inbox.has_room_for(payload.len()) {
            return Err(Rejection::InboxFull {
                agent_id: to.to_owned(),
            });
        }
        let offset = inbox.push(sender, payload, meta);
        Ok(Applied::MessagesQueued {
            queued: vec![Queued {
                agent_id: to.to_owned(),
                offset,
            }],
            skipped_full: 0,
        })
    }

    /// Queues a message for every live agent matching `selector`, skipping full inboxes.
    pub fn broadcast(
        &mut self,
        selector: &AgentSelector,
        sender: &str,
        payload: &[u8],
        agents: &AgentRegistry,
        meta: Meta,
    ) -> Outcome {
        check_payload(payload).map_err(Rejection::InvalidSpec)?;
        let recipients: Vec<&str> = agents
            .live()
            .filter(|agent| selector.matches(&agent.capabilities, &agent.labels))
            .map(|agent| agent.id.as_str())
            .collect();
        let total = payload.len().saturating_mul(recipients.len());
        if total > BROADCAST_BYTES_MAX {
            let problem = format!(
                "{} bytes to {} agents is {total} bytes, the limit is {BROADCAST_BYTES_MAX}; \
                 publish on a channel instead",
                payload.len(),
                recipients.len()
            );
            return Err(Rejection::InvalidSpec(SpecError::new("payload", problem)));
        }
        let (mut queued, mut skipped_full) = (Vec::new(), 0);
        for agent_id in recipients {
            let inbox = self.inboxes.entry(agent_id.to_owned()).or_default();
            if !inbox.has_room_for(payload.len()) {
                skipped_full += 1;
                continue;
            }
            let offset = inbox.push(sender, payload, meta);
            queued.push(Queued {
                agent_id: agent_id.to_owned(),
                offset,
            });
        }
        Ok(Applied::MessagesQueued {
            queued,
            skipped_full,
        })
    }

    /// Drops the messages of `agent_id`'s inbox up to and including `offset`.
    pub fn ack(&mut self, agent_id: &str, offset: u64) -> Outcome {
        let Some(inbox) = self.inboxes.get_mut(agent_id).filter(|_| offset > 0) else {
            return Ok(Applied::Done);
        };
        if offset >= inbox.next_offset {
            let problem = format!(
                "{offset} is past the newest message ({})",
                inbox.next_offset.saturating_sub(1)
            );
            return Err(Rejection::InvalidSpec(SpecError::new("offset", problem)));
        }
        while inbox.messages.front().is_some_and(|m| m.offset <= offset) {
            if let Some(message) = inbox.messages.pop_front() {
                inbox.bytes -= message.payload.len();
            }
        }
        Ok(Applied::Done)
    }

    /// Drops a deregistered agent's inbox.
    pub fn agent_left(&mut self, agent_id: &str) {
        self.inboxes.remove(agent_id);
    }

    /// One agent's inbox.
    pub fn get(&self, agent_id: &str) -> Option<&Inbox> {
        self.inboxes.get(agent_id)
    }
}
