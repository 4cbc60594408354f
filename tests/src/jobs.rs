//! Fixtures of the job tests: a 3-node cluster and a client, waiting for agents and jobs,
//! submitting job files.

use std::time::Duration;

use synod_coordinator::local_cluster::{wait_until, LocalCluster, NodeOptions};
use synod_sdk::job_file::parse_job_file;
use synod_sdk::proto as pb;
use synod_sdk::Client;

use crate::start_cluster;

/// How long a cluster may take to elect a leader (and agents to register).
pub const LEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a test job may take.
pub const JOB_TIMEOUT: Duration = Duration::from_secs(60);

/// Node options of the job tests: quiet logs.
pub fn options() -> NodeOptions {
    NodeOptions {
        log: "warn".into(),
        ..NodeOptions::default()
    }
}

/// A 3-node cluster with a leader, and a client of it.
pub async fn cluster_up(options: NodeOptions) -> anyhow::Result<(LocalCluster, Client)> {
    let cluster = start_cluster(3, options)?;
    cluster.wait_for_leader(LEADER_TIMEOUT).await?;
    let client = cluster.client()?;
    Ok((cluster, client))
}

/// Waits until at least `count` agents are connected. On timeout the error says what the
/// cluster last answered: the agents it knew and their states, or its error.
pub async fn wait_for_agents(client: &Client, count: usize) -> anyhow::Result<()> {
    let last = std::sync::Mutex::new(String::from("no answer"));
    let connected = wait_until(LEADER_TIMEOUT, "agents to register", || async {
        let answer = client.list_agents().await;
        *last.lock().expect("last answer") = match &answer {
            Ok(agents) => format!(
                "{:?}",
                agents
                    .iter()
                    .map(|a| (a.name.as_str(), a.state))
                    .collect::<Vec<_>>()
            ),
            Err(error) => format!("error: {error}"),
        };
        let connected = answer
            .ok()?
            .iter()
            .filter(|a| a.state == pb::AgentState::Connected as i32)
            .count();
        (connected >= count).then_some(())
    })
    .await;
    connected.map_err(|error| {
        let last = last.into_inner().expect("last answer");
        anyhow::anyhow!("{error} ({count} wanted); last answer: {last}")
    })
}

/// Waits until the job is in a terminal state.
pub async fn wait_for_job(client: &Client, job_id: &str) -> anyhow::Result<pb::Job> {
    wait_until(JOB_TIMEOUT, "the job to finish", || async {
        let job = client.get_job(job_id).await.ok()?;
        let done = [
            pb::JobState::Succeeded,
            pb::JobState::Failed,
            pb::JobState::Cancelled,
        ]
        .map(|s| s as i32);
        done.contains(&job.state).then_some(job)
    })
    .await
}

/// Submits a job file and waits until the job succeeds (failing with its reason otherwise).
pub async fn run_to_success(client: &Client, toml: &str) -> anyhow::Result<String> {
    let job_id = submit(client, toml).await?;
    wait_for_success(client, &job_id).await?;
    Ok(job_id)
}

/// Submits a job file.
pub async fn submit(client: &Client, toml: &str) -> anyhow::Result<String> {
    Ok(client.submit_job(parse_job_file(toml)?, "").await?.job_id)
}

/// Runs its closure when dropped.
pub struct OnDrop<F: FnOnce()>(pub Option<F>);

impl<F: FnOnce()> Drop for OnDrop<F> {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f();
        }
    }
}

/// A `synod-agent` process running the agents of `config` (TOML) against `cluster`, for tests
/// that kill an agent with SIGKILL. The directory holding the config must outlive the process.
pub fn start_agent_process(
    cluster: &LocalCluster,
    config: &str,
) -> anyhow::Result<(tempfile::TempDir, std::process::Child)> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("agents.toml");
    std::fs::write(&file, config)?;
    let child = std::process::Command::new(crate::sibling_binary("synod-agent")?)
        .arg("--config")
        .arg(&file)
        .arg("--addr")
        .arg(cluster.addrs().join(","))
        .args(["--log", "warn"])
        .spawn()?;
    Ok((dir, child))
}

/// Waits until the job is terminal and checks it succeeded (failing with its reason).
pub async fn wait_for_success(client: &Client, job_id: &str) -> anyhow::Result<pb::Job> {
    let job = wait_for_job(client, job_id).await?;
    anyhow::ensure!(
        job.state == pb::JobState::Succeeded as i32,
        "job ended in state {}: {}",
        job.state,
        job.state_reason
    );
    Ok(job)
}
