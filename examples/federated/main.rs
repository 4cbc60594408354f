//! Federated learning with Synod, end to end in one command: a small MLP learns the UCI
//! handwritten digits over 25 FedAvg rounds, its training data split non-IID across ten
//! participants that never share it; accuracy and loss show per round as it trains, and the
//! final global model is scored on a held-out test set.
//!
//! ```text
//!   cargo run --release -p synod-tests --example federated
//!
//!   in-process node ◄── 10 participants (agents: fit on own shard, evaluate on own held-out part)
//!        ▲
//!        └── this program: start digits.toml ─► watch rounds (bar + lines)
//!                          ─► download final model ─► score on the global test set
//! ```
//!
//! Exits non-zero unless the federation completes and accuracy rose from the first round's
//! evaluation (the initial model) to the final model's test accuracy.
//! `--addr` uses a running cluster instead of its own node; `--participants-only` only runs the
//! participants, for `synod fl start examples/federated/digits.toml` (see README.md).

mod data;
mod mlp;
mod node;
mod participant;
mod progress;

use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use synod_sdk::agent::AgentBuilder;
use synod_sdk::federation_file::parse_federation_file;
use synod_sdk::tensors::Model;
use synod_sdk::Client;
use tokio_util::sync::CancellationToken;

use crate::data::{Examples, Split, CLASSES};
use crate::mlp::Mlp;
use crate::node::LocalNode;
use crate::participant::DigitsParticipant;

/// The federation: model, rounds and training settings (also usable with `synod fl start`).
const FEDERATION_FILE: &str = include_str!("digits.toml");
/// The capability the federation file selects participants by.
const CAPABILITY: &str = "digits";
/// Least rise in accuracy, first round's evaluation to final test, that counts as learning.
const ACCURACY_RISE_MIN: f64 = 0.2;

/// Trains an MLP on the digits over a Synod federation of ten participants.
#[derive(Parser)]
struct Args {
    /// Members of a running cluster (host:port, comma-separated); without it, the example
    /// starts a one-node cluster in this process.
    #[arg(long, value_delimiter = ',')]
    addr: Vec<String>,
    /// Only run the ten participants, until Ctrl-C; start the federation yourself with
    /// `synod fl start examples/federated/digits.toml`.
    #[arg(long, requires = "addr")]
    participants_only: bool,
    /// Seed of the data split.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Log filter (tracing), e.g. `info` or `synod_sdk=debug`.
    #[arg(long, env = "SYNOD_LOG", default_value = "error")]
    log: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&args.log))
        .with_writer(std::io::stderr)
        .init();
    let started = Instant::now();
    let split = data::split(&data::load_digits(), args.seed);
    print_split(&split);
    let node = if args.addr.is_empty() {
        Some(LocalNode::start().await?)
    } else {
        None
    };
    let addrs = node
        .as_ref()
        .map_or(args.addr.clone(), |n| vec![n.addr().to_owned()]);
    let participants = CancellationToken::new();
    start_participants(&split, &addrs, args.seed, &participants);
    let outcome = if args.participants_only {
        serve_participants(&addrs).await
    } else {
        train(&Client::new(addrs)?, &split.test).await
    };
    participants.cancel();
    if let Some(node) = node {
        node.stop().await?;
    }
    println!("total time {:.1} s", started.elapsed().as_secs_f64());
    outcome
}

/// Starts one agent per shard; they stop with `stop`.
fn start_participants(split: &Split, addrs: &[String], seed: u64, stop: &CancellationToken) {
    for (i, shard) in split.shards.iter().enumerate() {
        let agent = AgentBuilder::new(format!("digits-{i:02}"), addrs.to_vec())
            .capability("fl")
            .capability(CAPABILITY)
            .participant(DigitsParticipant::new(i, shard.clone(), seed));
        let token = stop.clone();
        tokio::spawn(async move { agent.run(token).await });
    }
}

/// `--participants-only`: waits for Ctrl-C while the participants take part in what starts.
async fn serve_participants(addrs: &[String]) -> anyhow::Result<()> {
    println!(
        "10 participants ({CAPABILITY}) serving {}; start training with\n  \
         synod fl start examples/federated/digits.toml --addr {} --watch\nCtrl-C stops",
        addrs.join(","),
        addrs[0]
    );
    tokio::signal::ctrl_c().await?;
    Ok(())
}

/// Starts the federation, follows it, and scores its final model on the global test set.
async fn train(client: &Client, test: &Examples) -> anyhow::Result<()> {
    let (spec, initial) = parse_federation_file(FEDERATION_FILE)?;
    let rounds = spec.rounds;
    let federation = client
        .start_federation_with_model(spec, &initial, "")
        .await?;
    let id = federation.federation_id;
    println!("federation {id}: {rounds} rounds of FedAvg, 10 participants");
    let rows = progress::follow(client, &id, rounds).await?;
    let (round, last) = client.download_model(&id, None).await?;
    let before = test_accuracy(&initial, test)?;
    let after = test_accuracy(&last, test)?;
    let (first_round, first_eval) = progress::first_eval(&rows)?;
    println!(
        "global test set ({} digits): accuracy {:.1} % with the initial model, {:.1} % after round {round}",
        test.len(),
        100.0 * before,
        100.0 * after
    );
    anyhow::ensure!(
        after >= first_eval + ACCURACY_RISE_MIN,
        "accuracy did not rise: {:.1} % at round {first_round}'s evaluation, {:.1} % at the end",
        100.0 * first_eval,
        100.0 * after
    );
    println!(
        "accuracy rose from {:.1} % (round {first_round} evaluation) to {:.1} %",
        100.0 * first_eval,
        100.0 * after
    );
    Ok(())
}

fn test_accuracy(model: &Model, test: &Examples) -> anyhow::Result<f64> {
    let mlp = Mlp::from_model(model)
        .map_err(anyhow::Error::msg)
        .context("the federation's model")?;
    Ok(mlp.score(test).accuracy)
}

/// How the data was dealt out: per participant, its examples of each digit.
fn print_split(split: &Split) {
    println!(
        "UCI digits: {} test examples held out; training data split non-IID (Dirichlet α = 0.5):",
        split.test.len()
    );
    let digits: String = (0..CLASSES).map(|c| format!("{c:>5}")).collect();
    println!("  participant  train  eval │{digits}");
    for (i, shard) in split.shards.iter().enumerate() {
        let counts: String = shard
            .train
            .class_counts()
            .iter()
            .map(|&n| match n {
                0 => format!("{:>5}", "·"),
                n => format!("{n:>5}"),
            })
            .collect();
        println!(
            "  digits-{i:02}    {:>5} {:>5} │{counts}",
            shard.train.len(),
            shard.eval.len()
        );
    }
}
