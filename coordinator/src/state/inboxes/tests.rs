//! Inboxes: offsets per recipient, cumulative acknowledgements, full inboxes refused or
//! skipped, broadcasts by selector to live agents only, a deregistered agent's inbox dropped.

use super::*;
use crate::state::channels::PAYLOAD_BYTES_MAX;
use crate::state::testing::{register, Harness, START_MS};
use crate::state::Command;

fn direct(to: &str, text: &str) -> Command {
    Command::SendDirect {
        to_agent_id: to.into(),
        sender: "client".into(),
        payload: text.as_bytes().to_vec(),
    }
}

fn broadcast(capabilities: &[&str], text: &str) -> Command {
    Command::Broadcast {
        selector: AgentSelector {
            capabilities: capabilities.iter().map(|c| c.to_string()).collect(),
            labels: BTreeMap::new(),
        },
        sender: "client".into(),
        payload: text.as_bytes().to_vec(),
    }
}

fn ack(agent_id: &str, offset: u64) -> Command {
    Command::AckInbox {
        agent_id: agent_id.into(),
        offset,
    }
}

fn offsets(h: &Harness, agent_id: &str) -> Vec<u64> {
    let inbox = h.state.inboxes.get(agent_id).unwrap();
    inbox.read_from(0, usize::MAX).map(|m| m.offset).collect()
}

#[test]
fn direct_messages_count_up_per_inbox_until_acknowledged() {
    let mut h = Harness::new();
    h.ok(register("a", &[], 1));
    h.ok(register("b", &[], 1));
    for expected in 1..=3 {
        let queued = h.ok(direct("a", "hi"));
        let want = vec![Queued {
            agent_id: "a".into(),
            offset: expected,
        }];
        assert_eq!(
            queued,
            Applied::MessagesQueued {
                queued: want,
                skipped_full: 0
            }
        );
    }
    h.ok(direct("b", "hello"));
    assert_eq!(offsets(&h, "a"), [1, 2, 3]);
    assert_eq!(offsets(&h, "b"), [1]);
    let first = h.state.inboxes.get("b").unwrap().messages[0].clone();
    assert_eq!(
        (first.sender.as_str(), first.payload.as_slice()),
        ("client", &b"hello"[..])
    );
    assert_eq!(first.sent_at_ms, START_MS);

    h.ok(ack("a", 2));
    assert_eq!(offsets(&h, "a"), [3]);
    assert_eq!(h.state.inboxes.get("a").unwrap().bytes, 2);
    h.ok(ack("a", 1));
    assert_eq!(
        offsets(&h, "a"),
        [3],
        "an older acknowledgement changes nothing"
    );
    let past = h.rejected(ack("a", 4));
    assert!(past.to_string().contains("offset"), "{past}");
    h.ok(ack("a", 3));
    assert!(offsets(&h, "a").is_empty());
    h.ok(direct("a", "again"));
    assert_eq!(offsets(&h, "a"), [4], "offsets never restart");
}

#[test]
fn an_unknown_or_deregistered_recipient_or_an_oversized_payload_is_refused() {
    let mut h = Harness::new();
    let unknown = h.rejected(direct("nobody", "x"));
    assert!(
        matches!(unknown, Rejection::UnknownAgent { .. }),
        "{unknown}"
    );
    h.ok(register("a", &[], 1));
    let big = Command::SendDirect {
        to_agent_id: "a".into(),
        sender: "client".into(),
        payload: vec![0; PAYLOAD_BYTES_MAX + 1],
    };
    let too_big = h.rejected(big);
    assert!(too_big.to_string().starts_with("payload:"), "{too_big}");
    h.ok(direct("a", "x"));
    h.ok(Command::DeregisterAgent {
        agent_id: "a".into(),
    });
    assert!(h.state.inboxes.get("a").is_none(), "its inbox is dropped");
    let gone = h.rejected(direct("a", "x"));
    assert!(matches!(gone, Rejection::AgentNotActive { .. }), "{gone}");
}

#[test]
fn a_full_inbox_refuses_direct_sends_and_is_skipped_by_broadcasts() {
    let mut h = Harness::new();
    h.ok(register("a", &["gpu"], 1));
    h.ok(register("b", &["gpu"], 1));
    for _ in 0..INBOX_MESSAGES_MAX {
        h.ok(direct("a", "x"));
    }
    let full = h.rejected(direct("a", "x"));
    assert!(matches!(full, Rejection::InboxFull { .. }), "{full}");
    match h.ok(broadcast(&["gpu"], "all")) {
        Applied::MessagesQueued {
            queued,
            skipped_full,
        } => {
            assert_eq!(skipped_full, 1);
            assert_eq!(
                queued,
                [Queued {
                    agent_id: "b".into(),
                    offset: 1
                }]
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    h.ok(ack("a", 1));
    h.ok(direct("a", "room again"));
}

#[test]
fn broadcasts_reach_live_matching_agents_only_and_are_bounded_in_total() {
    let mut h = Harness::new();
    h.ok(register("a", &["gpu"], 1));
    h.ok(register("b", &["cpu"], 1));
    h.ok(register("c", &["gpu", "cpu"], 1));
    h.ok(Command::DeregisterAgent {
        agent_id: "c".into(),
    });
    let reached = match h.ok(broadcast(&["gpu"], "train")) {
        Applied::MessagesQueued { queued, .. } => queued,
        other => panic!("unexpected {other:?}"),
    };
    let ids: Vec<&str> = reached.iter().map(|q| q.agent_id.as_str()).collect();
    assert_eq!(ids, ["a"]);
    assert!(h.state.inboxes.get("b").is_none());
    let everyone = match h.ok(broadcast(&[], "all")) {
        Applied::MessagesQueued { queued, .. } => queued,
        other => panic!("unexpected {other:?}"),
    };
    assert_eq!(everyone.len(), 2, "{everyone:?}");

    for i in 0..64 {
        h.ok(register(&format!("x{i}"), &[], 1));
    }
    let huge = Command::Broadcast {
        selector: AgentSelector::default(),
        sender: "client".into(),
        payload: vec![0; PAYLOAD_BYTES_MAX],
    };
    let refused = h.rejected(huge);
    assert!(
        refused.to_string().contains("publish on a channel"),
        "{refused}"
    );
}
