//! `bench coordination`: how fast a 3-node cluster of real `synod` processes decides a vote
//! among many agents and releases a barrier with many parties.
//!
//! ```text
//!   LocalCluster (3 processes) ─► N SDK agents, each voting for the first option
//!   vote round:    OpenVote (N voters, majority) ─► watch ─► decided: open-to-decision time
//!   barrier round: N - 1 parties wait ─► the last arrives ─► every waiter released:
//!                  last-arrival-to-release time (the slowest waiter's)
//!   report: every round, and the medians against the issue's 50 ms target
//! ```

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use serde::Serialize;
use synod_coordinator::local_cluster::{LocalCluster, NodeOptions};
use synod_sdk::agent::AgentBuilder;
use synod_sdk::proto as pb;
use synod_sdk::Client;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Flags of `bench coordination`.
#[derive(Args, Serialize, Debug, Clone)]
pub struct CoordinationArgs {
    /// Connected agents, all eligible voters.
    #[arg(long, default_value_t = 1_000)]
    pub voters: usize,
    /// Parties of the barrier.
    #[arg(long, default_value_t = 1_000)]
    pub parties: usize,
    /// Measured rounds of each.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Connections the agents' sessions share (0: one per agent, as separate processes have).
    #[arg(long, default_value_t = 0)]
    pub connections: usize,
    /// Also print the results as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// What was measured.
#[derive(Debug, Clone, Serialize)]
pub struct CoordinationReport {
    /// The flags.
    pub args: CoordinationArgs,
    /// Open-to-decision time of each vote, ms.
    pub vote_ms: Vec<f64>,
    /// Last-arrival-to-release time of each barrier generation, ms.
    pub barrier_ms: Vec<f64>,
}

/// The middle value of `values` (the upper one of an even count).
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(0.0)
}

impl CoordinationReport {
    /// The report as text.
    pub fn render(&self) -> String {
        let list = |values: &[f64]| {
            let shown: Vec<String> = values.iter().map(|v| format!("{v:.1}")).collect();
            shown.join(" · ")
        };
        format!(
            "vote among {} voters, open to decided (majority): median {:.1} ms (rounds {})\n\
             barrier of {} parties, last arrival to every release: median {:.1} ms (rounds {})\n\
             target: below 50 ms each",
            self.args.voters,
            median(&self.vote_ms),
            list(&self.vote_ms),
            self.args.parties,
            median(&self.barrier_ms),
            list(&self.barrier_ms),
        )
    }
}

/// Runs the bench against a cluster of `binary`; progress on stderr.
pub async fn run(args: &CoordinationArgs, binary: &Path) -> anyhow::Result<CoordinationReport> {
    if args.voters == 0 || args.parties < 2 || args.rounds == 0 {
        bail!("--voters must be positive, --parties at least 2 and --rounds positive");
    }
    let options = NodeOptions {
        log: "warn".into(),
        ..NodeOptions::default()
    };
    let cluster = LocalCluster::start(binary, 3, options)?;
    cluster.wait_for_leader(Duration::from_secs(60)).await?;
    let client = cluster.client()?;
    let stop = CancellationToken::new();
    eprintln!("starting {} voting agents", args.voters);
    let voters = start_voters(&cluster, &client, args, &stop).await?;
    let mut vote_ms = Vec::new();
    for round in 1..=args.rounds {
        let ms = vote_round(&client, &voters)
            .await
            .with_context(|| format!("vote round {round}"))?;
        eprintln!("  vote {round}: decided in {ms:.1} ms");
        vote_ms.push(ms);
    }
    let mut barrier_ms = Vec::new();
    let clients: Vec<Client> = (0..16)
        .map(|_| cluster.client())
        .collect::<Result<_, _>>()?;
    let request = pb::CreateBarrierRequest {
        name: "bench".into(),
        kind: pb::BarrierKind::Single as i32,
        parties: Some(pb::create_barrier_request::Parties::PartyCount(
            args.parties as u32,
        )),
        timeout_ms: 0,
        cyclic: true,
    };
    client.create_barrier(request).await?;
    for round in 1..=args.rounds {
        let ms = barrier_round(&client, &clients, args.parties)
            .await
            .with_context(|| format!("barrier round {round}"))?;
        eprintln!("  barrier {round}: released in {ms:.1} ms");
        barrier_ms.push(ms);
    }
    stop.cancel();
    Ok(CoordinationReport {
        args: args.clone(),
        vote_ms,
        barrier_ms,
    })
}

/// Starts `count` agents voting for the first option; returns their ids once all connected.
async fn start_voters(
    cluster: &LocalCluster,
    client: &Client,
    args: &CoordinationArgs,
    stop: &CancellationToken,
) -> anyhow::Result<Vec<String>> {
    let count = args.voters;
    let shared: Vec<Client> = (0..args.connections)
        .map(|_| cluster.client())
        .collect::<Result<_, _>>()?;
    for i in 0..count {
        let agent = AgentBuilder::new(format!("voter-{i}"), cluster.addrs())
            .ballot_handler(|request: &pb::VoteRequest| request.options.first().cloned());
        let stop = stop.clone();
        match shared.get(i % shared.len().max(1)).cloned() {
            Some(client) => tokio::spawn(async move { agent.run_on(client, stop).await }),
            None => tokio::spawn(async move { agent.run(stop).await }),
        };
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let agents = client.list_agents().await?;
        let connected: Vec<String> = agents
            .into_iter()
            .filter(|a| a.state == pb::AgentState::Connected as i32)
            .map(|a| a.agent_id)
            .collect();
        if connected.len() >= count {
            return Ok(connected);
        }
        if Instant::now() > deadline {
            bail!("only {} of {count} agents connected", connected.len());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Opens a majority vote among `voters` and times it until it is decided.
async fn vote_round(client: &Client, voters: &[String]) -> anyhow::Result<f64> {
    let request = pb::OpenVoteRequest {
        question: "Proceed?".into(),
        options: vec!["yes".into(), "no".into()],
        voters: Some(pb::open_vote_request::Voters::AgentIds(pb::AgentIdList {
            agent_ids: voters.to_vec(),
        })),
        timeout_ms: 60_000,
        rule: Some(pb::VoteRule {
            rule: Some(pb::vote_rule::Rule::Majority(pb::MajorityRule {})),
        }),
        idempotency_key: String::new(),
    };
    let started = Instant::now();
    let vote = client.open_vote(request).await?;
    let closed = client.watch_vote(&vote.vote_id, |_| {}).await?;
    let elapsed = started.elapsed();
    if closed.state != pb::VoteState::Decided as i32 {
        bail!("the vote ended {}: {}", closed.state, closed.state_reason);
    }
    eprintln!(
        "    opened → decided on the leader's clock: {} ms",
        closed.closed_at_ms.saturating_sub(closed.opened_at_ms)
    );
    Ok(elapsed.as_secs_f64() * 1000.0)
}

/// One barrier generation: all but one party wait, then the last one arrives; times the last
/// arrival to the slowest release.
async fn barrier_round(client: &Client, clients: &[Client], parties: usize) -> anyhow::Result<f64> {
    let generation = client.get_barrier("bench").await?.generation;
    let released: Arc<std::sync::Mutex<Vec<Instant>>> = Arc::default();
    let mut waiters = Vec::new();
    for i in 0..parties - 1 {
        let client = clients[i % clients.len()].clone();
        let released = released.clone();
        waiters.push(tokio::spawn(async move {
            let result = client.arrive_barrier("bench", &format!("party-{i}")).await;
            released.lock().expect("lock").push(Instant::now());
            result
        }));
    }
    loop {
        let barrier = client.get_barrier("bench").await?;
        if barrier.generation != generation {
            bail!("the generation moved on before the last arrival");
        }
        if barrier.arrived_party_ids.len() == parties - 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let last_arrival = Instant::now();
    let last = client.arrive_barrier("bench", "last").await?;
    let last_released = Instant::now();
    for waiter in waiters {
        let result = waiter.await??;
        if result.outcome != pb::BarrierOutcome::Released as i32 {
            bail!("a party's wait ended {}: {}", result.outcome, result.reason);
        }
    }
    if last.outcome != pb::BarrierOutcome::Released as i32 {
        bail!("the last party's wait ended {}", last.outcome);
    }
    let slowest = released
        .lock()
        .expect("lock")
        .iter()
        .copied()
        .chain([last_released])
        .max()
        .unwrap_or(last_released);
    Ok(slowest.duration_since(last_arrival).as_secs_f64() * 1000.0)
}
