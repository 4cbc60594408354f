//! Channels: offsets count up from 1, retention drops the oldest messages, reads start at any
//! retained offset, best-effort channels never take a committed message.

use super::*;
use crate::state::testing::{Harness, START_MS};
use crate::state::Command;

fn create(h: &mut Harness, delivery: Delivery, retention_messages: u64) {
    h.ok(Command::CreateChannel {
        name: "events".into(),
        spec: ChannelSpec {
            delivery,
            retention_messages,
            retention_ms: 0,
        },
    });
}

fn publish(text: &str) -> Command {
    Command::Publish {
        channel: "events".into(),
        sender: "tester".into(),
        payload: text.as_bytes().to_vec(),
    }
}

#[test]
fn offsets_count_up_and_retention_keeps_the_newest() {
    let mut h = Harness::new();
    create(&mut h, Delivery::Durable, 3);
    for (i, text) in ["a", "b", "c", "d", "e"].iter().enumerate() {
        assert_eq!(
            h.ok(publish(text)),
            Applied::ChannelChanged {
                offset: i as u64 + 1
            }
        );
    }
    let channel = h.state.channels.get("events").unwrap();
    assert_eq!((channel.first_offset(), channel.next_offset), (3, 6));
    let from_four: Vec<&[u8]> = channel
        .read_from(4, 10)
        .map(|m| m.payload.as_slice())
        .collect();
    assert_eq!(from_four, [b"d", b"e"]);
    let from_one: Vec<u64> = channel.read_from(1, 10).map(|m| m.offset).collect();
    assert_eq!(
        from_one,
        [3, 4, 5],
        "an offset before retention starts at the oldest kept"
    );
    assert_eq!(START_MS, channel.created_at_ms);
}

#[test]
fn best_effort_channels_and_unknown_channels_take_no_committed_message() {
    let mut h = Harness::new();
    create(&mut h, Delivery::BestEffort, 0);
    create(&mut h, Delivery::BestEffort, 0);
    let best_effort = h.rejected(publish("x"));
    assert!(matches!(best_effort, Rejection::NotDurable { .. }));
    let other = h.rejected(Command::CreateChannel {
        name: "events".into(),
        spec: ChannelSpec {
            delivery: Delivery::Durable,
            retention_messages: 0,
            retention_ms: 0,
        },
    });
    assert!(matches!(other, Rejection::ChannelExists { .. }));
    let unknown = h.rejected(Command::Publish {
        channel: "nope".into(),
        sender: "t".into(),
        payload: Vec::new(),
    });
    assert_eq!(unknown.to_string(), "channel: no channel 'nope'");
}
