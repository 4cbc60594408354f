//! Multi-process tests of agents and jobs: a real 3-node cluster of `synod` processes, agents
//! connected over gRPC (in-process SDK agents whose handlers record what they ran, and real
//! `synod-agent` processes where an agent must die by SIGKILL).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use synod_coordinator::local_cluster::{wait_until, LocalCluster, NodeOptions};
use synod_sdk::agent::{AgentBuilder, Offer, Task, TaskOutcome};
use synod_sdk::proto as pb;
use synod_sdk::{Client, Code};
use synod_tests::jobs::{
    cluster_up, options, run_to_success, start_agent_process, submit, wait_for_agents,
    wait_for_job, OnDrop, JOB_TIMEOUT, LEADER_TIMEOUT,
};
use synod_tests::{serial, start_cluster};
use tokio_util::sync::CancellationToken;

/// Which agent ran which task, by agent name.
type Runs = Arc<Mutex<Vec<(String, String)>>>;

struct Fleet {
    shutdown: CancellationToken,
    runs: Runs,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Fleet {
    fn new() -> Self {
        Self {
            shutdown: CancellationToken::new(),
            runs: Runs::default(),
        }
    }

    /// Starts an in-process agent whose every task succeeds after `work`, recording the run.
    fn start(
        &self,
        cluster: &LocalCluster,
        name: &str,
        capabilities: &[&str],
        max_concurrent: u32,
        work: Duration,
        bid: Option<f64>,
    ) {
        let runs = self.runs.clone();
        let agent_name = name.to_owned();
        let mut builder = AgentBuilder::new(name, cluster.addrs())
            .max_concurrent(max_concurrent)
            .fallback_handler(move |task: Task| {
                let (runs, agent_name) = (runs.clone(), agent_name.clone());
                async move {
                    tokio::time::sleep(work).await;
                    runs.lock()
                        .unwrap()
                        .push((agent_name.clone(), task.task.task_id.clone()));
                    TaskOutcome::Succeeded(
                        format!("{}:{}", agent_name, task.task.task_id).into_bytes(),
                    )
                }
            });
        for capability in capabilities {
            builder = builder.capability(*capability);
        }
        if let Some(cost) = bid {
            builder = builder.bid_handler(move |_: &pb::CallForBids| {
                Some(Offer {
                    cost,
                    estimate_ms: 10,
                })
            });
        }
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move { builder.run(shutdown).await });
    }

    fn runs(&self) -> Vec<(String, String)> {
        self.runs.lock().unwrap().clone()
    }
}

fn many_tasks(count: usize, strategy: &str, capability: &str) -> String {
    (0..count)
        .map(|i| format!("[[tasks]]\nid = \"t{i:03}\"\nkind = \"work\"\nstrategy = \"{strategy}\"\ncapabilities = [\"{capability}\"]\n"))
        .collect()
}

fn count_by_agent(runs: &[(String, String)]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for (agent, _) in runs {
        *counts.entry(agent.clone()).or_default() += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capability_routing_never_places_a_task_on_an_agent_lacking_a_capability(
) -> anyhow::Result<()> {
    let _serial = serial().await;
    let (cluster, client) = cluster_up(options()).await?;
    let fleet = Fleet::new();
    fleet.start(
        &cluster,
        "gpu-1",
        &["gpu", "python"],
        4,
        Duration::from_millis(5),
        None,
    );
    fleet.start(
        &cluster,
        "cpu-1",
        &["python"],
        4,
        Duration::from_millis(5),
        None,
    );
    fleet.start(
        &cluster,
        "cpu-2",
        &["python"],
        4,
        Duration::from_millis(5),
        None,
    );
    wait_for_agents(&client, 3).await?;
    let job = format!("{}{}", many_tasks(20, "capability", "gpu"), "");
    let job_id = submit(&client, &job).await?;
    let done = wait_for_job(&client, &job_id).await?;
    assert_eq!(done.state, pb::JobState::Succeeded as i32);
    let runs = fleet.runs();
    assert_eq!(runs.len(), 20);
    assert!(runs.iter().all(|(agent, _)| agent == "gpu-1"), "{runs:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_and_least_loaded_spread_tasks_evenly() -> anyhow::Result<()> {
    let _serial = serial().await;
    let (cluster, client) = cluster_up(options()).await?;
    let fleet = Fleet::new();
    for i in 1..=3 {
        fleet.start(
            &cluster,
            &format!("w{i}"),
            &["work"],
            2,
            Duration::from_millis(50),
            None,
        );
    }
    wait_for_agents(&client, 3).await?;
    for strategy in ["round_robin", "least_loaded"] {
        fleet.runs.lock().unwrap().clear();
        let job_id = submit(&client, &many_tasks(30, strategy, "work")).await?;
        assert_eq!(
            wait_for_job(&client, &job_id).await?.state,
            pb::JobState::Succeeded as i32
        );
        let counts = count_by_agent(&fleet.runs());
        assert_eq!(counts.len(), 3, "{strategy}: {counts:?}");
        assert!(
            counts.values().all(|n| (8..=12).contains(n)),
            "{strategy} spreads evenly: {counts:?}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_auction_awards_the_best_bid() -> anyhow::Result<()> {
    let _serial = serial().await;
    let (cluster, client) = cluster_up(options()).await?;
    let fleet = Fleet::new();
    // Bidders' tasks outlast every auction of a job, so a full bidder stays full until the
    // last award and the overflow cannot land on a slot that happened to free up.
    let work = Duration::from_secs(2);
    fleet.start(&cluster, "pricey", &["bid"], 8, work, Some(9.0));
    fleet.start(&cluster, "cheap", &["bid"], 8, work, Some(1.0));
    fleet.start(
        &cluster,
        "silent",
        &["bid"],
        8,
        Duration::from_millis(5),
        None,
    );
    wait_for_agents(&client, 3).await?;
    let job_id = submit(&client, &many_tasks(5, "auction", "bid")).await?;
    assert_eq!(
        wait_for_job(&client, &job_id).await?.state,
        pb::JobState::Succeeded as i32
    );
    let counts = count_by_agent(&fleet.runs());
    assert_eq!(counts.get("cheap"), Some(&5), "{counts:?}");

    // Once the cheapest bidder is full, the next best bid wins.
    fleet.runs.lock().unwrap().clear();
    let job_id = submit(&client, &many_tasks(12, "auction", "bid")).await?;
    assert_eq!(
        wait_for_job(&client, &job_id).await?.state,
        pb::JobState::Succeeded as i32
    );
    let counts = count_by_agent(&fleet.runs());
    assert_eq!(counts.values().sum::<usize>(), 12, "{counts:?}");
    assert!(
        counts.get("pricey").is_some_and(|n| *n >= 4),
        "the next best bid takes the overflow: {counts:?}"
    );
    assert!(
        !counts.contains_key("silent"),
        "an agent that never bids loses to bidders: {counts:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_with_backoff_then_dead_letter() -> anyhow::Result<()> {
    let _serial = serial().await;
    let (cluster, client) = cluster_up(options()).await?;
    let shutdown = CancellationToken::new();
    let attempts = Arc::new(Mutex::new(Vec::new()));
    let seen = attempts.clone();
    let agent = AgentBuilder::new("flaky", cluster.addrs())
        .capability("flaky")
        .handler("flaky", move |task: Task| {
            let seen = seen.clone();
            async move {
                seen.lock()
                    .unwrap()
                    .push((task.task.task_id.clone(), task.task.attempt));
                match task.task.task_id.as_str() {
                    "recovers" if task.task.attempt >= 2 => TaskOutcome::Succeeded(b"ok".to_vec()),
                    _ => TaskOutcome::retryable("boom"),
                }
            }
        });
    let stop = shutdown.clone();
    tokio::spawn(async move { agent.run(stop).await });
    wait_for_agents(&client, 1).await?;
    let job = r#"
        [[tasks]]
        id = "recovers"
        kind = "flaky"
        capabilities = ["flaky"]
        retry = { max_attempts = 3, initial_backoff_ms = 100 }
        [[tasks]]
        id = "never"
        kind = "flaky"
        capabilities = ["flaky"]
        retry = { max_attempts = 3, initial_backoff_ms = 50 }
    "#;
    let job_id = submit(&client, job).await?;
    let done = wait_for_job(&client, &job_id).await?;
    shutdown.cancel();
    assert_eq!(done.state, pb::JobState::Failed as i32);
    let tasks: BTreeMap<String, pb::Task> = client
        .job_tasks(&job_id)
        .await?
        .into_iter()
        .map(|t| (t.task_id.clone(), t))
        .collect();
    assert_eq!(tasks["recovers"].state, pb::TaskState::Succeeded as i32);
    assert_eq!(tasks["recovers"].attempt, 2);
    assert_eq!(tasks["never"].state, pb::TaskState::DeadLettered as i32);
    assert_eq!(tasks["never"].attempt, 3);
    let never: Vec<u32> = attempts
        .lock()
        .unwrap()
        .iter()
        .filter(|(t, _)| t == "never")
        .map(|(_, a)| *a)
        .collect();
    assert_eq!(never, [1, 2, 3]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_job_specs_are_rejected_with_the_task_and_field() -> anyhow::Result<()> {
    let _serial = serial().await;
    let cluster = start_cluster(1, options())?;
    cluster.wait_for_leader(LEADER_TIMEOUT).await?;
    let client = cluster.client()?;
    let fleet = Fleet::new();
    fleet.start(&cluster, "w", &["work"], 1, Duration::from_millis(5), None);
    wait_for_agents(&client, 1).await?;
    let cases = [
        ("[[tasks]]\nid = \"a\"\nkind = \"k\"\ndepends_on = [\"b\"]\n[[tasks]]\nid = \"b\"\nkind = \"k\"\ndepends_on = [\"a\"]\n", "cycle"),
        ("[[tasks]]\nid = \"a\"\nkind = \"k\"\ndepends_on = [\"ghost\"]\n", "unknown task 'ghost'"),
        ("[[tasks]]\nid = \"a\"\nkind = \"k\"\n[[tasks]]\nid = \"a\"\nkind = \"k\"\n", "duplicate"),
        ("[[tasks]]\nid = \"a\"\nkind = \"k\"\ncapabilities = [\"quantum\"]\n", "quantum"),
    ];
    for (job, expected) in cases {
        let error = submit(&client, job).await.unwrap_err();
        let error = error.downcast::<synod_sdk::ClientError>()?;
        assert_eq!(error.code(), Some(Code::InvalidArgument), "{error}");
        assert!(
            error.to_string().contains("tasks") && error.to_string().contains(expected),
            "{error}"
        );
    }
    let mut big = pb::JobSpec::default();
    big.tasks.push(pb::TaskSpec {
        task_id: "a".into(),
        kind: "k".into(),
        payload: vec![0; 1024 * 1024 + 1],
        ..Default::default()
    });
    let error = client.submit_job(big, "").await.unwrap_err();
    assert!(error.to_string().contains("tasks[0].payload"), "{error}");
    Ok(())
}

/// The task's current record.
async fn task_of(client: &Client, job_id: &str, task_id: &str) -> Option<pb::Task> {
    client
        .job_tasks(job_id)
        .await
        .ok()?
        .into_iter()
        .find(|t| t.task_id == task_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_on_an_agent_killed_mid_task_is_rerun_elsewhere_and_the_job_completes(
) -> anyhow::Result<()> {
    let _serial = serial().await;
    let (cluster, client) = cluster_up(options()).await?;
    let (_dir, mut victim) = start_agent_process(&cluster, "[[agents]]\nname = \"victim\"\ncapabilities = [\"slow\"]\n[[agents.handlers]]\nkind = \"*\"\ndemo = \"sleep\"\n")?;
    wait_for_agents(&client, 1).await?;
    let job_id = submit(&client, "[[tasks]]\nid = \"long\"\nkind = \"sleep\"\npayload = { ms = 30000 }\ncapabilities = [\"slow\"]\n").await?;
    let first = wait_until(LEADER_TIMEOUT, "the task to reach the victim", || async {
        let task = task_of(&client, &job_id, "long").await?;
        (task.state == pb::TaskState::Running as i32).then_some(task)
    })
    .await?;
    victim.kill()?;
    victim.wait()?;
    let fleet = Fleet::new();
    fleet.start(
        &cluster,
        "rescuer",
        &["slow"],
        1,
        Duration::from_millis(10),
        None,
    );
    let done = wait_for_job(&client, &job_id).await?;
    assert_eq!(done.state, pb::JobState::Succeeded as i32);
    let task = task_of(&client, &job_id, "long").await.expect("task");
    assert_eq!(
        task.attempt,
        first.attempt + 1,
        "re-run once after the agent was lost"
    );
    assert_ne!(task.agent_id, first.agent_id);
    assert_eq!(fleet.runs(), [("rescuer".to_owned(), "long".to_owned())]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_mid_job_completes_the_job_without_counting_a_result_twice_and_keeps_its_history(
) -> anyhow::Result<()> {
    let _serial = serial().await;
    let mut cluster = start_cluster(3, options())?;
    let leader = cluster.wait_for_leader(LEADER_TIMEOUT).await?;
    let client = cluster.client()?;
    let fleet = Fleet::new();
    for i in 1..=4 {
        fleet.start(
            &cluster,
            &format!("w{i}"),
            &["work"],
            2,
            Duration::from_millis(150),
            None,
        );
    }
    wait_for_agents(&client, 4).await?;
    let job_id = submit(&client, &many_tasks(40, "least_loaded", "work")).await?;
    wait_until(JOB_TIMEOUT, "some tasks to finish", || async {
        (fleet.runs().len() >= 8).then_some(())
    })
    .await?;
    let before = client.job_history(&job_id).await?;
    cluster.kill(leader)?;
    let done = wait_for_job(&client, &job_id).await?;
    assert_eq!(done.state, pb::JobState::Succeeded as i32, "{done:?}");
    // The history the old leader served is intact on the new one, and carries on in order.
    let after = client.job_history(&job_id).await?;
    assert!(before.len() >= 8, "{} events before the kill", before.len());
    assert_eq!(
        after[..before.len()],
        before[..],
        "history changed across the kill"
    );
    let sequences: Vec<u64> = after.iter().map(|e| e.sequence).collect();
    assert_eq!(sequences, (1..=after.len() as u64).collect::<Vec<_>>());
    assert!(matches!(
        after.last().and_then(|e| e.kind.as_ref()),
        Some(pb::job_event::Kind::JobCompleted(_))
    ));
    let mut watch = client.watch_job(&job_id, true);
    let mut successes: BTreeMap<String, usize> = BTreeMap::new();
    while let Some(event) = watch.next().await {
        if let Some(pb::job_event::Kind::TaskSucceeded(e)) = event?.kind {
            *successes.entry(e.task_id).or_default() += 1;
        }
    }
    assert_eq!(successes.len(), 40);
    assert!(
        successes.values().all(|n| *n == 1),
        "a task counted as done twice: {successes:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_agents_connect_at_once() -> anyhow::Result<()> {
    let _serial = serial().await;
    let (cluster, client) = cluster_up(options()).await?;
    let fleet = Fleet::new();
    for i in 0..1000 {
        fleet.start(
            &cluster,
            &format!("a{i:04}"),
            &["swarm"],
            1,
            Duration::from_millis(1),
            None,
        );
    }
    wait_until(
        Duration::from_secs(60),
        "1,000 agents to connect",
        || async {
            let agents = client.list_agents().await.ok()?;
            let connected = agents
                .iter()
                .filter(|a| a.state == pb::AgentState::Connected as i32 && a.connected)
                .count();
            (connected == 1000).then_some(())
        },
    )
    .await?;
    let job_id = submit(&client, &many_tasks(100, "round_robin", "swarm")).await?;
    assert_eq!(
        wait_for_job(&client, &job_id).await?.state,
        pb::JobState::Succeeded as i32
    );
    assert_eq!(
        count_by_agent(&fleet.runs()).len(),
        100,
        "round robin over 1,000 agents uses 100 different ones"
    );
    Ok(())
}

/// An agent that declines every call for bids (counting them per task) and runs tasks of kind
/// `forever` until they are cancelled (recording the cancellations).
struct Holdout {
    calls: Arc<Mutex<BTreeMap<String, usize>>>,
    cancelled: Arc<Mutex<Vec<String>>>,
}

impl Holdout {
    fn start(cluster: &LocalCluster, shutdown: &CancellationToken) -> Self {
        let calls: Arc<Mutex<BTreeMap<String, usize>>> = Arc::default();
        let cancelled: Arc<Mutex<Vec<String>>> = Arc::default();
        let (seen_calls, seen_cancels) = (calls.clone(), cancelled.clone());
        let agent = AgentBuilder::new("holdout", cluster.addrs())
            .capability("holdout")
            .max_concurrent(4)
            .bid_handler(move |call: &pb::CallForBids| {
                *seen_calls
                    .lock()
                    .unwrap()
                    .entry(call.task_id.clone())
                    .or_default() += 1;
                None
            })
            .fallback_handler(move |task: Task| {
                let seen_cancels = seen_cancels.clone();
                async move {
                    if task.kind == "forever" {
                        // The SDK drops a cancelled handler's future: the guard sees that.
                        let _guard = OnDrop(Some(move || {
                            seen_cancels.lock().unwrap().push(task.task.task_id.clone())
                        }));
                        std::future::pending::<()>().await;
                    }
                    TaskOutcome::Succeeded(Vec::new())
                }
            });
        let stop = shutdown.clone();
        tokio::spawn(async move { agent.run(stop).await });
        Self { calls, cancelled }
    }

    fn calls(&self, task_id: &str) -> usize {
        self.calls
            .lock()
            .unwrap()
            .get(task_id)
            .copied()
            .unwrap_or(0)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auction_without_bids_runs_again_then_its_fallback_places_the_task() -> anyhow::Result<()>
{
    let _serial = serial().await;
    let (cluster, client) = cluster_up(options()).await?;
    let shutdown = CancellationToken::new();
    let holdout = Holdout::start(&cluster, &shutdown);
    wait_for_agents(&client, 1).await?;
    let job = r#"
        [[tasks]]
        id = "tender"
        kind = "work"
        capabilities = ["holdout"]
        strategy = "auction"
        bid_window_ms = 100
        auction_rounds = 3
        auction_fallback = "least_loaded"
    "#;
    let job_id = submit(&client, job).await?;
    let done = wait_for_job(&client, &job_id).await?;
    shutdown.cancel();
    assert_eq!(done.state, pb::JobState::Succeeded as i32);
    assert_eq!(
        holdout.calls("tender"),
        3,
        "three rounds without a bid, then the fallback"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_past_its_timeout_fails_and_its_running_task_is_cancelled_on_the_agent(
) -> anyhow::Result<()> {
    let _serial = serial().await;
    let (cluster, client) = cluster_up(options()).await?;
    let shutdown = CancellationToken::new();
    let holdout = Holdout::start(&cluster, &shutdown);
    wait_for_agents(&client, 1).await?;
    // "slow" runs until cancelled; "unsold" is auctioned with no fallback, so it waits for a
    // bid that never comes. Only the job's own timeout ends the job.
    let job = r#"
        timeout_ms = 1500
        [[tasks]]
        id = "slow"
        kind = "forever"
        capabilities = ["holdout"]
        [[tasks]]
        id = "unsold"
        kind = "work"
        capabilities = ["holdout"]
        strategy = "auction"
        bid_window_ms = 100
    "#;
    let started = std::time::Instant::now();
    let job_id = submit(&client, job).await?;
    let done = wait_for_job(&client, &job_id).await?;
    let elapsed = started.elapsed();
    assert_eq!(done.state, pb::JobState::Failed as i32);
    assert_eq!(done.state_reason, "the job's timeout of 1500 ms passed");
    assert!(
        elapsed >= Duration::from_millis(1500),
        "finished after {elapsed:?}"
    );
    let tasks: BTreeMap<String, pb::Task> = client
        .job_tasks(&job_id)
        .await?
        .into_iter()
        .map(|t| (t.task_id.clone(), t))
        .collect();
    assert_eq!(tasks["slow"].state, pb::TaskState::Cancelled as i32);
    assert_eq!(tasks["unsold"].state, pb::TaskState::Cancelled as i32);
    assert!(
        holdout.calls("unsold") >= 3,
        "re-auctioned while nobody bid: {} calls",
        holdout.calls("unsold")
    );
    wait_until(
        Duration::from_secs(10),
        "the agent to see the cancel",
        || async {
            holdout
                .cancelled
                .lock()
                .unwrap()
                .contains(&"slow".to_owned())
                .then_some(())
        },
    )
    .await?;
    shutdown.cancel();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_cancelled_through_a_follower_stops_its_attempt_on_the_agent_at_once(
) -> anyhow::Result<()> {
    let _serial = serial().await;
    let cluster = start_cluster(3, options())?;
    let leader = cluster.wait_for_leader(LEADER_TIMEOUT).await?;
    let client = cluster.client()?;
    let shutdown = CancellationToken::new();
    let holdout = Holdout::start(&cluster, &shutdown);
    wait_for_agents(&client, 1).await?;
    let job_id = submit(
        &client,
        "[[tasks]]\nid = \"endless\"\nkind = \"forever\"\ncapabilities = [\"holdout\"]\n",
    )
    .await?;
    wait_until(Duration::from_secs(10), "the task to run", || async {
        let task = task_of(&client, &job_id, "endless").await?;
        (task.state == pb::TaskState::Running as i32).then_some(())
    })
    .await?;

    let follower = cluster.ids().into_iter().find(|id| *id != leader).unwrap();
    let through_follower = Client::new(vec![cluster.addr(follower).to_owned()])?;
    let cancelled_at = std::time::Instant::now();
    through_follower
        .cancel_job(&job_id, "changed our mind")
        .await?;
    wait_until(
        Duration::from_secs(10),
        "the agent to see the cancel",
        || async {
            let seen = holdout
                .cancelled
                .lock()
                .unwrap()
                .contains(&"endless".into());
            seen.then_some(())
        },
    )
    .await?;
    // The leader tells the agent as the forwarded cancel commits, well before the agent's next
    // heartbeat (every second) would have shown it the task is no longer its own.
    let waited = cancelled_at.elapsed();
    assert!(
        waited < Duration::from_millis(800),
        "cancel took {waited:?}"
    );
    let job = wait_for_job(&client, &job_id).await?;
    assert_eq!(job.state, pb::JobState::Cancelled as i32);
    assert_eq!(
        task_of(&client, &job_id, "endless").await.unwrap().state,
        pb::TaskState::Cancelled as i32
    );
    shutdown.cancel();
    Ok(())
}

/// Starts an agent with `cpu` of resource and label `zone`, whose tasks take `work`; records
/// the most tasks it ran at once.
fn start_sized_agent(
    cluster: &LocalCluster,
    shutdown: &CancellationToken,
    name: &str,
    cpu: f64,
    zone: &str,
    work: Duration,
) -> Arc<Mutex<(usize, usize)>> {
    let running: Arc<Mutex<(usize, usize)>> = Arc::default();
    let seen = running.clone();
    let agent = AgentBuilder::new(name, cluster.addrs())
        .capability("render")
        .label("zone", zone)
        .resource("cpu", cpu)
        .max_concurrent(8)
        .fallback_handler(move |task: Task| {
            let seen = seen.clone();
            async move {
                {
                    let mut counts = seen.lock().unwrap();
                    counts.0 += 1;
                    counts.1 = counts.1.max(counts.0);
                }
                tokio::time::sleep(work).await;
                seen.lock().unwrap().0 -= 1;
                TaskOutcome::Succeeded(task.task.task_id.into_bytes())
            }
        });
    let stop = shutdown.clone();
    tokio::spawn(async move { agent.run(stop).await });
    running
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resources_constraints_and_anti_affinity_shape_placement() -> anyhow::Result<()> {
    let _serial = serial().await;
    let (cluster, client) = cluster_up(options()).await?;
    let shutdown = CancellationToken::new();
    let work = Duration::from_millis(150);
    let eu1 = start_sized_agent(&cluster, &shutdown, "eu-1", 4.0, "eu", work);
    let eu2 = start_sized_agent(&cluster, &shutdown, "eu-2", 4.0, "eu", work);
    let us1 = start_sized_agent(&cluster, &shutdown, "us-1", 4.0, "us", work);
    wait_for_agents(&client, 3).await?;
    let names: BTreeMap<String, String> = client
        .list_agents()
        .await?
        .into_iter()
        .map(|a| (a.agent_id, a.name))
        .collect();

    // 12 tasks of 2 cpu, EU only: at most two at a time on each EU agent, none in the US.
    let heavy: String = (0..12)
        .map(|i| {
            format!(
                "[[tasks]]\nid = \"frame-{i:02}\"\nkind = \"render\"\ncapabilities = [\"render\"]\n\
                 resources = {{ cpu = 2.0 }}\nstrategy = \"least_loaded\"\n\
                 constraints = [{{ key = \"zone\", op = \"in\", values = [\"eu\"] }}]\n"
            )
        })
        .collect();
    let job_id = run_to_success(&client, &heavy).await?;
    let tasks = client.job_tasks(&job_id).await?;
    for task in &tasks {
        assert!(
            names[&task.agent_id].starts_with("eu-"),
            "{} ran on {}",
            task.task_id,
            names[&task.agent_id]
        );
    }
    assert_eq!(us1.lock().unwrap().1, 0, "nothing ran in the US");
    for (name, agent) in [("eu-1", &eu1), ("eu-2", &eu2)] {
        let most = agent.lock().unwrap().1;
        assert!(
            (1..=2).contains(&most),
            "{name} ran {most} tasks of 2 cpu at once on 4 cpu"
        );
    }

    // Three replicas kept apart: one per agent.
    let replicas: String = (0..3)
        .map(|i| {
            format!(
                "[[tasks]]\nid = \"replica-{i}\"\nkind = \"render\"\ncapabilities = [\"render\"]\n\
                 anti_affinity_group = \"replicas\"\nstrategy = \"least_loaded\"\n"
            )
        })
        .collect();
    let job_id = run_to_success(&client, &replicas).await?;
    let agents: std::collections::BTreeSet<String> = client
        .job_tasks(&job_id)
        .await?
        .into_iter()
        .map(|t| t.agent_id)
        .collect();
    assert_eq!(agents.len(), 3, "replicas shared an agent: {agents:?}");

    // A task no agent could ever take is refused at submission, with the reason.
    let too_big = "[[tasks]]\nid = \"huge\"\nkind = \"render\"\ncapabilities = [\"render\"]\nresources = { cpu = 16.0 }\n";
    let error = submit(&client, too_big).await.unwrap_err().to_string();
    assert!(
        error.contains("tasks[0].resources: no agent can ever run it")
            && error.contains("resource 'cpu': needs 16, 4 free"),
        "{error}"
    );
    shutdown.cancel();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_no_live_agent_can_take_ends_unsatisfiable_with_the_reason() -> anyhow::Result<()> {
    let _serial = serial().await;
    let (cluster, client) = cluster_up(NodeOptions {
        unsatisfiable_ms: 1_000,
        ..options()
    })
    .await?;
    let fleet = Fleet::new();
    fleet.start(
        &cluster,
        "cpu-worker",
        &["cpu"],
        2,
        Duration::from_secs(1),
        None,
    );
    let gpu = CancellationToken::new();
    let gpu_agent = AgentBuilder::new("gpu-box", cluster.addrs())
        .capability("gpu")
        .fallback_handler(|_: Task| async { TaskOutcome::Succeeded(Vec::new()) });
    let stop = gpu.clone();
    tokio::spawn(async move { gpu_agent.run(stop).await });
    wait_for_agents(&client, 2).await?;
    // `render` needs the GPU box, which leaves while `prep` runs.
    let job = "[[tasks]]\nid = \"prep\"\nkind = \"work\"\ncapabilities = [\"cpu\"]\n\
               [[tasks]]\nid = \"render\"\nkind = \"work\"\ncapabilities = [\"gpu\"]\ndepends_on = [\"prep\"]\n";
    let job_id = submit(&client, job).await?;
    gpu.cancel();
    let done = wait_for_job(&client, &job_id).await?;
    assert_eq!(done.state, pb::JobState::Failed as i32);
    let render = task_of(&client, &job_id, "render").await.unwrap();
    assert_eq!(render.state, pb::TaskState::Unsatisfiable as i32);
    assert_eq!(render.state_reason, "no agent offers 'gpu'");
    assert_eq!(
        task_of(&client, &job_id, "prep").await.unwrap().state,
        pb::TaskState::Succeeded as i32
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_falls_back_to_another_kind_once_its_attempts_are_used_up() -> anyhow::Result<()> {
    let _serial = serial().await;
    let (cluster, client) = cluster_up(options()).await?;
    let shutdown = CancellationToken::new();
    let big = AgentBuilder::new("big-model", cluster.addrs())
        .capability("big")
        .handler("big-model", |_: Task| async {
            TaskOutcome::fatal("the big model is overloaded")
        });
    let small = AgentBuilder::new("small-model", cluster.addrs())
        .capability("small")
        .handler("small-model", |task: Task| async move {
            TaskOutcome::Succeeded(format!("small answer to {}", task.task.task_id).into_bytes())
        });
    for agent in [big, small] {
        let stop = shutdown.clone();
        tokio::spawn(async move { agent.run(stop).await });
    }
    wait_for_agents(&client, 2).await?;
    let job = "[[tasks]]\nid = \"answer\"\nkind = \"big-model\"\ncapabilities = [\"big\"]\n\
               retry = { max_attempts = 2, initial_backoff_ms = 50 }\n\
               fallback = { kind = \"small-model\", capabilities = [\"small\"] }\n";
    let job_id = run_to_success(&client, job).await?;
    let task = task_of(&client, &job_id, "answer").await.unwrap();
    assert_eq!(task.output, b"small answer to answer");
    assert_eq!(
        task.attempts.len(),
        2,
        "one failed big attempt, then the fallback"
    );
    let history = client.job_history(&job_id).await?;
    assert!(history.iter().any(|e| matches!(
        &e.kind,
        Some(pb::job_event::Kind::FallbackActivated(f)) if f.kind == "small-model"
    )));
    shutdown.cancel();
    Ok(())
}

/// Starts an agent that fails every task (retryably) while `broken` is set, and records how
/// each of its attempts ended (true for success).
fn start_flaky_agent(
    cluster: &LocalCluster,
    shutdown: &CancellationToken,
    broken: Arc<std::sync::atomic::AtomicBool>,
) -> Arc<Mutex<Vec<bool>>> {
    let outcomes: Arc<Mutex<Vec<bool>>> = Arc::default();
    let seen = outcomes.clone();
    let agent = AgentBuilder::new("flaky", cluster.addrs())
        .capability("work")
        .max_concurrent(4)
        .fallback_handler(move |_: Task| {
            let (seen, broken) = (seen.clone(), broken.clone());
            async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                let ok = !broken.load(std::sync::atomic::Ordering::SeqCst);
                seen.lock().unwrap().push(ok);
                match ok {
                    true => TaskOutcome::Succeeded(Vec::new()),
                    false => TaskOutcome::retryable("disk full"),
                }
            }
        });
    let stop = shutdown.clone();
    tokio::spawn(async move { agent.run(stop).await });
    outcomes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_agent_is_quarantined_its_work_goes_elsewhere_and_it_recovers(
) -> anyhow::Result<()> {
    let _serial = serial().await;
    let (cluster, client) = cluster_up(NodeOptions {
        breaker_failures: 3,
        breaker_cooldown_ms: 2_000,
        ..options()
    })
    .await?;
    let shutdown = CancellationToken::new();
    let broken = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let flaky = start_flaky_agent(&cluster, &shutdown, broken.clone());
    let fleet = Fleet::new();
    fleet.start(
        &cluster,
        "steady",
        &["work"],
        4,
        Duration::from_millis(60),
        None,
    );
    wait_for_agents(&client, 2).await?;
    let tasks = |prefix: &str, count: usize| -> String {
        (0..count)
            .map(|i| {
                format!(
                    "[[tasks]]\nid = \"{prefix}{i:02}\"\nkind = \"work\"\ncapabilities = [\"work\"]\n\
                     strategy = \"round_robin\"\nretry = {{ max_attempts = 6, initial_backoff_ms = 20 }}\n"
                )
            })
            .collect()
    };

    run_to_success(&client, &tasks("a", 16)).await?;
    // Three failures in a row open the circuit; an attempt already running when it opened
    // may still fail. Without the breaker round-robin would have given it half the tasks.
    let attempts = flaky.lock().unwrap().clone();
    assert!(
        (3..=4).contains(&attempts.len()) && attempts.iter().all(|ok| !ok),
        "{attempts:?}"
    );
    let agents = client.list_agents().await?;
    let quarantined = agents.iter().find(|a| a.name == "flaky").unwrap();
    assert_eq!(quarantined.state, pb::AgentState::Quarantined as i32);
    assert!(
        quarantined.state_reason.starts_with(&format!(
            "quarantined after {} failed attempts in a row",
            attempts.len()
        )),
        "{}",
        quarantined.state_reason
    );

    // Repaired; after the cool-down a probe succeeds and work flows to it again.
    broken.store(false, std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    let job_id = submit(&client, &tasks("b", 16)).await?;
    let done = wait_for_job(&client, &job_id).await?;
    assert_eq!(done.state, pb::JobState::Succeeded as i32);
    let successes = flaky.lock().unwrap().iter().filter(|ok| **ok).count();
    assert!(successes >= 2, "the recovered agent ran {successes} tasks");
    let agents = client.list_agents().await?;
    let recovered = agents.iter().find(|a| a.name == "flaky").unwrap();
    assert_eq!(recovered.state, pb::AgentState::Connected as i32);
    shutdown.cancel();
    Ok(())
}
