//! [`ChannelTable`]: publish/subscribe channels and the messages of durable ones, changed by
//! `CreateChannel` and `Publish`.
//!
//! ```text
//!   Publish (durable) ─► offset = next_offset ─► retained until retention_messages newer
//!                        messages exist or retention_ms passed
//! ```
//! Subscribers read from an offset of their choosing, so a subscriber that reconnects resumes
//! where it stopped. Best-effort channels are registered here, but their messages never reach
//! the log. Pure: no I/O, clock or randomness.

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use super::jobs::SpecError;
use super::{Applied, Meta, Outcome, Rejection};

/// Longest channel name, in characters.
pub const NAME_CHARS_MAX: usize = 256;
/// Largest message payload.
pub const PAYLOAD_BYTES_MAX: usize = 1024 * 1024;
/// Messages a durable channel keeps when its creator does not say.
pub const RETENTION_MESSAGES_DEFAULT: u64 = 10_000;
/// Most messages a durable channel may keep.
pub const RETENTION_MESSAGES_MAX: u64 = 1_000_000;

/// Delivery guarantee of a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Delivery {
    /// Relayed live by the leader; never committed.
    BestEffort,
    /// Committed, with offsets, replayable.
    Durable,
}

/// A channel as created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelSpec {
    /// Delivery guarantee.
    pub delivery: Delivery,
    /// Durable: most messages kept; 0 means [`RETENTION_MESSAGES_DEFAULT`].
    pub retention_messages: u64,
    /// Durable: messages older than this are dropped; 0 means no age limit.
    pub retention_ms: u64,
}

/// One committed message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Position in the channel, from 1.
    pub offset: u64,
    /// Who published it.
    pub sender: String,
    /// The payload.
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
    /// When it was committed.
    pub sent_at_ms: u64,
}

/// One channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelRecord {
    /// Its name.
    pub name: String,
    /// As created.
    pub spec: ChannelSpec,
    /// When it was created.
    pub created_at_ms: u64,
    /// Retained messages, oldest first.
    pub messages: VecDeque<Message>,
    /// Offset the next message gets.
    pub next_offset: u64,
}

impl ChannelRecord {
    /// Offset of the oldest retained message (`next_offset` when none is).
    pub fn first_offset(&self) -> u64 {
        self.messages.front().map_or(self.next_offset, |m| m.offset)
    }

    /// Retained messages from offset `from` on, at most `limit`.
    pub fn read_from(&self, from: u64, limit: usize) -> impl Iterator<Item = &Message> {
        let skip = from.saturating_sub(self.first_offset()) as usize;
        self.messages.iter().skip(skip).take(limit)
    }

    fn retention(&self) -> u64 {
        match self.spec.retention_messages {
            0 => RETENTION_MESSAGES_DEFAULT,
            n => n,
        }
    }
}

/// Every channel by name.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChannelTable {
    channels: BTreeMap<String, ChannelRecord>,
}

impl ChannelTable {
    /// Creates a channel; creating it again with the same settings is a retry.
    pub fn create(&mut self, name: &str, spec: &ChannelSpec, meta: Meta) -> Outcome {
        if let Some(existing) = self.channels.get(name) {
            return match existing.spec == *spec {
                true => Ok(Applied::ChannelChanged { offset: 0 }),
                false => Err(Rejection::ChannelExists {
                    name: name.to_owned(),
                }),
            };
        }
        validate(name, spec).map_err(Rejection::InvalidSpec)?;
        let record = ChannelRecord {
            name: name.to_owned(),
            spec: spec.clone(),
            created_at_ms: meta.now_ms,
            messages: VecDeque::new(),
            next_offset: 1,
        };
        self.channels.insert(name.to_owned(), record);
        Ok(Applied::ChannelChanged { offset: 0 })
    }

    /// Appends a message to a durable channel, dropping what retention no longer keeps.
    pub fn publish(&mut self, name: &str, sender: &str, payload: &[u8], meta: Meta) -> Outcome {
        let channel = self.channels.get_mut(name).ok_or_else(|| unknown(name))?;
        if channel.spec.delivery != Delivery::Durable {
            return Err(Rejection::NotDurable {
                name: name.to_owned(),
            });
        }
        check_payload(payload).map_err(Rejection::InvalidSpec)?;
        let offset = channel.next_offset;
        channel.messages.push_back(Message {
            offset,
            sender: sender.to_owned(),
            payload: payload.to_vec(),
            sent_at_ms: meta.now_ms,
        });
        channel.next_offset += 1;
        let keep = channel.retention();
        while channel.messages.len() as u64 > keep {
            channel.messages.pop_front();
        }
        if channel.spec.retention_ms > 0 {
            let oldest = meta.now_ms.saturating_sub(channel.spec.retention_ms);
            while channel
                .messages
                .front()
                .is_some_and(|m| m.sent_at_ms < oldest)
            {
                channel.messages.pop_front();
            }
        }
        Ok(Applied::ChannelChanged { offset })
    }

    /// One channel.
    pub fn get(&self, name: &str) -> Option<&ChannelRecord> {
        self.channels.get(name)
    }
}

fn unknown(name: &str) -> Rejection {
    Rejection::UnknownChannel {
        name: name.to_owned(),
    }
}

/// The size rule of every mesh message: channel, direct and broadcast alike.
pub fn check_payload(payload: &[u8]) -> Result<(), SpecError> {
    if payload.len() > PAYLOAD_BYTES_MAX {
        let problem = format!("{} bytes, the limit is {PAYLOAD_BYTES_MAX}", payload.len());
        return Err(SpecError::new("payload", problem));
    }
    Ok(())
}

/// The rules a new channel must satisfy.
pub fn validate(name: &str, spec: &ChannelSpec) -> Result<(), SpecError> {
    let chars = name.chars().count();
    if chars == 0 || chars > NAME_CHARS_MAX {
        let problem = format!("{chars} chars, must be 1 to {NAME_CHARS_MAX}");
        return Err(SpecError::new("name", problem));
    }
    if spec.retention_messages > RETENTION_MESSAGES_MAX {
        let problem = format!(
            "{}, the limit is {RETENTION_MESSAGES_MAX}",
            spec.retention_messages
        );
        return Err(SpecError::new("retention_messages", problem));
    }
    Ok(())
}
