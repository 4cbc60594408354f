//! DAG and spec validation, and unsatisfiable requirements.

use super::*;
use crate::state::AgentRegistry;

fn fan_out_from(task_id: &str) -> FanOut {
    FanOut {
        source: FanOutSource::FromDependency {
            task_id: task_id.into(),
            json_pointer: String::new(),
        },
        parallelism: 0,
    }
}

fn fan_out_items(count: usize) -> FanOut {
    let items = (0..count).map(|i| serde_bytes::ByteBuf::from(i.to_string().into_bytes()));
    FanOut {
        source: FanOutSource::Items(items.collect()),
        parallelism: 0,
    }
}

fn with<F: FnOnce(&mut JobSpec)>(change: F) -> JobSpec {
    let mut job = spec(vec![
        task("a", &[]),
        task("b", &["a"]),
        task("c", &["a", "b"]),
    ]);
    change(&mut job);
    job
}

#[test]
fn validation_table() {
    let cases: Vec<(&str, JobSpec, &str)> = vec![
        ("valid", with(|_| {}), ""),
        (
            "two-task cycle",
            spec(vec![task("a", &["b"]), task("b", &["a"])]),
            "tasks: dependency cycle a -> b -> a",
        ),
        (
            "cycle behind a root",
            spec(vec![
                task("x", &[]),
                task("a", &["c", "x"]),
                task("b", &["a"]),
                task("c", &["b"]),
            ]),
            "tasks: dependency cycle a -> c -> b -> a",
        ),
        (
            "unknown dependency",
            with(|j| j.tasks[2].depends_on = vec!["fetch".into()]),
            "tasks[2].depends_on[0]: unknown task 'fetch'",
        ),
        (
            "duplicate id",
            with(|j| j.tasks[1].id = "a".into()),
            "tasks[1].task_id: duplicate id 'a'",
        ),
        (
            "oversized payload",
            with(|j| j.tasks[0].payload = vec![0; PAYLOAD_BYTES_MAX + 1]),
            "tasks[0].payload: 1048577 bytes, the limit is 1048576",
        ),
        (
            "unknown goal task",
            with(|j| j.goal.criterion = Criterion::GoalTask("zzz".into())),
            "goal.goal_task_id: unknown task 'zzz'",
        ),
        (
            "no task",
            spec(vec![]),
            "tasks: a job needs at least one task",
        ),
        (
            "too many tasks",
            spec(
                (0..=TASKS_MAX)
                    .map(|i| task(&format!("t{i}"), &[]))
                    .collect(),
            ),
            "tasks: 10001 tasks in the job, the limit is 10000",
        ),
        (
            "empty kind",
            with(|j| j.tasks[1].kind.clear()),
            "tasks[1].kind: empty",
        ),
        (
            "empty id",
            with(|j| j.tasks[0].id.clear()),
            "tasks[0].task_id: empty",
        ),
        (
            "self dependency",
            with(|j| j.tasks[0].depends_on = vec!["a".into()]),
            "tasks[0].depends_on[0]: a task cannot depend on itself",
        ),
        (
            "duplicate dependency",
            with(|j| j.tasks[2].depends_on = vec!["a".into(), "a".into()]),
            "tasks[2].depends_on[1]: duplicate dependency 'a'",
        ),
        (
            "no attempt allowed",
            with(|j| j.tasks[0].retry.max_attempts = 0),
            "tasks[0].retry.max_attempts: 0, must be 1 to 100",
        ),
        (
            "shrinking backoff",
            with(|j| j.tasks[0].retry.multiplier = 0.5),
            "tasks[0].retry.multiplier: 0.5, must be at least 1.0",
        ),
        (
            "auction fallback",
            with(|j| j.tasks[0].fallback_strategy = Some(Strategy::Auction)),
            "tasks[0].fallback_strategy: an auction cannot be its own fallback",
        ),
        (
            "reserved characters",
            with(|j| j.tasks[0].id = "a[0]".into()),
            "tasks[0].task_id: 'a[0]': '[' and ']' are reserved for fan-out instance ids",
        ),
        (
            "fan-out source not a dependency",
            with(|j| j.tasks[1].fan_out = Some(fan_out_from("c"))),
            "tasks[1].fan_out.from_dependency.task_id: 'c' must also be in depends_on",
        ),
        (
            "too many items",
            with(|j| j.tasks[0].fan_out = Some(fan_out_items(FAN_OUT_MAX + 1))),
            "tasks[0].fan_out.items: 10001 items, the limit is 10000",
        ),
        (
            "condition on a fan-out",
            with(|j| {
                j.tasks[0].fan_out = Some(fan_out_items(2));
                let condition = OutputCondition {
                    json_pointer: String::new(),
                    equals_json: "1".into(),
                };
                j.tasks[1].conditions = [("a".to_owned(), condition)].into();
            }),
            "tasks[1].depends_on: 'a' is a fan-out, which has no output of its own to test",
        ),
        (
            "fan-out and child job",
            with(|j| {
                j.tasks[0].fan_out = Some(fan_out_items(2));
                j.tasks[0].child_job = Some(Box::new(spec(vec![task("x", &[])])));
            }),
            "tasks[0].fan_out: a task is either a fan-out or a child job",
        ),
        (
            "invalid child job",
            with(|j| j.tasks[2].child_job = Some(Box::new(spec(vec![task("x", &["y"])])))),
            "tasks[2].child_job.tasks[0].depends_on[0]: unknown task 'y'",
        ),
        (
            "child jobs too deep",
            with(|j| {
                let mut nested = spec(vec![task("leaf", &[])]);
                for _ in 0..=CHILD_JOB_DEPTH_MAX {
                    let mut parent = task("p", &[]);
                    parent.child_job = Some(Box::new(nested));
                    nested = spec(vec![parent]);
                }
                *j = nested;
            }),
            "tasks[0].child_job.tasks[0].child_job.tasks[0].child_job.tasks[0].child_job.tasks[0]\
             .child_job: child jobs nest at most 4 deep",
        ),
    ];
    for (name, job, expected) in cases {
        let got = validate(&job)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert_eq!(got, expected, "case {name}");
    }
}

#[test]
fn an_invalid_job_is_rejected_at_apply_and_changes_nothing() {
    let mut h = Harness::new();
    let job = spec(vec![task("a", &["b"]), task("b", &["a"])]);
    let rejection = h.rejected(submit("j", job));
    assert_eq!(rejection.to_string(), "tasks: dependency cycle a -> b -> a");
    assert!(h.state.jobs.is_empty());
}

#[test]
fn a_duplicate_job_id_is_rejected() {
    let mut h = Harness::new();
    h.ok(submit("j", spec(vec![task("a", &[])])));
    let rejection = h.rejected(submit("j", spec(vec![task("b", &[])])));
    assert_eq!(rejection, Rejection::JobExists { job_id: "j".into() });
}

#[test]
fn unsatisfiable_names_the_missing_capability() {
    let mut agents = AgentRegistry::default();
    agents
        .register(&registration("a1", &["python"], 1), 0)
        .unwrap();
    agents
        .register(&registration("a2", &["gpu"], 1), 0)
        .unwrap();
    agents
        .register(&registration("gone", &["tpu"], 1), 0)
        .unwrap();
    agents.expire("gone", "gone-s1").unwrap();
    let needing = |caps: &[&str]| {
        let mut job = spec(vec![task("a", &[]), task("b", &[])]);
        job.tasks[1].required_capabilities = caps.iter().map(|c| c.to_string()).collect();
        unsatisfiable(&job, &agents).map(|e| e.to_string())
    };
    assert_eq!(needing(&["python"]), None);
    assert_eq!(needing(&["gpu"]), None);
    assert_eq!(
        needing(&["tpu"]),
        Some("tasks[1].required_capabilities: no agent offers 'tpu'".into())
    );
    assert_eq!(
        needing(&["gpu", "python"]),
        Some("tasks[1].required_capabilities: no agent offers all of 'gpu', 'python'".into())
    );
}

#[test]
fn capabilities_no_live_agent_offers_are_refused_on_the_applied_state() {
    let mut h = Harness::new();
    let mut gpu = task("g", &[]);
    gpu.required_capabilities = ["gpu".to_owned(), "cuda".to_owned()].into();
    let anything = task("any", &[]);
    h.ok(submit("needs-nothing", spec(vec![anything])));
    let rejection = h.rejected(submit("j", spec(vec![gpu.clone()])));
    assert_eq!(
        rejection,
        Rejection::InvalidSpec(SpecError::new(
            "tasks[0].required_capabilities",
            "no agent offers 'cuda'"
        ))
    );
    h.ok(register("a1", &["gpu"], 1));
    h.ok(register("a2", &["cuda"], 1));
    let rejection = h.rejected(submit("j", spec(vec![gpu.clone()])));
    assert_eq!(
        rejection,
        Rejection::InvalidSpec(SpecError::new(
            "tasks[0].required_capabilities",
            "no agent offers all of 'cuda', 'gpu'"
        ))
    );
    h.ok(register("a3", &["cuda", "gpu"], 1));
    h.ok(submit("j", spec(vec![gpu])));
}

#[test]
fn unsatisfiable_names_resources_and_constraints_no_agent_can_meet() {
    use crate::scheduler::{Constraint, ConstraintOp};
    let mut agents = AgentRegistry::default();
    for (id, cpu, zone) in [("big", 8.0, "eu"), ("small", 2.0, "us")] {
        let mut agent = registration(id, &["python"], 4);
        agent.resources = [("cpu".to_owned(), cpu)].into();
        agent.labels = [("zone".to_owned(), zone.to_owned())].into();
        agents.register(&agent, 0).unwrap();
    }
    let check = |cpu: f64, zone: Option<&str>| {
        let mut job = spec(vec![task("a", &[])]);
        job.tasks[0].required_capabilities = ["python".to_owned()].into();
        job.tasks[0].resources = [("cpu".to_owned(), cpu)].into();
        if let Some(zone) = zone {
            job.tasks[0].constraints = vec![Constraint {
                key: "zone".into(),
                op: ConstraintOp::Equals(zone.into()),
            }];
        }
        unsatisfiable(&job, &agents).map(|e| e.to_string())
    };
    assert_eq!(check(8.0, None), None, "fits the big agent when idle");
    assert_eq!(check(2.0, Some("us")), None);
    assert_eq!(
        check(16.0, None),
        Some(
            "tasks[0].resources: no agent can ever run it: agent 'big': resource 'cpu': needs 16, \
             8 free; agent 'small': resource 'cpu': needs 16, 2 free"
                .into()
        )
    );
    assert_eq!(
        check(4.0, Some("us")),
        Some(
            "tasks[0].constraints: no agent can ever run it: agent 'big': constraint on label \
             'zone' not satisfied; agent 'small': resource 'cpu': needs 4, 2 free"
                .into()
        )
    );
    assert_eq!(
        check(1.0, Some("mars")),
        Some(
            "tasks[0].constraints: no agent can ever run it: agent 'big': constraint on label \
             'zone' not satisfied; agent 'small': constraint on label 'zone' not satisfied"
                .into()
        )
    );
}
