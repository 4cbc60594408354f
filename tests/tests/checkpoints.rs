//! Multi-process tests of checkpoints on a real 3-node cluster of `synod` processes: a task
//! whose agent leaves mid-task resumes on another agent from its checkpoint; versions are
//! read back from a follower, by the CLI too; oversized and damaged saves are refused.

use std::sync::{Arc, Mutex};

use synod_coordinator::local_cluster::wait_until;
use synod_sdk::agent::{AgentBuilder, Task, TaskOutcome};
use synod_sdk::proto as pb;
use synod_sdk::Code;
use synod_tests::jobs::{
    cluster_up, options, submit, wait_for_agents, wait_for_success, LEADER_TIMEOUT,
};
use synod_tests::serial;
use tokio_util::sync::CancellationToken;

/// Counts to 10, saving its progress as checkpoint "progress" at 5; `hang_at_five` agents stop
/// there (their agent is then taken away), others finish, starting from the checkpoint.
fn counter(
    name: &str,
    addrs: Vec<String>,
    hang_at_five: bool,
    resumed: Arc<Mutex<Vec<String>>>,
) -> AgentBuilder {
    AgentBuilder::new(name, addrs)
        .capability("count")
        .handler("count", move |task: Task| {
            let resumed = resumed.clone();
            async move {
                let start: u32 = match &task.checkpoint {
                    Some(saved) => {
                        let step = String::from_utf8_lossy(&saved.data).into_owned();
                        resumed.lock().unwrap().push(step.clone());
                        step.parse().unwrap_or(0)
                    }
                    None => 0,
                };
                for step in start..10 {
                    if step == 5 && start == 0 {
                        if let Err(error) = task.save_checkpoint("progress", b"5").await {
                            return TaskOutcome::retryable(error);
                        }
                        if hang_at_five {
                            std::future::pending::<()>().await;
                        }
                    }
                }
                TaskOutcome::Succeeded(format!("counted from {start}").into_bytes())
            }
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reassigned_task_resumes_from_its_checkpoint() -> anyhow::Result<()> {
    let _serial = serial().await;
    let (cluster, client) = cluster_up(options()).await?;
    let resumed: Arc<Mutex<Vec<String>>> = Arc::default();
    let first_stop = CancellationToken::new();
    let first = counter("first", cluster.addrs(), true, resumed.clone());
    let stop = first_stop.clone();
    tokio::spawn(async move { first.run(stop).await });
    wait_for_agents(&client, 1).await?;
    let job_id = submit(
        &client,
        "[[tasks]]\nid = \"count\"\nkind = \"count\"\ncapabilities = [\"count\"]\n",
    )
    .await?;
    let scope = pb::CheckpointScope {
        owner: Some(pb::checkpoint_scope::Owner::Task(pb::TaskRef {
            job_id: job_id.clone(),
            task_id: "count".into(),
            attempt: 0,
        })),
    };
    wait_until(LEADER_TIMEOUT, "the checkpoint to be saved", || async {
        client
            .get_checkpoint(scope.clone(), "progress", 0)
            .await
            .ok()
    })
    .await?;
    // The first agent goes away mid-task; another takes the task over.
    first_stop.cancel();
    let second_stop = CancellationToken::new();
    let second = counter("second", cluster.addrs(), false, resumed.clone());
    let stop = second_stop.clone();
    tokio::spawn(async move { second.run(stop).await });
    wait_for_success(&client, &job_id).await?;
    let task = client.job_tasks(&job_id).await?.remove(0);
    assert_eq!(task.output, b"counted from 5");
    assert_eq!(task.attempt, 2, "reassigned once");
    assert_eq!(*resumed.lock().unwrap(), ["5"]);
    second_stop.cancel();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_read_back_from_any_node_and_bad_saves_are_refused() -> anyhow::Result<()> {
    let _serial = serial().await;
    let (cluster, client) = cluster_up(options()).await?;
    let stop = CancellationToken::new();
    let agent = AgentBuilder::new("keeper", cluster.addrs());
    let agent_stop = stop.clone();
    tokio::spawn(async move { agent.run(agent_stop).await });
    wait_for_agents(&client, 1).await?;
    let agent_id = client.list_agents().await?.remove(0).agent_id;
    let scope = pb::CheckpointScope {
        owner: Some(pb::checkpoint_scope::Owner::AgentId(agent_id.clone())),
    };
    // Two versions, the second larger than one chunk.
    let big: Vec<u8> = (0..3 * 1024 * 1024 + 17).map(|i| (i % 251) as u8).collect();
    let v1 = client
        .save_checkpoint(scope.clone(), "memory", b"small", &[])
        .await?;
    let v2 = client
        .save_checkpoint(
            scope.clone(),
            "memory",
            &big,
            &[("step".into(), "2".into())],
        )
        .await?;
    assert_eq!((v1.version, v2.version), (1, 2));
    let leader = cluster.wait_for_leader(LEADER_TIMEOUT).await?;
    let follower_addr = cluster
        .addrs()
        .into_iter()
        .enumerate()
        .find(|(i, _)| *i as u64 + 1 != leader)
        .map(|(_, addr)| addr)
        .unwrap();
    let follower = synod_sdk::Client::new(vec![follower_addr.clone()])?;
    let latest = follower.get_checkpoint(scope.clone(), "memory", 0).await?;
    assert_eq!((latest.info.version, latest.data.len()), (2, big.len()));
    assert!(latest.data == big, "the payload came back intact");
    assert_eq!(
        follower
            .get_checkpoint(scope.clone(), "memory", 1)
            .await?
            .data,
        b"small"
    );
    let listed = follower
        .list_checkpoints(Some(scope.clone()), true, 10)
        .await?;
    let versions: Vec<u64> = listed.iter().map(|c| c.version).collect();
    assert_eq!(versions, [2, 1], "newest first");

    // The operator's view, through the follower.
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("memory.bin");
    let got = std::process::Command::new(synod_tests::synod_binary()?)
        .args([
            "checkpoint",
            "get",
            "memory",
            "--agent",
            &agent_id,
            "--version",
            "1",
            "--out",
        ])
        .arg(&out)
        .args(["--addr", &follower_addr])
        .output()?;
    assert!(
        got.status.success(),
        "{}",
        String::from_utf8_lossy(&got.stderr)
    );
    assert_eq!(std::fs::read(&out)?, b"small");
    let list = std::process::Command::new(synod_tests::synod_binary()?)
        .args([
            "checkpoint",
            "list",
            "--agent",
            &agent_id,
            "--json",
            "--addr",
            &follower_addr,
        ])
        .output()?;
    let list: serde_json::Value = serde_json::from_slice(&list.stdout)?;
    assert_eq!(list[0]["version"], 2);
    assert_eq!(list[0]["size_bytes"], big.len() as u64);

    // Several large saves at once (more bytes together than half a peer message) replicate
    // in smaller appends, without stalling the cluster's log.
    let full = vec![3u8; 8 * 1024 * 1024];
    let saves: Vec<_> = (0..5)
        .map(|i| {
            let (client, scope, full) = (client.clone(), scope.clone(), full.clone());
            tokio::spawn(async move {
                client
                    .save_checkpoint(scope, &format!("full-{i}"), &full, &[])
                    .await
            })
        })
        .collect();
    for save in saves {
        assert_eq!(
            save.await??.blob.map(|b| b.size_bytes),
            Some(full.len() as u64)
        );
    }
    client
        .put("after-big-saves", b"still writable".to_vec())
        .await?;

    // Over the configured limit (16 MiB): refused before anything is committed.
    let huge = vec![7u8; 16 * 1024 * 1024 + 1];
    let error = client
        .save_checkpoint(scope.clone(), "huge", &huge, &[])
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(Code::ResourceExhausted), "{error}");
    // A scope whose owner does not exist.
    let nobody = pb::CheckpointScope {
        owner: Some(pb::checkpoint_scope::Owner::JobId("no-such-job".into())),
    };
    let error = client
        .save_checkpoint(nobody, "x", b"d", &[])
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(Code::NotFound), "{error}");
    let missing = client
        .get_checkpoint(scope, "never-saved", 0)
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Some(Code::NotFound), "{missing}");
    stop.cancel();
    Ok(())
}
