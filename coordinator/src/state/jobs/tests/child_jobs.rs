//! Child jobs: a task that runs a whole job, succeeding with its output or failing with its
//! reason; cancelling the parent cancels the child (and the child's child).

use super::*;
use crate::state::jobs::{child_job_id, TaskRole};

/// parent job: prep ─► sub (child job: c1 ─► c2, goal c2) ─► after.
fn parent_spec(child: JobSpec) -> JobSpec {
    let mut sub = task("sub", &["prep"]);
    sub.kind = String::new();
    sub.child_job = Some(Box::new(child));
    spec(vec![task("prep", &[]), sub, task("after", &["sub"])])
}

fn child_spec() -> JobSpec {
    goal_spec("c2", vec![task("c1", &[]), task("c2", &["c1"])])
}

fn run_in(h: &mut Harness, job_id: &str, task_id: &str, agent_id: &str) {
    h.ok(assign(job_id, task_id, 1, agent_id));
    h.ok(start(job_id, task_id, 1, agent_id));
}

#[test]
fn a_child_job_starts_when_its_task_is_ready_and_its_output_flows_on() {
    let mut h = with_job(parent_spec(child_spec()));
    assert!(h.state.jobs.get("j/sub").is_none());
    run(&mut h, "prep", 1, "a1");
    h.ok(succeed("j", "prep", 1, "a1", "prepared"));
    let child = child_job_id("j", "sub");
    assert_eq!(child, "j/sub");
    assert_eq!(h.task("j", "sub").state, TaskState::Running);
    assert_eq!(
        h.task("j", "sub").role,
        TaskRole::ChildJob {
            child_job_id: Some(child.clone())
        }
    );
    let record = h.job(&child);
    assert_eq!(record.parent, Some(key("j", "sub")));
    assert_eq!(record.task_state("c1"), Some(TaskState::Ready));
    run_in(&mut h, &child, "c1", "a2");
    h.ok(succeed(&child, "c1", 1, "a2", "one"));
    run_in(&mut h, &child, "c2", "a2");
    h.ok(succeed(&child, "c2", 1, "a2", "child result"));
    assert_eq!(h.job(&child).state, JobState::Succeeded);
    let sub = h.task("j", "sub");
    assert_eq!(
        (sub.state, sub.output.as_deref()),
        (TaskState::Succeeded, Some(&b"child result"[..]))
    );
    let outputs = h.state.jobs.dependency_outputs("j", "after").unwrap();
    assert_eq!(outputs["sub"], b"child result");
    run(&mut h, "after", 1, "a1");
    h.ok(succeed("j", "after", 1, "a1", "done"));
    assert_eq!(h.job("j").state, JobState::Succeeded);
}

#[test]
fn a_failed_child_job_fails_its_task() {
    let mut child = child_spec();
    child.tasks[0].retry.max_attempts = 1;
    let mut h = with_job(parent_spec(child));
    run(&mut h, "prep", 1, "a1");
    h.ok(succeed("j", "prep", 1, "a1", ""));
    run_in(&mut h, "j/sub", "c1", "a2");
    h.ok(fail("j/sub", "c1", 1, "a2", false));
    assert_eq!(h.job("j/sub").state, JobState::Failed);
    let sub = h.task("j", "sub");
    assert_eq!(sub.state, TaskState::Failed);
    assert!(
        sub.error
            .as_deref()
            .unwrap()
            .starts_with("child job 'j/sub' ended Failed"),
        "{:?}",
        sub.error
    );
    assert_eq!(h.job("j").state, JobState::Failed);
}

#[test]
fn cancelling_the_parent_cancels_the_child_and_its_child() {
    let mut middle = spec(vec![task("m", &[])]);
    middle.tasks[0].kind = String::new();
    middle.tasks[0].child_job = Some(Box::new(spec(vec![task("leaf", &[])])));
    let mut h = with_job(parent_spec(middle));
    run(&mut h, "prep", 1, "a1");
    h.ok(succeed("j", "prep", 1, "a1", ""));
    let grandchild = "j/sub/m";
    run_in(&mut h, grandchild, "leaf", "a2");
    let Applied::JobCancelled(effects) = h.ok(Command::CancelJob {
        job_id: "j".into(),
        reason: "operator".into(),
    }) else {
        panic!("expected a cancellation")
    };
    assert_eq!(h.job("j").state, JobState::Cancelled);
    assert_eq!(h.job("j/sub").state, JobState::Cancelled);
    assert_eq!(h.job(grandchild).state, JobState::Cancelled);
    assert_eq!(h.task(grandchild, "leaf").state, TaskState::Cancelled);
    let cancelled: Vec<&str> = effects
        .cancelled
        .iter()
        .map(|c| c.held.task.task_id.as_str())
        .collect();
    assert_eq!(
        cancelled,
        ["leaf"],
        "the agent running the grandchild's task is told"
    );
    assert!(h.agent("a2").running.is_empty());
    assert_eq!(
        h.job("j/sub").state_reason.as_deref(),
        Some("its parent ended: job cancelled")
    );
}

#[test]
fn a_cancelled_child_fails_its_parent_task() {
    let mut h = with_job(parent_spec(child_spec()));
    run(&mut h, "prep", 1, "a1");
    h.ok(succeed("j", "prep", 1, "a1", ""));
    h.ok(Command::CancelJob {
        job_id: "j/sub".into(),
        reason: "not needed".into(),
    });
    assert_eq!(h.task("j", "sub").state, TaskState::Failed);
    assert_eq!(h.job("j").state, JobState::Failed);
}

#[test]
fn a_compensating_child_finishes_its_compensation_when_the_parent_is_cancelled() {
    let mut child = spec(vec![
        task("c1", &[]),
        task("c2", &["c1"]),
        task("undo", &[]),
    ]);
    child.tasks[0].compensation_task_id = "undo".into();
    child.tasks[1].retry.max_attempts = 1;
    let mut h = with_job(parent_spec(child));
    run(&mut h, "prep", 1, "a1");
    h.ok(succeed("j", "prep", 1, "a1", ""));
    run_in(&mut h, "j/sub", "c1", "a2");
    h.ok(succeed("j/sub", "c1", 1, "a2", "done"));
    run_in(&mut h, "j/sub", "c2", "a2");
    h.ok(fail("j/sub", "c2", 1, "a2", false));
    assert_eq!(h.job("j/sub").state, JobState::Compensating);
    h.ok(Command::CancelJob {
        job_id: "j".into(),
        reason: "operator".into(),
    });
    assert_eq!(h.job("j").state, JobState::Cancelled);
    assert_eq!(h.job("j/sub").state, JobState::Compensating);
    run_in(&mut h, "j/sub", "undo", "a2");
    h.ok(succeed("j/sub", "undo", 1, "a2", "undone"));
    assert_eq!(h.job("j/sub").state, JobState::Failed);
}
