//! AssignTask applies the same placement rules as the scheduler: label constraints, resources
//! held while assigned (and given back when the attempt ends) and anti-affinity within a job.

use super::*;
use crate::scheduler::{Constraint, ConstraintOp};
use crate::state::Command;

/// Agents `big` (4 cpu, zone eu) and `small` (1 cpu, zone us), 4 slots each.
fn harness(job: JobSpec) -> Harness {
    let mut h = Harness::new();
    for (id, cpu, zone) in [("big", 4.0, "eu"), ("small", 1.0, "us")] {
        let mut agent = registration(id, &[], 4);
        agent.resources = [("cpu".to_owned(), cpu)].into();
        agent.labels = [("zone".to_owned(), zone.to_owned())].into();
        h.ok(Command::RegisterAgent(agent));
    }
    h.ok(submit("j", job));
    h
}

fn cpu_tasks(count: usize, cpu: f64) -> JobSpec {
    let mut job = spec((0..count).map(|i| task(&format!("t{i}"), &[])).collect());
    for task in &mut job.tasks {
        task.resources = [("cpu".to_owned(), cpu)].into();
    }
    job
}

#[test]
fn resources_are_held_while_assigned_and_given_back_after() {
    let mut h = harness(cpu_tasks(3, 2.0));
    h.ok(assign("j", "t0", 1, "big"));
    h.ok(assign("j", "t1", 1, "big"));
    let rejection = h.rejected(assign("j", "t2", 1, "big"));
    assert_eq!(
        rejection.to_string(),
        "agent 'big' cannot take the task: resource 'cpu': needs 2, 0 free"
    );
    let rejection = h.rejected(assign("j", "t2", 1, "small"));
    assert_eq!(
        rejection.to_string(),
        "agent 'small' cannot take the task: resource 'cpu': needs 2, 1 free"
    );
    h.ok(start("j", "t0", 1, "big"));
    h.ok(succeed("j", "t0", 1, "big", "done"));
    h.ok(assign("j", "t2", 1, "big"));
    assert_eq!(h.task("j", "t2").agent.as_deref(), Some("big"));
}

#[test]
fn label_constraints_hold_at_apply() {
    let mut job = spec(vec![task("eu-only", &[])]);
    job.tasks[0].constraints = vec![Constraint {
        key: "zone".into(),
        op: ConstraintOp::Equals("eu".into()),
    }];
    let mut h = harness(job);
    let rejection = h.rejected(assign("j", "eu-only", 1, "small"));
    assert_eq!(
        rejection.to_string(),
        "agent 'small' cannot take the task: constraint on label 'zone' not satisfied"
    );
    h.ok(assign("j", "eu-only", 1, "big"));
}

#[test]
fn anti_affinity_keeps_a_group_apart_and_other_jobs_are_free() {
    let mut job = spec(vec![task("r0", &[]), task("r1", &[]), task("other", &[])]);
    job.tasks[0].anti_affinity_group = "replicas".into();
    job.tasks[1].anti_affinity_group = "replicas".into();
    let mut h = harness(job.clone());
    h.ok(submit("k", job));
    h.ok(assign("j", "r0", 1, "big"));
    let rejection = h.rejected(assign("j", "r1", 1, "big"));
    assert_eq!(
        rejection.to_string(),
        "agent 'big' cannot take the task: agent already runs a task of anti-affinity group 'j/replicas'"
    );
    h.ok(assign("j", "other", 1, "big"));
    h.ok(assign("k", "r0", 1, "big"));
    h.ok(assign("j", "r1", 1, "small"));
}

#[test]
fn a_ready_task_no_live_agent_can_take_ends_unsatisfiable_and_fails_the_job() {
    let mut job = spec(vec![task("render", &[]), task("after", &["render"])]);
    job.tasks[0].required_capabilities = ["gpu".to_owned()].into();
    let mut h = Harness::new();
    h.ok(register("gpu-box", &["gpu"], 1));
    h.ok(submit("j", job));
    let mark = || Command::MarkUnsatisfiable {
        job_id: "j".into(),
        task_id: "render".into(),
    };
    assert_eq!(
        h.rejected(mark()).to_string(),
        "task 'render' of job 'j' can still be placed"
    );
    h.ok(Command::ExpireAgent {
        agent_id: "gpu-box".into(),
        session_id: "gpu-box-s1".into(),
    });
    let seq = h.next_sequence("j");
    h.ok(mark());
    let task = h.task("j", "render");
    assert_eq!(task.state, TaskState::Unsatisfiable);
    assert_eq!(task.error.as_deref(), Some("no agent offers 'gpu'"));
    assert_eq!(h.task("j", "after").state, TaskState::Skipped);
    assert_eq!(h.job("j").state, JobState::Failed);
    assert_eq!(
        h.events_from("j", seq)[0],
        JobEventKind::TaskUnsatisfiable {
            task_id: "render".into(),
            reason: "no agent offers 'gpu'".into(),
        }
    );
    assert_eq!(
        h.rejected(mark()).to_string(),
        "job 'j' already finished (Failed)"
    );
}

#[test]
fn an_agent_failing_in_a_row_is_quarantined_then_probed_then_trusted_again() {
    use crate::state::agents::{BreakerPolicy, Circuit};
    let mut h = Harness::new();
    let mut flaky = registration("flaky", &[], 4);
    flaky.breaker = BreakerPolicy {
        failures_max: 2,
        cooldown_ms: 1_000,
    };
    h.ok(Command::RegisterAgent(flaky));
    // One single-task job each, so a failure ends only its own job.
    let jobs: Vec<String> = (0..6).map(|i| format!("j{i}")).collect();
    for job in &jobs {
        h.ok(submit(job, spec(vec![task("t", &[])])));
    }
    for job in &jobs[..2] {
        h.ok(assign(job, "t", 1, "flaky"));
        h.ok(start(job, "t", 1, "flaky"));
        h.ok(fail(job, "t", 1, "flaky", false));
    }
    let opened_at = h.now_ms;
    assert_eq!(
        h.agent("flaky").breaker.circuit,
        Circuit::Open {
            until_ms: opened_at + 1_000
        }
    );
    assert_eq!(
        h.rejected(assign("j2", "t", 1, "flaky")).to_string(),
        "agent 'flaky' cannot take the task: agent is draining or quarantined"
    );
    h.now_ms = opened_at + 1_000;
    h.ok(assign("j2", "t", 1, "flaky"));
    assert_eq!(h.agent("flaky").breaker.circuit, Circuit::HalfOpen);
    assert_eq!(
        h.rejected(assign("j3", "t", 1, "flaky")).to_string(),
        "agent 'flaky' cannot take the task: agent is at its concurrency limit",
        "one probe at a time"
    );
    h.ok(start("j2", "t", 1, "flaky"));
    h.ok(succeed("j2", "t", 1, "flaky", "ok"));
    assert_eq!(h.agent("flaky").breaker.circuit, Circuit::Closed);
    h.ok(assign("j3", "t", 1, "flaky"));
    h.ok(assign("j4", "t", 1, "flaky"));
}
