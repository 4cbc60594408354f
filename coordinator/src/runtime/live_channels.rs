//! Best-effort channels on the leader: messages live only in this leader's memory and are
//! fanned out to its current subscribers, never committed.
//!
//! ```text
//!   Publish ─► LiveChannels::publish ─► ring of LIVE_BUFFER messages ─► every subscriber
//!                                       (a subscriber that falls LIVE_BUFFER behind skips
//!                                        ahead and is told how many it missed)
//! ```
//! Publishing never waits for a subscriber, so a slow one holds up nobody. Offsets count from 1
//! within one leader term; a new term (this node leading again, or another leader) starts a
//! channel over.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

use crate::state::channels::Message;

/// Messages kept per channel for subscribers that lag.
pub const LIVE_BUFFER: usize = 1024;

struct Live {
    term: u64,
    next_offset: u64,
    fan_out: broadcast::Sender<Arc<Message>>,
}

impl Live {
    fn new(term: u64) -> Self {
        Self {
            term,
            next_offset: 1,
            fan_out: broadcast::channel(LIVE_BUFFER).0,
        }
    }
}

/// The best-effort channels of this leader, by name.
#[derive(Default)]
pub struct LiveChannels {
    channels: Mutex<HashMap<String, Live>>,
}

impl LiveChannels {
    /// Publishes to `name` in leader term `term`; returns the message's offset.
    pub fn publish(
        &self,
        name: &str,
        term: u64,
        sender: String,
        payload: Vec<u8>,
        now_ms: u64,
    ) -> u64 {
        let mut channels = self.channels.lock().expect("live channels lock");
        let live = Self::current(&mut channels, name, term);
        let offset = live.next_offset;
        live.next_offset += 1;
        let message = Message {
            offset,
            sender,
            payload,
            sent_at_ms: now_ms,
        };
        // No subscriber is no error: best-effort messages nobody listens to are gone.
        let _ = live.fan_out.send(Arc::new(message));
        offset
    }

    /// Follows `name` in leader term `term` from its next message on.
    pub fn subscribe(&self, name: &str, term: u64) -> broadcast::Receiver<Arc<Message>> {
        let mut channels = self.channels.lock().expect("live channels lock");
        Self::current(&mut channels, name, term).fan_out.subscribe()
    }

    fn current<'a>(channels: &'a mut HashMap<String, Live>, name: &str, term: u64) -> &'a mut Live {
        let live = channels
            .entry(name.to_owned())
            .or_insert_with(|| Live::new(term));
        if live.term != term {
            *live = Live::new(term);
        }
        live
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn subscribers_get_messages_in_order_and_a_laggard_learns_what_it_missed() {
        let channels = LiveChannels::default();
        let mut fast = channels.subscribe("ticks", 3);
        let mut slow = channels.subscribe("ticks", 3);
        let total = LIVE_BUFFER as u64 + 10;
        for i in 1..=total {
            assert_eq!(channels.publish("ticks", 3, "p".into(), vec![], i), i);
            assert_eq!(fast.recv().await.unwrap().offset, i);
        }
        assert_eq!(
            slow.recv().await.unwrap_err(),
            broadcast::error::RecvError::Lagged(10)
        );
        assert_eq!(slow.recv().await.unwrap().offset, 11);
    }

    #[tokio::test]
    async fn a_new_term_starts_the_channel_over() {
        let channels = LiveChannels::default();
        let mut old = channels.subscribe("ticks", 1);
        assert_eq!(channels.publish("ticks", 1, "p".into(), vec![], 0), 1);
        assert_eq!(channels.publish("ticks", 2, "p".into(), vec![], 0), 1);
        assert_eq!(old.recv().await.unwrap().offset, 1);
        assert_eq!(
            old.recv().await.unwrap_err(),
            broadcast::error::RecvError::Closed,
            "subscribers of the old term are ended"
        );
    }
}
