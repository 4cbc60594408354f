//! Job specs the task benchmark submits and how it waits for them: independent no-op tasks
//! for the fleet, and polling a job on a follower (a stale read: cheap, and a job seen
//! finished there is committed) until it ends.

use std::time::Duration;

use anyhow::{bail, Context};
use synod_sdk::proto as pb;
use synod_sdk::proto::job_service_client::JobServiceClient;
use tonic::transport::Channel;

use super::fleet::{CAPABILITY, KIND};

/// A job of `payloads.len()` independent no-op tasks placed by `strategy`.
pub fn noop_job(
    name: String,
    payloads: Vec<Vec<u8>>,
    strategy: pb::AssignmentStrategy,
) -> pb::JobSpec {
    let tasks = payloads
        .into_iter()
        .enumerate()
        .map(|(i, payload)| pb::TaskSpec {
            task_id: format!("t{i}"),
            kind: KIND.into(),
            payload,
            required_capabilities: vec![CAPABILITY.into()],
            strategy: strategy as i32,
            ..pb::TaskSpec::default()
        })
        .collect();
    pb::JobSpec {
        name,
        goal: Some(pb::Goal {
            description: "run no-op tasks".into(),
            criterion: pb::GoalCriterion::AllTasks as i32,
            goal_task_id: String::new(),
        }),
        tasks,
        ..pb::JobSpec::default()
    }
}

/// Reads jobs with stale reads on one member.
#[derive(Clone)]
pub struct JobPoller {
    client: JobServiceClient<Channel>,
}

impl JobPoller {
    /// A poller reading from the member at `addr`.
    pub async fn connect(addr: &str) -> anyhow::Result<Self> {
        let channel = Channel::from_shared(format!("http://{addr}"))?
            .connect()
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        Ok(Self {
            client: JobServiceClient::new(channel),
        })
    }

    /// Waits until job `job_id` ends; an error unless it succeeded.
    pub async fn wait_succeeded(&self, job_id: &str, interval: Duration) -> anyhow::Result<()> {
        loop {
            let request = pb::GetJobRequest {
                job_id: job_id.to_owned(),
                include_spec: false,
                consistency: pb::Consistency::Stale as i32,
            };
            match self.client.clone().get_job(request).await {
                Ok(response) => {
                    let job = response.into_inner().job.unwrap_or_default();
                    match pb::JobState::try_from(job.state) {
                        Ok(pb::JobState::Succeeded) => return Ok(()),
                        Ok(pb::JobState::Failed | pb::JobState::Cancelled) => {
                            bail!("job {job_id} ended {:?}: {}", job.state(), job.state_reason)
                        }
                        _ => {}
                    }
                }
                // Not replicated to this member yet.
                Err(status) if status.code() == tonic::Code::NotFound => {}
                Err(status) => bail!("reading job {job_id}: {status}"),
            }
            tokio::time::sleep(interval).await;
        }
    }
}
