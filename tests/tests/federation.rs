//! Multi-process tests of federated learning on a real 3-node cluster: FedAvg rounds whose
//! global models equal the hand-computed weighted averages, shape mismatches and bad checksums
//! refused without poisoning the round, training surviving the leader's kill -9 with every
//! committed round intact (also when it dies as the next round opens behind a commit), a
//! participant lost mid-round, the next round's model served by every replica as soon as it
//! commits (also by a follower that was frozen through the commit before), and an update
//! admitted by the leader before its payload is sent.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use synod_coordinator::local_cluster::{wait_until, LocalCluster, NodeOptions};
use synod_sdk::agent::{AgentBuilder, AgentHandle, FitRequest, FitResult, Participant};
use synod_sdk::federation::UpdateUpload;
use synod_sdk::payload::{crc32, into_le_bytes};
use synod_sdk::proto as pb;
use synod_sdk::proto::federation_service_client::FederationServiceClient;
use synod_sdk::tensors::{specs_to_proto, Model, TensorSpec};
use synod_sdk::{Client, Code};
use synod_tests::jobs::{cluster_up, options, wait_for_agents};
use synod_tests::{serial, start_cluster};
use tokio_util::sync::CancellationToken;

/// How long a federation may take.
const FEDERATION_TIMEOUT: Duration = Duration::from_secs(90);

/// Adds `step` to every weight and reports `examples` examples and loss = `step`.
struct Stepper {
    step: f32,
    examples: u64,
    delay: Duration,
}

impl Participant for Stepper {
    fn fit(&self, request: &FitRequest) -> Result<FitResult, String> {
        std::thread::sleep(self.delay);
        // In the memory of the last update, its old values still there: the results below
        // show that none of them leaks into this round's weights.
        Ok(FitResult {
            weights: request.map_weights(|w| w + self.step),
            num_examples: self.examples,
            metrics: BTreeMap::from([("loss".to_owned(), f64::from(self.step))]),
        })
    }
}

fn specs() -> Vec<TensorSpec> {
    vec![TensorSpec::f32("w", &[2, 2]), TensorSpec::f32("b", &[2])]
}

fn spec(rounds: u32, min: u32, timeout_ms: u64) -> pb::FederationSpec {
    let initial = Model::new(specs(), vec![0.0; 6]).unwrap();
    pb::FederationSpec {
        name: "stepper".into(),
        initial_model: Some(pb::InitialModel {
            tensors: specs_to_proto(&specs()),
            inline_data: initial.payload(),
        }),
        rounds,
        participants: Some(pb::ParticipantSelection {
            selector: Some(pb::AgentSelector {
                capabilities: vec!["fl".into()],
                ..Default::default()
            }),
            fraction: 1.0,
            min_participants: min,
            max_participants: 0,
        }),
        round_timeout_ms: timeout_ms,
        ..Default::default()
    }
}

/// Starts in-process participants; each stops with `stop` (or its own token).
fn start_participants(
    cluster: &LocalCluster,
    steppers: Vec<Stepper>,
    stop: &CancellationToken,
) -> Vec<(CancellationToken, AgentHandle)> {
    steppers
        .into_iter()
        .enumerate()
        .map(|(i, stepper)| {
            let own = stop.child_token();
            let agent = AgentBuilder::new(format!("p{i}"), cluster.addrs())
                .capability("fl")
                .participant(stepper);
            let handle = agent.handle();
            let token = own.clone();
            tokio::spawn(async move { agent.run(token).await });
            (own, handle)
        })
        .collect()
}

/// Starts a federation from `spec`; its id.
async fn start(client: &Client, spec: pb::FederationSpec) -> anyhow::Result<String> {
    let started = client.start_federation(spec, "").await?;
    Ok(started.federation.unwrap().federation_id)
}

/// Round 1, open, of a one-round federation whose only participant fits for a while: the
/// federation's id, the round, and a client acting as that participant.
struct OpenRound {
    id: String,
    round: pb::Round,
    as_participant: Client,
}

impl OpenRound {
    /// Starts a participant that fits for `delay` (stopped by `stop`) and the federation, and
    /// waits for round 1.
    async fn start(
        cluster: &LocalCluster,
        client: &Client,
        delay: Duration,
        stop: &CancellationToken,
    ) -> anyhow::Result<Self> {
        let handles = start_participants(cluster, steppers(&[(1.0, 5)], delay), stop);
        let as_participant = handles[0].1.client()?;
        wait_for_agents(client, 1).await?;
        let id = start(client, spec(1, 1, 20_000)).await?;
        let round = wait_until(Duration::from_secs(10), "round 1 to start", || async {
            client.get_round(&id, 1).await.ok()
        })
        .await?;
        Ok(Self {
            id,
            round,
            as_participant,
        })
    }

    /// The header of an update from the round's participant, for `tensors`.
    fn header(&self, tensors: &[TensorSpec]) -> pb::UpdateHeader {
        pb::UpdateHeader {
            federation_id: self.id.clone(),
            round: 1,
            attempt: self.round.attempt,
            agent_id: self.round.participants[0].agent_id.clone(),
            num_examples: 5,
            tensors: specs_to_proto(tensors),
            ..Default::default()
        }
    }
}

async fn wait_finished(client: &Client, id: &str) -> anyhow::Result<pb::Federation> {
    wait_until(FEDERATION_TIMEOUT, "the federation to finish", || async {
        let f = client.get_federation(id).await.ok()?;
        let running = [
            pb::FederationState::Running,
            pb::FederationState::AwaitingModel,
        ];
        (!running.map(|s| s as i32).contains(&f.state)).then_some(f)
    })
    .await
}

/// Waits for the federation to finish and checks that it completed.
async fn wait_completed(client: &Client, id: &str) -> anyhow::Result<pb::Federation> {
    let done = wait_finished(client, id).await?;
    let completed = pb::FederationState::Completed as i32;
    anyhow::ensure!(done.state == completed, "not completed: {done:?}");
    Ok(done)
}

async fn committed_rounds(
    client: &Client,
    id: &str,
    rounds: u32,
) -> anyhow::Result<Vec<pb::Round>> {
    let mut out = Vec::new();
    for round in 1..=rounds {
        out.push(client.get_round(id, round).await?);
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fedavg_rounds_commit_the_weighted_average_of_updates() -> anyhow::Result<()> {
    let _serial = serial().await;
    let (cluster, client) = cluster_up(options()).await?;
    let stop = CancellationToken::new();
    let steppers = steppers(&[(1.0, 10), (2.0, 30), (4.0, 60)], Duration::ZERO);
    start_participants(&cluster, steppers, &stop);
    wait_for_agents(&client, 3).await?;
    let started = client
        .start_federation(spec(3, 3, 20_000), "fedavg-1")
        .await?;
    let id = started.federation.unwrap().federation_id;
    let done = wait_completed(&client, &id).await?;
    assert_eq!(done.committed_round, 3);
    // Each round moves every weight by (10·1 + 30·2 + 60·4) / 100 = 3.1.
    let (round, model) = client.download_model(&id, None).await?;
    assert_eq!(round, 3);
    for value in &model.values {
        assert!((value - 9.3).abs() < 1e-4, "{:?}", model.values);
    }
    for round in committed_rounds(&client, &id, 3).await? {
        assert_eq!(round.state, pb::RoundState::Committed as i32);
        assert_eq!(round.participants.len(), 3);
        assert!(
            (round.metrics["loss"] - 3.1).abs() < 1e-9,
            "{:?}",
            round.metrics
        );
    }
    // The same idempotency key returns the same federation.
    let again = client
        .start_federation(spec(3, 3, 20_000), "fedavg-1")
        .await?;
    assert!(again.deduplicated);
    assert_eq!(again.federation.unwrap().federation_id, id);
    // Old models are pruned, the initial one is kept.
    let (zero, initial) = client.download_model(&id, Some(0)).await?;
    assert_eq!((zero, initial.values), (0, vec![0.0; 6]));
    let pruned = client.download_model(&id, Some(1)).await.unwrap_err();
    assert_eq!(pruned.code(), Some(Code::NotFound), "{pruned}");
    stop.cancel();
    drop(cluster);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_of_updates_folded_together_share_log_entries() -> anyhow::Result<()> {
    let _serial = serial().await;
    let (cluster, client) = cluster_up(options()).await?;
    let stop = CancellationToken::new();
    let steps: Vec<(f32, u64)> = (1..=8).map(|i| (i as f32, 10)).collect();
    start_participants(&cluster, steppers(&steps, Duration::ZERO), &stop);
    wait_for_agents(&client, 8).await?;
    let id = start(&client, spec(2, 8, 20_000)).await?;
    wait_completed(&client, &id).await?;
    // (round, log index) of every receipt.
    let receipts: Vec<(u32, u64)> = history(&client, &id)
        .await?
        .iter()
        .filter_map(|e| match &e.kind {
            Some(pb::federation_event::Kind::UpdateReceived(r)) => Some((r.round, e.log_index)),
            _ => None,
        })
        .collect();
    assert_eq!(receipts.len(), 16, "eight updates in each of two rounds");
    // Committed one by one, a round's first receipt has an entry of its own: nothing else is
    // waiting when it is proposed. Gathered, it waits for the updates folded right after it.
    for round in [1, 2] {
        let entries: Vec<u64> = receipts
            .iter()
            .filter(|(r, _)| *r == round)
            .map(|(_, index)| *index)
            .collect();
        let first = entries.iter().min().copied();
        let sharing_first = entries.iter().filter(|&&i| Some(i) == first).count();
        assert!(
            sharing_first >= 2,
            "round {round}: its first receipt was committed alone: {entries:?}"
        );
    }
    stop.cancel();
    drop(cluster);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_specs_and_malformed_updates_are_refused_without_poisoning_the_round(
) -> anyhow::Result<()> {
    let _serial = serial().await;
    let (cluster, client) = cluster_up(options()).await?;
    let mut bad = spec(1, 1, 1000);
    bad.participants.as_mut().unwrap().min_participants = 0;
    let error = client.start_federation(bad, "").await.unwrap_err();
    assert_eq!(error.code(), Some(Code::InvalidArgument), "{error}");
    assert!(error.to_string().contains("min_participants"), "{error}");
    let mut wrong_inline = spec(1, 1, 1000);
    wrong_inline
        .initial_model
        .as_mut()
        .unwrap()
        .inline_data
        .pop();
    let error = client.start_federation(wrong_inline, "").await.unwrap_err();
    assert!(error.to_string().contains("inline_data"), "{error}");

    // One slow honest participant keeps the round open while an intruder tries its luck.
    let stop = CancellationToken::new();
    let open = OpenRound::start(&cluster, &client, Duration::from_millis(1500), &stop).await?;
    let (id, as_participant) = (&open.id, &open.as_participant);
    let header = |tensors: Vec<TensorSpec>| open.header(&tensors);
    // Someone else acting as the participant.
    let poison = UpdateUpload {
        header: header(specs()),
        payload: into_le_bytes(vec![1000.0f32; 6]),
    };
    let error = client.submit_update(poison.clone()).await.unwrap_err();
    assert_eq!(error.code(), Some(Code::PermissionDenied), "{error}");
    // Sent to a follower, the update is redirected to the leader and refused there alike.
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await?;
    let follower = cluster.ids().into_iter().find(|&m| m != leader).unwrap();
    let via_follower = Client::new([cluster.addr(follower)])?;
    let error = via_follower
        .submit_update(poison.clone())
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(Code::PermissionDenied), "{error}");
    assert!(error.to_string().contains("agent_id"), "{error}");
    // Wrong shape, from the participant itself.
    let mut wrong = specs();
    wrong[1].shape = vec![3];
    let upload = UpdateUpload {
        header: header(wrong),
        payload: into_le_bytes(vec![9.0f32; 7]),
    };
    let error = as_participant.submit_update(upload).await.unwrap_err();
    assert_eq!(error.code(), Some(Code::InvalidArgument), "{error}");
    assert!(
        error
            .to_string()
            .contains("b F32[2] expected, b F32[3] received"),
        "{error}"
    );
    // A bad checksum.
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await?;
    let channel = as_participant.channel(cluster.addr(leader))?;
    let mut declared = header(specs());
    let poisoned = into_le_bytes(vec![1000.0f32; 6]);
    declared.blob = Some(pb::BlobInfo {
        size_bytes: 24,
        crc32: crc32(&poisoned) ^ 1,
        ..Default::default()
    });
    let messages = vec![
        pb::SubmitUpdateRequest {
            part: Some(pb::submit_update_request::Part::Header(declared)),
        },
        pb::SubmitUpdateRequest {
            part: Some(pb::submit_update_request::Part::Chunk(pb::Chunk {
                offset: 0,
                data: poisoned,
                last: true,
            })),
        },
    ];
    let status = FederationServiceClient::new(channel)
        .submit_update(as_participant.request(tokio_stream::iter(messages)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("blob.crc32"), "{status:?}");
    // The honest update still lands and is the only one aggregated.
    wait_completed(&client, id).await?;
    let (_, model) = client.download_model(id, None).await?;
    assert_eq!(model.values, vec![1.0; 6], "only the honest update counts");
    // A finished round takes no more updates.
    let late = as_participant.submit_update(poison).await?;
    assert!(!late.accepted);
    assert_eq!(late.rejection_reason, "round closed");
    stop.cancel();
    Ok(())
}

/// The leader admits an update (its reply's headers) before it reads the payload, and an SDK
/// participant sends the payload only then: the upload lands long before the participant
/// would send it unasked, and the payload it then sends is the one aggregated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_admits_an_update_before_its_payload_is_sent() -> anyhow::Result<()> {
    let _serial = serial().await;
    let (cluster, client) = cluster_up(options()).await?;
    let stop = CancellationToken::new();
    // The participant's own update comes too late to count.
    let open = OpenRound::start(&cluster, &client, Duration::from_secs(5), &stop).await?;
    let upload = UpdateUpload {
        header: open.header(&specs()),
        payload: into_le_bytes(vec![2.0f32; 6]),
    };
    let started = Instant::now();
    let answer = open.as_participant.submit_update(upload).await?;
    let took = started.elapsed();
    assert!(answer.accepted, "{answer:?}");
    // Without the go-ahead the participant would have held its payload for this long.
    let unprompted = open.as_participant.policy().attempt_timeout / 2;
    assert!(
        took < unprompted,
        "the upload took {took:?}: its payload waited for the leader's go-ahead in vain"
    );
    wait_completed(&client, &open.id).await?;
    let (_, model) = client.download_model(&open.id, None).await?;
    assert_eq!(
        model.values,
        vec![2.0; 6],
        "the admitted payload is aggregated"
    );
    stop.cancel();
    Ok(())
}

/// Every event of a federation so far.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_rounds_model_is_served_on_every_replica_once_it_commits() -> anyhow::Result<()> {
    let _serial = serial().await;
    let (cluster, client) = cluster_up(options()).await?;
    let leader = cluster.wait_for_leader(Duration::from_secs(30)).await?;
    let stop = CancellationToken::new();
    let steppers = steppers(&[(1.0, 1), (3.0, 1)], Duration::from_millis(400));
    start_participants(&cluster, steppers, &stop);
    wait_for_agents(&client, 2).await?;
    let started = client.start_federation(spec(3, 2, 20_000), "next").await?;
    let id = started.federation.unwrap().federation_id;
    let committed = wait_until(FEDERATION_TIMEOUT, "round 1 to commit", || async {
        let f = client.get_federation(&id).await.ok()?;
        (f.committed_round >= 1).then_some(f.committed_round)
    })
    .await?;
    // Asked for the model still being trained, every replica waits for its commit and serves
    // it; a round further on is refused at once.
    for member in cluster.ids() {
        let pinned = Client::new([cluster.addr(member)])?;
        let (round, model) = pinned.download_model(&id, Some(committed + 1)).await?;
        assert_eq!(round, committed + 1, "from node {member} (leader {leader})");
        let expected = 2.0 * round as f32;
        assert!(
            model.values.iter().all(|v| (v - expected).abs() < 1e-4),
            "round {round} from node {member}: {:?}",
            model.values
        );
        let beyond = pinned
            .download_model(&id, Some(round + 2))
            .await
            .unwrap_err();
        assert_eq!(beyond.code(), Some(Code::NotFound), "{beyond}");
    }
    let done = wait_finished(&client, &id).await?;
    assert_eq!(done.committed_round, 3, "{done:?}");
    stop.cancel();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_behind_the_leaders_commit_waits_for_the_next_model() -> anyhow::Result<()> {
    let _serial = serial().await;
    // Elections far slower than the freeze below, so that the frozen follower neither loses
    // its place nor deposes the leader when it runs again.
    let slow_elections = NodeOptions {
        election_timeout_min_ms: 5_000,
        ..options()
    };
    // A leader may take up to two of these timeouts to emerge.
    let cluster = start_cluster(3, slow_elections)?;
    let leader = cluster.wait_for_leader(Duration::from_secs(30)).await?;
    let client = cluster.client()?;
    let follower = *cluster.ids().iter().find(|&&id| id != leader).unwrap();
    let stop = CancellationToken::new();
    let steppers = steppers(&[(1.0, 1), (3.0, 1)], Duration::from_millis(1500));
    start_participants(&cluster, steppers, &stop);
    wait_for_agents(&client, 2).await?;
    let id = start(&client, spec(3, 2, 20_000)).await?;
    // The follower knows the federation (it serves the initial model), then freezes while
    // round 1 still trains, so it misses round 1's commit.
    let on_follower = Client::new([cluster.addr(follower)])?;
    wait_until(
        FEDERATION_TIMEOUT,
        "the follower to apply the start",
        || async { on_follower.download_model(&id, Some(0)).await.ok() },
    )
    .await?;
    cluster.pause(follower)?;
    let on_leader = Client::new([cluster.addr(leader)])?;
    let before = on_leader.get_federation(&id).await?.committed_round;
    anyhow::ensure!(before == 0, "round {before} committed before the freeze");
    let committed = wait_until(FEDERATION_TIMEOUT, "round 1 to commit", || async {
        let f = on_leader.get_federation(&id).await.ok()?;
        (f.committed_round >= 1).then_some(f.committed_round)
    })
    .await?;
    // Asked while frozen, the follower sees the request only once it runs again, before it has
    // applied the commit: it waits for that commit instead of refusing the round.
    let asked = tokio::spawn({
        let id = id.clone();
        async move { on_follower.download_model(&id, Some(committed + 1)).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    cluster.resume(follower)?;
    let (round, model) = asked.await??;
    assert_eq!(round, committed + 1);
    let expected = 2.0 * round as f32;
    assert!(
        model.values.iter().all(|v| (v - expected).abs() < 1e-4),
        "round {round} from the follower: {:?}",
        model.values
    );
    let done = wait_completed(&client, &id).await?;
    assert_eq!(done.committed_round, 3, "{done:?}");
    stop.cancel();
    Ok(())
}

async fn history(client: &Client, id: &str) -> anyhow::Result<Vec<pb::FederationEvent>> {
    let last = client.get_federation(id).await?.last_sequence;
    let mut stream = client.watch_federation(id, 0).await?;
    let mut events = Vec::new();
    while (events.len() as u64) < last {
        match stream.message().await? {
            Some(event) => events.push(event),
            None => break,
        }
    }
    Ok(events)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn training_survives_the_leaders_kill_with_every_committed_round_intact() -> anyhow::Result<()>
{
    let _serial = serial().await;
    let (mut cluster, client) = cluster_up(options()).await?;
    let stop = CancellationToken::new();
    let steppers = steppers(
        &[(1.0, 10), (2.0, 30), (4.0, 60)],
        Duration::from_millis(1000),
    );
    start_participants(&cluster, steppers, &stop);
    wait_for_agents(&client, 3).await?;
    let id = start(&client, spec(4, 3, 30_000)).await?;
    // Let two rounds commit, then kill the leader while round 3 trains.
    wait_until(FEDERATION_TIMEOUT, "round 3 to train", || async {
        let round = client.get_round(&id, 3).await.ok()?;
        (round.state == pb::RoundState::Training as i32).then_some(())
    })
    .await?;
    let before = committed_rounds(&client, &id, 2).await?;
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await?;
    cluster.kill(leader)?;
    let done = wait_completed(&client, &id).await?;
    assert_eq!(done.committed_round, 4);
    let after = committed_rounds(&client, &id, 4).await?;
    for (old, new) in before.iter().zip(&after) {
        assert_eq!(old.model, new.model, "round {} changed", old.round);
        assert_eq!(old.attempt, new.attempt);
    }
    // Four rounds of 3.1 each, however many attempts they took.
    let (_, model) = client.download_model(&id, None).await?;
    for value in &model.values {
        assert!((value - 12.4).abs() < 1e-4, "{:?}", model.values);
    }
    let events = history(&client, &id).await?;
    let restarted = events.iter().any(|e| {
        matches!(&e.kind, Some(pb::federation_event::Kind::RoundFailed(f))
            if f.round == 3 && f.reason.contains("leader changed") && f.will_retry)
    });
    assert!(
        restarted,
        "round 3 restarts under the new leader: {events:#?}"
    );
    assert!(after[2].attempt >= 2, "{:?}", after[2]);
    stop.cancel();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_past_its_deadline_commits_without_its_late_participant() -> anyhow::Result<()> {
    let _serial = serial().await;
    let (cluster, client) = cluster_up(options()).await?;
    let stop = CancellationToken::new();
    let mut steppers = steppers(&[(1.0, 1), (3.0, 1), (100.0, 1)], Duration::ZERO);
    steppers[2].delay = Duration::from_secs(10);
    start_participants(&cluster, steppers, &stop);
    wait_for_agents(&client, 3).await?;
    let id = start(&client, spec(1, 2, 2_000)).await?;
    wait_completed(&client, &id).await?;
    let round = client.get_round(&id, 1).await?;
    let states: Vec<(i32, &str)> = round
        .participants
        .iter()
        .map(|p| (p.state, p.reason.as_str()))
        .collect();
    let dropped = (pb::ParticipantState::Dropped as i32, "deadline passed");
    assert_eq!(
        states.iter().filter(|s| **s == dropped).count(),
        1,
        "{states:?}"
    );
    let (_, model) = client.download_model(&id, None).await?;
    assert!(
        model.values.iter().all(|v| (v - 2.0).abs() < 1e-4),
        "{model:?}"
    );
    stop.cancel();
    Ok(())
}

/// Steps like [`Stepper`] and reports each round it starts training.
struct Reporter {
    step: f32,
    started: tokio::sync::mpsc::UnboundedSender<u32>,
}

impl Participant for Reporter {
    fn fit(&self, request: &FitRequest) -> Result<FitResult, String> {
        let _ = self.started.send(request.round);
        std::thread::sleep(Duration::from_millis(300));
        Ok(FitResult {
            weights: request.map_weights(|w| w + self.step),
            num_examples: 1,
            metrics: BTreeMap::new(),
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_killed_as_the_next_round_opens_behind_a_commit_loses_no_round(
) -> anyhow::Result<()> {
    let _serial = serial().await;
    let (mut cluster, client) = cluster_up(options()).await?;
    let stop = CancellationToken::new();
    let (started, mut training) = tokio::sync::mpsc::unbounded_channel();
    for (i, step) in [1.0f32, 3.0].into_iter().enumerate() {
        let reporter = Reporter {
            step,
            started: started.clone(),
        };
        let agent = AgentBuilder::new(format!("r{i}"), cluster.addrs())
            .capability("fl")
            .participant(reporter);
        let token = stop.clone();
        tokio::spawn(async move { agent.run(token).await });
    }
    wait_for_agents(&client, 2).await?;
    // A 4 MB model: its commit takes long enough for the next round to open behind it.
    let params = 1_000_000;
    let model = Model::new(
        vec![TensorSpec::f32("w", &[params])],
        vec![0.0; params as usize],
    )?;
    // A round whose invitation the participants took for the dead leader's one ends at its
    // deadline and is retried.
    let mut spec = spec(4, 2, 8_000);
    spec.initial_model = None;
    let id = client
        .start_federation_with_model(spec, &model, "")
        .await?
        .federation_id;
    // The moment round 2's training starts, its start and round 1's commit may still be on
    // their way through the log: the leader dies there.
    let round_two = async { while training.recv().await != Some(2) {} };
    tokio::time::timeout(FEDERATION_TIMEOUT, round_two).await?;
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await?;
    cluster.kill(leader)?;
    let done = wait_completed(&client, &id).await?;
    assert_eq!(done.committed_round, 4);
    // Four rounds of (1 + 3) / 2 = 2 each, each committed exactly once.
    let (_, model) = client.download_model(&id, None).await?;
    assert!(model.values.iter().all(|v| (v - 8.0).abs() < 1e-4));
    let events = history(&client, &id).await?;
    let mut committed: Vec<u32> = events
        .iter()
        .filter_map(|e| match &e.kind {
            Some(pb::federation_event::Kind::RoundCommitted(c)) => Some(c.round),
            _ => None,
        })
        .collect();
    committed.sort();
    assert_eq!(committed, vec![1, 2, 3, 4], "{events:#?}");
    for round in committed_rounds(&client, &id, 4).await? {
        assert_eq!(round.state, pb::RoundState::Committed as i32, "{round:?}");
    }
    stop.cancel();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_killed_mid_round_is_dropped_and_the_round_completes() -> anyhow::Result<()> {
    let _serial = serial().await;
    let (cluster, client) = cluster_up(options()).await?;
    let stop = CancellationToken::new();
    let steppers = steppers(&[(1.0, 10), (3.0, 10)], Duration::ZERO);
    start_participants(&cluster, steppers, &stop);
    let (_dir, mut slow) = synod_tests::jobs::start_agent_process(
        &cluster,
        "[[agents]]\nname = \"slow\"\ncapabilities = [\"fl\"]\n\
         participant = { step = 100.0, examples = 1000, delay_ms = 20000 }\n",
    )?;
    wait_for_agents(&client, 3).await?;
    let id = start(&client, spec(2, 2, 40_000)).await?;
    let first = wait_until(Duration::from_secs(10), "round 1 to start", || async {
        client.get_round(&id, 1).await.ok()
    })
    .await?;
    assert_eq!(first.participants.len(), 3);
    slow.kill()?;
    let _ = slow.wait();
    wait_completed(&client, &id).await?;
    let round = client.get_round(&id, 1).await?;
    assert_eq!(round.attempt, 1, "the round completed without a retry");
    let dropped = in_state(&round, pb::ParticipantState::Dropped);
    assert_eq!(dropped.len(), 1, "{round:?}");
    assert_eq!(dropped[0].reason, "agent lost");
    // Two rounds of (1 + 3) / 2: the killed participant's step never counts.
    let (_, model) = client.download_model(&id, None).await?;
    assert_eq!(model.values, vec![4.0; 6]);
    stop.cancel();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_finite_update_is_refused_as_it_arrives_and_rounds_complete_without_it(
) -> anyhow::Result<()> {
    let _serial = serial().await;
    let (cluster, client) = cluster_up(options()).await?;
    let stop = CancellationToken::new();
    let steppers = steppers(&[(1.0, 10), (f32::NAN, 10)], Duration::ZERO);
    start_participants(&cluster, steppers, &stop);
    wait_for_agents(&client, 2).await?;
    let id = start(&client, spec(2, 1, 40_000)).await?;
    wait_completed(&client, &id).await?;
    for number in 1..=2 {
        let round = client.get_round(&id, number).await?;
        let rejected = in_state(&round, pb::ParticipantState::Rejected);
        assert_eq!(rejected.len(), 1, "{round:?}");
        assert_eq!(
            rejected[0].reason, "update value at index 0 is not finite",
            "{round:?}"
        );
    }
    let (_, model) = client.download_model(&id, None).await?;
    assert_eq!(model.values, vec![2.0; 6], "only the finite steps count");
    stop.cancel();
    Ok(())
}

/// The participants of `round` in `state`.
fn in_state(round: &pb::Round, state: pb::ParticipantState) -> Vec<&pb::RoundParticipant> {
    round
        .participants
        .iter()
        .filter(|p| p.state == state as i32)
        .collect()
}

/// Steppers of (step, examples), each taking `delay` to fit.
fn steppers(steps: &[(f32, u64)], delay: Duration) -> Vec<Stepper> {
    steps
        .iter()
        .map(|&(step, examples)| Stepper {
            step,
            examples,
            delay,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secure_aggregation_sums_survivors_after_a_participant_drops_out() -> anyhow::Result<()> {
    let _serial = serial().await;
    let (cluster, client) = cluster_up(options()).await?;
    let stop = CancellationToken::new();
    start_participants(
        &cluster,
        steppers(&[(1.0, 1), (2.0, 1), (3.0, 1)], Duration::ZERO),
        &stop,
    );
    let (_dir, mut dropout) = synod_tests::jobs::start_agent_process(
        &cluster,
        "[[agents]]\nname = \"dropout\"\ncapabilities = [\"fl\"]\n\
         participant = { step = 100.0, examples = 1, delay_ms = 30000 }\n",
    )?;
    wait_for_agents(&client, 4).await?;
    let mut secure = spec(1, 3, 60_000);
    secure.privacy = Some(pb::PrivacyConfig {
        secure_aggregation: Some(pb::SecureAggregation {
            threshold: 2,
            phase_timeout_ms: 10_000,
            ..Default::default()
        }),
        ..Default::default()
    });
    let id = start(&client, secure).await?;
    // Once every key is shared the dropout's masks are in the others' updates: kill it.
    wait_until(
        Duration::from_secs(20),
        "training with 4 key holders",
        || async {
            let round = client.get_round(&id, 1).await.ok()?;
            let training = round.state == pb::RoundState::Training as i32;
            (training && round.participants.len() == 4).then_some(())
        },
    )
    .await?;
    dropout.kill()?;
    let _ = dropout.wait();
    wait_completed(&client, &id).await?;
    let round = client.get_round(&id, 1).await?;
    assert_eq!(round.attempt, 1, "{round:?}");
    let revealed = round
        .participants
        .iter()
        .filter(|p| p.unmask_shares_submitted)
        .count();
    assert!(
        revealed >= 2,
        "survivors revealed the dropout's shares: {round:?}"
    );
    // Equal weights: (1 + 2 + 3) / 3 = 2, up to the fixed-point step of 1/65536 per update.
    let (_, model) = client.download_model(&id, None).await?;
    for value in &model.values {
        assert!((value - 2.0).abs() < 1e-3, "{:?}", model.values);
    }
    stop.cancel();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fed_median_resists_a_poisoned_participant() -> anyhow::Result<()> {
    let _serial = serial().await;
    let (cluster, client) = cluster_up(options()).await?;
    let stop = CancellationToken::new();
    start_participants(
        &cluster,
        steppers(&[(1.0, 1), (2.0, 1), (1000.0, 1000)], Duration::ZERO),
        &stop,
    );
    wait_for_agents(&client, 3).await?;
    let mut robust = spec(2, 3, 20_000);
    robust.strategy = Some(pb::AggregationStrategy {
        strategy: Some(pb::aggregation_strategy::Strategy::FedMedian(
            pb::FedMedian {},
        )),
    });
    let id = start(&client, robust).await?;
    wait_completed(&client, &id).await?;
    // The median of (1, 2, 1000) is 2 each round; FedAvg would have moved ~999 per round.
    let (_, model) = client.download_model(&id, None).await?;
    assert_eq!(model.values, vec![4.0; 6]);
    stop.cancel();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn central_dp_reports_the_privacy_spent_and_stops_at_its_budget() -> anyhow::Result<()> {
    use synod_coordinator::aggregation::epsilon;
    let _serial = serial().await;
    let (cluster, client) = cluster_up(options()).await?;
    let stop = CancellationToken::new();
    start_participants(
        &cluster,
        steppers(&[(0.1, 1), (0.2, 1)], Duration::ZERO),
        &stop,
    );
    wait_for_agents(&client, 2).await?;
    let (sigma, delta) = (1.5, 1e-5);
    let (two, three) = (epsilon(sigma, 1.0, 2, delta), epsilon(sigma, 1.0, 3, delta));
    let mut private = spec(10, 2, 20_000);
    private.privacy = Some(pb::PrivacyConfig {
        central_dp: Some(pb::CentralDp {
            clip_norm: 1.0,
            noise_multiplier: sigma,
            delta,
            max_epsilon: (two + three) / 2.0,
        }),
        ..Default::default()
    });
    let id = start(&client, private).await?;
    let done = wait_completed(&client, &id).await?;
    assert_eq!(
        done.committed_round, 2,
        "a third round would pass the budget"
    );
    assert_eq!(done.state_reason, "privacy budget reached");
    let rounds = committed_rounds(&client, &id, 2).await?;
    assert!((rounds[0].epsilon_spent - epsilon(sigma, 1.0, 1, delta)).abs() < 1e-9);
    assert!((rounds[1].epsilon_spent - two).abs() < 1e-9, "{rounds:?}");
    assert!((done.epsilon_spent - two).abs() < 1e-9);
    stop.cancel();
    Ok(())
}
