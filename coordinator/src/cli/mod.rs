//! The `synod` command line: running nodes (`server`, `dev`, `demo`) and operating a cluster
//! (`cluster`, `kv`). Client commands reach any member given by `--addr` and follow the leader.

mod agents;
mod barriers;
mod checkpoints;
mod cluster;
mod demo;
mod events;
mod federations;
mod history;
mod jobs;
mod kv;
mod server;
mod votes;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Address of `synod dev`, the default target of client commands.
pub const DEV_ADDR: &str = "127.0.0.1:7100";

/// Synod: a replicated coordinator for fleets of AI agents and federated learning.
#[derive(Parser)]
#[command(name = "synod", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a coordinator node.
    Server(Box<server::ServerArgs>),
    /// Run a single-node cluster with data in a temporary directory, for development.
    Dev(server::DevArgs),
    /// Start a 3-node cluster, write through it, kill its leader and show it carry on.
    Demo(demo::DemoArgs),
    /// Inspect and change the cluster's membership.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// Read and write the replicated key-value namespace.
    #[command(subcommand)]
    Kv(kv::KvCommand),
    /// Submit, follow and cancel jobs.
    #[command(subcommand)]
    Job(jobs::JobCommand),
    /// Inspect the registered agents.
    #[command(subcommand)]
    Agents(agents::AgentsCommand),
    /// Put questions to agents and read the results.
    #[command(subcommand)]
    Vote(votes::VoteCommand),
    /// Inspect barriers.
    #[command(subcommand)]
    Barrier(barriers::BarrierCommand),
    /// List and read checkpoints.
    #[command(subcommand)]
    Checkpoint(checkpoints::CheckpointCommand),
    /// Start, inspect and follow federated-learning runs.
    #[command(subcommand)]
    Fl(federations::FlCommand),
}

/// Options shared by every client command.
#[derive(clap::Args, Clone)]
pub struct ClientArgs {
    /// Any cluster member (host:port); several may be given comma-separated.
    #[arg(long, env = "SYNOD_ADDR", default_value = DEV_ADDR, value_delimiter = ',')]
    pub addr: Vec<String>,
}

impl ClientArgs {
    /// A client for the given members.
    pub fn client(&self) -> anyhow::Result<synod_sdk::Client> {
        Ok(synod_sdk::Client::new(self.addr.clone())?)
    }
}

/// Parses the command line and runs it.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Server(args) => server::run_server(*args).await,
            Command::Dev(args) => server::run_dev(args).await,
            Command::Demo(args) => demo::run(args).await,
            Command::Cluster(command) => cluster::run(command).await,
            Command::Kv(command) => kv::run(command).await,
            Command::Job(command) => jobs::run(command).await,
            Command::Agents(command) => agents::run(command).await,
            Command::Vote(command) => votes::run(command).await,
            Command::Barrier(command) => barriers::run(command).await,
            Command::Checkpoint(command) => checkpoints::run(command).await,
            Command::Fl(command) => federations::run(command).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The async runtime: `SYNOD_WORKER_THREADS` workers (default: one per core).
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = std::env::var("SYNOD_WORKER_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| *n > 0)
    {
        builder.worker_threads(threads);
    }
    builder.enable_all().build()
}

/// Installs the log subscriber: `filter` unless `RUST_LOG` is set; logs go to stderr.
pub fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
