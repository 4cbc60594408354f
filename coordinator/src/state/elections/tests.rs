//! Elections: the first candidate leads, the others queue in order; resigning or losing the
//! leader's agent passes leadership on with a higher term; stale resignations are refused.

use super::*;
use crate::state::testing::{register, Harness};
use crate::state::Command;

fn campaign(agent: &str) -> Command {
    Command::Campaign {
        election: "primary".into(),
        agent_id: agent.into(),
        value: format!("{agent}:7000").into_bytes(),
    }
}

fn leader(h: &Harness) -> Option<Leadership> {
    h.state
        .elections
        .get("primary")
        .and_then(|e| e.leader.clone())
}

fn harness() -> Harness {
    let mut h = Harness::new();
    for agent in ["a1", "a2", "a3"] {
        h.ok(register(agent, &[], 1));
    }
    h
}

#[test]
fn candidates_queue_and_leadership_passes_on_with_a_higher_term() {
    let mut h = harness();
    h.ok(campaign("a1"));
    h.ok(campaign("a2"));
    h.ok(campaign("a3"));
    h.ok(campaign("a2"));
    let first = leader(&h).unwrap();
    assert_eq!(
        (first.agent_id.as_str(), first.value.as_slice()),
        ("a1", &b"a1:7000"[..])
    );
    let queue: Vec<&str> = h
        .state
        .elections
        .get("primary")
        .unwrap()
        .queue
        .iter()
        .map(|c| c.agent_id.as_str())
        .collect();
    assert_eq!(queue, ["a2", "a3"], "arrival order, once each");
    let stale = h.rejected(Command::Resign {
        election: "primary".into(),
        agent_id: "a1".into(),
        term: first.term - 1,
    });
    assert!(matches!(stale, Rejection::StaleTerm { .. }), "{stale}");
    let not_leader = h.rejected(Command::Resign {
        election: "primary".into(),
        agent_id: "a2".into(),
        term: first.term,
    });
    assert!(
        matches!(not_leader, Rejection::NotLeader { .. }),
        "{not_leader}"
    );
    h.ok(Command::Resign {
        election: "primary".into(),
        agent_id: "a1".into(),
        term: first.term,
    });
    let second = leader(&h).unwrap();
    assert_eq!(second.agent_id, "a2");
    assert!(second.term > first.term);
    // The leader's agent is lost: the next candidate leads.
    h.ok(Command::DeregisterAgent {
        agent_id: "a2".into(),
    });
    let third = leader(&h).unwrap();
    assert_eq!(third.agent_id, "a3");
    assert!(third.term > second.term);
}

#[test]
fn a_withdrawn_candidate_never_leads_and_unknown_agents_cannot_campaign() {
    let mut h = harness();
    h.ok(campaign("a1"));
    h.ok(campaign("a2"));
    h.ok(Command::Withdraw {
        election: "primary".into(),
        agent_id: "a2".into(),
    });
    h.ok(Command::DeregisterAgent {
        agent_id: "a1".into(),
    });
    assert_eq!(leader(&h), None);
    let ghost = h.rejected(campaign("ghost"));
    assert!(matches!(ghost, Rejection::UnknownAgent { .. }));
}
