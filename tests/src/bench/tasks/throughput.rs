//! End-to-end task throughput: a batch of no-op tasks submitted as jobs by concurrent
//! submitters, timed from the first submit until the last job is seen succeeded (every task
//! assigned, run and its result committed) — the way Ray's "many tasks" benchmark times its
//! batch.

use std::time::Duration;

use anyhow::Context;
use futures::future::try_join_all;
use serde::Serialize;
use synod_sdk::proto as pb;
use synod_sdk::Client;
use tokio::time::Instant;

use super::jobs::{noop_job, JobPoller};

/// What to submit.
#[derive(Debug, Clone)]
pub struct ThroughputPlan {
    /// Tasks in the batch.
    pub tasks: usize,
    /// Tasks per job.
    pub tasks_per_job: usize,
    /// Concurrent submitters (one connection each).
    pub submitters: usize,
    /// How tasks are placed.
    pub strategy: pb::AssignmentStrategy,
}

/// One batch's result.
#[derive(Debug, Clone, Serialize)]
pub struct ThroughputResult {
    /// Tasks run.
    pub tasks: usize,
    /// Jobs they were submitted in.
    pub jobs: usize,
    /// Seconds from the first submit to the last job succeeded.
    pub seconds: f64,
    /// Tasks per second over that time.
    pub tasks_per_sec: f64,
    /// Seconds until every job was submitted (committed).
    pub submit_seconds: f64,
}

/// Runs one batch: `leader_addrs` lead with the leader, `follower` serves the polls.
pub async fn measure(
    plan: &ThroughputPlan,
    leader_addrs: &[String],
    follower: &str,
) -> anyhow::Result<ThroughputResult> {
    let jobs = plan.tasks.div_ceil(plan.tasks_per_job);
    let poller = JobPoller::connect(follower).await?;
    let started = Instant::now();
    let shares = (0..plan.submitters).map(|submitter| {
        let client = Client::new(leader_addrs.to_vec());
        let poller = poller.clone();
        let plan = plan.clone();
        async move {
            let client = client?;
            let mine: Vec<usize> = (submitter..jobs).step_by(plan.submitters).collect();
            let mut ids = Vec::with_capacity(mine.len());
            for job in mine {
                let first_task = job * plan.tasks_per_job;
                let count = plan.tasks_per_job.min(plan.tasks - first_task);
                let spec = noop_job(
                    format!("batch-{job}"),
                    vec![Vec::new(); count],
                    plan.strategy,
                );
                let submitted = client
                    .submit_job(spec, String::new())
                    .await
                    .with_context(|| format!("submitting job {job}"))?;
                ids.push(submitted.job_id);
            }
            let submitted_at = started.elapsed();
            for id in &ids {
                poller.wait_succeeded(id, Duration::from_millis(10)).await?;
            }
            anyhow::Ok(submitted_at)
        }
    });
    let submitted = try_join_all(shares).await?;
    let seconds = started.elapsed().as_secs_f64();
    let submit_seconds = submitted
        .iter()
        .max()
        .map(Duration::as_secs_f64)
        .unwrap_or_default();
    Ok(ThroughputResult {
        tasks: plan.tasks,
        jobs,
        seconds,
        tasks_per_sec: plan.tasks as f64 / seconds,
        submit_seconds,
    })
}
