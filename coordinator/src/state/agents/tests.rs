//! Tests of the agent registry: registration, resume, sessions, drain.

use super::*;
use crate::state::testing::{registration, START_MS};

fn registry() -> AgentRegistry {
    let mut agents = AgentRegistry::default();
    agents
        .register(&registration("a1", &["python"], 2), START_MS)
        .unwrap();
    agents
}

fn resume(token: &str) -> Registration {
    Registration {
        session_id: "a1-s2".into(),
        session_token: "a1-t2".into(),
        resume_token: Some(token.into()),
        capabilities: BTreeSet::from(["python".to_string(), "gpu".to_string()]),
        ..registration("a1", &[], 4)
    }
}

#[test]
fn a_new_agent_is_connected_with_its_profile() {
    let agents = registry();
    let agent = agents.get("a1").unwrap();
    assert_eq!(agent.status, AgentStatus::Connected);
    assert_eq!(
        (agent.session_id.as_str(), agent.session_token.as_str()),
        ("a1-s1", "a1-t1")
    );
    assert_eq!(agent.capabilities, BTreeSet::from(["python".to_string()]));
    assert_eq!(
        (agent.max_concurrent, agent.registered_at_ms, agent.draining),
        (2, START_MS, false)
    );
    assert_eq!(
        agents.load("a1"),
        Some(AgentLoad {
            running: 0,
            max_concurrent: 2
        })
    );
}

#[test]
fn registration_rejections() {
    let mut agents = registry();
    let before = agents.clone();
    let duplicate = agents.register(&registration("a1", &[], 1), 0).unwrap_err();
    assert_eq!(duplicate.to_string(), "agent 'a1' already exists");
    let wrong = agents.register(&resume("a1-t0"), 0).unwrap_err();
    assert_eq!(wrong.to_string(), "agent 'a1': wrong session token");
    let unknown = agents.register(
        &Registration {
            agent_id: "zz".into(),
            ..resume("x")
        },
        0,
    );
    assert_eq!(
        unknown.unwrap_err().to_string(),
        "agent 'zz' is not registered"
    );
    let zero = agents.register(&registration("a2", &[], 0), 0).unwrap_err();
    assert_eq!(zero.to_string(), "max_concurrent: must be at least 1");
    assert_eq!(agents, before);
}

#[test]
fn resume_replaces_the_session_and_the_profile() {
    let mut agents = registry();
    agents.disconnect("a1", "a1-s1", START_MS + 5).unwrap();
    let registered = agents.register(&resume("a1-t1"), START_MS + 9).unwrap();
    let expected = Registered {
        agent_id: "a1".into(),
        session_id: "a1-s2".into(),
        resumed: true,
        running: BTreeSet::new(),
    };
    assert_eq!(registered, expected);
    let agent = agents.get("a1").unwrap();
    assert_eq!(
        (
            agent.status,
            agent.session_token.as_str(),
            agent.max_concurrent
        ),
        (AgentStatus::Connected, "a1-t2", 4)
    );
    assert_eq!(
        (agent.registered_at_ms, agent.connected_at_ms),
        (START_MS, START_MS + 9)
    );
    let stale = agents.disconnect("a1", "a1-s1", START_MS + 10).unwrap_err();
    assert_eq!(
        stale.to_string(),
        "agent 'a1': session 'a1-s1' is not its current session"
    );
}

#[test]
fn an_expired_agent_may_resume_but_a_deregistered_one_may_not() {
    let mut agents = registry();
    agents.expire("a1", "a1-s1").unwrap();
    assert_eq!(agents.live().count(), 0);
    assert!(agents.register(&resume("a1-t1"), 0).unwrap().resumed);
    agents.deregister("a1").unwrap();
    let rejection = agents.register(&resume("a1-t2"), 0).unwrap_err();
    assert_eq!(
        rejection.to_string(),
        "agent 'a1' deregistered and cannot resume"
    );
}

#[test]
fn a_draining_agent_takes_no_work() {
    let mut agents = registry();
    let none = BTreeSet::new();
    assert_eq!(agents.check_assignable("a1", &none), Ok(()));
    agents.drain("a1").unwrap();
    assert_eq!(agents.accepting_work().count(), 0);
    let rejection = agents.check_assignable("a1", &none).unwrap_err();
    assert_eq!(rejection.to_string(), "agent 'a1' is draining");
}
