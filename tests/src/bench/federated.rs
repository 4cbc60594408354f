//! `bench federated`: seconds per FedAvg round with N participants × P parameters (trivial
//! local training) on a cluster of real `synod` processes (3 nodes; `--nodes 1,3` adds a
//! single node, the topology of Flower's one server), the leader's peak memory, FedAvg's
//! aggregation throughput in process and the host's floor (the round's bytes over plain
//! loopback TCP); with `--flower`, the same workload on Flower's legacy gRPC server and
//! clients in the same run.
//!
//! ```text
//!   per (N, P): fresh cluster ─► N SDK participants (a connection each) ─► federation
//!     of R rounds ─► watch: RoundCommitted arrival times ─► s/round = median interval after
//!     the warm-up ─► CPU of every node and the bench over those rounds (/proc) ─► leader
//!     VmHWM (peak RSS) and its RSS before the federation
//!   aggregation: RoundAggregator(FedAvg) over N updates of P, one or 4 per pass ─► bytes / s
//!   floor: N models out and N updates back over plain sockets (socket_floor) ─► s/round
//! ```

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use serde::Serialize;
use synod_coordinator::aggregation::{RoundAggregator, ServerState, Strategy};
use synod_coordinator::local_cluster::{wait_until, LocalCluster, NodeOptions};
use synod_sdk::agent::{AgentBuilder, FitRequest, FitResult, Participant};
use synod_sdk::proto as pb;
use synod_sdk::tensors::{Model, TensorSpec};
use synod_sdk::Client;
use tokio_util::sync::CancellationToken;

use super::coordination::median;
use super::cpu::CpuSample;
use super::flower::{baseline_script, ensure_flower_env, run_flower, FlowerOptions};
use super::socket_floor;

/// Flags of `bench federated`.
#[derive(Args, Serialize, Debug, Clone)]
pub struct FederatedArgs {
    /// Participant counts to measure.
    #[arg(long, value_delimiter = ',', default_value = "10,50")]
    pub participants: Vec<usize>,
    /// Model sizes (parameters) to measure.
    #[arg(long, value_delimiter = ',', default_value = "100000,1000000")]
    pub params: Vec<usize>,
    /// Cluster sizes to measure each configuration on (1 is a single node, as Flower runs one
    /// server; 3 and 5 replicate every round's model).
    #[arg(long, value_delimiter = ',', default_value = "3")]
    pub nodes: Vec<u64>,
    /// Rounds per federation, warm-up included.
    #[arg(long, default_value_t = 12)]
    pub rounds: u32,
    /// Rounds left out of the timing.
    #[arg(long, default_value_t = 2)]
    pub warmup: u32,
    /// Also run Flower (flwr from PyPI, installed into a venv under target/) on each size.
    #[arg(long)]
    pub flower: bool,
    /// Also print the results as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// One measured configuration.
#[derive(Debug, Clone, Serialize)]
pub struct FederatedRun {
    /// System measured.
    pub system: String,
    /// Participants per round.
    pub participants: usize,
    /// Model parameters.
    pub params: usize,
    /// Median seconds per round after the warm-up.
    pub seconds_per_round: f64,
    /// Every measured round interval, seconds.
    pub rounds: Vec<f64>,
    /// Peak RSS of the coordinator (Synod: the leader; Flower: its server), bytes.
    pub peak_rss_bytes: u64,
    /// Peak RSS above the coordinator's RSS before the run (Flower: before any client
    /// connected), bytes.
    pub peak_above_start_bytes: Option<u64>,
    /// CPU per timed round (Synod only), where `/proc` can tell.
    pub cpu: Option<RoundCpu>,
}

/// CPU seconds per timed round, from `/proc/<pid>/stat` at the first and last timed commits.
#[derive(Debug, Clone, Serialize)]
pub struct RoundCpu {
    /// Every node and the bench process with its participants.
    pub all_seconds: f64,
    /// The leader alone.
    pub leader_seconds: f64,
    /// Busy share of the whole machine over those rounds, % of all cores.
    pub machine_busy_pct: Option<f64>,
}

/// What was measured.
#[derive(Debug, Clone, Serialize)]
pub struct FederatedReport {
    /// The flags.
    pub args: FederatedArgs,
    /// Rounds, per system and configuration.
    pub runs: Vec<FederatedRun>,
    /// FedAvg aggregation throughput.
    pub aggregation: Vec<AggregationRun>,
    /// The host's floor: a round's model and update bytes over plain loopback TCP.
    pub floors: Vec<FloorRun>,
}

/// A round's bytes over plain loopback TCP (see `socket_floor`).
#[derive(Debug, Clone, Serialize)]
pub struct FloorRun {
    /// Participants per round.
    pub participants: usize,
    /// Model parameters.
    pub params: usize,
    /// Median seconds per round.
    pub seconds_per_round: f64,
}

/// Updates folded per pass in the batched aggregation measurement: as many as the leader holds
/// in memory at once for 1M-parameter updates.
const AGGREGATION_BATCH: usize = 4;

/// FedAvg folding in process.
#[derive(Debug, Clone, Serialize)]
pub struct AggregationRun {
    /// Updates folded.
    pub participants: usize,
    /// Parameters per update.
    pub params: usize,
    /// Updates per pass over the sum.
    pub batch: usize,
    /// Update bytes folded per second, GB/s.
    pub gb_per_s: f64,
}

/// Moves every weight by a tiny step.
struct Trivial;

impl Participant for Trivial {
    fn fit(&self, request: &FitRequest) -> Result<FitResult, String> {
        Ok(FitResult {
            weights: request.map_weights(|w| w + 0.001),
            num_examples: 100,
            metrics: BTreeMap::new(),
        })
    }
}

/// Runs the bench against clusters of `binary`; progress on stderr.
pub async fn run(
    args: &FederatedArgs,
    binary: &std::path::Path,
) -> anyhow::Result<FederatedReport> {
    if args.rounds <= args.warmup + 1 {
        bail!("--rounds must exceed --warmup + 1");
    }
    if args.nodes.contains(&0) {
        bail!("--nodes: a cluster has at least one node");
    }
    let mut report = FederatedReport {
        args: args.clone(),
        runs: Vec::new(),
        aggregation: Vec::new(),
        floors: Vec::new(),
    };
    super::participant_heap::keep_freed_memory();
    let flower = match args.flower {
        true => Some(ensure_flower_env(&venv_dir())?),
        false => None,
    };
    for &params in &args.params {
        for &participants in &args.participants {
            for &nodes in &args.nodes {
                eprintln!(
                    "synod, {nodes} node(s): {participants} participants × {params} parameters"
                );
                report
                    .runs
                    .push(run_synod(binary, nodes, participants, params, args).await?);
            }
            for batch in [1, AGGREGATION_BATCH] {
                report.aggregation.push(AggregationRun {
                    participants,
                    params,
                    batch,
                    gb_per_s: aggregation_gb_per_s(participants, params, batch),
                });
            }
            let (rounds, warmup) = ((args.rounds - 1) as usize, args.warmup as usize);
            let floor = tokio::task::spawn_blocking(move || {
                socket_floor::round_seconds(participants, params, rounds, warmup)
            })
            .await??;
            report.floors.push(FloorRun {
                participants,
                params,
                seconds_per_round: floor,
            });
            if let Some(python) = &flower {
                eprintln!("flower: {participants} participants × {params} parameters");
                let options = FlowerOptions {
                    participants,
                    params,
                    // The same rounds Synod's median is taken over.
                    rounds: (args.rounds - args.warmup - 1) as usize,
                    warmup: args.warmup as usize,
                };
                let result = run_flower(python, &baseline_script(), &options)?;
                report.runs.push(FederatedRun {
                    system: format!("flower {}", result.flwr_version),
                    participants,
                    params,
                    seconds_per_round: result.seconds_per_round_median,
                    rounds: result.seconds_per_round,
                    peak_rss_bytes: result.server_peak_rss_bytes,
                    peak_above_start_bytes: result
                        .server_idle_rss_bytes
                        .map(|idle| result.server_peak_rss_bytes.saturating_sub(idle)),
                    cpu: None,
                });
            }
        }
    }
    Ok(report)
}

fn venv_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-venv")
}

async fn run_synod(
    binary: &std::path::Path,
    nodes: u64,
    participants: usize,
    params: usize,
    args: &FederatedArgs,
) -> anyhow::Result<FederatedRun> {
    let options = NodeOptions {
        log: "warn".into(),
        ..NodeOptions::default()
    };
    let cluster = LocalCluster::start(binary, nodes, options)?;
    let leader = cluster.wait_for_leader(Duration::from_secs(60)).await?;
    let client = cluster.client()?;
    let stop = CancellationToken::new();
    start_participants(&cluster, participants, &stop)?;
    wait_until(
        Duration::from_secs(60),
        "participants to connect",
        || async {
            let agents = client.list_agents().await.ok()?;
            (agents.len() >= participants).then_some(())
        },
    )
    .await?;
    let pid = cluster.pid(leader).context("leader pid")?;
    let start_rss = rss(pid, "VmRSS:")?;
    let (spec, model) = federation(participants, params, args.rounds);
    let federation = client.start_federation_with_model(spec, &model, "").await?;
    let mut pids: Vec<u32> = cluster
        .ids()
        .iter()
        .filter_map(|id| cluster.pid(*id))
        .collect();
    pids.push(std::process::id());
    let (rounds, samples) =
        round_intervals(&client, &federation.federation_id, args.rounds, &pids).await?;
    let measured: Vec<f64> = rounds.into_iter().skip(args.warmup as usize).collect();
    let cpu = samples
        .get(args.warmup as usize)
        .zip(samples.last())
        .and_then(|(first, last)| {
            let per_round = |seconds: f64| seconds / measured.len().max(1) as f64;
            Some(RoundCpu {
                all_seconds: per_round(first.seconds_used(last, &pids)?),
                leader_seconds: per_round(first.seconds_used(last, &[pid])?),
                machine_busy_pct: first.machine_percent(last),
            })
        });
    let peak = rss(pid, "VmHWM:")?;
    let still_leader = cluster.wait_for_leader(Duration::from_secs(5)).await? == leader;
    stop.cancel();
    if !still_leader {
        bail!("the leader changed during the run; its memory peak is not comparable");
    }
    Ok(FederatedRun {
        system: match nodes {
            1 => "synod 1 node".into(),
            n => format!("synod {n} nodes"),
        },
        participants,
        params,
        seconds_per_round: median(&measured),
        rounds: measured,
        peak_rss_bytes: peak,
        peak_above_start_bytes: Some(peak.saturating_sub(start_rss)),
        cpu,
    })
}

fn start_participants(
    cluster: &LocalCluster,
    count: usize,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    for i in 0..count {
        let agent = AgentBuilder::new(format!("bench-{i}"), cluster.addrs())
            .capability("bench")
            .participant(Trivial);
        let token = stop.clone();
        tokio::spawn(async move { agent.run(token).await });
    }
    Ok(())
}

fn federation(participants: usize, params: usize, rounds: u32) -> (pb::FederationSpec, Model) {
    let model = Model::new(
        vec![TensorSpec::f32("weights", &[params as u64])],
        vec![0.0; params],
    )
    .expect("a valid model");
    let spec = pb::FederationSpec {
        name: format!("bench {participants}x{params}"),
        rounds,
        participants: Some(pb::ParticipantSelection {
            selector: Some(pb::AgentSelector {
                capabilities: vec!["bench".into()],
                ..Default::default()
            }),
            fraction: 1.0,
            min_participants: participants as u32,
            max_participants: participants as u32,
        }),
        round_timeout_ms: 120_000,
        ..Default::default()
    };
    (spec, model)
}

/// Seconds between consecutive `RoundCommitted` events, as this process receives them, and
/// the CPU counters of `pids` at each of those events.
async fn round_intervals(
    client: &Client,
    id: &str,
    rounds: u32,
    pids: &[u32],
) -> anyhow::Result<(Vec<f64>, Vec<CpuSample>)> {
    use pb::federation_event::Kind;
    let mut events = client.watch_federation(id, 0).await?;
    let mut last: Option<Instant> = None;
    let mut intervals = Vec::new();
    let mut samples = Vec::new();
    while let Some(event) = tokio::time::timeout(Duration::from_secs(300), events.message())
        .await
        .context("no event for 300 s")??
    {
        match event.kind {
            Some(Kind::RoundCommitted(_)) => {
                let now = Instant::now();
                samples.push(CpuSample::take(pids));
                if let Some(previous) = last {
                    intervals.push(now.duration_since(previous).as_secs_f64());
                }
                last = Some(now);
            }
            Some(Kind::RoundFailed(failed)) => {
                let round = client.get_round(id, failed.round).await?;
                let mut why: BTreeMap<String, usize> = BTreeMap::new();
                for p in &round.participants {
                    *why.entry(format!("{} {}", p.state, p.reason)).or_default() += 1;
                }
                bail!(
                    "round {} failed: {} (participants: {why:?})",
                    failed.round,
                    failed.reason
                )
            }
            Some(Kind::FederationCompleted(done)) => {
                if done.committed_round != rounds {
                    bail!(
                        "the federation ended after {} rounds: {}",
                        done.committed_round,
                        done.reason
                    );
                }
                break;
            }
            _ => {}
        }
    }
    Ok((intervals, samples))
}

/// A `/proc/<pid>/status` field in bytes.
fn rss(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .with_context(|| format!("{field} missing"))?;
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .context("malformed status line")?
        .parse()?;
    Ok(kb * 1024)
}

/// GB/s of update bytes FedAvg folds (median of 3 runs), one update at a time (`batch` 1) or
/// `batch` at once, as the leader folds updates that arrive during another fold.
fn aggregation_gb_per_s(participants: usize, params: usize, batch: usize) -> f64 {
    let update: Vec<f32> = (0..params).map(|i| (i % 7) as f32 * 0.001).collect();
    let global = vec![0.0f32; params];
    let runs: Vec<f64> = (0..3)
        .map(|_| {
            let started = Instant::now();
            let mut aggregator =
                RoundAggregator::new(&Strategy::FedAvg, params, None).expect("fedavg");
            let updates: Vec<(&[f32], u64)> = vec![(update.as_slice(), 100); participants];
            for group in updates.chunks(batch) {
                let results = aggregator.add_many(group);
                assert!(results.iter().all(Result::is_ok), "valid updates");
            }
            let mut state = ServerState::default();
            let _ = aggregator.finish(&global, &mut state, &mut rand::rng());
            let bytes = (participants * params * 4) as f64;
            bytes / started.elapsed().as_secs_f64() / 1e9
        })
        .collect();
    median(&runs)
}

impl FederatedReport {
    /// The report as text.
    pub fn render(&self) -> String {
        let mut out = format!(
            "FedAvg rounds, trivial local training, median of {} rounds after {} warm-up\n",
            self.args.rounds - self.args.warmup - 1,
            self.args.warmup
        );
        out.push_str("  system          participants    params   s/round   CPU s/round: all (leader; busy)   coordinator peak RSS (above start)\n");
        for run in &self.runs {
            let above = run
                .peak_above_start_bytes
                .map_or(String::new(), |b| format!(" (+{:.0} MB)", b as f64 / 1e6));
            let cpu = run.cpu.as_ref().map_or("-".to_owned(), |cpu| {
                let busy = cpu
                    .machine_busy_pct
                    .map_or(String::new(), |pct| format!("; {pct:.0} %"));
                format!("{:.3} ({:.3}{busy})", cpu.all_seconds, cpu.leader_seconds)
            });
            out.push_str(&format!(
                "  {:<16} {:>11} {:>9} {:>9.3}   {cpu:<31} {:>8.0} MB{above}\n",
                run.system,
                run.participants,
                run.params,
                run.seconds_per_round,
                run.peak_rss_bytes as f64 / 1e6
            ));
        }
        for floor in &self.floors {
            out.push_str(&format!(
                "  plain loopback TCP, only the round's bytes (the host's floor), {} × {}: {:.3} s/round\n",
                floor.participants, floor.params, floor.seconds_per_round
            ));
        }
        for run in &self.aggregation {
            out.push_str(&format!(
                "  FedAvg aggregation, {} × {}, {} per pass: {:.2} GB/s of updates folded\n",
                run.participants, run.params, run.batch, run.gb_per_s
            ));
        }
        out
    }
}
