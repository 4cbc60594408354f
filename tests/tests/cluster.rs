//! Multi-process tests of the replicated coordinator: real `synod server` processes on
//! loopback, real SIGKILL, restarts from disk, snapshots and membership changes.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use synod_coordinator::local_cluster::{wait_until, LocalCluster, NodeOptions};
use synod_sdk::proto as pb;
use synod_sdk::Client;
use synod_tests::{serial, start_cluster};
use tokio::time::Instant;

const LEADER_TIMEOUT: Duration = Duration::from_secs(10);
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(30);

fn options() -> NodeOptions {
    NodeOptions {
        log: "warn".into(),
        ..NodeOptions::default()
    }
}

/// Writes `prefix/<i>` for every i in `range` with `concurrency` tasks; each task's client
/// starts at a different node. Returns the keys acknowledged.
async fn write_keys(
    cluster: &LocalCluster,
    prefix: &str,
    range: std::ops::Range<u64>,
    concurrency: u64,
) -> anyhow::Result<BTreeSet<String>> {
    let next = Arc::new(AtomicU64::new(range.start));
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let mut tasks = Vec::new();
    for task in 0..concurrency {
        let mut addrs = cluster.addrs();
        let first = task as usize % addrs.len();
        addrs.rotate_left(first);
        let client = Client::new(addrs)?;
        let (next, acked, prefix, end) =
            (next.clone(), acked.clone(), prefix.to_owned(), range.end);
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= end {
                    return anyhow::Ok(());
                }
                let key = format!("{prefix}/{i:06}");
                client.put(key.clone(), format!("v{i}")).await?;
                acked.lock().unwrap().insert(key);
            }
        }));
    }
    for task in tasks {
        task.await??;
    }
    let acked = acked.lock().unwrap().clone();
    Ok(acked)
}

/// Every key under `prefix` as node `id` has applied it (a stale, local read).
async fn keys_on(
    cluster: &LocalCluster,
    id: u64,
    prefix: &str,
) -> anyhow::Result<BTreeSet<String>> {
    let client = Client::new([cluster.addr(id)])?;
    let (mut keys, mut page_token) = (BTreeSet::new(), String::new());
    loop {
        let response = client
            .list(pb::ListRequest {
                prefix: format!("{prefix}/"),
                page: Some(pb::PageRequest {
                    page_size: 1000,
                    page_token,
                }),
                consistency: pb::Consistency::Stale as i32,
            })
            .await?;
        keys.extend(response.kvs.into_iter().map(|kv| kv.key));
        if response.next_page_token.is_empty() {
            return Ok(keys);
        }
        page_token = response.next_page_token;
    }
}

async fn commit_index(cluster: &LocalCluster) -> anyhow::Result<u64> {
    Ok(cluster.client()?.status(true).await?.commit_index)
}

/// Waits until the three nodes have applied, identically, all the cluster has committed.
async fn all_three_converge(cluster: &LocalCluster) -> anyhow::Result<()> {
    let committed = commit_index(cluster).await?;
    cluster
        .wait_converged(&[1, 2, 3], committed, CONVERGE_TIMEOUT)
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_elect_one_leader_all_agree_on() -> anyhow::Result<()> {
    let _serial = serial().await;
    let cluster = start_cluster(3, options())?;
    let leader = cluster.wait_for_leader(LEADER_TIMEOUT).await?;
    let status = cluster.client()?.status(true).await?;
    assert_eq!(status.leader_id, leader);
    assert_eq!(
        status.node_id, leader,
        "from_leader status is answered by the leader"
    );
    let voters: Vec<u64> = status
        .members
        .iter()
        .filter(|m| m.voter)
        .map(|m| m.id)
        .collect();
    assert_eq!(voters, [1, 2, 3]);
    let roles: Vec<i32> = status.members.iter().map(|m| m.role).collect();
    assert_eq!(
        roles
            .iter()
            .filter(|r| **r == pb::MemberRole::Leader as i32)
            .count(),
        1
    );
    assert!(status.members.iter().all(|m| m.healthy), "{status:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_commands_through_all_nodes_apply_identically_everywhere() -> anyhow::Result<()>
{
    let _serial = serial().await;
    let cluster = start_cluster(3, options())?;
    cluster.wait_for_leader(LEADER_TIMEOUT).await?;
    let acked = write_keys(&cluster, "bulk", 0..10_000, 48).await?;
    assert_eq!(acked.len(), 10_000);
    let committed = commit_index(&cluster).await?;
    let (index, digest) = cluster
        .wait_converged(&[1, 2, 3], committed, CONVERGE_TIMEOUT)
        .await?;
    assert!(index >= committed && digest.len() == 64);
    for id in [1, 2, 3] {
        assert_eq!(keys_on(&cluster, id, "bulk").await?, acked, "node {id}");
        let status = cluster.client()?.status_of(cluster.addr(id), false).await?;
        assert_eq!(
            status.commands_applied, 10_000,
            "node {id} applied every command once"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_elects_a_new_one_within_two_seconds_and_loses_no_acknowledged_write(
) -> anyhow::Result<()> {
    let _serial = serial().await;
    let mut cluster = start_cluster(3, options())?;
    let leader = cluster.wait_for_leader(LEADER_TIMEOUT).await?;
    let before = write_keys(&cluster, "before", 0..500, 16).await?;

    // Writers keep going while the leader dies.
    let stop = Arc::new(AtomicBool::new(false));
    let acked_during = Arc::new(Mutex::new(BTreeSet::new()));
    let writer = {
        let (client, stop, acked) = (cluster.client()?, stop.clone(), acked_during.clone());
        tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("during/{i:06}");
                if client.put(key.clone(), "x").await.is_ok() {
                    acked.lock().unwrap().insert(key);
                }
                i += 1;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.kill(leader)?;
    let killed_at = Instant::now();
    let survivors: Vec<String> = cluster
        .running_ids()
        .iter()
        .map(|id| cluster.addr(*id).to_owned())
        .collect();
    Client::new(survivors)?.put("after-kill", "first").await?;
    let failover = killed_at.elapsed();
    assert!(
        failover < Duration::from_secs(2),
        "first write after the kill took {failover:?}"
    );
    let new_leader = cluster.wait_for_leader(LEADER_TIMEOUT).await?;
    assert_ne!(new_leader, leader);
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    writer.await?;

    let survivor = cluster.running_ids()[0];
    let committed = commit_index(&cluster).await?;
    cluster
        .wait_converged(&cluster.running_ids(), committed, CONVERGE_TIMEOUT)
        .await?;
    assert_eq!(keys_on(&cluster, survivor, "before").await?, before);
    let during = acked_during.lock().unwrap().clone();
    assert!(!during.is_empty());
    let present = keys_on(&cluster, survivor, "during").await?;
    let lost: Vec<_> = during.difference(&present).collect();
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_restarts_from_its_data_dir_and_catches_up() -> anyhow::Result<()> {
    let _serial = serial().await;
    let mut cluster = start_cluster(3, options())?;
    let leader = cluster.wait_for_leader(LEADER_TIMEOUT).await?;
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    write_keys(&cluster, "a", 0..300, 8).await?;
    all_three_converge(&cluster).await?;
    cluster.kill(follower)?;
    write_keys(&cluster, "b", 0..700, 8).await?;
    cluster.restart(follower)?;
    all_three_converge(&cluster).await?;
    assert_eq!(keys_on(&cluster, follower, "a").await?.len(), 300);
    assert_eq!(keys_on(&cluster, follower, "b").await?.len(), 700);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_frozen_during_large_appends_catches_up_with_every_entry() -> anyhow::Result<()>
{
    let _serial = serial().await;
    let cluster = start_cluster(3, options())?;
    let leader = cluster.wait_for_leader(LEADER_TIMEOUT).await?;
    let frozen = (1..=3).find(|id| *id != leader).unwrap();
    // Frozen, the follower stops reading: the append of the first 1 MiB value to it stalls
    // past the heartbeat timeout while more writes come in behind it, so retries carry more
    // entries than the append still in flight.
    cluster.pause(frozen)?;
    // The other two nodes commit meanwhile.
    let live = (1..=3)
        .filter(|id| *id != frozen)
        .map(|id| cluster.addr(id));
    let client = Client::new(live.map(str::to_owned))?;
    let value = |i: u8| vec![i; 1024 * 1024];
    for i in 0..4u8 {
        client.put(format!("big/{i}"), value(i)).await?;
    }
    for i in 0..200 {
        client.put(format!("small/{i:06}"), format!("v{i}")).await?;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.resume(frozen)?;
    all_three_converge(&cluster).await?;
    assert_eq!(keys_on(&cluster, frozen, "small").await?.len(), 200);
    let on_frozen = Client::new([cluster.addr(frozen)])?;
    for i in 0..4u8 {
        let kv = on_frozen
            .get(format!("big/{i}"), pb::Consistency::Stale)
            .await?
            .kv
            .expect("the large value reached the frozen follower");
        assert!(kv.value == value(i), "big/{i} arrived intact");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_fell_behind_a_compaction_catches_up_by_snapshot() -> anyhow::Result<()> {
    let _serial = serial().await;
    let options = NodeOptions {
        snapshot_logs: 100,
        ..options()
    };
    let mut cluster = start_cluster(3, options)?;
    let leader = cluster.wait_for_leader(LEADER_TIMEOUT).await?;
    let lagger = (1..=3).find(|id| *id != leader).unwrap();
    write_keys(&cluster, "early", 0..50, 1).await?;
    all_three_converge(&cluster).await?;
    let lagger_last = cluster
        .client()?
        .status_of(cluster.addr(lagger), false)
        .await?
        .last_log_index;
    cluster.kill(lagger)?;

    // One writer: one command per entry, so the log grows past several snapshots.
    write_keys(&cluster, "late", 0..600, 1).await?;
    let client = cluster.client()?;
    let purged = wait_until(
        CONVERGE_TIMEOUT,
        "the leader to compact its log",
        || async {
            let status = client.status(true).await.ok()?;
            (status.purged_index > lagger_last).then_some(status.purged_index)
        },
    )
    .await?;
    assert!(
        purged > lagger_last,
        "the entries the lagger needs are gone from the leader's log"
    );

    cluster.restart(lagger)?;
    all_three_converge(&cluster).await?;
    let status = client.status_of(cluster.addr(lagger), false).await?;
    assert!(
        status.snapshot_index > lagger_last,
        "lagger installed a snapshot: {status:?}"
    );
    assert_eq!(keys_on(&cluster, lagger, "late").await?.len(), 600);
    assert_eq!(keys_on(&cluster, lagger, "early").await?.len(), 50);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_grows_to_five_voters_and_shrinks_back_while_writes_continue(
) -> anyhow::Result<()> {
    let _serial = serial().await;
    let mut cluster = start_cluster(3, options())?;
    cluster.wait_for_leader(LEADER_TIMEOUT).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicU64::new(0));
    let progress = Arc::new(AtomicU64::new(0));
    let writer = {
        let (client, stop, failures) = (cluster.client()?, stop.clone(), failures.clone());
        let progress = progress.clone();
        tokio::spawn(async move {
            let mut written = 0u64;
            while !stop.load(Ordering::Relaxed) {
                match client.put(format!("grow/{written:06}"), "x").await {
                    Ok(_) => {
                        written += 1;
                        progress.store(written, Ordering::Relaxed);
                    }
                    Err(_) => {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            written
        })
    };
    // Writes must keep completing between every membership step.
    let writes_continue = || {
        let progress = progress.clone();
        let from = progress.load(Ordering::Relaxed);
        wait_until(CONVERGE_TIMEOUT, "writes to continue", move || {
            let progress = progress.clone();
            async move { (progress.load(Ordering::Relaxed) >= from + 20).then_some(()) }
        })
    };
    let admin = cluster.client()?;
    for id in [4, 5] {
        let addr = cluster.start_joiner(id)?;
        admin.add_learner(id, addr, true).await?;
        writes_continue().await?;
        let response = admin.promote(id).await?;
        assert!(response.voters.contains(&id), "{response:?}");
        writes_continue().await?;
    }
    let status = admin.status(true).await?;
    assert_eq!(status.members.iter().filter(|m| m.voter).count(), 5);
    cluster
        .wait_converged(&[1, 2, 3, 4, 5], status.commit_index, CONVERGE_TIMEOUT)
        .await?;

    for id in [5, 4] {
        let response = admin.remove(id).await?;
        assert!(
            !response.voters.contains(&id) && !response.learners.contains(&id),
            "{response:?}"
        );
        writes_continue().await?;
    }
    let status = admin.status(true).await?;
    let ids: Vec<u64> = status.members.iter().map(|m| m.id).collect();
    assert!(status.members.iter().all(|m| m.voter));
    assert_eq!(ids.len(), 3, "{ids:?}");
    stop.store(true, Ordering::Relaxed);
    let written = writer.await?;
    assert!(
        written >= 80,
        "writes continued during the changes: {written}"
    );
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "no write failed during membership changes"
    );
    let committed = commit_index(&cluster).await?;
    let remaining: Vec<u64> = ids;
    cluster
        .wait_converged(&remaining, committed, CONVERGE_TIMEOUT)
        .await?;
    assert_eq!(
        keys_on(&cluster, remaining[0], "grow").await?.len() as u64,
        written
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_errors_and_lose_nothing() -> anyhow::Result<()> {
    let _serial = serial().await;
    let cluster = start_cluster(3, options())?;
    cluster.wait_for_leader(LEADER_TIMEOUT).await?;
    let client = cluster.client()?;
    let kept = write_keys(&cluster, "kept", 0..100, 4).await?;

    let error = client.promote(9).await.unwrap_err();
    assert_eq!(error.code(), Some(tonic_code::NotFound), "{error}");
    assert!(
        error.to_string().contains("node 9 is not a member"),
        "{error}"
    );
    let error = client.remove(9).await.unwrap_err();
    assert_eq!(error.code(), Some(tonic_code::NotFound), "{error}");
    let error = client
        .add_learner(0, "127.0.0.1:1", false)
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(tonic_code::InvalidArgument), "{error}");
    assert!(error.to_string().contains("id:"), "{error}");

    let error = client.put("", "v").await.unwrap_err();
    assert!(
        error.to_string().contains("key: must not be empty"),
        "{error}"
    );
    let error = client
        .put("big", vec![0u8; 1024 * 1024 + 1])
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(tonic_code::InvalidArgument), "{error}");
    assert!(
        error
            .to_string()
            .contains("value: 1048577 bytes, the limit is 1048576"),
        "{error}"
    );
    let error = client
        .put("huge", vec![0u8; 5 * 1024 * 1024])
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("message length too large"),
        "{error}"
    );
    let error = client
        .put_request(pb::PutRequest {
            key: "kept/000001".into(),
            value: b"new".to_vec(),
            expect_absent: true,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        error.code(),
        Some(tonic_code::FailedPrecondition),
        "{error}"
    );

    let leader_view = client.status(true).await?;
    assert_eq!(leader_view.members.len(), 3);
    let committed = leader_view.commit_index;
    cluster
        .wait_converged(&[1, 2, 3], committed, CONVERGE_TIMEOUT)
        .await?;
    for id in [1, 2, 3] {
        assert_eq!(keys_on(&cluster, id, "kept").await?, kept);
    }
    let value = client
        .get("kept/000001", pb::Consistency::Linearizable)
        .await?
        .kv
        .unwrap()
        .value;
    assert_eq!(value, b"v1");
    client.put("still-writable", "yes").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_the_last_voter_is_refused() -> anyhow::Result<()> {
    let _serial = serial().await;
    let cluster = start_cluster(1, options())?;
    cluster.wait_for_leader(LEADER_TIMEOUT).await?;
    let client = cluster.client()?;
    let error = client.remove(1).await.unwrap_err();
    assert_eq!(
        error.code(),
        Some(tonic_code::FailedPrecondition),
        "{error}"
    );
    assert!(
        error.to_string().contains("node 1 is the last voter"),
        "{error}"
    );
    client.put("alive", "yes").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_a_leader_cleanly_and_the_rest_carry_on() -> anyhow::Result<()> {
    let _serial = serial().await;
    let mut cluster = start_cluster(3, options())?;
    let leader = cluster.wait_for_leader(LEADER_TIMEOUT).await?;
    let acked = write_keys(&cluster, "t", 0..200, 8).await?;
    let exit = cluster.terminate(leader)?;
    assert!(exit.success(), "graceful shutdown exits 0, got {exit:?}");
    let new_leader = cluster.wait_for_leader(LEADER_TIMEOUT).await?;
    assert_ne!(new_leader, leader);
    cluster.client()?.put("after-term", "ok").await?;
    cluster.restart(leader)?;
    all_three_converge(&cluster).await?;
    assert_eq!(keys_on(&cluster, leader, "t").await?, acked);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_serves_grpc_health() -> anyhow::Result<()> {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};
    let _serial = serial().await;
    let cluster = start_cluster(3, options())?;
    cluster.wait_for_leader(LEADER_TIMEOUT).await?;
    for id in [1, 2, 3] {
        let channel = cluster.client()?.channel(cluster.addr(id))?;
        let mut health = HealthClient::new(channel);
        for service in ["synod.v1.KvService", "synod.v1.ClusterService"] {
            let request = HealthCheckRequest {
                service: service.into(),
            };
            let status = health.check(request).await?.into_inner().status;
            assert_eq!(status, ServingStatus::Serving as i32, "node {id} {service}");
        }
        let unknown = HealthCheckRequest {
            service: "no.such.Service".into(),
        };
        assert_eq!(
            health.check(unknown).await.unwrap_err().code(),
            tonic::Code::NotFound
        );
    }
    Ok(())
}

mod tonic_code {
    pub use synod_sdk::Code::*;
}
