//! Fan-out: a task mapped over items becomes instances `<id>[<i>]` released in item order
//! within the parallelism limit; the reduce step gets every instance's output; one instance
//! that cannot succeed fails the fan-out and cancels the rest.

use super::*;
use crate::state::jobs::{instance_id, FanOut, FanOutSource, TaskRole};

fn items(n: usize) -> FanOutSource {
    let items = (0..n).map(|i| serde_bytes::ByteBuf::from(format!("item-{i}")));
    FanOutSource::Items(items.collect())
}

/// map (fan-out over `source`, `parallelism`) ─► reduce.
fn map_reduce(source: FanOutSource, parallelism: u32, deps: &[&str]) -> Vec<TaskSpec> {
    let mut map = task("map", deps);
    map.fan_out = Some(FanOut {
        source,
        parallelism,
    });
    vec![map, task("reduce", &["map"])]
}

fn ready(h: &Harness) -> Vec<String> {
    h.state
        .jobs
        .ready_tasks(u64::MAX)
        .map(|ready| ready.key().task_id)
        .collect()
}

#[test]
fn instances_run_within_the_parallelism_limit_and_reduce_gets_every_output() {
    let mut h = with_job(spec(map_reduce(items(5), 2, &[])));
    assert_eq!(h.task("j", "map").state, TaskState::Running);
    assert_eq!(ready(&h), ["map[0]", "map[1]"]);
    let instance = h.task("j", "map[3]");
    assert_eq!(
        (&instance.role, instance.parent.as_deref()),
        (
            &TaskRole::Instance {
                index: 3,
                item: b"item-3".to_vec()
            },
            Some("map")
        )
    );
    // Outputs arrive out of order; the reduce step still sees them by index.
    for i in [1, 0, 3, 2, 4] {
        let id = instance_id("map", i);
        run(&mut h, &id, 1, "a1");
        h.ok(succeed("j", &id, 1, "a1", &format!("out-{i}")));
        let in_progress = h
            .job("j")
            .tasks
            .values()
            .filter(|t| matches!(t.role, TaskRole::Instance { .. }))
            .filter(|t| {
                matches!(
                    t.state,
                    TaskState::Ready | TaskState::Assigned | TaskState::Running
                )
            })
            .count();
        assert!(in_progress <= 2, "{in_progress} instances in progress");
    }
    assert_eq!(h.task("j", "map").state, TaskState::Succeeded);
    assert_eq!(ready(&h), ["reduce"]);
    let outputs = h.state.jobs.dependency_outputs("j", "reduce").unwrap();
    let expected: BTreeMap<String, Vec<u8>> = (0..5)
        .map(|i| (instance_id("map", i), format!("out-{i}").into_bytes()))
        .collect();
    assert_eq!(outputs, expected);
    run(&mut h, "reduce", 1, "a2");
    h.ok(succeed("j", "reduce", 1, "a2", "sum"));
    assert_eq!(h.job("j").state, JobState::Succeeded);
    assert!(h.job("j").events.iter().any(|e| e.kind
        == JobEventKind::FanOutExpanded {
            task_id: "map".into(),
            instance_count: 5
        }));
    let listed: Vec<&str> = h.job("j").tasks_in_order().map(|(id, _, _)| id).collect();
    assert_eq!(
        listed,
        ["map", "map[0]", "map[1]", "map[2]", "map[3]", "map[4]", "reduce"]
    );
}

#[test]
fn items_can_come_from_a_json_array_in_a_dependency_output() {
    let source = FanOutSource::FromDependency {
        task_id: "fetch".into(),
        json_pointer: "/issues".into(),
    };
    let mut tasks = vec![task("fetch", &[])];
    tasks.extend(map_reduce(source, 0, &["fetch"]));
    let mut h = with_job(spec(tasks));
    run(&mut h, "fetch", 1, "a1");
    h.ok(succeed(
        "j",
        "fetch",
        1,
        "a1",
        r#"{"issues": [{"id": 1}, "two", 3]}"#,
    ));
    assert_eq!(ready(&h), ["map[0]", "map[1]", "map[2]"]);
    let item = |i| match &h.task("j", &instance_id("map", i)).role {
        TaskRole::Instance { item, .. } => String::from_utf8(item.clone()).unwrap(),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        [item(0), item(1), item(2)],
        [r#"{"id":1}"#, r#""two""#, "3"]
    );
}

#[test]
fn a_missing_array_fails_the_fan_out_and_an_empty_one_succeeds_at_once() {
    let source = FanOutSource::FromDependency {
        task_id: "fetch".into(),
        json_pointer: "/issues".into(),
    };
    let mut tasks = vec![task("fetch", &[])];
    tasks.extend(map_reduce(source, 0, &["fetch"]));
    let mut h = with_job(spec(tasks.clone()));
    run(&mut h, "fetch", 1, "a1");
    h.ok(succeed("j", "fetch", 1, "a1", r#"{"issues": "none"}"#));
    let map = h.task("j", "map");
    assert_eq!(map.state, TaskState::Failed);
    assert_eq!(
        map.error.as_deref(),
        Some("the output of 'fetch' has no JSON array at '/issues'")
    );
    assert_eq!(h.job("j").state, JobState::Failed);

    let mut h = with_job(spec(tasks));
    run(&mut h, "fetch", 1, "a1");
    h.ok(succeed("j", "fetch", 1, "a1", r#"{"issues": []}"#));
    assert_eq!(h.task("j", "map").state, TaskState::Succeeded);
    assert_eq!(ready(&h), ["reduce"]);
}

#[test]
fn a_failed_instance_fails_the_fan_out_and_cancels_the_others() {
    let mut tasks = map_reduce(items(4), 0, &[]);
    tasks[0].retry.max_attempts = 1;
    let mut h = with_job(spec(tasks));
    run(&mut h, "map[0]", 1, "a1");
    run(&mut h, "map[1]", 1, "a2");
    h.ok(fail("j", "map[1]", 1, "a2", false));
    let map = h.task("j", "map");
    assert_eq!(map.state, TaskState::Failed);
    assert!(map
        .error
        .as_deref()
        .unwrap()
        .starts_with("instance 'map[1]' ended Failed"));
    for id in ["map[0]", "map[2]", "map[3]"] {
        assert_eq!(h.task("j", id).state, TaskState::Cancelled, "{id}");
    }
    assert_eq!(h.task("j", "reduce").state, TaskState::Skipped);
    assert_eq!(h.job("j").state, JobState::Failed);
    assert!(h.agent("a1").running.is_empty());
}

#[test]
fn an_instance_retries_and_falls_back_on_its_own() {
    let mut tasks = map_reduce(items(2), 0, &[]);
    tasks[0].retry.max_attempts = 1;
    tasks[0].fallback = Some(crate::state::jobs::Fallback {
        kind: "small".into(),
        strategy: None,
        required_capabilities: BTreeSet::new(),
        max_attempts: 1,
    });
    let mut h = with_job(spec(tasks));
    run(&mut h, "map[0]", 1, "a1");
    h.ok(fail("j", "map[0]", 1, "a1", true));
    assert_eq!(h.task("j", "map[0]").state, TaskState::Ready);
    let job = h.job("j");
    assert_eq!(job.task_spec("map[0]").unwrap().kind, "small");
    assert_eq!(job.task_spec("map[1]").unwrap().kind, "work");
    assert!(job.task_spec("map").unwrap().fallback.is_some());
}

#[test]
fn ten_thousand_instances_expand_and_complete() {
    let mut h = with_job(spec(map_reduce(items(10_000), 0, &[])));
    assert_eq!(h.state.jobs.ready_len(), 10_000);
    // Applied without the per-command invariant scan (quadratic at this size), checked once.
    let mut meta = crate::state::Meta {
        index: 100,
        now_ms: START_MS,
    };
    for i in 0..10_000 {
        let id = instance_id("map", i);
        let agent = if i % 2 == 0 { "a1" } else { "a2" };
        for command in [
            assign("j", &id, 1, agent),
            succeed("j", &id, 1, agent, &i.to_string()),
        ] {
            meta.index += 1;
            h.state.apply(&command, meta).unwrap();
        }
    }
    check_invariants(&h.state);
    assert_eq!(h.task("j", "map").state, TaskState::Succeeded);
    let outputs = h.state.jobs.dependency_outputs("j", "reduce").unwrap();
    assert_eq!(outputs.len(), 10_000);
    assert_eq!(outputs[&instance_id("map", 9_999)], b"9999");
}

fn add_subtasks(parent: &str, subtasks: Vec<TaskSpec>, wait: bool) -> Command {
    Command::AddSubtasks {
        job_id: "j".into(),
        parent_task_id: parent.into(),
        attempt: 1,
        agent_id: "a1".into(),
        subtasks,
        wait,
    }
}

#[test]
fn a_fan_out_has_no_attempt_to_time_out() {
    let mut h = with_job(spec(map_reduce(items(2), 0, &[])));
    h.now_ms += 10 * TIMEOUT_MS;
    let rejection = h.rejected(time_out("j", "map", 0));
    assert!(
        rejection.to_string().contains("runs in place"),
        "{rejection}"
    );
}

#[test]
fn an_instance_cannot_wait_for_subtasks_that_wait_for_its_fan_out() {
    let mut h = with_job(spec(map_reduce(items(3), 1, &[])));
    run(&mut h, "map[0]", 1, "a1");
    for dep in ["map", "map[2]", "reduce"] {
        let rejection = h.rejected(add_subtasks("map[0]", vec![task("s", &[dep])], true));
        assert!(
            rejection
                .to_string()
                .starts_with("subtasks[0].depends_on[0]"),
            "{dep}: {rejection}"
        );
    }
    // Without waiting, nothing is blocked.
    h.ok(add_subtasks("map[0]", vec![task("s", &["map"])], false));
}

#[test]
fn subtasks_fit_beside_a_ten_thousand_instance_fan_out() {
    let mut h = with_job(spec(map_reduce(items(10_000), 0, &[])));
    run(&mut h, "map[0]", 1, "a1");
    h.ok(add_subtasks("map[0]", vec![task("s", &[])], false));
    assert_eq!(h.task("j", "s").parent.as_deref(), Some("map[0]"));
}

#[test]
fn a_fan_out_over_a_bypassed_branch_is_bypassed() {
    let source = FanOutSource::FromDependency {
        task_id: "fetch".into(),
        json_pointer: String::new(),
    };
    let mut fetch = task("fetch", &["route"]);
    fetch.conditions = [(
        "route".to_owned(),
        crate::state::jobs::OutputCondition {
            json_pointer: String::new(),
            equals_json: "true".into(),
        },
    )]
    .into();
    let mut tasks = vec![task("route", &[]), task("other", &["route"]), fetch];
    tasks.extend(map_reduce(source, 0, &["fetch", "other"]));
    let mut h = with_job(spec(tasks));
    run(&mut h, "route", 1, "a1");
    h.ok(succeed("j", "route", 1, "a1", "false"));
    run(&mut h, "other", 1, "a1");
    h.ok(succeed("j", "other", 1, "a1", "x"));
    let map = h.task("j", "map");
    assert_eq!(map.state, TaskState::Bypassed);
    assert_eq!(
        map.error.as_deref(),
        Some("its items come from 'fetch', whose branch was not taken")
    );
}
