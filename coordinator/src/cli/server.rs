//! `synod server` and `synod dev`: run one coordinator node in the foreground.

use std::path::PathBuf;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, NodeConfig};
use crate::shutdown::cancel_on_signal;

/// Flags of `synod server`. Each overrides the config file's key of the same name.
#[derive(clap::Args)]
pub struct ServerArgs {
    /// TOML config file; flags and SYNOD_* variables override its keys.
    #[arg(long, env = "SYNOD_CONFIG")]
    config: Option<PathBuf>,
    /// Node id, unique in the cluster, never 0 (key `id`).
    #[arg(long, env = "SYNOD_ID")]
    id: Option<u64>,
    /// Address to listen on for clients and peers, e.g. 127.0.0.1:7101 (key `listen`).
    #[arg(long, env = "SYNOD_LISTEN")]
    listen: Option<String>,
    /// Address others reach this node at; defaults to --listen (key `advertise`).
    #[arg(long, env = "SYNOD_ADVERTISE")]
    advertise: Option<String>,
    /// Directory for the node's log, snapshots and metadata (key `data_dir`).
    #[arg(long, env = "SYNOD_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Members of a new cluster: 1=host:port,2=host:port,... Omit on a node that will join
    /// with `synod cluster add-learner` (key `initial_members`).
    #[arg(long, env = "SYNOD_INITIAL_MEMBERS")]
    initial_members: Option<String>,
    /// Leader heartbeat interval in ms (key `raft.heartbeat_ms`).
    #[arg(long, env = "SYNOD_HEARTBEAT_MS")]
    heartbeat_ms: Option<u64>,
    /// Minimum election timeout in ms (key `raft.election_timeout_min_ms`).
    #[arg(long, env = "SYNOD_ELECTION_TIMEOUT_MIN_MS")]
    election_timeout_min_ms: Option<u64>,
    /// Maximum election timeout in ms (key `raft.election_timeout_max_ms`).
    #[arg(long, env = "SYNOD_ELECTION_TIMEOUT_MAX_MS")]
    election_timeout_max_ms: Option<u64>,
    /// Snapshot and compact the log every this many entries (key `raft.snapshot_logs`).
    #[arg(long, env = "SYNOD_SNAPSHOT_LOGS")]
    snapshot_logs: Option<u64>,
    /// Largest client message in bytes (key `limits.message_bytes_max`).
    #[arg(long, env = "SYNOD_MESSAGE_BYTES_MAX")]
    message_bytes_max: Option<usize>,
    /// Largest checkpoint a save may stream, in bytes (key `limits.checkpoint_bytes_max`).
    #[arg(long, env = "SYNOD_CHECKPOINT_BYTES_MAX")]
    checkpoint_bytes_max: Option<usize>,
    /// Most batches replicated at once (key `limits.batches_in_flight_max`).
    #[arg(long, env = "SYNOD_BATCHES_IN_FLIGHT_MAX")]
    batches_in_flight_max: Option<usize>,
    /// Failed attempts in a row that quarantine an agent; 0 turns the breaker off (key
    /// `agents.breaker_failures`).
    #[arg(long, env = "SYNOD_BREAKER_FAILURES")]
    breaker_failures: Option<u32>,
    /// How long a quarantine lasts before one probe task (key `agents.breaker_cooldown_ms`).
    #[arg(long, env = "SYNOD_BREAKER_COOLDOWN_MS")]
    breaker_cooldown_ms: Option<u64>,
    /// A ready task no live agent could ever take ends unsatisfiable after this long (key
    /// `agents.unsatisfiable_ms`).
    #[arg(long, env = "SYNOD_UNSATISFIABLE_MS")]
    unsatisfiable_ms: Option<u64>,
    /// Log filter, e.g. info or synod_coordinator=debug.
    #[arg(long, env = "SYNOD_LOG", default_value = "info")]
    log: String,
}

impl ServerArgs {
    /// The file's settings with flags and environment applied on top, validated.
    fn node_config(&self) -> anyhow::Result<NodeConfig> {
        let mut config = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        macro_rules! apply {
            ($($flag:ident => $($field:ident).+),* $(,)?) => {$(
                if let Some(value) = self.$flag.clone() { config.$($field).+ = value.into(); }
            )*};
        }
        apply!(id => id, listen => listen, initial_members => initial_members,
            heartbeat_ms => raft.heartbeat_ms,
            election_timeout_min_ms => raft.election_timeout_min_ms,
            election_timeout_max_ms => raft.election_timeout_max_ms,
            snapshot_logs => raft.snapshot_logs,
            message_bytes_max => limits.message_bytes_max,
            batches_in_flight_max => limits.batches_in_flight_max,
            checkpoint_bytes_max => limits.checkpoint_bytes_max,
            unsatisfiable_ms => agents.unsatisfiable_ms,
            breaker_failures => agents.breaker_failures,
            breaker_cooldown_ms => agents.breaker_cooldown_ms);
        if let Some(advertise) = &self.advertise {
            config.advertise = Some(advertise.clone());
        }
        if let Some(dir) = &self.data_dir {
            config.data_dir = Some(dir.clone());
        }
        Ok(config.validate()?)
    }
}

/// Flags of `synod dev`.
#[derive(clap::Args)]
pub struct DevArgs {
    /// Address to listen on.
    #[arg(long, env = "SYNOD_LISTEN", default_value = super::DEV_ADDR)]
    listen: String,
    /// Keep data here instead of a temporary directory removed on exit.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Log filter.
    #[arg(long, env = "SYNOD_LOG", default_value = "warn")]
    log: String,
    /// Start no demo agents.
    #[arg(long)]
    no_agents: bool,
}

/// Runs `synod server` until SIGTERM or Ctrl-C.
pub async fn run_server(args: ServerArgs) -> anyhow::Result<()> {
    let config = args.node_config()?;
    super::init_logging(&args.log);
    run_node(config, None).await
}

/// Runs `synod dev`: a one-node cluster, ready at once.
pub async fn run_dev(args: DevArgs) -> anyhow::Result<()> {
    super::init_logging(&args.log);
    let temp = tempfile::Builder::new().prefix("synod-dev-").tempdir()?;
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| temp.path().to_path_buf());
    let config = Config {
        id: 1,
        listen: args.listen.clone(),
        data_dir: Some(data_dir.clone()),
        initial_members: format!("1={}", args.listen),
        raft: crate::config::RaftSettings {
            election_timeout_min_ms: 100,
            election_timeout_max_ms: 200,
            ..Default::default()
        },
        ..Config::default()
    }
    .validate()?;
    let (ready, bound) = tokio::sync::oneshot::channel::<std::net::SocketAddr>();
    let listen = args.listen.clone();
    let agents = CancellationToken::new();
    let start_agents = (!args.no_agents).then(|| agents.clone());
    tokio::spawn(async move {
        let Ok(addr) = bound.await else { return };
        let fleet = start_agents.map(|token| start_demo_fleet(&addr.to_string(), token));
        println!("synod dev: single-node cluster serving at {addr}");
        println!("  data:   {}", data_dir.display());
        if let Some(count) = fleet {
            println!("  agents: {count} demo agents (planner, researchers, analyzer, executor, validator, workers)");
        }
        println!("  try:    synod agents list");
        println!("          synod job submit examples/jobs/goal-research.toml --wait");
        println!("          synod cluster status; synod kv put greeting hello");
        println!("  other clients: --addr {listen} (or SYNOD_ADDR); Ctrl-C stops");
    });
    let result = run_node(config, Some(ready)).await;
    agents.cancel();
    result
}

/// Starts the demo agents against `addr`; returns how many.
fn start_demo_fleet(addr: &str, shutdown: CancellationToken) -> usize {
    let fleet = synod_agent::demo::fleet(&[addr.to_owned()]);
    let count = fleet.len();
    for agent in fleet {
        let shutdown = shutdown.clone();
        tokio::spawn(async move { agent.run(shutdown).await });
    }
    count
}

async fn run_node(
    config: NodeConfig,
    ready: Option<tokio::sync::oneshot::Sender<std::net::SocketAddr>>,
) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    cancel_on_signal(shutdown.clone());
    let id = config.id;
    crate::node::run(config, shutdown, ready)
        .await
        .with_context(|| format!("node {id}"))
}
