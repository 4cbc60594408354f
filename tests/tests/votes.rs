//! Multi-process tests of votes: a real 3-node cluster of `synod` processes; voters are SDK
//! agents whose ballot handlers answer on their sessions, or agents whose ballots a client
//! casts. Each decision rule, early decisions, deadlines, a leader killed mid-vote, bad input.

use std::collections::BTreeMap;

use synod_coordinator::local_cluster::LocalCluster;
use synod_sdk::agent::AgentBuilder;
use synod_sdk::proto as pb;
use synod_sdk::{Client, Code};
use synod_tests::jobs::{cluster_up, options, LEADER_TIMEOUT};
use synod_tests::serial;
use tokio_util::sync::CancellationToken;

/// Started voters: their ids by name, and a client acting as each (by id), to cast its
/// ballot by hand.
struct Voters {
    ids: BTreeMap<String, String>,
    clients: BTreeMap<String, Client>,
}

impl Voters {
    /// A client acting as voter `agent_id`.
    fn client(&self, agent_id: &str) -> Client {
        self.clients[agent_id].clone()
    }
}

/// Starts agents `voter-0..` answering every vote with their entry of `choices` (`None`
/// abstains); returns them once all are connected.
async fn start_voters(
    cluster: &LocalCluster,
    client: &Client,
    choices: &[Option<&'static str>],
    stop: &CancellationToken,
) -> anyhow::Result<Voters> {
    let mut handles = Vec::new();
    for (i, choice) in choices.iter().enumerate() {
        let choice = *choice;
        let agent = AgentBuilder::new(format!("voter-{i}"), cluster.addrs())
            .capability("voter")
            .ballot_handler(move |_: &pb::VoteRequest| choice.map(str::to_owned));
        handles.push(agent.handle());
        let stop = stop.clone();
        tokio::spawn(async move { agent.run(stop).await });
    }
    let mut clients = BTreeMap::new();
    for handle in handles {
        clients.insert(handle.agent_id().await, handle.client()?);
    }
    let ids = synod_coordinator::local_cluster::wait_until(
        LEADER_TIMEOUT,
        "voters to connect",
        || async {
            let agents = client.list_agents().await.ok()?;
            let voters: BTreeMap<String, String> = agents
                .into_iter()
                .filter(|a| a.state == pb::AgentState::Connected as i32)
                .map(|a| (a.name, a.agent_id))
                .collect();
            (voters.len() >= choices.len()).then_some(voters)
        },
    )
    .await?;
    Ok(Voters { ids, clients })
}

fn open_request(
    voters: Option<Vec<String>>,
    rule: pb::vote_rule::Rule,
    timeout_ms: u64,
) -> pb::OpenVoteRequest {
    let voters = match voters {
        Some(agent_ids) => pb::open_vote_request::Voters::AgentIds(pb::AgentIdList { agent_ids }),
        None => pb::open_vote_request::Voters::Selector(pb::AgentSelector {
            capabilities: vec!["voter".into()],
            labels: Default::default(),
        }),
    };
    pb::OpenVoteRequest {
        question: "Deploy build 4812?".into(),
        options: vec!["yes".into(), "no".into()],
        voters: Some(voters),
        timeout_ms,
        rule: Some(pb::VoteRule { rule: Some(rule) }),
        idempotency_key: String::new(),
    }
}

async fn vote_until_closed(
    client: &Client,
    request: pb::OpenVoteRequest,
) -> anyhow::Result<pb::Vote> {
    let opened = client.open_vote(request).await?;
    Ok(client.watch_vote(&opened.vote_id, |_| {}).await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_decision_rule_decides_on_agent_ballots_and_a_deadline_fails_an_open_vote(
) -> anyhow::Result<()> {
    use pb::vote_rule::Rule;
    let _serial = serial().await;
    let (cluster, client) = cluster_up(options()).await?;
    let stop = CancellationToken::new();
    // Four say yes, one says no.
    let choices = [
        Some("yes"),
        Some("yes"),
        Some("no"),
        Some("yes"),
        Some("yes"),
    ];
    let voters = start_voters(&cluster, &client, &choices, &stop).await?.ids;
    let weights: std::collections::HashMap<String, f64> = voters
        .iter()
        .map(|(name, id)| (id.clone(), if name == "voter-2" { 10.0 } else { 1.0 }))
        .collect();
    let cases: Vec<(&str, Rule, pb::VoteState, &str)> = vec![
        (
            "majority",
            Rule::Majority(pb::MajorityRule {}),
            pb::VoteState::Decided,
            "yes",
        ),
        (
            "supermajority",
            Rule::Supermajority(pb::SupermajorityRule { threshold: 0.8 }),
            pb::VoteState::Decided,
            "yes",
        ),
        (
            "unanimous",
            Rule::Unanimous(pb::UnanimousRule {}),
            pb::VoteState::Failed,
            "",
        ),
        (
            "weighted",
            Rule::Weighted(pb::WeightedRule {
                weights: weights.clone(),
                threshold: 0.5,
            }),
            pb::VoteState::Decided,
            "no",
        ),
        (
            "byzantine",
            Rule::Byzantine(pb::ByzantineRule { f: 1 }),
            pb::VoteState::Decided,
            "yes",
        ),
    ];
    for (name, rule, state, decided) in cases {
        let vote = vote_until_closed(&client, open_request(None, rule, 10_000)).await?;
        assert_eq!(vote.eligible_agent_ids.len(), 5, "{name}");
        assert_eq!(
            (vote.state, vote.decided_option.as_str()),
            (state as i32, decided),
            "{name}: {}",
            vote.state_reason
        );
        // Decided as soon as certain, long before the deadline.
        assert!(vote.closed_at_ms < vote.deadline_at_ms, "{name}");
        let counted: u32 = vote.tallies.iter().map(|t| t.ballots).sum();
        assert_eq!(counted as usize, vote.ballots.len(), "{name}");
        if name == "unanimous" {
            assert!(
                vote.state_reason.starts_with("unanimity broken by agent"),
                "{}",
                vote.state_reason
            );
        }
    }

    // Two abstain: 2 yes and 1 no leave a majority possible until the deadline fails it.
    let stop_abstainers = CancellationToken::new();
    let more = start_voters_named(&cluster, &client, &stop_abstainers).await?;
    let ids: Vec<String> = [
        "voter-0",
        "voter-1",
        "voter-2",
        "abstainer-0",
        "abstainer-1",
    ]
    .iter()
    .map(|name| more[*name].clone())
    .collect();
    let vote = vote_until_closed(
        &client,
        open_request(Some(ids), Rule::Majority(pb::MajorityRule {}), 1_500),
    )
    .await?;
    assert_eq!(vote.state, pb::VoteState::Failed as i32);
    assert_eq!(vote.ballots.len(), 3);
    assert!(
        vote.state_reason.starts_with("the deadline passed"),
        "{}",
        vote.state_reason
    );
    assert!(vote.closed_at_ms >= vote.deadline_at_ms);
    stop.cancel();
    stop_abstainers.cancel();
    Ok(())
}

/// Starts two agents that abstain; returns every connected agent's id by name.
async fn start_voters_named(
    cluster: &LocalCluster,
    client: &Client,
    stop: &CancellationToken,
) -> anyhow::Result<BTreeMap<String, String>> {
    for i in 0..2 {
        let agent = AgentBuilder::new(format!("abstainer-{i}"), cluster.addrs())
            .ballot_handler(|_: &pb::VoteRequest| None);
        let stop = stop.clone();
        tokio::spawn(async move { agent.run(stop).await });
    }
    synod_coordinator::local_cluster::wait_until(
        LEADER_TIMEOUT,
        "abstainers to connect",
        || async {
            let agents = client.list_agents().await.ok()?;
            let named: BTreeMap<String, String> =
                agents.into_iter().map(|a| (a.name, a.agent_id)).collect();
            (named.contains_key("abstainer-1") && named.contains_key("abstainer-0"))
                .then_some(named)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vote_survives_a_leader_kill_with_every_ballot_counted_once() -> anyhow::Result<()> {
    let _serial = serial().await;
    let (mut cluster, client) = cluster_up(options()).await?;
    let stop = CancellationToken::new();
    // Agents that never answer on their own: a client casts their ballots.
    let voters = start_voters(&cluster, &client, &[None; 5], &stop).await?;
    let ids: Vec<String> = voters.ids.values().cloned().collect();
    let rule = pb::vote_rule::Rule::Unanimous(pb::UnanimousRule {});
    let vote = client
        .open_vote(open_request(Some(ids.clone()), rule, 60_000))
        .await?;
    for id in &ids[..2] {
        voters
            .client(id)
            .cast_ballot(&vote.vote_id, id, "yes")
            .await?;
    }
    let leader = cluster.wait_for_leader(LEADER_TIMEOUT).await?;
    cluster.kill(leader)?;
    // The same ballot again after the kill is counted once; the rest decide the vote.
    for id in &ids[1..] {
        voters
            .client(id)
            .cast_ballot(&vote.vote_id, id, "yes")
            .await?;
    }
    let done = client.get_vote(&vote.vote_id).await?;
    assert_eq!(
        (done.state, done.decided_option.as_str()),
        (pb::VoteState::Decided as i32, "yes")
    );
    let cast: Vec<&str> = done.ballots.iter().map(|b| b.agent_id.as_str()).collect();
    let expected: Vec<&str> = ids.iter().map(String::as_str).collect();
    assert_eq!(cast, expected, "every ballot, once, in the order cast");
    // Closed for good: a changed ballot is refused, the result stays.
    let late = voters
        .client(&ids[0])
        .cast_ballot(&vote.vote_id, &ids[0], "no")
        .await
        .unwrap_err();
    assert_eq!(late.code(), Some(Code::FailedPrecondition), "{late}");
    assert_eq!(client.get_vote(&vote.vote_id).await?.decided_option, "yes");
    let listed = client.list_votes(&[pb::VoteState::Decided], 10).await?;
    assert!(listed.iter().any(|v| v.vote_id == vote.vote_id));
    stop.cancel();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_votes_and_ballots_get_clear_errors() -> anyhow::Result<()> {
    let _serial = serial().await;
    let (cluster, client) = cluster_up(options()).await?;
    let stop = CancellationToken::new();
    let voters = start_voters(&cluster, &client, &[None; 3], &stop).await?;
    let ids: Vec<String> = voters.ids.values().cloned().collect();
    let majority = || pb::vote_rule::Rule::Majority(pb::MajorityRule {});
    let code_of = |result: Result<pb::Vote, synod_sdk::ClientError>| {
        let error = result.unwrap_err();
        (error.code(), error.to_string())
    };

    let unknown = code_of(client.get_vote("no-such-vote").await);
    assert_eq!(unknown.0, Some(Code::NotFound), "{}", unknown.1);
    let one_option = pb::OpenVoteRequest {
        options: vec!["yes".into()],
        ..open_request(Some(ids.clone()), majority(), 5_000)
    };
    let error = code_of(client.open_vote(one_option).await);
    assert_eq!(error.0, Some(Code::InvalidArgument));
    assert!(error.1.contains("options: 1 options"), "{}", error.1);
    let byzantine = pb::vote_rule::Rule::Byzantine(pb::ByzantineRule { f: 1 });
    let error = code_of(
        client
            .open_vote(open_request(Some(ids.clone()), byzantine, 5_000))
            .await,
    );
    assert_eq!(error.0, Some(Code::InvalidArgument));
    assert!(error.1.contains("rule.byzantine.f"), "{}", error.1);
    let nobody = pb::OpenVoteRequest {
        voters: Some(pb::open_vote_request::Voters::Selector(pb::AgentSelector {
            capabilities: vec!["astronaut".into()],
            labels: Default::default(),
        })),
        ..open_request(None, majority(), 5_000)
    };
    let error = code_of(client.open_vote(nobody).await);
    assert_eq!(error.0, Some(Code::InvalidArgument));
    assert!(error.1.contains("selector"), "{}", error.1);

    let pair = client
        .open_vote(open_request(Some(ids[..2].to_vec()), majority(), 5_000))
        .await?;
    let outsider = code_of(
        voters
            .client(&ids[2])
            .cast_ballot(&pair.vote_id, &ids[2], "yes")
            .await,
    );
    assert_eq!(outsider.0, Some(Code::PermissionDenied), "{}", outsider.1);
    // A ballot as another agent: refused for a client without credentials and for another
    // agent alike.
    let anonymous = code_of(client.cast_ballot(&pair.vote_id, &ids[0], "yes").await);
    assert_eq!(anonymous.0, Some(Code::PermissionDenied), "{}", anonymous.1);
    assert!(
        anonymous.1.contains("session credentials"),
        "{}",
        anonymous.1
    );
    let impostor = code_of(
        voters
            .client(&ids[1])
            .cast_ballot(&pair.vote_id, &ids[0], "yes")
            .await,
    );
    assert_eq!(impostor.0, Some(Code::PermissionDenied), "{}", impostor.1);
    assert!(
        impostor.1.contains("may act only as itself"),
        "{}",
        impostor.1
    );
    let option = code_of(
        voters
            .client(&ids[0])
            .cast_ballot(&pair.vote_id, &ids[0], "maybe")
            .await,
    );
    assert_eq!(option.0, Some(Code::InvalidArgument), "{}", option.1);

    let vote = client
        .open_vote(open_request(Some(ids.clone()), majority(), 5_000))
        .await?;
    voters
        .client(&ids[0])
        .cast_ballot(&vote.vote_id, &ids[0], "no")
        .await?;
    let done = voters
        .client(&ids[1])
        .cast_ballot(&vote.vote_id, &ids[1], "no")
        .await?;
    assert_eq!(done.state, pb::VoteState::Decided as i32);
    let closed = code_of(
        voters
            .client(&ids[2])
            .cast_ballot(&vote.vote_id, &ids[2], "yes")
            .await,
    );
    assert_eq!(closed.0, Some(Code::FailedPrecondition), "{}", closed.1);
    assert!(closed.1.contains("no longer open"), "{}", closed.1);
    stop.cancel();
    Ok(())
}
