//! Built-in demo handlers, for `synod dev`, `synod demo` and the example jobs: simple, visible
//! behaviour (echo, sleep, failures) and a goal-driven team — a planner that decomposes a goal
//! into research → analysis → execution → validation subtasks and waits for them — and the
//! DevOps triage handlers (see [`triage`](crate::triage)).

use std::time::Duration;

use serde_json::{json, Value};
use synod_sdk::agent::{BoxFuture, Task, TaskHandler, TaskOutcome};
use synod_sdk::proto as pb;

/// Names of the demo handlers.
pub const NAMES: &[&str] = &[
    "echo",
    "sleep",
    "fail",
    "flaky",
    "planner",
    "research",
    "analyze",
    "execute",
    "validate",
    "triage.fetch",
    "triage.classify",
    "triage.route",
];

/// A demo handler by name.
pub fn handler(name: &str) -> Option<DemoHandler> {
    let run: fn(Task) -> BoxFuture<TaskOutcome> = match name {
        "echo" => |task| Box::pin(async move { TaskOutcome::Succeeded(task.payload) }),
        "sleep" => |task| Box::pin(sleep(task)),
        "fail" => |_| Box::pin(async { TaskOutcome::fatal("the fail handler always fails") }),
        "flaky" => |task| Box::pin(flaky(task)),
        "planner" => |task| Box::pin(plan(task)),
        "research" | "analyze" | "execute" | "validate" => |task| Box::pin(team_step(task)),
        "triage.fetch" => |task| Box::pin(crate::triage::fetch(task)),
        "triage.classify" => |task| Box::pin(crate::triage::classify(task)),
        "triage.route" => |task| Box::pin(crate::triage::route(task)),
        _ => return None,
    };
    Some(DemoHandler { run })
}

/// One of the demo handlers.
#[derive(Clone, Copy)]
pub struct DemoHandler {
    run: fn(Task) -> BoxFuture<TaskOutcome>,
}

impl TaskHandler for DemoHandler {
    fn run(&self, task: Task) -> BoxFuture<TaskOutcome> {
        (self.run)(task)
    }
}

fn payload_json(task: &Task) -> Value {
    serde_json::from_slice(&task.payload).unwrap_or(Value::Null)
}

/// Sleeps `{"ms": N}` (default 100) milliseconds, or until cancelled.
async fn sleep(task: Task) -> TaskOutcome {
    let ms = payload_json(&task)["ms"].as_u64().unwrap_or(100);
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_millis(ms)) => {
            TaskOutcome::Succeeded(json!({ "slept_ms": ms }).to_string().into_bytes())
        }
        _ = task.cancelled.cancelled() => TaskOutcome::fatal("cancelled"),
    }
}

/// Fails its first attempt (retryably), then succeeds.
async fn flaky(task: Task) -> TaskOutcome {
    if task.task.attempt <= 1 {
        return TaskOutcome::retryable("flaky: first attempt fails");
    }
    TaskOutcome::Succeeded(format!("succeeded on attempt {}", task.task.attempt).into_bytes())
}

/// The team's roles in order: (subtask id, kind, capability).
const TEAM: [(&str, &str, &str); 4] = [
    ("research", "research", "researcher"),
    ("analyze", "analyze", "analyzer"),
    ("execute", "execute", "executor"),
    ("validate", "validate", "validator"),
];

/// Decomposes `{"goal": "..."}` into a chain of subtasks for the team and waits for them.
async fn plan(task: Task) -> TaskOutcome {
    let goal = payload_json(&task)["goal"]
        .as_str()
        .unwrap_or("an unnamed goal")
        .to_owned();
    let parent = task.task.task_id.clone();
    let subtasks: Vec<pb::TaskSpec> = TEAM
        .iter()
        .enumerate()
        .map(|(i, (id, kind, capability))| pb::TaskSpec {
            task_id: format!("{parent}/{id}"),
            kind: (*kind).into(),
            description: format!("{kind} for: {goal}"),
            payload: json!({ "goal": goal, "step": id }).to_string().into_bytes(),
            depends_on: match i {
                0 => Vec::new(),
                _ => vec![pb::Dependency {
                    task_id: format!("{parent}/{}", TEAM[i - 1].0),
                    condition: None,
                }],
            },
            required_capabilities: vec![(*capability).into()],
            ..Default::default()
        })
        .collect();
    match task.add_subtasks(subtasks, true).await {
        Ok(outcomes) => summarize(&goal, &outcomes),
        Err(error) => TaskOutcome::retryable(format!("adding subtasks: {error}")),
    }
}

fn summarize(goal: &str, outcomes: &[pb::SubtaskOutcome]) -> TaskOutcome {
    let succeeded = pb::TaskState::Succeeded as i32;
    if let Some(failed) = outcomes.iter().find(|o| o.state != succeeded) {
        return TaskOutcome::fatal(format!(
            "subtask {} did not succeed: {}",
            failed.task_id, failed.error_message
        ));
    }
    let steps: Vec<Value> = outcomes
        .iter()
        .map(|o| serde_json::from_slice(&o.output).unwrap_or(Value::Null))
        .collect();
    TaskOutcome::Succeeded(
        json!({ "goal": goal, "steps": steps, "verdict": "goal reached" })
            .to_string()
            .into_bytes(),
    )
}

/// One team step: takes a moment, then reports what it built on.
async fn team_step(task: Task) -> TaskOutcome {
    tokio::time::sleep(Duration::from_millis(150)).await;
    let inputs: Vec<&String> = task.dependency_outputs.keys().collect();
    let output = json!({
        "step": task.kind,
        "input": payload_json(&task),
        "built_on": inputs,
        "attempt": task.task.attempt,
    });
    TaskOutcome::Succeeded(output.to_string().into_bytes())
}

/// The demo fleet started by `synod dev` and `synod demo`: a planner, a team of four roles
/// (two researchers) and two general workers (echo, sleep, flaky, fail), all bidding in
/// auctions with a cost that differs per agent and voting for the first option of a vote.
pub fn fleet(endpoints: &[String]) -> Vec<synod_sdk::agent::AgentBuilder> {
    // (agent name, capability, task kind, demo handler)
    let roles: [(&str, &str, &str, &str); 6] = [
        ("planner", "planner", "planner.decompose", "planner"),
        ("researcher-1", "researcher", "research", "research"),
        ("researcher-2", "researcher", "research", "research"),
        ("analyzer", "analyzer", "analyze", "analyze"),
        ("executor", "executor", "execute", "execute"),
        ("validator", "validator", "validate", "validate"),
    ];
    let mut agents: Vec<_> = roles
        .iter()
        .enumerate()
        .filter_map(|(i, (name, capability, kind, demo))| {
            let builder = crate::agent(name, endpoints)
                .capability(*capability)
                .max_concurrent(4)
                .handler(*kind, handler(demo)?);
            Some(with_answers(builder, 1.0 + i as f64))
        })
        .collect();
    for i in 1..=2 {
        let mut worker = crate::agent(&format!("worker-{i}"), endpoints)
            .capability("worker")
            .max_concurrent(8);
        for name in [
            "echo",
            "sleep",
            "flaky",
            "fail",
            "triage.fetch",
            "triage.classify",
            "triage.route",
        ] {
            if let Some(demo) = handler(name) {
                worker = worker.handler(name, demo);
            }
        }
        agents.push(with_answers(worker, 10.0 + i as f64));
    }
    agents
}

/// Bids `cost` in every auction and votes for the first option of every vote.
fn with_answers(
    builder: synod_sdk::agent::AgentBuilder,
    cost: f64,
) -> synod_sdk::agent::AgentBuilder {
    builder
        .bid_handler(move |_: &pb::CallForBids| {
            Some(synod_sdk::agent::Offer {
                cost,
                estimate_ms: 100,
            })
        })
        .ballot_handler(|request: &pb::VoteRequest| request.options.first().cloned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(kind: &str, attempt: u32, payload: &str) -> Task {
        let task_ref = pb::TaskRef {
            job_id: "j".into(),
            task_id: "t".into(),
            attempt,
        };
        Task::standalone(task_ref, kind, payload.as_bytes().to_vec())
    }

    #[tokio::test]
    async fn demo_handlers_behave_as_named() {
        let run = |name: &str, t: Task| handler(name).unwrap().run(t);
        assert_eq!(
            run("echo", task("echo", 1, "hi")).await,
            TaskOutcome::Succeeded(b"hi".to_vec())
        );
        assert!(matches!(
            run("fail", task("fail", 1, "")).await,
            TaskOutcome::Failed {
                retryable: false,
                ..
            }
        ));
        assert!(matches!(
            run("flaky", task("flaky", 1, "")).await,
            TaskOutcome::Failed {
                retryable: true,
                ..
            }
        ));
        assert!(matches!(
            run("flaky", task("flaky", 2, "")).await,
            TaskOutcome::Succeeded(_)
        ));
        let slept = run("sleep", task("sleep", 1, r#"{"ms": 5}"#)).await;
        assert_eq!(slept, TaskOutcome::Succeeded(br#"{"slept_ms":5}"#.to_vec()));
        assert!(handler("nope").is_none());
    }

    #[tokio::test]
    async fn a_planner_without_a_session_reports_a_retryable_failure() {
        let outcome = handler("planner")
            .unwrap()
            .run(task("planner", 1, r#"{"goal":"g"}"#))
            .await;
        assert!(
            matches!(
                outcome,
                TaskOutcome::Failed {
                    retryable: true,
                    ..
                }
            ),
            "{outcome:?}"
        );
    }
}
