//! The job and agent commands of the `synod` binary against a real `synod dev` process and its
//! demo agents: every example job file completes with `synod job submit FILE --wait`, and
//! `agents list`, `job list`, `job status` and `job cancel` report what happened.

// Waiting for a real process on a wall-clock deadline is this test's job; the ban on clocks
// protects the replicated core.
#![allow(clippy::disallowed_methods)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use synod_coordinator::local_cluster::free_addr;

/// A `synod dev` process, killed when dropped.
struct DevServer {
    child: Child,
    addr: String,
    _data: tempfile::TempDir,
}

impl DevServer {
    fn start() -> Self {
        let addr = free_addr().unwrap();
        let data = tempfile::tempdir().unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_synod"))
            .args(["dev", "--listen", &addr, "--data-dir"])
            .arg(data.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start synod dev");
        let server = DevServer {
            child,
            addr,
            _data: data,
        };
        server.wait_for_demo_agents();
        server
    }

    /// Runs a client command against this server.
    fn synod(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_synod"))
            .args(args)
            .env("SYNOD_ADDR", &self.addr)
            .output()
            .expect("run synod")
    }

    /// Runs a client command that must succeed and print JSON.
    fn json(&self, args: &[&str]) -> Value {
        let output = self.synod(args);
        assert_success(&output, args);
        serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
            panic!("{args:?} printed no JSON ({e}): {}", stdout(&output));
        })
    }

    /// The agent whose `key` is `value` in `agents list --json`.
    fn agent(&self, key: &str, value: &str) -> Value {
        let agents = self.json(&["agents", "list", "--json"]);
        let found = agents.as_array().unwrap().iter().find(|a| a[key] == value);
        found
            .cloned()
            .unwrap_or_else(|| panic!("no agent with {key} {value}: {agents}"))
    }

    fn wait_for_demo_agents(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let output = self.synod(&["agents", "list", "--json"]);
            let connected = serde_json::from_slice::<Value>(&output.stdout)
                .ok()
                .and_then(|v| v.as_array().cloned())
                .map(|agents| agents.iter().filter(|a| a["state"] == "connected").count());
            if connected == Some(8) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the 8 demo agents did not connect: {}",
                stderr(&output)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for DevServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `check` until it yields a value, for at most 20 s.
fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn assert_success(output: &Output, args: &[&str]) {
    assert!(
        output.status.success(),
        "{args:?} failed: {}\n{}",
        stdout(output),
        stderr(output)
    );
}

/// Task id → state name, from `job status --json`.
fn task_states(status: &Value) -> std::collections::BTreeMap<String, String> {
    let tasks = status["tasks"].as_array().unwrap().iter();
    tasks
        .map(|t| {
            let id = t["task_id"].as_str().unwrap().to_owned();
            (id, t["state"].as_str().unwrap().to_owned())
        })
        .collect()
}

fn example_jobs() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/jobs");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
        .collect();
    files.sort();
    files
}

#[test]
fn the_cli_runs_every_example_job_on_synod_dev_and_reports_it() {
    let server = DevServer::start();
    let agents = server.json(&["agents", "list", "--json"]);
    let names: Vec<&str> = agents
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    for role in [
        "planner",
        "researcher-1",
        "analyzer",
        "validator",
        "worker-2",
    ] {
        assert!(names.contains(&role), "{role} missing from {names:?}");
    }

    let examples = example_jobs();
    assert!(examples.len() >= 2, "{examples:?}");
    for file in &examples {
        let path = file.to_str().unwrap();
        let output = server.synod(&["job", "submit", path, "--wait"]);
        assert_success(&output, &["job", "submit", path, "--wait"]);
        assert!(
            stdout(&output).contains("job succeeded"),
            "{path}: {}",
            stdout(&output)
        );
        if path.ends_with("goal-research.toml") {
            // Events name agents, not just their ids.
            assert!(
                stdout(&output).contains("plan assigned to planner ("),
                "{}",
                stdout(&output)
            );
        }
    }

    let jobs = server.json(&["job", "list", "--state", "succeeded", "--json"]);
    let jobs = jobs.as_array().unwrap();
    // Every example, and the child job the release runs.
    assert_eq!(jobs.len(), examples.len() + 1, "{jobs:?}");
    let goal_job = jobs
        .iter()
        .find(|j| j["name"] == "market-research")
        .unwrap();
    let status = server.json(&[
        "job",
        "status",
        goal_job["job_id"].as_str().unwrap(),
        "--json",
    ]);
    assert_eq!(status["state"], "succeeded");
    let tasks = status["tasks"].as_array().unwrap();
    let task_ids: Vec<&str> = tasks
        .iter()
        .map(|t| t["task_id"].as_str().unwrap())
        .collect();
    assert!(task_ids.contains(&"plan"), "{task_ids:?}");
    assert!(
        task_ids.iter().any(|id| id.starts_with("plan/")),
        "the planner added no subtasks: {task_ids:?}"
    );
    assert!(tasks.iter().all(|t| t["state"] == "succeeded"), "{tasks:?}");

    // The DevOps triage: twelve issues analyzed by a fan-out, routed by the categories found:
    // the batch has bugs, features and security issues but no docs issue.
    let triage = jobs.iter().find(|j| j["name"] == "issue-triage").unwrap();
    let triage = server.json(&[
        "job",
        "status",
        triage["job_id"].as_str().unwrap(),
        "--json",
    ]);
    let state_of = |id: &str| {
        let tasks = triage["tasks"].as_array().unwrap();
        let task = tasks.iter().find(|t| t["task_id"] == id).unwrap();
        task["state"].as_str().unwrap().to_owned()
    };
    let taken = [
        "fetch",
        "analyze",
        "route",
        "fix-bugs",
        "plan-features",
        "security-review",
        "converge",
        "notify",
    ];
    for task in taken {
        assert_eq!(state_of(task), "succeeded", "{task}: {triage}");
    }
    assert_eq!(state_of("update-docs"), "skipped", "{triage}");
    for i in 0..12 {
        assert_eq!(state_of(&format!("analyze[{i}]")), "succeeded", "{triage}");
    }

    // The release: its smoke tests ran as a child job; its undo tasks never ran.
    let release = jobs.iter().find(|j| j["name"] == "release").unwrap();
    let release = server.json(&[
        "job",
        "status",
        release["job_id"].as_str().unwrap(),
        "--json",
    ]);
    let states = task_states(&release);
    assert_eq!(states["smoke-tests"], "succeeded", "{release}");
    assert_eq!(states["undeploy-staging"], "skipped", "{release}");
    assert_eq!(states["rollback-production"], "skipped", "{release}");
    let smoke = release["tasks"].as_array().unwrap().iter();
    let child_id = smoke
        .filter_map(|t| t["child_job_id"].as_str())
        .find(|id| !id.is_empty())
        .unwrap();
    let child = server.json(&["job", "status", child_id, "--json"]);
    assert_eq!(child["parent_task_id"], "smoke-tests", "{child}");
    assert_eq!(task_states(&child)["suites[3]"], "succeeded", "{child}");

    let goal_id = goal_job["job_id"].as_str().unwrap();
    let history = server.json(&["job", "history", goal_id, "--json"]);
    let events = history["events"].as_array().unwrap();
    assert_eq!(events[0]["event"], "job submitted");
    assert!(
        events.last().unwrap()["event"]
            .as_str()
            .unwrap()
            .starts_with("job succeeded"),
        "{events:?}"
    );
    let timed = history["tasks"].as_array().unwrap();
    assert_eq!(timed.len(), tasks.len());
    for task in timed {
        assert!(task["total_ms"].as_u64().is_some(), "{task}");
        assert!(task["waited_ms"].as_u64().unwrap() <= task["total_ms"].as_u64().unwrap());
    }
    let text = server.synod(&["job", "history", goal_id]);
    assert_success(&text, &["job", "history"]);
    let text = stdout(&text);
    assert!(
        text.contains("TASK") && text.contains("plan/research"),
        "{text}"
    );
}

#[test]
fn job_cancel_stops_a_running_job_and_bad_input_is_named() {
    let server = DevServer::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("long.toml");
    std::fs::write(
        &file,
        "name = \"long\"\n[goal]\ndescription = \"sleep\"\n\n[[tasks]]\nid = \"nap\"\nkind = \"sleep\"\npayload = { ms = 60000 }\ncapabilities = [\"worker\"]\n",
    )
    .unwrap();
    let submitted = server.json(&["job", "submit", file.to_str().unwrap(), "--json"]);
    let job_id = submitted["job_id"].as_str().unwrap().to_owned();
    eventually("the task to start", || {
        let status = server.json(&["job", "status", &job_id, "--json"]);
        (status["tasks"][0]["state"] == "running").then_some(())
    });
    let cancelled = server.synod(&["job", "cancel", &job_id]);
    assert_success(&cancelled, &["job", "cancel"]);
    eventually("the job and its task to be cancelled", || {
        let status = server.json(&["job", "status", &job_id, "--json"]);
        let cancelled =
            status["state"] == "cancelled" && status["tasks"][0]["state"] == "cancelled";
        cancelled.then_some(())
    });
    // `watch` of a cancelled job ends with a non-zero status.
    let watched = server.synod(&["job", "watch", &job_id, "--from-start"]);
    assert!(!watched.status.success());
    assert!(
        stdout(&watched).contains("cancelled"),
        "{}",
        stdout(&watched)
    );

    // A release whose canary fails compensates, newest deployment first, then fails.
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/jobs/failing/release-rollback.toml");
    let submitted = server.synod(&["job", "submit", path.to_str().unwrap(), "--wait"]);
    assert!(!submitted.status.success(), "{}", stdout(&submitted));
    let text = stdout(&submitted);
    assert!(
        text.contains(
            "compensating (task 'canary' ended Failed): rollback-production then undeploy-staging"
        ),
        "{text}"
    );
    let failed = server.json(&["job", "list", "--state", "failed", "--json"]);
    let mut rollback = failed.as_array().unwrap().iter();
    let rollback = rollback.find(|j| j["name"] == "release-rollback").unwrap();
    let status = server.json(&[
        "job",
        "status",
        rollback["job_id"].as_str().unwrap(),
        "--json",
    ]);
    assert_eq!(status["reason"], "task 'canary' ended Failed", "{status}");
    let states = task_states(&status);
    assert_eq!(states["rollback-production"], "succeeded", "{status}");
    assert_eq!(states["undeploy-staging"], "succeeded", "{status}");

    let unknown = server.synod(&["job", "status", "no-such-job"]);
    assert!(!unknown.status.success());
    assert!(
        stderr(&unknown).contains("no job 'no-such-job'"),
        "{}",
        stderr(&unknown)
    );
    // An operator takes an agent out of service and back.
    let worker = server.agent("name", "worker-1")["agent_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let quarantined = server.synod(&["agents", "quarantine", &worker, "--reason", "disk swap"]);
    assert_success(&quarantined, &["agents", "quarantine"]);
    let state_of_worker = || {
        let agent = server.agent("agent_id", &worker);
        (agent["state"].clone(), agent["state_reason"].clone())
    };
    assert_eq!(
        state_of_worker(),
        (
            "quarantined".into(),
            "quarantined by an operator: disk swap".into()
        )
    );
    assert_success(&server.synod(&["agents", "release", &worker]), &["release"]);
    assert_eq!(state_of_worker(), ("connected".into(), "".into()));
    let unknown = server.synod(&["agents", "quarantine", "no-such-agent"]);
    assert!(!unknown.status.success());
    assert!(
        stderr(&unknown).contains("no-such-agent"),
        "{}",
        stderr(&unknown)
    );

    // Votes: the demo workers vote for the first option.
    let opened = server.synod(&[
        "vote",
        "open",
        "--question",
        "Ship build 4812?",
        "--option",
        "ship",
        "--option",
        "hold",
        "--capability",
        "worker",
        "--rule",
        "unanimous",
        "--wait",
    ]);
    assert_success(&opened, &["vote", "open"]);
    assert!(
        stdout(&opened).contains("decided: ship"),
        "{}",
        stdout(&opened)
    );
    let votes = server.json(&["vote", "list", "--state", "decided", "--json"]);
    let vote = &votes.as_array().unwrap()[0];
    assert_eq!(vote["decided"], "ship");
    let status = server.json(&[
        "vote",
        "status",
        vote["vote_id"].as_str().unwrap(),
        "--json",
    ]);
    assert_eq!(status["ballots"].as_array().unwrap().len(), 2, "{status}");
    let too_few = server.synod(&[
        "vote",
        "open",
        "--question",
        "q",
        "--option",
        "a",
        "--option",
        "b",
        "--capability",
        "worker",
        "--rule",
        "byzantine:1",
    ]);
    assert!(!too_few.status.success());
    assert!(
        stderr(&too_few).contains("rule.byzantine.f"),
        "{}",
        stderr(&too_few)
    );
    let unknown = server.synod(&["vote", "status", "no-such-vote"]);
    assert!(
        stderr(&unknown).contains("no vote 'no-such-vote'"),
        "{}",
        stderr(&unknown)
    );

    let bad_state = server.synod(&["job", "list", "--state", "sleepy"]);
    assert!(
        stderr(&bad_state).contains("--state"),
        "{}",
        stderr(&bad_state)
    );

    std::fs::write(&file, "name = \"bad\"\n[goal]\ndescription = \"x\"\n\n[[tasks]]\nid = \"a\"\nkind = \"echo\"\ndepends_on = [\"missing\"]\n").unwrap();
    let rejected = server.synod(&["job", "submit", file.to_str().unwrap()]);
    assert!(!rejected.status.success());
    let message = stderr(&rejected);
    assert!(
        message.contains("spec.tasks[0].depends_on[0]")
            && message.contains("unknown task 'missing'"),
        "{message}"
    );
}
