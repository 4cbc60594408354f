//! Agent messages that change state and are not yet acknowledged: kept in send order and sent
//! again on the next session, so a result survives a lost connection or a leader change.
//! Re-sending is safe: the coordinator treats results as idempotent per (task, attempt).

use std::collections::BTreeMap;

use synod_proto::v1 as pb;

/// Unacknowledged requests by id.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    next_id: u64,
    waiting: BTreeMap<u64, pb::agent_message::Kind>,
}

impl Outbox {
    /// Stamps `kind` with a fresh request id, keeps it until answered, and returns the message.
    pub(crate) fn track(&mut self, kind: pb::agent_message::Kind) -> pb::AgentMessage {
        self.next_id += 1;
        self.waiting.insert(self.next_id, kind.clone());
        message(self.next_id, kind)
    }

    /// Forgets a request once it was acknowledged or definitively refused.
    pub(crate) fn settle(&mut self, request_id: u64) -> Option<pb::agent_message::Kind> {
        self.waiting.remove(&request_id)
    }

    /// Every waiting request, oldest first, for re-sending on a new session.
    pub(crate) fn pending(&self) -> Vec<pb::AgentMessage> {
        self.waiting
            .iter()
            .map(|(id, kind)| message(*id, kind.clone()))
            .collect()
    }
}

/// An agent message with `request_id`.
pub(crate) fn message(request_id: u64, kind: pb::agent_message::Kind) -> pb::AgentMessage {
    pb::AgentMessage {
        request_id,
        kind: Some(kind),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn heartbeat() -> pb::agent_message::Kind {
        pb::agent_message::Kind::Heartbeat(pb::Heartbeat::default())
    }

    #[test]
    fn requests_wait_in_order_until_settled() {
        let mut outbox = Outbox::default();
        let first = outbox.track(heartbeat());
        let second = outbox.track(heartbeat());
        assert_eq!((first.request_id, second.request_id), (1, 2));
        assert!(outbox.settle(1).is_some());
        assert!(outbox.settle(1).is_none());
        let pending: Vec<u64> = outbox.pending().iter().map(|m| m.request_id).collect();
        assert_eq!(pending, [2]);
    }
}
