//! AddSubtasks: fenced, validated against the job's tasks, and the parent may wait for them
//! with its timeout suspended.

use super::*;
use crate::state::effects::HeldAttempt;

fn add(subtasks: Vec<TaskSpec>, wait: bool) -> Command {
    add_as("a1", 1, subtasks, wait)
}

fn add_as(agent: &str, attempt: u32, subtasks: Vec<TaskSpec>, wait: bool) -> Command {
    Command::AddSubtasks {
        job_id: "j".into(),
        parent_task_id: "p".into(),
        attempt,
        agent_id: agent.into(),
        subtasks,
        wait,
    }
}

/// Job `j` with root `r` (succeeded) and `p` (depends on r) running on a1 as attempt 1.
fn parent_running() -> Harness {
    let mut h = with_job(spec(vec![
        task("r", &[]),
        task("p", &["r"]),
        task("after", &["p"]),
    ]));
    run(&mut h, "r", 1, "a2");
    h.ok(succeed("j", "r", 1, "a2", "root"));
    run(&mut h, "p", 1, "a1");
    h
}

#[test]
fn a_waiting_parent_is_released_with_its_deadline_pushed_back() {
    let mut h = parent_running();
    let deadline = START_MS + TIMEOUT_MS;
    h.now_ms = START_MS + 1_000;
    let seq = h.next_sequence("j");
    let outcome = h.ok(add(vec![task("s1", &["r"]), task("s2", &["s1"])], true));
    let ids = vec!["s1".to_string(), "s2".to_string()];
    let expected = Applied::SubtasksAdded {
        job_id: "j".into(),
        ids: ids.clone(),
        waiting: true,
        effects: Effects::default(),
    };
    assert_eq!(outcome, expected);
    assert_eq!(
        h.events_from("j", seq),
        [
            JobEventKind::SubtasksAdded {
                parent_task_id: "p".into(),
                ids
            },
            JobEventKind::TaskReady {
                task_id: "s1".into()
            },
        ]
    );
    let parent = h.task("j", "p");
    assert_eq!(
        parent.waiting_for,
        BTreeSet::from(["s1".to_string(), "s2".to_string()])
    );
    assert_eq!(
        (parent.waiting_since_ms, parent.deadline_at_ms),
        (Some(START_MS + 1_000), Some(deadline))
    );
    assert_eq!(h.task("j", "s2").parent.as_deref(), Some("p"));
    assert_eq!(
        h.state.jobs.timed_out(u64::MAX).count(),
        0,
        "the parent's timeout is suspended"
    );
    h.now_ms = deadline + 100;
    let rejection = h.rejected(time_out("j", "p", 1));
    assert_eq!(
        rejection.to_string(),
        "job 'j': task 'p' is waiting for subtasks"
    );

    run(&mut h, "s1", 1, "a2");
    h.ok(succeed("j", "s1", 1, "a2", "one"));
    run(&mut h, "s2", 1, "a2");
    h.now_ms = START_MS + 9_000;
    let Applied::AttemptEnded { effects, .. } = h.ok(succeed("j", "s2", 1, "a2", "two")) else {
        panic!()
    };
    let held = HeldAttempt {
        task: attempt_ref("j", "p", 1),
        agent_id: "a1".into(),
    };
    assert_eq!(effects.subtasks_completed, [held]);
    let parent = h.task("j", "p");
    assert_eq!(
        (parent.waiting_since_ms, parent.deadline_at_ms),
        (None, Some(deadline + 8_000))
    );
    let last = h.job("j").events.last().unwrap().kind.clone();
    assert_eq!(
        last,
        JobEventKind::SubtasksCompleted {
            parent_task_id: "p".into()
        }
    );
    h.ok(succeed("j", "p", 1, "a1", "parent"));
    assert_eq!(h.task("j", "after").state, TaskState::Ready);
}

#[test]
fn subtasks_are_validated_against_the_existing_tasks() {
    let mut h = parent_running();
    let cases = [
        (vec![task("x", &["y"]), task("y", &["x"])], false, "subtasks: dependency cycle x -> y -> x"),
        (vec![task("r", &[])], false, "subtasks[0].task_id: duplicate id 'r'"),
        (vec![task("x", &[]), task("x", &[])], false, "subtasks[1].task_id: duplicate id 'x'"),
        (vec![task("x", &["nope"])], false, "subtasks[0].depends_on[0]: unknown task 'nope'"),
        (vec![], false, "subtasks: at least one subtask is needed"),
        (
            vec![task("x", &["after"])],
            true,
            "subtasks[0].depends_on[0]: 'after' waits for parent 'p', which would wait for this subtask",
        ),
    ];
    for (subtasks, wait, message) in cases {
        assert_eq!(h.rejected(add(subtasks, wait)).to_string(), message);
    }
    let outcome = h.ok(add(vec![task("x", &["after"])], false));
    assert!(matches!(
        outcome,
        Applied::SubtasksAdded { waiting: false, .. }
    ));
    assert_eq!(h.task("j", "x").state, TaskState::Pending);
}

#[test]
fn subtasks_from_a_stale_attempt_are_refused_and_recorded() {
    let mut h = parent_running();
    let outcome = h.ok(add_as("a2", 1, vec![task("x", &[])], true));
    assert!(outcome.refusal().is_some());
    assert!(!h.job("j").tasks.contains_key("x"));
    let last = h.job("j").events.last().unwrap().kind.clone();
    assert_eq!(
        last,
        JobEventKind::StaleResultRejected {
            task_id: "p".into(),
            attempt: 1,
            agent: "a2".into()
        }
    );
}

#[test]
fn subtasks_needing_a_capability_no_live_agent_offers_are_refused() {
    let mut h = parent_running();
    let mut gpu = task("g", &[]);
    gpu.required_capabilities = ["gpu".to_owned()].into();
    let rejection = h.rejected(add(vec![gpu.clone()], false));
    assert_eq!(
        rejection,
        Rejection::InvalidSpec(SpecError::new(
            "subtasks[0].required_capabilities",
            "no agent offers 'gpu'"
        ))
    );
    h.ok(register("a3", &["gpu"], 1));
    h.ok(add(vec![gpu], false));
    assert_eq!(h.task("j", "g").state, TaskState::Ready);
}
