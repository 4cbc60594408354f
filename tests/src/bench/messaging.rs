//! `bench messaging`: messages/s and delivery latency of agent messaging on a 3-node cluster
//! of real `synod` processes, with 100 SDK agents in this process.
//!
//! ```text
//!   direct:      S senders ─► SendDirect (committed) ─► recipient's session ─► handler
//!                latency = send call started → handler called; rate = messages / wall time
//!   pub/sub:     one publisher ─► Publish ─► every agent's subscription (100 deliveries each)
//!                durable (committed) and best-effort (leader memory), same measures
//! ```
//! Every payload carries the microseconds since a shared start, so one clock times both ends.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use hdrhistogram::Histogram;
use serde::Serialize;
use synod_coordinator::local_cluster::{wait_until, LocalCluster, NodeOptions};
use synod_sdk::agent::AgentBuilder;
use synod_sdk::proto as pb;
use synod_sdk::Client;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Flags of `bench messaging`.
#[derive(Args, Serialize, Debug, Clone)]
pub struct MessagingArgs {
    /// Agents receiving messages (and subscribing to the channels).
    #[arg(long, default_value_t = 100)]
    pub agents: usize,
    /// Direct messages sent per run.
    #[arg(long, default_value_t = 20_000)]
    pub direct_messages: usize,
    /// Concurrent senders of direct messages.
    #[arg(long, default_value_t = 64)]
    pub senders: usize,
    /// Messages published per channel run (each delivered to every agent).
    #[arg(long, default_value_t = 500)]
    pub published: usize,
    /// Publish rate, messages/s (0: as fast as one publisher goes).
    #[arg(long, default_value_t = 200)]
    pub publish_rate: u64,
    /// Payload bytes (at least 8: the send time).
    #[arg(long, default_value_t = 64)]
    pub payload_bytes: usize,
    /// Measured runs of each.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Also print the results as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// One measured run.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    /// Deliveries per second (messages × recipients / wall time).
    pub per_second: f64,
    /// Median send-to-handler latency, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Deliveries counted.
    pub delivered: u64,
    /// Deliveries reported dropped (best-effort only).
    pub dropped: u64,
}

/// What was measured.
#[derive(Debug, Clone, Serialize)]
pub struct MessagingReport {
    /// The flags.
    pub args: MessagingArgs,
    /// Direct messages.
    pub direct: Vec<Run>,
    /// Durable channel.
    pub durable: Vec<Run>,
    /// Best-effort channel.
    pub best_effort: Vec<Run>,
}

fn median_of(runs: &[Run], pick: impl Fn(&Run) -> f64) -> f64 {
    let values: Vec<f64> = runs.iter().map(pick).collect();
    super::coordination::median(&values)
}

impl MessagingReport {
    /// The report as text.
    pub fn render(&self) -> String {
        let mut out = format!(
            "{} agents on a 3-node cluster, {} B payloads, medians of {} runs\n",
            self.args.agents, self.args.payload_bytes, self.args.runs
        );
        for (name, runs) in [
            ("direct", &self.direct),
            ("pub/sub durable", &self.durable),
            ("pub/sub best-effort", &self.best_effort),
        ] {
            let each: Vec<String> = runs
                .iter()
                .map(|r| format!("{:.0}/s p99 {:.1} ms", r.per_second, r.p99_ms))
                .collect();
            out.push_str(&format!(
                "  {name:<20} {:>9.0} deliveries/s  p50 {:>6.2} ms  p99 {:>6.2} ms  dropped {}  ({})\n",
                median_of(runs, |r| r.per_second),
                median_of(runs, |r| r.p50_ms),
                median_of(runs, |r| r.p99_ms),
                runs.iter().map(|r| r.dropped).sum::<u64>(),
                each.join(" · ")
            ));
        }
        out.push_str("target: p99 delivery below 50 ms");
        out
    }
}

/// Latencies recorded by every receiver, with how many arrived and were dropped.
#[derive(Clone)]
struct Sink {
    start: Instant,
    state: Arc<Mutex<(Histogram<u64>, u64, u64)>>,
}

impl Sink {
    fn new(start: Instant) -> Self {
        let histogram = Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
        Self {
            start,
            state: Arc::new(Mutex::new((histogram, 0, 0))),
        }
    }

    fn record(&self, payload: &[u8], dropped: u64) {
        let Some(stamp) = payload.get(..8) else {
            return;
        };
        let sent_us = u64::from_le_bytes(stamp.try_into().unwrap_or_default());
        let now_us = self.start.elapsed().as_micros() as u64;
        let mut state = self.state.lock().expect("sink lock");
        let _ = state.0.record(now_us.saturating_sub(sent_us).max(1));
        state.1 += 1;
        state.2 += dropped;
    }

    fn reset(&self) {
        let mut state = self.state.lock().expect("sink lock");
        state.0.reset();
        (state.1, state.2) = (0, 0);
    }

    fn counts(&self) -> (u64, u64) {
        let state = self.state.lock().expect("sink lock");
        (state.1, state.2)
    }

    fn run(&self, elapsed: Duration) -> Run {
        let state = self.state.lock().expect("sink lock");
        let ms = |q: f64| state.0.value_at_quantile(q) as f64 / 1000.0;
        Run {
            per_second: state.1 as f64 / elapsed.as_secs_f64(),
            p50_ms: ms(0.5),
            p99_ms: ms(0.99),
            delivered: state.1,
            dropped: state.2,
        }
    }

    fn payload(&self, bytes: usize) -> Vec<u8> {
        let mut payload = vec![0u8; bytes.max(8)];
        let now_us = self.start.elapsed().as_micros() as u64;
        payload[..8].copy_from_slice(&now_us.to_le_bytes());
        payload
    }
}

/// Runs the bench against a cluster of `binary`; progress on stderr.
pub async fn run(
    args: &MessagingArgs,
    binary: &std::path::Path,
) -> anyhow::Result<MessagingReport> {
    if args.agents == 0 || args.senders == 0 || args.runs == 0 {
        bail!("--agents, --senders and --runs must be positive");
    }
    let options = NodeOptions {
        log: "warn".into(),
        ..NodeOptions::default()
    };
    let cluster = LocalCluster::start(binary, 3, options)?;
    cluster.wait_for_leader(Duration::from_secs(60)).await?;
    let client = cluster.client()?;
    let stop = CancellationToken::new();
    let sink = Sink::new(Instant::now());
    eprintln!("starting {} agents", args.agents);
    let ids = start_agents(&cluster, args.agents, &sink, &stop).await?;
    let mut report = MessagingReport {
        args: args.clone(),
        direct: Vec::new(),
        durable: Vec::new(),
        best_effort: Vec::new(),
    };
    for round in 1..=args.runs {
        let run = direct_run(args, &cluster, &ids, &sink)
            .await
            .with_context(|| format!("direct run {round}"))?;
        eprintln!(
            "  direct {round}: {:.0}/s p99 {:.2} ms",
            run.per_second, run.p99_ms
        );
        report.direct.push(run);
    }
    for (delivery, runs) in [
        (pb::Delivery::Durable, &mut report.durable),
        (pb::Delivery::BestEffort, &mut report.best_effort),
    ] {
        for round in 1..=args.runs {
            let run = channel_run(args, &cluster, &client, delivery, round, &sink)
                .await
                .with_context(|| format!("{delivery:?} run {round}"))?;
            eprintln!(
                "  {delivery:?} {round}: {:.0}/s p99 {:.2} ms dropped {}",
                run.per_second, run.p99_ms, run.dropped
            );
            runs.push(run);
        }
    }
    stop.cancel();
    Ok(report)
}

/// Starts agents whose message handler records into `sink`; returns their ids.
async fn start_agents(
    cluster: &LocalCluster,
    count: usize,
    sink: &Sink,
    stop: &CancellationToken,
) -> anyhow::Result<Vec<String>> {
    let mut handles = Vec::new();
    for i in 0..count {
        let record = sink.clone();
        let agent = AgentBuilder::new(format!("mailbox-{i}"), cluster.addrs()).message_handler(
            move |message: pb::MeshMessage| {
                record.record(&message.payload, 0);
                std::future::ready(())
            },
        );
        handles.push(agent.handle());
        let stop = stop.clone();
        tokio::spawn(async move { agent.run(stop).await });
    }
    let mut ids = Vec::new();
    for handle in handles {
        ids.push(tokio::time::timeout(Duration::from_secs(120), handle.agent_id()).await?);
    }
    Ok(ids)
}

/// Sends the direct messages from concurrent senders, round robin over the agents.
async fn direct_run(
    args: &MessagingArgs,
    cluster: &LocalCluster,
    ids: &[String],
    sink: &Sink,
) -> anyhow::Result<Run> {
    sink.reset();
    let started = Instant::now();
    let mut senders = tokio::task::JoinSet::new();
    for sender in 0..args.senders {
        let client = cluster.client()?;
        let (ids, sink) = (ids.to_vec(), sink.clone());
        let (count, senders_n, bytes) = (args.direct_messages, args.senders, args.payload_bytes);
        senders.spawn(async move {
            for n in (sender..count).step_by(senders_n) {
                let to = &ids[n % ids.len()];
                client.send_direct(to, &sink.payload(bytes)).await?;
            }
            Ok::<_, anyhow::Error>(())
        });
    }
    while let Some(done) = senders.join_next().await {
        done??;
    }
    let expected = args.direct_messages as u64;
    wait_until(Duration::from_secs(60), "every direct message", || async {
        (sink.counts().0 >= expected).then_some(())
    })
    .await?;
    Ok(sink.run(started.elapsed()))
}

/// Publishes to a fresh channel every agent's subscription follows.
async fn channel_run(
    args: &MessagingArgs,
    cluster: &LocalCluster,
    client: &Client,
    delivery: pb::Delivery,
    round: usize,
    sink: &Sink,
) -> anyhow::Result<Run> {
    let name = format!("bench-{delivery:?}-{round}").to_lowercase();
    client.create_channel(&name, delivery, 0).await?;
    let stop = CancellationToken::new();
    let clients: Vec<Client> = (0..8).map(|_| cluster.client()).collect::<Result<_, _>>()?;
    for i in 0..args.agents {
        let mut subscription = clients[i % clients.len()].subscribe(&name, None);
        let (sink, stop) = (sink.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    next = subscription.next() => next,
                    _ = stop.cancelled() => return,
                };
                match next {
                    Some(Ok(response)) => {
                        let payload = response.message.map(|m| m.payload).unwrap_or_default();
                        sink.record(&payload, response.dropped);
                    }
                    _ => return,
                }
            }
        });
    }
    // Subscriptions open before the first publish (best-effort ones see only later messages).
    tokio::time::sleep(Duration::from_millis(1000)).await;
    sink.reset();
    let started = Instant::now();
    let interval = match args.publish_rate {
        0 => Duration::ZERO,
        rate => Duration::from_secs_f64(1.0 / rate as f64),
    };
    for n in 0..args.published {
        let due = started + interval * n as u32;
        tokio::time::sleep_until(due).await;
        client
            .publish(&name, &sink.payload(args.payload_bytes))
            .await?;
    }
    let expected = (args.published * args.agents) as u64;
    let arrived = wait_until(Duration::from_secs(60), "every delivery", || async {
        let (delivered, dropped) = sink.counts();
        (delivered + dropped >= expected).then_some(())
    })
    .await;
    let run = sink.run(started.elapsed());
    stop.cancel();
    arrived?;
    Ok(run)
}
