//! `AgentService`: agent sessions (served by the leader only) and the agent registry.
//!
//! A session: the first message must be Register; the registration is committed, the agent is
//! told its identity and lease, and every attempt the state says it holds is sent again (the
//! SDK ignores repeats). Afterwards each message is handled in its own task, so one slow commit
//! does not hold up heartbeats; every state-changing message with a request id is answered by
//! exactly one RequestAck or SessionError. When the stream ends the agent is marked
//! disconnected; its lease decides when it expires.

use synod_proto::v1 as pb;
use synod_proto::v1::agent_message::Kind as In;
use synod_proto::v1::agent_service_client::AgentServiceClient;
use synod_proto::v1::agent_service_server::AgentService;
use synod_proto::v1::coordinator_message::Kind as Out;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status, Streaming};

use super::convert::{page_token, parse_page_token};
use super::convert_agent::{agent, registration};
use super::convert_job::task_spec;
use super::leader::wants_linearizable;
use super::{ApiError, BarrierApi, LeaderRouter};
use crate::runtime::clock;
use crate::runtime::messages::{self, message};
use crate::runtime::sessions::Outbound;
use crate::runtime::AgentRuntime;
use crate::state::barriers::Step;
use crate::state::{Applied, Command, Rejection, TaskOutcome};

/// Messages buffered towards one agent before it counts as too slow.
const SESSION_BUFFER: usize = 1024;

/// Serves `synod.v1.AgentService`.
pub struct AgentApi {
    runtime: AgentRuntime,
    router: LeaderRouter,
    barriers: BarrierApi,
}

impl AgentApi {
    /// A service over `runtime`; barrier arrivals on sessions go through `barriers`.
    pub fn new(runtime: AgentRuntime, router: LeaderRouter, barriers: BarrierApi) -> Self {
        Self {
            runtime,
            router,
            barriers,
        }
    }

    async fn register(
        &self,
        register: pb::Register,
    ) -> Result<(pb::Registered, Vec<crate::state::jobs::TaskKey>), Status> {
        let new_id = uuid::Uuid::new_v4().to_string();
        let session_id = uuid::Uuid::new_v4().to_string();
        let token = uuid::Uuid::new_v4().simple().to_string();
        let breaker = self.runtime.settings().breaker;
        let registration =
            registration(register, new_id, session_id.clone(), token.clone(), breaker)?;
        let result = self
            .runtime
            .propose(Command::RegisterAgent(registration))
            .await
            .map_err(ApiError::from)?;
        let registered = match result.outcome {
            Ok(Applied::AgentRegistered(registered)) => registered,
            Ok(other) => {
                return Err(ApiError::Internal(format!("unexpected outcome {other:?}")).into())
            }
            Err(rejection) => return Err(session_status(&rejection)),
        };
        let settings = self.runtime.settings();
        let answer = pb::Registered {
            agent_id: registered.agent_id.clone(),
            session_id,
            session_token: token,
            lease_ms: settings.lease.as_millis() as u64,
            heartbeat_interval_ms: settings.heartbeat.as_millis() as u64,
            resumed: registered.resumed,
            max_message_bytes: 4 * 1024 * 1024,
        };
        Ok((answer, registered.running.into_iter().collect()))
    }
}

/// The status ending a session whose registration was refused.
fn session_status(rejection: &Rejection) -> Status {
    match rejection {
        Rejection::BadSessionToken { .. } => Status::unauthenticated(rejection.to_string()),
        Rejection::InvalidRegistration { .. } => Status::invalid_argument(rejection.to_string()),
        _ => Status::failed_precondition(rejection.to_string()),
    }
}

#[tonic::async_trait]
impl AgentService for AgentApi {
    type SessionStream = ReceiverStream<Result<pb::CoordinatorMessage, Status>>;

    #[tracing::instrument(skip_all)]
    async fn session(
        &self,
        request: Request<Streaming<pb::AgentMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        if !self.router.is_leader() {
            let leader = self.router.leader();
            return Err(ApiError::Unavailable {
                message: "agent sessions are served by the leader".into(),
                leader,
            }
            .into());
        }
        let mut inbound = request.into_inner();
        let register = match inbound.message().await?.and_then(|m| m.kind) {
            Some(In::Register(register)) => register,
            _ => {
                return Err(ApiError::invalid(
                    "kind",
                    "the first message of a session must be Register",
                )
                .into())
            }
        };
        let (registered, holding) = self.register(register).await?;
        let (agent_id, session_id) = (registered.agent_id.clone(), registered.session_id.clone());
        let (outbound, receiver) = mpsc::channel(SESSION_BUFFER);
        let _ = outbound.try_send(Ok(message(Out::Registered(registered))));
        if let Some(old) = self
            .runtime
            .hub()
            .attach(&agent_id, &session_id, outbound.clone())
        {
            let _ = old.try_send(Err(Status::aborted(
                "replaced by a newer session of the same agent",
            )));
        }
        for key in holding {
            if let Some(assignment) = self
                .runtime
                .read(|s| messages::assignment(s, &key.job_id, &key.task_id))
            {
                let _ = outbound.try_send(Ok(assignment));
            }
        }
        for request in self.runtime.pending_ballots(&agent_id) {
            let _ = outbound.try_send(Ok(request));
        }
        let invitations = self
            .runtime
            .read(|state| crate::runtime::federations::invitations::pending(state, &agent_id));
        for invitation in invitations {
            let _ = outbound.try_send(Ok(invitation));
        }
        self.runtime
            .open_inbox(&agent_id, &session_id, outbound.clone());
        tracing::info!(%agent_id, %session_id, "agent session open");
        let session = Session {
            barriers: self.barriers.clone(),
            runtime: self.runtime.clone(),
            agent_id,
            session_id,
            outbound,
        };
        tokio::spawn(session.serve(inbound));
        Ok(Response::new(ReceiverStream::new(receiver)))
    }

    async fn list_agents(
        &self,
        request: Request<pb::ListAgentsRequest>,
    ) -> Result<Response<pb::ListAgentsResponse>, Status> {
        let linearizable = wants_linearizable(request.get_ref().consistency);
        if linearizable {
            if let Some(leader) = self.router.forward_target(&request)? {
                return AgentServiceClient::new(leader)
                    .list_agents(self.router.forwarded(request))
                    .await;
            }
            self.router.ensure_linearizable().await?;
        }
        let request = request.into_inner();
        let page = request.page.unwrap_or_default();
        let limit = match page.page_size {
            0 => 100,
            size if size > 1000 => {
                return Err(ApiError::invalid(
                    "page.page_size",
                    format!("{size} exceeds the maximum of 1000"),
                )
                .into())
            }
            size => size as usize,
        };
        let after = match page.page_token.as_str() {
            "" => None,
            token => Some(parse_page_token(token).ok_or_else(|| {
                ApiError::invalid("page.page_token", "not a token from a previous page")
            })?),
        };
        let hub = self.runtime.hub();
        let ((agents, more), read) = self.router.read_local(linearizable, |state| {
            let mut page: Vec<pb::Agent> = state
                .agents
                .iter()
                .filter(|a| after.as_deref().is_none_or(|after| a.id.as_str() > after))
                .take(limit + 1)
                .map(|a| agent(a, state, hub.is_connected(&a.id), clock::now_ms()))
                .collect();
            let more = page.len() > limit;
            page.truncate(limit);
            (page, more)
        });
        let next_page_token = match (more, agents.last()) {
            (true, Some(last)) => page_token(&last.agent_id),
            _ => String::new(),
        };
        Ok(Response::new(pb::ListAgentsResponse {
            agents,
            next_page_token,
            read: Some(read),
        }))
    }

    async fn get_agent(
        &self,
        request: Request<pb::GetAgentRequest>,
    ) -> Result<Response<pb::GetAgentResponse>, Status> {
        let linearizable = wants_linearizable(request.get_ref().consistency);
        if linearizable {
            if let Some(leader) = self.router.forward_target(&request)? {
                return AgentServiceClient::new(leader)
                    .get_agent(self.router.forwarded(request))
                    .await;
            }
            self.router.ensure_linearizable().await?;
        }
        let agent_id = request.into_inner().agent_id;
        let hub = self.runtime.hub();
        let (found, read) = self.router.read_local(linearizable, |state| {
            state
                .agents
                .get(&agent_id)
                .map(|a| agent(a, state, hub.is_connected(&a.id), clock::now_ms()))
        });
        let found =
            found.ok_or_else(|| ApiError::NotFound(format!("agent_id: no agent '{agent_id}'")))?;
        Ok(Response::new(pb::GetAgentResponse {
            agent: Some(found),
            read: Some(read),
        }))
    }

    async fn drain_agent(
        &self,
        request: Request<pb::DrainAgentRequest>,
    ) -> Result<Response<pb::DrainAgentResponse>, Status> {
        let agent_id = request.into_inner().agent_id;
        let result = self
            .runtime
            .propose(Command::DrainAgent {
                agent_id: agent_id.clone(),
            })
            .await
            .map_err(ApiError::from)?;
        result.outcome.map_err(ApiError::from)?;
        self.runtime.hub().send(
            &agent_id,
            message(Out::Drain(pb::Drain {
                reason: "operator request".into(),
                deadline_at_ms: 0,
            })),
        );
        Ok(Response::new(pb::DrainAgentResponse::default()))
    }

    async fn quarantine_agent(
        &self,
        request: Request<pb::QuarantineAgentRequest>,
    ) -> Result<Response<pb::QuarantineAgentResponse>, Status> {
        let request = request.into_inner();
        if request.agent_id.is_empty() {
            return Err(ApiError::invalid("agent_id", "required").into());
        }
        if request.reason.chars().count() > QUARANTINE_REASON_CHARS_MAX {
            let problem = format!("longer than {QUARANTINE_REASON_CHARS_MAX} characters");
            return Err(ApiError::invalid("reason", problem).into());
        }
        let result = self
            .runtime
            .propose(Command::QuarantineAgent {
                agent_id: request.agent_id.clone(),
                quarantined: request.quarantined,
                reason: request.reason,
            })
            .await
            .map_err(ApiError::from)?;
        result.outcome.clone().map_err(ApiError::from)?;
        let agent = self.runtime.read(|state| {
            let record = state.agents.get(&request.agent_id)?;
            let connected = self.runtime.hub().is_connected(&record.id);
            Some(agent(record, state, connected, clock::now_ms()))
        });
        Ok(Response::new(pb::QuarantineAgentResponse {
            agent,
            write: Some(super::convert::write_meta(&result)),
        }))
    }
}

/// Longest reason an operator may give for a quarantine.
const QUARANTINE_REASON_CHARS_MAX: usize = 1024;

/// One open session after registration.
struct Session {
    runtime: AgentRuntime,
    barriers: BarrierApi,
    agent_id: String,
    session_id: String,
    outbound: Outbound,
}

impl Session {
    async fn serve(self, mut inbound: Streaming<pb::AgentMessage>) {
        while let Ok(Some(message)) = inbound.message().await {
            self.runtime.hub().touch(&self.agent_id, &self.session_id);
            if self.handle(message).await {
                break;
            }
        }
        let detached = self.runtime.hub().detach(&self.agent_id, &self.session_id);
        self.runtime
            .inbox_delivery()
            .close(&self.agent_id, &self.session_id);
        tracing::info!(agent_id = %self.agent_id, "agent session closed");
        if detached && self.runtime.is_leader() {
            let command = Command::AgentDisconnected {
                agent_id: self.agent_id.clone(),
                session_id: self.session_id.clone(),
            };
            let _ = self.runtime.propose(command).await;
        }
    }

    /// Handles one message; true ends the session. Commands are queued in the order their
    /// messages arrived (a result never overtakes the subtasks its task added before it).
    async fn handle(&self, message: pb::AgentMessage) -> bool {
        let request_id = message.request_id;
        let Some(kind) = message.kind else {
            return false;
        };
        let command = match kind {
            In::Heartbeat(beat) => {
                self.reconcile(&beat.running_tasks);
                return false;
            }
            In::TaskProgress(_) => return false,
            In::TaskAccepted(_) => return self.answer(request_id, Ok(None)),
            In::Bid(bid) => return self.bid(request_id, bid),
            In::DeliveryAck(ack) => return self.delivery_ack(request_id, ack),
            In::BarrierArrive(arrive) => return self.barrier_arrive(request_id, arrive),
            In::Deregister(_) => {
                let command = Command::DeregisterAgent {
                    agent_id: self.agent_id.clone(),
                };
                self.spawn_command(request_id, command).await;
                return true;
            }
            In::TaskStarted(started) => {
                self.fenced(started.task, |job_id, task_id, attempt, agent_id| {
                    Command::StartTask {
                        job_id,
                        task_id,
                        attempt,
                        agent_id,
                    }
                })
            }
            In::TaskResult(result) => self.result_command(result),
            In::TaskRejected(rejected) => {
                let outcome = TaskOutcome::Failed {
                    error: format!("rejected by the agent: {}", rejected.reason),
                    retryable: true,
                };
                self.fenced(rejected.task, move |job_id, task_id, attempt, agent_id| {
                    Command::CompleteTask {
                        job_id,
                        task_id,
                        attempt,
                        agent_id,
                        outcome,
                    }
                })
            }
            In::AddSubtasks(add) => self.subtasks_command(add),
            In::Ballot(ballot) => Ok(Command::CastBallot {
                vote_id: ballot.vote_id,
                agent_id: self.agent_id.clone(),
                option: ballot.option,
            }),
            In::Register(_) => Err(ApiError::invalid(
                "kind",
                "Register is only allowed as the first message",
            )),
            In::ChannelSubscribe(_) | In::ChannelUnsubscribe(_) => Err(ApiError::Unimplemented(
                "channel subscriptions on sessions are not served; use \
                 CoordinationService.Subscribe"
                    .into(),
            )),
        };
        match command {
            Ok(command) => self.spawn_command(request_id, command).await,
            Err(error) => {
                self.answer(request_id, Err(error));
            }
        }
        false
    }

    fn fenced(
        &self,
        task: Option<pb::TaskRef>,
        make: impl FnOnce(String, String, u32, String) -> Command,
    ) -> Result<Command, ApiError> {
        let task = task.ok_or_else(|| ApiError::invalid("task", "required"))?;
        Ok(make(
            task.job_id,
            task.task_id,
            task.attempt,
            self.agent_id.clone(),
        ))
    }

    /// Cancels attempts the agent runs that the state no longer assigns to it (a cancel or
    /// timeout it missed, e.g. across a leader change).
    fn reconcile(&self, running: &[pb::TaskRef]) {
        let stale: Vec<pb::TaskRef> = self.runtime.read(|state| {
            running
                .iter()
                .filter(|r| {
                    let current = state.jobs.task(&r.job_id, &r.task_id).map(|(_, task)| task);
                    !current.is_some_and(|task| task.holds(r.attempt, &self.agent_id))
                })
                .cloned()
                .collect()
        });
        for task in stale {
            let cancel = pb::CancelTask {
                task: Some(task),
                reason: "no longer assigned to this agent".into(),
            };
            let _ = self.outbound.try_send(Ok(message(Out::CancelTask(cancel))));
        }
    }

    fn result_command(&self, result: pb::TaskResult) -> Result<Command, ApiError> {
        let outcome = match result.outcome {
            Some(pb::task_result::Outcome::Success(success)) => TaskOutcome::Succeeded {
                output: success.output,
            },
            Some(pb::task_result::Outcome::Failure(failure)) => TaskOutcome::Failed {
                error: failure.error_message,
                retryable: failure.retryable,
            },
            None => return Err(ApiError::invalid("task_result.outcome", "required")),
        };
        self.fenced(result.task, move |job_id, task_id, attempt, agent_id| {
            Command::CompleteTask {
                job_id,
                task_id,
                attempt,
                agent_id,
                outcome,
            }
        })
    }

    fn subtasks_command(&self, add: pb::AddSubtasks) -> Result<Command, ApiError> {
        let parent = add
            .parent
            .ok_or_else(|| ApiError::invalid("add_subtasks.parent", "required"))?;
        let subtasks = add
            .subtasks
            .into_iter()
            .enumerate()
            .map(|(i, spec)| task_spec(spec, &format!("add_subtasks.subtasks[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Command::AddSubtasks {
            job_id: parent.job_id,
            parent_task_id: parent.task_id,
            attempt: parent.attempt,
            agent_id: self.agent_id.clone(),
            subtasks,
            wait: add.wait,
        })
    }

    /// Arrives at a barrier as this agent; the generation's end is sent on the session as
    /// BarrierReleased or BarrierBroken (and answers the request). Repeating the arrival after
    /// a reconnect resumes the wait.
    fn barrier_arrive(&self, request_id: u64, arrive: pb::BarrierArrive) -> bool {
        let (barriers, outbound) = (self.barriers.clone(), self.outbound.clone());
        let party = self.agent_id.clone();
        tokio::spawn(async move {
            let waited = barriers
                .step(arrive.name, party, arrive.generation, Step::Arrive)
                .await;
            let answer = match waited {
                Ok((result, write)) => {
                    let end = match result.outcome == pb::BarrierOutcome::Released as i32 {
                        true => Out::BarrierReleased(pb::BarrierReleased {
                            name: result.name,
                            generation: result.generation,
                        }),
                        false => Out::BarrierBroken(pb::BarrierBroken {
                            name: result.name,
                            generation: result.generation,
                            reason: result.reason,
                        }),
                    };
                    let _ = outbound.send(Ok(message(end))).await;
                    Ok(Some(write))
                }
                Err(error) => Err(error),
            };
            send_answer(&outbound, request_id, answer);
        });
        false
    }

    /// Inbox acknowledgements go to the inbox's pump, which commits them.
    fn delivery_ack(&self, request_id: u64, ack: pb::DeliveryAck) -> bool {
        if !ack.channel.is_empty() {
            let problem = "acknowledgements name the inbox (an empty channel); channel \
                           subscriptions are served by CoordinationService.Subscribe";
            return self.answer(request_id, Err(ApiError::Unimplemented(problem.into())));
        }
        self.runtime
            .inbox_delivery()
            .acknowledged(&self.agent_id, &self.session_id, ack.offset);
        self.answer(request_id, Ok(None))
    }

    fn bid(&self, request_id: u64, bid: pb::Bid) -> bool {
        let offer = match bid.response {
            Some(pb::bid::Response::Offer(offer)) => Some((offer.cost, offer.estimate_ms)),
            _ => None,
        };
        let answered = self
            .runtime
            .auctions()
            .answer(&bid.call_id, &self.agent_id, offer);
        self.answer(
            request_id,
            answered
                .map(|_| None)
                .map_err(|refused| ApiError::FailedPrecondition(refused.to_string())),
        )
    }

    /// Queues `command` now and answers the request from its own task once it is committed.
    async fn spawn_command(&self, request_id: u64, command: Command) {
        let outbound = self.outbound.clone();
        let pending = self.runtime.enqueue(command).await;
        tokio::spawn(async move {
            let result = match pending {
                Ok(pending) => pending.await,
                Err(error) => Err(error),
            };
            let answer = match result {
                Ok(result) => match &result.outcome {
                    Ok(applied) => match applied.refusal() {
                        Some(refusal) => Err(ApiError::from(refusal.clone())),
                        None => Ok(Some(pb::WriteMeta {
                            log_index: result.log_index,
                            term: result.term,
                            leader_id: result.leader_id,
                        })),
                    },
                    Err(rejection) => Err(ApiError::from(rejection.clone())),
                },
                Err(error) => Err(ApiError::from(error)),
            };
            send_answer(&outbound, request_id, answer);
        });
    }

    fn answer(&self, request_id: u64, answer: Result<Option<pb::WriteMeta>, ApiError>) -> bool {
        send_answer(&self.outbound, request_id, answer);
        false
    }
}

fn send_answer(
    outbound: &Outbound,
    request_id: u64,
    answer: Result<Option<pb::WriteMeta>, ApiError>,
) {
    let kind = match answer {
        // Request id 0 asks for no answer (a start report, say); a refusal of it is no
        // problem with the session.
        Ok(_) if request_id == 0 => return,
        Err(error) if request_id == 0 => {
            tracing::debug!(%error, "unanswered agent message refused");
            return;
        }
        Ok(write) => Out::RequestAck(pb::RequestAck { request_id, write }),
        Err(error) => {
            tracing::debug!(%error, request_id, "agent request refused");
            let code: Code = error.code();
            Out::Error(pb::SessionError {
                request_id,
                code: code as i32,
                message: error.to_string(),
            })
        }
    };
    let _ = outbound.try_send(Ok(message(kind)));
}
