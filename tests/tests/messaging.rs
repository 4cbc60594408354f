//! Multi-process tests of agent messaging on a real 3-node cluster: direct messages reach their
//! agent exactly once, in order, across kill -9 of the leader; agents message each other as
//! themselves; broadcasts reach every matching agent; a best-effort channel fans out live
//! while a slow subscriber only loses (and is told of) its own messages; bad input and false
//! identities are refused.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use synod_coordinator::local_cluster::wait_until;
use synod_sdk::agent::{AgentBuilder, AgentHandle};
use synod_sdk::proto as pb;
use synod_sdk::{AgentCredentials, Client, Code};
use synod_tests::jobs::{cluster_up, options, LEADER_TIMEOUT};
use synod_tests::serial;
use tokio_util::sync::CancellationToken;

/// What an agent's message handler saw: (offset, sender, payload as text).
type Seen = Arc<Mutex<Vec<(u64, String, String)>>>;

/// Starts an agent recording its messages; returns its handle and what it saw.
fn recording_agent(
    name: &str,
    capability: &str,
    addrs: Vec<String>,
    stop: &CancellationToken,
) -> (AgentHandle, Seen) {
    let seen: Seen = Arc::default();
    let record = seen.clone();
    let agent = AgentBuilder::new(name, addrs)
        .capability(capability)
        .message_handler(move |message: pb::MeshMessage| {
            let record = record.clone();
            async move {
                let text = String::from_utf8_lossy(&message.payload).into_owned();
                record
                    .lock()
                    .unwrap()
                    .push((message.offset, message.sender, text));
            }
        });
    let handle = agent.handle();
    let stop = stop.clone();
    tokio::spawn(async move { agent.run(stop).await });
    (handle, seen)
}

async fn wait_for_count(seen: &Seen, count: usize) -> anyhow::Result<()> {
    wait_until(Duration::from_secs(30), "messages to arrive", || async {
        (seen.lock().unwrap().len() >= count).then_some(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_messages_arrive_once_in_order_across_a_leader_kill() -> anyhow::Result<()> {
    let _serial = serial().await;
    let (mut cluster, client) = cluster_up(options()).await?;
    let stop = CancellationToken::new();
    let (inbox, seen) = recording_agent("inbox", "mail", cluster.addrs(), &stop);
    let (peer, peer_seen) = recording_agent("peer", "mail", cluster.addrs(), &stop);
    let (inbox_id, peer_id) = (inbox.agent_id().await, peer.agent_id().await);

    for i in 0..20 {
        let offset = client
            .send_direct(&inbox_id, format!("m{i}").as_bytes())
            .await?;
        assert_eq!(offset, i + 1);
    }
    wait_for_count(&seen, 10).await?;
    let leader = cluster.wait_for_leader(LEADER_TIMEOUT).await?;
    cluster.kill(leader)?;
    for i in 20..40 {
        client
            .send_direct(&inbox_id, format!("m{i}").as_bytes())
            .await?;
    }
    wait_for_count(&seen, 40).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = seen.lock().unwrap().clone();
    let offsets: Vec<u64> = got.iter().map(|(offset, _, _)| *offset).collect();
    assert_eq!(
        offsets,
        (1..=40).collect::<Vec<u64>>(),
        "once each, in order"
    );
    let texts: Vec<&str> = got.iter().map(|(_, _, text)| text.as_str()).collect();
    let expected: Vec<String> = (0..40).map(|i| format!("m{i}")).collect();
    assert_eq!(texts, expected);
    assert!(got.iter().all(|(_, sender, _)| sender == "client"));

    // An agent messages another as itself.
    let as_peer = peer.client()?;
    as_peer.send_direct(&inbox_id, b"hello from peer").await?;
    wait_for_count(&seen, 41).await?;
    assert_eq!(
        seen.lock().unwrap()[40].1,
        peer_id,
        "the sender is the agent"
    );
    assert!(peer_seen.lock().unwrap().is_empty());
    stop.cancel();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadcast_reaches_every_matching_agent_and_no_other() -> anyhow::Result<()> {
    let _serial = serial().await;
    let (cluster, client) = cluster_up(options()).await?;
    let stop = CancellationToken::new();
    let mut trainers = Vec::new();
    for i in 0..3 {
        trainers.push(recording_agent(
            &format!("trainer-{i}"),
            "gpu",
            cluster.addrs(),
            &stop,
        ));
    }
    let (other, other_seen) = recording_agent("web", "http", cluster.addrs(), &stop);
    for (handle, _) in &trainers {
        handle.agent_id().await;
    }
    other.agent_id().await;
    let gpu = pb::AgentSelector {
        capabilities: vec!["gpu".into()],
        labels: Default::default(),
    };
    let sent = client.broadcast(gpu.clone(), b"round 1").await?;
    assert_eq!((sent.recipient_count, sent.full_inbox_count), (3, 0));
    client.broadcast(gpu, b"round 2").await?;
    for (_, seen) in &trainers {
        wait_for_count(seen, 2).await?;
        let texts: Vec<String> = seen.lock().unwrap().iter().map(|m| m.2.clone()).collect();
        assert_eq!(texts, ["round 1", "round 2"]);
    }
    let everyone = client
        .broadcast(pb::AgentSelector::default(), b"all")
        .await?;
    assert_eq!(everyone.recipient_count, 4);
    wait_for_count(&other_seen, 1).await?;
    assert_eq!(
        other_seen.lock().unwrap()[0].2,
        "all",
        "only the broadcast to all"
    );
    stop.cancel();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_best_effort_channel_never_waits_for_a_slow_subscriber() -> anyhow::Result<()> {
    let _serial = serial().await;
    let (cluster, client) = cluster_up(options()).await?;
    let channel = client
        .create_channel("ticks", pb::Delivery::BestEffort, 0)
        .await?;
    assert_eq!(channel.delivery, pb::Delivery::BestEffort as i32);
    let follower_addr = cluster.addrs()[0].clone();
    let mut fast = client.subscribe("ticks", None);
    // The slow one subscribes through a node that may be a follower, and does not read yet.
    let mut slow = Client::new([follower_addr])?.subscribe("ticks", None);
    tokio::time::sleep(Duration::from_millis(500)).await;

    let total = 3_000u64;
    let payload = vec![7u8; 4096];
    let publisher = {
        let client = client.clone();
        tokio::spawn(async move {
            for expected in 1..=total {
                let offset = client.publish("ticks", &payload).await?;
                anyhow::ensure!(offset == expected, "offset {offset}, expected {expected}");
            }
            Ok::<_, anyhow::Error>(())
        })
    };
    for expected in 1..=total {
        let response = tokio::time::timeout(Duration::from_secs(20), fast.next())
            .await?
            .ok_or_else(|| anyhow::anyhow!("the fast subscription ended"))??;
        let message = response.message.unwrap_or_default();
        assert_eq!((message.offset, response.dropped), (expected, 0));
    }
    tokio::time::timeout(Duration::from_secs(30), publisher).await???;

    // The slow subscriber missed what overflowed its buffers, was told so, and ends with the
    // newest message.
    let (mut received, mut dropped, mut last) = (0u64, 0u64, 0u64);
    while last < total {
        let response = tokio::time::timeout(Duration::from_secs(20), slow.next())
            .await?
            .ok_or_else(|| anyhow::anyhow!("the slow subscription ended"))??;
        let offset = response.message.unwrap_or_default().offset;
        assert!(offset > last, "in order: {offset} after {last}");
        assert_eq!(offset - last - 1, response.dropped, "gaps are reported");
        (received, dropped, last) = (received + 1, dropped + response.dropped, offset);
    }
    assert!(dropped > 0, "a subscriber that did not read lost messages");
    assert_eq!(received + dropped, total);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_messages_and_false_identities_are_refused() -> anyhow::Result<()> {
    let _serial = serial().await;
    let (cluster, client) = cluster_up(options()).await?;
    let stop = CancellationToken::new();
    let (inbox, _) = recording_agent("inbox", "mail", cluster.addrs(), &stop);
    let inbox_id = inbox.agent_id().await;
    let code = |result: Result<u64, synod_sdk::ClientError>| {
        let error = result.unwrap_err();
        (error.code(), error.to_string())
    };

    let (unknown, message) = code(client.send_direct("no-such-agent", b"x").await);
    assert_eq!(unknown, Some(Code::NotFound), "{message}");
    let (empty, message) = code(client.send_direct("", b"x").await);
    assert_eq!(empty, Some(Code::InvalidArgument), "{message}");
    assert!(message.contains("to_agent_id"), "{message}");
    let big = vec![0u8; 1024 * 1024 + 1];
    let (too_big, message) = code(client.send_direct(&inbox_id, &big).await);
    assert_eq!(too_big, Some(Code::InvalidArgument), "{message}");
    assert!(message.contains("payload"), "{message}");

    // A stale or forged session token is no identity.
    let forged = tokio::sync::watch::channel(Some(AgentCredentials {
        agent_id: inbox_id.clone(),
        session_token: "forged".into(),
    }))
    .1;
    let (forged, message) = code(client.acting_as(forged).send_direct(&inbox_id, b"x").await);
    assert_eq!(forged, Some(Code::Unauthenticated), "{message}");
    assert!(message.contains("synod-session-token"), "{message}");
    stop.cancel();
    Ok(())
}
