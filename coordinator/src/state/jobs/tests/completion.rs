//! Job completion under both criteria, and cancellation.

use super::*;
use crate::state::effects::{CancelAttempt, HeldAttempt, JobFinished};

fn finished(state: JobState) -> Vec<JobFinished> {
    vec![JobFinished {
        job_id: "j".into(),
        state,
    }]
}

fn cancel_of(task_id: &str, agent: &str, reason: &str) -> CancelAttempt {
    let held = HeldAttempt {
        task: attempt_ref("j", task_id, 1),
        agent_id: agent.into(),
    };
    CancelAttempt {
        held,
        reason: reason.into(),
    }
}

#[test]
fn all_tasks_succeeds_when_every_task_succeeded() {
    let mut h = with_job(spec(vec![task("a", &[]), task("b", &["a"])]));
    run(&mut h, "a", 1, "a1");
    h.ok(succeed("j", "a", 1, "a1", "x"));
    assert_eq!(h.job("j").state, JobState::Running);
    run(&mut h, "b", 1, "a1");
    h.now_ms = 50_000;
    let Applied::AttemptEnded { effects, .. } = h.ok(succeed("j", "b", 1, "a1", "y")) else {
        panic!()
    };
    assert_eq!(
        effects,
        Effects {
            jobs_finished: finished(JobState::Succeeded),
            ..Effects::default()
        }
    );
    let job = h.job("j");
    assert_eq!(
        (job.state, job.finished_at_ms, job.output.clone()),
        (JobState::Succeeded, Some(50_000), None)
    );
    let last = &job.events.last().unwrap().kind;
    assert_eq!(
        *last,
        JobEventKind::JobCompleted {
            state: JobState::Succeeded
        }
    );
    assert_eq!(h.agent("a1").tasks_succeeded, 2);
}

#[test]
fn all_tasks_fails_on_a_terminal_failure_and_cancels_the_rest() {
    let mut h = with_job(spec(vec![
        task("a", &[]),
        task("b", &[]),
        task("c", &["b"]),
    ]));
    run(&mut h, "a", 1, "a1");
    run(&mut h, "b", 1, "a2");
    let Applied::AttemptEnded { effects, .. } = h.ok(fail("j", "a", 1, "a1", false)) else {
        panic!()
    };
    let expected = Effects {
        cancelled: vec![cancel_of("b", "a2", "job failed")],
        jobs_finished: finished(JobState::Failed),
        ..Effects::default()
    };
    assert_eq!(effects, expected);
    assert_eq!(h.task("j", "b").state, TaskState::Cancelled);
    assert_eq!(
        h.task("j", "b").attempts[0].outcome,
        Some(AttemptOutcome::Cancelled)
    );
    assert_eq!(h.task("j", "c").state, TaskState::Cancelled);
    assert!(h.agent("a2").running.is_empty());
    assert_eq!(
        h.job("j").state_reason.as_deref(),
        Some("task 'a' ended Failed")
    );
}

#[test]
fn goal_task_success_ends_the_job_with_its_output() {
    let job = goal_spec("g", vec![task("a", &[]), task("g", &[]), task("c", &["a"])]);
    let mut h = with_job(job);
    run(&mut h, "a", 1, "a1");
    run(&mut h, "g", 1, "a2");
    let Applied::AttemptEnded { effects, .. } = h.ok(succeed("j", "g", 1, "a2", "answer")) else {
        panic!()
    };
    let expected = Effects {
        cancelled: vec![cancel_of("a", "a1", "goal reached")],
        jobs_finished: finished(JobState::Succeeded),
        ..Effects::default()
    };
    assert_eq!(effects, expected);
    let job = h.job("j");
    assert_eq!(
        (job.state, job.output.as_deref()),
        (JobState::Succeeded, Some(&b"answer"[..]))
    );
    assert_eq!(h.task("j", "c").state, TaskState::Cancelled);
}

#[test]
fn goal_task_failure_of_another_task_does_not_end_the_job() {
    let mut h = with_job(goal_spec("g", vec![task("a", &[]), task("g", &[])]));
    run(&mut h, "a", 1, "a1");
    h.ok(fail("j", "a", 1, "a1", false));
    assert_eq!(h.job("j").state, JobState::Running);
    run(&mut h, "g", 1, "a1");
    h.ok(succeed("j", "g", 1, "a1", "fine"));
    assert_eq!(h.job("j").state, JobState::Succeeded);
}

#[test]
fn goal_task_job_fails_once_the_goal_can_no_longer_succeed() {
    let mut job = goal_spec(
        "g",
        vec![task("a", &[]), task("g", &["a"]), task("side", &[])],
    );
    job.tasks[0].retry.max_attempts = 1;
    let mut h = with_job(job);
    run(&mut h, "a", 1, "a1");
    h.ok(fail("j", "a", 1, "a1", true));
    assert_eq!(h.task("j", "a").state, TaskState::DeadLettered);
    assert_eq!(h.task("j", "g").state, TaskState::Skipped);
    assert_eq!(
        h.task("j", "g").error.as_deref(),
        Some("dependency 'a' did not succeed")
    );
    assert_eq!(h.task("j", "side").state, TaskState::Cancelled);
    let job = h.job("j");
    assert_eq!(
        (job.state, job.state_reason.as_deref()),
        (JobState::Failed, Some("goal task 'g' ended Skipped"))
    );
}

#[test]
fn cancel_lists_running_attempts_and_ends_the_history() {
    let mut h = with_job(spec(vec![task("a", &[]), task("b", &["a"])]));
    h.ok(assign("j", "a", 1, "a1"));
    let seq = h.next_sequence("j");
    let cancel = Command::CancelJob {
        job_id: "j".into(),
        reason: "operator".into(),
    };
    let outcome = h.ok(cancel.clone());
    let expected = Effects {
        cancelled: vec![cancel_of("a", "a1", "job cancelled")],
        jobs_finished: finished(JobState::Cancelled),
        ..Effects::default()
    };
    assert_eq!(outcome, Applied::JobCancelled(expected));
    assert_eq!(
        h.events_from("j", seq),
        [
            JobEventKind::JobCancelled {
                reason: "operator".into()
            },
            JobEventKind::JobCompleted {
                state: JobState::Cancelled
            },
        ]
    );
    assert_eq!(h.task("j", "b").state, TaskState::Cancelled);
    assert_eq!(h.job("j").state_reason.as_deref(), Some("operator"));
    let rejection = h.rejected(cancel);
    assert_eq!(
        rejection.to_string(),
        "job 'j' already finished (Cancelled)"
    );
}

#[test]
fn a_job_past_its_own_timeout_fails_and_its_open_attempts_are_cancelled() {
    let mut job = spec(vec![task("t", &[]), task("u", &["t"])]);
    job.timeout_ms = 5_000;
    let mut h = with_job(job);
    let deadline = h.job("j").created_at_ms + 5_000;
    run(&mut h, "t", 1, "a1");
    assert_eq!(h.state.jobs.timed_out_jobs(deadline - 1).count(), 0);
    h.now_ms = deadline - 1;
    let early = h.rejected(Command::TimeOutJob { job_id: "j".into() });
    assert_eq!(
        early.to_string(),
        format!("job 'j': times out at {deadline}, not before")
    );

    h.now_ms = deadline;
    assert_eq!(
        h.state.jobs.timed_out_jobs(deadline).collect::<Vec<_>>(),
        ["j"]
    );
    let Applied::JobCancelled(effects) = h.ok(Command::TimeOutJob { job_id: "j".into() }) else {
        panic!("expected the job's attempts to be cancelled")
    };
    let cancelled: Vec<(&str, &str)> = effects
        .cancelled
        .iter()
        .map(|c| (c.held.task.task_id.as_str(), c.held.agent_id.as_str()))
        .collect();
    assert_eq!(cancelled, [("t", "a1")]);
    assert_eq!(effects.jobs_finished[0].state, JobState::Failed);
    let job = h.job("j");
    assert_eq!(
        (job.state, job.state_reason.as_deref()),
        (
            JobState::Failed,
            Some("the job's timeout of 5000 ms passed")
        )
    );
    assert_eq!(h.task("j", "t").state, TaskState::Cancelled);
    assert_eq!(h.task("j", "u").state, TaskState::Cancelled);
    assert!(h.agent("a1").running.is_empty(), "the slot is released");
    assert_eq!(h.state.jobs.timed_out_jobs(u64::MAX).count(), 0);
    let again = h.rejected(Command::TimeOutJob { job_id: "j".into() });
    assert!(matches!(again, Rejection::JobFinished { .. }), "{again}");
}

#[test]
fn a_job_without_a_timeout_is_never_timed_out() {
    let mut h = with_job(spec(vec![task("t", &[])]));
    h.now_ms = u64::MAX / 2;
    assert_eq!(h.state.jobs.timed_out_jobs(h.now_ms).count(), 0);
    let rejection = h.rejected(Command::TimeOutJob { job_id: "j".into() });
    assert_eq!(rejection.to_string(), "job 'j': has no timeout");
}
