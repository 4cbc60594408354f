//! Tasks become ready when every dependency succeeded; ready tasks are ordered for scheduling.

use super::*;

fn diamond() -> JobSpec {
    spec(vec![
        task("a", &[]),
        task("b", &["a"]),
        task("c", &["a"]),
        task("d", &["b", "c"]),
    ])
}

#[test]
fn submission_readies_the_roots_only() {
    let mut h = Harness::new();
    let outcome = h.ok(submit("j", diamond()));
    assert_eq!(
        outcome,
        Applied::JobSubmitted {
            job_id: "j".into(),
            ready: 1
        }
    );
    let job = h.job("j");
    assert_eq!(job.state, JobState::Pending);
    assert_eq!(job.created_at_ms, START_MS);
    let states: Vec<TaskState> = job.tasks_in_order().map(|(_, _, t)| t.state).collect();
    use TaskState::{Pending, Ready};
    assert_eq!(states, [Ready, Pending, Pending, Pending]);
    assert_eq!(
        h.events_from("j", 1),
        [
            JobEventKind::JobSubmitted,
            JobEventKind::TaskReady {
                task_id: "a".into()
            }
        ]
    );
    assert_eq!(job.events[1].log_index, 1);
    assert_eq!(h.task("j", "a").ready_at_ms, Some(START_MS));
}

#[test]
fn a_task_is_ready_once_all_its_dependencies_succeeded() {
    let mut h = with_job(diamond());
    run(&mut h, "a", 1, "a1");
    h.ok(succeed("j", "a", 1, "a1", "out-a"));
    assert_eq!(h.task("j", "b").state, TaskState::Ready);
    assert_eq!(h.task("j", "c").state, TaskState::Ready);
    run(&mut h, "b", 1, "a1");
    h.ok(succeed("j", "b", 1, "a1", "out-b"));
    assert_eq!(h.task("j", "d").state, TaskState::Pending);
    run(&mut h, "c", 1, "a2");
    let seq = h.next_sequence("j");
    h.ok(succeed("j", "c", 1, "a2", "out-c"));
    assert_eq!(h.task("j", "d").state, TaskState::Ready);
    assert_eq!(
        h.events_from("j", seq),
        [
            JobEventKind::TaskSucceeded {
                task_id: "c".into(),
                attempt: 1
            },
            JobEventKind::TaskReady {
                task_id: "d".into()
            },
        ]
    );
    let outputs = h.state.jobs.dependency_outputs("j", "d").unwrap();
    let expected = BTreeMap::from([
        ("b".to_string(), b"out-b".to_vec()),
        ("c".to_string(), b"out-c".to_vec()),
    ]);
    assert_eq!(outputs, expected);
}

#[test]
fn ready_tasks_come_by_priority_then_submission_order() {
    let mut h = Harness::new();
    h.ok(submit("low", spec(vec![task("x", &[]), task("y", &[])])));
    let mut urgent = spec(vec![task("z", &[]), task("w", &[])]);
    urgent.priority = 5;
    h.ok(submit("high", urgent));
    h.ok(submit("low2", spec(vec![task("v", &[])])));
    let order: Vec<(String, String)> = h
        .state
        .jobs
        .ready_tasks(h.now_ms)
        .map(|r| (r.job.id.clone(), r.spec.id.clone()))
        .collect();
    let expected = [
        ("high", "z"),
        ("high", "w"),
        ("low", "x"),
        ("low", "y"),
        ("low2", "v"),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(j, t)| (j.to_string(), t.to_string()))
        .collect();
    assert_eq!(order, expected);
    let first = h.state.jobs.ready_tasks(h.now_ms).next().unwrap();
    assert_eq!(first.next_attempt(), 1);
}
