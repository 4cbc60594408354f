//! Test fixtures shared by the state machine's tests: command builders, a harness that applies
//! commands at a controllable log index and leader time, and invariants checked after every
//! command.

use std::collections::{BTreeMap, BTreeSet};

use super::jobs::{
    AttemptRef, Criterion, Goal, JobRecord, JobSpec, RetryPolicy, Strategy, TaskKey, TaskRecord,
    TaskSpec,
};
use super::{
    AgentRecord, Applied, Command, Meta, Outcome, Registration, Rejection, State, TaskOutcome,
};

/// Attempt time limit of fixture tasks.
pub const TIMEOUT_MS: u64 = 5_000;
/// Leader time of the first command a harness applies.
pub const START_MS: u64 = 10_000;

/// A task with fixture defaults: kind "work", payload = its id, 3 attempts backing off
/// 1 s, 2 s, 4 s.
pub fn task(id: &str, deps: &[&str]) -> TaskSpec {
    TaskSpec {
        id: id.into(),
        kind: "work".into(),
        description: String::new(),
        payload: id.as_bytes().to_vec(),
        depends_on: deps.iter().map(|dep| dep.to_string()).collect(),
        conditions: BTreeMap::new(),
        required_capabilities: BTreeSet::new(),
        preferred_labels: BTreeMap::new(),
        constraints: Vec::new(),
        resources: BTreeMap::new(),
        anti_affinity_group: String::new(),
        timeout_ms: TIMEOUT_MS,
        retry: RetryPolicy::default(),
        strategy: Strategy::Capability,
        fallback_strategy: None,
        bid_window_ms: 0,
        auction_rounds: 0,
        fallback: None,
        fan_out: None,
        child_job: None,
        compensation_task_id: String::new(),
    }
}

/// A job whose criterion is "all tasks".
pub fn spec(tasks: Vec<TaskSpec>) -> JobSpec {
    JobSpec {
        name: "job".into(),
        goal: Goal {
            description: "do it".into(),
            criterion: Criterion::AllTasks,
        },
        tasks,
        labels: BTreeMap::new(),
        priority: 0,
        timeout_ms: 0,
    }
}

/// A job that succeeds with task `goal`.
pub fn goal_spec(goal: &str, tasks: Vec<TaskSpec>) -> JobSpec {
    let mut spec = spec(tasks);
    spec.goal.criterion = Criterion::GoalTask(goal.into());
    spec
}

/// A new agent's registration: session `<id>-s1`, token `<id>-t1`.
pub fn registration(id: &str, capabilities: &[&str], max_concurrent: u32) -> Registration {
    Registration {
        agent_id: id.into(),
        session_id: format!("{id}-s1"),
        session_token: format!("{id}-t1"),
        resume_token: None,
        name: id.into(),
        capabilities: capabilities.iter().map(|cap| cap.to_string()).collect(),
        labels: BTreeMap::new(),
        resources: BTreeMap::new(),
        max_concurrent,
        breaker: Default::default(),
    }
}

/// Registers a new agent.
pub fn register(id: &str, capabilities: &[&str], max_concurrent: u32) -> Command {
    Command::RegisterAgent(registration(id, capabilities, max_concurrent))
}

/// Submits a job.
pub fn submit(job_id: &str, spec: JobSpec) -> Command {
    Command::SubmitJob {
        job_id: job_id.into(),
        spec,
    }
}

/// Assigns an attempt.
pub fn assign(job_id: &str, task_id: &str, attempt: u32, agent_id: &str) -> Command {
    Command::AssignTask {
        job_id: job_id.into(),
        task_id: task_id.into(),
        attempt,
        agent_id: agent_id.into(),
    }
}

/// Reports an attempt started.
pub fn start(job_id: &str, task_id: &str, attempt: u32, agent_id: &str) -> Command {
    Command::StartTask {
        job_id: job_id.into(),
        task_id: task_id.into(),
        attempt,
        agent_id: agent_id.into(),
    }
}

/// Reports an attempt's result.
pub fn complete(
    job_id: &str,
    task_id: &str,
    attempt: u32,
    agent_id: &str,
    outcome: TaskOutcome,
) -> Command {
    Command::CompleteTask {
        job_id: job_id.into(),
        task_id: task_id.into(),
        attempt,
        agent_id: agent_id.into(),
        outcome,
    }
}

/// Reports success with `output`.
pub fn succeed(job_id: &str, task_id: &str, attempt: u32, agent_id: &str, output: &str) -> Command {
    let output = output.as_bytes().to_vec();
    complete(
        job_id,
        task_id,
        attempt,
        agent_id,
        TaskOutcome::Succeeded { output },
    )
}

/// Reports a failure "boom".
pub fn fail(job_id: &str, task_id: &str, attempt: u32, agent_id: &str, retryable: bool) -> Command {
    let error = "boom".into();
    complete(
        job_id,
        task_id,
        attempt,
        agent_id,
        TaskOutcome::Failed { error, retryable },
    )
}

/// Times an attempt out.
pub fn time_out(job_id: &str, task_id: &str, attempt: u32) -> Command {
    Command::TimeOutTask {
        job_id: job_id.into(),
        task_id: task_id.into(),
        attempt,
    }
}

/// Names a task.
pub fn key(job_id: &str, task_id: &str) -> TaskKey {
    TaskKey {
        job_id: job_id.into(),
        task_id: task_id.into(),
    }
}

/// Names an attempt.
pub fn attempt_ref(job_id: &str, task_id: &str, attempt: u32) -> AttemptRef {
    AttemptRef {
        job_id: job_id.into(),
        task_id: task_id.into(),
        attempt,
    }
}

/// Applies commands one per log index, at a leader time tests move by hand.
pub struct Harness {
    /// The state under test.
    pub state: State,
    /// Log index of the last applied command.
    pub index: u64,
    /// Leader time of the next command.
    pub now_ms: u64,
}

impl Harness {
    /// An empty state at [`START_MS`].
    pub fn new() -> Self {
        Self {
            state: State::default(),
            index: 0,
            now_ms: START_MS,
        }
    }

    /// Applies a command at the next index and checks the invariants.
    pub fn apply(&mut self, command: Command) -> Outcome {
        self.index += 1;
        let meta = Meta {
            index: self.index,
            now_ms: self.now_ms,
        };
        let outcome = self.state.apply(&command, meta);
        check_invariants(&self.state);
        outcome
    }

    /// Applies a command that must be accepted.
    pub fn ok(&mut self, command: Command) -> Applied {
        match self.apply(command) {
            Ok(applied) => applied,
            Err(rejection) => panic!("rejected: {rejection}"),
        }
    }

    /// Applies a command that must be rejected, and checks it changed nothing.
    pub fn rejected(&mut self, command: Command) -> Rejection {
        let before = self.state.clone();
        let rejection = self.apply(command).expect_err("the command was accepted");
        let mut after = self.state.clone();
        after.commands_applied = before.commands_applied;
        assert_eq!(after, before, "a rejected command changed the state");
        rejection
    }

    /// A job.
    pub fn job(&self, job_id: &str) -> &JobRecord {
        self.state.jobs.get(job_id).expect("job exists")
    }

    /// A task.
    pub fn task(&self, job_id: &str, task_id: &str) -> &TaskRecord {
        self.job(job_id).tasks.get(task_id).expect("task exists")
    }

    /// An agent.
    pub fn agent(&self, agent_id: &str) -> &AgentRecord {
        self.state.agents.get(agent_id).expect("agent exists")
    }

    /// Event kinds of a job from sequence `from` on.
    pub fn events_from(&self, job_id: &str, from: u64) -> Vec<super::jobs::JobEventKind> {
        let events = &self.job(job_id).events;
        events
            .iter()
            .skip(from as usize - 1)
            .map(|e| e.kind.clone())
            .collect()
    }

    /// Sequence the next event of a job will get.
    pub fn next_sequence(&self, job_id: &str) -> u64 {
        self.job(job_id).events.len() as u64 + 1
    }
}

/// Invariants that hold after every command.
pub fn check_invariants(state: &State) {
    check_agent_slots(state);
    check_indexes(state);
    for job in state.jobs.iter() {
        for (i, event) in job.events.iter().enumerate() {
            assert_eq!(
                event.sequence,
                i as u64 + 1,
                "job {} events have a gap",
                job.id
            );
        }
        let succeeded = job
            .tasks
            .values()
            .filter(|t| t.state == super::jobs::TaskState::Succeeded);
        assert_eq!(
            succeeded.count() as u32,
            job.succeeded,
            "job {} succeeded count",
            job.id
        );
    }
}

/// Each agent holds exactly the in-progress attempts assigned to it, within its limit.
fn check_agent_slots(state: &State) {
    let mut held: BTreeMap<String, BTreeSet<TaskKey>> = BTreeMap::new();
    for job in state.jobs.iter() {
        for (task_id, task) in &job.tasks {
            let in_place = matches!(
                task.role,
                super::jobs::TaskRole::FanOut(_) | super::jobs::TaskRole::ChildJob { .. }
            );
            if in_place {
                assert!(
                    task.agent.is_none(),
                    "{task_id} runs in place, not on an agent"
                );
                continue;
            }
            if task.state.is_active() {
                let agent = task.agent.clone().expect("an active task has an agent");
                held.entry(agent).or_default().insert(key(&job.id, task_id));
            }
        }
    }
    for agent in state.agents.iter() {
        let expected = held.remove(&agent.id).unwrap_or_default();
        assert_eq!(agent.running, expected, "agent {} slots", agent.id);
        assert!(agent.running.len() <= agent.max_concurrent as usize);
    }
    assert!(held.is_empty(), "attempts held by unknown agents: {held:?}");
}

/// The ready and deadline indexes match the tasks.
fn check_indexes(state: &State) {
    let ready: BTreeSet<TaskKey> = state.jobs.ready_tasks(u64::MAX).map(|r| r.key()).collect();
    let deadlines: BTreeSet<TaskKey> = state
        .jobs
        .attempt_deadlines()
        .map(|(_, a)| key(&a.job_id, &a.task_id))
        .collect();
    let (mut want_ready, mut want_deadlines) = (BTreeSet::new(), BTreeSet::new());
    for job in state.jobs.iter() {
        for (task_id, task) in &job.tasks {
            if task.state == super::jobs::TaskState::Ready {
                want_ready.insert(key(&job.id, task_id));
            }
            if task.state.is_active() && !task.is_waiting() && task.agent.is_some() {
                want_deadlines.insert(key(&job.id, task_id));
            }
        }
    }
    assert_eq!(ready, want_ready, "ready index");
    assert_eq!(state.jobs.ready_len(), want_ready.len(), "ready index size");
    assert_eq!(deadlines, want_deadlines, "deadline index");
    let job_deadlines: BTreeSet<&str> = state.jobs.timed_out_jobs(u64::MAX).collect();
    let want_job_deadlines: BTreeSet<&str> = state
        .jobs
        .iter()
        .filter(|job| !job.state.is_terminal() && job.spec.timeout_ms > 0)
        .filter(|job| job.state != super::jobs::JobState::Compensating)
        .map(|job| job.id.as_str())
        .collect();
    assert_eq!(job_deadlines, want_job_deadlines, "job deadline index");
}
