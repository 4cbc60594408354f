//! One session: a bidirectional stream to the leader. Registers (or resumes), re-sends what is
//! unacknowledged, then serves assignments, cancellations, auctions and acknowledgements while
//! heartbeating, until the stream ends, the leader moves, or the agent shuts down.

use std::time::Duration;

use synod_proto::v1 as pb;
use synod_proto::v1::agent_message::Kind as Out;
use synod_proto::v1::agent_service_client::AgentServiceClient;
use synod_proto::v1::coordinator_message::Kind as In;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Status, Streaming};

use super::core::{AgentCore, Identity, SubtaskWaiter};
use super::handler::TaskRequest;
use super::outbox::message;

/// How a session ended without failing.
pub(crate) enum SessionEnd {
    /// The agent is shutting down.
    Shutdown,
    /// The leader is elsewhere; reconnect there.
    Redirect(String),
}

/// Outbound messages buffered per session.
const OUTBOUND_CAPACITY: usize = 1024;

/// Runs one session over `channel`.
pub(crate) async fn run_session(
    core: &mut AgentCore,
    channel: Channel,
    shutdown: &CancellationToken,
) -> Result<SessionEnd, Status> {
    let (outbound, receiver) = mpsc::channel(OUTBOUND_CAPACITY);
    core.channel = Some(channel.clone());
    send(&outbound, message(0, Out::Register(register(core)))).await?;
    let mut inbound = AgentServiceClient::new(channel)
        .session(ReceiverStream::new(receiver))
        .await?
        .into_inner();
    let heartbeat_ms = match first_message(&mut inbound).await? {
        In::Registered(registered) => on_registered(core, registered),
        In::LeaderChanged(moved) => return redirect(moved),
        other => {
            return Err(Status::internal(format!(
                "expected Registered, got {other:?}"
            )))
        }
    };
    for pending in core.outbox.pending() {
        send(&outbound, pending).await?;
    }
    if let Some(offset) = core.mailbox.resume_ack() {
        send(&outbound, message(0, delivery_ack(offset))).await?;
    }
    let mut heartbeat = tokio::time::interval(Duration::from_millis(heartbeat_ms.max(10)));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(SessionEnd::Shutdown),
            received = inbound.message() => match received? {
                Some(pb::CoordinatorMessage { kind: Some(kind), .. }) => {
                    if let Some(end) = on_message(core, kind, &outbound).await? {
                        return Ok(end);
                    }
                }
                Some(_) => {}
                None => return Err(Status::unavailable("session closed by the coordinator")),
            },
            Some((task, outcome)) = core.completed.recv() => {
                if let Some(result) = core.finish_task(task, outcome) {
                    send(&outbound, core.outbox.track(result)).await?;
                }
            }
            Some(request) = core.requested.recv() => on_task_request(core, request, &outbound).await?,
            Some(offset) = core.mailbox.handled() => {
                send(&outbound, message(0, delivery_ack(offset))).await?;
            }
            _ = heartbeat.tick() => {
                let beat = pb::Heartbeat { running_tasks: core.running_refs(), ping_id: 0 };
                send(&outbound, message(0, Out::Heartbeat(beat))).await?;
            }
        }
    }
}

fn register(core: &AgentCore) -> pb::Register {
    let (agent_id, session_token) = match &core.identity {
        Some(identity) => (identity.agent_id.clone(), identity.session_token.clone()),
        None => Default::default(),
    };
    pb::Register {
        agent_id,
        session_token,
        name: core.config.name.clone(),
        capabilities: core.config.capabilities.clone(),
        labels: core.config.labels.clone().into_iter().collect(),
        max_concurrent_tasks: core.config.max_concurrent,
        resources: core.config.resources.clone().into_iter().collect(),
        agent_version: env!("CARGO_PKG_VERSION").into(),
        running_tasks: core.running_refs(),
    }
}

async fn first_message(inbound: &mut Streaming<pb::CoordinatorMessage>) -> Result<In, Status> {
    match inbound.message().await? {
        Some(pb::CoordinatorMessage {
            kind: Some(kind), ..
        }) => Ok(kind),
        _ => Err(Status::unavailable("session closed before registration")),
    }
}

fn on_registered(core: &mut AgentCore, registered: pb::Registered) -> u64 {
    tracing::info!(agent_id = %registered.agent_id, resumed = registered.resumed, "agent registered");
    core.mailbox.registered_as(&registered.agent_id);
    if let Some(rounds) = &core.rounds {
        rounds.registered_as(&registered.agent_id);
    }
    core.config
        .credentials
        .send_replace(Some(crate::AgentCredentials {
            agent_id: registered.agent_id.clone(),
            session_token: registered.session_token.clone(),
        }));
    core.identity = Some(Identity {
        agent_id: registered.agent_id,
        session_token: registered.session_token,
    });
    registered.heartbeat_interval_ms
}

fn redirect(moved: pb::LeaderChanged) -> Result<SessionEnd, Status> {
    if moved.leader_addr.is_empty() {
        Err(Status::unavailable("no leader known yet"))
    } else {
        Ok(SessionEnd::Redirect(moved.leader_addr))
    }
}

/// Handles one coordinator message; `Some` ends the session.
async fn on_message(
    core: &mut AgentCore,
    kind: In,
    outbound: &mpsc::Sender<pb::AgentMessage>,
) -> Result<Option<SessionEnd>, Status> {
    match kind {
        In::TaskAssignment(assignment) => {
            if let Some(reply) = core.start_task(assignment) {
                send(outbound, message(0, reply)).await?;
            }
        }
        In::CancelTask(cancel) => {
            if let Some(task) = &cancel.task {
                core.cancel_task(task);
            }
        }
        In::CallForBids(call) => send(outbound, message(0, Out::Bid(bid(core, &call)))).await?,
        In::VoteRequest(request) => {
            let choice = core
                .config
                .ballot_handler
                .as_ref()
                .and_then(|h| h.ballot(&request));
            if let Some(option) = choice {
                let ballot = Out::Ballot(pb::Ballot {
                    vote_id: request.vote_id,
                    option,
                });
                // Unacknowledged on purpose: a ballot lost with its session is asked for again,
                // since every new session is sent the open votes the agent has not answered.
                send(outbound, message(0, ballot)).await?;
            }
        }
        In::RequestAck(ack) => on_ack(core, ack.request_id),
        In::Error(error) => on_error(core, error)?,
        In::SubtasksCompleted(done) => on_subtasks_completed(core, done),
        In::Ping(ping) => {
            let beat = pb::Heartbeat {
                running_tasks: core.running_refs(),
                ping_id: ping.ping_id,
            };
            send(outbound, message(0, Out::Heartbeat(beat))).await?;
        }
        In::Drain(drain) => {
            tracing::info!(reason = %drain.reason, "draining");
            core.draining = true;
        }
        In::LeaderChanged(moved) => return redirect(moved).map(Some),
        In::MessageDelivery(delivery) => {
            if let Some(mesh) = delivery.message.filter(|m| m.channel.is_empty()) {
                core.mailbox.offer(mesh).await;
            }
        }
        In::RoundInvitation(invitation) => {
            if let Some(rounds) = &mut core.rounds {
                rounds.invited(invitation);
            }
        }
        other => tracing::debug!(message = ?other, "ignored coordinator message"),
    }
    Ok(None)
}

fn delivery_ack(offset: u64) -> Out {
    Out::DeliveryAck(pb::DeliveryAck {
        channel: String::new(),
        offset,
    })
}

fn bid(core: &AgentCore, call: &pb::CallForBids) -> pb::Bid {
    let offer = core.config.bid_handler.as_ref().and_then(|h| h.bid(call));
    let response = match offer {
        Some(offer) if offer.cost.is_finite() && offer.cost >= 0.0 => {
            pb::bid::Response::Offer(pb::bid::Offer {
                cost: offer.cost,
                estimate_ms: offer.estimate_ms,
            })
        }
        _ => pb::bid::Response::Decline(pb::bid::Decline {
            reason: "no offer".into(),
        }),
    };
    pb::Bid {
        call_id: call.call_id.clone(),
        response: Some(response),
    }
}

fn on_ack(core: &mut AgentCore, request_id: u64) {
    core.outbox.settle(request_id);
    if let Some(waiter) = core.subtask_requests.remove(&request_id) {
        if waiter.wait {
            core.subtask_waits.insert(waiter.parent.clone(), waiter);
        } else {
            let _ = waiter.reply.send(Ok(Vec::new()));
        }
    }
}

fn on_error(core: &mut AgentCore, error: pb::SessionError) -> Result<(), Status> {
    if error.request_id == 0 {
        return Err(Status::new(tonic::Code::from(error.code), error.message));
    }
    // A refused request is final (e.g. a stale attempt): stop re-sending it. A ballot or
    // report that came too late (FAILED_PRECONDITION) is expected, and only logged at debug.
    if error.code == tonic::Code::FailedPrecondition as i32 {
        tracing::debug!(request_id = error.request_id, message = %error.message, "request refused");
    } else {
        tracing::warn!(request_id = error.request_id, code = error.code, message = %error.message, "request refused");
    }
    core.outbox.settle(error.request_id);
    if let Some(waiter) = core.subtask_requests.remove(&error.request_id) {
        let _ = waiter.reply.send(Err(error.message));
    }
    Ok(())
}

fn on_subtasks_completed(core: &mut AgentCore, done: pb::SubtasksCompleted) {
    let parent = done.parent.unwrap_or_default();
    if let Some(waiter) = core.subtask_waits.remove(&(parent.job_id, parent.task_id)) {
        let _ = waiter.reply.send(Ok(done.subtasks));
    }
}

async fn on_task_request(
    core: &mut AgentCore,
    request: TaskRequest,
    outbound: &mpsc::Sender<pb::AgentMessage>,
) -> Result<(), Status> {
    match request {
        TaskRequest::AddSubtasks {
            parent,
            subtasks,
            wait,
            reply,
        } => {
            let key = (parent.job_id.clone(), parent.task_id.clone());
            let kind = Out::AddSubtasks(pb::AddSubtasks {
                parent: Some(parent),
                subtasks,
                wait,
            });
            let message = core.outbox.track(kind);
            core.subtask_requests.insert(
                message.request_id,
                SubtaskWaiter {
                    parent: key,
                    wait,
                    reply,
                },
            );
            send(outbound, message).await
        }
    }
}

async fn send(
    outbound: &mpsc::Sender<pb::AgentMessage>,
    message: pb::AgentMessage,
) -> Result<(), Status> {
    outbound
        .send(message)
        .await
        .map_err(|_| Status::unavailable("session stream closed"))
}
