//! Live agent sessions on the leader: the outbound stream of each connected agent, when it was
//! last heard from, and which agents have outlived their lease.
//!
//! Heartbeats are not replicated (DESIGN.md §2): this hub is the leader's memory of liveness.
//! An agent the replicated state believes alive but that has no live session here — because it
//! disconnected, or because leadership just moved — is given one lease period from the moment
//! this leader noticed it, before the runtime proposes its expiry.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use synod_proto::v1 as pb;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tonic::Status;

/// The sending half of an agent's session stream.
pub type Outbound = mpsc::Sender<Result<pb::CoordinatorMessage, Status>>;

struct Live {
    session_id: String,
    outbound: Outbound,
    last_seen: Instant,
}

/// Sessions by agent id, plus when absent agents were first missed.
#[derive(Default)]
pub struct SessionHub {
    live: Mutex<HashMap<String, Live>>,
    missing_since: Mutex<HashMap<String, Instant>>,
}

impl SessionHub {
    /// Attaches a new session for `agent_id`, replacing (and returning) an older one.
    pub fn attach(&self, agent_id: &str, session_id: &str, outbound: Outbound) -> Option<Outbound> {
        self.missing_since
            .lock()
            .expect("hub lock")
            .remove(agent_id);
        let live = Live {
            session_id: session_id.to_owned(),
            outbound,
            last_seen: Instant::now(),
        };
        let mut sessions = self.live.lock().expect("hub lock");
        sessions
            .insert(agent_id.to_owned(), live)
            .map(|old| old.outbound)
    }

    /// Detaches `session_id` of `agent_id` if it is still the current one; true if it was.
    pub fn detach(&self, agent_id: &str, session_id: &str) -> bool {
        let mut sessions = self.live.lock().expect("hub lock");
        if sessions
            .get(agent_id)
            .is_some_and(|live| live.session_id == session_id)
        {
            sessions.remove(agent_id);
            self.missing_since
                .lock()
                .expect("hub lock")
                .insert(agent_id.to_owned(), Instant::now());
            return true;
        }
        false
    }

    /// Records that the agent's current session was heard from.
    pub fn touch(&self, agent_id: &str, session_id: &str) {
        let mut sessions = self.live.lock().expect("hub lock");
        if let Some(live) = sessions
            .get_mut(agent_id)
            .filter(|l| l.session_id == session_id)
        {
            live.last_seen = Instant::now();
        }
    }

    /// Queues `message` on the agent's session; false when it has none or its buffer is full
    /// (the agent is too slow; it will be resent what matters on reconnect).
    pub fn send(&self, agent_id: &str, message: pb::CoordinatorMessage) -> bool {
        let sessions = self.live.lock().expect("hub lock");
        match sessions.get(agent_id) {
            Some(live) => live.outbound.try_send(Ok(message)).is_ok(),
            None => false,
        }
    }

    /// True when the agent has a live session here.
    pub fn is_connected(&self, agent_id: &str) -> bool {
        self.live.lock().expect("hub lock").contains_key(agent_id)
    }

    /// Of `believed_alive` (agents the replicated state thinks are alive), those whose lease
    /// ran out: silent sessions, and agents missing for a whole lease since first noticed.
    pub fn expired<'a>(
        &self,
        believed_alive: impl IntoIterator<Item = &'a str>,
        lease: Duration,
    ) -> Vec<String> {
        let now = Instant::now();
        let sessions = self.live.lock().expect("hub lock");
        let mut missing = self.missing_since.lock().expect("hub lock");
        let mut expired = Vec::new();
        for agent_id in believed_alive {
            let since = match sessions.get(agent_id) {
                Some(live) => live.last_seen,
                None => *missing.entry(agent_id.to_owned()).or_insert(now),
            };
            if now.duration_since(since) >= lease {
                expired.push(agent_id.to_owned());
            }
        }
        expired
    }

    /// Forgets an agent entirely (expired or deregistered).
    pub fn forget(&self, agent_id: &str) {
        self.live.lock().expect("hub lock").remove(agent_id);
        self.missing_since
            .lock()
            .expect("hub lock")
            .remove(agent_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_millis(1000);

    fn outbound() -> (
        Outbound,
        mpsc::Receiver<Result<pb::CoordinatorMessage, Status>>,
    ) {
        mpsc::channel(4)
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_session_expires_after_its_lease_and_a_heartbeat_renews_it() {
        let hub = SessionHub::default();
        let (tx, _rx) = outbound();
        hub.attach("a", "s1", tx);
        tokio::time::advance(Duration::from_millis(900)).await;
        hub.touch("a", "s1");
        tokio::time::advance(Duration::from_millis(900)).await;
        assert!(hub.expired(["a"], LEASE).is_empty());
        tokio::time::advance(Duration::from_millis(200)).await;
        assert_eq!(hub.expired(["a"], LEASE), ["a"]);
    }

    #[tokio::test(start_paused = true)]
    async fn an_agent_without_a_session_gets_one_lease_from_when_it_was_missed() {
        let hub = SessionHub::default();
        assert!(hub.expired(["b"], LEASE).is_empty(), "first noticed now");
        tokio::time::advance(Duration::from_millis(999)).await;
        assert!(hub.expired(["b"], LEASE).is_empty());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(hub.expired(["b"], LEASE), ["b"]);
    }

    #[tokio::test(start_paused = true)]
    async fn reconnecting_replaces_the_old_session_and_stale_detach_is_ignored() {
        let hub = SessionHub::default();
        let (old, _old_rx) = outbound();
        let (new, mut new_rx) = outbound();
        hub.attach("a", "s1", old);
        assert!(
            hub.attach("a", "s2", new).is_some(),
            "the old session is handed back to close"
        );
        assert!(
            !hub.detach("a", "s1"),
            "the old session's end does not detach the new one"
        );
        assert!(hub.send("a", pb::CoordinatorMessage::default()));
        assert!(new_rx.recv().await.is_some());
        assert!(hub.detach("a", "s2"));
        assert!(!hub.is_connected("a"));
        assert!(!hub.send("a", pb::CoordinatorMessage::default()));
    }
}
