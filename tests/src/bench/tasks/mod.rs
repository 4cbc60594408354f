//! `bench tasks`: end-to-end task throughput and submit-to-assignment latency of a 3-node
//! cluster of real `synod` processes with a fleet of SDK agents.
//!
//! ```text
//!   per run:  LocalCluster (3 processes) ─► Fleet (N agents, one session each)
//!               ├─► throughput: a batch of no-op tasks as jobs → tasks/s to the last success
//!               └─► latency: one-task jobs at a fixed rate → submit-to-assignment p50/p99
//!   report:   every run, the medians, the issue's targets, Ray's published figures
//! ```

pub mod fleet;
pub mod jobs;
pub mod latency;
pub mod report;
pub mod throughput;

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use serde::Serialize;
use synod_coordinator::local_cluster::{LocalCluster, NodeOptions};
use synod_sdk::proto as pb;

use fleet::Fleet;
use latency::LatencyPlan;
use report::{RunResult, TasksReport};
use throughput::ThroughputPlan;

/// Flags of `bench tasks`.
#[derive(Args, Serialize, Debug, Clone)]
pub struct TasksArgs {
    /// Independent runs (a fresh cluster and fleet each); the report gives their medians.
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Connected agents.
    #[arg(long, default_value_t = 32)]
    pub agents: usize,
    /// Tasks each agent runs at once.
    #[arg(long, default_value_t = 64)]
    pub max_concurrent: u32,
    /// Tasks in the throughput batch.
    #[arg(long, default_value_t = 100_000)]
    pub tasks: usize,
    /// Tasks per job in the throughput batch.
    #[arg(long, default_value_t = 1_000)]
    pub tasks_per_job: usize,
    /// Concurrent submitters of the throughput batch.
    #[arg(long, default_value_t = 4)]
    pub submitters: usize,
    /// Offered rate of the latency run, tasks/s (one task per job).
    #[arg(long, default_value_t = 1_000)]
    pub rate: u32,
    /// Measured seconds of the latency run.
    #[arg(long, default_value_t = 10)]
    pub latency_seconds: u64,
    /// Placement strategy: round_robin, least_loaded or capability.
    #[arg(long, default_value = "least_loaded")]
    pub strategy: String,
    /// Skip the throughput batch.
    #[arg(long)]
    pub skip_throughput: bool,
    /// Skip the latency run.
    #[arg(long)]
    pub skip_latency: bool,
    /// Also print the results as one JSON object.
    #[arg(long)]
    pub json: bool,
}

impl TasksArgs {
    fn validate(&self) -> anyhow::Result<pb::AssignmentStrategy> {
        if self.runs == 0 || self.runs > 20 {
            bail!("--runs must be 1-20");
        }
        if self.agents == 0 || self.agents > 2_000 || self.max_concurrent == 0 {
            bail!("--agents must be 1-2000 and --max-concurrent positive");
        }
        if self.tasks == 0 || self.tasks_per_job == 0 || self.tasks_per_job > 10_000 {
            bail!("--tasks must be positive and --tasks-per-job 1-10000 (a job's limit)");
        }
        if self.submitters == 0 || self.rate == 0 || self.rate > 100_000 {
            bail!("--submitters must be positive and --rate 1-100000");
        }
        if self.latency_seconds == 0 || self.latency_seconds > 600 {
            bail!("--latency-seconds must be 1-600");
        }
        match self.strategy.as_str() {
            "round_robin" => Ok(pb::AssignmentStrategy::RoundRobin),
            "least_loaded" => Ok(pb::AssignmentStrategy::LeastLoaded),
            "capability" => Ok(pb::AssignmentStrategy::Capability),
            other => bail!(
                "--strategy: '{other}' is not one of round_robin, least_loaded, capability \
                 (auctions wait out a bid window by design)"
            ),
        }
    }
}

/// Runs `bench tasks` against clusters of `binary`; prints progress to stderr and returns the
/// report.
pub async fn run(args: &TasksArgs, binary: &Path) -> anyhow::Result<TasksReport> {
    let strategy = args.validate()?;
    let mut runs = Vec::new();
    for run in 1..=args.runs {
        eprintln!(
            "run {run}/{}: starting 3 nodes and {} agents",
            args.runs, args.agents
        );
        let result = one_run(args, binary, strategy)
            .await
            .with_context(|| format!("run {run}"))?;
        eprintln!("  {}", result.summary());
        runs.push(result);
    }
    Ok(TasksReport::new(serde_json::to_value(args)?, runs))
}

async fn one_run(
    args: &TasksArgs,
    binary: &Path,
    strategy: pb::AssignmentStrategy,
) -> anyhow::Result<RunResult> {
    let options = NodeOptions {
        log: "warn".into(),
        ..NodeOptions::default()
    };
    let cluster = LocalCluster::start(binary, 3, options)?;
    let leader = cluster.wait_for_leader(Duration::from_secs(60)).await?;
    let mut addrs = cluster.addrs();
    let leader_addr = cluster.addr(leader).to_owned();
    addrs.sort_by_key(|addr| *addr != leader_addr);
    let follower = addrs[1].clone();
    let fleet = Fleet::start(&addrs, args.agents, args.max_concurrent).await?;

    let throughput = if args.skip_throughput {
        None
    } else {
        let plan = ThroughputPlan {
            tasks: args.tasks,
            tasks_per_job: args.tasks_per_job,
            submitters: args.submitters,
            strategy,
        };
        Some(throughput::measure(&plan, &addrs, &follower).await?)
    };
    let latency = if args.skip_latency {
        None
    } else {
        let plan = LatencyPlan {
            rate: args.rate,
            warmup: Duration::from_secs(1),
            measure: Duration::from_secs(args.latency_seconds),
            connections: 4,
            strategy,
        };
        Some(latency::measure(&plan, &addrs, fleet.clock.clone()).await?)
    };
    drop(fleet);
    drop(cluster);
    Ok(RunResult {
        throughput,
        latency,
    })
}
