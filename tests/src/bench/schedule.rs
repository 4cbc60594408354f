//! `bench schedule`: the leader's scheduling pass over a large replicated state, in process —
//! agents with resources and labels, pending tasks with resources and label constraints —
//! timed the way the runtime runs it: candidates from the state, ready tasks with their needs,
//! then one batch placement.
//!
//! ```text
//!   State (apply: RegisterAgent × A, SubmitJob × T/10,000)
//!     └─► pass: candidate_of × A ─► ready_tasks + needs_of × T ─► place_batch ─► placements
//!   report: per (agents, tasks) the median pass time, split, and placements/s
//! ```

use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Args;
use serde::Serialize;
use synod_coordinator::runtime::strategy_of;
use synod_coordinator::scheduler::{
    place_batch, Constraint, ConstraintOp, RoundRobinCursor, Strategy as Placement,
};
use synod_coordinator::state::jobs::{
    AttemptRef, Criterion, Goal, JobSpec, RetryPolicy, Strategy, TaskSpec, TASKS_MAX,
};
use synod_coordinator::state::{placement, Command, Meta, Registration, State};

/// Flags of `bench schedule`.
#[derive(Args, Serialize, Debug, Clone)]
pub struct ScheduleArgs {
    /// Agent counts to measure, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "100,1000,2000")]
    pub agents: Vec<usize>,
    /// Pending task counts to measure, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "10000,100000")]
    pub tasks: Vec<usize>,
    /// Passes timed per combination; the report gives the median.
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Most ready tasks one pass reads, as the runtime's cap (4096); 0 reads every pending
    /// task.
    #[arg(long, default_value_t = 0)]
    pub pass_tasks: usize,
    /// Also print the results as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// One (agents, tasks) combination.
#[derive(Debug, Clone, Serialize)]
pub struct PassResult {
    /// Agents registered and connected.
    pub agents: usize,
    /// Tasks pending (ready).
    pub tasks: usize,
    /// Placements the pass made (every free slot that some task fits).
    pub placed: usize,
    /// Median whole pass, ms.
    pub pass_ms: f64,
    /// Of which: building the candidates, ms.
    pub candidates_ms: f64,
    /// Of which: reading the ready tasks and their needs, ms.
    pub tasks_ms: f64,
    /// Of which: the batch placement, ms.
    pub place_ms: f64,
    /// Placements per second of whole pass.
    pub placements_per_sec: f64,
}

/// Runs every combination; progress on stderr.
pub fn run(args: &ScheduleArgs) -> anyhow::Result<Vec<PassResult>> {
    if args.runs == 0 || args.agents.iter().chain(&args.tasks).any(|n| *n == 0) {
        bail!("--runs, --agents and --tasks must be positive");
    }
    let mut results = Vec::new();
    for &agents in &args.agents {
        for &tasks in &args.tasks {
            let state = build_state(agents, tasks)?;
            let read = match args.pass_tasks {
                0 => usize::MAX,
                cap => cap,
            };
            let result = measure(&state, agents, tasks, args.runs, read);
            eprintln!(
                "  {agents:>5} agents, {tasks:>6} tasks: {} placed in {:.2} ms ({:.0}/s)",
                result.placed, result.pass_ms, result.placements_per_sec
            );
            results.push(result);
        }
    }
    Ok(results)
}

/// The report table.
pub fn render(results: &[PassResult]) -> String {
    let mut out = String::from(
        "agents   tasks  placed   pass ms  candidates ms  tasks ms  place ms  placements/s\n",
    );
    for r in results {
        out.push_str(&format!(
            "{:>6} {:>7} {:>7} {:>9.2} {:>14.2} {:>9.2} {:>9.2} {:>13.0}\n",
            r.agents,
            r.tasks,
            r.placed,
            r.pass_ms,
            r.candidates_ms,
            r.tasks_ms,
            r.place_ms,
            r.placements_per_sec
        ));
    }
    out
}

const ZONES: [&str; 3] = ["eu", "us", "ap"];

/// A state with `agents` connected agents and `tasks` ready tasks, built by applying commands.
fn build_state(agents: usize, tasks: usize) -> anyhow::Result<State> {
    let mut state = State::default();
    let mut index = 0;
    let mut apply = |state: &mut State, command: Command| {
        index += 1;
        state.apply(
            &command,
            Meta {
                index,
                now_ms: 1_000,
            },
        )
    };
    for i in 0..agents {
        if let Err(rejection) = apply(&mut state, Command::RegisterAgent(agent(i))) {
            bail!("registering agent {i}: {rejection}");
        }
    }
    for (job, start) in (0..tasks).step_by(TASKS_MAX).enumerate() {
        let count = TASKS_MAX.min(tasks - start);
        let command = Command::SubmitJob {
            job_id: format!("job-{job:04}"),
            spec: job_spec(start, count),
        };
        if let Err(rejection) = apply(&mut state, command) {
            bail!("submitting job {job}: {rejection}");
        }
    }
    Ok(state)
}

/// Agent `i`: 16 cpu, 64 GiB, 8 slots, a zone; every tenth has a GPU.
fn agent(i: usize) -> Registration {
    let mut resources = vec![("cpu".to_owned(), 16.0), ("mem_mb".to_owned(), 65_536.0)];
    if i.is_multiple_of(10) {
        resources.push(("gpu".to_owned(), 1.0));
    }
    Registration {
        agent_id: format!("agent-{i:05}"),
        session_id: format!("session-{i}"),
        session_token: format!("token-{i}"),
        resume_token: None,
        name: format!("agent-{i}"),
        capabilities: ["py".to_owned()].into(),
        labels: [("zone".to_owned(), ZONES[i % 3].to_owned())].into(),
        resources: resources.into_iter().collect(),
        max_concurrent: 8,
        breaker: Default::default(),
    }
}

/// Tasks `start..start + count`: 1-4 cpu and some memory each; a third constrained to a zone
/// or two, one in twenty needing a GPU; strategies mixed.
fn job_spec(start: usize, count: usize) -> JobSpec {
    let tasks = (start..start + count).map(task).collect();
    JobSpec {
        name: "schedule-bench".into(),
        goal: Goal {
            description: "bench".into(),
            criterion: Criterion::AllTasks,
        },
        tasks,
        labels: Default::default(),
        priority: 0,
        timeout_ms: 0,
    }
}

fn task(i: usize) -> TaskSpec {
    let mut resources = vec![
        ("cpu".to_owned(), (1 + i % 4) as f64),
        ("mem_mb".to_owned(), 1_024.0 * (1 + i % 8) as f64),
    ];
    if i.is_multiple_of(20) {
        resources.push(("gpu".to_owned(), 1.0));
    }
    let constraints = match i % 3 {
        0 => vec![Constraint {
            key: "zone".into(),
            op: ConstraintOp::Equals(ZONES[i % 9 / 3].into()),
        }],
        1 => vec![Constraint {
            key: "zone".into(),
            op: ConstraintOp::In(vec!["eu".into(), "us".into()]),
        }],
        _ => Vec::new(),
    };
    let strategy = [
        Strategy::LeastLoaded,
        Strategy::Capability,
        Strategy::RoundRobin,
    ][i % 3];
    TaskSpec {
        id: format!("t{i:06}"),
        kind: "work".into(),
        description: String::new(),
        payload: Vec::new(),
        depends_on: Vec::new(),
        conditions: Default::default(),
        required_capabilities: ["py".to_owned()].into(),
        preferred_labels: Default::default(),
        constraints,
        resources: resources.into_iter().collect(),
        anti_affinity_group: String::new(),
        timeout_ms: 0,
        retry: RetryPolicy::default(),
        strategy,
        fallback_strategy: None,
        bid_window_ms: 0,
        auction_rounds: 0,
        fallback: None,
        fan_out: None,
        child_job: None,
        compensation_task_id: String::new(),
    }
}

/// Times `runs` passes over `state` (each from the same state, reading at most `read` ready
/// tasks) and keeps the median.
fn measure(state: &State, agents: usize, tasks: usize, runs: usize, read: usize) -> PassResult {
    let mut passes: Vec<(Duration, Duration, Duration, usize)> = (0..runs)
        .map(|_| {
            let started = Instant::now();
            let mut candidates: Vec<_> = state
                .agents
                .accepting_work()
                .map(|agent| placement::candidate_of(&state.jobs, agent, 2_000))
                .collect();
            let candidates_done = Instant::now();
            let ready: Vec<(AttemptRef, _, Placement)> = state
                .jobs
                .ready_tasks(2_000)
                .take(read)
                .map(|ready| {
                    let attempt = AttemptRef {
                        job_id: ready.job.id.clone(),
                        task_id: ready.task_id.to_owned(),
                        attempt: ready.next_attempt(),
                    };
                    let needs = placement::needs_of(&ready.job.id, ready.spec);
                    (attempt, needs, strategy_of(ready.spec.strategy))
                })
                .collect();
            let tasks_done = Instant::now();
            let plan = place_batch(&ready, &mut candidates, &mut RoundRobinCursor::default());
            let placed_done = Instant::now();
            (
                candidates_done - started,
                tasks_done - candidates_done,
                placed_done - tasks_done,
                plan.assigned.len(),
            )
        })
        .collect();
    passes.sort_by_key(|(c, t, p, _)| *c + *t + *p);
    let (candidates, ready, place, placed) = passes[passes.len() / 2];
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let pass = candidates + ready + place;
    PassResult {
        agents,
        tasks,
        placed,
        pass_ms: ms(pass),
        candidates_ms: ms(candidates),
        tasks_ms: ms(ready),
        place_ms: ms(place),
        placements_per_sec: placed as f64 / pass.as_secs_f64(),
    }
}
