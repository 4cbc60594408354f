//! A disconnected agent keeps its tasks; an expired or deregistered one loses them, each lost
//! attempt counting as a failure that may be retried.

use super::*;
use crate::state::AgentStatus;

fn disconnect(agent: &str) -> Command {
    Command::AgentDisconnected {
        agent_id: agent.into(),
        session_id: format!("{agent}-s1"),
    }
}

fn expire(agent: &str, session: &str) -> Command {
    Command::ExpireAgent {
        agent_id: agent.into(),
        session_id: session.into(),
    }
}

#[test]
fn expiry_requeues_every_task_the_agent_ran() {
    let mut job = spec(vec![task("t", &[]), task("u", &[])]);
    job.tasks[1].retry.max_attempts = 1;
    let mut h = with_job(job);
    run(&mut h, "t", 1, "a1");
    h.ok(assign("j", "u", 1, "a1"));
    h.now_ms = 11_000;
    h.ok(disconnect("a1"));
    assert_eq!(
        h.agent("a1").status,
        AgentStatus::Disconnected { since_ms: 11_000 }
    );
    assert_eq!(
        h.task("j", "t").state,
        TaskState::Running,
        "kept within the lease"
    );

    h.now_ms = 20_000;
    let seq = h.next_sequence("j");
    let outcome = h.ok(expire("a1", "a1-s1"));
    let ended = vec![
        AttemptEnd {
            task: attempt_ref("j", "t", 1),
            agent_id: "a1".into(),
            state: TaskState::Ready,
            retry_at_ms: Some(21_000),
        },
        AttemptEnd {
            task: attempt_ref("j", "u", 1),
            agent_id: "a1".into(),
            state: TaskState::DeadLettered,
            retry_at_ms: None,
        },
    ];
    let Applied::AgentLost {
        agent_id,
        ended: got,
        effects,
    } = outcome
    else {
        panic!("{outcome:?}")
    };
    assert_eq!((agent_id.as_str(), got), ("a1", ended));
    assert_eq!(
        effects.jobs_finished.len(),
        1,
        "u dead-lettered, so the job failed"
    );
    let agent = h.agent("a1");
    assert_eq!(
        (agent.status, agent.running.len(), agent.tasks_failed),
        (AgentStatus::Expired, 0, 2)
    );
    assert_eq!(
        h.task("j", "t").attempts[0].outcome,
        Some(AttemptOutcome::AgentLost)
    );
    let lost = JobEventKind::TaskFailed {
        task_id: "t".into(),
        attempt: 1,
        error: "agent 'a1' lost".into(),
        will_retry: true,
        retry_at_ms: Some(21_000),
    };
    assert_eq!(h.events_from("j", seq)[0], lost);
}

#[test]
fn a_lost_attempt_is_retried_elsewhere() {
    let mut h = with_job(spec(vec![task("t", &[])]));
    run(&mut h, "t", 1, "a1");
    h.ok(Command::DeregisterAgent {
        agent_id: "a1".into(),
    });
    assert_eq!(h.agent("a1").status, AgentStatus::Deregistered);
    let task = h.task("j", "t");
    assert_eq!(
        (task.state, task.failed_attempts, task.not_before_ms),
        (TaskState::Ready, 1, START_MS + 1_000)
    );
    h.now_ms += 1_000;
    run(&mut h, "t", 2, "a2");
    h.ok(succeed("j", "t", 2, "a2", "ok"));
    assert_eq!(h.job("j").state, JobState::Succeeded);
    let outcome = h.apply(succeed("j", "t", 1, "a1", "late"));
    assert!(matches!(outcome, Err(Rejection::JobFinished { .. })));
}

#[test]
fn expiry_of_an_old_session_or_a_gone_agent_is_rejected() {
    let mut h = with_job(spec(vec![task("t", &[])]));
    let rejection = h.rejected(expire("a1", "old-session"));
    assert_eq!(
        rejection.to_string(),
        "agent 'a1': session 'old-session' is not its current session"
    );
    h.ok(expire("a1", "a1-s1"));
    let rejection = h.rejected(expire("a1", "a1-s1"));
    assert_eq!(rejection.to_string(), "agent 'a1' is Expired");
    let rejection = h.rejected(assign("j", "t", 1, "a1"));
    assert_eq!(rejection.to_string(), "agent 'a1' is Expired");
}
