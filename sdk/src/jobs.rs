//! Job submitters' calls: submit, read, list, watch and cancel jobs, and list agents. Every call
//! follows the leader like the rest of [`Client`]; a watch resumes after the last event it
//! delivered when its stream breaks.

use std::future::Future;
use synod_proto::v1 as pb;
use synod_proto::v1::agent_service_client::AgentServiceClient;
use synod_proto::v1::job_service_client::JobServiceClient;

use tokio::sync::mpsc;
use tonic::transport::Channel;

use crate::relay::{relay, Relayed};
use crate::{Client, ClientError};

/// Events of one watched job, in sequence order.
pub struct JobWatch {
    events: mpsc::Receiver<Result<pb::JobEvent, ClientError>>,
}

impl JobWatch {
    /// The next event; `None` after the job's final event.
    pub async fn next(&mut self) -> Option<Result<pb::JobEvent, ClientError>> {
        self.events.recv().await
    }
}

impl Client {
    /// One `JobService` call with `request`, following the leader.
    async fn jobs<Req, T, F, Fut>(&self, request: Req, method: F) -> Result<T, ClientError>
    where
        Req: Clone,
        F: Fn(JobServiceClient<Channel>, Req) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        self.call(|channel| method(JobServiceClient::new(channel), request.clone()))
            .await
    }

    /// One `AgentService` call with `request`, following the leader.
    async fn agents<Req, T, F, Fut>(&self, request: Req, method: F) -> Result<T, ClientError>
    where
        Req: Clone,
        F: Fn(AgentServiceClient<Channel>, Req) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        self.call(|channel| method(AgentServiceClient::new(channel), request.clone()))
            .await
    }

    /// Submits a job; returns its id. With an `idempotency_key`, a retried submit returns the
    /// first job's id instead of creating another.
    pub async fn submit_job(
        &self,
        spec: pb::JobSpec,
        idempotency_key: impl Into<String>,
    ) -> Result<pb::SubmitJobResponse, ClientError> {
        let request = pb::SubmitJobRequest {
            spec: Some(spec),
            idempotency_key: idempotency_key.into(),
        };
        self.jobs(request, |mut c, r| async move { c.submit_job(r).await })
            .await
    }

    /// Reads a job (linearizable).
    pub async fn get_job(&self, job_id: &str) -> Result<pb::Job, ClientError> {
        let request = pb::GetJobRequest {
            job_id: job_id.to_owned(),
            include_spec: false,
            consistency: pb::Consistency::Linearizable as i32,
        };
        let response = self
            .jobs(request, |mut c, r| async move { c.get_job(r).await })
            .await?;
        response.job.ok_or_else(|| {
            ClientError::Rejected(tonic::Status::internal("GetJob answered without a job"))
        })
    }

    /// Every task of a job, in submission order.
    pub async fn job_tasks(&self, job_id: &str) -> Result<Vec<pb::Task>, ClientError> {
        all_pages(usize::MAX, |page| {
            let request = pb::ListTasksRequest {
                job_id: job_id.to_owned(),
                states: Vec::new(),
                page: Some(page),
                consistency: pb::Consistency::Linearizable as i32,
            };
            async move {
                let page = self
                    .jobs(request, |mut c, r| async move { c.list_tasks(r).await })
                    .await?;
                Ok((page.tasks, page.next_page_token))
            }
        })
        .await
    }

    /// Jobs newest first, at most `limit`, only those in one of `states` (every state when
    /// empty).
    pub async fn list_jobs(
        &self,
        states: &[pb::JobState],
        limit: usize,
    ) -> Result<Vec<pb::Job>, ClientError> {
        let states: Vec<i32> = states.iter().map(|s| *s as i32).collect();
        all_pages(limit, |page| {
            let request = pb::ListJobsRequest {
                states: states.clone(),
                page: Some(page),
                ..Default::default()
            };
            async move {
                let page = self
                    .jobs(request, |mut c, r| async move { c.list_jobs(r).await })
                    .await?;
                Ok((page.jobs, page.next_page_token))
            }
        })
        .await
    }

    /// A job's whole event history, in order.
    pub async fn job_history(&self, job_id: &str) -> Result<Vec<pb::JobEvent>, ClientError> {
        all_pages(usize::MAX, |page| {
            let request = pb::GetJobHistoryRequest {
                job_id: job_id.to_owned(),
                page: Some(page),
                ..Default::default()
            };
            async move {
                let page = self
                    .jobs(
                        request,
                        |mut c, r| async move { c.get_job_history(r).await },
                    )
                    .await?;
                Ok((page.events, page.next_page_token))
            }
        })
        .await
    }

    /// Cancels a job.
    pub async fn cancel_job(
        &self,
        job_id: &str,
        reason: &str,
    ) -> Result<pb::CancelJobResponse, ClientError> {
        let request = pb::CancelJobRequest {
            job_id: job_id.to_owned(),
            reason: reason.to_owned(),
        };
        self.jobs(request, |mut c, r| async move { c.cancel_job(r).await })
            .await
    }

    /// Lists registered agents (every page).
    pub async fn list_agents(&self) -> Result<Vec<pb::Agent>, ClientError> {
        all_pages(usize::MAX, |page| {
            let request = pb::ListAgentsRequest {
                page: Some(page),
                ..Default::default()
            };
            async move {
                let page = self
                    .agents(request, |mut c, r| async move { c.list_agents(r).await })
                    .await?;
                Ok((page.agents, page.next_page_token))
            }
        })
        .await
    }

    /// Quarantines an agent until released (`quarantined`), or releases it.
    pub async fn quarantine_agent(
        &self,
        agent_id: &str,
        quarantined: bool,
        reason: &str,
    ) -> Result<pb::QuarantineAgentResponse, ClientError> {
        let request = pb::QuarantineAgentRequest {
            agent_id: agent_id.to_owned(),
            quarantined,
            reason: reason.to_owned(),
        };
        self.agents(
            request,
            |mut c, r| async move { c.quarantine_agent(r).await },
        )
        .await
    }

    /// Watches a job's events, from the start of its history when `from_start`, otherwise
    /// from now. Survives leader changes: a broken stream is reopened after the last event
    /// delivered.
    pub fn watch_job(&self, job_id: &str, from_start: bool) -> JobWatch {
        let (sender, events) = mpsc::channel(256);
        let client = self.clone();
        let job_id = job_id.to_owned();
        tokio::spawn(async move { client.pump_watch(job_id, from_start, sender).await });
        JobWatch { events }
    }

    async fn pump_watch(
        self,
        job_id: String,
        from_start: bool,
        sender: mpsc::Sender<Result<pb::JobEvent, ClientError>>,
    ) {
        let mut after_sequence = 0;
        let mut from_start = from_start;
        loop {
            let request = pb::WatchJobRequest {
                job_id: job_id.clone(),
                from_start,
                after_sequence,
                consistency: pb::Consistency::Linearizable as i32,
            };
            let opened = self
                .jobs(request, |mut c, r| async move { c.watch_job(r).await })
                .await;
            let relayed = relay(opened, &sender, |event: &pb::JobEvent| {
                after_sequence = event.sequence;
                from_start = false;
                matches!(event.kind, Some(pb::job_event::Kind::JobCompleted(_)))
            })
            .await;
            match relayed {
                Relayed::Done | Relayed::Ended => return,
                Relayed::Broke => {}
            }
        }
    }
}

/// Follows page tokens from the first page until the last or until `limit` items; `fetch`
/// reads one page and returns its items and the next page's token (empty on the last).
pub(crate) async fn all_pages<T, F, Fut>(limit: usize, mut fetch: F) -> Result<Vec<T>, ClientError>
where
    F: FnMut(pb::PageRequest) -> Fut,
    Fut: std::future::Future<Output = Result<(Vec<T>, String), ClientError>>,
{
    let mut items = Vec::new();
    let mut page_token = String::new();
    while items.len() < limit {
        let page_size = (limit - items.len()).min(1000) as u32;
        let (page, next) = fetch(pb::PageRequest {
            page_size,
            page_token,
        })
        .await?;
        items.extend(page);
        if next.is_empty() {
            break;
        }
        page_token = next;
    }
    items.truncate(limit);
    Ok(items)
}
