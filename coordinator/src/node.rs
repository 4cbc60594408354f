//! Wiring of one coordinator node: storage, Raft, proposer, gRPC services on one listener,
//! cluster bootstrap, and orderly shutdown.
//!
//! ```text
//!   TcpListener ─► tonic Server ─┬─ RaftTransport (peers)
//!                                ├─ ClusterService, KvService (clients)
//!                                └─ grpc.health.v1, reflection
//! ```

use std::sync::Arc;
use std::time::Duration;

use openraft::error::{InitializeError, RaftError};
use openraft::{BasicNode, SnapshotPolicy};
use synod_proto::v1::agent_service_server::AgentServiceServer;
use synod_proto::v1::cluster_service_server::ClusterServiceServer;
use synod_proto::v1::coordination_service_server::CoordinationServiceServer;
use synod_proto::v1::federation_service_server::FederationServiceServer;
use synod_proto::v1::job_service_server::JobServiceServer;
use synod_proto::v1::kv_service_server::KvServiceServer;
use synod_proto::v1::raft_transport_server::RaftTransportServer;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::api::{
    AgentApi, BarrierApi, ChannelApi, CheckpointApi, ClusterApi, CoordinationApi,
    CoordinationParts, ElectionApi, FederationApi, FederationService, JobApi, KvApi, LeaderRouter,
    MessageApi, VoteApi,
};
use crate::config::NodeConfig;
use crate::raft::{
    open_disk, DiskError, LogStore, NetworkFactory, PeerClients, Raft, RaftTransportService,
    StateMachineStore,
};
use crate::runtime::{
    ActingForwarder, AgentRuntime, AgentSettings, BatchLimits, FederationRuntime, Proposer,
};

/// The node could not start or failed while running.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// Storage failed.
    #[error(transparent)]
    Disk(#[from] DiskError),
    /// Raft rejected its configuration or failed.
    #[error("raft: {0}")]
    Raft(String),
    /// The listen address could not be bound.
    #[error("listen {addr}: {source}")]
    Bind {
        /// Address.
        addr: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The gRPC server failed.
    #[error("server: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// HTTP/2 receive window of a whole client connection.
const CONNECTION_WINDOW_BYTES: u32 = 64 * 1024 * 1024;
/// HTTP/2 receive window of one stream.
const STREAM_WINDOW_BYTES: u32 = 256 * 1024;
/// Largest HTTP/2 frame a client may send: a chunk of an update crosses in a few frames
/// rather than 64 of the default 16 KiB.
const FRAME_BYTES_MAX: u32 = 256 * 1024;

/// Runs a node until `shutdown` is cancelled. `ready` receives the bound address once serving.
pub async fn run(
    config: NodeConfig,
    shutdown: CancellationToken,
    ready: Option<tokio::sync::oneshot::Sender<std::net::SocketAddr>>,
) -> Result<(), NodeError> {
    let disk = open_disk(&config.data_dir)?;
    let log = LogStore::open(&config.data_dir)?;
    let state_machine =
        StateMachineStore::open(disk).map_err(|e| NodeError::Raft(e.to_string()))?;
    let state = state_machine.shared();
    let tasks_ready = state_machine.tasks_ready();
    let peers = PeerClients::default();
    let raft = Raft::new(
        config.id,
        Arc::new(raft_config(&config)?),
        NetworkFactory::new(peers.clone()),
        log.clone(),
        state_machine,
    )
    .await
    .map_err(|e| NodeError::Raft(e.to_string()))?;

    let limits = BatchLimits {
        commands_max: config.limits.batch_commands_max,
        bytes_max: config.limits.batch_bytes_max,
        in_flight_max: config.limits.batches_in_flight_max,
    };
    let proposer = Proposer::start(raft.clone(), config.id, peers.clone(), limits);
    let router = LeaderRouter::new(raft.clone(), config.id, state.clone(), peers);
    let agents = AgentRuntime::new(
        raft.clone(),
        proposer.clone(),
        state,
        tasks_ready,
        agent_settings(&config.agents),
    );
    tokio::spawn(agents.clone().run(shutdown.clone()));
    let spill_dir = config.data_dir.join("spill");
    let _ = std::fs::create_dir_all(&spill_dir);
    let federations = FederationRuntime::new(agents.clone(), spill_dir);
    tokio::spawn(federations.clone().run(shutdown.clone()));

    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| NodeError::Bind {
            addr: config.listen.to_string(),
            source,
        })?;
    let bound = listener.local_addr().map_err(|source| NodeError::Bind {
        addr: config.listen.to_string(),
        source,
    })?;
    bootstrap(&raft, &config).await?;
    tracing::info!(id = config.id, addr = %bound, "node serving");
    if let Some(ready) = ready {
        let _ = ready.send(bound);
    }

    let services = Services {
        proposer,
        router,
        log: log.clone(),
        agents,
        federations,
    };
    let served = serve(listener, &config, &raft, services, shutdown.clone()).await;
    // In-flight requests have been answered; stop Raft (a leader stops heartbeating, so the
    // others elect a successor as soon as its lease runs out) and make every queued write
    // durable before the process exits.
    tracing::info!(id = config.id, "stopping raft");
    let _ = raft.shutdown().await;
    log.flush().await?;
    tracing::info!(id = config.id, "stopped");
    served
}

fn raft_config(config: &NodeConfig) -> Result<openraft::Config, NodeError> {
    let snapshot_logs = config.raft.snapshot_logs;
    openraft::Config {
        cluster_name: "synod".into(),
        heartbeat_interval: config.raft.heartbeat_ms,
        election_timeout_min: config.raft.election_timeout_min_ms,
        election_timeout_max: config.raft.election_timeout_max_ms,
        install_snapshot_timeout: 2_000,
        max_payload_entries: 64,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(snapshot_logs),
        max_in_snapshot_log_to_keep: (snapshot_logs / 2).min(1_000),
        snapshot_max_chunk_size: 1024 * 1024,
        ..Default::default()
    }
    .validate()
    .map_err(|e| NodeError::Raft(e.to_string()))
}

/// Forms a new cluster from the initial members. Every initial member calls `initialize` with
/// the same membership, which is safe; a node with existing state skips it.
async fn bootstrap(raft: &Raft, config: &NodeConfig) -> Result<(), NodeError> {
    if config.initial_members.is_empty() {
        return Ok(());
    }
    let members: std::collections::BTreeMap<u64, BasicNode> = config
        .initial_members
        .iter()
        .map(|(id, addr)| (*id, BasicNode::new(addr.clone())))
        .collect();
    match raft.initialize(members).await {
        Ok(()) => {
            tracing::info!(members = ?config.initial_members, "initialized a new cluster");
            Ok(())
        }
        Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(()),
        Err(e) => Err(NodeError::Raft(e.to_string())),
    }
}

/// What the gRPC services are built from.
struct Services {
    proposer: Proposer,
    router: LeaderRouter,
    log: LogStore,
    agents: AgentRuntime,
    federations: FederationRuntime,
}

async fn serve(
    listener: TcpListener,
    config: &NodeConfig,
    raft: &Raft,
    services: Services,
    shutdown: CancellationToken,
) -> Result<(), NodeError> {
    let Services {
        proposer,
        router,
        log,
        agents,
        federations,
    } = services;
    let message_max = config.limits.message_bytes_max;
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<KvServiceServer<KvApi>>()
        .await;
    health_reporter
        .set_serving::<ClusterServiceServer<ClusterApi>>()
        .await;
    health_reporter
        .set_serving::<AgentServiceServer<AgentApi>>()
        .await;
    health_reporter
        .set_serving::<JobServiceServer<JobApi>>()
        .await;
    health_reporter
        .set_serving::<CoordinationServiceServer<CoordinationApi>>()
        .await;
    health_reporter
        .set_serving::<FederationServiceServer<FederationApi>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(synod_proto::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| NodeError::Raft(format!("reflection: {e}")))?;
    let barriers = BarrierApi::new(proposer.clone(), router.clone());
    let forwarder = ActingForwarder::new(proposer.forward_handler(), agents.clone());
    let transport = RaftTransportService::new(raft.clone(), forwarder);
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        // Agents may multiplex their sessions with bulk model transfers on one connection: a
        // large connection window keeps updates waiting for an upload slot from stalling the
        // connection (and with it every session's heartbeats), while the per-stream window
        // bounds what each waiting update buffers here.
        .initial_connection_window_size(Some(CONNECTION_WINDOW_BYTES))
        .initial_stream_window_size(Some(STREAM_WINDOW_BYTES))
        .max_frame_size(FRAME_BYTES_MAX)
        .add_service(
            RaftTransportServer::new(transport)
                .max_decoding_message_size(crate::raft::PEER_MESSAGE_BYTES_MAX)
                .max_encoding_message_size(crate::raft::PEER_MESSAGE_BYTES_MAX),
        )
        .add_service(
            ClusterServiceServer::new(ClusterApi::new(router.clone(), log))
                .max_decoding_message_size(message_max),
        )
        .add_service(
            KvServiceServer::new(KvApi::new(proposer.clone(), router.clone()))
                .max_decoding_message_size(message_max)
                .max_encoding_message_size(message_max),
        )
        .add_service(
            JobServiceServer::new(
                JobApi::new(proposer.clone(), router.clone()).with_runtime(agents.clone()),
            )
            .max_decoding_message_size(message_max)
            .max_encoding_message_size(message_max),
        )
        .add_service(
            CoordinationServiceServer::new(CoordinationApi::new(CoordinationParts {
                votes: VoteApi::new(proposer.clone(), router.clone(), agents.clone()),
                barriers: barriers.clone(),
                checkpoints: CheckpointApi::new(
                    proposer.clone(),
                    router.clone(),
                    config.limits.checkpoint_bytes_max,
                ),
                elections: ElectionApi::new(proposer.clone(), router.clone()),
                channels: ChannelApi::new(proposer.clone(), router.clone()),
                messages: MessageApi::new(agents.clone()),
            }))
            .max_decoding_message_size(message_max)
            .max_encoding_message_size(message_max),
        )
        .add_service(
            AgentServiceServer::new(AgentApi::new(agents, router.clone(), barriers))
                .max_decoding_message_size(message_max)
                .max_encoding_message_size(message_max),
        )
        .add_service(FederationService::new(
            FederationApi::new(proposer.clone(), router.clone(), federations),
            message_max,
        ))
        .add_service(health_service)
        .add_service(reflection)
        .serve_with_incoming_shutdown(accepted(listener), shutdown.cancelled())
        .await?;
    Ok(())
}

/// Accepted connections with Nagle's algorithm off: tonic applies its own `tcp_nodelay` only to
/// listeners it binds itself, and small replies held back by Nagle wait for delayed ACKs
/// (tens of milliseconds per request).
fn accepted(
    listener: TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    TcpListenerStream::new(listener).map(|stream| {
        let stream = stream?;
        stream.set_nodelay(true)?;
        Ok(stream)
    })
}

/// The runtime's timing from the node's `[agents]` settings.
fn agent_settings(agents: &crate::config::AgentSessionSettings) -> AgentSettings {
    AgentSettings {
        lease: Duration::from_millis(agents.lease_ms),
        heartbeat: Duration::from_millis(agents.heartbeat_ms),
        tick: Duration::from_millis(agents.tick_ms),
        bid_window: Duration::from_millis(agents.bid_window_ms),
        unsatisfiable_after: Duration::from_millis(agents.unsatisfiable_ms),
        breaker: crate::state::agents::BreakerPolicy {
            failures_max: agents.breaker_failures,
            cooldown_ms: agents.breaker_cooldown_ms,
        },
        ..AgentSettings::default()
    }
}
