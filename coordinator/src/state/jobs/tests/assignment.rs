//! AssignTask is valid only for a ready task, past its backoff, with the next attempt number,
//! on a connected, non-draining agent with the capabilities and a free slot.

use super::*;
use crate::state::AgentStatus;

fn needing_python() -> JobSpec {
    let mut job = spec(vec![task("t", &[]), task("u", &[]), task("p", &["t"])]);
    job.tasks[0].required_capabilities = BTreeSet::from(["python".to_string()]);
    job
}

#[test]
fn assignment_records_the_attempt_and_takes_a_slot() {
    let mut h = with_job(needing_python());
    h.now_ms = 12_000;
    let seq = h.next_sequence("j");
    let outcome = h.ok(assign("j", "t", 1, "a1"));
    assert_eq!(
        outcome,
        Applied::TaskAssigned {
            task: attempt_ref("j", "t", 1),
            agent_id: "a1".into(),
            deadline_at_ms: 12_000 + TIMEOUT_MS,
        }
    );
    let task = h.task("j", "t");
    assert_eq!(task.state, TaskState::Assigned);
    assert_eq!((task.attempt, task.agent.as_deref()), (1, Some("a1")));
    assert_eq!(task.deadline_at_ms, Some(17_000));
    let attempt = AttemptRecord {
        attempt: 1,
        agent: "a1".into(),
        assigned_at_ms: 12_000,
        started_at_ms: None,
        ended_at_ms: None,
        outcome: None,
    };
    assert_eq!(task.attempts, [attempt]);
    assert_eq!(h.agent("a1").running, BTreeSet::from([key("j", "t")]));
    assert_eq!(
        h.state.agents.tasks_of("a1"),
        Some(&BTreeSet::from([key("j", "t")]))
    );
    assert_eq!(
        h.state
            .agents
            .load("a1")
            .map(|l| (l.running, l.max_concurrent)),
        Some((1, 2))
    );
    assert_eq!(
        (h.job("j").state, h.job("j").started_at_ms),
        (JobState::Running, Some(12_000))
    );
    let assigned = JobEventKind::TaskAssigned {
        task_id: "t".into(),
        agent: "a1".into(),
        attempt: 1,
    };
    assert_eq!(h.events_from("j", seq), [assigned]);
    let deadlines: Vec<(u64, AttemptRef)> = h.state.jobs.attempt_deadlines().collect();
    assert_eq!(deadlines, [(17_000, attempt_ref("j", "t", 1))]);
    assert_eq!(
        h.state.jobs.ready_tasks(h.now_ms).count(),
        1,
        "only u is left ready"
    );
}

#[test]
fn start_moves_to_running_once() {
    let mut h = with_job(needing_python());
    h.ok(assign("j", "t", 1, "a1"));
    h.now_ms += 10;
    assert_eq!(h.ok(start("j", "t", 1, "a1")), Applied::Done);
    let task = h.task("j", "t");
    assert_eq!(
        (task.state, task.attempts[0].started_at_ms),
        (TaskState::Running, Some(START_MS + 10))
    );
    let events = h.job("j").events.len();
    assert_eq!(h.ok(start("j", "t", 1, "a1")), Applied::Done);
    assert_eq!(
        h.job("j").events.len(),
        events,
        "a repeated start records nothing"
    );
}

#[test]
fn invalid_assignments_are_rejected_and_change_nothing() {
    let mut h = with_job(needing_python());
    h.ok(register("plain", &[], 1));
    h.ok(register("busy", &["python"], 1));
    h.ok(assign("j", "u", 1, "busy"));
    h.ok(register("gone", &["python"], 1));
    h.ok(Command::AgentDisconnected {
        agent_id: "gone".into(),
        session_id: "gone-s1".into(),
    });
    h.ok(register("drained", &["python"], 1));
    h.ok(Command::DrainAgent {
        agent_id: "drained".into(),
    });
    let cases = [
        (
            assign("j", "t", 2, "a1"),
            "job 'j': task 't' attempt 2, expected 1",
        ),
        (
            assign("j", "t", 1, "plain"),
            "agent 'plain' does not offer capability 'python'",
        ),
        (
            assign("j", "t", 1, "busy"),
            "agent 'busy' already runs 1 tasks, its limit",
        ),
        (
            assign("j", "t", 1, "gone"),
            "agent 'gone' is Disconnected { since_ms: 10000 }",
        ),
        (
            assign("j", "t", 1, "drained"),
            "agent 'drained' is draining",
        ),
        (
            assign("j", "t", 1, "nobody"),
            "agent 'nobody' is not registered",
        ),
        (
            assign("j", "p", 1, "a1"),
            "job 'j': task 'p' is Pending, not Ready",
        ),
        (
            assign("j", "u", 2, "a1"),
            "job 'j': task 'u' is Assigned, not Ready",
        ),
        (assign("j", "zz", 1, "a1"), "job 'j': task 'zz' not found"),
        (assign("k", "t", 1, "a1"), "job 'k' not found"),
    ];
    for (command, message) in cases {
        assert_eq!(h.rejected(command).to_string(), message);
    }
    assert_eq!(
        h.agent("gone").status,
        AgentStatus::Disconnected { since_ms: START_MS }
    );
}
