//! `synod demo`: a 3-node cluster of real processes on loopback takes concurrent writes through
//! every member, loses its leader to SIGKILL half-way, elects a new one and carries on; then
//! every acknowledged write is verified, the killed node restarts from disk and catches up.
//! Then demo agents connect and run a goal-driven job — a planner decomposing its goal for a
//! team — while the leader is killed once more.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use synod_sdk::proto as pb;
use tokio::time::Instant;

use crate::local_cluster::{LocalCluster, NodeOptions};

/// Flags of `synod demo`.
#[derive(clap::Args)]
pub struct DemoArgs {
    /// Commands to write.
    #[arg(long, default_value_t = 4000)]
    writes: u64,
    /// Concurrent writers.
    #[arg(long, default_value_t = 32)]
    writers: u64,
}

/// Runs the demo; fails if any acknowledged write is missing or replicas diverge.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    if args.writers == 0 || args.writes < 10 {
        bail!("--writers must be positive and --writes at least 10");
    }
    let binary = std::env::current_exe().context("locating the synod binary")?;
    let options = NodeOptions {
        log: "warn".into(),
        ..NodeOptions::default()
    };
    let started = Instant::now();
    let mut cluster = LocalCluster::start(&binary, 3, options)?;
    println!(
        "▸ started 3 coordinator processes: {}",
        cluster.addrs().join(", ")
    );
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await?;
    println!(
        "▸ node {leader} elected leader in {} ms",
        started.elapsed().as_millis()
    );

    let acked = Arc::new(AtomicU64::new(0));
    let progress = progress_bar(args.writes);
    let writing = tokio::spawn(write_all(
        cluster.addrs(),
        args.writes,
        args.writers,
        acked.clone(),
        progress.clone(),
    ));

    wait_for(&acked, args.writes / 2).await;
    cluster.kill(leader)?;
    let killed_at = Instant::now();
    say(
        &progress,
        format!(
            "✖ killed leader node {leader} with SIGKILL after {} writes",
            acked.load(Ordering::Relaxed)
        ),
    );
    let survivors: Vec<String> = cluster
        .running_ids()
        .iter()
        .map(|id| cluster.addr(*id).to_owned())
        .collect();
    synod_sdk::Client::new(survivors)?
        .put("demo-failover-probe", "ok")
        .await?;
    let failover_ms = killed_at.elapsed().as_millis();
    let new_leader = cluster.wait_for_leader(Duration::from_secs(10)).await?;
    say(&progress, format!("▸ node {new_leader} took over; first write after the kill succeeded in {failover_ms} ms"));

    let write_secs = writing.await??;
    progress.finish_and_clear();
    println!(
        "▸ {} writes acknowledged in {write_secs:.2} s ({:.0}/s) across a leader failure",
        args.writes,
        args.writes as f64 / write_secs
    );

    let found = count_keys(&cluster).await?;
    if found != args.writes {
        bail!(
            "expected {} keys, found {found}: acknowledged writes were lost",
            args.writes
        );
    }
    println!("▸ verified: all {found} acknowledged writes are present (linearizable read)");

    cluster.restart(leader)?;
    let committed = cluster.client()?.status(true).await?.commit_index;
    let (index, digest) = cluster
        .wait_converged(&[1, 2, 3], committed, Duration::from_secs(20))
        .await?;
    println!("▸ node {leader} restarted from its data dir and caught up: 3 replicas at index {index}, state digest {}", &digest[..16]);
    let job = run_goal_job(&mut cluster).await?;
    println!(
        "\nsummary: {} writes, 0 lost, leader fail-over {failover_ms} ms, replicas identical; goal-driven job {} with {} tasks succeeded across a second leader failure. demo passed.",
        args.writes, job.job_id, job.tasks
    );
    Ok(())
}

/// What the job part of the demo did.
struct JobSummary {
    job_id: String,
    tasks: usize,
}

/// The goal-driven part: demo agents connect, a planner decomposes a goal into subtasks for
/// the team, and the leader is killed while they work.
async fn run_goal_job(cluster: &mut LocalCluster) -> anyhow::Result<JobSummary> {
    let agents = tokio_util::sync::CancellationToken::new();
    let _stop_agents = agents.clone().drop_guard();
    let fleet = synod_agent::demo::fleet(&cluster.addrs());
    let count = fleet.len();
    for agent in fleet {
        let agents = agents.clone();
        tokio::spawn(async move { agent.run(agents).await });
    }
    let client = cluster.client()?;
    crate::local_cluster::wait_until(
        Duration::from_secs(20),
        "demo agents to connect",
        || async {
            let connected = client
                .list_agents()
                .await
                .ok()?
                .iter()
                .filter(|a| a.connected)
                .count();
            (connected >= count).then_some(())
        },
    )
    .await?;
    println!("\n▸ {count} agents connected: planner, researchers, analyzer, executor, validator, workers");
    let spec = synod_sdk::job_file::parse_job_file(GOAL_JOB)?;
    let job_id = client.submit_job(spec, "").await?.job_id;
    println!("▸ submitted goal-driven job {job_id}");
    follow_job(cluster, &client, &job_id).await?;
    let job = client.get_job(&job_id).await?;
    if job.state != pb::JobState::Succeeded as i32 {
        bail!(
            "the goal-driven job ended in state {} ({})",
            job.state,
            job.state_reason
        );
    }
    let tasks = client.job_tasks(&job_id).await?.len();
    println!(
        "▸ job succeeded: {}",
        String::from_utf8_lossy(&job.output)
            .chars()
            .take(160)
            .collect::<String>()
    );
    Ok(JobSummary { job_id, tasks })
}

/// Prints the job's events; kills the leader when the first subtask succeeds.
async fn follow_job(
    cluster: &mut LocalCluster,
    client: &synod_sdk::Client,
    job_id: &str,
) -> anyhow::Result<()> {
    let mut events = client.watch_job(job_id, true);
    let mut names = super::events::AgentNames::default();
    let mut killed = false;
    while let Some(event) = events.next().await {
        let event = event?;
        names.learn(client, &event).await;
        println!("  {:>3}  {}", event.sequence, names.describe(&event));
        let subtask_done = matches!(&event.kind, Some(pb::job_event::Kind::TaskSucceeded(e)) if e.task_id.contains('/'));
        if subtask_done && !killed {
            let leader = cluster.wait_for_leader(Duration::from_secs(10)).await?;
            cluster.kill(leader)?;
            killed = true;
            println!("  ✖ killed leader node {leader} with SIGKILL mid-job; agents reconnect to the new leader");
        }
        if matches!(event.kind, Some(pb::job_event::Kind::JobCompleted(_))) {
            return Ok(());
        }
    }
    bail!("the job watch ended before the job")
}

/// The example goal-driven job (examples/jobs/goal-research.toml).
const GOAL_JOB: &str = include_str!("../../../examples/jobs/goal-research.toml");

/// Prints a line above the progress bar (or plainly when output is not a terminal).
fn say(progress: &ProgressBar, line: String) {
    progress.suspend(|| println!("{line}"));
}

fn progress_bar(total: u64) -> ProgressBar {
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("  writing {bar:40} {pos}/{len} ({per_sec})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

async fn wait_for(counter: &AtomicU64, target: u64) {
    while counter.load(Ordering::Relaxed) < target {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Writes keys `demo/000000..` with `writers` tasks, each starting at a different member.
async fn write_all(
    addrs: Vec<String>,
    writes: u64,
    writers: u64,
    acked: Arc<AtomicU64>,
    progress: ProgressBar,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for writer in 0..writers {
        let mut order = addrs.clone();
        order.rotate_left(writer as usize % addrs.len());
        let client = synod_sdk::Client::new(order)?;
        let (next, acked, progress) = (next.clone(), acked.clone(), progress.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= writes {
                    return anyhow::Ok(());
                }
                client
                    .put(format!("demo/{i:06}"), format!("value-{i}"))
                    .await?;
                acked.fetch_add(1, Ordering::Relaxed);
                progress.inc(1);
            }
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(started.elapsed().as_secs_f64())
}

async fn count_keys(cluster: &LocalCluster) -> anyhow::Result<u64> {
    let client = cluster.client()?;
    let (mut count, mut page_token) = (0, String::new());
    loop {
        let response = client
            .list(pb::ListRequest {
                prefix: "demo/".into(),
                page: Some(pb::PageRequest {
                    page_size: 1000,
                    page_token,
                }),
                consistency: pb::Consistency::Linearizable as i32,
            })
            .await?;
        for kv in &response.kvs {
            let i: u64 = kv.key["demo/".len()..].parse()?;
            if kv.value != format!("value-{i}").as_bytes() {
                bail!("key {} holds a wrong value", kv.key);
            }
        }
        count += response.kvs.len() as u64;
        if response.next_page_token.is_empty() {
            return Ok(count);
        }
        page_token = response.next_page_token;
    }
}
