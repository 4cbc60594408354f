//! Conditional branches: a condition on a dependency's output decides whether a task's branch
//! is taken; tasks not taken are bypassed — neither success nor failure — and a task that
//! converges branches runs when at least one of them was taken.

use super::*;
use crate::state::jobs::OutputCondition;

fn when(category: &str) -> OutputCondition {
    OutputCondition {
        json_pointer: "/category".into(),
        equals_json: format!("\"{category}\""),
    }
}

/// route ─► bug | feature | docs ─► converge; bug ─► patch.
fn triage() -> JobSpec {
    let mut job = spec(vec![
        task("route", &[]),
        task("bug", &["route"]),
        task("feature", &["route"]),
        task("docs", &["route"]),
        task("patch", &["bug"]),
        task("converge", &["bug", "feature", "docs"]),
    ]);
    for (i, category) in [(1, "bug"), (2, "feature"), (3, "docs")] {
        job.tasks[i].conditions = [("route".to_owned(), when(category))].into();
    }
    job
}

#[test]
fn only_the_branch_whose_condition_holds_runs_and_the_job_succeeds() {
    let mut h = with_job(triage());
    run(&mut h, "route", 1, "a1");
    let seq = h.next_sequence("j");
    h.ok(succeed(
        "j",
        "route",
        1,
        "a1",
        r#"{"category": "feature", "n": 3}"#,
    ));
    assert_eq!(h.task("j", "feature").state, TaskState::Ready);
    for bypassed in ["bug", "docs", "patch"] {
        assert_eq!(
            h.task("j", bypassed).state,
            TaskState::Bypassed,
            "{bypassed}"
        );
    }
    assert_eq!(
        h.task("j", "bug").error.as_deref(),
        Some("the output of 'route' at '/category' is not \"bug\"")
    );
    assert_eq!(
        h.task("j", "patch").error.as_deref(),
        Some("every dependency was bypassed")
    );
    assert!(h
        .events_from("j", seq)
        .contains(&JobEventKind::TaskBypassed {
            task_id: "docs".into(),
            reason: "the output of 'route' at '/category' is not \"docs\"".into(),
        }));
    assert_eq!(h.task("j", "converge").state, TaskState::Pending);
    run(&mut h, "feature", 1, "a1");
    h.ok(succeed("j", "feature", 1, "a1", "planned"));
    assert_eq!(h.task("j", "converge").state, TaskState::Ready);
    let outputs = h.state.jobs.dependency_outputs("j", "converge").unwrap();
    assert_eq!(outputs.keys().collect::<Vec<_>>(), ["feature"]);
    run(&mut h, "converge", 1, "a1");
    h.ok(succeed("j", "converge", 1, "a1", "done"));
    let job = h.job("j");
    assert_eq!(job.state, JobState::Succeeded);
    assert_eq!((job.succeeded, job.bypassed, job.unsuccessful), (3, 3, 0));
}

#[test]
fn output_that_is_not_json_takes_no_branch_and_a_bypassed_goal_fails_the_job() {
    let mut job = triage();
    job.goal.criterion = Criterion::GoalTask("patch".into());
    let mut h = with_job(job);
    run(&mut h, "route", 1, "a1");
    h.ok(succeed("j", "route", 1, "a1", "not json"));
    for bypassed in ["bug", "feature", "docs", "patch", "converge"] {
        assert_eq!(
            h.task("j", bypassed).state,
            TaskState::Bypassed,
            "{bypassed}"
        );
    }
    let job = h.job("j");
    assert_eq!(job.state, JobState::Failed);
    assert_eq!(
        job.state_reason.as_deref(),
        Some("goal task 'patch' ended Bypassed")
    );
}

#[test]
fn conditions_read_json_values_at_a_pointer() {
    let condition = |pointer: &str, equals: &str| OutputCondition {
        json_pointer: pointer.into(),
        equals_json: equals.into(),
    };
    let output = br#"{"review": {"approved": true, "score": 3}, "tags": ["a", "b"]}"#;
    let cases = [
        ("/review/approved", "true", true),
        ("/review/approved", "false", false),
        ("/review/score", "3", true),
        ("/review/score", "3.0", false),
        ("/tags/1", "\"b\"", true),
        ("/missing", "null", false),
        (
            "",
            r#"{"review": {"approved": true, "score": 3}, "tags": ["a", "b"]}"#,
            true,
        ),
        ("/review/approved", "not json", false),
    ];
    for (pointer, equals, holds) in cases {
        assert_eq!(
            condition(pointer, equals).holds(output),
            holds,
            "{pointer} == {equals}"
        );
    }
    assert!(!condition("", "1").holds(b"\xff"));
}
