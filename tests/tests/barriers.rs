//! Multi-process tests of barriers on a real 3-node cluster of `synod` processes: a
//! half-arrived barrier survives kill -9 of the leader and releases exactly once; a lost party
//! (a `synod-agent` process killed with SIGKILL) and a timeout break it for every waiter; a
//! double barrier lets parties work between entering and leaving; bad input is refused.

use std::time::Duration;

use synod_coordinator::local_cluster::wait_until;
use synod_sdk::proto as pb;
use synod_sdk::{Client, Code};
use synod_tests::jobs::{
    cluster_up, options, start_agent_process, wait_for_agents, LEADER_TIMEOUT,
};
use synod_tests::serial;

fn counted(name: &str, parties: u32, cyclic: bool, timeout_ms: u64) -> pb::CreateBarrierRequest {
    pb::CreateBarrierRequest {
        name: name.into(),
        kind: pb::BarrierKind::Single as i32,
        parties: Some(pb::create_barrier_request::Parties::PartyCount(parties)),
        timeout_ms,
        cyclic,
    }
}

/// Arrives as `party` from a task of its own.
fn arrive(
    client: &Client,
    name: &str,
    party: &str,
) -> tokio::task::JoinHandle<pb::BarrierWaitResult> {
    let (client, name, party) = (client.clone(), name.to_owned(), party.to_owned());
    tokio::spawn(async move { client.arrive_barrier(&name, &party).await.expect("arrival") })
}

async fn wait_for_arrivals(client: &Client, name: &str, count: usize) -> anyhow::Result<()> {
    wait_until(LEADER_TIMEOUT, "parties to arrive", || async {
        let barrier = client.get_barrier(name).await.ok()?;
        (barrier.arrived_party_ids.len() >= count).then_some(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_arrived_barrier_survives_a_leader_kill_and_releases_exactly_once(
) -> anyhow::Result<()> {
    let _serial = serial().await;
    let (mut cluster, client) = cluster_up(options()).await?;
    client.create_barrier(counted("phase", 4, true, 0)).await?;
    let first: Vec<_> = ["p0", "p1"]
        .iter()
        .map(|p| arrive(&client, "phase", p))
        .collect();
    wait_for_arrivals(&client, "phase", 2).await?;
    let leader = cluster.wait_for_leader(LEADER_TIMEOUT).await?;
    cluster.kill(leader)?;
    let rest: Vec<_> = ["p2", "p3"]
        .iter()
        .map(|p| arrive(&client, "phase", p))
        .collect();
    let mut indexes = Vec::new();
    for waiter in first.into_iter().chain(rest) {
        let result = tokio::time::timeout(Duration::from_secs(30), waiter).await??;
        assert_eq!(
            (result.outcome, result.generation),
            (pb::BarrierOutcome::Released as i32, 1),
            "{result:?}"
        );
        indexes.push(result.arrival_index);
    }
    indexes.sort_unstable();
    assert_eq!(indexes, [0, 1, 2, 3], "no arrival lost or counted twice");
    let barrier = client.get_barrier("phase").await?;
    assert_eq!(
        barrier.generation, 2,
        "released once, into the next generation"
    );
    assert!(barrier.arrived_party_ids.is_empty());
    // The next generation works the same way.
    let again: Vec<_> = ["p0", "p1", "p2", "p3"]
        .iter()
        .map(|p| arrive(&client, "phase", p))
        .collect();
    for waiter in again {
        assert_eq!(waiter.await?.generation, 2);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_party_or_a_timeout_breaks_the_barrier_for_every_waiter() -> anyhow::Result<()> {
    let _serial = serial().await;
    let (cluster, client) = cluster_up(options()).await?;
    let (_dir, mut doomed) = start_agent_process(
        &cluster,
        "[[agents]]\nname = \"doomed\"\n[[agents.handlers]]\nkind = \"*\"\ndemo = \"echo\"\n\n\
         [[agents]]\nname = \"survivor\"\n[[agents.handlers]]\nkind = \"*\"\ndemo = \"echo\"\n",
    )?;
    wait_for_agents(&client, 2).await?;
    let ids: Vec<String> = client
        .list_agents()
        .await?
        .into_iter()
        .map(|a| a.agent_id)
        .collect();
    client
        .create_barrier(pb::CreateBarrierRequest {
            name: "listed".into(),
            kind: pb::BarrierKind::Single as i32,
            parties: Some(pb::create_barrier_request::Parties::AgentIds(
                pb::AgentIdList {
                    agent_ids: ids.clone(),
                },
            )),
            timeout_ms: 0,
            cyclic: false,
        })
        .await?;
    // One party waits at the barrier; the agents' process is killed (-9) before the other comes.
    let waiter = arrive(&client, "listed", &ids[0]);
    wait_for_arrivals(&client, "listed", 1).await?;
    doomed.kill()?;
    doomed.wait()?;
    let result = tokio::time::timeout(Duration::from_secs(30), waiter).await??;
    assert_eq!(
        result.outcome,
        pb::BarrierOutcome::Broken as i32,
        "{result:?}"
    );
    assert!(
        result.reason.starts_with("party ") && result.reason.ends_with(" lost"),
        "{}",
        result.reason
    );

    // Nobody else comes: the timeout breaks the generation.
    client
        .create_barrier(counted("timed", 2, false, 500))
        .await?;
    let started = std::time::Instant::now();
    let lonely = client.arrive_barrier("timed", "alone").await?;
    assert_eq!(
        (lonely.outcome, lonely.reason.as_str()),
        (pb::BarrierOutcome::Broken as i32, "timeout")
    );
    assert!(started.elapsed() >= Duration::from_millis(500));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_double_barrier_has_an_enter_and_a_leave_phase_and_bad_input_is_refused(
) -> anyhow::Result<()> {
    let _serial = serial().await;
    let (cluster, client) = cluster_up(options()).await?;
    client
        .create_barrier(pb::CreateBarrierRequest {
            kind: pb::BarrierKind::Double as i32,
            ..counted("double", 2, false, 0)
        })
        .await?;
    let entering: Vec<_> = ["a", "b"]
        .iter()
        .map(|party| {
            let (client, party) = (client.clone(), party.to_string());
            tokio::spawn(async move { client.enter_barrier("double", &party).await })
        })
        .collect();
    for entered in entering {
        assert_eq!(entered.await??.outcome, pb::BarrierOutcome::Released as i32);
    }
    assert_eq!(
        client.get_barrier("double").await?.state,
        pb::BarrierState::Entered as i32
    );
    let leave_a = {
        let client = client.clone();
        tokio::spawn(async move { client.leave_barrier("double", "a", 1).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!leave_a.is_finished(), "a left alone: waits for b");
    client.leave_barrier("double", "b", 1).await?;
    assert_eq!(leave_a.await??.outcome, pb::BarrierOutcome::Released as i32);
    assert_eq!(
        client.get_barrier("double").await?.state,
        pb::BarrierState::Released as i32
    );
    // The operator's view.
    let status = std::process::Command::new(synod_tests::synod_binary()?)
        .args(["barrier", "status", "double", "--json", "--addr"])
        .arg(cluster.addrs().join(","))
        .output()?;
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let status: serde_json::Value = serde_json::from_slice(&status.stdout)?;
    assert_eq!(
        (&status["state"], &status["kind"], &status["left"]),
        (
            &"released".into(),
            &"double".into(),
            &serde_json::json!(["a", "b"])
        )
    );

    let zero = client
        .create_barrier(counted("zero", 0, false, 0))
        .await
        .unwrap_err();
    assert_eq!(zero.code(), Some(Code::InvalidArgument), "{zero}");
    assert!(zero.to_string().contains("party_count"), "{zero}");
    let unknown = client.arrive_barrier("missing", "p").await.unwrap_err();
    assert_eq!(unknown.code(), Some(Code::NotFound), "{unknown}");
    let twice = client
        .create_barrier(counted("double", 2, false, 0))
        .await
        .unwrap_err();
    assert_eq!(twice.code(), Some(Code::AlreadyExists), "{twice}");
    assert!(client.delete_barrier("double").await?);
    assert!(!client.delete_barrier("double").await?);
    Ok(())
}
