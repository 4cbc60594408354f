//! Multi-process tests of durable channels on a real 3-node cluster: a subscriber that goes
//! away and comes back receives every message exactly once, in order, from its offset — also
//! across kill -9 of the leader, and as a `synod-agent` process killed with SIGKILL and started
//! again from its journal; retention and bad input are reported.

use std::time::Duration;

use synod_coordinator::local_cluster::wait_until;
use synod_sdk::proto as pb;
use synod_sdk::{Client, Code};
use synod_tests::jobs::{cluster_up, options, start_agent_process, LEADER_TIMEOUT};
use synod_tests::serial;

/// Receives `count` messages; returns their payloads as text and the last offset.
async fn receive(
    subscription: &mut synod_sdk::Subscription,
    count: usize,
) -> anyhow::Result<(Vec<String>, u64)> {
    let mut texts = Vec::new();
    let mut last = 0;
    while texts.len() < count {
        let response = tokio::time::timeout(Duration::from_secs(20), subscription.next())
            .await?
            .ok_or_else(|| anyhow::anyhow!("the subscription ended"))??;
        let message = response.message.unwrap_or_default();
        assert_eq!(response.dropped, 0, "nothing is dropped within retention");
        last = message.offset;
        texts.push(String::from_utf8(message.payload)?);
    }
    Ok((texts, last))
}

async fn publish_range(
    client: &Client,
    range: std::ops::RangeInclusive<u32>,
) -> anyhow::Result<()> {
    for i in range {
        client.publish("events", format!("m{i}").as_bytes()).await?;
    }
    Ok(())
}

fn names(range: std::ops::RangeInclusive<u32>) -> Vec<String> {
    range.map(|i| format!("m{i}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_comes_back_gets_every_message_once_in_order_from_its_offset(
) -> anyhow::Result<()> {
    let _serial = serial().await;
    let (mut cluster, client) = cluster_up(options()).await?;
    let channel = client
        .create_channel("events", pb::Delivery::Durable, 1_000)
        .await?;
    assert_eq!(channel.next_offset, 1);
    // Creating it again is a retry.
    client
        .create_channel("events", pb::Delivery::Durable, 1_000)
        .await?;

    let mut first = client.subscribe("events", Some(1));
    publish_range(&client, 1..=20).await?;
    let (seen, last) = receive(&mut first, 20).await?;
    assert_eq!(seen, names(1..=20));
    assert_eq!(last, 20);
    // The subscriber goes away; messages keep coming, and the leader dies meanwhile.
    drop(first);
    publish_range(&client, 21..=30).await?;
    let leader = cluster.wait_for_leader(LEADER_TIMEOUT).await?;
    cluster.kill(leader)?;
    publish_range(&client, 31..=40).await?;
    let mut again = client.subscribe("events", Some(last + 1));
    let (seen, _) = receive(&mut again, 20).await?;
    assert_eq!(
        seen,
        names(21..=40),
        "every message once, in order, from its offset"
    );
    publish_range(&client, 41..=45).await?;
    let (seen, last) = receive(&mut again, 5).await?;
    assert_eq!(seen, names(41..=45));
    assert_eq!(last, 45);

    // An unknown channel is named; a name taken with other settings is refused.
    let missing = client.publish("nope", b"x").await.unwrap_err();
    assert_eq!(missing.code(), Some(Code::NotFound), "{missing}");
    let clash = client
        .create_channel("events", pb::Delivery::Durable, 5)
        .await
        .unwrap_err();
    assert_eq!(clash.code(), Some(Code::AlreadyExists), "{clash}");
    Ok(())
}

/// The journal's lines once it holds at least `count`.
async fn journal_lines(path: &std::path::Path, count: usize) -> anyhow::Result<Vec<String>> {
    let waited = format!("{count} journal lines");
    wait_until(Duration::from_secs(20), &waited, || async {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        (lines.len() >= count).then_some(lines)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_process_killed_and_restarted_resumes_from_its_journal() -> anyhow::Result<()>
{
    let _serial = serial().await;
    let (cluster, client) = cluster_up(options()).await?;
    client
        .create_channel("events", pb::Delivery::Durable, 1_000)
        .await?;
    let kept = tempfile::tempdir()?;
    let journal = kept.path().join("events.log");
    let config = format!(
        "[[agents]]\nname = \"auditor\"\n[[agents.subscriptions]]\nchannel = \"events\"\njournal = {:?}\n",
        journal.display().to_string()
    );
    let (_dir, mut first) = start_agent_process(&cluster, &config)?;
    publish_range(&client, 1..=20).await?;
    journal_lines(&journal, 20).await?;
    first.kill()?;
    first.wait()?;
    // Published while no subscriber runs, then while it starts again.
    publish_range(&client, 21..=30).await?;
    let (_dir, mut second) = start_agent_process(&cluster, &config)?;
    publish_range(&client, 31..=40).await?;
    let lines = journal_lines(&journal, 40).await?;
    second.kill()?;
    second.wait()?;
    let expected: Vec<String> = (1..=40).map(|i| format!("{i}\tm{i}")).collect();
    assert_eq!(lines, expected, "every message once, in offset order");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_behind_retention_starts_at_the_oldest_kept_and_is_told_the_gap(
) -> anyhow::Result<()> {
    let _serial = serial().await;
    let (_cluster, client) = cluster_up(options()).await?;
    client
        .create_channel("events", pb::Delivery::Durable, 5)
        .await?;
    publish_range(&client, 1..=12).await?;
    let mut late = client.subscribe("events", Some(1));
    let first = tokio::time::timeout(Duration::from_secs(20), late.next())
        .await?
        .ok_or_else(|| anyhow::anyhow!("ended"))??;
    let message = first.message.unwrap_or_default();
    assert_eq!(
        (message.offset, first.dropped),
        (8, 7),
        "offsets 1-7 fell out of retention"
    );
    Ok(())
}
