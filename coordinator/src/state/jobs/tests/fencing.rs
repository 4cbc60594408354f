//! Reports are fenced by attempt and agent: stale ones are refused and recorded; a repeat of a
//! report already applied changes nothing; a task never counts as done twice.

use super::*;

/// Attempt 1 of `t` on a1 lost to a retryable failure; attempt 2 runs on a2.
fn retried() -> Harness {
    let mut h = with_job(spec(vec![task("t", &[])]));
    run(&mut h, "t", 1, "a1");
    h.ok(fail("j", "t", 1, "a1", true));
    h.now_ms += 1_000;
    run(&mut h, "t", 2, "a2");
    h
}

#[test]
fn a_result_for_an_old_attempt_is_refused_and_recorded() {
    let mut h = retried();
    let before = h.job("j").clone();
    let sequence = h.next_sequence("j");
    let outcome = h.ok(succeed("j", "t", 1, "a1", "late"));
    let rejection = Rejection::StaleAttempt {
        job_id: "j".into(),
        task_id: "t".into(),
        attempt: 1,
        agent_id: "a1".into(),
        current: "current attempt 2 by agent 'a2', Running".into(),
    };
    assert_eq!(
        outcome,
        Applied::StaleReport {
            rejection: rejection.clone(),
            sequence
        }
    );
    assert_eq!(outcome.refusal(), Some(&rejection));
    assert_eq!(
        rejection.to_string(),
        "job 'j': task 't' attempt 1 by agent 'a1' is stale (current attempt 2 by agent 'a2', Running)"
    );
    let stale = JobEventKind::StaleResultRejected {
        task_id: "t".into(),
        attempt: 1,
        agent: "a1".into(),
    };
    assert_eq!(h.events_from("j", sequence), [stale]);
    let mut job = h.job("j").clone();
    job.events.pop();
    assert_eq!(job, before, "only the event was added");
}

#[test]
fn a_result_from_another_agent_is_refused() {
    let mut h = retried();
    let outcome = h.ok(succeed("j", "t", 2, "a1", "not mine"));
    assert!(
        matches!(outcome.refusal(), Some(Rejection::StaleAttempt { agent_id, .. }) if agent_id == "a1")
    );
    assert_eq!(h.task("j", "t").state, TaskState::Running);
    let outcome = h.ok(start("j", "t", 2, "a1"));
    assert!(
        outcome.refusal().is_some(),
        "a start by another agent is refused too"
    );
}

#[test]
fn a_late_start_or_a_repeated_result_changes_nothing() {
    let mut h = retried();
    let before = h.state.clone();
    // Attempt 1 already started and failed; a1 re-sends both reports.
    assert_eq!(h.ok(start("j", "t", 1, "a1")), Applied::Done);
    assert_eq!(h.ok(fail("j", "t", 1, "a1", true)), Applied::Done);
    let mut after = h.state.clone();
    after.commands_applied = before.commands_applied;
    assert_eq!(
        after, before,
        "repeats change nothing, not even the history"
    );
}

#[test]
fn a_result_before_its_start_report_counts_and_the_late_start_changes_nothing() {
    let mut h = with_job(spec(vec![task("t", &[]), task("u", &[])]));
    h.ok(assign("j", "t", 1, "a1"));
    h.ok(succeed("j", "t", 1, "a1", "quick"));
    assert_eq!(h.task("j", "t").state, TaskState::Succeeded);
    assert_eq!(h.ok(start("j", "t", 1, "a1")), Applied::Done);
    assert_eq!(h.task("j", "t").state, TaskState::Succeeded);
}

#[test]
fn a_task_never_counts_as_done_twice() {
    let mut h = with_job(spec(vec![task("t", &[]), task("u", &[])]));
    run(&mut h, "t", 1, "a1");
    h.ok(succeed("j", "t", 1, "a1", "first"));
    let outcome = h.ok(succeed("j", "t", 1, "a1", "second"));
    assert_eq!(
        outcome,
        Applied::Done,
        "a re-sent result is acknowledged, not counted"
    );
    let outcome = h.ok(fail("j", "t", 1, "a1", true));
    assert!(outcome.refusal().is_some());
    let task = h.task("j", "t");
    assert_eq!(
        (task.state, task.output.as_deref()),
        (TaskState::Succeeded, Some(&b"first"[..]))
    );
    assert_eq!(h.job("j").succeeded, 1);
    assert_eq!(h.agent("a1").tasks_succeeded, 1);
    let succeeded = h.job("j").events.iter();
    let succeeded = succeeded.filter(|e| matches!(e.kind, JobEventKind::TaskSucceeded { .. }));
    assert_eq!(succeeded.count(), 1);
}

#[test]
fn reports_on_a_finished_job_are_rejected_without_a_record() {
    let mut h = with_job(spec(vec![task("t", &[])]));
    run(&mut h, "t", 1, "a1");
    h.ok(succeed("j", "t", 1, "a1", "done"));
    assert_eq!(h.ok(succeed("j", "t", 1, "a1", "done")), Applied::Done);
    let rejection = h.rejected(fail("j", "t", 1, "a1", false));
    assert_eq!(
        rejection,
        Rejection::JobFinished {
            job_id: "j".into(),
            state: JobState::Succeeded
        }
    );
}
