//! The batching proposer: gathers commands proposed concurrently into one Raft entry, so that
//! replication, fsync and apply are paid once per batch.
//!
//! ```text
//!   propose(cmd) ─► queue ─► [cmd, cmd, ...] up to the batch limits ─► one client_write
//!   a group of commands ─┘         (a few batches in flight at once; a group is never split)
//!   on a follower the batch is forwarded to the leader's RaftTransport.Forward instead
//! ```

use std::future::Future;
use std::sync::Arc;

use openraft::error::ClientWriteError;
use openraft::raft::responder::Responder;
use openraft::{RaftTypeConfig, ServerState};
use synod_proto::v1::RaftPayload;
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::raft::{
    decode, encode, Committed, ForwardHandler, PeerClients, ProposeError, Raft, TypeConfig,
};
use crate::runtime::clock;
use crate::state::{Command, Outcome, Proposal};

/// Limits on one batch and on batches in flight.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    /// Most commands in one entry.
    pub commands_max: usize,
    /// Most approximate bytes in one entry.
    pub bytes_max: usize,
    /// Most batches being committed at once.
    pub in_flight_max: usize,
}

impl Default for BatchLimits {
    fn default() -> Self {
        Self {
            commands_max: 4096,
            bytes_max: 512 * 1024,
            in_flight_max: 2,
        }
    }
}

/// Where one command was committed and what it produced.
#[derive(Debug, Clone)]
pub struct CommandResult {
    /// The command's outcome.
    pub outcome: Outcome,
    /// Log index of the entry.
    pub log_index: u64,
    /// Term of the entry.
    pub term: u64,
    /// Leader that committed it.
    pub leader_id: u64,
}

struct Pending {
    command: Command,
    reply: oneshot::Sender<Result<CommandResult, ProposeError>>,
}

/// Proposes commands through Raft, batching them. Cheap to clone.
#[derive(Clone)]
pub struct Proposer {
    /// Groups of commands, each kept in one batch.
    queue: mpsc::Sender<Vec<Pending>>,
    writer: BatchWriter,
}

#[derive(Clone)]
struct BatchWriter {
    raft: Raft,
    node_id: u64,
    peers: PeerClients,
}

impl Proposer {
    /// Starts the batching loop for `raft`.
    pub fn start(raft: Raft, node_id: u64, peers: PeerClients, limits: BatchLimits) -> Self {
        let (queue, receiver) = mpsc::channel(limits.commands_max * 4);
        let writer = BatchWriter {
            raft,
            node_id,
            peers,
        };
        tokio::spawn(run_batches(receiver, writer.clone(), limits));
        Self { queue, writer }
    }

    /// Commits `command` and returns its outcome once applied on this node's leader.
    pub async fn propose(&self, command: Command) -> Result<CommandResult, ProposeError> {
        self.enqueue(command).await?.await
    }

    /// Queues `command` and returns a future of its outcome. Commands queued one after
    /// another from one task are batched, and so applied, in that order.
    pub async fn enqueue(
        &self,
        command: Command,
    ) -> Result<impl Future<Output = Result<CommandResult, ProposeError>>, ProposeError> {
        let mut waits = self.enqueue_group(vec![command]).await?;
        Ok(waits.pop().expect("one wait per command"))
    }

    /// Queues `commands` to be committed in one entry (after every command queued before them,
    /// in their order) and returns a future of each one's outcome.
    pub async fn enqueue_group(
        &self,
        commands: Vec<Command>,
    ) -> Result<Vec<impl Future<Output = Result<CommandResult, ProposeError>>>, ProposeError> {
        if commands.is_empty() {
            return Ok(Vec::new());
        }
        let (group, waits): (Vec<_>, Vec<_>) = commands
            .into_iter()
            .map(|command| {
                let (reply, wait) = oneshot::channel();
                (Pending { command, reply }, wait)
            })
            .unzip();
        self.queue
            .send(group)
            .await
            .map_err(|_| ProposeError::ShuttingDown)?;
        Ok(waits
            .into_iter()
            .map(|wait| async move { wait.await.map_err(|_| ProposeError::ShuttingDown)? })
            .collect())
    }

    /// The forward handler for the transport service.
    pub fn forward_handler(&self) -> Arc<dyn ForwardHandler> {
        Arc::new(self.writer.clone())
    }
}

async fn run_batches(
    mut receiver: mpsc::Receiver<Vec<Pending>>,
    writer: BatchWriter,
    limits: BatchLimits,
) {
    let in_flight = Arc::new(Semaphore::new(limits.in_flight_max));
    let group_bytes =
        |group: &[Pending]| -> usize { group.iter().map(|p| p.command.size_bytes()).sum() };
    while let Some(first) = receiver.recv().await {
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        // A group is never split, even past the limits.
        let mut bytes = group_bytes(&first);
        let mut batch = first;
        while batch.len() < limits.commands_max && bytes < limits.bytes_max {
            let Ok(next) = receiver.try_recv() else { break };
            bytes += group_bytes(&next);
            batch.extend(next);
        }
        let (commands, replies): (Vec<_>, Vec<_>) =
            batch.into_iter().map(|p| (p.command, p.reply)).unzip();
        // Handed to Raft here, in queue order; only the wait for the commit runs apart.
        let handed_over = writer.hand_over(commands, true).await;
        tokio::spawn(async move {
            let result = handed_over.committed().await;
            drop(permit);
            deliver(result, replies);
        });
    }
}

fn deliver(
    result: Result<Committed, ProposeError>,
    replies: Vec<oneshot::Sender<Result<CommandResult, ProposeError>>>,
) {
    match result {
        Ok(committed) => {
            for (outcome, reply) in committed.outcomes.into_iter().zip(replies) {
                let _ = reply.send(Ok(CommandResult {
                    outcome,
                    log_index: committed.log_index,
                    term: committed.term,
                    leader_id: committed.leader_id,
                }));
            }
        }
        Err(error) => {
            for reply in replies {
                let _ = reply.send(Err(error.clone()));
            }
        }
    }
}

impl BatchWriter {
    /// Commits `commands` as one entry here if leader, else forwards them when allowed.
    async fn write(
        &self,
        commands: Vec<Command>,
        may_forward: bool,
    ) -> Result<Committed, ProposeError> {
        self.hand_over(commands, may_forward)
            .await
            .committed()
            .await
    }

    /// Appends `commands` to the local Raft log as one entry when leading (entries handed over
    /// one after another are committed in that order), or prepares their forwarding.
    async fn hand_over(&self, commands: Vec<Command>, may_forward: bool) -> HandedOver {
        let metrics = self.raft.metrics().borrow().clone();
        if metrics.state == ServerState::Leader {
            let proposal = Proposal {
                now_ms: clock::now_ms(),
                commands,
            };
            return match self.raft.client_write_ff(proposal).await {
                Ok(receiver) => HandedOver::Appended(receiver),
                Err(fatal) => HandedOver::Failed(fatal_error(fatal)),
            };
        }
        let leader = metrics.current_leader.and_then(|id| {
            let node = metrics.membership_config.membership().get_node(&id)?;
            Some((id, node.addr.clone()))
        });
        match leader {
            Some((_, addr)) if may_forward => HandedOver::Forward {
                writer: self.clone(),
                leader_addr: addr,
                commands,
            },
            _ => HandedOver::Failed(ProposeError::NotLeader {
                leader_id: leader.as_ref().map(|(id, _)| *id),
                leader_addr: leader.map(|(_, addr)| addr),
            }),
        }
    }

    async fn forward(
        &self,
        leader_addr: &str,
        commands: Vec<Command>,
    ) -> Result<Committed, ProposeError> {
        let unreachable = |detail: String| ProposeError::LeaderUnreachable {
            leader_addr: leader_addr.to_owned(),
            detail,
        };
        let payload = encode("forwarded commands", &commands)
            .map_err(|e| ProposeError::Fatal(e.to_string()))?;
        let mut client = self
            .peers
            .transport(leader_addr)
            .map_err(|e| unreachable(e.to_string()))?;
        let reply = client
            .forward(RaftPayload {
                ok: payload.into(),
                error: Default::default(),
            })
            .await
            .map_err(|status| unreachable(status.message().to_owned()))?
            .into_inner();
        if !reply.error.is_empty() {
            return Err(decode("forward error", &reply.error)
                .map_err(|e| ProposeError::Fatal(e.to_string()))?);
        }
        decode("forward reply", &reply.ok).map_err(|e| ProposeError::Fatal(e.to_string()))
    }
}

/// A batch after [`BatchWriter::hand_over`].
enum HandedOver {
    /// In the local log; the receiver answers once it is applied.
    Appended(<<TypeConfig as RaftTypeConfig>::Responder as Responder<TypeConfig>>::Receiver),
    /// To be forwarded to the leader.
    Forward {
        writer: BatchWriter,
        leader_addr: String,
        commands: Vec<Command>,
    },
    /// Refused before reaching any log.
    Failed(ProposeError),
}

impl HandedOver {
    /// Waits for the batch's outcome.
    async fn committed(self) -> Result<Committed, ProposeError> {
        match self {
            HandedOver::Appended(receiver) => {
                let response = receiver.await.map_err(|_| ProposeError::ShuttingDown)?;
                match response {
                    Ok(response) => Ok(Committed {
                        outcomes: response.data,
                        log_index: response.log_id.index,
                        term: response.log_id.leader_id.term,
                        leader_id: response.log_id.leader_id.node_id,
                    }),
                    Err(ClientWriteError::ForwardToLeader(to)) => Err(ProposeError::NotLeader {
                        leader_id: to.leader_id,
                        leader_addr: to.leader_node.map(|node| node.addr),
                    }),
                    Err(other) => Err(ProposeError::Fatal(other.to_string())),
                }
            }
            HandedOver::Forward {
                writer,
                leader_addr,
                commands,
            } => writer.forward(&leader_addr, commands).await,
            HandedOver::Failed(error) => Err(error),
        }
    }
}

fn fatal_error(fatal: openraft::error::Fatal<u64>) -> ProposeError {
    match fatal {
        openraft::error::Fatal::Stopped => ProposeError::ShuttingDown,
        other => ProposeError::Fatal(other.to_string()),
    }
}

#[tonic::async_trait]
impl ForwardHandler for BatchWriter {
    async fn commit_forwarded(&self, commands: Vec<Command>) -> Result<Committed, ProposeError> {
        tracing::trace!(
            node = self.node_id,
            commands = commands.len(),
            "forwarded batch"
        );
        self.write(commands, false).await
    }
}
