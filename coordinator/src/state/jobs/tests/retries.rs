//! Failed, timed-out and lost attempts retry with exponential backoff until the policy is
//! exhausted; then the task is dead-lettered (or timed out, or failed).

use super::*;

#[test]
fn backoff_grows_by_the_multiplier_up_to_the_cap() {
    let policy = RetryPolicy {
        max_attempts: 10,
        initial_backoff_ms: 1_000,
        max_backoff_ms: 5_000,
        multiplier: 2.0,
    };
    let delays: Vec<u64> = (1..=6).map(|attempt| policy.backoff_ms(attempt)).collect();
    assert_eq!(delays, [1_000, 2_000, 4_000, 5_000, 5_000, 5_000]);
    let flat = RetryPolicy {
        multiplier: 1.0,
        ..policy
    };
    assert_eq!(flat.backoff_ms(9), 1_000);
}

#[test]
fn retries_back_off_exactly_then_dead_letter() {
    let mut h = with_job(spec(vec![task("t", &[]), task("u", &["t"])]));
    run(&mut h, "t", 1, "a1");
    h.now_ms = 20_000;
    let outcome = h.ok(fail("j", "t", 1, "a1", true));
    let end = AttemptEnd {
        task: attempt_ref("j", "t", 1),
        agent_id: "a1".into(),
        state: TaskState::Ready,
        retry_at_ms: Some(21_000),
    };
    assert_eq!(
        outcome,
        Applied::AttemptEnded {
            end,
            effects: Effects::default()
        }
    );
    let task = h.task("j", "t");
    assert_eq!(
        (
            task.not_before_ms,
            task.failed_attempts,
            task.error.as_deref()
        ),
        (21_000, 1, Some("boom"))
    );
    assert_eq!(h.agent("a1").tasks_failed, 1);

    h.now_ms = 20_999;
    assert_eq!(
        h.state.jobs.ready_tasks(h.now_ms).count(),
        0,
        "still backing off"
    );
    let rejection = h.rejected(assign("j", "t", 2, "a1"));
    assert_eq!(
        rejection.to_string(),
        "job 'j': task 't' may not be assigned before 21000"
    );

    h.now_ms = 21_000;
    assert_eq!(h.state.jobs.ready_tasks(h.now_ms).count(), 1);
    run(&mut h, "t", 2, "a2");
    h.now_ms = 30_000;
    h.ok(fail("j", "t", 2, "a2", true));
    assert_eq!(h.task("j", "t").not_before_ms, 32_000);

    h.now_ms = 32_000;
    run(&mut h, "t", 3, "a1");
    h.now_ms = 40_000;
    let seq = h.next_sequence("j");
    let outcome = h.ok(fail("j", "t", 3, "a1", true));
    let Applied::AttemptEnded { end, effects } = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(
        (end.state, end.retry_at_ms),
        (TaskState::DeadLettered, None)
    );
    assert_eq!(
        effects.jobs_finished,
        [crate::state::effects::JobFinished {
            job_id: "j".into(),
            state: JobState::Failed
        }]
    );
    assert_eq!(
        h.events_from("j", seq),
        [
            JobEventKind::TaskFailed {
                task_id: "t".into(),
                attempt: 3,
                error: "boom".into(),
                will_retry: false,
                retry_at_ms: None,
            },
            JobEventKind::TaskDeadLettered {
                task_id: "t".into()
            },
            JobEventKind::TaskSkipped {
                task_id: "u".into(),
                dependency: "t".into()
            },
            JobEventKind::JobCompleted {
                state: JobState::Failed
            },
        ]
    );
    let task = h.task("j", "t");
    assert_eq!(
        (
            task.failed_attempts,
            task.attempts.len(),
            task.finished_at_ms
        ),
        (3, 3, Some(40_000))
    );
    assert_eq!(
        h.job("j").state_reason.as_deref(),
        Some("task 't' ended DeadLettered")
    );
}

#[test]
fn a_non_retryable_failure_fails_the_task_at_once() {
    let mut h = with_job(spec(vec![task("t", &[])]));
    run(&mut h, "t", 1, "a1");
    let Applied::AttemptEnded { end, .. } = h.ok(fail("j", "t", 1, "a1", false)) else {
        panic!()
    };
    assert_eq!((end.state, end.retry_at_ms), (TaskState::Failed, None));
    assert_eq!(
        h.task("j", "t").failed_attempts,
        0,
        "non-retryable failures are not counted"
    );
    assert_eq!(h.job("j").state, JobState::Failed);
}

#[test]
fn a_timeout_is_retried_and_the_last_one_is_terminal() {
    let mut job = spec(vec![task("t", &[])]);
    job.tasks[0].retry.max_attempts = 2;
    let mut h = with_job(job);
    run(&mut h, "t", 1, "a1");
    let deadline = START_MS + TIMEOUT_MS;
    h.now_ms = deadline - 1;
    assert_eq!(h.state.jobs.timed_out(h.now_ms).count(), 0);
    let rejection = h.rejected(time_out("j", "t", 1));
    assert_eq!(
        rejection.to_string(),
        format!("job 'j': task 't' times out at {deadline}, not before")
    );
    h.now_ms = deadline;
    assert_eq!(
        h.state.jobs.timed_out(h.now_ms).collect::<Vec<_>>(),
        [attempt_ref("j", "t", 1)]
    );
    let seq = h.next_sequence("j");
    h.ok(time_out("j", "t", 1));
    let timed_out = JobEventKind::TaskTimedOut {
        task_id: "t".into(),
        attempt: 1,
        will_retry: true,
        retry_at_ms: Some(deadline + 1_000),
    };
    let retry = JobEventKind::TaskRetryScheduled {
        task_id: "t".into(),
        failed_attempts: 1,
        backoff_ms: 1_000,
        retry_at_ms: deadline + 1_000,
    };
    assert_eq!(h.events_from("j", seq), [timed_out, retry]);
    let rejection = h.rejected(time_out("j", "t", 1));
    assert_eq!(
        rejection.to_string(),
        "job 'j': task 't' attempt 1 is not in progress (current attempt 1, Ready)"
    );
    h.now_ms = deadline + 1_000;
    run(&mut h, "t", 2, "a2");
    h.now_ms += TIMEOUT_MS;
    let Applied::AttemptEnded { end, .. } = h.ok(time_out("j", "t", 2)) else {
        panic!()
    };
    assert_eq!(end.state, TaskState::TimedOut);
    assert_eq!(
        h.task("j", "t").attempts[1].outcome,
        Some(AttemptOutcome::TimedOut)
    );
    assert_eq!(h.job("j").state, JobState::Failed);
}

#[test]
fn a_fallback_takes_over_once_the_attempts_are_used_up_then_the_task_ends() {
    use crate::state::jobs::Fallback;
    let mut job = spec(vec![task("t", &[])]);
    job.tasks[0].retry.max_attempts = 1;
    job.tasks[0].fallback = Some(Fallback {
        kind: "cheap-model".into(),
        strategy: Some(Strategy::LeastLoaded),
        required_capabilities: ["cpu".to_owned()].into(),
        max_attempts: 2,
    });
    let mut h = with_job(job);
    h.ok(register("c1", &["cpu"], 2));
    run(&mut h, "t", 1, "a1");
    let seq = h.next_sequence("j");
    h.ok(fail("j", "t", 1, "a1", false));
    let task = h.task("j", "t");
    assert_eq!((task.state, task.failed_attempts), (TaskState::Ready, 0));
    let spec = h.job("j").task_spec("t").unwrap().clone();
    assert_eq!(spec.kind, "cheap-model");
    assert_eq!(spec.strategy, Strategy::LeastLoaded);
    assert_eq!(spec.required_capabilities, ["cpu".to_owned()].into());
    assert_eq!((spec.retry.max_attempts, spec.fallback), (2, None));
    assert!(h
        .events_from("j", seq)
        .contains(&JobEventKind::FallbackActivated {
            task_id: "t".into(),
            kind: "cheap-model".into(),
            strategy: Strategy::LeastLoaded,
        }));
    // The python agent no longer qualifies; the cpu agent does.
    assert!(matches!(
        h.rejected(assign("j", "t", 2, "a1")),
        Rejection::MissingCapability { .. }
    ));
    run(&mut h, "t", 2, "c1");
    h.ok(fail("j", "t", 2, "c1", true));
    assert_eq!(
        h.task("j", "t").state,
        TaskState::Ready,
        "one more fallback attempt"
    );
    h.now_ms += 60_000;
    run(&mut h, "t", 3, "c1");
    h.ok(fail("j", "t", 3, "c1", true));
    assert_eq!(h.task("j", "t").state, TaskState::DeadLettered);
    assert_eq!(h.job("j").state, JobState::Failed);
}
