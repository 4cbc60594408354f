//! Multi-process tests of leader election on a real 3-node cluster: leadership moves to the
//! next candidate when the holder's `synod-agent` process (which campaigned on its own) is
//! killed with SIGKILL (its lease expires), observers see every change, terms only grow, a
//! resignation hands over, and only an agent itself may campaign or resign as it.

use std::time::Duration;

use synod_sdk::agent::AgentBuilder;
use synod_sdk::proto as pb;
use synod_sdk::Code;
use synod_tests::jobs::{cluster_up, options, start_agent_process, wait_for_agents};
use synod_tests::serial;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_election_moves_to_another_agent_when_the_holder_is_killed() -> anyhow::Result<()> {
    let _serial = serial().await;
    let (cluster, client) = cluster_up(options()).await?;
    let (_dir, mut holder) = start_agent_process(
        &cluster,
        "[[agents]]\nname = \"holder\"\n[[agents.handlers]]\nkind = \"*\"\ndemo = \"echo\"\n\
         [[agents.campaigns]]\nelection = \"scheduler\"\nvalue = \"holder:9000\"\n",
    )?;
    wait_for_agents(&client, 1).await?;
    let stop = CancellationToken::new();
    let standby = AgentBuilder::new("standby", cluster.addrs());
    let standby_client = standby.handle().client()?;
    let agent_stop = stop.clone();
    tokio::spawn(async move { standby.run(agent_stop).await });
    wait_for_agents(&client, 2).await?;
    let id_of = |agents: &[pb::Agent], name: &str| {
        agents
            .iter()
            .find(|a| a.name == name)
            .map(|a| a.agent_id.clone())
            .unwrap()
    };
    let agents = client.list_agents().await?;
    let (holder_id, standby_id) = (id_of(&agents, "holder"), id_of(&agents, "standby"));

    let first = synod_coordinator::local_cluster::wait_until(
        Duration::from_secs(10),
        "the holder to lead",
        || async { client.get_leader("scheduler").await.ok().flatten() },
    )
    .await?;
    assert_eq!(first.agent_id, holder_id);
    assert_eq!(first.value, b"holder:9000");
    // Only an agent itself may campaign as it.
    let impostor = client
        .campaign("scheduler", &standby_id, b"impostor")
        .await
        .unwrap_err();
    assert_eq!(impostor.code(), Some(Code::PermissionDenied), "{impostor}");
    let as_other = standby_client
        .campaign("scheduler", &holder_id, b"x")
        .await
        .unwrap_err();
    assert_eq!(as_other.code(), Some(Code::PermissionDenied), "{as_other}");
    // The standby queues behind it.
    let waiting = {
        let (client, standby_id) = (standby_client.clone(), standby_id.clone());
        tokio::spawn(async move {
            client
                .campaign("scheduler", &standby_id, b"standby:9000")
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiting.is_finished(),
        "the standby waits while the holder leads"
    );
    let observer = {
        let (client, standby_id) = (client.clone(), standby_id.clone());
        tokio::spawn(async move {
            let mut seen = Vec::new();
            let last = client
                .observe_leader("scheduler", |leader| {
                    seen.push(leader.map(|l| l.agent_id.clone()));
                    leader.is_some_and(|l| l.agent_id == standby_id)
                })
                .await;
            (seen, last)
        })
    };

    holder.kill()?;
    holder.wait()?;
    let second = tokio::time::timeout(Duration::from_secs(30), waiting).await???;
    assert_eq!(second.agent_id, standby_id);
    assert_eq!(second.value, b"standby:9000");
    assert!(second.term > first.term, "terms only grow");
    let (seen, last) = tokio::time::timeout(Duration::from_secs(10), observer).await??;
    assert_eq!(seen.first(), Some(&Some(holder_id.clone())), "{seen:?}");
    assert_eq!(last?.map(|l| l.agent_id), Some(standby_id.clone()));
    assert_eq!(
        client.get_leader("scheduler").await?.map(|l| l.term),
        Some(second.term)
    );

    // A stale term cannot resign; the current one can, and the election is then empty.
    let stale = standby_client
        .resign("scheduler", &standby_id, first.term)
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Some(Code::FailedPrecondition), "{stale}");
    let impostor = client
        .resign("scheduler", &standby_id, second.term)
        .await
        .unwrap_err();
    assert_eq!(impostor.code(), Some(Code::PermissionDenied), "{impostor}");
    standby_client
        .resign("scheduler", &standby_id, second.term)
        .await?;
    assert_eq!(client.get_leader("scheduler").await?, None);
    let nobody = client
        .campaign("scheduler", "no-such-agent", b"")
        .await
        .unwrap_err();
    assert_eq!(nobody.code(), Some(Code::NotFound), "{nobody}");
    stop.cancel();
    Ok(())
}
