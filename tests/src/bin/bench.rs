//! `bench`: Synod's benchmarks, on 3-node clusters of real processes on loopback.
//! - `cluster`: committed commands/s, latency (p50/p99/p99.9) and leader fail-over time, and the
//!   same for a 3-member etcd cluster in the same run (when `etcd` is on `PATH`);
//! - `tasks`: end-to-end tasks/s and submit-to-assignment latency with a fleet of agents;
//! - `schedule`: one scheduling pass over up to thousands of agents and 100,000 pending tasks
//!   with resources and constraints, in process (placements/s and how it grows);
//! - `coordination`: decision latency of a 1,000-voter vote and release latency of a
//!   1,000-party barrier;
//! - `messaging`: messages/s and delivery latency of direct messages and pub/sub channels
//!   (durable and best-effort) with 100 agents;
//! - `federated`: seconds per FedAvg round for 10 and 50 participants with 100k- and
//!   1M-parameter models, the leader's peak memory and aggregation GB/s; `--flower` runs the
//!   same workload on Flower (flwr from PyPI) side by side.
//!
//! ```text
//!   cargo build --release -p synod-coordinator --bin synod
//!   cargo run --release -p synod-tests --bin bench -- cluster [--writers 1,16,64,256] …
//!   cargo run --release -p synod-tests --bin bench -- tasks [--runs 5] …
//! ```
//! Progress goes to stderr, the report to stdout; `--json` adds one JSON object at the end.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use serde::Serialize;
use synod_coordinator::local_cluster::NodeOptions;

use synod_tests::bench::coordination::CoordinationArgs;
use synod_tests::bench::etcd::{find_etcd, EtcdOptions, EtcdSystem};
use synod_tests::bench::federated::FederatedArgs;
use synod_tests::bench::load::LoadPlan;
use synod_tests::bench::messaging::MessagingArgs;
use synod_tests::bench::report::{machine, Report, SystemReport};
use synod_tests::bench::schedule::ScheduleArgs;
use synod_tests::bench::synod::SynodSystem;
use synod_tests::bench::system::System;
use synod_tests::bench::tasks::TasksArgs;
use synod_tests::synod_binary;

/// Synod's benchmark program.
#[derive(Parser)]
#[command(name = "bench", version)]
struct Cli {
    #[command(subcommand)]
    command: BenchCommand,
}

#[derive(Subcommand)]
enum BenchCommand {
    /// KV puts against a 3-node loopback cluster (and etcd), then leader fail-over rounds.
    Cluster(ClusterArgs),
    /// Task throughput and submit-to-assignment latency with a fleet of agents.
    Tasks(TasksArgs),
    /// One scheduling pass over thousands of agents and pending tasks (in process).
    Schedule(ScheduleArgs),
    /// Decision latency of a vote among many agents and release latency of a large barrier.
    Coordination(CoordinationArgs),
    /// Messages/s and delivery latency of direct messages and channels with many agents.
    Messaging(MessagingArgs),
    /// Seconds per FedAvg round, coordinator memory and aggregation throughput (and Flower).
    Federated(FederatedArgs),
}

/// Flags of `bench cluster`.
#[derive(Args, Serialize, Debug)]
struct ClusterArgs {
    /// Concurrent closed-loop writer counts to measure, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64,256")]
    writers: Vec<usize>,
    /// Measured seconds per writer count.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Warm-up seconds before each measurement.
    #[arg(long, default_value_t = 1)]
    warmup_seconds: u64,
    /// Bytes of each value written.
    #[arg(long, default_value_t = 256)]
    payload_bytes: usize,
    /// Leader fail-over rounds per system (0 skips them).
    #[arg(long, default_value_t = 5)]
    failovers: usize,
    /// Writers sharing one client connection.
    #[arg(long, default_value_t = 16)]
    writers_per_connection: usize,
    /// Raft heartbeat interval of both systems, ms.
    #[arg(long, default_value_t = 50)]
    heartbeat_ms: u64,
    /// Minimum election timeout of Synod, ms (it picks up to twice this). Default: Synod's own
    /// default, 200.
    #[arg(long, default_value_t = 200)]
    synod_election_timeout_ms: u64,
    /// etcd's `--election-timeout`, ms; etcd requires at least 5 × --heartbeat-ms, so 300 is
    /// its lowest value with 50 ms heartbeats (its own default is 1000).
    #[arg(long, default_value_t = 300)]
    etcd_election_timeout_ms: u64,
    /// Measure Synod only.
    #[arg(long)]
    skip_etcd: bool,
    /// Also print the results as one JSON object.
    #[arg(long)]
    json: bool,
}

impl ClusterArgs {
    fn validate(&self) -> anyhow::Result<()> {
        if self.writers.is_empty() || self.writers.iter().any(|w| *w == 0 || *w > 10_000) {
            bail!("--writers: give 1 to 10000 writers per level, e.g. 1,16,64,256");
        }
        if self.seconds == 0 || self.seconds > 600 || self.warmup_seconds > 60 {
            bail!("--seconds must be 1-600 and --warmup-seconds at most 60");
        }
        if self.payload_bytes > 512 * 1024 {
            bail!("--payload-bytes: at most 524288");
        }
        if self.writers_per_connection == 0 || self.failovers > 100 {
            bail!("--writers-per-connection must be positive and --failovers at most 100");
        }
        if self.heartbeat_ms == 0 || self.etcd_election_timeout_ms < 5 * self.heartbeat_ms {
            bail!(
                "--etcd-election-timeout-ms must be at least 5 × --heartbeat-ms (etcd requires it)"
            );
        }
        if self.synod_election_timeout_ms <= self.heartbeat_ms {
            bail!("--synod-election-timeout-ms must exceed --heartbeat-ms");
        }
        Ok(())
    }

    fn plan(&self, writers: usize) -> LoadPlan {
        LoadPlan {
            writers,
            warmup: Duration::from_secs(self.warmup_seconds),
            measure: Duration::from_secs(self.seconds),
            payload_bytes: self.payload_bytes,
            key_prefix: format!("bench/{writers}w"),
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    // The SDK's warnings (an agent's session lost, say) on stderr; RUST_LOG overrides.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let command = Cli::parse().command;
    let work = async move {
        match command {
            BenchCommand::Cluster(args) => run(args).await,
            BenchCommand::Tasks(args) => run_tasks(args).await,
            BenchCommand::Schedule(args) => run_schedule(&args),
            BenchCommand::Coordination(args) => run_coordination(args).await,
            BenchCommand::Messaging(args) => run_messaging(args).await,
            BenchCommand::Federated(args) => run_federated(args).await,
        }
    };
    let outcome = tokio::select! {
        outcome = work => outcome,
        signal = stop_signal() => Err(anyhow::anyhow!("stopped by {signal}; its clusters were shut down")),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Waits for Ctrl-C or SIGTERM. The run in progress is then dropped, and with it its clusters,
/// whose nodes stop as they drop instead of being left running.
async fn stop_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            return tokio::select! {
                _ = tokio::signal::ctrl_c() => "Ctrl-C",
                _ = term.recv() => "SIGTERM",
            };
        }
    }
    let _ = tokio::signal::ctrl_c().await;
    "Ctrl-C"
}

async fn run(args: ClusterArgs) -> anyhow::Result<()> {
    args.validate()?;
    let synod_binary = synod_binary()?;
    let etcd_binary = if args.skip_etcd { None } else { etcd_on_path() };

    let mut systems = vec![bench_synod(&args, &synod_binary).await?];
    if let Some(etcd_binary) = etcd_binary {
        systems.push(bench_etcd(&args, &etcd_binary).await?);
    }
    let settings = serde_json::to_value(&args)?;
    let report = Report::new(settings, machine(), systems);
    println!("{}", report.render());
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    }
    Ok(())
}

async fn run_tasks(args: TasksArgs) -> anyhow::Result<()> {
    let report = synod_tests::bench::tasks::run(&args, &synod_binary()?).await?;
    println!("{}", report.render());
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    }
    Ok(())
}

async fn run_coordination(args: CoordinationArgs) -> anyhow::Result<()> {
    let report = synod_tests::bench::coordination::run(&args, &synod_binary()?).await?;
    println!("{}", report.render());
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    }
    Ok(())
}

async fn run_messaging(args: MessagingArgs) -> anyhow::Result<()> {
    let report = synod_tests::bench::messaging::run(&args, &synod_binary()?).await?;
    println!("{}", report.render());
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    }
    Ok(())
}

async fn run_federated(args: FederatedArgs) -> anyhow::Result<()> {
    let report = synod_tests::bench::federated::run(&args, &synod_binary()?).await?;
    println!("{}", report.render());
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    }
    Ok(())
}

fn run_schedule(args: &ScheduleArgs) -> anyhow::Result<()> {
    let results = synod_tests::bench::schedule::run(args)?;
    println!("{}", synod_tests::bench::schedule::render(&results));
    if args.json {
        println!("{}", serde_json::to_string(&results)?);
    }
    Ok(())
}

fn etcd_on_path() -> Option<std::path::PathBuf> {
    let found = find_etcd();
    if found.is_none() {
        eprintln!("etcd not found (install: apt-get install etcd-server); measuring Synod only");
    }
    found
}

async fn bench_synod(args: &ClusterArgs, binary: &std::path::Path) -> anyhow::Result<SystemReport> {
    eprintln!("synod: starting 3 nodes of {}", binary.display());
    let options = NodeOptions {
        heartbeat_ms: args.heartbeat_ms,
        election_timeout_min_ms: args.synod_election_timeout_ms,
        log: "warn".into(),
        ..NodeOptions::default()
    };
    let system = SynodSystem::start(binary, options)
        .await
        .context("starting the Synod cluster")?;
    run_system(system, args).await
}

async fn bench_etcd(args: &ClusterArgs, binary: &std::path::Path) -> anyhow::Result<SystemReport> {
    eprintln!("etcd: starting 3 members of {}", binary.display());
    let options = EtcdOptions {
        heartbeat_ms: args.heartbeat_ms,
        election_timeout_ms: args.etcd_election_timeout_ms,
    };
    let system = EtcdSystem::start(binary, options)
        .await
        .context("starting the etcd cluster")?;
    run_system(system, args).await
}

/// Every writer level, then the fail-over rounds; the system is stopped when this returns.
async fn run_system<S: System>(mut system: S, args: &ClusterArgs) -> anyhow::Result<SystemReport> {
    let mut levels = Vec::new();
    for writers in &args.writers {
        let plan = args.plan(*writers);
        let level = synod_tests::bench::level::measure(&system, &plan, args.writers_per_connection)
            .await
            .with_context(|| format!("{} at {writers} writers", system.name()))?;
        eprintln!(
            "  {} {:>4} writers: {:>7.0} ops/s, p50 {:.2} ms, p99 {:.2} ms, {} errors",
            system.name(),
            writers,
            level.ops_per_sec,
            level.p50_ms,
            level.p99_ms,
            level.errors
        );
        levels.push(level);
    }
    let failover = match args.failovers {
        0 => None,
        rounds => Some(synod_tests::bench::failover::measure(&mut system, rounds).await?),
    };
    Ok(SystemReport {
        system: system.name().into(),
        levels,
        failover,
    })
}
