//! Compensation: after a failure or a cancellation, the compensation tasks of the tasks that
//! succeeded run one by one, most recent first, with the output of the task they undo; then
//! the job ends as it was going to.

use super::*;

/// book ─► pay ─► ship; book and pay have undo tasks; ship fails at once.
fn saga() -> JobSpec {
    let mut book = task("book", &[]);
    book.compensation_task_id = "unbook".into();
    let mut pay = task("pay", &["book"]);
    pay.compensation_task_id = "refund".into();
    let mut ship = task("ship", &["pay"]);
    ship.retry.max_attempts = 1;
    spec(vec![
        book,
        pay,
        ship,
        task("unbook", &[]),
        task("refund", &[]),
    ])
}

fn ready(h: &Harness) -> Vec<String> {
    let ready = h.state.jobs.ready_tasks(u64::MAX);
    ready.map(|r| r.key().task_id).collect()
}

#[test]
fn compensation_tasks_never_run_when_the_job_succeeds() {
    let mut h = with_job(saga());
    assert_eq!(ready(&h), ["book"]);
    for t in ["book", "pay", "ship"] {
        run(&mut h, t, 1, "a1");
        h.ok(succeed("j", t, 1, "a1", t));
    }
    let job = h.job("j");
    assert_eq!(job.state, JobState::Succeeded);
    assert_eq!(job.task_state("unbook"), Some(TaskState::Bypassed));
    assert_eq!(job.task_state("refund"), Some(TaskState::Bypassed));
}

#[test]
fn a_failure_runs_the_compensations_in_reverse_completion_order() {
    let mut h = with_job(saga());
    run(&mut h, "book", 1, "a1");
    h.ok(succeed("j", "book", 1, "a1", "booking-7"));
    run(&mut h, "pay", 1, "a1");
    h.ok(succeed("j", "pay", 1, "a1", "payment-9"));
    run(&mut h, "ship", 1, "a2");
    h.ok(fail("j", "ship", 1, "a2", false));
    let job = h.job("j");
    assert_eq!(job.state, JobState::Compensating);
    assert!(job.events.iter().any(|e| e.kind
        == JobEventKind::CompensationStarted {
            reason: "task 'ship' ended Failed".into(),
            task_ids: vec!["refund".into(), "unbook".into()],
        }));
    assert_eq!(ready(&h), ["refund"]);
    let outputs = h.state.jobs.dependency_outputs("j", "refund").unwrap();
    assert_eq!(
        outputs,
        BTreeMap::from([("pay".into(), b"payment-9".to_vec())])
    );
    run(&mut h, "refund", 1, "a1");
    h.ok(succeed("j", "refund", 1, "a1", "refunded"));
    assert_eq!(ready(&h), ["unbook"]);
    run(&mut h, "unbook", 1, "a1");
    h.ok(succeed("j", "unbook", 1, "a1", "unbooked"));
    let job = h.job("j");
    assert_eq!(job.state, JobState::Failed);
    assert_eq!(
        job.state_reason.as_deref(),
        Some("task 'ship' ended Failed")
    );
}

#[test]
fn a_cancel_compensates_what_succeeded_and_a_failed_compensation_is_reported() {
    let mut h = with_job(saga());
    run(&mut h, "book", 1, "a1");
    h.ok(succeed("j", "book", 1, "a1", "booking-7"));
    run(&mut h, "pay", 1, "a2");
    h.ok(Command::CancelJob {
        job_id: "j".into(),
        reason: "customer changed their mind".into(),
    });
    assert_eq!(h.job("j").state, JobState::Compensating);
    assert_eq!(h.task("j", "pay").state, TaskState::Cancelled);
    assert!(h.agent("a2").running.is_empty());
    assert_eq!(ready(&h), ["unbook"]);
    run(&mut h, "unbook", 1, "a1");
    h.ok(fail("j", "unbook", 1, "a1", false));
    let job = h.job("j");
    assert_eq!(job.state, JobState::Cancelled);
    assert_eq!(
        job.state_reason.as_deref(),
        Some("customer changed their mind; compensation did not succeed for unbook")
    );
    assert_eq!(job.task_state("refund"), Some(TaskState::Cancelled));
}

#[test]
fn a_failure_before_any_side_effect_ends_the_job_without_compensating() {
    let mut spec = saga();
    spec.tasks[0].retry.max_attempts = 1;
    let mut h = with_job(spec);
    run(&mut h, "book", 1, "a1");
    h.ok(fail("j", "book", 1, "a1", false));
    assert_eq!(h.job("j").state, JobState::Failed);
    assert_eq!(h.job("j").task_state("unbook"), Some(TaskState::Cancelled));
}

#[test]
fn compensation_rules_name_the_field() {
    type Change = fn(&mut JobSpec);
    let cases: [(Change, &str); 5] = [
        (
            |s| s.tasks[0].compensation_task_id = "nope".into(),
            "tasks[0].compensation_task_id: unknown task 'nope'",
        ),
        (
            |s| s.tasks[1].compensation_task_id = "unbook".into(),
            "tasks[1].compensation_task_id: 'unbook' already compensates another task",
        ),
        (
            |s| s.tasks[3].depends_on = vec!["book".into()],
            "tasks[0].compensation_task_id: 'unbook' has dependencies; a compensation task \
             receives the output of the task it undoes instead",
        ),
        (
            |s| {
                s.tasks[3].fan_out = Some(crate::state::jobs::FanOut {
                    source: crate::state::jobs::FanOutSource::Items(Vec::new()),
                    parallelism: 0,
                })
            },
            "tasks[0].compensation_task_id: 'unbook' is a fan-out or a child job; a compensation \
             task runs on an agent",
        ),
        (
            |s| s.tasks[2].depends_on.push("refund".into()),
            "tasks[2].depends_on[1]: 'refund' is a compensation task, which runs only on failure",
        ),
    ];
    for (change, expected) in cases {
        let mut spec = saga();
        change(&mut spec);
        assert_eq!(validate(&spec).unwrap_err().to_string(), expected);
    }
}
