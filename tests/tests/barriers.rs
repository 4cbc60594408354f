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
        "[[agents]]\nname = \"doomed\"\n[[agents.handlers]]\nkind = \"*\"\ndemo = \"echo\"\n",
    )?;
    let stop = tokio_util::sync::CancellationToken::new();
    let survivor = synod_sdk::agent::AgentBuilder::new("survivor", cluster.addrs());
    let survivor_handle = survivor.handle();
    let agent_stop = stop.clone();
    tokio::spawn(async move { survivor.run(agent_stop).await });
    wait_for_agents(&client, 2).await?;
    let survivor_id = survivor_handle.agent_id().await;
    let doomed_id = client
        .list_agents()
        .await?
        .into_iter()
        .map(|a| a.agent_id)
        .find(|id| *id != survivor_id)
        .expect("the doomed agent");
    let ids = vec![survivor_id.clone(), doomed_id];
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
    // A listed party arrives only as itself.
    let impostor = client.arrive_barrier("listed", &ids[0]).await.unwrap_err();
    assert_eq!(impostor.code(), Some(Code::PermissionDenied), "{impostor}");
    // One party waits at the barrier; the other's process is killed (-9) before it comes.
    let waiter = arrive(&survivor_handle.client()?, "listed", &ids[0]);
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
    stop.cancel();
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

/// Opens a raw session (as an agent written against the generated stubs would) on whichever
/// member leads; returns its sender and the coordinator's stream after Registered.
async fn raw_session(
    addrs: &[String],
    name: &str,
) -> anyhow::Result<(
    tokio::sync::mpsc::Sender<pb::AgentMessage>,
    tonic::Streaming<pb::CoordinatorMessage>,
)> {
    use pb::agent_service_client::AgentServiceClient;
    wait_until(LEADER_TIMEOUT, "a session on the leader", || async {
        for addr in addrs {
            let (sender, receiver) = tokio::sync::mpsc::channel(16);
            let register = pb::Register {
                name: name.into(),
                max_concurrent_tasks: 1,
                ..Default::default()
            };
            let first = pb::AgentMessage {
                request_id: 0,
                kind: Some(pb::agent_message::Kind::Register(register)),
            };
            sender.send(first).await.ok()?;
            let Ok(mut client) = AgentServiceClient::connect(format!("http://{addr}")).await else {
                continue;
            };
            let stream = tokio_stream::wrappers::ReceiverStream::new(receiver);
            let Ok(response) = client.session(stream).await else {
                continue;
            };
            let mut inbound = response.into_inner();
            if let Ok(Some(pb::CoordinatorMessage {
                kind: Some(pb::coordinator_message::Kind::Registered(_)),
                ..
            })) = inbound.message().await
            {
                return Some((sender, inbound));
            }
        }
        None
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_arriving_on_its_session_is_told_of_the_release_there() -> anyhow::Result<()> {
    let _serial = serial().await;
    let (cluster, client) = cluster_up(options()).await?;
    client.create_barrier(counted("meet", 2, false, 0)).await?;
    let (sender, mut inbound) = raw_session(&cluster.addrs(), "raw").await?;
    let arrive = pb::AgentMessage {
        request_id: 7,
        kind: Some(pb::agent_message::Kind::BarrierArrive(pb::BarrierArrive {
            name: "meet".into(),
            generation: 0,
        })),
    };
    sender.send(arrive).await?;
    wait_for_arrivals(&client, "meet", 1).await?;
    let other = client.arrive_barrier("meet", "other").await?;
    assert_eq!(other.outcome, pb::BarrierOutcome::Released as i32);
    let (mut released, mut acked) = (None, false);
    while released.is_none() || !acked {
        let message = tokio::time::timeout(Duration::from_secs(10), inbound.message())
            .await??
            .ok_or_else(|| anyhow::anyhow!("the session ended"))?;
        match message.kind {
            Some(pb::coordinator_message::Kind::BarrierReleased(end)) => released = Some(end),
            Some(pb::coordinator_message::Kind::RequestAck(ack)) => acked = ack.request_id == 7,
            Some(pb::coordinator_message::Kind::BarrierBroken(broken)) => {
                anyhow::bail!("broken: {}", broken.reason)
            }
            _ => {}
        }
    }
    let released = released.unwrap_or_default();
    assert_eq!((released.name.as_str(), released.generation), ("meet", 1));
    Ok(())
}
