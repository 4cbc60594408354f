//! Multi-process tests of job composition: fan-out / map-reduce, child jobs and compensation,
//! on a real 3-node cluster of `synod` processes with in-process SDK agents whose handlers
//! record what they ran.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use synod_coordinator::local_cluster::{wait_until, LocalCluster};
use synod_sdk::agent::{AgentBuilder, Task, TaskOutcome};
use synod_sdk::proto as pb;
use synod_sdk::Client;
use synod_tests::jobs::{
    cluster_up, options, submit, wait_for_agents, wait_for_job, wait_for_success, OnDrop,
    JOB_TIMEOUT, LEADER_TIMEOUT,
};
use synod_tests::serial;
use tokio_util::sync::CancellationToken;

/// Instances in progress on the mappers now, and the most seen at once.
#[derive(Default)]
struct Concurrency {
    now: AtomicUsize,
    most: AtomicUsize,
}

impl Concurrency {
    fn enter(&self) {
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
    }

    fn leave(&self) {
        self.now.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Starts a mapper: doubles the number in its item, after a short pause.
fn start_mapper(
    cluster: &LocalCluster,
    name: &str,
    concurrency: Arc<Concurrency>,
    stop: &CancellationToken,
) {
    let agent = AgentBuilder::new(name, cluster.addrs())
        .capability("map")
        .max_concurrent(64)
        .handler("double", move |task: Task| {
            let concurrency = concurrency.clone();
            async move {
                concurrency.enter();
                tokio::time::sleep(Duration::from_millis(2)).await;
                let n: u64 = String::from_utf8_lossy(&task.item)
                    .parse()
                    .unwrap_or(u64::MAX);
                concurrency.leave();
                TaskOutcome::Succeeded((n * 2).to_string().into_bytes())
            }
        });
    let stop = stop.clone();
    tokio::spawn(async move { agent.run(stop).await });
}

/// Starts the agent of the list and reduce steps: `list` outputs `[0, 1, ... n-1]`, `join`
/// joins the mapped outputs in item order with commas.
fn start_reducer(cluster: &LocalCluster, stop: &CancellationToken) {
    let agent = AgentBuilder::new("reducer", cluster.addrs())
        .capability("reduce")
        .handler("list", |task: Task| async move {
            let n: u64 = String::from_utf8_lossy(&task.payload).parse().unwrap_or(0);
            let items: Vec<u64> = (0..n).collect();
            TaskOutcome::Succeeded(serde_json::to_vec(&items).unwrap_or_default())
        })
        .handler("join", |task: Task| async move {
            let outputs: Vec<String> = task
                .fan_out_outputs("double")
                .into_iter()
                .map(|output| String::from_utf8_lossy(output).into_owned())
                .collect();
            TaskOutcome::Succeeded(outputs.join(",").into_bytes())
        });
    let stop = stop.clone();
    tokio::spawn(async move { agent.run(stop).await });
}

/// `mappers` mappers and a reducer; returns the mappers' concurrency record.
fn start_map_reduce_fleet(
    cluster: &LocalCluster,
    mappers: usize,
    stop: &CancellationToken,
) -> Arc<Concurrency> {
    let concurrency = Arc::new(Concurrency::default());
    for i in 0..mappers {
        start_mapper(cluster, &format!("mapper-{i}"), concurrency.clone(), stop);
    }
    start_reducer(cluster, stop);
    concurrency
}

/// list (0..items) ─► double (fan-out, `parallelism`) ─► join (the goal).
fn map_reduce_job(items: usize, parallelism: u32) -> String {
    format!(
        r#"
        [goal]
        goal_task = "join"
        [[tasks]]
        id = "list"
        kind = "list"
        capabilities = ["reduce"]
        payload = "{items}"
        [[tasks]]
        id = "double"
        kind = "double"
        capabilities = ["map"]
        depends_on = ["list"]
        fan_out = {{ from = "list", parallelism = {parallelism} }}
        [[tasks]]
        id = "join"
        kind = "join"
        capabilities = ["reduce"]
        depends_on = ["double"]
    "#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ten_thousand_item_fan_out_completes_with_outputs_in_item_order() -> anyhow::Result<()> {
    let _serial = serial().await;
    let (cluster, client) = cluster_up(options()).await?;
    let stop = CancellationToken::new();
    let concurrency = start_map_reduce_fleet(&cluster, 4, &stop);
    wait_for_agents(&client, 5).await?;
    let job = map_reduce_job(10_000, 50);
    let started = std::time::Instant::now();
    let job_id = submit(&client, &job).await?;
    let done = wait_for_job(&client, &job_id).await?;
    let elapsed = started.elapsed();
    assert_eq!(
        done.state,
        pb::JobState::Succeeded as i32,
        "{}",
        done.state_reason
    );
    let expected: Vec<String> = (0..10_000u64).map(|i| (i * 2).to_string()).collect();
    assert!(
        String::from_utf8_lossy(&done.output) == expected.join(","),
        "the reduce step got the outputs out of item order"
    );
    let most = concurrency.most.load(Ordering::SeqCst);
    assert!(most <= 50, "{most} instances ran at once, the limit is 50");
    assert!(most >= 8, "only {most} instances ran at once");
    let tasks = client.job_tasks(&job_id).await?;
    assert_eq!(tasks.len(), 3 + 10_000);
    assert_eq!(tasks[3].task_id, "double[1]");
    assert_eq!(tasks[3].fan_out_index, Some(1));
    assert_eq!(tasks[3].parent_task_id, "double");
    println!("10,000-item fan-out: {elapsed:?}, at most {most} instances at once");
    stop.cancel();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fan_out_survives_a_leader_kill_with_every_instance_counted_once() -> anyhow::Result<()> {
    let _serial = serial().await;
    let (mut cluster, client) = cluster_up(options()).await?;
    let leader = cluster.wait_for_leader(LEADER_TIMEOUT).await?;
    let stop = CancellationToken::new();
    let concurrency = start_map_reduce_fleet(&cluster, 2, &stop);
    wait_for_agents(&client, 3).await?;
    let job = map_reduce_job(2_000, 16);
    let job_id = submit(&client, &job).await?;
    wait_until(
        JOB_TIMEOUT,
        "a quarter of the instances to succeed",
        || async {
            let job = client.get_job(&job_id).await.ok()?;
            let succeeded = job
                .task_counts
                .iter()
                .find(|c| c.state == pb::TaskState::Succeeded as i32)?;
            (succeeded.count >= 500).then_some(())
        },
    )
    .await?;
    cluster.kill(leader)?;
    let done = wait_for_success(&client, &job_id).await?;
    let expected: Vec<String> = (0..2_000u64).map(|i| (i * 2).to_string()).collect();
    assert!(String::from_utf8_lossy(&done.output) == expected.join(","));
    let history = client.job_history(&job_id).await?;
    let mut successes: BTreeMap<String, usize> = BTreeMap::new();
    for event in &history {
        if let Some(pb::job_event::Kind::TaskSucceeded(e)) = &event.kind {
            *successes.entry(e.task_id.clone()).or_default() += 1;
        }
    }
    assert_eq!(
        successes.len(),
        2_003,
        "list, the fan-out, 2,000 instances, join"
    );
    assert!(
        successes.values().all(|n| *n == 1),
        "an instance counted twice"
    );
    let most = concurrency.most.load(Ordering::SeqCst);
    assert!(most <= 16, "{most} instances ran at once, the limit is 16");
    stop.cancel();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reduce_over_more_output_than_one_message_holds_gets_all_of_it() -> anyhow::Result<()> {
    const INSTANCES: usize = 40;
    const OUTPUT_BYTES: usize = 200_000;
    let _serial = serial().await;
    let (cluster, client) = cluster_up(options()).await?;
    let stop = CancellationToken::new();
    let agent = AgentBuilder::new("bulk", cluster.addrs())
        .capability("bulk")
        .max_concurrent(8)
        .handler("fill", |task: Task| async move {
            let index = task.item_index.unwrap_or(u32::MAX);
            let byte = b'a' + (index % 26) as u8;
            TaskOutcome::Succeeded(vec![byte; OUTPUT_BYTES])
        })
        .handler("check", |task: Task| async move {
            let outputs = task.fan_out_outputs("fill");
            let intact = outputs.iter().enumerate().all(|(i, output)| {
                output.len() == OUTPUT_BYTES && output.iter().all(|b| *b == b'a' + (i % 26) as u8)
            });
            TaskOutcome::Succeeded(
                format!("{} outputs, intact: {intact}", outputs.len()).into_bytes(),
            )
        });
    let agent_stop = stop.clone();
    tokio::spawn(async move { agent.run(agent_stop).await });
    wait_for_agents(&client, 1).await?;
    let items: Vec<String> = (0..INSTANCES).map(|i| format!("\"{i}\"")).collect();
    let job = format!(
        "[goal]\ngoal_task = \"check\"\n[[tasks]]\nid = \"fill\"\nkind = \"fill\"\ncapabilities = [\"bulk\"]\n\
         fan_out = {{ items = [{}] }}\n[[tasks]]\nid = \"check\"\nkind = \"check\"\n\
         capabilities = [\"bulk\"]\ndepends_on = [\"fill\"]\n",
        items.join(", ")
    );
    let job_id = submit(&client, &job).await?;
    let done = wait_for_success(&client, &job_id).await?;
    assert_eq!(
        String::from_utf8_lossy(&done.output),
        format!("{INSTANCES} outputs, intact: true")
    );
    stop.cancel();
    Ok(())
}

/// A task kind an agent ran, with the dependency outputs it was given.
type Run = (String, BTreeMap<String, String>);

/// Which tasks an agent ran and which it saw cancelled.
#[derive(Default, Clone)]
struct Log {
    ran: Arc<Mutex<Vec<Run>>>,
    cancelled: Arc<Mutex<Vec<String>>>,
}

impl Log {
    fn ran(&self) -> Vec<String> {
        let ran = self.ran.lock().unwrap();
        ran.iter().map(|(kind, _)| kind.clone()).collect()
    }

    fn inputs_of(&self, kind: &str) -> Option<BTreeMap<String, String>> {
        let ran = self.ran.lock().unwrap();
        ran.iter().find(|(k, _)| k == kind).map(|(_, i)| i.clone())
    }
}

/// An agent for every kind: `forever` runs until cancelled, `fail` fails for good, anything
/// else succeeds with `<kind>-output`.
fn start_worker(cluster: &LocalCluster, stop: &CancellationToken) -> Log {
    let log = Log::default();
    let seen = log.clone();
    let agent = AgentBuilder::new("worker", cluster.addrs())
        .capability("worker")
        .max_concurrent(8)
        .fallback_handler(move |task: Task| {
            let seen = seen.clone();
            async move {
                let inputs = task
                    .dependency_outputs
                    .iter()
                    .map(|(id, out)| (id.clone(), String::from_utf8_lossy(out).into_owned()))
                    .collect();
                seen.ran.lock().unwrap().push((task.kind.clone(), inputs));
                match task.kind.as_str() {
                    "forever" => {
                        let id = task.task.task_id.clone();
                        let _guard = OnDrop(Some(move || seen.cancelled.lock().unwrap().push(id)));
                        std::future::pending::<()>().await;
                        TaskOutcome::fatal("unreachable")
                    }
                    "fail" => TaskOutcome::fatal("the warehouse is closed"),
                    kind => TaskOutcome::Succeeded(format!("{kind}-output").into_bytes()),
                }
            }
        });
    let stop = stop.clone();
    tokio::spawn(async move { agent.run(stop).await });
    log
}

/// A cluster (this test binary's turn at the machine) with one worker agent.
struct WorkerCluster {
    _serial: tokio::sync::MutexGuard<'static, ()>,
    _cluster: LocalCluster,
    client: Client,
    stop: CancellationToken,
    log: Log,
}

impl WorkerCluster {
    async fn start() -> anyhow::Result<Self> {
        let serial = serial().await;
        let (cluster, client) = cluster_up(options()).await?;
        let stop = CancellationToken::new();
        let log = start_worker(&cluster, &stop);
        wait_for_agents(&client, 1).await?;
        Ok(Self {
            _serial: serial,
            _cluster: cluster,
            client,
            stop,
            log,
        })
    }
}

async fn task_state(client: &Client, job_id: &str, task_id: &str) -> Option<i32> {
    let tasks = client.job_tasks(job_id).await.ok()?;
    tasks
        .into_iter()
        .find(|t| t.task_id == task_id)
        .map(|t| t.state)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_job_returns_its_output_and_cancelling_the_parent_cancels_the_child(
) -> anyhow::Result<()> {
    let WorkerCluster {
        _serial,
        _cluster,
        client,
        stop,
        log,
    } = WorkerCluster::start().await?;

    // A child job that succeeds: its goal task's output is the parent task's output.
    let job = r#"
        [goal]
        goal_task = "sub"
        [[tasks]]
        id = "prep"
        kind = "prep"
        capabilities = ["worker"]
        [[tasks]]
        id = "sub"
        depends_on = ["prep"]
        [tasks.child_job]
        name = "child"
        goal = { goal_task = "summarize" }
        [[tasks.child_job.tasks]]
        id = "summarize"
        kind = "summarize"
        capabilities = ["worker"]
    "#;
    let job_id = submit(&client, job).await?;
    let done = wait_for_success(&client, &job_id).await?;
    assert_eq!(done.output, b"summarize-output");
    let child = client.get_job(&format!("{job_id}/sub")).await?;
    assert_eq!(
        (
            child.state,
            child.parent_job_id.as_str(),
            child.parent_task_id.as_str()
        ),
        (pb::JobState::Succeeded as i32, job_id.as_str(), "sub")
    );

    // Cancelling a parent whose child job has a task running cancels the child and the task.
    let job = r#"
        [[tasks]]
        id = "sub"
        [tasks.child_job]
        name = "long child"
        [[tasks.child_job.tasks]]
        id = "crunch"
        kind = "forever"
        capabilities = ["worker"]
    "#;
    let job_id = submit(&client, job).await?;
    let child_id = format!("{job_id}/sub");
    wait_until(JOB_TIMEOUT, "the child's task to run", || async {
        let running = pb::TaskState::Running as i32;
        (task_state(&client, &child_id, "crunch").await? == running).then_some(())
    })
    .await?;
    client.cancel_job(&job_id, "no longer needed").await?;
    let parent = wait_for_job(&client, &job_id).await?;
    assert_eq!(parent.state, pb::JobState::Cancelled as i32);
    let child = wait_for_job(&client, &child_id).await?;
    assert_eq!(child.state, pb::JobState::Cancelled as i32);
    assert_eq!(child.state_reason, "its parent ended: job cancelled");
    wait_until(
        Duration::from_secs(10),
        "the agent to see the cancel",
        || async {
            let cancelled = log.cancelled.lock().unwrap().clone();
            cancelled.contains(&"crunch".to_owned()).then_some(())
        },
    )
    .await?;
    stop.cancel();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_failing_after_side_effects_runs_its_compensations_in_reverse_order(
) -> anyhow::Result<()> {
    let WorkerCluster {
        _serial,
        _cluster,
        client,
        stop,
        log,
    } = WorkerCluster::start().await?;
    let job = r#"
        [[tasks]]
        id = "book"
        kind = "book"
        capabilities = ["worker"]
        compensation = "unbook"
        [[tasks]]
        id = "pay"
        kind = "pay"
        capabilities = ["worker"]
        depends_on = ["book"]
        compensation = "refund"
        [[tasks]]
        id = "ship"
        kind = "fail"
        capabilities = ["worker"]
        depends_on = ["pay"]
        [[tasks]]
        id = "unbook"
        kind = "unbook"
        capabilities = ["worker"]
        [[tasks]]
        id = "refund"
        kind = "refund"
        capabilities = ["worker"]
    "#;
    let job_id = submit(&client, job).await?;
    let done = wait_for_job(&client, &job_id).await?;
    assert_eq!(done.state, pb::JobState::Failed as i32);
    assert_eq!(done.state_reason, "task 'ship' ended Failed");
    assert_eq!(log.ran(), ["book", "pay", "fail", "refund", "unbook"]);
    assert_eq!(
        log.inputs_of("refund"),
        Some(BTreeMap::from([("pay".into(), "pay-output".into())]))
    );
    let history = client.job_history(&job_id).await?;
    let started = history.iter().find_map(|event| match &event.kind {
        Some(pb::job_event::Kind::CompensationStarted(started)) => Some(started.task_ids.clone()),
        _ => None,
    });
    assert_eq!(started, Some(vec!["refund".into(), "unbook".into()]));

    // Cancelled while its second step runs: the first step is undone, then the job ends
    // cancelled.
    let job = r#"
        [[tasks]]
        id = "reserve"
        kind = "reserve"
        capabilities = ["worker"]
        compensation = "release"
        [[tasks]]
        id = "wait"
        kind = "forever"
        capabilities = ["worker"]
        depends_on = ["reserve"]
        [[tasks]]
        id = "release"
        kind = "release"
        capabilities = ["worker"]
    "#;
    let job_id = submit(&client, job).await?;
    wait_until(JOB_TIMEOUT, "the second step to run", || async {
        let running = pb::TaskState::Running as i32;
        (task_state(&client, &job_id, "wait").await? == running).then_some(())
    })
    .await?;
    let cancelled = client.cancel_job(&job_id, "changed plans").await?;
    assert_eq!(cancelled.state, pb::JobState::Compensating as i32);
    let done = wait_for_job(&client, &job_id).await?;
    assert_eq!(
        (done.state, done.state_reason.as_str()),
        (pb::JobState::Cancelled as i32, "changed plans")
    );
    assert_eq!(
        log.inputs_of("release"),
        Some(BTreeMap::from([(
            "reserve".into(),
            "reserve-output".into()
        )]))
    );
    stop.cancel();
    Ok(())
}
